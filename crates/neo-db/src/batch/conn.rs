//! The connection a batch runs on: plain for one statement, a transaction (or savepoint)
//! for several that must succeed together.

use crate::Result;
use crate::pool::Shared;
use sqlx::{Acquire, PgConnection, Postgres, Transaction};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Instant;

/// Either a plain connection (one statement) or a transaction/savepoint (several that must
/// succeed together, or any statement behind a transaction pooler). Dropping it before
/// [`Conn::finish`] rolls back.
pub(crate) enum Conn<'c, C> {
    Plain(C),
    /// A transaction, with its hold tracked when the repository opened it on the pool (one
    /// in a caller's connection or unit of work is tracked by that).
    Atomic(Transaction<'c, Postgres>, Option<Held>),
}

/// Reports a transaction the repository opened on a pool connection as held too long when
/// it ends, as a [`DbConnection`](crate::DbConnection) does for a plain connection.
pub(crate) struct Held {
    since: Instant,
    shared: Arc<Shared>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shared
            .telemetry
            .record_release("transaction", self.since.elapsed());
    }
}

impl<'c, C> Conn<'c, C>
where
    C: DerefMut<Target = PgConnection>,
{
    pub(crate) async fn open<A>(exec: A, atomic: bool, shared: &Arc<Shared>) -> Result<Self>
    where
        A: Acquire<'c, Database = Postgres, Connection = C>,
    {
        Ok(if atomic {
            let since = Instant::now();
            let tx = exec.begin().await?;
            // Run on `&Db` (whose connections are `DbConnection`s), the transaction is one of
            // its own on a pool connection; on a caller's connection or unit of work it is
            // tracked there. sqlx exposes neither the transaction depth nor the connection
            // under a `Transaction`, and a generic `C` may borrow (no `TypeId`), so the types
            // are compared by name, which is exact within one build.
            let own = std::any::type_name::<C>() == std::any::type_name::<crate::DbConnection>();
            let held = own.then(|| Held {
                since,
                shared: Arc::clone(shared),
            });
            Conn::Atomic(tx, held)
        } else {
            Conn::Plain(exec.acquire().await?)
        })
    }

    pub(crate) async fn finish(self) -> Result<()> {
        if let Conn::Atomic(tx, _held) = self {
            tx.commit().await?;
        }
        Ok(())
    }
}

impl<C: DerefMut<Target = PgConnection>> Deref for Conn<'_, C> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Plain(c) => c,
            Conn::Atomic(tx, _) => tx,
        }
    }
}

impl<C: DerefMut<Target = PgConnection>> DerefMut for Conn<'_, C> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Plain(c) => c,
            Conn::Atomic(tx, _) => tx,
        }
    }
}
