//! Key layout. Names (topics, subscriptions) never contain NUL, so NUL
//! separates them; numbers are big-endian so keys sort in numeric order.
//!
//! - log:      topic NUL partition:u32 offset:u64
//! - progress: tag subscription NUL topic NUL partition:u32 [offset:u64]
//!   (tag `w` a partition's progress: watermark:u64 then the finished ranges
//!   above it as LEB128 pairs (gap from the previous end, length); `d` a done
//!   marker of an earlier host; `r` retry state, `q` redriven message, `c`
//!   counters)
//! - progress: `l` subscription NUL message-id → ledger entry
//! - progress: `p` subscription NUL topic NUL partition:u32 offset:u64
//!   message-id → nothing: the ledger by position (what retention trimmed
//!   is found without the messages)
//! - progress: `k` subscription NUL kv-key → a plugin's kv value (raw bytes)
//! - progress: `x` subscription NUL id-length:u32 message-id topic NUL
//!   partition:u32 offset:u64 → nothing: the dead letters by message id
//! - dead:     subscription NUL topic NUL partition:u32 offset:u64
//! - meta:     kind NUL name
//! - dedup:    topic NUL id → expires_at:u64 partition:u32 offset:u64

pub(super) const WATERMARK: u8 = b'w';
pub(super) const DONE: u8 = b'd';
pub(super) const RETRY: u8 = b'r';
pub(super) const COUNTERS: u8 = b'c';
pub(super) const REDRIVE: u8 = b'q';
/// Per-message delivery ledger, keyed by message id (not part of progress).
pub(super) const LEDGER: u8 = b'l';
/// The index of a subscription's ledger by message position.
pub(super) const LEDGER_AT: u8 = b'p';
/// A plugin's key-value state, scoped to the subscription.
pub(super) const KV: u8 = b'k';
/// The index of a subscription's dead letters by message id.
pub(super) const DEAD_ID: u8 = b'x';

pub(super) fn log_prefix(topic: &str, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 13);
    log_prefix_into(&mut k, topic, partition);
    k
}

fn log_prefix_into(out: &mut Vec<u8>, topic: &str, partition: u32) {
    out.extend_from_slice(topic.as_bytes());
    out.push(0);
    out.extend_from_slice(&partition.to_be_bytes());
}

pub(super) fn log(topic: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 13);
    log_into(&mut k, topic, partition, offset);
    k
}

/// [`log`] to the end of `out`.
pub(super) fn log_into(out: &mut Vec<u8>, topic: &str, partition: u32, offset: u64) {
    log_prefix_into(out, topic, partition);
    out.extend_from_slice(&offset.to_be_bytes());
}

/// A partition's progress record: the watermark, then each finished range
/// above it as (gap from the previous range's end, length) in LEB128.
pub(super) fn encode_progress(watermark: u64, done: &[(u64, u64)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + done.len() * 4);
    v.extend_from_slice(&watermark.to_be_bytes());
    let mut end = watermark;
    for &(from, to) in done {
        leb128(&mut v, from - end);
        leb128(&mut v, to - from);
        end = to;
    }
    v
}

/// The inverse of [`encode_progress`]; `None` if malformed. A bare 8-byte
/// watermark (an earlier host's record) has no ranges.
pub(super) fn decode_progress(value: &[u8]) -> Option<(u64, Vec<(u64, u64)>)> {
    let (mark, mut rest) = value.split_first_chunk::<8>()?;
    let watermark = u64::from_be_bytes(*mark);
    let mut done = Vec::new();
    let mut end = watermark;
    while !rest.is_empty() {
        let from = end.checked_add(read_leb128(&mut rest)?)?;
        let to = from.checked_add(read_leb128(&mut rest)?)?;
        done.push((from, to));
        end = to;
    }
    Some((watermark, done))
}

