//! `switchyard serve`: flags, environment variables and a config file →
//! [`Config`]. A flag wins over its variable, which wins over the file,
//! which wins over the default.

use crate::config::{self, Config, Limits, Secret, Tokens};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Flags of `switchyard serve`. Each may also be set by its environment
/// variable or in the config file; a flag wins over the variable, the
/// variable over the file.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (the names as in
    /// `--print-config`; tokens may also come from files: `admin_file = ..`).
    /// Unknown keys are refused.
    #[arg(long, value_name = "FILE", env = config::ENV_CONFIG)]
    pub config: Option<PathBuf>,

    /// Print the configuration in effect (as TOML, secrets masked) and exit.
    #[arg(long)]
    pub print_config: bool,

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

    /// Consume bearer token: may lease and settle messages of pull
    /// subscriptions, and make GET calls.
    #[arg(long, env = config::ENV_CONSUME_TOKEN, hide_env_values = true)]
    pub consume_token: Option<String>,

    /// Sync the WAL every this many milliseconds instead of before answering
    /// each publish. Acknowledged publishes then survive a process crash but
    /// a power loss may lose the last interval. Default: sync every publish.
    #[arg(long, env = config::ENV_FSYNC_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub fsync_interval_ms: Option<u64>,

    /// An address range (CIDR) that plugins' outbound HTTP may reach
    /// although it is not public, e.g. 127.0.0.0/8 or 10.1.0.0/16.
    /// Repeatable; the variable takes a comma-separated list. Default: only
    /// public addresses.
    #[arg(long = "egress-allow-cidr", value_name = "CIDR", env = config::ENV_EGRESS_ALLOW_CIDR, value_delimiter = ',')]
    pub egress_allow_cidr: Vec<String>,

    /// A PEM file of extra root certificates outbound HTTPS trusts (an
    /// internal CA), besides the webpki roots.
    #[arg(long, value_name = "FILE", env = config::ENV_EGRESS_CA_FILE)]
    pub egress_ca_file: Option<PathBuf>,

    /// Export traces of the message path (publish, attempts, commits) over
    /// OTLP/HTTP to this collector, e.g. http://127.0.0.1:4318. Default: no
    /// export.
    #[arg(long, value_name = "URL", env = config::ENV_OTLP_ENDPOINT)]
    pub otlp_endpoint: Option<String>,

    /// Carry a W3C trace context (`traceparent`) on messages, from publish
    /// through attempts to plugin publications and outbound requests.
    /// `false`: the host neither starts nor continues traces.
    #[arg(long, value_name = "BOOL", env = config::ENV_TRACE_CONTEXT, default_value_t = true, action = clap::ArgAction::Set)]
    pub trace_context: bool,

    /// Serve HTTPS with this certificate chain (PEM); SIGHUP reads it and
    /// --tls-key again without dropping connections.
    #[arg(long, value_name = "FILE", env = config::ENV_TLS_CERT, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", env = config::ENV_TLS_KEY, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Cluster mode: keep topics on this NATS JetStream cluster, shared with
    /// every host pointed at it (nats://host:port of any of its nodes;
    /// repeatable, or comma-separated). Default: the embedded store.
    #[arg(long, value_name = "URL", env = config::ENV_CLUSTER, value_delimiter = ',')]
    pub cluster: Vec<String>,

    /// Cluster mode: copies JetStream keeps of each stream (1, 3 or 5).
    #[arg(long, env = config::ENV_CLUSTER_REPLICAS, default_value_t = config::DEFAULT_CLUSTER_REPLICAS)]
    pub cluster_replicas: usize,

    /// Cluster mode: compact a subscription's journal (append a snapshot
    /// of its state, drop the entries before it) once this many KiB were
    /// appended since its last snapshot (and twice that snapshot's size).
    #[arg(long, value_name = "KIB", env = config::ENV_CLUSTER_JOURNAL_COMPACT_KIB, default_value_t = config::DEFAULT_CLUSTER_JOURNAL_COMPACT_KIB)]
    pub cluster_journal_compact_kib: u64,

    /// Most threads running plugin calls at once, across all subscriptions.
    #[arg(long, env = config::ENV_WORKER_THREADS, default_value_t = Limits::default().worker_threads)]
    pub worker_threads: usize,

    /// Most plugin instances alive at once. When full, idle instances are
    /// dropped, then messages wait (attempts uncounted).
    #[arg(long, env = config::ENV_MAX_INSTANCES, default_value_t = Limits::default().max_instances)]
    pub max_instances: u32,

    /// Linear memory one plugin instance may grow to, in MiB.
    #[arg(long, env = config::ENV_INSTANCE_MEMORY_MIB, default_value_t = Limits::default().instance_memory_mib)]
    pub instance_memory_mib: u32,

    /// Plugin calls past 10 ms that may run at once, across all plugins;
    /// the others wait their turn without CPU (their timeouts running), so
    /// looping plugins never fill every core. 0: no limit. Default: the
    /// cores less one, at least 1.
    #[arg(long, env = config::ENV_LONG_CALL_SLOTS, default_value_t = Limits::default().long_call_slots)]
    pub long_call_slots: usize,

    /// CPU that long calls and suspect plugins' calls (the last one ran
    /// long or hit its memory limit) may use together, in percent of one
    /// core; they wait without CPU for more. Keeps untrusted plugins from
    /// raising everyone's latency; slows legitimate long computations to
    /// the budget. 0: no budget.
    #[arg(long, env = config::ENV_LONG_CALL_CPU_PERCENT, default_value_t = Limits::default().long_call_cpu_percent)]
    pub long_call_cpu_percent: u32,

    /// Longest a plugin upload may take to compile, in seconds.
    #[arg(long, env = config::ENV_COMPILE_TIMEOUT_SECS, default_value_t = Limits::default().compile_timeout_secs)]
    pub compile_timeout_secs: u64,

    /// Memory one upload's compile may use, in MiB (each upload compiles in
    /// a process of its own, killed at --compile-timeout-secs).
    #[arg(long, env = config::ENV_COMPILE_MEMORY_MIB, default_value_t = Limits::default().compile_memory_mib)]
    pub compile_memory_mib: u64,

    /// Longest the host waits for a client's request headers (and keeps an
    /// idle connection), or for the next byte of a request body (then 408).
    #[arg(long, env = config::ENV_HTTP_TIMEOUT_SECS, default_value_t = Limits::default().http_timeout_secs)]
    pub http_timeout_secs: u64,

    /// Most open HTTP connections; more wait to be accepted.
    #[arg(long, env = config::ENV_MAX_CONNECTIONS, default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,

    /// Free space to keep on the data directory's filesystem, in MiB. Below
    /// it publishes and plugin uploads get 507 and delivery pauses; both
    /// resume once space is freed. 0 turns the reserve off.
    #[arg(long, env = config::ENV_MIN_FREE_DISK_MIB, default_value_t = Limits::default().min_free_disk_mib)]
    pub min_free_disk_mib: u64,

    /// Log filter, e.g. `info` or `switchyard=debug,info` (tracing
    /// EnvFilter syntax). Falls back to RUST_LOG, then `info`.
    #[arg(long, env = config::ENV_LOG)]
    pub log: Option<String>,
}

