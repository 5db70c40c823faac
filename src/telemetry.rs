//! Logging setup (JSON by default) and [`Redacted`], which keeps phone numbers and secrets out
//! of logs.

use std::fmt;

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber. `RUST_LOG` filters (default `default_level`, e.g.
/// `info`). Calling it twice is harmless (the second call is ignored).
pub fn init(json: bool, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.compact().try_init() };
}

/// Wraps a value that must never reach a log in clear: phone numbers keep their last two digits
/// (`+*********42`), anything else shows as `[redacted]`.
pub struct Redacted<T>(pub T);

impl<T: AsRef<str>> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_ref();
        let is_phone = s.len() > 4 && s.trim_start_matches('+').bytes().all(|b| b.is_ascii_digit());
        if is_phone {
            let keep = &s[s.len() - 2..];
            write!(f, "+{}{}", "*".repeat(s.len().saturating_sub(3)), keep)
        } else {
            f.write_str("[redacted]")
        }
    }
}

impl<T: AsRef<str>> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Redacted;

    #[test]
    fn phone_numbers_and_secrets_are_hidden() {
        assert_eq!(Redacted("+15550100042").to_string(), "+*********42");
        assert_eq!(Redacted("sk-test-not-a-real-key").to_string(), "[redacted]");
        assert!(!format!("{:?}", Redacted("+15550100042")).contains("555"));
    }
}
