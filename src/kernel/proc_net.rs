//! `/proc/net/tcp` and `/proc/net/tcp6`: every TCP socket of the current network namespace,
//! TIME_WAIT and orphaned FIN_WAIT_2 ones included, with queues and timers (what `netstat -an`
//! and `ss -tan -o` print).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// `/proc/net/tcp` reports timers in clock ticks of USER_HZ, which is 100 on Linux.
const USER_HZ: u64 = 100;

pub use crate::evidence::{KernelSocket, KernelState, Owner, Timer};

/// The `tr` column (net/ipv4/tcp_ipv4.c, get_tcp4_sock and get_timewait4_sock).
pub(crate) fn timer_kind(n: u8) -> Option<&'static str> {
    match n {
        1 => Some("retransmit"),
        2 => Some("keepalive"),
        3 => Some("timewait"),
        4 => Some("probe"),
        _ => None,
    }
}

/// Parses the text of `/proc/net/tcp` or `/proc/net/tcp6`; lines that do not parse are skipped.
pub fn parse_proc_net_tcp(text: &str) -> Vec<KernelSocket> {
    text.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<KernelSocket> {
    let mut cols = line.split_whitespace();
    let _slot = cols.next()?;
    let local = parse_addr(cols.next()?)?;
    let peer = parse_addr(cols.next()?)?;
    let state = u8::from_str_radix(cols.next()?, 16).ok()?;
    let (tx, rx) = cols.next()?.split_once(':')?;
    let (tr, when) = cols.next()?.split_once(':')?;
    let _retransmits = cols.next()?;
    let uid = cols.next()?.parse().ok()?;
    let _timeout = cols.next()?;
    let inode = cols.next()?.parse().ok()?;
    let ticks = u64::from_str_radix(when, 16).ok()?;
    let timer = timer_kind(u8::from_str_radix(tr, 16).ok()?).map(|kind| Timer {
        kind,
        remaining: Duration::from_millis(ticks * 1000 / USER_HZ),
    });
    Some(KernelSocket {
        local,
        peer,
        state: KernelState::from_number(state),
        send_q: u32::from_str_radix(tx, 16).ok()?,
        recv_q: u32::from_str_radix(rx, 16).ok()?,
        timer,
        uid,
        inode,
        owner: None,
    })
}

/// `0100007F:1F40` → 127.0.0.1:8000. The address is the in-memory (network order) bytes
/// printed as host-order 32-bit words; the port is host order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_le_bytes())
    };
    let ip: IpAddr = match addr.len() {
        8 => Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Ipv6Addr::from(bytes).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every TCP socket of this network namespace with `port` at either end, with its owner:
/// from sock_diag (what `ss` reads), or `/proc/net/tcp` where netlink is refused.
pub fn sockets_on_port(port: u16) -> std::io::Result<Vec<KernelSocket>> {
    sockets_on_port_in(&crate::netns::Hosts::One, port)
}

/// The same on both hosts of a run.
pub fn sockets_on_port_in(
    hosts: &crate::netns::Hosts,
    port: u16,
) -> std::io::Result<Vec<KernelSocket>> {
    let all = match hosts {
        crate::netns::Hosts::One => all_sockets()?,
        two => super::sock_diag::dump_in(two)?,
    };
    let mut sockets: Vec<KernelSocket> = all
        .into_iter()
        .filter(|s| s.local.port() == port || s.peer.port() == port)
        .collect();
    fill_owners(&mut sockets);
    Ok(sockets)
}

/// Every TCP socket of this network namespace (owners not looked up).
pub fn all_sockets() -> std::io::Result<Vec<KernelSocket>> {
    if let Ok(sockets) = super::sock_diag::dump() {
        return Ok(sockets);
    }
    let mut sockets = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match fs::read_to_string(path) {
            Ok(text) => sockets.extend(parse_proc_net_tcp(&text)),
            // No IPv6 in this kernel: no tcp6 table.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.ends_with('6') => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sockets)
}

/// Finds the process that holds each socket that still has one (inode ≠ 0).
pub fn fill_owners(sockets: &mut [KernelSocket]) {
    let inodes: Vec<u64> = sockets
        .iter()
        .map(|s| s.inode)
        .filter(|&i| i != 0)
        .collect();
    if inodes.is_empty() {
        return;
    }
    let owners = owners_of(&inodes);
    for s in sockets {
        s.owner = owners
            .iter()
            .find(|(i, _)| *i == s.inode)
            .map(|(_, o)| o.clone());
    }
}

/// Every process in /proc: its pid and its folder there.
pub(crate) fn processes() -> impl Iterator<Item = (u32, std::path::PathBuf)> {
    fs::read_dir("/proc")
        .into_iter()
        .flat_map(|procs| procs.flatten())
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path()))
        })
}

