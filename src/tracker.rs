//! Connections by 4-tuple, two endpoints each: every segment is fed to the endpoint that
//! sent it and the one that received it, and the transitions come out as one event.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use crate::decode::Segment;
use crate::tcp::{CONTROL, Cause, Dir, Endpoint, Flags, SeqNum, State, Transition, Unexpected};

/// Which end of a connection: the one that sent the first SYN is the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    pub fn other(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
    pub fn index(self) -> usize {
        match self {
            Role::Client => 0,
            Role::Server => 1,
        }
    }
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One TCP connection, seen from the wire.
#[derive(Clone, Debug)]
pub struct Connection {
    /// 0, 1, 2... in order of first appearance.
    pub id: usize,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The capture began after the handshake: states before the first segment are a guess.
    pub joined_mid: bool,
    endpoints: [Endpoint; 2],
    /// Each side's sequence numbers: [client, server].
    sides: [Side; 2],
    /// Changes without a segment (a timer) wait in the tracker's `pending`, told by `remove`:
    /// shown on the next segment.
    pending: bool,
    last_at: [Option<std::time::Duration>; 2],
    pub segments: u64,
    /// The capture time of its last segment, when known.
    pub last_seen: Option<std::time::Duration>,
    /// The TSval of the client's SYN (RFC 7323), to compare a later incarnation's with.
    syn_tsval: Option<u32>,
    /// The end a new SYN on the same 4-tuple destroyed in TIME_WAIT (RFC 6191, tcp_tw_reuse):
    /// told by no segment of this connection, on the new connection's SYN.
    pub taken_over: Option<TakenOver>,
    /// In the forgetful tracker's queue of finished connections: once at most, however many
    /// segments a closed 4-tuple goes on receiving.
    queued: bool,
}

/// What the tracker knows of one side's sequence space, each number with a bit of `known`
/// (`BASE`...): packed, where `Option`s took twice the room, for a busy server's 100k
/// connections.
#[derive(Clone, Copy, Debug, Default)]
struct Side {
    known: u8,
    /// Its initial sequence number: relative numbers count from it.
    base: SeqNum,
    /// Its next new sequence number, and its last segment (seq, len, flags), to tell
    /// retransmissions, duplicates and gaps.
    next: SeqNum,
    last_seq: SeqNum,
    last_len: u32,
    last_flags: u8,
    /// The highest ACK it received (its sequence space the peer acknowledged).
    acked: SeqNum,
    /// Where a received FIN moved it FIN_WAIT_2 → TIME_WAIT, until it sends: that FIN's end
    /// and ack field, to know a RST that answers it (no socket was left).
    tw_end: SeqNum,
    tw_ack: SeqNum,
}

/// What a change of `role`'s on a segment brings besides itself, the same on every path; the
/// change to tell before it, where there is one. Crossing FINs: its own FIN came first on its
/// side of the wire, so FIN_WAIT_1, then the peer's FIN, CLOSING, both on this segment (the
/// path the kernel traces), and the earlier FIN's story revised (RFC 9293 §3.6). A FIN that
/// moved it FIN_WAIT_2 → TIME_WAIT: that FIN's end and ack field kept, to know a RST that
/// answers it.
#[inline(always)]
fn besides(
    side: &mut Side,
    role: Role,
    dir: Dir,
    seg: &Segment,
    end: SeqNum,
    t: &mut Transition,
    revise: &mut Vec<Revise>,
) -> Option<(Role, Transition)> {
    let mut first = None;
    if t.cause == Cause::Crossed {
        revise.push(Revise::CrossedFin { role });
        first = Some((role, CROSSED_FIRST));
        t.from = State::FinWait1;
    }
    if dir == Dir::Received
        && seg.flags.fin()
        && (t.from, t.to) == (State::FinWait2, State::TimeWait)
    {
        side.known |= FIN_TO_TW;
        (side.tw_end, side.tw_ack) = (end, seg.ack);
    }
    first
}

const BASE: u8 = 1;
const NEXT: u8 = 2;
const LAST: u8 = 4;
const ACKED: u8 = 8;
const FIN_TO_TW: u8 = 16;

impl Side {
    #[inline]
    fn has(&self, bit: u8) -> bool {
        self.known & bit != 0
    }
    #[inline]
    fn base(&self) -> Option<SeqNum> {
        self.has(BASE).then_some(self.base)
    }
    #[inline]
    fn next(&self) -> Option<SeqNum> {
        self.has(NEXT).then_some(self.next)
    }
    #[inline]
    fn acked(&self) -> Option<SeqNum> {
        self.has(ACKED).then_some(self.acked)
    }
    #[inline]
    fn last_seg(&self) -> Option<(SeqNum, u32, u8)> {
        self.has(LAST)
            .then_some((self.last_seq, self.last_len, self.last_flags))
    }
    #[inline]
    fn set_base(&mut self, n: SeqNum) {
        self.known |= BASE;
        self.base = n;
    }
    #[inline]
    fn set_next(&mut self, n: SeqNum) {
        self.known |= NEXT;
        self.next = n;
    }
    #[inline]
    fn set_acked(&mut self, n: SeqNum) {
        self.known |= ACKED;
        self.acked = n;
    }
    #[inline]
    fn set_last_seg(&mut self, (seq, len, flags): (SeqNum, u32, u8)) {
        self.known |= LAST;
        (self.last_seq, self.last_len, self.last_flags) = (seq, len, flags);
    }
    /// The end and ack field of the FIN that moved it FIN_WAIT_2 → TIME_WAIT, forgotten.
    #[inline]
    fn take_fin_to_tw(&mut self) -> Option<(SeqNum, SeqNum)> {
        let was = self.has(FIN_TO_TW);
        self.known &= !FIN_TO_TW;
        was.then_some((self.tw_end, self.tw_ack))
    }
}

impl Connection {
    pub fn state(&self, role: Role) -> State {
        self.endpoints[role.index()].state()
    }
    /// How `role`'s end ended, in words: its state, and why where a later connection ended it
    /// (a TIME_WAIT taken over by a new SYN on the same 4-tuple leaves no segment of its own).
    pub fn ending(&self, role: Role) -> String {
        let mut s = String::new();
        self.push_ending(role, &mut s);
        s
    }
    /// `ending`, written onto `s` (a summary line).
    pub fn push_ending(&self, role: Role, s: &mut String) {
        match self.taken_over.as_deref() {
            Some((r, t)) if *r == role => {
                s.push_str(t.to.name());
                s.push_str(" (its ");
                s.push_str(t.from.name());
                s.push_str(" taken over by a new SYN)");
            }
            _ => s.push_str(self.state(role).name()),
        }
    }
    pub fn addr(&self, role: Role) -> SocketAddr {
        match role {
            Role::Client => self.client,
            Role::Server => self.server,
        }
    }
}

/// The change a takeover made to the end in TIME_WAIT, one of two (`TAKEN_OVER`), by that
/// end: a busy server's SYNs take a TIME_WAIT over by the thousand, and a change allocated
/// for each showed.
#[derive(Clone, Copy, Debug)]
pub struct TakenOver(Role);

impl std::ops::Deref for TakenOver {
    type Target = (Role, Transition);
    fn deref(&self) -> &(Role, Transition) {
        &TAKEN_OVER[self.0.index()]
    }
}

/// What one segment did. Moved several times per segment (tracker, look-ahead, writer, back
/// to be reused): kept to 64 bytes, what few segments carry besides in `rare`.
#[derive(Clone)]
pub struct Event {
    pub conn: usize,
    /// Who sent the segment.
    pub from: Role,
    /// Sequence number relative to the sender's initial one (Wireshark's "relative").
    pub rel_seq: u32,
    /// Acknowledgment number relative to the receiver's initial one, when ACK is set.
    pub rel_ack: Option<u32>,
    pub transitions: Vec<(Role, Transition)>,
    /// Both states after the segment: [client, server].
    pub states: [State; 2],
    /// Its sender sent this sequence space before: a retransmission (not a copy seen twice).
    pub resent: bool,
    /// The unexpected, the notes and the revisions: none on most segments, so no allocation.
    rare: Option<Box<Rare>>,
}

/// An event's lists that are most often empty, behind one pointer (`Event::rare`).
#[derive(Clone, Debug, Default)]
struct Rare {
    unexpected: Vec<(Role, Unexpected)>,
    /// What the segment is on the wire, beyond its flags: a retransmission, a duplicate, a
    /// gap before it, the first segment of a connection joined mid-way.
    notes: Vec<Note>,
    /// What this segment proves about an earlier one of the same connection: the annotator
    /// applies it to that one while it is still within its look-ahead.
    revise: Vec<Revise>,
}

impl Rare {
    /// The lists boxed, none where all are empty. The test in line, the box out of line:
    /// a call for every segment showed in the profile.
    #[inline(always)]
    fn boxed(
        spare: &mut SpareRare,
        unexpected: Vec<(Role, Unexpected)>,
        notes: Vec<Note>,
        revise: Vec<Revise>,
    ) -> Option<Box<Rare>> {
        if unexpected.is_empty() && notes.is_empty() && revise.is_empty() {
            return None;
        }
        Some(Rare::new_box(spare, unexpected, notes, revise))
    }

    /// A box handed back (`Tracker::recycle_list`) where there is one: a busy server's
    /// takeover SYNs each took one, and its allocation and its free showed.
    #[inline(never)]
    fn new_box(
        spare: &mut SpareRare,
        unexpected: Vec<(Role, Unexpected)>,
        notes: Vec<Note>,
        revise: Vec<Revise>,
    ) -> Box<Rare> {
        let rare = Rare {
            unexpected,
            notes,
            revise,
        };
        match spare.pop() {
            Some(mut b) => {
                *b = rare;
                b
            }
            None => Box::new(rare),
        }
    }

    /// An event's box taken back to `spare`, emptied, while there is room.
    #[inline]
    fn recycle(spare: &mut SpareRare, rare: &mut Option<Box<Rare>>) {
        if spare.len() < SPARE_RARE
            && let Some(mut b) = rare.take()
        {
            b.unexpected.clear();
            b.notes.clear();
            b.revise.clear();
            spare.push(b);
        }
    }
}

/// Emptied `Rare` boxes: the boxes themselves are what is kept, each an allocation that an
/// event takes back whole (a `Vec<Rare>` would move the lists out, into a new box).
#[allow(clippy::vec_box)]
type SpareRare = Vec<Box<Rare>>;

/// How many emptied `Rare` boxes the tracker keeps: more than the events in flight between
/// the tracking thread and the writer carry.
const SPARE_RARE: usize = 1024;

// As when the lists were fields: an empty box equals none.
impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.conn == other.conn
            && self.from == other.from
            && self.rel_seq == other.rel_seq
            && self.rel_ack == other.rel_ack
            && self.transitions == other.transitions
            && self.unexpected() == other.unexpected()
            && self.notes() == other.notes()
            && self.states == other.states
            && self.resent == other.resent
            && self.revise() == other.revise()
    }
}

impl Eq for Event {}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("conn", &self.conn)
            .field("from", &self.from)
            .field("rel_seq", &self.rel_seq)
            .field("rel_ack", &self.rel_ack)
            .field("transitions", &self.transitions)
            .field("unexpected", &self.unexpected())
            .field("notes", &self.notes())
            .field("states", &self.states)
            .field("resent", &self.resent)
            .field("revise", &self.revise())
            .finish()
    }
}

/// A later segment that changes the story of an earlier one: `role`'s transition to
/// `drops().1` on the earlier event never was. The annotator calls `apply` on the pending
/// events of the same connection, newest first, until one returns true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revise {
    /// `role`'s own FIN did not ack the peer's FIN: the FINs crossed, so the peer's FIN,
    /// seen first, found `role` in FIN_WAIT_1, not ESTABLISHED, and did not move it to
    /// CLOSE_WAIT (RFC 9293 §3.6, simultaneous close).
    CrossedFin { role: Role },
    /// `role` answered the SYN with RST,ACK and nothing else: the closed port's reply (RFC
    /// 9293 §3.10.7.1). No socket listened, so the SYN did not move it LISTEN → SYN_RECEIVED.
    /// Why a revision and not LISTEN → SYN_RECEIVED told on the SYN,ACK (no look-ahead): a
    /// passive open enters SYN_RECEIVED when the SYN arrives (§3.10.7.2), and the run's trace
    /// puts it there; moving it would misplace it in every connection for a rare one.
    Refused { role: Role },
    /// `role` answered the peer's FIN with a RST: no socket was left to receive it (an
    /// orphaned FIN_WAIT_2 ends after net.ipv4.tcp_fin_timeout), so that FIN did not move it
    /// `since` → TIME_WAIT; the RST's own event carries `since` → CLOSED.
    GoneBeforeFin { role: Role, since: State },
    /// A SYN sent again before `role` answered any copy: the first copy got no answer (lost
    /// after the capture point, or dropped before `role`), so `role`'s LISTEN → SYN_RECEIVED
    /// belongs to a later copy, the one it answers (RFC 9293 §3.8.1).
    AnsweredCopy { role: Role },
}

