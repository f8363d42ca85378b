//! The host's one typed configuration: where it listens, where it keeps its
//! data, and who may call it. Built once (by the CLI from flags and
//! environment), validated once by [`Config::validate`], then passed explicitly
//! to [`crate::run`]. Nothing deeper in the host reads the environment.
//!
//! The names of the environment variables live here, so the CLI and the docs
//! agree on them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Environment variable for [`Config::listen`].
pub const ENV_LISTEN: &str = "SWITCHYARD_LISTEN";
/// Environment variable for [`Config::data_dir`].
pub const ENV_DATA_DIR: &str = "SWITCHYARD_DATA_DIR";
/// Environment variable for [`Tokens::admin`].
pub const ENV_TOKEN: &str = "SWITCHYARD_TOKEN";
/// Environment variable for [`Tokens::publish`].
pub const ENV_PUBLISH_TOKEN: &str = "SWITCHYARD_PUBLISH_TOKEN";
/// Environment variable for [`Tokens::read`].
pub const ENV_READ_TOKEN: &str = "SWITCHYARD_READ_TOKEN";
/// Environment variable for [`Tokens::consume`].
pub const ENV_CONSUME_TOKEN: &str = "SWITCHYARD_CONSUME_TOKEN";
/// Environment variable for [`Config::fsync_interval_ms`].
pub const ENV_FSYNC_INTERVAL_MS: &str = "SWITCHYARD_FSYNC_INTERVAL_MS";
/// Environment variable for [`Config::egress_allow_cidr`] (comma-separated).
pub const ENV_EGRESS_ALLOW_CIDR: &str = "SWITCHYARD_EGRESS_ALLOW_CIDR";
/// Environment variable for [`Config::egress_ca_file`].
pub const ENV_EGRESS_CA_FILE: &str = "SWITCHYARD_EGRESS_CA_FILE";
/// Environment variable for [`Config::otlp_endpoint`].
pub const ENV_OTLP_ENDPOINT: &str = "SWITCHYARD_OTLP_ENDPOINT";
/// Environment variable for [`Config::trace_context`].
pub const ENV_TRACE_CONTEXT: &str = "SWITCHYARD_TRACE_CONTEXT";
/// Environment variable for [`Config::cluster`] (comma-separated).
pub const ENV_CLUSTER: &str = "SWITCHYARD_CLUSTER";
/// Environment variable for [`Config::cluster_replicas`].
pub const ENV_CLUSTER_REPLICAS: &str = "SWITCHYARD_CLUSTER_REPLICAS";
/// Default of [`Config::cluster_replicas`].
pub const DEFAULT_CLUSTER_REPLICAS: usize = 3;
/// Environment variable for [`Config::cluster_journal_compact_kib`].
pub const ENV_CLUSTER_JOURNAL_COMPACT_KIB: &str = "SWITCHYARD_CLUSTER_JOURNAL_COMPACT_KIB";
/// Default of [`Config::cluster_journal_compact_kib`]: 8 MiB.
pub const DEFAULT_CLUSTER_JOURNAL_COMPACT_KIB: u64 =
    crate::broker::DEFAULT_JOURNAL_COMPACT_BYTES >> 10;
