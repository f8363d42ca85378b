//! Randomized campaigns over the decoders of what clients send: publish
//! bodies (JSON and MessagePack, as raw bytes and as documents shaped like
//! the real ones), CloudEvents in each mode, subscription and topic settings,
//! query strings, paths and bearer headers. Every input must get an answer — accepted, or refused
//! with a 4xx error — never a panic or a 5xx.
//!
//! The test suite runs each target for proptest's default number of cases;
//! `./dev.sh fuzz [CASES]` runs a long campaign (`PROPTEST_CASES` per
//! target).

use super::body::{decode, Format};
use super::cloudevents;
use super::error::ApiError;
use super::query::Query;
use super::router::Route;
use super::wire::PublishBody;
use crate::broker::{SubscriptionSpec, TopicSpec};
use proptest::prelude::*;
use serde_json::Value;

/// Refused as a client's mistake: a 4xx.
fn client_error(e: &ApiError) -> bool {
    e.status.is_client_error()
}

/// Publish a decoded body as far as the API goes before the broker.
fn publish(format: Format, bytes: &[u8]) -> Result<(), ApiError> {
    let body: PublishBody = decode(format, bytes)?;
    body.into_messages().map(|_| ())
}

/// JSON documents shaped like request bodies: the real field names (and a
/// few others) with values of any type, nested.
fn document() -> impl Strategy<Value = Value> {
    let names = prop_oneof![
        Just("messages"),
        Just("id"),
        Just("key"),
        Just("payload"),
        Just("payload_base64"),
        Just("headers"),
        Just("delay_ms"),
        Just("topic"),
        Just("plugin"),
        Just("partitions"),
        Just("retry"),
        Just("max_attempts"),
        Just("filter"),
        Just("egress"),
        Just("x"),
        Just("specversion"),
        Just("source"),
        Just("type"),
        Just("data"),
        Just("data_base64"),
        Just("datacontenttype"),
        Just("partitionkey"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
        "[A-Za-z0-9+/=]{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((names.clone(), inner), 0..8).prop_map(|fields| {
                Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// CloudEvents with a valid core, and the rest of the document as
/// attributes and data.
fn event() -> impl Strategy<Value = Value> {
    (
        document(),
        prop::option::of("(1\\.0|0\\.3|)"),
        any::<bool>(),
    )
        .prop_map(|(doc, version, core)| {
            let mut event = match doc {
                Value::Object(map) => map,
                other => [("data".to_string(), other)].into_iter().collect(),
            };
            if core {
                event.insert("id".into(), "e".into());
                event.insert("source".into(), "/s".into());
                event.insert("type".into(), "t".into());
            }
            if let Some(v) = version {
                event.insert("specversion".into(), v.into());
            }
            Value::Object(event)
        })
}

fn cloudevents(mode: cloudevents::Mode, bytes: Vec<u8>) -> Result<(), ApiError> {
    let mut headers = hyper::HeaderMap::new();
    if mode == cloudevents::Mode::Binary {
        headers.insert(
            "ce-specversion",
            hyper::header::HeaderValue::from_static("1.0"),
        );
    }
    cloudevents::messages(mode, &headers, bytes).map(|_| ())
}

proptest! {
    #[test]
    fn cloudevents_are_accepted_or_refused_cleanly(
        one in event(),
        many in prop::collection::vec(event(), 0..4),
        raw in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        use cloudevents::Mode;
        let cases = [
            (Mode::Structured, serde_json::to_vec(&one).expect("encodes")),
            (Mode::Batch, serde_json::to_vec(&many).expect("encodes")),
            (Mode::Structured, raw.clone()),
            (Mode::Batch, raw.clone()),
            (Mode::Binary, raw),
        ];
        for (mode, bytes) in cases {
            if let Err(e) = cloudevents(mode, bytes) {
                prop_assert!(client_error(&e), "{e:?}");
            }
        }
    }

    #[test]
    fn publish_bodies_of_any_bytes_are_refused_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for format in [Format::Json, Format::MessagePack] {
            if let Err(e) = publish(format, &bytes) {
                prop_assert!(client_error(&e), "{e:?}");
            }
        }
    }

    #[test]
    fn publish_documents_are_accepted_or_refused_cleanly(doc in document()) {
        let json = serde_json::to_vec(&doc).expect("encodes");
        let msgpack = rmp_serde::to_vec_named(&doc).expect("encodes");
        for (format, bytes) in [(Format::Json, json), (Format::MessagePack, msgpack)] {
            if let Err(e) = publish(format, &bytes) {
                prop_assert!(client_error(&e), "{e:?}");
            }
        }
    }

    #[test]
    fn settings_documents_are_accepted_or_refused_cleanly(doc in document()) {
        let json = serde_json::to_vec(&doc).expect("encodes");
        match decode::<SubscriptionSpec>(Format::Json, &json) {
            Ok(spec) => {
                if let Err(e) = spec.validate() {
                    prop_assert!(client_error(&ApiError::from(e)));
                }
            }
            Err(e) => prop_assert!(client_error(&e), "{e:?}"),
        }
        match decode::<TopicSpec>(Format::Json, &json) {
            Ok(spec) => {
                if let Err(e) = spec.validate() {
                    prop_assert!(client_error(&ApiError::from(e)));
                }
            }
            Err(e) => prop_assert!(client_error(&e), "{e:?}"),
        }
    }

    #[test]
    fn query_strings_are_parsed_or_refused_cleanly(query in ".{0,80}", raw in prop::collection::vec(any::<u8>(), 0..80)) {
        let raw = String::from_utf8_lossy(&raw).into_owned();
        for q in [query, raw] {
            match Query::parse(Some(&q), &["limit", "from", "prefix", "after"]) {
                Ok(parsed) => {
                    for name in ["limit", "from"] {
                        if let Err(e) = parsed.number(name, 0, 1..=1000) {
                            prop_assert!(client_error(&e), "{e:?}");
                        }
                    }
                }
                Err(e) => prop_assert!(client_error(&e), "{e:?}"),
            }
        }
    }

    #[test]
    fn paths_are_routed_or_not_found(segments in prop::collection::vec(prop_oneof![
        Just("v1".to_string()), Just("topics".to_string()), Just("subscriptions".to_string()),
        Just("plugins".to_string()), Just("dead-letters".to_string()), Just("messages".to_string()),
        Just("partitions".to_string()), Just(String::new()), ".{0,12}",
    ], 0..8)) {
        let path = format!("/{}", segments.join("/"));
        if let Some(route) = Route::parse(&path) {
            prop_assert!(!route.allow().is_empty());
        }
    }

    #[test]
    fn bearer_headers_of_any_bytes_are_refused_cleanly(value in prop::collection::vec(any::<u8>(), 0..64)) {
        let tokens = crate::config::Tokens {
            admin: Some(crate::config::Secret::new("admin")),
            ..Default::default()
        };
        let auth = super::Auth::new(&tokens);
        let mut headers = hyper::HeaderMap::new();
        if let Ok(v) = hyper::header::HeaderValue::from_bytes(&value) {
            headers.insert(hyper::header::AUTHORIZATION, v);
        }
        if let Err(e) = auth.check(&headers, super::Role::Read) {
            prop_assert!(client_error(&e), "{e:?}");
        }
    }
}
