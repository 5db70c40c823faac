//! TwiML (Twilio) and cXML (SignalWire) documents for call control: bridge a call to our media
//! stream, refuse it politely, transfer it, hang up.
//!
//! Every builder returns a complete document as a `String`, starting with
//! `<?xml version="1.0" encoding="UTF-8"?>`, ready to be served with [`CONTENT_TYPE`] from a
//! voice webhook or sent inline in the REST `Twiml` parameter (max 4000 characters there).
//!
//! # One document language, two dialects
//!
//! Sources: <https://www.twilio.com/docs/voice/twiml> (`<Connect>`, `<Stream>`, `<Say>`,
//! `<Dial>`, `<Number>`, `<Sip>`, `<Play>`, `<Hangup>`) and
//! <https://developer.signalwire.com/compatibility-api/cxml/voice/stream>, as summarised in the
//! project's telephony-media-streams reference (§1.2, §2.1). SignalWire's cXML uses the same verbs,
//! nouns and attributes; the differences that matter here:
//!
//! | | Twilio TwiML | SignalWire cXML |
//! |---|---|---|
//! | `<Stream url>` | `wss://` only, no query string | same |
//! | `<Stream codec>` | not supported | `PCMU@8000h` (default), `L16@16000h`, `L16@24000h` |
//! | `<Stream realtime>` | not supported | `true` = low-latency playback (bidirectional only) |
//! | `<Stream authBearerToken>` | not supported (the upgrade is signed instead, §7.2) | sent as `Authorization: Bearer …` on the upgrade |
//! | `<Parameter>` | name + value under 500 characters | same |
//!
//! Twilio ignores attributes it does not know, but keep SignalWire-only attributes out of Twilio
//! documents anyway: [`StreamAttrs::default`] emits none of them.
//!
//! # Escaping
//!
//! Attribute values and text are escaped (`&`, `<`, `>`, `"`, `'`); carriage return, and tab and
//! line feed inside attribute values, become character references so parsers do not normalise
//! them away; characters XML 1.0 cannot carry at all (other C0 controls, U+FFFE, U+FFFF) become
//! U+FFFD. Hostile values therefore cannot add elements or attributes.

use std::fmt::Write as _;

/// The `Content-Type` for a TwiML/cXML webhook response.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The XML declaration every document starts with.
const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Why a document could not be built. Each variant names input the caller should have rejected
/// earlier (e.g. a transfer target typed by an operator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwimlError {
    /// A transfer target is neither an E.164 number (`+` and 1–15 digits) nor a `sip:`/`sips:` URI.
    #[error("dial target is neither an E.164 number nor a sip: URI")]
    InvalidDialTarget,
    /// DTMF digits are empty or contain something other than `0-9`, `*`, `#` and `w` (a 0.5 s
    /// pause).
    #[error("DTMF digits must be 0-9, *, # or w")]
    InvalidDigits,
}

/// Optional `<Stream>` attributes. `Default` emits none: the plain Twilio form.
///
/// See <https://www.twilio.com/docs/voice/twiml/stream> and
/// <https://developer.signalwire.com/compatibility-api/cxml/voice/stream>.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamAttrs<'a> {
    /// `name`: unique per call (needed only to stop a unidirectional stream by name).
    pub name: Option<&'a str>,
    /// `statusCallback`: absolute URL the provider POSTs `stream-started`/`stream-stopped`/
    /// `stream-error` to.
    pub status_callback: Option<&'a str>,
    /// SignalWire only, `codec`: `"PCMU@8000h"` (default), `"L16@16000h"` or `"L16@24000h"`.
    pub codec: Option<&'a str>,
    /// SignalWire only, `realtime`: `true` for low-latency playback of what we send.
    pub realtime: Option<bool>,
    /// SignalWire only, `authBearerToken`: arrives as `Authorization: Bearer <token>` on the
    /// WebSocket upgrade (check it with `auth::bearer_matches`). A secret: never log
    /// the document.
    pub auth_bearer_token: Option<&'a str>,
}

/// `<Response><Connect><Stream url="…"><Parameter name value/>…</Stream></Connect></Response>`:
/// bridge the call to our media-stream WebSocket (bidirectional).
///
/// `url` must be `wss://` without a query string (both providers refuse anything else); pass
/// data in `parameters` instead, which arrive verbatim in `start.customParameters`. Each
/// parameter's name + value must stay under 500 characters (not checked here). Nothing follows
/// `</Connect>`, so the call ends when our server closes the socket.
pub fn connect_stream(url: &str, parameters: &[(&str, &str)]) -> String {
    connect_stream_with(url, &StreamAttrs::default(), parameters)
}

