//! CloudEvents on publish: structured, batch and binary mode round-trip
//! into messages (id, key, `ce-*` headers, data), the dedup window applies
//! to `ce-id`, and invalid events get 400 naming the field.

use crate::support::{Body, Server};
use serde_json::{json, Value};
use std::time::Duration;

/// POST to topic `events` with these headers and body; (status, JSON answer).
fn post(s: &Server, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    post_to(s, "events", headers, body)
}

fn post_to(s: &Server, topic: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let path = format!("/v1/topics/{topic}/messages");
    let (status, _, answer) = s.send("POST", &path, None, headers, Body::Raw(None, body.to_vec()));
    (status, answer)
}

const BATCH_ACCEPT: (&str, &str) = ("accept", "application/cloudevents-batch+json");

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
    let mut events = Vec::new();
    for p in 0..2 {
        let path = format!("/v1/topics/events/partitions/{p}/messages");
        let (status, content_type, batch) = s.send("GET", &path, None, &[BATCH_ACCEPT], Body::None);
        assert_eq!(status, 200, "{batch}");
        assert_eq!(content_type, "application/cloudevents-batch+json");
        events.extend(batch.as_array().expect("a batch").iter().cloned());
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

#[test]
fn dead_letters_read_as_cloudevents() {
    let s = Server::start();
    s.topic("t", 1);
    s.deploy("poison", "poison");
    s.subscribe("dl", json!({"topic": "t", "plugin": "poison"}));
    let (status, answer) = post_to(
        &s,
        "t",
        &[("content-type", "application/cloudevents+json")],
        json!({"specversion": "1.0", "id": "ev-1", "source": "/jobs", "type": "job.created",
               "partitionkey": "j1", "datacontenttype": "text/plain", "data": "dead on arrival"})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    s.wait_stats("dl", Duration::from_secs(60), |st| st["dead_lettered"] == 1);

    let path = "/v1/subscriptions/dl/dead-letters";
    let (status, content_type, batch) = s.send("GET", path, None, &[BATCH_ACCEPT], Body::None);
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/cloudevents-batch+json")
    );
    let events = batch.as_array().expect("a batch");
    assert_eq!(events.len(), 1, "{batch}");
    let event = &events[0];
    for (attribute, value) in [
        ("id", json!("ev-1")),
        ("source", json!("/jobs")),
        ("type", json!("job.created")),
        ("partitionkey", json!("j1")),
        ("data", json!("dead on arrival")),
        ("deadletterreason", json!("poison: dead on arrival")),
        ("attempts", json!(1)),
    ] {
        assert_eq!(event[attribute], value, "{attribute} of {event}");
    }
    assert!(event["deadlettertime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let one = ("accept", "application/cloudevents+json");
    let (status, content_type, single) =
        s.send("GET", &format!("{path}/ev-1"), None, &[one], Body::None);
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/cloudevents+json")
    );
    assert_eq!(&single, event);
    // Without the Accept, the usual shape.
    let plain = s.ok("GET", &format!("{path}/ev-1"), Body::None);
    assert_eq!(plain["reason"], "poison: dead on arrival");
}
