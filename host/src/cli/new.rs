//! `switchyard new --lang rust|c|python|js NAME`: a plugin project that
//! builds and passes its harness test out of the box.
//!
//! Every project is the repository's example plugin in that language
//! (`plugins/example-*`, which CI builds and tests), with a copy of the WIT,
//! sample messages and expectations, `build.sh` (component into `build/`) and
//! `test.sh` (build, then `switchyard test` against the expectations). A Rust
//! project also has a `cargo test` harness test.

use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// Flags of `switchyard new`.
#[derive(Debug, Clone, Args)]
pub struct NewArgs {
    /// The plugin's language.
    #[arg(long, value_enum)]
    pub lang: Lang,

    /// The project's name (a new directory of that name is created): a
    /// lowercase letter, then lowercase letters, digits, `-` or `_`.
    pub name: String,

    /// Create the directory under this one instead of the current directory.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,

    /// Rust only: where the Switchyard sources are (for the path
    /// dependencies on switchyard-sdk and switchyard-harness). Default: the
    /// sources this binary was built from.
    #[arg(long)]
    pub switchyard_src: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    C,
    Python,
    Js,
}

/// The sample messages: one of each behaviour of the example plugin.
const MESSAGES: &str = r#"{"id": "fwd", "key": "k1", "payload": "hello", "headers": {"x": "y"}}
{"id": "retry", "key": "k2", "payload": "again", "headers": {"action": "retry"}}
{"id": "dead", "key": "k3", "payload": "bye", "headers": {"action": "dead"}}
{"id": "one", "key": "k1", "payload": "more"}
"#;

const EXPECT: &str = r#"{
  "messages": {
    "fwd": {"state": "acked", "attempts": 1},
    "retry": {"state": "acked", "attempts": 3},
    "dead": {"state": "dead-lettered", "attempts": 1},
    "one": {"state": "acked", "attempts": 1}
  },
  "outputs": {"in.out": 3},
  "kv": {"count/k1": "2", "count/k2": "1"}
}
"#;

const TEST_SH: &str = r#"#!/usr/bin/env bash
# Build the plugin, then run it on Switchyard's harness (the host's own
# delivery engine, on virtual time) against messages.jsonl; fails unless
# every expectation in expect.json holds. Edit both as the plugin grows.
set -euo pipefail
cd "$(dirname "$0")"
./build.sh build
"${SWITCHYARD_BIN:-switchyard}" test build/__NAME__.wasm \
    --input messages.jsonl --expect expect.json --config prefix=p:
"#;

const GITIGNORE: &str = "build/\ntarget/\nnode_modules/\n__pycache__/\n";

const RUST_CARGO: &str = r#"[package]
name = "__NAME__"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
switchyard-sdk = { path = "__SRC__/guest-sdk/rust" }

[dev-dependencies]
switchyard-harness = { path = "__SRC__/guest-sdk/harness" }

[profile.release]
opt-level = "s"
strip = "debuginfo"

# A project of its own, even when created inside another workspace.
[workspace]
"#;

const RUST_BUILD: &str = r#"#!/usr/bin/env bash
# Build the plugin's component: OUT_DIR/__NAME__.wasm (default OUT_DIR: build).
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-build}
cargo build --release --target wasm32-wasip2 --target-dir target/wasm
mkdir -p "$out"
cp target/wasm/wasm32-wasip2/release/__LIB__.wasm "$out/__NAME__.wasm"
echo "built $out/__NAME__.wasm" >&2
"#;

const RUST_TEST: &str = r#"//! The plugin on Switchyard's harness: the host's own delivery engine, on
//! virtual time. `cargo test` builds the component first.

use std::time::Duration;
use switchyard_harness::{build_component, Harness, NewMessage};

#[test]
fn forwards_retries_dead_letters_and_counts() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut h = Harness::builder(&wasm).config("prefix", "p:").build().unwrap();
    h.publish(NewMessage::new("hello").id("fwd").key("k1")).unwrap();
    h.publish(NewMessage::new("again").id("retry").key("k2").header("action", "retry"))
        .unwrap();
    h.publish(NewMessage::new("bye").id("dead").header("action", "dead"))
        .unwrap();
    h.advance(Duration::from_secs(60));
    assert_eq!(h.outputs("in.out")[0].payload, b"p:hello");
    assert_eq!(h.attempts_of("retry").len(), 3);
    assert_eq!(h.dead_letters()[0].reason, "dead on request");
    assert_eq!(h.kv("count/k1").as_deref(), Some(&b"1"[..]));
}
"#;

/// A file of the project: path and contents (`__NAME__` is replaced).
type File = (&'static str, &'static str);

fn files(lang: Lang) -> Vec<File> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", RUST_CARGO),
            (
                "src/lib.rs",
                include_str!("../../../plugins/example-rust/src/lib.rs"),
            ),
            ("tests/harness.rs", RUST_TEST),
            ("build.sh", RUST_BUILD),
        ],
        Lang::C => vec![
            (
                "plugin.c",
                include_str!("../../../plugins/example-c/plugin.c"),
            ),
            (
                "build.sh",
                include_str!("../../../plugins/example-c/build.sh"),
            ),
        ],
        Lang::Python => vec![
            (
                "app.py",
                include_str!("../../../plugins/example-python/app.py"),
            ),
            (
                "switchyard_http.py",
                include_str!("../../../plugins/example-python/switchyard_http.py"),
            ),
            (
                "build.sh",
                include_str!("../../../plugins/example-python/build.sh"),
            ),
        ],
        Lang::Js => vec![
            (
                "plugin.js",
                include_str!("../../../plugins/example-js/plugin.js"),
            ),
            (
                "componentize.mjs",
                include_str!("../../../plugins/example-js/componentize.mjs"),
            ),
            (
                "package.json",
                include_str!("../../../plugins/example-js/package.json"),
            ),
            (
                "package-lock.json",
                include_str!("../../../plugins/example-js/package-lock.json"),
            ),
            (
                "build.sh",
                include_str!("../../../plugins/example-js/build.sh"),
            ),
        ],
    }
}