/// Environment variable for [`Limits::worker_threads`].
pub const ENV_WORKER_THREADS: &str = "SWITCHYARD_WORKER_THREADS";
/// Environment variable for [`Limits::max_instances`].
pub const ENV_MAX_INSTANCES: &str = "SWITCHYARD_MAX_INSTANCES";
/// Environment variable for [`Limits::long_call_slots`].
pub const ENV_LONG_CALL_SLOTS: &str = "SWITCHYARD_LONG_CALL_SLOTS";
/// Environment variable for [`Limits::long_call_cpu_percent`].
pub const ENV_LONG_CALL_CPU_PERCENT: &str = "SWITCHYARD_LONG_CALL_CPU_PERCENT";
/// Environment variable for [`Limits::instance_memory_mib`].
pub const ENV_INSTANCE_MEMORY_MIB: &str = "SWITCHYARD_INSTANCE_MEMORY_MIB";
/// Environment variable for [`Limits::compile_timeout_secs`].
pub const ENV_COMPILE_TIMEOUT_SECS: &str = "SWITCHYARD_COMPILE_TIMEOUT_SECS";
/// Environment variable for [`Limits::compile_memory_mib`].
pub const ENV_COMPILE_MEMORY_MIB: &str = "SWITCHYARD_COMPILE_MEMORY_MIB";
/// Environment variable for [`Limits::http_timeout_secs`].
pub const ENV_HTTP_TIMEOUT_SECS: &str = "SWITCHYARD_HTTP_TIMEOUT_SECS";
/// Environment variable for [`Limits::max_connections`].
pub const ENV_MAX_CONNECTIONS: &str = "SWITCHYARD_MAX_CONNECTIONS";
/// Environment variable for [`Limits::min_free_disk_mib`].
pub const ENV_MIN_FREE_DISK_MIB: &str = "SWITCHYARD_MIN_FREE_DISK_MIB";
/// Environment variable for [`Config::tls_cert`].
pub const ENV_TLS_CERT: &str = "SWITCHYARD_TLS_CERT";
/// Environment variable for [`Config::tls_key`].
pub const ENV_TLS_KEY: &str = "SWITCHYARD_TLS_KEY";
/// Environment variable for the `serve --config` file.
pub const ENV_CONFIG: &str = "SWITCHYARD_CONFIG";
/// Environment variable for the log filter (falls back to `RUST_LOG`).
pub const ENV_LOG: &str = "SWITCHYARD_LOG";

/// Default listen address: loopback only, so a fresh install is not reachable
/// from the network until an operator chooses so (and sets a token).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./switchyard-data";

/// Log filter when neither `--log`, `SWITCHYARD_LOG` nor `RUST_LOG` is set.
pub const DEFAULT_LOG: &str = "info";

/// The log filter (tracing `EnvFilter` syntax): the `--log` flag (which clap
/// fills from `SWITCHYARD_LOG`), else `RUST_LOG`, else [`DEFAULT_LOG`].
pub fn log_filter(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_LOG.to_owned())
}

/// Everything [`crate::run`] needs to serve.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on. Default `127.0.0.1:7070`. Listening on
    /// anything but a loopback address requires an admin token. Use port 0 to
    /// let the OS pick a free port (the chosen address is printed at start).
    pub listen: SocketAddr,
    /// Directory holding the RocksDB database, plugin blobs and compiled-code
    /// cache. Created if missing. Default `./switchyard-data`.
    pub data_dir: PathBuf,
    /// Bearer tokens accepted by the HTTP API. With none configured every call
    /// is allowed (loopback only).
    #[serde(default)]
    pub tokens: Tokens,
    /// WAL sync policy. `None` (the default): a publish is answered only after
    /// its write is synced to disk (concurrent publishes share one sync).
    /// `Some(ms)`: a publish is answered once written to the WAL — it survives
    /// a crash of the process, not of the machine — and the WAL is synced every
    /// `ms` milliseconds; a power loss may lose up to that window of
    /// acknowledged messages. Trades durability for publish latency.
    #[serde(default)]
    pub fsync_interval_ms: Option<u64>,
    /// Address ranges (CIDR, e.g. `127.0.0.0/8`, `10.1.0.0/16`) that
    /// plugins' outbound HTTP requests may reach although they are not
    /// public. By default only public addresses are: loopback, private
    /// networks, link-local (the cloud metadata address) and the like are
    /// refused whatever a subscription's `egress.allow` says.
    #[serde(default)]
    pub egress_allow_cidr: Vec<String>,
    /// A PEM file of extra root certificates that outbound HTTPS trusts,
    /// besides the webpki (Mozilla) roots: an internal CA.
    #[serde(default)]
    pub egress_ca_file: Option<PathBuf>,
    /// Export traces of the message path over OTLP/HTTP (protobuf) to this
    /// collector URL (`http://host:4318`, or the full `/v1/traces` URL).
    /// Without it nothing is exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Carry a W3C trace context on messages: publishes give each message
    /// without one a `traceparent`, attempts and plugin publications
    /// continue it. Off, the host neither starts nor continues traces (a
    /// producer's `traceparent` is then an ordinary header), and nothing is
    /// exported.
    #[serde(default = "on")]
    pub trace_context: bool,
    /// Serve HTTPS with this certificate chain (PEM), read again on SIGHUP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of [`Config::tls_cert`] (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Cluster mode: the NATS JetStream servers (`nats://host:port`, any
    /// of the cluster's nodes) where topics live, shared with every host
    /// pointed at them (docs/cluster.md). Empty (the default): the embedded
    /// RocksDB store in `data_dir`.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// Cluster mode: copies JetStream keeps of each stream and bucket (1,
    /// 3 or 5; at most the cluster's node count). Default 3.
    #[serde(default = "default_replicas")]
    pub cluster_replicas: usize,
    /// Cluster mode: a subscription's journal is compacted (a snapshot of
    /// its state appended, the entries before it dropped) once this many
    /// KiB were appended since its last snapshot, and twice that
    /// snapshot's size. Default 8 MiB.
    #[serde(default = "default_compact_kib")]
    pub cluster_journal_compact_kib: u64,
    /// Limits of the plugin runtime.
    #[serde(default)]
    pub limits: Limits,
}

