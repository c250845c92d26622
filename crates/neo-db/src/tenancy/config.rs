//! [`TenancyConfig`]: the isolation mode a store is built with, as configuration (serde,
//! `NEO_*` variables), turned into a [`TenantIsolation`] where the store is made.

use super::{RlsSetting, TenantIsolation};
use crate::Result;
use serde::Deserialize;

/// Which isolation a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenancyMode {
    /// One fixed schema, no tenant: the store as it was before tenant isolation.
    #[default]
    None,
    /// A schema per tenant ([`TenantIsolation::SchemaPerTenant`] with
    /// [`PrefixedSchemas`](super::PrefixedSchemas)).
    SchemaPerTenant,
    /// Shared tables under row-level security ([`TenantIsolation::RowLevelSecurity`]).
    RowLevelSecurity,
}

/// How a store keeps tenants apart, as configuration. Loaded with the store's other settings,
/// e.g. `NEO_ORGS_TENANCY__MODE=row_level_security` or
/// `NEO_ORGS_TENANCY__MODE=schema_per_tenant` with `NEO_ORGS_TENANCY__SCHEMA_PREFIX=acme_`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TenancyConfig {
    /// The mode; [`TenancyMode::None`] by default (one schema, no tenant).
    pub mode: TenancyMode,
    /// Schema per tenant: the prefix of each tenant's schema name
    /// ([`PrefixedSchemas::DEFAULT_PREFIX`](super::PrefixedSchemas::DEFAULT_PREFIX) by default).
    pub schema_prefix: String,
    /// Row-level security: the transaction-local setting the policies read
    /// ([`RlsSetting::DEFAULT`] by default).
    pub rls_setting: String,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        TenancyConfig {
            mode: TenancyMode::None,
            schema_prefix: super::PrefixedSchemas::DEFAULT_PREFIX.to_owned(),
            rls_setting: RlsSetting::DEFAULT.to_owned(),
        }
    }
}

impl TenancyConfig {
    /// Row-level security on the default setting.
    pub fn row_level_security() -> Self {
        TenancyConfig {
            mode: TenancyMode::RowLevelSecurity,
            ..TenancyConfig::default()
        }
    }

    /// Schema per tenant with `prefix`.
    pub fn schema_per_tenant(prefix: &str) -> Self {
        TenancyConfig {
            mode: TenancyMode::SchemaPerTenant,
            schema_prefix: prefix.to_owned(),
            ..TenancyConfig::default()
        }
    }

    /// The isolation this configures: `None` for [`TenancyMode::None`].
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for a prefix or setting name that does not
    /// pass the identifier rules (checked for the selected mode only).
    pub fn isolation(&self) -> Result<Option<TenantIsolation>> {
        Ok(match self.mode {
            TenancyMode::None => None,
            TenancyMode::SchemaPerTenant => {
                Some(TenantIsolation::schema_per_tenant(&self.schema_prefix)?)
            }
            TenancyMode::RowLevelSecurity => Some(TenantIsolation::RowLevelSecurity(
                RlsSetting::new(&self.rls_setting)?,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_no_tenant_isolation() {
        let config = TenancyConfig::default();
        assert_eq!(config.mode, TenancyMode::None);
        assert!(matches!(config.isolation(), Ok(None)));
    }

    #[test]
    fn each_mode_builds_its_isolation() {
        let rls = TenancyConfig::row_level_security().isolation();
        assert!(
            matches!(&rls, Ok(Some(TenantIsolation::RowLevelSecurity(s))) if s.as_str() == "neo.tenant_id"),
            "{rls:?}"
        );
        let schemas = TenancyConfig::schema_per_tenant("acme_").isolation();
        let Ok(Some(isolation)) = schemas else {
            panic!("{schemas:?}");
        };
        let tenant = neo_core::TenantId::new();
        let schema = isolation.schema_of(tenant);
        assert!(
            matches!(&schema, Ok(Some(s)) if s.as_str().starts_with("acme_")),
            "{schema:?}"
        );
    }

    #[test]
    fn bad_names_are_refused_for_the_selected_mode_only() {
        let bad = TenancyConfig {
            schema_prefix: "x; drop".to_owned(),
            rls_setting: "no dot".to_owned(),
            ..TenancyConfig::default()
        };
        assert!(matches!(bad.isolation(), Ok(None)));
        let rls = TenancyConfig {
            mode: TenancyMode::RowLevelSecurity,
            ..bad.clone()
        };
        assert!(rls.isolation().is_err());
        let schemas = TenancyConfig {
            mode: TenancyMode::SchemaPerTenant,
            ..bad
        };
        assert!(schemas.isolation().is_err());
    }

    #[test]
    fn the_mode_loads_from_serde_names() {
        let config: TenancyConfig =
            serde_json::from_str(r#"{"mode": "row_level_security", "rls_setting": "app.tenant"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.mode, TenancyMode::RowLevelSecurity);
        assert_eq!(config.rls_setting, "app.tenant");
        assert_eq!(config.schema_prefix, "tenant_");
        let bad: Result<TenancyConfig, _> = serde_json::from_str(r#"{"mode": "rls"}"#);
        assert!(bad.is_err());
    }
}
