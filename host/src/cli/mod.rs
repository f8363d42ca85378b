//! The `switchyard` command line (clap derive).
//!
//! `serve` runs the host; `test` runs a plugin on the harness (the host's
//! delivery engine on virtual time, no server). Client commands that call the
//! HTTP API (publish, topics, plugins, …) will be further [`Command`] variants
//! beside them, each in its own file; they reach the host only over HTTP.

/// The plugin ABI's WIT files (guest-sdk/wit, with the WASI packages it uses
/// in deps/), embedded so the binary works anywhere; in dependency order. A
/// test checks that this lists every file in that directory.
pub(crate) const WIT_FILES: &[(&str, &str)] = &[
    (
        "deps/io.wit",
        include_str!("../../../guest-sdk/wit/deps/io.wit"),
    ),
    (
        "deps/clocks.wit",
        include_str!("../../../guest-sdk/wit/deps/clocks.wit"),
    ),
    (
        "deps/random.wit",
        include_str!("../../../guest-sdk/wit/deps/random.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../guest-sdk/wit/deps/filesystem.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../guest-sdk/wit/deps/sockets.wit"),
    ),
    (
        "deps/cli.wit",
        include_str!("../../../guest-sdk/wit/deps/cli.wit"),
    ),
    (
        "deps/http.wit",
        include_str!("../../../guest-sdk/wit/deps/http.wit"),
    ),
    (
        "plugin.wit",
        include_str!("../../../guest-sdk/wit/plugin.wit"),
    ),
];

mod new;
mod plugin_tools;
mod serve;
mod test;

use clap::{Parser, Subcommand};

pub use new::{Lang, NewArgs};
pub use plugin_tools::PluginToolsArgs;
pub use serve::ServeArgs;
pub use test::{TestArgs, TestReport};

/// A single-binary event router: durable messages delivered to sandboxed
/// WebAssembly consumers.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: the HTTP API and message delivery.
    Serve(ServeArgs),
    /// Run a plugin on the host's delivery engine with virtual time, against
    /// messages from a file, and print what happened to each (exit status 1
    /// if an --expect expectation is not met, 2 on a usage error).
    Test(TestArgs),
    /// Tools for plugin authors outside Rust: C bindings from the plugin WIT,
    /// and componentizing a core wasm module (exit status 2 on failure).
    PluginTools(PluginToolsArgs),
    /// Create a plugin project (Rust, C, Python or JavaScript) that builds
    /// and passes its harness test out of the box.
    New(NewArgs),
    /// Compile a plugin upload for the host that started this process:
    /// the component on stdin, machine code on stdout (internal).
    #[command(name = "__compile", hide = true)]
    Compile(CompileArgs),
}

/// Limits of a compile process, set by the host that starts it.
#[derive(Debug, Clone, clap::Args)]
pub struct CompileArgs {
    /// CPU seconds the compile may use.
    #[arg(long)]
    pub cpu_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
