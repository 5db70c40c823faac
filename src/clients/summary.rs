//! The post-call summary: the transcript goes to a chat model through `async-openai` (Chat
//! Completions with a strict JSON-schema response format) and comes back as a summary and an
//! outcome for the lead.
//!
//! Follows <https://platform.openai.com/docs/guides/structured-outputs> and
//! <https://platform.openai.com/docs/api-reference/chat/create>. The base URL is configurable,
//! so the built-in simulator ([`crate::sim::chat`]) serves it in tests and the demo.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequestArgs, ResponseFormat, ResponseFormatJsonSchema,
};
use serde::{Deserialize, Serialize};

/// Limit on one summary request, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the model is asked for (system message).
const INSTRUCTIONS: &str = "You read the transcript of a phone call between an AI agent and a \
caller (usually a sales lead). Write a two or three sentence summary of what was said and agreed, \
and classify the outcome for the lead: interested, not_interested, callback (asked to be called \
again later), voicemail (reached a voicemail or answering machine), no_answer (nobody spoke), or \
unknown. Answer in the language of the call.";

/// The call's result for the lead (the `calls.outcome` column and the lead's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Wants to go on.
    Interested,
    /// Declined.
    NotInterested,
    /// Asked to be called again later.
    Callback,
    /// A voicemail or answering machine answered.
    Voicemail,
    /// Nobody spoke.
    NoAnswer,
    /// None of the above could be told.
    Unknown,
}

impl Outcome {
    /// Every outcome, in schema order.
    pub const ALL: [Outcome; 6] = [
        Self::Interested,
        Self::NotInterested,
        Self::Callback,
        Self::Voicemail,
        Self::NoAnswer,
        Self::Unknown,
    ];

    /// The wire value, e.g. `not_interested`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interested => "interested",
            Self::NotInterested => "not_interested",
            Self::Callback => "callback",
            Self::Voicemail => "voicemail",
            Self::NoAnswer => "no_answer",
            Self::Unknown => "unknown",
        }
    }
}

/// The model's answer, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// A short summary of the call.
    pub summary: String,
    /// The lead's outcome.
    pub outcome: Outcome,
}

/// Why there is no summary.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The API call failed (HTTP, network, or an error object).
    #[error("chat completion failed: {0}")]
    Api(String),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The answer was not the requested JSON (refusal, empty, or wrong shape).
    #[error("unusable answer: {0}")]
    Answer(String),
}

/// A chat-completions client for summaries.
#[derive(Debug, Clone)]
pub struct Summarizer {
    client: Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
}

impl Summarizer {
    /// `api_base` is e.g. `https://api.openai.com/v1`. Needs a rustls crypto provider installed.
    ///
    /// Errors: the HTTP client cannot be built.
    pub fn new(api_base: &str, api_key: &str, model: &str, timeout: Duration) -> Result<Self, SummaryError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| SummaryError::Api(e.to_string()))?;
        let config = OpenAIConfig::new().with_api_base(api_base.trim_end_matches('/')).with_api_key(api_key);
        Ok(Self { client: Client::build(http, config), model: model.to_owned(), timeout })
    }

    /// Summarises a transcript given as `Caller: …` / `Agent: …` lines.
    ///
    /// Errors: see [`SummaryError`].
    pub async fn summarize(&self, transcript: &str) -> Result<Summary, SummaryError> {
        let api = |e: async_openai::error::OpenAIError| SummaryError::Api(e.to_string());
        let request = CreateChatCompletionRequestArgs::default()
            .model(self.model.as_str())
            .messages([
                ChatCompletionRequestSystemMessageArgs::default()
                    .content(INSTRUCTIONS)
                    .build()
                    .map_err(api)?
                    .into(),
                ChatCompletionRequestUserMessageArgs::default()
                    .content(transcript)
                    .build()
                    .map_err(api)?
                    .into(),
            ])
            .response_format(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    name: "call_summary".into(),
                    description: Some("Summary and lead outcome of one phone call".into()),
                    schema: schema(),
                    strict: Some(true),
                },
            })
            .build()
            .map_err(api)?;
        let response = tokio::time::timeout(self.timeout, self.client.chat().create(request))
            .await
            .map_err(|_| SummaryError::Timeout(self.timeout))?
            .map_err(api)?;
        let message = response
            .choices
            .into_iter()
            .next()
            .map(|c| c.message)
            .ok_or_else(|| SummaryError::Answer("no choices".into()))?;
        if let Some(refusal) = message.refusal {
            return Err(SummaryError::Answer(format!("refused: {refusal}")));
        }
        let content = message.content.ok_or_else(|| SummaryError::Answer("no content".into()))?;
        serde_json::from_str(&content).map_err(|e| SummaryError::Answer(format!("{e}: {content}")))
    }
}

/// The strict JSON schema of [`Summary`].
pub fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "outcome": {"type": "string", "enum": Outcome::ALL.map(Outcome::as_str)},
        },
        "required": ["summary", "outcome"],
        "additionalProperties": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_lists_every_outcome_and_is_strict() {
        let s = schema();
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["outcome"]["enum"].as_array().map(Vec::len), Some(Outcome::ALL.len()));
        let parsed: Summary = serde_json::from_str(r#"{"summary":"ok","outcome":"callback"}"#).unwrap();
        assert_eq!(parsed.outcome, Outcome::Callback);
        assert!(serde_json::from_str::<Summary>(r#"{"summary":"ok","outcome":"maybe"}"#).is_err());
    }
}
