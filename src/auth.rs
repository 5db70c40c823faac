//! Request authentication, as pure functions the routes call: provider webhook signatures, the
//! Twilio media-stream upgrade signature, per-call stream tokens, and bearer tokens.
//!
//! Nothing here does IO or reads a clock; every check compares secrets in constant time.
//!
//! | what | where it arrives | check |
//! |---|---|---|
//! | Twilio webhook (form POST) | `X-Twilio-Signature` | [`validate_twilio`] |
//! | Twilio webhook (JSON body) | `X-Twilio-Signature` + `?bodySHA256=` | [`validate_twilio_json`] |
//! | Twilio media-stream upgrade | `X-Twilio-Signature` over the `wss://` URL | [`validate_twilio_stream`] |
//! | SignalWire cXML webhook (form POST) | `X-SignalWire-Signature` (or `X-Twilio-Signature`) | [`validate_signalwire`] |
//! | SignalWire SWML / JSON webhook | `X-SignalWire-Signature` | [`validate_signalwire_json`] |
//! | SignalWire media-stream upgrade | `Authorization: Bearer` from `authBearerToken` | [`bearer_matches`] |
//! | our own call-control API | `Authorization: Bearer` | [`bearer_matches`] |
//! | a stream's `start` message | `customParameters` token | [`StreamTokens::verify`] |
//!
//! Sources: <https://www.twilio.com/docs/usage/security>, the official `twilio` Python helper's
//! `RequestValidator` (whose rules [`twilio_signature`] reproduces, checked by
//! `scripts/check-signatures.py`), SignalWire's webhook-security guide
//! (<https://developer.signalwire.com/compatibility-api/guides/webhooks/webhook-security>), as
//! summarised in the project's telephony-media-streams reference (§7.1–§7.3, §7.8).
//!
//! The URL given to every validator must be the public URL the provider requested, rebuilt from
//! configuration (never from `Host` or proxy headers), including its query string.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Header carrying Twilio's request signature (also sent by SignalWire's cXML callbacks).
pub const TWILIO_SIGNATURE_HEADER: &str = "X-Twilio-Signature";
/// Header carrying SignalWire's request signature.
pub const SIGNALWIRE_SIGNATURE_HEADER: &str = "X-SignalWire-Signature";

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------------------------
// Twilio
// ---------------------------------------------------------------------------------------------

/// Twilio's `X-Twilio-Signature` for a request: base64 (standard, padded) of
/// HMAC-SHA1(`auth_token`, `url` followed by `name` + `value` of every form parameter).
///
/// Parameters are ordered by name, then by value, byte-wise (uppercase before lowercase), and an
/// identical name/value pair counts once: the rules of the official helper libraries, which
/// sort and de-duplicate a repeated name's values. `url` is used exactly as given (scheme, host,
/// optional port, path, query string); form values are the decoded values. For a GET or a
/// WebSocket upgrade pass no parameters.
///
/// Source: <https://www.twilio.com/docs/usage/security#validating-requests> (reference §7.1).
pub fn twilio_signature<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    form_params: &[(K, V)],
) -> String {
    STANDARD.encode(twilio_mac(auth_token.as_bytes(), url, form_params, ValueOrder::SortedUnique))
}

/// Whether `header_value` (the `X-Twilio-Signature` header) signs a form-encoded request to `url`
/// with `form_params`, under `auth_token`.
///
/// Like the official validators it tries `url` without its port and with the scheme's default
/// port (`:443` for `https`/`wss`, `:80` otherwise), because Twilio signs some requests each way
/// (over HTTPS it drops any port). During a token rotation call it once per token. An empty
/// header is never valid.
pub fn validate_twilio<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    form_params: &[(K, V)],
    header_value: &str,
) -> bool {
    twilio_url_variants(url).iter().any(|u| {
        signature_matches(
            header_value,
            &twilio_mac(auth_token.as_bytes(), u, form_params, ValueOrder::SortedUnique),
        )
    })
}

/// Whether `header_value` signs a request with a JSON body: Twilio then adds
/// `bodySHA256=<lower-case hex SHA-256 of the raw body>` to the URL's query and signs the URL with
/// no parameters (reference §7.1).
///
/// `url` is the full URL as requested, including `bodySHA256`; `body` the raw body bytes. False
/// when `bodySHA256` is missing or does not match the body. Same URL variants as
/// [`validate_twilio`].
pub fn validate_twilio_json(auth_token: &str, url: &str, body: &[u8], header_value: &str) -> bool {
    body_hash_matches(url, body) && validate_twilio::<&str, &str>(auth_token, url, &[], header_value)
}

/// Whether `header_value` (the upgrade request's `X-Twilio-Signature`) signs the media-stream
/// WebSocket URL.
///
/// `stream_url` is the URL exactly as written in `<Stream url>`, `wss://` scheme included: that is
/// what Twilio signs, not the `https://` URL an HTTP stack reconstructs. The upgrade is a GET
/// without a body, so there are no parameters. Following Twilio's security page, a signature
/// over the URL with a trailing `/` appended is accepted too (reference §7.2).
pub fn validate_twilio_stream(auth_token: &str, stream_url: &str, header_value: &str) -> bool {
    let none: &[(&str, &str)] = &[];
    let check = |u: &str| {
        signature_matches(header_value, &twilio_mac(auth_token.as_bytes(), u, none, ValueOrder::SortedUnique))
    };
    check(stream_url) || (!stream_url.ends_with('/') && check(&format!("{stream_url}/")))
}

// ---------------------------------------------------------------------------------------------
// SignalWire
// ---------------------------------------------------------------------------------------------

