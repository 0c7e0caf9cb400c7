//! The kernel's word (root): tracefs left as found whatever happens, the socket table,
//! and a run without tracefs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::helper::*;

/// The tracefs instances that exist now, seen from a private mount namespace so the host's
/// mounts are not touched here either.
fn instances() -> Vec<String> {
    tracefs_instances()
}

fn host_tracefs_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("tracefs"))
        .count()
}

#[test]
fn tracefs_is_left_as_found_after_a_run_ctrl_c_and_a_panic() {
    if !root("tracefs_left_as_found") {
        return;
    }
    let dir = TempDir::new();
    let mounts_before = host_tracefs_mounts();

    // A normal run: while it is paused its instance exists; afterwards it is gone.
    let (child, seen) = held_run(
        "active-close",
        "TEARDOWN_PAUSE_AFTER_STEP",
        "3",
        &dir.join("a.pcapng"),
    );
    let name = format!("teardown-{}-", child.id());
    let has = |name: &str| instances().iter().any(|i| i.starts_with(name));
    assert!(has(&name), "no instance {name}* during the run: {seen}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{seen}");
    assert!(!has(&name), "{name}* left behind after Ctrl-C");

    // A panic in the middle of the run.
    let (child, seen) = held_run(
        "active-close",
        "TEARDOWN_PANIC_AFTER_STEP",
        "5",
        &dir.join("b.pcapng"),
    );
    // The run had its tracer (it would have said so otherwise) when it panicked.
    assert!(!seen.contains("kernel confirmation is off"), "{seen}");
    let name = format!("teardown-{}-", child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{seen}{stderr}");
    assert!(stderr.contains("panicking on purpose"), "{stderr}");
    assert!(!has(&name), "{name}* left behind after a panic");

    // A whole run leaves no instance of its own. (Not "no dead instance at all": a parallel
    // test kills a run with SIGKILL on purpose, and its instance waits for the next run.)
    let child = Command::new(BIN)
        .args([
            "run",
            "active-close",
            "-w",
            dir.join("c.pcapng").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let name = format!("teardown-{}-", child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !has(&name),
        "{name}* left behind by a whole run: {:?}",
        instances()
    );
    assert_eq!(
        host_tracefs_mounts(),
        mounts_before,
        "the host's mounts changed"
    );
}

#[test]
fn a_run_killed_with_sigkill_leaves_an_instance_the_next_run_removes() {
    if !root("sigkill_instance") {
        return;
    }
    // Both runs in a PID namespace of their own: a run of a parallel test (another PID
    // namespace) leaves this one's instance alone, so the order of the tests cannot matter.
    let dir = TempDir::new();
    let script = r#"
        set -e
        bin=$1 d=$2
        mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
        ours() { ls /sys/kernel/tracing/instances | grep "^teardown-$pid-" || true; }
        TEARDOWN_PAUSE_AFTER_STEP=3 "$bin" run active-close -w "$d/a.pcapng" > "$d/a.out" 2>&1 &
        pid=$!
        for i in $(seq 500); do grep -q '^  3\. ' "$d/a.out" && break; sleep 0.01; done
        ours > "$d/during"
        kill -9 $pid; wait $pid || true
        ours > "$d/killed"
        "$bin" run active-close -w "$d/b.pcapng" > "$d/b.out" 2>&1 && echo 0 > "$d/code"
        ours > "$d/after"
        echo $pid > "$d/pid"
    "#;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        script,
        "sh",
        BIN,
    ])
    .arg(&dir.0);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let name = format!("teardown-{}-", read("pid").trim());
    assert!(
        read("during").starts_with(&name),
        "no instance {name}* during the run"
    );
    // Nothing could clean up after SIGKILL: the instance is still there.
    assert!(
        read("killed").starts_with(&name),
        "SIGKILL left no instance: nothing to test"
    );
    assert_eq!(read("code").trim(), "0", "{}", read("b.out"));
    assert_eq!(read("after"), "", "{name}* still there after the next run");
    let next = read("b.out");
    let line = next
        .lines()
        .find(|l| l.contains("left by a teardown that was killed"))
        .unwrap_or_else(|| panic!("the run did not say it removed it: {next}"));
    assert!(
        line.starts_with("note: removed 1 tracefs instance left by"),
        "{line}"
    );
    assert!(line.contains(&name), "{line}");
}

#[test]
fn without_tracefs_the_run_says_so_once_and_require_kernel_makes_it_an_error() {
    if !root("without_tracefs") {
        return;
    }
    let dir = world_writable_dir();
    let file = dir.join("x.pcapng");
    // As nobody, in a user namespace: tracefs cannot be mounted there.
    let as_nobody = |extra: &[&str]| {
        let mut cmd = as_nobody_cmd();
        cmd.args(["run", "active-close", "-w"])
            .arg(&file)
            .args(extra);
        run_cmd(cmd)
    };
    let run = as_nobody(&[]);
    if run.code == Some(2) && run.stderr.contains("needs root") {
        eprintln!("skipped: no unprivileged user namespaces here{run}");
        return;
    }
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(
        run.stdout.matches("kernel confirmation is off (").count(),
        1,
        "{run}"
    );
    assert!(!run.stdout.contains("kernel check:"), "{run}");
    let run = as_nobody(&["--require-kernel"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr.contains("kernel confirmation is not available"),
        "{run}"
    );
}

#[test]
fn sockets_shows_the_time_wait_a_host_run_left() {
    if !root("sockets_time_wait") {
        return;
    }
    let port = free_port().to_string();
    let dir = TempDir::new();
    let run = teardown(&[
        "run",
        "active-close",
        "--host",
        "--port",
        &port,
        "-w",
        dir.join("h.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let table = teardown(&["sockets", "--port", &port, "--json"]);
    assert_eq!(table.code, Some(0), "{table}");
    let json: serde_json::Value = serde_json::from_str(&table.stdout).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{table}");
    assert_eq!(rows[0]["state"], "TIME_WAIT");
    assert_eq!(rows[0]["local"], format!("127.0.0.1:{port}"));
    assert_eq!(rows[0]["timer"], "timewait");
    let left = rows[0]["timer_remaining_ms"].as_u64().unwrap();
    assert!((50_000..=60_000).contains(&left), "{left}");
    assert_eq!(rows[0]["pid"], serde_json::Value::Null);
    let text = teardown(&["sockets", "--port", &port, "--state", "time-wait"]);
    assert!(
        text.stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("TIME_WAIT  0       0       127.0.0.1:"),
        "{text}"
    );
    let none = teardown(&["sockets", "--port", &port, "--state", "LISTEN"]);
    assert_eq!(none.stdout, "no TCP socket matches\n", "{none}");
}

/// A named namespace (`ip netns add`) with a listener inside; removed when dropped.
struct NamedNetns {
    name: String,
    listener: Child,
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn sockets_looks_inside_a_named_namespace() {
    if !root("sockets_netns") {
        return;
    }
    let name = format!("teardown-it-{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success()
    );
    let _ = Command::new("ip")
        .args(["-n", &name, "link", "set", "lo", "up"])
        .status();
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &name, "python3", "-c"])
        .arg("import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',7001))\ns.listen()\nprint('ok',flush=True)\ntime.sleep(30)")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(listener.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ns = NamedNetns { name, listener };
    assert_eq!(line.trim(), "ok");
    let run = teardown(&["sockets", "--netns", &ns.name, "--port", "7001", "--json"]);
    assert_eq!(run.code, Some(0), "{run}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json[0]["state"], "LISTEN", "{run}");
    assert_eq!(json[0]["pid"], ns.listener.id(), "{run}");
    assert_eq!(json[0]["command"], "python3", "{run}");
    // Not in this (the test's) namespace.
    let here = teardown(&["sockets", "--port", "7001", "--state", "listen"]);
    assert_eq!(here.stdout, "no TCP socket matches\n", "{here}");
}
