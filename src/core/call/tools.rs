//! Tools the model can call: the built-in declarations, argument checks, and the life of each
//! call (run by the shell, answered, cancelled, covered by a spoken filler, or turned into a
//! call action once the agent's audio has played out).
//!
//! # Flow (reference `openai-realtime.md` §1.3, §1.7)
//!
//! 1. The model calls a function: `response.function_call_arguments.done` carries `call_id`,
//!    `name` and `arguments` (JSON text). (`response.output_item.done` repeats the same call; it
//!    is not decoded, and a repeated `call_id` is dropped anyway.)
//! 2. The call checks it. A name the session did not declare, arguments that are not a JSON
//!    object, or bad arguments for a built-in are answered at once with a `function_call_output`
//!    `{"error": …}` plus `response.create`; nothing runs ([`CallEvent::ToolRejected`]).
//! 3. Otherwise [`Output::Tool`] asks the shell to run it as a task; the shell answers with
//!    [`Call::handle_tool_result`]. Nothing here waits: audio keeps flowing meanwhile.
//! 4. A result goes back as `conversation.item.create` (`function_call_output`) at once, and
//!    `response.create` follows when no response is active, the caller is not talking, and no
//!    other call of the same response is still running (one `response.create` for parallel
//!    calls). See `gate.rs`.
//! 5. Call actions ([`ToolResult::HangUp`], [`ToolResult::Transfer`], [`ToolResult::SendDtmf`])
//!    wait until the agent's audio has **played out**: no response active or requested, no agent
//!    audio queued or unconfirmed by marks, the caller not talking; at most
//!    [`CallParams::action_playout_cap`](super::CallParams::action_playout_cap) after the result.
//!
//! Every [`CallEvent::ToolCalled`] is followed by exactly one [`CallEvent::ToolFinished`] or
//! [`CallEvent::ToolCancelled`], so the shell can count outcomes and durations.
//!
//! # Cancellation
//!
//! - **Barge-in**: a running tool, or a call action waiting for playout, is cancelled when the
//!   caller interrupts *the response that called it* (that response is cancelled, or its audio
//!   is cut by the `clear`). The caller talked over the turn that asked for the tool, so the model
//!   plans again from what they said. A caller who speaks while nothing of that turn is playing
//!   any more ("hello?" during a slow lookup) does not cancel it: they are waiting for it. The
//!   model gets `{"error":"cancelled: the caller interrupted"}` without a `response.create` (the
//!   caller's own turn brings the next response).
//! - **Timeout**: a tool running longer than
//!   [`CallParams::tool_timeout`](super::CallParams::tool_timeout) is cancelled and the model
//!   told `{"error":"timed out"}`.
//! - **Call end**: every running tool is cancelled.
//!
//! Each cancellation of a running tool emits [`Output::CancelTool`]; a result that arrives later
//! is dropped and counted ([`DropReason::StaleToolResult`]).
//!
//! # Filler
//!
//! When a tool has run for [`CallParams::filler_delay`](super::CallParams::filler_delay) of
//! silence (measured from the later of the call and the moment the agent's audio played out, so
//! a model that already said "let me check" is not echoed), an out-of-band `response.create` asks
//! for one short sentence that stays out of the conversation
//! ([`ClientEvent::ResponseCreateOutOfBand`]). One filler per wait: it covers every tool running
//! at that moment.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

use super::reconnect::Link;
use super::{Bridge, Call, CallEvent, DropReason, EndReason, Output, Phase, later};
use crate::core::realtime::{ClientEvent, FunctionTool};

/// Name of the built-in that hangs up once the goodbye has played.
pub const END_CALL: &str = "end_call";
/// Name of the built-in that transfers the call with `<Dial>`.
pub const TRANSFER_CALL: &str = "transfer_call";
/// Name of the built-in that presses phone keys on the call.
pub const SEND_DTMF: &str = "send_dtmf";
/// Name of the built-in that writes to the caller's lead record.
pub const UPDATE_LEAD: &str = "update_lead";
/// Name of the built-in that asks a stronger text model.
pub const CONSULT: &str = "consult";

/// Most tools running at once per call; further calls are rejected (the model is told why).
pub const MAX_RUNNING: usize = 8;
/// Most keys in one `send_dtmf`.
pub const MAX_SEND_DIGITS: usize = 64;
/// Finished calls remembered per call, so a repeated `call_id` is recognised.
const CLOSED_KEPT: usize = 32;
/// Longest tool name quoted back in an event (the name comes from the model).
const MAX_NAME_CHARS: usize = 64;

