//! Each scenario for real (root): the segments Wireshark decodes, the states in the packet
//! comments, the errno of the restart, and the story in the section comment.

use std::process::Command;

use crate::helper::*;

/// The handshake and the article's exchange, identical in every scenario: "I am client"
/// (11 bytes) one way, "I am server" (11 bytes) the other.
fn assert_opening(rows: &[Row], run: &Run) {
    assert_eq!(ladder(&rows[..3]), ["C:S", "S:AS", "C:A"], "{run}");
    assert_eq!(
        rows[0].comment,
        "client CLOSED → SYN_SENT (sent SYN, RFC 9293 §3.10.1; kernel agrees); \
         server LISTEN → SYN_RECEIVED (received SYN, RFC 9293 §3.10.7.2; kernel: not traced, \
         Linux keeps a half-open connection as a request socket of the listener until the \
         handshake's ACK)"
    );
    assert_eq!(
        rows[2].comment,
        "server SYN_RECEIVED → ESTABLISHED (received ACK of its SYN,ACK, RFC 9293 §3.10.7.4; \
         kernel agrees: LISTEN → SYN_RECV → ESTABLISHED, the connection's socket is created \
         when the handshake's ACK arrives)"
    );
    let data: Vec<(bool, u32)> = rows
        .iter()
        .filter(|r| r.len > 0)
        .map(|r| (r.from_client, r.len))
        .collect();
    assert_eq!(data, [(true, 11), (false, 11)], "{run}");
}

/// The segments from the server's FIN on.
fn closing(rows: &[Row]) -> &[Row] {
    let fin = rows
        .iter()
        .position(|r| r.flags.contains('F'))
        .expect("a FIN was captured");
    &rows[fin..]
}

const SERVER_FIN: &str = "server ESTABLISHED → FIN_WAIT_1 (sent FIN, RFC 9293 §3.10.4; kernel \
                          agrees); client ESTABLISHED → CLOSE_WAIT (received FIN, RFC 9293 \
                          §3.10.7.4; kernel agrees)";

