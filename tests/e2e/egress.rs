//! Outbound HTTP from plugins (delivery.md E1–E6): the webhook plugin against
//! a local server on 127.0.0.1 started by the test.

use crate::origin::{Origin, BIG};
use crate::support::{Body, Options, Server};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A server whose operator allowed loopback, with the webhook plugin.
fn server(options: Options) -> Server {
    let s = Server::start_with(options);
    s.deploy("webhook", "webhook");
    s
}

fn loopback() -> Options {
    Options {
        egress_allow_cidr: vec!["127.0.0.0/8".into()],
        ..Options::default()
    }
}

/// A webhook subscription on `topic` sending to `url`.
fn hook(s: &Server, name: &str, topic: &str, url: &str, extra: Value) {
    s.topic(topic, 1);
    let mut spec = json!({
        "topic": topic,
        "plugin": "webhook",
        "config": {"url": url},
        "retry": {"max_attempts": 5, "initial_ms": 20, "max_ms": 20},
    });
    for (k, v) in extra.as_object().expect("an object") {
        spec[k] = v.clone();
    }
    s.subscribe(name, spec);
}

fn ledger(s: &Server, sub: &str, id: &str) -> Value {
    s.ok(
        "GET",
        &format!("/v1/subscriptions/{sub}/messages/{id}"),
        Body::None,
    )
}

fn dead_letter(s: &Server, sub: &str) -> Value {
    s.wait_stats(sub, WAIT, |st| st["dead_lettered"] == 1);
    let dead = s.dead_letters(sub);
    assert_eq!(dead.len(), 1, "{dead:?}");
    dead[0].clone()
}

/// E1, E3, E5: retries carry one idempotency key, each request is in the
/// ledger, and the metrics count them.
#[test]
fn webhook_retries_a_flaky_endpoint_with_one_idempotency_key() {
    let origin = Origin::start();
    let s = server(loopback());
    let url = origin.url("http", "/flaky/2");
    let allow = json!({"egress": {"allow": [origin.url("http", "")]}});
    hook(&s, "hooks", "orders", &url, allow);
    s.publish(
        "orders",
        vec![
            json!({"id": "m1", "key": "user-7", "payload": "{\"total\": 3}",
                    "headers": {"content-type": "application/json"}}),
        ],
    );
    let st = s.wait_stats("hooks", WAIT, |st| st["acked"] == 1);
    assert_eq!(st["retried"], 2);
    let seen = origin.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.headers["idempotency-key"], "hooks/m1");
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(request.headers["x-switchyard-id"], "m1");
        assert_eq!(request.headers["x-switchyard-key"], "user-7");
        assert_eq!(request.body, b"{\"total\": 3}");
    }
    let attempts: Vec<&str> = seen
        .iter()
        .map(|r| r.headers["x-switchyard-attempt"].as_str())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    // Each attempt's requests carry the attempt's trace context: the
    // message's trace, a span of each attempt's own (delivery.md P10).
    let stored = s.read_all("orders");
    let message = stored[0]["headers"]["traceparent"]
        .as_str()
        .expect("a traceparent");
    let trace = &message[3..35];
    let spans: std::collections::HashSet<&str> = seen
        .iter()
        .map(|r| {
            let context = r.headers["traceparent"].as_str();
            assert_eq!(&context[3..35], trace, "{context} continues {message}");
            &context[36..52]
        })
        .collect();
    assert_eq!(spans.len(), 3, "a span per attempt: {spans:?}");
    assert!(!spans.contains(&message[36..52]));

    let entry = ledger(&s, "hooks", "m1");
    assert_eq!(entry["state"], "acked");
    let attempts = entry["attempts"].as_array().expect("attempts");
    let statuses: Vec<u64> = attempts
        .iter()
        .map(|a| a["http"][0]["status"].as_u64().expect("a status"))
        .collect();
    assert_eq!(statuses, [503, 503, 200]);
    let target = format!("http://127.0.0.1:{}", origin.addr.port());
    assert_eq!(attempts[0]["http"][0]["target"], target.as_str());
    assert_eq!(attempts[0]["outcome"], "retry");
    assert_eq!(attempts[2]["outcome"], "ack");

    let (_, metrics) = s.get_text("/metrics");
    assert!(
        metrics
            .contains(r#"switchyard_egress_requests_total{subscription="hooks",outcome="5xx"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"switchyard_egress_requests_total{subscription="hooks",outcome="2xx"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"switchyard_egress_request_duration_seconds_count{subscription="hooks"} 3"#
        ),
        "{metrics}"
    );
}

