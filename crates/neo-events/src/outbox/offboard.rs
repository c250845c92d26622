//! Offboarding ([`neo_tenant::TenantData`]): a tenant's events are the outbox's and the
//! archive's rows with its `tenant_id`, pending or processed, and its idempotency keys.

use super::Outbox;
use crate::tenant_rows;
use neo_core::TenantId;
use neo_db::TableName;
use neo_tenant::{DataFuture, ExportSink, TenantData};

impl Outbox {
    /// Each table with the order its rows are exported in.
    fn offboard_tables(&self) -> [(&'static str, String, &'static str); 3] {
        [
            ("outbox", "e.recorded_at, e.id"),
            ("outbox_archive", "e.recorded_at, e.id"),
            ("outbox_idempotency", "e.created_at, e.key"),
        ]
        .map(|(name, order)| {
            let table = TableName::new(name)
                .map(|t| t.in_schema(&self.schema).to_string())
                .unwrap_or_default();
            (name, table, order)
        })
    }
}

impl TenantData for Outbox {
    fn name(&self) -> &str {
        "outbox"
    }

    fn export<'a>(&'a self, tenant: TenantId, sink: &'a mut dyn ExportSink) -> DataFuture<'a, u64> {
        Box::pin(async move {
            let mut n = 0;
            for (name, table, order) in self.offboard_tables() {
                let select = format!(
                    "SELECT to_jsonb(e) FROM {table} AS e WHERE e.tenant_id = $1 ORDER BY {order}"
                );
                n += tenant_rows::export(
                    "outbox",
                    &self.db,
                    &self.tenancy,
                    sink,
                    name,
                    &select,
                    tenant,
                )
                .await?;
            }
            Ok(n)
        })
    }

    fn purge(&self, tenant: TenantId) -> DataFuture<'_, u64> {
        Box::pin(async move {
            let deletes = self
                .offboard_tables()
                .map(|(_, table, _)| format!("DELETE FROM {table} WHERE tenant_id = $1"));
            tenant_rows::purge("outbox", &self.db, &self.tenancy, &deletes, tenant).await
        })
    }
}
