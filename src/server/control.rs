//! Call control: the providers' voice webhooks, status callbacks, outbound calls for call
//! workers, and the checks on media-stream upgrades.
//!
//! | route | what |
//! |---|---|
//! | `POST /twiml` | Twilio voice webhook (signed): `<Connect><Stream>` to `/media/twilio` with the call's context and a single-use stream token |
//! | `POST /twiml/signalwire` | the same for SignalWire (cXML, `authBearerToken` on the stream) |
//! | `POST /twilio/status`, `POST /signalwire/status` | call-status and AMD callbacks (signed) → the call record |
//! | `POST /v1/calls` | bearer token: create an outbound call through the provider's REST API |
//!
//! Signatures are checked against [`Control::public_url`] plus the request's path and query, as
//! the provider saw them (reference §7). A bad or missing signature is 403, logged and counted.
//! When the server is full or draining, the webhook still answers 200 with a polite `<Say>` and
//! `<Hangup>`, so the caller hears why instead of a carrier error.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use dashmap::DashMap;
use serde::Deserialize;
use tracing::{info, warn};

use crate::auth;
use crate::clients::telephony_rest::{
    Amd, CallEvent as RestEvent, CallInstructions, CreateCall, MachineDetection, TelephonyRest,
};
use crate::core::telephony::Dialect;
use crate::core::telephony::twiml;
use crate::driver::{CallNote, OutboundCall, STREAM_TOKEN_PARAM, Shared};
use crate::metrics as m;
use crate::server::log_throttle::LogThrottle;
use crate::store::record::CallStatus;

/// Spoken when the server cannot take the call.
pub const BUSY_MESSAGE: &str =
    "Sorry, all of our agents are busy right now. Please call again later. Goodbye.";

/// Everything the control routes and the upgrade check need.
pub struct Control {
    /// Public base URL (`https://bridge.example.com`), no trailing slash.
    pub public_url: Option<String>,
    /// Check signatures (off only with `TWILIO_VALIDATE_SIGNATURE=false`).
    pub validate: bool,
    /// Twilio auth token (webhook and upgrade signatures).
    pub twilio_auth_token: Option<String>,
    /// SignalWire signing key (webhook signatures).
    pub signalwire_signing_key: Option<String>,
    /// Secret put in SignalWire's `authBearerToken`, checked on its upgrades.
    pub media_bearer: String,
    /// Twilio REST API, if configured.
    pub twilio_rest: Option<TelephonyRest>,
    /// SignalWire REST API, if configured.
    pub signalwire_rest: Option<TelephonyRest>,
    /// AMD on outbound calls.
    pub machine_detection: Option<MachineDetection>,
    /// Per-IP budget of media upgrades.
    pub limiter: UpgradeLimiter,
    /// Trusted header with the client IP (behind a proxy).
    pub client_ip_header: Option<HeaderName>,
    /// Bearer token of `/v1`.
    pub api_token: Option<Arc<str>>,
    /// Admission state, stream tokens and the store channel.
    pub shared: Arc<Shared>,
}

/// The Twilio and SignalWire REST clients the settings configure.
///
/// Errors: a bad base URL or credentials.
pub fn rest_clients(
    s: &crate::config::ControlSettings,
) -> Result<(Option<TelephonyRest>, Option<TelephonyRest>), crate::clients::telephony_rest::RestError> {
    let twilio = match &s.twilio {
        Some((sid, token)) => Some(TelephonyRest::twilio(sid, token, &s.twilio_api_base)?),
        None => None,
    };
    let signalwire = match &s.signalwire_rest {
        Some((space, project, token)) => Some(TelephonyRest::signalwire(space, project, token)?),
        None => None,
    };
    Ok((twilio, signalwire))
}

/// Fixed-window counter of upgrades per client IP.
pub struct UpgradeLimiter {
    per_minute: u32,
    windows: DashMap<IpAddr, (Instant, u32)>,
}

/// Entries kept before stale windows are swept.
const LIMITER_SWEEP_AT: usize = 10_000;

impl UpgradeLimiter {
    /// Allows `per_minute` upgrades per IP per minute (0 = unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, windows: DashMap::new() }
    }

    /// Counts an upgrade from `ip`; false when over budget.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        if self.windows.len() >= LIMITER_SWEEP_AT {
            self.windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let mut w = self.windows.entry(ip).or_insert((now, 0));
        if now.duration_since(w.0) >= Duration::from_secs(60) {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1 <= self.per_minute
    }
}

