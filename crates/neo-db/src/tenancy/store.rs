//! [`StoreTenancy`]: the tenancy of one store value — which of the three layouts its tables
//! are in, the statements of each call's schema, the tenant each call acts for, and a
//! connection with that tenant in force — so that a store keeps only its own SQL.

use super::{RlsSetting, TenancyMode, TenantIsolation, TenantSchemaResolver};
use crate::ident::Schema;
use crate::pool::{Db, UnitOfWork};
use crate::pooler::StatementConnection;
use neo_core::TenantId;
use sqlx::PgPool;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Builds a store's statements for the tables in one schema.
type Build<S, E> = dyn Fn(&Schema) -> Result<S, E> + Send + Sync;

/// The layout of a store's tables, with the statements over them.
enum Layout<S, E> {
    /// One schema, no tenant.
    Fixed { schema: Schema, sql: Arc<S> },
    /// A schema per tenant; statements built per schema and kept.
    Schemas {
        resolver: Arc<dyn TenantSchemaResolver>,
        build: Box<Build<S, E>>,
        built: Mutex<HashMap<Schema, Arc<S>>>,
    },
    /// Shared tables in `schema` under row-level security.
    Rls {
        schema: Schema,
        isolation: TenantIsolation,
        setting: RlsSetting,
        sql: Arc<S>,
    },
}

/// How one store keeps tenants apart, and what each of its calls needs for it: one fixed
/// schema and no tenant ([`fixed`](Self::fixed)), a schema per tenant with the statements
/// built per schema and kept (at most [`KEPT_SCHEMAS`](Self::KEPT_SCHEMAS)), or shared tables in one schema under
/// row-level security ([`isolated`](Self::isolated), see [`TenantIsolation`]).
///
/// The store gives the statements' builder (`Fn(&Schema) -> Result<S, E>`), so this type
/// knows no store's SQL. `S` is the store's set of statements, `E` its error type, which
/// takes neo-db's and neo-tenant's errors (`From`), so the store's callers see the same
/// errors as before: a call without a tenant in an isolated mode fails closed with
/// [`neo_tenant::Error::NoTenantInScope`], converted to `E`, before any query.
///
/// # Example
/// ```no_run
/// # #[derive(Debug, thiserror::Error)]
/// # enum MyError {
/// #     #[error(transparent)] Db(#[from] neo_db::Error),
/// #     #[error(transparent)] Tenant(#[from] neo_tenant::Error),
/// # }
/// # async fn demo(db: neo_db::Db) -> Result<(), MyError> {
/// use neo_db::{Schema, StoreTenancy, TableName, TenantIsolation};
///
/// /// One store's statements over the tables of one schema.
/// struct Statements {
///     count: String,
/// }
///
/// let tenancy = StoreTenancy::isolated(
///     Schema::new("app")?,
///     TenantIsolation::row_level_security(),
///     |schema: &Schema| -> Result<Statements, MyError> {
///         let notes = TableName::new("notes")?.in_schema(schema);
///         Ok(Statements { count: format!("SELECT count(*) FROM {notes}") })
///     },
/// )?;
///
/// // In a call: the bound tenant (`None` here), else the task's; none fails closed.
/// let scope = tenancy.scope(None)?;
/// let mut conn = tenancy.connection_on(&db, db.pool(), &scope).await?;
/// let count = neo_db::sqlx::AssertSqlSafe(scope.sql.count.clone());
/// let (n,): (i64,) = neo_db::sqlx::query_as(count)
///     .fetch_one(&mut *conn)
///     .await
///     .map_err(neo_db::Error::from)?;
/// conn.finish().await?;
/// # let _ = n;
/// # Ok(()) }
/// ```
pub struct StoreTenancy<S, E> {
    layout: Layout<S, E>,
}

/// What one call of a store acts on ([`StoreTenancy::scope`]): the statements of its schema
/// and its tenant (`None` in a store with a fixed schema, and for the cross-tenant work a
/// store does under row-level security).
#[derive(Debug)]
pub struct StoreScope<S> {
    /// The statements of the schema the call's tables are in.
    pub sql: Arc<S>,
    /// The tenant the call acts for.
    pub tenant: Option<TenantId>,
}

