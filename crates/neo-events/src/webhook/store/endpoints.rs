//! Endpoints: their URL, headers, rate limit, secret (and its rotation), enabling and
//! deletion.

use super::reseal::sealed_with;
use super::subscriptions::validate_filter;
use super::{Webhooks, db_error, not_found};
use crate::webhook::lock;
use crate::webhook::{Endpoint, NewEndpoint};
use crate::{EventError, WebhookSecret};
use chrono::{DateTime, Utc};
use neo_core::TenantId;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, FromRow};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Headers the library sets itself; endpoints cannot override them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "user-agent",
    crate::HEADER_ID,
    crate::HEADER_TIMESTAMP,
    crate::HEADER_SIGNATURE,
];
const MAX_HEADERS: usize = 20;
const MAX_URL_LEN: usize = 2048;

impl Webhooks {
    /// Checks an endpoint URL: `https` (or `http` when `require_https` is off), no
    /// credentials, at most 2048 bytes, and no refused IP literal.
    ///
    /// # Errors
    /// [`EventError::Invalid`] saying what is wrong.
    pub fn validate_url(&self, url: &str) -> Result<reqwest::Url, EventError> {
        let invalid = |reason: String| EventError::Invalid {
            what: "endpoint url",
            reason,
        };
        if url.len() > MAX_URL_LEN {
            return Err(invalid(format!("longer than {MAX_URL_LEN} bytes")));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("not a URL: {e}")))?;
        let scheme_ok = parsed.scheme() == "https"
            || (parsed.scheme() == "http" && !self.inner.config.require_https);
        if !scheme_ok {
            let allowed = if self.inner.config.require_https {
                "https"
            } else {
                "http or https"
            };
            return Err(invalid(format!(
                "scheme {:?} is not {allowed}",
                parsed.scheme()
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials in the URL are refused; use headers".into(),
            ));
        }
        if parsed.host().is_none() {
            return Err(invalid("no host".into()));
        }
        self.inner.config.addresses.check_url(&parsed)?;
        Ok(parsed)
    }

