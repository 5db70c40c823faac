//! A simulated phone call: a WebSocket client that speaks Twilio's (or SignalWire's)
//! media-stream protocol to the bridge, like the provider would (reference
//! `telephony-media-streams.md` §1–2).
//!
//! It sends `connected` and `start`, then exactly one 20 ms `media` frame per tick on an
//! absolute clock, taking audio from a [`Step`] script (speech clips, pauses, key presses,
//! waits). What the bridge sends back is queued and "played" at the same 20 ms rate, with `mark`
//! echoes and `clear` handled as the provider does. The result is a [`CallerReport`]: an event
//! log, counters, the keys pressed both ways and both audio tracks (writable as a stereo WAV).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::audio::{convert_ulaw_clip, decode_to_linear};
use super::fixtures::Clip;
use super::ids::IdGen;
use super::playback::PlaybackQueue;
use crate::core::audio::{AudioFormat, Encoding, FRAME_MS};

/// Frame period of every telephony media stream.
const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);

/// Time allowed for the TCP connect and WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time to wait for the server's close frame after we hang up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a key is held (ms), sent as SignalWire's `dtmf.duration` (never more than the gap
/// between keys). The value in the reference's example.
const DTMF_PRESS_MS: u64 = 160;

/// Which provider's flavour of the protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerDialect {
    /// Twilio Media Streams: `MZ…`/`CA…` SIDs, μ-law only, `streamSid` on every message.
    Twilio,
    /// SignalWire cXML streams: UUIDs, version `0.2.0`, no `streamSid` on inbound media,
    /// optional L16 16/24 kHz.
    SignalWire,
}

/// What the simulated caller does.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    /// The bridge's media-stream URL (`ws://…`).
    pub url: String,
    /// Provider dialect.
    pub dialect: CallerDialect,
    /// Stream format: [`AudioFormat::PCMU_8K`], or for SignalWire L16 at 16 or 24 kHz.
    pub format: AudioFormat,
    /// `start.callSid`.
    pub call_sid: String,
    /// `start.streamSid`, also expected on every message from the bridge.
    pub stream_sid: String,
    /// `start.customParameters` (the TwiML `<Parameter>`s).
    pub custom_parameters: BTreeMap<String, String>,
    /// Extra headers on the upgrade request (e.g. `Authorization`, `X-Twilio-Signature`).
    pub headers: Vec<(String, String)>,
    /// What to do, in order. Ending the script without [`Step::HangUp`] hangs up too.
    pub script: Vec<Step>,
}

impl CallerConfig {
    /// A Twilio μ-law call to `url` with fresh SIDs and no extra headers.
    pub fn twilio(url: impl Into<String>, script: Vec<Step>) -> Self {
        let mut ids = IdGen::new();
        Self {
            url: url.into(),
            dialect: CallerDialect::Twilio,
            format: AudioFormat::PCMU_8K,
            call_sid: ids.hex_sid("CA"),
            stream_sid: ids.hex_sid("MZ"),
            custom_parameters: BTreeMap::new(),
            headers: Vec::new(),
            script,
        }
    }

    /// A SignalWire call in `format` to `url` with fresh UUIDs and no extra headers.
    pub fn signalwire(url: impl Into<String>, format: AudioFormat, script: Vec<Step>) -> Self {
        let mut ids = IdGen::new();
        Self {
            url: url.into(),
            dialect: CallerDialect::SignalWire,
            format,
            call_sid: ids.uuid(),
            stream_sid: ids.uuid(),
            custom_parameters: BTreeMap::new(),
            headers: Vec::new(),
            script,
        }
    }
}

/// One step of a caller script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Say the clip, 20 ms per frame.
    Speak(Clip),
    /// Send silence for this long (rounded up to whole frames).
    Pause(Duration),
    /// Send silence until `min_ms` of agent audio has played since this step began.
    WaitHeard {
        /// Agent audio (ms) to hear.
        min_ms: u64,
        /// Fail the call if it takes longer than this.
        timeout: Duration,
    },
    /// Send silence until agent audio has played since this step began and the playback
    /// queue has then stayed empty for `quiet`.
    WaitAgentDone {
        /// How long the queue must stay empty.
        quiet: Duration,
        /// Fail the call if it takes longer than this.
        timeout: Duration,
    },
    /// Press phone keys: one `dtmf` message per key, the first at once and each next one `gap`
    /// later (on the 20 ms tick), while silence keeps streaming; the step ends with the last key.
    /// Twilio: `{"event":"dtmf","streamSid":…,"sequenceNumber":…,"dtmf":{"track":"inbound_track",
    /// "digit":"1"}}`; SignalWire: `dtmf.digit` plus `dtmf.duration` (ms, a number), no `track`.
    /// Starting the step fails on a key other than `0`-`9`, `*`, `#`, `A`-`D`.
    Dtmf {
        /// The keys, in order.
        digits: String,
        /// Time from one key to the next.
        gap: Duration,
    },
    /// Send silence until the bridge closes the socket (the call then ends without `stop`, as
    /// when the bridge hangs up). Fail the call if it is still open after `timeout`.
    WaitClose {
        /// Longest wait for the close.
        timeout: Duration,
    },
    /// Send `stop` and close the socket normally.
    HangUp,
}

/// A phone key pressed on the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPress {
    /// When the `dtmf` message was sent or received.
    pub at: Instant,
    /// The key: `0`-`9`, `*`, `#` or `A`-`D`.
    pub digit: char,
}

/// One thing that happened during the call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallerLogEntry {
    /// When it happened.
    pub at: Instant,
    /// What happened.
    pub kind: CallerEventKind,
}

