//! `#[derive(Record)]` and `#[derive(CopyRow)]` for neo-db: a struct describes its table
//! once, and the batch repository's `Record` impl (columns, key, version column, column
//! casts, `sqlx::FromRow`), the table and schema, and the COPY row are generated from it.
//!
//! Use it through neo-db's `derive` feature, as `#[derive(neo_db::Record)]`:
//!
//! ```toml
//! neo-db = { version = "0.1", features = ["derive"] }
//! ```
//!
//! # Example
//! ```
//! use neo_db::{Record, Table, TableSchema};
//!
//! #[derive(Debug, Clone, neo_db::Record, neo_db::CopyRow)]
//! #[record(table = "products", schema = "catalog", validate = "Self::check")]
//! struct Product {
//!     #[record(key)]
//!     sku: String,
//!     #[record(rename = "title")]
//!     name: String,
//!     price_cents: i64,
//!     #[record(cast = "product_status")]
//!     status: String,
//!     #[record(version)]
//!     version: i64,
//!     /// Filled in by the database (`DEFAULT now()`): read, never written.
//!     #[record(read_only)]
//!     created_at: Option<chrono::DateTime<chrono::Utc>>,
//!     /// Not a column.
//!     #[record(skip)]
//!     cached_label: Option<String>,
//! }
//!
//! impl Product {
//!     fn check(&self) -> Result<(), String> {
//!         if self.price_cents < 0 { return Err("price_cents is negative".into()); }
//!         Ok(())
//!     }
//! }
//!
//! let names: Vec<&str> = Product::COLUMNS.iter().map(|c| c.name()).collect();
//! assert_eq!(names, ["sku", "title", "price_cents", "status", "version"]);
//! assert_eq!(Product::ID_COLUMN, "sku");
//! assert_eq!(Product::VERSION_COLUMN, Some("version"));
//! assert_eq!(<Product as neo_db::CopyRow>::COLUMNS, names);
//! assert_eq!(Product::table_name(), "catalog.products");
//! assert_eq!(Product::SCHEMA, TableSchema::Named("catalog"));
//! ```
//! Then `Product::batch_repository(&db)?` is the `BatchRepository<Product>` of
//! `catalog.products`, and `Product::copy_writer(&db, None)?` its `CopyWriter`.
//!
//! # Attributes
//! On the struct, `#[record(...)]`:
//! - `table = "name"`: the table; implements `neo_db::Table` (`batch_repository`,
//!   `tenant_batch_repository`, `copy_writer`). Without it, only `Record` is implemented and
//!   the repository is built with `BatchRepository::new(&db, "name")`.
//! - `schema = "name"`: the table is always in that schema; `schema = tenant`: it is in each
//!   tenant's schema (`Table::tenant_batch_repository` qualifies it with
//!   `TenantIsolation::schema_of`). Without it, `search_path` finds the table.
//! - `validate = "path"`: `fn(&Self) -> Result<(), String>`, run on every record before a
//!   batch write (`Record::validate`).
//! - `from_row = false`: no `sqlx::FromRow` impl (write or derive your own, with the same
//!   column names).
//! - `crate = "path"`: where neo-db is, when it is reached through another crate
//!   (`crate = "neo_commons::db"`); `::neo_db` by default.
//!
//! On a field:
//! - `key`: the primary key (`Record::Id`, `ID_COLUMN`); by default the field named `id`.
//! - `version`: the optimistic-concurrency column (an `i64`): `update_batch` updates a row
//!   only at the version the record carries, and increments it.
//! - `rename = "column"`: the column's name, when it differs from the field's.
//! - `cast = "pg_type"`: the bound values are cast to this type (an enum or domain the driver
//!   cannot name; `text[]` for arrays).
//! - `read_only`: read from rows (`FromRow`), never written: a column the database fills in.
//! - `skip`: not a column; `Default::default()` when a row is read.
//!
//! # Errors at compile time
//! A derive on an enum, a union, a tuple or unit struct, or a generic struct; a record
//! without a key; two keys or two version columns; contradicting attributes; a name that is
//! not a plain lowercase PostgreSQL identifier; and a field type without a PostgreSQL mapping
//! (`u64`, `char`, a tuple, an array, a reference, or any type that is not a
//! `neo_db::RecordColumn`) fail to compile, with the error at the offending field or
//! attribute saying what to do instead.

mod attrs;
mod copy_row;
mod names;
mod record;
mod types;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `neo_db::Record` (and `sqlx::FromRow`, and `neo_db::Table` with
/// `#[record(table = "...")]`) for a struct with named fields; see the [crate] documentation.
#[proc_macro_derive(Record, attributes(record))]
pub fn derive_record(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match attrs::RecordInput::parse(&input, "Record") {
        Ok(parsed) => record::expand(&parsed).into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Implements `neo_db::CopyRow` for a struct with named fields: its written columns (all
/// fields but `skip` and `read_only` ones, with their `rename`s), in declaration order.
#[proc_macro_derive(CopyRow, attributes(record))]
pub fn derive_copy_row(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match attrs::RecordInput::parse(&input, "CopyRow") {
        Ok(parsed) => copy_row::expand(&parsed).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
