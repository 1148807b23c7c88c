//! Which node serves a request, in a cluster: a middleware in front of every route.
//!
//! A request about one session (its `connectUrl` websocket, a release, its files, logs,
//! recording, debug links and inspector) goes to the node whose browser runs it; a create
//! goes to another node when this one has no room. Everything else (lists, reads of rows,
//! contexts, projects) is answered here from the shared store. With the embedded database
//! every request is served here.

use super::AppState;
use crate::cluster::Owner;
use crate::cluster::forward::{CLUSTER_AUTH, FORWARDED_BY, forward};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use uuid::Uuid;

/// The middleware: forwards to the owner, or passes the request on to the routes.
pub(super) async fn route_to_owner(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    // The Stagehand API's clients send the user's language-model key; browserd has no use
    // for it, and it must not reach a log, the store or another node.
    req.headers_mut().remove(MODEL_API_KEY);
    // Forwarded once at most, and only by a node: a request that says it was forwarded
    // counts as such only with the cluster's credential, or anyone could make a node act
    // on a session it does not run (and answer as if it had). Without it the headers are
    // dropped and the request is routed like any other (a node of an older version, or a
    // clock more than a minute off, is then forwarded again, never refused).
    if req.headers().contains_key(FORWARDED_BY) {
        if forwarded_by_a_node(&state, &req) {
            // Its clients were counted by their own addresses where they entered.
            if let Some(place) = req
                .extensions()
                .get::<crate::http_server::ConnectionPlace>()
            {
                place.not_by_address();
            }
            return next.run(req).await;
        }
        tracing::debug!(
            "a request said it was forwarded without the cluster's credential: routed as any other"
        );
        req.headers_mut().remove(FORWARDED_BY);
        req.headers_mut().remove(CLUSTER_AUTH);
    }
    // With one node there is nowhere else.
    if !state.cluster.is_shared() {
        return next.run(req).await;
    }
    let (req, target) = match target_of(&state, req).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    // An API request that may be forwarded is checked here first: nothing unauthenticated
    // leaves this node (the owner checks again, with the session's project).
    if req.uri().path().starts_with("/v1/")
        && !matches!(target, Target::Here)
        && let Err(e) = super::Auth::from_headers(req.headers(), &state).await
    {
        return e.into_response();
    }
    let node = match &target {
        Target::Session(id) if state.sessions.is_live(*id) => None,
        Target::Session(id) => match state.cluster.owner(*id).await {
            Ok(Owner::Elsewhere(node)) => Some(node),
            Ok(Owner::Here) => None,
            Ok(Owner::Down(node)) => {
                return super::error::ApiError::NodeDown(format!(
                    "the browserd node running this session ({node}) is not running; its keepAlive sessions come back when it does, else the cluster ends them within its lease"
                ))
                .into_response();
            }
            Err(e) => return super::error::ApiError::from(e).into_response(),
        },
        Target::Create if state.sessions.has_room() => None,
        Target::Create => match state.cluster.place_elsewhere().await {
            Ok(node) => node,
            Err(e) => return super::error::ApiError::from(e).into_response(),
        },
        Target::Here => None,
    };
    let Some(node) = node else {
        return next.run(req).await;
    };
    let lost = match target {
        Target::Session(session) => Some(state.cluster.lost_notice(session)),
        _ => None,
    };
    forward(
        req,
        &node.name,
        &node.url,
        state.cluster.name(),
        &state.secret,
        lost,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// Whether `req`'s forwarding headers were made by a node of this cluster, for this very
/// request, lately.
fn forwarded_by_a_node(state: &AppState, req: &Request) -> bool {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let (Some(node), Some(credential)) = (header(FORWARDED_BY), header(CLUSTER_AUTH)) else {
        return false;
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let hop = crate::secrets::Hop {
        from: node,
        to: state.cluster.name(),
    };
    state.secret.verify_cluster_credential(
        credential,
        hop,
        crate::model::now().unix_timestamp(),
        req.method().as_str(),
        path,
    )
}

/// The header Stagehand's clients carry the user's model key in.
const MODEL_API_KEY: &str = "x-model-api-key";

enum Target {
    /// About one session: served by its node.
    Session(Uuid),
    /// A new session: here if there is room.
    Create,
    Here,
}

/// What `req` is about. A create's body is read to tell it from the raw-API release form
/// (`sessionId` in the body), and put back.
async fn target_of(state: &AppState, req: Request) -> Result<(Request, Target), Response> {
    let path = req.uri().path();
    let target = if path == "/" || path.starts_with("/json/version") {
        // The connect handler's own check, so nothing unauthenticated is forwarded; a
        // refusal is the handler's to give, here.
        let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(req.uri())
            .map(|q| q.0)
            .unwrap_or_default();
        super::connect::authenticate(state, &query).await.ok()
    } else if path.starts_with("/webdriver/session") {
        // WebDriver names its session in headers; checked here as the handler checks them.
        super::webdriver::authenticate(state, req.headers())
            .await
            .ok()
    } else if let Some(rest) = path.strip_prefix("/debug/") {
        let token = rest.split('/').next().unwrap_or_default();
        state.secret.verify_grant(token).map(|g| g.session)
    } else if let Some(rest) = path
        .strip_prefix("/v1/sessions/")
        .filter(|rest| *rest != "start")
    {
        let mut parts = rest.splitn(2, '/');
        let id = parts.next().and_then(|id| Uuid::try_parse(id).ok());
        // Reading a row needs no owner; acting on the session (release) and its files do.
        let acts = parts.next().is_some() || req.method() != Method::GET;
        id.filter(|_| acts)
    } else if path == "/v1/sessions" && req.method() == Method::POST {
        return create_or_release(req).await;
    } else if path == "/v1/sessions/start" && req.method() == Method::POST {
        return stagehand_start(req).await;
    } else {
        None
    };
    Ok((req, target.map_or(Target::Here, Target::Session)))
}

/// `POST /v1/sessions`: a release (raw-API form, `sessionId` in the body) goes to the
/// session's node; a create is placed.
async fn create_or_release(req: Request) -> Result<(Request, Target), Response> {
    let (req, body) = peek_json(req).await?;
    let release_of = body
        .filter(|v| v.get("status").is_some())
        .and_then(|v| v.get("sessionId")?.as_str().map(str::to_owned))
        .and_then(|id| Uuid::try_parse(&id).ok());
    Ok((req, release_of.map_or(Target::Create, Target::Session)))
}

/// `POST /v1/sessions/start` (the Stagehand API's): a resume (`browserbaseSessionID`) is
/// answered here from the store; a create is placed like `POST /v1/sessions`'s.
async fn stagehand_start(req: Request) -> Result<(Request, Target), Response> {
    let (req, body) = peek_json(req).await?;
    let resumes = body.is_some_and(|v| {
        v.get("browserbaseSessionID")
            .is_some_and(|id| id.is_string())
    });
    Ok((
        req,
        if resumes {
            Target::Here
        } else {
            Target::Create
        },
    ))
}

/// Reads a request's JSON body (`None` if it is not JSON) and puts it back.
async fn peek_json(req: Request) -> Result<(Request, Option<serde_json::Value>), Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, super::MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            super::error::ApiError::PayloadTooLarge(format!(
                "the request body must be at most {} bytes",
                super::MAX_BODY_BYTES
            ))
            .into_response()
        })?;
    let value = serde_json::from_slice(&bytes).ok();
    Ok((Request::from_parts(parts, Body::from(bytes)), value))
}
