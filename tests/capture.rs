//! `teardown capture`, live, in a private network namespace with the article's programs as
//! the traffic.

use std::process::Command;

use crate::helper::*;

/// Runs a bash script in a fresh network namespace, `$B` the teardown binary, with helpers
/// to wait for the capture to be ready and to run the article's exchange on port 8000.
fn in_namespace(script: &str) -> Run {
    let prelude = r#"
set -u
ip link set lo up
ready() { for i in $(seq 500); do grep -q "privileges dropped" "$1" 2>/dev/null && return 0; sleep 0.01; done; echo "capture never ready"; return 1; }
exchange() {
  local port=${1:-8000}
  "$B" server --port $port > /dev/null & local S=$!
  for i in $(seq 500); do "$B" sockets --port $port --state listen | grep -q LISTEN && break; sleep 0.01; done
  "$B" client --port $port > /dev/null; wait $S
}
"#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "bash", "-c", &format!("{prelude}{script}")])
        .env("B", BIN);
    run_cmd(cmd)
}

#[test]
fn a_live_capture_streams_into_tshark_with_comments_and_no_privileges() {
    if !root("capture_stream") || !tshark("capture_stream") {
        return;
    }
    let dir = TempDir::new();
    let err = dir.join("err");
    let run = in_namespace(&format!(
        r#"
"$B" capture --port 8000 -c 10 -o - 2>{err} | tshark -r - -T fields -e tcp.flags.str -e frame.comment 2>/dev/null &
P=$!
ready {err}
PID=$(grep -o 'pid [0-9]*' {err} | cut -d' ' -f2)
echo "== status"
grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/$PID/status
echo "== packets"
exchange
wait $P
echo "== log"
cat {err}
"#,
        err = err.display()
    ));
    assert!(
        section(&run, "log").contains(
            "listening on lo, link-type EN10MB (Ethernet), filter \"tcp port 8000\"; privileges \
             dropped: every capability given up"
        ),
        "{run}"
    );
    let status = section(&run, "status");
    assert!(status.contains("CapPrm:\t0000000000000000"), "{run}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{run}");
    assert!(status.contains("NoNewPrivs:\t1"), "{run}");
    let packets: Vec<(&str, &str)> = section(&run, "packets")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .collect();
    assert_eq!(packets.len(), 10, "{run}");
    assert_eq!(
        packets[0].0, "··········S·",
        "Wireshark decodes the SYN{run}"
    );
    assert!(
        packets[0]
            .1
            .starts_with("client CLOSED → SYN_SENT (sent SYN"),
        "{run}"
    );
    let fin = packets.iter().position(|p| p.0.ends_with('F')).unwrap();
    assert!(
        packets[fin]
            .1
            .starts_with("server ESTABLISHED → FIN_WAIT_1"),
        "{run}"
    );
    assert!(
        section(&run, "log").contains("10 packets written; the kernel received"),
        "{run}"
    );
}

#[test]
fn capture_as_another_user_with_z() {
    if !root("capture_z") {
        return;
    }
    let dir = TempDir::new();
    let (err, out) = (dir.join("err"), dir.join("z.pcapng"));
    let run = in_namespace(&format!(
        r#"
"$B" capture -Z nobody --duration 30 -o {out} 2>{err} &
P=$!
ready {err}
PID=$(grep -o 'pid [0-9]*' {err} | cut -d' ' -f2)
grep -E '^(Uid|CapEff)' /proc/$PID/status
kill -INT $P; wait $P; echo "exit=$?"
cat {err}
stat -c '%U' {out}
"#,
        err = err.display(),
        out = out.display()
    ));
    assert!(
        run.stdout.contains("Uid:\t65534\t65534\t65534\t65534"),
        "{run}"
    );
    assert!(run.stdout.contains("CapEff:\t0000000000000000"), "{run}");
    assert!(run.stdout.contains("exit=0"), "{run}");
    assert!(
        run.stdout
            .contains("; privileges dropped: running as user nobody (uid 65534, gid 65534)\n"),
        "{run}"
    );
    assert!(
        run.stdout.trim_end().ends_with("nobody"),
        "the file is the user's{run}"
    );
}

