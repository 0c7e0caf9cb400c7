//! The errors of the edges, and their exit codes. `main` prints them once.

use std::io;
use std::net::SocketAddr;

use crate::capture::live::CaptureError;
use crate::kernel::{KernelSocket, KernelState};
use crate::netns::NetnsError;
use crate::sockets::SockError;

/// Exit codes, as `--help` documents them.
pub mod exit {
    /// The kernel did what the scenario expects.
    pub const REPRODUCED: i32 = 0;
    /// The kernel did something else.
    pub const DIFFERENT: i32 = 1;
    /// Usage or environment error.
    pub const ERROR: i32 = 2;
    /// Interrupted by Ctrl-C (128 + SIGINT), as shells report it; SIGTERM gives 143 and
    /// SIGHUP 129 (`signals::exit_code`).
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Netns(NetnsError),
    /// No private network namespace may be had; `host_could_work`: this process could
    /// capture on the host's loopback (it has CAP_NET_RAW), so --host is a way out.
    #[error("{}", no_namespace_text(.why, *.host_could_work))]
    NoNamespace { why: String, host_could_work: bool },
    #[error("{0}")]
    Usage(String),
    /// A port of a `--host` run already taken on the host: the kernel's sockets on it.
    #[error("{}", port_busy_text(.addr, .holders))]
    PortBusy {
        addr: SocketAddr,
        holders: Vec<KernelSocket>,
    },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("the experiment failed: {0}")]
    Socket(#[from] SockError),
    #[error("the capture stopped: {0}")]
    CaptureLost(String),
    #[error("kernel confirmation is not available ({0}); run as root, or drop --require-kernel")]
    KernelUnavailable(String),
    #[error("interrupted")]
    Interrupted,
}

impl From<NetnsError> for Error {
    fn from(e: NetnsError) -> Error {
        match e {
            NetnsError::NoPermission(why) => Error::NoNamespace {
                why,
                host_could_work: has_cap_net_raw(),
            },
            e => Error::Netns(e),
        }
    }
}

/// Whether this process has CAP_NET_RAW on the host (the capture of a --host run needs it).
/// Inside a user namespace of our own (an attempt that failed half-way) it cannot be told:
/// no.
fn has_cap_net_raw() -> bool {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let initial = read("/proc/self/uid_map")
        .split_whitespace()
        .collect::<Vec<_>>()
        == ["0", "0", "4294967295"];
    initial && cap_net_raw_in(&read("/proc/self/status"))
}

/// CAP_NET_RAW's bit in a capability set.
const CAP_NET_RAW: u32 = 13;

/// CAP_NET_RAW in the CapEff line of /proc/PID/status.
fn cap_net_raw_in(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_RAW) != 0)
}

fn no_namespace_text(why: &str, host_could_work: bool) -> String {
    let fix = if host_could_work {
        "run with sudo, or add --host to run on the host's loopback".to_string()
    } else {
        // --host would fail too: its capture needs CAP_NET_RAW.
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "teardown".into());
        format!(
            "run with sudo, or once `sudo setcap cap_sys_admin,cap_net_admin,cap_net_raw+ep {exe}`"
        )
    };
    format!(
        "a private network namespace needs root (CAP_SYS_ADMIN) or unprivileged user \
         namespaces: {fix} ({why})"
    )
}

/// One short line (it also fills a cell of `run all`'s table) with advice that fits: a
/// program to stop, or a kernel timer to wait for.
fn port_busy_text(addr: &SocketAddr, holders: &[KernelSocket]) -> String {
    // inode 0: a TIME_WAIT or orphaned socket, kept by the kernel, not by a program.
    let Some(first) = holders.iter().find(|h| h.inode != 0) else {
        return kernel_keeps_text(addr, holders);
    };
    let who = match &first.owner {
        Some(o) => format!(" of pid {} ({})", o.pid, o.command),
        None => " of another user's process".to_string(),
    };
    let mut text = if first.state == KernelState::Listen {
        format!(
            "{addr} is already in use on this host by a LISTEN socket on {}{who}",
            first.local
        )
    } else {
        format!(
            "{addr} is already in use on this host by a {} socket{who}",
            first.state
        )
    };
    if holders.len() > 1 {
        text.push_str(&format!(" and {} more", holders.len() - 1));
    }
    text.push_str(": stop that program, pick another --port, or drop --host");
    text
}