/// Limits of the plugin runtime: what a host spends on plugins at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most threads running plugin calls at once, across all subscriptions
    /// (a subscription's `concurrency` caps its own share). Threads start
    /// with demand and stop when idle; beyond the limit, work queues.
    /// Default 256.
    pub worker_threads: usize,
    /// Most plugin instances alive at once (running, or kept for reuse under
    /// `worker` isolation). Address space for each is reserved at start.
    /// When full, idle instances are dropped and, failing that, messages
    /// wait (their attempts uncounted). Default 1000.
    pub max_instances: u32,
    /// Linear memory one plugin instance may grow to, in MiB. Default 64.
    pub instance_memory_mib: u32,
    /// How many plugin calls that have run past 10 ms may run at once,
    /// across all plugins; the others wait their turn (20 ms each) without
    /// CPU, their timeouts running. Keeps a core for the host and short
    /// calls while plugins loop or grind. 0: no limit. Default: the cores
    /// less one, at least 1.
    pub long_call_slots: usize,
    /// CPU that long calls and the calls of suspect plugins (those whose
    /// last call ran long or hit its memory limit) may use together, in
    /// percent of one core: they wait, without CPU, for the budget to
    /// refill, and a suspect plugin's call takes its slot before it starts.
    /// On a host shared with untrusted plugins this keeps them from
    /// raising everyone else's latency; legitimate long computations slow
    /// down to the budget. 0: no budget (only the slots). Default 0.
    pub long_call_cpu_percent: u32,
    /// Longest a plugin upload may take to compile, in seconds (and twice
    /// that in CPU time). Default 60.
    pub compile_timeout_secs: u64,
    /// Memory one upload's compile may use, in MiB (it runs in a process of
    /// its own). Default 4096.
    pub compile_memory_mib: u64,
    /// Longest the host waits for a client: for a request's headers (an
    /// idle keep-alive connection is closed after it too) and for the next
    /// byte of a request's body (then 408). Default 30.
    pub http_timeout_secs: u64,
    /// Most open HTTP connections; more wait to be accepted. Default 1024.
    pub max_connections: usize,
    /// Free space kept on the data directory's filesystem, in MiB: below it
    /// publishes and uploads are refused (507) and delivery pauses, until
    /// space is back. 0 turns the reserve off. Default 512.
    pub min_free_disk_mib: u64,
}

/// Bounds of [`Limits`]' fields, checked by [`Config::validate`].
pub const MAX_WORKER_THREADS: usize = 4096;
pub const MAX_INSTANCES: u32 = 10_000;
pub const MAX_INSTANCE_MEMORY_MIB: u32 = 4096;
/// A thousand cores.
pub const MAX_LONG_CALL_CPU_PERCENT: u32 = 100_000;

impl Default for Limits {
    /// The broker's and the runtime's own defaults.
    fn default() -> Self {
        let runtime = crate::runtime::RuntimeConfig::default();
        Self {
            worker_threads: crate::broker::DEFAULT_WORKER_THREADS,
            max_instances: runtime.max_instances,
            instance_memory_mib: (runtime.memory_limit_bytes >> 20) as u32,
            long_call_slots: runtime.long_call_slots,
            long_call_cpu_percent: runtime.long_call_cpu_percent,
            compile_timeout_secs: crate::broker::DEFAULT_COMPILE_TIMEOUT.as_secs(),
            compile_memory_mib: 4096,
            http_timeout_secs: 30,
            max_connections: 1024,
            min_free_disk_mib: crate::broker::DEFAULT_RESERVE_MIB,
        }
    }
}