/// The built-in tools, declared for `session.update` (`tools`). Callers of
/// [`CallParams`](super::CallParams) put these (or a subset) and any custom tools into
/// [`SessionConfig::tools`](crate::core::realtime::SessionConfig::tools); a name not declared
/// there is rejected when the model calls it.
///
/// Schemas: JSON Schema objects as the Realtime API takes them (reference §1.2, `tools`).
pub fn builtin_tools() -> Vec<FunctionTool> {
    vec![
        FunctionTool {
            name: END_CALL.to_owned(),
            description: "Hang up the phone call. First say a short goodbye in the same turn; the line \
                          is closed once it has finished playing. Use it only when the conversation is \
                          over or the caller asks to end the call."
                .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "description": "Why the call ends, for the call record."}
                },
                "additionalProperties": false
            }),
        },
        FunctionTool {
            name: TRANSFER_CALL.to_owned(),
            description: "Transfer the caller to another phone number or SIP address. First tell the \
                          caller you are transferring them; the transfer starts once that has played."
                .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "target": {
                        "type": "string",
                        "description": "E.164 number (+15551230000) or SIP URI (sip:desk@example.com)."
                    },
                    "reason": {"type": "string", "description": "Why it is transferred, for the call record."}
                },
                "required": ["target"],
                "additionalProperties": false
            }),
        },
        FunctionTool {
            name: SEND_DTMF.to_owned(),
            description: "Press keys on the phone line, for example to choose options in an automated \
                          phone menu. The keys are pressed after your current speech has played."
                .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "digits": {
                        "type": "string",
                        "pattern": "^[0-9*#w]+$",
                        "maxLength": MAX_SEND_DIGITS,
                        "description": "Keys to press: 0-9, * and #; w waits half a second."
                    }
                },
                "required": ["digits"],
                "additionalProperties": false
            }),
        },
        FunctionTool {
            name: UPDATE_LEAD.to_owned(),
            description: "Save what you learned about the caller to their lead record: a new status, \
                          notes, or named fields. Give at least one."
                .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "status": {"type": "string", "description": "New status, e.g. interested, callback."},
                    "notes": {"type": "string", "description": "Short notes about the conversation."},
                    "fields": {
                        "type": "object",
                        "description": "Other facts as name/value pairs, e.g. {\"email\": \"…\"}.",
                        "additionalProperties": {"type": "string"}
                    }
                },
                "additionalProperties": false
            }),
        },
        FunctionTool {
            name: CONSULT.to_owned(),
            description: "Ask an expert model a hard question you cannot answer with confidence. It sees \
                          the conversation so far and its answer comes back to you to tell the caller. \
                          Tell the caller you are checking before you call it."
                .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "question": {"type": "string", "description": "The question, with the details."}
                },
                "required": ["question"],
                "additionalProperties": false
            }),
        },
    ]
}

/// A built-in tool call with its arguments checked, so the shell need not parse them again.
#[derive(Debug, Clone, PartialEq)]
pub enum BuiltinCall {
    /// `end_call`: answer with [`ToolResult::HangUp`].
    EndCall {
        /// Why the call ends, as the model put it (for the call record).
        reason: Option<String>,
    },
    /// `transfer_call`: answer with [`ToolResult::Transfer`], or `Err` if policy forbids it.
    TransferCall {
        /// An E.164 number (`+` and 1–15 digits) or a `sip:`/`sips:` URI: accepted by
        /// [`twiml::dial`](crate::core::telephony::twiml::dial).
        target: String,
        /// Why, as the model put it (for the call record).
        reason: Option<String>,
    },
    /// `send_dtmf`: answer with [`ToolResult::SendDtmf`].
    SendDtmf {
        /// 1–[`MAX_SEND_DIGITS`] of `0-9`, `*`, `#`, `w` (a 0.5 s pause).
        digits: String,
    },
    /// `update_lead`: write through the store, answer `Ok`/`Err`. At least one part is present.
    UpdateLead {
        /// New lead status.
        status: Option<String>,
        /// Notes about the conversation.
        notes: Option<String>,
        /// Other facts; numbers and booleans the model sent are kept as their JSON text.
        fields: BTreeMap<String, String>,
    },
    /// `consult`: ask the stronger text model (with [`Call::transcript`]), answer `Ok` with its
    /// answer for the model to speak.
    Consult {
        /// The question, non-empty.
        question: String,
    },
}

/// A tool the shell must run: [`Output::Tool`].
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    /// `call_id` of the function call; pass it back to [`Call::handle_tool_result`].
    pub call_id: String,
    /// The function name (one the session declared).
    pub name: String,
    /// The arguments as the model wrote them: JSON text of an object (`{}` when it sent none).
    pub arguments: String,
    /// The response that made the call.
    pub response_id: String,
    /// The checked arguments when `name` is a built-in; `None` for a custom tool.
    pub builtin: Option<BuiltinCall>,
}

