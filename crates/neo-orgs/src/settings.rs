//! Per-organization settings (limits a plan or a contract sets), resolved through a trait a
//! host can replace, with configured defaults and overrides as the default.

use crate::Organization;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// The most domains one organization may claim, whatever its settings say.
pub const MAX_DOMAINS: u32 = 50;

/// The settings that apply to one organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct OrgSettings {
    /// Most domains it may claim (at most [`MAX_DOMAINS`]).
    pub max_domains: u32,
    /// Most members it may have.
    pub max_members: u32,
}

impl Default for OrgSettings {
    fn default() -> Self {
        OrgSettings {
            max_domains: 10,
            max_members: 1_000,
        }
    }
}

impl OrgSettings {
    /// Settings with these limits.
    pub fn new(max_domains: u32, max_members: u32) -> Self {
        OrgSettings {
            max_domains,
            max_members,
        }
    }
}

/// What [`SettingsResolver::settings`] returns.
pub type SettingsFuture<'a> = Pin<
    Box<
        dyn Future<Output = Result<OrgSettings, Box<dyn std::error::Error + Send + Sync>>>
            + Send
            + 'a,
    >,
>;

/// Finds the settings of an organization: from its plan in a billing service, a table, a
/// feature-flag service. The service asks before saving a change and before adding a member.
///
/// # Example
/// ```
/// use neo_orgs::{OrgSettings, Organization, SettingsFuture, SettingsResolver};
/// struct ByPlan;
/// impl SettingsResolver for ByPlan {
///     fn settings<'a>(&'a self, org: &'a Organization) -> SettingsFuture<'a> {
///         let enterprise = org.metadata().get("plan").is_some_and(|plan| plan == "enterprise");
///         Box::pin(async move {
///             Ok(if enterprise { OrgSettings::new(50, 100_000) } else { OrgSettings::default() })
///         })
///     }
/// }
/// ```
pub trait SettingsResolver: Send + Sync + 'static {
    /// The settings of `org`.
    fn settings<'a>(&'a self, org: &'a Organization) -> SettingsFuture<'a>;
}

/// The default resolver: `defaults`, replaced for the organizations named (by slug) in
/// `overrides`. Loadable with the rest of [`OrgConfig`](crate::OrgConfig), e.g.
/// `NEO_ORGS_SETTINGS__MAX_MEMBERS=50`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfiguredSettings {
    /// What applies to every organization without an override.
    pub defaults: OrgSettings,
    /// Settings by organization slug.
    pub overrides: BTreeMap<String, OrgSettings>,
}

impl ConfiguredSettings {
    /// The settings of `org`, synchronously.
    pub fn resolve(&self, org: &Organization) -> OrgSettings {
        self.overrides
            .get(org.slug().as_str())
            .copied()
            .unwrap_or(self.defaults)
    }
}

impl SettingsResolver for ConfiguredSettings {
    fn settings<'a>(&'a self, org: &'a Organization) -> SettingsFuture<'a> {
        let settings = self.resolve(org);
        Box::pin(async move { Ok(settings) })
    }
}
