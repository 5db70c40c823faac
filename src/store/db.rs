//! The local SQLite database: call records, turns, timeline events and the outbox of pending
//! Supabase writes. Synchronous; the async side calls it on the blocking pool.
//!
//! Every change to a call and the outbox rows that carry it to Supabase are written in one
//! transaction, so a crash can lose neither half. WAL mode with `synchronous=FULL`: a committed
//! call survives `kill -9` and power loss; readers (the `/v1` API) never block the writer.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::record::{CallRecord, CallStarted, CallStatus, LeadUpdate};
use crate::clients::summary::Summary;
use crate::clients::supabase::Method;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "callbridge.sqlite3";
/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Supabase tables the bridge writes (see `supabase/migrations/0001_callbridge.sql`).
pub const CALLS: &str = "calls";
/// Transcript turns, keyed by `(call_sid, item_id)`.
pub const CALL_TURNS: &str = "call_turns";
/// Timeline events, keyed by `(call_sid, seq)`.
pub const CALL_EVENTS: &str = "call_events";
/// Idempotent upsert that updates an existing row.
const UPSERT: &str = "resolution=merge-duplicates,return=minimal";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS calls (
    call_sid TEXT PRIMARY KEY,
    stream_sid TEXT,
    provider TEXT NOT NULL,
    direction TEXT NOT NULL,
    from_number TEXT,
    to_number TEXT,
    lead_id TEXT,
    status TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER,
    duration_ms INTEGER,
    end_reason TEXT,
    end_detail TEXT,
    outcome TEXT,
    summary TEXT,
    summary_state TEXT NOT NULL DEFAULT 'none',
    usage TEXT,
    custom_parameters TEXT NOT NULL DEFAULT '{}',
    frames_in INTEGER NOT NULL DEFAULT 0,
    frames_out INTEGER NOT NULL DEFAULT 0,
    provider_status TEXT,
    provider_duration_s INTEGER,
    answered_by TEXT,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at_ms DESC);
CREATE TABLE IF NOT EXISTS turns (
    call_sid TEXT NOT NULL REFERENCES calls (call_sid),
    item_id TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER NOT NULL,
    interrupted INTEGER NOT NULL,
    PRIMARY KEY (call_sid, item_id)
);
CREATE TABLE IF NOT EXISTS events (
    call_sid TEXT NOT NULL REFERENCES calls (call_sid),
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (call_sid, seq)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid TEXT NOT NULL,
    target TEXT NOT NULL,
    method TEXT NOT NULL,
    query TEXT NOT NULL,
    prefer TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    last_status INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (state, call_sid, id);
";

/// A local store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no (I/O error, corruption, full disk, …).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A blocking store task died (a bug; the write is lost and counted).
    #[error("store task failed: {0}")]
    Task(String),
    /// The Supabase client could not be built (bad key or base URL).
    #[error("supabase client: {0}")]
    Client(String),
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Where outbox rows go; `None` keeps everything local.
#[derive(Debug, Clone)]
pub struct RemoteTables {
    /// Table of leads to PATCH after a call (`LEAD_TABLE`).
    pub lead_table: String,
}

/// One pending or parked remote write.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    /// Queue order (per call, rows are delivered in this order).
    pub id: i64,
    /// The call it belongs to.
    pub call_sid: String,
    /// Table name.
    pub target: String,
    /// `POST` or `PATCH`.
    pub method: String,
    /// Query string (`on_conflict=…` or a filter).
    pub query: String,
    /// `Prefer` header.
    #[serde(skip)]
    pub prefer: String,
    /// JSON body.
    #[serde(skip)]
    pub body: String,
    /// Enqueue time, unix ms.
    pub created_ms: i64,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Earliest next attempt, unix ms.
    pub next_attempt_ms: i64,
    /// `pending` or `parked`.
    pub state: String,
    /// HTTP status of the last failure.
    pub last_status: Option<i64>,
    /// Last failure.
    pub last_error: Option<String>,
}

impl OutboxRow {
    /// The method, if the row's text is one we know.
    pub fn method(&self) -> Option<Method> {
        Method::parse(&self.method)
    }
}