/// What a tool run came to, handed back with [`Call::handle_tool_result`].
#[derive(Debug, Clone, PartialEq)]
pub enum ToolResult {
    /// Success: the output for the model, usually JSON text (e.g. `{"saved":true}`).
    Ok(String),
    /// Failure: a short message for the model, sent as `{"error": message}`. Also how the shell
    /// reports that a transfer it was asked for ([`Output::Transfer`]) failed.
    Err(String),
    /// Hang up once the agent's audio has played out (`end_call`): [`Output::HangUp`], then the
    /// call ends with [`EndReason::AgentHangup`]. The model gets no output.
    HangUp,
    /// Transfer once the agent's audio has played out (`transfer_call`): [`Output::Transfer`].
    /// The model gets no output unless the shell reports a failure with `Err`.
    Transfer {
        /// An E.164 number or `sip:` URI (checked again here; an invalid one becomes an error for
        /// the model).
        target: String,
    },
    /// Press keys once the agent's audio has played out (`send_dtmf`): [`Output::SendDtmf`],
    /// then the model gets `{"sent": digits}` and a `response.create`.
    SendDtmf {
        /// `0-9`, `*`, `#`, `w` (checked again here).
        digits: String,
    },
}

/// Why a tool call was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The session declared no tool of that name.
    UnknownTool,
    /// The arguments are not a JSON object, or not valid for the built-in.
    BadArguments,
    /// [`MAX_RUNNING`] tools are already running.
    TooManyRunning,
}

impl RejectReason {
    /// Stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownTool => "unknown_tool",
            Self::BadArguments => "bad_arguments",
            Self::TooManyRunning => "too_many_running",
        }
    }
}

/// Why a tool call was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The caller interrupted the response that called it.
    BargeIn,
    /// It ran longer than [`CallParams::tool_timeout`](super::CallParams::tool_timeout).
    TimedOut,
    /// The call ended first.
    CallEnded,
}

impl CancelReason {
    /// Stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BargeIn => "barge_in",
            Self::TimedOut => "timed_out",
            Self::CallEnded => "call_ended",
        }
    }
}

/// Checks a call's arguments: JSON text of an object (empty text counts as `{}`), valid for the
/// built-in when `name` is one. `Ok(None)` for a valid custom tool call.
///
/// Errors: a short message for the model.
pub fn check_arguments(name: &str, arguments: &str) -> Result<Option<BuiltinCall>, String> {
    let text = if arguments.trim().is_empty() { "{}" } else { arguments };
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("arguments are not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("arguments must be a JSON object".to_owned());
    }
    let bad = |e: serde_json::Error| format!("bad arguments: {e}");
    Ok(Some(match name {
        END_CALL => {
            let a: EndCallArgs = serde_json::from_value(value).map_err(bad)?;
            BuiltinCall::EndCall { reason: a.reason }
        }
        TRANSFER_CALL => {
            let a: TransferArgs = serde_json::from_value(value).map_err(bad)?;
            let target = a.target.trim().to_owned();
            check_target(&target)?;
            BuiltinCall::TransferCall { target, reason: a.reason }
        }
        SEND_DTMF => {
            let a: DtmfArgs = serde_json::from_value(value).map_err(bad)?;
            check_digits(&a.digits)?;
            BuiltinCall::SendDtmf { digits: a.digits }
        }
        UPDATE_LEAD => {
            let a: LeadArgs = serde_json::from_value(value).map_err(bad)?;
            let mut fields = BTreeMap::new();
            for (k, v) in a.fields {
                let v = match v {
                    Value::String(s) => s,
                    Value::Number(_) | Value::Bool(_) => v.to_string(),
                    Value::Null => continue,
                    Value::Array(_) | Value::Object(_) => {
                        return Err(format!("bad arguments: field {k:?} must be a string"));
                    }
                };
                fields.insert(k, v);
            }
            if a.status.is_none() && a.notes.is_none() && fields.is_empty() {
                return Err("bad arguments: give at least one of status, notes, fields".to_owned());
            }
            BuiltinCall::UpdateLead { status: a.status, notes: a.notes, fields }
        }
        CONSULT => {
            let a: ConsultArgs = serde_json::from_value(value).map_err(bad)?;
            if a.question.trim().is_empty() {
                return Err("bad arguments: question must not be empty".to_owned());
            }
            BuiltinCall::Consult { question: a.question }
        }
        _ => return Ok(None),
    }))
}

