//! The socket calls of the experiments, with the options set before `bind()` and the errno
//! of every failure kept (socket2: std's listener sets SO_REUSEADDR by itself on Unix).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use socket2::Socket;
use socket2::{Domain, Protocol, SockAddr, Type};

/// Options set on a socket before `bind()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOpts {
    pub reuseaddr: bool,
    pub reuseport: bool,
}

impl SockOpts {
    pub const NONE: SockOpts = SockOpts {
        reuseaddr: false,
        reuseport: false,
    };
    pub const REUSEADDR: SockOpts = SockOpts {
        reuseaddr: true,
        reuseport: false,
    };
}

impl fmt::Display for SockOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.reuseaddr, self.reuseport) {
            (false, false) => f.write_str("no option"),
            (true, false) => f.write_str("SO_REUSEADDR"),
            (false, true) => f.write_str("SO_REUSEPORT"),
            (true, true) => f.write_str("SO_REUSEADDR+SO_REUSEPORT"),
        }
    }
}

/// A failed call: which call, and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {}", describe(.source))]
pub struct SockError {
    pub call: String,
    pub source: io::Error,
}

impl SockError {
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// `EADDRINUSE (errno 98, Address already in use)`.
pub fn describe(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(n) => format!("{} (errno {n})", errno_name(n)),
        None => err.to_string(),
    }
}

/// The symbolic name of the errnos the experiments meet.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EPIPE => "EPIPE",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EINVAL => "EINVAL",
        libc::EINTR => "EINTR",
        libc::EAGAIN => "EAGAIN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENOTCONN => "ENOTCONN",
        _ => "errno",
    }
}

/// Names a failed call: `.map_err(call("server: shutdown(SHUT_WR)"))`.
pub fn call(call: impl Into<String>) -> impl FnOnce(io::Error) -> SockError {
    let call = call.into();
    move |source| SockError { call, source }
}

/// A TCP socket with `opts` set, bound to `addr` (port 0: the kernel picks one).
pub fn bound(addr: SocketAddr, opts: SockOpts) -> Result<Socket, SockError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(call("socket"))?;
    if opts.reuseaddr {
        socket
            .set_reuse_address(true)
            .map_err(call("setsockopt SO_REUSEADDR"))?;
    }
    if opts.reuseport {
        socket
            .set_reuse_port(true)
            .map_err(call("setsockopt SO_REUSEPORT"))?;
    }
    socket
        .bind(&SockAddr::from(addr))
        .map_err(call(format!("bind {addr}")))?;
    Ok(socket)
}

/// A listener on `addr`, as the article's server makes it.
pub fn listen(addr: SocketAddr, opts: SockOpts) -> Result<Socket, SockError> {
    listen_in(&crate::netns::Hosts::One, addr, opts)
}

/// A listener on the server's host of a run.
pub fn listen_in(
    hosts: &crate::netns::Hosts,
    addr: SocketAddr,
    opts: SockOpts,
) -> Result<Socket, SockError> {
    // Across a veth the server's sockets are made on the server's host.
    let socket = hosts
        .in_server(|| Ok(bound(addr, opts)))
        .map_err(call("setns to the server's namespace"))??;
    socket.listen(16).map_err(call(format!("listen {addr}")))?;
    Ok(socket)
}

/// A client socket bound to `local_ip` and a random port in the ephemeral range, connected
/// to `server`. Not port 0: in a fresh namespace the kernel would pick the same port every
/// run, and the kernel's trace, which is global, could not tell parallel runs apart.
pub fn connect(local_ip: std::net::IpAddr, server: SocketAddr) -> Result<TcpStream, SockError> {
    let mut attempt = 0;
    let socket = loop {
        let port = 32768 + (random_u32() % (60999 - 32768 + 1)) as u16;
        match bound(SocketAddr::new(local_ip, port), SockOpts::NONE) {
            Err(e) if e.errno() == Some(libc::EADDRINUSE) && attempt < 16 => attempt += 1,
            other => break other?,
        }
    };
    connected(socket, server)
}

/// `connect()` of a socket made and bound, as a stream with the experiment's timeouts.
fn connected(socket: Socket, server: SocketAddr) -> Result<TcpStream, SockError> {
    socket
        .connect(&SockAddr::from(server))
        .map_err(call(format!("connect {server}")))?;
    stream(socket)
}

pub fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(buf)
    } else {
        // No getrandom: the clock's nanoseconds are random enough to spread ports.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    }
}

pub fn accept(listener: &Socket) -> Result<(TcpStream, SocketAddr), SockError> {
    let (socket, peer) = listener.accept().map_err(call("accept"))?;
    let peer = peer.as_socket().unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
    Ok((stream(socket)?, peer))
}

/// Every blocking call of an experiment gives up after this: nothing hangs.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn stream(socket: Socket) -> Result<TcpStream, SockError> {
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(call("setsockopt SO_RCVTIMEO"))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(call("setsockopt SO_SNDTIMEO"))?;
    Ok(stream)
}

pub fn write(stream: &mut TcpStream, who: &str, data: &[u8]) -> Result<(), SockError> {
    stream
        .write_all(data)
        .map_err(call(format!("{who}: write")))
}

