//! The kernel's own record of state changes: tracepoints `sock:inet_sock_set_state`,
//! `tcp:tcp_send_reset`, `tcp:tcp_receive_reset` and `tcp:tcp_retransmit_skb`, in a private
//! tracefs instance that is removed afterwards (also on Ctrl-C and on a panic).

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::tcp::State;

/// Where tracefs is, or why it cannot be had.
#[derive(Clone, Debug)]
pub enum Tracefs {
    Available(PathBuf),
    Unavailable(String),
}

/// Finds tracefs, mounting it if needed in a private mount namespace of this process, so the
/// host's mounts stay as they were. Call while the process has a single thread.
pub fn locate() -> Tracefs {
    if let Some(path) = mounted() {
        return Tracefs::Available(path);
    }
    match mount_privately() {
        Ok(path) => Tracefs::Available(path),
        Err(e) => Tracefs::Unavailable(format!("tracefs is not mounted and could not be: {e}")),
    }
}

fn mounted() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut cols = line.split_whitespace();
        let (_dev, dir, kind) = (cols.next()?, cols.next()?, cols.next()?);
        (kind == "tracefs").then(|| PathBuf::from(dir))
    })
}

fn mount_privately() -> io::Result<PathBuf> {
    let target = PathBuf::from("/sys/kernel/tracing");
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Nothing mounted from here on may propagate back to the host.
    let root = c"/";
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let (src, dir, kind) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dir.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(target)
}

pub use crate::evidence::{EventKind, KernelEvent};

/// A private tracefs instance recording the run's port; removed when dropped.
pub struct Tracer {
    dir: PathBuf,
    /// realtime − monotonic, to put the trace's times on the packets' clock.
    offset_ns: i128,
    /// The instances of dead teardown processes removed at the start.
    pub removed: Vec<String>,
}

const EVENTS: [(&str, bool); 4] = [
    ("sock/inet_sock_set_state", true),
    ("tcp/tcp_receive_reset", true),
    ("tcp/tcp_retransmit_skb", true),
    // No port fields in this one: its records are filtered here, by address.
    ("tcp/tcp_send_reset", false),
];

impl Tracer {
    /// Creates `instances/teardown-PID-NS-RANDOM` under `root`, filtered to `ports`, and
    /// enables the events. Instances of dead teardown processes (killed with SIGKILL) are
    /// removed first; `removed` names them.
    pub fn start(root: &Path, ports: std::ops::RangeInclusive<u16>) -> io::Result<Tracer> {
        let instances = root.join("instances");
        let removed = remove_stale(&instances, pid_namespace());
        // The pid says whose it is and the PID namespace where that pid means it; the random
        // part keeps two runs of one pid (reused) apart.
        let dir = instances.join(format!(
            "teardown-{}-{:x}-{:08x}",
            std::process::id(),
            pid_namespace(),
            crate::sockets::random_u32()
        ));
        fs::create_dir(&dir)?;
        let tracer = Tracer {
            dir,
            offset_ns: clock_offset_ns(),
            removed,
        };
        // The trace's own clock is CLOCK_MONOTONIC; packets carry realtime.
        fs::write(tracer.dir.join("trace_clock"), "mono")?;
        for (event, filtered) in EVENTS {
            let path = tracer.dir.join("events").join(event);
            if filtered {
                fs::write(path.join("filter"), filter(&ports))?;
            }
            fs::write(path.join("enable"), "1")?;
        }
        Ok(tracer)
    }

