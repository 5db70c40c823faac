#![allow(clippy::unwrap_used)]
//! Random bytes and "almost valid" frames into every decoder and into the call state machine:
//! nothing may panic, malformed input must come back as an error, and the invariants checked
//! by the fuzz targets must hold.
//!
//! The checks themselves live in `fuzz/src/lib.rs` and are shared with the cargo-fuzz targets
//! (`scripts/fuzz.sh`, `docs/fuzzing.md`); this file supplies the inputs: random bytes, and
//! mutations of the project's real frames (provider fixtures, the Realtime samples and call
//! scripts under `fuzz/seeds/`): truncation, a field replaced by a random string, number,
//! `null` or a value of the wrong type, huge and malformed numbers, invalid base64, random
//! event names, removed fields, inserted bytes.
//!
//! Failures are not persisted (`failure_persistence: None`); a case found here or by the
//! fuzzer becomes an explicit regression test at the end of this file.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;
use std::sync::LazyLock;

use callbridge::core::telephony::Dialect;
use proptest::prelude::*;
use serde_json::Value;

/// Real frames to mutate, read once.
struct Corpus {
    twilio: Vec<String>,
    signalwire: Vec<String>,
    /// Realtime server events; the `inline_*` seeds include deliberately malformed ones.
    realtime: Vec<String>,
    /// `fuzz/seeds/call/*`: scripts for `harness::check_call`.
    scripts: Vec<String>,
}

static CORPUS: LazyLock<Corpus> = LazyLock::new(|| Corpus {
    twilio: read_dir("fixtures/twilio", |_| true),
    signalwire: read_dir("fixtures/signalwire", |_| true),
    realtime: read_dir("fuzz/seeds/realtime_server", |_| true),
    scripts: read_dir("fuzz/seeds/call", |_| true),
});

fn read_dir(rel: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    files.sort();
    let texts: Vec<String> =
        files.iter().map(|p| std::fs::read_to_string(p).unwrap().trim_end().to_owned()).collect();
    assert!(!texts.is_empty(), "no files in {}", dir.display());
    texts
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ------------------------------------------------------------------------------- mutations

/// One edit of a JSON frame.
#[derive(Debug, Clone)]
enum Mutation {
    /// Keep only the first `n` per mille of the text (always strictly shorter).
    Truncate(u16),
    /// Replace the node at (index into all nodes) by a JSON value.
    Replace(usize, Value),
    /// Replace the node by raw text that serde_json cannot hold in a `Value` (huge numbers…).
    ReplaceRaw(usize, &'static str),
    /// Remove the object member at (index into all members).
    Remove(usize),
    /// Set the top-level event name (`event` for providers, `type` for Realtime).
    Rename(String),
    /// Replace a base64 payload (`media.payload` or `delta`) by this text.
    Base64(String),
    /// Insert bytes at (per mille of the text).
    Insert(u16, String),
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(-1)),
        Just(Value::from(0.5)),
        Just(Value::from(1e300)),
        any::<f64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
        "[0-9]{1,25}".prop_map(Value::String),
        "-?[0-9]{0,4}(\\.[0-9]{0,3})?".prop_map(Value::String),
        Just(Value::String(u64::MAX.to_string())),
        Just(Value::Array(vec![])),
        Just(serde_json::json!([1, "a", null])),
        Just(serde_json::json!({})),
        Just(serde_json::json!({"type": "x", "id": 1})),
    ]
}

fn raw_value() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("1e400"),
        Just("-1e400"),
        Just("18446744073709551616"),
        Just("123456789012345678901234567890"),
        Just("-9223372036854775809"),
        Just("1.7976931348623157e308"),
        Just("4.9e-324"),
        Just("-0"),
        Just("00"),
        Just("\"\\ud800\""),
        Just("\"\\u0000\""),
        Just("[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]"),
    ]
}

fn event_name(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![proptest::sample::select(known).prop_map(str::to_owned), "[a-z_.]{0,30}", ".{0,12}",]
}

fn base64ish() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9+/=]{0,40}", "[A-Za-z0-9+/]{1,7}={0,3}", ".{0,16}", Just("AA=A".to_owned())]
}

