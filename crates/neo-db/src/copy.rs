//! COPY bulk insert: a buffered writer that streams rows with `COPY ... FROM STDIN`.
//!
//! Rows are encoded into a buffer as they are written (binary format by default, text on
//! request) and sent in one COPY per flush. A flush happens when the buffer holds
//! `flush_rows` rows or `flush_bytes` bytes, when the oldest buffered row is older than
//! `flush_interval` (checked on every write, and by [`CopyWriter::flush_if_due`] for callers
//! with their own ticker), and on [`CopyWriter::flush`] / [`CopyWriter::finish`].
//!
//! Each flush is one statement (or, for upserts, one transaction), so a bad row fails that
//! flush only: nothing of it is committed, the error names the row, and the connection goes
//! back to the pool healthy. No connection is held between flushes.

use crate::config::{CopyConfig, CopyFormat};
use crate::ident::{Ident, TableName};
use crate::pool::Db;
use crate::{Error, Result};
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, Utc};
use neo_core::ErrorKind;
use sqlx::postgres::PgDatabaseError;
use std::fmt;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::time::{Duration, Instant};
use uuid::Uuid;

const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const BINARY_TRAILER: &[u8] = &[0xff, 0xff];
/// The temporary table an upserting writer copies into (dropped at commit).
const STAGE_TABLE: &str = "\"_neo_copy_stage\"";

/// A value that can be written into a COPY stream, in both formats.
///
/// Implemented for `bool`, `i16`, `i32`, `i64`, `f32`, `f64`, `str`/`String`, `Uuid`,
/// `serde_json::Value` (as `jsonb`), `DateTime<Utc>` (`timestamptz`), `NaiveDate` (`date`),
/// `Vec<u8>` (`bytea`), the neo-core ids, `Option<T>` (NULL) and references.
pub trait CopyValue {
    /// Writes the value in PostgreSQL's binary format, including its 4-byte length.
    fn write_binary(&self, buf: &mut BytesMut);
    /// Writes the value in COPY text format, escaped.
    fn write_text(&self, buf: &mut BytesMut);
}

/// A row type written by a [`CopyWriter`].
///
/// # Example
/// ```
/// use neo_db::{CopyRow, RowWriter};
/// struct Event { id: uuid::Uuid, name: String, amount: i64, data: serde_json::Value }
/// impl CopyRow for Event {
///     const COLUMNS: &'static [&'static str] = &["id", "name", "amount", "data"];
///     fn write_row(&self, row: &mut RowWriter<'_>) {
///         row.field(&self.id).field(&self.name).field(&self.amount).field(&self.data);
///     }
/// }
/// ```
pub trait CopyRow {
    /// The target columns, in the order [`CopyRow::write_row`] writes fields.
    const COLUMNS: &'static [&'static str];
    /// Writes one field per column.
    fn write_row(&self, row: &mut RowWriter<'_>);
}

/// Writes the fields of one row.
pub struct RowWriter<'a> {
    buf: &'a mut BytesMut,
    format: CopyFormat,
    fields: usize,
}

impl fmt::Debug for RowWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowWriter")
            .field("format", &self.format)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl RowWriter<'_> {
    /// Writes the next field.
    pub fn field<V: CopyValue + ?Sized>(&mut self, value: &V) -> &mut Self {
        match self.format {
            CopyFormat::Binary => value.write_binary(self.buf),
            CopyFormat::Text => {
                if self.fields > 0 {
                    self.buf.put_u8(b'\t');
                }
                value.write_text(self.buf);
            }
        }
        self.fields += 1;
        self
    }
}

/// What a [`CopyWriter`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CopyReport {
    /// Rows committed.
    pub rows: u64,
    /// COPY statements run.
    pub flushes: u64,
    /// Bytes of COPY data sent.
    pub bytes: u64,
}

