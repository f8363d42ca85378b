#!/usr/bin/env bash
# The README's five-minute tour, runnable: deploy the forwarder and poison
# plugins against a running router, publish, and look at the results.
# Usage: examples/tour.sh   (SWITCHYARD_URL defaults to http://127.0.0.1:7070;
#        SWITCHYARD_TOKEN is sent as a bearer token when set)
set -euo pipefail
URL="${SWITCHYARD_URL:-http://127.0.0.1:7070}"
P="${SWITCHYARD_PLUGINS:-$HOME/.cache/switchyard/target/wasm-plugins/wasm32-wasip2/release}"
J='content-type: application/json'
AUTH=()
if [ -n "${SWITCHYARD_TOKEN:-}" ]; then AUTH=(-H "authorization: Bearer $SWITCHYARD_TOKEN"); fi
c() { curl -sS --fail-with-body "${AUTH[@]}" "$@"; echo; }
# Poll (at most 10 s) until the output of a GET contains a string.
await() {
  for _ in $(seq 50); do
    if curl -sS "${AUTH[@]}" "$1" | grep -q "$2"; then return 0; fi
    sleep 0.2
  done
  echo "tour: timed out waiting for $2 at $1" >&2
  return 1
}

# Two topics with 4 partitions each.
c -X PUT "$URL/v1/topics/orders" -H "$J" -d '{"partitions": 4}'
c -X PUT "$URL/v1/topics/orders.out" -H "$J" -d '{"partitions": 4}'
# Upload a plugin: the forwarder republishes each message to <topic>.out.
c -X PUT "$URL/v1/plugins/forwarder" --data-binary "@$P/forwarder.wasm"
# Subscribe it: same-key messages in order, up to 16 at a time.
c -X PUT "$URL/v1/subscriptions/fwd" -H "$J" \
  -d '{"topic": "orders", "plugin": "forwarder", "ordering": "key", "concurrency": 16}'
# Publish one message (or {"messages": [...]} for a batch).
c -X POST "$URL/v1/topics/orders/messages" -H "$J" -d '{"key": "user-7", "payload": "hello"}'
# The key's partition (FNV-1a of "user-7" mod 4) is 2, in both topics.
await "$URL/v1/topics/orders.out/partitions/2/messages?from=0" '"hello"'
c "$URL/v1/topics/orders.out/partitions/2/messages?from=0"
c "$URL/v1/subscriptions/fwd"

# A message the plugin keeps failing ends in the dead letters, with its history.
c -X PUT "$URL/v1/topics/jobs"
c -X PUT "$URL/v1/plugins/poison" --data-binary "@$P/poison.wasm"
c -X PUT "$URL/v1/subscriptions/jobs" -H "$J" \
  -d '{"topic": "jobs", "plugin": "poison", "retry": {"max_attempts": 3, "initial_ms": 50}}'
c -X POST "$URL/v1/topics/jobs/messages" -H "$J" -d '{"payload": "retry me"}'
await "$URL/v1/subscriptions/jobs/dead-letters" '"retry me"'
c "$URL/v1/subscriptions/jobs/dead-letters"

# Webhook delivery with retries and dead letters, no plugin code: POST each
# message of `orders` to a URL (HOOK_URL; any endpoint answering 2xx). The
# subscription's egress allow-list must name it.
HOOK="${HOOK_URL:-https://httpbin.org/post}"
ORIGIN=$(printf '%s' "$HOOK" | sed -E 's#^(https?://[^/]+).*#\1#')
c -X PUT "$URL/v1/plugins/webhook" --data-binary "@$P/webhook.wasm"
c -X PUT "$URL/v1/subscriptions/hooks" -H "$J" -d "{\"topic\": \"orders\", \"plugin\": \"webhook\",
  \"config\": {\"url\": \"$HOOK\"}, \"egress\": {\"allow\": [\"$ORIGIN\"]},
  \"retry\": {\"max_attempts\": 8, \"initial_ms\": 500}}"
await "$URL/v1/subscriptions/hooks" '"acked":1'
c "$URL/v1/subscriptions/hooks"

# A pull consumer outside the router: lease, then settle.
c -X PUT "$URL/v1/subscriptions/shipping" -H "$J" -d '{"topic": "orders", "mode": "pull", "lease_ms": 30000}'
LEASES=$(c -X POST "$URL/v1/subscriptions/shipping/lease" -H "$J" -d '{"max": 10, "wait_ms": 5000}')
echo "$LEASES"
LEASE_ID=$(printf '%s' "$LEASES" | sed -E 's/.*"lease_id":"([^"]+)".*/\1/')
c -X POST "$URL/v1/subscriptions/shipping/settle" -H "$J" -d "{\"ack\": [\"$LEASE_ID\"]}"
