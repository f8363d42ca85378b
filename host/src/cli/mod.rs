//! The `switchyard` command line (clap derive).
//!
//! `serve` runs the host; `test` runs a plugin on the harness (the host's
//! delivery engine on virtual time, no server). The client commands (`topic`,
//! `publish`, `read`, `plugin`, `sub`, `dlq`, `trace`, `status`; `remote.rs`)
//! reach a host only over its HTTP API.

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
mod remote;
mod serve;
mod test;

use clap::{Parser, Subcommand};

pub use new::{Lang, NewArgs};
pub use plugin_tools::PluginToolsArgs;
pub use remote::{run as run_remote, Remote, RemoteCommand};
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

impl Command {
    /// The client command this is, with where to find the host, if it is one.
    pub fn remote(self) -> Result<(Remote, RemoteCommand), Box<Command>> {
        Ok(match self {
            Command::Topic(c) => (c.remote, RemoteCommand::Topic(c.command)),
            Command::Publish(c) => (c.remote.clone(), RemoteCommand::Publish(c)),
            Command::Read(c) => (c.remote.clone(), RemoteCommand::Read(c)),
            Command::Plugin(c) => (c.remote, RemoteCommand::Plugin(c.command)),
            Command::Sub(c) => (c.remote, RemoteCommand::Sub(c.command)),
            Command::Dlq(c) => (c.remote, RemoteCommand::Dlq(c.command)),
            Command::Trace(c) => (c.remote.clone(), RemoteCommand::Trace(c)),
            Command::Status(c) => (c.remote, RemoteCommand::Status),
            other => return Err(Box::new(other)),
        })
    }
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
    /// Topics: create, list, get, update, delete.
    Topic(remote::On<remote::TopicCommand>),
    /// Publish a message, or many (--lines).
    Publish(remote::PublishArgs),
    /// Read a partition's messages.
    Read(remote::ReadArgs),
    /// Plugins: deploy, list, get, delete.
    Plugin(remote::On<remote::PluginCommand>),
    /// Subscriptions: create, list, get, pause, resume, delete.
    Sub(remote::On<remote::SubCommand>),
    /// Dead letters: list, show, redrive, purge.
    Dlq(remote::On<remote::DlqCommand>),
    /// One message's delivery record in a subscription: every attempt.
    ///
    /// Example: switchyard trace billing orders-2-17
    Trace(remote::TraceArgs),
    /// The host at a glance: readiness, topics, subscriptions with lag.
    Status(remote::StatusArgs),
    /// Print a shell completion script.
    ///
    /// Example: switchyard completions bash > /etc/bash_completion.d/switchyard
    Completions { shell: clap_complete::Shell },
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
