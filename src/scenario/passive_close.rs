//! The client closes first: TIME_WAIT belongs to whoever closes first, so this time it is the
//! client's, and the server restarts freely.

use super::bench::Lab;
use super::{Opened, Place, Scenario, article_exchange, server_closes};
use crate::error::Error;
use crate::sockets::{self, SockOpts};
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "passive-close",
    lesson: "TIME_WAIT belongs to whoever closes first: when the client does, the server restarts \
             freely",
    about: "The client closes first; the server reads EOF and closes too. The client's end waits \
            in TIME_WAIT, the server's end is gone at once (LAST_ACK → CLOSED), and restarting the \
            server at once works.",
    expect: [State::TimeWait, State::Closed],
    sysctls: &[],
    place: Place::Any,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let Opened {
        listener,
        mut server_conn,
        mut client,
    } = article_exchange(lab, SockOpts::NONE)?;
    let reply = sockets::read(&mut client, "client")?;
    lab.say("client", super::read_said(&reply))?;
    drop(client);
    lab.say("client", "close(): the client closes first")?;
    lab.snapshot("right after the client's close()")?;
    let eof = sockets::read(&mut server_conn, "server")?;
    lab.say(
        "server",
        format!("{}, the client closed", super::read_said(&eof)),
    )?;
    if !lab.quick_close {
        // The textbook's four segments: the server's kernel ACKs the FIN on its own first.
        lab.wait_for(State::FinWait2, State::CloseWait)?;
        lab.say(
            "server",
            "waits until its kernel has sent the ACK of the FIN by itself (a delayed ACK)",
        )?;
    }
    server_closes(lab, listener, server_conn)?;
    lab.wait_for(State::TimeWait, State::Closed)?;
    lab.finish_capture()?;
    lab.restart("restart the server at once", SockOpts::NONE, None)?;
    Ok(())
}