impl Control {
    /// The control state as configured ([`crate::config::ControlSettings`]), with the REST
    /// clients from [`rest_clients`].
    pub fn from_settings(
        s: &crate::config::ControlSettings,
        api_token: Option<Arc<str>>,
        shared: Arc<Shared>,
        (twilio_rest, signalwire_rest): (Option<TelephonyRest>, Option<TelephonyRest>),
    ) -> Self {
        Self {
            public_url: s.public_url.clone(),
            validate: s.validate_signatures,
            twilio_auth_token: s.twilio_auth_token.clone(),
            signalwire_signing_key: s.signalwire_signing_key.clone(),
            media_bearer: media_bearer(&s.stream_token_key),
            twilio_rest,
            signalwire_rest,
            machine_detection: match s.machine_detection.as_deref() {
                Some("enable") => Some(MachineDetection::Enable),
                Some("detect_message_end") => Some(MachineDetection::DetectMessageEnd),
                _ => None,
            },
            limiter: UpgradeLimiter::new(s.upgrades_per_ip_per_minute),
            client_ip_header: s.client_ip_header.as_deref().and_then(|h| HeaderName::try_from(h).ok()),
            api_token,
            shared,
        }
    }

    /// `ws(s)://host/media/<provider>`: the stream URL written into the TwiML, and the URL a
    /// Twilio upgrade signature covers.
    pub fn stream_url(&self, dialect: Dialect) -> Option<String> {
        let base = self.public_url.as_deref()?;
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", base.strip_prefix("http://").unwrap_or(base))
        };
        Some(format!("{ws}/media/{}", dialect.name()))
    }

    /// The refusal of a media upgrade that is over its IP's budget (429) or not signed by the
    /// provider (403), if it is. Runs before a call slot is taken.
    pub fn refuse_upgrade(
        &self,
        dialect: Dialect,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Option<Response> {
        let ip = self.client_ip(headers, peer);
        if !self.limiter.allow(ip, Instant::now()) {
            static LOG: LogThrottle = LogThrottle::new();
            if let Some(skipped) = LOG.admit() {
                warn!(%ip, skipped, "media upgrade over the per-IP budget");
            }
            m::stream_refused("rate_limited");
            return Some(
                (StatusCode::TOO_MANY_REQUESTS, "too many streams from this address").into_response(),
            );
        }
        if !self.validate {
            return None;
        }
        let ok = match dialect {
            Dialect::Twilio => {
                let sig = headers.get(auth::TWILIO_SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
                match (&self.twilio_auth_token, self.stream_url(dialect), sig) {
                    (Some(token), Some(url), Some(sig)) => auth::validate_twilio_stream(token, &url, sig),
                    _ => false,
                }
            }
            Dialect::SignalWire => {
                let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                auth::bearer_matches(presented, &self.media_bearer)
            }
        };
        if ok {
            return None;
        }
        static LOG: LogThrottle = LogThrottle::new();
        if let Some(skipped) = LOG.admit() {
            warn!(%ip, provider = dialect.name(), skipped, "media upgrade without a valid signature");
        }
        m::stream_refused("bad_signature");
        Some((StatusCode::FORBIDDEN, "stream not authorized").into_response())
    }

    fn client_ip(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        self.client_ip_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(peer.ip())
    }

    /// Checks a webhook's signature over `PUBLIC_URL` + path + query and its form parameters.
    fn webhook_signed(
        &self,
        dialect: Dialect,
        uri: &Uri,
        headers: &HeaderMap,
        form: &[(String, String)],
    ) -> bool {
        if !self.validate {
            return true;
        }
        let Some(base) = &self.public_url else { return false };
        let url = format!("{base}{}", uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()));
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match dialect {
            Dialect::Twilio => match (&self.twilio_auth_token, header(auth::TWILIO_SIGNATURE_HEADER)) {
                (Some(token), Some(sig)) => auth::validate_twilio(token, &url, form, sig),
                _ => false,
            },
            Dialect::SignalWire => {
                let sig = header(auth::SIGNALWIRE_SIGNATURE_HEADER)
                    .or_else(|| header(auth::TWILIO_SIGNATURE_HEADER));
                match (&self.signalwire_signing_key, sig) {
                    (Some(key), Some(sig)) => auth::validate_signalwire(key, &url, form, sig),
                    _ => false,
                }
            }
        }
    }
}

/// The control routes.
pub fn routes(control: Arc<Control>) -> Router {
    Router::new()
        .route("/twiml", post(twiml_twilio))
        .route("/twiml/signalwire", post(twiml_signalwire))
        .route("/{provider}/status", post(status_callback))
        .route("/v1/calls", post(create_call))
        .with_state(control)
}