impl<S, E> StoreTenancy<S, E> {
    /// Most tenant schemas whose statements are kept built; past it the set starts again
    /// (statements are SQL text, rebuilt in microseconds).
    pub const KEPT_SCHEMAS: usize = 1_024;
}

impl<S, E> StoreTenancy<S, E>
where
    E: From<crate::Error> + From<neo_tenant::Error>,
{
    /// One fixed `schema`, no tenant: every call acts on its statements, built now.
    ///
    /// # Errors
    /// The builder's.
    pub fn fixed(
        schema: Schema,
        build: impl Fn(&Schema) -> Result<S, E> + Send + Sync + 'static,
    ) -> Result<Self, E> {
        Ok(StoreTenancy {
            layout: Layout::Fixed {
                sql: Arc::new(build(&schema)?),
                schema,
            },
        })
    }

    /// Tenants kept apart by `isolation`: a schema per tenant (the resolver names it,
    /// `schema` is not used; statements are built on a tenant's first call and kept), or
    /// shared tables in `schema` under row-level security (statements built now).
    ///
    /// # Errors
    /// The builder's, under row-level security.
    pub fn isolated(
        schema: Schema,
        isolation: TenantIsolation,
        build: impl Fn(&Schema) -> Result<S, E> + Send + Sync + 'static,
    ) -> Result<Self, E> {
        let layout = match isolation {
            TenantIsolation::SchemaPerTenant(resolver) => Layout::Schemas {
                resolver,
                build: Box::new(build),
                built: Mutex::new(HashMap::new()),
            },
            TenantIsolation::RowLevelSecurity(ref setting) => Layout::Rls {
                sql: Arc::new(build(&schema)?),
                setting: setting.clone(),
                schema,
                isolation,
            },
        };
        Ok(StoreTenancy { layout })
    }

    /// The mode: [`TenancyMode::None`] for a fixed schema.
    pub fn mode(&self) -> TenancyMode {
        match self.layout {
            Layout::Fixed { .. } => TenancyMode::None,
            Layout::Schemas { .. } => TenancyMode::SchemaPerTenant,
            Layout::Rls { .. } => TenancyMode::RowLevelSecurity,
        }
    }

    /// Whether tenants are kept apart (schema per tenant or row-level security).
    pub fn is_isolated(&self) -> bool {
        !matches!(self.layout, Layout::Fixed { .. })
    }

    /// The row-level-security setting, in that mode.
    pub fn rls_setting(&self) -> Option<&RlsSetting> {
        match &self.layout {
            Layout::Rls { setting, .. } => Some(setting),
            _ => None,
        }
    }

    /// The tenant a call acts for: `bound` (the store value's own, e.g. from a
    /// `for_tenant`), else the task's ([`neo_tenant::current`]); `None` with a fixed schema.
    ///
    /// # Errors
    /// [`neo_tenant::Error::NoTenantInScope`] in an isolated mode without either.
    pub fn acting_tenant(&self, bound: Option<TenantId>) -> Result<Option<TenantId>, E> {
        match self.layout {
            Layout::Fixed { .. } => Ok(None),
            Layout::Schemas { .. } | Layout::Rls { .. } => match bound {
                Some(tenant) => Ok(Some(tenant)),
                None => Ok(Some(neo_tenant::require()?)),
            },
        }
    }

    /// The statements and the tenant of one call acting for the
    /// [`acting_tenant`](Self::acting_tenant).
    ///
    /// # Errors
    /// As [`acting_tenant`](Self::acting_tenant) and [`scope_of`](Self::scope_of).
    pub fn scope(&self, bound: Option<TenantId>) -> Result<StoreScope<S>, E> {
        let tenant = self.acting_tenant(bound)?;
        self.scope_of(tenant)
    }

    /// The statements of `tenant`'s schema (the one schema outside schema per tenant,
    /// whatever `tenant`), built on the schema's first call.
    ///
    /// # Errors
    /// The resolver's and the builder's; [`neo_tenant::Error::NoTenantInScope`] for `None`
    /// under schema per tenant.
    pub fn scope_of(&self, tenant: Option<TenantId>) -> Result<StoreScope<S>, E> {
        let sql = match (&self.layout, tenant) {
            (Layout::Fixed { sql, .. } | Layout::Rls { sql, .. }, _) => Arc::clone(sql),
            (
                Layout::Schemas {
                    resolver,
                    build,
                    built,
                },
                Some(tenant),
            ) => {
                let schema = resolver.schema(tenant)?;
                let mut built = neo_core::sync::lock(built);
                if let Some(sql) = built.get(&schema) {
                    Arc::clone(sql)
                } else {
                    let sql = Arc::new(build(&schema)?);
                    if built.len() >= Self::KEPT_SCHEMAS {
                        built.clear();
                    }
                    built.insert(schema, Arc::clone(&sql));
                    sql
                }
            }
            (Layout::Schemas { .. }, None) => return Err(neo_tenant::Error::NoTenantInScope.into()),
        };
        Ok(StoreScope { sql, tenant })
    }

    /// The schema `tenant`'s tables are in: the resolver's under schema per tenant, else
    /// the one schema.
    ///
    /// # Errors
    /// The resolver's; [`neo_tenant::Error::NoTenantInScope`] for `None` under schema per
    /// tenant.
    pub fn schema_of(&self, tenant: Option<TenantId>) -> Result<Schema, E> {
        match (&self.layout, tenant) {
            (Layout::Fixed { schema, .. } | Layout::Rls { schema, .. }, _) => Ok(schema.clone()),
            (Layout::Schemas { resolver, .. }, Some(tenant)) => Ok(resolver.schema(tenant)?),
            (Layout::Schemas { .. }, None) => Err(neo_tenant::Error::NoTenantInScope.into()),
        }
    }

    /// The schema a store's `migrate` runs in: the fixed or shared one, or under schema per
    /// tenant the [`acting_tenant`](Self::acting_tenant)'s (so it needs a tenant). Under
    /// row-level security the store runs its set with the policies
    /// ([`rls_setting`](Self::rls_setting)).
    ///
    /// # Errors
    /// As [`acting_tenant`](Self::acting_tenant), under schema per tenant; the resolver's.
    pub fn migration_schema(&self, bound: Option<TenantId>) -> Result<Schema, E> {
        match self.layout {
            Layout::Fixed { .. } | Layout::Rls { .. } => self.schema_of(None),
            Layout::Schemas { .. } => self.schema_of(self.acting_tenant(bound)?),
        }
    }

    /// A connection on `pool` (of `db`: the primary's or a replica's) for the statements of
    /// `scope`: under row-level security a transaction whose `BEGIN` sets the tenant's
    /// setting in the same round trip (transaction-local, so safe behind PgBouncer,
    /// [`TenantIsolation::statement_connection_on`]); otherwise the plain
    /// [`StatementConnection`].
    ///
    /// # Errors
    /// As [`Db::statement_connection_on`]; [`neo_tenant::Error::NoTenantInScope`] under
    /// row-level security for a scope without a tenant.
    pub async fn connection_on(
        &self,
        db: &Db,
        pool: &PgPool,
        scope: &StoreScope<S>,
    ) -> Result<StatementConnection, E> {
        match (&self.layout, scope.tenant) {
            (Layout::Rls { isolation, .. }, Some(tenant)) => {
                Ok(isolation.statement_connection_on(db, pool, tenant).await?)
            }
            (Layout::Rls { .. }, None) => Err(neo_tenant::Error::NoTenantInScope.into()),
            _ => Ok(db.statement_connection_on(pool).await?),
        }
    }

    /// A transaction on `db`'s primary with `scope`'s tenant in force (under row-level
    /// security its setting, sent with `BEGIN`; [`TenantIsolation::begin`]).
    ///
    /// # Errors
    /// As [`Db::begin`]; [`neo_tenant::Error::NoTenantInScope`] under row-level security for
    /// a scope without a tenant.
    pub async fn begin(&self, db: &Db, scope: &StoreScope<S>) -> Result<UnitOfWork, E> {
        match (&self.layout, scope.tenant) {
            (Layout::Rls { isolation, .. }, Some(tenant)) => {
                Ok(isolation.begin(db, tenant).await?)
            }
            (Layout::Rls { .. }, None) => Err(neo_tenant::Error::NoTenantInScope.into()),
            _ => Ok(db.begin().await?),
        }
    }
}

