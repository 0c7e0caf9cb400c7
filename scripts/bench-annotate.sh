#!/usr/bin/env bash
# Benchmark: `teardown annotate` beside `tcpdump -r IN -w /dev/null` (the floor of reading the
# file) and `tshark -r IN` (with its TCP analysis), on the same capture: 1M segments of one
# connection (the article's writing-forever server, captured by tcpdump in a private network
# namespace), and a synthetic capture of 100k short connections. Wall time and peak memory.
#
#   scripts/bench-annotate.sh [SEGMENTS]      (as root; needs tcpdump and tshark)
#   BASELINE=/path/to/an/older/teardown scripts/bench-annotate.sh
#                                             also times that binary, side by side
set -euo pipefail
segments=${1:-1000000}
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in tcpdump tshark python3; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (the capture): run it with sudo" >&2; exit 2; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/release/teardown"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

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

# 2. 100k short connections, one every 10 ms: handshake, a request, a reply, the close.
python3 - "$work/many.pcap" <<'PY'
import struct, sys
out = open(sys.argv[1], "wb")
out.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def frame(src, dst, sport, dport, seq, ack, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\0" * 12 + b"\x08\x00" + ip + tcp
S, A, F, P = 2, 16, 1, 8
cli, srv = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
for i in range(100_000):
    t = i * 0.01
    port = 1024 + i % 60000
    a, b = 1000, 5000
    segs = [
        (cli, srv, port, 80, a, 0, S, b""), (srv, cli, 80, port, b, a + 1, S | A, b""),
        (cli, srv, port, 80, a + 1, b + 1, A, b""), (cli, srv, port, 80, a + 1, b + 1, P | A, b"GET"),
        (srv, cli, 80, port, b + 1, a + 4, P | A, b"OK"), (srv, cli, 80, port, b + 3, a + 4, F | A, b""),
        (cli, srv, port, 80, a + 4, b + 4, F | A, b""), (srv, cli, 80, port, b + 4, a + 5, A, b""),
    ]
    for k, s in enumerate(segs):
        f = frame(*s)
        ts = t + k * 0.0001
        out.write(struct.pack("<IIII", int(ts), int(ts % 1 * 1e6), len(f), len(f)) + f)
PY

# Wall time and peak memory of each reader, on each file.
python3 - "$bin" "$work" "${BASELINE:-}" <<'PY'
import os, resource, subprocess, sys, time
bin, work, baseline = sys.argv[1], sys.argv[2], sys.argv[3]
def measure(cmd):
    # The median of three runs: one alone swings with the page cache and the other core.
    runs = sorted((once(cmd) for _ in range(3)), key=lambda r: r[0])
    return runs[1]
def once(cmd):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1); os.dup2(fd, 2)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, status
for name in ("one", "many"):
    f = f"{work}/{name}.pcap"
    n = int(subprocess.run(["capinfos", "-c", "-M", f], capture_output=True, text=True).stdout.split()[-1])
    rows = [
        ("tcpdump -r -w /dev/null", ["tcpdump", "-r", f, "-w", "/dev/null"]),
        ("teardown annotate -o /dev/null", [bin, "annotate", f, "-o", "/dev/null"]),
        ("teardown annotate -o FILE", [bin, "annotate", f, "-o", f"{work}/{name}.out.pcapng"]),
        ("teardown summary", [bin, "summary", f]),
    ]
    if baseline:
        rows += [
            ("baseline annotate -o /dev/null", [baseline, "annotate", f, "-o", "/dev/null"]),
            ("baseline annotate -o FILE", [baseline, "annotate", f, "-o", f"{work}/{name}.base.pcapng"]),
            ("baseline summary", [baseline, "summary", f]),
        ]
    rows.append(("tshark -r (TCP analysis)", ["tshark", "-r", f]))
    print(f"{name}.pcap: {n} packets, {os.path.getsize(f) / 1e6:.0f} MB")
    print(f"  {'':30} {'seconds':>8} {'peak MiB':>9} {'× tcpdump':>10}")
    floor = None
    for label, cmd in rows:
        secs, mib, status = measure(cmd)
        floor = floor or secs
        print(f"  {label:30} {secs:8.2f} {mib:9.1f} {secs / floor:10.2f}" + ("" if status == 0 else f"  (exit status {status})"))
PY
