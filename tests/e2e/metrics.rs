//! Errors are metrics: HTTP answers by route and status, attempts by
//! outcome, the host's histograms, the instance pool, and a store whose
//! disk fails under it — write failures, a halted subscription and the 5xx
//! it answers all show in `/metrics` (docs/metrics.md).

use crate::lazyfs::LazyFs;
use crate::support::{msg, wait_for, Body, Options, Server};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn requests_attempts_and_the_host_show_in_metrics() {
    let s = Server::start_args(&["--max-instances", "7"]);
    s.topic("t", 1);
    s.deploy("poison", "poison");
    s.subscribe(
        "s",
        json!({"topic": "t", "plugin": "poison",
        "retry": {"max_attempts": 2, "initial_ms": 1, "jitter": false}}),
    );
    s.publish(
        "t",
        vec![msg("a", "fine"), msg("b", "dead"), msg("c", "retry")],
    );
    s.publish("t", vec![msg("d", "trap")]);
    s.wait_stats("s", LIMIT, |st| {
        st["acked"] == 1 && st["dead_lettered"] == 3
    });
    let (status, _) = s.call("GET", "/v1/topics/nope", None, Body::None);
    assert_eq!(status, 404);
    // Made-up methods share one label: a client cannot grow the series.
    for method in ["BREW", "WHEN"] {
        let (status, _) = s.call(method, "/v1/topics", None, Body::None);
        assert_eq!(status, 405);
    }

    let m = |series: &str| s.metric(series);
    let attempts = |outcome: &str| {
        m(&format!(
            "switchyard_attempts_total{{subscription=\"s\",outcome=\"{outcome}\"}}"
        ))
    };
    // fine: ack; dead: dead-letter; retry: two retries; trap: two traps.
    assert_eq!(attempts("ack"), 1);
    assert_eq!(attempts("dead-letter"), 1);
    assert_eq!(attempts("retry"), 2);
    assert_eq!(attempts("trap"), 2);
    assert_eq!(
        m("switchyard_attempt_duration_seconds_count{subscription=\"s\"}"),
        6
    );
    assert_eq!(
        m("switchyard_subscription_state{subscription=\"s\",state=\"running\"}"),
        1
    );
    assert_eq!(m("switchyard_subscriptions_halted"), 0);

    let requests = |route: &str, method: &str, status: u16| {
        m(&format!(
            "switchyard_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
        ))
    };
    assert_eq!(requests("/v1/topics/{topic}/messages", "POST", 200), 2);
    assert_eq!(requests("/v1/topics/{topic}", "GET", 404), 1);
    assert_eq!(requests("/v1/topics", "other", 405), 2);
    assert_eq!(requests("/v1/plugins/{name}", "PUT", 201), 1);
    assert!(
        m("switchyard_http_request_duration_seconds_count{route=\"/v1/topics/{topic}/messages\"}")
            >= 2
    );

    // Two publish calls of three and one message; the group commits, the
    // compile of the upload, the pool's size.
    assert_eq!(m("switchyard_publish_batch_messages_count"), 2);
    assert_eq!(m("switchyard_publish_batch_messages_bucket{le=\"1.0\"}"), 1);
    assert_eq!(m("switchyard_publish_batch_messages_bucket{le=\"5.0\"}"), 2);
    assert_eq!(
        m("switchyard_publish_batch_messages_bucket{le=\"+Inf\"}"),
        2
    );
    assert!(m("switchyard_store_group_commit_writes_count") >= 4);
    assert_eq!(m("switchyard_plugin_compile_duration_seconds_count"), 1);
    assert_eq!(m("switchyard_plugin_instances_max"), 7);
    assert_eq!(m("switchyard_store_write_failures_total"), 0);
}

/// With `--max-instances 1` and a plugin that holds its instance, the pool
/// in use is at capacity while it runs, and back to zero after.
#[test]
fn the_instance_pool_in_use_and_its_capacity_are_metrics() {
    let s = Server::start_args(&["--max-instances", "1"]);
    s.topic("slow", 1);
    s.deploy("spin", "spin");
    s.subscribe(
        "spinner",
        json!({"topic": "slow", "plugin": "spin", "timeout_ms": 2000,
               "retry": {"max_attempts": 1}}),
    );
    s.publish("slow", vec![msg("x", "loop")]);
    wait_for(LIMIT, "the spinner's instance", || {
        (s.metric("switchyard_plugin_instances") == 1).then_some(())
    });
    assert_eq!(s.metric("switchyard_plugin_instances_max"), 1);
    s.wait_stats("spinner", LIMIT, |st| st["dead_lettered"] == 1);
    wait_for(LIMIT, "the instance to be dropped", || {
        (s.metric("switchyard_plugin_instances") == 0).then_some(())
    });
    assert_eq!(
        s.metric("switchyard_attempts_total{subscription=\"spinner\",outcome=\"timeout\"}"),
        1
    );
}

