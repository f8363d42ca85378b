//! `switchyard test`: a plugin on the harness from the command line.

use crate::support::plugin_dir;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("test")
        .args(args)
        .output()
        .expect("running switchyard test");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The trace shows every attempt on virtual time with its logs and outputs;
/// expectations decide the exit status; bad input is a usage error.
#[test]
fn switchyard_test_traces_messages_and_checks_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id": "m1", "key": "a", "payload": "hello", "headers": {"succeed-on": "3"}}"#,
            "\n",
            r#"{"id": "m2", "key": "b", "payload": "bye", "headers": {"succeed-on": "9"}}"#,
            "\n\n",
        ),
    )
    .unwrap();
    let flaky = plugin_dir().join("flaky.wasm");
    let flaky = flaky.to_str().unwrap();
    let input = input.to_str().unwrap();
    let expect = dir.path().join("expect.json");
    std::fs::write(
        &expect,
        r#"{"messages": {"m1": {"state": "acked", "attempts": 3}, "m2": {"state": "dead-lettered"}}}"#,
    )
    .unwrap();
    let expect = expect.to_str().unwrap();
    let args = [
        flaky,
        "--input",
        input,
        "--max-attempts",
        "4",
        "--no-jitter",
    ];
    let (code, out, err) = run(&[&args[..], &["--expect", expect]].concat());
    assert_eq!(code, 0, "{out}{err}");
    // Exponential backoff from 100 ms without jitter: attempts at 0, 100, 300.
    for line in [
        "m1  key=a  (partition 0, offset 0)",
        "  #2   +100 ms",
        "  #3   +300 ms    ack",
        "        | debug: flaky: attempt 1 of 3",
        "        | info: flaky: acknowledged on attempt 3",
        "  acked after 3 attempts",
        "  dead-lettered after 4 attempts",
        "summary: 1 acked, 1 dead-lettered; 7 attempts; virtual time 700 ms",
        "all expectations met",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{out}"
        );
    }
    // The same run again prints the same trace (after its load-time line).
    let (_, again, _) = run(&[&args[..], &["--expect", expect]].concat());
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&out), body(&again));

    // An expectation that does not hold: exit status 1, and it says which.
    std::fs::write(
        dir.path().join("wrong.json"),
        r#"{"messages": {"m2": {"state": "acked"}}}"#,
    )
    .unwrap();
    let wrong = dir.path().join("wrong.json");
    let (code, out, _) = run(&[&args[..], &["--expect", wrong.to_str().unwrap()]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("expectation not met: message m2: dead-lettered, expected acked"),
        "{out}"
    );

    // Bad input: exit status 2 with the line at fault.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"payload\": \"ok\"}\n{\"payload\": 5}\n").unwrap();
    let (code, _, err) = run(&[flaky, "--input", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2"), "{err}");
    let (code, _, err) = run(&["/nonexistent.wasm", "--input", input]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent.wasm"), "{err}");
}

/// E7: `--http-mock` answers a plugin's outbound requests from a script, on
/// virtual time, and the trace shows each request.
#[test]
fn switchyard_test_answers_outbound_requests_from_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\": \"m1\", \"payload\": \"{}\"}\n").unwrap();
    let mocks = dir.path().join("mocks.json");
    std::fs::write(
        &mocks,
        r#"[{"method": "POST", "url": "https://hooks.example.com/",
             "responses": [{"status": 503}, {"status": 429, "headers": {"retry-after": "2"}}, {"status": 200}]}]"#,
    )
    .unwrap();
    let expect = dir.path().join("expect.json");
    std::fs::write(
        &expect,
        r#"{"messages": {"m1": {"state": "acked", "attempts": 3}}}"#,
    )
    .unwrap();
    let webhook = plugin_dir().join("webhook.wasm");
    let args = [
        webhook.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--config",
        "url=https://hooks.example.com/in",
        "--http-mock",
        mocks.to_str().unwrap(),
        "--no-jitter",
        "--expect",
        expect.to_str().unwrap(),
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "⇄ POST https://hooks.example.com:443 → 503",
        "⇄ POST https://hooks.example.com:443 → 429",
        // Retry-After: 2 s of virtual time after the second attempt at 100 ms.
        "  #3   +2100 ms   ack",
        "all expectations met",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Without a script every request is denied, and the webhook dead-letters.
    let (code, out, err) = run(&args[..5]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("HTTP-request-denied"), "{out}");
    assert!(out.contains("dead-lettered after 1 attempt"), "{out}");
}