/// The config file: every setting optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    fsync_interval_ms: Option<u64>,
    egress_allow_cidr: Option<Vec<String>>,
    egress_ca_file: Option<PathBuf>,
    otlp_endpoint: Option<String>,
    trace_context: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    cluster: Option<Vec<String>>,
    cluster_replicas: Option<usize>,
    cluster_journal_compact_kib: Option<u64>,
    log: Option<String>,
    #[serde(default)]
    tokens: FileTokens,
    #[serde(default)]
    limits: FileLimits,
}

/// Each token inline, or read from a file (its content, trimmed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTokens {
    admin: Option<String>,
    admin_file: Option<PathBuf>,
    publish: Option<String>,
    publish_file: Option<PathBuf>,
    read: Option<String>,
    read_file: Option<PathBuf>,
    consume: Option<String>,
    consume_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    worker_threads: Option<usize>,
    max_instances: Option<u32>,
    instance_memory_mib: Option<u32>,
    long_call_slots: Option<usize>,
    long_call_cpu_percent: Option<u32>,
    compile_timeout_secs: Option<u64>,
    compile_memory_mib: Option<u64>,
    http_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    min_free_disk_mib: Option<u64>,
}

/// A token given inline or as a file, not both.
fn token(
    role: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "tokens.{role} and tokens.{role}_file are both set; keep one"
        )),
        (Some(t), None) => Ok(Some(t)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| format!("tokens.{role}_file {}: {e}", path.display())),
        (None, None) => Ok(None),
    }
}

