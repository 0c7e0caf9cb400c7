//! `teardown why --connect HOST:PORT`: why a client's connect() fails with EADDRNOTAVAIL.
//! Every local port of the ephemeral range is held by a connection to that destination,
//! mostly in TIME_WAIT, because the client closes first.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::json;

use crate::kernel::KernelSocket;
use crate::tcp::State;

/// Linux's TIME_WAIT (TCP_TIMEWAIT_LEN), in seconds.
const TIME_WAIT_S: f64 = 60.0;

/// What the kernel shows about connections to one destination.
#[derive(Clone, Debug)]
pub struct ConnectAnswer {
    pub dest: SocketAddr,
    pub netns: Option<String>,
    /// net.ipv4.ip_local_port_range.
    pub range: (u16, u16),
    /// net.ipv4.tcp_tw_reuse and tcp_tw_reuse_delay (ms), where readable.
    pub tw_reuse: Option<u8>,
    pub tw_reuse_delay_ms: Option<u64>,
    /// Local sockets connected to `dest` on a port in the range.
    pub holders: Vec<KernelSocket>,
}

impl ConnectAnswer {
    /// `sockets`: the namespace's table; only those to `dest` from a port in the range count.
    pub fn new(
        dest: SocketAddr,
        netns: Option<String>,
        range: (u16, u16),
        tw_reuse: Option<u8>,
        tw_reuse_delay_ms: Option<u64>,
        sockets: Vec<KernelSocket>,
    ) -> ConnectAnswer {
        let holders = sockets
            .into_iter()
            .filter(|s| s.peer == dest && (range.0..=range.1).contains(&s.local.port()))
            .collect();
        ConnectAnswer {
            dest,
            netns,
            range,
            tw_reuse,
            tw_reuse_delay_ms,
            holders,
        }
    }

    pub fn ports(&self) -> u32 {
        u32::from(self.range.1.saturating_sub(self.range.0)) + 1
    }

    /// How many ports connect() itself tries: it scans a count rounded down to even
    /// (__inet_hash_connect), so with an odd range one port is out of its reach each time.
    pub fn usable(&self) -> u32 {
        let n = self.ports();
        if n > 1 { n & !1 } else { n }
    }

    fn time_wait(&self) -> Vec<&KernelSocket> {
        self.holders
            .iter()
            .filter(|s| s.rfc_state() == Some(State::TimeWait))
            .collect()
    }

    /// Every port the connect() would try is held by a connection to the destination.
    pub fn exhausted(&self) -> bool {
        self.held() >= self.usable()
    }

