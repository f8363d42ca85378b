//! Cluster mode's floor: what its JetStream pieces cost on a real 3-node
//! cluster on this machine (`scripts/nats-cluster`: loopback, R3 file
//! streams, `sync_interval: always`), before any Switchyard host runs on
//! them. Run it with `./dev.sh bench-cluster [--messages N] [--rate N]
//! [--seconds N]`.
//!
//! 1. append: `--messages` messages of 256 bytes to a 4-partition topic
//!    (`cluster::log::TopicLog`), one task per partition, atomic batches of
//!    1,000 — msg/s and the NATS servers' CPU per message;
//! 2. single appends at `--rate` msg/s for `--seconds`: confirm latency;
//! 3. fenced appends to a subscription's journal (`cluster::journal`):
//!    one entry of 4 KiB each, one after another for `--seconds`: commit
//!    latency;
//! 4. through Switchyard hosts, side by side: an embedded host and a host
//!    in cluster mode (`serve --cluster` on the same 3 nodes), each given
//!    the same HTTP workload — `--messages` published by 4 producers in
//!    batches of 1,000, then single publishes at `--rate` — msg/s, CPU per
//!    message (the host's, and the NATS servers' beside it), and publish
//!    latency; then a subscription with the noop plugin (at-least-once,
//!    per-key order, concurrency 8) drains `--deliveries` messages published
//!    before it was created — delivered msg/s and CPU per delivered message;
//!    and single publishes at `--latency-rate` msg/s for `--seconds` (16
//!    producers, paced) to a subscription with the stamp plugin: publish →
//!    plugin call latency, from when each publish was due.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "common/nats_cluster.rs"]
mod nats_cluster;

use bytes::Bytes;
use common::{process_ticks, USER_HZ};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard::cluster::journal::Journal;
use switchyard::cluster::log::{Record, TopicLog};

const USAGE: &str = "\
cluster: cluster mode's floor on a 3-node NATS cluster (./dev.sh bench-cluster [OPTIONS])

  --messages N   messages appended in batches of 1,000   [200000]
  --rate N       single appends per second               [500]
  --seconds N    seconds of single appends and commits   [5]
  --deliveries N messages a subscription drains, per host  [20000]
  --latency-rate N  single publishes/s for publish->handle latency  [2000]";

struct Options {
    messages: u64,
    rate: u64,
    seconds: u64,
    deliveries: u64,
    latency_rate: u64,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        messages: 200_000,
        rate: 500,
        seconds: 5,
        deliveries: 20_000,
        latency_rate: 2_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |range: std::ops::RangeInclusive<u64>| {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| range.contains(v))
                .ok_or(format!("{flag}: a number in {range:?}\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--messages" => o.messages = value(1_000..=10_000_000)?,
            "--rate" => o.rate = value(1..=100_000)?,
            "--seconds" => o.seconds = value(1..=3600)?,
            "--deliveries" => o.deliveries = value(1_000..=10_000_000)?,
            "--latency-rate" => o.latency_rate = value(100..=20_000)?,
            "--bench" => {}
            _ => return Err(USAGE.to_string()),
        }
    }
    Ok(o)
}

fn percentiles(samples: Vec<Duration>) -> String {
    let count = samples.len();
    let [p50, p99, p999, max] = quantiles(samples, [0.5, 0.99, 0.999, 1.0]);
    format!(
        "p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms ({count} samples)"
    )
}

fn record(n: u64) -> Record {
    Record {
        id: Some(format!("m{n}")),
        dedup: false,
        key: Some(format!("k{}", n % 64)),
        headers: Vec::new(),
        payload: Bytes::from(vec![b'x'; 256]),
        deliver_at_ms: None,
    }
}