fn leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb128(input: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        n |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// The big-endian u64 a key (or value) ends in; `None` if it is too short.
pub(super) fn trailing_u64(key: &[u8]) -> Option<u64> {
    key.last_chunk::<8>().map(|tail| u64::from_be_bytes(*tail))
}

fn tagged(tag: u8, subscription: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(subscription.len() + 32);
    k.push(tag);
    k.extend_from_slice(subscription.as_bytes());
    k.push(0);
    k
}

/// Key ranges `[from, to)` holding everything of a subscription in the
/// progress column family (every tag, the ledger included).
pub(super) fn subscription_ranges(subscription: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        WATERMARK, DONE, RETRY, REDRIVE, COUNTERS, LEDGER, LEDGER_AT, KV, DEAD_ID,
    ]
    .iter()
    .map(|tag| {
        let from = tagged(*tag, subscription);
        let mut to = from.clone();
        *to.last_mut().expect("tagged keys end in NUL") = 1;
        (from, to)
    })
    .collect()
}

/// Where the index entries of a subscription's dead letters of message `id`
/// begin; `None`: every index entry of the subscription.
pub(super) fn dead_id_prefix(subscription: &str, id: Option<&str>) -> Vec<u8> {
    let mut k = tagged(DEAD_ID, subscription);
    if let Some(id) = id {
        k.extend_from_slice(&(id.len() as u32).to_be_bytes());
        k.extend_from_slice(id.as_bytes());
    }
    k
}

/// The index entry of a dead letter: its message id and position.
pub(super) fn dead_id(
    subscription: &str,
    id: &str,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Vec<u8> {
    let mut k = dead_id_prefix(subscription, Some(id));
    k.extend_from_slice(&log(topic, partition, offset));
    k
}

/// Split what follows [`dead_id_prefix`] (without an id) in an index key:
/// the id and the position. `None` if malformed.
pub(super) fn split_dead_id(rest: &[u8]) -> Option<(String, String, u32, u64)> {
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    let id = rest.get(..len)?;
    let (topic, partition, offset) = split_position(&rest[len..])?;
    Some((
        String::from_utf8_lossy(id).into_owned(),
        topic,
        partition,
        offset,
    ))
}

/// The subscription a dead-letter key belongs to, and the rest of the key.
pub(super) fn split_dead(key: &[u8]) -> Option<(&str, &[u8])> {
    let nul = key.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&key[..nul]).ok()?, &key[nul + 1..]))
}

/// Key range `[from, to)` of a subscription's dead letters.
/// Every log and dedup key of a topic: `topic NUL` up to `topic 0x01`.
pub(super) fn topic_range(topic: &str) -> (Vec<u8>, Vec<u8>) {
    let mut from = topic.as_bytes().to_vec();
    from.push(0);
    let mut to = from.clone();
    *to.last_mut().expect("ends in NUL") = 1;
    (from, to)
}

/// A subscription's progress, retry and redrive keys of one topic.
pub(super) fn topic_progress_ranges(subscription: &str, topic: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [WATERMARK, DONE, RETRY, REDRIVE]
        .iter()
        .map(|tag| {
            let mut from = tagged(*tag, subscription);
            let (topic_from, topic_to) = topic_range(topic);
            let mut to = from.clone();
            from.extend_from_slice(&topic_from);
            to.extend_from_slice(&topic_to);
            (from, to)
        })
        .collect()
}

pub(super) fn dead_range(subscription: &str) -> (Vec<u8>, Vec<u8>) {
    let from = dead_prefix(subscription);
    let mut to = from.clone();
    *to.last_mut().expect("dead prefix ends in NUL") = 1;
    (from, to)
}

pub(super) fn progress_prefixes(subscription: &str) -> [(u8, Vec<u8>); 5] {
    [WATERMARK, DONE, RETRY, REDRIVE, COUNTERS].map(|tag| (tag, tagged(tag, subscription)))
}

