//! Cross-checks the Realtime client events we encode against an independent model of the GA
//! protocol, the `async-openai` 0.43 types, and writes them to `target/client-events/unit.jsonl`
//! for `scripts/check-client-events.py`, which validates them against the official `openai`
//! Python SDK models:
//!
//! ```sh
//! cargo test --test client_events
//! py=$(scripts/python-env.sh | tail -n 1) && "$py" scripts/check-client-events.py target/client-events
//! ```
//!
//! async-openai disagrees with the wire format in two places that matter here
//! (shared/reference/openai-realtime.md §3.1 pitfalls 2 and 6); each is asserted below so that a
//! fixed async-openai makes this test say so:
//! - `noise_reduction` is modelled as `{"type":{"type":"near_field"}}`, so the wire shape
//!   `{"type":"near_field"}` does not deserialize. The session with noise reduction is
//!   therefore cross-checked as the same config with `noise_reduction: None` (sent as `null`),
//!   and the Python check covers the real one.
//! - `function_call_output.status` is a required `String` there, optional in the SDK and in
//!   OpenAI's samples, and we do not send it; the cross-check adds `"status":"completed"`.
//!
//! async-openai also requires `audio.output.speed` (pitfall 3), so every session here sets a
//! speed; omitting it is covered by the unit tests and the Python check does not need it.

use std::fs;
use std::path::Path;

use async_openai::types::realtime::RealtimeClientEvent;
use callbridge::core::realtime::{
    ClientEvent, FunctionTool, ModelAudioFormat, NoiseReduction, SessionConfig, Transcription, TurnDetection,
    encode,
};
use serde_json::{Value, json};

/// Passthrough μ-law for Twilio: server VAD, caller transcription, near-field noise reduction,
/// one tool.
fn pcmu_session() -> SessionConfig {
    SessionConfig {
        model: Some("gpt-realtime".into()),
        instructions: "You answer the phone for Acme Plumbing. Keep answers short.".into(),
        voice: "marin".into(),
        speed: Some(1.0),
        input_format: ModelAudioFormat::Pcmu,
        output_format: ModelAudioFormat::Pcmu,
        turn_detection: TurnDetection::ServerVad {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            idle_timeout_ms: Some(8000),
            create_response: true,
            interrupt_response: true,
        },
        transcription: Some(Transcription {
            model: "gpt-4o-mini-transcribe".into(),
            language: Some("en".into()),
            prompt: Some("Plumbing, boiler, leak".into()),
        }),
        noise_reduction: Some(NoiseReduction::NearField),
        tools: vec![FunctionTool {
            name: "book_appointment".into(),
            description: "Book a plumber visit".into(),
            parameters: json!({
                "type": "object",
                "properties": {"when": {"type": "string", "description": "ISO 8601 start"}},
                "required": ["when"]
            }),
        }],
    }
}

/// PCM 24 kHz (transcoded telephony audio) with semantic VAD.
fn pcm24k_session() -> SessionConfig {
    SessionConfig {
        model: None,
        instructions: "Speak slowly.".into(),
        voice: "cedar".into(),
        speed: Some(0.9),
        input_format: ModelAudioFormat::Pcm24k,
        output_format: ModelAudioFormat::Pcm24k,
        turn_detection: TurnDetection::SemanticVad {
            eagerness: "auto".into(),
            create_response: true,
            interrupt_response: false,
        },
        transcription: None,
        noise_reduction: Some(NoiseReduction::FarField),
        tools: Vec::new(),
    }
}

/// Manual turns (`turn_detection: null`), A-law, nothing optional.
fn manual_session() -> SessionConfig {
    SessionConfig {
        model: Some("gpt-realtime-mini".into()),
        instructions: String::new(),
        voice: "alloy".into(),
        speed: Some(1.25),
        input_format: ModelAudioFormat::Pcma,
        output_format: ModelAudioFormat::Pcma,
        turn_detection: TurnDetection::Manual,
        transcription: None,
        noise_reduction: None,
        tools: Vec::new(),
    }
}

/// Every `ClientEvent` variant, named.
fn events() -> Vec<(&'static str, ClientEvent)> {
    vec![
        ("session pcmu server_vad", ClientEvent::SessionUpdate(Box::new(pcmu_session()))),
        ("session pcm24k semantic_vad", ClientEvent::SessionUpdate(Box::new(pcm24k_session()))),
        ("session manual", ClientEvent::SessionUpdate(Box::new(manual_session()))),
        ("append", ClientEvent::InputAudioAppend { audio_b64: "//////////8=".into() }),
        ("commit", ClientEvent::InputAudioCommit),
        ("clear", ClientEvent::InputAudioClear),
        (
            "truncate",
            ClientEvent::ItemTruncate {
                item_id: "item_CEkz1dbDqBbFz9Gq".into(),
                content_index: 0,
                audio_end_ms: 1520,
            },
        ),
        ("response.create", ClientEvent::ResponseCreate),
        ("cancel current", ClientEvent::ResponseCancel { response_id: None }),
        ("cancel by id", ClientEvent::ResponseCancel { response_id: Some("resp_CEkz2mD1Yv6wZ4rV".into()) }),
        (
            "function output",
            ClientEvent::FunctionCallOutput {
                call_id: "call_QAQv5Yf0ahSWbGLk".into(),
                output: r#"{"booked":true,"when":"2025-09-01T09:00:00Z"}"#.into(),
            },
        ),
        ("user text", ClientEvent::UserText { text: "Greet the caller and say \"hello\".".into() }),
    ]
}

