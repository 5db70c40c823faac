//! One shard: a single task that drives a set of lines (16 by default, dealt round-robin). A line
//! places one call, or with `--call-duration`/`--redial` one call after another. The shard
//! launches the dials on their schedule (the ramp, then redials), owns every call's write half,
//! reads all their read halves through one [`SelectAll`], and on each tick of one 20 ms ticker
//! sends the due shared frame on every live call and plays 20 ms of what each call received.
//!
//! Frame `k` of a call is due at the shard's tick `first_tick + k`; ticks are on an absolute
//! schedule (`MissedTickBehavior::Burst`), so a late harness catches up instead of drifting,
//! and the lateness shows in the send-lag histogram.
//!
//! A dial is **refused** (not failed) when the upgrade is answered with HTTP 503, or when the
//! bridge closes with [`REFUSAL_CLOSE_CODES`] before sending anything; the time from starting
//! the connect to learning of the refusal goes into its own histogram.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, SelectAll, SplitSink, SplitStream};
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
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

/// After a call's last frame: media stops, playback and mark echoes go on this long so audio in
/// flight comes back before loss is counted.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// With `--barge-in`: a speech onset with no `clear` within this long counts as missed.
pub(crate) const BARGE_IN_TIMEOUT: Duration = Duration::from_secs(2);

/// After `stop` and our close frame: how long to wait for the server's close.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// After the last hang-up's close timeout: a shard stops waiting for dials still connecting.
const END_SLACK: Duration = Duration::from_secs(1);

/// HTTP status of an upgrade refused for capacity or draining.
pub(crate) const REFUSAL_STATUS: u16 = 503;

/// Close codes that mean "refused" when they arrive before the bridge's first message:
/// 1013 Try Again Later (over capacity) and 1001 Going Away (draining). Any other early close
/// is a failure.
pub(crate) const REFUSAL_CLOSE_CODES: [u16; 2] = [1013, 1001];

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The hold window, set by the controller once every line's first dial has resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Start of the hold; latency samples count from here.
    pub hold_start: Instant,
    /// End of the hold: no frame due at or after it is sent, and no call is dialled after it.
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
    /// `--call-duration`: each call hangs up after a duration drawn uniformly from this range,
    /// and its line dials the next call at once.
    pub call_duration: Option<(Duration, Duration)>,
    /// `--redial`: a line whose call was refused or failed dials again after this long.
    pub redial: Option<Duration>,
    /// Seed of the per-call ids and call durations.
    pub seed: u64,
    /// First line's first dial; line `i` first dials at `t_start + i · ramp_interval`.
    pub t_start: Instant,
    /// Time between first dials.
    pub ramp_interval: Duration,
    /// The hold window, once known.
    pub window: OnceLock<Window>,
    /// Lines whose first dial has succeeded, failed or been refused.
    pub resolved: AtomicUsize,
    /// Calls streaming media right now (connected, not ended, not hung up).
    pub live: AtomicUsize,
    /// Calls hung up with `stop` so far.
    pub completed: AtomicU64,
}

impl Plan {
    /// When line `i` first dials.
    pub(crate) fn start_of(&self, i: usize) -> Instant {
        self.t_start + self.ramp_interval.mul_f64(i as f64)
    }
}

/// What one shard (or, merged, a whole run) saw.
#[derive(Debug)]
pub(crate) struct ShardReport {
    /// Dials (connect attempts), redials included.
    pub started: u64,
    /// Dials after a line's first (`--redial`, `--call-duration`).
    pub redials: u64,
    /// Calls that streamed until the hang-up and sent `stop`.
    pub completed: u64,
    /// Failed calls by reason (refusals are not in here).
    pub failed: BTreeMap<String, u64>,
    /// Refused dials by reason (`HTTP 503 max_calls`, `close 1013 before any message`, …).
    pub refused: BTreeMap<String, u64>,
    /// Refusals of a line's first dial.
    pub refused_first: u64,
    /// Dial started → refusal known, per refused dial (µs).
    pub refusal: Histogram<u64>,
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
            redials: 0,
            completed: 0,
            failed: BTreeMap::new(),
            refused: BTreeMap::new(),
            refused_first: 0,
            refusal: latency::histogram(),
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
        self.redials += other.redials;
        self.completed += other.completed;
        for (k, v) in &other.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.refused {
            *self.refused.entry(k.clone()).or_default() += v;
        }
        self.refused_first += other.refused_first;
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
        let _ = self.refusal.add(&other.refusal);
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

