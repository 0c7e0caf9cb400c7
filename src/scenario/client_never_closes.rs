//! The article's second case: the client never closes; the server's end waits in FIN_WAIT_2.

use super::bench::Lab;
use super::{Place, Scenario, article_exchange, server_exits};
use crate::error::Error;
use crate::sockets::SockOpts;
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "client-never-closes",
    lesson: "a peer that never closes leaves the server in FIN_WAIT_2 and itself in CLOSE_WAIT: \
             the restart fails too",
    about: "The server closes first; the client keeps its socket open without reading. The \
            server's end waits in FIN_WAIT_2 for a FIN that never comes, the client's sits in \
            CLOSE_WAIT with the unread reply in its Recv-Q, and restarting the server fails \
            with EADDRINUSE.",
    expect: [State::CloseWait, State::FinWait2],
    sysctls: &[],
    place: Place::Any,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let opened = article_exchange(lab, SockOpts::NONE)?;
    let client = server_exits(lab, opened)?;
    lab.say("client", "keeps its socket open: no read(), no close()")?;
    lab.wait_for(State::CloseWait, State::FinWait2)?;
    lab.finish_capture()?;
    lab.print_table("both ends now")?;
    lab.print("");
    lab.restart(
        "restart the server at once",
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    )?;
    // The client's socket closes only now, after the capture and the restart.
    drop(client);
    Ok(())
}
