//! The WebAssembly runtime: one wasmtime engine, plugin compilation and
//! validation, and sandboxed calls of a plugin's `handle` export.
//!
//! This is the only module that names wasmtime. It offers the broker a narrowed
//! API — compile bytes into a [`Plugin`], call it on a [`Delivery`], get back a
//! closed [`Outcome`] and the effects the plugin asked for — and knows nothing of
//! RocksDB, topics or HTTP.
//!
//! Limits enforced on every call: a memory cap per instance (a [`MemoryLimiter`]
//! plus the pooling allocator's slot size), a wall-clock timeout enforced inside
//! wasm by epoch interruption, bounded stdout/stderr, and a cap on how many
//! messages one call may publish.

mod bindings;
mod call;
pub mod egress;
#[cfg(test)]
pub(crate) mod fuzz;
mod host;
mod languages;
mod limits;
mod plugin;
pub mod priority;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use call::{Delivery, Invocation, KvEffects, Letter, LogLevel, LogLine, Outcome, Publication};
pub use egress::{Egress, EgressConfig, EgressRules, EgressStats, HttpCall};
pub use host::HostEnv;
pub use languages::languages;
pub use plugin::{CallResult, Plugin, PluginError, PluginWorker, PoolFull};
pub use priority::Conduct;

/// How often the engine's epoch advances. A plugin overrunning its timeout is
/// stopped within one tick: 5 ms keeps that latency small at negligible cost
/// (one atomic increment per tick).
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings of the runtime, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Linear-memory cap of one plugin instance, in bytes.
    pub memory_limit_bytes: usize,
    /// How many plugin instances may exist at once across all subscriptions.
    pub max_instances: u32,
    /// Plugins see this time (milliseconds since the Unix epoch) on WASI's
    /// wall and monotonic clocks, and seeded random numbers, instead of the
    /// real ones: the harness's virtual clock, so runs repeat exactly.
    pub virtual_time: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The operator's outbound-HTTP settings.
    pub egress: EgressConfig,
    /// How many long plugin calls (past 10 ms) may run at once across all
    /// plugins; the rest wait their turn without CPU. 0: no limit.
    pub long_call_slots: usize,
    /// CPU long calls and suspect plugins' attempts may use together, in
    /// percent of one core (see `priority`). 0: no budget.
    pub long_call_cpu_percent: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 64 << 20,
            max_instances: 1000,
            virtual_time: None,
            egress: EgressConfig::default(),
            long_call_slots: priority::LongCalls::default_slots(),
            long_call_cpu_percent: 0,
        }
    }
}

/// Errors setting up the runtime itself.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot configure outbound HTTP: {0}")]
    Egress(String),
}

/// The engine, the linker with the host's imports, and the epoch ticker.
/// Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: wasmtime::Engine,
    linker: wasmtime::component::Linker<host::HostState>,
    config: RuntimeConfig,
    network: egress::Network,
    ticker_stop: Arc<AtomicBool>,
    /// Plugin instances alive now (each in its own store).
    live: Arc<AtomicU64>,
    /// The slots long calls take turns in.
    long_calls: Arc<priority::LongCalls>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Build the engine (pooling allocator, epoch interruption, component model)
    /// and start the epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = limits::engine(&config).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let linker = host::linker(&engine).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let network = egress::Network::new(&config.egress).map_err(RuntimeError::Egress)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), ticker_stop.clone());
        let long_calls =
            priority::LongCalls::new(config.long_call_slots, config.long_call_cpu_percent);
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                network,
                ticker_stop,
                live: Arc::new(AtomicU64::new(0)),
                long_calls,
            }),
        })
    }

    /// Long plugin calls running in a slot, waiting for one, and the slots
    /// (0: no limit).
    pub fn long_calls(&self) -> (usize, usize, usize) {
        let (running, waiting) = self.inner.long_calls.load();
        (running, waiting, self.inner.config.long_call_slots)
    }

    /// Plugin instances alive now, and the most the instance pool holds.
    pub fn instances(&self) -> (u64, u64) {
        let live = self.inner.live.load(Ordering::Relaxed);
        (live, u64::from(self.inner.config.max_instances))
    }

    /// Validate and compile a component. Blocking and CPU-heavy (milliseconds to
    /// seconds): call it off the async executor.
    pub fn compile(&self, wasm: &[u8]) -> Result<Plugin, PluginError> {
        plugin::compile(self, wasm)
    }

    /// Link machine code that [`compile_to_machine_code`] produced in a
    /// process of this same binary; refused with the reason if it does not
    /// fit this engine or the host's imports.
    pub fn load_compiled(&self, code: &[u8]) -> Result<Plugin, PluginError> {
        plugin::load_compiled(self, code)
    }

    /// A subscription's way out to the network: its allow-list and limits
    /// (`None`: every request is denied), a connection pool of up to
    /// `pool_size` idle connections per destination, and its statistics.
    pub fn egress(
        &self,
        subscription: &str,
        rules: Option<EgressRules>,
        stats: Arc<EgressStats>,
        pool_size: usize,
    ) -> Arc<Egress> {
        Arc::new(Egress::new(
            &self.inner.network,
            subscription,
            rules,
            stats,
            pool_size,
        ))
    }

    /// Map machine code that [`Plugin::machine_code`] produced on this host
    /// and that was saved to `path` (no copy: the file is memory-mapped).
    /// `None` as for [`Runtime::load_precompiled`], or if the file is missing.
    pub fn load_precompiled_file(&self, path: &std::path::Path) -> Option<Plugin> {
        plugin::load_precompiled_file(self, path)
    }

    /// Load machine code produced by [`Plugin::machine_code`] on this host.
    /// Returns `None` when the bytes were made by another engine version or
    /// configuration (the caller recompiles from the component bytes).
    pub fn load_precompiled(&self, code: &[u8]) -> Option<Plugin> {
        plugin::load_precompiled(self, code)
    }
}

/// Validate and compile a component to machine code that
/// [`Runtime::load_compiled`] accepts, without a runtime: for a compile in a
/// process of its own, held to limits of its own.
pub fn compile_to_machine_code(wasm: &[u8]) -> Result<Vec<u8>, PluginError> {
    plugin::machine_code(wasm)
}

fn spawn_ticker(engine: wasmtime::Engine, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("switchyard-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Epoch ticks that cover `timeout` (rounded up, plus one so that a call never
/// gets less than its full timeout).
fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_micros();
    (timeout.as_micros().div_ceil(tick) as u64).saturating_add(1)
}
