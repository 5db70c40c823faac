//! Durable call records: a local SQLite store (the embedded default), an outbox of Supabase
//! writes drained by a delivery worker, and the post-call summary and lead update.
//!
//! ```text
//! driver ──CallNote (bounded, never waits)──► note task ──► SQLite: calls, turns, events, outbox
//!                                                 │                            │
//!                                  summary jobs ◄─┘                            ▼
//!                     Summarizer (chat model) ──► SQLite ──► delivery worker ──► Supabase (PostgREST)
//! ```
//!
//! A call's rows reach Supabase in the order they were written; a failed row is retried with
//! exponential backoff and jitter (5xx, 408, 429, timeouts, connection errors) or parked with
//! its error (other 4xx), never deleted, and never holds back other calls. Everything is in
//! SQLite before anything is sent, so rows survive Supabase being down, a crash and a restart.

mod db;
pub mod record;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use db::{CallDetail, CallSummaryRow, Cursor, DB_FILE, OutboxRow, StoreError, SummaryJob, rfc3339};
use db::{Db, RemoteTables};
pub use record::{CallNote, CallRecord, CallStarted, CallStatus, LeadUpdate, TimelineEntry};

use crate::clients::summary::{Outcome, Summarizer, Summary};
use crate::clients::supabase::{self, Supabase, Write};
use crate::metrics as m;

/// Capacity of the driver → store channel; when full, notes are dropped and counted
/// (`records_overflow`), so a slow disk never stalls a call.
pub const NOTES_CAPACITY: usize = 1024;
/// Rows sent at once (each to a different call).
const DELIVERY_BATCH: usize = 16;
/// Longest sleep of an idle delivery worker before it looks again.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Attempts per summary before the call keeps its record without one. One: the OpenAI client
/// already retries 429s, 5xx and connection errors inside each attempt.
const SUMMARY_ATTEMPTS: u32 = 1;
/// Summary written when nobody spoke, without asking a model.
const NOBODY_SPOKE: &str = "Nobody spoke on the call.";

/// Where Supabase is and how to retry it.
#[derive(Debug, Clone)]
pub struct SupabaseTarget {
    /// Data API root, e.g. `https://<ref>.supabase.co/rest/v1`.
    pub rest_base: String,
    /// Service-role or `sb_secret_` key.
    pub key: supabase::ServiceKey,
    /// Table of leads to update after a call.
    pub lead_table: String,
    /// Per-request limit.
    pub timeout: Duration,
    /// Retry delays: first and largest (exponential in between, with jitter).
    pub backoff: Backoff,
}

/// Exponential backoff with jitter: attempt `n` (from 0) waits a random time in
/// `[d/2, d]` where `d = min(max, first × 2^n)`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the first retry.
    pub first: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based), jittered.
    pub fn delay(self, attempt: u32) -> Duration {
        let d = self.first.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        let half = d / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// How the store runs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the SQLite file (`CALLBRIDGE_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Supabase delivery; `None` keeps everything local.
    pub supabase: Option<SupabaseTarget>,
    /// Post-call summaries; `None` skips them.
    pub summarizer: Option<Summarizer>,
}

