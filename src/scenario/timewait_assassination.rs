//! TIME-WAIT assassination (RFC 1337): an old duplicate segment reaches a socket in
//! TIME_WAIT, which answers with an ACK; the peer, long closed, answers that with a RST whose
//! sequence number is exactly in the window, and the RST ends TIME_WAIT early, unless
//! `net.ipv4.tcp_rfc1337 = 1`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::bench::Lab;
use super::{Place, Scenario, article_exchange, client_reads_to_eof_and_closes, server_exits};
use crate::error::Error;
use crate::sockets::{self, SockOpts};
use crate::tcp::State;
use crate::tracker::{Forged, Role};

pub static SCENARIO: Scenario = Scenario {
    name: "timewait-assassination",
    lesson: "an in-window RST kills a TIME_WAIT socket when net.ipv4.tcp_rfc1337 = 0 (the \
             default), not when it is 1 (RFC 1337)",
    about: "The article's close leaves the server's end in TIME_WAIT. Then an old duplicate of \
            the client's data arrives (teardown sends a copy through a raw socket). TIME_WAIT \
            answers it with an ACK; the client's kernel has no socket any more and answers the \
            ACK with a RST, which lands exactly in TIME_WAIT's window. With tcp_rfc1337 = 0, \
            Linux's default, the RST kills TIME_WAIT early, and the restart binds at once: \
            exactly the protection TIME_WAIT was for is gone. The same on port+1 with \
            tcp_rfc1337 = 1 (set in this run's own namespace only): the RST is ignored and \
            TIME_WAIT keeps the port.",
    expect: [State::Closed, State::Closed],
    sysctls: &["net.ipv4.tcp_rfc1337"],
    place: Place::Any,
    ports: 2,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    lab.sysctl(
        "net.ipv4.tcp_rfc1337",
        "0",
        "Linux's default: TIME_WAIT obeys an in-window RST",
    )?;
    lab.annotator.tracker.rfc1337 = Some(false);
    let opened = article_exchange(lab, SockOpts::NONE)?;
    let client = server_exits(lab, opened)?;
    client_reads_to_eof_and_closes(lab, client)?;
    lab.wait_for(State::Closed, State::TimeWait)?;
    let server = lab.server;
    let Some(peer) = old_duplicate(lab, server)? else {
        return Ok(());
    };
    lab.wait_for(State::Closed, State::Closed)?;
    match lab.wait_kernel_gone(server, peer, Duration::from_secs(1))? {
        Some(_) => lab.say(
            "kernel",
            "the RST killed the server's TIME_WAIT socket, some 60 s early (tcp_rfc1337 = 0)",
        )?,
        None => lab.record.notes.push(
            "the server's TIME_WAIT socket was still in the kernel's table after the RST \
             (expected the RST to kill it with tcp_rfc1337 = 0)"
                .to_string(),
        ),
    }
    lab.restart("restart the server after the RST", SockOpts::NONE, None)?;

    // The same with RFC 1337's fix switched on, on the next port.
    lab.print("");
    lab.sysctl(
        "net.ipv4.tcp_rfc1337",
        "1",
        "RFC 1337's fix: TIME_WAIT ignores RSTs",
    )?;
    lab.annotator.tracker.rfc1337 = Some(true);
    let other = SocketAddr::new(server.ip(), server.port() + 1);
    let reached = closed_with_data(lab, other)?;
    lab.say(
        "server",
        format!(
            "{other}: the same exchange and close (not narrated); the server's end is in \
             TIME_WAIT{}",
            if reached { "" } else { "?" }
        ),
    )?;
    let Some(peer) = old_duplicate(lab, other)? else {
        return Ok(());
    };
    // A RST that is ignored changes nothing: look a while that TIME_WAIT stays.
    match lab.wait_kernel_gone(other, peer, Duration::from_millis(200))? {
        None => lab.say(
            "kernel",
            format!("{other}: the RST is ignored; TIME_WAIT stays (tcp_rfc1337 = 1)"),
        )?,
        Some(_) => lab.record.notes.push(format!(
            "{other}: the TIME_WAIT socket died of the RST although tcp_rfc1337 = 1"
        )),
    }
    lab.finish_capture()?;
    lab.restart_at(
        "restart the port+1 server after the RST",
        other,
        SockOpts::NONE,
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    )?;
    Ok(())
}

