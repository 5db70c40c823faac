//! 16-bit signed linear PCM (L16) in either byte order.
//!
//! RFC 3551 §4.5.11 defines L16 in network byte order (big-endian); OpenAI's `audio/pcm`
//! is little-endian. Two bytes per sample, mono.

use super::ByteOrder;

/// Decodes L16 bytes in `order`, appending `src.len() / 2` samples to `dst`.
///
/// Returns the number of bytes consumed (always even). An odd trailing byte is not
/// consumed: the caller carries it and prepends it to the next chunk.
pub fn decode(src: &[u8], order: ByteOrder, dst: &mut Vec<i16>) -> usize {
    let pairs = src.chunks_exact(2);
    let consumed = src.len() - pairs.remainder().len();
    match order {
        ByteOrder::Little => dst.extend(pairs.map(|p| i16::from_le_bytes([p[0], p[1]]))),
        ByteOrder::Big => dst.extend(pairs.map(|p| i16::from_be_bytes([p[0], p[1]]))),
    }
    consumed
}

/// Encodes samples as L16 in `order`, appending `2 * src.len()` bytes to `dst`.
pub fn encode(src: &[i16], order: ByteOrder, dst: &mut Vec<u8>) {
    // `flat_map` under-reports its length; reserving is free when capacity suffices.
    dst.reserve(src.len() * 2);
    match order {
        ByteOrder::Little => dst.extend(src.iter().flat_map(|s| s.to_le_bytes())),
        ByteOrder::Big => dst.extend(src.iter().flat_map(|s| s.to_be_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_byte_orders() {
        let samples = [0x0102, -2, i16::MIN, i16::MAX];
        let mut le = Vec::new();
        encode(&samples, ByteOrder::Little, &mut le);
        assert_eq!(le, [0x02, 0x01, 0xFE, 0xFF, 0x00, 0x80, 0xFF, 0x7F]);
        let mut be = Vec::new();
        encode(&samples, ByteOrder::Big, &mut be);
        assert_eq!(be, [0x01, 0x02, 0xFF, 0xFE, 0x80, 0x00, 0x7F, 0xFF]);

        let mut out = Vec::new();
        assert_eq!(decode(&le, ByteOrder::Little, &mut out), 8);
        assert_eq!(decode(&be, ByteOrder::Big, &mut out), 8);
        assert_eq!(out, [samples, samples].concat());
    }

    #[test]
    fn odd_trailing_byte_is_left_for_the_caller() {
        let mut out = vec![42];
        assert_eq!(decode(&[0x34, 0x12, 0x99], ByteOrder::Little, &mut out), 2);
        assert_eq!(out, [42, 0x1234]);
        assert_eq!(decode(&[0x99], ByteOrder::Big, &mut out), 0);
        assert_eq!(decode(&[], ByteOrder::Big, &mut out), 0);
        assert_eq!(out.len(), 2);
    }

    proptest! {
        #[test]
        fn round_trip(samples in proptest::collection::vec(any::<i16>(), 0..300), big in any::<bool>()) {
            let order = if big { ByteOrder::Big } else { ByteOrder::Little };
            let mut bytes = Vec::new();
            encode(&samples, order, &mut bytes);
            prop_assert_eq!(bytes.len(), samples.len() * 2);
            let mut back = Vec::new();
            prop_assert_eq!(decode(&bytes, order, &mut back), bytes.len());
            prop_assert_eq!(back, samples);
        }
    }
}