/// Finds the processes whose file descriptors are these socket inodes (`socket:[N]`).
pub(crate) fn owners_of(inodes: &[u64]) -> Vec<(u64, Owner)> {
    let mut found = Vec::new();
    for (pid, dir) in processes() {
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) {
                let command = fs::read_to_string(dir.join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default();
                let cmdline = fs::read(dir.join("cmdline"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .split('\0')
                            .filter(|a| !a.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let user = fs::read_to_string(dir.join("status"))
                    .ok()
                    .and_then(|status| {
                        status
                            .lines()
                            .find_map(|l| l.strip_prefix("Uid:"))
                            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
                    })
                    .map(user_name)
                    .unwrap_or_default();
                found.push((
                    inode,
                    Owner {
                        pid,
                        command,
                        cmdline,
                        user,
                    },
                ));
            }
        }
    }
    found
}

/// The name /etc/passwd gives `uid`, or the number.
pub fn user_name(uid: u32) -> String {
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut cols = line.split(':');
                let name = cols.next()?;
                let id = cols.nth(1)?.parse::<u32>().ok()?;
                (id == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// The table as `ss -tan -o` lays it out, with teardown's state names.
pub fn render_table(sockets: &[KernelSocket]) -> String {
    let mut rows = vec![[
        "State".to_string(),
        "Recv-Q".to_string(),
        "Send-Q".to_string(),
        "Local Address:Port".to_string(),
        "Peer Address:Port".to_string(),
        "Timer".to_string(),
        "Process".to_string(),
    ]];
    for s in sockets {
        rows.push([
            s.state.to_string(),
            s.recv_q.to_string(),
            s.send_q.to_string(),
            s.local.to_string(),
            s.peer.to_string(),
            s.timer.as_ref().map(|t| t.to_string()).unwrap_or_default(),
            match (&s.owner, s.inode) {
                (Some(o), _) => format!("pid {} ({})", o.pid, o.command),
                (None, 0) => "none (the kernel keeps it)".to_string(),
                (None, _) => String::new(),
            },
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::State;

    /// Read from this kernel after the article's first case, and after its second.
    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 0200007F:A0E2 06 00000000:00000000 03:0000175D 00000000     0        0 0 3 0000000000000000
   1: 0100007F:1F40 0200007F:A0E4 05 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   2: 0200007F:A0E4 0100007F:1F40 08 00000000:0000000B 00:00000000 00000000     0        0 41523 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn parses_time_wait_orphan_and_close_wait() {
        let s = parse_proc_net_tcp(TABLE);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].local, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(s[0].peer, "127.0.0.2:41186".parse().unwrap());
        assert_eq!(s[0].state, KernelState::TimeWait);
        assert_eq!(s[0].rfc_state(), Some(State::TimeWait));
        assert_eq!(
            s[0].timer,
            Some(Timer {
                kind: "timewait",
                remaining: Duration::from_millis(59_810)
            })
        );
        assert_eq!(s[0].inode, 0);
        assert_eq!(s[1].rfc_state(), Some(State::FinWait2));
        assert_eq!(s[2].state, KernelState::CloseWait);
        assert_eq!((s[2].recv_q, s[2].send_q), (11, 0));
        assert_eq!(s[2].inode, 41523);
        assert_eq!(s[2].timer, None);
    }

    #[test]
    fn parses_ipv6_addresses() {
        let line = "   0: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0";
        let s = parse_line(line).unwrap();
        assert_eq!(s.local, "[::1]:8000".parse().unwrap());
        assert_eq!(s.state, KernelState::Listen);
        assert_eq!(s.uid, 1000);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(parse_proc_net_tcp("header\nnonsense\n 0: zz:zz").is_empty());
    }

    #[test]
    fn table_is_laid_out_like_ss() {
        let s = parse_proc_net_tcp(TABLE);
        let table = render_table(&s[..1]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("State      Recv-Q  Send-Q  Local Address:Port"));
        assert!(
            lines[1].starts_with("TIME_WAIT  0       0       127.0.0.1:8000"),
            "{table}"
        );
        assert!(lines[1].contains("timewait, 59.81 s left"));
        assert!(lines[1].ends_with("none (the kernel keeps it)"));
    }
}

/// A TcpExt counter of the calling process's network namespace (/proc/net/netstat, as
/// `nstat` reads it), e.g. `TCPLossProbes`.
pub fn tcp_ext_counter(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    counter_in(&text, name)
}

fn counter_in(text: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let at = names.split_whitespace().position(|n| n == name)?;
        return values.split_whitespace().nth(at)?.parse().ok();
    }
    None
}

#[cfg(test)]
mod netstat_tests {
    #[test]
    fn a_tcp_ext_counter_is_read_by_its_name() {
        let text = "TcpExt: SyncookiesSent TCPLossProbes TCPTimeouts\nTcpExt: 0 1 3\n\
                    IpExt: InNoRoutes\nIpExt: 7\n";
        assert_eq!(super::counter_in(text, "TCPLossProbes"), Some(1));
        assert_eq!(super::counter_in(text, "TCPTimeouts"), Some(3));
        assert_eq!(super::counter_in(text, "Nope"), None);
    }
}
