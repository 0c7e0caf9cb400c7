//! A private network namespace for a run: a fresh TCP stack with only loopback, gone when
//! the process exits, so nothing is left on the host, even after Ctrl-C or a crash.

use std::fs;
use std::io;
use std::mem;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "a private network namespace needs root (CAP_SYS_ADMIN) or unprivileged user \
         namespaces: run with sudo, or add --host to run on the host's loopback ({0})"
    )]
    NoPermission(String),
    #[error("private network namespace: {op}: {source}")]
    Io { op: &'static str, source: io::Error },
}

/// Moves the calling process into a new network namespace and brings `lo` up.
/// Call it while the process has a single thread, before any thread is spawned.
pub fn enter_private() -> Result<(), NetnsError> {
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let first = io::Error::last_os_error();
        if first.raw_os_error() != Some(libc::EPERM) {
            return Err(NetnsError::Io {
                op: "unshare(CLONE_NEWNET)",
                source: first,
            });
        }
        enter_as_unprivileged_user().map_err(|e| NetnsError::NoPermission(e.to_string()))?;
    }
    loopback_up().map_err(|source| match source.raw_os_error() {
        Some(libc::EPERM) => NetnsError::NoPermission(format!("bringing lo up: {source}")),
        _ => NetnsError::Io {
            op: "bring lo up",
            source,
        },
    })
}

/// Without root: a user namespace of our own makes us root of a network namespace we own.
fn enter_as_unprivileged_user() -> io::Result<()> {
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    fs::write("/proc/self/setgroups", "deny")?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// `ip link set lo up`: SIOCSIFFLAGS with IFF_UP (which also adds 127.0.0.1/8 and ::1).
pub fn loopback_up() -> io::Result<()> {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let result = (|| {
        if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })();
    unsafe { libc::close(fd) };
    result
}

/// A sysctl of the calling thread's network namespace (`net.ipv4.tcp_fin_timeout`), as
/// `sysctl -n` prints it.
pub fn sysctl(name: &str) -> io::Result<String> {
    Ok(fs::read_to_string(sysctl_path(name))?.trim().to_string())
}

/// Sets a sysctl of the calling thread's network namespace; returns the old value. The
/// `net.` ones belong to the namespace: a private one's change dies with it.
pub fn set_sysctl(name: &str, value: &str) -> io::Result<String> {
    let old = sysctl(name)?;
    fs::write(sysctl_path(name), value)?;
    Ok(old)
}

fn sysctl_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/proc/sys").join(name.replace('.', "/"))
}

/// Where a run's two ends live: one host (the process's namespace), or two joined by a veth,
/// passed down to whatever makes a server socket, reads a socket table or sets a sysctl.
#[derive(Clone, Debug, Default)]
pub enum Hosts {
    #[default]
    One,
    Two(std::sync::Arc<pair::Pair>),
}

impl Hosts {
    pub fn two(&self) -> bool {
        matches!(self, Hosts::Two(_))
    }

    /// Runs `f` on the server's host: in its namespace across a veth, here on one host.
    pub fn in_server<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        match self {
            Hosts::One => f(),
            Hosts::Two(pair) => pair.in_server(f),
        }
    }
}

/// Two hosts for a run: the client's namespace (the process's own) and the server's, joined
/// by a veth pair. Both are anonymous: when the process ends, however it ends, the kernel
/// removes them with their veth and their firewall rules. Nothing is left on the host.
pub mod pair {
    use std::io;
    use std::net::Ipv4Addr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    pub const CLIENT_IF: &str = "td-client";
    pub const SERVER_IF: &str = "td-server";
    pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const PREFIX: u8 = 24;

    /// The two namespaces of a run: the client's (the process's own) and the server's.
    #[derive(Debug)]
    pub struct Pair {
        client: OwnedFd,
        server: OwnedFd,
    }

