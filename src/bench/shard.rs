//! One shard: a single task that drives a contiguous block of calls (16 by default). It
//! launches their connects on the ramp schedule, owns every call's write half, reads all their
//! read halves through one [`SelectAll`], and on each tick of one 20 ms ticker sends the due
//! shared frame on every live call and plays 20 ms of what each call received.
//!
//! Frame `k` of a call is due at the shard's tick `first_tick + k`; ticks are on an absolute
//! schedule (`MissedTickBehavior::Burst`), so a late harness catches up instead of drifting,
//! and the lateness shows in the send-lag histogram.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, SelectAll, SplitSink, SplitStream};
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::latency::{self, RoundTrip};
use super::wire::{self, BargeIn, BenchProvider, CallIds, FromBridge};
use crate::sim::playback::Playback;

/// Frame period of a media stream.
pub(crate) const FRAME: Duration = Duration::from_millis(crate::core::audio::FRAME_MS as u64);

/// Time allowed for TCP connect + WebSocket handshake of one call.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Read chunk per socket (bytes). tungstenite zero-fills its read buffer to this size before
/// every read, so the 128 KiB default cost more CPU than everything else together; a media
/// message is about 330 bytes (L16 16 kHz: about 1 KiB) and larger ones still fit.
const READ_BUFFER: usize = 4 * 1024;

/// Bytes buffered for writing before a send writes through (each send flushes anyway).
const WRITE_BUFFER: usize = 4 * 1024;

/// After the hold: media stops, playback and mark echoes go on this long so audio in flight
/// comes back before loss is counted.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// With `--barge-in`: a speech onset with no `clear` within this long counts as missed.
pub(crate) const BARGE_IN_TIMEOUT: Duration = Duration::from_secs(2);

/// After `stop` and our close frame: how long to wait for the server's close.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The hold window, set by the controller once every connect has resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Start of the hold; latency samples count from here.
    pub hold_start: Instant,
    /// End of the hold: no frame due at or after it is sent.
    pub hold_end: Instant,
}

/// Everything shards share for one run.
pub(crate) struct Plan {
    /// Media-stream URL of the bridge.
    pub url: String,
    /// Dialect and format.
    pub provider: BenchProvider,
    /// Frame `k` of every call (shared: a clone is a reference-count bump).
    pub frames: Vec<Message>,
    /// The `connected` message.
    pub connected: Message,
    /// `--barge-in`: the speech/silence cycle of `frames`, whose onsets are timed.
    pub barge_in: Option<BargeIn>,
    /// Seed of the per-call ids.
    pub seed: u64,
    /// First call's start; call `i` starts at `t_start + i · ramp_interval`.
    pub t_start: Instant,
    /// Time between call starts.
    pub ramp_interval: Duration,
    /// The hold window, once known.
    pub window: OnceLock<Window>,
    /// Connect attempts that have succeeded or failed.
    pub resolved: AtomicUsize,
    /// Calls streaming media right now (connected, not ended, not hung up).
    pub live: AtomicUsize,
}

impl Plan {
    /// When call `i` starts.
    pub(crate) fn start_of(&self, i: usize) -> Instant {
        self.t_start + self.ramp_interval.mul_f64(i as f64)
    }
}

/// What one shard (or, merged, a whole run) saw.
#[derive(Debug)]
pub(crate) struct ShardReport {
    /// Connect attempts.
    pub started: u64,
    /// Calls that streamed until the hang-up and sent `stop`.
    pub completed: u64,
    /// Failed calls by reason.
    pub failed: BTreeMap<String, u64>,
    /// `media` frames sent.
    pub frames_sent: u64,
    /// `media` messages received.
    pub frames_received: u64,
    /// Audio bytes sent.
    pub bytes_sent: u64,
    /// Audio bytes received.
    pub bytes_received: u64,
    /// Frames lost by completed calls (sent − received at hang-up).
    pub frames_lost: u64,
    /// `mark` messages received.
    pub marks_received: u64,
    /// `mark` echoes sent.
    pub marks_echoed: u64,
    /// `clear` messages received.
    pub clears: u64,
    /// Messages that were not `media`/`mark`/`clear` text (or not JSON).
    pub unexpected: u64,
    /// Received frames beyond what was sent (no latency sample possible).
    pub unmatched: u64,
    /// Hung-up calls whose server close did not arrive in time.
    pub close_timeouts: u64,
    /// Added round-trip latency per received frame in the hold window and grace (µs).
    pub latency: Histogram<u64>,
    /// Actual send time − due time of every frame (µs).
    pub lag: Histogram<u64>,
    /// `--barge-in`: speech onsets sent from the hold start on and resolved (a `clear` came, or
    /// none within [`BARGE_IN_TIMEOUT`]); onsets still waiting at the hang-up are not counted.
    pub barge_in_onsets: u64,
    /// Resolved onsets with no `clear` within [`BARGE_IN_TIMEOUT`].
    pub barge_in_missed: u64,
    /// Onset sent → `clear` received, per resolved onset that got one (µs).
    pub barge_in: Histogram<u64>,
}

