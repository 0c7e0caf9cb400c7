//! What `exec` says at the end: per connection who closed first, each end's path, owner
//! and the kernel's check; then what the programs left on the port.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::owners::{End, Owners, TracedCall};
use crate::cli::ExecConfig;
use crate::kernel::{KernelSocket, KernelState, Owner, render_table};
use crate::output::style::{Style, plural};
use crate::scenario::bench::Lab;
use crate::sockets::SockOpts;
use crate::tcp::State;
use crate::tracker::Role;

/// One connection as the report tells it.
pub struct Conn {
    pub id: usize,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Who sent the first FIN or RST, and which.
    pub closed_first: Option<(Role, &'static str)>,
    /// The FINs crossed (an end went to CLOSING).
    pub simultaneous: bool,
    /// Each end's states in order, [client, server].
    pub paths: [Vec<State>; 2],
    /// The process that held each end while it lived, and the one that called close().
    pub owners: [Option<Owner>; 2],
    pub closers: [Option<Owner>; 2],
    pub kernel: Option<String>,
    pub mismatched: usize,
}

/// A v4-mapped IPv6 address as the IPv4 one the packets carry (a dual-stack listener's
/// sockets are AF_INET6 in the kernel's table).
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn find_owner(owners: &Owners, end: End) -> Option<Owner> {
    owners.by_end.iter().find_map(|((l, p), o)| {
        (canonical(*l) == end.0 && canonical(*p) == end.1).then(|| o.clone())
    })
}

/// Every connection of the capture, with the lab's kernel check of it.
pub fn connections(lab: &mut Lab, owners: &Owners, calls: &[TracedCall]) -> Vec<Conn> {
    let conns = lab.annotator.tracker.connections().to_vec();
    let mut out = Vec::new();
    for c in &conns {
        let mut paths: [Vec<State>; 2] = [Vec::new(), Vec::new()];
        let mut closed_first = None;
        let mut simultaneous = false;
        for p in &lab.record.packets {
            let Some(e) = p.event.as_ref().filter(|e| e.conn == c.id) else {
                continue;
            };
            for role in [Role::Client, Role::Server] {
                let path = e.path(role);
                if path.is_empty() {
                    continue;
                }
                let mine = &mut paths[role.index()];
                if mine.is_empty() {
                    mine.push(path[0]);
                }
                mine.extend_from_slice(&path[1..]);
            }
            simultaneous |= e.transitions.iter().any(|(_, t)| t.to == State::Closing);
            if closed_first.is_none()
                && let Some(seg) = p.segment()
            {
                if seg.flags.rst() {
                    closed_first = Some((e.from, "RST"));
                } else if seg.flags.fin() {
                    closed_first = Some((e.from, "FIN"));
                }
            }
        }
        let ends = [(c.client, c.server), (c.server, c.client)];
        let owner = |i: usize| find_owner(owners, ends[i]);
        let closer = |i: usize| {
            calls
                .iter()
                .find(|t| {
                    t.call == "close"
                        && canonical(t.end.0) == ends[i].0
                        && canonical(t.end.1) == ends[i].1
                })
                .and_then(|t| owners.of_pid(t.pid))
        };
        // The lab checked every connection as its packets left the annotator.
        let (kernel, mismatched) = match lab
            .record
            .agreement
            .as_ref()
            .and_then(|a| a.by_conn.iter().find(|(id, _)| *id == c.id).map(|(_, a)| a))
        {
            Some(a) => (Some(a.summary()), a.mismatched),
            None => (None, 0),
        };
        out.push(Conn {
            id: c.id,
            client: c.client,
            server: c.server,
            closed_first,
            simultaneous,
            paths,
            owners: [owner(0), owner(1)],
            closers: [closer(0), closer(1)],
            kernel,
            mismatched,
        });
    }
    out
}

/// The rows of the left-behind table shown; the rest are counted.
const TABLE_ROWS: usize = 12;

/// A socket the programs left on the port, and what it means.
pub struct Left {
    pub socket: KernelSocket,
    pub text: String,
    /// Sockets of one kind share their explanation: (state, the server's end or not).
    kind: (KernelState, bool),
}

/// The sockets on the port at the end, each explained; `would` is a trial bind's answer
/// (with the old listener's options) where no listener is left.
pub fn left_behind(
    table: &[KernelSocket],
    server: SocketAddr,
    listener: Option<SocketAddr>,
    would: &Option<(SockOpts, Option<i32>)>,
) -> Vec<Left> {
    let port = server.port();
    let mut out = Vec::new();
    for s in table {
        let local = canonical(s.local);
        let peer = canonical(s.peer);
        let server_end = local.port() == port;
        let left = s
            .timer
            .as_ref()
            .map(|t| format!("{:.1} s left", t.remaining.as_secs_f64()))
            .unwrap_or_else(|| "its timer not shown".into());
        let who = s
            .owner
            .as_ref()
            .map(|o| format!("pid {} ({})", o.pid, o.cmdline))
            .unwrap_or_else(|| "a process teardown could not name".into());
        let text = match s.state {
            KernelState::TimeWait if server_end => {
                let mut t = format!(
                    "{local} ↔ {peer} TIME_WAIT, {left}: the server's end of a connection the \
                     server closed first; no process owns it, the kernel keeps it for 2×MSL (60 s \
                     on Linux, RFC 9293 §3.6)."
                );
                match would {
                    Some((opts, Some(errno))) => {
                        let _ = write!(
                            t,
                            " A restart now would fail: a bind() of {} with the server's own \
                             options ({opts}) gets {}.",
                            listener.unwrap_or(server),
                            crate::record::Restart::outcome(Some(*errno))
                        );
                        if !opts.reuseaddr {
                            t.push_str(
                                " Fix: set SO_REUSEADDR before bind() (see `teardown run \
                                 reuseaddr`).",
                            );
                        }
                    }
                    Some((opts, None)) => {
                        let _ = write!(
                            t,
                            " A restart now would bind: the server sets {opts}, which lets a \
                             new listener share the port with TIME_WAIT sockets."
                        );
                    }
                    None => {}
                }
                t
            }
            KernelState::TimeWait => format!(
                "{local} ↔ {peer} TIME_WAIT, {left}: the client's end of a connection the client \
                 closed first; it holds the local port {} until then (many of them exhaust the \
                 ephemeral ports: `teardown why --connect {server}`).",
                local.port()
            ),
            KernelState::CloseWait => format!(
                "{local} ↔ {peer} CLOSE_WAIT{}, held by {who}: this program did not close() \
                 after the peer's FIN; the socket stays until it does or exits (the classic \
                 leak).",
                if s.recv_q > 0 {
                    format!(" (Recv-Q {}: unread bytes)", s.recv_q)
                } else {
                    String::new()
                }
            ),
            KernelState::FinWait2 if s.inode == 0 => format!(
                "{local} ↔ {peer} FIN_WAIT_2, {left}: orphaned: its program closed it, the peer \
                 acknowledged the FIN but never sent its own; no process owns it, and Linux \
                 drops it after net.ipv4.tcp_fin_timeout."
            ),
            KernelState::Listen => {
                format!("{local} LISTEN, {who}: a server still listens on the port.")
            }
            state => format!("{local} ↔ {peer} {state}, {who}."),
        };
        out.push(Left {
            socket: s.clone(),
            text,
            kind: (s.state, server_end),
        });
    }
    out
}

fn owner_text(o: &Option<Owner>) -> String {
    match o {
        Some(o) => format!("pid {} ({})", o.pid, o.cmdline),
        None => "a process not seen (it closed between two reads of the table)".into(),
    }
}

fn path_text(path: &[State]) -> String {
    if path.is_empty() {
        return "no change seen".into();
    }
    path.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Who closed first, in words.
pub fn closed_text(c: &Conn) -> String {
    match c.closed_first {
        Some((role, _)) if c.simultaneous => {
            format!("simultaneous close (the FINs crossed; the {role}'s was seen first)")
        }
        Some((role, how)) => format!("the {role} closed first ({how})"),
        None => "not closed while the capture ran".into(),
    }
}

/// The report's text.
pub fn text(conns: &[Conn], left: &[Left], style: &Style) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n{}:", plural(conns.len(), "connection", "connections"));
    for c in conns {
        let _ = writeln!(
            s,
            "{}",
            style.wrap(
                &format!("  #{} ", c.id),
                "     ",
                &format!("{} → {}: {}", c.client, c.server, closed_text(c))
            )
        );
        for role in [Role::Client, Role::Server] {
            let i = role.index();
            let _ = writeln!(
                s,
                "{}",
                style.wrap(
                    &format!("     {role}: "),
                    "             ",
                    &path_text(&c.paths[i])
                )
            );
            let mut who = format!("owned by {}", owner_text(&c.owners[i]));
            match (&c.closers[i], &c.owners[i]) {
                (Some(cl), Some(o)) if cl.pid == o.pid => {
                    who.push_str(", which closed it (close() or its exit)")
                }
                (Some(cl), None) => {
                    who = format!("close() called by pid {} ({})", cl.pid, cl.cmdline)
                }
                (Some(cl), Some(_)) => {
                    let _ = write!(who, "; close() called by pid {} ({})", cl.pid, cl.cmdline);
                }
                _ => {}
            }
            let _ = writeln!(s, "{}", style.wrap("             ", "             ", &who));
        }
        if let Some(k) = &c.kernel {
            let line = style.wrap("     ", "       ", k);
            let _ = writeln!(
                s,
                "{}",
                if c.mismatched > 0 {
                    style.red(&line)
                } else {
                    line
                }
            );
        }
    }
    let _ = writeln!(s);
    if left.is_empty() {
        let _ = writeln!(s, "left behind: nothing on the port");
        return s;
    }
    let _ = writeln!(
        s,
        "left behind on the port (the kernel's table, as ss reads it):"
    );
    let sockets: Vec<KernelSocket> = left
        .iter()
        .take(TABLE_ROWS)
        .map(|l| l.socket.clone())
        .collect();
    for line in render_table(&sockets).lines() {
        let _ = writeln!(s, "  {line}");
    }
    if left.len() > TABLE_ROWS {
        let _ = writeln!(s, "  ... and {} more", left.len() - TABLE_ROWS);
    }
    // One explanation per kind of socket: a load run leaves hundreds of one kind.
    let mut told: Vec<(KernelState, bool)> = Vec::new();
    for l in left {
        if told.contains(&l.kind) {
            continue;
        }
        told.push(l.kind);
        let like = left.iter().filter(|o| o.kind == l.kind).count();
        let mut text = l.text.clone();
        if like > 1 {
            let _ = write!(text, " ({} more like it)", like - 1);
        }
        let _ = writeln!(s, "{}", style.wrap("  - ", "    ", &text));
    }
    s
}

/// What the run found, as the capture's section comment and the JSON report both say it.
#[derive(Clone, Copy)]
pub struct Findings<'a> {
    pub config: &'a ExecConfig,
    pub place: &'a str,
    pub conns: &'a [Conn],
    pub left: &'a [Left],
    pub verdict: &'a str,
}

