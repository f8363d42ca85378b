//! The poison plugin on the host's delivery engine: dead letters, traps and
//! kv limits.

use switchyard_harness::{build_component, Harness, NewMessage, Ordering};

#[test]
fn poison_dead_letters_at_once_and_traps_are_retried() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm)
        .max_attempts(2)
        .ordering(Ordering::Key)
        .build()
        .unwrap();
    h.publish(NewMessage::new("dead on arrival").id("d").key("a"))
        .unwrap();
    h.publish(NewMessage::new("trap").id("t").key("b")).unwrap();
    h.publish(NewMessage::new("fine").id("f").key("b")).unwrap();
    h.run();
    let d = h.attempts_of("d");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].state, "dead-lettered");
    let t = h.attempts_of("t");
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|a| a.outcome == "trap"));
    assert!(t[0].error.as_deref().unwrap().contains("poison trap"));
    // Key order: "fine" waited behind the trapping message of its key.
    let f = h.attempts_of("f");
    assert_eq!(f.len(), 1);
    assert!(f[0].at_ms >= t[1].at_ms);
    let mut dead: Vec<String> = h.dead_letters().into_iter().map(|d| d.message.id).collect();
    dead.sort();
    assert_eq!(dead, ["d", "t"]);
}

#[test]
fn breaking_a_kv_limit_traps_and_writes_nothing() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm).max_attempts(1).build().unwrap();
    h.publish(NewMessage::new("kv-big").id("big")).unwrap();
    let a = &h.attempts()[0];
    assert_eq!(a.outcome, "trap");
    assert!(a
        .error
        .as_deref()
        .unwrap()
        .contains("over the limit of 1048576"));
    assert_eq!(h.kv("fine"), None);
}
