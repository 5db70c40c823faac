//! Configuration from the environment (12-factor). This is the only module that reads it.
//!
//! Every variable is an `ENV_*` constant and every default a `DEFAULT_*` constant. Parsing goes
//! through [`Source`] so tests pass a map instead of touching the process environment. A bad value
//! stops start-up with a [`ConfigError`] that names the variable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::core::call::CallParams;
pub use crate::core::call::{
    DEFAULT_MARK_INTERVAL_MS, DEFAULT_MAX_LEAD_MS, DEFAULT_START_TIMEOUT, DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
};
use crate::core::realtime::{NoiseReduction, SessionConfig, Transcription, TurnDetection};

/// Address to listen on; default `0.0.0.0`.
pub const ENV_HOST: &str = "HOST";
/// Port to listen on (`0` picks a free one); default `8080`.
pub const ENV_PORT: &str = "PORT";
/// Realtime API key; required, never logged.
pub const ENV_OPENAI_API_KEY: &str = "OPENAI_API_KEY";
/// Realtime WebSocket URL (`ws://` or `wss://`; the model is added as `?model=`);
/// default `wss://api.openai.com/v1/realtime`.
pub const ENV_OPENAI_REALTIME_URL: &str = "OPENAI_REALTIME_URL";
/// Realtime model (on Azure: the deployment name); default `gpt-realtime`.
pub const ENV_OPENAI_REALTIME_MODEL: &str = "OPENAI_REALTIME_MODEL";
/// How the key is sent: `bearer` (`Authorization: Bearer`) or `api-key` (Azure's `api-key`
/// header); default `bearer`, or `api-key` for `*.azure.com` URLs.
pub const ENV_OPENAI_AUTH: &str = "OPENAI_AUTH";
/// The session's instructions; default [`DEFAULT_AGENT_INSTRUCTIONS`].
pub const ENV_AGENT_INSTRUCTIONS: &str = "AGENT_INSTRUCTIONS";
/// Model voice; default `marin`.
pub const ENV_AGENT_VOICE: &str = "AGENT_VOICE";
/// `passthrough` (G.711 straight through; L16 streams are still transcoded) or `transcode`
/// (always PCM 24 kHz); default `passthrough`.
pub const ENV_AUDIO_MODE: &str = "AUDIO_MODE";
/// `server_vad`, `semantic_vad` or `none`; default `server_vad`.
pub const ENV_TURN_DETECTION: &str = "TURN_DETECTION";
/// Server VAD threshold, 0–1; default `0.5`. Read only with `server_vad`.
pub const ENV_VAD_THRESHOLD: &str = "VAD_THRESHOLD";
/// Silence that ends a caller turn (ms); default `500`. Read only with `server_vad`.
pub const ENV_VAD_SILENCE_MS: &str = "VAD_SILENCE_MS";
/// Audio kept before detected speech (ms); default `300`. Read only with `server_vad`.
pub const ENV_VAD_PREFIX_PADDING_MS: &str = "VAD_PREFIX_PADDING_MS";
/// Whether caller speech cancels the model's response (`true`/`false`); default `true`.
pub const ENV_INTERRUPT_RESPONSE: &str = "INTERRUPT_RESPONSE";
/// Caller transcription model, `off` disables it; default `gpt-4o-mini-transcribe`.
pub const ENV_TRANSCRIPTION_MODEL: &str = "TRANSCRIPTION_MODEL";
/// ISO-639-1 language hint for caller transcription; unset by default.
pub const ENV_TRANSCRIPTION_LANGUAGE: &str = "TRANSCRIPTION_LANGUAGE";
/// Input noise reduction: `near_field`, `far_field` or `off`; default `near_field`.
pub const ENV_NOISE_REDUCTION: &str = "NOISE_REDUCTION";
/// Concurrent calls (at least 1); further streams get HTTP 503; default `1000`.
pub const ENV_MAX_CALLS: &str = "MAX_CALLS";
/// Largest provider WebSocket message (bytes); larger ones close the stream (1009);
/// default `65536`.
pub const ENV_MAX_MESSAGE_BYTES: &str = "MAX_MESSAGE_BYTES";
/// A stream without a valid `start` by then is closed (1008); default `10s`.
pub const ENV_START_TIMEOUT: &str = "START_TIMEOUT";
/// Limit on Realtime connect + handshake; default `10s`.
pub const ENV_UPSTREAM_CONNECT_TIMEOUT: &str = "UPSTREAM_CONNECT_TIMEOUT";
/// Slow or stalled HTTP requests and upgrades are cut after this; default `10s`.
pub const ENV_UPGRADE_TIMEOUT: &str = "UPGRADE_TIMEOUT";
/// On SIGTERM/SIGINT, how long active calls may continue; default `30s`.
pub const ENV_DRAIN_TIMEOUT: &str = "DRAIN_TIMEOUT";
/// Most unplayed agent audio queued at the provider (ms, at least 20); default `300`.
pub const ENV_MAX_LEAD_MS: &str = "MAX_LEAD_MS";
/// Agent audio between playback marks (ms, at least 20); default `100`.
pub const ENV_MARK_INTERVAL_MS: &str = "MARK_INTERVAL_MS";
/// Directory of the local SQLite store (call records and the outbox); default `./data`.
pub const ENV_DATA_DIR: &str = "CALLBRIDGE_DATA_DIR";
/// Supabase project URL (`https://<ref>.supabase.co`); unset keeps records local only.
pub const ENV_SUPABASE_URL: &str = "SUPABASE_URL";
/// Supabase service-role JWT or `sb_secret_…` key; required with [`ENV_SUPABASE_URL`], never
/// logged.
pub const ENV_SUPABASE_SERVICE_ROLE_KEY: &str = "SUPABASE_SERVICE_ROLE_KEY";
/// Path of the Data API under [`ENV_SUPABASE_URL`]; default `/rest/v1` (`/` for a bare
/// PostgREST server).
pub const ENV_SUPABASE_REST_PATH: &str = "SUPABASE_REST_PATH";
/// First retry delay of a failed Supabase write; default `1s`.
pub const ENV_SUPABASE_RETRY_FIRST: &str = "SUPABASE_RETRY_FIRST";
/// Largest retry delay of a failed Supabase write; default `60s`.
pub const ENV_SUPABASE_RETRY_MAX: &str = "SUPABASE_RETRY_MAX";
/// Table of leads updated after each call; default `leads`.
pub const ENV_LEAD_TABLE: &str = "LEAD_TABLE";
/// Chat model for the post-call summary, `off` disables it; default `gpt-4.1-mini`.
pub const ENV_SUMMARY_MODEL: &str = "SUMMARY_MODEL";
/// Base URL of the OpenAI-compatible API the summary uses; default `https://api.openai.com/v1`.
pub const ENV_OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
/// Bearer token for every `/v1` route; unset disables them (401).
pub const ENV_API_TOKEN: &str = "API_TOKEN";
/// The server's public base URL as providers see it (`https://bridge.example.com`): webhook
/// signatures are checked against it and stream URLs are built from it. Required for `/twiml`
/// and outbound calls.
pub const ENV_PUBLIC_URL: &str = "PUBLIC_URL";
/// Twilio account SID (outbound calls, hang-up, transfer).
pub const ENV_TWILIO_ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
/// Twilio auth token: signs webhooks and media-stream upgrades; never logged.
pub const ENV_TWILIO_AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
/// `false` turns signature checks off (local development and load tests only; warned about
/// at start-up); default `true`.
pub const ENV_TWILIO_VALIDATE_SIGNATURE: &str = "TWILIO_VALIDATE_SIGNATURE";
/// Twilio REST API base; default `https://api.twilio.com` (tests point it at a local fake).
pub const ENV_TWILIO_API_BASE: &str = "TWILIO_API_BASE";
/// SignalWire space (`example.signalwire.com`) for its Compatibility REST API.
pub const ENV_SIGNALWIRE_SPACE: &str = "SIGNALWIRE_SPACE";
/// SignalWire project ID.
pub const ENV_SIGNALWIRE_PROJECT_ID: &str = "SIGNALWIRE_PROJECT_ID";
/// SignalWire API token (REST); never logged.
pub const ENV_SIGNALWIRE_API_TOKEN: &str = "SIGNALWIRE_API_TOKEN";
/// SignalWire signing key: signs its webhooks; never logged.
pub const ENV_SIGNALWIRE_SIGNING_KEY: &str = "SIGNALWIRE_SIGNING_KEY";
/// Key for stream tokens (≥ 32 bytes, the same on every instance); default: derived from the
/// auth token / signing key.
pub const ENV_STREAM_TOKEN_KEY: &str = "STREAM_TOKEN_KEY";
/// How long a stream token minted by `/twiml` stays valid; default `60s`.
pub const ENV_STREAM_TOKEN_TTL: &str = "STREAM_TOKEN_TTL";
/// Media-stream upgrades allowed per client IP per minute; default `1200` (providers stream from few addresses: a busy instance gets many calls per minute from one IP).
pub const ENV_UPGRADES_PER_IP_PER_MINUTE: &str = "UPGRADES_PER_IP_PER_MINUTE";
/// Header holding the client IP behind a trusted proxy (e.g. `Fly-Client-IP`); unset uses the
/// TCP peer address.
pub const ENV_CLIENT_IP_HEADER: &str = "CLIENT_IP_HEADER";
/// Answering-machine detection on outbound calls: `off`, `enable` or `detect_message_end`;
/// default `off`.
pub const ENV_MACHINE_DETECTION: &str = "MACHINE_DETECTION";
/// JSON file of custom tools: `[{"name", "description", "parameters", "url", "timeout_ms"}]`;
/// unset means built-in tools only.
pub const ENV_TOOLS_FILE: &str = "TOOLS_FILE";
/// Comma-separated numbers / SIP URIs (a trailing `*` makes a prefix) the model may transfer a
/// call to; unset disables `transfer_call`.
pub const ENV_TRANSFER_TARGETS: &str = "TRANSFER_TARGETS";
/// How long a tool may run before the caller hears a short filler, `off` for none; default
/// `1500ms`.
pub const ENV_TOOL_FILLER_DELAY: &str = "TOOL_FILLER_DELAY";
/// Anthropic API key: `consult` then uses Claude through the Messages API; never logged.
pub const ENV_ANTHROPIC_API_KEY: &str = "ANTHROPIC_API_KEY";
/// Anthropic API base; default `https://api.anthropic.com`.
pub const ENV_ANTHROPIC_BASE_URL: &str = "ANTHROPIC_BASE_URL";
/// Model `consult` asks; default `claude-sonnet-4-5` with Anthropic, else `gpt-4.1`.
pub const ENV_CONSULT_MODEL: &str = "CONSULT_MODEL";
/// The model's session length cap: the session is recycled (reconnected and restored) at a
/// quiet moment before it; `off` never recycles; default `60m`, or `30m` for `*.azure.com`.
pub const ENV_SESSION_CAP: &str = "SESSION_CAP";
/// Reconnect attempts after the Realtime session is lost mid-call (0 ends the call instead);
/// default `5`.
pub const ENV_RECONNECT_ATTEMPTS: &str = "RECONNECT_ATTEMPTS";
/// Log output, `json` or `pretty`; default `json`. The level comes from `RUST_LOG`.
pub const ENV_LOG_FORMAT: &str = "LOG_FORMAT";

