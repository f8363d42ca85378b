//! The plugin registry: uploads (validated and compiled before anything is
//! stored), versions per name, content-addressed blobs, and the compiled-code
//! cache that makes restarts fast.

use super::blobs::WasmDir;
use super::code::CodeDir;
use super::compile::Compiler;
use super::shared::SharedMeta;
use super::spec::{parse_plugin_ref, validate_resource_name};
use super::worker::WorkerPool;
use super::{now_ms, BrokerError};
use crate::histogram::{self, Histogram, HistogramSnapshot};
use crate::runtime::{Plugin, Runtime};
use crate::store::{Durability, Op, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Largest plugin upload: 32 MiB (a Python component with its interpreter is ~20 MiB).
pub const MAX_PLUGIN_BYTES: usize = 32 << 20;
const META_PLUGIN: &str = "plugin";

/// One stored version of a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginVersionInfo {
    pub version: u32,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    pub size: u64,
    pub created_ms: u64,
    /// What the plugin was written in, as its producers metadata tells
    /// (e.g. `Rust`, `Python`, `JavaScript`, `C99`); empty if it does not
    /// say, or for versions uploaded before the host recorded it.
    #[serde(default)]
    pub languages: Vec<String>,
}

/// A plugin name and its versions.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PluginInfo {
    pub name: String,
    pub latest: u32,
    pub versions: Vec<PluginVersionInfo>,
}

/// A plugin's stored record: its versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub versions: Vec<PluginVersionInfo>,
    /// The highest version number ever given, so a deleted version's number
    /// is never given again (ledgers and dead letters name versions).
    #[serde(default)]
    pub last_version: u32,
}

struct Entry {
    record: PluginRecord,
    compiled: BTreeMap<u32, Plugin>,
}

pub(crate) struct Registry {
    store: Store,
    runtime: Runtime,
    /// The threads plugins run on.
    workers: WorkerPool,
    /// Where compiled code is kept (else in the store's blobs).
    code: Option<CodeDir>,
    /// Where components are kept (else in the store's blobs).
    wasm: Option<WasmDir>,
    /// Compile uploads in a process of their own (else on a blocking thread).
    compiler: Option<Compiler>,
    compile_timeout: Duration,
    entries: RwLock<HashMap<String, Entry>>,
    uploads: tokio::sync::Mutex<()>,
    /// How long accepted uploads took to compile (or to load code compiled
    /// earlier from the same bytes).
    compile_seconds: Histogram,
    /// Cluster mode: records and components live there, shared by every
    /// host; `entries` keeps what this host compiled.
    shared: Option<Arc<dyn SharedMeta>>,
}

/// How often a change that lost a compare-and-set race to another host is
/// tried again before the caller is told to retry.
const RACES: usize = 16;

impl Registry {
    /// The runtime plugins run in.
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The host's plugin threads.
    pub(crate) fn workers(&self) -> &WorkerPool {
        &self.workers
    }

    /// How long accepted uploads took to compile.
    pub(crate) fn compile_seconds(&self) -> HistogramSnapshot {
        self.compile_seconds.snapshot()
    }

    /// Compile uploads in processes `compiler` starts from now on.
    pub(crate) fn compile_in_processes(mut self, compiler: Compiler) -> Self {
        self.compiler = Some(compiler);
        self
    }

    /// Keep plugins in `shared` (cluster mode) from now on.
    pub(crate) fn shared_in(mut self, shared: Arc<dyn SharedMeta>) -> Self {
        self.shared = Some(shared);
        self
    }
}

fn wasm_blob(digest: &str) -> String {
    format!("wasm/{digest}")
}
/// Where compiled code was kept before it moved to files (read once to
/// migrate it).
fn code_blob(digest: &str) -> String {
    format!("code/{digest}")
}

