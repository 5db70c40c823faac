//! Reusable strings for the per-frame outputs (base64 payloads, mark names), so a call in
//! steady state allocates nothing per 20 ms frame: the shell hands each string back with
//! [`super::Call::recycle`] once it has encoded it.

/// Strings kept for reuse, at most [`StringPool::MAX_KEPT`].
#[derive(Debug, Default)]
pub struct StringPool {
    free: Vec<String>,
}

impl StringPool {
    /// Enough for a burst of outputs from one input (a lead's worth of frames and marks).
    pub const MAX_KEPT: usize = 64;
    /// Initial capacity of a new string: a 20 ms L16 24 kHz frame is 1,280 base64 bytes.
    const NEW_CAPACITY: usize = 1_536;

    /// An empty string, reused when one is free.
    pub fn take(&mut self) -> String {
        self.free.pop().unwrap_or_else(|| String::with_capacity(Self::NEW_CAPACITY))
    }

    /// Keeps `s` for reuse (dropped when the pool is full).
    pub fn put(&mut self, mut s: String) {
        if self.free.len() < Self::MAX_KEPT {
            s.clear();
            self.free.push(s);
        }
    }
}
