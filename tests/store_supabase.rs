//! Call records through the real server into a real PostgreSQL behind a real PostgREST-dialect
//! server (`postrust-server`), with the migration from `supabase/migrations/` applied:
//! exact rows after three calls, the REST server down for 10 s in the middle of ten calls, a
//! row rejected with 400 parked without blocking others, and the bridge killed with SIGKILL and
//! restarted.
//!
//! Needs `scripts/supabase-local.sh` (run by the tests themselves; installs what is missing).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::clients::summary::Summarizer;
use callbridge::clients::supabase::ServiceKey;
use callbridge::config;
use callbridge::config::UpstreamConfig;
use callbridge::driver::Shared;
use callbridge::server::api::ApiState;
use callbridge::server::{self, ServerHandle, Services};
use callbridge::sim::caller::{self, CallerConfig, Step};
use callbridge::sim::chat::ChatSim;
use callbridge::sim::fixtures;
use callbridge::sim::realtime::{self as sim_rt, SimConfig, SimHandle};
use callbridge::store::{Backoff, Store, StoreConfig, StoreReader, SupabaseTarget};
use serde_json::Value;
use support::{RestServer, TestDb, eventually, free_port, service_role_jwt};

const TOKEN: &str = "test-api-token";

fn script() -> Vec<Step> {
    vec![
        Step::Speak(fixtures::clip("caller_question").unwrap()),
        Step::WaitAgentDone { quiet: Duration::from_millis(400), timeout: Duration::from_secs(30) },
        Step::HangUp,
    ]
}

async fn sims() -> (SimHandle, ChatSim) {
    callbridge::telemetry::init(false, "warn");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = SimConfig::from_fixtures().unwrap();
    cfg.speed = 50.0;
    cfg.vad.silence_ms = 800;
    let rt = sim_rt::start(cfg, ([127, 0, 0, 1], 0).into()).await.unwrap();
    let chat = ChatSim::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    (rt, chat)
}

struct Bridge {
    server: ServerHandle,
    store: Store,
    reader: StoreReader,
    _dir: tempdir::Dir,
}

