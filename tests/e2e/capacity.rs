//! Host capacity is never a plugin's fault: a full instance pool makes
//! messages wait without spending attempts, idle instances make room for
//! others, and many subscriptions with high concurrency share a bounded pool
//! of plugin threads (delivery.md S6).

use crate::support::{msg, wait_for, Server};
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn counter(stats: &Value, field: &str) -> u64 {
    stats[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {stats}"))
}

/// With room for one instance, a message that finds it taken waits for it:
/// no attempt is spent (one attempt allowed, none retried or dead-lettered),
/// and the wait shows in the subscription's stats and the metrics. Before,
/// the failed instantiation was a trap that dead-lettered a healthy message.
#[test]
fn a_full_instance_pool_makes_messages_wait_without_spending_attempts() {
    let s = Server::start_args(&["--max-instances", "1"]);
    s.topic("slow", 1);
    s.topic("fast", 1);
    s.deploy("spin", "spin");
    s.deploy("noop", "noop");
    let once = json!({"initial_ms": 5, "max_attempts": 1});
    s.subscribe(
        "spinner",
        json!({"topic": "slow", "plugin": "spin", "timeout_ms": 1000, "retry": once}),
    );
    s.subscribe(
        "quick",
        json!({"topic": "fast", "plugin": "noop", "retry": once}),
    );
    s.publish("slow", vec![msg("x", "loop")]);
    s.wait_stats("spinner", LIMIT, |st| st["in_flight"].as_u64() > Some(0));
    // The spinner holds the only instance for its whole timeout.
    s.publish(
        "fast",
        (0..20).map(|i| msg(&format!("k{i}"), "ok")).collect(),
    );
    let quick = s.wait_stats("quick", LIMIT, |st| st["acked"] == 20);
    assert_eq!(counter(&quick, "delivered"), 20, "{quick}");
    assert_eq!(counter(&quick, "retried"), 0, "{quick}");
    assert_eq!(counter(&quick, "dead_lettered"), 0, "{quick}");
    // The spinner fails on its own account: one attempt, a timeout.
    let spinner = s.wait_stats("spinner", LIMIT, |st| st["dead_lettered"] == 1);
    assert_eq!(counter(&spinner, "delivered"), 1, "{spinner}");
    let dead = s.dead_letters("spinner");
    assert_eq!(dead.len(), 1);
    let attempts = dead[0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{dead:?}");
    assert_eq!(attempts[0]["outcome"], "timeout");
    // Whichever came second waited for room, and it shows.
    let waits = counter(&quick, "host_busy") + counter(&spinner, "host_busy");
    assert!(waits > 0, "quick {quick}, spinner {spinner}");
    assert!(s.metric("switchyard_instance_pool_full_total") > 0);
    let (_, text) = s.get_text("/metrics");
    assert!(
        text.contains("switchyard_subscription_host_busy_total{subscription="),
        "{text}"
    );
    assert!(
        s.log().contains("instance pool is full"),
        "the wait is logged: {}",
        s.log()
    );
}

/// An instance kept idle for reuse (worker isolation) gives way when another
/// subscription needs its room: nobody waits.
#[test]
fn idle_instances_make_room_for_other_subscriptions() {
    let s = Server::start_args(&["--max-instances", "1"]);
    s.topic("a", 1);
    s.topic("b", 1);
    s.deploy("noop", "noop");
    let once = json!({"initial_ms": 5, "max_attempts": 1});
    s.subscribe(
        "keeper",
        json!({"topic": "a", "plugin": "noop", "isolation": "worker", "retry": once}),
    );
    s.subscribe(
        "fresh",
        json!({"topic": "b", "plugin": "noop", "isolation": "message", "concurrency": 1,
               "retry": once}),
    );
    s.publish("a", vec![msg("k", "one")]);
    s.wait_stats("keeper", LIMIT, |st| st["acked"] == 1);
    // keeper's instance is idle now, holding the only room.
    s.publish("b", (0..5).map(|i| msg(&format!("k{i}"), "ok")).collect());
    let fresh = s.wait_stats("fresh", LIMIT, |st| st["acked"] == 5);
    assert_eq!(counter(&fresh, "delivered"), 5, "{fresh}");
    assert_eq!(counter(&fresh, "dead_lettered"), 0, "{fresh}");
    assert_eq!(counter(&fresh, "host_busy"), 0, "{fresh}");
    assert!(s.metric("switchyard_instances_reclaimed_total") > 0);
    // And keeper gets an instance again when it needs one.
    s.publish("a", vec![msg("k", "two")]);
    let keeper = s.wait_stats("keeper", LIMIT, |st| st["acked"] == 2);
    assert_eq!(counter(&keeper, "dead_lettered"), 0, "{keeper}");
}

/// A field of a process's `/proc/<pid>/status`, trimmed.
fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn threads_of(pid: u32) -> u64 {
    status_field(pid, "Threads")
        .and_then(|n| n.parse().ok())
        .expect("Threads: line")
}

/// 40 subscriptions × concurrency 64 once meant 2,560 plugin threads (and
/// enough of them aborted the host when the OS refused more). Now they share
/// the host's plugin threads, bounded by `--worker-threads`, and every
/// message is delivered.
#[test]
fn many_subscriptions_with_high_concurrency_share_bounded_threads() {
    const SUBS: usize = 40;
    const MESSAGES: u64 = 200;
    let s = Server::start_args(&["--worker-threads", "8"]);
    s.topic("fan", 4);
    s.deploy("noop", "noop");
    for i in 0..SUBS {
        let isolation = if i % 2 == 0 { "worker" } else { "message" };
        s.subscribe(
            &format!("s{i}"),
            json!({"topic": "fan", "plugin": "noop", "concurrency": 64,
                   "ordering": "none", "isolation": isolation}),
        );
    }
    let batch = (0..MESSAGES)
        .map(|i| msg(&format!("k{i}"), "ok"))
        .collect::<Vec<_>>();
    s.publish("fan", batch);
    let most = std::cell::Cell::new(0);
    for i in 0..SUBS {
        let name = format!("s{i}");
        let st = s.wait_stats(&name, LIMIT, |st| {
            most.set(most.get().max(threads_of(s.pid())));
            st["acked"] == MESSAGES
        });
        assert_eq!(counter(&st, "delivered"), MESSAGES, "{name}: {st}");
        assert_eq!(counter(&st, "dead_lettered"), 0, "{name}: {st}");
    }
    assert!(s.metric("switchyard_plugin_threads_max") == 8);
    assert!(s.metric("switchyard_plugin_threads") <= 8);
    // Plugin threads plus the host's own (HTTP, delivery, store, RocksDB).
    let most_threads = most.get();
    assert!(
        most_threads < 64,
        "{most_threads} threads in the host for {SUBS} subscriptions"
    );
}

/// Live compile processes the server started (zombies not counted).
fn compile_processes(server: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let mut fields = after.split_whitespace();
            let (state, ppid) = (fields.next(), fields.next());
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            state != Some("Z")
                && ppid == Some(&server.to_string())
                && String::from_utf8_lossy(&cmdline).contains("__compile")
        })
        .count()
}

