//! The organization service as JSON endpoints (feature `http`), with RFC 9457 problem
//! details for every error.
//!
//! | Method and path | Does |
//! |---|---|
//! | `POST /organizations` | create (`{name, slug?, display_name?, description?, website?, country?, tax_id?, metadata?}`) → 201 |
//! | `GET /organizations?q=&limit=&cursor=&offset=&count=` | search, keyset (cursor) or offset pages |
//! | `GET /organizations/{id}` | get (cached) |
//! | `GET /organizations/by-slug/{slug}` | get by slug |
//! | `PATCH /organizations/{id}` | rename, describe, brand, merge metadata (`{version, ...}`) |
//! | `POST /organizations/{id}/{verify,activate,suspend,archive}` | lifecycle (`{version, reason?, documents?}`) |
//! | `DELETE /organizations/{id}?version=` | soft delete |
//! | `POST /organizations/{id}/restore` | restore (`{version}`) |
//!
//! Memberships and invitations: [`members_router`] (its table is in its module's docs).
//! Domain claims and organization verifications: [`verification_router`] (likewise).

mod members;
mod verification;

pub use members::members_router;
pub use verification::verification_router;

use crate::model::{Branding, Color};
use crate::{NewOrganization, OrgError, Organization, OrganizationService};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use neo_core::{CountryCode, HasErrorKind, HttpsUrl, Metadata, OrganizationId, Slug};
use serde::Deserialize;
use serde_json::{Value, json};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The routes, on a service; nest or merge them into the host's router.
///
/// # Example
/// ```no_run
/// # async fn demo(orgs: neo_orgs::OrganizationService) {
/// let app = axum::Router::new().merge(neo_orgs::http::router(orgs));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
/// axum::serve(listener, app).await.unwrap();
/// # }
/// ```
pub fn router(service: OrganizationService) -> axum::Router {
    axum::Router::new()
        .route("/organizations", post(create).get(search))
        .route(
            "/organizations/{id}",
            get(get_one).patch(update).delete(delete),
        )
        .route("/organizations/by-slug/{slug}", get(get_by_slug))
        .route("/organizations/{id}/{action}", post(lifecycle))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}

/// A path no route matches, as a problem.
async fn no_route(uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no endpoint at {}; see the table in neo_orgs::http",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

/// A method the path does not take, as a problem.
async fn no_method(method: axum::http::Method) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "validation",
        format!("{method} is not an operation of this endpoint"),
    )
}

/// An error as an RFC 9457 problem: `type`, `title`, `status`, `detail`, and the `kind`.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            kind,
            detail: detail.into(),
        }
    }
}

impl From<OrgError> for Problem {
    fn from(error: OrgError) -> Self {
        let kind = error.kind();
        let status =
            StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Server-side failures are logged, not described to the caller.
        let detail = if status.is_server_error() {
            tracing::error!(%error, "organization request failed");
            "the request could not be completed; try again later".to_owned()
        } else {
            error.to_string()
        };
        Problem::new(status, kind.as_str(), detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("https://neo-commons.dev/problems/{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "kind": self.kind,
        });
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// A JSON body whose rejection (malformed, wrong type, too large) is a problem, not axum's
/// plain-text answer.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => {
                let status = match &rejection {
                    JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                        StatusCode::PAYLOAD_TOO_LARGE
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(Problem::new(status, "validation", rejection.body_text()))
            }
        }
    }
}

fn parse_id(text: &str) -> Result<OrganizationId, Problem> {
    text.parse::<OrganizationId>()
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "validation", e.to_string()))
}

fn created(org: &Organization) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(location) = format!("/organizations/{}", org.id()).parse() {
        headers.insert(header::LOCATION, location);
    }
    (StatusCode::CREATED, headers, Json(org)).into_response()
}

/// What `POST /organizations` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    slug: Option<String>,
    display_name: Option<String>,
    description: Option<String>,
    website: Option<String>,
    country: Option<String>,
    tax_id: Option<String>,
    metadata: Option<Value>,
}

fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .unwrap_or("anonymous")
        .to_owned()
}

async fn create(
    State(service): State<OrganizationService>,
    headers: HeaderMap,
    Body(body): Body<CreateBody>,
) -> Result<Response, Problem> {
    let slug = match &body.slug {
        Some(slug) => Slug::parse(slug),
        None => Slug::slugify(&body.name),
    }
    .map_err(OrgError::from)?;
    let mut new = NewOrganization::new(body.name, slug);
    new.display_name = body.display_name;
    new.description = body.description;
    new.website = body
        .website
        .as_deref()
        .map(HttpsUrl::parse)
        .transpose()
        .map_err(OrgError::from)?;
    new.legal.country = body
        .country
        .as_deref()
        .map(CountryCode::parse)
        .transpose()
        .map_err(OrgError::from)?;
    new.legal.tax_id = body.tax_id;
    if let Some(metadata) = body.metadata {
        new.metadata =
            Metadata::new(metadata, &service.config().metadata_limits).map_err(OrgError::from)?;
    }
    let org = service.create(&actor(&headers), new).await?;
    Ok(created(&org))
}