fn main() {
    let options = match parse() {
        Ok(o) => o,
        Err(text) => {
            eprintln!("{text}");
            std::process::exit(2);
        }
    };
    let cluster = nats_cluster::NatsCluster::start();
    // CPU ticks of the three servers so far.
    let ticks = || -> u64 {
        cluster
            .pids()
            .iter()
            .map(|pid| process_ticks(&format!("/proc/{pid}/stat")))
            .sum()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let _inside = rt.enter();
    let client = rt
        .block_on(async_nats::connect(cluster.urls.clone()))
        .expect("connecting to the cluster");
    let log = TopicLog::new(client.clone(), 3);
    rt.block_on(log.create_topic("bench", 4, Duration::from_secs(120)))
        .expect("the topic");
    println!("## Cluster mode's floor: 3 NATS nodes on loopback, R3, sync_interval: always\n");

    // 1. Appends in atomic batches of 1,000, one task per partition.
    let per_partition = options.messages / 4;
    let before = ticks();
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..4u32)
            .map(|p| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while n < per_partition {
                        let size = 1000.min(per_partition - n);
                        let batch = (n..n + size).map(record).collect();
                        log.append("bench", p, batch).await.expect("an append");
                        n += size;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("an append task");
        }
    });
    let took = started.elapsed();
    let appended = per_partition * 4;
    let cpu = (ticks() - before) as f64 / USER_HZ;
    println!(
        "append, batches of 1,000: {appended} messages in {:.2} s = {:.0} msg/s; NATS servers {:.2} cores, {:.1} µs CPU per message",
        took.as_secs_f64(),
        appended as f64 / took.as_secs_f64(),
        cpu / took.as_secs_f64(),
        cpu * 1e6 / appended as f64
    );

    // 2. Single appends, paced.
    let total = options.rate * options.seconds;
    let gap = Duration::from_secs_f64(1.0 / options.rate as f64);
    let mut confirms = Vec::with_capacity(total as usize);
    let start = Instant::now();
    for n in 0..total {
        let due = start + gap * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        rt.block_on(log.append("bench", (n % 4) as u32, vec![record(n)]))
            .expect("a single append");
        confirms.push(sent.elapsed());
    }
    println!(
        "single appends at {} msg/s: {}",
        options.rate,
        percentiles(confirms)
    );

    // 3. Fenced appends to a subscription's journal.
    let mut journal = rt
        .block_on(Journal::open(client, "bench", 3))
        .expect("the journal");
    rt.block_on(journal.replay()).expect("a replay");
    let mut commits = Vec::new();
    let until = Instant::now() + Duration::from_secs(options.seconds);
    while Instant::now() < until {
        let started = Instant::now();
        rt.block_on(journal.append(vec![Bytes::from(vec![b'e'; 4096])]))
            .expect("a fenced append");
        commits.push(started.elapsed());
    }
    println!(
        "fenced journal appends (one 4 KiB entry), one after another: {:.0}/s, {}",
        commits.len() as f64 / options.seconds as f64,
        percentiles(commits)
    );

    // 4. Through Switchyard hosts, the embedded mode beside cluster mode.
    println!(
        "\n## Through a Switchyard host (HTTP, JSON, 256-byte payloads, 64 keys, 4 partitions)\n"
    );
    println!("| | embedded (RocksDB) | cluster mode (3 NATS nodes, R3) |");
    println!("| --- | --: | --: |");
    let urls = cluster.urls.join(",");
    let hosts = [
        Host::start(&[]),
        Host::start(&["--cluster", &urls, "--cluster-replicas", "3"]),
    ];
    let mut rows: Vec<[String; 2]> = vec![Default::default(); 3];
    for (i, host) in hosts.iter().enumerate() {
        host.put("/v1/topics/hosts", r#"{"partitions": 4}"#);
        // Batches of 1,000 from 4 producers.
        let cpu = || host.ticks() + if i == 1 { ticks() } else { 0 };
        let (before, started) = (cpu(), Instant::now());
        let per_producer = options.messages / 4;
        std::thread::scope(|scope| {
            for producer in 0..4u64 {
                scope.spawn(move || {
                    let mut n = 0;
                    while n < per_producer {
                        let size = 1000.min(per_producer - n);
                        let first = producer * per_producer + n;
                        host.post("/v1/topics/hosts/messages", &batch(first, size));
                        n += size;
                    }
                });
            }
        });
        let took = started.elapsed().as_secs_f64();
        let published = per_producer * 4;
        let cores = (cpu() - before) as f64 / USER_HZ;
        rows[0][i] = format!("{:.0}", published as f64 / took);
        rows[1][i] = format!(
            "{:.1} µs ({:.2} cores)",
            cores * 1e6 / published as f64,
            cores / took
        );
        // Single publishes, paced.
        let total = options.rate * options.seconds;
        let gap = Duration::from_secs_f64(1.0 / options.rate as f64);
        let mut confirms = Vec::with_capacity(total as usize);
        let start = Instant::now();
        for n in 0..total {
            let due = start + gap * n as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            // Measured from when it was due, so a slow answer delays none
            // of the samples after it (no coordinated omission).
            host.post("/v1/topics/hosts/messages", &batch(n, 1));
            confirms.push(due.max(start).elapsed());
        }
        let [p50, p99, p999] = quantiles(confirms, [0.5, 0.99, 0.999]);
        rows[2][i] = format!("{p50:.2} / {p99:.2} / {p999:.2} ms");
    }
    let plugins = common::PluginDir::find("cluster", "./dev.sh bench-cluster", &["noop", "stamp"]);
    rows.push(Default::default());
    rows.push(Default::default());
    for (i, host) in hosts.iter().enumerate() {
        let cpu = || host.ticks() + if i == 1 { ticks() } else { 0 };
        host.send_bytes("/v1/plugins/noop", plugins.bytes("noop"));
        host.put("/v1/topics/drained", r#"{"partitions": 4}"#);
        // Started and paused first: the figure is the drain's, not a
        // cluster host's wait for its next beat to take the subscription.
        host.put(
            "/v1/subscriptions/drain",
            r#"{"topic": "drained", "plugin": "noop", "ordering": "key", "concurrency": 8}"#,
        );
        host.wait_running("drain");
        host.post("/v1/subscriptions/drain/pause", "");
        for first in (0..options.deliveries).step_by(1000) {
            host.post(
                "/v1/topics/drained/messages",
                &batch(first, 1000.min(options.deliveries - first)),
            );
        }
        let (before, started) = (cpu(), Instant::now());
        host.post("/v1/subscriptions/drain/resume", "");
        // Polled every 20 ms.
        while host.acked("drain") < options.deliveries {
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed().as_secs_f64();
        let cores = (cpu() - before) as f64 / USER_HZ;
        rows[3][i] = format!("{:.0}", options.deliveries as f64 / took);
        rows[4][i] = format!(
            "{:.1} µs ({:.2} cores)",
            cores * 1e6 / options.deliveries as f64,
            cores / took
        );
    }
    rows.push(Default::default());
    for (i, host) in hosts.iter().enumerate() {
        host.send_bytes("/v1/plugins/stamp", plugins.bytes("stamp"));
        host.put("/v1/topics/lat", r#"{"partitions": 4}"#);
        host.put("/v1/topics/lat.stamps", r#"{"partitions": 4}"#);
        host.put(
            "/v1/subscriptions/stamp",
            r#"{"topic": "lat", "plugin": "stamp", "ordering": "key", "concurrency": 8}"#,
        );
        // Measured from when it runs, not from a cluster host's next beat.
        host.wait_running("stamp");
        let per_producer = options.latency_rate / LATENCY_PRODUCERS * options.seconds;
        let gap = Duration::from_secs_f64(LATENCY_PRODUCERS as f64 / options.latency_rate as f64);
        let start = Instant::now() + Duration::from_millis(50);
        std::thread::scope(|scope| {
            for producer in 0..LATENCY_PRODUCERS {
                scope.spawn(move || {
                    for n in 0..per_producer {
                        let due = start + gap * n as u32 + gap / LATENCY_PRODUCERS as u32 * producer as u32;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        // The due time, as the wall clock read then: a slow
                        // answer delays no later sample's measure.
                        let sent = common::unix_ns()
                            - Instant::now().saturating_duration_since(due).as_nanos() as u64;
                        let body = serde_json::json!({ "messages": [
                            { "key": common::key(producer * per_producer + n), "payload": sent.to_string() }
                        ] });
                        host.post("/v1/topics/lat/messages", &body.to_string());
                    }
                });
            }
        });
        let total = per_producer * LATENCY_PRODUCERS;
        while host.acked("stamp") < total {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut latencies = Vec::with_capacity(total as usize);
        for partition in 0..4 {
            for payload in host.payloads("lat.stamps", partition) {
                let (sent, handled) = payload.split_once('|').expect("sent|handled");
                let (sent, handled): (u64, u64) = (
                    sent.parse().expect("sent ns"),
                    handled.parse().expect("handled ns"),
                );
                latencies.push(Duration::from_nanos(handled.saturating_sub(sent)));
            }
        }
        let [p50, p99, p999] = quantiles(latencies, [0.5, 0.99, 0.999]);
        rows[5][i] = format!("{p50:.2} / {p99:.2} / {p999:.2} ms");
    }
    let latency = format!(
        "publish → plugin call at {} msg/s (single publishes), p50 / p99 / p99.9",
        options.latency_rate
    );
    let drained = format!(
        "a subscription (noop plugin) drains {} stored messages (msg/s)",
        options.deliveries
    );
    let names = [
        "publish, 4 producers, batches of 1,000 (msg/s)",
        "CPU per published message (host, plus NATS in cluster mode)",
        &format!(
            "single publishes at {} msg/s, answered p50 / p99 / p99.9",
            options.rate
        ),
        &drained,
        "CPU per delivered message (host, plus NATS in cluster mode)",
        &latency,
    ];
    for (name, row) in names.iter().zip(&rows) {
        println!("| {name} | {} | {} |", row[0], row[1]);
    }
}

/// Quantiles of `samples`, in milliseconds.
fn quantiles<const N: usize>(mut samples: Vec<Duration>, qs: [f64; N]) -> [f64; N] {
    samples.sort();
    qs.map(|q| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e3
    })
}

/// Producers of the latency phase: enough that single publishes answered
/// in a few milliseconds keep the rate.
const LATENCY_PRODUCERS: u64 = 16;

/// A JSON publish body of `size` messages numbered from `first`.
fn batch(first: u64, size: u64) -> String {
    let messages: Vec<serde_json::Value> = (first..first + size)
        .map(|n| {
            serde_json::json!({
                "key": common::key(n),
                "payload": common::payload(format!("m{n}")),
            })
        })
        .collect();
    serde_json::json!({ "messages": messages }).to_string()
}

/// A `switchyard serve` of this build on a free port and a fresh data dir,
/// stopped when dropped.
struct Host {
    child: Child,
    base: String,
    agent: ureq::Agent,
    _data: tempfile::TempDir,
}

impl Host {
    fn start(args: &[&str]) -> Host {
        let data = tempfile::tempdir().expect("a data dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log",
                "warn",
            ])
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .env_remove("SWITCHYARD_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting switchyard");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agent
            .get(format!("{base}/readyz"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(
                Instant::now() < deadline,
                "switchyard {args:?} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Host {
            child,
            base,
            agent,
            _data: data,
        }
    }

    fn ticks(&self) -> u64 {
        process_ticks(&format!("/proc/{}/stat", self.child.id()))
    }

    fn send(&self, method: &str, path: &str, body: &str) {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        let mut answer = request
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = answer.status();
        let text = answer.body_mut().read_to_string().unwrap_or_default();
        assert!(status.is_success(), "{method} {path} -> {status}: {text}");
    }

    fn put(&self, path: &str, body: &str) {
        self.send("PUT", path, body);
    }

    fn send_bytes(&self, path: &str, body: Vec<u8>) {
        let mut answer = self
            .agent
            .put(format!("{}{path}", self.base))
            .header("Content-Type", "application/wasm")
            .send(&body[..])
            .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        let status = answer.status();
        let text = answer.body_mut().read_to_string().unwrap_or_default();
        assert!(status.is_success(), "PUT {path} -> {status}: {text}");
    }

    /// Every payload of a partition, as text.
    fn payloads(&self, topic: &str, partition: u32) -> Vec<String> {
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let mut answer = self
                .agent
                .get(format!(
                    "{}/v1/topics/{topic}/partitions/{partition}/messages?from={from}&limit=1000",
                    self.base
                ))
                .call()
                .unwrap_or_else(|e| panic!("reading {topic}: {e}"));
            let text = answer.body_mut().read_to_string().unwrap_or_default();
            let page: serde_json::Value = serde_json::from_str(&text).expect("a page");
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            let Some(last) = messages.last() else {
                return out;
            };
            from = last["offset"].as_u64().expect("offset") + 1;
            out.extend(
                messages
                    .iter()
                    .map(|m| m["payload"].as_str().expect("text").to_string()),
            );
        }
    }

    /// A subscription's acknowledged messages, as the host running it
    /// reports them (0 until it runs).
    fn acked(&self, name: &str) -> u64 {
        self.subscription(name)["stats"]["acked"]
            .as_u64()
            .unwrap_or(0)
    }

    /// A subscription's info (JSON), as the host answers it.
    fn subscription(&self, name: &str) -> serde_json::Value {
        let mut answer = self
            .agent
            .get(format!("{}/v1/subscriptions/{name}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("GET subscription: {e}"));
        let text = answer.body_mut().read_to_string().unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// Wait (polling every 20 ms, at most 30 s) until a subscription runs:
    /// in cluster mode a host starts it at its next beat.
    fn wait_running(&self, name: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.subscription(name)["state"] != "running" {
            assert!(Instant::now() < until, "subscription {name} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn post(&self, path: &str, body: &str) {
        self.send("POST", path, body);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
