// The example plugin, in C. The same behaviour is written in Rust, Python and
// JavaScript (plugins/example-*), and one test checks all four
// (guest-sdk/harness/tests/languages.rs):
//
// 1. Logs `handled <id> attempt <n>` at info level.
// 2. Header `action: dead` -> dead letter, reason `dead on request`;
//    `action: retry` -> retry (reason `try again`) until attempt 3.
// 3. Adds one to the kv counter `count/<key>` (`count/-` without a key).
// 4. Publishes to `<topic>.out`, same key, payload prefixed with the
//    subscription's `prefix` config value, headers plus `lang: c`;
//    retries with the error text if the publish fails. Then acks.
//
// Ownership (wit-bindgen's C rules): `msg` belongs to this function and is
// freed before returning; strings in the returned outcome must be heap
// copies (the bindings free them after the host has read them); what an
// imported function returns (kv-get's value, config's value, publish's error)
// belongs to the caller; arguments passed to imports stay the caller's.

#include "consumer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Whether `s` holds exactly the NUL-terminated text `text`.
static bool string_is(const consumer_string_t *s, const char *text) {
  size_t len = strlen(text);
  return s->len == len && memcmp(s->ptr, text, len) == 0;
}

// The value of the first header named `name`, or NULL.
static const consumer_string_t *header(const consumer_message_t *msg,
                                       const char *name) {
  for (size_t i = 0; i < msg->headers.len; i++) {
    if (string_is(&msg->headers.ptr[i].f0, name)) {
      return &msg->headers.ptr[i].f1;
    }
  }
  return NULL;
}

// A heap buffer holding `a` then `b` (not NUL-terminated); aborts (a trap,
// so a failed attempt) if memory runs out.
static uint8_t *concat(const uint8_t *a, size_t a_len, const uint8_t *b,
                       size_t b_len) {
  uint8_t *out = malloc(a_len + b_len + 1);
  if (out == NULL) {
    abort();
  }
  if (a_len > 0) {
    memcpy(out, a, a_len);
  }
  if (b_len > 0) {
    memcpy(out + a_len, b, b_len);
  }
  return out;
}

static void log_handled(const consumer_message_t *msg) {
  char suffix[32];
  int n = snprintf(suffix, sizeof suffix, " attempt %" PRIu32, msg->attempt);
  static const char prefix[] = "handled ";
  uint8_t *head = concat((const uint8_t *)prefix, sizeof prefix - 1,
                         msg->id.ptr, msg->id.len);
  uint8_t *line = concat(head, sizeof prefix - 1 + msg->id.len,
                         (const uint8_t *)suffix, (size_t)n);
  free(head);
  consumer_string_t text = {line, sizeof prefix - 1 + msg->id.len + (size_t)n};
  switchyard_plugin_host_log(SWITCHYARD_PLUGIN_TYPES_LOG_LEVEL_INFO, &text);
  free(line);
}

// A stored counter: decimal ASCII digits (an optional leading '+'), else 0.
static uint64_t parse_count(const consumer_list_u8_t *value) {
  size_t i = 0;
  if (value->len > 0 && value->ptr[0] == '+') {
    i = 1;
  }
  if (i == value->len) {
    return 0;
  }
  uint64_t n = 0;
  for (; i < value->len; i++) {
    uint8_t c = value->ptr[i];
    if (c < '0' || c > '9' || n > (UINT64_MAX - (c - '0')) / 10) {
      return 0;
    }
    n = n * 10 + (c - '0');
  }
  return n;
}

// count/<key> += 1 in the subscription's kv state.
static void bump_counter(const consumer_message_t *msg) {
  static const char prefix[] = "count/";
  const uint8_t *key = (const uint8_t *)"-";
  size_t key_len = 1;
  if (msg->key.is_some) {
    key = msg->key.val.ptr;
    key_len = msg->key.val.len;
  }
  consumer_string_t name = {
      concat((const uint8_t *)prefix, sizeof prefix - 1, key, key_len),
      sizeof prefix - 1 + key_len};

  uint64_t n = 0;
  consumer_list_u8_t stored;
  if (switchyard_plugin_host_kv_get(&name, &stored)) {
    n = parse_count(&stored);
    consumer_list_u8_free(&stored);
  }
  char digits[24];
  int len = snprintf(digits, sizeof digits, "%" PRIu64, n + 1);
  consumer_list_u8_t value = {(uint8_t *)digits, (size_t)len};
  switchyard_plugin_host_kv_set(&name, &value);
  free(name.ptr);
}

