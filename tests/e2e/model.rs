//! A property test of the delivery engine against a reference model: random
//! keys, random per-attempt plugin outcomes (ack / retry / dead-letter / trap),
//! random concurrency and attempt limits, for each ordering mode, under
//! at-least-once and exactly-once delivery. Checked: every message ends acked
//! or dead-lettered exactly as the model says, none is acknowledged twice (its
//! acknowledgement is the plugin's publication, committed with the ack), and
//! per-key / per-partition order holds.

use crate::support::Server;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const PARTITIONS: u32 = 3;
const ORDERINGS: [&str; 3] = ["key", "partition", "none"];
const STEPS: [&str; 4] = ["a", "r", "d", "t"];
const DELIVERIES: [&str; 2] = ["at-least-once", "exactly-once"];

#[derive(Debug, Clone)]
struct Case {
    /// Per message: key index and the outcome script (indices into STEPS).
    messages: Vec<(usize, Vec<usize>)>,
    max_attempts: u32,
    concurrency: u32,
    ordering: usize,
    delivery: usize,
}

#[derive(Debug, PartialEq)]
enum Expected {
    /// Acknowledged at this attempt.
    Acked(u32),
    /// Dead-lettered after this many attempts.
    Dead(u32),
}

/// The reference model: what the script and the attempt limit imply.
fn expected(script: &[usize], max_attempts: u32) -> Expected {
    for attempt in 1..=max_attempts {
        let step = script[(attempt as usize - 1).min(script.len() - 1)];
        match STEPS[step] {
            "a" => return Expected::Acked(attempt),
            "d" => return Expected::Dead(attempt),
            _ => {}
        }
    }
    Expected::Dead(max_attempts)
}

fn cases() -> impl Strategy<Value = Case> {
    let message = (0usize..5, proptest::collection::vec(0usize..4, 1..=3));
    (
        proptest::collection::vec(message, 1..=40),
        1u32..=4,
        1u32..=8,
        0usize..3,
        0usize..2,
    )
        .prop_map(
            |(messages, max_attempts, concurrency, ordering, delivery)| Case {
                messages,
                max_attempts,
                concurrency,
                ordering,
                delivery,
            },
        )
}

fn check_case(s: &Server, n: usize, case: &Case) -> Result<(), TestCaseError> {
    let topic = format!("model{n}");
    let ordering = ORDERINGS[case.ordering];
    let delivery = DELIVERIES[case.delivery];
    s.topic(&topic, PARTITIONS);
    s.topic(&format!("{topic}.trace"), PARTITIONS);
    s.subscribe(
        &topic,
        json!({"topic": topic, "plugin": "scripted", "ordering": ordering, "delivery": delivery,
               "concurrency": case.concurrency,
               "retry": {"max_attempts": case.max_attempts, "initial_ms": 1, "max_ms": 4}}),
    );
    let messages: Vec<Value> = case
        .messages
        .iter()
        .enumerate()
        .map(|(i, (key, script))| {
            let script: Vec<&str> = script.iter().map(|s| STEPS[*s]).collect();
            json!({"key": format!("k{key}"), "payload": format!("m{i}|{}", script.join(","))})
        })
        .collect();
    let placed = s.publish(&topic, messages);
    let model: Vec<Expected> = case
        .messages
        .iter()
        .map(|(_, script)| expected(script, case.max_attempts))
        .collect();
    let acked = model
        .iter()
        .filter(|e| matches!(e, Expected::Acked(_)))
        .count();
    let dead = model.len() - acked;
    // Wait until every message is finished, whatever the outcome, then compare.
    let total = model.len() as u64;
    let st = s.wait_stats(&topic, LIMIT, |st| {
        let finished =
            st["acked"].as_u64().unwrap_or(0) + st["dead_lettered"].as_u64().unwrap_or(0);
        finished >= total && st["lag"] == 0
    });
    prop_assert_eq!(st["acked"].as_u64(), Some(acked as u64), "acked count");
    prop_assert_eq!(
        st["dead_lettered"].as_u64(),
        Some(dead as u64),
        "dead-lettered count"
    );

    // Acknowledgements, in commit order per trace partition.
    let mut seen: HashMap<usize, u32> = HashMap::new();
    let mut order: BTreeMap<(String, u32), Vec<usize>> = BTreeMap::new();
    for p in 0..PARTITIONS {
        for m in s.read_partition(&format!("{topic}.trace"), p) {
            let text = m["payload"].as_str().unwrap_or_default();
            let (tag, attempt) = text.split_once('|').unwrap();
            let index: usize = tag[1..].parse().unwrap();
            if delivery == "exactly-once" {
                let source = placed[index]["id"].as_str().unwrap();
                let derived = format!("{topic}/{topic}/{source}/0");
                prop_assert_eq!(m["id"].as_str(), Some(derived.as_str()), "derived id");
            }
            let attempt: u32 = attempt.parse().unwrap();
            prop_assert!(
                seen.insert(index, attempt).is_none(),
                "m{} acknowledged twice",
                index
            );
            let key = m["key"].as_str().unwrap_or_default().to_string();
            let group = if ordering == "partition" {
                String::new()
            } else {
                key
            };
            order.entry((group, p)).or_default().push(index);
        }
    }
    for (i, e) in model.iter().enumerate() {
        match e {
            Expected::Acked(attempt) => {
                prop_assert_eq!(
                    seen.get(&i),
                    Some(attempt),
                    "m{} acked at its scripted attempt",
                    i
                )
            }
            Expected::Dead(_) => prop_assert!(!seen.contains_key(&i), "m{} must not be acked", i),
        }
    }
    // Same key (or same partition) acknowledged in offset order.
    if ordering != "none" {
        let offset = |i: usize| placed[i]["offset"].as_u64().unwrap();
        for ((group, p), indices) in &order {
            let offsets: Vec<u64> = indices.iter().map(|i| offset(*i)).collect();
            let mut sorted = offsets.clone();
            sorted.sort();
            prop_assert_eq!(
                &offsets,
                &sorted,
                "{} order broken in {:?}/{}",
                ordering,
                group,
                p
            );
        }
    }
    // Dead letters: exactly the model's, each with its attempts.
    let letters = s.dead_letters(&topic);
    prop_assert_eq!(letters.len(), dead);
    for d in letters {
        let text = d["payload"].as_str().unwrap_or_default();
        let index: usize = text.split('|').next().unwrap()[1..].parse().unwrap();
        let attempts = d["attempts"].as_array().map_or(0, |a| a.len()) as u32;
        prop_assert_eq!(
            &model[index],
            &Expected::Dead(attempts),
            "m{} dead letter",
            index
        );
    }
    Ok(())
}

/// delivery.md D2, D3, D4, D5, D6, D10, D18: the engine agrees with the model.
#[test]
fn delivery_engine_agrees_with_the_model() {
    let s = Server::start();
    s.deploy("scripted", "scripted");
    let mut runner = TestRunner::new(Config {
        cases: 64,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let n = AtomicUsize::new(0);
    let result = runner.run(&cases(), |case| {
        check_case(&s, n.fetch_add(1, Ordering::Relaxed), &case)
    });
    if let Err(e) = result {
        panic!("{e}\n{}", s.log());
    }
}
