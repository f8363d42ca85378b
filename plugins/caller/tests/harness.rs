//! The caller plugin on the harness: scripted answers, and the default
//! per-attempt request limit (16).

use switchyard_harness::{build_component, Harness, HttpMock, NewMessage};

#[test]
fn requests_past_the_limit_are_denied() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mock = HttpMock::from_json(
        r#"[{"url": "https://api.example.com/", "responses": [{"status": 204}]}]"#,
    )
    .unwrap();
    let mut h = Harness::builder(&wasm)
        .config("url", "https://api.example.com/x")
        .config("count", "20")
        .max_attempts(1)
        .http_mock(mock)
        .build()
        .unwrap();
    h.publish(NewMessage::new("go").id("m1")).unwrap();
    let attempt = &h.attempts_of("m1")[0];
    assert_eq!(attempt.error.as_deref(), Some("retry: 2xx:16 denied:4"));
    // One line for the 4 refused, then the 16 answered.
    assert_eq!(attempt.http.len(), 17);
    let refused = attempt.http[0].error.as_deref().unwrap();
    assert!(refused.contains("4 more requests"), "{refused}");
    assert!(attempt.http[1..].iter().all(|c| c.status == Some(204)));
}
