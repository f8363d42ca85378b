//! `switchyard serve --config FILE`: settings from a TOML file, under the
//! environment and the flags (flag > variable > file > default); unknown
//! keys refused by name; `--print-config` shows what is in effect, tokens
//! masked; tokens may come from files.

use crate::support::{Body, Options, Server};
use serde_json::json;
use std::process::Command;

fn serve(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.arg("serve").args(args);
    for var in [
        "SWITCHYARD_TOKEN",
        "SWITCHYARD_HTTP_TIMEOUT_SECS",
        "SWITCHYARD_WORKER_THREADS",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running switchyard serve");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_config_file_sets_what_flags_and_variables_leave_unset() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "file-secret\n").unwrap();
    let file = dir.path().join("switchyard.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"{}\"\n[tokens]\nadmin_file = \"{}\"\n[limits]\nworker_threads = 5\n\
             http_timeout_secs = 5\nmax_connections = 7\nmin_free_disk_mib = 1099511627776\n",
            dir.path().join("data").display(),
            token.display()
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();

    // flag > variable > file > default, secrets masked.
    let (code, printed, err) = serve(
        &["--config", path, "--print-config", "--worker-threads", "3"],
        &[("SWITCHYARD_HTTP_TIMEOUT_SECS", "9")],
    );
    assert_eq!(code, 0, "{err}");
    let config: toml::Table = toml::from_str(&printed).expect("TOML");
    let limits = config["limits"].as_table().expect("limits");
    assert_eq!(limits["worker_threads"].as_integer(), Some(3), "the flag");
    assert_eq!(
        limits["http_timeout_secs"].as_integer(),
        Some(9),
        "the variable"
    );
    assert_eq!(limits["max_connections"].as_integer(), Some(7), "the file");
    assert_eq!(
        limits["max_instances"].as_integer(),
        Some(1000),
        "the default"
    );
    assert_eq!(config["tokens"]["admin"].as_str(), Some("***"));
    assert!(!printed.contains("file-secret"), "{printed}");

    // The example file is valid.
    let example = crate::support::workspace().join("examples/switchyard.toml");
    let (code, printed, err) = serve(
        &[
            "--config",
            example.to_str().unwrap(),
            "--print-config",
            "--token",
            "t",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(printed.contains("min_free_disk_mib = 512"), "{printed}");

    // An unknown key is refused, by name.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\nworker_threds = 4\n").unwrap();
    let (code, _, err) = serve(&["--config", bad.to_str().unwrap(), "--print-config"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("worker_threds"), "{err}");

    // A host started with it: the token from the file is required, and the
    // flag's disk reserve (0) wins over the file's (1 EiB, which would
    // refuse every publish).
    let s = Server::start_with(Options {
        args: vec![
            "--config".into(),
            path.into(),
            "--min-free-disk-mib".into(),
            "0".into(),
        ],
        ..Options::default()
    });
    let (status, _) = s.call("GET", "/v1/topics", Some(""), Body::None);
    assert_eq!(status, 401);
    let (status, answer) = s.call(
        "PUT",
        "/v1/topics/t",
        Some("file-secret"),
        Body::Json(json!({"partitions": 1})),
    );
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = s.call(
        "POST",
        "/v1/topics/t/messages",
        Some("file-secret"),
        Body::Json(json!({"messages": [{"payload": "x"}]})),
    );
    assert_eq!(status, 200, "{answer}");
}