impl Revise {
    /// The endpoint, and the `to` of its transition on the earlier event that never was.
    pub fn drops(&self) -> (Role, State) {
        match *self {
            Revise::CrossedFin { role } => (role, State::CloseWait),
            Revise::Refused { role } => (role, State::SynReceived),
            Revise::GoneBeforeFin { role, .. } => (role, State::TimeWait),
            Revise::AnsweredCopy { role } => (role, State::SynReceived),
        }
    }

    /// The endpoint's state after the earlier event, instead.
    pub fn state(&self) -> State {
        match *self {
            Revise::CrossedFin { .. } => State::FinWait1,
            Revise::Refused { .. } => State::Closed,
            Revise::GoneBeforeFin { since, .. } => since,
            Revise::AnsweredCopy { .. } => State::Listen,
        }
    }

    /// What the earlier event's comment says of it.
    pub fn note(&self) -> String {
        match *self {
            Revise::CrossedFin { role } => format!(
                "the FINs crossed: the {role} had already sent its own FIN when this one reached it, \
                 so it was in FIN_WAIT_1, not ESTABLISHED, and this FIN did not move it"
            ),
            Revise::Refused { role } => format!(
                "the {role} had no socket listening: the RST,ACK that answers this SYN proves it \
                 (RFC 9293 §3.10.7.1)"
            ),
            Revise::GoneBeforeFin { role, since } => format!(
                "the {role} had no socket left (an orphaned {since} ends after \
                 net.ipv4.tcp_fin_timeout): the RST that answers this FIN proves it"
            ),
            Revise::AnsweredCopy { role } => format!(
                "no SYN,ACK came for this copy: it was lost after the capture point or dropped \
                 before the {role} (a firewall, a full accept queue); the {role}'s change is on \
                 the copy it answered"
            ),
        }
    }

    /// Edits `earlier`, an event of the same connection before the one that carries this:
    /// removes the transition that never was, sets the endpoint's state after it and adds the
    /// note, then returns true. An event in between (no such transition) returns false, its
    /// states fixed where they name the state that never was: re-render every event passed.
    pub fn apply(&self, earlier: &mut Event) -> bool {
        self.revise(earlier).is_some()
    }

    /// `apply`, and the change that moves with it onto or off `current`, the event that
    /// carries this: a SYN's listener change to the copy it answered, a socket's end from the
    /// RST onto the FIN it was gone before. What the annotator calls.
    pub fn settle(&self, earlier: &mut Event, current: &mut Event) -> bool {
        let Some(dropped) = self.revise(earlier) else {
            return false;
        };
        let role = self.drops().0;
        match self {
            Revise::AnsweredCopy { .. } => current.transitions.push(dropped),
            Revise::GoneBeforeFin { .. } => {
                if let Some(i) = current.transitions.iter().position(|(r, _)| *r == role) {
                    let moved = current.transitions.remove(i);
                    earlier.states[role.index()] = moved.1.to;
                    earlier.transitions.insert(0, moved);
                }
            }
            Revise::CrossedFin { .. } | Revise::Refused { .. } => {}
        }
        true
    }

    /// `apply`'s work; the transition that never was, where this was the event to revise.
    fn revise(&self, earlier: &mut Event) -> Option<(Role, Transition)> {
        let (role, gone) = self.drops();
        let state = &mut earlier.states[role.index()];
        let Some(i) = earlier
            .transitions
            .iter()
            .position(|(r, t)| *r == role && t.to == gone)
        else {
            if *state == gone {
                *state = self.state();
            }
            return None;
        };
        *state = self.state();
        let dropped = earlier.transitions.remove(i);
        earlier.push_note(self.note());
        Some(dropped)
    }
}

impl Event {
    /// What the segment did that the diagram has no arc for, by endpoint.
    #[inline]
    pub fn unexpected(&self) -> &[(Role, Unexpected)] {
        self.rare.as_deref().map_or(&[], |r| &r.unexpected)
    }
    /// What the segment is on the wire, beyond its flags: a retransmission, a duplicate, a
    /// gap before it, the first segment of a connection joined mid-way.
    #[inline]
    pub fn notes(&self) -> &[Note] {
        self.rare.as_deref().map_or(&[], |r| &r.notes)
    }
    /// What this segment proves about an earlier one of the same connection: the annotator
    /// applies it to that one while it is still within its look-ahead.
    #[inline]
    pub fn revise(&self) -> &[Revise] {
        self.rare.as_deref().map_or(&[], |r| &r.revise)
    }
    /// The notes to edit (boxed on the first).
    pub fn notes_mut(&mut self) -> &mut Vec<Note> {
        &mut self.rare.get_or_insert_default().notes
    }
    pub fn push_note(&mut self, note: String) {
        self.notes_mut().push(Note::Text(note));
    }
    /// The same event without its notes.
    pub fn without_notes(&self) -> Event {
        let mut event = self.clone();
        if let Some(rare) = event.rare.as_deref_mut() {
            rare.notes = Vec::new();
        }
        event
    }
    /// The revisions, taken off (to apply while the event is borrowed): `set_revise` puts
    /// them back.
    pub fn take_revise(&mut self) -> Vec<Revise> {
        self.rare
            .as_deref_mut()
            .map(|r| std::mem::take(&mut r.revise))
            .unwrap_or_default()
    }
    pub fn set_revise(&mut self, revise: Vec<Revise>) {
        if !revise.is_empty() || self.rare.is_some() {
            self.rare.get_or_insert_default().revise = revise;
        }
    }
    /// Whether the event holds memory besides its transitions (dropping it frees some).
    #[inline]
    pub fn rare_on_heap(&self) -> bool {
        self.rare.is_some()
    }
    pub fn state(&self, role: Role) -> State {
        self.states[role.index()]
    }
    pub fn transition(&self, role: Role) -> Option<&Transition> {
        self.transitions
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, t)| t)
    }
    /// The last of `role`'s changes on this segment (crossing FINs make two: ESTABLISHED →
    /// FIN_WAIT_1 → CLOSING).
    pub fn last_transition(&self, role: Role) -> Option<&Transition> {
        self.transitions
            .iter()
            .rev()
            .find(|(r, _)| *r == role)
            .map(|(_, t)| t)
    }
    /// `role`'s states through this segment: `[from, to, to, ...]`, empty without a change.
    pub fn path(&self, role: Role) -> Vec<State> {
        let mut path: Vec<State> = self.transition(role).map(|t| t.from).into_iter().collect();
        path.extend(
            self.transitions
                .iter()
                .filter(|(r, _)| *r == role)
                .map(|(_, t)| t.to),
        );
        path
    }
}

#[derive(Default)]
pub struct Tracker {
    /// Connection ids by their whole 4-tuple: a busy server's capture looks one up per
    /// segment among 100k.
    by_tuple: Tuples,
    /// Ordered by id; without forgetting, a connection's id is its index.
    conns: Vec<Connection>,
    next_id: usize,
    /// The connections of the last IPv4 4-tuples seen: a capture is mostly runs of one
    /// connection, or a busy server's few dozen at a time.
    recent: Recent,
    /// The last segment's connection, of any other 4-tuple.
    last_other: Option<((SocketAddr, SocketAddr), usize)>,
    /// Forget a finished connection this long (capture time) after its last segment.
    forget_after: Option<std::time::Duration>,
    since_sweep: u32,
    /// Connections left with both ends done by a segment, with its time, oldest first: the
    /// sweep's candidates (an entry is stale once the connection saw a later segment).
    finished: VecDeque<(std::time::Duration, usize)>,
    /// Candidates found old enough to forget, not yet dropped: the list is swept once they
    /// are a quarter of it, so a sweep costs O(1) per connection it forgets.
    forgettable: usize,
    /// `net.ipv4.tcp_rfc1337` where known (`run` sets it): `Some(true)`, TIME_WAIT ignores a
    /// RST (RFC 1337 §3, fix F1); `None` (a capture made elsewhere), the RST ends it "unless".
    pub rfc1337: Option<bool>,
    /// No words for a new SYN that takes a TIME_WAIT over (the states change all the same):
    /// `summary` shows none, and on a busy server they were most of its allocations.
    pub quiet: bool,
    /// Segments that did not come from their source's socket (sent through a raw socket),
    /// with what to say of them.
    forged: Vec<(Forged, String)>,
    /// Emptied transition lists handed back (`recycle`), for the next events: most segments
    /// of a busy server change a state, and a list allocated and freed for each showed.
    spare: Vec<Vec<(Role, Transition)>>,
    /// Emptied `Rare` boxes handed back with the events (`recycle_list`), for the next
    /// events that carry one; the first holds its notes' list, for a takeover's notes.
    spare_rare: SpareRare,
    /// Changes without a segment (a timer), by connection id, told by `remove`: shown on the
    /// connection's next segment. Here, not in each connection: rare, and a list in each took
    /// 24 bytes of every one of a busy server's 100k.
    pending: Vec<(usize, Role, Transition)>,
    /// Every segment through the general path (the tests that pin the fast one to it).
    #[cfg(test)]
    general_only: bool,
    #[cfg(test)]
    fast_hits: usize,
    #[cfg(test)]
    control_hits: usize,
}

