//! Plugin uploads compiled in a process of their own: the host starts its
//! own binary (`switchyard __compile`), writes the component to its stdin
//! and reads machine code from its stdout. The process holds itself to a CPU
//! time limit; the host kills it when its resident memory passes the memory
//! limit (checked every [`MEMORY_CHECK`]) and at the compile timeout, so a
//! compile bomb costs at most those limits and never a thread of the host
//! that cannot be stopped.
//!
//! Exit status: 0 with the machine code on stdout; [`EXIT_REFUSED`] with the
//! reason on stderr when the bytes are not a plugin; anything else (or a
//! signal: `SIGXCPU`, `SIGKILL`) means a limit was hit or the compiler died.

use super::BrokerError;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The hidden command the host starts for a compile.
pub const COMMAND: &str = "__compile";
/// Exit status of a compile whose input is not a plugin.
pub const EXIT_REFUSED: i32 = 3;
/// Most of the compiler's stderr kept for the error message.
const MAX_REASON: usize = 16 << 10;
/// How often the host looks at a compile's resident memory.
const MEMORY_CHECK: Duration = Duration::from_millis(20);

/// How the host starts compile processes.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// This host's own binary.
    pub exe: PathBuf,
    /// Resident memory a compile may use, in MiB.
    pub memory_mib: u64,
}

impl Compiler {
    /// Machine code of `wasm`, compiled in a child process within `timeout`
    /// (wall clock) and `2 × timeout` of CPU time (compiles use every core).
    pub(crate) async fn compile(
        &self,
        wasm: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BrokerError> {
        let cpu_secs = timeout.as_secs().max(1) * 2;
        let mut child = tokio::process::Command::new(&self.exe)
            .arg(COMMAND)
            .args(["--cpu-secs", &cpu_secs.to_string()])
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                BrokerError::Unavailable(format!("cannot start a compile process: {e}"))
            })?;
        let pid = child.id();
        let (mut stdin, mut stdout, stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let run = async {
            let write = async {
                // A refused input may end the process before it reads all.
                let _ = stdin.write_all(wasm).await;
                drop(stdin);
            };
            let mut code = Vec::new();
            // All of stderr is read (a process blocked writing it would
            // never exit); the reason keeps its start.
            let mut errors = Vec::new();
            let mut stderr = stderr;
            let (_, read, _) = tokio::join!(
                write,
                stdout.read_to_end(&mut code),
                stderr.read_to_end(&mut errors)
            );
            errors.truncate(MAX_REASON);
            let reason = String::from_utf8_lossy(&errors).into_owned();
            let status = child.wait().await;
            (read.map(|_| code), reason, status)
        };
        let limit = self.memory_mib << 20;
        let mut over_memory = false;
        let watchdog = async {
            loop {
                tokio::time::sleep(MEMORY_CHECK).await;
                if let Some(pid) = pid.filter(|pid| resident_bytes(*pid) > limit) {
                    over_memory = true;
                    // SAFETY: kill(2) on the child this host started and has
                    // not reaped yet (`run` reaps it after this).
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    return std::future::pending::<()>().await;
                }
            }
        };
        let guarded = async {
            tokio::select! {
                out = run => out,
                () = watchdog => unreachable!("the watchdog never ends"),
            }
        };
        let finished = tokio::time::timeout(timeout, guarded).await;
        if over_memory {
            return Err(BrokerError::Unavailable(format!(
                "compiling the plugin took more than its {} MiB of memory",
                self.memory_mib
            )));
        }
        let Ok((code, reason, status)) = finished else {
            // Dropping the child (kill_on_drop) kills it.
            return Err(BrokerError::Unavailable(format!(
                "compiling the plugin took longer than {} s",
                timeout.as_secs()
            )));
        };
        let status = status
            .map_err(|e| BrokerError::Unavailable(format!("the compile process failed: {e}")))?;
        match status.code() {
            Some(0) => code.map_err(|e| {
                BrokerError::Unavailable(format!("cannot read the compiled plugin: {e}"))
            }),
            Some(EXIT_REFUSED) => Err(BrokerError::PluginRejected(reason.trim().to_string())),
            _ => Err(BrokerError::Unavailable(format!(
                "compiling the plugin failed or took more than its {cpu_secs} s of CPU \
                 ({status}): {}",
                first_lines(&reason)
            ))),
        }
    }
}

/// A process's resident memory, from `/proc` (0 if it cannot be read).
fn resident_bytes(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

/// The start of a compiler's error output: its first lines, at most 1 KiB.
fn first_lines(text: &str) -> String {
    let text: String = text.trim().lines().take(4).collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(1024) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The compile process itself: limit its CPU time, read a component on
/// stdin, write its machine code on stdout. Returns the exit status.
pub fn child(cpu_secs: u64) -> i32 {
    if let Err(e) = limit(libc::RLIMIT_CPU, cpu_secs) {
        eprintln!("cannot limit the compile process: {e}");
        return 1;
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("cannot read the component: {e}");
        return 1;
    }
    match crate::runtime::compile_to_machine_code(&wasm) {
        Ok(code) => match std::io::stdout().write_all(&code) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cannot write the machine code: {e}");
                1
            }
        },
        Err(refused) => {
            eprintln!("{refused}");
            EXIT_REFUSED
        }
    }
}

fn limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct passed by reference and nothing else.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
