//! A whole call the way Twilio places one: the signed voice webhook, then the media stream the
//! TwiML answer names, upgraded with Twilio's signature and started with the answer's
//! `<Parameter>`s. Used by `callbridge call` (the smoke test of a deployed bridge) and tests.
//!
//! Signatures follow <https://www.twilio.com/docs/usage/security> (see [`crate::auth`]).

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};

use super::caller::{self, CallerConfig, CallerReport, Step};
use super::ids::IdGen;
use crate::auth;

/// What the webhook answered.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    /// `<Stream url>`, as written.
    pub url: String,
    /// `<Parameter>`s, by name.
    pub parameters: BTreeMap<String, String>,
}

/// The form fields Twilio posts to the voice webhook for a ringing inbound call (fake ids and
/// numbers from the 555-01xx range).
pub fn inbound_form(call_sid: &str) -> [(&'static str, &str); 6] {
    [
        ("AccountSid", "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "+15550100001"),
        ("To", "+15550100002"),
    ]
}

/// POSTs a signed inbound-call webhook for `call_sid` to `webhook_url` and reads the
/// `<Connect><Stream>` out of the answer.
///
/// Errors: the request fails, the answer is not 200, or it holds no `<Stream>` (e.g. the
/// polite refusal of a full server, whose `<Say>` is quoted).
pub async fn webhook(webhook_url: &str, auth_token: &str, call_sid: &str) -> anyhow::Result<StreamPlan> {
    let form = inbound_form(call_sid);
    let signature = auth::twilio_signature(auth_token, webhook_url, &form);
    let resp = reqwest::Client::new()
        .post(webhook_url)
        .header(auth::TWILIO_SIGNATURE_HEADER, signature)
        .form(&form)
        .send()
        .await
        .with_context(|| format!("POST {webhook_url}"))?;
    let status = resp.status();
    let body = resp.text().await.context("reading the TwiML")?;
    if !status.is_success() {
        bail!("the webhook answered {status}: {}", body.chars().take(200).collect::<String>());
    }
    parse_stream(&body)
}

/// The `<Stream>` of a TwiML document.
///
/// Errors: not XML, or no `<Connect><Stream url>`.
pub fn parse_stream(twiml: &str) -> anyhow::Result<StreamPlan> {
    let doc = roxmltree::Document::parse(twiml).context("the webhook's answer is not XML")?;
    let Some(stream) = doc.descendants().find(|n| n.has_tag_name("Stream")) else {
        let said = doc.descendants().find(|n| n.has_tag_name("Say")).and_then(|n| n.text()).unwrap_or("");
        bail!(
            "no <Stream> in the answer{}",
            if said.is_empty() { String::new() } else { format!(": <Say>{said}") }
        );
    };
    let url = stream.attribute("url").context("<Stream> without url")?.to_owned();
    let parameters = stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .filter_map(|n| Some((n.attribute("name")?.to_owned(), n.attribute("value")?.to_owned())))
        .collect();
    Ok(StreamPlan { url, parameters })
}

/// Places one call: webhook, then the stream with `script`. `connect_url` replaces the
/// stream URL's scheme and host for connecting (behind a proxy, or `ws://` locally) while the
/// signature still covers the URL as written.
///
/// Errors: the webhook fails, or the stream cannot be opened.
pub async fn place_call(
    webhook_url: &str,
    auth_token: &str,
    connect_url: Option<&str>,
    script: Vec<Step>,
) -> anyhow::Result<CallerReport> {
    let call_sid = IdGen::new().hex_sid("CA");
    let plan = webhook(webhook_url, auth_token, &call_sid).await?;
    let no_params: [(&str, &str); 0] = [];
    let signature = auth::twilio_signature(auth_token, &plan.url, &no_params);
    let mut cfg = CallerConfig::twilio(connect_url.unwrap_or(&plan.url), script);
    cfg.call_sid = call_sid;
    cfg.custom_parameters = plan.parameters;
    cfg.headers = vec![(auth::TWILIO_SIGNATURE_HEADER.to_owned(), signature)];
    caller::run_call(cfg).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stream_or_says_why_not() {
        let plan = parse_stream(
            r#"<?xml version="1.0"?><Response><Connect><Stream url="wss://b.example.com/media/twilio"><Parameter name="token" value="t1"/></Stream></Connect></Response>"#,
        )
        .unwrap();
        assert_eq!(plan.url, "wss://b.example.com/media/twilio");
        assert_eq!(plan.parameters["token"], "t1");
        let busy = parse_stream("<Response><Say>All busy</Say><Hangup/></Response>").unwrap_err();
        assert!(busy.to_string().contains("All busy"), "{busy}");
    }
}
