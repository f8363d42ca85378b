//! One call of a plugin's `handle`: its input, its closed outcome, and the
//! effects it asked the host for.

use super::bindings::{Consumer, Message, Outcome as WitOutcome};
use super::host::HostState;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wasmtime::Store;

/// The content of a message that plugins are handed: kept once by the host
/// and shared by every delivery of it (retries too), never copied for a
/// call.
pub trait Letter: std::fmt::Debug + Send + Sync {
    fn id(&self) -> &str;
    fn key(&self) -> Option<&str>;
    fn payload(&self) -> &[u8];
    fn headers(&self) -> &[(String, String)];
    fn timestamp_ms(&self) -> u64;
}

/// A message as handed to a plugin: its shared content, where it is, and
/// which attempt this is.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: std::sync::Arc<dyn Letter>,
    pub topic: std::sync::Arc<str>,
    pub partition: u32,
    pub offset: u64,
    /// 1 on the first delivery.
    pub attempt: u32,
}

/// What became of one call. Closed: every failure mode of a sandboxed call is
/// one of these variants, never an error string from the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The plugin acknowledged the message.
    Ack,
    /// The plugin asked for another attempt, optionally after `delay_ms`.
    Retry {
        reason: String,
        delay_ms: Option<u64>,
    },
    /// The plugin declared the message poison.
    DeadLetter(String),
    /// The plugin trapped (or could not be instantiated); the text says why.
    Trap(String),
    /// The call ran past its timeout and was interrupted inside wasm.
    Timeout(Duration),
    /// The plugin tried to grow its memory past the limit.
    MemoryLimit(usize),
}

impl Outcome {
    /// Whether this outcome is a failed attempt that may be retried.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Ack | Outcome::DeadLetter(_))
    }

    /// A one-line description, as recorded in a message's delivery history.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Ack => "ack".into(),
            Outcome::Retry { reason, .. } => format!("retry: {reason}"),
            Outcome::DeadLetter(reason) => format!("dead-letter: {reason}"),
            Outcome::Trap(text) => format!("trap: {text}"),
            Outcome::Timeout(t) => format!("timeout: interrupted after {} ms", t.as_millis()),
            Outcome::MemoryLimit(limit) => {
                format!("memory limit: tried to grow memory past {limit} bytes")
            }
        }
    }

    /// A short stable name, for metrics and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry { .. } => "retry",
            Outcome::DeadLetter(_) => "dead-letter",
            Outcome::Trap(_) => "trap",
            Outcome::Timeout(_) => "timeout",
            Outcome::MemoryLimit(_) => "memory-limit",
        }
    }
}

/// A message a plugin published during a call. The embedding decides when (and
/// whether) it is made durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// A call's use of the subscription's kv state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvEffects {
    /// Keys read from committed state, with the version token of the first read.
    pub reads: BTreeMap<String, u64>,
    /// Buffered writes: `Some` sets, `None` deletes. Discarded unless the call acks.
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Bytes of values written (for the per-call limit).
    pub bytes: usize,
}

/// Severity of a plugin log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The level's name, as in the WIT.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// A line a plugin logged, or wrote to stdout (info) or stderr (warn).
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// The result of one call.
#[derive(Debug)]
pub struct Invocation {
    pub outcome: Outcome,
    pub published: Vec<Publication>,
    /// Kv reads and writes (the writes only if the call acked).
    pub kv: KvEffects,
    pub logs: Vec<LogLine>,
    /// The outbound HTTP requests the call made, in order.
    pub http: Vec<super::HttpCall>,
    pub duration: Duration,
    /// The call's trace context (a child of the message's `traceparent`),
    /// which its outbound requests carried; `None` if it never ran or the
    /// message has none.
    pub context: Option<crate::telemetry::TraceContext>,
    /// CPU time the call used once it was a long call; `None` if it never
    /// became one.
    pub long_cpu: Option<Duration>,
    /// Its timeout stopped it while it waited for a turn to compute on (a
    /// long-call slot, the CPU budget, a suspect call's gate).
    pub starved: bool,
}

