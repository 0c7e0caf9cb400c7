//! Bad environments: no privileges, a port in use, Ctrl-C in the middle of a run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::helper::*;

/// `setpriv` to the unprivileged user `nobody`, with no capabilities.
fn as_nobody(args: &[&str]) -> Run {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(args)
        .env_remove("TEARDOWN_PAUSE_AFTER_STEP");
    run_cmd(cmd)
}

fn world_writable_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn no_cap_net_raw_says_what_to_do_in_one_line() {
    if !root("no_cap_net_raw") {
        return;
    }
    let dir = world_writable_dir();
    let file = dir.join("x.pcapng");
    let run = as_nobody(&[
        "run",
        "active-close",
        "--host",
        "--port",
        "8731",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr.contains("needs CAP_NET_RAW: run with sudo"),
        "{run}"
    );
    assert!(
        run.stderr.contains("setcap cap_net_raw,cap_net_admin+ep"),
        "{run}"
    );
    assert!(!run.stderr.contains("panicked"), "{run}");
}

#[test]
fn without_root_a_user_namespace_is_used_or_the_error_says_why() {
    if !root("unprivileged_namespace") {
        return;
    }
    let dir = world_writable_dir();
    let file = dir.join("x.pcapng");
    let run = as_nobody(&["run", "active-close", "-w", file.to_str().unwrap()]);
    match run.code {
        // Unprivileged user namespaces allowed: the run works without root.
        Some(0) => assert!(run.stdout.contains("verdict: reproduced"), "{run}"),
        Some(2) => {
            assert_eq!(run.stderr.lines().count(), 1, "{run}");
            assert!(run.stderr.contains("needs root"), "{run}");
        }
        _ => panic!("neither a run nor a clear error{run}"),
    }
}

#[test]
fn port_taken_on_the_host_names_the_holder() {
    if !root("port_taken") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = TempDir::new();
    let run = teardown(&[
        "run",
        "active-close",
        "--host",
        "--port",
        &port,
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    let me = format!(
        "a LISTEN socket on 127.0.0.1:{port} of pid {}",
        std::process::id()
    );
    assert!(run.stderr.contains(&me), "expected {me:?}{run}");
    assert!(!dir.join("x.pcapng").exists());
}

#[test]
fn ctrl_c_mid_run_leaves_a_valid_capture() {
    if !root("ctrl_c") || !tshark("ctrl_c") {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("int.pcapng");
    // Hold the run after step 4 (the client wrote "I am client"), then press Ctrl-C.
    let mut child = Command::new(BIN)
        .args(["run", "active-close", "-w", file.to_str().unwrap()])
        .env("TEARDOWN_PAUSE_AFTER_STEP", "4")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
        if line.starts_with("  4. client: write") {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{seen}{stderr}");
    assert_eq!(stderr.trim(), "teardown: interrupted");
    let rows = tshark_rows(&file, 8000);
    assert!(rows.len() >= 4, "{rows:?}");
    assert_eq!(ladder(&rows[..3]), ["C:S", "S:AS", "C:A"]);
    assert!(
        !rows.iter().any(|r| r.flags.contains('F')),
        "the close never happened: {rows:?}"
    );
    assert!(section_comment(&file).contains("Verdict: interrupted"));
}

/// What a run could leave on the host: its veth ends, NFQUEUE rules, changed sysctls.
fn host_traces() -> (bool, String, [String; 2]) {
    let veth = ["td-client", "td-server"]
        .iter()
        .any(|n| std::path::Path::new("/sys/class/net").join(n).exists());
    let rules = Command::new("/usr/sbin/iptables")
        .args(["-w", "-S", "OUTPUT"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let sysctl =
        |n: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{n}")).unwrap_or_default();
    (
        veth,
        rules,
        [sysctl("tcp_fin_timeout"), sysctl("tcp_rfc1337")],
    )
}

#[test]
fn ctrl_c_or_a_panic_mid_scenario_leaves_no_namespace_rule_or_sysctl_behind() {
    if !root("cleanup") || !tshark("cleanup") {
        return;
    }
    let before = host_traces();
    assert!(!before.0, "a veth of teardown's exists before the test");
    assert!(!before.1.contains("NFQUEUE"), "{}", before.1);
    // Interrupted while the packet filter holds both FINs, or panicking mid-way through the
    // scenarios that change sysctls and drop segments.
    for (scenario, hook, step, signal) in [
        ("simultaneous-close", "TEARDOWN_PAUSE_AFTER_STEP", "7", true),
        ("lost-final-ack", "TEARDOWN_PANIC_AFTER_STEP", "9", false),
        ("orphan-fin-wait-2", "TEARDOWN_PANIC_AFTER_STEP", "7", false),
        (
            "timewait-assassination",
            "TEARDOWN_PAUSE_AFTER_STEP",
            "9",
            true,
        ),
    ] {
        let dir = TempDir::new();
        let file = dir.join("c.pcapng");
        let (child, seen) = held_run(scenario, hook, step, &file);
        if signal {
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if signal {
            assert_eq!(out.status.code(), Some(130), "{scenario}: {seen}{stderr}");
            // The capture so far is valid.
            let rows = tshark_rows(&file, 8000);
            assert!(rows.len() >= 4, "{scenario}: {rows:?}");
        } else {
            assert!(
                stderr.contains("panicking on purpose"),
                "{scenario}: {seen}{stderr}"
            );
            assert_ne!(out.status.code(), Some(0), "{scenario}");
        }
        assert_eq!(host_traces(), before, "{scenario} left something behind");
    }
}

#[test]
fn sigterm_and_sighup_exit_143_and_129_as_shells_report_them() {
    if !root("signal_exit_codes") {
        return;
    }
    let dir = TempDir::new();
    for (signal, code) in [
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
        (libc::SIGINT, 130),
    ] {
        let file = dir.join(&format!("s{signal}.pcapng"));
        let (child, seen) = held_run("active-close", "TEARDOWN_PAUSE_AFTER_STEP", "3", &file);
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "signal {signal}: {seen}{stderr}"
        );
        // Interrupted, the capture so far is still written.
        assert!(file.exists(), "signal {signal}: no capture");
    }
}

#[test]
fn an_output_that_cannot_be_written_is_refused_before_the_run_starts() {
    if !root("output_checked_first") {
        return;
    }
    let dir = TempDir::new();
    let missing = dir.join("no/such/x.pcapng");
    // A read-only file system (as root every directory is writable but such a one), mounted
    // in a mount namespace of the test's own.
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    let in_ro = |path: &str| {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "sh", "-c"]).arg(format!(
            "mount --make-rprivate / && mount -t tmpfs -o ro tmpfs {} && exec {BIN} run \
             active-close -w {path}",
            ro.display()
        ));
        run_cmd(cmd)
    };
    let ro_file = ro.join("x.pcapng");
    let ro_file = ro_file.to_str().unwrap();
    let runs = [
        (
            in_ro(ro_file),
            format!("-w {ro_file}: cannot write there (read-only file system)"),
        ),
        (
            teardown(&["run", "active-close", "-w", missing.to_str().unwrap()]),
            "the directory".to_string(),
        ),
    ];
    for (run, says) in &runs {
        assert_eq!(run.code, Some(2), "{run}");
        assert_eq!(run.stderr.lines().count(), 1, "{run}");
        assert!(run.stderr.contains(says), "expected {says:?}{run}");
        assert!(!run.stderr.contains(".part"), "{run}");
        // Refused before anything ran: no narration, no step.
        assert!(!run.stdout.contains("teardown run"), "{run}");
    }
    let run = teardown(&["run", "active-close", "-w", missing.to_str().unwrap()]);
    assert!(
        run.stderr
            .contains(&format!("mkdir -p {}", dir.join("no/such").display())),
        "{run}"
    );
    assert!(!dir.join("no").exists(), "a directory was created: {run}");

    // An ordinary user in a directory it may not write, with and without -w.
    let closed = TempDir::new();
    let run = as_nobody(&[
        "run",
        "active-close",
        "-w",
        closed.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr
            .contains("cannot write there (permission denied)"),
        "{run}"
    );
    assert!(!run.stdout.contains("teardown run"), "{run}");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["run", "active-close"])
        .current_dir(&closed.0);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("captures"), "{run}");
    assert!(run.stderr.contains("-w FILE"), "{run}");
}

#[test]
fn dash_writes_the_capture_to_standard_output_and_the_narration_to_stderr() {
    if !root("write_dash") || !tshark("write_dash") {
        return;
    }
    let dir = TempDir::new();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "active-close", "-w", "-"])
        .current_dir(&dir.0);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(&out.stdout[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "not pcapng");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("verdict: reproduced"), "{stderr}");
    assert!(stderr.contains("capture: standard output"), "{stderr}");
    // No file named "-", no picture beside nothing.
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
    let file = dir.join("out.pcapng");
    std::fs::write(&file, &out.stdout).unwrap();
    let rows = tshark_rows(&file, 8000);
    assert_eq!(ladder(&rows[..3]), ["C:S", "S:AS", "C:A"]);
    let run = teardown(&["run", "active-close", "-w", "-", "--json"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("both want standard output"), "{run}");
}

#[test]
fn run_all_where_captures_cannot_be_written_says_so_once_before_any_scenario() {
    if !root("run_all_unwritable") {
        return;
    }
    let closed = TempDir::new();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["run", "all", "--host"])
        .current_dir(&closed.0);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr
            .contains("run all from a directory you can write to"),
        "{run}"
    );
    assert!(!run.stderr.contains("[1/"), "{run}");
}
