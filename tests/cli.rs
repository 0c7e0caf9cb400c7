//! The command line without privileges: list, help, usage errors.

use crate::helper::*;

#[test]
fn list_shows_each_scenario_with_its_lesson() {
    let run = teardown(&["list"]);
    assert_eq!(run.code, Some(0), "{run}");
    // Name and lesson, in two columns (spacing aside).
    let lines: Vec<String> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines.len(), 16, "{run}");
    assert!(
        lines[3].starts_with("passive-close TIME_WAIT belongs to whoever closes first"),
        "{run}"
    );
    assert!(
        lines[4].starts_with("unread-data-rst close() with unread data sends RST"),
        "{run}"
    );
    assert!(
        lines[5].starts_with("linger-abort SO_LINGER {on, 0} closes with RST"),
        "{run}"
    );
    assert!(
        lines[0].starts_with("active-close the side that closes first keeps the port in TIME_WAIT"),
        "{run}"
    );
    assert!(
        lines[1].starts_with("client-never-closes a peer that never closes"),
        "{run}"
    );
    assert!(
        lines[2].starts_with("reuseaddr SO_REUSEADDR lets the restart bind"),
        "{run}"
    );
    for (line, start) in [
        (
            9,
            "orphan-fin-wait-2 an orphaned FIN_WAIT_2 is removed after tcp_fin_timeout",
        ),
        (
            10,
            "timewait-assassination an in-window RST kills a TIME_WAIT socket",
        ),
        (11, "simultaneous-close both FINs cross"),
        (12, "lost-final-ack the last ACK is lost"),
    ] {
        assert!(lines[line].starts_with(start), "{run}");
    }
}

#[test]
fn unknown_scenario_names_the_known_ones_and_exits_2() {
    let run = teardown(&["run", "passive-closee"]);
    assert_eq!(run.code, Some(2), "{run}");
    for name in ["active-close", "client-never-closes", "reuseaddr"] {
        assert!(run.stderr.contains(name), "{run}");
    }
}

#[test]
fn run_help_teaches_flags_examples_and_exit_codes() {
    let run = teardown(&["run", "--help"]);
    assert_eq!(run.code, Some(0), "{run}");
    for needle in [
        "--port <PORT>",
        "--host",
        "-w, --write <FILE>",
        "  teardown run active-close",
        "as a user, put sudo in front",
        "1    the kernel did something else",
        "2    usage or environment error",
    ] {
        assert!(run.stdout.contains(needle), "missing {needle:?}{run}");
    }
}

#[test]
fn write_to_a_directory_is_a_usage_error() {
    let dir = TempDir::new();
    let run = teardown(&["run", "active-close", "-w", dir.0.to_str().unwrap()]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("is a directory"), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
}

#[test]
fn the_lua_postdissector_puts_the_states_in_wiresharks_info_column() {
    if !crate::helper::tshark("lua_postdissector") {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-X")
        .arg(format!("lua_script:{root}/scripts/teardown.lua"))
        .arg("-r")
        .arg(format!("{root}/tests/data/active-close.pcapng"))
        .args(["-T", "fields", "-e", "_ws.col.Info"]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].ends_with("[client CLOSED → SYN_SENT; server LISTEN → SYN_RECEIVED]"),
        "{run}"
    );
    assert!(
        lines.iter().any(|l| l.contains("[FIN, ACK]")
            && l.ends_with("[server ESTABLISHED → FIN_WAIT_1; client ESTABLISHED → CLOSE_WAIT]")),
        "{run}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("[client LAST_ACK → CLOSED]"),
        "{run}"
    );
}

/// `run` leaves the segments that change nothing uncommented by default, as `annotate` and
/// `capture` do, and `--comments all` comments every one ("no state change: ...").
#[test]
fn run_comments_the_changes_and_every_segment_with_comments_all() {
    if !root("run_comments") {
        return;
    }
    let dir = TempDir::new();
    let (changes, all) = (dir.join("changes.pcapng"), dir.join("all.pcapng"));
    for (file, extra) in [(&changes, None), (&all, Some("all"))] {
        let mut args = vec!["run", "active-close", "-w", file.to_str().unwrap()];
        if let Some(which) = extra {
            args.extend(["--comments", which]);
        }
        let run = teardown(&args);
        assert_eq!(run.code, Some(0), "{run}");
    }
    let (by_default, every) = (packet_comments(&changes), packet_comments(&all));
    assert_eq!(by_default.len(), every.len(), "{by_default:?} {every:?}");
    let plain: Vec<usize> = (0..every.len())
        .filter(|&i| every[i].starts_with("no state change: client ESTABLISHED"))
        .collect();
    assert!(!plain.is_empty(), "{every:?}");
    for i in plain {
        assert_eq!(by_default[i], "", "packet {}: {by_default:?}", i + 1);
    }
    assert!(
        by_default[0].starts_with("client CLOSED → SYN_SENT"),
        "{by_default:?}"
    );
    assert_eq!(
        by_default.iter().filter(|c| !c.is_empty()).count(),
        7,
        "{by_default:?}"
    );
}
