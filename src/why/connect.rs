//! `teardown why --connect HOST:PORT`: why a client's connect() fails with EADDRNOTAVAIL.
//! Every local port of the ephemeral range is held by a connection to that destination,
//! mostly in TIME_WAIT, because the client closes first.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use serde::Serialize;

use crate::kernel::KernelSocket;
use crate::output::style::wrap;
use crate::tcp::State;

/// Linux's TIME_WAIT (TCP_TIMEWAIT_LEN), in seconds.
const TIME_WAIT_S: u32 = 60;

/// The new connections per second to one destination that `ports` local ports sustain when
/// each stays in TIME_WAIT 60 s: a whole number, rounded half up (28232 ports: 471); below
/// one per second (fewer than 30 ports), two decimals. The one rounding `why --connect`, the
/// README and `run port-exhaustion` use.
pub fn sustainable_rate(ports: u32) -> String {
    if ports >= TIME_WAIT_S / 2 {
        ((ports + TIME_WAIT_S / 2) / TIME_WAIT_S).to_string()
    } else {
        format!("{:.2}", f64::from(ports) / f64::from(TIME_WAIT_S))
    }
}

/// The destination of `--connect`: an address, and the host name it was given as, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    pub addr: SocketAddr,
    pub host: Option<String>,
}

impl Dest {
    /// `127.0.0.1:8000`, `[::1]:8000` or `localhost:8000` (resolved; IPv4 first).
    pub fn parse(s: &str) -> Result<Dest, String> {
        let s = s.trim();
        let what = |why: &str| format!("--connect {s}: {why}, e.g. --connect 127.0.0.1:8000");
        if s.is_empty() {
            return Err(
                "--connect needs the server's address and port, e.g. --connect 127.0.0.1:8000"
                    .into(),
            );
        }
        if s.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "--connect {s}: give the server's address and port, e.g. --connect 127.0.0.1:{}",
                s.parse::<u16>().ok().filter(|&p| p > 0).unwrap_or(8000)
            ));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(what("give the server's address and port"));
        };
        let port = match port.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => n as u16,
            _ => return Err(what(&format!("{port:?} is not a port (1 to 65535)"))),
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if ip.is_ipv6() && bare == host {
                return Err(what("an IPv6 address goes in brackets ([::1]:8000)"));
            }
            return Ok(Dest {
                addr: SocketAddr::new(ip, port),
                host: None,
            });
        }
        if host.is_empty() {
            return Err(what("give the server's address before the colon"));
        }
        if crate::why::looks_like_ipv4(host) {
            return Err(what(&format!(
                "{host} is not a valid IPv4 address (four numbers from 0 to 255)"
            )));
        }
        if host.contains(':') {
            return Err(what("an IPv6 address goes in brackets ([::1]:8000)"));
        }
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("--connect {s}: cannot resolve {host}: {e}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("--connect {s}: {host} resolves to no address"))?;
        Ok(Dest {
            addr,
            host: Some(host.to_string()),
        })
    }
}

/// How close the destination is to running out of local ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pressure {
    /// No port is held by a connection to it.
    None,
    /// Fewer than half the ports connect() tries.
    Low,
    /// Half of them or more, or all.
    High,
}

/// What the kernel shows about connections to one destination.
#[derive(Clone, Debug)]
pub struct ConnectAnswer {
    pub dest: SocketAddr,
    /// The host name `--connect` was given, when it was one.
    pub host: Option<String>,
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
            host: None,
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

    pub fn pressure(&self) -> Pressure {
        match self.held() {
            0 => Pressure::None,
            n if !self.exhausted() && 2 * n < self.usable() => Pressure::Low,
            _ => Pressure::High,
        }
    }

    /// Loopback as tcp_tw_reuse = 2 counts it (tcp_twsk_unique): 127.0.0.0/8, ::1 and
    /// ::ffff:127.0.0.0/104.
    fn loopback(&self) -> bool {
        match self.dest.ip() {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        }
    }

