//! The sans-IO core: pure, synchronous protocol codecs and the call state machine.
//!
//! Nothing here is `async`, opens a socket or reads a clock; time is passed in.

pub mod audio;
pub mod call;
pub mod json;
pub mod realtime;
pub mod telephony;
