//! close() with unread bytes in the receive buffer sends RST, not FIN (RFC 2525 §2.17, RFC 9293
//! §3.6): the peer's read() gets ECONNRESET and nobody waits in TIME_WAIT.

use super::bench::Lab;
use super::{Place, Scenario, article_exchange, client_reads_until_end, server_exits};
use crate::error::Error;
use crate::sockets::{self, SockOpts};
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "unread-data-rst",
    lesson: "close() with unread data sends RST instead of FIN: the peer's read() fails with \
             ECONNRESET, and no TIME_WAIT is left",
    about: "The client writes a second message the server never reads; the server closes with it \
            still in its receive buffer. Linux then resets the connection (RFC 2525 §2.17): RST \
            instead of FIN, the client's read() fails with ECONNRESET, neither end waits in \
            TIME_WAIT, and the server restarts at once.",
    expect: [State::Closed, State::Closed],
    sysctls: &[],
    place: Place::Any,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let mut opened = article_exchange(lab, SockOpts::NONE)?;
    sockets::write(&mut opened.client, "client", b"one more thing")?;
    lab.say(
        "client",
        "write(\"one more thing\"), which the server will never read",
    )?;
    // Until those bytes sit in the server's receive buffer (peek reads without taking them).
    let mut peek = [0u8; 64];
    let waiting = opened
        .server_conn
        .peek(&mut peek)
        .map_err(sockets::call("server: peek"))?;
    lab.say(
        "server",
        format!("has {waiting} unread bytes; its close() will send RST, not FIN"),
    )?;
    let mut client = server_exits(lab, opened)?;
    client_reads_until_end(lab, &mut client)?;
    drop(client);
    lab.wait_for(State::Closed, State::Closed)?;
    lab.finish_capture()?;
    lab.restart("restart the server at once", SockOpts::NONE, None)?;
    Ok(())
}
