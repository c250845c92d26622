//! Resolving the tenant once per HTTP request (feature `axum`).
//!
//! [`TenantLayer`] wraps a router or a handler: it asks its [`TenantResolver`] for the
//! request's tenant, refuses the request when there is none or it is not a valid
//! [`TenantId`](neo_core::TenantId), and otherwise runs the handler inside
//! [`scope`](crate::scope), so everything it calls can [`require`](crate::require) the tenant.
//!
//! Refusals are RFC 9457 problems (`application/problem+json`, the same shape as neo-orgs'
//! router): **404** `not_found` when the request names no tenant — nothing exists outside a
//! tenant, and a 404 does not tell a prober which header or host would have worked — and
//! **400** `validation` when the text it names is not a tenant id. The `detail` says where the
//! resolver looked and what was wrong.
//!
//! The layer records `tenant` on the span current when it is called — the request span of a
//! `tower_http::trace::TraceLayer` applied outside it, whose span must declare the field
//! (`tenant = tracing::field::Empty`), as `tracing` records only declared fields.
//!
//! ```
//! use axum::{Router, routing::get};
//! use neo_tenant::http::{HeaderResolver, TenantLayer};
//!
//! async fn whoami() -> String {
//!     neo_tenant::require().map_or_else(|e| e.to_string(), |t| t.to_string())
//! }
//! let app: Router = Router::new()
//!     .route("/whoami", get(whoami))
//!     .layer(TenantLayer::new(HeaderResolver::default()));
//! # let _ = app;
//! ```

mod resolve;
#[cfg(test)]
mod tests;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    Json,
    http::{HeaderValue, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use tower_layer::Layer;
use tower_service::Service;

pub use resolve::{HeaderResolver, PathSegmentResolver, SubdomainResolver, TenantResolver};

use crate::Error;

/// The tower layer that resolves the tenant of every request (see the [module docs](self)).
#[derive(Debug)]
pub struct TenantLayer<R> {
    resolver: Arc<R>,
}

impl<R> Clone for TenantLayer<R> {
    fn clone(&self) -> Self {
        TenantLayer {
            resolver: Arc::clone(&self.resolver),
        }
    }
}

impl<R: TenantResolver> TenantLayer<R> {
    /// A layer resolving tenants with `resolver`.
    pub fn new(resolver: R) -> Self {
        TenantLayer {
            resolver: Arc::new(resolver),
        }
    }
}

impl<S, R> Layer<S> for TenantLayer<R> {
    type Service = TenantService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            inner,
            resolver: Arc::clone(&self.resolver),
        }
    }
}

/// The service [`TenantLayer`] wraps around `S`.
#[derive(Debug)]
pub struct TenantService<S, R> {
    inner: S,
    resolver: Arc<R>,
}

impl<S: Clone, R> Clone for TenantService<S, R> {
    fn clone(&self) -> Self {
        TenantService {
            inner: self.inner.clone(),
            resolver: Arc::clone(&self.resolver),
        }
    }
}

impl<S, R, B> Service<Request<B>> for TenantService<S, R>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
    R: TenantResolver,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let tenant = match self.resolver.resolve(&parts) {
            Ok(tenant) => tenant,
            Err(error) => {
                tracing::debug!(%error, "request refused: no valid tenant");
                return Box::pin(std::future::ready(Ok(refusal(&error))));
            }
        };
        tracing::Span::current().record("tenant", tracing::field::display(tenant));
        let request = Request::from_parts(parts, body);
        // A service may start its work in `call`: that runs in the scope too.
        let future = crate::sync_scope(tenant, || self.inner.call(request));
        Box::pin(crate::scope(tenant, future))
    }
}

/// The problem response for a request without a valid tenant.
fn refusal(error: &Error) -> Response {
    let kind = error.kind();
    // A malformed tenant id is a malformed address (400), not an unprocessable body (neo-core
    // maps Validation to 422 for bodies).
    let status = match error {
        Error::InvalidTenant { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
    };
    let body = serde_json::json!({
        "type": format!("https://neo-commons.dev/problems/{}", kind.as_str()),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": error.to_string(),
        "kind": kind.as_str(),
    });
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}
