//! Per-call format conversion between the telephony provider and the model.
//!
//! Each direction decodes to i16 at its input rate, resamples with a
//! [`StreamResampler`] when the rates differ, and encodes to the other format. Input is
//! handled in blocks of at most 20 ms so the scratch buffers allocated in
//! [`Transcoder::new`] never grow, whatever the chunk size.

use super::resample::{ResampleError, StreamResampler};
use super::{AudioFormat, Encoding, FRAME_MS, g711, l16};

/// Why a [`Transcoder`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The two formats' sample rates cannot be converted.
    #[error("cannot convert {from:?} to {to:?}: {source}")]
    Resample {
        /// Format converted from.
        from: AudioFormat,
        /// Format converted to.
        to: AudioFormat,
        /// The resampler's reason.
        #[source]
        source: ResampleError,
    },
}

/// Converts one call's audio in both directions: provider → model and model → provider.
///
/// Each direction keeps its own resampler state, carried odd L16 byte and preallocated
/// scratch. Output is appended to caller-owned `Vec`s; reserve
/// [`max_to_model_bytes`](Self::max_to_model_bytes) /
/// [`max_to_provider_bytes`](Self::max_to_provider_bytes) to keep them from reallocating.
#[derive(Debug)]
pub struct Transcoder {
    provider: AudioFormat,
    model: AudioFormat,
    to_model: Direction,
    to_provider: Direction,
}

impl Transcoder {
    /// Builds a transcoder between the provider's and the model's formats.
    ///
    /// # Errors
    /// [`TranscodeError::Resample`] if the formats differ and their rates are not both in
    /// [`SUPPORTED_RATES_HZ`](super::resample::SUPPORTED_RATES_HZ).
    pub fn new(provider: AudioFormat, model: AudioFormat) -> Result<Self, TranscodeError> {
        Ok(Self {
            provider,
            model,
            to_model: Direction::new(provider, model)?,
            to_provider: Direction::new(model, provider)?,
        })
    }

    /// Whether both formats are identical, so bytes are copied unchanged.
    pub fn is_passthrough(&self) -> bool {
        self.provider == self.model
    }

    /// Converts provider audio bytes to the model format, appending to `out`.
    ///
    /// Any chunk length is accepted; an odd trailing L16 byte is kept for the next call.
    /// Output lags input by the resampler delay (5 ms) plus up to 10 ms queued input.
    pub fn to_model(&mut self, provider_bytes: &[u8], out: &mut Vec<u8>) {
        self.to_model.convert(provider_bytes, out);
    }

    /// Converts model audio bytes to the provider format, appending to `out`.
    ///
    /// Any chunk length is accepted; an odd trailing L16 byte is kept for the next call.
    pub fn to_provider(&mut self, model_bytes: &[u8], out: &mut Vec<u8>) {
        self.to_provider.convert(model_bytes, out);
    }

    /// Ends the outbound stream (e.g. when a model response is done): appends the audio
    /// still held by the resampler, zero-padded (at most ~15 ms), then starts afresh.
    /// A dangling odd L16 byte is dropped.
    pub fn flush_to_provider(&mut self, out: &mut Vec<u8>) {
        self.to_provider.flush(out);
    }

    /// Drops all buffered outbound state (resampler queue and filter, carried byte),
    /// e.g. after a barge-in clears the provider's playback.
    pub fn reset_to_provider(&mut self) {
        self.to_provider.reset();
    }

    /// Upper bound on the bytes one [`to_model`](Self::to_model) call with
    /// `provider_bytes` input bytes appends.
    pub fn max_to_model_bytes(&self, provider_bytes: usize) -> usize {
        self.to_model.max_output_bytes(provider_bytes)
    }

    /// Upper bound on the bytes one [`to_provider`](Self::to_provider) call with
    /// `model_bytes` input bytes appends (and on what
    /// [`flush_to_provider`](Self::flush_to_provider) appends, for `model_bytes` = 0).
    pub fn max_to_provider_bytes(&self, model_bytes: usize) -> usize {
        self.to_provider.max_output_bytes(model_bytes)
    }
}