/// Default of [`ENV_HOST`]: every IPv4 interface.
pub const DEFAULT_HOST: &str = "0.0.0.0";
/// Default of [`ENV_PORT`].
pub const DEFAULT_PORT: u16 = 8080;
/// Default of [`ENV_OPENAI_REALTIME_URL`]: OpenAI's Realtime endpoint.
pub const DEFAULT_OPENAI_REALTIME_URL: &str = "wss://api.openai.com/v1/realtime";
/// Default of [`ENV_OPENAI_REALTIME_MODEL`].
pub const DEFAULT_OPENAI_REALTIME_MODEL: &str = "gpt-realtime";
/// Default of [`ENV_AGENT_INSTRUCTIONS`]: a short phone-agent prompt.
pub const DEFAULT_AGENT_INSTRUCTIONS: &str = "You are a friendly, concise phone agent. Speak naturally, keep answers short, \
     and let the caller interrupt you.";
/// Default of [`ENV_AGENT_VOICE`].
pub const DEFAULT_AGENT_VOICE: &str = "marin";
/// Default of [`ENV_VAD_THRESHOLD`] (0–1).
pub const DEFAULT_VAD_THRESHOLD: f32 = 0.5;
/// Default of [`ENV_VAD_SILENCE_MS`] (ms).
pub const DEFAULT_VAD_SILENCE_MS: u32 = 500;
/// Default of [`ENV_VAD_PREFIX_PADDING_MS`] (ms).
pub const DEFAULT_VAD_PREFIX_PADDING_MS: u32 = 300;
/// Default of [`ENV_TRANSCRIPTION_MODEL`].
pub const DEFAULT_TRANSCRIPTION_MODEL: &str = "gpt-4o-mini-transcribe";
/// Default of [`ENV_MAX_CALLS`].
pub const DEFAULT_MAX_CALLS: usize = 1000;
/// Default of [`ENV_MAX_MESSAGE_BYTES`] (bytes).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Default of [`ENV_UPGRADE_TIMEOUT`].
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ENV_DRAIN_TIMEOUT`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`ENV_TWILIO_API_BASE`].
pub const DEFAULT_TWILIO_API_BASE: &str = "https://api.twilio.com";
/// Default of [`ENV_STREAM_TOKEN_TTL`].
pub const DEFAULT_STREAM_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Default of [`ENV_UPGRADES_PER_IP_PER_MINUTE`].
pub const DEFAULT_UPGRADES_PER_IP_PER_MINUTE: u32 = 1200;
/// Default of [`ENV_TOOL_FILLER_DELAY`].
pub const DEFAULT_TOOL_FILLER_DELAY: Duration = Duration::from_millis(1500);
/// Default of [`ENV_ANTHROPIC_BASE_URL`].
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// Default of [`ENV_CONSULT_MODEL`] with Anthropic.
pub const DEFAULT_CONSULT_MODEL_ANTHROPIC: &str = "claude-sonnet-4-5";
/// Default of [`ENV_CONSULT_MODEL`] without Anthropic.
pub const DEFAULT_CONSULT_MODEL_OPENAI: &str = "gpt-4.1";
/// Default of [`ENV_DATA_DIR`].
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default of [`ENV_SUPABASE_REST_PATH`].
pub const DEFAULT_SUPABASE_REST_PATH: &str = "/rest/v1";
/// Default of [`ENV_SUPABASE_RETRY_FIRST`].
pub const DEFAULT_SUPABASE_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Default of [`ENV_SUPABASE_RETRY_MAX`].
pub const DEFAULT_SUPABASE_RETRY_MAX: Duration = Duration::from_secs(60);
/// Default of [`ENV_LEAD_TABLE`].
pub const DEFAULT_LEAD_TABLE: &str = "leads";
/// Default of [`ENV_SUMMARY_MODEL`].
pub const DEFAULT_SUMMARY_MODEL: &str = "gpt-4.1-mini";
/// Default of [`ENV_OPENAI_BASE_URL`].
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// A bad or missing configuration value; the message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{var} is required but not set")]
    Missing {
        /// The variable's name.
        var: &'static str,
    },
    /// A variable's value does not parse or is out of range.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// The value as set.
        value: String,
        /// What was expected, or the parser's message.
        reason: String,
    },
}

/// Where configuration values come from: the process environment or, in tests, a map.
pub trait Source {
    /// The value of `key`, or `None` when unset. Empty strings count as unset.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Source for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).filter(|v| !v.is_empty()).cloned()
    }
}

/// How the Realtime key is sent on the WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>` (OpenAI).
    Bearer,
    /// `api-key: <key>` (Azure OpenAI).
    ApiKey,
}

