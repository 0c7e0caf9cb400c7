//! The TCP state machine of one endpoint, inferred from the segments it sends and receives
//! (RFC 9293 §3.3.2). Pure: segments in, transition events out.

mod seq;

pub use seq::SeqNum;

use std::fmt;

/// TCP header flags as a set: a retransmitted FIN may carry PSH, a RST may carry ACK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: Flags = Flags(0x01);
    pub const SYN: Flags = Flags(0x02);
    pub const RST: Flags = Flags(0x04);
    pub const PSH: Flags = Flags(0x08);
    pub const ACK: Flags = Flags(0x10);
    pub const URG: Flags = Flags(0x20);
    pub const ECE: Flags = Flags(0x40);
    pub const CWR: Flags = Flags(0x80);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn syn(self) -> bool {
        self.contains(Flags::SYN)
    }
    pub fn fin(self) -> bool {
        self.contains(Flags::FIN)
    }
    pub fn rst(self) -> bool {
        self.contains(Flags::RST)
    }
    pub fn ack(self) -> bool {
        self.contains(Flags::ACK)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Display for Flags {
    /// `SYN,ACK`, `FIN,ACK`, `PSH,ACK`: the control bits first, ACK after them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ORDER: [(Flags, &str); 8] = [
            (Flags::SYN, "SYN"),
            (Flags::FIN, "FIN"),
            (Flags::RST, "RST"),
            (Flags::PSH, "PSH"),
            (Flags::ACK, "ACK"),
            (Flags::URG, "URG"),
            (Flags::ECE, "ECE"),
            (Flags::CWR, "CWR"),
        ];
        let names: Vec<&str> = ORDER
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// The connection states of RFC 9293 §3.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    /// 0..11, for tables indexed by state.
    pub fn index(self) -> usize {
        self as usize
    }

    pub const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN_SENT",
            State::SynReceived => "SYN_RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN_WAIT_1",
            State::FinWait2 => "FIN_WAIT_2",
            State::CloseWait => "CLOSE_WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST_ACK",
            State::TimeWait => "TIME_WAIT",
        }
    }

    /// Parses the RFC name with `_` or `-` (`FIN-WAIT-1`, `fin_wait_1`, `time-wait`).
    pub fn parse(s: &str) -> Option<State> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        let norm = match norm.as_str() {
            "FIN_WAIT1" => "FIN_WAIT_1".to_string(),
            "FIN_WAIT2" => "FIN_WAIT_2".to_string(),
            "SYN_RECV" => "SYN_RECEIVED".to_string(),
            _ => norm,
        };
        State::ALL.into_iter().find(|state| state.name() == norm)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the endpoint sent or received the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Sent,
    Received,
}

/// What the state machine needs of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub flags: Flags,
    pub seq: SeqNum,
    pub ack: SeqNum,
    pub len: u32,
}

impl Seg {
    /// SYN and FIN each occupy one sequence number (RFC 9293 §3.4).
    pub fn seq_space(&self) -> u32 {
        // Wrapping, as sequence space does: a lying length must not panic.
        self.len
            .wrapping_add(u32::from(self.flags.syn()))
            .wrapping_add(u32::from(self.flags.fin()))
    }
}

/// A change of state and the RFC clause behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// What happened ("sent FIN", "received ACK of its FIN").
    pub cause: Cause,
    /// The RFC 9293 section that says so.
    pub rfc: &'static str,
}

/// A segment the state machine did not expect in its state: reported, never dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unexpected {
    pub state: State,
    pub dir: Dir,
    pub flags: Flags,
    pub why: &'static str,
}

/// What one segment did to one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub transition: Option<Transition>,
    pub unexpected: Option<Unexpected>,
}

