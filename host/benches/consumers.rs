//! The consumers benchmark (`./dev.sh bench-consumers [--messages N]`), against
//! the real `switchyard serve` binary and a local keep-alive HTTP server:
//!
//! 1. Webhook delivery: the `webhook` plugin POSTs every message to the local
//!    server (204), worker isolation, concurrency 16, unordered.
//! 2. Pull consumers: four client threads lease batches of 100 and ack them.
//! 3. What the egress gate adds to one request: a request's time in the
//!    ledger (from the plugin's `handle` call of `wasi:http` to the response
//!    headers, through the gate and the pooled client) beside the same
//!    request from a plain hyper client in this process, one at a time.
//!
//! Each throughput line gives messages/s and the server's CPU time per
//! message (from /proc, so it holds on a noisy machine better than the rate).

// The benches' shared module; this one uses only a part of it.
#[allow(dead_code)]
mod common;

use common::{process_ticks, PluginDir, USER_HZ};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages per throughput run unless `--messages` says.
const DEFAULT_MESSAGES: u64 = 20_000;
/// Requests in the latency comparison.
const LATENCY_REQUESTS: usize = 2_000;
/// Pull consumers and their batch size.
const PULLERS: usize = 4;
const LEASE_BATCH: usize = 100;
/// Upper bound on any run.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn main() {
    let mut messages = DEFAULT_MESSAGES;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--messages" => {
                messages = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1_000..=1_000_000).contains(n))
                    .unwrap_or_else(|| usage())
            }
            "--bench" => {}
            _ => usage(),
        }
    }
    let plugins = PluginDir::find("consumers", "./dev.sh bench-consumers", &["webhook"]);
    let sink = Sink::start();
    let server = Server::start();
    println!(
        "consumers benchmark: {messages} messages of 256 B, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    webhook(&server, &sink, &plugins, messages);
    pull(&server, messages);
    egress_latency(&server, &sink);
}

fn usage() -> ! {
    eprintln!("usage: consumers [--messages N]   (1,000 to 1,000,000)");
    std::process::exit(2)
}

// ------------------------------------------------------------ the runs

fn webhook(server: &Server, sink: &Sink, plugins: &PluginDir, messages: u64) {
    let wasm = plugins.bytes("webhook");
    server.send("PUT", "/v1/plugins/webhook", "application/wasm", &wasm);
    server.json("PUT", "/v1/topics/hooks", json!({"partitions": 4}));
    let base = format!("http://127.0.0.1:{}", sink.port);
    server.publish_all("hooks", messages);
    let before = sink.count();
    let cpu = server.cpu();
    let started = Instant::now();
    server.json(
        "PUT",
        "/v1/subscriptions/hooks",
        json!({"topic": "hooks", "plugin": "webhook", "ordering": "none",
               "concurrency": 16, "isolation": "worker",
               "config": {"url": format!("{base}/hook")},
               "egress": {"allow": [base]}}),
    );
    server.wait_acked("hooks", messages);
    report(
        "webhook deliveries",
        messages,
        started.elapsed(),
        server.cpu() - cpu,
    );
    assert_eq!(
        sink.count() - before,
        messages,
        "every message reached the sink once"
    );
}

