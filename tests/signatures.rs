#![allow(clippy::unwrap_used)]
//! Writes Twilio request-signature vectors computed by our code to `target/signatures/rust.jsonl`
//! for `scripts/check-signatures.py`, which checks each verdict against the official `twilio`
//! Python library's `RequestValidator.validate`:
//!
//! ```text
//! cargo test --test signatures
//! py=$(scripts/python-env.sh | tail -n 1) && "$py" scripts/check-signatures.py target/signatures
//! ```
//!
//! Each vector records what our validator said (`expect_valid`); this test also asserts that
//! verdict is the intended one (genuine → valid, tampered → invalid), so a vector file only exists
//! when our side is right, and the Python check proves the official library agrees.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use callbridge::auth::{twilio_signature, validate_twilio, validate_twilio_json, validate_twilio_stream};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

type Params = Vec<(String, String)>;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Collects vectors and checks each verdict against the intended one.
struct Out {
    lines: String,
    count: usize,
    valid: usize,
}

impl Out {
    fn form(&mut self, what: &str, token: &str, url: &str, p: &Params, signature: &str, intended: bool) {
        let ours = validate_twilio(token, url, p, signature);
        assert_eq!(ours, intended, "{what}: url={url} params={p:?} sig={signature}");
        let mut names: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        // An object when names are unique (a plain dict for the validator), else a pair list.
        let params: Value = if names.len() == p.len() {
            Value::Object(p.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
        } else {
            json!(p.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>())
        };
        self.push(json!({
            "what": what, "url": url, "params": params, "auth_token": token,
            "signature": signature, "expect_valid": ours,
        }));
    }

    fn body(&mut self, what: &str, token: &str, url: &str, body: &str, signature: &str, intended: bool) {
        let ours = validate_twilio_json(token, url, body.as_bytes(), signature);
        assert_eq!(ours, intended, "{what}: url={url} body={body} sig={signature}");
        self.push(json!({
            "what": what, "url": url, "body": body, "auth_token": token,
            "signature": signature, "expect_valid": ours,
        }));
    }

    fn push(&mut self, v: Value) {
        self.count += 1;
        self.valid += usize::from(v["expect_valid"] == json!(true));
        writeln!(self.lines, "{v}").unwrap();
    }
}

/// A small deterministic generator (64-bit LCG) for varied names and values.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() as usize) % from.len()]
    }

    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "0", "+1555", " ", "&", "=", "%20", "é", "☎", "😀", "\n", "\"", "'", "<", "_", "-", "Ü",
        ];
        let n = self.next() % 6;
        (0..n).map(|_| self.pick(PIECES)).collect()
    }
}

const URLS: &[&str] = &[
    "https://bridge.example.net/twilio/voice",
    "https://bridge.example.net/twilio/status?campaign=spring&lead=42",
    "https://bridge.example.net:8443/twilio/voice",
    "http://127.0.0.1:8080/twilio/voice",
    "http://bridge.example.net/twilio/voice",
    "https://bridge.example.net/caf%C3%A9/voice",
];
const TOKENS: &[&str] = &["12345", "test-auth-token", "0123456789abcdef0123456789abcdef"];

fn voice() -> Params {
    params(&[
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("CallSid", "CA00000000000000000000000000000002"),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "+15550100001"),
        ("To", "+15550100002"),
    ])
}

