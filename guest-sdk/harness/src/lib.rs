//! Test a Switchyard plugin from `cargo test`, in any language that builds a
//! component: the host's own runtime and delivery engine run it on a
//! temporary store and a virtual clock, so retries, backoff, ordering,
//! dead-lettering and kv behave exactly as in production, and the same inputs
//! give the same trace.
//!
//! ```no_run
//! use std::time::Duration;
//! use switchyard_harness::{build_component, Harness, NewMessage};
//!
//! let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
//! let mut h = Harness::builder(&wasm).max_attempts(3).build().unwrap();
//! h.publish(NewMessage::new("hello").key("user-1")).unwrap();
//! h.advance(Duration::from_secs(10));
//! assert_eq!(h.outputs("in.out")[0].payload, b"hello");
//! ```
//!
//! A [`Harness`] subscribes the plugin to the topic `in` (see
//! [`HarnessBuilder`] for every setting); topics the plugin publishes to are
//! created on first use. [`Harness::publish`] delivers what is due at once;
//! [`Harness::advance`] moves virtual time, running each retry at its due
//! time; [`Harness::run`] goes on until nothing is waiting. Inspect
//! [`Harness::attempts`] (outcome, error, logs and publications of every
//! attempt), [`Harness::outputs`], [`Harness::dead_letters`] and
//! [`Harness::kv`].

pub use switchyard::harness::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Build the Rust plugin crate at `manifest_dir` for `wasm32-wasip2` (release
/// profile) and return its component's bytes.
///
/// The build goes to `$CARGO_TARGET_DIR/wasm-plugins` when `CARGO_TARGET_DIR`
/// is set, else to `target/wasm-plugins` under the crate, so it never waits on
/// the lock of the `cargo test` that called it.
pub fn build_component(manifest_dir: &str) -> Result<Vec<u8>, String> {
    let dir = Path::new(manifest_dir)
        .canonicalize()
        .map_err(|e| format!("{manifest_dir}: {e}"))?;
    let dir = dir.as_path();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("wasm-plugins"),
        None => dir.join("target").join("wasm-plugins"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--target-dir",
        ])
        .arg(&target)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building {manifest_dir} for wasm32-wasip2 failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // The crate's own artifact: the last compiler-artifact naming a .wasm.
    let manifest = dir.join("Cargo.toml");
    let wasm = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .is_some_and(|p| Path::new(p) == manifest)
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
                .collect::<Vec<_>>()
        })
        .last()
        .ok_or_else(|| {
            format!("the build of {manifest_dir} produced no .wasm (is it a cdylib?)")
        })?;
    std::fs::read(&wasm).map_err(|e| format!("reading {}: {e}", wasm.display()))
}