/// A buffered COPY writer for rows of type `R` into one table.
///
/// # Example
/// ```no_run
/// # use neo_db::{CopyRow, RowWriter};
/// # struct Event { id: uuid::Uuid, name: String }
/// # impl CopyRow for Event {
/// #     const COLUMNS: &'static [&'static str] = &["id", "name"];
/// #     fn write_row(&self, row: &mut RowWriter<'_>) { row.field(&self.id).field(&self.name); }
/// # }
/// # async fn demo(db: neo_db::Db, events: Vec<Event>) -> neo_db::Result<()> {
/// use neo_db::CopyWriter;
/// let mut writer = CopyWriter::<Event>::new(&db, "events")?;
/// for event in &events {
///     writer.write(event).await?; // flushes by itself when the buffer is full or old
/// }
/// let report = writer.finish().await?;
/// assert_eq!(report.rows, events.len() as u64);
/// # Ok(()) }
/// ```
pub struct CopyWriter<R: CopyRow> {
    db: Db,
    table: TableName,
    copy_statement: String,
    upsert: Option<Upsert>,
    config: CopyConfig,
    buf: BytesMut,
    buffered: usize,
    oldest: Option<Instant>,
    /// Index (among all rows written) of the first buffered row.
    first_buffered_row: u64,
    report: CopyReport,
    _row: PhantomData<fn(&R)>,
}

struct Upsert {
    create_stage: String,
    insert: String,
}

