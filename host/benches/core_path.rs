//! The core-path benchmark: HTTP publish → durable write (synced WAL, group
//! commit) → delivery to a WebAssembly plugin → ack, measured against the real
//! `switchyard` binary on 127.0.0.1 with a fresh data directory per scenario.
//!
//! Run it with `./dev.sh bench` (which builds the plugins first); options go
//! after it, e.g. `./dev.sh bench --messages 50000 --seconds 5`, and `--help`
//! lists them. Every scenario is bounded in messages and time, and the server is
//! killed when the scenario ends, also on a panic.
//!
//! # Throughput (plugin `noop`, or `--plugin forwarder`, `python`, `javascript`)
//!
//! For each delivery guarantee (`--delivery`), each isolation mode (`message`:
//! a fresh instance per message; `worker`: one instance reused per worker) and
//! each subscription concurrency: a topic
//! with 4 partitions and one subscription (`forwarder` republishes every
//! message to a second topic, so exactly-once commits a publication with each
//! ack; so do the example plugins in Python and JavaScript), then N messages of exactly 256 bytes
//! with 64 keys, published in batches from a few client threads as fast as the
//! server answers. The request bodies are built before the clock starts.
//!
//! * `publish/s`: N ÷ the time from the first publish request to the last
//!   publish response. An answered publish is durable.
//! * `e2e/s`: N ÷ the time from the first publish request until the
//!   subscription's stats say `acked == N` (polled every 5 ms).
//! * `acked@pub`: how far delivery had got when publishing ended: below N means
//!   delivery is the slower stage.
//! * `server`, `bench`, `machine`: CPU used over the scenario, in cores, by the
//!   server process, this benchmark process and the whole machine (the header
//!   gives the machine's cores; `machine` well above `server + bench` means
//!   something else was running). The server's busiest threads follow the table.
//!
//! # Latency (plugin `stamp`)
//!
//! For each delivery guarantee and isolation mode: topics `lat` and
//! `lat.stamps` (4 partitions each) and a subscription of `lat` with the
//! `stamp` plugin, which republishes each message to `lat.stamps` with
//! its own wall-clock time appended. A paced client publishes single messages at
//! a fixed rate on an absolute schedule (message i is due at start + i ÷ rate,
//! so a slow request does not shift later ones), from several sender threads so
//! that one slow request does not hold up the next. Each payload carries its
//! send time. Afterwards `lat.stamps` is read back.
//!
//! * `publish`: the HTTP request time of one single-message publish, which
//!   includes the synced write it waits for.
//! * `publish→handle`: the plugin's clock reading minus the send time: the
//!   publish, the wait for the durable head, scheduling and instantiation (but
//!   not the plugin's own publish or the ack). Both clocks are this machine's
//!   wall clock.
//! * `late`: sends that left more than 1 ms after they were due. Many late
//!   sends mean the client could not keep the rate, and the percentiles then
//!   understate the waiting (coordinated omission).

mod common;
#[path = "common/otlp.rs"]
mod otlp;
#[path = "common/padding.rs"]
mod padding;

use padding::padded;

use common::{
    cpu_model, filesystem_of, key, machine_busy_ticks, payload, process_ticks, read_response,
    stat_ticks, unix_ns, PluginDir, KEYS, PAYLOAD_BYTES, USER_HZ,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};

use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Partitions of every topic the benchmark creates.
const PARTITIONS: u32 = 4;
/// Subscription concurrency of the latency scenarios: the design's default.
const LATENCY_CONCURRENCY: u32 = 16;
/// How often the subscription's stats are polled: fine enough for the e2e
/// figure, cheap enough not to load the server.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// Give up waiting for acks when the count has not moved for this long.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for acks in any scenario, however slowly they move.
const DRAIN_LIMIT: Duration = Duration::from_secs(1800);
/// Longest wait for the server to print its address.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Longest any one HTTP request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(120);
/// Publishes answered 503 (overloaded) are retried this often, 10 ms apart.
const BUSY_RETRIES: u32 = 500;
/// A paced send this far behind its schedule counts as late.
const LATE_AFTER: Duration = Duration::from_millis(1);
/// Time for the sender threads to start before the first send is due.
const PACING_LEAD: Duration = Duration::from_millis(100);
/// Messages per partition read (the API's maximum).
const READ_PAGE: u64 = 1000;
/// Server log lines kept to explain a failure.
const LOG_TAIL: usize = 50;

const USAGE: &str = "\
core_path: Switchyard's core-path benchmark (run it with ./dev.sh bench [OPTIONS])

  --messages N        messages per throughput scenario            [200000]
  --batch N           messages per publish request (throughput)   [1000]
  --clients N         concurrent publishing threads (throughput)  [4]
  --concurrency LIST  subscription concurrencies to try           [2,4,16]
  --isolation LIST    isolation modes to run                      [message,worker]
  --delivery LIST     delivery guarantees to run                  [at-least-once]
                      (at-most-once, at-least-once, exactly-once)
  --plugin NAME       throughput plugin: noop, forwarder, or the  [noop]
                      example plugin in python or javascript
  --rate N            latency scenario publish rate, msg/s        [2000]
  --seconds N         latency scenario duration                   [10]
  --senders N         latency scenario sender threads             [16]
  --only WHAT         `throughput`, `latency`, `curves`, `stalls`, `hostile` or `traces`
                      [throughput and latency]

`--only curves` measures cost curves instead (noop plugin, worker isolation):
against payload size (256 B to 1 MiB), subscriptions on one topic (fan-out
1, 10, 100) and idle topics (1, 100, 10,000: memory and idle CPU).

`--only stalls` measures single-publish latency (--seconds per phase, 200
msg/s, each with an id) on a quiet host, while 32 MiB plugins are uploaded
one after another, and while a subscription catches up a backlog of
--messages messages.

`--only hostile` measures the latency scenario (worker isolation) three
times: on a host of its own, and beside 5 subscriptions of endless loops and
5 of memory hogs (concurrency 10 each, 1 s timeout) on a host without a
long-call slot limit (--long-call-slots 0) and on one with the default.