/// Whether `header_value` (`X-SignalWire-Signature`, or the `X-Twilio-Signature` alias) signs a
/// SignalWire cXML / Compatibility API form callback.
///
/// The algorithm is Twilio's ([`twilio_signature`]) keyed with the project's **Signing Key**
/// (not the API token). Differences, following SignalWire's SDK: only the scheme's standard port
/// is added or removed (`:443` for `https`, `:80` for `http`; any other port is kept as is), and
/// a repeated name's values keep their order as sent (Twilio's sorted order is tried too).
///
/// Source: <https://developer.signalwire.com/compatibility-api/guides/webhooks/webhook-security>
/// (reference §7.3, "scheme B").
pub fn validate_signalwire<K: AsRef<str>, V: AsRef<str>>(
    signing_key: &str,
    url: &str,
    form_params: &[(K, V)],
    header_value: &str,
) -> bool {
    let repeated = has_repeated_name(form_params);
    signalwire_url_variants(url).iter().any(|u| {
        signature_matches(
            header_value,
            &twilio_mac(signing_key.as_bytes(), u, form_params, ValueOrder::AsSent),
        ) || (repeated
            && signature_matches(
                header_value,
                &twilio_mac(signing_key.as_bytes(), u, form_params, ValueOrder::SortedUnique),
            ))
    })
}

/// Whether `header_value` (`X-SignalWire-Signature`) signs a request with a raw (JSON) body.
///
/// Accepts SignalWire's SWML/RELAY scheme, lower-case hex HMAC-SHA1(signing key, `url` + raw
/// body) ("scheme A"; upper-case hex is accepted too), and the Compatibility API's JSON form:
/// Twilio's algorithm over the URL with no parameters plus a matching `bodySHA256` query
/// parameter. The `X-Signalwire-SHA256-Signature` header is not checked.
///
/// Source: reference §7.3.
pub fn validate_signalwire_json(signing_key: &str, url: &str, body: &[u8], header_value: &str) -> bool {
    let mut mac = hmac_sha1(signing_key.as_bytes());
    mac.update(url.as_bytes());
    mac.update(body);
    let hex = to_hex(&mac.finalize().into_bytes());
    let header_lower = header_value.to_ascii_lowercase();
    if !header_value.is_empty() && bool::from(hex.as_bytes().ct_eq(header_lower.as_bytes())) {
        return true;
    }
    body_hash_matches(url, body) && validate_signalwire::<&str, &str>(signing_key, url, &[], header_value)
}

// ---------------------------------------------------------------------------------------------
// Bearer tokens
// ---------------------------------------------------------------------------------------------

/// Whether an `Authorization` header value is `Bearer <token>` with `token == expected`.
///
/// The scheme is case-insensitive and may be followed by several spaces (RFC 7235 §2.1,
/// RFC 6750 §2.1). False for a missing or malformed header, an empty token, and always when
/// `expected` is empty (so a missing configuration cannot let everyone in). The tokens are
/// compared as SHA-256 digests in constant time, so timing reveals neither content nor length.
pub fn bearer_matches(header_value: Option<&str>, expected: &str) -> bool {
    let Some(value) = header_value else { return false };
    let Some((scheme, token)) = value.split_once(' ') else { return false };
    let token = token.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case("Bearer") || token.is_empty() || expected.is_empty() {
        return false;
    }
    Sha256::digest(token.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())).into()
}

// ---------------------------------------------------------------------------------------------
// Stream tokens
// ---------------------------------------------------------------------------------------------

/// Longest call SID a stream token can bind (bytes). Twilio's are 34, SignalWire's UUIDs 36.
pub const MAX_CALL_SID_BYTES: usize = 64;
/// Longest lead id a stream token can carry (bytes).
pub const MAX_LEAD_ID_BYTES: usize = 128;
/// Longest token [`StreamTokens::mint`] produces (characters): comfortably inside Twilio's
/// 500-character limit on a `<Parameter>`'s name + value.
pub const MAX_TOKEN_CHARS: usize =
    b64_len(PAYLOAD_FIXED + MAX_CALL_SID_BYTES + 2 + MAX_LEAD_ID_BYTES) + 1 + b64_len(32);
/// Default cap on remembered (used, unexpired) tokens; see [`StreamTokens::with_capacity`].
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Payload format version (first payload byte).
const TOKEN_VERSION: u8 = 1;
/// Random bytes per token: the replay-set key.
const NONCE_BYTES: usize = 16;
/// Version + expiry + nonce + call-SID length byte.
const PAYLOAD_FIXED: usize = 1 + 8 + NONCE_BYTES + 1;
/// Prefixed to the MAC input so a key shared with another use can never produce a valid token.
const MAC_CONTEXT: &[u8] = b"callbridge stream token v1\0";

/// Unpadded base64 length of `n` bytes.
const fn b64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// What a valid stream token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The call the token was minted for (`CA…` on Twilio, a UUID on SignalWire).
    pub call_sid: String,
    /// The lead (outbound campaign contact) the call is for, if any. Personal data: do not log.
    pub lead_id: Option<String>,
    /// When the token stops being valid (Unix ms, exclusive).
    pub expires_at_unix_ms: u64,
}

/// Why [`StreamTokens::verify`] rejected a token. Every variant means the peer sent something
/// we did not mint for this call, or sent it too late or twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `base64url.base64url`, too long, or a payload we could not have written.
    #[error("malformed stream token")]
    Malformed,
    /// The MAC does not match: forged, altered, or minted with another key.
    #[error("stream token signature mismatch")]
    BadSignature,
    /// `now` is at or past the token's expiry.
    #[error("stream token expired")]
    Expired,
    /// Valid, but minted for another call.
    #[error("stream token is for another call")]
    WrongCall,
    /// Valid, but already used.
    #[error("stream token already used")]
    Replayed,
    /// The replay set is full of unexpired tokens, so single use cannot be guaranteed; the token
    /// is refused (fail closed). Means more than the capacity of tokens were verified within one
    /// TTL.
    #[error("stream token replay set is full")]
    ReplaySetFull,
}

impl TokenError {
    /// Short, stable label for metrics and logs.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::WrongCall => "wrong_call",
            Self::Replayed => "replayed",
            Self::ReplaySetFull => "replay_set_full",
        }
    }
}

