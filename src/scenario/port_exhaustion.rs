//! The client's side of TIME_WAIT: a client that opens short connections to one server and
//! closes each first keeps a TIME_WAIT per connection, each holding a local port, until
//! connect() fails with EADDRNOTAVAIL.

use std::net::SocketAddr;

use super::bench::Lab;
use super::{Place, Scenario};
use crate::error::Error;
use crate::sockets::{self, SockOpts, errno_name};
use crate::tcp::State;
use crate::why::connect::sustainable_rate;

/// Ephemeral ports in the run's range. An even number: connect() scans the range in a count
/// rounded down to even (__inet_hash_connect), so with 5 ports a rotating one of them is out of
/// its reach and it fails after 4 or 5 connections, not always after 5.
pub const PORTS: u16 = 6;
/// Linux's TIME_WAIT (TCP_TIMEWAIT_LEN), in seconds.
const TIME_WAIT_S: f64 = 60.0;

pub static SCENARIO: Scenario = Scenario {
    name: "port-exhaustion",
    lesson: "a client that closes first keeps a TIME_WAIT per connection: when every local port \
             to the server is held, connect() fails with EADDRNOTAVAIL",
    about: "The same rule as the article's, seen from the client: whoever closes first keeps \
            TIME_WAIT, and a client's TIME_WAIT holds its local port. The run shrinks \
            net.ipv4.ip_local_port_range to 6 ports in its own namespace, opens and closes \
            (client first) 6 connections to one server, and the 7th connect() fails with \
            EADDRNOTAVAIL (errno 99): every port to that address and port is in TIME_WAIT. The \
            sustainable rate of new connections to one destination is the ports in the range \
            divided by 60 s.",
    expect: [State::TimeWait, State::Closed],
    sysctls: &["net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse"],
    place: Place::Any,
    ports: 1,
    script,
};

/// A random range of `PORTS` ports: the kernel's trace is global, and parallel runs must not
/// share 4-tuples. Returns the range it replaced.
pub fn shrink_port_range(lab: &mut Lab) -> Result<String, Error> {
    let base = 32768 + (sockets::random_u32() % 28000) as u16;
    let range = format!("{base} {}", base + PORTS - 1);
    lab.sysctl(
        "net.ipv4.ip_local_port_range",
        &range,
        &format!("{PORTS} ephemeral ports, so that they run out within a second"),
    )
}

/// Opens `PORTS` connections to `server` from ports the kernel picks, closes each from the
/// client first, and waits until each client end is in TIME_WAIT. Returns their addresses.
/// The listener is handed back, still listening.
pub fn fill_ports(
    lab: &mut Lab,
    server: SocketAddr,
) -> Result<(Vec<SocketAddr>, sockets::Socket), Error> {
    let listener = sockets::listen_in(&lab.hosts, server, SockOpts::NONE)?;
    let mut used = Vec::new();
    for i in 1..=PORTS {
        let client = sockets::connect_ephemeral(lab.client_ip, server)?;
        let local = client.local_addr().map_err(Error::io("getsockname"))?;
        let (mut conn, _) = sockets::accept(&listener)?;
        drop(client);
        sockets::read_to_eof(&mut conn, "server")?;
        drop(conn);
        let reached = lab.wait_kernel_state(local, server, State::TimeWait)?;
        lab.expect(
            &format!("connection {i} from {local}"),
            "client end in TIME_WAIT",
            if reached {
                "client end in TIME_WAIT"
            } else {
                "not in TIME_WAIT"
            },
        );
        used.push(local);
    }
    lab.say(
        "client",
        format!(
            "{PORTS} times: connect() to {server} (the kernel picks the port), close() first, the \
             server reads EOF and closes: TIME_WAIT on ports {}",
            used.iter()
                .map(|a| a.port().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )?;
    Ok((used, listener))
}

/// One more connect(): its errno, or None if it got a port.
pub fn one_more(
    lab: &mut Lab,
    server: SocketAddr,
) -> Result<(Option<i32>, Option<SocketAddr>), Error> {
    match sockets::connect_ephemeral(lab.client_ip, server) {
        Ok(s) => Ok((None, s.local_addr().ok())),
        Err(e) if e.errno().is_some() => Ok((e.errno(), None)),
        Err(e) => Err(e.into()),
    }
}

pub fn outcome(errno: Option<i32>) -> String {
    match errno {
        None => "connected".to_string(),
        Some(n) => format!("{} (errno {n})", errno_name(n)),
    }
}

fn script(lab: &mut Lab) -> Result<(), Error> {
    let default_range = shrink_port_range(lab)?;
    lab.sysctl(
        "net.ipv4.tcp_tw_reuse",
        "0",
        "Linux's default (2) lets connections over loopback take over a TIME_WAIT port after a \
         second; 0, as between two machines",
    )?;
    let server = lab.server;
    // The listener stays: the server is there, only the client's ports run out.
    let (_, _listener) = fill_ports(lab, server)?;
    lab.wait_for(State::TimeWait, State::Closed)?;
    let (errno, _) = one_more(lab, server)?;
    lab.say(
        "client",
        format!(
            "connect() #{} to {server} → {}{}",
            PORTS + 1,
            outcome(errno),
            if errno == Some(libc::EADDRNOTAVAIL) {
                ": Cannot assign requested address, no local port is free for this destination"
            } else {
                ""
            }
        ),
    )?;
    lab.expect(
        &format!("connect() #{}", PORTS + 1),
        &outcome(Some(libc::EADDRNOTAVAIL)),
        &outcome(errno),
    );
    lab.finish_capture()?;
    lab.print_table("the ports are held")?;
    let ports_of = |range: &str| -> Option<u32> {
        let mut it = range.split_whitespace().map(|p| p.parse::<u32>().ok());
        let (lo, hi) = (it.next()??, it.next()??);
        Some(hi.saturating_sub(lo) + 1)
    };
    lab.print(format!(
        "     The arithmetic: a local port stays in TIME_WAIT {TIME_WAIT_S:.0} s after each close, so \
         at most (ports in the range) ÷ {TIME_WAIT_S:.0} s new connections per second to one \
         destination (address and port):"
    ));
    lab.print(format!(
        "       this run:      {PORTS} ports ÷ {TIME_WAIT_S:.0} s = {} connections/s",
        sustainable_rate(u32::from(PORTS))
    ));
    if let Some(n) = ports_of(&default_range) {
        lab.print(format!(
            "       Linux default: {n} ports ({}) ÷ {TIME_WAIT_S:.0} s = {} connections/s",
            default_range.replace(char::is_whitespace, "–"),
            sustainable_rate(n)
        ));
    }
    lab.print(
        "     Fixes: reuse connections (keep-alive, a pool); let the server close first; widen \
         ip_local_port_range; spread over more server addresses or ports; tcp_tw_reuse (see \
         `teardown run tw-reuse`). Never SO_LINGER {on, 0}: it trades TIME_WAIT for RSTs and lost \
         data.",
    );
    Ok(())
}
