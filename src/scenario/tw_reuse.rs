//! tcp_tw_reuse: when connect() may take over a local port still in TIME_WAIT. With 0 never;
//! with 1 once the TIME_WAIT is older than tcp_tw_reuse_delay, relying on TCP timestamps; with
//! 2 (Linux's default) the same, for loopback connections only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::bench::Lab;
use super::port_exhaustion::{PORTS, fill_ports, one_more, outcome, shrink_port_range};
use super::{Place, Scenario};
use crate::error::Error;
use crate::sockets;
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "tw-reuse",
    lesson: "net.ipv4.tcp_tw_reuse lets connect() take over a TIME_WAIT port after \
             tcp_tw_reuse_delay (1 s), thanks to TCP timestamps: never with 0, always with 1, on \
             loopback only with 2 (the default)",
    about: "The port exhaustion of port-exhaustion three times, with net.ipv4.tcp_tw_reuse at \
            0, 1 and 2 (set in the run's own namespace only), each towards its own server port. \
            Every time the next connect() fails at once with EADDRNOTAVAIL. Then it is tried \
            again until it works: with 0 it never does (the port is free only when TIME_WAIT \
            ends, 60 s later); with 1 it works once the TIME_WAIT is older than \
            net.ipv4.tcp_tw_reuse_delay (read from the kernel), and the new SYN's timestamp is \
            what lets the peer tell the new connection's segments from the old one's; with 2 \
            the same, because these connections are over loopback (across --netns, 2 behaves \
            as 0).",
    expect: [State::TimeWait, State::Closed],
    sysctls: &["net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse"],
    place: Place::Any,
    ports: 3,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    shrink_port_range(lab)?;
    let delay_ms: u64 = match crate::netns::sysctl("net.ipv4.tcp_tw_reuse_delay") {
        Ok(v) => {
            let ms = v.parse().unwrap_or(1000);
            lab.print(format!(
                "     net.ipv4.tcp_tw_reuse_delay = {ms} ms (read from the kernel): how old a \
                 TIME_WAIT must be before connect() may take its port over"
            ));
            ms
        }
        Err(_) => {
            lab.print(
                "     net.ipv4.tcp_tw_reuse_delay is not in this kernel: older kernels wait 1 to \
                 2 s (the timestamp's second must have changed)",
            );
            1000
        }
    };
    let loopback = !lab.hosts.two();
    let main = lab.server;
    // The default (2) last, on the scenario's own port: its connection is the verdict's.
    for (value, port) in [
        (0u8, main.port() + 1),
        (1, main.port() + 2),
        (2, main.port()),
    ] {
        lab.print("");
        lab.sysctl(
            "net.ipv4.tcp_tw_reuse",
            &value.to_string(),
            match value {
                0 => "never take over a TIME_WAIT port",
                1 => "take it over once the TIME_WAIT is old enough, for any connection",
                _ => "Linux's default: the same, for loopback connections only",
            },
        )?;
        let server = SocketAddr::new(main.ip(), port);
        let first_close = Instant::now();
        let (_, listener) = fill_ports(lab, server)?;
        let (errno, _) = one_more(lab, server)?;
        lab.say(
            "client",
            format!(
                "tcp_tw_reuse = {value}: connect() #{} to {server} at once → {}",
                PORTS + 1,
                outcome(errno)
            ),
        )?;
        lab.expect(
            &format!("tcp_tw_reuse = {value}: connect() #{} at once", PORTS + 1),
            &outcome(Some(libc::EADDRNOTAVAIL)),
            &outcome(errno),
        );
        if value == 0 {
            lab.print(
                "     with 0 the ports come back only when their TIME_WAIT ends, 60 s after each \
                 close: not waited for here",
            );
            continue;
        }
        let may_reuse = value == 1 || loopback;
        let limit = Duration::from_millis(delay_ms) + Duration::from_secs(2);
        let (errno, local) = loop {
            let (errno, local) = one_more(lab, server)?;
            if errno.is_none() || first_close.elapsed() > limit {
                break (errno, local);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let age = first_close.elapsed().as_secs_f64();
        match (errno, local) {
            (None, Some(local)) => {
                let (mut conn, _) = sockets::accept(&listener)?;
                lab.say(
                    "client",
                    format!(
                        "tcp_tw_reuse = {value}: connect() again → connected from {local}, a port \
                         still in TIME_WAIT, {age:.2} s after the first close (delay {delay_ms} \
                         ms); then closes first again"
                    ),
                )?;
                if age * 1000.0 < delay_ms as f64 {
                    lab.expect(
                        &format!("tcp_tw_reuse = {value}: the takeover"),
                        &format!("after {delay_ms} ms"),
                        &format!("after {:.0} ms", age * 1000.0),
                    );
                }
                // The new incarnation closes like the others: the client first (one_more let
                // its socket go), the server at EOF.
                sockets::read_to_eof(&mut conn, "server")?;
                drop(conn);
                lab.wait_kernel_state(local, server, State::TimeWait)?;
            }
            _ => {
                lab.say(
                    "client",
                    format!(
                        "tcp_tw_reuse = {value}: connect() tried again for {age:.1} s → {}{}",
                        outcome(errno),
                        if value == 2 && !loopback {
                            ": 2 takes ports over for loopback connections only"
                        } else {
                            ""
                        }
                    ),
                )?;
            }
        }
        lab.expect(
            &format!("tcp_tw_reuse = {value}: connect() after the delay"),
            if may_reuse {
                "connected"
            } else {
                "EADDRNOTAVAIL (errno 99)"
            },
            &outcome(errno),
        );
    }
    lab.finish_capture()?;
    Ok(())
}
