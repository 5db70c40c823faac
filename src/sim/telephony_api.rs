//! A local stand-in for the provider REST API (Twilio's 2010-04-01 Calls resource, and
//! SignalWire's Compatibility API under `/api/laml`), for tests of call control.
//!
//! It speaks the wire protocol as the project's telephony-media-streams reference (§1.6, §2.4)
//! and <https://www.twilio.com/docs/voice/api/call-resource> document it:
//!
//! * `POST /2010-04-01/Accounts/{AccountSid}/Calls.json` creates a call, and
//!   `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` updates one (`Status`,
//!   `Url`, `Twiml`); the same under `/api/laml/2010-04-01/…`, where call SIDs are UUIDs.
//! * HTTP Basic auth must be `AccountSid:AuthToken`, else 401 with code 20003 and
//!   `WWW-Authenticate`.
//! * The body must be `application/x-www-form-urlencoded` (otherwise it is read as empty).
//! * Create needs `To` (else 400, code 21201), `From` (400, 21213) and exactly one of `Url`,
//!   `Twiml`, `ApplicationSid` (400, 21200; real Twilio ignores `Twiml` when `Url` is also
//!   sent — stricter here on purpose), inline `Twiml` at most 4000 characters (400, 32018).
//! * Answers: the call JSON (`sid`, `status`, `to`, `from`, `direction`, `uri`, …) with 201 on
//!   create and 200 on update; errors as `{"code","message","more_info","status"}`; unknown
//!   calls and paths 404 (code 20404), other methods 405 (code 20004).
//!
//! Every request is recorded ([`FakeTelephonyApi::requests`]); faults and delays can be injected.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::ids::IdGen;

/// The fake's account SID (obviously fake).
pub const ACCOUNT_SID: &str = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
/// The fake's auth token (obviously fake).
pub const AUTH_TOKEN: &str = "12345";

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// Request path, e.g. `/2010-04-01/Accounts/AC…/Calls.json`.
    pub path: String,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The form body's pairs in order, decoded (empty unless form-encoded).
    pub form: Vec<(String, String)>,
    /// Whether HTTP Basic credentials matched.
    pub auth_ok: bool,
    /// The status the fake answered with.
    pub status: u16,
}

impl RecordedRequest {
    /// Every value of form field `name`, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.form.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The first value of form field `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A call the fake knows.
#[derive(Debug, Clone)]
struct FakeCall {
    to: String,
    from: String,
    status: String,
}

struct Inner {
    account_sid: String,
    auth_token: String,
    requests: Vec<RecordedRequest>,
    calls: Vec<(String, FakeCall)>,
    fail_next: usize,
    fail_status: u16,
    delay: Duration,
    ids: IdGen,
}

struct Shared {
    inner: Mutex<Inner>,
    recorded: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake provider API on loopback; stops when dropped.
pub struct FakeTelephonyApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeTelephonyApi {
    /// Starts on `127.0.0.1:0` with [`ACCOUNT_SID`] and [`AUTH_TOKEN`].
    ///
    /// Errors: the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(ACCOUNT_SID, AUTH_TOKEN).await
    }

    /// Starts on `127.0.0.1:0` accepting `account_sid:auth_token` (for SignalWire: project ID and
    /// API token).
    ///
    /// Errors: the port cannot be bound.
    pub async fn start_with(account_sid: &str, auth_token: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                account_sid: account_sid.to_owned(),
                auth_token: auth_token.to_owned(),
                requests: Vec::new(),
                calls: Vec::new(),
                fail_next: 0,
                fail_status: 500,
                delay: Duration::ZERO,
                ids: IdGen::new(),
            }),
            recorded: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The base URL to configure: `http://127.0.0.1:<port>` (the client adds `/2010-04-01/…`, or
    /// `/api/laml/2010-04-01/…` for SignalWire).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Waits until at least `n` requests were recorded, for at most `timeout`. True if they were.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.recorded.notified();
                if self.shared.lock().requests.len() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// The next `n` requests are answered with `status` and the error JSON (after being recorded
    /// and whatever their content). Codes: 429 → 20429, 500 → 20500, 503 → 20503, others 20001.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut inner = self.shared.lock();
        inner.fail_next = n;
        inner.fail_status = status;
    }

