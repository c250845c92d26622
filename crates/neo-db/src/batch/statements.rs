//! The SQL of a repository, built once per table (and schema) from its [`Record`]'s
//! columns: every name in it is a validated, quoted identifier.

use super::Record;
use crate::ident::{Ident, TableName};
use crate::{Error, Result};
use sqlx::{AssertSqlSafe, SqlStr};
use std::fmt::Write as _;

/// SQL built once per repository (and schema).
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) insert: [SqlStr; 3],
    pub(super) insert_returning: [SqlStr; 3],
    /// [`insert`](Self::insert) carrying a tenant's row-level-security setting: the
    /// columns' arrays, then the setting's name and the tenant (text) as the last two
    /// parameters (see [`TENANT_CTE`]).
    pub(super) insert_for_tenant: [SqlStr; 3],
    pub(super) select_by_ids: SqlStr,
    pub(super) exists_by_ids: SqlStr,
    pub(super) delete_by_ids: SqlStr,
    pub(super) update: SqlStr,
}

impl Statements {
    pub(super) fn build<T: Record>(table: &TableName, conflict_target: &[Ident]) -> Result<Self> {
        if T::COLUMNS.is_empty() {
            return Err(Error::invalid("columns", "Record::COLUMNS is empty"));
        }
        let columns = T::COLUMNS
            .iter()
            .map(|c| {
                let cast = c.cast.map(cast_type).transpose()?;
                Ok((Ident::new(c.name)?, cast))
            })
            .collect::<Result<Vec<_>>>()?;
        let id = Ident::new(T::ID_COLUMN)?;
        let version = T::VERSION_COLUMN.map(Ident::new).transpose()?;
        for required in std::iter::once(&id).chain(version.as_ref()) {
            if !columns.iter().any(|(c, _)| c == required) {
                return Err(Error::invalid(
                    "columns",
                    format!("Record::COLUMNS must include {}", required.as_str()),
                ));
            }
        }

        let list = join(columns.iter().map(|(c, _)| c.to_string()));
        let params = join((1..=columns.len()).map(|i| format!("${i}")));
        let selected = join(columns.iter().map(|(c, cast)| match cast {
            Some(ty) => format!("_u.{c}::{ty}"),
            None => format!("_u.{c}"),
        }));
        let insert_base = format!(
            "INSERT INTO {table} AS _t ({list}) SELECT {selected} FROM UNNEST({params}) AS _u({list})"
        );
        let target = join(conflict_target.iter().map(ToString::to_string));
        let mut overwrite: Vec<String> = columns
            .iter()
            .filter(|(c, _)| *c != id && Some(c) != version.as_ref())
            .map(|(c, _)| format!("{c} = EXCLUDED.{c}"))
            .collect();
        if let Some(v) = &version {
            overwrite.push(format!("{v} = _t.{v} + 1"));
        }
        let update_clause = if overwrite.is_empty() {
            format!(" ON CONFLICT ({target}) DO NOTHING")
        } else {
            format!(
                " ON CONFLICT ({target}) DO UPDATE SET {}",
                overwrite.join(", ")
            )
        };
        let suffixes = [
            "",
            &format!(" ON CONFLICT ({target}) DO NOTHING"),
            &update_clause,
        ];
        let insert = suffixes.map(|s| sql(format!("{insert_base}{s}")));
        let (setting, tenant) = (columns.len() + 1, columns.len() + 2);
        let insert_for_tenant = suffixes.map(|s| {
            sql(format!(
                "WITH {TENANT_CTE} AS MATERIALIZED (SELECT set_config(${setting}, ${tenant}, true) AS tenant) \
                 {insert_base} CROSS JOIN {TENANT_CTE}{s}"
            ))
        });
        let insert_returning = suffixes.map(|s| sql(format!("{insert_base}{s} RETURNING _t.*")));

        let mut assignments: Vec<String> = columns
            .iter()
            .filter(|(c, _)| *c != id && Some(c) != version.as_ref())
            .map(|(c, cast)| match cast {
                Some(ty) => format!("{c} = _u.{c}::{ty}"),
                None => format!("{c} = _u.{c}"),
            })
            .collect();
        let mut condition = format!("_t.{id} = _u.{id}");
        if let Some(v) = &version {
            assignments.push(format!("{v} = _t.{v} + 1"));
            let _ = write!(condition, " AND _t.{v} = _u.{v}");
        }
        if assignments.is_empty() {
            // Only the id: "update" is a no-op that still checks existence.
            assignments.push(format!("{id} = _t.{id}"));
        }
        let update = sql(format!(
            "UPDATE {table} AS _t SET {} FROM UNNEST({params}) AS _u({list}) WHERE {condition} RETURNING _t.*",
            assignments.join(", ")
        ));

        Ok(Statements {
            insert,
            insert_returning,
            insert_for_tenant,
            select_by_ids: sql(format!("SELECT * FROM {table} WHERE {id} = ANY($1)")),
            exists_by_ids: sql(format!("SELECT {id} FROM {table} WHERE {id} = ANY($1)")),
            delete_by_ids: sql(format!(
                "DELETE FROM {table} WHERE {id} = ANY($1) RETURNING {id}"
            )),
            update,
        })
    }
}

/// The name of the materialized CTE that puts a tenant's row-level-security setting in force
/// inside the statement itself, joined (`CROSS JOIN`) into the rows an `INSERT` writes: no
/// row reaches the table before the CTE ran, so every per-row check (the policy's
/// `WITH CHECK`, an `ON CONFLICT` target's `USING`, a column default reading the setting)
/// sees the tenant; anything evaluated before it (a statement-level `BEFORE` trigger) sees no
/// tenant, which fails closed.
pub(super) const TENANT_CTE: &str = "_neo_tenant";

/// A cast target: a validated type name, optionally an array (`text[]`).
fn cast_type(sql_type: &str) -> Result<String> {
    match sql_type.strip_suffix("[]") {
        Some(base) => Ok(format!("{}[]", Ident::new(base)?)),
        None => Ok(Ident::new(sql_type)?.to_string()),
    }
}

fn join(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(", ")
}

/// SQL text assembled only from validated, quoted identifiers and fixed keywords.
pub(crate) fn sql(text: String) -> SqlStr {
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(text))
}
