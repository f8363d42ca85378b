//! `switchyard test`: run a plugin component on the harness (the host's own
//! delivery engine on virtual time) against messages from a JSON Lines file,
//! print a trace per message, and check an optional expectations file.

use crate::broker::harness::{
    Attempt, Backoff, DeliveryGuarantee, Harness, HarnessBuilder, HttpMock, Ordering,
};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flags of `switchyard test`.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// The plugin's .wasm component (from any language).
    pub plugin: PathBuf,

    /// Messages to publish, one JSON object per line, in the shape of a
    /// single-message publish: {"id", "key", "payload" | "payload_base64",
    /// "headers", "delay_ms"}. All are published at virtual time 0, in order.
    #[arg(long)]
    pub input: PathBuf,

    /// A subscription config value the plugin reads with config(NAME).
    /// Repeatable.
    #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,

    /// Attempts per message before it is dead-lettered.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    #[arg(long, value_enum, default_value_t = OrderingArg::Key)]
    pub ordering: OrderingArg,

    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,

    #[arg(long, value_enum, default_value_t = DeliveryArg::AtLeastOnce)]
    pub delivery: DeliveryArg,

    #[arg(long, value_enum, default_value_t = BackoffArg::Exponential)]
    pub backoff: BackoffArg,

    /// Delay before the second attempt, in (virtual) milliseconds.
    #[arg(long, default_value_t = 100)]
    pub initial_ms: u64,

    /// Longest delay between attempts, in (virtual) milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub max_ms: u64,

    /// Do not spread backoff delays randomly (the spread is seeded anyway,
    /// so runs repeat either way).
    #[arg(long)]
    pub no_jitter: bool,

    /// Per-attempt timeout, in real milliseconds (a plugin's run time is real).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,

    /// Partitions of the input topic `in`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,

    /// Answer the plugin's outbound HTTP requests from this script (JSON),
    /// at once on virtual time: [{"method": "POST", "url": "https://api.example.com/",
    /// "responses": [{"status": 503}, {"status": 200, "body": "ok",
    /// "headers": {"retry-after": "2"}}, {"error": "connection-refused"}]}].
    /// A request takes the first rule whose method matches and whose URL
    /// starts with `url`; each rule answers in turn, repeating its last
    /// answer. A request no rule matches is denied. Without a script every
    /// request is denied.
    #[arg(long, value_name = "FILE")]
    pub http_mock: Option<PathBuf>,

    /// A JSON file of expectations; exit status 1 if one is not met:
    /// {"messages": {"<id>": {"state": "acked" | "dead-lettered" | "failed",
    /// "attempts": N}}, "outputs": {"<topic>": N}, "kv": {"<key>": "<text>"}}.
    #[arg(long)]
    pub expect: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrderingArg {
    Key,
    Partition,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(clippy::enum_variant_names)]
pub enum DeliveryArg {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BackoffArg {
    Fixed,
    Exponential,
}

/// A flag value's name as typed on the command line.
fn name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or(String::new(), |v| v.get_name().to_string())
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

/// What `--expect` may check.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectations {
    #[serde(default)]
    messages: BTreeMap<String, MessageExpectation>,
    #[serde(default)]
    outputs: BTreeMap<String, usize>,
    #[serde(default)]
    kv: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageExpectation {
    state: Option<String>,
    attempts: Option<u32>,
}

/// The outcome of a run: the report to print and whether expectations held.
pub struct TestReport {
    pub text: String,
    pub passed: bool,
}

impl TestArgs {
    fn builder(&self, wasm: &[u8], mock: Option<HttpMock>) -> HarnessBuilder {
        let mut b = Harness::builder(wasm)
            .partitions(self.partitions)
            .max_attempts(self.max_attempts)
            .concurrency(self.concurrency)
            .ordering(match self.ordering {
                OrderingArg::Key => Ordering::Key,
                OrderingArg::Partition => Ordering::Partition,
                OrderingArg::None => Ordering::None,
            })
            .delivery(match self.delivery {
                DeliveryArg::AtMostOnce => DeliveryGuarantee::AtMostOnce,
                DeliveryArg::AtLeastOnce => DeliveryGuarantee::AtLeastOnce,
                DeliveryArg::ExactlyOnce => DeliveryGuarantee::ExactlyOnce,
            })
            .backoff(
                match self.backoff {
                    BackoffArg::Fixed => Backoff::Fixed,
                    BackoffArg::Exponential => Backoff::Exponential,
                },
                Duration::from_millis(self.initial_ms),
                Duration::from_millis(self.max_ms),
            )
            .jitter(!self.no_jitter)
            .timeout(Duration::from_millis(self.timeout_ms));
        for (name, value) in &self.config {
            b = b.config(name, value);
        }
        if let Some(mock) = mock {
            b = b.http_mock(mock);
        }
        b
    }

