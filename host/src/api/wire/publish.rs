//! The body of `POST /v1/topics/{topic}/messages`: one message, or
//! `{"messages": [...]}`, converted into broker [`NewMessage`]s.

use super::{Headers, PayloadIn};
use crate::api::error::ApiError;
use crate::broker::{NewMessage, MAX_PAYLOAD_BYTES};
use base64::Engine as _;
use serde::Deserialize;

/// Most messages in one publish request: 10,000 keeps one request's work (and
/// its group-commit batch) bounded while amortising HTTP overhead well.
pub const MAX_BATCH: usize = 10_000;

/// One message, or a batch under `messages` (then no other field may be set).
/// The single-message fields are repeated here rather than flattened, since
/// serde cannot deny unknown fields through `flatten`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    messages: Option<Vec<MessageIn>>,
    id: Option<String>,
    key: Option<String>,
    payload: Option<PayloadIn>,
    payload_base64: Option<String>,
    #[serde(default)]
    headers: Headers,
    delay_ms: Option<u64>,
}

/// A message as a producer sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageIn {
    /// Idempotency id; publishing the same id again within the dedup window
    /// is answered with the original position.
    id: Option<String>,
    /// Partitioning and ordering key.
    key: Option<String>,
    /// UTF-8 text (JSON) or binary (MessagePack).
    payload: Option<PayloadIn>,
    /// Standard base64 with padding, for binary payloads in JSON.
    payload_base64: Option<String>,
    #[serde(default)]
    headers: Headers,
    /// Deliver no earlier than this many milliseconds from now.
    delay_ms: Option<u64>,
}

impl MessageIn {
    fn is_empty(&self) -> bool {
        self.id.is_none()
            && self.key.is_none()
            && self.payload.is_none()
            && self.payload_base64.is_none()
            && self.headers.0.is_empty()
            && self.delay_ms.is_none()
    }

    /// `at` names the message in errors ("messages[3]: ..."), empty for a
    /// single message.
    fn into_new_message(self, at: &str) -> Result<NewMessage, ApiError> {
        let payload = match (self.payload, self.payload_base64) {
            (Some(p), None) => p.0,
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| {
                    ApiError::invalid(format!("{at}payload_base64 is not valid base64: {e}"))
                })?,
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(format!(
                    "{at}give either `payload` or `payload_base64`, not both"
                )))
            }
            (None, None) => {
                return Err(ApiError::invalid(format!(
                    "{at}missing `payload` (UTF-8 text) or `payload_base64`"
                )))
            }
        };
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(ApiError::too_large(format!(
                "{at}payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                payload.len()
            )));
        }
        Ok(NewMessage {
            id: self.id,
            key: self.key,
            payload,
            headers: self.headers.0,
            delay_ms: self.delay_ms,
        })
    }
}

/// One message in the JSON shape of a single-message publish (a line of a
/// JSON Lines file, as `switchyard test --input` reads).
pub fn decode_message(json: &[u8]) -> Result<NewMessage, ApiError> {
    let body: MessageIn = serde_json::from_slice(json)
        .map_err(|e| ApiError::invalid(format!("not a message: {e}")))?;
    body.into_new_message("")
}