/// Sockets no program owns: how many in which state, and how long the kernel keeps them.
fn kernel_keeps_text(addr: &SocketAddr, holders: &[KernelSocket]) -> String {
    let mut states: Vec<(&str, usize)> = Vec::new();
    for h in holders {
        match states.iter_mut().find(|(s, _)| *s == h.state.name()) {
            Some((_, n)) => *n += 1,
            None => states.push((h.state.name(), 1)),
        }
    }
    let what = match states.as_slice() {
        [] => "sockets".to_string(),
        [(state, 1)] => format!("a {state} socket"),
        _ => {
            let counts: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            format!("{} sockets", counts.join(" and "))
        }
    };
    let longest = holders
        .iter()
        .filter_map(|h| h.timer.as_ref())
        .map(|t| t.remaining)
        .max();
    let until = match longest {
        Some(left) => format!("for {} s more", left.as_secs_f64().ceil() as u64),
        None => "until its timer ends".to_string(),
    };
    format!(
        "{addr} is held by {what} that no program owns, {until}: wait, pick another --port, \
         or drop --host"
    )
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Interrupted => crate::signals::exit_code(),
            _ => exit::ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::parse_proc_net_tcp;

    const HEADER: &str = "header\n";
    // 127.0.0.1:8000 ↔ 127.0.0.2:41186 in TIME_WAIT (06), timer 3 (time-wait), 0x175D ticks.
    const TIME_WAIT: &str = "   0: 0100007F:1F40 0200007F:A0E2 06 00000000:00000000 03:0000175D \
                             00000000     0        0 0 3 0000000000000000";
    const LISTEN: &str = "   1: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 \
                          00000000     0        0 4242 1 0000000000000000";

    fn busy(rows: &[&str]) -> String {
        let table = format!("{HEADER}{}", rows.join("\n"));
        Error::PortBusy {
            addr: "127.0.0.1:8000".parse().unwrap(),
            holders: parse_proc_net_tcp(&table),
        }
        .to_string()
    }

    #[test]
    fn a_time_wait_is_waited_for_not_stopped() {
        let text = busy(&[TIME_WAIT]);
        assert_eq!(
            text,
            "127.0.0.1:8000 is held by a TIME_WAIT socket that no program owns, for 60 s more: \
             wait, pick another --port, or drop --host"
        );
        assert!(!text.contains("stop that program"), "{text}");
    }

    #[test]
    fn a_listener_is_a_program_to_stop() {
        let text = busy(&[LISTEN, TIME_WAIT]);
        assert!(
            text.starts_with(
                "127.0.0.1:8000 is already in use on this host by a LISTEN socket on \
                 127.0.0.1:8000"
            ),
            "{text}"
        );
        assert!(text.contains(" and 1 more: stop that program"), "{text}");
    }

    #[test]
    fn many_holders_stay_one_short_line() {
        let rows: Vec<&str> = std::iter::repeat_n(TIME_WAIT, 12).collect();
        let text = busy(&rows);
        assert!(
            text.starts_with("127.0.0.1:8000 is held by 12 TIME_WAIT sockets that no program"),
            "{text}"
        );
        assert!(
            text.chars().count() < 130,
            "{} columns: {text}",
            text.chars().count()
        );
    }

    #[test]
    fn host_is_offered_only_when_it_could_capture() {
        let no = Error::NoNamespace {
            why: "unshare: Operation not permitted".into(),
            host_could_work: false,
        }
        .to_string();
        assert!(!no.contains("--host"), "{no}");
        assert!(
            no.contains("run with sudo, or once `sudo setcap cap_sys_admin"),
            "{no}"
        );
        let yes = Error::NoNamespace {
            why: "x".into(),
            host_could_work: true,
        }
        .to_string();
        assert!(yes.contains("or add --host"), "{yes}");
    }

    #[test]
    fn cap_net_raw_is_bit_13_of_cap_eff() {
        assert!(cap_net_raw_in("Name:\tx\nCapEff:\t000001ffffffffff\n"));
        assert!(cap_net_raw_in("CapEff:\t0000000000002000\n"));
        assert!(!cap_net_raw_in("CapEff:\t0000000000000000\n"));
        assert!(!cap_net_raw_in("CapPrm:\t0000000000002000\n"));
    }
}
