//! Streaming mono resampler on rubato's synchronous FFT resampler.
//!
//! Input of any length is queued and processed in fixed 10 ms chunks, so feeding 20 ms
//! frames one at a time yields the same output stream as one large call. All buffers
//! (the input queue, rubato's scratch and our output scratch) are allocated in
//! [`StreamResampler::new`]; [`StreamResampler::process`] only appends to the caller's
//! `Vec`, which does not reallocate when it has capacity for
//! [`StreamResampler::max_output_len`] more samples.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

/// Sample rates (Hz) the resampler accepts, on either side.
///
/// All are multiples of 8000 Hz, which keeps rubato's minimum FFT block at 6 samples or
/// fewer, so a 10 ms chunk is always a whole number of blocks.
pub const SUPPORTED_RATES_HZ: [u32; 5] = [8000, 16000, 24000, 32000, 48000];

/// Chunks per second: each rubato call handles 10 ms of input.
const CHUNKS_PER_SECOND: u32 = 100;

/// Why a [`StreamResampler`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// One of the rates is not in [`SUPPORTED_RATES_HZ`].
    #[error("unsupported resampling {from_hz} Hz -> {to_hz} Hz (supported: {SUPPORTED_RATES_HZ:?})")]
    UnsupportedRate {
        /// Input rate (Hz).
        from_hz: u32,
        /// Output rate (Hz).
        to_hz: u32,
    },
    /// rubato rejected the configuration.
    #[error("resampler construction failed: {0}")]
    Construction(#[from] rubato::ResamplerConstructionError),
}

/// The rubato state for a non-identity conversion.
struct Engine {
    fft: Fft<f32>,
    /// Input samples per rubato call (10 ms at the input rate).
    chunk_in: usize,
    /// Output samples per rubato call.
    chunk_out: usize,
    /// Pending input, always shorter than `chunk_in` between calls; capacity `chunk_in`.
    queue: Vec<f32>,
    /// rubato's output for one chunk; length fixed at construction.
    out_buf: Vec<f32>,
    /// Real (non-padding) input samples since the last reset.
    fed: u64,
    /// Output samples emitted since the last reset.
    produced: u64,
}

/// A stateful mono resampler from `from_hz` to `to_hz` for one continuous stream.
///
/// Output lags input by [`delay_samples`](Self::delay_samples) output samples (filter
/// delay, 5 ms) plus up to 10 ms of input held in the queue until a chunk fills. With
/// 20 ms input frames at 8/16/24 kHz nothing is held, since a frame is exactly two chunks.
pub struct StreamResampler {
    from_hz: u32,
    to_hz: u32,
    /// `None` when the rates are equal: samples are copied unchanged.
    engine: Option<Engine>,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .field("delay_samples", &self.delay_samples())
            .finish()
    }
}

