use super::*;
use crate::kernel::{Owner, parse_proc_net_tcp};

#[test]
fn targets_parse_port_address_and_ipv6() {
    assert_eq!(
        Target::parse("8000").unwrap(),
        Target {
            ip: None,
            port: 8000
        }
    );
    assert_eq!(
        Target::parse("127.0.0.1:8000").unwrap().addr(),
        "127.0.0.1:8000".parse().unwrap()
    );
    assert_eq!(
        Target::parse("[::1]:8000").unwrap().addr(),
        "[::1]:8000".parse().unwrap()
    );
    assert_eq!(
        Target::parse("8000").unwrap().addr(),
        "0.0.0.0:8000".parse().unwrap()
    );
    // As ss writes a port on every address.
    for every in [":8000", "*:8000"] {
        assert_eq!(
            Target::parse(every).unwrap(),
            Target {
                ip: None,
                port: 8000
            },
            "{every}"
        );
    }
}

#[test]
fn bad_targets_get_one_clear_line() {
    let e = Target::parse("70000").unwrap_err();
    assert_eq!(e, "port 70000 is out of range: ports run from 1 to 65535");
    assert_eq!(
        Target::parse("0").unwrap_err(),
        "port 0 is out of range: ports run from 1 to 65535"
    );
    let e = Target::parse("localhost:8000").unwrap_err();
    assert!(
        e.starts_with("\"localhost\" is a host name: give an IP address"),
        "{e}"
    );
    let e = Target::parse("::1:8000").unwrap_err();
    assert!(e.contains("in brackets"), "{e}");
    let e = Target::parse("999.1.1.1:80").unwrap_err();
    assert_eq!(
        e,
        "999.1.1.1 is not a valid IPv4 address (four numbers from 0 to 255, e.g. 127.0.0.1:80)"
    );
    assert!(
        Target::parse("10.1.1:80")
            .unwrap_err()
            .contains("is not a valid IPv4 address")
    );
    assert_eq!(
        Target::parse(":abc").unwrap_err(),
        "\"abc\" is not a port number"
    );
    assert!(Target::parse("nonsense").is_err());
    assert!(Target::parse("").is_err());
}

#[test]
fn overlap_follows_the_kernels_bind_rules() {
    let any = Target::parse("8000").unwrap();
    let lo = Target::parse("127.0.0.1:8000").unwrap();
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert!(any.overlaps(a("127.0.0.1:8000")));
    assert!(
        lo.overlaps(a("0.0.0.0:8000")),
        "a wildcard listener covers 127.0.0.1"
    );
    assert!(!lo.overlaps(a("127.0.0.2:8000")));
    assert!(!lo.overlaps(a("127.0.0.1:8001")));
    assert!(
        lo.overlaps(a("[::]:8000")),
        "a dual-stack listener covers IPv4"
    );
    assert!(!lo.overlaps(a("[::1]:8000")));
}

fn socket(line: &str) -> KernelSocket {
    parse_proc_net_tcp(&format!("header\n{line}")).remove(0)
}

const TIME_WAIT: &str = "   0: 0100007F:1F40 0200007F:A0E2 06 00000000:00000000 03:0000175D 00000000     0        0 0 3 0000000000000000";
const ORPHAN: &str = "   1: 0100007F:1F40 0200007F:A0E4 05 00000000:00000000 03:00001000 00000000     0        0 0 3 0000000000000000";
const LISTEN_ANY: &str = "   2: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000";
const CLOSE_WAIT: &str = "   3: 0100007F:1F40 0200007F:A0E6 08 00000000:00000001 00:00000000 00000000  1000        0 4243 1 0000000000000000";

fn answer(target: &str, holders: Vec<KernelSocket>, errnos: [Option<i32>; 4]) -> Answer {
    Answer {
        target: Target::parse(target).unwrap(),
        netns: None,
        holders,
        peers: vec![],
        trials: TRIAL_OPTS
            .iter()
            .zip(errnos)
            .map(|(&opts, errno)| Trial { opts, errno })
            .collect(),
        unseen: vec![],
    }
}

const IN_USE: Option<i32> = Some(libc::EADDRINUSE);

#[test]
fn time_wait_explains_the_active_close_and_the_both_sockets_rule() {
    let a = answer("127.0.0.1:8000", vec![socket(TIME_WAIT)], [IN_USE; 4]);
    assert!(!a.plain_bind_ok());
    let why = a.explanation().join(" ");
    assert!(
        why.starts_with("A plain bind() to 127.0.0.1:8000 fails now with EADDRINUSE (errno 98)."),
        "{why}"
    );
    assert!(
        why.contains(
            "1 old connection on this port waits in TIME_WAIT: this machine closed it first"
        ),
        "{why}"
    );
    assert!(why.contains("it frees the port in 59.8 s"), "{why}");
    assert!(
        why.contains("Even with SO_REUSEADDR the bind fails"),
        "{why}"
    );
    let fixes = a.fixes();
    assert!(fixes[0].starts_with("Set SO_REUSEADDR on the server's listening socket"));
    assert!(fixes[1].starts_with("Let the clients close first"));
    assert_eq!(fixes[2], "Or wait: the port frees up in 59.8 s.");
    assert!(fixes[3].starts_with("Never \"fix\" it with SO_LINGER {on, 0}"));
    assert!(fixes[3].ends_with("(see it: teardown run linger-abort)."));
}

