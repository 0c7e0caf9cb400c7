#!/usr/bin/env bash
# Benchmark: `teardown capture` and `tcpdump -i lo -w` side by side, capturing the same
# flood (the article's writing-forever server and a reading client) in a private network
# namespace. Prints packets captured, kernel drops and CPU per packet for each, and the ratio.
#
#   sudo scripts/bench-capture.sh [SECONDS]        (needs tcpdump; builds teardown --release)
#
# Nothing is left behind: the namespace ends with the script, and a trap stops every process.
set -euo pipefail
seconds=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
command -v tcpdump >/dev/null || { echo "needs tcpdump: apt-get install tcpdump" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root: run it with sudo" >&2; exit 2; }
[ -n "${TEARDOWN_BIN:-}" ] || cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="${TEARDOWN_BIN:-$root/target/release/teardown}"
work=$(mktemp -d)

exec unshare -n bash -s "$bin" "$work" "$seconds" <<'INNER'
set -euo pipefail
bin=$1 work=$2 seconds=$3
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
ip link set lo up
# Nanoseconds the process has run (schedstat: exact, where utime + stime in /proc/PID/stat
# are sampled at 10 ms ticks, too coarse for a quarter second of CPU). Both are single-threaded.
cpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }

"$bin" capture --port 8000 -o "$work/teardown.pcapng" 2> "$work/teardown.log" & td=$!; pids+=($td)
tcpdump -i lo -w "$work/tcpdump.pcap" 'tcp port 8000' 2> "$work/tcpdump.log" & tcpd=$!; pids+=($tcpd)
for i in $(seq 500); do grep -q "privileges dropped" "$work/teardown.log" && grep -q "listening on lo" "$work/tcpdump.log" && break; sleep 0.01; done

"$bin" server --reply-forever > /dev/null & srv=$!; pids+=($srv)
for i in $(seq 500); do "$bin" sockets --port 8000 --state listen | grep -q LISTEN && break; sleep 0.01; done
"$bin" client > /dev/null & cli=$!; pids+=($cli)
td0=$(cpu_ns $td); tcpd0=$(cpu_ns $tcpd)
sleep "$seconds"
td1=$(cpu_ns $td); tcpd1=$(cpu_ns $tcpd)
kill $cli $srv 2>/dev/null || true
sleep 0.5
kill -INT $td $tcpd
wait $td $tcpd 2>/dev/null || true

td_packets=$(grep -o '[0-9]* packets written' "$work/teardown.log" | cut -d' ' -f1)
td_drops=$(grep -o 'dropped [0-9]*' "$work/teardown.log" | cut -d' ' -f2)
tcpd_packets=$(grep -o '^[0-9]* packets captured' "$work/tcpdump.log" | cut -d' ' -f1)
tcpd_drops=$(grep -o '^[0-9]* packets dropped by kernel' "$work/tcpdump.log" | cut -d' ' -f1)
awk -v s="$seconds" \
    -v tp="$td_packets" -v td="$td_drops" -v tc=$((td1 - td0)) \
    -v dp="$tcpd_packets" -v dd="$tcpd_drops" -v dc=$((tcpd1 - tcpd0)) 'BEGIN {
  tus = tc / 1e3 / (tp ? tp : 1); dus = dc / 1e3 / (dp ? dp : 1);
  printf "flood: %d s of the writing-forever server on lo (tcp port 8000)\n", s;
  printf "%-18s %10s %8s %10s %12s\n", "", "packets", "dropped", "CPU s", "CPU us/pkt";
  printf "%-18s %10d %8d %10.3f %12.3f\n", "teardown capture", tp, td, tc / 1e9, tus;
  printf "%-18s %10d %8d %10.3f %12.3f\n", "tcpdump -w", dp, dd, dc / 1e9, dus;
  printf "ratio teardown/tcpdump, CPU per packet: %.2f\n", (dus > 0 ? tus / dus : 0);
}'
INNER
