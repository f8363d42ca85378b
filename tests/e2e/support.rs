//! Shared helpers: build the test plugins, start the real `switchyard` binary
//! on a free port with a temporary data directory, and talk HTTP to it.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Test plugins, built once per test run.
pub const PLUGINS: [&str; 10] = [
    "noop",
    "forwarder",
    "flaky",
    "poison",
    "spin",
    "hog",
    "scripted",
    "counter",
    "webhook",
    "caller",
];

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Where the wasm plugins are built: beside the host's own target directory.
fn plugin_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-… → target
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps");
    target.join("wasm-plugins")
}

/// The directory of the built test plugins, building all of them on first use.
pub fn plugin_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target_dir = plugin_target_dir();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(workspace())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target_dir);
        for p in PLUGINS {
            cmd.args(["-p", p]);
        }
        let status = cmd
            .status()
            .expect("running cargo to build the test plugins");
        assert!(status.success(), "building the test plugins failed");
        target_dir.join("wasm32-wasip2").join("release")
    })
}

/// The bytes of a test plugin's component.
pub fn plugin(name: &str) -> Vec<u8> {
    let path = plugin_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// How to start a server.
#[derive(Clone, Default)]
pub struct Options {
    pub token: Option<String>,
    pub read_token: Option<String>,
    pub publish_token: Option<String>,
    pub consume_token: Option<String>,
    /// `--fsync-interval-ms`: sync the WAL periodically instead of per publish.
    pub fsync_interval_ms: Option<u64>,
    /// `--egress-allow-cidr`: non-public ranges outbound requests may reach.
    pub egress_allow_cidr: Vec<String>,
    /// `--egress-ca-file`: extra trusted roots for outbound HTTPS.
    pub egress_ca_file: Option<PathBuf>,
    /// Further flags, e.g. `["--worker-threads", "8"]`.
    pub args: Vec<String>,
}

/// A running `switchyard serve` process.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data: Arc<tempfile::TempDir>,
    options: Options,
    output: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Server {
        let data = Arc::new(tempfile::tempdir().expect("temporary data dir"));
        Self::spawn(data, options)
    }

    /// Start with these extra `serve` arguments.
    pub fn start_args(args: &[&str]) -> Server {
        Self::start_with(Options {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Options::default()
        })
    }

    /// Start on a data directory the test prepared (e.g. a mount on it).
    pub fn start_on(data: Arc<tempfile::TempDir>, options: Options) -> Server {
        Self::spawn(data, options)
    }

    fn spawn(data: Arc<tempfile::TempDir>, options: Options) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env_remove("SWITCHYARD_TOKEN")
            .env_remove("SWITCHYARD_EGRESS_ALLOW_CIDR")
            .env_remove("SWITCHYARD_EGRESS_CA_FILE")
            .env("SWITCHYARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(t) = &options.token {
            cmd.args(["--token", t]);
        }
        if let Some(t) = &options.read_token {
            cmd.args(["--read-token", t]);
        }
        if let Some(t) = &options.publish_token {
            cmd.args(["--publish-token", t]);
        }
        if let Some(t) = &options.consume_token {
            cmd.args(["--consume-token", t]);
        }
        if let Some(ms) = options.fsync_interval_ms {
            cmd.args(["--fsync-interval-ms", &ms.to_string()]);
        }
        for cidr in &options.egress_allow_cidr {
            cmd.args(["--egress-allow-cidr", cidr]);
        }
        if let Some(file) = &options.egress_ca_file {
            cmd.arg("--egress-ca-file").arg(file);
        }
        cmd.args(&options.args);
        let mut child = cmd.spawn().expect("starting switchyard");
        let stderr = child.stderr.take().expect("piped stderr");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("switchyard did not start: {:?}", output.lock().unwrap()));
        Server {
            child: Some(child),
            base,
            data,
            options,
            output,
        }
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Whether the server process runs (it was not stopped).
    pub fn child_alive(&self) -> bool {
        self.child.is_some()
    }

    /// Stop with SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping the killed server");
        }
    }

    /// Stop with SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("sending SIGTERM");
            assert!(status.success());
            let exit = child.wait().expect("waiting for the server");
            assert!(exit.success(), "unclean exit {exit:?}: {}", self.log());
        }
    }

    /// Start again on the same data directory (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let next = Self::spawn(self.data.clone(), self.options.clone());
        let old = std::mem::replace(self, next);
        drop(old);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Send a request; returns (status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> (u16, Value) {
        let (status, _, value) = self.send(method, path, token, &[], body);
        (status, value)
    }

    /// Send a request with extra headers; returns (status, content type,
    /// JSON body or Null). A JSON answer must match the OpenAPI document.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> (u16, String, Value) {
        // `Some("")` sends no Authorization header at all.
        let token = token
            .or(self.options.token.as_deref())
            .filter(|t| !t.is_empty());
        let (content_type, bytes) = match body {
            Body::None => (None, Vec::new()),
            Body::Json(v) => (Some("application/json"), v.to_string().into_bytes()),
            Body::Raw(ct, b) => (ct, b),
        };
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(ct) = content_type {
            all.push(("content-type", ct));
        }
        let (status, answer_headers, answer) = self.exchange(method, path, token, &all, bytes);
        let content_type = answer_headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = String::from_utf8_lossy(&answer).into_owned();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if is_json(&content_type) {
            self.contract()
                .check(method, path, status, &content_type, &value);
        }
        (status, content_type, value)
    }

    /// The API's OpenAPI document, which every JSON answer must match.
    fn contract(&self) -> &'static crate::contract::Contract {
        crate::contract::get(|| {
            let (status, text) = self.get_text("/v1/openapi.json");
            assert_eq!(status, 200, "{text}");
            serde_json::from_str(&text).expect("the OpenAPI document is JSON")
        })
    }

    /// A GET without a token; returns the status and the body as text.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.exchange("GET", path, None, &[], Vec::new());
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// One request through the host's own API client (`switchyard::api::Client`,
    /// what the client commands use); the answer as it came.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, hyper::HeaderMap, Vec<u8>) {
        use http_body_util::BodyExt;
        let client = switchyard::api::Client::new(&self.base, token.map(str::to_owned), None)
            .expect("the server's address is a URL");
        let method = hyper::Method::from_bytes(method.as_bytes()).expect("a method");
        let body = http_body_util::Full::new(bytes::Bytes::from(body)).boxed_unsync();
        let (status, headers, answer) = client_runtime()
            .block_on(client.exchange(method.clone(), path, headers, body))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        (status.as_u16(), headers, answer.to_vec())
    }

    /// The value of one series of `/metrics`, named as printed before its
    /// value, e.g. `switchyard_plugin_threads` or
    /// `switchyard_subscription_lag{subscription="s"}`.
    pub fn metric(&self, series: &str) -> u64 {
        let (status, text) = self.get_text("/metrics");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
    }

    /// A request that must succeed (2xx); returns the JSON body.
    pub fn ok(&self, method: &str, path: &str, body: Body) -> Value {
        let (status, value) = self.call(method, path, None, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} -> {status} {value}\n{}",
            self.log()
        );
        value
    }

    pub fn topic(&self, name: &str, partitions: u32) {
        self.ok(
            "PUT",
            &format!("/v1/topics/{name}"),
            Body::Json(json!({ "partitions": partitions })),
        );
    }

    pub fn deploy(&self, name: &str, plugin_name: &str) {
        self.ok(
            "PUT",
            &format!("/v1/plugins/{name}"),
            Body::Raw(Some("application/wasm"), plugin(plugin_name)),
        );
    }

    pub fn subscribe(&self, name: &str, spec: Value) {
        self.ok(
            "PUT",
            &format!("/v1/subscriptions/{name}"),
            Body::Json(spec),
        );
    }

    /// Publish a batch; returns the per-message results.
    pub fn publish(&self, topic: &str, messages: Vec<Value>) -> Vec<Value> {
        let v = self.ok(
            "POST",
            &format!("/v1/topics/{topic}/messages"),
            Body::Json(json!({ "messages": messages })),
        );
        v["results"].as_array().expect("results array").clone()
    }

    pub fn stats(&self, subscription: &str) -> Value {
        self.ok(
            "GET",
            &format!("/v1/subscriptions/{subscription}"),
            Body::None,
        )["stats"]
            .clone()
    }

    /// Poll a subscription's stats until `done` holds (bounded by `limit`).
    pub fn wait_stats(
        &self,
        subscription: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(limit, &format!("stats of {subscription}"), || {
            let s = self.stats(subscription);
            done(&s).then_some(s)
        })
    }

    pub fn dead_letters(&self, subscription: &str) -> Vec<Value> {
        self.ok(
            "GET",
            &format!("/v1/subscriptions/{subscription}/dead-letters?limit=1000"),
            Body::None,
        )["dead_letters"]
            .as_array()
            .expect("dead_letters array")
            .clone()
    }

    /// A subscription's kv entries under `prefix`, as (key, text value).
    pub fn kv(&self, subscription: &str, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path =
                format!("/v1/subscriptions/{subscription}/kv?limit=1000&prefix={prefix}");
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let v = self.ok("GET", &path, Body::None);
            for e in v["entries"].as_array().expect("entries array") {
                let value = e["value"].as_str().expect("text value").to_string();
                out.push((e["key"].as_str().unwrap().to_string(), value));
            }
            match v["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return out,
            }
        }
    }

    /// Every message of every partition of a topic.
    pub fn read_all(&self, topic: &str) -> Vec<Value> {
        let partitions = self.ok("GET", &format!("/v1/topics/{topic}"), Body::None)["partitions"]
            .as_u64()
            .expect("partition count");
        (0..partitions as u32)
            .flat_map(|p| self.read_partition(topic, p))
            .collect()
    }

    /// Every message of one partition.
    pub fn read_partition(&self, topic: &str, partition: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let v = self.ok(
                "GET",
                &format!(
                    "/v1/topics/{topic}/partitions/{partition}/messages?from={from}&limit=1000"
                ),
                Body::None,
            );
            let batch = v["messages"].as_array().expect("messages array").clone();
            if batch.is_empty() {
                return out;
            }
            from = batch.last().unwrap()["offset"].as_u64().unwrap() + 1;
            out.extend(batch);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A request body.
pub enum Body {
    None,
    Json(Value),
    Raw(Option<&'static str>, Vec<u8>),
}

/// Poll `probe` until it yields a value, failing after `limit`. Polling an
/// observable condition, never a fixed sleep, is how tests wait.
pub fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Size of every file under `dir`, in bytes.
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A message with a key and a text payload.
pub fn msg(key: &str, payload: &str) -> Value {
    json!({ "key": key, "payload": payload })
}

/// Whether a content type is JSON (`application/json`, `...+json`).
fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media == "application/json" || media.ends_with("+json")
}

/// The runtime the tests' API client runs on (the tests themselves are
/// plain threads).
fn client_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the test client's runtime")
    })
}