/// Long calls take turns in the long-call slots: with one slot, of three
/// endless loops one runs and two wait, without CPU, until their timeouts
/// stop them (as timeouts), while a healthy subscription goes on acking.
/// The slots and both gauges are metrics.
#[test]
fn long_calls_take_turns_in_their_slots() {
    let s = Server::start_args(&["--long-call-slots", "1"]);
    s.topic("slow", 1);
    s.topic("fast", 1);
    s.deploy("spin", "spin");
    s.deploy("noop", "noop");
    s.subscribe(
        "spinner",
        json!({"topic": "slow", "plugin": "spin", "timeout_ms": 8000, "ordering": "none",
               "concurrency": 3, "retry": {"max_attempts": 1}}),
    );
    s.subscribe("healthy", json!({"topic": "fast", "plugin": "noop"}));
    s.publish(
        "slow",
        (0..3).map(|i| msg(&format!("k{i}"), "loop")).collect(),
    );
    wait_for(LIMIT, "one loop running and two waiting", || {
        let running = s.metric("switchyard_plugin_long_calls_running");
        let waiting = s.metric("switchyard_plugin_long_calls_waiting");
        (running == 1 && waiting == 2).then_some(())
    });
    assert_eq!(s.metric("switchyard_plugin_long_call_slots"), 1);
    s.publish(
        "fast",
        (0..100).map(|i| msg(&format!("k{i}"), "ok")).collect(),
    );
    s.wait_stats("healthy", LIMIT, |st| st["acked"] == 100);
    s.wait_stats("spinner", LIMIT, |st| st["dead_lettered"] == 3);
    assert_eq!(
        s.metric("switchyard_attempts_total{subscription=\"spinner\",outcome=\"timeout\"}"),
        3
    );
    wait_for(LIMIT, "the slots to be free", || {
        let running = s.metric("switchyard_plugin_long_calls_running");
        let waiting = s.metric("switchyard_plugin_long_calls_waiting");
        (running == 0 && waiting == 0).then_some(())
    });
}

/// A disk that fails every sync under a running host: the failed writes,
/// the subscription halted by its failed commit and the 500s all show.
#[test]
fn a_failing_disk_shows_as_write_failures_a_halted_subscription_and_5xx() {
    let backing = tempfile::tempdir().expect("backing dir");
    let data = Arc::new(tempfile::tempdir().expect("mount point"));
    let fs = LazyFs::mount(data.path(), backing.path());
    let s = Server::start_on(data.clone(), Options::default());
    s.topic("t", 1);
    s.deploy("noop", "noop");
    s.subscribe("s", json!({"topic": "t", "plugin": "noop"}));
    // Durable now, delivered once its delay is over, when the disk has failed.
    s.publish(
        "t",
        vec![json!({"key": "k", "payload": "later", "delay_ms": 1500})],
    );
    fs.fail_syncs();
    let (status, error) = s.call(
        "POST",
        "/v1/topics/t/messages",
        None,
        Body::Json(msg("k", "refused")),
    );
    assert_eq!(status, 500, "{error}");
    wait_for(LIMIT, "the subscription to halt", || {
        let info = s.ok("GET", "/v1/subscriptions/s", Body::None);
        (info["state"] == "halted").then_some(())
    });
    assert!(s.metric("switchyard_store_write_failures_total") >= 2);
    assert_eq!(s.metric("switchyard_subscriptions_halted"), 1);
    assert_eq!(
        s.metric("switchyard_subscription_state{subscription=\"s\",state=\"halted\"}"),
        1
    );
    assert_eq!(
        s.metric(
            "switchyard_http_requests_total{route=\"/v1/topics/{topic}/messages\",method=\"POST\",status=\"500\"}"
        ),
        1
    );
    drop(s);
    drop(fs);
}

/// docs/metrics.md lists every series `/metrics` shows, with its type.
#[test]
fn every_series_is_documented() {
    let s = Server::start();
    s.topic("t", 1);
    s.deploy("noop", "noop");
    s.subscribe("s", json!({"topic": "t", "plugin": "noop"}));
    s.publish("t", vec![msg("k", "hello")]);
    s.wait_stats("s", LIMIT, |st| st["acked"] == 1);
    let docs = std::fs::read_to_string(crate::support::workspace().join("docs/metrics.md"))
        .expect("docs/metrics.md");
    let (status, text) = s.get_text("/metrics");
    assert_eq!(status, 200);
    let mut families = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        let series = match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_string(),
        };
        let row = format!("| `{series}` | {kind} |");
        assert!(docs.contains(&row), "docs/metrics.md lacks the row {row}");
        families += 1;
    }
    assert!(families >= 30, "{families} families:\n{text}");
}

/// The starter Grafana dashboard parses and queries only documented series.
#[test]
fn the_grafana_dashboard_queries_documented_series() {
    let root = crate::support::workspace();
    let docs = std::fs::read_to_string(root.join("docs/metrics.md")).expect("docs/metrics.md");
    let text = std::fs::read_to_string(root.join("examples/grafana-dashboard.json"))
        .expect("examples/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = 0;
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (start, _) in expr.match_indices("switchyard_") {
                let name: String = expr[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let series = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    docs.contains(&format!("| `{series}` |")),
                    "panel {:?} queries {name}, which docs/metrics.md does not list",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(
        panels.len() >= 15 && queried >= 20,
        "{} panels",
        panels.len()
    );
}
