//! The tokio shell around [`Call`]: one task per call that owns both sockets, feeds the state
//! machine, writes what it asks for, and sleeps until its next deadline. Also the live-call
//! admission counter and the shutdown/drain signal shared with the server.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use dashmap::DashMap;
use tokio::task::{AbortHandle, JoinSet};

use crate::auth::StreamTokens;
use crate::clients::realtime::{self as rt_client, ConnectError, RealtimeSocket};
use crate::config::UpstreamConfig;
use crate::core::call::{
    Call, CallEvent, CallParams, ConnectFailure, EndReason, Output, ProviderOut, ToolRequest, ToolResult,
    UpstreamEvent,
};
use crate::core::realtime::{self, ClientEvent, RealtimeDecoder};
use crate::core::telephony::{Dialect, ProviderCodec, ProviderCommand, ProviderEvent};
use crate::metrics::{self as m, RefuseReason};

pub use crate::store::record::{CallNote, CallRecord, CallStarted, TimelineEntry};
pub use tools::{ToolContext, ToolRuntime};

mod tools;

/// The `<Parameter>` carrying the stream token minted by `/twiml`.
pub const STREAM_TOKEN_PARAM: &str = "token";

/// A write to either socket that takes longer than this ends the call: the peer stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the server and every call task.
pub struct Shared {
    /// Where and how every call reaches the Realtime API.
    pub upstream: UpstreamConfig,
    /// Settings every call starts with.
    pub params: CallParams,
    /// Largest accepted provider message (bytes).
    pub max_message_bytes: usize,
    /// Admission cap on concurrent calls.
    pub max_calls: usize,
    active: AtomicUsize,
    draining: AtomicBool,
    /// Fired when the drain time is over: calls still running end at once.
    pub stop_calls: CancellationToken,
    /// Every call task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Call starts and ends go here (bounded; overflow is counted as `records_overflow`).
    pub records: Option<mpsc::Sender<CallNote>>,
    /// Stream tokens and outbound-call context, shared with the webhooks.
    pub control: CallControl,
    /// What the model's tools can reach; `None` answers every tool call with an error.
    pub tools: Option<Arc<ToolRuntime>>,
}

/// What the webhooks hand to the call tasks: the stream-token verifier and the context of
/// outbound calls until their stream starts.
#[derive(Default)]
pub struct CallControl {
    /// Verifies the `token` custom parameter of `start`; `None` when signature checks are off
    /// (`TWILIO_VALIDATE_SIGNATURE=false`).
    pub stream_tokens: Option<Mutex<StreamTokens>>,
    /// Outbound calls created through `POST /v1/calls`, by call SID, until their stream starts.
    pub outbound: DashMap<String, OutboundCall>,
}

/// An outbound call's context, applied when its stream starts.
#[derive(Debug, Clone)]
pub struct OutboundCall {
    /// Lead the call is for.
    pub lead_id: Option<String>,
    /// Caller-supplied metadata (JSON), kept in the call record's custom parameters.
    pub metadata: Option<String>,
    /// Session instructions for this call only.
    pub instructions: Option<String>,
    /// Voice for this call only.
    pub voice: Option<String>,
    /// When the call was created (entries of calls that never connect expire).
    pub created: Instant,
}

/// How long an outbound call's context waits for its stream.
pub const OUTBOUND_CONTEXT_TTL: Duration = Duration::from_secs(15 * 60);

impl CallControl {
    /// Remembers an outbound call's context, forgetting ones that never connected.
    pub fn remember_outbound(&self, call_sid: String, call: OutboundCall) {
        self.outbound.retain(|_, c| c.created.elapsed() < OUTBOUND_CONTEXT_TTL);
        self.outbound.insert(call_sid, call);
    }
}

impl Shared {
    /// No calls yet, not draining. `max_message_bytes` is in bytes; `records`, if set, receives
    /// a note when each call starts and its record when it ends.
    pub fn new(
        upstream: UpstreamConfig,
        params: CallParams,
        max_message_bytes: usize,
        max_calls: usize,
        records: Option<mpsc::Sender<CallNote>>,
    ) -> Self {
        Self {
            upstream,
            params,
            max_message_bytes,
            max_calls,
            active: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            stop_calls: CancellationToken::new(),
            tracker: TaskTracker::new(),
            records,
            control: CallControl::default(),
            tools: None,
        }
    }