fn mutation(known: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0u16..1000).prop_map(Mutation::Truncate),
        (any::<usize>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        (any::<usize>(), raw_value()).prop_map(|(i, v)| Mutation::ReplaceRaw(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        event_name(known).prop_map(Mutation::Rename),
        base64ish().prop_map(Mutation::Base64),
        (0u16..1000, ".{1,8}").prop_map(|(at, s)| Mutation::Insert(at, s)),
    ]
}

/// The node at `index` (pre-order, modulo the node count), as a mutable reference.
fn nth_node(root: &mut Value, index: usize) -> &mut Value {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, mut i: usize) -> &mut Value {
        if i == 0 {
            return v;
        }
        i -= 1;
        let children: Vec<&mut Value> = match v {
            Value::Array(a) => a.iter_mut().collect(),
            Value::Object(o) => o.values_mut().collect(),
            _ => unreachable!("index past a leaf"),
        };
        for child in children {
            let n = count(child);
            if i < n {
                return walk(child, i);
            }
            i -= n;
        }
        unreachable!("index past the last child")
    }
    let n = count(root);
    walk(root, index % n)
}

/// Removes the object member at `index` (over all members of all objects, modulo their count).
fn remove_member(root: &mut Value, index: usize) {
    fn members(v: &Value) -> usize {
        match v {
            Value::Array(a) => a.iter().map(members).sum(),
            Value::Object(o) => o.len() + o.values().map(members).sum::<usize>(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, i: &mut usize) -> bool {
        match v {
            Value::Array(a) => a.iter_mut().any(|c| walk(c, i)),
            Value::Object(o) => {
                if *i < o.len() {
                    let key = o.keys().nth(*i).cloned().unwrap();
                    o.remove(&key);
                    return true;
                }
                *i -= o.len();
                o.values_mut().any(|c| walk(c, i))
            }
            _ => false,
        }
    }
    let n = members(root);
    if n > 0 {
        walk(root, &mut (index % n));
    }
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Applies the mutations in order; text-level ones work on the current text, tree-level ones
/// re-parse it (and are skipped once the text is no longer JSON).
fn mutate(text: &str, mutations: &[Mutation], event_key: &str) -> String {
    const RAW: &str = "\u{1}raw\u{1}";
    let mut text = text.to_owned();
    for m in mutations {
        match m {
            Mutation::Truncate(per_mille) => {
                let at = text.len() * usize::from(*per_mille) / 1000;
                text.truncate(floor_char_boundary(&text, at));
            }
            Mutation::Insert(per_mille, s) => {
                let at = floor_char_boundary(&text, text.len() * usize::from(*per_mille) / 1000);
                text.insert_str(at, s);
            }
            _ => {
                let Ok(mut v) = serde_json::from_str::<Value>(&text) else { continue };
                let mut raw = None;
                match m {
                    Mutation::Replace(i, new) => *nth_node(&mut v, *i) = new.clone(),
                    Mutation::ReplaceRaw(i, r) => {
                        *nth_node(&mut v, *i) = Value::String(RAW.to_owned());
                        raw = Some(*r);
                    }
                    Mutation::Remove(i) => remove_member(&mut v, *i),
                    Mutation::Rename(name) => {
                        if let Value::Object(o) = &mut v {
                            o.insert(event_key.to_owned(), Value::String(name.clone()));
                        }
                    }
                    Mutation::Base64(b) => {
                        if let Some(p) = v.pointer_mut("/media/payload") {
                            *p = Value::String(b.clone());
                        }
                        if let Some(p) = v.pointer_mut("/delta") {
                            *p = Value::String(b.clone());
                        }
                    }
                    Mutation::Truncate(_) | Mutation::Insert(..) => unreachable!(),
                }
                text = v.to_string();
                if let Some(r) = raw {
                    text = text.replace(&serde_json::to_string(RAW).unwrap(), r);
                }
            }
        }
    }
    text
}

fn fixture_and_mutations(
    pick: fn(&Corpus) -> &[String],
    known: &'static [&'static str],
) -> impl Strategy<Value = (String, Vec<Mutation>)> {
    let n = pick(&CORPUS).len();
    (0..n, proptest::collection::vec(mutation(known), 1..4))
        .prop_map(move |(i, ms)| (pick(&CORPUS)[i].clone(), ms))
}

fn providers(c: &Corpus) -> &[String] {
    &c.twilio
}

fn signalwire(c: &Corpus) -> &[String] {
    &c.signalwire
}

/// Whether `ms` only cut a well-formed JSON object short, which can never leave valid JSON, so
/// the result must be an error, not an event. (Some seeds are malformed on purpose: one with
/// trailing text becomes valid when the text is cut off.)
fn cut_short(frame: &str, ms: &[Mutation]) -> bool {
    matches!(ms, [Mutation::Truncate(_)])
        && frame.starts_with('{')
        && frame.ends_with('}')
        && serde_json::from_str::<Value>(frame).is_ok()
}

fn realtime_samples(c: &Corpus) -> &[String] {
    &c.realtime
}

// ------------------------------------------------------------------------------- decoders

#[test]
fn real_frames_decode_and_hold_the_invariants() {
    let c = &*CORPUS;
    for (frames, dialect) in [(&c.twilio, Dialect::Twilio), (&c.signalwire, Dialect::SignalWire)] {
        for f in frames {
            let ok = harness::check_provider(dialect, f.as_bytes());
            // Outbound shapes lack the inbound fields (`media.chunk`…); everything else decodes.
            let outbound =
                f.contains(r#""event":"clear""#) || !f.contains("sequenceNumber") && f.contains("media");
            assert!(ok || outbound, "{dialect:?} fixture failed to decode: {f}");
            harness::check_provider_encode(f.as_bytes());
        }
    }
    let decoded = c.realtime.iter().filter(|f| harness::check_realtime(f.as_bytes())).count();
    assert!(
        decoded >= c.realtime.len() / 2,
        "only {decoded} of {} Realtime samples decode",
        c.realtime.len()
    );
    for script in &c.scripts {
        harness::check_call(script.as_bytes());
    }
    for seed in read_dir("fuzz/seeds/config", |_| true) {
        harness::check_config(seed.as_bytes());
    }
    let defaults = read_dir("fuzz/seeds/config", |name| name == "all_defaults");
    assert!(
        harness::check_config(defaults[0].as_bytes()),
        "fuzz/seeds/config/all_defaults no longer loads: add the new variables to fuzz/make-seeds.py \
         (and EXTRA_CONFIG_VARS in fuzz/src/lib.rs), then run python3 fuzz/make-seeds.py"
    );
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn provider_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        harness::check_provider(Dialect::Twilio, &data);
        harness::check_provider(Dialect::SignalWire, &data);
        harness::check_provider_encode(&data);
    }

    #[test]
    fn provider_random_json_like_text(text in "[{}\\[\\]\":,0-9a-zA-Z. _\\\\-]{0,120}") {
        harness::check_provider(Dialect::Twilio, text.as_bytes());
        harness::check_provider(Dialect::SignalWire, text.as_bytes());
    }

    #[test]
    fn realtime_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        harness::check_realtime(&data);
    }

    #[test]
    fn realtime_random_json_like_text(text in "[{}\\[\\]\":,0-9a-z._ -]{0,120}") {
        harness::check_realtime(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn twilio_mutated_fixtures((frame, ms) in fixture_and_mutations(providers, &harness::PROVIDER_EVENTS)) {
        let text = mutate(&frame, &ms, "event");
        let ok = harness::check_provider(Dialect::Twilio, text.as_bytes());
        harness::check_provider(Dialect::SignalWire, text.as_bytes());
        if cut_short(&frame, &ms) {
            prop_assert!(!ok, "truncated frame decoded: {text}");
        }
    }

    #[test]
    fn signalwire_mutated_fixtures((frame, ms) in fixture_and_mutations(signalwire, &harness::PROVIDER_EVENTS)) {
        let text = mutate(&frame, &ms, "event");
        let ok = harness::check_provider(Dialect::SignalWire, text.as_bytes());
        if cut_short(&frame, &ms) {
            prop_assert!(!ok, "truncated frame decoded: {text}");
        }
    }

    #[test]
    fn realtime_mutated_samples((frame, ms) in fixture_and_mutations(realtime_samples, &harness::REALTIME_EVENTS)) {
        let text = mutate(&frame, &ms, "type");
        let ok = harness::check_realtime(text.as_bytes());
        if cut_short(&frame, &ms) {
            prop_assert!(!ok, "truncated event decoded: {text}");
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn g711_and_l16_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        harness::check_g711(&data);
        harness::check_l16(&data);
    }
}

proptest! {
    // The FFT resampler is slow in debug builds: fewer, shorter cases.
    #![proptest_config(config(96))]

    #[test]
    fn transcoder_and_resampler_random_bytes(
        head in proptest::collection::vec(any::<u8>(), 4),
        audio in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        let data = [head, audio].concat();
        harness::check_transcode(&data);
        harness::check_resample(&data);
    }
}

// ------------------------------------------------------------------------------- config

fn config_value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "",
                " ",
                "0",
                "1",
                "20",
                "19",
                "-1",
                "0.5",
                "1.5",
                "NaN",
                "inf",
                "-0",
                "true",
                "false",
                "yes",
                "10s",
                "500ms",
                "2m",
                "7h",
                "s",
                "ms",
                "99999999999999999999",
                "18446744073709551615",
                "18446744073709551615s",
                "307445734561825860m",
                "9223372036854775807",
                "4294967296",
                "65535",
                "65536",
                "::1",
                "127.0.0.1",
                "ws://",
                "wss://x.openai.azure.com",
                "https://x",
                "passthrough",
                "transcode",
                "server_vad",
                "semantic_vad",
                "none",
                "off",
                "near_field",
                "far_field",
                "json",
                "pretty",
                "bearer",
                "api-key",
            ][..]
        )
        .prop_map(str::to_owned),
        "[0-9]{1,22}(s|ms|m)?",
        "[^\n]{0,40}",
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn config_random_environments(
        vars in proptest::collection::vec(
            (0..harness::CONFIG_VARS.len() + harness::EXTRA_CONFIG_VARS.len() + 2, config_value()),
            0..10,
        ),
        with_key in any::<bool>(),
    ) {
        let mut lines: Vec<String> = vars
            .iter()
            .map(|(i, v)| match harness::config_var(*i) {
                Some(name) => format!("{name}={v}"),
                None => format!("NOT_A_CALLBRIDGE_VAR={v}"),
            })
            .collect();
        if with_key {
            // The two variables without which nothing loads (the API key, a provider secret or
            // signature checks off); later lines may still override them.
            lines.insert(0, "OPENAI_API_KEY=sk-test".to_owned());
            lines.insert(1, "TWILIO_VALIDATE_SIGNATURE=false".to_owned());
        }
        let env = lines.join("\n");
        prop_assume!(harness::known_finding_config(env.as_bytes()).is_none(), "open finding");
        harness::check_config(env.as_bytes());
    }

    #[test]
    fn config_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assume!(harness::known_finding_config(&data).is_none(), "open finding");
        harness::check_config(&data);
    }
}

