//! The `#[record(...)]` attributes of a struct and its fields, read into a [`RecordInput`]
//! with every mistake reported at the attribute or field that makes it.

use crate::names::check_identifier;
use crate::types::check_field_type;
use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, LitBool, LitStr, Path, Type};

const CONTAINER_KEYS: &str = "`table`, `schema`, `validate`, `from_row`, `crate`";
const FIELD_KEYS: &str = "`key`, `version`, `rename`, `cast`, `skip`, `read_only`";

/// Where the table lives (`#[record(schema = ...)]`).
pub(crate) enum SchemaAttr {
    /// No `schema`: unqualified, found through `search_path`.
    SearchPath,
    /// `schema = "billing"`.
    Named(LitStr),
    /// `schema = tenant`: in each tenant's schema.
    Tenant,
}

/// A struct that derives `Record` or `CopyRow`, read and checked.
pub(crate) struct RecordInput {
    pub(crate) ident: Ident,
    /// The path neo-db is reached through (`crate = "..."`, by default `::neo_db`).
    pub(crate) krate: Path,
    pub(crate) table: Option<LitStr>,
    pub(crate) schema: SchemaAttr,
    pub(crate) validate: Option<Path>,
    pub(crate) from_row: bool,
    pub(crate) fields: Vec<FieldInput>,
}

/// One field and what its attributes say.
pub(crate) struct FieldInput {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    /// The column name: `rename`, or the field's name.
    pub(crate) column: String,
    pub(crate) cast: Option<LitStr>,
    pub(crate) key: Option<Span>,
    pub(crate) version: Option<Span>,
    /// Neither read nor written (`Default::default()` when read).
    pub(crate) skip: Option<Span>,
    /// Read from rows, never written (a column the database fills in).
    pub(crate) read_only: Option<Span>,
}

impl FieldInput {
    /// Whether batch writes and COPY send this field.
    pub(crate) fn written(&self) -> bool {
        self.skip.is_none() && self.read_only.is_none()
    }
}

