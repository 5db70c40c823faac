//! Writes every Realtime client event we encode to `target/client-events/unit.jsonl` for
//! `scripts/check-client-events.py`, which validates each against the official `openai` Python
//! SDK models in strict mode (unknown keys rejected):
//!
//! ```sh
//! cargo test --test client_events
//! py=$(scripts/python-env.sh | tail -n 1) && "$py" scripts/check-client-events.py target/client-events
//! ```
//!
//! (An earlier cross-check against async-openai's realtime types was dropped: its `realtime`
//! feature needs tokio-tungstenite 0.28 beside axum's 0.29, and the Python SDK is the stricter,
//! official model.)

use std::fs;
use std::path::Path;

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
        }]
        .into(),
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
        tools: Vec::new().into(),
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
        tools: Vec::new().into(),
    }
}

/// Every `ClientEvent` variant, named.
fn events() -> Vec<(&'static str, ClientEvent)> {
    vec![
        ("session pcmu server_vad", ClientEvent::SessionUpdate(Box::new(pcmu_session()))),
        ("session pcm24k semantic_vad", ClientEvent::SessionUpdate(Box::new(pcm24k_session()))),
        ("session manual", ClientEvent::SessionUpdate(Box::new(manual_session()))),
        (
            "session with the built-in tools",
            ClientEvent::SessionUpdate(Box::new(SessionConfig {
                tools: callbridge::core::call::builtin_tools().into(),
                ..pcmu_session()
            })),
        ),
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
        (
            "response.create out-of-band",
            ClientEvent::ResponseCreateOutOfBand {
                instructions: "Tell the caller, in one short sentence, that you are checking.".into(),
            },
        ),
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
        ("assistant text", ClientEvent::AssistantText { text: "Your order ships on Friday.".into() }),
        (
            "system text",
            ClientEvent::SystemText { text: "The line dropped; finish your last answer briefly.".into() },
        ),
        (
            "function call",
            ClientEvent::FunctionCall {
                call_id: "call_QAQv5Yf0ahSWbGLk".into(),
                name: "book_appointment".into(),
                arguments: r#"{"when":"2025-09-01T09:00:00Z"}"#.into(),
            },
        ),
    ]
}

fn encode_value(event: &ClientEvent) -> (String, Value) {
    let mut line = String::new();
    encode(event, &mut line);
    let value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("invalid JSON {line}: {err}"));
    (line, value)
}

#[test]
fn every_event_is_json_of_its_own_type() {
    for (name, event) in events() {
        let (line, value) = encode_value(&event);
        assert_eq!(value["type"], event.kind(), "{name}: {line}");
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
    // The speed-less session too: `audio.output.speed` is optional on the wire.
    let no_speed = SessionConfig { speed: None, ..manual_session() };
    encode(&ClientEvent::SessionUpdate(Box::new(no_speed)), &mut jsonl);
    jsonl.push('\n');
    let path = dir.join("unit.jsonl");
    fs::write(&path, &jsonl).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), events().len() + 1);
}
