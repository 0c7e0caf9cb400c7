//! Live capture on one interface, and the interfaces `capture -D` lists: an `AF_PACKET`
//! socket configured here (no duplicate loopback copies, a large receive buffer, kernel
//! timestamps), read through pnet.

use std::io;
use std::mem;
use std::time::Duration;

use pnet_datalink::{self as datalink, Channel, Config, DataLinkReceiver, NetworkInterface};

use super::{Frame, Stats};

// Linux UAPI values libc does not export for every target (linux/if_packet.h, asm/sockios.h).
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;
const SO_RCVBUFFORCE: libc::c_int = 33;

/// Loopback delivers GSO frames up to ~64 KiB: a larger buffer never cuts one.
const READ_BUFFER: usize = 256 * 1024;
/// Enough socket buffer that a burst of 64 KiB loopback frames is not dropped.
const SOCKET_BUFFER: libc::c_int = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "capturing packets needs CAP_NET_RAW: run with sudo, or once \
         `sudo setcap cap_net_raw,cap_net_admin+ep {}`",
        exe()
    )]
    NoPermission,
    #[error("no interface named {name:?}; interfaces here: {available}")]
    NoSuchInterface { name: String, available: String },
    #[error("capture on {iface}: {op}: {source}")]
    Io {
        iface: String,
        op: &'static str,
        source: io::Error,
    },
}

fn exe() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "teardown".into())
}

pub struct LiveCapture {
    iface: String,
    fd: libc::c_int,
    rx: Box<dyn DataLinkReceiver>,
    stats: Stats,
}

impl LiveCapture {
    /// Opens a capture on `iface`; packets queue from the moment this returns.
    pub fn open(iface: &str, poll: Duration) -> Result<LiveCapture, CaptureError> {
        let interface = find_interface(iface)?;
        let io_err = |op: &'static str| {
            let source = io::Error::last_os_error();
            CaptureError::Io {
                iface: iface.to_string(),
                op,
                source,
            }
        };
        // Protocol 0: nothing is queued until pnet binds the socket to the interface.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => CaptureError::NoPermission,
                _ => CaptureError::Io {
                    iface: iface.to_string(),
                    op: "socket(AF_PACKET)",
                    source: err,
                },
            });
        }
        let close_on_err = |e: CaptureError| {
            unsafe { libc::close(fd) };
            e
        };
        if setsockopt_int(fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUFFER).is_err() {
            // Without CAP_NET_ADMIN: as large as net.core.rmem_max allows.
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER);
        }
        if interface.is_loopback() {
            // `lo` shows each packet twice (outgoing, then incoming copy): keep one.
            setsockopt_int(fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                .map_err(|_| close_on_err(io_err("PACKET_IGNORE_OUTGOING")))?;
        }
        // The first SIOCGSTAMPNS turns on receive timestamps for this socket.
        let mut ts: libc::timespec = unsafe { mem::zeroed() };
        unsafe { libc::ioctl(fd, SIOCGSTAMPNS as _, &mut ts) };
        let config = Config {
            read_buffer_size: READ_BUFFER,
            read_timeout: Some(poll),
            socket_fd: Some(fd),
            promiscuous: false,
            ..Config::default()
        };
        // pnet binds to the interface and owns (and closes) the descriptor from here on.
        let rx = match datalink::channel(&interface, config) {
            Ok(Channel::Ethernet(_tx, rx)) => rx,
            Ok(_) => unreachable!("pnet's Linux backend only makes Ethernet channels"),
            Err(source) => {
                return Err(CaptureError::Io {
                    iface: iface.to_string(),
                    op: "bind to the interface",
                    source,
                });
            }
        };
        Ok(LiveCapture {
            iface: iface.to_string(),
            fd,
            rx,
            stats: Stats::default(),
        })
    }

    /// The next frame, or `None` when the poll interval passed without one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        match self.rx.next() {
            Ok(data) => {
                let data = data.to_vec();
                let ts = self.last_timestamp();
                let orig_len = data.len() as u32;
                Ok(Some(Frame { ts, data, orig_len }))
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(source) => Err(CaptureError::Io {
                iface: self.iface.clone(),
                op: "receive",
                source,
            }),
        }
    }

    /// The kernel's receive time of the frame just read, in nanoseconds.
    fn last_timestamp(&self) -> Duration {
        let mut ts: libc::timespec = unsafe { mem::zeroed() };
        if unsafe { libc::ioctl(self.fd, SIOCGSTAMPNS as _, &mut ts) } == 0 {
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
        }
    }

    /// Received and dropped counts since the capture opened (the kernel resets its
    /// counters on each read, so they are added up here).
    pub fn stats(&mut self) -> Stats {
        #[repr(C)]
        struct TpacketStats {
            tp_packets: u32,
            tp_drops: u32,
        }
        let mut raw = TpacketStats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = mem::size_of::<TpacketStats>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                &mut raw as *mut TpacketStats as *mut libc::c_void,
                &mut len,
            )
        };
        if rc == 0 {
            self.stats.received += u64::from(raw.tp_packets);
            self.stats.dropped += u64::from(raw.tp_drops);
        }
        self.stats
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }
}

