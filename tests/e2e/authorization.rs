//! The authorization matrix: every route × {no token, a wrong token, each
//! role} gets the documented answer — 401 without a valid token, 403 for a
//! role that may not, anything else for one that may — and a refused call
//! changes nothing (the store's state read before and after is the same).

use crate::support::{msg, plugin, Body, Options, Server};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token";
const READ: &str = "read-token";
const PUBLISH: &str = "publish-token";
const CONSUME: &str = "consume-token";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Needs {
    /// Health and metrics: no token at all.
    Nothing,
    /// Any role (GET).
    Read,
    Publish,
    Consume,
    Admin,
}

/// A route to call: method, path, a fresh body for each call, what it needs.
type Route = (&'static str, &'static str, Box<dyn Fn() -> Body>, Needs);

/// Whether a token of `role` may make a call that needs `needs`.
fn allowed(role: &str, needs: Needs) -> bool {
    match needs {
        Needs::Nothing | Needs::Read => true,
        Needs::Publish => role == PUBLISH || role == ADMIN,
        Needs::Consume => role == CONSUME || role == ADMIN,
        Needs::Admin => role == ADMIN,
    }
}

/// What a refused call could have changed: topics with their offsets,
/// plugins, subscriptions with their stats, dead letters, kv.
fn state(s: &Server) -> Value {
    let get = |path: &str| s.call("GET", path, Some(ADMIN), Body::None).1;
    let mut subscriptions = get("/v1/subscriptions");
    // A rate moves by itself as time passes: it is not state.
    for sub in subscriptions["subscriptions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        sub["stats"]
            .as_object_mut()
            .map(|stats| stats.remove("acked_per_sec"));
    }
    let mut topics = get("/v1/topics");
    // A size is the store's estimate, which moves as it flushes and
    // compacts; it is not state either.
    for topic in topics["topics"].as_array_mut().into_iter().flatten() {
        topic.as_object_mut().map(|t| t.remove("bytes"));
    }
    json!({
        "topics": topics,
        "plugins": get("/v1/plugins"),
        "subscriptions": subscriptions,
        "dead": get("/v1/subscriptions/dl/dead-letters"),
        "kv": get("/v1/subscriptions/push/kv"),
    })
}

/// [`state`] once nothing is moving: every push subscription has finished
/// every stored message (its `lag` alone may not show one appended a
/// moment ago, until its runner wakes) and two reads agree.
fn quiet_state(s: &Server) -> Value {
    crate::support::wait_for(std::time::Duration::from_secs(60), "a quiet host", || {
        let first = state(s);
        let stored: u64 = first["topics"]["topics"][0]["offsets"]
            .as_array()?
            .iter()
            .filter_map(Value::as_u64)
            .sum();
        let subscriptions = first["subscriptions"]["subscriptions"].as_array()?;
        let finished = |stats: &Value| {
            ["acked", "dead_lettered", "failed", "filtered"]
                .iter()
                .filter_map(|k| stats[*k].as_u64())
                .sum::<u64>()
        };
        let idle = subscriptions
            .iter()
            .filter(|sub| sub["mode"] != "pull")
            .all(|sub| {
                sub["stats"]["lag"] == 0
                    && sub["stats"]["in_flight"] == 0
                    && finished(&sub["stats"]) == stored
            });
        (idle && state(s) == first).then_some(first)
    })
}