#[test]
fn reuseaddr_on_both_sockets_is_recognised() {
    let a = answer(
        "127.0.0.1:8000",
        vec![socket(TIME_WAIT)],
        [IN_USE, None, IN_USE, None],
    );
    let why = a.explanation().join(" ");
    assert!(
        why.contains("With SO_REUSEADDR set before bind() the bind succeeds"),
        "{why}"
    );
}

#[test]
fn orphaned_fin_wait_2_is_named() {
    let a = answer("8000", vec![socket(ORPHAN)], [IN_USE; 4]);
    let why = a.explanation().join(" ");
    assert!(why.contains("1 old connection sits in FIN_WAIT_2"), "{why}");
    assert!(
        why.contains("net.ipv4.tcp_fin_timeout: 41.0 s left"),
        "{why}"
    );
}

#[test]
fn a_wildcard_listener_covers_the_specific_address() {
    let mut l = socket(LISTEN_ANY);
    l.owner = Some(Owner {
        pid: 77,
        command: "nginx".into(),
        cmdline: "nginx: master process".into(),
        user: "www-data".into(),
    });
    let a = answer("127.0.0.1:8000", vec![l], [IN_USE; 4]);
    let why = a.explanation().join(" ");
    assert!(
        why.contains(
            "pid 77 (nginx: master process) of user www-data listens on 0.0.0.0:8000, which covers \
         every local address, 127.0.0.1 included"
        ),
        "{why}"
    );
    assert_eq!(
        a.fixes(),
        ["Stop the process that listens (pid 77, nginx) or choose another port."]
    );
}

#[test]
fn a_reuseport_group_can_be_joined() {
    let a = answer(
        "8000",
        vec![socket(LISTEN_ANY)],
        [IN_USE, IN_USE, None, None],
    );
    let why = a.explanation().join(" ");
    assert!(why.contains("a live listener"), "{why}");
    assert!(why.contains("It set SO_REUSEPORT"), "{why}");
}

#[test]
fn close_wait_of_a_live_process() {
    let mut cw = socket(CLOSE_WAIT);
    cw.owner = Some(Owner {
        pid: 9,
        command: "app".into(),
        cmdline: "app --serve".into(),
        user: "u".into(),
    });
    let a = answer("127.0.0.1:8000", vec![cw], [IN_USE; 4]);
    let why = a.explanation().join(" ");
    assert!(why.contains("pid 9 (app --serve) of user u still has 127.0.0.1:8000 ↔ 127.0.0.2:41190 in CLOSE_WAIT: the peer closed, but the program has not called close()"), "{why}");
    assert!(a.fixes()[0].starts_with("Make the program close() its sockets"));
}

#[test]
fn a_free_port_says_so_and_json_has_every_trial() {
    let a = answer("8000", vec![], [None; 4]);
    assert!(a.plain_bind_ok());
    assert_eq!(
        a.explanation(),
        ["A plain bind() to 0.0.0.0:8000 succeeds now."]
    );
    assert!(a.fixes().is_empty());
    let j = a.to_json();
    assert_eq!(j["bind_ok"], true);
    assert_eq!(j["trials"].as_array().unwrap().len(), 4);
    assert_eq!(j["trials"][1]["options"], "SO_REUSEADDR");
    let text = a.to_text();
    assert!(text.contains("No socket holds port 8000 now."), "{text}");
}

#[test]
fn privileged_ports_say_so() {
    let a = answer("80", vec![], [Some(libc::EACCES); 4]);
    assert!(a.explanation()[0].contains("ports below 1024 need root or CAP_NET_BIND_SERVICE"));
}

#[test]
fn an_orphans_local_other_end_names_the_program_to_fix() {
    // The server's orphan 127.0.0.1:8000 → 127.0.0.2:41188, and the client's end of it.
    let orphan = socket(ORPHAN);
    let mut client = socket(
        "   4: 0200007F:A0E4 0100007F:1F40 08 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000",
    );
    let unrelated = socket(
        "   5: 0200007F:A0E8 0100007F:1F40 08 00000000:00000000 00:00000000 00000000     0        0 5152 1 0000000000000000",
    );
    let all = vec![orphan.clone(), unrelated, client.clone()];
    let peers = local_peers(std::slice::from_ref(&orphan), &all);
    assert_eq!(peers, [client.clone()]);
    client.owner = Some(Owner {
        pid: 1234,
        command: "python3".into(),
        cmdline: "python3 client.py".into(),
        user: "root".into(),
    });
    let mut a = answer("8000", vec![orphan], [IN_USE; 4]);
    a.peers = vec![client];
    let why = a.explanation().join(" ");
    assert!(
        why.contains(
            "The other end, 127.0.0.2:41188, is on this machine: pid 1234 (python3 client.py) of \
             user root holds it in CLOSE_WAIT. The FIN reached it, but that program has not \
             closed its socket; fix it there (close() once read() returns 0)."
        ),
        "{why}"
    );
    assert_eq!(
        a.fixes()[0],
        "Fix pid 1234 (python3): it holds the other end, 127.0.0.2:41188, in CLOSE_WAIT; it \
         must close() its socket once read() returns 0."
    );
    assert_eq!(a.to_json()["peers"][0]["pid"], 1234);
}

