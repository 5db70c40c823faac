//! OpenAI Realtime API events (GA protocol): decode server events, encode client events.
//!
//! Sans-IO: text frames in, typed events out ([`RealtimeDecoder::decode`]); typed commands in,
//! JSON text out ([`encode`]). Nothing here opens a socket, reads a clock or allocates per audio
//! frame once the decoder's scratch buffer has grown to the largest delta.
//!
//! # Layout
//!
//! | module | direction | what |
//! |---|---|---|
//! | `server` | server → client | [`ServerEvent`] borrowed from the frame text, [`RealtimeDecoder`], [`ApiError`], [`Usage`] |
//! | `client` | client → server | [`ClientEvent`], [`SessionConfig`] and friends, [`encode`] |
//!
//! # Protocol
//!
//! Wire names and shapes follow the GA Realtime API:
//! <https://platform.openai.com/docs/api-reference/realtime-server-events> and
//! <https://platform.openai.com/docs/api-reference/realtime-client-events>, cross-checked against
//! the official `openai` Python SDK 3.52.0 models (`openai/types/realtime/`) and the project's
//! reference `shared/reference/openai-realtime.md`.
//!
//! - The decoder accepts the beta aliases of the events that were renamed in GA
//!   (`response.audio.delta`, `response.audio_transcript.*`, and the beta string audio formats in
//!   `session.updated`), so a beta-speaking server or simulator still works.
//! - Every event type not handled here becomes [`ServerEvent::Unknown`], never an error: OpenAI
//!   adds events, and one odd event must not end a call.
//! - The encoder writes only the GA shape (`session.type = "realtime"`, `audio.input/output`),
//!   never the beta flat fields (`input_audio_format`, `modalities`, …).

mod client;
mod server;

pub use client::{
    ClientEvent, FunctionTool, ModelAudioFormat, NoiseReduction, SessionConfig, Transcription, TurnDetection,
    encode, encode_input_audio_append,
};
pub use server::{ApiError, RealtimeDecodeError, RealtimeDecoder, ResponseStatus, ServerEvent, Usage};