/// A compile runs in a process of its own, held to its limits: past its
/// time or its memory it is killed and the upload refused; the host goes on
/// (an upload after is deployed).
/// Before, a compile past its timeout was refused but ran on in the host.
#[test]
fn a_compile_past_its_limits_is_stopped_and_refused() {
    let python = crate::support::plugin_dir().join("example_python.wasm");
    let python = std::fs::read(&python)
        .unwrap_or_else(|e| panic!("{}: {e}; `./dev.sh plugins` builds it", python.display()));
    // Uploading it is refused with 503, saying `why`.
    let refused = |s: &Server, name: &str, why: &str| {
        let (status, body) = s.call(
            "PUT",
            &format!("/v1/plugins/{name}"),
            None,
            crate::support::Body::Raw(Some("application/wasm"), python.clone()),
        );
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(why)),
            "{body}"
        );
    };
    let s = Server::start_args(&["--compile-timeout-secs", "1"]);
    // A 17 MiB Python component takes seconds to compile here.
    refused(&s, "slow", "longer than 1 s");
    wait_for(LIMIT, "the compile process to be gone", || {
        (compile_processes(s.pid()) == 0).then_some(())
    });
    let (status, body) = s.call("GET", "/v1/plugins/slow", None, crate::support::Body::None);
    assert_eq!(status, 404, "nothing kept: {body}");
    s.deploy("noop", "noop");

    // Its compile takes about 540 MiB here; a Rust plugin's about 60 MiB.
    let s = Server::start_args(&["--compile-memory-mib", "256"]);
    refused(&s, "big", "more than its 256 MiB of memory");
    s.deploy("noop", "noop");
}