    /// Whether connect() may take over this destination's TIME_WAIT ports already.
    fn reuse_applies(&self) -> bool {
        match self.tw_reuse {
            Some(1) => true,
            Some(2) => self.loopback(),
            _ => false,
        }
    }

    fn delay(&self) -> String {
        self.tw_reuse_delay_ms
            .map(|ms| format!("{ms} ms"))
            .unwrap_or_else(|| "1 s".to_string())
    }

    /// What tcp_tw_reuse does for this destination now, and what to set where it helps.
    fn tw_reuse_fix(&self) -> String {
        let delay = self.delay();
        let rule = format!(
            "connect() takes over a TIME_WAIT port to it once the port is {delay} old, if both \
             ends use TCP timestamps"
        );
        let yet = if self.exhausted() {
            "; the ports ran out all the same, so each is younger than that or the peer sends \
             no timestamps."
        } else {
            "."
        };
        match (self.tw_reuse, self.loopback()) {
            (Some(1), _) => format!("net.ipv4.tcp_tw_reuse is 1 already: {rule}{yet}"),
            (Some(2), true) => format!(
                "net.ipv4.tcp_tw_reuse is 2 (Linux's default: loopback only), which covers {}: \
                 {rule}{yet} Setting it to 1 changes nothing for this destination.",
                self.dest.ip()
            ),
            (Some(2), false) => format!(
                "Set net.ipv4.tcp_tw_reuse = 1 (now 2: loopback only, and {} is not loopback): \
                 connect() may then take over a TIME_WAIT port {delay} old, safe thanks to TCP \
                 timestamps (RFC 7323).",
                self.dest.ip()
            ),
            (_, true) => format!(
                "Set net.ipv4.tcp_tw_reuse = 2 (Linux's default: loopback only, enough for {}) \
                 or 1 (every destination): connect() may then take over a TIME_WAIT port \
                 {delay} old, safe thanks to TCP timestamps (RFC 7323).",
                self.dest.ip()
            ),
            (_, false) => format!(
                "Set net.ipv4.tcp_tw_reuse = 1: connect() may then take over a TIME_WAIT port \
                 {delay} old, safe thanks to TCP timestamps (RFC 7323)."
            ),
        }
    }

    /// Every fix, the working ones first, then the two that harm.
    pub fn fixes(&self) -> Vec<String> {
        let (lo, hi) = self.range;
        vec![
            "Reuse connections: HTTP keep-alive, a connection pool; one connection for many \
             requests holds one port, not one per request."
                .to_string(),
            format!(
                "Let the server close first: TIME_WAIT then sits on the server, where it holds no \
                 port of yours ({} is the server's end).",
                self.dest
            ),
            format!(
                "Widen net.ipv4.ip_local_port_range (now {lo}–{hi}, {} ports: {} new \
                 connections per second to one destination; 1024–65535 gives {}).",
                self.ports(),
                sustainable_rate(self.ports()),
                sustainable_rate(64512)
            ),
            self.tw_reuse_fix(),
            "Spread the load over more destination addresses or ports: the limit is per \
             destination."
                .to_string(),
            "Harmful: SO_LINGER {on, 0} closes with RST instead of FIN. No TIME_WAIT, but data \
             in flight is lost and the server reads ECONNRESET."
                .to_string(),
            "Harmful, and gone: net.ipv4.tcp_tw_recycle broke clients behind NAT and was removed \
             in Linux 4.12; advice that names it is out of date."
                .to_string(),
        ]
    }

    /// The fixes worth showing now: none while no port is held, the first two while few are.
    pub fn advice(&self) -> Vec<String> {
        let mut fixes = self.fixes();
        match self.pressure() {
            Pressure::None => Vec::new(),
            Pressure::Low => {
                fixes.truncate(2);
                fixes
            }
            Pressure::High => fixes,
        }
    }

