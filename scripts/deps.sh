#!/bin/bash
# Installs the Debian packages duplex needs to build, test and run, when
# they are missing. This file holds THE list: add a package here (one per
# line, with the reason) and `make test`, `make run` and CI all get it.
#
#   scripts/deps.sh              ensure the list below
#   scripts/deps.sh PKG...       ensure the list below plus PKG...
#   scripts/deps.sh --print      print the list (for docs and scripts)
#
# As root it runs `apt-get update` once (only when something is missing)
# and installs without recommends. Otherwise it prints the exact command
# and fails, so a newcomer knows what to run.
set -euo pipefail

DX_APT_PACKAGES=(
  build-essential    # gcc, make, libc headers
  cmake              # the build
  pkg-config         # duplex.pc and the install test
  clang              # fuzz targets (libFuzzer needs clang)
  libclang-rt-14-dev # libFuzzer and the sanitizer runtimes for clang 14
  libssl-dev         # OpenSSL 3: TLS, SHA-1, base64, RNG
  zlib1g-dev         # permessage-deflate
  python3-websockets # interop peer (tests/interop, with /usr/bin/python3)
  chromium           # browser test (tests/browser, via playwright-core)
  libjwt-dev         # duplex serve: JWT verification (src/app/auth.c)
  libyaml-dev        # duplex serve --config FILE (src/app/config.c)
  libjansson-dev     # JSON: JWT claims, ticket requests (src/app)
  libhiredis-dev     # the Redis backplane (src/pubsub/redis.c)
  redis-server       # the Redis backplane's tests (tests/scripts/cluster_*)
  haproxy            # deploy/haproxy.cfg checked and run in front of nodes
                     # (tests/scripts/deploy_balancers.sh)
  nginx-light        # deploy/nginx.conf, likewise (the smallest Debian nginx
                     # with proxy, map and upstream)
  # Coming with later work (move up when the code that needs it lands):
  # libwebsockets-dev
)

# Packages checked by the command they provide rather than by dpkg, as
# COMMAND:PACKAGE. node and npm (interop peers and browser driver,
# package.json): a machine may have Node.js from elsewhere (NodeSource's
# nodejs, which ships npm itself, or a tarball/nvm install) and Debian's
# nodejs or npm would clash with it or shadow it; on plain Debian, nodejs
# and npm are what provide the commands. Note: playwright-core wants
# Node.js 20 or newer (bookworm's nodejs is 18).
DX_APT_BY_COMMAND=(
  node:nodejs
  npm:npm
)

if [[ "${1:-}" == "--print" ]]; then
  printf '%s\n' "${DX_APT_PACKAGES[@]}" "${DX_APT_BY_COMMAND[@]#*:}"
  exit 0
fi

wanted=("${DX_APT_PACKAGES[@]}" "$@")
missing=()
for pkg in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$pkg")
done
for entry in "${DX_APT_BY_COMMAND[@]}"; do
  command -v "${entry%%:*}" >/dev/null || missing+=("${entry#*:}")
done

if ((${#missing[@]} == 0)); then
  echo "deps: all $((${#wanted[@]} + ${#DX_APT_BY_COMMAND[@]})) Debian packages are installed"
  exit 0
fi

install_cmd="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: run as root (or with sudo), then try again:" >&2
  echo "  sudo apt-get update && sudo $install_cmd" >&2
  exit 1
fi

echo "deps: installing ${missing[*]}"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
  "${missing[@]}"
