//! Compiled plugins: validation of uploaded bytes, pre-instantiation, and the
//! two isolation modes (a fresh instance per call, or a reused worker instance).

use super::bindings::{Consumer, ConsumerPre};
use super::call::{self, Delivery, Invocation, Outcome};
use super::host::{HostEnv, HostState, STDIO_CAPACITY};
use super::Runtime;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::Store;

/// Why bytes were refused as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("not a WebAssembly binary (no \\0asm header)")]
    NotWasm,
    #[error("a core WebAssembly module, not a component: build for wasm32-wasip2 or wrap it into a component")]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("the component needs an import the host does not provide: {0}")]
    UnsupportedImport(String),
    #[error("the component does not implement the world switchyard:plugin/consumer: {0}")]
    WrongWorld(String),
}

/// The host's instance pool had no room for another instance: a limit of the
/// host, not a failure of the plugin. The caller queues the message again
/// without counting an attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the host's instance pool is full: {0}")]
pub struct PoolFull(pub String);

/// A call that either ran (whatever its outcome) or could not start because
/// the host had no room for an instance.
pub type CallResult = Result<Invocation, PoolFull>;

/// A validated, compiled and pre-instantiated plugin. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    pre: ConsumerPre<HostState>,
    component: Component,
    runtime: Runtime,
}

fn error_text(err: &wasmtime::Error) -> String {
    err.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn check_header(wasm: &[u8]) -> Result<(), PluginError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(PluginError::NotWasm);
    }
    // A core module has version 1 and layer 0; a component has layer 1.
    if wasm[4..8] == [1, 0, 0, 0] {
        return Err(PluginError::CoreModule);
    }
    Ok(())
}

/// Compile a component to machine code with an engine that only compiles.
pub(super) fn machine_code(wasm: &[u8]) -> Result<Vec<u8>, PluginError> {
    check_header(wasm)?;
    let engine =
        super::limits::compile_engine().map_err(|e| PluginError::Invalid(error_text(&e)))?;
    let component =
        Component::new(&engine, wasm).map_err(|e| PluginError::Invalid(error_text(&e)))?;
    component
        .serialize()
        .map_err(|e| PluginError::Invalid(error_text(&e)))
}

/// Load machine code [`machine_code`] produced (in another process of this
/// host's binary) and link it, with the reason if it does not fit.
pub(super) fn load_compiled(runtime: &Runtime, code: &[u8]) -> Result<Plugin, PluginError> {
    let engine = &runtime.inner.engine;
    if wasmtime::Engine::detect_precompiled(code).is_none() {
        return Err(PluginError::Invalid(
            "the compiler produced no machine code".into(),
        ));
    }
    // SAFETY: the bytes come from this same binary's compile process, over
    // a pipe from the child this host started; wasmtime checks that the
    // engine version and settings match before using them.
    let component = unsafe { Component::deserialize(engine, code) }
        .map_err(|e| PluginError::Invalid(error_text(&e)))?;
    link(runtime, component)
}

pub(super) fn compile(runtime: &Runtime, wasm: &[u8]) -> Result<Plugin, PluginError> {
    check_header(wasm)?;
    let component = Component::new(&runtime.inner.engine, wasm)
        .map_err(|e| PluginError::Invalid(error_text(&e)))?;
    link(runtime, component)
}

fn link(runtime: &Runtime, component: Component) -> Result<Plugin, PluginError> {
    let pre = runtime
        .inner
        .linker
        .instantiate_pre(&component)
        .map_err(|e| PluginError::UnsupportedImport(error_text(&e)))?;
    let pre = ConsumerPre::new(pre).map_err(|e| PluginError::WrongWorld(error_text(&e)))?;
    Ok(Plugin {
        pre,
        component,
        runtime: runtime.clone(),
    })
}

pub(super) fn load_precompiled(runtime: &Runtime, code: &[u8]) -> Option<Plugin> {
    let engine = &runtime.inner.engine;
    // Only accept code this engine build would have produced itself.
    wasmtime::Engine::detect_precompiled(code)?;
    // SAFETY: callers only pass bytes that `machine_code` produced on this host
    // and stored in the host's own data directory; wasmtime checks that the
    // engine version and configuration match before using them.
    let component = unsafe { Component::deserialize(engine, code) }.ok()?;
    link(runtime, component).ok()
}

pub(super) fn load_precompiled_file(runtime: &Runtime, path: &std::path::Path) -> Option<Plugin> {
    let engine = &runtime.inner.engine;
    wasmtime::Engine::detect_precompiled_file(path).ok()??;
    // SAFETY: as for `load_precompiled`: the file is machine code this host
    // wrote to its own cache directory (whole or not at all: written aside,
    // synced, then renamed), and it is never rewritten in place while mapped.
    let component = unsafe { Component::deserialize_file(engine, path) }.ok()?;
    link(runtime, component).ok()
}

