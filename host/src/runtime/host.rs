//! The host side of a call: per-store state, the `host` imports a plugin may
//! call, and the linker that provides them (plus WASI p2 with nothing granted).

use super::bindings::{self, HostImports, LogLevel, TypesHost};
use super::call::{LogLine, Publication};
use super::limits::MemoryLimiter;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most messages one call may publish.
pub(crate) const MAX_PUBLISHES_PER_CALL: usize = 1000;
/// Largest payload a plugin may publish.
pub(crate) const MAX_PUBLISH_PAYLOAD: usize = 1 << 20;
/// Longest log line kept; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;
/// Log lines kept per call; further lines are counted but dropped.
const MAX_LOG_LINES: usize = 100;
/// Bytes of stdout and of stderr kept per instance.
pub(crate) const STDIO_CAPACITY: usize = 64 * 1024;

/// What the embedding answers for the plugin during a call.
pub trait HostEnv: Send + Sync {
    /// May the plugin publish to `topic`? `Err` carries the reason given to the plugin.
    fn check_publish(&self, topic: &str) -> Result<(), String>;
}

/// Everything a store holds for one plugin instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) env: Option<Arc<dyn HostEnv>>,
    pub(crate) published: Vec<Publication>,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) logs_dropped: usize,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) label: String,
    /// The end of what the current call wrote to stderr (a guest panic message).
    pub(crate) stderr_tail: String,
}

/// How much of a call's stderr is kept to explain a trap.
const STDERR_TAIL: usize = 1024;

impl HostState {
    pub(crate) fn new(memory_limit: usize) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        // Nothing granted: no preopens, no env, no args, no network; only
        // clocks and random, and stdio captured into bounded buffers.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            env: None,
            published: Vec::new(),
            logs: Vec::new(),
            logs_dropped: 0,
            stdout,
            stderr,
            label: String::new(),
            stderr_tail: String::new(),
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
            env.check_publish(&topic)?;
        }
        self.published.push(Publication {
            topic,
            key,
            payload,
            headers,
        });
        Ok(())
    }

    fn log(&mut self, level: LogLevel, message: String) {
        self.push_log(level.into(), message);
    }
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
/// implementations) and the `switchyard:plugin/host` interface.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    bindings::Consumer::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    Ok(linker)
}
