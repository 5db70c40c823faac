//! The relay floor: the least a Twilio Media Streams ⇄ OpenAI Realtime bridge built on our I/O
//! stack (tokio multi-thread runtime + tokio-tungstenite) must do, used as a baseline by
//! `scripts/bench-baselines.sh` to show how much of callbridge's cost is the stack itself.
//!
//! It accepts provider WebSockets on `--listen` (any path), and for each one opens a Realtime
//! socket to `--upstream` (the full URL, model query included) with
//! `Authorization: Bearer $OPENAI_API_KEY`, sends one fixed `session.update` (μ-law in and out),
//! and then runs one task per call that owns both sockets and `select!`s over them:
//!
//! * provider `start`: the `streamSid` is kept;
//! * provider `media`: the `"payload":"…"` value becomes `{"type":"input_audio_buffer.append",
//!   "audio":"…"}` upstream;
//! * upstream audio deltas (`response.output_audio.delta`, or the beta `response.audio.delta`):
//!   the `"delta":"…"` value becomes `{"event":"media","streamSid":"…","media":{"payload":"…"}}`;
//! * provider `stop`, or either side closing: both sockets are closed.
//!
//! Messages are translated by byte search only, with no JSON parser; anything it cannot slice
//! (another event, an escaped or missing value, a binary frame) is ignored. Each call assembles
//! its outgoing messages in one reused `String`, so the only allocations per frame are the ones
//! tungstenite makes (the received message, and the owned payload of the sent one). Buffer
//! sizes and `TCP_NODELAY` are those callbridge uses, so the difference between the two is the
//! bridge's own work, not socket tuning. There are no timers, marks, barge-in, metrics or limits.
//!
//! ```text
//! OPENAI_API_KEY=sim-key cargo run --release --example relay_floor -- \
//!     --listen 127.0.0.1:8082 --upstream 'ws://127.0.0.1:9000/v1/realtime?model=gpt-realtime'
//! callbridge bench --url ws://127.0.0.1:8082/media --server-pid <its pid>
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The session every call configures: μ-law 8 kHz both ways, server VAD.
const SESSION_UPDATE: &str = concat!(
    r#"{"type":"session.update","session":{"type":"realtime","output_modalities":["audio"],"#,
    r#""audio":{"input":{"format":{"type":"audio/pcmu"},"turn_detection":{"type":"server_vad"}},"#,
    r#""output":{"format":{"type":"audio/pcmu"}}}}}"#
);

/// Time to wait for a peer's close frame after ours.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Back-off after a failed `accept` (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Options.
#[derive(Debug, Parser)]
#[command(about = "Minimal Twilio ⇄ OpenAI Realtime relay (a benchmark floor)")]
struct Args {
    /// Address to accept provider media streams on.
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// Realtime WebSocket URL, model query included.
    #[arg(long)]
    upstream: String,
    /// Bearer token for the upstream socket.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    api_key: String,
}