/// The capture's section comment: the commands, the place, the restart, each connection
/// and what was left, for the file alone.
pub fn section_comment(found: &Findings, lab: &Lab) -> String {
    let Findings {
        config,
        place,
        conns,
        left,
        verdict,
    } = *found;
    let mut s = format!(
        "teardown exec: server `{}` on port {}",
        config.server.text, config.port
    );
    for c in &config.clients {
        let _ = write!(s, ", client `{}`", c.text);
    }
    let _ = writeln!(s, "; {place}.");
    for r in &lab.record.restarts {
        let _ = writeln!(
            s,
            "Restart: {} → {}.",
            r.label,
            crate::record::Restart::outcome(r.errno)
        );
    }
    for c in conns {
        let _ = writeln!(
            s,
            "#{} {} → {}: {}; client {}, server {}.",
            c.id,
            c.client,
            c.server,
            closed_text(c),
            path_text(&c.paths[0]),
            path_text(&c.paths[1])
        );
    }
    for l in left {
        let _ = writeln!(s, "Left: {}", l.text);
    }
    let _ = write!(s, "Verdict: {verdict}.");
    s
}

fn owner_json(o: &Option<Owner>) -> serde_json::Value {
    match o {
        Some(o) => serde_json::json!({"pid": o.pid, "command": o.command, "cmdline": o.cmdline}),
        None => serde_json::Value::Null,
    }
}

