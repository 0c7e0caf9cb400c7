//! The kernel's transitions set beside teardown's inference: each traced state change is
//! placed on the segment that caused it, compared with what teardown inferred there, and
//! every difference is either explained by a known Linux behaviour or called a MISMATCH.
//! `Checker` does it as the capture goes, for every connection: the annotator hands it each
//! packet as it leaves, once the trace has been read past the packet's time.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::KernelSocket;
use super::tracefs::{EventKind, KernelEvent};
use crate::annotate::Packet;
use crate::decode::Segment;
pub use crate::evidence::{Note, Verdict};
use crate::frame::Frame;
use crate::tcp::{SeqNum, State};
use crate::tracker::{Connection, Event, Role};

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
    /// The same counts for each connection, by the tracker's id (no notes in them).
    pub by_conn: Vec<(usize, Agreement)>,
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

/// The two ends of one connection, as the trace names its sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    pub id: usize,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

impl Ends {
    pub fn of(conn: &Connection) -> Ends {
        Ends {
            id: conn.id,
            client: conn.client,
            server: conn.server,
        }
    }
}

/// What one note adds to the counts of an `Agreement`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    seen: usize,
    matched: usize,
    mismatched: usize,
    explained: usize,
    unplaced: usize,
    retransmissions: usize,
}

impl Agreement {
    fn add(&mut self, t: Tally) {
        self.seen += t.seen;
        self.matched += t.matched;
        self.mismatched += t.mismatched;
        self.explained += t.explained;
        self.unplaced += t.unplaced;
        self.retransmissions += t.retransmissions;
    }
}

/// The kernel's changes placed on one connection's packets (all of them, or those so far).
struct Placed {
    per_packet: Vec<Vec<(Note, Tally)>>,
    /// Changes no segment caused (timers): the event's index in the events given, its note.
    timers: Vec<(usize, Note)>,
}

