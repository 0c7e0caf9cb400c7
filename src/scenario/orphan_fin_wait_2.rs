//! The article's second case carried on: the orphaned FIN_WAIT_2 does not wait forever. Linux
//! removes it after `net.ipv4.tcp_fin_timeout`, and the peer's FIN that comes later finds no
//! socket and draws an RST.

use std::time::{Duration, Instant};

use super::bench::Lab;
use super::{Place, Scenario, article_exchange, server_exits};
use crate::error::Error;
use crate::sockets::{self, SockOpts};
use crate::tcp::State;
use crate::tracker::Role;

/// Seconds: short enough for a run, long enough (over 3.5 RTO) for Linux to use as given.
const FIN_TIMEOUT: u64 = 2;

pub static SCENARIO: Scenario = Scenario {
    name: "orphan-fin-wait-2",
    lesson: "an orphaned FIN_WAIT_2 is removed after tcp_fin_timeout; the peer's late FIN then \
             draws an RST",
    about: "The server closes and exits; the client keeps its socket open. The server's end is \
            an orphan (no program holds it) in FIN_WAIT_2, and the restart fails. Linux does not \
            let it wait forever: after net.ipv4.tcp_fin_timeout (60 s by default; 2 s in this \
            run's own namespace) the kernel removes it. When the client finally reads to EOF and \
            closes, its FIN finds no socket and the server's kernel answers with RST; the \
            restart now succeeds.",
    expect: [State::Closed, State::Closed],
    sysctls: &["net.ipv4.tcp_fin_timeout"],
    place: Place::Any,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    lab.sysctl(
        "net.ipv4.tcp_fin_timeout",
        &FIN_TIMEOUT.to_string(),
        "the orphan's time in FIN_WAIT_2 (60 s by default), shortened so the run takes seconds",
    )?;
    let opened = article_exchange(lab, SockOpts::NONE)?;
    let mut client = server_exits(lab, opened)?;
    let closed_at = Instant::now();
    lab.say(
        "client",
        "keeps its socket open: no read(), no close(), for now",
    )?;
    lab.wait_for(State::CloseWait, State::FinWait2)?;
    lab.print_table("both ends now")?;
    lab.restart(
        "restart the server at once",
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    )?;
    let Some(conn) = lab.connection().map(|c| (c.id, c.client)) else {
        return Ok(());
    };
    let limit = Duration::from_secs(FIN_TIMEOUT + 3);
    match lab.wait_kernel_gone(lab.server, conn.1, limit)? {
        Some(_) => {
            let after = closed_at.elapsed().as_secs_f64();
            lab.annotator.tracker.remove(
                conn.0,
                Role::Server,
                "removed by the kernel before this segment: its FIN_WAIT_2 timer \
                 (tcp_fin_timeout) expired",
                "Linux: net.ipv4.tcp_fin_timeout",
            );
            lab.say(
                "kernel",
                format!(
                    "removes the orphaned FIN_WAIT_2 {after:.1} s after the server's close \
                     (tcp_fin_timeout = {FIN_TIMEOUT} s): no socket is left on the server's side"
                ),
            )?;
        }
        None => {
            lab.record.notes.push(format!(
                "the orphaned FIN_WAIT_2 was still in the kernel's table {} s after the close \
                 (expected its removal after tcp_fin_timeout = {FIN_TIMEOUT} s)",
                limit.as_secs()
            ));
            return Ok(());
        }
    }
    let got = sockets::read_to_eof(&mut client, "client")?;
    drop(client);
    lab.say(
        "client",
        format!(
            "at last {}, close(): its FIN reaches a server with no socket for it",
            super::read_to_eof_said(&got)
        ),
    )?;
    lab.wait_for(State::Closed, State::Closed)?;
    lab.say(
        "server",
        "its kernel answers the late FIN with RST (RFC 9293 §3.10.7.1: no connection)",
    )?;
    lab.finish_capture()?;
    lab.restart("restart the server now", SockOpts::NONE, None)?;
    Ok(())
}
