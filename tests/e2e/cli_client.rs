//! The client commands against a real host, driven only through the
//! `switchyard` binary: topics, plugins, subscriptions, publishing JSON
//! Lines, reading, dead letters, traces, pause/resume and a forced topic
//! delete; `-o json` parses, tables have their key columns, and the exit
//! status is 0, 1 (the host refused, its error on stderr) or 2 (usage).

use crate::support::{plugin, wait_for, Server};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

struct Cli<'a> {
    server: &'a Server,
}

impl Cli<'_> {
    /// Run `switchyard ARGS`; (exit status, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .env("SWITCHYARD_URL", &self.server.base)
            .env_remove("SWITCHYARD_TOKEN")
            .output()
            .expect("running switchyard");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Run and expect success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "switchyard {args:?}: {err}{out}");
        out
    }

    /// Run with `-o json` and parse the answer.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
}

/// The table row whose first cell is `first`, split into cells.
fn row(table: &str, first: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{table}"))
}

#[test]
fn the_client_commands_drive_a_host_end_to_end() {
    let s = Server::start();
    let cli = Cli { server: &s };
    let dir = tempfile::tempdir().expect("temp dir");

    // Topics and a plugin.
    cli.ok(&["topic", "create", "in", "--partitions", "2"]);
    let created = cli.json(&["topic", "create", "in.out", "--partitions", "2"]);
    assert_eq!(created["partitions"], 2, "{created}");
    let wasm = dir.path().join("forwarder.wasm");
    std::fs::write(&wasm, plugin("forwarder")).expect("write plugin");
    let deployed = cli.ok(&["plugin", "deploy", "fwd", wasm.to_str().unwrap()]);
    assert!(deployed.contains("deployed fwd@1"), "{deployed}");
    let plugins = cli.ok(&["plugin", "list"]);
    assert_eq!(row(&plugins, "fwd")[1], "1", "latest version\n{plugins}");

    // A subscription forwarding `in` to `in.out`, and 1,000 JSON Lines.
    cli.ok(&[
        "sub",
        "create",
        "fwd",
        "--topic",
        "in",
        "--plugin",
        "fwd",
        "--concurrency",
        "4",
    ]);
    let lines: String = (0..1000)
        .map(|i| {
            format!(
                "{{\"id\": \"m{i}\", \"key\": \"k{}\", \"payload\": \"n{i}\"}}\n",
                i % 7
            )
        })
        .collect();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines).expect("write lines");
    let published = cli.json(&["publish", "in", "--lines", "--file", file.to_str().unwrap()]);
    assert_eq!(published["published"], 1000, "{published}");
    assert_eq!(published["duplicates"], 0, "{published}");
    let again = cli.ok(&["publish", "in", "--lines", "--file", file.to_str().unwrap()]);
    assert!(again.contains("(1000 duplicates)"), "{again}");
    wait_for(LIMIT, "the forwarding to finish", || {
        let sub = cli.json(&["sub", "get", "fwd"]);
        (sub["stats"]["acked"] == 1000 && sub["stats"]["lag"] == 0).then_some(())
    });
    let subs = cli.ok(&["sub", "list"]);
    let fwd = row(&subs, "fwd");
    assert_eq!(&fwd[1..4], ["in", "fwd", "running"], "{subs}");
    assert_eq!(fwd[7], "1000", "ACKED\n{subs}");
    assert!(fwd[8].parse::<f64>().is_ok(), "ACKED/S\n{subs}");
    let topics = cli.ok(&["topic", "list"]);
    assert!(topics.starts_with("NAME"), "{topics}");
    assert_eq!(row(&topics, "in.out")[2], "1000", "MESSAGES\n{topics}");
    let forwarded: usize = (0..2)
        .map(|p| {
            let page = cli.json(&[
                "read",
                "in.out",
                "--partition",
                &p.to_string(),
                "--limit",
                "1000",
            ]);
            page["messages"].as_array().expect("messages").len()
        })
        .sum();
    assert_eq!(forwarded, 1000);
    let yaml = cli.ok(&["read", "in.out", "--limit", "1", "-o", "yaml"]);
    let parsed: Value = serde_yaml_ng::from_str(&yaml).expect("YAML");
    assert_eq!(
        parsed["messages"].as_array().map(Vec::len),
        Some(1),
        "{yaml}"
    );

    // A message that ends in the dead letters.
    cli.ok(&["topic", "create", "bad"]);
    std::fs::write(dir.path().join("poison.wasm"), plugin("poison")).expect("write plugin");
    cli.ok(&[
        "plugin",
        "deploy",
        "poison",
        dir.path().join("poison.wasm").to_str().unwrap(),
    ]);
    let spec = dir.path().join("dl.yaml");
    std::fs::write(
        &spec,
        "topic: bad\nplugin: poison\nretry:\n  max_attempts: 1\n",
    )
    .unwrap();
    let created = cli.json(&["sub", "create", "dl", "-f", spec.to_str().unwrap()]);
    assert_eq!(
        created["retry"]["max_attempts"], 1,
        "from the YAML spec: {created}"
    );
    cli.ok(&["publish", "bad", "--id", "broken", "dead on arrival"]);
    wait_for(LIMIT, "the dead letter", || {
        let sub = cli.json(&["sub", "get", "dl"]);
        (sub["stats"]["dead_lettered"] == 1).then_some(())
    });
    let letters = cli.ok(&["dlq", "list", "dl"]);
    assert!(
        row(&letters, "broken").iter().any(|c| c == "poison:"),
        "{letters}"
    );
    let shown = cli.ok(&["dlq", "show", "dl", "broken"]);
    assert!(shown.contains("payload: dead on arrival"), "{shown}");
    assert!(
        shown.contains("dead-letter"),
        "the attempt's outcome\n{shown}"
    );
    let trace = cli.json(&["trace", "dl", "broken"]);
    assert_eq!(trace["state"], "dead-lettered", "{trace}");
    assert_eq!(
        trace["attempts"].as_array().map(Vec::len),
        Some(1),
        "{trace}"
    );

    // Pause, resume, redrive.
    assert!(cli.ok(&["sub", "pause", "dl"]).contains("paused dl"));
    assert_eq!(cli.json(&["sub", "get", "dl"])["state"], "paused");
    cli.ok(&["sub", "resume", "dl"]);
    assert_eq!(cli.json(&["sub", "get", "dl"])["state"], "running");
    let redriven = cli.ok(&["dlq", "redrive", "dl"]);
    assert!(redriven.contains("redrove 1 dead letters"), "{redriven}");
    wait_for(LIMIT, "the redriven message to fail again", || {
        let sub = cli.json(&["sub", "get", "dl"]);
        (sub["stats"]["dead_lettered"] == 2).then_some(())
    });
    assert!(cli.ok(&["dlq", "purge", "dl"]).contains("purged 1"));

    // Refusals: the host's error and exit 1; usage errors exit 2.
    let (code, _, err) = cli.run(&["topic", "delete", "in"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("conflict:") && err.contains("fwd"), "{err}");
    let (code, _, err) = cli.run(&["topic", "get", "nope"]);
    assert_eq!((code, err.contains("not_found:")), (1, true), "{err}");
    let (code, _, _) = cli.run(&["topic", "frobnicate"]);
    assert_eq!(code, 2);
    let (code, _, err) = cli.run(&["publish", "in"]);
    assert_eq!(code, 2, "no payload: {err}");

    // Deleting with --force takes the subscription along.
    let deleted = cli.ok(&["topic", "delete", "in", "--force"]);
    assert!(
        deleted.contains("deleted topic in with subscription(s) fwd"),
        "{deleted}"
    );
    let status = cli.ok(&["status"]);
    assert!(status.contains("(ready)"), "{status}");
    assert!(!status.lines().any(|l| l.starts_with("fwd ")), "{status}");
    assert_eq!(row(&status, "dl")[1], "bad", "{status}");
    let (code, _, _) = cli.run(&["--help"]);
    assert_eq!(code, 0);
    let script = cli.ok(&["completions", "bash"]);
    assert!(
        script.contains("switchyard") && script.contains("redrive"),
        "{script}"
    );
}
