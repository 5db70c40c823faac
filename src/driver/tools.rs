//! Running the model's tool calls off the audio loop: each [`ToolRequest`] becomes a task with
//! a timeout whose [`ToolResult`] goes back into the call; provider actions (hang-up, transfer)
//! go through the provider's REST API.

use std::sync::Arc;
use std::time::Duration;

use crate::clients::telephony_rest::TelephonyRest;
use crate::clients::tools::{Consultant, CustomTool};
use crate::core::call::{BuiltinCall, ToolRequest, ToolResult, Turn, builtin_tools};
use crate::core::call::{Role, tools};
use crate::core::realtime::FunctionTool;
use crate::core::telephony::Dialect;
use crate::store::record::{CallNote, LeadUpdate};

/// What tools can reach.
pub struct ToolRuntime {
    /// For custom tools.
    pub http: reqwest::Client,
    /// Custom tools by name.
    pub custom: Vec<CustomTool>,
    /// `consult`'s model, if configured.
    pub consultant: Option<Consultant>,
    /// Allowed transfer targets (exact, or prefixes ending in `*`); empty disables transfers.
    pub transfer_targets: Vec<String>,
    /// Twilio REST (hang-up, transfer).
    pub twilio: Option<TelephonyRest>,
    /// SignalWire REST.
    pub signalwire: Option<TelephonyRest>,
}

/// What a tool task knows about its call.
pub struct ToolContext {
    /// The call.
    pub call_sid: String,
    /// Its provider.
    pub dialect: Dialect,
    /// The lead, from the signed stream parameters.
    pub lead_id: Option<String>,
    /// The conversation so far, when the tool was called.
    pub transcript: Vec<Turn>,
}

impl ToolRuntime {
    /// The tools to declare in `session.update`: the built-ins that can work with this
    /// configuration, then the custom ones.
    pub fn declared(&self) -> Vec<FunctionTool> {
        let mut out: Vec<FunctionTool> = builtin_tools()
            .into_iter()
            .filter(|t| match t.name.as_str() {
                tools::TRANSFER_CALL => !self.transfer_targets.is_empty() && self.has_rest(),
                // Only SignalWire can play DTMF on the stream.
                tools::SEND_DTMF => self.signalwire.is_some(),
                tools::CONSULT => self.consultant.is_some(),
                _ => true,
            })
            .collect();
        out.extend(self.custom.iter().map(|t| FunctionTool {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters: t.parameters.clone(),
        }));
        out
    }

    fn has_rest(&self) -> bool {
        self.twilio.is_some() || self.signalwire.is_some()
    }

    /// The provider's REST client for `dialect`.
    pub fn rest(&self, dialect: Dialect) -> Option<&TelephonyRest> {
        match dialect {
            Dialect::Twilio => self.twilio.as_ref(),
            Dialect::SignalWire => self.signalwire.as_ref(),
        }
    }

    /// Whether the model may transfer to `target`.
    pub fn transfer_allowed(&self, target: &str) -> bool {
        self.transfer_targets.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => target.starts_with(prefix),
            None => t == target,
        })
    }

    /// Runs one tool to its result, within `timeout`. Store writes go through `notes`.
    pub async fn run(
        self: Arc<Self>,
        req: ToolRequest,
        ctx: ToolContext,
        notes: Option<tokio::sync::mpsc::Sender<CallNote>>,
        timeout: Duration,
    ) -> ToolResult {
        match tokio::time::timeout(timeout, self.execute(req, ctx, notes)).await {
            Ok(r) => r,
            Err(_) => ToolResult::Err("the tool timed out".into()),
        }
    }

    async fn execute(
        &self,
        req: ToolRequest,
        ctx: ToolContext,
        notes: Option<tokio::sync::mpsc::Sender<CallNote>>,
    ) -> ToolResult {
        match req.builtin {
            Some(BuiltinCall::EndCall { .. }) => ToolResult::HangUp,
            Some(BuiltinCall::TransferCall { target, .. }) => {
                if self.transfer_allowed(&target) && self.rest(ctx.dialect).is_some() {
                    ToolResult::Transfer { target }
                } else {
                    ToolResult::Err("transfers to that destination are not allowed".into())
                }
            }
            Some(BuiltinCall::SendDtmf { digits }) => {
                if ctx.dialect == Dialect::SignalWire {
                    ToolResult::SendDtmf { digits }
                } else {
                    ToolResult::Err("this phone line cannot send keys".into())
                }
            }
            Some(BuiltinCall::UpdateLead { status, notes: text, fields }) => {
                let Some(lead_id) = ctx.lead_id else {
                    return ToolResult::Err("this call has no lead".into());
                };
                let update = LeadUpdate { call_sid: ctx.call_sid, lead_id, status, notes: text, fields };
                let sent = notes.is_some_and(|tx| tx.try_send(CallNote::Lead(update)).is_ok());
                if sent {
                    ToolResult::Ok(r#"{"updated":true}"#.into())
                } else {
                    ToolResult::Err("the lead could not be updated right now".into())
                }
            }
            Some(BuiltinCall::Consult { question }) => match &self.consultant {
                Some(c) => match c.ask(&question, &transcript_text(&ctx.transcript)).await {
                    Ok(answer) => ToolResult::Ok(serde_json::json!({ "answer": answer }).to_string()),
                    Err(e) => ToolResult::Err(e),
                },
                None => ToolResult::Err("no expert model is configured".into()),
            },
            None => match self.custom.iter().find(|t| t.name == req.name) {
                Some(t) => match t.call(&self.http, &ctx.call_sid, &req.arguments).await {
                    Ok(out) => ToolResult::Ok(out),
                    Err(e) => ToolResult::Err(e),
                },
                None => ToolResult::Err("unknown tool".into()),
            },
        }
    }
}

/// `Caller: …` / `Agent: …` lines in speech order.
pub fn transcript_text(turns: &[Turn]) -> String {
    let mut out = String::new();
    for t in turns.iter().filter(|t| !t.text.trim().is_empty()) {
        out.push_str(if t.role == Role::Caller { "Caller: " } else { "Agent: " });
        out.push_str(t.text.trim());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(targets: &[&str]) -> ToolRuntime {
        ToolRuntime {
            http: reqwest::Client::new(),
            custom: Vec::new(),
            consultant: None,
            transfer_targets: targets.iter().map(|t| t.to_string()).collect(),
            twilio: None,
            signalwire: None,
        }
    }

    #[test]
    fn transfers_only_to_listed_targets() {
        let rt = runtime(&["+15550100099", "sip:*"]);
        assert!(rt.transfer_allowed("+15550100099"));
        assert!(rt.transfer_allowed("sip:desk@pbx.example.com"));
        assert!(!rt.transfer_allowed("+15550100098"));
        assert!(!runtime(&[]).transfer_allowed("+15550100099"));
    }

    #[test]
    fn only_workable_builtins_are_declared() {
        let names: Vec<String> = runtime(&["+1555*"]).declared().into_iter().map(|t| t.name).collect();
        assert!(names.contains(&tools::END_CALL.to_owned()));
        assert!(names.contains(&tools::UPDATE_LEAD.to_owned()));
        // No REST client: no transfer; no SignalWire: no DTMF; no consultant: no consult.
        assert!(
            !names.iter().any(|n| n == tools::TRANSFER_CALL || n == tools::SEND_DTMF || n == tools::CONSULT)
        );
    }
}
