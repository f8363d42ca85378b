//! CloudEvents 1.0 over HTTP on publish: structured mode (`Content-Type:
//! application/cloudevents+json`, one event), batches
//! (`application/cloudevents-batch+json`, an array) and binary mode (the
//! attributes as `ce-*` headers, the body as the data).
//!
//! An event becomes a message: its `id` is the message id (so the topic's
//! dedup window applies), the `partitionkey` extension is the key, every
//! attribute is a header `ce-<name>` (the data's content type included), and
//! the data is the payload: `data_base64` decoded, `data` as JSON text when
//! the content type is JSON or absent, else the string itself.

use super::error::ApiError;
use super::wire::MAX_BATCH;
use crate::broker::{NewMessage, MAX_PAYLOAD_BYTES};
use base64::Engine as _;
use hyper::header::{HeaderMap, CONTENT_TYPE};
use serde_json::{Map, Value};

pub const STRUCTURED: &str = "application/cloudevents+json";
pub const BATCH: &str = "application/cloudevents-batch+json";

/// A CloudEvent in the JSON event format, as the API documents it.
pub struct CloudEvent;

impl utoipa::PartialSchema for CloudEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ObjectBuilder, Type};
        let text = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        ObjectBuilder::new()
            .description(Some(
                "CloudEvents 1.0, JSON event format. Extension attributes are allowed",
            ))
            .property("specversion", text("`1.0`").enum_values(Some(["1.0"])))
            .property(
                "id",
                text("The message id (dedup applies)").min_length(Some(1)),
            )
            .property("source", text("URI-reference").min_length(Some(1)))
            .property("type", text("Event type").min_length(Some(1)))
            .property("datacontenttype", text("Content type of `data`"))
            .property("subject", text("Subject"))
            .property("time", text("RFC 3339 timestamp"))
            .property("partitionkey", text("The message key"))
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
                    .description(Some("Any JSON value")),
            )
            .property("data_base64", text("Binary data, base64"))
            .required("specversion")
            .required("id")
            .required("source")
            .required("type")
            .into()
    }
}

impl utoipa::ToSchema for CloudEvent {}

/// How a publish carries CloudEvents, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Batch,
    Binary,
}

/// The CloudEvents mode of a request, from its headers.
pub fn mode(headers: &HeaderMap) -> Option<Mode> {
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match media.as_deref() {
        Some(STRUCTURED) => Some(Mode::Structured),
        Some(BATCH) => Some(Mode::Batch),
        _ if headers.contains_key("ce-specversion") => Some(Mode::Binary),
        _ => None,
    }
}

/// The messages of a CloudEvents publish body.
pub fn messages(
    mode: Mode,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Result<Vec<NewMessage>, ApiError> {
    match mode {
        Mode::Structured => {
            let event = parse(&body)?;
            Ok(vec![structured(event, "")?])
        }
        Mode::Batch => {
            let Value::Array(events) = parse(&body)? else {
                return Err(ApiError::invalid(
                    "a CloudEvents batch is a JSON array of events",
                ));
            };
            if events.is_empty() {
                return Err(ApiError::invalid("the CloudEvents batch is empty"));
            }
            if events.len() > MAX_BATCH {
                return Err(ApiError::too_large(format!(
                    "{} events in one request; the limit is {}",
                    events.len(),
                    MAX_BATCH
                )));
            }
            events
                .into_iter()
                .enumerate()
                .map(|(i, e)| structured(e, &format!("events[{i}]: ")))
                .collect()
        }
        Mode::Binary => Ok(vec![binary(headers, body)?]),
    }
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed(format!("not a CloudEvent in JSON: {e}")))
}

/// One event in the JSON format.
fn structured(event: Value, at: &str) -> Result<NewMessage, ApiError> {
    let Value::Object(mut attributes) = event else {
        return Err(ApiError::invalid(format!(
            "{at}a CloudEvent is a JSON object"
        )));
    };
    let data = attributes.remove("data");
    let data_base64 = attributes.remove("data_base64");
    let payload = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(format!(
                "{at}a CloudEvent has `data` or `data_base64`, not both"
            )))
        }
        (None, Some(Value::String(b64))) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| ApiError::invalid(format!("{at}data_base64 is not valid base64: {e}")))?,
        (None, Some(_)) => {
            return Err(ApiError::invalid(format!(
                "{at}data_base64 must be a string"
            )))
        }
        (Some(Value::String(text)), None) if !json_content(&attributes) => text.into_bytes(),
        (Some(value), None) => value.to_string().into_bytes(),
        (None, None) => Vec::new(),
    };
    message(attributes, payload, at)
}

/// Whether the event's data is JSON: its content type says so, or is absent.
fn json_content(attributes: &Map<String, Value>) -> bool {
    match attributes.get("datacontenttype").and_then(Value::as_str) {
        None => true,
        Some(t) => {
            let media = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            media == "application/json" || media.ends_with("+json") || media == "text/json"
        }
    }
}

