#![allow(clippy::unwrap_used)]
//! Fault injection for the Supabase delivery worker, with `wiremock` playing PostgREST.
//!
//! Each test drives the real [`Store`] (SQLite outbox + delivery worker) by handing it call
//! notes directly, lets a scripted fake PostgREST answer (errors, timeouts, refused
//! connections, restarts), and checks what reached the server and what is left in the outbox:
//! headers and bodies, retries of 5xx/408/429/timeouts/refused connections, parking of other
//! 4xx, per-call order, durability across a restart, and the lead PATCH after a summary.
//!
//! Every answer goes through [`Answer`], which logs the request together with the status it
//! was given, so "delivered exactly once" means exactly one 2xx per distinct request.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use callbridge::clients::summary::Summarizer;
use callbridge::clients::supabase::ServiceKey;
use callbridge::core::call::{Role, Turn};
use callbridge::core::realtime::Usage;
use callbridge::sim::chat::ChatSim;
use callbridge::store::{
    Backoff, CallNote, CallRecord, CallStarted, OutboxRow, Store, StoreConfig, StoreReader, SupabaseTarget,
    TimelineEntry,
};
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A legacy `service_role` key: a JWT (only its shape matters here).
const JWT_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.dGVzdC1vbmx5";
/// A new-style secret key.
const SECRET_KEY: &str = "sb_secret_test0nly0000000000000000";
/// Wall-clock start of every synthetic call: 2023-11-14T22:13:20.123Z.
const STARTED_MS: u64 = 1_700_000_000_123;
const STARTED_RFC3339: &str = "2023-11-14T22:13:20.123Z";
/// Call length: it ends at 2023-11-14T22:13:27.623Z.
const DURATION_MS: u64 = 7_500;
const ENDED_RFC3339: &str = "2023-11-14T22:13:27.623Z";
/// Client timeout of the store under test (short, yet long enough that a loaded machine does
/// not turn a prompt answer into a spurious retry).
const TIMEOUT: Duration = Duration::from_secs(1);
/// Retry delays of the store under test.
const BACKOFF: Backoff = Backoff { first: Duration::from_millis(50), max: Duration::from_millis(400) };
/// Outbox rows of one call without a summary: `calls` (started), `calls` (ended), turns, events.
const ROWS_PER_CALL: usize = 4;

// --- the fake PostgREST ---------------------------------------------------------------------

/// One request and the answer the fake server gave it.
#[derive(Debug, Clone)]
struct Served {
    method: String,
    /// Path without the query, e.g. `/calls`.
    path: String,
    /// Raw query string (as sent, still percent-encoded).
    query: String,
    headers: Vec<(String, String)>,
    body: String,
    status: u16,
    /// Answered only after the client's timeout: the client never saw the status.
    late: bool,
}

impl Served {
    /// The client got a 2xx.
    fn ok(&self) -> bool {
        !self.late && (200..300).contains(&self.status)
    }

    /// Identity of the outbox row the request carries (a retry repeats it byte for byte).
    fn row(&self) -> String {
        format!("{} {}?{} {}", self.method, self.path, self.query, self.body)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// The call the request belongs to.
    fn call_sid(&self) -> String {
        let v = self.json();
        let first = if v.is_array() { &v[0] } else { &v };
        first["call_sid"].as_str().or_else(|| first["last_call_sid"].as_str()).unwrap_or_default().to_owned()
    }

    /// The `calls` row's status, if this is one.
    fn call_status(&self) -> Option<String> {
        (self.path == "/calls").then(|| self.json()["status"].as_str().unwrap_or_default().to_owned())
    }

    fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// Short label for assertion messages: `POST /calls[completed] 201`.
    fn label(&self) -> String {
        let status = self.call_status().map(|s| format!("[{s}]")).unwrap_or_default();
        let late = if self.late { " (late)" } else { "" };
        format!("{} {}{status} {}{late}", self.method, self.path, self.status)
    }
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Served>>>);

impl Log {
    fn all(&self) -> Vec<Served> {
        self.0.lock().unwrap().clone()
    }
}

/// A response that records the request it answers.
struct Answer {
    log: Log,
    status: u16,
    body: Option<Value>,
    delay: Option<Duration>,
    content_range: Option<&'static str>,
}

impl Answer {
    /// A PostgREST-shaped error body (reference §4).
    fn pg_error(mut self, code: &str, message: &str) -> Self {
        self.body = Some(json!({"code": code, "message": message, "details": null, "hint": null}));
        self
    }

    fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

impl Respond for Answer {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let headers = req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        self.log.0.lock().unwrap().push(Served {
            method: req.method.as_str().to_owned(),
            path: req.url.path().to_owned(),
            query: req.url.query().unwrap_or_default().to_owned(),
            headers,
            body: String::from_utf8_lossy(&req.body).into_owned(),
            status: self.status,
            late: self.delay.is_some_and(|d| d > TIMEOUT),
        });
        let mut t = ResponseTemplate::new(self.status);
        if let Some(b) = &self.body {
            t = t.set_body_json(b);
        }
        if let Some(r) = self.content_range {
            t = t.insert_header("Content-Range", r);
        }
        if let Some(d) = self.delay {
            t = t.set_delay(d);
        }
        t
    }
}

/// A wiremock server answering like PostgREST: 201 to every POST and 204 (one row matched) to
/// every PATCH unless a test mounts a fault in front (priority 1–9; the defaults are 200).
struct Rest {
    server: MockServer,
    log: Log,
}

impl Rest {
    async fn start() -> Self {
        Self::serve(MockServer::start().await).await
    }

    /// Serves on an already bound listener (to come up on a port the store already uses).
    async fn on(listener: std::net::TcpListener) -> Self {
        Self::serve(MockServer::builder().listener(listener).start().await).await
    }

    async fn serve(server: MockServer) -> Self {
        let rest = Self { server, log: Log::default() };
        rest.mount_defaults().await;
        rest
    }

    async fn mount_defaults(&self) {
        Mock::given(method("POST"))
            .respond_with(self.answer(201))
            .with_priority(200)
            .mount(&self.server)
            .await;
        let mut patched = self.answer(204);
        patched.content_range = Some("0-0/*");
        Mock::given(method("PATCH")).respond_with(patched).with_priority(200).mount(&self.server).await;
    }

    /// Drops every fault: back to the defaults. (Not `mount_as_scoped`: wiremock 0.6.5 sorts
    /// its mocks by priority in place, so a scoped guard can deactivate the wrong mock.)
    async fn heal(&self) {
        self.server.reset().await;
        self.mount_defaults().await;
    }

    fn uri(&self) -> String {
        self.server.uri()
    }

    fn answer(&self, status: u16) -> Answer {
        Answer { log: self.log.clone(), status, body: None, delay: None, content_range: None }
    }

    fn served(&self) -> Vec<Served> {
        self.log.all()
    }

    fn for_call(&self, sid: &str) -> Vec<Served> {
        self.served().into_iter().filter(|s| s.call_sid() == sid).collect()
    }

    /// Distinct rows that got a 2xx.
    fn delivered_rows(&self) -> usize {
        let mut rows: Vec<String> = self.served().iter().filter(|s| s.ok()).map(Served::row).collect();
        rows.sort();
        rows.dedup();
        rows.len()
    }
}

/// Every distinct request (outbox row) got exactly one 2xx.
fn assert_each_row_delivered_once(served: &[Served]) {
    let mut oks: HashMap<String, usize> = HashMap::new();
    for s in served {
        *oks.entry(s.row()).or_default() += usize::from(s.ok());
    }
    for (row, n) in &oks {
        assert_eq!(*n, 1, "row answered 2xx {n} times: {row}");
    }
}

/// The 2xx answers of one call, in arrival order, as labels.
fn delivered_labels(served: &[Served]) -> Vec<String> {
    served.iter().filter(|s| s.ok()).map(Served::label).collect()
}

fn labels(served: &[Served]) -> Vec<String> {
    served.iter().map(Served::label).collect()
}

/// What one call without a summary delivers, in order.
fn plain_call_order() -> Vec<String> {
    [
        "POST /calls[in_progress] 201",
        "POST /calls[completed] 201",
        "POST /call_turns 201",
        "POST /call_events 201",
    ]
    .map(String::from)
    .to_vec()
}

// --- the store under test -------------------------------------------------------------------

/// A fresh data directory, removed on drop.
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("callbridge-faults-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_store(dir: &Path, rest_base: &str, key: &str, summarizer: Option<Summarizer>) -> Store {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Store::start(StoreConfig {
        data_dir: dir.to_owned(),
        supabase: Some(SupabaseTarget {
            rest_base: rest_base.to_owned(),
            key: ServiceKey::parse(key),
            lead_table: "leads".into(),
            timeout: TIMEOUT,
            backoff: BACKOFF,
        }),
        summarizer,
    })
    .await
    .unwrap()
}

fn params(lead: Option<&str>) -> BTreeMap<String, String> {
    let mut p = BTreeMap::from([
        ("from".to_owned(), "+15550001111".to_owned()),
        ("to".to_owned(), "+15559990000".to_owned()),
        ("direction".to_owned(), "outbound".to_owned()),
    ]);
    if let Some(lead) = lead {
        p.insert("leadId".to_owned(), lead.to_owned());
    }
    p
}

