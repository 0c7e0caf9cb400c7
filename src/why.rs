//! `teardown why PORT`: why a `bind()` to that port fails on this machine now. The sockets
//! that hold it (from the kernel), a real trial bind with each option, and the rule behind
//! the answer in plain words, with the fixes that work.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Serialize;

use crate::kernel::table::SocketRow;
use crate::kernel::{KernelSocket, render_table};
use crate::output::style::wrap;
use crate::sockets::{self, SockOpts, errno_name};
use crate::tcp::State;

/// The address a server would bind: a port, on one address or on all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// `None`: every IPv4 address (0.0.0.0), as a server that binds only a port does.
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl Target {
    /// `8000`, `:8000`, `127.0.0.1:8000` or `[::1]:8000`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
                Ok(n) => Err(format!(
                    "port {n} is out of range: ports run from 1 to 65535"
                )),
                Err(_) => Err(format!("{p:?} is not a port number")),
            }
        };
        if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
            return Ok(Target {
                ip: None,
                port: port(s)?,
            });
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Target {
                ip: Some(addr.ip()),
                port: port(&addr.port().to_string())?,
            });
        }
        // `:8000` and `*:8000`, as ss and netstat write a port on every address.
        if let Some(p) = s.strip_prefix(':').or_else(|| s.strip_prefix("*:"))
            && !p.contains(':')
        {
            return Ok(Target {
                ip: None,
                port: port(p)?,
            });
        }
        match s.rsplit_once(':') {
            Some((host, p)) if looks_like_ipv4(host) => {
                let _ = port(p)?;
                Err(format!(
                    "{host} is not a valid IPv4 address (four numbers from 0 to 255, e.g. \
                     127.0.0.1:{p})"
                ))
            }
            Some((host, p)) if host.parse::<IpAddr>().is_err() && !host.contains(':') => {
                let _ = port(p)?;
                Err(format!(
                    "{host:?} is a host name: give an IP address (127.0.0.1:{p}, [::1]:{p}) or \
                     only the port"
                ))
            }
            Some((_, p)) => {
                let _ = port(p)?;
                Err(format!(
                    "{s:?} is not ADDRESS:PORT (an IPv6 address goes in brackets: [::1]:{p})"
                ))
            }
            None => Err(format!(
                "{s:?} is neither a port nor ADDRESS:PORT (8000, 127.0.0.1:8000, [::1]:8000)"
            )),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            self.port,
        )
    }

    /// Whether a socket bound at `local` stands in the way of a bind to this target.
    pub fn overlaps(&self, local: SocketAddr) -> bool {
        if local.port() != self.port {
            return false;
        }
        let want = self.addr().ip();
        let same_family = want.is_ipv4() == local.ip().is_ipv4();
        if same_family {
            want.is_unspecified() || local.ip().is_unspecified() || local.ip() == want
        } else {
            // A dual-stack [::] socket covers IPv4 too (unless it set IPV6_V6ONLY).
            local.ip().is_unspecified() && local.is_ipv6()
        }
    }
}

/// One throw-away bind: its options and what it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trial {
    pub opts: SockOpts,
    pub errno: Option<i32>,
}

pub const TRIAL_OPTS: [SockOpts; 4] = [
    SockOpts::NONE,
    SockOpts::REUSEADDR,
    SockOpts {
        reuseaddr: false,
        reuseport: true,
    },
    SockOpts {
        reuseaddr: true,
        reuseport: true,
    },
];

/// Binds a socket with each option set, never listens, closes it at once.
pub fn trial_binds(target: &Target) -> Vec<Trial> {
    TRIAL_OPTS
        .iter()
        .map(|&opts| Trial {
            opts,
            errno: match sockets::bound(target.addr(), opts) {
                Ok(_socket) => None,
                Err(e) => Some(e.errno().unwrap_or(0)),
            },
        })
        .collect()
}