/// A segment recognised by its source, destination, sequence number and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forged {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: SeqNum,
    pub len: u32,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// A tracker for one pass over a long capture: a connection whose two ends are CLOSED
    /// or TIME_WAIT is forgotten `after` its last segment (2×MSL is the natural choice: until
    /// then a retransmitted FIN may still come). Memory follows the open connections.
    pub fn forgetful(after: std::time::Duration) -> Tracker {
        Tracker {
            forget_after: Some(after),
            ..Tracker::default()
        }
    }

    /// The connections known now (all of them, unless forgetful).
    pub fn connections(&self) -> &[Connection] {
        &self.conns
    }

    pub fn connection(&self, id: usize) -> Option<&Connection> {
        self.position(id).map(|i| &self.conns[i])
    }

    fn position(&self, id: usize) -> Option<usize> {
        match self.conns.get(id) {
            Some(c) if c.id == id => Some(id),
            _ => self.conns.binary_search_by_key(&id, |c| c.id).ok(),
        }
    }

    /// Drops the finished connections last seen before `now - forget_after`, once there are
    /// enough of them to be worth a pass over the list.
    #[inline(never)]
    fn sweep(&mut self, now: std::time::Duration) {
        let Some(after) = self.forget_after else {
            return;
        };
        while let Some(&(t, id)) = self.finished.front() {
            if now.saturating_sub(t) <= after {
                break;
            }
            self.finished.pop_front();
            let Some(c) = self.position(id).map(|i| &mut self.conns[i]) else {
                continue;
            };
            match c.last_seen {
                // Out of the queue: the next pass drops it, or a segment before it queues it
                // again.
                Some(seen) if now.saturating_sub(seen) > after && finished(c) => {
                    c.queued = false;
                    self.forgettable += 1;
                }
                // Seen since it was queued: again, at its latest segment's time.
                Some(seen) if finished(c) => self.finished.push_back((seen, id)),
                _ => c.queued = false,
            }
        }
        if self.forgettable == 0 || self.forgettable * 4 < self.conns.len() {
            return;
        }
        self.forgettable = 0;
        let (by_tuple, pending) = (&mut self.by_tuple, &mut self.pending);
        self.conns.retain(|c| {
            let old = c.last_seen.is_some_and(|t| now.saturating_sub(t) > after);
            let forget = old && finished(c);
            if forget && by_tuple.get(&Key::of(c.client, c.server)) == Some(c.id) {
                by_tuple.remove(&Key::of(c.client, c.server));
            }
            if forget && c.pending {
                pending.retain(|&(of, ..)| of != c.id);
            }
            !forget
        });
        self.recent.clear();
        self.last_other = None;
    }

    pub fn on_segment(&mut self, seg: &Segment) -> Event {
        self.on_segment_at(seg, None)
    }

    /// As `on_segment`, with the segment's capture time: a copy within a millisecond of the
    /// original is a duplicate (seen twice), a later one a retransmission.
    /// The next segment that matches `forged` was not sent by its source's socket: its sender's
    /// state does not change, and `note` says where it came from.
    pub fn forged(&mut self, forged: Forged, note: String) {
        self.forged.push((forged, note));
    }

    pub fn on_segment_at(&mut self, seg: &Segment, at: Option<std::time::Duration>) -> Event {
        let forged = if self.forged.is_empty() {
            None
        } else {
            self.take_forged(seg)
        };
        if let (Some(now), Some(_)) = (at, self.forget_after) {
            self.since_sweep += 1;
            if self.since_sweep >= 4096 {
                self.since_sweep = 0;
                self.sweep(now);
            }
        }
        let key = Key::of(seg.src, seg.dst);
        let fresh_syn = seg.flags.syn() && !seg.flags.ack();
        let hit = match (key, &self.last_other) {
            (Key::V4(k), _) => self.recent.get(k),
            (Key::Other(a, b), Some(((x, y), id))) if (a, b) == (*x, *y) => Some(*id),
            _ => None,
        };
        let known = match hit {
            Some(id) => Some(id),
            None => self.by_tuple.get(&key),
        };
        let id = match known {
            Some(id) if !fresh_syn => id,
            // A SYN or a new 4-tuple: never a plain segment.
            _ => return self.opening(seg, at, forged, key, known),
        };
        // A hit left the cache as it is.
        if hit.is_none() {
            self.remember(key, id);
        }
        let pos = self.index_of(id, seg);
        let conn = &mut self.conns[pos];
        #[cfg(test)]
        let fast = !self.general_only;
        #[cfg(not(test))]
        let fast = true;
        if fast
            && forged.is_none()
            && let Some((from, open)) = plain_from(conn, seg)
        {
            #[cfg(test)]
            {
                self.fast_hits += 1;
            }
            if open {
                return plain(conn, seg, at, id, from);
            }
            return self.acking(pos, id, seg, at, from);
        }
        self.changing(pos, id, seg, at, forged, Vec::new())
    }

    /// `on_segment_at` of a segment that is not plain, once its connection is known: the
    /// general path, or for a SYN or FIN with nothing else to tell, the one that serves it.
    #[inline(always)]
    fn changing(
        &mut self,
        pos: usize,
        id: usize,
        seg: &Segment,
        at: Option<std::time::Duration>,
        forged: Option<String>,
        notes: Vec<Note>,
    ) -> Event {
        #[cfg(test)]
        let fast = !self.general_only;
        #[cfg(not(test))]
        let fast = true;
        if fast
            && forged.is_none()
            && let Some(from) = control_from(&self.conns[pos], seg)
        {
            #[cfg(test)]
            {
                self.control_hits += 1;
            }
            return self.control(pos, id, seg, at, from, notes);
        }
        self.general(pos, id, seg, at, forged, notes)
    }

    /// A `control_from` segment: a SYN, a SYN,ACK or a FIN in order, most often. The general
    /// path's event, without its checks for RST, repeats, gaps, forgeries and the tracker's
    /// own waiting changes (none can apply to it); `notes` are a takeover's.
    #[inline(never)]
    fn control(
        &mut self,
        pos: usize,
        id: usize,
        seg: &Segment,
        at: Option<std::time::Duration>,
        from: Role,
        notes: Vec<Note>,
    ) -> Event {
        let conn = &mut self.conns[pos];
        let to = from.other();
        let mine = &mut conn.sides[from.index()];
        if !mine.has(BASE) {
            mine.set_base(seg.seq);
        }
        let s = seg.seg();
        let space = s.seq_space();
        // Neither a repeat nor after a gap (`control_from`): noted as in the general path,
        // the next moved by the SYN's or FIN's place too.
        let end = seg.seq + space;
        let (rel_seq, rel_ack) = in_order(conn, seg, at, from, space);
        if seg.flags.syn() && from == Role::Client && conn.syn_tsval.is_none() {
            conn.syn_tsval = seg.options.timestamp.map(|(val, _)| val);
        }
        let spare = &mut self.spare;
        let (mut transitions, mut unexpected, mut revise) = (Vec::new(), Vec::new(), Vec::new());
        let mut push =
            |list: &mut Vec<(Role, Transition)>, change| push_spared(spare, list, change);
        // Once for the sender, once for the receiver, written out as in the general path.
        macro_rules! step {
            ($role:expr, $dir:expr) => {
                let (role, dir) = ($role, $dir);
                // SYN or FIN: the whole diagram at once.
                let step = conn.endpoints[role.index()].diagram(&s, dir);
                if let Some(mut t) = step.transition {
                    let side = &mut conn.sides[role.index()];
                    if let Some(first) = besides(side, role, dir, seg, end, &mut t, &mut revise) {
                        push(&mut transitions, first);
                    }
                    push(&mut transitions, (role, t));
                }
                if let Some(u) = step.unexpected {
                    unexpected.push((role, u));
                }
            };
        }
        step!(from, Dir::Sent);
        step!(to, Dir::Received);
        let states = [conn.state(Role::Client), conn.state(Role::Server)];
        queue_if_finished(&mut self.finished, conn, at, self.forget_after.is_some());
        Event {
            conn: id,
            from,
            rel_seq,
            rel_ack,
            transitions,
            states,
            resent: false,
            rare: Rare::boxed(&mut self.spare_rare, unexpected, notes, revise),
        }
    }

    /// A `plain_from` segment with an end not open: the ACK that completes a handshake or a
    /// close, most often. The general path's event, without its checks for SYN, FIN, RST,
    /// repeats and the tracker's own waiting changes (none can apply to it).
    #[inline(never)]
    fn acking(
        &mut self,
        pos: usize,
        id: usize,
        seg: &Segment,
        at: Option<std::time::Duration>,
        from: Role,
    ) -> Event {
        let conn = &mut self.conns[pos];
        let (rel_seq, rel_ack) = in_order(conn, seg, at, from, seg.len);
        let s = seg.seg();
        let (mut transitions, mut unexpected) = (Vec::new(), Vec::new());
        // Written out for each end, as in the general path: a loop over the two cost more.
        macro_rules! step {
            ($role:expr, $dir:expr) => {
                let role = $role;
                let step = conn.endpoints[role.index()].on_segment_here(&s, $dir);
                if let Some(t) = step.transition {
                    push_spared(&mut self.spare, &mut transitions, (role, t));
                }
                if let Some(u) = step.unexpected {
                    unexpected.push((role, u));
                }
            };
        }
        step!(from, Dir::Sent);
        step!(from.other(), Dir::Received);
        queue_if_finished(&mut self.finished, conn, at, self.forget_after.is_some());
        Event {
            conn: id,
            from,
            rel_seq,
            rel_ack,
            transitions,
            states: [conn.state(Role::Client), conn.state(Role::Server)],
            resent: false,
            rare: Rare::boxed(&mut self.spare_rare, unexpected, Vec::new(), Vec::new()),
        }
    }

    /// The note of the forged segment `seg` is, if any (taken: it matches once).
    #[inline(never)]
    fn take_forged(&mut self, seg: &Segment) -> Option<String> {
        self.forged
            .iter()
            .position(|(f, _)| {
                f.src == seg.src && f.dst == seg.dst && f.seq == seg.seq && f.len == seg.len
            })
            .map(|i| self.forged.remove(i).1)
    }

    /// `on_segment_at` of a SYN without ACK, or of a 4-tuple not seen before: the connection
    /// opened, or a new incarnation of a finished one.
    #[inline(never)]
    fn opening(
        &mut self,
        seg: &Segment,
        at: Option<std::time::Duration>,
        forged: Option<String>,
        key: Key,
        known: Option<usize>,
    ) -> Event {
        let mut incarnation = Vec::new();
        let id = match known {
            // A new SYN on a tuple whose previous connection is over: a new incarnation.
            Some(id)
                if self
                    .connection(id)
                    .is_some_and(|c| c.state(Role::Client) != State::SynSent) =>
            {
                if let Some(old) = self.position(id).map(|i| &mut self.conns[i]) {
                    incarnation = take_over(old, seg, self.quiet, &mut self.spare_rare);
                }
                self.open(seg)
            }
            Some(id) => id,
            None => self.open(seg),
        };
        self.remember(key, id);
        let pos = self.index_of(id, seg);
        self.changing(pos, id, seg, at, forged, incarnation)
    }

    /// The last segment's connection.
    #[inline]
    fn remember(&mut self, key: Key, id: usize) {
        match key {
            Key::V4(k) => self.recent.set(k, id),
            Key::Other(a, b) => self.last_other = Some(((a, b), id)),
        }
    }

    /// Where connection `id` is in the list.
    #[inline]
    fn index_of(&mut self, id: usize, seg: &Segment) -> usize {
        // The index and the list agree; were they ever not to, the newest connection serves.
        let pos = self
            .position(id)
            .unwrap_or(self.conns.len().saturating_sub(1));
        if self.conns.is_empty() {
            self.open(seg);
        }
        pos
    }

    /// `on_segment_at` of any segment but the plain ones, once its connection is known.
    #[inline(never)]
    fn general(
        &mut self,
        pos: usize,
        id: usize,
        seg: &Segment,
        at: Option<std::time::Duration>,
        forged: Option<String>,
        incarnation: Vec<Note>,
    ) -> Event {
        let conn = &mut self.conns[pos];
        conn.segments += 1;
        if at.is_some() {
            conn.last_seen = at;
        }
        let from = if seg.src == conn.client {
            Role::Client
        } else {
            Role::Server
        };
        let to = from.other();
        if !conn.sides[from.index()].has(BASE) {
            conn.sides[from.index()].set_base(seg.seq);
        }
        let rel_seq = seg.seq - conn.sides[from.index()].base().unwrap_or(seg.seq);
        let rel_ack = match conn.sides[to.index()].base() {
            Some(base) if seg.flags.ack() => Some(seg.ack - base),
            _ => None,
        };
        let s = seg.seg();
        let mut notes: Vec<Note> = incarnation;
        if seg.flags.syn() && from == Role::Client && conn.syn_tsval.is_none() {
            conn.syn_tsval = seg.options.timestamp.map(|(val, _)| val);
        }
        if conn.segments == 1 && conn.joined_mid {
            push_text(
                &mut notes,
                "joined mid-connection: the capture began after the handshake, the states \
                 before this segment are assumed"
                    .to_string(),
            );
        }
        let side = from.index();
        let space = s.seq_space();
        let this = (seg.seq, seg.len, seg.flags.0);
        // A forged copy is said to be one; its sender's sequence space is not its own.
        let mut resent = false;
        let mut answered_copy = None;
        // An old duplicate from an end with no connection: not its socket's doing.
        let mut old_duplicate = false;
        if space > 0 && forged.is_none() {
            let end = seg.seq + space;
            let acked = conn.sides[side].acked().is_some_and(|a| a.after_or_eq(end));
            match conn.sides[side].next() {
                Some(next)
                    if next.after_or_eq(end)
                        && acked
                        && seg.len > 0
                        && conn.state(from) == State::Closed =>
                {
                    push_text(
                        &mut notes,
                        format!(
                            "an old duplicate: this data was sent and acknowledged before (seq \
                         {rel_seq}..{})",
                            rel_seq.wrapping_add(seg.len)
                        ),
                    );
                    old_duplicate = true;
                }
                Some(next) if next.after_or_eq(end) => {
                    let same = conn.sides[side].last_seg() == Some(this);
                    let (note, again) = repeat(same, conn.last_at[side], at, rel_seq);
                    push_text(&mut notes, note);
                    resent = again;
                    // Known to be sent again, and never acknowledged: say what packets cannot.
                    if again && (at.is_some() || !same) && !acked {
                        push_text(&mut notes, unanswered(seg, to));
                        // No copy answered yet: the receiver's change goes to a later one.
                        if seg.flags.syn() && !seg.flags.ack() && !conn.sides[to.index()].has(BASE)
                        {
                            answered_copy = Some(to);
                        }
                    }
                }
                Some(next) if seg.seq.after_or_eq(next + 1) => push_text(
                    &mut notes,
                    format!(
                        "out of order: {} bytes before it are missing from the capture or come later",
                        seg.seq - next
                    ),
                ),
                _ => {}
            }
            if conn.sides[side]
                .next()
                .is_none_or(|next| end.after_or_eq(next))
            {
                conn.sides[side].set_next(end);
            }
        }
        if forged.is_none() {
            conn.sides[side].set_last_seg(this);
            conn.last_at[side] = at;
        }
        let peer = &mut conn.sides[to.index()];
        if seg.flags.ack() && peer.acked().is_none_or(|a| seg.ack.after_or_eq(a)) {
            peer.set_acked(seg.ack);
        }
        // A list is taken from the spares when a change comes: most segments bring none.
        let spare = &mut self.spare;
        let mut transitions = Vec::new();
        let mut push =
            |list: &mut Vec<(Role, Transition)>, change| push_spared(spare, list, change);
        if conn.pending {
            conn.pending = false;
            self.pending.retain(|&(of, role, t)| {
                if of == id {
                    push(&mut transitions, (role, t));
                }
                of != id
            });
        }
        let mut unexpected = Vec::new();
        let mut revise: Vec<Revise> = Vec::new();
        if let Some(role) = answered_copy {
            revise.push(Revise::AnsweredCopy { role });
        }
        let mut sender_steps = forged.is_none() && !old_duplicate;
        if let Some(note) = forged {
            push_text(&mut notes, note);
        }
        // A RST that answers the FIN which moved its sender FIN_WAIT_2 → TIME_WAIT: a
        // TIME_WAIT socket would have acked it, so none was left (RFC 9293 §3.10.7.1). Its
        // transition is told here, FIN_WAIT_2 → CLOSED, and the FIN's revised: each event's
        // states stay what the tracker knew then, the FIN's fixed by `Revise::apply`.
        if let Some((fin_end, fin_ack)) = conn.sides[side].take_fin_to_tw()
            && sender_steps
            && seg.flags.rst()
            && (if seg.flags.ack() {
                seg.ack == fin_end
            } else {
                seg.seq == fin_ack
            })
            && let Some(mut t) = conn.endpoints[side].remove(
                Cause::Removed("no socket: removed by its timer before this FIN came"),
                "RFC 9293 §3.10.7.1, Linux net.ipv4.tcp_fin_timeout",
            )
        {
            t.from = State::FinWait2;
            push(&mut transitions, (from, t));
            revise.push(Revise::GoneBeforeFin {
                role: from,
                since: State::FinWait2,
            });
            sender_steps = false;
        }
        // Only an endpoint's own step says refused (a removal or a takeover never does).
        let mut refused = false;
        // Once for the sender, once for the receiver: written out, each with its direction
        // known (a loop over the two cost more than most of the body).
        macro_rules! step {
            ($role:expr, $dir:expr) => {
                'step: {
                    let (role, dir) = ($role, $dir);
                    if dir == Dir::Sent && !sender_steps {
                        break 'step;
                    }
                    if dir == Dir::Received
                        && seg.flags.rst()
                        && self.rfc1337 == Some(true)
                        && conn.state(role) == State::TimeWait
                    {
                        push_text(&mut notes, format!(
                            "{role} ignores the RST and stays in TIME_WAIT: net.ipv4.tcp_rfc1337 = 1 \
                             (RFC 1337 §3)"
                        ));
                        break 'step;
                    }
                    let before = conn.state(role);
                    let step = conn.endpoints[role.index()].on_segment(&s, dir);
                    if let Some(mut t) = step.transition {
                        if t.cause == Cause::TimeWaitRst && self.rfc1337.is_none() {
                            t.cause = Cause::TimeWaitRstUnlessRfc1337;
                        }
                        let side = &mut conn.sides[role.index()];
                        let end = seg.seq + space;
                        if let Some(first) = besides(side, role, dir, seg, end, &mut t, &mut revise)
                        {
                            push(&mut transitions, first);
                        }
                        refused |= t.cause == Cause::Refused;
                        push(&mut transitions, (role, t));
                    } else if dir == Dir::Sent
                        && seg.flags.rst()
                        && before == State::SynReceived
                        && conn.state(role) == State::Closed
                    {
                        // The endpoint says SYN_RECEIVED never was: the closed port's reply.
                        revise.push(Revise::Refused { role });
                    }
                    if let Some(u) = step.unexpected {
                        unexpected.push((role, u));
                    }
                }
            };
        }
        step!(from, Dir::Sent);
        step!(to, Dir::Received);
        if refused {
            push_text(
                &mut notes,
                format!(
                    "connection refused: no socket listens on {} (or a firewall answered for it \
                 with a reset), RFC 9293 §3.10.7.1",
                    conn.server
                ),
            );
        }
        let states = [conn.state(Role::Client), conn.state(Role::Server)];
        queue_if_finished(&mut self.finished, conn, at, self.forget_after.is_some());
        Event {
            conn: id,
            from,
            rel_seq,
            rel_ack,
            transitions,
            states,
            resent,
            rare: Rare::boxed(&mut self.spare_rare, unexpected, notes, revise),
        }
    }

    /// Takes back an event that was written, to reuse its list of transitions and its box.
    #[inline]
    pub fn recycle(&mut self, mut event: Event) {
        self.recycle_list(&mut event);
    }

    /// An event's list of transitions taken back where the event lies (another thread's
    /// event, handed back once written): as many as a few batches of events take are kept,
    /// so that none is allocated anew.
    #[inline]
    pub fn recycle_list(&mut self, event: &mut Event) {
        if event.rare.is_some() {
            Rare::recycle(&mut self.spare_rare, &mut event.rare);
        }
        if event.transitions.capacity() > 0 && self.spare.len() < 4096 {
            let mut list = std::mem::take(&mut event.transitions);
            list.clear();
            self.spare.push(list);
        }
    }

    /// The kernel removed `role`'s end of connection `id` without a segment, e.g. by a timer
    /// seen in its socket table: it is CLOSED from now on, and the next segment of the
    /// connection carries the change, with `cause`.
    pub fn remove(&mut self, id: usize, role: Role, cause: &'static str, rfc: &'static str) {
        let Some(pos) = self.position(id) else {
            return;
        };
        let conn = &mut self.conns[pos];
        if let Some(t) = conn.endpoints[role.index()].remove(Cause::Removed(cause), rfc) {
            conn.pending = true;
            self.pending.push((id, role, t));
        }
    }

    #[inline(never)]
    fn open(&mut self, seg: &Segment) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let (client, server, states, joined_mid) = if seg.flags.syn() && !seg.flags.ack() {
            (seg.src, seg.dst, [State::Closed, State::Listen], false)
        } else if seg.flags.syn() {
            // A SYN,ACK first: the client's SYN was missed.
            (seg.dst, seg.src, [State::SynSent, State::Listen], true)
        } else {
            // Joined mid-connection: guess the server as the side with the lower port.
            let (client, server) = if seg.src.port() < seg.dst.port() {
                (seg.dst, seg.src)
            } else {
                (seg.src, seg.dst)
            };
            (
                client,
                server,
                [State::Established, State::Established],
                true,
            )
        };
        self.conns.push(Connection {
            id,
            client,
            server,
            joined_mid,
            endpoints: [Endpoint::new(states[0]), Endpoint::new(states[1])],
            sides: [Side::default(); 2],
            pending: false,
            last_at: [None, None],
            segments: 0,
            last_seen: None,
            syn_tsval: None,
            taken_over: None,
            queued: false,
        });
        let key = Key::of(seg.src, seg.dst);
        self.by_tuple.insert(key, id);
        // The cache agrees with the map.
        if let Key::V4(k) = key {
            self.recent.set(k, id);
        }
        id
    }
}