`--only traces` measures the throughput scenario (first --isolation and
--concurrency) without trace contexts (--trace-context false), with trace
contexts only (no exporter) and with every span exported over OTLP/HTTP to
a receiver in this process, in turn, three rounds each: the server's CPU
per message shows what each costs.";

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let plugins = PluginDir::find(
        "core_path",
        "./dev.sh bench",
        &["noop", "forwarder", "stamp", "spin", "hog"],
    );
    print_header(&options);
    if options.throughput {
        run_throughput(&options, &plugins);
    }
    if options.latency {
        run_latency(&options, &plugins);
    }
    if options.curves {
        run_curves(&options, &plugins);
    }
    if options.stalls {
        run_stalls(&options, &plugins);
    }
    if options.hostile {
        run_hostile(&options, &plugins);
    }
    if options.traces {
        run_traces(&options, &plugins);
    }
}

// ---------------------------------------------------------------- options

struct Options {
    messages: u64,
    batch: u64,
    clients: usize,
    concurrency: Vec<u32>,
    isolation: Vec<&'static str>,
    delivery: Vec<&'static str>,
    plugin: &'static str,
    rate: u64,
    seconds: u64,
    senders: usize,
    throughput: bool,
    latency: bool,
    curves: bool,
    stalls: bool,
    hostile: bool,
    traces: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut o = Options {
            messages: 200_000,
            batch: 1000,
            clients: 4,
            concurrency: vec![2, 4, 16],
            isolation: vec!["message", "worker"],
            delivery: vec!["at-least-once"],
            plugin: "noop",
            rate: 2000,
            seconds: 10,
            senders: 16,
            throughput: true,
            latency: true,
            curves: false,
            stalls: false,
            hostile: false,
            traces: false,
        };
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or(format!("{flag} needs a value\n\n{USAGE}"))
            };
            match flag.as_str() {
                // `cargo bench` passes this to every bench target.
                "--bench" => {}
                "--messages" => o.messages = number(&flag, &value()?, 1..=100_000_000)?,
                "--batch" => o.batch = number(&flag, &value()?, 1..=10_000)?,
                "--clients" => o.clients = number(&flag, &value()?, 1..=64)? as usize,
                "--rate" => o.rate = number(&flag, &value()?, 1..=1_000_000)?,
                "--seconds" => o.seconds = number(&flag, &value()?, 1..=3600)?,
                "--senders" => o.senders = number(&flag, &value()?, 1..=256)? as usize,
                "--concurrency" => {
                    o.concurrency = value()?
                        .split(',')
                        .map(|v| number(&flag, v, 1..=256).map(|n| n as u32))
                        .collect::<Result<_, _>>()?;
                }
                "--isolation" => {
                    o.isolation = value()?
                        .split(',')
                        .map(|v| match v.trim() {
                            "message" => Ok("message"),
                            "worker" => Ok("worker"),
                            other => Err(format!("--isolation: unknown mode {other:?}")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--delivery" => {
                    o.delivery = value()?
                        .split(',')
                        .map(|v| match v.trim() {
                            "at-most-once" => Ok("at-most-once"),
                            "at-least-once" => Ok("at-least-once"),
                            "exactly-once" => Ok("exactly-once"),
                            other => Err(format!("--delivery: unknown guarantee {other:?}")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--plugin" => {
                    o.plugin = match value()?.as_str() {
                        "noop" => "noop",
                        "forwarder" => "forwarder",
                        "python" => "example_python",
                        "javascript" => "example_js",
                        other => return Err(format!("--plugin: unknown {other:?}\n\n{USAGE}")),
                    }
                }
                "--only" => match value()?.as_str() {
                    "throughput" => o.latency = false,
                    "latency" => o.throughput = false,
                    "curves" => (o.throughput, o.latency, o.curves) = (false, false, true),
                    "stalls" => (o.throughput, o.latency, o.stalls) = (false, false, true),
                    "hostile" => (o.throughput, o.latency, o.hostile) = (false, false, true),
                    "traces" => (o.throughput, o.latency, o.traces) = (false, false, true),
                    other => return Err(format!("--only: unknown {other:?}\n\n{USAGE}")),
                },
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        Ok(o)
    }
}

fn number(flag: &str, text: &str, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag}: expected a number from {} to {}, got {text:?}",
            range.start(),
            range.end()
        )),
    }
}

// ---------------------------------------------------------------- plugins

// ---------------------------------------------------------------- server

/// A running `switchyard serve` on a fresh data directory; killed on drop.
struct Server {
    child: Child,
    client: Client,
    log: Arc<Mutex<ServerLog>>,
    /// Declared last so the directory outlives the process.
    _data: tempfile::TempDir,
}

/// What the server wrote to stderr (it logs at `warn`).
#[derive(Default)]
struct ServerLog {
    tail: VecDeque<String>,
    warnings: u64,
    errors: u64,
}

impl Server {
    fn start() -> Server {
        Self::start_with(&[])
    }

    /// Start with these `serve` arguments besides the usual ones.
    fn start_with(args: &[String]) -> Server {
        let data = tempfile::tempdir().expect("temporary data dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--data-dir",
            ])
            .arg(data.path())
            .args(args)
            .env_remove("SWITCHYARD_TOKEN")
            .env_remove("SWITCHYARD_PUBLISH_TOKEN")
            .env_remove("SWITCHYARD_READ_TOKEN")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting switchyard");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let address = follow_log(stderr, log.clone());
        // The guard exists before the wait, so a failed start still kills the child.
        let mut server = Server {
            child,
            client: Client::new(String::new()),
            log,
            _data: data,
        };
        match address.recv_timeout(START_LIMIT) {
            Ok(addr) => server.client = Client::new(format!("http://{addr}")),
            Err(_) => panic!("switchyard did not start:\n{}", server.log_tail()),
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_counts(&self) -> (u64, u64) {
        let log = self.log.lock().expect("log lock");
        (log.warnings, log.errors)
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().expect("log lock");
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collect the server's stderr on a thread; the receiver gets the address from
/// the `listening on http://ADDR` line.
fn follow_log(stderr: ChildStderr, log: Arc<Mutex<ServerLog>>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.split("listening on http://").nth(1) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
            let mut log = log.lock().expect("log lock");
            log.warnings += u64::from(line.contains(" WARN "));
            log.errors += u64::from(line.contains(" ERROR "));
            log.tail.push_back(line);
            if log.tail.len() > LOG_TAIL {
                log.tail.pop_front();
            }
        }
    });
    rx
}

// ---------------------------------------------------------------- HTTP

/// Talks JSON to one server over keep-alive connections; shared by threads.
#[derive(Clone)]
struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(base: String) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_LIMIT))
            // One kept-alive connection per sender thread, not ureq's default 3.
            .max_idle_connections(256)
            .max_idle_connections_per_host(256)
            .build()
            .into();
        Client { base, agent }
    }

    /// (status, body) of a PUT or POST.
    fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        let response = request.header("Content-Type", content_type).send(body);
        read_response(method, path, response)
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base);
        let (status, text) = read_response("GET", path, self.agent.get(&url).call());
        json_ok("GET", path, status, &text)
    }

    fn put_json(&self, path: &str, body: Value) -> Value {
        let (status, text) =
            self.send("PUT", path, "application/json", body.to_string().as_bytes());
        json_ok("PUT", path, status, &text)
    }

    fn create_topic(&self, name: &str) {
        self.put_json(
            &format!("/v1/topics/{name}"),
            json!({ "partitions": PARTITIONS }),
        );
    }

    fn deploy(&self, name: &str, wasm: &[u8]) {
        let path = format!("/v1/plugins/{name}");
        let (status, text) = self.send("PUT", &path, "application/wasm", wasm);
        json_ok("PUT", &path, status, &text);
    }

    fn subscribe(&self, name: &str, spec: Value) {
        self.put_json(&format!("/v1/subscriptions/{name}"), spec);
    }

    fn acked(&self, subscription: &str) -> u64 {
        let info = self.get(&format!("/v1/subscriptions/{subscription}"));
        info["stats"]["acked"]
            .as_u64()
            .expect("stats.acked is a number")
    }

    /// Publish one JSON body, retrying while the server answers 503
    /// (overloaded). Returns how many 503s it got.
    fn publish(&self, topic: &str, body: &[u8]) -> u64 {
        let path = format!("/v1/topics/{topic}/messages");
        for busy in 0..BUSY_RETRIES {
            match self.send("POST", &path, "application/json", body) {
                (200..=299, _) => return u64::from(busy),
                (503, _) => thread::sleep(Duration::from_millis(10)),
                (status, text) => panic!("POST {path} -> {status}: {text}"),
            }
        }
        panic!("POST {path}: still overloaded after {BUSY_RETRIES} tries");
    }

    /// Every message of one partition, page by page.
    fn read_partition(&self, topic: &str, partition: u32, expected: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 0;
        // Bounded: one page more than the expected messages can fill.
        for _ in 0..=expected / READ_PAGE + 1 {
            let page = self.get(&format!(
                "/v1/topics/{topic}/partitions/{partition}/messages?from={from}&limit={READ_PAGE}"
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

fn json_ok(method: &str, path: &str, status: u16, text: &str) -> Value {
    assert!(
        (200..300).contains(&status),
        "{method} {path} -> {status}: {text}"
    );
    serde_json::from_str(text).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------- messages

// ---------------------------------------------------------------- CPU use

/// Cumulative CPU ticks of the server (in total and per thread name), of this
/// process and of the whole machine, at one instant.
struct CpuSample {
    at: Instant,
    server: u64,
    threads: BTreeMap<String, u64>,
    bench: u64,
    machine: u64,
}

/// CPU used between two samples, in cores.
struct CpuUse {
    server: f64,
    bench: f64,
    machine: f64,
    /// Thread names (digits dropped) with their cores, busiest first.
    threads: Vec<(String, f64)>,
}

impl CpuSample {
    fn take(pid: u32) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            server: process_ticks(&format!("/proc/{pid}/stat")),
            threads: thread_ticks(pid),
            bench: process_ticks("/proc/self/stat"),
            machine: machine_busy_ticks(),
        }
    }

    fn since(&self, before: &CpuSample) -> CpuUse {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let cores = |after: u64, before: u64| after.saturating_sub(before) as f64 / USER_HZ / secs;
        let mut threads: Vec<(String, f64)> = self
            .threads
            .iter()
            .map(|(name, &t)| {
                (
                    name.clone(),
                    cores(t, *before.threads.get(name).unwrap_or(&0)),
                )
            })
            .filter(|(_, c)| *c >= 0.01)
            .collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        CpuUse {
            server: cores(self.server, before.server),
            bench: cores(self.bench, before.bench),
            machine: cores(self.machine, before.machine),
            threads,
        }
    }
}

/// Live threads of `pid`, grouped by name without digits (`sub-tp-3` → `sub-tp-`).
fn thread_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        if let Some((name, ticks)) = stat_ticks(&task.path().join("stat")) {
            let group: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
            *groups.entry(group).or_insert(0) += ticks;
        }
    }
    groups
}

impl CpuUse {
    fn busiest_threads(&self, n: usize) -> String {
        let names: Vec<String> = self
            .threads
            .iter()
            .take(n)
            .map(|(name, c)| format!("{name} {c:.2}"))
            .collect();
        names.join(", ")
    }
}

// ---------------------------------------------------------------- waiting

/// Poll the subscription until it has acked `target` messages; returns the
/// count last seen and, if it got there, when. Gives up when the count stalls
/// for [`STALL_LIMIT`] or after [`DRAIN_LIMIT`].
fn wait_acked(client: &Client, subscription: &str, target: u64) -> (u64, Option<Instant>) {
    let started = Instant::now();
    let (mut last, mut moved) = (0, Instant::now());
    while started.elapsed() < DRAIN_LIMIT && moved.elapsed() < STALL_LIMIT {
        let acked = client.acked(subscription);
        if acked >= target {
            return (acked, Some(Instant::now()));
        }
        if acked != last {
            (last, moved) = (acked, Instant::now());
        }
        thread::sleep(POLL_EVERY);
    }
    (last, None)
}

// ---------------------------------------------------------------- throughput

const THROUGHPUT_TOPIC: &str = "bench";
const THROUGHPUT_SUB: &str = "tp";

struct ThroughputRun {
    delivery: &'static str,
    isolation: &'static str,
    concurrency: u32,
    publish: Duration,
    /// `None` if not every message was acked.
    total: Option<Duration>,
    acked_at_publish_end: u64,
    acked: u64,
    busy: u64,
    cpu: CpuUse,
    log: (u64, u64),
}

fn run_throughput(options: &Options, plugins: &PluginDir) {
    println!(
        "\n## Throughput: plugin {}, {} messages of {PAYLOAD_BYTES} B, {KEYS} keys, {PARTITIONS} partitions, \
         batches of {}, {} client threads",
        options.plugin, options.messages, options.batch, options.clients
    );
    println!(
        "\n{:<13} {:<9} {:>4} {:>10} {:>10} {:>9} {:>9} {:>10} {:>7} {:>6} {:>8}",
        "delivery",
        "isolation",
        "conc",
        "publish/s",
        "e2e/s",
        "publish",
        "total",
        "acked@pub",
        "server",
        "bench",
        "machine"
    );
    let mut runs = Vec::new();
    for &delivery in &options.delivery {
        for &isolation in &options.isolation {
            for &concurrency in &options.concurrency {
                let run = throughput_run(options, plugins, delivery, isolation, concurrency, &[]);
                print_throughput_row(options, &run);
                runs.push(run);
            }
        }
    }
    println!();
    for run in &runs {
        println!(
            "{} {} c{}: server threads (cores): {}",
            run.delivery,
            run.isolation,
            run.concurrency,
            run.cpu.busiest_threads(5)
        );
    }
    print_best(options, &runs);
}

fn throughput_run(
    options: &Options,
    plugins: &PluginDir,
    delivery: &'static str,
    isolation: &'static str,
    concurrency: u32,
    server_args: &[String],
) -> ThroughputRun {
    let server = Server::start_with(server_args);
    let client = &server.client;
    client.create_topic(THROUGHPUT_TOPIC);
    client.create_topic(&format!("{THROUGHPUT_TOPIC}.out"));
    client.deploy(options.plugin, &plugins.bytes(options.plugin));
    client.subscribe(
        THROUGHPUT_SUB,
        json!({ "topic": THROUGHPUT_TOPIC, "plugin": options.plugin, "delivery": delivery,
                "isolation": isolation, "concurrency": concurrency }),
    );
    let bodies = batch_bodies(options.messages, options.batch);
    let before = CpuSample::take(server.pid());
    let start = Instant::now();
    let busy = publish_all(client, &bodies, options.clients);
    let publish = start.elapsed();
    let acked_at_publish_end = client.acked(THROUGHPUT_SUB);
    let (acked, done) = wait_acked(client, THROUGHPUT_SUB, options.messages);
    let cpu = CpuSample::take(server.pid()).since(&before);
    if done.is_none() {
        eprintln!(
            "throughput {delivery} {isolation} c{concurrency}: STALLED at {acked} acked; server log:\n{}",
            server.log_tail()
        );
    }
    ThroughputRun {
        delivery,
        isolation,
        concurrency,
        publish,
        total: done.map(|at| at.duration_since(start)),
        acked_at_publish_end,
        acked,
        busy,
        cpu,
        log: server.log_counts(),
    }
}

/// The JSON bodies of all publish requests: `{"messages": [...]}`.
fn batch_bodies(messages: u64, batch: u64) -> Vec<Vec<u8>> {
    (0..messages)
        .step_by(batch as usize)
        .map(|first| {
            let batch: Vec<Value> = (first..(first + batch).min(messages))
                .map(|seq| json!({ "key": key(seq), "payload": payload(format!("{seq:010}:")) }))
                .collect();
            serde_json::to_vec(&json!({ "messages": batch })).expect("encodes")
        })
        .collect()
}

/// Publish every body from `clients` threads taking the next unsent one;
/// returns the number of 503 answers.
fn publish_all(client: &Client, bodies: &[Vec<u8>], clients: usize) -> u64 {
    let next = AtomicUsize::new(0);
    let busy = AtomicU64::new(0);
    thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    busy.fetch_add(client.publish(THROUGHPUT_TOPIC, body), Ordering::Relaxed);
                }
            });
        }
    });
    busy.into_inner()
}