/// What a [`CallerLogEntry`] records.
#[derive(Debug, Clone, PartialEq)]
pub enum CallerEventKind {
    /// The WebSocket handshake completed.
    Connected,
    /// `connected` and `start` were sent.
    StartSent,
    /// The first frame of a clip is being sent.
    SpeakBegin {
        /// Clip name.
        clip: String,
    },
    /// The last frame of a clip was sent.
    SpeakEnd {
        /// Clip name.
        clip: String,
    },
    /// The first `media` from the bridge arrived.
    FirstAgentAudio,
    /// `media` arrived after the caller had heard silence: a new utterance, or an underrun.
    /// Not logged for the very first `media`, which is [`CallerEventKind::FirstAgentAudio`].
    AgentAudioAfterSilence,
    /// A `clear` arrived; this much queued audio was dropped.
    ClearReceived {
        /// Queued audio dropped (ms).
        dropped_ms: u64,
    },
    /// A `mark` was echoed; `flushed` if by a `clear` rather than by playback.
    MarkEchoed {
        /// Mark name.
        name: String,
        /// Echoed because of a `clear`.
        flushed: bool,
    },
    /// A message from the bridge broke the provider's protocol (the provider would warn,
    /// e.g. Twilio 31951) or was not understood.
    Warning {
        /// What was wrong.
        message: String,
    },
    /// `stop` was sent and the socket closed by us.
    HangUp,
    /// The socket closed (code 1006 when it dropped without a close frame).
    Closed {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// Everything observed during a call.
#[derive(Debug, Clone, Default)]
pub struct CallerReport {
    /// Events in order.
    pub log: Vec<CallerLogEntry>,
    /// Rate of both tracks (the stream format's rate).
    pub sample_rate_hz: u32,
    /// What the caller sent, linear, one frame per tick.
    pub caller_track: Vec<i16>,
    /// What the caller heard (played from the queue, silence when empty), sample-aligned with
    /// `caller_track`.
    pub heard_track: Vec<i16>,
    /// `media` frames sent.
    pub media_frames_sent: u64,
    /// `media` messages received.
    pub media_msgs_received: u64,
    /// Audio received (ms).
    pub audio_ms_received: u64,
    /// `mark` messages received.
    pub marks_received: u64,
    /// `mark` echoes sent.
    pub marks_echoed: u64,
    /// `clear` messages received.
    pub clears: u64,
    /// Protocol warnings (also logged as [`CallerEventKind::Warning`]).
    pub warnings: u64,
    /// The close code and reason received, if the server sent a close frame.
    pub close: Option<(u16, String)>,
    /// Whether the bridge ended the call: it closed the socket (or it dropped) before the
    /// caller hung up.
    pub closed_by_bridge: bool,
    /// Keys the caller pressed ([`Step::Dtmf`]), in order.
    pub dtmf_sent: Vec<KeyPress>,
    /// Keys the bridge pressed on the line (SignalWire `dtmf` from the server), in order.
    pub dtmf_received: Vec<KeyPress>,
}

impl CallerReport {
    /// The keys the caller pressed, as one string (e.g. `"123#"`).
    pub fn digits_sent(&self) -> String {
        self.dtmf_sent.iter().map(|k| k.digit).collect()
    }

    /// The keys the bridge pressed on the line, as one string.
    pub fn digits_received(&self) -> String {
        self.dtmf_received.iter().map(|k| k.digit).collect()
    }
}

impl CallerReport {
    /// Writes a stereo 16-bit WAV at `sample_rate_hz`: left = what the caller said, right =
    /// what the caller heard, sample-aligned.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write_wav(&self, path: &Path) -> anyhow::Result<()> {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: self.sample_rate_hz,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w =
            hound::WavWriter::create(path, spec).with_context(|| format!("creating {}", path.display()))?;
        let len = self.caller_track.len().max(self.heard_track.len());
        for i in 0..len {
            w.write_sample(self.caller_track.get(i).copied().unwrap_or(0))?;
            w.write_sample(self.heard_track.get(i).copied().unwrap_or(0))?;
        }
        w.finalize()?;
        Ok(())
    }

    /// Log entries of one kind, by predicate.
    pub fn events(
        &self,
        mut pred: impl FnMut(&CallerEventKind) -> bool,
    ) -> impl Iterator<Item = &CallerLogEntry> {
        self.log.iter().filter(move |e| pred(&e.kind))
    }

    fn push(&mut self, kind: CallerEventKind) {
        self.log.push(CallerLogEntry { at: Instant::now(), kind });
    }
}

/// Runs the call to the end of its script (or until the server closes) and reports.
///
/// # Errors
/// If the connection fails, the format does not fit the dialect, or a wait step times out
/// (the message then summarises what was seen).
pub async fn run_call(cfg: CallerConfig) -> anyhow::Result<CallerReport> {
    check_format(cfg.dialect, cfg.format)?;
    let mut request =
        cfg.url.as_str().into_client_request().with_context(|| format!("bad URL {:?}", cfg.url))?;
    for (name, value) in &cfg.headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).with_context(|| format!("bad header name {name:?}"))?;
        let value = HeaderValue::from_str(value).with_context(|| format!("bad value for header {name}"))?;
        request.headers_mut().append(name, value);
    }
    let ws_config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", cfg.url))?
        .with_context(|| format!("connecting to {}", cfg.url))?;
    let (mut sink, mut stream) = ws.split();
    let mut call = Call::new(cfg)?;
    call.report.push(CallerEventKind::Connected);
    call.send_start();
    call.report.push(CallerEventKind::StartSent);

    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now(), FRAME);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let ended = loop {
        for text in call.out.drain(..) {
            sink.send(Message::text(text)).await.context("sending to the bridge")?;
        }
        tokio::select! {
            _ = ticker.tick() => match call.tick(Instant::now()) {
                Ok(Tick::Continue) => {}
                Ok(Tick::HangUp) => break End::HangUp,
                Err(e) => break End::Failed(e),
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => call.handle_text(text.as_str()),
                Some(Ok(Message::Binary(_))) => call.warn("binary frame from the bridge (Twilio rejects these: 31950)"),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => break End::ServerClosed(frame),
                Some(Err(e)) => {
                    call.warn(&format!("socket error: {e}"));
                    break End::ServerClosed(None);
                }
                None => break End::ServerClosed(None),
            },
        }
    };
    let failure = match ended {
        End::ServerClosed(frame) => {
            call.report.closed_by_bridge = true;
            call.closed(frame);
            // Flushes tungstenite's reply to the server's close frame.
            let _ = sink.close().await;
            None
        }
        End::HangUp | End::Failed(_) => {
            let failure = match ended {
                End::Failed(e) => Some(e),
                _ => {
                    call.send_stop();
                    call.report.push(CallerEventKind::HangUp);
                    None
                }
            };
            for text in call.out.drain(..) {
                let _ = sink.send(Message::text(text)).await;
            }
            let reason = if failure.is_none() { "" } else { "caller script failed" };
            let frame = CloseFrame { code: CloseCode::Normal, reason: reason.into() };
            let _ = sink.send(Message::Close(Some(frame))).await;
            let reply = tokio::time::timeout(CLOSE_TIMEOUT, async {
                loop {
                    match stream.next().await {
                        Some(Ok(Message::Close(frame))) => return frame,
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return None,
                    }
                }
            })
            .await;
            call.closed(reply.unwrap_or(None));
            failure
        }
    };
    call.finish();
    match failure {
        Some(e) => Err(e.context(call.summary())),
        None => Ok(call.report),
    }
}

