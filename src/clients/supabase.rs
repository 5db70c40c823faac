//! Writes to Supabase's Data API (PostgREST): idempotent upserts and PATCHes, one HTTP request
//! per outbox row, with the error classified for the delivery worker's retry policy.
//!
//! Follows `shared/reference/supabase-rest.md` (§1 headers, §2 writes, §4 errors, §5 retries),
//! from <https://docs.postgrest.org/en/stable/references/api/tables_views.html> and
//! <https://supabase.com/docs/guides/api/api-keys>.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;

/// Per-request limit (reference §5: ~10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Sent on every request: Supabase refuses secret keys from browser-like user agents (§1).
const USER_AGENT: &str = concat!("callbridge/", env!("CARGO_PKG_VERSION"));
/// Most of an error body kept for logs and the parked row (bytes).
const MAX_ERROR_TEXT: usize = 1_000;

/// The elevated key, which decides the auth headers (reference §1).
#[derive(Clone)]
pub enum ServiceKey {
    /// New secret key (`sb_secret_…`): sent in `apikey` only; it is not a JWT.
    Secret(String),
    /// Legacy `service_role` JWT (`eyJ…`): sent in both `apikey` and `Authorization: Bearer`.
    Jwt(String),
}

impl ServiceKey {
    /// Classifies a key by its prefix: `sb_secret_` is a secret key, anything else a JWT.
    pub fn parse(key: &str) -> Self {
        if key.starts_with("sb_secret_") { Self::Secret(key.to_owned()) } else { Self::Jwt(key.to_owned()) }
    }
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Secret(_) => "ServiceKey::Secret(<redacted>)",
            Self::Jwt(_) => "ServiceKey::Jwt(<redacted>)",
        })
    }
}

/// HTTP method of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Insert or upsert (`POST /<table>`).
    Post,
    /// Update rows matched by the query's filter (`PATCH /<table>?col=eq.v`).
    Patch,
}

impl Method {
    /// `POST` or `PATCH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Patch => "PATCH",
        }
    }

    /// Parses [`Method::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "POST" => Some(Self::Post),
            "PATCH" => Some(Self::Patch),
            _ => None,
        }
    }
}

/// One write: `method /<table>?<query>` with `Prefer: <prefer>` and a JSON body.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// POST or PATCH.
    pub method: Method,
    /// Table name (a path segment under the REST base).
    pub table: &'a str,
    /// Query string without `?`, already percent-encoded (`on_conflict=call_sid`, `id=eq.42`).
    pub query: &'a str,
    /// `Prefer` header value.
    pub prefer: &'a str,
    /// JSON object or array.
    pub body: &'a str,
}

/// What a successful write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// HTTP status (201 inserted, 200 merged, 204 patched).
    pub status: u16,
    /// A PATCH answered `Content-Range: */*`: no row matched its filter (still 204, §2).
    pub matched_nothing: bool,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Non-2xx answer. `code` is PostgREST's (`PGRST…` or a SQLSTATE) when the body had one.
    #[error("HTTP {status} {code}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// PostgREST error code, or empty.
        code: String,
        /// PostgREST `message`, or the raw body (truncated to 1,000 bytes).
        message: String,
    },
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// Could not connect, or the connection broke.
    #[error("connection failed: {0}")]
    Connect(String),
    /// Any other client-side failure (e.g. a bad URL).
    #[error("request failed: {0}")]
    Other(String),
}

impl WriteError {
    /// Worth retrying (reference §5): network errors, timeouts, 408, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            Self::Timeout | Self::Connect(_) => true,
            Self::Other(_) => false,
        }
    }

    /// A fixed metric label for the failure.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Http { status: 408, .. } => "http_408",
            Self::Http { status: 429, .. } => "http_429",
            Self::Http { status, .. } if *status >= 500 => "http_5xx",
            Self::Http { .. } => "http_4xx",
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::Other(_) => "other",
        }
    }

    /// HTTP status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// PostgREST's error body (§4); the gateway's may lack fields, so all are optional.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// A PostgREST client for one project.
