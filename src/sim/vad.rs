//! Energy voice-activity detection for the Realtime simulator.
//!
//! Deliberately simple and deterministic: RMS of each 20 ms window against a fixed threshold.
//! It only has to tell the speech fixtures from silence, so tests can predict its events.

use super::realtime::SimVad;

/// Window length: the VAD decides once per 20 ms of audio.
const WINDOW_MS: u64 = 20;

/// A transition found by [`EnergyVad::push`]. Positions are ms of audio appended so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VadEvent {
    /// `start_ms` of voiced audio seen. `audio_start_ms` is where the voiced run began, moved
    /// back by the prefix padding (never below 0), as the Realtime API reports it.
    Started { audio_start_ms: u64, voiced_start_ms: u64 },
    /// `silence_ms` of quiet after speech. `audio_end_ms` is the end of the window that
    /// completed the silence, so it includes the silence (OpenAI documents the same).
    Stopped { audio_end_ms: u64 },
}

/// Detector state: only what each phase needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No speech. `voiced_ms` counts consecutive loud windows, starting at `voiced_from`.
    Quiet { voiced_ms: u64, voiced_from: u64 },
    /// In speech. `silent_ms` counts consecutive quiet windows.
    Speech { silent_ms: u64 },
}

/// Streaming energy VAD over linear samples of any rate; input may arrive in chunks of any size.
#[derive(Debug)]
pub(crate) struct EnergyVad {
    cfg: SimVad,
    /// Samples of the window being filled (fewer than one window's worth between calls).
    pending: Vec<i16>,
    /// Rate of `pending` (Hz); a rate change drops the partial window.
    rate_hz: u32,
    /// Audio position (ms) at the start of the window being filled.
    pos_ms: u64,
    phase: Phase,
}

impl EnergyVad {
    /// A detector with the given thresholds, at position 0.
    pub(crate) fn new(cfg: SimVad) -> Self {
        Self {
            cfg,
            pending: Vec::new(),
            rate_hz: 0,
            pos_ms: 0,
            phase: Phase::Quiet { voiced_ms: 0, voiced_from: 0 },
        }
    }

    /// Position (ms) of the audio consumed in whole windows so far.
    #[cfg(test)]
    pub(crate) fn position_ms(&self) -> u64 {
        self.pos_ms
    }

    /// Whether the detector is inside a speech segment.
    #[cfg(test)]
    pub(crate) fn in_speech(&self) -> bool {
        matches!(self.phase, Phase::Speech { .. })
    }

    /// Forgets any speech in progress (after `input_audio_buffer.clear`); the position keeps
    /// counting.
    pub(crate) fn reset(&mut self) {
        self.phase = Phase::Quiet { voiced_ms: 0, voiced_from: self.pos_ms };
    }

    /// Feeds samples at `rate_hz`, appending any transitions to `events`.
    pub(crate) fn push(&mut self, samples: &[i16], rate_hz: u32, events: &mut Vec<VadEvent>) {
        let window = (u64::from(rate_hz) * WINDOW_MS / 1000) as usize;
        if window == 0 {
            return;
        }
        if rate_hz != self.rate_hz {
            self.pending.clear();
            self.rate_hz = rate_hz;
        }
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (window - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == window {
                let loud = rms(&self.pending) >= self.cfg.rms_threshold;
                self.pending.clear();
                self.window(loud, events);
            }
        }
    }

    /// Advances the state machine by one 20 ms window.
    fn window(&mut self, loud: bool, events: &mut Vec<VadEvent>) {
        let start = self.pos_ms;
        self.pos_ms += WINDOW_MS;
        self.phase = match (self.phase, loud) {
            (Phase::Quiet { voiced_ms, voiced_from }, true) => {
                let from = if voiced_ms == 0 { start } else { voiced_from };
                let voiced_ms = voiced_ms + WINDOW_MS;
                if voiced_ms >= u64::from(self.cfg.start_ms) {
                    let audio_start_ms = from.saturating_sub(u64::from(self.cfg.prefix_padding_ms));
                    events.push(VadEvent::Started { audio_start_ms, voiced_start_ms: from });
                    Phase::Speech { silent_ms: 0 }
                } else {
                    Phase::Quiet { voiced_ms, voiced_from: from }
                }
            }
            (Phase::Quiet { .. }, false) => Phase::Quiet { voiced_ms: 0, voiced_from: self.pos_ms },
            (Phase::Speech { silent_ms }, false) => {
                let silent_ms = silent_ms + WINDOW_MS;
                if silent_ms >= u64::from(self.cfg.silence_ms) {
                    events.push(VadEvent::Stopped { audio_end_ms: self.pos_ms });
                    Phase::Quiet { voiced_ms: 0, voiced_from: self.pos_ms }
                } else {
                    Phase::Speech { silent_ms }
                }
            }
            (Phase::Speech { .. }, true) => Phase::Speech { silent_ms: 0 },
        };
    }
}