    /// A dial was refused for `reason`, `waited` after it started.
    fn refuse(&mut self, reason: String, waited: Duration, first_dial: bool) {
        *self.refused.entry(reason).or_default() += 1;
        if first_dial {
            self.refused_first += 1;
        }
        latency::record(&mut self.refusal, waited);
    }
}

/// A call in its media phase.
struct LiveCall {
    sink: SplitSink<Ws, Message>,
    ids: CallIds,
    /// When its dial started (a refusal by close is timed from here).
    dialed: Instant,
    /// Whether the bridge has sent anything on this call yet.
    heard: bool,
    /// `--call-duration`: when this call stops sending (its hang-up follows after [`GRACE`]).
    ends_at: Option<Instant>,
    /// The shard tick that carries frame 0.
    first_tick: u64,
    /// Still sending media (false after its end or once the frame table is exhausted).
    sending: bool,
    /// Next `sequenceNumber` for a mark echo or `stop`.
    seq: u64,
    rt: RoundTrip,
    playback: Playback<Message>,
    /// `--barge-in`: send time of the last speech onset while no `clear` has answered it.
    onset: Option<Instant>,
}

impl LiveCall {
    /// When the call stops sending media: its own end or the end of the hold, if known.
    fn send_until(&self, window: Option<&Window>) -> Option<Instant> {
        match (self.ends_at, window) {
            (Some(end), Some(w)) => Some(end.min(w.hold_end)),
            (Some(end), None) => Some(end),
            (None, Some(w)) => Some(w.hold_end),
            (None, None) => None,
        }
    }
}

enum Slot {
    /// Waiting for its next dial, or connecting.
    Idle,
    Live(Box<LiveCall>),
    /// `stop` and close sent; waiting for the server's close until this deadline.
    Closing(Instant),
    /// Places no more calls.
    Ended,
}

/// One line of the shard.
struct Line {
    slot: Slot,
    /// Dials so far. A call's read half is tagged with its dial number, so late messages of a
    /// line's previous call are told apart and ignored.
    dials: u32,
}

/// How a line's call ended, which decides when the line dials next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Refused,
    Failed,
}

/// A call's read half tagged with its line and dial number, yielding one final `(…, None)` when
/// it ends.
struct Tagged {
    index: usize,
    dial: u32,
    inner: Option<SplitStream<Ws>>,
}

impl Stream for Tagged {
    type Item = (usize, u32, Option<Result<Message, tungstenite::Error>>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (index, dial) = (self.index, self.dial);
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some((index, dial, Some(item)))),
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(Some((index, dial, None)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How a dial resolved.
enum Dialed {
    Connected(Box<Ws>),
    /// Refused (HTTP 503), with the reason to report.
    Refused(String),
    /// Failed, with the reason to report.
    Failed(String),
}

/// What a resolved connect hands back: line, dial number, time from its start, result.
type Connected = (usize, u32, Duration, Dialed);

/// Dials line `index` (its `dial`-th dial); the time is measured inside, as the result is known.
async fn connect(url: String, index: usize, dial: u32) -> Connected {
    let t0 = Instant::now();
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + (1 << 20));
    let attempt = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let outcome = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await;
    let waited = t0.elapsed();
    let result = match outcome {
        Err(_) => Dialed::Failed("connect timeout".to_owned()),
        Ok(Err(tungstenite::Error::Http(resp))) if resp.status().as_u16() == REFUSAL_STATUS => {
            Dialed::Refused(refusal_reason(resp.body().as_deref()))
        }
        Ok(Err(e)) => Dialed::Failed(connect_error(&e)),
        Ok(Ok((ws, _))) => Dialed::Connected(Box::new(ws)),
    };
    (index, dial, waited, result)
}

/// `HTTP 503`, plus the body when it is one short word-like line (the server's reason, e.g.
/// `max_calls` or `draining`), to keep the reasons few.
fn refusal_reason(body: Option<&[u8]>) -> String {
    let word = body.and_then(|b| std::str::from_utf8(b).ok()).map(str::trim).filter(|t| {
        !t.is_empty()
            && t.len() <= 40
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' ' | '.'))
    });
    match word {
        Some(w) => format!("HTTP {REFUSAL_STATUS} {w}"),
        None => format!("HTTP {REFUSAL_STATUS}"),
    }
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

/// Which lines of the run a shard drives: `offset`, `offset + stride`, `offset + 2·stride`, …
/// Lines are dealt round-robin, so the first lines dialled (the ones a full server admits) are
/// spread over every shard, and so over every tick phase, whatever the number of lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lines {
    /// The shard's first line.
    pub offset: usize,
    /// Distance between its lines (the number of shards).
    pub stride: usize,
    /// How many lines it drives.
    pub count: usize,
}