/// Why [`StreamTokens::mint`] could not mint a token: the input is longer than a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The call SID is longer than [`MAX_CALL_SID_BYTES`].
    #[error("call SID longer than {MAX_CALL_SID_BYTES} bytes")]
    CallSidTooLong,
    /// The lead id is longer than [`MAX_LEAD_ID_BYTES`].
    #[error("lead id longer than {MAX_LEAD_ID_BYTES} bytes")]
    LeadIdTooLong,
}

/// Signed, expiring, single-use tokens that bind a media stream to the call it was set up for
/// (reference §7.8): minted when answering the voice webhook, carried in a `<Parameter>` of the
/// `<Stream>`, and checked when the stream's `start` message arrives.
///
/// A token is `base64url(payload) "." base64url(HMAC-SHA256(key, context ‖ payload))`, unpadded,
/// at most [`MAX_TOKEN_CHARS`] characters. The payload binds a format version, the expiry
/// (Unix ms), 16 random bytes (the nonce), the call SID and the optional lead id; it is signed,
/// not encrypted, so a lead id is readable by whoever sees the TwiML.
///
/// Single use: [`verify`](Self::verify) remembers each accepted token until it expires, then
/// forgets it. The set holds at most `capacity` tokens (default [`DEFAULT_REPLAY_CAPACITY`],
/// roughly 50 bytes each); when it is full of unexpired tokens, new ones are refused with
/// [`TokenError::ReplaySetFull`] rather than weakening single use. It is per instance: with
/// several instances sharing a key, a token could be used once on each (still bound to its call
/// and expiry).
///
/// Sans-IO: the caller passes the time. Methods are O(log n); share one behind a `Mutex`.
pub struct StreamTokens {
    /// Keyed once; cloned per token (cheaper than re-keying).
    mac: HmacSha256,
    /// Lifetime of minted tokens (ms).
    ttl_ms: u64,
    /// Accepted, unexpired tokens as (expiry ms, nonce): ordered by expiry so expired ones are
    /// dropped from the front. A token's expiry and nonce are both signed, so the pair
    /// identifies it.
    used: BTreeSet<(u64, [u8; NONCE_BYTES])>,
    /// Most tokens `used` may hold.
    capacity: usize,
}

impl fmt::Debug for StreamTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("StreamTokens")
            .field("ttl_ms", &self.ttl_ms)
            .field("used", &self.used.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl StreamTokens {
    /// Tokens signed with `key`, valid for `ttl` after minting, with the default replay capacity.
    ///
    /// `key` should be at least 32 random bytes (config's job to enforce) and the same on every
    /// instance that verifies tokens another minted. `ttl` must cover the time from the webhook
    /// answer to the stream's `start` (a few seconds; a minute is plenty).
    pub fn new(key: &[u8], ttl: Duration) -> Self {
        Self::with_capacity(key, ttl, DEFAULT_REPLAY_CAPACITY)
    }

    /// [`new`](Self::new) with a cap on remembered tokens (at least 1).
    pub fn with_capacity(key: &[u8], ttl: Duration, capacity: usize) -> Self {
        Self {
            mac: hmac_sha256(key),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            used: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Tokens currently remembered as used (for a gauge).
    pub fn remembered(&self) -> usize {
        self.used.len()
    }

    /// Mints a token for `call_sid` (and optionally `lead_id`), valid from `now_unix_ms` until
    /// `now_unix_ms + ttl` (exclusive). Each call draws a fresh random nonce.
    ///
    /// Errors: [`MintError`] when `call_sid` or `lead_id` is longer than a token carries.
    pub fn mint(&self, call_sid: &str, lead_id: Option<&str>, now_unix_ms: u64) -> Result<String, MintError> {
        self.mint_with_nonce(call_sid, lead_id, now_unix_ms, rand::random())
    }

    fn mint_with_nonce(
        &self,
        call_sid: &str,
        lead_id: Option<&str>,
        now_unix_ms: u64,
        nonce: [u8; NONCE_BYTES],
    ) -> Result<String, MintError> {
        let call_len = u8::try_from(call_sid.len())
            .ok()
            .filter(|&n| usize::from(n) <= MAX_CALL_SID_BYTES)
            .ok_or(MintError::CallSidTooLong)?;
        let lead_len = match lead_id {
            Some(l) => Some(
                u8::try_from(l.len())
                    .ok()
                    .filter(|&n| usize::from(n) <= MAX_LEAD_ID_BYTES)
                    .ok_or(MintError::LeadIdTooLong)?,
            ),
            None => None,
        };
        let expires = now_unix_ms.saturating_add(self.ttl_ms);
        let mut payload =
            Vec::with_capacity(PAYLOAD_FIXED + call_sid.len() + 2 + lead_id.map_or(0, str::len));
        payload.push(TOKEN_VERSION);
        payload.extend_from_slice(&expires.to_be_bytes());
        payload.extend_from_slice(&nonce);
        payload.push(call_len);
        payload.extend_from_slice(call_sid.as_bytes());
        match (lead_id, lead_len) {
            (Some(lead), Some(len)) => {
                payload.push(1);
                payload.push(len);
                payload.extend_from_slice(lead.as_bytes());
            }
            _ => payload.push(0),
        }
        let mut mac = self.mac.clone();
        mac.update(MAC_CONTEXT);
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        let mut token = URL_SAFE_NO_PAD.encode(&payload);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut token);
        Ok(token)
    }

    /// Checks `token` for the stream of `call_sid` at `now_unix_ms` and, if it is valid, marks it
    /// used.
    ///
    /// Checks in order: shape ([`TokenError::Malformed`]), MAC ([`TokenError::BadSignature`]),
    /// payload ([`TokenError::Malformed`]), expiry ([`TokenError::Expired`]: valid while
    /// `now < expiry`), call ([`TokenError::WrongCall`]), earlier use ([`TokenError::Replayed`]),
    /// room to remember it ([`TokenError::ReplaySetFull`]). A rejected token is not remembered.
    pub fn verify(
        &mut self,
        token: &str,
        call_sid: &str,
        now_unix_ms: u64,
    ) -> Result<TokenClaims, TokenError> {
        self.forget_expired(now_unix_ms);
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let (payload_b64, tag_b64) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).map_err(|_| TokenError::Malformed)?;
        // Shorter than the fixed fields plus the lead flag: cannot be ours, whatever the MAC.
        if tag.len() != 32 || payload.len() < PAYLOAD_FIXED + 1 {
            return Err(TokenError::Malformed);
        }
        let mut mac = self.mac.clone();
        mac.update(MAC_CONTEXT);
        mac.update(&payload);
        mac.verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;

        let parsed = Payload::parse(&payload).ok_or(TokenError::Malformed)?;
        if now_unix_ms >= parsed.expires {
            return Err(TokenError::Expired);
        }
        if parsed.call_sid != call_sid.as_bytes() {
            return Err(TokenError::WrongCall);
        }
        let key = (parsed.expires, parsed.nonce);
        if self.used.contains(&key) {
            return Err(TokenError::Replayed);
        }
        if self.used.len() >= self.capacity {
            return Err(TokenError::ReplaySetFull);
        }
        let claims = TokenClaims {
            call_sid: call_sid.to_owned(),
            lead_id: parsed.lead_id.map(|l| String::from_utf8_lossy(l).into_owned()),
            expires_at_unix_ms: parsed.expires,
        };
        self.used.insert(key);
        Ok(claims)
    }

    /// Drops remembered tokens that expired at or before `now_unix_ms`.
    fn forget_expired(&mut self, now_unix_ms: u64) {
        while let Some(&(expires, _)) = self.used.first() {
            if expires > now_unix_ms {
                break;
            }
            self.used.pop_first();
        }
    }
}

/// A decoded token payload, borrowing the bytes.
struct Payload<'a> {
    expires: u64,
    nonce: [u8; NONCE_BYTES],
    call_sid: &'a [u8],
    lead_id: Option<&'a [u8]>,
}

