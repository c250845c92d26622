//! Endpoint verification ([`WebhookConfig::require_verification`](crate::WebhookConfig::require_verification)):
//! a new or re-pointed endpoint starts pending; [`Webhooks::send_verification`] POSTs it a
//! signed request carrying a fresh challenge, and the endpoint becomes active only when the
//! receiver answers with that challenge (see [`verification_answer`], the receiver's side)
//! before it expires, or when the challenge is confirmed out of band
//! ([`Webhooks::confirm_verification`]). Until then fan-out records its deliveries without
//! jobs; verifying gives them their jobs, so nothing published meanwhile is lost.

use super::http::read_capped;
use super::store::{Pending, Webhooks, db_error, not_found};
use crate::{EventError, SignatureError, Verifier, WebhookSecret, sign};
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngExt;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

/// The `type` of a verification request's body.
pub const VERIFICATION_EVENT_TYPE: &str = "webhook.verification";

/// The stored state of an endpoint waiting for verification.
pub(in crate::webhook) const PENDING: &str = "pending";

/// Where an endpoint's verification stands, from [`Webhooks::verification`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verification {
    /// Deliveries are sent (verified, or verification was never required of it).
    Verified {
        /// When it answered its challenge (`None`: never asked).
        at: Option<DateTime<Utc>>,
    },
    /// Waiting for the receiver: deliveries wait too.
    Pending {
        /// When the challenge sent last expires (`None`: none sent yet).
        expires_at: Option<DateTime<Utc>>,
    },
}

/// The statements of verification, built once per schema.
#[derive(Debug)]
pub(in crate::webhook) struct VerifySql {
    challenge: String,
    confirm: String,
    state: String,
    release: String,
    repoint: String,
    unqueue: String,
}

impl VerifySql {
    pub(in crate::webhook) fn new(endpoints: &str, deliveries: &str) -> Self {
        VerifySql {
            challenge: format!(
                "UPDATE {endpoints} SET verification_challenge = $2, \
                 verification_expires_at = now() + $3 * interval '1 millisecond', updated_at = now() \
                 WHERE id = $1 AND verification = '{PENDING}' RETURNING url"
            ),
            confirm: format!(
                "UPDATE {endpoints} SET verification = NULL, verification_challenge = NULL, \
                 verification_expires_at = NULL, verified_at = now(), updated_at = now() \
                 WHERE id = $1 AND verification = '{PENDING}' AND verification_challenge = $2 \
                 AND verification_expires_at > now() RETURNING fifo"
            ),
            state: format!(
                "SELECT verification, verification_challenge = $2 AS matches, \
                 verification_expires_at, verification_expires_at > now() AS live, verified_at \
                 FROM {endpoints} WHERE id = $1"
            ),
            release: format!(
                "UPDATE {deliveries} SET queued = true WHERE endpoint_id = $1 AND status = 'pending' \
                 AND NOT queued RETURNING id, created_at, queued, endpoint_id, tenant_id, trace_context, region, replays"
            ),
            repoint: format!(
                "UPDATE {endpoints} SET url = $2, verification = CASE WHEN $3 THEN '{PENDING}' ELSE verification END, \
                 verification_challenge = NULL, verification_expires_at = NULL, updated_at = now() \
                 WHERE id = $1"
            ),
            // By id and `created_at`, the partition key: one partition read.
            unqueue: format!(
                "UPDATE {deliveries} SET queued = false WHERE id = $1 AND created_at = $2"
            ),
        }
    }
}

/// The receiver's side of verification: checks the request's signature (as for any
/// delivery) and, when it is a verification request, returns the body to answer it with
/// (`{"challenge": ...}`, with status 200). `None` for any other message.
///
/// # Example
/// ```
/// use neo_events::{WebhookSecret, sign, verification_answer, Verifier};
/// let secret = WebhookSecret::generate();
/// let body = br#"{"type":"webhook.verification","data":{"challenge":"c-123"}}"#;
/// let headers = sign(&[&secret], "verify_1", chrono::Utc::now().timestamp(), body);
/// let answer = verification_answer(&Verifier::new(vec![secret]), &headers, body).unwrap();
/// assert_eq!(answer.as_deref(), Some(r#"{"challenge":"c-123"}"#));
/// ```
///
/// # Errors
/// [`SignatureError`] when the signature or timestamp does not check out.
pub fn verification_answer(
    verifier: &Verifier,
    headers: &crate::SignedHeaders,
    body: &[u8],
) -> Result<Option<String>, SignatureError> {
    let now = Utc::now().timestamp();
    verifier.verify_at(headers, body, now)?;
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(None);
    };
    if message.get("type").and_then(|t| t.as_str()) != Some(VERIFICATION_EVENT_TYPE) {
        return Ok(None);
    }
    Ok(message
        .pointer("/data/challenge")
        .and_then(|c| c.as_str())
        .map(|challenge| serde_json::json!({ "challenge": challenge }).to_string()))
}