    /// Sets the tool runtime.
    pub fn with_tools(mut self, tools: Arc<ToolRuntime>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Sets the call-control state (stream tokens, outbound context).
    pub fn with_control(mut self, control: CallControl) -> Self {
        self.control = control;
        self
    }

    /// Hands a note to the store without waiting; a full or closed channel drops it, counted.
    pub fn note(&self, note: CallNote) {
        if let Some(tx) = &self.records {
            if tx.try_send(note).is_err() {
                warn!("call record channel full or closed; record dropped");
                m::dropped("records_overflow", 1);
            }
        }
    }

    /// Calls holding a slot.
    pub fn active_calls(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Shutdown began: no new calls.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Stops admitting calls (readiness turns 503).
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Takes a call slot, or says why not.
    pub fn try_admit(self: &Arc<Self>) -> Result<CallSlot, RefuseReason> {
        if self.is_draining() {
            return Err(RefuseReason::Draining);
        }
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_calls {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(RefuseReason::MaxCalls);
        }
        Ok(CallSlot(self.clone()))
    }
}

/// One admitted call; releases its slot when dropped.
pub struct CallSlot(Arc<Shared>);

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<RealtimeSocket, ConnectError>> + Send>>;

/// Runs one call on an upgraded provider socket until it ends.
pub async fn run_call(socket: WebSocket, dialect: Dialect, slot: CallSlot) {
    let span = info_span!(
        "call",
        provider = dialect.name(),
        callSid = tracing::field::Empty,
        streamSid = tracing::field::Empty
    );
    let shared = slot.0.clone();
    m::call_started();
    let record = CallDriver::new(socket, dialect, &shared).run().instrument(span).await;
    m::call_ended_label(record.end_reason);
    // A refused stream is not a call: nothing of it is stored.
    if record.end_reason != EndReason::Unauthorized.as_str() {
        shared.note(CallNote::Ended(Box::new(record)));
    }
    drop(slot);
}

struct CallDriver<'s> {
    shared: &'s Shared,
    dialect: Dialect,
    provider: WebSocket,
    upstream: Option<RealtimeSocket>,
    connecting: Option<ConnectFuture>,
    call: Call,
    codec: ProviderCodec,
    decoder: RealtimeDecoder,
    record: CallRecord,
    text: String,
    /// Close code and reason for the provider socket, decided by how the call ended.
    close: Option<(u16, &'static str)>,
    /// A barge-in happened while handling the current input.
    barged_in: bool,
    /// The stream's token was refused: the call ends instead of connecting upstream.
    unauthorized: bool,
    /// Running tool calls and provider actions; each yields the result to feed back, if any.
    tool_tasks: JoinSet<Option<(String, ToolResult)>>,
    /// Tool tasks by `call_id`, to cancel on barge-in.
    tool_aborts: HashMap<String, AbortHandle>,
    /// When the input being handled was read from its socket.
    input_at: Instant,
    /// The provider socket can still be read (false after its close, so a draining call
    /// does not spin on a finished stream).
    provider_open: bool,
    /// Counter handles resolved once per call, so counting a frame is one atomic add.
    frames_in: metrics::Counter,
    frames_out: metrics::Counter,
}

impl<'s> CallDriver<'s> {
    fn new(provider: WebSocket, dialect: Dialect, shared: &'s Shared) -> Self {
        let now = Instant::now();
        Self {
            shared,
            dialect,
            provider,
            upstream: None,
            connecting: None,
            call: Call::new(now, shared.params.clone()),
            codec: ProviderCodec::new(dialect, shared.max_message_bytes),
            decoder: RealtimeDecoder::new(shared.upstream.max_message_bytes),
            record: CallRecord {
                call_sid: None,
                stream_sid: None,
                provider: dialect.name(),
                started_at: SystemTime::now(),
                opened: now,
                duration_ms: 0,
                end_reason: "",
                end_detail: None,
                custom_parameters: Default::default(),
                transcript: Vec::new(),
                timeline: Vec::new(),
                timeline_dropped: 0,
                usage: Default::default(),
                frames_in: 0,
                frames_out: 0,
            },
            text: String::with_capacity(1024),
            close: None,
            barged_in: false,
            unauthorized: false,
            tool_tasks: JoinSet::new(),
            tool_aborts: HashMap::new(),
            input_at: now,
            provider_open: true,
            frames_in: m::frames_in_counter(dialect.name()),
            frames_out: m::frames_out_counter(dialect.name()),
        }
    }

    fn at_ms(&self) -> u64 {
        self.record.opened.elapsed().as_millis() as u64
    }

    async fn run(mut self) -> CallRecord {
        let provider_name = self.dialect.name();
        let stop_calls = self.shared.stop_calls.clone();
        // Created once: re-registering a fresh waiter on every message costs a lock per frame.
        let stopped = stop_calls.cancelled();
        tokio::pin!(stopped);
        // One timer for the call's life, moved only when the state machine's deadline moves: a
        // fresh one per input would enter and leave the timer wheel on every frame.
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let end = loop {
            self.barged_in = false;
            match self.flush().await {
                Ok(Some(reason)) => break reason,
                Ok(None) => {}
                Err(reason) => break reason,
            }
            if self.barged_in {
                // From reading the speech_started event to the clear being written.
                m::barge_in(self.input_at.elapsed());
            }
            while let Some(ev) = self.call.poll_upstream_event() {
                self.on_upstream_event(ev);
            }
            let deadline = self.call.poll_timeout();
            if deadline != armed {
                if let Some(d) = deadline {
                    timer.as_mut().reset(d.into());
                }
                armed = deadline;
            }
            tokio::select! {
                msg = self.provider.recv(), if self.provider_open => self.on_provider(msg, provider_name),
                msg = next_upstream(&mut self.upstream) => self.on_upstream(msg),
                Some(done) = self.tool_tasks.join_next(), if !self.tool_tasks.is_empty() => {
                    if let Ok(Some((call_id, result))) = done {
                        self.tool_aborts.remove(&call_id);
                        self.call.handle_tool_result(Instant::now(), &call_id, result);
                    }
                }
                res = poll_connect(&mut self.connecting) => {
                    self.connecting = None;
                    let now = Instant::now();
                    match res {
                        Ok(socket) => {
                            // A recycle is make-before-break: the old session served until now.
                            if let Some(mut old) = self.upstream.replace(socket) {
                                // Closed on the side: the call goes on with the new session now.
                                tokio::spawn(async move {
                                    let _ = tokio::time::timeout(Duration::from_millis(200), old.close(None)).await;
                                });
                            }
                            self.call.handle_upstream_connected(now);
                        }
                        Err(e) => {
                            warn!(error = %e, "Realtime connect failed");
                            m::upstream_error(e.kind());
                            self.record.end_detail = Some(e.to_string());
                            self.call.handle_upstream_connect_failed(now, connect_failure(&e));
                        }
                    }
                }
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.call.handle_timeout(Instant::now());
                }
                _ = &mut stopped => self.call.handle_shutdown(Instant::now()),
            }
        };
        // Boxed: the ending's state would otherwise enlarge every call's future for its whole life.
        Box::pin(self.finish(end)).await
    }

    /// Writes everything the call asked for; batches writes per socket and flushes once.
    /// Returns the end reason once the call ended.
    async fn flush(&mut self) -> Result<Option<EndReason>, EndReason> {
        let mut provider_dirty = false;
        let mut upstream_dirty = false;
        let mut ended = None;
        while let Some(out) = self.call.poll_output() {
            match out {
                Output::Provider(cmd) => {
                    let Some(stream_sid) = self.call.stream_sid() else { continue };
                    self.text.clear();
                    let pc = match &cmd {
                        ProviderOut::Media { payload_b64 } => {
                            self.record.frames_out += 1;
                            ProviderCommand::Media { stream_sid, payload_b64 }
                        }
                        ProviderOut::Mark { name } => ProviderCommand::Mark { stream_sid, name },
                        ProviderOut::Clear => ProviderCommand::Clear { stream_sid },
                    };
                    self.codec.encode(&pc, &mut self.text);
                    if matches!(cmd, ProviderOut::Media { .. }) {
                        self.frames_out.increment(1);
                    }
                    match cmd {
                        ProviderOut::Media { payload_b64: s } | ProviderOut::Mark { name: s } => {
                            self.call.recycle(s)
                        }
                        ProviderOut::Clear => {}
                    }
                    let msg = Message::Text(self.text.as_str().into());
                    if timed(self.provider.feed(msg)).await.is_err() {
                        return Err(EndReason::CallerHangup);
                    }
                    provider_dirty = true;
                }
                Output::Realtime(ev) => {
                    let Some(up) = self.upstream.as_mut() else { continue };
                    self.text.clear();
                    realtime::encode(&ev, &mut self.text);
                    if let ClientEvent::InputAudioAppend { audio_b64 } = ev {
                        self.call.recycle(audio_b64);
                    }
                    let msg = tungstenite::Message::Text(self.text.as_str().into());
                    if timed(up.feed(msg)).await.is_err() {
                        m::upstream_error("write");
                        self.upstream = None;
                        self.call.handle_upstream_closed(Instant::now());
                        continue;
                    }
                    upstream_dirty = true;
                }
                Output::ConnectUpstream if self.unauthorized => return Err(EndReason::Unauthorized),
                Output::ConnectUpstream => {
                    let cfg = self.shared.upstream.clone();
                    self.connecting = Some(Box::pin(async move { rt_client::connect(&cfg).await }));
                }
                Output::Event(e) => self.on_event(e),
                Output::End(reason) => ended = Some(reason),
                Output::Tool(req) => self.start_tool(req),
                Output::CancelTool { call_id } => {
                    if let Some(task) = self.tool_aborts.remove(&call_id) {
                        task.abort();
                    }
                }
                Output::HangUp => self.hang_up(),
                Output::Transfer { call_id, target } => self.transfer(call_id, target),
                Output::SendDtmf { digits } => {
                    let Some(stream_sid) = self.call.stream_sid() else { continue };
                    if self.dialect != Dialect::SignalWire {
                        warn!("send_dtmf on a provider that cannot play keys");
                        continue;
                    }
                    for d in digits.chars().filter(|c| *c != 'w') {
                        let mut digit = [0u8; 4];
                        let digit = d.encode_utf8(&mut digit);
                        self.text.clear();
                        self.codec.encode(&ProviderCommand::Dtmf { stream_sid, digit }, &mut self.text);
                        let msg = Message::Text(self.text.as_str().into());
                        if timed(self.provider.feed(msg)).await.is_err() {
                            return Err(EndReason::CallerHangup);
                        }
                    }
                    provider_dirty = true;
                }
            }
        }
        if provider_dirty && timed(self.provider.flush()).await.is_err() {
            return Err(EndReason::CallerHangup);
        }
        if upstream_dirty {
            if let Some(up) = self.upstream.as_mut() {
                if timed(up.flush()).await.is_err() {
                    m::upstream_error("write");
                    self.upstream = None;
                    self.call.handle_upstream_closed(Instant::now());
                }
            }
        }
        Ok(ended)
    }

    fn on_event(&mut self, e: CallEvent) {
        let at = self.at_ms();
        let provider = self.dialect.name();
        match &e {
            CallEvent::Started { call_sid, stream_sid, passthrough, custom_parameters, .. } => {
                let span = tracing::Span::current();
                span.record("callSid", call_sid.as_str());
                span.record("streamSid", stream_sid.as_str());
                self.record.call_sid = Some(call_sid.clone());
                self.record.stream_sid = Some(stream_sid.clone());
                self.record.custom_parameters = custom_parameters.clone();
                if let Err(kind) = self.admit(call_sid) {
                    warn!(reason = kind, "stream token refused; no upstream session opened");
                    m::stream_refused(kind);
                    self.unauthorized = true;
                    self.record.end_detail = Some(format!("stream token {kind}"));
                    return;
                }
                self.shared.note(CallNote::Started(CallStarted {
                    call_sid: call_sid.clone(),
                    stream_sid: stream_sid.clone(),
                    provider,
                    started_at: self.record.started_at,
                    custom_parameters: self.record.custom_parameters.clone(),
                }));
                info!(passthrough, "stream started");
            }
            CallEvent::UpstreamReady => info!("Realtime session ready"),
            CallEvent::SpeechStarted { .. } | CallEvent::SpeechStopped { .. } => debug!(?e, "speech"),
            CallEvent::FirstAudio { latency } => m::first_audio(*latency),
            CallEvent::BargeIn { truncated, cleared, .. } => {
                self.barged_in = true;
                info!(cleared, truncated = truncated.len(), "barge-in")
            }
            CallEvent::Turn(t) => debug!(role = ?t.role, chars = t.text.len(), "turn"),
            CallEvent::Dropped { reason, count } => {
                if matches!(reason, crate::core::call::DropReason::MediaBeforeStart) {
                    warn!("media before start: dropped");
                    m::provider_error(provider, "media_before_start");
                }
                m::dropped(reason.as_str(), *count);
            }
            CallEvent::GapFilled { ms } => m::gap_filled(*ms),
            CallEvent::UpstreamError { error, fatal } => {
                // Our barge-in cancel often races the server's own interrupt_response cancel.
                if error.code.as_deref() == Some("response_cancel_not_active") {
                    debug!(message = %error.message, "Realtime: nothing to cancel");
                } else {
                    warn!(kind = %error.kind, code = ?error.code, message = %error.message, fatal, "Realtime error");
                }
                m::upstream_error(if *fatal { "api_fatal" } else { "api_recoverable" });
                if *fatal {
                    self.record.end_detail = Some(error.code.clone().unwrap_or_else(|| error.kind.clone()));
                }
            }
            CallEvent::Dtmf { .. } => debug!("dtmf"),
            CallEvent::ToolCalled { .. }
            | CallEvent::ToolRejected { .. }
            | CallEvent::ToolFinished { .. }
            | CallEvent::ToolCancelled { .. }
            | CallEvent::FillerSpoken { .. } => debug!(?e, "tool"),
            CallEvent::DtmfSent { .. } => debug!("dtmf sent"),
            CallEvent::ResponseDone { .. } => {}
        }
        self.record.note(at, &e);
    }

    fn on_provider(&mut self, msg: Option<Result<Message, axum::Error>>, provider: &'static str) {
        let now = Instant::now();
        self.input_at = now;
        match msg {
            Some(Ok(Message::Text(text))) => match self.codec.decode(text.as_str()) {
                Ok(ProviderEvent::Unknown { kind }) => {
                    warn!(event = %kind.chars().take(64).collect::<String>(), "unknown provider event skipped");
                    m::provider_error(provider, "unknown_event");
                }
                Ok(ev) => {
                    if matches!(ev, ProviderEvent::Media(_)) {
                        self.record.frames_in += 1;
                        self.frames_in.increment(1);
                    }
                    self.call.handle_provider(now, ev);
                }
                Err(e) => {
                    warn!(error = %e, "malformed provider message skipped");
                    m::provider_error(provider, e.kind());
                }
            },
            Some(Ok(Message::Binary(_))) => {
                warn!("binary provider frame skipped (media streams are JSON text)");
                m::provider_error(provider, "binary_frame");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                self.provider_open = false;
                self.call.handle_provider_closed(now);
            }
            Some(Err(e)) => {
                self.provider_open = false;
                if is_capacity_error(&e) {
                    warn!(error = %e, "provider message over the size limit; closing");
                    m::provider_error(provider, "oversize");
                    self.close = Some((1009, "message too big"));
                    self.call.handle_provider_error(now);
                } else {
                    debug!(error = %e, "provider socket error");
                    self.call.handle_provider_closed(now);
                }
            }
        }
    }

    fn on_upstream(&mut self, msg: Option<Result<tungstenite::Message, tungstenite::Error>>) {
        let now = Instant::now();
        self.input_at = now;
        match msg {
            Some(Ok(tungstenite::Message::Text(text))) => match self.decoder.decode(text.as_str()) {
                Ok(ev) => self.call.handle_realtime(now, ev),
                Err(e) => {
                    warn!(error = %e, "malformed Realtime event skipped");
                    m::upstream_error(e.kind());
                }
            },
            Some(Ok(tungstenite::Message::Close(frame))) => {
                info!(frame = ?frame, "Realtime socket closed");
                m::upstream_error("closed");
                self.upstream = None;
                self.call.handle_upstream_closed(now);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                warn!(error = %e, "Realtime socket error");
                m::upstream_error("socket");
                self.upstream = None;
                self.call.handle_upstream_closed(now);
            }
            None => {
                self.upstream = None;
                self.call.handle_upstream_closed(now);
            }
        }
    }

    fn on_upstream_event(&mut self, ev: UpstreamEvent) {
        let at = self.at_ms();
        match &ev {
            UpstreamEvent::Reconnecting { reason } => {
                info!(reason = reason.as_str(), "Realtime session lost or recycled: reconnecting");
                m::upstream_reconnect(reason.as_str());
                self.record.push(at, "reconnecting", reason.as_str().to_owned());
            }
            UpstreamEvent::AttemptFailed { attempt, timed_out } => {
                warn!(attempt, timed_out, "Realtime reconnect attempt failed");
                self.record.push(at, "reconnect_failed", format!("attempt {attempt} timed_out={timed_out}"));
            }
            UpstreamEvent::Restored { reason, attempts, outage_ms, restored_items, replayed_ms } => {
                info!(
                    reason = reason.as_str(),
                    attempts, outage_ms, restored_items, replayed_ms, "Realtime session restored"
                );
                self.record.push(
                    at,
                    "restored",
                    format!(
                        "{} after {attempts} attempt(s), {outage_ms} ms, {restored_items} items",
                        reason.as_str()
                    ),
                );
            }
            UpstreamEvent::GaveUp { attempts } => {
                warn!(attempts, "Realtime reconnect gave up; apologising and hanging up");
                self.record.push(at, "reconnect_gave_up", format!("{attempts} attempts"));
            }
        }
    }

    fn start_tool(&mut self, req: ToolRequest) {
        let call_id = req.call_id.clone();
        let (Some(rt), Some(call_sid)) = (self.shared.tools.clone(), self.record.call_sid.clone()) else {
            self.call.handle_tool_result(
                Instant::now(),
                &call_id,
                ToolResult::Err("tools are not available".into()),
            );
            return;
        };
        let ctx = ToolContext {
            call_sid,
            dialect: self.dialect,
            lead_id: self.record.custom_parameters.get("leadId").cloned(),
            transcript: self.call.transcript(),
        };
        let notes = self.shared.records.clone();
        let timeout = self.shared.params.tool_timeout;
        let id = call_id.clone();
        let task = self.tool_tasks.spawn(async move { Some((id, rt.run(req, ctx, notes, timeout).await)) });
        self.tool_aborts.insert(call_id, task);
    }

    /// The model ended the call: hang up through the provider's REST API (the stream then
    /// closes); without one, closing the socket ends a `<Connect><Stream>` call too.
    fn hang_up(&mut self) {
        let (Some(rt), Some(call_sid)) = (self.shared.tools.clone(), self.record.call_sid.clone()) else {
            return;
        };
        let dialect = self.dialect;
        self.shared.tracker.spawn(async move {
            if let Some(rest) = rt.rest(dialect) {
                match rest.hang_up(&call_sid).await {
                    Ok(()) => info!(call_sid, "hung up through the REST API"),
                    Err(e) => warn!(call_sid, error = %e, "REST hang-up failed; the stream is closed anyway"),
                }
            }
        });
    }

    /// Redirects the call to `<Dial>` the target; a failure goes back to the model.
    fn transfer(&mut self, call_id: String, target: String) {
        let (Some(rt), Some(call_sid)) = (self.shared.tools.clone(), self.record.call_sid.clone()) else {
            self.call.handle_tool_result(
                Instant::now(),
                &call_id,
                ToolResult::Err("transfers are not available".into()),
            );
            return;
        };
        let dialect = self.dialect;
        self.tool_tasks.spawn(async move {
            let Some(rest) = rt.rest(dialect) else {
                return Some((call_id, ToolResult::Err("transfers are not available".into())));
            };
            let twiml = match crate::core::telephony::twiml::dial(&target) {
                Ok(t) => t,
                Err(_) => {
                    return Some((call_id, ToolResult::Err("not a phone number or SIP address".into())));
                }
            };
            match rest.redirect(&call_sid, &twiml).await {
                Ok(()) => {
                    info!(call_sid, "call transferred");
                    None
                }
                Err(e) => {
                    warn!(call_sid, error = %e, "transfer failed");
                    Some((call_id, ToolResult::Err("the transfer failed".into())))
                }
            }
        });
    }

    /// Checks the stream's token (when required) and applies an outbound call's context.
    /// `Err` is the refusal's metric label.
    fn admit(&mut self, call_sid: &str) -> Result<(), &'static str> {
        let params = &mut self.record.custom_parameters;
        let token = params.remove(STREAM_TOKEN_PARAM);
        if let Some(tokens) = &self.shared.control.stream_tokens {
            let Some(token) = token else { return Err("missing") };
            let now_ms =
                SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let claims = tokens.lock().unwrap_or_else(|p| p.into_inner()).verify(&token, call_sid, now_ms);
            match claims {
                // The signed lead id wins over an unsigned parameter of the same name.
                Ok(claims) => match claims.lead_id {
                    Some(lead) => {
                        params.insert("leadId".into(), lead);
                    }
                    None => {
                        params.remove("leadId");
                    }
                },
                Err(e) => return Err(e.kind()),
            }
        }
        if let Some((_, out)) = self.shared.control.outbound.remove(call_sid) {
            params.insert("direction".into(), "outbound".into());
            if let Some(lead) = out.lead_id {
                params.insert("leadId".into(), lead);
            }
            if let Some(meta) = out.metadata {
                params.insert("metadata".into(), meta);
            }
            self.call.set_session_overrides(out.instructions, out.voice);
        }
        Ok(())
    }