impl<S, E> fmt::Debug for StoreTenancy<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.layout {
            Layout::Fixed { schema, .. } => {
                f.debug_struct("Fixed").field("schema", schema).finish()
            }
            Layout::Schemas {
                resolver, built, ..
            } => f
                .debug_struct("Schemas")
                .field("resolver", resolver)
                .field("built", &neo_core::sync::lock(built).len())
                .finish(),
            Layout::Rls {
                schema, setting, ..
            } => f
                .debug_struct("Rls")
                .field("schema", schema)
                .field("setting", setting)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    enum TestError {
        Db(crate::Error),
        Tenant(neo_tenant::Error),
    }

    impl From<crate::Error> for TestError {
        fn from(e: crate::Error) -> Self {
            TestError::Db(e)
        }
    }

    impl From<neo_tenant::Error> for TestError {
        fn from(e: neo_tenant::Error) -> Self {
            TestError::Tenant(e)
        }
    }

    type Tenancy = StoreTenancy<String, TestError>;

    fn table_in(schema: &Schema) -> Result<String, TestError> {
        Ok(format!("{schema}.t"))
    }

    fn no_tenant(result: &Result<impl fmt::Debug, TestError>) -> bool {
        matches!(
            result,
            Err(TestError::Tenant(neo_tenant::Error::NoTenantInScope))
        )
    }

