//! The README's tour (`examples/tour.sh`) runs as written against a real server.

use crate::origin::Origin;
use crate::support::{plugin_dir, workspace, Options, Server};
use std::process::Command;

#[test]
fn readme_tour_runs() {
    // The webhook step posts to a local server, which the operator allows.
    let origin = Origin::start();
    let s = Server::start_with(Options {
        egress_allow_cidr: vec!["127.0.0.0/8".into()],
        ..Options::default()
    });
    let out = Command::new("bash")
        .arg(workspace().join("examples/tour.sh"))
        .env("SWITCHYARD_URL", &s.base)
        .env("HOOK_URL", origin.url("http", "/hooks/orders"))
        .env("SWITCHYARD_PLUGINS", plugin_dir())
        .output()
        .expect("running examples/tour.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tour failed: {}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    assert!(stdout.contains(r#""payload":"hello""#), "{stdout}");
    assert!(stdout.contains(r#""dead_letters":[{"#), "{stdout}");
    let hooks = origin.seen();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].body, b"hello");
    assert!(stdout.contains(r#""result":"acked""#), "{stdout}");
}
