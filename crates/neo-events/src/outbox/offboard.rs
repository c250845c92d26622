//! Offboarding ([`neo_tenant::TenantData`]): a tenant's events are the outbox's and the
//! archive's rows with its `tenant_id`, pending or processed.

use super::Outbox;
use crate::tenant_rows;
use neo_core::TenantId;
use neo_db::TableName;
use neo_tenant::{DataFuture, ExportSink, TenantData};

impl Outbox {
    fn offboard_tables(&self) -> [(&'static str, String); 2] {
        ["outbox", "outbox_archive"].map(|name| {
            let table = TableName::new(name)
                .map(|t| t.in_schema(&self.schema).to_string())
                .unwrap_or_default();
            (name, table)
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
            for (name, table) in self.offboard_tables() {
                let select = format!(
                    "SELECT to_jsonb(e) FROM {table} AS e WHERE e.tenant_id = $1 ORDER BY e.recorded_at, e.id"
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
                .map(|(_, table)| format!("DELETE FROM {table} WHERE tenant_id = $1"));
            tenant_rows::purge("outbox", &self.db, &self.tenancy, &deletes, tenant).await
        })
    }
}