/// The article's exchange and close at `addr`, not narrated: the server writes and closes
/// first, the client reads to EOF and closes. Waits until the server's end is in TIME_WAIT.
fn closed_with_data(lab: &mut Lab, addr: SocketAddr) -> Result<bool, Error> {
    let listener = sockets::listen_in(&lab.hosts, addr, SockOpts::NONE)?;
    let mut client = sockets::connect(lab.client_ip, addr)?;
    let client_addr = client.local_addr().map_err(Error::io("getsockname"))?;
    let (mut server_conn, _) = sockets::accept(&listener)?;
    sockets::write(&mut client, "client", b"I am client")?;
    sockets::read(&mut server_conn, "server")?;
    drop(server_conn);
    drop(listener);
    sockets::read_to_eof(&mut client, "client")?;
    drop(client);
    lab.wait_kernel_state(addr, client_addr, State::TimeWait)
}

/// Sends a copy of the client's first data segment to `server` again, as an old duplicate
/// would arrive, and waits for the exchange it sets off: TIME_WAIT's ACK and the client
/// kernel's RST. The client's address, or None if the connection was not seen.
fn old_duplicate(lab: &mut Lab, server: SocketAddr) -> Result<Option<SocketAddr>, Error> {
    // The client's first data segment to `server`, once the capture has brought it in.
    let first_data = |lab: &Lab| {
        lab.record.packets.iter().find_map(|p| {
            let (seg, event) = (p.segment()?, p.event.as_ref()?);
            (seg.dst == server && event.from == Role::Client && seg.len > 0).then(|| {
                (
                    event.conn,
                    seg.clone(),
                    p.frame.data.get(14..).map(<[u8]>::to_vec),
                )
            })
        })
    };
    lab.wait_until(Duration::from_secs(1), |lab| first_data(lab).is_some())?;
    let found = first_data(lab);
    let Some((conn, seg, Some(ip_packet))) = found else {
        lab.record.notes.push(format!(
            "no data segment of the connection to {server} was captured: nothing to send again"
        ));
        return Ok(None);
    };
    let IpAddr::V4(dst) = server.ip() else {
        return Ok(None);
    };
    lab.annotator.tracker.forged(
        Forged {
            src: seg.src,
            dst: seg.dst,
            seq: seg.seq,
            len: seg.len,
        },
        "an old duplicate: a copy of the client's first data segment, sent again by teardown \
         through a raw socket as if delayed in the network (RFC 1337 §2); the client's socket \
         is long gone"
            .to_string(),
    );
    let Some(ip_packet) = sockets::with_tcp_checksum(&ip_packet) else {
        return Ok(None);
    };
    sockets::send_raw_ipv4(&ip_packet, dst)?;
    lab.say(
        "network",
        format!(
            "an old duplicate reaches {server}: the client's first data segment again ({}; \
             teardown sends the captured copy through a raw socket)",
            crate::output::style::plural(seg.len as usize, "byte", "bytes")
        ),
    )?;
    let reset_seen = lab.wait_until(Duration::from_secs(1), |lab| {
        lab.record.packets.iter().rev().any(|p| {
            p.event
                .as_ref()
                .is_some_and(|e| e.conn == conn && e.from == Role::Client)
                && p.segment().is_some_and(|s| s.flags.rst())
        })
    })?;
    if reset_seen {
        lab.say(
            "server",
            "its TIME_WAIT answers the old segment with an ACK; the client's kernel has no socket \
             for it and answers with a RST whose sequence number is the one TIME_WAIT expects next",
        )?;
    } else {
        lab.record.notes.push(format!(
            "{server}: no RST came back after the old duplicate (expected TIME_WAIT's ACK and \
             the client kernel's RST)"
        ));
    }
    Ok(Some(seg.src))
}