/// Where and how to reach the Realtime API.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// Base WebSocket URL, e.g. `wss://api.openai.com/v1/realtime`.
    pub url: String,
    /// Model name, added as the `model` query parameter (Azure: the deployment name).
    pub model: String,
    /// API key (secret: never logged).
    pub api_key: String,
    /// Header style for the key.
    pub auth: AuthStyle,
    /// Connect + handshake timeout.
    pub connect_timeout: Duration,
    /// Largest accepted upstream message (bytes).
    pub max_message_bytes: usize,
}

impl UpstreamConfig {
    /// Settings for the built-in Realtime simulator at `url` (demo, tests, load runs): a
    /// placeholder key, bearer auth, a 5 s connect timeout.
    pub fn simulator(url: String) -> Self {
        Self {
            url,
            model: DEFAULT_OPENAI_REALTIME_MODEL.to_owned(),
            api_key: "sim-key-not-a-secret".to_owned(),
            auth: AuthStyle::Bearer,
            connect_timeout: std::time::Duration::from_secs(5),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &"[redacted]")
            .field("auth", &self.auth)
            .finish()
    }
}

/// The whole server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`HOST`).
    pub host: IpAddr,
    /// Port to listen on, `0` for a free one (`PORT`).
    pub port: u16,
    /// Where and how to reach the Realtime API (`OPENAI_*`, `UPSTREAM_CONNECT_TIMEOUT`).
    pub upstream: UpstreamConfig,
    /// Per-call behaviour of the bridge.
    pub call: CallParams,
    /// Largest accepted provider message (bytes); larger frames are refused while reading.
    pub max_message_bytes: usize,
    /// Cap on concurrent calls; further streams are refused.
    pub max_calls: usize,
    /// Slow or stalled HTTP requests/upgrades are cut after this.
    pub upgrade_timeout: Duration,
    /// On SIGTERM, active calls get this long to finish.
    pub drain_timeout: Duration,
    /// `json` (default) or `pretty` logs.
    pub log_json: bool,
    /// Local store, Supabase delivery and summaries.
    pub store: StoreSettings,
    /// Token guarding `/v1` (`API_TOKEN`); `None` disables those routes.
    pub api_token: Option<String>,
    /// Webhooks, signatures, stream tokens and the provider REST APIs.
    pub control: ControlSettings,
    /// Tools the model may call.
    pub tools: ToolSettings,
}

