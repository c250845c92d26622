//! Background re-sealing of a user's own [`Sealed<T>`](super::Sealed) columns after a key
//! rotation: a [`Resealer`] over one table, its key column(s) and its sealed column(s).
//!
//! A pass walks the table in key order (keyset pages of
//! [`ResealConfig::batch_size`] rows, a pause between them), reading only rows with a value
//! not under the sealer's current key (the key id is read from the stored bytes in SQL,
//! nothing is opened to find them). Each value is opened under the key it names and sealed
//! under the current one in memory; the batch is then written in one `UPDATE … FROM UNNEST`
//! that is a compare-and-set on the old ciphertext: a row a concurrent writer changed after
//! the page was read is left as that writer made it (counted in
//! [`ResealProgress::changed`]; if it is still under an old key the next pass takes it).
//!
//! Resuming: the rows carry the progress (a row under the current key is not read again), so
//! a pass stopped anywhere (a crash, a deploy) is resumed by running again, from the start
//! or, to skip the part already walked, from the [`ResealPosition`] the last progress report
//! gave (it serializes, so a caller can store it).
//!
//! The [`Binding`] of each value is `(binding table, column, row)`: the table as given to
//! [`ResealTarget::new`] (or [`ResealTarget::binding_table`]), the sealed column's name, and
//! the row's key in PostgreSQL's text form (`key::text`; several key columns joined by `/`,
//! see [`ResealTarget::row_of`]). Seal with the same binding.

use super::{Binding, Sealer};
use crate::pool::Db;
use crate::{Error, Ident, Result, TableName};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use std::time::Duration;

/// How a [`Resealer`] pass runs (`NEO_DB_RESEAL__*` when embedded in a config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ResealConfig {
    /// Rows read, re-sealed and written per batch (one short transaction each; at least 1).
    pub batch_size: u32,
    /// Pause between batches, so the table's own traffic keeps going.
    #[serde(with = "humantime_serde")]
    pub pause: Duration,
}

impl Default for ResealConfig {
    fn default() -> Self {
        ResealConfig {
            batch_size: 500,
            pause: Duration::from_millis(10),
        }
    }
}

/// Which table and columns a [`Resealer`] walks. Names are checked and quoted with
/// [`quote_identifier`](crate::quote_identifier).
#[derive(Debug, Clone)]
pub struct ResealTarget {
    table: TableName,
    binding_table: String,
    keys: Vec<Ident>,
    sealed: Vec<Ident>,
}

impl ResealTarget {
    /// `table` (`name` or `schema.name`) keyed by `key_columns` (its primary key, or any
    /// unique, non-null columns), with `sealed_columns` holding [`Sealed<T>`](super::Sealed)
    /// values (`bytea`, null allowed). Values are bound to `table` as written here.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name, no key or no sealed column, or a column named twice.
    pub fn new(table: &str, key_columns: &[&str], sealed_columns: &[&str]) -> Result<Self> {
        let table_name = TableName::parse(table)?;
        if key_columns.is_empty() || sealed_columns.is_empty() {
            return Err(Error::invalid(
                "reseal target",
                "name at least one key column and one sealed column",
            ));
        }
        let keys = key_columns
            .iter()
            .map(|c| Ident::new(c))
            .collect::<Result<Vec<_>>>()?;
        let sealed = sealed_columns
            .iter()
            .map(|c| Ident::new(c))
            .collect::<Result<Vec<_>>>()?;
        let mut all: Vec<&str> = keys.iter().chain(&sealed).map(Ident::as_str).collect();
        all.sort_unstable();
        if let Some(twice) = all.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid(
                "reseal target",
                format!("column {:?} is named twice", twice[0]),
            ));
        }
        Ok(ResealTarget {
            table: table_name,
            binding_table: table.to_owned(),
            keys,
            sealed,
        })
    }

    /// The table name values are bound to, when it differs from the table's name (e.g.
    /// the unqualified name while the table is reached as `schema.name`).
    #[must_use]
    pub fn binding_table(mut self, name: &str) -> Self {
        name.clone_into(&mut self.binding_table);
        self
    }

    /// The row part of a [`Binding`] for a row whose key columns have these text forms:
    /// one key as it is, several joined by `/`.
    pub fn row_of(keys: &[&str]) -> String {
        keys.join("/")
    }
}

/// Where a pass stands: the key of the last row it walked, in text form. Serializes, so it
/// can be stored and given back to [`Resealer::run`] to resume after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealPosition(pub Vec<String>);