    /// Everything recorded so far.
    pub fn read(&self) -> io::Result<Vec<KernelEvent>> {
        let text = fs::read_to_string(self.dir.join("trace"))?;
        Ok(parse_trace(&text, self.offset_ns))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The event filter for the run's ports (every connection of a scenario is checked).
fn filter(ports: &std::ops::RangeInclusive<u16>) -> String {
    let (a, b) = (ports.start(), ports.end());
    if a == b {
        format!("sport == {a} || dport == {a}")
    } else {
        format!("(sport >= {a} && sport <= {b}) || (dport >= {a} && dport <= {b})")
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        for (event, _) in EVENTS {
            let _ = fs::write(self.dir.join("events").join(event).join("enable"), "0");
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// This process's PID namespace (its inode): a pid in an instance's name means this
/// process's pid only when the namespaces match.
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// An instance's owner, from its name: `teardown-PID-NS-RANDOM`, or the older
/// `teardown-PID-RANDOM` (no namespace).
fn owner(name: &str) -> Option<(i32, Option<u64>)> {
    let mut parts = name.strip_prefix("teardown-")?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let second = parts.next()?;
    let ns = match parts.next() {
        Some(_) => Some(u64::from_str_radix(second, 16).ok()?),
        None => None,
    };
    Some((pid, ns))
}

/// Removes the instances of teardown processes that are dead, and returns their names. One
/// of this PID namespace goes at once; one of another namespace (or of no stated namespace)
/// only when it is over 10 minutes old, since its pid cannot be checked from here.
fn remove_stale(instances: &Path, own_ns: u64) -> Vec<String> {
    let Ok(entries) = fs::read_dir(instances) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, ns)) = owner(&name) else {
            continue;
        };
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        let old = || {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(600))
        };
        let dead = if ns == Some(own_ns) {
            !alive
        } else {
            !alive && old()
        };
        if dead {
            // Tracing off first, so the buffers stop filling even if the rmdir fails.
            let _ = fs::write(entry.path().join("tracing_on"), "0");
            if fs::remove_dir(entry.path()).is_ok() {
                removed.push(name);
            }
        }
    }
    removed
}

fn clock_offset_ns() -> i128 {
    let read = |clock| {
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    // The narrowest of a few samples bounds the error.
    (0..5)
        .map(|_| {
            let m0 = read(libc::CLOCK_MONOTONIC);
            let r = read(libc::CLOCK_REALTIME);
            let m1 = read(libc::CLOCK_MONOTONIC);
            (m1 - m0, r - (m0 + m1) / 2)
        })
        .min_by_key(|(width, _)| *width)
        .map(|(_, offset)| offset)
        .unwrap_or(0)
}

/// Parses the text of a `trace` file. `offset_ns` moves the monotonic times to realtime.
pub fn parse_trace(text: &str, offset_ns: i128) -> Vec<KernelEvent> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| parse_line(l, offset_ns))
        .collect()
}

const EVENT_NAMES: [&str; 4] = [
    "inet_sock_set_state",
    "tcp_receive_reset",
    "tcp_retransmit_skb",
    "tcp_send_reset",
];

