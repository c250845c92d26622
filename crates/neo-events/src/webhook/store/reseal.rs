//! Moving endpoints to the current key: re-sealing secrets and header values sealed under an
//! older key (rotation) or stored as plain text (migration), in bounded batches while
//! deliveries go on; retiring a key no endpoint uses any more; and the strict mode that
//! refuses to start while plain text remains.
//!
//! Each endpoint row records the keys its values are sealed under (`sealed_with`, `''` for a
//! plain value; migration 4), so what is left is counted without opening anything. A re-seal
//! batch locks its rows (`FOR UPDATE`) in one short transaction, opens each value with the
//! key it names and seals it under the current one, and records the row's keys. The rows
//! themselves carry the progress: a pass stopped anywhere (a crash, a deploy) resumes by
//! running again, from the start or from the last id it reported, and skips what is done.

use super::{Webhooks, db_error};
use crate::EventError;
use neo_core::ExposeSecret;
use neo_db::seal::{Binding, SealProblem, Sealer};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The keys a row's stored values are under, sorted and distinct; `''` for a plain value.
pub(super) fn sealed_with(secrets: &[&str], headers: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<String> = secrets
        .iter()
        .copied()
        .chain(headers.values().map(String::as_str))
        .map(|value| Sealer::key_id_of_text(value).unwrap_or_default())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Where a re-seal pass stands. Holds no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ResealProgress {
    /// Endpoints re-sealed by this pass so far.
    pub resealed: u64,
    /// Endpoints not wholly under the current key yet (plain or older keys), counted after
    /// the last batch.
    pub remaining: u64,
    /// Endpoints this pass left as they were because a value did not open (a key this
    /// process does not hold, a value altered or copied from another row): each is logged at
    /// WARN with its id and the key id. They stay in `remaining`.
    pub failed: u64,
    /// The last endpoint id the pass went through: resume after it.
    pub last_id: Option<Uuid>,
}

/// What is stored at rest, counted per endpoint row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AtRest {
    /// Endpoints with at least one plain-text secret or header value.
    pub plain_rows: u64,
    /// Per key id, the endpoints with at least one value sealed under it.
    pub rows_by_key: BTreeMap<String, u64>,
}

/// One endpoint's stored values, as a batch reads them.
#[derive(sqlx::FromRow)]
struct StoredRow {
    id: Uuid,
    secrets: Vec<String>,
    #[sqlx(json)]
    headers: BTreeMap<String, String>,
}

impl Webhooks {
    /// Re-seals every endpoint not wholly under the sealer's current key: values under older
    /// keys (after [`Sealer::replace_provider`] made a new key current) and plain-text values
    /// (endpoints created before sealing was on), in batches of
    /// [`reseal.batch_size`](crate::ResealConfig) with a pause between them. Deliveries keep
    /// going: each batch is one short transaction, and a value opens under its old key until
    /// it is re-sealed. Resumable: pass the `last_id` of the last progress seen (or `None`;
    /// rows already done are skipped). `progress` hears after each batch (also logged).
    /// Run it as a background task (`tokio::spawn`).
    ///
    /// # Errors
    /// [`EventError::Invalid`] without a sealer; a database error (the batches before it
    /// stay re-sealed). An endpoint whose value does not open is skipped and counted in
    /// [`ResealProgress::failed`], not an error.
    pub async fn reseal(
        &self,
        after: Option<Uuid>,
        mut progress: impl FnMut(&ResealProgress),
    ) -> Result<ResealProgress, EventError> {
        let config = self.inner.config.reseal;
        let limit = i64::from(config.batch_size.max(1));
        let mut done = ResealProgress {
            last_id: after,
            ..ResealProgress::default()
        };
        loop {
            let (resealed, failed, seen, last) = self.reseal_batch(done.last_id, limit).await?;
            done.resealed += resealed;
            done.failed += failed;
            done.last_id = last.or(done.last_id);
            done.remaining = self.remaining().await?;
            tracing::info!(
                resealed = done.resealed,
                remaining = done.remaining,
                failed = done.failed,
                "webhook endpoints re-sealed under the current key"
            );
            metrics::gauge!(crate::metric_names::WEBHOOK_RESEAL_REMAINING_ENDPOINTS)
                .set(done.remaining as f64);
            progress(&done);
            if seen < limit {
                return Ok(done);
            }
            tokio::time::sleep(config.pause).await;
        }
    }