impl ServeArgs {
    /// Fill what neither a flag nor a variable set from the `--config` file.
    /// `matches` are the `serve` subcommand's, to tell set values from
    /// defaults.
    pub fn with_file(mut self, matches: &ArgMatches) -> Result<Self, String> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = read_file(&path)?;
        let unset = |id: &str| {
            matches!(
                matches.value_source(id),
                None | Some(ValueSource::DefaultValue)
            )
        };
        macro_rules! take {
            ($field:ident, $value:expr) => {
                if unset(stringify!($field)) {
                    if let Some(value) = $value {
                        self.$field = value;
                    }
                }
            };
        }
        take!(listen, file.listen);
        take!(data_dir, file.data_dir);
        take!(fsync_interval_ms, file.fsync_interval_ms.map(Some));
        take!(egress_allow_cidr, file.egress_allow_cidr);
        take!(egress_ca_file, file.egress_ca_file.map(Some));
        take!(otlp_endpoint, file.otlp_endpoint.map(Some));
        take!(trace_context, file.trace_context);
        take!(tls_cert, file.tls_cert.map(Some));
        take!(tls_key, file.tls_key.map(Some));
        take!(cluster, file.cluster);
        take!(cluster_replicas, file.cluster_replicas);
        take!(
            cluster_journal_compact_kib,
            file.cluster_journal_compact_kib
        );
        take!(log, file.log.map(Some));
        let t = file.tokens;
        take!(token, token("admin", t.admin, t.admin_file)?.map(Some));
        take!(
            publish_token,
            token("publish", t.publish, t.publish_file)?.map(Some)
        );
        take!(read_token, token("read", t.read, t.read_file)?.map(Some));
        take!(
            consume_token,
            token("consume", t.consume, t.consume_file)?.map(Some)
        );
        let l = file.limits;
        take!(worker_threads, l.worker_threads);
        take!(max_instances, l.max_instances);
        take!(instance_memory_mib, l.instance_memory_mib);
        take!(long_call_slots, l.long_call_slots);
        take!(long_call_cpu_percent, l.long_call_cpu_percent);
        take!(compile_timeout_secs, l.compile_timeout_secs);
        take!(compile_memory_mib, l.compile_memory_mib);
        take!(http_timeout_secs, l.http_timeout_secs);
        take!(max_connections, l.max_connections);
        take!(min_free_disk_mib, l.min_free_disk_mib);
        Ok(self)
    }

    /// The host configuration these flags describe, validated.
    pub fn config(&self) -> Result<Config, config::ConfigError> {
        let config = Config {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            tokens: Tokens {
                admin: self.token.clone().map(Secret::new),
                publish: self.publish_token.clone().map(Secret::new),
                read: self.read_token.clone().map(Secret::new),
                consume: self.consume_token.clone().map(Secret::new),
            },
            fsync_interval_ms: self.fsync_interval_ms,
            egress_allow_cidr: self.egress_allow_cidr.clone(),
            egress_ca_file: self.egress_ca_file.clone(),
            otlp_endpoint: self.otlp_endpoint.clone(),
            trace_context: self.trace_context,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            cluster: self.cluster.clone(),
            cluster_replicas: self.cluster_replicas,
            cluster_journal_compact_kib: self.cluster_journal_compact_kib,
            limits: Limits {
                worker_threads: self.worker_threads,
                max_instances: self.max_instances,
                instance_memory_mib: self.instance_memory_mib,
                long_call_slots: self.long_call_slots,
                long_call_cpu_percent: self.long_call_cpu_percent,
                compile_timeout_secs: self.compile_timeout_secs,
                compile_memory_mib: self.compile_memory_mib,
                http_timeout_secs: self.http_timeout_secs,
                max_connections: self.max_connections,
                min_free_disk_mib: self.min_free_disk_mib,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
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
        assert!(config.egress_allow_cidr.is_empty());
    }

    #[test]
    fn egress_ranges_are_repeatable_and_checked() {
        let args = serve(&[
            "--egress-allow-cidr",
            "127.0.0.0/8",
            "--egress-allow-cidr",
            "10.1.2.3/16,::1/128",
        ]);
        let config = args.config().expect("valid");
        let ranges: Vec<String> = config
            .egress_ranges()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(ranges, ["127.0.0.0/8", "10.1.0.0/16", "::1/128"]);
        let err = serve(&["--egress-allow-cidr", "localhost"])
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("egress-allow-cidr"), "{err}");
    }

    #[test]
    fn public_listen_without_token_is_refused() {
        let args = super::ServeArgs {
            config: None,
            print_config: false,
            listen: "0.0.0.0:9000".parse().expect("test address"),
            data_dir: "d".into(),
            token: None,
            publish_token: None,
            read_token: None,
            consume_token: None,
            fsync_interval_ms: None,
            egress_allow_cidr: Vec::new(),
            egress_ca_file: None,
            otlp_endpoint: None,
            trace_context: true,
            tls_cert: None,
            tls_key: None,
            cluster: Vec::new(),
            cluster_replicas: 3,
            cluster_journal_compact_kib: crate::config::DEFAULT_CLUSTER_JOURNAL_COMPACT_KIB,
            worker_threads: 1,
            max_instances: 1,
            instance_memory_mib: 1,
            long_call_slots: 1,
            long_call_cpu_percent: 0,
            compile_timeout_secs: 1,
            compile_memory_mib: 1,
            http_timeout_secs: 1,
            max_connections: 1,
            min_free_disk_mib: 0,
            log: None,
        };
        let err = args.config().unwrap_err();
        assert!(err.to_string().contains("refusing to listen"), "{err}");
    }
}
