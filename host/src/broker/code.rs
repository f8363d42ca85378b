//! Compiled plugins kept on disk between runs: one file of machine code per
//! component digest (`<dir>/<sha256 hex>.cwasm`), loaded by mapping it rather
//! than reading and copying it, so a 35 MB Python or JavaScript plugin loads
//! in milliseconds.
//!
//! The server keeps them under its data directory (`code/`); the harness and
//! `switchyard test` share `~/.cache/switchyard/compiled`. The files are a
//! cache: only code this host produced is written, code from another engine
//! version is ignored (and replaced), and a missing file means compiling
//! again. A file is written aside, synced and renamed into place, so it is
//! whole or absent, and never rewritten while mapped.

use super::blobs::{digest_file, write_whole};
use crate::runtime::{Plugin, Runtime};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub(crate) struct CodeDir {
    dir: PathBuf,
}

impl CodeDir {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn file(&self, digest: &str) -> PathBuf {
        digest_file(&self.dir, digest, "cwasm")
    }

    /// The cached plugin of `digest`, if its code is here and fits this engine.
    /// A hit marks the file used now (its modification time), for [`CodeDir::prune`].
    pub(crate) fn load(&self, runtime: &Runtime, digest: &str) -> Option<Plugin> {
        let file = self.file(digest);
        if !file.is_file() {
            return None;
        }
        let plugin = runtime.load_precompiled_file(&file)?;
        let touched = std::fs::File::options()
            .append(true)
            .open(&file)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        if let Err(e) = touched {
            tracing::debug!(error = %e, file = %file.display(), "cannot mark cached code as used");
        }
        Some(plugin)
    }

    /// Delete code files not used for `unused_for` (by modification time):
    /// a cache shared by every `switchyard test` run would otherwise keep
    /// every plugin build ever tested. Returns how many went.
    pub(crate) fn prune(&self, unused_for: std::time::Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let Some(cutoff) = std::time::SystemTime::now().checked_sub(unused_for) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let stale = path.extension().is_some_and(|e| e == "cwasm")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at < cutoff);
            if stale && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Save a plugin's machine code (as [`Plugin::machine_code`] or a
    /// compile process produced it). Blocking (a sync of tens of MB for an
    /// interpreted plugin): call it off the async threads.
    pub(crate) fn keep(&self, digest: &str, code: &[u8]) -> std::io::Result<()> {
        write_whole(&self.file(digest), code).inspect_err(|e| {
            tracing::warn!(error = %e, dir = %self.dir.display(), "cannot cache compiled code");
        })
    }

