//! One model response at a time: when the call may send `response.create`.
//!
//! A Realtime session runs one response at a time in the default conversation; a
//! `response.create` sent while one is active is refused with the recoverable error
//! `conversation_already_has_active_response` (reference `openai-realtime.md` §1.4, and
//! [`ApiError::is_fatal`](crate::core::realtime::ApiError::is_fatal)). Out-of-band fillers are
//! kept sequential too, so their audio never overlaps a reply. So every `response.create` the
//! call wants (after a tool result, after caller key presses, a filler) goes through this gate:
//!
//! - a response is **active** from `response.created` until its `response.done`;
//! - a response is **requested** from our `response.create` until the next `response.created`
//!   (or [`REQUEST_TIMEOUT`], or a refusal);
//! - while either holds, a wanted `response.create` is **owed** and sent at the next chance.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A `response.create` not answered by `response.created` within this is taken as lost, so one
/// refused or dropped request cannot block every later one.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Out-of-band response ids remembered (their items are not in the conversation).
const ASIDES_KEPT: usize = 8;

/// A `response.create` we sent and the server has not started yet.
#[derive(Debug, Clone, Copy)]
struct Request {
    at: Instant,
    /// Out-of-band (a filler): the response it starts is not in the conversation.
    aside: bool,
}

/// A `response.create` the call still has to send.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Owed {
    /// Owed for something other than a tool result (key presses, a refused request): send as
    /// soon as the gate is open.
    pub plain: bool,
    /// Owed for tool results of these responses: wait until none of their other calls is still
    /// running, so parallel calls get one `response.create` (reference §1.7).
    pub after: Vec<String>,
}

/// The response bookkeeping of one call.
#[derive(Debug, Default)]
pub(super) struct ResponseGate {
    /// Responses started (`response.created`) and not finished (`response.done`).
    active: Vec<String>,
    requested: Option<Request>,
    /// The last request we sent was out-of-band.
    last_aside: bool,
    /// Recent out-of-band responses (fillers), by id.
    asides: VecDeque<String>,
    owed: Option<Owed>,
}

impl ResponseGate {
    /// A response is active or requested: a `response.create` now would collide.
    pub fn busy(&self) -> bool {
        !self.active.is_empty() || self.requested.is_some()
    }

    /// `response.created`. The first one after our request is taken to be that request's (a
    /// response the server started itself at the same moment can be mistaken for it; the
    /// refusal of ours then arrives and [`ResponseGate::refused`] owes it again).
    pub fn created(&mut self, response_id: &str) {
        if let Some(r) = self.requested.take() {
            if r.aside {
                if self.asides.len() == ASIDES_KEPT {
                    self.asides.pop_front();
                }
                self.asides.push_back(response_id.to_owned());
            }
        }
        if !self.active.iter().any(|a| a == response_id) {
            self.active.push(response_id.to_owned());
        }
    }

    /// `response.done`.
    pub fn done(&mut self, response_id: &str) {
        self.active.retain(|a| a != response_id);
    }

    /// We sent a `response.create` at `now` (`aside`: out-of-band).
    pub fn sent(&mut self, now: Instant, aside: bool) {
        self.requested = Some(Request { at: now, aside });
        self.last_aside = aside;
    }

    /// The server refused our last `response.create` because a response was active: owe it
    /// again (a refused filler is not retried: the wait it covered is over by then).
    pub fn refused(&mut self) {
        let aside = self.requested.take().map_or(self.last_aside, |r| r.aside);
        if !aside {
            self.owed.get_or_insert_with(Owed::default).plain = true;
        }
    }

    /// Forgets a request that got no `response.created` within [`REQUEST_TIMEOUT`].
    pub fn expire(&mut self, now: Instant) {
        if self.requested.is_some_and(|r| now >= r.at + REQUEST_TIMEOUT) {
            self.requested = None;
        }
    }

