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
//! 3. fenced commits of a subscription's state (`cluster::state`): a
//!    checkpoint, 10 effects and 2 kv writes each, one after another for
//!    `--seconds`: commit latency.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "common/nats_cluster.rs"]
mod nats_cluster;

use bytes::Bytes;
use common::{process_ticks, USER_HZ};
use std::time::{Duration, Instant};
use switchyard::cluster::log::{Record, TopicLog};
use switchyard::cluster::state::{Changes, KvWrite, SubscriptionState};

const USAGE: &str = "\
cluster: cluster mode's floor on a 3-node NATS cluster (./dev.sh bench-cluster [OPTIONS])

  --messages N   messages appended in batches of 1,000   [200000]
  --rate N       single appends per second               [500]
  --seconds N    seconds of single appends and commits   [5]";

struct Options {
    messages: u64,
    rate: u64,
    seconds: u64,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        messages: 200_000,
        rate: 500,
        seconds: 5,
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
            "--bench" => {}
            _ => return Err(USAGE.to_string()),
        }
    }
    Ok(o)
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e3
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0),
        samples.len()
    )
}

fn record(n: u64) -> Record {
    Record {
        producer_id: None,
        id: format!("m{n}"),
        key: Some(format!("k{}", n % 64)),
        headers: Vec::new(),
        payload: Bytes::from(vec![b'x'; 256]),
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

    // 3. Fenced commits of a subscription's state.
    let state = rt
        .block_on(SubscriptionState::open(client, "bench", 3))
        .expect("the state stream");
    let mut expected = 0;
    let mut versions = [0u64; 2];
    let mut commits = Vec::new();
    let until = Instant::now() + Duration::from_secs(options.seconds);
    while Instant::now() < until {
        let started = Instant::now();
        let changes = Changes {
            effects: (0..10).map(|_| Bytes::from(vec![b'e'; 256])).collect(),
            kv: (0..2)
                .map(|k| KvWrite {
                    key: format!("key{k}"),
                    value: Some(Bytes::from_static(b"1")),
                    read_version: versions[k],
                })
                .collect(),
            dead: Vec::new(),
        };
        expected = rt
            .block_on(state.commit("bench", 0, expected, Bytes::from_static(b"ckpt"), changes))
            .expect("a fenced commit");
        // The kv writes follow the checkpoint and the 10 effects.
        versions = [expected + 11, expected + 12];
        commits.push(started.elapsed());
    }
    println!(
        "fenced commits (checkpoint, 10 effects, 2 kv writes), one after another: {:.0}/s, {}",
        commits.len() as f64 / options.seconds as f64,
        percentiles(commits)
    );
}