/// Why an endpoint changed state: what the segment was to it, or what the kernel did without
/// one. Compared as a value; `text()` is the words the comment and the JSON show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    SentSyn,
    ReceivedSyn,
    ReceivedSynAck,
    ReceivedAckOfSynAck,
    ReceivedAckOfSynAndFin,
    SentFin,
    ReceivedFin,
    ReceivedAckOfFin,
    ReceivedFinWithAckOfFin,
    ReceivedFinBeforeAckOfOwn,
    /// The FINs crossed: the peer's, sent before this one arrived, reached it after this FIN
    /// left (seen from the other side of the wire, RFC 9293 §3.6).
    Crossed,
    SentRst,
    ReceivedRst,
    /// TIME_WAIT ended by a RST, as RFC 1337 §2 describes and Linux does by default.
    TimeWaitRst,
    /// The same where the host's setting is not known (a capture made elsewhere).
    TimeWaitRstUnlessRfc1337,
    /// A SYN answered at once by RST,ACK: the closed port's reply (RFC 9293 §3.10.7.1).
    Refused,
    /// No segment: the kernel removed the socket (a timer, a takeover); the words say how.
    Removed(&'static str),
}

impl Cause {
    pub fn text(self) -> &'static str {
        match self {
            Cause::SentSyn => "sent SYN",
            Cause::ReceivedSyn => "received SYN",
            Cause::ReceivedSynAck => "received SYN,ACK",
            Cause::ReceivedAckOfSynAck => "received ACK of its SYN,ACK",
            Cause::ReceivedAckOfSynAndFin => "received ACK of its SYN and a FIN",
            Cause::SentFin => "sent FIN",
            Cause::ReceivedFin => "received FIN",
            Cause::ReceivedAckOfFin => "received ACK of its FIN",
            Cause::ReceivedFinWithAckOfFin => "received FIN with the ACK of its FIN",
            Cause::ReceivedFinBeforeAckOfOwn => "received FIN before the ACK of its own",
            Cause::Crossed => {
                "the peer's FIN, sent before this one arrived, reached it after this FIN left \
                 and before the ACK of it: the FINs crossed"
            }
            Cause::SentRst => "sent RST",
            Cause::ReceivedRst => "received RST",
            Cause::TimeWaitRst => "received RST in TIME_WAIT: TIME-WAIT assassination",
            Cause::TimeWaitRstUnlessRfc1337 => {
                "received RST in TIME_WAIT: TIME-WAIT assassination (unless \
                 net.ipv4.tcp_rfc1337 = 1, which makes TIME_WAIT ignore it: RFC 1337)"
            }
            Cause::Refused => "received RST,ACK for its SYN: connection refused",
            Cause::Removed(why) => why,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// SYN, FIN and RST: the flags that can change a state on their own.
pub(crate) const CONTROL: u8 = Flags::SYN.0 | Flags::FIN.0 | Flags::RST.0;

/// One side of a connection as seen from the wire.
#[derive(Clone, Debug)]
pub struct Endpoint {
    state: State,
    /// Which of the numbers below are known, a bit each (`ISS`...): packed, where five
    /// `Option<SeqNum>` took 40 bytes, for a busy server's 100k connections of two each.
    known: u8,
    /// Our initial sequence number (from our SYN), or the first we saw.
    iss: SeqNum,
    /// The sequence number our FIN occupies, once we sent one.
    fin_seq: SeqNum,
    /// The highest sequence number we sent, plus one.
    snd_nxt: SeqNum,
    /// The peer's initial sequence number and the place of its FIN, once seen: a segment
    /// that repeats them is a retransmission, not news.
    irs: SeqNum,
    peer_fin: SeqNum,
}

const ISS: u8 = 1;
const FIN_SEQ: u8 = 2;
const SND_NXT: u8 = 4;
const IRS: u8 = 8;
const PEER_FIN: u8 = 16;

/// Equal where the state and every number known are: an unknown one's value is no matter.
impl PartialEq for Endpoint {
    fn eq(&self, other: &Endpoint) -> bool {
        self.state == other.state
            && (
                self.iss(),
                self.fin_seq(),
                self.snd_nxt(),
                self.irs(),
                self.peer_fin(),
            ) == (
                other.iss(),
                other.fin_seq(),
                other.snd_nxt(),
                other.irs(),
                other.peer_fin(),
            )
    }
}

impl Eq for Endpoint {}

impl Endpoint {
    pub fn new(state: State) -> Endpoint {
        Endpoint {
            state,
            known: 0,
            iss: SeqNum(0),
            fin_seq: SeqNum(0),
            snd_nxt: SeqNum(0),
            irs: SeqNum(0),
            peer_fin: SeqNum(0),
        }
    }

    #[inline]
    fn has(&self, bit: u8) -> bool {
        self.known & bit != 0
    }
    #[inline]
    fn known(&self, bit: u8, n: SeqNum) -> Option<SeqNum> {
        self.has(bit).then_some(n)
    }
    /// Our initial sequence number (from our SYN), or the first we saw.
    pub fn iss(&self) -> Option<SeqNum> {
        self.known(ISS, self.iss)
    }
    fn fin_seq(&self) -> Option<SeqNum> {
        self.known(FIN_SEQ, self.fin_seq)
    }
    fn snd_nxt(&self) -> Option<SeqNum> {
        self.known(SND_NXT, self.snd_nxt)
    }
    fn irs(&self) -> Option<SeqNum> {
        self.known(IRS, self.irs)
    }
    fn peer_fin(&self) -> Option<SeqNum> {
        self.known(PEER_FIN, self.peer_fin)
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether `seg` (received) acknowledges `target` without acknowledging anything we never
    /// sent: `target < SEG.ACK =< SND.NXT` (RFC 9293 §3.10.7.3, §3.10.7.4 fifth step).
    fn acks(&self, seg: &Seg, target: Option<SeqNum>) -> bool {
        let (Some(target), true) = (target, seg.flags.ack()) else {
            return false;
        };
        let nxt = self.snd_nxt().unwrap_or(target + 1);
        seg.ack.after_or_eq(target + 1) && nxt.after_or_eq(seg.ack)
    }

    /// Whether `seg` (received) acknowledges our FIN.
    fn acks_our_fin(&self, seg: &Seg) -> bool {
        self.acks(seg, self.fin_seq())
    }

    /// Whether `seg` (received) acknowledges our SYN. Without a SYN seen from us (a capture
    /// that began late), any ACK will do.
    fn acks_our_syn(&self, seg: &Seg) -> bool {
        match self.iss() {
            Some(iss) => self.acks(seg, Some(iss)),
            None => seg.flags.ack(),
        }
    }

    /// The kernel removed this endpoint without a segment (a timer: the orphaned FIN_WAIT_2's
    /// `tcp_fin_timeout`, TIME_WAIT's 2×MSL). Later segments find no connection: CLOSED.
    pub fn remove(&mut self, cause: Cause, rfc: &'static str) -> Option<Transition> {
        if self.state == State::Closed {
            return None;
        }
        let from = std::mem::replace(&mut self.state, State::Closed);
        Some(Transition {
            from,
            to: State::Closed,
            cause,
            rfc,
        })
    }

    /// Whether a segment without SYN, FIN or RST leaves this endpoint where it is, sent or
    /// received: ESTABLISHED, FIN_WAIT_2, CLOSE_WAIT (ACKs and data while it is open).
    pub(crate) fn stays_open(&self) -> bool {
        matches!(
            self.state,
            State::Established | State::FinWait2 | State::CloseWait
        )
    }

    /// `on_segment` of a segment without SYN, FIN or RST that this endpoint sent where
    /// `stays_open`: what it sent is noted, and data after its own FIN is unexpected.
    #[inline]
    pub(crate) fn sent_plain(&mut self, seg: &Seg) -> Option<Unexpected> {
        self.note_sent(seg);
        self.data_after_fin(seg)
    }

    /// Data this endpoint sent after its own FIN, which ends what its side sends (RFC 9293
    /// §3.6): the one rule, for the open path and the whole diagram.
    fn data_after_fin(&self, seg: &Seg) -> Option<Unexpected> {
        (seg.len > 0 && self.has(FIN_SEQ)).then_some(Unexpected {
            state: self.state,
            dir: Dir::Sent,
            flags: seg.flags,
            why: "data sent after its own FIN",
        })
    }

    /// Feeds one segment this endpoint sent or received. Every change of state passes here.
    #[inline]
    pub fn on_segment(&mut self, seg: &Seg, dir: Dir) -> Step {
        // Most segments of a connection: an ACK or data while it is open, answered by the
        // last general arm below without a change; received, it changes nothing here either.
        if seg.flags.0 & CONTROL == 0 && self.stays_open() {
            return self.open_step(seg, dir);
        }
        self.on_segment_general(seg, dir)
    }

    /// `on_segment` with the diagram written into the caller, which knows the direction
    /// (the tracker's path for the ACK that completes a handshake or a close).
    #[inline(always)]
    pub(crate) fn on_segment_here(&mut self, seg: &Seg, dir: Dir) -> Step {
        if seg.flags.0 & CONTROL == 0 && self.stays_open() {
            return self.open_step(seg, dir);
        }
        self.diagram(seg, dir)
    }

    /// `on_segment` of a segment without SYN, FIN or RST where `stays_open`.
    #[inline(always)]
    fn open_step(&mut self, seg: &Seg, dir: Dir) -> Step {
        match dir {
            Dir::Sent => Step {
                transition: None,
                unexpected: self.sent_plain(seg),
            },
            Dir::Received => Step::default(),
        }
    }

    /// `on_segment` through the whole diagram, the common case included: what a segment with
    /// SYN, FIN or RST comes to at once.
    #[inline(never)]
    pub(crate) fn on_segment_general(&mut self, seg: &Seg, dir: Dir) -> Step {
        self.diagram(seg, dir)
    }

    /// `on_segment_general`'s work, written into a caller that knows the direction: half of
    /// the diagram drops out there (the tracker's path for SYNs and FINs).
    #[inline(always)]
    pub(crate) fn diagram(&mut self, seg: &Seg, dir: Dir) -> Step {
        // What we had sent before this segment: a SYN sent again, a reply that is the first.
        let (prior_iss, sent_before) = (self.iss(), self.has(SND_NXT));
        if dir == Dir::Sent {
            self.note_sent(seg);
        }
        // Retransmissions of what the peer already sent: its SYN,ACK, or its FIN (RFC 9293
        // §3.10.7.4: a duplicate is acknowledged, the state does not change).
        if dir == Dir::Received {
            let fin_at = seg.seq + seg.seq_space().saturating_sub(1);
            let repeated_syn = seg.flags.syn() && self.irs() == Some(seg.seq);
            let repeated_fin = seg.flags.fin() && self.peer_fin() == Some(fin_at);
            if seg.flags.syn() && !self.has(IRS) {
                self.known |= IRS;
                self.irs = seg.seq;
            }
            if seg.flags.fin() && !self.has(PEER_FIN) {
                self.known |= PEER_FIN;
                self.peer_fin = fin_at;
            }
            if (repeated_syn || repeated_fin) && !seg.flags.rst() && self.state != State::Listen {
                return Step::default();
            }
        }
        let fin_acked = dir == Dir::Received && self.acks_our_fin(seg);
        let f = seg.flags;
        use Dir::{Received as Rx, Sent as Tx};
        use State::*;
        let (to, cause, rfc) = match (self.state, dir) {
            // A reset aborts any synchronized or opening connection (RFC 9293 §3.10.7.4,
            // second step; §3.10.7.3 for SYN-SENT); sending one aborts it too (§3.10.5 ABORT).
            (Closed | Listen, _) if f.rst() => return Step::default(),
            // A SYN answered by RST,ACK before anything else: the closed port's reply (RFC 9293
            // §3.10.7.1). No socket existed, so SYN_RECEIVED never was: CLOSED, silently (the
            // tracker revises the SYN's LISTEN → SYN_RECEIVED).
            (SynReceived, Tx)
                if f.rst()
                    && f.ack()
                    && !sent_before
                    && self.irs().is_some_and(|irs| seg.ack == irs + 1) =>
            {
                self.state = Closed;
                return Step::default();
            }
            // No connection: anything but a reset is answered with a reset and changes
            // nothing (RFC 9293 §3.10.7.1), e.g. a FIN after a timer removed the socket.
            (Closed, Rx) if self.has(FIN_SEQ | ISS) => {
                return Step::default();
            }
            (_, Tx) if f.rst() => (Closed, Cause::SentRst, "RFC 9293 §3.10.5"),
            // An in-window RST ends TIME-WAIT early: the "TIME-WAIT assassination" hazard of
            // RFC 1337 §2 (Linux ignores it when net.ipv4.tcp_rfc1337 = 1: the tracker's job).
            (TimeWait, Rx) if f.rst() => (
                Closed,
                Cause::TimeWaitRst,
                "RFC 9293 §3.10.7.4, RFC 1337 §2",
            ),
            // SYN-SENT: a RST acking our SYN, and no SYN from the peer: refused (§3.10.7.3).
            (SynSent, Rx) if f.rst() && !self.has(IRS) && self.acks_our_syn(seg) => {
                (Closed, Cause::Refused, "RFC 9293 §3.10.7.1, §3.10.7.3")
            }
            (_, Rx) if f.rst() => (Closed, Cause::ReceivedRst, "RFC 9293 §3.10.7.4"),
            // Active OPEN: send SYN, enter SYN-SENT (§3.10.1).
            (Closed, Tx) if f.syn() && !f.ack() => (SynSent, Cause::SentSyn, "RFC 9293 §3.10.1"),
            // The same SYN again: no SYN,ACK came in time, the retransmission timer sent it
            // (RFC 9293 §3.8.1): no change.
            (SynSent, Tx) if f.syn() && !f.ack() && prior_iss == Some(seg.seq) => {
                return Step::default();
            }
            // LISTEN receives a SYN: enter SYN-RECEIVED (§3.10.7.2, third check).
            (Listen, Rx) if f.syn() && !f.ack() => {
                (SynReceived, Cause::ReceivedSyn, "RFC 9293 §3.10.7.2")
            }
            (Listen, Tx) if f.syn() && f.ack() => return Step::default(),
            // SYN-SENT receives SYN,ACK acking our SYN: ESTABLISHED (§3.10.7.3, fourth check).
            (SynSent, Rx) if f.syn() && self.acks_our_syn(seg) => {
                (Established, Cause::ReceivedSynAck, "RFC 9293 §3.10.7.3")
            }
            (SynReceived, Tx) if f.syn() && f.ack() => return Step::default(),
            (SynSent, Tx) if f.ack() && !f.syn() && !f.fin() => return Step::default(),
            // SYN-RECEIVED: an acceptable ACK moves to ESTABLISHED (§3.10.7.4, fifth step).
            (SynReceived, Rx) if self.acks_our_syn(seg) => {
                if f.fin() {
                    // The handshake ACK can carry a FIN: both steps at once.
                    (
                        CloseWait,
                        Cause::ReceivedAckOfSynAndFin,
                        "RFC 9293 §3.10.7.4",
                    )
                } else {
                    (
                        Established,
                        Cause::ReceivedAckOfSynAck,
                        "RFC 9293 §3.10.7.4",
                    )
                }
            }
            // CLOSE in ESTABLISHED: send FIN, enter FIN-WAIT-1 (§3.10.4).
            (Established | SynReceived, Tx) if f.fin() => {
                (FinWait1, Cause::SentFin, "RFC 9293 §3.10.4")
            }
            // FIN received in ESTABLISHED: enter CLOSE-WAIT (§3.10.7.4, eighth step).
            (Established, Rx) if f.fin() => (CloseWait, Cause::ReceivedFin, "RFC 9293 §3.10.7.4"),
            // The FINs crossed: this FIN does not acknowledge the peer's, so it left before the
            // peer's FIN arrived. The endpoint was in FIN-WAIT-1, not CLOSE-WAIT, when that
            // FIN came (a capture on the peer's side of the wire saw it first): CLOSING
            // (§3.6, simultaneous close; §3.10.7.4).
            (CloseWait, Tx)
                if f.fin()
                    && self
                        .peer_fin()
                        .is_some_and(|pf| !seg.ack.after_or_eq(pf + 1)) =>
            {
                self.state = Closing;
                return Step {
                    transition: Some(Transition {
                        from: Established,
                        to: Closing,
                        cause: Cause::Crossed,
                        rfc: "RFC 9293 §3.6, §3.10.7.4",
                    }),
                    unexpected: None,
                };
            }
            // CLOSE in CLOSE-WAIT: send FIN, enter LAST-ACK (§3.10.4).
            (CloseWait, Tx) if f.fin() => (LastAck, Cause::SentFin, "RFC 9293 §3.10.4"),
            // FIN-WAIT-1 receives a FIN that also acks ours: TIME-WAIT (§3.10.7.4, eighth step).
            (FinWait1, Rx) if f.fin() && fin_acked => (
                TimeWait,
                Cause::ReceivedFinWithAckOfFin,
                "RFC 9293 §3.10.7.4",
            ),
            // FIN-WAIT-1 receives a FIN before the ACK of ours: CLOSING (simultaneous close).
            (FinWait1, Rx) if f.fin() => (
                Closing,
                Cause::ReceivedFinBeforeAckOfOwn,
                "RFC 9293 §3.10.7.4",
            ),
            // FIN-WAIT-1: our FIN acknowledged, enter FIN-WAIT-2 (§3.10.7.4, fifth step).
            (FinWait1, Rx) if fin_acked => {
                (FinWait2, Cause::ReceivedAckOfFin, "RFC 9293 §3.10.7.4")
            }
            // FIN-WAIT-2 receives the peer's FIN: TIME-WAIT (§3.10.7.4, eighth step).
            (FinWait2, Rx) if f.fin() => (TimeWait, Cause::ReceivedFin, "RFC 9293 §3.10.7.4"),
            // CLOSING: our FIN acknowledged, enter TIME-WAIT (§3.10.7.4, fifth step).
            (Closing, Rx) if fin_acked => (TimeWait, Cause::ReceivedAckOfFin, "RFC 9293 §3.10.7.4"),
            // LAST-ACK: our FIN acknowledged, delete the TCB: CLOSED (§3.10.7.4, fifth step).
            (LastAck, Rx) if fin_acked => (Closed, Cause::ReceivedAckOfFin, "RFC 9293 §3.10.7.4"),
            // TIME-WAIT re-acknowledges a retransmitted FIN and restarts its 2 MSL timer
            // (§3.10.7.4, eighth step): no change of state.
            (TimeWait, Rx) if f.fin() => return Step::default(),
            (TimeWait | Closed, Tx) if f.ack() && !f.fin() && seg.len == 0 => {
                return Step::default();
            }
            // TIME-WAIT answers any other segment (an old duplicate) with an ACK and stays
            // (RFC 9293 §3.10.7.4, first check).
            (TimeWait, Rx) if !f.syn() => return Step::default(),
            // ACKs and data while the connection is open in that direction change nothing.
            (Established | FinWait1 | FinWait2 | CloseWait, _) if !f.syn() && !f.fin() => {
                let unexpected = if dir == Tx {
                    self.data_after_fin(seg)
                } else {
                    None
                };
                return Step {
                    transition: None,
                    unexpected,
                };
            }
            (Closing | LastAck, Rx | Tx) if !f.syn() && !f.fin() && seg.len == 0 => {
                return Step::default();
            }
            // A retransmitted FIN from an endpoint that already sent one.
            (FinWait1 | Closing | LastAck, Tx) if f.fin() => return Step::default(),
            (CloseWait | LastAck, Rx) if f.fin() => {
                return self.unexpected(dir, f, "a second FIN from a peer that already closed");
            }
            _ => return self.unexpected(dir, f, "no arc of the RFC diagram matches"),
        };
        let transition = Transition {
            from: self.state,
            to,
            cause,
            rfc,
        };
        self.state = to;
        Step {
            transition: Some(transition),
            unexpected: None,
        }
    }

    fn note_sent(&mut self, seg: &Seg) {
        if seg.flags.syn() || !self.has(ISS) {
            self.known |= ISS;
            self.iss = seg.seq;
        }
        if seg.flags.fin() {
            // The FIN occupies the sequence number after the data (and the SYN) it rides on.
            self.known |= FIN_SEQ;
            self.fin_seq = seg.seq + (seg.seq_space() - 1);
        }
        let end = seg.seq + seg.seq_space();
        match self.snd_nxt() {
            Some(nxt) if nxt.after_or_eq(end) => {}
            _ => {
                self.known |= SND_NXT;
                self.snd_nxt = end;
            }
        }
    }

    fn unexpected(&self, dir: Dir, flags: Flags, why: &'static str) -> Step {
        Step {
            transition: None,
            unexpected: Some(Unexpected {
                state: self.state,
                dir,
                flags,
                why,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