impl<'a> Payload<'a> {
    /// `None` for anything [`StreamTokens::mint`] cannot have written, trailing bytes included.
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != TOKEN_VERSION {
            return None;
        }
        let (expires, rest) = rest.split_first_chunk::<8>()?;
        let (nonce, rest) = rest.split_first_chunk::<NONCE_BYTES>()?;
        let (&call_len, rest) = rest.split_first()?;
        let (call_sid, rest) = rest.split_at_checked(usize::from(call_len))?;
        let (&has_lead, rest) = rest.split_first()?;
        let (lead_id, rest) = match has_lead {
            0 => (None, rest),
            1 => {
                let (&lead_len, rest) = rest.split_first()?;
                let (lead, rest) = rest.split_at_checked(usize::from(lead_len))?;
                (Some(lead), rest)
            }
            _ => return None,
        };
        if !rest.is_empty() || std::str::from_utf8(call_sid).is_err() {
            return None;
        }
        if lead_id.is_some_and(|l| std::str::from_utf8(l).is_err()) {
            return None;
        }
        Some(Self { expires: u64::from_be_bytes(*expires), nonce: *nonce, call_sid, lead_id })
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// How a repeated parameter name's values are ordered in the signed string.
#[derive(Clone, Copy)]
enum ValueOrder {
    /// Sorted, identical pairs once (Twilio's helper libraries).
    SortedUnique,
    /// As sent, every occurrence (SignalWire's SDK: stable sort by name only).
    AsSent,
}

fn hmac_sha1(key: &[u8]) -> HmacSha1 {
    // HMAC takes keys of any length (longer ones are hashed), so this cannot fail.
    HmacSha1::new_from_slice(key).expect("HMAC accepts any key length")
}

fn hmac_sha256(key: &[u8]) -> HmacSha256 {
    // As above.
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

/// HMAC-SHA1(key, url ‖ name₁ ‖ value₁ ‖ …) with the pairs ordered per `order`.
fn twilio_mac<K: AsRef<str>, V: AsRef<str>>(
    key: &[u8],
    url: &str,
    params: &[(K, V)],
    order: ValueOrder,
) -> [u8; 20] {
    let mut pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    match order {
        ValueOrder::SortedUnique => {
            pairs.sort_unstable();
            pairs.dedup();
        }
        ValueOrder::AsSent => pairs.sort_by(|a, b| a.0.cmp(b.0)),
    }
    let mut mac = hmac_sha1(key);
    mac.update(url.as_bytes());
    for (k, v) in pairs {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of a base64 signature header with a computed MAC.
fn signature_matches(header_value: &str, mac: &[u8]) -> bool {
    let expected = STANDARD.encode(mac);
    let given = header_value.trim();
    !given.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

fn has_repeated_name<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> bool {
    let mut names: Vec<&str> = params.iter().map(|(k, _)| k.as_ref()).collect();
    names.sort_unstable();
    names.windows(2).any(|w| w[0] == w[1])
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Whether `url`'s query has `bodySHA256` equal to the lower-case hex SHA-256 of `body`.
fn body_hash_matches(url: &str, body: &[u8]) -> bool {
    let Some((_, query)) = url.split_once('?') else { return false };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let Some((_, given)) = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "bodySHA256") else {
        return false;
    };
    let expected = to_hex(&Sha256::digest(body));
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// A URL split around its port: `scheme://[userinfo@]host` + optional port + the rest.
struct UrlParts<'a> {
    scheme: &'a str,
    /// Everything from the start of the URL to the end of the host.
    head: &'a str,
    port: Option<&'a str>,
    /// Path, query and fragment.
    tail: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Option<Self> {
        let scheme_end = url.find("://")?;
        let scheme = &url[..scheme_end];
        let auth_start = scheme_end + 3;
        let auth_len = url[auth_start..].find(['/', '?', '#']).unwrap_or(url.len() - auth_start);
        let authority = &url[auth_start..auth_start + auth_len];
        let tail = &url[auth_start + auth_len..];
        // The port is after the last ':' that follows the host (and any IPv6 literal).
        let host_start = authority.rfind('@').map_or(0, |i| i + 1);
        let host_and_port = &authority[host_start..];
        let search_from = host_and_port.rfind(']').map_or(0, |i| i + 1);
        match host_and_port[search_from..].rfind(':') {
            Some(i) => {
                let colon = auth_start + host_start + search_from + i;
                Some(Self {
                    scheme,
                    head: &url[..colon],
                    port: Some(&url[colon + 1..auth_start + auth_len]),
                    tail,
                })
            }
            None => Some(Self { scheme, head: &url[..auth_start + auth_len], port: None, tail }),
        }
    }

    fn default_port(&self) -> &'static str {
        if self.scheme.eq_ignore_ascii_case("https") || self.scheme.eq_ignore_ascii_case("wss") {
            "443"
        } else {
            "80"
        }
    }
}

/// Twilio's helper libraries try the URL without any port, and with the default port when it has
/// none.
fn twilio_url_variants(url: &str) -> Vec<String> {
    let Some(parts) = UrlParts::split(url) else { return vec![url.to_owned()] };
    match parts.port {
        Some(_) => vec![url.to_owned(), format!("{}{}", parts.head, parts.tail)],
        None => vec![url.to_owned(), format!("{}:{}{}", parts.head, parts.default_port(), parts.tail)],
    }
}

/// SignalWire's SDK adds or removes only the standard port of `http`/`https`.
fn signalwire_url_variants(url: &str) -> Vec<String> {
    let Some(parts) = UrlParts::split(url) else { return vec![url.to_owned()] };
    let standard = match parts.scheme {
        "https" => "443",
        "http" => "80",
        _ => return vec![url.to_owned()],
    };
    match parts.port {
        None => vec![url.to_owned(), format!("{}:{standard}{}", parts.head, parts.tail)],
        Some(p) if p == standard => vec![url.to_owned(), format!("{}{}", parts.head, parts.tail)],
        Some(_) => vec![url.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "test-auth-token";
    const VOICE_URL: &str = "https://bridge.example.net/twilio/voice";
    const MEDIA_URL: &str = "wss://bridge.example.net/twilio/media";

    fn voice_params() -> Vec<(String, String)> {
        [
            ("AccountSid", "AC00000000000000000000000000000001"),
            ("CallSid", "CA00000000000000000000000000000002"),
            ("CallStatus", "ringing"),
            ("From", "+15550100001"),
            ("To", "+15550100002"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    #[derive(serde::Deserialize)]
    struct Fixture {
        vectors: Vec<Vector>,
    }

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        url: String,
        params: Vec<(String, String)>,
        auth_token: String,
        signature: String,
    }

    /// Vectors computed by the official `twilio` Python library (`scripts/check-signatures.py
    /// --make-fixture`).
    #[test]
    fn reproduces_the_official_library_vectors() {
        let fixture: Fixture =
            serde_json::from_str(include_str!("../fixtures/signatures/twilio.json")).unwrap();
        assert!(fixture.vectors.len() >= 10);
        for v in &fixture.vectors {
            assert_eq!(twilio_signature(&v.auth_token, &v.url, &v.params), v.signature, "{}", v.name);
            assert!(validate_twilio(&v.auth_token, &v.url, &v.params, &v.signature), "{}", v.name);
        }
    }

    #[test]
    fn reference_vectors() {
        assert_eq!(twilio_signature(TOKEN, VOICE_URL, &voice_params()), "OhqCk2/jSyiMLAGZoP0GHmsYcqE=");
        assert_eq!(twilio_signature::<&str, &str>(TOKEN, MEDIA_URL, &[]), "fv5uzzN3jL7X7Y9K7ZRw2ONfPeM=");
        assert_eq!(
            twilio_signature::<&str, &str>(TOKEN, &format!("{MEDIA_URL}/"), &[]),
            "IvEeCOb0J0gBhSDAja1/xBMh8gU="
        );
    }

    #[test]
    fn parameter_order_does_not_matter_but_names_are_case_sensitive() {
        let mut reversed = voice_params();
        reversed.reverse();
        let sig = twilio_signature(TOKEN, VOICE_URL, &voice_params());
        assert_eq!(twilio_signature(TOKEN, VOICE_URL, &reversed), sig);
        let mut renamed = voice_params();
        renamed[2].0 = "callStatus".into();
        assert_ne!(twilio_signature(TOKEN, VOICE_URL, &renamed), sig);
        // Uppercase sorts first: "Bb" + "aa", not "aa" + "Bb".
        let mac = twilio_mac(b"k", "u", &[("a", "a"), ("B", "b")], ValueOrder::SortedUnique);
        let mut expected = hmac_sha1(b"k");
        expected.update(b"uBbaa");
        assert_eq!(mac[..], expected.finalize().into_bytes()[..]);
    }

    #[test]
    fn repeated_values_are_sorted_and_counted_once_for_twilio() {
        let a = twilio_signature(TOKEN, VOICE_URL, &[("E", "b"), ("E", "a"), ("E", "b")]);
        let b = twilio_signature(TOKEN, VOICE_URL, &[("E", "a"), ("E", "b")]);
        assert_eq!(a, b);
    }

    #[test]
    fn validate_twilio_accepts_genuine_and_rejects_tampering() {
        let params = voice_params();
        let sig = twilio_signature(TOKEN, VOICE_URL, &params);
        assert!(validate_twilio(TOKEN, VOICE_URL, &params, &sig));
        assert!(validate_twilio(TOKEN, VOICE_URL, &params, &format!(" {sig} ")));
        assert!(!validate_twilio("other-token", VOICE_URL, &params, &sig));
        assert!(!validate_twilio(TOKEN, "https://bridge.example.net/twilio/voice/", &params, &sig));
        assert!(!validate_twilio(TOKEN, "http://bridge.example.net/twilio/voice", &params, &sig));
        assert!(!validate_twilio(TOKEN, VOICE_URL, &params, ""));
        assert!(!validate_twilio(TOKEN, VOICE_URL, &params, &sig[..sig.len() - 1]));
        let mut changed = params.clone();
        changed[4].1 = "+15550100003".into();
        assert!(!validate_twilio(TOKEN, VOICE_URL, &changed, &sig));
        let mut extra = params.clone();
        extra.push(("Digits".into(), "1".into()));
        assert!(!validate_twilio(TOKEN, VOICE_URL, &extra, &sig));
        assert!(!validate_twilio(TOKEN, VOICE_URL, &params[1..], &sig));
    }

    #[test]
    fn validate_twilio_tries_urls_with_and_without_the_port() {
        let params = voice_params();
        let with_default = twilio_signature(TOKEN, "https://bridge.example.net:443/twilio/voice", &params);
        assert!(validate_twilio(TOKEN, VOICE_URL, &params, &with_default));
        let without = twilio_signature(TOKEN, VOICE_URL, &params);
        assert!(validate_twilio(TOKEN, "https://bridge.example.net:443/twilio/voice", &params, &without));
        // Over HTTPS Twilio drops any port, so a URL configured with :8443 validates port-less.
        assert!(validate_twilio(TOKEN, "https://bridge.example.net:8443/twilio/voice", &params, &without));
        // Plain HTTP: :80 is the default.
        let http = twilio_signature(TOKEN, "http://h.example:80/v?x=1", &params);
        assert!(validate_twilio(TOKEN, "http://h.example/v?x=1", &params, &http));
        // A port-less signature does not validate a different host.
        assert!(!validate_twilio(TOKEN, "https://other.example.net:443/twilio/voice", &params, &without));
    }

    #[test]
    fn url_parts_handle_userinfo_ipv6_and_missing_paths() {
        assert_eq!(
            twilio_url_variants("https://u:p@h.example:8443/x?q=1"),
            ["https://u:p@h.example:8443/x?q=1", "https://u:p@h.example/x?q=1"]
        );
        assert_eq!(twilio_url_variants("https://[::1]/x"), ["https://[::1]/x", "https://[::1]:443/x"]);
        assert_eq!(twilio_url_variants("https://[::1]:9/x"), ["https://[::1]:9/x", "https://[::1]/x"]);
        assert_eq!(twilio_url_variants("http://h?x"), ["http://h?x", "http://h:80?x"]);
        assert_eq!(twilio_url_variants("wss://h"), ["wss://h", "wss://h:443"]);
        assert_eq!(twilio_url_variants("not a url"), ["not a url"]);
        assert_eq!(signalwire_url_variants("https://h:8443/x"), ["https://h:8443/x"]);
        assert_eq!(signalwire_url_variants("https://h:443/x"), ["https://h:443/x", "https://h/x"]);
        assert_eq!(signalwire_url_variants("http://h/x"), ["http://h/x", "http://h:80/x"]);
        assert_eq!(signalwire_url_variants("wss://h/x"), ["wss://h/x"]);
    }

    #[test]
    fn json_body_needs_a_matching_body_hash() {
        let body = br#"{"CallSid":"CA00000000000000000000000000000002"}"#;
        let hash = to_hex(&Sha256::digest(body));
        let url = format!("https://bridge.example.net/twilio/json?bodySHA256={hash}");
        let sig = twilio_signature::<&str, &str>(TOKEN, &url, &[]);
        assert!(validate_twilio_json(TOKEN, &url, body, &sig));
        assert!(!validate_twilio_json(TOKEN, &url, b"{}", &sig));
        let no_hash = "https://bridge.example.net/twilio/json";
        let sig = twilio_signature::<&str, &str>(TOKEN, no_hash, &[]);
        assert!(!validate_twilio_json(TOKEN, no_hash, body, &sig));
    }

    #[test]
    fn stream_upgrade_accepts_the_wss_url_and_its_trailing_slash_form() {
        assert!(validate_twilio_stream(TOKEN, MEDIA_URL, "fv5uzzN3jL7X7Y9K7ZRw2ONfPeM="));
        assert!(validate_twilio_stream(TOKEN, MEDIA_URL, "IvEeCOb0J0gBhSDAja1/xBMh8gU="));
        let https = twilio_signature::<&str, &str>(TOKEN, "https://bridge.example.net/twilio/media", &[]);
        assert!(!validate_twilio_stream(TOKEN, MEDIA_URL, &https));
        assert!(!validate_twilio_stream("other", MEDIA_URL, "fv5uzzN3jL7X7Y9K7ZRw2ONfPeM="));
        assert!(!validate_twilio_stream(TOKEN, MEDIA_URL, ""));
        // Written with a slash: only that form.
        let slash = format!("{MEDIA_URL}/");
        assert!(validate_twilio_stream(TOKEN, &slash, "IvEeCOb0J0gBhSDAja1/xBMh8gU="));
        assert!(!validate_twilio_stream(TOKEN, &slash, "fv5uzzN3jL7X7Y9K7ZRw2ONfPeM="));
    }

    #[test]
    fn signalwire_form_signature_is_twilios_with_the_signing_key() {
        let key = "PSK_XXXXXXXXXXXXXXXX";
        let params = voice_params();
        let sig = twilio_signature(key, VOICE_URL, &params);
        assert!(validate_signalwire(key, VOICE_URL, &params, &sig));
        assert!(!validate_signalwire("other", VOICE_URL, &params, &sig));
        let with_port = twilio_signature(key, "https://bridge.example.net:443/twilio/voice", &params);
        assert!(validate_signalwire(key, VOICE_URL, &params, &with_port));
        // Non-standard ports are kept.
        assert!(!validate_signalwire(key, "https://bridge.example.net:8443/twilio/voice", &params, &sig));
    }

    #[test]
    fn signalwire_repeated_values_in_sent_order_or_sorted() {
        let key = "PSK_XXXXXXXXXXXXXXXX";
        let sent = [("E", "b"), ("E", "a")];
        let mut mac = hmac_sha1(key.as_bytes());
        mac.update(format!("{VOICE_URL}EbEa").as_bytes());
        let as_sent = STANDARD.encode(mac.finalize().into_bytes());
        assert!(validate_signalwire(key, VOICE_URL, &sent, &as_sent));
        assert!(validate_signalwire(key, VOICE_URL, &sent, &twilio_signature(key, VOICE_URL, &sent)));
        assert!(!validate_twilio(key, VOICE_URL, &sent, &as_sent));
    }

    #[test]
    fn signalwire_json_schemes() {
        // Scheme A vector from SignalWire's SDK documentation (hex HMAC-SHA1 over URL + body).
        let key = "PSKtest1234567890abcdef";
        let url = "https://example.ngrok.io/webhook";
        let body = br#"{"event":"call.state","params":{"call_id":"abc-123","state":"answered"}}"#;
        let sig = "c3c08c1fefaf9ee198a100d5906765a6f394bf0f";
        assert!(validate_signalwire_json(key, url, body, sig));
        assert!(validate_signalwire_json(key, url, body, &sig.to_ascii_uppercase()));
        assert!(!validate_signalwire_json(key, url, b"{}", sig));
        assert!(!validate_signalwire_json("other", url, body, sig));
        assert!(!validate_signalwire_json(key, url, body, ""));
        // Compatibility JSON: bodySHA256 + Twilio's algorithm with no parameters.
        let hash = to_hex(&Sha256::digest(body));
        let url = format!("{url}?bodySHA256={hash}");
        let sig = twilio_signature::<&str, &str>(key, &url, &[]);
        assert!(validate_signalwire_json(key, &url, body, &sig));
        assert!(!validate_signalwire_json(key, &url, b"{}", &sig));
    }

    #[test]
    fn bearer_tokens() {
        let t = "s3cr3t-token";
        assert!(bearer_matches(Some("Bearer s3cr3t-token"), t));
        assert!(bearer_matches(Some("bearer s3cr3t-token"), t));
        assert!(bearer_matches(Some("BEARER   s3cr3t-token"), t));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cr3t-tokeN"),
            Some("Bearer s3cr3t-token-longer"),
            Some("Bearer s3cr3t"),
            Some("Basic s3cr3t-token"),
            Some("Bearers3cr3t-token"),
            Some("s3cr3t-token"),
            Some("Bearer s3cr3t-token extra"),
        ] {
            assert!(!bearer_matches(bad, t), "{bad:?}");
        }
        assert!(!bearer_matches(Some("Bearer "), ""));
        assert!(!bearer_matches(Some("Bearer x"), ""));
    }

    // -- stream tokens ------------------------------------------------------------------------

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const CALL: &str = "CA00000000000000000000000000000002";
    const T0: u64 = 1_700_000_000_000;
    const TTL: Duration = Duration::from_secs(60);

    fn tokens() -> StreamTokens {
        StreamTokens::new(KEY, TTL)
    }

    #[test]
    fn token_round_trip() {
        let mut t = tokens();
        let token = t.mint(CALL, Some("lead-42"), T0).unwrap();
        assert!(token.len() <= MAX_TOKEN_CHARS);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{token}");
        let claims = t.verify(&token, CALL, T0 + 1).unwrap();
        assert_eq!(
            claims,
            TokenClaims {
                call_sid: CALL.into(),
                lead_id: Some("lead-42".into()),
                expires_at_unix_ms: T0 + 60_000
            }
        );
        let token = t.mint(CALL, None, T0).unwrap();
        assert_eq!(t.verify(&token, CALL, T0).unwrap().lead_id, None);
        assert_eq!(t.remembered(), 2);
    }

    #[test]
    fn tokens_are_unique_per_mint() {
        let t = tokens();
        let a = t.mint(CALL, None, T0).unwrap();
        let b = t.mint(CALL, None, T0).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let t = tokens();
        let token = t.mint(CALL, Some("lead-42"), T0).unwrap();
        let (payload_b64, tag_b64) = token.split_once('.').unwrap();
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).unwrap();
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).unwrap();
        for i in 0..payload.len() {
            let mut p = payload.clone();
            p[i] ^= 0x01;
            let forged = format!("{}.{tag_b64}", URL_SAFE_NO_PAD.encode(&p));
            assert_eq!(tokens().verify(&forged, CALL, T0), Err(TokenError::BadSignature), "payload byte {i}");
        }
        for i in 0..tag.len() {
            let mut m = tag.clone();
            m[i] ^= 0x80;
            let forged = format!("{payload_b64}.{}", URL_SAFE_NO_PAD.encode(&m));
            assert_eq!(tokens().verify(&forged, CALL, T0), Err(TokenError::BadSignature), "tag byte {i}");
        }
        // Swapping in another token's tag.
        let other = t.mint(CALL, Some("lead-42"), T0).unwrap();
        let forged = format!("{payload_b64}.{}", other.split_once('.').unwrap().1);
        assert_eq!(tokens().verify(&forged, CALL, T0), Err(TokenError::BadSignature));
        // Another key.
        assert_eq!(
            StreamTokens::new(b"another key, 32 bytes long......", TTL).verify(&token, CALL, T0),
            Err(TokenError::BadSignature)
        );
        // The untouched token is still fine.
        assert!(tokens().verify(&token, CALL, T0).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let t = tokens();
        let token = t.mint(CALL, None, T0).unwrap();
        let (p, m) = token.split_once('.').unwrap();
        let cases = [
            String::new(),
            ".".into(),
            p.to_owned(),
            format!("{p}."),
            format!(".{m}"),
            format!("{p}.{m}.x"),
            format!("{p}={m}"),
            format!("{p}.{m}="),
            format!("{p}.{}", &m[..m.len() - 2]),
            format!("{p}!.{m}"),
            "a".repeat(MAX_TOKEN_CHARS + 1),
        ];
        for bad in &cases {
            assert_eq!(tokens().verify(bad, CALL, T0), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn correctly_signed_but_unparseable_payloads_are_malformed() {
        let t = tokens();
        let sign = |payload: &[u8]| {
            let mut mac = t.mac.clone();
            mac.update(MAC_CONTEXT);
            mac.update(payload);
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            )
        };
        let good =
            URL_SAFE_NO_PAD.decode(t.mint(CALL, None, T0).unwrap().split_once('.').unwrap().0).unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        let mut version = good.clone();
        version[0] = 2;
        let mut flag = good.clone();
        *flag.last_mut().unwrap() = 7;
        for bad in [&good[..good.len() - 1], &trailing[..], &version[..], &flag[..], &[][..]] {
            assert_eq!(tokens().verify(&sign(bad), CALL, T0), Err(TokenError::Malformed));
        }
        assert!(tokens().verify(&sign(&good), CALL, T0).is_ok());
    }

    #[test]
    fn expiry_boundary() {
        let t = tokens();
        let token = t.mint(CALL, None, T0).unwrap();
        assert_eq!(tokens().verify(&token, CALL, T0 + 60_000), Err(TokenError::Expired));
        assert_eq!(tokens().verify(&token, CALL, u64::MAX), Err(TokenError::Expired));
        assert!(tokens().verify(&token, CALL, T0 + 59_999).is_ok());
        // A clock slightly behind the minting instance's is fine.
        assert!(tokens().verify(&token, CALL, T0 - 5_000).is_ok());
    }

    #[test]
    fn replay_is_rejected_and_wrong_call_does_not_consume() {
        let mut t = tokens();
        let token = t.mint(CALL, None, T0).unwrap();
        assert_eq!(t.verify(&token, "CA00000000000000000000000000000003", T0), Err(TokenError::WrongCall));
        assert_eq!(t.verify(&token, "", T0), Err(TokenError::WrongCall));
        assert_eq!(t.remembered(), 0);
        assert!(t.verify(&token, CALL, T0 + 10).is_ok());
        assert_eq!(t.verify(&token, CALL, T0 + 20), Err(TokenError::Replayed));
        assert_eq!(t.verify(&token, CALL, T0 + 59_999), Err(TokenError::Replayed));
        // After expiry it is refused as expired, and forgotten.
        assert_eq!(t.verify(&token, CALL, T0 + 60_000), Err(TokenError::Expired));
        let later = t.mint(CALL, None, T0 + 60_000).unwrap();
        assert!(t.verify(&later, CALL, T0 + 60_000).is_ok());
        assert_eq!(t.remembered(), 1);
    }

    #[test]
    fn replay_set_is_bounded_and_forgets_expired_tokens() {
        let mut t = StreamTokens::with_capacity(KEY, TTL, 3);
        let minted: Vec<_> = (0..5).map(|i| t.mint(CALL, None, T0 + i).unwrap()).collect();
        for (i, tok) in minted[..3].iter().enumerate() {
            assert!(t.verify(tok, CALL, T0 + 10).is_ok(), "{i}");
        }
        assert_eq!(t.remembered(), 3);
        // Full of unexpired tokens: refuse rather than forget one.
        assert_eq!(t.verify(&minted[3], CALL, T0 + 10), Err(TokenError::ReplaySetFull));
        assert_eq!(t.remembered(), 3);
        // The first token (expiry T0 + 60 000) has expired: room for one more.
        assert!(t.verify(&minted[3], CALL, T0 + 60_000).is_ok());
        assert_eq!(t.remembered(), 3);
        // All of the first three gone; the fourth and fifth remain until their expiry.
        let fresh = t.mint(CALL, None, T0 + 60_002).unwrap();
        assert!(t.verify(&minted[4], CALL, T0 + 60_002).is_ok());
        assert!(t.verify(&fresh, CALL, T0 + 60_002).is_ok());
        assert_eq!(t.remembered(), 3);
        assert_eq!(t.verify(&minted[4], CALL, T0 + 60_003), Err(TokenError::Replayed));
        let _ = t.verify(&fresh, CALL, T0 + 200_000);
        assert_eq!(t.remembered(), 0);
    }

    #[test]
    fn mint_limits() {
        let t = tokens();
        let long_sid = "C".repeat(MAX_CALL_SID_BYTES);
        let long_lead = "L".repeat(MAX_LEAD_ID_BYTES);
        let longest = t.mint(&long_sid, Some(&long_lead), T0).unwrap();
        assert_eq!(longest.len(), MAX_TOKEN_CHARS);
        assert!(MAX_TOKEN_CHARS + "token".len() < 500);
        assert!(tokens().verify(&longest, &long_sid, T0).is_ok());
        assert_eq!(t.mint(&"C".repeat(MAX_CALL_SID_BYTES + 1), None, T0), Err(MintError::CallSidTooLong));
        assert_eq!(t.mint(&"C".repeat(300), None, T0), Err(MintError::CallSidTooLong));
        assert_eq!(t.mint(CALL, Some(&"L".repeat(MAX_LEAD_ID_BYTES + 1)), T0), Err(MintError::LeadIdTooLong));
        // Unicode lead ids survive.
        let tok = t.mint(CALL, Some("zoë-☎"), T0).unwrap();
        assert_eq!(tokens().verify(&tok, CALL, T0).unwrap().lead_id.as_deref(), Some("zoë-☎"));
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let dbg = format!("{:?}", tokens());
        assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
    }
}
