#!/usr/bin/env bash
# netns-lab.sh: the article's experiment between two machines, built by hand.
#
#   sudo scripts/netns-lab.sh [--reuseaddr] [--client-never-closes] [--keep-captures DIR]
#
# Two network namespaces stand in for two machines: td-client-PID (10.77.0.1) and
# td-server-PID (10.77.0.2), PID being this script's. A veth pair is the cable between them.
# Everything is built with plain iproute2 commands, so you can type them yourself.
# Then teardown's own programs run the article's experiment across the cable:
#
#   1. the server (in td-server) binds 10.77.0.2:8000, accepts one client, replies, closes
#      first and exits;
#   2. the client (in td-client) connects, writes, reads until EOF and closes.
#      With --client-never-closes it neither reads nor closes (the article's second case);
#   3. the server machine's kernel still holds the old connection: TIME_WAIT, because the
#      server closed first (or FIN_WAIT_2, when the client never closes). The socket table
#      of each namespace is printed, as ss would show it;
#   4. the server restarts at once. Without --reuseaddr its bind() fails: "bind: Address
#      already in use" (EADDRINUSE). With --reuseaddr (on both runs, as Linux needs) the bind
#      succeeds, and a second client lets the new server finish.
#
# Reading the output:
#   == N. ...        a step
#   -- ...           what happens next, and why
#   + ip ...         a command as it runs. Copy it into a root shell and it does the same.
#                    (Each one also runs under timeout(1), which the echo leaves out, so no
#                    step can hang. `teardown` stands for the binary in use, named at the top.)
#   ... &            a command left running in the background
#     server| ...    what a program printed, prefixed with its name
#   verdict: ...     the last line: whether the run showed what it was meant to show
#
# --keep-captures DIR also records the client's veth with `teardown capture` into
# DIR/netns-lab*.pcapng, each segment commented with the TCP state changes it caused.
#
# The binary: $TEARDOWN_BIN, else `teardown` on PATH, else the newer of target/release and
# target/debug's teardown in this repository (cargo build --release, or cargo build).
#
# Nothing is left behind: a trap on EXIT, INT, TERM, HUP and PIPE (Ctrl-C, an error, a
# closed terminal, a `| head`) stops the background programs and deletes both namespaces,
# which takes the veth pair with them. Only SIGKILL escapes it; then remove them by hand:
#   ip netns del td-client-PID; ip netns del td-server-PID
#
# Exit status: 0 the run showed it (the restart's bind failed without --reuseaddr, succeeded
# with it, and the table showed the old connection's state), 1 it did not, 2 a usage or
# environment error (not root, no binary, a step failed), 128+N killed by signal N (130: Ctrl-C).
set -Eeuo pipefail

usage() { sed -n '4p' "$0" | sed 's/^#  */usage: /'; }
die() { echo "netns-lab.sh: $*" >&2; exit 2; }

reuseaddr=false never_closes=false keep_dir=""
while [ $# -gt 0 ]; do
  case $1 in
    --reuseaddr) reuseaddr=true ;;
    --client-never-closes) never_closes=true ;;
    --keep-captures) [ $# -ge 2 ] || die "--keep-captures needs a directory"; keep_dir=$2; shift ;;
    --keep-captures=*) keep_dir=${1#*=} ;;
    -h | --help) sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

# iproute2 lives in /usr/sbin, which sudo's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
[ "$(id -u)" -eq 0 ] || die "needs root (ip netns add): run it with sudo"
command -v ip >/dev/null || die "needs iproute2's ip: apt-get install iproute2"

# The teardown binary, made absolute: `ip netns exec` runs it from the same directory anyway,
# but an absolute path reads the same in every echoed command.
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${TEARDOWN_BIN:-}" ]; then
  bin=$TEARDOWN_BIN
  [ -x "$bin" ] || die "TEARDOWN_BIN=$bin is not an executable file"
elif command -v teardown >/dev/null; then
  bin=$(command -v teardown)
