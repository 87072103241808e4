#!/bin/bash
# Checks that layers include only downward (DESIGN.md, "Layers"):
#   proto < net < http < server, client < pubsub < app
# and the stricter rules for the two ends:
#   - proto: libc (see PROTO_SYSTEM_OK), zlib, OpenSSL's libcrypto and
#     duplex/common.h + duplex/proto.h only; no sockets, clock or threads.
#   - app: public headers only (<duplex/*.h>), never another layer's
#     private headers ("proto/internal.h").
# Grep-based and deliberately simple. Prints file:line for every offending
# include and exits 1 when there is any.
#
# Usage: layers.sh BUILD_DIR SOURCE_DIR   (BUILD_DIR is unused)
set -euo pipefail

# ---- the rules -------------------------------------------------------------

# Layer rank: a layer may include its own headers and those of layers with a
# LOWER rank. Equal rank (server and client) may not include each other.
LAYER_RANK=(
  [0]=proto
  [1]=net
  [2]=http
  [3]="server client"
  [4]=pubsub
  [5]=app
)

# Public headers that belong to no layer: every layer may include them.
BASE_HEADERS="duplex/common.h"

# Public headers named other than their layer: header name -> layer.
declare -A HEADER_LAYER=([tls]=net)
layer_of_header() { echo "${HEADER_LAYER[$1]:-$1}"; }

# System headers proto may include. Everything else (sys/socket.h, time.h,
# pthread.h, unistd.h, ...) is I/O, a clock or threads: not in the core.
PROTO_SYSTEM_OK="assert.h ctype.h errno.h inttypes.h limits.h stdalign.h
  stdarg.h stdatomic.h stdbool.h stddef.h stdint.h stdio.h stdlib.h string.h strings.h
  endian.h byteswap.h zlib.h immintrin.h emmintrin.h tmmintrin.h smmintrin.h
  arm_neon.h"
PROTO_SYSTEM_OK_PREFIX="openssl/"          # libcrypto ...
PROTO_SYSTEM_BANNED="openssl/ssl.h openssl/tls1.h"  # ... but not TLS
# Calls that mean a clock, a socket or a thread in proto.
PROTO_BANNED_CALLS='\b(clock|clock_gettime|gettimeofday|time|socket|connect|accept|send|recv|read|write|poll|epoll_[a-z_]+|pthread_[a-z_]+|thrd_[a-z_]+|sleep|usleep|nanosleep)[[:space:]]*\('

# ---------------------------------------------------------------------------

src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$src"

rank_of() { # layer name -> rank, or empty
  local r
  for r in "${!LAYER_RANK[@]}"; do
    for l in ${LAYER_RANK[$r]}; do
      [[ "$l" == "$1" ]] && { echo "$r"; return; }
    done
  done
}

bad=0
violation() { # file line text why
  echo "$1:$2: $3" >&2
  echo "    -> $4" >&2
  bad=1
}

# check_file FILE LAYER PUBLIC(0/1)
check_file() {
  local file=$1 layer=$2 public=$3 rank
  rank=$(rank_of "$layer")
  local lineno text hdr kind target trank
  while IFS=: read -r lineno text; do
    if [[ "$text" =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*([\<\"])([^\>\"]+)[\>\"] ]]; then
      kind=${BASH_REMATCH[1]}
      hdr=${BASH_REMATCH[2]}
    else
      continue
    fi
    # Public duplex headers: <duplex/LAYER.h> or "duplex/LAYER.h".
    if [[ "$hdr" == duplex/* ]]; then
      [[ " $BASE_HEADERS " == *" $hdr "* ]] && continue
      target=${hdr#duplex/}
      target=$(layer_of_header "${target%.h}")
      trank=$(rank_of "$target")
      if [[ -z "$trank" ]]; then
        violation "$file" "$lineno" "$text" \
          "public header $hdr belongs to no layer: name it after its layer, or add it to BASE_HEADERS/LAYER_RANK in tests/scripts/layers.sh"
      elif [[ "$target" != "$layer" ]] && ((trank >= rank)); then
        violation "$file" "$lineno" "$text" \
          "$layer (rank $rank) may not include $target (rank $trank): layers include downward only"
      fi
      continue
    fi
    # Private headers: "LAYER/x.h" (relative to src/) or "x.h" (same folder).
    if [[ "$kind" == '"' ]]; then
      ((public)) && { violation "$file" "$lineno" "$text" \
        "public headers include only <duplex/...> and system headers"; continue; }
      [[ "$hdr" != */* ]] && continue # same folder: own layer
      target=${hdr%%/*}
      trank=$(rank_of "$target")
      if [[ -z "$trank" ]]; then
        violation "$file" "$lineno" "$text" "unknown layer folder '$target'"
      elif [[ "$layer" == app && "$target" != app ]]; then
        violation "$file" "$lineno" "$text" \
          "src/app uses public headers only (<duplex/$target.h>), not $target's internals"
      elif [[ "$target" != "$layer" ]] && ((trank >= rank)); then
        violation "$file" "$lineno" "$text" \
          "$layer (rank $rank) may not include $target (rank $trank): layers include downward only"
      fi
      continue
    fi
    # System headers: only proto is restricted.
    if [[ "$layer" == proto ]]; then
      if [[ " $PROTO_SYSTEM_BANNED " == *" $hdr "* ]] ||
        { [[ " $(echo $PROTO_SYSTEM_OK) " != *" $hdr "* ]] &&
          [[ "$hdr" != "$PROTO_SYSTEM_OK_PREFIX"* ]]; }; then
        violation "$file" "$lineno" "$text" \
          "proto is sans-I/O: libc basics, zlib and libcrypto only (PROTO_SYSTEM_OK in tests/scripts/layers.sh)"
      fi
    fi
  done < <(grep -n '^[[:space:]]*#[[:space:]]*include' "$file" || true)

  if [[ "$layer" == proto ]]; then
    # Outside comments (roughly: lines not starting with // or *).
    while IFS=: read -r lineno text; do
      [[ "$text" =~ ^[[:space:]]*(//|/?\*) ]] && continue
      violation "$file" "$lineno" "$text" \
        "proto never touches a clock, a socket or a thread"
    done < <(grep -nE "$PROTO_BANNED_CALLS" "$file" || true)
  fi
}

checked=0
for dir in src/*/; do
  layer=$(basename "$dir")
  if [[ -z "$(rank_of "$layer")" ]]; then
    echo "src/$layer/: not a layer in LAYER_RANK (tests/scripts/layers.sh)" >&2
    bad=1
    continue
  fi
  while IFS= read -r f; do
    check_file "$f" "$layer" 0
    checked=$((checked + 1))
  done < <(find "$dir" -type f \( -name '*.c' -o -name '*.h' \) | sort)
done
for f in include/duplex/*.h; do
  [[ -e "$f" ]] || continue
  name=$(basename "$f" .h)
  [[ " $BASE_HEADERS " == *" duplex/$name.h "* ]] && layer=proto || layer=$(layer_of_header "$name")
  if [[ -z "$(rank_of "$layer")" ]]; then
    echo "$f: public header belongs to no layer (LAYER_RANK/BASE_HEADERS in tests/scripts/layers.sh)" >&2
    bad=1
    continue
  fi
  check_file "$f" "$layer" 1
  checked=$((checked + 1))
done

if ((bad)); then
  echo "layers: FAILED (see above; the rules are at the top of tests/scripts/layers.sh)" >&2
  exit 1
fi
echo "layers: $checked files include downward only"
