//! The provider REST API for call control: place an outbound call, hang up, redirect a live call
//! to new TwiML (transfer, DTMF, spoken goodbye).
//!
//! One client for both providers: SignalWire's Compatibility ("LaML") API has the shape of
//! Twilio's 2010-04-01 API under another base path.
//!
//! | | Twilio | SignalWire |
//! |---|---|---|
//! | API root | `https://api.twilio.com/2010-04-01` | `https://{space}.signalwire.com/api/laml/2010-04-01` |
//! | HTTP Basic user : password | Account SID : Auth Token | Project ID : API token |
//! | call SID | `CA` + 32 hex | UUID |
//! | inline `Twiml` on create | yes (≤ 4000 characters) | documented, **unverified**: prefer [`CallInstructions::Url`] |
//!
//! Requests are `POST` with an `application/x-www-form-urlencoded` body using Twilio's exact
//! parameter names; answers are JSON. Every request has a timeout ([`DEFAULT_TIMEOUT`], see
//! [`TelephonyRest::with_timeout`]).
//!
//! Sources: <https://www.twilio.com/docs/voice/api/call-resource> (create and update a call),
//! <https://www.twilio.com/docs/usage/twilios-response> (error JSON),
//! <https://developer.signalwire.com/compatibility-api/rest/>, as summarised in the project's
//! telephony-media-streams reference (§1.6, §2.4).
//!
//! # DTMF
//!
//! Twilio media streams cannot carry DTMF from us (reference §1.1). The REST way is to redirect
//! the call to `<Play digits="…">` ([`crate::core::telephony::twiml::play_digits_then_connect`]),
//! but any redirect ends the running `<Connect><Stream>`: the document must reconnect a new
//! stream after the tones. SignalWire streams take a `dtmf` message on the socket instead.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Twilio's API host; the client appends `/2010-04-01/…`.
pub const DEFAULT_TWILIO_BASE_URL: &str = "https://api.twilio.com";
/// Default time limit for one request, connect to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest inline `Twiml` the API takes (characters; error 32018 beyond).
pub const MAX_INLINE_TWIML_CHARS: usize = 4000;
/// Longest provider error text kept in [`RestError::Http::message`] (bytes).
const MAX_ERROR_TEXT: usize = 512;
const USER_AGENT: &str = concat!("callbridge/", env!("CARGO_PKG_VERSION"));
const API_VERSION: &str = "2010-04-01";

/// Which provider a [`TelephonyRest`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Twilio Programmable Voice.
    Twilio,
    /// SignalWire's Compatibility API.
    SignalWire,
}

/// What the call does once answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallInstructions {
    /// `Twiml`: the document itself, at most [`MAX_INLINE_TWIML_CHARS`] characters. The call SID
    /// is not known when it is written, so it cannot carry a stream token bound to the call.
    Twiml(String),
    /// `Url`: the provider POSTs the voice webhook there (with `CallSid`) and runs the TwiML it
    /// answers with. Preferred for SignalWire.
    Url(String),
}

/// A `StatusCallbackEvent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEvent {
    /// `initiated`: the provider started dialling.
    Initiated,
    /// `ringing`.
    Ringing,
    /// `answered`.
    Answered,
    /// `completed`: the call ended, for any reason.
    Completed,
}

impl CallEvent {
    /// The wire value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Completed => "completed",
        }
    }
}

/// `MachineDetection` (answering-machine detection) mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineDetection {
    /// `Enable`: report `AnsweredBy` as soon as the callee is identified.
    Enable,
    /// `DetectMessageEnd`: for a machine, wait for the end of the greeting (to leave a message).
    DetectMessageEnd,
}

impl MachineDetection {
    /// The wire value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enable => "Enable",
            Self::DetectMessageEnd => "DetectMessageEnd",
        }
    }
}

/// Answering-machine detection for an outbound call
/// (<https://www.twilio.com/docs/voice/answering-machine-detection>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amd {
    /// `MachineDetection`.
    pub mode: MachineDetection,
    /// With a URL, detection is asynchronous (`AsyncAmd=true`): the call connects at once and
    /// the verdict is POSTed to `AsyncAmdStatusCallback`. Without, the call waits for it.
    pub async_status_callback: Option<String>,
}