fn turn(role: Role, item_id: &str, text: &str, started_ms: u64, ended_ms: u64, interrupted: bool) -> Turn {
    Turn { role, item_id: item_id.into(), text: text.into(), started_ms, ended_ms, interrupted }
}

/// A finished call. Its transcript is deliberately not in speech order: the store must sort
/// it by `started_ms` (caller at 800 ms, agent at 2,400 ms, caller at 5,200 ms).
fn record(sid: &str, p: &BTreeMap<String, String>) -> CallRecord {
    let start = UNIX_EPOCH + Duration::from_millis(STARTED_MS);
    CallRecord {
        call_sid: Some(sid.to_owned()),
        stream_sid: Some(format!("MZ{sid}")),
        provider: "twilio",
        started_at: start,
        opened: Instant::now(),
        duration_ms: DURATION_MS,
        end_reason: "caller_hung_up",
        end_detail: None,
        custom_parameters: p.clone(),
        transcript: vec![
            turn(Role::Caller, "item_caller_2", "Yes, sounds good, book me in.", 5_200, 6_900, false),
            turn(
                Role::Agent,
                "item_agent_1",
                "Hi, this is Ada from Acme. Still after solar?",
                2_400,
                5_100,
                true,
            ),
            turn(Role::Caller, "item_caller_1", "Hello, who is this?", 800, 2_000, false),
        ],
        timeline: vec![
            TimelineEntry { at_ms: 0, kind: "started", detail: "PCMU 8000 Hz → model PCMU 8000 Hz".into() },
            TimelineEntry { at_ms: 120, kind: "upstream_ready", detail: String::new() },
            TimelineEntry { at_ms: 800, kind: "speech_started", detail: "item_caller_1".into() },
            TimelineEntry { at_ms: 5_150, kind: "barge_in", detail: "clear=true".into() },
        ],
        timeline_dropped: 0,
        usage: Usage { total_tokens: 1_500, input_tokens: 1_000, output_tokens: 500, ..Usage::default() },
        frames_in: 375,
        frames_out: 140,
    }
}

/// Sends a call's start and end notes, as the driver would.
async fn place_call(store: &Store, sid: &str, lead: Option<&str>) {
    let p = params(lead);
    let started = CallStarted {
        call_sid: sid.to_owned(),
        stream_sid: format!("MZ{sid}"),
        provider: "twilio",
        started_at: UNIX_EPOCH + Duration::from_millis(STARTED_MS),
        custom_parameters: p.clone(),
    };
    store.notes.send(CallNote::Started(started)).await.unwrap();
    store.notes.send(CallNote::Ended(Box::new(record(sid, &p)))).await.unwrap();
}