fn check_target(target: &str) -> Result<(), String> {
    crate::core::telephony::twiml::dial(target).map(|_| ()).map_err(|_| {
        "bad arguments: target must be an E.164 number like +15551230000 or a sip: URI".to_owned()
    })
}

fn check_digits(digits: &str) -> Result<(), String> {
    let ok = !digits.is_empty()
        && digits.len() <= MAX_SEND_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit() || b"*#w".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("bad arguments: digits must be 1 to {MAX_SEND_DIGITS} of 0-9, *, # and w"))
    }
}

#[derive(Deserialize)]
struct EndCallArgs {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct TransferArgs {
    target: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct DtmfArgs {
    digits: String,
}

#[derive(Deserialize)]
struct LeadArgs {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct ConsultArgs {
    question: String,
}

/// `{"error": message}` as JSON text.
fn error_output(message: &str) -> String {
    json!({ "error": message }).to_string()
}

const BARGE_IN_OUTPUT: &str = "cancelled: the caller interrupted";

// ---------------------------------------------------------------- bookkeeping

/// A call action waiting for the agent's audio to play out.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    HangUp,
    Transfer { target: String },
    SendDtmf { digits: String },
}

/// Where one tool call is.
#[derive(Debug)]
enum State {
    /// The shell is running it.
    Running {
        /// Cancelled with [`CancelReason::TimedOut`] at this time.
        timeout_at: Instant,
        /// A filler already covered this wait.
        filler_spoken: bool,
    },
    /// Answered with a call action that waits for playout (or until `deadline`).
    Acting { action: Action, deadline: Instant, queued: u64 },
    /// [`Output::Transfer`] went out; an `Err` result means it failed.
    Transferring,
    /// Answered, rejected or cancelled: a later result is stale.
    Closed,
}

#[derive(Debug)]
struct Entry {
    call_id: String,
    name: String,
    /// The arguments as the model wrote them, to restore a running call into a new session.
    arguments: String,
    response_id: String,
    started: Instant,
    state: State,
}

/// The tool calls of one call, oldest first: running ones and the last [`CLOSED_KEPT`] others.
#[derive(Debug, Default)]
pub(super) struct Tools {
    entries: Vec<Entry>,
    /// Order of call actions (`State::Acting::queued`).
    next_queued: u64,
}

impl Tools {
    fn get(&self, call_id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.call_id == call_id)
    }

    fn get_mut(&mut self, call_id: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.call_id == call_id)
    }

    fn push(&mut self, e: Entry) {
        self.entries.push(e);
        let closed = self.entries.iter().filter(|e| matches!(e.state, State::Closed)).count();
        if closed > CLOSED_KEPT {
            if let Some(i) = self.entries.iter().position(|e| matches!(e.state, State::Closed)) {
                self.entries.remove(i);
            }
        }
    }

    pub(super) fn running(&self) -> usize {
        self.entries.iter().filter(|e| matches!(e.state, State::Running { .. })).count()
    }

    /// A tool of one of these responses is still running.
    fn any_running_of(&self, responses: &[String]) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.state, State::Running { .. }) && responses.contains(&e.response_id))
    }

    /// A hang-up or transfer is under way: the call is leaving, so no new responses or fillers.
    fn leaving(&self) -> bool {
        self.entries.iter().any(|e| match &e.state {
            State::Acting { action, .. } => matches!(action, Action::HangUp | Action::Transfer { .. }),
            State::Transferring => true,
            State::Running { .. } | State::Closed => false,
        })
    }

    /// No tool is running or waiting to act (nothing would be lost by switching sessions).
    pub(super) fn idle(&self) -> bool {
        self.entries.iter().all(|e| matches!(e.state, State::Closed))
    }

    /// The running calls as `function_call` items, oldest first, so a new session knows the
    /// calls their outputs will answer.
    pub(super) fn running_calls(&self) -> Vec<ClientEvent> {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::Running { .. }))
            .map(|e| ClientEvent::FunctionCall {
                call_id: e.call_id.clone(),
                name: e.name.clone(),
                arguments: if e.arguments.trim().is_empty() { "{}".to_owned() } else { e.arguments.clone() },
            })
            .collect()
    }

    /// [`Output::Transfer`] went out and no failure was reported.
    pub(super) fn transferring(&self) -> bool {
        self.entries.iter().any(|e| matches!(e.state, State::Transferring))
    }

    /// The call action to run next: the one queued first.
    fn next_action(&self) -> Option<(usize, Instant)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.state {
                State::Acting { deadline, queued, .. } => Some((i, deadline, queued)),
                _ => None,
            })
            .min_by_key(|&(_, _, queued)| queued)
            .map(|(i, deadline, _)| (i, deadline))
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter_map(|e| match e.state {
                State::Running { timeout_at, .. } => Some(timeout_at),
                _ => None,
            })
            .min()
    }

    /// When the first filler is due, given silence since `idle_since`.
    fn filler_at(&self, idle_since: Instant, delay: std::time::Duration) -> Option<(usize, Instant)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.state {
                State::Running { filler_spoken: false, .. } => {
                    Some((i, later(e.started.max(idle_since), delay)))
                }
                _ => None,
            })
            .min_by_key(|&(_, at)| at)
    }
}

