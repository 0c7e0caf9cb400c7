//! `teardown exec` with real programs, not our own: python3's http.server and curl, nginx,
//! a server that never closes, and the article's two C programs compiled here.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helper::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/exec");

/// Compiles `tests/data/exec/NAME.c` into `dir` with cc; the program's path.
fn compile(dir: &TempDir, name: &str) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = Command::new("cc");
    cmd.arg("-o").arg(&out).arg(format!("{DATA}/{name}.c"));
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "cc failed (apt-get install gcc){run}");
    out
}

fn exec(args: &[&str]) -> Run {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    teardown(&all)
}

/// The text of connection `#N` in the report: its line and the lines under it.
fn connection(run: &Run, n: usize) -> String {
    let start = run
        .stdout
        .find(&format!("\n  #{n} "))
        .unwrap_or_else(|| panic!("no connection #{n}{run}"));
    let rest = &run.stdout[start + 1..];
    let end = rest[1..]
        .find("\n  #")
        .or_else(|| rest.find("\n\n"))
        .unwrap_or(rest.len());
    rest[..end + 1].to_string()
}

/// The report's "left behind" part, white space folded.
fn left_behind(run: &Run) -> String {
    let start = run
        .stdout
        .find("left behind")
        .unwrap_or_else(|| panic!("no left behind{run}"));
    let rest = &run.stdout[start..];
    let end = rest.find("\ncapture: ").unwrap_or(rest.len());
    rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn python_server(port: u16) -> String {
    format!("python3 -m http.server {port} --bind 127.0.0.1")
}

/// curl reading until the server closes (--ignore-content-length): otherwise the client's
/// close() races the server's after a `Connection: close` response.
fn curl_to_eof(port: u16) -> String {
    format!("curl -s --ignore-content-length -o /dev/null http://127.0.0.1:{port}/")
}

#[test]
fn python_http_server_closes_first_and_its_so_reuseaddr_lets_the_restart_bind() {
    if !root("exec python") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let file = dir.join("py.pcapng");
    let run = exec(&[
        "--server",
        &python_server(port),
        "--client",
        &curl_to_eof(port),
        "--port",
        &port.to_string(),
        "--restart",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let flat_out = run.flat();
    assert!(
        flat_out.contains("bound with SO_REUSEADDR"),
        "the listener's own option, read from its socket{run}"
    );
    let conn = connection(&run, 0);
    assert!(
        conn.contains("the server closed first (FIN)"),
        "{conn}{run}"
    );
    assert!(
        flat(&conn).contains("server: LISTEN → SYN_RECEIVED → ESTABLISHED → FIN_WAIT_1"),
        "{conn}"
    );
    assert!(
        conn.contains("python3 -m http.server"),
        "the server's owner{conn}"
    );
    assert!(conn.contains("curl -s"), "the client's owner{conn}");
    assert!(conn.contains("kernel check:"), "{conn}");
    // Python's HTTPServer sets SO_REUSEADDR: beside the TIME_WAIT, the restart binds.
    assert!(flat_out.contains("again at once"), "{run}");
    assert!(flat_out.contains("→ bound: it listens on"), "{run}");
    assert!(
        flat_out.contains("Both the old and the new socket set SO_REUSEADDR"),
        "{run}"
    );
    assert!(flat_out.contains("in TIME_WAIT for 2×MSL"), "{run}");
    assert!(
        run.stdout.contains("server│ "),
        "server output prefixed{run}"
    );
    let comments = packet_comments(&file);
    assert!(comments.len() >= 8, "{comments:?}");
    assert!(
        comments
            .iter()
            .any(|c| c.contains("ESTABLISHED → FIN_WAIT_1")),
        "{comments:?}"
    );
    assert!(dir.join("py.svg").exists());
}

#[test]
fn python_without_so_reuseaddr_cannot_restart_and_the_time_wait_socket_is_named() {
    if !root("exec python no reuse") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    // The same http.server, its allow_reuse_address (SO_REUSEADDR) turned off.
    let server = format!(
        "python3 -c \"import http.server as h; h.HTTPServer.allow_reuse_address = False; \
         h.test(HandlerClass=h.SimpleHTTPRequestHandler, port={port}, bind='127.0.0.1')\""
    );
    let file = dir.join("py.pcapng");
    let run = exec(&[
        "--server",
        &server,
        "--client",
        &curl_to_eof(port),
        "--port",
        &port.to_string(),
        "--restart",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let out = run.flat();
    assert!(out.contains("bound with no option"), "{run}");
    assert!(
        out.contains("→ failed: exited (exit status 1) without listening"),
        "{run}"
    );
    // Python's own words, then teardown's.
    assert!(
        out.contains("its own words: OSError: [Errno 98] Address already in use"),
        "{run}"
    );
    assert!(out.contains("EADDRINUSE (errno 98)"), "{run}");
    assert!(
        out.contains(&format!("TIME_WAIT 0 0 127.0.0.1:{port}")),
        "the holder's row{run}"
    );
    assert!(out.contains("in TIME_WAIT for 2×MSL"), "{run}");
    assert!(out.contains("Fix: set SO_REUSEADDR"), "{run}");
    let left = left_behind(&run);
    assert!(left.contains("A restart now would fail"), "{left}");
}

fn nginx_conf(dir: &TempDir, port: u16, keepalive: u32) -> PathBuf {
    let text = std::fs::read_to_string(format!("{DATA}/nginx.conf.in")).unwrap();
    let conf = text
        .replace("DIR", dir.0.to_str().unwrap())
        .replace("PORT", &port.to_string())
        .replace("KEEPALIVE", &keepalive.to_string());
    let path = dir.join(&format!("nginx-{keepalive}.conf"));
    std::fs::write(&path, conf).unwrap();
    path
}

fn nginx_run(keepalive: u32, client: &str, port: u16, dir: &TempDir) -> Run {
    let conf = nginx_conf(dir, port, keepalive);
    let server = format!(
        "/usr/sbin/nginx -e stderr -p {} -c {}",
        dir.0.display(),
        conf.display()
    );
    exec(&[
        "--server",
        &server,
        "--client",
        client,
        "--port",
        &port.to_string(),
        "--stop-server",
        "-w",
        dir.join("nginx.pcapng").to_str().unwrap(),
    ])
}

#[test]
fn nginx_with_keepalive_timeout_0_closes_first() {
    if !root("exec nginx 0") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let run = nginx_run(0, &curl_to_eof(port), port, &dir);
    assert_eq!(run.code, Some(0), "{run}");
    let conn = connection(&run, 0);
    assert!(
        conn.contains("the server closed first (FIN)"),
        "{conn}{run}"
    );
    assert!(flat(&conn).contains("FIN_WAIT_1 → TIME_WAIT"), "{conn}");
    assert!(
        conn.contains("nginx: worker process"),
        "the worker closed it{conn}"
    );
    let left = left_behind(&run);
    assert!(
        left.contains("the server's end of a connection the server closed first"),
        "{left}"
    );
}

#[test]
fn nginx_with_keep_alive_leaves_the_close_to_the_client() {
    if !root("exec nginx keep-alive") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let client = format!("curl -s http://127.0.0.1:{port}/");
    let run = nginx_run(65, &client, port, &dir);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("client│ hello from nginx"), "{run}");
    let conn = connection(&run, 0);
    assert!(
        conn.contains("the client closed first (FIN)"),
        "{conn}{run}"
    );
    assert!(
        flat(&conn).contains("client: CLOSED → SYN_SENT → ESTABLISHED → FIN_WAIT_1"),
        "{conn}"
    );
    assert!(
        flat(&conn).contains("server: LISTEN → SYN_RECEIVED → ESTABLISHED → CLOSE_WAIT → LAST_ACK"),
        "{conn}"
    );
    let left = left_behind(&run);
    assert!(
        left.contains("the client's end of a connection the client closed first"),
        "{left}"
    );
}

#[test]
fn a_server_that_never_closes_leaves_close_wait_named_with_its_pid() {
    if !root("exec never closes") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let server = compile(&dir, "never_closes");
    let client = format!(
        "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', {port})); \
         s.sendall(b'hi'); print(s.recv(100)); s.close()\""
    );
    let run = exec(&[
        "--server",
        &format!("{} {port}", server.display()),
        "--client",
        &client,
        "--port",
        &port.to_string(),
        "-w",
        dir.join("n.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let pid = run
        .stdout
        .lines()
        .find_map(|l| l.split("server: started `").nth(1)?.split("(pid ").nth(1))
        .and_then(|p| p.trim_end_matches(')').parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no server pid{run}"));
    let conn = connection(&run, 0);
    assert!(conn.contains("the client closed first (FIN)"), "{conn}");
    let left = left_behind(&run);
    assert!(
        left.contains(&format!(
            "CLOSE_WAIT (Recv-Q 1: unread bytes), held by pid {pid} ({} {port}): this program \
             did not close() after the peer's FIN",
            server.display()
        )),
        "{left}{run}"
    );
    assert!(left.contains("FIN_WAIT_2"), "the client's orphan{left}");
    assert!(left.contains("orphaned"), "{left}");
    // It died with the run.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} outlived the run"
    );
}

#[test]
fn article_case_1_the_restart_prints_errno_98_itself_and_time_wait_is_why() {
    if !root("exec article case 1") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let server = compile(&dir, "server");
    let client = compile(&dir, "client");
    let run = exec(&[
        "--server",
        &format!("{} {port}", server.display()),
        "--client",
        &format!("{} {port}", client.display()),
        "--port",
        &port.to_string(),
        "--stop-server-after",
        "0.3",
        "--restart",
        "-w",
        dir.join("c1.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let out = run.flat();
    assert!(out.contains("bound with no option"), "{run}");
    assert!(
        out.contains("stopped with SIGTERM 0.3 s after the first client started"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("server│ failed to bind port, errno = 98"),
        "{run}"
    );
    assert!(
        out.contains("its own words: failed to bind port, errno = 98"),
        "{run}"
    );
    assert!(out.contains("in TIME_WAIT for 2×MSL"), "{run}");
    assert!(run.stdout.contains("client│ read "), "{run}");
    let conn = connection(&run, 0);
    assert!(conn.contains("the server closed first (FIN)"), "{conn}");
    assert!(
        flat(&conn).contains("server: LISTEN → SYN_RECEIVED → ESTABLISHED → FIN_WAIT_1"),
        "{conn}"
    );
    assert!(flat(&conn).contains("TIME_WAIT"), "{conn}");
    assert!(conn.contains("0 mismatched"), "{conn}");
    let left = left_behind(&run);
    assert!(left.contains("A restart now would fail"), "{left}");
}

#[test]
fn article_case_2_a_client_blocked_before_eof_leaves_the_server_in_fin_wait_2() {
    if !root("exec article case 2") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let server = compile(&dir, "server");
    let client = compile(&dir, "client");
    // The client sleeps 2 s before its first read: blocked when the server goes.
    let run = exec(&[
        "--server",
        &format!("{} {port}", server.display()),
        "--client",
        &format!("{} {port} 2", client.display()),
        "--port",
        &port.to_string(),
        "--stop-server-after",
        "0.3",
        "--restart",
        "-w",
        dir.join("c2.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let out = run.flat();
    assert!(
        out.contains("its own words: failed to bind port, errno = 98"),
        "{run}"
    );
    assert!(
        out.contains(&format!("FIN_WAIT_2 0 0 127.0.0.1:{port}")),
        "the holder's row{run}"
    );
    assert!(out.contains("in FIN_WAIT_2: the server closed"), "{run}");
    assert!(out.contains("(orphaned)"), "{run}");
    let conn = connection(&run, 0);
    assert!(
        flat(&conn)
            .contains("server: LISTEN → SYN_RECEIVED → ESTABLISHED → FIN_WAIT_1 → FIN_WAIT_2"),
        "{conn}"
    );
    assert!(flat(&conn).contains("ESTABLISHED → CLOSE_WAIT"), "{conn}");
}

#[test]
fn a_command_that_is_not_found_exits_2_naming_it() {
    if !root("exec not found") {
        return;
    }
    let port = free_port().to_string();
    let run = exec(&["--server", "no-such-server-here --x", "--port", &port]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains(
            "--server \"no-such-server-here --x\": no-such-server-here: command not found"
        ),
        "{run}"
    );
}

#[test]
fn a_client_that_is_not_executable_exits_2_naming_it() {
    if !root("exec not executable") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let script = dir.join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let run = exec(&[
        "--server",
        &python_server(port),
        "--port",
        &port.to_string(),
        "--client",
        script.to_str().unwrap(),
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("not executable (permission denied)"),
        "{run}"
    );
    assert!(run.stderr.contains("not-executable"), "{run}");
    // Found out before anything started: no server ran, no capture was written.
    assert!(!run.stdout.contains("server│"), "{run}");
    assert!(!dir.join("x.pcapng").exists(), "{run}");
}

#[test]
fn a_server_that_never_listens_exits_2_with_its_last_lines_and_what_listens() {
    if !root("exec never listens") {
        return;
    }
    let dir = TempDir::new();
    let (port, other) = (free_port(), free_port());
    // It listens (within milliseconds), but on another port than --port.
    let server = compile(&dir, "never_closes");
    let run = exec(&[
        "--server",
        &format!("{} {other}", server.display()),
        "--port",
        &port.to_string(),
        "--timeout",
        "1.5",
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    let err = &run.stderr;
    assert!(
        err.contains("did not listen within --timeout 1.5 s"),
        "{run}"
    );
    assert!(
        err.contains(&format!("what listens in the lab:\n  127.0.0.1:{other}")),
        "{run}"
    );
    assert!(!dir.join("x.pcapng").exists(), "a fault writes no capture");
    assert!(!run.stdout.contains("time ms"), "nor a ladder{run}");
    // One that exits at once: its status and its last line.
    let run = exec(&[
        "--server",
        "sh -c 'echo cannot read the config >&2; exit 3'",
        "--port",
        &port.to_string(),
        "-w",
        dir.join("y.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr
            .contains("exited (exit status 3) before it listened"),
        "{run}"
    );
    assert!(
        run.stderr.contains("server│ cannot read the config"),
        "{run}"
    );
    assert!(run.stderr.contains("nothing listens in the lab"), "{run}");
}

#[test]
fn a_hanging_client_is_killed_at_the_timeout_and_said_so() {
    if !root("exec hanging client") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    // A server that is up in milliseconds: --timeout is also how long it may take to listen.
    let server = compile(&dir, "never_closes");
    let start = Instant::now();
    let run = exec(&[
        "--server",
        &format!("{} {port}", server.display()),
        "--client",
        "sleep 30",
        "--port",
        &port.to_string(),
        "--timeout",
        "1",
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.flat()
            .contains("client: still running after --timeout 1 s: killed (SIGKILL, pid"),
        "{run}"
    );
    assert!(start.elapsed() < Duration::from_secs(20), "{run}");
}

#[test]
fn a_server_that_exits_by_itself_is_reported_with_its_status() {
    if !root("exec server exits") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let server = compile(&dir, "server");
    let client = compile(&dir, "client");
    // The client closes at EOF; the article's server then writes into a closed socket and
    // dies of SIGPIPE, by itself.
    let run = exec(&[
        "--server",
        &format!("{} {port}", server.display()),
        "--client",
        &format!(
            "sh -c 'timeout -s INT 0.5 {} {port}; exit 0'",
            client.display()
        ),
        "--port",
        &port.to_string(),
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.flat()
            .contains("server: exited by itself, killed by SIGPIPE"),
        "{run}"
    );
}

#[test]
fn every_program_dies_when_teardown_is_killed_with_sigkill() {
    if !root("exec sigkill") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "exec",
            "--server",
            &python_server(port),
            "--client",
            "sleep 30",
            "--port",
            &port.to_string(),
            "-w",
            dir.join("x.pcapng").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (pids, seen) = read_pids_until(&mut child, "client: started");
    assert_eq!(pids.len(), 2, "the server's and the client's pid{seen}");
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let until = Instant::now() + Duration::from_secs(3);
    let alive = || pids.iter().filter(|p| alive(**p)).count();
    while alive() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(alive(), 0, "{pids:?} outlived teardown{seen}");
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

/// The pids of `(pid N)` lines until a line containing `until`, with what was read.
fn read_pids_until(child: &mut std::process::Child, until: &str) -> (Vec<u32>, String) {
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut pids, mut seen) = (Vec::new(), String::new());
    for _ in 0..40 {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if let Some(pid) = line
            .split("(pid ")
            .nth(1)
            .and_then(|p| p.trim_end().trim_end_matches(')').parse::<u32>().ok())
        {
            pids.push(pid);
        }
        if line.contains(until) {
            break;
        }
    }
    // The rest of the output must not block the run.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (pids, seen)
}

/// tracefs instances a teardown process of `pid` made, seen from a private mount namespace
/// (tracefs may not be mounted on the host; teardown mounts it in one of its own).
fn instances_of(pid: u32) -> Vec<String> {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount --make-rprivate / && (mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; \
         ls /sys/kernel/tracing/instances)",
    ]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    run.stdout
        .lines()
        .filter(|n| n.starts_with(&format!("teardown-{pid}-")))
        .map(str::to_string)
        .collect()
}

#[test]
fn ctrl_c_ends_the_run_its_programs_and_its_tracefs_instance_and_writes_the_capture() {
    if !root("exec ctrl-c") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let server = compile(&dir, "never_closes");
    let file = dir.join("x.pcapng");
    let mut child = Command::new(BIN)
        .args([
            "exec",
            "--server",
            &format!("{} {port}", server.display()),
            "--client",
            "sleep 30",
            "--port",
            &port.to_string(),
            "--timeout",
            "20",
            "-w",
            file.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (pids, seen) = read_pids_until(&mut child, "client: started");
    assert_eq!(pids.len(), 2, "{seen}");
    assert_eq!(
        instances_of(child.id()).len(),
        1,
        "the run's own instance{seen}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} outlived the run{seen}");
    }
    assert!(
        instances_of(child.id()).is_empty(),
        "the instance is removed"
    );
    assert!(file.exists(), "the capture so far is written");
}

#[test]
fn repeat_and_parallel_make_one_report_per_connection() {
    if !root("exec repeat parallel") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let run = exec(&[
        "--server",
        &python_server(port),
        "--client",
        &curl_to_eof(port),
        "--port",
        &port.to_string(),
        "--repeat",
        "2",
        "--parallel",
        "2",
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("4 connections:"), "{run}");
    assert!(
        run.flat().contains("clients: started 2 copies of `curl"),
        "{run}"
    );
    for n in 0..4 {
        let conn = connection(&run, n);
        assert!(conn.contains("kernel check:"), "each its own check{conn}");
        assert!(conn.contains("0 mismatched"), "{conn}");
    }
    let left = left_behind(&run);
    assert!(
        left.contains("(3 more like it)"),
        "one explanation per kind{left}"
    );
}

#[test]
fn across_two_hosts_the_server_runs_in_its_own_namespace() {
    if !root("exec netns") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let run = exec(&[
        "--server",
        &format!("python3 -m http.server {port} --bind 10.77.0.2"),
        "--client",
        &format!("curl -s --ignore-content-length -o /dev/null http://10.77.0.2:{port}/"),
        "--port",
        &port.to_string(),
        "--netns",
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains("server│ 10.77.0.1 - - "),
        "the request came from the client's host{run}"
    );
    let conn = connection(&run, 0);
    assert!(
        conn.contains(&format!("10.77.0.2:{port}: the server closed first")),
        "{conn}"
    );
}

#[test]
fn json_reports_connections_restarts_and_what_was_left() {
    if !root("exec json") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let server = compile(&dir, "server");
    let client = compile(&dir, "client");
    let run = exec(&[
        "--server",
        &format!("{} {port}", server.display()),
        "--client",
        &format!("{} {port}", client.display()),
        "--port",
        &port.to_string(),
        "--stop-server-after",
        "0.3",
        "--restart",
        "--json",
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let v: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}{run}"));
    assert_eq!(v["command"], "exec");
    assert_eq!(v["connections"][0]["closed_first"], "server", "{v}");
    assert_eq!(v["connections"][0]["server_path"][3], "FIN_WAIT_1", "{v}");
    assert_eq!(v["restarts"][0]["errno"], 98, "{v}");
    assert_eq!(v["restarts"][0]["holders"][0]["state"], "TIME_WAIT", "{v}");
    assert_eq!(v["left_behind"][0]["state"], "TIME_WAIT", "{v}");
    assert!(
        run.stderr
            .contains("server│ failed to bind port, errno = 98"),
        "narration on stderr{run}"
    );
}

#[test]
fn dash_z_runs_the_programs_as_that_user() {
    if !root("exec -Z") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let server = compile(&dir, "never_closes");
    let run = exec(&[
        "--server",
        &format!("sh -c 'id -un >&2; exec {} {port}'", server.display()),
        "--client",
        "id -un",
        "--port",
        &port.to_string(),
        "-Z",
        "nobody",
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("server│ nobody"), "{run}");
    assert!(run.stdout.contains("client│ nobody"), "{run}");
    assert!(run.stdout.contains(", as nobody,"), "{run}");
    let run = exec(&["--server", "true", "--port", "9", "-Z", "no-such-user-here"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("-Z no-such-user-here: no such user"),
        "{run}"
    );
}

#[test]
fn without_root_the_user_namespace_path_runs_the_programs_and_says_what_it_cannot_do() {
    if !root("exec without root") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let server = compile(&dir, "never_closes");
    // As nobody: unprivileged user namespaces, as `run` has them.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        BIN,
        "exec",
    ])
    .arg("--server")
    .arg(format!("{} {port}", server.display()))
    .arg("--client")
    .arg(format!(
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; echo hi >&3; head -c 6 <&3'"
    ))
    .args(["--port", &port.to_string(), "-w"])
    .arg(dir.join("x.pcapng"));
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("client│ hello"), "{run}");
    assert!(
        run.stdout.contains("note: kernel confirmation is off"),
        "{run}"
    );
    assert!(
        left_behind(&run).contains("this program did not close() after the peer's FIN"),
        "{run}"
    );
}

#[test]
fn under_sudo_the_programs_run_as_the_user_who_asked_and_the_capture_is_theirs() {
    if !root("exec sudo user") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new();
    let port = free_port();
    let server = compile(&dir, "never_closes");
    let file = dir.join("x.pcapng");
    let mut cmd = Command::new(BIN);
    cmd.args(["exec", "--server"])
        .arg(format!(
            "sh -c 'id -u >&2; exec {} {port}'",
            server.display()
        ))
        .args(["--client", "id -u", "--port", &port.to_string(), "-w"])
        .arg(&file)
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534");
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("server│ 65534"), "{run}");
    assert!(run.stdout.contains("client│ 65534"), "{run}");
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), 65534);
}

#[test]
fn a_server_that_goes_into_the_background_is_followed_stopped_and_restarted() {
    if !root("exec daemon") {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let conf = nginx_conf(&dir, port, 65);
    // nginx's default: the master forks into the background and the started process exits.
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("daemon off;", "daemon on;");
    std::fs::write(&conf, text).unwrap();
    let server = format!(
        "/usr/sbin/nginx -e stderr -p {} -c {}",
        dir.0.display(),
        conf.display()
    );
    let run = exec(&[
        "--server",
        &server,
        "--client",
        &format!("curl -s http://127.0.0.1:{port}/"),
        "--port",
        &port.to_string(),
        "--restart",
        "-w",
        dir.join("x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let out = run.flat();
    assert!(out.contains("went into the background:"), "{run}");
    let daemon = out
        .split("), pid ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no daemon pid{run}"));
    assert!(
        out.contains(&format!("server: stopped with SIGTERM (pid {daemon})")),
        "{run}"
    );
    assert!(out.contains("→ bound: it listens on"), "{run}");
    assert!(!alive(daemon), "the daemon died with the run");
}

#[test]
fn without_a_pid_namespace_a_program_in_a_session_of_its_own_still_dies_with_the_run() {
    if !root("exec setsid without root") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let server = compile(&dir, "never_closes");
    // As nobody (no PID namespace there): the listener leaves the group teardown signals.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        BIN,
        "exec",
    ])
    .arg("--server")
    .arg(format!(
        "sh -c 'setsid {} {port} & exec sleep 30'",
        server.display()
    ))
    .args(["--port", &port.to_string(), "-w"])
    .arg(dir.join("x.pcapng"));
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains("note: no PID namespace could be made"),
        "{run}"
    );
    let listener = run
        .stdout
        .split("after ")
        .nth(1)
        .and_then(|r| {
            r.split("by pid ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no listener pid{run}"));
    assert!(!alive(listener), "pid {listener} outlived the run{run}");
}

#[test]
fn an_output_that_cannot_be_written_is_refused_before_any_program_starts() {
    if !root("exec bad -w") {
        return;
    }
    let dir = TempDir::new();
    let marker = dir.join("started");
    let run = exec(&[
        "--server",
        &format!("touch {}", marker.display()),
        "--port",
        &free_port().to_string(),
        "-w",
        dir.join("no-such-dir/x.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr
            .contains("does not exist; create it first (mkdir -p"),
        "{run}"
    );
    assert!(!marker.exists(), "the server ran before the check");
}