impl Lines {
    /// The run-wide index of the shard's line `i`.
    fn global(self, i: usize) -> usize {
        self.offset + i * self.stride
    }
}

/// Runs `lines` of `plan`; ticks at `plan.t_start + phase + n · 20 ms`.
pub(crate) async fn run(plan: Arc<Plan>, lines: Lines, phase: Duration) -> ShardReport {
    let rng = SmallRng::seed_from_u64(plan.seed ^ (lines.offset as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut shard = Shard {
        lines: (0..lines.count).map(|_| Line { slot: Slot::Idle, dials: 0 }).collect(),
        schedule: (0..lines.count).map(|i| Reverse((plan.start_of(lines.global(i)), i))).collect(),
        report: ShardReport::new(),
        due: Vec::with_capacity(8),
        ended: Vec::new(),
        rng,
        plan,
        range: lines,
    };
    shard.run(phase).await;
    shard.report
}

struct Shard {
    plan: Arc<Plan>,
    /// The run's lines this shard drives.
    range: Lines,
    lines: Vec<Line>,
    /// Dials to make: (when, line), earliest first.
    schedule: BinaryHeap<Reverse<(Instant, usize)>>,
    report: ShardReport,
    /// Mark echoes due this tick (reused).
    due: Vec<Message>,
    /// Lines whose call ended during a tick, and how (reused).
    ended: Vec<(usize, Outcome)>,
    /// Call durations.
    rng: SmallRng,
}

impl Shard {
    async fn run(&mut self, phase: Duration) {
        let mut connecting = FuturesUnordered::new();
        let mut reads: SelectAll<Tagged> = SelectAll::new();
        let launch = tokio::time::sleep_until(self.plan.start_of(self.range.offset).into());
        tokio::pin!(launch);
        let mut ticker = tokio::time::interval_at((self.plan.t_start + phase).into(), FRAME);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        // Index of the next tick the ticker yields.
        let mut tick: u64 = 0;
        loop {
            if let Some(&Reverse((at, _))) = self.schedule.peek() {
                let at = tokio::time::Instant::from_std(at);
                if launch.deadline() != at {
                    launch.as_mut().reset(at);
                }
            }
            tokio::select! {
                () = &mut launch, if !self.schedule.is_empty() => {
                    let now = Instant::now();
                    while let Some(&Reverse((at, i))) = self.schedule.peek() {
                        if at > now {
                            break;
                        }
                        self.schedule.pop();
                        if let Some(dial) = self.dial(i, now) {
                            connecting.push(connect(self.plan.url.clone(), i, dial));
                        }
                    }
                }
                Some((i, dial, waited, result)) = connecting.next(), if !connecting.is_empty() => {
                    self.on_connect(i, dial, waited, result, tick, &mut reads).await;
                }
                Some((i, dial, item)) = reads.next(), if !reads.is_empty() => {
                    // Late messages of a line's previous call are ignored.
                    if self.lines[i].dials == dial {
                        self.on_read(i, item).await;
                    }
                }
                due = ticker.tick() => {
                    let k = tick;
                    tick += 1;
                    self.on_tick(k, due.into_std()).await;
                    let busy = !connecting.is_empty()
                        || !self.schedule.is_empty()
                        || self.lines.iter().any(|l| matches!(l.slot, Slot::Live(_) | Slot::Closing(_)));
                    if !busy {
                        break;
                    }
                    let give_up_at = self.plan.window.get().map(|w| w.hold_end + GRACE + CLOSE_TIMEOUT + END_SLACK);
                    if give_up_at.is_some_and(|t| Instant::now() >= t) {
                        for _ in 0..connecting.len() {
                            self.report.fail("connect unresolved at the end");
                        }
                        break;
                    }
                }
            }
        }
        for line in &mut self.lines {
            match line.slot {
                Slot::Closing(_) => self.report.close_timeouts += 1,
                Slot::Live(_) => {
                    self.report.fail("still live at the end");
                    self.plan.live.fetch_sub(1, Ordering::Relaxed);
                }
                Slot::Idle | Slot::Ended => {}
            }
            line.slot = Slot::Ended;
        }
    }

    /// Line `i`'s dial is due: returns its dial number, or `None` once the hold is over (first
    /// dials always go out).
    fn dial(&mut self, i: usize, now: Instant) -> Option<u32> {
        let over = self.plan.window.get().is_some_and(|w| now >= w.hold_end);
        let line = &mut self.lines[i];
        if over && line.dials > 0 {
            line.slot = Slot::Ended;
            return None;
        }
        line.dials += 1;
        line.slot = Slot::Idle;
        self.report.started += 1;
        if line.dials > 1 {
            self.report.redials += 1;
        }
        Some(line.dials)
    }

    /// Line `i`'s call ended (`how`): schedules its next dial, or ends the line.
    fn after_call(&mut self, i: usize, how: Outcome) {
        let now = Instant::now();
        let next = match how {
            Outcome::Completed => self.plan.call_duration.map(|_| now),
            Outcome::Refused | Outcome::Failed => self.plan.redial.map(|d| now + d),
        };
        let window = self.plan.window.get();
        let line = &mut self.lines[i];
        match next {
            Some(at) if window.is_none_or(|w| at < w.hold_end) => {
                line.slot = Slot::Idle;
                self.schedule.push(Reverse((at, i)));
            }
            _ => line.slot = Slot::Ended,
        }
    }

    /// Line `i`'s `dial`-th dial resolved after `waited`: on success send `connected` + `start`
    /// and start the call's clock at the next tick.
    async fn on_connect(
        &mut self,
        i: usize,
        dial: u32,
        waited: Duration,
        result: Dialed,
        next_tick: u64,
        reads: &mut SelectAll<Tagged>,
    ) {
        let first_dial = dial == 1;
        if first_dial {
            self.plan.resolved.fetch_add(1, Ordering::Relaxed);
        }
        let ws = match result {
            Dialed::Connected(ws) => *ws,
            Dialed::Refused(reason) => {
                self.report.refuse(reason, waited, first_dial);
                return self.after_call(i, Outcome::Refused);
            }
            Dialed::Failed(reason) => {
                self.report.fail(reason);
                return self.after_call(i, Outcome::Failed);
            }
        };
        let now = Instant::now();
        let (mut sink, stream) = ws.split();
        // Each dial of a line gets its own ids (the first dial's are the line's).
        let seed = self.plan.seed ^ u64::from(dial - 1).wrapping_mul(0xA24B_AED4_963E_E407);
        let ids = CallIds::new(self.plan.provider, seed, self.range.global(i));
        let sent = async {
            sink.feed(self.plan.connected.clone()).await?;
            sink.feed(wire::start(self.plan.provider, &ids)).await?;
            sink.flush().await
        }
        .await;
        if sent.is_err() {
            self.report.fail("send error");
            return self.after_call(i, Outcome::Failed);
        }
        let ends_at = self.plan.call_duration.map(|(lo, hi)| {
            let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
            now + Duration::from_millis(self.rng.random_range(lo..=hi.max(lo)))
        });
        self.plan.live.fetch_add(1, Ordering::Relaxed);
        reads.push(Tagged { index: i, dial, inner: Some(stream) });
        self.lines[i].slot = Slot::Live(Box::new(LiveCall {
            sink,
            ids,
            dialed: now.checked_sub(waited).unwrap_or(now),
            heard: false,
            ends_at,
            first_tick: next_tick,
            sending: true,
            seq: 2,
            rt: RoundTrip::default(),
            playback: Playback::default(),
            onset: None,
        }));
    }

    /// Tick `k` (due at `due`): the due frame on every sending call, then 20 ms of playback;
    /// calls past their end plus [`GRACE`] hang up; hang-ups past [`CLOSE_TIMEOUT`] give up.
    async fn on_tick(&mut self, k: u64, due: Instant) {
        let plan = &*self.plan;
        let frame_bytes = plan.provider.frame_bytes();
        let window = plan.window.get();
        let report = &mut self.report;
        let mut hang_ups = Vec::new();
        for (i, line) in self.lines.iter_mut().enumerate() {
            let call = match &mut line.slot {
                Slot::Live(call) => call,
                Slot::Closing(deadline) => {
                    if Instant::now() >= *deadline {
                        report.close_timeouts += 1;
                        self.ended.push((i, Outcome::Completed));
                    }
                    continue;
                }
                Slot::Idle | Slot::Ended => continue,
            };
            let mut ok = true;
            if let Some(at) = call.onset {
                let now = Instant::now();
                if now.saturating_duration_since(at) > BARGE_IN_TIMEOUT {
                    report.barge_in_resolved(at, now, false);
                    call.onset = None;
                }
            }
            let send_until = call.send_until(window);
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
                line.slot = Slot::Idle;
                self.ended.push((i, Outcome::Failed));
            } else if send_until.is_some_and(|u| Instant::now() >= u + GRACE) {
                hang_ups.push(i);
            }
        }
        for i in hang_ups {
            self.hang_up(i).await;
        }
        let mut ended = std::mem::take(&mut self.ended);
        for (i, how) in ended.drain(..) {
            self.after_call(i, how);
        }
        self.ended = ended;
    }

    /// A message (or the end) of line `i`'s current call's read half.
    async fn on_read(&mut self, i: usize, item: Option<Result<Message, tungstenite::Error>>) {
        let text = match item {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return,
            Some(Ok(Message::Binary(_))) => {
                if let Slot::Live(call) = &mut self.lines[i].slot {
                    call.heard = true;
                }
                self.report.unexpected += 1;
                return;
            }
            Some(Ok(Message::Close(frame))) => {
                return self.on_closed(i, Some(frame.map(|f| u16::from(f.code))));
            }
            Some(Err(_)) => return self.on_closed(i, None),
            None => return self.on_closed(i, Some(None)),
        };
        let Slot::Live(call) = &mut self.lines[i].slot else { return };
        call.heard = true;
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
            self.after_call(i, Outcome::Failed);
        }
    }

    /// Line `i`'s current call's socket closed: `Some(Some(code))` with a close frame,
    /// `Some(None)` without one, `None` on a socket error.
    fn on_closed(&mut self, i: usize, close: Option<Option<u16>>) {
        let first_dial = self.lines[i].dials == 1;
        let (heard, dialed) = match &self.lines[i].slot {
            Slot::Live(call) => (call.heard, call.dialed),
            Slot::Closing(_) => return self.after_call(i, Outcome::Completed),
            Slot::Idle | Slot::Ended => return,
        };
        self.plan.live.fetch_sub(1, Ordering::Relaxed);
        match close {
            Some(Some(code)) if !heard && REFUSAL_CLOSE_CODES.contains(&code) => {
                let reason = format!("close {code} before any message");
                self.report.refuse(reason, dialed.elapsed(), first_dial);
                self.after_call(i, Outcome::Refused);
            }
            _ => {
                self.report.fail(match close {
                    Some(Some(code)) => format!("closed early (close {code})"),
                    Some(None) => "closed early (no close frame)".to_owned(),
                    None => "closed early (socket error)".to_owned(),
                });
                self.after_call(i, Outcome::Failed);
            }
        }
    }

    /// Line `i`'s call is over: count its loss, send `stop` and a normal close.
    async fn hang_up(&mut self, i: usize) {
        let frame_bytes = self.plan.provider.frame_bytes();
        let Slot::Live(call) = &mut self.lines[i].slot else { return };
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
            self.plan.completed.fetch_add(1, Ordering::Relaxed);
            self.lines[i].slot = Slot::Closing(Instant::now() + CLOSE_TIMEOUT);
        } else {
            self.report.fail("send error");
            self.after_call(i, Outcome::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_keep_short_words_only() {
        assert_eq!(refusal_reason(Some(b"max_calls")), "HTTP 503 max_calls");
        assert_eq!(refusal_reason(Some(b"draining\n")), "HTTP 503 draining");
        assert_eq!(refusal_reason(None), "HTTP 503");
        assert_eq!(refusal_reason(Some(b"")), "HTTP 503");
        assert_eq!(refusal_reason(Some(b"<html>{\"error\":1}</html>")), "HTTP 503");
        assert_eq!(refusal_reason(Some(&[b'x'; 41])), "HTTP 503");
        assert_eq!(refusal_reason(Some(&[0xff, 0xfe])), "HTTP 503");
    }
}