#[test]
fn every_route_answers_each_role_as_documented_and_refusals_change_nothing() {
    let s = Server::start_with(Options {
        token: Some(ADMIN.into()),
        read_token: Some(READ.into()),
        publish_token: Some(PUBLISH.into()),
        consume_token: Some(CONSUME.into()),
        ..Options::default()
    });
    s.topic("t", 1);
    s.deploy("noop", "noop");
    s.deploy("poison", "poison");
    s.subscribe("push", json!({"topic": "t", "plugin": "noop"}));
    s.subscribe("pull", json!({"topic": "t", "mode": "pull"}));
    s.subscribe("dl", json!({"topic": "t", "plugin": "poison"}));
    s.publish(
        "t",
        vec![json!({"id": "m1", "key": "k", "payload": "dead"})],
    );
    s.wait_stats("dl", std::time::Duration::from_secs(60), |st| {
        st["dead_lettered"] == 1
    });
    s.wait_stats("push", std::time::Duration::from_secs(60), |st| {
        st["acked"] == 1
    });

    let j = |v: Value| Body::Json(v);
    let wasm = || Body::Raw(Some("application/wasm"), plugin("noop"));
    #[rustfmt::skip]
    let routes: Vec<Route> = vec![
        ("GET", "/healthz", Box::new(|| Body::None), Needs::Nothing),
        ("GET", "/readyz", Box::new(|| Body::None), Needs::Nothing),
        ("GET", "/metrics", Box::new(|| Body::None), Needs::Nothing),
        ("GET", "/v1/topics", Box::new(|| Body::None), Needs::Read),
        ("GET", "/v1/topics/t", Box::new(|| Body::None), Needs::Read),
        ("PUT", "/v1/topics/t2", Box::new(move || j(json!({}))), Needs::Admin),
        ("DELETE", "/v1/topics/t2", Box::new(|| Body::None), Needs::Admin),
        ("POST", "/v1/topics/t/messages", Box::new(move || j(msg("k", "x"))), Needs::Publish),
        ("GET", "/v1/topics/t/partitions/0/messages", Box::new(|| Body::None), Needs::Read),
        ("GET", "/v1/plugins", Box::new(|| Body::None), Needs::Read),
        ("GET", "/v1/plugins/noop", Box::new(|| Body::None), Needs::Read),
        ("PUT", "/v1/plugins/other", Box::new(wasm), Needs::Admin),
        ("DELETE", "/v1/plugins/other", Box::new(|| Body::None), Needs::Admin),
        ("GET", "/v1/subscriptions", Box::new(|| Body::None), Needs::Read),
        ("GET", "/v1/subscriptions/push", Box::new(|| Body::None), Needs::Read),
        ("PUT", "/v1/subscriptions/new", Box::new(move || j(json!({"topic": "t", "plugin": "noop"}))), Needs::Admin),
        ("DELETE", "/v1/subscriptions/new", Box::new(|| Body::None), Needs::Admin),
        ("GET", "/v1/subscriptions/dl/dead-letters", Box::new(|| Body::None), Needs::Read),
        ("GET", "/v1/subscriptions/dl/dead-letters/m1", Box::new(|| Body::None), Needs::Read),
        ("GET", "/v1/subscriptions/dl/messages/m1", Box::new(|| Body::None), Needs::Read),
        ("GET", "/v1/subscriptions/push/kv", Box::new(|| Body::None), Needs::Read),
        ("POST", "/v1/subscriptions/pull/lease", Box::new(move || j(json!({"max": 1, "lease_ms": 3_600_000}))), Needs::Consume),
        ("POST", "/v1/subscriptions/pull/settle", Box::new(move || j(json!({"ack": ["no-such-lease"]}))), Needs::Consume),
        ("POST", "/v1/subscriptions/push/pause", Box::new(|| Body::None), Needs::Admin),
        ("POST", "/v1/subscriptions/push/resume", Box::new(|| Body::None), Needs::Admin),
        ("POST", "/v1/subscriptions/dl/dead-letters/redrive", Box::new(move || j(json!({"ids": ["none"]}))), Needs::Admin),
        ("DELETE", "/v1/subscriptions/dl/dead-letters/none", Box::new(|| Body::None), Needs::Admin),
        ("DELETE", "/v1/subscriptions/dl/dead-letters", Box::new(|| Body::None), Needs::Admin),
    ];
    // Leases last longer than the test: one expiring between the state
    // read before a refused call and the one after would look like a change.
    let callers = ["", "wrong-token", READ, PUBLISH, CONSUME, ADMIN];
    let mut checked = 0;
    for (method, path, body, needs) in &routes {
        // Refusals first, each against the state just before it.
        let mut callers = callers.to_vec();
        callers.sort_by_key(|c| allowed(c, *needs));
        for caller in callers {
            let before = quiet_state(&s);
            let (status, answer) = s.call(method, path, Some(caller), body());
            let what = format!("{method} {path} as {caller:?}: {status} {answer}");
            let valid = [READ, PUBLISH, CONSUME, ADMIN].contains(&caller);
            if *needs == Needs::Nothing || (valid && allowed(caller, *needs)) {
                assert!(status != 401 && status != 403, "{what}");
            } else {
                let expected = if valid { 403 } else { 401 };
                assert_eq!(status, expected, "{what}");
                let code = if valid { "forbidden" } else { "unauthorized" };
                assert_eq!(answer["error"]["code"], code, "{what}");
                assert_eq!(
                    quiet_state(&s),
                    before,
                    "a refused call changed nothing: {what}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * 6);
    // Live streams answer a valid token with an endless stream: only their
    // refusals are checked.
    for path in ["/v1/topics/t/tail", "/v1/subscriptions/push/events"] {
        for caller in ["", "wrong-token"] {
            let (status, answer) = s.call("GET", path, Some(caller), Body::None);
            assert_eq!(status, 401, "GET {path} as {caller:?}: {answer}");
        }
    }
}