impl StreamResampler {
    /// Builds a resampler from `from_hz` to `to_hz` (both in [`SUPPORTED_RATES_HZ`]).
    ///
    /// Equal rates give an identity resampler that copies samples with no delay.
    /// Allocates every buffer it will ever use.
    ///
    /// # Errors
    /// [`ResampleError::UnsupportedRate`] for other rates; [`ResampleError::Construction`]
    /// if rubato rejects the configuration.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        if !SUPPORTED_RATES_HZ.contains(&from_hz) || !SUPPORTED_RATES_HZ.contains(&to_hz) {
            return Err(ResampleError::UnsupportedRate { from_hz, to_hz });
        }
        if from_hz == to_hz {
            return Ok(Self { from_hz, to_hz, engine: None });
        }
        let chunk_in = (from_hz / CHUNKS_PER_SECOND) as usize;
        // One sub-chunk per call: the FFT block is the whole 10 ms chunk, so the filter
        // delay is half of it (5 ms) and every call emits the same number of samples.
        let fft = Fft::<f32>::new_custom(
            from_hz as usize,
            to_hz as usize,
            chunk_in,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Input,
        )?;
        let chunk_out = fft.output_frames_max();
        Ok(Self {
            from_hz,
            to_hz,
            engine: Some(Engine {
                fft,
                chunk_in,
                chunk_out,
                queue: Vec::with_capacity(chunk_in),
                out_buf: vec![0.0; chunk_out],
                fed: 0,
                produced: 0,
            }),
        })
    }

    /// Whether the rates are equal and samples are copied unchanged.
    pub fn is_identity(&self) -> bool {
        self.engine.is_none()
    }

    /// Output delay introduced by the filter, in output samples (0 for identity).
    pub fn delay_samples(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.fft.output_delay())
    }

    /// Upper bound on the samples one [`process`](Self::process) call with `input_len`
    /// input samples appends, whatever is queued. Reserve this much to avoid reallocating.
    pub fn max_output_len(&self, input_len: usize) -> usize {
        match &self.engine {
            None => input_len,
            Some(e) => (input_len / e.chunk_in + 1) * e.chunk_out,
        }
    }

    /// Resamples `input` (samples at `from_hz`), appending samples at `to_hz` to `out`.
    ///
    /// Keeps filter state and up to 10 ms of unprocessed input between calls, so any
    /// split of a stream into calls gives the same output. Allocates nothing itself.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let Some(engine) = self.engine.as_mut() else {
            out.extend_from_slice(input);
            return;
        };
        engine.fed += input.len() as u64;
        let mut rest = input;
        while !rest.is_empty() {
            let take = (engine.chunk_in - engine.queue.len()).min(rest.len());
            let (head, tail) = rest.split_at(take);
            engine.queue.extend(head.iter().map(|&s| f32::from(s) / 32768.0));
            rest = tail;
            if engine.queue.len() == engine.chunk_in {
                let n = engine.run_chunk();
                engine.emit(n, out);
            }
        }
    }

    /// Ends the stream: pads the queued input with zeros and pushes out everything still
    /// inside the filter, so the total output since the last reset is
    /// `ceil(input * to_hz / from_hz) + delay_samples()` samples. Then resets, ready for a
    /// new stream. Appends at most `max_output_len(0) + delay_samples()` samples.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        let (from_hz, to_hz) = (u64::from(self.from_hz), u64::from(self.to_hz));
        let Some(engine) = self.engine.as_mut() else { return };
        if engine.fed > 0 {
            let target = (engine.fed * to_hz).div_ceil(from_hz) + engine.fft.output_delay() as u64;
            // Each chunk emits `chunk_out` samples, so this bounds the loop.
            let max_chunks = 2 + engine.fft.output_delay() / engine.chunk_out.max(1);
            for _ in 0..max_chunks {
                if engine.produced >= target {
                    break;
                }
                engine.queue.resize(engine.chunk_in, 0.0);
                let n = engine.run_chunk();
                let wanted = usize::try_from(target - engine.produced).unwrap_or(usize::MAX);
                engine.emit(n.min(wanted), out);
            }
        }
        self.reset();
    }

    /// Drops queued input and filter state, as for a new stream.
    pub fn reset(&mut self) {
        if let Some(engine) = self.engine.as_mut() {
            engine.fft.reset();
            engine.queue.clear();
            engine.fed = 0;
            engine.produced = 0;
        }
    }
}

impl Engine {
    /// Resamples the full queue into `out_buf`, empties the queue, returns samples written.
    fn run_chunk(&mut self) -> usize {
        // Both adapters cover exactly the sizes fixed at construction and rubato's
        // chunk sizes never change in FixedSync::Input mode with one sub-chunk per chunk.
        let input = InterleavedSlice::new(&self.queue[..], 1, self.chunk_in)
            .expect("queue holds exactly chunk_in samples here");
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf[..], 1, self.chunk_out)
            .expect("out_buf has chunk_out samples from construction");
        let (_, written) = self
            .fft
            .process_into_buffer(&input, &mut output, None)
            .expect("buffer sizes match the resampler's fixed chunk sizes");
        self.queue.clear();
        written
    }

    /// Appends the first `n` samples of `out_buf` to `out` as clamped i16.
    fn emit(&mut self, n: usize, out: &mut Vec<i16>) {
        let n = n.min(self.out_buf.len());
        out.extend(self.out_buf[..n].iter().map(|&y| to_i16(y)));
        self.produced += n as u64;
    }
}

