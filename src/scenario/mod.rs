//! The scenarios: each one a story, a socket script run against the real kernel, and the
//! states and errnos the kernel must produce.

mod active_close;
pub mod bench;
mod bind_matrix;
mod client_never_closes;
mod half_close;
mod linger_abort;
mod lost_final_ack;
mod orphan_fin_wait_2;
mod passive_close;
pub mod port_exhaustion;
mod reuseaddr;
mod simultaneous_close;
mod timewait_assassination;
mod timewait_new_syn;
mod tw_reuse;
mod unread_data_rst;
pub mod words;
mod write_after_close;

use std::net::TcpStream;

use crate::error::Error;
use crate::sockets::{self, SockOpts, Socket};
use crate::tcp::State;
use bench::Lab;

pub struct Scenario {
    pub name: &'static str,
    /// One line: what it teaches.
    pub lesson: &'static str,
    /// A few sentences: what happens.
    pub about: &'static str,
    /// The states the connection must end in: [client, server].
    pub expect: [State; 2],
    /// The sysctls it changes, only ever inside the run's own namespace (never with --host).
    pub sysctls: &'static [&'static str],
    /// Where it can run.
    pub place: Place,
    /// How many ports it uses, from `--port` up: each of bind-matrix's rows and each of
    /// tw-reuse's settings has a port of its own.
    pub ports: u16,
    pub script: fn(&mut Lab) -> Result<(), Error>,
}

/// Where a scenario can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On loopback (the default), on the host's (`--host`), or across a veth (`--netns`).
    Any,
    /// On one host only: it binds several loopback addresses (127.0.0.x) of one machine.
    OneHost,
    /// Always across two namespaces joined by a veth: it holds back or drops segments with
    /// the kernel's packet filter.
    TwoHosts,
}

impl Scenario {
    /// The ports it uses with `--port base`, or why they do not fit below 65536.
    pub fn port_range(&self, base: u16) -> Result<std::ops::RangeInclusive<u16>, String> {
        let last = u32::from(base) + u32::from(self.ports) - 1;
        match u16::try_from(last) {
            Ok(last) => Ok(base..=last),
            Err(_) => Err(format!(
                "--port {base}: {} uses {} ports, {base} to {last}, past 65535; give --port {} \
                 or lower",
                self.name,
                self.ports,
                65536 - u32::from(self.ports)
            )),
        }
    }
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

pub static ALL: [&Scenario; 16] = [
    &active_close::SCENARIO,
    &client_never_closes::SCENARIO,
    &reuseaddr::SCENARIO,
    &passive_close::SCENARIO,
    &unread_data_rst::SCENARIO,
    &linger_abort::SCENARIO,
    &half_close::SCENARIO,
    &write_after_close::SCENARIO,
    &bind_matrix::SCENARIO,
    &orphan_fin_wait_2::SCENARIO,
    &timewait_assassination::SCENARIO,
    &simultaneous_close::SCENARIO,
    &lost_final_ack::SCENARIO,
    &port_exhaustion::SCENARIO,
    &tw_reuse::SCENARIO,
    &timewait_new_syn::SCENARIO,
];

/// `run all --host` gives scenario `i` of the catalogue (in `teardown list`'s order, from 0)
/// the ports from `base + HOST_STRIDE × i`: on one host's loopback one scenario's TIME_WAIT
/// would refuse the next one's bind.
pub const HOST_STRIDE: u16 = 10;

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|s| s.name).collect()
}

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().copied().find(|s| s.name == name)
}

/// The three sockets of the article's exchange, open.
pub struct Opened {
    pub listener: Socket,
    pub server_conn: TcpStream,
    pub client: TcpStream,
}

/// The article's opening: the server listens, the client connects and writes "I am client",
/// the server reads it and answers "I am server".
pub fn article_exchange(lab: &mut Lab, opts: SockOpts) -> Result<Opened, Error> {
    lab.server_opts = opts;
    let option = if opts == SockOpts::NONE {
        String::new()
    } else {
        format!("setsockopt {opts}, ")
    };
    let listener = sockets::listen_in(&lab.hosts, lab.server, opts)?;
    lab.say(
        "server",
        format!("socket(), {option}bind {}, listen()", lab.server),
    )?;
    let client = sockets::connect(lab.client_ip, lab.server)?;
    let local = client
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| lab.client_ip.to_string());
    lab.say(
        "client",
        format!(
            "socket(), bind {local} (a random port), connect {}",
            lab.server
        ),
    )?;
    let (server_conn, peer) = sockets::accept(&listener)?;
    lab.say("server", format!("accept() → a connection from {peer}"))?;
    let mut opened = Opened {
        listener,
        server_conn,
        client,
    };
    sockets::write(&mut opened.client, "client", b"I am client")?;
    lab.say("client", "write(\"I am client\")")?;
    let got = sockets::read(&mut opened.server_conn, "server")?;
    sockets::write(&mut opened.server_conn, "server", b"I am server")?;
    lab.say(
        "server",
        format!(
            "read() → {:?}; write(\"I am server\")",
            String::from_utf8_lossy(&got)
        ),
    )?;
    Ok(opened)
}

