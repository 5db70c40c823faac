//! A local stand-in for the OpenAI Realtime API: a real WebSocket server speaking the GA
//! protocol (see `shared/reference/openai-realtime.md`).
//!
//! It answers with the speech fixtures instead of a model: energy VAD turns caller audio into
//! `speech_started` / `speech_stopped` / `committed`, then a reply clip is streamed back as
//! unevenly sized `response.output_audio.delta`s paced at [`SimConfig::speed`] × real time.
//! Barge-in, `response.cancel`, `conversation.item.truncate` and errors behave as on the real
//! service, so the bridge can be tested end to end over loopback.
//!
//! Tool calls are scripted ([`SimConfig::tool_script`]): a chosen response calls a function
//! (after speaking a clip, or instead of speaking), waits for the client's
//! `function_call_output`, and the response after it says what [`AfterTool`] names. An
//! out-of-band `response.create` (`"conversation": "none"`, the bridge's "one moment" filler)
//! speaks [`SimConfig::filler`] outside the conversation. Every item the client creates is logged
//! ([`SimEventKind::ItemCreated`]); read them with [`SimHandle::conversation`].
//!
//! Each connection runs the sans-IO `session::Session`; this module is only the socket shell
//! (accept, handshake, pacing timer, capture file, shared log).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fixtures::{self, Clip};
use super::session::{Output, Session};

/// Default pacing of audio deltas: four times faster than real time, like the real service
/// (which generates audio faster than it plays).
pub const DEFAULT_SPEED: f32 = 4.0;

/// Time allowed for a client to finish the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time to wait for the peer's close frame after we close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Time [`SimHandle::shutdown`] waits for connections to finish.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Back-off after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Reply clips, played in order and cycled, one per response.
    pub replies: Vec<Clip>,
    /// Transcript for the n-th committed user turn (empty string once they run out). Sent only
    /// if the session enables input transcription.
    pub caller_transcripts: Vec<String>,
    /// The energy VAD's thresholds and timing.
    pub vad: SimVad,
    /// Delta pacing relative to real time (4.0 = four times faster). Zero, negative or
    /// non-finite sends the whole reply at once.
    pub speed: f32,
    /// If set, every client text message is appended verbatim to this file as one JSONL line.
    pub capture_path: Option<PathBuf>,
    /// A failure to inject, for error-path tests.
    pub fault: Option<SimFault>,
    /// Echo mode (load tests): every appended audio chunk comes straight back as an output
    /// audio delta of one endless response; no replies, and no VAD unless [`echo_vad`] is set.
    /// `response.cancel` ends the echo response (a fresh one starts with the next append) and
    /// `conversation.item.truncate` of its item is checked against the audio echoed so far.
    ///
    /// [`echo_vad`]: Self::echo_vad
    pub echo: bool,
    /// With [`echo`](Self::echo): also run the energy VAD on the appended audio and send
    /// `input_audio_buffer.speech_started` / `speech_stopped` (no commits, no responses), so the
    /// bridge's barge-in (`clear`, truncate, cancel) can be load-tested. Ignored without echo.
    pub echo_vad: bool,
    /// Function calls the simulated model makes, by response number (see [`ScriptedToolCall`]).
    /// Empty: the model never calls a tool.
    pub tool_script: Vec<ScriptedToolCall>,
    /// What an out-of-band response (`response.create` with `"conversation": "none"`) says.
    /// `None`: the first 600 ms of the first reply clip (no audio without replies).
    pub filler: Option<Clip>,
}

