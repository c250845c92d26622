//! The row-level-security migrations of the membership and invitation tables: what
//! migration 5 does for the first tables (a `tenant_id` filled from the setting, indexes led
//! by it, the policy enabled and forced), for the tables added since. They run only in a
//! store under row-level security; a schema per tenant needs none of it.

use crate::OrgError;
use neo_db::{MigrationSet, RlsSetting};

/// `set` with the row-level-security migrations of the later tables: 11 (memberships by
/// user, led by the tenant).
pub(super) fn with_rls_migrations(
    set: MigrationSet,
    _setting: &RlsSetting,
) -> Result<MigrationSet, OrgError> {
    // `organization_members` got its tenant and policy in migration 5; only the index
    // of migration 10 is led by the tenant here.
    Ok(set.with_sql(
        11,
        "memberships by user per tenant",
        "DROP INDEX organization_members_user;\n\
         CREATE INDEX organization_members_user ON organization_members (tenant_id, user_id, organization_id);\n"
            .to_owned(),
    ))
}
