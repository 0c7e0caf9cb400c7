//! `teardown exec` with real programs, not our own: python3's http.server and curl, nginx,
//! a server that never closes, and the article's two C programs compiled here.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// A root test's own directory and a free port; None (the test skips) without root.
fn lab(test: &str) -> Option<(TempDir, u16)> {
    if !root(test) {
        return None;
    }
    Some((TempDir::new(), free_port()))
}

fn exec(args: &[&str]) -> Run {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    teardown(&all)
}

/// `exec --server SERVER [--client CLIENT] --port PORT EXTRA... -w FILE`, as arguments.
fn exec_args(
    server: &str,
    client: Option<&str>,
    port: u16,
    extra: &[&str],
    file: &Path,
) -> Vec<String> {
    let mut args = vec!["exec".to_string(), "--server".into(), server.into()];
    if let Some(client) = client {
        args.extend(["--client".into(), client.into()]);
    }
    args.extend(["--port".into(), port.to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(["-w".into(), file.to_str().unwrap().into()]);
    args
}

/// Runs `exec_args(...)` to the end.
fn exec_with(server: &str, client: Option<&str>, port: u16, extra: &[&str], file: &Path) -> Run {
    let args = exec_args(server, client, port, extra, file);
    teardown(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Starts `exec_args(...)` with its stdout to read (see `read_pids_until`).
fn spawn_exec(server: &str, client: &str, port: u16, extra: &[&str], file: &Path) -> Child {
    Command::new(BIN)
        .args(exec_args(server, Some(client), port, extra, file))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `never_closes` compiled into `dir`, as the command that listens on `port`.
fn never_closes(dir: &TempDir, port: u16) -> String {
    format!("{} {port}", compile(dir, "never_closes").display())
}

/// The article's two programs compiled into `dir`: the server's command on `port`, and the
/// client's path (its arguments differ from test to test).
fn article(dir: &TempDir, port: u16) -> (String, PathBuf) {
    let server = format!("{} {port}", compile(dir, "server").display());
    (server, compile(dir, "client"))
}

/// The article's server stopped 0.3 s after its client (`client PORT CLIENT_ARGS`) started,
/// then started again at once.
fn article_restart(dir: &TempDir, port: u16, client_args: &str, extra: &[&str]) -> Run {
    let (server, client) = article(dir, port);
    let client = format!("{} {port}{client_args}", client.display());
    let extra = [&["--stop-server-after", "0.3", "--restart"], extra].concat();
    exec_with(&server, Some(&client), port, &extra, &dir.join("x.pcapng"))
}

/// python3's http.server on `port` and a curl to it that reads until the server closes.
fn python_curl(port: u16, extra: &[&str], file: &Path) -> Run {
    exec_with(
        &python_server(port),
        Some(&curl_to_eof(port)),
        port,
        extra,
        file,
    )
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

/// Asserts that `text`, a part of `run`'s report, contains every one of `parts`.
fn assert_all(text: &str, parts: &[&str], run: &Run) {
    for part in parts {
        assert!(text.contains(part), "no {part:?} in\n{text}{run}");
    }
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
    let Some((dir, port)) = lab("exec python") else {
        return;
    };
    let file = dir.join("py.pcapng");
    let run = python_curl(port, &["--restart"], &file);
    assert_eq!(run.code, Some(0), "{run}");
    let flat_out = run.flat();
    // The listener's own option, read from its socket; Python's HTTPServer sets SO_REUSEADDR:
    // beside the TIME_WAIT, the restart binds.
    let said = [
        "bound with SO_REUSEADDR",
        "again at once",
        "→ bound: it listens on",
        "Both the old and the new socket set SO_REUSEADDR",
        "in TIME_WAIT for 2×MSL",
    ];
    assert_all(&flat_out, &said, &run);
    // Who closed first, the server's states, each end's owner.
    let conn = connection(&run, 0);
    let said = [
        "the server closed first (FIN)",
        "python3 -m http.server",
        "curl -s",
        "kernel check:",
    ];
    assert_all(&conn, &said, &run);
    let path = "server: LISTEN → SYN_RECEIVED → ESTABLISHED → FIN_WAIT_1";
    assert_all(&flat(&conn), &[path], &run);
    assert_all(&run.stdout, &["server│ "], &run);
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
    let Some((dir, port)) = lab("exec python no reuse") else {
        return;
    };
    // The same http.server, its allow_reuse_address (SO_REUSEADDR) turned off.
    let server = format!(
        "python3 -c \"import http.server as h; h.HTTPServer.allow_reuse_address = False; \
         h.test(HandlerClass=h.SimpleHTTPRequestHandler, port={port}, bind='127.0.0.1')\""
    );
    let file = dir.join("py.pcapng");
    let client = curl_to_eof(port);
    let run = exec_with(&server, Some(&client), port, &["--restart"], &file);
    assert_eq!(run.code, Some(0), "{run}");
    // Python's own words, then teardown's, and the holder's row.
    let holder = format!("TIME_WAIT 0 0 127.0.0.1:{port}");
    let said = [
        "bound with no option",
        "→ failed: exited (exit status 1) without listening",
        "its own words: OSError: [Errno 98] Address already in use",
        "EADDRINUSE (errno 98)",
        &holder,
        "in TIME_WAIT for 2×MSL",
        "Fix: set SO_REUSEADDR",
    ];
    assert_all(&run.flat(), &said, &run);
    assert_all(&left_behind(&run), &["A restart now would fail"], &run);
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
    let file = dir.join("nginx.pcapng");
    exec_with(&server, Some(client), port, &["--stop-server"], &file)
}

#[test]
fn nginx_with_keepalive_timeout_0_closes_first() {
    let Some((dir, port)) = lab("exec nginx 0") else {
        return;
    };
    let run = nginx_run(0, &curl_to_eof(port), port, &dir);
    assert_eq!(run.code, Some(0), "{run}");
    let conn = connection(&run, 0);
    // The worker closed it.
    let said = ["the server closed first (FIN)", "nginx: worker process"];
    assert_all(&conn, &said, &run);
    assert_all(&flat(&conn), &["FIN_WAIT_1 → TIME_WAIT"], &run);
    let left = "the server's end of a connection the server closed first";
    assert_all(&left_behind(&run), &[left], &run);
}

#[test]
fn nginx_with_keep_alive_leaves_the_close_to_the_client() {
    let Some((dir, port)) = lab("exec nginx keep-alive") else {
        return;
    };
    let client = format!("curl -s http://127.0.0.1:{port}/");
    let run = nginx_run(65, &client, port, &dir);
    assert_eq!(run.code, Some(0), "{run}");
    assert_all(&run.stdout, &["client│ hello from nginx"], &run);
    let conn = connection(&run, 0);
    assert_all(&conn, &["the client closed first (FIN)"], &run);
    let paths = [
        "client: CLOSED → SYN_SENT → ESTABLISHED → FIN_WAIT_1",
        "server: LISTEN → SYN_RECEIVED → ESTABLISHED → CLOSE_WAIT → LAST_ACK",
    ];
    assert_all(&flat(&conn), &paths, &run);
    let left = "the client's end of a connection the client closed first";
    assert_all(&left_behind(&run), &[left], &run);
}

#[test]
fn a_server_that_never_closes_leaves_close_wait_named_with_its_pid() {
    let Some((dir, port)) = lab("exec never closes") else {
        return;
    };
    let server = never_closes(&dir, port);
    let client = format!(
        "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', {port})); \
         s.sendall(b'hi'); print(s.recv(100)); s.close()\""
    );
    let run = exec_with(&server, Some(&client), port, &[], &dir.join("n.pcapng"));
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
            "CLOSE_WAIT (Recv-Q 1: unread bytes), held by pid {pid} ({server}): this program \
             did not close() after the peer's FIN"
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
    let Some((dir, port)) = lab("exec article case 1") else {
        return;
    };
    let run = article_restart(&dir, port, "", &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let said = [
        "bound with no option",
        "stopped with SIGTERM 0.3 s after the first client started",
        "its own words: failed to bind port, errno = 98",
        "in TIME_WAIT for 2×MSL",
    ];
    assert_all(&run.flat(), &said, &run);
    let said = ["server│ failed to bind port, errno = 98", "client│ read "];
    assert_all(&run.stdout, &said, &run);
    let conn = connection(&run, 0);
    assert_all(
        &conn,
        &["the server closed first (FIN)", "0 mismatched"],
        &run,
    );
    let path = "server: LISTEN → SYN_RECEIVED → ESTABLISHED → FIN_WAIT_1";
    assert_all(&flat(&conn), &[path, "TIME_WAIT"], &run);
    assert_all(&left_behind(&run), &["A restart now would fail"], &run);
}

#[test]
fn article_case_2_a_client_blocked_before_eof_leaves_the_server_in_fin_wait_2() {
    let Some((dir, port)) = lab("exec article case 2") else {
        return;
    };
    // The client sleeps 2 s before its first read: blocked when the server goes.
    let run = article_restart(&dir, port, " 2", &[]);
    assert_eq!(run.code, Some(0), "{run}");
    // The holder's row and why it holds the port.
    let holder = format!("FIN_WAIT_2 0 0 127.0.0.1:{port}");
    let said = [
        "its own words: failed to bind port, errno = 98",
        &holder,
        "in FIN_WAIT_2: the server closed",
        "(orphaned)",
    ];
    assert_all(&run.flat(), &said, &run);
    let paths = [
        "server: LISTEN → SYN_RECEIVED → ESTABLISHED → FIN_WAIT_1 → FIN_WAIT_2",
        "ESTABLISHED → CLOSE_WAIT",
    ];
    assert_all(&flat(&connection(&run, 0)), &paths, &run);
}

#[test]
fn a_command_that_is_not_found_exits_2_naming_it() {
    if !root("exec not found") {
        return;
    }
    let port = free_port().to_string();
    let run = exec(&["--server", "no-such-server-here --x", "--port", &port]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_all(
        &run.stderr,
        &["--server \"no-such-server-here --x\": no-such-server-here: command not found"],
        &run,
    );
}

#[test]
fn a_client_that_is_not_executable_exits_2_naming_it() {
    let Some((dir, port)) = lab("exec not executable") else {
        return;
    };
    let script = dir.join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let (server, client) = (python_server(port), script.to_str().unwrap());
    let run = exec_with(&server, Some(client), port, &[], &dir.join("x.pcapng"));
    assert_eq!(run.code, Some(2), "{run}");
    assert_all(
        &run.stderr,
        &["not executable (permission denied)", "not-executable"],
        &run,
    );
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
    let server = never_closes(&dir, other);
    let run = exec_with(
        &server,
        None,
        port,
        &["--timeout", "1.5"],
        &dir.join("x.pcapng"),
    );
    assert_eq!(run.code, Some(2), "{run}");
    let err = &run.stderr;
    assert_all(err, &["did not listen within --timeout 1.5 s"], &run);
    assert!(
        err.contains(&format!("what listens in the lab:\n  127.0.0.1:{other}")),
        "{run}"
    );
    assert!(!dir.join("x.pcapng").exists(), "a fault writes no capture");
    assert!(!run.stdout.contains("time ms"), "nor a ladder{run}");
    // One that exits at once: its status and its last line.
    let server = "sh -c 'echo cannot read the config >&2; exit 3'";
    let run = exec_with(server, None, port, &[], &dir.join("y.pcapng"));
    assert_eq!(run.code, Some(2), "{run}");
    assert_all(
        &run.stderr,
        &[
            "exited (exit status 3) before it listened",
            "server│ cannot read the config",
            "nothing listens in the lab",
        ],
        &run,
    );
}

#[test]
fn a_hanging_client_is_killed_at_the_timeout_and_said_so() {
    let Some((dir, port)) = lab("exec hanging client") else {
        return;
    };
    // A server that is up in milliseconds: --timeout is also how long it may take to listen.
    let server = never_closes(&dir, port);
    let start = Instant::now();
    let extra = ["--timeout", "1"];
    let run = exec_with(
        &server,
        Some("sleep 30"),
        port,
        &extra,
        &dir.join("x.pcapng"),
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert_all(
        &run.flat(),
        &["client: still running after --timeout 1 s: killed (SIGKILL, pid"],
        &run,
    );
    assert!(start.elapsed() < Duration::from_secs(20), "{run}");
}

#[test]
fn a_server_that_exits_by_itself_is_reported_with_its_status() {
    let Some((dir, port)) = lab("exec server exits") else {
        return;
    };
    let (server, client) = article(&dir, port);
    // The client closes at EOF; the article's server then writes into a closed socket and
    // dies of SIGPIPE, by itself.
    let client = format!(
        "sh -c 'timeout -s INT 0.5 {} {port}; exit 0'",
        client.display()
    );
    let run = exec_with(&server, Some(&client), port, &[], &dir.join("x.pcapng"));
    assert_eq!(run.code, Some(0), "{run}");
    assert_all(
        &run.flat(),
        &["server: exited by itself, killed by SIGPIPE"],
        &run,
    );
}

#[test]
fn every_program_dies_when_teardown_is_killed_with_sigkill() {
    let Some((dir, port)) = lab("exec sigkill") else {
        return;
    };
    let file = dir.join("x.pcapng");
    let mut child = spawn_exec(&python_server(port), "sleep 30", port, &[], &file);
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
fn read_pids_until(child: &mut Child, until: &str) -> (Vec<u32>, String) {
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
    tracefs_instances()
        .into_iter()
        .filter(|n| n.starts_with(&format!("teardown-{pid}-")))
        .collect()
}

#[test]
fn ctrl_c_ends_the_run_its_programs_and_its_tracefs_instance_and_writes_the_capture() {
    let Some((dir, port)) = lab("exec ctrl-c") else {
        return;
    };
    let server = never_closes(&dir, port);
    let file = dir.join("x.pcapng");
    let mut child = spawn_exec(&server, "sleep 30", port, &["--timeout", "20"], &file);
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
    let Some((dir, port)) = lab("exec repeat parallel") else {
        return;
    };
    let extra = ["--repeat", "2", "--parallel", "2"];
    let run = python_curl(port, &extra, &dir.join("x.pcapng"));
    assert_eq!(run.code, Some(0), "{run}");
    assert_all(&run.stdout, &["4 connections:"], &run);
    assert_all(&run.flat(), &["clients: started 2 copies of `curl"], &run);
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
    let Some((dir, port)) = lab("exec netns") else {
        return;
    };
    let run = exec_with(
        &format!("python3 -m http.server {port} --bind 10.77.0.2"),
        Some(&format!(
            "curl -s --ignore-content-length -o /dev/null http://10.77.0.2:{port}/"
        )),
        port,
        &["--netns"],
        &dir.join("x.pcapng"),
    );
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
    let Some((dir, port)) = lab("exec json") else {
        return;
    };
    let run = article_restart(&dir, port, "", &["--json"]);
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
    let Some((dir, port)) = lab("exec -Z") else {
        return;
    };
    let server = format!("sh -c 'id -un >&2; exec {}'", never_closes(&dir, port));
    let file = dir.join("x.pcapng");
    let run = exec_with(&server, Some("id -un"), port, &["-Z", "nobody"], &file);
    assert_eq!(run.code, Some(0), "{run}");
    assert_all(
        &run.stdout,
        &["server│ nobody", "client│ nobody", ", as nobody,"],
        &run,
    );
    let run = exec(&["--server", "true", "--port", "9", "-Z", "no-such-user-here"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_all(&run.stderr, &["-Z no-such-user-here: no such user"], &run);
}

#[test]
fn without_root_the_user_namespace_path_runs_the_programs_and_says_what_it_cannot_do() {
    if !root("exec without root") {
        return;
    }
    let dir = world_writable_dir();
    let port = free_port();
    let server = never_closes(&dir, port);
    let client = format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; echo hi >&3; head -c 6 <&3'");
    // As nobody: unprivileged user namespaces, as `run` has them.
    let mut cmd = as_nobody_cmd();
    cmd.args(exec_args(
        &server,
        Some(&client),
        port,
        &[],
        &dir.join("x.pcapng"),
    ));
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    assert_all(
        &run.stdout,
        &["client│ hello", "note: kernel confirmation is off"],
        &run,
    );
    assert_all(
        &left_behind(&run),
        &["this program did not close() after the peer's FIN"],
        &run,
    );
}

#[test]
fn under_sudo_the_programs_run_as_the_user_who_asked_and_the_capture_is_theirs() {
    use std::os::unix::fs::MetadataExt;
    let Some((dir, port)) = lab("exec sudo user") else {
        return;
    };
    let server = format!("sh -c 'id -u >&2; exec {}'", never_closes(&dir, port));
    let file = dir.join("x.pcapng");
    let mut cmd = Command::new(BIN);
    cmd.args(exec_args(&server, Some("id -u"), port, &[], &file))
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534");
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    assert_all(&run.stdout, &["server│ 65534", "client│ 65534"], &run);
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), 65534);
}

#[test]
fn a_server_that_goes_into_the_background_is_followed_stopped_and_restarted() {
    let Some((dir, port)) = lab("exec daemon") else {
        return;
    };
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
    let client = format!("curl -s http://127.0.0.1:{port}/");
    let file = dir.join("x.pcapng");
    let run = exec_with(&server, Some(&client), port, &["--restart"], &file);
    assert_eq!(run.code, Some(0), "{run}");
    let out = run.flat();
    assert_all(&out, &["went into the background:"], &run);
    let daemon = out
        .split("), pid ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no daemon pid{run}"));
    assert!(
        out.contains(&format!("server: stopped with SIGTERM (pid {daemon})")),
        "{run}"
    );
    assert_all(&out, &["→ bound: it listens on"], &run);
    assert!(!alive(daemon), "the daemon died with the run");
}

#[test]
fn without_a_pid_namespace_a_program_in_a_session_of_its_own_still_dies_with_the_run() {
    if !root("exec setsid without root") {
        return;
    }
    let dir = world_writable_dir();
    let port = free_port();
    let server = format!(
        "sh -c 'setsid {} & exec sleep 30'",
        never_closes(&dir, port)
    );
    // As nobody (no PID namespace there): the listener leaves the group teardown signals.
    let mut cmd = as_nobody_cmd();
    cmd.args(exec_args(&server, None, port, &[], &dir.join("x.pcapng")));
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    assert_all(&run.stdout, &["note: no PID namespace could be made"], &run);
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
    let server = format!("touch {}", marker.display());
    let run = exec_with(
        &server,
        None,
        free_port(),
        &[],
        &dir.join("no-such-dir/x.pcapng"),
    );
    assert_eq!(run.code, Some(2), "{run}");
    assert_all(
        &run.stderr,
        &["does not exist; create it first (mkdir -p"],
        &run,
    );
    assert!(!marker.exists(), "the server ran before the check");
}