/// One conversion direction with its own state.
#[derive(Debug)]
struct Direction {
    from: AudioFormat,
    to: AudioFormat,
    /// `None` when the rates are equal.
    resampler: Option<StreamResampler>,
    /// First byte of an L16 sample split across calls.
    carry: Option<u8>,
    /// Samples decoded per block (20 ms at the input rate).
    block: usize,
    /// Decoded input samples; capacity `block`.
    decoded: Vec<i16>,
    /// Resampled samples; capacity `resampler.max_output_len(block)` plus flush room.
    resampled: Vec<i16>,
}

impl Direction {
    fn new(from: AudioFormat, to: AudioFormat) -> Result<Self, TranscodeError> {
        let passthrough = from == to;
        let resampler = if passthrough || from.sample_rate_hz == to.sample_rate_hz {
            None
        } else {
            Some(
                StreamResampler::new(from.sample_rate_hz, to.sample_rate_hz)
                    .map_err(|source| TranscodeError::Resample { from, to, source })?,
            )
        };
        let block = if passthrough { 0 } else { (from.sample_rate_hz * FRAME_MS / 1000).max(1) as usize };
        let resampled_cap = resampler
            .as_ref()
            .map_or(0, |r| r.max_output_len(block).max(r.max_output_len(0) + r.delay_samples()));
        Ok(Self {
            from,
            to,
            resampler,
            carry: None,
            block,
            decoded: Vec::with_capacity(block),
            resampled: Vec::with_capacity(resampled_cap),
        })
    }

    fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.from == self.to {
            out.extend_from_slice(input);
            return;
        }
        let bytes_per_sample = self.from.bytes_per_sample();
        let mut rest = input;
        if let Some(first) = self.carry.take() {
            let Some((&second, tail)) = rest.split_first() else {
                self.carry = Some(first);
                return;
            };
            decode(self.from.encoding, &[first, second], &mut self.decoded);
            rest = tail;
        }
        loop {
            let room = self.block - self.decoded.len();
            let samples = (rest.len() / bytes_per_sample).min(room);
            let (now, later) = rest.split_at(samples * bytes_per_sample);
            decode(self.from.encoding, now, &mut self.decoded);
            rest = later;
            self.drain(out);
            if rest.len() < bytes_per_sample {
                break;
            }
        }
        // Only L16 can leave a byte: half a sample.
        self.carry = rest.first().copied();
    }

    /// Resamples and encodes everything in `decoded`, appending to `out`.
    fn drain(&mut self, out: &mut Vec<u8>) {
        if self.decoded.is_empty() {
            return;
        }
        match self.resampler.as_mut() {
            Some(r) => {
                self.resampled.clear();
                r.process(&self.decoded, &mut self.resampled);
                encode(self.to.encoding, &self.resampled, out);
            }
            None => encode(self.to.encoding, &self.decoded, out),
        }
        self.decoded.clear();
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        self.carry = None;
        if let Some(r) = self.resampler.as_mut() {
            self.resampled.clear();
            r.flush(&mut self.resampled);
            encode(self.to.encoding, &self.resampled, out);
        }
    }

    fn reset(&mut self) {
        self.carry = None;
        self.decoded.clear();
        self.resampled.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
    }

    fn max_output_bytes(&self, input_bytes: usize) -> usize {
        if self.from == self.to {
            return input_bytes;
        }
        // +1 for a carried byte completing a sample.
        let samples = (input_bytes + 1) / self.from.bytes_per_sample();
        let out_samples = match &self.resampler {
            Some(r) => r.max_output_len(samples).max(r.max_output_len(0) + r.delay_samples()),
            None => samples,
        };
        out_samples * self.to.bytes_per_sample()
    }
}

/// Decodes whole samples of `src` (even length for L16) and appends them to `dst`.
fn decode(encoding: Encoding, src: &[u8], dst: &mut Vec<i16>) {
    match encoding {
        Encoding::Pcmu => g711::decode_ulaw(src, dst),
        Encoding::Pcma => g711::decode_alaw(src, dst),
        Encoding::L16(order) => {
            l16::decode(src, order, dst);
        }
    }
}

