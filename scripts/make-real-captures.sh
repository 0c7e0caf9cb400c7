#!/usr/bin/env bash
# make-real-captures.sh: captures of real programs (curl, nginx, socat; python as helper)
# with the kernel's tracepoint record of both endpoints, the fixtures of tests/data/real/
# (its README.md says how each was made and what it shows).
#
#   sudo scripts/make-real-captures.sh [DIR | --into tests/data/real]
#
# DIR defaults to a new temporary directory; the script writes into tests/data/real only
# when told so with --into. For each case NAME it writes:
#   NAME.pcap    tcpdump --immediate-mode -U -i lo -w, filtered to the case's port
#   NAME.trace   the text of a private tracefs instance (trace_clock mono) with
#                sock/inet_sock_set_state, tcp/tcp_send_reset, tcp/tcp_receive_reset and
#                tcp/tcp_retransmit_skb, the ones with ports filtered to the case's port
#   NAME.expect  the kernel's transitions and events per endpoint, derived from NAME.trace
#
# The cases (ports 18080-18085; nginx closes first: see nginx_conf):
#   normal-nginx      nginx (keepalive_timeout 0, so it closes first) and one curl
#   refused           curl to a port nothing listens on: SYN answered by RST,ACK
#   crossing-fins     two socats that shut down at a shared instant (retried until the
#                     kernel traced CLOSING), python programs as the fallback
#   timewait-new-syn  nginx closes first; curl again from the same local
#                     port: the new SYN ends the server's TIME_WAIT (RFC 6191)
#   timewait-tw-reuse curl closes first (nginx keeps alive); 1.5 s later curl connects
#                     again from the same port (the namespace's ip_local_port_range
#                     is one port): tcp_tw_reuse ends the client's own TIME_WAIT
#   syn-retransmit    an iptables rule drops the first SYN; curl connects on the copy
#                     (nginx as the server)
#
# Everything runs in a private network namespace (only its loopback) inside a private
# mount namespace (where tracefs is mounted if it is not). A trap on EXIT, INT, TERM and
# HUP stops the programs, removes the tracefs instance and ends the namespace (the
# iptables rule lives in it). Needs: root, tcpdump, curl, socat, nginx, python3, iptables,
# taskset, unshare, nsenter, ss. Exit status: 0 all written, 2 a step failed (said why).
set -Eeuo pipefail

say() { printf '== %s\n' "$*" >&2; }
run() { printf '+ %s\n' "$*" >&2; "$@"; }
die() { printf 'make-real-captures.sh: %s\n' "$*" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
out="" into=false
case ${1:-} in
  -h | --help) sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  --into) [ $# -ge 2 ] || die "--into needs a directory"; out=$2 into=true ;;
  --into=*) out=${1#*=} into=true ;;
  -*) die "unknown option: $1 (try --help)" ;;
  "") ;;
  *) out=$1 ;;
