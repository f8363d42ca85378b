//! Plugin components on disk: one file per digest
//! (`<data_dir>/plugins/<sha256 hex>.wasm`), which the plugin versions in
//! the store name by digest. Up to 32 MiB each: kept out of the store's
//! write-ahead log, where writing one would hold up every publish queued
//! behind it.
//!
//! A file is written before the version that names it, and removed after
//! the last version naming it is gone; a crash in between leaves a file no
//! version names, which [`WasmDir::retain`] removes at the next start.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub(crate) struct WasmDir {
    dir: PathBuf,
}

impl WasmDir {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn file(&self, digest: &str) -> PathBuf {
        digest_file(&self.dir, digest, "wasm")
    }

    /// Keep a component. Blocking (a paced write and syncs of up to 32 MiB):
    /// call it off the async threads.
    pub(crate) fn keep(&self, digest: &str, wasm: &[u8]) -> std::io::Result<()> {
        write_whole(&self.file(digest), wasm)
    }

    /// Whether the component of `digest` is here.
    pub(crate) fn has(&self, digest: &str) -> bool {
        self.file(digest).is_file()
    }

    /// The component of `digest`, if it is here.
    pub(crate) fn read(&self, digest: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.file(digest)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn remove(&self, digest: &str) {
        let _ = std::fs::remove_file(self.file(digest));
    }

    /// Remove the components (and files left half-written) no digest in
    /// `named` names. Returns how many went.
    pub(crate) fn retain(&self, named: &std::collections::HashSet<String>) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let keep = name
                .strip_suffix(".wasm")
                .is_some_and(|hex| named.contains(&format!("sha256:{hex}")));
            if !keep && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// The file of `digest` (`sha256:<hex>`) in `dir`: `<hex>.<extension>`.
pub(crate) fn digest_file(dir: &Path, digest: &str, extension: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    dir.join(format!("{hex}.{extension}"))
}

/// Bytes written between syncs: a sync that a publish's write-ahead log sync
/// may wait behind covers at most this much.
const PACE: usize = 1 << 20;

/// Write `bytes` to `path` whole or not at all: aside, in [`PACE`] pieces
/// each synced (so the disk never holds a large write ahead of others'
/// syncs), then renamed into place and the directory synced.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    for piece in bytes.chunks(PACE) {
        tmp.write_all(piece)?;
        tmp.as_file().sync_data()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_kept_read_and_unnamed_ones_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wasm = WasmDir::new(dir.path().join("plugins"));
        let bytes: Vec<u8> = (0..(3 * PACE + 5)).map(|i| i as u8).collect();
        wasm.keep("sha256:aa", &bytes).expect("writes");
        wasm.keep("sha256:bb", b"small").expect("writes");
        assert!(wasm.has("sha256:aa"));
        assert_eq!(wasm.read("sha256:aa").expect("reads"), Some(bytes));
        assert_eq!(wasm.read("sha256:cc").expect("reads"), None);
        std::fs::write(dir.path().join("plugins/.tmpXYZ"), b"half").expect("writes");
        let named = ["sha256:bb".to_string()].into_iter().collect();
        assert_eq!(
            wasm.retain(&named),
            2,
            "the unnamed component and the half-written file"
        );
        assert!(!wasm.has("sha256:aa"));
        assert!(wasm.has("sha256:bb"));
    }
}