/// How the main loop ended.
enum End {
    HangUp,
    ServerClosed(Option<CloseFrame>),
    Failed(anyhow::Error),
}

/// Result of one tick.
#[derive(Debug, PartialEq, Eq)]
enum Tick {
    Continue,
    HangUp,
}

fn check_format(dialect: CallerDialect, format: AudioFormat) -> anyhow::Result<()> {
    let ok = match (dialect, format.encoding) {
        (_, Encoding::Pcmu) => format.sample_rate_hz == 8000,
        (CallerDialect::SignalWire, Encoding::L16(_)) => matches!(format.sample_rate_hz, 16000 | 24000),
        _ => false,
    };
    if !ok {
        bail!(
            "{dialect:?} streams cannot use {format:?} (Twilio: μ-law 8 kHz; SignalWire: also L16 16/24 kHz)"
        );
    }
    Ok(())
}

/// The step being executed, holding only its own state.
#[derive(Debug)]
enum Active {
    Speak { clip: String, bytes: Vec<u8>, linear: Vec<i16>, pos: usize },
    Pause { frames_left: u64 },
    WaitHeard { from_ms: u64, min_ms: u64, deadline: Instant, timeout: Duration },
    WaitAgentDone { from_ms: u64, quiet_ms: u64, deadline: Instant, timeout: Duration },
    Dtmf { digits: VecDeque<char>, gap: Duration, next_at: Instant },
    WaitClose { deadline: Instant, timeout: Duration },
}

/// The caller's protocol and playback state, driven by the socket loop in [`run_call`].
struct Call {
    dialect: CallerDialect,
    format: AudioFormat,
    stream_sid: String,
    call_sid: String,
    account_sid: String,
    custom_parameters: BTreeMap<String, String>,
    frame_samples: usize,
    frame_bytes: usize,
    /// Last `sequenceNumber` used.
    seq: u64,
    /// Last media `chunk` used.
    chunk: u64,
    script: VecDeque<Step>,
    active: Option<Active>,
    queue: PlaybackQueue,
    /// Agent audio played so far (bytes).
    played_bytes: u64,
    /// Agent audio received so far (bytes).
    received_bytes: u64,
    /// Whether the caller has heard silence since the last agent audio arrived.
    starved: bool,
    /// Consecutive ms of empty playback.
    quiet_run_ms: u64,
    report: CallerReport,
    /// Messages to send, in order.
    out: Vec<String>,
    /// The media frame being built.
    frame_buf: Vec<u8>,
    /// Audio played this tick.
    play_buf: Vec<u8>,
    /// Marks due this tick.
    due: Vec<String>,
}