/// A function call the simulated model makes on one response.
///
/// When in-band response number [`on_turn`](Self::on_turn) of a connection starts (a VAD turn
/// or a `response.create`), it speaks [`say_before`](Self::say_before) (if any) as its message
/// item, then emits the call in the GA shapes: `response.output_item.added` (a `function_call`
/// item with empty `arguments`), `response.function_call_arguments.delta` (the arguments in
/// two pieces), `response.function_call_arguments.done`, `response.output_item.done`, and
/// `response.done` (status `completed`, the call in `output`). A response cancelled while
/// still speaking `say_before` never makes its call.
///
/// The call then waits: a `conversation.item.create` with a `function_call_output` for its
/// `call_id` is logged ([`SimEventKind::ItemCreated`]), and the next in-band response says what
/// [`then`](Self::then) names. A `function_call_output` for a `call_id` the session never
/// issued is refused with an `invalid_value` error, as on the real service.
///
/// Several entries with the same `on_turn` are parallel calls of one response, in list order
/// (the first `say_before` among them is spoken). A tool turn does not use up a reply clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedToolCall {
    /// The response that makes the call: 0 for the connection's first in-band response, 1 for
    /// the next, …, counting every in-band response that started (`response.created`), tool
    /// turns and the responses after tool outputs included. Out-of-band responses do not count.
    pub on_turn: usize,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text, sent exactly as given (invalid JSON is allowed, to test the
    /// bridge's argument checks).
    pub arguments: String,
    /// Speech before the call, in the same response; `None`: the response is only the call.
    pub say_before: Option<Clip>,
    /// What the response after the call's output says.
    pub then: AfterTool,
}

impl ScriptedToolCall {
    /// A call of `name` with `arguments` (JSON text) on response `on_turn`, with no speech
    /// before it and the next reply clip after its output.
    pub fn new(on_turn: usize, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self {
            on_turn,
            name: name.into(),
            arguments: arguments.into(),
            say_before: None,
            then: AfterTool::Reply,
        }
    }

    /// Speaks `clip` before the call, in the same response.
    #[must_use]
    pub fn say_before(mut self, clip: Clip) -> Self {
        self.say_before = Some(clip);
        self
    }

    /// Says `then` in the response after the call's output.
    #[must_use]
    pub fn then(mut self, then: AfterTool) -> Self {
        self.then = then;
        self
    }
}

/// What the response after a scripted call's `function_call_output` says.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterTool {
    /// The next clip of [`SimConfig::replies`], as any response would.
    Reply,
    /// This clip (e.g. [`fixtures::agent_goodbye`]), without advancing the reply cycle.
    ReplyClip(Clip),
}

impl Default for SimConfig {
    /// No replies (responses complete with no audio), default VAD and speed.
    fn default() -> Self {
        Self {
            replies: Vec::new(),
            caller_transcripts: Vec::new(),
            vad: SimVad::default(),
            speed: DEFAULT_SPEED,
            capture_path: None,
            fault: None,
            echo: false,
            echo_vad: false,
            tool_script: Vec::new(),
            filler: None,
        }
    }
}

impl SimConfig {
    /// Replies `agent_reply_1..3`, the caller clips' texts as transcripts, in fixture order,
    /// and `agent_filler` as the out-of-band filler. No tool calls.
    ///
    /// # Errors
    /// If the embedded fixtures are inconsistent.
    pub fn from_fixtures() -> anyhow::Result<Self> {
        Ok(Self {
            replies: fixtures::agent_replies()?,
            caller_transcripts: fixtures::caller_clips()?.into_iter().map(|c| c.text).collect(),
            filler: Some(fixtures::agent_filler()?),
            ..Self::default()
        })
    }
}

/// The simulator's energy VAD.
///
/// These values drive detection whatever the client sets in `turn_detection` (its
/// `threshold`, `prefix_padding_ms` and `silence_duration_ms` are echoed but not applied), so
/// a test controls turn timing regardless of the bridge's configuration. `create_response`,
/// `interrupt_response` and `turn_detection: null` are honoured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimVad {
    /// RMS level on i16 samples at or above which a 20 ms window counts as voiced.
    pub rms_threshold: f32,
    /// Voiced audio (ms) needed before `speech_started`.
    pub start_ms: u32,
    /// Quiet audio (ms) after speech before `speech_stopped`.
    pub silence_ms: u32,
    /// How far before the first voiced window `audio_start_ms` is reported.
    pub prefix_padding_ms: u32,
}

impl Default for SimVad {
    fn default() -> Self {
        Self { rms_threshold: 600.0, start_ms: 60, silence_ms: 500, prefix_padding_ms: 300 }
    }
}

