//! The words the bench says of a restart: the bind, its outcome, the sockets that hold the
//! port and why, wrapped to the terminal; and the kernel's names as the report spells them.

use std::fmt::Write as _;

use crate::kernel::{KernelSocket, render_table};
use crate::output::style::{Style, wrap};
use crate::record::Restart;
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

pub fn expected_text(expected: Option<i32>) -> String {
    match expected {
        None => "the bind to succeed".to_string(),
        Some(n) => Restart::outcome(Some(n)),
    }
}

/// Why the bind got what it got, and what would have changed it, in lines of `width`.
pub fn explain(r: &Restart, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for h in &r.holders {
        let far = r
            .far_ends
            .iter()
            .find(|f| f.local == h.peer && f.peer == h.local);
        lines.push(explain_holder(h, far));
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
        // Only where an old socket was there to bind beside.
        (None, true, true) if r.old_opts != SockOpts::NONE && !r.holders.is_empty() => lines.push(
            "Both the old and the new socket set SO_REUSEADDR, so the old connection's socket \
             no longer blocks a new listener; the old connection's 4-tuple itself stays \
             protected until its TIME_WAIT ends."
                .into(),
        ),
        _ => {}
    }
    lines.into_iter().flat_map(|l| wrap(&l, width)).collect()
}

fn explain_holder(h: &KernelSocket, far: Option<&KernelSocket>) -> String {
    let left = h
        .timer
        .as_ref()
        .map(|t| format!("{:.1} s", t.remaining.as_secs_f64()))
        .unwrap_or_else(|| "some time".into());
    let both = far.is_some_and(|f| f.rfc_state() == Some(State::TimeWait));
    match h.rfc_state() {
        // Both ends closed before either had the other's FIN (RFC 9293 §3.6, Figure 13).
        Some(State::TimeWait) if both => format!(
            "{} ↔ {} is the server's end of the old connection. Both ends closed at once (a \
             simultaneous close), so both wait in TIME_WAIT for 2×MSL — 60 s on Linux \
             (TCP_TIMEWAIT_LEN) — so that a lost final ACK can be answered and late duplicates \
             die (RFC 9293 §3.6); {left} remain. No process owns it: the kernel keeps it.",
            h.local, h.peer
        ),
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

/// A value as one line: runs of white space (the tab of ip_local_port_range) as one space.
pub fn one_line(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A kernel socket's state as the rest of teardown spells it: the kernel's CLOSE is
/// RFC 9293's CLOSED; the other names are the kernel's (as ss shows them).
pub fn state_name(k: &KernelSocket) -> &'static str {
    match k.state {
        crate::kernel::KernelState::Close => "CLOSED",
        other => other.name(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernel::parse_proc_net_tcp;

    pub(crate) fn failed_restart(old: SockOpts, new: SockOpts) -> Restart {
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
            far_ends: Vec::new(),
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
    fn a_sysctl_value_is_one_line_with_single_spaces() {
        assert_eq!(one_line("32768\t60999\n"), "32768 60999");
    }

    #[test]
    fn the_kernels_close_is_closed() {
        let table = "header
   0: 0200007F:A0E2 0100007F:1F40 07 0000000E:0000000B 00:00000000 00000000     0        0 1 1 0000000000000000";
        let socket = &parse_proc_net_tcp(table)[0];
        assert_eq!(socket.state, crate::kernel::KernelState::Close);
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

    #[test]
    fn a_simultaneous_close_is_said_where_the_far_end_waits_in_time_wait_too() {
        let mut r = failed_restart(SockOpts::NONE, SockOpts::NONE);
        let one = explain(&r, 200).join(" ");
        assert!(one.contains("The server closed first"), "{one}");
        // The client's end of the same connection, also in TIME_WAIT.
        let far = "header
   0: 0200007F:A0E2 0100007F:1F40 06 00000000:00000000 03:0000175D 00000000     0        0 0 3 0000000000000000";
        r.far_ends = parse_proc_net_tcp(far);
        let both = explain(&r, 200).join(" ");
        assert!(
            both.contains("Both ends closed at once (a simultaneous close)"),
            "{both}"
        );
        assert!(!both.contains("The server closed first"), "{both}");
    }

    #[test]
    fn a_bind_that_nothing_blocked_explains_no_old_socket() {
        let reuse = SockOpts {
            reuseaddr: true,
            ..SockOpts::NONE
        };
        let mut r = failed_restart(reuse, reuse);
        r.errno = None;
        assert!(
            explain(&r, 200)
                .join(" ")
                .contains("no longer blocks a new listener")
        );
        r.holders.clear();
        assert_eq!(explain(&r, 200), Vec::<String>::new());
    }
}
