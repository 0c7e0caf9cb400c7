//! `teardown why` against real situations, each built inside a private network namespace
//! by a small Python program that then asks `teardown why --json` there.

use std::process::Command;

use serde_json::Value;

use crate::helper::*;

/// Builds `situation` on 127.0.0.1:8000 in a fresh namespace, runs `why TARGET --json` in it
/// while the sockets are held, and returns (exit code, answer, pid of the holder process).
const SETUP: &str = r#"
import json, os, socket, subprocess, sys, time
situation, target, binary = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
PORT = 8000

def wait_state(hexstate):
    # Until a socket with local port 8000 is in that state (kernel numbering).
    for _ in range(1000):
        for line in open("/proc/net/tcp").read().splitlines()[1:]:
            cols = line.split()
            if cols[1].endswith(":1F40") and cols[3] == hexstate:
                return
        time.sleep(0.005)
    raise SystemExit("state %s never came" % hexstate)

def listener(addr="127.0.0.1", reuseport=False):
    s = socket.socket()
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((addr, PORT))
    s.listen()
    return s

keep = []
if situation == "listener":
    keep.append(listener())
elif situation == "wildcard":
    keep.append(listener("0.0.0.0"))
elif situation == "reuseport":
    keep += [listener(reuseport=True), listener(reuseport=True)]
elif situation in ("time-wait", "orphan", "close-wait"):
    l = listener()
    c = socket.create_connection(("127.0.0.1", PORT))
    a, _ = l.accept()
    if situation == "close-wait":
        c.close()            # the client closes first; the server never does
        l.close()
        keep.append(a)
        wait_state("08")
    else:
        a.close(); l.close() # the server closes first
        if situation == "time-wait":
            c.recv(10); c.close()
            wait_state("06")
        else:
            keep.append(c)   # the client never closes: an orphaned FIN_WAIT_2
            wait_state("05")
elif situation != "free":
    raise SystemExit("unknown situation")
out = subprocess.run([binary, "why", target, "--json"], capture_output=True, text=True)
print(json.dumps({"pid": os.getpid(), "code": out.returncode, "stdout": out.stdout, "stderr": out.stderr}))
"#;

/// Runs a Python `script` with `args` in a fresh network namespace; it prints a JSON report
/// whose "stdout" is what `why --json` printed. Returns the report and that answer.
fn python_in_netns(script: &str, args: &[&str]) -> (Value, Value) {
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "python3", "-c", script]).args(args);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let report: Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}{run}"));
    let stdout = report["stdout"].as_str().unwrap();
    let answer: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", report["stderr"]));
    (report, answer)
}

fn why_in(situation: &str, target: &str) -> (i32, Value, u64) {
    let (report, answer) = python_in_netns(SETUP, &[situation, target, BIN]);
    (
        report["code"].as_i64().unwrap() as i32,
        answer,
        report["pid"].as_u64().unwrap(),
    )
}

