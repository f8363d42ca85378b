//! Link the `switchyard` binary with identical code folding: generic code
//! instantiated for many types often compiles to the same machine code, and
//! LLD keeps one copy of each such function. Skipped where LLD is missing
//! (the binary is then only larger).

use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let lld = Command::new("ld.lld")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if linux && lld {
        println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
        println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    }
}
