//! The hog plugin on the host's delivery engine: the memory limit stops it,
//! and no memory outlives a message's instance.

use switchyard_harness::{build_component, Harness, Isolation, NewMessage};

#[test]
fn a_memory_bomb_hits_the_limit() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm).max_attempts(1).build().unwrap();
    h.publish(NewMessage::new("hog").id("h")).unwrap();
    h.publish(NewMessage::new("fine").id("f")).unwrap();
    assert_eq!(h.attempts_of("h")[0].outcome, "memory-limit");
    assert_eq!(h.attempts_of("f")[0].outcome, "ack");
}

/// Every message's instance starts from the component's initial memory,
/// though each left a few hundred scattered pages written behind it.
#[test]
fn each_message_starts_from_the_initial_memory_image() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm).max_attempts(1).build().unwrap();
    for i in 0..40 {
        h.publish(NewMessage::new("scribble").id(&format!("s{i}")))
            .unwrap();
    }
    h.run();
    for i in 0..40 {
        let attempts = h.attempts_of(&format!("s{i}"));
        assert_eq!(attempts[0].outcome, "ack", "{:?}", attempts[0]);
    }
}

/// The check above can fail: an instance reused for a second message finds
/// the first one's marks.
#[test]
fn a_reused_instance_finds_the_last_message_marks() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm)
        .isolation(Isolation::Worker)
        .concurrency(1)
        .max_attempts(1)
        .build()
        .unwrap();
    h.publish(NewMessage::new("scribble").id("first")).unwrap();
    h.publish(NewMessage::new("scribble").id("second")).unwrap();
    h.run();
    assert_eq!(h.attempts_of("first")[0].outcome, "ack");
    let second = &h.attempts_of("second")[0];
    assert_eq!(second.outcome, "dead-letter", "{second:?}");
    assert_eq!(
        second.error.as_deref(),
        Some("dead-letter: leaked state from an earlier message")
    );
}