// ---------------------------------------------------------------- the call's side

impl Call {
    /// The shell finished running the tool call `call_id` ([`Output::Tool`]), or failed the
    /// transfer it was asked for ([`Output::Transfer`]) and reports it with
    /// [`ToolResult::Err`].
    ///
    /// A result for a call that was cancelled, already answered, or never made is dropped and
    /// counted ([`DropReason::StaleToolResult`]).
    pub fn handle_tool_result(&mut self, now: Instant, call_id: &str, result: ToolResult) {
        if matches!(self.phase, Phase::Ended) {
            return;
        }
        let Self { phase, out, params, .. } = self;
        let Phase::Live { bridge: b, link } = phase else {
            out.push_back(Output::Event(CallEvent::Dropped {
                reason: DropReason::StaleToolResult,
                count: 1,
            }));
            return;
        };
        // Order of call actions, taken before `e` borrows the tools.
        let queued = next(&mut b.tools.next_queued);
        let Some(e) = b.tools.get_mut(call_id) else {
            out.push_back(Output::Event(CallEvent::Dropped {
                reason: DropReason::StaleToolResult,
                count: 1,
            }));
            return;
        };
        let ms = elapsed_ms(e.started, now);
        match (&e.state, result) {
            (State::Running { .. }, ToolResult::Ok(output)) => {
                e.state = State::Closed;
                out.push_back(finished(e, true, ms));
                link.send(out, reply(call_id, output));
                b.gate.owe(Some(&e.response_id));
            }
            (State::Running { .. } | State::Transferring, ToolResult::Err(message)) => {
                e.state = State::Closed;
                out.push_back(finished(e, false, ms));
                link.send(out, reply(call_id, error_output(&message)));
                b.gate.owe(Some(&e.response_id));
            }
            (State::Running { .. }, ToolResult::HangUp) => {
                let deadline = later(now, params.action_playout_cap);
                e.state = State::Acting { action: Action::HangUp, deadline, queued };
            }
            (State::Running { .. }, ToolResult::Transfer { target }) => match check_target(target.trim()) {
                Ok(()) => {
                    let deadline = later(now, params.action_playout_cap);
                    let action = Action::Transfer { target: target.trim().to_owned() };
                    e.state = State::Acting { action, deadline, queued };
                }
                Err(message) => {
                    e.state = State::Closed;
                    out.push_back(finished(e, false, ms));
                    link.send(out, reply(call_id, error_output(&message)));
                    b.gate.owe(Some(&e.response_id));
                }
            },
            (State::Running { .. }, ToolResult::SendDtmf { digits }) => match check_digits(&digits) {
                Ok(()) => {
                    let deadline = later(now, params.action_playout_cap);
                    e.state = State::Acting { action: Action::SendDtmf { digits }, deadline, queued };
                }
                Err(message) => {
                    e.state = State::Closed;
                    out.push_back(finished(e, false, ms));
                    link.send(out, reply(call_id, error_output(&message)));
                    b.gate.owe(Some(&e.response_id));
                }
            },
            _ => {
                out.push_back(Output::Event(CallEvent::Dropped {
                    reason: DropReason::StaleToolResult,
                    count: 1,
                }));
                return;
            }
        }
        self.service(now);
    }