/// A failure the simulator injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// Close the socket with code 1011 right after the first audio delta of the connection.
    CloseOnFirstDelta,
    /// Answer the first `session.update` with an `invalid_api_key` error, then close with 1008.
    FatalErrorOnSessionUpdate,
    /// Close the first connection (only) with 1011 after this many audio deltas of it: the
    /// server dying mid-reply, with later connections (the bridge's reconnect) healthy.
    CloseFirstConnectionAfterDeltas(u32),
}

/// One thing the simulator did or saw.
#[derive(Debug, Clone, PartialEq)]
pub struct SimLogEntry {
    /// When it happened (for outbound events: just after the frame was written).
    pub at: Instant,
    /// Connection number, from 1, in accept order.
    pub session: u64,
    /// What happened.
    pub kind: SimEventKind,
}

/// What a [`SimLogEntry`] records.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEventKind {
    /// A client completed the handshake; `model` is the `model` query parameter.
    Connected {
        /// The requested model, if any.
        model: Option<String>,
    },
    /// `session.updated` was sent.
    SessionUpdated {
        /// Input format type, e.g. `audio/pcmu`.
        input_format: String,
        /// Output format type.
        output_format: String,
    },
    /// `input_audio_buffer.speech_started` was sent.
    SpeechStarted {
        /// Its `audio_start_ms`.
        audio_start_ms: u64,
    },
    /// `input_audio_buffer.speech_stopped` was sent.
    SpeechStopped {
        /// Its `audio_end_ms`.
        audio_end_ms: u64,
    },
    /// `response.created` was sent.
    ResponseStarted {
        /// The response id.
        response_id: String,
        /// The assistant item carrying the audio (for a response that only calls a tool, the
        /// `function_call` item).
        item_id: String,
        /// Name of the clip spoken (empty when no replies are configured, or when the response
        /// only calls a tool).
        clip: String,
        /// Out-of-band (`"conversation": "none"`): a filler outside the conversation.
        out_of_band: bool,
    },
    /// A scripted function call was sent (`response.function_call_arguments.done`).
    ToolCallSent(SimToolCall),
    /// The client added an item with `conversation.item.create` (only accepted ones).
    ItemCreated {
        /// The item's id (the client's, or one the simulator assigned).
        item_id: String,
        /// What the item says.
        item: SimClientItem,
    },
    /// The first `response.output_audio.delta` of a response was sent.
    FirstDelta {
        /// The response id.
        response_id: String,
    },
    /// `response.done` was sent.
    ResponseDone {
        /// The response id.
        response_id: String,
        /// `completed` or `cancelled`.
        status: String,
    },
    /// `conversation.item.truncated` was sent.
    Truncated {
        /// The truncated item.
        item_id: String,
        /// Where it was cut.
        audio_end_ms: u64,
    },
    /// A `response.cancel` arrived.
    CancelReceived,
    /// An `error` event was sent.
    ErrorSent {
        /// Its `error.code`.
        code: String,
    },
    /// A client event arrived: every JSON event with a `type` except
    /// `input_audio_buffer.append` (50 a second per call; see [`SimConfig::capture_path`]).
    ClientEvent {
        /// Its `type`.
        kind: String,
    },
    /// The connection ended.
    Closed,
}

/// A function call the simulated model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimToolCall {
    /// The response that made it.
    pub response_id: String,
    /// The `function_call` item.
    pub item_id: String,
    /// `call_`: the id the client's `function_call_output` must carry.
    pub call_id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// An item a client added to the conversation (`conversation.item.create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimClientItem {
    /// A message; the bridge sends caller key presses as a `user` message.
    Message {
        /// `user`, `assistant` or `system`.
        role: String,
        /// The `text` of its content parts (`input_text`, `output_text`), joined with nothing
        /// in between; parts without text (audio) add nothing.
        text: String,
    },
    /// A function call the client inserted itself.
    FunctionCall {
        /// Its `call_id` (empty if the client sent none).
        call_id: String,
        /// Its `name`.
        name: String,
        /// Its `arguments`.
        arguments: String,
    },
    /// A tool result.
    FunctionCallOutput {
        /// The call it answers.
        call_id: String,
        /// The output text (usually JSON).
        output: String,
    },
}