/// Tool settings (`TOOLS_FILE`, `TRANSFER_TARGETS`, `TOOL_FILLER_DELAY`, consult).
#[derive(Clone)]
pub struct ToolSettings {
    /// Custom tools from the tools file, validated.
    pub custom: Vec<crate::clients::tools::CustomTool>,
    /// Allowed transfer targets (exact, or prefixes ending in `*`).
    pub transfer_targets: Vec<String>,
    /// Filler delay, `None` when off.
    pub filler_delay: Option<Duration>,
    /// Anthropic key for `consult`.
    pub anthropic_api_key: Option<String>,
    /// Anthropic base URL.
    pub anthropic_base_url: String,
    /// The consulted model.
    pub consult_model: String,
}

impl std::fmt::Debug for ToolSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolSettings")
            .field("custom", &self.custom.iter().map(|t| &t.name).collect::<Vec<_>>())
            .field("transfer_targets", &self.transfer_targets.len())
            .field("filler_delay", &self.filler_delay)
            .field("anthropic", &self.anthropic_api_key.is_some())
            .field("consult_model", &self.consult_model)
            .finish()
    }
}

impl ToolSettings {
    /// Reads the tool variables (and the tools file).
    ///
    /// Errors: an unreadable or invalid tools file (the message names the tool), a bad delay.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let custom = match src.get(ENV_TOOLS_FILE) {
            None => Vec::new(),
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| invalid(ENV_TOOLS_FILE, &path, &format!("cannot read: {e}")))?;
                let tools: Vec<crate::clients::tools::CustomTool> = serde_json::from_str(&text)
                    .map_err(|e| invalid(ENV_TOOLS_FILE, &path, &e.to_string()))?;
                for t in &tools {
                    t.validate().map_err(|e| invalid(ENV_TOOLS_FILE, &path, &e))?;
                    if crate::core::call::builtin_tools().iter().any(|b| b.name == t.name) {
                        return Err(invalid(
                            ENV_TOOLS_FILE,
                            &path,
                            &format!("{} is a built-in tool", t.name),
                        ));
                    }
                }
                tools
            }
        };
        let filler_delay = match src.get(ENV_TOOL_FILLER_DELAY).as_deref() {
            Some("off") => None,
            _ => Some(duration_or(src, ENV_TOOL_FILLER_DELAY, DEFAULT_TOOL_FILLER_DELAY)?),
        };
        let anthropic_api_key = src.get(ENV_ANTHROPIC_API_KEY);
        let default_model = if anthropic_api_key.is_some() {
            DEFAULT_CONSULT_MODEL_ANTHROPIC
        } else {
            DEFAULT_CONSULT_MODEL_OPENAI
        };
        Ok(Self {
            custom,
            transfer_targets: src
                .get(ENV_TRANSFER_TARGETS)
                .map(|v| v.split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect())
                .unwrap_or_default(),
            filler_delay,
            anthropic_api_key,
            anthropic_base_url: src
                .get(ENV_ANTHROPIC_BASE_URL)
                .unwrap_or_else(|| DEFAULT_ANTHROPIC_BASE_URL.to_owned()),
            consult_model: src.get(ENV_CONSULT_MODEL).unwrap_or_else(|| default_model.to_owned()),
        })
    }
}