/// Bearer tokens, one per role. Clients send `Authorization: Bearer <token>`.
/// When any token is configured, every `/v1` call needs one; `/healthz` and
/// `/readyz` never do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// Admin token: every call, including managing topics, plugins and
    /// subscriptions.
    pub admin: Option<Secret>,
    /// Publish token: may publish messages and read everything (GET).
    /// Requires an admin token.
    pub publish: Option<Secret>,
    /// Read token: GET calls only. Requires an admin token.
    pub read: Option<Secret>,
    /// Consume token: may lease and settle messages of pull subscriptions
    /// and make GET calls. Requires an admin token.
    #[serde(default)]
    pub consume: Option<Secret>,
}

impl Tokens {
    /// Whether any token is configured (and so `/v1` calls need one).
    pub fn any(&self) -> bool {
        self.admin.is_some()
            || self.publish.is_some()
            || self.read.is_some()
            || self.consume.is_some()
    }
}

/// A secret string whose `Debug` output does not reveal it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; only for comparing against what a client sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Written out (`serve --print-config`) masked, never in clear.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// The configuration as a config file would give it (TOML), tokens
    /// masked; `log` is the log filter in effect.
    pub fn to_toml(&self, log: &str) -> String {
        let mut table = toml::Table::try_from(self).expect("the config serializes");
        table.insert("log".into(), log.into());
        toml::to_string(&table).expect("a TOML table prints")
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "refusing to listen on {0} without a token: anyone who can reach it could \
         administer the host. Set --token (or {ENV_TOKEN}), or listen on a loopback \
         address such as 127.0.0.1"
    )]
    PublicWithoutToken(SocketAddr),
    #[error("--tls-cert and --tls-key go together: give both, or neither")]
    TlsHalf,
    #[error("the {0} token is empty")]
    EmptyToken(&'static str),
    #[error("a {0} token is set but no admin token: set --token (or {ENV_TOKEN}) as well")]
    RoleTokenWithoutAdmin(&'static str),
    #[error("the {0} and {1} tokens are the same; give each role its own token")]
    SharedToken(&'static str, &'static str),
    #[error("invalid --egress-allow-cidr {0:?}: use a CIDR range such as 127.0.0.0/8")]
    BadCidr(String),
    #[error("--{0} must be between 1 and {1}")]
    LimitOutOfRange(&'static str, u64),
    #[error("--{0} must be at most {1} (0: no limit)")]
    LimitTooHigh(&'static str, u64),
    #[error(
        "--long-call-cpu-percent budgets the long-call slots, which --long-call-slots 0 turns off"
    )]
    BudgetWithoutSlots,
    #[error("--otlp-endpoint exports traces, which --trace-context false turns off")]
    ExportWithoutContext,
    #[error("--cluster-replicas must be 1, 3 or 5, got {0}")]
    BadReplicas(usize),
    #[error("invalid --cluster server {0:?}: use nats://host:port (comma-separated for several)")]
    BadClusterUrl(String),
}

fn on() -> bool {
    true
}

fn default_replicas() -> usize {
    DEFAULT_CLUSTER_REPLICAS
}

fn default_compact_kib() -> u64 {
    DEFAULT_CLUSTER_JOURNAL_COMPACT_KIB
}

impl Config {
    /// A configuration with the defaults and no tokens.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            tokens: Tokens::default(),
            fsync_interval_ms: None,
            egress_allow_cidr: Vec::new(),
            egress_ca_file: None,
            otlp_endpoint: None,
            trace_context: true,
            tls_cert: None,
            tls_key: None,
            cluster: Vec::new(),
            cluster_replicas: DEFAULT_CLUSTER_REPLICAS,
            cluster_journal_compact_kib: DEFAULT_CLUSTER_JOURNAL_COMPACT_KIB,
            limits: Limits::default(),
        }
    }

    /// Check the rules that flags alone cannot express. [`crate::run`] calls
    /// this too, so a configuration built in code is held to the same rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let roles = [
            ("admin", &self.tokens.admin),
            ("publish", &self.tokens.publish),
            ("read", &self.tokens.read),
            ("consume", &self.tokens.consume),
        ];
        for (role, token) in roles {
            if token.as_ref().is_some_and(|t| t.expose().is_empty()) {
                return Err(ConfigError::EmptyToken(role));
            }
        }
        if self.tokens.admin.is_none() {
            if let Some((role, _)) = roles[1..].iter().find(|(_, t)| t.is_some()) {
                return Err(ConfigError::RoleTokenWithoutAdmin(role));
            }
        }
        for (i, (a, ta)) in roles.iter().enumerate() {
            for (b, tb) in &roles[i + 1..] {
                if ta.is_some() && ta == tb {
                    return Err(ConfigError::SharedToken(a, b));
                }
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsHalf);
        }
        if !self.listen.ip().is_loopback() && !self.tokens.any() {
            return Err(ConfigError::PublicWithoutToken(self.listen));
        }
        self.egress_ranges()?;
        if self.otlp_endpoint.is_some() && !self.trace_context {
            return Err(ConfigError::ExportWithoutContext);
        }
        if ![1, 3, 5].contains(&self.cluster_replicas) {
            return Err(ConfigError::BadReplicas(self.cluster_replicas));
        }
        if let Some(bad) = self.cluster.iter().find(|url| {
            let rest = url
                .strip_prefix("nats://")
                .or_else(|| url.strip_prefix("tls://"));
            rest.is_none_or(|r| r.is_empty() || r.contains(['/', ' ', ',']))
        }) {
            return Err(ConfigError::BadClusterUrl(bad.clone()));
        }
        let limits = &self.limits;
        let bounds = [
            (
                "worker-threads",
                limits.worker_threads as u64,
                MAX_WORKER_THREADS as u64,
            ),
            (
                "max-instances",
                limits.max_instances.into(),
                MAX_INSTANCES.into(),
            ),
            (
                "instance-memory-mib",
                limits.instance_memory_mib.into(),
                MAX_INSTANCE_MEMORY_MIB.into(),
            ),
            ("compile-timeout-secs", limits.compile_timeout_secs, 3600),
            ("compile-memory-mib", limits.compile_memory_mib, 1 << 20),
            ("http-timeout-secs", limits.http_timeout_secs, 3600),
            ("max-connections", limits.max_connections as u64, 65_536),
        ];
        if limits.long_call_cpu_percent > 0 && limits.long_call_slots == 0 {
            return Err(ConfigError::BudgetWithoutSlots);
        }
        if limits.long_call_cpu_percent > MAX_LONG_CALL_CPU_PERCENT {
            return Err(ConfigError::LimitTooHigh(
                "long-call-cpu-percent",
                MAX_LONG_CALL_CPU_PERCENT.into(),
            ));
        }
        if limits.long_call_slots > MAX_WORKER_THREADS {
            return Err(ConfigError::LimitTooHigh(
                "long-call-slots",
                MAX_WORKER_THREADS as u64,
            ));
        }
        for (flag, value, max) in bounds {
            if value == 0 || value > max {
                return Err(ConfigError::LimitOutOfRange(flag, max));
            }
        }
        Ok(())
    }

    /// [`Config::egress_allow_cidr`], parsed.
    pub fn egress_ranges(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.egress_allow_cidr
            .iter()
            .map(|c| {
                c.trim()
                    .parse::<ipnet::IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| ConfigError::BadCidr(c.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        listen: &str,
        admin: Option<&str>,
        publish: Option<&str>,
        read: Option<&str>,
    ) -> Config {
        Config {
            listen: listen.parse().expect("test address"),
            data_dir: "data".into(),
            fsync_interval_ms: None,
            egress_allow_cidr: Vec::new(),
            egress_ca_file: None,
            otlp_endpoint: None,
            trace_context: true,
            tls_cert: None,
            tls_key: None,
            cluster: Vec::new(),
            cluster_replicas: 3,
            cluster_journal_compact_kib: DEFAULT_CLUSTER_JOURNAL_COMPACT_KIB,
            limits: Limits::default(),
            tokens: Tokens {
                admin: admin.map(Secret::new),
                publish: publish.map(Secret::new),
                read: read.map(Secret::new),
                consume: None,
            },
        }
    }

    fn check(config: Config, expected: Result<(), ConfigError>) {
        assert_eq!(config.validate(), expected, "{config:?}");
    }

    #[test]
    fn cluster_servers_and_replicas_are_checked() {
        let mut c = config("127.0.0.1:7070", None, None, None);
        c.cluster = vec!["nats://127.0.0.1:4222".into(), "tls://n2:4222".into()];
        check(c.clone(), Ok(()));
        c.cluster_replicas = 2;
        check(c.clone(), Err(ConfigError::BadReplicas(2)));
        c.cluster_replicas = 5;
        check(c.clone(), Ok(()));
        for bad in [
            "127.0.0.1:4222",
            "nats://",
            "http://n1:4222",
            "nats://a:1,nats://b:2",
        ] {
            c.cluster = vec![bad.into()];
            check(c.clone(), Err(ConfigError::BadClusterUrl(bad.into())));
        }
    }

    #[test]
    fn exporting_needs_trace_contexts() {
        let mut c = config("127.0.0.1:0", None, None, None);
        c.otlp_endpoint = Some("http://127.0.0.1:4318".into());
        check(c.clone(), Ok(()));
        c.trace_context = false;
        check(c.clone(), Err(ConfigError::ExportWithoutContext));
        c.otlp_endpoint = None;
        check(c, Ok(()));
    }

    #[test]
    fn a_cpu_budget_needs_long_call_slots() {
        let mut c = config("127.0.0.1:0", None, None, None);
        c.limits.long_call_cpu_percent = 10;
        check(c.clone(), Ok(()));
        c.limits.long_call_slots = 0;
        check(c.clone(), Err(ConfigError::BudgetWithoutSlots));
        c.limits.long_call_cpu_percent = 0;
        check(c.clone(), Ok(()));
        c.limits.long_call_slots = 1;
        c.limits.long_call_cpu_percent = MAX_LONG_CALL_CPU_PERCENT + 1;
        check(
            c,
            Err(ConfigError::LimitTooHigh(
                "long-call-cpu-percent",
                MAX_LONG_CALL_CPU_PERCENT.into(),
            )),
        );
    }

    #[test]
    fn loopback_needs_no_token() {
        check(config("127.0.0.1:7070", None, None, None), Ok(()));
        check(config("127.0.0.1:0", None, None, None), Ok(()));
        check(config("[::1]:7070", None, None, None), Ok(()));
    }

    #[test]
    fn public_address_needs_a_token() {
        for addr in ["0.0.0.0:7070", "[::]:7070", "192.168.1.5:7070"] {
            let parsed = addr.parse().expect("test address");
            check(
                config(addr, None, None, None),
                Err(ConfigError::PublicWithoutToken(parsed)),
            );
            check(config(addr, Some("s3cret"), None, None), Ok(()));
        }
        check(config("0.0.0.0:1", Some("a"), Some("p"), Some("r")), Ok(()));
    }

    #[test]
    fn token_sets_are_checked() {
        let lo = "127.0.0.1:7070";
        check(
            config(lo, Some(""), None, None),
            Err(ConfigError::EmptyToken("admin")),
        );
        check(
            config(lo, Some("a"), None, Some("")),
            Err(ConfigError::EmptyToken("read")),
        );
        check(
            config(lo, None, Some("p"), None),
            Err(ConfigError::RoleTokenWithoutAdmin("publish")),
        );
        check(
            config(lo, None, None, Some("r")),
            Err(ConfigError::RoleTokenWithoutAdmin("read")),
        );
        check(
            config(lo, Some("x"), None, Some("x")),
            Err(ConfigError::SharedToken("admin", "read")),
        );
        check(
            config(lo, Some("a"), Some("x"), Some("x")),
            Err(ConfigError::SharedToken("publish", "read")),
        );
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let mut c = config("127.0.0.1:1", None, None, None);
        c.limits.worker_threads = 0;
        check(
            c.clone(),
            Err(ConfigError::LimitOutOfRange(
                "worker-threads",
                MAX_WORKER_THREADS as u64,
            )),
        );
        c.limits = Limits {
            instance_memory_mib: MAX_INSTANCE_MEMORY_MIB + 1,
            ..Limits::default()
        };
        check(
            c.clone(),
            Err(ConfigError::LimitOutOfRange(
                "instance-memory-mib",
                MAX_INSTANCE_MEMORY_MIB.into(),
            )),
        );
        c.limits = Limits::default();
        check(c, Ok(()));
    }

    #[test]
    fn secrets_do_not_leak_into_debug_output() {
        let c = config("127.0.0.1:1", Some("hunter2"), None, None);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn error_names_the_fix() {
        let err = config("0.0.0.0:7070", None, None, None)
            .validate()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("0.0.0.0:7070") && text.contains("--token"),
            "{text}"
        );
    }
}