/// `read()` until EOF or an error: the bytes that came, and the error that ended it, if one
/// did (ECONNRESET after an RST...).
pub fn read_until_end(stream: &mut TcpStream, who: &str) -> (Vec<u8>, Option<SockError>) {
    let mut got = Vec::new();
    loop {
        match read(stream, who) {
            Ok(chunk) if chunk.is_empty() => return (got, None),
            Ok(chunk) => got.extend(chunk),
            Err(e) => return (got, Some(e)),
        }
    }
}

/// `read()` until EOF; an error is an error.
pub fn read_to_eof(stream: &mut TcpStream, who: &str) -> Result<Vec<u8>, SockError> {
    match read_until_end(stream, who) {
        (got, None) => Ok(got),
        (_, Some(e)) => Err(e),
    }
}

/// One `read()`: what it returned (empty at EOF).
pub fn read(stream: &mut TcpStream, who: &str) -> Result<Vec<u8>, SockError> {
    let mut buf = vec![0u8; 4096];
    let n = stream
        .read(&mut buf)
        .map_err(call(format!("{who}: read")))?;
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_of_the_article() {
        let e = io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(describe(&e), "EADDRINUSE (errno 98)");
        assert_eq!(errno_name(libc::EADDRNOTAVAIL), "EADDRNOTAVAIL");
    }

    #[test]
    fn options_print_as_the_socket_option_names() {
        assert_eq!(SockOpts::NONE.to_string(), "no option");
        assert_eq!(SockOpts::REUSEADDR.to_string(), "SO_REUSEADDR");
    }
}

/// Sends a whole IPv4 packet (header included) as it is, through a raw socket: for a copy of
/// an old segment, which no TCP socket would send. Needs CAP_NET_RAW.
pub fn send_raw_ipv4(packet: &[u8], dst: std::net::Ipv4Addr) -> Result<(), SockError> {
    // IPPROTO_RAW implies IP_HDRINCL: the kernel sends our header, checksums and all.
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .map_err(call("socket(AF_INET, SOCK_RAW, IPPROTO_RAW)"))?;
    socket
        .send_to(packet, &SockAddr::from(SocketAddr::new(dst.into(), 0)))
        .map_err(call(format!("sendto {dst} (raw)")))?;
    Ok(())
}

/// An IPv4/TCP packet as captured, with its TCP checksum computed: on `lo` the kernel leaves
/// it to "hardware" (CHECKSUM_PARTIAL), so a captured copy sent again would be dropped.
pub fn with_tcp_checksum(ip_packet: &[u8]) -> Option<Vec<u8>> {
    use etherparse::{Ipv4HeaderSlice, TcpHeaderSlice};
    let ip = Ipv4HeaderSlice::from_slice(ip_packet).ok()?;
    let end = usize::from(ip.total_len()).min(ip_packet.len());
    let ihl = ip.slice().len();
    let tcp = TcpHeaderSlice::from_slice(ip_packet.get(ihl..end)?).ok()?;
    let payload = ip_packet.get(ihl + tcp.slice().len()..end)?;
    let sum = tcp
        .to_header()
        .calc_checksum_ipv4_raw(ip.source(), ip.destination(), payload)
        .ok()?;
    let mut out = ip_packet[..end].to_vec();
    out[ihl + 16..ihl + 18].copy_from_slice(&sum.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod checksum_tests {
    use super::with_tcp_checksum;

    #[test]
    fn a_captured_segment_gets_the_checksum_tcp_checks() {
        use etherparse::PacketBuilder;
        let mut built = Vec::new();
        PacketBuilder::ipv4([127, 0, 0, 2], [127, 0, 0, 1], 64)
            .tcp(40000, 8000, 1000, 512)
            .ack(2000)
            .psh()
            .write(&mut built, b"I am client")
            .unwrap();
        let mut spoiled = built.clone();
        // What lo hands to a capture: the checksum field holds a partial sum only.
        spoiled[20 + 16] ^= 0x5a;
        assert_eq!(with_tcp_checksum(&spoiled).unwrap(), built);
        assert_eq!(with_tcp_checksum(&built).unwrap(), built);
        assert_eq!(with_tcp_checksum(&built[..10]), None);
    }
}

/// A client socket on `local_ip` whose port the kernel picks at connect() from
/// net.ipv4.ip_local_port_range, as a program that never binds gets one (IP_BIND_ADDRESS_NO_PORT
/// defers the choice to connect(), where the whole 4-tuple is known). When every port to
/// `server` is held, connect() fails with EADDRNOTAVAIL.
pub fn connect_ephemeral(
    local_ip: std::net::IpAddr,
    server: SocketAddr,
) -> Result<TcpStream, SockError> {
    let socket =
        Socket::new(Domain::for_address(server), Type::STREAM, None).map_err(call("socket"))?;
    const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;
    let one: libc::c_int = 1;
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(call("setsockopt IP_BIND_ADDRESS_NO_PORT")(
            io::Error::last_os_error(),
        ));
    }
    socket
        .bind(&SockAddr::from(SocketAddr::new(local_ip, 0)))
        .map_err(call(format!("bind {local_ip}:0")))?;
    connected(socket, server)
}

/// A client socket bound to `local` (a port of one's choosing), connected to `server`.
pub fn connect_from(local: SocketAddr, server: SocketAddr) -> Result<TcpStream, SockError> {
    connected(bound(local, SockOpts::NONE)?, server)
}
