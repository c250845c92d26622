//! Offboarding ([`neo_tenant::TenantData`]): a cache holds copies, so it exports nothing and
//! its purge is [`HybridCache::invalidate_tenant`] (Redis, this L1 and every other instance's
//! L1 through the backplane).

use super::hybrid::HybridCache;
use neo_core::{HasErrorKind, TenantId};
use neo_tenant::{DataFuture, ExportSink, TenantData, store_error};
use serde::Serialize;
use serde::de::DeserializeOwned;

impl<V> TenantData for HybridCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        "cache"
    }

    fn export<'a>(
        &'a self,
        _tenant: TenantId,
        _sink: &'a mut dyn ExportSink,
    ) -> DataFuture<'a, u64> {
        // Entries are copies of data a store exports; nothing of its own to hand over.
        Box::pin(async { Ok(0) })
    }

    fn purge(&self, tenant: TenantId) -> DataFuture<'_, u64> {
        Box::pin(async move {
            self.invalidate_tenant(&tenant)
                .await
                .map_err(|e| store_error("cache", e.kind(), &e))
        })
    }
}