/// [`connect_stream`] with optional `<Stream>` attributes, e.g. SignalWire's `authBearerToken`
/// and `codec`.
pub fn connect_stream_with(url: &str, attrs: &StreamAttrs<'_>, parameters: &[(&str, &str)]) -> String {
    let mut doc = Doc::new();
    push_connect_stream(&mut doc.0, url, attrs, parameters);
    doc.finish()
}

/// `<Response><Say>text</Say><Hangup/></Response>`: a spoken refusal (busy, draining, not
/// allowed), then hang up. Uses the provider's default voice and language.
pub fn say_and_hangup(text: &str) -> String {
    let mut doc = Doc::new();
    doc.0.push_str("<Say>");
    push_escaped(&mut doc.0, text, false);
    doc.0.push_str("</Say><Hangup/>");
    doc.finish()
}

/// `<Response><Hangup/></Response>`: end the call now (e.g. as a REST redirect).
pub fn hangup() -> String {
    let mut doc = Doc::new();
    doc.0.push_str("<Hangup/>");
    doc.finish()
}

/// `<Response><Dial><Number>+E164</Number></Dial></Response>` or
/// `<Response><Dial><Sip>sip:…</Sip></Dial></Response>`: transfer the call (sent as a REST
/// redirect, which ends our media stream).
///
/// `target` is either an E.164 number (`+` then 1–15 digits, first digit not 0) or a URI starting
/// with `sip:` or `sips:` (any case). The caller ID is the provider's default (the original
/// caller's for an inbound call).
///
/// Errors: [`TwimlError::InvalidDialTarget`] for anything else.
pub fn dial(target: &str) -> Result<String, TwimlError> {
    let noun = match DialTarget::classify(target) {
        Some(DialTarget::Number) => "Number",
        Some(DialTarget::Sip) => "Sip",
        None => return Err(TwimlError::InvalidDialTarget),
    };
    let mut doc = Doc::new();
    let _ = write!(doc.0, "<Dial><{noun}>");
    push_escaped(&mut doc.0, target, false);
    let _ = write!(doc.0, "</{noun}></Dial>");
    Ok(doc.finish())
}

/// `<Response><Play digits="…"/><Connect><Stream …>…</Stream></Connect></Response>`: play DTMF
/// tones into a Twilio call, then reconnect the media stream.
///
/// Twilio cannot receive DTMF over a media-stream socket (reference §1.1), so the only way to send
/// tones is a REST redirect to this document. The redirect ends the current `<Connect><Stream>`
/// (a `stop` arrives and the socket closes); the `<Connect>` here opens a *new* stream with a new
/// StreamSid, so the caller of this must be ready to resume the call on it. SignalWire streams can
/// take a `dtmf` message on the socket instead and do not need this.
///
/// `digits`: `0-9`, `*`, `#`, and `w` for a 0.5 s pause
/// (<https://www.twilio.com/docs/voice/twiml/play#attributes-digits>).
///
/// Errors: [`TwimlError::InvalidDigits`] for an empty string or any other character.
pub fn play_digits_then_connect(
    digits: &str,
    url: &str,
    attrs: &StreamAttrs<'_>,
    parameters: &[(&str, &str)],
) -> Result<String, TwimlError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b"*#w".contains(&b)) {
        return Err(TwimlError::InvalidDigits);
    }
    let mut doc = Doc::new();
    // Checked above: nothing in `digits` needs escaping.
    let _ = write!(doc.0, r#"<Play digits="{digits}"/>"#);
    push_connect_stream(&mut doc.0, url, attrs, parameters);
    Ok(doc.finish())
}

/// What [`dial`] dials.
enum DialTarget {
    /// An E.164 phone number: `<Number>`.
    Number,
    /// A SIP URI: `<Sip>`.
    Sip,
}

impl DialTarget {
    fn classify(target: &str) -> Option<Self> {
        let lower_prefix = |p: &str| target.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p));
        if (lower_prefix("sip:") && target.len() > 4) || (lower_prefix("sips:") && target.len() > 5) {
            return Some(Self::Sip);
        }
        let digits = target.strip_prefix('+')?;
        let e164 = (1..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        e164.then_some(Self::Number)
    }
}

/// A document under construction: declaration and `<Response>` are written by `new`/`finish`.
struct Doc(String);

impl Doc {
    fn new() -> Self {
        let mut s = String::with_capacity(256);
        s.push_str(DECLARATION);
        s.push_str("<Response>");
        Self(s)
    }

    fn finish(mut self) -> String {
        self.0.push_str("</Response>");
        self.0
    }
}

