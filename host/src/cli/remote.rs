//! Client commands: they reach a host only over its HTTP API (`--server`,
//! `SWITCHYARD_URL`; `--token`, `SWITCHYARD_TOKEN`) and print a table, JSON
//! or YAML (`-o`). Exit status 0 on success, 1 when the host refuses (its
//! error code and message on stderr) or cannot be reached, 2 on a usage
//! error.

use crate::api::{Client, ClientError};
use clap::{Args, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::{json, Map, Value};
use std::io::{BufRead, IsTerminal as _, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the host is and how to print its answers (every client command).
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The host's base URL.
    #[arg(
        long,
        env = "SWITCHYARD_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub server: String,
    /// Bearer token (the host's admin, publish, read or consume token).
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// A CA certificate (PEM) to trust for an https:// server, besides the
    /// webpki roots.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
}

/// A group of client commands, with where to find the host.
#[derive(Debug, Args)]
pub struct On<C: Subcommand> {
    #[command(subcommand)]
    pub command: C,
    #[command(flatten)]
    pub remote: Remote,
}

/// One message's delivery record in a subscription.
#[derive(Debug, Args)]
pub struct TraceArgs {
    pub subscription: String,
    /// The message id.
    pub id: String,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// Topics: create, list, inspect, update and delete.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    ///
    /// Example: switchyard topic create orders --partitions 4
    Create {
        name: String,
        #[arg(long)]
        partitions: Option<u32>,
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        dedup_window_ms: Option<u64>,
    },
    /// List topics with their partitions and message counts.
    List,
    /// One topic: partitions, offsets, settings.
    ///
    /// Example: switchyard topic get orders -o json
    Get { name: String },
    /// Change a topic's retention or dedup window.
    ///
    /// Example: switchyard topic update orders --retention-ms 86400000
    Update {
        name: String,
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        dedup_window_ms: Option<u64>,
    },
    /// Delete a topic and its messages (--force: and the subscriptions that
    /// name it).
    ///
    /// Example: switchyard topic delete orders --force
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

/// Publish messages.
///
/// Example: switchyard publish orders --key user-7 '{"total": 12}'
/// Example: switchyard publish orders --lines --file events.jsonl
#[derive(Debug, Args)]
pub struct PublishArgs {
    pub topic: String,
    /// The payload (text); `-` reads stdin. Or use --file.
    pub payload: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    /// Producer id: a repeat within the topic's dedup window is not stored again.
    #[arg(long)]
    pub id: Option<String>,
    /// A header `name=value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    #[arg(long)]
    pub delay_ms: Option<u64>,
    /// Read the payload from a file (with --lines: the lines).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// One message per line (of --file, or stdin): a JSON object with
    /// `payload` (and `key`, `id`, `headers`, `delay_ms`) is taken as such,
    /// any other line is the payload. Sent in batches of 500.
    #[arg(long)]
    pub lines: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// Read a partition's messages.
///
/// Example: switchyard read orders --partition 2 --from 0 --limit 10
#[derive(Debug, Args)]
pub struct ReadArgs {
    pub topic: String,
    #[arg(long, default_value_t = 0)]
    pub partition: u32,
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    #[command(flatten)]
    pub remote: Remote,
}

/// Plugins: deploy versions, list, inspect, delete.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Upload a component as the next version of NAME.
    ///
    /// Example: switchyard plugin deploy billing target/wasm32-wasip2/release/billing.wasm
    Deploy {
        name: String,
        file: PathBuf,
    },
    List,
    Get {
        name: String,
    },
    /// Delete a version (NAME@N) or the whole plugin.
    Delete {
        reference: String,
    },
}

/// Subscriptions: create, list, inspect, pause, resume, delete.
#[derive(Debug, Subcommand)]
pub enum SubCommand {
    /// Create (or update) a subscription, from flags or a JSON spec file.
    ///
    /// Example: switchyard sub create billing --topic orders --plugin billing --concurrency 8
    Create {
        name: String,
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        plugin: Option<String>,
        /// key, partition or none.
        #[arg(long)]
        ordering: Option<String>,
        #[arg(long)]
        concurrency: Option<u32>,
        /// at-most-once, at-least-once or exactly-once.
        #[arg(long)]
        delivery: Option<String>,
        /// The whole spec as JSON, or YAML (`.yaml`, `.yml`); flags given as
        /// well override its fields.
        #[arg(short = 'f', long = "file")]
        spec: Option<PathBuf>,
    },
    /// List subscriptions with their state, lag and counts.
    List,
    Get {
        name: String,
    },
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    Delete {
        name: String,
    },
}

/// Dead letters of a subscription.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Example: switchyard dlq list billing
    List { subscription: String },
    /// One dead letter: the message, every attempt, the plugin's logs.
    Show { subscription: String, id: String },
    /// Send dead letters (all, or these ids) back into the subscription.
    Redrive {
        subscription: String,
        ids: Vec<String>,
    },
    /// Delete dead letters (all, or these ids).
    Purge {
        subscription: String,
        ids: Vec<String>,
    },
}

/// Run a client command and print its answer; the exit status.
pub fn run(remote: &Remote, command: RemoteCommand) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchyard: cannot start: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(async {
        let ca = match &remote.ca_cert {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| Failure::Usage(format!("--ca-cert {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let client = Client::new(&remote.server, remote.token.clone(), ca.as_deref())?;
        command.run(&client).await
    });
    match result {
        Ok(shown) => {
            print!("{}", shown.render(remote.output));
            0
        }
        Err(Failure::Client(ClientError::Api { code, message, .. })) => {
            eprintln!("switchyard: {code}: {message}");
            1
        }
        Err(Failure::Client(ClientError::Transport(message))) => {
            eprintln!("switchyard: {message}");
            1
        }
        Err(Failure::Usage(message)) => {
            eprintln!("switchyard: {message}");
            2
        }
    }
}

/// A client command, parsed.
#[derive(Debug)]
pub enum RemoteCommand {
    Topic(TopicCommand),
    Publish(PublishArgs),
    Read(ReadArgs),
    Plugin(PluginCommand),
    Sub(SubCommand),
    Dlq(DlqCommand),
    Trace(TraceArgs),
    Status,
}

enum Failure {
    Client(ClientError),
    Usage(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

/// What a command shows: the answer, and how to lay it out as a table.
struct Shown {
    value: Value,
    table: Table,
}

enum Table {
    /// Rows from an array under `key` of the answer, these columns.
    Rows(&'static str, &'static [Column]),
    /// One object, as `field value` lines.
    Fields,
    /// A sentence.
    Line(String),
}

/// A column: its heading and how to read it from a row.
type Column = (&'static str, fn(&Value) -> String);

impl Shown {
    fn render(&self, output: Output) -> String {
        match output {
            Output::Json => format!(
                "{}\n",
                serde_json::to_string_pretty(&self.value).expect("JSON serializes")
            ),
            Output::Yaml => yaml(&self.value),
            Output::Table => match &self.table {
                Table::Rows(key, columns) => {
                    let rows = self.value[*key].as_array().cloned().unwrap_or_default();
                    table(columns, &rows)
                }
                Table::Fields => fields(&self.value),
                Table::Line(line) => format!("{line}\n"),
            },
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn sum(v: &Value) -> u64 {
    v.as_array()
        .map_or(0, |a| a.iter().filter_map(Value::as_u64).sum())
}

fn table(columns: &[Column], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|(_, read)| read(row)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (head, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([head.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(|(h, _)| h.to_string()).collect());
    for row in cells {
        out.push_str(&line(row));
    }
    out
}

fn fields(value: &Value) -> String {
    let Some(map) = value.as_object() else {
        return format!("{}\n", text(value));
    };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    map.iter()
        .map(|(k, v)| format!("{k:<width$}  {}\n", text(v)))
        .collect()
}

fn yaml(value: &Value) -> String {
    serde_yaml_ng::to_string(value).expect("a JSON value writes as YAML")
}

const TOPIC_COLUMNS: &[Column] = &[
    ("NAME", |t| text(&t["name"])),
    ("PARTITIONS", |t| text(&t["partitions"])),
    ("MESSAGES", |t| sum(&t["offsets"]).to_string()),
    ("BYTES", |t| sum(&t["bytes"]).to_string()),
    ("RETENTION_MS", |t| text(&t["retention_ms"])),
    ("DEDUP_WINDOW_MS", |t| text(&t["dedup_window_ms"])),
];

const SUB_COLUMNS: &[Column] = &[
    ("NAME", |s| text(&s["name"])),
    ("TOPIC", |s| text(&s["topic"])),
    ("PLUGIN", |s| text(&s["plugin"])),
    ("STATE", |s| text(&s["state"])),
    ("DELIVERY", |s| text(&s["delivery"])),
    ("LAG", |s| text(&s["stats"]["lag"])),
    ("IN_FLIGHT", |s| text(&s["stats"]["in_flight"])),
    ("ACKED", |s| text(&s["stats"]["acked"])),
    ("ACKED/S", |s| text(&s["stats"]["acked_per_sec"])),
    ("DEAD", |s| text(&s["stats"]["dead_lettered"])),
];

const PLUGIN_COLUMNS: &[Column] = &[
    ("NAME", |p| text(&p["name"])),
    ("LATEST", |p| text(&p["latest"])),
    ("VERSIONS", |p| {
        p["versions"].as_array().map_or(0, Vec::len).to_string()
    }),
];

const VERSION_COLUMNS: &[Column] = &[
    ("VERSION", |v| text(&v["version"])),
    ("DIGEST", |v| text(&v["digest"])),
    ("SIZE", |v| text(&v["size"])),
    ("LANGUAGES", |v| {
        let names = v["languages"].as_array().map_or(&[][..], Vec::as_slice);
        let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    }),
];

const MESSAGE_COLUMNS: &[Column] = &[
    ("OFFSET", |m| text(&m["offset"])),
    ("ID", |m| text(&m["id"])),
    ("KEY", |m| text(&m["key"])),
    ("PAYLOAD", |m| {
        let p = text(m.get("payload").unwrap_or(&m["payload_base64"]));
        if p.chars().count() > 60 {
            format!("{}…", p.chars().take(59).collect::<String>())
        } else {
            p
        }
    }),
];

const DEAD_COLUMNS: &[Column] = &[
    ("ID", |d| text(&d["id"])),
    ("TOPIC", |d| text(&d["topic"])),
    ("ATTEMPTS", |d| {
        d["attempts"].as_array().map_or(0, Vec::len).to_string()
    }),
    ("REASON", |d| text(&d["reason"])),
];

const ATTEMPT_COLUMNS: &[Column] = &[
    ("ATTEMPT", |a| text(&a["attempt"])),
    ("OUTCOME", |a| text(&a["outcome"])),
    ("DURATION_MS", |a| {
        format!(
            "{:.1}",
            a["duration_us"].as_u64().unwrap_or(0) as f64 / 1000.0
        )
    }),
    ("ERROR", |a| text(&a["error"])),
];

const PUBLISHED_COLUMNS: &[Column] = &[
    ("ID", |r| text(&r["id"])),
    ("PARTITION", |r| text(&r["partition"])),
    ("OFFSET", |r| text(&r["offset"])),
    ("DUPLICATE", |r| text(&r["duplicate"])),
];

fn enc(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn rows(value: Value, key: &'static str, columns: &'static [Column]) -> Shown {
    Shown {
        value,
        table: Table::Rows(key, columns),
    }
}

fn one(value: Value) -> Shown {
    Shown {
        value,
        table: Table::Fields,
    }
}

fn line(value: Value, line: String) -> Shown {
    Shown {
        value,
        table: Table::Line(line),
    }
}

impl RemoteCommand {
    async fn run(self, c: &Client) -> Result<Shown, Failure> {
        match self {
            RemoteCommand::Topic(t) => topic(c, t).await,
            RemoteCommand::Publish(p) => publish(c, p).await,
            RemoteCommand::Read(r) => {
                let path = format!(
                    "/v1/topics/{}/partitions/{}/messages?from={}&limit={}",
                    enc(&r.topic),
                    r.partition,
                    r.from,
                    r.limit
                );
                Ok(rows(c.get(&path).await?, "messages", MESSAGE_COLUMNS))
            }
            RemoteCommand::Plugin(p) => plugin(c, p).await,
            RemoteCommand::Sub(s) => sub(c, s).await,
            RemoteCommand::Dlq(d) => dlq(c, d).await,
            RemoteCommand::Trace(TraceArgs {
                subscription, id, ..
            }) => {
                let path = format!(
                    "/v1/subscriptions/{}/messages/{}",
                    enc(&subscription),
                    enc(&id)
                );
                let entry = c.get(&path).await?;
                let attempts = entry["attempts"].as_array().cloned().unwrap_or_default();
                let shown = format!(
                    "{id} on {} partition {} offset {}: {}\n{}",
                    text(&entry["topic"]),
                    text(&entry["partition"]),
                    text(&entry["offset"]),
                    text(&entry["state"]),
                    table(ATTEMPT_COLUMNS, &attempts)
                );
                Ok(line(entry, shown.trim_end().to_string()))
            }
            RemoteCommand::Status => status(c).await,
        }
    }
}

async fn topic(c: &Client, command: TopicCommand) -> Result<Shown, Failure> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            retention_ms,
            dedup_window_ms,
        } => {
            let mut spec = Map::new();
            let mut set = |k: &str, v: Option<u64>| {
                if let Some(v) = v {
                    spec.insert(k.into(), v.into());
                }
            };
            set("partitions", partitions.map(u64::from));
            set("retention_ms", retention_ms);
            set("dedup_window_ms", dedup_window_ms);
            let path = format!("/v1/topics/{}", enc(&name));
            Ok(one(c
                .send_json(Method::PUT, &path, &Value::Object(spec))
                .await?))
        }
        TopicCommand::List => Ok(rows(c.get("/v1/topics").await?, "topics", TOPIC_COLUMNS)),
        TopicCommand::Get { name } => Ok(one(c.get(&format!("/v1/topics/{}", enc(&name))).await?)),
        TopicCommand::Update {
            name,
            retention_ms,
            dedup_window_ms,
        } => {
            let path = format!("/v1/topics/{}", enc(&name));
            let current = c.get(&path).await?;
            let mut spec = json!({
                "partitions": current["partitions"],
                "retention_ms": current["retention_ms"],
                "dedup_window_ms": current["dedup_window_ms"],
            });
            if let Some(v) = retention_ms {
                spec["retention_ms"] = v.into();
            }
            if let Some(v) = dedup_window_ms {
                spec["dedup_window_ms"] = v.into();
            }
            Ok(one(c.send_json(Method::PUT, &path, &spec).await?))
        }
        TopicCommand::Delete { name, force } => {
            let path = format!(
                "/v1/topics/{}{}",
                enc(&name),
                if force { "?force=true" } else { "" }
            );
            let answer = c.call(Method::DELETE, &path, None).await?;
            let with = answer["subscriptions"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|a| {
                    let names: Vec<String> = a.iter().map(text).collect();
                    format!(" with subscription(s) {}", names.join(", "))
                })
                .unwrap_or_default();
            Ok(line(answer, format!("deleted topic {name}{with}")))
        }
    }
}

/// A message object from a `--lines` line: a JSON object with a payload is
/// taken as such, anything else is the payload.
fn line_message(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) if m.contains_key("payload") || m.contains_key("payload_base64") => {
            Value::Object(m)
        }
        _ => json!({ "payload": text }),
    }
}

async fn publish(c: &Client, p: PublishArgs) -> Result<Shown, Failure> {
    let path = format!("/v1/topics/{}/messages", enc(&p.topic));
    let read_input = |file: &Option<PathBuf>| -> Result<Box<dyn BufRead>, Failure> {
        match file {
            Some(f) => std::fs::File::open(f)
                .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn BufRead>)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", f.display()))),
            None => Ok(Box::new(std::io::BufReader::new(std::io::stdin()))),
        }
    };
    if p.lines {
        let mut input = read_input(&p.file)?;
        let (mut sent, mut duplicates, mut batch) = (0u64, 0u64, Vec::new());
        let mut text = String::new();
        loop {
            text.clear();
            let n = input
                .read_line(&mut text)
                .map_err(|e| Failure::Usage(format!("cannot read the input: {e}")))?;
            let line = text.trim_end_matches(['\n', '\r']);
            if n > 0 && !line.is_empty() {
                batch.push(line_message(line));
            }
            if batch.len() == 500 || (n == 0 && !batch.is_empty()) {
                let answer = c
                    .send_json(
                        Method::POST,
                        &path,
                        &json!({ "messages": std::mem::take(&mut batch) }),
                    )
                    .await?;
                let results = answer["results"].as_array().cloned().unwrap_or_default();
                sent += results.len() as u64;
                duplicates += results.iter().filter(|r| r["duplicate"] == true).count() as u64;
                if std::io::stderr().is_terminal() {
                    eprint!("\rpublished {sent}");
                }
            }
            if n == 0 {
                break;
            }
        }
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        let summary = json!({"topic": p.topic, "published": sent, "duplicates": duplicates});
        let text = format!(
            "published {sent} messages to {} ({duplicates} duplicates)",
            p.topic
        );
        return Ok(line(summary, text));
    }
    let payload = match (&p.payload, &p.file) {
        (Some(text), None) if text != "-" => text.clone().into_bytes(),
        (None, Some(_)) | (Some(_), None) => {
            let mut bytes = Vec::new();
            read_input(&p.file)?
                .read_to_end(&mut bytes)
                .map_err(|e| Failure::Usage(format!("cannot read the payload: {e}")))?;
            bytes
        }
        (Some(_), Some(_)) => {
            return Err(Failure::Usage("give a payload or --file, not both".into()))
        }
        (None, None) => {
            return Err(Failure::Usage(
                "no payload: give one, `-` for stdin, or --file".into(),
            ))
        }
    };
    let mut message = match String::from_utf8(payload) {
        Ok(text) => json!({ "payload": text }),
        Err(bytes) => {
            use base64::Engine as _;
            json!({ "payload_base64": base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes()) })
        }
    };
    if let Some(key) = p.key {
        message["key"] = key.into();
    }
    if let Some(id) = p.id {
        message["id"] = id.into();
    }
    if let Some(ms) = p.delay_ms {
        message["delay_ms"] = ms.into();
    }
    if !p.headers.is_empty() {
        let mut headers = Map::new();
        for h in &p.headers {
            let (k, v) = h
                .split_once('=')
                .ok_or_else(|| Failure::Usage(format!("header {h:?}: write it as name=value")))?;
            headers.insert(k.to_string(), v.into());
        }
        message["headers"] = Value::Object(headers);
    }
    let answer = c
        .send_json(Method::POST, &path, &json!({ "messages": [message] }))
        .await?;
    Ok(rows(answer, "results", PUBLISHED_COLUMNS))
}

async fn plugin(c: &Client, command: PluginCommand) -> Result<Shown, Failure> {
    match command {
        PluginCommand::Deploy { name, file } => {
            let wasm = std::fs::read(&file)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
            let path = format!("/v1/plugins/{}", enc(&name));
            let total = wasm.len() as u64;
            let sent = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let upload = c.upload(Method::PUT, &path, "application/wasm", wasm, sent.clone());
            let answer = if std::io::stderr().is_terminal() {
                tokio::pin!(upload);
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut uploaded = None;
                loop {
                    tokio::select! {
                        answer = &mut upload => break answer,
                        _ = tick.tick() => {
                            let done = sent.load(Ordering::Relaxed);
                            eprint!("\r\x1b[K{}", deploy_progress(done, total, &mut uploaded, started));
                        }
                    }
                }
            } else {
                eprintln!(
                    "uploading {} ({total} bytes) and compiling…",
                    file.display()
                );
                upload.await
            };
            if std::io::stderr().is_terminal() {
                eprint!("\r\x1b[K");
            }
            let answer = answer?;
            let latest = text(&answer["latest"]);
            let text = format!(
                "deployed {name}@{latest} ({} in {:.1} s)",
                mib(total),
                started.elapsed().as_secs_f64()
            );
            Ok(line(answer, text))
        }
        PluginCommand::List => Ok(rows(c.get("/v1/plugins").await?, "plugins", PLUGIN_COLUMNS)),
        PluginCommand::Get { name } => Ok(rows(
            c.get(&format!("/v1/plugins/{}", enc(&name))).await?,
            "versions",
            VERSION_COLUMNS,
        )),
        PluginCommand::Delete { reference } => {
            let answer = c
                .call(
                    Method::DELETE,
                    &format!("/v1/plugins/{}", enc(&reference)),
                    None,
                )
                .await?;
            Ok(line(answer, format!("deleted {reference}")))
        }
    }
}

async fn sub(c: &Client, command: SubCommand) -> Result<Shown, Failure> {
    let at = |name: &str| format!("/v1/subscriptions/{}", enc(name));
    match command {
        SubCommand::Create {
            name,
            topic,
            plugin,
            ordering,
            concurrency,
            delivery,
            spec,
        } => {
            let mut body = match spec {
                Some(file) => {
                    let text = std::fs::read_to_string(&file).map_err(|e| {
                        Failure::Usage(format!("cannot read {}: {e}", file.display()))
                    })?;
                    let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
                    let parsed = if yaml {
                        serde_yaml_ng::from_str::<Value>(&text).map_err(|e| e.to_string())
                    } else {
                        serde_json::from_str::<Value>(&text).map_err(|e| e.to_string())
                    };
                    parsed.map_err(|e| {
                        Failure::Usage(format!(
                            "{} is not a subscription spec: {e}",
                            file.display()
                        ))
                    })?
                }
                None => json!({}),
            };
            let fields = [
                ("topic", topic.map(Value::from)),
                ("plugin", plugin.map(Value::from)),
                ("ordering", ordering.map(Value::from)),
                ("concurrency", concurrency.map(Value::from)),
                ("delivery", delivery.map(Value::from)),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            Ok(one(c.send_json(Method::PUT, &at(&name), &body).await?))
        }
        SubCommand::List => Ok(rows(
            c.get("/v1/subscriptions").await?,
            "subscriptions",
            SUB_COLUMNS,
        )),
        SubCommand::Get { name } => {
            let info = c.get(&at(&name)).await?;
            let wrapped = json!({ "subscriptions": [info.clone()] });
            let text = table(
                SUB_COLUMNS,
                wrapped["subscriptions"].as_array().expect("array"),
            );
            Ok(line(info, text.trim_end().to_string()))
        }
        SubCommand::Pause { name } => {
            let answer = c
                .call(Method::POST, &format!("{}/pause", at(&name)), None)
                .await?;
            Ok(line(answer, format!("paused {name}")))
        }
        SubCommand::Resume { name } => {
            let answer = c
                .call(Method::POST, &format!("{}/resume", at(&name)), None)
                .await?;
            Ok(line(answer, format!("resumed {name}")))
        }
        SubCommand::Delete { name } => {
            let answer = c.call(Method::DELETE, &at(&name), None).await?;
            Ok(line(answer, format!("deleted subscription {name}")))
        }
    }
}

async fn dlq(c: &Client, command: DlqCommand) -> Result<Shown, Failure> {
    let at = |sub: &str| format!("/v1/subscriptions/{}/dead-letters", enc(sub));
    match command {
        DlqCommand::List { subscription } => Ok(rows(
            c.get(&format!("{}?limit=1000", at(&subscription))).await?,
            "dead_letters",
            DEAD_COLUMNS,
        )),
        DlqCommand::Show { subscription, id } => {
            let letter = c
                .get(&format!("{}/{}", at(&subscription), enc(&id)))
                .await?;
            let attempts = letter["attempts"].as_array().cloned().unwrap_or_default();
            let text = format!(
                "{id} on {} partition {} offset {}: {}\npayload: {}\n{}",
                text(&letter["topic"]),
                text(&letter["partition"]),
                text(&letter["offset"]),
                text(&letter["reason"]),
                text(letter.get("payload").unwrap_or(&letter["payload_base64"])),
                table(ATTEMPT_COLUMNS, &attempts).trim_end()
            );
            Ok(line(letter, text))
        }
        DlqCommand::Redrive { subscription, ids } => {
            let body = if ids.is_empty() {
                json!({})
            } else {
                json!({ "ids": ids })
            };
            let answer = c
                .send_json(
                    Method::POST,
                    &format!("{}/redrive", at(&subscription)),
                    &body,
                )
                .await?;
            let text = format!(
                "redrove {} dead letters of {subscription}",
                text(&answer["redriven"])
            );
            Ok(line(answer, text))
        }
        DlqCommand::Purge { subscription, ids } => {
            let mut purged = 0;
            let paths: Vec<String> = if ids.is_empty() {
                vec![at(&subscription)]
            } else {
                ids.iter()
                    .map(|id| format!("{}/{}", at(&subscription), enc(id)))
                    .collect()
            };
            for path in paths {
                let answer = c.call(Method::DELETE, &path, None).await?;
                purged += answer["purged"].as_u64().unwrap_or(0);
            }
            let text = format!("purged {purged} dead letters of {subscription}");
            Ok(line(json!({ "purged": purged }), text))
        }
    }
}

async fn status(c: &Client) -> Result<Shown, Failure> {
    let ready = c.get("/readyz").await?;
    let topics = c.get("/v1/topics").await?;
    let subs = c.get("/v1/subscriptions").await?;
    let value = json!({
        "ready": ready,
        "topics": topics["topics"],
        "subscriptions": subs["subscriptions"],
    });
    let text = format!(
        "host {} ({})\n\n{}\n{}",
        c.base(),
        text(&ready["status"]),
        table(
            TOPIC_COLUMNS,
            topics["topics"].as_array().map_or(&[][..], Vec::as_slice)
        ),
        table(
            SUB_COLUMNS,
            subs["subscriptions"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
        )
    );
    Ok(line(value, text.trim_end().to_string()))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The deploy's progress line: the upload's bytes, then how long the host
/// has been compiling (`uploaded` is when the last byte went).
fn deploy_progress(
    done: u64,
    total: u64,
    uploaded: &mut Option<Instant>,
    started: Instant,
) -> String {
    if done < total {
        let percent = done * 100 / total.max(1);
        return format!("uploading {} of {} ({percent}%)", mib(done), mib(total));
    }
    let since = *uploaded.get_or_insert_with(Instant::now);
    format!(
        "uploaded {} in {:.1} s; compiling… {:.1} s",
        mib(total),
        since.duration_since(started).as_secs_f64(),
        since.elapsed().as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_shows_the_upload_then_the_compile() {
        let started = Instant::now();
        let mut uploaded = None;
        let total = 20 << 20;
        let line = deploy_progress(5 << 20, total, &mut uploaded, started);
        assert_eq!(line, "uploading 5.0 MiB of 20.0 MiB (25%)");
        assert!(uploaded.is_none());
        let line = deploy_progress(total, total, &mut uploaded, started);
        assert!(
            line.starts_with("uploaded 20.0 MiB in ") && line.contains("; compiling… "),
            "{line}"
        );
        let when = uploaded.expect("the upload's end is noted");
        deploy_progress(total, total, &mut uploaded, started);
        assert_eq!(uploaded, Some(when), "noted once");
    }
}
