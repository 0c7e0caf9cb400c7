#!/usr/bin/env bash
# Benchmark: `teardown capture` and `tcpdump -i lo -w` side by side, both capturing the same
# traffic at once in a private network namespace, in two cases:
#   flood  the article's writing-forever server and a reading client, one connection (SECONDS);
#   busy   a busy server: nginx (Debian's nginx-light) with `keepalive_timeout 0`, so the
#          server closes first, and ApacheBench `ab -n CONNECTIONS -c 16` at full speed: many
#          short connections, each opened and closed.
# Prints packets captured, kernel drops and CPU per packet for each, and the ratio.
#
#   sudo scripts/bench-capture.sh [SECONDS] [CONNECTIONS]   (needs tcpdump; builds --release)
#   CASES=busy sudo scripts/bench-capture.sh                 only one case (flood, busy)
#   RUNS=3 sudo scripts/bench-capture.sh                     each case 3 times, then the
#                                                            median ratio of each case
# The machine's other work moves a single run's ratio by ±10%: compare medians, not runs.
#
# Nothing is left behind: the namespace ends with the script, and a trap stops every process.
set -euo pipefail
seconds=${1:-10}
connections=${2:-100000}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/busy-server.sh
. "$root/scripts/busy-server.sh"
command -v tcpdump >/dev/null || { echo "needs tcpdump: apt-get install tcpdump" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root: run it with sudo" >&2; exit 2; }
case " ${CASES:-flood busy} " in
  *" busy "*)
    command -v ab >/dev/null || { echo "needs ab: apt-get install apache2-utils" >&2; exit 2; }
    [ -x /usr/sbin/nginx ] || { echo "needs nginx: apt-get install nginx-light" >&2; exit 2; } ;;
esac
[ -n "${TEARDOWN_BIN:-}" ] || cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="${TEARDOWN_BIN:-$root/target/release/teardown}"
work=$(mktemp -d)
# The busy case's server, written here: the namespace's shell below does not have the function.
write_nginx_conf "$work/nginx"

exec unshare -n bash -s "$bin" "$work" "$seconds" "$connections" "${CASES:-flood busy}" "${RUNS:-1}" <<'INNER'
set -euo pipefail
bin=$1 work=$2 seconds=$3 connections=$4 cases=$5 runs=$6
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
ip link set lo up
# Nanoseconds the process has run (schedstat: exact, where utime + stime in /proc/PID/stat
# are sampled at 10 ms ticks, too coarse for a quarter second of CPU). Both are single-threaded.
cpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }

# Starts both captures of tcp port $1, each with its own log.
start_captures() {
  "$bin" capture --port "$1" -o "$work/teardown.pcapng" 2> "$work/teardown.log" & td=$!; pids+=($td)
  tcpdump -i lo -w "$work/tcpdump.pcap" "tcp port $1" 2> "$work/tcpdump.log" & tcpd=$!; pids+=($tcpd)
  for i in $(seq 500); do grep -q "privileges dropped" "$work/teardown.log" && grep -q "listening on lo" "$work/tcpdump.log" && break; sleep 0.01; done
}

# Stops both, then prints the table for what they captured between the two CPU readings.
report() {
  local title=$1
  sleep 0.5
  kill -INT $td $tcpd
  wait $td $tcpd 2>/dev/null || true
  td_packets=$(grep -o '[0-9]* packets written' "$work/teardown.log" | cut -d' ' -f1)
  td_drops=$(grep -o 'dropped [0-9]*' "$work/teardown.log" | cut -d' ' -f2)
  tcpd_packets=$(grep -o '^[0-9]* packets captured' "$work/tcpdump.log" | cut -d' ' -f1)
  tcpd_drops=$(grep -o '^[0-9]* packets dropped by kernel' "$work/tcpdump.log" | cut -d' ' -f1)
  awk -v title="$title" \
      -v tp="$td_packets" -v td="$td_drops" -v tc=$((td1 - td0)) \
      -v dp="$tcpd_packets" -v dd="$tcpd_drops" -v dc=$((tcpd1 - tcpd0)) 'BEGIN {
    tus = tc / 1e3 / (tp ? tp : 1); dus = dc / 1e3 / (dp ? dp : 1);
    printf "%s\n", title;
    printf "%-18s %10s %8s %10s %12s\n", "", "packets", "dropped", "CPU s", "CPU us/pkt";
    printf "%-18s %10d %8d %10.3f %12.3f\n", "teardown capture", tp, td, tc / 1e9, tus;
    printf "%-18s %10d %8d %10.3f %12.3f\n", "tcpdump -w", dp, dd, dc / 1e9, dus;
    printf "ratio teardown/tcpdump, CPU per packet: %.2f\n\n", (dus > 0 ? tus / dus : 0);
  }' | tee -a "$work/tables"
}

for case in $cases; do
 for run in $(seq "$runs"); do
  [ "$runs" = 1 ] || echo "$case, run $run of $runs"
  case $case in
  flood)
    start_captures 8000
    "$bin" server --reply-forever > /dev/null & srv=$!; pids+=($srv)
    for i in $(seq 500); do "$bin" sockets --port 8000 --state listen | grep -q LISTEN && break; sleep 0.01; done
    "$bin" client > /dev/null & cli=$!; pids+=($cli)
    td0=$(cpu_ns $td); tcpd0=$(cpu_ns $tcpd)
    sleep "$seconds"
    td1=$(cpu_ns $td); tcpd1=$(cpu_ns $tcpd)
    # Gone before the next run's server listens: a client would find this one closing.
    kill $cli $srv 2>/dev/null || true
    wait $cli $srv 2>/dev/null || true
    report "flood: $seconds s of the writing-forever server on lo (tcp port 8000)"
    ;;
  busy)
    /usr/sbin/nginx -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" & ngx=$!; pids+=($ngx)
    for i in $(seq 500); do ss -Hltn 'sport = :8080' | grep -q . && break; sleep 0.01; done
    start_captures 8080
    td0=$(cpu_ns $td); tcpd0=$(cpu_ns $tcpd)
    started=$(date +%s.%N)
    ab -q -n "$connections" -c 16 http://127.0.0.1:8080/ > "$work/ab.log"
    ended=$(date +%s.%N)
    sleep 0.5
    td1=$(cpu_ns $td); tcpd1=$(cpu_ns $tcpd)
    rate=$(awk -v n="$connections" -v a="$started" -v b="$ended" 'BEGIN { printf "%.0f", n / (b - a) }')
    report "busy: nginx (keepalive_timeout 0) and ab -n $connections -c 16 on lo (tcp port 8080), $rate connections/s"
    kill $ngx 2>/dev/null || true
    wait $ngx 2>/dev/null || true
    ;;
  *) echo "unknown case $case (flood, busy)" >&2; exit 2 ;;
  esac
 done
done
# The median of each case's ratios (the title's first word names the case).
[ "$runs" = 1 ] || awk '/^(flood|busy):/ { c = $1 } /^ratio/ { r[c] = r[c] " " $NF }
  END { for (c in r) { n = split(r[c], v, " ");
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        printf "%s median of %d runs, CPU per packet teardown/tcpdump: %.2f (runs:%s)\n", c, n,
               (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2), r[c] } }' "$work/tables"
INNER