#[test]
fn ctrl_c_leaves_a_file_tshark_reads_to_the_last_packet() {
    if !root("capture_ctrl_c") || !tshark("capture_ctrl_c") {
        return;
    }
    let dir = TempDir::new();
    let (err, out) = (dir.join("err"), dir.join("c.pcapng"));
    let run = in_namespace(&format!(
        r#"
"$B" capture -o {out} 2>{err} &
P=$!
ready {err}
exchange
kill -INT $P; wait $P; echo "exit=$?"
cat {err}
"#,
        err = err.display(),
        out = out.display()
    ));
    assert!(run.stdout.contains("exit=0"), "{run}");
    let written: usize = run
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("teardown capture: ")?
                .split(" packets written")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no count{run}"));
    assert!(written >= 10, "{run}");
    let rows = tshark_rows(&out, 8000);
    assert_eq!(
        rows.len(),
        written,
        "tshark reads every packet written{run}"
    );
    assert!(
        rows.last()
            .unwrap()
            .comment
            .starts_with("client LAST_ACK → CLOSED"),
        "{rows:?}"
    );
    // The closing statistics block: the kernel's counters.
    let bytes = std::fs::read(&out).unwrap();
    let mut reader = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
    let mut isb = None;
    while let Some(block) = reader.next_block() {
        if let pcap_file::pcapng::Block::InterfaceStatistics(b) = block.unwrap().0 {
            isb = Some(format!("{:?}", b.options));
        }
    }
    let isb = isb.expect("an interface statistics block");
    assert!(isb.contains("IsbIfDrop(0)"), "{isb}");
}

/// A capture on a veth that is deleted under it, after `before` (shell) sent SYNs to a
/// neighbour that never answers: the run (its exit status and log on standard output) and the
/// file's rows on port 8000. `None` where the test cannot run here.
fn capture_until_the_veth_goes(name: &str, before: &str) -> Option<(Run, Vec<Row>)> {
    if !root(name) || !tshark(name) {
        return None;
    }
    let dir = TempDir::new();
    let (err, out) = (dir.join("err"), dir.join("gone.pcapng"));
    let run = in_namespace(&format!(
        r#"
ip link add tdgo0 type veth peer name tdgo1
ip addr add 192.0.2.1/24 dev tdgo0; ip link set tdgo0 up; ip link set tdgo1 up
ip neigh add 192.0.2.99 lladdr 02:00:00:00:00:99 dev tdgo0
"$B" capture -i tdgo0 -o {out} 2>{err} & P=$!
ready {err}
{before}
ip link del tdgo0
wait $P; echo "exit=$?"
cat {err}
"#,
        err = err.display(),
        out = out.display()
    ));
    assert!(run.stdout.contains("exit=2"), "{run}");
    assert!(
        run.stdout
            .contains("capture on tdgo0: receive: Network is down"),
        "{run}"
    );
    let rows = tshark_rows(&out, 8000);
    Some((run, rows))
}

#[test]
fn an_interface_that_goes_away_leaves_the_packets_already_taken() {
    // Once their look-ahead is over (2 s), the SYNs are written; then the veth goes.
    let before = "timeout 1 bash -c 'echo > /dev/tcp/192.0.2.99/8000' 2>/dev/null\nsleep 2.5";
    let Some((run, rows)) = capture_until_the_veth_goes("capture_gone", before) else {
        return;
    };
    assert!(!rows.is_empty(), "the SYNs taken before the error{run}");
    assert!(rows.iter().all(|r| r.flags == "S"), "{rows:?}");
    assert!(
        rows[0].comment.starts_with("client CLOSED → SYN_SENT"),
        "{rows:?}"
    );
}

