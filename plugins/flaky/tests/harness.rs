//! The flaky plugin on the host's delivery engine: retries follow the
//! subscription's backoff on virtual time.

use std::time::Duration;
use switchyard_harness::{build_component, Backoff, Harness, NewMessage};

fn harness(max_attempts: u32) -> Harness {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    Harness::builder(&wasm)
        .max_attempts(max_attempts)
        .backoff(
            Backoff::Exponential,
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
        .jitter(false)
        .build()
        .unwrap()
}

#[test]
fn retries_on_the_backoff_schedule_until_it_succeeds() {
    let mut h = harness(5);
    h.publish(NewMessage::new("x").id("m").header("succeed-on", "3"))
        .unwrap();
    // Attempt 1 ran at once; attempt 2 is due after 100 ms.
    assert_eq!(h.attempts().len(), 1);
    h.advance(Duration::from_millis(99));
    assert_eq!(h.attempts().len(), 1, "not before its backoff");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.attempts().len(), 2);
    h.run();
    let trace: Vec<(u32, u64, &str, &str)> = h
        .attempts()
        .iter()
        .map(|a| (a.attempt, a.at_ms, a.outcome.as_str(), a.state.as_str()))
        .collect();
    assert_eq!(
        trace,
        [
            (1, 0, "retry", "retrying"),
            (2, 100, "retry", "retrying"),
            (3, 300, "ack", "acked"),
        ]
    );
    assert_eq!(h.attempts()[0].logs, ["debug: flaky: attempt 1 of 3"]);
    assert_eq!(
        h.attempts()[2].logs,
        ["info: flaky: acknowledged on attempt 3"]
    );
}

#[test]
fn gives_up_after_max_attempts() {
    let mut h = harness(2);
    h.publish(NewMessage::new("x").id("m").header("succeed-on", "9"))
        .unwrap();
    h.run();
    let dead = h.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("gave up after 2 attempts"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].history.len(), 2);
}

#[test]
fn the_same_inputs_give_the_same_trace() {
    let run = || {
        let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
        // Jitter on: still repeatable (seeded).
        let mut h = Harness::builder(&wasm).concurrency(4).build().unwrap();
        for i in 0..8 {
            let succeed_on = (i % 3 + 1).to_string();
            h.publish(
                NewMessage::new("x")
                    .id(&format!("m{i}"))
                    .header("succeed-on", &succeed_on),
            )
            .unwrap();
        }
        h.run();
        h.attempts()
            .iter()
            .map(|a| (a.message_id.clone(), a.attempt, a.at_ms, a.outcome.clone()))
            .collect::<Vec<_>>()
    };
    let first = run();
    // 1, 2 or 3 attempts each: 3 × 1 + 3 × 2 + 2 × 3.
    assert_eq!(first.len(), 15);
    assert_eq!(first, run());
}