/// What a re-seal pass has done so far. Holds no value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ResealProgress {
    /// Rows re-sealed under the current key by this pass.
    pub resealed: u64,
    /// Rows changed by a concurrent writer between the read and the write: left as the writer
    /// made them.
    pub changed: u64,
    /// Rows left as they were because a value did not open (a key this process does not
    /// hold, a value altered or copied from another row); each is logged at WARN with the
    /// key id.
    pub failed: u64,
    /// Batches written.
    pub batches: u64,
    /// Rows with a value not under the current key when the pass started.
    pub to_do: u64,
    /// Rows still not wholly under the current key, counted when the pass ended (`None`
    /// while it runs).
    pub remaining: Option<u64>,
    /// The last row walked: resume after it.
    pub position: Option<ResealPosition>,
}

/// Moves a user's sealed columns to the sealer's current key (see the [`seal`](crate::seal) module docs).
#[derive(Debug, Clone)]
pub struct Resealer {
    db: Db,
    sealer: Sealer,
    target: ResealTarget,
    config: ResealConfig,
    sql: Statements,
}

#[derive(Debug, Clone)]
struct Statements {
    first_page: String,
    next_page: String,
    update: String,
    not_current: String,
    under_key: String,
}

/// The key id of a sealed value, as `bytea` (null when the bytes are not a sealed value).
fn key_id_sql(column: &str) -> String {
    format!(
        "(CASE WHEN length({column}) < 2 THEN NULL WHEN get_byte({column}, 0) <> {v} THEN NULL \
         ELSE substring({column} FROM 3 FOR get_byte({column}, 1)) END)",
        v = super::SEALED_VERSION
    )
}

impl Resealer {
    /// A re-sealer for `target`, checked against the catalog: the table exists, its key
    /// columns are there and its sealed columns are `bytea`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming a missing column or one that is not `bytea`; a database
    /// error (an unknown table is `42P01`).
    pub async fn new(
        db: &Db,
        sealer: &Sealer,
        target: ResealTarget,
        config: ResealConfig,
    ) -> Result<Self> {
        let names: Vec<&str> = target
            .keys
            .iter()
            .chain(&target.sealed)
            .map(Ident::as_str)
            .collect();
        let mut conn = db.statement_connection().await?;
        let rows = db
            .statement(
                "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type \
                 FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = $1::text::regclass AND a.attname = ANY($2) AND a.attnum > 0 \
                 AND NOT a.attisdropped",
            )
            .bind(target.table.to_string())
            .bind(&names)
            .fetch_all(&mut *conn)
            .await?;
        conn.finish().await?;
        let type_of = |name: &str| -> Result<String> {
            rows.iter()
                .find(|r| r.try_get::<String, _>("name").is_ok_and(|n| n == name))
                .map(|r| r.try_get::<String, _>("type"))
                .transpose()?
                .ok_or_else(|| {
                    Error::invalid(
                        "reseal target",
                        format!("table {} has no column {name:?}", target.table),
                    )
                })
        };
        let mut key_types = Vec::new();
        for key in &target.keys {
            key_types.push(type_of(key.as_str())?);
        }
        for column in &target.sealed {
            let ty = type_of(column.as_str())?;
            if ty != "bytea" {
                return Err(Error::invalid(
                    "reseal target",
                    format!("column {:?} is {ty}, not bytea", column.as_str()),
                ));
            }
        }
        let sql = Statements::new(&target, &key_types);
        Ok(Resealer {
            db: db.clone(),
            sealer: sealer.clone(),
            target,
            config,
            sql,
        })
    }

    /// Rows with at least one value sealed under `key_id` (read from the stored bytes,
    /// nothing opened): what must be 0 before the key is retired.
    ///
    /// # Errors
    /// A database error.
    pub async fn rows_under(&self, key_id: &str) -> Result<u64> {
        self.count(&self.sql.under_key, key_id).await
    }

    /// Rows with a value not under the sealer's current key.
    ///
    /// # Errors
    /// A database error.
    pub async fn remaining(&self) -> Result<u64> {
        self.count(&self.sql.not_current, &self.sealer.current_key_id())
            .await
    }