    fn held(&self) -> u32 {
        let mut ports: Vec<u16> = self.holders.iter().map(|s| s.local.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        ports.len() as u32
    }

    /// The fixes, the working ones first, then the two that harm.
    pub fn fixes(&self) -> Vec<String> {
        let (lo, hi) = self.range;
        let mut fixes = vec![
            "Reuse connections: HTTP keep-alive, a connection pool; one connection for many \
             requests holds one port, not one per request."
                .to_string(),
            format!(
                "Let the server close first: TIME_WAIT then sits on the server, where it holds no \
                 port of yours ({} is the server's end).",
                self.dest
            ),
            format!(
                "Widen net.ipv4.ip_local_port_range (now {lo}–{hi}, {} ports: {:.1} new \
                 connections per second to one destination; 1024–65535 gives {:.0}).",
                self.ports(),
                f64::from(self.ports()) / TIME_WAIT_S,
                64512.0 / TIME_WAIT_S
            ),
        ];
        let delay = self
            .tw_reuse_delay_ms
            .map(|ms| format!("{ms} ms"))
            .unwrap_or_else(|| "1 to 2 s".to_string());
        fixes.push(match self.tw_reuse {
            Some(1) => format!(
                "net.ipv4.tcp_tw_reuse is 1 already: connect() takes over a TIME_WAIT port once \
                 it is {delay} old, if both ends use TCP timestamps; every port here is younger or \
                 the peer sends no timestamps."
            ),
            Some(2) => format!(
                "Set net.ipv4.tcp_tw_reuse = 1 (now 2: loopback connections only): connect() \
                 may then take over a TIME_WAIT port {delay} old, safe thanks to TCP timestamps."
            ),
            _ => format!(
                "Set net.ipv4.tcp_tw_reuse = 1: connect() may then take over a TIME_WAIT port \
                 {delay} old, safe thanks to TCP timestamps (RFC 7323)."
            ),
        });
        fixes.push(
            "Spread the load over more destination addresses or ports: the limit is per \
             destination."
                .to_string(),
        );
        fixes.push(
            "Harmful: SO_LINGER {on, 0} closes with RST instead of FIN. No TIME_WAIT, but data \
             in flight is lost and the server reads ECONNRESET."
                .to_string(),
        );
        fixes.push(
            "Harmful, and gone: net.ipv4.tcp_tw_recycle broke clients behind NAT and was removed \
             in Linux 4.12; advice that names it is out of date."
                .to_string(),
        );
        fixes
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let place = match &self.netns {
            Some(n) => format!("network namespace {n}"),
            None => "this network namespace".to_string(),
        };
        let tw = self.time_wait();
        let (lo, hi) = self.range;
        let _ = writeln!(
            s,
            "connect() to {} in {place}: {} of the {} local ports ({lo}–{hi}) are held by \
             connections to it, {} of them in TIME_WAIT.",
            self.dest,
            self.held(),
            self.ports(),
            tw.len()
        );
        if self.usable() != self.ports() {
            let _ = writeln!(
                s,
                "connect() tries {} of them each time (an even count: one port of an odd range \
                 is out of its reach).",
                self.usable()
            );
        }
        if self.exhausted() {
            let _ = writeln!(
                s,
                "A new connect() to {} fails with EADDRNOTAVAIL (errno 99, Cannot assign \
                 requested address): no local port is free for this destination.",
                self.dest
            );
        } else {
            let _ = writeln!(
                s,
                "A new connect() to {} still finds a free port ({} left).",
                self.dest,
                self.usable().saturating_sub(self.held())
            );
        }
        if let Some(first) = tw
            .iter()
            .filter_map(|s| s.timer.as_ref().map(|t| t.remaining.as_secs_f64()))
            .reduce(f64::min)
        {
            let _ = writeln!(
                s,
                "The client closed first, so each closed connection keeps its port in TIME_WAIT \
                 for 60 s; the first frees in {first:.1} s. The sustainable rate is ports ÷ 60 s = \
                 {:.1} new connections per second to {}.",
                f64::from(self.ports()) / TIME_WAIT_S,
                self.dest
            );
        }
        let _ = writeln!(s, "What to do:");
        for fix in self.fixes() {
            let _ = writeln!(s, "  - {fix}");
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "destination": self.dest.to_string(),
            "netns": self.netns,
            "port_range": [self.range.0, self.range.1],
            "ports": self.ports(),
            "connect_tries": self.usable(),
            "held": self.held(),
            "time_wait": self.time_wait().len(),
            "exhausted": self.exhausted(),
            "tcp_tw_reuse": self.tw_reuse,
            "tcp_tw_reuse_delay_ms": self.tw_reuse_delay_ms,
            "sustainable_per_second": f64::from(self.ports()) / TIME_WAIT_S,
            "holders": self.holders.iter().map(|h| json!({
                "local": h.local.to_string(),
                "state": h.state,
                "timer_remaining_ms": h.timer.as_ref().map(|t| t.remaining.as_millis() as u64),
            })).collect::<Vec<_>>(),
            "fixes": self.fixes(),
        })
    }
}

