//! Running behind a connection pooler (PgBouncer in transaction mode): which session state
//! the library gives up, and where LISTEN/NOTIFY goes instead.
//!
//! PgBouncer in transaction mode hands a server connection to a client for one transaction
//! and takes it back when the server reports "idle" (ReadyForQuery `I`). Outside a
//! transaction that happens after **every** Sync message, and sqlx sends two per
//! parameterised statement (Parse/Describe/Sync, then Bind/Execute/Sync; see
//! `sqlx-postgres` `connection/executor.rs`), so:
//! - a named prepared statement (sqlx's default, `sqlx_s_N`, numbered per client
//!   connection) lands on a server connection another client may already have used the same
//!   name on ("prepared statement already exists") or is missing where the next Bind goes
//!   ("does not exist"). PgBouncer 1.18 does not track them (1.21's
//!   `max_prepared_statements` does);
//! - even an unnamed statement can be bound on another server connection than it was parsed
//!   on, running another client's statement or failing, unless a transaction pins the
//!   server connection between Parse and Bind.
//!
//! With [`Pooler::Transaction`] neo-db therefore runs every statement of its own as an
//! unnamed statement (`persistent(false)`: parsed, planned and dropped per call) inside a
//! transaction (a savepoint when the caller's unit of work is already one); `SET` is only
//! `SET LOCAL` (`set_config(…, true)`); the migration lock is `pg_advisory_xact_lock`;
//! LISTEN goes to [`DbConfig::listen_url`](crate::DbConfig::listen_url), a direct
//! connection, or is replaced by polling.

use crate::{Db, Error, Result};
use neo_core::ExposeSecret;
use serde::{Deserialize, Deserializer};
use std::str::FromStr;

/// What sits between the pool and PostgreSQL (`NEO_DB_POOLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pooler {
    /// Direct connections (or a session pooler): named prepared statements cached per
    /// connection, session settings and LISTEN on the pool. The default.
    #[default]
    None,
    /// A transaction pooler (PgBouncer `pool_mode = transaction`): no state outlives a
    /// transaction (see [`DbConfig::pooler`](crate::DbConfig::pooler)).
    Transaction,
}

impl Pooler {
    /// The accepted spellings, for messages.
    pub const ALLOWED: &'static str = "none, transaction";

    /// Whether statements may be prepared once per connection under a name and reused.
    pub fn named_statements(self) -> bool {
        self == Pooler::None
    }

    /// Whether every statement must run inside a transaction (so the pooler keeps one
    /// server connection from Parse to Execute).
    pub fn needs_transaction(self) -> bool {
        self == Pooler::Transaction
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooler::None => "none",
            Pooler::Transaction => "transaction",
        }
    }
}

impl std::fmt::Display for Pooler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pooler {
    type Err = Error;

    /// `none` or `transaction` (case-insensitive; `pgbouncer` is accepted for `transaction`).
    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Pooler::None),
            "transaction" | "pgbouncer" => Ok(Pooler::Transaction),
            _ => Err(Error::Config(format!(
                "unknown pooler {text:?}: expected one of {}",
                Pooler::ALLOWED
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Pooler {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|e: Error| match e {
            Error::Config(message) => serde::de::Error::custom(message),
            other => serde::de::Error::custom(other),
        })
    }
}

impl Db {
    /// The pooler this pool was configured for.
    pub fn pooler(&self) -> Pooler {
        self.config().pooler
    }

    /// A query built from `sql` that is prepared under a name and cached per connection
    /// unless the pooler cannot keep named statements ([`Pooler::named_statements`]).
    /// Run it inside a transaction when [`Pooler::needs_transaction`].
    pub fn statement<'q>(
        &self,
        sql: impl sqlx::SqlSafeStr,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(sql).persistent(self.pooler().named_statements())
    }

    /// A connection listening for notifications: on
    /// [`listen_url`](crate::DbConfig::listen_url) when set (a direct connection, past any
    /// pooler), on the pool when there is no transaction pooler, else `None`: behind a
    /// transaction pooler LISTEN would be lost with the server connection, so callers poll.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed `listen_url`; the connection's error.
    pub async fn listener(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        let config = self.config();
        if let Some(url) = &config.listen_url {
            let url = url.expose_secret();
            crate::tls::check_url(url)?;
            let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|_| {
                Error::Config(
                    "listen_url is not a valid postgres:// URL (its text is not shown: it may hold a password)"
                        .into(),
                )
            })?;
            let options =
                crate::tls::apply(config, url, options)?.application_name(&config.application_name);
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(config.acquire_timeout)
                .connect_lazy_with(options);
            return Ok(Some(sqlx::postgres::PgListener::connect_with(&pool).await?));
        }
        if self.pooler().needs_transaction() {
            return Ok(None);
        }
        Ok(Some(
            sqlx::postgres::PgListener::connect_with(self.pool()).await?,
        ))
    }
}

/// A connection for statements that need no transaction of their own: a plain pooled
/// connection, or behind a transaction pooler a transaction (so the pooler keeps one
/// server connection from Parse to Execute). Call [`finish`](Self::finish) when done;
/// dropping it rolls the transaction back.
#[derive(Debug)]
pub enum StatementConnection {
    /// No transaction pooler: autocommit.
    Plain(crate::DbConnection),
    /// Behind a transaction pooler.
    Transaction(crate::UnitOfWork),
}

impl Db {
    /// A connection for one or more statements of their own ([`StatementConnection`]).
    ///
    /// # Errors
    /// As [`Db::acquire`] and [`Db::begin`].
    pub async fn statement_connection(&self) -> Result<StatementConnection> {
        self.statement_connection_on(self.pool()).await
    }

    /// A [`StatementConnection`] from `pool`: the primary's, or a replica's from
    /// [`Db::read_pool`] (a replica behind the same kind of pooler as the primary).
    ///
    /// # Errors
    /// As [`Db::acquire`] and [`Db::begin`].
    pub async fn statement_connection_on(
        &self,
        pool: &sqlx::PgPool,
    ) -> Result<StatementConnection> {
        Ok(if self.pooler().needs_transaction() {
            StatementConnection::Transaction(self.begin_on(pool).await?)
        } else {
            StatementConnection::Plain(self.acquire_on(pool).await?)
        })
    }
}

impl StatementConnection {
    /// Commits the transaction, if there is one.
    ///
    /// # Errors
    /// The commit's database error.
    pub async fn finish(self) -> Result<()> {
        match self {
            StatementConnection::Plain(_) => Ok(()),
            StatementConnection::Transaction(uow) => uow.commit().await,
        }
    }
}

impl std::ops::Deref for StatementConnection {
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &sqlx::PgConnection {
        match self {
            StatementConnection::Plain(conn) => conn,
            StatementConnection::Transaction(uow) => uow,
        }
    }
}

impl std::ops::DerefMut for StatementConnection {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        match self {
            StatementConnection::Plain(conn) => conn,
            StatementConnection::Transaction(uow) => uow,
        }
    }
}
