//! The row-level-security migrations of the membership and invitation tables: what
//! migration 5 does for the first tables (a `tenant_id` filled from the setting, indexes led
//! by it, the policy enabled and forced), for the tables added since. They run only in a
//! store under row-level security; a schema per tenant needs none of it.

use crate::OrgError;
use neo_db::{Ident, MigrationSet, RlsSetting, TableName};

/// `set` with the row-level-security migrations of the later tables: 11 (memberships by
/// user, led by the tenant) and 13 (invitations under the policy).
pub(super) fn with_rls_migrations(
    set: MigrationSet,
    setting: &RlsSetting,
) -> Result<MigrationSet, OrgError> {
    let tenant = setting.current_tenant_sql();
    let column = Ident::new("tenant_id")?;
    let invitations = TableName::new("organization_invitations")?;
    let mut under_policy = format!(
        "ALTER TABLE {invitations} ADD COLUMN {column} uuid NOT NULL DEFAULT {tenant};\n\
         DROP INDEX organization_invitations_org;\n\
         CREATE INDEX organization_invitations_org ON {invitations} (tenant_id, organization_id, id);\n"
    );
    under_policy.push_str(&setting.policy_sql(&invitations, &column));
    // `organization_members` got its tenant and policy in migration 5; only the index
    // of migration 10 is led by the tenant here.
    Ok(set.with_sql(
        11,
        "memberships by user per tenant",
        "DROP INDEX organization_members_user;\n\
         CREATE INDEX organization_members_user ON organization_members (tenant_id, user_id, organization_id);\n"
            .to_owned(),
    )
    .with_sql(13, "invitations per tenant", under_policy))
}
