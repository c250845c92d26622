//! The sampling lease: a row in `sampler_leases` that one instance holds until it expires.
//! A plain row (not a session advisory lock) works behind a transaction pooler and needs no
//! connection held open; the database's clock decides expiry, so instances' clocks may differ.

use crate::Result;
use neo_db::{Db, TableName};
use std::time::Duration;

/// One instance's claim on a named lease.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    db: Db,
    table: TableName,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    pub(crate) fn new(
        db: &Db,
        table: TableName,
        name: &str,
        holder: String,
        ttl: Duration,
    ) -> Self {
        Lease {
            db: db.clone(),
            table,
            name: name.to_owned(),
            holder,
            ttl,
        }
    }

    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease when it is free or expired, or renews it when this instance holds it;
    /// returns whether this instance holds it now.
    pub(crate) async fn try_hold(&self) -> Result<bool> {
        let t = &self.table;
        let sql = format!(
            "INSERT INTO {t} AS l (name, holder, expires_at) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE l.holder = EXCLUDED.holder OR l.expires_at < clock_timestamp() \
             RETURNING holder"
        );
        let mut conn = self.db.statement_connection().await?;
        let won: Option<String> = self
            .db
            .statement(sqlx::AssertSqlSafe(sql))
            .bind(&self.name)
            .bind(&self.holder)
            .bind(self.ttl.as_secs_f64())
            .fetch_optional(&mut *conn)
            .await?
            .map(|row| sqlx::Row::try_get(&row, "holder"))
            .transpose()?;
        conn.finish().await?;
        Ok(won.is_some())
    }

    /// Gives the lease up if this instance holds it, so another instance takes over at once.
    pub(crate) async fn release(&self) -> Result<()> {
        let t = &self.table;
        let sql = format!("DELETE FROM {t} WHERE name = $1 AND holder = $2");
        let mut conn = self.db.statement_connection().await?;
        self.db
            .statement(sqlx::AssertSqlSafe(sql))
            .bind(&self.name)
            .bind(&self.holder)
            .execute(&mut *conn)
            .await?;
        conn.finish().await?;
        Ok(())
    }
}
