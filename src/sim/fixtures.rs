//! Speech fixtures embedded in the binary, so the demo and the tests run from any directory.
//!
//! The clips are synthesized speech (see `fixtures/speech/README.md`): raw G.711 μ-law,
//! 8 kHz mono, 8 bytes per millisecond. Text and speaker come from `manifest.json`.

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;

/// Who speaks a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Speaker {
    /// The person on the phone.
    Caller,
    /// The AI agent (played by the Realtime simulator).
    Agent,
}

/// One speech clip: raw μ-law 8 kHz mono plus what is said in it.
#[derive(Clone, PartialEq, Eq)]
pub struct Clip {
    /// Fixture name, e.g. `caller_question`.
    pub name: &'static str,
    /// Who says it.
    pub speaker: Speaker,
    /// The words spoken (the exact text the speech was synthesized from).
    pub text: String,
    /// Raw G.711 μ-law samples at 8 kHz, no header.
    pub ulaw: &'static [u8],
}

impl Clip {
    /// Length of the clip in milliseconds (μ-law 8 kHz: 8 bytes per ms).
    pub fn duration_ms(&self) -> u64 {
        self.ulaw.len() as u64 / 8
    }
}

// Hand-written so a `{:?}` of a config does not print 100 kB of audio bytes.
impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clip")
            .field("name", &self.name)
            .field("speaker", &self.speaker)
            .field("text", &self.text)
            .field("ulaw_bytes", &self.ulaw.len())
            .finish()
    }
}

const MANIFEST: &str = include_str!("../../fixtures/speech/manifest.json");

/// Every embedded clip, by name. The manifest must list the same names.
const AUDIO: [(&str, &[u8]); 8] = [
    ("caller_question", include_bytes!("../../fixtures/speech/caller_question.ulaw")),
    ("caller_followup", include_bytes!("../../fixtures/speech/caller_followup.ulaw")),
    ("caller_interrupt", include_bytes!("../../fixtures/speech/caller_interrupt.ulaw")),
    ("agent_reply_1", include_bytes!("../../fixtures/speech/agent_reply_1.ulaw")),
    ("agent_reply_2", include_bytes!("../../fixtures/speech/agent_reply_2.ulaw")),
    ("agent_reply_3", include_bytes!("../../fixtures/speech/agent_reply_3.ulaw")),
    ("agent_goodbye", include_bytes!("../../fixtures/speech/agent_goodbye.ulaw")),
    ("agent_filler", include_bytes!("../../fixtures/speech/agent_filler.ulaw")),
];

/// Caller clips in the order a scripted call uses them.
const CALLER_ORDER: [&str; 3] = ["caller_question", "caller_followup", "caller_interrupt"];
/// Agent replies in the order the simulator plays them.
const AGENT_ORDER: [&str; 3] = ["agent_reply_1", "agent_reply_2", "agent_reply_3"];

#[derive(Deserialize)]
struct Manifest {
    clips: Vec<ManifestClip>,
}

#[derive(Deserialize)]
struct ManifestClip {
    name: String,
    speaker: String,
    text: String,
    duration_ms: u64,
}

/// Looks up one embedded clip by name (e.g. `agent_reply_2`).
///
/// # Errors
/// If no clip has that name or the embedded manifest disagrees with the audio.
pub fn clip(name: &str) -> anyhow::Result<Clip> {
    let (static_name, ulaw) = AUDIO
        .iter()
        .find(|(n, _)| *n == name)
        .copied()
        .ok_or_else(|| anyhow!("no speech fixture named {name:?}"))?;
    let manifest: Manifest =
        serde_json::from_str(MANIFEST).context("parsing fixtures/speech/manifest.json")?;
    let entry = manifest
        .clips
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| anyhow!("fixture {name:?} is missing from manifest.json"))?;
    let speaker = match entry.speaker.as_str() {
        "caller" => Speaker::Caller,
        "agent" => Speaker::Agent,
        other => bail!("fixture {name:?}: unknown speaker {other:?}"),
    };
    // The manifest rounds down to whole milliseconds, as `Clip::duration_ms` does.
    let actual_ms = ulaw.len() as u64 / 8;
    if entry.duration_ms != actual_ms {
        bail!("fixture {name:?}: manifest says {} ms, audio is {actual_ms} ms", entry.duration_ms);
    }
    Ok(Clip { name: static_name, speaker, text: entry.text, ulaw })
}

/// The agent replies `agent_reply_1..3`, in order. `agent_reply_2` is the long one a
/// scripted caller interrupts.
///
/// # Errors
/// If the embedded manifest is inconsistent (a build problem, not a runtime one).
pub fn agent_replies() -> anyhow::Result<Vec<Clip>> {
    AGENT_ORDER.iter().map(|n| clip(n)).collect()
}

/// `agent_goodbye` ("Thanks for calling. Goodbye!"): the reply after an `end_call` tool result.
///
/// # Errors
/// If the embedded manifest is inconsistent.
pub fn agent_goodbye() -> anyhow::Result<Clip> {
    clip("agent_goodbye")
}

/// `agent_filler` ("One moment while I check that for you.", about 2.4 s): what the simulator
/// says for an out-of-band `response.create` (a filler while a tool runs).
///
/// # Errors
/// If the embedded manifest is inconsistent.
pub fn agent_filler() -> anyhow::Result<Clip> {
    clip("agent_filler")
}

/// The caller clips `caller_question`, `caller_followup`, `caller_interrupt`, in order.
///
/// # Errors
/// If the embedded manifest is inconsistent.
pub fn caller_clips() -> anyhow::Result<Vec<Clip>> {
    CALLER_ORDER.iter().map(|n| clip(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clip_loads_and_matches_its_manifest_entry() {
        for (name, _) in AUDIO {
            let c = clip(name).unwrap();
            assert!(c.duration_ms() > 1000, "{name} is suspiciously short");
            assert!(!c.text.is_empty());
        }
        assert!(clip("nope").is_err());
    }

    #[test]
    fn ordered_lists_have_the_right_speakers() {
        let agent = agent_replies().unwrap();
        assert_eq!(agent.iter().map(|c| c.name).collect::<Vec<_>>(), AGENT_ORDER);
        assert!(agent.iter().all(|c| c.speaker == Speaker::Agent));
        let caller = caller_clips().unwrap();
        assert_eq!(caller.iter().map(|c| c.name).collect::<Vec<_>>(), CALLER_ORDER);
        assert!(caller.iter().all(|c| c.speaker == Speaker::Caller));
        // The barge-in scenario relies on reply 2 being the long one.
        assert!(agent[1].duration_ms() > agent[0].duration_ms());
        for extra in [agent_goodbye().unwrap(), agent_filler().unwrap()] {
            assert_eq!(extra.speaker, Speaker::Agent);
            assert!(!agent.contains(&extra), "{} is not a normal reply", extra.name);
        }
        assert_eq!(agent_goodbye().unwrap().text, "Thanks for calling. Goodbye!");
    }
}
