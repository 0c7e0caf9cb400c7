//! RFC 6191: TIME_WAIT does not always block the same client. A new SYN for the 4-tuple of a
//! connection whose server end is in TIME_WAIT is accepted when its timestamp (or sequence
//! number) is newer than the old connection's.

use super::bench::Lab;
use super::{Place, Scenario, article_exchange, client_reads_to_eof_and_closes};
use crate::error::Error;
use crate::sockets::{self, SockOpts};
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "timewait-new-syn",
    lesson: "a new SYN from the same client port is accepted by the server's TIME_WAIT when \
             its timestamp is newer (RFC 6191): TIME_WAIT does not block the same client",
    about: "The server keeps listening but closes the connection first, so its end of the \
            4-tuple sits in TIME_WAIT. The client, from the very same port, connects again at \
            once. The SYN reaches the TIME_WAIT socket, whose job is to keep old segments of \
            that 4-tuple away; but this SYN's TCP timestamp is newer than anything the old \
            connection sent, so it cannot be old, and Linux accepts it as a new connection \
            (RFC 6191; with no timestamps, a sequence number above the old one's does the \
            same). The new connection then closes the article's way.",
    expect: [State::Closed, State::TimeWait],
    sysctls: &[],
    place: Place::Any,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let opened = article_exchange(lab, SockOpts::NONE)?;
    let super::Opened {
        listener,
        server_conn,
        client,
    } = opened;
    let client_addr = client.local_addr().map_err(Error::io("getsockname"))?;
    drop(server_conn);
    lab.say("server", "close() the connection only; it keeps listening")?;
    client_reads_to_eof_and_closes(lab, client)?;
    lab.wait_for(State::Closed, State::TimeWait)?;
    lab.print_table("the server's end is in TIME_WAIT")?;
    let mut again = sockets::connect_from(client_addr, lab.server)?;
    lab.say(
        "client",
        format!(
            "socket(), bind {client_addr} (the same port), connect {}: the SYN meets the \
             server's TIME_WAIT",
            lab.server
        ),
    )?;
    let (mut conn, peer) = sockets::accept(&listener)?;
    lab.say(
        "server",
        format!("accept() → a connection from {peer}: TIME_WAIT let the new SYN in"),
    )?;
    lab.expect(
        "the new connection's peer",
        &client_addr.to_string(),
        &peer.to_string(),
    );
    lab.wait_for(State::Established, State::Established)?;
    sockets::write(&mut again, "client", b"I am client, again")?;
    let got = sockets::read(&mut conn, "server")?;
    lab.say(
        "server",
        format!("read() → {:?}", String::from_utf8_lossy(&got)),
    )?;
    drop(conn);
    drop(listener);
    lab.say(
        "server",
        "close(): the new connection ends the article's way",
    )?;
    client_reads_to_eof_and_closes(lab, again)?;
    lab.wait_for(State::Closed, State::TimeWait)?;
    lab.finish_capture()?;
    Ok(())
}
