//! What a run knows beside the packets, as plain data the annotator and the outputs read:
//! the kernel's word on one endpoint at one packet (made by `kernel::agree`), the records
//! of its trace and the rows of its socket table (made by `kernel::tracefs`, `sock_diag`
//! and `/proc/net/tcp`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::tcp::State;
use crate::tracker::Role;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The kernel traced the same change on the same segment.
    Agrees,
    /// The kernel traced nothing here, for a reason Linux documents (named in the text).
    Explained,
    /// The kernel says something else.
    Mismatch,
    /// A kernel change with no segment behind it (a timer), placed by time.
    Info,
}

/// What the kernel said about one endpoint at one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub role: Role,
    /// The inferred transition this note speaks of.
    pub inferred: Option<(State, State)>,
    pub verdict: Verdict,
    pub text: String,
}

/// One record of the kernel's trace, its time converted to the packets' clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    /// Realtime, microsecond resolution (what the trace prints).
    pub at: Duration,
    /// The socket's own address and its peer's (port 0: none yet).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub kind: EventKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `inet_sock_set_state`; `Closed` is the kernel's TCP_CLOSE.
    SetState {
        old: State,
        new: State,
    },
    SendReset,
    ReceiveReset,
    Retransmit,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSocket {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The kernel's state (`TIME_WAIT`, `FIN_WAIT_2`, `CLOSE_WAIT`, `LISTEN`, ...).
    pub state: KernelState,
    pub send_q: u32,
    pub recv_q: u32,
    pub timer: Option<Timer>,
    pub uid: u32,
    /// 0 for sockets no process owns any more (time-wait and orphaned sockets).
    pub inode: u64,
    /// The process holding it, when one does and could be found.
    pub owner: Option<Owner>,
}

impl KernelSocket {
    /// The RFC 9293 state, where the kernel's state is one.
    pub fn rfc_state(&self) -> Option<State> {
        State::parse(self.state.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    pub kind: &'static str,
    pub remaining: Duration,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {:.2} s left",
            self.kind,
            self.remaining.as_secs_f64()
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// The short name (`comm`).
    pub command: String,
    /// The whole command line, arguments joined by spaces.
    pub cmdline: String,
    /// The user the process runs as (a name where /etc/passwd has one).
    pub user: String,
}

/// A socket's state as the kernel numbers it (`TCP_*`, include/net/tcp_states.h): compared as
/// a value, named as the kernel names it (`TIME_WAIT`, `SYN_RECV`, `CLOSE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    Unknown,
}

impl KernelState {
    pub fn from_number(n: u8) -> KernelState {
        use KernelState::*;
        match n {
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait1,
            5 => FinWait2,
            6 => TimeWait,
            7 => Close,
            8 => CloseWait,
            9 => LastAck,
            10 => Listen,
            11 => Closing,
            12 => NewSynRecv,
            _ => Unknown,
        }
    }

    /// The state the kernel calls `name` (`Unknown` for none).
    pub fn from_name(name: &str) -> KernelState {
        (1..=12)
            .map(KernelState::from_number)
            .find(|s| s.name() == name)
            .unwrap_or(KernelState::Unknown)
    }

    pub fn name(self) -> &'static str {
        use KernelState::*;
        match self {
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait1 => "FIN_WAIT_1",
            FinWait2 => "FIN_WAIT_2",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            Closing => "CLOSING",
            NewSynRecv => "NEW_SYN_RECV",
            Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for KernelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}
