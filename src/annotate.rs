//! The one annotator every front uses (`run`, `capture`, `annotate`/`summary`/`diagram`):
//! segments in, events out in capture order, each held back while a later segment of its
//! connection may still change its story; and events → the text of a packet comment.

use std::borrow::Cow;
use std::time::Duration;

use crate::decode::{DecodeError, Segment};
use crate::evidence::Note;
use crate::frame::Frame;
use crate::tcp::State;
use crate::tracker::{Event, Role, Tracker};

/// How far a held segment waits for the one that settles its story: at most this many
/// segments after it, and this much capture time. Memory stays flat on any file, and a live
/// stream is late by a round trip at most.
pub const LOOKAHEAD_PACKETS: usize = 256;
pub const LOOKAHEAD_TIME: Duration = Duration::from_secs(2);

/// Tracks segments with one `Tracker` and hands each event on once no later segment can
/// revise it. `T` is what the front keeps of a frame (the frame, the bytes of a block).
///
/// Only a FIN or an opening SYN waits, for the next segment of its connection from the other
/// side: that one says whether the FINs crossed (its FIN does not ack this one), whether a
/// socket was still there to receive the FIN (a RST answers it), or whether anything listened
/// for the SYN (a RST,ACK answers it). Everything behind a held segment waits with it, so the
/// order of the capture is kept; with nothing held, a segment goes at once.
pub struct Annotator<T> {
    pub tracker: Tracker,
    /// The held frames, oldest first, with their events.
    pending: Lookahead<T>,
    /// The held segments still waiting for their answer, by a bucket of what they wait for
    /// (`key`): the key and their place in the order of holding (a held frame's place minus
    /// `left` is its index in `pending`). A segment looks only through the waiters of its
    /// own bucket: on a busy server a dozen SYNs and FINs of other connections wait at any
    /// time, and going through all of them for each answer showed in the profile.
    waiters: Vec<Vec<(u64, u64)>>,
    /// How many wait, in all buckets.
    waiting: usize,
    /// Frames held so far, and gone out so far.
    held: u64,
    left: u64,
    /// What the front knows beyond the packets (run: its packet filter's log, the kernel's
    /// trace), asked as each segment leaves.
    pub evidence: Vec<Box<dyn Evidence>>,
    /// Which segments get a comment (`--comments`).
    pub comments: Comments,
}

const BUCKETS: usize = 256;

/// The held frames, oldest first: a ring of slots filled and emptied in place, so that a
/// frame and its event go in and out as two moves each, not through a temporary.
struct Lookahead<T> {
    slots: Vec<Slot<T>>,
    /// The oldest one's slot, and how many are held; `slots.len()` is a power of two.
    head: usize,
    len: usize,
}

/// A held frame: its event, its capture time, and whether it still waits for its answer.
struct Slot<T> {
    item: Option<T>,
    event: Option<Event>,
    at: Option<Duration>,
    /// What it waits for (`key`), until answered.
    waits: Option<u64>,
}

impl<T> Slot<T> {
    fn empty() -> Slot<T> {
        Slot {
            item: None,
            event: None,
            at: None,
            waits: None,
        }
    }
}