/// Whether `seg` is an ACK or data of `conn`, in order, with nothing else to tell (no SYN, FIN
/// or RST, no change of the tracker's own waiting, no sequence space sent before or missing
/// before it): who sent it, and whether both ends are open (then neither changes). Nothing
/// changes yet.
#[inline(always)]
fn plain_from(conn: &Connection, seg: &Segment) -> Option<(Role, bool)> {
    if seg.flags.0 & CONTROL != 0 || conn.segments == 0 || conn.pending {
        return None;
    }
    let from = if seg.src == conn.client {
        Role::Client
    } else {
        Role::Server
    };
    let side = from.index();
    // Its first segment sets the base.
    if !conn.sides[side].has(BASE) {
        return None;
    }
    // Sequence space sent before, or a gap before it: the general path's notes.
    let end = seg.seq + seg.len;
    if seg.len > 0
        && let Some(next) = conn.sides[side].next()
        && (next.after_or_eq(end) || seg.seq.after_or_eq(next + 1))
    {
        return None;
    }
    let open = conn.endpoints[side].stays_open() && conn.endpoints[1 - side].stays_open();
    Some((from, open))
}

/// Whether `seg` is a SYN or a FIN of `conn` without RST, in order, with nothing but its
/// changes to tell (no sequence space sent before or missing before it, no change of the
/// tracker's own waiting, not the first segment of a connection joined mid-way): who sent
/// it. Nothing changes yet.
#[inline(always)]
fn control_from(conn: &Connection, seg: &Segment) -> Option<Role> {
    let f = seg.flags.0;
    if f & (Flags::SYN.0 | Flags::FIN.0) == 0
        || f & Flags::RST.0 != 0
        || conn.pending
        || (conn.joined_mid && conn.segments == 0)
    {
        return None;
    }
    let from = if seg.src == conn.client {
        Role::Client
    } else {
        Role::Server
    };
    let space = seg.seg().seq_space();
    // A length that wraps the space to nothing: the general path's.
    if space == 0 {
        return None;
    }
    let end = seg.seq + space;
    match conn.sides[from.index()].next() {
        Some(next) if next.after_or_eq(end) || seg.seq.after_or_eq(next + 1) => None,
        _ => Some(from),
    }
}

/// The first of the two changes crossing FINs make on one segment: the endpoint's own FIN,
/// first on its side of the wire (then the peer's, FIN_WAIT_1 → CLOSING).
const CROSSED_FIRST: Transition = Transition {
    from: State::Established,
    to: State::FinWait1,
    cause: Cause::SentFin,
    rfc: "RFC 9293 §3.10.4",
};

/// `change` onto `list`, which takes one of the spare lists when it has none yet: most
/// segments bring no change, and those that do fill a list handed back.
#[inline(always)]
fn push_spared(
    spare: &mut Vec<Vec<(Role, Transition)>>,
    list: &mut Vec<(Role, Transition)>,
    change: (Role, Transition),
) {
    if list.capacity() == 0
        && let Some(s) = spare.pop()
    {
        *list = s;
    }
    list.push(change);
}

/// What the general path of `on_segment_at` notes of an in-order segment sent by `from`
/// (`plain_from` or `control_from`) that takes `space` sequence numbers, before the endpoints
/// see it: its relative numbers.
#[inline(always)]
fn in_order(
    conn: &mut Connection,
    seg: &Segment,
    at: Option<std::time::Duration>,
    from: Role,
    space: u32,
) -> (u32, Option<u32>) {
    let (side, other) = (from.index(), from.other().index());
    let base = conn.sides[side].base().unwrap_or(seg.seq);
    let end = seg.seq + space;
    conn.segments += 1;
    if at.is_some() {
        conn.last_seen = at;
    }
    let rel_seq = seg.seq - base;
    let rel_ack = match conn.sides[other].base() {
        Some(base) if seg.flags.ack() => Some(seg.ack - base),
        _ => None,
    };
    let mine = &mut conn.sides[side];
    if space > 0 && mine.next().is_none_or(|next| end.after_or_eq(next)) {
        mine.set_next(end);
    }
    mine.set_last_seg((seg.seq, seg.len, seg.flags.0));
    // Taken by any segment its side sends; only a RST could have used it.
    mine.known &= !FIN_TO_TW;
    conn.last_at[side] = at;
    let peer = &mut conn.sides[other];
    if seg.flags.ack() && peer.acked().is_none_or(|a| seg.ack.after_or_eq(a)) {
        peer.set_acked(seg.ack);
    }
    (rel_seq, rel_ack)
}

/// The usual segment of a busy connection, a `plain_from` one with both ends open: the event
/// the general path makes for it, after a few checks.
#[inline(always)]
fn plain(
    conn: &mut Connection,
    seg: &Segment,
    at: Option<std::time::Duration>,
    id: usize,
    from: Role,
) -> Event {
    let (rel_seq, rel_ack) = in_order(conn, seg, at, from, seg.len);
    let rare = conn.endpoints[from.index()]
        .sent_plain(&seg.seg())
        .map(|u| {
            Box::new(Rare {
                unexpected: vec![(from, u)],
                ..Rare::default()
            })
        });
    Event {
        conn: id,
        from,
        rel_seq,
        rel_ack,
        transitions: Vec::new(),
        states: [conn.state(Role::Client), conn.state(Role::Server)],
        resent: false,
        rare,
    }
}

/// What a segment that repeats sequence space is: a copy seen twice (within a millisecond of
/// the original), or a retransmission (then true).
fn repeat(
    same_as_last: bool,
    last_at: Option<std::time::Duration>,
    at: Option<std::time::Duration>,
    rel_seq: u32,
) -> (String, bool) {
    let gap = match (last_at, at) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    match (same_as_last, gap) {
        (true, Some(g)) if g < std::time::Duration::from_millis(1) => (
            "duplicate: the capture saw the previous segment twice".to_string(),
            false,
        ),
        (true, Some(g)) => (
            format!(
                "retransmission of the previous segment after {:.0} ms",
                g.as_secs_f64() * 1000.0
            ),
            true,
        ),
        (true, None) => (
            "a retransmission or a duplicate of the previous segment".to_string(),
            true,
        ),
        (false, _) => (
            format!("retransmission: seq {rel_seq} was sent before"),
            true,
        ),
    }
}