    /// `response.function_call_arguments.done`: check the call and hand it to the shell, or
    /// answer it with an error at once.
    pub(super) fn on_function_call(
        &mut self,
        now: Instant,
        response_id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
    ) {
        let Self { phase, out, params, .. } = self;
        let Phase::Live { bridge: b, link: Link::Up { .. } } = phase else { return };
        if b.tools.get(call_id).is_some() {
            out.push_back(Output::Event(CallEvent::Dropped {
                reason: DropReason::DuplicateToolCall,
                count: 1,
            }));
            return;
        }
        let name = clip(name);
        let entry = |state| Entry {
            call_id: call_id.to_owned(),
            name: name.clone(),
            arguments: arguments.to_owned(),
            response_id: response_id.to_owned(),
            started: now,
            state,
        };
        if b.cancelled.iter().any(|r| r == response_id) {
            // The caller already interrupted this response: do not act on it.
            b.tools.push(entry(State::Closed));
            out.push_back(Output::Event(CallEvent::Dropped {
                reason: DropReason::CancelledToolCall,
                count: 1,
            }));
            out.push_back(answer(call_id, error_output(BARGE_IN_OUTPUT)));
            return;
        }
        let checked = if !params.session.tools.iter().any(|t| t.name == name) {
            Err((RejectReason::UnknownTool, format!("unknown tool: {name}")))
        } else if b.tools.running() >= MAX_RUNNING {
            Err((RejectReason::TooManyRunning, "too many tools running; wait for their results".to_owned()))
        } else {
            check_arguments(&name, arguments).map_err(|m| (RejectReason::BadArguments, m))
        };
        match checked {
            Err((reason, message)) => {
                b.tools.push(entry(State::Closed));
                out.push_back(Output::Event(CallEvent::ToolRejected {
                    call_id: call_id.to_owned(),
                    name: name.clone(),
                    reason,
                }));
                out.push_back(answer(call_id, error_output(&message)));
                b.gate.owe(Some(response_id));
            }
            Ok(builtin) => {
                let timeout_at = later(now, params.tool_timeout);
                b.tools.push(entry(State::Running { timeout_at, filler_spoken: false }));
                out.push_back(Output::Event(CallEvent::ToolCalled {
                    call_id: call_id.to_owned(),
                    name: name.clone(),
                }));
                let arguments =
                    if arguments.trim().is_empty() { "{}".to_owned() } else { arguments.to_owned() };
                out.push_back(Output::Tool(ToolRequest {
                    call_id: call_id.to_owned(),
                    name,
                    arguments,
                    response_id: response_id.to_owned(),
                    builtin,
                }));
            }
        }
    }

    /// Barge-in: cancels the tools and call actions of the `interrupted` responses.
    pub(super) fn cancel_interrupted(&mut self, now: Instant, interrupted: &[String]) {
        if interrupted.is_empty() {
            return;
        }
        let Self { phase, out, .. } = self;
        let Phase::Live { bridge: b, link: Link::Up { .. } } = phase else { return };
        for e in b.tools.entries.iter_mut().filter(|e| interrupted.contains(&e.response_id)) {
            let running = match e.state {
                State::Running { .. } => true,
                State::Acting { .. } => false,
                State::Transferring | State::Closed => continue,
            };
            e.state = State::Closed;
            if running {
                out.push_back(Output::CancelTool { call_id: e.call_id.clone() });
            }
            out.push_back(cancelled(e, CancelReason::BargeIn, now));
            out.push_back(answer(&e.call_id, error_output(BARGE_IN_OUTPUT)));
        }
    }

    /// The call is ending: cancels every running tool and waiting call action, and drops
    /// unsent key presses. A transfer handed to the shell counts as done.
    pub(super) fn cancel_all_tools(&mut self, now: Instant) {
        let Self { phase, out, .. } = self;
        let b = match phase {
            Phase::Connecting { bridge, .. }
            | Phase::Live { bridge, .. }
            | Phase::Draining { bridge, .. } => bridge,
            Phase::AwaitingStart { .. } | Phase::Ended => return,
        };
        b.dtmf.clear();
        for e in b.tools.entries.iter_mut() {
            match e.state {
                State::Running { .. } => {
                    out.push_back(Output::CancelTool { call_id: e.call_id.clone() });
                    out.push_back(cancelled(e, CancelReason::CallEnded, now));
                }
                State::Acting { .. } => out.push_back(cancelled(e, CancelReason::CallEnded, now)),
                State::Transferring => out.push_back(finished(e, true, elapsed_ms(e.started, now))),
                State::Closed => continue,
            }
            e.state = State::Closed;
        }
    }

    /// The caller started speaking: nothing is sent to the model over them, and idle time
    /// (for fillers) starts again afterwards.
    pub(super) fn note_caller_speaking(&mut self, speaking: bool) {
        let auto = self.server_creates_responses();
        let Some(b) = self.bridge_mut() else { return };
        b.caller_speaking = speaking;
        if !speaking && auto {
            // The server answers the finished turn itself, and that response sees every item
            // sent so far: a response.create of ours would be a second one.
            b.gate.forget_owed();
        }
    }

