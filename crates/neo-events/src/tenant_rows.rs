//! What the outbox's and the webhooks' offboarding ([`neo_tenant::TenantData`]) share: rows of
//! one tenant streamed into an export sink as JSON, and deletes, each in one statement
//! connection (a transaction behind a pooler, and under row-level security one acting for the
//! tenant on the application `Db`, so the policies bound what offboarding can touch).

use crate::EventError;
use crate::tenancy::Tenancy;
use futures_util::TryStreamExt;
use neo_core::{HasErrorKind, TenantId};
use neo_db::Db;
use neo_tenant::{ExportSink, store_error};
use sqlx::AssertSqlSafe;

/// Streams `select` (one `jsonb` column, `$1` the tenant's uuid) into `sink` as rows of
/// `table`; returns how many.
pub(crate) async fn export(
    store: &str,
    db: &Db,
    tenancy: &Tenancy,
    sink: &mut dyn ExportSink,
    table: &str,
    select: &str,
    tenant: TenantId,
) -> Result<u64, neo_tenant::Error> {
    let failed = |e: EventError| store_error(store, e.kind(), &e);
    let mut conn = tenancy.connection(db, Some(tenant)).await.map_err(failed)?;
    let mut rows = sqlx::query_scalar::<_, serde_json::Value>(AssertSqlSafe(select))
        .persistent(false)
        .bind(tenant.as_uuid())
        .fetch(&mut *conn);
    let mut n = 0;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| failed(neo_db::Error::from(e).into()))?
    {
        sink.row(table, row)?;
        n += 1;
    }
    drop(rows);
    conn.finish().await.map_err(|e| failed(e.into()))?;
    Ok(n)
}

/// Runs `deletes` (each with `$1` the tenant's uuid) in one transaction; returns the rows
/// deleted.
pub(crate) async fn purge(
    store: &str,
    db: &Db,
    tenancy: &Tenancy,
    deletes: &[String],
    tenant: TenantId,
) -> Result<u64, neo_tenant::Error> {
    let failed = |e: EventError| store_error(store, e.kind(), &e);
    let mut tx = tenancy.begin(db, Some(tenant)).await.map_err(failed)?;
    let mut n = 0;
    for delete in deletes {
        n += sqlx::query(AssertSqlSafe(delete.as_str()))
            .persistent(false)
            .bind(tenant.as_uuid())
            .execute(&mut **tx)
            .await
            .map_err(|e| failed(neo_db::Error::from(e).into()))?
            .rows_affected();
    }
    tx.commit().await.map_err(|e| failed(e.into()))?;
    Ok(n)
}