/// Places the kernel's `events` on the packets of one connection (`packets` holds only that
/// connection's, in capture order) and sets each change beside the inference there.
///
/// With `complete` false the packets are those captured so far: a change whose segment may
/// still come (a call's FIN held back or lost, or a trace ahead of the packets) is left for
/// later, and the endpoint's later changes with it, since a socket changes in order.
fn place(packets: &[Packet], ends: Ends, events: &[KernelEvent], complete: bool) -> Placed {
    let mut out = Placed {
        per_packet: vec![Vec::new(); packets.len()],
        timers: Vec::new(),
    };
    let ours: Vec<usize> = (0..packets.len()).collect();
    let sender = |i: usize| packets[i].event.as_ref().map(|e| e.from);
    let flags = |i: usize| packets[i].segment().map(|s| s.flags).unwrap_or_default();
    let at = |i: usize| micros(packets[i].frame.ts);
    let last_at = ours.last().map(|&i| at(i)).unwrap_or(0);
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
    let port_known = events.iter().any(|e| e.local == ends.client && opens(e));
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
                    && e.local.ip() == ends.client.ip()
                    && e.remote == ends.server
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
    // Per side: a change is left for later, and so are the ones after it.
    let mut blocked = [false, false];
    // This connection's connect(): the last SYN_SENT of its client up to its SYN.
    let begun = syn_at.and_then(|t| {
        events
            .iter()
            .enumerate()
            .filter(|(k, e)| {
                opens(e)
                    && (e.local == ends.client || zero_pick == Some(*k))
                    && micros(e.at) <= t + SLACK_US
            })
            .map(|(_, e)| micros(e.at))
            .max()
    });
    for (k, ev) in events.iter().enumerate() {
        let EventKind::SetState { old, new } = ev.kind else {
            continue;
        };
        // close() after shutdown(SHUT_WR) sets FIN_WAIT1 again: traced, but no change.
        if old == new {
            continue;
        }
        // An earlier incarnation of the same 4-tuple (a port taken over from TIME_WAIT) is
        // another connection: its changes came before this one's connect().
        if begun.is_some_and(|b| micros(ev.at) < b) {
            continue;
        }
        let Some(role) = role_of(ends, ev.local, ev.remote, zero_pick == Some(k)) else {
            continue;
        };
        let t = micros(ev.at);
        // When each end's close() sent its FIN is a fact of the trace alone.
        if matches!(new, State::FinWait1 | State::LastAck) && peer_sent_fin[idx(role)].is_none() {
            peer_sent_fin[idx(role)] = Some(t);
        }
        if blocked[idx(role)] {
            continue;
        }
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
        let how = cause(old, new);
        let placed = match how {
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
        if placed.is_none() && !complete {
            // Its own segment is still to come (held back, or lost and sent again): the
            // socket's later changes come after it, so they wait with it.
            if matches!(how, Some(Cause::Sent(_))) {
                blocked[idx(role)] = true;
                continue;
            }
            // The segment that caused it may not be captured yet.
            if t + NEAR_US > last_at {
                continue;
            }
        }
        if let Some(packet) = placed {
            last_placed[idx(role)] = Some((t, new, packet));
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
                // A timer, or a change this table does not know: said at the first segment
                // after it (or, with none, beside the capture).
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
                out.timers.push((
                    k,
                    Note {
                        role,
                        inferred: None,
                        verdict: Verdict::Info,
                        text,
                    },
                ));
            }
        }
    }

    // Retransmissions: the kernel's tcp_retransmit_skb beside the segment the capture calls
    // one (the first such segment of that side, sent after the event's time).
    let mut confirmed: Vec<usize> = Vec::new();
    for ev in events.iter().filter(|e| e.kind == EventKind::Retransmit) {
        let Some(role) = role_of(ends, ev.local, ev.remote, false) else {
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
            out.per_packet[i].push((
                Note {
                    role,
                    inferred: None,
                    verdict: Verdict::Agrees,
                    text: "kernel: a retransmission (tcp:tcp_retransmit_skb)".to_string(),
                },
                Tally {
                    retransmissions: 1,
                    ..Tally::default()
                },
            ));
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
                (
                    Note {
                        role: chain.role,
                        inferred,
                        verdict: Verdict::Agrees,
                        text,
                    },
                    Tally {
                        seen: events_in_chain,
                        matched: events_in_chain,
                        ..Tally::default()
                    },
                )
            }
            _ => (
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
                },
                Tally {
                    seen: events_in_chain,
                    mismatched: 1,
                    ..Tally::default()
                },
            ),
        };
        out.per_packet[chain.packet].push(note);
    }

    // Inferred changes the kernel did not trace. A change left for later cannot land on a
    // packet already here: that packet did not fit it, or a socket's order puts it after.
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
                (
                    Verdict::Explained,
                    "kernel: not traced, the socket already sits in the kernel's time-wait \
                     table, which moves to TIME_WAIT without a tracepoint"
                        .to_string(),
                )
            } else {
                (
                    Verdict::Mismatch,
                    format!("MISMATCH: the kernel traced no change for the {role} here"),
                )
            };
            let tally = match verdict {
                Verdict::Mismatch => Tally {
                    mismatched: 1,
                    ..Tally::default()
                },
                _ => Tally {
                    explained: 1,
                    ..Tally::default()
                },
            };
            out.per_packet[i].push((
                Note {
                    role: *role,
                    inferred: Some((t.from, t.to)),
                    verdict,
                    text,
                },
                tally,
            ));
        }
    }
    out
}

/// The kernel's word as an input to the annotator, for every connection: the trace comes in
/// as it is read, each packet as it leaves the annotator, and a packet gets its notes once
/// the trace has been read past its time (`settled`), before its comment is written.
#[derive(Default)]
pub struct Checker {
    /// The trace so far, in time order.
    events: Vec<KernelEvent>,
    /// Its events by the pair of addresses they name (in order), and the connect() calls
    /// traced before their socket had a port, by (address, peer): a connection's events found
    /// without a pass over the whole trace.
    by_pair: HashMap<(SocketAddr, SocketAddr), Vec<usize>>,
    portless: HashMap<(std::net::IpAddr, SocketAddr), Vec<usize>>,
    /// The connections on each 4-tuple, oldest first: (first segment's time, id).
    incarnations: HashMap<(SocketAddr, SocketAddr), Vec<(Duration, usize)>>,
    /// The trace holds every change up to this time.
    through: Duration,
    /// Each connection's packets so far.
    conns: HashMap<usize, Log>,
    /// Timer changes already told: (connection, event index).
    told: HashSet<(usize, usize)>,
    /// The counts and the section's notes so far.
    agreement: Agreement,
}