/// Every state change the kernel traced matched the inference, on its segment, and the
/// kernel's socket table agrees on both final states.
fn assert_kernel_agrees(run: &Run, rows: &[Row]) {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("kernel check: "))
        .unwrap_or_else(|| panic!("no kernel check{run}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (seen, matched, mismatched) = (numbers[0], numbers[1], numbers[2]);
    // At least the handshake (4) and one change of each side at the end.
    assert!(seen >= 6, "{line}");
    assert_eq!((matched, mismatched), (seen, 0), "{line}");
    assert!(run.stdout.contains("socket table: client"), "{run}");
    assert!(
        run.stdout.matches(": agrees").count() >= 2,
        "the socket table must agree on both ends{run}"
    );
    assert!(!run.stdout.contains("MISMATCH"), "{run}");
    assert!(
        rows.iter().all(|r| !r.comment.contains("MISMATCH")),
        "{rows:?}"
    );
    // Every transition in the comments carries the kernel's word.
    for r in rows.iter().filter(|r| r.comment.contains(" → ")) {
        assert!(
            r.comment.contains("kernel agrees") || r.comment.contains("kernel: not traced"),
            "{}",
            r.comment
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Form {
    /// F. → . → F. → .: the textbook figure, the client waits for its kernel's ACK.
    Four,
    /// Either, as the kernel decides (with --quick-close it is usually F. → F. → .).
    Any,
}

/// Active close: F. → . → F. → . or, when the client's ACK rides on its FIN, F. → F. → .
fn assert_active_close(rows: &[Row], run: &Run, form: Form) {
    let close = closing(rows);
    assert_eq!(close[0].comment, SERVER_FIN, "{run}");
    if form == Form::Four {
        assert_eq!(ladder(close), ["S:AF", "C:A", "C:AF", "S:A"], "{run}");
    }
    match ladder(close).as_slice() {
        [a, b, c, d] if [a, b, c, d] == ["S:AF", "C:A", "C:AF", "S:A"] => {
            assert_eq!(
                close[1].comment,
                "server FIN_WAIT_1 → FIN_WAIT_2 (received ACK of its FIN, RFC 9293 §3.10.7.4; \
                 kernel agrees: FIN_WAIT1 → FIN_WAIT2 → CLOSE, then it lives on in the \
                 kernel's time-wait table as FIN_WAIT_2)"
            );
            assert!(
                close[2]
                    .comment
                    .contains("server FIN_WAIT_2 → TIME_WAIT (received FIN"),
                "{run}"
            );
        }
        [a, b, c] if [a, b, c] == ["S:AF", "C:AF", "S:A"] => {
            assert!(
                close[1].comment.contains(
                    "server FIN_WAIT_1 → TIME_WAIT (received FIN with the ACK of its FIN"
                ),
                "{run}"
            );
            assert!(
                close[1].comment.contains(
                    "kernel agrees: FIN_WAIT1 → FIN_WAIT2 → CLOSE, then it lives on in the \
                     kernel's time-wait table as TIME_WAIT"
                ),
                "{run}"
            );
        }
        other => panic!("not an active close: {other:?}{run}"),
    }
    let fin = close.iter().rposition(|r| r.flags == "AF").unwrap();
    assert!(
        close[fin].comment.starts_with(
            "client CLOSE_WAIT → LAST_ACK (sent FIN, RFC 9293 §3.10.4; kernel agrees)"
        ),
        "{run}"
    );
    assert_eq!(
        close.last().unwrap().comment,
        "client LAST_ACK → CLOSED (received ACK of its FIN, RFC 9293 §3.10.7.4; kernel agrees)",
        "{run}"
    );
    assert_kernel_agrees(run, rows);
}

#[test]
fn active_close_ends_in_time_wait_and_the_restart_fails_with_eaddrinuse() {
    if !root("active_close") || !tshark("active_close") {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("active-close.pcapng");
    let run = teardown(&["run", "active-close", "-w", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run}");
    let rows = tshark_rows(&file, 8000);
    assert_opening(&rows, &run);
    assert_active_close(&rows, &run, Form::Four);
    assert!(
        run.stdout.contains(
            "restart the server at once: bind 127.0.0.1:8000 with no option → \
             EADDRINUSE (errno 98): Address already in use"
        ),
        "{run}"
    );
    // The holder, from the kernel's table: the server's end, in TIME_WAIT, ~60 s left.
    let holder = run
        .stdout
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("TIME_WAIT  0       0       127.0.0.1:8000")
        })
        .unwrap_or_else(|| panic!("no TIME_WAIT holder row{run}"));
    let left: f64 = holder
        .split("timewait, ")
        .nth(1)
        .and_then(|s| s.split(" s left").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no timer in {holder:?}"));
    assert!((55.0..=60.0).contains(&left), "{holder}");
    assert!(run.flat().contains("60 s on Linux"), "{run}");
    // The kernel's table right after each close(), as ss would show it.
    let snapshots: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("kernel, right after the "))
        .collect();
    assert_eq!(snapshots.len(), 2, "{run}");
    assert!(snapshots[0].contains("server end FIN_WAIT_"), "{run}");
    assert!(
        snapshots[0].contains("client end CLOSE_WAIT (Recv-Q 12)"),
        "{run}"
    );
    assert!(
        snapshots[1].ends_with("kernel, right after the client's close(): server end TIME_WAIT"),
        "{run}"
    );
    assert!(run.stdout.contains("verdict: reproduced"), "{run}");
    // The ladder shows the server's way into TIME_WAIT.
    for change in [
        "ESTABLISHED → FIN_WAIT_1",
        "FIN_WAIT_1 → FIN_WAIT_2",
        "FIN_WAIT_2 → TIME_WAIT",
        "ESTABLISHED → CLOSE_WAIT",
        "CLOSE_WAIT → LAST_ACK",
        "LAST_ACK → CLOSED",
    ] {
        assert!(
            run.stdout.contains(change),
            "the ladder misses {change}{run}"
        );
    }
    let section = section_comment(&file);
    assert!(
        section.starts_with("teardown run active-close: the side that closes first"),
        "{section}"
    );
    // The same ladder as a picture, beside the capture, with the kernel's marks.
    let svg = std::fs::read_to_string(file.with_extension("svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("TIME_WAIT") && svg.contains("✓"),
        "{svg}"
    );
    assert!(
        section.contains("bind 127.0.0.1:8000 with no option → EADDRINUSE (errno 98)"),
        "{section}"
    );
    assert!(section.contains("in TIME_WAIT"), "{section}");
    assert!(section.ends_with("Verdict: reproduced."), "{section}");
}

#[test]
fn client_never_closes_leaves_fin_wait_2_and_close_wait_with_unread_bytes() {
    if !root("client_never_closes") || !tshark("client_never_closes") {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("cnc.pcapng");
    let run = teardown(&["run", "client-never-closes", "-w", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run}");
    let rows = tshark_rows(&file, 8000);
    assert_opening(&rows, &run);
    let close = closing(&rows);
    assert_eq!(ladder(close), ["S:AF", "C:A"], "{run}");
    assert_eq!(close[0].comment, SERVER_FIN);
    assert_eq!(
        close[1].comment,
        "server FIN_WAIT_1 → FIN_WAIT_2 (received ACK of its FIN, RFC 9293 §3.10.7.4; kernel \
         agrees: FIN_WAIT1 → FIN_WAIT2 → CLOSE, then it lives on in the kernel's time-wait \
         table as FIN_WAIT_2)"
    );
    assert_kernel_agrees(&run, &rows);
    assert!(
        run.stdout.contains("socket table: client CLOSE_WAIT"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("socket table: server FIN_WAIT_2 (timewait"),
        "{run}"
    );
    // The article's netstat lines: the server's orphan in FIN_WAIT_2, the client in
    // CLOSE_WAIT with the unread reply (11 bytes, and the FIN) in its Recv-Q.
    let rows_of = |state: &str| -> Vec<String> {
        run.stdout
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with(state))
            .map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let fin_wait_2 = rows_of("FIN_WAIT_2");
    assert!(
        fin_wait_2
            .iter()
            .any(|r| r.starts_with("FIN_WAIT_2 0 0 127.0.0.1:8000 127.0.0.2:")),
        "{run}"
    );
    let close_wait = rows_of("CLOSE_WAIT");
    assert_eq!(close_wait.len(), 1, "{run}");
    assert!(
        close_wait[0].starts_with("CLOSE_WAIT 12 0 127.0.0.2:")
            && close_wait[0].ends_with("127.0.0.1:8000"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("bind 127.0.0.1:8000 with no option → EADDRINUSE (errno 98)"),
        "{run}"
    );
    assert!(run.stdout.contains("verdict: reproduced"), "{run}");
    assert!(section_comment(&file).contains("in FIN_WAIT_2"));
}

#[test]
fn reuseaddr_needs_the_option_on_both_sockets() {
    if !root("reuseaddr") || !tshark("reuseaddr") {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("reuseaddr.pcapng");
    let run = teardown(&["run", "reuseaddr", "-w", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run}");
    let rows = tshark_rows(&file, 8000);
    assert_opening(&rows, &run);
    assert_active_close(&rows, &run, Form::Four);
    for expected in [
        "restart without the option: bind 127.0.0.1:8000 with no option → EADDRINUSE (errno 98)",
        "restart with SO_REUSEADDR: bind 127.0.0.1:8000 with SO_REUSEADDR → bound, and listen() works",
        "restart with SO_REUSEADDR, old socket without: bind 127.0.0.3:8000 with SO_REUSEADDR → \
         EADDRINUSE (errno 98)",
    ] {
        assert!(run.stdout.contains(expected), "missing {expected:?}{run}");
    }
    let flat = run.flat();
    assert!(
        flat.contains("the new socket's SO_REUSEADDR alone would have been enough"),
        "{run}"
    );
    assert!(flat.contains("on Linux both must set it"), "{run}");
    let section = section_comment(&file);
    assert!(section.contains("with SO_REUSEADDR → bound"), "{section}");
}

#[test]
fn quick_close_lets_the_kernel_merge_the_ack_into_the_fin() {
    if !root("quick_close") || !tshark("quick_close") {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("q.pcapng");
    let run = teardown(&[
        "run",
        "active-close",
        "--quick-close",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        !run.stdout
            .contains("waits until its kernel has sent the ACK"),
        "{run}"
    );
    let rows = tshark_rows(&file, 8000);
    assert_active_close(&rows, &run, Form::Any);
    // Whatever the kernel chose, the ladder and the capture tell the same story.
    let merged = ladder(closing(&rows)).len() == 3;
    assert_eq!(
        run.stdout.contains("FIN_WAIT_1 → TIME_WAIT"),
        merged,
        "{run}"
    );
    assert_eq!(
        run.stdout.contains("FIN_WAIT_1 → FIN_WAIT_2"),
        !merged,
        "{run}"
    );
}

#[test]
fn port_flag_moves_the_server() {
    if !root("port_flag") || !tshark("port_flag") {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("p.pcapng");
    let run = teardown(&[
        "run",
        "active-close",
        "--port",
        "9000",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let rows = tshark_rows(&file, 9000);
    assert_active_close(&rows, &run, Form::Four);
    assert!(
        run.stdout
            .contains("bind 127.0.0.1:9000 with no option → EADDRINUSE"),
        "{run}"
    );
}

#[test]
fn runs_repeat_because_each_gets_a_fresh_namespace() {
    if !root("runs_repeat") {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("again.pcapng");
    for i in 0..20 {
        let run = teardown(&["run", "active-close", "-w", file.to_str().unwrap()]);
        assert_eq!(run.code, Some(0), "run {i}{run}");
        assert!(
            run.stdout.contains("captured 10 segments")
                || run.stdout.contains("captured 11 segments"),
            "{run}"
        );
    }
}

#[test]
fn host_mode_finishes_while_other_traffic_runs_on_lo() {
    if !root("host_mode_busy_lo") {
        return;
    }
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Another program's datagrams on the host's loopback, every millisecond.
    let stop = Arc::new(AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            while !stop.load(Ordering::SeqCst) {
                let _ = sock.send_to(b"noise", "127.0.0.1:9");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let port = free_port().to_string();
    let dir = TempDir::new();
    let file = dir.join("busy.pcapng");
    let mut child = Command::new(BIN)
        .args([
            "run",
            "active-close",
            "--host",
            "--port",
            &port,
            "-w",
            file.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    stop.store(true, Ordering::SeqCst);
    noise.join().unwrap();
    let status = status.expect("the run did not finish within 20 s while lo was busy");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn host_mode_runs_on_the_hosts_loopback() {
    if !root("host_mode") || !tshark("host_mode") {
        return;
    }
    let port = free_port();
    let dir = TempDir::new();
    let file = dir.join("host.pcapng");
    let run = teardown(&[
        "run",
        "active-close",
        "--host",
        "--port",
        &port.to_string(),
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("on the host's loopback"), "{run}");
    let rows = tshark_rows(&file, port);
    assert_active_close(&rows, &run, Form::Four);
    // The host now holds a TIME_WAIT socket on that port: the tool must say so, and stop.
    let again = teardown(&[
        "run",
        "active-close",
        "--host",
        "--port",
        &port.to_string(),
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(again.code, Some(2), "{again}");
    assert!(
        again.stderr.contains(&format!(
            "127.0.0.1:{port} is held by a TIME_WAIT socket that no program owns"
        )),
        "{again}"
    );
    assert!(!again.stderr.contains("stop that program"), "{again}");
}

/// Runs a scenario; returns the run and its segments as tshark decodes them.
fn scenario(name: &str) -> (Run, Vec<Row>, TempDir) {
    let dir = TempDir::new();
    let file = dir.join("s.pcapng");
    let run = teardown(&["run", name, "-w", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run}");
    let rows = tshark_rows(&file, 8000);
    (run, rows, dir)
}

#[test]
fn passive_close_leaves_time_wait_with_the_client_and_the_server_restarts() {
    if !root("passive_close") || !tshark("passive_close") {
        return;
    }
    let (run, rows, _dir) = scenario("passive-close");
    assert_opening(&rows, &run);
    let close = closing(&rows);
    assert_eq!(ladder(close), ["C:AF", "S:A", "S:AF", "C:A"], "{run}");
    assert!(
        close[0]
            .comment
            .starts_with("client ESTABLISHED → FIN_WAIT_1 (sent FIN"),
        "{run}"
    );
    assert!(
        close[2]
            .comment
            .contains("client FIN_WAIT_2 → TIME_WAIT (received FIN"),
        "{run}"
    );
    assert!(
        close[3]
            .comment
            .starts_with("server LAST_ACK → CLOSED (received ACK of its FIN"),
        "{run}"
    );
    assert_kernel_agrees(&run, &rows);
    assert!(
        run.stdout
            .contains("restart the server at once: bind 127.0.0.1:8000 with no option → bound"),
        "{run}"
    );
}

/// The abort: one RST,ACK from the server ends both ends, and the client's read() fails.
fn assert_reset(run: &Run, rows: &[Row]) {
    let last = rows.last().unwrap();
    assert_eq!(ladder(&rows[rows.len() - 1..]), ["S:AR"], "{run}");
    assert!(
        !rows.iter().any(|r| r.flags.contains('F')),
        "no FIN at all{run}"
    );
    assert!(
        last.comment
            .starts_with("server ESTABLISHED → CLOSED (sent RST"),
        "{run}"
    );
    assert!(
        last.comment
            .contains("client ESTABLISHED → CLOSED (received RST"),
        "{run}"
    );
    assert!(
        run.stdout.contains("read() → ECONNRESET (errno 104)"),
        "{run}"
    );
    // No TIME_WAIT anywhere: the server rebinds at once.
    assert!(
        run.stdout
            .contains("bind 127.0.0.1:8000 with no option → bound"),
        "{run}"
    );
    assert_kernel_agrees(run, rows);
}

#[test]
fn close_with_unread_data_resets_the_connection() {
    if !root("unread_data_rst") || !tshark("unread_data_rst") {
        return;
    }
    let (run, rows, _dir) = scenario("unread-data-rst");
    // The unread message: 14 bytes from the client that the server never read.
    assert!(rows.iter().any(|r| r.from_client && r.len == 14), "{run}");
    assert_reset(&run, &rows);
}

#[test]
fn so_linger_zero_aborts_with_rst_and_no_time_wait() {
    if !root("linger_abort") || !tshark("linger_abort") {
        return;
    }
    let (run, rows, _dir) = scenario("linger-abort");
    assert!(
        run.stdout
            .contains("setsockopt SO_LINGER {on, 0}, then close()"),
        "{run}"
    );
    assert_reset(&run, &rows);
}

#[test]
fn half_close_keeps_data_flowing_the_other_way() {
    if !root("half_close") || !tshark("half_close") {
        return;
    }
    let (run, rows, _dir) = scenario("half-close");
    let close = closing(&rows);
    // FIN from the server, then data from the client (acking the FIN), then the client's FIN.
    assert_eq!(ladder(&close[..2]), ["S:AF", "C:AP"], "{run}");
    assert_eq!(close[1].len, 13, "{run}");
    assert!(
        close[1]
            .comment
            .starts_with("server FIN_WAIT_1 → FIN_WAIT_2"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("server: read() → \"my last words\" in FIN_WAIT_2"),
        "{run}"
    );
    assert!(
        close.iter().any(|r| r
            .comment
            .contains("server FIN_WAIT_2 → TIME_WAIT (received FIN")),
        "{run}"
    );
    assert_kernel_agrees(&run, &rows);
    assert!(
        run.stdout
            .contains("bind 127.0.0.1:8000 with no option → EADDRINUSE (errno 98)"),
        "{run}"
    );
}

#[test]
fn writing_to_a_closed_peer_draws_an_rst_then_epipe() {
    if !root("write_after_close") || !tshark("write_after_close") {
        return;
    }
    let (run, rows, _dir) = scenario("write-after-close");
    let last = rows.last().unwrap();
    assert_eq!(ladder(&rows[rows.len() - 2..]), ["C:AP", "S:R"], "{run}");
    assert!(
        last.comment
            .contains("client CLOSE_WAIT → CLOSED (received RST"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("write(\"are you there?\") → 14: it succeeds, locally"),
        "{run}"
    );
    assert!(
        run.stdout.contains("write(\"hello?\") → EPIPE (errno 32)"),
        "{run}"
    );
    assert_kernel_agrees(&run, &rows);
}

#[test]
fn the_bind_matrix_gives_each_row_the_errno_linux_gives() {
    if !root("bind_matrix") {
        return;
    }
    let dir = TempDir::new();
    let run = teardown(&[
        "run",
        "bind-matrix",
        "-w",
        dir.join("m.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let rows: Vec<String> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| {
            ["TIME_WAIT on", "orphaned FIN_WAIT_2 on", "LISTEN on"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    let expected = [
        "TIME_WAIT on 127.0.0.1:8000, no option no option on 127.0.0.1:8000 EADDRINUSE (errno 98) ✓",
        "TIME_WAIT on 127.0.0.1:8001, no option SO_REUSEADDR on 127.0.0.1:8001 EADDRINUSE (errno 98) ✓",
        "TIME_WAIT on 127.0.0.1:8002, SO_REUSEADDR no option on 127.0.0.1:8002 EADDRINUSE (errno 98) ✓",
        "TIME_WAIT on 127.0.0.1:8003, SO_REUSEADDR SO_REUSEADDR on 127.0.0.1:8003 bound ✓",
        "TIME_WAIT on 127.0.0.1:8004, SO_REUSEPORT SO_REUSEPORT on 127.0.0.1:8004 bound ✓",
        "orphaned FIN_WAIT_2 on 127.0.0.1:8005, no option SO_REUSEADDR on 127.0.0.1:8005 EADDRINUSE (errno 98) ✓",
        "orphaned FIN_WAIT_2 on 127.0.0.1:8006, SO_REUSEADDR SO_REUSEADDR on 127.0.0.1:8006 bound ✓",
        "LISTEN on 127.0.0.1:8007, SO_REUSEADDR SO_REUSEADDR on 127.0.0.1:8007 EADDRINUSE (errno 98) ✓",
        "LISTEN on 127.0.0.1:8008, SO_REUSEADDR SO_REUSEADDR on 127.0.0.2:8008 bound ✓",
        "LISTEN on 127.0.0.1:8009, SO_REUSEPORT SO_REUSEPORT on 127.0.0.1:8009 bound ✓",
    ];
    assert_eq!(rows, expected, "{run}");
    assert!(run.stdout.contains("verdict: reproduced"), "{run}");
}

#[test]
fn run_all_runs_the_catalogue_and_tabulates_it() {
    if !root("run_all") {
        return;
    }
    let dir = TempDir::new();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "all"]).current_dir(&dir.0);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let catalogue = teardown(&["list"]).stdout.lines().count();
    // Progress on standard error, the table alone on standard output.
    assert!(
        run.stderr
            .contains("[1/16] active-close (port 8000) … reproduced"),
        "{run}"
    );
    assert!(!run.stdout.contains("[1/16]"), "{run}");
    let table: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("scenario "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), catalogue, "{run}");
    for row in &table {
        let cells: Vec<&str> = row
            .split("  ")
            .filter(|c| !c.trim().is_empty())
            .map(str::trim)
            .collect();
        // scenario, expected, observed, verdict, capture
        assert_eq!(cells[1], cells[2], "expected = observed: {row}");
        assert_eq!(cells[3], "reproduced", "{row}");
        assert!(dir.0.join(cells[4]).exists(), "{row}");
    }
    assert!(
        run.stdout
            .trim_end()
            .ends_with(&format!("{catalogue} of {catalogue} scenarios reproduced")),
        "{run}"
    );
    let run = teardown(&["run", "all", "-w", "x.pcapng"]);
    assert_eq!(run.code, Some(2), "{run}");

    // One truth: each capture annotated again offline, by packets alone, names the same
    // transitions on every packet as the run did with the kernel and its own socket calls,
    // but where the run's evidence decides (a sysctl the packets cannot show).
    let mut differing = Vec::new();
    // Every connection of every scenario is checked against the kernel: each change named
    // on a packet carries the kernel's word (agrees, or why Linux traces none).
    let mut unchecked = Vec::new();
    for row in &table {
        let capture = dir.0.join(row.split("  ").last().unwrap().trim());
        let again = dir.join("again.pcapng");
        let annotate = teardown(&[
            "annotate",
            capture.to_str().unwrap(),
            "-o",
            again.to_str().unwrap(),
        ]);
        assert_eq!(annotate.code, Some(0), "{annotate}");
        let (ran, offline) = (packet_comments(&capture), packet_comments(&again));
        assert_eq!(ran.len(), offline.len(), "{}", capture.display());
        for (i, (r, o)) in ran.iter().zip(&offline).enumerate() {
            if !transitions_in(r).is_empty() && !r.contains("kernel") {
                unchecked.push(format!("{} packet {}: {r}", capture.display(), i + 1));
            }
            if r.contains("net.ipv4.tcp_rfc1337 = 1") {
                continue;
            }
            if transitions_in(r) != transitions_in(o) {
                differing.push(format!(
                    "{} packet {}:\n  run:     {r}\n  offline: {o}",
                    capture.display(),
                    i + 1
                ));
            }
        }
    }
    assert!(differing.is_empty(), "{}", differing.join("\n"));
    assert!(unchecked.is_empty(), "{}", unchecked.join("\n"));
}

#[test]
fn json_report_for_scripts() {
    if !root("json_report") {
        return;
    }
    let dir = TempDir::new();
    let run = teardown(&[
        "run",
        "unread-data-rst",
        "--json",
        "-w",
        dir.join("j.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}{run}"));
    assert_eq!(report["verdict"], "reproduced");
    assert_eq!(
        report["observed"],
        serde_json::json!({"client": "CLOSED", "server": "CLOSED"})
    );
    let last = report["segments"].as_array().unwrap().last().unwrap();
    assert_eq!(last["flags"], "RST,ACK");
    assert_eq!(last["from"], "server");
    assert_eq!(last["transitions"][0]["to"], "CLOSED");
    assert_eq!(report["restarts"][0]["bound"], true);
    assert_eq!(report["kernel"]["mismatched"], 0);
    // The narration went to standard error.
    assert!(
        run.stderr.contains("read() → ECONNRESET (errno 104)"),
        "{run}"
    );
}

#[test]
fn an_orphaned_fin_wait_2_is_removed_by_its_timer_and_the_late_fin_draws_rst() {
    if !root("orphan_fin_wait_2") || !tshark("orphan_fin_wait_2") {
        return;
    }
    let host_timeout = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout").unwrap();
    let (run, rows, _dir) = scenario("orphan-fin-wait-2");
    assert!(
        run.stdout
            .contains("sysctl net.ipv4.tcp_fin_timeout = 2 (was 60), in this run's namespace only"),
        "{run}"
    );
    // The sysctl changed in the run's namespace only.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout").unwrap(),
        host_timeout
    );
    assert_opening(&rows, &run);
    let close = closing(&rows);
    assert_eq!(ladder(close), ["S:AF", "C:A", "C:AF", "S:R"], "{run}");
    assert_eq!(close[0].comment, SERVER_FIN, "{run}");
    // The late FIN comes after the timer: more than tcp_fin_timeout after the server's close.
    let late = close[2].time - close[0].time;
    assert!((2.0..5.0).contains(&late), "FIN {late} s after{run}");
    assert!(
        close[2].comment.starts_with(
            "server FIN_WAIT_2 → CLOSED (removed by the kernel before this segment: its \
             FIN_WAIT_2 timer (tcp_fin_timeout) expired"
        ),
        "{run}"
    );
    assert!(
        close[2]
            .comment
            .contains("client CLOSE_WAIT → LAST_ACK (sent FIN"),
        "{run}"
    );
    assert!(
        close[3].comment.starts_with(
            "client LAST_ACK → CLOSED (received RST, RFC 9293 §3.10.7.4; kernel agrees"
        ),
        "{run}"
    );
    assert_kernel_agrees(&run, &rows);
    // Refused while the orphan lives, bound once the timer removed it.
    assert!(
        run.stdout.contains(
            "restart the server at once: bind 127.0.0.1:8000 with no option → EADDRINUSE (errno 98)"
        ),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("restart the server now: bind 127.0.0.1:8000 with no option → bound"),
        "{run}"
    );
    // Never on the host: the sysctl would change there.
    let host = teardown(&["run", "orphan-fin-wait-2", "--host"]);
    assert_eq!(host.code, Some(2), "{host}");
    assert!(host.stderr.contains("run it without --host"), "{host}");
}

#[test]
fn an_in_window_rst_kills_time_wait_unless_rfc1337_is_set() {
    if !root("timewait_assassination") || !tshark("timewait_assassination") {
        return;
    }
    let host_rfc1337 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rfc1337").unwrap();
    let (run, rows, dir) = scenario("timewait-assassination");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rfc1337").unwrap(),
        host_rfc1337,
        "the host's sysctl is untouched"
    );
    let fin = rows.iter().position(|r| r.flags.contains('F')).unwrap();
    assert_opening(&rows[..fin], &run);
    // The article's close (4 segments), then the old duplicate, TIME_WAIT's ACK, the RST.
    let close = &closing(&rows)[..7];
    assert_eq!(
        ladder(close),
        ["S:AF", "C:A", "C:AF", "S:A", "C:AP", "S:A", "C:R"],
        "{run}"
    );
    assert_eq!(close[4].len, 11, "{run}");
    assert!(
        close[4]
            .comment
            .starts_with("an old duplicate: a copy of the client's first data"),
        "{run}"
    );
    assert!(
        close[6].comment.starts_with(
            "server TIME_WAIT → CLOSED (received RST in TIME_WAIT: TIME-WAIT assassination"
        ),
        "{run}"
    );
    // The kernel's trace follows port 8000 only.
    assert_kernel_agrees(&run, &rows[..fin + 7]);
    assert!(
        run.stdout.contains(
            "restart the server after the RST: bind 127.0.0.1:8000 with no option → bound"
        ),
        "{run}"
    );
    // Port 8001, tcp_rfc1337 = 1: the same RST is ignored and TIME_WAIT keeps the port.
    let other = tshark_rows(&dir.join("s.pcapng"), 8001);
    let rst = other
        .iter()
        .rev()
        .find(|r| r.flags == "R" && r.comment.contains("ignores the RST"))
        .unwrap_or_else(|| panic!("no ignored RST{run}"));
    assert!(
        rst.comment
            .starts_with("server ignores the RST and stays in TIME_WAIT: net.ipv4.tcp_rfc1337 = 1"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("sysctl net.ipv4.tcp_rfc1337 = 1 (was 0), in this run's namespace only"),
        "{run}"
    );
    assert!(
        run.stdout.contains(
            "restart the port+1 server after the RST: bind 127.0.0.1:8001 with no option → \
             EADDRINUSE (errno 98)"
        ),
        "{run}"
    );
}

/// The rows of the connection to port 8000 as captured on the client's veth (the capture
/// has only the scenario's port there).
fn two_hosts(name: &str) -> (Run, Vec<Row>, TempDir) {
    let (run, rows, dir) = scenario(name);
    assert!(
        run.stdout.contains(
            "server 10.77.0.2:8000, client 10.77.0.1, across two private network namespaces"
        ),
        "{run}"
    );
    (run, rows, dir)
}

#[test]
fn simultaneous_close_crosses_the_fins_and_leaves_time_wait_on_both_sides() {
    if !root("simultaneous_close") || !tshark("simultaneous_close") {
        return;
    }
    let (run, rows, dir) = two_hosts("simultaneous-close");
    assert_opening(&rows, &run);
    let close = closing(&rows);
    // Two FINs, neither acking the other, then two ACKs.
    assert_eq!(close.len(), 4, "{run}");
    let mut fins: Vec<String> = ladder(&close[..2]);
    fins.sort();
    assert_eq!(fins, ["C:AF", "S:AF"], "{run}");
    let mut acks: Vec<String> = ladder(&close[2..]);
    acks.sort();
    assert_eq!(acks, ["C:A", "S:A"], "{run}");
    // The second FIN carries both sides' CLOSING; each ACK one side's TIME_WAIT.
    let second = &close[1].comment;
    for who in ["client", "server"] {
        assert!(
            close.iter().any(|r| r.comment.contains(&format!(
                "{who} CLOSING → TIME_WAIT (received ACK of its FIN"
            ))),
            "{who}{run}"
        );
    }
    assert!(second.contains("→ CLOSING"), "{run}");
    assert!(
        second.contains("FIN_WAIT_1 → CLOSING (received FIN before the ACK of its own"),
        "{run}"
    );
    // The end whose FIN came second on this wire still names FIN_WAIT_1: it sent its FIN,
    // then the peer's crossed it (the kernel traces ESTABLISHED → FIN_WAIT1 → CLOSING).
    assert!(
        second.contains("ESTABLISHED → FIN_WAIT_1 (sent FIN")
            && second.contains("FIN_WAIT_1 → CLOSING (the peer's FIN, sent before this one"),
        "{run}"
    );
    assert!(!second.contains("ESTABLISHED → CLOSING"), "{run}");
    assert!(
        close[..2]
            .iter()
            .all(|r| r.comment.contains("held back by teardown's packet filter")),
        "{run}"
    );
    assert!(
        section_comment(&dir.join("s.pcapng")).contains(
            "Packet filter (iptables NFQUEUE, in the run's namespaces): hold each FIN until both \
             hosts have sent one"
        ),
        "{run}"
    );
    assert_kernel_agrees(&run, &rows);
    assert!(
        run.stdout.contains(
            "restart the server at once: bind 10.77.0.2:8000 with no option → EADDRINUSE (errno 98)"
        ),
        "{run}"
    );
}

#[test]
fn a_lost_final_ack_makes_last_ack_resend_its_fin_with_backoff() {
    if !root("lost_final_ack") || !tshark("lost_final_ack") {
        return;
    }
    let (run, rows, _dir) = two_hosts("lost-final-ack");
    assert_opening(&rows, &run);
    let all = closing(&rows);
    assert_eq!(ladder(&all[..1]), ["S:AF"], "{run}");
    // From the client's FIN: its final ACK dropped, the FIN three more times, then the ACK.
    let first = all
        .iter()
        .position(|r| r.from_client && r.flags.contains('F'))
        .unwrap();
    let close = &all[first - 1..];
    assert_eq!(
        ladder(&close[1..]),
        ["C:AF", "C:AF", "C:AF", "C:AF", "S:A"],
        "{run}"
    );
    for again in &close[2..5] {
        assert!(
            again
                .comment
                .contains("kernel: a retransmission (tcp:tcp_retransmit_skb)"),
            "{run}"
        );
        assert!(
            again
                .comment
                .contains("retransmission of the previous segment after"),
            "{run}"
        );
        assert!(
            again
                .comment
                .contains("sent again because the server's ACK segment sent at")
                && again
                    .comment
                    .contains("teardown's packet filter dropped it"),
            "{run}"
        );
        // The filter's log, an input of the annotator, settles what packets alone guess.
        assert!(
            !again.comment.contains("its ACK was lost or never sent"),
            "{run}"
        );
    }
    // A probe and the first timeout about 200 ms each, then the timeout doubles.
    let gaps: Vec<f64> = close[1..5]
        .windows(2)
        .map(|w| w[1].time - w[0].time)
        .collect();
    assert!(gaps.iter().all(|g| *g > 0.15), "{gaps:?}");
    assert!(gaps[2] > 1.6 * gaps[1], "backoff: {gaps:?}");
    assert!(
        close[5]
            .comment
            .starts_with("client LAST_ACK → CLOSED (received ACK of its FIN"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("3 retransmissions traced by tcp_retransmit_skb"),
        "{run}"
    );
    assert!(
        run.stdout.contains("sent its FIN again 3 times, ")
            && run.stdout.contains("1 tail loss probe (TCPLossProbes")
            && run
                .stdout
                .contains("2 retransmission timeouts (TCPTimeouts)"),
        "{run}"
    );
    assert_kernel_agrees(&run, &rows);
    // TIME_WAIT restarted its 60 s at the last FIN: almost all of it is left.
    let table = run
        .stdout
        .lines()
        .find(|l| l.contains("TIME_WAIT") && l.contains("10.77.0.2:8000") && l.contains("left"))
        .unwrap_or_else(|| panic!("no TIME_WAIT row{run}"));
    assert!(table.contains("timewait, 59."), "{table}");
}

#[test]
fn netns_runs_a_loopback_scenario_across_the_veth() {
    if !root("netns_flag") || !tshark("netns_flag") {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("n.pcapng");
    let run = teardown(&[
        "run",
        "active-close",
        "--netns",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout
            .contains("server 10.77.0.2:8000, client 10.77.0.1"),
        "{run}"
    );
    let rows = tshark_rows(&file, 8000);
    assert_active_close(&rows, &run, Form::Four);
    let refused = teardown(&["run", "bind-matrix", "--netns"]);
    assert_eq!(refused.code, Some(2), "{refused}");
    assert!(
        refused.stderr.contains("run it without --netns"),
        "{refused}"
    );
    let refused = teardown(&["run", "simultaneous-close", "--host"]);
    assert_eq!(refused.code, Some(2), "{refused}");
    assert!(
        refused.stderr.contains("run it without --host"),
        "{refused}"
    );
}

#[test]
fn the_client_runs_out_of_ports_and_connect_fails_with_eaddrnotavail() {
    if !root("port_exhaustion") || !tshark("port_exhaustion") {
        return;
    }
    let (run, rows, _dir) = scenario("port-exhaustion");
    // Six connections, each closed by the client first: six client FINs, no seventh SYN.
    let syns = rows.iter().filter(|r| r.flags == "S").count();
    assert_eq!(syns, 6, "{run}");
    let client_fins: Vec<&Row> = rows
        .iter()
        .filter(|r| r.from_client && r.flags.contains('F'))
        .collect();
    assert_eq!(client_fins.len(), 6, "{run}");
    assert!(
        client_fins.iter().all(|r| r
            .comment
            .starts_with("client ESTABLISHED → FIN_WAIT_1 (sent FIN")),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("connect() #7 to 127.0.0.1:8000 → EADDRNOTAVAIL (errno 99)"),
        "{run}"
    );
    // The kernel's table: six TIME_WAIT client ports, and the arithmetic.
    let tw = run
        .stdout
        .lines()
        .filter(|l| l.contains("TIME_WAIT") && l.contains("127.0.0.2:") && l.contains("left"))
        .count();
    assert_eq!(tw, 6, "{run}");
    assert!(
        run.stdout
            .contains("this run:      6 ports ÷ 60 s = 0.10 connections/s"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("Linux default: 28232 ports (32768–60999) ÷ 60 s = 471 connections/s"),
        "{run}"
    );
    assert_kernel_agrees(&run, &rows[rows.len() - 6..]);
}

#[test]
fn tw_reuse_takes_a_time_wait_port_over_after_the_delay_and_not_before() {
    if !root("tw_reuse") || !tshark("tw_reuse") {
        return;
    }
    let (run, _rows, dir) = scenario("tw-reuse");
    for value in [0, 1, 2] {
        assert!(
            run.stdout.contains(&format!(
                "tcp_tw_reuse = {value}: connect() #7 to 127.0.0.1:{} at once → EADDRNOTAVAIL \
                 (errno 99)",
                [8001, 8002, 8000][value]
            )),
            "{value}{run}"
        );
    }
    // With 1 and 2 (loopback) the port comes back after the delay, and not before it.
    let delay: f64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse_delay")
        .map(|v| v.trim().parse::<f64>().unwrap() / 1000.0)
        .unwrap_or(1.0);
    for value in [1, 2] {
        let line = run
            .stdout
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "tcp_tw_reuse = {value}: connect() again → connected"
                ))
            })
            .unwrap_or_else(|| panic!("no takeover with {value}{run}"));
        let after: f64 = line
            .split(" s after the first close")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!((delay..delay + 1.5).contains(&after), "{line}");
    }
    // The reused SYNs say so, with their timestamps.
    let rows = tshark_rows(&dir.join("s.pcapng"), 8000);
    let reused: Vec<&Row> = rows
        .iter()
        .filter(|r| r.comment.contains("the client's kernel took the port over"))
        .collect();
    assert_eq!(reused.len(), 2, "{run}");
    assert!(
        reused
            .iter()
            .all(|r| r.flags == "S" && r.comment.contains("is newer than the old connection's"))
    );
    assert!(run.stdout.contains("verdict: reproduced"), "{run}");
}

#[test]
fn a_newer_syn_is_let_in_by_the_servers_time_wait() {
    if !root("timewait_new_syn") || !tshark("timewait_new_syn") {
        return;
    }
    let (run, rows, _dir) = scenario("timewait-new-syn");
    let syns: Vec<&Row> = rows.iter().filter(|r| r.flags == "S").collect();
    assert_eq!(syns.len(), 2, "{run}");
    assert!(
        syns[1]
            .comment
            .contains("whose server end is in TIME_WAIT: TIME_WAIT may accept it when its sequence number or timestamp is newer than the old connection's (RFC 6191)"),
        "{run}"
    );
    // The SYN,ACK answers it: a new connection on the same 4-tuple.
    let second = rows.iter().rposition(|r| r.flags == "S").unwrap();
    assert_eq!(
        ladder(&rows[second..second + 3]),
        ["C:S", "S:AS", "C:A"],
        "{run}"
    );
    assert!(
        run.stdout
            .contains("accept() → a connection from 127.0.0.2:"),
        "{run}"
    );
    assert_kernel_agrees(&run, &rows[second..]);
}

#[test]
fn run_all_on_the_host_gives_each_scenario_its_own_ports_and_skips_the_namespaced_ones() {
    if !root("run_all_host") {
        return;
    }
    let dir = TempDir::new();
    // Ports of the host's own: a run leaves TIME_WAITs on them for a minute, so each test run
    // takes 160 ports (16 scenarios, 10 each) that no socket of the host uses now.
    let in_use = local_ports_in_use();
    let base = (0..200u16)
        .map(|k| 20000 + ((std::process::id() as u16).wrapping_add(k) % 200) * 160)
        .find(|b| !in_use.iter().any(|p| (*b..*b + 160).contains(p)))
        .expect("a free block of 160 ports");
    // A port in the middle of the layout (bind-matrix, place 8, its sixth row) is taken:
    // refused before the first scenario starts.
    let taken = std::net::TcpListener::bind(("127.0.0.1", base + 85)).unwrap();
    let run = teardown(&["run", "all", "--host", "--port", &base.to_string()]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{}", base + 85)),
        "{run}"
    );
    assert!(!run.stderr.contains("[1/"), "a scenario ran: {run}");
    drop(taken);

    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        "all",
        "--host",
        "--json",
        "--port",
        &base.to_string(),
    ])
    .current_dir(&dir.0);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let reports: Vec<serde_json::Value> =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not a JSON array: {e}{run}"));
    assert_eq!(reports.len(), 16, "{run}");
    let verdicts = |v: &str| reports.iter().filter(|r| r["verdict"] == v).count();
    assert_eq!(
        (verdicts("reproduced"), verdicts("skipped")),
        (10, 6),
        "{run}"
    );
    for (i, r) in reports.iter().enumerate() {
        if r["verdict"] == "reproduced" {
            // Each on its own ports: base + 10 × its place in `teardown list`.
            let server = r["server"].as_str().unwrap();
            assert_eq!(server, format!("127.0.0.1:{}", base + 10 * i as u16), "{r}");
            assert_eq!(r["observed"], r["expected"], "{r}");
        }
    }
    for skipped in ["orphan-fin-wait-2", "simultaneous-close", "tw-reuse"] {
        let r = reports.iter().find(|r| r["scenario"] == skipped).unwrap();
        assert_eq!(r["verdict"], "skipped", "{r}");
    }
    assert!(run.stderr.contains("[10/10] timewait-new-syn"), "{run}");
}

// ---------------------------------------------------------------------------------------
// Texts: wording that agrees with itself and with the kernel, colour, and the terminal's
// width (issue 13). Each runs a scenario as root into a directory of its own.
// ---------------------------------------------------------------------------------------

/// `teardown ARGS -w DIR/NAME.pcapng` with extra environment, run from DIR.
fn texts_run(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Run {
    let file = dir.join("x.pcapng");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("-w")
        .arg(&file)
        .current_dir(&dir.0)
        .env_remove("TEARDOWN_PAUSE_AFTER_STEP")
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(cmd)
}

#[test]
fn texts_lost_final_ack_tells_the_probe_then_the_timeouts_and_counts_right() {
    if !root("texts_lost_final_ack") {
        return;
    }
    let dir = TempDir::new();
    let run = texts_run(&dir, &["run", "lost-final-ack"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let section = section_comment(&dir.join("x.pcapng"));
    let flat = section.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!flat.contains("final ACK, twice"), "{section}");
    assert!(
        flat.contains("drops the server's ACK of the client's FIN three times"),
        "{section}"
    );
    assert!(
        flat.contains("first as a tail loss probe (RFC 8985), then at its retransmission timeout"),
        "{section}"
    );
    // What the run says the kernel counted is the same story, with plurals that fit.
    assert!(run.stdout.contains("sent its FIN again 3 times, "), "{run}");
    assert!(
        run.stdout.contains("1 tail loss probe (TCPLossProbes"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("2 retransmission timeouts (TCPTimeouts)"),
        "{run}"
    );
}

#[test]
fn texts_section_comment_has_sentences_and_names_each_close() {
    if !root("texts_section_comment") {
        return;
    }
    let dir = TempDir::new();
    let run = texts_run(&dir, &["run", "active-close"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let section = section_comment(&dir.join("x.pcapng"));
    assert!(
        section.starts_with(
            "teardown run active-close: the side that closes first keeps the port in \
             TIME_WAIT: the restart's bind() fails.\nThe server closes first"
        ),
        "{section}"
    );
    assert!(!section.contains("a close():"), "{section}");
    for close in ["the server's close(): ", "the client's close(): "] {
        let line = format!("Kernel table right after {close}");
        assert_eq!(section.matches(&line).count(), 1, "{line}\n{section}");
    }
    assert!(
        section.contains("Kernel table right after the client's close(): 127.0.0.1:8000 ↔ "),
        "{section}"
    );
}

#[test]
fn texts_kernel_words_are_spelled_as_everywhere_else() {
    if !root("texts_kernel_words") {
        return;
    }
    // The kernel's CLOSE is CLOSED, and both queues in one bracket.
    let dir = TempDir::new();
    let run = texts_run(&dir, &["run", "unread-data-rst"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let snapshot = run
        .stdout
        .lines()
        .find(|l| l.contains("kernel, right after") && l.contains("client end"))
        .unwrap_or_else(|| panic!("no snapshot{run}"));
    assert!(
        snapshot.contains("client end CLOSED (Recv-Q "),
        "{snapshot}"
    );
    assert!(snapshot.contains(", Send-Q "), "{snapshot}");
    assert!(!snapshot.contains(") ("), "{snapshot}");
    // No space before the colon when the socket has no timer.
    let run = texts_run(&TempDir::new(), &["run", "client-never-closes"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout
            .contains("socket table: client CLOSE_WAIT: agrees"),
        "{run}"
    );
    assert!(!run.stdout.contains(" : "), "{run}");
    // An empty read is the end of the stream, said as everywhere else.
    let run = texts_run(&TempDir::new(), &["run", "timewait-new-syn"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(!run.stdout.contains("read() → \"\""), "{run}");
    assert!(
        run.stdout
            .contains("client: read() → 0: EOF, the server closed its end"),
        "{run}"
    );
}

#[test]
fn texts_a_sysctl_value_is_shown_with_one_space() {
    if !root("texts_sysctl_value") {
        return;
    }
    let dir = TempDir::new();
    let run = texts_run(&dir, &["run", "port-exhaustion"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(!run.stdout.contains('\t'), "{run}");
    let was = |text: &str| {
        let after = text.split("ip_local_port_range = ").nth(1)?;
        let was = after.split("(was ").nth(1)?.split(')').next()?.to_string();
        Some(was)
    };
    let said = was(&run.stdout).unwrap_or_else(|| panic!("no sysctl line{run}"));
    let words: Vec<&str> = said.split(' ').collect();
    assert!(
        words.len() == 2 && words.iter().all(|w| w.parse::<u16>().is_ok()),
        "{said:?}"
    );
    let section = section_comment(&dir.join("x.pcapng"));
    assert!(section.contains(&format!("(was {said})")), "{section}");
}

#[test]
fn texts_bind_matrix_rows_line_up() {
    if !root("texts_bind_matrix") {
        return;
    }
    let dir = TempDir::new();
    let run = texts_run(&dir, &["run", "bind-matrix"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("old socket"))
        .take(11)
        .collect();
    assert_eq!(lines.len(), 11, "{run}");
    // Where each cell starts: after a run of two or more spaces.
    let starts = |line: &str| -> Vec<usize> {
        let chars: Vec<char> = line.chars().collect();
        (2..chars.len())
            .filter(|&i| chars[i] != ' ' && chars[i - 1] == ' ' && chars[i - 2] == ' ')
            .collect()
    };
    let header = starts(lines[0]);
    assert_eq!(header.len(), 4, "{}", lines[0]);
    for row in &lines[1..] {
        assert_eq!(starts(row), header, "out of line:\n{}\n{row}", lines[0]);
    }
}

#[test]
fn texts_lua_info_column_has_no_space_before_a_comma() {
    if !root("texts_lua") || !tshark("texts_lua") {
        return;
    }
    let dir = TempDir::new();
    let run = texts_run(&dir, &["run", "simultaneous-close"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new("tshark");
    cmd.arg("-X")
        .arg(format!("lua_script:{root}/scripts/teardown.lua"))
        .arg("-r")
        .arg(dir.join("x.pcapng"))
        .args(["-T", "fields", "-e", "_ws.col.Info"]);
    let info = run_cmd(cmd);
    assert_eq!(info.code, Some(0), "{info}");
    let released: Vec<&str> = info
        .stdout
        .lines()
        .filter(|l| l.contains("then released"))
        .collect();
    assert!(!released.is_empty(), "{info}");
    for line in released {
        assert!(line.contains(" ms, then released"), "{line}");
        assert!(!line.contains(" ,"), "{line}");
    }
}

#[test]
fn texts_a_time_wait_on_the_host_is_waited_for_not_stopped() {
    if !root("texts_port_busy") {
        return;
    }
    // A TIME_WAIT of our own on a host port: the server's end closes first.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(server);
    drop(listener);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let dir = TempDir::new();
    let run = texts_run(
        &dir,
        &["run", "active-close", "--host", "--port", &port.to_string()],
        &[],
    );
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "127.0.0.1:{port} is held by a TIME_WAIT socket that no program owns, for "
        )),
        "{run}"
    );
    assert!(
        run.stderr
            .contains(" s more: wait, pick another --port, or drop --host"),
        "{run}"
    );
    assert!(!run.stderr.contains("stop that program"), "{run}");
}

#[test]
fn texts_host_is_not_offered_without_cap_net_raw() {
    if !root("texts_no_host_hint") {
        return;
    }
    // A user namespace of its own that may create no more of them, and no capability at
    // all: neither a private namespace nor --host's capture can be had.
    let dir = TempDir::new();
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --inh-caps=-all \
         --ambient-caps=-all --bounding-set=-all -- {BIN} run active-close -w {}",
        dir.join("x.pcapng").display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "sh", "-c", &script]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(run.stderr.contains("needs root"), "{run}");
    assert!(!run.stderr.contains("--host"), "{run}");
    assert!(
        run.stderr.contains(
            "run with sudo, or once `sudo setcap cap_sys_admin,cap_net_admin,cap_net_raw+ep "
        ),
        "{run}"
    );
}

#[test]
fn texts_colour_only_when_asked_or_on_a_terminal_without_no_color() {
    if !root("texts_colour") {
        return;
    }
    let always = texts_run(
        &TempDir::new(),
        &["--color", "always", "run", "active-close"],
        &[("NO_COLOR", "1")],
    );
    assert_eq!(always.code, Some(0), "{always}");
    assert!(
        always.stdout.contains("\x1b[32mverdict: reproduced\x1b[0m"),
        "{always}"
    );
    assert!(always.stdout.contains("\x1b[32m✓\x1b[0m"), "{always}");
    // The flag is global: after the subcommand too.
    let after = texts_run(
        &TempDir::new(),
        &["run", "active-close", "--color=always"],
        &[],
    );
    assert!(after.stdout.contains("\x1b[32m✓"), "{after}");
    // Piped, by default: none; NO_COLOR with auto: none.
    for run in [
        texts_run(&TempDir::new(), &["run", "active-close"], &[]),
        texts_run(
            &TempDir::new(),
            &["--color", "auto", "run", "active-close"],
            &[("NO_COLOR", "1")],
        ),
        texts_run(
            &TempDir::new(),
            &["--color", "never", "run", "active-close"],
            &[],
        ),
    ] {
        assert_eq!(run.code, Some(0), "{run}");
        assert!(!run.stdout.contains('\x1b'), "{run}");
        assert!(run.stdout.contains("verdict: reproduced"), "{run}");
    }
}

#[test]
fn texts_eighty_columns_keep_the_ladder_and_the_story_within() {
    if !root("texts_eighty_columns") {
        return;
    }
    let run = texts_run(
        &TempDir::new(),
        &["run", "active-close"],
        &[("COLUMNS", "80")],
    );
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("time ms"))
        .unwrap_or_else(|| panic!("no ladder{run}"));
    let last = lines
        .iter()
        .position(|l| l.trim_start().starts_with("final "))
        .unwrap();
    // The narration, the ladder and its legend: everything teardown's run itself words.
    let legend_end = header
        + lines[header..]
            .iter()
            .position(|l| l.starts_with("captured "))
            .unwrap();
    let first_step = lines.iter().position(|l| l.starts_with("  1. ")).unwrap();
    for line in &lines[first_step..legend_end] {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}{run}",
            line.chars().count()
        );
    }
    let ladder = lines[header..=last].join("\n");
    for change in [
        "CLOSED → SYN_SENT ✓",
        "LISTEN → SYN_RECEIVED ○",
        "SYN_SENT → ESTABLISHED ✓",
        "SYN_RECEIVED → ESTABLISHED ✓",
        "ESTABLISHED → FIN_WAIT_1 ✓",
        "ESTABLISHED → CLOSE_WAIT ✓",
        "FIN_WAIT_1 → FIN_WAIT_2 ✓",
        "CLOSE_WAIT → LAST_ACK ✓",
        "FIN_WAIT_2 → TIME_WAIT ○",
        "LAST_ACK → CLOSED ✓",
    ] {
        assert!(ladder.contains(change), "{change} missing:\n{ladder}");
    }
    assert_eq!(
        lines[last].split_whitespace().collect::<Vec<_>>(),
        ["final", "CLOSED", "TIME_WAIT"]
    );
    // Without COLUMNS, piped: the wide ladder, one line per segment.
    let wide = texts_run(&TempDir::new(), &["run", "active-close"], &[]);
    assert!(
        wide.stdout
            .lines()
            .any(|l| l.chars().count() > 100 && l.contains("── SYN seq=0")),
        "{wide}"
    );
}