/// E2: no allow-list, or a destination outside it, is denied, and the
/// ledger says why.
#[test]
fn requests_outside_the_allow_list_are_denied() {
    let origin = Origin::start();
    let s = server(loopback());
    hook(&s, "none", "a", &origin.url("http", "/x"), json!({}));
    hook(
        &s,
        "other",
        "b",
        &origin.url("http", "/x"),
        json!({"egress": {"allow": ["https://api.example.com"]}}),
    );
    s.publish("a", vec![json!({"id": "m1", "payload": "x"})]);
    s.publish("b", vec![json!({"id": "m2", "payload": "x"})]);
    let target = format!("http://127.0.0.1:{}", origin.addr.port());
    for (sub, why) in [
        ("none", "no egress settings"),
        ("other", "not in the subscription's egress.allow"),
    ] {
        let dead = dead_letter(&s, sub);
        assert!(
            dead["reason"]
                .as_str()
                .unwrap()
                .contains("refused by the host"),
            "{dead}"
        );
        let call = &dead["attempts"][0]["http"][0];
        assert_eq!(call["target"], target.as_str());
        let error = call["error"].as_str().expect("an error");
        assert!(error.starts_with("HTTP-request-denied"), "{error}");
        assert!(error.contains(why), "{error}");
    }
    assert!(
        origin.seen().is_empty(),
        "a denied request reached the origin"
    );
    let (_, metrics) = s.get_text("/metrics");
    assert!(
        metrics.contains(
            r#"switchyard_egress_requests_total{subscription="none",outcome="denied"} 1"#
        ),
        "{metrics}"
    );
}

/// E2: loopback allowed by the subscription but not by the operator is
/// prohibited, however it is spelled.
#[test]
fn private_addresses_need_the_operator() {
    let origin = Origin::start();
    let s = server(Options::default());
    let port = origin.addr.port();
    let spellings = [
        ("ip", format!("http://127.0.0.1:{port}")),
        ("mapped", format!("http://[::ffff:127.0.0.1]:{port}")),
        ("name", format!("http://localhost:{port}")),
    ];
    for (i, (name, base)) in spellings.iter().enumerate() {
        hook(
            &s,
            name,
            &format!("t{i}"),
            &format!("{base}/x"),
            json!({"egress": {"allow": [base]}}),
        );
        s.publish(&format!("t{i}"), vec![json!({"id": "m", "payload": "x"})]);
    }
    for (name, _) in &spellings {
        let dead = dead_letter(&s, name);
        let error = dead["attempts"][0]["http"][0]["error"]
            .as_str()
            .expect("an error")
            .to_string();
        assert!(
            error.starts_with("destination-IP-prohibited"),
            "{name}: {error}"
        );
        assert!(error.contains("--egress-allow-cidr"), "{name}: {error}");
    }
    assert!(
        origin.seen().is_empty(),
        "a prohibited request reached the origin"
    );
}

/// E4: a server that never answers cannot hold an attempt past its
/// `timeout_ms`, and a body over the cap fails the attempt.
#[test]
fn deadlines_and_body_caps_bound_each_request() {
    let origin = Origin::start();
    let s = server(loopback());
    let allow = origin.url("http", "");
    let once = json!({"max_attempts": 1});
    hook(
        &s,
        "hang",
        "a",
        &origin.url("http", "/hang"),
        json!({"timeout_ms": 300, "retry": once, "egress": {"allow": [allow]}}),
    );
    for (name, topic, path) in [("big", "b", "/big"), ("biglen", "c", "/big-length")] {
        hook(
            &s,
            name,
            topic,
            &origin.url("http", path),
            json!({"retry": once, "egress": {"allow": [allow]}}),
        );
    }
    for topic in ["a", "b", "c"] {
        s.publish(topic, vec![json!({"id": "m", "payload": "x"})]);
    }
    let dead = dead_letter(&s, "hang");
    let attempt = &dead["attempts"][0];
    let took = attempt["duration_us"].as_u64().unwrap();
    assert!(took < 1_000_000, "the attempt took {took} µs: {dead}");
    let outcome = attempt["outcome"].as_str().unwrap();
    let error = attempt["http"][0]["error"].as_str().unwrap_or_default();
    assert!(
        outcome == "timeout" || error.starts_with("HTTP-response-timeout"),
        "{dead}"
    );
    for name in ["big", "biglen"] {
        let dead = dead_letter(&s, name);
        let call = &dead["attempts"][0]["http"][0];
        let error = call["error"].as_str().expect("an error");
        assert!(
            error.starts_with("HTTP-response-body-size"),
            "{name}: {dead}"
        );
        assert!(call["response_bytes"].as_u64().unwrap() <= BIG as u64);
    }
}

/// E6: https to a local server whose certificate the operator's CA signed.
#[test]
fn https_works_with_an_operator_trust_root() {
    let origin = Origin::start_tls();
    let ca = crate::support::workspace().join("tests/e2e/tls/ca.pem");
    let s = server(Options {
        egress_allow_cidr: vec!["127.0.0.0/8".into()],
        egress_ca_file: Some(ca),
        ..Options::default()
    });
    let base = format!("https://localhost:{}", origin.addr.port());
    hook(
        &s,
        "tls",
        "a",
        &format!("{base}/ok"),
        json!({"egress": {"allow": [base]}}),
    );
    s.publish("a", vec![json!({"id": "m1", "payload": "secret"})]);
    s.wait_stats("tls", WAIT, |st| st["acked"] == 1);
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"secret");

    // Without the operator's root the certificate is not trusted.
    let plain = server(loopback());
    hook(
        &plain,
        "tls",
        "a",
        &format!("{base}/ok"),
        json!({"retry": {"max_attempts": 1}, "egress": {"allow": [base]}}),
    );
    plain.publish("a", vec![json!({"id": "m2", "payload": "x"})]);
    let dead = dead_letter(&plain, "tls");
    let error = dead["attempts"][0]["http"][0]["error"]
        .as_str()
        .expect("an error");
    assert!(error.starts_with("TLS-certificate-error"), "{dead}");
    assert_eq!(origin.seen().len(), 1);
}