/// `why --json` is a script's interface: the exact keys of the answer, a holder (with and
/// without a process), a peer and a trial, and each value's type.
#[test]
fn json_has_exactly_the_documented_keys_and_types() {
    use crate::kernel::table::{json_shape, shape_of};
    let mut listener = socket(LISTEN_ANY);
    listener.owner = Some(Owner {
        pid: 9,
        command: "app".into(),
        cmdline: "app --serve".into(),
        user: "u".into(),
    });
    let mut client = socket(CLOSE_WAIT);
    client.owner = listener.owner.clone();
    let mut a = answer("8000", vec![socket(TIME_WAIT), listener], [IN_USE; 4]);
    a.peers = vec![client];
    a.netns = Some("blue".into());
    a.unseen = vec!["1 socket belongs to a process this user may not look into".into()];
    let j = a.to_json();
    assert_eq!(
        json_shape(&j),
        shape_of(&[
            ("target", "string"),
            ("netns", "string"),
            ("bind_ok", "bool"),
            ("holders", "array"),
            ("peers", "array"),
            ("trials", "array"),
            ("explanation", "array"),
            ("fixes", "array"),
            ("unseen", "array"),
        ])
    );
    assert_eq!(j["target"], "0.0.0.0:8000");
    assert_eq!(j["netns"], "blue");
    let holder = |timer, owner| {
        let some = |t| if owner == "null" { "null" } else { t };
        shape_of(&[
            ("state", "string"),
            ("local", "string"),
            ("peer", "string"),
            ("recv_q", "integer"),
            ("send_q", "integer"),
            ("timer", timer),
            (
                "timer_remaining_ms",
                if timer == "null" { "null" } else { "integer" },
            ),
            ("uid", "integer"),
            ("pid", some("integer")),
            ("command", some("string")),
            ("user", some("string")),
        ])
    };
    assert_eq!(json_shape(&j["holders"][0]), holder("string", "null"));
    assert_eq!(json_shape(&j["holders"][1]), holder("null", "integer"));
    assert_eq!(j["holders"][0]["timer_remaining_ms"], 59810);
    assert_eq!(j["holders"][0]["peer"], "127.0.0.2:41186");
    // The whole command line here (`sockets --json` gives the short name).
    assert_eq!(j["holders"][1]["command"], "app --serve");
    assert_eq!(j["holders"][1]["user"], "u");
    assert_eq!(j["holders"][1]["uid"], 1000);
    assert_eq!(
        json_shape(&j["peers"][0]),
        shape_of(&[
            ("state", "string"),
            ("local", "string"),
            ("peer", "string"),
            ("pid", "integer"),
            ("command", "string"),
            ("user", "string"),
        ])
    );
    assert_eq!(j["peers"][0]["state"], "CLOSE_WAIT");
    assert_eq!(j["peers"][0]["local"], "127.0.0.1:8000");
    let trial = |errno| {
        shape_of(&[
            ("options", "string"),
            ("bound", "bool"),
            ("errno", errno),
            (
                "errno_name",
                if errno == "null" { "null" } else { "string" },
            ),
        ])
    };
    assert_eq!(json_shape(&j["trials"][3]), trial("integer"));
    assert_eq!(j["trials"][3]["options"], "SO_REUSEADDR+SO_REUSEPORT");
    assert_eq!(j["trials"][3]["errno"], 98);
    assert_eq!(j["trials"][3]["errno_name"], "EADDRINUSE");
    assert_eq!(j["unseen"][0], a.unseen[0]);
    assert_eq!(j["explanation"][0], a.explanation()[0]);
    // Nothing held, a free port, the namespace `why` runs in: empty lists and nulls.
    let free = answer("127.0.0.1:8000", vec![], [None; 4]).to_json();
    assert_eq!(free["netns"], serde_json::Value::Null);
    assert_eq!(free["holders"], serde_json::json!([]));
    assert_eq!(free["peers"], serde_json::json!([]));
    assert_eq!(free["fixes"], serde_json::json!([]));
    assert_eq!(json_shape(&free["trials"][0]), trial("null"));
    assert_eq!(free["trials"][0]["bound"], true);
}

#[test]
fn a_command_line_is_told_by_its_program_s_name_and_its_arguments() {
    assert_eq!(
        super::short_command("/root/.pyenv/versions/3.11.7/bin/python3 -m http.server 8200"),
        "python3 -m http.server 8200"
    );
    let long = format!("nginx {}", "-g x ".repeat(20));
    let short = super::short_command(&long);
    assert_eq!(short.chars().count(), 60);
    assert!(short.ends_with('…'));
}