// ------------------------------------------------------------------------------- call

fn script_step() -> impl Strategy<Value = String> {
    let frame =
        |pick: fn(&Corpus) -> &[String], known: &'static [&'static str], key: &'static str, op: char| {
            fixture_and_mutations(pick, known).prop_map(move |(f, ms)| {
                // Mostly keep frames intact so the call gets somewhere; mutate a third of them.
                let text = if ms.len() == 1 { mutate(&f, &ms, key) } else { f };
                format!("{op}{text}")
            })
        };
    prop_oneof![
        3 => frame(providers, &harness::PROVIDER_EVENTS, "event", 't'),
        1 => frame(signalwire, &harness::PROVIDER_EVENTS, "event", 's'),
        3 => frame(realtime_samples, &harness::REALTIME_EVENTS, "type", 'r'),
        2 => "a(r[0-9]/)?(item_00[3-5]|i[0-9])",
        2 => "\\+[0-9]{1,5}",
        2 => proptest::sample::select(&["c", "c", "k", "K", "x", "h", "e", "z", "!"][..]).prop_map(str::to_owned),
    ]
}

proptest! {
    #![proptest_config(config(192))]

    #[test]
    fn call_random_scripts(
        params in proptest::collection::vec("#(transcode|lead=[0-9]{1,4}|mark=[0-9]{1,4}|buffer=[0-9]{1,5}|pending=[0-9]{1,5}|gap=[0-9]{1,4}|linger=[0-9]{1,4})", 0..3),
        started in any::<bool>(),
        steps in proptest::collection::vec(script_step(), 0..40),
    ) {
        let mut script = params;
        if started {
            // Get past `start` and the connect most of the time, so the live phase is exercised.
            script.push(format!("t{}", CORPUS.twilio.iter().find(|f| f.contains(r#""event":"start""#)).unwrap()));
            script.push("c".to_owned());
        }
        script.extend(steps);
        let script = script.join("\n");
        prop_assume!(harness::known_finding_call(script.as_bytes()).is_none(), "open finding");
        harness::check_call(script.as_bytes());
    }

    #[test]
    fn call_mutated_seed_scripts(index in any::<usize>(), ms in proptest::collection::vec(mutation(&harness::PROVIDER_EVENTS), 1..3)) {
        let script = &CORPUS.scripts[index % CORPUS.scripts.len()];
        // Text-level edits of the whole script (line-level JSON edits are in `call_random_scripts`).
        let script = mutate(script, &ms, "event");
        prop_assume!(harness::known_finding_call(script.as_bytes()).is_none(), "open finding");
        harness::check_call(script.as_bytes());
    }

    #[test]
    fn call_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assume!(harness::known_finding_call(&data).is_none(), "open finding");
        harness::check_call(&data);
    }
}

// ------------------------------------------------------------------------------- regressions
//
// Inputs found by fuzzing or by the properties above, kept as explicit cases.

/// An F2 trigger: a media timestamp of `u64::MAX` with a payload of at least 1 ms.
const F2_MEDIA: &str = r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"18446744073709551615","payload":"AAAAAAAAAAAAAAAA"},"streamSid":"MZ1"}"#;

fn started_script(steps: &[&str]) -> String {
    let start = CORPUS.twilio.iter().find(|f| f.contains(r#""event":"start""#)).unwrap();
    let mut script = vec![format!("t{start}"), "c".to_owned()];
    script.extend(steps.iter().map(|s| (*s).to_owned()));
    script.join("\n")
}

#[test]
fn open_findings_are_recognised() {
    for env in [
        "OPENAI_API_KEY=k\nTWILIO_VALIDATE_SIGNATURE=false\nSTART_TIMEOUT=18446744073709551615",
        "OPENAI_API_KEY=k\nTWILIO_VALIDATE_SIGNATURE=false\nUPSTREAM_CONNECT_TIMEOUT=307445734561825860m",
    ] {
        assert_eq!(harness::known_finding_config(env.as_bytes()), Some("F1"), "{env}");
    }
    assert_eq!(
        harness::known_finding_config(
            b"OPENAI_API_KEY=k\nTWILIO_VALIDATE_SIGNATURE=false\nSTART_TIMEOUT=18446744073709551615ms"
        ),
        None
    );
    let script = started_script(&[&format!("t{F2_MEDIA}")]);
    assert_eq!(harness::known_finding_call(script.as_bytes()), Some("F2"));
    assert_eq!(harness::known_finding_call(started_script(&["+20"]).as_bytes()), None);
    let hit_known = std::env::var_os("CALLBRIDGE_FUZZ_KNOWN").is_some();
    assert_eq!(harness::skip_known(Some("F2")), !hit_known);
    assert!(!harness::skip_known(None));
}

/// F1 (open): `START_TIMEOUT` loads, then `Call::new` panics adding it to an `Instant`
/// (library/std/src/time.rs: "overflow when adding duration to instant"; the addition is in
/// src/core/call/mod.rs, `Call::new`).
#[test]
fn f1_huge_start_timeout() {
    harness::check_config(
        b"OPENAI_API_KEY=k\nTWILIO_VALIDATE_SIGNATURE=false\nSTART_TIMEOUT=18446744073709551615",
    );
}

/// F1 (open), the other deadline: `Call::on_start` adds `UPSTREAM_CONNECT_TIMEOUT`.
#[test]
fn f1_huge_upstream_connect_timeout() {
    harness::check_config(
        b"OPENAI_API_KEY=k\nTWILIO_VALIDATE_SIGNATURE=false\nUPSTREAM_CONNECT_TIMEOUT=307445734561825860m",
    );
}

/// F2 (open): "attempt to add with overflow" in `Call::on_media` (src/core/call/mod.rs,
/// `m.timestamp_ms + dur`) for a media timestamp near `u64::MAX`.
#[test]
fn f2_media_timestamp_near_u64_max() {
    harness::check_call(started_script(&[&format!("t{F2_MEDIA}")]).as_bytes());
}

/// F2's other addition: with a timestamp already seen, the late-media check adds too.
#[test]
fn f2_media_timestamp_near_u64_max_after_media() {
    let media = F2_MEDIA.replace("18446744073709551615", "0");
    harness::check_call(started_script(&[&format!("t{media}"), &format!("t{F2_MEDIA}")]).as_bytes());
}
