//! The words of a run: a restart and why it failed, the verdict, the section comment.
//! Pure: from what the lab recorded to text.

use std::fmt::Write as _;

use super::lab::{Lab, Missed, Restart};
use crate::kernel::{KernelSocket, render_table};
use crate::output::style::Style;
use crate::scenario::Scenario;
use crate::sockets::SockOpts;
use crate::tcp::State;

/// A restart as the terminal shows it: the call, its outcome, and why; the explanation
/// wrapped to the style's width.
pub fn restart_text(r: &Restart, style: &Style) -> String {
    let mut s = format!(
        "{}: bind {} with {} → {}",
        r.label,
        r.addr,
        r.new_opts,
        match r.errno {
            None => "bound, and listen() works".to_string(),
            Some(n) => format!(
                "{}: {}",
                Restart::outcome(Some(n)),
                std::io::Error::from_raw_os_error(n)
                    .to_string()
                    .split(" (os error")
                    .next()
                    .unwrap_or_default()
            ),
        }
    );
    if r.errno != r.expected {
        let _ = write!(
            s,
            "   {}",
            style.red(&format!("✗ expected {}", expected_text(r.expected)))
        );
    }
    s.push('\n');
    if r.errno.is_some() {
        if r.holders.is_empty() {
            s.push_str("     the kernel's table shows no socket on that port any more\n");
        } else {
            let why = format!(
                "why: the kernel still has {} on port {} (sock_diag, as ss reads it):",
                if r.holders.len() == 1 {
                    "this socket"
                } else {
                    "these sockets"
                },
                r.addr.port()
            );
            let _ = writeln!(s, "{}", style.wrap("     ", "     ", &why));
            for line in render_table(&r.holders).lines() {
                let _ = writeln!(s, "       {line}");
            }
        }
    }
    // Five columns of indent; 88 columns of prose at most, narrower on a narrow terminal.
    let width = style
        .width
        .map_or(88, |w| w.saturating_sub(5).clamp(30, 88));
    for line in explain(r, width) {
        let _ = writeln!(s, "     {line}");
    }
    s
}

fn expected_text(expected: Option<i32>) -> String {
    match expected {
        None => "the bind to succeed".to_string(),
        Some(n) => Restart::outcome(Some(n)),
    }
}

/// Why the bind got what it got, and what would have changed it, in lines of `width`.
pub fn explain(r: &Restart, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for h in &r.holders {
        lines.push(explain_holder(h));
    }
    let (old, new) = (r.old_opts.reuseaddr, r.new_opts.reuseaddr);
    match (r.errno, old, new) {
        (Some(_), false, true) => lines.push(
            "The new socket set SO_REUSEADDR but the old one did not: on Linux both must set \
             it. (On macOS and the BSDs the new socket's SO_REUSEADDR alone would have been \
             enough.)"
                .into(),
        ),
        (Some(_), true, false) => lines.push(
            "The old socket set SO_REUSEADDR but the new one did not: on Linux both must set it."
                .into(),
        ),
        (Some(_), false, false) => lines.push(
            "Fix: set SO_REUSEADDR on the server's socket before bind() — on Linux on the old \
             socket and the new one alike (see `teardown run reuseaddr`)."
                .into(),
        ),
        (None, true, true) if r.old_opts != SockOpts::NONE => lines.push(
            "Both the old and the new socket set SO_REUSEADDR, so the old connection's socket \
             no longer blocks a new listener; the old connection's 4-tuple itself stays \
             protected until its TIME_WAIT ends."
                .into(),
        ),
        _ => {}
    }
    lines.into_iter().flat_map(|l| wrap(&l, width)).collect()
}

fn explain_holder(h: &KernelSocket) -> String {
    let left = h
        .timer
        .as_ref()
        .map(|t| format!("{:.1} s", t.remaining.as_secs_f64()))
        .unwrap_or_else(|| "some time".into());
    match h.rfc_state() {
        Some(State::TimeWait) => format!(
            "{} ↔ {} is the server's end of the old connection. The server closed first, so \
             its end waits in TIME_WAIT for 2×MSL — 60 s on Linux (TCP_TIMEWAIT_LEN) — so that \
             a lost final ACK can be answered and late duplicates die (RFC 9293 §3.6); {left} \
             remain. No process owns it: the kernel keeps it.",
            h.local, h.peer
        ),
        Some(State::FinWait2) => format!(
            "{} ↔ {} is the server's end of the old connection, in FIN_WAIT_2: the server \
             closed, the client acknowledged the FIN but never closed its own end (it sits in \
             CLOSE_WAIT). No process owns this end any more (orphaned); Linux drops it after \
             net.ipv4.tcp_fin_timeout (60 s by default): {left} remain.",
            h.local, h.peer
        ),
        Some(State::Listen) => format!(
            "{} is a listening socket{}: two listeners never share one address and port, \
             SO_REUSEADDR or not.",
            h.local,
            owner_text(h)
        ),
        _ => format!(
            "{} ↔ {} is a connection in {}{} that still uses the port.",
            h.local,
            h.peer,
            h.state,
            owner_text(h)
        ),
    }
}

