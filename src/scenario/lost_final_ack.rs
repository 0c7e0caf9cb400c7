//! The lost final ACK, TIME_WAIT's first reason (RFC 9293 §3.6): the last ACK never
//! arrives, LAST_ACK sends its FIN again after the retransmission timeout (and backs off),
//! and TIME_WAIT, still there, answers it and starts its 2×MSL again.

use std::time::Duration;

use super::{Place, Scenario, article_exchange, client_reads_to_eof_and_closes, server_exits};
use crate::error::Error;
use crate::gate::Gate;
use crate::gate::policy::DropFinalAcks;
use crate::run::lab::Lab;
use crate::sockets::SockOpts;
use crate::tcp::State;

/// The server's ACKs of the client's FIN that are dropped.
const DROPS: usize = 3;

pub static SCENARIO: Scenario = Scenario {
    name: "lost-final-ack",
    lesson: "the last ACK is lost: LAST_ACK sends its FIN again after the RTO (and backs off), \
             TIME_WAIT answers and restarts its 60 s: why TIME_WAIT exists",
    about: "The article's close, server first, across two hosts (network namespaces joined by \
            a veth). The kernel's packet filter drops the server's final ACK, twice. The \
            client, in LAST_ACK, never hears it and sends its FIN again after its \
            retransmission timeout, then again after twice that (exponential backoff). The \
            server's end is in TIME_WAIT precisely so that it can still answer: it \
            acknowledges the repeated FIN and starts its 2×MSL again. Without TIME_WAIT the \
            repeated FIN would meet no socket and draw an RST, and the client would end in \
            error.",
    expect: [State::Closed, State::TimeWait],
    sysctls: &[],
    place: Place::TwoHosts,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let gate = Gate::start(lab.server.port(), Box::new(DropFinalAcks::new(DROPS)))?;
    lab.print(format!(
        "     packet filter (server's host): {}",
        gate.describe()
    ));
    lab.gate = Some(gate);
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
    // The retransmissions: about 0.2 s, 0.4 s, 0.8 s apart.
    let closed = lab.wait_until(Duration::from_secs(6), |lab| {
        lab.states() == Some([State::Closed, State::TimeWait])
    })?;
    if closed {
        // The client's FINs, and the gaps between them.
        let fins: Vec<Duration> = lab
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
        let grew = |i: usize| match (before[i], after[i]) {
            (Some(b), Some(a)) => a.saturating_sub(b).to_string(),
            _ => "?".to_string(),
        };
        lab.say(
            "client",
            format!(
                "sent its FIN {} more time(s), {} ms apart; its kernel counted {} tail loss \
                 probe(s) (TCPLossProbes, RFC 8985 §7) and {} retransmission timeout(s) \
                 (TCPTimeouts), the timeout doubling each time (RFC 6298 §5.5)",
                fins.len().saturating_sub(1),
                gaps.join(", "),
                grew(0),
                grew(1)
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