/// A position in the newest-first list of calls: before this call (or, with an empty
/// `call_sid`, before this time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Unix ms.
    pub started_at_ms: i64,
    /// Tie-breaker within one ms.
    pub call_sid: String,
}

impl Cursor {
    /// Parses `1732190000000` (a time) or `1732190000000_CA…` (after that call).
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, sid) = s.split_once('_').unwrap_or((s, ""));
        Some(Self { started_at_ms: ms.parse().ok()?, call_sid: sid.to_owned() })
    }

    /// The cursor that continues after `row`.
    pub fn after(row: &CallSummaryRow) -> String {
        format!("{}_{}", row.started_at_ms, row.call_sid)
    }
}

/// A call as `/v1/calls` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct CallSummaryRow {
    /// Provider call SID.
    pub call_sid: String,
    /// Provider stream SID.
    pub stream_sid: Option<String>,
    /// `twilio` or `signalwire`.
    pub provider: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Caller number (E.164), if known.
    pub from: Option<String>,
    /// Called number (E.164), if known.
    pub to: Option<String>,
    /// Lead the call is about.
    pub lead_id: Option<String>,
    /// `in_progress`, `completed` or `interrupted`.
    pub status: String,
    /// Unix ms.
    pub started_at_ms: i64,
    /// Unix ms.
    pub ended_at_ms: Option<i64>,
    /// Stream open to end (ms).
    pub duration_ms: Option<i64>,
    /// How it ended.
    pub end_reason: Option<String>,
    /// Lead outcome from the summary.
    pub outcome: Option<String>,
    /// Post-call summary.
    pub summary: Option<String>,
    /// `none`, `pending`, `done`, `failed` or `skipped`.
    pub summary_state: String,
}

/// A call with everything recorded about it (`GET /v1/calls/{call_sid}`).
#[derive(Debug, Clone, Serialize)]
pub struct CallDetail {
    /// The record.
    #[serde(flatten)]
    pub call: CallSummaryRow,
    /// Detail of the end reason.
    pub end_detail: Option<String>,
    /// Token usage (JSON).
    pub usage: Value,
    /// `start.customParameters`.
    pub custom_parameters: Value,
    /// Caller media messages received.
    pub frames_in: i64,
    /// Agent frames sent.
    pub frames_out: i64,
    /// Last `CallStatus` from the provider's callbacks.
    pub provider_status: Option<String>,
    /// `CallDuration` from the provider (s).
    pub provider_duration_s: Option<i64>,
    /// Answering-machine detection verdict (`human`, `machine_start`, …).
    pub answered_by: Option<String>,
    /// Turns ordered by speech start.
    pub turns: Vec<Value>,
    /// Timeline in order.
    pub timeline: Vec<Value>,
    /// Remote writes not yet delivered (pending or parked).
    pub outbox: Vec<OutboxRow>,
}

/// A call whose summary is still owed.
#[derive(Debug, Clone)]
pub struct SummaryJob {
    /// The call.
    pub call_sid: String,
    /// `Caller: …` / `Agent: …` lines in speech order; empty when nobody spoke.
    pub transcript: String,
}

/// The local database.
pub struct Db {
    conn: Connection,
    remote: Option<RemoteTables>,
}