/// Run `handle` once on an instantiated consumer, classifying every failure.
pub(crate) fn run(
    store: &mut Store<HostState>,
    consumer: &Consumer,
    delivery: &Delivery,
    timeout: Duration,
    memory_limit: usize,
    stdio_seen: &mut (usize, usize),
) -> Invocation {
    let started = Instant::now();
    arm_deadline(store, timeout);
    store.data_mut().limiter.hit = false;
    store.data_mut().stderr_tail.clear();
    let letter = &*delivery.message;
    let headers: Vec<(&str, &str)> = letter
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let message = Message {
        id: letter.id(),
        topic: &delivery.topic,
        partition: delivery.partition,
        offset: delivery.offset,
        key: letter.key(),
        payload: letter.payload(),
        headers: &headers,
        timestamp_ms: letter.timestamp_ms(),
        attempt: delivery.attempt,
    };
    let egress = store.data().env.as_ref().and_then(|env| env.egress());
    // A message without a trace context (the plugin test harness publishes
    // none) gives its call none, so harness runs repeat exactly.
    let context = crate::telemetry::of_headers(letter.headers())
        .map(|parent| crate::telemetry::TraceContext::next(Some(&parent)));
    store.data_mut().egress =
        super::egress::CallEgress::begin(egress, started + timeout, &delivery.message, context);
    let result = consumer.call_handle(&mut *store, message);
    store.data_mut().drain_stdio(stdio_seen);
    let outcome = match result {
        Ok(WitOutcome::Ack) => Outcome::Ack,
        Ok(WitOutcome::Retry(info)) => Outcome::Retry {
            reason: info.reason,
            delay_ms: info.delay_ms,
        },
        Ok(WitOutcome::DeadLetter(reason)) => Outcome::DeadLetter(reason),
        Err(err) => classify(store.data(), &err, timeout, memory_limit),
    };
    let mut invocation = finish(store, outcome, started);
    invocation.context = context;
    invocation
}

/// Bound a call by `timeout`; once it has run
/// [`super::priority::DEMOTE_AFTER`] (under a budget: and computes) it is a
/// long call (see `priority`).
/// A call that starts long (its plugin is suspect) is demoted now and
/// needs a slot from its first epoch tick.
pub(crate) fn arm_deadline(store: &mut Store<HostState>, timeout: Duration) {
    let state = store.data_mut();
    state.deadline = Some(Instant::now() + timeout);
    state.long_since = None;
    state.starved = false;
    state.probe = None;
    state.probes = 0;
    let first = if state.starts_long {
        super::priority::demote();
        state.long_since = Some(super::priority::thread_cpu());
        1
    } else {
        super::deadline_ticks(timeout.min(super::priority::DEMOTE_AFTER))
    };
    store.set_epoch_deadline(first);
}

/// Turn an instantiation or call error into an outcome.
pub(crate) fn classify(
    state: &HostState,
    err: &wasmtime::Error,
    timeout: Duration,
    memory_limit: usize,
) -> Outcome {
    if err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return Outcome::Timeout(timeout);
    }
    if state.limiter.hit {
        return Outcome::MemoryLimit(memory_limit);
    }
    // The trap itself ("wasm `unreachable` instruction executed"), without the
    // wasm backtrace, which goes to the host log instead.
    let mut text = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => err
            .chain()
            .last()
            .map(|c| c.to_string())
            .unwrap_or_else(|| err.to_string()),
    };
    tracing::debug!(plugin_call = %state.label, error = ?err, "plugin call failed");
    // A guest panic prints its message to stderr before trapping: keep it.
    let stderr = state
        .stderr_tail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    if !stderr.is_empty() {
        text = format!("{text}; stderr: {stderr}");
    }
    Outcome::Trap(text)
}

impl Invocation {
    /// An attempt that ended in `outcome` without a plugin call (a gate's
    /// timeout, a pull consumer's settle), after `duration`: no effects.
    pub fn unstarted(outcome: Outcome, duration: Duration) -> Self {
        Self {
            outcome,
            published: Vec::new(),
            kv: Default::default(),
            logs: Vec::new(),
            http: Vec::new(),
            duration,
            context: None,
            long_cpu: None,
            starved: false,
        }
    }
}

/// Collect a call's effects. A failed call's publications and kv writes are
/// discarded.
pub(crate) fn finish(
    store: &mut Store<HostState>,
    outcome: Outcome,
    started: Instant,
) -> Invocation {
    let long_cpu = store
        .data_mut()
        .long_since
        .take()
        .map(|since| super::priority::thread_cpu().saturating_sub(since));
    super::priority::restore();
    let state = store.data_mut();
    let mut published = std::mem::take(&mut state.published);
    let mut kv = std::mem::take(&mut state.kv);
    if outcome != Outcome::Ack {
        published.clear();
        kv.writes.clear();
    }
    let http = std::mem::take(&mut state.egress).calls();
    let mut logs = std::mem::take(&mut state.logs);
    if state.logs_dropped > 0 {
        logs.push(super::LogLine {
            level: super::LogLevel::Warn,
            message: format!("{} further log lines dropped", state.logs_dropped),
        });
        state.logs_dropped = 0;
    }
    Invocation {
        outcome,
        published,
        kv,
        logs,
        http,
        long_cpu,
        starved: state.starved,
        duration: started.elapsed(),
        context: None,
    }
}