fn owner_text(h: &KernelSocket) -> String {
    match &h.owner {
        Some(o) => format!(" of pid {} ({})", o.pid, o.command),
        None => String::new(),
    }
}

/// Word-wraps a paragraph at `width` columns.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    crate::output::style::wrap_words(text, width, 0)
}

/// Every way the run differed from the scenario's expectation; empty when it reproduced.
pub fn differences(
    expect: [State; 2],
    observed: Option<[State; 2]>,
    missed: &[Missed],
    restarts: &[Restart],
) -> Vec<String> {
    let mut diffs = Vec::new();
    let [client, server] = expect;
    match observed {
        None => diffs.push("no segment of the experiment was captured".to_string()),
        Some(observed) if observed != [client, server] => diffs.push(format!(
            "expected the client in {client} and the server in {server} at the end; observed \
             client {} and server {}",
            observed[0], observed[1]
        )),
        Some(_) => {}
    }
    for m in missed {
        let [c, s] = m.expected;
        let line = match m.observed {
            Some([oc, os]) => format!(
                "waited for client {c} and server {s}; the capture showed client {oc} and server {os}"
            ),
            None => format!("waited for client {c} and server {s}; nothing was captured"),
        };
        if !diffs.contains(&line) {
            diffs.push(line);
        }
    }
    for r in restarts {
        if r.errno != r.expected {
            diffs.push(format!(
                "{}: expected {}, observed {}",
                r.label,
                expected_text(r.expected),
                Restart::outcome(r.errno)
            ));
        }
    }
    diffs
}

/// The section comment of the pcapng: what ran, the lesson, the restart, the verdict.
pub fn section_comment(scenario: &Scenario, lab: &Lab, place: &str, verdict: &str) -> String {
    let mut s = format!(
        "teardown run {}: {}\n{}\n",
        scenario.name,
        sentence(scenario.lesson),
        scenario.about
    );
    let client = lab
        .connection()
        .map(|c| c.client.to_string())
        .unwrap_or_else(|| lab.client_ip.to_string());
    let _ = writeln!(s, "Server {}, client {client}, {place}.", lab.server);
    if let Some(rule) = &lab.filter_rule {
        let _ = writeln!(
            s,
            "Packet filter (iptables NFQUEUE, in the run's namespaces): {rule}."
        );
    }
    for (name, old, new) in &lab.sysctls {
        let _ = writeln!(
            s,
            "sysctl {name} = {} (was {}) in this run's namespace only.",
            one_line(new),
            one_line(old)
        );
    }
    for r in &lab.restarts {
        let _ = write!(
            s,
            "Restart ({}): bind {} with {} → {}",
            r.label,
            r.addr,
            r.new_opts,
            Restart::outcome(r.errno)
        );
        let held: Vec<String> = r
            .holders
            .iter()
            .map(|h| {
                let mut t = format!("{} ↔ {} in {}", h.local, h.peer, state_name(h));
                if let Some(timer) = &h.timer {
                    let _ = write!(t, " ({:.1} s left)", timer.remaining.as_secs_f64());
                }
                t
            })
            .collect();
        if !held.is_empty() {
            let _ = write!(s, "; held by {}", held.join(", "));
        }
        s.push_str(".\n");
    }
    for (label, sockets) in &lab.snapshots {
        let states: Vec<String> = sockets
            .iter()
            .map(|k| format!("{} ↔ {} {}", k.local, k.peer, state_name(k)))
            .collect();
        let states = if states.is_empty() {
            "no socket on the port".to_string()
        } else {
            states.join(", ")
        };
        let _ = writeln!(s, "Kernel table {label}: {states}.");
    }
    if let Some(a) = &lab.agreement {
        let _ = writeln!(s, "{}.", a.summary());
        for (_, text) in &a.section {
            let _ = writeln!(s, "{text}.");
        }
    }
    let _ = write!(s, "Verdict: {verdict}.");
    s
}

/// The verdict's lines: `verdict: reproduced` (green), or the kernel did something else (red)
/// and each difference.
pub fn verdict_text(differences: &[String], style: &Style) -> String {
    if differences.is_empty() {
        return format!("{}\n", style.green("verdict: reproduced"));
    }
    let mut s = format!("{}\n", style.red("verdict: the kernel did something else:"));
    for d in differences {
        let _ = writeln!(s, "{}", style.wrap("  - ", "    ", d));
    }
    s
}