/// Polls `check` every 20 ms until it holds; fails the test after `limit`.
async fn until(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `rows` distinct rows got a 2xx and the outbox holds no pending row.
async fn until_delivered(rest: &Rest, reader: &StoreReader, rows: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let depth = reader.outbox_depth().await.unwrap();
        if rest.delivered_rows() >= rows && depth.0 == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not within {limit:?}: {rows} rows delivered; outbox (pending, parked) = {depth:?}; served: {:?}",
            labels(&rest.served())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outbox(reader: &StoreReader, sid: &str) -> Vec<OutboxRow> {
    // `None` until the call's start note is written.
    reader.call_detail(sid.to_owned()).await.unwrap().map(|d| d.outbox).unwrap_or_default()
}

fn sid(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("CA{tag}{nanos:09}")
}

// --- 1. headers and shapes ------------------------------------------------------------------

/// Runs one call against a default server and returns what the server saw.
async fn one_call_with_key(key: &str) -> (Vec<Served>, String) {
    let rest = Rest::start().await;
    let dir = DataDir::new("headers");
    let store = start_store(&dir.0, &rest.uri(), key, None).await;
    let call = sid("hdr");
    place_call(&store, &call, Some("lead-1")).await;
    until_delivered(&rest, &store.reader(), ROWS_PER_CALL, Duration::from_secs(5)).await;
    store.shutdown(Duration::from_secs(2)).await;
    (rest.served(), call)
}

/// Headers every write carries, whatever the key.
fn assert_common_headers(s: &Served, key: &str) {
    assert_eq!(s.header("apikey"), [key], "{}", s.label());
    assert_eq!(s.header("content-type"), ["application/json"], "{}", s.label());
    let ua = s.header("user-agent");
    assert!(ua.len() == 1 && ua[0].starts_with("callbridge/"), "explicit user agent: {ua:?}");
    let prefer = s.header("prefer").join(",");
    assert!(prefer.contains("resolution=merge-duplicates"), "upsert Prefer: {prefer}");
    assert!(prefer.contains("return=minimal"), "{prefer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_jwt_key_sends_apikey_and_bearer_and_rows_have_the_documented_shape() {
    let (served, call) = one_call_with_key(JWT_KEY).await;
    assert_eq!(labels(&served), plain_call_order(), "one request per row, nothing retried");
    for s in &served {
        assert_common_headers(s, JWT_KEY);
        assert_eq!(s.header("authorization"), [format!("Bearer {JWT_KEY}").as_str()], "{}", s.label());
        assert_eq!(s.method, "POST");
    }
    let paths: Vec<String> = served.iter().map(|s| format!("{}?{}", s.path, s.query)).collect();
    assert_eq!(
        paths,
        [
            "/calls?on_conflict=call_sid",
            "/calls?on_conflict=call_sid",
            "/call_turns?on_conflict=call_sid,item_id",
            "/call_events?on_conflict=call_sid,seq",
        ]
    );

    // calls, when the call started.
    let started = served[0].json();
    assert_eq!(started["call_sid"], call.as_str());
    assert_eq!(started["stream_sid"], format!("MZ{call}"));
    assert_eq!(started["status"], "in_progress");
    assert_eq!(started["provider"], "twilio");
    assert_eq!(started["direction"], "outbound");
    assert_eq!(started["from_number"], "+15550001111");
    assert_eq!(started["to_number"], "+15559990000");
    assert_eq!(started["lead_id"], "lead-1");
    assert_eq!(started["started_at"], STARTED_RFC3339);
    assert_eq!(started["ended_at"], Value::Null);
    assert_eq!(started["duration_ms"], Value::Null);
    assert!(humantime::parse_rfc3339(started["updated_at"].as_str().unwrap()).is_ok(), "{started}");

    // calls, when it ended.
    let ended = served[1].json();
    let keys: Vec<&str> = ended.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "call_sid",
        "stream_sid",
        "provider",
        "direction",
        "from_number",
        "to_number",
        "lead_id",
        "status",
        "started_at",
        "ended_at",
        "duration_ms",
        "end_reason",
        "outcome",
        "summary",
        "usage",
        "custom_parameters",
        "updated_at",
    ] {
        assert!(keys.contains(&k), "calls row lacks {k}: {ended}");
    }
    assert_eq!(ended["status"], "completed");
    assert_eq!(ended["started_at"], STARTED_RFC3339);
    assert_eq!(ended["ended_at"], ENDED_RFC3339);
    assert_eq!(ended["duration_ms"], DURATION_MS);
    assert_eq!(ended["end_reason"], "caller_hung_up");
    assert_eq!(ended["summary"], Value::Null, "no summarizer");
    assert_eq!(ended["usage"]["total_tokens"], 1_500);
    assert_eq!(ended["custom_parameters"]["leadId"], "lead-1");

    // call_turns: one array, ordered by speech start although the transcript was not.
    let turns = served[2].json();
    let turns = turns.as_array().unwrap();
    let order: Vec<(&str, u64)> = turns
        .iter()
        .map(|t| (t["item_id"].as_str().unwrap(), t["started_at_ms"].as_u64().unwrap()))
        .collect();
    assert_eq!(order, [("item_caller_1", 800), ("item_agent_1", 2_400), ("item_caller_2", 5_200)]);
    assert_eq!(turns[1]["role"], "agent");
    assert_eq!(turns[1]["interrupted"], true);
    assert_eq!(turns[1]["ended_at_ms"], 5_100);
    assert_eq!(turns[0]["role"], "caller");
    assert_eq!(turns[0]["text"], "Hello, who is this?");
    assert!(turns.iter().all(|t| t["call_sid"] == call.as_str()));

    // call_events: the timeline in order, with absolute times.
    let events = served[3].json();
    let events = events.as_array().unwrap();
    let seqs: Vec<(u64, &str)> =
        events.iter().map(|e| (e["seq"].as_u64().unwrap(), e["kind"].as_str().unwrap())).collect();
    assert_eq!(seqs, [(0, "started"), (1, "upstream_ready"), (2, "speech_started"), (3, "barge_in")]);
    assert_eq!(events[2]["at"], "2023-11-14T22:13:20.923Z");
    assert_eq!(events[2]["at_ms"], 800);
    assert_eq!(events[2]["data"], json!({"detail": "item_caller_1"}));
    assert_eq!(events[1]["data"], Value::Null, "empty detail → null");
    assert!(events.iter().all(|e| e["call_sid"] == call.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_key_goes_in_apikey_only() {
    let (served, _) = one_call_with_key(SECRET_KEY).await;
    assert_eq!(labels(&served), plain_call_order());
    for s in &served {
        assert_common_headers(s, SECRET_KEY);
        assert!(s.header("authorization").is_empty(), "an sb_secret_ key is not a bearer JWT: {s:?}");
    }
}

// --- 2. 500 twice, then 201 -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_failing_with_500_twice_is_retried_and_delivered_once_in_order() {
    let rest = Rest::start().await;
    let body = rest.answer(500).pg_error("57014", "canceling statement due to statement timeout");
    Mock::given(path("/calls"))
        .respond_with(body)
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&rest.server)
        .await;
    let dir = DataDir::new("500");
    let store = start_store(&dir.0, &rest.uri(), JWT_KEY, None).await;
    let reader = store.reader();
    let call = sid("five");
    place_call(&store, &call, None).await;
    until_delivered(&rest, &reader, ROWS_PER_CALL, Duration::from_secs(5)).await;

    let served = rest.for_call(&call);
    let mut want = vec!["POST /calls[in_progress] 500".to_owned(), "POST /calls[in_progress] 500".to_owned()];
    want.extend(plain_call_order());
    assert_eq!(labels(&served), want, "retried in place; the call's later rows waited for it");
    assert_eq!(served[0].row(), served[2].row(), "the retry repeats the row byte for byte");
    assert_each_row_delivered_once(&served);
    assert_eq!(reader.outbox_depth().await.unwrap(), (0, 0));
    assert!(outbox(&reader, &call).await.is_empty());
    store.shutdown(Duration::from_secs(2)).await;
}

// --- 3. what is retried, what is parked -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_429_and_408_are_retried_while_400_and_409_are_parked_without_blocking() {
    let rest = Rest::start().await;
    let (a, b, c) = (sid("parkA"), sid("retryB"), sid("parkC"));
    // A: its turns are rejected for good (400, an unknown column).
    Mock::given(path("/call_turns"))
        .and(body_string_contains(a.as_str()))
        .respond_with(
            rest.answer(400)
                .pg_error("PGRST204", "Could not find the 'mood' column of 'call_turns' in the schema cache"),
        )
        .with_priority(1)
        .mount(&rest.server)
        .await;
    // C: its first row conflicts for good (409, unique violation).
    Mock::given(path("/calls"))
        .and(body_string_contains(c.as_str()))
        .and(body_string_contains("in_progress"))
        .respond_with(rest.answer(409).pg_error("23505", "duplicate key value violates unique constraint"))
        .with_priority(1)
        .mount(&rest.server)
        .await;
    // B: its first row is rate limited once, then times out at the gateway once.
    Mock::given(path("/calls"))
        .and(body_string_contains(b.as_str()))
        .respond_with(rest.answer(429))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&rest.server)
        .await;
    Mock::given(path("/calls"))
        .and(body_string_contains(b.as_str()))
        .respond_with(
            rest.answer(408).pg_error("PGRST003", "Timed out acquiring connection from connection pool."),
        )
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&rest.server)
        .await;

    let dir = DataDir::new("park");
    let store = start_store(&dir.0, &rest.uri(), JWT_KEY, None).await;
    let reader = store.reader();
    place_call(&store, &a, None).await;
    place_call(&store, &c, None).await;
    until(Duration::from_secs(5), "A's turns and C's first row parked", async || {
        reader.outbox_depth().await.unwrap().1 == 2
    })
    .await;
    // B starts with two rows parked ahead of it in the outbox.
    place_call(&store, &b, None).await;
    until_delivered(&rest, &reader, 3 * ROWS_PER_CALL - 2, Duration::from_secs(5)).await;

    // B: retried through 429 and 408, then everything delivered once, in order.
    let served_b = rest.for_call(&b);
    let mut want = vec!["POST /calls[in_progress] 429".to_owned(), "POST /calls[in_progress] 408".to_owned()];
    want.extend(plain_call_order());
    assert_eq!(labels(&served_b), want);
    assert_each_row_delivered_once(&served_b);

    // A: the parked turns did not hold back its events.
    assert_eq!(
        labels(&rest.for_call(&a)),
        [
            "POST /calls[in_progress] 201",
            "POST /calls[completed] 201",
            "POST /call_turns 400",
            "POST /call_events 201"
        ]
    );
    // C: the parked first row did not hold back the rest.
    assert_eq!(
        labels(&rest.for_call(&c)),
        [
            "POST /calls[in_progress] 409",
            "POST /calls[completed] 201",
            "POST /call_turns 201",
            "POST /call_events 201"
        ]
    );

    // Parked rows stay, with the reason, and are not tried again.
    tokio::time::sleep(BACKOFF.max * 2).await;
    assert_eq!(reader.outbox_depth().await.unwrap(), (0, 2));
    let parked_a = outbox(&reader, &a).await;
    assert_eq!(parked_a.len(), 1, "{parked_a:?}");
    assert_eq!((parked_a[0].state.as_str(), parked_a[0].target.as_str()), ("parked", "call_turns"));
    assert_eq!(parked_a[0].last_status, Some(400));
    assert_eq!(parked_a[0].attempts, 1);
    assert!(parked_a[0].last_error.as_deref().unwrap().contains("PGRST204"), "{parked_a:?}");
    let parked_c = outbox(&reader, &c).await;
    assert_eq!(parked_c.len(), 1, "{parked_c:?}");
    assert_eq!((parked_c[0].state.as_str(), parked_c[0].target.as_str()), ("parked", "calls"));
    assert_eq!(parked_c[0].last_status, Some(409));
    assert!(parked_c[0].last_error.as_deref().unwrap().contains("23505"), "{parked_c:?}");
    assert!(outbox(&reader, &b).await.is_empty());
    assert_eq!(rest.served().len(), 3 * ROWS_PER_CALL + 2, "no parked row was sent again");
    store.shutdown(Duration::from_secs(2)).await;
}