impl ShardReport {
    pub(crate) fn new() -> Self {
        Self {
            started: 0,
            completed: 0,
            failed: BTreeMap::new(),
            frames_sent: 0,
            frames_received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            frames_lost: 0,
            marks_received: 0,
            marks_echoed: 0,
            clears: 0,
            unexpected: 0,
            unmatched: 0,
            close_timeouts: 0,
            latency: latency::histogram(),
            lag: latency::histogram(),
            barge_in_onsets: 0,
            barge_in_missed: 0,
            barge_in: latency::histogram(),
        }
    }

    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: &ShardReport) {
        self.started += other.started;
        self.completed += other.completed;
        for (k, v) in &other.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        self.frames_sent += other.frames_sent;
        self.frames_received += other.frames_received;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.frames_lost += other.frames_lost;
        self.marks_received += other.marks_received;
        self.marks_echoed += other.marks_echoed;
        self.clears += other.clears;
        self.unexpected += other.unexpected;
        self.unmatched += other.unmatched;
        self.close_timeouts += other.close_timeouts;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.lag.add(&other.lag);
        let _ = self.barge_in.add(&other.barge_in);
        self.barge_in_onsets += other.barge_in_onsets;
        self.barge_in_missed += other.barge_in_missed;
    }

    /// A speech onset sent at `at` is resolved at `now`: a `clear` came (`cleared`) or not.
    fn barge_in_resolved(&mut self, at: Instant, now: Instant, cleared: bool) {
        self.barge_in_onsets += 1;
        let waited = now.saturating_duration_since(at);
        if cleared && waited <= BARGE_IN_TIMEOUT {
            latency::record(&mut self.barge_in, waited);
        } else {
            self.barge_in_missed += 1;
        }
    }

    fn fail(&mut self, reason: impl Into<String>) {
        *self.failed.entry(reason.into()).or_default() += 1;
    }
}

/// A call in its media phase.
struct LiveCall {
    sink: SplitSink<Ws, Message>,
    ids: CallIds,
    /// The shard tick that carries frame 0.
    first_tick: u64,
    /// Still sending media (false after the hold or once the frame table is exhausted).
    sending: bool,
    /// Next `sequenceNumber` for a mark echo or `stop`.
    seq: u64,
    rt: RoundTrip,
    playback: Playback<Message>,
    /// `--barge-in`: send time of the last speech onset while no `clear` has answered it.
    onset: Option<Instant>,
}

enum Slot {
    /// Not launched, or connecting.
    Pending,
    Live(Box<LiveCall>),
    /// `stop` and close sent; waiting for the server's close.
    Closing,
    /// Over (completed, failed or closed).
    Ended,
}

/// A call's read half tagged with its index, yielding one final `(index, None)` when it ends.
struct Tagged {
    index: usize,
    inner: Option<SplitStream<Ws>>,
}

impl Stream for Tagged {
    type Item = (usize, Option<Result<Message, tungstenite::Error>>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let index = self.index;
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some((index, Some(item)))),
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(Some((index, None)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Connects call `index`; the error is already a failure reason.
async fn connect(url: String, index: usize) -> (usize, Result<Ws, String>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + (1 << 20));
    let attempt = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err("connect timeout".to_owned()),
        Ok(Err(e)) => Err(connect_error(&e)),
        Ok(Ok((ws, _))) => Ok(ws),
    };
    (index, result)
}

/// A short, low-cardinality reason for a failed connect.
fn connect_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("rejected: HTTP {}", resp.status().as_u16()),
        tungstenite::Error::Io(io) => format!("connect error: {:?}", io.kind()),
        tungstenite::Error::Tls(_) => "connect error: TLS".to_owned(),
        _ => "connect error: handshake".to_owned(),
    }
}

/// Runs calls `first .. first + count` of `plan`; ticks at `plan.t_start + phase + n · 20 ms`.
pub(crate) async fn run(plan: Arc<Plan>, first: usize, count: usize, phase: Duration) -> ShardReport {
    let mut shard = Shard {
        calls: (0..count).map(|_| Slot::Pending).collect(),
        report: ShardReport::new(),
        due: Vec::with_capacity(8),
        plan,
        first,
    };
    shard.run(phase).await;
    shard.report
}

struct Shard {
    plan: Arc<Plan>,
    first: usize,
    calls: Vec<Slot>,
    report: ShardReport,
    /// Mark echoes due this tick (reused).
    due: Vec<Message>,
}