struct Log {
    ends: Ends,
    first_at: Duration,
    /// The connection's segments a kernel change can be placed on (see `Log::keeps`), so
    /// that a long transfer's data does not make every placement longer.
    packets: Vec<Packet>,
    /// The notes each of them left with.
    given: Vec<Vec<Note>>,
    /// [client, server]: the sequence number its SYN, and its FIN, acknowledges.
    syn_end: [Option<SeqNum>; 2],
    fin_end: [Option<SeqNum>; 2],
    /// [client, server]: whether the first segment that acks the other side's SYN, and its
    /// FIN, was kept (a change is placed on the first; the data after it acks them again).
    acked: [[bool; 2]; 2],
}

impl Log {
    /// Whether a kernel change may be placed on this segment, or a note said of it: a SYN,
    /// FIN or RST, a retransmission, an inferred change, or an ACK of the other side's SYN or
    /// FIN (what `Wire::fits` looks for). Its SYN and FIN are noted on the way.
    fn keeps(&mut self, seg: &Segment, event: &Event) -> bool {
        let side = idx(event.from);
        let f = seg.flags;
        if f.syn() && self.syn_end[side].is_none() {
            self.syn_end[side] = Some(seg.seq + 1);
        }
        if f.fin() && self.fin_end[side].is_none() {
            self.fin_end[side] = Some(seg.seq + seg.seg().seq_space());
        }
        let other = 1 - side;
        let mut first_ack = false;
        for (k, end) in [self.syn_end[other], self.fin_end[other]]
            .into_iter()
            .enumerate()
        {
            if f.ack() && end == Some(seg.ack) && !self.acked[side][k] {
                self.acked[side][k] = true;
                first_ack = true;
            }
        }
        f.syn() || f.fin() || f.rst() || event.resent || !event.transitions.is_empty() || first_ack
    }
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    /// The whole trace read so far, complete up to `through` (when it was read).
    pub fn set_trace(&mut self, mut events: Vec<KernelEvent>, through: Duration) {
        events.sort_by_key(|e| e.at);
        self.by_pair.clear();
        self.portless.clear();
        for (k, e) in events.iter().enumerate() {
            if e.local.port() == 0 {
                self.portless
                    .entry((e.local.ip(), e.remote))
                    .or_default()
                    .push(k);
            } else {
                self.by_pair
                    .entry(pair(e.local, e.remote))
                    .or_default()
                    .push(k);
            }
        }
        self.events = events;
        self.through = self.through.max(through);
    }

    pub fn events(&self) -> &[KernelEvent] {
        &self.events
    }

    /// Whether the trace read so far holds every change a segment captured at `at` can
    /// have caused.
    pub fn settled(&self, at: Duration) -> bool {
        self.through >= Checker::needs(at)
    }

    /// How far the trace must have been read for a segment captured at `at`.
    pub fn needs(at: Duration) -> Duration {
        at + Duration::from_micros(NEAR_US as u64)
    }

    /// The events of one connection's sockets (either end, or its connect() before it had
    /// a port) up to `upto`, without those of a later incarnation of its 4-tuple, with
    /// their indices in the whole trace.
    fn events_of(
        &self,
        ends: Ends,
        first_at: Duration,
        upto: Option<u128>,
    ) -> (Vec<usize>, Vec<KernelEvent>) {
        // The next incarnation's connect() comes just before its SYN.
        let next = self
            .incarnations
            .get(&(ends.client, ends.server))
            .and_then(|all| all.iter().find(|(at, id)| *id != ends.id && *at > first_at))
            .map(|(at, _)| micros(*at));
        let mut ks: Vec<usize> = self
            .by_pair
            .get(&pair(ends.client, ends.server))
            .into_iter()
            .chain(self.portless.get(&(ends.client.ip(), ends.server)))
            .flatten()
            .copied()
            .filter(|&k| {
                let t = micros(self.events[k].at);
                upto.is_none_or(|u| t <= u) && next.is_none_or(|n| t + 1_000 < n)
            })
            .collect();
        // In the trace's order, as `place` reads them.
        ks.sort_unstable();
        let events = ks.iter().map(|&k| self.events[k].clone()).collect();
        (ks, events)
    }

