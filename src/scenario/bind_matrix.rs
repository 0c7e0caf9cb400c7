//! The restart table: every row of "which old socket lets which new bind() through", tried for
//! real on its own port, with the errno each bind got (Linux; ../shared/SCENARIOS.md).

use std::net::{SocketAddr, TcpStream};

use super::bench::Lab;
use super::{Place, Scenario, old_connection};
use crate::error::Error;
use crate::sockets::{self, SockOpts, Socket};
use crate::tcp::State;

pub static SCENARIO: Scenario = Scenario {
    name: "bind-matrix",
    lesson: "which old socket lets which restart bind(): TIME_WAIT, orphaned FIN_WAIT_2 and \
             listeners, with and without SO_REUSEADDR / SO_REUSEPORT, each tried for real",
    about: "Each row sets up an old socket on a port of its own (an active close leaving \
            TIME_WAIT, a client that never closes leaving an orphaned FIN_WAIT_2, or a live \
            listener) with the options of the row, then binds a new socket with the row's options \
            and records the errno. The first row's connection is the one captured.",
    expect: [State::Closed, State::TimeWait],
    sysctls: &[],
    place: Place::OneHost,
    ports: 10,
    script,
};

const REUSEPORT: SockOpts = SockOpts {
    reuseaddr: false,
    reuseport: true,
};

#[derive(Clone, Copy)]
enum Old {
    TimeWait,
    OrphanFinWait2,
    Listen,
}

/// (old socket, its options, the new socket's address offset (0: same IP), its options,
/// the errno Linux gives, what the row teaches).
const ROWS: [(Old, SockOpts, bool, SockOpts, Option<i32>); 10] = [
    (
        Old::TimeWait,
        SockOpts::NONE,
        false,
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    ),
    (
        Old::TimeWait,
        SockOpts::NONE,
        false,
        SockOpts::REUSEADDR,
        Some(libc::EADDRINUSE),
    ),
    (
        Old::TimeWait,
        SockOpts::REUSEADDR,
        false,
        SockOpts::NONE,
        Some(libc::EADDRINUSE),
    ),
    (
        Old::TimeWait,
        SockOpts::REUSEADDR,
        false,
        SockOpts::REUSEADDR,
        None,
    ),
    (Old::TimeWait, REUSEPORT, false, REUSEPORT, None),
    (
        Old::OrphanFinWait2,
        SockOpts::NONE,
        false,
        SockOpts::REUSEADDR,
        Some(libc::EADDRINUSE),
    ),
    (
        Old::OrphanFinWait2,
        SockOpts::REUSEADDR,
        false,
        SockOpts::REUSEADDR,
        None,
    ),
    (
        Old::Listen,
        SockOpts::REUSEADDR,
        false,
        SockOpts::REUSEADDR,
        Some(libc::EADDRINUSE),
    ),
    (
        Old::Listen,
        SockOpts::REUSEADDR,
        true,
        SockOpts::REUSEADDR,
        None,
    ),
    (Old::Listen, REUSEPORT, false, REUSEPORT, None),
];

/// What keeps an old socket alive until the table is done.
#[derive(Default)]
struct Held {
    listeners: Vec<Socket>,
    clients: Vec<TcpStream>,
}

fn old_socket(
    lab: &mut Lab,
    old: Old,
    addr: SocketAddr,
    opts: SockOpts,
    held: &mut Held,
) -> Result<bool, Error> {
    if let Old::Listen = old {
        held.listeners
            .push(sockets::listen_in(&lab.hosts, addr, opts)?);
        return Ok(true);
    }
    let (reached, client) = old_connection(lab, addr, opts, matches!(old, Old::TimeWait))?;
    held.clients.extend(client);
    Ok(reached)
}

fn describe_old(old: Old, opts: SockOpts, addr: SocketAddr) -> String {
    let what = match old {
        Old::TimeWait => "TIME_WAIT",
        Old::OrphanFinWait2 => "orphaned FIN_WAIT_2",
        Old::Listen => "LISTEN",
    };
    format!("{what} on {addr}, {opts}")
}

fn script(lab: &mut Lab) -> Result<(), Error> {
    let mut held = Held::default();
    let base = lab.server;
    let mut table: Vec<Vec<String>> = vec![
        ["old socket", "new socket", "bind()", "as expected?"]
            .map(String::from)
            .to_vec(),
    ];
    for (i, (old, old_opts, other_ip, new_opts, expected)) in ROWS.into_iter().enumerate() {
        // Each row its own port: the states of one must not spoil the next.
        let addr = SocketAddr::new(base.ip(), base.port() + i as u16);
        if !old_socket(lab, old, addr, old_opts, &mut held)? {
            lab.record.notes.push(format!(
                "row {}: the old socket never reached its state",
                i + 1
            ));
        }
        if i == 0 {
            // The first row is the captured connection: its close is the article's.
            lab.wait_for(State::Closed, State::TimeWait)?;
            lab.finish_capture()?;
        }
        let new_addr = if other_ip {
            SocketAddr::new([127, 0, 0, 2].into(), addr.port())
        } else {
            addr
        };
        let label = format!("row {}", i + 1);
        let kept = lab.try_restart(&label, new_addr, old_opts, new_opts, expected)?;
        if let Some(socket) = kept {
            held.listeners.push(socket);
        }
        let got = lab.record.restarts.last().map(|r| r.errno).unwrap_or(None);
        table.push(vec![
            describe_old(old, old_opts, addr),
            format!("{new_opts} on {new_addr}"),
            crate::record::Restart::outcome(got),
            if got == expected {
                lab.style.green("✓")
            } else {
                lab.style.red("✗ (Linux should give another)")
            },
        ]);
    }
    lab.print("");
    lab.print(
        "     The restart table, each row tried for real (each bind: a new socket, closed or \
               kept listening):",
    );
    // Columns as wide as their widest cell: no row out of line.
    lab.print(crate::output::style::table("     ", &table).trim_end());
    lab.print(
        "     Linux wants SO_REUSEADDR on the old socket and the new one; two listeners never \
               share an address and port unless both set SO_REUSEPORT (same user).",
    );
    drop(held);
    Ok(())
}
