//! `switchyard serve`: flags and environment variables → [`Config`].

use crate::config::{self, Config, Secret, Tokens};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `switchyard serve`. Each may also be set by its environment
/// variable; a flag wins over the variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but a loopback address requires --token.
    /// Port 0 picks a free port; the real address is printed at start.
    #[arg(long, env = config::ENV_LISTEN, default_value = config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Directory for the database, plugins and compiled-code cache (created
    /// if missing).
    #[arg(long, env = config::ENV_DATA_DIR, default_value = config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Admin bearer token: allows every call. When any token is set, every
    /// /v1 call needs one.
    #[arg(long, env = config::ENV_TOKEN, hide_env_values = true)]
    pub token: Option<String>,

    /// Publish bearer token: may publish messages and make GET calls.
    #[arg(long, env = config::ENV_PUBLISH_TOKEN, hide_env_values = true)]
    pub publish_token: Option<String>,

    /// Read bearer token: GET calls only.
    #[arg(long, env = config::ENV_READ_TOKEN, hide_env_values = true)]
    pub read_token: Option<String>,

    /// Sync the WAL every this many milliseconds instead of before answering
    /// each publish. Acknowledged publishes then survive a process crash but
    /// a power loss may lose the last interval. Default: sync every publish.
    #[arg(long, env = config::ENV_FSYNC_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub fsync_interval_ms: Option<u64>,

    /// Log filter, e.g. `info` or `switchyard=debug,info` (tracing
    /// EnvFilter syntax). Falls back to RUST_LOG, then `info`.
    #[arg(long, env = config::ENV_LOG)]
    pub log: Option<String>,
}

impl ServeArgs {
    /// The host configuration these flags describe, validated.
    pub fn config(&self) -> Result<Config, config::ConfigError> {
        let config = Config {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            tokens: Tokens {
                admin: self.token.clone().map(Secret::new),
                publish: self.publish_token.clone().map(Secret::new),
                read: self.read_token.clone().map(Secret::new),
            },
            fsync_interval_ms: self.fsync_interval_ms,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn serve(args: &[&str]) -> super::ServeArgs {
        let cli = Cli::try_parse_from(["switchyard", "serve"].iter().chain(args)).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        args
    }

    #[test]
    fn flags_build_the_config() {
        let args = serve(&[
            "--listen",
            "0.0.0.0:9000",
            "--data-dir",
            "/d",
            "--token",
            "t",
            "--read-token",
            "r",
        ]);
        let config = args.config().expect("valid");
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.data_dir.to_str(), Some("/d"));
        assert_eq!(config.tokens.admin.as_ref().map(|s| s.expose()), Some("t"));
        assert_eq!(config.tokens.read.as_ref().map(|s| s.expose()), Some("r"));
    }

    #[test]
    fn public_listen_without_token_is_refused() {
        let args = super::ServeArgs {
            listen: "0.0.0.0:9000".parse().expect("test address"),
            data_dir: "d".into(),
            token: None,
            publish_token: None,
            read_token: None,
            fsync_interval_ms: None,
            log: None,
        };
        let err = args.config().unwrap_err();
        assert!(err.to_string().contains("refusing to listen"), "{err}");
    }
}
