//! Starts one PostgreSQL and one Redis server for a whole test run and writes their URLs as
//! `NEO_TEST_DATABASE_URL=...` / `NEO_TEST_REDIS_URL=...` lines to the file given with
//! `--env-file`. Runs until SIGTERM or SIGINT, or until the process given with
//! `--parent-pid` exits, then stops both servers and deletes their data.
//!
//! With `--redis-cluster` it also starts a six-node Redis Cluster
//! (`NEO_TEST_REDIS_CLUSTER_NODES=...`), and with `--redis-tls` a TLS-only Redis
//! (`NEO_TEST_REDIS_TLS_URL=...`, `NEO_TEST_REDIS_TLS_CERTS=<dir>`), so that test processes
//! share them instead of starting their own. With `--redis-sentinel` it starts a Sentinel
//! group, a master, its replica and three sentinels (`NEO_TEST_REDIS_SENTINEL_NODES=...`,
//! `NEO_TEST_REDIS_SENTINEL_MASTER=<name>`). With `--pgbouncer` it starts PgBouncer in
//! transaction mode in front of the PostgreSQL (`NEO_TEST_PGBOUNCER_URL=...`).
//!
//! Used by `scripts/test` and `scripts/demo`.

use neo_testkit::{
    DATABASE_URL_VAR, PGBOUNCER_URL_VAR, PgBouncer, PgServer, REDIS_CLUSTER_NODES_VAR,
    REDIS_SENTINEL_MASTER_VAR, REDIS_SENTINEL_NODES_VAR, REDIS_TLS_CERTS_VAR, REDIS_TLS_URL_VAR,
    REDIS_URL_VAR, RedisCluster, RedisSentinelGroup, RedisServer, RedisServerOptions,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[allow(clippy::print_stderr, reason = "a command-line tool reports on stderr")]
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("neo-test-servers: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut env_file: Option<PathBuf> = None;
    let mut parent: Option<u32> = None;
    let (mut want_cluster, mut want_tls, mut want_sentinel, mut want_pgbouncer) =
        (false, false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--env-file" => env_file = args.next().map(PathBuf::from),
            "--parent-pid" => parent = args.next().and_then(|p| p.parse().ok()),
            "--redis-cluster" => want_cluster = true,
            "--redis-tls" => want_tls = true,
            "--redis-sentinel" => want_sentinel = true,
            "--pgbouncer" => want_pgbouncer = true,
            "-h" | "--help" => {
                return Err("usage: neo-test-servers --env-file PATH [--parent-pid PID] [--redis-cluster] [--redis-tls] [--redis-sentinel] [--pgbouncer]".into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let env_file = env_file.ok_or("--env-file PATH is required")?;
    let pg = PgServer::start().map_err(|e| e.to_string())?;
    let redis = RedisServer::start().map_err(|e| e.to_string())?;
    let mut contents = format!(
        "{DATABASE_URL_VAR}={}\n{REDIS_URL_VAR}={}\n",
        pg.url(),
        redis.url()
    );
    let pgbouncer = if want_pgbouncer {
        let bouncer = PgBouncer::start(&pg.url()).map_err(|e| e.to_string())?;
        contents.push_str(&format!(
            "{PGBOUNCER_URL_VAR}={}\n",
            bouncer.url_for("postgres")
        ));
        Some(bouncer)
    } else {
        None
    };
    let cluster = if want_cluster {
        let cluster = RedisCluster::start().map_err(|e| e.to_string())?;
        let nodes = cluster.nodes().join(",");
        contents.push_str(&format!("{REDIS_CLUSTER_NODES_VAR}={nodes}\n"));
        Some(cluster)
    } else {
        None
    };
    let tls = if want_tls {
        let server = RedisServer::start_with(RedisServerOptions {
            tls: true,
            ..RedisServerOptions::default()
        })
        .map_err(|e| e.to_string())?;
        let certs = server
            .certificates()
            .ok_or("the TLS server has no certificates")?;
        contents.push_str(&format!(
            "{REDIS_TLS_URL_VAR}={}\n{REDIS_TLS_CERTS_VAR}={}\n",
            server.url(),
            certs.dir().display()
        ));
        Some(server)
    } else {
        None
    };
    let sentinel = if want_sentinel {
        let group = RedisSentinelGroup::start().map_err(|e| e.to_string())?;
        contents.push_str(&format!(
            "{REDIS_SENTINEL_NODES_VAR}={}\n{REDIS_SENTINEL_MASTER_VAR}={}\n",
            group.sentinels().join(","),
            group.master_name()
        ));
        Some(group)
    } else {
        None
    };
    // Write then rename, so a reader never sees half a file.
    let partial = env_file.with_extension("partial");
    std::fs::write(&partial, contents)
        .map_err(|e| format!("writing {}: {e}", partial.display()))?;
    std::fs::rename(&partial, &env_file)
        .map_err(|e| format!("writing {}: {e}", env_file.display()))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        let parent_gone = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if parent.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
                {
                    return;
                }
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            () = parent_gone => {}
        }
        Ok::<(), String>(())
    })?;
    drop(sentinel);
    drop(tls);
    drop(cluster);
    drop(pgbouncer);
    drop(redis);
    drop(pg);
    Ok(())
}