/// Call control and security settings (`PUBLIC_URL`, `TWILIO_*`, `SIGNALWIRE_*`, …).
#[derive(Clone)]
pub struct ControlSettings {
    /// Public base URL without a trailing slash.
    pub public_url: Option<String>,
    /// Check webhook and upgrade signatures and stream tokens.
    pub validate_signatures: bool,
    /// Twilio account SID and auth token (REST).
    pub twilio: Option<(String, String)>,
    /// Twilio auth token (signatures), also without an account SID.
    pub twilio_auth_token: Option<String>,
    /// Twilio REST base.
    pub twilio_api_base: String,
    /// SignalWire space, project ID and API token (REST).
    pub signalwire_rest: Option<(String, String, String)>,
    /// SignalWire signing key.
    pub signalwire_signing_key: Option<String>,
    /// Stream-token key (explicit or derived).
    pub stream_token_key: Vec<u8>,
    /// Stream-token lifetime.
    pub stream_token_ttl: Duration,
    /// Per-IP upgrade budget per minute.
    pub upgrades_per_ip_per_minute: u32,
    /// Trusted client-IP header.
    pub client_ip_header: Option<String>,
    /// `enable` / `detect_message_end`, or `None`.
    pub machine_detection: Option<String>,
}

impl std::fmt::Debug for ControlSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSettings")
            .field("public_url", &self.public_url)
            .field("validate_signatures", &self.validate_signatures)
            .field("twilio", &self.twilio.as_ref().map(|(sid, _)| (sid, "[redacted]")))
            .field("twilio_auth_token", &self.twilio_auth_token.as_ref().map(|_| "[redacted]"))
            .field("twilio_api_base", &self.twilio_api_base)
            .field(
                "signalwire_rest",
                &self.signalwire_rest.as_ref().map(|(space, id, _)| (space, id, "[redacted]")),
            )
            .field("signalwire_signing_key", &self.signalwire_signing_key.as_ref().map(|_| "[redacted]"))
            .field("stream_token_ttl", &self.stream_token_ttl)
            .field("upgrades_per_ip_per_minute", &self.upgrades_per_ip_per_minute)
            .field("client_ip_header", &self.client_ip_header)
            .field("machine_detection", &self.machine_detection)
            .finish()
    }
}

impl ControlSettings {
    /// Reads the call-control variables.
    ///
    /// Errors: signature checks on (the default) with neither `TWILIO_AUTH_TOKEN` nor
    /// `SIGNALWIRE_SIGNING_KEY` set; a `PUBLIC_URL` that is not http(s); a short
    /// `STREAM_TOKEN_KEY`; a bad number or duration.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let validate_signatures = match src.get(ENV_TWILIO_VALIDATE_SIGNATURE).as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(invalid(ENV_TWILIO_VALIDATE_SIGNATURE, other, "expected true or false"));
            }
        };
        let auth_token = src.get(ENV_TWILIO_AUTH_TOKEN);
        let signing_key = src.get(ENV_SIGNALWIRE_SIGNING_KEY);
        if validate_signatures && auth_token.is_none() && signing_key.is_none() {
            return Err(invalid(
                ENV_TWILIO_AUTH_TOKEN,
                "<unset>",
                "set TWILIO_AUTH_TOKEN (or SIGNALWIRE_SIGNING_KEY) so media streams and webhooks can be \
                 authenticated, or TWILIO_VALIDATE_SIGNATURE=false for local development only",
            ));
        }
        let public_url = match src.get(ENV_PUBLIC_URL) {
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                Some(u.trim_end_matches('/').to_owned())
            }
            Some(u) => return Err(invalid(ENV_PUBLIC_URL, &u, "must start with https:// or http://")),
            None => None,
        };
        let twilio = match (src.get(ENV_TWILIO_ACCOUNT_SID), auth_token.clone()) {
            (Some(sid), Some(token)) => Some((sid, token)),
            _ => None,
        };
        let signalwire_rest = match (
            src.get(ENV_SIGNALWIRE_SPACE),
            src.get(ENV_SIGNALWIRE_PROJECT_ID),
            src.get(ENV_SIGNALWIRE_API_TOKEN),
        ) {
            (Some(a), Some(b), Some(c)) => Some((a, b, c)),
            _ => None,
        };
        let stream_token_key = match src.get(ENV_STREAM_TOKEN_KEY) {
            Some(k) if k.len() >= 32 => k.into_bytes(),
            Some(_) => return Err(invalid(ENV_STREAM_TOKEN_KEY, "[redacted]", "must be at least 32 bytes")),
            // Derived, so every instance with the same provider secret agrees without more set-up.
            None => derive_key(auth_token.as_deref().or(signing_key.as_deref()).unwrap_or("")),
        };
        let machine_detection = match src.get(ENV_MACHINE_DETECTION).as_deref() {
            None | Some("off") => None,
            Some(m @ ("enable" | "detect_message_end")) => Some(m.to_owned()),
            Some(other) => {
                return Err(invalid(
                    ENV_MACHINE_DETECTION,
                    other,
                    "expected off, enable or detect_message_end",
                ));
            }
        };
        Ok(Self {
            public_url,
            validate_signatures,
            twilio,
            twilio_auth_token: auth_token,
            twilio_api_base: src
                .get(ENV_TWILIO_API_BASE)
                .unwrap_or_else(|| DEFAULT_TWILIO_API_BASE.to_owned()),
            signalwire_rest,
            signalwire_signing_key: signing_key,
            stream_token_key,
            stream_token_ttl: duration_or(src, ENV_STREAM_TOKEN_TTL, DEFAULT_STREAM_TOKEN_TTL)?,
            upgrades_per_ip_per_minute: parse_or(
                src,
                ENV_UPGRADES_PER_IP_PER_MINUTE,
                DEFAULT_UPGRADES_PER_IP_PER_MINUTE,
            )?,
            client_ip_header: src.get(ENV_CLIENT_IP_HEADER),
            machine_detection,
        })
    }
}

