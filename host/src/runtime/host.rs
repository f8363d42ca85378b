//! The host side of a call: per-store state, the `host` imports a plugin may
//! call, and the linker that provides them (plus WASI p2 with nothing granted).

use super::bindings::{self, HostImports, LogLevel, TypesHost};
use super::call::{KvEffects, LogLine, Publication};
use super::egress::{CallEgress, Egress};
use super::limits::MemoryLimiter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Most messages one call may publish.
pub(crate) const MAX_PUBLISHES_PER_CALL: usize = 1000;
/// Largest payload a plugin may publish.
pub(crate) const MAX_PUBLISH_PAYLOAD: usize = 1 << 20;
/// Longest log line kept; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;
/// Log lines kept per call; further lines are counted but dropped.
const MAX_LOG_LINES: usize = 100;
/// Longest kv key, in bytes.
pub(crate) const MAX_KV_KEY: usize = 1024;
/// Largest kv value.
pub(crate) const MAX_KV_VALUE: usize = 1 << 20;
/// Most distinct kv keys one call may write (set or delete).
pub(crate) const MAX_KV_WRITES: usize = 1000;
/// Most bytes of kv values one call may write.
pub(crate) const MAX_KV_BYTES: usize = 16 << 20;
/// Bytes of stdout and of stderr kept per instance.
pub(crate) const STDIO_CAPACITY: usize = 64 * 1024;

/// What the embedding answers for the plugin during a call.
pub trait HostEnv: Send + Sync {
    /// May the plugin publish to `topic`? `Err` carries the reason given to the plugin.
    fn check_publish(&self, topic: &str) -> Result<(), String>;

    /// The committed value of `key` in the subscription's kv state, and a
    /// version token the embedding uses to detect that a later commit changed
    /// the key before this call's own commit. `Err` traps the call.
    fn kv_get(&self, key: &str) -> Result<(Option<Vec<u8>>, u64), String>;

    /// The subscription's plugin configuration value `name`.
    fn config(&self, name: &str) -> Option<String>;

    /// The subscription's way out to the network; `None` denies every request.
    fn egress(&self) -> Option<Arc<Egress>> {
        None
    }

    /// How the subscription's plugin calls have behaved (where its next
    /// call starts, CPU-wise); `None`: every call starts normally.
    fn conduct(&self) -> Option<&super::priority::Conduct> {
        None
    }
}

/// Everything a store holds for one plugin instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// The gate of the current call's outbound requests.
    pub(crate) egress: CallEgress,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) env: Option<Arc<dyn HostEnv>>,
    pub(crate) published: Vec<Publication>,
    pub(crate) kv: KvEffects,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) logs_dropped: usize,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) label: String,
    /// The end of what the current call wrote to stderr (a guest panic message).
    pub(crate) stderr_tail: String,
    /// The current call starts as a long call (its plugin is suspect,
    /// see `priority::Conduct`).
    pub(crate) starts_long: bool,
    /// The thread's CPU time when the current call became a long call.
    pub(crate) long_since: Option<std::time::Duration>,
    /// The current call's timeout came while it waited for a long-call
    /// turn: it wanted the CPU.
    pub(crate) starved: bool,
    /// The thread's CPU time when the current call, past its time at
    /// normal priority, was last looked at.
    pub(crate) probe: Option<std::time::Duration>,
    /// How many times it was looked at.
    pub(crate) probes: u8,
    /// When the current call must end (its timeout).
    pub(crate) deadline: Option<std::time::Instant>,
    /// Counts this store among the live instances while it exists.
    pub(crate) live: Option<Live>,
}

/// One live plugin instance, counted until it is dropped.
pub(crate) struct Live(Arc<AtomicU64>);

impl Live {
    pub(crate) fn new(count: Arc<AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A clock that reads a shared millisecond counter (the harness's virtual
/// time) for WASI's wall and monotonic clocks.
struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    fn ms(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

impl HostWallClock for VirtualClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ms())
    }
}

impl HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.ms().saturating_mul(1_000_000)
    }
}

/// How much of a call's stderr is kept to explain a trap.
const STDERR_TAIL: usize = 1024;

