// The example plugin, in JavaScript. The same behaviour is written in Rust, C
// and Python (`plugins/example-*`), and one test checks all four
// (`guest-sdk/harness/tests/languages.rs`):
//
// 1. Logs `handled <id> attempt <n>` at info level.
// 2. Header `action: dead` -> dead letter, reason `dead on request`;
//    `action: retry` -> retry (reason `try again`) until attempt 3;
//    `action: call` -> POST the payload to config `url` with fetch(): a 2xx
//    answer's body replaces the payload below, another status -> retry
//    `status <n>`, no answer -> retry `request failed: <kind>`.
// 3. Adds one to the kv counter `count/<key>` (`count/-` without a key).
// 4. Publishes to `<topic>.out`, same key, payload prefixed with the
//    subscription's `prefix` config value, headers plus `lang: js`;
//    retries with the error text if the publish fails. Then acks.
//
// Built into a component by ./build.sh (componentize-js). The host interface
// is the built-in module `switchyard:plugin/host@0.1.0` (the version is part
// of the name); WIT names become camelCase (`kv-get` -> `kvGet`).

import { config, kvGet, kvSet, log, publish } from 'switchyard:plugin/host@0.1.0';

const encoder = new TextEncoder();

/** The value of the first header called `name`, or undefined. */
function header(msg, name) {
  const found = msg.headers.find(([n]) => n === name);
  return found === undefined ? undefined : found[1];
}

/** Bytes as text, one character per byte (the counters are ASCII digits). */
function ascii(bytes) {
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return text;
}

/**
 * A failed fetch() as the other examples name it. fetch() rejects with a
 * TypeError whose message carries the wasi:http error code.
 */
function httpErrorKind(e) {
  const text = errorText(e);
  if (/denied/i.test(text)) return 'denied';
  if (/prohibited/i.test(text)) return 'prohibited';
  if (/timeout/i.test(text)) return 'timeout';
  return 'other';
}

/** The text of an error thrown by an import that returns `result<_, string>`. */
function errorText(e) {
  if (e !== null && typeof e === 'object' && typeof e.payload === 'string') return e.payload;
  if (e instanceof Error) return e.message;
  return String(e);
}

/**
 * Handle one delivery.
 * @param {{id: string, topic: string, partition: number, offset: bigint,
 *          key: string | undefined, payload: Uint8Array,
 *          headers: [string, string][], timestampMs: bigint, attempt: number}} msg
 * @returns {Promise<{tag: 'ack'} | {tag: 'retry', val: {reason: string, delayMs?: bigint}}
 *          | {tag: 'dead-letter', val: string}>} (`handle` may be async: the
 *          runtime runs the event loop until the promise settles)
 */
export async function handle(msg) {
  log('info', `handled ${msg.id} attempt ${msg.attempt}`);

  const action = header(msg, 'action');
  if (action === 'dead') {
    return { tag: 'dead-letter', val: 'dead on request' };
  }
  if (action === 'retry' && msg.attempt < 3) {
    return { tag: 'retry', val: { reason: 'try again', delayMs: undefined } };
  }

  let body = msg.payload;
  if (action === 'call') {
    // Outbound HTTP with plain fetch(): POST the payload to config `url`.
    let response;
    try {
      response = await fetch(config('url') ?? '', { method: 'POST', body: msg.payload });
    } catch (e) {
      return { tag: 'retry', val: { reason: `request failed: ${httpErrorKind(e)}`, delayMs: undefined } };
    }
    if (!response.ok) {
      return { tag: 'retry', val: { reason: `status ${response.status}`, delayMs: undefined } };
    }
    body = new Uint8Array(await response.arrayBuffer());
  }

  const counter = `count/${msg.key ?? '-'}`;
  const stored = kvGet(counter);
  const n = stored === undefined ? 0 : parseInt(ascii(stored), 10) || 0;
  kvSet(counter, encoder.encode(String(n + 1)));

  const prefix = encoder.encode(config('prefix') ?? '');
  const payload = new Uint8Array(prefix.length + body.length);
  payload.set(prefix, 0);
  payload.set(body, prefix.length);
  try {
    publish(`${msg.topic}.out`, msg.key, payload, [...msg.headers, ['lang', 'js']]);
  } catch (e) {
    return { tag: 'retry', val: { reason: errorText(e), delayMs: undefined } };
  }
  return { tag: 'ack' };
}