// --- 4. a server slower than the client's timeout -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_slower_than_the_timeout_is_retried_then_delivered_when_it_recovers() {
    let rest = Rest::start().await;
    Mock::given(method("POST"))
        .respond_with(rest.answer(201).delay(TIMEOUT * 3))
        .with_priority(1)
        .mount(&rest.server)
        .await;
    let dir = DataDir::new("slow");
    let store = start_store(&dir.0, &rest.uri(), JWT_KEY, None).await;
    let reader = store.reader();
    let call = sid("slow");
    place_call(&store, &call, None).await;
    until(Duration::from_secs(5), "two timed-out attempts", async || {
        let rows = outbox(&reader, &call).await;
        rows.first().is_some_and(|r| r.attempts >= 2)
    })
    .await;
    let rows = outbox(&reader, &call).await;
    assert_eq!(rows.len(), ROWS_PER_CALL, "nothing lost or dropped: {rows:?}");
    let head = &rows[0];
    assert_eq!(head.state, "pending");
    assert_eq!(head.last_status, None, "no answer, no status");
    assert!(head.last_error.as_deref().unwrap().contains("timed out"), "{head:?}");
    assert!(rows[1..].iter().all(|r| r.attempts == 0), "later rows wait behind the head: {rows:?}");
    let early = rest.served();
    assert!(early.iter().all(|s| s.late && s.row() == early[0].row()), "{:?}", labels(&early));

    rest.heal().await; // the server is fast again
    until_delivered(&rest, &reader, ROWS_PER_CALL, Duration::from_secs(5)).await;
    let served = rest.for_call(&call);
    assert_eq!(delivered_labels(&served), plain_call_order());
    assert_each_row_delivered_once(&served);
    assert_eq!(reader.outbox_depth().await.unwrap(), (0, 0));
    store.shutdown(Duration::from_secs(2)).await;
}

