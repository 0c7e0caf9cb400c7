//! SO_LINGER {on, 0}: close() aborts with RST, no TIME_WAIT — the "fix" people reach for, and
//! what it costs.

use socket2::SockRef;

use super::bench::Lab;
use super::{Place, Scenario, article_exchange, client_reads_until_end, server_exits};
use crate::error::Error;
use crate::sockets::{self, SockOpts};
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "linger-abort",
    lesson: "SO_LINGER {on, 0} closes with RST: no TIME_WAIT, but the peer gets ECONNRESET instead \
             of a clean EOF",
    about: "The server sets SO_LINGER with a zero timeout, then closes. The kernel aborts the \
            connection with RST instead of FIN (RFC 9293 §3.10.5, ABORT): no TIME_WAIT, so the \
            restart works. But the client's read() ends in ECONNRESET, not EOF, and whatever the \
            server had not sent yet would have been thrown away, with no retransmission of a lost \
            last segment either. That is why it is no fix for EADDRINUSE: SO_REUSEADDR is.",
    expect: [State::Closed, State::Closed],
    sysctls: &[],
    place: Place::Any,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let opened = article_exchange(lab, SockOpts::NONE)?;
    SockRef::from(&opened.server_conn)
        .set_linger(Some(std::time::Duration::ZERO))
        .map_err(sockets::call("setsockopt SO_LINGER"))?;
    lab.say("server", "setsockopt SO_LINGER {on, 0}, then close()")?;
    let mut client = server_exits(lab, opened)?;
    client_reads_until_end(lab, &mut client)?;
    drop(client);
    lab.wait_for(State::Closed, State::Closed)?;
    lab.finish_capture()?;
    lab.restart("restart the server at once", SockOpts::NONE, None)?;
    Ok(())
}
