//! L2, the Redis tier: every call bounded by `l2.timeout`, in a `cache.l2` span.

use super::cluster::{ClusterTier, by_slot, slot};
use super::sticky::{InFlight, StickyConnections};
use crate::config::CacheConfig;
use crate::{Error, Result};
use neo_redis::{
    ClusterConnections, RedisConfig, RedisConnections, RedisMode, SentinelConnection,
    SentinelConnections, Subscribers, redis_connections,
};
use redis::AsyncCommands;
use redis::RedisFuture;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use std::time::Duration;
use tracing::Instrument;

/// Releases a lock only when it still holds our token.
const UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// A key argument `namespace + key`, without an intermediate `String`.
struct Namespaced<'a>(&'a str, &'a str);

impl redis::ToRedisArgs for Namespaced<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        let mut writer = out.writer_for_next_arg();
        std::io::Write::write_all(&mut writer, self.0.as_bytes()).unwrap_or(());
        std::io::Write::write_all(&mut writer, self.1.as_bytes()).unwrap_or(());
    }
}

/// The command `name` with room for `args` more arguments of `bytes` bytes in all: built
/// from empty, a GET's buffer was reallocated twice and a SET's four times (about 1,000
/// instructions per GET and 1,800 per SET under callgrind).
fn command(name: &str, args: usize, bytes: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(args + 1, name.len() + bytes);
    cmd.arg(name);
    cmd
}

/// One entry to write: key, framed bytes, lifetime, tag set keys.
pub(super) struct Write {
    pub(super) key: String,
    pub(super) bytes: Vec<u8>,
    pub(super) ttl: Duration,
    pub(super) tag_keys: Vec<String>,
}

/// How the tier reaches Redis: one server (plain or TLS, or a proxy) through shared
/// multiplexed connections (a call stays on the previous call's connection while it is idle), the master Redis Sentinel names (followed across failovers), or a
/// Redis Cluster through redis-rs' cluster connection. Nothing
/// outside this module (and `cluster`) names the connection type.
#[derive(Clone, Debug)]
enum L2Connection {
    Standalone(StickyConnections),
    Sentinel(SentinelConnections),
    Cluster(ClusterTier),
}

impl L2Connection {
    /// A handle for one call.
    async fn handle(&self) -> Result<L2Handle<'_>> {
        match self {
            L2Connection::Standalone(connections) => {
                let (connection, in_flight) = connections.get()?;
                Ok(L2Handle::Standalone(connection, in_flight))
            }
            L2Connection::Sentinel(connections) => Ok(L2Handle::Sentinel(connections.get().await?)),
            L2Connection::Cluster(tier) => Ok(L2Handle::Cluster(tier.connections.get().await?)),
        }
    }
}

