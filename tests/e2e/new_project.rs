//! `switchyard new`: a project in each language builds from source and
//! passes its harness test (`./test.sh`) out of the box.

use std::process::Command;

fn new_project_passes_its_test(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let name = format!("demo-{lang}");
    let out = Command::new(bin)
        .args(["new", "--lang", lang, &name, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join(&name);
    let out = Command::new(project.join("test.sh"))
        .env("SWITCHYARD_BIN", bin)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{lang}: {stdout}{stderr}");
    assert!(stdout.contains("all expectations met"), "{lang}: {stdout}");
    let wasm = project.join(format!("build/demo_{lang}.wasm"));
    assert!(wasm.is_file(), "{lang}: {}", wasm.display());
    // A second `new` of the same name is refused.
    let again = Command::new(bin)
        .args(["new", "--lang", lang, &name, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn new_rust_project_passes_its_test() {
    new_project_passes_its_test("rust");
}

#[test]
fn new_c_project_passes_its_test() {
    new_project_passes_its_test("c");
}

#[test]
fn new_python_project_passes_its_test() {
    new_project_passes_its_test("python");
}

#[test]
fn new_js_project_passes_its_test() {
    new_project_passes_its_test("js");
}
