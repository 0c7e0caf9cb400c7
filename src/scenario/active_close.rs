//! The article's first case: the server closes first and keeps the port in TIME_WAIT.

use super::bench::Lab;
use super::{Place, Scenario, article_exchange, client_reads_to_eof_and_closes, server_exits};
use crate::error::Error;
use crate::sockets::SockOpts;
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "active-close",
    lesson: "the side that closes first keeps the port in TIME_WAIT: the restart's bind() fails",
    about: "The server closes first (its process exits); the client reads EOF and closes too. \
            The server's end of the connection stays in TIME_WAIT for 60 s, so restarting the \
            server at once fails with EADDRINUSE.",
    expect: [State::Closed, State::TimeWait],
    sysctls: &[],
    place: Place::Any,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let opened = article_exchange(lab, SockOpts::NONE)?;
    let client = server_exits(lab, opened)?;
    client_reads_to_eof_and_closes(lab, client)?;
    lab.wait_for(State::Closed, State::TimeWait)?;
    lab.finish_capture()?;
    lab.restart(
        "restart the server at once",
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    )?;
    Ok(())
}