/// The interface goes away while a SYN still waits in the look-ahead for its answer (well
/// within its 2 s): the SYN is written before the error, not lost with the annotator.
#[test]
fn an_interface_that_goes_away_leaves_the_frames_still_held() {
    let before = "timeout 0.3 bash -c 'echo > /dev/tcp/192.0.2.99/8000' 2>/dev/null";
    let Some((run, rows)) = capture_until_the_veth_goes("capture_gone_held", before) else {
        return;
    };
    assert_eq!(
        rows.len(),
        1,
        "the one SYN, held when the interface went{run}"
    );
    assert_eq!(rows[0].flags, "S", "{rows:?}");
    assert!(
        rows[0].comment.starts_with("client CLOSED → SYN_SENT"),
        "{rows:?}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_capture_quietly() {
    if !root("capture_pipe") {
        return;
    }
    let dir = TempDir::new();
    let err = dir.join("err");
    let run = in_namespace(&format!(
        r#"
( "$B" capture -o - 2>{err}; echo "capture exit=$?" >> {err} ) | head -c 300 > /dev/null &
ready {err}
exchange
for i in $(seq 10); do exchange $((9000 + i)); grep -q "capture exit" {err} && break; done
for i in $(seq 300); do grep -q "capture exit" {err} && break; sleep 0.01; done
cat {err}
"#,
        err = err.display()
    ));
    assert!(run.stdout.contains("capture exit=0"), "{run}");
    assert!(!run.stdout.contains("Broken pipe"), "{run}");
    assert!(!run.stdout.contains("panicked"), "{run}");
}

#[test]
fn bad_interface_filter_and_privileges_get_one_line_and_exit_2() {
    if !root("capture_bad_input") {
        return;
    }
    let dir = TempDir::new();
    let out = dir.join("x.pcapng");
    let o = out.to_str().unwrap();
    let run = teardown(&["capture", "-i", "nosuchif0", "-o", o]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr
            .contains("no interface named \"nosuchif0\"; interfaces here: "),
        "{run}"
    );
    assert!(run.stderr.contains("lo"), "{run}");
    // libpcap's reason, and what to do, on one line; nothing written.
    for args in [&["tcp", "port"][..], &["-f", "port 99999"], &["frob", "1"]] {
        let expr = args
            .iter()
            .filter(|a| **a != "-f")
            .copied()
            .collect::<Vec<_>>();
        let run = teardown(&[&["capture"], args, &["-o", o]].concat());
        assert_eq!(run.code, Some(2), "{run}");
        assert_eq!(run.stderr.lines().count(), 1, "{run}");
        assert!(
            run.stderr.starts_with(&format!(
                "teardown: cannot compile the filter {:?}: libpcap says \"",
                expr.join(" ")
            )),
            "{run}"
        );
        assert!(run.stderr.contains("(man 7 pcap-filter)"), "{run}");
        assert!(!out.exists(), "{run}");
    }
    let mut cmd = as_nobody_cmd();
    cmd.args(["capture", "-o", "/tmp/never.pcapng"]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr.contains("needs CAP_NET_RAW: run with sudo"),
        "{run}"
    );
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

/// Two namespaces of the test's own joined by a veth pair (TEST-NET addresses, inside them
/// only); the capture runs in one of them on its veth, by `--netns`.
#[test]
fn capture_on_a_veth_inside_a_named_namespace() {
    if !root("capture_veth") || !tshark("capture_veth") {
        return;
    }
    let dir = TempDir::new();
    let (err, out) = (dir.join("err"), dir.join("veth.pcapng"));
    let id = std::process::id() % 100_000;
    let script = format!(
        r#"
set -u
A=tdit-a{id}; Z=tdit-b{id}; VA=tdva{id}; VB=tdvb{id}
trap 'ip netns del $A 2>/dev/null; ip netns del $Z 2>/dev/null' EXIT
ip netns add $A; ip netns add $Z
ip link add $VA type veth peer name $VB
ip link set $VA netns $A; ip link set $VB netns $Z
ip -n $A addr add 192.0.2.1/24 dev $VA; ip -n $A link set $VA up; ip -n $A link set lo up
ip -n $Z addr add 192.0.2.2/24 dev $VB; ip -n $Z link set $VB up; ip -n $Z link set lo up
"$B" capture -i $VA --netns $A --port 8000 -c 10 -o {out} 2>{err} & P=$!
for i in $(seq 500); do grep -q "privileges dropped" {err} && break; sleep 0.01; done
ip netns exec $A "$B" server > /dev/null & S=$!
for i in $(seq 500); do ip netns exec $A "$B" sockets --port 8000 --state listen | grep -q LISTEN && break; sleep 0.01; done
ip netns exec $Z "$B" client --addr 192.0.2.1 > /dev/null
wait $S; wait $P; echo "capture exit=$?"
cat {err}
"#,
        out = out.display(),
        err = err.display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]).env("B", BIN);
    let run = run_cmd(cmd);
    assert!(run.stdout.contains("capture exit=0"), "{run}");
    assert!(
        run.stdout.contains(&format!(
            "listening on tdva{id} in network namespace tdit-a{id}, link-type EN10MB"
        )),
        "{run}"
    );
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(&out).args([
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "frame.packet_flags_direction",
        "-e",
        "frame.comment",
    ]);
    let tshark = run_cmd(cmd);
    let rows: Vec<Vec<&str>> = tshark
        .stdout
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 10, "{tshark}");
    // From the client: inbound on the server's veth; from the server: outbound.
    for r in &rows {
        let expected = if r[0] == "192.0.2.2" {
            "0x00000001"
        } else {
            "0x00000002"
        };
        assert_eq!(r[1], expected, "{tshark}");
    }
    assert!(
        rows[0][2].starts_with("client CLOSED → SYN_SENT"),
        "{tshark}"
    );
    let listed = run_cmd({
        let mut c = Command::new("ip");
        c.args(["netns", "list"]);
        c
    });
    assert!(
        !listed.stdout.contains(&format!("tdit-a{id}")),
        "namespace left behind"
    );
}

