//! Which process owned each end of a connection: the kernel's table read while the sockets
//! lived (the socket's inode found among a process's file descriptors, as `ss -p` does), and
//! for an end that closed between two reads, the task the kernel's trace names on the
//! close() itself (its state change runs in the closing process's own context).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::kernel::{self, KernelSocket, Owner};
use crate::netns::Hosts;

/// An end of a connection: (its own address, its peer's).
pub type End = (SocketAddr, SocketAddr);

#[derive(Default)]
pub struct Owners {
    /// Inode → owner, looked up once per socket.
    by_inode: HashMap<u64, Option<Owner>>,
    /// Each end's owner, the last one seen while it lived.
    pub by_end: HashMap<End, Owner>,
    /// Every owner seen, by pid: the trace names pids only.
    pub by_pid: HashMap<u32, Owner>,
    /// The processes teardown started: pid → command line.
    pub started: HashMap<u32, String>,
    /// The lab's PID namespace (its /proc link), whose members are looked at now and then:
    /// a worker that closes a socket between two reads of the table is still named.
    pub pidns: Option<String>,
    last_scan: Option<std::time::Instant>,
}

/// How often the lab's processes are listed.
const MEMBERS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Owners {
    /// Reads the table of `port` once; owners of sockets not seen before are looked up.
    pub fn watch(&mut self, hosts: &Hosts, port: u16) -> std::io::Result<Vec<KernelSocket>> {
        if self.last_scan.is_none_or(|t| t.elapsed() >= MEMBERS_EVERY) {
            self.last_scan = Some(std::time::Instant::now());
            self.scan_members();
        }
        let mut sockets: Vec<KernelSocket> = kernel::sock_diag::dump_in(hosts)?
            .into_iter()
            .filter(|s| s.local.port() == port || s.peer.port() == port)
            .collect();
        let mut new: Vec<KernelSocket> = sockets
            .iter()
            .filter(|s| s.inode != 0 && !self.by_inode.contains_key(&s.inode))
            .cloned()
            .collect();
        if !new.is_empty() {
            kernel::fill_owners(&mut new);
            for s in new {
                if let Some(o) = &s.owner {
                    self.by_pid.insert(o.pid, o.clone());
                }
                self.by_inode.insert(s.inode, s.owner);
            }
        }
        for s in &mut sockets {
            if let Some(Some(o)) = self.by_inode.get(&s.inode) {
                s.owner = Some(o.clone());
                if s.peer.port() != 0 {
                    self.by_end.insert((s.local, s.peer), o.clone());
                }
            }
        }
        Ok(sockets)
    }

    /// Every process of the lab's PID namespace, by pid, with its command line.
    pub fn scan_members(&mut self) {
        let Some(ns) = &self.pidns else { return };
        for (pid, dir) in crate::kernel::processes() {
            // What teardown started is known by its command line; one caught between fork
            // and exec would be cached under teardown's. The others are read again at each
            // scan: a worker just forked still has its parent's title (nginx: master process)
            // until it sets its own.
            if self.started.contains_key(&pid) {
                continue;
            }
            let Ok(link) = std::fs::read_link(dir.join("ns/pid")) else {
                continue;
            };
            if link.to_string_lossy() != ns.as_str() {
                continue;
            }
            if let Some(o) = read_owner(pid).filter(|o| !o.cmdline.is_empty()) {
                self.by_pid.insert(pid, o);
            }
        }
    }

    /// The process behind `pid`: seen owning a socket, started by teardown, or alive now.
    pub fn of_pid(&self, pid: u32) -> Option<Owner> {
        if let Some(o) = self
            .by_pid
            .get(&pid)
            .filter(|_| !self.started.contains_key(&pid))
        {
            return Some(o.clone());
        }
        if let Some(cmdline) = self.started.get(&pid) {
            return Some(Owner {
                pid,
                command: cmdline.split_whitespace().next().unwrap_or("").into(),
                cmdline: cmdline.clone(),
                user: String::new(),
            });
        }
        read_owner(pid)
    }
}

/// `pid`'s command line and name from /proc, while it lives.
fn read_owner(pid: u32) -> Option<Owner> {
    {
        let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .filter(|a| !a.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let command = std::fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        Some(Owner {
            pid,
            command,
            cmdline,
            user: String::new(),
        })
    }
}

/// What a socket's close() or connect() looked like in the trace: the task that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedCall {
    pub end: End,
    pub pid: u32,
    /// `close` (to FIN_WAIT_1, LAST_ACK or an abort to CLOSE) or `connect` (to SYN_SENT).
    pub call: &'static str,
}

/// The calls of a tracefs `trace` text made in a process's context: the pid of the task
/// field (`curl-4242 [001] ...`).
pub fn traced_calls(text: &str) -> Vec<TracedCall> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(at) = line.find(": inet_sock_set_state: ") else {
            continue;
        };
        let head = &line[..at];
        let fields = &line[at + ": inet_sock_set_state: ".len()..];
        let Some(task) = head.split(" [").next() else {
            continue;
        };
        // `comm-TID (TGID)` with record-tgid, `comm-TID` without: the process is the TGID.
        let (task, tgid) = match task.trim().rsplit_once(" (") {
            Some((t, g)) => (t, g.trim_end_matches(')').trim().parse::<u32>().ok()),
            None => (task.trim(), None),
        };
        let Some(pid) = tgid.or_else(|| {
            task.trim()
                .rsplit_once('-')
                .and_then(|(_, p)| p.parse::<u32>().ok())
        }) else {
            continue;
        };
        // Softirq work runs on whatever task the CPU had: pid 0, or a process that only
        // happened to be there. Only the calls a process makes itself name it.
        let field = |name: &str| {
            fields
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        let (Some(old), Some(new)) = (field("oldstate"), field("newstate")) else {
            continue;
        };
        let call = match (old, new) {
            ("TCP_ESTABLISHED", "TCP_FIN_WAIT1") | ("TCP_CLOSE_WAIT", "TCP_LAST_ACK") => "close",
            ("TCP_CLOSE", "TCP_SYN_SENT") => "connect",
            _ => continue,
        };
        let v6 = field("family") == Some("AF_INET6");
        let addr = |ip: &str, port: &str| -> Option<SocketAddr> {
            Some(SocketAddr::new(
                field(ip)?.parse().ok()?,
                field(port)?.parse().ok()?,
            ))
        };
        let end = if v6 {
            (addr("saddrv6", "sport"), addr("daddrv6", "dport"))
        } else {
            (addr("saddr", "sport"), addr("daddr", "dport"))
        };
        if let (Some(local), Some(peer)) = end
            && pid != 0
        {
            out.push(TracedCall {
                end: (local, peer),
                pid,
                call,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_names_the_task_that_closed() {
        let text = "# tracer: nop\n\
            \x20    python3-http-4250 (   4242)  [001] ..... 12.000001: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=8000 dport=40000 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_FIN_WAIT1\n\
            \x20         <idle>-0       [000] ..s1. 12.000002: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=40000 dport=8000 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE_WAIT\n\
            \x20          curl-77      [000] ..... 11.9: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=0 dport=8000 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_CLOSE newstate=TCP_SYN_SENT\n";
        let calls = traced_calls(text);
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0].pid, 4242);
        assert_eq!(calls[0].call, "close");
        assert_eq!(calls[0].end.0, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(calls[1].pid, 77);
        assert_eq!(calls[1].call, "connect");
    }
}