    async fn finish(mut self, reason: EndReason) -> CallRecord {
        let (code, text) = self.close.unwrap_or(match reason {
            EndReason::ProviderStop | EndReason::CallerHangup => (1000, "call ended"),
            EndReason::AgentHangup => (1000, "call ended by the agent"),
            EndReason::Transferred => (1000, "call transferred"),
            EndReason::StartTimeout => (1008, "no valid start message"),
            EndReason::UnsupportedFormat => (1003, "unsupported mediaFormat"),
            EndReason::ProviderError => (1008, "protocol error"),
            EndReason::Shutdown => (1001, "server shutting down"),
            EndReason::Unauthorized => (1008, "stream not authorized"),
            EndReason::UpstreamClosed
            | EndReason::UpstreamError { .. }
            | EndReason::UpstreamConnectFailed => (1011, "voice model unavailable"),
        });
        let frame = CloseFrame { code, reason: text.into() };
        let _ = timed(self.provider.send(Message::Close(Some(frame)))).await;
        if let Some(up) = self.upstream.as_mut() {
            let _ = timed(up.close(None)).await;
        }
        self.upstream = None;
        if let EndReason::UpstreamError { code } = &reason {
            self.record.end_detail.get_or_insert_with(|| code.clone());
        }
        let at = self.at_ms();
        self.record.push(at, "ended", reason.as_str().to_owned());
        self.record.end_reason = reason.as_str();
        self.record.duration_ms = at;
        self.record.transcript = self.call.transcript();
        self.record.usage = self.call.usage().clone();
        info!(
            reason = reason.as_str(),
            duration_ms = at,
            frames_in = self.record.frames_in,
            frames_out = self.record.frames_out,
            "call ended"
        );
        self.record
    }
}

