#!/usr/bin/env bash
# Build the JavaScript example plugin into a WebAssembly component.
#
#   plugins/example-js/build.sh OUT_DIR    -> OUT_DIR/example_js.wasm
#
# Uses componentize-js (pinned, with all its dependencies, by package.json and
# package-lock.json here), installed on first use with `npm ci` into
# ${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}/js. Needs Node >= 18 and
# npm; only that first install needs the network (the npm registry).
# componentize.mjs does the build itself.
#
# The build is skipped when OUT_DIR/example_js.stamp records the sha256 of this
# directory's sources, the WIT files and the tool version, and the .wasm is
# there. Delete the stamp (or the .wasm) to force a rebuild.
set -euo pipefail

# The component is OUT_DIR/$PLUGIN_NAME.wasm (a project made by `switchyard new`
# sets its own name).
NAME=${PLUGIN_NAME:-example_js}
WORLD=consumer

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
JS_TOOLS="$TOOLS/js"
CJS_PKG="$JS_TOOLS/node_modules/@bytecodealliance/componentize-js/package.json"

# The pinned componentize-js version, from package.json (exact, no range).
CJS_VERSION=$(sed -n 's/^ *"@bytecodealliance\/componentize-js": *"\([^"]*\)".*/\1/p' "$HERE/package.json")
[[ "$CJS_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
    || die "package.json must pin @bytecodealliance/componentize-js to an exact version (found '$CJS_VERSION')"

# The plugin's sources: every file here except docs and an accidental
# node_modules, as paths relative to this directory, sorted. (package-lock.json
# is one of them, so a change to any pinned dependency rebuilds.)
sources() {
    (cd "$HERE" && find . -type f ! -name '*.md' ! -name '*.jsonl' ! -name 'expect.json' \
        ! -name 'test.sh' ! -path './node_modules/*' ! -path './build/*' ! -path './wit/*' \
        | LC_ALL=C sort)
}

fingerprint() {
    {
        echo "componentize-js $CJS_VERSION world $WORLD"
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
    echo "example-js: $OUT is up to date" >&2
    exit 0
fi

command -v node > /dev/null || die "node not found (Node.js >= 18 is needed; on Debian: apt-get install nodejs npm)"
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" -ge 18 ] || die "Node.js >= 18 is needed, found $(node --version)"

# componentize-js and its dependencies, exactly as package-lock.json says
# (installed once; no network after that).
LOCK_SUM=$(sha256sum < "$HERE/package-lock.json" | cut -d' ' -f1)
tool_ok() {
    [ -f "$CJS_PKG" ] && [ -f "$JS_TOOLS/.installed" ] \
        && [ "$(cat "$JS_TOOLS/.installed")" = "$LOCK_SUM" ] \
        && grep -q "\"version\": *\"$CJS_VERSION\"" "$CJS_PKG"
}
install_tool() {
    command -v npm > /dev/null || die "npm not found (on Debian: apt-get install npm)"
    echo "example-js: installing componentize-js $CJS_VERSION into $JS_TOOLS (npm ci)" >&2
    mkdir -p "$JS_TOOLS"
    # .installed (the lock file's sha256) is written only after a complete install.
    rm -f "$JS_TOOLS/.installed"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$JS_TOOLS/"
    if ! (cd "$JS_TOOLS" && npm ci --no-audit --no-fund --loglevel=error > "$JS_TOOLS/npm-ci.log" 2>&1); then
        cat "$JS_TOOLS/npm-ci.log" >&2
        die "npm ci of componentize-js $CJS_VERSION failed in $JS_TOOLS"
    fi
    echo "$LOCK_SUM" > "$JS_TOOLS/.installed"
}
if ! tool_ok; then
    # Two builds at once must not both install into the same folder.
    mkdir -p "$TOOLS"
    exec 9> "$TOOLS/.js.lock"
    if command -v flock > /dev/null; then flock 9; fi
    tool_ok || install_tool
    tool_ok || die "$JS_TOOLS does not hold componentize-js $CJS_VERSION after installing it"
    exec 9>&-
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-example-js.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

start=$(date +%s.%N)
if ! COMPONENTIZE_JS_DIR="$JS_TOOLS" SWITCHYARD_WIT_DIR="$WIT_DIR" node "$HERE/componentize.mjs" "$WORK/$NAME.wasm" > "$WORK/log" 2>&1; then
    cat "$WORK/log" >&2
    die "componentize-js failed"
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
    echo "example-js: WARNING: $OUT is $size bytes, over the host's 32 MiB plugin limit" >&2
fi
echo "example-js: built $OUT ($size bytes, $(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB) in ${secs} s" >&2
