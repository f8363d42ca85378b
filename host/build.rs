//! Link the `switchyard` binary with LLD where it is installed:
//!
//! - identical code folding (`--icf=all`): generic code instantiated for many
//!   types often compiles to the same machine code, and LLD keeps one copy of
//!   each such function;
//! - packed relative relocations (`-z pack-relative-relocs`, LLD 15 and later,
//!   glibc 2.36 and later): a position-independent binary carries one
//!   relocation per pointer in its data, 24 bytes each; packed, they take a
//!   bitmap instead. The binary then names the glibc feature it needs
//!   (`GLIBC_ABI_DT_RELR`), so an older glibc refuses to load it with that
//!   name rather than running it unrelocated. It is enabled only when the
//!   glibc the binary is built against has the feature.
//!
//! The newest LLD found is used: `ld.lld` on the PATH, or a versioned one
//! where Debian and Ubuntu install them (`/usr/lib/llvm-N/bin`). Without LLD
//! the binary is only larger.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    let native = target("TARGET") == target("HOST");
    if target("CARGO_CFG_TARGET_OS") != "linux" || !native {
        return;
    }
    let Some((dir, major)) = newest_lld() else {
        return;
    };
    if let Some(dir) = dir {
        // The compiler driver looks for `ld.lld` in `-B` directories first.
        println!("cargo:rustc-link-arg-bins=-B{}", dir.display());
    }
    println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
    println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    if major >= 15 && target("CARGO_CFG_TARGET_ENV") == "gnu" && glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The newest LLD: its directory when it is not the PATH's `ld.lld`, and its
/// major version.
fn newest_lld() -> Option<(Option<PathBuf>, u32)> {
    let mut found: Vec<(Option<PathBuf>, u32)> = Vec::new();
    if let Some(major) = lld_major(Path::new("ld.lld")) {
        found.push((None, major));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with("llvm-") {
                continue;
            }
            let dir = entry.path().join("bin");
            if let Some(major) = lld_major(&dir.join("ld.lld")) {
                found.push((Some(dir), major));
            }
        }
    }
    found.into_iter().max_by_key(|(_, major)| *major)
}

/// The major version `ld.lld --version` reports ("... LLD 16.0.6 ...").
fn lld_major(program: &Path) -> Option<u32> {
    let out = Command::new(program).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().skip_while(|w| *w != "LLD").nth(1)?;
    version.split('.').next()?.parse().ok()
}

/// Whether the build machine's glibc (the one the binary links against)
/// applies packed relative relocations: 2.36 and later.
fn glibc_has_relr() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.split_whitespace().nth(1) else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