/// The ports of the TCP segments in a capture, in order, as tshark reads them.
fn ports(file: &std::path::Path) -> Vec<(u16, u16)> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport"]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    run.stdout
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap_or_else(|| panic!("{run}"));
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// `the kernel received N` from the capture's last line: what passed the socket's filter.
fn received(log: &str) -> usize {
    log.split("the kernel received ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {log}"))
}

/// Captures, in a namespace of its own, the article's exchange on ports 8000, 8001 and
/// 8002 with `capture ARGS -o FILE`; returns the run (its log included) and the file.
fn capture_three_exchanges(dir: &TempDir, args: &str) -> (Run, std::path::PathBuf) {
    let (err, out) = (dir.join("err"), dir.join("f.pcapng"));
    let run = in_namespace(&format!(
        r#"
"$B" capture {args} -o {out} 2>{err} &
P=$!
ready {err}
exchange 8000; exchange 8001; exchange 8002
sleep 0.1
kill -INT $P; wait $P; echo "exit=$?"
cat {err}
"#,
        err = err.display(),
        out = out.display()
    ));
    assert!(run.stdout.contains("exit=0"), "{run}");
    (run, out)
}

#[test]
fn a_trailing_expression_is_compiled_by_libpcap_and_run_by_the_kernel() {
    if !root("capture_expression") || !tshark("capture_expression") {
        return;
    }
    let dir = TempDir::new();
    // tcpdump's way: the words after the options, joined; `or` is beyond any home-made subset.
    let (run, out) = capture_three_exchanges(&dir, "tcp port 8000 or tcp port 8001");
    let seen = ports(&out);
    let has = |p: u16| seen.iter().any(|&(a, b)| a == p || b == p);
    assert!(has(8000) && has(8001), "{seen:?}{run}");
    assert!(!has(8002), "segments of port 8002 written: {seen:?}{run}");
    // The kernel counts only what its filter passed: the 8002 exchange never reached us.
    assert_eq!(received(&run.stdout), seen.len(), "{run}");
    assert!(
        section_comment(&out).contains("filter \"tcp port 8000 or tcp port 8001\""),
        "{}",
        section_comment(&out)
    );
    let rows = tshark_rows(&out, 8000);
    assert!(
        rows[0].comment.starts_with("client CLOSED → SYN_SENT"),
        "{rows:?}"
    );
}