impl StoreConfig {
    /// The store as configured by the environment ([`crate::config::StoreSettings`]); the
    /// summary uses `openai_api_key` against the settings' base URL.
    ///
    /// Errors: the summary client cannot be built.
    pub fn from_settings(s: &crate::config::StoreSettings, openai_api_key: &str) -> Result<Self, StoreError> {
        let summarizer = match &s.summary_model {
            Some(model) => Some(
                Summarizer::new(
                    &s.openai_base_url,
                    openai_api_key,
                    model,
                    crate::clients::summary::DEFAULT_TIMEOUT,
                )
                .map_err(|e| StoreError::Client(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Self {
            data_dir: s.data_dir.clone(),
            supabase: s.supabase.as_ref().map(|(rest_base, key)| SupabaseTarget {
                rest_base: rest_base.clone(),
                key: supabase::ServiceKey::parse(key),
                lead_table: s.lead_table.clone(),
                timeout: supabase::DEFAULT_TIMEOUT,
                backoff: Backoff { first: s.retry.0, max: s.retry.1 },
            }),
            summarizer,
        })
    }
}

/// Reads for the `/v1` API (shares the store's connection; queries run on the blocking pool).
#[derive(Clone)]
pub struct StoreReader {
    db: Arc<Mutex<Db>>,
}

impl StoreReader {
    /// Newest calls first, started before `before_ms` (unix ms) if given.
    ///
    /// Errors: SQLite failed.
    pub async fn list_calls(
        &self,
        limit: usize,
        before: Option<Cursor>,
    ) -> Result<Vec<CallSummaryRow>, StoreError> {
        blocking(&self.db, move |db| db.list_calls(limit, before.as_ref())).await
    }

    /// One call with turns, timeline and undelivered outbox rows; `None` if unknown.
    ///
    /// Errors: SQLite failed.
    pub async fn call_detail(&self, call_sid: String) -> Result<Option<CallDetail>, StoreError> {
        blocking(&self.db, move |db| db.call_detail(&call_sid)).await
    }

    /// (pending, parked) outbox rows.
    ///
    /// Errors: SQLite failed.
    pub async fn outbox_depth(&self) -> Result<(u64, u64), StoreError> {
        blocking(&self.db, |db| db.outbox_depth()).await
    }
}

/// The running store: hand [`Self::notes`] to the driver, [`Self::reader`] to the server.
pub struct Store {
    /// Where the driver sends call notes.
    pub notes: mpsc::Sender<CallNote>,
    db: Arc<Mutex<Db>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Store {
    /// Opens the database, closes calls a previous process left running, re-queues owed
    /// summaries, and starts the note task, the summary worker and (with Supabase) the
    /// delivery worker.
    ///
    /// Errors: the database cannot be opened, or Supabase's client cannot be built.
    pub async fn start(cfg: StoreConfig) -> Result<Self, StoreError> {
        let remote = cfg.supabase.as_ref().map(|s| RemoteTables { lead_table: s.lead_table.clone() });
        let dir = cfg.data_dir.clone();
        let mut db = tokio::task::spawn_blocking(move || Db::open(&dir, remote))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let now = now_ms();
        let interrupted = db.interrupt_unfinished(now)?;
        if interrupted > 0 {
            warn!(calls = interrupted, "calls left running by a previous process marked interrupted");
        }
        let owed = db.pending_summaries()?;
        let db = Arc::new(Mutex::new(db));
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let (notes_tx, notes_rx) = mpsc::channel(NOTES_CAPACITY);
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        for job in owed {
            let _ = jobs_tx.send(job);
        }
        let want_summary = cfg.summarizer.is_some();
        let mut tasks =
            vec![tokio::spawn(note_task(db.clone(), notes_rx, jobs_tx, want_summary, wake.clone()))];
        tasks.push(tokio::spawn(summary_task(
            db.clone(),
            jobs_rx,
            cfg.summarizer,
            wake.clone(),
            stop.clone(),
        )));
        if let Some(target) = cfg.supabase {
            let client = Supabase::new(&target.rest_base, &target.key, target.timeout)
                .map_err(|e| StoreError::Client(e.to_string()))?;
            info!(rest_base = %target.rest_base, "delivering call records to Supabase");
            tasks.push(tokio::spawn(delivery_task(db.clone(), client, target.backoff, wake, stop.clone())));
        }
        Ok(Self { notes: notes_tx, db, stop, tasks })
    }

    /// Read access for the API.
    pub fn reader(&self) -> StoreReader {
        StoreReader { db: self.db.clone() }
    }

    /// Stops after the notes already sent are written: call it once every call has ended.
    /// Rows not yet delivered and summaries not yet made stay in SQLite for the next start;
    /// `grace` bounds the wait for in-flight deliveries.
    pub async fn shutdown(self, grace: Duration) {
        let Self { notes, stop, mut tasks, .. } = self;
        drop(notes);
        // The note task ends once every sender (ours and the driver's) is gone.
        if let Some(note_task) = tasks.first_mut() {
            if tokio::time::timeout(grace, note_task).await.is_err() {
                warn!("store: call notes still arriving at shutdown");
            }
        }
        stop.cancel();
        for t in tasks.into_iter().skip(1) {
            let _ = tokio::time::timeout(grace, t).await;
        }
    }
}

fn lock(db: &Mutex<Db>) -> MutexGuard<'_, Db> {
    // A panic while holding the lock cannot leave SQLite half-written (transactions roll
    // back), so a poisoned lock is still usable.
    db.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<T: Send + 'static>(
    db: &Arc<Mutex<Db>>,
    f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || f(&mut lock(&db))).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Task(e.to_string())),
    }
}

