//! Scripted answers to outbound requests, for the harness and `switchyard
//! test --http-mock`: a plugin's behaviour against a flaky API, on virtual
//! time, without a server.
//!
//! A script is a list of rules; a request takes the first rule whose method
//! matches and whose URL starts with the rule's `url`. Each rule answers with
//! its `responses` in turn, repeating the last one. A request no rule matches
//! is denied (`HTTP-request-denied`), as outside the allow-list.

use super::host_response;
use bytes::Bytes;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// One rule of a script.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockRule {
    /// The method to match (any case); any method if absent.
    #[serde(default)]
    pub method: Option<String>,
    /// A prefix of the full request URL (`https://api.example.com/hooks`).
    pub url: String,
    /// The answers, in order; the last one repeats.
    pub responses: Vec<MockResponse>,
}

/// One scripted answer: a response, or a transport failure.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockResponse {
    /// HTTP status. Default 200.
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The response body, as text.
    #[serde(default)]
    pub body: String,
    /// Fail instead of answering: `connection-refused`, `timeout` or
    /// `DNS-error`.
    #[serde(default)]
    pub error: Option<String>,
}

fn ok() -> u16 {
    200
}

/// A script and how far each rule has got.
#[derive(Debug)]
pub struct HttpMock {
    rules: Vec<MockRule>,
    next: Mutex<Vec<usize>>,
}

impl HttpMock {
    /// Check a script: every rule has a response, every error is known.
    pub fn new(rules: Vec<MockRule>) -> Result<Self, String> {
        for rule in &rules {
            if rule.responses.is_empty() {
                return Err(format!("mock rule for {} has no responses", rule.url));
            }
            for r in &rule.responses {
                if let Some(e) = &r.error {
                    failure(e).ok_or_else(|| {
                        format!(
                            "mock rule for {}: unknown error {e:?} (use connection-refused, timeout or DNS-error)",
                            rule.url
                        )
                    })?;
                }
                if !(100..=599).contains(&r.status) {
                    return Err(format!(
                        "mock rule for {}: bad status {}",
                        rule.url, r.status
                    ));
                }
            }
        }
        let next = Mutex::new(vec![0; rules.len()]);
        Ok(Self { rules, next })
    }

    /// Parse a script from JSON (a list of rules).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let rules: Vec<MockRule> =
            serde_json::from_str(text).map_err(|e| format!("bad HTTP mock script: {e}"))?;
        Self::new(rules)
    }

    pub(super) fn answer<B>(
        &self,
        request: &http::Request<B>,
    ) -> Result<http::Response<WasiBody>, (HttpError, String)> {
        let url = request.uri().to_string();
        let method = request.method().as_str();
        let Some(i) = self.rules.iter().position(|r| {
            r.method
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && url.starts_with(&r.url)
        }) else {
            return Err((
                HttpError::HttpRequestDenied,
                format!("no HTTP mock rule matches {method} {url}"),
            ));
        };
        let rule = &self.rules[i];
        let turn = {
            let mut next = self.next.lock().expect("mock lock");
            let turn = next[i].min(rule.responses.len() - 1);
            next[i] += 1;
            turn
        };
        let response = &rule.responses[turn];
        if let Some(error) = &response.error {
            let code = failure(error).expect("checked in new");
            return Err((code, format!("scripted {error}")));
        }
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(host_response(
            response.status,
            &headers,
            Bytes::from(response.body.clone()),
        ))
    }
}

fn failure(name: &str) -> Option<HttpError> {
    match name {
        "connection-refused" => Some(HttpError::ConnectionRefused),
        "timeout" => Some(HttpError::HttpResponseTimeout),
        "DNS-error" => Some(HttpError::DnsError {
            rcode: Some("NXDOMAIN".into()),
            info_code: None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, url: &str) -> http::Request<()> {
        http::Request::builder()
            .method(method)
            .uri(url)
            .body(())
            .unwrap()
    }

    #[test]
    fn rules_answer_in_turn_and_repeat_the_last() {
        let mock = HttpMock::from_json(
            r#"[{"method": "POST", "url": "https://api.example.com/hooks",
                 "responses": [{"status": 503}, {"error": "timeout"}, {"status": 200, "body": "ok"}]}]"#,
        )
        .unwrap();
        let post = request("POST", "https://api.example.com/hooks/1");
        assert_eq!(mock.answer(&post).unwrap().status(), 503);
        assert!(matches!(
            mock.answer(&post).unwrap_err().0,
            HttpError::HttpResponseTimeout
        ));
        assert_eq!(mock.answer(&post).unwrap().status(), 200);
        assert_eq!(mock.answer(&post).unwrap().status(), 200);
        let (code, reason) = mock
            .answer(&request("GET", "https://api.example.com/hooks"))
            .unwrap_err();
        assert!(matches!(code, HttpError::HttpRequestDenied));
        assert!(
            reason.contains("GET https://api.example.com/hooks"),
            "{reason}"
        );
    }

    #[test]
    fn bad_scripts_are_refused() {
        assert!(HttpMock::from_json(r#"[{"url": "x", "responses": []}]"#).is_err());
        assert!(
            HttpMock::from_json(r#"[{"url": "x", "responses": [{"error": "boom"}]}]"#).is_err()
        );
        assert!(HttpMock::from_json(r#"[{"url": "x", "responses": [{"status": 42}]}]"#).is_err());
        assert!(HttpMock::from_json(r#"{"url": "x"}"#).is_err());
    }
}