/// A one-line text as a sentence: with a full stop unless it ends with one already.
fn sentence(text: &str) -> String {
    let text = text.trim_end();
    if text.ends_with(['.', '!', '?']) {
        text.to_string()
    } else {
        format!("{text}.")
    }
}

/// A value as one line: runs of white space (the tab of ip_local_port_range) as one space.
pub fn one_line(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A kernel socket's state as the rest of teardown spells it: the kernel's CLOSE is
/// RFC 9293's CLOSED; the other names are the kernel's (as ss shows them).
pub fn state_name(k: &KernelSocket) -> &'static str {
    match k.state {
        "CLOSE" => "CLOSED",
        other => other,
    }
}

/// The run as JSON, for scripts: what ran, every segment with its transitions, every bind,
/// the kernel's figure and the verdict.
pub fn json(
    scenario: &Scenario,
    lab: &Lab,
    place: &str,
    verdict: &str,
    differences: &[String],
    capture: &std::path::Path,
) -> serde_json::Value {
    use serde_json::json;
    let conn = lab.connection();
    let first = lab.packets.first().map(|p| p.frame.ts).unwrap_or_default();
    let segments: Vec<serde_json::Value> = lab
        .packets
        .iter()
        .filter_map(|p| {
            let (seg, event) = (p.segment()?, p.event.as_ref()?);
            Some(json!({
                "time_ms": p.frame.ts.saturating_sub(first).as_secs_f64() * 1000.0,
                "from": event.from.to_string(),
                "flags": seg.flags.to_string(),
                "seq": event.rel_seq,
                "ack": event.rel_ack,
                "len": seg.len,
                "transitions": event.transitions.iter().map(|(role, t)| json!({
                    "endpoint": role.to_string(),
                    "from": t.from.name(),
                    "to": t.to.name(),
                    "cause": t.cause,
                    "rfc": t.rfc,
                })).collect::<Vec<_>>(),
                "comment": p.comment,
            }))
        })
        .collect();
    let restarts: Vec<serde_json::Value> = lab
        .restarts
        .iter()
        .map(|r| {
            json!({
                "label": r.label,
                "address": r.addr.to_string(),
                "old_options": r.old_opts.to_string(),
                "new_options": r.new_opts.to_string(),
                "bound": r.errno.is_none(),
                "errno": r.errno,
                "errno_name": r.errno.map(crate::sockets::errno_name),
                "expected_errno": r.expected,
                "as_expected": r.errno == r.expected,
                "holders": r.holders.iter().map(|h| json!({
                    "state": h.state,
                    "local": h.local.to_string(),
                    "peer": h.peer.to_string(),
                    "timer_remaining_ms": h.timer.as_ref().map(|t| t.remaining.as_millis() as u64),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let [client, server] = scenario.expect;
    json!({
        "scenario": scenario.name,
        "lesson": scenario.lesson,
        "place": place,
        "server": lab.server.to_string(),
        "client": conn.map(|c| c.client.to_string()),
        "expected": { "client": client.name(), "server": server.name() },
        "observed": lab.states().map(|[c, s]| json!({ "client": c.name(), "server": s.name() })),
        "sysctls": lab.sysctls.iter().map(|(name, old, new)| json!({
            "name": name, "value": new, "was": old,
        })).collect::<Vec<_>>(),
        "segments": segments,
        "restarts": restarts,
        "kernel": lab.agreement.as_ref().map(|a| json!({
            "seen": a.seen,
            "matched": a.matched,
            "mismatched": a.mismatched,
            "explained": a.explained,
            "unplaced": a.unplaced,
        })),
        "dropped": lab.stats.map(|s| s.dropped),
        "capture": capture.display().to_string(),
        "verdict": verdict,
        "differences": differences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::parse_proc_net_tcp;

    fn failed_restart(old: SockOpts, new: SockOpts) -> Restart {
        let table = "header
   0: 0100007F:1F40 0200007F:A0E2 06 00000000:00000000 03:0000175D 00000000     0        0 0 3 0000000000000000";
        Restart {
            label: "restart the server at once".into(),
            addr: "127.0.0.1:8000".parse().unwrap(),
            old_opts: old,
            new_opts: new,
            errno: Some(libc::EADDRINUSE),
            expected: Some(libc::EADDRINUSE),
            holders: parse_proc_net_tcp(table),
        }
    }

    #[test]
    fn failed_restart_names_errno_holder_state_and_time() {
        let text = restart_text(
            &failed_restart(SockOpts::NONE, SockOpts::NONE),
            &Style::PLAIN,
        );
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "restart the server at once: bind 127.0.0.1:8000 with no option → EADDRINUSE \
             (errno 98): Address already in use"
        );
        assert!(
            text.contains("TIME_WAIT  0       0       127.0.0.1:8000"),
            "{text}"
        );
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("in TIME_WAIT for 2×MSL — 60 s on Linux"),
            "{text}"
        );
        assert!(flat.contains("59.8 s remain"), "{text}");
        assert!(flat.contains("Fix: set SO_REUSEADDR"), "{text}");
        assert!(!text.contains('✗'), "{text}");
    }

    #[test]
    fn new_socket_alone_is_not_enough_on_linux() {
        let text = restart_text(
            &failed_restart(SockOpts::NONE, SockOpts::REUSEADDR),
            &Style::PLAIN,
        );
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains("on Linux both must set it"), "{text}");
        assert!(flat.contains("On macOS and the BSDs"), "{text}");
    }

    #[test]
    fn an_unexpected_outcome_is_marked() {
        let mut r = failed_restart(SockOpts::NONE, SockOpts::NONE);
        r.expected = None;
        let text = restart_text(&r, &Style::PLAIN);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("✗ expected the bind to succeed")
        );
    }

    #[test]
    fn differences_say_expected_and_observed() {
        use State::*;
        let mut restart = failed_restart(SockOpts::NONE, SockOpts::NONE);
        assert!(
            differences(
                [Closed, TimeWait],
                Some([Closed, TimeWait]),
                &[],
                &[restart.clone()]
            )
            .is_empty()
        );
        restart.errno = None;
        let missed = Missed {
            expected: [Closed, TimeWait],
            observed: Some([LastAck, FinWait2]),
        };
        let diffs = differences(
            [Closed, TimeWait],
            Some([LastAck, FinWait2]),
            &[missed],
            &[restart],
        );
        assert_eq!(
            diffs,
            [
                "expected the client in CLOSED and the server in TIME_WAIT at the end; observed \
                 client LAST_ACK and server FIN_WAIT_2",
                "waited for client CLOSED and server TIME_WAIT; the capture showed client \
                 LAST_ACK and server FIN_WAIT_2",
                "restart the server at once: expected EADDRINUSE (errno 98), observed bound",
            ]
        );
        assert_eq!(
            differences([Closed, TimeWait], None, &[], &[]),
            ["no segment of the experiment was captured"]
        );
    }

    #[test]
    fn verdict_is_green_or_red_only_in_colour() {
        let color = Style {
            color: true,
            width: None,
        };
        assert_eq!(verdict_text(&[], &Style::PLAIN), "verdict: reproduced\n");
        assert_eq!(
            verdict_text(&[], &color),
            "\x1b[32mverdict: reproduced\x1b[0m\n"
        );
        let diffs = ["the kernel disagreed with the inference 1 time".to_string()];
        let red = verdict_text(&diffs, &color);
        assert!(
            red.starts_with("\x1b[31mverdict: the kernel did something else:\x1b[0m\n"),
            "{red}"
        );
        assert!(red.ends_with("  - the kernel disagreed with the inference 1 time\n"));
    }

    #[test]
    fn a_lesson_ends_with_a_full_stop_once() {
        assert_eq!(
            sentence("the restart's bind() fails"),
            "the restart's bind() fails."
        );
        assert_eq!(sentence("done."), "done.");
    }

    #[test]
    fn a_sysctl_value_is_one_line_with_single_spaces() {
        assert_eq!(one_line("32768\t60999\n"), "32768 60999");
    }

    #[test]
    fn the_kernels_close_is_closed() {
        let table = "header
   0: 0200007F:A0E2 0100007F:1F40 07 0000000E:0000000B 00:00000000 00000000     0        0 1 1 0000000000000000";
        let socket = &parse_proc_net_tcp(table)[0];
        assert_eq!(socket.state, "CLOSE");
        assert_eq!(state_name(socket), "CLOSED");
    }

    #[test]
    fn the_explanation_wraps_to_a_narrow_terminal() {
        let narrow = Style {
            color: false,
            width: Some(60),
        };
        let text = restart_text(&failed_restart(SockOpts::NONE, SockOpts::NONE), &narrow);
        let prose: Vec<&str> = text.lines().filter(|l| l.starts_with("     1")).collect();
        assert!(!prose.is_empty(), "{text}");
        for line in text.lines().skip(1).filter(|l| !l.starts_with("       ")) {
            assert!(line.chars().count() <= 60, "{line}\n{text}");
        }
    }

    #[test]
    fn wrap_keeps_words_whole() {
        assert_eq!(wrap("aa bb cc dd", 5), ["aa bb", "cc dd"]);
        assert_eq!(wrap("", 5), Vec::<String>::new());
    }
}