esac
# The checked-in fixtures change only when asked for by name.
case $(realpath -m "${out:-/nonexistent}")/ in
  "$repo"/tests/data/*) $into || die "to write into tests/data, say so: --into $out" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (tracefs, namespaces, tcpdump)"
for tool in tcpdump curl socat nginx python3 iptables taskset unshare nsenter ss; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install tcpdump curl socat nginx-light iptables util-linux)"
done

# A private mount namespace, so a tracefs mounted here does not appear on the host.
if [ -z "${MRC_INNER:-}" ]; then
  exec unshare --mount --propagation private env MRC_INNER=1 "$0" "$@"
fi

[ -n "$out" ] || out=$(mktemp -d /tmp/real-captures.XXXXXX)
mkdir -p "$out"
out=$(realpath "$out")
work=$(mktemp -d /tmp/make-real-captures.XXXXXX)

tracing=/sys/kernel/tracing
grep -q " $tracing tracefs " /proc/self/mounts || run mount -t tracefs nodev "$tracing"
inst=$tracing/instances/fixture-$$
events="sock/inet_sock_set_state tcp/tcp_receive_reset tcp/tcp_retransmit_skb tcp/tcp_send_reset"

tcpdump_pid="" bg_pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  # This shell's own background jobs still running (a pid that ended is not listed, so a
  # reused one is never hit): the programs, tcpdump and the namespace's holder.
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
  if [ -d "$inst" ]; then
    for ev in $events; do echo 0 >"$inst/events/$ev/enable" 2>/dev/null || true; done
    rmdir "$inst" 2>/dev/null || true
  fi
  # The namespace ends with its last process; the iptables rule goes with it.
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The private network namespace: held open by a sleeping process, entered with nsenter.
unshare --net sleep infinity &
holder=$!
for _ in $(seq 50); do
  [ "$(readlink /proc/$holder/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break
  sleep 0.02
done
[ "$(readlink /proc/$holder/ns/net)" != "$(readlink /proc/self/ns/net)" ] || die "the namespace did not start"
NS=(nsenter -t "$holder" -n --)
ns() { "${NS[@]}" "$@"; }
# A program left running in the namespace; its pid (the program's own) goes on bg_pids.
start() {
  printf '+ %s &\n' "$*" >&2
  "${NS[@]}" "$@" &
  bg_pids+=($!)
}
run ns ip link set lo up

# Waits up to 5 s for a listener on 127.0.0.1:$1 in the namespace.
wait_listen() {
  for _ in $(seq 100); do
    ns ss -Htln "sport = :$1" | grep -q . && return 0
    sleep 0.05
  done
  die "nothing listens on port $1 after 5 s"
}

# Waits up to 5 s for process $1 to end, then kills it.
wait_end() {
  for _ in $(seq 100); do
    kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
    sleep 0.05
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# begin NAME PORT: the tracefs instance, then tcpdump.
begin() {
  local name=$1 port=$2
  say "$name: port $port"
  mkdir "$inst"
  echo mono >"$inst/trace_clock"
  echo 4096 >"$inst/buffer_size_kb"
  for ev in $events; do
    # tcp_send_reset has no port fields: its lines are kept by port when saved.
    [ "$ev" = tcp/tcp_send_reset ] || echo "sport == $port || dport == $port" >"$inst/events/$ev/filter"
    echo 1 >"$inst/events/$ev/enable"
  done
  # The trace's clock (mono) and the packets' (realtime), read together.
  offset=$(python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC))')
  # --immediate-mode: without it the last packets can wait in the ring's open block and be
  # lost when tcpdump is stopped.
  printf '+ tcpdump --immediate-mode -U -i lo -w %s.pcap tcp port %s\n' "$name" "$port" >&2
  "${NS[@]}" tcpdump --immediate-mode -U -i lo -w "$work/$name.pcap" "tcp port $port" 2>"$work/tcpdump.err" &
  tcpdump_pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$work/tcpdump.err" && return 0
    sleep 0.05
  done
  die "tcpdump did not start: $(cat "$work/tcpdump.err")"
}

# end NAME PORT: stops tcpdump, saves the trace, removes the instance.
end() {
  local name=$1 port=$2
  sleep 0.5
  kill -INT "$tcpdump_pid" 2>/dev/null || true
  wait_end "$tcpdump_pid"
  tcpdump_pid=""
  for ev in $events; do echo 0 >"$inst/events/$ev/enable"; done
  # tcp_send_reset records every reset the host sends: keep the case's own.
  awk -v p=":$port " '!/tcp_send_reset:/ || index($0, p)' "$inst/trace" >"$work/$name.trace"
  rmdir "$inst"
}

# keep NAME PORT CLASS: writes NAME.expect from NAME.trace and copies the three files out.
keep() {
  local name=$1 port=$2 class=$3
  python3 "$work/expect.py" "$work/$name.trace" "$port" "$class" "$offset" >"$work/$name.expect"
  # What else the run saw (the socket table), as comments at the end.
  [ -s "$work/$name.note" ] && sed 's/^/# /' "$work/$name.note" >>"$work/$name.expect"
  cp "$work/$name.pcap" "$work/$name.trace" "$work/$name.expect" "$out/"
  printf '   wrote %s/%s.{pcap,trace,expect}\n' "$out" "$name" >&2
  sed 's/^/   | /' "$work/$name.expect" >&2
}

cat >"$work/expect.py" <<'EOF'
# NAME.expect from NAME.trace: the kernel's own record, per endpoint, in trace order.
import re, sys

path, port, klass, offset = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
NAMES = {"TCP_FIN_WAIT1": "FIN_WAIT_1", "TCP_FIN_WAIT2": "FIN_WAIT_2", "TCP_CLOSE": "CLOSED",
         "TCP_SYN_RECV": "SYN_RECEIVED"}
def state(s):
    return NAMES.get(s, s.removeprefix("TCP_")) if s != "UNKNOWN" else "-"

def fields(text):
    return dict(re.findall(r"(\w+)=(\S+)", text))

def role(addr, sport, dport):
    if sport == port:
        return "listener" if dport == 0 else "server"
    return "client"

lines, ends, pending = [], {}, []
for line in open(path):
    if line.startswith("#"):
        continue
    m = re.search(r": (inet_sock_set_state|tcp_receive_reset|tcp_retransmit_skb|tcp_send_reset): (.*)", line)
    if not m:
        continue
    event, f = m.group(1), fields(m.group(2))
    if event == "tcp_send_reset":
        addr, sp = f["src"].rsplit(":", 1)
        _, dp = f["dest"].rsplit(":", 1)
        sport, dport = int(sp), int(dp)
    else:
        addr, sport, dport = f["saddr"], int(f["sport"]), int(f["dport"])
    r = role(addr, sport, dport)
    ep = f"{addr}:{sport}"
    if sport == 0:
        # connect() traces CLOSE -> SYN_SENT before it picks the local port: the
        # endpoint is the one the client's next record names.
        pending.append(len(lines))
    elif r == "client" and pending:
        for i in pending:
            lines[i] = lines[i].replace(f"{addr}:0 ", f"{ep} ", 1)
        pending = []
    if sport != 0:
        ends.setdefault(r, ep)
    if event == "inet_sock_set_state":
        old, new = state(f["oldstate"]), state(f["newstate"])
        lines.append(f"{r} {ep} {old} -> {new}")
        if old == new:
            lines.append(f"# {r} {ep}: traced as is (close() after shutdown(SHUT_WR) sets FIN_WAIT1 again)")
        if new == "CLOSED" and old in ("FIN_WAIT_2", "CLOSING"):
            lines.append(f"# {r} {ep}: the kernel's CLOSE here is the move to the time-wait "
                         "table (TIME_WAIT itself is not traced)")
    elif event == "tcp_receive_reset":
        lines.append(f"{r} {ep} tcp_receive_reset -")
    elif event == "tcp_retransmit_skb":
        lines.append(f"{r} {ep} tcp_retransmit_skb {state(f['state'])}")
    else:
        lines.append(f"{r} {ep} tcp_send_reset {state(f['state'])} reason={f['reason']}")

who = ", ".join(f"{r} {ep}" for r, ep in sorted(ends.items()))
print(f"# {klass}: {who}")
print("# format: ROLE ADDR:PORT OLD -> NEW (inet_sock_set_state) | ROLE ADDR:PORT EVENT STATE [reason=R]")
print("# states in teardown's names (the kernel's TCP_FIN_WAIT1 is FIN_WAIT_1, TCP_CLOSE is CLOSED, "
      "TCP_SYN_RECV is SYN_RECEIVED); '-' is no state recorded")
print(f"# realtime_minus_mono_ns {offset}")
print("\n".join(lines))
EOF

# nginx_conf PORT: an nginx of its own in $work/nginx-PORT. keepalive_timeout 0, and gzip
# on an HTTP/1.0 request: the reply has no length, so nginx ends it by closing first and
# curl reads to the EOF (with a Content-Length, curl closes as soon as it has the body, and
# loses or wins the race with nginx's close at random).
# nginx_conf PORT keepalive: nginx keeps the connection (keepalive_timeout 65), so curl,
# exiting, closes first.
nginx_conf() {
  local dir=$work/nginx-$1 http="keepalive_timeout 0;
  gzip on; gzip_min_length 0; gzip_http_version 1.0; gzip_types text/plain;"
  [ "${2:-}" = keepalive ] && http="keepalive_timeout 65;"
  mkdir -p "$dir/logs" "$dir/tmp" "$dir/www"
  echo "hello from nginx" >"$dir/www/index.html"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 16; }
http {
  access_log off;
  $http
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp; uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  server { listen 127.0.0.1:$1; root $dir/www; }
}
EOF
  echo "$dir"
}

# --- normal-nginx: nginx closes first (keepalive_timeout 0), one curl ---------------------
name=normal-nginx port=18080
dir=$(nginx_conf $port)
begin $name $port
start nginx -p "$dir" -c "$dir/nginx.conf"
wait_listen $port
run ns curl -sS --max-time 5 --http1.0 --compressed -o /dev/null "http://127.0.0.1:$port/"
sleep 0.2
kill "${bg_pids[-1]}"
wait_end "${bg_pids[-1]}"
end $name $port
grep -q "sport=$port .*oldstate=TCP_FIN_WAIT2 newstate=TCP_CLOSE" "$work/$name.trace" ||
  die "$name: nginx did not close first"
keep $name $port "normal close, nginx (keepalive_timeout 0, a reply with no length) closes first, curl --http1.0"

# --- refused: nothing listens ---------------------------------------------------------------
name=refused port=18081
begin $name $port
run ns curl -sS --max-time 5 "http://127.0.0.1:$port/" 2>&1 | sed 's/^/   curl| /' >&2 || true
end $name $port
grep -q "tcp_receive_reset:" "$work/$name.trace" || die "$name: the kernel traced no received reset"
keep $name $port "connection refused, curl to a closed port (no server socket)"

# --- crossing-fins: both ends shut down at one instant --------------------------------------
name=crossing-fins port=18082
cat >"$work/until.py" <<'EOF'
# socat's SYSTEM child: say hello, wait (spinning) for the shared instant, then give socat
# EOF at once (shutdown of the socketpair) so it shuts the TCP socket down for writing.
import socket, sys, time
deadline, hello = float(sys.argv[1]), sys.argv[2]
sys.stdout.write(hello + "\n"); sys.stdout.flush()
while time.time() < deadline:
    pass
socket.socket(fileno=1).shutdown(socket.SHUT_WR)
time.sleep(0.5)
EOF
cat >"$work/cross.py" <<'EOF'
# Fallback: both ends exchange a line, then close() at a shared instant, spinning to it.
import socket, sys, time
role, port = sys.argv[1], int(sys.argv[2])
if role == "server":
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port)); l.listen(1)
    s, _ = l.accept(); l.close()
    s.recv(100)
    deadline = time.time() + 0.2
    s.sendall(str(deadline).encode())
else:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"hello")
    deadline = float(s.recv(100))
while time.time() < deadline:
    pass
s.close()
EOF
crossed=""
for attempt in $(seq 40); do
  begin $name $port
  at=$(python3 -c 'import time; print(f"{time.time() + 0.6:.6f}")')
  # One CPU each, so the two shutdowns really run at once.
  start taskset -c 0 socat -t1 "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" \
    "SYSTEM:python3 $work/until.py $at hello-from-server"
  wait_listen $port
  start taskset -c 1 socat -t1 "TCP:127.0.0.1:$port" "SYSTEM:python3 $work/until.py $at hello-from-client"
  wait_end "${bg_pids[-1]}"
  wait_end "${bg_pids[-2]}"
  end $name $port
  if grep -q "newstate=TCP_CLOSING" "$work/$name.trace"; then crossed=socat; break; fi
  say "$name: attempt $attempt: the FINs did not cross (no CLOSING traced), again"
  sleep 0.2
done
if [ -z "$crossed" ]; then
  for attempt in $(seq 20); do
    begin $name $port
    start taskset -c 0 python3 "$work/cross.py" server $port
    wait_listen $port
    start taskset -c 1 python3 "$work/cross.py" client $port
    wait_end "${bg_pids[-1]}"
    wait_end "${bg_pids[-2]}"
    end $name $port
    if grep -q "newstate=TCP_CLOSING" "$work/$name.trace"; then crossed=python; break; fi
    sleep 0.2
  done
fi
[ -n "$crossed" ] || die "$name: the FINs never crossed"
keep $name $port "crossing FINs (simultaneous close), $crossed on both ends, shut down at one instant"

# --- timewait-new-syn: a new SYN on the 4-tuple ends the server's TIME_WAIT -----------------
name=timewait-new-syn port=18083 cport=40083
dir=$(nginx_conf $port)
ok=""
for attempt in $(seq 5); do
  begin $name $port
  start nginx -p "$dir" -c "$dir/nginx.conf"
  wait_listen $port
  # nginx closes first, so the TIME_WAIT is the server's and curl's port is free again.
  run ns curl -sS --max-time 5 --http1.0 --compressed --local-port $cport -o /dev/null "http://127.0.0.1:$port/"
  sleep 0.5
  { echo "ss -tan before the second curl (the kernel's socket table):"; ns ss -tan "sport = :$port"; } >"$work/$name.note"
  sed 's/^/   note| /' "$work/$name.note" >&2
  run ns curl -sS --max-time 5 --http1.0 --compressed --local-port $cport -o /dev/null "http://127.0.0.1:$port/" || true
  sleep 0.2
  kill "${bg_pids[-1]}"
  wait_end "${bg_pids[-1]}"
  end $name $port
  # Both connections complete, and the first ended in the server's time-wait table.
  if [ "$(grep -c "sport=$cport dport=$port .*oldstate=TCP_SYN_SENT newstate=TCP_ESTABLISHED" "$work/$name.trace")" = 2 ] &&
    grep -q "sport=$port dport=$cport .*oldstate=TCP_FIN_WAIT2 newstate=TCP_CLOSE" "$work/$name.trace"; then
    ok=1
    break
  fi
  say "$name: attempt $attempt: not the expected shape, again"
  sleep 1
done
[ -n "$ok" ] || die "$name: no run where the new SYN met the server's TIME_WAIT"
grep -q "TIME-WAIT .*127.0.0.1:$port .*127.0.0.1:$cport" "$work/$name.note" ||
  die "$name: the socket table showed no TIME_WAIT before the new SYN"
keep $name $port "TIME_WAIT ended by a new SYN on the same 4-tuple (RFC 6191), nginx closes first, curl --local-port $cport twice"

# --- timewait-tw-reuse: the client's connect() takes over its own TIME_WAIT ----------------
# tcp_tw_reuse (2, the default: loopback only) lets connect() reuse a 4-tuple whose TIME_WAIT
# is over tcp_tw_reuse_delay (1 s) old. A one-port ip_local_port_range in the namespace
# makes the second curl's connect() pick the TIME_WAIT's port.
name=timewait-tw-reuse port=18085 cport=40085
dir=$(nginx_conf $port keepalive)
run ns sysctl -qw net.ipv4.ip_local_port_range="$cport $cport"
{ echo "sysctl in the namespace:"; ns sysctl net.ipv4.tcp_tw_reuse net.ipv4.ip_local_port_range; } >"$work/$name.note"
begin $name $port
start nginx -p "$dir" -c "$dir/nginx.conf"
wait_listen $port
run ns curl -sS --max-time 5 -o /dev/null "http://127.0.0.1:$port/"
sleep 1.5
{ echo "ss -tan before the second curl (the kernel's socket table):"; ns ss -tan "dport = :$port"; } >>"$work/$name.note"
sed 's/^/   note| /' "$work/$name.note" >&2
run ns curl -sS --max-time 5 -o /dev/null "http://127.0.0.1:$port/"
sleep 0.2
kill "${bg_pids[-1]}"
wait_end "${bg_pids[-1]}"
end $name $port
run ns sysctl -qw net.ipv4.ip_local_port_range="32768 60999"
grep -q "TIME-WAIT .*127.0.0.1:$cport .*127.0.0.1:$port" "$work/$name.note" ||
  die "$name: the socket table showed no client TIME_WAIT before the second connect"
[ "$(grep -c "sport=$cport dport=$port .*oldstate=TCP_SYN_SENT newstate=TCP_ESTABLISHED" "$work/$name.trace")" = 2 ] ||
  die "$name: the second connect() did not reuse port $cport"
keep $name $port "TIME_WAIT ended by a new SYN on the same 4-tuple (tcp_tw_reuse on the client), curl closes first (nginx keepalive), curl again from the one port ip_local_port_range allows"

# --- syn-retransmit: the first SYN is dropped, curl connects on its retransmission ----------
name=syn-retransmit port=18084
dir=$(nginx_conf $port)
run ns iptables -A INPUT -p tcp --syn --dport $port -m statistic --mode nth --every 2 --packet 0 -j DROP
begin $name $port
# nginx, closing first, keeps the close plain (http.server sends a Content-Length, and its
# close races curl's: the FINs cross now and then).
start nginx -p "$dir" -c "$dir/nginx.conf"
wait_listen $port
run ns curl -sS --max-time 10 --http1.0 --compressed -o /dev/null "http://127.0.0.1:$port/"
sleep 0.2
kill "${bg_pids[-1]}"
wait_end "${bg_pids[-1]}"
end $name $port
ns iptables -L INPUT -v -n | sed 's/^/   iptables| /' >&2
grep -q "tcp_retransmit_skb:.*state=TCP_SYN_SENT" "$work/$name.trace" || die "$name: no SYN retransmission traced"
keep $name $port "retransmitted SYN (the first dropped by iptables in the namespace), nginx, curl --http1.0"

say "done: $out"
