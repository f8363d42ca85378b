//! The API's own body shapes and their conversion to and from broker types.
//!
//! The broker speaks bytes and plain structs; this module decides how they
//! look on the wire: a payload is UTF-8 text (`payload`) or base64
//! (`payload_base64`) in JSON and binary in MessagePack; headers are an object
//! of strings. Nothing here knows HTTP.

mod lease;
mod output;
mod publish;

pub use lease::{LeaseIn, LeasesOut, SettleIn, SettlesOut, DEFAULT_MAX as DEFAULT_LEASE_MAX};
pub use output::{
    AttemptOut, DeadLetterOut, DeadLettersOut, KvOut, LedgerOut, MessageOut, MessagesOut,
    PublishedOut,
};
pub use publish::{decode_message, PublishBody, MAX_BATCH};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A message payload as a producer sends it: a string (JSON or MessagePack)
/// or binary (MessagePack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadIn(pub Vec<u8>);

impl<'de> Deserialize<'de> for PayloadIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;
        impl Visitor<'_> for PayloadVisitor {
            type Value = PayloadIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a UTF-8 string (or binary, in MessagePack)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PayloadIn, E> {
                Ok(PayloadIn(v.as_bytes().to_vec()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<PayloadIn, E> {
                Ok(PayloadIn(v.into_bytes()))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<PayloadIn, E> {
                Ok(PayloadIn(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<PayloadIn, E> {
                Ok(PayloadIn(v))
            }
        }
        deserializer.deserialize_any(PayloadVisitor)
    }
}

/// A payload as the API returns it: text in JSON, binary in MessagePack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadOut {
    Text(String),
    Binary(Vec<u8>),
}

impl Serialize for PayloadOut {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PayloadOut::Text(text) => serializer.serialize_str(text),
            PayloadOut::Binary(bytes) => serializer.serialize_bytes(bytes),
        }
    }
}

/// Message headers: a JSON/MessagePack map of strings, kept in the order
/// given. A name may appear once per message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;
        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut headers: Vec<(String, String)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if headers.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!("duplicate header {name:?}")));
                    }
                    headers.push((name, value));
                }
                Ok(Headers(headers))
            }
        }
        deserializer.deserialize_map(HeadersVisitor)
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// In JSON a payload is a string: text as it is (`payload`); binary travels
/// as base64 in `payload_base64`. In MessagePack it is binary.
fn payload_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .description(Some(
            "UTF-8 text in JSON (binary payloads use `payload_base64`); binary in MessagePack",
        ))
        .into()
}

impl utoipa::PartialSchema for PayloadIn {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        payload_schema()
    }
}
impl utoipa::ToSchema for PayloadIn {
    fn name() -> std::borrow::Cow<'static, str> {
        "Payload".into()
    }
}

impl utoipa::PartialSchema for PayloadOut {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        payload_schema()
    }
}
impl utoipa::ToSchema for PayloadOut {
    fn name() -> std::borrow::Cow<'static, str> {
        "Payload".into()
    }
}

impl utoipa::PartialSchema for Headers {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .additional_properties(Some(
                utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String),
            ))
            .description(Some("Message headers: names to string values, in order"))
            .into()
    }
}
impl utoipa::ToSchema for Headers {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Probe {
        payload: PayloadIn,
        #[serde(default)]
        headers: Headers,
    }

    /// The payload and headers a probe should parse to.
    type Parsed<'a> = (&'a [u8], Vec<(&'a str, &'a str)>);

    fn check(json: &str, expected: Result<Parsed<'_>, &str>) {
        let got = serde_json::from_str::<Probe>(json);
        match (got, expected) {
            (Ok(probe), Ok((payload, headers))) => {
                assert_eq!(probe.payload.0, payload, "{json}");
                let headers: Vec<_> = headers
                    .into_iter()
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .collect();
                assert_eq!(probe.headers.0, headers, "{json}");
            }
            (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{json}: {e}"),
            (got, expected) => panic!("{json}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn payloads_and_headers_parse_from_json() {
        check(r#"{"payload":"hé"}"#, Ok(("hé".as_bytes(), vec![])));
        check(
            r#"{"payload":"","headers":{"b":"2","a":"1"}}"#,
            Ok((b"", vec![("b", "2"), ("a", "1")])),
        );
        check(r#"{"payload":42}"#, Err("expected a UTF-8 string"));
        check(r#"{"payload":"x","headers":{"a":1}}"#, Err("invalid type"));
        check(
            r#"{"payload":"x","headers":{"a":"1","a":"2"}}"#,
            Err("duplicate header"),
        );
        check(
            r#"{"payload":"x","headers":["a"]}"#,
            Err("an object of string values"),
        );
    }

    #[test]
    fn message_pack_payloads_may_be_binary_or_text() {
        #[derive(Serialize)]
        struct Bin<'a> {
            #[serde(with = "serde_bytes")]
            payload: &'a [u8],
        }
        let bytes = rmp_serde::to_vec_named(&Bin {
            payload: &[0, 159, 255],
        })
        .expect("encodes");
        let probe: Probe = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(probe.payload.0, vec![0, 159, 255]);

        let bytes =
            rmp_serde::to_vec_named(&serde_json::json!({"payload": "text"})).expect("encodes");
        let probe: Probe = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(probe.payload.0, b"text");
    }

    #[test]
    fn binary_payloads_serialize_as_message_pack_bin() {
        let bytes = rmp_serde::to_vec(&PayloadOut::Binary(vec![1, 2])).expect("encodes");
        assert_eq!(bytes, [0xc4, 2, 1, 2]);
        let json = serde_json::to_string(&PayloadOut::Text("a".into())).expect("encodes");
        assert_eq!(json, r#""a""#);
    }
}
