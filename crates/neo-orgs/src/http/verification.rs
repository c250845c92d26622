//! Domain verification by DNS and organization verification as JSON endpoints, with the
//! same problem details; merge [`verification_router`] with [`router`](super::router).
//!
//! | Method and path | Does |
//! |---|---|
//! | `POST /organizations/{id}/domain-claims` | claim (`{domain}`) → 201 `{claim, txt_record}` |
//! | `GET /organizations/{id}/domain-claims/{domain}` | the claim |
//! | `POST /organizations/{id}/domain-claims/{domain}/check` | check DNS now → the claim |
//! | `PUT /organizations/{id}/domain-claims/{domain}/auto-join` | `{enabled}` → the claim |
//! | `POST /users/{user}/auto-join` | join by a verified e-mail (`{email}`) → `{joined}` |
//! | `POST /organizations/{id}/verifications` | submit (`{documents: [{id, kind}]}`) → 201 |
//! | `GET /verifications/{id}` | `{verification, history}` |
//! | `POST /verifications/{id}/review` | `submitted` → `in_review` |
//! | `POST /verifications/{id}/decision` | `{verdict: "verified"}` or `{verdict: "rejected", reason}` |

use super::{Body, Problem, actor, parse_id};
use crate::{DomainVerification, OrgError, OrgVerifications, Verdict, VerificationDocument};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use neo_core::{DomainName, EmailAddress, UserId};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

#[derive(Clone)]
struct Verifiers {
    domains: DomainVerification,
    verifications: OrgVerifications,
}

/// The domain claim and verification routes; merge them with [`router`](super::router)
/// (which holds the fallbacks).
///
/// # Example
/// ```no_run
/// # async fn demo(
/// #     orgs: neo_orgs::OrganizationService,
/// #     domains: neo_orgs::DomainVerification,
/// #     verifications: neo_orgs::OrgVerifications,
/// # ) {
/// let app = neo_orgs::http::router(orgs)
///     .merge(neo_orgs::http::verification_router(domains, verifications));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
/// axum::serve(listener, app).await.unwrap();
/// # }
/// ```
pub fn verification_router(
    domains: DomainVerification,
    verifications: OrgVerifications,
) -> axum::Router {
    axum::Router::new()
        .route("/organizations/{id}/domain-claims", post(claim))
        .route("/organizations/{id}/domain-claims/{domain}", get(claim_of))
        .route(
            "/organizations/{id}/domain-claims/{domain}/check",
            post(check),
        )
        .route(
            "/organizations/{id}/domain-claims/{domain}/auto-join",
            put(auto_join),
        )
        .route("/users/{user}/auto-join", post(join))
        .route("/organizations/{id}/verifications", post(submit))
        .route("/verifications/{id}", get(verification))
        .route("/verifications/{id}/review", post(review))
        .route("/verifications/{id}/decision", post(decide))
        .layer(axum::extract::DefaultBodyLimit::max(super::MAX_BODY_BYTES))
        .with_state(Verifiers {
            domains,
            verifications,
        })
}

fn bad(what: &str, e: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "validation",
        format!("{what}: {e}"),
    )
}

fn parse_domain(text: &str) -> Result<DomainName, Problem> {
    DomainName::parse(text).map_err(|e| bad("domain", e))
}

fn parse_verification(text: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(text).map_err(|e| bad("verification", e))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    domain: String,
}

async fn claim(
    State(v): State<Verifiers>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<ClaimBody>,
) -> Result<Response, Problem> {
    let issued = v
        .domains
        .claim(
            &actor(&headers),
            parse_id(&id)?,
            parse_domain(&body.domain)?,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn claim_of(
    State(v): State<Verifiers>,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let claim = v
        .domains
        .claim_of(parse_id(&id)?, &parse_domain(&domain)?)
        .await?;
    Ok(Json(claim).into_response())
}

async fn check(
    State(v): State<Verifiers>,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let claim = v
        .domains
        .check(parse_id(&id)?, &parse_domain(&domain)?)
        .await?;
    Ok(Json(claim).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoJoinBody {
    enabled: bool,
}

async fn auto_join(
    State(v): State<Verifiers>,
    Path((id, domain)): Path<(String, String)>,
    Body(body): Body<AutoJoinBody>,
) -> Result<Response, Problem> {
    let claim = v
        .domains
        .set_auto_join(parse_id(&id)?, &parse_domain(&domain)?, body.enabled)
        .await?;
    Ok(Json(claim).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    email: String,
}

async fn join(
    State(v): State<Verifiers>,
    Path(user): Path<String>,
    Body(body): Body<JoinBody>,
) -> Result<Response, Problem> {
    let user = user.parse::<UserId>().map_err(|e| bad("user", e))?;
    let email = EmailAddress::parse(&body.email).map_err(OrgError::from)?;
    let joined = v.domains.join_by_email(user, &email).await?;
    Ok(Json(json!({ "joined": joined })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    documents: Vec<VerificationDocument>,
}

async fn submit(
    State(v): State<Verifiers>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<SubmitBody>,
) -> Result<Response, Problem> {
    let verification = v
        .verifications
        .submit(&actor(&headers), parse_id(&id)?, body.documents)
        .await?;
    Ok((StatusCode::CREATED, Json(verification)).into_response())
}

async fn verification(
    State(v): State<Verifiers>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_verification(&id)?;
    let verification = v.verifications.get(id).await?;
    let history = v.verifications.history(id).await?;
    Ok(Json(json!({ "verification": verification, "history": history })).into_response())
}

async fn review(
    State(v): State<Verifiers>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let verification = v
        .verifications
        .start_review(&actor(&headers), parse_verification(&id)?)
        .await?;
    Ok(Json(verification).into_response())
}

async fn decide(
    State(v): State<Verifiers>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(verdict): Body<Verdict>,
) -> Result<Response, Problem> {
    let verification = v
        .verifications
        .decide(&actor(&headers), parse_verification(&id)?, &verdict)
        .await?;
    Ok(Json(verification).into_response())
}