fn push_connect_stream(out: &mut String, url: &str, attrs: &StreamAttrs<'_>, parameters: &[(&str, &str)]) {
    out.push_str("<Connect><Stream");
    push_attr(out, "url", url);
    if let Some(v) = attrs.name {
        push_attr(out, "name", v);
    }
    if let Some(v) = attrs.status_callback {
        push_attr(out, "statusCallback", v);
    }
    if let Some(v) = attrs.codec {
        push_attr(out, "codec", v);
    }
    if let Some(v) = attrs.realtime {
        push_attr(out, "realtime", if v { "true" } else { "false" });
    }
    if let Some(v) = attrs.auth_bearer_token {
        push_attr(out, "authBearerToken", v);
    }
    if parameters.is_empty() {
        out.push_str("/></Connect>");
        return;
    }
    out.push('>');
    for (name, value) in parameters {
        out.push_str("<Parameter");
        push_attr(out, "name", name);
        push_attr(out, "value", value);
        out.push_str("/>");
    }
    out.push_str("</Stream></Connect>");
}

/// Appends ` name="value"` with `value` escaped.
fn push_attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    push_escaped(out, value, true);
    out.push('"');
}

/// Appends `s` escaped for XML 1.0 text (`in_attr == false`) or a double-quoted attribute value.
fn push_escaped(out: &mut String, s: &str, in_attr: bool) {
    out.reserve(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Line-end handling turns a raw CR into LF (XML 1.0 §2.11), and attribute-value
            // normalisation turns tab and LF into spaces (§3.3.3); references survive both.
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' if in_attr => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            '\t' | '\n' => out.push(c),
            // Not allowed anywhere in XML 1.0, not even as a character reference (§2.2).
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `doc`, checks the declaration and the `<Response>` root, returns the document.
    fn parse(doc: &str) -> roxmltree::Document<'_> {
        assert!(doc.starts_with(DECLARATION), "{doc}");
        let parsed = roxmltree::Document::parse(doc).unwrap();
        assert_eq!(parsed.root_element().tag_name().name(), "Response");
        parsed
    }

    /// Element children of `node`, by tag name.
    fn children<'a>(node: roxmltree::Node<'a, 'a>) -> Vec<roxmltree::Node<'a, 'a>> {
        node.children().filter(|n| n.is_element()).collect()
    }

    fn names(nodes: &[roxmltree::Node<'_, '_>]) -> Vec<String> {
        nodes.iter().map(|n| n.tag_name().name().to_owned()).collect()
    }

    const HOSTILE: &[&str] = &[
        r#"a"b"#,
        "a'b",
        "a&b",
        "&amp;",
        "<x/>",
        "]]>",
        r#""/><Hangup/><Parameter name=""#,
        "<![CDATA[x]]>",
        "tab\tnl\ncr\r",
        "ünïcødé ☎ 😀",
        "",
    ];

    #[test]
    fn connect_stream_has_url_and_parameters_in_order() {
        let doc =
            connect_stream("wss://bridge.example.net/media/twilio", &[("token", "abc.def"), ("lead", "42")]);
        let parsed = parse(&doc);
        let connect = children(parsed.root_element());
        assert_eq!(names(&connect), ["Connect"]);
        let stream = children(connect[0]);
        assert_eq!(names(&stream), ["Stream"]);
        assert_eq!(stream[0].attribute("url"), Some("wss://bridge.example.net/media/twilio"));
        assert_eq!(stream[0].attributes().count(), 1);
        let params = children(stream[0]);
        assert_eq!(names(&params), ["Parameter", "Parameter"]);
        let pairs: Vec<_> = params.iter().map(|p| (p.attribute("name"), p.attribute("value"))).collect();
        assert_eq!(pairs, [(Some("token"), Some("abc.def")), (Some("lead"), Some("42"))]);
    }

    #[test]
    fn connect_stream_without_parameters_is_self_closing() {
        let doc = connect_stream("wss://h/m", &[]);
        assert!(doc.ends_with(r#"<Connect><Stream url="wss://h/m"/></Connect></Response>"#), "{doc}");
        parse(&doc);
    }

    #[test]
    fn signalwire_attributes_only_when_asked() {
        let attrs = StreamAttrs {
            name: Some("main"),
            status_callback: Some("https://h/status?a=1&b=2"),
            codec: Some("L16@24000h"),
            realtime: Some(true),
            auth_bearer_token: Some("tok\"en"),
        };
        let doc = connect_stream_with("wss://h/media/signalwire", &attrs, &[("k", "v")]);
        let parsed = parse(&doc);
        let stream = parsed.descendants().find(|n| n.has_tag_name("Stream")).unwrap();
        assert_eq!(stream.attribute("name"), Some("main"));
        assert_eq!(stream.attribute("statusCallback"), Some("https://h/status?a=1&b=2"));
        assert_eq!(stream.attribute("codec"), Some("L16@24000h"));
        assert_eq!(stream.attribute("realtime"), Some("true"));
        assert_eq!(stream.attribute("authBearerToken"), Some("tok\"en"));
        assert_eq!(stream.attributes().count(), 6);
    }

    #[test]
    fn hostile_attribute_values_round_trip() {
        for v in HOSTILE {
            let doc = connect_stream(&format!("wss://h/{v}"), &[(v, v), ("x", v)]);
            let parsed = parse(&doc);
            // Exactly one Stream with exactly the two parameters: nothing was injected.
            let streams: Vec<_> = parsed.descendants().filter(|n| n.is_element()).collect();
            assert_eq!(names(&streams), ["Response", "Connect", "Stream", "Parameter", "Parameter"], "{doc}");
            assert_eq!(streams[2].attribute("url"), Some(format!("wss://h/{v}").as_str()));
            assert_eq!(streams[3].attribute("name"), Some(*v));
            assert_eq!(streams[3].attribute("value"), Some(*v));
            assert_eq!(streams[4].attribute("value"), Some(*v));
        }
    }

    #[test]
    fn hostile_text_round_trips() {
        for v in HOSTILE {
            let doc = say_and_hangup(v);
            let parsed = parse(&doc);
            let verbs = children(parsed.root_element());
            assert_eq!(names(&verbs), ["Say", "Hangup"], "{doc}");
            assert_eq!(verbs[0].text().unwrap_or(""), *v);
        }
    }

    #[test]
    fn characters_xml_cannot_carry_are_replaced() {
        let doc = say_and_hangup("a\u{0}b\u{1b}c\u{ffff}");
        let parsed = parse(&doc);
        let say = children(parsed.root_element())[0];
        assert_eq!(say.text(), Some("a\u{fffd}b\u{fffd}c\u{fffd}"));
        let doc = connect_stream("wss://h/m", &[("k", "\u{7}")]);
        let parsed = parse(&doc);
        let p = parsed.descendants().find(|n| n.has_tag_name("Parameter")).unwrap();
        assert_eq!(p.attribute("value"), Some("\u{fffd}"));
    }

    #[test]
    fn hangup_is_a_single_verb() {
        let doc = hangup();
        assert_eq!(doc, format!("{DECLARATION}<Response><Hangup/></Response>"));
        assert_eq!(names(&children(parse(&doc).root_element())), ["Hangup"]);
    }

    #[test]
    fn dial_number_or_sip() {
        let doc = dial("+15550100002").unwrap();
        let parsed = parse(&doc);
        let d = children(parsed.root_element());
        assert_eq!(names(&d), ["Dial"]);
        let n = children(d[0]);
        assert_eq!(names(&n), ["Number"]);
        assert_eq!(n[0].text(), Some("+15550100002"));

        let uri = "sip:alice@example.com;transport=udp?X-Header=a&b";
        let doc = dial(uri).unwrap();
        let parsed = parse(&doc);
        let s = parsed.descendants().find(|n| n.has_tag_name("Sip")).unwrap();
        assert_eq!(s.text(), Some(uri));
        assert!(dial("SIPS:bob@example.com").is_ok());
    }

    #[test]
    fn dial_rejects_other_targets() {
        for bad in
            ["", "+", "15550100002", "+0123", "+1234567890123456", "+1 555", "sip:", "tel:+1555", "<x>"]
        {
            assert_eq!(dial(bad), Err(TwimlError::InvalidDialTarget), "{bad:?}");
        }
    }

    #[test]
    fn play_digits_then_reconnects() {
        let doc = play_digits_then_connect("ww1*#", "wss://h/m", &StreamAttrs::default(), &[("token", "t")])
            .unwrap();
        let parsed = parse(&doc);
        let verbs = children(parsed.root_element());
        assert_eq!(names(&verbs), ["Play", "Connect"]);
        assert_eq!(verbs[0].attribute("digits"), Some("ww1*#"));
        let p = parsed.descendants().find(|n| n.has_tag_name("Parameter")).unwrap();
        assert_eq!(p.attribute("value"), Some("t"));
        for bad in ["", "1 2", "A", "\"", "1W"] {
            assert_eq!(
                play_digits_then_connect(bad, "wss://h/m", &StreamAttrs::default(), &[]),
                Err(TwimlError::InvalidDigits)
            );
        }
    }
}