/// A connection to `addr` whose server (socket options `opts`) closes first, not captured and
/// not narrated: for the scenarios that need an old socket on another port or address. With
/// `client_closes`, the client reads to EOF and closes, leaving the server's end in TIME_WAIT;
/// without, the client's socket is handed back open and the server's end is an orphaned
/// FIN_WAIT_2. Waits until the kernel's table shows that state; false if it never did.
pub fn old_connection(
    lab: &mut Lab,
    addr: std::net::SocketAddr,
    opts: SockOpts,
    client_closes: bool,
) -> Result<(bool, Option<TcpStream>), Error> {
    let listener = sockets::listen_in(&lab.hosts, addr, opts)?;
    let mut client = sockets::connect(lab.client_ip, addr)?;
    let client_addr = client.local_addr().map_err(Error::io("getsockname"))?;
    let (server_conn, _) = sockets::accept(&listener)?;
    drop(server_conn);
    drop(listener);
    let (state, kept) = if client_closes {
        sockets::read_to_eof(&mut client, "client")?;
        drop(client);
        (State::TimeWait, None)
    } else {
        (State::FinWait2, Some(client))
    };
    let reached = lab.wait_kernel_state(addr, client_addr, state)?;
    if !reached {
        lab.record.notes.push(format!(
            "{addr} did not reach {state} in the kernel's table within the limit"
        ));
    }
    Ok((reached, kept))
}

/// The client reads until EOF or an error, and says which: for the scenarios whose point is
/// how reading ends (ECONNRESET after an RST). What it got, and how it ended.
pub fn client_reads_until_end(lab: &mut Lab, client: &mut TcpStream) -> Result<String, Error> {
    let (got, error) = sockets::read_until_end(client, "client");
    let end = match error {
        None => read_said(&[]),
        Some(e) => format!("read() → {}", sockets::describe(&e.source)),
    };
    let text = if got.is_empty() {
        format!("nothing had arrived: {end}")
    } else {
        format!("{} (what had arrived), then {end}", read_said(&got))
    };
    lab.say("client", text)?;
    lab.record.client_error = Some(end.clone());
    Ok(end)
}

/// What one `read()` returned, as the narration says it: `read() → "I am server"`, and
/// for a read that returned nothing (the end of the stream) `read() → 0: EOF`.
pub fn read_said(got: &[u8]) -> String {
    if got.is_empty() {
        "read() → 0: EOF".to_string()
    } else {
        format!("read() → {:?}", String::from_utf8_lossy(got))
    }
}

/// Reading until the end: `read() → "I am server", then read() → 0: EOF`, or only
/// `read() → 0: EOF` when nothing came before it.
pub fn read_to_eof_said(got: &[u8]) -> String {
    if got.is_empty() {
        read_said(got)
    } else {
        format!("{}, then {}", read_said(got), read_said(&[]))
    }
}

/// The server process exits: its listening socket and its connection close. The client's
/// socket stays open, handed back.
pub fn server_exits(lab: &mut Lab, opened: Opened) -> Result<TcpStream, Error> {
    let Opened {
        listener,
        server_conn,
        client,
    } = opened;
    server_closes(lab, listener, server_conn)?;
    Ok(client)
}

/// The server closes its connection and its listener (its process exits), and the kernel's
/// table is shown right after.
pub fn server_closes(lab: &mut Lab, listener: Socket, server_conn: TcpStream) -> Result<(), Error> {
    drop(server_conn);
    drop(listener);
    lab.say(
        "server",
        "close() the connection and the listener: the server process exits",
    )?;
    lab.snapshot("right after the server's close()")
}

/// The client reads the reply, then reads until EOF (`read()` returns 0), and closes.
///
/// By default it closes only once its kernel has acknowledged the server's FIN on its own:
/// the textbook's four segments. With `--quick-close` it closes at once, as most programs
/// do; Linux then usually holds back that ACK (delayed ACK, at least 40 ms) and sends it on
/// the client's FIN: three segments.
pub fn client_reads_to_eof_and_closes(lab: &mut Lab, mut client: TcpStream) -> Result<(), Error> {
    let got = sockets::read_to_eof(&mut client, "client")?;
    lab.say(
        "client",
        format!("{}, the server closed its end", read_to_eof_said(&got)),
    )?;
    if !lab.quick_close {
        lab.wait_for(State::CloseWait, State::FinWait2)?;
        lab.say(
            "client",
            "waits until its kernel has sent the ACK of the FIN by itself (a delayed ACK); \
             --quick-close closes at once and the ACK rides on the FIN",
        )?;
    }
    drop(client);
    lab.say("client", "close()")?;
    lab.snapshot("right after the client's close()")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_declares_its_ports_and_they_fit_in_the_host_stride() {
        for s in ALL {
            assert!(
                s.ports >= 1 && s.ports <= HOST_STRIDE,
                "{}: {}",
                s.name,
                s.ports
            );
        }
    }

    #[test]
    fn ports_past_65535_are_refused_with_the_highest_base_that_fits() {
        let matrix = find("bind-matrix").unwrap();
        assert_eq!(matrix.port_range(65526), Ok(65526..=65535));
        let err = matrix.port_range(65527).unwrap_err();
        assert_eq!(
            err,
            "--port 65527: bind-matrix uses 10 ports, 65527 to 65536, past 65535; give --port \
             65526 or lower"
        );
        let reuse = find("tw-reuse").unwrap();
        assert!(reuse.port_range(65534).is_err());
        assert_eq!(
            find("active-close").unwrap().port_range(65535),
            Ok(65535..=65535)
        );
    }

    #[test]
    fn an_empty_read_is_the_end_of_the_stream() {
        assert_eq!(read_said(b""), "read() → 0: EOF");
        assert_eq!(read_said(b"I am server"), "read() → \"I am server\"");
        assert_eq!(
            read_to_eof_said(b"I am server"),
            "read() → \"I am server\", then read() → 0: EOF"
        );
        assert_eq!(read_to_eof_said(b""), "read() → 0: EOF");
    }

    #[test]
    fn lessons_are_one_clause_without_a_full_stop() {
        // The section comment adds it: `teardown run NAME: LESSON.`
        for s in ALL {
            assert!(!s.lesson.ends_with('.'), "{}", s.name);
            assert!(s.about.ends_with('.'), "{}", s.name);
        }
    }
}
