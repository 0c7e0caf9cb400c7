//! The kernel's transitions set beside teardown's inference: each traced state change is
//! placed on the segment that caused it, compared with what teardown inferred there, and
//! every difference is either explained by a known Linux behaviour or called a MISMATCH.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::KernelSocket;
use super::tracefs::{EventKind, KernelEvent};
use crate::annotate::Packet;
pub use crate::evidence::{Note, Verdict};
use crate::tcp::{SeqNum, State};
use crate::tracker::{Connection, Role};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agreement {
    /// Notes per packet, indexed like the packets.
    pub per_packet: Vec<Vec<Note>>,
    /// Notes with no packet (the final socket table).
    pub section: Vec<(Verdict, String)>,
    /// Kernel state changes of the connection's two sockets.
    pub seen: usize,
    /// ... placed on a segment where teardown inferred the same change.
    pub matched: usize,
    /// Differences: kernel changes teardown did not infer, and the reverse.
    pub mismatched: usize,
    /// Inferred changes the kernel does not trace, for a documented reason.
    pub explained: usize,
    /// Kernel changes with no segment (timers).
    pub unplaced: usize,
    /// Retransmissions in the capture that the kernel traced as such.
    pub retransmissions: usize,
}

impl Agreement {
    pub fn ok(&self) -> bool {
        self.mismatched == 0
    }

    pub fn summary(&self) -> String {
        use crate::output::style::plural;
        let mut s = format!(
            "kernel check: {} traced, {} matched to their segment, {} mismatched",
            plural(self.seen, "state change", "state changes"),
            self.matched,
            self.mismatched
        );
        if self.explained > 0 {
            let _ = write!(
                s,
                ", {} the kernel does not trace (explained)",
                plural(self.explained, "inferred change", "inferred changes")
            );
        }
        if self.unplaced > 0 {
            let _ = write!(s, ", {} without a segment (timers)", self.unplaced);
        }
        if self.retransmissions > 0 {
            let _ = write!(
                s,
                "; {} traced by tcp_retransmit_skb",
                plural(self.retransmissions, "retransmission", "retransmissions")
            );
        }
        s
    }
}

/// What a segment must be to cause a kernel change of endpoint R, and who sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Syn,
    Fin,
    Rst,
    /// An ACK of R's SYN (the handshake's last segment).
    AckOfSyn,
    /// An ACK of R's FIN.
    AckOfFin,
    /// An ACK of R's FIN, or a RST in its place (the peer's socket was gone: RFC 9293
    /// §3.10.7.1).
    AckOfFinOrRst,
    /// R's peer's FIN, or an ACK of R's FIN (the move to the time-wait table).
    FinOrAckOfFin,
}

#[derive(Clone, Copy, Debug)]
enum Cause {
    /// The endpoint's own call (connect, close) makes it send this.
    Sent(Need),
    /// Receiving this makes the kernel change state.
    Received(Need),
    /// Sending or receiving this.
    Either(Need),
}

/// The segment behind each kernel change (RFC 9293 §3.10 event processing, as Linux does it).
fn cause(old: State, new: State) -> Option<Cause> {
    use State::*;
    Some(match (old, new) {
        (Closed, SynSent) => Cause::Sent(Need::Syn),
        (Established | SynReceived, FinWait1) | (CloseWait, LastAck) => Cause::Sent(Need::Fin),
        (SynSent, Established) => Cause::Received(Need::Syn),
        // Linux creates the connection's socket when the handshake's ACK arrives.
        (Listen, SynReceived) | (SynReceived, Established) => Cause::Received(Need::AckOfSyn),
        (Established, CloseWait) | (FinWait1, Closing) => Cause::Received(Need::Fin),
        (FinWait1, FinWait2) => Cause::Received(Need::AckOfFin),
        (Closing, Closed) | (LastAck, Closed) => Cause::Received(Need::AckOfFinOrRst),
        // The move to the time-wait table: at the peer's FIN, or (orphaned) at its ACK.
        (FinWait2, Closed) => Cause::Received(Need::FinOrAckOfFin),
        // A reset: received, or sent by the endpoint itself (SO_LINGER 0, unread data).
        (_, Closed) => Cause::Either(Need::Rst),
        _ => return None,
    })
}

/// A kernel change follows its segment within microseconds, but the trace's clock and the
/// packets' agree only to a few: a segment may seem to come this much after its effect.
const NEAR_US: u128 = 5_000;
/// How far a segment the endpoint sent may seem to come before the call that sent it.
const SLACK_US: u128 = 50;
/// A received segment older than this did not cause the change: a timer did.
const LATE_US: u128 = 1_000_000;

