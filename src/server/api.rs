//! The `/v1` API for call workers and operators, behind `Authorization: Bearer <API_TOKEN>`
//! (constant-time compare). Reads come from the local store.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/calls?limit=&before=` | `{"calls":[…], "next_before": cursor \| null}`, newest first; `limit` 1–200 (default 50); `before` a unix-ms time or the previous page's `next_before` |
//! | `GET /v1/calls/{call_sid}` | the record with `turns` (by speech start), `timeline`, and undelivered `outbox` rows (pending or parked) |
//!
//! Errors: 401 without a valid token (or with no `API_TOKEN` configured), 400 for bad query
//! values, 404 for an unknown call, 503 when the store is off or failing. Error bodies are
//! `{"error": "..."}`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use serde::Deserialize;
use tracing::{error, warn};

use crate::auth;
use crate::metrics as m;
use crate::store::{Cursor, StoreReader};

/// Default page size of `GET /v1/calls`.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size of `GET /v1/calls`.
pub const MAX_LIMIT: usize = 200;

/// What the `/v1` routes need.
#[derive(Clone, Default)]
pub struct ApiState {
    /// Bearer token; `None` refuses every request.
    pub token: Option<Arc<str>>,
    /// Local store reads; `None` answers 503.
    pub store: Option<StoreReader>,
}

/// The `/v1` routes.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v1/calls", get(list_calls))
        .route("/v1/calls/{call_sid}", get(call_detail))
        .with_state(state)
}

/// The 401 to send, unless the request carries the bearer token.
pub fn unauthorized(token: Option<&str>, headers: &HeaderMap) -> Option<Response> {
    let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match token {
        Some(expected) if auth::bearer_matches(presented, expected) => None,
        _ => {
            warn!(token_configured = token.is_some(), presented = presented.is_some(), "/v1 request refused");
            m::api_refused("unauthorized");
            Some(error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
        }
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": msg }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    r
}

fn store_failed(e: impl std::fmt::Display) -> Response {
    error!(error = %e, "/v1 store read failed");
    m::store_error("read");
    error(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
}

async fn list_calls(State(st): State<ApiState>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    if let Some(r) = unauthorized(st.token.as_deref(), &headers) {
        return r;
    }
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be an integer from 1 to 200"),
    };
    let before = match q.before.as_deref().map(Cursor::parse) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "before must be a unix time in ms or a next_before cursor",
            );
        }
    };
    let Some(store) = &st.store else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "store disabled");
    };
    match store.list_calls(limit, before).await {
        Ok(calls) => {
            let next_before = if calls.len() == limit { calls.last().map(Cursor::after) } else { None };
            Json(serde_json::json!({ "calls": calls, "next_before": next_before })).into_response()
        }
        Err(e) => store_failed(e),
    }
}

async fn call_detail(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(call_sid): Path<String>,
) -> Response {
    if let Some(r) = unauthorized(st.token.as_deref(), &headers) {
        return r;
    }
    let Some(store) = &st.store else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "store disabled");
    };
    match store.call_detail(call_sid).await {
        Ok(Some(detail)) => Json(detail).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such call"),
        Err(e) => store_failed(e),
    }
}
