//! The article's two programs as separate processes, in a private network namespace, the
//! way a reader runs them in two terminals.

use std::process::Command;

use crate::helper::*;

/// Runs a bash script in a fresh network namespace with `$B` the teardown binary and a
/// `wait_listen PORT` helper; returns its output.
fn in_namespace(script: &str) -> Run {
    let prelude = r#"
set -u
ip link set lo up
wait_listen() { for i in $(seq 500); do "$B" sockets --port "$1" --state listen | grep -q LISTEN && return 0; sleep 0.01; done; echo "never listened on $1"; return 1; }
wait_state() { for i in $(seq 500); do "$B" sockets --port "$1" --state "$2" | grep -q "^[A-Z]" && return 0; sleep 0.01; done; echo "never $2 on $1"; return 1; }
"#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "bash", "-c", &format!("{prelude}{script}")])
        .env("B", BIN);
    run_cmd(cmd)
}

/// The text between `== name` and the next `==` marker.
fn section<'a>(run: &'a Run, name: &str) -> &'a str {
    let start = run
        .stdout
        .find(&format!("== {name}\n"))
        .unwrap_or_else(|| panic!("no section {name}{run}"));
    let rest = &run.stdout[start + name.len() + 4..];
    &rest[..rest.find("\n== ").map(|i| i + 1).unwrap_or(rest.len())]
}

#[test]
fn article_case_1_the_restart_fails_with_eaddrinuse_in_time_wait() {
    if !root("programs_case_1") {
        return;
    }
    let run = in_namespace(
        r#"
echo "== first"
"$B" server & S=$!
wait_listen 8000
"$B" client
wait $S; echo "server exit=$?"
echo "== restart"
"$B" server; echo "restart exit=$?"
"#,
    );
    let first = section(&run, "first");
    for line in [
        "client: wrote \"I am client\"",
        "server: read \"I am client\"",
        "client: read \"I am server\"",
        "client: read() returned 0 after 11 bytes: EOF, the server closed",
        "client: closed",
        "server exit=0",
    ] {
        assert!(first.contains(line), "missing {line:?}{run}");
    }
    let restart = section(&run, "restart");
    assert!(
        restart.starts_with(
            "bind: Address already in use — EADDRINUSE (errno 98) on 0.0.0.0:8000 with no option"
        ),
        "{run}"
    );
    let row = restart
        .lines()
        .find(|l| l.trim_start().starts_with("TIME_WAIT"))
        .unwrap_or_else(|| panic!("no TIME_WAIT holder{run}"));
    assert!(
        row.contains("127.0.0.1:8000") && row.contains("timewait, "),
        "{row}"
    );
    let flat = restart.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("Set SO_REUSEADDR on the server's listening socket before bind()"),
        "{run}"
    );
    assert!(restart.trim_end().ends_with("restart exit=1"), "{run}");
}

#[test]
fn article_case_2_the_client_never_closes() {
    if !root("programs_case_2") {
        return;
    }
    let run = in_namespace(
        r#"
"$B" server > /tmp/teardown-case2-server.$$ & S=$!
wait_listen 8000
"$B" client --no-read > /tmp/teardown-case2-client.$$ & C=$!
wait $S
# The client does not read, so its kernel delays the ACK of the FIN (about 40 ms).
wait_state 8000 fin-wait-2
echo "== table"
"$B" sockets --port 8000
echo "== restart"
"$B" server; echo "restart exit=$?"
echo "== client"; echo "$C"
kill $C; rm -f /tmp/teardown-case2-*.$$
"#,
    );
    let client = section(&run, "client").trim();
    let table = section(&run, "table");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let states: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    // The server's orphan in FIN_WAIT_2; the client in CLOSE_WAIT with the unread reply.
    assert!(states.contains(&("FIN_WAIT_2", "0")), "{run}");
    assert!(states.contains(&("CLOSE_WAIT", "12")), "{run}");
    let restart = section(&run, "restart");
    assert!(
        restart.starts_with("bind: Address already in use — EADDRINUSE (errno 98)"),
        "{run}"
    );
    assert!(restart.contains("sits in FIN_WAIT_2"), "{run}");
    // The client's end is on this machine: `why` names its pid, the program to fix.
    let flat = restart.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&format!("is on this machine: pid {client} (")),
        "{run}"
    );
    assert!(
        flat.contains(&format!(
            "Fix pid {client} (teardown): it holds the other end"
        )),
        "{run}"
    );
    assert!(restart.contains("restart exit=1"), "{run}");
}

#[test]
fn so_reuseaddr_on_both_runs_lets_the_restart_serve_and_on_one_it_does_not() {
    if !root("programs_reuseaddr") {
        return;
    }
    let run = in_namespace(
        r#"
"$B" server --reuseaddr > /dev/null & S=$!
wait_listen 8000; "$B" client > /dev/null; wait $S
echo "== both"
"$B" server --reuseaddr & S=$!
wait_listen 8000 && "$B" client > /dev/null; wait $S; echo "restart exit=$?"
"$B" server --port 8001 > /dev/null & S=$!
wait_listen 8001; "$B" client --port 8001 > /dev/null; wait $S
echo "== new only"
"$B" server --port 8001 --reuseaddr; echo "restart exit=$?"
"#,
    );
    let both = section(&run, "both");
    assert!(both.starts_with("server (pid "), "{run}");
    assert!(
        both.contains("listening on 0.0.0.0:8000 with SO_REUSEADDR"),
        "{run}"
    );
    assert!(both.contains("server: read \"I am client\""), "{run}");
    assert!(both.contains("restart exit=0"), "{run}");
    let new_only = section(&run, "new only");
    assert!(
        new_only.starts_with(
            "bind: Address already in use — EADDRINUSE (errno 98) on 0.0.0.0:8001 with SO_REUSEADDR"
        ),
        "{run}"
    );
    let flat = new_only.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("on Linux the old socket must have set it too"),
        "{run}"
    );
    assert!(new_only.contains("restart exit=1"), "{run}");
}

#[test]
fn client_without_a_server_says_so_in_one_line() {
    if !root("programs_refused") {
        return;
    }
    let run = in_namespace(r#""$B" client --port 8009; echo "exit=$?""#);
    assert!(run.stdout.contains("exit=2"), "{run}");
    assert_eq!(
        run.stderr.trim(),
        "teardown: nothing listens on 127.0.0.1:8009: start `teardown server --port 8009` first"
    );
}

#[test]
fn server_on_a_privileged_port_as_a_user_says_what_it_needs() {
    if !root("programs_privileged_port") {
        return;
    }
    let run = in_namespace(
        r#"setpriv --reuid=65534 --regid=65534 --clear-groups "$B" server --port 80; echo "exit=$?""#,
    );
    assert!(run.stdout.contains("exit=2"), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr.starts_with(
            "teardown: bind 0.0.0.0:80: EACCES (errno 13): ports below 1024 need privileges: run \
             as root, give the binary CAP_NET_BIND_SERVICE"
        ),
        "{run}"
    );
    assert!(
        run.stderr.contains("net.ipv4.ip_unprivileged_port_start"),
        "{run}"
    );
}