#[derive(Debug, Clone)]
pub struct Supabase {
    http: reqwest::Client,
    base: String,
}

impl Supabase {
    /// `rest_base` is the Data API root: `https://<ref>.supabase.co/rest/v1` in production, a
    /// local PostgREST-dialect server in tests. Needs a rustls crypto provider installed.
    ///
    /// Errors: the key is not a valid header value, or the HTTP client cannot be built.
    pub fn new(rest_base: &str, key: &ServiceKey, timeout: Duration) -> Result<Self, WriteError> {
        let mut headers = HeaderMap::new();
        let secret = |v: &str| {
            let mut h = HeaderValue::from_str(v)
                .map_err(|_| WriteError::Other("key is not a header value".into()))?;
            h.set_sensitive(true);
            Ok::<_, WriteError>(h)
        };
        match key {
            ServiceKey::Secret(k) => {
                headers.insert("apikey", secret(k)?);
            }
            ServiceKey::Jwt(k) => {
                headers.insert("apikey", secret(k)?);
                headers.insert(reqwest::header::AUTHORIZATION, secret(&format!("Bearer {k}"))?);
            }
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| WriteError::Other(e.to_string()))?;
        Ok(Self { http, base: rest_base.trim_end_matches('/').to_owned() })
    }

    /// Sends one write.
    ///
    /// Errors: see [`WriteError`]; [`WriteError::is_retryable`] says whether to try again.
    pub async fn write(&self, w: Write<'_>) -> Result<Written, WriteError> {
        let mut url = format!("{}/{}", self.base, w.table);
        if !w.query.is_empty() {
            url.push('?');
            url.push_str(w.query);
        }
        let req = match w.method {
            Method::Post => self.http.post(url),
            Method::Patch => self.http.patch(url),
        };
        let resp = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Prefer", w.prefer)
            .body(w.body.to_owned())
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            let matched_nothing = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("*/"));
            return Ok(Written { status, matched_nothing });
        }
        let text = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (
                b.code.unwrap_or_default(),
                b.message.unwrap_or_else(|| super::truncate(&text, MAX_ERROR_TEXT)),
            ),
            Err(_) => (String::new(), super::truncate(&text, MAX_ERROR_TEXT)),
        };
        Err(WriteError::Http { status, code, message })
    }
}

fn classify(e: reqwest::Error) -> WriteError {
    if e.is_timeout() {
        WriteError::Timeout
    } else if e.is_connect() || e.is_request() || e.is_body() {
        WriteError::Connect(e.to_string())
    } else {
        WriteError::Other(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_told_apart_by_prefix() {
        assert!(matches!(ServiceKey::parse("sb_secret_abc"), ServiceKey::Secret(_)));
        assert!(matches!(ServiceKey::parse("eyJhbGciOi.fake.jwt"), ServiceKey::Jwt(_)));
        assert_eq!(format!("{:?}", ServiceKey::parse("sb_secret_abc")), "ServiceKey::Secret(<redacted>)");
    }

    #[test]
    fn retry_policy_follows_the_reference() {
        let http = |status| WriteError::Http { status, code: String::new(), message: String::new() };
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(http(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 406, 409, 422] {
            assert!(!http(s).is_retryable(), "{s}");
        }
        assert!(WriteError::Timeout.is_retryable());
        assert!(WriteError::Connect("reset".into()).is_retryable());
        assert!(!WriteError::Other("bad url".into()).is_retryable());
        assert_eq!(http(503).label(), "http_5xx");
        assert_eq!(http(400).label(), "http_4xx");
    }

    #[test]
    fn error_text_is_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_ERROR_TEXT);
        let t = crate::clients::truncate(&s, MAX_ERROR_TEXT);
        assert!(t.len() <= MAX_ERROR_TEXT && t.chars().all(|c| c == 'é'));
    }
}