fn resident_mib(pid: u32) -> u64 {
    status_field(pid, "VmRSS")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS line")
        / 1024
}

/// 100 endless loops and 100 memory hogs across 10 subscriptions beside a
/// healthy one: each hostile message fails on its own account (timeout,
/// memory limit), every healthy message is acked and none dead-lettered,
/// and the host's memory stays within what the limits allow (hogs running
/// at once × instance memory, plus the host's own).
#[test]
fn hostile_plugins_at_scale_cost_only_themselves() {
    const HOSTILE: usize = 20;
    const HEALTHY: u64 = 500;
    let s = Server::start_args(&["--instance-memory-mib", "16"]);
    s.deploy("spin", "spin");
    s.deploy("hog", "hog");
    s.deploy("noop", "noop");
    s.topic("good", 4);
    let once = json!({"initial_ms": 5, "max_attempts": 1});
    for i in 0..5 {
        for (kind, payload) in [("spin", "loop"), ("hog", "hog")] {
            let topic = format!("{kind}{i}");
            s.topic(&topic, 1);
            s.subscribe(
                &topic,
                json!({"topic": topic, "plugin": kind, "concurrency": 10, "ordering": "none",
                       "timeout_ms": 300, "retry": once}),
            );
            let batch = (0..HOSTILE)
                .map(|n| msg(&format!("k{n}"), payload))
                .collect();
            s.publish(&topic, batch);
        }
    }
    s.subscribe(
        "good",
        json!({"topic": "good", "plugin": "noop", "concurrency": 4, "retry": once}),
    );
    let batch = (0..HEALTHY)
        .map(|n| msg(&format!("k{n}"), "fine"))
        .collect();
    s.publish("good", batch);
    let most = std::cell::Cell::new(0);
    let good = s.wait_stats("good", LIMIT, |st| {
        most.set(most.get().max(resident_mib(s.pid())));
        st["acked"] == HEALTHY
    });
    assert_eq!(counter(&good, "dead_lettered"), 0, "{good}");
    assert_eq!(counter(&good, "retried"), 0, "{good}");
    for i in 0..5 {
        // A hog on a saturated machine may run out of time before memory.
        let outcomes: [(&str, &[&str]); 2] = [
            ("spin", &["timeout"]),
            ("hog", &["memory-limit", "timeout"]),
        ];
        for (kind, expected) in outcomes {
            let name = format!("{kind}{i}");
            let st = s.wait_stats(&name, LIMIT, |st| {
                most.set(most.get().max(resident_mib(s.pid())));
                st["dead_lettered"] == HOSTILE as u64
            });
            assert_eq!(counter(&st, "acked"), 0, "{name}: {st}");
            let dead = s.dead_letters(&name);
            assert!(
                dead.iter().all(|d| d["attempts"][0]["outcome"]
                    .as_str()
                    .is_some_and(|o| expected.contains(&o))),
                "{name}: {dead:?}"
            );
        }
    }
    // 50 hogs at most at once (5 subscriptions × concurrency 10), 16 MiB each.
    let bound = 50 * 16 + 400;
    eprintln!(
        "resident memory peaked at {} MiB (bound {bound} MiB)",
        most.get()
    );
    assert!(
        most.get() < bound,
        "resident memory peaked at {} MiB (bound {bound} MiB)",
        most.get()
    );
}