    /// When [`ResponseGate::expire`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.requested.map(|r| r.at + REQUEST_TIMEOUT)
    }

    /// Owes a `response.create`: after the tool calls of `after_response`, or plain.
    pub fn owe(&mut self, after_response: Option<&str>) {
        let owed = self.owed.get_or_insert_with(Owed::default);
        match after_response {
            Some(id) if !owed.after.iter().any(|a| a == id) => owed.after.push(id.to_owned()),
            Some(_) => {}
            None => owed.plain = true,
        }
    }

    /// What is owed, if anything.
    pub fn owed(&self) -> Option<&Owed> {
        self.owed.as_ref()
    }

    /// Clears what is owed (it is being sent, or the server's own turn response will cover it).
    pub fn forget_owed(&mut self) {
        self.owed = None;
    }

    /// The response is an out-of-band filler (its items are not in the conversation).
    pub fn is_aside(&self, response_id: &str) -> bool {
        self.asides.iter().any(|a| a == response_id)
    }

    /// A response in the conversation (not a filler) is active or requested: the model is
    /// answering, or about to.
    pub fn answering(&self) -> bool {
        self.active.iter().any(|a| !self.is_aside(a)) || self.requested.is_some_and(|r| !r.aside)
    }

    /// The session was replaced: its responses and requests are gone with it. What is owed
    /// stays owed (it is for the conversation, which the next session continues).
    pub fn new_session(&mut self) {
        self.active.clear();
        self.requested = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_from_request_to_done() {
        let t0 = crate::test_epoch();
        let mut g = ResponseGate::default();
        assert!(!g.busy());
        g.sent(t0, false);
        assert!(g.busy());
        g.created("resp_1");
        assert!(g.busy());
        g.done("resp_1");
        assert!(!g.busy());
    }

    #[test]
    fn a_lost_request_expires() {
        let t0 = crate::test_epoch();
        let mut g = ResponseGate::default();
        g.sent(t0, false);
        assert_eq!(g.deadline(), Some(t0 + REQUEST_TIMEOUT));
        g.expire(t0 + REQUEST_TIMEOUT - Duration::from_millis(1));
        assert!(g.busy());
        g.expire(t0 + REQUEST_TIMEOUT);
        assert!(!g.busy());
        assert_eq!(g.deadline(), None);
    }

    #[test]
    fn refused_request_is_owed_again_but_a_filler_is_not() {
        let t0 = crate::test_epoch();
        let mut g = ResponseGate::default();
        g.sent(t0, false);
        g.refused();
        assert_eq!(g.owed(), Some(&Owed { plain: true, after: vec![] }));
        g.forget_owed();
        g.sent(t0, true);
        g.refused();
        assert_eq!(g.owed(), None);
        // The server's own response was taken for ours, then ours was refused.
        g.sent(t0, false);
        g.created("resp_vad");
        g.refused();
        assert_eq!(g.owed(), Some(&Owed { plain: true, after: vec![] }));
    }

    #[test]
    fn a_new_session_forgets_responses_but_not_what_is_owed() {
        let t0 = crate::test_epoch();
        let mut g = ResponseGate::default();
        g.sent(t0, true);
        g.created("resp_f");
        assert!(g.busy() && !g.answering(), "a filler is not an answer");
        g.sent(t0, false);
        assert!(g.answering());
        g.owe(Some("resp_1"));
        g.new_session();
        assert!(!g.busy() && !g.answering());
        assert_eq!(g.owed(), Some(&Owed { plain: false, after: vec!["resp_1".into()] }));
    }

    #[test]
    fn fillers_are_remembered_as_asides() {
        let t0 = crate::test_epoch();
        let mut g = ResponseGate::default();
        g.sent(t0, true);
        g.created("resp_f");
        g.created("resp_vad");
        assert!(g.is_aside("resp_f"));
        assert!(!g.is_aside("resp_vad"));
    }
}