// --- 5. nothing listening -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_keeps_rows_pending_until_a_server_appears() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The listener is dropped: connections to the port are refused.
    let dir = DataDir::new("refused");
    let store = start_store(&dir.0, &format!("http://127.0.0.1:{port}"), JWT_KEY, None).await;
    let reader = store.reader();
    let call = sid("refused");
    place_call(&store, &call, None).await;
    until(Duration::from_secs(5), "two refused attempts", async || {
        outbox(&reader, &call).await.first().is_some_and(|r| r.attempts >= 2)
    })
    .await;
    let before = outbox(&reader, &call).await;
    until(Duration::from_secs(5), "attempts keep growing", async || {
        outbox(&reader, &call).await[0].attempts >= before[0].attempts + 2
    })
    .await;
    let rows = outbox(&reader, &call).await;
    assert_eq!(rows.len(), ROWS_PER_CALL, "{rows:?}");
    assert!(rows.iter().all(|r| r.state == "pending"), "{rows:?}");
    assert_eq!(rows[0].last_status, None);
    assert!(rows[0].last_error.as_deref().unwrap().contains("connection failed"), "{:?}", rows[0]);
    assert!(rows[1..].iter().all(|r| r.attempts == 0 && r.last_error.is_none()), "{rows:?}");
    assert_eq!(reader.outbox_depth().await.unwrap(), (ROWS_PER_CALL as u64, 0));

    // A server comes up on that port: the same store delivers everything, once, in order.
    let rest = Rest::on(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()).await;
    until_delivered(&rest, &reader, ROWS_PER_CALL, Duration::from_secs(5)).await;
    assert_eq!(labels(&rest.served()), plain_call_order());
    assert_eq!(reader.outbox_depth().await.unwrap(), (0, 0));
    store.shutdown(Duration::from_secs(2)).await;
}