impl HostState {
    pub(crate) fn new(memory_limit: usize, virtual_time: Option<Arc<AtomicU64>>) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        // Nothing granted: no preopens, no env, no args, no sockets; only
        // clocks and random, and stdio captured into bounded buffers.
        // Outbound HTTP goes through `wasi:http` and its gate (`egress`).
        let mut builder = WasiCtx::builder();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(ms) = virtual_time {
            use wasi_rand::SeedableRng;
            builder
                .wall_clock(VirtualClock(ms.clone()))
                .monotonic_clock(VirtualClock(ms))
                .secure_random(wasi_rand::rngs::StdRng::seed_from_u64(1))
                .insecure_random(wasi_rand::rngs::StdRng::seed_from_u64(2))
                .insecure_random_seed(3);
        }
        let wasi = builder.build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            egress: CallEgress::default(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            env: None,
            published: Vec::new(),
            kv: KvEffects::default(),
            logs: Vec::new(),
            logs_dropped: 0,
            stdout,
            stderr,
            label: String::new(),
            stderr_tail: String::new(),
            deadline: None,
            starts_long: false,
            long_since: None,
            starved: false,
            probe: None,
            probes: 0,
            live: None,
        }
    }

    fn push_log(&mut self, level: super::LogLevel, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        match level {
            super::LogLevel::Trace => tracing::trace!(plugin_call = %self.label, "{message}"),
            super::LogLevel::Debug => tracing::debug!(plugin_call = %self.label, "{message}"),
            super::LogLevel::Info => tracing::info!(plugin_call = %self.label, "{message}"),
            super::LogLevel::Warn => tracing::warn!(plugin_call = %self.label, "{message}"),
            super::LogLevel::Error => tracing::error!(plugin_call = %self.label, "{message}"),
        }
        if self.logs.len() < MAX_LOG_LINES {
            self.logs.push(LogLine { level, message });
        } else {
            self.logs_dropped += 1;
        }
    }

    /// Forward what the plugin wrote to stdout/stderr since `seen` to the log.
    pub(crate) fn drain_stdio(&mut self, seen: &mut (usize, usize)) {
        for (is_err, pipe) in [(false, self.stdout.clone()), (true, self.stderr.clone())] {
            let contents = pipe.contents();
            let from = if is_err { &mut seen.1 } else { &mut seen.0 };
            if contents.len() > *from {
                let text = String::from_utf8_lossy(&contents[*from..]).into_owned();
                *from = contents.len();
                let level = if is_err {
                    super::LogLevel::Warn
                } else {
                    super::LogLevel::Info
                };
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    self.push_log(level, line.to_string());
                }
                if is_err {
                    self.stderr_tail.push_str(&text);
                    if self.stderr_tail.len() > STDERR_TAIL {
                        let mut cut = self.stderr_tail.len() - STDERR_TAIL;
                        while !self.stderr_tail.is_char_boundary(cut) {
                            cut += 1;
                        }
                        self.stderr_tail.drain(..cut);
                    }
                }
            }
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl TypesHost for HostState {}

impl HostImports for HostState {
    fn publish(
        &mut self,
        topic: String,
        key: Option<String>,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<(), String> {
        if self.published.len() >= MAX_PUBLISHES_PER_CALL {
            return Err(format!(
                "too many publishes in one call (limit {MAX_PUBLISHES_PER_CALL})"
            ));
        }
        if payload.len() > MAX_PUBLISH_PAYLOAD {
            return Err(format!(
                "payload of {} bytes is over the limit of {MAX_PUBLISH_PAYLOAD}",
                payload.len()
            ));
        }
        if let Some(env) = &self.env {
            super::priority::normal(|| env.check_publish(&topic))?;
        }
        self.published.push(Publication {
            topic,
            key,
            payload,
            headers,
        });
        Ok(())
    }

    fn kv_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        check_kv_key(&key)?;
        if let Some(value) = self.kv.writes.get(&key) {
            return Ok(value.clone());
        }
        let Some(env) = &self.env else {
            return Ok(None);
        };
        let (value, version) = super::priority::normal(|| env.kv_get(&key))
            .map_err(|e| wasmtime::format_err!("kv-get {key:?} failed: {e}"))?;
        // The first read of a key is the one a conflict check compares with.
        self.kv.reads.entry(key).or_insert(version);
        Ok(value)
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        check_kv_key(&key)?;
        if value.len() > MAX_KV_VALUE {
            wasmtime::bail!(
                "kv-set {key:?}: a value of {} bytes is over the limit of {MAX_KV_VALUE}",
                value.len()
            );
        }
        self.buffer_kv_write(key, Some(value))
    }

    fn kv_delete(&mut self, key: String) -> wasmtime::Result<()> {
        check_kv_key(&key)?;
        self.buffer_kv_write(key, None)
    }

    fn config(&mut self, name: String) -> Option<String> {
        self.env.as_ref().and_then(|env| env.config(&name))
    }

    fn log(&mut self, level: LogLevel, message: String) {
        self.push_log(level.into(), message);
    }
}

impl HostState {
    fn buffer_kv_write(&mut self, key: String, value: Option<Vec<u8>>) -> wasmtime::Result<()> {
        let size = value.as_ref().map_or(0, Vec::len);
        if !self.kv.writes.contains_key(&key) && self.kv.writes.len() >= MAX_KV_WRITES {
            wasmtime::bail!("kv: more than {MAX_KV_WRITES} keys written in one call");
        }
        if self.kv.bytes + size > MAX_KV_BYTES {
            wasmtime::bail!("kv: more than {MAX_KV_BYTES} bytes of values written in one call");
        }
        self.kv.bytes += size;
        self.kv.writes.insert(key, value);
        Ok(())
    }
}

fn check_kv_key(key: &str) -> wasmtime::Result<()> {
    if key.is_empty() || key.len() > MAX_KV_KEY {
        wasmtime::bail!(
            "kv: a key must be 1 to {MAX_KV_KEY} bytes (got {})",
            key.len()
        );
    }
    Ok(())
}

impl From<LogLevel> for super::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => Self::Trace,
            LogLevel::Debug => Self::Debug,
            LogLevel::Info => Self::Info,
            LogLevel::Warn => Self::Warn,
            LogLevel::Error => Self::Error,
        }
    }
}

/// The linker every plugin is instantiated with: WASI p2 (synchronous host
/// implementations), `wasi:http` (every request through [`CallEgress`]) and
/// the `switchyard:plugin/host` interface.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
    // The world's own interfaces only: WASI and wasi:http are added above.
    bindings::switchyard::plugin::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    bindings::switchyard::plugin::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}
