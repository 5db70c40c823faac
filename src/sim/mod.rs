//! Simulators for end-to-end tests, the demo and load runs: both peers of the bridge, over
//! real WebSockets on loopback.
//!
//! - [`realtime`]: a Realtime API simulator speaking the GA protocol, answering with speech
//!   fixtures, with server VAD, barge-in, truncation and injectable faults.
//! - [`caller`]: a simulated Twilio / SignalWire media stream that speaks a script on a 20 ms
//!   clock, plays back what it receives, echoes marks and honours `clear`.
//! - [`provider_call`]: a whole call as Twilio places one (signed webhook, then the stream).
//! - [`chat`] and [`telephony_api`]: Chat Completions and the provider REST API, on loopback.
//! - [`fixtures`]: the speech clips, embedded in the binary.
//!
//! This is test infrastructure: `anyhow` and `serde_json::Value` are used freely, but bad
//! peer input never panics; it becomes an `error` event, a warning or a close.

pub mod caller;
pub mod chat;
pub mod fixtures;
pub mod ids;
pub mod provider_call;
pub mod realtime;
pub mod telephony_api;

mod audio;
pub(crate) mod playback;
mod session;
mod vad;