    /// One batch of [`reseal`](Webhooks::reseal): up to `limit` endpoints after `after` that
    /// are not wholly under the current key. Returns the rows re-sealed, the rows skipped
    /// because a value did not open, the rows seen and the last id seen.
    async fn reseal_batch(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<(u64, u64, i64, Option<Uuid>), EventError> {
        let sealer = self.sealer().ok_or_else(|| EventError::Invalid {
            what: "re-seal",
            reason: "these Webhooks have no sealer (Webhooks::sealed)".into(),
        })?;
        let current = sealer.current_key_id();
        let mut tx = self.inner.system.begin().await?;
        let rows: Vec<StoredRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(self.inner.sql.reseal_page.clone()))
                .bind(after.unwrap_or(Uuid::nil()))
                .bind(&current)
                .bind(limit)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
        let seen = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        let last = rows.last().map(|row| row.id);
        let (mut resealed, mut failed) = (0, 0);
        for row in rows {
            let (secrets, headers) = match self.reseal_values(sealer, &current, &row).await {
                Ok(values) => values,
                Err(EventError::Db(error @ neo_db::Error::Seal { .. })) => {
                    tracing::warn!(endpoint_id = %row.id, %error, "endpoint not re-sealed");
                    failed += 1;
                    continue;
                }
                Err(other) => return Err(other),
            };
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let keys = sealed_with(&refs, &headers);
            self.write_row(&mut tx, row.id, Some((&secrets, &headers)), &keys)
                .await?;
            resealed += 1;
        }
        tx.commit().await?;
        Ok((resealed, failed, seen, last))
    }

    /// A row's secrets and header values under the current key.
    async fn reseal_values(
        &self,
        sealer: &Sealer,
        current: &str,
        row: &StoredRow,
    ) -> Result<(Vec<String>, BTreeMap<String, String>), EventError> {
        let mut secrets = Vec::with_capacity(row.secrets.len());
        for stored in &row.secrets {
            secrets.push(
                self.reseal_value(sealer, current, stored, row.id, None)
                    .await?,
            );
        }
        let mut headers = BTreeMap::new();
        for (name, stored) in &row.headers {
            let value = self
                .reseal_value(sealer, current, stored, row.id, Some(name))
                .await?;
            headers.insert(name.clone(), value);
        }
        Ok((secrets, headers))
    }

    /// `stored` under the current key: as it is when it already is, else opened (or taken as
    /// plain text) and sealed.
    async fn reseal_value(
        &self,
        sealer: &Sealer,
        current: &str,
        stored: &str,
        id: Uuid,
        header: Option<&str>,
    ) -> Result<String, EventError> {
        if Sealer::key_id_of_text(stored).as_deref() == Some(current) {
            return Ok(stored.to_owned());
        }
        let column = header.map_or_else(
            || super::sealing::SECRETS.to_owned(),
            super::sealing::header_column,
        );
        let row = id.to_string();
        let binding = Binding::new(super::sealing::TABLE, &column, &row);
        let plain = if Sealer::is_sealed_text(stored) {
            sealer.open_text(stored, &binding).await?
        } else {
            neo_core::SecretString::from(stored)
        };
        Ok(sealer.seal_text(plain.expose_secret(), &binding).await?)
    }

    /// Writes a row's values (when re-sealed) and the keys they are under.
    async fn write_row(
        &self,
        tx: &mut sqlx::PgConnection,
        id: Uuid,
        values: Option<(&Vec<String>, &BTreeMap<String, String>)>,
        keys: &[String],
    ) -> Result<(), EventError> {
        let query = match values {
            Some((secrets, headers)) => {
                sqlx::query(sqlx::AssertSqlSafe(self.inner.sql.reseal_row.clone()))
                    .bind(id)
                    .bind(secrets)
                    .bind(sqlx::types::Json(headers))
                    .bind(keys)
            }
            None => sqlx::query(sqlx::AssertSqlSafe(self.inner.sql.record_keys.clone()))
                .bind(id)
                .bind(keys),
        };
        query.execute(&mut *tx).await.map_err(db_error)?;
        Ok(())
    }

