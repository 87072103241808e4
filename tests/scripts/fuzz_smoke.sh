#!/bin/bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each one for a
# bounded time over a copy of its seed corpus. Fails on any crash, leak,
# timeout or out-of-memory, printing the input that did it.
#
# Usage: fuzz_smoke.sh BUILD_DIR SOURCE_DIR
#   The fuzz build (clang) lives inside BUILD_DIR, in fuzz-build/.
# Environment:
#   FUZZ_BUILD_DIR   build the fuzz targets there instead
#   FUZZ_SECONDS     per target (default 30; `make fuzz` uses 600)
#   FUZZ_TARGETS     which targets (default: frames http handshake proxy)
#   FUZZ_CORPUS_DIR  keep the growing corpus here (default: a temp copy)
set -euo pipefail

build=${1:?usage: fuzz_smoke.sh BUILD_DIR SOURCE_DIR}
src=$(cd "${2:?usage: fuzz_smoke.sh BUILD_DIR SOURCE_DIR}" && pwd)
fbuild=${FUZZ_BUILD_DIR:-$build/fuzz-build}
mkdir -p "$fbuild"
fbuild=$(cd "$fbuild" && pwd)
if [[ -f "$fbuild/CMakeLists.txt" || "$fbuild" == "$src" ]]; then
  echo "fuzz_smoke: $fbuild is a source directory, not a build directory" >&2
  exit 1
fi
seconds=${FUZZ_SECONDS:-30}
targets=${FUZZ_TARGETS:-frames http handshake proxy}
jobs=$(nproc 2>/dev/null || echo 2)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duplex-fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

command -v clang >/dev/null || {
  echo "fuzz_smoke: clang is missing (scripts/deps.sh installs it)" >&2
  exit 1
}

# The library is built into this directory too; keep its sources and flags
# in step with the rest (a clang-only warning fails here first).
log=$tmp/build.log
if ! { CC=clang cmake -S "$src" -B "$fbuild" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDX_FUZZ=ON -DDX_SANITIZE=ON -DDX_TESTS=OFF -DDX_TOOLS=OFF -DDX_BENCH=OFF &&
  cmake --build "$fbuild" --parallel "$jobs" \
    --target $(printf 'fuzz_%s ' $targets); } >"$log" 2>&1; then
  cat "$log" >&2
  echo "fuzz_smoke: FAILED to build the fuzz targets in $fbuild" >&2
  exit 1
fi

export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
artifacts=$fbuild/artifacts
mkdir -p "$artifacts"
failed=()
for t in $targets; do
  bin=$fbuild/fuzz/fuzz_$t
  seeds=$src/fuzz/corpus/$t
  if [[ -n "${FUZZ_CORPUS_DIR:-}" ]]; then
    corpus=$FUZZ_CORPUS_DIR/$t
  else
    corpus=$tmp/corpus/$t
  fi
  mkdir -p "$corpus"
  [[ -d "$seeds" ]] && cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
  echo "fuzz_smoke: $t for ${seconds}s ($(ls "$corpus" | wc -l) inputs)"
  rm -f "$artifacts/$t-"*
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -detect_leaks=1 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$t-" "$corpus" >"$tmp/$t.log" 2>&1; then
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units)' "$tmp/$t.log" |
      sed "s/^/fuzz_smoke: $t: /" || true
  else
    tail -n 60 "$tmp/$t.log" >&2
    for a in "$artifacts/$t-"*; do
      [[ -e "$a" ]] || continue
      echo "fuzz_smoke: $t: input saved as $a; reproduce: $bin $a" >&2
      od -An -tx1 "$a" | head -n 32 >&2
    done
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz_smoke: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz_smoke: OK: $targets (${seconds}s each, no crash, leak or timeout)"