fn pull(server: &Server, messages: u64) {
    server.json("PUT", "/v1/topics/jobs", json!({"partitions": 4}));
    server.json(
        "PUT",
        "/v1/subscriptions/jobs",
        json!({"topic": "jobs", "mode": "pull", "ordering": "none", "concurrency": 256}),
    );
    server.publish_all("jobs", messages);
    let cpu = server.cpu();
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..PULLERS)
        .map(|_| {
            let (server, done) = (server.clone_client(), done.clone());
            std::thread::spawn(move || {
                while done.load(Ordering::Relaxed) < messages {
                    assert!(started.elapsed() < RUN_LIMIT, "pull run took too long");
                    let got = server.json(
                        "POST",
                        "/v1/subscriptions/jobs/lease",
                        json!({"max": LEASE_BATCH, "wait_ms": 100}),
                    );
                    let ids: Vec<Value> = got["leases"]
                        .as_array()
                        .expect("leases")
                        .iter()
                        .map(|l| l["lease_id"].clone())
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let n = ids.len() as u64;
                    server.json("POST", "/v1/subscriptions/jobs/settle", json!({"ack": ids}));
                    done.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a pull consumer failed");
    }
    server.wait_acked("jobs", messages);
    report(
        &format!("pull lease+ack, batches of {LEASE_BATCH}, {PULLERS} consumers"),
        messages,
        started.elapsed(),
        server.cpu() - cpu,
    );
}

fn egress_latency(server: &Server, sink: &Sink) {
    // Through the gate: one delivery at a time, every attempt in the ledger.
    server.json("PUT", "/v1/topics/lat", json!({"partitions": 1}));
    let base = format!("http://127.0.0.1:{}", sink.port);
    server.json(
        "PUT",
        "/v1/subscriptions/lat",
        json!({"topic": "lat", "plugin": "webhook", "ordering": "partition",
               "concurrency": 1, "isolation": "worker", "ledger": "all",
               "config": {"url": format!("{base}/hook")},
               "egress": {"allow": [base]}}),
    );
    server.publish_all("lat", LATENCY_REQUESTS as u64);
    server.wait_acked("lat", LATENCY_REQUESTS as u64);
    let mut gated: Vec<u64> = (0..LATENCY_REQUESTS)
        .map(|i| {
            let entry = server.json_get(&format!("/v1/subscriptions/lat/messages/lat-{i}"));
            entry["attempts"][0]["http"][0]["duration_us"]
                .as_u64()
                .expect("a request in the ledger")
        })
        .collect();
    // Direct: the same request from a pooled hyper client, one at a time.
    let mut direct = sink.direct_latencies(LATENCY_REQUESTS);
    gated.sort_unstable();
    direct.sort_unstable();
    let p = |v: &[u64], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "request to response headers, {LATENCY_REQUESTS} one at a time: through the egress gate p50 {} µs p99 {} µs; \
         plain hyper client p50 {} µs p99 {} µs; the gate adds ~{} µs at p50",
        p(&gated, 0.5),
        p(&gated, 0.99),
        p(&direct, 0.5),
        p(&direct, 0.99),
        p(&gated, 0.5).saturating_sub(p(&direct, 0.5))
    );
}

fn report(what: &str, messages: u64, took: Duration, cpu: Duration) {
    println!(
        "{what}: {messages} in {:.2} s = {:.0} msg/s; server CPU {:.1} µs/msg ({:.2} cores)",
        took.as_secs_f64(),
        messages as f64 / took.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / messages as f64,
        cpu.as_secs_f64() / took.as_secs_f64()
    );
}

// ------------------------------------------------------------ the server

struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
    _data: tempfile::TempDir,
}

/// A second handle on the same server for another thread.
struct ClientOnly {
    base: String,
    agent: ureq::Agent,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .max_idle_connections_per_host(64)
        .build()
        .into()
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().expect("temporary data dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(["--egress-allow-cidr", "127.0.0.0/8", "--data-dir"])
            .arg(data.path())
            .env_remove("SWITCHYARD_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting switchyard");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("switchyard started");
        Server {
            child,
            base: format!("http://{addr}"),
            agent: agent(),
            _data: data,
        }
    }

    fn clone_client(&self) -> ClientOnly {
        ClientOnly {
            base: self.base.clone(),
            agent: self.agent.clone(),
        }
    }

    /// The server's CPU time so far (user + system).
    fn cpu(&self) -> Duration {
        let ticks = process_ticks(&format!("/proc/{}/stat", self.child.id()));
        Duration::from_secs_f64(ticks as f64 / USER_HZ)
    }

    fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> String {
        send(&self.agent, &self.base, method, path, content_type, body)
    }

    fn json(&self, method: &str, path: &str, body: Value) -> Value {
        let text = self.send(
            method,
            path,
            "application/json",
            body.to_string().as_bytes(),
        );
        serde_json::from_str(&text).expect("a JSON answer")
    }

    fn json_get(&self, path: &str) -> Value {
        let mut response = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .expect("GET");
        let text = response.body_mut().read_to_string().expect("body");
        serde_json::from_str(&text).expect("a JSON answer")
    }

    /// Publish `n` messages `{topic}-{i}` in batches of 1,000.
    fn publish_all(&self, topic: &str, n: u64) {
        let payload = "x".repeat(256);
        for start in (0..n).step_by(1000) {
            let batch: Vec<Value> = (start..(start + 1000).min(n))
                .map(|i| json!({"id": format!("{topic}-{i}"), "key": format!("k{}", i % 64), "payload": payload}))
                .collect();
            self.json(
                "POST",
                &format!("/v1/topics/{topic}/messages"),
                json!({"messages": batch}),
            );
        }
    }

    fn wait_acked(&self, subscription: &str, n: u64) {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let info = self.json_get(&format!("/v1/subscriptions/{subscription}"));
            if info["stats"]["acked"].as_u64() == Some(n) {
                return;
            }
            assert!(started.elapsed() < RUN_LIMIT, "{subscription}: {info}");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

impl ClientOnly {
    fn json(&self, method: &str, path: &str, body: Value) -> Value {
        let text = send(
            &self.agent,
            &self.base,
            method,
            path,
            "application/json",
            body.to_string().as_bytes(),
        );
        serde_json::from_str(&text).expect("a JSON answer")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> String {
    let url = format!("{base}{path}");
    let request = match method {
        "PUT" => agent.put(&url),
        _ => agent.post(&url),
    };
    let mut response = request
        .header("content-type", content_type)
        .send(body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    assert!(
        (200..300).contains(&status),
        "{method} {path} -> {status}: {text}"
    );
    text
}

// ------------------------------------------------------------ the sink

/// A local HTTP/1.1 server that answers every request 204, keeping
/// connections alive, and counts requests.
struct Sink {
    port: u16,
    count: Arc<AtomicU64>,
    runtime: tokio::runtime::Runtime,
}

impl Sink {
    fn start() -> Sink {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("sink runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the sink");
        let port = listener.local_addr().expect("sink address").port();
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let counted = counted.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let _ = req.into_body().collect().await;
                                counted.fetch_add(1, Ordering::Relaxed);
                                let mut r = hyper::Response::new(http_body_util::Empty::<
                                    bytes::Bytes,
                                >::new(
                                ));
                                *r.status_mut() = hyper::StatusCode::NO_CONTENT;
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Sink {
            port,
            count,
            runtime,
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Microseconds to response headers of `n` sequential POSTs from a
    /// pooled hyper client in this process.
    fn direct_latencies(&self, n: usize) -> Vec<u64> {
        use hyper_util::client::legacy::Client;
        let client: Client<_, http_body_util::Full<bytes::Bytes>> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let url = format!("http://127.0.0.1:{}/hook", self.port);
        self.runtime.block_on(async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/octet-stream")
                    .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                        b'x';
                        256
                    ])))
                    .expect("request");
                let started = Instant::now();
                let response = client.request(req).await.expect("direct request");
                out.push(started.elapsed().as_micros() as u64);
                use http_body_util::BodyExt;
                let _ = response.into_body().collect().await;
            }
            out
        })
    }
}