    /// Turn detection makes the server start a response when the caller stops talking.
    pub(super) fn server_creates_responses(&self) -> bool {
        use crate::core::realtime::TurnDetection;
        match &self.params.session.turn_detection {
            TurnDetection::ServerVad { create_response, .. }
            | TurnDetection::SemanticVad { create_response, .. } => *create_response,
            TurnDetection::Manual => false,
        }
    }

    /// Runs whatever is due: tool timeouts, key-press batches, call actions after playout,
    /// owed `response.create`, fillers (part of [`Call::service`]).
    ///
    /// While the session is being replaced, timeouts and call actions still run (answers for
    /// the model wait for the next session), but key presses stay batched and nothing asks for
    /// a response. Once the call is giving up, nothing runs.
    pub(super) fn service_tools(&mut self, now: Instant) {
        let Self { phase, out, params, .. } = self;
        let Phase::Live { bridge: b, link } = phase else { return };
        if matches!(link, Link::Failing { .. }) {
            return;
        }
        let up = link.is_up();
        b.gate.expire(now);
        for e in b.tools.entries.iter_mut() {
            if let State::Running { timeout_at, .. } = e.state {
                if now >= timeout_at {
                    e.state = State::Closed;
                    out.push_back(Output::CancelTool { call_id: e.call_id.clone() });
                    out.push_back(cancelled(e, CancelReason::TimedOut, now));
                    link.send(out, reply(&e.call_id, error_output("timed out")));
                    b.gate.owe(Some(&e.response_id));
                }
            }
        }
        if up {
            if let Some((text, _keys)) = b.dtmf.take_due(now) {
                out.push_back(Output::Realtime(ClientEvent::UserText { text }));
                b.gate.owe(None);
            }
        }
        let idle = played_out(b);
        match (idle, b.idle_since) {
            (true, None) => b.idle_since = Some(now),
            (false, Some(_)) => b.idle_since = None,
            _ => {}
        }
        let mut hang_up = false;
        while let Some((i, deadline)) = b.tools.next_action() {
            if !idle && now < deadline {
                break;
            }
            let e = &mut b.tools.entries[i];
            let State::Acting { action, .. } = std::mem::replace(&mut e.state, State::Closed) else { break };
            let ms = elapsed_ms(e.started, now);
            match action {
                Action::HangUp => {
                    out.push_back(finished(e, true, ms));
                    out.push_back(Output::HangUp);
                    hang_up = true;
                    break;
                }
                Action::Transfer { target } => {
                    e.state = State::Transferring;
                    out.push_back(Output::Transfer { call_id: e.call_id.clone(), target });
                }
                Action::SendDtmf { digits } => {
                    out.push_back(finished(e, true, ms));
                    out.push_back(Output::SendDtmf { digits: digits.clone() });
                    out.push_back(Output::Event(CallEvent::DtmfSent { digits: digits.clone() }));
                    link.send(out, reply(&e.call_id, json!({ "sent": digits }).to_string()));
                    b.gate.owe(Some(&e.response_id));
                }
            }
        }
        if hang_up {
            self.begin_end(now, EndReason::AgentHangup);
            return;
        }
        if b.tools.leaving() || !up {
            return;
        }
        if let Some(owed) = b.gate.owed() {
            let hold =
                b.gate.busy() || b.caller_speaking || (!owed.plain && b.tools.any_running_of(&owed.after));
            if !hold {
                b.gate.forget_owed();
                b.gate.sent(now, false);
                out.push_back(Output::Realtime(ClientEvent::ResponseCreate));
            }
        }
        if let (Some(delay), Some(since), false) = (params.filler_delay, b.idle_since, b.gate.busy()) {
            if let Some((i, at)) = b.tools.filler_at(since, delay) {
                if now >= at {
                    for e in b.tools.entries.iter_mut() {
                        if let State::Running { filler_spoken, .. } = &mut e.state {
                            *filler_spoken = true;
                        }
                    }
                    b.gate.sent(now, true);
                    out.push_back(Output::Realtime(ClientEvent::ResponseCreateOutOfBand {
                        instructions: params.filler_instructions.clone(),
                    }));
                    let call_id = b.tools.entries[i].call_id.clone();
                    out.push_back(Output::Event(CallEvent::FillerSpoken { call_id }));
                }
            }
        }
    }

