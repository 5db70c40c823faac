//! One simulated Realtime session as a sans-IO state machine.
//!
//! [`Session::handle_client_text`] and [`Session::handle_timeout`] take input (with the time
//! passed in); [`Session::poll_output`] yields server events, log entries and a close request;
//! [`Session::poll_timeout`] says when the session next needs [`Session::handle_timeout`]
//! (paced audio deltas, delayed transcripts). The socket shell in `realtime.rs` drives it.
//!
//! Responses: at most one in-band response (the default conversation's) at a time, plus any
//! number of out-of-band ones (`"conversation": "none"`) in parallel, as the API allows. Server
//! VAD interrupts only the in-band one (`interrupt_response` is about the default conversation).
//! Scripted tool calls ([`ScriptedToolCall`]) end their response; see `finish_response`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use super::audio::{convert_ulaw_clip, decode_to_linear};
use super::fixtures::Clip;
use super::ids::IdGen;
use super::realtime::{
    AfterTool, ScriptedToolCall, SimClientItem, SimConfig, SimEventKind, SimFault, SimToolCall,
};
use super::vad::{EnergyVad, VadEvent};
use crate::core::audio::AudioFormat;

/// Sizes (ms of audio) of successive output deltas, cycled. Uneven on purpose: the bridge
/// must re-frame whatever it gets into 20 ms telephony frames.
const DELTA_CHUNK_MS: [u64; 4] = [40, 100, 180, 60];

/// Delay between committing a user turn and its transcript, like the real async ASR.
const TRANSCRIPT_DELAY: Duration = Duration::from_millis(150);

/// Minimum buffered audio for a manual `input_audio_buffer.commit` (API reference §1.5).
const MIN_COMMIT_MS: u64 = 100;

/// Audio (ms) of the first reply clip spoken as the filler when [`SimConfig::filler`] is unset.
const FILLER_FALLBACK_MS: usize = 600;

/// Ended echo responses whose item can still be truncated (the bridge truncates before it
/// cancels, so one would do; a few cover reordering).
const ECHO_ITEMS_KEPT: usize = 4;

/// What the session wants the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// Send this server event as a text frame.
    Event(Value),
    /// Send this pre-serialised server event (echo mode's fast path).
    Text(String),
    /// Record this in the simulator log.
    Log(SimEventKind),
    /// Close the socket with this code and reason; nothing follows.
    Close { code: u16, reason: String },
}

/// What the session knows about a conversation item.
#[derive(Debug, Clone)]
struct Item {
    /// The item as the server reports it.
    json: Value,
    /// For assistant audio items: ms of audio sent so far (the truncation limit).
    audio_ms: Option<u64>,
}

/// A response whose audio is being streamed.
#[derive(Debug)]
struct ActiveResponse {
    id: String,
    /// The assistant message item (for a response that only calls tools: the first call's item).
    item_id: String,
    /// Whether the response has an assistant message (output index 0); a response that only
    /// calls tools has none.
    has_message: bool,
    /// `"conversation": "none"`: its items are not in the conversation.
    out_of_band: bool,
    /// `response.metadata` from the `response.create`, echoed in the response object.
    metadata: Value,
    /// Scripted function calls, emitted after the message when the response completes.
    calls: Vec<PlannedCall>,
    text: String,
    /// The reply in the session's output format.
    audio: Vec<u8>,
    bytes_per_ms: usize,
    /// Bytes of `audio` already sent.
    sent: usize,
    /// Bytes of `text` already sent as transcript deltas (always on a char boundary).
    text_sent: usize,
    chunks: usize,
    started: Instant,
    next_due: Instant,
}

/// A scripted function call of an active response, with its ids.
#[derive(Debug)]
struct PlannedCall {
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
    then: AfterTool,
}

/// Which active response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The in-band response.
    Main,
    /// An out-of-band response, by index in `Session::asides`.
    Aside(usize),
}

/// What a response says: `(clip name, transcript, audio in the output format)`.
type Speech = (String, String, Vec<u8>);

/// Echo mode's endless response.
#[derive(Debug)]
struct EchoResponse {
    id: String,
    item_id: String,
    /// Audio bytes echoed in this response so far (the truncation limit).
    sent_bytes: u64,
}

/// Why a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    Completed,
    TurnDetected,
    ClientCancelled,
}

/// A client-caused error, turned into an `error` event.
struct ClientError {
    code: &'static str,
    message: String,
    param: Option<String>,
}

fn client_error(code: &'static str, message: impl Into<String>, param: Option<&str>) -> ClientError {
    ClientError { code, message: message.into(), param: param.map(str::to_owned) }
}

/// The simulated server side of one Realtime WebSocket.
pub(crate) struct Session {
    cfg: Arc<SimConfig>,
    ids: IdGen,
    conversation_id: String,
    /// The effective session object, echoed in `session.created` / `session.updated`.
    session: Value,
    input_format: AudioFormat,
    output_format: AudioFormat,
    vad: EnergyVad,
    /// Odd trailing byte of L16 input, kept for the next append.
    carry: Vec<u8>,
    /// User item of the speech in progress (from `speech_started` to its commit).
    speech: Option<(String, u64)>,
    /// Ms of input appended since the last commit or clear.
    buffered_ms: f64,
    items: HashMap<String, Item>,
    last_item_id: Option<String>,
    user_turns: usize,
    next_reply: usize,
    /// The in-band response being streamed.
    response: Option<ActiveResponse>,
    /// Out-of-band responses being streamed, oldest first.
    asides: Vec<ActiveResponse>,
    /// In-band responses started so far: the number the tool script's `on_turn` refers to.
    responses_started: usize,
    /// Function calls of the conversation by `call_id` (scripted or created by the client), with
    /// what the response after their first output says (`None` once answered, or for a call the
    /// client created).
    calls: HashMap<String, Option<AfterTool>>,
    /// What the next in-band response says, set by the output of a scripted call.
    after_tool: Option<AfterTool>,
    /// Delayed events (transcripts), in no particular order.
    timers: Vec<(Instant, Value)>,
    out: VecDeque<Output>,
    closed: bool,
    deltas_sent: u64,
    user_audio_ms: f64,
    agent_audio_ms: u64,
    last_input_tokens: u64,
    scratch: Vec<i16>,
    vad_events: Vec<VadEvent>,
    /// Echo mode's endless response, until the client cancels it.
    echo_response: Option<EchoResponse>,
    /// Items of recently cancelled echo responses with the ms echoed in each, oldest first.
    echo_ended: VecDeque<(String, u64)>,
    /// Echo mode with VAD: decoded bytes of the current append (reused).
    echo_bytes: Vec<u8>,
    /// Whether `turn_detection` is set (cached for echo mode's VAD).
    turn_detection_on: bool,
}

impl Session {
    /// A new session; queues `session.created` and the `Connected` log entry.
    pub(crate) fn new(cfg: Arc<SimConfig>, model: Option<String>) -> Self {
        let mut ids = IdGen::new();
        let session = default_session(&mut ids, model.as_deref(), &cfg);
        let vad = EnergyVad::new(cfg.vad);
        let conversation_id = ids.base62("conv_", 20);
        let mut s = Self {
            cfg,
            ids,
            conversation_id,
            session,
            input_format: AudioFormat::PCM16_24K,
            output_format: AudioFormat::PCM16_24K,
            vad,
            carry: Vec::new(),
            speech: None,
            buffered_ms: 0.0,
            items: HashMap::new(),
            last_item_id: None,
            user_turns: 0,
            next_reply: 0,
            response: None,
            asides: Vec::new(),
            responses_started: 0,
            calls: HashMap::new(),
            after_tool: None,
            timers: Vec::new(),
            out: VecDeque::new(),
            closed: false,
            deltas_sent: 0,
            user_audio_ms: 0.0,
            agent_audio_ms: 0,
            last_input_tokens: 0,
            scratch: Vec::new(),
            vad_events: Vec::new(),
            echo_response: None,
            echo_ended: VecDeque::with_capacity(ECHO_ITEMS_KEPT),
            echo_bytes: Vec::new(),
            turn_detection_on: true,
        };
        s.log(SimEventKind::Connected { model });
        let session = s.session.clone();
        s.emit(json!({"type": "session.created", "session": session}));
        s
    }