// Publish the message on to <topic>.out. On failure returns false and sets
// `err` (owned by the caller).
static bool forward(const consumer_message_t *msg, consumer_string_t *err) {
  static const char suffix[] = ".out";
  consumer_string_t topic = {
      concat(msg->topic.ptr, msg->topic.len, (const uint8_t *)suffix,
             sizeof suffix - 1),
      msg->topic.len + sizeof suffix - 1};

  // On `false` (not set) the bindings leave `prefix` undefined: reset it.
  consumer_string_t prefix;
  consumer_string_t name;
  consumer_string_set(&name, "prefix");
  bool has_prefix = switchyard_plugin_host_config(&name, &prefix);
  if (!has_prefix) {
    prefix = (consumer_string_t){NULL, 0};
  }
  consumer_list_u8_t payload = {
      concat(prefix.ptr, prefix.len, msg->payload.ptr, msg->payload.len),
      prefix.len + msg->payload.len};
  if (has_prefix) {
    consumer_string_free(&prefix);
  }

  size_t count = msg->headers.len + 1;
  consumer_tuple2_string_string_t *pairs = malloc(count * sizeof *pairs);
  if (pairs == NULL) {
    abort();
  }
  if (msg->headers.len > 0) {
    memcpy(pairs, msg->headers.ptr, msg->headers.len * sizeof *pairs);
  }
  consumer_string_set(&pairs[count - 1].f0, "lang");
  consumer_string_set(&pairs[count - 1].f1, "c");
  consumer_list_tuple2_string_string_t headers = {pairs, count};

  // The key is passed by pointer, NULL for none; the strings inside `msg`
  // are only borrowed by the call.
  consumer_string_t key;
  consumer_string_t *maybe_key = NULL;
  if (msg->key.is_some) {
    key = msg->key.val;
    maybe_key = &key;
  }
  bool ok = switchyard_plugin_host_publish(&topic, maybe_key, &payload,
                                           &headers, err);

  free(pairs);
  free(payload.ptr);
  free(topic.ptr);
  return ok;
}

// Decide the outcome; never frees `msg`.
static void decide(const consumer_message_t *msg, consumer_outcome_t *ret) {
  log_handled(msg);

  const consumer_string_t *action = header(msg, "action");
  if (action != NULL && string_is(action, "dead")) {
    ret->tag = SWITCHYARD_PLUGIN_TYPES_OUTCOME_DEAD_LETTER;
    consumer_string_dup(&ret->val.dead_letter, "dead on request");
    return;
  }
  if (action != NULL && string_is(action, "retry") && msg->attempt < 3) {
    ret->tag = SWITCHYARD_PLUGIN_TYPES_OUTCOME_RETRY;
    consumer_string_dup(&ret->val.retry.reason, "try again");
    ret->val.retry.delay_ms.is_some = false;
    return;
  }

  bump_counter(msg);

  consumer_string_t err;
  if (!forward(msg, &err)) {
    // The error text is ours: hand it over to the outcome, whose strings the
    // bindings free once the host has read them.
    ret->tag = SWITCHYARD_PLUGIN_TYPES_OUTCOME_RETRY;
    ret->val.retry.reason = err;
    ret->val.retry.delay_ms.is_some = false;
    return;
  }
  ret->tag = SWITCHYARD_PLUGIN_TYPES_OUTCOME_ACK;
}

void exports_consumer_handle(consumer_message_t *msg, consumer_outcome_t *ret) {
  decide(msg, ret);
  consumer_message_free(msg);
}
