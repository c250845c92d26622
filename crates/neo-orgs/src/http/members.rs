//! Memberships and invitations as JSON endpoints, with the same problem details; merge
//! [`members_router`] with [`router`](super::router).
//!
//! | Method and path | Does |
//! |---|---|
//! | `GET /organizations/{id}/members?limit=&cursor=` | the members, a keyset page |
//! | `PUT /organizations/{id}/members/{user}` | add or change a role (`{role}`) → 204 |
//! | `DELETE /organizations/{id}/members/{user}` | remove → 204 |
//! | `GET /organizations/{id}/members/{user}/can/{permission}` | `{allowed}` (cached) |
//! | `GET /users/{user}/organizations?limit=&cursor=` | a user's organizations, a keyset page |
//! | `POST /organizations/{id}/invitations` | invite (`{email, role}`) → 201 `{invitation, token}` |
//! | `GET /invitations/{id}` | an invitation |
//! | `POST /invitations/{id}/revoke` | revoke |
//! | `POST /invitations/{id}/resend` | a new token and expiry → `{invitation, token}` |
//! | `POST /invitations/accept` | accept (`{token, user}`) → the invitation |

use super::{Body, Problem, actor, parse_id};
use crate::{Invitation, InvitationToken, Memberships, OrgError};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use neo_core::{EmailAddress, UserId};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

/// The membership and invitation routes; merge them with [`router`](super::router) (which
/// holds the fallbacks).
///
/// # Example
/// ```no_run
/// # async fn demo(orgs: neo_orgs::OrganizationService, members: neo_orgs::Memberships) {
/// let app = neo_orgs::http::router(orgs).merge(neo_orgs::http::members_router(members));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
/// axum::serve(listener, app).await.unwrap();
/// # }
/// ```
pub fn members_router(members: Memberships) -> axum::Router {
    axum::Router::new()
        .route("/organizations/{id}/members", get(list_members))
        .route(
            "/organizations/{id}/members/{user}",
            put(put_member).delete(delete_member),
        )
        .route(
            "/organizations/{id}/members/{user}/can/{permission}",
            get(can),
        )
        .route("/users/{user}/organizations", get(organizations_of))
        .route("/organizations/{id}/invitations", post(invite))
        .route("/invitations/accept", post(accept))
        .route("/invitations/{id}", get(invitation))
        .route("/invitations/{id}/{action}", post(invitation_action))
        .layer(axum::extract::DefaultBodyLimit::max(super::MAX_BODY_BYTES))
        .with_state(members)
}

fn bad(what: &str, e: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "validation",
        format!("{what}: {e}"),
    )
}

fn parse_user(text: &str) -> Result<UserId, Problem> {
    text.parse::<UserId>().map_err(|e| bad("user", e))
}

fn parse_invitation(text: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(text).map_err(|e| bad("invitation", e))
}

/// A page request's query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_members(
    State(members): State<Memberships>,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Response, Problem> {
    let page = members
        .members(
            parse_id(&id)?,
            page.cursor.as_deref(),
            page.limit.unwrap_or(50),
        )
        .await?;
    Ok(Json(page).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: String,
}

async fn put_member(
    State(members): State<Memberships>,
    Path((id, user)): Path<(String, String)>,
    Body(body): Body<RoleBody>,
) -> Result<StatusCode, Problem> {
    members
        .add(parse_id(&id)?, parse_user(&user)?, &body.role)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_member(
    State(members): State<Memberships>,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    members.remove(parse_id(&id)?, parse_user(&user)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn can(
    State(members): State<Memberships>,
    Path((id, user, permission)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    let allowed = members
        .can(parse_user(&user)?, parse_id(&id)?, &permission)
        .await?;
    Ok(Json(json!({ "allowed": allowed })).into_response())
}

async fn organizations_of(
    State(members): State<Memberships>,
    Path(user): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Response, Problem> {
    let page = members
        .organizations_of(
            parse_user(&user)?,
            page.cursor.as_deref(),
            page.limit.unwrap_or(50),
        )
        .await?;
    Ok(Json(page).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    email: String,
    role: String,
}

fn with_token(status: StatusCode, invitation: &Invitation, token: &InvitationToken) -> Response {
    (
        status,
        Json(json!({ "invitation": invitation, "token": token.expose() })),
    )
        .into_response()
}

async fn invite(
    State(members): State<Memberships>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<InviteBody>,
) -> Result<Response, Problem> {
    let email = EmailAddress::parse(&body.email).map_err(OrgError::from)?;
    let (invitation, token) = members
        .invite(&actor(&headers), parse_id(&id)?, &email, &body.role)
        .await?;
    Ok(with_token(StatusCode::CREATED, &invitation, &token))
}

async fn invitation(
    State(members): State<Memberships>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    Ok(Json(members.invitation(parse_invitation(&id)?).await?).into_response())
}

async fn invitation_action(
    State(members): State<Memberships>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let id = parse_invitation(&id)?;
    match action.as_str() {
        "revoke" => Ok(Json(members.revoke(id).await?).into_response()),
        "resend" => {
            let (invitation, token) = members.resend(id).await?;
            Ok(with_token(StatusCode::OK, &invitation, &token))
        }
        other => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no invitation action {:?}; revoke or resend",
                other.chars().take(64).collect::<String>()
            ),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    token: String,
    user: String,
}

async fn accept(
    State(members): State<Memberships>,
    Body(body): Body<AcceptBody>,
) -> Result<Response, Problem> {
    let user = parse_user(&body.user)?;
    Ok(Json(members.accept(&body.token, user).await?).into_response())
}