/// One event in binary mode: `ce-*` headers, the body as data.
fn binary(headers: &HeaderMap, body: Vec<u8>) -> Result<NewMessage, ApiError> {
    let mut attributes = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let text = value
            .to_str()
            .map_err(|_| ApiError::invalid(format!("header {name} is not text")))?;
        let decoded = percent_decode(text).ok_or_else(|| {
            ApiError::invalid(format!("header {name} is not valid percent-encoded UTF-8"))
        })?;
        attributes.insert(attribute.to_string(), Value::String(decoded));
    }
    if let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        attributes.insert("datacontenttype".into(), content_type.into());
    }
    message(attributes, body, "")
}

/// `%XX` escapes decoded, as the binary mode allows in header values.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Check the attributes and build the message.
fn message(
    attributes: Map<String, Value>,
    payload: Vec<u8>,
    at: &str,
) -> Result<NewMessage, ApiError> {
    let required = |name: &str| -> Result<String, ApiError> {
        match attributes.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(ApiError::invalid(format!(
                "{at}CloudEvent attribute `{name}` is empty"
            ))),
            Some(_) => Err(ApiError::invalid(format!(
                "{at}CloudEvent attribute `{name}` must be a string"
            ))),
            None => Err(ApiError::invalid(format!(
                "{at}CloudEvent attribute `{name}` is missing"
            ))),
        }
    };
    let version = required("specversion")?;
    if version != "1.0" {
        return Err(ApiError::invalid(format!(
            "{at}CloudEvent attribute `specversion` is {version:?}; only \"1.0\" is supported"
        )));
    }
    let id = required("id")?;
    required("source")?;
    required("type")?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(ApiError::too_large(format!(
            "{at}the event's data is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
            payload.len()
        )));
    }
    let mut headers = Vec::with_capacity(attributes.len());
    let mut key = None;
    for (name, value) in attributes {
        let valid = !name.is_empty()
            && name.len() <= 20
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(ApiError::invalid(format!(
                "{at}CloudEvent attribute name {name:?} is not 1-20 lowercase letters or digits"
            )));
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Bool(_) | Value::Number(_) => value.to_string(),
            _ => {
                return Err(ApiError::invalid(format!(
                    "{at}CloudEvent attribute `{name}` must be a string, number or boolean"
                )))
            }
        };
        if name == "partitionkey" {
            key = Some(text.clone());
        }
        headers.push((format!("ce-{name}"), text));
    }
    Ok(NewMessage {
        id: Some(id),
        key,
        payload,
        headers,
        delay_ms: None,
    })
}

/// Whether the client asks for CloudEvents (`Accept`).
pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| {
            let media = entry.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case(STRUCTURED) || media.eq_ignore_ascii_case(BATCH)
        })
}

/// A stored message as a CloudEvent: the attributes it was published with
/// (its `ce-*` headers) as they were, else `source` `/topics/{topic}`, type
/// `switchyard.message` and the store time; `partitionkey` from the key;
/// `partition` and `offset` as extensions; the payload as JSON `data` when
/// it is JSON, as a string when it is text, else as `data_base64`.
pub fn event(topic: &str, entry: &crate::broker::LogEntry) -> Value {
    let mut event = Map::new();
    for (name, value) in &entry.headers {
        if let Some(attribute) = name.strip_prefix("ce-") {
            event.insert(attribute.to_string(), value.clone().into());
        }
    }
    let mut default = |name: &str, value: Value| {
        event.entry(name.to_string()).or_insert(value);
    };
    default("specversion", "1.0".into());
    default("id", entry.id.clone().into());
    default("source", format!("/topics/{topic}").into());
    default("type", "switchyard.message".into());
    default("time", rfc3339(entry.timestamp_ms).into());
    if let Some(key) = &entry.key {
        default("partitionkey", key.clone().into());
    }
    event.insert("partition".into(), entry.partition.into());
    event.insert("offset".into(), entry.offset.into());
    let json = json_content(&event)
        .then(|| serde_json::from_slice::<Value>(&entry.payload).ok())
        .flatten();
    match (json, std::str::from_utf8(&entry.payload)) {
        (Some(value), _) => {
            event.insert("data".into(), value);
        }
        (None, Ok(text)) => {
            event
                .entry("datacontenttype")
                .or_insert_with(|| "text/plain".into());
            event.insert("data".into(), text.into());
        }
        (None, Err(_)) => {
            event
                .entry("datacontenttype")
                .or_insert_with(|| "application/octet-stream".into());
            let b64 = base64::engine::general_purpose::STANDARD.encode(&entry.payload);
            event.insert("data_base64".into(), b64.into());
        }
    }
    Value::Object(event)
}