// --- 6. head-of-line per call, not across calls ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_row_holds_back_its_own_call_only() {
    let rest = Rest::start().await;
    let (a, b) = (sid("holdA"), sid("freeB"));
    const FAILURES: usize = 5;
    Mock::given(path("/calls"))
        .and(body_string_contains(a.as_str()))
        .respond_with(
            rest.answer(503).pg_error("PGRST001", "Database client error. Retrying the connection."),
        )
        .up_to_n_times(FAILURES as u64)
        .with_priority(1)
        .mount(&rest.server)
        .await;
    let dir = DataDir::new("hol");
    let store = start_store(&dir.0, &rest.uri(), JWT_KEY, None).await;
    let reader = store.reader();
    place_call(&store, &a, None).await;
    place_call(&store, &b, None).await;
    until_delivered(&rest, &reader, 2 * ROWS_PER_CALL, Duration::from_secs(8)).await;

    let served = rest.served();
    let a_first_ok = served.iter().position(|s| s.call_sid() == a && s.ok()).unwrap();
    let b_last_ok = served.iter().rposition(|s| s.call_sid() == b && s.ok()).unwrap();
    assert!(b_last_ok < a_first_ok, "B was delivered while A waited: {:?}", labels(&served));
    // Before its head row got through, A sent nothing but that row.
    let a_before: Vec<&Served> = served[..a_first_ok].iter().filter(|s| s.call_sid() == a).collect();
    assert_eq!(a_before.len(), FAILURES);
    assert!(a_before.iter().all(|s| s.status == 503 && s.row() == served[a_first_ok].row()));
    assert_eq!(delivered_labels(&rest.for_call(&a)), plain_call_order());
    assert_eq!(labels(&rest.for_call(&b)), plain_call_order());
    assert_each_row_delivered_once(&served);
    store.shutdown(Duration::from_secs(2)).await;
}

// --- 7. restart -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_queued_while_supabase_fails_survive_a_restart_and_arrive_once() {
    let rest = Rest::start().await;
    Mock::given(method("POST")).respond_with(rest.answer(503)).with_priority(1).mount(&rest.server).await;
    let dir = DataDir::new("restart");
    let calls = [sid("rsA"), sid("rsB")];
    let store = start_store(&dir.0, &rest.uri(), JWT_KEY, None).await;
    for c in &calls {
        place_call(&store, c, None).await;
    }
    let reader = store.reader();
    until(Duration::from_secs(5), "every row queued, each call's head failing", async || {
        let heads = calls.iter().filter(|c| rest.for_call(c).iter().any(|s| s.status == 503)).count();
        reader.outbox_depth().await.unwrap() == (2 * ROWS_PER_CALL as u64, 0) && heads == 2
    })
    .await;
    store.shutdown(Duration::from_secs(2)).await;
    assert!(rest.served().iter().all(|s| !s.ok()), "nothing delivered before the restart");

    rest.heal().await; // Supabase is back
    let store = start_store(&dir.0, &rest.uri(), JWT_KEY, None).await;
    let reader = store.reader();
    until_delivered(&rest, &reader, 2 * ROWS_PER_CALL, Duration::from_secs(5)).await;
    let served = rest.served();
    assert_each_row_delivered_once(&served);
    assert_eq!(served.iter().filter(|s| s.ok()).count(), 2 * ROWS_PER_CALL, "no row twice");
    for c in &calls {
        assert_eq!(delivered_labels(&rest.for_call(c)), plain_call_order(), "{c}");
    }
    assert_eq!(reader.outbox_depth().await.unwrap(), (0, 0));
    store.shutdown(Duration::from_secs(2)).await;
}

// --- 8. the lead PATCH after a summary ------------------------------------------------------

async fn chat_and_summarizer() -> (ChatSim, Summarizer) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chat = ChatSim::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let s = Summarizer::new(&chat.base_url(), "sk-test-fake", "gpt-sim", Duration::from_secs(5)).unwrap();
    (chat, s)
}

