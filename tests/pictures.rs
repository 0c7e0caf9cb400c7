//! The pictures as the textbook draws them, read back by their structure (never by pixels):
//! crossing FINs cross, lost segments stop half-way, every connection is drawn. Offline from
//! the fixtures in tests/data/ (copies of real runs), and from real runs as root.

use std::path::Path;
use std::process::Command;

use crate::helper::{BIN, TempDir, root, run_cmd, teardown};

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn attr(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

fn num(line: &str, name: &str) -> f64 {
    attr(line, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in s.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// One drawn segment: its class, its line's ends and its texts.
#[derive(Debug)]
struct Drawn {
    class: String,
    from: (f64, f64),
    to: (f64, f64),
    label: String,
    tag: String,
    cross: bool,
}

fn segments(doc: &str) -> Vec<Drawn> {
    let mut out = Vec::new();
    let mut current: Option<Drawn> = None;
    for line in doc.lines() {
        if line.starts_with("<g class=") {
            current = Some(Drawn {
                class: attr(line, "class").unwrap_or_default(),
                from: (0.0, 0.0),
                to: (0.0, 0.0),
                label: String::new(),
                tag: String::new(),
                cross: false,
            });
        } else if line == "</g>" {
            out.extend(current.take());
        } else if let Some(d) = current.as_mut() {
            if line.starts_with("<line ") {
                d.from = (num(line, "x1"), num(line, "y1"));
                d.to = (num(line, "x2"), num(line, "y2"));
            } else if line.starts_with(r#"<text class="label""#) {
                d.label = strip_tags(line);
            } else if line.starts_with(r#"<text class="tag""#) {
                d.tag = strip_tags(line);
            } else if line.starts_with(r#"<text class="cross""#) {
                d.cross = strip_tags(line) == "✕";
            }
        }
    }
    out
}

/// `role`'s state boxes top to bottom (marks dropped): initial, changes, final.
fn states(doc: &str, role: &str) -> Vec<String> {
    let mut boxes: Vec<(f64, String)> = doc
        .lines()
        .filter(|l| l.starts_with(r#"<text class="state""#))
        .filter(|l| attr(l, "data-role").as_deref() == Some(role))
        .map(|l| {
            let name = strip_tags(l);
            let name = name.split_whitespace().next().unwrap_or("").to_string();
            (num(l, "y"), name)
        })
        .collect();
    boxes.sort_by(|a, b| a.0.total_cmp(&b.0));
    boxes.into_iter().map(|(_, s)| s).collect()
}

/// `seq` appears in `all` in this order (not necessarily next to each other).
fn in_order(all: &[String], seq: &[&str]) -> bool {
    let mut it = all.iter();
    seq.iter().all(|s| it.any(|a| a == s))
}

fn diagram_svg(fixture: &str, dir: &TempDir) -> String {
    let out = dir.join("d.svg");
    let run = teardown(&["diagram", &data(fixture), "--svg", out.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run}");
    std::fs::read_to_string(&out).unwrap()
}

/// The two FINs cross: each leaves its sender before the other reaches it, and each side shows
/// FIN_WAIT_1, then CLOSING, then TIME_WAIT.
fn assert_fins_cross(doc: &str) {
    let fins: Vec<Drawn> = segments(doc)
        .into_iter()
        .filter(|d| d.label.starts_with("FIN"))
        .collect();
    assert_eq!(fins.len(), 2, "{fins:?}\n{doc}");
    let (a, b) = (&fins[0], &fins[1]);
    // Opposite directions.
    assert_eq!(a.from.0, b.to.0, "{fins:?}");
    // The second FIN leaves its sender before the first reaches it, and the other way round.
    assert!(b.from.1 < a.to.1, "{fins:?}");
    assert!(a.from.1 < b.to.1, "{fins:?}");
    for role in ["client", "server"] {
        let s = states(doc, role);
        assert!(
            in_order(&s, &["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]),
            "{role}: {s:?}"
        );
        assert!(!s.iter().any(|x| x == "CLOSE_WAIT"), "{role}: {s:?}");
    }
}

#[test]
fn offline_crossing_fins_cross_and_each_side_goes_fin_wait_1_then_closing() {
    let dir = TempDir::new();
    let doc = diagram_svg("simultaneous-close.pcapng", &dir);
    assert_fins_cross(&doc);
    // The picture says what it is without the file name beside it.
    assert!(
        doc.contains("simultaneous-close.pcapng: connection #0</text>")
            && doc.contains(r#"<text class="title""#),
        "{doc}"
    );
    // Offline, the packets' clock alone: no line about the kernel's.
    assert!(!doc.contains(r#"<text class="clock""#), "{doc}");
}

#[test]
fn offline_lost_final_ack_draws_the_missing_acks_dashed_and_the_fins_again() {
    let dir = TempDir::new();
    let doc = diagram_svg("lost-final-ack.pcapng", &dir);
    let segs = segments(&doc);
    let inferred: Vec<&Drawn> = segs.iter().filter(|d| d.class == "inferred").collect();
    assert_eq!(inferred.len(), 3, "{segs:?}");
    for d in &inferred {
        assert!(
            d.cross && d.label == "ACK" && d.tag.starts_with("inferred"),
            "{d:?}"
        );
        // From the server, stopping half-way.
        assert!(d.from.0 > d.to.0, "{d:?}");
        assert!(doc.contains(r#"stroke-dasharray="6 4""#));
    }
    let again: Vec<&Drawn> = segs.iter().filter(|d| d.class == "again").collect();
    assert_eq!(again.len(), 3, "{segs:?}");
    // The first copy sent again may be the tail loss probe; the ones after it are the RTO's.
    for (k, d) in again.iter().enumerate() {
        let why = if k == 0 {
            " ms (a loss probe or the RTO)"
        } else {
            " ms (RTO)"
        };
        assert!(
            d.tag.starts_with("FIN again, +") && d.tag.ends_with(why),
            "{d:?}"
        );
    }
    // The server's TIME_WAIT starts again at each of the three FINs that reach it.
    assert_eq!(doc.matches(r#"<path class="restart""#).count(), 3, "{doc}");
    assert!(doc.contains(r#"<path class="timewait""#), "{doc}");
}

#[test]
fn offline_a_reset_is_drawn_in_red_with_its_cause() {
    let dir = TempDir::new();
    let doc = diagram_svg("linger-abort.pcapng", &dir);
    let rst: Vec<Drawn> = segments(&doc)
        .into_iter()
        .filter(|d| d.class == "rst")
        .collect();
    assert_eq!(rst.len(), 1, "{doc}");
    assert_eq!(
        rst[0].tag, "RST: client received RST; server aborts in ESTABLISHED",
        "{rst:?}"
    );
    assert!(doc.contains(r#"marker-end="url(#rst)""#), "{doc}");
}

#[test]
fn offline_terminal_ladders_fit_80_columns() {
    for fixture in [
        "simultaneous-close.pcapng",
        "lost-final-ack.pcapng",
        "timewait-new-syn.pcapng",
        "write-after-close.pcapng",
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(["diagram", &data(fixture)]).env("COLUMNS", "80");
        let run = run_cmd(cmd);
        assert_eq!(run.code, Some(0), "{run}");
        for line in run.stdout.lines() {
            assert!(line.chars().count() <= 80, "{fixture}: {line}\n{run}");
        }
        assert!(run.stdout.contains("final"), "{run}");
    }
}

/// `teardown run SCENARIO` into `dir`; the SVG beside the capture.
fn run_svg(scenario: &str, dir: &TempDir) -> String {
    let file = dir.join(&format!("{scenario}.pcapng"));
    let run = teardown(&["run", scenario, "-w", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run}");
    let svg = file.with_extension("svg");
    assert!(Path::new(&svg).exists(), "{run}");
    std::fs::read_to_string(svg).unwrap()
}

#[test]
fn run_simultaneous_close_draws_each_ends_clock_the_fins_cross() {
    if !root("run_simultaneous_close_pictures") {
        return;
    }
    let dir = TempDir::new();
    let doc = run_svg("simultaneous-close", &dir);
    assert_fins_cross(&doc);
    // The page stands on its own: title, lesson, verdict.
    assert!(
        doc.contains(">teardown run simultaneous-close</text>"),
        "{doc}"
    );
    assert!(doc.contains(r#"class="lesson""#) && doc.contains("both FINs cross"));
    assert!(doc.contains(">verdict: reproduced</text>"), "{doc}");
    // The picture says which clock its rows keep (the kernel's, for each end's changes).
    assert!(doc.contains(r#"<text class="clock""#), "{doc}");
    // The kernel agreed on the crossing, on both sides, each step of it (the client's
    // FIN_WAIT_1 and CLOSING come on one segment, its own FIN).
    for role in ["client", "server"] {
        for state in ["FIN_WAIT_1", "CLOSING"] {
            assert!(
                doc.lines().any(
                    |l| l.contains(&format!(r#"data-role="{role}">{state} <tspan"#))
                        && l.contains('✓')
                ),
                "{role} {state}\n{doc}"
            );
        }
    }
}

#[test]
fn run_lost_final_ack_draws_three_acks_lost_and_three_fins_again() {
    if !root("run_lost_final_ack_pictures") {
        return;
    }
    let dir = TempDir::new();
    let doc = run_svg("lost-final-ack", &dir);
    let segs = segments(&doc);
    let lost: Vec<&Drawn> = segs.iter().filter(|d| d.class == "lost").collect();
    assert_eq!(lost.len(), 3, "{segs:?}");
    // The server's ACK, reply and FIN leave within 0.1 ms, side by side: each label lies
    // between the two time lines (12 px type, 7.2 px a character), not over the server's
    // line and the state box beside it.
    for text in [
        "ACK seq=1 ack=12 ",
        "PSH,ACK seq=1 ack=12 ",
        "FIN,ACK seq=12 ack=12 ",
    ] {
        let line = doc
            .lines()
            .find(|l| l.starts_with(r#"<text class="label""#) && strip_tags(l).starts_with(text))
            .unwrap_or_else(|| panic!("no label {text}\n{doc}"));
        let d = segs.iter().find(|d| d.label.starts_with(text)).unwrap();
        let half = strip_tags(line).chars().count() as f64 * 7.2 / 2.0;
        let (lo, hi) = (d.from.0.min(d.to.0), d.from.0.max(d.to.0));
        let x = num(line, "x");
        assert!(
            x - half >= lo && x + half <= hi,
            "{text}: {x} ± {half} in {lo}..{hi}"
        );
    }
    for d in &lost {
        assert!(
            d.cross && d.label == "ACK" && d.tag.starts_with("lost"),
            "{d:?}"
        );
        // Half-way: from the server's line to the middle.
        let mid = (d.from.0 + 260.0) / 2.0;
        assert!((d.to.0 - mid).abs() < 1.0, "{d:?}");
    }
    // The client's FIN, three times again (the server's own FIN may go again too, when the
    // client's delayed ACK is slow).
    let again: Vec<&Drawn> = segs
        .iter()
        .filter(|d| d.class == "again" && d.from.0 < d.to.0)
        .collect();
    assert_eq!(again.len(), 3, "{segs:?}");
    assert!(
        again.iter().all(|d| d.tag.starts_with("FIN again, +")),
        "{again:?}"
    );
    // The filter's log, not a guess, for the client's FINs.
    assert!(
        !segs
            .iter()
            .any(|d| d.class == "inferred" && d.from.0 > d.to.0),
        "{segs:?}"
    );
    assert_eq!(doc.matches(r#"<path class="restart""#).count(), 3, "{doc}");
}

#[test]
fn run_timewait_new_syn_draws_old_and_new_connection_on_one_server_line() {
    if !root("run_timewait_new_syn_pictures") {
        return;
    }
    let dir = TempDir::new();
    let doc = run_svg("timewait-new-syn", &dir);
    // One ladder: one pair of headings, both connections' SYNs on it.
    assert_eq!(doc.matches(">time ms</text>").count(), 1, "{doc}");
    let syns = segments(&doc)
        .into_iter()
        .filter(|d| d.label.starts_with("SYN seq="))
        .count();
    assert_eq!(syns, 2, "{doc}");
    assert!(
        doc.contains("connection #1: a new SYN on the same 4-tuple"),
        "{doc}"
    );
    // The new SYN meets the old connection's TIME_WAIT on the server's line.
    let s = states(&doc, "server");
    assert!(
        in_order(&s, &["TIME_WAIT", "CLOSED", "SYN_RECEIVED", "TIME_WAIT"]),
        "{s:?}"
    );
}

#[test]
fn run_port_exhaustion_folds_six_alike_connections() {
    if !root("run_port_exhaustion_pictures") {
        return;
    }
    let dir = TempDir::new();
    let doc = run_svg("port-exhaustion", &dir);
    // Six connections, alike ones in one ladder: usually all six; one whose segments differ
    // gets a ladder of its own.
    assert_eq!(drawn_connections(&doc), 6, "{doc}");
    assert!(
        doc.contains(" connections like this one (client ports "),
        "{doc}"
    );
    assert!(doc.matches(">time ms</text>").count() < 6, "{doc}");
    // The one drawn for the six is one the kernel checked: its boxes carry the marks.
    assert!(
        doc.lines()
            .any(|l| l.starts_with(r#"<text class="state""#) && l.contains('✓')),
        "{doc}"
    );
}

/// How many connections the captions account for: "6 connections like this one",
/// "connections #6, #12", "connection #0".
fn drawn_connections(doc: &str) -> usize {
    doc.lines()
        .filter(|l| l.starts_with(r#"<text class="caption""#))
        .map(|l| {
            let text = strip_tags(l);
            match text.split_once(" connections like this one") {
                Some((n, _)) => n.parse().unwrap(),
                None => text.matches('#').count(),
            }
        })
        .sum()
}

#[test]
fn run_tw_reuse_and_assassination_draw_every_connection() {
    if !root("run_every_connection_pictures") {
        return;
    }
    for (scenario, conns, ladders) in [("tw-reuse", 20, 5), ("timewait-assassination", 2, 2)] {
        let dir = TempDir::new();
        let doc = run_svg(scenario, &dir);
        assert_eq!(drawn_connections(&doc), conns, "{scenario}\n{doc}");
        // Alike connections fold; under load one may differ (a delayed ACK, a segment sent
        // again) and get a ladder of its own, so at least `ladders`, and fewer than one each
        // where there are alike ones to fold.
        let drawn = doc.matches(">time ms</text>").count();
        assert!(
            drawn >= ladders && (drawn < conns || ladders == conns),
            "{scenario}: {drawn} ladders\n{doc}"
        );
    }
}

/// The Info column as Wireshark shows it with scripts/teardown.lua loaded.
fn lua_info(fixture: &str) -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new("tshark");
    cmd.arg("-X")
        .arg(format!("lua_script:{root}/scripts/teardown.lua"))
        .arg("-r")
        .arg(data(fixture))
        .args(["-T", "fields", "-e", "_ws.col.Info"]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    run.stdout.lines().map(str::to_string).collect()
}

/// The Flow Graph (All Flows) labels its arrows with the Info column, cut short: the states
/// come first, with what befell the segment.
#[test]
fn lua_info_column_starts_with_the_states_short() {
    if !crate::helper::tshark("lua_info_head") {
        return;
    }
    let info = lua_info("simultaneous-close.pcapng");
    assert!(
        info[0].starts_with("[client SYN_SENT · server SYN_RECEIVED] "),
        "{info:#?}"
    );
    assert!(info[3].starts_with("[no change] "), "{info:#?}");
    assert!(
        info[7].starts_with("[server FIN_WAIT_1] ")
            && info[8].starts_with("[C FIN_WAIT_1→CLOSING · S CLOSING] "),
        "{info:#?}"
    );
    // The whole story still ends the column.
    assert!(
        info[8].ends_with("then released]") && info[8].contains("[FIN, ACK]"),
        "{info:#?}"
    );
    let info = lua_info("lost-final-ack.pcapng");
    let again: Vec<&String> = info
        .iter()
        .filter(|l| l.starts_with("[again +") && l.contains(" ms · server's ACK lost] "))
        .collect();
    assert_eq!(again.len(), 3, "{info:#?}");
    assert!(
        info[9].starts_with("[client LAST_ACK · server TIME_WAIT] "),
        "{info:#?}"
    );
}

/// Every connection of every scenario is in its picture: drawn, or folded into an alike one.
#[test]
fn run_every_scenario_draws_every_connection() {
    if !root("run_every_scenario_pictures") {
        return;
    }
    let list = teardown(&["list"]);
    assert_eq!(list.code, Some(0), "{list}");
    for scenario in list
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        let dir = TempDir::new();
        let doc = run_svg(scenario, &dir);
        let file = dir.join(&format!("{scenario}.pcapng"));
        let summary = teardown(&["summary", file.to_str().unwrap()]);
        let conns = summary
            .stdout
            .lines()
            .filter(|l| l.starts_with('#'))
            .count();
        let drawn = match drawn_connections(&doc) {
            0 => 1,
            n => n,
        };
        assert_eq!(drawn, conns, "{scenario}{summary}\n{doc}");
        assert!(
            doc.contains(&format!(">teardown run {scenario}</text>")),
            "{doc}"
        );
        assert!(doc.contains(">verdict: "), "{doc}");
    }
}

/// The run's own terminal ladders: every connection, as the SVG has them.
#[test]
fn run_prints_a_ladder_for_every_connection_and_folds_alike_ones() {
    if !root("run_terminal_ladders") {
        return;
    }
    let dir = TempDir::new();
    let ladders = |scenario: &str| {
        let out = dir.join(&format!("{scenario}.pcapng"));
        let run = teardown(&["run", scenario, "-w", out.to_str().unwrap()]);
        assert_eq!(run.code, Some(0), "{run}");
        let heads: Vec<String> = run
            .stdout
            .lines()
            .filter(|l| l.starts_with("connection #"))
            .map(str::to_string)
            .collect();
        (heads, run)
    };
    // The old connection whose TIME_WAIT the new SYN takes over, then the new one.
    let (heads, run) = ladders("timewait-new-syn");
    assert_eq!(heads.len(), 2, "{run}");
    assert!(
        run.stdout
            .contains("CLOSED (its TIME_WAIT taken over by a new SYN)"),
        "{run}"
    );
    // Six alike connections: one ladder, the caption counting them all.
    let (heads, run) = ladders("port-exhaustion");
    assert!(
        heads
            .iter()
            .any(|h| h.contains("6 connections like this one")
                && h.contains("the kernel agrees on all 6")),
        "{run}"
    );
    assert!(heads.len() < 6, "{run}");
}

/// Offline too, a new SYN on an old connection's 4-tuple is drawn in the old one's picture.
#[test]
fn offline_timewait_new_syn_draws_old_and_new_connection_in_one_picture() {
    let dir = TempDir::new();
    let out = dir.join("t.svg");
    let run = teardown(&[
        "diagram",
        &data("timewait-new-syn.pcapng"),
        "--svg",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains("(drawn with connection #0 into "),
        "{run}"
    );
    let doc = std::fs::read_to_string(dir.join("t-0.svg")).unwrap();
    assert!(!dir.join("t-1.svg").exists(), "{run}");
    assert_eq!(drawn_connections(&doc), 2, "{doc}");
    assert!(doc.contains("a new SYN on the same 4-tuple"), "{doc}");
}