impl Shard {
    async fn run(&mut self, phase: Duration) {
        let count = self.calls.len();
        let mut connecting = FuturesUnordered::new();
        let mut reads: SelectAll<Tagged> = SelectAll::new();
        let mut launched = 0usize;
        let launch = tokio::time::sleep_until(self.plan.start_of(self.first).into());
        tokio::pin!(launch);
        let mut ticker = tokio::time::interval_at((self.plan.t_start + phase).into(), FRAME);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        // Index of the next tick the ticker yields.
        let mut tick: u64 = 0;
        let mut close_deadline: Option<Instant> = None;
        loop {
            tokio::select! {
                () = &mut launch, if launched < count => {
                    connecting.push(connect(self.plan.url.clone(), launched));
                    self.report.started += 1;
                    launched += 1;
                    if launched < count {
                        launch.as_mut().reset(self.plan.start_of(self.first + launched).into());
                    }
                }
                Some((i, result)) = connecting.next(), if !connecting.is_empty() => {
                    self.on_connect(i, result, tick, &mut reads).await;
                }
                Some((i, item)) = reads.next(), if !reads.is_empty() => {
                    self.on_read(i, item).await;
                }
                due = ticker.tick() => {
                    let k = tick;
                    tick += 1;
                    self.on_tick(k, due.into_std()).await;
                    let all_resolved = launched == count && connecting.is_empty();
                    let hang_up_at = self.plan.window.get().map(|w| w.hold_end + GRACE);
                    if close_deadline.is_none() && all_resolved && hang_up_at.is_some_and(|t| Instant::now() >= t) {
                        self.hang_up_all().await;
                        close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                    }
                    let busy = self.calls.iter().any(|s| matches!(s, Slot::Live(_) | Slot::Closing));
                    if all_resolved && !busy {
                        break;
                    }
                    if close_deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                }
            }
        }
        for slot in &mut self.calls {
            if matches!(slot, Slot::Closing) {
                self.report.close_timeouts += 1;
            }
            *slot = Slot::Ended;
        }
    }

    /// The connect of call `i` resolved: send `connected` + `start`, start its clock at the next
    /// tick.
    async fn on_connect(
        &mut self,
        i: usize,
        result: Result<Ws, String>,
        next_tick: u64,
        reads: &mut SelectAll<Tagged>,
    ) {
        self.plan.resolved.fetch_add(1, Ordering::Relaxed);
        let ws = match result {
            Ok(ws) => ws,
            Err(reason) => {
                self.report.fail(reason);
                self.calls[i] = Slot::Ended;
                return;
            }
        };
        let (mut sink, stream) = ws.split();
        let ids = CallIds::new(self.plan.provider, self.plan.seed, self.first + i);
        let sent = async {
            sink.feed(self.plan.connected.clone()).await?;
            sink.feed(wire::start(self.plan.provider, &ids)).await?;
            sink.flush().await
        }
        .await;
        if sent.is_err() {
            self.report.fail("send error");
            self.calls[i] = Slot::Ended;
            return;
        }
        self.plan.live.fetch_add(1, Ordering::Relaxed);
        reads.push(Tagged { index: i, inner: Some(stream) });
        self.calls[i] = Slot::Live(Box::new(LiveCall {
            sink,
            ids,
            first_tick: next_tick,
            sending: true,
            seq: 2,
            rt: RoundTrip::default(),
            playback: Playback::default(),
            onset: None,
        }));
    }

    /// Tick `k` (due at `due`): the due frame on every sending call, then 20 ms of playback.
    async fn on_tick(&mut self, k: u64, due: Instant) {
        let plan = &*self.plan;
        let frame_bytes = plan.provider.frame_bytes();
        let window = plan.window.get();
        let send_until = window.map(|w| w.hold_end);
        let report = &mut self.report;
        for slot in &mut self.calls {
            let Slot::Live(call) = slot else { continue };
            let mut ok = true;
            if let Some(at) = call.onset {
                let now = Instant::now();
                if now.saturating_duration_since(at) > BARGE_IN_TIMEOUT {
                    report.barge_in_resolved(at, now, false);
                    call.onset = None;
                }
            }
            if call.sending && k >= call.first_tick {
                let f = (k - call.first_tick) as usize;
                match plan.frames.get(f) {
                    Some(frame) if send_until.is_none_or(|u| due < u) => {
                        let now = Instant::now();
                        latency::record(&mut report.lag, now.saturating_duration_since(due));
                        if plan.barge_in.is_some_and(|b| b.is_onset(f))
                            && window.is_some_and(|w| now >= w.hold_start)
                        {
                            if let Some(at) = call.onset.replace(now) {
                                report.barge_in_resolved(at, now, false);
                            }
                        }
                        ok = call.sink.send(frame.clone()).await.is_ok();
                        call.rt.on_sent(frame_bytes, now);
                        call.seq = f as u64 + 3;
                        report.frames_sent += 1;
                        report.bytes_sent += frame_bytes as u64;
                    }
                    _ => call.sending = false,
                }
            }
            call.playback.play(frame_bytes, &mut self.due);
            for echo in self.due.drain(..) {
                if ok {
                    ok = call.sink.send(echo).await.is_ok();
                    report.marks_echoed += 1;
                }
            }
            if !ok {
                report.fail("send error");
                plan.live.fetch_sub(1, Ordering::Relaxed);
                *slot = Slot::Ended;
            }
        }
    }

