//! The fix: SO_REUSEADDR lets the restarted server bind while TIME_WAIT holds the port, but
//! on Linux only when the old socket set it too.

use std::net::SocketAddr;

use super::bench::Lab;
use super::{
    Place, Scenario, article_exchange, client_reads_to_eof_and_closes, old_connection, server_exits,
};
use crate::error::Error;
use crate::sockets::SockOpts;
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "reuseaddr",
    lesson: "SO_REUSEADDR lets the restart bind despite TIME_WAIT — on Linux only if the old \
             socket set it too",
    about: "As active-close, but the server sets SO_REUSEADDR before bind(). The restart \
            without the option still fails; with it, it succeeds. A second check shows that on \
            Linux the new socket's SO_REUSEADDR alone is not enough (on macOS and the BSDs it \
            would be).",
    expect: [State::Closed, State::TimeWait],
    sysctls: &[],
    place: Place::OneHost,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let opened = article_exchange(lab, SockOpts::REUSEADDR)?;
    let client = server_exits(lab, opened)?;
    client_reads_to_eof_and_closes(lab, client)?;
    lab.wait_for(State::Closed, State::TimeWait)?;
    lab.finish_capture()?;
    lab.restart(
        "restart without the option",
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    )?;
    let _restarted = lab.restart("restart with SO_REUSEADDR", SockOpts::REUSEADDR, None)?;
    new_socket_alone(lab)
}

/// The same close on a second server address (so the first TIME_WAIT is not in the way),
/// this time without SO_REUSEADDR on the old socket: the new socket's option is not enough.
fn new_socket_alone(lab: &mut Lab) -> Result<(), Error> {
    let second = SocketAddr::new([127, 0, 0, 3].into(), lab.server.port());
    lab.print("");
    lab.print(format!(
        "     Now the old socket without the option, on {second} (not captured):"
    ));
    old_connection(lab, second, SockOpts::NONE, true)?;
    lab.restart_at(
        "restart with SO_REUSEADDR, old socket without",
        second,
        SockOpts::NONE,
        SockOpts::REUSEADDR,
        Some(libc::EADDRINUSE),
    )?;
    Ok(())
}
