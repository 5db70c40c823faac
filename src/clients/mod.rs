//! Outbound IO: connections callbridge opens to other services.

pub mod realtime;