    /// Forget the code of `digest`.
    pub(crate) fn remove(&self, digest: &str) {
        let _ = std::fs::remove_file(self.file(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::plugins::Registry;
    use crate::runtime::RuntimeConfig;
    use crate::store::Store;
    use std::time::Duration;

    fn component() -> Vec<u8> {
        crate::runtime::fuzz::stub_component()
    }

    /// A store in `data` and a small runtime, for loading registries.
    fn setup(data: &tempfile::TempDir) -> (Store, Runtime) {
        let store = Store::open(data.path(), None).unwrap();
        let runtime = Runtime::new(RuntimeConfig {
            max_instances: 4,
            ..RuntimeConfig::default()
        })
        .unwrap();
        (store, runtime)
    }

    /// A registry over `store` keeping code in `code` and components in `wasm`.
    async fn registry(
        store: &Store,
        runtime: &Runtime,
        code: Option<CodeDir>,
        wasm: Option<crate::broker::blobs::WasmDir>,
    ) -> Registry {
        let timeout = Duration::from_secs(60);
        Registry::load(store.clone(), runtime.clone(), timeout, code, wasm, 2)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn code_moves_from_the_store_to_files_and_a_bad_file_is_replaced() {
        let data = tempfile::tempdir().unwrap();
        let (store, runtime) = setup(&data);
        let load = |code: Option<CodeDir>| registry(&store, &runtime, code, None);
        // Without a code directory (an earlier host) the code goes to the store.
        let registry = load(None).await;
        registry.put("p", component()).await.unwrap();
        let digest = registry.info("p").unwrap().versions[0].digest.clone();
        let blob = format!("code/{digest}");
        assert!(store.get_blob(&blob).unwrap().is_some());
        drop(registry);

        // The next load moves it to a file, mapped from then on.
        let dir = CodeDir::new(data.path().join("code"));
        let registry = load(Some(dir.clone())).await;
        assert!(registry.resolve("p").is_ok());
        assert!(
            store.get_blob(&blob).unwrap().is_none(),
            "moved out of the store"
        );
        let file = dir.file(&digest);
        let good = std::fs::read(&file).expect("the code file");
        assert!(dir.load(&runtime, &digest).is_some());
        drop(registry);

        // A file that is not this engine's code is compiled over.
        std::fs::write(&file, b"not machine code").unwrap();
        assert!(dir.load(&runtime, &digest).is_none());
        let registry = load(Some(dir.clone())).await;
        assert!(registry.resolve("p").is_ok());
        assert_eq!(std::fs::read(&file).unwrap().len(), good.len());
        assert!(dir.load(&runtime, &digest).is_some());

        // Pruning removes code files unused for longer than asked, and only
        // those: a load marks its file used.
        let month = Duration::from_secs(30 * 24 * 3600);
        let old = std::time::SystemTime::now() - 2 * month;
        let stale = data.path().join("code/00ff.cwasm");
        let other = data.path().join("code/notes.txt");
        for path in [&stale, &other] {
            std::fs::write(path, b"x").unwrap();
        }
        // Only the times change: the registry still maps `file`.
        for path in [&stale, &other, &file] {
            std::fs::File::options()
                .append(true)
                .open(path)
                .and_then(|f| f.set_modified(old))
                .unwrap();
        }
        assert!(dir.load(&runtime, &digest).is_some(), "a hit marks it used");
        assert_eq!(dir.prune(month), 1);
        assert!(!stale.exists() && other.exists() && file.exists());
        // Stop the store's writer before the process exits.
        drop(registry);
        store.close().unwrap();
    }

    /// Components an earlier host kept in the store move to files at load;
    /// a file no version names (a crash between writing it and the version)
    /// goes; deleting the plugin removes its file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn components_move_from_the_store_to_files() {
        use crate::broker::blobs::WasmDir;
        let data = tempfile::tempdir().unwrap();
        let (store, runtime) = setup(&data);
        let wasm = WasmDir::new(data.path().join("plugins"));
        let code = || Some(CodeDir::new(data.path().join("code")));
        let load = |dir: Option<WasmDir>| registry(&store, &runtime, code(), dir);
        let registry = load(None).await;
        registry.put("p", component()).await.unwrap();
        let digest = registry.info("p").unwrap().versions[0].digest.clone();
        let blob = format!("wasm/{digest}");
        assert!(store.get_blob(&blob).unwrap().is_some());
        assert!(!wasm.has(&digest));
        drop(registry);

        wasm.keep("sha256:0123", b"left by a crash").unwrap();
        let registry = load(Some(wasm.clone())).await;
        assert!(registry.resolve("p").is_ok());
        assert!(
            store.get_blob(&blob).unwrap().is_none(),
            "moved out of the store"
        );
        assert_eq!(wasm.read(&digest).unwrap(), Some(component()));
        assert!(
            !wasm.has("sha256:0123"),
            "a file no version names is removed"
        );

        // A new version goes to a file only; deleting the plugin removes it.
        let mut other = component();
        other.extend_from_slice(&[0, 2, 1, b'x']); // a custom section "x"
        registry.put("p", other.clone()).await.unwrap();
        let second = registry.info("p").unwrap().versions[1].digest.clone();
        assert_eq!(wasm.read(&second).unwrap(), Some(other));
        assert!(store.get_blob(&format!("wasm/{second}")).unwrap().is_none());
        registry.delete("p", &[]).await.unwrap();
        assert!(!wasm.has(&digest) && !wasm.has(&second));
        drop(registry);
        store.close().unwrap();
    }
}