impl PublishBody {
    /// The messages to publish, and whether the body was a batch (which
    /// decides the response shape).
    pub fn into_messages(self) -> Result<(Vec<NewMessage>, bool), ApiError> {
        let single = MessageIn {
            id: self.id,
            key: self.key,
            payload: self.payload,
            payload_base64: self.payload_base64,
            headers: self.headers,
            delay_ms: self.delay_ms,
        };
        let Some(batch) = self.messages else {
            return Ok((vec![single.into_new_message("")?], false));
        };
        if !single.is_empty() {
            return Err(ApiError::invalid(
                "a batch body has only `messages`; put id, key, payload, headers and delay_ms \
                 inside each message",
            ));
        }
        if batch.is_empty() {
            return Err(ApiError::invalid("`messages` is empty"));
        }
        if batch.len() > MAX_BATCH {
            return Err(ApiError::too_large(format!(
                "{} messages in one request; the limit is {MAX_BATCH}",
                batch.len()
            )));
        }
        let messages = batch
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.into_new_message(&format!("messages[{i}]: ")))
            .collect::<Result<_, _>>()?;
        Ok((messages, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as the test expects it: (id, key, payload, headers, delay).
    type Expected<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        &'a [u8],
        Vec<(&'a str, &'a str)>,
        Option<u64>,
    );

    /// `expected`: the messages and batch flag, or (status, message fragment).
    fn check(json: &str, expected: Result<(Vec<Expected<'_>>, bool), (u16, &str)>) {
        let got = serde_json::from_str::<PublishBody>(json)
            .map_err(|e| ApiError::malformed(e.to_string()))
            .and_then(PublishBody::into_messages);
        match (got, expected) {
            (Ok((messages, batch)), Ok((want, want_batch))) => {
                assert_eq!(batch, want_batch, "{json}");
                let got: Vec<_> = messages
                    .iter()
                    .map(|m| {
                        let headers = m
                            .headers
                            .iter()
                            .map(|(a, b)| (a.as_str(), b.as_str()))
                            .collect();
                        (
                            m.id.as_deref(),
                            m.key.as_deref(),
                            m.payload.as_slice(),
                            headers,
                            m.delay_ms,
                        )
                    })
                    .collect();
                assert_eq!(got, want, "{json}");
            }
            (Err(e), Err((status, needle))) => {
                assert_eq!(e.status.as_u16(), status, "{json}: {e:?}");
                assert!(e.message.contains(needle), "{json}: {}", e.message);
            }
            (got, expected) => panic!("{json}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn single_messages() {
        check(
            r#"{"payload":"hi"}"#,
            Ok((vec![(None, None, b"hi", vec![], None)], false)),
        );
        check(
            r#"{"id":"m1","key":"k","payload":"hi","headers":{"h":"v"},"delay_ms":5}"#,
            Ok((
                vec![(Some("m1"), Some("k"), b"hi", vec![("h", "v")], Some(5))],
                false,
            )),
        );
        check(
            r#"{"payload_base64":"AP8="}"#,
            Ok((vec![(None, None, &[0, 255], vec![], None)], false)),
        );
    }

    #[test]
    fn batches() {
        check(
            r#"{"messages":[{"payload":"a"},{"key":"k","payload_base64":"Yg=="}]}"#,
            Ok((
                vec![
                    (None, None, b"a", vec![], None),
                    (None, Some("k"), b"b", vec![], None),
                ],
                true,
            )),
        );
        check(r#"{"messages":[]}"#, Err((400, "empty")));
        check(
            r#"{"messages":[{"payload":"a"}],"key":"k"}"#,
            Err((400, "only `messages`")),
        );
        check(
            r#"{"messages":[{"payload":"a"},{}]}"#,
            Err((400, "messages[1]: missing `payload`")),
        );
        let many = format!(
            r#"{{"messages":[{}]}}"#,
            vec![r#"{"payload":""}"#; MAX_BATCH + 1].join(",")
        );
        check(&many, Err((413, "limit is 10000")));
    }

    #[test]
    fn payload_rules() {
        check(r#"{}"#, Err((400, "missing `payload`")));
        check(
            r#"{"payload":"a","payload_base64":"YQ=="}"#,
            Err((400, "not both")),
        );
        check(r#"{"payload_base64":"!!"}"#, Err((400, "not valid base64")));
        let big = format!(r#"{{"payload":"{}"}}"#, "x".repeat(MAX_PAYLOAD_BYTES + 1));
        check(&big, Err((413, "limit is 1048576")));
        let fits = "x".repeat(MAX_PAYLOAD_BYTES);
        let json = format!(r#"{{"payload":"{fits}"}}"#);
        check(
            &json,
            Ok((vec![(None, None, fits.as_bytes(), vec![], None)], false)),
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        check(
            r#"{"payload":"a","delay":5}"#,
            Err((400, "unknown field `delay`")),
        );
        check(
            r#"{"messages":[{"payload":"a","kye":"k"}]}"#,
            Err((400, "unknown field `kye`")),
        );
    }
}