/// The interface named `name`, or an error that lists the ones there are.
pub(crate) fn find_interface(name: &str) -> Result<NetworkInterface, CaptureError> {
    let all = datalink::interfaces();
    match all.iter().find(|i| i.name == name) {
        Some(i) => Ok(i.clone()),
        None => Err(CaptureError::NoSuchInterface {
            name: name.to_string(),
            available: all
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn setsockopt_int(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One line of `capture -D`, as `tcpdump -D` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub description: Option<String>,
    pub up: bool,
    pub running: bool,
    pub loopback: bool,
    /// The carrier, where the interface has one and is up.
    pub connected: Option<bool>,
}

impl Listed {
    /// libpcap's order (pcap_findalldevs): running and up first, disconnected later,
    /// loopback after the others, `any` after every non-loopback interface, then the
    /// number at the end of the name.
    fn merit(&self) -> u32 {
        let digits = self.name.len()
            - self
                .name
                .bytes()
                .rev()
                .take_while(u8::is_ascii_digit)
                .count();
        let mut n = if self.name == super::ring::ANY {
            0x0FFF_FFFF
        } else {
            self.name[digits..]
                .parse::<u32>()
                .map_or(0, |i| i.saturating_add(1).min(0x0FFF_FFFE))
        };
        if !self.running {
            n |= 0x8000_0000;
        }
        if !self.up {
            n |= 0x4000_0000;
        }
        if self.connected == Some(false) {
            n |= 0x2000_0000;
        }
        if self.loopback {
            n |= 0x1000_0000;
        }
        n
    }

    fn flags(&self) -> String {
        let mut flags = Vec::new();
        for (on, name) in [
            (self.up, "Up"),
            (self.running, "Running"),
            (self.loopback, "Loopback"),
        ] {
            if on {
                flags.push(name);
            }
        }
        match self.connected {
            Some(true) => flags.push("Connected"),
            Some(false) => flags.push("Disconnected"),
            None => {}
        }
        if flags.is_empty() {
            "none".to_string()
        } else {
            flags.join(", ")
        }
    }
}

/// The interfaces `-i` takes here, in libpcap's order, `any` among them.
pub fn interfaces() -> Vec<Listed> {
    let mut all: Vec<Listed> = datalink::interfaces()
        .into_iter()
        .map(|i| {
            Listed {
                // IFF_LOWER_UP, the carrier (not /sys, which shows the namespace it was
                // mounted in); a loopback has none, one that is down says nothing.
                connected: (!i.is_loopback() && i.is_up()).then(|| i.is_lower_up()),
                up: i.is_up(),
                running: i.is_running(),
                loopback: i.is_loopback(),
                description: None,
                name: i.name,
            }
        })
        .collect();
    all.push(Listed {
        name: super::ring::ANY.to_string(),
        description: Some("Pseudo-device that captures on all interfaces".to_string()),
        up: true,
        running: true,
        loopback: false,
        connected: None,
    });
    // Stable: equal merits keep the kernel's order.
    all.sort_by_key(Listed::merit);
    all
}

/// `1.eth0 [Up, Running, Connected]`, one line each.
pub fn list_text(interfaces: &[Listed]) -> String {
    interfaces
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let description = i
                .description
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            format!("{}.{}{description} [{}]\n", n + 1, i.name, i.flags())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, up: bool, loopback: bool, connected: Option<bool>) -> Listed {
        Listed {
            name: name.to_string(),
            description: None,
            up,
            running: up,
            loopback,
            connected,
        }
    }

    #[test]
    fn the_list_reads_like_tcpdump_s() {
        let mut devs = vec![
            dev("lo", true, false, None),
            dev("ifb0", false, false, None),
            dev("veth1", true, false, Some(false)),
            dev("eth0", true, false, Some(true)),
        ];
        devs[0].loopback = true;
        devs.push(Listed {
            description: Some("Pseudo-device that captures on all interfaces".into()),
            ..dev("any", true, false, None)
        });
        devs.sort_by_key(Listed::merit);
        assert_eq!(
            list_text(&devs),
            "1.eth0 [Up, Running, Connected]\n\
             2.any (Pseudo-device that captures on all interfaces) [Up, Running]\n\
             3.lo [Up, Running, Loopback]\n\
             4.veth1 [Up, Running, Disconnected]\n\
             5.ifb0 [none]\n"
        );
    }

    #[test]
    fn this_machine_lists_lo_and_any() {
        let all = interfaces();
        assert!(all.iter().any(|i| i.name == "lo" && i.loopback), "{all:?}");
        assert!(all.iter().any(|i| i.name == "any"), "{all:?}");
    }
}
