// The example plugin, in C. The same behaviour is written in Rust, Python and
// JavaScript (plugins/example-*), and one test checks all four
// (guest-sdk/harness/tests/languages.rs):
//
// 1. Logs `handled <id> attempt <n>` at info level.
// 2. Header `action: dead` -> dead letter, reason `dead on request`;
//    `action: retry` -> retry (reason `try again`) until attempt 3;
//    `action: call` -> POST the payload to config `url` through the
//    generated wasi:http bindings: a 2xx answer's body replaces the payload
//    below, another status -> retry `status <n>`, no answer -> retry
//    `request failed: <kind>`.
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

// A heap string holding `text` (for outcome reasons).
static void reason_set(consumer_string_t *reason, const char *text) {
  consumer_string_dup(reason, text);
}

// The example's name for a wasi:http error code.
static const char *failure_kind(const wasi_http_types_error_code_t *code) {
  switch (code->tag) {
  case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED:
    return "request failed: denied";
  case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_IP_PROHIBITED:
    return "request failed: prohibited";
  case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_TIMEOUT:
  case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_READ_TIMEOUT:
  case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_TIMEOUT:
    return "request failed: timeout";
  default:
    return "request failed: other";
  }
}

// Outbound HTTP: POST the payload to config `url` and read the answer. On a
// 2xx answer returns true with its body in `body` (heap, the caller's);
// otherwise false with the retry reason in `reason` (heap).
static bool call_url(const consumer_message_t *msg, consumer_list_u8_t *body,
                     consumer_string_t *reason) {
  consumer_string_t name;
  consumer_string_set(&name, "url");
  consumer_string_t url;
  if (!switchyard_plugin_host_config(&name, &url)) {
    reason_set(reason, "request failed: invalid-url");
    return false;
  }
  // http(s)://authority/path
  const char *text = (const char *)url.ptr;
  size_t at = 0;
  bool https = url.len > 8 && memcmp(text, "https://", 8) == 0;
  if (https) {
    at = 8;
  } else if (url.len > 7 && memcmp(text, "http://", 7) == 0) {
    at = 7;
  } else {
    consumer_string_free(&url);
    reason_set(reason, "request failed: invalid-url");
    return false;
  }
  size_t slash = at;
  while (slash < url.len && text[slash] != '/') {
    slash++;
  }
  consumer_string_t authority = {url.ptr + at, slash - at};
  consumer_string_t path = {(uint8_t *)"/", 1};
  if (slash < url.len) {
    path = (consumer_string_t){url.ptr + slash, url.len - slash};
  }

  wasi_http_types_own_outgoing_request_t request =
      wasi_http_types_constructor_outgoing_request(
          wasi_http_types_constructor_fields());
  wasi_http_types_borrow_outgoing_request_t req =
      wasi_http_types_borrow_outgoing_request(request);
  wasi_http_types_method_t method = {.tag = WASI_HTTP_TYPES_METHOD_POST};
  wasi_http_types_scheme_t scheme = {
      .tag = https ? WASI_HTTP_TYPES_SCHEME_HTTPS : WASI_HTTP_TYPES_SCHEME_HTTP};
  wasi_http_types_method_outgoing_request_set_method(req, &method);
  wasi_http_types_method_outgoing_request_set_scheme(req, &scheme);
  wasi_http_types_method_outgoing_request_set_authority(req, &authority);
  wasi_http_types_method_outgoing_request_set_path_with_query(req, &path);
  wasi_http_types_own_outgoing_body_t out_body;
  wasi_http_types_method_outgoing_request_body(req, &out_body);

  wasi_http_outgoing_handler_own_future_incoming_response_t future;
  wasi_http_types_error_code_t code;
  bool sent = wasi_http_outgoing_handler_handle(request, NULL, &future, &code);
  consumer_string_free(&url);
  if (!sent) {
    reason_set(reason, failure_kind(&code));
    wasi_http_types_error_code_free(&code);
    wasi_http_types_outgoing_body_drop_own(out_body);
    return false;
  }
  // Write the body while the host sends; if the host refused the request
  // the write fails and the response below says why.
  wasi_http_types_own_output_stream_t out;
  if (wasi_http_types_method_outgoing_body_write(
          wasi_http_types_borrow_outgoing_body(out_body), &out)) {
    for (size_t i = 0; i < msg->payload.len; i += 4096) {
      size_t n = msg->payload.len - i < 4096 ? msg->payload.len - i : 4096;
      consumer_list_u8_t chunk = {msg->payload.ptr + i, n};
      wasi_io_streams_stream_error_t error;
      if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
              wasi_io_streams_borrow_output_stream(out), &chunk, &error)) {
        wasi_io_streams_stream_error_free(&error);
        break;
      }
    }
    wasi_io_streams_output_stream_drop_own(out);
  }
  if (!wasi_http_types_static_outgoing_body_finish(out_body, NULL, &code)) {
    wasi_http_types_error_code_free(&code);
  }

  wasi_io_poll_own_pollable_t ready =
      wasi_http_types_method_future_incoming_response_subscribe(
          wasi_http_types_borrow_future_incoming_response(future));
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);
  wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
  bool some = wasi_http_types_method_future_incoming_response_get(
      wasi_http_types_borrow_future_incoming_response(future), &got);
  wasi_http_types_future_incoming_response_drop_own(future);
  if (!some || got.is_err) {
    reason_set(reason, "request failed: other");
    return false;
  }
  if (got.val.ok.is_err) {
    reason_set(reason, failure_kind(&got.val.ok.val.err));
    wasi_http_types_error_code_free(&got.val.ok.val.err);
    return false;
  }
  wasi_http_types_own_incoming_response_t response = got.val.ok.val.ok;
  wasi_http_types_borrow_incoming_response_t resp =
      wasi_http_types_borrow_incoming_response(response);
  uint16_t status = wasi_http_types_method_incoming_response_status(resp);
  if (status < 200 || status > 299) {
    char text[32];
    snprintf(text, sizeof text, "status %u", (unsigned)status);
    reason_set(reason, text);
    wasi_http_types_incoming_response_drop_own(response);
    return false;
  }
  *body = (consumer_list_u8_t){NULL, 0};
  wasi_http_types_own_incoming_body_t in_body;
  bool consumed =
      wasi_http_types_method_incoming_response_consume(resp, &in_body);
  bool ok = consumed;
  wasi_http_types_own_input_stream_t in;
  if (ok && wasi_http_types_method_incoming_body_stream(
                wasi_http_types_borrow_incoming_body(in_body), &in)) {
    for (;;) {
      consumer_list_u8_t chunk;
      wasi_io_streams_stream_error_t error;
      if (!wasi_io_streams_method_input_stream_blocking_read(
              wasi_io_streams_borrow_input_stream(in), 65536, &chunk, &error)) {
        ok = error.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED;
        wasi_io_streams_stream_error_free(&error);
        break;
      }
      uint8_t *joined = concat(body->ptr, body->len, chunk.ptr, chunk.len);
      free(body->ptr);
      body->ptr = joined;
      body->len += chunk.len;
      consumer_list_u8_free(&chunk);
    }
    wasi_io_streams_input_stream_drop_own(in);
  }
  // The body is a handle of its own: end it whatever happened.
  if (ok) {
    wasi_http_types_future_trailers_drop_own(
        wasi_http_types_static_incoming_body_finish(in_body));
  } else if (consumed) {
    wasi_http_types_incoming_body_drop_own(in_body);
  }
  wasi_http_types_incoming_response_drop_own(response);
  if (!ok) {
    free(body->ptr);
    reason_set(reason, "request failed: other");
  }
  return ok;
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

// Publish the message on to <topic>.out with `body` as its payload (after
// the prefix). On failure returns false and sets `err` (owned by the caller).
static bool forward(const consumer_message_t *msg,
                    const consumer_list_u8_t *body, consumer_string_t *err) {
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
      concat(prefix.ptr, prefix.len, body->ptr, body->len),
      prefix.len + body->len};
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

  consumer_list_u8_t called = {NULL, 0};
  const consumer_list_u8_t *body = &msg->payload;
  if (action != NULL && string_is(action, "call")) {
    consumer_string_t reason;
    if (!call_url(msg, &called, &reason)) {
      ret->tag = SWITCHYARD_PLUGIN_TYPES_OUTCOME_RETRY;
      ret->val.retry.reason = reason;
      ret->val.retry.delay_ms.is_some = false;
      return;
    }
    body = &called;
  }

  bump_counter(msg);

  consumer_string_t err;
  bool forwarded = forward(msg, body, &err);
  free(called.ptr);
  if (!forwarded) {
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