    /// The paragraphs of the answer, unwrapped.
    fn paragraphs(&self) -> Vec<String> {
        let place = match &self.netns {
            Some(n) => format!("network namespace {n}"),
            None => "this network namespace".to_string(),
        };
        let dest = match &self.host {
            Some(h) => format!("{} ({h})", self.dest),
            None => self.dest.to_string(),
        };
        let (lo, hi) = self.range;
        let held = self.held();
        if self.pressure() == Pressure::None {
            return vec![format!(
                "connect() to {dest} in {place}: no local port ({lo}–{hi}, {} ports) is held \
                 by a connection to it, so a new connect() finds a free one. Nothing to fix \
                 for this destination now; if connect() fails with EADDRNOTAVAIL, ask again \
                 while it does.",
                self.ports()
            )];
        }
        let tw = self.time_wait();
        let mut out = vec![format!(
            "connect() to {dest} in {place}: {held} of the {} local ports ({lo}–{hi}) {} held \
             by connections to it, {} of them in TIME_WAIT.",
            self.ports(),
            if held == 1 { "is" } else { "are" },
            tw.len()
        )];
        if self.usable() != self.ports() {
            out.push(format!(
                "connect() tries {} of them each time (an even count: one port of an odd range \
                 is out of its reach).",
                self.usable()
            ));
        }
        out.push(if self.exhausted() {
            format!(
                "A new connect() to {} fails with EADDRNOTAVAIL (errno 99, Cannot assign \
                 requested address): no local port is free for this destination.",
                self.dest
            )
        } else {
            format!(
                "A new connect() to {} still finds a free port ({} left).",
                self.dest,
                self.usable().saturating_sub(held)
            )
        });
        if let Some(first) = tw
            .iter()
            .filter_map(|s| s.timer.as_ref().map(|t| t.remaining.as_secs_f64()))
            .reduce(f64::min)
        {
            let mut p = format!(
                "The client closed first, so each closed connection keeps its port in TIME_WAIT \
                 for 60 s; the first frees in {first:.1} s. The sustainable rate is ports ÷ 60 s \
                 = {} new connections per second to {}",
                sustainable_rate(self.ports()),
                self.dest
            );
            if self.reuse_applies() {
                let _ = write!(
                    p,
                    ", more where tcp_tw_reuse takes over ports {} old",
                    self.delay()
                );
            }
            p.push('.');
            out.push(p);
        }
        out
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for p in self.paragraphs() {
            for line in wrap(&p, 90) {
                let _ = writeln!(s, "{line}");
            }
        }
        let advice = self.advice();
        if self.pressure() == Pressure::Low {
            let _ = writeln!(
                s,
                "What to do: nothing yet. Should the ports run out, the first fixes are:"
            );
        } else if !advice.is_empty() {
            let _ = writeln!(s, "What to do:");
        }
        for fix in advice {
            for (i, line) in wrap(&fix, 86).iter().enumerate() {
                let _ = writeln!(s, "{}{line}", if i == 0 { "  - " } else { "    " });
            }
        }
        s
    }

    /// The answer as `why --connect --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let json = ConnectJson {
            destination: self.dest,
            host: self.host.as_deref(),
            netns: self.netns.as_deref(),
            port_range: [self.range.0, self.range.1],
            ports: self.ports(),
            connect_tries: self.usable(),
            held: self.held(),
            time_wait: self.time_wait().len(),
            exhausted: self.exhausted(),
            tcp_tw_reuse: self.tw_reuse,
            tcp_tw_reuse_delay_ms: self.tw_reuse_delay_ms,
            tw_reuse_applies: self.reuse_applies(),
            // The same number the text gives (471, not 470.53; 0.10 as 0.1).
            sustainable_per_second: sustainable_rate(self.ports()).parse().ok(),
            holders: self
                .holders
                .iter()
                .map(|h| PortHolderJson {
                    local: h.local,
                    state: h.state.name(),
                    timer_remaining_ms: h.timer.as_ref().map(|t| t.remaining.as_millis() as u64),
                })
                .collect(),
            fixes: self.advice(),
        };
        serde_json::to_value(json).unwrap_or_default()
    }
}