type Provider = WebSocketStream<TcpStream>;
type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // wss:// upstreams need a crypto provider; it is already set if this fails.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    eprintln!("relay_floor: listening on {}, upstream {}", args.listen, args.upstream);
    let args = Arc::new(args);
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let args = args.clone();
                tokio::spawn(async move {
                    if let Err(e) = call(tcp, &args).await {
                        eprintln!("relay_floor: call failed: {e:#}");
                    }
                });
            }
            Err(e) => {
                eprintln!("relay_floor: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One call: both handshakes, then the relay.
async fn call(tcp: TcpStream, args: &Args) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let provider_config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(8 * 1024);
    let provider = tokio_tungstenite::accept_async_with_config(tcp, Some(provider_config))
        .await
        .context("provider handshake")?;

    let mut request = args.upstream.as_str().into_client_request().context("upstream URL")?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", args.api_key)).context("API key")?;
    request.headers_mut().insert("authorization", bearer);
    let upstream_config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(16 * 1024);
    let (mut upstream, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(upstream_config), true)
            .await
            .context("upstream handshake")?;
    upstream.send(Message::text(SESSION_UPDATE)).await.context("session.update")?;

    relay(provider, upstream).await;
    Ok(())
}

/// What a provider message asks for.
#[derive(Debug, PartialEq, Eq)]
enum FromProvider {
    /// Send the assembled append upstream.
    Append,
    /// The call is over.
    Stop,
    /// Nothing to send.
    Nothing,
}

/// Relays until `stop` or either side closes, then closes both.
async fn relay(mut provider: Provider, mut upstream: Upstream) {
    let mut buf = String::with_capacity(1024);
    let mut sid = String::new();
    loop {
        tokio::select! {
            msg = provider.next() => match msg {
                Some(Ok(Message::Text(text))) => match from_provider(text.as_str(), &mut sid, &mut buf) {
                    FromProvider::Append => {
                        if upstream.send(Message::text(buf.as_str())).await.is_err() {
                            break;
                        }
                    }
                    FromProvider::Stop => break,
                    FromProvider::Nothing => {}
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            msg = upstream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if to_provider(text.as_str(), &sid, &mut buf)
                        && provider.send(Message::text(buf.as_str())).await.is_err()
                    {
                        break;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    tokio::join!(close(&mut provider), close(&mut upstream));
}

/// Sends our close frame (or the reply to the peer's) and waits briefly for the peer's.
async fn close<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if ws.close(None).await.is_ok() {
        let drain = async { while let Some(Ok(_)) = ws.next().await {} };
        let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
    }
}

/// A provider text frame: `media` → the append in `buf`; `start` → `sid`; `stop`.
fn from_provider(text: &str, sid: &mut String, buf: &mut String) -> FromProvider {
    if text.contains(r#""event":"media""#) {
        let Some(payload) = string_value(text, r#""payload":""#) else { return FromProvider::Nothing };
        buf.clear();
        buf.push_str(r#"{"type":"input_audio_buffer.append","audio":""#);
        buf.push_str(payload);
        buf.push_str(r#""}"#);
        FromProvider::Append
    } else if text.contains(r#""event":"start""#) {
        if let Some(s) = string_value(text, r#""streamSid":""#) {
            sid.clear();
            sid.push_str(s);
        }
        FromProvider::Nothing
    } else if text.contains(r#""event":"stop""#) {
        FromProvider::Stop
    } else {
        FromProvider::Nothing
    }
}

/// An upstream text frame: an audio delta → the provider `media` message in `buf`.
fn to_provider(text: &str, sid: &str, buf: &mut String) -> bool {
    // `response.output_audio.delta` (GA) or `response.audio.delta` (beta); not transcript deltas.
    if sid.is_empty() || !text.contains(r#"audio.delta""#) {
        return false;
    }
    let Some(delta) = string_value(text, r#""delta":""#) else { return false };
    buf.clear();
    buf.push_str(r#"{"event":"media","streamSid":""#);
    buf.push_str(sid);
    buf.push_str(r#"","media":{"payload":""#);
    buf.push_str(delta);
    buf.push_str(r#""}}"#);
    true
}

/// The string after the first `key` (which ends with the opening quote) up to the next quote;
/// `None` if missing, unterminated or escaped (base64 and SIDs never are).
fn string_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let rest = text.get(start..)?;
    let value = rest.get(..rest.find('"')?)?;
    (!value.contains('\\')).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEDIA: &str = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"2","timestamp":"40","payload":"AAEC/w=="},"streamSid":"MZ1"}"#;

    #[test]
    fn media_becomes_an_append() {
        let (mut sid, mut buf) = (String::new(), String::new());
        assert_eq!(from_provider(MEDIA, &mut sid, &mut buf), FromProvider::Append);
        assert_eq!(buf, r#"{"type":"input_audio_buffer.append","audio":"AAEC/w=="}"#);
    }

    #[test]
    fn start_keeps_the_sid_and_deltas_use_it() {
        let (mut sid, mut buf) = (String::new(), String::new());
        let delta = r#"{"type":"response.output_audio.delta","response_id":"r","delta":"AAEC"}"#;
        assert!(!to_provider(delta, &sid, &mut buf), "no sid before start");
        let start = r#"{"event":"start","sequenceNumber":"1","start":{"streamSid":"MZab","callSid":"CA1"},"streamSid":"MZab"}"#;
        assert_eq!(from_provider(start, &mut sid, &mut buf), FromProvider::Nothing);
        assert_eq!(sid, "MZab");
        assert!(to_provider(delta, &sid, &mut buf));
        assert_eq!(buf, r#"{"event":"media","streamSid":"MZab","media":{"payload":"AAEC"}}"#);
        let beta = r#"{"type":"response.audio.delta","delta":"BB=="}"#;
        assert!(to_provider(beta, &sid, &mut buf));
        let transcript = r#"{"type":"response.output_audio_transcript.delta","delta":"Hi"}"#;
        assert!(!to_provider(transcript, &sid, &mut buf));
    }

    #[test]
    fn odd_input_is_ignored() {
        let (mut sid, mut buf) = (String::new(), String::new());
        for text in [
            "",
            "{",
            r#"{"event":"media"}"#,
            r#"{"event":"media","media":{"payload":"abc"#,
            r#"{"event":"media","media":{"payload":"a\"b"}}"#,
            r#"{"event":"start"}"#,
            r#"{"event":"mark","mark":{"name":"x"}}"#,
            "\u{e9}\"payload\":\"",
        ] {
            assert_eq!(from_provider(text, &mut sid, &mut buf), FromProvider::Nothing, "{text}");
        }
        assert_eq!(from_provider(r#"{"event":"stop"}"#, &mut sid, &mut buf), FromProvider::Stop);
        sid.push_str("MZ1");
        for text in [
            "",
            r#"{"type":"response.output_audio.delta""#,
            r#"{"type":"response.audio.delta","delta":"x\\"}"#,
        ] {
            assert!(!to_provider(text, &sid, &mut buf), "{text}");
        }
    }
}