fn parse_line(line: &str, offset_ns: i128) -> Option<KernelEvent> {
    // "   task-PID [CPU] flags  SECONDS.MICROS: event: fields". The task name may hold
    // anything, ": " included: anchor on the event's name instead.
    let at_event = EVENT_NAMES
        .iter()
        .filter_map(|name| line.find(&format!(": {name}: ")))
        .min()?;
    let head = &line[..at_event];
    let rest = &line[at_event + 2..];
    let secs = head.split_whitespace().last()?;
    let (s, us) = secs.split_once('.')?;
    let mono_ns = s.parse::<i128>().ok()? * 1_000_000_000 + us.parse::<i128>().ok()? * 1_000;
    let real_ns = u64::try_from(mono_ns + offset_ns).ok()?;
    let at = Duration::from_nanos(real_ns);
    let (event, fields) = rest.split_once(": ")?;
    let field = |name: &str| -> Option<&str> {
        fields
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let addr = |ip: &str, port: &str| -> Option<SocketAddr> {
        Some(SocketAddr::new(
            field(ip)?.parse::<IpAddr>().ok()?,
            field(port)?.parse().ok()?,
        ))
    };
    let by_ports = || Some((addr("saddr", "sport")?, addr("daddr", "dport")?));
    let (local, remote, kind) = match event {
        "inet_sock_set_state" => {
            if field("protocol")? != "IPPROTO_TCP" {
                return None;
            }
            let v6 = field("family")? == "AF_INET6";
            let (local, remote) = if v6 {
                (addr("saddrv6", "sport")?, addr("daddrv6", "dport")?)
            } else {
                by_ports()?
            };
            let kind = EventKind::SetState {
                old: kernel_state(field("oldstate")?)?,
                new: kernel_state(field("newstate")?)?,
            };
            (local, remote, kind)
        }
        "tcp_receive_reset" => {
            let (l, r) = by_ports()?;
            (l, r, EventKind::ReceiveReset)
        }
        "tcp_retransmit_skb" => {
            let (l, r) = by_ports()?;
            (l, r, EventKind::Retransmit)
        }
        "tcp_send_reset" => {
            let src = field("src")?.parse().ok()?;
            let dst = field("dest")?.parse().ok()?;
            (src, dst, EventKind::SendReset)
        }
        _ => return None,
    };
    Some(KernelEvent {
        at,
        local,
        remote,
        kind,
    })
}

/// `TCP_FIN_WAIT1` → FIN_WAIT_1; the kernel's TCP_CLOSE is CLOSED.
fn kernel_state(name: &str) -> Option<State> {
    State::parse(name.strip_prefix("TCP_")?).or(match name {
        "TCP_CLOSE" => Some(State::Closed),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_names_its_pid_and_pid_namespace() {
        assert_eq!(
            owner("teardown-1234-effffffc-0a1b2c3d"),
            Some((1234, Some(0xeffffffc)))
        );
        assert_eq!(owner("teardown-1234-0a1b2c3d"), Some((1234, None)));
        assert_eq!(owner("teardown-x-1"), None);
        assert_eq!(owner("other-1234-1"), None);
    }

    /// Recorded on this kernel (6.18) during `teardown run active-close`.
    const TRACE: &str = "# tracer: nop
#
        teardown-16373   [001] .....  1581.309789: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=8000 dport=0 saddr=127.0.0.1 daddr=0.0.0.0 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:0.0.0.0 oldstate=TCP_CLOSE newstate=TCP_LISTEN
        teardown-16373   [001] ..s2.  1581.309938: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=8000 dport=52787 saddr=127.0.0.1 daddr=127.0.0.2 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.2 oldstate=TCP_LISTEN newstate=TCP_SYN_RECV
          <idle>-0       [001] .Ns2.  1581.356081: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=8000 dport=52787 saddr=127.0.0.1 daddr=127.0.0.2 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:0.0.0.0 oldstate=TCP_FIN_WAIT2 newstate=TCP_CLOSE
          <idle>-0       [000] ..s1.  1600.000001: tcp_send_reset: skbaddr=0000 skaddr=0000 src=127.0.0.1:8000 dest=127.0.0.2:52787 state=TCP_TIME_WAIT reason=NOT_SPECIFIED
          a: weird: task-7  [000] ..s1.  1600.000002: tcp_receive_reset: family=AF_INET sport=52787 dport=8000 saddr=127.0.0.2 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.2 daddrv6=::ffff:127.0.0.1 sock_cookie=5
garbage line
";

    #[test]
    fn parses_state_changes_resets_and_times() {
        let events = parse_trace(TRACE, 1_000_000_000_000_000_000);
        assert_eq!(events.len(), 5);
        assert_eq!(
            events[0].kind,
            EventKind::SetState {
                old: State::Closed,
                new: State::Listen
            }
        );
        assert_eq!(events[0].remote.port(), 0);
        assert_eq!(
            events[0].at,
            Duration::from_nanos(1_000_000_000_000_000_000 + 1_581_309_789_000)
        );
        assert_eq!(events[1].local, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(events[1].remote, "127.0.0.2:52787".parse().unwrap());
        assert_eq!(
            events[1].kind,
            EventKind::SetState {
                old: State::Listen,
                new: State::SynReceived
            }
        );
        assert_eq!(
            events[2].kind,
            EventKind::SetState {
                old: State::FinWait2,
                new: State::Closed
            }
        );
        assert_eq!(events[3].kind, EventKind::SendReset);
        assert_eq!(events[3].remote, "127.0.0.2:52787".parse().unwrap());
        assert_eq!(events[4].kind, EventKind::ReceiveReset);
        assert_eq!(events[4].local, "127.0.0.2:52787".parse().unwrap());
    }
}
