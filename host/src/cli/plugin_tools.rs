//! `switchyard plugin-tools`: what a plugin author outside Rust needs from the
//! plugin ABI, built into the binary so nobody has to install wasm-tools or
//! wit-bindgen.
//!
//! - `c-bindings --out DIR` writes the C bindings of world `consumer`
//!   (`consumer.h`, `consumer.c`, `consumer_component_type.o`), generated with
//!   `wit-bindgen-c` from the embedded WIT (`cli::WIT_FILES`).
//! - `componentize CORE.wasm -o OUT.wasm` turns a core module built for
//!   wasm32-wasip1 (with the component type object linked in) into a component,
//!   with `wit-component` and the WASI preview1 *reactor* adapter of wasmtime 48,
//!   whose WASI 0.2 imports the host provides.
//!
//! It owns no host state and touches nothing but the files it is told to
//! read and write. Errors are [`PluginToolsError`]; `main` prints them and
//! exits with status 2.

use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_bindgen_core::Files;
use wit_component::{ComponentEncoder, DecodedWasm};
use wit_parser::{Resolve, WorldKey};

/// The world a consumer plugin targets.
const WORLD: &str = "switchyard:plugin/consumer";

/// Flags of `switchyard plugin-tools`.
#[derive(Debug, Clone, Args)]
pub struct PluginToolsArgs {
    #[command(subcommand)]
    pub action: PluginToolsAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PluginToolsAction {
    /// Write the C bindings of world `consumer` (consumer.h, consumer.c and
    /// consumer_component_type.o, to compile and link into the plugin).
    CBindings {
        /// Directory to write the files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Turn a core wasm module built for wasm32-wasip1 (with
    /// consumer_component_type.o linked in) into a plugin component, adapting
    /// WASI preview1 imports to WASI 0.2 (reactor flavour).
    Componentize {
        /// The core module, e.g. from `clang --target=wasm32-wasip1 -mexec-model=reactor`.
        #[arg(value_name = "CORE.wasm")]
        core: PathBuf,
        /// Where to write the component.
        #[arg(short = 'o', long = "output", value_name = "OUT.wasm")]
        output: PathBuf,
    },
}

/// Why a plugin tool failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginToolsError {
    #[error("the embedded WIT is invalid: {0}")]
    Wit(String),
    #[error("cannot generate the C bindings: {0}")]
    Bindgen(String),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a component of {}: {detail}", path.display())]
    Componentize { path: PathBuf, detail: String },
}

impl PluginToolsArgs {
    /// Run the action; on success, the one-line summary to print.
    pub fn run(&self) -> Result<String, PluginToolsError> {
        match &self.action {
            PluginToolsAction::CBindings { out } => {
                let names = write_c_bindings(out)?;
                Ok(format!(
                    "wrote {} for world {WORLD}@0.1.0 to {}",
                    names.join(", "),
                    out.display()
                ))
            }
            PluginToolsAction::Componentize { core, output } => {
                let module = std::fs::read(core).map_err(|source| PluginToolsError::Read {
                    path: core.clone(),
                    source,
                })?;
                let component =
                    componentize(&module).map_err(|detail| PluginToolsError::Componentize {
                        path: core.clone(),
                        detail,
                    })?;
                write(output, &component)?;
                Ok(format!(
                    "componentized {} ({} bytes) into {} ({} bytes, WASI preview1 reactor adapter)",
                    core.display(),
                    module.len(),
                    output.display(),
                    component.len()
                ))
            }
        }
    }
}

/// Generate the C bindings of world `consumer` into `dir`; returns the file
/// names written.
pub fn write_c_bindings(dir: &Path) -> Result<Vec<String>, PluginToolsError> {
    let files = c_bindings()?;
    std::fs::create_dir_all(dir).map_err(|source| PluginToolsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for (name, contents) in files.iter() {
        write(&dir.join(name), contents)?;
        names.push(name.to_string());
    }
    Ok(names)
}

/// The C bindings of world `consumer`, in memory.
fn c_bindings() -> Result<Files, PluginToolsError> {
    let mut resolve = Resolve::default();
    let mut packages = Vec::new();
    for (name, text) in super::WIT_FILES {
        let package = resolve
            .push_source(name, text)
            .map_err(|e| PluginToolsError::Wit(resolve.render_error(&e)))?;
        packages.push(package);
    }
    let world = resolve
        .select_world(&packages, Some(WORLD))
        .map_err(|e| PluginToolsError::Wit(format!("{e:#}")))?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .map_err(|e| PluginToolsError::Bindgen(format!("{e:#}")))?;
    Ok(files)
}

/// Encode a core module (carrying its component type in a custom section)
/// as a validated component that exports `handle`.
fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    let component = ComponentEncoder::default()
        .validate(true)
        .module(module)
        .and_then(|encoder| {
            encoder.adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|mut encoder| encoder.encode())
        .map_err(|e| one_line(&format!("{e:#}")))?;
    if !exports_handle(&component) {
        return Err(format!(
            "it does not export `handle` of world {WORLD}: link consumer_component_type.o \
             (from `switchyard plugin-tools c-bindings`) into the core module"
        ));
    }
    Ok(component)
}

/// Whether `component` exports the world's `handle` function.
fn exports_handle(component: &[u8]) -> bool {
    match wit_component::decode(component) {
        Ok(DecodedWasm::Component(resolve, world)) => resolve.worlds[world]
            .exports
            .keys()
            .any(|key| matches!(key, WorldKey::Name(name) if name == "handle")),
        _ => false,
    }
}

/// `text` with every run of whitespace (newlines included) made one space:
/// some wasm-tools errors print values over several lines.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn write(path: &Path, contents: &[u8]) -> Result<(), PluginToolsError> {
    std::fs::write(path, contents).map_err(|source| PluginToolsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_bindings_are_written_and_declare_the_handle_export() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("bindings");
        let mut names = write_c_bindings(&out).expect("bindings");
        names.sort();
        assert_eq!(
            names,
            ["consumer.c", "consumer.h", "consumer_component_type.o"]
        );
        for name in &names {
            let len = std::fs::metadata(out.join(name)).expect("file").len();
            assert!(len > 0, "{name} is empty");
        }
        let header = std::fs::read_to_string(out.join("consumer.h")).expect("header");
        assert!(
            header.contains("exports_consumer_handle("),
            "consumer.h does not declare the handle export:\n{header}"
        );
        assert!(header.contains("switchyard_plugin_host_log("));
    }

    #[test]
    fn the_embedded_wit_is_every_file_of_guest_sdk_wit() {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("guest-sdk/wit") {
                let entry = entry.expect("entry");
                let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                if entry.path().is_dir() {
                    walk(&entry.path(), &format!("{name}/"), out);
                } else {
                    out.push(name);
                }
            }
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/wit");
        let mut on_disk = Vec::new();
        walk(&dir, "", &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = super::super::WIT_FILES
            .iter()
            .map(|(name, _)| name.to_string())
            .collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn componentize_rejects_what_is_not_a_core_module() {
        let error = componentize(b"not wasm").expect_err("must fail");
        assert!(error.contains("magic header"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn componentize_rejects_a_module_without_the_component_type() {
        // (module (memory (export "memory") 1)): valid, but no `handle`.
        let module = b"\0asm\x01\0\0\0\x05\x03\x01\0\x01\x07\x0a\x01\x06memory\x02\0";
        let error = componentize(module).expect_err("must fail");
        assert!(error.contains("consumer_component_type.o"), "{error}");
    }
}