/// E1, E2: the example plugin in Rust, C, Python and JavaScript (the SDK's
/// client, the generated C bindings, `switchyard_http.py`, and plain
/// `fetch`) behaves the same against
/// a real server: a 503 is retried with the same idempotency key, and the
/// answer is forwarded.
#[test]
fn examples_in_four_languages_reach_a_local_server() {
    let origin = Origin::start();
    let s = Server::start_with(loopback());
    let dir = crate::support::plugin_dir();
    for lang in ["rust", "c", "python", "js"] {
        let path = dir.join(format!("example_{lang}.wasm"));
        let wasm = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; `./dev.sh plugins` builds the examples",
                path.display()
            )
        });
        let (status, body) = s.call(
            "PUT",
            &format!("/v1/plugins/example-{lang}"),
            None,
            Body::Raw(Some("application/wasm"), wasm),
        );
        assert!(status == 200 || status == 201, "{lang}: {status} {body}");
        let topic = format!("in-{lang}");
        s.topic(&topic, 1);
        s.topic(&format!("{topic}.out"), 1);
        let url = origin.url("http", &format!("/flaky/1/{lang}"));
        s.subscribe(
            lang,
            json!({"topic": topic, "plugin": format!("example-{lang}"),
                   "config": {"url": url, "prefix": "got:"},
                   // An interpreted plugin's fresh instance on a machine
                   // the whole suite loads can take seconds; the test is
                   // about the retried 503, not the attempt budget.
                   "timeout_ms": 60_000,
                   "retry": {"initial_ms": 20, "max_ms": 20},
                   "egress": {"allow": [origin.url("http", "")]}}),
        );
        s.publish(
            &topic,
            vec![json!({"id": "m1", "key": "k", "payload": "ping", "headers": {"action": "call"}})],
        );
    }
    for lang in ["rust", "c", "python", "js"] {
        let st = s.wait_stats(lang, WAIT, |st| st["acked"] == 1);
        assert_eq!(st["retried"], 1, "{lang}");
        let seen: Vec<_> = origin
            .seen()
            .into_iter()
            .filter(|r| r.path.ends_with(&format!("/{lang}")))
            .collect();
        assert_eq!(seen.len(), 2, "{lang}: {seen:?}");
        for r in &seen {
            assert_eq!(r.method, "POST", "{lang}");
            assert_eq!(r.body, b"ping", "{lang}");
            assert_eq!(r.headers["idempotency-key"], format!("{lang}/m1"), "{lang}");
        }
        let out = s.read_all(&format!("in-{lang}.out"));
        assert_eq!(out.len(), 1, "{lang}");
        assert_eq!(out[0]["payload"], "got:ok", "{lang}");
        let entry = ledger(&s, lang, "m1");
        assert_eq!(entry["attempts"][0]["error"], "retry: status 503", "{lang}");
        assert_eq!(entry["attempts"][0]["http"][0]["status"], 503, "{lang}");
    }
}

/// E2: an attempt makes at most `egress.max_requests` requests; the refused
/// rest are counted in one ledger line, not recorded one by one.
#[test]
fn an_attempt_makes_at_most_max_requests() {
    let origin = Origin::start();
    let s = Server::start_with(loopback());
    s.deploy("caller", "caller");
    s.topic("t", 1);
    s.subscribe(
        "calls",
        json!({"topic": "t", "plugin": "caller",
               "config": {"url": origin.url("http", "/ok"), "count": "500"},
               "retry": {"max_attempts": 1},
               "egress": {"allow": [origin.url("http", "")], "max_requests": 3}}),
    );
    s.publish("t", vec![json!({"id": "m1", "payload": "x"})]);
    let dead = dead_letter(&s, "calls");
    assert_eq!(origin.seen().len(), 3);
    let error = dead["attempts"][0]["error"].as_str().unwrap();
    assert!(error.ends_with("2xx:3 denied:497"), "{error}");
    let calls = dead["attempts"][0]["http"].as_array().unwrap();
    assert_eq!(calls.len(), 4, "{calls:?}");
    let first = calls[0]["error"].as_str().unwrap();
    assert!(
        first.contains("497 more requests over egress.max_requests"),
        "{first}"
    );
    assert!(calls[1..].iter().all(|c| c["status"] == 200));
    let (_, metrics) = s.get_text("/metrics");
    assert!(
        metrics.contains(
            r#"switchyard_egress_requests_total{subscription="calls",outcome="denied"} 497"#
        ),
        "{metrics}"
    );
}
