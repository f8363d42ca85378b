//! The spin plugin on the host's delivery engine: an endless loop is
//! interrupted at the subscription's timeout.

use std::time::Duration;
use switchyard_harness::{build_component, Harness, NewMessage};

#[test]
fn an_endless_loop_times_out_and_others_still_flow() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm)
        .timeout(Duration::from_millis(50))
        .max_attempts(1)
        .build()
        .unwrap();
    h.publish(NewMessage::new("loop").id("l").key("a")).unwrap();
    h.publish(NewMessage::new("ok").id("o").key("b")).unwrap();
    h.run();
    assert_eq!(h.attempts_of("l")[0].outcome, "timeout");
    assert_eq!(h.attempts_of("o")[0].outcome, "ack");
}
