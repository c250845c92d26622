//! Field types that have no PostgreSQL column type, recognised by their spelling so the error
//! says what to use instead. Every other type is checked by the compiler against neo-db's
//! `RecordColumn` bound, with its own message.

use syn::{GenericArgument, PathArguments, Type};

/// Fails for a type that can never be a column: unsigned and 128-bit integers, `char`,
/// tuples, fixed-size arrays, references, function pointers (also inside `Option` or `Vec`).
pub(crate) fn check_field_type(ty: &Type) -> syn::Result<()> {
    let advice = match ty {
        Type::Tuple(t) if t.elems.is_empty() => Some(
            "`()` has no PostgreSQL type; remove the field or mark it `#[record(skip)]`".to_owned(),
        ),
        Type::Tuple(_) => Some(
            "a tuple has no PostgreSQL column type; give each part its own field (one column each), \
             or store it as `serde_json::Value` (jsonb)"
                .to_owned(),
        ),
        Type::Array(_) => Some(
            "a fixed-size array has no PostgreSQL column type; use `Vec<T>` (an array column) \
             or `Vec<u8>` (bytea)"
                .to_owned(),
        ),
        Type::Reference(_) => Some(
            "a record owns its values (rows are decoded into it); use an owned type such as \
             `String` instead of `&str`"
                .to_owned(),
        ),
        Type::BareFn(_) | Type::TraitObject(_) | Type::ImplTrait(_) => Some(
            "this type has no PostgreSQL column type; mark the field `#[record(skip)]` \
             if it is not a column"
                .to_owned(),
        ),
        Type::Paren(inner) => return check_field_type(&inner.elem),
        Type::Group(inner) => return check_field_type(&inner.elem),
        Type::Path(path) if path.qself.is_none() => {
            let Some(last) = path.path.segments.last() else {
                return Ok(());
            };
            let name = last.ident.to_string();
            if let PathArguments::AngleBracketed(args) = &last.arguments
                && (name == "Option" || name == "Vec")
            {
                for arg in &args.args {
                    if let GenericArgument::Type(inner) = arg {
                        // `Vec<u8>` is bytea; `u8` alone is not a column.
                        if name == "Vec" && is_ident(inner, "u8") {
                            continue;
                        }
                        check_field_type(inner)?;
                    }
                }
                return Ok(());
            }
            scalar_advice(&name, path.path.segments.len() == 1)
        }
        _ => None,
    };
    match advice {
        Some(advice) => Err(syn::Error::new_spanned(ty, advice)),
        None => Ok(()),
    }
}

fn is_ident(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident(name))
}

/// Advice for a primitive without a PostgreSQL type (only when written as the bare name, so a
/// user's own `u64` newtype in a module is left to the compiler's check).
fn scalar_advice(name: &str, bare: bool) -> Option<String> {
    if !bare {
        return None;
    }
    let (pg, what) = match name {
        "u8" | "u16" => ("i16 (smallint) or i32", "an unsigned integer"),
        "u32" => ("i64 (bigint)", "an unsigned integer"),
        "u64" | "usize" => (
            "i64 (bigint; convert with `i64::try_from`) or `sqlx::types::BigDecimal` (numeric)",
            "an unsigned integer",
        ),
        "u128" | "i128" => (
            "`uuid::Uuid` for ids, or a numeric type (`rust_decimal`/`bigdecimal`)",
            "a 128-bit integer",
        ),
        "isize" => ("i64 (bigint)", "a pointer-sized integer"),
        "char" => ("String (text)", "`char`"),
        _ => return None,
    };
    Some(format!(
        "PostgreSQL has no column type for {what} (`{name}`); use {pg}, or mark the field \
         `#[record(skip)]` if it is not a column"
    ))
}