impl<T> Lookahead<T> {
    fn new() -> Lookahead<T> {
        Lookahead {
            slots: Vec::new(),
            head: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn index(&self, i: usize) -> usize {
        (self.head + i) & (self.slots.len() - 1)
    }

    #[inline(always)]
    fn push(&mut self, item: T, event: Option<Event>, at: Option<Duration>, waits: Option<u64>) {
        if self.len == self.slots.len() {
            self.grow();
        }
        let i = self.index(self.len);
        let slot = &mut self.slots[i];
        slot.item = Some(item);
        slot.event = event;
        slot.at = at;
        slot.waits = waits;
        self.len += 1;
    }

    /// Twice the slots, the held ones first in order.
    #[cold]
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let mut slots = Vec::with_capacity(size);
        for i in 0..self.len {
            let j = self.index(i);
            slots.push(std::mem::replace(&mut self.slots[j], Slot::empty()));
        }
        slots.resize_with(size, Slot::empty);
        self.slots = slots;
        self.head = 0;
    }

    /// The oldest frame's capture time and what it waits for.
    fn front(&self) -> Option<(Option<Duration>, Option<u64>)> {
        (self.len > 0).then(|| {
            let slot = &self.slots[self.head];
            (slot.at, slot.waits)
        })
    }

    fn event_mut(&mut self, i: usize) -> Option<&mut Event> {
        let j = self.index(i);
        self.slots[j].event.as_mut()
    }

    /// The `i`th held frame waits no longer.
    fn answered(&mut self, i: usize) {
        if i < self.len {
            let j = self.index(i);
            self.slots[j].waits = None;
        }
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<(T, Option<Event>)> {
        if self.len == 0 {
            return None;
        }
        let slot = &mut self.slots[self.head];
        let out = (slot.item.take()?, slot.event.take());
        self.head = (self.head + 1) & (self.slots.len() - 1);
        self.len -= 1;
        Some(out)
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A connection and a sender as one number, for `waiters`.
fn key((conn, role): (usize, Role)) -> u64 {
    (conn as u64) << 1 | role.index() as u64
}

fn bucket(key: u64) -> usize {
    (key % BUCKETS as u64) as usize
}

/// What a front knows of a segment beyond its bytes, asked as the segment leaves the
/// annotator, so its words join the comment as it is made: an input, not a second pass.
pub trait Evidence: Send {
    /// Whether it knows all it will ever know of a segment captured at `at`; until then the
    /// segment waits (the kernel's trace is read a little behind the packets).
    fn settled(&mut self, _at: Duration) -> bool {
        true
    }
    /// Adds what it knows to `event` (its notes), and drops the guesses it settles.
    fn annotate(&mut self, _seg: &Segment, _event: &mut Event, _at: Duration) {}
    /// The kernel's word on the segment as it leaves, for its comment and the record.
    fn kernel(&mut self, _seg: &Segment, _event: &Event, _at: Duration) -> Vec<Note> {
        Vec::new()
    }
}

/// What `track` says of a segment: its event, and whether it must go through `hold`.
pub struct Tracked {
    pub event: Option<Event>,
    pub hold: bool,
    /// A FIN, until the other side answers: its connection and sender.
    waits_for: Option<(usize, Role)>,
}

impl<T> Annotator<T> {
    pub fn new(tracker: Tracker) -> Annotator<T> {
        Annotator {
            tracker,
            pending: Lookahead::new(),
            waiters: vec![Vec::new(); BUCKETS],
            waiting: 0,
            held: 0,
            left: 0,
            evidence: Vec::new(),
            comments: Comments::default(),
        }
    }

    /// Tracks one frame's segment (`None` for a frame that is not TCP), revises the held
    /// events it proves something about, and releases those it answers. When `hold` is
    /// false the frame goes out now, after whatever `ready` gives first (the caller drains
    /// `ready` before writing it).
    #[cfg(test)]
    fn track(&mut self, seg: Option<&Segment>, at: Option<Duration>) -> Tracked {
        let event = seg.map(|seg| self.tracker.on_segment_at(seg, at));
        self.placed(seg, event, at)
    }

    /// `track` with the tracker's event for `seg` made already. The event is moved once,
    /// into what is returned: it is too large to copy about.
    #[inline(always)]
    fn placed(
        &mut self,
        seg: Option<&Segment>,
        event: Option<Event>,
        at: Option<Duration>,
    ) -> Tracked {
        // A segment comes with its event, from whichever thread tracked it: one without
        // would lose its comment without a word.
        debug_assert_eq!(seg.is_some(), event.is_some(), "a segment and its event");
        let (Some(seg), Some(mut event)) = (seg, event) else {
            return Tracked {
                event: None,
                hold: self.waiting(),
                waits_for: None,
            };
        };
        let (hold, waits_for) = self.tracked(seg, at, &mut event);
        Tracked {
            event: Some(event),
            hold,
            waits_for,
        }
    }

    /// `track`'s work on the segment's event: whether the segment must be held, and what it
    /// waits for. The event stays where the tracker made it until the caller takes it.
    #[inline(always)]
    fn tracked(
        &mut self,
        seg: &Segment,
        at: Option<Duration>,
        event: &mut Event,
    ) -> (bool, Option<(usize, Role)>) {
        let conn = event.conn;
        if !event.revise().is_empty() {
            let revise = event.take_revise();
            for r in &revise {
                // The newest earlier segment it applies to.
                for i in (0..self.pending.len()).rev() {
                    if let Some(earlier) = self.pending.event_mut(i).filter(|e| e.conn == conn)
                        && r.settle(earlier, event)
                    {
                        break;
                    }
                }
            }
            event.set_revise(revise);
        }
        let answers = key((event.conn, event.from.other()));
        if !self.waiters[bucket(answers)].is_empty() {
            self.answered(answers);
        }
        // A FIN waits for the answer that tells crossing FINs and a socket already gone; a
        // SYN for the one that tells a closed port (RST,ACK) from a listener.
        let opens = seg.flags.syn() && !seg.flags.ack();
        let waits_for = (seg.flags.fin() || opens).then_some((event.conn, event.from));
        let hold = waits_for.is_some() || self.waiting() || !self.settled(at);
        (hold, waits_for)
    }

    /// The held segments that waited for `answers` (a connection and the side that has not
    /// sent since) wait no longer.
    fn answered(&mut self, answers: u64) {
        let waiters = &mut self.waiters[bucket(answers)];
        let mut i = 0;
        while i < waiters.len() {
            let (k, place) = waiters[i];
            if k != answers {
                i += 1;
                continue;
            }
            waiters.swap_remove(i);
            self.waiting -= 1;
            self.pending.answered((place - self.left) as usize);
        }
    }

    /// Whether every evidence knows all it will of a segment captured at `at`.
    fn settled(&mut self, at: Option<Duration>) -> bool {
        let Some(at) = at else {
            return true;
        };
        self.evidence.iter_mut().all(|e| e.settled(at))
    }

    /// Whether a held segment still waits for its answer: what comes after it must wait too.
    /// Held segments already answered go out (`ready`) before the next one.
    fn waiting(&self) -> bool {
        self.waiting > 0
    }

    /// `track`, then every held frame it let go handed to `emit`, oldest first, before the
    /// caller writes this frame (`hold` false) or holds it (`hold` true): the one order
    /// every front keeps.
    #[inline(always)]
    pub fn step<E>(
        &mut self,
        seg: Option<&Segment>,
        at: Option<Duration>,
        emit: impl FnMut(&mut Self, T, Option<Event>) -> Result<(), E>,
    ) -> Result<Tracked, E> {
        let event = seg.map(|seg| self.tracker.on_segment_at(seg, at));
        self.step_placed(seg, event, at, emit)
    }

    /// `step` for a segment whose event the tracker made elsewhere: `event` is what
    /// `tracker.on_segment_at(seg, at)` returned, in the order of the capture (the offline
    /// readers track on a thread of their own).
    #[inline(always)]
    pub fn step_placed<E>(
        &mut self,
        seg: Option<&Segment>,
        event: Option<Event>,
        at: Option<Duration>,
        mut emit: impl FnMut(&mut Self, T, Option<Event>) -> Result<(), E>,
    ) -> Result<Tracked, E> {
        let tracked = self.placed(seg, event, at);
        while let Some((item, event)) = self.ready(at) {
            emit(self, item, event)?;
        }
        Ok(tracked)
    }

    /// Keeps a frame that `step` said must wait.
    #[inline(always)]
    pub fn hold(&mut self, item: T, tracked: Tracked, at: Option<Duration>) {
        let waits = tracked.waits_for.map(key);
        if let Some(k) = waits {
            self.waiters[bucket(k)].push((k, self.held));
            self.waiting += 1;
        }
        self.held += 1;
        self.pending.push(item, tracked.event, at, waits);
    }

    /// The oldest held frame, once nothing can revise it any more (`now`: the capture time of
    /// the newest segment).
    #[inline(always)]
    pub fn ready(&mut self, now: Option<Duration>) -> Option<(T, Option<Event>)> {
        let (first_at, waits) = self.pending.front()?;
        // Nothing waited for and no evidence to ask: it goes (the busy server's way).
        if waits.is_some() || !self.evidence.is_empty() {
            let expired = self.pending.len() > LOOKAHEAD_PACKETS
                || matches!((first_at, now), (Some(a), Some(n)) if n.saturating_sub(a) > LOOKAHEAD_TIME);
            if waits.is_some() && !expired {
                return None;
            }
            // Asked even when the look-ahead is over: the evidence reads what it lacks (the
            // kernel's trace, long since written when a quiet connection's next segment comes).
            if !self.settled(first_at) && !expired {
                return None;
            }
            if let Some(k) = waits {
                let (place, waiters) = (self.left, &mut self.waiters[bucket(k)]);
                if let Some(i) = waiters.iter().position(|&(_, p)| p == place) {
                    waiters.swap_remove(i);
                    self.waiting -= 1;
                }
            }
        }
        self.left += 1;
        self.pending.pop()
    }

    /// Everything still held, at the end of the input.
    pub fn finish(&mut self) -> impl Iterator<Item = (T, Option<Event>)> + '_ {
        self.waiters.iter_mut().for_each(Vec::clear);
        self.waiting = 0;
        self.left += self.pending.len() as u64;
        std::iter::from_fn(|| self.pending.pop())
    }

    pub fn holding(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// A captured frame with what teardown made of it.
#[derive(Clone, Debug)]
pub struct Packet {
    pub frame: Frame,
    pub decoded: Result<Segment, DecodeError>,
    pub event: Option<Event>,
    pub comment: String,
    /// The kernel's word on it (run: its trace, read as the capture went).
    pub kernel: Vec<Note>,
}

impl Packet {
    pub fn segment(&self) -> Option<&Segment> {
        self.decoded.as_ref().ok()
    }
}

/// A frame and its decoding, while the annotator holds it.
pub type Unfinished = (Frame, Result<Segment, DecodeError>);

impl Annotator<Unfinished> {
    /// Tracks a frame; the packets now finished, oldest first, are pushed onto `out`.
    pub fn push_frame(
        &mut self,
        frame: Frame,
        decoded: Result<Segment, DecodeError>,
        out: &mut Vec<Packet>,
    ) {
        let at = Some(frame.ts);
        let Ok(tracked) = self.step(decoded.as_ref().ok(), at, |a, (frame, decoded), event| {
            out.push(a.finished(frame, decoded, event));
            Ok::<(), std::convert::Infallible>(())
        });
        if tracked.hold {
            self.hold((frame, decoded), tracked, at);
        } else {
            let packet = self.finished(frame, decoded, tracked.event);
            out.push(packet);
        }
    }

    /// The held packets that nothing waits for any more (`now`: the time of the newest
    /// segment, or of the clock when none came), while the capture is quiet.
    pub fn release_into(&mut self, now: Option<Duration>, out: &mut Vec<Packet>) {
        while let Some(((frame, decoded), event)) = self.ready(now) {
            let packet = self.finished(frame, decoded, event);
            out.push(packet);
        }
    }

    /// The packets still held, at the end of the capture.
    pub fn finish_into(&mut self, out: &mut Vec<Packet>) {
        let held: Vec<_> = self.finish().collect();
        for ((frame, decoded), event) in held {
            out.push(self.finished(frame, decoded, event));
        }
    }

    /// The packet as it leaves: the evidence's words on its event, then its comment.
    fn finished(
        &mut self,
        frame: Frame,
        decoded: Result<Segment, DecodeError>,
        mut event: Option<Event>,
    ) -> Packet {
        let mut kernel = Vec::new();
        if let (Ok(seg), Some(event)) = (decoded.as_ref(), event.as_mut()) {
            for evidence in &mut self.evidence {
                evidence.annotate(seg, event, frame.ts);
            }
            for evidence in &mut self.evidence {
                kernel.extend(evidence.kernel(seg, event, frame.ts));
            }
        }
        packet(frame, decoded, event, self.comments, kernel)
    }
}

/// A frame with its event's comment and the kernel's word in it (or its decode error's),
/// as `mode` has it.
fn packet(
    frame: Frame,
    decoded: Result<Segment, DecodeError>,
    event: Option<Event>,
    mode: Comments,
    kernel: Vec<Note>,
) -> Packet {
    let comment = match (&decoded, &event) {
        (_, Some(event)) => mode.text_with(event, &kernel),
        (Err(err), _) => err.to_string(),
        (Ok(_), None) => String::new(),
    };
    Packet {
        frame,
        decoded,
        event,
        comment,
        kernel,
    }
}

/// Decodes and annotates a whole capture held in memory: the same annotator, run to the end
/// (the tests' way in).
#[cfg(test)]
pub(crate) fn annotate_all(
    tracker: Tracker,
    frames: impl IntoIterator<Item = Frame>,
    decode: impl Fn(&[u8]) -> Result<Segment, DecodeError>,
) -> (Vec<Packet>, Tracker) {
    let mut annotator = Annotator::new(tracker);
    let mut out = Vec::new();
    for frame in frames {
        let decoded = decode(&frame.data);
        annotator.push_frame(frame, decoded, &mut out);
    }
    annotator.finish_into(&mut out);
    (out, annotator.tracker)
}

/// Which segments get a packet comment (`--comments`, on every front: the annotator decides).
///
/// On a busy server most segments change nothing (data and its ACKs between the handshake
/// and the close): a comment on each says "no state change" a million times, doubles the
/// file, and fills Wireshark's Expert Info. What a reader looks for is where a state changed
/// and what was unusual, so by default only those segments are commented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Comments {
    /// Segments that change a state or carry a note (a retransmission, a duplicate, a gap,
    /// an unexpected segment, the kernel's or the packet filter's word); the others none
    #[default]
    Changes,
    /// Every segment: "no state change: client S, server S" on those that change nothing
    All,
}

impl Comments {
    /// The section comment's words on what is commented, naming the flag.
    pub fn described(self) -> &'static str {
        match self {
            Comments::Changes => {
                "each TCP segment that changes a state or carries a note (a retransmission, an \
                 unexpected segment) is commented with what it did; segments that change \
                 nothing carry no comment (--comments all comments every one)"
            }
            Comments::All => {
                "every TCP segment is commented with the state transitions it caused, or the \
                 states that held (--comments all)"
            }
        }
    }

    /// `event`'s comment, or none for a segment that changes nothing and carries no note.
    pub fn text(self, event: &Event) -> String {
        self.text_with(event, &[])
    }

    /// As `text`, with the kernel's word on the segment (`comment_with`).
    pub fn text_with(self, event: &Event, kernel: &[Note]) -> String {
        if self == Comments::Changes && plain(event) && kernel.iter().all(|n| n.inferred.is_some())
        {
            return String::new();
        }
        comment_with(event, kernel)
    }
}

/// No transition, nothing unexpected, no note: a segment that only carries data or an ACK.
fn plain(event: &Event) -> bool {
    event.transitions.is_empty() && event.unexpected().is_empty() && event.notes().is_empty()
}

/// Comments for a long stream of segments: one that changes nothing and is nothing special
/// (no note) shares the text of its pair of states, made once (or has none, by default); the
/// others get their own.
#[derive(Default)]
pub struct CommentCache {
    mode: Comments,
    unchanged: Vec<Option<String>>,
    /// The texts of segments that only change states, by their transitions: a busy server's
    /// connections go through the same six or so, and making each text anew was a fifth of
    /// the time on 100k connections.
    changed: Vec<Cached>,
    /// Where to look first in `changed` (its index + 1; 0 for nowhere), by the list's length
    /// and its first transition (`slot`): found there by one comparison of the lists, without
    /// a hash, for most segments.
    slots: Vec<u8>,
    /// A text with notes after the common words, made in one buffer used again: a busy
    /// server's SYNs each have one.
    scratch: String,
}

/// Equal lists of transitions: their RFC sections compared by address first (the same
/// literal), by text only where the addresses differ.
#[inline]
fn same(a: &[(Role, crate::tcp::Transition)], b: &[(Role, crate::tcp::Transition)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ra, ta), (rb, tb))| {
            ra == rb
                && ta.from == tb.from
                && ta.to == tb.to
                && ta.cause == tb.cause
                && (std::ptr::eq(ta.rfc, tb.rfc) || ta.rfc == tb.rfc)
        })
}

/// A list of transitions' text, with the list and its hash.
type Cached = (u64, Vec<(Role, crate::tcp::Transition)>, String);

/// A hash of the transitions, to find their text among a few dozen by one comparison of
/// numbers (the lists are compared whole only where it matches): comparing every list, RFC
/// strings and all, showed in the profile.
fn transitions_hash(transitions: &[(Role, crate::tcp::Transition)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = crate::tracker::TupleHasher::default();
    for (role, t) in transitions {
        h.write_usize(role.index() << 16 | t.from.index() << 8 | t.to.index());
        std::mem::discriminant(&t.cause).hash(&mut h);
        h.write_usize(t.rfc.as_ptr() as usize ^ t.rfc.len());
    }
    h.finish()
}

/// At most this many transition texts are kept (there are a few dozen kinds in all).
const CHANGED_TEXTS: usize = 64;

/// `CommentCache::slots`: a list's length (1 to 4, 4 for more) and its first transition's
/// role and states.
const SLOTS: usize = 4 * 2 * State::ALL.len() * State::ALL.len();

/// A (non-empty) list of transitions' place in `CommentCache::slots`.
fn slot(transitions: &[(Role, crate::tcp::Transition)]) -> usize {
    let n = State::ALL.len();
    let Some((role, t)) = transitions.first() else {
        return 0;
    };
    (((transitions.len().min(4) - 1) * 2 + role.index()) * n + t.from.index()) * n + t.to.index()
}

impl CommentCache {
    pub fn new(mode: Comments) -> CommentCache {
        CommentCache {
            mode,
            ..CommentCache::default()
        }
    }

    /// `event`'s comment as the cache's mode has it.
    #[inline]
    pub fn comment(&mut self, event: &Event) -> Cow<'_, str> {
        // Most of a busy server's segments, by default: nothing to say, said in line.
        if self.mode == Comments::Changes
            && event.transitions.is_empty()
            && event.unexpected().is_empty()
            && event.notes().is_empty()
        {
            return Cow::Borrowed("");
        }
        self.made(event)
    }

    /// `comment` for all but the plain segments of the default mode (they get none).
    fn made(&mut self, event: &Event) -> Cow<'_, str> {
        if !event.unexpected().is_empty()
            || (event.transitions.is_empty() && !event.notes().is_empty())
        {
            return Cow::Owned(comment(event));
        }
        if !event.transitions.is_empty() {
            let Some(i) = self.transitions_text(event) else {
                return Cow::Owned(comment(event));
            };
            let text = self.changed[i].2.as_str();
            if event.notes().is_empty() {
                return Cow::Borrowed(text);
            }
            // Notes follow the transitions' text: a SYN that takes a TIME_WAIT over (most of
            // a busy server's) has a note of its own after the common words.
            let owned = &mut self.scratch;
            owned.clear();
            owned.push_str(text);
            push_rest(owned, event, &[]);
            return Cow::Borrowed(owned.as_str());
        }
        if self.mode == Comments::Changes {
            return Cow::Borrowed("");
        }
        let n = State::ALL.len();
        if self.unchanged.is_empty() {
            self.unchanged = vec![None; n * n];
        }
        let [c, s] = event.states;
        Cow::Borrowed(
            self.unchanged[c.index() * n + s.index()]
                .get_or_insert_with(|| comment(event))
                .as_str(),
        )
    }

