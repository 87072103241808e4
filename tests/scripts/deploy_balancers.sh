#!/bin/bash
# The deploy/ files, checked and run for real:
#   - deploy/duplex.service: systemd-analyze verify (its ExecStart pointed at
#     this build), or SKIP when systemd-analyze is missing (not counted);
#   - deploy/nginx.conf: nginx -t, then nginx (Debian) in front of two
#     `duplex serve` nodes with X-Forwarded-For;
#   - deploy/haproxy.cfg: haproxy -c, then HAProxy (Debian) in front of two
#     nodes with send-proxy-v2 and health checks on /healthz.
# The files are used as people use them, with only their addresses, ports
# and system paths replaced (sed) by test ones: 127.0.0.1 and free ports,
# pid/log/temp/socket files in a temp dir, no root.
#
# Checks, through each balancer: WebSocket echo (text, binary) over several
# connections (both nodes); the per-IP quota (--max-per-ip 1) counts the
# real client, not the balancer (distinct clients all accepted, one client
# at most once per node); a client's own forged X-Forwarded-For is not
# believed; a direct peer that is not a trusted proxy cannot forge its
# address with X-Forwarded-For or a PROXY header; a trusted peer without
# the PROXY header it must send is closed. Loopback addresses stand for
# the network: the balancers reach the nodes from 127.0.0.1 (trusted),
# clients use 127.0.0.3-127.0.0.9 as their own addresses.
#
# Usage: deploy_balancers.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail

build=$(cd "${1:?usage: deploy_balancers.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: deploy_balancers.sh BUILD_DIR SOURCE_DIR}" && pwd)
DX_BIN=$build/src/app/duplex
DX_NAME=deploy_balancers
PY=/usr/bin/python3 # Debian's: it has python3-websockets
CLIENT=$src/tests/deploy/balancer_client.py
# shellcheck source=../interop/server_lib.sh
source "$src/tests/interop/server_lib.sh"

# ---- prerequisites: missing ones fail the test, they never skip it -------
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[[ -x "$DX_BIN" ]] || dx_fail "no $DX_BIN (build the tools: -DDX_TOOLS=ON)"
[[ -x "$NGINX" ]] || dx_fail "nginx is not installed (nginx-light: make deps)"
[[ -x "$HAPROXY" ]] || dx_fail "haproxy is not installed (make deps)"
"$PY" -c 'import websockets' 2>/dev/null ||
  dx_fail "$PY cannot import websockets: install python3-websockets (make deps)"

dx_tmp_init deploy
BAL_PIDS=()
bal_cleanup() {
  local pid
  for pid in "${BAL_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
  done
  dx_cleanup
}
trap bal_cleanup EXIT

