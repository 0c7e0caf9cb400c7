//! What to do with each segment the packet filter hands over: the pure part of holding back
//! and dropping segments, so that it is tested without root.

use crate::decode::Segment;
use crate::tcp::SeqNum;
use crate::tracker::Role;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let it go on now.
    Accept,
    /// It never reaches the wire (nor the capture).
    Drop,
    /// Keep it until the policy says release.
    Hold,
}

pub trait Policy: Send {
    /// The decision for `seg`, sent by `from`'s host.
    fn decide(&mut self, from: Role, seg: &Segment) -> Decision;
    /// Whether every held segment is to go now (asked after each decision).
    fn release(&mut self) -> bool;
    /// What the policy does, one line, for the narration.
    fn describe(&self) -> String;
}

fn pure_ack(seg: &Segment) -> bool {
    let f = seg.flags;
    f.ack() && !f.syn() && !f.fin() && !f.rst() && seg.len == 0
}

/// Simultaneous close: both FINs are held until both are sent, then released together, so
/// each reaches a host that is already in FIN_WAIT_1; then the two ACKs likewise, or the
/// first ACK overtakes the second FIN (RFC 9293 §3.6, Figure 13).
#[derive(Debug, Default)]
pub struct CrossFins {
    phase: Phase,
    held: [bool; 2],
    go: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Fins,
    Acks,
    Done,
}

impl Policy for CrossFins {
    fn decide(&mut self, from: Role, seg: &Segment) -> Decision {
        let wanted = match self.phase {
            Phase::Fins => seg.flags.fin(),
            Phase::Acks => pure_ack(seg),
            Phase::Done => false,
        };
        if !wanted {
            return Decision::Accept;
        }
        self.held[from.index()] = true;
        if self.held == [true, true] {
            self.held = [false, false];
            self.go = true;
            self.phase = match self.phase {
                Phase::Fins => Phase::Acks,
                _ => Phase::Done,
            };
        }
        Decision::Hold
    }

    fn release(&mut self) -> bool {
        std::mem::take(&mut self.go)
    }

    fn describe(&self) -> String {
        "hold each FIN until both hosts have sent one, release them together; then the two \
         ACKs the same way"
            .to_string()
    }
}

/// Lost final ACK: the server's ACKs of the client's FIN are dropped, the first `drops` of
/// them, so that the client's LAST_ACK retransmits its FIN.
#[derive(Debug)]
pub struct DropFinalAcks {
    drops: usize,
    dropped: usize,
    client_fin_end: Option<SeqNum>,
}

impl DropFinalAcks {
    pub fn new(drops: usize) -> DropFinalAcks {
        DropFinalAcks {
            drops,
            dropped: 0,
            client_fin_end: None,
        }
    }
}

impl Policy for DropFinalAcks {
    fn decide(&mut self, from: Role, seg: &Segment) -> Decision {
        match from {
            Role::Client if seg.flags.fin() => {
                self.client_fin_end = Some(seg.seq + (seg.len + 1));
                Decision::Accept
            }
            Role::Server
                if pure_ack(seg)
                    && Some(seg.ack) == self.client_fin_end
                    && self.dropped < self.drops =>
            {
                self.dropped += 1;
                Decision::Drop
            }
            _ => Decision::Accept,
        }
    }

    fn release(&mut self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!(
            "drop the server's ACK of the client's FIN, {}",
            crate::output::style::plural(self.drops, "time", "times")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::Flags;
    use crate::tracker::tests::segment;

    const FA: Flags = Flags(Flags::FIN.0 | Flags::ACK.0);

    #[test]
    fn crossing_fins_are_held_until_both_then_the_acks() {
        let mut p = CrossFins::default();
        // Data passes.
        let data = segment(true, Flags::ACK, 1, 1, 11);
        assert_eq!(p.decide(Role::Client, &data), Decision::Accept);
        assert!(!p.release());
        // The server's FIN waits for the client's.
        let s_fin = segment(false, FA, 900, 112, 0);
        assert_eq!(p.decide(Role::Server, &s_fin), Decision::Hold);
        assert!(!p.release());
        let c_fin = segment(true, FA, 112, 900, 0);
        assert_eq!(p.decide(Role::Client, &c_fin), Decision::Hold);
        assert!(p.release());
        assert!(!p.release(), "one release per gathering");
        // Then the ACKs, the same way.
        let c_ack = segment(true, Flags::ACK, 113, 901, 0);
        assert_eq!(p.decide(Role::Client, &c_ack), Decision::Hold);
        assert!(!p.release());
        let s_ack = segment(false, Flags::ACK, 901, 113, 0);
        assert_eq!(p.decide(Role::Server, &s_ack), Decision::Hold);
        assert!(p.release());
        // After that, nothing is held.
        assert_eq!(p.decide(Role::Server, &s_fin), Decision::Accept);
    }

    #[test]
    fn only_the_acks_of_the_clients_fin_are_dropped_and_only_so_many() {
        let mut p = DropFinalAcks::new(2);
        // Before the client's FIN, the server's ACKs pass.
        let early = segment(false, Flags::ACK, 913, 112, 0);
        assert_eq!(p.decide(Role::Server, &early), Decision::Accept);
        let c_fin = segment(true, FA, 112, 913, 0);
        assert_eq!(p.decide(Role::Client, &c_fin), Decision::Accept);
        let final_ack = segment(false, Flags::ACK, 913, 113, 0);
        assert_eq!(p.decide(Role::Server, &final_ack), Decision::Drop);
        // The client's retransmitted FIN passes; the second ACK is dropped, the third not.
        assert_eq!(p.decide(Role::Client, &c_fin), Decision::Accept);
        assert_eq!(p.decide(Role::Server, &final_ack), Decision::Drop);
        assert_eq!(p.decide(Role::Server, &final_ack), Decision::Accept);
        assert!(!p.release());
    }
}