    /// A frame's whole comment, for every front: its event's, and what the frame adds beyond
    /// it (a snaplen cut, which makes the segment worth its whole comment, states and all);
    /// or, for a frame that did not decode, the decoder's word alone; or none.
    #[inline(always)]
    pub fn frame<'a>(&'a mut self, event: Option<&Event>, extra: Option<&'a str>) -> Cow<'a, str> {
        match (event, extra) {
            (Some(event), None) => self.comment(event),
            (Some(event), Some(extra)) => {
                let mut text = comment(event);
                text.push_str("; ");
                text.push_str(extra);
                text.into()
            }
            (None, Some(extra)) => extra.into(),
            (None, None) => "".into(),
        }
    }

    /// Where the text of an event's transitions alone is, made once for each list of them;
    /// none once the cache is full.
    fn transitions_text(&mut self, event: &Event) -> Option<usize> {
        let slot = slot(&event.transitions);
        if let Some(&at) = self.slots.get(slot)
            && let Some((_, t, _)) = self.changed.get(usize::from(at).wrapping_sub(1))
            && same(t, &event.transitions)
        {
            return Some(usize::from(at) - 1);
        }
        let i = self.hashed_text(event)?;
        if self.slots.is_empty() {
            self.slots = vec![0; SLOTS];
        }
        self.slots[slot] = i as u8 + 1;
        Some(i)
    }

