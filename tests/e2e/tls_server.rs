//! HTTPS for the API: `--tls-cert`/`--tls-key` serve it with rustls; the
//! client commands trust the host's CA with `--ca-cert` and refuse a host
//! they cannot verify; SIGHUP reloads the certificate, and a file that does
//! not load leaves the one in use (docs/operations.md, "TLS").

use crate::support::{wait_for, workspace, Options, Server};
use std::process::Command;
use std::time::Duration;

fn cli(base: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_URL", base)
        .env_remove("SWITCHYARD_TOKEN")
        .env_remove("SWITCHYARD_CA_CERT")
        .output()
        .expect("running switchyard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_api_serves_https_and_reloads_its_certificate_on_sighup() {
    let tls = workspace().join("tests/e2e/tls");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::copy(tls.join("server.pem"), &cert).unwrap();
    std::fs::copy(tls.join("server.key"), &key).unwrap();
    let ca = tls.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let s = Server::start_with(Options {
        args: vec![
            "--tls-cert".into(),
            cert.to_str().unwrap().into(),
            "--tls-key".into(),
            key.to_str().unwrap().into(),
        ],
        ..Options::default()
    });
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);

    // Trusting the test CA: the calls go through.
    let (code, out, err) = cli(&s.base, &["topic", "create", "t", "--ca-cert", ca]);
    assert_eq!(code, 0, "{err}{out}");
    // Without it, the host's certificate is not trusted: refused.
    let (code, _, err) = cli(&s.base, &["topic", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("certificate"), "{err}");
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = s.base.replace("https://", "http://");
    let (code, _, err) = cli(&plain, &["topic", "list"]);
    assert_eq!(code, 1, "{err}");

    // SIGHUP with a key that does not load: the certificate in use stays.
    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &s.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    std::fs::write(&key, "not a key").unwrap();
    hup();
    wait_for(
        Duration::from_secs(30),
        "the failed reload to be logged",
        || {
            s.log()
                .contains("TLS certificate not reloaded")
                .then_some(())
        },
    );
    let (code, out, err) = cli(&s.base, &["topic", "get", "t", "--ca-cert", ca]);
    assert_eq!(code, 0, "{err}{out}");
    // Fixed and reloaded: still served.
    std::fs::copy(tls.join("server.key"), &key).unwrap();
    hup();
    wait_for(Duration::from_secs(30), "the reload to be logged", || {
        s.log().contains("TLS certificate reloaded").then_some(())
    });
    let (code, out, err) = cli(&s.base, &["status", "--ca-cert", ca]);
    assert_eq!(code, 0, "{err}{out}");
    assert!(out.contains("(ready)"), "{out}");

    // A certificate without its key is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--print-config",
        ])
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2));
}
