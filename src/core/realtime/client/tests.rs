//! Encoder tests: each event's JSON compared as a value with the GA shape written out by hand
//! from the reference and the Python SDK models. `tests/client_events.rs` and
//! `scripts/check-client-events.py` check the same output against async-openai and the SDK.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn encoded(event: &ClientEvent) -> Value {
    let mut out = String::new();
    encode(event, &mut out);
    assert!(!out.contains('\n'), "one line per event: {out}");
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("invalid JSON {out}: {err}"))
}

fn phone_config() -> SessionConfig {
    SessionConfig {
        model: Some("gpt-realtime".into()),
        instructions: "You answer the phone for Acme \"Plumbing\".\nBe brief.".into(),
        voice: "marin".into(),
        speed: Some(1.1),
        input_format: ModelAudioFormat::Pcmu,
        output_format: ModelAudioFormat::Pcmu,
        turn_detection: TurnDetection::ServerVad {
            threshold: 0.6,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            idle_timeout_ms: Some(8000),
            create_response: true,
            interrupt_response: true,
        },
        transcription: Some(Transcription {
            model: "gpt-4o-mini-transcribe".into(),
            language: Some("en".into()),
            prompt: None,
        }),
        noise_reduction: Some(NoiseReduction::NearField),
        tools: vec![FunctionTool {
            name: "book_appointment".into(),
            description: "Book a visit".into(),
            parameters: json!({"type":"object","properties":{"when":{"type":"string"}},"required":["when"]}),
        }]
        .into(),
    }
}

#[test]
fn session_update_has_the_ga_shape() {
    let event = ClientEvent::SessionUpdate(Box::new(phone_config()));
    assert_eq!(
        encoded(&event),
        json!({
            "type": "session.update",
            "session": {
                "type": "realtime",
                "model": "gpt-realtime",
                "output_modalities": ["audio"],
                "instructions": "You answer the phone for Acme \"Plumbing\".\nBe brief.",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "noise_reduction": {"type": "near_field"},
                        "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.6,
                            "prefix_padding_ms": 300,
                            "silence_duration_ms": 500,
                            "idle_timeout_ms": 8000,
                            "create_response": true,
                            "interrupt_response": true
                        }
                    },
                    "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.1}
                },
                "tools": [{
                    "type": "function",
                    "name": "book_appointment",
                    "description": "Book a visit",
                    "parameters": {"type":"object","properties":{"when":{"type":"string"}},"required":["when"]}
                }],
                "tool_choice": "auto"
            }
        })
    );
    assert_eq!(event.kind(), "session.update");
}

#[test]
fn session_update_nulls_and_omissions() {
    let config = SessionConfig {
        model: None,
        instructions: String::new(),
        voice: "cedar".into(),
        speed: None,
        input_format: ModelAudioFormat::Pcm24k,
        output_format: ModelAudioFormat::Pcma,
        turn_detection: TurnDetection::SemanticVad {
            eagerness: "low".into(),
            create_response: false,
            interrupt_response: false,
        },
        transcription: Some(Transcription {
            model: "whisper-1".into(),
            language: None,
            prompt: Some("Acme".into()),
        }),
        noise_reduction: Some(NoiseReduction::FarField),
        tools: Vec::new().into(),
    };
    assert_eq!(
        encoded(&ClientEvent::SessionUpdate(Box::new(config.clone()))),
        json!({
            "type": "session.update",
            "session": {
                "type": "realtime",
                "output_modalities": ["audio"],
                "instructions": "",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "noise_reduction": {"type": "far_field"},
                        "transcription": {"model": "whisper-1", "prompt": "Acme"},
                        "turn_detection": {"type": "semantic_vad", "eagerness": "low", "create_response": false, "interrupt_response": false}
                    },
                    "output": {"format": {"type": "audio/pcma"}, "voice": "cedar"}
                }
            }
        })
    );

    let manual = SessionConfig {
        turn_detection: TurnDetection::Manual,
        transcription: None,
        noise_reduction: None,
        ..config
    };
    let value = encoded(&ClientEvent::SessionUpdate(Box::new(manual)));
    let input = &value["session"]["audio"]["input"];
    for key in ["turn_detection", "transcription", "noise_reduction"] {
        assert_eq!(input.get(key), Some(&Value::Null), "{key} must be an explicit null (off)");
    }
    for key in ["model", "tools", "tool_choice"] {
        assert_eq!(value["session"].get(key), None, "{key} must be omitted");
    }
}

#[test]
fn non_finite_floats_are_omitted_not_written() {
    let mut config = phone_config();
    config.speed = Some(f32::NAN);
    config.turn_detection = TurnDetection::ServerVad {
        threshold: f32::INFINITY,
        prefix_padding_ms: 0,
        silence_duration_ms: 0,
        idle_timeout_ms: None,
        create_response: false,
        interrupt_response: true,
    };
    let value = encoded(&ClientEvent::SessionUpdate(Box::new(config)));
    assert_eq!(value["session"]["audio"]["output"].get("speed"), None);
    assert_eq!(
        value["session"]["audio"]["input"]["turn_detection"],
        json!({"type":"server_vad","prefix_padding_ms":0,"silence_duration_ms":0,"create_response":false,"interrupt_response":true})
    );
}

#[test]
fn floats_are_written_as_short_json_floats() {
    for (value, text) in [
        (1.0, ",\"k\":1.0"),
        (0.6, ",\"k\":0.6"),
        (1.1, ",\"k\":1.1"),
        (1e20, ",\"k\":100000000000000000000.0"),
    ] {
        let mut out = String::new();
        push_float_field(&mut out, "k", value);
        assert_eq!(out, text);
    }
}