impl<R: CopyRow> fmt::Debug for CopyWriter<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyWriter")
            .field("table", &self.table)
            .field("format", &self.config.format)
            .field("buffered_rows", &self.buffered)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl<R: CopyRow> CopyWriter<R> {
    /// A writer into `table` (`name` or `schema.name`) with the pool's [`CopyConfig`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad table or column name.
    pub fn new(db: &Db, table: &str) -> Result<Self> {
        let table = TableName::parse(table)?;
        let config = db.config().copy;
        if R::COLUMNS.is_empty() {
            return Err(Error::invalid("columns", "CopyRow::COLUMNS is empty"));
        }
        let mut writer = CopyWriter {
            db: db.clone(),
            copy_statement: String::new(),
            table,
            upsert: None,
            config,
            buf: BytesMut::with_capacity(config.flush_bytes.min(1 << 20)),
            buffered: 0,
            oldest: None,
            first_buffered_row: 0,
            report: CopyReport::default(),
            _row: PhantomData,
        };
        writer.copy_statement = writer.statement_into(&writer.table.to_string())?;
        Ok(writer)
    }

    fn statement_into(&self, target: &str) -> Result<String> {
        let columns = column_list(R::COLUMNS)?;
        let format = match self.config.format {
            CopyFormat::Binary => "binary",
            CopyFormat::Text => "text",
        };
        Ok(format!(
            "COPY {target} ({columns}) FROM STDIN WITH (FORMAT {format})"
        ))
    }

    /// Replaces the buffering settings (thresholds and format).
    ///
    /// # Errors
    /// [`Error::Invalid`] when rows are already buffered (the format cannot change mid-way).
    pub fn with_config(mut self, config: CopyConfig) -> Result<Self> {
        if self.buffered > 0 {
            return Err(Error::invalid(
                "copy config",
                "cannot change settings with rows buffered; flush first",
            ));
        }
        self.config = config;
        let target = match self.upsert {
            Some(_) => STAGE_TABLE.to_owned(),
            None => self.table.to_string(),
        };
        self.copy_statement = self.statement_into(&target)?;
        Ok(self)
    }

    /// Upserts instead of inserting: each flush copies into a temporary staging table, then
    /// `INSERT ... SELECT ... ON CONFLICT (conflict_columns) DO UPDATE` in one transaction.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad column name or an empty list.
    pub fn upsert_on(mut self, conflict_columns: &[&str]) -> Result<Self> {
        if conflict_columns.is_empty() {
            return Err(Error::invalid("conflict target", "no column given"));
        }
        let target = column_list(conflict_columns)?;
        let columns = column_list(R::COLUMNS)?;
        let conflict: Vec<Ident> = conflict_columns
            .iter()
            .map(|c| Ident::new(c))
            .collect::<Result<_>>()?;
        let assignments = R::COLUMNS
            .iter()
            .map(|c| Ident::new(c))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|c| !conflict.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>();
        let action = if assignments.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!("DO UPDATE SET {}", assignments.join(", "))
        };
        let (stage, table) = (STAGE_TABLE, &self.table);
        self.upsert = Some(Upsert {
            create_stage: format!(
                "CREATE TEMPORARY TABLE {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP"
            ),
            insert: format!(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT ({target}) {action}"
            ),
        });
        self.copy_statement = self.statement_into(stage)?;
        Ok(self)
    }

    /// Rows waiting in the buffer.
    pub fn buffered_rows(&self) -> usize {
        self.buffered
    }

    /// What has been committed so far.
    pub fn report(&self) -> CopyReport {
        self.report
    }

    /// Buffers one row, flushing first when a threshold is reached.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the row writes a different number of fields than
    /// `COLUMNS` (the row is not buffered); a flush error (see [`Self::flush`]).
    pub async fn write(&mut self, row: &R) -> Result<()> {
        self.encode(row)?;
        if self.is_due() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Buffers every row, flushing whenever a threshold is reached.
    ///
    /// # Errors
    /// As [`Self::write`].
    pub async fn write_all<'r>(&mut self, rows: impl IntoIterator<Item = &'r R>) -> Result<()>
    where
        R: 'r,
    {
        for row in rows {
            self.write(row).await?;
        }
        Ok(())
    }

    fn encode(&mut self, row: &R) -> Result<()> {
        let start = self.buf.len();
        let format = self.config.format;
        if format == CopyFormat::Binary {
            self.buf.put_i16(column_count(R::COLUMNS.len()));
        }
        let mut writer = RowWriter {
            buf: &mut self.buf,
            format,
            fields: 0,
        };
        row.write_row(&mut writer);
        let fields = writer.fields;
        if fields != R::COLUMNS.len() {
            self.buf.truncate(start);
            return Err(Error::invalid(
                "copy row",
                format!(
                    "row {} wrote {fields} fields but COLUMNS has {}",
                    self.first_buffered_row + self.buffered as u64,
                    R::COLUMNS.len()
                ),
            ));
        }
        if format == CopyFormat::Text {
            self.buf.put_u8(b'\n');
        }
        self.buffered += 1;
        self.oldest.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn is_due(&self) -> bool {
        self.buffered >= self.config.flush_rows
            || self.buf.len() >= self.config.flush_bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= self.config.flush_interval)
    }

    /// How long until the buffered rows are due by age; `None` when the buffer is empty.
    pub fn time_until_due(&self) -> Option<Duration> {
        self.oldest
            .map(|t| self.config.flush_interval.saturating_sub(t.elapsed()))
    }

    /// Flushes when a threshold (including age) is reached; returns the rows committed.
    ///
    /// # Errors
    /// As [`Self::flush`].
    pub async fn flush_if_due(&mut self) -> Result<u64> {
        if self.buffered > 0 && self.is_due() {
            self.flush().await
        } else {
            Ok(0)
        }
    }

    /// Sends the buffered rows in one COPY and commits them; returns the rows committed.
    ///
    /// # Errors
    /// [`Error::CopyRow`] naming the first rejected row (counted from the first row ever
    /// written to this writer) when PostgreSQL rejects a row, or another database error. In
    /// both cases nothing of this flush is committed and its rows are dropped from the
    /// buffer; earlier flushes stay committed.
    pub async fn flush(&mut self) -> Result<u64> {
        if self.buffered == 0 {
            return Ok(0);
        }
        let data = self.buf.split().freeze();
        let rows = self.buffered;
        let first_row = self.first_buffered_row;
        self.buffered = 0;
        self.oldest = None;
        self.first_buffered_row += rows as u64;

        let telemetry = &self.db.shared().telemetry;
        let result = telemetry
            .observe("copy_flush", &self.table, |n: &u64| *n, self.send(&data))
            .await;
        match result {
            Ok(committed) => {
                self.report.rows += committed;
                self.report.flushes += 1;
                self.report.bytes += data.len() as u64;
                Ok(committed)
            }
            Err(Error::Database { source, kind, .. }) => Err(row_error(source, kind, first_row)),
            Err(other) => Err(other),
        }
    }

    async fn send(&self, data: &[u8]) -> Result<u64> {
        let mut guard = CloseUnlessDone {
            conn: self.db.acquire().await?,
            done: false,
        };
        let committed = match &self.upsert {
            None => {
                copy_in(
                    &mut guard.conn,
                    &self.copy_statement,
                    self.config.format,
                    data,
                )
                .await?
            }
            Some(upsert) => {
                let mut tx = sqlx::Acquire::begin(&mut *guard.conn).await?;
                sqlx::query(crate::batch::sql(upsert.create_stage.clone()))
                    .persistent(self.db.pooler().named_statements())
                    .execute(&mut *tx)
                    .await?;
                copy_in(&mut tx, &self.copy_statement, self.config.format, data).await?;
                let done = sqlx::query(crate::batch::sql(upsert.insert.clone()))
                    .persistent(self.db.pooler().named_statements())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                done.rows_affected()
            }
        };
        guard.done = true;
        Ok(committed)
    }

    /// Flushes what is left and returns the totals.
    ///
    /// # Errors
    /// As [`Self::flush`].
    pub async fn finish(mut self) -> Result<CopyReport> {
        self.flush().await?;
        Ok(self.report)
    }
}