impl Call {
    fn new(cfg: CallerConfig) -> anyhow::Result<Self> {
        let account_sid = match cfg.dialect {
            CallerDialect::Twilio => IdGen::from_seed(seed_of(&cfg.call_sid)).hex_sid("AC"),
            CallerDialect::SignalWire => IdGen::from_seed(seed_of(&cfg.call_sid)).uuid(),
        };
        let frame_samples = (cfg.format.sample_rate_hz * FRAME_MS / 1000) as usize;
        if frame_samples == 0 {
            bail!("sample rate {} Hz is too low", cfg.format.sample_rate_hz);
        }
        Ok(Self {
            dialect: cfg.dialect,
            format: cfg.format,
            stream_sid: cfg.stream_sid,
            call_sid: cfg.call_sid,
            account_sid,
            custom_parameters: cfg.custom_parameters,
            frame_samples,
            frame_bytes: cfg.format.frame_bytes(),
            seq: 0,
            chunk: 0,
            script: cfg.script.into(),
            active: None,
            queue: PlaybackQueue::default(),
            played_bytes: 0,
            received_bytes: 0,
            starved: true,
            quiet_run_ms: 0,
            report: CallerReport { sample_rate_hz: cfg.format.sample_rate_hz, ..CallerReport::default() },
            out: Vec::new(),
            frame_buf: Vec::new(),
            play_buf: Vec::new(),
            due: Vec::new(),
        })
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    fn bytes_per_ms(&self) -> u64 {
        self.format.bytes_per_ms().max(1) as u64
    }

    fn heard_ms(&self) -> u64 {
        self.played_bytes / self.bytes_per_ms()
    }

    fn send(&mut self, msg: Value) {
        self.out.push(msg.to_string());
    }

    fn send_start(&mut self) {
        let version = match self.dialect {
            CallerDialect::Twilio => "1.0.0",
            CallerDialect::SignalWire => "0.2.0",
        };
        self.send(json!({"event": "connected", "protocol": "Call", "version": version}));
        let media_format = match self.format.encoding {
            Encoding::L16(_) => {
                json!({"encoding": "audio/x-L16", "sampleRate": self.format.sample_rate_hz, "channels": 1})
            }
            _ => json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}),
        };
        let mut start = json!({
            "streamSid": self.stream_sid,
            "accountSid": self.account_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": self.custom_parameters,
            "mediaFormat": media_format,
        });
        let seq = self.next_seq();
        let msg = match self.dialect {
            CallerDialect::Twilio => {
                json!({"event": "start", "sequenceNumber": seq, "streamSid": self.stream_sid, "start": start})
            }
            CallerDialect::SignalWire => {
                // SignalWire documents customParameters as present only when set.
                if self.custom_parameters.is_empty()
                    && let Some(obj) = start.as_object_mut()
                {
                    obj.remove("customParameters");
                }
                json!({"event": "start", "sequenceNumber": seq, "start": start})
            }
        };
        self.send(msg);
    }

    fn send_stop(&mut self) {
        let seq = self.next_seq();
        let msg = match self.dialect {
            CallerDialect::Twilio => json!({
                "event": "stop",
                "sequenceNumber": seq,
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }),
            CallerDialect::SignalWire => json!({"event": "stop", "sequenceNumber": seq}),
        };
        self.send(msg);
    }

    fn echo_mark(&mut self, name: String, flushed: bool) {
        let msg = match self.dialect {
            CallerDialect::Twilio => {
                let seq = self.next_seq();
                json!({"event": "mark", "sequenceNumber": seq, "streamSid": self.stream_sid, "mark": {"name": name}})
            }
            CallerDialect::SignalWire => {
                json!({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            }
        };
        self.send(msg);
        self.report.marks_echoed += 1;
        self.report.push(CallerEventKind::MarkEchoed { name, flushed });
    }

    fn warn(&mut self, message: &str) {
        tracing::warn!(message, "sim caller: protocol warning");
        self.report.warnings += 1;
        self.report.push(CallerEventKind::Warning { message: message.to_owned() });
    }

    /// One 20 ms tick: advance the script, send one media frame, play 20 ms from the queue.
    /// Waits see playback up to the previous tick, so both tracks always grow together.
    fn tick(&mut self, now: Instant) -> anyhow::Result<Tick> {
        let frame_samples = self.frame_samples;
        let silence = self.format.silence_byte();
        self.frame_buf.clear();
        loop {
            let Some(active) = self.active.as_mut() else {
                match self.script.pop_front() {
                    None | Some(Step::HangUp) => return Ok(Tick::HangUp),
                    Some(step) => {
                        self.begin(step, now)?;
                        continue;
                    }
                }
            };
            match active {
                Active::Speak { clip, bytes, linear, pos } => {
                    let end = (*pos + frame_samples).min(linear.len());
                    let bps = bytes.len() / linear.len().max(1);
                    self.frame_buf.extend_from_slice(&bytes[*pos * bps..end * bps]);
                    self.report.caller_track.extend_from_slice(&linear[*pos..end]);
                    self.report
                        .caller_track
                        .resize(self.report.caller_track.len() + frame_samples - (end - *pos), 0);
                    *pos = end;
                    if end >= linear.len() {
                        let clip = std::mem::take(clip);
                        self.report.push(CallerEventKind::SpeakEnd { clip });
                        self.active = None;
                    }
                    break;
                }
                Active::Pause { frames_left } => {
                    if *frames_left == 0 {
                        self.active = None;
                        continue;
                    }
                    *frames_left -= 1;
                }
                Active::WaitHeard { from_ms, min_ms, deadline, timeout } => {
                    let heard = self.played_bytes / self.format.bytes_per_ms().max(1) as u64 - *from_ms;
                    if heard >= *min_ms {
                        self.active = None;
                        continue;
                    }
                    if now >= *deadline {
                        bail!(
                            "WaitHeard timed out after {timeout:?}: heard {heard} of {min_ms} ms of agent audio"
                        );
                    }
                }
                Active::Dtmf { digits, gap, next_at } => {
                    if now >= *next_at
                        && let Some(digit) = digits.pop_front()
                    {
                        let gap = *gap;
                        *next_at += gap;
                        let last = digits.is_empty();
                        self.send_dtmf(digit, gap, now);
                        if last {
                            self.active = None;
                            continue;
                        }
                    }
                }
                Active::WaitClose { deadline, timeout } => {
                    if now >= *deadline {
                        bail!("WaitClose timed out after {timeout:?}: the bridge did not close the stream");
                    }
                }
                Active::WaitAgentDone { from_ms, quiet_ms, deadline, timeout } => {
                    let heard = self.played_bytes / self.format.bytes_per_ms().max(1) as u64 > *from_ms;
                    if heard && self.queue.is_empty() && self.quiet_run_ms >= *quiet_ms {
                        self.active = None;
                        continue;
                    }
                    if now >= *deadline {
                        bail!(
                            "WaitAgentDone timed out after {timeout:?} (agent audio heard: {heard}, queued: {} bytes)",
                            self.queue.len()
                        );
                    }
                }
            }
            // A waiting step: silence this frame.
            self.report.caller_track.resize(self.report.caller_track.len() + frame_samples, 0);
            break;
        }
        self.frame_buf.resize(self.frame_bytes, silence);
        self.send_media();
        self.play_frame();
        Ok(Tick::Continue)
    }

    /// Starts a step (never [`Step::HangUp`], which the caller of this handles).
    fn begin(&mut self, step: Step, now: Instant) -> anyhow::Result<()> {
        self.active = match step {
            Step::Speak(clip) => {
                let converted = convert_ulaw_clip(clip.ulaw, self.format)
                    .with_context(|| format!("converting clip {} to {:?}", clip.name, self.format))?;
                self.report.push(CallerEventKind::SpeakBegin { clip: clip.name.to_owned() });
                if converted.linear.is_empty() {
                    self.report.push(CallerEventKind::SpeakEnd { clip: clip.name.to_owned() });
                    None
                } else {
                    Some(Active::Speak {
                        clip: clip.name.to_owned(),
                        bytes: converted.bytes,
                        linear: converted.linear,
                        pos: 0,
                    })
                }
            }
            Step::Pause(d) => {
                Some(Active::Pause { frames_left: d.as_millis().div_ceil(FRAME.as_millis()) as u64 })
            }
            Step::WaitHeard { min_ms, timeout } => {
                Some(Active::WaitHeard { from_ms: self.heard_ms(), min_ms, deadline: now + timeout, timeout })
            }
            Step::WaitAgentDone { quiet, timeout } => Some(Active::WaitAgentDone {
                from_ms: self.heard_ms(),
                quiet_ms: quiet.as_millis() as u64,
                deadline: now + timeout,
                timeout,
            }),
            Step::Dtmf { digits, gap } => {
                if let Some(bad) = digits.chars().find(|c| !is_dtmf_digit(*c)) {
                    bail!("Step::Dtmf: {bad:?} is not a phone key (0-9, *, #, A-D)");
                }
                let digits: VecDeque<char> = digits.chars().collect();
                (!digits.is_empty()).then_some(Active::Dtmf { digits, gap, next_at: now })
            }
            Step::WaitClose { timeout } => Some(Active::WaitClose { deadline: now + timeout, timeout }),
            Step::HangUp => None,
        };
        Ok(())
    }

    /// Sends one key press in the dialect's shape; `gap` bounds SignalWire's `duration`.
    fn send_dtmf(&mut self, digit: char, gap: Duration, now: Instant) {
        let seq = self.next_seq();
        let msg = match self.dialect {
            CallerDialect::Twilio => json!({
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": seq,
                "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
            }),
            CallerDialect::SignalWire => {
                let duration = DTMF_PRESS_MS.min(gap.as_millis() as u64).max(1);
                json!({
                    "event": "dtmf",
                    "sequenceNumber": seq,
                    "streamSid": self.stream_sid,
                    "dtmf": {"digit": digit.to_string(), "duration": duration},
                })
            }
        };
        self.send(msg);
        self.report.dtmf_sent.push(KeyPress { at: now, digit });
    }

    fn send_media(&mut self) {
        self.chunk += 1;
        let seq = self.next_seq();
        let media = json!({
            "track": "inbound",
            "chunk": self.chunk.to_string(),
            // Matches the reference's examples: chunk n carries timestamp n × 20 ms.
            "timestamp": (self.chunk * u64::from(FRAME_MS)).to_string(),
            "payload": BASE64.encode(&self.frame_buf),
        });
        let msg = match self.dialect {
            CallerDialect::Twilio => {
                json!({"event": "media", "sequenceNumber": seq, "streamSid": self.stream_sid, "media": media})
            }
            CallerDialect::SignalWire => json!({"event": "media", "sequenceNumber": seq, "media": media}),
        };
        self.send(msg);
        self.report.media_frames_sent += 1;
    }

    /// Plays 20 ms from the queue into `heard_track` (silence for what is missing) and echoes
    /// the marks that playback has passed.
    fn play_frame(&mut self) {
        let mut bytes = std::mem::take(&mut self.play_buf);
        bytes.clear();
        let mut due = std::mem::take(&mut self.due);
        let align = self.format.bytes_per_sample();
        let played = self.queue.play(self.frame_bytes, align, &mut bytes, &mut due);
        self.played_bytes += played as u64;
        let track = &mut self.report.heard_track;
        let before = track.len();
        decode_to_linear(self.format, &bytes, track);
        track.resize(before + self.frame_samples, 0);
        if played < self.frame_bytes {
            self.starved = true;
        }
        if played == 0 {
            self.quiet_run_ms += u64::from(FRAME_MS);
        } else {
            self.quiet_run_ms = 0;
        }
        for name in due.drain(..) {
            self.echo_mark(name, false);
        }
        self.due = due;
        self.play_buf = bytes;
    }

    /// Checks that `msg` has exactly `keys` and, if it has one, our `streamSid`.
    fn check_shape(&mut self, msg: &Value, event: &str, keys: &[&str]) {
        let Some(obj) = msg.as_object() else { return };
        let mut extra: Vec<&str> = obj.keys().map(String::as_str).filter(|k| !keys.contains(k)).collect();
        let missing: Vec<&str> = keys.iter().copied().filter(|k| !obj.contains_key(*k)).collect();
        if !extra.is_empty() || !missing.is_empty() {
            extra.sort_unstable();
            self.warn(&format!("{event}: extra fields {extra:?}, missing fields {missing:?} (Twilio 31951)"));
        }
        if let Some(sid) = obj.get("streamSid")
            && sid.as_str() != Some(self.stream_sid.as_str())
        {
            self.warn(&format!("{event}: wrong streamSid {sid}"));
        }
    }

    /// One text message from the bridge.
    fn handle_text(&mut self, text: &str) {
        let msg: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return self.warn(&format!("invalid JSON from the bridge: {e}")),
        };
        let event = msg.get("event").and_then(Value::as_str).unwrap_or("").to_owned();
        match event.as_str() {
            "media" => {
                self.check_shape(&msg, "media", &["event", "streamSid", "media"]);
                let inner = &msg["media"];
                if inner.as_object().is_some_and(|m| m.len() != 1) {
                    self.warn("media: `media` must hold only `payload` (Twilio 31951)");
                }
                let Some(payload) = inner.get("payload").and_then(Value::as_str) else {
                    return self.warn("media without media.payload");
                };
                let bytes = match BASE64.decode(payload) {
                    Ok(b) => b,
                    Err(e) => return self.warn(&format!("media payload is not base64: {e}")),
                };
                if bytes.len() % self.format.bytes_per_sample() != 0 {
                    self.warn("media payload is not a whole number of samples");
                }
                self.report.media_msgs_received += 1;
                if self.report.media_msgs_received == 1 {
                    self.report.push(CallerEventKind::FirstAgentAudio);
                } else if self.starved && self.queue.is_empty() && !bytes.is_empty() {
                    self.report.push(CallerEventKind::AgentAudioAfterSilence);
                }
                if !bytes.is_empty() {
                    self.starved = false;
                }
                self.received_bytes += bytes.len() as u64;
                self.queue.push_audio(&bytes);
            }
            "mark" => {
                self.check_shape(&msg, "mark", &["event", "streamSid", "mark"]);
                let Some(name) = msg["mark"].get("name").and_then(Value::as_str) else {
                    return self.warn("mark without mark.name");
                };
                self.report.marks_received += 1;
                if let Some(name) = self.queue.push_mark(name.to_owned()) {
                    self.echo_mark(name, false);
                }
            }
            "clear" => {
                self.check_shape(&msg, "clear", &["event", "streamSid"]);
                let mut flushed = Vec::new();
                let dropped = self.queue.clear(&mut flushed);
                self.report.clears += 1;
                let dropped_ms = dropped as u64 / self.bytes_per_ms();
                self.report.push(CallerEventKind::ClearReceived { dropped_ms });
                for name in flushed {
                    self.echo_mark(name, true);
                }
            }
            "dtmf" if self.dialect == CallerDialect::SignalWire => {
                self.check_shape(&msg, "dtmf", &["event", "streamSid", "dtmf"]);
                let digit = msg["dtmf"].get("digit").and_then(Value::as_str).unwrap_or_default();
                let mut chars = digit.chars();
                match (chars.next(), chars.next()) {
                    (Some(d), None) if is_dtmf_digit(d) => {
                        self.report.dtmf_received.push(KeyPress { at: Instant::now(), digit: d });
                    }
                    _ => self.warn(&format!("dtmf: {digit:?} is not one phone key")),
                }
            }
            "" => self.warn("message without an `event`"),
            other => self.warn(&format!("unexpected event {other:?} from the bridge")),
        }
    }

    fn closed(&mut self, frame: Option<CloseFrame>) {
        let (code, reason) = match frame {
            Some(f) => {
                let close = (u16::from(f.code), f.reason.to_string());
                self.report.close = Some(close.clone());
                close
            }
            None => (1006, "closed without a close frame".to_owned()),
        };
        self.report.push(CallerEventKind::Closed { code, reason });
    }

    fn finish(&mut self) {
        self.report.audio_ms_received = self.received_bytes / self.bytes_per_ms();
    }

    /// A one-line account of the call, for error messages.
    fn summary(&self) -> String {
        let last: Vec<String> =
            self.report.log.iter().rev().take(6).rev().map(|e| format!("{:?}", e.kind)).collect();
        format!(
            "call {}: sent {} frames, received {} media ({} ms), {} marks, {} clears, {} warnings; last events: {}",
            self.call_sid,
            self.report.media_frames_sent,
            self.report.media_msgs_received,
            self.report.audio_ms_received,
            self.report.marks_received,
            self.report.clears,
            self.report.warnings,
            last.join(", ")
        )
    }
}