async fn bridge(rt: &SimHandle, chat: &ChatSim, rest: &RestServer) -> Bridge {
    let dir = tempdir::Dir::new("store-e2e");
    let store = Store::start(StoreConfig {
        data_dir: dir.path.clone(),
        supabase: Some(SupabaseTarget {
            rest_base: rest.url(),
            key: ServiceKey::parse(&service_role_jwt()),
            lead_table: "leads".into(),
            timeout: Duration::from_secs(5),
            backoff: Backoff { first: Duration::from_millis(200), max: Duration::from_secs(1) },
        }),
        summarizer: Some(
            Summarizer::new(&chat.base_url(), "sk-test-fake", "gpt-sim", Duration::from_secs(10)).unwrap(),
        ),
    })
    .await
    .unwrap();
    let reader = store.reader();
    let shared = Arc::new(Shared::new(
        UpstreamConfig::simulator(rt.url()),
        config::default_call_params(),
        config::DEFAULT_MAX_MESSAGE_BYTES,
        64,
        Some(store.notes.clone()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let services = Services {
        api: ApiState { token: Some(TOKEN.into()), store: Some(reader.clone()) },
        ..Default::default()
    };
    let prometheus = callbridge::metrics::install().unwrap();
    let server = server::start_with(listener, shared, prometheus, Duration::from_secs(2), services).unwrap();
    Bridge { server, store, reader, _dir: dir }
}

fn caller(addr: std::net::SocketAddr, lead: &str, n: usize) -> CallerConfig {
    let mut c = CallerConfig::twilio(format!("ws://{addr}/media/twilio"), script());
    c.custom_parameters = BTreeMap::from([
        ("leadId".to_owned(), lead.to_owned()),
        ("from".to_owned(), format!("+1555000{n:04}")),
        ("to".to_owned(), "+15559990000".to_owned()),
        ("direction".to_owned(), "outbound".to_owned()),
    ]);
    c
}

fn lead_uuid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Every call summarised and the outbox empty (or only parked rows left).
async fn settled(reader: &StoreReader, calls: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let list = reader.list_calls(200, None).await.unwrap();
        let summarized = list.iter().filter(|c| c.summary_state != "pending").count();
        let (pending, _) = reader.outbox_depth().await.unwrap();
        if list.len() == calls && summarized == calls && pending == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Say what is stuck.
    for c in reader.list_calls(200, None).await.unwrap() {
        eprintln!("call {} status={} summary_state={}", c.call_sid, c.status, c.summary_state);
        let d = reader.call_detail(c.call_sid.clone()).await.unwrap().unwrap();
        for row in &d.outbox {
            eprintln!(
                "stuck: {} {} {} attempts={} {:?}",
                row.call_sid, row.target, row.state, row.attempts, row.last_error
            );
        }
    }
    false
}

/// The local record of each call, as `/v1/calls/{sid}` serves it.
async fn local_detail(reader: &StoreReader, sid: &str) -> Value {
    serde_json::to_value(reader.call_detail(sid.to_owned()).await.unwrap().unwrap()).unwrap()
}

/// PostgreSQL holds exactly what the local store recorded for `sid`.
async fn assert_same_rows(db: &TestDb, reader: &StoreReader, sid: &str) {
    let local = local_detail(reader, sid).await;
    let turns = local["turns"].as_array().unwrap();
    let pg_turns = db.psql(&format!(
        "SELECT item_id || '|' || role || '|' || started_at_ms || '|' || interrupted || '|' || text
         FROM call_turns WHERE call_sid = '{sid}' ORDER BY started_at_ms, item_id"
    ));
    let want: Vec<String> = turns
        .iter()
        .map(|t| {
            format!(
                "{}|{}|{}|{}|{}",
                t["item_id"].as_str().unwrap(),
                t["role"].as_str().unwrap(),
                t["started_at_ms"],
                t["interrupted"].as_bool().unwrap(),
                t["text"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(pg_turns.lines().collect::<Vec<_>>(), want, "turns of {sid}");
    let events = local["timeline"].as_array().unwrap();
    let pg_events = db.psql(&format!(
        "SELECT seq || '|' || kind || '|' || at_ms FROM call_events WHERE call_sid = '{sid}' ORDER BY seq"
    ));
    let want: Vec<String> = events
        .iter()
        .map(|e| format!("{}|{}|{}", e["seq"], e["kind"].as_str().unwrap(), e["at_ms"]))
        .collect();
    assert_eq!(pg_events.lines().collect::<Vec<_>>(), want, "events of {sid}");
    let row = db.psql(&format!(
        "SELECT status || '|' || coalesce(outcome, '-') || '|' || coalesce(summary, '-') || '|' || duration_ms
         FROM calls WHERE call_sid = '{sid}'"
    ));
    let want = format!(
        "{}|{}|{}|{}",
        local["status"].as_str().unwrap(),
        local["outcome"].as_str().unwrap_or("-"),
        local["summary"].as_str().unwrap_or("-"),
        local["duration_ms"]
    );
    assert_eq!(row.trim(), want, "calls row of {sid}");
}

async fn http(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_calls_land_in_postgres_exactly() {
    let db = TestDb::create("three");
    for n in 0..3 {
        db.psql(&format!(
            "INSERT INTO leads (id, name, status) VALUES ('{}', 'Lead {n}', 'new')",
            lead_uuid(n)
        ));
    }
    let rest = RestServer::start(&db);
    let (rt, chat) = sims().await;
    let b = bridge(&rt, &chat, &rest).await;
    let addr = b.server.addr;

    let calls: Vec<_> = (0..3).map(|n| caller(addr, &lead_uuid(n), n)).collect();
    let sids: Vec<String> = calls.iter().map(|c| c.call_sid.clone()).collect();
    let runs: Vec<_> = calls.into_iter().map(|c| tokio::spawn(caller::run_call(c))).collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    assert!(settled(&b.reader, 3, Duration::from_secs(30)).await, "outbox did not drain");

    assert_eq!(db.count("SELECT count(*) FROM calls"), 3);
    assert_eq!(
        db.count("SELECT count(*) FROM calls WHERE status = 'completed' AND direction = 'outbound'"),
        3
    );
    assert_eq!(db.count("SELECT count(*) FROM calls WHERE summary IS NOT NULL AND outcome IS NOT NULL"), 3);
    let mut turns = 0;
    let mut events = 0;
    for (n, sid) in sids.iter().enumerate() {
        assert_same_rows(&db, &b.reader, sid).await;
        let local = local_detail(&b.reader, sid).await;
        turns += local["turns"].as_array().unwrap().len() as i64;
        events += local["timeline"].as_array().unwrap().len() as i64;
        assert!(local["outbox"].as_array().unwrap().is_empty());
        // The caller spoke first: their turn sorts first even though its transcript completes
        // after the agent has started answering.
        let first = db.psql(&format!(
            "SELECT role FROM call_turns WHERE call_sid = '{sid}' ORDER BY started_at_ms LIMIT 1"
        ));
        assert_eq!(first.trim(), "caller");
        let lead = db.psql(&format!(
            "SELECT l.status = c.outcome AND l.last_call_summary = c.summary AND l.updated_at IS NOT NULL
             FROM leads l JOIN calls c ON c.call_sid = l.last_call_sid WHERE l.id = '{}'",
            lead_uuid(n)
        ));
        assert_eq!(lead.trim(), "t", "lead {n} updated from call {sid}");
        assert_eq!(
            db.psql(&format!("SELECT from_number || ' ' || lead_id FROM calls WHERE call_sid = '{sid}'"))
                .trim(),
            format!("+1555000{n:04} {}", lead_uuid(n))
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM call_turns"), turns);
    assert_eq!(db.count("SELECT count(*) FROM call_events"), events);
    assert!(turns >= 6, "both sides of three calls: {turns}");
    eprintln!("three calls: calls=3 call_turns={turns} call_events={events}");

    // The read API: token required, then the same data.
    assert_eq!(http(addr, "/v1/calls", None).await.0, 401);
    assert_eq!(http(addr, "/v1/calls", Some("wrong")).await.0, 401);
    let (status, body) = http(addr, "/v1/calls?limit=2", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["calls"].as_array().unwrap().len(), 2);
    let before = page["next_before"].as_str().unwrap().to_owned();
    let (_, rest_page) = http(addr, &format!("/v1/calls?before={before}"), Some(TOKEN)).await;
    let rest_page: Value = serde_json::from_str(&rest_page).unwrap();
    assert_eq!(rest_page["calls"].as_array().unwrap().len(), 1);
    assert_eq!(http(addr, "/v1/calls?limit=0", Some(TOKEN)).await.0, 400);
    assert_eq!(http(addr, "/v1/calls/CAnosuchcall", Some(TOKEN)).await.0, 404);
    let (status, body) = http(addr, &format!("/v1/calls/{}", sids[0]), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["call_sid"], sids[0].as_str());

    // Row level security: the anon role sees nothing through the REST server.
    let anon = reqwest::get(format!("{}/calls", rest.url())).await.unwrap();
    assert_eq!(anon.status().as_u16(), 401);

    b.server.shutdown(Duration::from_secs(5)).await;
    b.store.shutdown(Duration::from_secs(2)).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_server_down_for_ten_seconds_mid_calls_loses_and_repeats_nothing() {
    let db = TestDb::create("outage");
    for n in 0..10 {
        db.psql(&format!("INSERT INTO leads (id, status) VALUES ('{}', 'new')", lead_uuid(n)));
    }
    let mut rest = RestServer::start(&db);
    let (rt, chat) = sims().await;
    let b = bridge(&rt, &chat, &rest).await;
    let addr = b.server.addr;

    let calls: Vec<_> = (0..10).map(|n| caller(addr, &lead_uuid(n), n)).collect();
    let sids: Vec<String> = calls.iter().map(|c| c.call_sid.clone()).collect();
    let mut runs = Vec::new();
    for c in calls {
        runs.push(tokio::spawn(caller::run_call(c)));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Some calls have finished and been delivered, the rest are mid-call.
    rest.stop();
    let stopped = Instant::now();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    let remaining = Duration::from_secs(10).saturating_sub(stopped.elapsed());
    tokio::time::sleep(remaining).await;
    let (pending, parked) = b.reader.outbox_depth().await.unwrap();
    assert!(pending > 0, "rows were waiting while the REST server was down");
    assert_eq!(parked, 0);
    let in_pg_during = db.count("SELECT count(*) FROM calls WHERE status = 'completed'");
    rest.restart();
    let restarted = Instant::now();
    assert!(settled(&b.reader, 10, Duration::from_secs(30)).await, "outbox did not drain after the restart");
    let drained = restarted.elapsed();

    assert_eq!(db.count("SELECT count(*) FROM calls"), 10);
    assert_eq!(db.count("SELECT count(*) FROM calls WHERE status = 'completed' AND summary IS NOT NULL"), 10);
    for sid in &sids {
        assert_same_rows(&db, &b.reader, sid).await;
    }
    assert_eq!(db.count("SELECT count(*) FROM leads WHERE last_call_sid IS NOT NULL"), 10);
    assert_eq!(b.reader.outbox_depth().await.unwrap(), (0, 0));
    let turns = db.count("SELECT count(*) FROM call_turns");
    let events = db.count("SELECT count(*) FROM call_events");
    eprintln!(
        "outage: {pending} rows pending during a {:.1} s outage, {in_pg_during} calls completed in PostgreSQL \
         before it; drained {:.2} s after the restart; calls=10 call_turns={turns} call_events={events}",
        (restarted - stopped).as_secs_f64(),
        drained.as_secs_f64()
    );
    b.server.shutdown(Duration::from_secs(5)).await;
    b.store.shutdown(Duration::from_secs(2)).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_rejected_with_400_is_parked_and_blocks_nothing() {
    let db = TestDb::create("parked");
    db.psql(&format!("INSERT INTO leads (id, status) VALUES ('{}', 'new')", lead_uuid(1)));
    let rest = RestServer::start(&db);
    let (rt, chat) = sims().await;
    let b = bridge(&rt, &chat, &rest).await;
    let addr = b.server.addr;

    // `leads.id` is a uuid: PATCH ?id=eq.not-a-uuid is a 400 (22P02) from PostgREST.
    let bad = caller(addr, "not-a-uuid", 0);
    let good = caller(addr, &lead_uuid(1), 1);
    let (bad_sid, good_sid) = (bad.call_sid.clone(), good.call_sid.clone());
    caller::run_call(bad).await.unwrap();
    caller::run_call(good).await.unwrap();
    assert!(settled(&b.reader, 2, Duration::from_secs(30)).await);

    let detail = local_detail(&b.reader, &bad_sid).await;
    let outbox = detail["outbox"].as_array().unwrap();
    assert_eq!(outbox.len(), 1, "only the lead PATCH is left: {outbox:?}");
    assert_eq!(outbox[0]["state"], "parked");
    assert_eq!(outbox[0]["target"], "leads");
    assert_eq!(outbox[0]["last_status"], 400);
    assert!(outbox[0]["last_error"].as_str().unwrap().contains("22P02"), "{}", outbox[0]);
    assert_eq!(b.reader.outbox_depth().await.unwrap(), (0, 1));
    // Everything else arrived, for both calls.
    assert_same_rows(&db, &b.reader, &bad_sid).await;
    assert_same_rows(&db, &b.reader, &good_sid).await;
    assert_eq!(
        db.psql(&format!("SELECT last_call_sid FROM leads WHERE id = '{}'", lead_uuid(1))).trim(),
        good_sid
    );
    let (_, metrics) = http(addr, "/metrics", None).await;
    assert!(metrics.contains("callbridge_outbox_parked_total{table=\"leads\"}"), "{metrics}");
    let (status, body) = http(addr, &format!("/v1/calls/{bad_sid}"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"state\":\"parked\""), "{body}");
    b.server.shutdown(Duration::from_secs(5)).await;
    b.store.shutdown(Duration::from_secs(2)).await;
    rt.shutdown().await;
}

// --- the bridge as a process, killed with SIGKILL -----------------------------------------------

struct BridgeProcess {
    child: Child,
    port: u16,
}

impl BridgeProcess {
    fn spawn(data_dir: &std::path::Path, rt: &SimHandle, chat: &ChatSim, rest: &RestServer) -> Self {
        let port = free_port();
        let log = std::fs::File::create(data_dir.join(format!("bridge-{port}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_callbridge"))
            .arg("serve")
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("OPENAI_API_KEY", "sk-test-fake")
            .env("OPENAI_REALTIME_URL", rt.url())
            .env("OPENAI_BASE_URL", chat.base_url())
            .env("SUMMARY_MODEL", "gpt-sim")
            .env("CALLBRIDGE_DATA_DIR", data_dir)
            .env("SUPABASE_URL", rest.url())
            .env("SUPABASE_REST_PATH", "/")
            .env("SUPABASE_SERVICE_ROLE_KEY", service_role_jwt())
            .env("SUPABASE_RETRY_FIRST", "200ms")
            .env("SUPABASE_RETRY_MAX", "1s")
            .env("API_TOKEN", TOKEN)
            .env("TWILIO_VALIDATE_SIGNATURE", "false")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "bridge did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

async fn list(addr: std::net::SocketAddr) -> Vec<Value> {
    let (status, body) = http(addr, "/v1/calls", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["calls"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_loses_nothing() {
    let db = TestDb::create("sigkill");
    for n in 0..8 {
        db.psql(&format!("INSERT INTO leads (id, status) VALUES ('{}', 'new')", lead_uuid(n)));
    }
    // Supabase is down while the first bridge runs: everything waits in its outbox.
    let mut rest = RestServer::start(&db);
    rest.stop();
    let (rt, chat) = sims().await;
    let dir = tempdir::Dir::new("store-sigkill");
    let first = BridgeProcess::spawn(&dir.path, &rt, &chat, &rest);
    let addr = first.addr();

    let done: Vec<_> = (0..5).map(|n| caller(addr, &lead_uuid(n), n)).collect();
    let runs: Vec<_> = done.into_iter().map(|c| tokio::spawn(caller::run_call(c))).collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    let summarized = eventually(Duration::from_secs(20), || {
        let calls = futures_block(list(addr));
        calls.len() == 5 && calls.iter().all(|c| c["summary_state"] == "done")
    })
    .await;
    assert!(summarized, "five calls recorded and summarised locally");
    // Three more calls, killed mid-speech with the process.
    let live: Vec<_> = (5..8).map(|n| caller(addr, &lead_uuid(n), n)).collect();
    let live_runs: Vec<_> = live.into_iter().map(|c| tokio::spawn(caller::run_call(c))).collect();
    let started = eventually(Duration::from_secs(10), || futures_block(list(addr)).len() == 8).await;
    assert!(started, "the live calls were recorded as started");
    let killed = Instant::now();
    first.sigkill();
    for r in live_runs {
        let _ = r.await.unwrap(); // the bridge vanished under them
    }

    rest.restart();
    let second = BridgeProcess::spawn(&dir.path, &rt, &chat, &rest);
    let addr = second.addr();
    let arrived = eventually(Duration::from_secs(30), || {
        db.count("SELECT count(*) FROM calls WHERE status = 'completed' AND summary IS NOT NULL") == 5
            && db.count("SELECT count(*) FROM calls WHERE status = 'interrupted'") == 3
            && futures_block(http(addr, "/metrics", None))
                .1
                .contains("callbridge_outbox_depth{state=\"pending\"} 0")
    })
    .await;
    assert!(arrived, "every row arrived after the restart");
    let recovered = killed.elapsed();
    let calls = list(addr).await;
    assert_eq!(calls.len(), 8);
    let mut turns = 0;
    for c in &calls {
        let sid = c["call_sid"].as_str().unwrap();
        let (_, body) = http(addr, &format!("/v1/calls/{sid}"), Some(TOKEN)).await;
        let local: Value = serde_json::from_str(&body).unwrap();
        assert!(local["outbox"].as_array().unwrap().is_empty(), "{sid}: {}", local["outbox"]);
        let pg_turns = db.count(&format!("SELECT count(*) FROM call_turns WHERE call_sid = '{sid}'"));
        assert_eq!(pg_turns, local["turns"].as_array().unwrap().len() as i64, "{sid}");
        let pg_events = db.count(&format!("SELECT count(*) FROM call_events WHERE call_sid = '{sid}'"));
        assert_eq!(pg_events, local["timeline"].as_array().unwrap().len() as i64, "{sid}");
        turns += pg_turns;
    }
    assert_eq!(db.count("SELECT count(*) FROM calls"), 8);
    eprintln!(
        "sigkill: 5 completed + 3 interrupted calls in PostgreSQL {:.2} s after the kill \
         (restart included); call_turns={turns}",
        recovered.as_secs_f64()
    );
    second.sigkill();
    rt.shutdown().await;
}

/// Runs a future to completion from a synchronous closure on the multi-thread runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

mod tempdir {
    /// A fresh directory under the system temp dir, removed on drop.
    pub struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub fn new(tag: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("callbridge-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
