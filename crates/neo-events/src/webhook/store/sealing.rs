//! Endpoint secrets and header values at rest: sealed with the [`Sealer`] given to
//! [`Webhooks::sealed`], bound to the endpoint's row and column, opened when read. Without a
//! sealer they are stored as given (plain text).
//!
//! A sealed value is stored as text in the existing columns (`secrets text[]`, the values of
//! `headers jsonb`): `sealed:` and base64 (see [`neo_db::seal`]). Values that do not start
//! with `sealed:` are read as plain text, so endpoints created before a sealer was set keep
//! working.

use super::Webhooks;
use crate::EventError;
use neo_core::ExposeSecret;
use neo_db::seal::{Binding, SealProblem, Sealer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The table the bindings name (unqualified: the row id is unique across schemas).
pub(super) const TABLE: &str = "webhook_endpoints";
/// The column of the secrets (current and previous share it: rotation moves them).
pub(super) const SECRETS: &str = "secrets";

pub(super) fn header_column(name: &str) -> String {
    format!("headers.{}", name.to_ascii_lowercase())
}

impl Webhooks {
    /// The sealer endpoint secrets and headers are sealed with, if one was given.
    pub fn sealer(&self) -> Option<&Sealer> {
        self.inner.sealer.as_ref()
    }

    /// A secret as stored for endpoint `id`.
    pub(in crate::webhook) async fn store_secret(
        &self,
        id: Uuid,
        secret: &str,
    ) -> Result<String, EventError> {
        match self.sealer() {
            Some(sealer) => {
                let row = id.to_string();
                Ok(sealer
                    .seal_text(secret, &Binding::new(TABLE, SECRETS, &row))
                    .await?)
            }
            None => Ok(secret.to_owned()),
        }
    }

    /// Header values as stored for endpoint `id`.
    pub(in crate::webhook) async fn store_headers(
        &self,
        id: Uuid,
        headers: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, EventError> {
        let Some(sealer) = self.sealer() else {
            return Ok(headers.clone());
        };
        let row = id.to_string();
        let mut stored = BTreeMap::new();
        for (name, value) in headers {
            let column = header_column(name);
            let sealed = sealer
                .seal_text(value, &Binding::new(TABLE, &column, &row))
                .await?;
            stored.insert(name.clone(), sealed);
        }
        Ok(stored)
    }

    /// A stored secret of endpoint `id`, in the clear (borrowed when it was stored plain, so
    /// a delivery without sealing copies nothing).
    pub(in crate::webhook) async fn read_secret<'s>(
        &self,
        id: Uuid,
        stored: &'s str,
    ) -> Result<Cow<'s, str>, EventError> {
        self.read(stored, id, SECRETS).await
    }

    /// Stored header values of endpoint `id`, in the clear (borrowed when none was sealed).
    pub(in crate::webhook) async fn read_headers<'s>(
        &self,
        id: Uuid,
        stored: &'s BTreeMap<String, String>,
    ) -> Result<Cow<'s, BTreeMap<String, String>>, EventError> {
        if !stored.values().any(|value| Sealer::is_sealed_text(value)) {
            return Ok(Cow::Borrowed(stored));
        }
        let mut headers = BTreeMap::new();
        for (name, value) in stored {
            let value = self.read(value, id, &header_column(name)).await?;
            headers.insert(name.clone(), value.into_owned());
        }
        Ok(Cow::Owned(headers))
    }

    async fn read<'s>(
        &self,
        stored: &'s str,
        id: Uuid,
        column: &str,
    ) -> Result<Cow<'s, str>, EventError> {
        if !Sealer::is_sealed_text(stored) {
            return Ok(Cow::Borrowed(stored));
        }
        let Some(sealer) = self.sealer() else {
            return Err(EventError::Db(neo_db::Error::Seal {
                key_id: Sealer::key_id_of_text(stored).unwrap_or_default(),
                problem: SealProblem::Provider(
                    "the value is sealed and these Webhooks have no sealer (Webhooks::sealed)"
                        .into(),
                ),
            }));
        };
        let row = id.to_string();
        let open = sealer
            .open_text(stored, &Binding::new(TABLE, column, &row))
            .await?;
        Ok(Cow::Owned(open.expose_secret().to_owned()))
    }
}