/// A 32-byte stream-token key from a provider secret (or, without one, from fresh randomness:
/// tokens then only verify on this process).
fn derive_key(secret: &str) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    if secret.is_empty() {
        return (0..32).map(|_| rand::random::<u8>()).collect();
    }
    match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(b"callbridge stream token key v1");
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => (0..32).map(|_| rand::random::<u8>()).collect(),
    }
}

/// Where call records go (`CALLBRIDGE_DATA_DIR`, `SUPABASE_*`, `LEAD_TABLE`, `SUMMARY_MODEL`).
#[derive(Clone)]
pub struct StoreSettings {
    /// SQLite directory.
    pub data_dir: std::path::PathBuf,
    /// Data API root (`SUPABASE_URL` + `SUPABASE_REST_PATH`) and key, if configured.
    pub supabase: Option<(String, String)>,
    /// First and largest retry delay.
    pub retry: (Duration, Duration),
    /// Leads table.
    pub lead_table: String,
    /// Summary model, `None` when `off`.
    pub summary_model: Option<String>,
    /// OpenAI-compatible API base for the summary.
    pub openai_base_url: String,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("data_dir", &self.data_dir)
            .field("supabase", &self.supabase.as_ref().map(|(url, _)| (url, "[redacted]")))
            .field("retry", &self.retry)
            .field("lead_table", &self.lead_table)
            .field("summary_model", &self.summary_model)
            .field("openai_base_url", &self.openai_base_url)
            .finish()
    }
}

impl StoreSettings {
    /// Reads the store's variables.
    ///
    /// Errors: `SUPABASE_URL` without a key (or the reverse), a URL that is not http(s), or a
    /// bad duration.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let supabase = match (src.get(ENV_SUPABASE_URL), src.get(ENV_SUPABASE_SERVICE_ROLE_KEY)) {
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::Missing { var: ENV_SUPABASE_SERVICE_ROLE_KEY }),
            (None, Some(_)) => return Err(ConfigError::Missing { var: ENV_SUPABASE_URL }),
            (Some(url), Some(key)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(invalid(ENV_SUPABASE_URL, &url, "must start with https:// or http://"));
                }
                let path =
                    src.get(ENV_SUPABASE_REST_PATH).unwrap_or_else(|| DEFAULT_SUPABASE_REST_PATH.to_owned());
                Some((format!("{}{}", url.trim_end_matches('/'), path.trim_end_matches('/')), key))
            }
        };
        let summary_model = match src.get(ENV_SUMMARY_MODEL) {
            Some(m) if m == "off" => None,
            Some(m) => Some(m),
            None => Some(DEFAULT_SUMMARY_MODEL.to_owned()),
        };
        Ok(Self {
            data_dir: src.get(ENV_DATA_DIR).unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned()).into(),
            supabase,
            retry: (
                duration_or(src, ENV_SUPABASE_RETRY_FIRST, DEFAULT_SUPABASE_RETRY_FIRST)?,
                duration_or(src, ENV_SUPABASE_RETRY_MAX, DEFAULT_SUPABASE_RETRY_MAX)?,
            ),
            lead_table: src.get(ENV_LEAD_TABLE).unwrap_or_else(|| DEFAULT_LEAD_TABLE.to_owned()),
            summary_model,
            openai_base_url: src
                .get(ENV_OPENAI_BASE_URL)
                .unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.to_owned()),
        })
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env)
    }

    /// Reads the configuration from `src`.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let host = parse_or(
            src,
            ENV_HOST,
            DEFAULT_HOST.parse().map_err(|_| ConfigError::Missing { var: ENV_HOST })?,
        )?;
        let url = src.get(ENV_OPENAI_REALTIME_URL).unwrap_or_else(|| DEFAULT_OPENAI_REALTIME_URL.to_owned());
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(invalid(ENV_OPENAI_REALTIME_URL, &url, "must start with ws:// or wss://"));
        }
        let auth = match src.get(ENV_OPENAI_AUTH).as_deref() {
            None if url.contains(".azure.com") => AuthStyle::ApiKey,
            None | Some("bearer") => AuthStyle::Bearer,
            Some("api-key") => AuthStyle::ApiKey,
            Some(other) => return Err(invalid(ENV_OPENAI_AUTH, other, "expected bearer or api-key")),
        };
        let max_message_bytes = parse_or(src, ENV_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES)?;
        let upstream = UpstreamConfig {
            url,
            model: src
                .get(ENV_OPENAI_REALTIME_MODEL)
                .unwrap_or_else(|| DEFAULT_OPENAI_REALTIME_MODEL.to_owned()),
            api_key: src.get(ENV_OPENAI_API_KEY).ok_or(ConfigError::Missing { var: ENV_OPENAI_API_KEY })?,
            auth,
            connect_timeout: duration_or(
                src,
                ENV_UPSTREAM_CONNECT_TIMEOUT,
                DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            )?,
            max_message_bytes: 16 * 1024 * 1024,
        };
        let mut call = CallParams::new(session_from(src)?);
        call.force_transcode = match src.get(ENV_AUDIO_MODE).as_deref() {
            None | Some("passthrough") => false,
            Some("transcode") => true,
            Some(other) => return Err(invalid(ENV_AUDIO_MODE, other, "expected passthrough or transcode")),
        };
        call.max_lead_ms = parse_or(src, ENV_MAX_LEAD_MS, DEFAULT_MAX_LEAD_MS)?;
        call.mark_interval_ms = parse_or(src, ENV_MARK_INTERVAL_MS, DEFAULT_MARK_INTERVAL_MS)?;
        call.start_timeout = duration_or(src, ENV_START_TIMEOUT, DEFAULT_START_TIMEOUT)?;
        call.session_cap = match src.get(ENV_SESSION_CAP).as_deref() {
            Some("off") => None,
            Some(_) => Some(duration_or(src, ENV_SESSION_CAP, DEFAULT_START_TIMEOUT)?),
            None if upstream.url.contains(".azure.com") => {
                Some(crate::core::call::reconnect::AZURE_SESSION_CAP)
            }
            None => Some(crate::core::call::reconnect::OPENAI_SESSION_CAP),
        };
        if call.session_cap.is_some_and(|c| c < std::time::Duration::from_secs(10)) {
            return Err(invalid(
                ENV_SESSION_CAP,
                &src.get(ENV_SESSION_CAP).unwrap_or_default(),
                "must be at least 10s",
            ));
        }
        if let Some(cap) = call.session_cap {
            call.recycle_window = call.recycle_window.min(cap / 2);
        }
        call.reconnect.max_attempts = parse_or(src, ENV_RECONNECT_ATTEMPTS, call.reconnect.max_attempts)?;
        call.upstream_connect_timeout = upstream.connect_timeout;
        if call.max_lead_ms < 20 {
            return Err(invalid(
                ENV_MAX_LEAD_MS,
                &call.max_lead_ms.to_string(),
                "must be at least one 20 ms frame",
            ));
        }
        if call.mark_interval_ms < 20 {
            return Err(invalid(
                ENV_MARK_INTERVAL_MS,
                &call.mark_interval_ms.to_string(),
                "must be at least 20",
            ));
        }
        let log_json = match src.get(ENV_LOG_FORMAT).as_deref() {
            None | Some("json") => true,
            Some("pretty") => false,
            Some(other) => return Err(invalid(ENV_LOG_FORMAT, other, "expected json or pretty")),
        };
        let max_calls = parse_or(src, ENV_MAX_CALLS, DEFAULT_MAX_CALLS)?;
        if max_calls == 0 {
            return Err(invalid(ENV_MAX_CALLS, "0", "must be at least 1"));
        }
        Ok(Config {
            host,
            port: parse_or(src, ENV_PORT, DEFAULT_PORT)?,
            upstream,
            call,
            max_message_bytes,
            max_calls,
            upgrade_timeout: duration_or(src, ENV_UPGRADE_TIMEOUT, DEFAULT_UPGRADE_TIMEOUT)?,
            drain_timeout: duration_or(src, ENV_DRAIN_TIMEOUT, DEFAULT_DRAIN_TIMEOUT)?,
            log_json,
            store: StoreSettings::from_source(src)?,
            api_token: src.get(ENV_API_TOKEN),
            control: ControlSettings::from_source(src)?,
            tools: ToolSettings::from_source(src)?,
        })
    }
}