    /// Endpoints not wholly under the current key (all of them not wholly plain without a
    /// sealer).
    async fn remaining(&self) -> Result<u64, EventError> {
        let current = self
            .sealer()
            .map(Sealer::current_key_id)
            .unwrap_or_default();
        // A statement connection: behind a transaction pooler a statement must run unnamed
        // inside a transaction (neo_db::Pooler).
        let db = &self.inner.system;
        let mut conn = db.statement_connection().await?;
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(self.inner.sql.not_under.clone()))
            .persistent(db.pooler().named_statements())
            .bind(current)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Records which keys the endpoints not examined yet (written before migration 4) are
    /// under, reading only the key id each value names (nothing is opened).
    async fn examine_unrecorded(&self) -> Result<(), EventError> {
        let mut after = Uuid::nil();
        loop {
            let mut tx = self.inner.system.begin().await?;
            let rows: Vec<StoredRow> =
                sqlx::query_as(sqlx::AssertSqlSafe(self.inner.sql.examine_page.clone()))
                    .bind(after)
                    .bind(i64::from(self.inner.config.reseal.batch_size.max(1)))
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(db_error)?;
            let Some(last) = rows.last().map(|row| row.id) else {
                return Ok(());
            };
            for row in &rows {
                let refs: Vec<&str> = row.secrets.iter().map(String::as_str).collect();
                let keys = sealed_with(&refs, &row.headers);
                self.write_row(&mut tx, row.id, None, &keys).await?;
            }
            tx.commit().await?;
            after = last;
        }
    }

    /// What is stored at rest: endpoints with plain-text values, and per key id the
    /// endpoints with values under it. Examines endpoints not examined yet first.
    ///
    /// # Errors
    /// A database error.
    pub async fn at_rest(&self) -> Result<AtRest, EventError> {
        self.examine_unrecorded().await?;
        let db = &self.inner.system;
        let mut conn = db.statement_connection().await?;
        let counts: Vec<(String, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(self.inner.sql.rows_by_key.clone()))
                .persistent(db.pooler().named_statements())
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
        conn.finish().await?;
        let mut at_rest = AtRest::default();
        for (key, rows) in counts {
            let rows = u64::try_from(rows).unwrap_or(0);
            if key.is_empty() {
                at_rest.plain_rows = rows;
            } else {
                at_rest.rows_by_key.insert(key, rows);
            }
        }
        Ok(at_rest)
    }

    /// The strict mode's check: refuses while any endpoint holds a plain-text secret or
    /// header value ([`migrate`](Webhooks::migrate) runs it with
    /// [`require_sealed`](crate::WebhookConfig::require_sealed)).
    ///
    /// # Errors
    /// [`EventError::PlainTextAtRest`] with the count of such endpoints; a database error.
    pub async fn ensure_sealed(&self) -> Result<AtRest, EventError> {
        let at_rest = self.at_rest().await?;
        if at_rest.plain_rows > 0 {
            return Err(EventError::PlainTextAtRest {
                rows: at_rest.plain_rows,
            });
        }
        Ok(at_rest)
    }

    /// Retires `key_id` at the sealer ([`Sealer::retire_key`]) once no endpoint holds a value
    /// under it (after [`reseal`](Webhooks::reseal) moved them to the current key).
    ///
    /// This retires the key in this process only. To retire it for every instance, call
    /// [`neo_db::seal::KeyRegistry::retire`] with these `Webhooks` among its checkers (they
    /// implement [`neo_db::seal::KeyUsage`]): the registry records it where every sealer
    /// looks.
    ///
    /// # Errors
    /// [`neo_db::Error::Seal`] naming the key: [`SealProblem::StillInUse`] with the count of
    /// endpoints still under it, or what the sealer refuses (the current key, an unknown
    /// one); [`EventError::Invalid`] without a sealer; a database error.
    pub async fn retire_key(&self, key_id: &str) -> Result<(), EventError> {
        let sealer = self.sealer().ok_or_else(|| EventError::Invalid {
            what: "key retirement",
            reason: "these Webhooks have no sealer (Webhooks::sealed)".into(),
        })?;
        let rows = self
            .at_rest()
            .await?
            .rows_by_key
            .get(key_id)
            .copied()
            .unwrap_or(0);
        if rows > 0 {
            return Err(EventError::Db(neo_db::Error::Seal {
                key_id: key_id.to_owned(),
                problem: SealProblem::StillInUse { rows },
            }));
        }
        sealer.retire_key(key_id).await?;
        Ok(())
    }
}

/// Endpoints with a value under a key, so [`neo_db::seal::KeyRegistry::retire`] (retiring a
/// key for every instance) refuses while any endpoint still uses it.
impl neo_db::seal::KeyUsage for Webhooks {
    fn rows_under<'a>(
        &'a self,
        key_id: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = neo_db::Result<u64>> + Send + 'a>> {
        Box::pin(async move {
            let at_rest = self.at_rest().await.map_err(|error| match error {
                EventError::Db(error) => error,
                other => neo_db::Error::Config(other.to_string()),
            })?;
            Ok(at_rest.rows_by_key.get(key_id).copied().unwrap_or(0))
        })
    }
}
