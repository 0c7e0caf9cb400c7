//! The lost final ACK, TIME_WAIT's first reason (RFC 9293 §3.6): the last ACK never
//! arrives, LAST_ACK sends its FIN again (a tail loss probe, then retransmission timeouts
//! that back off), and TIME_WAIT, still there, answers each and starts its 2×MSL again.

use std::time::Duration;

use super::bench::Lab;
use super::{Place, Scenario, article_exchange, client_reads_to_eof_and_closes, server_exits};
use crate::error::Error;
use crate::gate::Gate;
use crate::gate::policy::DropFinalAcks;
use crate::output::style::plural;
use crate::sockets::SockOpts;
use crate::tcp::State;

/// The server's ACKs of the client's FIN that are dropped.
const DROPS: usize = 3;

pub static SCENARIO: Scenario = Scenario {
    name: "lost-final-ack",
    lesson: "the last ACK is lost: LAST_ACK sends its FIN again (a tail loss probe, then RTOs \
             that back off), TIME_WAIT answers and restarts its 60 s: why TIME_WAIT exists",
    about: "The article's close, server first, across two hosts (network namespaces joined by \
            a veth). The kernel's packet filter drops the server's ACK of the client's FIN three \
            times: the final ACK and its answers to the first two repeated FINs. The client, \
            in LAST_ACK, never hears it and sends its FIN again three times: first as a tail \
            loss probe (RFC 8985), then at its retransmission timeout, then after twice that \
            (exponential backoff, RFC 6298). The server's end is in TIME_WAIT precisely so \
            that it can still answer: it acknowledges each repeated FIN and starts its 2×MSL \
            again, and the third answer gets through. Without TIME_WAIT a repeated FIN would \
            meet no socket and draw an RST, and the client would end in error.",
    expect: [State::Closed, State::TimeWait],
    sysctls: &[],
    place: Place::TwoHosts,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let gate = Gate::start(
        &lab.hosts,
        lab.server.port(),
        Box::new(DropFinalAcks::new(DROPS)),
    )?;
    lab.print(format!(
        "     packet filter (server's host): {}",
        gate.describe()
    ));
    lab.use_gate(gate);
    let counters = || ["TCPLossProbes", "TCPTimeouts"].map(crate::kernel::tcp_ext_counter);
    let before = counters();
    let opened = article_exchange(lab, SockOpts::NONE)?;
    let client = server_exits(lab, opened)?;
    client_reads_to_eof_and_closes(lab, client)?;
    lab.wait_for(State::LastAck, State::TimeWait)?;
    lab.say(
        "server",
        "in TIME_WAIT: its final ACK is dropped on the way; the client stays in LAST_ACK",
    )?;
    // The probe and the retransmissions: about 0.2 s, 0.2 s, 0.4 s apart.
    let closed = lab.wait_until(Duration::from_secs(6), |lab| {
        lab.states() == Some([State::Closed, State::TimeWait])
    })?;
    if closed {
        // The last FIN came just before the ACK that closed it: still held, maybe.
        lab.wait_released()?;
        // The client's FINs, and the gaps between them.
        let fins: Vec<Duration> = lab
            .record
            .packets
            .iter()
            .filter(|p| {
                p.segment()
                    .is_some_and(|s| s.flags.fin() && s.src.ip() == lab.client_ip)
            })
            .map(|p| p.frame.ts)
            .collect();
        let gaps: Vec<String> = fins
            .windows(2)
            .map(|w| format!("{:.0}", (w[1] - w[0]).as_secs_f64() * 1000.0))
            .collect();
        let after = counters();
        // How much a TcpExt counter grew, as "1 tail loss probe" ("? ..." when unreadable).
        let grew = |i: usize, one: &str, many: &str| match (before[i], after[i]) {
            (Some(b), Some(a)) => plural(a.saturating_sub(b) as usize, one, many),
            _ => format!("? {many}"),
        };
        lab.say(
            "client",
            format!(
                "sent its FIN again {}, {} ms apart; its kernel counted {} (TCPLossProbes, \
                 RFC 8985 §7) and {} (TCPTimeouts), the timeout doubling each time (RFC 6298 \
                 §5.5)",
                plural(fins.len().saturating_sub(1), "time", "times"),
                gaps.join(", "),
                grew(0, "tail loss probe", "tail loss probes"),
                grew(1, "retransmission timeout", "retransmission timeouts")
            ),
        )?;
        lab.say(
            "client",
            "an ACK of its FIN arrives at last: LAST_ACK → CLOSED",
        )?;
    } else {
        lab.wait_for(State::Closed, State::TimeWait)?;
    }
    lab.finish_capture()?;
    lab.print_table("TIME_WAIT's timer started again at the last FIN")?;
    lab.restart(
        "restart the server at once",
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_story_counts_the_drops_the_filter_makes() {
        let times = ["never", "once", "twice", "three times", "four times"][DROPS];
        let about = SCENARIO
            .about
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            about.contains(&format!("FIN {times}")) && about.contains(&format!("again {times}")),
            "{about}"
        );
        // The kernel's first resend is a tail loss probe, then come the timeouts.
        assert!(about.contains("first as a tail loss probe"), "{about}");
        assert!(SCENARIO.lesson.contains("a tail loss probe, then RTOs"));
    }
}
