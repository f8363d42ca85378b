//! `GET /metrics`: Prometheus text exposition of topics and subscriptions,
//! rendered from the broker's state at scrape time (no token needed, like the
//! health endpoints).

use super::body::Reply;
use super::error::ApiError;
use crate::broker::{Broker, DiskSnapshot, HostStats, PoolSnapshot, SubscriptionInfo};
use crate::histogram::HistogramSnapshot;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Label of per-subscription metrics.
type BySubscription = Vec<(&'static str, String)>;
/// Labels of any metric.
type Labels = Vec<(&'static str, String)>;

/// The Prometheus text format's content type.
const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A histogram read from the broker's counters at scrape time.
#[derive(Debug, Default)]
struct Observed(std::sync::Mutex<HistogramSnapshot>);

impl Observed {
    fn set(&self, snapshot: HistogramSnapshot) {
        *self.0.lock().expect("histogram lock") = snapshot;
    }
}

impl TypedMetric for Observed {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Observed {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().expect("histogram lock");
        encoder.encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The host's plugin threads and instance pool.
fn plugin_threads(registry: &mut Registry, pool: &PoolSnapshot) {
    let gauges = [
        (
            "plugin_threads",
            "Threads that run plugin calls",
            pool.threads,
        ),
        (
            "plugin_threads_busy",
            "Plugin threads running a call now",
            pool.busy,
        ),
        (
            "plugin_threads_max",
            "Most plugin threads the host starts",
            pool.max_threads,
        ),
        (
            "plugin_queued_chunks",
            "Chunks of deliveries waiting for a plugin thread",
            pool.queued,
        ),
        (
            "plugin_instances",
            "Plugin instances alive now (running, or kept for reuse)",
            pool.instances,
        ),
        (
            "plugin_instances_max",
            "Most plugin instances the instance pool holds",
            pool.instances_max,
        ),
        (
            "plugin_long_calls_running",
            "Plugin calls past 10 ms running in a long-call slot now",
            pool.long_calls_running,
        ),
        (
            "plugin_long_calls_waiting",
            "Plugin calls past 10 ms waiting for a long-call slot now",
            pool.long_calls_waiting,
        ),
        (
            "plugin_long_call_slots",
            "Long-call slots (--long-call-slots; 0: no limit)",
            pool.long_call_slots,
        ),
    ];
    for (name, help, value) in gauges {
        register_gauge(registry, name, help, value);
    }
    let counters = [
        (
            "plugin_thread_spawn_failures",
            "Plugin threads the operating system refused to start",
            pool.spawn_failures,
        ),
        (
            "instance_pool_full",
            "Plugin calls that found the instance pool full",
            pool.pool_full,
        ),
        (
            "instances_reclaimed",
            "Idle plugin instances dropped to make room for others",
            pool.reclaimed,
        ),
    ];
    for (name, help, value) in counters {
        register_counter(registry, name, help, value);
    }
}

/// A gauge read at scrape time (saturated at `i64::MAX`).
fn register_gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value.min(i64::MAX as u64) as i64);
    registry.register(name, help, gauge);
}

/// A counter read at scrape time.
fn register_counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

/// Free space on the data directory's filesystem against its reserve.
fn disk(registry: &mut Registry, disk: DiskSnapshot) {
    let gauges = [
        (
            "disk_free_bytes",
            "Free bytes on the data directory's filesystem",
            disk.free_bytes,
        ),
        (
            "disk_reserve_bytes",
            "Free bytes below which publishes are refused and delivery pauses",
            disk.reserve_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        register_gauge(registry, name, help, value);
    }
}

/// Requests the API answered, by route (the path template), method and
/// status, and how long each took to answer (to its response headers).
#[derive(Clone)]
pub struct Requests {
    answered: Family<Labels, Counter>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for Requests {
    fn default() -> Self {
        fn histogram() -> Histogram {
            Histogram::new(crate::histogram::SECONDS.iter().copied())
        }
        Self {
            answered: Family::default(),
            seconds: Family::new_with_constructor(histogram),
        }
    }
}

impl Requests {
    pub fn observe(&self, route: &'static str, method: &Method, status: u16, elapsed: Duration) {
        // Any token is a method to HTTP: only the standard ones get a label
        // of their own, so a client cannot grow the series without bound.
        let method = match *method {
            Method::GET
            | Method::PUT
            | Method::POST
            | Method::DELETE
            | Method::HEAD
            | Method::OPTIONS
            | Method::PATCH => method.as_str(),
            _ => "other",
        };
        let labels = vec![
            ("route", route.to_string()),
            ("method", method.to_string()),
            ("status", status.to_string()),
        ];
        self.answered.get_or_create(&labels).inc();
        self.seconds
            .get_or_create(&vec![("route", route.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            self.answered.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to its response headers), by route",
            self.seconds.clone(),
        );
    }
}

/// Host-wide histograms and the store's failed writes.
fn host(registry: &mut Registry, stats: HostStats) {
    let histograms = [
        (
            "publish_batch_messages",
            "Messages per publish call",
            stats.publish_batch,
        ),
        (
            "store_group_commit_writes",
            "Writes (publishes, commits, admin changes) merged into one synced store write",
            stats.group_commit,
        ),
        (
            "plugin_compile_duration_seconds",
            "Time an accepted plugin upload took to compile (or to load code compiled before)",
            stats.compile_seconds,
        ),
    ];
    for (name, help, snapshot) in histograms {
        let observed = Observed::default();
        observed.set(snapshot);
        registry.register(name, help, observed);
    }
    register_counter(
        registry,
        "store_write_failures",
        "Store writes answered with an error (after the first, the host refuses every write until restarted)",
        stats.write_failures,
    );
    register_counter(
        registry,
        "cluster_fenced_commits",
        "Cluster mode: commits of a subscription's state refused because another host had written its journal since (this host had lost the subscription; nothing of those commits was stored)",
        stats.fenced_commits,
    );
    register_counter(
        registry,
        "cluster_journal_compactions",
        "Cluster mode: subscriptions' journals compacted by this host (a snapshot of the state appended, the entries before it dropped)",
        stats.journal_compactions,
    );
}

/// Completed attempts of each subscription by outcome, and their durations.
fn attempts(registry: &mut Registry, subscriptions: &[SubscriptionInfo]) {
    let outcomes = Family::<Vec<(&'static str, String)>, Counter>::default();
    registry.register(
        "attempts",
        "Completed plugin attempts, by subscription and outcome (ack, retry, dead-letter, trap, timeout, memory-limit, kv-conflict)",
        outcomes.clone(),
    );
    let durations = Family::<BySubscription, Observed>::default();
    registry.register(
        "attempt_duration_seconds",
        "Time a plugin call took, by subscription",
        durations.clone(),
    );
    let states = Family::<Vec<(&'static str, String)>, Gauge>::default();
    registry.register(
        "subscription_state",
        "1 for the state a subscription is in (running, paused, waiting_for_disk, halted)",
        states.clone(),
    );
    let halted = Gauge::<i64>::default();
    registry.register(
        "subscriptions_halted",
        "Subscriptions stopped by a failed progress write until the host restarts",
        halted.clone(),
    );
    for sub in subscriptions {
        let name = || ("subscription", sub.name.clone());
        for (outcome, n) in &sub.stats.attempts.outcomes {
            let labels = vec![name(), ("outcome", outcome.to_string())];
            outcomes.get_or_create(&labels).inc_by(*n);
        }
        if sub.stats.attempts.duration.count > 0 {
            durations
                .get_or_create(&vec![name()])
                .set(sub.stats.attempts.duration.clone());
        }
        states
            .get_or_create(&vec![name(), ("state", sub.state.to_string())])
            .set(1);
        if sub.state == "halted" {
            halted.inc();
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "OpenMetrics text (`application/openmetrics-text; version=1.0.0`)",
        body = String, content_type = "application/openmetrics-text")))]
pub async fn render(broker: &Broker, requests: &Requests) -> Result<Reply, ApiError> {
    let mut registry = Registry::with_prefix("switchyard");
    requests.register(&mut registry);
    host(&mut registry, broker.host_stats());
    let next_offset = Family::<Vec<(&'static str, String)>, Gauge>::default();
    registry.register(
        "partition_next_offset",
        "Offset the next message of a partition gets (messages ever stored)",
        next_offset.clone(),
    );
    let bytes = Family::<Vec<(&'static str, String)>, Gauge>::default();
    registry.register(
        "partition_bytes",
        "Bytes a partition's stored messages take, about (compressed as stored)",
        bytes.clone(),
    );
    // In cluster mode the topics are read from NATS: while it cannot be
    // reached, the host's own series are still rendered, without these.
    let topics = broker.topics().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "metrics: the topics could not be read");
        Vec::new()
    });
    for topic in topics {
        for (p, offset) in topic.offsets.iter().enumerate() {
            let labels = vec![("topic", topic.name.clone()), ("partition", p.to_string())];
            next_offset.get_or_create(&labels).set(*offset as i64);
            if let Some(size) = topic.bytes.get(p) {
                bytes.get_or_create(&labels).set(*size as i64);
            }
        }
    }
    plugin_threads(&mut registry, &broker.workers());
    disk(&mut registry, broker.disk());
    let counters: [(&str, &str, Family<BySubscription, Counter>); 8] = [
        (
            "subscription_delivered",
            "Attempts started",
            Family::default(),
        ),
        (
            "subscription_acked",
            "Messages acknowledged by the plugin",
            Family::default(),
        ),
        (
            "subscription_retried",
            "Failed attempts scheduled for another try",
            Family::default(),
        ),
        (
            "subscription_dead_lettered",
            "Messages moved to the dead letters",
            Family::default(),
        ),
        (
            "subscription_failed",
            "At-most-once deliveries that failed",
            Family::default(),
        ),
        (
            "subscription_filtered",
            "Messages skipped by the subscription's filter",
            Family::default(),
        ),
        (
            "subscription_kv_conflicts",
            "Attempts run again because a kv key they read changed meanwhile",
            Family::default(),
        ),
        (
            "subscription_host_busy",
            "Attempts handed back unrun and uncounted because the host had no room for a plugin instance",
            Family::default(),
        ),
    ];
    let gauges: [(&str, &str, Family<BySubscription, Gauge>); 2] = [
        (
            "subscription_lag",
            "Durable messages not yet finished",
            Family::default(),
        ),
        (
            "subscription_in_flight",
            "Attempts running now",
            Family::default(),
        ),
    ];
    for (name, help, family) in &counters {
        registry.register(*name, *help, family.clone());
    }
    for (name, help, family) in &gauges {
        registry.register(*name, *help, family.clone());
    }
    let egress_requests = Family::<Vec<(&'static str, String)>, Counter>::default();
    registry.register(
        "egress_requests",
        "Outbound HTTP requests of plugins, by outcome (status class, denied, prohibited, timeout, error)",
        egress_requests.clone(),
    );
    let subscriptions = broker.subscriptions();
    attempts(&mut registry, &subscriptions);
    let egress_latency = Family::<BySubscription, Observed>::default();
    registry.register(
        "egress_request_duration_seconds",
        "Time from an outbound HTTP request to its response headers (or failure)",
        egress_latency.clone(),
    );
    for sub in subscriptions {
        let labels = vec![("subscription", sub.name.clone())];
        let egress = &sub.stats.egress;
        for (outcome, n) in &egress.outcomes {
            let labels = vec![
                ("subscription", sub.name.clone()),
                ("outcome", outcome.to_string()),
            ];
            egress_requests.get_or_create(&labels).inc_by(*n);
        }
        if egress.latency.count > 0 {
            egress_latency
                .get_or_create(&labels)
                .set(egress.latency.clone());
        }
        let st = &sub.stats;
        let values = [
            st.delivered,
            st.acked,
            st.retried,
            st.dead_lettered,
            st.failed,
            st.filtered,
            st.kv_conflicts,
            st.host_busy,
        ];
        for ((_, _, family), value) in counters.iter().zip(values) {
            family.get_or_create(&labels).inc_by(value);
        }
        for ((_, _, family), value) in gauges.iter().zip([st.lag, st.in_flight]) {
            family.get_or_create(&labels).set(value as i64);
        }
    }
    let mut text = String::new();
    encode(&mut text, &registry)
        .map_err(|e| ApiError::internal(format!("cannot encode metrics: {e}")))?;
    let mut response = Response::new(super::body::full(text));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
    Ok(response)
}