/// The report for scripts.
pub fn json(found: &Findings, lab: &Lab, capture: &str) -> serde_json::Value {
    use serde_json::json;
    let connections: Vec<_> = found
        .conns
        .iter()
        .map(|c| {
            json!({
                "conn": c.id,
                "client": c.client,
                "server": c.server,
                "closed_first": c.closed_first.map(|(r, _)| r.to_string()),
                "how": c.closed_first.map(|(_, h)| h),
                "simultaneous_close": c.simultaneous,
                "client_path": c.paths[0].iter().map(|s| s.name()).collect::<Vec<_>>(),
                "server_path": c.paths[1].iter().map(|s| s.name()).collect::<Vec<_>>(),
                "client_owner": owner_json(&c.owners[0]),
                "server_owner": owner_json(&c.owners[1]),
                "client_closed_by": owner_json(&c.closers[0]),
                "server_closed_by": owner_json(&c.closers[1]),
                "kernel_check": c.kernel,
                "mismatched": c.mismatched,
            })
        })
        .collect();
    let restarts: Vec<_> = lab
        .record
        .restarts
        .iter()
        .map(|r| {
            json!({
                "label": r.label,
                "addr": r.addr,
                "options": r.new_opts.to_string(),
                "outcome": crate::record::Restart::outcome(r.errno),
                "errno": r.errno,
                "holders": r.holders.iter().map(|h| json!({
                    "state": h.state.name(), "local": h.local, "peer": h.peer,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let left: Vec<_> = found
        .left
        .iter()
        .map(|l| {
            json!({
                "state": l.socket.state.name(),
                "local": canonical(l.socket.local),
                "peer": canonical(l.socket.peer),
                "owner": owner_json(&l.socket.owner),
                "explanation": l.text,
            })
        })
        .collect();
    json!({
        "command": "exec",
        "server": found.config.server.text,
        "clients": found.config.clients.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
        "port": found.config.port,
        "place": found.place,
        "connections": connections,
        "restarts": restarts,
        "left_behind": left,
        "packets": lab.record.packets.len(),
        "capture": capture,
        "verdict": found.verdict,
    })
}