/// Per-call defaults (used by the demo and tests): passthrough, server VAD, transcription on.
pub fn default_call_params() -> CallParams {
    CallParams::new(default_session())
}

fn default_session() -> SessionConfig {
    SessionConfig {
        model: None,
        instructions: DEFAULT_AGENT_INSTRUCTIONS.to_owned(),
        voice: DEFAULT_AGENT_VOICE.to_owned(),
        speed: None,
        input_format: crate::core::realtime::ModelAudioFormat::Pcmu,
        output_format: crate::core::realtime::ModelAudioFormat::Pcmu,
        turn_detection: TurnDetection::ServerVad {
            threshold: DEFAULT_VAD_THRESHOLD,
            prefix_padding_ms: DEFAULT_VAD_PREFIX_PADDING_MS,
            silence_duration_ms: DEFAULT_VAD_SILENCE_MS,
            idle_timeout_ms: None,
            create_response: true,
            interrupt_response: true,
        },
        transcription: Some(Transcription {
            model: DEFAULT_TRANSCRIPTION_MODEL.to_owned(),
            language: None,
            prompt: None,
        }),
        noise_reduction: Some(NoiseReduction::NearField),
        tools: Arc::from([]),
    }
}

fn session_from(src: &dyn Source) -> Result<SessionConfig, ConfigError> {
    let mut s = default_session();
    if let Some(v) = src.get(ENV_AGENT_INSTRUCTIONS) {
        s.instructions = v;
    }
    if let Some(v) = src.get(ENV_AGENT_VOICE) {
        s.voice = v;
    }
    let interrupt_response = parse_or(src, ENV_INTERRUPT_RESPONSE, true)?;
    s.turn_detection = match src.get(ENV_TURN_DETECTION).as_deref() {
        None | Some("server_vad") => {
            let threshold: f32 = parse_or(src, ENV_VAD_THRESHOLD, DEFAULT_VAD_THRESHOLD)?;
            if !(0.0..=1.0).contains(&threshold) {
                return Err(invalid(ENV_VAD_THRESHOLD, &threshold.to_string(), "must be between 0 and 1"));
            }
            TurnDetection::ServerVad {
                threshold,
                prefix_padding_ms: parse_or(src, ENV_VAD_PREFIX_PADDING_MS, DEFAULT_VAD_PREFIX_PADDING_MS)?,
                silence_duration_ms: parse_or(src, ENV_VAD_SILENCE_MS, DEFAULT_VAD_SILENCE_MS)?,
                idle_timeout_ms: None,
                create_response: true,
                interrupt_response,
            }
        }
        Some("semantic_vad") => TurnDetection::SemanticVad {
            eagerness: "auto".to_owned(),
            create_response: true,
            interrupt_response,
        },
        Some("none") => TurnDetection::Manual,
        Some(other) => {
            return Err(invalid(ENV_TURN_DETECTION, other, "expected server_vad, semantic_vad or none"));
        }
    };
    s.transcription = match src.get(ENV_TRANSCRIPTION_MODEL).as_deref() {
        Some("off") => None,
        model => Some(Transcription {
            model: model.unwrap_or(DEFAULT_TRANSCRIPTION_MODEL).to_owned(),
            language: src.get(ENV_TRANSCRIPTION_LANGUAGE),
            prompt: None,
        }),
    };
    s.noise_reduction = match src.get(ENV_NOISE_REDUCTION).as_deref() {
        None | Some("near_field") => Some(NoiseReduction::NearField),
        Some("far_field") => Some(NoiseReduction::FarField),
        Some("off") => None,
        Some(other) => {
            return Err(invalid(ENV_NOISE_REDUCTION, other, "expected near_field, far_field or off"));
        }
    };
    Ok(s)
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid { var, value: value.to_owned(), reason: reason.to_owned() }
}

