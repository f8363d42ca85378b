//! CloudEvents on publish: structured, batch and binary mode round-trip
//! into messages (id, key, `ce-*` headers, data), the dedup window applies
//! to `ce-id`, and invalid events get 400 naming the field.

use crate::support::Server;
use serde_json::{json, Value};

/// POST to topic `events` with these headers and body; (status, JSON answer).
fn post(s: &Server, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    post_to(s, "events", headers, body)
}

fn post_to(s: &Server, topic: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{}/v1/topics/{topic}/messages", s.base));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut answer = agent
        .run(request.body(body.to_vec()).expect("request"))
        .expect("an answer");
    let status = answer.status().as_u16();
    let text = answer.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A 400 whose message names `field`.
fn refused_naming(status: u16, error: &Value, field: &str) {
    assert_eq!(status, 400, "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(field), "{error}");
}

#[test]
fn cloudevents_are_published_in_every_mode_and_checked() {
    let s = Server::start();
    s.topic("events", 2);
    let structured = json!({"specversion": "1.0", "id": "e1", "source": "/shop", "type": "order.created",
                            "partitionkey": "user-7", "datacontenttype": "application/json",
                            "data": {"total": 12}});
    let ce_json = ("content-type", "application/cloudevents+json");
    let (status, first) = post(&s, &[ce_json], structured.to_string().as_bytes());
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["id"], "e1");
    // The same event again: deduplicated by its id.
    let (status, again) = post(&s, &[ce_json], structured.to_string().as_bytes());
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");

    let batch = json!([
        {"specversion": "1.0", "id": "e2", "source": "/shop", "type": "order.paid", "data": "paid"},
        {"specversion": "1.0", "id": "e3", "source": "/shop", "type": "order.sent", "data_base64": "/w=="}
    ]);
    let (status, results) = post(
        &s,
        &[("content-type", "application/cloudevents-batch+json")],
        batch.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{results}");
    assert_eq!(
        results["results"].as_array().map(Vec::len),
        Some(2),
        "{results}"
    );

    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "e4"),
        ("ce-source", "/sensors/4"),
        ("ce-type", "reading"),
        ("ce-partitionkey", "sensor-4"),
        ("content-type", "text/csv"),
    ];
    let (status, answer) = post(&s, &binary, b"21.5,22.0");
    assert_eq!(status, 200, "{answer}");

    // What was stored.
    let stored: Vec<Value> = s.read_all("events");
    let by_id = |id: &str| {
        stored
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {stored:?}"))
            .clone()
    };
    assert_eq!(stored.len(), 4, "{stored:?}");
    let e1 = by_id("e1");
    assert_eq!(e1["key"], "user-7");
    assert_eq!(e1["payload"], r#"{"total":12}"#);
    assert_eq!(e1["headers"]["ce-type"], "order.created");
    assert_eq!(e1["headers"]["ce-source"], "/shop");
    assert_eq!(
        by_id("e2")["payload"],
        r#""paid""#,
        "JSON data as JSON text"
    );
    assert_eq!(by_id("e3")["payload_base64"], "/w==", "binary data");
    let e4 = by_id("e4");
    assert_eq!(e4["key"], "sensor-4");
    assert_eq!(e4["payload"], "21.5,22.0");
    assert_eq!(e4["headers"]["ce-datacontenttype"], "text/csv");

    // Read back as CloudEvents, and published again elsewhere: the same
    // ids, keys, attributes and payloads.
    s.topic("copy", 2);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut events = Vec::new();
    for p in 0..2 {
        let mut answer = agent
            .get(format!(
                "{}/v1/topics/events/partitions/{p}/messages",
                s.base
            ))
            .header("accept", "application/cloudevents-batch+json")
            .call()
            .expect("read");
        assert_eq!(
            answer.headers()["content-type"],
            "application/cloudevents-batch+json"
        );
        let batch: Vec<Value> =
            serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
        events.extend(batch);
    }
    assert_eq!(events.len(), 4);
    let e1 = events.iter().find(|e| e["id"] == "e1").expect("e1");
    assert_eq!(e1["type"], "order.created");
    assert_eq!(e1["data"], json!({"total": 12}));
    assert_eq!(e1["partitionkey"], "user-7");
    assert!(
        e1["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{e1}"
    );
    let copy = post_to(
        &s,
        "copy",
        &[("content-type", "application/cloudevents-batch+json")],
        &serde_json::to_vec(&events).unwrap(),
    );
    assert_eq!(copy.0, 200, "{}", copy.1);
    let copied = s.read_all("copy");
    for original in &stored {
        let twin = copied
            .iter()
            .find(|m| m["id"] == original["id"])
            .unwrap_or_else(|| panic!("{} copied", original["id"]));
        for field in ["key", "payload", "payload_base64"] {
            assert_eq!(
                twin[field], original[field],
                "{field} of {}",
                original["id"]
            );
        }
        assert_eq!(twin["headers"]["ce-type"], original["headers"]["ce-type"]);
    }

    // Invalid events: 400 naming the field, nothing stored.
    let missing = json!({"specversion": "1.0", "id": "e5", "type": "t"});
    let (status, error) = post(&s, &[ce_json], missing.to_string().as_bytes());
    refused_naming(status, &error, "`source`");
    let (status, error) = post(
        &s,
        &[("ce-specversion", "1.0"), ("ce-id", "e6"), ("ce-type", "t")],
        b"x",
    );
    refused_naming(status, &error, "`source`");
    let (status, error) = post(&s, &[ce_json], b"{not json");
    assert_eq!(status, 400, "{error}");
    assert_eq!(s.read_all("events").len(), 4);
}
