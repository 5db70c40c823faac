//! JSON text helpers shared by the hand-written encoders of the hot path.

/// Appends `s` as a JSON string literal, escaped exactly as `serde_json` does (`\"`, `\\`, the
/// short forms `\b \f \n \r \t`, `\u00XX` for other control characters; everything else,
/// including non-ASCII, verbatim), so our output matches what any JSON library would produce.
pub fn push_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut clean_from = 0;
    for (i, byte) in s.bytes().enumerate() {
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` indexes an ASCII byte, which is always a char boundary in UTF-8 (continuation
        // bytes are >= 0x80), so these slices cannot split a character.
        out.push_str(&s[clean_from..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        } else {
            out.push_str(short);
        }
        clean_from = i + 1;
    }
    out.push_str(&s[clean_from..]);
    out.push('"');
}
