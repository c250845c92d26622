//! The connection a batch runs on: plain for one statement, a transaction (or savepoint)
//! for several that must succeed together.

use crate::Result;
use sqlx::{Acquire, PgConnection, Postgres, Transaction};
use std::ops::{Deref, DerefMut};

/// Either a plain connection (one statement) or a transaction/savepoint (several that must
/// succeed together). Dropping it before [`Conn::finish`] rolls back.
pub(crate) enum Conn<'c, C> {
    Plain(C),
    Atomic(Transaction<'c, Postgres>),
}

impl<'c, C> Conn<'c, C>
where
    C: DerefMut<Target = PgConnection>,
{
    pub(crate) async fn open<A>(exec: A, atomic: bool) -> Result<Self>
    where
        A: Acquire<'c, Database = Postgres, Connection = C>,
    {
        Ok(if atomic {
            Conn::Atomic(exec.begin().await?)
        } else {
            Conn::Plain(exec.acquire().await?)
        })
    }

    pub(crate) async fn finish(self) -> Result<()> {
        if let Conn::Atomic(tx) = self {
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
            Conn::Atomic(tx) => tx,
        }
    }
}

impl<C: DerefMut<Target = PgConnection>> DerefMut for Conn<'_, C> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Plain(c) => c,
            Conn::Atomic(tx) => tx,
        }
    }
}
