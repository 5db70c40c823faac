//! ITU-T G.711 μ-law (PCMU) and A-law (PCMA) companding, table driven.
//!
//! Linear samples are 16-bit signed (`i16`); codes are one byte each, one byte per sample.
//! Decoding uses 256-entry tables built at compile time; encoding uses a 256-entry segment
//! table indexed by the top bits of the magnitude. Nothing here allocates except the
//! caller's own `Vec`s when they lack capacity.

/// μ-law code for digital silence (positive zero, all bits inverted).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law code for digital silence (smallest positive step, even bits inverted).
pub const ALAW_SILENCE: u8 = 0xD5;

/// μ-law bias added before segment search (G.711 §3.2; 0x84 = 132).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude μ-law can represent before the bias pushes it past 15 bits.
const ULAW_CLIP: i32 = 32635;
/// A-law inverts the even bits of every code (G.711 §3.3).
const ALAW_XOR: u8 = 0x55;

/// Segment (exponent) for each value of the magnitude's top 8 bits: the index of the
/// highest set bit, 0 for 0 and 1. Shared by both laws, with different shifts.
const SEGMENT: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 2;
    while i < 256 {
        t[i] = (usize::BITS - 1 - i.leading_zeros()) as u8;
        i += 1;
    }
    t
};

const fn ulaw_decode_formula(code: u8) -> i16 {
    let c = !code;
    let exponent = ((c >> 4) & 0x07) as i32;
    let mantissa = (c & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if c & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

const fn alaw_decode_formula(code: u8) -> i16 {
    let a = code ^ ALAW_XOR;
    let segment = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0F) as i32;
    // Reconstruct at the middle of the quantisation interval (+8 in segment 0's units).
    let mut magnitude = (mantissa << 4) + 8;
    if segment > 0 {
        magnitude = (magnitude + 0x100) << (segment - 1);
    }
    // In A-law the sign bit set means positive.
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

static ULAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode_formula(i as u8);
        i += 1;
    }
    t
};

static ALAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode_formula(i as u8);
        i += 1;
    }
    t
};

/// Decodes one μ-law code to a linear sample (G.711 Table 2a). Range ±32124.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

/// Decodes one A-law code to a linear sample (G.711 Table 1a). Range ±32256; no code gives 0.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

/// Encodes one linear sample to μ-law (G.711). Magnitudes above 32635 clip to the top step.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let x = sample as i32;
    let sign: u8 = if x < 0 { 0x80 } else { 0 };
    // i32 so that -32768 has a magnitude; biased value stays within 15 bits.
    let magnitude = x.abs().min(ULAW_CLIP) + ULAW_BIAS;
    let exponent = SEGMENT[(magnitude >> 7) as usize];
    let mantissa = ((magnitude >> (exponent + 3)) & 0x0F) as u8;
    !(sign | (exponent << 4) | mantissa)
}

/// Encodes one linear sample to A-law (G.711), using the top 13 bits of the magnitude.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let x = sample as i32;
    let sign: u8 = if x >= 0 { 0x80 } else { 0 };
    // 13-bit magnitude; |-32768| >> 3 = 4096 is clipped to the largest step.
    let magnitude = (x.abs() >> 3).min(0x0FFF);
    let segment = SEGMENT[(magnitude >> 4) as usize];
    let shift = if segment == 0 { 1 } else { segment };
    let mantissa = ((magnitude >> shift) & 0x0F) as u8;
    (sign | (segment << 4) | mantissa) ^ ALAW_XOR
}

/// Decodes μ-law bytes, appending `src.len()` samples to `dst`.
pub fn decode_ulaw(src: &[u8], dst: &mut Vec<i16>) {
    dst.extend(src.iter().map(|&c| ulaw_to_linear(c)));
}

/// Encodes samples to μ-law, appending `src.len()` bytes to `dst`.
pub fn encode_ulaw(src: &[i16], dst: &mut Vec<u8>) {
    dst.extend(src.iter().map(|&s| linear_to_ulaw(s)));
}

/// Decodes A-law bytes, appending `src.len()` samples to `dst`.
pub fn decode_alaw(src: &[u8], dst: &mut Vec<i16>) {
    dst.extend(src.iter().map(|&c| alaw_to_linear(c)));
}

