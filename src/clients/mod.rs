//! Outbound IO: connections callbridge opens to other services.

pub mod realtime;
pub mod summary;
pub mod supabase;
pub mod telephony_rest;
pub mod tools;

/// `s` cut to at most `max` bytes on a character boundary (error texts and answers from other
/// services are bounded before they are logged or passed on).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