    /// As `transitions_text`, found by the list's hash.
    fn hashed_text(&mut self, event: &Event) -> Option<usize> {
        let hash = transitions_hash(&event.transitions);
        let found = self
            .changed
            .iter()
            .position(|(h, t, _)| *h == hash && same(t, &event.transitions));
        let i = match found {
            Some(i) => i,
            None if self.changed.len() < CHANGED_TEXTS => {
                let alone = event.without_notes();
                self.changed
                    .push((hash, event.transitions.clone(), comment(&alone)));
                self.changed.len() - 1
            }
            None => return None,
        };
        Some(i)
    }
}

/// `server ESTABLISHED → FIN_WAIT_1 (sent FIN, RFC 9293 §3.10.4); client ...`, or the
/// states that held when nothing changed.
pub fn comment(event: &Event) -> String {
    comment_with(event, &[])
}

/// The comment with the kernel's word on each transition (`...; kernel agrees)`). Written
/// into one string, part after part: a string per part, joined, cost twice as much on a busy
/// server's new SYNs (each with its notes on the TIME_WAIT it takes over).
pub fn comment_with(event: &Event, kernel: &[Note]) -> String {
    let mut s = String::with_capacity(160);
    let part = |s: &mut String| {
        if !s.is_empty() {
            s.push_str("; ");
        }
    };
    for (role, t) in &event.transitions {
        part(&mut s);
        crate::tracker::push_change(&mut s, *role, t);
        for piece in [t.cause.text(), ", ", t.rfc] {
            s.push_str(piece);
        }
        if t.to == State::TimeWait {
            s.push_str("; held for 2×MSL = 60 s on Linux");
        }
        for note in kernel
            .iter()
            .filter(|n| n.role == *role && n.inferred == Some((t.from, t.to)))
        {
            s.push_str("; ");
            s.push_str(&note.text);
        }
        s.push(')');
    }
    push_rest(&mut s, event, kernel);
    s
}