/// Runs one summarised call for `lead` and returns the PATCH the server received.
async fn patch_for_lead(lead: &str) -> Served {
    let rest = Rest::start().await;
    let (_chat, summarizer) = chat_and_summarizer().await;
    let dir = DataDir::new("lead");
    let store = start_store(&dir.0, &rest.uri(), SECRET_KEY, Some(summarizer)).await;
    let reader = store.reader();
    let call = sid("lead");
    place_call(&store, &call, Some(lead)).await;
    // Four rows, then the summarised calls row and the lead PATCH.
    until_delivered(&rest, &reader, ROWS_PER_CALL + 2, Duration::from_secs(8)).await;
    let patches: Vec<Served> = rest.served().into_iter().filter(|s| s.method == "PATCH").collect();
    assert_eq!(patches.len(), 1, "{:?}", labels(&rest.served()));
    store.shutdown(Duration::from_secs(2)).await;
    patches[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_patches_the_lead_after_the_summarised_call_row() {
    let rest = Rest::start().await;
    let (chat, summarizer) = chat_and_summarizer().await;
    let dir = DataDir::new("summary");
    let store = start_store(&dir.0, &rest.uri(), JWT_KEY, Some(summarizer)).await;
    let reader = store.reader();
    let call = sid("sum");
    let lead = "+15550001111";
    place_call(&store, &call, Some(lead)).await;
    until_delivered(&rest, &reader, ROWS_PER_CALL + 2, Duration::from_secs(8)).await;
    assert_eq!(chat.requests(), 1);

    let served = rest.for_call(&call);
    assert_eq!(
        labels(&served),
        [
            "POST /calls[in_progress] 201",
            "POST /calls[completed] 201",
            "POST /call_turns 201",
            "POST /call_events 201",
            "POST /calls[completed] 201",
            "PATCH /leads 204",
        ]
    );
    let detail = reader.call_detail(call.clone()).await.unwrap().unwrap();
    assert_eq!(detail.call.summary_state, "done");
    // The model saw the transcript in speech order: its first caller line is the 800 ms one.
    let summary = detail.call.summary.clone().unwrap();
    assert_eq!(summary, "The caller said: \"Hello, who is this?\". The agent answered.");
    assert_eq!(detail.call.outcome.as_deref(), Some("interested"));

    let summarised = served[4].json();
    assert_eq!(summarised["summary"], summary.as_str());
    assert_eq!(summarised["outcome"], "interested");

    let patch = &served[5];
    assert_eq!(patch.query, "id=eq.%2B15550001111", "`+` must be %2B or it reads as a space");
    assert_eq!(patch.header("apikey"), [JWT_KEY]);
    assert_eq!(patch.header("authorization"), [format!("Bearer {JWT_KEY}").as_str()]);
    assert_eq!(patch.header("content-type"), ["application/json"]);
    let prefer = patch.header("prefer").join(",");
    assert!(prefer.contains("return=minimal") && !prefer.contains("resolution"), "{prefer}");
    let body = patch.json();
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["last_call_sid", "last_call_summary", "status", "updated_at"], "{body}");
    assert_eq!(body["status"], "interested");
    assert_eq!(body["last_call_sid"], call.as_str());
    assert_eq!(body["last_call_summary"], summary.as_str());
    assert!(humantime::parse_rfc3339(body["updated_at"].as_str().unwrap()).is_ok(), "{body}");
    assert_eq!(reader.outbox_depth().await.unwrap(), (0, 0));
    store.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_id_with_a_plus_is_percent_encoded() {
    let patch = patch_for_lead("lead+42").await;
    assert_eq!(patch.path, "/leads");
    assert_eq!(patch.query, "id=eq.lead%2B42");
    assert!(patch.header("authorization").is_empty(), "sb_secret_ key: apikey only");
}

/// PostgREST reads `+` in a query string as a literal `+`, not a space (since v6.0,
/// PostgREST/postgrest#1348), so a space must go as `%20`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_id_with_spaces_is_percent_encoded() {
    let patch = patch_for_lead("acme lead+7").await;
    assert_eq!(patch.query, "id=eq.acme%20lead%2B7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_summary_still_delivers_the_call_and_skips_the_lead() {
    let rest = Rest::start().await;
    let (chat, summarizer) = chat_and_summarizer().await;
    chat.fail_next(100);
    let dir = DataDir::new("nosummary");
    let store = start_store(&dir.0, &rest.uri(), JWT_KEY, Some(summarizer)).await;
    let reader = store.reader();
    let call = sid("nosum");
    place_call(&store, &call, Some("00000000-0000-4000-8000-000000000001")).await;
    until_delivered(&rest, &reader, ROWS_PER_CALL, Duration::from_secs(5)).await;
    // Three attempts with the store's fixed 1–2 s and 2–4 s pauses between them.
    until(Duration::from_secs(12), "summary given up", async || {
        reader.call_detail(call.clone()).await.unwrap().unwrap().call.summary_state == "failed"
    })
    .await;
    // Each of the store's three attempts is itself retried by the OpenAI client.
    assert!(chat.requests() >= 3, "three attempts: {}", chat.requests());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served = rest.for_call(&call);
    assert_eq!(labels(&served), plain_call_order(), "no summarised row, no PATCH");
    let completed = served[1].json();
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["summary"], Value::Null);
    assert_eq!(completed["outcome"], Value::Null);
    assert_eq!(reader.outbox_depth().await.unwrap(), (0, 0));
    store.shutdown(Duration::from_secs(2)).await;
}
