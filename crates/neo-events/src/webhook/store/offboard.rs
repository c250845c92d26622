//! Offboarding ([`neo_tenant::TenantData`]): a tenant's endpoints (with their subscriptions),
//! its messages and every delivery of its events or to its endpoints, with their attempts. Secrets and header values
//! are exported as stored (sealed when the store seals them). The delivery jobs are the
//! queue's: offboard the queue too.

use super::Webhooks;
use crate::tenant_rows;
use neo_core::TenantId;
use neo_db::TableName;
use neo_tenant::{DataFuture, ExportSink, TenantData};

/// Each table with the condition that picks the tenant's rows (`$1` its id); exported in this
/// order, purged in the reverse one.
const TABLES: [(&str, &str); 5] = [
    ("webhook_endpoints", "x.tenant_id = $1"),
    (
        "webhook_subscriptions",
        "x.endpoint_id IN (SELECT id FROM {endpoints} WHERE tenant_id = $1)",
    ),
    ("webhook_messages", "x.tenant_id = $1"),
    (
        "webhook_deliveries",
        "x.tenant_id = $1 OR x.endpoint_id IN (SELECT id FROM {endpoints} WHERE tenant_id = $1)",
    ),
    (
        "webhook_delivery_attempts",
        "x.tenant_id = $1 OR x.endpoint_id IN (SELECT id FROM {endpoints} WHERE tenant_id = $1)",
    ),
];

impl Webhooks {
    /// `(name, qualified table, condition)` of each table.
    fn offboard_tables(&self) -> Vec<(&'static str, String, String)> {
        let qualify = |name: &str| {
            TableName::new(name)
                .map(|t| t.in_schema(&self.inner.schema).to_string())
                .unwrap_or_default()
        };
        let endpoints = qualify("webhook_endpoints");
        TABLES
            .iter()
            .map(|(name, condition)| {
                (
                    *name,
                    qualify(name),
                    condition.replace("{endpoints}", &endpoints),
                )
            })
            .collect()
    }
}

impl TenantData for Webhooks {
    fn name(&self) -> &str {
        "webhooks"
    }

    fn export<'a>(&'a self, tenant: TenantId, sink: &'a mut dyn ExportSink) -> DataFuture<'a, u64> {
        Box::pin(async move {
            let mut n = 0;
            for (name, table, condition) in self.offboard_tables() {
                let select = format!(
                    "SELECT to_jsonb(x) FROM {table} AS x WHERE {condition} ORDER BY x.created_at"
                );
                n += tenant_rows::export(
                    "webhooks",
                    &self.inner.db,
                    &self.inner.tenancy,
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
            let deletes: Vec<String> = self
                .offboard_tables()
                .into_iter()
                .rev()
                .map(|(_, table, condition)| format!("DELETE FROM {table} AS x WHERE {condition}"))
                .collect();
            tenant_rows::purge(
                "webhooks",
                &self.inner.db,
                &self.inner.tenancy,
                &deletes,
                tenant,
            )
            .await
        })
    }
}