    /// Run the plugin on the messages. `Err` is a usage or setup error.
    pub fn run(&self) -> Result<TestReport, String> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let wasm = read(&self.plugin)?;
        let input = read(&self.input)?;
        let mut messages = Vec::new();
        for (n, line) in input.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let message = crate::api::decode_message(line)
                .map_err(|e| format!("{} line {}: {}", self.input.display(), n + 1, e.message))?;
            messages.push(message);
        }
        if messages.is_empty() {
            return Err(format!("{} holds no messages", self.input.display()));
        }
        let expectations: Expectations = match &self.expect {
            Some(path) => serde_json::from_slice(&read(path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?,
            None => Expectations::default(),
        };
        let mock = match &self.http_mock {
            Some(path) => {
                let text = String::from_utf8_lossy(&read(path)?).into_owned();
                Some(HttpMock::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        let started = Instant::now();
        let mut h = self
            .builder(&wasm, mock)
            .build()
            .map_err(|e| format!("{}: {e}", self.plugin.display()))?;
        let load_ms = started.elapsed().as_millis();
        let count = messages.len();
        h.publish_all(messages).map_err(|e| e.to_string())?;
        h.run();
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{}: loaded in {load_ms} ms; {count} messages; ordering {}, concurrency {}, \
             {}, max_attempts {}, {} backoff {}..{} ms\n",
            self.plugin.display(),
            name(self.ordering),
            self.concurrency,
            name(self.delivery),
            self.max_attempts,
            name(self.backoff),
            self.initial_ms,
            self.max_ms
        );
        let finals = write_trace(&mut text, h.attempts());
        let mut states: BTreeMap<&str, usize> = BTreeMap::new();
        for (state, _) in finals.values() {
            *states.entry(state.as_str()).or_default() += 1;
        }
        let summary: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ = writeln!(
            text,
            "summary: {}; {} attempts; virtual time {} ms",
            summary.join(", "),
            h.attempts().len(),
            h.elapsed_ms()
        );
        let kv = h.kv_entries("");
        if !kv.is_empty() {
            let _ = writeln!(text, "kv ({} keys):", kv.len());
            for (key, value) in kv.iter().take(KV_SHOWN) {
                let _ = writeln!(text, "  {key} = {}", shown(value));
            }
            if kv.len() > KV_SHOWN {
                let _ = writeln!(text, "  … {} more", kv.len() - KV_SHOWN);
            }
        }
        let failures = check(&expectations, &finals, &h);
        for failure in &failures {
            let _ = writeln!(text, "expectation not met: {failure}");
        }
        if self.expect.is_some() && failures.is_empty() {
            let _ = writeln!(text, "all expectations met");
        }
        Ok(TestReport {
            text,
            passed: failures.is_empty(),
        })
    }
}

/// Kv entries printed after the trace.
const KV_SHOWN: usize = 20;
/// Longest payload or value printed.
const SHOWN_BYTES: usize = 80;

/// A payload or value as printed: quoted text, cut at [`SHOWN_BYTES`].
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN_BYTES)]);
    let more = if bytes.len() > SHOWN_BYTES { "…" } else { "" };
    format!("{text:?}{more}")
}

/// Print each message's attempts, in input order; returns each message's
/// final state and attempt count.
fn write_trace(text: &mut String, attempts: &[Attempt]) -> BTreeMap<String, (String, u32)> {
    let mut order: Vec<(u32, u64, &str)> = Vec::new();
    let mut by_message: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for a in attempts {
        let entry = by_message.entry(&a.message_id).or_default();
        if entry.is_empty() {
            order.push((a.partition, a.offset, &a.message_id));
        }
        entry.push(a);
    }
    order.sort();
    let mut finals = BTreeMap::new();
    for (partition, offset, id) in order {
        let list = &by_message[id];
        let key = list[0]
            .key
            .as_deref()
            .map_or(String::new(), |k| format!("  key={k}"));
        let _ = writeln!(text, "{id}{key}  (partition {partition}, offset {offset})");
        for a in list {
            let error = a
                .error
                .as_deref()
                .map_or(String::new(), |e| format!("  {e}"));
            let _ = writeln!(
                text,
                "  #{:<3} +{:<9} {:<12}{error}",
                a.attempt,
                format!("{} ms", a.at_ms),
                a.outcome
            );
            for line in &a.logs {
                let _ = writeln!(text, "        | {line}");
            }
            for call in &a.http {
                let answer = match (&call.status, &call.error) {
                    (_, Some(error)) => error.clone(),
                    (Some(status), None) => status.to_string(),
                    (None, None) => "no answer".to_string(),
                };
                let _ = writeln!(text, "        ⇄ {} {} → {answer}", call.method, call.target);
            }
            for p in &a.published {
                let key = p
                    .key
                    .as_deref()
                    .map_or(String::new(), |k| format!(" key={k}"));
                let _ = writeln!(text, "        → {}{key} {}", p.topic, shown(&p.payload));
            }
        }
        let last = list.last().expect("one attempt at least");
        let counted = list.iter().filter(|a| a.state != "kv-conflict").count() as u32;
        let plural = if counted == 1 { "" } else { "s" };
        let _ = writeln!(text, "  {} after {counted} attempt{plural}\n", last.state);
        finals.insert(id.to_string(), (last.state.clone(), counted));
    }
    finals
}

fn check(
    expected: &Expectations,
    finals: &BTreeMap<String, (String, u32)>,
    h: &Harness,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (id, want) in &expected.messages {
        let Some((state, attempts)) = finals.get(id) else {
            failures.push(format!("message {id}: never delivered"));
            continue;
        };
        if let Some(s) = &want.state {
            if s != state {
                failures.push(format!("message {id}: {state}, expected {s}"));
            }
        }
        if let Some(n) = want.attempts {
            if n != *attempts {
                failures.push(format!("message {id}: {attempts} attempts, expected {n}"));
            }
        }
    }
    for (topic, n) in &expected.outputs {
        let got = h.outputs(topic).len();
        if got != *n {
            failures.push(format!("topic {topic}: {got} outputs, expected {n}"));
        }
    }
    for (key, want) in &expected.kv {
        let got = h.kv(key);
        if got.as_deref() != Some(want.as_bytes()) {
            let got = got.map_or("nothing".to_string(), |v| shown(&v));
            failures.push(format!("kv {key}: {got}, expected {want:?}"));
        }
    }
    failures
}