/// Asks the kernel about `target` in the current network namespace: the sockets in its way
/// (with their processes) and a trial bind with each option. `netns` names the namespace.
pub fn ask(target: Target, netns: Option<String>) -> std::io::Result<Answer> {
    let all = crate::kernel::all_sockets()?;
    let mut holders: Vec<KernelSocket> = all
        .iter()
        .filter(|s| target.overlaps(s.local))
        .cloned()
        .collect();
    let mut peers = local_peers(&holders, &all);
    let n = holders.len();
    // One walk of /proc for both.
    holders.append(&mut peers);
    crate::kernel::fill_owners(&mut holders);
    let peers = holders.split_off(n);
    Ok(Answer {
        target,
        netns,
        trials: trial_binds(&target),
        holders,
        peers,
        unseen: Vec::new(),
    })
}

/// The other ends on this machine of the orphaned FIN_WAIT_2 holders: a CLOSE_WAIT socket
/// whose 4-tuple is the holder's reversed. Its process is the one to fix.
pub fn local_peers(holders: &[KernelSocket], all: &[KernelSocket]) -> Vec<KernelSocket> {
    holders
        .iter()
        .filter(|h| h.rfc_state() == Some(State::FinWait2) && h.inode == 0)
        .filter_map(|h| {
            all.iter().find(|s| {
                s.local == h.peer && s.peer == h.local && s.rfc_state() == Some(State::CloseWait)
            })
        })
        .cloned()
        .collect()
}

/// Everything `why` found, for one network namespace.
#[derive(Clone, Debug)]
pub struct Answer {
    pub target: Target,
    /// `None`: the namespace `why` runs in.
    pub netns: Option<String>,
    pub holders: Vec<KernelSocket>,
    /// The local CLOSE_WAIT ends of orphaned FIN_WAIT_2 holders (see `local_peers`).
    pub peers: Vec<KernelSocket>,
    pub trials: Vec<Trial>,
    /// What could not be seen (without root: other users' processes).
    pub unseen: Vec<String>,
}

impl Answer {
    pub fn plain_bind_ok(&self) -> bool {
        self.trials.first().is_some_and(|t| t.errno.is_none())
    }

    fn trial(&self, opts: SockOpts) -> Option<Option<i32>> {
        self.trials.iter().find(|t| t.opts == opts).map(|t| t.errno)
    }