    #[test]
    fn a_fixed_schema_has_no_tenant_whatever_is_bound() {
        let tenancy = Tenancy::fixed(Schema::new("app").unwrap(), table_in).unwrap();
        let tenant = TenantId::new();
        assert_eq!(tenancy.mode(), TenancyMode::None);
        assert!(!tenancy.is_isolated());
        assert_eq!(tenancy.acting_tenant(Some(tenant)).unwrap(), None);
        let scope = tenancy.scope(None).unwrap();
        assert_eq!((scope.sql.as_str(), scope.tenant), ("\"app\".t", None));
        assert_eq!(tenancy.schema_of(Some(tenant)).unwrap().as_str(), "app");
        assert_eq!(tenancy.migration_schema(None).unwrap().as_str(), "app");
        assert!(tenancy.rls_setting().is_none());
    }

    #[test]
    fn isolated_modes_fail_closed_without_a_tenant() {
        for isolation in [
            TenantIsolation::row_level_security(),
            TenantIsolation::schema_per_tenant("t_").unwrap(),
        ] {
            let tenancy =
                Tenancy::isolated(Schema::new("shared").unwrap(), isolation, table_in).unwrap();
            assert!(tenancy.is_isolated());
            assert!(no_tenant(&tenancy.acting_tenant(None)));
            assert!(no_tenant(&tenancy.scope(None).map(|s| s.tenant)));
            let bound = TenantId::new();
            assert_eq!(tenancy.scope(Some(bound)).unwrap().tenant, Some(bound));
            let task = TenantId::new();
            let acting = neo_tenant::sync_scope(task, || tenancy.acting_tenant(None).unwrap());
            assert_eq!(acting, Some(task), "the task's tenant without a bound one");
            let acting = neo_tenant::sync_scope(task, || tenancy.acting_tenant(Some(bound)));
            assert_eq!(acting.unwrap(), Some(bound), "the bound tenant wins");
        }
    }