    /// Delays every answer by `delay` (to test client timeouts). Zero turns it off.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Registers an existing in-progress call (e.g. one a simulated caller invented), so updates
    /// to it succeed.
    pub fn add_call(&self, call_sid: &str) {
        let call = FakeCall { to: String::new(), from: String::new(), status: "in-progress".into() };
        self.shared.lock().calls.push((call_sid.to_owned(), call));
    }

    /// A known call's status (`queued`, `in-progress`, `completed`, `canceled`).
    pub fn call_status(&self, call_sid: &str) -> Option<String> {
        self.shared.lock().calls.iter().find(|(sid, _)| sid == call_sid).map(|(_, c)| c.status.clone())
    }
}

impl Drop for FakeTelephonyApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which resource a path names.
enum Route {
    Calls { prefix: &'static str, account: String },
    Call { prefix: &'static str, account: String, call_sid: String },
}

fn route(path: &str) -> Option<Route> {
    let (prefix, rest) = match path.strip_prefix("/api/laml") {
        Some(rest) => ("/api/laml", rest),
        None => ("", path),
    };
    let rest = rest.strip_prefix("/2010-04-01/Accounts/")?;
    let (account, rest) = rest.split_once('/')?;
    if account.is_empty() {
        return None;
    }
    if rest == "Calls.json" {
        return Some(Route::Calls { prefix, account: account.to_owned() });
    }
    let call_sid = rest.strip_prefix("Calls/")?.strip_suffix(".json")?;
    if call_sid.is_empty() || call_sid.contains('/') {
        return None;
    }
    Some(Route::Call { prefix, account: account.to_owned(), call_sid: call_sid.to_owned() })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let is_form = content_type
        .as_deref()
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> =
        if is_form { form_urlencoded::parse(&body).into_owned().collect() } else { Vec::new() };
    let path = uri.path().to_owned();
    let (response, delay) = {
        let mut inner = shared.lock();
        let auth_ok =
            basic_auth(&headers).is_some_and(|(u, p)| u == inner.account_sid && p == inner.auth_token);
        let (status, body) = if inner.fail_next > 0 {
            inner.fail_next -= 1;
            let status = inner.fail_status;
            let code = match status {
                429 => 20429,
                500 => 20500,
                503 => 20503,
                _ => 20001,
            };
            (status, error_body(code, "Injected failure", status))
        } else {
            answer(&mut inner, &method, &path, auth_ok, &form)
        };
        inner.requests.push(RecordedRequest {
            method: method.to_string(),
            path,
            content_type,
            form,
            auth_ok,
            status,
        });
        (json_response(status, &body), inner.delay)
    };
    shared.recorded.notify_waiters();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

/// Status and JSON for one (recorded) request.
fn answer(
    inner: &mut Inner,
    method: &Method,
    path: &str,
    auth_ok: bool,
    form: &[(String, String)],
) -> (u16, Value) {
    if !auth_ok {
        return (401, error_body(20003, "Authenticate", 401));
    }
    let Some(route) = route(path) else {
        return not_found(path);
    };
    if method != Method::POST {
        return (405, error_body(20004, "Method not allowed", 405));
    }
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match route {
        Route::Calls { account, .. } | Route::Call { account, .. } if account != inner.account_sid => {
            not_found(path)
        }
        Route::Calls { prefix, account } => {
            let to = get("To").filter(|v| !v.is_empty());
            let from = get("From").filter(|v| !v.is_empty());
            let sources = ["Url", "Twiml", "ApplicationSid"].iter().filter(|n| get(n).is_some()).count();
            let (Some(to), Some(from)) = (to, from) else {
                return if to.is_none() {
                    (400, error_body(21201, "No 'To' number is specified", 400))
                } else {
                    (400, error_body(21213, "No 'From' number is specified", 400))
                };
            };
            if sources != 1 {
                return (
                    400,
                    error_body(21200, "Exactly one of Url, Twiml or ApplicationSid is required", 400),
                );
            }
            if get("Twiml").is_some_and(|t| t.chars().count() > 4000) {
                return (400, error_body(32018, "Twiml is longer than 4000 characters", 400));
            }
            let sid = if prefix.is_empty() { inner.ids.hex_sid("CA") } else { inner.ids.uuid() };
            let call = FakeCall { to: to.to_owned(), from: from.to_owned(), status: "queued".into() };
            let body = call_json(prefix, &account, &sid, &call);
            inner.calls.push((sid, call));
            (201, body)
        }
        Route::Call { prefix, account, call_sid } => {
            let Some((_, call)) = inner.calls.iter_mut().find(|(sid, _)| *sid == call_sid) else {
                return not_found(path);
            };
            match get("Status") {
                Some("completed") => call.status = "completed".into(),
                // Canceling only affects calls that have not been answered.
                Some("canceled") if call.status == "queued" || call.status == "ringing" => {
                    call.status = "canceled".into();
                }
                Some("canceled") => {}
                Some(_) => return (400, error_body(20001, "Status must be completed or canceled", 400)),
                None => {}
            }
            (200, call_json(prefix, &account, &call_sid, call))
        }
    }
}

fn not_found(path: &str) -> (u16, Value) {
    (404, error_body(20404, &format!("The requested resource {path} was not found"), 404))
}

/// Twilio's error JSON (<https://www.twilio.com/docs/usage/twilios-response>).
fn error_body(code: u32, message: &str, status: u16) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}

/// The Call resource JSON (<https://www.twilio.com/docs/voice/api/call-resource#call-properties>).
/// `prefix` is the request's path prefix (`""` or `/api/laml`).
fn call_json(prefix: &str, account: &str, sid: &str, call: &FakeCall) -> Value {
    let now = rfc2822_now();
    let uri = format!("{}/2010-04-01/Accounts/{account}/Calls/{sid}.json", prefix);
    let sub = |name: &str| format!("{}/2010-04-01/Accounts/{account}/Calls/{sid}/{name}.json", prefix);
    json!({
        "sid": sid,
        "account_sid": account,
        "date_created": now,
        "date_updated": now,
        "parent_call_sid": null,
        "to": call.to,
        "to_formatted": call.to,
        "from": call.from,
        "from_formatted": call.from,
        "phone_number_sid": null,
        "status": call.status,
        "start_time": null,
        "end_time": null,
        "duration": null,
        "price": null,
        "price_unit": "USD",
        "direction": "outbound-api",
        "answered_by": null,
        "api_version": "2010-04-01",
        "forwarded_from": null,
        "group_sid": null,
        "caller_name": null,
        "queue_time": "0",
        "trunk_sid": null,
        "uri": uri,
        "subresource_uris": {
            "notifications": sub("Notifications"),
            "recordings": sub("Recordings"),
            "payments": sub("Payments"),
            "events": sub("Events"),
            "siprec": sub("Siprec"),
            "streams": sub("Streams"),
            "user_defined_message_subscriptions": sub("UserDefinedMessageSubscriptions"),
            "user_defined_messages": sub("UserDefinedMessages"),
        },
    })
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body.to_string())
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"Twilio API\""));
    }
    resp
}

/// `Authorization: Basic base64(user:password)`, decoded.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The current time as RFC 2822 in UTC, as Twilio writes dates (`Tue, 31 Aug 2010 20:36:28 +0000`).
fn rfc2822_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc2822(secs)
}

fn rfc2822(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), all non-negative here.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc2822() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_283_286_988), "Tue, 31 Aug 2010 20:36:28 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route("/2010-04-01/Accounts/AC1/Calls.json"),
            Some(Route::Calls { prefix: "", .. })
        ));
        assert!(matches!(
            route("/api/laml/2010-04-01/Accounts/p/Calls/c-1.json"),
            Some(Route::Call { prefix: "/api/laml", .. })
        ));
        for bad in [
            "/",
            "/2010-04-01/Accounts//Calls.json",
            "/2010-04-01/Accounts/AC1/Calls/.json",
            "/2010-04-01/Accounts/AC1/Calls/a/b.json",
            "/2010-04-01/Accounts/AC1/Messages.json",
        ] {
            assert!(route(bad).is_none(), "{bad}");
        }
    }
}