else
  # The README builds with --release, `cargo test` builds debug: the newer of the two.
  bin=""
  for candidate in "$repo/target/release/teardown" "$repo/target/debug/teardown"; do
    if [ -x "$candidate" ] && { [ -z "$bin" ] || [ "$candidate" -nt "$bin" ]; }; then
      bin=$candidate
    fi
  done
  [ -n "$bin" ] || die "no teardown binary: run \`cargo build --release\` in $repo, or set TEARDOWN_BIN"
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# Names carry this script's PID, so two runs at once never meet. A veth name may have at most
# 15 characters: td-c-4194304 (the largest PID) has 12.
ns_c=td-client-$$ ns_s=td-server-$$
veth_c=td-c-$$ veth_s=td-s-$$
addr_c=10.77.0.1 addr_s=10.77.0.2 port=8000
limit=10     # seconds any one command may take
bg_limit=60  # seconds a background program may live

work=$(mktemp -d /tmp/netns-lab.XXXXXX)
created=()   # the namespaces this run made (and so may delete)

# ---- helpers ---------------------------------------------------------------------------

# Why every program below runs in the background under `wait`: bash puts off a trap until
# the foreground command ends, and then drops a Ctrl-C that did not kill that command.
# `wait` returns at once when a trapped signal comes, so the clean-up runs at once. For the
# same reason the text handling here uses bash's builtins only.

# quote CMD...: the command as a reader would type it, in $shown: the binary as `teardown`,
# odd words quoted.
quote() {
  local word
  shown=""
  for word in "$@"; do
    if [ "$word" = "$bin" ]; then
      word=teardown
    elif [[ ! $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      word="'${word//\'/\'\\\'\'}'"
    fi
    shown+="${shown:+ }$word"
  done
}

# bounded CMD...: runs CMD for at most $limit seconds and returns its exit status.
bounded() {
  local pid status=0
  timeout "$limit" "$@" &
  pid=$!
  wait "$pid" || status=$?
  return "$status"
}

# run CMD...: echoes CMD, then runs it (bounded).
run() {
  quote "$@"
  printf '+ %s\n' "$shown"
  bounded "$@"
}

# run_labelled NAME CMD...: as run, then prints CMD's output prefixed with NAME.
run_labelled() {
  local name=$1 status=0
  shift
  quote "$@"
  printf '+ %s\n' "$shown"
  bounded "$@" >"$work/$name.out" 2>&1 || status=$?
  label "$name" <"$work/$name.out"
  return "$status"
}

# run_bg NAME CMD...: echoes CMD, starts it in the background (for at most $bg_limit
# seconds) with its output in $work/NAME.log; its PID is left in $last_pid.
run_bg() {
  local name=$1
  shift
  quote "$@"
  printf '+ %s &\n' "$shown"
  # The job opens its log only once it runs: the file must exist before anyone reads it.
  : >"$work/$name.log"
  timeout "$bg_limit" "$@" >"$work/$name.log" 2>&1 &
  last_pid=$!
}

# Prints standard input prefixed with a program's name, indented.
label() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do printf '    %s| %s\n' "$1" "$line"; done
}
say() { printf -- '-- %s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }

# last_line FILE: the last line of FILE, in $last.
last_line() {
  local line
  last=""
  while IFS= read -r line || [ -n "$line" ]; do last=$line; done <"$1"
}

# contains FILE TEXT: true when a line of FILE contains TEXT.
contains() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line == *"$2"* ]] && return 0
  done <"$1"
  return 1
}

# poll SECONDS CMD...: runs CMD every 50 ms until it succeeds; false after SECONDS.
poll() {
  local tries=$(($1 * 20))
  shift
  until "$@"; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.05 &
    wait "$!"
  done
}

gone() { ! kill -0 "$1" 2>/dev/null; }

# stop PID [SIGNAL]: signals a background job's process group, which timeout(1) made its own:
# timeout and its program at once. (timeout alone could die of it while it forks, before it
# knows its program's PID, and leave the program running.) A job that has no group of its
# own yet gets the signal alone.
stop() { kill -"${2:-TERM}" -- "-$1" 2>/dev/null || kill -"${2:-TERM}" "$1" 2>/dev/null; }

# finish PID SECONDS: waits (at most SECONDS, then stops it) for a background program to
# end; its exit status goes in $rc.
finish() {
  poll "$2" gone "$1" || stop "$1" || true
  rc=0
  wait "$1" || rc=$?
}

# netns_empty NS: true when no process lives in namespace NS.
netns_empty() {
  ip netns pids "$1" >"$work/pids" 2>/dev/null
  [ ! -s "$work/pids" ]
}

# has_state NS STATE: true when namespace NS has a socket on the port in STATE.
has_state() {
  bounded "$bin" sockets --netns "$1" --port "$port" --state "$2" >"$work/state.out" 2>&1 &&
    contains "$work/state.out" "$2 "
}