/// State shared by the accept loop, the connections and the handle.
struct Shared {
    cfg: Arc<SimConfig>,
    log: Mutex<Vec<SimLogEntry>>,
    /// Connections accepted so far (also the last connection number).
    connections: AtomicU64,
    /// Connections that completed the handshake.
    upgraded: AtomicUsize,
    capture: Option<Mutex<File>>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Vec<SimLogEntry>> {
        // A panic while holding the lock cannot leave a Vec half-pushed; keep going.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, session: u64, kind: SimEventKind) {
        self.log().push(SimLogEntry { at: Instant::now(), session, kind });
    }

    fn capture(&self, text: &str) {
        let Some(file) = &self.capture else { return };
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line so concurrent connections never interleave inside a line.
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        line.push('\n');
        if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
            tracing::warn!(error = %e, "sim: cannot write capture file");
        }
    }
}

/// A running simulator. Dropping it stops accepting and closes connections in the
/// background; [`shutdown`](Self::shutdown) also waits for them.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Starts the simulator on `bind` (use port 0 for a free port).
///
/// # Errors
/// If the address cannot be bound or the capture file cannot be opened.
pub async fn start(cfg: SimConfig, bind: SocketAddr) -> anyhow::Result<SimHandle> {
    let capture = match &cfg.capture_path {
        Some(path) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening capture file {}", path.display()))?,
        )),
        None => None,
    };
    let listener =
        TcpListener::bind(bind).await.with_context(|| format!("binding the Realtime simulator to {bind}"))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        cfg: Arc::new(cfg),
        log: Mutex::new(Vec::new()),
        connections: AtomicU64::new(0),
        upgraded: AtomicUsize::new(0),
        capture,
    });
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(accept_loop(listener, shared.clone(), token.clone(), tracker.clone()));
    tracing::info!(%addr, "sim: Realtime simulator listening");
    Ok(SimHandle { addr, shared, token, tracker })
}