pub(super) fn progress(tag: u8, subscription: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = tagged(tag, subscription);
    k.extend_from_slice(&log_prefix(topic, partition));
    k
}

pub(super) fn progress_at(
    tag: u8,
    subscription: &str,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Vec<u8> {
    let mut k = progress(tag, subscription, topic, partition);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub(super) fn ledger(subscription: &str, id: &str) -> Vec<u8> {
    let mut k = tagged(LEDGER, subscription);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The ledger index entry of message `id` at `offset`.
pub(super) fn ledger_at(
    subscription: &str,
    topic: &str,
    partition: u32,
    offset: u64,
    id: &str,
) -> Vec<u8> {
    let mut k = progress_at(LEDGER_AT, subscription, topic, partition, offset);
    k.extend_from_slice(id.as_bytes());
    k
}

pub(super) fn kv(subscription: &str, key: &str) -> Vec<u8> {
    let mut k = tagged(KV, subscription);
    k.extend_from_slice(key.as_bytes());
    k
}

pub(super) fn counters(subscription: &str) -> Vec<u8> {
    tagged(COUNTERS, subscription)
}

/// Split `topic NUL partition` (the rest of a watermark key).
pub(super) fn split_topic_partition(rest: &[u8]) -> (String, u32) {
    let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let topic = String::from_utf8_lossy(&rest[..nul]).into_owned();
    let partition = rest
        .get(nul + 1..nul + 5)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0);
    (topic, partition)
}

/// Split `topic NUL partition offset`; `None` if too short for an offset.
pub(super) fn split_position(rest: &[u8]) -> Option<(String, u32, u64)> {
    let offset = trailing_u64(rest)?;
    let (topic, partition) = split_topic_partition(&rest[..rest.len() - 8]);
    Some((topic, partition, offset))
}

pub(super) fn dead_prefix(subscription: &str) -> Vec<u8> {
    let mut k = subscription.as_bytes().to_vec();
    k.push(0);
    k
}

pub(super) fn dead(subscription: &str, topic: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut k = dead_prefix(subscription);
    k.extend_from_slice(&log(topic, partition, offset));
    k
}

pub(super) fn meta(kind: &str, name: &str) -> Vec<u8> {
    let mut k = kind.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn dedup(topic: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 1 + id.len());
    dedup_into(&mut k, topic, id);
    k
}

/// [`dedup`] to the end of `out`.
pub(super) fn dedup_into(out: &mut Vec<u8>, topic: &str, id: &str) {
    out.extend_from_slice(topic.as_bytes());
    out.push(0);
    out.extend_from_slice(id.as_bytes());
}

#[cfg(test)]
pub(super) fn encode_id(expires_at_ms: u64, partition: u32, offset: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    encode_id_into(&mut v, expires_at_ms, partition, offset);
    v
}

/// A dedup entry's value, to the end of `out`.
pub(super) fn encode_id_into(out: &mut Vec<u8>, expires_at_ms: u64, partition: u32, offset: u64) {
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
}

/// The position in a dedup entry, unless it has expired at `now_ms`.
pub(super) fn decode_id(value: &[u8], now_ms: u64) -> Option<(u32, u64)> {
    if value.len() != 20 || id_expired(value, now_ms) {
        return None;
    }
    let partition = u32::from_be_bytes(value[8..12].try_into().ok()?);
    trailing_u64(value).map(|offset| (partition, offset))
}

pub(super) fn id_expired(value: &[u8], now_ms: u64) -> bool {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .is_none_or(|expires| expires <= now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_records_round_trip_and_read_a_bare_watermark() {
        for (mark, done) in [
            (0u64, vec![]),
            (7, vec![(9u64, 10u64), (12, 300), (1 << 40, (1 << 40) + 1)]),
            (u64::MAX - 5, vec![(u64::MAX - 3, u64::MAX)]),
        ] {
            let encoded = encode_progress(mark, &done);
            assert_eq!(decode_progress(&encoded), Some((mark, done)));
        }
        assert_eq!(
            decode_progress(&42u64.to_be_bytes()),
            Some((42, Vec::new()))
        );
        assert_eq!(decode_progress(&[1, 2, 3]), None, "too short");
        let mut cut = encode_progress(1, &[(3, 4)]);
        cut.pop();
        assert_eq!(decode_progress(&cut), None, "a range without its length");
    }

    #[test]
    fn dead_letter_index_keys_round_trip() {
        let key = dead_id("sub", "id\0with nul", "orders", 3, 77);
        let prefix = dead_id_prefix("sub", None);
        assert!(key.starts_with(&dead_id_prefix("sub", Some("id\0with nul"))));
        assert!(!key.starts_with(&dead_id_prefix("sub", Some("id"))));
        assert_eq!(
            split_dead_id(&key[prefix.len()..]),
            Some(("id\0with nul".into(), "orders".into(), 3, 77))
        );
        assert_eq!(split_dead_id(&[0, 0, 0, 9, b'x']), None, "cut short");
        let dead = dead("sub", "orders", 3, 77);
        assert_eq!(split_dead(&dead).map(|(s, _)| s), Some("sub"));
    }

    #[test]
    fn positions_round_trip_and_sort_numerically() {
        let a = progress_at(DONE, "sub", "orders", 3, 255);
        let b = progress_at(DONE, "sub", "orders", 3, 256);
        assert!(a < b, "offsets must sort numerically");
        let prefix = tagged(DONE, "sub");
        assert_eq!(
            split_position(&a[prefix.len()..]),
            Some(("orders".to_string(), 3, 255))
        );
        assert_eq!(trailing_u64(&log("t", 1, 42)), Some(42));
        assert_eq!(trailing_u64(&[1, 2, 3]), None, "too short");
        assert_eq!(split_position(b"orders"), None, "too short");
        assert!(log("t", 1, u64::MAX) < log("t", 2, 0));
    }

    #[test]
    fn subscription_ranges_cover_only_that_subscription() {
        let (from, to) = subscription_ranges("s1")[0].clone();
        let inside = progress_at(WATERMARK, "s1", "t", 0, 9);
        let other = progress_at(WATERMARK, "s10", "t", 0, 9);
        assert!(from <= inside && inside < to);
        assert!(
            !(from <= other && other < to),
            "s10 is another subscription"
        );
        let (from, to) = dead_range("s1");
        assert!(from <= dead("s1", "t", 3, 4) && dead("s1", "t", 3, 4) < to);
        assert!(!(from <= dead("s10", "t", 3, 4) && dead("s10", "t", 3, 4) < to));
    }

    #[test]
    fn topic_ranges_cover_only_that_topic() {
        let (from, to) = topic_range("t");
        let within = |k: &Vec<u8>| from <= *k && *k < to;
        assert!(within(&log("t", 3, 9)) && within(&log("t", 0, 0)));
        assert!(within(&log("t", u32::MAX, u64::MAX)));
        assert!(!within(&log("t1", 0, 0)) && !within(&log("s", 0, 0)));
        let ranges = topic_progress_ranges("s1", "t");
        let (from, to) = &ranges[0];
        let inside = progress_at(WATERMARK, "s1", "t", 2, 5);
        assert!(*from <= inside && inside < *to);
        for other in [
            progress_at(WATERMARK, "s1", "t2", 2, 5),
            progress_at(WATERMARK, "s10", "t", 2, 5),
        ] {
            assert!(!(*from <= other && other < *to), "{other:?}");
        }
    }

    #[test]
    fn dedup_entries_expire() {
        let v = encode_id(1000, 3, 77);
        assert_eq!(decode_id(&v, 999), Some((3, 77)));
        assert_eq!(decode_id(&v, 1000), None);
        assert!(id_expired(&v, 1001));
        assert!(id_expired(b"short", 0));
    }
}
