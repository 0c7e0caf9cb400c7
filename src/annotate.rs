//! Events → the text of a packet comment: the transitions a segment caused on each side.

use std::borrow::Cow;

use crate::capture::Frame;
use crate::decode::{DecodeError, Segment};
use crate::kernel::agree::Note;
use crate::tcp::State;
use crate::tracker::{Event, Role, Tracker};

/// A captured frame with what teardown made of it.
#[derive(Clone, Debug)]
pub struct Packet {
    pub frame: Frame,
    pub decoded: Result<Segment, DecodeError>,
    pub event: Option<Event>,
    pub comment: String,
}

impl Packet {
    pub fn segment(&self) -> Option<&Segment> {
        self.decoded.as_ref().ok()
    }
}

/// Decodes, tracks and comments one frame.
pub fn annotate(
    tracker: &mut Tracker,
    frame: Frame,
    decode: impl Fn(&[u8]) -> Result<Segment, DecodeError>,
) -> Packet {
    let decoded = decode(&frame.data);
    let event = decoded
        .as_ref()
        .ok()
        .map(|seg| tracker.on_segment_at(seg, Some(frame.ts)));
    let comment = match (&decoded, &event) {
        (_, Some(event)) => comment(event),
        (Err(err), _) => err.to_string(),
        (Ok(_), None) => String::new(),
    };
    Packet {
        frame,
        decoded,
        event,
        comment,
    }
}

/// Comments for a long stream of segments: one that changes nothing and is nothing special
/// (no note) shares the text of its pair of states, made once; the others get their own.
#[derive(Default)]
pub struct CommentCache {
    unchanged: Vec<Option<String>>,
}

impl CommentCache {
    pub fn comment(&mut self, event: &Event) -> Cow<'_, str> {
        if !(event.transitions.is_empty() && event.unexpected.is_empty() && event.notes.is_empty())
        {
            return Cow::Owned(comment(event));
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
}

/// `server ESTABLISHED → FIN_WAIT_1 (sent FIN, RFC 9293 §3.10.4); client ...`, or the
/// states that held when nothing changed.
pub fn comment(event: &Event) -> String {
    comment_with(event, &[])
}

/// The comment with the kernel's word on each transition (`...; kernel agrees)`).
pub fn comment_with(event: &Event, kernel: &[Note]) -> String {
    let mut parts: Vec<String> = event
        .transitions
        .iter()
        .map(|(role, t)| {
            let mut s = format!("{role} {} → {} ({}, {}", t.from, t.to, t.cause, t.rfc);
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
            s
        })
        .collect();
    parts.extend(
        kernel
            .iter()
            .filter(|n| n.inferred.is_none())
            .map(|n| n.text.clone()),
    );
    parts.extend(event.notes.iter().cloned());
    for (role, u) in &event.unexpected {
        let dir = match u.dir {
            crate::tcp::Dir::Sent => "sent",
            crate::tcp::Dir::Received => "received",
        };
        parts.push(format!(
            "UNEXPECTED: {role} in {} {dir} {}: {}",
            u.state, u.flags, u.why
        ));
    }
    if event.transitions.is_empty()
        && event.unexpected.is_empty()
        && !kernel.iter().any(|n| n.inferred.is_none())
    {
        parts.push(format!(
            "no state change: client {}, server {}",
            event.state(Role::Client),
            event.state(Role::Server)
        ));
    }
    parts.join("; ")
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
        let mut tracker = Tracker::new();
        let packets = segs
            .into_iter()
            .enumerate()
            .map(|(i, seg)| {
                let frame = Frame {
                    ts: at(i),
                    data: vec![],
                    orig_len: 0,
                };
                annotate(&mut tracker, frame, move |_| Ok::<Segment, _>(seg.clone()))
            })
            .collect();
        (packets, tracker)
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

    #[test]
    fn the_cache_shares_plain_texts_and_keeps_notes_apart() {
        let mut segs = active_close(false);
        segs.insert(6, segs[5].clone()); // the reply again: a note
        let mut tracker = Tracker::new();
        let mut cache = CommentCache::default();
        let texts: Vec<String> = segs
            .iter()
            .map(|s| cache.comment(&tracker.on_segment(s)).into_owned())
            .collect();
        let mut fresh = Tracker::new();
        let expected: Vec<String> = segs.iter().map(|s| comment(&fresh.on_segment(s))).collect();
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
