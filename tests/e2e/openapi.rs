//! `GET /v1/openapi.json`: served without a token, a valid OpenAPI 3.1
//! document, and strict enough that an answer of the wrong shape, status or
//! content type is caught (every answer of the suite is checked against it;
//! see `contract.rs`).

use crate::support::{msg, plugin, wait_for, Body, Options, Server};
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

fn document(s: &Server) -> Value {
    let (status, text) = s.get_text("/v1/openapi.json");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn the_document_is_public_and_names_every_schema_it_uses() {
    let s = Server::start_with(Options {
        token: Some("admin-secret".into()),
        ..Options::default()
    });
    let doc = document(&s);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Switchyard");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    // The bearer scheme, and the routes that need no token say so.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/v1/openapi.json"]["get"]["security"],
        json!([])
    );
    // Without the token the API refuses, and says so as the document does.
    let (status, body) = s.call("GET", "/v1/topics", Some(""), Body::None);
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    // Every operation has an id, a tag and its answers.
    let mut operations = 0;
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            operations += 1;
            assert!(operation["operationId"].is_string(), "{method} {template}");
            assert!(operation["tags"][0].is_string(), "{method} {template}");
            assert!(
                operation["responses"]["500"].is_object(),
                "{method} {template}"
            );
        }
    }
    assert_eq!(operations, 34);
}

#[test]
fn answers_of_another_shape_status_or_type_are_caught() {
    let s = Server::start();
    s.topic("t", 1);
    s.publish("t", vec![msg("k", "hello")]);
    let contract = crate::contract::get(|| document(&s));
    let (status, topics) = s.call("GET", "/v1/topics", None, Body::None);
    assert_eq!(status, 200);
    // The real answer passes.
    contract.check("GET", "/v1/topics", 200, "application/json", &topics);
    let rejects = |method: &str, path: &str, status: u16, content_type: &str, body: Value| {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            contract.check(method, path, status, content_type, &body)
        }));
        assert!(
            outcome.is_err(),
            "{method} {path} {status} {content_type} {body} was accepted"
        );
    };
    // A field of the wrong type, a missing field, a negative offset.
    let mut wrong = topics.clone();
    wrong["topics"][0]["partitions"] = json!("one");
    rejects("GET", "/v1/topics", 200, "application/json", wrong);
    let mut missing = topics.clone();
    missing["topics"][0]
        .as_object_mut()
        .unwrap()
        .remove("offsets");
    rejects("GET", "/v1/topics", 200, "application/json", missing);
    let read = s.ok("GET", "/v1/topics/t/partitions/0/messages", Body::None);
    let mut negative = read.clone();
    negative["messages"][0]["offset"] = json!(-1);
    let path = "/v1/topics/t/partitions/0/messages";
    rejects("GET", path, 200, "application/json", negative);
    // A status the operation does not document, a content type it does not
    // give, an error body that is not the error shape.
    rejects("GET", "/v1/topics", 409, "application/json", topics.clone());
    rejects("GET", "/v1/topics", 200, "application/xml", topics.clone());
    rejects(
        "GET",
        "/v1/topics/t",
        404,
        "application/json",
        json!({"message": "x"}),
    );
    // A path or method the document does not know answers only 404 / 405.
    rejects("GET", "/v1/nothing", 200, "application/json", json!({}));
    rejects("PATCH", "/v1/topics/t", 200, "application/json", topics);
}

