//! The code of `#[derive(CopyRow)]`: the written columns of a record, in declaration order,
//! each field sent as its `CopyValue`.

use crate::attrs::RecordInput;
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

pub(crate) fn expand(input: &RecordInput) -> TokenStream {
    let krate = &input.krate;
    let ident = &input.ident;
    let columns = input.written().map(|f| &f.column);
    let fields = input.written().map(|f| {
        let (field, ty) = (&f.ident, &f.ty);
        quote_spanned!(ty.span()=> row.field::<#ty>(&self.#field);)
    });
    quote! {
        #[automatically_derived]
        impl #krate::CopyRow for #ident {
            const COLUMNS: &'static [&'static str] = &[#(#columns),*];

            #[inline]
            fn write_row(&self, row: &mut #krate::RowWriter<'_>) {
                #(#fields)*
            }
        }
    }
}