/// `why --connect --json`: a script's interface, keep its keys and their types.
#[derive(Serialize)]
struct ConnectJson<'a> {
    destination: SocketAddr,
    /// The host name given, `null` for an address.
    host: Option<&'a str>,
    netns: Option<&'a str>,
    port_range: [u16; 2],
    ports: u32,
    connect_tries: u32,
    held: u32,
    time_wait: usize,
    exhausted: bool,
    /// `null` where the sysctl could not be read.
    tcp_tw_reuse: Option<u8>,
    tcp_tw_reuse_delay_ms: Option<u64>,
    tw_reuse_applies: bool,
    /// An integer from 1 a second up, a fraction below.
    sustainable_per_second: Option<serde_json::Number>,
    holders: Vec<PortHolderJson<'a>>,
    fixes: Vec<String>,
}

/// A local port held by a connection to the destination.
#[derive(Serialize)]
struct PortHolderJson<'a> {
    local: SocketAddr,
    state: &'a str,
    timer_remaining_ms: Option<u64>,
}

/// Asks the kernel of the calling thread's namespace.
pub fn ask(dest: &Dest, netns: Option<String>) -> std::io::Result<ConnectAnswer> {
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
    let mut answer = ConnectAnswer::new(dest.addr, netns, range, tw_reuse, delay, sockets);
    answer.host = dest.host.clone();
    Ok(answer)
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
            state: crate::kernel::KernelState::from_name(state),
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
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains("6 of the 6 local ports (40000–40005) are held by connections to it, 6 of them in TIME_WAIT"), "{text}");
        assert!(
            flat.contains("fails with EADDRNOTAVAIL (errno 99"),
            "{text}"
        );
        assert!(flat.contains("the first frees in 50.0 s"), "{text}");
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("ports ÷ 60 s = 0.10 new connections per second"),
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
        assert!(fixes[2].contains("now 32768–60999, 28232 ports: 471 new connections per second"));
        assert!(fixes[3].starts_with("Set net.ipv4.tcp_tw_reuse = 1"));
        assert!(fixes[3].contains("1000 ms old"));
        assert!(fixes[5].contains("SO_LINGER {on, 0}"));
        assert!(fixes[6].contains("tcp_tw_recycle") && fixes[6].contains("removed in Linux 4.12"));
    }

    fn with_reuse(dest: &str, tw_reuse: u8, sockets: Vec<KernelSocket>) -> ConnectAnswer {
        ConnectAnswer::new(
            dest.parse().unwrap(),
            None,
            (40000, 40005),
            Some(tw_reuse),
            Some(1000),
            sockets,
        )
    }

    fn time_waits(dest: &str, n: u16) -> Vec<KernelSocket> {
        (40000..40000 + n)
            .map(|p| socket(&format!("127.0.0.1:{p}"), dest, "TIME_WAIT", 59))
            .collect()
    }

    #[test]
    fn one_rounding_for_the_sustainable_rate() {
        assert_eq!(sustainable_rate(28232), "471", "28232 ÷ 60 = 470.53");
        assert_eq!(sustainable_rate(64512), "1075", "64512 ÷ 60 = 1075.2");
        assert_eq!(sustainable_rate(30), "1", "0.5 rounds half up");
        assert_eq!(sustainable_rate(89), "1");
        assert_eq!(sustainable_rate(90), "2");
        assert_eq!(sustainable_rate(6), "0.10");
        let a = answer((32768, 60999), Vec::new());
        assert_eq!(a.to_json()["sustainable_per_second"], 471);
        assert!(
            a.fixes()[2].contains("1024–65535 gives 1075"),
            "{:?}",
            a.fixes()
        );
    }

    #[test]
    fn nothing_held_says_so_in_one_paragraph_without_the_list() {
        let a = answer((32768, 60999), Vec::new());
        assert_eq!(a.pressure(), Pressure::None);
        let text = a.to_text();
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.starts_with(
                "connect() to 10.0.0.5:80 in this network namespace: no local port \
                 (32768–60999, 28232 ports) is held by a connection to it"
            ),
            "{text}"
        );
        assert!(!text.contains("What to do"), "{text}");
        assert!(text.lines().count() <= 3, "{text}");
        assert_eq!(a.to_json()["fixes"], serde_json::json!([]));
    }

    #[test]
    fn few_held_shortens_the_list_to_the_first_fixes() {
        // 2 of 6: room left, nothing urgent.
        let a = answer(
            (40000, 40005),
            (40000..40002)
                .map(|p| socket(&format!("10.0.0.1:{p}"), DEST, "TIME_WAIT", 59))
                .collect(),
        );
        assert_eq!(a.pressure(), Pressure::Low);
        let text = a.to_text();
        assert!(text.contains("2 of the 6 local ports"), "{text}");
        assert!(
            text.contains(
                "What to do: nothing yet. Should the ports run out, the first fixes are:"
            ),
            "{text}"
        );
        assert_eq!(a.advice().len(), 2);
        assert!(!text.contains("tcp_tw_recycle"), "{text}");
        // One port held reads in the singular.
        let a = answer(
            (40000, 40005),
            vec![socket("10.0.0.1:40000", DEST, "TIME_WAIT", 59)],
        );
        let flat = a.to_text().split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("1 of the 6 local ports (40000–40005) is held"),
            "{flat}"
        );
    }

    #[test]
    fn the_text_wraps_like_plain_why() {
        let a = answer((40000, 40005), time_waits(DEST, 6));
        let text = a.to_text();
        assert!(
            text.contains("What to do:\n  - Reuse connections"),
            "{text}"
        );
        for line in text.lines() {
            assert!(line.chars().count() <= 90, "{line:?} in\n{text}");
        }
        // A fix's continuation lines are indented under its text.
        assert!(text.contains("\n    "), "{text}");
    }

    #[test]
    fn tw_reuse_2_already_covers_a_loopback_destination() {
        let a = with_reuse("127.0.0.1:8000", 2, time_waits("127.0.0.1:8000", 4));
        let fix = &a.fixes()[3];
        assert!(
            fix.starts_with(
                "net.ipv4.tcp_tw_reuse is 2 (Linux's default: loopback only), which covers \
                 127.0.0.1: connect() takes over a TIME_WAIT port to it once the port is 1000 \
                 ms old"
            ),
            "{fix}"
        );
        assert!(
            fix.ends_with("Setting it to 1 changes nothing for this destination."),
            "{fix}"
        );
        assert!(
            !a.to_text().contains("Set net.ipv4.tcp_tw_reuse"),
            "{}",
            a.to_text()
        );
        assert_eq!(a.to_json()["tw_reuse_applies"], true);
        // Exhausted all the same: the ports are too young, or no timestamps.
        let a = with_reuse("127.0.0.1:8000", 2, time_waits("127.0.0.1:8000", 6));
        assert!(a.fixes()[3].contains("the ports ran out all the same"));
        let a = with_reuse("[::ffff:127.0.0.1]:8000", 2, vec![]);
        assert!(a.fixes()[3].starts_with("net.ipv4.tcp_tw_reuse is 2"));
        // 2 does not cover a remote destination; 0 on loopback: 2 is enough.
        let a = with_reuse("10.0.0.5:80", 2, vec![]);
        assert!(a.fixes()[3].starts_with(
            "Set net.ipv4.tcp_tw_reuse = 1 (now 2: loopback only, and 10.0.0.5 is not loopback)"
        ));
        let a = with_reuse("127.0.0.1:8000", 0, vec![]);
        assert!(a.fixes()[3].starts_with(
            "Set net.ipv4.tcp_tw_reuse = 2 (Linux's default: loopback only, enough for \
             127.0.0.1) or 1"
        ));
        let a = with_reuse("10.0.0.5:80", 1, time_waits("10.0.0.5:80", 6));
        assert!(a.fixes()[3].starts_with("net.ipv4.tcp_tw_reuse is 1 already"));
    }

    /// `why --connect --json` is a script's interface: exact keys, and each value's type.
    #[test]
    fn json_has_exactly_the_documented_keys_and_types() {
        use crate::kernel::table::{json_shape, shape_of};
        let top = |host, tw_reuse, rate| {
            shape_of(&[
                ("destination", "string"),
                ("host", host),
                ("netns", host),
                ("port_range", "array"),
                ("ports", "integer"),
                ("connect_tries", "integer"),
                ("held", "integer"),
                ("time_wait", "integer"),
                ("exhausted", "bool"),
                ("tcp_tw_reuse", tw_reuse),
                ("tcp_tw_reuse_delay_ms", tw_reuse),
                ("tw_reuse_applies", "bool"),
                ("sustainable_per_second", rate),
                ("holders", "array"),
                ("fixes", "array"),
            ])
        };
        let mut held = time_waits(DEST, 4);
        held.push(socket("127.0.0.1:40004", DEST, "ESTABLISHED", 0));
        let mut a = answer((40000, 40005), held);
        a.host = Some("web".into());
        a.netns = Some("blue".into());
        let j = a.to_json();
        assert_eq!(json_shape(&j), top("string", "integer", "float"));
        assert_eq!(j["destination"], DEST);
        assert_eq!(j["host"], "web");
        assert_eq!(j["port_range"], serde_json::json!([40000, 40005]));
        assert_eq!(j["ports"], 6);
        assert_eq!(j["connect_tries"], 6);
        assert_eq!(j["held"], 5);
        assert_eq!(j["time_wait"], 4);
        assert_eq!(j["exhausted"], false);
        assert_eq!(j["tcp_tw_reuse"], 0);
        assert_eq!(j["tcp_tw_reuse_delay_ms"], 1000);
        assert_eq!(j["sustainable_per_second"], 0.1);
        let holder = |timer| {
            shape_of(&[
                ("local", "string"),
                ("state", "string"),
                ("timer_remaining_ms", timer),
            ])
        };
        assert_eq!(json_shape(&j["holders"][0]), holder("integer"));
        assert_eq!(j["holders"][0]["local"], "127.0.0.1:40000");
        assert_eq!(j["holders"][0]["timer_remaining_ms"], 59000);
        assert_eq!(json_shape(&j["holders"][4]), holder("null"));
        assert_eq!(j["holders"][4]["state"], "ESTABLISHED");
        // An address, not a name; sysctls that could not be read; the default range.
        let a = ConnectAnswer::new(
            DEST.parse().unwrap(),
            None,
            (32768, 60999),
            None,
            None,
            vec![],
        );
        let j = a.to_json();
        assert_eq!(json_shape(&j), top("null", "null", "integer"));
        assert_eq!(j["sustainable_per_second"], 471);
        assert_eq!(j["holders"], serde_json::json!([]));
    }

    #[test]
    fn destinations_parse_addresses_and_host_names() {
        let d = Dest::parse("127.0.0.1:8000").unwrap();
        assert_eq!((d.addr, d.host), ("127.0.0.1:8000".parse().unwrap(), None));
        let d = Dest::parse("[::1]:8000").unwrap();
        assert_eq!(d.addr, "[::1]:8000".parse().unwrap());
        let d = Dest::parse("localhost:80").unwrap();
        assert_eq!(d.addr, "127.0.0.1:80".parse().unwrap(), "IPv4 first");
        assert_eq!(d.host.as_deref(), Some("localhost"));
    }

    #[test]
    fn bad_destinations_say_what_to_write() {
        let e = |s: &str| Dest::parse(s).unwrap_err();
        assert_eq!(
            e("8000"),
            "--connect 8000: give the server's address and port, e.g. --connect 127.0.0.1:8000"
        );
        assert!(e(":8000").contains("give the server's address before the colon"));
        assert!(e("999.1.1.1:80").contains("999.1.1.1 is not a valid IPv4 address"));
        assert!(e("127.0.0.1:0").contains("\"0\" is not a port (1 to 65535)"));
        assert!(e("127.0.0.1:70000").contains("is not a port"));
        assert!(e("::1:80").contains("in brackets"));
        assert!(e("server").contains("give the server's address and port"));
        assert!(
            e("no-such-host.invalid:80").starts_with(
                "--connect no-such-host.invalid:80: cannot resolve no-such-host.invalid"
            )
        );
        assert!(e("").starts_with("--connect needs the server's address and port"));
    }
}