/// An outbound call to place with [`TelephonyRest::create_call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateCall {
    /// `To`: E.164 number (`+15550100002`) or SIP URI.
    pub to: String,
    /// `From`: one of our numbers (E.164), or a verified caller ID.
    pub from: String,
    /// `Twiml` or `Url`.
    pub instructions: CallInstructions,
    /// `StatusCallback`: absolute URL for call-progress webhooks (POSTed, form-encoded).
    pub status_callback: Option<String>,
    /// `StatusCallbackEvent`, one parameter per event; sent only with a `status_callback`.
    /// Empty means the provider default (`completed` only).
    pub status_callback_events: Vec<CallEvent>,
    /// `MachineDetection` and the `AsyncAmd*` parameters.
    pub machine_detection: Option<Amd>,
    /// `Timeout`: seconds to let it ring (provider default 60, max 600).
    pub timeout_s: Option<u32>,
}

impl CreateCall {
    /// A call from `from` to `to` running `instructions`, with no callbacks or options.
    pub fn new(to: impl Into<String>, from: impl Into<String>, instructions: CallInstructions) -> Self {
        Self {
            to: to.into(),
            from: from.into(),
            instructions,
            status_callback: None,
            status_callback_events: Vec::new(),
            machine_detection: None,
            timeout_s: None,
        }
    }

    /// The form body, in order, with Twilio's parameter names.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![("To", self.to.clone()), ("From", self.from.clone())];
        match &self.instructions {
            CallInstructions::Twiml(t) => form.push(("Twiml", t.clone())),
            CallInstructions::Url(u) => form.push(("Url", u.clone())),
        }
        if let Some(cb) = &self.status_callback {
            form.push(("StatusCallback", cb.clone()));
            form.push(("StatusCallbackMethod", "POST".into()));
            for e in &self.status_callback_events {
                form.push(("StatusCallbackEvent", e.as_str().into()));
            }
        }
        if let Some(amd) = &self.machine_detection {
            form.push(("MachineDetection", amd.mode.as_str().into()));
            if let Some(cb) = &amd.async_status_callback {
                form.push(("AsyncAmd", "true".into()));
                form.push(("AsyncAmdStatusCallback", cb.clone()));
                form.push(("AsyncAmdStatusCallbackMethod", "POST".into()));
            }
        }
        if let Some(t) = self.timeout_s {
            form.push(("Timeout", t.to_string()));
        }
        form
    }
}

/// Why a REST request failed.
///
/// `Display` shows status and code only: provider messages can quote phone numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// The API answered with a non-2xx status. `code` and `message` come from the error JSON
    /// (`{"code":…,"message":…,"more_info":…,"status":…}`); when the body is not that JSON,
    /// `code` is `None` and `message` holds the start of the raw body. The message may contain
    /// phone numbers: redact before logging.
    #[error("provider API answered HTTP {status}{}", code_suffix(*.code))]
    Http {
        /// HTTP status.
        status: u16,
        /// Provider error code, e.g. 20003 (authentication), 21201 (no `To`).
        code: Option<u32>,
        /// Provider message or raw body text (at most 512 bytes).
        message: String,
    },
    /// No complete answer within the timeout. The provider may still have acted on the request.
    #[error("provider API request timed out")]
    Timeout,
    /// Could not connect, or the connection failed mid-request (DNS, TCP, TLS, reset).
    #[error("could not reach the provider API: {0}")]
    Connect(String),
    /// A 2xx answer without what we needed (e.g. no `sid`).
    #[error("unexpected provider API response: {0}")]
    Decode(String),
    /// The request could not be built: bad base URL, credentials that are not header-safe, a call
    /// SID with characters outside `[A-Za-z0-9-]`, TwiML over the inline limit.
    #[error("invalid provider API request: {0}")]
    InvalidRequest(String),
}

