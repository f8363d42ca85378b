//! Switchyard: a single-binary event router. Producers publish over HTTP, the
//! host stores messages durably in RocksDB and delivers each one to a
//! sandboxed WebAssembly component plugin.
//!
//! Layout (dependencies run downwards only):
//!
//! - [`cli`]: clap commands; `serve` builds a [`config::Config`] and calls [`run`].
//! - [`config`]: the one typed configuration, its environment variables and rules.
//! - [`api`]: the hyper HTTP server — routing, auth, JSON/MessagePack bodies,
//!   errors. The only module that knows HTTP.
//! - [`broker`]: topics, subscriptions, ordering, retries, dead letters,
//!   delivery guarantees. Knows neither HTTP nor RocksDB nor wasmtime.
//! - [`runtime`]: the wasmtime embedding. The only module that names wasmtime.
//! - [`store`]: RocksDB storage. The only module that names RocksDB.
//! - [`cluster`]: cluster mode's storage on NATS JetStream, behind the
//!   broker's `broker::shared::SharedLog` (it implements that trait; the
//!   broker never names it). The only module that names NATS.
//! - [`histogram`]: atomic histograms that any of them observe and the api renders.
//! - [`telemetry`]: trace context on messages and OTLP export. The only module
//!   that names OpenTelemetry.
//!
//! Entry point: [`run`] takes its configuration, a bound listener and a
//! shutdown future, so tests can bind port 0 and stop the host at will.

pub mod api;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod histogram;
pub mod runtime;
pub mod store;
pub mod telemetry;

pub use broker::harness;

use broker::{Broker, BrokerConfig, BrokerError};
use std::future::Future;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why [`run`] could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open the broker")]
    Broker(#[from] BrokerError),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Telemetry(String),
    #[error("cluster mode: {0}")]
    Cluster(#[from] cluster::ClusterError),
    #[error("cannot read the egress CA file {}: {error}", path.display())]
    EgressCa {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// Serve the HTTP API on `listener` until `shutdown` resolves.
///
/// The API answers at once (`/healthz` is 200, `/readyz` is 503) while the
/// broker opens; `/v1` calls made meanwhile wait for it. When `shutdown`
/// resolves the host stops accepting connections, lets in-flight requests
/// finish, stops delivery (in-flight attempts finish and are committed) and
/// flushes the store before returning.
pub async fn run(
    config: config::Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    config.validate()?;
    let listener_port = listener.local_addr().map_or(0, |a| a.port());
    let mut broker_config = BrokerConfig::new(&config.data_dir);
    broker_config.fsync_interval = config
        .fsync_interval_ms
        .map(std::time::Duration::from_millis);
    broker_config.runtime.egress.allow_cidrs = config.egress_ranges()?;
    let limits = &config.limits;
    broker_config.worker_threads = limits.worker_threads;
    broker_config.runtime.max_instances = limits.max_instances;
    broker_config.runtime.memory_limit_bytes = (limits.instance_memory_mib as usize) << 20;
    broker_config.runtime.long_call_slots = limits.long_call_slots;
    broker_config.runtime.long_call_cpu_percent = limits.long_call_cpu_percent;
    broker_config.compile_timeout = std::time::Duration::from_secs(limits.compile_timeout_secs);
    broker_config.min_free_disk = limits.min_free_disk_mib.saturating_mul(1 << 20);
    broker_config.journal_compact_bytes =
        config.cluster_journal_compact_kib.saturating_mul(1 << 10);
    // Uploads compile in processes of this binary, held to their limits.
    broker_config.compiler = std::env::current_exe()
        .ok()
        .map(|exe| broker::compile::Compiler {
            exe,
            memory_mib: limits.compile_memory_mib,
        });
    if let Some(file) = &config.egress_ca_file {
        let pem = std::fs::read(file).map_err(|error| RunError::EgressCa {
            path: file.clone(),
            error,
        })?;
        broker_config.runtime.egress.ca_pem = Some(pem);
    }
    telemetry::carry(config.trace_context);
    if let Some(endpoint) = &config.otlp_endpoint {
        telemetry::export(endpoint).map_err(RunError::Telemetry)?;
    }
    let (broker_tx, broker_rx) = watch::channel(None);
    let http = api::HttpLimits {
        max_connections: limits.max_connections,
        timeout: std::time::Duration::from_secs(limits.http_timeout_secs),
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = std::sync::Arc::new(api::ServerTls::load(cert, key).map_err(RunError::Tls)?);
            reload_on_sighup(tls.clone())?;
            Some(tls)
        }
        _ => {
            if !config.listen.ip().is_loopback() {
                tracing::warn!(listen = %config.listen, "serving plain HTTP on a non-loopback address: tokens and messages cross the network in clear; set --tls-cert and --tls-key");
            }
            None
        }
    };
    let server = api::Server::start(
        listener,
        api::Auth::new(&config.tokens),
        broker_rx,
        http,
        tls,
    );

    let opening = async {
        if !config.cluster.is_empty() {
            tracing::info!(servers = ?config.cluster, replicas = config.cluster_replicas, "cluster mode: connecting to NATS JetStream");
            let host = cluster_host_name(listener_port);
            broker_config.shared =
                Some(cluster::open(&config.cluster, config.cluster_replicas, &host).await?);
        }
        Ok::<_, RunError>(Broker::open(broker_config).await?)
    };
    tokio::pin!(opening, shutdown);
    let (opened, stop_now) = tokio::select! {
        opened = &mut opening => (opened, false),
        () = &mut shutdown => {
            tracing::info!("shutdown requested while the broker is opening");
            (opening.await, true)
        }
    };
    let broker = match opened {
        Ok(broker) => broker,
        Err(e) => {
            server.shutdown().await;
            return Err(e);
        }
    };
    broker_tx.send_replace(Some(broker.clone()));
    tracing::info!(data_dir = %config.data_dir.display(), "broker ready");

    if !stop_now {
        shutdown.await;
    }
    tracing::info!("shutting down: draining HTTP requests");
    server.shutdown().await;
    tracing::info!("stopping delivery");
    broker.shutdown().await;
    // The exporter's task needs the runtime while the flush waits.
    let _ = tokio::task::spawn_blocking(telemetry::flush).await;
    tracing::info!("stopped");
    Ok(())
}

/// Read the TLS certificate and key again on each SIGHUP.
fn reload_on_sighup(tls: std::sync::Arc<api::ServerTls>) -> Result<(), RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| RunError::Tls(format!("cannot handle SIGHUP: {e}")))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; the one in use stays")
                }
            }
        }
    });
    Ok(())
}

/// This host's name among a cluster's hosts: the machine's name and the
/// API's port, so hosts on one machine differ and a restarted host comes
/// back under its name (and to the subscriptions placed on it).
fn cluster_host_name(port: u16) -> String {
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "host".to_string());
    // KV keys allow letters, digits and `-_/=.`.
    let machine: String = machine
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{machine}-{port}")
}