/// Why a segment was sent again with no ACK of it in between, as far as packets tell: the
/// capture may sit before the loss, so the copy that changed `peer` may be a later one.
pub fn unanswered(seg: &Segment, peer: Role) -> String {
    let f = seg.flags;
    if f.syn() && !f.ack() {
        "the SYN sent again (no SYN,ACK came: lost, or dropped before the server)".to_string()
    } else if f.syn() {
        "the SYN,ACK sent again (no ACK came: lost, or dropped before the client)".to_string()
    } else if f.fin() {
        format!(
            "the FIN sent again with no ACK of it in between: its ACK was lost or never sent (or \
             the first FIN was lost after the capture point, and the {peer}'s change came with \
             this copy)"
        )
    } else {
        format!(
            "sent again with no ACK of it in between: the first copy, or its ACK, may have been \
             lost after the capture point (then this copy is the one the {peer} received)"
        )
    }
}

/// The two ways a new SYN on its 4-tuple ends a TIME_WAIT, by role: every takeover is one of
/// them, so a connection points at its own instead of allocating a copy.
static TAKEN_OVER: [(Role, Transition); 2] = [
    (
        Role::Client,
        Transition {
            from: State::TimeWait,
            to: State::Closed,
            cause: Cause::Removed("its kernel reused the port for a new connection"),
            rfc: "Linux net.ipv4.tcp_tw_reuse, RFC 7323 §5",
        },
    ),
    (
        Role::Server,
        Transition {
            from: State::TimeWait,
            to: State::Closed,
            cause: Cause::Removed("a new SYN on the same 4-tuple took it over"),
            rfc: "RFC 6191",
        },
    ),
];

/// A new SYN on the 4-tuple of `old`: when an end of `old` is still in TIME_WAIT, the kernel
/// destroys it (the client's port taken over by tcp_tw_reuse, or the server's TIME_WAIT
/// accepting a new connection, RFC 6191): `old` ends there, CLOSED. What the SYN's comment says.
fn take_over(
    old: &mut Connection,
    seg: &Segment,
    quiet: bool,
    spare: &mut [Box<Rare>],
) -> Vec<Note> {
    let role = if old.state(Role::Client) == State::TimeWait {
        Role::Client
    } else if old.state(Role::Server) == State::TimeWait {
        Role::Server
    } else {
        return Vec::new();
    };
    let t = &TAKEN_OVER[role.index()].1;
    // The state is TIME_WAIT: the removal is `t`.
    old.endpoints[role.index()].remove(t.cause, t.rfc);
    old.taken_over = Some(TakenOver(role));
    if quiet {
        return Vec::new();
    }
    let takeover = Takeover {
        old: old.id,
        role,
        tsval: seg.options.timestamp.map(|(val, _)| val),
        old_tsval: old.syn_tsval,
    };
    // The list of the box the event will take (`Rare::new_box`), where one was handed back.
    let mut notes = spare
        .last_mut()
        .map(|r| std::mem::take(&mut r.notes))
        .unwrap_or_default();
    notes.extend([Note::Reincarnation(takeover), Note::TakenOver(takeover)]);
    notes
}

/// A note's words onto the list.
fn push_text(notes: &mut Vec<Note>, text: String) {
    notes.push(Note::Text(text));
}

/// One of an event's notes: words, or a takeover of a TIME_WAIT told as data and put into
/// words where it is written. On a busy server most SYNs carry the two of a takeover: made
/// as strings on the tracking thread, their allocations alone were a tenth of its time.
/// Two notes are equal where they are the same note (a takeover's words are never made a
/// `Text`); a note and a `str` where its words are the string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    Text(String),
    /// What the new SYN is: `reincarnation`'s words.
    Reincarnation(Takeover),
    /// `connection N: server TIME_WAIT → CLOSED (...)`: what it did to the old connection.
    TakenOver(Takeover),
}

/// A new SYN on the 4-tuple of connection `old`, whose `role` end was in TIME_WAIT, with the
/// new SYN's and the old connection's first TSval (RFC 7323).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takeover {
    pub old: usize,
    pub role: Role,
    pub tsval: Option<u32>,
    pub old_tsval: Option<u32>,
}

impl Note {
    /// Its words onto `s`.
    pub fn push_to(&self, s: &mut String) {
        match self {
            Note::Text(text) => s.push_str(text),
            Note::Reincarnation(t) => reincarnation(t, s),
            Note::TakenOver(t) => {
                s.push_str("connection ");
                crate::output::text::push_u64(s, t.old as u64);
                s.push_str(": ");
                s.push_str(&taken_over_words()[t.role.index()]);
            }
        }
    }

    /// Its words, borrowed where they are kept as words.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Note::Text(text) => text.as_str().into(),
            _ => {
                let mut s = String::new();
                self.push_to(&mut s);
                s.into()
            }
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl From<String> for Note {
    fn from(text: String) -> Note {
        Note::Text(text)
    }
}

impl PartialEq<str> for Note {
    fn eq(&self, other: &str) -> bool {
        match self {
            Note::Text(text) => text == other,
            _ => self.text() == other,
        }
    }
}

impl PartialEq<&str> for Note {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for Note {
    fn eq(&self, other: &String) -> bool {
        *self == **other
    }
}

/// The takeover note after its connection's number, by the end taken over: the change and
/// its cause, the same on every SYN that takes a TIME_WAIT over, so written once.
fn taken_over_words() -> &'static [String; 2] {
    static WORDS: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    WORDS.get_or_init(|| {
        TAKEN_OVER.map(|(role, t)| {
            let mut s = String::new();
            push_change(&mut s, role, &t);
            for part in [t.cause.text(), ", ", t.rfc, ")"] {
                s.push_str(part);
            }
            s
        })
    })
}

/// What a new SYN on the 4-tuple of an old connection says, when an end of it is still in
/// TIME_WAIT: the client's port taken over (tcp_tw_reuse), or the server's TIME_WAIT asked to
/// accept a new connection (RFC 6191), `role` the end in TIME_WAIT. Timestamps are what make
/// either safe.
fn reincarnation(t: &Takeover, s: &mut String) {
    use crate::output::text::push_u64;
    let stamps = |s: &mut String| match (t.tsval, t.old_tsval) {
        (Some(n), Some(o)) => {
            s.push_str("its TSval ");
            push_u64(s, n.into());
            s.push_str(if SeqNum(n).after_or_eq(SeqNum(o) + 1) {
                " is newer than the old connection's ("
            } else {
                " is not newer than the old connection's ("
            });
            push_u64(s, o.into());
            s.push_str(" on its SYN)");
        }
        (Some(n), None) => {
            s.push_str("its TSval is ");
            push_u64(s, n.into());
        }
        _ => s.push_str("it carries no timestamp"),
    };
    if t.role == Role::Client {
        s.push_str("a new connection on the 4-tuple of connection ");
        push_u64(s, t.old as u64);
        s.push_str(
            ", whose client end is in TIME_WAIT: the client's kernel took the port over \
             (net.ipv4.tcp_tw_reuse); ",
        );
        stamps(s);
        s.push_str(", so the peer's PAWS check tells old segments from new (RFC 7323 §5)");
    } else {
        s.push_str("a new SYN for the 4-tuple of connection ");
        push_u64(s, t.old as u64);
        s.push_str(
            ", whose server end is in TIME_WAIT: TIME_WAIT may accept it when its sequence \
             number or timestamp is newer than the old connection's (RFC 6191); ",
        );
        stamps(s);
    }
}

/// `server FIN_WAIT_1 → TIME_WAIT (`: how a comment and a note name a change, up to its
/// cause.
pub fn push_change(s: &mut String, role: Role, t: &Transition) {
    for part in [role.name(), " ", t.from.name(), " → ", t.to.name(), " ("] {
        s.push_str(part);
    }
}

/// A connection a segment left with both ends done joins the sweep's queue of a forgetful
/// tracker, once, with that segment's time.
fn queue_if_finished(
    queue: &mut VecDeque<(std::time::Duration, usize)>,
    conn: &mut Connection,
    at: Option<std::time::Duration>,
    forgetful: bool,
) {
    // A tracker that keeps all (`summary`'s) asks nothing more of the connection.
    if !forgetful {
        return;
    }
    if let Some(t) = at
        && !conn.queued
        && finished(conn)
    {
        conn.queued = true;
        queue.push_back((t, conn.id));
    }
}

/// Both ends CLOSED or TIME_WAIT: nothing but a late retransmission can come.
fn finished(c: &Connection) -> bool {
    let done = |s: State| matches!(s, State::Closed | State::TimeWait);
    done(c.state(Role::Client)) && done(c.state(Role::Server))
}

/// A connection's 4-tuple, the same for both directions (`tuple`'s order). An IPv4 tuple is
/// packed into one number, its lower end (address, port) in the upper half, each end in 48
/// bits of its half (no shift across the halves): compared and hashed as one number, made
/// once per segment; IPv6 tuples keep their addresses whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    V4(u128),
    Other(SocketAddr, SocketAddr),
}

impl Key {
    #[inline]
    fn of(a: SocketAddr, b: SocketAddr) -> Key {
        match (a, b) {
            (SocketAddr::V4(a), SocketAddr::V4(b)) => {
                // (address, port) as one number orders as `SocketAddrV4` does.
                let end = |e: std::net::SocketAddrV4| {
                    (u64::from(e.ip().to_bits()) << 16) | u64::from(e.port())
                };
                let (a, b) = (end(a), end(b));
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                Key::V4((u128::from(lo) << 64) | u128::from(hi))
            }
            _ => {
                let (a, b) = tuple(a, b);
                Key::Other(a, b)
            }
        }
    }
}

/// Connection ids of recent IPv4 4-tuples, by a few bits of their key: found without a look
/// in the map. It agrees with the map: an entry is set where the map was read or written, and
/// all are cleared when the map loses any.
struct Recent(Box<[(u128, usize); RECENT]>);

const RECENT: usize = 256;

impl Default for Recent {
    fn default() -> Recent {
        // No key is all ones: each end takes 48 bits of its half.
        Recent(Box::new([(u128::MAX, 0); RECENT]))
    }
}

impl Recent {
    /// Both ends' ports and addresses mixed into the top bits (a server's clients differ
    /// mostly in their ports).
    #[inline]
    fn slot(k: u128) -> usize {
        let x = (k as u64) ^ ((k >> 64) as u64);
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
    }
    #[inline]
    fn get(&self, k: u128) -> Option<usize> {
        let (key, id) = self.0[Recent::slot(k)];
        (key == k).then_some(id)
    }
    #[inline]
    fn set(&mut self, k: u128, id: usize) {
        self.0[Recent::slot(k)] = (k, id);
    }
    fn clear(&mut self) {
        self.0.fill((u128::MAX, 0));
    }
}

/// Connection ids by 4-tuple, under a fast hash: an IPv4 entry takes 24 bytes where the pair
/// of `SocketAddr`s takes 72, so that 100k of them stay in the caches.
#[derive(Default)]
struct Tuples {
    v4: HashMap<u128, usize, BuildHasherDefault<TupleHasher>>,
    other: HashMap<(SocketAddr, SocketAddr), usize, BuildHasherDefault<TupleHasher>>,
}

impl Tuples {
    #[inline]
    fn get(&self, key: &Key) -> Option<usize> {
        match key {
            Key::V4(k) => self.v4.get(k).copied(),
            Key::Other(a, b) => self.other.get(&(*a, *b)).copied(),
        }
    }
    fn insert(&mut self, key: Key, id: usize) {
        match key {
            Key::V4(k) => self.v4.insert(k, id),
            Key::Other(a, b) => self.other.insert((a, b), id),
        };
    }
    fn remove(&mut self, key: &Key) {
        match key {
            Key::V4(k) => self.v4.remove(k),
            Key::Other(a, b) => self.other.remove(&(*a, *b)),
        };
    }
}

/// The hash of the 4-tuple map: Fx's multiply-rotate over each word written (the bytes and
/// ports `SocketAddr` hashes), then a 64-bit finaliser so that every bit of the key reaches
/// the bits hashbrown picks buckets and tags with. SipHash guards against chosen keys, which
/// a capture's addresses are not worth; it was a tenth of the time on 100k connections.
#[derive(Default, Clone, Copy)]
pub struct TupleHasher(u64);

impl TupleHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(26);
    }
}

impl Hasher for TupleHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }
    fn write_u16(&mut self, n: u16) {
        self.add(n.into());
    }
    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        // murmur3's fmix64.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The same key for both directions.