# ---- clean-up, whatever happens --------------------------------------------------------

cleanup() {
  local status=$? pid pids ns
  # A second Ctrl-C must not cut the clean-up short; it takes a few seconds at most.
  trap '' INT TERM HUP PIPE
  trap - ERR
  set +e
  step "clean-up (exit status $status)"
  # Programs go first: a namespace that a process still lives in outlives `ip netns del`,
  # and its veth with it. The programs are this shell's jobs, each under timeout(1), one
  # started just as the Ctrl-C came included. (Listed through a file: `jobs` belongs to this
  # shell, not to the subshell of a $(...).)
  jobs -p >"$work/jobs"
  mapfile -t pids <"$work/jobs"
  for pid in "${pids[@]}"; do stop "$pid"; done
  for pid in "${pids[@]}"; do
    poll 3 gone "$pid" || stop "$pid" KILL
    wait "$pid" 2>/dev/null
  done
  for ns in "${created[@]}"; do
    [ -e "/run/netns/$ns" ] || continue
    # Whatever still lives inside (there should be nothing) would keep it alive: SIGKILL.
    ip netns pids "$ns" >"$work/pids" 2>/dev/null
    mapfile -t pids <"$work/pids"
    if [ ${#pids[@]} -gt 0 ]; then
      say "still inside $ns: ${pids[*]} (ip netns pids $ns): SIGKILL"
      kill -KILL "${pids[@]}" 2>/dev/null
      poll 2 netns_empty "$ns"
    fi
    # Deleting a namespace deletes the veth end inside it, and so the pair.
    run ip netns del "$ns"
  done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
# Output piped into `head` or `less` that stops reading: clean up all the same, silently.
trap 'exec >/dev/null; exit 141' PIPE
# A step that fails unexpectedly is an environment error (2), not "not shown" (1).
trap 'rc=$?; echo "netns-lab.sh: line $LINENO failed (exit $rc): $BASH_COMMAND" >&2; exit 2' ERR

# ---- 1. two machines and a cable -------------------------------------------------------

echo "netns-lab: teardown is $bin"
step "1. two network namespaces (two TCP stacks) joined by a veth pair"
for ns in "$ns_c" "$ns_s"; do
  if [ -e "/run/netns/$ns" ]; then
    die "namespace $ns exists already (a run killed with SIGKILL?): ip netns del $ns"
  fi
  # Noted before it exists: a Ctrl-C can come while `ip netns add` runs.
  created+=("$ns")
  run ip netns add "$ns"
done
say "the veth pair is born with one end in each namespace, so it never appears on the host"
run ip link add "$veth_c" netns "$ns_c" type veth peer name "$veth_s" netns "$ns_s"
run ip -n "$ns_c" addr add "$addr_c/24" dev "$veth_c"
run ip -n "$ns_s" addr add "$addr_s/24" dev "$veth_s"
for ns in "$ns_c" "$ns_s"; do run ip -n "$ns" link set lo up; done
run ip -n "$ns_c" link set "$veth_c" up
run ip -n "$ns_s" link set "$veth_s" up

name=netns-lab
$reuseaddr && name+=-reuseaddr
$never_closes && name+=-client-never-closes
if [ -n "$keep_dir" ]; then
  mkdir -p "$keep_dir"
  [[ $keep_dir == /* ]] || keep_dir=$PWD/$keep_dir
  pcap=$keep_dir/$name.pcapng
  say "record the cable at the client's end, every segment commented with its state changes"
  run_bg capture "$bin" capture -i "$veth_c" --netns "$ns_c" -f "tcp port $port" -o "$pcap"
  capture_pid=$last_pid
  # Traffic must wait until the capture socket is open, or the handshake is lost.
  if ! poll 5 contains "$work/capture.log" "listening on"; then
    label capture <"$work/capture.log"
    die "the capture did not start within 5 s"
  fi
  label capture <"$work/capture.log"
fi

# ---- 2. the article's experiment -------------------------------------------------------

server=(ip netns exec "$ns_s" "$bin" server --addr "$addr_s" --port "$port")
client=(ip netns exec "$ns_c" "$bin" client --addr "$addr_s" --port "$port")
$reuseaddr && server+=(--reuseaddr)
if $never_closes; then expected=FIN_WAIT_2; else expected=TIME_WAIT; fi

step "2. the article's experiment: the server closes first"
say "the server binds $addr_s:$port, listens, and waits for one client"
run_bg server "${server[@]}"
server_pid=$last_pid
quote "$bin" sockets --netns "$ns_s" --port "$port" --state LISTEN
printf '+ %s\n' "$shown"
say "(repeated until the server's kernel shows the listener, at most 5 s)"
if ! poll 5 has_state "$ns_s" LISTEN; then
  label server <"$work/server.log"
  die "the server never listened"
fi

if $never_closes; then
  say "the client connects and writes, then neither reads nor closes: it stays in the background"
  run_bg client "${client[@]}" --no-read
  client_pid=$last_pid
else
  say "the client connects, writes, reads until EOF (the server's FIN), then closes"
  run_labelled client "${client[@]}"
fi
finish "$server_pid" "$limit"
say "the server replied, closed first and exited (exit status $rc):"
label server <"$work/server.log"

# ---- 3. what the kernels still hold ----------------------------------------------------

step "3. the kernel's socket table in each namespace, as ss reads it"
if $never_closes; then
  say "the server's end waits for a FIN the client never sends: FIN_WAIT_2, with no process"
else
  say "whoever closes first keeps its end in TIME_WAIT for 60 s: here, the server"
fi
# The last segments are still crossing the veth when the programs return.
saw_state=false
poll 5 has_state "$ns_s" "$expected" && saw_state=true
run_labelled "server ns" "$bin" sockets --netns "$ns_s" --port "$port"
run_labelled "client ns" "$bin" sockets --netns "$ns_c" --port "$port"
if $never_closes; then
  say "the client's end is in CLOSE_WAIT, the unread reply in its Recv-Q; so far it printed:"
  label client <"$work/client.log"
fi

# ---- 4. the restart --------------------------------------------------------------------

step "4. restart the server at once, on the same address and port"
run_bg restart "${server[@]}"
restart_pid=$last_pid
decided() { gone "$restart_pid" || has_state "$ns_s" LISTEN; }
say "(the restart either fails at bind() and exits, or listens: waiting at most 5 s to see which)"
poll 5 decided || true
if has_state "$ns_s" LISTEN; then
  bound=true
  say "the bind succeeded: the new server listens. A second client lets it serve and exit"
  run_labelled client "${client[@]}"
  finish "$restart_pid" "$limit"
  restart_rc=$rc
  label restart <"$work/restart.log"
  say "the restarted server's exit status: $restart_rc"
else
  bound=false
  finish "$restart_pid" "$limit"
  restart_rc=$rc
  label restart <"$work/restart.log"
  say "the restarted server's exit status: $restart_rc"
fi

if [ -n "${client_pid:-}" ]; then
  say "stop the client that never closes: its kernel closes the socket for it, with an RST"
  say "(not a FIN: the reply in its Recv-Q was never read)"
  stop "$client_pid" || true
  finish "$client_pid" "$limit"
fi
if [ -n "${capture_pid:-}" ]; then
  say "stop the capture; it writes out what it has"
  stop "$capture_pid" || true
  finish "$capture_pid" "$limit"
  last_line "$work/capture.log"
  label capture <<<"$last"
  echo "capture: $pcap (open it in Wireshark: each packet has a comment)"
fi

# ---- verdict ---------------------------------------------------------------------------

echo
failed_in_use=false
[ "$restart_rc" -eq 1 ] && contains "$work/restart.log" EADDRINUSE && failed_in_use=true
if ! $saw_state; then
  echo "verdict: NOT shown: the server's old connection never showed $expected in $ns_s"
  exit 1
elif $reuseaddr && $bound && [ "$restart_rc" -eq 0 ]; then
  echo "verdict: shown: with SO_REUSEADDR on both runs the restart bound $addr_s:$port" \
    "and served a client, beside the old connection in $expected"
elif ! $reuseaddr && $failed_in_use; then
  echo "verdict: shown: the restart's bind() failed with EADDRINUSE (Address already in use)" \
    "while the old connection sat in $expected"
else
  want="the restart's bind to fail with EADDRINUSE"
  $reuseaddr && want="the restart to bind and serve"
  got="did not bind"
  $bound && got=bound
  echo "verdict: NOT shown: expected $want; the restart $got and exited with status $restart_rc"
  exit 1
fi