impl RecordInput {
    /// Reads `input`; every mistake found is in the error, each at its own span.
    pub(crate) fn parse(input: &DeriveInput, derive: &str) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let named = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => Some(named),
                Fields::Unnamed(fields) => {
                    errors.push(syn::Error::new_spanned(
                        fields,
                        format!(
                            "#[derive({derive})] needs named fields: each column is named after its field \
                             (or `#[record(rename = \"...\")]`); write `struct {} {{ id: Uuid, name: String }}`",
                            input.ident
                        ),
                    ));
                    None
                }
                Fields::Unit => {
                    errors.push(syn::Error::new_spanned(
                        &input.ident,
                        format!(
                            "#[derive({derive})] needs a struct with named fields, one per column; `{}` has none",
                            input.ident
                        ),
                    ));
                    None
                }
            },
            Data::Enum(data) => {
                errors.push(syn::Error::new_spanned(
                    data.enum_token,
                    format!(
                        "#[derive({derive})] works on a struct with named fields (one per column), not on an enum; \
                         to store an enum in a column, derive `sqlx::Type` on it and use it as a field of a record struct"
                    ),
                ));
                None
            }
            Data::Union(data) => {
                errors.push(syn::Error::new_spanned(
                    data.union_token,
                    format!(
                        "#[derive({derive})] works on a struct with named fields, not on a union"
                    ),
                ));
                None
            }
        };
        if !input.generics.params.is_empty() {
            errors.push(syn::Error::new_spanned(
                &input.generics,
                format!(
                    "#[derive({derive})] does not take generic parameters: a record describes one table; \
                     write a concrete struct per table"
                ),
            ));
        }

        let mut parsed = RecordInput {
            ident: input.ident.clone(),
            krate: syn::parse_quote!(::neo_db),
            table: None,
            schema: SchemaAttr::SearchPath,
            validate: None,
            from_row: true,
            fields: Vec::new(),
        };
        parsed.parse_container(input, &mut errors);
        for field in named.iter().flat_map(|n| n.named.iter()) {
            if let Some(field) = parse_field(field, &mut errors) {
                parsed.fields.push(field);
            }
        }
        if named.is_some() {
            parsed.check_fields(derive == "Record", &mut errors);
        }
        errors.finish()?;
        Ok(parsed)
    }

    fn parse_container(&mut self, input: &DeriveInput, errors: &mut Errors) {
        let mut schema_span = None;
        for attr in input.attrs.iter().filter(|a| a.path().is_ident("record")) {
            // Mistakes in a value that parsed: reported without stopping at them.
            let mut soft = Vec::new();
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("table") {
                    let table: LitStr = meta.value()?.parse()?;
                    soft.extend(check_identifier(&table, "table").err());
                    self.table = Some(table);
                } else if meta.path.is_ident("schema") {
                    schema_span = Some(meta.path.span());
                    let value = meta.value()?;
                    if value.peek(LitStr) {
                        let schema: LitStr = value.parse()?;
                        soft.extend(check_identifier(&schema, "schema").err());
                        self.schema = SchemaAttr::Named(schema);
                    } else {
                        let word: Ident = value.parse()?;
                        if word != "tenant" {
                            return Err(syn::Error::new_spanned(
                                word,
                                "expected `schema = tenant` (the table is in each tenant's schema) \
                                 or `schema = \"name\"` (always that schema)",
                            ));
                        }
                        self.schema = SchemaAttr::Tenant;
                    }
                } else if meta.path.is_ident("validate") {
                    let path: LitStr = meta.value()?.parse()?;
                    self.validate = Some(path.parse().map_err(|_| {
                        syn::Error::new_spanned(
                            &path,
                            "`validate` names a function `fn(&Self) -> Result<(), String>`, \
                             e.g. `validate = \"Self::check\"`",
                        )
                    })?);
                } else if meta.path.is_ident("from_row") {
                    let value: LitBool = meta.value()?.parse()?;
                    self.from_row = value.value;
                } else if meta.path.is_ident("crate") {
                    let path: LitStr = meta.value()?.parse()?;
                    self.krate = path.parse()?;
                } else {
                    soft.push(meta.error(format!(
                        "unknown record attribute on the struct; expected one of {CONTAINER_KEYS} \
                         (field attributes: {FIELD_KEYS})"
                    )));
                    skip_value(&meta)?;
                }
                Ok(())
            });
            soft.into_iter().for_each(|e| errors.push(e));
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if let (Some(span), None) = (schema_span, &self.table) {
            errors.push(syn::Error::new(
                span,
                "`schema` places the table: name the table too, `#[record(table = \"...\", schema = ...)]`",
            ));
        }
    }

    fn check_fields(&self, needs_key: bool, errors: &mut Errors) {
        let keys: Vec<&FieldInput> = self.fields.iter().filter(|f| f.key.is_some()).collect();
        for extra in keys.iter().skip(1) {
            errors.push(syn::Error::new(
                extra.key.unwrap_or_else(Span::call_site),
                format!(
                    "a record has one key column; `{}` is already the key (for a composite unique \
                     constraint use `BatchRepository::with_conflict_target`)",
                    keys[0].ident
                ),
            ));
        }
        let versions: Vec<&FieldInput> =
            self.fields.iter().filter(|f| f.version.is_some()).collect();
        for extra in versions.iter().skip(1) {
            errors.push(syn::Error::new(
                extra.version.unwrap_or_else(Span::call_site),
                format!(
                    "a record has one version column; `{}` is already it",
                    versions[0].ident
                ),
            ));
        }
        if needs_key
            && keys.is_empty()
            && !self.fields.iter().any(|f| f.column == "id" && f.written())
        {
            errors.push(syn::Error::new_spanned(
                &self.ident,
                format!(
                    "`{}` has no key column: name the primary key field `id`, or mark it with `#[record(key)]`",
                    self.ident
                ),
            ));
        }
        let mut seen: Vec<&FieldInput> = Vec::new();
        for field in self.fields.iter().filter(|f| f.skip.is_none()) {
            if let Some(first) = seen.iter().find(|f| f.column == field.column) {
                errors.push(syn::Error::new_spanned(
                    &field.ident,
                    format!(
                        "column `{}` is already the column of field `{}`; give one of them \
                         `#[record(rename = \"...\")]`",
                        field.column, first.ident
                    ),
                ));
            } else {
                seen.push(field);
            }
        }
    }

    /// The key field: `#[record(key)]`, else the field whose column is `id`.
    pub(crate) fn key(&self) -> &FieldInput {
        self.fields
            .iter()
            .find(|f| f.key.is_some())
            .or_else(|| self.fields.iter().find(|f| f.column == "id" && f.written()))
            .unwrap_or_else(|| unreachable!("checked in parse"))
    }

    /// The version field, when one is marked.
    pub(crate) fn version(&self) -> Option<&FieldInput> {
        self.fields.iter().find(|f| f.version.is_some())
    }

    /// The fields batch writes and COPY send, in declaration order.
    pub(crate) fn written(&self) -> impl Iterator<Item = &FieldInput> {
        self.fields.iter().filter(|f| f.written())
    }
}

