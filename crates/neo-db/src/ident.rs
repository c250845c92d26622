//! Identifier safety: the one place where names reach SQL text.
//!
//! Schema, table, column and sort-key names are the only caller-chosen strings neo-db ever
//! writes into SQL; everything else is a bind parameter. They all pass through
//! [`quote_identifier`], which rejects anything that is not a plain lowercase PostgreSQL name
//! and double-quotes the rest, so a name can neither inject SQL nor silently refer to a
//! different object.

use crate::{Error, Result};
use std::fmt;

/// PostgreSQL truncates identifiers longer than this many bytes (`NAMEDATALEN - 1`).
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// Validates `name` and returns it double-quoted, ready to be written into SQL.
///
/// Accepted: 1 to 63 bytes of `a-z`, `0-9` and `_`, not starting with a digit. Uppercase is
/// refused rather than folded, because PostgreSQL folds unquoted names to lowercase and a
/// quoted `"Orders"` would name a different table than the `orders` the caller created.
///
/// # Errors
/// [`Error::Invalid`] (kind `Validation`) saying what is wrong; no SQL is sent.
///
/// # Example
/// ```
/// use neo_db::quote_identifier;
/// assert_eq!(quote_identifier("tenant_42").unwrap(), "\"tenant_42\"");
/// assert!(quote_identifier("x; DROP TABLE users").is_err());
/// assert!(quote_identifier("Orders").is_err());
/// ```
pub fn quote_identifier(name: &str) -> Result<String> {
    let reject = |reason: String| Err(Error::invalid("identifier", reason));
    if name.is_empty() {
        return reject("the name is empty".into());
    }
    if name.len() > MAX_IDENTIFIER_LEN {
        return reject(format!(
            "{:?} is {} bytes long, PostgreSQL names are at most {MAX_IDENTIFIER_LEN}",
            truncate(name),
            name.len()
        ));
    }
    if name.as_bytes()[0].is_ascii_digit() {
        return reject(format!("{name:?} starts with a digit"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        let hint = if bad.is_ascii_uppercase() {
            " (use lowercase: PostgreSQL folds unquoted names to lowercase)"
        } else {
            ""
        };
        return reject(format!(
            "{:?} contains {bad:?}; only a-z, 0-9 and _ are allowed{hint}",
            truncate(name)
        ));
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    quoted.push_str(name);
    quoted.push('"');
    Ok(quoted)
}

fn truncate(name: &str) -> &str {
    match name.char_indices().nth(80) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}

/// A validated identifier; `Display` writes it quoted.
///
/// # Example
/// ```
/// use neo_db::Ident;
/// let column = Ident::new("created_at")?;
/// assert_eq!(column.as_str(), "created_at");
/// assert_eq!(column.to_string(), "\"created_at\"");
/// # Ok::<(), neo_db::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    quoted: String,
}

impl Ident {
    /// Validates `name` (see [`quote_identifier`]).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the name is not acceptable.
    pub fn new(name: &str) -> Result<Self> {
        Ok(Ident {
            quoted: quote_identifier(name)?,
        })
    }

    /// The name without quotes.
    pub fn as_str(&self) -> &str {
        &self.quoted[1..self.quoted.len() - 1]
    }

    /// The name with quotes, as it goes into SQL.
    pub fn quoted(&self) -> &str {
        &self.quoted
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted)
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ident({})", self.as_str())
    }
}

/// A schema that holds one tenant's tables.
///
/// Same rules as [`Ident`], and PostgreSQL's own schemas (`pg_*`, `information_schema`) are
/// refused so a tenant name can never point at the catalog.
///
/// # Example
/// ```
/// use neo_db::Schema;
/// assert!(Schema::new("tenant_7").is_ok());
/// assert!(Schema::new("pg_catalog").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Schema(Ident);

impl Schema {
    /// Validates a schema name.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or a system schema.
    pub fn new(name: &str) -> Result<Self> {
        let ident = Ident::new(name)?;
        if name.starts_with("pg_") || name == "information_schema" {
            return Err(Error::invalid(
                "schema",
                format!("{name:?} is a PostgreSQL system schema"),
            ));
        }
        Ok(Schema(ident))
    }

    /// The schema as an identifier.
    pub fn ident(&self) -> &Ident {
        &self.0
    }

    /// The name without quotes.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A table name, optionally qualified by a schema; `Display` writes `"schema"."table"`.
///
/// # Example
/// ```
/// use neo_db::TableName;
/// assert_eq!(TableName::parse("billing.invoices")?.to_string(), "\"billing\".\"invoices\"");
/// assert_eq!(TableName::parse("invoices")?.to_string(), "\"invoices\"");
/// assert!(TableName::parse("a.b.c").is_err());
/// # Ok::<(), neo_db::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TableName {
    schema: Option<Schema>,
    table: Ident,
}

impl TableName {
    /// An unqualified table (resolved through `search_path`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name.
    pub fn new(table: &str) -> Result<Self> {
        Ok(TableName {
            schema: None,
            table: Ident::new(table)?,
        })
    }

    /// Parses `table` or `schema.table`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name or more than one dot.
    pub fn parse(name: &str) -> Result<Self> {
        match name.split_once('.') {
            None => Self::new(name),
            Some((schema, table)) => Ok(TableName {
                schema: Some(Schema::new(schema)?),
                table: Ident::new(table)?,
            }),
        }
    }

    /// The same table in `schema`.
    #[must_use]
    pub fn in_schema(&self, schema: &Schema) -> Self {
        TableName {
            schema: Some(schema.clone()),
            table: self.table.clone(),
        }
    }

    /// The schema, when qualified.
    pub fn schema(&self) -> Option<&Schema> {
        self.schema.as_ref()
    }

    /// The table part.
    pub fn table(&self) -> &Ident {
        &self.table
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}.")?;
        }
        fmt::Display::fmt(&self.table, f)
    }
}
