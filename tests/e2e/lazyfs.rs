//! A LazyFS-style FUSE passthrough filesystem for crash tests.
//!
//! Everything below the mount point is forwarded to a backing directory, with
//! one exception: file data written through the mount is *not* written to the
//! backing file. It is kept in memory, per inode, until the file is made
//! durable with `fsync`/`fdatasync` (or truncated, which also counts as a sync
//! point). Reads, `stat` and `mmap` see the written data overlaid on the
//! backing file. [`LazyFs::drop_unsynced`] discards all data that was never
//! made durable, as a power loss would.
//!
//! Metadata operations (create, mkdir, rename, unlink, chmod, fallocate, ...)
//! go straight to the backing directory and are durable at once; directory
//! fsync is not modelled. Closing a file does not make its data durable.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackgroundSession, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// Attribute and entry cache lifetime: zero, so the kernel always asks.
const TTL: Duration = Duration::ZERO;

/// A FUSE passthrough mounted at `mountpoint` over the directory `backing`.
pub struct LazyFs {
    inner: Arc<Inner>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

impl LazyFs {
    /// Mount; panics with a clear message if mounting fails.
    pub fn mount(mountpoint: &Path, backing: &Path) -> LazyFs {
        let backing = backing.canonicalize().unwrap_or_else(|e| {
            panic!(
                "lazyfs: backing directory {} unusable: {e}",
                backing.display()
            )
        });
        let mountpoint = mountpoint.canonicalize().unwrap_or_else(|e| {
            panic!("lazyfs: mount point {} unusable: {e}", mountpoint.display())
        });
        let root_ino = fs::metadata(&backing)
            .unwrap_or_else(|e| panic!("lazyfs: cannot stat {}: {e}", backing.display()))
            .ino();
        let mut paths = HashMap::new();
        paths.insert(INodeNo::ROOT.0, backing.clone());
        let inner = Arc::new(Inner {
            backing,
            root_ino,
            state: Mutex::new(State {
                paths,
                pending: HashMap::new(),
                files: HashMap::new(),
                dirs: HashMap::new(),
                next_fh: 1,
            }),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("lazyfs".to_string())];
        let session = fuser::spawn_mount(LazyFsImpl(inner.clone()), &mountpoint, &config)
            .unwrap_or_else(|e| {
                panic!(
                    "lazyfs: mounting {} over {} failed: {e}",
                    mountpoint.display(),
                    inner.backing.display()
                )
            });
        LazyFs {
            inner,
            mountpoint,
            session: Some(session),
        }
    }

    /// Discard every write not yet made durable by fsync/fdatasync, as a power
    /// loss would. Returns the number of bytes discarded. Call it only while no
    /// process has files open under the mount (the test kills the process first).
    pub fn drop_unsynced(&self) -> u64 {
        let mut st = self.inner.lock();
        let dropped = st.pending.values().map(|p| p.bytes).sum();
        st.pending.clear();
        dropped
    }
}

impl LazyFs {
    /// From now on every fsync/fdatasync fails with EIO (a failing disk);
    /// nothing becomes durable.
    pub fn fail_syncs(&self) {
        self.inner
            .failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        // Lazy unmount: succeeds even if something still uses the mount. Once the
        // last user is gone the kernel ends the connection and the session
        // thread returns.
        if let Ok(path) = CString::new(self.mountpoint.as_os_str().as_bytes()) {
            // SAFETY: `path` is a valid NUL-terminated string.
            unsafe {
                libc::umount2(path.as_ptr(), libc::MNT_DETACH);
            }
        }
        if let Some(session) = self.session.take() {
            // Joins the session thread when the connection is gone; if the mount
            // is still in use the thread is left to finish on its own.
            let _ = session.umount_and_join();
        }
    }
}

/// Writes to one inode that are not yet durable, in the order they were made.
#[derive(Default)]
struct Pending {
    writes: Vec<(u64, Vec<u8>)>,
    /// Largest end offset over all writes.
    end: u64,
    /// Total bytes over all writes.
    bytes: u64,
}

impl Pending {
    fn push(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        match self.writes.last_mut() {
            // Sequential appends are merged into one entry; the result is the same.
            Some((off, buf)) if *off + buf.len() as u64 == offset => buf.extend_from_slice(data),
            _ => self.writes.push((offset, data.to_vec())),
        }
        self.end = self.end.max(end);
        self.bytes += data.len() as u64;
    }