    /// The rule that applies, in plain words.
    pub fn explanation(&self) -> Vec<String> {
        let addr = self.target.addr();
        let mut why = Vec::new();
        match self.trials.first().and_then(|t| t.errno) {
            None => why.push(format!("A plain bind() to {addr} succeeds now.")),
            Some(libc::EACCES) => why.push(format!(
                "A plain bind() to {addr} fails with EACCES (errno 13): ports below 1024 need \
                 root or CAP_NET_BIND_SERVICE."
            )),
            Some(n) => why.push(format!(
                "A plain bind() to {addr} fails now with {} (errno {n}).",
                errno_name(n)
            )),
        }
        let of = owner_phrase;
        let in_state = |st: State| -> Vec<&KernelSocket> {
            self.holders
                .iter()
                .filter(|s| s.rfc_state() == Some(st))
                .collect()
        };
        let left = |socks: &[&KernelSocket]| {
            socks
                .iter()
                .filter_map(|s| s.timer.as_ref().map(|t| t.remaining.as_secs_f64()))
                .fold(0.0f64, f64::max)
        };
        let reuseport_ok = self.trial(TRIAL_OPTS[2]) == Some(None);
        for l in in_state(State::Listen) {
            let covering = l.local.ip().is_unspecified() && !addr.ip().is_unspecified();
            let mut s = if covering {
                format!(
                    "{} listens on {}, which covers every local address, {} included: a \
                     wildcard listener blocks each specific one.",
                    of(l),
                    l.local,
                    addr.ip()
                )
            } else {
                format!(
                    "{} listens on {}: a live listener. Two listeners never share one address \
                     and port, SO_REUSEADDR or not.",
                    of(l),
                    l.local
                )
            };
            if reuseport_ok {
                s.push_str(
                    " It set SO_REUSEPORT: a new socket with SO_REUSEPORT from the same user \
                     joins its group (the trial bind did).",
                );
            }
            why.push(s);
        }
        let tw = in_state(State::TimeWait);
        if !tw.is_empty() {
            why.push(format!(
                "{} old connection{} on this port wait{} in TIME_WAIT: this machine closed {} \
                 first, so it keeps {} for 2×MSL, 60 s on Linux (RFC 9293 §3.6). No process \
                 owns {}; {} the port in {:.1} s.",
                tw.len(),
                plural(tw.len()),
                if tw.len() == 1 { "s" } else { "" },
                them(tw.len()),
                them(tw.len()),
                them(tw.len()),
                if tw.len() == 1 {
                    "it frees"
                } else {
                    "the last frees"
                },
                left(&tw)
            ));
        }
        let fw2: Vec<&KernelSocket> = in_state(State::FinWait2)
            .into_iter()
            .filter(|s| s.inode == 0)
            .collect();
        if !fw2.is_empty() {
            why.push(format!(
                "{} old connection{} sit{} in FIN_WAIT_2: this machine closed {}, the peer \
                 acknowledged but never closed its end (it sits in CLOSE_WAIT). No process owns \
                 {} (orphaned); Linux drops {} after net.ipv4.tcp_fin_timeout: {:.1} s left.",
                fw2.len(),
                plural(fw2.len()),
                if fw2.len() == 1 { "s" } else { "" },
                them(fw2.len()),
                them(fw2.len()),
                them(fw2.len()),
                left(&fw2)
            ));
        }
        for p in &self.peers {
            why.push(format!(
                "The other end, {}, is on this machine: {} holds it in CLOSE_WAIT. The FIN \
                 reached it, but that program has not closed its socket; fix it there (close() \
                 once read() returns 0).",
                p.local,
                of(p)
            ));
        }
        let told = |s: &KernelSocket| match s.rfc_state() {
            Some(State::Listen | State::TimeWait) => true,
            Some(State::FinWait2) => s.inode == 0,
            _ => false,
        };
        for s in self.holders.iter().filter(|s| !told(s)) {
            let what = match s.rfc_state() {
                Some(State::CloseWait) => {
                    ": the peer closed, but the program has not called close(), and holds the \
                     port until it does"
                }
                Some(State::Established) => ": a live connection",
                _ => "",
            };
            why.push(format!(
                "{} still has {} ↔ {} in {}{what}.",
                of(s),
                s.local,
                s.peer,
                s.state
            ));
        }
        if !self.plain_bind_ok() {
            match self.trial(SockOpts::REUSEADDR) {
                Some(None) => why.push(
                    "With SO_REUSEADDR set before bind() the bind succeeds (the trial did): \
                     the old sockets set it too, as Linux requires."
                        .into(),
                ),
                Some(Some(_)) if !tw.is_empty() || !fw2.is_empty() => why.push(
                    "Even with SO_REUSEADDR the bind fails (the trial did): on Linux the old \
                     socket must have set it too, which these did not. (On macOS and the BSDs \
                     the new socket's option alone would be enough.)"
                        .into(),
                ),
                _ => {}
            }
        }
        why
    }