    /// The kernel's notes on `packet` as it leaves the annotator.
    pub fn release(&mut self, packet: &Packet) -> Vec<Note> {
        match (packet.segment(), &packet.event) {
            (Some(seg), Some(event)) => self.release_segment(seg, event, packet.frame.ts),
            _ => Vec::new(),
        }
    }

    /// `release`, of a segment, its event and its capture time.
    pub fn release_segment(&mut self, seg: &Segment, event: &Event, at: Duration) -> Vec<Note> {
        let (client, server) = match event.from {
            Role::Client => (seg.src, seg.dst),
            Role::Server => (seg.dst, seg.src),
        };
        let ends = Ends {
            id: event.conn,
            client,
            server,
        };
        let first_at = match self.conns.get(&ends.id) {
            Some(l) => l.first_at,
            None => {
                self.incarnations
                    .entry((client, server))
                    .or_default()
                    .push((at, ends.id));
                self.conns.insert(
                    ends.id,
                    Log {
                        ends,
                        first_at: at,
                        packets: Vec::new(),
                        given: Vec::new(),
                        syn_end: [None; 2],
                        fin_end: [None; 2],
                        acked: [[false; 2]; 2],
                    },
                );
                at
            }
        };
        let Some(log) = self.conns.get_mut(&ends.id) else {
            return Vec::new();
        };
        if !log.keeps(seg, event) {
            return Vec::new();
        }
        let upto = micros(at) + NEAR_US;
        let (index, events) = self.events_of(ends, first_at, Some(upto));
        let Some(log) = self.conns.get_mut(&ends.id) else {
            return Vec::new();
        };
        // What the placement reads of it: its time, segment and event, not its bytes.
        log.packets.push(Packet {
            frame: Frame {
                ts: at,
                data: Vec::new(),
                orig_len: 0,
            },
            decoded: Ok(seg.clone()),
            event: Some(event.clone()),
            comment: String::new(),
            kernel: Vec::new(),
        });
        let mut placed = place(&log.packets, ends, &events, false);
        let mut notes: Vec<Note> = placed
            .per_packet
            .pop()
            .unwrap_or_default()
            .into_iter()
            .map(|(note, _)| note)
            .collect();
        for (k, note) in placed.timers {
            if self.told.insert((ends.id, index[k])) {
                notes.push(note);
            }
        }
        log.given.push(notes.clone());
        notes
    }