    /// The earliest time [`Call::service`] has something to do (with the phase's own deadline,
    /// this is [`Call::poll_timeout`]). Mirrors the conditions in `service`, so a returned time
    /// is always acted on and the shell never spins.
    pub(super) fn tools_deadline(&self) -> Option<Instant> {
        let Phase::Live { bridge: b, link } = &self.phase else { return None };
        if matches!(link, Link::Failing { .. }) {
            return None;
        }
        let up = link.is_up();
        let mut at = [None, b.tools.next_timeout(), None, None, None];
        at[3] = b.tools.next_action().map(|(_, deadline)| deadline);
        if up {
            at[0] = b.gate.deadline();
            at[2] = b.dtmf.deadline();
        }
        if let (Some(delay), Some(since), false, false, true) =
            (self.params.filler_delay, b.idle_since, b.gate.busy(), b.tools.leaving(), up)
        {
            at[4] = b.tools.filler_at(since, delay).map(|(_, t)| t);
        }
        at.into_iter().flatten().min()
    }
}

/// Nothing of the agent is pending: no response active or requested, no agent audio queued or
/// unconfirmed by marks, and the caller is not talking.
fn played_out(b: &Bridge) -> bool {
    !b.gate.busy() && !b.playback.is_playing() && !b.caller_speaking
}

fn answer(call_id: &str, output: String) -> Output {
    Output::Realtime(reply(call_id, output))
}

fn reply(call_id: &str, output: String) -> ClientEvent {
    ClientEvent::FunctionCallOutput { call_id: call_id.to_owned(), output }
}

fn finished(e: &Entry, ok: bool, ms: u64) -> Output {
    Output::Event(CallEvent::ToolFinished { call_id: e.call_id.clone(), name: e.name.clone(), ok, ms })
}

fn cancelled(e: &Entry, reason: CancelReason, now: Instant) -> Output {
    Output::Event(CallEvent::ToolCancelled {
        call_id: e.call_id.clone(),
        name: e.name.clone(),
        reason,
        ms: elapsed_ms(e.started, now),
    })
}

fn elapsed_ms(since: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(u64::MAX)
}

fn next(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

/// The name, cut to [`MAX_NAME_CHARS`] characters (it is model output).
fn clip(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((i, _)) => name[..i].to_owned(),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_are_objects_with_unique_names() {
        let tools = builtin_tools();
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 5);
        for t in &tools {
            assert_eq!(t.parameters["type"], "object", "{}", t.name);
            assert!(!t.description.is_empty());
        }
    }

    #[test]
    fn arguments_must_be_a_json_object() {
        assert_eq!(check_arguments("lookup", ""), Ok(None));
        assert_eq!(check_arguments("lookup", r#"{"order":"A1"}"#), Ok(None));
        assert!(check_arguments("lookup", "[1]").is_err());
        assert!(
            check_arguments("lookup", r#"{"order":"#)
                .unwrap_err()
                .starts_with("arguments are not valid JSON")
        );
    }

    #[test]
    fn builtin_arguments_are_checked() {
        assert_eq!(check_arguments(END_CALL, "{}"), Ok(Some(BuiltinCall::EndCall { reason: None })));
        assert_eq!(
            check_arguments(TRANSFER_CALL, r#"{"target":" +15551230000 "}"#),
            Ok(Some(BuiltinCall::TransferCall { target: "+15551230000".into(), reason: None }))
        );
        assert!(check_arguments(TRANSFER_CALL, r#"{"target":"sip:desk@example.com"}"#).is_ok());
        assert!(check_arguments(TRANSFER_CALL, r#"{"target":"0800 123"}"#).is_err());
        assert!(check_arguments(TRANSFER_CALL, "{}").is_err());
        assert!(check_arguments(SEND_DTMF, r#"{"digits":"12w#"}"#).is_ok());
        assert!(check_arguments(SEND_DTMF, r#"{"digits":"12a"}"#).is_err());
        assert!(check_arguments(SEND_DTMF, r#"{"digits":""}"#).is_err());
        assert!(check_arguments(UPDATE_LEAD, "{}").is_err());
        assert_eq!(
            check_arguments(UPDATE_LEAD, r#"{"fields":{"age":42,"vip":true,"email":"a@b.c","x":null}}"#),
            Ok(Some(BuiltinCall::UpdateLead {
                status: None,
                notes: None,
                fields: BTreeMap::from([
                    ("age".into(), "42".into()),
                    ("email".into(), "a@b.c".into()),
                    ("vip".into(), "true".into())
                ]),
            }))
        );
        assert!(check_arguments(UPDATE_LEAD, r#"{"fields":{"a":[1]}}"#).is_err());
        assert!(check_arguments(CONSULT, r#"{"question":"  "}"#).is_err());
        assert!(check_arguments(CONSULT, r#"{"question":5}"#).is_err());
    }

    #[test]
    fn long_names_are_clipped() {
        assert_eq!(clip(&"é".repeat(100)).chars().count(), MAX_NAME_CHARS);
        assert_eq!(clip("end_call"), "end_call");
    }
}