/// Root mean square of a window of i16 samples.
fn rms(window: &[i16]) -> f32 {
    if window.is_empty() {
        return 0.0;
    }
    let sum: f64 = window.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / window.len() as f64).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vad() -> EnergyVad {
        EnergyVad::new(SimVad { rms_threshold: 600.0, start_ms: 60, silence_ms: 500, prefix_padding_ms: 300 })
    }

    /// `ms` of a loud square wave (RMS 3000) or silence at 8 kHz.
    fn audio(ms: usize, loud: bool) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| {
                if !loud {
                    0
                } else if i % 2 == 0 {
                    3000
                } else {
                    -3000
                }
            })
            .collect()
    }

    #[test]
    fn speech_then_silence_gives_started_and_stopped_at_the_right_positions() {
        let mut v = vad();
        let mut ev = Vec::new();
        // 1 s silence, 1 s speech, 1 s silence, fed in odd-sized chunks.
        let mut signal = audio(1000, false);
        signal.extend(audio(1000, true));
        signal.extend(audio(1000, false));
        for chunk in signal.chunks(97) {
            v.push(chunk, 8000, &mut ev);
        }
        assert_eq!(
            ev,
            vec![
                // Voiced from 1000 ms, confirmed after 60 ms, reported 300 ms earlier.
                VadEvent::Started { audio_start_ms: 700, voiced_start_ms: 1000 },
                // Speech ends at 2000 ms; 500 ms of silence confirms it at 2500 ms.
                VadEvent::Stopped { audio_end_ms: 2500 },
            ]
        );
        assert_eq!(v.position_ms(), 3000);
        assert!(!v.in_speech());
    }

    #[test]
    fn short_blips_and_short_pauses_do_not_toggle() {
        let mut v = vad();
        let mut ev = Vec::new();
        let mut signal = audio(40, true); // shorter than start_ms
        signal.extend(audio(200, false));
        signal.extend(audio(300, true));
        signal.extend(audio(300, false)); // shorter than silence_ms
        signal.extend(audio(300, true));
        v.push(&signal, 8000, &mut ev);
        assert_eq!(ev, vec![VadEvent::Started { audio_start_ms: 0, voiced_start_ms: 240 }]);
        assert!(v.in_speech());
    }

    #[test]
    fn works_at_24_khz_and_reset_forgets_speech() {
        let mut v = vad();
        let mut ev = Vec::new();
        let loud: Vec<i16> = (0..24 * 200).map(|i| if i % 2 == 0 { 2000 } else { -2000 }).collect();
        v.push(&loud, 24000, &mut ev);
        assert_eq!(ev.len(), 1);
        v.reset();
        assert!(!v.in_speech());
        v.push(&vec![0; 24 * 600], 24000, &mut ev);
        assert_eq!(ev.len(), 1, "no speech_stopped after a reset");
    }

    /// Turns the VAD finds in a caller fixture followed by 1 s of silence.
    fn turns(name: &str, silence_ms: u32) -> usize {
        let clip = crate::sim::fixtures::clip(name).unwrap();
        let mut v = EnergyVad::new(SimVad { silence_ms, ..SimVad::default() });
        let mut lin = Vec::new();
        crate::core::audio::g711::decode_ulaw(clip.ulaw, &mut lin);
        lin.extend(std::iter::repeat_n(0, 8000));
        let mut ev = Vec::new();
        v.push(&lin, 8000, &mut ev);
        ev.iter().filter(|e| matches!(e, VadEvent::Stopped { .. })).count()
    }

    #[test]
    fn caller_fixtures_are_one_turn_each_except_followup_at_500_ms() {
        assert_eq!(turns("caller_question", 500), 1);
        assert_eq!(turns("caller_interrupt", 500), 1);
        // "Great, thanks." is followed by a 540 ms pause: two turns at the default 500 ms.
        assert_eq!(turns("caller_followup", 500), 2);
        assert_eq!(turns("caller_followup", 600), 1);
    }
}