async fn get_one(
    State(service): State<OrganizationService>,
    Path(id): Path<String>,
) -> Result<Json<Organization>, Problem> {
    Ok(Json(service.get(parse_id(&id)?).await?))
}

async fn get_by_slug(
    State(service): State<OrganizationService>,
    Path(slug): Path<String>,
) -> Result<Json<Organization>, Problem> {
    let slug = Slug::parse(&slug).map_err(OrgError::from)?;
    Ok(Json(service.get_by_slug(&slug).await?))
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    offset: Option<u64>,
    #[serde(default)]
    count: bool,
}

async fn search(
    State(service): State<OrganizationService>,
    query: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(params) =
        query.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "validation", e.body_text()))?;
    let (text, limit) = (params.q.as_deref(), params.limit.unwrap_or(20));
    let page = match (params.cursor.as_deref(), params.offset) {
        (Some(_), Some(_)) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "validation",
                "give a cursor or an offset, not both",
            ));
        }
        (cursor, None) => service.search(text, limit, cursor, params.count).await?,
        (None, Some(offset)) => {
            service
                .search_offset(text, offset, limit, params.count)
                .await?
        }
    };
    Ok(Json(json!({
        "items": page.items,
        "next_cursor": page.next_cursor,
        "next_offset": page.next_offset,
        "total": page.total,
    })))
}

/// What `PATCH /organizations/{id}` takes: the version read, and what to change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    version: i64,
    name: Option<String>,
    display_name: Option<String>,
    logo_url: Option<String>,
    primary_color: Option<String>,
    secondary_color: Option<String>,
    metadata: Option<Value>,
}

async fn load_at(
    service: &OrganizationService,
    id: &str,
    version: i64,
) -> Result<Organization, Problem> {
    let org = service.get(parse_id(id)?).await?;
    if org.version() != version {
        return Err(OrgError::Conflict {
            id: org.id().to_string(),
            expected: version,
            actual: org.version(),
        }
        .into());
    }
    Ok(org)
}

async fn update(
    State(service): State<OrganizationService>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<UpdateBody>,
) -> Result<Json<Organization>, Problem> {
    let mut org = load_at(&service, &id, body.version).await?;
    if body.name.is_some() || body.display_name.is_some() {
        let name = body.name.clone().unwrap_or_else(|| org.name().to_owned());
        org.rename(&name, body.display_name.clone())?;
    }
    if body.logo_url.is_some() || body.primary_color.is_some() || body.secondary_color.is_some() {
        let color = |c: &Option<String>| c.as_deref().map(Color::parse).transpose();
        org.update_branding(Branding {
            logo_url: body
                .logo_url
                .as_deref()
                .map(HttpsUrl::parse)
                .transpose()
                .map_err(OrgError::from)?,
            primary_color: color(&body.primary_color)?,
            secondary_color: color(&body.secondary_color)?,
        })?;
    }
    if let Some(patch) = &body.metadata {
        org.merge_metadata(patch, &service.config().metadata_limits)?;
    }
    Ok(Json(service.save(&actor(&headers), org).await?))
}

/// What the lifecycle endpoints take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleBody {
    version: i64,
    reason: Option<String>,
    #[serde(default)]
    documents: Vec<String>,
}

async fn lifecycle(
    State(service): State<OrganizationService>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body<LifecycleBody>,
) -> Result<Json<Organization>, Problem> {
    let actor = actor(&headers);
    if action == "restore" {
        return Ok(Json(
            service
                .restore(&actor, parse_id(&id)?, body.version)
                .await?,
        ));
    }
    let mut org = load_at(&service, &id, body.version).await?;
    match action.as_str() {
        "verify" => org.verify(body.documents)?,
        "activate" => org.activate()?,
        "suspend" => org.suspend(body.reason.as_deref().unwrap_or_default())?,
        "archive" => org.archive()?,
        other => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {other:?}: use verify, activate, suspend, archive or restore"),
            ));
        }
    }
    Ok(Json(service.save(&actor, org).await?))
}

#[derive(Debug, Deserialize)]
struct VersionParam {
    version: i64,
}

async fn delete(
    State(service): State<OrganizationService>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<VersionParam>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, Problem> {
    let Query(params) =
        query.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "validation", e.body_text()))?;
    service
        .delete(&actor(&headers), parse_id(&id)?, params.version)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
