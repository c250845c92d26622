//! The code of `#[derive(Record)]`: the `Record` impl, `sqlx::FromRow`, and `Table` when
//! the struct names its table.

use crate::attrs::{RecordInput, SchemaAttr};
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

pub(crate) fn expand(input: &RecordInput) -> TokenStream {
    let record = record_impl(input);
    let from_row = input.from_row.then(|| from_row_impl(input));
    let table = table_impl(input);
    quote! {
        #record
        #from_row
        #table
    }
}

fn record_impl(input: &RecordInput) -> TokenStream {
    let krate = &input.krate;
    let ident = &input.ident;
    let key = input.key();
    let key_ty = &key.ty;
    let key_field = &key.ident;
    let key_column = &key.column;

    let columns = input.written().map(|f| {
        let name = &f.column;
        match &f.cast {
            Some(cast) => quote!(#krate::Column::new(#name).cast(#cast)),
            None => quote!(#krate::Column::new(#name)),
        }
    });
    let binds = input.written().map(|f| {
        let (name, field, ty) = (&f.column, &f.ident, &f.ty);
        // Spanned at the field's type: a type without a mapping is reported there.
        quote_spanned! {ty.span()=>
            <#ty as #krate::RecordColumn>::bind_column(binder, #name, |row| &row.#field)?;
        }
    });
    let (version, version_check) = match input.version() {
        Some(v) => {
            let (name, ty) = (&v.column, &v.ty);
            // The version column is int8: `update_batch` compares and increments it.
            let check = quote_spanned! {ty.span()=>
                const _: () = #krate::__private::version_column::<#ty>();
            };
            (
                quote!(const VERSION_COLUMN: ::core::option::Option<&'static str> =
                    ::core::option::Option::Some(#name);),
                check,
            )
        }
        None => (TokenStream::new(), TokenStream::new()),
    };
    let validate = input.validate.as_ref().map(|path| {
        quote_spanned! {path.span()=>
            fn validate(&self) -> ::core::result::Result<(), ::std::string::String> {
                #path(self)
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl #krate::Record for #ident {
            type Id = #key_ty;
            const COLUMNS: &'static [#krate::Column] = &[#(#columns),*];
            const ID_COLUMN: &'static str = #key_column;
            #version

            #[inline]
            fn id(&self) -> &Self::Id {
                &self.#key_field
            }

            fn bind_columns(binder: &mut #krate::ColumnBinder<'_, Self>) -> #krate::Result<()> {
                #(#binds)*
                ::core::result::Result::Ok(())
            }

            #validate
        }

        #version_check
    }
}

fn from_row_impl(input: &RecordInput) -> TokenStream {
    let krate = &input.krate;
    let ident = &input.ident;
    let fields = input.fields.iter().map(|f| {
        let (name, field, ty) = (&f.column, &f.ident, &f.ty);
        if f.skip.is_some() {
            quote_spanned!(ty.span()=> #field: ::core::default::Default::default())
        } else if f.read_only.is_some() {
            quote_spanned!(ty.span()=> #field: #krate::__private::get_read_only::<#ty>(row, #name)?)
        } else {
            quote_spanned!(ty.span()=> #field: <#ty as #krate::RecordColumn>::read_column(row, #name)?)
        }
    });
    quote! {
        #[automatically_derived]
        impl<'r> #krate::sqlx::FromRow<'r, #krate::sqlx::postgres::PgRow> for #ident {
            fn from_row(
                row: &'r #krate::sqlx::postgres::PgRow,
            ) -> ::core::result::Result<Self, #krate::sqlx::Error> {
                ::core::result::Result::Ok(#ident { #(#fields),* })
            }
        }
    }
}

fn table_impl(input: &RecordInput) -> Option<TokenStream> {
    let krate = &input.krate;
    let ident = &input.ident;
    let table = input.table.as_ref()?;
    let schema = match &input.schema {
        SchemaAttr::SearchPath => quote!(#krate::TableSchema::SearchPath),
        SchemaAttr::Named(name) => quote!(#krate::TableSchema::Named(#name)),
        SchemaAttr::Tenant => quote!(#krate::TableSchema::Tenant),
    };
    Some(quote! {
        #[automatically_derived]
        impl #krate::Table for #ident {
            const TABLE: &'static str = #table;
            const SCHEMA: #krate::TableSchema = #schema;
        }
    })
}