fn tuple(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::TcpOptions;
    use crate::tcp::Flags;

    pub(crate) const CLIENT: &str = "127.0.0.2:40000";
    pub(crate) const SERVER: &str = "127.0.0.1:8000";

    pub(crate) fn segment(
        from_client: bool,
        flags: Flags,
        seq: u32,
        ack: u32,
        len: u32,
    ) -> Segment {
        let (c, s) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
        let (src, dst) = if from_client { (c, s) } else { (s, c) };
        Segment {
            src,
            dst,
            flags,
            seq: SeqNum(seq),
            ack: SeqNum(ack),
            window: 512,
            len,
            captured: len,
            options: TcpOptions::default(),
        }
    }

    const A: Flags = Flags::ACK;
    const PA: Flags = Flags(Flags::PSH.0 | Flags::ACK.0);
    const FA: Flags = Flags(Flags::FIN.0 | Flags::ACK.0);

    /// The article's exchange with the server closing first, as the kernel sends it.
    pub(crate) fn active_close(merged: bool) -> Vec<Segment> {
        let mut segs = vec![
            segment(true, Flags::SYN, 100, 0, 0),
            segment(false, Flags::SYN | A, 900, 101, 0),
            segment(true, A, 101, 901, 0),
            segment(true, PA, 101, 901, 11),
            segment(false, A, 901, 112, 0),
            segment(false, PA, 901, 112, 11),
            segment(true, A, 112, 912, 0),
            segment(false, FA, 912, 112, 0),
        ];
        if !merged {
            segs.push(segment(true, A, 112, 913, 0));
        }
        segs.push(segment(true, FA, 112, 913, 0));
        segs.push(segment(false, A, 913, 113, 0));
        segs
    }

    /// The article's opening, then both ends send their FIN before either has the other's:
    /// the server's FIN first, then the client's, which does not ack it.
    pub(crate) fn crossing_fins() -> Vec<Segment> {
        let mut segs = active_close(false);
        segs.truncate(7);
        segs.extend([
            segment(false, FA, 912, 112, 0),
            segment(true, FA, 112, 912, 0),
            segment(true, A, 113, 913, 0),
            segment(false, A, 913, 113, 0),
        ]);
        segs
    }

    fn run(segs: &[Segment]) -> (Tracker, Vec<Event>) {
        let mut tracker = Tracker::new();
        let events = segs.iter().map(|s| tracker.on_segment(s)).collect();
        (tracker, events)
    }

    fn moves(ev: &Event) -> Vec<(Role, State, State)> {
        ev.transitions
            .iter()
            .map(|(r, t)| (*r, t.from, t.to))
            .collect()
    }

    #[test]
    fn a_connection_takes_at_most_256_bytes() {
        // A busy server's capture holds 100k of them to the end (`summary`): at 368 bytes
        // they were most of its memory.
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 256, "{size}");
    }

    #[test]
    fn an_event_takes_at_most_64_bytes() {
        // Moved from the tracker through the look-ahead and the writer and back, several
        // times per segment: at 120 bytes the moves showed in a busy server's profile.
        let size = std::mem::size_of::<Event>();
        assert!(size <= 64, "{size}");
    }

    #[test]
    fn four_segment_close_states_per_segment() {
        use Role::*;
        use State::*;
        let (tracker, events) = run(&active_close(false));
        assert_eq!(tracker.connections().len(), 1);
        let conn = &tracker.connections()[0];
        assert_eq!(conn.client, CLIENT.parse().unwrap());
        assert!(!conn.joined_mid);
        // SYN_RECEIVED is entered when the SYN arrives, before the SYN,ACK goes out.
        assert_eq!(
            moves(&events[0]),
            [(Client, Closed, SynSent), (Server, Listen, SynReceived)]
        );
        assert_eq!(moves(&events[1]), [(Client, SynSent, Established)]);
        assert_eq!(moves(&events[2]), [(Server, SynReceived, Established)]);
        assert!(events[3..7].iter().all(|e| e.transitions.is_empty()));
        assert_eq!(
            moves(&events[7]),
            [
                (Server, Established, FinWait1),
                (Client, Established, CloseWait)
            ]
        );
        assert_eq!(moves(&events[8]), [(Server, FinWait1, FinWait2)]);
        assert_eq!(
            moves(&events[9]),
            [(Client, CloseWait, LastAck), (Server, FinWait2, TimeWait)]
        );
        assert_eq!(moves(&events[10]), [(Client, LastAck, Closed)]);
        assert_eq!(conn.state(Server), TimeWait);
        assert_eq!(conn.state(Client), Closed);
        assert!(events.iter().all(|e| e.unexpected().is_empty()));
    }

    #[test]
    fn three_segment_close_skips_fin_wait_2() {
        use Role::*;
        use State::*;
        let (_, events) = run(&active_close(true));
        assert_eq!(
            moves(&events[8]),
            [(Client, CloseWait, LastAck), (Server, FinWait1, TimeWait)]
        );
        assert_eq!(moves(&events[9]), [(Client, LastAck, Closed)]);
    }

    #[test]
    fn relative_numbers_count_from_each_side_isn() {
        let (_, events) = run(&active_close(false));
        assert_eq!((events[0].rel_seq, events[0].rel_ack), (0, None));
        assert_eq!((events[1].rel_seq, events[1].rel_ack), (0, Some(1)));
        assert_eq!((events[5].rel_seq, events[5].rel_ack), (1, Some(12)));
        assert_eq!((events[7].rel_seq, events[7].rel_ack), (12, Some(12)));
        assert_eq!((events[10].rel_seq, events[10].rel_ack), (13, Some(13)));
    }

    #[test]
    fn joined_mid_connection_guesses_roles_by_port() {
        let (tracker, events) = run(&active_close(false)[5..]);
        let conn = &tracker.connections()[0];
        assert!(conn.joined_mid);
        assert_eq!(conn.server, SERVER.parse().unwrap());
        assert_eq!(events[0].from, Role::Server);
        assert_eq!(conn.state(Role::Server), State::TimeWait);
    }

    #[test]
    fn retransmissions_duplicates_and_gaps_are_named() {
        let mut segs = active_close(false);
        // The server's reply again (a retransmission), then the same segment once more
        // (a duplicate), then a data segment after a gap.
        let reply = segs[5].clone();
        segs.insert(6, reply.clone());
        segs.insert(7, reply);
        let mut tracker = Tracker::new();
        let ms = std::time::Duration::from_millis;
        let times = [0, 1, 2, 3, 4, 5, 205, 205, 206, 207, 208, 209, 210];
        let events: Vec<Event> = segs
            .iter()
            .zip(times)
            .map(|(s, t)| tracker.on_segment_at(s, Some(ms(t))))
            .collect();
        assert!(events[5].notes().is_empty());
        assert_eq!(
            events[6].notes(),
            [
                "retransmission of the previous segment after 200 ms",
                "sent again with no ACK of it in between: the first copy, or its ACK, may have \
                 been lost after the capture point (then this copy is the one the client \
                 received)"
            ]
        );
        assert_eq!(
            events[7].notes(),
            ["duplicate: the capture saw the previous segment twice"]
        );
        let (_, untimed) = run(&segs);
        assert_eq!(
            untimed[6].notes(),
            ["a retransmission or a duplicate of the previous segment"]
        );
        let mut gap = segment(true, PA, 112 + 100, 901, 5);
        gap.len = 5;
        let (_, events) = run(&[active_close(false)[..7].to_vec(), vec![gap]].concat());
        assert_eq!(
            events[7].notes(),
            ["out of order: 100 bytes before it are missing from the capture or come later"]
        );
    }

    #[test]
    fn a_mid_connection_join_is_said_once() {
        let (_, events) = run(&active_close(false)[5..]);
        assert_eq!(events[0].notes().len(), 1);
        assert!(
            events[0].notes()[0]
                .text()
                .starts_with("joined mid-connection")
        );
        assert!(events[1].notes().is_empty());
    }

    #[test]
    fn a_forgetful_tracker_keeps_only_recent_and_open_connections() {
        let mut tracker = Tracker::forgetful(std::time::Duration::from_secs(60));
        let mut open_one = active_close(false)[..3].to_vec();
        for s in &mut open_one {
            // One connection that never closes, on its own ports.
            if s.src.port() == 40000 {
                s.src.set_port(40001);
            } else {
                s.dst.set_port(40001);
            }
        }
        for s in &open_one {
            tracker.on_segment_at(s, Some(std::time::Duration::ZERO));
        }
        for i in 0..5000u64 {
            for mut s in active_close(false) {
                // Each its own client port, one connection a second.
                let port = 1024 + (i % 60000) as u16;
                if s.src.port() == 40000 {
                    s.src.set_port(port);
                } else {
                    s.dst.set_port(port);
                }
                tracker.on_segment_at(&s, Some(std::time::Duration::from_secs(i)));
            }
        }
        let kept = tracker.connections().len();
        assert!(kept < 600, "{kept} connections kept");
        // The open one is never forgotten; ids stay unique and findable.
        assert!(
            tracker
                .connection(0)
                .is_some_and(|c| c.state(Role::Server) == State::Established)
        );
        let newest = tracker.connections().last().unwrap().id;
        assert_eq!(newest, 5000);
        assert_eq!(tracker.connection(newest).unwrap().id, newest);
    }

    /// A closed 4-tuple that goes on receiving segments (the last ACK again and again) is one
    /// entry in the queue of finished connections, not one per segment: memory stays flat.
    #[test]
    fn a_finished_connection_is_queued_once_and_still_forgotten() {
        let mut tracker = Tracker::forgetful(std::time::Duration::from_secs(60));
        let segs = active_close(false);
        let last = segs.last().unwrap().clone();
        for s in &segs {
            tracker.on_segment_at(s, Some(std::time::Duration::ZERO));
        }
        for i in 0..10_000u64 {
            tracker.on_segment_at(&last, Some(std::time::Duration::from_millis(i)));
        }
        assert_eq!(tracker.finished.len(), 1);
        // Long after its last segment, the next sweep forgets it.
        let mut other = active_close(false);
        for s in &mut other {
            if s.src.port() == 40000 {
                s.src.set_port(40001);
            } else {
                s.dst.set_port(40001);
            }
        }
        for i in 0..5000u64 {
            // Its handshake, then its first data segment again and again.
            let s = &other[(i as usize).min(3)];
            tracker.on_segment_at(s, Some(std::time::Duration::from_secs(100 + i / 1000)));
        }
        assert!(
            tracker.connection(0).is_none(),
            "the closed connection was forgotten"
        );
        assert!(tracker.connection(1).is_some());
        // Its 4-tuple again: a connection of its own, joined mid-way, not the forgotten one's
        // place in a cache taken for another's.
        let event = tracker.on_segment_at(&last, Some(std::time::Duration::from_secs(200)));
        assert_eq!(event.conn, 2);
        assert!(tracker.connection(2).is_some_and(|c| c.joined_mid));
        assert_eq!(tracker.connection(1).map(|c| c.segments), Some(5000));
    }

    #[test]
    fn a_new_syn_after_close_is_a_new_connection() {
        let mut segs = active_close(false);
        segs.push(segment(true, Flags::SYN, 5000, 0, 0));
        let (tracker, events) = run(&segs);
        assert_eq!(tracker.connections().len(), 2);
        assert_eq!(events.last().unwrap().conn, 1);
    }

    #[test]
    fn an_endpoint_removed_by_its_timer_answers_the_late_fin_with_rst() {
        use Role::*;
        use State::*;
        // The server closes; the client acks but keeps its end open (client-never-closes).
        let mut segs = active_close(false);
        segs.truncate(9);
        let mut tracker = Tracker::new();
        for s in &segs {
            tracker.on_segment(s);
        }
        assert_eq!(tracker.connections()[0].state(Server), FinWait2);
        tracker.remove(0, Server, "its FIN_WAIT_2 timer", "Linux tcp_fin_timeout");
        assert_eq!(tracker.connections()[0].state(Server), Closed);
        // Much later the client closes: its FIN finds no socket, and a RST answers it.
        let fin = tracker.on_segment(&segment(true, FA, 112, 913, 0));
        assert_eq!(
            moves(&fin),
            [(Server, FinWait2, Closed), (Client, CloseWait, LastAck)]
        );
        assert_eq!(fin.transitions[0].1.cause.text(), "its FIN_WAIT_2 timer");
        assert!(fin.unexpected().is_empty(), "{fin:?}");
        let rst = tracker.on_segment(&segment(false, Flags::RST, 913, 0, 0));
        assert_eq!(moves(&rst), [(Client, LastAck, Closed)]);
        assert!(rst.unexpected().is_empty(), "{rst:?}");
        // Removing it again changes nothing more.
        tracker.remove(0, Server, "again", "none");
        let ack = tracker.on_segment(&segment(true, A, 113, 913, 0));
        assert!(ack.transitions.is_empty());
    }

    /// `segs` fed at 0, 200, 400... ms.
    fn run_timed(tracker: &mut Tracker, segs: &[Segment]) -> Vec<Event> {
        segs.iter()
            .enumerate()
            .map(|(i, s)| {
                let at = std::time::Duration::from_millis(200 * i as u64);
                tracker.on_segment_at(s, Some(at))
            })
            .collect()
    }

    #[test]
    fn a_syn_answered_by_rst_ack_is_refused_and_no_server_socket_was() {
        use Role::*;
        use State::*;
        let segs = [
            segment(true, Flags::SYN, 100, 0, 0),
            segment(false, Flags::RST | A, 0, 101, 0),
        ];
        let (tracker, mut events) = run(&segs);
        let rst = &events[1];
        assert_eq!(moves(rst), [(Client, SynSent, Closed)], "{rst:?}");
        assert_eq!(rst.transitions[0].1.cause, Cause::Refused);
        assert_eq!(
            rst.notes(),
            [
                "connection refused: no socket listens on 127.0.0.1:8000 (or a firewall answered \
              for it with a reset), RFC 9293 §3.10.7.1"
            ]
        );
        assert_eq!(rst.states, [Closed, Closed]);
        assert!(rst.unexpected().is_empty());
        assert_eq!(rst.revise(), [Revise::Refused { role: Server }]);
        // Applied to the SYN: the server never was LISTEN → SYN_RECEIVED.
        let revise = rst.revise()[0];
        assert!(revise.apply(&mut events[0]));
        assert_eq!(moves(&events[0]), [(Client, Closed, SynSent)]);
        assert_eq!(events[0].states, [SynSent, Closed]);
        assert_eq!(
            events[0].notes(),
            [
                "the server had no socket listening: the RST,ACK that answers this SYN proves it \
              (RFC 9293 §3.10.7.1)"
            ]
        );
        let conn = &tracker.connections()[0];
        assert_eq!((conn.state(Client), conn.state(Server)), (Closed, Closed));
        // A RST after the server's SYN,ACK is an abort of a socket that was.
        let (_, events) = run(&[
            segs[0].clone(),
            segment(false, Flags::SYN | A, 900, 101, 0),
            segment(false, Flags::RST | A, 901, 101, 0),
        ]);
        assert_eq!(
            moves(&events[2]),
            [(Server, SynReceived, Closed), (Client, Established, Closed)]
        );
        assert!(events[2].revise().is_empty());
    }

    #[test]
    fn a_syn_or_syn_ack_sent_again_is_normal_and_says_why() {
        let syn = segment(true, Flags::SYN, 100, 0, 0);
        let syn_ack = segment(false, Flags::SYN | A, 900, 101, 0);
        let mut tracker = Tracker::new();
        let events = run_timed(&mut tracker, &[syn.clone(), syn, syn_ack.clone(), syn_ack]);
        for (ev, note) in [
            (
                &events[1],
                "the SYN sent again (no SYN,ACK came: lost, or dropped before the server)",
            ),
            (
                &events[3],
                "the SYN,ACK sent again (no ACK came: lost, or dropped before the client)",
            ),
        ] {
            assert!(ev.unexpected().is_empty(), "{ev:?}");
            assert!(ev.transitions.is_empty(), "{ev:?}");
            assert_eq!(
                ev.notes(),
                ["retransmission of the previous segment after 200 ms", note]
            );
        }
        assert_eq!(events[2].states, [State::Established, State::SynReceived]);
    }

    #[test]
    fn a_new_syn_on_the_tuple_ends_the_old_time_wait() {
        use Role::*;
        use State::*;
        // The server's TIME_WAIT accepts a new SYN (RFC 6191).
        let mut segs = active_close(false);
        segs.push(segment(true, Flags::SYN, 5000, 0, 0));
        let (tracker, events) = run(&segs);
        let old = tracker.connection(0).unwrap();
        assert_eq!((old.state(Client), old.state(Server)), (Closed, Closed));
        let (role, t) = *old.taken_over.unwrap();
        assert_eq!((role, t.from, t.to), (Server, TimeWait, Closed));
        let syn = events.last().unwrap();
        assert_eq!(syn.conn, 1);
        let said = [
            "a new SYN for the 4-tuple of connection 0, whose server end is in TIME_WAIT: \
             TIME_WAIT may accept it when its sequence number or timestamp is newer than the old \
             connection's (RFC 6191); it carries no timestamp",
            "connection 0: server TIME_WAIT → CLOSED (a new SYN on the same 4-tuple took it \
             over, RFC 6191)",
        ];
        assert_eq!(syn.notes(), said);
        // The notes are data until written: the comment has their words, in order.
        let comment = crate::annotate::comment(syn);
        assert!(
            comment.ends_with(&format!("; {}; {}", said[0], said[1])),
            "{comment}"
        );
        // The client's TIME_WAIT, its port taken over by tcp_tw_reuse.
        let (mut tracker, events) = run(&[
            segment(true, Flags::SYN, 100, 0, 0),
            segment(false, Flags::SYN | A, 900, 101, 0),
            segment(true, A, 101, 901, 0),
            segment(true, FA, 101, 901, 0),
            segment(false, FA, 901, 102, 0),
            segment(true, A, 102, 902, 0),
        ]);
        assert_eq!(events[5].states, [TimeWait, Closed]);
        let syn = tracker.on_segment(&segment(true, Flags::SYN, 7000, 0, 0));
        assert_eq!(tracker.connection(0).unwrap().state(Client), Closed);
        assert_eq!(
            syn.notes()[0].to_string(),
            "a new connection on the 4-tuple of connection 0, whose client end is in TIME_WAIT: \
             the client's kernel took the port over (net.ipv4.tcp_tw_reuse); it carries no \
             timestamp, so the peer's PAWS check tells old segments from new (RFC 7323 §5)"
        );
        assert_eq!(
            syn.notes().last().unwrap(),
            "connection 0: client TIME_WAIT → CLOSED (its kernel reused the port for a new \
             connection, Linux net.ipv4.tcp_tw_reuse, RFC 7323 §5)"
        );
    }

    #[test]
    fn an_event_takes_a_recycled_box_without_the_lists_of_its_last_event() {
        // A second 4-tuple: the client's port 40001.
        let other = |mut s: Segment| {
            for end in [&mut s.src, &mut s.dst] {
                if end.port() == 40000 {
                    end.set_port(40001);
                }
            }
            s
        };
        let mut segs = active_close(false);
        segs.extend(active_close(false).into_iter().map(other));
        let syns = [
            segment(true, Flags::SYN, 5000, 0, 0),
            other(segment(true, Flags::SYN, 5000, 0, 0)),
        ];
        // What the second takeover's event is where no box comes back.
        let (mut fresh, _) = run(&segs);
        fresh.on_segment(&syns[0]);
        let want = fresh.on_segment(&syns[1]);
        assert_eq!(want.notes().len(), 2, "{want:?}");
        let (mut tracker, _) = run(&segs);
        let mut first = tracker.on_segment(&syns[0]);
        // What the annotator adds before the event comes back written.
        first.push_note("written".to_string());
        first.set_revise(vec![Revise::CrossedFin { role: Role::Client }]);
        tracker.recycle_list(&mut first);
        assert!(!first.rare_on_heap());
        assert_eq!(tracker.spare_rare.len(), 1);
        let second = tracker.on_segment(&syns[1]);
        assert!(
            tracker.spare_rare.is_empty(),
            "the box handed back is taken"
        );
        assert_eq!(second, want);
        assert_eq!(
            second.notes()[1].to_string(),
            "connection 1: server TIME_WAIT → CLOSED (a new SYN on the same 4-tuple took it \
             over, RFC 6191)"
        );
    }

    #[test]
    fn a_takeover_note_compares_the_new_syns_tsval_with_the_old_connections() {
        let stamped = |seg: Segment, tsval: Option<u32>| Segment {
            options: TcpOptions {
                timestamp: tsval.map(|val| (val, 0)),
                ..TcpOptions::default()
            },
            ..seg
        };
        // The server's TIME_WAIT, the old connection's SYN stamped 1000 or not at all.
        let said = |old: Option<u32>, new: Option<u32>| {
            let mut segs = active_close(false);
            segs[0] = stamped(segs[0].clone(), old);
            segs.push(stamped(segment(true, Flags::SYN, 5000, 0, 0), new));
            let (_, events) = run(&segs);
            let syn = events.last().unwrap();
            assert!(matches!(syn.notes()[0], Note::Reincarnation(_)), "{syn:?}");
            let text = syn.notes()[0].to_string();
            text.split("(RFC 6191); ").nth(1).unwrap().to_string()
        };
        assert_eq!(
            said(Some(1000), Some(1001)),
            "its TSval 1001 is newer than the old connection's (1000 on its SYN)"
        );
        // Equal is not newer.
        assert_eq!(
            said(Some(1000), Some(1000)),
            "its TSval 1000 is not newer than the old connection's (1000 on its SYN)"
        );
        assert_eq!(said(None, Some(7)), "its TSval is 7");
        assert_eq!(said(Some(1000), None), "it carries no timestamp");
    }

    #[test]
    fn a_rst_in_time_wait_says_unless_where_rfc1337_is_unknown() {
        use Role::*;
        use State::*;
        let rst = segment(true, Flags::RST, 113, 0, 0);
        let mut segs = active_close(false);
        segs.push(rst.clone());
        let (_, events) = run(&segs);
        let t = events.last().unwrap().transition(Server).unwrap();
        assert_eq!((t.from, t.to), (TimeWait, Closed));
        assert_eq!(
            t.cause.text(),
            "received RST in TIME_WAIT: TIME-WAIT assassination (unless net.ipv4.tcp_rfc1337 = \
             1, which makes TIME_WAIT ignore it: RFC 1337)"
        );
        // Known (a run sets it): stated as fact either way.
        for (known, ends) in [(false, true), (true, false)] {
            let mut tracker = Tracker::new();
            tracker.rfc1337 = Some(known);
            let ev = segs.iter().map(|s| tracker.on_segment(s)).last().unwrap();
            match ev.transition(Server) {
                Some(t) => {
                    assert!(ends);
                    assert_eq!(t.cause, Cause::TimeWaitRst);
                }
                None => {
                    assert!(!ends);
                    assert!(
                        ev.notes()[0].text().starts_with("server ignores the RST"),
                        "{ev:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_fin_sent_again_without_an_ack_says_its_ack_was_lost() {
        // lost-final-ack: the client's FIN (LAST_ACK) four times, the server's ACKs dropped.
        let mut segs = active_close(false);
        segs.truncate(10);
        let fin = segs[9].clone();
        segs.push(fin.clone());
        segs.push(fin);
        let mut tracker = Tracker::new();
        let events = run_timed(&mut tracker, &segs);
        for ev in &events[10..] {
            assert!(ev.transitions.is_empty() && ev.unexpected().is_empty());
            assert_eq!(
                ev.notes()[1],
                "the FIN sent again with no ACK of it in between: its ACK was lost or never sent \
                 (or the first FIN was lost after the capture point, and the server's change \
                 came with this copy)"
            );
        }
        // Once acked, a copy is a retransmission but not one without an answer.
        let mut segs = active_close(false);
        let fin = segs[9].clone();
        segs.push(fin);
        let mut tracker = Tracker::new();
        let events = run_timed(&mut tracker, &segs);
        assert_eq!(events[11].notes().len(), 1, "{:?}", events[11].notes());
    }

    #[test]
    fn an_old_duplicate_from_a_closed_end_is_no_surprise() {
        use State::*;
        // timewait-assassination: after the close, the client's first data again.
        let mut segs = active_close(false);
        segs.push(segment(true, PA, 101, 901, 11));
        let (tracker, events) = run(&segs);
        let dup = events.last().unwrap();
        assert!(dup.unexpected().is_empty(), "{dup:?}");
        assert_eq!(
            dup.notes(),
            ["an old duplicate: this data was sent and acknowledged before (seq 1..12)"]
        );
        assert_eq!(dup.states, [Closed, TimeWait]);
        assert_eq!(tracker.connections()[0].state(Role::Client), Closed);
        // Told by `run` that it forged the segment: its word, not the guess.
        let mut tracker = Tracker::new();
        for s in &segs[..segs.len() - 1] {
            tracker.on_segment(s);
        }
        let last = segs.last().unwrap();
        tracker.forged(
            Forged {
                src: last.src,
                dst: last.dst,
                seq: last.seq,
                len: last.len,
            },
            "sent by teardown".to_string(),
        );
        let dup = tracker.on_segment(last);
        assert_eq!(dup.notes(), ["sent by teardown"]);
        assert!(dup.unexpected().is_empty());
    }

    #[test]
    fn a_rst_answering_the_late_fin_proves_fin_wait_2_was_gone() {
        use Role::*;
        use State::*;
        // orphan-fin-wait-2 without the socket table: the server's FIN_WAIT_2 timed out
        // unseen, and the client's late FIN is answered by RST (seq = the FIN's ack).
        let mut segs = active_close(false);
        segs.truncate(9);
        segs.push(segment(true, FA, 112, 913, 0));
        segs.push(segment(false, Flags::RST, 913, 0, 0));
        let (tracker, mut events) = run(&segs);
        let rst = events[10].clone();
        assert_eq!(
            moves(&rst),
            [(Server, FinWait2, Closed), (Client, LastAck, Closed)]
        );
        assert_eq!(
            rst.transitions[0].1.cause.text(),
            "no socket: removed by its timer before this FIN came"
        );
        assert!(rst.unexpected().is_empty());
        assert_eq!(
            rst.revise(),
            [Revise::GoneBeforeFin {
                role: Server,
                since: FinWait2
            }]
        );
        assert!(rst.revise()[0].apply(&mut events[9]));
        assert_eq!(moves(&events[9]), [(Client, CloseWait, LastAck)]);
        assert_eq!(events[9].states, [LastAck, FinWait2]);
        assert_eq!(
            events[9].notes(),
            [
                "the server had no socket left (an orphaned FIN_WAIT_2 ends after \
              net.ipv4.tcp_fin_timeout): the RST that answers this FIN proves it"
            ]
        );
        assert_eq!(tracker.connections()[0].state(Server), Closed);
        // A TIME_WAIT that acks the FIN first is one: a later RST is no proof.
        let mut segs = segs[..10].to_vec();
        segs.push(segment(false, A, 913, 113, 0));
        let (_, events) = run(&segs);
        assert!(events[10].revise().is_empty());
    }

    #[test]
    fn crossing_fins_revise_the_first_fin_and_the_states_between() {
        use Role::*;
        use State::*;
        // The server's FIN is seen first; the client's FIN, sent before it arrived, does not
        // ack it (ack 912, not 913).
        let mut segs = active_close(false);
        segs.truncate(8);
        segs.push(segment(false, A, 913, 112, 0));
        segs.push(segment(true, FA, 112, 912, 0));
        let (_, mut events) = run(&segs);
        assert_eq!(events[9].revise(), [Revise::CrossedFin { role: Client }]);
        let revise = events[9].revise()[0];
        let (older, _) = events.split_at_mut(9);
        // Newest first: the ACK between them has its state fixed but is not the one.
        assert!(!revise.apply(&mut older[8]));
        assert_eq!(older[8].states, [FinWait1, FinWait1]);
        assert!(revise.apply(&mut older[7]));
        assert_eq!(moves(&older[7]), [(Server, Established, FinWait1)]);
        assert_eq!(older[7].states, [FinWait1, FinWait1]);
        assert_eq!(
            older[7].notes(),
            [
                "the FINs crossed: the client had already sent its own FIN when this one reached it, so \
              it was in FIN_WAIT_1, not ESTABLISHED, and this FIN did not move it"
            ]
        );
        assert_eq!(revise.drops(), (Client, CloseWait));
    }

    /// A quiet tracker (`summary`'s) makes the same events but for the takeover's words,
    /// and ends every connection alike, taken over or not.
    #[test]
    fn a_quiet_tracker_changes_the_same_states_without_the_takeover_words() {
        let mut takeovers = 0;
        for file in [
            "tw-reuse.pcapng",
            "timewait-new-syn.pcapng",
            "port-exhaustion.pcapng",
        ] {
            let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
            let mut src =
                crate::input::Source::open(std::fs::File::open(path).unwrap(), file).unwrap();
            let mut packet = crate::input::InPacket::default();
            let (mut loud, mut quiet) = (Tracker::new(), Tracker::new());
            quiet.quiet = true;
            while let Some(item) = src.next_into(&mut packet) {
                if item.unwrap().is_some() {
                    continue;
                }
                let Ok(seg) = crate::decode::decode_ethernet(&packet.data) else {
                    continue;
                };
                let said = loud.on_segment_at(&seg, Some(packet.ts));
                let mut kept = quiet.on_segment_at(&seg, Some(packet.ts));
                let taken = said.notes().iter().any(|n| n.text().contains("TIME_WAIT"));
                takeovers += usize::from(taken);
                if taken {
                    assert!(kept.notes().is_empty(), "{file}: {:?}", kept.notes());
                    *kept.notes_mut() = said.notes().to_vec();
                }
                assert_eq!(said, kept, "{file}");
            }
            let ends = |t: &Tracker| -> Vec<(String, String)> {
                t.connections()
                    .iter()
                    .map(|c| (c.ending(Role::Client), c.ending(Role::Server)))
                    .collect()
            };
            assert_eq!(ends(&loud), ends(&quiet), "{file}");
        }
        assert!(takeovers >= 2, "{takeovers}");
    }

    /// A real run's capture read again from packets alone, through the one annotator (its
    /// look-ahead applies each `revise`): per packet, the transitions named in the run's own
    /// comment (made with the kernel's trace) and ours.
    fn offline_against_run(file: &str) -> Vec<(Vec<String>, Vec<String>)> {
        let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
        let mut src = crate::input::Source::open(std::fs::File::open(path).unwrap(), file).unwrap();
        let mut packet = crate::input::InPacket::default();
        let (mut frames, mut run) = (Vec::new(), Vec::new());
        while let Some(item) = src.next_into(&mut packet) {
            if item.unwrap().is_some() {
                continue;
            }
            frames.push(crate::frame::Frame {
                ts: packet.ts,
                data: packet.data.clone(),
                orig_len: packet.orig_len,
            });
            run.push(packet.comments.join("; "));
        }
        let (ours, _) =
            crate::annotate::annotate_all(Tracker::new(), frames, crate::decode::decode_ethernet);
        let named = |text: &str| -> Vec<String> {
            text.split("; ")
                .filter_map(|part| {
                    let (head, _) = part.split_once(" (")?;
                    let words: Vec<&str> = head.split(' ').collect();
                    let role = matches!(words[0], "client" | "server");
                    (words.len() == 4 && role && words[2] == "→").then(|| head.to_string())
                })
                .collect()
        };
        ours.iter()
            .zip(&run)
            .map(|(p, r)| (named(r), named(&p.comment)))
            .collect()
    }

    #[test]
    fn revised_offline_tells_crossing_fins_as_the_run_did() {
        for (i, (run, ours)) in offline_against_run("simultaneous-close.pcapng")
            .iter()
            .enumerate()
        {
            assert_eq!(run, ours, "packet {}", i + 1);
        }
    }

    #[test]
    fn revised_offline_tells_the_orphans_removal_as_the_run_did() {
        // The run saw the timer in the socket table before the FIN; packets alone learn it
        // from the RST that answers the FIN, and the look-ahead puts it back on the FIN.
        let got = offline_against_run("orphan-fin-wait-2.pcapng");
        assert_eq!(got.len(), 11);
        for (i, (run, ours)) in got.iter().enumerate() {
            assert_eq!(run, ours, "packet {}", i + 1);
        }
        assert_eq!(
            got[9].1,
            ["server FIN_WAIT_2 → CLOSED", "client CLOSE_WAIT → LAST_ACK"]
        );
        assert_eq!(got[10].1, ["client LAST_ACK → CLOSED"]);
    }

    /// Every fixture's segments, with their capture times.
    pub(crate) fn fixture_segments() -> Vec<(String, Vec<(Segment, std::time::Duration)>)> {
        let mut files = Vec::new();
        for dir in ["tests/data", "tests/data/real"] {
            let dir = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let ext = path.extension().and_then(|e| e.to_str());
                if matches!(ext, Some("pcap" | "pcapng")) {
                    files.push(path);
                }
            }
        }
        files.sort();
        assert!(files.len() >= 20, "{files:?}");
        files
            .into_iter()
            .map(|path| {
                let name = path.display().to_string();
                let file = std::fs::File::open(&path).unwrap();
                let mut src = crate::input::Source::open(file, &name).unwrap();
                let mut packet = crate::input::InPacket::default();
                let mut segs = Vec::new();
                while let Some(item) = src.next_into(&mut packet) {
                    if item.unwrap().is_some() {
                        continue;
                    }
                    if let Ok(seg) = crate::decode::decode(packet.linktype, &packet.data) {
                        segs.push((seg, packet.ts));
                    }
                }
                assert!(!segs.is_empty(), "{name}");
                (name, segs)
            })
            .collect()
    }

    /// `segs` through a tracker with the fast paths and one without: the same events, the
    /// same connections after. How many segments took the plain and the control path.
    fn same_both_ways(
        what: &str,
        segs: &[(Segment, Option<std::time::Duration>)],
    ) -> (usize, usize) {
        let make = |general_only: bool| {
            let mut t = if what.contains("forgetful") {
                Tracker::forgetful(std::time::Duration::from_millis(50))
            } else {
                Tracker::new()
            };
            t.general_only = general_only;
            t
        };
        let (mut fast, mut general) = (make(false), make(true));
        for (i, (seg, at)) in segs.iter().enumerate() {
            let a = fast.on_segment_at(seg, *at);
            let b = general.on_segment_at(seg, *at);
            assert_eq!(a, b, "{what}: segment {i} {seg:?}");
            if i % 3 == 0 {
                fast.recycle(a);
                general.recycle(b);
            }
        }
        assert_eq!(
            format!("{:?}", fast.connections()),
            format!("{:?}", general.connections()),
            "{what}"
        );
        // What the forgetful tracker keeps for its sweep, and the last segment's connection.
        assert_eq!(fast.finished, general.finished, "{what}");
        assert_eq!(
            (fast.recent.0.as_slice(), fast.since_sweep),
            (general.recent.0.as_slice(), general.since_sweep),
            "{what}"
        );
        assert_eq!((general.fast_hits, general.control_hits), (0, 0));
        (fast.fast_hits, fast.control_hits)
    }

    #[test]
    fn the_fast_path_makes_the_general_paths_events() {
        // A small deterministic generator (xorshift): the same variants on every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut plain, mut control) = (0, 0);
        let mut fixtures = fixture_segments();
        // The unit tests' own exchanges, with a late retransmission and data after the FIN.
        let mut own: Vec<(Segment, std::time::Duration)> = active_close(false)
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, std::time::Duration::from_millis(i as u64)))
            .collect();
        own.insert(5, own[4].clone());
        own.push((
            segment(false, PA, 913, 113, 5),
            std::time::Duration::from_secs(1),
        ));
        fixtures.push(("active_close".into(), own));
        for (name, segs) in &fixtures {
            let timed: Vec<_> = segs.iter().map(|(s, t)| (s.clone(), Some(*t))).collect();
            let untimed: Vec<_> = segs.iter().map(|(s, _)| (s.clone(), None)).collect();
            for what in ["as captured", "forgetful"] {
                let (p, c) = same_both_ways(&format!("{name} {what}"), &timed);
                (plain, control) = (plain + p, control + c);
            }
            same_both_ways(&format!("{name} without times"), &untimed);
            for round in 0..40 {
                let mut v = timed.clone();
                match round % 5 {
                    // Copies seen twice, at once and later: duplicates, retransmissions.
                    0 => {
                        for _ in 0..1 + v.len() / 3 {
                            let i = next(v.len());
                            let (seg, at) = v[i].clone();
                            let later = at.map(|t| {
                                t + std::time::Duration::from_millis(next(3) as u64 * 150)
                            });
                            v.insert(i + 1 + next(v.len() - i), (seg, later));
                        }
                    }
                    // Shuffled.
                    1 => {
                        for i in (1..v.len()).rev() {
                            v.swap(i, next(i + 1));
                        }
                    }
                    // Some lost before the capture point.
                    2 => {
                        for _ in 0..1 + v.len() / 4 {
                            if v.len() > 1 {
                                v.remove(next(v.len()));
                            }
                        }
                    }
                    // Neighbours swapped: reordering in flight.
                    3 => {
                        for _ in 0..1 + v.len() / 3 {
                            let i = next(v.len() - 1);
                            v.swap(i, i + 1);
                        }
                    }
                    // The capture joined late, or the whole of it twice.
                    _ => {
                        let cut = next(v.len());
                        v.drain(..cut);
                        let again = v.clone();
                        v.extend(again);
                    }
                }
                let what = if round % 2 == 0 { "forgetful" } else { "whole" };
                same_both_ways(&format!("{name} variant {round} {what}"), &v);
            }
        }
        // The fixtures' usual segments took the fast paths: they were tried, not skipped.
        assert!(plain > 100, "{plain}");
        assert!(control > 100, "{control}");
    }
}