#[test]
fn small_events() {
    let cases = [
        (
            ClientEvent::InputAudioAppend { audio_b64: "AAEC/w==".into() },
            json!({"type":"input_audio_buffer.append","audio":"AAEC/w=="}),
        ),
        (ClientEvent::InputAudioCommit, json!({"type":"input_audio_buffer.commit"})),
        (ClientEvent::InputAudioClear, json!({"type":"input_audio_buffer.clear"})),
        (
            ClientEvent::ItemTruncate { item_id: "item_004".into(), content_index: 0, audio_end_ms: 1500 },
            json!({"type":"conversation.item.truncate","item_id":"item_004","content_index":0,"audio_end_ms":1500}),
        ),
        (ClientEvent::ResponseCreate, json!({"type":"response.create"})),
        (
            ClientEvent::ResponseCreateOutOfBand { instructions: "Say \"one moment\".".into() },
            json!({"type":"response.create","response":{"conversation":"none","output_modalities":["audio"],
                "instructions":"Say \"one moment\".","tool_choice":"none"}}),
        ),
        (ClientEvent::ResponseCancel { response_id: None }, json!({"type":"response.cancel"})),
        (
            ClientEvent::ResponseCancel { response_id: Some("resp_001".into()) },
            json!({"type":"response.cancel","response_id":"resp_001"}),
        ),
        (
            ClientEvent::FunctionCallOutput { call_id: "call_001".into(), output: r#"{"ok":true}"#.into() },
            json!({"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_001","output":"{\"ok\":true}"}}),
        ),
        (
            ClientEvent::UserText { text: "Greet the caller.".into() },
            json!({"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"Greet the caller."}]}}),
        ),
        (
            ClientEvent::AssistantText { text: "It ships Friday.".into() },
            json!({"type":"conversation.item.create","item":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"It ships Friday."}]}}),
        ),
        (
            ClientEvent::SystemText { text: "The line dropped.".into() },
            json!({"type":"conversation.item.create","item":{"type":"message","role":"system","content":[{"type":"input_text","text":"The line dropped."}]}}),
        ),
        (
            ClientEvent::FunctionCall {
                call_id: "call_002".into(),
                name: "lookup".into(),
                arguments: r#"{"a":1}"#.into(),
            },
            json!({"type":"conversation.item.create","item":{"type":"function_call","call_id":"call_002","name":"lookup","arguments":"{\"a\":1}"}}),
        ),
    ];
    for (event, expected) in cases {
        assert_eq!(encoded(&event), expected);
        assert_eq!(event.kind(), expected["type"]);
    }
}

#[test]
fn audio_append_from_a_borrowed_str_matches_the_event() {
    let mut direct = String::from("prefix;");
    encode_input_audio_append("//79/A==", &mut direct);
    let mut via_event = String::from("prefix;");
    encode(&ClientEvent::InputAudioAppend { audio_b64: "//79/A==".into() }, &mut via_event);
    assert_eq!(direct, via_event);
    assert_eq!(
        direct, r#"prefix;{"type":"input_audio_buffer.append","audio":"//79/A=="}"#,
        "appends, never clears"
    );
}

#[test]
fn model_audio_formats_map_both_ways() {
    for model in [ModelAudioFormat::Pcmu, ModelAudioFormat::Pcma, ModelAudioFormat::Pcm24k] {
        assert_eq!(ModelAudioFormat::from_audio_format(model.audio_format()), Some(model));
    }
    assert_eq!(ModelAudioFormat::Pcmu.audio_format(), AudioFormat::PCMU_8K);
    let l16_8k = AudioFormat { sample_rate_hz: 8000, ..AudioFormat::PCM16_24K };
    assert_eq!(ModelAudioFormat::from_audio_format(l16_8k), None);
}

#[test]
fn strings_are_escaped() {
    let mut out = String::new();
    crate::core::json::push_str(
        &mut out,
        "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i\u{1f}j é 😀 \u{2028} </script>",
    );
    assert_eq!(out, r#""a\"b\\c\nd\re\tf\bg\fh\u0001i\u001fj é 😀 "#.to_owned() + "\u{2028} </script>\"");
}

proptest! {
    #[test]
    fn any_strings_round_trip_through_the_json(text in any::<String>(), id in any::<String>(), end in any::<u64>()) {
        let event = ClientEvent::ItemTruncate { item_id: id.clone(), content_index: u32::MAX, audio_end_ms: end };
        prop_assert_eq!(
            encoded(&event),
            json!({"type":"conversation.item.truncate","item_id":id,"content_index":u32::MAX,"audio_end_ms":end})
        );
        let value = encoded(&ClientEvent::UserText { text: text.clone() });
        prop_assert_eq!(&value["item"]["content"][0]["text"], &Value::String(text));
    }

    #[test]
    fn any_floats_give_valid_json(threshold in any::<f32>(), speed in any::<f32>()) {
        let mut config = phone_config();
        config.speed = Some(speed);
        if let TurnDetection::ServerVad { threshold: t, .. } = &mut config.turn_detection {
            *t = threshold;
        }
        let value = encoded(&ClientEvent::SessionUpdate(Box::new(config)));
        if speed.is_finite() {
            prop_assert_eq!(value["session"]["audio"]["output"]["speed"].as_f64().map(|s| s as f32), Some(speed));
        }
        if threshold.is_finite() {
            let written = value["session"]["audio"]["input"]["turn_detection"]["threshold"].as_f64();
            prop_assert_eq!(written.map(|t| t as f32), Some(threshold));
        }
    }
}
