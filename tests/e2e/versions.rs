//! Plugin versions: a new upload is version N+1, subscriptions on `name`
//! switch to it between messages, subscriptions on `name@N` stay, and a
//! version in use cannot be deleted.

use crate::support::{Body, Server};
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn publish_ids(s: &Server, prefix: &str) {
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("{prefix}{i}"), "payload": "x"}))
        .collect();
    s.publish("v", batch);
}

fn ran(s: &Server, subscription: &str, id: &str) -> Value {
    let ledger = s.ok(
        "GET",
        &format!("/v1/subscriptions/{subscription}/messages/{id}"),
        Body::None,
    );
    ledger["attempts"][0]["plugin"].clone()
}

/// delivery.md V1, V2: hot swap at message boundaries, pinned versions, and
/// deletion refused (409) while in use.
#[test]
fn new_versions_switch_followers_while_pinned_subscriptions_stay() {
    let mut s = Server::start();
    s.topic("v", 1);
    s.topic("v.out", 1);
    s.deploy("fwd", "forwarder");
    s.subscribe(
        "follow",
        json!({"topic": "v", "plugin": "fwd", "ledger": "all"}),
    );
    s.subscribe(
        "pinned",
        json!({"topic": "v", "plugin": "fwd@1", "ledger": "all"}),
    );
    publish_ids(&s, "a");
    for sub in ["follow", "pinned"] {
        s.wait_stats(sub, LIMIT, |st| st["acked"] == 5);
    }
    // Other bytes under the same name: version 2.
    s.deploy("fwd", "counter");
    let info = s.ok("GET", "/v1/plugins/fwd", Body::None);
    assert_eq!(info["latest"], 2);
    let versions = info["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions
        .iter()
        .all(|v| v["digest"].as_str().unwrap().starts_with("sha256:")));
    assert_ne!(versions[0]["digest"], versions[1]["digest"]);
    publish_ids(&s, "b");
    for sub in ["follow", "pinned"] {
        s.wait_stats(sub, LIMIT, |st| st["acked"] == 10);
    }
    for i in 0..5 {
        assert_eq!(ran(&s, "follow", &format!("a{i}")), "fwd@1");
        assert_eq!(ran(&s, "follow", &format!("b{i}")), "fwd@2");
        assert_eq!(ran(&s, "pinned", &format!("b{i}")), "fwd@1");
    }
    // In use: pinned by `pinned`, followed (latest) by `follow`.
    for (reference, needle) in [
        ("fwd@1", "\"pinned\" pins fwd@1"),
        ("fwd@2", "\"follow\" follows the latest version"),
        ("fwd", "is in use"),
    ] {
        let (status, body) = s.call(
            "DELETE",
            &format!("/v1/plugins/{reference}"),
            None,
            Body::None,
        );
        assert_eq!(status, 409, "{reference}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
    s.ok("DELETE", "/v1/subscriptions/pinned", Body::None);
    s.ok("DELETE", "/v1/plugins/fwd@1", Body::None);
    let (status, _) = s.call("DELETE", "/v1/plugins/fwd@1", None, Body::None);
    assert_eq!(status, 404);
    let (status, _) = s.call("DELETE", "/v1/plugins/fwd@x", None, Body::None);
    assert_eq!(status, 400);
    // The deletion holds across a restart, and delivery goes on.
    s.terminate();
    s.restart();
    let info = s.ok("GET", "/v1/plugins/fwd", Body::None);
    assert_eq!(info["versions"].as_array().unwrap().len(), 1);
    assert_eq!(info["versions"][0]["version"], 2);
    publish_ids(&s, "c");
    s.wait_stats("follow", LIMIT, |st| st["acked"] == 15);
    assert_eq!(ran(&s, "follow", "c0"), "fwd@2");
    // Unused, a plugin can go entirely.
    s.ok("DELETE", "/v1/subscriptions/follow", Body::None);
    s.ok("DELETE", "/v1/plugins/fwd", Body::None);
    let (status, _) = s.call("GET", "/v1/plugins/fwd", None, Body::None);
    assert_eq!(status, 404);
}

/// Each version records what its plugin was written in, from the
/// component's producers metadata: one example per guest language.
#[test]
fn a_version_records_the_language_its_plugin_was_written_in() {
    let s = Server::start();
    for (example, language) in [
        ("example_rust", "Rust"),
        ("example_c", "C99"),
        ("example_js", "JavaScript"),
        ("example_python", "Python"),
    ] {
        s.deploy(example, example);
        let info = s.ok("GET", &format!("/v1/plugins/{example}"), Body::None);
        let languages = &info["versions"][0]["languages"];
        assert_eq!(languages[0], language, "{example}: {info}");
    }
}
