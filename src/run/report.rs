//! The words of a run: a restart and why it failed, the verdict, the section comment.
//! Pure: from what the lab recorded to text.

use std::fmt::Write as _;

use crate::output::style::Style;
use crate::record::{Missed, Record, Restart};
use crate::scenario::Scenario;
use crate::scenario::words::{expected_text, one_line, state_name};
use crate::tcp::State;

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
pub fn section_comment(scenario: &Scenario, record: &Record, place: &str, verdict: &str) -> String {
    let lab = record;
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

/// The run as JSON, for scripts: what ran, every segment with its transitions, every bind,
/// the kernel's figure and the verdict. The keys are an interface: a test pins them.
pub fn json(
    scenario: &Scenario,
    record: &Record,
    place: &str,
    verdict: &str,
    differences: &[String],
    capture: &std::path::Path,
) -> serde_json::Value {
    let first = record
        .packets
        .first()
        .map(|p| p.frame.ts)
        .unwrap_or_default();
    let segments = record
        .packets
        .iter()
        .filter_map(|p| {
            let (seg, event) = (p.segment()?, p.event.as_ref()?);
            Some(SegmentJson {
                time_ms: p.frame.ts.saturating_sub(first).as_secs_f64() * 1000.0,
                from: event.from.to_string(),
                flags: seg.flags.to_string(),
                seq: event.rel_seq,
                ack: event.rel_ack,
                len: seg.len,
                transitions: event
                    .transitions
                    .iter()
                    .map(|(role, t)| TransitionJson {
                        endpoint: role.to_string(),
                        from: t.from.name(),
                        to: t.to.name(),
                        cause: t.cause.text(),
                        rfc: t.rfc,
                    })
                    .collect(),
                comment: &p.comment,
            })
        })
        .collect();
    let restarts = record
        .restarts
        .iter()
        .map(|r| RestartJson {
            label: &r.label,
            address: r.addr.to_string(),
            old_options: r.old_opts.to_string(),
            new_options: r.new_opts.to_string(),
            bound: r.errno.is_none(),
            errno: r.errno,
            errno_name: r.errno.map(crate::sockets::errno_name),
            expected_errno: r.expected,
            as_expected: r.errno == r.expected,
            holders: r
                .holders
                .iter()
                .map(|h| HolderJson {
                    state: h.state.name(),
                    local: h.local.to_string(),
                    peer: h.peer.to_string(),
                    timer_remaining_ms: h.timer.as_ref().map(|t| t.remaining.as_millis() as u64),
                })
                .collect(),
        })
        .collect();
    let states = |[c, s]: [State; 2]| StatesJson {
        client: c.name(),
        server: s.name(),
    };
    let run = RunJson {
        scenario: scenario.name,
        lesson: scenario.lesson,
        place,
        server: record.server.to_string(),
        client: record.connection().map(|c| c.client.to_string()),
        expected: states(scenario.expect),
        observed: record.states().map(states),
        sysctls: record
            .sysctls
            .iter()
            .map(|(name, old, new)| SysctlJson {
                name,
                value: new,
                was: old,
            })
            .collect(),
        segments,
        restarts,
        kernel: record.agreement.as_ref().map(|a| KernelJson {
            seen: a.seen,
            matched: a.matched,
            mismatched: a.mismatched,
            explained: a.explained,
            unplaced: a.unplaced,
        }),
        dropped: record.stats.map(|s| s.dropped),
        capture: capture.display().to_string(),
        verdict,
        differences,
    };
    serde_json::to_value(run).unwrap_or_default()
}

#[derive(serde::Serialize)]
struct RunJson<'a> {
    scenario: &'a str,
    lesson: &'a str,
    place: &'a str,
    server: String,
    client: Option<String>,
    expected: StatesJson,
    observed: Option<StatesJson>,
    sysctls: Vec<SysctlJson<'a>>,
    segments: Vec<SegmentJson<'a>>,
    restarts: Vec<RestartJson<'a>>,
    kernel: Option<KernelJson>,
    dropped: Option<u64>,
    capture: String,
    verdict: &'a str,
    differences: &'a [String],
}

