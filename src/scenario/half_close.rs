//! shutdown(SHUT_WR): a half close. The FIN says "I will send no more", not "I am gone": data
//! still flows the other way (RFC 9293 §3.6).

use std::net::Shutdown;

use super::bench::Lab;
use super::{Opened, Place, Scenario, article_exchange, server_closes};
use crate::error::Error;
use crate::sockets::{self, SockOpts};
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "half-close",
    lesson: "shutdown(SHUT_WR) sends FIN but keeps reading: FIN_WAIT_2 while data still comes in, \
             CLOSE_WAIT while the peer still sends",
    about: "The server calls shutdown(SHUT_WR): its FIN goes out, but the connection stays open the \
            other way. The client reads EOF, still writes its last words, which the server reads \
            in FIN_WAIT_2, then closes. The server's end ends in TIME_WAIT as in active-close.",
    expect: [State::Closed, State::TimeWait],
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
    server_conn
        .shutdown(Shutdown::Write)
        .map_err(sockets::call("server: shutdown(SHUT_WR)"))?;
    lab.say("server", "shutdown(SHUT_WR): FIN, but it keeps reading")?;
    let got = sockets::read_to_eof(&mut client, "client")?;
    lab.say("client", super::read_to_eof_said(&got))?;
    sockets::write(&mut client, "client", b"my last words")?;
    lab.say(
        "client",
        "write(\"my last words\"): the other direction is still open",
    )?;
    let words = sockets::read(&mut server_conn, "server")?;
    lab.say(
        "server",
        format!(
            "read() → {:?} in FIN_WAIT_2",
            String::from_utf8_lossy(&words)
        ),
    )?;
    drop(client);
    lab.say("client", "close()")?;
    let eof = sockets::read(&mut server_conn, "server")?;
    lab.say("server", super::read_said(&eof))?;
    server_closes(lab, listener, server_conn)?;
    lab.wait_for(State::Closed, State::TimeWait)?;
    lab.finish_capture()?;
    lab.restart(
        "restart the server at once",
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    )?;
    Ok(())
}