fn readme(lang: Lang, name: &str) -> String {
    let (language, guide) = match lang {
        Lang::Rust => ("Rust", "guest-sdk/rust/README.md"),
        Lang::C => ("C", "plugins/example-c/README.md"),
        Lang::Python => ("Python", "plugins/example-python/README.md"),
        Lang::Js => ("JavaScript", "plugins/example-js/README.md"),
    };
    let cargo_test = if lang == Lang::Rust {
        "\n`cargo test` runs `tests/harness.rs` the same way from Rust.\n"
    } else {
        ""
    };
    format!(
        "# {name}\n\n\
         A Switchyard consumer plugin in {language}, made by `switchyard new`. It starts\n\
         as Switchyard's example plugin: it logs each message, dead-letters messages\n\
         with header `action: dead`, retries those with `action: retry` until their\n\
         third attempt, counts messages per key in kv (`count/<key>`), and publishes\n\
         each one to `<topic>.out` with the `prefix` config value before its payload.\n\n\
         - `./build.sh` builds the component into `build/{name}.wasm`.\n\
         - `./test.sh` builds it and runs it on Switchyard's harness (the host's own\n  \
         delivery engine, on virtual time) against `messages.jsonl`, checking\n  \
         `expect.json`. `switchyard test --help` lists the subscription settings\n  \
         it can simulate.\n{cargo_test}\
         - Deploy: `curl -X PUT --data-binary @build/{name}.wasm \\\n  \
         -H 'content-type: application/wasm' localhost:7070/v1/plugins/{name}`, then\n  \
         subscribe a topic to it (`PUT /v1/subscriptions/...` with `\"plugin\": \"{name}\"`).\n\n\
         `wit/plugin.wit` is the plugin interface. Writing plugins in {language}: see\n\
         `{guide}` in the Switchyard sources, and `guest-sdk/README.md`.\n"
    )
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64
}

impl NewArgs {
    /// Create the project; returns its directory.
    pub fn run(&self) -> Result<PathBuf, String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "invalid name {:?}: use a lowercase letter, then lowercase letters, digits, - or _",
                self.name
            ));
        }
        let root = self.dir.join(&self.name);
        if root.exists() {
            return Err(format!("{} already exists", root.display()));
        }
        // The component's file name: Rust names a cdylib after the crate
        // with `_` for `-`; use that name in every language.
        let name = self.name.replace('-', "_");
        let src = match &self.switchyard_src {
            Some(p) => p.clone(),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        };
        let fill = |text: &str| {
            text.replace("__NAME__", &name)
                .replace("__LIB__", &name)
                .replace("__SRC__", &src.display().to_string())
        };
        // The examples' build scripts name their component after the example.
        let example = format!("example_{}", format!("{:?}", self.lang).to_lowercase());
        let mut all: Vec<(String, String)> = files(self.lang)
            .into_iter()
            .map(|(path, text)| {
                let text = match path {
                    "build.sh" => fill(text).replace(&example, &name),
                    _ => fill(text),
                };
                (path.to_string(), text)
            })
            .collect();
        if self.lang == Lang::Rust {
            // The crate's package name is the project name as given.
            all[0].1 = RUST_CARGO
                .replace("__NAME__", &self.name)
                .replace("__SRC__", &src.display().to_string());
        }
        for (name, text) in super::WIT_FILES {
            all.push((format!("wit/{name}"), text.to_string()));
        }
        all.push(("messages.jsonl".into(), MESSAGES.into()));
        all.push(("expect.json".into(), EXPECT.into()));
        all.push(("test.sh".into(), fill(TEST_SH)));
        all.push((".gitignore".into(), GITIGNORE.into()));
        all.push(("README.md".into(), readme(self.lang, &name)));
        for (path, text) in &all {
            let file = root.join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::write(&file, text)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            if path.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("cannot make {} executable: {e}", file.display()))?;
            }
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_have_their_files_and_refuse_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::C, Lang::Python, Lang::Js] {
            let args = NewArgs {
                lang,
                name: format!("my-{lang:?}").to_lowercase(),
                dir: dir.path().to_path_buf(),
                switchyard_src: None,
            };
            let root = args.run().unwrap();
            for f in [
                "build.sh",
                "test.sh",
                "wit/plugin.wit",
                "wit/deps/http.wit",
                "messages.jsonl",
                "expect.json",
            ] {
                assert!(root.join(f).is_file(), "{lang:?}: {f}");
            }
            let test = std::fs::read_to_string(root.join("test.sh")).unwrap();
            assert!(test.contains(&format!(
                "build/my_{}.wasm",
                format!("{lang:?}").to_lowercase()
            )));
            assert!(args.run().unwrap_err().contains("already exists"));
        }
        let bad = NewArgs {
            lang: Lang::C,
            name: "Bad Name".into(),
            dir: dir.path().to_path_buf(),
            switchyard_src: None,
        };
        assert!(bad.run().unwrap_err().contains("invalid name"));
    }
}