    async fn count(&self, sql: &str, key_id: &str) -> Result<u64> {
        let mut conn = self.db.statement_connection().await?;
        let n: i64 = self
            .db
            .statement(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(key_id.as_bytes())
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        conn.finish().await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Re-seals every row with a value not under the sealer's current key, in batches, from
    /// the start or after `after` (a position a progress report gave). `progress` hears after
    /// each batch (also logged at INFO, and `neo_db_reseal_rows_total{table,outcome}`
    /// counted). Run it as a background task (`tokio::spawn`); the old key can be retired
    /// once [`rows_under`](Self::rows_under) it is 0.
    ///
    /// # Errors
    /// A database error (the batches before it stay written). A value that does not open is
    /// not an error: the row is counted in [`ResealProgress::failed`].
    pub async fn run(
        &self,
        after: Option<ResealPosition>,
        mut progress: impl FnMut(&ResealProgress),
    ) -> Result<ResealProgress> {
        let current = self.sealer.current_key_id();
        let mut done = ResealProgress {
            to_do: self.remaining().await?,
            position: after,
            ..ResealProgress::default()
        };
        let table = self.target.binding_table.clone();
        loop {
            let seen = self.batch(&current, &mut done).await?;
            done.batches += 1;
            tracing::info!(
                table = %table,
                resealed = done.resealed,
                changed = done.changed,
                failed = done.failed,
                to_do = done.to_do,
                "sealed column values re-sealed under the current key"
            );
            progress(&done);
            if seen < self.config.batch_size.max(1) as usize {
                break;
            }
            tokio::time::sleep(self.config.pause).await;
        }
        let remaining = self.remaining().await?;
        done.remaining = Some(remaining);
        metrics::gauge!(crate::metric_names::RESEAL_REMAINING_ROWS, "table" => table)
            .set(remaining as f64);
        progress(&done);
        Ok(done)
    }

    /// One batch: reads a page after `done.position`, re-seals it, writes it with a
    /// compare-and-set. Returns the rows read.
    async fn batch(&self, current: &str, done: &mut ResealProgress) -> Result<usize> {
        let limit = i64::from(self.config.batch_size.max(1));
        let mut conn = self.db.statement_connection().await?;
        let rows = match &done.position {
            None => {
                self.db
                    .statement(sqlx::AssertSqlSafe(self.sql.first_page.clone()))
                    .bind(current.as_bytes())
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await?
            }
            Some(ResealPosition(keys)) => {
                let mut query = self
                    .db
                    .statement(sqlx::AssertSqlSafe(self.sql.next_page.clone()))
                    .bind(current.as_bytes())
                    .bind(limit);
                for key in keys {
                    query = query.bind(key.as_str());
                }
                query.fetch_all(&mut *conn).await?
            }
        };
        conn.finish().await?;
        let seen = rows.len();
        let (n_keys, n_sealed) = (self.target.keys.len(), self.target.sealed.len());
        let mut keys: Vec<Vec<String>> = vec![Vec::new(); n_keys];
        let mut old: Vec<Vec<Option<Vec<u8>>>> = vec![Vec::new(); n_sealed];
        let mut new: Vec<Vec<Option<Vec<u8>>>> = vec![Vec::new(); n_sealed];
        let mut failed = 0u64;
        for row in &rows {
            let row_keys = (0..n_keys)
                .map(|i| row.try_get::<String, _>(i))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let row_text =
                ResealTarget::row_of(&row_keys.iter().map(String::as_str).collect::<Vec<_>>());
            done.position = Some(ResealPosition(row_keys.clone()));
            let mut olds = Vec::with_capacity(n_sealed);
            let mut news = Vec::with_capacity(n_sealed);
            let mut ok = true;
            for (i, column) in self.target.sealed.iter().enumerate() {
                let stored: Option<Vec<u8>> = row.try_get(n_keys + i)?;
                let binding = Binding::new(&self.target.binding_table, column.as_str(), &row_text);
                let resealed = match &stored {
                    None => None,
                    Some(bytes) => match self.reseal_value(current, bytes, &binding).await {
                        Ok(bytes) => Some(bytes),
                        Err(error) => {
                            tracing::warn!(table = %self.target.binding_table, column = column.as_str(), %error, "sealed value not re-sealed");
                            ok = false;
                            break;
                        }
                    },
                };
                olds.push(stored);
                news.push(resealed);
            }
            if !ok {
                failed += 1;
                continue;
            }
            for (i, key) in row_keys.into_iter().enumerate() {
                keys[i].push(key);
            }
            for (i, (o, n)) in olds.into_iter().zip(news).enumerate() {
                old[i].push(o);
                new[i].push(n);
            }
        }
        let attempted = keys.first().map_or(0, Vec::len) as u64;
        let written = if attempted == 0 {
            0
        } else {
            let mut tx = self.db.begin().await?;
            let mut query = self
                .db
                .statement(sqlx::AssertSqlSafe(self.sql.update.clone()));
            for column in &keys {
                query = query.bind(column);
            }
            for column in &old {
                query = query.bind(column);
            }
            for column in &new {
                query = query.bind(column);
            }
            let written = query.execute(&mut **tx).await?.rows_affected();
            tx.commit().await?;
            written
        };
        let changed = attempted.saturating_sub(written);
        done.resealed += written;
        done.changed += changed;
        done.failed += failed;
        let table = self.target.binding_table.clone();
        for (outcome, n) in [
            ("resealed", written),
            ("changed", changed),
            ("failed", failed),
        ] {
            if n > 0 {
                metrics::counter!(crate::metric_names::RESEAL_ROWS_TOTAL, "table" => table.clone(), "outcome" => outcome)
                    .increment(n);
            }
        }
        Ok(seen)
    }

    /// `stored` under the current key: as it is when it already is, else opened and sealed.
    async fn reseal_value(
        &self,
        current: &str,
        stored: &[u8],
        binding: &Binding<'_>,
    ) -> Result<Vec<u8>> {
        let parts = super::Parts::parse(stored)?;
        if parts.key_id == current {
            return Ok(stored.to_vec());
        }
        let plain = self.sealer.open(stored, binding).await?;
        self.sealer.seal(&plain, binding).await
    }
}

impl Statements {
    fn new(target: &ResealTarget, key_types: &[String]) -> Self {
        let table = target.table.to_string();
        let keys: Vec<&str> = target.keys.iter().map(Ident::quoted).collect();
        let sealed: Vec<&str> = target.sealed.iter().map(Ident::quoted).collect();
        let not_current = sealed
            .iter()
            .map(|c| {
                format!(
                    "({c} IS NOT NULL AND {} IS DISTINCT FROM $1)",
                    key_id_sql(c)
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let under_key = sealed
            .iter()
            .map(|c| format!("{} = $1", key_id_sql(c)))
            .collect::<Vec<_>>()
            .join(" OR ");
        // Output columns get names of their own (k0, s0, ...) and the walk is ordered by the
        // table's columns (t.key): `ORDER BY key` would sort by the text output column.
        let select_list = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("t.{k}::text AS k{i}"))
            .chain(
                sealed
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("t.{c} AS s{i}")),
            )
            .collect::<Vec<_>>()
            .join(", ");
        let order = keys
            .iter()
            .map(|k| format!("t.{k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let position = key_types
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("${}::text::{ty}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let page_filter = sealed
            .iter()
            .map(|c| {
                let column = format!("t.{c}");
                format!(
                    "({column} IS NOT NULL AND {} IS DISTINCT FROM $1)",
                    key_id_sql(&column)
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let first_page = format!(
            "SELECT {select_list} FROM {table} AS t WHERE ({page_filter}) ORDER BY {order} LIMIT $2"
        );
        let next_page = format!(
            "SELECT {select_list} FROM {table} AS t WHERE ({order}) > ({position}) \
             AND ({page_filter}) ORDER BY {order} LIMIT $2"
        );
        let (n_keys, n_sealed) = (keys.len(), sealed.len());
        let mut arrays = Vec::new();
        let mut aliases = Vec::new();
        for i in 0..n_keys {
            arrays.push(format!("${}::text[]", i + 1));
            aliases.push(format!("k{i}"));
        }
        for prefix in ["o", "n"] {
            for i in 0..n_sealed {
                arrays.push(format!("${}::bytea[]", arrays.len() + 1));
                aliases.push(format!("{prefix}{i}"));
            }
        }
        let set = sealed
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = v.n{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let matches = keys
            .iter()
            .zip(key_types)
            .enumerate()
            .map(|(i, (k, ty))| format!("t.{k} = v.k{i}::{ty}"))
            .chain(
                sealed
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("t.{c} IS NOT DISTINCT FROM v.o{i}")),
            )
            .collect::<Vec<_>>()
            .join(" AND ");
        let update = format!(
            "UPDATE {table} AS t SET {set} FROM UNNEST({}) AS v({}) WHERE {matches}",
            arrays.join(", "),
            aliases.join(", ")
        );
        Statements {
            not_current: format!("SELECT count(*) FROM {table} WHERE {not_current}"),
            under_key: format!("SELECT count(*) FROM {table} WHERE {under_key}"),
            first_page,
            next_page,
            update,
        }
    }
}
