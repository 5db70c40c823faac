//! Transcript turns: the caller's from input transcription, the agent's from the output
//! transcript, each with its Realtime item id and times relative to the call's start.

use serde::Serialize;

/// Who spoke a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The person on the phone.
    Caller,
    /// The model.
    Agent,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    /// Who spoke.
    pub role: Role,
    /// The Realtime conversation item id (`item_…`).
    pub item_id: String,
    /// What was said: the caller's transcription, or the agent's output transcript.
    pub text: String,
    /// Speech start (caller) or first frame sent to the provider (agent), ms since call start.
    pub started_ms: u64,
    /// Speech stop (caller) or last frame confirmed played (agent), ms since call start.
    pub ended_ms: u64,
    /// The agent was cut off by a barge-in (its audio was truncated).
    pub interrupted: bool,
}

/// A turn plus what is still missing before it is final.
#[derive(Debug)]
struct Entry {
    turn: Turn,
    /// Caller: transcription arrived (or failed). Agent: playback finished or was truncated.
    text_final: bool,
    emitted: bool,
}

/// The turns of one call, in the order they were opened.
#[derive(Debug, Default)]
pub struct Transcript {
    entries: Vec<Entry>,
}

impl Transcript {
    fn find(&mut self, role: Role, item_id: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().rev().find(|e| e.turn.role == role && e.turn.item_id == item_id)
    }

    fn open(&mut self, role: Role, item_id: &str, at_ms: u64) -> &mut Entry {
        // Search first so a repeated event never opens a second turn for one item.
        let idx = match self.entries.iter().rposition(|e| e.turn.role == role && e.turn.item_id == item_id) {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    turn: Turn {
                        role,
                        item_id: item_id.to_owned(),
                        text: String::new(),
                        started_ms: at_ms,
                        ended_ms: at_ms,
                        interrupted: false,
                    },
                    text_final: false,
                    emitted: false,
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[idx]
    }

    /// The caller started speaking (`speech_started`).
    pub fn caller_started(&mut self, item_id: &str, at_ms: u64) {
        self.open(Role::Caller, item_id, at_ms);
    }

    /// The caller stopped speaking (`speech_stopped`).
    pub fn caller_stopped(&mut self, item_id: &str, at_ms: u64) {
        self.open(Role::Caller, item_id, at_ms).turn.ended_ms = at_ms;
    }

    /// The caller's transcription arrived (or failed, with empty text).
    pub fn caller_text(&mut self, item_id: &str, text: &str, at_ms: u64) {
        let e = self.open(Role::Caller, item_id, at_ms);
        e.turn.text = text.trim().to_owned();
        e.text_final = true;
    }

    /// The first frame of an agent item went out.
    pub fn agent_started(&mut self, item_id: &str, at_ms: u64) {
        self.open(Role::Agent, item_id, at_ms);
    }

    /// A piece of the agent's output transcript.
    pub fn agent_delta(&mut self, item_id: &str, delta: &str, at_ms: u64) {
        let e = self.open(Role::Agent, item_id, at_ms);
        if !e.text_final {
            e.turn.text.push_str(delta);
        }
    }

    /// The agent's full output transcript.
    pub fn agent_text(&mut self, item_id: &str, text: &str, at_ms: u64) {
        let e = self.open(Role::Agent, item_id, at_ms);
        e.turn.text.clear();
        e.turn.text.push_str(text);
    }

    /// The agent item finished playing (`interrupted == false`) or was truncated by a barge-in.
    pub fn agent_finished(&mut self, item_id: &str, at_ms: u64, interrupted: bool) {
        if let Some(e) = self.find(Role::Agent, item_id) {
            e.turn.ended_ms = e.turn.ended_ms.max(at_ms);
            e.turn.interrupted |= interrupted;
            e.text_final = true;
        }
    }

    /// The caller turn of `item_id` is open and its transcription has not arrived.
    pub fn is_pending_caller(&self, item_id: &str) -> bool {
        self.entries.iter().any(|e| e.turn.role == Role::Caller && e.turn.item_id == item_id && !e.text_final)
    }

    /// Forgets the caller turn of `item_id` if its transcription has not arrived (its audio goes
    /// to a new session, which transcribes it again as a new item).
    pub fn forget_pending_caller(&mut self, item_id: &str) {
        let pending = |e: &Entry| e.turn.role == Role::Caller && e.turn.item_id == item_id && !e.text_final;
        self.entries.retain(|e| e.emitted || !pending(e));
    }

    /// The session that owed caller transcriptions is gone: those turns are final with the text
    /// they have (empty), so nothing waits for them.
    pub fn settle_pending_callers(&mut self) {
        for e in self.entries.iter_mut().filter(|e| e.turn.role == Role::Caller && !e.text_final) {
            e.text_final = true;
        }
    }

    /// Caller turns whose transcription has not arrived yet.
    pub fn pending_caller_text(&self) -> usize {
        self.entries.iter().filter(|e| e.turn.role == Role::Caller && !e.text_final).count()
    }

    /// Turns that became final since the last call, each returned once.
    pub fn take_final(&mut self) -> Vec<Turn> {
        let mut out = Vec::new();
        for e in self.entries.iter_mut().filter(|e| e.text_final && !e.emitted) {
            e.emitted = true;
            out.push(e.turn.clone());
        }
        out
    }

    /// Marks every open turn final (the call ended); agent turns not confirmed played count as
    /// interrupted.
    pub fn close(&mut self, at_ms: u64) {
        for e in self.entries.iter_mut().filter(|e| !e.text_final) {
            e.text_final = true;
            if e.turn.role == Role::Agent {
                e.turn.interrupted = true;
                e.turn.ended_ms = e.turn.ended_ms.max(at_ms);
            }
        }
    }

    /// All turns ordered by speech start (a caller transcript that completes after the agent's
    /// reply still sorts first).
    pub fn turns(&self) -> Vec<Turn> {
        let mut turns: Vec<Turn> = self.entries.iter().map(|e| e.turn.clone()).collect();
        turns.sort_by_key(|t| t.started_ms);
        turns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_sort_by_speech_start_not_arrival() {
        let mut t = Transcript::default();
        t.caller_started("item_u1", 100);
        t.caller_stopped("item_u1", 900);
        t.agent_started("item_a1", 1200);
        t.agent_text("item_a1", "Hello.", 1300);
        t.agent_finished("item_a1", 2000, false);
        t.caller_text("item_u1", " Hi there ", 2500);
        let turns = t.turns();
        assert_eq!(turns[0].role, Role::Caller);
        assert_eq!(turns[0].text, "Hi there");
        assert_eq!(turns[1].text, "Hello.");
        let first = t.take_final();
        assert_eq!(first.len(), 2);
        assert!(t.take_final().is_empty(), "each turn is emitted once");
    }

    #[test]
    fn close_marks_unplayed_agent_turns_interrupted() {
        let mut t = Transcript::default();
        t.agent_started("item_a1", 0);
        t.agent_delta("item_a1", "Hel", 10);
        t.agent_delta("item_a1", "lo", 20);
        t.close(500);
        let turns = t.take_final();
        assert_eq!(turns[0].text, "Hello");
        assert!(turns[0].interrupted);
    }
}
