//! The web dashboard in real headless Chromium: a host with tokens, a topic,
//! a subscription and a message in its dead letters, made through the API;
//! then `tests/ui/dashboard.py` (Playwright) signs in, reads the lag and the
//! dead letter's attempts and logs, pauses, redrives, resumes, traces and
//! browses, checks the read-only view and a phone-sized screen, and writes
//! screenshots under the target directory. `./dev.sh test` installs
//! Chromium (Debian) and Playwright (PyPI) and says where they are.

use crate::support::{wait_for, Body, Options, Server};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const ADMIN: &str = "admin-secret";
const READ: &str = "read-secret";

/// The Python with Playwright, and the Chromium it drives.
fn browser_tools() -> (PathBuf, PathBuf) {
    let python = std::env::var_os("SWITCHYARD_PLAYWRIGHT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            PathBuf::from(home).join(".cache/switchyard/tools/playwright/bin/python")
        });
    let chromium = std::env::var_os("SWITCHYARD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        python.exists() && chromium.exists(),
        "the browser test needs Playwright ({}) and Chromium ({}); `./dev.sh test` installs both",
        python.display(),
        chromium.display()
    );
    (python, chromium)
}

#[test]
fn the_dashboard_shows_and_operates_a_subscription_in_a_real_browser() {
    let (python, chromium) = browser_tools();
    let s = Server::start_with(Options {
        token: Some(ADMIN.into()),
        read_token: Some(READ.into()),
        ..Options::default()
    });
    s.topic("jobs", 1);
    s.deploy("flaky", "flaky");
    s.subscribe(
        "jobs",
        json!({"topic": "jobs", "plugin": "flaky",
               "retry": {"max_attempts": 2, "initial_ms": 1, "jitter": false}}),
    );
    s.ok(
        "POST",
        "/v1/topics/jobs/messages",
        Body::Json(
            json!({"id": "job-7", "key": "k7", "payload": "{\"order\": 7}",
                          "headers": {"succeed-on": "5"}}),
        ),
    );
    s.wait_stats("jobs", Duration::from_secs(60), |st| {
        st["dead_lettered"] == 1 && st["lag"] == 0
    });

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let script = crate::support::workspace().join("tests/ui/dashboard.py");
    let run = Command::new(&python)
        .arg(&script)
        .args([&s.base, ADMIN, READ])
        .arg(&out)
        .env("SWITCHYARD_CHROMIUM", &chromium)
        .output()
        .expect("running the browser test");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser test failed:\n{stdout}\n{}\nhost log:\n{}",
        String::from_utf8_lossy(&run.stderr),
        s.log()
    );
    let figures: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no figures from the browser test: {stdout}"));
    println!("dashboard: {figures}");
    assert!(figures["page_bytes"].as_u64() > Some(10_000), "{figures}");
    for page in [
        "overview",
        "subscription",
        "dead-letter",
        "trace",
        "topic",
        "plugins",
        "live",
        "overview-phone",
    ] {
        let file = out.join(format!("{page}.png"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {} missing", file.display());
    }

    // What the browser did, the host did: the redriven message ran again
    // after the resume (and, failing again, is back in the dead letters).
    let info = s.ok("GET", "/v1/subscriptions/jobs", Body::None);
    assert_eq!(info["state"], "running", "{info}");
    wait_for(
        Duration::from_secs(60),
        "the redriven message to run",
        || {
            let st = s.stats("jobs");
            (st["delivered"].as_u64() >= Some(3)).then_some(())
        },
    );
}