/// One call's connection. redis-rs runs commands, pipelines and scripts on anything that is
/// [`ConnectionLike`], so every single-key call below is written once for all variants; the
/// calls that touch many keys split them by slot on a cluster (`cluster`).
enum L2Handle<'a> {
    /// The connection, and the call counted in flight on it until the handle drops.
    Standalone(
        ConnectionManager,
        #[expect(dead_code, reason = "held for its Drop: the call's end")] InFlight<'a>,
    ),
    Sentinel(SentinelConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for L2Handle<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            L2Handle::Standalone(conn, _) => conn.req_packed_command(cmd),
            L2Handle::Sentinel(conn) => conn.req_packed_command(cmd),
            L2Handle::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            L2Handle::Standalone(conn, _) => conn.req_packed_commands(pipeline, offset, count),
            L2Handle::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
            L2Handle::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            L2Handle::Standalone(conn, _) => conn.get_db(),
            L2Handle::Sentinel(conn) => conn.get_db(),
            L2Handle::Cluster(conn) => conn.get_db(),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct RedisTier {
    connection: L2Connection,
    timeout: Duration,
    scan_count: usize,
}

/// Each answer of a scattered call checked for being a reply, not a refusal.
fn replies(values: Vec<redis::Value>) -> redis::RedisResult<Vec<redis::Value>> {
    values.into_iter().map(|v| v.extract_error()).collect()
}

/// One command of a cluster write: an entry's SET, or one of its tags' three commands.
#[derive(Clone, Copy)]
enum WritePart {
    Set(usize),
    Tag(usize, usize, TagCommand),
}

#[derive(Clone, Copy)]
enum TagCommand {
    Add,
    ExpireNx,
    ExpireGt,
}

impl RedisTier {
    pub(super) fn connect(url: &str, config: &CacheConfig) -> Result<Self> {
        let timeout = config.l2.timeout;
        Ok(RedisTier {
            connection: L2Connection::Standalone(StickyConnections::new(
                config.l2.pool_size,
                || redis_connections(url, 1, timeout),
            )?),
            timeout: config.l2.timeout,
            scan_count: config.l2.scan_count.max(1),
        })
    }

    /// The tier `redis` describes (one server, TLS, a cluster), with the pool size and timeout
    /// of `config.l2`, and the clients its backplane subscribes with.
    pub(super) fn connect_with(
        redis: &RedisConfig,
        config: &CacheConfig,
    ) -> Result<(Self, Subscribers)> {
        let redis = RedisConfig {
            pool_size: config.l2.pool_size,
            timeout: config.l2.timeout,
            ..redis.clone()
        };
        let (connection, subscribers) = match redis.mode()? {
            RedisMode::Cluster => (
                L2Connection::Cluster(ClusterTier::new(ClusterConnections::connect(&redis)?)),
                Subscribers::new(&redis)?,
            ),
            RedisMode::Sentinel => {
                let connections = SentinelConnections::connect(&redis)?;
                (
                    L2Connection::Sentinel(connections.clone()),
                    Subscribers::from_sentinel(connections),
                )
            }
            // One server, plain or TLS (and any mode neo-redis adds later that it opens as
            // shared connections).
            _ => {
                let one = RedisConfig {
                    pool_size: 1,
                    ..redis.clone()
                };
                (
                    L2Connection::Standalone(StickyConnections::new(redis.pool_size, || {
                        RedisConnections::connect(&one)
                    })?),
                    Subscribers::new(&redis)?,
                )
            }
        };
        let tier = RedisTier {
            connection,
            timeout: config.l2.timeout,
            scan_count: config.l2.scan_count.max(1),
        };
        Ok((tier, subscribers))
    }

    /// [`run`](Self::run) for a call written for the cluster connection.
    async fn run_cluster<T>(
        &self,
        name: &'static str,
        op: impl AsyncFnOnce(&ClusterTier, &mut ClusterConnection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let L2Connection::Cluster(tier) = &self.connection else {
            return Err(Error::Unavailable("not a cluster connection".into()));
        };
        self.run(name, async |handle| match handle {
            L2Handle::Cluster(conn) => op(tier, conn).await,
            L2Handle::Standalone(..) | L2Handle::Sentinel(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "not a cluster connection",
            ))),
        })
        .await
    }

    /// Whether the tier is a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.connection, L2Connection::Cluster(_))
    }

    /// Runs one Redis exchange in a `cache.l2` span (field `cache.op`), bounded by the timeout.
    async fn run<T>(
        &self,
        name: &'static str,
        op: impl AsyncFnOnce(&mut L2Handle<'_>) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let call = async {
            let mut conn = self.connection.handle().await?;
            op(&mut conn).await.map_err(|e| Error::redis(&e))
        };
        let span = tracing::debug_span!("cache.l2", cache.op = name);
        // Boxed: the connection's futures are large, and every future that awaits this one
        // (lookup, get's miss path) would otherwise hold and copy them on each move. One
        // allocation instead: with the deadpool-redis pool used before, an L2 hit went from
        // about 41,900 to 40,000 client instructions (callgrind; a raw GET was 33,500).
        match tokio::time::timeout(self.timeout, Box::pin(call).instrument(span)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// GET of `namespace + key`, the key written straight into the command.
    pub(super) async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let mut cmd = command("GET", 1, namespace.len() + key.len());
        cmd.arg(Namespaced(namespace, key));
        self.run("get", async |c| cmd.query_async(c).await).await
    }

    /// MGET of `namespace + key` for each key, written straight into the command.
    pub(super) async fn mget(
        &self,
        namespace: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_cluster() {
            return self.cluster_mget(namespace, keys).await;
        }
        let mut cmd = command(
            "MGET",
            keys.len(),
            keys.iter().map(|key| namespace.len() + key.len()).sum(),
        );
        for key in keys {
            cmd.arg(Namespaced(namespace, key));
        }
        self.run("mget", async |c| cmd.query_async(c).await).await
    }

    /// MGET on a cluster: one MGET per slot, one pipeline of them per node, nodes in parallel.
    async fn cluster_mget(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut full = Vec::with_capacity(namespace.len() + 64);
        let (slots, groups) = by_slot(keys.iter().map(|key| {
            full.clear();
            full.extend_from_slice(namespace.as_bytes());
            full.extend_from_slice(key.as_bytes());
            slot(&full)
        }));
        let build = |g: usize| {
            let mut cmd = redis::cmd("MGET");
            for &i in &groups[g] {
                cmd.arg(Namespaced(namespace, keys[i]));
            }
            cmd
        };
        let answers = self
            .run_cluster("mget", async |tier, conn| {
                tier.scatter(conn, &slots, build).await
            })
            .await?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        for (members, answer) in groups.iter().zip(answers) {
            let values: Vec<Option<Vec<u8>>> =
                redis::from_redis_value(answer).map_err(|e| Error::redis(&e.into()))?;
            for (&i, value) in members.iter().zip(values) {
                out[i] = value;
            }
        }
        Ok(out)
    }

    /// Writes every entry, its tag memberships and an optional publish, in one round trip.
    /// `atomic`: in one MULTI (not on a cluster).
    pub(super) async fn write(
        &self,
        writes: &[Write],
        publish: Option<(&str, &[u8])>,
        atomic: bool,
    ) -> Result<()> {
        if self.is_cluster() {
            return self.cluster_write(writes, publish).await;
        }
        if let ([write], None) = (writes, publish)
            && write.tag_keys.is_empty()
        {
            // One SET alone (a load's write): a command, not a pipeline of one.
            let ms = u64::try_from(write.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            // "PX" and at most 20 digits.
            let mut cmd = command("SET", 4, write.key.len() + write.bytes.len() + 22);
            cmd.arg(&write.key).arg(&write.bytes).arg("PX").arg(ms);
            return self
                .run("write", async |c| cmd.query_async::<()>(c).await)
                .await;
        }
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for w in writes {
            let ms = u64::try_from(w.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            pipe.cmd("SET")
                .arg(&w.key)
                .arg(&w.bytes)
                .arg("PX")
                .arg(ms)
                .ignore();
            for tag in &w.tag_keys {
                pipe.cmd("SADD").arg(tag).arg(&w.key).ignore();
                pipe.cmd("PEXPIRE").arg(tag).arg(ms).arg("NX").ignore();
                pipe.cmd("PEXPIRE").arg(tag).arg(ms).arg("GT").ignore();
            }
        }
        if let Some((channel, message)) = publish {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        self.run("write", async |c| pipe.query_async::<()>(c).await)
            .await
    }

    /// The writes on a cluster (each entry's SET on its slot, its tags' commands on theirs,
    /// one pipeline per node), then the publish.
    async fn cluster_write(&self, writes: &[Write], publish: Option<(&str, &[u8])>) -> Result<()> {
        let mut parts = Vec::new();
        let mut slots = Vec::new();
        for (w, write) in writes.iter().enumerate() {
            parts.push(WritePart::Set(w));
            slots.push(slot(write.key.as_bytes()));
            for (t, tag) in write.tag_keys.iter().enumerate() {
                let tag_slot = slot(tag.as_bytes());
                for command in [TagCommand::Add, TagCommand::ExpireNx, TagCommand::ExpireGt] {
                    parts.push(WritePart::Tag(w, t, command));
                    slots.push(tag_slot);
                }
            }
        }
        let build = |i: usize| {
            let part = parts[i];
            let (WritePart::Set(w) | WritePart::Tag(w, _, _)) = part;
            let write = &writes[w];
            let ms = u64::try_from(write.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let mut cmd;
            match part {
                WritePart::Set(_) => {
                    cmd = redis::cmd("SET");
                    cmd.arg(&write.key).arg(&write.bytes).arg("PX").arg(ms);
                }
                WritePart::Tag(_, t, TagCommand::Add) => {
                    cmd = redis::cmd("SADD");
                    cmd.arg(&write.tag_keys[t]).arg(&write.key);
                }
                WritePart::Tag(_, t, TagCommand::ExpireNx) => {
                    cmd = redis::cmd("PEXPIRE");
                    cmd.arg(&write.tag_keys[t]).arg(ms).arg("NX");
                }
                WritePart::Tag(_, t, TagCommand::ExpireGt) => {
                    cmd = redis::cmd("PEXPIRE");
                    cmd.arg(&write.tag_keys[t]).arg(ms).arg("GT");
                }
            }
            cmd
        };
        self.run_cluster("write", async |tier, conn| {
            replies(tier.scatter(conn, &slots, build).await?)?;
            if let Some((channel, message)) = publish {
                conn.publish::<_, _, ()>(channel, message).await?;
            }
            Ok(())
        })
        .await
    }

    /// DEL on a cluster: one per slot, one pipeline of them per node; then the publish.
    async fn cluster_delete(&self, keys: &[String], publish: Option<(&str, &[u8])>) -> Result<u64> {
        let (slots, groups) = by_slot(keys.iter().map(|key| slot(key.as_bytes())));
        let build = |g: usize| {
            let mut cmd = redis::cmd("DEL");
            for &i in &groups[g] {
                cmd.arg(&keys[i]);
            }
            cmd
        };
        self.run_cluster("delete", async |tier, conn| {
            let mut deleted = 0;
            for answer in replies(tier.scatter(conn, &slots, build).await?)? {
                deleted += redis::from_redis_value::<u64>(answer)?;
            }
            if let Some((channel, message)) = publish {
                conn.publish::<_, _, ()>(channel, message).await?;
            }
            Ok(deleted)
        })
        .await
    }

    pub(super) async fn delete(
        &self,
        keys: &[String],
        publish: Option<(&str, &[u8])>,
    ) -> Result<u64> {
        if self.is_cluster() {
            return self.cluster_delete(keys, publish).await;
        }
        let mut pipe = redis::pipe();
        if !keys.is_empty() {
            pipe.cmd("DEL").arg(keys);
        }
        if let Some((channel, message)) = publish {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        if keys.is_empty() {
            self.run("delete", async |c| pipe.query_async::<()>(c).await)
                .await?;
            return Ok(0);
        }
        let (deleted,): (u64,) = self
            .run("delete", async |c| pipe.query_async(c).await)
            .await?;
        Ok(deleted)
    }

    pub(super) async fn members(&self, set: &str) -> Result<Vec<String>> {
        self.run("smembers", async |c| c.smembers(set).await).await
    }

    /// SCAN (never KEYS) for `pattern`, deleting each page; returns the keys deleted. On a
    /// cluster, on every master in turn (the masters read afresh, after any failover).
    pub(super) async fn scan_delete(&self, pattern: &str) -> Result<u64> {
        if self.is_cluster() {
            let masters = self
                .run_cluster("masters", async |tier, conn| tier.masters(conn).await)
                .await?;
            let mut deleted = 0;
            for master in &masters {
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys) = self
                        .run_cluster("scan", async |_, conn| {
                            ClusterTier::scan_page(conn, master, cursor, pattern, self.scan_count)
                                .await
                        })
                        .await?;
                    if !keys.is_empty() {
                        deleted += self.delete(&keys, None).await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            return Ok(deleted);
        }
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run("scan", async |c| {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(self.scan_count)
                        .query_async(c)
                        .await
                })
                .await?;
            if !keys.is_empty() {
                deleted += self.delete(&keys, None).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    pub(super) async fn publish(&self, channel: &str, message: &[u8]) -> Result<()> {
        self.run("publish", async |c| {
            c.publish::<_, _, ()>(channel, message).await
        })
        .await
    }

    pub(super) async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .run("lock", async |c| {
                redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    pub(super) async fn unlock(&self, key: &str, token: &str) -> Result<()> {
        self.run("unlock", async |c| {
            redis::Script::new(UNLOCK)
                .key(key)
                .arg(token)
                .invoke_async::<i64>(c)
                .await
                .map(|_| ())
        })
        .await
    }
}