/// Encodes samples to A-law, appending `src.len()` bytes to `dst`.
pub fn encode_alaw(src: &[i16], dst: &mut Vec<u8>) {
    dst.extend(src.iter().map(|&s| linear_to_alaw(s)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (input, μ-law code, μ-law decoded, A-law code, A-law decoded)
    const VECTORS: &[(i16, u8, i16, u8, i16)] = &[
        (0, 0xFF, 0, 0xD5, 8),
        (8, 0xFE, 8, 0xD5, 8),
        (100, 0xF2, 104, 0xD3, 104),
        (1000, 0xCE, 988, 0xFA, 1008),
        (-1000, 0x4E, -988, 0x7A, -1008),
        (4000, 0xAF, 4092, 0x9A, 4032),
        (12345, 0x97, 12412, 0xBD, 12544),
        (32767, 0x80, 32124, 0xAA, 32256),
        (-32768, 0x00, -32124, 0x2A, -32256),
    ];

    #[test]
    fn reference_vectors() {
        for &(x, uc, ud, ac, ad) in VECTORS {
            assert_eq!(linear_to_ulaw(x), uc, "ulaw encode {x}");
            assert_eq!(ulaw_to_linear(uc), ud, "ulaw decode {uc:#04x}");
            assert_eq!(linear_to_alaw(x), ac, "alaw encode {x}");
            assert_eq!(alaw_to_linear(ac), ad, "alaw decode {ac:#04x}");
        }
        assert_eq!(ulaw_to_linear(ULAW_SILENCE), 0);
        assert_eq!(linear_to_alaw(0), ALAW_SILENCE);
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            let expected = if c == 0x7F { 0xFF } else { c };
            assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), expected, "ulaw {c:#04x}");
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#04x}");
        }
    }

    #[test]
    fn ulaw_table_matches_formula() {
        for c in 0..=255u8 {
            let u = !c;
            let e = ((u >> 4) & 7) as i32;
            let m = (u & 0x0F) as i32;
            let mag = (((m << 3) + 132) << e) - 132;
            let want = if u & 0x80 != 0 { -mag } else { mag };
            assert_eq!(ulaw_to_linear(c) as i32, want, "code {c:#04x}");
        }
    }

    #[test]
    fn alaw_never_decodes_to_zero_and_ranges_hold() {
        for c in 0..=255u8 {
            assert_ne!(alaw_to_linear(c), 0);
            assert!(alaw_to_linear(c).unsigned_abs() <= 32256);
            assert!(ulaw_to_linear(c).unsigned_abs() <= 32124);
        }
    }

    #[test]
    fn decoding_is_monotonic_in_sign_magnitude_order() {
        // Sign-magnitude view of each code: (is_negative, 7-bit magnitude index).
        let ulaw = |idx: u8, negative: bool| ulaw_to_linear(!(idx | if negative { 0x80 } else { 0 }));
        let alaw = |idx: u8, negative: bool| alaw_to_linear((idx | if negative { 0 } else { 0x80 }) ^ 0x55);
        for negative in [false, true] {
            for idx in 1..128u8 {
                let (prev, cur) = (ulaw(idx - 1, negative), ulaw(idx, negative));
                assert!(cur.unsigned_abs() > prev.unsigned_abs(), "ulaw idx {idx}");
                assert!(if negative { cur < 0 } else { cur > 0 });
                let (prev, cur) = (alaw(idx - 1, negative), alaw(idx, negative));
                assert!(cur.unsigned_abs() > prev.unsigned_abs(), "alaw idx {idx}");
                assert!(if negative { cur < 0 } else { cur > 0 });
            }
        }
    }

    #[test]
    fn quantisation_error_within_segment_step() {
        for x in i16::MIN..=i16::MAX {
            let c = linear_to_ulaw(x);
            let step = 1i32 << (((!c >> 4) & 7) + 3);
            let err = (ulaw_to_linear(c) as i32 - x as i32).abs();
            assert!(err <= step, "ulaw x={x} err={err} step={step}");

            let c = linear_to_alaw(x);
            let seg = ((c ^ 0x55) >> 4) & 7;
            let step = 16i32 << seg.saturating_sub(1);
            let err = (alaw_to_linear(c) as i32 - x as i32).abs();
            assert!(err <= step, "alaw x={x} err={err} step={step}");
        }
    }

    proptest! {
        #[test]
        fn slice_helpers_round_trip(samples in proptest::collection::vec(any::<i16>(), 0..400)) {
            for (encode, decode) in [
                (encode_ulaw as fn(&[i16], &mut Vec<u8>), decode_ulaw as fn(&[u8], &mut Vec<i16>)),
                (encode_alaw, decode_alaw),
            ] {
                let mut codes = vec![0xAA];
                encode(&samples, &mut codes);
                prop_assert_eq!(codes.len(), samples.len() + 1);
                let mut pcm = vec![7];
                decode(&codes[1..], &mut pcm);
                prop_assert_eq!(pcm.len(), samples.len() + 1);
                prop_assert_eq!(pcm[0], 7);
                // Decoded values are fixed points of encode-then-decode.
                let mut again = Vec::new();
                encode(&pcm[1..], &mut again);
                let mut pcm_again = Vec::new();
                decode(&again, &mut pcm_again);
                prop_assert_eq!(&pcm_again[..], &pcm[1..]);
                for (&x, &y) in samples.iter().zip(&pcm[1..]) {
                    prop_assert!((x as i32 - y as i32).abs() <= 1024);
                }
            }
        }
    }
}