#[test]
fn an_expression_only_libpcap_knows_filters_in_the_kernel() {
    if !root("capture_fin_only") || !tshark("capture_fin_only") {
        return;
    }
    let dir = TempDir::new();
    let (run, out) =
        capture_three_exchanges(&dir, "'tcp[tcpflags] & tcp-fin != 0' and not port 8001");
    let rows = tshark_rows(&out, 8000);
    // Two FINs per exchange, of 8000 and 8002 only.
    assert_eq!(rows.len(), 4, "{rows:?}{run}");
    assert!(rows.iter().all(|r| r.flags.contains('F')), "{rows:?}");
    assert!(ports(&out).iter().all(|&(a, b)| a != 8001 && b != 8001));
    assert_eq!(received(&run.stdout), 4, "{run}");
}

#[test]
fn any_captures_every_interface_as_linux_cooked_v2() {
    if !root("capture_any") || !tshark("capture_any") {
        return;
    }
    let dir = TempDir::new();
    let (run, out) = capture_three_exchanges(&dir, "-i any port 8000");
    assert!(
        run.stdout
            .contains("listening on any, link-type LINUX_SLL2 (Linux cooked v2), filter"),
        "{run}"
    );
    let bytes = std::fs::read(&out).unwrap();
    let mut reader = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
    let mut linktypes = Vec::new();
    while let Some(block) = reader.next_block() {
        if let pcap_file::pcapng::Block::InterfaceDescription(idb) = block.unwrap().0 {
            linktypes.push(idb.linktype);
        }
    }
    assert_eq!(linktypes, [pcap_file::DataLink::LINUX_SLL2]);
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(&out).args([
        "-T",
        "fields",
        "-e",
        "sll.ifindex",
        "-e",
        "sll.hatype",
        "-e",
        "sll.pkttype",
        "-e",
        "tcp.dstport",
        "-e",
        "frame.comment",
    ]);
    let tshark = run_cmd(cmd);
    let rows: Vec<Vec<&str>> = tshark
        .stdout
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    // The article's exchange, each segment once (lo's outgoing copy is left out).
    assert_eq!(rows.len(), 10, "{tshark}{run}");
    for r in &rows {
        // lo: interface 1, ARPHRD_LOOPBACK, received by the host.
        assert_eq!(&r[..3], ["1", "772", "0"], "{tshark}");
    }
    assert_eq!(rows[0][3], "8000", "{tshark}");
    assert!(
        rows[0][4].starts_with("client CLOSED → SYN_SENT"),
        "{tshark}"
    );
    assert!(
        rows[9][4].starts_with("client LAST_ACK → CLOSED"),
        "{tshark}"
    );
}