impl Webhooks {
    /// Sends `endpoint` (pending verification) a signed request carrying a new challenge,
    /// valid for [`verification_ttl`](crate::WebhookConfig::verification_ttl), and verifies
    /// it when the receiver answers 2xx with `{"challenge": <the challenge>}`
    /// ([`verification_answer`]). Calling it again re-sends with a new challenge (the old one
    /// stops counting). Returns where the endpoint stands afterwards.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(webhooks: neo_events::Webhooks, endpoint: uuid::Uuid) -> Result<(), neo_events::EventError> {
    /// use neo_events::Verification;
    /// match webhooks.send_verification(endpoint).await? {
    ///     Verification::Verified { .. } => println!("deliveries flow"),
    ///     Verification::Pending { .. } => println!("the receiver did not answer the challenge"),
    ///     _ => {}
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`EventError::NotFound`] (also another tenant's endpoint); [`EventError::Tenant`]
    /// under row-level security without a tenant; a database error. A receiver that does not
    /// answer correctly is no error: the endpoint stays pending.
    pub async fn send_verification(&self, endpoint: Uuid) -> Result<Verification, EventError> {
        let current = self.endpoint(endpoint).await?;
        let challenge = new_challenge();
        let (_, mut conn) = self.acting_connection(None).await?;
        let ttl_ms = self.inner.config.verification_ttl.as_secs_f64() * 1e3;
        let url: Option<String> =
            sqlx::query_scalar(AssertSqlSafe(self.inner.sql.verification.challenge.clone()))
                .persistent(self.inner.db.pooler().named_statements())
                .bind(endpoint)
                .bind(&challenge)
                .bind(ttl_ms)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
        conn.finish().await?;
        let Some(url) = url else {
            return self.verification(endpoint).await; // verified already
        };
        let answered = self.ask(&url, current.secret(), endpoint, &challenge).await;
        match answered {
            Ok(answer) if answer == challenge => {
                match self.confirm_verification(endpoint, &challenge).await {
                    Ok(()) => {}
                    Err(EventError::Invalid { reason, .. }) => {
                        tracing::warn!(%endpoint, %reason, "verification answered too late");
                    }
                    Err(other) => return Err(other),
                }
            }
            Ok(_) => tracing::warn!(%endpoint, "verification answered with another challenge"),
            Err(reason) => tracing::warn!(%endpoint, %reason, "verification not answered"),
        }
        self.verification(endpoint).await
    }

    /// POSTs the signed verification request; returns the challenge the receiver answered.
    async fn ask(
        &self,
        url: &str,
        secret: &WebhookSecret,
        endpoint: Uuid,
        challenge: &str,
    ) -> Result<String, String> {
        let url = self.validate_url(url).map_err(|e| e.to_string())?;
        let body = serde_json::json!({
            "type": VERIFICATION_EVENT_TYPE,
            "timestamp": Utc::now(),
            "data": { "challenge": challenge, "endpoint_id": endpoint },
        })
        .to_string();
        let signed = sign(
            &[secret],
            &format!("verify_{}", Uuid::now_v7()),
            Utc::now().timestamp(),
            body.as_bytes(),
        );
        let mut request = self
            .inner
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| super::http::transport_error(&e))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let text = read_capped(response, self.inner.config.max_response_body)
            .await
            .map_err(|e| super::http::transport_error(&e))?;
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("challenge")?.as_str().map(str::to_owned))
            .ok_or_else(|| "the answer carries no challenge".to_owned())
    }

    /// Verifies `endpoint` with the `challenge` sent to it last, out of band (the receiver's
    /// owner read it from the request): the endpoint becomes active and the deliveries that
    /// waited get their jobs, in one transaction. Confirming a verified endpoint does
    /// nothing.
    ///
    /// # Errors
    /// [`EventError::Invalid`] when no challenge was sent, it does not match, or it expired
    /// (re-send with [`send_verification`](Self::send_verification)); nothing changes then.
    /// [`EventError::NotFound`] (also another tenant's endpoint); a database or queue error.
    pub async fn confirm_verification(
        &self,
        endpoint: Uuid,
        challenge: &str,
    ) -> Result<(), EventError> {
        let tenant = self.inner.tenancy.acting(None)?;
        let mut tx = self.inner.tenancy.begin(&self.inner.db, tenant).await?;
        let sql = &self.inner.sql.verification;
        let named = self.inner.db.pooler().named_statements();
        let fifo: Option<bool> = sqlx::query_scalar(AssertSqlSafe(sql.confirm.clone()))
            .persistent(named)
            .bind(endpoint)
            .bind(challenge)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
        let Some(fifo) = fifo else {
            let row = sqlx::query(AssertSqlSafe(sql.state.clone()))
                .persistent(named)
                .bind(endpoint)
                .bind(challenge)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_error)?
                .ok_or_else(|| not_found("endpoint", endpoint))?;
            tx.rollback().await?;
            let state: Option<String> = row.try_get("verification").map_err(db_error)?;
            let matches: Option<bool> = row.try_get("matches").map_err(db_error)?;
            let live: Option<bool> = row.try_get("live").map_err(db_error)?;
            let reason = match (state, matches, live) {
                (None, _, _) => return Ok(()),
                (Some(_), None, _) => "no challenge was sent to this endpoint",
                (Some(_), Some(false), _) => "the challenge does not match the one sent last",
                (Some(_), Some(true), _) => "the challenge expired; send a new one",
            };
            return Err(EventError::Invalid {
                what: "endpoint verification",
                reason: reason.into(),
            });
        };
        if fifo {
            self.advance_fifo(&mut tx, endpoint).await?;
        } else {
            let waiting: Vec<Pending> = sqlx::query_as(AssertSqlSafe(sql.release.clone()))
                .persistent(named)
                .bind(endpoint)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
            self.enqueue_created(&mut tx, &waiting).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Where `endpoint`'s verification stands.
    ///
    /// # Errors
    /// [`EventError::NotFound`] (also another tenant's endpoint); [`EventError::Tenant`]
    /// under row-level security without a tenant; a database error.
    pub async fn verification(&self, endpoint: Uuid) -> Result<Verification, EventError> {
        let (_, mut conn) = self.acting_connection(None).await?;
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.verification.state.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(endpoint)
            .bind("")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found("endpoint", endpoint))?;
        conn.finish().await?;
        let state: Option<String> = row.try_get("verification").map_err(db_error)?;
        Ok(match state {
            None => Verification::Verified {
                at: row.try_get("verified_at").map_err(db_error)?,
            },
            Some(_) => Verification::Pending {
                expires_at: row.try_get("verification_expires_at").map_err(db_error)?,
            },
        })
    }

    /// Points `endpoint` at `url`. With
    /// [`require_verification`](crate::WebhookConfig::require_verification) it is pending
    /// verification again: deliveries wait (those already queued wait when their job finds
    /// it pending) until [`send_verification`](Self::send_verification) succeeds.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for a bad URL; [`EventError::NotFound`] (also another
    /// tenant's endpoint); a database error.
    pub async fn set_url(&self, endpoint: Uuid, url: &str) -> Result<(), EventError> {
        self.validate_url(url)?;
        let (_, mut conn) = self.acting_connection(None).await?;
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.verification.repoint.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(endpoint)
            .bind(url)
            .bind(self.inner.config.require_verification)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        if done.rows_affected() == 0 {
            return Err(not_found("endpoint", endpoint));
        }
        Ok(())
    }

    /// A delivery whose job found its endpoint pending verification goes back to waiting
    /// without a job (verification gives it one).
    pub(in crate::webhook) async fn wait_for_verification(
        &self,
        delivery: i64,
        created_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), EventError> {
        let system = &self.inner.system;
        let mut conn = system.statement_connection().await?;
        sqlx::query(AssertSqlSafe(self.inner.sql.verification.unqueue.clone()))
            .persistent(system.pooler().named_statements())
            .bind(delivery)
            .bind(created_at)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        conn.finish().await?;
        Ok(())
    }
}

/// 32 random bytes, base64url.
fn new_challenge() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