impl Plugin {
    /// This plugin's machine code, for [`Runtime::load_precompiled`] after a restart.
    pub fn machine_code(&self) -> Option<Vec<u8>> {
        self.component.serialize().ok()
    }

    fn new_store(&self, label: String, env: Option<Arc<dyn HostEnv>>) -> Store<HostState> {
        let config = &self.runtime.inner.config;
        let mut state = HostState::new(config.memory_limit_bytes, config.virtual_time.clone());
        state.label = label;
        state.env = env;
        state.live = Some(super::host::Live::new(self.runtime.inner.live.clone()));
        let mut store = Store::new(&self.runtime.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        // At the first deadline a call has run long (or, started long, has
        // run its first tick): once it shows it computes, it is demoted,
        // and from then on runs only in a long-call slot, checked every
        // turn (every tick under a budget), until its timeout stops it.
        // The thread's CPU time from then on tells whether it computed
        // long (see `priority::Conduct`).
        let slots = self.runtime.inner.long_calls.clone();
        store.epoch_deadline_callback(move |mut ctx| {
            let Some(deadline) = ctx.data().deadline else {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            };
            if Instant::now() >= deadline {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            if ctx.data().long_since.is_none() {
                let cpu = super::priority::thread_cpu();
                // Under a budget, where long calls may wait long for a
                // turn, a call past its time at normal priority is long
                // only if it computes: watched for a tick, it must have had
                // the CPU for half of it (a call that waited for the CPU,
                // or in a host call, is not demoted for that).
                let state = ctx.data_mut();
                let computing = state
                    .probe
                    .is_some_and(|at| cpu.saturating_sub(at) >= super::EPOCH_TICK / 2);
                if slots.budgeted() && !computing && state.probes < super::priority::PROBES {
                    state.probe = Some(cpu);
                    state.probes += 1;
                    return Ok(wasmtime::UpdateDeadline::Continue(1));
                }
                state.long_since = Some(cpu);
            }
            super::priority::demote();
            if !slots.run(deadline) {
                ctx.data_mut().starved = true;
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            Ok(wasmtime::UpdateDeadline::Continue(
                slots.check_in_ticks(left),
            ))
        });
        store
    }

    /// A suspect plugin's attempt takes its long-call slot before it starts
    /// (see `priority::LongCalls::gate`). `Err`: no turn came within
    /// `timeout`, and the attempt timed out without running (a timeout
    /// spent waiting leaves the plugin suspect).
    fn gate(
        &self,
        env: &dyn HostEnv,
        timeout: Duration,
    ) -> Result<Option<super::priority::Gate>, Box<Invocation>> {
        if !starts_long(env) {
            return Ok(None);
        }
        let started = Instant::now();
        self.runtime.inner.long_calls.gate(timeout).map_err(|()| {
            let mut waited = Invocation::unstarted(Outcome::Timeout(timeout), started.elapsed());
            waited.starved = true;
            conclude(env, Some(&waited));
            Box::new(waited)
        })
    }

    fn memory_limit(&self) -> usize {
        self.runtime.inner.config.memory_limit_bytes
    }

    /// A new instance in its own store. A failed instantiation (a trap in the
    /// component's start functions, the memory limit) comes back as the
    /// failed attempt's invocation; a full instance pool as [`PoolFull`].
    fn instantiate(
        &self,
        label: String,
        env: Option<Arc<dyn HostEnv>>,
        timeout: Duration,
    ) -> Result<(Store<HostState>, Consumer), Failed> {
        let started = Instant::now();
        let mut store = self.new_store(label, env);
        // Instantiation runs the component's start functions: bound them too.
        call::arm_deadline(&mut store, timeout);
        match self.pre.instantiate(&mut store) {
            Ok(consumer) => Ok((store, consumer)),
            Err(err) => {
                if let Some(full) = err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
                    // A start function may have run long before the pool
                    // refused a later part of the component.
                    super::priority::restore();
                    return Err(Failed::PoolFull(PoolFull(full.to_string())));
                }
                let outcome = call::classify(store.data(), &err, timeout, self.memory_limit());
                Err(Failed::Call(Box::new(call::finish(
                    &mut store, outcome, started,
                ))))
            }
        }
    }

    /// Call `handle` on a fresh instance (full isolation between messages).
    /// `label` and the message id tag the plugin's log lines (e.g.
    /// "billing@3 msg=…").
    pub fn invoke(
        &self,
        delivery: &Delivery,
        timeout: Duration,
        env: Arc<dyn HostEnv>,
        label: &str,
    ) -> CallResult {
        let tag = format!("{label} msg={}", delivery.message.id());
        let _gate = match self.gate(env.as_ref(), timeout) {
            Ok(gate) => gate,
            Err(waited) => return Ok(*waited),
        };
        let result = match self.instantiate(tag, Some(env.clone()), timeout) {
            Ok((mut store, consumer)) => {
                store.data_mut().starts_long = starts_long(env.as_ref());
                Ok(call::run(
                    &mut store,
                    &consumer,
                    delivery,
                    timeout,
                    self.memory_limit(),
                    &mut (0, 0),
                ))
            }
            Err(failed) => failed.into(),
        };
        conclude(env.as_ref(), result.as_ref().ok());
        result
    }

    /// An instance to reuse across calls on one thread. It is recycled after
    /// `recycle_after` calls, after any failed call, and when its captured
    /// stdio fills up.
    pub fn worker(&self, recycle_after: u32) -> PluginWorker {
        PluginWorker {
            plugin: self.clone(),
            live: None,
            recycle_after: recycle_after.max(1),
        }
    }
}

struct Live {
    store: Store<HostState>,
    consumer: Consumer,
    calls: u32,
    stdio_seen: (usize, usize),
}

/// A plugin instance reused by one worker (isolation `worker`).
pub struct PluginWorker {
    plugin: Plugin,
    live: Option<Live>,
    recycle_after: u32,
}

impl PluginWorker {
    /// Call `handle` on this worker's instance, creating it if needed;
    /// `label` as for [`Plugin::invoke`].
    pub fn invoke(
        &mut self,
        delivery: &Delivery,
        timeout: Duration,
        env: Arc<dyn HostEnv>,
        label: &str,
    ) -> CallResult {
        let memory_limit = self.plugin.memory_limit();
        // Declared before the instance: its slot is given up after the
        // instance's teardown.
        let _gate = match self.plugin.gate(env.as_ref(), timeout) {
            Ok(gate) => gate,
            Err(waited) => return Ok(*waited),
        };
        let mut live = match self.live.take() {
            Some(live) => live,
            None => match self.plugin.instantiate(String::new(), None, timeout) {
                Ok((store, consumer)) => Live {
                    store,
                    consumer,
                    calls: 0,
                    stdio_seen: (0, 0),
                },
                Err(failed) => {
                    let result: CallResult = failed.into();
                    conclude(env.as_ref(), result.as_ref().ok());
                    return result;
                }
            },
        };
        {
            let state = live.store.data_mut();
            state.starts_long = starts_long(env.as_ref());
            state.env = Some(env);
            // Written over the last call's tag, without a new allocation.
            state.label.clear();
            state.label.push_str(label);
            state.label.push_str(" msg=");
            state.label.push_str(delivery.message.id());
        }
        let invocation = call::run(
            &mut live.store,
            &live.consumer,
            delivery,
            timeout,
            memory_limit,
            &mut live.stdio_seen,
        );
        if let Some(env) = live.store.data().env.as_deref() {
            conclude(env, Some(&invocation));
        }
        live.calls += 1;
        let stdio_full = live.stdio_seen.0.max(live.stdio_seen.1) > STDIO_CAPACITY / 2;
        let failed = !matches!(
            invocation.outcome,
            Outcome::Ack | Outcome::DeadLetter(_) | Outcome::Retry { .. }
        );
        if !failed && !stdio_full && live.calls < self.recycle_after {
            live.store.data_mut().env = None;
            self.live = Some(live);
        }
        Ok(invocation)
    }
}

/// Whether a call for `env` starts as a long call (see `priority::Conduct`).
fn starts_long(env: &dyn HostEnv) -> bool {
    env.conduct()
        .is_some_and(super::priority::Conduct::starts_long)
}

/// Tell `env` how a call ended (`None`: it never started; see
/// `priority::Conduct`).
fn conclude(env: &dyn HostEnv, ran: Option<&Invocation>) {
    if let Some(conduct) = env.conduct() {
        conduct.end(ran.map(|i| (&i.outcome, i.long_cpu, i.starved)));
    }
}

/// Why an instance could not be made.
enum Failed {
    /// The plugin failed while starting: the attempt's invocation.
    Call(Box<Invocation>),
    PoolFull(PoolFull),
}

impl From<Failed> for CallResult {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Call(invocation) => Ok(*invocation),
            Failed::PoolFull(full) => Err(full),
        }
    }
}
