//! Writing to a peer that has closed: the first write succeeds and draws an RST, the second
//! fails with EPIPE — the signal SIGPIPE would kill a program that does not ignore it.

use super::bench::Lab;
use super::{Place, Scenario, article_exchange, server_exits};
use crate::error::Error;
use crate::sockets::{self, SockOpts, describe};
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "write-after-close",
    lesson: "writing to a closed peer: the first write() succeeds and draws an RST, the second \
             fails with EPIPE (and SIGPIPE)",
    about: "The server closes (its process exits). The client, without reading the EOF, writes: \
            the write succeeds locally, but the server's end is gone and answers with RST. The \
            client's second write fails with EPIPE; a program that has not ignored SIGPIPE is \
            killed by it at that moment (teardown ignores it, and reports it).",
    expect: [State::Closed, State::Closed],
    sysctls: &[],
    place: Place::Any,
    ports: 1,
    script,
};

fn script(lab: &mut Lab) -> Result<(), Error> {
    let opened = article_exchange(lab, SockOpts::NONE)?;
    let mut client = server_exits(lab, opened)?;
    lab.wait_for(State::CloseWait, State::FinWait2)?;
    sockets::write(&mut client, "client", b"are you there?")?;
    lab.say(
        "client",
        "write(\"are you there?\") → 14: it succeeds, locally",
    )?;
    lab.wait_for(State::Closed, State::Closed)?;
    let second = match std::io::Write::write(&mut client, b"hello?") {
        Ok(n) => crate::output::style::plural(n, "byte", "bytes"),
        Err(e) => describe(&e),
    };
    lab.say(
        "client",
        format!(
            "write(\"hello?\") → {second}: the RST came back; without SIG_IGN, SIGPIPE would \
             have killed the process here"
        ),
    )?;
    lab.record.client_error = Some(second);
    drop(client);
    lab.finish_capture()?;
    lab.restart("restart the server at once", SockOpts::NONE, None)?;
    Ok(())
}
