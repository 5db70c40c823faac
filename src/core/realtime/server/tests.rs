//! Decoder tests. Sample frames are written from the GA event models of the `openai` Python SDK
//! 3.52.0 (`openai/types/realtime/*_event.py`) and the reference, including the fields a real
//! server sends that the decoder skips (`event_id`, `output_index`, `object`, …).

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;
use crate::core::audio::{ByteOrder, Encoding};

const MAX: usize = 1 << 20;

fn decode(text: &str) -> ServerEvent<'static> {
    // Leak the decoder so the event can outlive this helper; fine in tests.
    let decoder = Box::leak(Box::new(RealtimeDecoder::new(MAX)));
    let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
    match decoder.decode(text) {
        Ok(event) => event,
        Err(err) => panic!("{text} failed to decode: {err}"),
    }
}

fn decode_err(text: &str) -> RealtimeDecodeError {
    let mut decoder = RealtimeDecoder::new(MAX);
    match decoder.decode(text) {
        Ok(event) => panic!("{text} decoded as {event:?}"),
        Err(err) => err,
    }
}

const SESSION_CREATED: &str = r#"{"type":"session.created","event_id":"event_C9G5RJeJ2gF77mV7f2B1j","session":{"type":"realtime","object":"realtime.session","id":"sess_C9G5QPteg4UIbotdKLoYQ","model":"gpt-realtime-2025-08-28","output_modalities":["audio"],"instructions":"Your knowledge cutoff is 2023-10.","tools":[],"tool_choice":"auto","max_output_tokens":"inf","tracing":null,"prompt":null,"expires_at":1756324625,"audio":{"input":{"format":{"type":"audio/pcm","rate":24000},"transcription":null,"noise_reduction":null,"turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":200,"idle_timeout_ms":null,"create_response":true,"interrupt_response":true}},"output":{"format":{"type":"audio/pcm","rate":24000},"voice":"marin","speed":1.0}},"include":null}}"#;

const SESSION_UPDATED_PCMU: &str = r#"{"type":"session.updated","event_id":"event_C9G8mqI3IucaojlVKE8Cs","session":{"type":"realtime","object":"realtime.session","id":"sess_C9G8l3zp50uFv4qgxfJ8o","model":"gpt-realtime","output_modalities":["audio"],"instructions":"You answer the phone for Acme \"Plumbing\".","tools":[{"type":"function","name":"book","description":"Book a visit","parameters":{"type":"object","properties":{"when":{"type":"string"}}}}],"tool_choice":"auto","max_output_tokens":"inf","audio":{"input":{"format":{"type":"audio/pcmu"},"transcription":{"model":"gpt-4o-mini-transcribe","language":"en","prompt":""},"noise_reduction":{"type":"near_field"},"turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":500,"idle_timeout_ms":null,"create_response":true,"interrupt_response":true}},"output":{"format":{"type":"audio/pcmu"},"voice":"marin","speed":1.0}},"include":null}}"#;