/// Handshake refusals that no retry fixes (key, permission, model) versus everything else.
fn connect_failure(e: &ConnectError) -> ConnectFailure {
    match e {
        ConnectError::Handshake(tungstenite::Error::Http(resp))
            if matches!(resp.status().as_u16(), 401 | 403 | 404) =>
        {
            ConnectFailure::Rejected
        }
        ConnectError::Request(_) => ConnectFailure::Rejected,
        _ => ConnectFailure::Transient,
    }
}

async fn timed<T, E>(fut: impl Future<Output = Result<T, E>>) -> Result<T, ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(()),
    }
}

async fn next_upstream(
    up: &mut Option<RealtimeSocket>,
) -> Option<Result<tungstenite::Message, tungstenite::Error>> {
    match up {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn poll_connect(c: &mut Option<ConnectFuture>) -> Result<RealtimeSocket, ConnectError> {
    match c {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn is_capacity_error(e: &axum::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(t) = err.downcast_ref::<tungstenite::Error>() {
            return matches!(t, tungstenite::Error::Capacity(_));
        }
        src = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The call's task is allocated when the call starts and lives as long, so its future's
    /// size is memory per call (it was 17 KiB while the ending was awaited inline).
    #[test]
    fn a_call_task_stays_small() {
        fn future_size<A, F>(_: impl Fn(A) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(|(s, slot): (WebSocket, CallSlot)| run_call(s, Dialect::Twilio, slot));
        assert!(size <= 10 * 1024, "run_call's future is {size} bytes");
    }
}
