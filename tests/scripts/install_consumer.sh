#!/bin/bash
# Install test: builds a plain release copy of duplex from the source tree,
# installs it into a temporary prefix, then builds tests/consumer/consumer.c
# the ways a user would and runs each build:
#   1. pkg-config --cflags --libs duplex          (shared library)
#   2. pkg-config --static --cflags --libs duplex (libduplex.a)
#   3. CMake find_package(duplex): duplex::duplex and duplex::duplex_static
#
# Usage: install_consumer.sh BUILD_DIR SOURCE_DIR
# BUILD_DIR (usually the sanitizer build) is not used: sanitizer flags must
# not leak into what is installed, so the library is configured afresh.
set -euo pipefail

src=$(cd "${2:?usage: install_consumer.sh BUILD_DIR SOURCE_DIR}" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duplex-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
jobs=$(nproc 2>/dev/null || echo 2)
step=""

die() {
  echo "install_consumer: FAILED at: $step" >&2
  [[ $# -gt 0 ]] && echo "install_consumer: $*" >&2
  exit 1
}
trap 'die "command failed (exit $?): $BASH_COMMAND"' ERR
# run LOGNAME CMD...: quiet on success, the whole log on failure.
run() {
  local log=$tmp/$1.log
  shift
  "$@" >"$log" 2>&1 || { cat "$log" >&2; die "$*"; }
}

step="configure, build and install duplex into $prefix"
run configure cmake -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release \
  -DDX_TESTS=OFF -DDX_BENCH=OFF -DDX_TOOLS=OFF -DDX_FUZZ=OFF \
  -DDX_SANITIZE=OFF -DCMAKE_INSTALL_PREFIX="$prefix"
run build cmake --build "$tmp/build" --parallel "$jobs"
run install cmake --install "$tmp/build"

step="check the installed files"
pc=$(find "$prefix" -name duplex.pc -print -quit)
[[ -n "$pc" ]] || die "no duplex.pc under $prefix"
libdir=$(dirname "$(dirname "$pc")")
for f in include/duplex/common.h include/duplex/proto.h; do
  [[ -f "$prefix/$f" ]] || die "missing $prefix/$f"
done
for f in libduplex.so libduplex.a; do
  [[ -e "$libdir/$f" ]] || die "missing $libdir/$f"
done
ls "$libdir"/libduplex.so.* >/dev/null 2>&1 || die "no versioned libduplex.so.N"
[[ -f "$libdir/cmake/duplex/duplexConfig.cmake" ]] ||
  die "missing $libdir/cmake/duplex/duplexConfig.cmake"

export PKG_CONFIG_PATH=$libdir/pkgconfig
cc=${CC:-cc}
consumer=$src/tests/consumer

check_output() { # name binary [env...]
  local name=$1 bin=$2 out
  shift 2
  out=$(env "$@" "$bin" 2>&1) || die "$name: $bin exited non-zero: $out"
  [[ "$out" == "consumer ok: "* ]] || die "$name: unexpected output: $out"
  echo "install_consumer: $name: $out"
}

step="pkg-config, shared"
cflags=$(pkg-config --cflags duplex)
libs=$(pkg-config --libs duplex)
run pc-shared $cc -std=c17 -Wall -Werror "$consumer/consumer.c" $cflags $libs \
  -o "$tmp/pc_shared"
readelf -d "$tmp/pc_shared" | grep -q 'NEEDED.*libduplex\.so' ||
  die "pc_shared does not link libduplex.so"
check_output "pkg-config shared" "$tmp/pc_shared" LD_LIBRARY_PATH="$libdir"

step="pkg-config, static"
# With both libduplex.so and libduplex.a in libdir, -lduplex picks the
# shared one; -l:libduplex.a names the archive (what a user does too).
libs=$(pkg-config --static --libs duplex)
libs=${libs/-lduplex/-l:libduplex.a}
run pc-static $cc -std=c17 -Wall -Werror "$consumer/consumer.c" $cflags $libs \
  -o "$tmp/pc_static"
if readelf -d "$tmp/pc_static" | grep -q 'NEEDED.*libduplex'; then
  die "pc_static still needs libduplex.so"
fi
check_output "pkg-config static" "$tmp/pc_static"

step="CMake find_package(duplex)"
run cmake-consumer cmake -S "$consumer" -B "$tmp/consumer" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release
run cmake-consumer-build cmake --build "$tmp/consumer" --parallel "$jobs"
check_output "find_package shared" "$tmp/consumer/consumer_shared"
check_output "find_package static" "$tmp/consumer/consumer_static"
if readelf -d "$tmp/consumer/consumer_static" | grep -q 'NEEDED.*libduplex'; then
  die "consumer_static still needs libduplex.so"
fi

echo "install_consumer: OK (headers, shared + static library, duplex.pc, CMake package)"