impl SimHandle {
    /// The URL to point a Realtime client at: `ws://127.0.0.1:PORT/v1/realtime` (a wildcard
    /// bind address is replaced by loopback).
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("ws://{}/v1/realtime", SocketAddr::new(ip, self.addr.port()))
    }

    /// The address the simulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of everything logged so far, in order.
    pub fn log(&self) -> Vec<SimLogEntry> {
        self.shared.log().clone()
    }

    /// The items clients added with `conversation.item.create` (accepted ones), in order, from
    /// every connection (see [`SimLogEntry::session`] in [`log`](Self::log) to tell them apart).
    pub fn conversation(&self) -> Vec<SimClientItem> {
        self.shared
            .log()
            .iter()
            .filter_map(|e| match &e.kind {
                SimEventKind::ItemCreated { item, .. } => Some(item.clone()),
                _ => None,
            })
            .collect()
    }

    /// The text of every `user` message clients added (e.g. the bridge's
    /// `"[caller pressed keys: 1 2 3 #]"`), in order.
    pub fn user_texts(&self) -> Vec<String> {
        self.conversation()
            .into_iter()
            .filter_map(|item| match item {
                SimClientItem::Message { role, text } if role == "user" => Some(text),
                _ => None,
            })
            .collect()
    }

    /// Every `function_call_output` clients sent, as `(call_id, output)`, in order.
    pub fn tool_outputs(&self) -> Vec<(String, String)> {
        self.conversation()
            .into_iter()
            .filter_map(|item| match item {
                SimClientItem::FunctionCallOutput { call_id, output } => Some((call_id, output)),
                _ => None,
            })
            .collect()
    }

    /// Every function call the simulated model made, in order.
    pub fn tool_calls(&self) -> Vec<SimToolCall> {
        self.shared
            .log()
            .iter()
            .filter_map(|e| match &e.kind {
                SimEventKind::ToolCallSent(call) => Some(call.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many clients have completed the WebSocket handshake since start.
    pub fn connections(&self) -> usize {
        self.shared.upgraded.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection (code 1001) and waits up to 5 s for them.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.tracker.wait()).await.is_err() {
            tracing::warn!("sim: connections still open after the shutdown timeout");
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let n = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(%peer, session = n, "sim: connection");
                tracker.spawn(serve(stream, n, shared.clone(), token.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "sim: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The handshake callback: requires `Authorization: Bearer <token>` (or Azure's
/// `api-key: <key>`), answering 401 otherwise, and reads `model` from the query.
struct Handshake<'a> {
    model: &'a mut Option<String>,
}

impl Callback for Handshake<'_> {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        // The auth scheme is case-insensitive (RFC 9110 §11.1).
        let bearer = header("authorization")
            .and_then(|v| v.split_once(' '))
            .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty());
        let api_key = header("api-key").is_some_and(|k| !k.is_empty());
        let authorized = bearer || api_key;
        if !authorized {
            let mut response = ErrorResponse::new(Some(
                "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"missing_api_key\",\
                 \"message\":\"Missing bearer authentication in header\"}}"
                    .to_owned(),
            ));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            return Err(response);
        }
        *self.model = request.uri().query().and_then(|q| query_param(q, "model"));
        Ok(response)
    }
}

/// The percent-decoded value of `name` in a query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs one connection: handshake, then the session until either side closes.
async fn serve(stream: TcpStream, n: u64, shared: Arc<Shared>, token: CancellationToken) {
    // Small events (speech_started) must not wait behind Nagle for the ACK of earlier deltas.
    let _ = stream.set_nodelay(true);
    // The Python SDK lifts frame limits; audio deltas and session echoes can be large.
    let config =
        WebSocketConfig::default().max_message_size(None).max_frame_size(None).read_buffer_size(8 * 1024);
    let mut model = None;
    let callback = Handshake { model: &mut model };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(session = n, error = %e, "sim: handshake rejected or failed");
            return;
        }
        Err(_) => {
            tracing::debug!(session = n, "sim: handshake timed out");
            return;
        }
    };
    shared.upgraded.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let cfg = match shared.cfg.fault {
        Some(SimFault::CloseFirstConnectionAfterDeltas(_)) if n > 1 => {
            Arc::new(SimConfig { fault: None, ..(*shared.cfg).clone() })
        }
        _ => shared.cfg.clone(),
    };
    let mut session = Session::new(cfg, model);
    let mut close: Option<(u16, String)> = None;
    loop {
        // Drain everything the session produced, then flush once.
        let mut dirty = false;
        while let Some(output) = session.poll_output() {
            let text = match output {
                Output::Event(event) => event.to_string(),
                Output::Text(text) => text,
                Output::Log(kind) => {
                    shared.record(n, kind);
                    continue;
                }
                Output::Close { code, reason } => {
                    close = Some((code, reason));
                    continue;
                }
            };
            if let Err(e) = sink.feed(Message::text(text)).await {
                tracing::debug!(session = n, error = %e, "sim: send failed");
                shared.record(n, SimEventKind::Closed);
                return;
            }
            dirty = true;
        }
        if dirty {
            if let Err(e) = sink.flush().await {
                tracing::debug!(session = n, error = %e, "sim: flush failed");
                shared.record(n, SimEventKind::Closed);
                return;
            }
        }
        if close.is_some() || session.is_closed() {
            break;
        }
        let deadline = session.poll_timeout();
        tokio::select! {
            () = token.cancelled() => {
                close = Some((1001, "simulator shutting down".to_owned()));
                break;
            }
            () = sleep_until(deadline) => session.handle_timeout(Instant::now()),
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    shared.capture(text.as_str());
                    session.handle_client_text(text.as_str(), Instant::now());
                }
                Some(Ok(Message::Binary(_))) => session.handle_client_binary(),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    tracing::debug!(session = n, error = %e, "sim: read failed");
                    break;
                }
            },
        }
    }
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        if sink.send(Message::Close(Some(frame))).await.is_ok() {
            // Wait for the client's close reply so it sees a clean close handshake.
            let drain = async { while let Some(Ok(_)) = stream.next().await {} };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
        }
    } else {
        // Flushes tungstenite's automatic reply to the client's close frame.
        let _ = sink.close().await;
    }
    shared.record(n, SimEventKind::Closed);
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    /// The next text frame, parsed.
    async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        loop {
            if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
                return serde_json::from_str(t.as_str()).unwrap();
            }
        }
    }

    #[test]
    fn query_and_percent_decoding() {
        assert_eq!(query_param("a=1&model=gpt-realtime", "model").as_deref(), Some("gpt-realtime"));
        assert_eq!(query_param("model=a%2Db+c", "model").as_deref(), Some("a-b c"));
        assert_eq!(query_param("model=%2", "model").as_deref(), Some("%2"));
        assert_eq!(query_param("x=1", "model"), None);
    }

    #[tokio::test]
    async fn rejects_an_upgrade_without_credentials() {
        let sim = start(SimConfig::default(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let err = tokio_tungstenite::connect_async(sim.url()).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        let mut req = sim.url().into_client_request().unwrap();
        req.headers_mut().insert("authorization", "Bearer ".parse().unwrap());
        assert!(tokio_tungstenite::connect_async(req).await.is_err(), "empty token");
        assert_eq!(sim.connections(), 0);
        let mut req = sim.url().into_client_request().unwrap();
        req.headers_mut().insert("api-key", "azure-key".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(next(&mut ws).await["session"]["model"], "gpt-realtime", "default model");
        assert_eq!(sim.connections(), 1);
        ws.close(None).await.unwrap();
        sim.shutdown().await;
    }

    /// Loopback: a plain client configures pcmu + server VAD + transcription, speaks the
    /// question in 20 ms frames, then silence, and gets the whole first reply back.
    #[tokio::test]
    async fn loopback_turn_gets_transcript_and_full_reply() {
        let capture =
            std::env::temp_dir().join(format!("callbridge-sim-capture-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&capture);
        let cfg = SimConfig {
            speed: 50.0,
            capture_path: Some(capture.clone()),
            ..SimConfig::from_fixtures().unwrap()
        };
        let sim = start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut req = format!("{}?model=gpt-realtime", sim.url()).into_client_request().unwrap();
        req.headers_mut().insert("authorization", "Bearer sk-test".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();

        let created = next(&mut ws).await;
        assert_eq!(created["type"], "session.created");
        assert_eq!(created["session"]["model"], "gpt-realtime");
        let update = json!({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "gpt-4o-mini-transcribe"},
                      "turn_detection": {"type": "server_vad", "create_response": true, "interrupt_response": true}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}});
        ws.send(Message::text(update.to_string())).await.unwrap();
        assert_eq!(next(&mut ws).await["type"], "session.updated");

        let question = fixtures::clip("caller_question").unwrap();
        let mut audio = question.ulaw.to_vec();
        audio.extend(std::iter::repeat_n(0xFF, 8 * 1000));
        for frame in audio.chunks(160) {
            let ev = json!({"type": "input_audio_buffer.append", "audio": BASE64.encode(frame)});
            ws.send(Message::text(ev.to_string())).await.unwrap();
        }

        let reply = fixtures::clip("agent_reply_1").unwrap();
        let (mut started, mut stopped, mut transcript, mut audio_bytes) = (None, None, None, 0usize);
        let done = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                let ev = next(&mut ws).await;
                assert!(ev["event_id"].is_string(), "{ev}");
                match ev["type"].as_str().unwrap() {
                    "input_audio_buffer.speech_started" => started = ev["audio_start_ms"].as_u64(),
                    "input_audio_buffer.speech_stopped" => stopped = ev["audio_end_ms"].as_u64(),
                    "conversation.item.input_audio_transcription.completed" => {
                        transcript = Some(ev["transcript"].as_str().unwrap().to_owned());
                    }
                    "response.output_audio.delta" => {
                        audio_bytes += BASE64.decode(ev["delta"].as_str().unwrap()).unwrap().len();
                    }
                    "response.done" => return ev,
                    "error" => panic!("unexpected error {ev}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("no response.done within 8 s");
        assert_eq!(done["response"]["status"], "completed");
        let (started, stopped) = (started.unwrap(), stopped.unwrap());
        assert!(started < 300, "speech starts near the clip start, got {started}");
        let clip_ms = question.duration_ms();
        assert!(stopped > clip_ms && stopped < clip_ms + 800, "speech stops after the clip, got {stopped}");
        assert_eq!(audio_bytes, reply.ulaw.len());
        // The transcript arrives 150 ms after the commit: before or after response.done.
        let transcript = match transcript {
            Some(t) => t,
            None => loop {
                let ev = next(&mut ws).await;
                if ev["type"] == "conversation.item.input_audio_transcription.completed" {
                    break ev["transcript"].as_str().unwrap().to_owned();
                }
            },
        };
        assert_eq!(transcript, question.text);

        ws.close(None).await.unwrap();
        sim.shutdown_and_check(&capture).await;
    }

    /// Over a real socket: a scripted call, its output, a user text item; the handle's
    /// accessors report them in order.
    #[tokio::test]
    async fn handle_reports_tool_calls_and_the_items_clients_create() {
        let cfg = SimConfig {
            speed: 0.0,
            tool_script: vec![ScriptedToolCall::new(0, "lookup_order", r#"{"order":"A-17"}"#)],
            ..SimConfig::from_fixtures().unwrap()
        };
        let sim = start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut req = sim.url().into_client_request().unwrap();
        req.headers_mut().insert("authorization", "Bearer sk-test".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(next(&mut ws).await["type"], "session.created");
        ws.send(Message::text(r#"{"type":"response.create"}"#)).await.unwrap();
        let call_id = loop {
            let ev = next(&mut ws).await;
            if ev["type"] == "response.function_call_arguments.done" {
                break ev["call_id"].as_str().unwrap().to_owned();
            }
        };
        while next(&mut ws).await["type"] != "response.done" {}
        let items = [
            json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[caller pressed keys: 7 #]"}]}),
            json!({"type": "function_call_output", "call_id": call_id, "output": "{\"found\":true}"}),
        ];
        for item in items {
            let ev = json!({"type": "conversation.item.create", "item": item});
            ws.send(Message::text(ev.to_string())).await.unwrap();
            // The log is written before the answer goes out.
            while next(&mut ws).await["type"] != "conversation.item.done" {}
        }
        assert_eq!(
            sim.conversation(),
            [
                SimClientItem::Message { role: "user".into(), text: "[caller pressed keys: 7 #]".into() },
                SimClientItem::FunctionCallOutput {
                    call_id: call_id.clone(),
                    output: r#"{"found":true}"#.into()
                },
            ]
        );
        assert_eq!(sim.user_texts(), ["[caller pressed keys: 7 #]"]);
        assert_eq!(sim.tool_outputs(), [(call_id.clone(), r#"{"found":true}"#.to_owned())]);
        let calls = sim.tool_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].call_id.as_str(), calls[0].name.as_str()), (call_id.as_str(), "lookup_order"));
        assert_eq!(calls[0].arguments, r#"{"order":"A-17"}"#);
        ws.close(None).await.unwrap();
        sim.shutdown().await;
    }

    impl SimHandle {
        async fn shutdown_and_check(self, capture: &std::path::Path) {
            let log = self.log();
            assert_eq!(self.connections(), 1);
            self.shutdown().await;
            assert!(log.iter().any(
                |e| matches!(&e.kind, SimEventKind::Connected { model: Some(m) } if m == "gpt-realtime")
            ));
            assert!(log.iter().any(
                |e| matches!(&e.kind, SimEventKind::ResponseDone { status, .. } if status == "completed")
            ));
            let lines = std::fs::read_to_string(capture).unwrap();
            assert!(lines.lines().count() > 300);
            assert!(lines.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
            let _ = std::fs::remove_file(capture);
        }
    }
}