fn encode(encoding: Encoding, src: &[i16], dst: &mut Vec<u8>) {
    match encoding {
        Encoding::Pcmu => g711::encode_ulaw(src, dst),
        Encoding::Pcma => g711::encode_alaw(src, dst),
        Encoding::L16(order) => l16::encode(src, order, dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::audio::ByteOrder;
    use proptest::prelude::*;

    const L16_16K_LE: AudioFormat =
        AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 16000 };
    const L16_8K_BE: AudioFormat =
        AudioFormat { encoding: Encoding::L16(ByteOrder::Big), sample_rate_hz: 8000 };
    const SPEECH: &[u8] = include_bytes!("../../../fixtures/speech/caller_question.ulaw");

    fn sine(freq_hz: f64, rate_hz: u32, amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                (amplitude * (2.0 * std::f64::consts::PI * freq_hz * n as f64 / f64::from(rate_hz)).sin())
                    as i16
            })
            .collect()
    }

    fn zero_crossings(x: &[i16]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    fn pcm(bytes: &[u8], order: ByteOrder) -> Vec<i16> {
        let mut v = Vec::new();
        l16::decode(bytes, order, &mut v);
        v
    }

    #[test]
    fn passthrough_is_byte_identical() {
        let mut t = Transcoder::new(AudioFormat::PCMU_8K, AudioFormat::PCMU_8K).expect("same format");
        assert!(t.is_passthrough());
        let mut out = Vec::new();
        t.to_model(SPEECH, &mut out);
        assert_eq!(out, SPEECH);
        out.clear();
        t.to_provider(&SPEECH[..7], &mut out);
        t.to_provider(&SPEECH[7..1000], &mut out);
        assert_eq!(out, &SPEECH[..1000]);
        t.flush_to_provider(&mut out);
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn l16_16k_to_pcm24k_and_back_keeps_a_sine() {
        let mut t = Transcoder::new(L16_16K_LE, AudioFormat::PCM16_24K).expect("supported");
        assert!(!t.is_passthrough());
        let input = sine(1000.0, 16000, 8000.0, 16000);
        let mut bytes = Vec::new();
        l16::encode(&input, ByteOrder::Little, &mut bytes);

        let mut model = Vec::new();
        for frame in bytes.chunks(640) {
            t.to_model(frame, &mut model);
        }
        let up = pcm(&model, ByteOrder::Little);
        assert_eq!(up.len(), 24000);
        let steady = &up[2400..2400 + 12000];
        assert!((999..=1001).contains(&zero_crossings(steady)));
        assert!((rms(steady) / rms(&input) - 1.0).abs() < 0.05);

        // Model deltas arrive in odd sizes.
        let mut back = Vec::new();
        for chunk in model.chunks(4801) {
            t.to_provider(chunk, &mut back);
        }
        t.flush_to_provider(&mut back);
        let down = pcm(&back, ByteOrder::Little);
        // The first leg's 5 ms delay is inside `model`; flushing adds the second leg's.
        assert_eq!(down.len(), 16000 + 80);
        let steady = &down[1600..1600 + 8000];
        assert!((999..=1001).contains(&zero_crossings(steady)));
        assert!((rms(steady) / rms(&input) - 1.0).abs() < 0.05);
    }

    #[test]
    fn ulaw_speech_round_trip_through_24k_keeps_energy() {
        let mut t = Transcoder::new(AudioFormat::PCMU_8K, AudioFormat::PCM16_24K).expect("supported");
        let mut model = Vec::new();
        for frame in SPEECH.chunks(160) {
            t.to_model(frame, &mut model);
        }
        assert_eq!(model.len(), SPEECH.len() / 80 * 80 * 6);
        let mut back = Vec::with_capacity(t.max_to_provider_bytes(model.len()));
        // Model deltas: varied sizes, including odd ones.
        let mut rest = &model[..];
        for n in [4801, 123, 960, 1, 3333].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at((*n).min(rest.len()));
            t.to_provider(a, &mut back);
            rest = b;
        }
        t.flush_to_provider(&mut back);

        let mut original = Vec::new();
        g711::decode_ulaw(SPEECH, &mut original);
        let mut result = Vec::new();
        g711::decode_ulaw(&back, &mut result);
        // 5 ms delay each way at 8 kHz.
        let delay = 80;
        let aligned = &result[delay..];
        let n = original.len().min(aligned.len());
        let ratio_db = 20.0 * (rms(&aligned[..n]) / rms(&original[..n])).log10();
        assert!(ratio_db.abs() < 1.0, "energy changed by {ratio_db:.2} dB");
        // Same waveform, not just the same energy: high correlation once aligned.
        let dot: f64 =
            original[..n].iter().zip(&aligned[..n]).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let corr = dot / (rms(&original[..n]) * rms(&aligned[..n]) * n as f64);
        assert!(corr > 0.9, "correlation {corr:.3}");
    }

    #[test]
    fn same_rate_converts_encoding_without_resampling() {
        let mut t = Transcoder::new(AudioFormat::PCMU_8K, AudioFormat::PCMA_8K).expect("same rate");
        let mut out = Vec::new();
        t.to_model(&[0xFF, 0x00, 0x80, 0xCE], &mut out);
        assert_eq!(out, [0xD5, 0x2A, 0xAA, 0xFB]);

        let mut t = Transcoder::new(AudioFormat::PCMU_8K, L16_8K_BE).expect("same rate");
        out.clear();
        t.to_model(&[0xCE], &mut out);
        assert_eq!(out, 988i16.to_be_bytes());
        out.clear();
        t.to_provider(&[0x03], &mut out);
        assert!(out.is_empty(), "half a sample is carried");
        t.to_provider(&[0xDC], &mut out);
        assert_eq!(out, [0xCE]);
    }

    #[test]
    fn reset_to_provider_drops_carried_state() {
        let mut t = Transcoder::new(AudioFormat::PCMU_8K, AudioFormat::PCM16_24K).expect("supported");
        let mut out = Vec::new();
        t.to_provider(&[1, 2, 3], &mut out);
        t.reset_to_provider();
        t.to_provider(&[0; 960], &mut out);
        let mut fresh = Transcoder::new(AudioFormat::PCMU_8K, AudioFormat::PCM16_24K).expect("supported");
        let mut want = Vec::new();
        fresh.to_provider(&[0; 960], &mut want);
        assert_eq!(out, want);
    }

    #[test]
    fn unsupported_rates_are_errors() {
        let odd = AudioFormat { encoding: Encoding::Pcmu, sample_rate_hz: 11025 };
        assert!(matches!(Transcoder::new(odd, AudioFormat::PCM16_24K), Err(TranscodeError::Resample { .. })));
        // Identical formats need no resampler, whatever the rate.
        assert!(Transcoder::new(odd, odd).is_ok());
    }

    #[test]
    fn reserved_output_does_not_grow() {
        let mut t = Transcoder::new(AudioFormat::PCMU_8K, AudioFormat::PCM16_24K).expect("supported");
        let mut out = Vec::with_capacity(t.max_to_model_bytes(160).max(t.max_to_provider_bytes(1001)));
        let cap = out.capacity();
        for frame in SPEECH.chunks(160).take(100) {
            out.clear();
            t.to_model(frame, &mut out);
            assert!(out.len() <= t.max_to_model_bytes(frame.len()));
        }
        for _ in 0..100 {
            out.clear();
            t.to_provider(&[0x11; 1001], &mut out);
            assert!(out.len() <= t.max_to_provider_bytes(1001));
        }
        out.clear();
        t.flush_to_provider(&mut out);
        assert!(out.len() <= t.max_to_provider_bytes(0));
        assert_eq!(out.capacity(), cap);
    }

    proptest! {
        #[test]
        fn odd_chunking_matches_one_shot(
            samples in proptest::collection::vec(any::<i16>(), 0..2000),
            sizes in proptest::collection::vec(0usize..1500, 1..12),
        ) {
            let mut bytes = Vec::new();
            l16::encode(&samples, ByteOrder::Little, &mut bytes);
            let mut whole = Vec::new();
            let mut t = Transcoder::new(AudioFormat::PCMU_8K, AudioFormat::PCM16_24K).expect("supported");
            t.to_provider(&bytes, &mut whole);
            t.flush_to_provider(&mut whole);

            let mut pieces = Vec::new();
            let mut t = Transcoder::new(AudioFormat::PCMU_8K, AudioFormat::PCM16_24K).expect("supported");
            let mut rest = &bytes[..];
            let mut i = 0;
            while !rest.is_empty() {
                let (a, b) = rest.split_at(sizes[i % sizes.len()].min(rest.len()));
                i += 1;
                t.to_provider(a, &mut pieces);
                rest = b;
            }
            t.flush_to_provider(&mut pieces);
            // The resampler sees identical 10 ms chunks either way, so bytes match exactly.
            prop_assert_eq!(pieces, whole);
        }
    }
}