    /// At the end of the capture: the changes no segment came for, and the final states
    /// against the kernel's socket table (`table`), for each of `conns`.
    pub fn finish(&mut self, table: Option<&[KernelSocket]>, conns: &[Connection]) -> Agreement {
        // With the whole trace in, the placement is final: the counts come from it, and what
        // it says of a packet already written (a change whose trace came late) or of no
        // packet (a timer after the last one) is said beside the capture.
        let mut ids: Vec<usize> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let log = &self.conns[&id];
            let (index, events) = self.events_of(log.ends, log.first_at, None);
            let placed = place(&log.packets, log.ends, &events, true);
            let mut mine = Agreement::default();
            let first = log.packets.first().map_or(0, |p| micros(p.frame.ts));
            for (i, notes) in placed.per_packet.into_iter().enumerate() {
                let ms = (micros(log.packets[i].frame.ts) - first) as f64 / 1000.0;
                let from = log.packets[i]
                    .event
                    .as_ref()
                    .map_or(Role::Client, |e| e.from);
                for (note, _) in notes.iter().filter(|(n, _)| !log.given[i].contains(n)) {
                    self.agreement.section.push((
                        note.verdict,
                        format!(
                            "{} (on the {from}'s segment at +{ms:.3} ms, traced after it was \
                             written)",
                            note.text
                        ),
                    ));
                }
                // A mismatch said before the whole trace was in, which the whole trace does
                // not bear out: the packet's comment stands, so the correction is said here.
                for note in log.given[i].iter().filter(|n| {
                    n.verdict == Verdict::Mismatch && !notes.iter().any(|(m, _)| m == *n)
                }) {
                    self.agreement.section.push((
                        Verdict::Info,
                        format!(
                            "the {from}'s segment at +{ms:.3} ms says \"{}\": the kernel's trace \
                             was not all read when it was written, and the whole trace does not \
                             bear it out",
                            note.text
                        ),
                    ));
                }
                for (_, tally) in notes {
                    self.agreement.add(tally);
                    mine.add(tally);
                }
            }
            for (k, note) in placed.timers {
                let tally = Tally {
                    seen: 1,
                    unplaced: 1,
                    ..Tally::default()
                };
                self.agreement.add(tally);
                mine.add(tally);
                if self.told.insert((id, index[k])) {
                    self.agreement.section.push((Verdict::Info, note.text));
                }
            }
            self.agreement.by_conn.push((id, mine));
        }
        if let Some(table) = table {
            // The newest incarnation of each 4-tuple is the one the table can show.
            let checked: Vec<&Connection> = conns
                .iter()
                .filter(|c| self.conns.contains_key(&c.id))
                .filter(|c| {
                    !conns
                        .iter()
                        .any(|n| n.id > c.id && n.client == c.client && n.server == c.server)
                })
                .collect();
            let mut others_agree = 0;
            for (k, conn) in checked.iter().enumerate() {
                let main = k + 1 == checked.len();
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
                    let whose = if main {
                        role.to_string()
                    } else {
                        format!("{role} {}", conn.addr(role))
                    };
                    if kernel_state.unwrap_or(State::Closed) == inferred {
                        if main {
                            self.agreement.section.push((
                                Verdict::Agrees,
                                format!("socket table: {whose} {said}: agrees"),
                            ));
                        } else {
                            others_agree += 1;
                        }
                    } else {
                        self.agreement.mismatched += 1;
                        if let Some((_, a)) = self
                            .agreement
                            .by_conn
                            .iter_mut()
                            .find(|(id, _)| *id == conn.id)
                        {
                            a.mismatched += 1;
                        }
                        self.agreement.section.push((
                            Verdict::Mismatch,
                            format!(
                                "MISMATCH: socket table: {whose} {said}; teardown inferred {inferred}"
                            ),
                        ));
                    }
                }
            }
            if others_agree > 0 {
                self.agreement.section.insert(
                    0,
                    (
                        Verdict::Agrees,
                        format!(
                            "socket table: {} of the earlier connections agree",
                            crate::output::style::plural(others_agree, "endpoint", "endpoints")
                        ),
                    ),
                );
            }
        }
        std::mem::take(&mut self.agreement)
    }
}

/// Sets the kernel's `events` beside the inference for `conn` among `packets`, each packet
/// as the annotator would let it go with the whole trace read; `table` is the kernel's
/// socket table read after the capture.
pub fn agree(
    packets: &[Packet],
    conn: &Connection,
    events: &[KernelEvent],
    table: Option<&[KernelSocket]>,
) -> Agreement {
    let mut checker = Checker::new();
    checker.set_trace(events.to_vec(), Duration::MAX);
    let per_packet = packets
        .iter()
        .map(|p| match &p.event {
            Some(e) if e.conn == conn.id => checker.release(p),
            _ => Vec::new(),
        })
        .collect();
    let mut out = checker.finish(table, std::slice::from_ref(conn));
    out.per_packet = per_packet;
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

/// Two addresses in order: the key of a socket pair whichever end names it.
fn pair(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
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
fn role_of(conn: Ends, local: SocketAddr, remote: SocketAddr, zero_ours: bool) -> Option<Role> {
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