    /// Copies the pending bytes that fall into `[offset, offset + buf.len())` into `buf`.
    fn overlay(&self, offset: u64, buf: &mut [u8]) {
        let lo = offset;
        let hi = offset + buf.len() as u64;
        for (off, data) in &self.writes {
            let start = lo.max(*off);
            let end = hi.min(*off + data.len() as u64);
            if start < end {
                let dst = (start - lo) as usize..(end - lo) as usize;
                let src = (start - off) as usize..(end - off) as usize;
                buf[dst].copy_from_slice(&data[src]);
            }
        }
    }
}

struct DirEnt {
    ino: u64,
    kind: FileType,
    name: OsString,
}

struct State {
    /// FUSE inode number -> backing path.
    paths: HashMap<u64, PathBuf>,
    /// FUSE inode number -> writes not yet durable.
    pending: HashMap<u64, Pending>,
    /// Open file handle -> (FUSE inode number, backing file).
    files: HashMap<u64, (u64, File)>,
    /// Open directory handle -> listing snapshot.
    dirs: HashMap<u64, Vec<DirEnt>>,
    next_fh: u64,
}

impl State {
    fn alloc_fh(&mut self) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        fh
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    /// Rewrites every known path under `from` to lie under `to` (and, when
    /// `swap` is set, every path under `to` to lie under `from`).
    fn move_paths(&mut self, from: &Path, to: &Path, swap: bool) {
        for p in self.paths.values_mut() {
            let moved = if let Ok(rest) = p.strip_prefix(from) {
                Some(join_rest(to, rest))
            } else if swap {
                p.strip_prefix(to).ok().map(|rest| join_rest(from, rest))
            } else {
                None
            };
            if let Some(m) = moved {
                *p = m;
            }
        }
    }

    /// Forgets every path at or under `path`.
    fn forget_paths(&mut self, path: &Path) {
        self.paths
            .retain(|ino, p| *ino == INodeNo::ROOT.0 || !p.starts_with(path));
    }

    /// Opens the backing file of `ino` for writing: the handle `fh` if it is
    /// open, else the file at the inode's current path.
    fn writable(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileRef<'_>, Errno> {
        if let Some((_, f)) = fh.and_then(|fh| self.files.get(&fh.0)) {
            return Ok(FileRef::Borrowed(f));
        }
        if let Some((_, f)) = self.files.values().find(|(i, _)| *i == ino.0) {
            return Ok(FileRef::Borrowed(f));
        }
        let path = self.path(ino)?;
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(FileRef::Owned(f))
    }
}

enum FileRef<'a> {
    Borrowed(&'a File),
    Owned(File),
}

impl FileRef<'_> {
    fn get(&self) -> &File {
        match self {
            FileRef::Borrowed(f) => f,
            FileRef::Owned(f) => f,
        }
    }
}

fn join_rest(base: &Path, rest: &Path) -> PathBuf {
    if rest.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rest)
    }
}

/// Writes `pending` into `file` in order.
fn apply(file: &File, pending: &Pending) -> io::Result<()> {
    for (off, data) in &pending.writes {
        file.write_all_at(data, *off)?;
    }
    Ok(())
}