impl Db {
    /// Opens (creating if needed) `dir/callbridge.sqlite3`. With `remote`, every change also
    /// enqueues its Supabase writes.
    ///
    /// Errors: the directory cannot be created, or SQLite cannot open or migrate the file.
    pub fn open(dir: &Path, remote: Option<RemoteTables>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::Dir { path: dir.display().to_string(), source })?;
        let conn = Connection::open(dir.join(DB_FILE))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        add_missing_columns(&conn)?;
        Ok(Self { conn, remote })
    }

    /// Records a call that just started (`status = in_progress`).
    pub fn call_started(&mut self, s: &CallStarted, now_ms: i64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let params_json = serde_json::to_string(&s.custom_parameters).unwrap_or_else(|_| "{}".into());
        let p = &s.custom_parameters;
        tx.execute(
            "INSERT INTO calls (call_sid, stream_sid, provider, direction, from_number, to_number, lead_id,
                 status, started_at_ms, custom_parameters, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'in_progress', ?8, ?9, ?10)
             ON CONFLICT (call_sid) DO UPDATE SET stream_sid = excluded.stream_sid,
                 status = 'in_progress', updated_at_ms = excluded.updated_at_ms",
            params![
                s.call_sid,
                s.stream_sid,
                s.provider,
                direction(p.get("direction").map(String::as_str)),
                p.get("from"),
                p.get("to"),
                lead_id(p),
                unix_ms(s.started_at),
                params_json,
                now_ms
            ],
        )?;
        enqueue_call_row(&tx, self.remote.is_some(), &s.call_sid, now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Records a finished call: its row, turns and timeline, and their outbox rows. Returns the
    /// summary job to run, if summaries are wanted (`want_summary`).
    pub fn call_ended(
        &mut self,
        r: &CallRecord,
        want_summary: bool,
        now_ms: i64,
    ) -> Result<Option<SummaryJob>, StoreError> {
        let Some(call_sid) = r.call_sid.as_deref() else {
            return Ok(None);
        };
        let started_ms = unix_ms(r.started_at);
        let tx = self.conn.transaction()?;
        let p = &r.custom_parameters;
        let summary_state = if want_summary { "pending" } else { "none" };
        tx.execute(
            "INSERT INTO calls (call_sid, stream_sid, provider, direction, from_number, to_number, lead_id,
                 status, started_at_ms, ended_at_ms, duration_ms, end_reason, end_detail, summary_state,
                 usage, custom_parameters, frames_in, frames_out, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'completed', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
             ON CONFLICT (call_sid) DO UPDATE SET stream_sid = excluded.stream_sid, status = 'completed',
                 ended_at_ms = excluded.ended_at_ms, duration_ms = excluded.duration_ms,
                 end_reason = excluded.end_reason, end_detail = excluded.end_detail,
                 summary_state = excluded.summary_state, usage = excluded.usage,
                 custom_parameters = excluded.custom_parameters, frames_in = excluded.frames_in,
                 frames_out = excluded.frames_out, updated_at_ms = excluded.updated_at_ms",
            params![
                call_sid,
                r.stream_sid,
                r.provider,
                direction(p.get("direction").map(String::as_str)),
                p.get("from"),
                p.get("to"),
                lead_id(p),
                started_ms,
                started_ms + r.duration_ms as i64,
                r.duration_ms as i64,
                r.end_reason,
                r.end_detail,
                summary_state,
                serde_json::to_string(&r.usage).unwrap_or_else(|_| "{}".into()),
                serde_json::to_string(p).unwrap_or_else(|_| "{}".into()),
                r.frames_in as i64,
                r.frames_out as i64,
                now_ms
            ],
        )?;
        {
            let mut turn = tx.prepare(
                "INSERT OR REPLACE INTO turns (call_sid, item_id, role, text, started_ms, ended_ms, interrupted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for t in &r.transcript {
                let role = match t.role {
                    crate::core::call::Role::Caller => "caller",
                    crate::core::call::Role::Agent => "agent",
                };
                turn.execute(params![
                    call_sid,
                    t.item_id,
                    role,
                    t.text,
                    t.started_ms as i64,
                    t.ended_ms as i64,
                    t.interrupted
                ])?;
            }
            let mut event = tx.prepare(
                "INSERT OR REPLACE INTO events (call_sid, seq, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (seq, e) in r.timeline.iter().enumerate() {
                event.execute(params![call_sid, seq as i64, e.at_ms as i64, e.kind, e.detail])?;
            }
        }
        enqueue_call_row(&tx, self.remote.is_some(), call_sid, now_ms)?;
        if self.remote.is_some() {
            let turns = turns_json(&tx, call_sid)?;
            if !turns.is_empty() {
                enqueue(
                    &tx,
                    call_sid,
                    CALL_TURNS,
                    Method::Post,
                    "on_conflict=call_sid,item_id",
                    UPSERT,
                    &Value::Array(turns),
                    now_ms,
                )?;
            }
            let events = events_json(&tx, call_sid, started_ms)?;
            if !events.is_empty() {
                enqueue(
                    &tx,
                    call_sid,
                    CALL_EVENTS,
                    Method::Post,
                    "on_conflict=call_sid,seq",
                    UPSERT,
                    &Value::Array(events),
                    now_ms,
                )?;
            }
        }
        let job = if want_summary { Some(summary_job(&tx, call_sid)?) } else { None };
        tx.commit()?;
        Ok(job)
    }

    /// Stores a call's summary and enqueues the call row again plus the lead's PATCH.
    pub fn call_summarized(&mut self, call_sid: &str, s: &Summary, now_ms: i64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE calls SET summary = ?2, outcome = ?3, summary_state = 'done', updated_at_ms = ?4
             WHERE call_sid = ?1",
            params![call_sid, s.summary, s.outcome.as_str(), now_ms],
        )?;
        if changed == 0 {
            return Ok(());
        }
        enqueue_call_row(&tx, self.remote.is_some(), call_sid, now_ms)?;
        let lead: Option<String> =
            tx.query_row("SELECT lead_id FROM calls WHERE call_sid = ?1", [call_sid], |r| r.get(0))?;
        if let (Some(remote), Some(lead)) = (&self.remote, lead) {
            let filter = format!("id=eq.{}", percent_encode(&lead));
            let body = json!({
                "status": s.outcome.as_str(),
                "last_call_sid": call_sid,
                "last_call_summary": s.summary,
                "updated_at": rfc3339(now_ms),
            });
            enqueue(
                &tx,
                call_sid,
                &remote.lead_table,
                Method::Patch,
                &filter,
                "return=minimal",
                &body,
                now_ms,
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a provider status callback. A call that never reached a stream gets its row from
    /// it (`no_answer`, `busy`, `failed`, …); returns the summary to store for such a call
    /// when the provider reports it over (the lead then gets `no_answer`).
    pub fn call_status(&mut self, st: &CallStatus, now_ms: i64) -> Result<Option<Summary>, StoreError> {
        let tx = self.conn.transaction()?;
        let fallback = match st.status.as_deref() {
            Some("in-progress") => "answered",
            Some("completed") => "completed",
            Some("busy") => "busy",
            Some("failed") => "failed",
            Some("no-answer") => "no_answer",
            Some("canceled") => "canceled",
            _ => "dialing",
        };
        let p: std::collections::BTreeMap<String, String> =
            st.lead_id.iter().map(|l| ("leadId".to_owned(), l.clone())).collect();
        tx.execute(
            "INSERT INTO calls (call_sid, provider, direction, from_number, to_number, lead_id, status,
                 started_at_ms, custom_parameters, provider_status, provider_duration_s, answered_by, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (call_sid) DO UPDATE SET
                 provider_status = coalesce(excluded.provider_status, calls.provider_status),
                 provider_duration_s = coalesce(excluded.provider_duration_s, calls.provider_duration_s),
                 answered_by = coalesce(excluded.answered_by, calls.answered_by),
                 from_number = coalesce(calls.from_number, excluded.from_number),
                 to_number = coalesce(calls.to_number, excluded.to_number),
                 status = CASE WHEN calls.status IN ('in_progress', 'completed', 'interrupted')
                               THEN calls.status ELSE excluded.status END,
                 updated_at_ms = excluded.updated_at_ms",
            params![
                st.call_sid,
                st.provider,
                st.direction.unwrap_or("inbound"),
                st.from,
                st.to,
                st.lead_id,
                fallback,
                unix_ms(st.at),
                serde_json::to_string(&p).unwrap_or_else(|_| "{}".into()),
                st.status,
                st.duration_s,
                st.answered_by,
                now_ms
            ],
        )?;
        enqueue_call_row(&tx, self.remote.is_some(), &st.call_sid, now_ms)?;
        let (status, summary_state): (String, String) = tx.query_row(
            "SELECT status, summary_state FROM calls WHERE call_sid = ?1",
            [&st.call_sid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.commit()?;
        let unanswered = matches!(status.as_str(), "busy" | "failed" | "no_answer" | "canceled");
        Ok((unanswered && summary_state == "none").then(|| Summary {
            summary: format!("The call was not answered ({}).", status.replace('_', " ")),
            outcome: crate::clients::summary::Outcome::NoAnswer,
        }))
    }

    /// Enqueues the PATCH of a lead the model updated during a call (nothing without Supabase).
    /// Returns whether a row was enqueued.
    pub fn lead_update(&mut self, u: &LeadUpdate, now_ms: i64) -> Result<bool, StoreError> {
        let Some(remote) = &self.remote else { return Ok(false) };
        let mut body = serde_json::Map::new();
        for (k, v) in &u.fields {
            body.insert(k.clone(), Value::String(v.clone()));
        }
        if let Some(status) = &u.status {
            body.insert("status".into(), Value::String(status.clone()));
        }
        if let Some(notes) = &u.notes {
            body.insert("last_call_summary".into(), Value::String(notes.clone()));
        }
        body.insert("last_call_sid".into(), Value::String(u.call_sid.clone()));
        body.insert("updated_at".into(), Value::String(rfc3339(now_ms)));
        let tx = self.conn.transaction()?;
        let filter = format!("id=eq.{}", percent_encode(&u.lead_id));
        enqueue(
            &tx,
            &u.call_sid,
            &remote.lead_table,
            Method::Patch,
            &filter,
            "return=minimal",
            &Value::Object(body),
            now_ms,
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Marks a summary as given up (`failed`) or not needed (`skipped`); the call row stays.
    pub fn summary_state(&mut self, call_sid: &str, state: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE calls SET summary_state = ?2, updated_at_ms = ?3 WHERE call_sid = ?1",
            params![call_sid, state, now_ms],
        )?;
        Ok(())
    }

    /// Summaries owed from before a restart.
    pub fn pending_summaries(&mut self) -> Result<Vec<SummaryJob>, StoreError> {
        let tx = self.conn.transaction()?;
        let sids: Vec<String> = {
            let mut q = tx.prepare(
                "SELECT call_sid FROM calls WHERE summary_state = 'pending' ORDER BY started_at_ms",
            )?;
            q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        let jobs = sids.iter().map(|sid| summary_job(&tx, sid)).collect::<Result<_, _>>()?;
        tx.commit()?;
        Ok(jobs)
    }

    /// Calls left `in_progress` by a previous process (it died under them) become `interrupted`.
    /// Returns how many.
    pub fn interrupt_unfinished(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let sids: Vec<String> = {
            let mut q = tx.prepare("SELECT call_sid FROM calls WHERE status = 'in_progress'")?;
            q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        for sid in &sids {
            tx.execute(
                "UPDATE calls SET status = 'interrupted', end_reason = 'process_restart', updated_at_ms = ?2
                 WHERE call_sid = ?1",
                params![sid, now_ms],
            )?;
            enqueue_call_row(&tx, self.remote.is_some(), sid, now_ms)?;
        }
        tx.commit()?;
        Ok(sids.len())
    }

    /// Up to `limit` rows due at `now_ms`: for each call, only its oldest pending row (rows of
    /// one call go out in order; parked rows do not hold the others back).
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT o.* FROM outbox o
             WHERE o.state = 'pending' AND o.next_attempt_ms <= ?1
               AND o.id = (SELECT min(id) FROM outbox i WHERE i.state = 'pending' AND i.call_sid = o.call_sid)
             ORDER BY o.id LIMIT ?2",
        )?;
        let rows = q.query_map(params![now_ms, limit as i64], outbox_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// When the next pending row becomes due (unix ms), if any.
    pub fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.conn.query_row(
            "SELECT min(next_attempt_ms) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Removes a delivered row.
    pub fn delivered(&self, id: i64) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Schedules another attempt.
    pub fn retry_at(
        &self,
        id: i64,
        next_ms: i64,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_status = ?3, last_error = ?4
             WHERE id = ?1",
            params![id, next_ms, status, error],
        )?;
        Ok(())
    }

    /// Parks a row Supabase rejected for good; it is kept, never deleted.
    pub fn park(&self, id: i64, status: Option<u16>, error: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, state = 'parked', last_status = ?2, last_error = ?3
             WHERE id = ?1",
            params![id, status, error],
        )?;
        Ok(())
    }

    /// (pending, parked) row counts.
    pub fn outbox_depth(&self) -> Result<(u64, u64), StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'parked') FROM outbox",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// Newest calls first, started before `before_ms` (unix ms) if given.
    pub fn list_calls(
        &self,
        limit: usize,
        before: Option<&Cursor>,
    ) -> Result<Vec<CallSummaryRow>, StoreError> {
        // Keyset order on (started_at_ms, call_sid): calls starting in the same ms are neither
        // skipped nor repeated across pages.
        let mut q = self.conn.prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM calls WHERE (started_at_ms, call_sid) < (?1, ?2)
             ORDER BY started_at_ms DESC, call_sid DESC LIMIT ?3"
        ))?;
        let (ms, sid) = match before {
            Some(c) => (c.started_at_ms, c.call_sid.as_str()),
            None => (i64::MAX, ""),
        };
        let rows = q.query_map(params![ms, sid, limit as i64], summary_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// One call with its turns, timeline and undelivered outbox rows.
    pub fn call_detail(&self, call_sid: &str) -> Result<Option<CallDetail>, StoreError> {
        let found = self
            .conn
            .query_row(
                &format!(
                    "SELECT {SUMMARY_COLUMNS}, end_detail, usage, custom_parameters, frames_in, frames_out,
                            provider_status, provider_duration_s, answered_by
                     FROM calls WHERE call_sid = ?1"
                ),
                [call_sid],
                |r| {
                    Ok((
                        summary_row(r)?,
                        r.get::<_, Option<String>>(15)?,
                        r.get::<_, Option<String>>(16)?,
                        r.get::<_, String>(17)?,
                        r.get::<_, i64>(18)?,
                        r.get::<_, i64>(19)?,
                        (
                            r.get::<_, Option<String>>(20)?,
                            r.get::<_, Option<i64>>(21)?,
                            r.get::<_, Option<String>>(22)?,
                        ),
                    ))
                },
            )
            .optional()?;
        let Some((call, end_detail, usage, custom, frames_in, frames_out, provider)) = found else {
            return Ok(None);
        };
        let started = call.started_at_ms;
        let turns = turns_json(&self.conn, call_sid)?;
        let timeline = events_json(&self.conn, call_sid, started)?;
        let outbox = {
            let mut q = self.conn.prepare_cached("SELECT * FROM outbox WHERE call_sid = ?1 ORDER BY id")?;
            q.query_map([call_sid], outbox_row)?.collect::<Result<_, _>>()?
        };
        let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null);
        Ok(Some(CallDetail {
            call,
            end_detail,
            usage: parse(usage),
            custom_parameters: parse(Some(custom)),
            frames_in,
            frames_out,
            provider_status: provider.0,
            provider_duration_s: provider.1,
            answered_by: provider.2,
            turns,
            timeline,
            outbox,
        }))
    }
}

/// Enqueues the `calls` upsert built from the current local row (when there is a remote).
fn enqueue_call_row(
    tx: &Transaction<'_>,
    remote: bool,
    call_sid: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    if !remote {
        return Ok(());
    }
    let body = tx.query_row(
        "SELECT call_sid, stream_sid, provider, direction, from_number, to_number, lead_id, status,
                started_at_ms, ended_at_ms, duration_ms, end_reason, outcome, summary, usage,
                custom_parameters, updated_at_ms, provider_status, provider_duration_s, answered_by
         FROM calls WHERE call_sid = ?1",
        [call_sid],
        |r| {
            let json_col = |i| -> rusqlite::Result<Value> {
                Ok(r.get::<_, Option<String>>(i)?
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(Value::Null))
            };
            Ok(json!({
                "call_sid": r.get::<_, String>(0)?,
                "stream_sid": r.get::<_, Option<String>>(1)?,
                "provider": r.get::<_, String>(2)?,
                "direction": r.get::<_, String>(3)?,
                "from_number": r.get::<_, Option<String>>(4)?,
                "to_number": r.get::<_, Option<String>>(5)?,
                "lead_id": r.get::<_, Option<String>>(6)?,
                "status": r.get::<_, String>(7)?,
                "started_at": rfc3339(r.get(8)?),
                "ended_at": r.get::<_, Option<i64>>(9)?.map(rfc3339),
                "duration_ms": r.get::<_, Option<i64>>(10)?,
                "end_reason": r.get::<_, Option<String>>(11)?,
                "outcome": r.get::<_, Option<String>>(12)?,
                "summary": r.get::<_, Option<String>>(13)?,
                "usage": json_col(14)?,
                "custom_parameters": json_col(15)?,
                "updated_at": rfc3339(r.get(16)?),
                "provider_status": r.get::<_, Option<String>>(17)?,
                "provider_duration_s": r.get::<_, Option<i64>>(18)?,
                "answered_by": r.get::<_, Option<String>>(19)?,
            }))
        },
    )?;
    enqueue(tx, call_sid, CALLS, Method::Post, "on_conflict=call_sid", UPSERT, &body, now_ms)
}

const SUMMARY_COLUMNS: &str =
    "call_sid, stream_sid, provider, direction, from_number, to_number, lead_id, status,
    started_at_ms, ended_at_ms, duration_ms, end_reason, outcome, summary, summary_state";

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallSummaryRow> {
    Ok(CallSummaryRow {
        call_sid: r.get(0)?,
        stream_sid: r.get(1)?,
        provider: r.get(2)?,
        direction: r.get(3)?,
        from: r.get(4)?,
        to: r.get(5)?,
        lead_id: r.get(6)?,
        status: r.get(7)?,
        started_at_ms: r.get(8)?,
        ended_at_ms: r.get(9)?,
        duration_ms: r.get(10)?,
        end_reason: r.get(11)?,
        outcome: r.get(12)?,
        summary: r.get(13)?,
        summary_state: r.get(14)?,
    })
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get("id")?,
        call_sid: r.get("call_sid")?,
        target: r.get("target")?,
        method: r.get("method")?,
        query: r.get("query")?,
        prefer: r.get("prefer")?,
        body: r.get("body")?,
        created_ms: r.get("created_ms")?,
        attempts: r.get("attempts")?,
        next_attempt_ms: r.get("next_attempt_ms")?,
        state: r.get("state")?,
        last_status: r.get("last_status")?,
        last_error: r.get("last_error")?,
    })
}

#[allow(clippy::too_many_arguments)]
fn enqueue(
    tx: &Transaction<'_>,
    call_sid: &str,
    target: &str,
    method: Method,
    query: &str,
    prefer: &str,
    body: &Value,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO outbox (call_sid, target, method, query, prefer, body, created_ms, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        params![call_sid, target, method.as_str(), query, prefer, body.to_string(), now_ms],
    )?;
    Ok(())
}

/// Turns as `call_turns` rows, ordered by speech start.
fn turns_json(conn: &Connection, call_sid: &str) -> Result<Vec<Value>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT item_id, role, text, started_ms, ended_ms, interrupted FROM turns
         WHERE call_sid = ?1 ORDER BY started_ms, item_id",
    )?;
    let rows = q
        .query_map([call_sid], |r| {
            Ok(json!({
                "call_sid": call_sid,
                "item_id": r.get::<_, String>(0)?,
                "role": r.get::<_, String>(1)?,
                "text": r.get::<_, String>(2)?,
                "started_at_ms": r.get::<_, i64>(3)?,
                "ended_at_ms": r.get::<_, i64>(4)?,
                "interrupted": r.get::<_, bool>(5)?,
            }))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Timeline as `call_events` rows.
fn events_json(conn: &Connection, call_sid: &str, started_ms: i64) -> Result<Vec<Value>, StoreError> {
    let mut q =
        conn.prepare_cached("SELECT seq, at_ms, kind, detail FROM events WHERE call_sid = ?1 ORDER BY seq")?;
    let rows = q
        .query_map([call_sid], |r| {
            let at_ms: i64 = r.get(1)?;
            let detail: String = r.get(3)?;
            Ok(json!({
                "call_sid": call_sid,
                "seq": r.get::<_, i64>(0)?,
                "at": rfc3339(started_ms + at_ms),
                "at_ms": at_ms,
                "kind": r.get::<_, String>(2)?,
                "data": if detail.is_empty() { Value::Null } else { json!({"detail": detail}) },
            }))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn summary_job(conn: &Connection, call_sid: &str) -> Result<SummaryJob, StoreError> {
    let mut q =
        conn.prepare_cached("SELECT role, text FROM turns WHERE call_sid = ?1 ORDER BY started_ms, item_id")?;
    let mut transcript = String::new();
    let lines = q.query_map([call_sid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for line in lines {
        let (role, text) = line?;
        if text.trim().is_empty() {
            continue;
        }
        transcript.push_str(if role == "caller" { "Caller: " } else { "Agent: " });
        transcript.push_str(text.trim());
        transcript.push('\n');
    }
    Ok(SummaryJob { call_sid: call_sid.to_owned(), transcript })
}

/// `direction` custom parameter, defaulting to `inbound`.
fn direction(v: Option<&str>) -> &'static str {
    if v == Some("outbound") { "outbound" } else { "inbound" }
}

/// The lead named by the stream's `leadId` (or `lead_id`) custom parameter.
fn lead_id(p: &std::collections::BTreeMap<String, String>) -> Option<&String> {
    p.get("leadId").or_else(|| p.get("lead_id")).filter(|v| !v.is_empty())
}

/// Unix ms of a wall-clock time (0 before the epoch).
pub fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `2026-11-21T11:39:07.123Z` for unix ms.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Percent-encodes a filter value for a PostgREST query. PostgREST reads `+` in a query as a
/// literal plus, so a space must be `%20` (form encoding's `+` would not match), and a plus
/// `%2B`.
fn percent_encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Columns added to `calls` after its first release, added to databases created before them.
const LATER_CALL_COLUMNS: [(&str, &str); 3] =
    [("provider_status", "TEXT"), ("provider_duration_s", "INTEGER"), ("answered_by", "TEXT")];

fn add_missing_columns(conn: &Connection) -> Result<(), StoreError> {
    let existing: Vec<String> = {
        let mut q = conn.prepare("SELECT name FROM pragma_table_info('calls')")?;
        q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    for (name, kind) in LATER_CALL_COLUMNS {
        if !existing.iter().any(|c| c == name) {
            conn.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_encoded_for_postgrest() {
        assert_eq!(percent_encode("acme lead+7"), "acme%20lead%2B7");
        assert_eq!(percent_encode("+15550001111"), "%2B15550001111");
        assert_eq!(
            percent_encode("00000000-0000-4000-8000-000000000001"),
            "00000000-0000-4000-8000-000000000001"
        );
    }

    #[test]
    fn pages_neither_skip_nor_repeat_calls_started_in_the_same_ms() {
        let dir = std::env::temp_dir().join(format!("callbridge-db-pages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut db = Db::open(&dir, None).unwrap();
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        for n in 0..5 {
            let s = CallStarted {
                call_sid: format!("CA{n}"),
                stream_sid: format!("MZ{n}"),
                provider: "twilio",
                started_at: at,
                custom_parameters: Default::default(),
            };
            db.call_started(&s, 0).unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = db.list_calls(2, cursor.as_ref()).unwrap();
            seen.extend(page.iter().map(|c| c.call_sid.clone()));
            if page.len() < 2 {
                break;
            }
            cursor = Cursor::parse(&Cursor::after(page.last().unwrap()));
        }
        assert_eq!(seen, ["CA4", "CA3", "CA2", "CA1", "CA0"]);
        assert!(Cursor::parse("nope").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_older_database_gets_the_later_columns() {
        let dir = std::env::temp_dir().join(format!("callbridge-db-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            let conn = Connection::open(dir.join(DB_FILE)).unwrap();
            let old = SCHEMA.replace(
                "    provider_status TEXT,\n    provider_duration_s INTEGER,\n    answered_by TEXT,\n",
                "",
            );
            assert_ne!(old, SCHEMA);
            conn.execute_batch(&old).unwrap();
        }
        let db = Db::open(&dir, None).unwrap();
        assert!(db.call_detail("CAnone").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
