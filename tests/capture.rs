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
    let run = teardown(&["capture", "-f", "udp port 53", "-o", o]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr
            .contains("cannot honour the filter \"udp port 53\""),
        "{run}"
    );
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        BIN,
        "capture",
        "-o",
        "/tmp/never.pcapng",
    ]);
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
"#,
        out = out.display(),
        err = err.display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]).env("B", BIN);
    let run = run_cmd(cmd);
    assert!(run.stdout.contains("capture exit=0"), "{run}");
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
