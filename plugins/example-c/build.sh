#!/usr/bin/env bash
# Build the example C plugin into OUT_DIR/example_c.wasm.
#
#   plugins/example-c/build.sh OUT_DIR
#
# Needs Debian's clang, lld, wasi-libc and the wasm32 compiler-rt builtins
# (installed here with apt-get when missing, as root or via sudo), and the
# `switchyard` binary for the bindings and the componentizing step
# ($SWITCHYARD_BIN, else `switchyard` on PATH). Skips the build when
# OUT_DIR/example_c.wasm is up to date with its stamp.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The WIT: the project's own copy (wit/, in a project made by `switchyard
# new`), else the repository's. (The bindings come from the WIT built into
# the switchyard binary; this copy keys the cache.)
if [[ -d "$here/wit" ]]; then wit_dir="$here/wit"; else wit_dir="$here/../../guest-sdk/wit"; fi
wit_dir="$(cd "$wit_dir" && pwd)"
mkdir -p "$1"
out_dir="$(cd "$1" && pwd)"
# The component is OUT_DIR/$PLUGIN_NAME.wasm (a project made by `switchyard
# new` sets its own name).
name="${PLUGIN_NAME:-example_c}"
out="$out_dir/$name.wasm"
stamp="$out_dir/$name.stamp"
switchyard="${SWITCHYARD_BIN:-switchyard}"

if ! switchyard_path="$(command -v "$switchyard")"; then
    echo "example-c: cannot find the switchyard binary '$switchyard' (set SWITCHYARD_BIN)" >&2
    exit 2
fi

# --- Toolchain: Debian packages -------------------------------------------
# libclang-rt-dev-wasm32 brings libclang_rt.builtins-wasm32.a for the default
# clang (libclang-rt-14-dev-wasm32 on Debian 12).
packages=(clang lld wasi-libc libclang-rt-dev-wasm32)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "example-c: installing ${missing[*]}" >&2
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    apt_log="$(mktemp)"
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        echo "example-c: cannot install ${missing[*]}" >&2
        exit 2
    fi
    rm -f "$apt_log"
fi

# Where wasi-libc lives: a wasi-sdk style sysroot, or Debian's multiarch
# layout (/usr/include/<triple>, /usr/lib/<triple>), which Debian's clang
# searches without --sysroot.
if [[ -d /usr/share/wasi-sysroot/lib ]]; then
    sysroot=(--sysroot=/usr/share/wasi-sysroot)
    libroot=/usr/share/wasi-sysroot/lib
else
    sysroot=()
    libroot=/usr/lib
fi
# wasi-libc names its directory after the triple it was built for:
# wasm32-wasip1 in newer releases, wasm32-wasi in older ones (clang 14).
if [[ -d "$libroot/wasm32-wasip1" ]]; then
    target=wasm32-wasip1
elif [[ -d "$libroot/wasm32-wasi" ]]; then
    target=wasm32-wasi
else
    echo "example-c: no wasm32-wasi(p1) libc in $libroot (is wasi-libc installed?)" >&2
    exit 2
fi

# --- Cache -----------------------------------------------------------------
key="$(
    {
        cat "$here/plugin.c" "$here/build.sh"
        cat "$wit_dir"/*.wit
        clang --version
        echo "$target ${sysroot[*]}"
        sha256sum <"$switchyard_path"
    } | sha256sum | cut -d' ' -f1
)"
if [[ -f "$out" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    echo "example-c: $out is up to date" >&2
    exit 0
fi

# --- Build -----------------------------------------------------------------
start=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cc=(clang --target="$target" "${sysroot[@]}" -O2)
"$switchyard" plugin-tools c-bindings --out "$work" >/dev/null
# Warnings are errors in our code, not in the generated bindings.
"${cc[@]}" -Wall -Wextra -Werror -I "$work" -c "$here/plugin.c" -o "$work/plugin.o"
"${cc[@]}" -c "$work/consumer.c" -o "$work/consumer.o"
"${cc[@]}" -mexec-model=reactor -Wl,--strip-debug \
    "$work/plugin.o" "$work/consumer.o" "$work/consumer_component_type.o" \
    -o "$work/core.wasm"
"$switchyard" plugin-tools componentize "$work/core.wasm" -o "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
echo "$key" >"$stamp"

echo "example-c: built $out ($(stat -c %s "$out") bytes, $target, $((SECONDS - start))s)" >&2