#[test]
fn list_interfaces_like_tcpdump_without_an_output_file() {
    let run = teardown(&["capture", "-D"]);
    assert_eq!(run.code, Some(0), "{run}");
    let lo = run
        .stdout
        .lines()
        .find(|l| {
            l.split_once('.')
                .is_some_and(|(_, rest)| rest.starts_with("lo ["))
        })
        .unwrap_or_else(|| panic!("no lo{run}"));
    assert!(lo.ends_with(" [Up, Running, Loopback]"), "{run}");
    assert!(
        run.stdout
            .contains(".any (Pseudo-device that captures on all interfaces) [Up, Running]\n"),
        "{run}"
    );
    // Numbered from 1, one a line.
    for (n, line) in run.stdout.lines().enumerate() {
        assert!(line.starts_with(&format!("{}.", n + 1)), "{run}");
    }
    // Anything else still needs a file.
    let run = teardown(&["capture", "port", "8000"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("--output <FILE>"), "{run}");
}

#[test]
fn help_shows_w_and_says_ctrl_c_exits_0() {
    for command in ["capture", "annotate"] {
        let run = teardown(&[command, "--help"]);
        assert_eq!(run.code, Some(0), "{run}");
        let o = run
            .stdout
            .lines()
            .position(|l| l.trim_start().starts_with("-o, --output"))
            .unwrap_or_else(|| panic!("no -o{run}"));
        // The alias is named on -o's entry (its description may wrap).
        let entry: String = run.stdout.lines().skip(o).take(4).collect();
        assert!(entry.contains("[alias: -w]"), "{run}");
    }
    let run = teardown(&["capture", "--help"]);
    assert!(
        run.flat()
            .contains("Exit codes: 0 captured, also when stopped by Ctrl-C (as tcpdump)"),
        "{run}"
    );
}

#[test]
fn an_output_it_cannot_write_is_refused_before_the_capture_starts() {
    let dir = TempDir::new();
    let missing = dir.join("no/such/x.pcapng");
    let run = teardown(&[
        "capture",
        "--port",
        "8000",
        "-c",
        "1",
        "-o",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "-o {}: the directory {} does not exist; create it first (mkdir -p",
            missing.display(),
            dir.join("no/such").display()
        )),
        "{run}"
    );
    assert!(!run.stderr.contains("listening on"), "{run}");
    assert!(!dir.join("no").exists(), "{run}");
    let run = teardown(&["capture", "-c", "1", "-o", dir.0.to_str().unwrap()]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("is a directory; give a file name"),
        "{run}"
    );
}

#[test]
fn an_unknown_user_leaves_an_existing_file_as_it_was() {
    if !root("capture_unknown_user") {
        return;
    }
    let dir = TempDir::new();
    let file = dir.join("keep.pcapng");
    std::fs::write(&file, b"an earlier capture").unwrap();
    let run = teardown(&[
        "capture",
        "-Z",
        "nosuchuser-teardown",
        "--duration",
        "1",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("nosuchuser-teardown"), "{run}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"an earlier capture",
        "{run}"
    );
}

/// Two captures of one exchange at once: by default the segments that change nothing carry
/// no comment and the others the same as with `--comments all`, which gives every segment
/// its comment; the section comment names the flag.
#[test]
fn a_capture_comments_the_changes_and_every_segment_with_comments_all() {
    if !root("capture_comments") {
        return;
    }
    let dir = TempDir::new();
    let (e1, e2) = (dir.join("e1"), dir.join("e2"));
    let (changes, all) = (dir.join("changes.pcapng"), dir.join("all.pcapng"));
    let run = in_namespace(&format!(
        r#"
"$B" capture --port 8000 -o {changes} 2>{e1} & P1=$!
"$B" capture --port 8000 --comments all -o {all} 2>{e2} & P2=$!
ready {e1}; ready {e2}
exchange
sleep 0.1
kill -INT $P1 $P2; wait $P1 $P2; echo "exit=$?"
"#,
        changes = changes.display(),
        all = all.display(),
        e1 = e1.display(),
        e2 = e2.display()
    ));
    assert!(run.stdout.contains("exit=0"), "{run}");
    let (by_default, every) = (packet_comments(&changes), packet_comments(&all));
    assert_eq!(by_default.len(), every.len(), "{by_default:?} {every:?}");
    assert!(every.len() >= 10, "{every:?}");
    let plain = "no state change: client ESTABLISHED, server ESTABLISHED";
    assert!(every.iter().any(|c| c == plain), "{every:?}");
    for (i, (ours, old)) in by_default.iter().zip(&every).enumerate() {
        if old.starts_with("no state change") {
            assert_eq!(ours, "", "packet {}", i + 1);
        } else {
            assert_eq!(ours, old, "packet {}", i + 1);
        }
    }
    assert!(
        section_comments(&changes)[0].contains("(--comments all comments every one)"),
        "{:?}",
        section_comments(&changes)
    );
}