/// At-most-once commits a message's progress before it runs: one handed
/// back because the host had no room stays owed (a redrive record), so a
/// clean stop while it waits does not lose it. It is delivered after the
/// restart.
#[test]
fn an_at_most_once_message_waiting_for_room_survives_a_stop() {
    let mut s = Server::start_args(&["--max-instances", "1"]);
    s.topic("slow", 1);
    s.topic("amo", 1);
    s.deploy("spin", "spin");
    s.deploy("noop", "noop");
    s.subscribe(
        "spinner",
        json!({"topic": "slow", "plugin": "spin", "timeout_ms": 3000,
               "retry": {"initial_ms": 5, "max_attempts": 1}}),
    );
    s.publish("slow", vec![msg("x", "loop")]);
    s.wait_stats("spinner", LIMIT, |st| st["in_flight"].as_u64() > Some(0));
    s.subscribe(
        "amo",
        json!({"topic": "amo", "plugin": "noop", "delivery": "at-most-once"}),
    );
    s.publish("amo", vec![msg("k", "owed")]);
    s.wait_stats("amo", LIMIT, |st| st["host_busy"].as_u64() > Some(0));
    s.terminate();
    s.restart();
    let amo = s.wait_stats("amo", LIMIT, |st| st["acked"] == 1);
    assert_eq!(counter(&amo, "failed"), 0, "{amo}");
}

/// Threads of process `pid` in the lowest scheduling class (`SCHED_IDLE`).
fn lowest_priority_threads(pid: u32) -> usize {
    const SCHED_IDLE: &str = "5";
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // Field 41, `policy`; fields after the command's `)` start at 3.
            let fields = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            fields.split_whitespace().nth(41 - 3) == Some(SCHED_IDLE)
        })
        .count()
}

/// A plugin call running past 10 ms drops to the lowest CPU priority for
/// the rest of the call, so endless loops give way to the host's threads
/// and to short calls; its thread is back to normal once the call ends.
#[test]
fn a_long_call_runs_at_the_lowest_priority_until_it_ends() {
    let s = Server::start_args(&[]);
    s.topic("slow", 1);
    s.deploy("spin", "spin");
    s.subscribe(
        "spinner",
        json!({"topic": "slow", "plugin": "spin", "timeout_ms": 1500,
               "retry": {"initial_ms": 5, "max_attempts": 1}}),
    );
    assert_eq!(lowest_priority_threads(s.pid()), 0);
    s.publish("slow", vec![msg("x", "loop")]);
    wait_for(LIMIT, "the looping call to be demoted", || {
        (lowest_priority_threads(s.pid()) == 1).then_some(())
    });
    let st = s.wait_stats("spinner", LIMIT, |st| st["dead_lettered"] == 1);
    assert_eq!(counter(&st, "delivered"), 1, "{st}");
    assert_eq!(
        s.dead_letters("spinner")[0]["attempts"][0]["outcome"],
        "timeout",
        "the timeout still applies"
    );
    assert_eq!(lowest_priority_threads(s.pid()), 0, "the thread is back");
}

/// The host runs without transparent huge pages: a first touch of memory
/// costs a base page, never a 2 MiB one zeroed (or compacted for) in the
/// middle of a delivery (docs/operations.md, "Memory"). The status line
/// exists from Linux 5.0 on.
#[test]
fn the_host_runs_without_transparent_huge_pages() {
    let s = Server::start();
    let thp = status_field(s.pid(), "THP_enabled");
    assert_eq!(
        thp.as_deref(),
        Some("0"),
        "THP_enabled in /proc/<pid>/status"
    );
}