    /// The fixes that work here, most sensible first, and the one that harms.
    pub fn fixes(&self) -> Vec<String> {
        if self.plain_bind_ok() {
            return Vec::new();
        }
        let mut fixes = Vec::new();
        for p in &self.peers {
            fixes.push(match &p.owner {
                Some(o) => format!(
                    "Fix pid {} ({}): it holds the other end, {}, in CLOSE_WAIT; it must close() \
                     its socket once read() returns 0.",
                    o.pid, o.command, p.local
                ),
                None => format!(
                    "Fix the program that holds the other end, {}, in CLOSE_WAIT (run as root to \
                     name it): it must close() its socket once read() returns 0.",
                    p.local
                ),
            });
        }
        let has = |st: State| self.holders.iter().any(|s| s.rfc_state() == Some(st));
        let old_connections = has(State::TimeWait) || has(State::FinWait2);
        if old_connections {
            fixes.push(
                "Set SO_REUSEADDR on the server's listening socket before bind(), in every \
                 version of the server: Linux checks the old socket's option too."
                    .to_string(),
            );
            fixes.push(
                "Let the clients close first where the protocol allows: TIME_WAIT then stays \
                 with them, not with the server's port."
                    .to_string(),
            );
        }
        for l in self
            .holders
            .iter()
            .filter(|s| s.rfc_state() == Some(State::Listen))
        {
            fixes.push(match &l.owner {
                Some(o) => format!(
                    "Stop the process that listens (pid {}, {}) or choose another port.",
                    o.pid, o.command
                ),
                None => "Stop the process that listens, or choose another port.".to_string(),
            });
        }
        if has(State::CloseWait) {
            fixes.push(
                "Make the program close() its sockets when read() returns 0: a CLOSE_WAIT \
                 that lingers is a socket the program forgot."
                    .to_string(),
            );
        }
        if old_connections {
            let wait = self
                .holders
                .iter()
                .filter_map(|s| s.timer.as_ref().map(|t| t.remaining.as_secs_f64()))
                .fold(0.0f64, f64::max);
            fixes.push(format!("Or wait: the port frees up in {wait:.1} s."));
            fixes.push(
                "Never \"fix\" it with SO_LINGER {on, 0}: close() then sends an RST instead of \
                 a FIN, and data still in flight is lost (see it: teardown run linger-abort)."
                    .to_string(),
            );
        }
        fixes
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let place = match &self.netns {
            Some(n) => format!("network namespace {n}"),
            None => "this network namespace".to_string(),
        };
        let _ = writeln!(s, "teardown why {} ({place})\n", self.target.addr());
        if self.holders.is_empty() {
            let _ = writeln!(s, "No socket holds port {} now.\n", self.target.port);
        } else {
            let _ = writeln!(
                s,
                "Sockets that hold port {} (the kernel's table, as ss reads it):",
                self.target.port
            );
            for line in render_table(&self.holders).lines() {
                let _ = writeln!(s, "  {line}");
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "Trial binds (throw-away sockets, never listening, closed at once):"
        );
        for t in &self.trials {
            let outcome = match t.errno {
                None => "bound".to_string(),
                Some(n) => format!("{} (errno {n})", errno_name(n)),
            };
            let _ = writeln!(
                s,
                "  bind {} with {:<25} → {outcome}",
                self.target.addr(),
                t.opts.to_string()
            );
        }
        s.push('\n');
        let _ = writeln!(s, "Why:");
        for paragraph in self.explanation() {
            for line in wrap(&paragraph, 88) {
                let _ = writeln!(s, "  {line}");
            }
        }
        let fixes = self.fixes();
        if !fixes.is_empty() {
            let _ = writeln!(s, "\nWhat to do:");
            for (i, fix) in fixes.iter().enumerate() {
                for (j, line) in wrap(fix, 84).iter().enumerate() {
                    if j == 0 {
                        let _ = writeln!(s, "  {}. {line}", i + 1);
                    } else {
                        let _ = writeln!(s, "     {line}");
                    }
                }
            }
        }
        for u in &self.unseen {
            let _ = writeln!(s, "\nnote: {u}");
        }
        s
    }

    /// The answer as `why --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let json = AnswerJson {
            target: self.target.addr(),
            netns: self.netns.as_deref(),
            bind_ok: self.plain_bind_ok(),
            holders: self
                .holders
                .iter()
                .map(|h| HolderJson {
                    row: h.into(),
                    owner: OwnerJson::of(h),
                })
                .collect(),
            peers: self
                .peers
                .iter()
                .map(|p| PeerJson {
                    state: p.state.name(),
                    local: p.local,
                    peer: p.peer,
                    owner: OwnerJson::of(p),
                })
                .collect(),
            trials: self
                .trials
                .iter()
                .map(|t| TrialJson {
                    options: t.opts.to_string(),
                    bound: t.errno.is_none(),
                    errno: t.errno,
                    errno_name: t.errno.map(errno_name),
                })
                .collect(),
            explanation: self.explanation(),
            fixes: self.fixes(),
            unseen: &self.unseen,
        };
        serde_json::to_value(json).unwrap_or_default()
    }
}