/// Asks the kernel of the calling thread's namespace.
pub fn ask(dest: SocketAddr, netns: Option<String>) -> std::io::Result<ConnectAnswer> {
    let range = crate::netns::sysctl("net.ipv4.ip_local_port_range")?;
    let mut it = range.split_whitespace().map(|p| p.parse::<u16>().ok());
    let range = match (it.next().flatten(), it.next().flatten()) {
        (Some(lo), Some(hi)) => (lo, hi),
        _ => {
            return Err(std::io::Error::other(format!(
                "net.ipv4.ip_local_port_range reads {range:?}"
            )));
        }
    };
    let tw_reuse = crate::netns::sysctl("net.ipv4.tcp_tw_reuse")
        .ok()
        .and_then(|v| v.parse().ok());
    let delay = crate::netns::sysctl("net.ipv4.tcp_tw_reuse_delay")
        .ok()
        .and_then(|v| v.parse().ok());
    let sockets = crate::kernel::all_sockets()?;
    Ok(ConnectAnswer::new(
        dest, netns, range, tw_reuse, delay, sockets,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Timer;
    use std::time::Duration;

    fn socket(local: &str, peer: &str, state: &'static str, left_s: u64) -> KernelSocket {
        KernelSocket {
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            state,
            send_q: 0,
            recv_q: 0,
            timer: (state == "TIME_WAIT").then(|| Timer {
                kind: "timewait",
                remaining: Duration::from_secs(left_s),
            }),
            uid: 0,
            inode: 0,
            owner: None,
        }
    }

    const DEST: &str = "10.0.0.5:80";

    fn answer(range: (u16, u16), sockets: Vec<KernelSocket>) -> ConnectAnswer {
        ConnectAnswer::new(
            DEST.parse().unwrap(),
            None,
            range,
            Some(0),
            Some(1000),
            sockets,
        )
    }

    #[test]
    fn time_wait_ports_to_the_destination_are_counted_against_the_range() {
        let mut sockets: Vec<KernelSocket> = (40000u16..40006)
            .map(|p| {
                socket(
                    &format!("10.0.0.1:{p}"),
                    DEST,
                    "TIME_WAIT",
                    50 + u64::from(p % 7),
                )
            })
            .collect();
        // Another destination, a port outside the range, a listener: none count.
        sockets.push(socket("10.0.0.1:40000", "10.0.0.6:80", "TIME_WAIT", 30));
        sockets.push(socket("10.0.0.1:39999", DEST, "TIME_WAIT", 30));
        sockets.push(socket("0.0.0.0:40001", "0.0.0.0:0", "LISTEN", 0));
        let a = answer((40000, 40005), sockets.clone());
        assert_eq!((a.ports(), a.usable(), a.held()), (6, 6, 6));
        assert!(a.exhausted());
        let text = a.to_text();
        assert!(text.contains("6 of the 6 local ports (40000–40005) are held by connections to it, 6 of them in TIME_WAIT"), "{text}");
        assert!(
            text.contains("fails with EADDRNOTAVAIL (errno 99"),
            "{text}"
        );
        assert!(text.contains("the first frees in 50.0 s"), "{text}");
        assert!(
            text.contains("ports ÷ 60 s = 0.1 new connections per second"),
            "{text}"
        );
        // A wider range has room left.
        let a = answer((40000, 40009), sockets);
        assert!(!a.exhausted());
        assert!(a.to_text().contains("still finds a free port (4 left)"));
    }

    #[test]
    fn an_odd_range_is_out_of_reach_by_one_port() {
        let sockets = (40000..40004)
            .map(|p| socket(&format!("10.0.0.1:{p}"), DEST, "TIME_WAIT", 59))
            .collect();
        let a = answer((40000, 40004), sockets);
        assert_eq!((a.ports(), a.usable(), a.held()), (5, 4, 4));
        assert!(a.exhausted());
    }

    #[test]
    fn the_fixes_name_what_works_and_what_harms() {
        let a = answer((32768, 60999), Vec::new());
        let fixes = a.fixes();
        assert!(fixes[0].starts_with("Reuse connections"));
        assert!(fixes[1].starts_with("Let the server close first"));
        assert!(
            fixes[2].contains("now 32768–60999, 28232 ports: 470.5 new connections per second")
        );
        assert!(fixes[3].starts_with("Set net.ipv4.tcp_tw_reuse = 1"));
        assert!(fixes[3].contains("1000 ms old"));
        assert!(fixes[5].contains("SO_LINGER {on, 0}"));
        assert!(fixes[6].contains("tcp_tw_recycle") && fixes[6].contains("removed in Linux 4.12"));
    }
}