    #[test]
    fn row_level_security_shares_one_schema_and_its_statements() {
        let tenancy = Tenancy::isolated(
            Schema::new("shared").unwrap(),
            TenantIsolation::RowLevelSecurity(RlsSetting::new("app.tenant").unwrap()),
            table_in,
        )
        .unwrap();
        assert_eq!(tenancy.mode(), TenancyMode::RowLevelSecurity);
        assert_eq!(tenancy.rls_setting().unwrap().as_str(), "app.tenant");
        let (a, b) = (TenantId::new(), TenantId::new());
        let (sa, sb) = (
            tenancy.scope(Some(a)).unwrap(),
            tenancy.scope(Some(b)).unwrap(),
        );
        assert!(Arc::ptr_eq(&sa.sql, &sb.sql));
        assert_eq!(sa.sql.as_str(), "\"shared\".t");
        assert_eq!(
            tenancy.scope_of(None).unwrap().tenant,
            None,
            "cross-tenant work"
        );
        assert_eq!(tenancy.schema_of(Some(a)).unwrap().as_str(), "shared");
        assert_eq!(tenancy.migration_schema(None).unwrap().as_str(), "shared");
    }

    #[test]
    fn schema_per_tenant_builds_each_schema_once_and_keeps_a_bounded_set() {
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&builds);
        let tenancy = Tenancy::isolated(
            Schema::new("unused").unwrap(),
            TenantIsolation::schema_per_tenant("t_").unwrap(),
            move |schema| {
                counted.fetch_add(1, Ordering::Relaxed);
                table_in(schema)
            },
        )
        .unwrap();
        assert_eq!(tenancy.mode(), TenancyMode::SchemaPerTenant);
        assert_eq!(builds.load(Ordering::Relaxed), 0, "built on first use");
        let (a, b) = (TenantId::new(), TenantId::new());
        let first = tenancy.scope(Some(a)).unwrap();
        let again = tenancy.scope(Some(a)).unwrap();
        assert!(Arc::ptr_eq(&first.sql, &again.sql));
        let other = tenancy.scope(Some(b)).unwrap();
        assert_ne!(first.sql, other.sql);
        assert_eq!(builds.load(Ordering::Relaxed), 2);
        let schema = format!("t_{}", a.as_uuid().simple());
        assert_eq!(first.sql.as_str(), format!("\"{schema}\".t"));
        assert_eq!(tenancy.schema_of(Some(a)).unwrap().as_str(), schema);
        assert!(no_tenant(&tenancy.schema_of(None)));
        assert!(no_tenant(&tenancy.scope_of(None).map(|s| s.tenant)));
        assert!(no_tenant(&tenancy.migration_schema(None)));
        assert_eq!(tenancy.migration_schema(Some(a)).unwrap().as_str(), schema);

        for _ in 0..Tenancy::KEPT_SCHEMAS {
            tenancy.scope(Some(TenantId::new())).unwrap();
        }
        let Layout::Schemas { built, .. } = &tenancy.layout else {
            unreachable!()
        };
        let kept = neo_core::sync::lock(built).len();
        assert!(kept <= Tenancy::KEPT_SCHEMAS, "{kept} schemas kept");
        assert!(format!("{tenancy:?}").starts_with("Schemas"));
    }

    #[test]
    fn a_builder_error_is_the_stores() {
        let failing = |_: &Schema| -> Result<String, TestError> {
            Err(crate::Error::invalid("statements", "no").into())
        };
        assert!(matches!(
            Tenancy::fixed(Schema::new("app").unwrap(), failing),
            Err(TestError::Db(crate::Error::Invalid { .. }))
        ));
        let tenancy = Tenancy::isolated(
            Schema::new("app").unwrap(),
            TenantIsolation::schema_per_tenant("t_").unwrap(),
            failing,
        )
        .unwrap();
        assert!(matches!(
            tenancy.scope(Some(TenantId::new())),
            Err(TestError::Db(crate::Error::Invalid { .. }))
        ));
    }
}