fn parse_field(field: &syn::Field, errors: &mut Errors) -> Option<FieldInput> {
    let ident = field.ident.clone()?;
    let mut parsed = FieldInput {
        column: ident.unraw().to_string(),
        ident,
        ty: field.ty.clone(),
        cast: None,
        key: None,
        version: None,
        skip: None,
        read_only: None,
    };
    let mut renamed = None;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("record")) {
        let mut soft = Vec::new();
        let result = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            if meta.path.is_ident("key") {
                parsed.key = Some(span);
            } else if meta.path.is_ident("version") {
                parsed.version = Some(span);
            } else if meta.path.is_ident("skip") {
                parsed.skip = Some(span);
            } else if meta.path.is_ident("read_only") {
                parsed.read_only = Some(span);
            } else if meta.path.is_ident("rename") {
                let name: LitStr = meta.value()?.parse()?;
                soft.extend(check_identifier(&name, "column").err());
                renamed = Some(name);
            } else if meta.path.is_ident("cast") {
                let sql_type: LitStr = meta.value()?.parse()?;
                let base = sql_type.value();
                let base = base.strip_suffix("[]").unwrap_or(&base).to_owned();
                soft.extend(
                    check_identifier(&LitStr::new(&base, sql_type.span()), "cast type").err(),
                );
                parsed.cast = Some(sql_type);
            } else {
                soft.push(meta.error(format!(
                    "unknown record attribute on a field; expected one of {FIELD_KEYS}"
                )));
                skip_value(&meta)?;
            }
            Ok(())
        });
        soft.into_iter().for_each(|e| errors.push(e));
        if let Err(e) = result {
            errors.push(e);
        }
    }
    if let Some(name) = renamed {
        parsed.column = name.value();
    }
    let conflicts = [
        (parsed.key, "key", parsed.skip, "skip"),
        (parsed.key, "key", parsed.read_only, "read_only"),
        (parsed.key, "key", parsed.version, "version"),
        (parsed.version, "version", parsed.skip, "skip"),
        (parsed.version, "version", parsed.read_only, "read_only"),
        (parsed.skip, "skip", parsed.read_only, "read_only"),
    ];
    for (first, first_name, second, second_name) in conflicts {
        if let (Some(_), Some(span)) = (first, second) {
            errors.push(syn::Error::new(
                span,
                format!(
                    "`{second_name}` contradicts `{first_name}` on field `{}`: keep one",
                    parsed.ident
                ),
            ));
        }
    }
    if parsed.skip.is_some() && parsed.cast.is_some() {
        errors.push(syn::Error::new_spanned(
            parsed.cast.as_ref()?,
            "a skipped field has no column to cast",
        ));
    }
    // A skipped field never reaches the database, so its type needs no mapping; a cast
    // column is sent as the driver's type for the Rust value, then cast in SQL.
    if parsed.skip.is_none()
        && let Err(e) = check_field_type(&parsed.ty)
    {
        errors.push(e);
    }
    Some(parsed)
}

/// Consumes the `= value` of an unknown key, so the keys after it are still read.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _ = meta.parse_nested_meta(|inner| skip_value(&inner));
    }
    Ok(())
}

/// Every error found, reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
