#!/usr/bin/env bash
# Build the Python example plugin into a WebAssembly component.
#
#   plugins/example-python/build.sh OUT_DIR    -> OUT_DIR/example_python.wasm
#
# Uses componentize-py (pinned below), installed on first use into a venv at
# ${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}/python with `python3 -m venv`
# (set PYTHON to use another interpreter; it needs Python >= 3.9 with venv and
# pip). Only that first install needs the network (PyPI).
#
# The build is skipped when OUT_DIR/example_python.stamp records the sha256 of
# this directory's sources, the WIT files and the tool version, and the .wasm is
# there. Delete the stamp (or the .wasm) to force a rebuild.
set -euo pipefail

CPY_VERSION=0.25.1
# The component is OUT_DIR/$PLUGIN_NAME.wasm (a project made by `switchyard new`
# sets its own name).
NAME=${PLUGIN_NAME:-example_python}
APP_MODULE=app
WORLD=consumer
# Stable module names for the imported interfaces: componentize-py would
# otherwise qualify both `types` interfaces (the plugin's and wasi:http's).
MODULE_NAMES=(
    --import-interface-name "switchyard:plugin/types@0.1.0=types"
    --import-interface-name "switchyard:plugin/host@0.1.0=host"
    --import-interface-name "wasi:http/types@0.2.12=http_types"
    --import-interface-name "wasi:http/outgoing-handler@0.2.12=outgoing_handler"
)

die() { echo "build.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 OUT_DIR"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The WIT: the project's own copy (wit/, in a project made by `switchyard
# new`), else the repository's.
if [ -d "$HERE/wit" ]; then WIT_DIR="$HERE/wit"; else WIT_DIR="$HERE/../../guest-sdk/wit"; fi
WIT_DIR=$(cd "$WIT_DIR" && pwd) || die "no WIT directory at $WIT_DIR"
mkdir -p "$1"
OUT_DIR=$(cd "$1" && pwd)
OUT="$OUT_DIR/$NAME.wasm"
STAMP="$OUT_DIR/$NAME.stamp"

TOOLS=${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}
VENV="$TOOLS/python"
CPY="$VENV/bin/componentize-py"

# The plugin's sources: its Python files (not the build output or the WIT), as
# paths relative to this directory, sorted.
sources() {
    (cd "$HERE" && find . -type f -name '*.py' \
        ! -path './build/*' ! -path './wit/*' ! -path '*/__pycache__/*' \
        | LC_ALL=C sort)
}

fingerprint() {
    {
        echo "componentize-py $CPY_VERSION world $WORLD module $APP_MODULE names ${MODULE_NAMES[*]}"
        sources | while IFS= read -r f; do
            printf 'src %s %s\n' "$f" "$(sha256sum < "$HERE/$f" | cut -d' ' -f1)"
        done
        (cd "$WIT_DIR" && find . -type f -name '*.wit' | LC_ALL=C sort) | while IFS= read -r f; do
            printf 'wit %s %s\n' "$f" "$(sha256sum < "$WIT_DIR/$f" | cut -d' ' -f1)"
        done
    } | sha256sum | cut -d' ' -f1
}

FP=$(fingerprint)
if [ -f "$OUT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FP" ]; then
    echo "example-python: $OUT is up to date" >&2
    exit 0
fi

# componentize-py, in its own venv (installed once; no network after that).
install_tool() {
    local py=${PYTHON:-python3}
    command -v "$py" > /dev/null || die "$py not found (set PYTHON to a Python >= 3.9)"
    mkdir -p "$TOOLS"
    if ! "$VENV/bin/python" -c '' 2> /dev/null; then
        rm -rf "$VENV"
        "$py" -m venv "$VENV" \
            || die "'$py -m venv' failed (on a system Python, install the venv module, e.g. python3-venv)"
    fi
    echo "example-python: installing componentize-py $CPY_VERSION into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$CPY_VERSION" \
        || die "pip could not install componentize-py==$CPY_VERSION"
}
tool_ok() { [ "$("$CPY" --version 2> /dev/null)" = "componentize-py $CPY_VERSION" ]; }
if ! tool_ok; then
    # Two builds at once must not both install into the same venv.
    mkdir -p "$TOOLS"
    exec 9> "$TOOLS/.python.lock"
    if command -v flock > /dev/null; then flock 9; fi
    tool_ok || install_tool
    tool_ok || die "$CPY is not componentize-py $CPY_VERSION after installing it"
    exec 9>&-
fi

# Build from a copy of the sources: componentize-py bundles every file of its
# python path into the component, and writes bytecode caches next to the
# sources; so the path is a scratch copy without build.sh.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-example-python.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src"
sources | while IFS= read -r f; do
    mkdir -p "$WORK/src/$(dirname "$f")"
    cp "$HERE/$f" "$WORK/src/$f"
done

start=$(date +%s.%N)
if ! (cd "$WORK" && env -u VIRTUAL_ENV PYTHONDONTWRITEBYTECODE=1 RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 \
        "$CPY" --quiet -d "$WIT_DIR" -w "$WORLD" "${MODULE_NAMES[@]}" \
        componentize -p "$WORK/src" "$APP_MODULE" -o "$WORK/$NAME.wasm" > "$WORK/log" 2>&1); then
    cat "$WORK/log" >&2
    die "componentize-py failed"
fi
end=$(date +%s.%N)

# Replace the output atomically, then record what it was built from.
rm -f "$STAMP"
mv -f "$WORK/$NAME.wasm" "$OUT.tmp.$$"
mv -f "$OUT.tmp.$$" "$OUT"
echo "$FP" > "$STAMP"

size=$(stat -c %s "$OUT")
limit=$((32 * 1024 * 1024))
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
if [ "$size" -gt "$limit" ]; then
    echo "example-python: WARNING: $OUT is $size bytes, over the host's 32 MiB plugin limit" >&2
fi
echo "example-python: built $OUT ($size bytes, $(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB) in ${secs} s" >&2
