//! Audio formats and the pure audio path: G.711 tables, L16, streaming resampling, re-framing.
//!
//! Everything here works on caller-owned buffers so the per-frame path never allocates.

pub mod frames;
pub mod g711;
pub mod l16;
pub mod resample;
pub mod transcode;

/// Byte order of 16-bit linear samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Least significant byte first (OpenAI `audio/pcm`, SignalWire L16 as observed).
    Little,
    /// Most significant byte first (RTP L16, RFC 3551 §4.5.11).
    Big,
}

/// Sample encoding of a mono audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// G.711 μ-law (PCMU), one byte per sample.
    Pcmu,
    /// G.711 A-law (PCMA), one byte per sample.
    Pcma,
    /// 16-bit signed linear PCM, two bytes per sample.
    L16(ByteOrder),
}

/// A mono audio format: encoding plus sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// How each sample is stored.
    pub encoding: Encoding,
    /// Samples per second (Hz).
    pub sample_rate_hz: u32,
}

/// Length of one provider frame (ms). Telephony media streams use 20 ms.
pub const FRAME_MS: u32 = 20;

impl AudioFormat {
    /// G.711 μ-law at 8 kHz: Twilio's only format and the bridge's passthrough format.
    pub const PCMU_8K: Self = Self { encoding: Encoding::Pcmu, sample_rate_hz: 8000 };
    /// G.711 A-law at 8 kHz.
    pub const PCMA_8K: Self = Self { encoding: Encoding::Pcma, sample_rate_hz: 8000 };
    /// 16-bit little-endian PCM at 24 kHz: OpenAI's `audio/pcm` format.
    pub const PCM16_24K: Self = Self { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 24000 };

    /// Bytes per sample: 1 for G.711, 2 for L16.
    pub const fn bytes_per_sample(&self) -> usize {
        match self.encoding {
            Encoding::Pcmu | Encoding::Pcma => 1,
            Encoding::L16(_) => 2,
        }
    }

    /// Bytes per millisecond of audio (8 for G.711 at 8 kHz, 48 for L16 at 24 kHz).
    pub const fn bytes_per_ms(&self) -> usize {
        self.sample_rate_hz as usize * self.bytes_per_sample() / 1000
    }

    /// Bytes in `ms` milliseconds of audio.
    pub const fn bytes_for_ms(&self, ms: u32) -> usize {
        self.bytes_per_ms() * ms as usize
    }

    /// Bytes in one 20 ms provider frame (160 for G.711 8 kHz, 640 for L16 16 kHz).
    pub const fn frame_bytes(&self) -> usize {
        self.bytes_for_ms(FRAME_MS)
    }

    /// Whole milliseconds of audio in `bytes` (rounded down).
    pub const fn duration_ms(&self, bytes: usize) -> u64 {
        match bytes.checked_div(self.bytes_per_ms()) {
            Some(ms) => ms as u64,
            None => 0,
        }
    }

    /// The byte that encodes digital silence: 0xFF μ-law, 0xD5 A-law, 0x00 L16
    /// (G.711 Table 1/2; telephony-media-streams reference §8.5).
    pub const fn silence_byte(&self) -> u8 {
        match self.encoding {
            Encoding::Pcmu => 0xFF,
            Encoding::Pcma => 0xD5,
            Encoding::L16(_) => 0x00,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_match_the_reference() {
        assert_eq!(AudioFormat::PCMU_8K.frame_bytes(), 160);
        assert_eq!(AudioFormat::PCM16_24K.frame_bytes(), 960);
        let l16_16k = AudioFormat { encoding: Encoding::L16(ByteOrder::Little), sample_rate_hz: 16000 };
        assert_eq!(l16_16k.frame_bytes(), 640);
        assert_eq!(AudioFormat::PCMU_8K.duration_ms(1600), 200);
        assert_eq!(AudioFormat::PCMA_8K.silence_byte(), 0xD5);
    }
}
