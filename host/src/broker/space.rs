//! Free space on the data directory's filesystem, held against a reserve.
//!
//! Below the reserve the host takes in no new data: publishes and plugin
//! uploads are refused (507) and runners start no new attempts (a plugin's
//! publications would need space), while what is already in flight commits
//! into the reserve. The store itself never runs out of space in normal
//! operation, so it never enters the failed state that only a restart
//! clears: once space is back (freed, or the filesystem grown), everything
//! resumes by itself within a sampling period.
//!
//! The reserve must hold what RocksDB writes besides new data: memtable
//! flushes (up to the WAL's 64 MiB cap), compactions and its logs.

use super::BrokerError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often free space is sampled: a disk filling up is refused within
/// this long.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// 512 MiB: the WAL cap plus a memtable flush and a compaction's headroom.
pub const DEFAULT_RESERVE_MIB: u64 = 512;

/// The data directory's free space against a reserve. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Space {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    reserve: u64,
    /// Bytes available at the last sample (`u64::MAX` when unwatched).
    free: AtomicU64,
}

/// The free space seen last, and the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSnapshot {
    pub free_bytes: u64,
    pub reserve_bytes: u64,
}

impl Space {
    /// Never low: for hosts that take no untrusted load (the harness).
    pub(crate) fn unwatched() -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: PathBuf::new(),
                reserve: 0,
                free: AtomicU64::new(u64::MAX),
            }),
        }
    }

    /// Sample `dir`'s filesystem now and every [`SAMPLE_EVERY`] on a thread
    /// of its own, until the last clone is dropped.
    pub(crate) fn watch(dir: &Path, reserve: u64) -> Result<Self, BrokerError> {
        let free = available(dir).map_err(|e| {
            BrokerError::Store(format!("cannot read free space of {}: {e}", dir.display()))
        })?;
        let space = Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                reserve,
                free: AtomicU64::new(free),
            }),
        };
        let weak = Arc::downgrade(&space.inner);
        std::thread::Builder::new()
            .name("switchyard-disk-space".into())
            .spawn(move || sample(weak))
            .map_err(|e| BrokerError::Unavailable(format!("cannot start a thread: {e}")))?;
        Ok(space)
    }

    /// Whether free space is below the reserve.
    pub(crate) fn low(&self) -> bool {
        self.inner.free.load(Ordering::Relaxed) < self.inner.reserve
    }

    /// Refuse new data while free space is below the reserve.
    pub(crate) fn check(&self) -> Result<(), BrokerError> {
        if !self.low() {
            return Ok(());
        }
        let free = self.inner.free.load(Ordering::Relaxed);
        Err(BrokerError::NoSpace(format!(
            "the disk holding the data directory is full: {} MiB free, below the reserve of {} MiB \
             (--min-free-disk-mib); free space or grow the disk, and publishing resumes",
            free >> 20,
            self.inner.reserve >> 20
        )))
    }

    pub(crate) fn snapshot(&self) -> DiskSnapshot {
        DiskSnapshot {
            free_bytes: self.inner.free.load(Ordering::Relaxed),
            reserve_bytes: self.inner.reserve,
        }
    }
}

fn sample(space: Weak<Inner>) {
    let mut was_low = false;
    loop {
        std::thread::sleep(SAMPLE_EVERY);
        let Some(inner) = space.upgrade() else {
            return;
        };
        match available(&inner.dir) {
            Ok(free) => {
                inner.free.store(free, Ordering::Relaxed);
                let low = free < inner.reserve;
                if low != was_low {
                    if low {
                        tracing::error!(
                            free_mib = free >> 20,
                            reserve_mib = inner.reserve >> 20,
                            "disk space below the reserve: refusing new data until space is freed"
                        );
                    } else {
                        tracing::info!(
                            free_mib = free >> 20,
                            "disk space above the reserve again: taking new data"
                        );
                    }
                    was_low = low;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read free disk space"),
        }
    }
}

/// Bytes an unprivileged writer could still use on `dir`'s filesystem.
fn available(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stats` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_above_the_free_space_refuses_new_data() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        assert!(free > 0);
        let roomy = Space::watch(dir.path(), 1).unwrap();
        assert!(!roomy.low());
        roomy.check().unwrap();
        let full = Space::watch(dir.path(), free.saturating_mul(2)).unwrap();
        assert!(full.low());
        let refused = full.check().unwrap_err();
        assert!(
            matches!(refused, BrokerError::NoSpace(ref m) if m.contains("--min-free-disk-mib"))
        );
        assert!(!Space::unwatched().low());
    }
}