/// What a comment tells after its transitions, onto `s`: the kernel's notes and the
/// event's, anything unexpected, or that nothing changed.
fn push_rest(s: &mut String, event: &Event, kernel: &[Note]) {
    use std::fmt::Write as _;
    let part = |s: &mut String| {
        if !s.is_empty() {
            s.push_str("; ");
        }
    };
    for n in kernel.iter().filter(|n| n.inferred.is_none()) {
        part(s);
        s.push_str(&n.text);
    }
    for note in event.notes() {
        part(s);
        note.push_to(s);
    }
    for (role, u) in event.unexpected() {
        let dir = match u.dir {
            crate::tcp::Dir::Sent => "sent",
            crate::tcp::Dir::Received => "received",
        };
        part(s);
        let _ = write!(
            s,
            "UNEXPECTED: {role} in {} {dir} {}: {}",
            u.state, u.flags, u.why
        );
    }
    if event.transitions.is_empty()
        && event.unexpected().is_empty()
        && !kernel.iter().any(|n| n.inferred.is_none())
    {
        part(s);
        let _ = write!(
            s,
            "no state change: client {}, server {}",
            event.state(Role::Client),
            event.state(Role::Server)
        );
    }
}

/// Whether `text` is a packet comment teardown wrote (`run`, `capture`, `annotate`), so that
/// annotating again replaces it instead of adding a near copy. Every one names the states: it
/// opens with a transition (`server FIN_WAIT_1 → TIME_WAIT (`), an `UNEXPECTED: client in`,
/// the kernel's word (where only the kernel said something) or a decode error, or it holds
/// the `no state change: client S, server S` that closes all others. Other tools' comments,
/// and a person's, have none of these.
pub fn is_teardown_comment(text: &str) -> bool {
    let state = |s: &str| State::ALL.iter().any(|st| st.name() == s);
    fn role(s: &str) -> Option<&str> {
        s.strip_prefix("client ")
            .or_else(|| s.strip_prefix("server "))
    }
    let transition = |part: &str| {
        role(part)
            .and_then(|rest| rest.split_once(" → "))
            .and_then(|(from, rest)| Some((from, rest.split_once(" (")?.0)))
            .is_some_and(|(from, to)| state(from) && state(to))
    };
    let no_change = |part: &str| {
        part.strip_prefix("no state change: client ")
            .and_then(|rest| rest.split_once(", server "))
            .is_some_and(|(c, s)| state(c) && state(s))
    };
    let first = text.split("; ").next().unwrap_or_default();
    transition(first)
        || first
            .strip_prefix("UNEXPECTED: ")
            .and_then(role)
            .is_some_and(|rest| rest.starts_with("in "))
        || ["kernel: ", "MISMATCH: ", "socket table: ", "malformed: "]
            .iter()
            .any(|p| first.starts_with(p))
        || (first.starts_with("link type ") && first.ends_with(" is not one teardown decodes"))
        || text.split("; ").any(no_change)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// Packets of `segs` at the times `at(i)`, as a capture gives them, and their tracker:
    /// the fixture of the tests of what is drawn and checked from packets.
    pub(crate) fn captured(
        segs: Vec<Segment>,
        at: impl Fn(usize) -> Duration,
    ) -> (Vec<Packet>, Tracker) {
        let frames: Vec<Frame> = (0..segs.len())
            .map(|i| Frame {
                ts: at(i),
                data: (i as u32).to_be_bytes().to_vec(),
                orig_len: 0,
            })
            .collect();
        // Each frame's bytes are its index: the decoder hands back that segment.
        annotate_all(Tracker::new(), frames, |data| {
            let i = u32::from_be_bytes(data.try_into().unwrap()) as usize;
            Ok::<Segment, DecodeError>(segs[i].clone())
        })
    }

    #[test]
    fn crossing_fins_revise_the_first_fins_comment_before_it_is_written() {
        let (packets, tracker) = captured(crate::tracker::tests::crossing_fins(), every_50us);
        // The server's FIN found the client in FIN_WAIT_1 already: no CLOSE_WAIT on it.
        let first = &packets[7].comment;
        assert!(
            first.starts_with("server ESTABLISHED → FIN_WAIT_1"),
            "{first}"
        );
        assert!(!first.contains("CLOSE_WAIT"), "{first}");
        assert!(
            first.contains("the FINs crossed: the client had already sent its own FIN"),
            "{first}"
        );
        let second = &packets[8].comment;
        // Its own FIN first on its side of the wire, then the server's: the kernel's path.
        assert!(
            second.contains("client ESTABLISHED → FIN_WAIT_1 (sent FIN")
                && second.contains("client FIN_WAIT_1 → CLOSING ("),
            "{second}"
        );
        let c = &tracker.connections()[0];
        assert_eq!(
            [c.state(Role::Client), c.state(Role::Server)],
            [State::TimeWait, State::TimeWait]
        );
    }

    #[test]
    fn a_syn_sent_again_carries_the_listeners_change_the_unanswered_copy_did_not() {
        let mut segs = crate::tracker::tests::active_close(false);
        segs.insert(1, segs[0].clone());
        let (packets, _) = captured(segs, |i| every_50us(i) + Duration::from_secs(i as u64));
        let (first, again) = (&packets[0].comment, &packets[1].comment);
        assert!(first.starts_with("client CLOSED → SYN_SENT"), "{first}");
        assert!(!first.contains("SYN_RECEIVED"), "{first}");
        assert!(first.contains("no SYN,ACK came for this copy"), "{first}");
        assert!(
            again.contains("server LISTEN → SYN_RECEIVED (received SYN"),
            "{again}"
        );
        assert!(again.contains("the SYN sent again"), "{again}");
    }

    #[test]
    fn a_fin_waits_for_its_answer_and_nothing_else_waits() {
        let segs = crate::tracker::tests::active_close(false);
        let mut annotator: Annotator<usize> = Annotator::new(Tracker::new());
        let mut out = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let at = Some(every_50us(i));
            let tracked = annotator.track(Some(seg), at);
            let hold = tracked.hold;
            if hold {
                annotator.hold(i, tracked, at);
            }
            // Answered held segments go first, then this one when it need not wait.
            while let Some((j, _)) = annotator.ready(at) {
                out.push(j);
            }
            if !hold {
                out.push(i);
            }
            if i == 0 {
                assert!(out.is_empty(), "the SYN waits for its answer");
            } else if i < 7 {
                // From the SYN,ACK to the server's FIN, every segment went out as it came.
                assert_eq!(out.len(), i + 1);
            }
            if i == 7 {
                assert_eq!(out.len(), 7, "the FIN waits for the client's answer");
            }
        }
        out.extend(annotator.finish().map(|(i, _)| i));
        assert_eq!(
            out,
            (0..segs.len()).collect::<Vec<_>>(),
            "capture order kept"
        );
    }

    #[test]
    fn an_unanswered_fin_goes_out_after_the_lookahead() {
        let segs = crate::tracker::tests::active_close(false);
        let mut annotator: Annotator<usize> = Annotator::new(Tracker::new());
        for (i, seg) in segs[..8].iter().enumerate() {
            let at = Some(every_50us(i));
            let tracked = annotator.track(Some(seg), at);
            if tracked.hold {
                annotator.hold(i, tracked, at);
            }
            while annotator.ready(at).is_some() {}
        }
        let fin_at = every_50us(7);
        assert!(annotator.ready(Some(fin_at + LOOKAHEAD_TIME)).is_none());
        let late = fin_at + LOOKAHEAD_TIME + Duration::from_millis(1);
        assert_eq!(annotator.ready(Some(late)).map(|(i, _)| i), Some(7));
    }

    /// A busy server: 16 connections at once, their handshakes and closes interleaved, so
    /// that some SYN or FIN is held at nearly every segment and several wait at a time
    /// (every third connection's FINs cross, every fourth's SYN is sent again). Every packet
    /// leaves in capture order, with the comment its connection gets when annotated alone:
    /// no answer is taken for another connection's, no revision lands on another's event.
    #[test]
    fn sixteen_connections_interleaved_keep_their_order_and_their_own_stories() {
        let conns: Vec<Vec<Segment>> = (0..16u16)
            .map(|c| {
                let mut segs = if c % 3 == 0 {
                    crate::tracker::tests::crossing_fins()
                } else {
                    active_close(c % 2 == 0)
                };
                if c % 4 == 1 {
                    segs.insert(1, segs[0].clone());
                }
                for seg in &mut segs {
                    // The client's port tells the connections apart.
                    let client = if seg.src.port() == 8000 {
                        &mut seg.dst
                    } else {
                        &mut seg.src
                    };
                    client.set_port(40000 + c);
                }
                segs
            })
            .collect();
        // A fixed pseudo-random schedule: the next segment of a connection picked at each
        // step among those with segments left.
        let mut next = vec![0usize; conns.len()];
        let mut order = Vec::new();
        let mut x: u32 = 12345;
        while order.len() < conns.iter().map(Vec::len).sum::<usize>() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let c = (x >> 16) as usize % conns.len();
            if next[c] < conns[c].len() {
                order.push((c, next[c]));
                next[c] += 1;
            }
        }
        let segs: Vec<Segment> = order.iter().map(|&(c, i)| conns[c][i].clone()).collect();
        let (packets, _) = captured(segs.clone(), every_50us);
        assert_eq!(packets.len(), segs.len());
        for (p, seg) in packets.iter().zip(&segs) {
            assert_eq!(p.segment(), Some(seg), "capture order kept");
        }
        // Alone, each segment keeps its time in the busy capture.
        let alone: Vec<Vec<String>> = conns
            .iter()
            .enumerate()
            .map(|(c, segs)| {
                let times: Vec<Duration> = (0..order.len())
                    .filter(|&k| order[k].0 == c)
                    .map(every_50us)
                    .collect();
                let (packets, _) = captured(segs.clone(), |i| times[i]);
                packets.into_iter().map(|p| p.comment).collect()
            })
            .collect();
        let mut crossed: Vec<usize> = packets
            .iter()
            .zip(&order)
            .filter(|(p, _)| p.comment.contains("the FINs crossed"))
            .map(|(_, &(c, _))| c)
            .collect();
        crossed.dedup();
        crossed.sort();
        crossed.dedup();
        assert_eq!(crossed, [0, 3, 6, 9, 12, 15]);
        for (p, &(c, i)) in packets.iter().zip(&order) {
            assert_eq!(p.comment, alone[c][i], "connection {c}, segment {i}");
        }
    }

    /// The look-ahead's ring grows while its held frames wrap around its end: they stay in
    /// order, and "the i-th one waits no longer" still finds the i-th one.
    #[test]
    fn the_lookahead_keeps_order_across_wrapping_and_growing() {
        let mut ring: Lookahead<u32> = Lookahead::new();
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        // 16 slots, head moved to 10: the next pushes wrap, then one more grows it.
        for _ in 0..10 {
            ring.push(next_in, None, None, None);
            next_in += 1;
            assert_eq!(ring.pop().map(|(i, _)| i), Some(next_out));
            next_out += 1;
        }
        for _ in 0..40 {
            ring.push(next_in, None, None, Some(u64::from(next_in)));
            next_in += 1;
        }
        assert_eq!(ring.len(), 40);
        ring.answered(0);
        ring.answered(39);
        assert_eq!(ring.front(), Some((None, None)));
        while let Some((i, _)) = ring.pop() {
            assert_eq!(i, next_out);
            let waits = ring.front().map(|(_, w)| w);
            next_out += 1;
            if next_out < 49 {
                assert_eq!(waits, Some(Some(u64::from(next_out))), "frame {next_out}");
            }
        }
        assert_eq!(next_out, next_in);
        assert!(ring.is_empty());
    }

    /// A segment every 50 µs from one second on.
    pub(crate) fn every_50us(i: usize) -> Duration {
        Duration::from_micros(1_000_000 + 50 * i as u64)
    }
    use crate::tracker::tests::active_close;

    fn comments(merged: bool) -> Vec<String> {
        let mut tracker = Tracker::new();
        active_close(merged)
            .iter()
            .map(|seg| comment(&tracker.on_segment(seg)))
            .collect()
    }

    #[test]
    fn every_segment_of_the_close_is_named() {
        let c = comments(false);
        assert_eq!(
            c[0],
            "client CLOSED → SYN_SENT (sent SYN, RFC 9293 §3.10.1); \
             server LISTEN → SYN_RECEIVED (received SYN, RFC 9293 §3.10.7.2)"
        );
        assert_eq!(
            c[3],
            "no state change: client ESTABLISHED, server ESTABLISHED"
        );
        assert_eq!(
            c[7],
            "server ESTABLISHED → FIN_WAIT_1 (sent FIN, RFC 9293 §3.10.4); \
             client ESTABLISHED → CLOSE_WAIT (received FIN, RFC 9293 §3.10.7.4)"
        );
        assert_eq!(
            c[8],
            "server FIN_WAIT_1 → FIN_WAIT_2 (received ACK of its FIN, RFC 9293 §3.10.7.4)"
        );
        assert_eq!(
            c[9],
            "client CLOSE_WAIT → LAST_ACK (sent FIN, RFC 9293 §3.10.4); \
             server FIN_WAIT_2 → TIME_WAIT (received FIN, RFC 9293 §3.10.7.4; \
             held for 2×MSL = 60 s on Linux)"
        );
        assert_eq!(
            c[10],
            "client LAST_ACK → CLOSED (received ACK of its FIN, RFC 9293 §3.10.7.4)"
        );
    }

    /// The cache's texts are `Comments::text`'s on every segment of every fixture, in both
    /// modes: notes after cached transitions, repeats, RSTs and the unexpected among them.
    #[test]
    fn the_cache_gives_every_fixtures_texts_as_made_anew() {
        let mut with_notes = 0;
        for (name, segs) in crate::tracker::tests::fixture_segments() {
            for mode in [Comments::All, Comments::Changes] {
                let mut tracker = Tracker::new();
                let mut cache = CommentCache::new(mode);
                for (i, (seg, at)) in segs.iter().enumerate() {
                    let event = tracker.on_segment_at(seg, Some(*at));
                    with_notes +=
                        usize::from(!event.transitions.is_empty() && !event.notes().is_empty());
                    assert_eq!(
                        cache.comment(&event),
                        mode.text(&event),
                        "{name} #{i} {mode:?}"
                    );
                }
            }
        }
        // Cached transitions with notes after them (a SYN that takes a TIME_WAIT over).
        assert!(with_notes > 0);
    }

    /// Lists that share their length and first transition share a slot of the cache: each
    /// still gets its own text, whichever came last.
    #[test]
    fn the_cache_tells_apart_lists_that_begin_alike() {
        use crate::tcp::{Cause, Transition};
        let mut tracker = Tracker::new();
        let segs = active_close(false);
        let base = tracker.on_segment(&segs[0]);
        let t = |from, to, cause, rfc| Transition {
            from,
            to,
            cause,
            rfc,
        };
        let fin = t(
            State::Established,
            State::FinWait1,
            Cause::SentFin,
            "RFC 9293 §3.10.4",
        );
        let lists = [
            vec![(Role::Server, fin)],
            // The same states, another cause.
            vec![(
                Role::Server,
                t(fin.from, fin.to, Cause::Crossed, "RFC 9293 §3.6"),
            )],
            // The same first transition, another second one.
            vec![
                (Role::Server, fin),
                (
                    Role::Client,
                    t(
                        State::Established,
                        State::CloseWait,
                        Cause::ReceivedFin,
                        "RFC 9293 §3.10.7.4",
                    ),
                ),
            ],
            vec![
                (Role::Server, fin),
                (
                    Role::Client,
                    t(
                        State::Established,
                        State::FinWait1,
                        Cause::SentFin,
                        "RFC 9293 §3.10.4",
                    ),
                ),
            ],
        ];
        let mut cache = CommentCache::new(Comments::Changes);
        for round in 0..3 {
            for (i, list) in lists.iter().enumerate() {
                let mut event = base.clone();
                event.transitions = list.clone();
                assert_eq!(
                    cache.comment(&event),
                    comment(&event),
                    "round {round}, list {i}"
                );
            }
        }
        let texts: std::collections::HashSet<String> = lists
            .iter()
            .map(|list| {
                let mut event = base.clone();
                event.transitions = list.clone();
                comment(&event)
            })
            .collect();
        assert_eq!(texts.len(), lists.len());
    }

    #[test]
    fn the_cache_shares_plain_texts_and_keeps_notes_apart() {
        let mut segs = active_close(false);
        segs.insert(6, segs[5].clone()); // the reply again: a note
        let cached = |mode| {
            let mut tracker = Tracker::new();
            let mut cache = CommentCache::new(mode);
            segs.iter()
                .map(|s| cache.comment(&tracker.on_segment(s)).into_owned())
                .collect::<Vec<String>>()
        };
        let mut fresh = Tracker::new();
        let expected: Vec<String> = segs.iter().map(|s| comment(&fresh.on_segment(s))).collect();
        // --comments all: today's text on every segment, cached or not.
        let texts = cached(Comments::All);
        assert_eq!(texts, expected);
        assert!(
            texts[6].contains("retransmission or a duplicate"),
            "{}",
            texts[6]
        );
        assert_eq!(
            texts[7],
            "no state change: client ESTABLISHED, server ESTABLISHED"
        );
        // The default: the same texts where a state changed or a note is, none elsewhere.
        let texts = cached(Comments::Changes);
        for (i, (text, all)) in texts.iter().zip(&expected).enumerate() {
            if all.starts_with("no state change") {
                assert_eq!(text, "", "segment {i}");
            } else {
                assert_eq!(text, all, "segment {i}");
            }
        }
        assert_eq!(texts.iter().filter(|t| t.is_empty()).count(), 4);
    }

    /// The default on a capture: no comment on a mid-connection data segment or its ACK,
    /// one on every transition and every retransmission; `--comments all` gives the old text.
    #[test]
    fn by_default_only_changes_and_notes_are_commented() {
        let mut segs = active_close(false);
        segs.insert(6, segs[5].clone()); // the reply again, 10 ms later: a retransmission
        let at = |i: usize| every_50us(i) + Duration::from_millis(10 * i as u64);
        let (packets, _) = captured(segs.clone(), at);
        let texts: Vec<&str> = packets.iter().map(|p| p.comment.as_str()).collect();
        // 3: the request, 4: its ACK, 5: the reply, 7: the ACK of the reply.
        for i in [3, 4, 5, 7] {
            assert_eq!(texts[i], "", "segment {i}: {texts:?}");
        }
        assert!(
            texts[6].starts_with("retransmission of the previous segment after 10 ms"),
            "{}",
            texts[6]
        );
        for (i, p) in packets.iter().enumerate() {
            let changed = !p.event.as_ref().unwrap().transitions.is_empty();
            assert_eq!(changed || i == 6, !texts[i].is_empty(), "segment {i}");
        }
        let mut annotator: Annotator<Unfinished> = Annotator::new(Tracker::new());
        annotator.comments = Comments::All;
        let mut all = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let frame = Frame {
                ts: at(i),
                data: Vec::new(),
                orig_len: 0,
            };
            annotator.push_frame(frame, Ok(seg.clone()), &mut all);
        }
        annotator.finish_into(&mut all);
        assert_eq!(
            all[3].comment,
            "no state change: client ESTABLISHED, server ESTABLISHED"
        );
        for (p, default) in all.iter().zip(&texts) {
            if !default.is_empty() {
                assert_eq!(p.comment, *default);
            }
        }
    }

    #[test]
    fn teardowns_comments_are_told_from_other_comments() {
        let mut segs = active_close(false);
        let mut late = segs[5].clone();
        late.seq = late.seq + 12;
        segs.insert(9, late);
        segs.insert(6, segs[5].clone());
        let mut tracker = Tracker::new();
        for seg in &segs {
            let text = comment(&tracker.on_segment(seg));
            assert!(is_teardown_comment(&text), "{text}");
        }
        for ours in [
            "kernel: client ESTABLISHED → CLOSE at +1.000 ms after the first segment (no \
             segment caused it: a timer)",
            "MISMATCH: the kernel traced no change for the server here",
            "malformed: IPv4 header cut short",
            "link type 189 is not one teardown decodes",
            "no state change: client ESTABLISHED, server ESTABLISHED; cut by the capture's \
             snaplen: 4 of 11 payload bytes captured",
        ] {
            assert!(is_teardown_comment(ours), "{ours}");
        }
        for theirs in [
            "",
            "a note of mine",
            "server ESTABLISHED → FIN_WAIT_1 looks early",
            "the client sends FIN here; no state change expected",
            "UNEXPECTED: nothing",
        ] {
            assert!(!is_teardown_comment(theirs), "{theirs}");
        }
    }

    #[test]
    fn unexpected_segments_are_named() {
        let mut segs = active_close(false);
        // A data segment from the server after its FIN.
        let mut late = segs[5].clone();
        late.seq = late.seq + 12;
        segs.insert(9, late);
        let mut tracker = Tracker::new();
        let c: Vec<String> = segs
            .iter()
            .map(|s| comment(&tracker.on_segment(s)))
            .collect();
        assert!(
            c[9].starts_with(
                "UNEXPECTED: server in FIN_WAIT_2 sent PSH,ACK: data sent after its own FIN"
            ),
            "{}",
            c[9]
        );
    }
}

