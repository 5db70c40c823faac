//! callbridge: puts an AI voice agent on the phone.
//!
//! Telephony providers (Twilio, SignalWire) open a media-stream WebSocket to the server and
//! stream call audio; callbridge bridges it to the OpenAI Realtime API and streams the model's
//! speech back, with barge-in, marks and truncation handled by a sans-IO call state machine.
//!
//! # Layout
//!
//! Dependencies point one way: a module may use the ones listed below it, never above.
//!
//! | module | concern |
//! |---|---|
//! | `main.rs` | CLI (`serve`, `demo`, `sim-realtime`, `bench`): parse, load [`config`], init [`telemetry`], run |
//! | [`bench`](mod@bench) | `callbridge bench`: load harness, many simulated provider calls on loopback |
//! | [`demo`] | `callbridge demo`: server + simulator + simulated caller in one process, timeline, WAV |
//! | [`sim`] | Realtime, chat and provider-REST simulators (real wire protocols on loopback) and a simulated provider caller |
//! | [`server`] | axum router: `/media/{provider}` upgrades, webhooks and outbound calls ([`server::control`]), the `/v1` API ([`server::api`]), health, metrics |
//! | [`driver`] | tokio shell: one task per call running [`core::call::Call`]; tool tasks; shutdown and draining |
//! | [`store`] | call records in SQLite, the outbox drained to Supabase, post-call summary and lead update |
//! | [`clients`] | outbound IO: Realtime WebSocket, Supabase (PostgREST), provider REST APIs, summary/consult models, custom tools |
//! | [`auth`] | pure checks: webhook and upgrade signatures, single-use stream tokens, bearer tokens |
//! | [`config`] | every environment variable (`ENV_*`) and default (`DEFAULT_*`); the only env reader |
//! | [`metrics`] | every metric name, declared once, with typed labels |
//! | [`telemetry`] | JSON logs via `tracing`; [`telemetry::Redacted`] for phone numbers and secrets |
//! | [`core`] | **sans-IO**: no tokio, no sockets, no clock. Bytes and events in, commands out |
//! | [`core::telephony`] | Twilio media-stream codec, SignalWire as a dialect of it |
//! | [`core::realtime`] | OpenAI Realtime events: decode server events (GA + beta names), encode client events |
//! | [`core::audio`] | G.711 tables, L16, streaming resampler (rubato), 20 ms frame ring, transcoder |
//! | [`core::call`] | the call state machine: phases, playback ledger, barge-in, transcript, tools, DTMF |

pub mod auth;
pub mod bench;
pub mod clients;
pub mod config;
pub mod core;
pub mod demo;
pub mod driver;
pub mod metrics;
pub mod server;
pub mod sim;
pub mod store;
pub mod telemetry;

/// The clock for unit tests of the sans-IO core: the core never reads a clock, so its tests
/// take their starting instant from here, outside `core`.
#[cfg(test)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}
