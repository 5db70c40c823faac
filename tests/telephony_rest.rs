#![allow(clippy::unwrap_used)]
//! The provider REST client against the fake provider API on loopback: exact form fields,
//! auth, error mapping and retry classification.

use std::time::Duration;

use callbridge::clients::telephony_rest::{
    Amd, CallEvent, CallInstructions, CreateCall, MachineDetection, Provider, RestError, TelephonyRest,
};
use callbridge::core::telephony::twiml;
use callbridge::sim::telephony_api::{ACCOUNT_SID, AUTH_TOKEN, FakeTelephonyApi};

const TO: &str = "+15550100002";
const FROM: &str = "+15550100001";

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn twilio() -> (FakeTelephonyApi, TelephonyRest) {
    init();
    let api = FakeTelephonyApi::start().await.unwrap();
    let rest = TelephonyRest::twilio(ACCOUNT_SID, AUTH_TOKEN, &api.base_url()).unwrap();
    (api, rest)
}

fn pairs(form: &[(String, String)]) -> Vec<(&str, &str)> {
    form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test]
async fn create_call_sends_the_documented_form() {
    let (api, rest) = twilio().await;
    let doc =
        twiml::connect_stream("wss://bridge.example.net/media/twilio", &[("token", "a.b"), ("lead", "42")]);
    let call = CreateCall {
        status_callback: Some("https://bridge.example.net/twilio/status".into()),
        status_callback_events: vec![CallEvent::Initiated, CallEvent::Answered, CallEvent::Completed],
        machine_detection: Some(Amd {
            mode: MachineDetection::Enable,
            async_status_callback: Some("https://bridge.example.net/twilio/amd".into()),
        }),
        timeout_s: Some(30),
        ..CreateCall::new(TO, FROM, CallInstructions::Twiml(doc.clone()))
    };
    let sid = rest.create_call(&call).await.unwrap();
    assert!(
        sid.starts_with("CA") && sid.len() == 34 && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{sid}"
    );
    assert_eq!(api.call_status(&sid).as_deref(), Some("queued"));

    let reqs = api.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"));
    assert_eq!(r.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
    assert!(r.auth_ok);
    assert_eq!(r.status, 201);
    assert_eq!(
        pairs(&r.form),
        [
            ("To", TO),
            ("From", FROM),
            ("Twiml", doc.as_str()),
            ("StatusCallback", "https://bridge.example.net/twilio/status"),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
            ("MachineDetection", "Enable"),
            ("AsyncAmd", "true"),
            ("AsyncAmdStatusCallback", "https://bridge.example.net/twilio/amd"),
            ("AsyncAmdStatusCallbackMethod", "POST"),
            ("Timeout", "30"),
        ]
    );
}

#[tokio::test]
async fn create_call_with_url() {
    let (api, rest) = twilio().await;
    let call =
        CreateCall::new(TO, FROM, CallInstructions::Url("https://bridge.example.net/twiml?lead=42".into()));
    rest.create_call(&call).await.unwrap();
    let r = &api.requests()[0];
    assert_eq!(
        pairs(&r.form),
        [("To", TO), ("From", FROM), ("Url", "https://bridge.example.net/twiml?lead=42")]
    );
}

#[tokio::test]
async fn hang_up_and_redirect() {
    let (api, rest) = twilio().await;
    let sid =
        rest.create_call(&CreateCall::new(TO, FROM, CallInstructions::Twiml(twiml::hangup()))).await.unwrap();

    let transfer = twiml::dial("sip:agent@pbx.example.com").unwrap();
    rest.redirect(&sid, &transfer).await.unwrap();
    rest.redirect_to_url(&sid, "https://bridge.example.net/twiml/next").await.unwrap();
    rest.hang_up(&sid).await.unwrap();
    assert_eq!(api.call_status(&sid).as_deref(), Some("completed"));

    let reqs = api.requests();
    let path = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json");
    assert_eq!(reqs[1].path, path);
    assert_eq!(pairs(&reqs[1].form), [("Twiml", transfer.as_str())]);
    assert_eq!(pairs(&reqs[2].form), [("Url", "https://bridge.example.net/twiml/next"), ("Method", "POST")]);
    assert_eq!(reqs[3].path, path);
    assert_eq!(pairs(&reqs[3].form), [("Status", "completed")]);
    assert!(reqs.iter().all(|r| r.auth_ok && r.method == "POST"));
    assert_eq!(reqs.iter().map(|r| r.status).collect::<Vec<_>>(), [201, 200, 200, 200]);
}

#[tokio::test]
async fn registered_calls_can_be_updated_and_unknown_ones_are_404() {
    let (api, rest) = twilio().await;
    api.add_call("CA0123456789abcdef0123456789abcdef");
    rest.hang_up("CA0123456789abcdef0123456789abcdef").await.unwrap();
    let err = rest.hang_up("CAffffffffffffffffffffffffffffffff").await.unwrap_err();
    assert!(matches!(err, RestError::Http { status: 404, code: Some(20404), .. }), "{err:?}");
    assert!(!err.is_retryable());
    // A SID that would change the path is refused before sending.
    let err = rest.hang_up("CA1/../../x").await.unwrap_err();
    assert!(matches!(err, RestError::InvalidRequest(_)), "{err:?}");
    assert_eq!(api.requests().len(), 2);
}

#[tokio::test]
async fn wrong_token_is_401() {
    init();
    let api = FakeTelephonyApi::start().await.unwrap();
    let rest = TelephonyRest::twilio(ACCOUNT_SID, "54321", &api.base_url()).unwrap();
    let err = rest
        .create_call(&CreateCall::new(TO, FROM, CallInstructions::Twiml(twiml::hangup())))
        .await
        .unwrap_err();
    match &err {
        RestError::Http { status, code, message } => {
            assert_eq!((*status, *code, message.as_str()), (401, Some(20003), "Authenticate"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!api.requests()[0].auth_ok);
}

#[tokio::test]
async fn missing_parameters_are_400() {
    let (api, rest) = twilio().await;
    let err = rest
        .create_call(&CreateCall::new("", FROM, CallInstructions::Twiml(twiml::hangup())))
        .await
        .unwrap_err();
    assert!(matches!(err, RestError::Http { status: 400, code: Some(21201), .. }), "{err:?}");
    let err = rest
        .create_call(&CreateCall::new(TO, "", CallInstructions::Twiml(twiml::hangup())))
        .await
        .unwrap_err();
    assert!(matches!(err, RestError::Http { status: 400, code: Some(21213), .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(api.requests().iter().map(|r| r.status).collect::<Vec<_>>(), [400, 400]);
}

#[tokio::test]
async fn oversized_inline_twiml_is_refused_before_sending() {
    let (api, rest) = twilio().await;
    let long = twiml::say_and_hangup(&"x".repeat(4000));
    let err = rest
        .create_call(&CreateCall::new(TO, FROM, CallInstructions::Twiml(long.clone())))
        .await
        .unwrap_err();
    assert!(matches!(err, RestError::InvalidRequest(_)), "{err:?}");
    assert!(matches!(rest.redirect("CA1", &long).await, Err(RestError::InvalidRequest(_))));
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn injected_failures_are_classified() {
    let (api, rest) = twilio().await;
    let call = CreateCall::new(TO, FROM, CallInstructions::Twiml(twiml::hangup()));
    api.fail_next(2, 503);
    for _ in 0..2 {
        let err = rest.create_call(&call).await.unwrap_err();
        assert!(matches!(err, RestError::Http { status: 503, code: Some(20503), .. }), "{err:?}");
        assert!(err.is_retryable());
    }
    api.fail_next(1, 429);
    let err = rest.create_call(&call).await.unwrap_err();
    assert!(matches!(err, RestError::Http { status: 429, .. }) && err.is_retryable(), "{err:?}");
    assert!(rest.create_call(&call).await.is_ok());
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retryable() {
    let (api, rest) = twilio().await;
    let rest = rest.with_timeout(Duration::from_millis(100));
    api.set_delay(Duration::from_millis(500));
    let err = rest.hang_up("CA1").await.unwrap_err();
    assert_eq!(err, RestError::Timeout);
    assert!(err.is_retryable());
    assert!(api.wait_for_requests(1, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn unreachable_api_is_a_retryable_connect_error() {
    init();
    // Bind then drop to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let rest = TelephonyRest::twilio(ACCOUNT_SID, AUTH_TOKEN, &format!("http://127.0.0.1:{port}")).unwrap();
    let err = rest.hang_up("CA1").await.unwrap_err();
    assert!(matches!(err, RestError::Connect(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn signalwire_uses_the_laml_path_and_project_credentials() {
    init();
    let project = "00000000-0000-4000-8000-000000000001";
    let api = FakeTelephonyApi::start_with(project, "PTXXXXXXXX").await.unwrap();
    let rest = TelephonyRest::signalwire(&api.base_url(), project, "PTXXXXXXXX").unwrap();
    assert_eq!(rest.provider(), Provider::SignalWire);
    let call = CreateCall::new(
        TO,
        FROM,
        CallInstructions::Url("https://bridge.example.net/signalwire/voice".into()),
    );
    let sid = rest.create_call(&call).await.unwrap();
    assert_eq!(sid.len(), 36, "SignalWire call SIDs are UUIDs: {sid}");
    rest.hang_up(&sid).await.unwrap();
    let reqs = api.requests();
    assert_eq!(reqs[0].path, format!("/api/laml/2010-04-01/Accounts/{project}/Calls.json"));
    assert_eq!(reqs[1].path, format!("/api/laml/2010-04-01/Accounts/{project}/Calls/{sid}.json"));
    assert!(reqs.iter().all(|r| r.auth_ok));
}
