//! The record of a run: what the report, the ladder, the JSON and the verdict read. Plain
//! data the bench fills as the scenario's script goes; nothing in it needs a socket.

use std::net::{IpAddr, SocketAddr};

use crate::annotate::Packet;
use crate::evidence::{KernelEvent, KernelSocket};
use crate::frame::Stats;
use crate::kernel::agree::Agreement;
use crate::sockets::{SockOpts, errno_name};
use crate::tcp::State;
use crate::tracker::{Connection, Role};

/// One `bind()` of a restarted server.
#[derive(Clone, Debug)]
pub struct Restart {
    pub label: String,
    pub addr: SocketAddr,
    /// Options of the old server socket, and of the new one.
    pub old_opts: SockOpts,
    pub new_opts: SockOpts,
    /// `None`: bound (and listening); `Some(errno)`: failed.
    pub errno: Option<i32>,
    pub expected: Option<i32>,
    /// The kernel's sockets on that port when the bind failed.
    pub holders: Vec<KernelSocket>,
    /// The other ends of those connections, where the same host has them (one host, or a
    /// simultaneous close that left both ends in TIME_WAIT).
    pub far_ends: Vec<KernelSocket>,
}

impl Restart {
    pub fn outcome(errno: Option<i32>) -> String {
        match errno {
            None => "bound".to_string(),
            Some(n) => format!("{} (errno {n})", errno_name(n)),
        }
    }
}

/// The sockets of `table` at the other end of a connection `holders` has one end of.
pub fn far_ends(holders: &[KernelSocket], table: &[KernelSocket]) -> Vec<KernelSocket> {
    table
        .iter()
        .filter(|s| {
            holders
                .iter()
                .any(|h| s.local == h.peer && s.peer == h.local)
        })
        .cloned()
        .collect()
}

/// A wait that ended without the states it waited for.
#[derive(Clone, Debug)]
pub struct Missed {
    pub expected: [State; 2],
    pub observed: Option<[State; 2]>,
}

#[derive(Debug)]
pub struct Record {
    pub server: SocketAddr,
    pub client_ip: IpAddr,
    pub packets: Vec<Packet>,
    pub stats: Option<Stats>,
    pub restarts: Vec<Restart>,
    pub missed: Vec<Missed>,
    pub notes: Vec<String>,
    /// The kernel's word on each packet (given as it left the annotator), and the counts and
    /// section notes made once the capture is over.
    pub agreement: Option<Agreement>,
    /// The kernel's own trace of the run (state changes, resets, retransmissions), its
    /// times on the packets' clock: where each endpoint changed state, for the pictures.
    pub trace: Vec<KernelEvent>,
    /// Sysctls this run changed in its namespace: (name, old value, new value).
    pub sysctls: Vec<(String, String, String)>,
    /// The kernel's table at the moments that matter (after each close), for the file.
    pub snapshots: Vec<(String, Vec<KernelSocket>)>,
    /// The scenario's own checks that failed: "LABEL: expected X, observed Y".
    pub differences: Vec<String>,
    /// What the client's last read() got, where a scenario is about it (ECONNRESET...).
    pub client_error: Option<String>,
    /// What the packet filter did, in words, once it is gone: for the section comment.
    pub filter_rule: Option<String>,
    /// The connection to the scenario's server (the newest), as the capture left it.
    pub connection: Option<Connection>,
}

impl Record {
    pub fn new(server: SocketAddr, client_ip: IpAddr) -> Record {
        Record {
            server,
            client_ip,
            packets: Vec::new(),
            stats: None,
            restarts: Vec::new(),
            missed: Vec::new(),
            notes: Vec::new(),
            agreement: None,
            trace: Vec::new(),
            sysctls: Vec::new(),
            snapshots: Vec::new(),
            differences: Vec::new(),
            client_error: None,
            filter_rule: None,
            connection: None,
        }
    }

    pub fn connection(&self) -> Option<&Connection> {
        self.connection.as_ref()
    }

    /// Both ends' final states: [client, server].
    pub fn states(&self) -> Option<[State; 2]> {
        self.connection
            .as_ref()
            .map(|c| [c.state(Role::Client), c.state(Role::Server)])
    }
}
