//! Simultaneous close: both ends close at once and the two FINs cross on the wire; each end
//! goes FIN_WAIT_1 → CLOSING → TIME_WAIT (RFC 9293 §3.6, Figure 13).

use super::bench::Lab;
use super::{Place, Scenario, article_exchange};
use crate::error::Error;
use crate::gate::Gate;
use crate::gate::policy::CrossFins;
use crate::sockets::{self, SockOpts};
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "simultaneous-close",
    lesson: "both FINs cross: each end goes FIN_WAIT_1 → CLOSING → TIME_WAIT, and both keep a \
             TIME_WAIT",
    about: "Both programs close at the same moment, and the two FINs cross in flight. Over one \
            loopback that never happens by itself, so the run uses two hosts (network \
            namespaces joined by a veth) and the kernel's packet filter: each FIN is held back \
            until both hosts have sent theirs, then both go; the two ACKs likewise. Each FIN \
            reaches a host that is still waiting for the ACK of its own: FIN_WAIT_1 → CLOSING, \
            and with the ACK, TIME_WAIT, on both sides. Both ends then hold TIME_WAIT, so the \
            server's restart fails too.",
    expect: [State::TimeWait, State::TimeWait],
    sysctls: &[],
    place: Place::TwoHosts,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let gate = Gate::start(
        &lab.hosts,
        lab.server.port(),
        Box::new(CrossFins::default()),
    )?;
    lab.print(format!(
        "     packet filter (both hosts): {}",
        gate.describe()
    ));
    lab.use_gate(gate);
    let mut opened = article_exchange(lab, SockOpts::NONE)?;
    let got = sockets::read(&mut opened.client, "client")?;
    lab.say(
        "client",
        format!("read() → {:?}", String::from_utf8_lossy(&got)),
    )?;
    let super::Opened {
        listener,
        server_conn,
        client,
    } = opened;
    drop(server_conn);
    drop(client);
    drop(listener);
    lab.say(
        "both",
        "close() at the same moment: each host sends its FIN before the other's arrives",
    )?;
    lab.wait_for(State::TimeWait, State::TimeWait)?;
    lab.finish_capture()?;
    lab.print_table("both ends now")?;
    lab.restart(
        "restart the server at once",
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    )?;
    Ok(())
}