/// A dead letter as a CloudEvent: its message as [`event`] renders it, with
/// the extensions `deadletterreason`, `deadlettertime` (RFC 3339) and
/// `attempts` (how many were made).
pub fn dead_letter_event(letter: crate::broker::DeadLetter) -> Value {
    let (reason, dead_at_ms, attempts) = (letter.reason, letter.dead_at_ms, letter.history.len());
    let m = letter.message;
    let entry = crate::broker::LogEntry {
        id: m.id,
        partition: letter.partition,
        offset: letter.offset,
        key: m.key,
        payload: m.payload,
        headers: m.headers,
        timestamp_ms: m.timestamp_ms,
    };
    let mut event = self::event(&letter.topic, &entry);
    event["deadletterreason"] = reason.into();
    event["deadlettertime"] = rfc3339(dead_at_ms).into();
    event["attempts"] = attempts.into();
    event
}

/// One event as a structured answer (`application/cloudevents+json`).
pub fn reply(event: Value) -> Result<super::body::Reply, ApiError> {
    let mut reply = super::body::reply(hyper::StatusCode::OK, super::body::Format::Json, &event)?;
    reply.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(STRUCTURED),
    );
    Ok(reply)
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time.
fn rfc3339(ms: u64) -> String {
    let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Events as a batch answer (`application/cloudevents-batch+json`).
pub fn batch_reply(events: Vec<Value>) -> Result<super::body::Reply, ApiError> {
    let mut reply = super::body::reply(hyper::StatusCode::OK, super::body::Format::Json, &events)?;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(BATCH));
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(event: Value) -> Result<NewMessage, ApiError> {
        let mut all = messages(
            Mode::Structured,
            &HeaderMap::new(),
            event.to_string().into_bytes(),
        )?;
        Ok(all.remove(0))
    }

    fn header<'a>(m: &'a NewMessage, name: &str) -> Option<&'a str> {
        m.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn structured_events_become_messages() {
        let m = one(
            json!({"specversion": "1.0", "id": "e1", "source": "/shop", "type": "order.created",
                           "partitionkey": "user-7", "data": {"total": 12}}),
        )
        .unwrap();
        assert_eq!(m.id.as_deref(), Some("e1"));
        assert_eq!(m.key.as_deref(), Some("user-7"));
        assert_eq!(m.payload, br#"{"total":12}"#);
        assert_eq!(header(&m, "ce-type"), Some("order.created"));
        assert_eq!(header(&m, "ce-source"), Some("/shop"));
        let text = one(
            json!({"specversion": "1.0", "id": "e2", "source": "s", "type": "t",
                              "datacontenttype": "text/plain", "data": "hello"}),
        )
        .unwrap();
        assert_eq!(text.payload, b"hello");
        let raw = one(
            json!({"specversion": "1.0", "id": "e3", "source": "s", "type": "t",
                             "data_base64": "AAEC"}),
        )
        .unwrap();
        assert_eq!(raw.payload, [0, 1, 2]);
    }

    #[test]
    fn invalid_events_are_refused_naming_the_field() {
        let cases = [
            (
                json!({"specversion": "1.0", "id": "e", "type": "t"}),
                "`source` is missing",
            ),
            (
                json!({"specversion": "0.3", "id": "e", "source": "s", "type": "t"}),
                "`specversion`",
            ),
            (
                json!({"specversion": "1.0", "id": "", "source": "s", "type": "t"}),
                "`id` is empty",
            ),
            (
                json!({"specversion": "1.0", "id": "e", "source": "s", "type": 3}),
                "`type` must be a string",
            ),
            (
                json!({"specversion": "1.0", "id": "e", "source": "s", "type": "t", "Bad-Name": "x"}),
                "\"Bad-Name\"",
            ),
            (
                json!({"specversion": "1.0", "id": "e", "source": "s", "type": "t", "data": 1, "data_base64": "AA=="}),
                "not both",
            ),
            (json!([1]), "a JSON object"),
        ];
        for (event, fragment) in cases {
            let err = one(event.clone()).unwrap_err();
            assert_eq!(err.status.as_u16(), 400, "{event}");
            assert!(err.message.contains(fragment), "{event}: {}", err.message);
        }
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_357_798_801), "2026-12-04T04:16:38.801Z");
    }

    #[test]
    fn binary_mode_takes_headers_and_the_body() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "b1"),
            ("ce-source", "/sensors/4"),
            ("ce-type", "reading"),
            ("ce-subject", "caf%C3%A9"),
            ("content-type", "text/csv"),
        ] {
            headers.insert(k, v.parse().unwrap());
        }
        assert_eq!(mode(&headers), Some(Mode::Binary));
        let m = messages(Mode::Binary, &headers, b"1,2,3".to_vec())
            .unwrap()
            .remove(0);
        assert_eq!(m.id.as_deref(), Some("b1"));
        assert_eq!(m.payload, b"1,2,3");
        assert_eq!(header(&m, "ce-subject"), Some("café"));
        assert_eq!(header(&m, "ce-datacontenttype"), Some("text/csv"));
    }
}