const SPEECH_STARTED: &str = r#"{"type":"input_audio_buffer.speech_started","event_id":"event_B1","audio_start_ms":1000,"item_id":"item_003"}"#;
const SPEECH_STOPPED: &str = r#"{"type":"input_audio_buffer.speech_stopped","event_id":"event_B2","audio_end_ms":2000,"item_id":"item_003"}"#;
const COMMITTED: &str = r#"{"type":"input_audio_buffer.committed","event_id":"event_B3","previous_item_id":"item_002","item_id":"item_003"}"#;
const RESPONSE_CREATED: &str = r#"{"type":"response.created","event_id":"event_C1","response":{"object":"realtime.response","id":"resp_001","status":"in_progress","status_details":null,"output":[],"conversation_id":"conv_001","output_modalities":["audio"],"max_output_tokens":"inf","audio":{"output":{"format":{"type":"audio/pcmu"},"voice":"marin"}},"usage":null,"metadata":null}}"#;
// "AAEC/w==" is [0x00, 0x01, 0x02, 0xFF].
const AUDIO_DELTA: &str = r#"{"type":"response.output_audio.delta","event_id":"event_C2","response_id":"resp_001","item_id":"item_004","output_index":0,"content_index":0,"delta":"AAEC/w=="}"#;
const AUDIO_DONE: &str = r#"{"type":"response.output_audio.done","event_id":"event_C3","response_id":"resp_001","item_id":"item_004","output_index":0,"content_index":0}"#;
const TRANSCRIPT_DELTA: &str = r#"{"type":"response.output_audio_transcript.delta","event_id":"event_C4","response_id":"resp_001","item_id":"item_004","output_index":0,"content_index":0,"delta":"Hello, "}"#;
const TRANSCRIPT_DONE: &str = r#"{"type":"response.output_audio_transcript.done","event_id":"event_C5","response_id":"resp_001","item_id":"item_004","output_index":0,"content_index":0,"transcript":"Hello, how can I help?"}"#;
const INPUT_TRANSCRIPTION_COMPLETED: &str = r#"{"type":"conversation.item.input_audio_transcription.completed","event_id":"event_D1","item_id":"item_003","content_index":0,"transcript":"I need a plumber\u00e9.","logprobs":null,"usage":{"type":"tokens","total_tokens":22,"input_tokens":13,"input_token_details":{"text_tokens":0,"audio_tokens":13},"output_tokens":9}}"#;
const INPUT_TRANSCRIPTION_FAILED: &str = r#"{"type":"conversation.item.input_audio_transcription.failed","event_id":"event_D2","item_id":"item_003","content_index":0,"error":{"type":"transcription_error","code":"audio_unintelligible","message":"The audio could not be transcribed.","param":null}}"#;
const FUNCTION_CALL_DONE: &str = r#"{"type":"response.function_call_arguments.done","event_id":"event_E1","response_id":"resp_002","item_id":"fc_001","output_index":0,"call_id":"call_001","name":"book","arguments":"{\"when\":\"tomorrow 9am\"}"}"#;
const RESPONSE_DONE: &str = r#"{"type":"response.done","event_id":"event_F1","response":{"object":"realtime.response","id":"resp_001","status":"completed","status_details":null,"output":[{"id":"item_004","type":"message","object":"realtime.item","status":"completed","role":"assistant","content":[{"type":"output_audio","transcript":"Hello, how can I help?"}]}],"conversation_id":"conv_001","output_modalities":["audio"],"max_output_tokens":"inf","audio":{"output":{"format":{"type":"audio/pcmu"},"voice":"marin"}},"usage":{"total_tokens":253,"input_tokens":132,"output_tokens":121,"input_token_details":{"text_tokens":119,"audio_tokens":13,"image_tokens":0,"cached_tokens":64,"cached_tokens_details":{"text_tokens":64,"audio_tokens":0,"image_tokens":0}},"output_token_details":{"text_tokens":30,"audio_tokens":91}},"metadata":null}}"#;
const RESPONSE_DONE_CANCELLED: &str = r#"{"type":"response.done","event_id":"event_F2","response":{"object":"realtime.response","id":"resp_003","status":"cancelled","status_details":{"type":"cancelled","reason":"turn_detected"},"output":[],"usage":{"total_tokens":10,"input_tokens":10,"output_tokens":0}}}"#;
const RESPONSE_DONE_FAILED: &str = r#"{"type":"response.done","event_id":"event_F3","response":{"object":"realtime.response","id":"resp_004","status":"failed","status_details":{"type":"failed","error":{"type":"server_error","code":"internal_error","message":"boom"}},"output":[],"usage":null}}"#;
const ITEM_TRUNCATED: &str = r#"{"type":"conversation.item.truncated","event_id":"event_G1","item_id":"item_004","content_index":0,"audio_end_ms":1500}"#;
const ERROR: &str = r#"{"type":"error","event_id":"event_H1","error":{"type":"invalid_request_error","code":"response_cancel_not_active","message":"Cancellation failed: no active response found","param":null,"event_id":null}}"#;

/// Every GA sample above (the Python SDK's `RealtimeServerEvent` accepts each of them).
const GA_SAMPLES: &[&str] = &[
    SESSION_CREATED,
    SESSION_UPDATED_PCMU,
    SPEECH_STARTED,
    SPEECH_STOPPED,
    COMMITTED,
    RESPONSE_CREATED,
    AUDIO_DELTA,
    AUDIO_DONE,
    TRANSCRIPT_DELTA,
    TRANSCRIPT_DONE,
    INPUT_TRANSCRIPTION_COMPLETED,
    INPUT_TRANSCRIPTION_FAILED,
    FUNCTION_CALL_DONE,
    RESPONSE_DONE,
    RESPONSE_DONE_CANCELLED,
    RESPONSE_DONE_FAILED,
    ITEM_TRUNCATED,
    ERROR,
];

