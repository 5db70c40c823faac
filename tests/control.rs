//! Call control through the real server on loopback: the signed voice webhook and its TwiML,
//! signed media-stream upgrades and single-use stream tokens (a forged, replayed or missing one
//! costs no Realtime session), outbound calls through a fake provider REST API that checks the
//! wire format, and signed status callbacks landing in the call record.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callbridge::auth::{self, StreamTokens};
use callbridge::clients::telephony_rest::TelephonyRest;
use callbridge::config::{self, UpstreamConfig};
use callbridge::driver::{CallControl, Shared};
use callbridge::server::api::ApiState;
use callbridge::server::control::{BUSY_MESSAGE, Control, UpgradeLimiter};
use callbridge::server::{self, ServerHandle, Services};
use callbridge::sim::caller::{self, CallerConfig, Step};
use callbridge::sim::fixtures;
use callbridge::sim::provider_call::inbound_form;
use callbridge::sim::realtime::{self as sim_rt, SimConfig, SimHandle};
use callbridge::sim::telephony_api::{self as fake_api, FakeTelephonyApi};
use callbridge::store::{Store, StoreConfig, StoreReader};

const PUBLIC: &str = "https://bridge.example.com";
const AUTH_TOKEN: &str = "test-auth-token-not-a-secret";
const API_TOKEN: &str = "test-api-token";

struct Rig {
    server: ServerHandle,
    sim: SimHandle,
    api: FakeTelephonyApi,
    reader: StoreReader,
    _store: Store,
    /// Every client event the simulator received, one JSON per line.
    capture: std::path::PathBuf,
}

