//! Read-your-writes: WAL positions ([`Lsn`]), what a read may see ([`Consistency`]) and the
//! token of one caller ([`ReadSession`]).

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A position in the write-ahead log (PostgreSQL's `pg_lsn`, written `16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || Error::Config(format!("`{text}` is not a WAL position (e.g. 16/B374D848)"));
        let (high, low) = text.trim().split_once('/').ok_or_else(bad)?;
        let high = u64::from_str_radix(high, 16).map_err(|_| bad())?;
        let low = u64::from_str_radix(low, 16).map_err(|_| bad())?;
        if high > u64::from(u32::MAX) || low > u64::from(u32::MAX) {
            return Err(bad());
        }
        Ok(Lsn((high << 32) | low))
    }
}

/// What a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Consistency {
    /// Anything a replica within `max_lag` shows.
    Eventual,
    /// At least every write up to this position (the caller's own writes): a replica that
    /// has replayed past it, else the primary.
    ReadAfter(Lsn),
    /// The primary.
    Primary,
}

/// The read-your-writes token of one caller (a user's session, a request chain): the
/// position of its last write. Cheap to clone; clones share the position.
///
/// Run the caller's work in [`ReadSession::scope`]: [`Db::wrote`](crate::Db::wrote) then
/// records each write's position in the session, and [`Db::read_pool`](crate::Db::read_pool)
/// sends its reads to a replica only once that replica has replayed past it. Carry it across
/// requests with [`ReadSession::token`] / [`ReadSession::resume`] (e.g. in a cookie).
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db) -> neo_db::Result<()> {
/// use neo_db::ReadSession;
/// let session = ReadSession::new();
/// session.scope(async {
///     sqlx::query("UPDATE t SET v = 2").execute(db.pool()).await?;
///     db.wrote().await?; // remembers the primary's WAL position
///     // Primary until a replica has replayed that write, then a replica.
///     let v: i32 = sqlx::query_scalar("SELECT v FROM t").fetch_one(db.read_pool()).await?;
///     # let _ = v;
///     Ok::<_, neo_db::Error>(())
/// }).await?;
/// let cookie = session.token(); // "0/3000148", or "" before any write
/// # let _ = cookie; Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReadSession {
    last_write: Arc<AtomicU64>,
}

tokio::task_local! {
    static CURRENT: ReadSession;
}

impl ReadSession {
    /// A session that has not written.
    pub fn new() -> Self {
        ReadSession::default()
    }

    /// A session that has written up to `token` (from [`ReadSession::token`]); an empty token
    /// is a session that has not written.
    ///
    /// # Errors
    /// [`Error::Config`] when the token is not a WAL position.
    pub fn resume(token: &str) -> Result<Self> {
        let session = ReadSession::new();
        if !token.trim().is_empty() {
            session.observe(token.parse()?);
        }
        Ok(session)
    }

    /// The position of the last write, as text for a cookie or a header (`""`: none).
    pub fn token(&self) -> String {
        self.last_write()
            .map(|lsn| lsn.to_string())
            .unwrap_or_default()
    }

    /// The position of the session's last write.
    pub fn last_write(&self) -> Option<Lsn> {
        match self.last_write.load(Ordering::Acquire) {
            0 => None,
            lsn => Some(Lsn(lsn)),
        }
    }

    /// Records a write at `lsn` (an earlier position than the one held is ignored).
    pub fn observe(&self, lsn: Lsn) {
        self.last_write.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// What this session's reads may see.
    pub fn consistency(&self) -> Consistency {
        self.last_write()
            .map_or(Consistency::Eventual, Consistency::ReadAfter)
    }

    /// Runs `work` with this session as the current one of the task.
    pub async fn scope<F: Future>(&self, work: F) -> F::Output {
        CURRENT.scope(self.clone(), work).await
    }

    /// The session of the current task, if it runs inside [`ReadSession::scope`].
    pub fn current() -> Option<ReadSession> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_its_text() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn((0x16 << 32) | 0xB374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("0/0".parse::<Lsn>().unwrap() < lsn);
        assert!(matches!("B374D848".parse::<Lsn>(), Err(Error::Config(_))));
        assert!(matches!("1/xyz".parse::<Lsn>(), Err(Error::Config(_))));
        assert!(matches!(
            "100000000/0".parse::<Lsn>(),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn a_session_keeps_its_latest_write_and_travels_as_a_token() {
        let session = ReadSession::new();
        assert_eq!(session.consistency(), Consistency::Eventual);
        assert_eq!(session.token(), "");
        session.observe(Lsn(0x3000_0148));
        session.observe(Lsn(0x100));
        assert_eq!(session.last_write(), Some(Lsn(0x3000_0148)));
        let resumed = ReadSession::resume(&session.token()).unwrap();
        assert_eq!(
            resumed.consistency(),
            Consistency::ReadAfter(Lsn(0x3000_0148))
        );
        assert_eq!(ReadSession::resume("").unwrap().last_write(), None);
        assert!(ReadSession::resume("cookie").is_err());
    }

    #[tokio::test]
    async fn the_current_session_is_the_scoped_one() {
        assert!(ReadSession::current().is_none());
        let session = ReadSession::new();
        session.observe(Lsn(7));
        let seen = session
            .scope(async { ReadSession::current().and_then(|s| s.last_write()) })
            .await;
        assert_eq!(seen, Some(Lsn(7)));
    }
}