/// One call of every documented operation that answers JSON, each answer
/// checked against the document by `Server::call`.
#[test]
fn every_operation_answers_as_documented() {
    let s = Server::start();
    let ok = |method: &str, path: &str, body: Body| s.ok(method, path, body);
    let spec = |v: Value| Body::Json(v);
    // The broker may still be opening (503, checked against the document too).
    wait_for(Duration::from_secs(60), "readiness", || {
        (s.call("GET", "/readyz", None, Body::None).0 == 200).then_some(())
    });
    for path in ["/healthz", "/v1/openapi.json", "/v1/host"] {
        ok("GET", path, Body::None);
    }
    ok("PUT", "/v1/topics/t", spec(json!({"partitions": 2})));
    // Where the counter plugin forwards.
    ok("PUT", "/v1/topics/t.out", Body::None);
    ok(
        "PUT",
        "/v1/topics/t",
        spec(json!({"partitions": 2, "retention_ms": 60000})),
    );
    ok("GET", "/v1/topics", Body::None);
    ok("GET", "/v1/topics/t", Body::None);
    ok("POST", "/v1/topics/t/messages", spec(msg("k", "hello")));
    let batch = json!({"messages": [
        {"id": "dead-1", "key": "a", "payload": "dead"},
        {"id": "count-1", "key": "b", "payload": "count"},
    ]});
    ok("POST", "/v1/topics/t/messages", spec(batch));
    ok(
        "GET",
        "/v1/topics/t/partitions/0/messages?limit=10",
        Body::None,
    );
    let wasm = |name: &str| Body::Raw(Some("application/wasm"), plugin(name));
    ok("PUT", "/v1/plugins/poison", wasm("poison"));
    ok("PUT", "/v1/plugins/counter", wasm("counter"));
    ok("GET", "/v1/plugins", Body::None);
    ok("GET", "/v1/plugins/poison", Body::None);
    let dl = json!({"topic": "t", "plugin": "poison", "ledger": "all"});
    ok("PUT", "/v1/subscriptions/dl", spec(dl.clone()));
    ok(
        "PUT",
        "/v1/subscriptions/count",
        spec(json!({"topic": "t", "plugin": "counter"})),
    );
    ok(
        "PUT",
        "/v1/subscriptions/pull",
        spec(json!({"topic": "t", "mode": "pull"})),
    );
    s.wait_stats("dl", Duration::from_secs(60), |st| st["dead_lettered"] == 1);
    s.wait_stats("count", Duration::from_secs(60), |st| st["acked"] == 3);
    ok("GET", "/v1/subscriptions", Body::None);
    ok("GET", "/v1/subscriptions/dl", Body::None);
    ok("POST", "/v1/subscriptions/dl/pause", Body::None);
    ok("POST", "/v1/subscriptions/dl/resume", Body::None);
    let kv = ok("GET", "/v1/subscriptions/count/kv?prefix=total", Body::None);
    assert_eq!(kv["entries"][0]["key"], "total", "{kv}");
    ok("GET", "/v1/subscriptions/dl/messages/dead-1", Body::None);
    ok("GET", "/v1/subscriptions/dl/dead-letters", Body::None);
    ok(
        "GET",
        "/v1/subscriptions/dl/dead-letters/dead-1",
        Body::None,
    );
    let redriven = ok(
        "POST",
        "/v1/subscriptions/dl/dead-letters/redrive",
        Body::None,
    );
    assert_eq!(redriven["redriven"], 1);
    s.wait_stats("dl", Duration::from_secs(60), |st| st["dead_lettered"] == 2);
    ok(
        "DELETE",
        "/v1/subscriptions/dl/dead-letters/dead-1",
        Body::None,
    );
    ok("DELETE", "/v1/subscriptions/dl/dead-letters", Body::None);
    let leases = ok(
        "POST",
        "/v1/subscriptions/pull/lease",
        spec(json!({"max": 2})),
    );
    let lease = leases["leases"][0]["lease_id"].clone();
    assert!(lease.is_string(), "{leases}");
    ok(
        "POST",
        "/v1/subscriptions/pull/settle",
        spec(json!({"ack": [lease]})),
    );
    ok(
        "PUT",
        "/v1/subscriptions/dl",
        spec(json!({"topic": "t", "plugin": "poison"})),
    );
    ok("DELETE", "/v1/subscriptions/dl", Body::None);
    ok("DELETE", "/v1/subscriptions/count", Body::None);
    ok("DELETE", "/v1/plugins/poison", Body::None);
    ok("DELETE", "/v1/topics/t?force=true", Body::None);

    let contract = crate::contract::get(|| document(&s));
    let missing: Vec<_> = contract
        .json_operations()
        .difference(&contract.checked())
        .cloned()
        .collect();
    assert!(missing.is_empty(), "never checked: {missing:?}");
}