impl RestError {
    /// Whether trying again later may succeed: timeouts, connection failures, HTTP 429 and 5xx.
    ///
    /// Hang-up and redirect are safe to retry. Creating a call is not idempotent: after a
    /// timeout or a 5xx the call may exist, so a retry can ring the callee twice.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status == 429 || (500..600).contains(status),
            Self::Timeout | Self::Connect(_) => true,
            Self::Decode(_) | Self::InvalidRequest(_) => false,
        }
    }

    /// Short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::Decode(_) => "decode",
            Self::InvalidRequest(_) => "invalid_request",
        }
    }
}

/// A REST client for one provider account.
#[derive(Clone)]
pub struct TelephonyRest {
    http: reqwest::Client,
    provider: Provider,
    /// `…/2010-04-01/Accounts/{AccountSid}`, no trailing slash.
    account_root: String,
    /// HTTP Basic user: Account SID or Project ID.
    user: String,
    /// HTTP Basic password: Auth Token or API token. Secret.
    secret: String,
    timeout: Duration,
}

impl fmt::Debug for TelephonyRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelephonyRest")
            .field("provider", &self.provider)
            .field("account_root", &self.account_root)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TelephonyRest {
    /// A Twilio client. `base_url` is the API host, normally [`DEFAULT_TWILIO_BASE_URL`] (a
    /// local fake in tests); a trailing `/2010-04-01` is accepted too. Needs a rustls crypto
    /// provider installed for `https`.
    ///
    /// Errors: [`RestError::InvalidRequest`] for an empty or non-`http(s)` base URL or SID, or
    /// when the HTTP client cannot be built.
    pub fn twilio(account_sid: &str, auth_token: &str, base_url: &str) -> Result<Self, RestError> {
        let base = base_url.trim().trim_end_matches('/');
        let base = base.strip_suffix(API_VERSION).unwrap_or(base).trim_end_matches('/');
        Self::build(Provider::Twilio, format!("{base}/{API_VERSION}"), account_sid, auth_token)
    }

    /// A SignalWire client. `space` is the space name (`example`), its host
    /// (`example.signalwire.com`), or a base URL (`https://example.signalwire.com`, optionally
    /// ending in `/api/laml` or `/api/laml/2010-04-01`; `http://127.0.0.1:…` in tests). The
    /// client adds `/api/laml/2010-04-01` (reference §2.4).
    ///
    /// Errors: as [`TelephonyRest::twilio`].
    pub fn signalwire(space: &str, project_id: &str, api_token: &str) -> Result<Self, RestError> {
        let space = space.trim().trim_end_matches('/');
        let base = if space.contains("://") {
            space.to_owned()
        } else if space.contains('.') {
            format!("https://{space}")
        } else {
            format!("https://{space}.signalwire.com")
        };
        let base = base.strip_suffix(API_VERSION).unwrap_or(&base).trim_end_matches('/');
        let base = base.strip_suffix("/api/laml").unwrap_or(base);
        Self::build(Provider::SignalWire, format!("{base}/api/laml/{API_VERSION}"), project_id, api_token)
    }

    fn build(provider: Provider, api_root: String, user: &str, secret: &str) -> Result<Self, RestError> {
        let scheme_ok = api_root.starts_with("https://") || api_root.starts_with("http://");
        if !scheme_ok || api_root.contains("://:") || api_root.contains(":///") {
            return Err(RestError::InvalidRequest("base URL must be http(s)://host".into()));
        }
        if !is_sid(user) {
            return Err(RestError::InvalidRequest("account SID must be [A-Za-z0-9-]+".into()));
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(DEFAULT_TIMEOUT)
            .build()
            .map_err(|e| RestError::InvalidRequest(describe(&e)))?;
        Ok(Self {
            http,
            provider,
            account_root: format!("{api_root}/Accounts/{user}"),
            user: user.to_owned(),
            secret: secret.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client with another per-request time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Which provider this client talks to.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Places an outbound call: `POST …/Accounts/{AccountSid}/Calls.json` with
    /// [`CreateCall::form`]. Returns the new call's SID (`sid` of the answer, HTTP 201).
    ///
    /// Errors: see [`RestError`]; inline TwiML over [`MAX_INLINE_TWIML_CHARS`] is refused
    /// before sending. Retrying after a [`RestError::Timeout`] or 5xx may place a second call.
    pub async fn create_call(&self, call: &CreateCall) -> Result<String, RestError> {
        if let CallInstructions::Twiml(t) = &call.instructions {
            check_twiml(t)?;
        }
        let text = self.post(&format!("{}/Calls.json", self.account_root), &call.form()).await?;
        #[derive(Deserialize)]
        struct Created {
            sid: Option<String>,
        }
        match serde_json::from_str::<Created>(&text) {
            Ok(Created { sid: Some(sid) }) if !sid.is_empty() => Ok(sid),
            Ok(_) => Err(RestError::Decode("no `sid` in the created call".into())),
            Err(e) => Err(RestError::Decode(format!("call JSON: {e}"))),
        }
    }

    /// Hangs up a call in any state: `POST …/Calls/{CallSid}.json` with `Status=completed`.
    ///
    /// Errors: see [`RestError`]; an unknown or already finished call is an HTTP 404.
    pub async fn hang_up(&self, call_sid: &str) -> Result<(), RestError> {
        self.update(call_sid, &[("Status", "completed")]).await
    }

    /// Replaces what a live call is doing with `twiml`: `POST …/Calls/{CallSid}.json` with
    /// `Twiml=…` (build it with [`crate::core::telephony::twiml`]).
    ///
    /// This ends a running `<Connect><Stream>` (the stream gets `stop`). Use it to transfer
    /// (`dial`), to say goodbye, or to play DTMF and reconnect
    /// (`play_digits_then_connect`).
    ///
    /// Errors: see [`RestError`].
    pub async fn redirect(&self, call_sid: &str, twiml: &str) -> Result<(), RestError> {
        check_twiml(twiml)?;
        self.update(call_sid, &[("Twiml", twiml)]).await
    }

    /// [`redirect`](Self::redirect) to a URL serving the TwiML (`Url=…`, fetched with POST):
    /// for documents over the inline limit, and for SignalWire, where inline TwiML is unverified.
    ///
    /// Errors: see [`RestError`].
    pub async fn redirect_to_url(&self, call_sid: &str, url: &str) -> Result<(), RestError> {
        self.update(call_sid, &[("Url", url), ("Method", "POST")]).await
    }

    async fn update(&self, call_sid: &str, form: &[(&str, &str)]) -> Result<(), RestError> {
        if !is_sid(call_sid) {
            return Err(RestError::InvalidRequest("call SID must be [A-Za-z0-9-]+".into()));
        }
        self.post(&format!("{}/Calls/{call_sid}.json", self.account_root), form).await.map(drop)
    }

    /// POSTs `form` and returns the body of a 2xx answer.
    async fn post<K: serde::Serialize, V: serde::Serialize>(
        &self,
        url: &str,
        form: &[(K, V)],
    ) -> Result<String, RestError> {
        let resp = self
            .http
            .post(url)
            .basic_auth(&self.user, Some(&self.secret))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(classify)?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            code: Option<serde_json::Value>,
            message: Option<String>,
        }
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (
                b.code.and_then(|c| c.as_u64().or_else(|| c.as_str().and_then(|s| s.parse().ok()))),
                b.message.map_or_else(
                    || super::truncate(&text, MAX_ERROR_TEXT),
                    |m| super::truncate(&m, MAX_ERROR_TEXT),
                ),
            ),
            Err(_) => (None, super::truncate(&text, MAX_ERROR_TEXT)),
        };
        let code = code.and_then(|c| u32::try_from(c).ok());
        Err(RestError::Http { status, code, message })
    }
}

/// SIDs go into URL paths: allow only what Twilio (`CA…`) and SignalWire (UUIDs) use.
fn is_sid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn check_twiml(twiml: &str) -> Result<(), RestError> {
    if twiml.chars().count() > MAX_INLINE_TWIML_CHARS {
        return Err(RestError::InvalidRequest(format!(
            "inline TwiML over {MAX_INLINE_TWIML_CHARS} characters"
        )));
    }
    Ok(())
}

fn classify(e: reqwest::Error) -> RestError {
    let e = e.without_url();
    if e.is_timeout() {
        RestError::Timeout
    } else if e.is_builder() {
        RestError::InvalidRequest(describe(&e))
    } else {
        RestError::Connect(describe(&e))
    }
}

/// The error and its sources.
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn code_suffix(code: Option<u32>) -> String {
    code.map_or_else(String::new, |c| format!(" (code {c})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install_provider() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    #[test]
    fn api_roots() {
        install_provider();
        let t = TelephonyRest::twilio("ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "12345", DEFAULT_TWILIO_BASE_URL)
            .unwrap();
        assert_eq!(
            t.account_root,
            "https://api.twilio.com/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
        );
        let t = TelephonyRest::twilio("AC1", "12345", "http://127.0.0.1:9/2010-04-01/").unwrap();
        assert_eq!(t.account_root, "http://127.0.0.1:9/2010-04-01/Accounts/AC1");
        let p = "00000000-0000-4000-8000-000000000001";
        for space in [
            "example",
            "example.signalwire.com",
            "https://example.signalwire.com/",
            "https://example.signalwire.com/api/laml",
            "https://example.signalwire.com/api/laml/2010-04-01",
        ] {
            let s = TelephonyRest::signalwire(space, p, "PTXXXXXXXX").unwrap();
            assert_eq!(
                s.account_root,
                format!("https://example.signalwire.com/api/laml/2010-04-01/Accounts/{p}")
            );
            assert_eq!(s.provider(), Provider::SignalWire);
        }
        assert!(matches!(TelephonyRest::twilio("AC1", "x", "ftp://h"), Err(RestError::InvalidRequest(_))));
        assert!(matches!(TelephonyRest::twilio("AC1", "x", ""), Err(RestError::InvalidRequest(_))));
        assert!(matches!(
            TelephonyRest::twilio("AC/../x", "x", "https://h"),
            Err(RestError::InvalidRequest(_))
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        install_provider();
        let t = TelephonyRest::twilio("AC1", "super-secret-12345", DEFAULT_TWILIO_BASE_URL).unwrap();
        assert!(!format!("{t:?}").contains("super-secret"));
    }

    #[test]
    fn form_fields_in_order() {
        let mut c =
            CreateCall::new("+15550100002", "+15550100001", CallInstructions::Url("https://h/twiml".into()));
        assert_eq!(
            c.form(),
            [
                ("To", "+15550100002".into()),
                ("From", "+15550100001".into()),
                ("Url", "https://h/twiml".to_owned())
            ]
        );
        c.status_callback_events = vec![CallEvent::Answered];
        assert_eq!(c.form().len(), 3, "events without a callback are not sent");
        c.status_callback = Some("https://h/status".into());
        c.machine_detection = Some(Amd { mode: MachineDetection::Enable, async_status_callback: None });
        c.timeout_s = Some(25);
        let names: Vec<_> = c.form().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "To",
                "From",
                "Url",
                "StatusCallback",
                "StatusCallbackMethod",
                "StatusCallbackEvent",
                "MachineDetection",
                "Timeout"
            ]
        );
    }

    #[test]
    fn retryable() {
        let http = |status| RestError::Http { status, code: None, message: String::new() };
        assert!(http(429).is_retryable());
        assert!(http(500).is_retryable());
        assert!(http(503).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(!http(401).is_retryable());
        assert!(!http(404).is_retryable());
        assert!(RestError::Timeout.is_retryable());
        assert!(RestError::Connect(String::new()).is_retryable());
        assert!(!RestError::Decode(String::new()).is_retryable());
        assert!(!RestError::InvalidRequest(String::new()).is_retryable());
    }

    #[test]
    fn display_does_not_quote_the_provider_message() {
        let e =
            RestError::Http { status: 400, code: Some(21211), message: "Invalid 'To' +15550100002".into() };
        assert_eq!(e.to_string(), "provider API answered HTTP 400 (code 21211)");
        let e = RestError::Http { status: 502, code: None, message: "<html>".into() };
        assert_eq!(e.to_string(), "provider API answered HTTP 502");
    }
}