async fn rig(max_calls: usize) -> Rig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut simcfg = SimConfig::from_fixtures().unwrap();
    simcfg.speed = 50.0;
    simcfg.vad.silence_ms = 800;
    let dir =
        std::env::temp_dir().join(format!("callbridge-control-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("client-events.jsonl");
    simcfg.capture_path = Some(capture.clone());
    let sim = sim_rt::start(simcfg, ([127, 0, 0, 1], 0).into()).await.unwrap();
    let store = Store::start(StoreConfig { data_dir: dir.join("data"), supabase: None, summarizer: None })
        .await
        .unwrap();
    let reader = store.reader();
    let control = CallControl {
        stream_tokens: Some(Mutex::new(StreamTokens::new(&[7u8; 32], Duration::from_secs(60)))),
        ..Default::default()
    };
    let shared = Arc::new(
        Shared::new(
            UpstreamConfig::simulator(sim.url()),
            config::default_call_params(),
            config::DEFAULT_MAX_MESSAGE_BYTES,
            max_calls,
            Some(store.notes.clone()),
        )
        .with_control(control),
    );
    let api = FakeTelephonyApi::start().await.unwrap();
    let control = Control {
        public_url: Some(PUBLIC.into()),
        validate: true,
        twilio_auth_token: Some(AUTH_TOKEN.into()),
        signalwire_signing_key: None,
        media_bearer: "media-bearer-for-tests".into(),
        twilio_rest: Some(
            TelephonyRest::twilio(fake_api::ACCOUNT_SID, fake_api::AUTH_TOKEN, &api.base_url()).unwrap(),
        ),
        signalwire_rest: None,
        machine_detection: None,
        limiter: UpgradeLimiter::new(50),
        client_ip_header: None,
        api_token: Some(API_TOKEN.into()),
        shared: shared.clone(),
    };
    let services = Services {
        api: ApiState { token: Some(API_TOKEN.into()), store: Some(reader.clone()) },
        control: Some(Arc::new(control)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prometheus = callbridge::metrics::install().unwrap();
    let server = server::start_with(listener, shared, prometheus, Duration::from_secs(2), services).unwrap();
    Rig { server, sim, api, reader, _store: store, capture }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// POSTs a form to `path` (as the provider would to `PUBLIC + path`), signed with `sign_token`
/// over `signed_url` (defaults to the right URL).
async fn post_form(
    rig: &Rig,
    path: &str,
    form: &[(&str, &str)],
    sign: Option<(&str, Option<&str>)>,
) -> (u16, String) {
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let mut req = reqwest::Client::new()
        .post(format!("http://{}{path}", rig.server.addr))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((token, url)) = sign {
        let url = url.map(str::to_owned).unwrap_or_else(|| format!("{PUBLIC}{path}"));
        req = req.header(auth::TWILIO_SIGNATURE_HEADER, auth::twilio_signature(token, &url, form));
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The stream URL and parameters of a `<Connect><Stream>` document.
fn parse_stream(xml: &str) -> (String, BTreeMap<String, String>) {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let stream = doc.descendants().find(|n| n.has_tag_name("Stream")).expect("a <Stream>");
    assert!(stream.ancestors().any(|n| n.has_tag_name("Connect")), "Stream inside Connect");
    let params = stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .map(|n| (n.attribute("name").unwrap().to_owned(), n.attribute("value").unwrap().to_owned()))
        .collect();
    (stream.attribute("url").unwrap().to_owned(), params)
}

fn script() -> Vec<Step> {
    vec![
        Step::Speak(fixtures::clip("caller_question").unwrap()),
        Step::WaitAgentDone { quiet: Duration::from_millis(400), timeout: Duration::from_secs(30) },
        Step::HangUp,
    ]
}

/// A Twilio caller for `call_sid` with the webhook's stream parameters and a signed upgrade.
fn signed_caller(rig: &Rig, call_sid: &str, params: &BTreeMap<String, String>) -> CallerConfig {
    let mut c = CallerConfig::twilio(format!("ws://{}/media/twilio", rig.server.addr), script());
    c.call_sid = call_sid.to_owned();
    c.custom_parameters = params.clone();
    let url = "wss://bridge.example.com/media/twilio";
    let no_params: [(&str, &str); 0] = [];
    c.headers =
        vec![(auth::TWILIO_SIGNATURE_HEADER.into(), auth::twilio_signature(AUTH_TOKEN, url, &no_params))];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_signed_requests_with_a_stream_and_refuses_the_rest() {
    let rig = rig(8).await;
    let sid = "CA00000000000000000000000000000001";
    let form = inbound_form(sid);

    let (status, xml) = post_form(&rig, "/twiml?leadId=lead-42", &form, Some((AUTH_TOKEN, None))).await;
    assert_eq!(status, 200, "{xml}");
    let (url, params) = parse_stream(&xml);
    assert_eq!(url, "wss://bridge.example.com/media/twilio");
    assert_eq!(params["leadId"], "lead-42");
    assert_eq!(params["from"], "+15550100001");
    assert_eq!(params["to"], "+15550100002");
    assert_eq!(params["direction"], "inbound");
    assert!(params["token"].len() > 40, "a stream token");

    // Unsigned, wrongly signed, signed for another URL: 403.
    assert_eq!(post_form(&rig, "/twiml", &form, None).await.0, 403);
    assert_eq!(post_form(&rig, "/twiml", &form, Some(("wrong-token", None))).await.0, 403);
    let other = Some((AUTH_TOKEN, Some("https://evil.example.com/twiml")));
    assert_eq!(post_form(&rig, "/twiml", &form, other).await.0, 403);
    // A tampered parameter breaks the signature too.
    let sig = auth::twilio_signature(AUTH_TOKEN, &format!("{PUBLIC}/twiml"), &form);
    let mut tampered = form;
    tampered[4] = ("From", "+15550109999");
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(&tampered).finish();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/twiml", rig.server.addr))
        .header(auth::TWILIO_SIGNATURE_HEADER, sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(rig.sim.connections(), 0);
    rig.server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_streams_with_a_fresh_token_reach_the_model() {
    let rig = rig(8).await;
    let sid = "CA00000000000000000000000000000002";
    let (status, xml) = post_form(&rig, "/twiml", &inbound_form(sid), Some((AUTH_TOKEN, None))).await;
    assert_eq!(status, 200);
    let (_, params) = parse_stream(&xml);

    // Upgrade without a signature: refused before any call starts.
    let mut unsigned = signed_caller(&rig, sid, &params);
    unsigned.headers.clear();
    assert!(caller::run_call(unsigned).await.is_err(), "unsigned upgrade refused");

    // A forged token (right call, bad signature) and a token for another call: closed, 1008.
    let mut forged = params.clone();
    let t = forged.get_mut("token").unwrap();
    let flipped = if t.ends_with('A') { 'B' } else { 'A' };
    t.pop();
    t.push(flipped);
    let r = caller::run_call(signed_caller(&rig, sid, &forged)).await.unwrap();
    assert_eq!(r.close.as_ref().map(|c| c.0), Some(1008), "{:?}", r.close);
    let r =
        caller::run_call(signed_caller(&rig, "CA00000000000000000000000000000009", &params)).await.unwrap();
    assert_eq!(r.close.as_ref().map(|c| c.0), Some(1008));
    let mut missing = params.clone();
    missing.remove("token");
    let r = caller::run_call(signed_caller(&rig, sid, &missing)).await.unwrap();
    assert_eq!(r.close.as_ref().map(|c| c.0), Some(1008));
    assert_eq!(rig.sim.connections(), 0, "no Realtime session for refused streams");

    // The real one works, once.
    let r = caller::run_call(signed_caller(&rig, sid, &params)).await.unwrap();
    assert_eq!(r.close.as_ref().map(|c| c.0), Some(1000), "{:?}", r.close);
    assert!(r.audio_ms_received > 1000, "the caller heard the agent");
    assert_eq!(rig.sim.connections(), 1);
    let replay = caller::run_call(signed_caller(&rig, sid, &params)).await.unwrap();
    assert_eq!(replay.close.as_ref().map(|c| c.0), Some(1008), "replayed token refused");
    assert_eq!(rig.sim.connections(), 1, "the replay opened no session");

    let (_, metrics) = reqwest::get(format!("http://{}/metrics", rig.server.addr))
        .await
        .unwrap()
        .text()
        .await
        .map(|t| (0, t))
        .unwrap();
    for reason in ["bad_signature", "replayed", "wrong_call", "missing"] {
        assert!(
            metrics.contains(&format!("callbridge_streams_refused_total{{reason=\"{reason}\"}}")),
            "{reason}"
        );
    }
    // Only the admitted call is on record; the lead id came from the signed token.
    let calls = rig.reader.list_calls(10, None).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].call_sid, sid);
    rig.server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_says_so_politely() {
    let rig = rig(1).await;
    let sid = "CA00000000000000000000000000000003";
    let (_, xml) = post_form(&rig, "/twiml", &inbound_form(sid), Some((AUTH_TOKEN, None))).await;
    let (_, params) = parse_stream(&xml);
    let busy_call = tokio::spawn(caller::run_call(signed_caller(&rig, sid, &params)));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rig.server.shared().active_calls() == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, xml) = post_form(
        &rig,
        "/twiml",
        &inbound_form("CA00000000000000000000000000000004"),
        Some((AUTH_TOKEN, None)),
    )
    .await;
    assert_eq!(status, 200);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let say = doc.descendants().find(|n| n.has_tag_name("Say")).unwrap();
    assert_eq!(say.text(), Some(BUSY_MESSAGE));
    assert!(doc.descendants().any(|n| n.has_tag_name("Hangup")));
    assert!(!doc.descendants().any(|n| n.has_tag_name("Stream")));
    busy_call.await.unwrap().unwrap();
    rig.server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_need_the_token_and_send_the_documented_form() {
    let rig = rig(8).await;
    let url = format!("http://{}/v1/calls", rig.server.addr);
    let body = serde_json::json!({
        "to": "+15550100002", "from": "+15550100001", "lead_id": "lead 7+x",
        "instructions": "Confirm the appointment.", "metadata": {"campaign": "spring"}
    });
    let client = reqwest::Client::new();
    assert_eq!(client.post(&url).json(&body).send().await.unwrap().status().as_u16(), 401);
    let wrong = client.post(&url).bearer_auth("nope").json(&body).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(rig.api.requests().is_empty(), "nothing reached the provider");
    let bad = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"to": "555", "from": "+15550100001"}));
    assert_eq!(bad.send().await.unwrap().status().as_u16(), 400);

    let resp = client.post(&url).bearer_auth(API_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let created: serde_json::Value = resp.json().await.unwrap();
    let call_sid = created["call_sid"].as_str().unwrap().to_owned();
    assert!(call_sid.starts_with("CA") && call_sid.len() == 34, "{call_sid}");

    let reqs = rig.api.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/2010-04-01/Accounts/{}/Calls.json", fake_api::ACCOUNT_SID));
    assert!(r.auth_ok);
    let form: Vec<(&str, &str)> = r.form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        form,
        vec![
            ("To", "+15550100002"),
            ("From", "+15550100001"),
            ("Url", "https://bridge.example.com/twiml?direction=outbound&leadId=lead+7%2Bx"),
            ("StatusCallback", "https://bridge.example.com/twilio/status"),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ]
    );

    // The provider reports no answer (signed): the call record says so, with the lead.
    let status_form = [
        ("AccountSid", "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
        ("CallDuration", "0"),
        ("CallSid", call_sid.as_str()),
        ("CallStatus", "no-answer"),
        ("Direction", "outbound-api"),
        ("From", "+15550100001"),
        ("To", "+15550100002"),
    ];
    assert_eq!(
        post_form(&rig, "/twilio/status", &status_form, None).await.0,
        403,
        "unsigned callback refused"
    );
    assert_eq!(post_form(&rig, "/twilio/status", &status_form, Some((AUTH_TOKEN, None))).await.0, 204);
    let mut detail = None;
    for _ in 0..50 {
        detail = rig.reader.call_detail(call_sid.clone()).await.unwrap();
        if detail.as_ref().is_some_and(|d| d.call.outcome.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = serde_json::to_value(detail.expect("a record for the unanswered call")).unwrap();
    assert_eq!(d["status"], "no_answer");
    assert_eq!(d["direction"], "outbound");
    assert_eq!(d["lead_id"], "lead 7+x");
    assert_eq!(d["outcome"], "no_answer");
    assert_eq!(d["provider_status"], "no-answer");
    assert_eq!(d["provider_duration_s"], 0);
    rig.server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_outbound_call_gets_its_own_instructions_and_context() {
    let rig = rig(8).await;
    let body = serde_json::json!({
        "to": "+15550100002", "from": "+15550100001", "lead_id": "lead-9",
        "instructions": "Confirm the dentist appointment on Tuesday.", "voice": "cedar",
        "metadata": {"campaign": "spring"}
    });
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/calls", rig.server.addr))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let call_sid = resp.json::<serde_json::Value>().await.unwrap()["call_sid"].as_str().unwrap().to_owned();
    // The provider answers and fetches the webhook URL it was given, signed.
    let url = rig.api.requests()[0].value("Url").unwrap().to_owned();
    let path = url.strip_prefix(PUBLIC).unwrap().to_owned();
    let form = [("CallSid", call_sid.as_str()), ("Direction", "outbound-api"), ("To", "+15550100002")];
    let (status, xml) = post_form(&rig, &path, &form, Some((AUTH_TOKEN, None))).await;
    assert_eq!(status, 200, "{xml}");
    let (_, params) = parse_stream(&xml);
    assert_eq!(params["direction"], "outbound");
    assert_eq!(params["leadId"], "lead-9");
    let report = caller::run_call(signed_caller(&rig, &call_sid, &params)).await.unwrap();
    assert_eq!(report.close.as_ref().map(|c| c.0), Some(1000));

    let captured = std::fs::read_to_string(&rig.capture).unwrap();
    let update = captured.lines().find(|l| l.contains("\"session.update\"")).unwrap();
    let update: serde_json::Value = serde_json::from_str(update).unwrap();
    assert_eq!(update["session"]["instructions"], "Confirm the dentist appointment on Tuesday.");
    assert_eq!(update["session"]["audio"]["output"]["voice"], "cedar");
    let mut detail = None;
    for _ in 0..50 {
        detail = rig.reader.call_detail(call_sid.clone()).await.unwrap();
        if detail.as_ref().is_some_and(|d| d.call.status == "completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = serde_json::to_value(detail.unwrap()).unwrap();
    assert_eq!(d["direction"], "outbound");
    assert_eq!(d["lead_id"], "lead-9");
    assert_eq!(d["custom_parameters"]["metadata"], r#"{"campaign":"spring"}"#);
    assert!(d["custom_parameters"].get("token").is_none(), "the token is not stored");
    rig.server.shutdown(Duration::from_secs(2)).await;
}
