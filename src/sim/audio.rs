//! Whole-clip and per-chunk conversions between the fixtures' μ-law and the formats the
//! simulators speak, built on [`crate::core::audio`].

use anyhow::{anyhow, bail};

use crate::core::audio::resample::StreamResampler;
use crate::core::audio::{AudioFormat, Encoding, g711, l16};

/// A μ-law 8 kHz clip converted to another format.
pub(crate) struct Converted {
    /// The clip encoded in the target format.
    pub bytes: Vec<u8>,
    /// The same audio as linear samples at the target rate.
    pub linear: Vec<i16>,
}

/// Converts a μ-law 8 kHz clip to `format`.
///
/// μ-law output reuses the original bytes (no re-quantisation); other encodings go through
/// linear, resampled from 8 kHz when the target rate differs. The resampler's filter delay is
/// trimmed so the result starts at the clip's first sample and has `ceil(n * rate / 8000)`
/// samples.
pub(crate) fn convert_ulaw_clip(ulaw: &[u8], format: AudioFormat) -> anyhow::Result<Converted> {
    let mut linear_8k = Vec::with_capacity(ulaw.len());
    g711::decode_ulaw(ulaw, &mut linear_8k);
    match format.encoding {
        Encoding::Pcmu | Encoding::Pcma if format.sample_rate_hz != 8000 => {
            bail!("G.711 is 8 kHz only, not {} Hz", format.sample_rate_hz)
        }
        Encoding::Pcmu => Ok(Converted { bytes: ulaw.to_vec(), linear: linear_8k }),
        Encoding::Pcma => {
            let mut bytes = Vec::with_capacity(linear_8k.len());
            g711::encode_alaw(&linear_8k, &mut bytes);
            Ok(Converted { bytes, linear: linear_8k })
        }
        Encoding::L16(order) => {
            let linear = resample_whole(&linear_8k, 8000, format.sample_rate_hz)?;
            let mut bytes = Vec::with_capacity(linear.len() * 2);
            l16::encode(&linear, order, &mut bytes);
            Ok(Converted { bytes, linear })
        }
    }
}

/// Resamples a complete signal, dropping the filter's leading delay.
fn resample_whole(input: &[i16], from_hz: u32, to_hz: u32) -> anyhow::Result<Vec<i16>> {
    let mut rs = StreamResampler::new(from_hz, to_hz).map_err(|e| anyhow!(e))?;
    let delay = rs.delay_samples();
    let mut out = Vec::with_capacity(rs.max_output_len(input.len()) + delay);
    rs.process(input, &mut out);
    rs.flush(&mut out);
    out.drain(..delay.min(out.len()));
    Ok(out)
}

/// Decodes `bytes` in `format` to linear samples, appending to `dst`.
///
/// Returns the number of bytes consumed: all of them, except an odd trailing byte of L16.
pub(crate) fn decode_to_linear(format: AudioFormat, bytes: &[u8], dst: &mut Vec<i16>) -> usize {
    match format.encoding {
        Encoding::Pcmu => {
            g711::decode_ulaw(bytes, dst);
            bytes.len()
        }
        Encoding::Pcma => {
            g711::decode_alaw(bytes, dst);
            bytes.len()
        }
        Encoding::L16(order) => l16::decode(bytes, order, dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::audio::ByteOrder;

    #[test]
    fn conversions_keep_the_duration() {
        let ulaw = vec![0xFFu8; 800]; // 100 ms of silence
        let pcmu = convert_ulaw_clip(&ulaw, AudioFormat::PCMU_8K).unwrap();
        assert_eq!(pcmu.bytes, ulaw);
        let pcma = convert_ulaw_clip(&ulaw, AudioFormat::PCMA_8K).unwrap();
        assert_eq!(pcma.bytes.len(), 800);
        assert!(pcma.bytes.iter().all(|&b| b == 0xD5));
        let pcm = convert_ulaw_clip(&ulaw, AudioFormat::PCM16_24K).unwrap();
        assert_eq!(pcm.linear.len(), 2400);
        assert_eq!(pcm.bytes.len(), 4800);
        let l16_16k = AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 16000 };
        assert_eq!(convert_ulaw_clip(&ulaw, l16_16k).unwrap().linear.len(), 1600);
        assert!(
            convert_ulaw_clip(&ulaw, AudioFormat { sample_rate_hz: 16000, ..AudioFormat::PCMU_8K }).is_err()
        );
    }
}
