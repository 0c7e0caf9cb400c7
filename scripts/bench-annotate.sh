#!/usr/bin/env bash
# Benchmark: teardown's offline readers beside tcpdump doing the same reading or writing, on
# two real captures made by tcpdump in a private network namespace:
#   one.pcap   1M segments of one connection (the article's writing-forever server);
#   many.pcap  a busy server: nginx (Debian's nginx-light) with `keepalive_timeout 0`, so the
#              server closes first, and ApacheBench `ab -n 100000 -c 16`: 100k connections,
#              about 1M packets, each connection closed, TIME_WAIT piling up.
# Each command runs three times; the table shows the median wall time and CPU time (user +
# system: steadier than wall time on a busy machine), the peak RSS, and the ratios to the
# tcpdump command that does the same reading (to /dev/null) or writing (to a file).
#
#   sudo scripts/bench-annotate.sh [SEGMENTS] [CONNECTIONS]
#   BASELINE=/path/to/an/older/teardown ...   also times that binary, side by side
#   SKIP_TSHARK=1 ...                         leaves tshark out (about 20 s a run on many.pcap)
#   KEEP=DIR ...                              keeps the captures and outputs in DIR
set -euo pipefail
segments=${1:-1000000}
connections=${2:-100000}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/busy-server.sh
. "$root/scripts/busy-server.sh"
for tool in tcpdump python3 capinfos ab; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
[ -x /usr/sbin/nginx ] || { echo "needs nginx: apt-get install nginx-light" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (the captures): run it with sudo" >&2; exit 2; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/release/teardown"
if [ -n "${KEEP:-}" ]; then
  work=$KEEP; mkdir -p "$work"
else
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fi

# 1. One connection, $segments segments.
unshare -n bash -s "$bin" "$work" "$segments" <<'INNER'
set -euo pipefail
bin=$1 work=$2 n=$3
ip link set lo up
tcpdump -i lo -c "$n" -w "$work/one.pcap" 'tcp port 8000' 2>/dev/null & td=$!
sleep 0.5
"$bin" server --reply-forever > /dev/null & srv=$!
for i in $(seq 500); do "$bin" sockets --port 8000 --state listen | grep -q LISTEN && break; sleep 0.01; done
"$bin" client > /dev/null & cli=$!
wait $td
kill $cli $srv 2>/dev/null || true; wait 2>/dev/null || true
INNER

# 2. A busy server: $connections short connections from ab to nginx, the server closing first.
write_nginx_conf "$work/nginx"
unshare -n bash -s "$work" "$connections" <<'INNER'
set -euo pipefail
work=$1 n=$2
ip link set lo up
tcpdump -i lo -B 65536 -w "$work/many.pcap" 'tcp port 8080' 2> "$work/tcpdump-many.log" & td=$!
/usr/sbin/nginx -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" & ngx=$!
for i in $(seq 500); do
  grep -q "listening on lo" "$work/tcpdump-many.log" && ss -Hltn 'sport = :8080' | grep -q . && break
  sleep 0.01
done
ab -q -n "$n" -c 16 http://127.0.0.1:8080/ > "$work/ab.log"
sleep 0.5
kill -INT $td; wait $td || true
kill $ngx; wait $ngx 2>/dev/null || true
grep -q '^0 packets dropped by kernel' "$work/tcpdump-many.log" ||
  { echo "tcpdump dropped packets making many.pcap:" >&2; cat "$work/tcpdump-many.log" >&2; exit 1; }
INNER

# Wall time and peak memory of each command, on each file.
python3 - "$bin" "$work" "${BASELINE:-}" "${SKIP_TSHARK:-}" <<'PY'
import os, subprocess, sys, time
bin, work, baseline, skip_tshark = sys.argv[1:5]
def measure(cmd):
    # The median of three runs: one alone swings with the page cache and the other core.
    runs = [once(cmd) for _ in range(3)]
    wall = sorted(r[0] for r in runs)[1]
    cpu = sorted(r[1] for r in runs)[1]
    return wall, cpu, max(r[2] for r in runs), max(r[3] for r in runs)
def once(cmd):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1); os.dup2(fd, 2)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, status
def mb(path):
    return os.path.getsize(path) / 1e6
for name in ("one", "many"):
    f = f"{work}/{name}.pcap"
    n = int(subprocess.run(["capinfos", "-c", "-M", f], capture_output=True, text=True).stdout.split()[-1])
    conns = subprocess.run([bin, "summary", f], capture_output=True, text=True).stdout.count("\n")
    # (label, command, the row it is measured against, the file it writes)
    td_out, an_out = f"{work}/{name}.tcpdump.pcap", f"{work}/{name}.annotated.pcapng"
    rows = [
        ("tcpdump -r F -w /dev/null", ["tcpdump", "-r", f, "-w", "/dev/null"], None, None),
        ("teardown summary F", [bin, "summary", f], 0, None),
        ("teardown annotate F -o /dev/null", [bin, "annotate", f, "-o", "/dev/null"], 0, None),
        ("tcpdump -r F -w OUT", ["tcpdump", "-r", f, "-w", td_out], None, td_out),
        ("teardown annotate F -o OUT", [bin, "annotate", f, "-o", an_out], 3, an_out),
    ]
    if baseline:
        rows += [
            ("baseline summary F", [baseline, "summary", f], 0, None),
            ("baseline annotate F -o /dev/null", [baseline, "annotate", f, "-o", "/dev/null"], 0, None),
            ("baseline annotate F -o OUT", [baseline, "annotate", f, "-o", f"{work}/{name}.base.pcapng"], 3,
             f"{work}/{name}.base.pcapng"),
        ]
    if not skip_tshark:
        rows.append(("tshark -r F -T fields -e frame.number",
                     ["tshark", "-r", f, "-T", "fields", "-e", "frame.number"], 0, None))
    print(f"{name}.pcap: {n} packets, {conns} connections, {mb(f):.0f} MB")
    print(f"| {'command':38} | {'wall s':>7} | {'× tcpdump':>9} | {'CPU s':>6} | {'× tcpdump':>9} | {'peak MiB':>8} | {'output / input':>14} |")
    print(f"|{'-' * 40}|{'-' * 9}|{'-' * 11}|{'-' * 8}|{'-' * 11}|{'-' * 10}|{'-' * 16}|")
    done = []
    for label, cmd, against, out in rows:
        wall, cpu, mib, status = measure(cmd)
        done.append((wall, cpu))
        base = done[-1] if against is None else done[against]
        size = f"{mb(out):.0f} / {mb(f):.0f} MB" if out else ""
        bad = "" if status == 0 else f"  (exit status {status})"
        print(f"| {label:38} | {wall:7.3f} | {wall / base[0]:9.2f} | {cpu:6.3f} | {cpu / max(base[1], 1e-3):9.2f} | {mib:8.1f} | {size:>14} |{bad}")
    print()
PY
