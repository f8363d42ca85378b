//! The `switchyard` command line (clap derive).
//!
//! `serve` runs the host. Client commands that call the HTTP API (publish,
//! topics, plugins, …) will be further [`Command`] variants beside it, each in
//! its own file; they reach the host only over HTTP, never through the broker.

mod serve;

use clap::{Parser, Subcommand};

pub use serve::ServeArgs;

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