/// Whether a chain ending in CLOSE is Linux handing the socket to its time-wait table.
fn time_wait_handoff(old: State, new: State) -> bool {
    new == State::Closed && matches!(old, State::FinWait1 | State::FinWait2 | State::Closing)
}

/// Facts of the wire the placement needs: each side's SYN and FIN sequence numbers.
struct Wire<'a> {
    packets: &'a [Packet],
    /// [client, server]: the sequence number of its SYN and of its FIN.
    syn: [Option<SeqNum>; 2],
    fin: [Option<SeqNum>; 2],
}

impl<'a> Wire<'a> {
    fn new(packets: &'a [Packet], ours: &[usize]) -> Wire<'a> {
        let mut wire = Wire {
            packets,
            syn: [None; 2],
            fin: [None; 2],
        };
        for &i in ours {
            let (Some(seg), Some(e)) = (packets[i].segment(), &packets[i].event) else {
                continue;
            };
            let side = idx(e.from);
            if seg.flags.syn() && wire.syn[side].is_none() {
                wire.syn[side] = Some(seg.seq);
            }
            if seg.flags.fin() && wire.fin[side].is_none() {
                wire.fin[side] = Some(seg.seq + seg.seg().seq_space().saturating_sub(1));
            }
        }
        wire
    }

    fn acks(&self, i: usize, target: Option<SeqNum>) -> bool {
        match (self.packets[i].segment(), target) {
            (Some(seg), Some(t)) => seg.flags.ack() && !seg.flags.rst() && seg.ack == t + 1,
            _ => false,
        }
    }

    /// Whether packet `i` is the kind of segment `need` names, for endpoint `role`.
    fn fits(&self, i: usize, role: Role, need: Need) -> bool {
        let Some(seg) = self.packets[i].segment() else {
            return false;
        };
        let f = seg.flags;
        match need {
            Need::Syn => f.syn(),
            Need::Fin => f.fin(),
            Need::Rst => f.rst(),
            Need::AckOfSyn => !f.syn() && self.acks(i, self.syn[idx(role)]),
            Need::AckOfFin => self.acks(i, self.fin[idx(role)]),
            Need::AckOfFinOrRst => f.rst() || self.acks(i, self.fin[idx(role)]),
            Need::FinOrAckOfFin => f.fin() || self.acks(i, self.fin[idx(role)]),
        }
    }
}

fn micros(t: Duration) -> u128 {
    t.as_micros()
}

struct Chain {
    packet: usize,
    role: Role,
    states: Vec<State>,
}

/// Sets the kernel's `events` beside the inference for `conn` among `packets`; `table` is
/// the kernel's socket table read after the capture.
pub fn agree(
    packets: &[Packet],
    conn: &Connection,
    events: &[KernelEvent],
    table: Option<&[KernelSocket]>,
) -> Agreement {
    let mut out = Agreement {
        per_packet: vec![Vec::new(); packets.len()],
        ..Agreement::default()
    };
    let ours: Vec<usize> = (0..packets.len())
        .filter(|&i| matches!(&packets[i].event, Some(e) if e.conn == conn.id))
        .collect();
    let sender = |i: usize| packets[i].event.as_ref().map(|e| e.from);
    let flags = |i: usize| packets[i].segment().map(|s| s.flags).unwrap_or_default();
    let at = |i: usize| micros(packets[i].frame.ts);
    let wire = Wire::new(packets, &ours);
    // connect() on a socket without a port yet (IP_BIND_ADDRESS_NO_PORT, or no bind) is
    // traced with port 0. The trace is global: such an event is this client's only when no
    // SYN_SENT carries its port, and only the last one before its SYN.
    let opens = |e: &KernelEvent| {
        matches!(
            e.kind,
            EventKind::SetState {
                old: State::Closed,
                new: State::SynSent
            }
        )
    };
    let port_known = events.iter().any(|e| e.local == conn.client && opens(e));
    let syn_at = ours
        .iter()
        .find(|&&i| sender(i) == Some(Role::Client) && flags(i).syn() && !flags(i).ack())
        .map(|&i| at(i));
    let zero_pick = syn_at.filter(|_| !port_known).and_then(|t| {
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                opens(e)
                    && e.local.port() == 0
                    && e.local.ip() == conn.client.ip()
                    && e.remote == conn.server
                    && micros(e.at) <= t + SLACK_US
                    && micros(e.at) + LATE_US >= t
            })
            .map(|(k, _)| k)
            .next_back()
    });

    // Place every state change of the connection's two sockets on its segment.
    let mut chains: Vec<Chain> = Vec::new();
    // Per side: the last placed change (its time, its new state, its packet).
    let mut last_placed: [Option<(u128, State, usize)>; 2] = [None, None];
    // Per side: when the kernel changed it for sending its FIN (FIN_WAIT1 or LAST_ACK).
    let mut peer_sent_fin: [Option<u128>; 2] = [None, None];
    // This connection's connect(): the last SYN_SENT of its client up to its SYN.
    let begun = syn_at.and_then(|t| {
        events
            .iter()
            .enumerate()
            .filter(|(k, e)| {
                opens(e)
                    && (e.local == conn.client || zero_pick == Some(*k))
                    && micros(e.at) <= t + SLACK_US
            })
            .map(|(_, e)| micros(e.at))
            .max()
    });
    for (k, ev) in events.iter().enumerate() {
        let EventKind::SetState { old, new } = ev.kind else {
            continue;
        };
        // An earlier incarnation of the same 4-tuple (a port taken over from TIME_WAIT) is
        // another connection: its changes came before this one's connect().
        if begun.is_some_and(|b| micros(ev.at) < b) {
            continue;
        }
        let Some(role) = role_of(conn, ev.local, ev.remote, zero_pick == Some(k)) else {
            continue;
        };
        out.seen += 1;
        let t = micros(ev.at);
        // The endpoint's own call comes before its segment (which may be held or lost and
        // come much later); a received segment comes a few microseconds before its effect,
        // give or take the two clocks' disagreement.
        let sent = |need: Need| {
            ours.iter().copied().find(|&i| {
                sender(i) == Some(role) && at(i) + SLACK_US >= t && wire.fits(i, role, need)
            })
        };
        // Each of these changes happens once per connection: its cause is the first segment
        // of the right kind (the handshake's ACK, not the data that acks the SYN again), as
        // long as it did not come after the change, nor so long before that a timer did it.
        let received = |need: Need| {
            ours.iter()
                .copied()
                .find(|&i| {
                    sender(i) == Some(role.other())
                        && wire.fits(i, role, need)
                        && at(i) <= t + NEAR_US
                })
                .filter(|&i| t <= at(i) + LATE_US)
        };
        // The move to the time-wait table from FIN_WAIT2: a socket still held by its program
        // makes it at the peer's FIN, which the trace shows the peer sending first (one clock,
        // the kernel's); an orphan makes it at the ACK of its own FIN, before any FIN of the
        // peer, together with its FIN_WAIT1 → FIN_WAIT2.
        let peer_fin_before = peer_sent_fin[idx(role.other())].is_some_and(|tf| tf <= t);
        let placed = match cause(old, new) {
            Some(Cause::Received(Need::FinOrAckOfFin)) if peer_fin_before => {
                received(Need::Fin).or_else(|| received(Need::Rst))
            }
            Some(Cause::Received(Need::FinOrAckOfFin)) => match last_placed[idx(role)] {
                Some((_, State::FinWait2, packet)) => Some(packet),
                _ => received(Need::AckOfFin).or_else(|| received(Need::Rst)),
            },
            Some(Cause::Sent(need)) => sent(need),
            // A socket changes in order: a cause captured before the socket's previous change
            // (crossing FINs, seen from the other end of the wire) acts after it.
            Some(Cause::Received(need)) => received(need).map(|i| match last_placed[idx(role)] {
                Some((_, _, p)) if p > i => p,
                _ => i,
            }),
            Some(Cause::Either(need)) => {
                // Whichever reset is nearer in time.
                match (sent(need), received(need)) {
                    (Some(a), Some(b)) => Some(if at(a).abs_diff(t) <= at(b).abs_diff(t) {
                        a
                    } else {
                        b
                    }),
                    (a, b) => a.or(b),
                }
            }
            None => None,
        };
        if let Some(packet) = placed {
            last_placed[idx(role)] = Some((t, new, packet));
        }
        if matches!(new, State::FinWait1 | State::LastAck) && peer_sent_fin[idx(role)].is_none() {
            peer_sent_fin[idx(role)] = Some(t);
        }
        match placed {
            // Another socket's change may come between two of one chain (crossing FINs).
            Some(packet) => match chains
                .iter_mut()
                .rev()
                .find(|c| c.packet == packet && c.role == role && c.states.last() == Some(&old))
            {
                Some(c) => c.states.push(new),
                None => chains.push(Chain {
                    packet,
                    role,
                    states: vec![old, new],
                }),
            },
            None => {
                // A timer, or a change this table does not know: say it where it happened.
                out.unplaced += 1;
                let nearest = ours.iter().copied().min_by_key(|&i| at(i).abs_diff(t));
                let since = ours
                    .first()
                    .map(|&i| t as i128 - at(i) as i128)
                    .unwrap_or(0);
                let text = format!(
                    "kernel: {role} {} → {} at {:+.3} ms after the first segment (no segment \
                     caused it: a timer)",
                    kname(old),
                    kname(new),
                    since as f64 / 1000.0
                );
                match nearest {
                    Some(i) => out.per_packet[i].push(Note {
                        role,
                        inferred: None,
                        verdict: Verdict::Info,
                        text,
                    }),
                    None => out.section.push((Verdict::Info, text)),
                }
            }
        }
    }

    // Retransmissions: the kernel's tcp_retransmit_skb beside the segment the capture calls
    // one (the first such segment of that side, sent after the event's time).
    let mut confirmed: Vec<usize> = Vec::new();
    for ev in events.iter().filter(|e| e.kind == EventKind::Retransmit) {
        let Some(role) = role_of(conn, ev.local, ev.remote, false) else {
            continue;
        };
        let t = micros(ev.at);
        let again = ours.iter().copied().find(|&i| {
            sender(i) == Some(role)
                && at(i) + SLACK_US >= t
                && !confirmed.contains(&i)
                && packets[i].event.as_ref().is_some_and(|e| e.resent)
        });
        if let Some(i) = again {
            confirmed.push(i);
            out.retransmissions += 1;
            out.per_packet[i].push(Note {
                role,
                inferred: None,
                verdict: Verdict::Agrees,
                text: "kernel: a retransmission (tcp:tcp_retransmit_skb)".to_string(),
            });
        }
    }

    // Compare each chain with the inference on its packet.
    let mut in_time_wait_table = [false, false];
    let mut covered: Vec<(usize, Role)> = Vec::new();
    for chain in &chains {
        let first = chain.states[0];
        let last_old = chain.states[chain.states.len() - 2];
        let last = *chain.states.last().unwrap_or(&first);
        let handoff = time_wait_handoff(last_old, last);
        let end = if handoff {
            in_time_wait_table[idx(chain.role)] = true;
            // Orphaned in FIN_WAIT_2 at the ACK of its FIN; TIME_WAIT after the peer's FIN
            // (or, from CLOSING, after the ACK of its own).
            if last_old == State::FinWait2 && !flags(chain.packet).fin() {
                State::FinWait2
            } else {
                State::TimeWait
            }
        } else {
            last
        };
        let shown = chain
            .states
            .iter()
            .map(|s| kname(*s))
            .collect::<Vec<_>>()
            .join(" → ");
        // Teardown's changes of this endpoint on the segment, end to end (two when the FINs
        // crossed), against the kernel's chain; the note goes on the last of them.
        let event = packets[chain.packet].event.as_ref();
        let ends = event
            .map(|e| e.path(chain.role))
            .and_then(|p| Some((*p.first()?, *p.last()?)));
        let inferred = event
            .and_then(|e| e.last_transition(chain.role))
            .map(|t| (t.from, t.to));
        let events_in_chain = chain.states.len() - 1;
        covered.push((chain.packet, chain.role));
        let note = match ends {
            Some((from, to))
                if to == end
                    && (from == first
                        || (from == State::SynReceived && first == State::Listen)) =>
            {
                out.matched += events_in_chain;
                let mut text = if events_in_chain == 1 && !handoff {
                    "kernel agrees".to_string()
                } else {
                    format!("kernel agrees: {shown}")
                };
                if first == State::Listen {
                    text.push_str(
                        ", the connection's socket is created when the handshake's ACK arrives",
                    );
                }
                if handoff {
                    text.push_str(&format!(
                        ", then it lives on in the kernel's time-wait table as {end}"
                    ));
                }
                Note {
                    role: chain.role,
                    inferred,
                    verdict: Verdict::Agrees,
                    text,
                }
            }
            _ => {
                out.mismatched += 1;
                Note {
                    role: chain.role,
                    inferred,
                    verdict: Verdict::Mismatch,
                    text: match inferred {
                        Some(_) => format!("MISMATCH: the kernel traced {} {shown}", chain.role),
                        None => format!(
                            "MISMATCH: the kernel traced {} {shown}; teardown inferred no change",
                            chain.role
                        ),
                    },
                }
            }
        };
        out.per_packet[chain.packet].push(note);
    }

    // Inferred changes the kernel did not trace.
    for &i in &ours {
        let Some(event) = &packets[i].event else {
            continue;
        };
        for (role, t) in &event.transitions {
            if covered.contains(&(i, *role)) {
                continue;
            }
            let (verdict, text) = if t.from == State::Listen && t.to == State::SynReceived {
                (
                    Verdict::Explained,
                    "kernel: not traced, Linux keeps a half-open connection as a request socket \
                     of the listener until the handshake's ACK"
                        .to_string(),
                )
            } else if t.to == State::Closed && in_time_wait_table[idx(*role)] {
                (
                    Verdict::Explained,
                    "kernel: not traced, a socket in the kernel's time-wait table ends without a \
                     tracepoint"
                        .to_string(),
                )
            } else if t.to == State::TimeWait && in_time_wait_table[idx(*role)] {
                let mut text = "kernel: not traced, the socket already sits in the kernel's \
                                time-wait table, which moves to TIME_WAIT without a tracepoint"
                    .to_string();
                if let Some(s) =
                    table.and_then(|tb| find(tb, conn.addr(*role), conn.addr(role.other())))
                {
                    let _ = write!(text, "; the socket table shows {}", s.state);
                }
                (Verdict::Explained, text)
            } else {
                (
                    Verdict::Mismatch,
                    format!("MISMATCH: the kernel traced no change for the {role} here"),
                )
            };
            match verdict {
                Verdict::Mismatch => out.mismatched += 1,
                _ => out.explained += 1,
            }
            out.per_packet[i].push(Note {
                role: *role,
                inferred: Some((t.from, t.to)),
                verdict,
                text,
            });
        }
    }

    // The final states, from the kernel's socket table.
    if let Some(table) = table {
        for role in [Role::Client, Role::Server] {
            let kernel = find(table, conn.addr(role), conn.addr(role.other()));
            let kernel_state = kernel.map(|s| s.rfc_state().unwrap_or(State::Closed));
            let inferred = conn.state(role);
            let said = match kernel {
                Some(s) => format!("{} {}", s.state, timer_text(s))
                    .trim_end()
                    .to_string(),
                None => "no socket (CLOSED)".to_string(),
            };
            let same = kernel_state.unwrap_or(State::Closed) == inferred;
            if same {
                out.section.push((
                    Verdict::Agrees,
                    format!("socket table: {role} {said}: agrees"),
                ));
            } else {
                out.mismatched += 1;
                out.section.push((
                    Verdict::Mismatch,
                    format!("MISMATCH: socket table: {role} {said}; teardown inferred {inferred}"),
                ));
            }
        }
    }
    out
}

