//! The Realtime API WebSocket client: builds the handshake (URL with `model`, auth header) and
//! connects over rustls, with a timeout. Events are encoded and decoded by
//! [`crate::core::realtime`]; this module only opens the socket.
//!
//! Source: <https://platform.openai.com/docs/guides/realtime-websocket> (GA: no `OpenAI-Beta`
//! header) and Azure's `api-key` header
//! (<https://learn.microsoft.com/azure/ai-foundry/openai/how-to/realtime-audio-websockets>).

use http::HeaderValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::{AuthStyle, UpstreamConfig};

/// An open Realtime socket.
pub type RealtimeSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why the Realtime socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or the auth header could not be built (e.g. a key that is not a valid header value).
    #[error("invalid Realtime URL or header: {0}")]
    Request(String),
    /// TCP, TLS or the WebSocket upgrade failed, or the server refused it (e.g. HTTP 401).
    #[error("Realtime handshake failed: {0}")]
    Handshake(#[from] tokio_tungstenite::tungstenite::Error),
    /// Connect and handshake took longer than [`UpstreamConfig::connect_timeout`] (the value).
    #[error("Realtime connect timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl ConnectError {
    /// Stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Request(_) => "connect_request",
            ConnectError::Handshake(_) => "connect_handshake",
            ConnectError::Timeout(_) => "connect_timeout",
        }
    }
}

/// The URL with the model added as the `model` query parameter.
pub fn url_with_model(base: &str, model: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut url = String::with_capacity(base.len() + model.len() + 7);
    url.push_str(base);
    url.push(sep);
    url.push_str("model=");
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// Opens the Realtime socket, failing after `cfg.connect_timeout`.
pub async fn connect(cfg: &UpstreamConfig) -> Result<RealtimeSocket, ConnectError> {
    let url = url_with_model(&cfg.url, &cfg.model);
    let mut req = url.into_client_request().map_err(|e| ConnectError::Request(e.to_string()))?;
    let (name, value) = match cfg.auth {
        AuthStyle::Bearer => ("authorization", format!("Bearer {}", cfg.api_key)),
        AuthStyle::ApiKey => ("api-key", cfg.api_key.clone()),
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| ConnectError::Request("API key is not a valid header".into()))?;
    value.set_sensitive(true);
    req.headers_mut().insert(name, value);
    // Small read chunks keep calls cheap (tungstenite allocates and zero-fills the chunk for
    // every read); the buffer grows for large events when needed.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(cfg.max_message_bytes))
        .max_frame_size(Some(cfg.max_message_bytes));
    let fut = tokio_tungstenite::connect_async_tls_with_config(req, Some(ws_config), true, None);
    match tokio::time::timeout(cfg.connect_timeout, fut).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(ConnectError::Handshake(e)),
        Err(_) => Err(ConnectError::Timeout(cfg.connect_timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::url_with_model;

    #[test]
    fn model_is_a_query_parameter() {
        assert_eq!(
            url_with_model("wss://api.openai.com/v1/realtime", "gpt-realtime"),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(url_with_model("ws://h/x?a=1", "my deployment"), "ws://h/x?a=1&model=my%20deployment");
    }
}