impl<R: CopyRow> Drop for CopyWriter<R> {
    fn drop(&mut self) {
        if self.buffered > 0 {
            tracing::warn!(
                db.table = %self.table,
                rows = self.buffered,
                "CopyWriter dropped with unflushed rows; they were not written (call finish())"
            );
        }
    }
}

/// A COPY that fails or is cancelled (its future dropped) part-way can leave the connection
/// mid-protocol; such a connection is closed instead of going back to the pool.
struct CloseUnlessDone {
    conn: crate::DbConnection,
    done: bool,
}

impl Drop for CloseUnlessDone {
    fn drop(&mut self) {
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

async fn copy_in(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    format: CopyFormat,
    data: &[u8],
) -> Result<u64, sqlx::Error> {
    let mut copy = conn.copy_in_raw(statement).await?;
    if format == CopyFormat::Binary {
        copy.send(BINARY_HEADER).await?;
        copy.send(data).await?;
        copy.send(BINARY_TRAILER).await?;
    } else {
        copy.send(data).await?;
    }
    copy.finish().await
}

/// Turns "COPY t, line 7, column x: ..." into the writer-wide row index.
fn row_error(source: sqlx::Error, kind: ErrorKind, first_row: u64) -> Error {
    let located = source
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
        .and_then(|pg| {
            let context = pg.r#where()?;
            let line = context.split("line ").nth(1)?;
            let digits: String = line.chars().take_while(char::is_ascii_digit).collect();
            let line: u64 = digits.parse().ok()?;
            let mut message = pg.message().to_owned();
            if let Some(detail) = pg.detail() {
                message.push_str(" (");
                message.push_str(detail);
                message.push(')');
            }
            message.push_str("; ");
            message.push_str(context);
            Some((line, message))
        });
    match located {
        Some((line, message)) => Error::CopyRow {
            row: first_row + line.saturating_sub(1),
            message,
            kind,
            source,
        },
        None => Error::from(source),
    }
}

fn column_list(columns: &[&str]) -> Result<String> {
    Ok(columns
        .iter()
        .map(|c| crate::quote_identifier(c))
        .collect::<Result<Vec<_>>>()?
        .join(", "))
}

fn column_count(columns: usize) -> i16 {
    i16::try_from(columns).unwrap_or(i16::MAX)
}

fn put_len(buf: &mut BytesMut, len: usize) {
    buf.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
}

/// Appends `bytes` (UTF-8 text) in COPY text format: backslash, tab, newline and carriage
/// return escaped.
fn text_escaped(buf: &mut BytesMut, bytes: &[u8]) {
    if !bytes
        .iter()
        .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        buf.put_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => buf.put_slice(b"\\\\"),
            b'\t' => buf.put_slice(b"\\t"),
            b'\n' => buf.put_slice(b"\\n"),
            b'\r' => buf.put_slice(b"\\r"),
            _ => buf.put_u8(b),
        }
    }
}

macro_rules! copy_number {
    ($($ty:ty => $put:ident),* $(,)?) => {$(
        impl CopyValue for $ty {
            fn write_binary(&self, buf: &mut BytesMut) {
                buf.put_i32(std::mem::size_of::<$ty>() as i32);
                buf.$put(*self);
            }
            fn write_text(&self, buf: &mut BytesMut) {
                // Formatted in place: no string per value.
                let _ = write!(buf, "{self}");
            }
        }
    )*};
}

copy_number!(i16 => put_i16, i32 => put_i32, i64 => put_i64, f32 => put_f32, f64 => put_f64);

impl CopyValue for bool {
    fn write_binary(&self, buf: &mut BytesMut) {
        buf.put_i32(1);
        buf.put_u8(u8::from(*self));
    }
    fn write_text(&self, buf: &mut BytesMut) {
        buf.put_u8(if *self { b't' } else { b'f' });
    }
}

impl CopyValue for str {
    fn write_binary(&self, buf: &mut BytesMut) {
        put_len(buf, self.len());
        buf.put_slice(self.as_bytes());
    }
    fn write_text(&self, buf: &mut BytesMut) {
        text_escaped(buf, self.as_bytes());
    }
}

