//! The hog plugin on the host's delivery engine: the memory limit stops it.

use switchyard_harness::{build_component, Harness, NewMessage};

#[test]
fn a_memory_bomb_hits_the_limit() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm).max_attempts(1).build().unwrap();
    h.publish(NewMessage::new("hog").id("h")).unwrap();
    h.publish(NewMessage::new("fine").id("f")).unwrap();
    assert_eq!(h.attempts_of("h")[0].outcome, "memory-limit");
    assert_eq!(h.attempts_of("f")[0].outcome, "ack");
}