#[test]
fn every_ga_sample_decodes_to_a_handled_event_named_by_its_type() {
    for sample in GA_SAMPLES {
        let event = decode(sample);
        let wire_type: serde_json::Value = serde_json::from_str(sample).unwrap();
        assert_eq!(event.kind(), wire_type["type"], "{sample}");
    }
}

#[test]
fn session_created() {
    assert_eq!(decode(SESSION_CREATED), ServerEvent::SessionCreated);
}

#[test]
fn session_updated_ga_formats() {
    assert_eq!(
        decode(SESSION_UPDATED_PCMU),
        ServerEvent::SessionUpdated {
            input_format: Some(AudioFormat::PCMU_8K),
            output_format: Some(AudioFormat::PCMU_8K)
        }
    );
    let mixed = r#"{"type":"session.updated","event_id":"e","session":{"type":"realtime","audio":{"input":{"format":{"type":"audio/pcma"}},"output":{"format":{"type":"audio/pcm","rate":24000}}}}}"#;
    assert_eq!(
        decode(mixed),
        ServerEvent::SessionUpdated {
            input_format: Some(AudioFormat::PCMA_8K),
            output_format: Some(AudioFormat::PCM16_24K)
        }
    );
    // `rate` is optional in the SDK model; 24 kHz is the only rate.
    let no_rate =
        r#"{"type":"session.updated","session":{"audio":{"output":{"format":{"type":"audio/pcm"}}}}}"#;
    assert_eq!(
        decode(no_rate),
        ServerEvent::SessionUpdated { input_format: None, output_format: Some(AudioFormat::PCM16_24K) }
    );
    let odd_rate = r#"{"type":"session.updated","session":{"audio":{"output":{"format":{"type":"audio/pcm","rate":16000}}}}}"#;
    let ServerEvent::SessionUpdated { output_format: Some(format), .. } = decode(odd_rate) else {
        panic!("no output format")
    };
    assert_eq!((format.encoding, format.sample_rate_hz), (Encoding::L16(ByteOrder::Little), 16000));
    let unknown =
        r#"{"type":"session.updated","session":{"audio":{"input":{"format":{"type":"audio/opus"}}}}}"#;
    assert_eq!(decode(unknown), ServerEvent::SessionUpdated { input_format: None, output_format: None });
    assert_eq!(
        decode(r#"{"type":"session.updated"}"#),
        ServerEvent::SessionUpdated { input_format: None, output_format: None }
    );
}

#[test]
fn session_updated_beta_formats() {
    let beta = r#"{"type":"session.updated","event_id":"event_1","session":{"id":"sess_1","object":"realtime.session","model":"gpt-4o-realtime-preview-2024-12-17","modalities":["text","audio"],"voice":"alloy","input_audio_format":"g711_ulaw","output_audio_format":"pcm16","input_audio_transcription":null,"turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":200},"temperature":0.8,"max_response_output_tokens":"inf"}}"#;
    assert_eq!(
        decode(beta),
        ServerEvent::SessionUpdated {
            input_format: Some(AudioFormat::PCMU_8K),
            output_format: Some(AudioFormat::PCM16_24K)
        }
    );
    let alaw = r#"{"type":"session.updated","session":{"input_audio_format":"g711_alaw","output_audio_format":"g711_alaw"}}"#;
    assert_eq!(
        decode(alaw),
        ServerEvent::SessionUpdated {
            input_format: Some(AudioFormat::PCMA_8K),
            output_format: Some(AudioFormat::PCMA_8K)
        }
    );
}

#[test]
fn input_buffer_events() {
    assert_eq!(
        decode(SPEECH_STARTED),
        ServerEvent::SpeechStarted { item_id: "item_003".into(), audio_start_ms: 1000 }
    );
    assert_eq!(
        decode(SPEECH_STOPPED),
        ServerEvent::SpeechStopped { item_id: "item_003".into(), audio_end_ms: 2000 }
    );
    assert_eq!(decode(COMMITTED), ServerEvent::InputAudioCommitted { item_id: "item_003".into() });
}

#[test]
fn response_created() {
    assert_eq!(decode(RESPONSE_CREATED), ServerEvent::ResponseCreated { response_id: "resp_001".into() });
}

#[test]
fn audio_delta_borrows_the_text_and_decodes_into_scratch() {
    let mut decoder = RealtimeDecoder::new(MAX);
    let Ok(ServerEvent::AudioDelta { response_id, item_id, content_index, delta_b64, audio }) =
        decoder.decode(AUDIO_DELTA)
    else {
        panic!("not an audio delta")
    };
    assert_eq!((&*response_id, &*item_id, content_index), ("resp_001", "item_004", 0));
    assert!(matches!(delta_b64, Cow::Borrowed("AAEC/w==")), "the hot path must not copy: {delta_b64:?}");
    assert!(matches!(item_id, Cow::Borrowed(_)));
    assert_eq!(audio, [0x00, 0x01, 0x02, 0xFF]);

    // The scratch buffer is reused: a shorter delta yields only its own bytes.
    let short = r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","output_index":0,"content_index":1,"delta":"/w=="}"#;
    let Ok(ServerEvent::AudioDelta { audio, content_index, .. }) = decoder.decode(short) else { panic!() };
    assert_eq!((audio, content_index), (&[0xFF][..], 1));
    // Unpadded base64 is accepted too.
    let unpadded = r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","content_index":0,"delta":"AAEC/w"}"#;
    let Ok(ServerEvent::AudioDelta { audio, .. }) = decoder.decode(unpadded) else { panic!() };
    assert_eq!(audio, [0x00, 0x01, 0x02, 0xFF]);
    // An escaped solidus is legal JSON; the string is then copied, but the bytes are the same.
    let escaped = r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","content_index":0,"delta":"AAEC\/w=="}"#;
    let Ok(ServerEvent::AudioDelta { audio, delta_b64, .. }) = decoder.decode(escaped) else { panic!() };
    assert_eq!((audio, &*delta_b64), (&[0x00, 0x01, 0x02, 0xFF][..], "AAEC/w=="));
}

#[test]
fn audio_and_transcript_events_ga_and_beta_names() {
    let rename = |ga: &str, beta: &str, sample: &str| sample.replacen(ga, beta, 1);
    let beta_delta = rename("response.output_audio.delta", "response.audio.delta", AUDIO_DELTA);
    let beta_done = rename("response.output_audio.done", "response.audio.done", AUDIO_DONE);
    let beta_tdelta =
        rename("response.output_audio_transcript.delta", "response.audio_transcript.delta", TRANSCRIPT_DELTA);
    let beta_tdone =
        rename("response.output_audio_transcript.done", "response.audio_transcript.done", TRANSCRIPT_DONE);

    for delta in [AUDIO_DELTA, beta_delta.as_str()] {
        let mut decoder = RealtimeDecoder::new(MAX);
        let event = decoder.decode(delta).unwrap();
        assert!(
            matches!(event, ServerEvent::AudioDelta { ref item_id, audio: [0, 1, 2, 0xFF], .. } if item_id == "item_004")
        );
    }
    for done in [AUDIO_DONE, beta_done.as_str()] {
        assert_eq!(
            decode(done),
            ServerEvent::AudioDone { response_id: "resp_001".into(), item_id: "item_004".into() }
        );
    }
    for delta in [TRANSCRIPT_DELTA, beta_tdelta.as_str()] {
        assert_eq!(
            decode(delta),
            ServerEvent::OutputTranscriptDelta { item_id: "item_004".into(), delta: "Hello, ".into() }
        );
    }
    for done in [TRANSCRIPT_DONE, beta_tdone.as_str()] {
        assert_eq!(
            decode(done),
            ServerEvent::OutputTranscriptDone {
                item_id: "item_004".into(),
                transcript: "Hello, how can I help?".into()
            }
        );
    }
    // A beta-era delta had no output_index; nothing depends on it.
    let beta_minimal = r#"{"event_id":"event_1","type":"response.audio.delta","response_id":"resp_1","item_id":"item_1","content_index":0,"delta":"AA=="}"#;
    let mut decoder = RealtimeDecoder::new(MAX);
    assert!(matches!(decoder.decode(beta_minimal), Ok(ServerEvent::AudioDelta { audio: [0], .. })));
}

#[test]
fn input_transcription_events() {
    assert_eq!(
        decode(INPUT_TRANSCRIPTION_COMPLETED),
        ServerEvent::InputTranscriptionCompleted {
            item_id: "item_003".into(),
            transcript: "I need a plumber\u{e9}.".into()
        }
    );
    // The duration usage shape (whisper-1) is skipped all the same.
    let duration = r#"{"type":"conversation.item.input_audio_transcription.completed","event_id":"e","item_id":"item_9","content_index":0,"transcript":"Hi.","usage":{"type":"duration","seconds":1.2}}"#;
    assert!(matches!(decode(duration), ServerEvent::InputTranscriptionCompleted { .. }));
    assert_eq!(
        decode(INPUT_TRANSCRIPTION_FAILED),
        ServerEvent::InputTranscriptionFailed {
            item_id: "item_003".into(),
            message: "The audio could not be transcribed.".into()
        }
    );
    let code_only = r#"{"type":"conversation.item.input_audio_transcription.failed","item_id":"i","content_index":0,"error":{"code":"audio_unintelligible"}}"#;
    assert_eq!(
        decode(code_only),
        ServerEvent::InputTranscriptionFailed { item_id: "i".into(), message: "audio_unintelligible".into() }
    );
}

#[test]
fn function_call_arguments_done() {
    assert_eq!(
        decode(FUNCTION_CALL_DONE),
        ServerEvent::FunctionCallArgumentsDone {
            response_id: "resp_002".into(),
            item_id: "fc_001".into(),
            call_id: "call_001".into(),
            name: "book".into(),
            arguments: r#"{"when":"tomorrow 9am"}"#.into(),
        }
    );
}

#[test]
fn response_done_completed_with_usage() {
    assert_eq!(
        decode(RESPONSE_DONE),
        ServerEvent::ResponseDone {
            response_id: "resp_001".into(),
            status: ResponseStatus::Completed,
            reason: None,
            usage: Some(Usage {
                total_tokens: 253,
                input_tokens: 132,
                output_tokens: 121,
                input_text_tokens: 119,
                input_audio_tokens: 13,
                input_cached_tokens: 64,
                output_text_tokens: 30,
                output_audio_tokens: 91,
            }),
        }
    );
}

#[test]
fn response_done_cancelled_failed_and_odd_statuses() {
    assert_eq!(
        decode(RESPONSE_DONE_CANCELLED),
        ServerEvent::ResponseDone {
            response_id: "resp_003".into(),
            status: ResponseStatus::Cancelled,
            reason: Some("turn_detected".into()),
            usage: Some(Usage { total_tokens: 10, input_tokens: 10, ..Usage::default() }),
        }
    );
    assert_eq!(
        decode(RESPONSE_DONE_FAILED),
        ServerEvent::ResponseDone {
            response_id: "resp_004".into(),
            status: ResponseStatus::Failed,
            reason: Some("internal_error".into()),
            usage: None,
        }
    );
    let incomplete = r#"{"type":"response.done","response":{"id":"r","status":"incomplete","status_details":{"type":"incomplete","reason":"max_output_tokens"}}}"#;
    assert!(matches!(
        decode(incomplete),
        ServerEvent::ResponseDone {
            status: ResponseStatus::Incomplete,
            reason: Some(Cow::Borrowed("max_output_tokens")),
            ..
        }
    ));
    let odd = r#"{"type":"response.done","response":{"id":"r","status":"paused"}}"#;
    assert!(matches!(
        decode(odd),
        ServerEvent::ResponseDone { status: ResponseStatus::Other, reason: None, usage: None, .. }
    ));
    let no_status = r#"{"type":"response.done","response":{"id":"r"}}"#;
    assert!(matches!(decode(no_status), ServerEvent::ResponseDone { status: ResponseStatus::Other, .. }));
    for (status, wire) in [
        (ResponseStatus::Completed, "completed"),
        (ResponseStatus::Cancelled, "cancelled"),
        (ResponseStatus::Failed, "failed"),
        (ResponseStatus::Incomplete, "incomplete"),
        (ResponseStatus::InProgress, "in_progress"),
    ] {
        assert_eq!((ResponseStatus::from_wire(wire), status.as_str()), (status, wire));
    }
}

#[test]
fn item_truncated() {
    assert_eq!(
        decode(ITEM_TRUNCATED),
        ServerEvent::ItemTruncated { item_id: "item_004".into(), content_index: 0, audio_end_ms: 1500 }
    );
}

#[test]
fn error_event_and_fatality() {
    let ServerEvent::Error(error) = decode(ERROR) else { panic!("not an error") };
    assert_eq!(
        error,
        ApiError {
            kind: "invalid_request_error".into(),
            code: Some("response_cancel_not_active".into()),
            message: "Cancellation failed: no active response found".into(),
            param: None,
            event_id: None,
        }
    );
    assert!(!error.is_fatal());

    // As quoted in livekit/agents#1122.
    let expired = r#"{"type":"error","event_id":"event_AW4k97NLw8djhOYGTmAKE","error":{"type":"invalid_request_error","code":"session_expired","message":"Your session hit the maximum duration of 15 minutes.","param":null,"event_id":null}}"#;
    let ServerEvent::Error(expired) = decode(expired) else { panic!() };
    assert!(expired.is_fatal());

    let with_event = r#"{"type":"error","event_id":"e","error":{"type":"invalid_request_error","code":"invalid_value","message":"Audio content of 1500ms is shorter than 2000ms.","param":"audio_end_ms","event_id":"client_7"}}"#;
    let ServerEvent::Error(bad_truncate) = decode(with_event) else { panic!() };
    assert_eq!(
        (bad_truncate.param.as_deref(), bad_truncate.event_id.as_deref()),
        (Some("audio_end_ms"), Some("client_7"))
    );
    assert!(!bad_truncate.is_fatal());

    let error = |kind: &str, code: Option<&str>| ApiError {
        kind: kind.into(),
        code: code.map(Into::into),
        message: "m".into(),
        ..ApiError::default()
    };
    assert!(error("authentication_error", None).is_fatal());
    assert!(error("permission_error", Some("whatever")).is_fatal());
    assert!(error("insufficient_quota", Some("insufficient_quota")).is_fatal());
    assert!(error("invalid_request_error", Some("beta_api_shape_disabled")).is_fatal());
    assert!(!error("server_error", None).is_fatal());
    assert!(!error("invalid_request_error", Some("input_audio_buffer_commit_empty")).is_fatal());
    assert!(!error("invalid_request_error", Some("conversation_already_has_active_response")).is_fatal());
    assert!(!error("rate_limit_error", Some("rate_limit_exceeded")).is_fatal());
    assert!(!error("something_new", None).is_fatal());

    // Only an expired session is worth a new one.
    assert!(expired.is_retryable());
    assert!(!error("invalid_request_error", Some("invalid_api_key")).is_retryable());
    assert!(!error("authentication_error", None).is_retryable());
    // A rejected session.update is fatal and not retryable; other bad params are recoverable.
    let rejected = ApiError {
        param: Some("session.audio.input.format.rate".into()),
        ..error("invalid_request_error", Some("invalid_value"))
    };
    assert!(rejected.is_fatal() && !rejected.is_retryable());
    let whole = ApiError { param: Some("session".into()), ..error("invalid_request_error", None) };
    assert!(whole.is_fatal());
    let item = ApiError {
        param: Some("item.content".into()),
        ..error("invalid_request_error", Some("invalid_value"))
    };
    assert!(!item.is_fatal());
    let lookalike = ApiError { param: Some("sessions".into()), ..error("invalid_request_error", None) };
    assert!(!lookalike.is_fatal());

    // An error without type or message is still reported, not dropped.
    let ServerEvent::Error(bare) = decode(r#"{"type":"error","error":{}}"#) else { panic!() };
    assert_eq!(bare, ApiError::default());
}

#[test]
fn unlisted_types_are_unknown_not_errors() {
    for (kind, text) in [
        (
            "rate_limits.updated",
            r#"{"type":"rate_limits.updated","event_id":"e","rate_limits":[{"name":"requests","limit":1000,"remaining":999,"reset_seconds":60},{"name":"tokens","limit":50000,"remaining":49950,"reset_seconds":60}]}"#,
        ),
        (
            "conversation.item.added",
            r#"{"type":"conversation.item.added","event_id":"e","previous_item_id":null,"item":{"id":"item_1","type":"message","role":"user","content":[{"type":"input_audio","transcript":null}]}}"#,
        ),
        ("conversation.item.created", r#"{"type":"conversation.item.created","item":{"id":"i"}}"#),
        (
            "response.content_part.added",
            r#"{"type":"response.content_part.added","response_id":"r","item_id":"i","output_index":0,"content_index":0,"part":{"type":"output_audio","transcript":""}}"#,
        ),
        (
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"hi"}"#,
        ),
        (
            "input_audio_buffer.timeout_triggered",
            r#"{"type":"input_audio_buffer.timeout_triggered","audio_start_ms":1,"audio_end_ms":2,"item_id":"i"}"#,
        ),
        ("output_audio_buffer.started", r#"{"type":"output_audio_buffer.started","response_id":"r"}"#),
        // Our field names with other JSON types must not turn an unknown event into an error.
        (
            "some.future_event",
            r#"{"type":"some.future_event","delta":{"nested":true},"item_id":7,"error":"text","response":[1,2],"content_index":-1}"#,
        ),
    ] {
        assert_eq!(decode(text), ServerEvent::Unknown { kind: kind.into() }, "{text}");
    }
}

#[test]
fn malformed_frames_are_errors() {
    for (text, kind) in [
        ("not json", "json"),
        ("", "json"),
        (r#"["response.done"]"#, "json"),
        (r#""error""#, "json"),
        (r#"{"type":"response.done","response":{"id":"r"}"#, "json"),
        (r#"{"type":"response.done","response":{"id":"r"}} trailing"#, "json"),
        (r#"{"event_id":"e"}"#, "missing_field"),
        (r#"{"type":null}"#, "missing_field"),
        (r#"{"type":42}"#, "json"),
        // A handled event with a mistyped field is an error, not Unknown.
        (r#"{"type":"input_audio_buffer.speech_started","item_id":"i","audio_start_ms":"soon"}"#, "json"),
        (r#"{"type":"input_audio_buffer.speech_started","item_id":"i"}"#, "missing_field"),
        (r#"{"type":"response.done"}"#, "missing_field"),
        (r#"{"type":"response.created","response":{"status":"in_progress"}}"#, "missing_field"),
        (r#"{"type":"error"}"#, "missing_field"),
        (
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","content_index":0}"#,
            "missing_field",
        ),
        (
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","content_index":0,"delta":"not base64!"}"#,
            "base64",
        ),
    ] {
        let err = decode_err(text);
        assert_eq!(err.kind(), kind, "{text}: {err}");
    }
    match decode_err(r#"{"type":"response.done"}"#) {
        RealtimeDecodeError::MissingField(field) => assert_eq!(field, "response"),
        other => panic!("{other}"),
    }
    match decode_err(
        r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","content_index":0,"delta":"@@"}"#,
    ) {
        RealtimeDecodeError::Base64 { field } => assert_eq!(field, "delta"),
        other => panic!("{other}"),
    }
}

#[test]
fn oversize_frames_are_rejected_before_parsing() {
    let mut decoder = RealtimeDecoder::new(16);
    match decoder.decode(AUDIO_DELTA) {
        Err(RealtimeDecodeError::Oversize { len, max }) => assert_eq!((len, max), (AUDIO_DELTA.len(), 16)),
        other => panic!("{other:?}"),
    }
    assert!(decoder.decode(r#"{"type":"x"}"#).is_ok());
    assert_eq!(RealtimeDecodeError::Oversize { len: 2, max: 1 }.kind(), "oversize");
}

#[test]
fn deep_nesting_neither_overflows_the_stack_nor_panics() {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // Skipped fields are skipped without recursion limits mattering.
    let mut decoder = RealtimeDecoder::new(MAX);
    let deep_unknown = format!(r#"{{"type":"rate_limits.updated","x":{}}}"#, nest(100_000));
    assert!(matches!(decoder.decode(&deep_unknown), Ok(ServerEvent::Unknown { .. })));
    let deep_skipped =
        format!(r#"{{"type":"response.created","x":{},"response":{{"id":"r"}}}}"#, nest(100_000));
    assert!(matches!(decoder.decode(&deep_skipped), Ok(ServerEvent::ResponseCreated { .. })));
    // Deep nesting where a handled event expects an object hits serde_json's recursion limit.
    let deep_field = format!(r#"{{"type":"response.done","response":{{"usage":{}}}}}"#, nest(100_000));
    assert!(matches!(decoder.decode(&deep_field), Err(RealtimeDecodeError::Json(_))));
}

#[test]
fn usage_add_sums_every_field() {
    let one = Usage {
        total_tokens: 1,
        input_tokens: 2,
        output_tokens: 3,
        input_text_tokens: 4,
        input_audio_tokens: 5,
        input_cached_tokens: 6,
        output_text_tokens: 7,
        output_audio_tokens: 8,
    };
    let mut total = Usage::default();
    total.add(&one);
    total.add(&one);
    assert_eq!(
        total,
        Usage {
            total_tokens: 2,
            input_tokens: 4,
            output_tokens: 6,
            input_text_tokens: 8,
            input_audio_tokens: 10,
            input_cached_tokens: 12,
            output_text_tokens: 14,
            output_audio_tokens: 16,
        }
    );
    let mut max = Usage { total_tokens: u64::MAX, ..Usage::default() };
    max.add(&one);
    assert_eq!(max.total_tokens, u64::MAX, "saturates instead of overflowing");

    // Summing decoded responses, as the call does.
    let mut call = Usage::default();
    for text in [RESPONSE_DONE, RESPONSE_DONE_CANCELLED] {
        if let ServerEvent::ResponseDone { usage: Some(usage), .. } = decode(text) {
            call.add(&usage);
        }
    }
    assert_eq!((call.total_tokens, call.input_tokens, call.output_audio_tokens), (263, 142, 91));
    assert_eq!(
        serde_json::to_value(&call).unwrap()["input_cached_tokens"],
        64,
        "Usage serialises with its field names"
    );
}

/// Frames built from the handled types and our field names, with values of any JSON type.
fn event_like() -> impl Strategy<Value = String> {
    let kinds = prop::sample::select(vec![
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "response.created",
        "response.output_audio.delta",
        "response.audio.delta",
        "response.output_audio_transcript.done",
        "conversation.item.input_audio_transcription.failed",
        "response.function_call_arguments.done",
        "response.done",
        "conversation.item.truncated",
        "error",
        "rate_limits.updated",
    ]);
    let fields = prop::sample::subsequence(
        vec![
            "item_id",
            "response_id",
            "delta",
            "transcript",
            "call_id",
            "name",
            "arguments",
            "content_index",
            "audio_start_ms",
            "audio_end_ms",
            "response",
            "session",
            "error",
        ],
        0..=13,
    );
    let value = prop_oneof![
        Just("null".to_owned()),
        Just("\"AAEC/w==\"".to_owned()),
        Just("{\"id\":\"r\",\"status\":\"completed\",\"usage\":{\"total_tokens\":-1}}".to_owned()),
        Just("{\"audio\":{\"input\":{\"format\":{\"type\":\"audio/pcm\",\"rate\":1e99}}}}".to_owned()),
        Just("{\"type\":7}".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\\PC*".prop_map(|s| serde_json::Value::String(s).to_string()),
        "[\\[\\]{}\",:0-9a-z\\\\]{0,12}",
    ];
    (kinds, fields, prop::collection::vec(value, 13)).prop_map(|(kind, fields, values)| {
        let mut text = format!(r#"{{"type":"{kind}""#);
        for (field, value) in fields.iter().zip(values) {
            text.push_str(&format!(r#","{field}":{value}"#));
        }
        text.push('}');
        text
    })
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let _ = RealtimeDecoder::new(MAX).decode(&text);
    }

    #[test]
    fn arbitrary_json_like_text_never_panics(text in "[\\[\\]{}\",:0-9a-z. \\\\]{0,64}") {
        let _ = RealtimeDecoder::new(MAX).decode(&text);
    }

    #[test]
    fn event_like_frames_never_panic(text in event_like(), max in 0usize..400) {
        let mut decoder = RealtimeDecoder::new(MAX);
        let _ = decoder.decode(&text);
        let _ = RealtimeDecoder::new(max).decode(&text);
    }
}
