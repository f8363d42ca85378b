//! Engine configuration and the per-instance memory limiter.

use super::RuntimeConfig;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Core instances, memories and tables one component may hold. Components made
/// by the usual toolchains (wasm-component-ld, componentize-py/js) hold a main
/// module plus a few adapter and shim modules.
const PER_COMPONENT: u32 = 32;
/// Linear memory an ended instance wrote that is reset in place (copied back
/// from the image, or zeroed) instead of decommitted with `madvise`: the
/// pages stay mapped, so the next instance in the slot writes them without a
/// copy-on-write fault and its TLB shootdown on every core. Only written
/// pages count (the kernel's page-map scan finds them). 2 MiB covers a Rust
/// or C plugin's writes; the Python and JavaScript examples ran no faster
/// with 32 or 64 MiB (docs/performance.md).
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
/// The same for tables: 64 KiB covers any real plugin's function tables.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;
/// Decommits (the `madvise` calls that remain) are batched to amortize TLB
/// shootdowns.
const DECOMMIT_BATCH: usize = 32;

pub(super) fn engine(config: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    let n = config.max_instances;
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(4))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .max_core_instances_per_component(PER_COMPONENT)
        .max_memories_per_component(PER_COMPONENT)
        .max_tables_per_component(PER_COMPONENT)
        .max_memory_size(config.memory_limit_bytes)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE)
        .decommit_batch_size(DECOMMIT_BATCH)
        // Reset only the pages actually touched, where the kernel supports it.
        .pagemap_scan(Enabled::Auto);
    let mut cfg = base();
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&cfg)
}

/// What every engine of the host shares: what compiled code depends on.
fn base() -> Config {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true).epoch_interruption(true);
    cfg
}

/// An engine that only compiles: the same code settings as [`engine`], no
/// instance pool (nothing reserved), so a compile in a process of its own
/// can be held to a small memory limit. Its output loads into [`engine`]'s.
pub(super) fn compile_engine() -> wasmtime::Result<Engine> {
    Engine::new(&base())
}

/// Caps linear memory and remembers whether the cap was hit, so that the trap
/// that usually follows a refused `memory.grow` is reported as a memory limit.
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) hit: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, hit: false }
    }
}

/// Table entries one instance may have; generous for any real plugin.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
