//! Two roles on a test database, for tests of row-level security: an owner that runs the
//! migrations and owns the tables, and an application role that is neither the owner nor a
//! superuser nor `BYPASSRLS` — so a test cannot pass because PostgreSQL skipped the policies —
//! and a system role for cross-tenant work (queue workers, outbox dispatchers, delivery
//! workers, maintenance) that is `BYPASSRLS` but neither owner nor superuser.

use crate::{Error, PgBouncer, Result, TestDatabase};
use sqlx::Connection as _;

/// The owner and application roles of one [`TestDatabase`] (see
/// [`TestDatabase::split_roles`]). Holds the PgBouncer that logs in as the application role,
/// when asked for one.
#[derive(Debug)]
pub struct SplitRoles {
    owner: String,
    app: String,
    system: String,
    owner_url: String,
    app_url: String,
    system_url: String,
    _bouncer: Option<PgBouncer>,
}

impl SplitRoles {
    /// The owner role's name: it owns the database (so it may create schemas and the
    /// trusted extensions the migrations need) and every table the migrations create.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The application role's name: `LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT`, owning
    /// nothing; it gets rights only through the grants the test makes.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The system role's name: `LOGIN NOSUPERUSER BYPASSRLS NOINHERIT`, owning nothing. It
    /// stands for the role a service's background workers use for work that spans tenants
    /// (claiming any tenant's jobs, dispatching every tenant's events); like the application
    /// role it gets rights only through grants.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// A direct URL of the database as the system role.
    pub fn system_url(&self) -> &str {
        &self.system_url
    }

    /// A direct URL of the database as the owner (for migrations and grants).
    pub fn owner_url(&self) -> &str {
        &self.owner_url
    }

    /// A URL of the database as the application role: direct, or through a PgBouncer in
    /// transaction mode whose server connections log in as the application role.
    pub fn app_url(&self) -> &str {
        &self.app_url
    }
}

impl TestDatabase {
    /// Creates `<database>_owner`, `<database>_app` and `<database>_system` (see [`SplitRoles`]), makes the
    /// owner own the database, and, with `through_pgbouncer`, starts a PgBouncer in
    /// transaction mode in front of the server that logs in as the application role (the
    /// shared PgBouncer logs in as the superuser, which would bypass row-level security).
    ///
    /// # Errors
    /// [`Error::Client`] when a statement fails; PgBouncer's start errors.
    pub async fn split_roles(&self, through_pgbouncer: bool) -> Result<SplitRoles> {
        let name = self.name().to_owned();
        let (owner, app, system) = (
            format!("{name}_owner"),
            format!("{name}_app"),
            format!("{name}_system"),
        );
        let mut conn = sqlx::PgConnection::connect(self.direct_url())
            .await
            .map_err(Error::client(format!("connecting to {name}")))?;
        // The names are the generated database name (hex digits) and fixed suffixes.
        for statement in [
            format!("CREATE ROLE \"{owner}\" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE"),
            format!("CREATE ROLE \"{app}\" LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT NOCREATEROLE"),
            format!("CREATE ROLE \"{system}\" LOGIN NOSUPERUSER BYPASSRLS NOINHERIT NOCREATEROLE"),
            format!("ALTER DATABASE \"{name}\" OWNER TO \"{owner}\""),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut conn)
                .await
                .map_err(Error::client(statement))?;
        }
        let _ = conn.close().await;
        let as_role = |role: &str| -> Result<String> {
            let mut url = url::Url::parse(self.direct_url())
                .map_err(Error::client("parsing the database URL"))?;
            url.set_username(role).map_err(|()| Error::Client {
                context: "setting the role in the database URL".into(),
                detail: role.to_owned(),
            })?;
            url.set_password(None).map_err(|()| Error::Client {
                context: "clearing the password in the database URL".into(),
                detail: role.to_owned(),
            })?;
            Ok(url.into())
        };
        let owner_url = as_role(&owner)?;
        let direct_app_url = as_role(&app)?;
        let system_url = as_role(&system)?;
        let (app_url, bouncer) = if through_pgbouncer {
            let backend = direct_app_url.clone();
            let bouncer = tokio::task::spawn_blocking(move || PgBouncer::start(&backend))
                .await
                .map_err(Error::client("starting PgBouncer for the application role"))??;
            (bouncer.url_for(&name), Some(bouncer))
        } else {
            (direct_app_url, None)
        };
        Ok(SplitRoles {
            owner,
            app,
            system,
            owner_url,
            app_url,
            system_url,
            _bouncer: bouncer,
        })
    }
}

/// What the role of one connection is, as row-level security sees it: read from `pg_roles`
/// and `pg_class` by [`RoleFacts::read`], so an isolation test can show that it did not pass
/// because PostgreSQL skipped the policies (a superuser, a `BYPASSRLS` role or the table's
/// owner).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleFacts {
    /// `current_user`.
    pub role: String,
    /// `rolsuper`: bypasses every policy.
    pub superuser: bool,
    /// `rolbypassrls`.
    pub bypass_rls: bool,
    /// The role that owns the table.
    pub table_owner: String,
    /// Whether the role is the table's owner or may act as it (a member of the owning role).
    pub owns_table: bool,
}

impl RoleFacts {
    /// The facts of `conn`'s role about `table` (schema-qualified, e.g. `neo_queue.jobs`).
    ///
    /// # Errors
    /// [`Error::Client`] when the query fails (e.g. no such table).
    pub async fn read(conn: &mut sqlx::PgConnection, table: &str) -> Result<RoleFacts> {
        let (role, superuser, bypass_rls, table_owner, owns_table): (String, bool, bool, String, bool) =
            sqlx::query_as(
                "SELECT current_user::text, r.rolsuper, r.rolbypassrls, pg_get_userbyid(c.relowner)::text, \
                 pg_has_role(current_user, c.relowner, 'USAGE') \
                 FROM pg_roles r, pg_class c WHERE r.rolname = current_user AND c.oid = $1::regclass",
            )
            .bind(table)
            .persistent(false)
            .fetch_one(conn)
            .await
            .map_err(Error::client(format!("reading the role facts about {table}")))?;
        Ok(RoleFacts {
            role,
            superuser,
            bypass_rls,
            table_owner,
            owns_table,
        })
    }

    /// Whether the table's policies bind this role: neither superuser, nor `BYPASSRLS`, nor
    /// the owner (the [application role](SplitRoles::app)).
    pub fn bound_by_policies(&self) -> bool {
        !self.superuser && !self.bypass_rls && !self.owns_table
    }

    /// Whether this role crosses tenants only through `BYPASSRLS`: not a superuser and not the
    /// owner (the [system role](SplitRoles::system)).
    pub fn crosses_tenants_only_by_bypassrls(&self) -> bool {
        !self.superuser && self.bypass_rls && !self.owns_table
    }
}
