//! Outbound calls made on the model's behalf: custom tools (an HTTPS endpoint per tool that
//! receives the arguments) and `consult` (a stronger text model answers a hard question).
//!
//! `consult` uses the Anthropic Messages API when an Anthropic key is configured
//! (<https://docs.anthropic.com/en/api/messages>), else any OpenAI-compatible Chat Completions
//! endpoint through `async-openai` (<https://platform.openai.com/docs/api-reference/chat/create>).
//! Base URLs are configurable so tests use local servers.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequestArgs,
};
use serde::Deserialize;

/// Largest tool or consult answer passed back to the model (bytes); longer ones are cut.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// `anthropic-version` header of the Messages API.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Instructions for the consulted model.
const CONSULT_SYSTEM: &str = "A voice agent on a phone call asks you a question it could not answer \
alone. You get the question and the conversation so far. Answer in two or three short, plain \
sentences that can be read aloud; no lists, no markdown.";

/// A tool from the tools file: declared to the model, run by POSTing its arguments.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomTool {
    /// Function name (`[a-zA-Z0-9_-]{1,64}`).
    pub name: String,
    /// When to use it, for the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    /// Where the arguments are POSTed (`https://`; `http://` only to loopback).
    pub url: String,
    /// Limit on one call (ms); default 10,000.
    #[serde(default = "default_tool_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_tool_timeout_ms() -> u64 {
    10_000
}

impl CustomTool {
    /// Checks the name and URL rules.
    ///
    /// Errors: a message naming the tool and the problem.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(format!("tool name {:?} must be 1-64 of [a-zA-Z0-9_-]", self.name));
        }
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
        if !(self.url.starts_with("https://") || loopback.iter().any(|p| self.url.starts_with(p))) {
            return Err(format!("tool {}: url must be https:// (http:// only to loopback)", self.name));
        }
        if !self.parameters.is_object() {
            return Err(format!("tool {}: parameters must be a JSON Schema object", self.name));
        }
        Ok(())
    }

    /// POSTs `arguments` (a JSON object) with the call's SID in `X-Callbridge-Call-Sid`.
    /// The answer is passed to the model as is when it is JSON, else as `{"result": text}`.
    ///
    /// Errors: timeout, connection failure, non-2xx (with the status), unreadable body.
    pub async fn call(
        &self,
        http: &reqwest::Client,
        call_sid: &str,
        arguments: &str,
    ) -> Result<String, String> {
        let resp = http
            .post(&self.url)
            .timeout(Duration::from_millis(self.timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Callbridge-Call-Sid", call_sid)
            .body(arguments.to_owned())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "the tool timed out".to_owned()
                } else {
                    "the tool is unreachable".to_owned()
                }
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|_| "the tool's answer could not be read".to_owned())?;
        if !status.is_success() {
            return Err(format!("the tool failed with HTTP {}", status.as_u16()));
        }
        let text = super::truncate(&text, MAX_ANSWER_BYTES);
        Ok(match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(_) => text,
            Err(_) => serde_json::json!({ "result": text }).to_string(),
        })
    }
}

/// Where `consult` goes.
#[derive(Debug, Clone)]
pub enum Consultant {
    /// Anthropic Messages API.
    Anthropic {
        /// HTTP client (with the timeout).
        http: reqwest::Client,
        /// e.g. `https://api.anthropic.com`.
        base_url: String,
        /// `x-api-key`.
        api_key: String,
        /// e.g. `claude-sonnet-4-5`.
        model: String,
    },
    /// An OpenAI-compatible Chat Completions endpoint.
    OpenAi {
        /// The client.
        client: Client<OpenAIConfig>,
        /// e.g. `gpt-4.1`.
        model: String,
    },
}

impl Consultant {
    /// An Anthropic consultant.
    pub fn anthropic(base_url: &str, api_key: &str, model: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Self::Anthropic {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            model: model.to_owned(),
        })
    }

    /// An OpenAI-compatible consultant at `api_base` (e.g. `https://api.openai.com/v1`).
    pub fn openai(api_base: &str, api_key: &str, model: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        let config = OpenAIConfig::new().with_api_base(api_base.trim_end_matches('/')).with_api_key(api_key);
        Ok(Self::OpenAi { client: Client::build(http, config), model: model.to_owned() })
    }

    /// Asks `question` with the conversation so far (`Caller: …` / `Agent: …` lines); returns
    /// the answer text, cut to [`MAX_ANSWER_BYTES`].
    ///
    /// Errors: a short reason fit to tell the model (no secrets, no personal data).
    pub async fn ask(&self, question: &str, transcript: &str) -> Result<String, String> {
        let prompt = format!("Conversation so far:\n{transcript}\n\nQuestion: {question}");
        match self {
            Self::Anthropic { http, base_url, api_key, model } => {
                let body = serde_json::json!({
                    "model": model,
                    "max_tokens": 400,
                    "system": CONSULT_SYSTEM,
                    "messages": [{"role": "user", "content": prompt}],
                });
                let resp = http
                    .post(format!("{base_url}/v1/messages"))
                    .header("x-api-key", api_key)
                    .header("anthropic-version", ANTHROPIC_VERSION)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|_| "the expert model is unreachable".to_owned())?;
                if !resp.status().is_success() {
                    return Err(format!("the expert model failed with HTTP {}", resp.status().as_u16()));
                }
                #[derive(Deserialize)]
                struct Block {
                    #[serde(rename = "type")]
                    kind: String,
                    text: Option<String>,
                }
                #[derive(Deserialize)]
                struct Message {
                    content: Vec<Block>,
                }
                let msg: Message =
                    resp.json().await.map_err(|_| "the expert's answer was unreadable".to_owned())?;
                let text: String =
                    msg.content.into_iter().filter(|b| b.kind == "text").filter_map(|b| b.text).collect();
                if text.is_empty() {
                    Err("the expert gave no answer".into())
                } else {
                    Ok(super::truncate(&text, MAX_ANSWER_BYTES))
                }
            }
            Self::OpenAi { client, model } => {
                let fail = |_| "the expert model request was invalid".to_owned();
                let request = CreateChatCompletionRequestArgs::default()
                    .model(model.as_str())
                    .messages([
                        ChatCompletionRequestSystemMessageArgs::default()
                            .content(CONSULT_SYSTEM)
                            .build()
                            .map_err(fail)?
                            .into(),
                        ChatCompletionRequestUserMessageArgs::default()
                            .content(prompt)
                            .build()
                            .map_err(fail)?
                            .into(),
                    ])
                    .build()
                    .map_err(fail)?;
                let response =
                    client.chat().create(request).await.map_err(|_| "the expert model failed".to_owned())?;
                response
                    .choices
                    .into_iter()
                    .find_map(|c| c.message.content)
                    .filter(|t| !t.is_empty())
                    .map(|t| super::truncate(&t, MAX_ANSWER_BYTES))
                    .ok_or_else(|| "the expert gave no answer".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, url: &str) -> CustomTool {
        CustomTool {
            name: name.into(),
            description: "d".into(),
            parameters: serde_json::json!({"type": "object"}),
            url: url.into(),
            timeout_ms: 1000,
        }
    }

    #[test]
    fn custom_tools_need_a_plain_name_and_an_https_url() {
        assert!(tool("check_order", "https://tools.example.com/order").validate().is_ok());
        assert!(tool("check_order", "http://127.0.0.1:9/x").validate().is_ok());
        assert!(tool("check order", "https://x").validate().is_err());
        assert!(tool("x", "http://tools.example.com/order").validate().is_err());
        assert!(tool(&"a".repeat(65), "https://x").validate().is_err());
    }
}