fn per_second(messages: u64, time: Duration) -> f64 {
    messages as f64 / time.as_secs_f64()
}

fn print_throughput_row(options: &Options, run: &ThroughputRun) {
    let e2e = match run.total {
        Some(total) => format!("{:.0}", per_second(options.messages, total)),
        None => format!("STALL@{}", run.acked),
    };
    let total = run
        .total
        .map_or("-".to_string(), |t| format!("{:.2}s", t.as_secs_f64()));
    println!(
        "{:<13} {:<9} {:>4} {:>10.0} {:>10} {:>8.2}s {:>9} {:>10} {:>7.2} {:>6.2} {:>8.2}",
        run.delivery,
        run.isolation,
        run.concurrency,
        per_second(options.messages, run.publish),
        e2e,
        run.publish.as_secs_f64(),
        total,
        run.acked_at_publish_end,
        run.cpu.server,
        run.cpu.bench,
        run.cpu.machine,
    );
    if run.busy > 0 || run.log != (0, 0) {
        println!(
            "          ({} publishes answered 503; server logged {} warnings, {} errors)",
            run.busy, run.log.0, run.log.1
        );
    }
}

fn print_best(options: &Options, runs: &[ThroughputRun]) {
    for (&delivery, &isolation) in options
        .delivery
        .iter()
        .flat_map(|d| options.isolation.iter().map(move |i| (d, i)))
    {
        let best = runs
            .iter()
            .filter(|r| r.isolation == isolation && r.delivery == delivery)
            .filter_map(|r| {
                r.total
                    .map(|t| (r.concurrency, per_second(options.messages, t)))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((concurrency, rate)) = best {
            println!("best end-to-end, {delivery}, {isolation} isolation: concurrency {concurrency}, {rate:.0} msg/s");
        }
    }
}

// ---------------------------------------------------------------- latency

const LATENCY_TOPIC: &str = "lat";
const STAMPS_TOPIC: &str = "lat.stamps";
const LATENCY_SUB: &str = "lat-sub";

/// One paced publish.
struct Sent {
    /// Request time.
    took: Duration,
    /// How long after its due time it left.
    late: Duration,
    /// When the last byte of the answer arrived.
    done: Instant,
}

struct LatencyRun {
    /// `isolation/delivery`.
    mode: String,
    sent: u64,
    send_rate: f64,
    late: usize,
    max_late: Duration,
    publish: Option<Percentiles>,
    handle: Option<Percentiles>,
    stamps: usize,
    duplicates: usize,
    acked: u64,
    busy: u64,
    cpu: CpuUse,
    log: (u64, u64),
}

fn run_latency(options: &Options, plugins: &PluginDir) {
    let total = options.rate * options.seconds;
    println!(
        "\n## Latency: plugin stamp, {} msg/s for {} s ({total} single-message publishes of {PAYLOAD_BYTES} B), \
         {} sender threads, concurrency {LATENCY_CONCURRENCY}",
        options.rate, options.seconds, options.senders
    );
    println!(
        "\n{:<23} {:<15} {:>9} {:>9} {:>9} {:>9}",
        "isolation/delivery", "latency (ms)", "p50", "p90", "p99", "max"
    );
    let runs: Vec<LatencyRun> = options
        .delivery
        .iter()
        .flat_map(|d| options.isolation.iter().map(move |i| (*d, *i)))
        .map(|(delivery, isolation)| {
            let run = latency_run(options, plugins, delivery, isolation, &[], &|_| {});
            print_percentiles(&run.mode, "publish", &run.publish);
            print_percentiles(&run.mode, "publish→handle", &run.handle);
            run
        })
        .collect();
    println!();
    for run in &runs {
        print_latency_facts(run);
    }
}

fn latency_run(
    options: &Options,
    plugins: &PluginDir,
    delivery: &'static str,
    isolation: &'static str,
    server_args: &[String],
    beside: &dyn Fn(&Client),
) -> LatencyRun {
    let mode = format!("{isolation}/{delivery}");
    let total = options.rate * options.seconds;
    let server = Server::start_with(server_args);
    let client = &server.client;
    client.create_topic(LATENCY_TOPIC);
    client.create_topic(STAMPS_TOPIC);
    client.deploy("stamp", &plugins.bytes("stamp"));
    client.subscribe(
        LATENCY_SUB,
        json!({ "topic": LATENCY_TOPIC, "plugin": "stamp", "delivery": delivery,
                "isolation": isolation, "concurrency": LATENCY_CONCURRENCY }),
    );
    beside(client);
    let before = CpuSample::take(server.pid());
    let start = Instant::now() + PACING_LEAD;
    let (sent, busy) = paced_publish(client, total, options.rate, options.senders, start);
    let cpu = CpuSample::take(server.pid()).since(&before);
    let (acked, done) = wait_acked(client, LATENCY_SUB, total);
    if done.is_none() {
        eprintln!(
            "latency {mode}: STALLED at {acked} acked; server log:\n{}",
            server.log_tail()
        );
    }
    let stamps = read_stamps(client, total);
    let seqs: BTreeSet<u64> = stamps.iter().map(|s| s.seq).collect();
    let last_done = sent.iter().map(|s| s.done).max().unwrap_or(start);
    let late: Vec<Duration> = sent
        .iter()
        .map(|s| s.late)
        .filter(|l| *l > LATE_AFTER)
        .collect();
    LatencyRun {
        mode,
        sent: total,
        send_rate: per_second(total, last_done.saturating_duration_since(start)),
        late: late.len(),
        max_late: late.iter().copied().max().unwrap_or_default(),
        publish: Percentiles::of(sent.iter().map(|s| s.took.as_nanos() as u64).collect()),
        handle: Percentiles::of(
            stamps
                .iter()
                .map(|s| s.handle_ns.saturating_sub(s.send_ns))
                .collect(),
        ),
        stamps: stamps.len(),
        duplicates: stamps.len() - seqs.len(),
        acked,
        busy,
        cpu,
        log: server.log_counts(),
    }
}

/// Publish messages `0..total` at `rate`, message i due at `start + i / rate`,
/// spread round-robin over `senders` threads. Returns the sends and the
/// number of 503 answers.
fn paced_publish(
    client: &Client,
    total: u64,
    rate: u64,
    senders: usize,
    start: Instant,
) -> (Vec<Sent>, u64) {
    let busy = AtomicU64::new(0);
    let sent = thread::scope(|scope| {
        let threads: Vec<_> = (0..senders as u64)
            .map(|first| {
                let busy = &busy;
                scope.spawn(move || {
                    let mut sent = Vec::new();
                    for seq in (first..total).step_by(senders) {
                        let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                        let (one, b) = send_stamped(client, seq, due);
                        busy.fetch_add(b, Ordering::Relaxed);
                        sent.push(one);
                    }
                    sent
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("sender thread"))
            .collect()
    });
    (sent, busy.into_inner())
}

/// Publish message `seq` with its send time in the payload: `SEQ:SEND_NS:....`.
fn send_stamped(client: &Client, seq: u64, due: Instant) -> (Sent, u64) {
    let leaves = Instant::now();
    let body = json!({ "key": key(seq), "payload": payload(format!("{seq:010}:{}:", unix_ns())) });
    let busy = client.publish(LATENCY_TOPIC, body.to_string().as_bytes());
    let done = Instant::now();
    let sent = Sent {
        took: done - leaves,
        late: leaves.saturating_duration_since(due),
        done,
    };
    (sent, busy)
}

/// A message of `lat.stamps`: `SEQ:SEND_NS:....|HANDLE_NS`.
struct Stamp {
    seq: u64,
    send_ns: u64,
    handle_ns: u64,
}

impl Stamp {
    fn parse(payload: &str) -> Option<Stamp> {
        let (message, handle) = payload.rsplit_once('|')?;
        let mut fields = message.split(':');
        Some(Stamp {
            seq: fields.next()?.parse().ok()?,
            send_ns: fields.next()?.parse().ok()?,
            handle_ns: handle.parse().ok()?,
        })
    }
}

fn read_stamps(client: &Client, expected: u64) -> Vec<Stamp> {
    let mut stamps = Vec::new();
    for partition in 0..PARTITIONS {
        for message in client.read_partition(STAMPS_TOPIC, partition, expected) {
            let text = message["payload"].as_str().unwrap_or_default();
            match Stamp::parse(text) {
                Some(stamp) => stamps.push(stamp),
                None => eprintln!("latency: unreadable stamp {message}"),
            }
        }
    }
    stamps
}

fn print_latency_facts(run: &LatencyRun) {
    println!(
        "{}: sent {} at {:.0} msg/s ({} late by > {} ms, worst {:.1} ms; {} answered 503); \
         {} acked, {} stamps ({} duplicates); server {:.2} cores, bench {:.2}, machine {:.2}; \
         server logged {} warnings, {} errors",
        run.mode,
        run.sent,
        run.send_rate,
        run.late,
        LATE_AFTER.as_millis(),
        run.max_late.as_secs_f64() * 1e3,
        run.busy,
        run.acked,
        run.stamps,
        run.duplicates,
        run.cpu.server,
        run.cpu.bench,
        run.cpu.machine,
        run.log.0,
        run.log.1,
    );
    println!("  server threads (cores): {}", run.cpu.busiest_threads(5));
}

// ---------------------------------------------------------------- statistics

/// Nearest-rank percentiles of durations, in milliseconds.
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
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
            p90: rank(0.90),
            p99: rank(0.99),
            max: rank(1.0),
        })
    }
}

fn print_percentiles(mode: &str, what: &str, p: &Option<Percentiles>) {
    match p {
        Some(p) => println!(
            "{mode:<23} {what:<15} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            p.p50, p.p90, p.p99, p.max
        ),
        None => println!("{mode:<23} {what:<15} {:>9}", "no data"),
    }
}

// ---------------------------------------------------------------- header

fn print_header(options: &Options) {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let model = cpu_model().unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let tmp = std::env::temp_dir();
    println!("# Switchyard core-path benchmark");
    println!(
        "machine:  {cores} cores ({model}), load average {} at start",
        load.join(" ")
    );
    println!(
        "server:   {} serve --listen 127.0.0.1:0, fresh data dir per scenario under {} ({})",
        env!("CARGO_BIN_EXE_switchyard"),
        tmp.display(),
        filesystem_of(&tmp).unwrap_or_else(|| "unknown filesystem".into())
    );
    println!(
        "settings: --messages {} --batch {} --clients {} --concurrency {} --isolation {} \
         --delivery {} --plugin {} --rate {} --seconds {} --senders {}",
        options.messages,
        options.batch,
        options.clients,
        options
            .concurrency
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        options.isolation.join(","),
        options.delivery.join(","),
        options.plugin,
        options.rate,
        options.seconds,
        options.senders
    );
}

// ---------------------------------------------------------------- cost curves

/// Bytes published per payload-size point (at most `--messages` messages).
const CURVE_BYTES: u64 = 512 << 20;
/// Bytes per publish request in the curves.
const CURVE_BATCH_BYTES: u64 = 1 << 20;
/// Idle time over which the idle topics' CPU is measured.
const IDLE_FOR: Duration = Duration::from_secs(5);

fn run_curves(options: &Options, plugins: &PluginDir) {
    println!(
        "\n## Cost curves: plugin noop, worker isolation, concurrency 16, {PARTITIONS} partitions"
    );
    println!("\n### Payload size (publish in batches of up to 1 MiB, then one subscription drains the backlog)");
    println!(
        "{:>9} {:>9} {:>11} {:>11} {:>11} {:>11} {:>9}",
        "payload", "messages", "publish/s", "pub µs/msg", "deliver/s", "dlv µs/msg", "MB/s"
    );
    for size in [256u64, 4 << 10, 64 << 10, 1 << 20] {
        let messages = options.messages.min(CURVE_BYTES / size).max(100);
        let server = Server::start();
        let client = &server.client;
        client.create_topic(THROUGHPUT_TOPIC);
        client.deploy("noop", &plugins.bytes("noop"));
        let per_batch = (CURVE_BATCH_BYTES / size).clamp(1, options.batch);
        let bodies = sized_bodies(messages, per_batch, size as usize);
        let before = CpuSample::take(server.pid());
        publish_all(client, &bodies, options.clients);
        let published = CpuSample::take(server.pid());
        subscribe_noop(client, THROUGHPUT_SUB);
        let (acked, done) = wait_acked(client, THROUGHPUT_SUB, messages);
        let drained = CpuSample::take(server.pid());
        assert!(
            done.is_some(),
            "payload {size}: stalled at {acked} of {messages}"
        );
        let (publish, deliver) = (published.since(&before), drained.since(&published));
        let secs = |a: &CpuSample, b: &CpuSample| a.at.duration_since(b.at).as_secs_f64();
        let deliver_secs = secs(&drained, &published);
        println!(
            "{:>9} {:>9} {:>11.0} {:>11.1} {:>11.0} {:>11.1} {:>9.1}",
            human_bytes(size),
            messages,
            messages as f64 / secs(&published, &before),
            cpu_us_per(&publish, secs(&published, &before), messages),
            messages as f64 / deliver_secs,
            cpu_us_per(&deliver, deliver_secs, messages),
            (messages * size) as f64 / deliver_secs / 1e6,
        );
    }

    println!("\n### Fan-out: subscriptions on one topic, each delivering every message");
    println!(
        "{:>6} {:>9} {:>11} {:>12} {:>9}",
        "subs", "messages", "delivery/s", "µs/delivery", "server"
    );
    for subs in [1u64, 10, 100] {
        let messages = (options.messages / subs).clamp(1_000, 100_000);
        let server = Server::start();
        let client = &server.client;
        client.create_topic(THROUGHPUT_TOPIC);
        client.deploy("noop", &plugins.bytes("noop"));
        publish_all(
            client,
            &batch_bodies(messages, options.batch),
            options.clients,
        );
        let before = CpuSample::take(server.pid());
        for i in 0..subs {
            subscribe_noop(client, &format!("fan{i}"));
        }
        for i in 0..subs {
            let (acked, done) = wait_acked(client, &format!("fan{i}"), messages);
            assert!(done.is_some(), "fan-out {subs}: fan{i} stalled at {acked}");
        }
        let after = CpuSample::take(server.pid());
        let cpu = after.since(&before);
        let secs = after.at.duration_since(before.at).as_secs_f64();
        let deliveries = messages * subs;
        println!(
            "{:>6} {:>9} {:>11.0} {:>12.1} {:>9.2}",
            subs,
            messages,
            deliveries as f64 / secs,
            cpu_us_per(&cpu, secs, deliveries),
            cpu.server
        );
    }

    println!(
        "\n### Idle topics ({} partitions each, no messages)",
        PARTITIONS
    );
    println!(
        "{:>7} {:>10} {:>10} {:>12}",
        "topics", "create/s", "RSS MiB", "idle cores"
    );
    for topics in [1u64, 100, 10_000] {
        let server = Server::start();
        let client = &server.client;
        let started = Instant::now();
        for i in 0..topics {
            client.create_topic(&format!("idle{i}"));
        }
        let create = started.elapsed();
        let before = CpuSample::take(server.pid());
        thread::sleep(IDLE_FOR);
        let idle = CpuSample::take(server.pid()).since(&before);
        println!(
            "{:>7} {:>10.0} {:>10.1} {:>12.4}",
            topics,
            topics as f64 / create.as_secs_f64(),
            rss_mib(server.pid()),
            idle.server
        );
    }
}

fn subscribe_noop(client: &Client, name: &str) {
    client.subscribe(
        name,
        json!({ "topic": THROUGHPUT_TOPIC, "plugin": "noop", "isolation": "worker", "concurrency": 16 }),
    );
}

/// Publish bodies of `messages` payloads of exactly `size` bytes.
fn sized_bodies(messages: u64, batch: u64, size: usize) -> Vec<Vec<u8>> {
    let payload = ".".repeat(size);
    (0..messages)
        .step_by(batch as usize)
        .map(|first| {
            let batch: Vec<Value> = (first..(first + batch).min(messages))
                .map(|seq| json!({ "key": key(seq), "payload": payload }))
                .collect();
            serde_json::to_vec(&json!({ "messages": batch })).expect("encodes")
        })
        .collect()
}

/// Server CPU time per message, in µs, from cores over `secs`.
fn cpu_us_per(cpu: &CpuUse, secs: f64, messages: u64) -> f64 {
    cpu.server * secs * 1e6 / messages as f64
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// Resident memory of a process, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

// ---------------------------------------------------------------- stalls

/// Probe publishes per second in each stalls phase.
const PROBE_RATE: u64 = 200;
/// Bytes of padding that make the uploaded plugin 32 MiB in all.
const UPLOAD_PADDING: usize = 30 << 20;

/// Single publishes while the host does heavy work: a plugin upload of the
/// largest size allowed, and a subscription catching up a backlog.
fn run_stalls(options: &Options, plugins: &PluginDir) {
    println!(
        "\n## Publish latency while the host works ({PROBE_RATE} single publishes/s with ids, {} s per phase)",
        options.seconds
    );
    println!(
        "{:<34} {:>8} {:>9} {:>9} {:>9} {:>9}   meanwhile",
        "phase", "sent", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let server = Server::start();
    let client = &server.client;
    client.create_topic("probe");
    client.create_topic(THROUGHPUT_TOPIC);
    let noop = plugins.bytes("noop");
    client.deploy("noop", &noop);
    let phase = |name: &str, work: &(dyn Fn(&AtomicUsize) -> String + Sync)| {
        let stop = AtomicUsize::new(0);
        let (took, meanwhile) = thread::scope(|scope| {
            let worker = scope.spawn(|| work(&stop));
            let took = probe(client, name, options.seconds);
            stop.store(1, Ordering::Release);
            (took, worker.join().expect("phase work"))
        });
        let sent = took.len();
        match Percentiles::of(took) {
            Some(p) => println!(
                "{name:<34} {sent:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}   {meanwhile}",
                p.p50, p.p90, p.p99, p.max
            ),
            None => println!("{name:<34} no data"),
        }
    };
    phase("quiet", &|_| String::new());
    phase("520 slow connections", &|stop| {
        slow_clients(&server.client.base, stop)
    });
    phase("32 MiB plugin uploads", &|stop| {
        let mut uploads = 0;
        while stop.load(Ordering::Acquire) == 0 {
            client.deploy("big", &padded(&noop, uploads, UPLOAD_PADDING));
            uploads += 1;
        }
        format!("{uploads} uploads")
    });
    // The backlog is stored before the phase; the subscription starts with it.
    let bodies = batch_bodies(options.messages, options.batch);
    publish_all(client, &bodies, options.clients);
    phase(
        &format!("catch-up of {} messages", options.messages),
        &|stop| {
            subscribe_noop(client, THROUGHPUT_SUB);
            while stop.load(Ordering::Acquire) == 0
                && client.acked(THROUGHPUT_SUB) < options.messages
            {
                thread::sleep(POLL_EVERY);
            }
            format!("{} delivered", client.acked(THROUGHPUT_SUB))
        },
    );
}

/// Hold 300 connections trickling a request head a byte at a time (each
/// every 100 ms), 200 that send nothing and 20 whose body stopped, until
/// `stop`; connections the server closes are opened again.
fn slow_clients(base: &str, stop: &AtomicUsize) -> String {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let head = b"POST /v1/topics/probe/messages HTTP/1.1\r\nHost: bench\r\nX-Slow: ";
    let body = b"POST /v1/topics/probe/messages HTTP/1.1\r\nHost: bench\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    let open = |first: &[u8]| {
        let mut c = std::net::TcpStream::connect(addr).expect("connects");
        c.write_all(first).expect("writes");
        c
    };
    let mut trickling: Vec<_> = (0..300).map(|_| open(head)).collect();
    let _idle: Vec<_> = (0..200).map(|_| open(b"")).collect();
    let _stalled: Vec<_> = (0..20).map(|_| open(body)).collect();
    let mut reopened = 0;
    while stop.load(Ordering::Acquire) == 0 {
        for c in trickling.iter_mut() {
            if c.write_all(b"a").is_err() {
                *c = open(head);
                reopened += 1;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    format!("{reopened} reopened")
}

/// Publish one message with an id every 1/PROBE_RATE s for `seconds`, on an
/// absolute schedule; the time each took, in nanoseconds.
fn probe(client: &Client, phase: &str, seconds: u64) -> Vec<u64> {
    let start = Instant::now() + PACING_LEAD;
    let total = PROBE_RATE * seconds;
    let tag: String = phase.chars().filter(char::is_ascii_alphanumeric).collect();
    (0..total)
        .map(|seq| {
            let due = start + Duration::from_nanos(seq * 1_000_000_000 / PROBE_RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let body = json!({"id": format!("{tag}-{seq}"), "key": key(seq),
                              "payload": payload(format!("{seq:010}:"))});
            let leaves = Instant::now();
            client.publish("probe", body.to_string().as_bytes());
            // From when it was due: a send held up by the one before counts.
            Instant::now().duration_since(due.min(leaves)).as_nanos() as u64
        })
        .collect()
}

// ---------------------------------------------------------------- hostile

/// Hostile subscriptions of each kind, and the concurrency of each.
const HOSTILE_SUBSCRIPTIONS: usize = 5;
const HOSTILE_CONCURRENCY: u32 = 10;
/// `--long-call-cpu-percent` of the last hostile run.
const BUDGET_PERCENT: u32 = 10;

/// The latency scenario on a host of its own, then beside plugins that
/// loop forever or grow their memory until stopped: without a long-call
/// slot limit, with the default slots, and with a CPU budget for long calls.
fn run_hostile(options: &Options, plugins: &PluginDir) {
    let total = options.rate * options.seconds;
    println!(
        "\n## A healthy subscription beside hostile plugins: plugin stamp, {} msg/s for {} s \
         ({total} single-message publishes), concurrency {LATENCY_CONCURRENCY}; hostile: \
         {HOSTILE_SUBSCRIPTIONS} subscriptions of endless loops and {HOSTILE_SUBSCRIPTIONS} of \
         memory hogs, concurrency {HOSTILE_CONCURRENCY} each, 1 s timeout",
        options.rate, options.seconds
    );
    println!(
        "\n{:<23} {:<15} {:>9} {:>9} {:>9} {:>9}",
        "host", "latency (ms)", "p50", "p90", "p99", "max"
    );
    let solo = latency_run(options, plugins, "at-least-once", "worker", &[], &|_| {});
    print_percentiles("alone", "publish→handle", &solo.handle);
    print_percentiles("alone", "publish", &solo.publish);
    let beside = |args: &[String]| {
        latency_run(
            options,
            plugins,
            "at-least-once",
            "worker",
            args,
            &|client| hostile_load(client, plugins, options.seconds),
        )
    };
    let unlimited = beside(&["--long-call-slots".to_string(), "0".to_string()]);
    print_percentiles(
        "hostile, no slot limit",
        "publish→handle",
        &unlimited.handle,
    );
    print_percentiles("hostile, no slot limit", "publish", &unlimited.publish);
    let hostile = beside(&[]);
    print_percentiles("beside hostile", "publish→handle", &hostile.handle);
    print_percentiles("beside hostile", "publish", &hostile.publish);
    let budget = [
        "--long-call-cpu-percent".to_string(),
        BUDGET_PERCENT.to_string(),
    ];
    let budgeted = beside(&budget);
    let label = format!("hostile, {BUDGET_PERCENT} % CPU");
    print_percentiles(&label, "publish→handle", &budgeted.handle);
    print_percentiles(&label, "publish", &budgeted.publish);
    for (label, run) in [
        ("no slot limit", &unlimited),
        ("long-call slots", &hostile),
        ("long-call CPU budget", &budgeted),
    ] {
        if let (Some(a), Some(b)) = (&solo.handle, &run.handle) {
            println!(
                "\npublish→handle p99 beside hostile plugins ({label}) / alone: {:.2}× (p50 {:.2}×)",
                b.p99 / a.p99,
                b.p50 / a.p50
            );
        }
    }
    for run in [&solo, &unlimited, &hostile, &budgeted] {
        print_latency_facts(run);
    }
}

/// Start the hostile subscriptions, each with enough messages to stay busy
/// for `seconds` and more.
fn hostile_load(client: &Client, plugins: &PluginDir, seconds: u64) {
    client.deploy("spin", &plugins.bytes("spin"));
    client.deploy("hog", &plugins.bytes("hog"));
    // A loop takes its whole timeout; a hog runs out of memory in a few ms.
    let kinds = [
        ("spin", "loop", 20 * seconds + 100),
        ("hog", "hog", 500 * seconds),
    ];
    for i in 0..HOSTILE_SUBSCRIPTIONS {
        for (kind, payload, messages) in kinds {
            let topic = format!("hostile-{kind}{i}");
            client.create_topic(&topic);
            client.subscribe(
                &topic,
                json!({"topic": topic, "plugin": kind, "concurrency": HOSTILE_CONCURRENCY,
                       "ordering": "none", "timeout_ms": 1000,
                       "retry": {"initial_ms": 5, "max_attempts": 1}}),
            );
            for first in (0..messages).step_by(500) {
                let batch: Vec<Value> = (first..(first + 500).min(messages))
                    .map(|n| json!({"key": key(n), "payload": payload}))
                    .collect();
                let body = json!({ "messages": batch }).to_string();
                client.publish(&topic, body.as_bytes());
            }
        }
    }
}

// ---------------------------------------------------------------- traces

/// The throughput scenario without trace contexts, with trace contexts
/// only, and with every span exported, in turn so that drift on a shared
/// machine hits each.
fn run_traces(options: &Options, plugins: &PluginDir) {
    let exported = Arc::new(AtomicU64::new(0));
    let counted = exported.clone();
    let endpoint = otlp::receive(move |body| {
        counted.fetch_add(body.len() as u64, Ordering::Relaxed);
    });
    let isolation = options.isolation[0];
    let concurrency = options.concurrency[0];
    let delivery = options.delivery[0];
    println!(
        "\n## Traces: {} messages, {delivery}, {isolation} isolation, concurrency {concurrency}, plugin {}",
        options.messages, options.plugin
    );
    println!(
        "\n{:<10} {:>10} {:>10} {:>8} {:>14} {:>14}",
        "traces", "publish/s", "e2e/s", "server", "server µs/msg", "exported KiB"
    );
    let off = ["--trace-context".to_string(), "false".to_string()];
    let export = ["--otlp-endpoint".to_string(), endpoint];
    let modes: [(&str, &[String]); 3] = [("off", &off), ("context", &[]), ("exported", &export)];
    for round in 0..9 {
        let (label, args) = modes[round % modes.len()];
        let before = exported.load(Ordering::Relaxed);
        let run = throughput_run(options, plugins, delivery, isolation, concurrency, args);
        let Some(total) = run.total else {
            println!("{label:<10} STALL@{}", run.acked);
            continue;
        };
        let cpu_us = run.cpu.server * total.as_secs_f64() * 1e6 / options.messages as f64;
        let sent = exported.load(Ordering::Relaxed) - before;
        println!(
            "{label:<10} {:>10.0} {:>10.0} {:>8.2} {:>14.1} {:>14}",
            per_second(options.messages, run.publish),
            per_second(options.messages, total),
            run.cpu.server,
            cpu_us,
            sent >> 10
        );
    }
}