impl Registry {
    /// Load every stored plugin; plugins will run on up to `worker_threads`
    /// threads. Components an earlier host kept in the store move to `wasm`;
    /// files there that no version names are removed.
    pub(crate) async fn load(
        store: Store,
        runtime: Runtime,
        compile_timeout: Duration,
        code: Option<CodeDir>,
        wasm: Option<WasmDir>,
        worker_threads: usize,
    ) -> Result<Self, BrokerError> {
        // Every version loads at once, on the blocking pool: loading cached
        // machine code is mostly copying, so startup takes about as long as
        // the largest plugin rather than the sum of all.
        let started = std::time::Instant::now();
        let mut loading = Vec::new();
        for (name, record) in store.list_meta::<PluginRecord>(META_PLUGIN)? {
            let versions = record
                .versions
                .iter()
                .map(|v| {
                    let (s, r, digest) = (store.clone(), runtime.clone(), v.digest.clone());
                    let (c, w) = (code.clone(), wasm.clone());
                    let task = tokio::task::spawn_blocking(move || {
                        if let Some(w) = &w {
                            move_wasm(&s, w, &digest)?;
                        }
                        load_version(&s, &r, c.as_ref(), w.as_ref(), &digest)
                    });
                    (v.version, task)
                })
                .collect::<Vec<_>>();
            loading.push((name, record, versions));
        }
        let mut entries = HashMap::new();
        for (name, record, versions) in loading {
            let mut compiled = BTreeMap::new();
            for (version, task) in versions {
                let plugin = task
                    .await
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))??;
                compiled.insert(version, plugin);
            }
            entries.insert(name, Entry { record, compiled });
        }
        if let Some(w) = wasm.clone() {
            let named: std::collections::HashSet<String> = entries
                .values()
                .flat_map(|e: &Entry| e.record.versions.iter().map(|v| v.digest.clone()))
                .collect();
            let removed = tokio::task::spawn_blocking(move || w.retain(&named))
                .await
                .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
            if removed > 0 {
                tracing::info!(removed, "removed plugin files no version names");
            }
        }
        if !entries.is_empty() {
            tracing::info!(
                plugins = entries.len(),
                ms = started.elapsed().as_millis() as u64,
                "plugins loaded"
            );
        }
        Ok(Self {
            store,
            runtime,
            workers: WorkerPool::new(worker_threads),
            code,
            wasm,
            compiler: None,
            compile_timeout,
            entries: RwLock::new(entries),
            uploads: tokio::sync::Mutex::new(()),
            compile_seconds: Histogram::new(histogram::SLOW_SECONDS),
            shared: None,
        })
    }

    pub(crate) async fn put(
        &self,
        name: &str,
        wasm: Vec<u8>,
    ) -> Result<(PluginInfo, bool), BrokerError> {
        validate_resource_name("plugin", name)?;
        if wasm.len() > MAX_PLUGIN_BYTES {
            return Err(BrokerError::TooLarge(format!(
                "a plugin of {} bytes is over the limit of {MAX_PLUGIN_BYTES}",
                wasm.len()
            )));
        }
        // Hashing 32 MiB takes tens of milliseconds: not on an async thread.
        let (digest, wasm) = tokio::task::spawn_blocking(move || {
            (format!("sha256:{:x}", Sha256::digest(&wasm)), wasm)
        })
        .await
        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        // One upload at a time: version numbers are assigned in order.
        let _guard = self.uploads.lock().await;
        if let Ok(info) = self.info_any(name).await {
            let latest = info.versions.last().map(|v| v.digest.as_str());
            if latest == Some(digest.as_str()) {
                return Ok((info, false));
            }
        }
        let size = wasm.len() as u64;
        let started = std::time::Instant::now();
        let (plugin, wasm, kept) = match &self.compiler {
            Some(compiler) => self.compile_in_process(compiler, &digest, wasm).await?,
            None => self.compile_here(&digest, wasm).await?,
        };
        self.compile_seconds.observe_duration(started.elapsed());
        kept?;
        let (languages, wasm) =
            tokio::task::spawn_blocking(move || (crate::runtime::languages(&wasm), wasm))
                .await
                .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let new = Version {
            digest,
            size,
            languages,
        };
        if let Some(shared) = &self.shared {
            return self.put_shared(shared, name, new, wasm, plugin).await;
        }
        // The component first, then the version that names it.
        let mut ops = Vec::new();
        match self.wasm.clone() {
            Some(dir) => {
                let key = new.digest.clone();
                tokio::task::spawn_blocking(move || dir.keep(&key, &wasm))
                    .await
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?
                    .map_err(|e| BrokerError::Store(format!("cannot keep the plugin: {e}")))?;
            }
            None => ops.push(Op::PutBlob {
                name: wasm_blob(&new.digest),
                bytes: wasm,
            }),
        }
        let mut record = self.record(name);
        let version = record.add(&new);
        ops.push(Op::put_meta(META_PLUGIN, name, &record));
        self.store.submit(ops, Durability::Synced).await?;
        let info = self.deployed(name, record, version, plugin);
        tracing::info!(plugin = name, version, "plugin version deployed");
        Ok((info, true))
    }

    /// Keep a new version's record and compiled plugin for this host's
    /// calls.
    fn deployed(
        &self,
        name: &str,
        record: PluginRecord,
        version: u32,
        plugin: Plugin,
    ) -> PluginInfo {
        let mut entries = self.entries.write().expect("plugins lock");
        let entry = entries.entry(name.to_string()).or_insert_with(|| Entry {
            record: PluginRecord::default(),
            compiled: BTreeMap::new(),
        });
        entry.record = record;
        entry.compiled.insert(version, plugin);
        to_info(name, &entry.record)
    }

    /// Compile on a blocking thread of this process (or take machine code
    /// this host compiled earlier from the same bytes: under another name,
    /// or in an earlier harness run). A compile past the timeout is refused
    /// but runs on to its end.
    async fn compile_here(
        &self,
        digest: &str,
        wasm: Vec<u8>,
    ) -> Result<(Plugin, Vec<u8>, Result<(), BrokerError>), BrokerError> {
        let runtime = self.runtime.clone();
        let (code, key, store) = (self.code.clone(), digest.to_string(), self.store.clone());
        let compile = tokio::task::spawn_blocking(move || {
            if let Some(plugin) = code.as_ref().and_then(|c| c.load(&runtime, &key)) {
                return Ok((plugin, wasm, Ok(())));
            }
            let plugin = runtime.compile(&wasm)?;
            // Kept here, off the async threads (tens of MB for an
            // interpreted plugin).
            let kept = keep_code(&store, code.as_ref(), &key, plugin.machine_code());
            Ok::<_, crate::runtime::PluginError>((plugin, wasm, kept))
        });
        match tokio::time::timeout(self.compile_timeout, compile).await {
            Err(_) => Err(BrokerError::Unavailable(format!(
                "compiling the plugin took longer than {} s",
                self.compile_timeout.as_secs()
            ))),
            Ok(Err(join)) => Err(BrokerError::Unavailable(join.to_string())),
            Ok(Ok(Err(rejected))) => Err(BrokerError::PluginRejected(rejected.to_string())),
            Ok(Ok(Ok(done))) => Ok(done),
        }
    }

    /// Compile in a process of its own, held to its limits and killed at
    /// the timeout (or take machine code this host compiled earlier).
    async fn compile_in_process(
        &self,
        compiler: &Compiler,
        digest: &str,
        wasm: Vec<u8>,
    ) -> Result<(Plugin, Vec<u8>, Result<(), BrokerError>), BrokerError> {
        let (runtime, code, key) = (self.runtime.clone(), self.code.clone(), digest.to_string());
        let cached = tokio::task::spawn_blocking(move || code.and_then(|c| c.load(&runtime, &key)))
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        if let Some(plugin) = cached {
            return Ok((plugin, wasm, Ok(())));
        }
        let machine = compiler.compile(&wasm, self.compile_timeout).await?;
        let (runtime, code, key, store) = (
            self.runtime.clone(),
            self.code.clone(),
            digest.to_string(),
            self.store.clone(),
        );
        let loaded = tokio::task::spawn_blocking(move || {
            let plugin = runtime.load_compiled(&machine)?;
            // The compile process's bytes, kept as they are.
            let kept = keep_code(&store, code.as_ref(), &key, Some(machine));
            Ok::<_, crate::runtime::PluginError>((plugin, kept))
        })
        .await
        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let (plugin, kept) = loaded.map_err(|e| BrokerError::PluginRejected(e.to_string()))?;
        Ok((plugin, wasm, kept))
    }

    /// Delete one version (`name@N`) or every version (`name`) of a plugin.
    /// Refused (409) while a subscription in `users` (name, plugin reference)
    /// pins a deleted version or follows `name` and the latest version would
    /// go. Attempts already running keep their compiled plugin to the end.
    pub(crate) async fn delete(
        &self,
        reference: &str,
        users: &[(String, String)],
    ) -> Result<(), BrokerError> {
        let (name, pinned) = parse_plugin_ref(reference)?;
        let _guard = self.uploads.lock().await;
        let info = self.info(name)?;
        let doomed = doomed(reference, pinned, &info.versions)?;
        check_users(reference, &doomed, info.latest, users)?;
        let mut record = self.record(name);
        let removed: Vec<PluginVersionInfo> = record
            .versions
            .iter()
            .filter(|v| doomed.contains(&v.version))
            .cloned()
            .collect();
        record.versions.retain(|v| !doomed.contains(&v.version));
        // A blob goes once no version of any plugin has its digest.
        let kept: std::collections::HashSet<String> = {
            let entries = self.entries.read().expect("plugins lock");
            let others = entries.iter().filter(|(n, _)| n.as_str() != name);
            others
                .flat_map(|(_, e)| e.record.versions.iter())
                .chain(&record.versions)
                .map(|v| v.digest.clone())
                .collect()
        };
        let gone: Vec<String> = removed
            .into_iter()
            .map(|v| v.digest)
            .filter(|d| !kept.contains(d))
            .collect();
        // The record and the blobs no longer used, in one batch.
        let mut ops = vec![if record.versions.is_empty() {
            Op::delete_meta(META_PLUGIN, name)
        } else {
            Op::put_meta(META_PLUGIN, name, &record)
        }];
        for digest in &gone {
            ops.push(Op::DeleteBlob {
                name: wasm_blob(digest),
            });
            ops.push(Op::DeleteBlob {
                name: code_blob(digest),
            });
        }
        self.store.submit(ops, Durability::Synced).await?;
        self.forget(name, record, &doomed);
        for digest in &gone {
            if let Some(code) = &self.code {
                code.remove(digest);
            }
            if let Some(wasm) = &self.wasm {
                wasm.remove(digest);
            }
        }
        tracing::info!(plugin = reference, "plugin deleted");
        Ok(())
    }

    /// Cluster mode's upload: the component first, then the version that
    /// names it, added to the plugin's shared record by compare-and-set
    /// (version numbers stay unique across hosts).
    async fn put_shared(
        &self,
        shared: &Arc<dyn SharedMeta>,
        name: &str,
        new: Version,
        wasm: Vec<u8>,
        plugin: Plugin,
    ) -> Result<(PluginInfo, bool), BrokerError> {
        shared.put_component(&new.digest, wasm).await?;
        for _ in 0..RACES {
            let (mut record, revision) = shared.plugin(name).await?.unwrap_or_default();
            if record
                .versions
                .last()
                .is_some_and(|v| v.digest == new.digest)
            {
                // Another host stored the same bytes meanwhile.
                return Ok((to_info(name, &record), false));
            }
            let version = record.add(&new);
            if !shared.put_plugin(name, &record, revision).await? {
                continue;
            }
            let info = self.deployed(name, record, version, plugin);
            tracing::info!(
                plugin = name,
                version,
                "plugin version deployed to the cluster"
            );
            return Ok((info, true));
        }
        Err(busy(name))
    }

    /// Cluster mode's delete of one version (`name@N`) or every version
    /// (`name`), by compare-and-set on the shared record. Components stay
    /// in the shared store (another plugin, or an upload under way on
    /// another host, may name the same digest).
    pub(crate) async fn delete_shared(
        &self,
        reference: &str,
        users: &[(String, String)],
    ) -> Result<(), BrokerError> {
        let shared = self
            .shared
            .as_ref()
            .ok_or_else(|| BrokerError::Unsupported("not in cluster mode".into()))?;
        let (name, pinned) = parse_plugin_ref(reference)?;
        for _ in 0..RACES {
            let Some((mut record, revision)) = shared.plugin(name).await? else {
                return Err(BrokerError::NotFound(format!(
                    "plugin {name:?} does not exist"
                )));
            };
            let doomed = doomed(reference, pinned, &record.versions)?;
            let latest = record.versions.last().map_or(0, |v| v.version);
            check_users(reference, &doomed, latest, users)?;
            record.versions.retain(|v| !doomed.contains(&v.version));
            let done = if record.versions.is_empty() {
                shared.delete_plugin(name, revision).await?
            } else {
                shared.put_plugin(name, &record, revision).await?
            };
            if !done {
                continue;
            }
            self.forget(name, record, &doomed);
            tracing::info!(plugin = reference, "plugin deleted from the cluster");
            return Ok(());
        }
        Err(busy(name))
    }

    /// Keep `record`, what is left of plugin `name` once the versions
    /// `doomed` were deleted, for this host's calls (the whole plugin
    /// goes with its last version).
    fn forget(&self, name: &str, record: PluginRecord, doomed: &[u32]) {
        let mut entries = self.entries.write().expect("plugins lock");
        if record.versions.is_empty() {
            entries.remove(name);
        } else if let Some(entry) = entries.get_mut(name) {
            entry.record = record;
            entry.compiled.retain(|v, _| !doomed.contains(v));
        }
    }

    /// Cluster mode: does the version `reference` names exist?
    pub(crate) async fn check_shared(&self, reference: &str) -> Result<(), BrokerError> {
        match &self.shared {
            Some(shared) => self.shared_version(shared, reference).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// The shared record of the plugin `reference` names, and the version
    /// it names now.
    async fn shared_version(
        &self,
        shared: &Arc<dyn SharedMeta>,
        reference: &str,
    ) -> Result<(PluginRecord, PluginVersionInfo), BrokerError> {
        let (name, pinned) = parse_plugin_ref(reference)?;
        let (record, _) = shared
            .plugin(name)
            .await?
            .ok_or_else(|| BrokerError::NotFound(format!("plugin {name:?} does not exist")))?;
        let version = match pinned {
            Some(v) => record.versions.iter().find(|x| x.version == v),
            None => record.versions.last(),
        }
        .ok_or_else(|| BrokerError::NotFound(format!("plugin {reference:?} has no such version")))?
        .clone();
        Ok((record, version))
    }

    /// Cluster mode: make the version `reference` names now runnable
    /// here, compiling it from the shared component if this host has not
    /// (it was uploaded through another host). Without a version, the
    /// latest is taken, as [`Registry::resolve`] does.
    pub(crate) async fn fetch_shared(&self, reference: &str) -> Result<(), BrokerError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let (record, version) = self.shared_version(shared, reference).await?;
        let (name, _) = parse_plugin_ref(reference)?;
        let compiled = {
            let entries = self.entries.read().expect("plugins lock");
            entries
                .get(name)
                .and_then(|e| e.compiled.get(&version.version))
                .cloned()
        };
        let plugin = match compiled {
            Some(plugin) => plugin,
            None => {
                let wasm = shared.component(&version.digest).await?.ok_or_else(|| {
                    BrokerError::Unavailable(format!(
                        "the component of {name}@{} is missing from the cluster",
                        version.version
                    ))
                })?;
                let (plugin, _, kept) = match &self.compiler {
                    Some(compiler) => {
                        self.compile_in_process(compiler, &version.digest, wasm)
                            .await?
                    }
                    None => self.compile_here(&version.digest, wasm).await?,
                };
                if let Err(e) = kept {
                    tracing::warn!(plugin = name, error = %e, "keeping compiled code failed; it is compiled again next time");
                }
                plugin
            }
        };
        self.deployed(name, record, version.version, plugin);
        Ok(())
    }

    /// Every plugin: the shared records in cluster mode, else this host's.
    pub(crate) async fn list_any(&self) -> Result<Vec<PluginInfo>, BrokerError> {
        let Some(shared) = &self.shared else {
            return Ok(self.list());
        };
        let mut out = Vec::new();
        for name in shared.plugin_names().await? {
            // Deleted since it was listed: left out.
            if let Some((record, _)) = shared.plugin(&name).await? {
                out.push(to_info(&name, &record));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One plugin: its shared record in cluster mode, else this host's.
    pub(crate) async fn info_any(&self, name: &str) -> Result<PluginInfo, BrokerError> {
        let Some(shared) = &self.shared else {
            return self.info(name);
        };
        match shared.plugin(name).await? {
            Some((record, _)) => Ok(to_info(name, &record)),
            None => Err(BrokerError::NotFound(format!(
                "plugin {name:?} does not exist"
            ))),
        }
    }

    /// A copy of a plugin's stored record (empty if it has none).
    fn record(&self, name: &str) -> PluginRecord {
        self.entries
            .read()
            .expect("plugins lock")
            .get(name)
            .map(|e| e.record.clone())
            .unwrap_or_default()
    }

    pub(crate) fn list(&self) -> Vec<PluginInfo> {
        let entries = self.entries.read().expect("plugins lock");
        let mut out: Vec<_> = entries.iter().map(|(n, e)| to_info(n, &e.record)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub(crate) fn info(&self, name: &str) -> Result<PluginInfo, BrokerError> {
        let entries = self.entries.read().expect("plugins lock");
        entries
            .get(name)
            .map(|e| to_info(name, &e.record))
            .ok_or_else(|| BrokerError::NotFound(format!("plugin {name:?} does not exist")))
    }

    /// The compiled plugin a reference (`name` or `name@N`) points at now,
    /// with its `name@version` label.
    pub(crate) fn resolve(&self, reference: &str) -> Result<(Plugin, String), BrokerError> {
        let (name, pinned) = parse_plugin_ref(reference)?;
        let entries = self.entries.read().expect("plugins lock");
        let entry = entries
            .get(name)
            .ok_or_else(|| BrokerError::NotFound(format!("plugin {name:?} does not exist")))?;
        let found = match pinned {
            Some(v) => entry.compiled.get(&v).map(|p| (v, p)),
            None => entry.compiled.iter().next_back().map(|(v, p)| (*v, p)),
        };
        let (version, plugin) = found.ok_or_else(|| {
            BrokerError::NotFound(format!("plugin {reference:?} has no such version"))
        })?;
        Ok((plugin.clone(), format!("{name}@{version}")))
    }
}

/// A new version's facts, before it has a number.
struct Version {
    digest: String,
    size: u64,
    languages: Vec<String>,
}

impl PluginRecord {
    /// Add `new` as the next version (never a number given before, even
    /// to a deleted version); returns its number.
    fn add(&mut self, new: &Version) -> u32 {
        let version = self
            .versions
            .last()
            .map_or(0, |v| v.version)
            .max(self.last_version)
            + 1;
        self.last_version = version;
        self.versions.push(PluginVersionInfo {
            version,
            digest: new.digest.clone(),
            size: new.size,
            created_ms: now_ms(),
            languages: new.languages.clone(),
        });
        version
    }
}

/// The versions a delete of `reference` removes: the one it pins
/// (`pinned`), or all of them; [`BrokerError::NotFound`] if it pins one
/// `versions` does not hold.
fn doomed(
    reference: &str,
    pinned: Option<u32>,
    versions: &[PluginVersionInfo],
) -> Result<Vec<u32>, BrokerError> {
    match pinned {
        Some(v) if versions.iter().any(|i| i.version == v) => Ok(vec![v]),
        Some(_) => Err(BrokerError::NotFound(format!(
            "plugin {reference:?} has no such version"
        ))),
        None => Ok(versions.iter().map(|v| v.version).collect()),
    }
}

/// Refuse to delete the versions `doomed` of the plugin `reference` names
/// (whose latest version is `latest`) while a subscription in `users`
/// (name, plugin reference) pins one, or follows the latest and it goes.
fn check_users(
    reference: &str,
    doomed: &[u32],
    latest: u32,
    users: &[(String, String)],
) -> Result<(), BrokerError> {
    let (name, _) = parse_plugin_ref(reference)?;
    for (subscription, used) in users {
        let (used_name, used_version) = parse_plugin_ref(used)?;
        if used_name != name {
            continue;
        }
        let conflict = match used_version {
            Some(v) => doomed.contains(&v).then(|| format!("pins {name}@{v}")),
            None => doomed
                .contains(&latest)
                .then(|| format!("follows the latest version of {name} ({name}@{latest})")),
        };
        if let Some(why) = conflict {
            return Err(BrokerError::Conflict(format!(
                "plugin {reference:?} is in use: subscription {subscription:?} {why}; \
                 change or delete the subscription first"
            )));
        }
    }
    Ok(())
}

fn busy(name: &str) -> BrokerError {
    BrokerError::Unavailable(format!(
        "plugin {name:?} is being changed by other hosts; try again"
    ))
}

fn to_info(name: &str, record: &PluginRecord) -> PluginInfo {
    PluginInfo {
        name: name.to_string(),
        latest: record.versions.last().map_or(0, |v| v.version),
        versions: record.versions.clone(),
    }
}

/// Load a stored version: from cached machine code when it fits this engine,
/// else by compiling the stored component (and refreshing the cache).
/// Move a component an earlier host kept in the store to its file.
fn move_wasm(store: &Store, wasm: &WasmDir, digest: &str) -> Result<(), BrokerError> {
    if wasm.has(digest) {
        return Ok(());
    }
    let Some(bytes) = store.get_blob(&wasm_blob(digest))? else {
        return Ok(());
    };
    wasm.keep(digest, &bytes)
        .map_err(|e| BrokerError::Store(format!("cannot move plugin {digest} to a file: {e}")))?;
    let op = Op::DeleteBlob {
        name: wasm_blob(digest),
    };
    store.write(vec![op], Durability::Synced)?;
    Ok(())
}

fn load_version(
    store: &Store,
    runtime: &Runtime,
    code: Option<&CodeDir>,
    wasm_dir: Option<&WasmDir>,
    digest: &str,
) -> Result<Plugin, BrokerError> {
    if let Some(plugin) = code.and_then(|c| c.load(runtime, digest)) {
        return Ok(plugin);
    }
    // Code kept in the store by an earlier version of the host: moved to
    // the code directory (it stays in the store if the file cannot be
    // written; code that no longer fits the engine goes).
    if let Some(bytes) = store.get_blob(&code_blob(digest))? {
        let plugin = runtime.load_precompiled(&bytes);
        if let Some(code) = code {
            let moved = plugin.is_none() || code.keep(digest, &bytes).is_ok();
            if moved {
                let op = Op::DeleteBlob {
                    name: code_blob(digest),
                };
                store.write(vec![op], Durability::Synced)?;
            }
        }
        if let Some(plugin) = plugin {
            return Ok(plugin);
        }
    }
    let wasm = match wasm_dir {
        Some(dir) => dir
            .read(digest)
            .map_err(|e| BrokerError::Store(format!("cannot read plugin {digest}: {e}")))?,
        None => store.get_blob(&wasm_blob(digest))?,
    }
    .ok_or_else(|| BrokerError::Store(format!("plugin blob {digest} is missing")))?;
    let plugin = runtime
        .compile(&wasm)
        .map_err(|e| BrokerError::Store(format!("stored plugin {digest} no longer loads: {e}")))?;
    keep_code(store, code, digest, plugin.machine_code())?;
    Ok(plugin)
}

/// Keep a freshly compiled plugin's machine code for the next load: in the
/// code directory, else in the store.
fn keep_code(
    store: &Store,
    code: Option<&CodeDir>,
    digest: &str,
    machine: Option<Vec<u8>>,
) -> Result<(), BrokerError> {
    let Some(machine) = machine else {
        tracing::warn!(
            digest,
            "the engine cannot serialize this plugin; it compiles at each start"
        );
        return Ok(());
    };
    match code {
        // A cache: if the file cannot be written (logged), the next load
        // compiles again.
        Some(code) => {
            let _ = code.keep(digest, &machine);
        }
        None => {
            let op = Op::PutBlob {
                name: code_blob(digest),
                bytes: machine,
            };
            store.write(vec![op], Durability::Synced)?;
        }
    }
    Ok(())
}
