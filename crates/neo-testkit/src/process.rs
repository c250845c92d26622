//! Process plumbing shared by the servers: free ports, the unprivileged user, cleanup watchdogs.

use crate::{Error, Result};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (asked of the kernel; free when this returns).
pub(crate) fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(Error::io("binding a probe socket"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("reading the probe socket"))?
        .port();
    Ok(port)
}

/// A free TCP port on 127.0.0.1 below 55536 whose Redis Cluster bus port (+10000) is free too.
pub(crate) fn free_cluster_port() -> Result<u16> {
    for _ in 0..200 {
        let port = free_port()?;
        if port < 55536 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Io {
        context: "finding a free port pair (port, port + 10000) for a Redis Cluster node".into(),
        source: std::io::Error::other("none found in 200 tries"),
    })
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Polls `ready` until it is true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    ready()
}

/// An unprivileged account to run a server as, when we are root.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `None` when not root (run as ourselves); otherwise the `postgres` account (created by
/// Debian's package), falling back to `nobody`.
pub(crate) fn unprivileged_user() -> Result<Option<RunAs>> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(Error::io("reading /etc/passwd"))?;
    let me = current_uid();
    if me != Some(0) {
        return Ok(None);
    }
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4
                && fields[0] == wanted
                && let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse())
            {
                {
                    return Ok(Some(RunAs {
                        name: wanted.to_owned(),
                        uid,
                        gid,
                    }));
                }
            }
        }
    }
    Err(Error::Startup {
        server: "PostgreSQL",
        detail: "running as root and neither a `postgres` nor a `nobody` account exists; \
                 PostgreSQL refuses to run as root (install Debian's postgresql package, which creates the account)"
            .into(),
        log: String::new(),
    })
}

fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Builds a command that runs `program` as `user` (through `runuser`) when given one.
pub(crate) fn command_as(user: Option<&RunAs>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.arg("-u").arg(&user.name).arg("--").arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Recursively hands `path` to `user`.
pub(crate) fn chown_tree(path: &Path, user: &RunAs) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(Error::io(format!("chown {}", path.display())))?;
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).map_err(Error::io(format!("reading {}", path.display())))?
        {
            let entry = entry.map_err(Error::io("reading a directory entry"))?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

/// A detached shell that waits for this process to exit, then runs a cleanup command.
///
/// This is what tears servers down when a test binary exits without running destructors
/// (statics are never dropped; a killed test runs nothing at all). Dropping the `Watchdog`
/// cancels it: the owner has cleaned up itself.
#[derive(Debug)]
pub(crate) struct Watchdog(Child);

impl Watchdog {
    pub(crate) fn spawn(cleanup: &str) -> Result<Self> {
        let parent = std::process::id();
        let script = format!("while [ -d /proc/{parent} ]; do sleep 1; done; {cleanup}");
        Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Watchdog)
            .map_err(Error::io("starting the cleanup watchdog (setsid sh)"))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `attempt` up to `attempts` times (at least once), pausing between tries, and
/// returns the first success or the last error.
pub(crate) fn retry<T>(
    attempts: u32,
    pause: Duration,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut tries = 1;
    loop {
        match attempt() {
            Err(_) if tries < attempts => {
                tries += 1;
                std::thread::sleep(pause);
            }
            outcome => return outcome,
        }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Quotes `text` for a POSIX shell.
pub(crate) fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The first existing file among `candidates`.
pub(crate) fn first_existing(candidates: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    candidates.into_iter().find(|p| p.is_file())
}

/// Every directory on `PATH`.
pub(crate) fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

/// Stops `child` (if any) with `signal` (e.g. `-TERM`) and waits for it to exit; when the
/// signal cannot be delivered it is killed instead. `name` is the program, for errors.
pub(crate) fn stop_child(child: &mut Option<Child>, signal: &str, name: &str) -> Result<()> {
    if let Some(mut child) = child.take() {
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .map_err(Error::io(format!("sending {signal} to {name}")))?;
        if !status.success() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
    Ok(())
}

/// Kills `child` (if any) with `SIGKILL`, like a crash, and reaps it. `name` is the program,
/// for errors.
pub(crate) fn kill_child(child: &mut Option<Child>, name: &str) -> Result<()> {
    if let Some(mut child) = child.take() {
        child.kill().map_err(Error::io(format!("killing {name}")))?;
        let _ = child.wait();
    }
    Ok(())
}
