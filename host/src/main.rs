//! The `switchyard` binary: parse the command line, set up logging, and run.

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches};
use std::io::IsTerminal as _;
use switchyard::cli::{Cli, Command, NewArgs, PluginToolsArgs, ServeArgs, TestArgs};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turn transparent huge pages off for this process. The allocator asks
/// for them on its arenas, and the first touch of each 2 MiB then zeroes
/// (and, when the kernel has none free, compacts memory for) a whole huge
/// page in whatever thread touched it: a plugin thread spent up to 24 ms in
/// one such fault, and a 200,000-message drain took about 15 % longer and
/// grew the process by about 35 MiB more (docs/performance.md,
/// "Transparent huge pages"). Redis does the same.
fn no_transparent_huge_pages() {
    let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
    // SAFETY: PR_SET_THP_DISABLE reads its flag and requires the other
    // arguments to be zero; it changes only how this process's memory is
    // backed. A kernel that refuses it (older than 3.15) leaves huge pages
    // as the system configures them.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused) };
}

fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    // The matches tell a flag or variable from a default (for --config).
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let cli = match cli.command.remote() {
        Ok((remote, command)) => std::process::exit(switchyard::cli::run_remote(&remote, command)),
        Err(command) => Cli { command: *command },
    };
    if let Command::Completions { shell } = &cli.command {
        use std::io::Write as _;
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "switchyard", &mut script);
        // A reader that stops early (`| head`) is not an error.
        let _ = std::io::stdout().write_all(&script);
        return Ok(());
    }
    if let Command::Compile(args) = &cli.command {
        std::process::exit(switchyard::broker::compile::child(args.cpu_secs));
    }
    if let Command::Test(args) = &cli.command {
        test(args);
    }
    if let Command::PluginTools(args) = &cli.command {
        plugin_tools(args);
    }
    if let Command::New(args) = &cli.command {
        new(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve(args) => {
            let flags = matches
                .subcommand_matches("serve")
                .expect("serve was parsed");
            let args = args.with_file(flags).unwrap_or_else(|message| {
                eprintln!("switchyard serve: {message}");
                std::process::exit(2)
            });
            if args.print_config {
                let config = args.config()?;
                print!(
                    "{}",
                    config.to_toml(&switchyard::config::log_filter(args.log.as_deref()))
                );
                return Ok(());
            }
            runtime.block_on(serve(args))
        }
        Command::Test(_) => unreachable!("handled above"),
        _ => unreachable!("handled above"),
    }
}

/// `switchyard test`: print the report; exit 0 if every expectation held,
/// 1 if one did not, 2 if the run could not happen.
fn test(args: &TestArgs) -> ! {
    match args.run() {
        Ok(report) => {
            print!("{}", report.text);
            std::process::exit(if report.passed { 0 } else { 1 })
        }
        Err(message) => {
            eprintln!("switchyard test: {message}");
            std::process::exit(2)
        }
    }
}

/// `switchyard new`: say what was created and how to go on; exit 2 on failure.
fn new(args: &NewArgs) -> ! {
    let created = args.run().map(|dir| {
        format!(
            "created {}: ./build.sh builds it, ./test.sh runs it on the harness",
            dir.display()
        )
    });
    finish("new", created)
}

/// `switchyard plugin-tools`: print the one-line summary; exit 2 on failure.
fn plugin_tools(args: &PluginToolsArgs) -> ! {
    finish("plugin-tools", args.run().map_err(|e| e.to_string()))
}

/// Print a command's summary and exit 0, or its error and exit 2.
fn finish(command: &str, result: Result<String, String>) -> ! {
    match result {
        Ok(summary) => {
            println!("{summary}");
            std::process::exit(0)
        }
        Err(error) => {
            eprintln!("switchyard {command}: {error}");
            std::process::exit(2)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log.as_deref())?;
    let config = args.config()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Handle signals before announcing the address, so a SIGTERM sent as soon
    // as the line appears still shuts down gracefully.
    let shutdown = shutdown_signal()?;
    // Tests and scripts parse this line for the real port (with port 0).
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!("switchyard listening on {scheme}://{addr}");
    switchyard::run(config, listener, shutdown).await?;
    Ok(())
}

/// Log to stderr with the filter from `--log`/`SWITCHYARD_LOG`, else
/// `RUST_LOG`, else `info`.
fn init_logging(flag: Option<&str>) -> anyhow::Result<()> {
    let directives = switchyard::config::log_filter(flag);
    let filter = EnvFilter::try_new(&directives)
        .with_context(|| format!("invalid log filter {directives:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}