fn now_ms() -> i64 {
    db::unix_ms(SystemTime::now())
}

async fn note_task(
    db: Arc<Mutex<Db>>,
    mut notes: mpsc::Receiver<CallNote>,
    jobs: mpsc::UnboundedSender<SummaryJob>,
    want_summary: bool,
    wake: Arc<Notify>,
) {
    while let Some(note) = notes.recv().await {
        let result = match note {
            CallNote::Started(s) => {
                blocking(&db, move |db| db.call_started(&s, now_ms()).map(|()| None)).await
            }
            CallNote::Lead(u) => blocking(&db, move |db| db.lead_update(&u, now_ms()).map(|_| None)).await,
            CallNote::Status(st) => {
                let sid = st.call_sid.clone();
                blocking(&db, move |db| {
                    if let Some(summary) = db.call_status(&st, now_ms())? {
                        db.call_summarized(&sid, &summary, now_ms())?;
                    }
                    Ok(None)
                })
                .await
            }
            CallNote::Ended(r) => {
                if r.call_sid.is_none() {
                    debug!(reason = r.end_reason, "stream ended before a start: nothing to record");
                    continue;
                }
                blocking(&db, move |db| db.call_ended(&r, want_summary, now_ms())).await
            }
        };
        match result {
            Ok(job) => {
                if let Some(job) = job {
                    let _ = jobs.send(job);
                }
                wake.notify_one();
            }
            Err(e) => {
                // Nothing to retry against: the disk refused. Loud, counted, and the call
                // itself is unaffected.
                error!(error = %e, "store: call record not written");
                m::store_error("write");
            }
        }
    }
}

async fn summary_task(
    db: Arc<Mutex<Db>>,
    mut jobs: mpsc::UnboundedReceiver<SummaryJob>,
    summarizer: Option<Summarizer>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            job = jobs.recv() => match job { Some(j) => j, None => return },
            () = stop.cancelled() => return,
        };
        let sid = job.call_sid.clone();
        let outcome = match &summarizer {
            _ if job.transcript.is_empty() => {
                Some(Summary { summary: NOBODY_SPOKE.into(), outcome: Outcome::NoAnswer })
            }
            None => None,
            Some(s) => summarize(s, &job, &stop).await,
        };
        let result = match outcome {
            Some(summary) => {
                m::summary("ok");
                blocking(&db, move |db| db.call_summarized(&sid, &summary, now_ms())).await
            }
            None if stop.is_cancelled() => return,
            None => {
                m::summary("failed");
                blocking(&db, move |db| db.summary_state(&sid, "failed", now_ms())).await
            }
        };
        match result {
            Ok(()) => wake.notify_one(),
            Err(e) => {
                error!(error = %e, "store: summary not written");
                m::store_error("write");
            }
        }
    }
}

async fn summarize(s: &Summarizer, job: &SummaryJob, stop: &CancellationToken) -> Option<Summary> {
    let backoff = Backoff { first: Duration::from_secs(2), max: Duration::from_secs(30) };
    for attempt in 0..SUMMARY_ATTEMPTS {
        match s.summarize(&job.transcript).await {
            Ok(summary) => return Some(summary),
            Err(e) => {
                warn!(call_sid = %job.call_sid, attempt, error = %e, "post-call summary failed");
                if attempt + 1 < SUMMARY_ATTEMPTS {
                    tokio::select! {
                        () = tokio::time::sleep(backoff.delay(attempt)) => {}
                        () = stop.cancelled() => return None,
                    }
                }
            }
        }
    }
    None
}