/// Float in [-1, 1) to i16, rounding and saturating (NaN becomes 0).
#[inline]
fn to_i16(y: f32) -> i16 {
    (y * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq_hz: f64, rate_hz: u32, amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                let t = n as f64 / f64::from(rate_hz);
                (amplitude * (2.0 * std::f64::consts::PI * freq_hz * t).sin()).round() as i16
            })
            .collect()
    }

    /// Magnitude of `freq_hz` in `x` (Goertzel), normalised so a sine of amplitude A gives A.
    fn goertzel(x: &[i16], rate_hz: u32, freq_hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq_hz / f64::from(rate_hz);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.sqrt() / x.len() as f64
    }

    fn zero_crossings(x: &[i16]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()
    }

    const PAIRS: [(u32, u32); 6] =
        [(8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000), (8000, 16000), (16000, 8000)];

    #[test]
    fn rejects_unsupported_rates() {
        for (from, to) in [(0, 8000), (8000, 44100), (11025, 8000), (8000, 0)] {
            assert!(matches!(StreamResampler::new(from, to), Err(ResampleError::UnsupportedRate { .. })));
        }
    }

    #[test]
    fn equal_rates_copy() {
        let mut r = StreamResampler::new(8000, 8000).expect("supported");
        assert!(r.is_identity());
        assert_eq!(r.delay_samples(), 0);
        let input = sine(440.0, 8000, 9000.0, 333);
        let mut out = Vec::new();
        r.process(&input, &mut out);
        r.flush(&mut out);
        assert_eq!(out, input);
    }

    #[test]
    fn delay_is_about_five_ms() {
        for (from, to) in PAIRS {
            let r = StreamResampler::new(from, to).expect("supported");
            assert_eq!(r.delay_samples(), (to / 200) as usize, "{from}->{to}");
        }
    }

    #[test]
    fn output_length_matches_ratio_over_one_second() {
        for (from, to) in PAIRS {
            let mut r = StreamResampler::new(from, to).expect("supported");
            let input = sine(300.0, from, 8000.0, from as usize);
            let mut out = Vec::new();
            for frame in input.chunks((from / 50) as usize) {
                r.process(frame, &mut out);
            }
            let expected = to as usize; // 1 s of output
            let chunk_out = (to / 100) as usize;
            assert!(out.len().abs_diff(expected) <= chunk_out, "{from}->{to}: {}", out.len());
            assert_eq!(out.len(), expected, "whole chunks in, whole chunks out");
            r.flush(&mut out);
            assert_eq!(out.len(), expected + r.delay_samples(), "{from}->{to} after flush");
        }
    }

    #[test]
    fn flush_pads_a_partial_chunk() {
        let mut r = StreamResampler::new(8000, 24000).expect("supported");
        let mut out = Vec::new();
        r.process(&[1000; 123], &mut out);
        assert_eq!(out.len(), 240, "one full 80-sample chunk processed");
        r.flush(&mut out);
        assert_eq!(out.len(), 123 * 3 + r.delay_samples());
        // flush reset the stream: the next flush has nothing to emit.
        r.flush(&mut out);
        assert_eq!(out.len(), 123 * 3 + r.delay_samples());
    }

    #[test]
    fn upsampled_sine_keeps_frequency_and_amplitude() {
        let mut r = StreamResampler::new(8000, 24000).expect("supported");
        let input = sine(1000.0, 8000, 10000.0, 8000);
        let mut out = Vec::new();
        for frame in input.chunks(160) {
            r.process(frame, &mut out);
        }
        // Skip the filter ramp-up; analyse 0.5 s (an integer number of periods).
        let steady = &out[1200..1200 + 12000];
        let crossings = zero_crossings(steady);
        assert!((999..=1001).contains(&crossings), "{crossings} crossings in 0.5 s");
        let amp_in = goertzel(&input[400..4400], 8000, 1000.0);
        let amp_out = goertzel(steady, 24000, 1000.0);
        let db = 20.0 * (amp_out / amp_in).log10();
        assert!(db.abs() < 1.0, "gain {db:.2} dB");
        // Nothing else of note: the 1 kHz component dominates the signal energy.
        let rms = (steady.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / steady.len() as f64).sqrt();
        assert!((rms * 2f64.sqrt() / amp_out - 1.0).abs() < 0.02);
    }

    #[test]
    fn downsampled_sine_keeps_frequency_and_amplitude() {
        let mut r = StreamResampler::new(24000, 8000).expect("supported");
        let input = sine(1000.0, 24000, 10000.0, 24000);
        let mut out = Vec::new();
        for frame in input.chunks(1234) {
            r.process(frame, &mut out);
        }
        let steady = &out[400..4400];
        assert!((999..=1001).contains(&zero_crossings(steady)));
        let db = 20.0 * (goertzel(steady, 8000, 1000.0) / 10000.0).log10();
        assert!(db.abs() < 1.0, "gain {db:.2} dB");
    }

    #[test]
    fn frame_by_frame_equals_one_shot() {
        for (from, to) in PAIRS {
            let input = sine(700.0, from, 12000.0, from as usize / 2 + 37);
            let mut one_shot = Vec::new();
            let mut r = StreamResampler::new(from, to).expect("supported");
            r.process(&input, &mut one_shot);
            r.flush(&mut one_shot);

            let mut pieces = Vec::new();
            let mut r = StreamResampler::new(from, to).expect("supported");
            let sizes = [1, 160, 7, 320, 480, 0, 333, 2];
            let mut rest = &input[..];
            for &n in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (a, b) = rest.split_at(n.min(rest.len()));
                r.process(a, &mut pieces);
                rest = b;
            }
            r.flush(&mut pieces);
            assert_eq!(pieces.len(), one_shot.len());
            let max_diff = pieces.iter().zip(&one_shot).map(|(a, b)| a.abs_diff(*b)).max();
            assert!(max_diff.unwrap_or(0) <= 1, "{from}->{to}: {max_diff:?}");
        }
    }

    #[test]
    fn reset_restarts_the_stream() {
        let input = sine(500.0, 16000, 5000.0, 1000);
        let mut r = StreamResampler::new(16000, 24000).expect("supported");
        let mut first = Vec::new();
        r.process(&input, &mut first);
        r.reset();
        let mut second = Vec::new();
        r.process(&input, &mut second);
        assert_eq!(first, second);
    }

    #[test]
    fn extreme_input_saturates_without_panicking() {
        let mut r = StreamResampler::new(8000, 24000).expect("supported");
        // A full-scale square wave overshoots after filtering; output must clamp.
        let input: Vec<i16> = (0..800).map(|n| if (n / 4) % 2 == 0 { i16::MAX } else { i16::MIN }).collect();
        let mut out = Vec::new();
        r.process(&input, &mut out);
        r.flush(&mut out);
        assert_eq!(out.len(), 2400 + r.delay_samples());
    }

    #[test]
    fn process_does_not_grow_a_reserved_output() {
        // Internal buffers are allocated in `new`; here we check the caller's side.
        for (from, to) in PAIRS {
            let mut r = StreamResampler::new(from, to).expect("supported");
            let frame = sine(440.0, from, 3000.0, (from / 50) as usize + 3);
            let mut out = Vec::with_capacity(r.max_output_len(frame.len()));
            let cap = out.capacity();
            for _ in 0..50 {
                out.clear();
                r.process(&frame, &mut out);
                assert!(out.len() <= r.max_output_len(frame.len()));
                assert_eq!(out.capacity(), cap);
            }
            out.clear();
            out.reserve(r.max_output_len(0) + r.delay_samples());
            let cap = out.capacity();
            r.flush(&mut out);
            assert_eq!(out.capacity(), cap);
        }
    }
}