/// The secret SignalWire sends back as `Authorization: Bearer` on its upgrades, derived from the
/// stream-token key so every instance agrees.
fn media_bearer(key: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(b"callbridge signalwire media bearer v1");
            mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
        }
        Err(_) => String::new(),
    }
}

fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn form_get<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn query_get(uri: &Uri, key: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, twiml::CONTENT_TYPE)], body).into_response()
}

fn forbidden(what: &'static str) -> Response {
    warn!(route = what, "webhook with a missing or bad signature");
    m::api_refused("bad_signature");
    (StatusCode::FORBIDDEN, "invalid signature").into_response()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn twiml_twilio(State(c): State<Arc<Control>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    voice_webhook(&c, Dialect::Twilio, &uri, &headers, &body)
}

async fn twiml_signalwire(
    State(c): State<Arc<Control>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    voice_webhook(&c, Dialect::SignalWire, &uri, &headers, &body)
}

fn voice_webhook(c: &Control, dialect: Dialect, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let form = parse_form(body);
    if !c.webhook_signed(dialect, uri, headers, &form) {
        return forbidden("twiml");
    }
    let Some(stream_url) = c.stream_url(dialect) else {
        warn!("voice webhook, but PUBLIC_URL is not set");
        return (StatusCode::SERVICE_UNAVAILABLE, "PUBLIC_URL is not configured").into_response();
    };
    let Some(call_sid) = form_get(&form, "CallSid") else {
        return (StatusCode::BAD_REQUEST, "CallSid missing").into_response();
    };
    if c.shared.is_draining() || c.shared.active_calls() >= c.shared.max_calls {
        info!(call_sid, "voice webhook while full or draining: polite refusal");
        m::call_refused(if c.shared.is_draining() {
            m::RefuseReason::Draining
        } else {
            m::RefuseReason::MaxCalls
        });
        return xml(twiml::say_and_hangup(BUSY_MESSAGE));
    }
    let lead_id = query_get(uri, "leadId").or_else(|| form_get(&form, "leadId").map(str::to_owned));
    let token = match &c.shared.control.stream_tokens {
        Some(tokens) => {
            let minted = tokens.lock().unwrap_or_else(|p| p.into_inner()).mint(
                call_sid,
                lead_id.as_deref(),
                unix_ms(),
            );
            match minted {
                Ok(t) => Some(t),
                Err(e) => {
                    warn!(error = %e, "cannot mint a stream token");
                    return (StatusCode::BAD_REQUEST, "call context too long").into_response();
                }
            }
        }
        None => None,
    };
    let direction = match (query_get(uri, "direction").as_deref(), form_get(&form, "Direction")) {
        (Some("outbound"), _) | (_, Some("outbound-api" | "outbound-dial")) => "outbound",
        _ => "inbound",
    };
    let mut params: Vec<(&str, &str)> = vec![("direction", direction)];
    if let Some(t) = &token {
        params.push((STREAM_TOKEN_PARAM, t));
    }
    if let Some(lead) = &lead_id {
        params.push(("leadId", lead));
    }
    for (name, key) in [("from", "From"), ("to", "To")] {
        if let Some(v) = form_get(&form, key) {
            params.push((name, v));
        }
    }
    let attrs = match dialect {
        Dialect::Twilio => twiml::StreamAttrs::default(),
        Dialect::SignalWire => {
            twiml::StreamAttrs { auth_bearer_token: Some(&c.media_bearer), ..Default::default() }
        }
    };
    info!(call_sid, direction, provider = dialect.name(), "voice webhook: connecting the stream");
    xml(twiml::connect_stream_with(&stream_url, &attrs, &params))
}

async fn status_callback(
    State(c): State<Arc<Control>>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(dialect) = Dialect::from_name(&provider) else {
        return (StatusCode::NOT_FOUND, "unknown provider").into_response();
    };
    let form = parse_form(&body);
    if !c.webhook_signed(dialect, &uri, &headers, &form) {
        return forbidden("status");
    }
    let Some(call_sid) = form_get(&form, "CallSid") else {
        return (StatusCode::BAD_REQUEST, "CallSid missing").into_response();
    };
    let status = CallStatus {
        call_sid: call_sid.to_owned(),
        provider: dialect.name(),
        status: form_get(&form, "CallStatus").map(str::to_owned),
        duration_s: form_get(&form, "CallDuration").and_then(|d| d.parse().ok()),
        answered_by: form_get(&form, "AnsweredBy").map(str::to_owned),
        direction: form_get(&form, "Direction")
            .map(|d| if d.starts_with("outbound") { "outbound" } else { "inbound" }),
        from: form_get(&form, "From").map(str::to_owned),
        to: form_get(&form, "To").map(str::to_owned),
        lead_id: c.shared.control.outbound.get(call_sid).and_then(|o| o.lead_id.clone()),
        at: SystemTime::now(),
    };
    info!(call_sid, status = ?status.status, answered_by = ?status.answered_by, "call status callback");
    c.shared.note(CallNote::Status(status));
    StatusCode::NO_CONTENT.into_response()
}

/// Body of `POST /v1/calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCall {
    to: String,
    from: String,
    lead_id: Option<String>,
    instructions: Option<String>,
    voice: Option<String>,
    metadata: Option<serde_json::Value>,
    /// `twilio` (default) or `signalwire`.
    provider: Option<String>,
}

