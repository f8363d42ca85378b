//! The README's tour (`examples/tour.sh`) runs as written against a real server.

use crate::support::{plugin_dir, workspace, Server};
use std::process::Command;

#[test]
fn readme_tour_runs() {
    let s = Server::start();
    let out = Command::new("bash")
        .arg(workspace().join("examples/tour.sh"))
        .env("SWITCHYARD_URL", &s.base)
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
}