fn cstr(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn last_errno() -> Errno {
    Errno::from(io::Error::last_os_error())
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    match t {
        None => {}
        Some(TimeOrNow::Now) => ts.tv_nsec = libc::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => {
                ts.tv_sec = d.as_secs() as libc::time_t;
                ts.tv_nsec = d.subsec_nanos() as _;
            }
            Err(e) => {
                let d = e.duration();
                let mut secs = -(d.as_secs() as i64);
                let mut nanos = d.subsec_nanos() as i64;
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                ts.tv_sec = secs as libc::time_t;
                ts.tv_nsec = nanos as _;
            }
        },
    }
    ts
}

struct Inner {
    backing: PathBuf,
    /// Inode number of `backing`, reported to the kernel as the FUSE root.
    root_ino: u64,
    state: Mutex<State>,
    /// Every fsync/fdatasync fails with EIO, as on a failing disk.
    failing: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fuse_ino(&self, st_ino: u64) -> u64 {
        if st_ino == self.root_ino {
            INodeNo::ROOT.0
        } else {
            st_ino
        }
    }

    fn attr(&self, st: &State, meta: &fs::Metadata) -> FileAttr {
        let ino = self.fuse_ino(meta.ino());
        let pending_end = match st.pending.get(&ino) {
            Some(p) if meta.is_file() => p.end,
            _ => 0,
        };
        let size = meta.size().max(pending_end);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: meta.blocks(),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind_of(meta.mode()),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: meta.blksize() as u32,
            flags: 0,
        }
    }

    /// Stats `path`, records it as the path of its inode and returns the attributes.
    fn lookup_path(&self, st: &mut State, path: PathBuf) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(&path)?;
        let ino = self.fuse_ino(meta.ino());
        st.paths.insert(ino, path);
        Ok(self.attr(st, &meta))
    }

    /// Attributes of `ino`: by path, or by an open handle if the path no
    /// longer names this inode (e.g. an unlinked but open file).
    fn getattr(&self, st: &State, ino: INodeNo) -> Result<FileAttr, Errno> {
        let by_path = st
            .paths
            .get(&ino.0)
            .and_then(|path| fs::symlink_metadata(path).ok())
            .filter(|meta| self.fuse_ino(meta.ino()) == ino.0);
        if let Some(meta) = by_path {
            return Ok(self.attr(st, &meta));
        }
        match st.files.values().find(|(i, _)| *i == ino.0) {
            Some((_, f)) => Ok(self.attr(st, &f.metadata()?)),
            None => Err(Errno::ENOENT),
        }
    }

    /// Applies the pending writes of `ino` to the backing file, syncs it and
    /// forgets them.
    fn sync(
        &self,
        st: &mut State,
        ino: INodeNo,
        fh: Option<FileHandle>,
        datasync: bool,
    ) -> Result<(), Errno> {
        let file = st.writable(ino, fh)?;
        if let Some(p) = st.pending.get(&ino.0) {
            apply(file.get(), p)?;
        }
        if datasync {
            file.get().sync_data()?;
        } else {
            file.get().sync_all()?;
        }
        drop(file);
        st.pending.remove(&ino.0);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        st: &mut State,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        if let Some(size) = size {
            // Truncation is a sync point: pending writes land first.
            let file = st.writable(ino, fh)?;
            if let Some(p) = st.pending.get(&ino.0) {
                apply(file.get(), p)?;
            }
            file.get().set_len(size)?;
            drop(file);
            st.pending.remove(&ino.0);
        }
        if mode.is_none() && uid.is_none() && gid.is_none() && atime.is_none() && mtime.is_none() {
            return self.getattr(st, ino);
        }
        let c = cstr(&st.path(ino)?)?;
        if let Some(mode) = mode {
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::chmod(c.as_ptr(), (mode & 0o7777) as libc::mode_t) } != 0 {
                return Err(last_errno());
            }
        }
        if uid.is_some() || gid.is_some() {
            let u = uid.unwrap_or(u32::MAX) as libc::uid_t;
            let g = gid.unwrap_or(u32::MAX) as libc::gid_t;
            // SAFETY: `c` is a valid NUL-terminated path; -1 leaves an id unchanged.
            if unsafe { libc::lchown(c.as_ptr(), u, g) } != 0 {
                return Err(last_errno());
            }
        }
        if atime.is_some() || mtime.is_some() {
            let times = [timespec(atime), timespec(mtime)];
            // SAFETY: `c` is a valid path and `times` holds two timespecs.
            let rc = unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if rc != 0 {
                return Err(last_errno());
            }
        }
        self.getattr(st, ino)
    }

    fn create(
        &self,
        st: &mut State,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let path = st.child(parent, name)?;
        let mode = mode & 0o7777;
        let mut fresh = true;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                fresh = false;
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .truncate(flags & libc::O_TRUNC != 0)
                    .open(&path)?
            }
            Err(e) => return Err(e.into()),
        };
        let ino = self.fuse_ino(file.metadata()?.ino());
        if fresh || flags & libc::O_TRUNC != 0 {
            st.pending.remove(&ino);
        }
        let attr = self.lookup_path(st, path)?;
        let fh = st.alloc_fh();
        st.files.insert(fh, (ino, file));
        Ok((attr, fh))
    }

    fn open(&self, st: &mut State, ino: INodeNo, flags: i32) -> Result<u64, Errno> {
        let path = st.path(ino)?;
        // Open read-write where possible, whatever the caller asked for: fsync,
        // truncation and fallocate through any handle must be able to write
        // pending data to the backing file.
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(_) => File::open(&path)?,
        };
        if flags & libc::O_TRUNC != 0 {
            file.set_len(0)?;
            st.pending.remove(&ino.0);
        }
        let fh = st.alloc_fh();
        st.files.insert(fh, (ino.0, file));
        Ok(fh)
    }

    fn read(
        &self,
        st: &State,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let owned;
        let file = match st.files.get(&fh.0) {
            Some((_, f)) => f,
            None => {
                owned = File::open(st.path(ino)?)?;
                &owned
            }
        };
        let pending = st.pending.get(&ino.0);
        let backing_len = file.metadata()?.len();
        let logical = backing_len.max(pending.map_or(0, |p| p.end));
        if offset >= logical {
            return Ok(Vec::new());
        }
        let n = (logical - offset).min(u64::from(size)) as usize;
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n && offset + (done as u64) < backing_len {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(p) = pending {
            p.overlay(offset, &mut buf);
        }
        Ok(buf)
    }

    fn unlink(&self, st: &mut State, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let path = st.child(parent, name)?;
        let meta = fs::symlink_metadata(&path)?;
        fs::remove_file(&path)?;
        let ino = self.fuse_ino(meta.ino());
        if st.paths.get(&ino) == Some(&path) {
            st.paths.remove(&ino);
        }
        if meta.nlink() <= 1 {
            st.pending.remove(&ino);
        }
        Ok(())
    }

    fn rmdir(&self, st: &mut State, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let path = st.child(parent, name)?;
        fs::remove_dir(&path)?;
        st.forget_paths(&path);
        Ok(())
    }

    fn rename(
        &self,
        st: &mut State,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        let from = st.child(parent, name)?;
        let to = st.child(newparent, newname)?;
        let src = fs::symlink_metadata(&from)?;
        let dst = fs::symlink_metadata(&to).ok();
        if flags == 0 {
            fs::rename(&from, &to)?;
        } else {
            let (a, b) = (cstr(&from)?, cstr(&to)?);
            // SAFETY: both paths are valid NUL-terminated strings.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    flags,
                )
            };
            if rc != 0 {
                return Err(last_errno());
            }
        }
        if flags & libc::RENAME_EXCHANGE != 0 {
            st.move_paths(&from, &to, true);
            return Ok(());
        }
        // An overwritten target loses its name (and, with no other link, its data).
        if let Some(dst) = dst.filter(|d| d.ino() != src.ino()) {
            st.forget_paths(&to);
            if !dst.is_dir() && dst.nlink() <= 1 {
                st.pending.remove(&self.fuse_ino(dst.ino()));
            }
        }
        st.move_paths(&from, &to, false);
        Ok(())
    }

    fn list_dir(&self, st: &State, ino: INodeNo) -> Result<Vec<DirEnt>, Errno> {
        let path = st.path(ino)?;
        let parent_ino = match path.parent() {
            Some(p) if ino != INodeNo::ROOT => fs::metadata(p).map_or(ino.0, |m| m.ino()),
            _ => ino.0,
        };
        let mut out = vec![
            DirEnt {
                ino: ino.0,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEnt {
                ino: self.fuse_ino(parent_ino),
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for entry in fs::read_dir(&path)? {
            let entry = entry?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            out.push(DirEnt {
                ino: self.fuse_ino(entry.ino()),
                kind,
                name: entry.file_name(),
            });
        }
        Ok(out)
    }
}

/// The FUSE request handler; shares its state with the [`LazyFs`] handle.
struct LazyFsImpl(Arc<Inner>);

impl Filesystem for LazyFsImpl {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.0.lock();
        match st
            .child(parent, name)
            .and_then(|p| self.0.lookup_path(&mut st, p))
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.0.lock();
        match self.0.getattr(&st, ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.0.lock();
        match self
            .0
            .setattr(&mut st, ino, mode, uid, gid, size, atime, mtime, fh)
        {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.0.lock();
        let res = st.child(parent, name).and_then(|path| {
            fs::DirBuilder::new().mode(mode & 0o7777).create(&path)?;
            self.0.lookup_path(&mut st, path)
        });
        match res {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.0.lock();
        match self.0.unlink(&mut st, parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.0.lock();
        match self.0.rmdir(&mut st, parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.0.lock();
        match self
            .0
            .rename(&mut st, parent, name, newparent, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.0.lock();
        match self.0.open(&mut st, ino, flags.0) {
            // No FOPEN_KEEP_CACHE: the kernel drops cached pages on every open,
            // so nothing stale survives `drop_unsynced`.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.0.lock();
        match self.0.create(&mut st, parent, name, mode, flags) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.0.lock();
        match self.0.read(&st, ino, fh, offset, size) {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.0.lock();
        st.pending.entry(ino.0).or_default().push(offset, data);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Pending data stays: closing a file does not make it durable.
        self.0.lock().files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.0.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return reply.error(Errno::EIO);
        }
        let mut st = self.0.lock();
        match self.0.sync(&mut st, ino, Some(fh), datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.0.lock();
        match st.path(ino) {
            Ok(_) => {
                let fh = st.alloc_fh();
                st.dirs.insert(fh, Vec::new());
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.0.lock();
        if offset == 0 {
            // (Re)start of a listing: take a fresh snapshot.
            match self.0.list_dir(&st, ino) {
                Ok(list) => {
                    st.dirs.insert(fh.0, list);
                }
                Err(e) => return reply.error(e),
            }
        }
        if let Some(list) = st.dirs.get(&fh.0) {
            for (i, e) in list.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                    break;
                }
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.0.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let c = match cstr(&self.0.backing) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        // SAFETY: an all-zero statvfs is a valid value to be overwritten.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid path and `s` a valid out pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return reply.error(last_errno());
        }
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let path = match self.0.lock().path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let c = match cstr(&path) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), mask.bits()) } == 0 {
            reply.ok();
        } else {
            reply.error(last_errno());
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let st = self.0.lock();
        let file = match st.writable(ino, Some(fh)) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        // SAFETY: the descriptor is valid for the lifetime of `file`.
        let rc = unsafe {
            libc::fallocate(
                file.get().as_raw_fd(),
                mode,
                offset as libc::off_t,
                length as libc::off_t,
            )
        };
        if rc == 0 {
            reply.ok();
        } else {
            reply.error(last_errno());
        }
    }
}