fn api_error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

/// E.164 (`+` and 8–15 digits) or a SIP URI.
fn valid_party(s: &str) -> bool {
    let e164 = s
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    e164 || ((s.starts_with("sip:") || s.starts_with("sips:"))
        && s.len() <= 256
        && !s.contains(char::is_whitespace))
}

async fn create_call(State(c): State<Arc<Control>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = super::api::unauthorized(c.api_token.as_deref(), &headers) {
        return r;
    }
    let req: NewCall = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    if !valid_party(&req.to) || !valid_party(&req.from) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "to and from must be E.164 numbers (+15550100) or SIP URIs",
        );
    }
    let (dialect, rest) = match req.provider.as_deref() {
        None | Some("twilio") => (Dialect::Twilio, &c.twilio_rest),
        Some("signalwire") => (Dialect::SignalWire, &c.signalwire_rest),
        Some(_) => return api_error(StatusCode::BAD_REQUEST, "provider must be twilio or signalwire"),
    };
    let (Some(rest), Some(base)) = (rest, &c.public_url) else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "outbound calls need PUBLIC_URL and the provider's credentials",
        );
    };
    if c.shared.is_draining() {
        return api_error(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let mut webhook = format!("{base}/twiml");
    if dialect == Dialect::SignalWire {
        webhook.push_str("/signalwire");
    }
    let query = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("direction", "outbound");
        if let Some(lead) = &req.lead_id {
            q.append_pair("leadId", lead);
        }
        q.finish()
    };
    let status_url = format!("{base}/{}/status", dialect.name());
    let call = CreateCall {
        status_callback: Some(status_url.clone()),
        status_callback_events: vec![
            RestEvent::Initiated,
            RestEvent::Ringing,
            RestEvent::Answered,
            RestEvent::Completed,
        ],
        machine_detection: c
            .machine_detection
            .map(|mode| Amd { mode, async_status_callback: Some(status_url) }),
        ..CreateCall::new(
            req.to.clone(),
            req.from.clone(),
            CallInstructions::Url(format!("{webhook}?{query}")),
        )
    };
    match rest.create_call(&call).await {
        Ok(call_sid) => {
            info!(call_sid, provider = dialect.name(), "outbound call created");
            c.shared.control.remember_outbound(
                call_sid.clone(),
                OutboundCall {
                    lead_id: req.lead_id,
                    metadata: req.metadata.map(|m| m.to_string()),
                    instructions: req.instructions,
                    voice: req.voice,
                    created: Instant::now(),
                },
            );
            (StatusCode::CREATED, Json(serde_json::json!({ "call_sid": call_sid, "status": "queued" })))
                .into_response()
        }
        Err(e) => {
            warn!(error = %e, kind = e.kind(), "outbound call not created");
            m::api_refused("provider_error");
            let status =
                if e.is_retryable() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_GATEWAY };
            api_error(status, format!("provider refused the call: {}", e.kind()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_per_ip_per_minute() {
        let l = UpgradeLimiter::new(2);
        let t0 = Instant::now();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(l.allow(a, t0) && l.allow(a, t0));
        assert!(!l.allow(a, t0));
        assert!(l.allow(b, t0));
        assert!(l.allow(a, t0 + Duration::from_secs(61)));
        assert!(UpgradeLimiter::new(0).allow(a, t0));
    }

    #[test]
    fn parties_are_e164_or_sip() {
        for ok in ["+15550100002", "+442071838750", "sip:agent@pbx.example.com"] {
            assert!(valid_party(ok), "{ok}");
        }
        for bad in ["15550100002", "+1555", "+1555abc0000", "sip:a b@c", "tel:+15550100"] {
            assert!(!valid_party(bad), "{bad}");
        }
    }
}
