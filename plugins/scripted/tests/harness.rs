//! The scripted plugin on the host's delivery engine: each attempt follows
//! the script in the payload.

use std::time::Duration;
use switchyard_harness::{build_component, Backoff, Harness, NewMessage};

#[test]
fn follows_its_script_attempt_by_attempt() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm)
        .max_attempts(4)
        .backoff(
            Backoff::Fixed,
            Duration::from_millis(5),
            Duration::from_millis(5),
        )
        .build()
        .unwrap();
    h.publish(NewMessage::new("m0|r,t,a").id("m0")).unwrap();
    h.publish(NewMessage::new("m1|d").id("m1")).unwrap();
    h.run();
    let outcomes: Vec<&str> = h
        .attempts_of("m0")
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["retry", "trap", "ack"]);
    let trace = h.outputs("in.trace");
    assert_eq!(trace.len(), 1);
    assert_eq!(trace[0].payload, b"m0|3");
    assert_eq!(h.dead_letters()[0].message.id, "m1");
}