fn parse_or<T: std::str::FromStr>(src: &dyn Source, var: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match src.get(var) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| invalid(var, &v, &e.to_string())),
    }
}

/// Durations are written `10s`, `500ms`, `2m`, or a bare number of seconds.
fn duration_or(src: &dyn Source, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let Some(v) = src.get(var) else { return Ok(default) };
    parse_duration(&v).ok_or_else(|| invalid(var, &v, "expected a duration such as 10s, 500ms or 2m"))
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_need_the_keys() {
        let c = Config::from_source(&map(&[
            (ENV_OPENAI_API_KEY, "sk-test-not-a-real-key"),
            (ENV_TWILIO_AUTH_TOKEN, "test-auth-token-12345"),
        ]))
        .unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.upstream.url, DEFAULT_OPENAI_REALTIME_URL);
        assert_eq!(c.upstream.auth, AuthStyle::Bearer);
        assert!(!c.call.force_transcode);
        assert_eq!(c.call.start_timeout, Duration::from_secs(10));
        assert!(!format!("{:?}", c.upstream).contains("sk-test"));
        assert!(c.control.validate_signatures);
        assert!(!format!("{:?}", c.control).contains("12345"));
    }

    #[test]
    fn signatures_are_on_unless_explicitly_off() {
        let e = Config::from_source(&map(&[(ENV_OPENAI_API_KEY, "k")])).unwrap_err();
        assert!(e.to_string().contains(ENV_TWILIO_AUTH_TOKEN), "{e}");
        let c =
            Config::from_source(&map(&[(ENV_OPENAI_API_KEY, "k"), (ENV_TWILIO_VALIDATE_SIGNATURE, "false")]))
                .unwrap();
        assert!(!c.control.validate_signatures);
        let c =
            Config::from_source(&map(&[(ENV_OPENAI_API_KEY, "k"), (ENV_SIGNALWIRE_SIGNING_KEY, "PSK_x")]))
                .unwrap();
        assert!(c.control.validate_signatures);
        // Same secret, same derived stream-token key on every instance.
        let a =
            Config::from_source(&map(&[(ENV_OPENAI_API_KEY, "k"), (ENV_TWILIO_AUTH_TOKEN, "t")])).unwrap();
        let b =
            Config::from_source(&map(&[(ENV_OPENAI_API_KEY, "k"), (ENV_TWILIO_AUTH_TOKEN, "t")])).unwrap();
        assert_eq!(a.control.stream_token_key, b.control.stream_token_key);
        assert_eq!(a.control.stream_token_key.len(), 32);
    }

    #[test]
    fn missing_key_names_the_variable() {
        let e = Config::from_source(&map(&[])).unwrap_err();
        assert!(e.to_string().contains(ENV_OPENAI_API_KEY), "{e}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            (ENV_PORT, "eighty"),
            (ENV_PUBLIC_URL, "bridge.example.com"),
            (ENV_MACHINE_DETECTION, "maybe"),
            (ENV_STREAM_TOKEN_KEY, "short"),
            (ENV_SESSION_CAP, "5s"),
            (ENV_RECONNECT_ATTEMPTS, "many"),
            (ENV_MAX_CALLS, "-1"),
            (ENV_START_TIMEOUT, "soon"),
            (ENV_AUDIO_MODE, "loud"),
            (ENV_VAD_THRESHOLD, "2"),
            (ENV_OPENAI_REALTIME_URL, "https://api.openai.com"),
            (ENV_MAX_LEAD_MS, "5"),
        ] {
            let e = Config::from_source(&map(&[
                (ENV_OPENAI_API_KEY, "k"),
                (ENV_TWILIO_VALIDATE_SIGNATURE, "false"),
                (var, value),
            ]))
            .unwrap_err();
            assert!(e.to_string().contains(var), "{var}: {e}");
        }
    }

    #[test]
    fn azure_urls_use_the_api_key_header() {
        let c = Config::from_source(&map(&[
            (ENV_OPENAI_API_KEY, "k"),
            (ENV_TWILIO_VALIDATE_SIGNATURE, "false"),
            (ENV_OPENAI_REALTIME_URL, "wss://example-resource.openai.azure.com/openai/v1/realtime"),
        ]))
        .unwrap();
        assert_eq!(c.upstream.auth, AuthStyle::ApiKey);
        assert_eq!(c.call.session_cap, Some(crate::core::call::reconnect::AZURE_SESSION_CAP));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("7h"), None);
        assert_eq!(parse_duration(""), None);
    }
}
