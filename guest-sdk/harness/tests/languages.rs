//! The example plugin in every supported language — Rust, C, Python and
//! JavaScript, each built from source by `./dev.sh` (`plugins/example-*`) —
//! passes the same behaviour test on the harness: forward, retry, dead
//! letter, kv, config, logs, and outbound HTTP against a scripted server.

use std::path::PathBuf;
use std::time::Duration;
use switchyard_harness::{build_component, Backoff, Harness, HttpMock, NewMessage};

/// The scripted server of the `action: call` message: busy once, then an echo.
const ECHO: &str = r#"[{"method": "POST", "url": "https://api.example.com/echo",
    "responses": [{"status": 503}, {"status": 200, "body": "pong"}]}]"#;

/// Where `./dev.sh` puts the plugins: beside this test's target directory.
fn plugin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps");
    target.join("wasm-plugins/wasm32-wasip2/release")
}

fn component(lang: &str) -> Vec<u8> {
    if lang == "rust" {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/example-rust");
        return build_component(dir).expect("building the Rust example");
    }
    let path = plugin_dir().join(format!("example_{lang}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; `./dev.sh plugins` builds the {lang} example from source",
            path.display()
        )
    })
}

fn check_example(lang: &str) {
    let wasm = component(lang);
    let mut h = Harness::builder(&wasm)
        .config("prefix", "p:")
        .config("url", "https://api.example.com/echo")
        .http_mock(HttpMock::from_json(ECHO).unwrap())
        .backoff(
            Backoff::Fixed,
            Duration::from_millis(10),
            Duration::from_millis(10),
        )
        .jitter(false)
        .build()
        .unwrap_or_else(|e| panic!("{lang}: {e}"));
    let messages = vec![
        NewMessage::new("hello")
            .id("fwd")
            .key("k1")
            .header("x", "y"),
        NewMessage::new("again")
            .id("retry")
            .key("k2")
            .header("action", "retry"),
        NewMessage::new("bye")
            .id("dead")
            .key("k3")
            .header("action", "dead"),
        NewMessage::new("one").id("c1").key("k4"),
        NewMessage::new("two").id("c2").key("k4"),
        NewMessage::new("three").id("c3").key("k4"),
        NewMessage::new("keyless").id("nokey"),
        NewMessage::new("ping")
            .id("call")
            .key("k5")
            .header("action", "call"),
    ];
    h.publish_all(messages).unwrap();
    h.run();
    let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8(v).unwrap());

    // Forward: to <topic>.out, same key, prefixed payload, headers + lang.
    let out = h.outputs("in.out");
    let mut payloads: Vec<&[u8]> = out.iter().map(|m| m.payload.as_slice()).collect();
    payloads.sort();
    let expected: [&[u8]; 7] = [
        b"p:again",
        b"p:hello",
        b"p:keyless",
        b"p:one",
        b"p:pong",
        b"p:three",
        b"p:two",
    ];
    assert_eq!(payloads, expected, "{lang}: outputs");
    let output = |payload: &[u8]| out.iter().find(|m| m.payload == payload).unwrap();
    let hello = output(b"p:hello");
    assert_eq!(hello.key.as_deref(), Some("k1"), "{lang}");
    assert!(
        hello.headers.contains(&("x".into(), "y".into())),
        "{lang}: {:?}",
        hello.headers
    );
    assert!(
        hello.headers.contains(&("lang".into(), lang.into())),
        "{lang}: {:?}",
        hello.headers
    );
    assert_eq!(
        output(b"p:keyless").key,
        None,
        "{lang}: no key stays no key"
    );
    // Logs, per attempt.
    assert!(
        h.attempts_of("fwd")[0]
            .logs
            .contains(&"info: handled fwd attempt 1".to_string()),
        "{lang}: {:?}",
        h.attempts_of("fwd")[0].logs
    );
    // Retry: twice, then ack; the failed attempts left no kv write.
    let retry: Vec<(&str, Option<&str>)> = h
        .attempts_of("retry")
        .iter()
        .map(|a| (a.outcome.as_str(), a.error.as_deref()))
        .collect();
    assert_eq!(
        retry,
        [
            ("retry", Some("retry: try again")),
            ("retry", Some("retry: try again")),
            ("ack", None)
        ],
        "{lang}"
    );
    assert_eq!(
        h.attempts_of("retry")[2].at_ms,
        20,
        "{lang}: fixed 10 ms backoff"
    );
    assert_eq!(text(h.kv("count/k2")).as_deref(), Some("1"), "{lang}");
    // Dead letter at once, nothing counted or published.
    let dead = h.dead_letters();
    assert_eq!(dead.len(), 1, "{lang}");
    assert_eq!(dead[0].message.id, "dead");
    assert_eq!(dead[0].reason, "dead on request", "{lang}");
    assert_eq!(h.kv("count/k3"), None, "{lang}");
    // Kv counts per key.
    assert_eq!(text(h.kv("count/k4")).as_deref(), Some("3"), "{lang}");
    assert_eq!(text(h.kv("count/k1")).as_deref(), Some("1"), "{lang}");
    assert_eq!(text(h.kv("count/-")).as_deref(), Some("1"), "{lang}");
    {
        // Outbound HTTP: a 503 is retried, the echo's body is forwarded.
        let call = h.attempts_of("call");
        let outcomes: Vec<(&str, Option<&str>)> = call
            .iter()
            .map(|a| (a.outcome.as_str(), a.error.as_deref()))
            .collect();
        assert_eq!(
            outcomes,
            [("retry", Some("retry: status 503")), ("ack", None)],
            "{lang}"
        );
        assert_eq!(call[0].http.len(), 1, "{lang}");
        assert_eq!(call[0].http[0].method, "POST", "{lang}");
        assert_eq!(call[0].http[0].target, "https://api.example.com:443");
        assert_eq!(call[0].http[0].status, Some(503), "{lang}");
        assert_eq!(call[1].http[0].status, Some(200), "{lang}");
        assert_eq!(text(h.kv("count/k5")).as_deref(), Some("1"), "{lang}");
    }
}

#[test]
fn rust_example_behaves() {
    check_example("rust");
}

#[test]
fn c_example_behaves() {
    check_example("c");
}

#[test]
fn python_example_behaves() {
    check_example("python");
}

#[test]
fn js_example_behaves() {
    check_example("js");
}
