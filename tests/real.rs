//! Captures of real programs (nginx, curl, socat; tcpdump on loopback), each with the kernel's
//! trace recorded with it (`tests/data/real/`, made by `scripts/make-real-captures.sh`): the
//! transitions `annotate` names from packets alone must be the ones the kernel traced.

use std::path::{Path, PathBuf};

use crate::helper::*;

fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/real")
        .join(name)
}

type Path2 = Vec<(String, String)>;

/// Each endpoint's transitions as the kernel traced them: [client, server]. The kernel's
/// CLOSE that is the move to the time-wait table is TIME_WAIT; a TIME_WAIT the socket table
/// showed before a new connection on the same 4-tuple, and that connection's start, prove
/// the kernel destroyed it (it traces no event for a time-wait socket's end).
fn kernel_paths(name: &str) -> [Path2; 2] {
    let text = std::fs::read_to_string(real(&format!("{name}.expect"))).unwrap();
    let mut paths: [Path2; 2] = [Vec::new(), Vec::new()];
    let mut addrs = [String::new(), String::new()];
    // The socket table's TIME-WAIT lines (kept at the end of the file), by local address.
    let time_wait: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TIME-WAIT"))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let role = |w: &str| match w {
            "client" => Some(0),
            "server" => Some(1),
            _ => None,
        };
        if let Some(rest) = line.strip_prefix("# ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            if rest.contains("the move to the time-wait table")
                && let Some(r) = w.first().and_then(|w| role(w))
                && let Some(last) = paths[r].last_mut()
                && last.1 == "CLOSED"
            {
                last.1 = "TIME_WAIT".into();
            }
            continue;
        }
        let Some(r) = words.first().and_then(|w| role(w)) else {
            continue;
        };
        addrs[r] = words[1].to_string();
        if words.len() == 5 && words[3] == "->" {
            let (from, to) = (words[2].to_string(), words[4].to_string());
            let opens = (from == "CLOSED" && to == "SYN_SENT")
                || (from == "LISTEN" && to == "SYN_RECEIVED");
            if opens
                && paths[r].last().is_some_and(|l| l.1 == "TIME_WAIT")
                && time_wait.contains(&addrs[r].as_str())
            {
                paths[r].push(("TIME_WAIT".into(), "CLOSED".into()));
            }
            paths[r].push((from, to));
        }
    }
    paths
}

/// Each endpoint's transitions as `teardown annotate` names them, packet by packet, and the
/// comments.
fn teardown_paths(name: &str) -> ([Path2; 2], Vec<String>) {
    let dir = TempDir::new();
    let out = dir.join("a.pcapng");
    let run = teardown(&[
        "annotate",
        real(&format!("{name}.pcap")).to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let comments = packet_comments(&out);
    let mut paths: [Path2; 2] = [Vec::new(), Vec::new()];
    for c in &comments {
        // What the segment ended of an earlier connection ("connection 0: server TIME_WAIT →
        // CLOSED", a takeover) came before what it began.
        let (earlier, own): (Vec<&str>, Vec<&str>) =
            c.split("; ").partition(|p| p.starts_with("connection "));
        let ordered = [earlier, own].concat().join("; ");
        for (role, from, to) in transitions_in(&ordered) {
            let path = &mut paths[usize::from(role == "server")];
            // A FIN that also acks this end's FIN: RFC 9293 §3.10.7.4 names FIN-WAIT-1 →
            // TIME-WAIT at once, Linux passes through FIN_WAIT_2 on the same segment (the
            // ACK first, then the FIN) and traces both: the same path, told in two steps.
            if (from.as_str(), to.as_str()) == ("FIN_WAIT_1", "TIME_WAIT") {
                path.push(("FIN_WAIT_1".into(), "FIN_WAIT_2".into()));
                path.push(("FIN_WAIT_2".into(), "TIME_WAIT".into()));
            } else {
                path.push((from, to));
            }
        }
    }
    (paths, comments)
}

fn summary(name: &str) -> String {
    let run = teardown(&["summary", real(&format!("{name}.pcap")).to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run}");
    run.stdout
}

fn same_as_the_kernel(name: &str) -> Vec<String> {
    let kernel = kernel_paths(name);
    let (ours, comments) = teardown_paths(name);
    for (i, role) in ["client", "server"].iter().enumerate() {
        assert_eq!(
            ours[i],
            kernel[i],
            "{name}: the {role}'s path differs from the kernel's trace\ncomments:\n{}",
            comments.join("\n")
        );
    }
    comments
}

#[test]
fn nginx_closing_first_is_the_textbook_close() {
    let comments = same_as_the_kernel("normal-nginx");
    assert!(
        !comments.iter().any(|c| c.contains("UNEXPECTED")),
        "{comments:?}"
    );
    assert!(summary("normal-nginx").contains("server closed first (FIN)"));
}

#[test]
fn crossing_fins_of_socat_are_a_simultaneous_close() {
    let comments = same_as_the_kernel("crossing-fins");
    // The first FIN no longer moves the other end to CLOSE_WAIT: it had sent its own.
    assert!(
        !comments.iter().any(|c| c.contains("CLOSE_WAIT")),
        "{comments:?}"
    );
    let s = summary("crossing-fins");
    assert!(s.contains("simultaneous close"), "{s}");
    assert!(
        s.contains("final: client TIME_WAIT, server TIME_WAIT"),
        "{s}"
    );
}

#[test]
fn a_closed_port_refuses_and_no_server_socket_ever_was() {
    let comments = same_as_the_kernel("refused");
    assert!(!comments[0].contains("SYN_RECEIVED"), "{}", comments[0]);
    assert!(
        comments[1].contains("connection refused"),
        "{}",
        comments[1]
    );
    let s = summary("refused");
    assert!(s.contains("refused"), "{s}");
}

#[test]
fn a_new_syn_ends_the_old_time_wait_on_the_server_and_on_the_client() {
    same_as_the_kernel("timewait-new-syn");
    let s = summary("timewait-new-syn");
    let first = s.lines().next().unwrap();
    assert!(
        first.contains(
            "final: client CLOSED, server CLOSED (its TIME_WAIT taken over by a new SYN)"
        ),
        "{s}"
    );
    same_as_the_kernel("timewait-tw-reuse");
    let s = summary("timewait-tw-reuse");
    let first = s.lines().next().unwrap();
    assert!(
        first.contains(
            "final: client CLOSED (its TIME_WAIT taken over by a new SYN), server CLOSED"
        ),
        "{s}"
    );
}

#[test]
fn a_syn_sent_again_is_normal() {
    let comments = same_as_the_kernel("syn-retransmit");
    assert!(
        !comments.iter().any(|c| c.contains("UNEXPECTED")),
        "{comments:?}"
    );
    assert!(
        comments[1].contains("the SYN sent again"),
        "{}",
        comments[1]
    );
    // The first copy was dropped before the server (the rule's counter says so): the
    // listener's change is on the copy it answered.
    assert!(!comments[0].contains("SYN_RECEIVED"), "{}", comments[0]);
    assert!(
        comments[1].contains("server LISTEN → SYN_RECEIVED"),
        "{}",
        comments[1]
    );
}