#[cfg(test)]
mod evidence_tests {
    use super::*;
    use crate::evidence::Verdict;
    use std::sync::{Arc, Mutex};

    /// Evidence that knows a segment once the test says the trace was read past it.
    struct Late {
        through: Arc<Mutex<Duration>>,
    }

    impl Evidence for Late {
        fn settled(&mut self, at: Duration) -> bool {
            *self.through.lock().unwrap() >= at
        }
        fn kernel(&mut self, _seg: &Segment, event: &Event, at: Duration) -> Vec<Note> {
            vec![Note {
                role: event.from,
                inferred: None,
                verdict: Verdict::Info,
                text: format!("kernel: seen at {at:?}"),
            }]
        }
    }

    #[test]
    fn a_segment_waits_for_the_evidence_and_leaves_with_its_word_in_the_comment() {
        let segs = crate::tracker::tests::active_close(false);
        let through = Arc::new(Mutex::new(Duration::ZERO));
        let mut annotator = Annotator::new(Tracker::new());
        annotator.evidence.push(Box::new(Late {
            through: through.clone(),
        }));
        let mut out = Vec::new();
        let at = |i: usize| Duration::from_millis(10 + i as u64);
        // The handshake's ACK (index 2) answers the SYN: only the evidence holds it back.
        for (i, seg) in segs[..3].iter().enumerate() {
            let frame = Frame {
                ts: at(i),
                data: Vec::new(),
                orig_len: 0,
            };
            annotator.push_frame(frame, Ok(seg.clone()), &mut out);
        }
        assert!(
            out.is_empty(),
            "nothing leaves before the evidence has read its time"
        );
        *through.lock().unwrap() = at(1);
        annotator.release_into(Some(at(2)), &mut out);
        assert_eq!(
            out.len(),
            2,
            "the two segments it has read past leave, in order"
        );
        assert!(
            out[1].comment.contains("kernel: seen at 11ms"),
            "{}",
            out[1].comment
        );
        assert_eq!(out[1].kernel.len(), 1);
        annotator.finish_into(&mut out);
        assert_eq!(out.len(), 3, "at the end of the capture everything goes");
    }
}