fn timer_text(s: &KernelSocket) -> String {
    match &s.timer {
        Some(t) => format!("({t})"),
        None => String::new(),
    }
    .trim()
    .to_string()
}

fn find(table: &[KernelSocket], local: SocketAddr, peer: SocketAddr) -> Option<&KernelSocket> {
    table.iter().find(|s| s.local == local && s.peer == peer)
}

fn idx(role: Role) -> usize {
    match role {
        Role::Client => 0,
        Role::Server => 1,
    }
}

/// The kernel's spelling: `FIN_WAIT1`, `SYN_RECV`, `CLOSE`.
fn kname(s: State) -> &'static str {
    match s {
        State::Closed => "CLOSE",
        State::SynReceived => "SYN_RECV",
        State::FinWait1 => "FIN_WAIT1",
        State::FinWait2 => "FIN_WAIT2",
        other => other.name(),
    }
}

/// The connection's endpoint a traced socket is; the SYN_SENT event may come before the
/// client has its port (sport 0).
/// `zero_ours`: this event with port 0 is the client's connect() (see `zero_pick`).
fn role_of(
    conn: &Connection,
    local: SocketAddr,
    remote: SocketAddr,
    zero_ours: bool,
) -> Option<Role> {
    if local == conn.client && remote == conn.server {
        Some(Role::Client)
    } else if local == conn.server && remote == conn.client {
        Some(Role::Server)
    } else if zero_ours
        && local.port() == 0
        && local.ip() == conn.client.ip()
        && remote == conn.server
    {
        Some(Role::Client)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
