//! The picture before it is drawn: each endpoint's own time line. A segment leaves its sender
//! at its send time and reaches its receiver at its receive time, each end's state box sits
//! where that end changed state, so crossing FINs cross (RFC 9293 §3.6, Figure 13). Times come
//! from the kernel's trace where the run has one, else from what the packets prove (a FIN
//! that did not ack the peer's was sent before the peer's arrived). Pure: the SVG reads it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::annotate::Packet;
use crate::evidence::{Note, Verdict};
use crate::kernel::tracefs::{EventKind, KernelEvent};
use crate::tcp::{Cause, State};
use crate::tracker::{Connection, Role};

/// Runs of plain segments longer than this fold into one line.
pub const FOLD_MIN: usize = 8;

/// A point on the common clock: milliseconds, then the packet it belongs to and a step within
/// that packet (sent 0, arrives 1, a later arrival 2...), so that equal times keep an order.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub ms: f64,
    pub i: usize,
    pub sub: u8,
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.ms
            .total_cmp(&other.ms)
            .then(self.i.cmp(&other.i))
            .then(self.sub.cmp(&other.sub))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Key {}

impl Key {
    fn after(self) -> Key {
        Key {
            sub: self.sub.saturating_add(1),
            ..self
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// Sent and received.
    Solid,
    /// Dropped on the way (teardown's packet filter): stops half-way with ✕.
    Lost,
    /// Never seen, but what followed proves it missing: dashed, stops half-way.
    Inferred,
}

#[derive(Clone, Debug)]
pub struct Arrow {
    pub from: Role,
    pub sent: Key,
    /// Where it arrives; for a lost segment, where it would have.
    pub arrives: Key,
    pub line: Line,
    pub label: String,
    /// A second line under the label: "FIN again, +208 ms (RTO)", "RST: …", "lost: …".
    pub tag: Option<String>,
    pub rst: bool,
    pub resent: bool,
    /// Unexpected segments and the kernel's mismatches, in red.
    pub notes: Vec<String>,
    pub comment: String,
    /// The index of its packet (lost and inferred segments: the packet that told of them).
    pub packet: usize,
}

/// A state box: `role` entered `state` at `key`.
#[derive(Clone, Debug)]
pub struct Mark {
    pub role: Role,
    pub key: Key,
    pub state: State,
    pub verdict: Option<Verdict>,
}

/// Many plain segments in one line: "… 2,998 data segments …".
#[derive(Clone, Debug)]
pub struct Fold {
    pub key: Key,
    pub text: String,
}

/// A later connection on the same 4-tuple starts here, with its own initial states.
#[derive(Clone, Debug)]
pub struct Start {
    pub key: Key,
    pub text: String,
    pub initial: [State; 2],
}

/// TIME_WAIT's 2×MSL on `role`'s line, from `start`, started again at each FIN that reaches
/// it (RFC 9293 §3.10.7.4), to `end` when something else ends it.
#[derive(Clone, Debug)]
pub struct Bracket {
    pub role: Role,
    pub start: Key,
    pub restarts: Vec<Key>,
    pub end: Option<Key>,
}

/// One ladder: two time lines and the connections drawn on them.
#[derive(Clone, Debug)]
pub struct Panel {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub conns: Vec<usize>,
    /// "6 connections like this one (client ports 33244–33249)".
    pub caption: Option<String>,
    pub initial: [State; 2],
    pub joined_mid: bool,
    pub arrows: Vec<Arrow>,
    pub marks: Vec<Mark>,
    pub folds: Vec<Fold>,
    pub starts: Vec<Start>,
    pub brackets: Vec<Bracket>,
    /// How each end was left: [client, server].
    pub finals: [String; 2],
    pub final_states: [State; 2],
}

impl Panel {
    /// Every key the panel uses, sorted, each once: the rows of the picture.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .arrows
            .iter()
            .flat_map(|a| [a.sent, a.arrives])
            .chain(self.marks.iter().map(|m| m.key))
            .chain(self.folds.iter().map(|f| f.key))
            .chain(self.starts.iter().map(|s| s.key))
            .collect();
        keys.sort_by(Key::cmp);
        keys.dedup();
        keys
    }
}

/// What the whole picture says around its ladders.
#[derive(Clone, Debug, Default)]
pub struct Heading {
    pub title: String,
    /// The scenario's lesson, under the title.
    pub lesson: Option<String>,
    /// The verdict, at the bottom.
    pub verdict: Option<String>,
}

/// The panels of connections `ids` among `packets`: one per 4-tuple (a new connection on the
/// 4-tuple of an old one shares its lines), panels alike in every segment folded into one.
/// `kernel`: notes per packet index; `trace`: the kernel's events, on the packets' clock;
/// `extra`: notes of the run not tied to a packet (the packet filter's untold drops).
pub fn panels(
    packets: &[Packet],
    conns: &[&Connection],
    kernel: Option<&[Vec<Note>]>,
    trace: &[KernelEvent],
    extra: &[String],
) -> Vec<Panel> {
    let t0 = packets
        .iter()
        .find(|p| p.event.is_some())
        .map(|p| p.frame.ts)
        .unwrap_or_default();
    // One group per 4-tuple, in order of first appearance.
    let mut groups: Vec<Vec<&Connection>> = Vec::new();
    for c in conns {
        match groups
            .iter_mut()
            .find(|g| g[0].client == c.client && g[0].server == c.server)
        {
            Some(g) => g.push(c),
            None => groups.push(vec![c]),
        }
    }
    let mut out: Vec<(Panel, Vec<u8>)> = Vec::new();
    for (n, group) in groups.iter().enumerate() {
        // The run's untold drops belong to its last connection.
        let extra = if n + 1 == groups.len() { extra } else { &[] };
        let panel = panel(packets, group, kernel, trace, extra, t0);
        let shape = shape(packets, group);
        out.push((panel, shape));
    }
    fold_alike(out, packets, kernel)
}

/// What makes two connections alike: each segment's sender, flags, data or not, and the
/// changes it made.
fn shape(packets: &[Packet], group: &[&Connection]) -> Vec<u8> {
    let ids: Vec<usize> = group.iter().map(|c| c.id).collect();
    let mut out = Vec::new();
    for p in packets {
        let (Some(e), Some(seg)) = (&p.event, p.segment()) else {
            continue;
        };
        if !ids.contains(&e.conn) {
            continue;
        }
        out.push(e.from.index() as u8);
        out.push(seg.flags.0);
        out.push(u8::from(seg.len > 0) | (u8::from(e.resent) << 1));
        for (r, t) in &e.transitions {
            out.extend(format!("{}{:?}{:?}", r.index(), t.from, t.to).bytes());
        }
        out.push(0xff);
    }
    for c in group {
        out.extend(c.ending(Role::Client).bytes());
        out.extend(c.ending(Role::Server).bytes());
    }
    out
}

/// Panels alike in every segment (port-exhaustion's six connections) become one, captioned.
fn fold_alike(
    all: Vec<(Panel, Vec<u8>)>,
    packets: &[Packet],
    kernel: Option<&[Vec<Note>]>,
) -> Vec<Panel> {
    let mut kept: Vec<(Panel, Vec<u8>, Vec<Panel>)> = Vec::new();
    for (panel, shape) in all {
        match kept
            .iter_mut()
            .find(|(p, s, _)| *s == shape && p.server == panel.server)
        {
            Some((_, _, alike)) => alike.push(panel),
            None => kept.push((panel, shape, Vec::new())),
        }
    }
    kept.into_iter()
        .map(|(mut panel, _, mut alike)| {
            // The one drawn is the one the kernel said most about (its marks show).
            let said = |p: &Panel| p.marks.iter().filter(|m| m.verdict.is_some()).count();
            if let Some(best) = (0..alike.len()).max_by_key(|&k| said(&alike[k]))
                && said(&alike[best]) > said(&panel)
            {
                std::mem::swap(&mut panel, &mut alike[best]);
            }
            if !alike.is_empty() {
                let n = alike.len() + 1;
                let mut ports: Vec<u16> = std::iter::once(panel.client.port())
                    .chain(alike.iter().map(|p| p.client.port()))
                    .collect();
                ports.sort_unstable();
                let ids: Vec<usize> = panel
                    .conns
                    .iter()
                    .chain(alike.iter().flat_map(|p| &p.conns))
                    .copied()
                    .collect();
                let kernel_word = kernel.map(|k| {
                    let notes_of = |id: usize| {
                        packets
                            .iter()
                            .zip(k)
                            .filter(move |(p, _)| p.event.as_ref().is_some_and(|e| e.conn == id))
                            .flat_map(|(_, notes)| notes)
                    };
                    let checked = ids
                        .iter()
                        .filter(|id| notes_of(**id).next().is_some())
                        .count();
                    let mismatched = ids
                        .iter()
                        .filter(|id| notes_of(**id).any(|n| n.verdict == Verdict::Mismatch))
                        .count();
                    match (checked, mismatched) {
                        (0, _) => String::new(),
                        (c, 0) if c == n => format!("; the kernel agrees on all {n}"),
                        (c, 0) => format!("; the kernel checked {c} of {n}, and agrees"),
                        (c, m) => format!("; the kernel checked {c} of {n}, and disagrees on {m}"),
                    }
                });
                let ports = if n <= 8 {
                    ports
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    format!("{}–{}", ports[0], ports[ports.len() - 1])
                };
                panel.caption = Some(format!(
                    "{n} connections like this one (client ports {ports}){}",
                    kernel_word.unwrap_or_default()
                ));
                panel.conns = ids;
            }
            panel
        })
        .collect()
}

/// Which end of a segment a change belongs to.
#[derive(Clone, Copy)]
enum Anchor {
    Sent(usize),
    Arrives(usize),
}

/// The drawing of one 4-tuple's connections, `t0` the clock's zero.
fn panel(
    packets: &[Packet],
    group: &[&Connection],
    kernel: Option<&[Vec<Note>]>,
    trace: &[KernelEvent],
    extra: &[String],
    t0: Duration,
) -> Panel {
    let first = group[0];
    let last = group[group.len() - 1];
    let ids: Vec<usize> = group.iter().map(|c| c.id).collect();
    let ms = |t: Duration| t.saturating_sub(t0).as_secs_f64() * 1000.0;
    // Arrows by packet index, and where each change goes.
    let mut arrows: Vec<Arrow> = Vec::new();
    let mut by_index: HashMap<usize, usize> = HashMap::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut used = vec![false; trace.len()];
    let mut starts = Vec::new();
    let mut seen_conns: Vec<usize> = Vec::new();
    let mut lost: Vec<Arrow> = Vec::new();
    for (index, packet) in packets.iter().enumerate() {
        let (Some(event), Some(seg)) = (&packet.event, packet.segment()) else {
            continue;
        };
        if !ids.contains(&event.conn) {
            continue;
        }
        let at = ms(packet.frame.ts);
        let sent = Key {
            ms: at,
            i: index,
            sub: 0,
        };
        if !seen_conns.contains(&event.conn) {
            if !seen_conns.is_empty()
                && let Some(c) = group.iter().find(|c| c.id == event.conn)
            {
                starts.push(Start {
                    key: Key {
                        ms: at,
                        i: index,
                        sub: 0,
                    },
                    text: format!("connection #{}: a new SYN on the same 4-tuple", c.id),
                    initial: [Role::Client, Role::Server].map(|r| initial_state(packets, c, r)),
                });
            }
            seen_conns.push(event.conn);
        }
        let conn = group.iter().find(|c| c.id == event.conn).unwrap_or(&first);
        let notes: &[Note] = kernel.and_then(|k| k.get(index)).map_or(&[], |n| n);
        // The segment's own time line: a new connection's first segment starts one step later,
        // below the line that introduces it.
        let sent = if starts.last().is_some_and(|s| s.key.i == index) {
            sent.after()
        } else {
            sent
        };
        for (role, t) in &event.transitions {
            // The kernel's note goes on an endpoint's last change of the segment; it agrees
            // only when the kernel's chain ran the whole path (ESTABLISHED → FIN_WAIT_1 →
            // CLOSING), so the earlier steps share its verdict.
            let verdict = notes
                .iter()
                .find(|n| n.role == *role && n.inferred == Some((t.from, t.to)))
                .or_else(|| {
                    let last = event.last_transition(*role).map(|l| (l.from, l.to));
                    notes.iter().find(|n| {
                        n.role == *role
                            && n.verdict == Verdict::Agrees
                            && n.inferred.is_some()
                            && n.inferred == last
                    })
                })
                .map(|n| n.verdict);
            // The kernel's own time for the change, where it agrees on it.
            // (Not where Linux's trace tells the change elsewhere: a listener's SYN_RECEIVED
            // is traced when the ACK completes it.)
            let traced = (matches!(verdict, Some(Verdict::Agrees) | None)
                && (t.from, t.to) != (State::Listen, State::SynReceived))
                .then(|| traced_at(trace, &mut used, conn, *role, t.from, t.to, at, &ms))
                .flatten();
            let mut crossed = None;
            let anchor = if *role == event.from {
                match t.cause {
                    // A change of the sender on its own segment that a segment of the peer
                    // made: the peer's FIN reached it after this one left.
                    Cause::Crossed | Cause::ReceivedFinBeforeAckOfOwn | Cause::ReceivedFin => {
                        match peer_fin(packets, &arrows, event.conn, event.from) {
                            Some(j) => {
                                crossed = Some(index);
                                Anchor::Arrives(j)
                            }
                            None => Anchor::Sent(index),
                        }
                    }
                    _ => Anchor::Sent(index),
                }
            } else {
                Anchor::Arrives(index)
            };
            pending.push(Pending {
                role: *role,
                state: t.to,
                verdict,
                anchor,
                traced,
                crossed,
            });
        }
        let mut red: Vec<String> = event
            .unexpected()
            .iter()
            .map(|(role, u)| format!("! {role} in {}: {}", u.state, u.why))
            .collect();
        red.extend(
            notes
                .iter()
                .filter(|n| n.verdict == Verdict::Mismatch)
                .map(|n| n.text.clone()),
        );
        let tag = if event.resent {
            Some(again(packets, index, seg, event.from))
        } else if seg.flags.rst() {
            Some(rst_cause(event))
        } else {
            None
        };
        // A retransmission tells of the segment whose absence made it go again.
        for note in event.notes() {
            let note = &*note.text();
            if let Some((role, flags, at)) = parse_drop(note) {
                lost.push(lost_arrow(role, &flags, at, index, Line::Lost, note));
            } else if event.resent && *note == crate::tracker::unanswered(seg, event.from.other()) {
                // Offline: the ACK of the previous copy never came; drawn where it would have
                // left, just after the previous copy reached the peer.
                if let Some(&j) = previous_copy(packets, index, seg).and_then(|j| by_index.get(&j))
                {
                    let prev: &Arrow = &arrows[j];
                    let mut a = lost_arrow(
                        event.from.other(),
                        "ACK",
                        prev.arrives.ms,
                        index,
                        Line::Inferred,
                        note,
                    );
                    a.sent = prev.arrives.after();
                    a.arrives = a.sent.after();
                    lost.push(a);
                }
            }
        }
        by_index.insert(index, arrows.len());
        arrows.push(Arrow {
            from: event.from,
            sent,
            arrives: sent.after(),
            line: Line::Solid,
            label: super::ladder::label(seg, event),
            tag,
            rst: seg.flags.rst(),
            resent: event.resent,
            notes: red,
            comment: packet.comment.clone(),
            packet: index,
        });
    }
    for note in extra {
        if let Some((role, flags, at)) = parse_untold_drop(note) {
            lost.push(lost_arrow(role, &flags, at, usize::MAX, Line::Lost, note));
        }
    }
    // Trace times move the ends of the segments the changes belong to.
    for &Pending { anchor, traced, .. } in &pending {
        let (Some(t), Some(&a)) = (
            traced,
            match anchor {
                Anchor::Sent(i) | Anchor::Arrives(i) => by_index.get(&i),
            },
        ) else {
            continue;
        };
        match anchor {
            Anchor::Sent(_) => arrows[a].sent.ms = t,
            Anchor::Arrives(_) => arrows[a].arrives.ms = t,
        }
    }
    // Without the kernel's time, what the packets prove.
    // A sender's segments leave in the order the wire shows them: one sent before a later
    // one whose time the kernel gave left no later than it (the server's data before its FIN).
    for role in [Role::Client, Role::Server] {
        let mut next: Option<Key> = None;
        for a in arrows.iter_mut().rev().filter(|a| a.from == role) {
            if let Some(n) = next
                && a.sent.cmp(&n).is_gt()
            {
                a.sent = Key {
                    ms: n.ms,
                    i: a.packet,
                    sub: 0,
                };
            }
            next = Some(a.sent);
        }
    }
    settle_crossings(&mut arrows, &pending, &by_index);
    // A later connection's line goes just above its first moment.
    for s in &mut starts {
        let conn = packets[s.key.i].event.as_ref().map(|e| e.conn);
        if let Some(k) = arrows
            .iter()
            .filter(|a| packets[a.packet].event.as_ref().map(|e| e.conn) == conn)
            .map(|a| a.sent)
            .min_by(Key::cmp)
        {
            s.key = Key {
                ms: k.ms - 1e-6,
                ..k
            };
        }
    }
    // No segment arrives before it left.
    for a in arrows.iter_mut().chain(lost.iter_mut()) {
        if a.arrives.cmp(&a.sent).is_le() {
            a.arrives = a.sent.after();
        }
    }
    let mut marks: Vec<Mark> = pending
        .iter()
        .filter_map(
            |&Pending {
                 role,
                 state,
                 verdict,
                 anchor,
                 ..
             }| {
                let key = match anchor {
                    Anchor::Sent(i) => arrows[*by_index.get(&i)?].sent,
                    Anchor::Arrives(i) => arrows[*by_index.get(&i)?].arrives,
                };
                Some(Mark {
                    role,
                    key,
                    state,
                    verdict,
                })
            },
        )
        .collect();
    // The end a new SYN took over (RFC 6191, tcp_tw_reuse): it ends where that SYN arrives.
    for (n, c) in group.iter().enumerate() {
        if let (Some((role, t)), Some(next)) = (c.taken_over.as_deref(), group.get(n + 1))
            && let Some(a) = arrows.iter().find(|a| {
                packets[a.packet]
                    .event
                    .as_ref()
                    .is_some_and(|e| e.conn == next.id)
            })
        {
            let key = if a.from == *role { a.sent } else { a.arrives };
            let at = marks
                .iter()
                .position(|m| m.role == *role && m.key.cmp(&key).is_ge())
                .unwrap_or(marks.len());
            marks.insert(
                at,
                Mark {
                    role: *role,
                    key,
                    state: t.to,
                    verdict: None,
                },
            );
        }
    }
    // Two changes of one end at one point (ESTABLISHED → FIN_WAIT_1 → CLOSING on one
    // segment): one step apart, in order.
    for n in 1..marks.len() {
        let (before, rest) = marks.split_at_mut(n);
        let m = &mut rest[0];
        if let Some(latest) = before
            .iter()
            .filter(|b| b.role == m.role)
            .map(|b| b.key)
            .max_by(Key::cmp)
            && latest.cmp(&m.key).is_ge()
        {
            m.key = latest.after();
        }
    }
    arrows.extend(lost);
    arrows.sort_by_key(|a| a.sent);
    let folds = fold_bulk(&mut arrows, &marks);
    let brackets = brackets(&arrows, &marks);
    Panel {
        client: first.client,
        server: first.server,
        conns: ids,
        caption: None,
        initial: [Role::Client, Role::Server].map(|r| initial_state(packets, first, r)),
        joined_mid: first.joined_mid,
        arrows,
        marks,
        folds,
        starts,
        brackets,
        finals: [last.ending(Role::Client), last.ending(Role::Server)],
        final_states: [last.state(Role::Client), last.state(Role::Server)],
    }
}

/// A change, before its place is known.
#[derive(Clone, Copy)]
struct Pending {
    role: Role,
    state: State,
    verdict: Option<Verdict>,
    anchor: Anchor,
    /// The kernel's time of it (ms).
    traced: Option<f64>,
    /// Told on the packet at this index, sent by `role`, though the peer's FIN made it.
    crossed: Option<usize>,
}

/// Where the packets alone prove it (no kernel time): a peer's FIN that reached `role` only
/// after `role`'s own segment left arrives just after that segment, whatever order the
/// capture saw them in: the crossing FINs cross.
fn settle_crossings(arrows: &mut [Arrow], pending: &[Pending], by_index: &HashMap<usize, usize>) {
    for p in pending {
        let (Anchor::Arrives(j), None, Some(own)) = (p.anchor, p.traced, p.crossed) else {
            continue;
        };
        let (Some(&a), Some(&o)) = (by_index.get(&j), by_index.get(&own)) else {
            continue;
        };
        if arrows[o].sent.cmp(&arrows[a].arrives).is_ge() {
            arrows[a].arrives = Key {
                sub: 2,
                ..arrows[o].sent
            };
        }
    }
}

/// The kernel's time (ms) of `role`'s change `from → to` nearest `at`, each event used once.
#[allow(clippy::too_many_arguments)]
fn traced_at(
    trace: &[KernelEvent],
    used: &mut [bool],
    conn: &Connection,
    role: Role,
    from: State,
    to: State,
    at: f64,
    ms: &dyn Fn(Duration) -> f64,
) -> Option<f64> {
    let (local, remote) = (conn.addr(role), conn.addr(role.other()));
    let best = trace
        .iter()
        .enumerate()
        .filter(|(n, e)| {
            !used[*n]
                && e.local == local
                && e.remote == remote
                && matches!(e.kind, EventKind::SetState { old, new }
                    // A socket that moves into the time-wait table is traced as CLOSE.
                    if old == from && (new == to || new == State::Closed))
        })
        .min_by(|(_, a), (_, b)| (ms(a.at) - at).abs().total_cmp(&(ms(b.at) - at).abs()))?;
    let t = ms(best.1.at);
    // Not the same change: a kernel time a second away from its segment.
    if (t - at).abs() > 1000.0 {
        return None;
    }
    used[best.0] = true;
    Some(t)
}

/// The peer's latest FIN of connection `conn` before now, as an arrow index.
fn peer_fin(packets: &[Packet], arrows: &[Arrow], conn: usize, me: Role) -> Option<usize> {
    arrows
        .iter()
        .rev()
        .find(|a| {
            a.from == me.other()
                && a.line == Line::Solid
                && packets[a.packet]
                    .event
                    .as_ref()
                    .is_some_and(|e| e.conn == conn)
                && packets[a.packet].segment().is_some_and(|s| s.flags.fin())
        })
        .map(|a| a.packet)
}

/// The packet index of the copy `index` repeats: the sender's last with the same seq.
fn previous_copy(packets: &[Packet], index: usize, seg: &crate::decode::Segment) -> Option<usize> {
    packets[..index].iter().rposition(|p| {
        p.segment()
            .is_some_and(|s| s.src == seg.src && s.dst == seg.dst && s.seq == seg.seq)
    })
}

/// "FIN again, +208 ms (RTO)": what the segment repeats and how long after its last copy.
pub(crate) fn again(
    packets: &[Packet],
    index: usize,
    seg: &crate::decode::Segment,
    from: Role,
) -> String {
    let what = if seg.flags.syn() && seg.flags.ack() {
        "SYN,ACK"
    } else if seg.flags.syn() {
        "SYN"
    } else if seg.flags.fin() {
        "FIN"
    } else if seg.len > 0 {
        "data"
    } else {
        "segment"
    };
    let Some(j) = previous_copy(packets, index, seg) else {
        return format!("{what} again ({from}'s retransmission)");
    };
    let gap = packets[index]
        .frame
        .ts
        .saturating_sub(packets[j].frame.ts)
        .as_secs_f64()
        * 1000.0;
    // At least Linux's TCP_RTO_MIN (200 ms): a timer sent it, not a duplicate ACK. The first
    // copy sent again may be the tail loss probe (RFC 8985 §7), whose timer on a lone segment
    // is as long; the ones after it are the RTO's, backing off.
    let first_again = !packets[j].event.as_ref().is_some_and(|e| e.resent);
    let why = match (gap >= 199.0, first_again) {
        (false, _) => "",
        (true, true) => " (a loss probe or the RTO)",
        (true, false) => " (RTO)",
    };
    format!("{what} again, +{gap:.0} ms{why}")
}

/// "RST: client received RST; server aborts in ESTABLISHED": what it did to the receiver and
/// why the sender sent it, or what the packet's notes say of it (a TIME_WAIT that ignores it).
fn rst_cause(event: &crate::tracker::Event) -> String {
    let mut parts = Vec::new();
    // What it did first (the tooltip has the words in brackets), then why it was sent.
    if let Some(t) = event.transition(event.from.other()) {
        let cause = t.cause.text();
        let cause = cause.split(" (").next().unwrap_or(cause);
        parts.push(format!("{} {cause}", event.from.other()));
    }
    if let Some(t) = event.transition(event.from) {
        parts.push(format!("{} aborts in {}", event.from, t.from));
    } else if event.state(event.from) == State::Closed {
        // No socket: a segment to a CLOSED end draws a RST (RFC 9293 §3.10.7.1).
        parts.push(format!("{} has no socket for it", event.from));
    }
    if parts.is_empty() {
        parts.extend(event.notes().first().map(|note| note.to_string()));
    }
    match parts.is_empty() {
        true => "RST: no change".to_string(),
        false => format!("RST: {}", parts.join("; ")),
    }
}

/// The packet filter's drop that a retransmission tells of (see `gate::GateEvidence`):
/// "sent again because the server's ACK segment sent at 47.1 ms never arrived: …".
pub(crate) fn parse_drop(note: &str) -> Option<(Role, String, f64)> {
    let rest = note.strip_prefix("sent again because the ")?;
    let (role, rest) = rest.split_once("'s ")?;
    let (flags, rest) = rest.split_once(" segment sent at ")?;
    let (at, rest) = rest.split_once(" ms never arrived")?;
    rest.contains("packet filter dropped it")
        .then_some(())
        .and(Some((
            parse_role(role)?,
            flags.to_string(),
            at.parse().ok()?,
        )))
}

/// A drop nothing answered (the bench's note): "teardown dropped the server's ACK (ack 13) at
/// 47.1 ms; …".
fn parse_untold_drop(note: &str) -> Option<(Role, String, f64)> {
    let rest = note.strip_prefix("teardown dropped the ")?;
    let (role, rest) = rest.split_once("'s ")?;
    let (flags, rest) = rest.split_once(" (ack ")?;
    let (_, rest) = rest.split_once(") at ")?;
    let (at, _) = rest.split_once(" ms")?;
    Some((parse_role(role)?, flags.to_string(), at.parse().ok()?))
}

fn parse_role(s: &str) -> Option<Role> {
    match s {
        "client" => Some(Role::Client),
        "server" => Some(Role::Server),
        _ => None,
    }
}

fn lost_arrow(from: Role, flags: &str, at: f64, packet: usize, line: Line, why: &str) -> Arrow {
    let sent = Key {
        ms: at,
        i: packet,
        sub: 0,
    };
    let tag = match line {
        Line::Lost => "lost (packet filter)".to_string(),
        _ => "inferred: never seen".to_string(),
    };
    Arrow {
        from,
        sent,
        arrives: sent.after(),
        line,
        label: flags.to_string(),
        tag: Some(tag),
        rst: false,
        resent: false,
        notes: Vec::new(),
        comment: why.to_string(),
        packet,
    }
}

/// The state a side was in before the connection's first segment.
pub fn initial_state(packets: &[Packet], conn: &Connection, role: Role) -> State {
    packets
        .iter()
        .filter_map(|p| p.event.as_ref())
        .filter(|e| e.conn == conn.id)
        .find_map(|e| e.transition(role).map(|t| t.from))
        .unwrap_or_else(|| conn.state(role))
}

/// Whether an arrow is bulk: data or a bare ACK, changing nothing, saying nothing.
fn plain(a: &Arrow, marks: &[Mark]) -> bool {
    a.line == Line::Solid
        && a.tag.is_none()
        && a.notes.is_empty()
        && !a.label.starts_with("SYN")
        && !a.label.contains("FIN")
        && !a.rst
        && !marks
            .iter()
            .any(|m| m.key.i == a.packet && m.key.ms >= a.sent.ms - 1e-9)
}

/// Runs of more than FOLD_MIN plain segments keep their first and last; the rest is one line.
fn fold_bulk(arrows: &mut Vec<Arrow>, marks: &[Mark]) -> Vec<Fold> {
    let mut folds = Vec::new();
    let mut out: Vec<Arrow> = Vec::with_capacity(arrows.len());
    let mut run: Vec<Arrow> = Vec::new();
    let flush = |run: &mut Vec<Arrow>, out: &mut Vec<Arrow>, folds: &mut Vec<Fold>| {
        if run.len() > FOLD_MIN {
            let last = run.pop();
            let mut inner = run.split_off(1);
            let text = fold_text(inner.iter().map(|a| a.label.as_str()));
            folds.push(Fold {
                key: inner[0].sent,
                text,
            });
            inner.clear();
            out.append(run);
            out.extend(last);
        } else {
            out.append(run);
        }
    };
    for a in arrows.drain(..) {
        if plain(&a, marks) {
            run.push(a);
        } else {
            flush(&mut run, &mut out, &mut folds);
            out.push(a);
        }
    }
    flush(&mut run, &mut out, &mut folds);
    *arrows = out;
    folds
}

/// 2998 → "2,998".
/// What a fold of plain segments says in their place, by their labels: "… 2,998 data
/// segments …", "… 12 ACKs …", or both counted. The SVG and the terminal ladder alike.
pub(crate) fn fold_text<'a>(labels: impl Iterator<Item = &'a str>) -> String {
    let (mut data, mut acks) = (0, 0);
    for label in labels {
        if label.ends_with(" len=0") {
            acks += 1;
        } else {
            data += 1;
        }
    }
    match (data, acks) {
        (d, 0) => format!("… {} data segments …", thousands(d)),
        (0, a) => format!("… {} ACKs …", thousands(a)),
        (d, a) => format!(
            "… {} segments: {} data, {} ACKs …",
            thousands(d + a),
            thousands(d),
            thousands(a)
        ),
    }
}

pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Each TIME_WAIT, from its box to the next change of that end (or the picture's end),
/// started again by each FIN that reaches it.
fn brackets(arrows: &[Arrow], marks: &[Mark]) -> Vec<Bracket> {
    let mut out = Vec::new();
    for m in marks.iter().filter(|m| m.state == State::TimeWait) {
        let end = marks
            .iter()
            .filter(|n| n.role == m.role && n.key.cmp(&m.key).is_gt())
            .map(|n| n.key)
            .min_by(Key::cmp);
        let restarts = arrows
            .iter()
            .filter(|a| {
                a.from == m.role.other()
                    && a.line == Line::Solid
                    && a.label.contains("FIN")
                    && a.arrives.cmp(&m.key).is_gt()
                    && end.is_none_or(|e| a.arrives.cmp(&e).is_lt())
            })
            .map(|a| a.arrives)
            .collect();
        out.push(Bracket {
            role: m.role,
            start: m.key,
            restarts,
            end,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::tests::{captured, every_50us};
    use crate::tracker::tests::crossing_fins;

    /// Both FINs sent before either arrives, as the capture saw them: the server's first, then
    /// the client's, which does not ack it.
    fn crossing() -> (Vec<Packet>, crate::tracker::Tracker) {
        captured(crossing_fins(), every_50us)
    }

    fn fin_arrows(panel: &Panel, packets: &[Packet]) -> Vec<Arrow> {
        panel
            .arrows
            .iter()
            .filter(|a| packets[a.packet].segment().is_some_and(|s| s.flags.fin()))
            .cloned()
            .collect()
    }

    fn marks_of(panel: &Panel, role: Role) -> Vec<(f64, State)> {
        let mut m: Vec<(Key, State)> = panel
            .marks
            .iter()
            .filter(|m| m.role == role)
            .map(|m| (m.key, m.state))
            .collect();
        m.sort_by_key(|(k, _)| *k);
        m.into_iter().map(|(k, s)| (k.ms, s)).collect()
    }

    #[test]
    fn crossing_fins_cross_from_the_packets_alone() {
        let (packets, tracker) = crossing();
        let conn = &tracker.connections()[0];
        let panel = &panels(&packets, &[conn], None, &[], &[])[0];
        let fins = fin_arrows(panel, &packets);
        let (server, client) = (&fins[0], &fins[1]);
        assert_eq!((server.from, client.from), (Role::Server, Role::Client));
        // The server's FIN reaches the client only after the client's own FIN left.
        assert!(server.arrives > client.sent, "{fins:?}");
        assert!(client.arrives > server.sent, "{fins:?}");
        let states: Vec<State> = marks_of(panel, Role::Client).iter().map(|m| m.1).collect();
        assert!(
            states.ends_with(&[State::FinWait1, State::Closing, State::TimeWait]),
            "{states:?}"
        );
    }

    #[test]
    fn the_kernels_times_put_each_end_on_its_own_clock() {
        let (packets, tracker) = crossing();
        let conn = &tracker.connections()[0];
        // Times on the packets' clock: the first packet is at 1 s.
        let at = |us: u64, role: Role, old, new| KernelEvent {
            at: Duration::from_micros(1_000_000 + us),
            local: conn.addr(role),
            remote: conn.addr(role.other()),
            kind: EventKind::SetState { old, new },
        };
        let trace = [
            at(300, Role::Server, State::Established, State::FinWait1),
            at(320, Role::Client, State::Established, State::FinWait1),
            at(450, Role::Server, State::FinWait1, State::Closing),
            at(470, Role::Client, State::FinWait1, State::Closing),
        ];
        let panel = &panels(&packets, &[conn], None, &trace, &[])[0];
        let fins = fin_arrows(panel, &packets);
        let ms = |a: &Arrow| (a.sent.ms, a.arrives.ms);
        let close =
            |(x, y): (f64, f64), (a, b): (f64, f64)| (x - a).abs() < 1e-6 && (y - b).abs() < 1e-6;
        assert!(close(ms(&fins[0]), (0.300, 0.470)), "{fins:?}");
        assert!(close(ms(&fins[1]), (0.320, 0.450)), "{fins:?}");
        let client = marks_of(panel, Role::Client);
        assert!(
            client
                .iter()
                .any(|&(t, s)| s == State::FinWait1 && (t - 0.320).abs() < 1e-6),
            "{client:?}"
        );
        assert!(
            client
                .iter()
                .any(|&(t, s)| s == State::Closing && (t - 0.470).abs() < 1e-6),
            "{client:?}"
        );
        // The server's data segments left before its FIN did, whatever the capture says.
        let server_sends: Vec<Key> = panel
            .arrows
            .iter()
            .filter(|a| a.from == Role::Server)
            .map(|a| a.sent)
            .collect();
        assert!(
            server_sends.windows(2).all(|w| w[0] < w[1]),
            "{server_sends:?}"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(2998), "2,998");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn the_packet_filters_drops_are_read_back() {
        assert_eq!(
            parse_drop(
                "sent again because the server's ACK segment sent at 47.1 ms never arrived: \
                 teardown's packet filter dropped it (so the capture never saw it either)"
            ),
            Some((Role::Server, "ACK".to_string(), 47.1))
        );
        assert_eq!(
            parse_untold_drop(
                "teardown dropped the client's FIN,ACK (ack 13) at 885.2 ms; nothing was sent \
                 again after it"
            ),
            Some((Role::Client, "FIN,ACK".to_string(), 885.2))
        );
        assert_eq!(parse_drop("retransmission of the previous segment"), None);
    }
}