#[test]
fn write_signature_vectors() {
    let mut out = Out { lines: String::new(), count: 0, valid: 0 };

    // Fixed cases over every URL and token, with one kind of tampering each.
    for url in URLS {
        for token in TOKENS {
            let p = voice();
            let sig = twilio_signature(token, url, &p);
            out.form("genuine", token, url, &p, &sig, true);
            out.form("wrong token", token, url, &p, &twilio_signature("54321", url, &p), false);
            let mut changed = p.clone();
            changed[5].1 = "+15550100009".into();
            out.form("changed param", token, url, &changed, &sig, false);
            let mut renamed = p.clone();
            renamed[2].0 = "callStatus".into();
            out.form("renamed param", token, url, &renamed, &sig, false);
            out.form("dropped param", token, url, &p[1..].to_vec(), &sig, false);
            let mut extra = p.clone();
            extra.push(("Digits".into(), "1".into()));
            out.form("added param", token, url, &extra, &sig, false);
            out.form("changed host", token, &url.replacen("://", "://x", 1), &p, &sig, false);
            out.form("trailing slash", token, &format!("{url}/"), &p, &sig, false);
            out.form("truncated signature", token, url, &p, &sig[..sig.len() - 2], false);
            out.form("empty signature", token, url, &p, "", false);
        }
    }

    // Port variants the official validator tries.
    let p = voice();
    let t = "12345";
    let portless = "https://bridge.example.net/twilio/voice";
    let sig_443 = twilio_signature(t, "https://bridge.example.net:443/twilio/voice", &p);
    out.form("signed with :443, url without", t, portless, &p, &sig_443, true);
    let sig = twilio_signature(t, portless, &p);
    out.form(
        "signed without port, url with :443",
        t,
        "https://bridge.example.net:443/twilio/voice",
        &p,
        &sig,
        true,
    );
    out.form(
        "signed without port, url with :8443",
        t,
        "https://bridge.example.net:8443/twilio/voice",
        &p,
        &sig,
        true,
    );
    let sig_80 = twilio_signature(t, "http://bridge.example.net:80/twilio/voice", &p);
    out.form(
        "signed with :80, http url without",
        t,
        "http://bridge.example.net/twilio/voice",
        &p,
        &sig_80,
        true,
    );
    let sig_8443 = twilio_signature(t, "https://bridge.example.net:8443/twilio/voice", &p);
    out.form("signed with :8443, url without", t, portless, &p, &sig_8443, false);
    out.form(
        "signed with :443, other host",
        t,
        "https://other.example.net/twilio/voice",
        &p,
        &sig_443,
        false,
    );

    // Repeated names, empty values, order of values.
    let rep = params(&[
        ("StatusCallbackEvent", "ringing"),
        ("StatusCallbackEvent", "answered"),
        ("Digits", ""),
        ("StatusCallbackEvent", "completed"),
    ]);
    let sig = twilio_signature(t, portless, &rep);
    out.form("repeated names", t, portless, &rep, &sig, true);
    let mut reordered = rep.clone();
    reordered.reverse();
    out.form("repeated names, other order", t, portless, &reordered, &sig, true);
    let mut dup = rep.clone();
    dup.push(("StatusCallbackEvent".into(), "answered".into()));
    out.form("repeated identical pair", t, portless, &dup, &sig, true);
    let mut changed = rep.clone();
    changed[1].1 = "initiated".into();
    out.form("repeated names, changed value", t, portless, &changed, &sig, false);
    out.form("repeated names, one dropped", t, portless, &rep[1..].to_vec(), &sig, false);

    // Media-stream upgrade: the wss:// URL with no parameters.
    let media = "wss://bridge.example.net/media/twilio";
    let none = Params::new();
    let sig = twilio_signature(t, media, &none);
    assert!(validate_twilio_stream(t, media, &sig));
    out.form("stream upgrade", t, media, &none, &sig, true);
    out.form(
        "stream upgrade, https scheme",
        t,
        "https://bridge.example.net/media/twilio",
        &none,
        &sig,
        false,
    );
    out.form("stream upgrade, wrong token", t, media, &none, &twilio_signature("54321", media, &none), false);
    let slash = twilio_signature(t, &format!("{media}/"), &none);
    assert!(validate_twilio_stream(t, media, &slash));
    out.form("stream upgrade, signed with trailing slash", t, &format!("{media}/"), &none, &slash, true);

    // JSON bodies: bodySHA256 in the query, URL signed with no parameters.
    let body = r#"{"CallSid":"CA00000000000000000000000000000002","CallStatus":"completed"}"#;
    let hash: String = Sha256::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let json_url = format!("https://bridge.example.net/twilio/json?bodySHA256={hash}");
    let sig = twilio_signature(t, &json_url, &none);
    out.body("json body", t, &json_url, body, &sig, true);
    out.body("json body, changed", t, &json_url, &body.replace("completed", "ringing"), &sig, false);
    out.body(
        "json body, wrong token",
        t,
        &json_url,
        body,
        &twilio_signature("54321", &json_url, &none),
        false,
    );

    // Varied names and values (unicode, separators, empty strings), deterministic.
    let mut rng = Lcg(0x5eed);
    for i in 0..120 {
        let url = rng.pick(URLS);
        let token = rng.pick(TOKENS);
        let n = rng.next() % 6;
        let mut p: Params = (0..n).map(|j| (format!("{}{j}", rng.text()), rng.text())).collect();
        let sig = twilio_signature(token, url, &p);
        out.form(&format!("varied {i}"), token, url, &p, &sig, true);
        if let Some(first) = p.first_mut() {
            first.1.push('x');
            out.form(&format!("varied {i}, changed"), token, url, &p, &sig, false);
        }
    }

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/signatures");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("rust.jsonl"), &out.lines).unwrap();
    assert!(out.count > 300 && out.valid > 100 && out.count - out.valid > 100, "{} {}", out.count, out.valid);
}