async fn delivery_task(
    db: Arc<Mutex<Db>>,
    client: Supabase,
    backoff: Backoff,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        let now = now_ms();
        let rows = match blocking(&db, move |db| db.due(now, DELIVERY_BATCH)).await {
            Ok(rows) => rows,
            Err(e) => {
                error!(error = %e, "store: outbox read failed");
                m::store_error("read");
                Vec::new()
            }
        };
        if rows.is_empty() {
            let next = blocking(&db, |db| db.next_due_ms()).await.ok().flatten();
            let wait = next.map_or(IDLE_POLL, |n| Duration::from_millis((n - now).clamp(0, 1_000) as u64));
            if let Ok((pending, parked)) = blocking(&db, |db| db.outbox_depth()).await {
                m::outbox_depth(pending, parked);
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
            continue;
        }
        // Each row is settled as soon as its own answer is in: one slow call never holds the
        // others' bookkeeping back.
        let mut sends: futures_util::stream::FuturesUnordered<_> = rows
            .into_iter()
            .map(|row| async {
                let result = deliver(&client, &row).await;
                (row, result)
            })
            .collect();
        while let Some((row, result)) = futures_util::StreamExt::next(&mut sends).await {
            settle(&db, row, result, backoff).await;
        }
    }
}

async fn deliver(client: &Supabase, row: &OutboxRow) -> Result<supabase::Written, supabase::WriteError> {
    let Some(method) = row.method() else {
        return Err(supabase::WriteError::Other(format!("unknown method {}", row.method)));
    };
    let started = Instant::now();
    let result = client
        .write(Write { method, table: &row.target, query: &row.query, prefer: &row.prefer, body: &row.body })
        .await;
    debug!(id = row.id, table = %row.target, took_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "outbox write");
    result
}

async fn settle(
    db: &Arc<Mutex<Db>>,
    row: OutboxRow,
    result: Result<supabase::Written, supabase::WriteError>,
    backoff: Backoff,
) {
    let id = row.id;
    let update = match result {
        Ok(written) => {
            if written.matched_nothing {
                warn!(call_sid = %row.call_sid, table = %row.target, query = %row.query, "PATCH matched no row");
            }
            let waited = Duration::from_millis((now_ms() - row.created_ms).max(0) as u64);
            m::outbox_delivered(&row.target, waited);
            blocking(db, move |db| db.delivered(id)).await
        }
        Err(e) if e.is_retryable() => {
            let attempt = u32::try_from(row.attempts).unwrap_or(u32::MAX);
            let delay = backoff.delay(attempt);
            warn!(call_sid = %row.call_sid, table = %row.target, attempt, retry_in_ms = delay.as_millis() as u64, error = %e, "Supabase write failed; will retry");
            m::outbox_retried(&row.target, e.label());
            let next = now_ms() + delay.as_millis() as i64;
            let (status, text) = (e.status(), e.to_string());
            blocking(db, move |db| db.retry_at(id, next, status, &text)).await
        }
        Err(e) => {
            error!(call_sid = %row.call_sid, table = %row.target, error = %e, "Supabase rejected a row; parked");
            m::outbox_parked(&row.target);
            let (status, text) = (e.status(), e.to_string());
            blocking(db, move |db| db.park(id, status, &text)).await
        }
    };
    if let Err(e) = update {
        error!(error = %e, "store: outbox update failed");
        m::store_error("write");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let b = Backoff { first: Duration::from_millis(100), max: Duration::from_secs(2) };
        for _ in 0..50 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100), "{d0:?}");
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800), "{d3:?}");
            let big = b.delay(40);
            assert!(big >= Duration::from_secs(1) && big <= Duration::from_secs(2), "{big:?}");
        }
    }
}