/// `why PORT --json`: a script's interface, keep its keys and their types.
#[derive(Serialize)]
struct AnswerJson<'a> {
    /// `0.0.0.0:8000` for a bare port.
    target: SocketAddr,
    netns: Option<&'a str>,
    bind_ok: bool,
    holders: Vec<HolderJson<'a>>,
    peers: Vec<PeerJson<'a>>,
    trials: Vec<TrialJson>,
    explanation: Vec<String>,
    fixes: Vec<String>,
    unseen: &'a [String],
}

/// A socket in the way: its table row and its process (`null`s when none was found).
#[derive(Serialize)]
struct HolderJson<'a> {
    #[serde(flatten)]
    row: SocketRow<'a>,
    #[serde(flatten)]
    owner: OwnerJson<'a>,
}

/// The local CLOSE_WAIT end of an orphan, and the process to fix.
#[derive(Serialize)]
struct PeerJson<'a> {
    state: &'a str,
    local: SocketAddr,
    peer: SocketAddr,
    #[serde(flatten)]
    owner: OwnerJson<'a>,
}

#[derive(Serialize)]
struct OwnerJson<'a> {
    pid: Option<u32>,
    /// The whole command line (`sockets --json` gives the short name).
    command: Option<&'a str>,
    user: Option<&'a str>,
}

impl<'a> OwnerJson<'a> {
    fn of(s: &'a KernelSocket) -> Self {
        let o = s.owner.as_ref();
        OwnerJson {
            pid: o.map(|o| o.pid),
            command: o.map(|o| o.cmdline.as_str()),
            user: o.map(|o| o.user.as_str()),
        }
    }
}

#[derive(Serialize)]
struct TrialJson {
    /// `no option`, `SO_REUSEADDR`, `SO_REUSEPORT`, `SO_REUSEADDR+SO_REUSEPORT`.
    options: String,
    bound: bool,
    errno: Option<i32>,
    errno_name: Option<&'static str>,
}

/// `pid 9 (app --serve) of user u`, or who else holds the socket.
fn owner_phrase(s: &KernelSocket) -> String {
    match &s.owner {
        Some(o) => format!(
            "pid {} ({}) of user {}",
            o.pid,
            short_command(if o.cmdline.is_empty() {
                &o.command
            } else {
                &o.cmdline
            }),
            o.user
        ),
        None if s.inode == 0 => "no process".to_string(),
        None => "a process this user may not see".to_string(),
    }
}

/// Only digits and dots, with a dot: meant as an IPv4 address (a host name has a letter).
pub(crate) fn looks_like_ipv4(host: &str) -> bool {
    host.contains('.') && host.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// A command line fit for a sentence: one line, at most 60 characters, the program by its
/// file name (the arguments, a port among them, say more than its folder).
pub(crate) fn short_command(cmdline: &str) -> String {
    let mut words = cmdline.split_whitespace();
    let program = words
        .next()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .unwrap_or_default();
    let flat: String = std::iter::once(program)
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ");
    if flat.chars().count() <= 60 {
        flat
    } else {
        format!("{}…", flat.chars().take(59).collect::<String>())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn them(n: usize) -> &'static str {
    if n == 1 { "it" } else { "them" }
}

pub mod connect;

#[cfg(test)]
mod tests;
