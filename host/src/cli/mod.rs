//! The `switchyard` command line (clap derive).
//!
//! `serve` runs the host; `test` runs a plugin on the harness (the host's
//! delivery engine on virtual time, no server). Client commands that call the
//! HTTP API (publish, topics, plugins, …) will be further [`Command`] variants
//! beside them, each in its own file; they reach the host only over HTTP.

mod serve;
mod test;

use clap::{Parser, Subcommand};

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