    fn open_own() -> io::Result<OwnedFd> {
        let fd = unsafe {
            libc::open(
                c"/proc/thread-self/ns/net".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn enter(fd: RawFd) -> io::Result<()> {
        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes the server's namespace beside the process's (already private) one, and the veth
    /// pair between them with their addresses. Call it while the process has one thread.
    pub fn create() -> Result<Pair, super::NetnsError> {
        let err = |op: &'static str| move |source| super::NetnsError::Io { op, source };
        let client = open_own().map_err(err("open the client's namespace"))?;
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(err("unshare(CLONE_NEWNET) for the server")(
                io::Error::last_os_error(),
            ));
        }
        let server = open_own().map_err(err("open the server's namespace"))?;
        super::loopback_up().map_err(err("bring the server's lo up"))?;
        enter(client.as_raw_fd()).map_err(err("setns back to the client's namespace"))?;
        add_veth(CLIENT_IF, SERVER_IF, server.as_raw_fd()).map_err(err("create the veth pair"))?;
        configure(CLIENT_IF, CLIENT_IP).map_err(err("address the client's veth"))?;
        let pair = Pair { client, server };
        pair.in_server(|| configure(SERVER_IF, SERVER_IP))
            .map_err(err("address the server's veth"))?;
        Ok(pair)
    }

    impl Pair {
        /// Runs `f` with the calling thread in the server's namespace (sockets and netlink
        /// sockets made there stay there), then back.
        pub fn in_server<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
            enter(self.server.as_raw_fd())?;
            let out = f();
            enter(self.client.as_raw_fd())?;
            out
        }

        /// The server namespace's file descriptor, for a child process to setns() into.
        pub fn server_fd(&self) -> RawFd {
            self.server.as_raw_fd()
        }
    }

    /// `ip link add A type veth peer name B netns NS`: one RTM_NEWLINK over rtnetlink.
    fn add_veth(name: &str, peer: &str, peer_ns: RawFd) -> io::Result<()> {
        const IFLA_IFNAME: u16 = 3;
        const IFLA_LINKINFO: u16 = 18;
        const IFLA_NET_NS_FD: u16 = 28;
        const IFLA_INFO_KIND: u16 = 1;
        const IFLA_INFO_DATA: u16 = 2;
        const VETH_INFO_PEER: u16 = 1;
        const NLA_F_NESTED: u16 = 0x8000;
        fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
            let len = 4 + payload.len();
            out.extend_from_slice(&(len as u16).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(payload);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        fn cstr(s: &str) -> Vec<u8> {
            let mut v = s.as_bytes().to_vec();
            v.push(0);
            v
        }
        let ifinfomsg = [0u8; 16];
        let mut peer_info = ifinfomsg.to_vec();
        attr(&mut peer_info, IFLA_IFNAME, &cstr(peer));
        attr(
            &mut peer_info,
            IFLA_NET_NS_FD,
            &(peer_ns as u32).to_ne_bytes(),
        );
        let mut data = Vec::new();
        attr(&mut data, VETH_INFO_PEER | NLA_F_NESTED, &peer_info);
        let mut linkinfo = Vec::new();
        attr(&mut linkinfo, IFLA_INFO_KIND, &cstr("veth"));
        attr(&mut linkinfo, IFLA_INFO_DATA | NLA_F_NESTED, &data);
        let mut body = ifinfomsg.to_vec();
        attr(&mut body, IFLA_IFNAME, &cstr(name));
        attr(&mut body, IFLA_LINKINFO | NLA_F_NESTED, &linkinfo);
        let flags =
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        if unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel's answer: an NLMSG_ERROR whose error is 0 on success.
        let mut buf = [0u8; 4096];
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 20 {
            return Err(io::Error::last_os_error());
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if kind == libc::NLMSG_ERROR as u16 && errno != 0 {
            return Err(io::Error::from_raw_os_error(-errno));
        }
        Ok(())
    }

    /// `ip addr add IP/24 dev IF; ip link set IF up`, by ioctl, in the calling thread's
    /// namespace.
    fn configure(name: &str, ip: Ipv4Addr) -> io::Result<()> {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let request = |addr: Ipv4Addr| {
            let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
            for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
                *dst = src as libc::c_char;
            }
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(addr).to_be(),
                },
                sin_zero: [0; 8],
            };
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&sin as *const libc::sockaddr_in).cast::<u8>(),
                    (&mut req.ifr_ifru as *mut libc::__c_anonymous_ifr_ifru).cast::<u8>(),
                    std::mem::size_of::<libc::sockaddr_in>(),
                )
            };
            req
        };
        let ioctl = |op: libc::Ioctl, req: &mut libc::ifreq| {
            if unsafe { libc::ioctl(sock.as_raw_fd(), op, req as *mut libc::ifreq) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        ioctl(libc::SIOCSIFADDR, &mut request(ip))?;
        let mask = Ipv4Addr::from(u32::MAX << (32 - PREFIX));
        ioctl(libc::SIOCSIFNETMASK, &mut request(mask))?;
        let mut req = request(ip);
        ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        ioctl(libc::SIOCSIFFLAGS, &mut req)?;
        Ok(())
    }
}
