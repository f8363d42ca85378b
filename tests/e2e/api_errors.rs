//! Bad input gets the right status and a JSON error body; auth is enforced.

use crate::support::{Body, Options, Server};
use serde_json::json;

/// Send a request and check its status and error code.
fn check(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
    status: u16,
    code: &str,
) {
    let (got, value) = s.call(method, path, token, body);
    assert_eq!(got, status, "{method} {path}: {value}");
    if !code.is_empty() {
        assert_eq!(value["error"]["code"], code, "{method} {path}: {value}");
        assert!(value["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let s = Server::start();
    s.topic("t", 2);
    let json = |v| Body::Json(v);
    let raw = |ct: &'static str, b: &[u8]| Body::Raw(Some(ct), b.to_vec());
    check(
        &s,
        "POST",
        "/v1/topics/nope/messages",
        None,
        json(json!({"payload": "x"})),
        404,
        "not_found",
    );
    check(
        &s,
        "POST",
        "/v1/topics/t/messages",
        None,
        raw("application/json", b"{not json"),
        400,
        "malformed",
    );
    check(
        &s,
        "POST",
        "/v1/topics/t/messages",
        None,
        json(json!({"messages": []})),
        400,
        "",
    );
    check(
        &s,
        "POST",
        "/v1/topics/t/messages",
        None,
        json(json!({"payload": "x", "payload_base64": "eA=="})),
        400,
        "",
    );
    check(
        &s,
        "POST",
        "/v1/topics/t/messages",
        None,
        raw("text/xml", b"<m/>"),
        415,
        "",
    );
    let big = "x".repeat((1 << 20) + 1);
    check(
        &s,
        "POST",
        "/v1/topics/t/messages",
        None,
        json(json!({"payload": big})),
        413,
        "too_large",
    );
    check(
        &s,
        "GET",
        "/v1/topics/t/partitions/9/messages",
        None,
        Body::None,
        404,
        "not_found",
    );
    check(
        &s,
        "PUT",
        "/v1/topics/t",
        None,
        json(json!({"partitions": 3})),
        409,
        "conflict",
    );
    check(
        &s,
        "PUT",
        "/v1/topics/bad%2Fname",
        None,
        json(json!({})),
        400,
        "",
    );
    check(
        &s,
        "PUT",
        "/v1/plugins/junk",
        None,
        raw("application/wasm", b"not wasm at all"),
        400,
        "",
    );
    // A core module (not a component) is refused with a clear message.
    check(
        &s,
        "PUT",
        "/v1/plugins/core",
        None,
        raw("application/wasm", b"\0asm\x01\0\0\0"),
        400,
        "",
    );
    check(
        &s,
        "PUT",
        "/v1/subscriptions/s",
        None,
        json(json!({"topic": "t", "plugin": "missing"})),
        404,
        "not_found",
    );
    check(
        &s,
        "PUT",
        "/v1/subscriptions/s",
        None,
        json(json!({"topic": "t"})),
        400,
        "",
    );
    check(
        &s,
        "GET",
        "/v1/subscriptions/none",
        None,
        Body::None,
        404,
        "not_found",
    );
    // Nothing acknowledged was lost along the way, and the host still serves.
    let ok = s.publish("t", vec![json!({"payload": "after errors"})]);
    assert_eq!(ok.len(), 1);
    check(&s, "GET", "/healthz", None, Body::None, 200, "");
}

#[test]
fn tokens_and_roles_are_enforced() {
    let s = Server::start_with(Options {
        token: Some("admin-secret".into()),
        read_token: Some("reader".into()),
        publish_token: Some("producer".into()),
    });
    // `Some("")`: no Authorization header.
    check(
        &s,
        "GET",
        "/v1/topics",
        Some(""),
        Body::None,
        401,
        "unauthorized",
    );
    check(
        &s,
        "GET",
        "/v1/topics",
        Some("wrong"),
        Body::None,
        401,
        "unauthorized",
    );
    check(
        &s,
        "PUT",
        "/v1/topics/t",
        Some("admin-secret"),
        Body::Json(json!({})),
        201,
        "",
    );
    check(&s, "GET", "/v1/topics", Some("reader"), Body::None, 200, "");
    check(
        &s,
        "POST",
        "/v1/topics/t/messages",
        Some("reader"),
        Body::Json(json!({"payload": "x"})),
        403,
        "forbidden",
    );
    check(
        &s,
        "POST",
        "/v1/topics/t/messages",
        Some("producer"),
        Body::Json(json!({"payload": "x"})),
        200,
        "",
    );
    check(
        &s,
        "PUT",
        "/v1/topics/u",
        Some("producer"),
        Body::Json(json!({})),
        403,
        "forbidden",
    );
    check(&s, "GET", "/healthz", Some(""), Body::None, 200, "");
}