    /// A message (or the end) of call `i`'s read half.
    async fn on_read(&mut self, i: usize, item: Option<Result<Message, tungstenite::Error>>) {
        let text = match item {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return,
            Some(Ok(Message::Binary(_))) => {
                self.report.unexpected += 1;
                return;
            }
            Some(Ok(Message::Close(frame))) => {
                let reason = match frame {
                    Some(f) => format!("closed early (close {})", u16::from(f.code)),
                    None => "closed early (no close frame)".to_owned(),
                };
                return self.on_closed(i, reason);
            }
            Some(Err(_)) => return self.on_closed(i, "closed early (socket error)".to_owned()),
            None => return self.on_closed(i, "closed early (no close frame)".to_owned()),
        };
        let Slot::Live(call) = &mut self.calls[i] else { return };
        let provider = self.plan.provider;
        let report = &mut self.report;
        let mut ok = true;
        match wire::decode(text.as_str()) {
            Ok(FromBridge::Media { bytes }) => {
                let now = Instant::now();
                report.frames_received += 1;
                report.bytes_received += bytes as u64;
                match call.rt.on_received(bytes, now) {
                    Some(rtt) => {
                        // Barge-ins drop echoed audio, which breaks the byte FIFO: no samples.
                        let timed = self.plan.barge_in.is_none()
                            && self.plan.window.get().is_some_and(|w| now >= w.hold_start);
                        if timed {
                            latency::record(&mut report.latency, rtt);
                        }
                    }
                    None => report.unmatched += 1,
                }
                call.playback.push_audio(bytes);
            }
            Ok(FromBridge::Mark { name }) => {
                report.marks_received += 1;
                let Some(echo) = wire::mark_echo(provider, &call.ids.stream_sid, call.seq, &name) else {
                    report.unexpected += 1;
                    return;
                };
                call.seq += 1;
                if let Some(echo) = call.playback.push_mark(echo) {
                    ok = call.sink.send(echo).await.is_ok();
                    report.marks_echoed += 1;
                }
            }
            Ok(FromBridge::Clear) => {
                report.clears += 1;
                if let Some(at) = call.onset.take() {
                    report.barge_in_resolved(at, Instant::now(), true);
                }
                call.playback.clear(&mut self.due);
                for echo in self.due.drain(..) {
                    if ok {
                        ok = call.sink.send(echo).await.is_ok();
                        report.marks_echoed += 1;
                    }
                }
            }
            Ok(FromBridge::Other) | Err(_) => report.unexpected += 1,
        }
        if !ok {
            report.fail("send error");
            self.plan.live.fetch_sub(1, Ordering::Relaxed);
            self.calls[i] = Slot::Ended;
        }
    }

    fn on_closed(&mut self, i: usize, reason: String) {
        match self.calls[i] {
            Slot::Live(_) => {
                self.report.fail(reason);
                self.plan.live.fetch_sub(1, Ordering::Relaxed);
            }
            Slot::Pending | Slot::Closing | Slot::Ended => {}
        }
        self.calls[i] = Slot::Ended;
    }

    /// End of the run: count loss, send `stop` and a normal close on every live call.
    async fn hang_up_all(&mut self) {
        let frame_bytes = self.plan.provider.frame_bytes();
        for slot in &mut self.calls {
            let Slot::Live(call) = slot else { continue };
            self.plan.live.fetch_sub(1, Ordering::Relaxed);
            let lost = latency::lost_frames(call.rt.sent_bytes(), call.rt.received_bytes(), frame_bytes);
            let stop = wire::stop(self.plan.provider, &call.ids, call.seq);
            let close = Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }));
            let sent = async {
                call.sink.feed(stop).await?;
                call.sink.send(close).await
            }
            .await;
            if sent.is_ok() {
                self.report.completed += 1;
                self.report.frames_lost += lost;
                *slot = Slot::Closing;
            } else {
                self.report.fail("send error");
                *slot = Slot::Ended;
            }
        }
    }
}