/// Whether `c` is a key a phone line carries as DTMF.
fn is_dtmf_digit(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// A stable seed from a string (FNV-1a), so the derived account SID is the same per call SID.
fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fixtures;

    fn call(script: Vec<Step>) -> Call {
        let mut cfg = CallerConfig::twilio("ws://127.0.0.1:1/media", script);
        cfg.stream_sid = "MZ1".into();
        Call::new(cfg).unwrap()
    }

    fn sent(c: &mut Call) -> Vec<Value> {
        c.out.drain(..).map(|t| serde_json::from_str(&t).unwrap()).collect()
    }

    fn media(payload: &[u8]) -> String {
        json!({"event": "media", "streamSid": "MZ1", "media": {"payload": BASE64.encode(payload)}})
            .to_string()
    }

    #[test]
    fn start_and_media_have_the_twilio_shape() {
        let clip = fixtures::clip("caller_question").unwrap();
        let mut c = call(vec![Step::Speak(clip.clone())]);
        c.send_start();
        let now = Instant::now();
        assert_eq!(c.tick(now).unwrap(), Tick::Continue);
        assert_eq!(c.tick(now).unwrap(), Tick::Continue);
        let msgs = sent(&mut c);
        assert_eq!(msgs[0], json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}));
        assert_eq!(msgs[1]["sequenceNumber"], "1");
        assert_eq!(msgs[1]["start"]["mediaFormat"]["sampleRate"], 8000);
        assert!(msgs[1]["start"]["accountSid"].as_str().unwrap().starts_with("AC"));
        assert_eq!(msgs[2]["sequenceNumber"], "2");
        assert_eq!(msgs[3]["media"]["chunk"], "2");
        assert_eq!(msgs[3]["media"]["timestamp"], "40");
        let payload = BASE64.decode(msgs[3]["media"]["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload, clip.ulaw[160..320]);
        assert_eq!(c.report.caller_track.len(), 320);
        assert_eq!(c.report.heard_track.len(), 320);
    }

    #[test]
    fn playback_echoes_marks_and_clear_flushes_them() {
        let mut c = call(vec![Step::Pause(Duration::from_secs(10))]);
        let now = Instant::now();
        c.handle_text(&media(&[0x80; 200]));
        c.handle_text(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m1"}}"#);
        c.handle_text(&media(&[0x80; 400]));
        c.handle_text(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m2"}}"#);
        c.tick(now).unwrap();
        assert!(sent(&mut c).iter().all(|m| m["event"] == "media"));
        c.tick(now).unwrap();
        let echoes: Vec<Value> = sent(&mut c).into_iter().filter(|m| m["event"] == "mark").collect();
        assert_eq!(echoes.len(), 1);
        assert_eq!(echoes[0]["mark"]["name"], "m1");
        assert_eq!(echoes[0]["streamSid"], "MZ1");
        c.handle_text(r#"{"event":"clear","streamSid":"MZ1"}"#);
        let echoes = sent(&mut c);
        assert_eq!(echoes.len(), 1);
        assert_eq!(echoes[0]["mark"]["name"], "m2");
        assert!(
            c.report
                .log
                .iter()
                .any(|e| e.kind == CallerEventKind::MarkEchoed { name: "m2".into(), flushed: true })
        );
        assert!(c.report.log.iter().any(|e| e.kind == CallerEventKind::ClearReceived { dropped_ms: 35 }));
        // Heard: 320 bytes of audio, aligned with what was said.
        assert_eq!(c.heard_ms(), 40);
        assert_eq!(c.report.heard_track.len(), c.report.caller_track.len());
        assert_eq!(c.report.warnings, 0);
    }

    #[test]
    fn malformed_or_extra_fields_are_warnings_not_failures() {
        let mut c = call(vec![]);
        c.handle_text("nope");
        c.handle_text(r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AAAA","track":"outbound"}}"#);
        c.handle_text(r#"{"event":"mark","streamSid":"MZ2","mark":{"name":"x"}}"#);
        c.handle_text(r#"{"event":"hello"}"#);
        assert_eq!(c.report.warnings, 4);
        assert_eq!(c.report.media_msgs_received, 1);
    }

    #[test]
    fn waits_time_out_and_wait_agent_done_needs_audio_then_quiet() {
        let mut c = call(vec![Step::WaitAgentDone {
            quiet: Duration::from_millis(40),
            timeout: Duration::from_secs(1),
        }]);
        let t0 = Instant::now();
        c.tick(t0).unwrap();
        c.handle_text(&media(&[0x80; 160]));
        c.tick(t0).unwrap(); // plays it
        c.tick(t0).unwrap(); // heard; quiet 20 after this tick
        c.tick(t0).unwrap(); // quiet 40 after this tick
        // Done, and the script has nothing more, so the call hangs up.
        assert_eq!(c.tick(t0).unwrap(), Tick::HangUp);

        let mut c = call(vec![Step::WaitHeard { min_ms: 100, timeout: Duration::from_millis(50) }]);
        c.tick(t0).unwrap();
        let err = c.tick(t0 + Duration::from_millis(60)).unwrap_err();
        assert!(err.to_string().contains("WaitHeard timed out"), "{err}");
    }

    #[test]
    fn signalwire_l16_frames_and_wav() {
        let l16 = AudioFormat {
            encoding: Encoding::L16(crate::core::audio::ByteOrder::Little),
            sample_rate_hz: 16000,
        };
        assert!(check_format(CallerDialect::Twilio, l16).is_err());
        let clip = fixtures::clip("caller_followup").unwrap();
        let mut c = Call::new(CallerConfig::signalwire("ws://x", l16, vec![Step::Speak(clip)])).unwrap();
        c.send_start();
        c.tick(Instant::now()).unwrap();
        let msgs = sent(&mut c);
        assert_eq!(msgs[0]["version"], "0.2.0");
        assert!(msgs[1].get("streamSid").is_none());
        assert!(msgs[1]["start"].get("customParameters").is_none());
        assert_eq!(msgs[1]["start"]["mediaFormat"]["encoding"], "audio/x-L16");
        assert_eq!(msgs[1]["start"]["mediaFormat"]["sampleRate"], 16000);
        assert!(msgs[2].get("streamSid").is_none());
        assert_eq!(BASE64.decode(msgs[2]["media"]["payload"].as_str().unwrap()).unwrap().len(), 640);
        let path = std::env::temp_dir().join(format!("callbridge-sim-{}.wav", std::process::id()));
        c.report.write_wav(&path).unwrap();
        let r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.spec().channels, 2);
        assert_eq!(r.spec().sample_rate, 16000);
        assert_eq!(r.len(), 640);
        let _ = std::fs::remove_file(path);
    }

    /// A minimal fake bridge: answers the caller's audio with 200 ms of audio and mark `a`;
    /// after `a` is echoed, sends 1 s of audio, mark `b`, and a `clear` 200 ms later.
    async fn fake_bridge(listener: tokio::net::TcpListener) -> Vec<Value> {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut received = Vec::new();
        let mut media_in = 0;
        let send = |v: Value| Message::text(v.to_string());
        let audio = |n: usize| json!({"event": "media", "streamSid": "MZ1", "media": {"payload": BASE64.encode(vec![0x80; n])}});
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            match v["event"].as_str().unwrap() {
                "media" => {
                    media_in += 1;
                    if media_in == 5 {
                        ws.send(send(audio(1600))).await.unwrap();
                        ws.send(send(json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": "a"}})))
                            .await
                            .unwrap();
                    }
                }
                "mark" if v["mark"]["name"] == "a" => {
                    for _ in 0..50 {
                        ws.send(send(audio(160))).await.unwrap();
                    }
                    ws.send(send(json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": "b"}})))
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    ws.send(send(json!({"event": "clear", "streamSid": "MZ1"}))).await.unwrap();
                }
                _ => {}
            }
            received.push(v);
        }
        received
    }

    #[tokio::test]
    async fn run_call_against_a_fake_bridge() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/media/twilio", listener.local_addr().unwrap());
        let bridge = tokio::spawn(fake_bridge(listener));
        let wait = |min_ms| Step::WaitHeard { min_ms, timeout: Duration::from_secs(3) };
        let mut cfg =
            CallerConfig::twilio(url, vec![wait(200), wait(100), Step::Pause(Duration::from_millis(300))]);
        cfg.stream_sid = "MZ1".into();
        cfg.headers.push(("X-Twilio-Signature".into(), "sig".into()));
        let report = run_call(cfg).await.unwrap();
        let received = bridge.await.unwrap();

        assert_eq!(report.warnings, 0, "{:?}", report.log);
        assert_eq!((report.marks_received, report.marks_echoed, report.clears), (2, 2, 1));
        let echoed: Vec<_> = report
            .events(|k| matches!(k, CallerEventKind::MarkEchoed { .. }))
            .map(|e| e.kind.clone())
            .collect();
        assert_eq!(
            echoed,
            [
                CallerEventKind::MarkEchoed { name: "a".into(), flushed: false },
                CallerEventKind::MarkEchoed { name: "b".into(), flushed: true },
            ]
        );
        assert_eq!(report.audio_ms_received, 1200);
        assert_eq!(report.close, Some((1000, String::new())));
        assert_eq!(report.caller_track.len(), report.heard_track.len());
        assert_eq!(report.caller_track.len() as u64, report.media_frames_sent * 160);
        assert_eq!(report.events(|k| *k == CallerEventKind::FirstAgentAudio).count(), 1);
        // The bridge saw connected, start, media… and a final stop with the Twilio shape.
        assert_eq!(received[0]["event"], "connected");
        assert_eq!(received[1]["event"], "start");
        let stop = received.last().unwrap();
        assert_eq!(stop["event"], "stop");
        assert_eq!(stop["stop"]["callSid"], received[1]["start"]["callSid"]);
        let seqs: Vec<u64> =
            received[1..].iter().map(|m| m["sequenceNumber"].as_str().unwrap().parse().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers advance by one");
    }

    /// Every message `c` sent, decoded by the bridge's own provider codec.
    fn bridge_reads(
        dialect: crate::core::telephony::Dialect,
        msgs: &[Value],
    ) -> Vec<(Option<char>, Option<u32>)> {
        use crate::core::telephony::{ProviderCodec, ProviderEvent};
        let mut codec = ProviderCodec::new(dialect, 1 << 20);
        msgs.iter()
            .map(|m| {
                let text = m.to_string();
                match codec.decode(&text) {
                    Ok(ProviderEvent::Dtmf { digit, duration_ms }) => (Some(digit), duration_ms),
                    Ok(_) => (None, None),
                    Err(e) => panic!("the bridge cannot decode {text}: {e}"),
                }
            })
            .collect()
    }

    #[test]
    fn dtmf_keys_go_out_between_media_frames_at_the_gap() {
        use crate::core::telephony::Dialect;
        let gap = Duration::from_millis(40);
        let mut c =
            call(vec![Step::Dtmf { digits: "12#".into(), gap }, Step::Pause(Duration::from_millis(40))]);
        c.send_start();
        let t0 = Instant::now();
        let mut ticks = 0;
        while c.tick(t0 + FRAME * ticks).unwrap() == Tick::Continue {
            ticks += 1;
        }
        let msgs = sent(&mut c);
        // Media never stops: one frame per tick. Keys at 0, 40 and 80 ms; the 40 ms pause starts
        // in the tick of the last key.
        let media = msgs.iter().filter(|m| m["event"] == "media").count();
        assert_eq!(media as u32, ticks);
        assert_eq!(ticks, 6);
        let kinds: Vec<&str> = msgs[2..].iter().map(|m| m["event"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["dtmf", "media", "media", "dtmf", "media", "media", "dtmf", "media", "media"]);
        let dtmf: Vec<&Value> = msgs.iter().filter(|m| m["event"] == "dtmf").collect();
        assert_eq!(
            *dtmf[0],
            json!({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "2",
                   "dtmf": {"track": "inbound_track", "digit": "1"}})
        );
        let read: Vec<_> =
            bridge_reads(Dialect::Twilio, &msgs).into_iter().filter_map(|(d, n)| d.map(|d| (d, n))).collect();
        assert_eq!(read, [('1', None), ('2', None), ('#', None)]);
        // sequenceNumber counts every message after `connected`.
        let seqs: Vec<u64> =
            msgs[1..].iter().map(|m| m["sequenceNumber"].as_str().unwrap().parse().unwrap()).collect();
        assert!(seqs.iter().enumerate().all(|(i, s)| *s == i as u64 + 1), "{seqs:?}");
        assert_eq!(c.report.digits_sent(), "12#");
        let at: Vec<Duration> = c.report.dtmf_sent.iter().map(|k| k.at - t0).collect();
        assert_eq!(at, [Duration::ZERO, gap, gap * 2]);
        assert_eq!(c.report.caller_track.len(), c.report.heard_track.len());
    }

    #[test]
    fn signalwire_keys_carry_a_duration_and_bad_keys_fail() {
        use crate::core::telephony::Dialect;
        let script = vec![Step::Dtmf { digits: "9*".into(), gap: Duration::from_millis(100) }];
        let mut c = Call::new(CallerConfig::signalwire("ws://x", AudioFormat::PCMU_8K, script)).unwrap();
        c.send_start();
        let t0 = Instant::now();
        for i in 0..6 {
            c.tick(t0 + FRAME * i).unwrap();
        }
        let msgs = sent(&mut c);
        let dtmf: Vec<&Value> = msgs.iter().filter(|m| m["event"] == "dtmf").collect();
        assert_eq!(dtmf.len(), 2);
        assert_eq!(dtmf[0]["dtmf"], json!({"digit": "9", "duration": 100}));
        assert_eq!(dtmf[0]["streamSid"], c.stream_sid.as_str());
        assert!(dtmf[0]["sequenceNumber"].is_string());
        let read: Vec<_> = bridge_reads(Dialect::SignalWire, &msgs)
            .into_iter()
            .filter_map(|(d, n)| d.map(|d| (d, n)))
            .collect();
        assert_eq!(read, [('9', Some(100)), ('*', Some(100))]);

        let mut c = call(vec![Step::Dtmf { digits: "1x".into(), gap: Duration::from_millis(100) }]);
        let err = c.tick(t0).unwrap_err();
        assert!(err.to_string().contains("'x' is not a phone key"), "{err}");
    }

    #[test]
    fn wait_close_times_out_and_keys_from_the_bridge_are_recorded() {
        let mut c = call(vec![Step::WaitClose { timeout: Duration::from_millis(50) }]);
        let t0 = Instant::now();
        assert_eq!(c.tick(t0).unwrap(), Tick::Continue);
        assert_eq!(c.tick(t0 + Duration::from_millis(40)).unwrap(), Tick::Continue);
        let err = c.tick(t0 + Duration::from_millis(60)).unwrap_err();
        assert!(err.to_string().contains("WaitClose timed out"), "{err}");
        assert_eq!(c.report.media_frames_sent, 2);

        let script = vec![Step::Pause(Duration::from_secs(1))];
        let mut c = Call::new(CallerConfig::signalwire("ws://x", AudioFormat::PCMU_8K, script)).unwrap();
        let sid = c.stream_sid.clone();
        for d in ["5", "#", "55"] {
            c.handle_text(&json!({"event": "dtmf", "streamSid": sid, "dtmf": {"digit": d}}).to_string());
        }
        assert_eq!(c.report.digits_received(), "5#");
        assert_eq!(c.report.warnings, 1, "{:?}", c.report.log);
    }

    /// The bridge hangs up: a fake bridge closes the socket after 10 media frames, and a caller
    /// in `WaitClose` ends cleanly with the close recorded.
    #[tokio::test]
    async fn wait_close_ends_when_the_bridge_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/media/twilio", listener.local_addr().unwrap());
        let bridge = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut events = Vec::new();
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                events.push(v["event"].as_str().unwrap().to_owned());
                if events.iter().filter(|e| *e == "media").count() == 10 {
                    let frame = CloseFrame { code: CloseCode::Normal, reason: "agent hung up".into() };
                    ws.close(Some(frame)).await.unwrap();
                    break;
                }
            }
            events
        });
        let script = vec![
            Step::Dtmf { digits: "42".into(), gap: Duration::from_millis(60) },
            Step::WaitClose { timeout: Duration::from_secs(5) },
        ];
        let report = run_call(CallerConfig::twilio(url, script)).await.unwrap();
        let events = bridge.await.unwrap();
        assert!(report.closed_by_bridge);
        assert_eq!(report.close, Some((1000, "agent hung up".to_owned())));
        assert_eq!(report.digits_sent(), "42");
        assert!(report.log.iter().any(|e| matches!(&e.kind, CallerEventKind::Closed { code: 1000, .. })));
        assert!(!report.log.iter().any(|e| e.kind == CallerEventKind::HangUp), "the caller never hung up");
        assert_eq!(events.iter().filter(|e| *e == "dtmf").count(), 2);
        assert!(!events.contains(&"stop".to_owned()));
    }
}
