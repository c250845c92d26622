//! The row-level-security migrations of the membership and invitation tables: what
//! migration 5 does for the first tables (a `tenant_id` filled from the setting, indexes led
//! by it, the policy enabled and forced), for the tables added since. They run only in a
//! store under row-level security; a schema per tenant needs none of it.

use crate::OrgError;
use neo_db::{Ident, MigrationSet, RlsSetting, TableName};

/// `set` with the row-level-security migrations of the later tables: 11 (memberships by
/// user, led by the tenant), 13 (invitations under the policy), 15 (domain claims under
/// the policy) and 17 (verifications and their audit under the policy).
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
    .with_sql(13, "invitations per tenant", under_policy)
    .with_sql(15, "domain claims per tenant", claims_under_policy(setting)?)
    .with_sql(17, "verifications per tenant", verifications_under_policy(setting)?))
}

/// Migration 17: verifications and their audit records get the tenant and the policy.
fn verifications_under_policy(setting: &RlsSetting) -> Result<String, OrgError> {
    let tenant = setting.current_tenant_sql();
    let column = Ident::new("tenant_id")?;
    let mut sql = String::new();
    for name in [
        "organization_verifications",
        "organization_verification_audit",
    ] {
        let table = TableName::new(name)?;
        sql.push_str(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} uuid NOT NULL DEFAULT {tenant};\n"
        ));
        sql.push_str(&setting.policy_sql(&table, &column));
    }
    sql.push_str(
        "DROP INDEX organization_verifications_org;\n\
         CREATE INDEX organization_verifications_org ON organization_verifications \
         (tenant_id, organization_id, created_at);\n",
    );
    Ok(sql)
}

/// Migration 15: domain claims get the tenant and the policy; the auto-join lookup is led by
/// the tenant.
fn claims_under_policy(setting: &RlsSetting) -> Result<String, OrgError> {
    let tenant = setting.current_tenant_sql();
    let column = Ident::new("tenant_id")?;
    let claims = TableName::new("organization_domain_claims")?;
    let mut sql = format!(
        "ALTER TABLE {claims} ADD COLUMN {column} uuid NOT NULL DEFAULT {tenant};\n\
         DROP INDEX organization_domain_claims_joinable;\n\
         CREATE INDEX organization_domain_claims_joinable ON {claims} (tenant_id, domain) \
         WHERE auto_join AND verified_at IS NOT NULL;\n"
    );
    sql.push_str(&setting.policy_sql(&claims, &column));
    Ok(sql)
}