fn encode_value(event: &ClientEvent) -> (String, Value) {
    let mut line = String::new();
    encode(event, &mut line);
    let value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("invalid JSON {line}: {err}"));
    (line, value)
}

fn async_openai_parse(value: &Value) -> Result<RealtimeClientEvent, serde_json::Error> {
    serde_json::from_value(value.clone())
}

/// async-openai's serialisation of `event`, read back through JSON text as the wire would (so an
/// `f32` compares as its shortest decimal, like ours, not as a widened `f64`).
fn async_openai_json(event: &RealtimeClientEvent) -> Value {
    let text = serde_json::to_string(event).expect("async-openai events serialise");
    serde_json::from_str(&text).expect("serde_json reads its own output")
}

/// The value async-openai accepts for the same event, per the pitfalls in the module docs.
fn as_async_openai_expects(name: &str, event: &ClientEvent, value: Value) -> Value {
    match event {
        ClientEvent::SessionUpdate(config) if config.noise_reduction.is_some() => {
            assert!(
                async_openai_parse(&value).is_err(),
                "{name}: async-openai now parses noise_reduction; cross-check it directly"
            );
            let without = SessionConfig { noise_reduction: None, ..(**config).clone() };
            encode_value(&ClientEvent::SessionUpdate(Box::new(without))).1
        }
        ClientEvent::FunctionCallOutput { .. } => {
            assert!(async_openai_parse(&value).is_err(), "{name}: async-openai no longer requires status");
            let mut patched = value;
            patched["item"]["status"] = json!("completed");
            patched
        }
        _ => value,
    }
}

#[test]
fn every_event_deserializes_into_async_openai_and_keeps_its_type() {
    for (name, event) in events() {
        let (line, value) = encode_value(&event);
        assert_eq!(value["type"], event.kind(), "{name}: {line}");
        let checked = as_async_openai_expects(name, &event, value);
        let parsed = async_openai_parse(&checked)
            .unwrap_or_else(|err| panic!("{name}: async-openai rejects {checked}: {err}"));
        let reserialized = async_openai_json(&parsed);
        assert_eq!(reserialized["type"], event.kind(), "{name}: {reserialized}");

        // Where async-openai's own serialisation has no pitfall, it must agree with ours.
        if !matches!(event, ClientEvent::SessionUpdate(_) | ClientEvent::ResponseCreate) {
            assert_eq!(reserialized, checked, "{name}");
        }
    }
}

#[test]
fn session_updates_survive_async_openai_field_by_field() {
    for (name, config) in
        [("pcmu", pcmu_session()), ("pcm24k", pcm24k_session()), ("manual", manual_session())]
    {
        let config = SessionConfig { noise_reduction: None, ..config };
        let (_, ours) = encode_value(&ClientEvent::SessionUpdate(Box::new(config)));
        let theirs = async_openai_json(&async_openai_parse(&ours).unwrap());
        for pointer in [
            "/session/type",
            "/session/instructions",
            "/session/output_modalities",
            "/session/audio/input/format",
            "/session/audio/input/turn_detection",
            "/session/audio/input/transcription",
            "/session/audio/input/noise_reduction",
            "/session/audio/output",
            "/session/tools",
            "/session/tool_choice",
            "/session/model",
        ] {
            assert_eq!(ours.pointer(pointer), theirs.pointer(pointer), "{name}: {pointer}");
        }
    }
}

#[test]
fn response_create_has_no_response_key() {
    let (line, _) = encode_value(&ClientEvent::ResponseCreate);
    assert_eq!(line, r#"{"type":"response.create"}"#);
}

#[test]
fn writes_every_event_as_jsonl_for_the_python_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/client-events");
    fs::create_dir_all(&dir).unwrap();
    let mut jsonl = String::new();
    for (_, event) in events() {
        encode(&event, &mut jsonl);
        jsonl.push('\n');
    }
    // The speed-less session too: the SDK accepts what async-openai cannot.
    let no_speed = SessionConfig { speed: None, ..manual_session() };
    encode(&ClientEvent::SessionUpdate(Box::new(no_speed)), &mut jsonl);
    jsonl.push('\n');
    let path = dir.join("unit.jsonl");
    fs::write(&path, &jsonl).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), events().len() + 1);
}