fn errnos(answer: &Value) -> Vec<Option<&str>> {
    answer["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["errno_name"].as_str())
        .collect()
}

fn explanation(answer: &Value) -> String {
    answer["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

const IN_USE: Option<&str> = Some("EADDRINUSE");

#[test]
fn a_live_listener_is_named_with_its_pid() {
    if !root("why_listener") {
        return;
    }
    let (code, a, pid) = why_in("listener", "127.0.0.1:8000");
    assert_eq!(code, 1, "{a:#}");
    assert_eq!(a["bind_ok"], false);
    assert_eq!(errnos(&a), [IN_USE; 4]);
    let h = &a["holders"][0];
    assert_eq!(
        (h["state"].as_str(), h["pid"].as_u64()),
        (Some("LISTEN"), Some(pid)),
        "{a:#}"
    );
    assert_eq!(h["user"], "root");
    assert!(
        h["command"].as_str().unwrap().contains("python3 -c"),
        "{a:#}"
    );
    let why = explanation(&a);
    assert!(why.contains(&format!("pid {pid} (")), "{why}");
    assert!(
        why.len() < 400,
        "a command line is shortened in prose: {why}"
    );
    assert!(explanation(&a).contains("a live listener"), "{a:#}");
    assert_eq!(
        a["fixes"][0],
        format!("Stop the process that listens (pid {pid}, python3) or choose another port.")
    );
}

#[test]
fn time_wait_after_an_active_close_has_no_owner() {
    if !root("why_time_wait") {
        return;
    }
    let (code, a, _) = why_in("time-wait", "127.0.0.1:8000");
    assert_eq!(code, 1, "{a:#}");
    assert_eq!(errnos(&a), [IN_USE; 4], "{a:#}");
    let h = &a["holders"][0];
    assert_eq!(h["state"], "TIME_WAIT", "{a:#}");
    assert_eq!(h["pid"], Value::Null);
    assert_eq!(h["timer"], "timewait");
    assert!(h["timer_remaining_ms"].as_u64().unwrap() > 55_000);
    let why = explanation(&a);
    assert!(
        why.contains("waits in TIME_WAIT: this machine closed it first"),
        "{why}"
    );
    assert!(
        why.contains("Even with SO_REUSEADDR the bind fails"),
        "{why}"
    );
}

#[test]
fn an_orphaned_fin_wait_2_blocks_too() {
    if !root("why_orphan") {
        return;
    }
    let (code, a, pid) = why_in("orphan", "8000");
    assert_eq!(code, 1, "{a:#}");
    assert_eq!(a["target"], "0.0.0.0:8000");
    assert_eq!(errnos(&a), [IN_USE; 4], "{a:#}");
    let states: Vec<&str> = a["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["FIN_WAIT_2"], "{a:#}");
    assert_eq!(a["holders"][0]["pid"], Value::Null);
    let why = explanation(&a);
    assert!(why.contains("sits in FIN_WAIT_2"), "{a:#}");
    // The client's end is on this machine, in CLOSE_WAIT, held by the setup program: named.
    let client = a["holders"][0]["peer"].as_str().unwrap();
    assert_eq!(a["peers"][0]["local"], client, "{a:#}");
    assert_eq!(a["peers"][0]["state"], "CLOSE_WAIT", "{a:#}");
    assert_eq!(a["peers"][0]["pid"], pid, "{a:#}");
    assert!(
        why.contains(&format!(
            "The other end, {client}, is on this machine: pid {pid} ("
        )) && why.contains("python3 -c"),
        "{why}"
    );
    assert!(
        why.contains("holds it in CLOSE_WAIT. The FIN reached it, but that program has not closed its socket; fix it there"),
        "{why}"
    );
    assert_eq!(
        a["fixes"][0],
        format!(
            "Fix pid {pid} (python3): it holds the other end, {client}, in CLOSE_WAIT; it must \
             close() its socket once read() returns 0."
        )
    );
}

#[test]
fn close_wait_held_by_a_live_process() {
    if !root("why_close_wait") {
        return;
    }
    let (code, a, pid) = why_in("close-wait", "127.0.0.1:8000");
    assert_eq!(code, 1, "{a:#}");
    assert_eq!(errnos(&a)[0], IN_USE);
    let h = &a["holders"][0];
    assert_eq!(
        (h["state"].as_str(), h["pid"].as_u64()),
        (Some("CLOSE_WAIT"), Some(pid)),
        "{a:#}"
    );
    assert!(explanation(&a).contains("has not called close()"), "{a:#}");
}

#[test]
fn a_wildcard_listener_blocks_127_0_0_1() {
    if !root("why_wildcard") {
        return;
    }
    let (code, a, pid) = why_in("wildcard", "127.0.0.1:8000");
    assert_eq!(code, 1, "{a:#}");
    assert_eq!(errnos(&a), [IN_USE; 4]);
    let h = &a["holders"][0];
    assert_eq!(
        (h["local"].as_str(), h["pid"].as_u64()),
        (Some("0.0.0.0:8000"), Some(pid))
    );
    assert!(
        explanation(&a).contains("which covers every local address, 127.0.0.1 included"),
        "{a:#}"
    );
}

#[test]
fn a_reuseport_group_admits_a_reuseport_socket() {
    if !root("why_reuseport") {
        return;
    }
    let (code, a, pid) = why_in("reuseport", "127.0.0.1:8000");
    assert_eq!(code, 1, "{a:#}");
    // no option, SO_REUSEADDR, SO_REUSEPORT, both
    assert_eq!(errnos(&a), [IN_USE, IN_USE, None, None], "{a:#}");
    let pids: Vec<u64> = a["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, [pid, pid]);
    assert!(explanation(&a).contains("It set SO_REUSEPORT"), "{a:#}");
}

#[test]
fn colon_port_means_every_address_as_in_ss() {
    if !root("why_colon_port") {
        return;
    }
    let (code, a, _) = why_in("orphan", ":8000");
    assert_eq!(code, 1, "{a:#}");
    assert_eq!(a["target"], "0.0.0.0:8000", "{a:#}");
    assert_eq!(a["holders"][0]["state"], "FIN_WAIT_2", "{a:#}");
}

#[test]
fn a_free_port_exits_0() {
    if !root("why_free") {
        return;
    }
    let (code, a, _) = why_in("free", "8000");
    assert_eq!(code, 0, "{a:#}");
    assert_eq!(a["bind_ok"], true);
    assert_eq!(a["holders"], Value::Array(vec![]));
}

#[test]
fn bad_targets_are_one_line_and_exit_2() {
    for (target, says) in [
        ("70000", "port 70000 is out of range"),
        ("localhost:8000", "is a host name"),
        (
            "192.0.2.1:8000",
            "192.0.2.1 is not an address of this machine",
        ),
        (
            "999.1.1.1:80",
            "teardown: 999.1.1.1 is not a valid IPv4 address (four numbers from 0 to 255",
        ),
    ] {
        let run = teardown(&["why", target]);
        assert_eq!(run.code, Some(2), "{run}");
        assert_eq!(run.stderr.lines().count(), 1, "{run}");
        assert!(run.stderr.contains(says), "{run}");
    }
    let run = teardown(&["why", "8000", "--netns", "teardown-no-such-namespace"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("no network namespace named"), "{run}");
}

#[test]
fn without_root_it_shows_what_a_user_may_see_and_says_what_it_could_not() {
    if !root("why_unprivileged") {
        return;
    }
    // A root-owned listener on the host's loopback, asked about by nobody.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cmd = as_nobody_cmd();
    cmd.args(["why", &addr, "--json"]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(1), "{run}");
    let a: Value = serde_json::from_str(&run.stdout).unwrap();
    let h = &a["holders"][0];
    assert_eq!(h["state"], "LISTEN", "{run}");
    assert_eq!(
        h["pid"],
        Value::Null,
        "another user's process stays hidden{run}"
    );
    assert_eq!(
        a["unseen"][0],
        "1 socket belongs to a process this user may not look into: run with sudo (or as root) \
         to name it",
        "{run}"
    );
    // Looking into a namespace needs root: one line, exit 2.
    let mut cmd = as_nobody_cmd();
    cmd.args(["why", "8000", "--netns", "x"]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
}

/// In a fresh namespace: a 6-port range, `closed` connections to 127.0.0.1:8000 closed by the
/// client first (TIME_WAIT on the client's port), then `why --connect` and one more connect().
const CONNECT_SETUP: &str = r#"
import json, socket, subprocess, sys, time
closed, binary, reuse, dest, narrow = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "narrow"
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
if narrow:
    open("/proc/sys/net/ipv4/ip_local_port_range", "w").write("41000 41005")
open("/proc/sys/net/ipv4/tcp_tw_reuse", "w").write(reuse)
l = socket.socket(); l.bind(("127.0.0.1", 8000)); l.listen()
for _ in range(closed):
    c = socket.create_connection(("127.0.0.1", 8000))
    a, _ = l.accept()
    c.close(); a.recv(10); a.close()
def time_wait():
    rows = open("/proc/net/tcp").read().splitlines()[1:]
    return sum(1 for r in rows if r.split()[2].endswith(":1F40") and r.split()[3] == "06")
for _ in range(1000):
    if time_wait() == closed: break
    time.sleep(0.005)
out = subprocess.run([binary, "why", "--connect", dest, "--json"], capture_output=True, text=True)
text = subprocess.run([binary, "why", "--connect", dest], capture_output=True, text=True)
try:
    socket.create_connection(("127.0.0.1", 8000)).close(); errno = 0
except OSError as e:
    errno = e.errno
print(json.dumps({"code": out.returncode, "stdout": out.stdout, "stderr": out.stderr, "text": text.stdout, "connect_errno": errno}))
"#;

/// The 6-port range, tcp_tw_reuse 0, `why --connect 127.0.0.1:8000`.
fn why_connect_after(closed: usize) -> (Value, Value) {
    why_connect(closed, "0", "127.0.0.1:8000", "narrow")
}

/// `range`: "narrow" (41000–41005) or "default".
fn why_connect(closed: usize, tw_reuse: &str, dest: &str, range: &str) -> (Value, Value) {
    python_in_netns(
        CONNECT_SETUP,
        &[&closed.to_string(), BIN, tw_reuse, dest, range],
    )
}

fn longest_line(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn why_connect_counts_the_time_wait_ports_against_the_range() {
    if !root("why_connect") {
        return;
    }
    // All six ports in TIME_WAIT: the next connect() fails, and why says so (exit 1).
    let (report, answer) = why_connect_after(6);
    assert_eq!(report["connect_errno"], libc::EADDRNOTAVAIL, "{report}");
    assert_eq!(report["code"], 1, "{report}");
    assert_eq!(answer["destination"], "127.0.0.1:8000");
    assert_eq!(answer["port_range"], serde_json::json!([41000, 41005]));
    assert_eq!(answer["time_wait"], 6, "{answer}");
    assert_eq!(answer["held"], 6, "{answer}");
    assert_eq!(answer["exhausted"], true);
    assert_eq!(answer["tcp_tw_reuse"], 0);
    let text = report["text"].as_str().unwrap();
    assert!(
        flat(text).contains("6 of the 6 local ports (41000–41005) are held by connections to it, 6 of them in TIME_WAIT"),
        "{text}"
    );
    assert!(
        flat(text).contains("fails with EADDRNOTAVAIL (errno 99"),
        "{text}"
    );
    assert!(text.contains("tcp_tw_recycle"), "{text}");
    // Wrapped as plain `why` wraps.
    assert!(longest_line(text) <= 90, "{text}");
    assert!(
        text.contains("What to do:\n  - Reuse connections"),
        "{text}"
    );
    // Four of six: room left, exit 0, and the connect() works.
    let (report, answer) = why_connect_after(4);
    assert_eq!(report["connect_errno"], 0, "{report}");
    assert_eq!(report["code"], 0, "{report}");
    assert_eq!(answer["time_wait"], 4, "{answer}");
    assert_eq!(answer["exhausted"], false);
}

#[test]
fn why_connect_with_nothing_held_says_so_briefly() {
    if !root("why_connect_nothing_held") {
        return;
    }
    // A fresh namespace, Linux's default range (32768–60999), no connection at all.
    let (report, answer) = why_connect(0, "2", "127.0.0.1:8000", "default");
    assert_eq!(report["code"], 0, "{report}");
    assert_eq!(answer["held"], 0, "{answer}");
    assert_eq!(answer["fixes"], serde_json::json!([]), "{answer}");
    // The README's number: 28232 ports ÷ 60 s, rounded half up.
    assert_eq!(answer["sustainable_per_second"], 471, "{answer}");
    let text = report["text"].as_str().unwrap();
    assert!(
        flat(text).starts_with(
            "connect() to 127.0.0.1:8000 in this network namespace: no local port \
             (32768–60999, 28232 ports) is held by a connection to it"
        ),
        "{text}"
    );
    assert!(!text.contains("What to do"), "{text}");
    assert!(text.lines().count() <= 3, "{text}");
    assert!(longest_line(text) <= 90, "{text}");
}

#[test]
fn why_connect_resolves_localhost_and_knows_tw_reuse_2_covers_loopback() {
    if !root("why_connect_localhost") {
        return;
    }
    // tcp_tw_reuse = 2 (Linux's default: loopback only), 4 of 6 ports in TIME_WAIT.
    let (report, answer) = why_connect(4, "2", "localhost:8000", "narrow");
    assert_eq!(report["code"], 0, "{report}");
    assert_eq!(answer["destination"], "127.0.0.1:8000", "{answer}");
    assert_eq!(answer["host"], "localhost", "{answer}");
    assert_eq!(answer["time_wait"], 4, "{answer}");
    assert_eq!(answer["tcp_tw_reuse"], 2, "{answer}");
    assert_eq!(answer["tw_reuse_applies"], true, "{answer}");
    let text = report["text"].as_str().unwrap();
    assert!(
        flat(text).starts_with(
            "connect() to 127.0.0.1:8000 (localhost) in this network namespace: 4 of the 6"
        ),
        "{text}"
    );
    assert!(!text.contains("Set net.ipv4.tcp_tw_reuse"), "{text}");
    assert!(
        flat(text).contains(
            "net.ipv4.tcp_tw_reuse is 2 (Linux's default: loopback only), which covers 127.0.0.1"
        ),
        "{text}"
    );
}

#[test]
fn why_connect_gives_one_line_for_a_bare_port_or_a_bad_address() {
    for (dest, says) in [
        (
            "8000",
            "teardown: --connect 8000: give the server's address and port, e.g. --connect 127.0.0.1:8000",
        ),
        (
            "999.1.1.1:80",
            "teardown: --connect 999.1.1.1:80: 999.1.1.1 is not a valid IPv4 address",
        ),
        (
            "no-such-host.invalid:80",
            "teardown: --connect no-such-host.invalid:80: cannot resolve no-such-host.invalid",
        ),
    ] {
        let run = teardown(&["why", "--connect", dest]);
        assert_eq!(run.code, Some(2), "{run}");
        assert_eq!(run.stderr.lines().count(), 1, "{run}");
        assert!(run.stderr.starts_with(says), "{run}");
    }
}