    /// The next thing for the shell to do, if any.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let timers = self.timers.iter().map(|(at, _)| *at);
        let deltas = self.response.iter().chain(&self.asides).map(|r| r.next_due);
        timers.chain(deltas).min()
    }

    /// Whether the session asked to close.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Fires due timers and sends the audio deltas that are due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.timers.sort_by_key(|(at, _)| *at);
        while self.timers.first().is_some_and(|(at, _)| *at <= now) {
            let (_, event) = self.timers.remove(0);
            self.emit(event);
        }
        while !self.closed
            && let Some(slot) = self.due_slot(now)
        {
            self.send_next_chunk(slot);
        }
    }

    /// The active response whose next delta is due soonest, if one is due at `now` (the in-band
    /// one first on a tie).
    fn due_slot(&self, now: Instant) -> Option<Slot> {
        let main = self.response.as_ref().map(|r| (r.next_due, Slot::Main));
        let asides = self.asides.iter().enumerate().map(|(i, r)| (r.next_due, Slot::Aside(i)));
        main.into_iter()
            .chain(asides)
            .filter(|(due, _)| *due <= now)
            .min_by_key(|(due, _)| *due)
            .map(|(_, slot)| slot)
    }

    /// A binary frame: the Realtime API only speaks JSON text.
    pub(crate) fn handle_client_binary(&mut self) {
        if self.closed {
            return;
        }
        self.send_error(
            client_error("invalid_request_error", "Binary frames are not supported; send JSON text", None),
            None,
        );
    }

    /// One client text frame.
    pub(crate) fn handle_client_text(&mut self, text: &str, now: Instant) {
        if self.closed {
            return;
        }
        if self.cfg.echo && self.echo(text, now) {
            return;
        }
        let event: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let err =
                    client_error("invalid_json", format!("We could not parse the JSON body: {e}"), None);
                return self.send_error(err, None);
            }
        };
        let client_event_id = event.get("event_id").and_then(Value::as_str).map(str::to_owned);
        let Some(kind) = event.get("type").and_then(Value::as_str).map(str::to_owned) else {
            let err = client_error(
                "missing_required_parameter",
                "Missing required parameter: 'type'.",
                Some("type"),
            );
            return self.send_error(err, client_event_id);
        };
        // Appends arrive every 20 ms per call and would swamp the log (count them in the
        // capture file instead).
        if kind != "input_audio_buffer.append" {
            self.log(SimEventKind::ClientEvent { kind: kind.clone() });
        }
        let result = match kind.as_str() {
            "session.update" if self.cfg.fault == Some(SimFault::FatalErrorOnSessionUpdate) => {
                // What the real service does with a revoked key: a fatal error, then a close.
                let err = client_error(
                    "invalid_api_key",
                    "Incorrect API key provided: sk-sim****. You can find your API key at \
                     https://platform.openai.com/account/api-keys.",
                    None,
                );
                self.send_error(err, client_event_id);
                return self.close(1008, "invalid_api_key");
            }
            "session.update" => self.on_session_update(&event),
            "input_audio_buffer.append" => self.on_append(&event, now),
            "input_audio_buffer.commit" => self.on_commit(now),
            "input_audio_buffer.clear" => {
                self.clear_input();
                self.emit(json!({"type": "input_audio_buffer.cleared"}));
                Ok(())
            }
            "conversation.item.create" => self.on_item_create(&event),
            "conversation.item.truncate" => self.on_truncate(&event),
            "conversation.item.delete" => self.on_item_delete(&event),
            "conversation.item.retrieve" => self.on_item_retrieve(&event),
            "response.create" => self.on_response_create(&event, now),
            "response.cancel" => self.on_response_cancel(&event),
            other => Err(client_error(
                "invalid_value",
                format!("Invalid value: '{other}'. This is not a client event type this server supports."),
                Some("type"),
            )),
        };
        if let Err(err) = result {
            self.send_error(err, client_event_id);
        }
    }

    /// Echo mode: each appended chunk comes straight back as an output audio delta of one
    /// endless response, so round trips through the bridge can be timed without a model. Only
    /// appends take this path (without building a JSON tree, to keep the simulator cheap under
    /// load); everything else is handled normally. With `echo_vad` the chunk also goes through
    /// the energy VAD (decoded into reused buffers). Returns whether `text` was consumed.
    fn echo(&mut self, text: &str, now: Instant) -> bool {
        const APPEND: &str = r#"{"type":"input_audio_buffer.append","audio":""#;
        let Some(rest) = text.strip_prefix(APPEND) else { return false };
        let Some(audio) = rest.strip_suffix(r#""}"#) else { return false };
        if audio.contains(['"', '\\']) {
            return false;
        }
        if self.echo_response.is_none() {
            let id = self.ids.base62("resp_", 20);
            let item_id = self.ids.base62("item_", 20);
            self.emit(json!({"type": "response.created", "response": {
                "id": id, "object": "realtime.response", "status": "in_progress", "output": []}}));
            self.echo_response = Some(EchoResponse { id, item_id, sent_bytes: 0 });
        }
        let Some(r) = &mut self.echo_response else { return false };
        r.sent_bytes += base64_decoded_len(audio) as u64;
        self.deltas_sent += 1;
        let mut out = String::with_capacity(audio.len() + 200);
        out.push_str(r#"{"type":"response.output_audio.delta","event_id":"event_echo"#);
        out.push_str(&self.deltas_sent.to_string());
        out.push_str(r#"","response_id":""#);
        out.push_str(&r.id);
        out.push_str(r#"","item_id":""#);
        out.push_str(&r.item_id);
        out.push_str(r#"","output_index":0,"content_index":0,"delta":""#);
        out.push_str(audio);
        out.push_str(r#""}"#);
        self.out.push_back(Output::Text(out));
        if self.cfg.echo_vad {
            self.echo_vad(audio, now);
        }
        true
    }

    /// Echo mode's VAD: decodes `audio` (base64, in the input format) like
    /// [`on_append`](Self::on_append) but into reused buffers, and reports speech start and stop
    /// (no commits, no responses).
    fn echo_vad(&mut self, audio: &str, now: Instant) {
        let mut bytes = std::mem::take(&mut self.echo_bytes);
        bytes.clear();
        bytes.extend_from_slice(&self.carry);
        self.carry.clear();
        if BASE64.decode_vec(audio, &mut bytes).is_err() {
            // Echoed as sent; the VAD just skips what it cannot read.
            self.echo_bytes = bytes;
            return;
        }
        let format = self.input_format;
        let mut samples = std::mem::take(&mut self.scratch);
        samples.clear();
        let used = decode_to_linear(format, &bytes, &mut samples);
        self.carry.extend_from_slice(&bytes[used..]);
        let mut events = std::mem::take(&mut self.vad_events);
        events.clear();
        self.vad.push(&samples, format.sample_rate_hz, &mut events);
        self.scratch = samples;
        self.echo_bytes = bytes;
        if self.turn_detection_on {
            for ev in &events {
                self.on_vad(*ev, now);
            }
        } else {
            self.vad.reset();
        }
        self.vad_events = events;
    }

    /// Ends the echo response as cancelled by the client; the next append starts a new one.
    fn end_echo_response(&mut self) {
        let Some(r) = self.echo_response.take() else { return };
        let sent_ms = r.sent_bytes / self.output_format.bytes_per_ms().max(1) as u64;
        let item = json!({
            "id": r.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "incomplete",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": ""}],
        });
        self.emit(json!({"type": "response.output_item.done", "response_id": r.id, "output_index": 0, "item": item}));
        let details = json!({"type": "cancelled", "reason": "client_cancelled"});
        let usage = self.usage(sent_ms, 0);
        let response =
            self.response_json(&r.id, "cancelled", details, json!([item]), usage, false, &Value::Null);
        self.emit(json!({"type": "response.done", "response": response}));
        self.agent_audio_ms += sent_ms;
        if self.echo_ended.len() == ECHO_ITEMS_KEPT {
            self.echo_ended.pop_front();
        }
        self.echo_ended.push_back((r.item_id, sent_ms));
        self.log(SimEventKind::ResponseDone { response_id: r.id, status: "cancelled".to_owned() });
    }

    /// Ms of audio echoed in `item_id`, if it is an echo response's item.
    fn echo_item_ms(&self, item_id: &str) -> Option<u64> {
        if let Some(r) = self.echo_response.as_ref().filter(|r| r.item_id == item_id) {
            return Some(r.sent_bytes / self.output_format.bytes_per_ms().max(1) as u64);
        }
        self.echo_ended.iter().find(|(id, _)| id == item_id).map(|(_, ms)| *ms)
    }

    // ----- session -----

    fn on_session_update(&mut self, event: &Value) -> Result<(), ClientError> {
        let Some(patch) = event.get("session").and_then(Value::as_object) else {
            return Err(client_error(
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                Some("session"),
            ));
        };
        match patch.get("type").and_then(Value::as_str) {
            Some("realtime") => {}
            None => {
                return Err(client_error(
                    "missing_required_parameter",
                    "Missing required parameter: 'session.type'.",
                    Some("session.type"),
                ));
            }
            Some(other) => {
                return Err(client_error(
                    "invalid_value",
                    format!("Invalid value: '{other}'. Supported values are: 'realtime'."),
                    Some("session.type"),
                ));
            }
        }
        let mut next = self.session.clone();
        merge_session(&mut next, patch)?;
        let input = format_of(&next["audio"]["input"]["format"]).ok_or_else(|| internal("input format"))?;
        let output =
            format_of(&next["audio"]["output"]["format"]).ok_or_else(|| internal("output format"))?;
        if input != self.input_format {
            self.carry.clear();
        }
        self.input_format = input;
        self.output_format = output;
        self.session = next;
        self.turn_detection_on = self.turn_detection().is_some();
        let session = self.session.clone();
        self.emit(json!({"type": "session.updated", "session": session}));
        let input_format = self.session["audio"]["input"]["format"]["type"].as_str().unwrap_or("").to_owned();
        let output_format =
            self.session["audio"]["output"]["format"]["type"].as_str().unwrap_or("").to_owned();
        self.log(SimEventKind::SessionUpdated { input_format, output_format });
        Ok(())
    }

    fn turn_detection(&self) -> Option<&Map<String, Value>> {
        self.session["audio"]["input"]["turn_detection"].as_object()
    }

    fn td_flag(&self, name: &str) -> bool {
        self.turn_detection().and_then(|td| td.get(name)).and_then(Value::as_bool).unwrap_or(true)
    }

    fn transcription_enabled(&self) -> bool {
        self.session["audio"]["input"]["transcription"].is_object()
    }

    // ----- input audio -----

    fn on_append(&mut self, event: &Value, now: Instant) -> Result<(), ClientError> {
        let Some(audio) = event.get("audio").and_then(Value::as_str) else {
            return Err(client_error(
                "missing_required_parameter",
                "Missing required parameter: 'audio'.",
                Some("audio"),
            ));
        };
        let mut bytes = BASE64.decode(audio).map_err(|e| {
            client_error("invalid_value", format!("Invalid base64 audio: {e}"), Some("audio"))
        })?;
        if !self.carry.is_empty() {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(&bytes);
            bytes = joined;
        }
        let format = self.input_format;
        let mut samples = std::mem::take(&mut self.scratch);
        samples.clear();
        let used = decode_to_linear(format, &bytes, &mut samples);
        self.carry.extend_from_slice(&bytes[used..]);
        let ms = samples.len() as f64 * 1000.0 / f64::from(format.sample_rate_hz);
        self.buffered_ms += ms;
        self.user_audio_ms += ms;
        let mut events = std::mem::take(&mut self.vad_events);
        events.clear();
        self.vad.push(&samples, format.sample_rate_hz, &mut events);
        self.scratch = samples;
        if self.turn_detection().is_none() {
            // Manual turns: keep the position counting but never enter speech.
            self.vad.reset();
        } else {
            for ev in &events {
                self.on_vad(*ev, now);
                if self.closed {
                    break;
                }
            }
        }
        self.vad_events = events;
        Ok(())
    }

    fn on_vad(&mut self, event: VadEvent, now: Instant) {
        match event {
            VadEvent::Started { audio_start_ms, voiced_start_ms } => {
                let item_id = self.ids.base62("item_", 20);
                self.speech = Some((item_id.clone(), voiced_start_ms));
                self.emit(json!({
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": audio_start_ms,
                    "item_id": item_id,
                }));
                self.log(SimEventKind::SpeechStarted { audio_start_ms });
                // Echo mode: the client cancels the echo response itself.
                if self.cfg.echo {
                    return;
                }
                // Only the default conversation's response: out-of-band ones play on.
                if self.response.is_some() && self.td_flag("interrupt_response") {
                    self.end_response(Slot::Main, EndReason::TurnDetected);
                }
            }
            VadEvent::Stopped { audio_end_ms } => {
                let Some((item_id, voiced_start)) = self.speech.take() else { return };
                self.emit(json!({
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": audio_end_ms,
                    "item_id": item_id,
                }));
                self.log(SimEventKind::SpeechStopped { audio_end_ms });
                // Echo mode: speech events only, no turns.
                if self.cfg.echo {
                    return;
                }
                self.commit_user_turn(item_id, audio_end_ms.saturating_sub(voiced_start), now);
                if self.td_flag("create_response") && self.response.is_none() {
                    self.start_response(now, Value::Null);
                }
            }
        }
    }

    fn on_commit(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.buffered_ms < MIN_COMMIT_MS as f64 {
            return Err(client_error(
                "input_audio_buffer_commit_empty",
                format!(
                    "Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms \
                     of audio, but buffer only has {:.2}ms of audio.",
                    self.buffered_ms
                ),
                None,
            ));
        }
        let item_id = match self.speech.take() {
            Some((id, _)) => id,
            None => self.ids.base62("item_", 20),
        };
        self.vad.reset();
        let ms = self.buffered_ms as u64;
        self.commit_user_turn(item_id, ms, now);
        Ok(())
    }

    fn commit_user_turn(&mut self, item_id: String, speech_ms: u64, now: Instant) {
        let previous = self.last_item_id.clone();
        self.emit(json!({
            "type": "input_audio_buffer.committed",
            "previous_item_id": previous,
            "item_id": item_id,
        }));
        let item = json!({
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": null}],
        });
        self.add_item(item, None, previous);
        if self.transcription_enabled() {
            let transcript = self.cfg.caller_transcripts.get(self.user_turns).cloned().unwrap_or_default();
            let seconds = (speech_ms as f64 / 100.0).round() / 10.0;
            let event = json!({
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {"type": "duration", "seconds": seconds},
            });
            self.timers.push((now + TRANSCRIPT_DELAY, event));
        }
        self.user_turns += 1;
        self.buffered_ms = 0.0;
    }

    fn clear_input(&mut self) {
        self.buffered_ms = 0.0;
        self.carry.clear();
        self.speech = None;
        self.vad.reset();
    }

    // ----- conversation items -----

    /// Records an item and announces it with `conversation.item.added` / `.done`.
    fn add_item(&mut self, item: Value, audio_ms: Option<u64>, previous: Option<String>) {
        let id = item["id"].as_str().unwrap_or_default().to_owned();
        self.emit(json!({"type": "conversation.item.added", "previous_item_id": previous, "item": item}));
        if item["status"] == "completed" {
            self.emit(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": item}));
        }
        self.items.insert(id.clone(), Item { json: item, audio_ms });
        self.last_item_id = Some(id);
    }

    fn on_item_create(&mut self, event: &Value) -> Result<(), ClientError> {
        let Some(item) = event.get("item").and_then(Value::as_object) else {
            return Err(client_error(
                "missing_required_parameter",
                "Missing required parameter: 'item'.",
                Some("item"),
            ));
        };
        let kind = match item.get("type").and_then(Value::as_str) {
            Some(kind @ ("message" | "function_call" | "function_call_output")) => kind,
            Some(other) => {
                return Err(client_error(
                    "invalid_value",
                    format!(
                        "Invalid value: '{other}'. Supported values are: 'message', 'function_call', and \
                         'function_call_output'."
                    ),
                    Some("item.type"),
                ));
            }
            None => {
                return Err(client_error(
                    "missing_required_parameter",
                    "Missing required parameter: 'item.type'.",
                    Some("item.type"),
                ));
            }
        };
        let summary = match kind {
            "function_call_output" => {
                let call_id = item_str(item, "call_id")?;
                let output = item_str(item, "output")?;
                if !self.calls.contains_key(&call_id) {
                    return Err(client_error(
                        "invalid_value",
                        format!(
                            "Invalid value: '{call_id}'. No function call with this call_id exists in the \
                             conversation."
                        ),
                        Some("item.call_id"),
                    ));
                }
                SimClientItem::FunctionCallOutput { call_id, output }
            }
            "function_call" => SimClientItem::FunctionCall {
                call_id: item.get("call_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                name: item_str(item, "name")?,
                arguments: item_str(item, "arguments")?,
            },
            _ => SimClientItem::Message {
                role: item.get("role").and_then(Value::as_str).unwrap_or_default().to_owned(),
                text: item
                    .get("content")
                    .and_then(Value::as_array)
                    .map(|parts| parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect())
                    .unwrap_or_default(),
            },
        };
        let mut item = item.clone();
        let id = match item.get("id").and_then(Value::as_str) {
            Some(id) if self.items.contains_key(id) => {
                return Err(client_error(
                    "item_id_already_exists",
                    format!("Item with id '{id}' already exists."),
                    Some("item.id"),
                ));
            }
            Some(id) => id.to_owned(),
            None => self.ids.base62("item_", 20),
        };
        item.insert("id".into(), json!(id));
        item.insert("object".into(), json!("realtime.item"));
        item.entry("status").or_insert(json!("completed"));
        let previous = match event.get("previous_item_id").and_then(Value::as_str) {
            Some(p) => Some(p.to_owned()),
            None => self.last_item_id.clone(),
        };
        self.add_item(Value::Object(item), None, previous);
        match &summary {
            SimClientItem::FunctionCallOutput { call_id, .. } => {
                // The first output of a scripted call decides the next response; later ones do not.
                if let Some(then) = self.calls.get_mut(call_id).and_then(Option::take) {
                    self.after_tool = Some(then);
                }
            }
            SimClientItem::FunctionCall { call_id, .. } if !call_id.is_empty() => {
                self.calls.entry(call_id.clone()).or_insert(None);
            }
            _ => {}
        }
        self.log(SimEventKind::ItemCreated { item_id: id, item: summary });
        Ok(())
    }

    fn on_item_delete(&mut self, event: &Value) -> Result<(), ClientError> {
        let id = required_str(event, "item_id")?;
        if self.items.remove(&id).is_none() {
            return Err(item_not_found(&id));
        }
        self.emit(json!({"type": "conversation.item.deleted", "item_id": id}));
        Ok(())
    }

    fn on_item_retrieve(&mut self, event: &Value) -> Result<(), ClientError> {
        let id = required_str(event, "item_id")?;
        let Some(item) = self.items.get(&id).map(|i| i.json.clone()) else { return Err(item_not_found(&id)) };
        self.emit(json!({"type": "conversation.item.retrieved", "item": item}));
        Ok(())
    }

    fn on_truncate(&mut self, event: &Value) -> Result<(), ClientError> {
        let item_id = required_str(event, "item_id")?;
        let content_index = required_u64(event, "content_index")?;
        let audio_end_ms = required_u64(event, "audio_end_ms")?;
        let sent_ms = match self.echo_item_ms(&item_id) {
            Some(ms) => ms,
            None => {
                let Some(item) = self.items.get(&item_id) else { return Err(item_not_found(&item_id)) };
                item.audio_ms.ok_or_else(|| {
                    client_error(
                        "invalid_value",
                        format!(
                            "Only assistant messages with audio can be truncated; '{item_id}' is not one."
                        ),
                        Some("item_id"),
                    )
                })?
            }
        };
        if content_index != 0 {
            return Err(client_error(
                "invalid_value",
                format!("Invalid value: {content_index}. The item has one content part, at index 0."),
                Some("content_index"),
            ));
        }
        if audio_end_ms > sent_ms {
            return Err(client_error(
                "invalid_value",
                format!("Audio content of {sent_ms}ms is already shorter than {audio_end_ms}ms"),
                Some("audio_end_ms"),
            ));
        }
        self.emit(json!({
            "type": "conversation.item.truncated",
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": audio_end_ms,
        }));
        self.log(SimEventKind::Truncated { item_id, audio_end_ms });
        Ok(())
    }

    // ----- responses -----

    fn on_response_create(&mut self, event: &Value, now: Instant) -> Result<(), ClientError> {
        let (out_of_band, metadata) = match event.get("response") {
            None | Some(Value::Null) => (false, Value::Null),
            Some(Value::Object(params)) => {
                let out_of_band = match params.get("conversation") {
                    None | Some(Value::Null) => false,
                    Some(v) if v == "auto" => false,
                    Some(v) if v == "none" => true,
                    Some(other) => {
                        return Err(client_error(
                            "invalid_value",
                            format!("Invalid value: {other}. Supported values are: 'auto' and 'none'."),
                            Some("response.conversation"),
                        ));
                    }
                };
                let metadata = match params.get("metadata") {
                    None | Some(Value::Null) => Value::Null,
                    Some(m @ Value::Object(_)) => m.clone(),
                    Some(_) => return Err(invalid_type("response.metadata")),
                };
                (out_of_band, metadata)
            }
            Some(_) => return Err(invalid_type("response")),
        };
        if out_of_band {
            // Out of the default conversation: runs alongside anything else.
            self.start_aside(now, metadata);
            return Ok(());
        }
        if let Some(r) = &self.response {
            return Err(client_error(
                "conversation_already_has_active_response",
                format!(
                    "Conversation already has an active response in progress: {}. Wait until the response is finished before creating a new one.",
                    r.id
                ),
                None,
            ));
        }
        self.start_response(now, metadata);
        Ok(())
    }

    fn on_response_cancel(&mut self, event: &Value) -> Result<(), ClientError> {
        self.log(SimEventKind::CancelReceived);
        let wanted = event.get("response_id").and_then(Value::as_str);
        if self.response.is_none()
            && let Some(echo) = &self.echo_response
            && wanted.is_none_or(|id| id == echo.id)
        {
            self.end_echo_response();
            return Ok(());
        }
        // Without an id: the default conversation's response (reference §1.3).
        let slot = match wanted {
            None => self.response.is_some().then_some(Slot::Main),
            Some(id) if self.response.as_ref().is_some_and(|r| r.id == id) => Some(Slot::Main),
            Some(id) => self.asides.iter().position(|r| r.id == id).map(Slot::Aside),
        };
        let Some(slot) = slot else {
            return Err(client_error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
                None,
            ));
        };
        self.end_response(slot, EndReason::ClientCancelled);
        Ok(())
    }

    /// Starts in-band response number `responses_started`: a scripted tool turn if the tool
    /// script has one for it, else what the last scripted call's output asked for, else the
    /// next reply clip.
    fn start_response(&mut self, now: Instant, metadata: Value) {
        let turn = self.responses_started;
        let script: Vec<ScriptedToolCall> =
            self.cfg.tool_script.iter().filter(|c| c.on_turn == turn).cloned().collect();
        let after = self.after_tool.take();
        let speech = if script.is_empty() {
            match after {
                Some(AfterTool::ReplyClip(clip)) => self.convert(&clip).map(Some),
                Some(AfterTool::Reply) | None => self.pick_reply().map(Some),
            }
        } else {
            match script.iter().find_map(|c| c.say_before.as_ref()) {
                Some(clip) => self.convert(clip).map(Some),
                None => Ok(None),
            }
        };
        let speech = match speech {
            Ok(speech) => speech,
            Err(e) => return self.server_error(&e),
        };
        self.responses_started += 1;
        let calls = script
            .into_iter()
            .map(|c| PlannedCall {
                item_id: self.ids.base62("item_", 20),
                call_id: self.ids.base62("call_", 16),
                name: c.name,
                arguments: c.arguments,
                then: c.then,
            })
            .collect();
        self.begin_response(now, speech, calls, false, metadata);
    }

    /// Starts an out-of-band response speaking the filler.
    fn start_aside(&mut self, now: Instant, metadata: Value) {
        match self.filler() {
            Ok(speech) => self.begin_response(now, Some(speech), Vec::new(), true, metadata),
            Err(e) => self.server_error(&e),
        }
    }

    /// Announces a response (`response.created`, its message item when it speaks) and makes it
    /// active; its deltas follow from [`handle_timeout`](Self::handle_timeout).
    fn begin_response(
        &mut self,
        now: Instant,
        speech: Option<Speech>,
        calls: Vec<PlannedCall>,
        out_of_band: bool,
        metadata: Value,
    ) {
        let response_id = self.ids.base62("resp_", 20);
        let response = self.response_json(
            &response_id,
            "in_progress",
            Value::Null,
            json!([]),
            Value::Null,
            out_of_band,
            &metadata,
        );
        self.emit(json!({"type": "response.created", "response": response}));
        self.emit(json!({
            "type": "rate_limits.updated",
            "rate_limits": [
                {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                {"name": "tokens", "limit": 800_000, "remaining": 795_000, "reset_seconds": 0.375},
            ],
        }));
        let has_message = speech.is_some();
        let (clip, text, audio) = speech.unwrap_or_default();
        let item_id = if has_message {
            let item_id = self.ids.base62("item_", 20);
            let item = json!({
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            });
            self.emit(json!({
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            }));
            if !out_of_band {
                let previous = self.last_item_id.clone();
                self.add_item(item, Some(0), previous);
            }
            self.emit(json!({
                "type": "response.content_part.added",
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_audio", "transcript": ""},
            }));
            item_id
        } else {
            calls.first().map(|c| c.item_id.clone()).unwrap_or_default()
        };
        self.log(SimEventKind::ResponseStarted {
            response_id: response_id.clone(),
            item_id: item_id.clone(),
            clip,
            out_of_band,
        });
        let r = ActiveResponse {
            id: response_id,
            item_id,
            has_message,
            out_of_band,
            metadata,
            calls,
            text,
            audio,
            bytes_per_ms: self.output_format.bytes_per_ms().max(1),
            sent: 0,
            text_sent: 0,
            chunks: 0,
            started: now,
            next_due: now,
        };
        if out_of_band {
            self.asides.push(r);
        } else {
            self.response = Some(r);
        }
    }

    /// The next reply clip (cycling) in the output format; empty without replies.
    fn pick_reply(&mut self) -> anyhow::Result<Speech> {
        let replies = &self.cfg.replies;
        if replies.is_empty() {
            return Ok(Speech::default());
        }
        let clip = &replies[self.next_reply % replies.len()];
        self.next_reply += 1;
        let converted = convert_ulaw_clip(clip.ulaw, self.output_format)?;
        Ok((clip.name.to_owned(), clip.text.clone(), converted.bytes))
    }

    /// `clip` in the output format.
    fn convert(&self, clip: &Clip) -> anyhow::Result<Speech> {
        let converted = convert_ulaw_clip(clip.ulaw, self.output_format)?;
        Ok((clip.name.to_owned(), clip.text.clone(), converted.bytes))
    }

    /// What an out-of-band response says: [`SimConfig::filler`], else the first
    /// [`FILLER_FALLBACK_MS`] of the first reply (with the words that fit), else nothing.
    fn filler(&self) -> anyhow::Result<Speech> {
        if let Some(clip) = &self.cfg.filler {
            return self.convert(clip);
        }
        let Some(first) = self.cfg.replies.first() else { return Ok(Speech::default()) };
        // Clips are μ-law at 8 kHz: 8 bytes per ms.
        let bytes = (FILLER_FALLBACK_MS * 8).min(first.ulaw.len());
        let mut cut = first.text.len() * bytes / first.ulaw.len().max(1);
        while !first.text.is_char_boundary(cut) {
            cut -= 1;
        }
        let text = first.text[..cut].rsplit_once(' ').map_or("", |(words, _)| words).to_owned();
        let converted = convert_ulaw_clip(&first.ulaw[..bytes], self.output_format)?;
        Ok((first.name.to_owned(), text, converted.bytes))
    }

    /// A clip could not be converted: a `server_error` event, and no response.
    fn server_error(&mut self, e: &anyhow::Error) {
        tracing::warn!(error = %e, "sim: cannot convert a clip");
        let err = ClientError {
            code: "server_error",
            message: format!("The server had an error while processing your request: {e}"),
            param: None,
        };
        self.send_error(err, None);
    }

    /// Takes an active response out of its slot.
    fn take_slot(&mut self, slot: Slot) -> Option<ActiveResponse> {
        match slot {
            Slot::Main => self.response.take(),
            Slot::Aside(i) => (i < self.asides.len()).then(|| self.asides.remove(i)),
        }
    }

    /// Puts a response taken with [`take_slot`](Self::take_slot) back.
    fn put_slot(&mut self, slot: Slot, r: ActiveResponse) {
        match slot {
            Slot::Main => self.response = Some(r),
            Slot::Aside(i) => {
                let at = i.min(self.asides.len());
                self.asides.insert(at, r);
            }
        }
    }

    /// Sends the next audio delta of a response (and finishes it after the last).
    fn send_next_chunk(&mut self, slot: Slot) {
        let Some(mut r) = self.take_slot(slot) else { return };
        if r.sent >= r.audio.len() {
            return self.finish_response(r, EndReason::Completed);
        }
        let chunk_ms = DELTA_CHUNK_MS[r.chunks % DELTA_CHUNK_MS.len()];
        let len = (chunk_ms as usize * r.bytes_per_ms).min(r.audio.len() - r.sent);
        let delta = BASE64.encode(&r.audio[r.sent..r.sent + len]);
        r.sent += len;
        r.chunks += 1;
        let first = r.chunks == 1;
        let sent_ms = (r.sent / r.bytes_per_ms) as u64;
        // Transcript in proportion to the audio sent, cut on a char boundary.
        let mut text_end =
            if r.sent >= r.audio.len() { r.text.len() } else { r.text.len() * r.sent / r.audio.len() };
        while !r.text.is_char_boundary(text_end) {
            text_end += 1;
        }
        let text_delta = r.text[r.text_sent..text_end.max(r.text_sent)].to_owned();
        r.text_sent = text_end.max(r.text_sent);
        r.next_due = pace(r.started, sent_ms, self.cfg.speed);
        let done = r.sent >= r.audio.len();
        if let Some(item) = self.items.get_mut(&r.item_id) {
            item.audio_ms = Some(sent_ms);
        }
        self.emit(json!({
            "type": "response.output_audio.delta",
            "response_id": r.id,
            "item_id": r.item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": delta,
        }));
        self.deltas_sent += 1;
        if first {
            self.log(SimEventKind::FirstDelta { response_id: r.id.clone() });
        }
        let kill = match self.cfg.fault {
            Some(SimFault::CloseOnFirstDelta) => self.deltas_sent == 1,
            Some(SimFault::CloseFirstConnectionAfterDeltas(n)) => self.deltas_sent == u64::from(n),
            _ => false,
        };
        if kill {
            return self.close(1011, "simulated server error");
        }
        if !text_delta.is_empty() {
            self.emit(json!({
                "type": "response.output_audio_transcript.delta",
                "response_id": r.id,
                "item_id": r.item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": text_delta,
            }));
        }
        if done {
            self.finish_response(r, EndReason::Completed);
        } else {
            self.put_slot(slot, r);
        }
    }

    /// Ends an active response early (or on time) with the closing events and `response.done`.
    fn end_response(&mut self, slot: Slot, reason: EndReason) {
        if let Some(r) = self.take_slot(slot) {
            self.finish_response(r, reason);
        }
    }

    /// Closes the response's message (if it has one); if it completed, emits its scripted
    /// function calls after it; then `response.done`.
    fn finish_response(&mut self, r: ActiveResponse, reason: EndReason) {
        let completed = reason == EndReason::Completed;
        let transcript = if completed { r.text.clone() } else { r.text[..r.text_sent].to_owned() };
        let sent_ms = (r.sent / r.bytes_per_ms) as u64;
        let status = if completed { "completed" } else { "cancelled" };
        let mut output = Vec::new();
        if r.has_message {
            let part_event = |kind: &str| {
                json!({
                    "type": kind,
                    "response_id": r.id,
                    "item_id": r.item_id,
                    "output_index": 0,
                    "content_index": 0,
                })
            };
            if completed {
                self.emit(part_event("response.output_audio.done"));
                let mut ev = part_event("response.output_audio_transcript.done");
                ev["transcript"] = json!(transcript);
                self.emit(ev);
            }
            let part = json!({"type": "output_audio", "transcript": transcript});
            let mut ev = part_event("response.content_part.done");
            ev["part"] = part.clone();
            self.emit(ev);
            let item = json!({
                "id": r.item_id,
                "object": "realtime.item",
                "type": "message",
                "status": if completed { "completed" } else { "incomplete" },
                "role": "assistant",
                "content": [part],
            });
            self.emit(
                json!({"type": "response.output_item.done", "response_id": r.id, "output_index": 0, "item": item}),
            );
            // The client may have deleted the item meanwhile (and out-of-band items were never
            // in the conversation); then there is nothing to finish.
            if let Some(stored) = self.items.get_mut(&r.item_id) {
                stored.json = item.clone();
                stored.audio_ms = Some(sent_ms);
                self.emit(json!({"type": "conversation.item.done", "item": item}));
            }
            output.push(item);
        }
        let mut out_text = transcript.len();
        if completed {
            let first_index = usize::from(r.has_message);
            for (i, call) in r.calls.into_iter().enumerate() {
                out_text += call.arguments.len();
                output.push(self.emit_call(&r.id, first_index + i, call, r.out_of_band));
            }
        }
        let details = match reason {
            EndReason::Completed => Value::Null,
            EndReason::TurnDetected => json!({"type": "cancelled", "reason": "turn_detected"}),
            EndReason::ClientCancelled => json!({"type": "cancelled", "reason": "client_cancelled"}),
        };
        let usage = self.usage(sent_ms, out_text);
        let response = self.response_json(
            &r.id,
            status,
            details,
            Value::Array(output),
            usage,
            r.out_of_band,
            &r.metadata,
        );
        self.emit(json!({"type": "response.done", "response": response}));
        self.agent_audio_ms += sent_ms;
        self.log(SimEventKind::ResponseDone { response_id: r.id, status: status.to_owned() });
    }

    /// Emits one function call of response `response_id` at `output_index` (item added,
    /// arguments in two deltas, arguments done, item done), registers its `call_id`, and returns
    /// the completed item for `response.done`.
    fn emit_call(
        &mut self,
        response_id: &str,
        output_index: usize,
        call: PlannedCall,
        out_of_band: bool,
    ) -> Value {
        let item = |status: &str, arguments: &str| {
            json!({
                "id": call.item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": status,
                "call_id": call.call_id,
                "name": call.name,
                "arguments": arguments,
            })
        };
        let added = item("in_progress", "");
        let done = item("completed", &call.arguments);
        self.emit(json!({
            "type": "response.output_item.added",
            "response_id": response_id,
            "output_index": output_index,
            "item": added,
        }));
        if !out_of_band {
            let previous = self.last_item_id.clone();
            self.add_item(added, None, previous);
        }
        // The arguments stream in two pieces, split on a char boundary.
        let args = &call.arguments;
        let mut mid = args.len() / 2;
        while !args.is_char_boundary(mid) {
            mid += 1;
        }
        for piece in [&args[..mid], &args[mid..]] {
            if piece.is_empty() {
                continue;
            }
            self.emit(json!({
                "type": "response.function_call_arguments.delta",
                "response_id": response_id,
                "item_id": call.item_id,
                "output_index": output_index,
                "call_id": call.call_id,
                "delta": piece,
            }));
        }
        self.emit(json!({
            "type": "response.function_call_arguments.done",
            "response_id": response_id,
            "item_id": call.item_id,
            "output_index": output_index,
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        }));
        self.emit(json!({
            "type": "response.output_item.done",
            "response_id": response_id,
            "output_index": output_index,
            "item": done,
        }));
        if let Some(stored) = self.items.get_mut(&call.item_id) {
            stored.json = done.clone();
            self.emit(json!({"type": "conversation.item.done", "item": done}));
        }
        self.calls.insert(call.call_id.clone(), Some(call.then));
        self.log(SimEventKind::ToolCallSent(SimToolCall {
            response_id: response_id.to_owned(),
            item_id: call.item_id,
            call_id: call.call_id,
            name: call.name,
            arguments: call.arguments,
        }));
        done
    }

    /// Token counts invented from durations: ~10 tokens/s of input audio, ~20 tokens/s of
    /// output audio, ~4 bytes of output text (transcript, function arguments) per text token.
    fn usage(&mut self, out_audio_ms: u64, out_text_bytes: usize) -> Value {
        let instructions = self.session["instructions"].as_str().map_or(0, str::len) as u64;
        let in_text = 8 + instructions / 4;
        let in_audio = (self.user_audio_ms / 100.0) as u64 + self.agent_audio_ms / 50;
        let input = in_text + in_audio;
        let cached = (self.last_input_tokens.min(input) / 64) * 64;
        self.last_input_tokens = input;
        let out_text = (out_text_bytes as u64).div_ceil(4);
        let out_audio = out_audio_ms / 50;
        let output = out_text + out_audio;
        json!({
            "total_tokens": input + output,
            "input_tokens": input,
            "output_tokens": output,
            "input_token_details": {
                "text_tokens": in_text,
                "audio_tokens": in_audio,
                "image_tokens": 0,
                "cached_tokens": cached,
                "cached_tokens_details": {"text_tokens": cached.min(in_text), "audio_tokens": cached.saturating_sub(in_text), "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        })
    }

    /// The response object; an out-of-band one belongs to no conversation.
    #[allow(clippy::too_many_arguments)]
    fn response_json(
        &self,
        id: &str,
        status: &str,
        details: Value,
        output: Value,
        usage: Value,
        out_of_band: bool,
        metadata: &Value,
    ) -> Value {
        let conversation_id = if out_of_band { Value::Null } else { json!(self.conversation_id) };
        json!({
            "object": "realtime.response",
            "id": id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": conversation_id,
            "output_modalities": ["audio"],
            "max_output_tokens": self.session["max_output_tokens"].clone(),
            "audio": {"output": {
                "format": self.session["audio"]["output"]["format"].clone(),
                "voice": self.session["audio"]["output"]["voice"].clone(),
            }},
            "usage": usage,
            "metadata": metadata,
        })
    }

    // ----- plumbing -----

    /// Queues a server event, stamping a fresh `event_id`.
    fn emit(&mut self, mut event: Value) {
        event["event_id"] = json!(self.ids.base62("event_", 20));
        self.out.push_back(Output::Event(event));
    }

    fn log(&mut self, kind: SimEventKind) {
        self.out.push_back(Output::Log(kind));
    }

    fn send_error(&mut self, err: ClientError, client_event_id: Option<String>) {
        tracing::debug!(code = err.code, message = %err.message, "sim: error event");
        self.emit(json!({
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": err.code,
                "message": err.message,
                "param": err.param,
                "event_id": client_event_id,
            },
        }));
        self.log(SimEventKind::ErrorSent { code: err.code.to_owned() });
    }

    fn close(&mut self, code: u16, reason: &str) {
        self.response = None;
        self.asides.clear();
        self.timers.clear();
        self.out.push_back(Output::Close { code, reason: reason.to_owned() });
        self.closed = true;
    }
}

/// Bytes that standard base64 text of this length decodes to (padded or not), without
/// decoding (invalid text gives a meaningless but harmless count).
fn base64_decoded_len(b64: &str) -> usize {
    let b = b64.as_bytes();
    let pad = b.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    (b.len() - pad) * 3 / 4
}

/// When the delta after `sent_ms` of audio is due: `speed` × real time from `started`.
/// A non-positive or non-finite speed means "as fast as possible".
fn pace(started: Instant, sent_ms: u64, speed: f32) -> Instant {
    if speed.is_finite() && speed > 0.0 {
        started + Duration::from_secs_f64(sent_ms as f64 / 1000.0 / f64::from(speed))
    } else {
        started
    }
}

/// A format that survived `normalise_format` but is not known: cannot happen, but is an error
/// event rather than a panic.
fn internal(what: &str) -> ClientError {
    client_error("invalid_value", format!("unsupported {what}"), None)
}

fn item_not_found(id: &str) -> ClientError {
    client_error("invalid_value", format!("Item with item_id '{id}' not found."), Some("item_id"))
}

/// A required string field of a `conversation.item.create` item (`item.<field>` in errors).
fn item_str(item: &Map<String, Value>, field: &str) -> Result<String, ClientError> {
    match item.get(field) {
        None | Some(Value::Null) => Err(missing(&format!("item.{field}"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid_type(&format!("item.{field}"))),
    }
}

fn required_str(event: &Value, field: &str) -> Result<String, ClientError> {
    event.get(field).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| missing(field))
}

fn required_u64(event: &Value, field: &str) -> Result<u64, ClientError> {
    match event.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(v) => v.as_u64().ok_or_else(|| {
            client_error(
                "invalid_type",
                format!("Invalid type for '{field}': expected an integer."),
                Some(field),
            )
        }),
    }
}

fn missing(field: &str) -> ClientError {
    ClientError {
        code: "missing_required_parameter",
        message: format!("Missing required parameter: '{field}'."),
        param: Some(field.to_owned()),
    }
}

// ----- the session object -----

/// GA top-level session fields a client may send (API reference §1.2).
const SESSION_FIELDS: &[&str] = &[
    "type",
    "model",
    "output_modalities",
    "instructions",
    "audio",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "truncation",
    "tracing",
    "include",
    "prompt",
    "reasoning",
];

fn default_turn_detection(kind: &str) -> Option<Value> {
    match kind {
        "server_vad" => Some(json!({
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": true,
            "interrupt_response": true,
        })),
        "semantic_vad" => Some(json!({
            "type": "semantic_vad",
            "eagerness": "auto",
            "create_response": true,
            "interrupt_response": true,
        })),
        _ => None,
    }
}

/// The session the real server reports in `session.created` for a GA connection.
fn default_session(ids: &mut IdGen, model: Option<&str>, cfg: &SimConfig) -> Value {
    let mut td = default_turn_detection("server_vad").unwrap_or(Value::Null);
    // Report the simulator's VAD timing so the echo is truthful.
    td["prefix_padding_ms"] = json!(cfg.vad.prefix_padding_ms);
    td["silence_duration_ms"] = json!(cfg.vad.silence_ms);
    json!({
        "type": "realtime",
        "object": "realtime.session",
        "id": ids.base62("sess_", 20),
        "model": model.unwrap_or("gpt-realtime"),
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": null,
                "noise_reduction": null,
                "turn_detection": td,
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "marin",
                "speed": 1.0,
            },
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    })
}

/// Applies a `session.update` patch to `session`, validating as the real server would.
/// Leaves `session` half-updated on error; the caller works on a copy.
fn merge_session(session: &mut Value, patch: &Map<String, Value>) -> Result<(), ClientError> {
    for (key, value) in patch {
        if !SESSION_FIELDS.contains(&key.as_str()) {
            return Err(unknown_param(&format!("session.{key}")));
        }
        match key.as_str() {
            "type" => {}
            "audio" => merge_audio(session, value)?,
            "output_modalities" => {
                let ok =
                    value.as_array().is_some_and(|a| a.len() == 1 && (a[0] == "audio" || a[0] == "text"));
                if !ok {
                    return Err(client_error(
                        "invalid_value",
                        "output_modalities must be [\"audio\"] or [\"text\"].",
                        Some("session.output_modalities"),
                    ));
                }
                session[key] = value.clone();
            }
            _ => session[key] = value.clone(),
        }
    }
    Ok(())
}

fn merge_audio(session: &mut Value, audio: &Value) -> Result<(), ClientError> {
    let Some(audio) = audio.as_object() else { return Err(invalid_type("session.audio")) };
    for (dir, value) in audio {
        let fields: &[&str] = match dir.as_str() {
            "input" => &["format", "transcription", "noise_reduction", "turn_detection"],
            "output" => &["format", "voice", "speed"],
            other => return Err(unknown_param(&format!("session.audio.{other}"))),
        };
        let Some(value) = value.as_object() else {
            return Err(invalid_type(&format!("session.audio.{dir}")));
        };
        for (field, v) in value {
            let path = format!("session.audio.{dir}.{field}");
            if !fields.contains(&field.as_str()) {
                return Err(unknown_param(&path));
            }
            let target = &mut session["audio"][dir.as_str()][field.as_str()];
            *target = match field.as_str() {
                "format" => normalise_format(v, &path)?,
                "turn_detection" => merge_turn_detection(target, v, &path)?,
                "transcription" | "noise_reduction" if !(v.is_object() || v.is_null()) => {
                    return Err(invalid_type(&path));
                }
                _ => v.clone(),
            };
        }
    }
    Ok(())
}

/// Checks an audio format object and fills the implied rate for `audio/pcm`.
fn normalise_format(v: &Value, path: &str) -> Result<Value, ClientError> {
    let kind = v.get("type").and_then(Value::as_str);
    match kind {
        Some("audio/pcmu" | "audio/pcma") => Ok(json!({"type": kind})),
        Some("audio/pcm") => match v.get("rate") {
            None | Some(Value::Null) => Ok(json!({"type": "audio/pcm", "rate": 24000})),
            Some(r) if r.as_u64() == Some(24000) => Ok(json!({"type": "audio/pcm", "rate": 24000})),
            Some(r) => Err(client_error(
                "invalid_value",
                format!("Invalid value: {r}. Supported values are: 24000."),
                Some(&format!("{path}.rate")),
            )),
        },
        Some(other) => Err(client_error(
            "invalid_value",
            format!(
                "Invalid value: '{other}'. Supported values are: 'audio/pcm', 'audio/pcmu', and 'audio/pcma'."
            ),
            Some(&format!("{path}.type")),
        )),
        None => Err(missing(&format!("{path}.type"))),
    }
}

/// The `AudioFormat` a (normalised) format object stands for.
fn format_of(v: &Value) -> Option<AudioFormat> {
    match v.get("type").and_then(Value::as_str)? {
        "audio/pcmu" => Some(AudioFormat::PCMU_8K),
        "audio/pcma" => Some(AudioFormat::PCMA_8K),
        "audio/pcm" => Some(AudioFormat::PCM16_24K),
        _ => None,
    }
}

/// `null` turns VAD off; an object is merged onto the current settings of the same type,
/// or onto that type's defaults.
fn merge_turn_detection(current: &Value, v: &Value, path: &str) -> Result<Value, ClientError> {
    let Some(patch) = v.as_object() else {
        return if v.is_null() { Ok(Value::Null) } else { Err(invalid_type(path)) };
    };
    let current_kind = current.get("type").and_then(Value::as_str);
    let kind = match patch.get("type").and_then(Value::as_str).or(current_kind) {
        Some(k) => k.to_owned(),
        None => return Err(missing(&format!("{path}.type"))),
    };
    let mut merged = if current_kind == Some(kind.as_str()) {
        current.clone()
    } else {
        default_turn_detection(&kind).ok_or_else(|| {
            client_error(
                "invalid_value",
                format!("Invalid value: '{kind}'. Supported values are: 'server_vad' and 'semantic_vad'."),
                Some(&format!("{path}.type")),
            )
        })?
    };
    let allowed: &[&str] = if kind == "server_vad" {
        &[
            "type",
            "threshold",
            "prefix_padding_ms",
            "silence_duration_ms",
            "idle_timeout_ms",
            "create_response",
            "interrupt_response",
        ]
    } else {
        &["type", "eagerness", "create_response", "interrupt_response"]
    };
    for (k, val) in patch {
        if !allowed.contains(&k.as_str()) {
            return Err(unknown_param(&format!("{path}.{k}")));
        }
        merged[k.as_str()] = val.clone();
    }
    Ok(merged)
}

fn unknown_param(path: &str) -> ClientError {
    client_error("unknown_parameter", format!("Unknown parameter: '{path}'."), Some(path))
}

fn invalid_type(path: &str) -> ClientError {
    client_error("invalid_type", format!("Invalid type for '{path}'."), Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fixtures;
    use crate::sim::realtime::SimVad;

    fn cfg(fault: Option<SimFault>) -> Arc<SimConfig> {
        Arc::new(SimConfig {
            replies: fixtures::agent_replies().unwrap(),
            caller_transcripts: vec!["first".into(), "second".into()],
            vad: SimVad::default(),
            speed: 0.0,
            capture_path: None,
            fault,
            echo: false,
            echo_vad: false,
            tool_script: Vec::new(),
            filler: None,
        })
    }

    fn drain(s: &mut Session) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn events(out: &[Output]) -> Vec<Value> {
        out.iter().filter_map(|o| if let Output::Event(e) = o { Some(e.clone()) } else { None }).collect()
    }

    /// Writes `evs` to `target/server-events/{file}` (one JSON per line, for the official SDK's
    /// check in the test command) and returns the event types seen.
    fn dump_events(evs: &[Value], file: &str) -> std::collections::BTreeSet<String> {
        let mut kinds = std::collections::BTreeSet::new();
        let mut jsonl = String::new();
        for ev in evs {
            kinds.insert(ev["type"].as_str().unwrap().to_owned());
            jsonl.push_str(&ev.to_string());
            jsonl.push('\n');
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/server-events");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), jsonl).unwrap();
        kinds
    }

    fn types(out: &[Output]) -> Vec<String> {
        events(out).iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
    }

    fn update(s: &mut Session, session: Value) -> Vec<Output> {
        s.handle_client_text(
            &json!({"type": "session.update", "session": session}).to_string(),
            Instant::now(),
        );
        drain(s)
    }

    fn pcmu_session(s: &mut Session, td: Value) {
        let out = update(
            s,
            json!({"type": "realtime", "audio": {
                "input": {"format": {"type": "audio/pcmu"}, "turn_detection": td,
                          "transcription": {"model": "gpt-4o-mini-transcribe"}},
                "output": {"format": {"type": "audio/pcmu"}}}}),
        );
        assert_eq!(types(&out), ["session.updated"], "{out:?}");
    }

    fn append(s: &mut Session, ulaw: &[u8], now: Instant) -> Vec<Output> {
        let ev = json!({"type": "input_audio_buffer.append", "audio": BASE64.encode(ulaw)});
        s.handle_client_text(&ev.to_string(), now);
        drain(s)
    }

    #[test]
    fn echo_mode_returns_appended_audio_as_deltas() {
        let mut cfg = (*cfg(None)).clone();
        cfg.echo = true;
        let mut s = Session::new(Arc::new(cfg), None);
        drain(&mut s);
        let audio = BASE64.encode([0x55u8; 160]);
        // Exactly the bytes the bridge's encoder writes.
        let text = format!(r#"{{"type":"input_audio_buffer.append","audio":"{audio}"}}"#);
        s.handle_client_text(&text, Instant::now());
        s.handle_client_text(&text, Instant::now());
        let out = drain(&mut s);
        let mut deltas = Vec::new();
        let mut created = 0;
        for o in &out {
            let v: Value = match o {
                Output::Text(t) => serde_json::from_str(t).unwrap(),
                Output::Event(v) => v.clone(),
                _ => continue,
            };
            match v["type"].as_str() {
                Some("response.created") => created += 1,
                Some("response.output_audio.delta") => deltas.push(v["delta"].as_str().unwrap().to_owned()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(created, 1);
        assert_eq!(deltas, vec![audio.clone(), audio]);
    }

    /// Appends `ulaw` in 20 ms frames as the bridge's encoder writes them (echo's fast path);
    /// returns every server event, fast-path text parsed.
    fn echo_frames(s: &mut Session, ulaw: &[u8]) -> Vec<Value> {
        for frame in ulaw.chunks(160) {
            let text =
                format!(r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#, BASE64.encode(frame));
            s.handle_client_text(&text, Instant::now());
        }
        drain(s)
            .into_iter()
            .filter_map(|o| match o {
                Output::Text(t) => Some(serde_json::from_str(&t).unwrap()),
                Output::Event(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    fn of_type<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
        evs.iter().filter(|e| e["type"] == kind).collect()
    }

    #[test]
    fn echo_vad_reports_speech_and_answers_truncate_and_cancel() {
        let echo_cfg = |echo_vad| Arc::new(SimConfig { echo: true, echo_vad, ..(*cfg(None)).clone() });
        let loud: Vec<u8> = (0..160 * 10).map(|i| if i % 2 == 0 { 0x90 } else { 0x10 }).collect();
        let silence = [0xFFu8; 160 * 30];

        // Plain echo: no VAD, whatever the audio.
        let mut s = Session::new(echo_cfg(false), None);
        drain(&mut s);
        pcmu_session(&mut s, json!({"type": "server_vad"}));
        let evs = echo_frames(&mut s, &loud);
        assert!(of_type(&evs, "input_audio_buffer.speech_started").is_empty(), "{evs:?}");

        let mut s = Session::new(echo_cfg(true), None);
        drain(&mut s);
        pcmu_session(&mut s, json!({"type": "server_vad"}));
        // 200 ms of silence, then speech: started after 60 ms voiced, at 200 - 300 → 0 ms.
        let mut evs = echo_frames(&mut s, &silence[..160 * 10]);
        assert!(of_type(&evs, "input_audio_buffer.speech_started").is_empty());
        evs.extend(echo_frames(&mut s, &loud));
        let started = of_type(&evs, "input_audio_buffer.speech_started");
        assert_eq!(started.len(), 1, "{evs:?}");
        assert_eq!(started[0]["audio_start_ms"], 0);
        let speech_item = started[0]["item_id"].as_str().unwrap().to_owned();
        assert!(speech_item.starts_with("item_"));
        // 600 ms of silence: speech_stopped, but echo mode never commits or answers.
        evs.extend(echo_frames(&mut s, &silence));
        let stopped = of_type(&evs, "input_audio_buffer.speech_stopped");
        assert_eq!(stopped.len(), 1, "{evs:?}");
        assert_eq!(stopped[0]["item_id"], speech_item.as_str());
        for kind in ["input_audio_buffer.committed", "conversation.item.added", "response.done"] {
            assert!(of_type(&evs, kind).is_empty(), "{kind} in echo mode: {evs:?}");
        }
        assert_eq!(of_type(&evs, "response.created").len(), 1);
        let deltas = of_type(&evs, "response.output_audio.delta");
        assert_eq!(deltas.len(), 50, "every append is echoed");
        let response_id = deltas[0]["response_id"].as_str().unwrap().to_owned();
        let item_id = deltas[0]["item_id"].as_str().unwrap().to_owned();

        // 50 frames = 1000 ms echoed: truncating beyond fails, at or below succeeds.
        let t0 = Instant::now();
        let trunc = |ms: u64| {
            json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": ms})
                .to_string()
        };
        s.handle_client_text(&trunc(1001), t0);
        assert_eq!(events(&drain(&mut s))[0]["error"]["param"], "audio_end_ms");
        s.handle_client_text(&trunc(1000), t0);
        let truncated = &events(&drain(&mut s))[0];
        assert_eq!(truncated["type"], "conversation.item.truncated");
        assert_eq!(truncated["audio_end_ms"], 1000);

        // Cancelling another response fails; cancelling the echo response ends it.
        s.handle_client_text(r#"{"type":"response.cancel","response_id":"resp_other"}"#, t0);
        assert_eq!(events(&drain(&mut s))[0]["error"]["code"], "response_cancel_not_active");
        let cancel = json!({"type": "response.cancel", "response_id": response_id}).to_string();
        s.handle_client_text(&cancel, t0);
        let evs = events(&drain(&mut s));
        let done = of_type(&evs, "response.done");
        assert_eq!(done.len(), 1, "{evs:?}");
        assert_eq!(done[0]["response"]["id"], response_id.as_str());
        assert_eq!(done[0]["response"]["status"], "cancelled");
        assert_eq!(done[0]["response"]["status_details"]["reason"], "client_cancelled");
        s.handle_client_text(&cancel, t0);
        assert_eq!(events(&drain(&mut s))[0]["error"]["code"], "response_cancel_not_active");
        // A late truncate of the ended item is still answered.
        s.handle_client_text(&trunc(500), t0);
        assert_eq!(events(&drain(&mut s))[0]["type"], "conversation.item.truncated");

        // The next append starts a fresh echo response.
        let evs = echo_frames(&mut s, &silence[..160]);
        let created = of_type(&evs, "response.created");
        assert_eq!(created.len(), 1, "{evs:?}");
        let fresh = created[0]["response"]["id"].as_str().unwrap();
        assert_ne!(fresh, response_id);
        let delta = of_type(&evs, "response.output_audio.delta")[0];
        assert_eq!(delta["response_id"], fresh);
        assert_ne!(delta["item_id"], item_id.as_str());
        // Speech after silence starts again.
        let evs = echo_frames(&mut s, &loud);
        assert_eq!(of_type(&evs, "input_audio_buffer.speech_started").len(), 1, "{evs:?}");

        // turn_detection null: no speech events even with echo_vad.
        let mut s = Session::new(echo_cfg(true), None);
        drain(&mut s);
        pcmu_session(&mut s, Value::Null);
        let evs = echo_frames(&mut s, &loud);
        assert!(of_type(&evs, "input_audio_buffer.speech_started").is_empty(), "{evs:?}");
    }

    #[test]
    fn created_event_has_a_full_default_session_and_event_ids() {
        let mut s = Session::new(cfg(None), Some("gpt-realtime".into()));
        let out = drain(&mut s);
        assert_eq!(out[0], Output::Log(SimEventKind::Connected { model: Some("gpt-realtime".into()) }));
        let ev = &events(&out)[0];
        assert_eq!(ev["type"], "session.created");
        assert!(ev["event_id"].as_str().unwrap().starts_with("event_"));
        assert_eq!(ev["session"]["audio"]["input"]["turn_detection"]["type"], "server_vad");
        assert_eq!(ev["session"]["max_output_tokens"], "inf");
    }

    #[test]
    fn session_update_validates_and_merges() {
        let mut s = Session::new(cfg(None), None);
        drain(&mut s);
        let out = update(&mut s, json!({"audio": {}}));
        assert_eq!(events(&out)[0]["error"]["code"], "missing_required_parameter");
        let out = update(&mut s, json!({"type": "realtime", "input_audio_format": "g711_ulaw"}));
        assert_eq!(events(&out)[0]["error"]["code"], "unknown_parameter");
        let out = update(
            &mut s,
            json!({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}),
        );
        assert_eq!(events(&out)[0]["error"]["param"], "session.audio.input.format.rate");
        let out = update(
            &mut s,
            json!({"type": "realtime", "instructions": "be brief",
                   "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 700}},
                             "output": {"format": {"type": "audio/pcma"}, "voice": "cedar"}}}),
        );
        let session = &events(&out)[0]["session"];
        assert_eq!(session["instructions"], "be brief");
        assert_eq!(session["audio"]["input"]["turn_detection"]["silence_duration_ms"], 700);
        assert_eq!(session["audio"]["input"]["turn_detection"]["interrupt_response"], true);
        assert_eq!(session["audio"]["output"]["voice"], "cedar");
        assert_eq!(session["audio"]["input"]["format"]["rate"], 24000);
        assert_eq!(s.output_format, AudioFormat::PCMA_8K);
    }

    #[test]
    fn vad_turn_produces_commit_transcript_and_a_completed_reply() {
        let mut s = Session::new(cfg(None), None);
        drain(&mut s);
        pcmu_session(&mut s, json!({"type": "server_vad"}));
        let t0 = Instant::now();
        let question = fixtures::clip("caller_question").unwrap();
        let mut out = append(&mut s, question.ulaw, t0);
        out.extend(append(&mut s, &[0xFF; 8000], t0));
        let kinds = types(&out);
        let wanted = [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "response.created",
        ];
        let mut at = 0;
        for w in wanted {
            at +=
                kinds[at..].iter().position(|k| k == w).unwrap_or_else(|| panic!("{w} missing in {kinds:?}"));
        }
        // Transcript after the delay, and all deltas at once with unlimited speed.
        s.handle_timeout(t0 + Duration::from_millis(200));
        let out = drain(&mut s);
        let evs = events(&out);
        let transcript = evs
            .iter()
            .find(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
            .unwrap();
        assert_eq!(transcript["transcript"], "first");
        let audio: usize = evs
            .iter()
            .filter(|e| e["type"] == "response.output_audio.delta")
            .map(|e| BASE64.decode(e["delta"].as_str().unwrap()).unwrap().len())
            .sum();
        assert_eq!(audio, fixtures::clip("agent_reply_1").unwrap().ulaw.len());
        let done = evs.last().unwrap();
        assert_eq!(done["type"], "response.done");
        assert_eq!(done["response"]["status"], "completed");
        assert!(done["response"]["usage"]["output_token_details"]["audio_tokens"].as_u64().unwrap() > 0);
        let text: String = evs
            .iter()
            .filter(|e| e["type"] == "response.output_audio_transcript.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, fixtures::clip("agent_reply_1").unwrap().text);
    }

    #[test]
    fn barge_in_cancels_and_truncate_is_checked_against_audio_sent() {
        let mut s = Session::new(cfg(None), None);
        drain(&mut s);
        pcmu_session(&mut s, json!({"type": "server_vad"}));
        // Real-time pacing so the response is still streaming when the caller speaks.
        let cfg = Arc::new(SimConfig { speed: 1.0, ..(*s.cfg).clone() });
        s.cfg = cfg;
        let t0 = Instant::now();
        s.handle_client_text(r#"{"type":"response.create"}"#, t0);
        s.handle_timeout(t0);
        let out = drain(&mut s);
        let item_id = events(&out)
            .iter()
            .find(|e| e["type"] == "response.output_audio.delta")
            .map(|e| e["item_id"].as_str().unwrap().to_owned())
            .unwrap();
        s.handle_client_text(r#"{"type":"response.create"}"#, t0);
        assert_eq!(events(&drain(&mut s))[0]["error"]["code"], "conversation_already_has_active_response");
        // 40 ms sent so far: truncating at 100 ms is rejected, at 40 ms accepted.
        let trunc = |ms: u64| {
            json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": ms}).to_string()
        };
        s.handle_client_text(&trunc(100), t0);
        let err = &events(&drain(&mut s))[0];
        assert_eq!(err["error"]["code"], "invalid_value");
        assert_eq!(err["error"]["param"], "audio_end_ms");
        s.handle_client_text(&trunc(40), t0);
        assert_eq!(events(&drain(&mut s))[0]["type"], "conversation.item.truncated");
        // Caller speech interrupts the response.
        let loud: Vec<u8> = (0..1600).map(|i| if i % 2 == 0 { 0x90 } else { 0x10 }).collect();
        let out = append(&mut s, &loud, t0);
        let evs = events(&out);
        assert_eq!(evs[0]["type"], "input_audio_buffer.speech_started");
        let done = evs.iter().find(|e| e["type"] == "response.done").unwrap();
        assert_eq!(done["response"]["status"], "cancelled");
        assert_eq!(done["response"]["status_details"]["reason"], "turn_detected");
        assert!(s.poll_timeout().is_none());
        s.handle_client_text(r#"{"type":"response.cancel","event_id":"evt_1"}"#, t0);
        let err = &events(&drain(&mut s))[0];
        assert_eq!(err["error"]["code"], "response_cancel_not_active");
        assert_eq!(err["error"]["event_id"], "evt_1");
    }

    #[test]
    fn manual_turns_and_bad_input_never_crash() {
        let mut s = Session::new(cfg(None), None);
        drain(&mut s);
        pcmu_session(&mut s, Value::Null);
        let t0 = Instant::now();
        let loud: Vec<u8> = (0..8000).map(|i| if i % 2 == 0 { 0x90 } else { 0x10 }).collect();
        let out = append(&mut s, &loud, t0);
        assert!(types(&out).is_empty(), "no VAD events with turn_detection null: {out:?}");
        s.handle_client_text(r#"{"type":"input_audio_buffer.commit"}"#, t0);
        assert_eq!(types(&drain(&mut s))[..2], ["input_audio_buffer.committed", "conversation.item.added"]);
        s.handle_client_text(r#"{"type":"input_audio_buffer.commit"}"#, t0);
        assert_eq!(events(&drain(&mut s))[0]["error"]["code"], "input_audio_buffer_commit_empty");
        for bad in
            ["not json", "{}", r#"{"type":"bogus"}"#, r#"{"type":"input_audio_buffer.append","audio":"!!"}"#]
        {
            s.handle_client_text(bad, t0);
            let out = drain(&mut s);
            assert_eq!(types(&out), ["error"], "{bad}");
        }
        s.handle_client_text(r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}}"#, t0);
        assert_eq!(types(&drain(&mut s)), ["conversation.item.added", "conversation.item.done"]);
        assert!(!s.is_closed());
    }

    #[test]
    fn faults_close_the_session() {
        let mut s = Session::new(cfg(Some(SimFault::FatalErrorOnSessionUpdate)), None);
        drain(&mut s);
        let out = update(&mut s, json!({"type": "realtime"}));
        assert_eq!(events(&out)[0]["error"]["code"], "invalid_api_key");
        assert!(matches!(out.last(), Some(Output::Close { code: 1008, .. })));

        let mut s = Session::new(cfg(Some(SimFault::CloseOnFirstDelta)), None);
        drain(&mut s);
        let t0 = Instant::now();
        s.handle_client_text(r#"{"type":"response.create"}"#, t0);
        s.handle_timeout(t0);
        let out = drain(&mut s);
        assert_eq!(types(&out).last().unwrap(), "response.output_audio.delta");
        assert!(matches!(out.last(), Some(Output::Close { code: 1011, .. })));
        assert!(s.is_closed());
    }

    /// A full turn's server events go to `target/server-events/sim.jsonl`, which the test
    /// command validates against the official `openai` Python SDK models
    /// (`scripts/check-client-events.py --server`).
    #[test]
    fn writes_a_full_turn_of_server_events_for_the_python_check() {
        let mut s = Session::new(cfg(None), None);
        let mut out = drain(&mut s);
        out.extend(update(
            &mut s,
            json!({"type": "realtime", "audio": {
                "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"},
                          "transcription": {"model": "whisper-1"}, "noise_reduction": null},
                "output": {"format": {"type": "audio/pcmu"}}}}),
        ));
        let t0 = Instant::now();
        let mut audio = fixtures::clip("caller_question").unwrap().ulaw.to_vec();
        audio.extend([0xFF; 8000]);
        out.extend(append(&mut s, &audio, t0));
        s.handle_timeout(t0 + Duration::from_secs(1));
        s.handle_client_text(r#"{"type":"response.cancel"}"#, t0);
        s.handle_client_text(r#"{"type":"input_audio_buffer.clear"}"#, t0);
        out.extend(drain(&mut s));
        let kinds = dump_events(&events(&out), "sim.jsonl");
        for k in [
            "session.created",
            "session.updated",
            "input_audio_buffer.speech_started",
            "response.output_audio.delta",
            "response.done",
            "error",
            "conversation.item.input_audio_transcription.completed",
        ] {
            assert!(kinds.contains(k), "{k} not exercised: {kinds:?}");
        }
    }

    // ----- scripted tool calls, out-of-band responses, client items -----

    /// A session whose tool script is `script`, pcmu both ways, server VAD, replies at once.
    fn tool_session(script: Vec<ScriptedToolCall>, filler: Option<fixtures::Clip>) -> (Session, Vec<Output>) {
        let cfg = Arc::new(SimConfig { tool_script: script, filler, ..(*cfg(None)).clone() });
        let mut s = Session::new(cfg, None);
        let mut out = drain(&mut s);
        out.extend(update(
            &mut s,
            json!({"type": "realtime", "audio": {
                "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"},
                          "transcription": {"model": "whisper-1"}, "noise_reduction": null},
                "output": {"format": {"type": "audio/pcmu"}}}}),
        ));
        (s, out)
    }

    /// The caller asks a question (VAD turn) and everything due is sent.
    fn vad_turn(s: &mut Session, t0: Instant) -> Vec<Output> {
        let mut audio = fixtures::clip("caller_question").unwrap().ulaw.to_vec();
        audio.extend([0xFF; 8000]);
        let mut out = append(s, &audio, t0);
        s.handle_timeout(t0 + Duration::from_secs(1));
        out.extend(drain(s));
        out
    }

    /// Sends a client event (as the bridge encodes it) and runs every due delta.
    fn client(s: &mut Session, event: &crate::core::realtime::ClientEvent, now: Instant) -> Vec<Output> {
        let mut text = String::new();
        crate::core::realtime::encode(event, &mut text);
        s.handle_client_text(&text, now);
        s.handle_timeout(now);
        drain(s)
    }

    /// Decodes every event with the bridge's own decoder (none may fail) and returns the
    /// function calls it would act on: `(response_id, item_id, call_id, name, arguments)`.
    fn bridge_decodes(evs: &[Value]) -> Vec<[String; 5]> {
        use crate::core::realtime::{RealtimeDecoder, ServerEvent};
        let mut decoder = RealtimeDecoder::new(16 << 20);
        let mut calls = Vec::new();
        for ev in evs {
            let text = ev.to_string();
            match decoder.decode(&text) {
                Ok(ServerEvent::FunctionCallArgumentsDone {
                    response_id,
                    item_id,
                    call_id,
                    name,
                    arguments,
                }) => {
                    calls.push([response_id, item_id, call_id, name, arguments].map(|c| c.into_owned()));
                }
                Ok(_) => {}
                Err(e) => panic!("the bridge cannot decode {text}: {e}"),
            }
        }
        calls
    }

    /// The events from the `response.created` of `response_id` to its `response.done`, without
    /// the caller's transcript (which arrives whenever its delay is up).
    fn response_events(evs: &[Value], response_id: &str) -> Vec<Value> {
        let start = evs
            .iter()
            .position(|e| e["type"] == "response.created" && e["response"]["id"] == response_id)
            .unwrap();
        let end = evs
            .iter()
            .position(|e| e["type"] == "response.done" && e["response"]["id"] == response_id)
            .unwrap();
        evs[start..=end]
            .iter()
            .filter(|e| e["type"] != "conversation.item.input_audio_transcription.completed")
            .cloned()
            .collect()
    }

    fn audio_bytes(evs: &[Value]) -> usize {
        evs.iter()
            .filter(|e| e["type"] == "response.output_audio.delta")
            .map(|e| BASE64.decode(e["delta"].as_str().unwrap()).unwrap().len())
            .sum()
    }

    fn logs(out: &[Output]) -> Vec<SimEventKind> {
        out.iter().filter_map(|o| if let Output::Log(k) = o { Some(k.clone()) } else { None }).collect()
    }

    const ARGS: &str = r#"{"order_id":"A-17","note":"café ☕"}"#;

    #[test]
    fn scripted_tool_call_has_the_ga_shapes_and_the_bridge_decodes_it() {
        let goodbye = fixtures::agent_goodbye().unwrap();
        let script =
            vec![ScriptedToolCall::new(0, "lookup_order", ARGS).then(AfterTool::ReplyClip(goodbye.clone()))];
        let (mut s, _) = tool_session(script, None);
        let t0 = Instant::now();
        let out = vad_turn(&mut s, t0);
        let evs = events(&out);
        let created = of_type(&evs, "response.created");
        assert_eq!(created.len(), 1);
        let response_id = created[0]["response"]["id"].as_str().unwrap().to_owned();
        let turn = &response_events(&evs, &response_id)[..];
        let kinds: Vec<&str> = turn.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "rate_limits.updated",
                "response.output_item.added",
                "conversation.item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "conversation.item.done",
                "response.done",
            ]
        );
        // The bridge sees exactly one call, with the script's name and arguments.
        let calls = bridge_decodes(&evs);
        assert_eq!(calls.len(), 1, "{calls:?}");
        let [rid, item_id, call_id, name, arguments] = calls[0].clone();
        assert_eq!(
            (rid.as_str(), name.as_str(), arguments.as_str()),
            (response_id.as_str(), "lookup_order", ARGS)
        );
        assert!(call_id.starts_with("call_") && call_id.len() == 21, "{call_id}");
        assert!(item_id.starts_with("item_"));
        // Item added with empty arguments, in progress; the pieces add up; done repeats all.
        let added = &turn[2];
        assert_eq!(added["output_index"], 0);
        assert_eq!(
            added["item"],
            json!({"id": item_id, "object": "realtime.item", "type": "function_call", "status": "in_progress",
                   "call_id": call_id, "name": "lookup_order", "arguments": ""})
        );
        let pieces: String = turn[4..6].iter().map(|e| e["delta"].as_str().unwrap()).collect();
        assert_eq!(pieces, ARGS);
        for e in &turn[4..8] {
            assert_eq!(e["response_id"], response_id.as_str());
            assert_eq!(e["output_index"], 0);
        }
        for e in &turn[4..7] {
            assert_eq!(e["item_id"], item_id.as_str());
            assert_eq!(e["call_id"], call_id.as_str());
        }
        let done_item = &turn[7]["item"];
        assert_eq!(done_item["status"], "completed");
        assert_eq!(done_item["arguments"], ARGS);
        let done = &turn[9]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"], json!([done_item.clone()]));
        assert_eq!(audio_bytes(turn), 0, "a tool-only turn says nothing");
        let log = logs(&out);
        assert!(log.contains(&SimEventKind::ToolCallSent(SimToolCall {
            response_id: response_id.clone(),
            item_id: item_id.clone(),
            call_id: call_id.clone(),
            name: "lookup_order".into(),
            arguments: ARGS.into(),
        })));
        assert!(log.contains(&SimEventKind::ResponseStarted {
            response_id: response_id.clone(),
            item_id: item_id.clone(),
            clip: String::new(),
            out_of_band: false,
        }));

        // The bridge answers: output item, then response.create → the goodbye clip.
        use crate::core::realtime::ClientEvent;
        let output = ClientEvent::FunctionCallOutput {
            call_id: call_id.clone(),
            output: r#"{"eta":"Friday"}"#.into(),
        };
        let out = client(&mut s, &output, t0);
        assert_eq!(types(&out), ["conversation.item.added", "conversation.item.done"]);
        let item = &events(&out)[1]["item"];
        assert_eq!(item["type"], "function_call_output");
        assert_eq!(item["call_id"], call_id.as_str());
        let item_created =
            logs(&out).into_iter().find(|k| matches!(k, SimEventKind::ItemCreated { .. })).unwrap();
        assert_eq!(
            item_created,
            SimEventKind::ItemCreated {
                item_id: item["id"].as_str().unwrap().to_owned(),
                item: SimClientItem::FunctionCallOutput {
                    call_id: call_id.clone(),
                    output: r#"{"eta":"Friday"}"#.into()
                },
            }
        );
        let out = client(&mut s, &ClientEvent::ResponseCreate, t0);
        let evs = events(&out);
        bridge_decodes(&evs);
        assert_eq!(audio_bytes(&evs), goodbye.ulaw.len());
        let transcript = of_type(&evs, "response.output_audio_transcript.done");
        assert_eq!(transcript[0]["transcript"], goodbye.text.as_str());
        assert!(logs(&out).iter().any(
            |k| matches!(k, SimEventKind::ResponseStarted { clip, out_of_band: false, .. } if clip == "agent_goodbye")
        ));
        // Neither the tool turn nor the goodbye used up a reply: the next turn is reply 1.
        let out = client(&mut s, &ClientEvent::ResponseCreate, t0);
        assert!(
            logs(&out)
                .iter()
                .any(|k| matches!(k, SimEventKind::ResponseStarted { clip, .. } if clip == "agent_reply_1"))
        );
    }

    #[test]
    fn say_before_speaks_first_and_parallel_calls_follow_the_message() {
        let reply = fixtures::clip("agent_reply_3").unwrap();
        let script = vec![
            ScriptedToolCall::new(1, "update_lead", r#"{"status":"interested"}"#).say_before(reply.clone()),
            ScriptedToolCall::new(1, "send_dtmf", r#"{"digits":"12#"}"#),
        ];
        let (mut s, _) = tool_session(script, None);
        let t0 = Instant::now();
        use crate::core::realtime::ClientEvent;
        // Response 0 is a normal reply; response 1 speaks, then makes both calls.
        let out = client(&mut s, &ClientEvent::ResponseCreate, t0);
        assert!(bridge_decodes(&events(&out)).is_empty());
        let out = client(&mut s, &ClientEvent::ResponseCreate, t0);
        let evs = events(&out);
        let calls = bridge_decodes(&evs);
        assert_eq!(calls.iter().map(|c| c[3].as_str()).collect::<Vec<_>>(), ["update_lead", "send_dtmf"]);
        assert_eq!(audio_bytes(&evs), reply.ulaw.len());
        let done = of_type(&evs, "response.done")[0];
        let output = done["response"]["output"].as_array().unwrap();
        assert_eq!(output.len(), 3);
        assert_eq!(
            (output[0]["type"].as_str(), output[0]["status"].as_str()),
            (Some("message"), Some("completed"))
        );
        assert_eq!(output[0]["content"][0]["transcript"], reply.text.as_str());
        assert_eq!(output[1]["name"], "update_lead");
        assert_eq!(output[2]["name"], "send_dtmf");
        // Output indexes: message 0, calls 1 and 2; every call event after the message's done.
        let message_done = evs
            .iter()
            .position(|e| e["type"] == "response.output_item.done" && e["item"]["type"] == "message")
            .unwrap();
        let first_call =
            evs.iter().position(|e| e["type"] == "response.function_call_arguments.delta").unwrap();
        assert!(message_done < first_call);
        let indexes: Vec<u64> = of_type(&evs, "response.function_call_arguments.done")
            .iter()
            .map(|e| e["output_index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, [1, 2]);
        // Both calls await outputs; each is accepted once the bridge sends it.
        for call in &calls {
            let out = client(
                &mut s,
                &ClientEvent::FunctionCallOutput { call_id: call[2].clone(), output: "{}".into() },
                t0,
            );
            assert_eq!(types(&out), ["conversation.item.added", "conversation.item.done"]);
        }
    }

    #[test]
    fn a_tool_turn_cut_off_while_speaking_never_calls() {
        let reply = fixtures::clip("agent_reply_2").unwrap();
        let script = vec![ScriptedToolCall::new(0, "end_call", "{}").say_before(reply)];
        let (mut s, _) = tool_session(script, None);
        s.cfg = Arc::new(SimConfig { speed: 1.0, ..(*s.cfg).clone() });
        let t0 = Instant::now();
        s.handle_client_text(r#"{"type":"response.create"}"#, t0);
        s.handle_timeout(t0);
        drain(&mut s);
        let loud: Vec<u8> = (0..1600).map(|i| if i % 2 == 0 { 0x90 } else { 0x10 }).collect();
        let out = append(&mut s, &loud, t0);
        let evs = events(&out);
        let done = of_type(&evs, "response.done");
        assert_eq!(done[0]["response"]["status"], "cancelled");
        assert_eq!(done[0]["response"]["output"].as_array().unwrap().len(), 1, "the message only");
        assert!(bridge_decodes(&evs).is_empty());
        assert!(!logs(&out).iter().any(|k| matches!(k, SimEventKind::ToolCallSent(_))));
    }

    #[test]
    fn function_call_outputs_are_validated_like_the_real_api() {
        let (mut s, _) = tool_session(vec![ScriptedToolCall::new(0, "consult", r#"{"question":"q"}"#)], None);
        let t0 = Instant::now();
        let out = client(&mut s, &crate::core::realtime::ClientEvent::ResponseCreate, t0);
        let call_id = bridge_decodes(&events(&out))[0][2].clone();
        let create = |item: Value| {
            json!({"type": "conversation.item.create", "event_id": "evt_7", "item": item}).to_string()
        };
        let cases = [
            (
                json!({"type": "function_call_output", "call_id": "call_nope", "output": "{}"}),
                "invalid_value",
                "item.call_id",
            ),
            (
                json!({"type": "function_call_output", "call_id": call_id, "output": 3}),
                "invalid_type",
                "item.output",
            ),
            (
                json!({"type": "function_call_output", "call_id": call_id}),
                "missing_required_parameter",
                "item.output",
            ),
            (
                json!({"type": "function_call_output", "output": "{}"}),
                "missing_required_parameter",
                "item.call_id",
            ),
            (
                json!({"type": "function_call", "call_id": "call_x", "arguments": "{}"}),
                "missing_required_parameter",
                "item.name",
            ),
        ];
        for (item, code, param) in cases {
            s.handle_client_text(&create(item.clone()), t0);
            let out = drain(&mut s);
            let evs = events(&out);
            assert_eq!(evs.len(), 1, "{item}: {evs:?}");
            assert_eq!(evs[0]["type"], "error");
            assert_eq!(
                (
                    &evs[0]["error"]["type"],
                    &evs[0]["error"]["code"],
                    &evs[0]["error"]["param"],
                    &evs[0]["error"]["event_id"]
                ),
                (&json!("invalid_request_error"), &json!(code), &json!(param), &json!("evt_7")),
                "{item}"
            );
            assert!(!logs(&out).iter().any(|k| matches!(k, SimEventKind::ItemCreated { .. })), "{item}");
            bridge_decodes(&evs);
        }
        // A call the client inserted itself can be answered too.
        s.handle_client_text(
            &create(json!({"type": "function_call", "call_id": "call_mine", "name": "f", "arguments": "{}"})),
            t0,
        );
        s.handle_client_text(
            &create(json!({"type": "function_call_output", "call_id": "call_mine", "output": "ok"})),
            t0,
        );
        let out = drain(&mut s);
        assert_eq!(
            types(&out),
            [
                "conversation.item.added",
                "conversation.item.done",
                "conversation.item.added",
                "conversation.item.done"
            ]
        );
        let items: Vec<SimClientItem> = logs(&out)
            .into_iter()
            .filter_map(|k| if let SimEventKind::ItemCreated { item, .. } = k { Some(item) } else { None })
            .collect();
        assert_eq!(
            items,
            [
                SimClientItem::FunctionCall {
                    call_id: "call_mine".into(),
                    name: "f".into(),
                    arguments: "{}".into()
                },
                SimClientItem::FunctionCallOutput { call_id: "call_mine".into(), output: "ok".into() },
            ]
        );
    }

    #[test]
    fn caller_key_presses_are_logged_as_user_text() {
        let (mut s, _) = tool_session(Vec::new(), None);
        let text = "[caller pressed keys: 1 2 3 #]";
        let out = client(
            &mut s,
            &crate::core::realtime::ClientEvent::UserText { text: text.into() },
            Instant::now(),
        );
        let evs = events(&out);
        assert_eq!(types(&out), ["conversation.item.added", "conversation.item.done"]);
        assert_eq!(evs[0]["item"]["content"][0]["text"], text);
        let item_id = evs[0]["item"]["id"].as_str().unwrap().to_owned();
        assert!(logs(&out).contains(&SimEventKind::ItemCreated {
            item_id,
            item: SimClientItem::Message { role: "user".into(), text: text.into() },
        }));
    }

    #[test]
    fn out_of_band_filler_plays_beside_the_conversation() {
        use crate::core::realtime::ClientEvent;
        let filler = fixtures::agent_filler().unwrap();
        let goodbye = fixtures::agent_goodbye().unwrap();
        let script = vec![
            ScriptedToolCall::new(0, "consult", r#"{"question":"q"}"#)
                .then(AfterTool::ReplyClip(goodbye.clone())),
            ScriptedToolCall::new(2, "end_call", "{}"),
        ];
        let (mut s, _) = tool_session(script, Some(filler.clone()));
        let t0 = Instant::now();
        let out = client(&mut s, &ClientEvent::ResponseCreate, t0);
        let call_id = bridge_decodes(&events(&out))[0][2].clone();
        // The tool runs; the bridge asks for a filler, exactly as it encodes it.
        let oob = ClientEvent::ResponseCreateOutOfBand { instructions: "Say you are checking.".into() };
        let out = client(&mut s, &oob, t0);
        let evs = events(&out);
        bridge_decodes(&evs);
        let created = of_type(&evs, "response.created")[0];
        assert_eq!(created["response"]["conversation_id"], Value::Null);
        let oob_id = created["response"]["id"].as_str().unwrap().to_owned();
        assert!(of_type(&evs, "conversation.item.added").is_empty(), "not in the conversation: {evs:?}");
        assert!(of_type(&evs, "conversation.item.done").is_empty());
        assert_eq!(audio_bytes(&evs), filler.ulaw.len());
        let done = of_type(&evs, "response.done")[0];
        assert_eq!(
            (done["response"]["status"].as_str(), done["response"]["id"].as_str()),
            (Some("completed"), Some(oob_id.as_str()))
        );
        assert_eq!(done["response"]["conversation_id"], Value::Null);
        let started =
            logs(&out).into_iter().find(|k| matches!(k, SimEventKind::ResponseStarted { .. })).unwrap();
        assert!(
            matches!(started, SimEventKind::ResponseStarted { out_of_band: true, ref clip, .. } if clip == "agent_filler")
        );
        // Its item is not in the conversation: a truncate of it fails like an unknown item.
        let item_id = of_type(&evs, "response.output_audio.delta")[0]["item_id"].as_str().unwrap().to_owned();
        let out =
            client(&mut s, &ClientEvent::ItemTruncate { item_id, content_index: 0, audio_end_ms: 100 }, t0);
        assert_eq!(events(&out)[0]["error"]["param"], "item_id");
        // The pending call is untouched: its output still brings the goodbye, and the filler did
        // not count as a response (the goodbye is response 1, so response 2 calls end_call).
        client(&mut s, &ClientEvent::FunctionCallOutput { call_id, output: "{}".into() }, t0);
        let evs = events(&client(&mut s, &ClientEvent::ResponseCreate, t0));
        assert_eq!(audio_bytes(&evs), goodbye.ulaw.len());
        let evs = events(&client(&mut s, &ClientEvent::ResponseCreate, t0));
        assert_eq!(bridge_decodes(&evs)[0][3], "end_call");
    }

    #[test]
    fn out_of_band_responses_run_in_parallel_and_survive_barge_in() {
        use crate::core::realtime::ClientEvent;
        let (mut s, _) = tool_session(Vec::new(), None);
        s.cfg = Arc::new(SimConfig { speed: 1.0, ..(*s.cfg).clone() });
        let t0 = Instant::now();
        // In-band reply streaming, then a filler beside it: no conversation_already_has_active_response.
        let out = client(&mut s, &ClientEvent::ResponseCreate, t0);
        let main_id =
            of_type(&events(&out), "response.created")[0]["response"]["id"].as_str().unwrap().to_owned();
        let out =
            client(&mut s, &ClientEvent::ResponseCreateOutOfBand { instructions: "hold on".into() }, t0);
        let evs = events(&out);
        assert!(of_type(&evs, "error").is_empty(), "{evs:?}");
        let oob_id = of_type(&evs, "response.created")[0]["response"]["id"].as_str().unwrap().to_owned();
        // Without a configured filler: the first 600 ms of the first reply.
        assert!(logs(&out).iter().any(
            |k| matches!(k, SimEventKind::ResponseStarted { clip, out_of_band: true, .. } if clip == "agent_reply_1")
        ));
        // Caller speech cancels the in-band response only.
        let loud: Vec<u8> = (0..1600).map(|i| if i % 2 == 0 { 0x90 } else { 0x10 }).collect();
        let evs = events(&append(&mut s, &loud, t0));
        let done = of_type(&evs, "response.done");
        assert_eq!(done.len(), 1, "{evs:?}");
        assert_eq!(done[0]["response"]["id"], main_id.as_str());
        // The filler plays on to its end: 600 ms of μ-law.
        s.handle_timeout(t0 + Duration::from_secs(2));
        let evs = events(&drain(&mut s));
        let done = of_type(&evs, "response.done");
        assert_eq!(done.len(), 1, "{evs:?}");
        assert_eq!(
            (done[0]["response"]["id"].as_str(), done[0]["response"]["status"].as_str()),
            (Some(oob_id.as_str()), Some("completed"))
        );
        let filler_ms = done[0]["response"]["output"][0]["content"][0]["transcript"].as_str().unwrap();
        assert_eq!(filler_ms, "Thanks");
        assert!(s.poll_timeout().is_none());
        // A filler can be cancelled by its id; a plain cancel does not reach it.
        client(&mut s, &ClientEvent::ResponseCreateOutOfBand { instructions: "hold on".into() }, t0);
        let out = client(&mut s, &ClientEvent::ResponseCancel { response_id: None }, t0);
        assert_eq!(events(&out)[0]["error"]["code"], "response_cancel_not_active");
        let oob_id = s.asides[0].id.clone();
        let out = client(&mut s, &ClientEvent::ResponseCancel { response_id: Some(oob_id) }, t0);
        let done = &events(&out)[..];
        let done = of_type(done, "response.done");
        assert_eq!(done[0]["response"]["status_details"]["reason"], "client_cancelled");
        assert!(s.asides.is_empty());
        // A bad `conversation` is refused.
        s.handle_client_text(r#"{"type":"response.create","response":{"conversation":"conv_x"}}"#, t0);
        let err = &events(&drain(&mut s))[0];
        assert_eq!(
            (err["error"]["code"].as_str(), err["error"]["param"].as_str()),
            (Some("invalid_value"), Some("response.conversation"))
        );
    }

    /// A tool turn (with speech before the call), the tool output, the reply after it, an
    /// out-of-band filler, a user text item and a refused output go to
    /// `target/server-events/sim-tools.jsonl` for the official SDK check
    /// (`scripts/check-client-events.py --server target/server-events`).
    #[test]
    fn writes_tool_turn_server_events_for_the_python_check() {
        use crate::core::realtime::ClientEvent;
        let script = vec![
            ScriptedToolCall::new(0, "lookup_order", ARGS)
                .say_before(fixtures::clip("agent_reply_3").unwrap())
                .then(AfterTool::ReplyClip(fixtures::agent_goodbye().unwrap())),
        ];
        let (mut s, mut out) = tool_session(script, Some(fixtures::agent_filler().unwrap()));
        let t0 = Instant::now();
        out.extend(vad_turn(&mut s, t0));
        let call_id = bridge_decodes(&events(&out))[0][2].clone();
        out.extend(client(
            &mut s,
            &ClientEvent::ResponseCreateOutOfBand { instructions: "one moment".into() },
            t0,
        ));
        out.extend(client(
            &mut s,
            &ClientEvent::FunctionCallOutput { call_id: "call_unknown".into(), output: "{}".into() },
            t0,
        ));
        out.extend(client(
            &mut s,
            &ClientEvent::FunctionCallOutput { call_id, output: r#"{"eta":"Friday"}"#.into() },
            t0,
        ));
        out.extend(client(&mut s, &ClientEvent::ResponseCreate, t0));
        out.extend(client(
            &mut s,
            &ClientEvent::UserText { text: "[caller pressed keys: 4 2 #]".into() },
            t0,
        ));
        let evs = events(&out);
        bridge_decodes(&evs);
        let kinds = dump_events(&evs, "sim-tools.jsonl");
        for k in [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "conversation.item.added",
            "conversation.item.done",
            "response.output_audio.delta",
            "response.done",
            "error",
        ] {
            assert!(kinds.contains(k), "{k} not exercised: {kinds:?}");
        }
        let items: Vec<&str> = of_type(&evs, "conversation.item.done")
            .iter()
            .map(|e| e["item"]["type"].as_str().unwrap())
            .collect();
        for t in ["message", "function_call", "function_call_output"] {
            assert!(items.contains(&t), "{t} item not exercised: {items:?}");
        }
    }
}