passed=0
failed=()
ok() {
  echo "ok: $*"
  passed=$((passed + 1))
}
not_ok() {
  echo "not ok: $*"
  failed+=("$*")
}
# expect NAME WANT_REGEX CMD...: runs CMD (bounded), its output must match.
expect() {
  local name=$1 want=$2 out rc=0
  shift 2
  out=$(timeout -k 5 60 "$@" 2>&1) || rc=$?
  if ((rc == 0)) && [[ "$out" =~ $want ]]; then
    ok "$name ($out)"
  else
    echo "$out" | sed 's/^/    /'
    not_ok "$name (exit $rc, wanted /$want/)"
  fi
}
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_port PORT: until something accepts on 127.0.0.1:PORT (10 s).
wait_port() {
  local i
  for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# ---- systemd unit --------------------------------------------------------
unit=$DX_TMP/duplex.service
sed "s#/usr/local/bin/duplex#$DX_BIN#" "$src/deploy/duplex.service" >"$unit"
if command -v systemd-analyze >/dev/null; then
  if out=$(systemd-analyze verify "$unit" 2>&1) && [[ -z "$out" ]]; then
    ok "systemd-analyze verify deploy/duplex.service"
  else
    echo "$out" | sed 's/^/    /'
    not_ok "systemd-analyze verify deploy/duplex.service"
  fi
else
  echo "SKIP: systemd-analyze verify deploy/duplex.service (systemd-analyze" \
    "is not installed; not counted)"
fi
# The keys the unit's contract rests on, whatever systemd-analyze said.
for key in '^Type=exec$' '^ExecStart=.* serve ' '^ExecReload=/bin/kill -HUP \$MAINPID$' \
  '^KillSignal=SIGTERM$' '^TimeoutStopSec=' '^Restart=on-failure$' \
  '^LimitNOFILE=' '^NoNewPrivileges=yes$' '^ProtectSystem=strict$'; do
  grep -Eq "$key" "$unit" || not_ok "deploy/duplex.service has no line /$key/"
done
# TimeoutStopSec must leave room for the graceful close (close_timeout 5 s).
stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\?$/\1/p' "$unit")
if [[ "$stop_s" =~ ^[0-9]+$ ]] && ((stop_s > 5)); then
  ok "duplex.service: TimeoutStopSec=${stop_s}s is above the 5 s close timeout"
else
  not_ok "duplex.service: TimeoutStopSec ($stop_s) must be above 5 s"
fi

# ---- the nodes -------------------------------------------------------------
# N1, N2 behind nginx (X-Forwarded-For); H1, H2 behind HAProxy (PROXY v2).
# The balancers connect from 127.0.0.1: that is the trusted proxy.
export DX_SERVE_VERBOSE=1 # their logs name the client (peer=...)
common=(--echo /echo --max-per-ip 1 --trust-proxy 127.0.0.1/32)
dx_server_start N1 "${common[@]}"
dx_server_start N2 "${common[@]}"
dx_server_start H1 "${common[@]}" --proxy-protocol
dx_server_start H2 "${common[@]}" --proxy-protocol
echo "$DX_NAME: nodes N1=$N1_PORT N2=$N2_PORT (nginx)," \
  "H1=$H1_PORT H2=$H2_PORT (haproxy, PROXY v2)"

# ---- nginx ---------------------------------------------------------------
ng=$DX_TMP/nginx
mkdir -p "$ng/logs"
NGINX_PORT=$(free_port)
# Test copy: test addresses and ports, one worker, files under $ng (Debian's
# nginx has /var/lib/nginx/* compiled in as temp paths: set them here).
sed -e "1i pid $ng/nginx.pid;" \
  -e 's/^worker_processes auto;/worker_processes 1;/' \
  -e '/^worker_rlimit_nofile/d' \
  -e 's/worker_connections 16384;/worker_connections 1024;/' \
  -e "s#/var/log/nginx/#$ng/logs/#" \
  -e "/^http {/a client_body_temp_path $ng/body; proxy_temp_path $ng/proxy; fastcgi_temp_path $ng/fastcgi; uwsgi_temp_path $ng/uwsgi; scgi_temp_path $ng/scgi;" \
  -e "s/listen 80;/listen 127.0.0.1:$NGINX_PORT;/" \
  -e "s/10\.0\.0\.11:8080/127.0.0.1:$N1_PORT/" \
  -e "s/10\.0\.0\.12:8080/127.0.0.1:$N2_PORT/" \
  -e '/10\.0\.0\.13:8080/d' \
  "$src/deploy/nginx.conf" >"$ng/nginx.conf"
ngx=("$NGINX" -p "$ng" -c "$ng/nginx.conf" -e "$ng/logs/error.log")
if out=$("${ngx[@]}" -t 2>&1); then
  ok "nginx -t deploy/nginx.conf"
else
  echo "$out" | sed 's/^/    /'
  not_ok "nginx -t deploy/nginx.conf"
fi
"${ngx[@]}" -g 'daemon off;' >"$ng/stdout" 2>&1 &
BAL_PIDS+=($!)
wait_port "$NGINX_PORT" || dx_fail "nginx did not listen on $NGINX_PORT: $(cat "$ng/stdout" "$ng/logs/error.log" 2>/dev/null)"

expect "nginx: WebSocket echo through nginx (4 connections)" \
  '^echo: 4 ' "$PY" "$CLIENT" echo "$NGINX_PORT" 4
sleep 0.3
n1_opens=$(grep -c 'open conn=' "$N1_ERR")
n2_opens=$(grep -c 'open conn=' "$N2_ERR")
if ((n1_opens >= 1 && n2_opens >= 1 && n1_opens + n2_opens == 4)); then
  ok "nginx: the 4 echo connections reached both nodes (N1 $n1_opens, N2 $n2_opens)"
else
  not_ok "nginx: the 4 echo connections did not reach both nodes (N1 $n1_opens, N2 $n2_opens)"
fi
# Distinct forwarded clients are distinct for the quota: all accepted (were
# the balancer's address counted, at most one per node would be).
expect "nginx: 4 clients with distinct X-Forwarded-For all accepted (--max-per-ip 1)" \
  '^accepted 4 rejected 0$' "$PY" "$CLIENT" open "$NGINX_PORT" \
  127.0.0.1,198.51.100.1 127.0.0.1,198.51.100.2 127.0.0.1,198.51.100.3 \
  127.0.0.1,198.51.100.4
# The same forwarded client three times: at most once per node (2 nodes).
expect "nginx: one forwarded client, 3 connections: at most one per node, then 429" \
  '^accepted [12] rejected [12]$' "$PY" "$CLIENT" open "$NGINX_PORT" \
  127.0.0.1,198.51.100.9 127.0.0.1,198.51.100.9 127.0.0.1,198.51.100.9
# A client at 127.0.0.3 (not trusted) that forges X-Forwarded-For through
# nginx: nginx appends 127.0.0.3, the walk stops there; three different
# forged values are still one client.
expect "nginx: a client's forged X-Forwarded-For is not believed" \
  '^accepted [12] rejected [12]$' "$PY" "$CLIENT" open "$NGINX_PORT" \
  127.0.0.3,203.0.113.1 127.0.0.3,203.0.113.2 127.0.0.3,203.0.113.3
# Straight to a node from an untrusted address: its XFF is ignored.
expect "direct untrusted peer: forged X-Forwarded-For ignored (second is 429)" \
  '^accepted 1 rejected 1$' "$PY" "$CLIENT" open "$N1_PORT" \
  127.0.0.4,203.0.113.10 127.0.0.4,203.0.113.11
sleep 0.3
if grep -q 'open conn=.* peer=198\.51\.100\.1 ' "$N1_ERR" "$N2_ERR" &&
  grep -q 'open conn=.* peer=127\.0\.0\.3 ' "$N1_ERR" "$N2_ERR" &&
  ! grep -q 'peer=203\.0\.113\.' "$N1_ERR" "$N2_ERR"; then
  ok "nginx nodes log the real clients (peer=198.51.100.1, peer=127.0.0.3), never a forged one"
else
  grep -h 'open\|reject' "$N1_ERR" "$N2_ERR" | sed 's/^/    /'
  not_ok "nginx nodes' logs name the real clients"
fi

# ---- HAProxy ---------------------------------------------------------------
hp=$DX_TMP/haproxy
mkdir -p "$hp"
HAP_PORT=$(free_port)
# Test copy: no chroot/user/daemon/syslog (not root), the admin socket in
# $hp, a smaller maxconn (our ulimit), test addresses and ports.
sed -e '/^    chroot /d' -e '/^    user /d' -e '/^    group /d' \
  -e '/^    daemon$/d' -e '/^    log \/dev\/log/d' -e '/^    log global$/d' \
  -e 's/^    maxconn 100000$/    maxconn 1000/' \
  -e "s#/run/haproxy/admin.sock#$hp/admin.sock#" \
  -e "s/bind :80$/bind 127.0.0.1:$HAP_PORT/" \
  -e "s/10\.0\.0\.11:8080/127.0.0.1:$H1_PORT/" \
  -e "s/10\.0\.0\.12:8080/127.0.0.1:$H2_PORT/" \
  -e '/10\.0\.0\.13:8080/d' \
  "$src/deploy/haproxy.cfg" >"$hp/haproxy.cfg"
if out=$("$HAPROXY" -c -f "$hp/haproxy.cfg" 2>&1); then
  ok "haproxy -c deploy/haproxy.cfg"
else
  echo "$out" | sed 's/^/    /'
  not_ok "haproxy -c deploy/haproxy.cfg"
fi
if out=$("$HAPROXY" -c -f "$src/deploy/haproxy.cfg" 2>&1); then
  ok "haproxy -c deploy/haproxy.cfg (the file as shipped)"
else
  echo "$out" | sed 's/^/    /'
  not_ok "haproxy -c deploy/haproxy.cfg (the file as shipped)"
fi
"$HAPROXY" -db -f "$hp/haproxy.cfg" >"$hp/stdout" 2>&1 &
BAL_PIDS+=($!)
wait_port "$HAP_PORT" || dx_fail "haproxy did not listen on $HAP_PORT: $(cat "$hp/stdout")"
# Health checks (with their PROXY header) every 2 s: both nodes up.
up=0
for ((i = 0; i < 100; i++)); do
  up=$(echo "show stat" | "$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(sys.stdin.buffer.read()); data = b""
while True:
    d = s.recv(65536)
    if not d: break
    data += d
print(sum(1 for l in data.decode().splitlines()
          if l.startswith("duplex,node") and ",UP," in l and "L7OK" in l))' "$hp/admin.sock" 2>/dev/null || echo 0)
  ((up == 2)) && break
  sleep 0.1
done
if ((up == 2)); then
  ok "haproxy: both nodes UP, last /healthz check L7OK (sent with PROXY v2)"
else
  cat "$hp/stdout" | sed 's/^/    /'
  not_ok "haproxy: nodes not UP by health check ($up of 2)"
fi

expect "haproxy: WebSocket echo through HAProxy with send-proxy-v2 (4 connections)" \
  '^echo: 4 ' "$PY" "$CLIENT" echo "$HAP_PORT" 4
# Distinct client addresses (from the PROXY header) are distinct for the
# quota: all accepted (were HAProxy's 127.0.0.1 counted, at most one per
# node would be).
expect "haproxy: 4 client addresses, held together, all accepted (--max-per-ip 1)" \
  '^accepted 4 rejected 0$' "$PY" "$CLIENT" open "$HAP_PORT" \
  127.0.0.5, 127.0.0.6, 127.0.0.7, 127.0.0.8,
expect "haproxy: one client address, 3 connections: at most one per node, then 429" \
  '^accepted [12] rejected [12]$' "$PY" "$CLIENT" open "$HAP_PORT" \
  127.0.0.9, 127.0.0.9, 127.0.0.9,
expect "direct untrusted peer sending a PROXY header: refused, not believed" \
  '^closed$' "$PY" "$CLIENT" proxy-untrusted "$H1_PORT" 127.0.0.3
expect "direct untrusted peer without a PROXY header: served" \
  '^accepted 1 rejected 0$' "$PY" "$CLIENT" open "$H1_PORT" 127.0.0.3,
expect "direct trusted peer without its PROXY header: closed" \
  '^closed$' "$PY" "$CLIENT" no-proxy "$H1_PORT"
sleep 0.3
if grep -q 'PROXY protocol header from an untrusted peer' "$H1_ERR" &&
  grep -q 'no PROXY protocol header from a trusted proxy' "$H1_ERR" &&
  grep -q 'open conn=.* peer=127\.0\.0\.[5-9] ' "$H1_ERR" "$H2_ERR" &&
  ! grep -q 'peer=198\.51\.100\.7' "$H1_ERR" "$H2_ERR"; then
  ok "haproxy nodes log the clients' addresses from PROXY v2 and both refusals, never the forged one"
else
  grep -h 'open\|reject' "$H1_ERR" "$H2_ERR" | sed 's/^/    /'
  not_ok "haproxy nodes' logs"
fi

# ---- stop: balancers first, then the nodes (graceful, sanitizers quiet) ---
for pid in "${BAL_PIDS[@]}"; do
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
done
for n in N1 N2 H1 H2; do dx_server_stop "$n"; done

echo "$DX_NAME: $passed passed, ${#failed[@]} failed"
if ((${#failed[@]})); then
  printf '  failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