    /// Creates an endpoint and its subscriptions. Under row-level security it belongs to
    /// `new.tenant_id`, or else to the task's tenant.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad URL, filter, header or rate; [`EventError::Tenant`]
    /// under row-level security without a tenant; a database error.
    pub async fn create_endpoint(&self, new: NewEndpoint) -> Result<Endpoint, EventError> {
        let tenant = self.inner.tenancy.acting(new.tenant_id)?;
        self.validate_url(&new.url)?;
        new.filters.iter().try_for_each(|f| validate_filter(f))?;
        validate_headers(&new.headers)?;
        if let Some(region) = &new.region {
            crate::webhook::regions::validate_region(region)?;
        }
        if new.rate_limit_per_second == Some(0) {
            return Err(EventError::Invalid {
                what: "endpoint rate limit",
                reason: "must be at least 1 per second".into(),
            });
        }
        let secret = new.secret.unwrap_or_else(WebhookSecret::generate);
        let rate = new
            .rate_limit_per_second
            .map(|r| i32::try_from(r).unwrap_or(i32::MAX));
        let id = Uuid::now_v7();
        let stored_secret = self.store_secret(id, &secret.expose()).await?;
        let stored_headers = self.store_headers(id, &new.headers).await?;
        let sealed_with = sealed_with(&[stored_secret.as_str()], &stored_headers);
        let mut tx = self.inner.tenancy.begin(&self.inner.db, tenant).await?;
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.insert_endpoint.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(id)
            .bind(tenant)
            .bind(&new.url)
            .bind(vec![stored_secret])
            .bind(rate)
            .bind(sqlx::types::Json(&stored_headers))
            .bind(&new.description)
            .bind(new.fifo)
            .bind(sealed_with)
            .bind(
                self.inner
                    .config
                    .require_verification
                    .then_some(crate::webhook::verify::PENDING),
            )
            .bind(&new.region)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
        let endpoint = self.endpoint_from_row(&row).await?;
        sqlx::query(AssertSqlSafe(self.inner.sql.insert_subscriptions.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(endpoint.id)
            .bind(&new.filters)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        tx.commit().await?;
        Ok(endpoint)
    }

    /// One endpoint.
    ///
    /// # Errors
    /// [`EventError::NotFound`]; a database error.
    pub async fn endpoint(&self, id: Uuid) -> Result<Endpoint, EventError> {
        let (_, mut conn) = self.acting_connection(None).await?;
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.endpoint.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found("endpoint", id))?;
        conn.finish().await?;
        self.endpoint_from_row(&row).await
    }

    /// The endpoints of a tenant (`None`: those without a tenant; under row-level security,
    /// the task's tenant's).
    ///
    /// # Errors
    /// [`EventError::Tenant`] under row-level security without a tenant; a database error.
    pub async fn endpoints(&self, tenant: Option<TenantId>) -> Result<Vec<Endpoint>, EventError> {
        let (tenant, mut conn) = self.acting_connection(tenant).await?;
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.endpoints.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        let mut endpoints = Vec::with_capacity(rows.len());
        for row in &rows {
            endpoints.push(self.endpoint_from_row(row).await?);
        }
        Ok(endpoints)
    }

    /// Enables or disables an endpoint. Deliveries for a disabled endpoint go to the dead
    /// letters when their turn comes; replay them after enabling it again.
    ///
    /// # Errors
    /// [`EventError::NotFound`]; a database error.
    pub async fn set_enabled(
        &self,
        endpoint: Uuid,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<(), EventError> {
        let (_, mut conn) = self.acting_connection(None).await?;
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.set_enabled.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(endpoint)
            .bind(enabled)
            .bind(if enabled { None } else { reason })
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        if done.rows_affected() == 0 {
            return Err(not_found("endpoint", endpoint));
        }
        Ok(())
    }

    /// Replaces the endpoint's secret with a new one; the old one keeps signing (a second
    /// signature) for `secret_overlap`, so the receiver can switch without dropping messages.
    ///
    /// # Errors
    /// [`EventError::NotFound`]; a database error.
    pub async fn rotate_secret(&self, endpoint: Uuid) -> Result<WebhookSecret, EventError> {
        let tenant = self.inner.tenancy.acting(None)?;
        let secret = WebhookSecret::generate();
        let stored = self.store_secret(endpoint, &secret.expose()).await?;
        let key = sealed_with(&[stored.as_str()], &BTreeMap::new()).remove(0);
        let mut conn = self
            .inner
            .tenancy
            .connection(&self.inner.db, tenant)
            .await?;
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.rotate.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(endpoint)
            .bind(stored)
            .bind(self.inner.config.secret_overlap.as_secs_f64() * 1e3)
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        if done.rows_affected() == 0 {
            return Err(not_found("endpoint", endpoint));
        }
        Ok(secret)
    }

    /// Deletes an endpoint with its subscriptions and deliveries; returns whether it existed.
    ///
    /// # Errors
    /// A database error.
    pub async fn delete_endpoint(&self, endpoint: Uuid) -> Result<bool, EventError> {
        let (_, mut conn) = self.acting_connection(None).await?;
        let deleted: i64 =
            sqlx::query_scalar(AssertSqlSafe(self.inner.sql.delete_endpoint.clone()))
                .persistent(self.inner.db.pooler().named_statements())
                .bind(endpoint)
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?;
        conn.finish().await?;
        self.forget(endpoint);
        Ok(deleted > 0)
    }

    fn forget(&self, endpoint: Uuid) {
        lock(&self.inner.breakers).remove(&endpoint);
        lock(&self.inner.limiters).remove(&endpoint);
    }
}

fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), EventError> {
    let invalid = |reason: String| EventError::Invalid {
        what: "endpoint header",
        reason,
    };
    if headers.len() > MAX_HEADERS {
        return Err(invalid(format!("at most {MAX_HEADERS} headers")));
    }
    for (name, value) in headers {
        let parsed = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("{name:?} is not a header name")))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(invalid(format!("{name:?} is set by the library")));
        }
        reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("the value of {name:?} is not a valid header value")))?;
    }
    Ok(())
}

/// An endpoint row, decoded by column name (`ENDPOINT_COLUMNS`).
#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: Uuid,
    tenant_id: Option<TenantId>,
    url: String,
    secrets: Vec<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    rate_limit_per_second: Option<i32>,
    #[sqlx(json)]
    headers: BTreeMap<String, String>,
    description: String,
    created_at: DateTime<Utc>,
    fifo: bool,
    region: Option<String>,
}

impl Webhooks {
    /// An endpoint from its row, its secret and headers opened.
    async fn endpoint_from_row(&self, row: &PgRow) -> Result<Endpoint, EventError> {
        let row = EndpointRow::from_row(row).map_err(db_error)?;
        let stored = row.secrets.first().ok_or_else(|| EventError::Invalid {
            what: "stored endpoint",
            reason: "it has no secret".into(),
        })?;
        let secret =
            WebhookSecret::parse(&self.read_secret(row.id, stored).await?).map_err(|e| {
                EventError::Invalid {
                    what: "stored endpoint secret",
                    reason: e.to_string(),
                }
            })?;
        let headers = self.read_headers(row.id, &row.headers).await?.into_owned();
        Ok(Endpoint {
            id: row.id,
            tenant_id: row.tenant_id,
            url: row.url,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            rate_limit_per_second: row
                .rate_limit_per_second
                .and_then(|r| u32::try_from(r).ok()),
            headers,
            description: row.description,
            created_at: row.created_at,
            fifo: row.fifo,
            region: row.region,
            secret,
        })
    }
}
