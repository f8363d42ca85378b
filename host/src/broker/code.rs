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

use crate::runtime::{Plugin, Runtime};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub(crate) struct CodeDir {
    dir: PathBuf,
}

impl CodeDir {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join(format!("{hex}.cwasm"))
    }

    /// The cached plugin of `digest`, if its code is here and fits this engine.
    pub(crate) fn load(&self, runtime: &Runtime, digest: &str) -> Option<Plugin> {
        let file = self.file(digest);
        if !file.is_file() {
            return None;
        }
        runtime.load_precompiled_file(&file)
    }

    /// Save a freshly compiled plugin's code (best effort: it is a cache).
    pub(crate) fn keep(&self, digest: &str, plugin: &Plugin) {
        let Some(code) = plugin.machine_code() else {
            return;
        };
        if let Err(e) = write_whole(&self.file(digest), &code) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "cannot cache compiled code");
        }
    }

    /// Forget the code of `digest`.
    pub(crate) fn remove(&self, digest: &str) {
        let _ = std::fs::remove_file(self.file(digest));
    }
}

/// Write `bytes` to `path` whole or not at all.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}
