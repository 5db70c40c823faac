//! A local stand-in for OpenAI's Chat Completions endpoint (`POST /v1/chat/completions`), for
//! the post-call summary in tests and the demo.
//!
//! It checks what the real API would reject (bearer token, `model`, `messages`, a
//! `json_schema` response format with a schema when one is given) and answers in the
//! documented `chat.completion` shape
//! (<https://platform.openai.com/docs/api-reference/chat/object>): for a structured request, a
//! JSON message that follows the schema (the outcome from keywords in the transcript, the
//! summary quoting the caller's first line); for a plain one (`consult`), [`CONSULT_ANSWER`].
//! It can be told to fail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Start of the simulator's answer to a plain (unstructured) chat request.
pub const CONSULT_ANSWER: &str = "The warranty covers two years of parts and labour.";

/// Shared state of a running simulator.
#[derive(Default)]
struct Inner {
    requests: AtomicUsize,
    fail_next: AtomicUsize,
    ids: AtomicU64,
}

/// A running chat simulator; stops when dropped.
pub struct ChatSim {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl ChatSim {
    /// Starts on `bind` (use port 0 for a free one).
    ///
    /// Errors: the address cannot be bound.
    pub async fn start(bind: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::default());
        let app = Router::new().route("/v1/chat/completions", post(completions)).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner, task })
    }

    /// The API base to configure (`http://127.0.0.1:<port>/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests answered so far (including failed ones).
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The next `n` requests get a 500 `server_error`.
    pub fn fail_next(&self, n: usize) {
        self.inner.fail_next.store(n, Ordering::Relaxed);
    }
}

impl Drop for ChatSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    (status, Json(body)).into_response()
}

async fn completions(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    inner.requests.fetch_add(1, Ordering::Relaxed);
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !bearer.starts_with("Bearer ") || bearer.len() <= "Bearer ".len() {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You didn't provide an API key.",
        );
    }
    if inner.fail_next.load(Ordering::Relaxed) > 0 {
        inner.fail_next.fetch_sub(1, Ordering::Relaxed);
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "The server had an error.");
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "We could not parse the JSON body.",
        );
    };
    let Some(model) = req["model"].as_str() else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "you must provide a model parameter",
        );
    };
    let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "messages must be a non-empty array",
        );
    };
    let format = &req["response_format"];
    let structured = !format.is_null();
    if structured && (format["type"] != "json_schema" || !format["json_schema"]["schema"].is_object()) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "expected a json_schema response_format",
        );
    }
    let transcript: String = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let content = if structured {
        json!({"summary": summary_of(&transcript), "outcome": outcome_of(&transcript)}).to_string()
    } else {
        // A plain question (the `consult` tool): a fixed, recognisable answer.
        format!("{CONSULT_ANSWER} ({} question bytes)", transcript.len())
    };
    let id = inner.ids.fetch_add(1, Ordering::Relaxed);
    let created =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let tokens = (transcript.len() / 4) as u64;
    Json(json!({
        "id": format!("chatcmpl-sim{id:08}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": tokens, "completion_tokens": 30, "total_tokens": tokens + 30},
        "service_tier": "default",
        "system_fingerprint": "fp_sim",
    }))
    .into_response()
}

/// Keyword rules standing in for the model's judgement (order matters: "not interested"
/// before "interested").
fn outcome_of(transcript: &str) -> &'static str {
    let caller: String = transcript
        .lines()
        .filter_map(|l| l.strip_prefix("Caller: "))
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| caller.contains(w));
    if caller.trim().is_empty() {
        "no_answer"
    } else if has(&["not interested", "no thanks", "don't call"]) {
        "not_interested"
    } else if has(&["call me back", "call back", "later", "tomorrow"]) {
        "callback"
    } else if has(&["leave a message", "voicemail", "after the tone"]) {
        "voicemail"
    } else if has(&["interested", "sounds good", "yes", "sign me up", "book"]) {
        "interested"
    } else {
        "unknown"
    }
}

fn summary_of(transcript: &str) -> String {
    match transcript.lines().find_map(|l| l.strip_prefix("Caller: ")) {
        Some(first) => format!("The caller said: \"{first}\". The agent answered."),
        None => "Nobody spoke on the call.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_caller_not_the_agent() {
        assert_eq!(
            outcome_of("Agent: are you interested?\nCaller: not interested, thanks"),
            "not_interested"
        );
        assert_eq!(outcome_of("Caller: please call me back tomorrow"), "callback");
        assert_eq!(outcome_of("Caller: yes, sounds good"), "interested");
        assert_eq!(outcome_of("Agent: hello?"), "no_answer");
        assert_eq!(outcome_of("Caller: what is the weather"), "unknown");
    }
}
