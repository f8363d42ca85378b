//! The webhook plugin against scripted HTTP answers, on virtual time.

use std::time::Duration;
use switchyard_harness::{build_component, Harness, HttpMock, NewMessage};

const URL: &str = "https://hooks.example.com/orders";

fn harness(script: &str) -> Harness {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    Harness::builder(&wasm)
        .config("url", URL)
        .max_attempts(5)
        .jitter(false)
        .backoff(
            switchyard_harness::Backoff::Fixed,
            Duration::from_millis(100),
            Duration::from_millis(100),
        )
        .http_mock(HttpMock::from_json(script).unwrap())
        .build()
        .unwrap()
}

#[test]
fn a_flaky_endpoint_is_retried_until_it_answers() {
    let mut h = harness(
        r#"[{"method": "POST", "url": "https://hooks.example.com/",
             "responses": [{"status": 503}, {"status": 429, "headers": {"retry-after": "7"}},
                           {"status": 204}]}]"#,
    );
    h.publish(
        NewMessage::new("{}")
            .id("m1")
            .key("k")
            .header("content-type", "application/json"),
    )
    .unwrap();
    h.run();
    let attempts = h.attempts_of("m1");
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retry", "retry", "ack"]);
    // 503: the subscription's backoff (100 ms); 429: its Retry-After (7 s).
    assert_eq!(attempts[1].at_ms - attempts[0].at_ms, 100);
    assert_eq!(attempts[2].at_ms - attempts[1].at_ms, 7000);
    assert_eq!(attempts[0].http.len(), 1);
    assert_eq!(attempts[0].http[0].method, "POST");
    assert_eq!(attempts[0].http[0].target, "https://hooks.example.com:443");
    assert_eq!(attempts[0].http[0].status, Some(503));
    assert_eq!(attempts[2].http[0].status, Some(204));
    assert_eq!(attempts[2].state, "acked");
}

#[test]
fn a_client_error_dead_letters_with_the_status_and_body() {
    let mut h = harness(
        r#"[{"url": "https://hooks.example.com/", "responses": [{"status": 422, "body": "amount must be positive"}]}]"#,
    );
    h.publish(NewMessage::new("{}").id("m1")).unwrap();
    h.run();
    let dead = h.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "status 422: amount must be positive");
    assert_eq!(h.attempts_of("m1").len(), 1);
}

#[test]
fn transport_failures_retry_and_refusals_dead_letter() {
    let mut h = harness(
        r#"[{"url": "https://hooks.example.com/", "responses": [{"error": "connection-refused"}, {"error": "timeout"}, {"status": 200}]}]"#,
    );
    h.publish(NewMessage::new("a").id("m1")).unwrap();
    h.run();
    let outcomes: Vec<String> = h
        .attempts_of("m1")
        .iter()
        .map(|a| a.outcome.clone())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "ack"]);
    let first = &h.attempts_of("m1")[0];
    assert!(first.http[0]
        .error
        .as_deref()
        .unwrap()
        .starts_with("connection-refused"));

    // A URL no rule answers is denied, as outside the allow-list.
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm)
        .config("url", "https://elsewhere.example.net/x")
        .build()
        .unwrap();
    h.publish(NewMessage::new("a").id("m2")).unwrap();
    h.run();
    let dead = h.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("refused by the host"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[0].reason.contains("HttpRequestDenied"),
        "{}",
        dead[0].reason
    );
}

#[test]
fn a_missing_url_dead_letters_at_once() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::new(&wasm).unwrap();
    h.publish(NewMessage::new("a").id("m1")).unwrap();
    assert_eq!(h.dead_letters()[0].reason, "config `url` is not set");
}