#[derive(serde::Serialize)]
struct StatesJson {
    client: &'static str,
    server: &'static str,
}

#[derive(serde::Serialize)]
struct SysctlJson<'a> {
    name: &'a str,
    value: &'a str,
    was: &'a str,
}

#[derive(serde::Serialize)]
struct SegmentJson<'a> {
    time_ms: f64,
    from: String,
    flags: String,
    seq: u32,
    ack: Option<u32>,
    len: u32,
    transitions: Vec<TransitionJson>,
    comment: &'a str,
}

#[derive(serde::Serialize)]
struct TransitionJson {
    endpoint: String,
    from: &'static str,
    to: &'static str,
    cause: &'static str,
    rfc: &'static str,
}

#[derive(serde::Serialize)]
struct RestartJson<'a> {
    label: &'a str,
    address: String,
    old_options: String,
    new_options: String,
    bound: bool,
    errno: Option<i32>,
    errno_name: Option<&'static str>,
    expected_errno: Option<i32>,
    as_expected: bool,
    holders: Vec<HolderJson>,
}

#[derive(serde::Serialize)]
struct HolderJson {
    state: &'static str,
    local: String,
    peer: String,
    timer_remaining_ms: Option<u64>,
}

#[derive(serde::Serialize)]
struct KernelJson {
    seen: usize,
    matched: usize,
    mismatched: usize,
    explained: usize,
    unplaced: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::words::tests::failed_restart;
    use crate::sockets::SockOpts;

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
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use crate::annotate::tests::{captured, every_50us};
    use crate::scenario::words::tests::failed_restart;
    use crate::sockets::SockOpts;
    use crate::tracker::tests::active_close;
    use std::path::Path;

    /// The report reads a record alone: no socket, no namespace, no root.
    #[test]
    fn the_report_is_made_from_a_record_alone() {
        let scenario = crate::scenario::find("active-close").unwrap();
        let (packets, tracker) = captured(active_close(false), every_50us);
        let mut record = Record::new(
            "127.0.0.1:8000".parse().unwrap(),
            "127.0.0.2".parse().unwrap(),
        );
        record.packets = packets;
        record.connection = tracker.connections().first().cloned();
        record
            .restarts
            .push(failed_restart(SockOpts::NONE, SockOpts::NONE));
        let text = section_comment(scenario, &record, "in a test", "reproduced");
        assert!(text.starts_with("teardown run active-close: "), "{text}");
        assert!(
            text.contains("Server 127.0.0.1:8000, client 127.0.0.2:40000, in a test."),
            "{text}"
        );
        assert!(text.contains("EADDRINUSE"), "{text}");
        let value = json(
            scenario,
            &record,
            "in a test",
            "reproduced",
            &[],
            Path::new("x.pcapng"),
        );
        assert_eq!(value["observed"]["server"], "TIME_WAIT");
        assert_eq!(value["segments"].as_array().unwrap().len(), 11);
        // The keys are scripts' interface: renaming one fails here.
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k.join(" ")
        };
        assert_eq!(
            keys(&value),
            "capture client differences dropped expected kernel lesson observed place \
             restarts scenario segments server sysctls verdict"
        );
        assert_eq!(
            keys(&value["segments"][0]),
            "ack comment flags from len seq time_ms transitions"
        );
        assert_eq!(
            keys(&value["segments"][0]["transitions"][0]),
            "cause endpoint from rfc to"
        );
        assert_eq!(
            keys(&value["restarts"][0]),
            "address as_expected bound errno errno_name expected_errno holders label \
             new_options old_options"
        );
        assert_eq!(
            keys(&value["restarts"][0]["holders"][0]),
            "local peer state timer_remaining_ms"
        );
        assert_eq!(value["restarts"][0]["errno"], libc::EADDRINUSE);
        assert!(value["kernel"].is_null() && value["dropped"].is_null());
    }
}