impl CopyValue for String {
    fn write_binary(&self, buf: &mut BytesMut) {
        self.as_str().write_binary(buf);
    }
    fn write_text(&self, buf: &mut BytesMut) {
        self.as_str().write_text(buf);
    }
}

impl CopyValue for Uuid {
    fn write_binary(&self, buf: &mut BytesMut) {
        buf.put_i32(16);
        buf.put_slice(self.as_bytes());
    }
    fn write_text(&self, buf: &mut BytesMut) {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        buf.put_slice(self.hyphenated().encode_lower(&mut text).as_bytes());
    }
}

impl CopyValue for serde_json::Value {
    /// `jsonb` binary format: a version byte (1) then the JSON text.
    fn write_binary(&self, buf: &mut BytesMut) {
        let len_at = buf.len();
        buf.put_i32(0);
        buf.put_u8(1);
        let mut writer = buf.writer();
        // Writing a `Value` into memory cannot fail.
        let _ = serde_json::to_writer(&mut writer, self);
        let buf = writer.into_inner();
        let len = buf.len() - len_at - 4;
        buf[len_at..len_at + 4]
            .copy_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
    }
    /// Serialized in place; only a value holding a character to escape (in JSON text, only
    /// a backslash: serde_json escapes control characters) is copied again, escaped.
    fn write_text(&self, buf: &mut BytesMut) {
        let start = buf.len();
        let mut writer = buf.writer();
        // Writing a `Value` into memory cannot fail.
        let _ = serde_json::to_writer(&mut writer, self);
        let buf = writer.into_inner();
        if buf[start..].contains(&b'\\') {
            let json = buf.split_off(start);
            text_escaped(buf, &json);
        }
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

impl CopyValue for DateTime<Utc> {
    fn write_binary(&self, buf: &mut BytesMut) {
        buf.put_i32(8);
        buf.put_i64(self.timestamp_micros() - PG_EPOCH_OFFSET_MICROS);
    }
    fn write_text(&self, buf: &mut BytesMut) {
        buf.put_slice(self.to_rfc3339().as_bytes());
    }
}

impl CopyValue for NaiveDate {
    fn write_binary(&self, buf: &mut BytesMut) {
        let epoch = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
        buf.put_i32(4);
        buf.put_i32(i32::try_from((*self - epoch).num_days()).unwrap_or(i32::MAX));
    }
    fn write_text(&self, buf: &mut BytesMut) {
        let _ = write!(buf, "{self}");
    }
}

impl CopyValue for [u8] {
    fn write_binary(&self, buf: &mut BytesMut) {
        put_len(buf, self.len());
        buf.put_slice(self);
    }
    fn write_text(&self, buf: &mut BytesMut) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        buf.put_slice(b"\\\\x");
        for b in self {
            buf.put_u8(HEX[usize::from(b >> 4)]);
            buf.put_u8(HEX[usize::from(b & 0xf)]);
        }
    }
}

impl CopyValue for Vec<u8> {
    fn write_binary(&self, buf: &mut BytesMut) {
        self.as_slice().write_binary(buf);
    }
    fn write_text(&self, buf: &mut BytesMut) {
        self.as_slice().write_text(buf);
    }
}

impl<T: CopyValue> CopyValue for Option<T> {
    fn write_binary(&self, buf: &mut BytesMut) {
        match self {
            Some(v) => v.write_binary(buf),
            None => buf.put_i32(-1),
        }
    }
    fn write_text(&self, buf: &mut BytesMut) {
        match self {
            Some(v) => v.write_text(buf),
            None => buf.put_slice(b"\\N"),
        }
    }
}

impl<T: CopyValue + ?Sized> CopyValue for &T {
    fn write_binary(&self, buf: &mut BytesMut) {
        (**self).write_binary(buf);
    }
    fn write_text(&self, buf: &mut BytesMut) {
        (**self).write_text(buf);
    }
}

macro_rules! copy_id {
    ($($id:ty),* $(,)?) => {$(
        impl CopyValue for $id {
            fn write_binary(&self, buf: &mut BytesMut) {
                self.as_uuid().write_binary(buf);
            }
            fn write_text(&self, buf: &mut BytesMut) {
                self.as_uuid().write_text(buf);
            }
        }
    )*};
}

copy_id!(
    neo_core::OrganizationId,
    neo_core::UserId,
    neo_core::TenantId,
    neo_core::EventId,
    neo_core::JobId,
    neo_core::EndpointId,
    neo_core::DeliveryId,
);
