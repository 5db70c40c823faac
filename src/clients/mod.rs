//! Outbound IO: connections callbridge opens to other services.

pub mod realtime;
pub mod summary;
pub mod supabase;
pub mod telephony_rest;
pub mod tools;
