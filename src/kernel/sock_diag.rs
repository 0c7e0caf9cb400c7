//! The kernel's TCP socket table read through NETLINK_SOCK_DIAG, as `ss -tan -o` reads it:
//! every state, TIME_WAIT and orphaned FIN_WAIT_2 sockets included, with queues and timers.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::time::Duration;

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, Parseable,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, SocketIdBuffer, StateFlags,
    Timer as DiagTimer,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

use super::proc_net::timer_kind;
use super::{KernelSocket, Timer};

/// The kernel caps a dump's datagrams at 32 KiB (netlink_recvmsg's max_recvmsg_len), so
/// twice that never truncates; MSG_TRUNC below would report it if it ever did.
const RECV_BUFFER: usize = 64 * 1024;

/// `idiag_expires` in `struct inet_diag_msg`: after family, state, timer, retrans (one byte
/// each) and the socket id. The crate's `InetResponseHeader` drops it for time-wait timers
/// (`Timer::TimeWait` carries no duration), so it is read from the raw payload.
const EXPIRES_OFFSET: usize = 4 + size_of::<SocketIdBuffer>();

/// Every TCP socket of the calling thread's network namespace, IPv4 and IPv6 (one dump each;
/// an IPv6 dump failing with EAFNOSUPPORT/no IPv6 is not an error), in every state, including
/// TIME_WAIT sockets and orphaned FIN_WAIT_2 sockets (the kernel reports those as time-wait
/// sockets whose state is FIN_WAIT_2). `owner` is left None (the caller fills it).
pub fn dump() -> io::Result<Vec<KernelSocket>> {
    dump_here()
}

/// The table of both hosts of a run: across a veth, the server's host has one of its own.
pub fn dump_in(hosts: &crate::netns::Hosts) -> io::Result<Vec<KernelSocket>> {
    let mut sockets = dump_here()?;
    if hosts.two() {
        sockets.extend(hosts.in_server(dump_here)?);
    }
    Ok(sockets)
}

/// The table of the calling thread's network namespace.
fn dump_here() -> io::Result<Vec<KernelSocket>> {
    // A netlink socket belongs to the namespace of the thread that creates it.
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    let mut sockets = dump_family(&socket, AF_INET, 1)?;
    match dump_family(&socket, AF_INET6, 2) {
        Ok(v6) => sockets.extend(v6),
        // A kernel without IPv6 has no AF_INET6 handler: nothing to list.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::ENOENT)) => {}
        Err(e) => return Err(e),
    }
    Ok(sockets)
}

/// One SOCK_DIAG_BY_FAMILY dump of TCP sockets of `family`, read until NLMSG_DONE.
fn dump_family(socket: &Socket, family: u8, seq: u32) -> io::Result<Vec<KernelSocket>> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let socket_id = if family == AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            // Every bit, as ss does: the crate's named flags stop at CLOSING, and the kernel
            // lists request sockets (NEW_SYN_RECV) under SYN_RECV anyway.
            states: StateFlags::from_bits_retain(u32::MAX),
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0)?;

    let mut sockets = Vec::new();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let n = socket.recv(&mut &mut buf[..], libc::MSG_TRUNC)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag dump ended without NLMSG_DONE",
            ));
        }
        let datagram = buf.get(..n).ok_or_else(|| {
            invalid(format!(
                "a sock_diag datagram of {n} bytes overflowed the buffer"
            ))
        })?;
        if read_datagram(datagram, seq, &mut sockets)? {
            return Ok(sockets);
        }
    }
}

/// Appends the sockets of one datagram (several netlink messages) to `out`; true once the
/// dump is over. Entries that do not parse are skipped; a datagram whose framing does not
/// parse, an NLMSG_ERROR or a failed NLMSG_DONE is an error.
fn read_datagram(mut datagram: &[u8], seq: u32, out: &mut Vec<KernelSocket>) -> io::Result<bool> {
    while !datagram.is_empty() {
        let message = NetlinkBuffer::new_checked(datagram)
            .map_err(|e| invalid(format!("malformed sock_diag message: {e}")))?;
        // new_checked guarantees 16 <= length <= datagram.len(); messages are 4-byte aligned.
        let length = message.length() as usize;
        let payload = message.payload();
        // Replies to an earlier request on this socket are not this dump's.
        if message.sequence_number() == seq {
            match message.message_type() {
                NLMSG_DONE => {
                    // A dump that failed half way ends with DONE carrying -errno.
                    let code = DoneBuffer::new_checked(payload).map_or(0, |d| d.code());
                    if code < 0 {
                        return Err(io::Error::from_raw_os_error(code.saturating_neg()));
                    }
                    return Ok(true);
                }
                NLMSG_ERROR => {
                    let error = ErrorBuffer::new_checked(payload)
                        .map_err(|e| invalid(format!("malformed NLMSG_ERROR: {e}")))?;
                    return match error.code() {
                        Some(code) => {
                            Err(io::Error::from_raw_os_error(code.get().saturating_abs()))
                        }
                        // An ACK: the request is answered, nothing more is coming.
                        None => Ok(true),
                    };
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(socket) = from_payload(payload) {
                        out.push(socket);
                    }
                }
                _ => {}
            }
        }
        datagram = datagram
            .get(length.next_multiple_of(4)..)
            .unwrap_or_default();
    }
    Ok(false)
}

/// One `inet_diag_msg` payload, its attributes included, as a socket; None when it does not
/// parse.
fn from_payload(payload: &[u8]) -> Option<KernelSocket> {
    let response = InetResponse::parse(payload).ok()?;
    let expires = payload.get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)?;
    let expires = u32::from_ne_bytes(expires.try_into().ok()?);
    Some(kernel_socket(&response, expires))
}

/// The crate's view of one socket, plus its raw `idiag_expires` in milliseconds (which the
/// crate loses for time-wait timers), as a `KernelSocket`.
pub(crate) fn kernel_socket(response: &InetResponse, expires_ms: u32) -> KernelSocket {
    let header = &response.header;
    let id = &header.socket_id;
    // Back to the kernel's idiag_timer numbers, which timer_kind names as /proc/net/tcp does.
    let timer = match header.timer {
        Some(DiagTimer::Retransmit(..)) => 1,
        Some(DiagTimer::KeepAlive(_)) => 2,
        Some(DiagTimer::TimeWait) => 3,
        Some(DiagTimer::Probe(_)) => 4,
        None => 0,
    };
    KernelSocket {
        local: SocketAddr::new(id.source_address, id.source_port),
        peer: SocketAddr::new(id.destination_address, id.destination_port),
        state: crate::kernel::KernelState::from_number(header.state),
        // For a listener these are the backlog and the accept queue, as ss prints them
        // (/proc/net/tcp shows 0 as its tx_queue there).
        send_q: header.send_queue,
        recv_q: header.recv_queue,
        timer: timer_kind(timer).map(|kind| Timer {
            kind,
            remaining: Duration::from_millis(expires_ms.into()),
        }),
        uid: header.uid,
        inode: header.inode.into(),
        owner: None,
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;
    use netlink_packet_sock_diag::inet::InetResponseHeader;
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    /// The TIME_WAIT socket of proc_net's test table, as sock_diag reports it.
    fn time_wait_response() -> InetResponse {
        InetResponse {
            header: InetResponseHeader {
                family: AF_INET,
                state: 6,
                timer: Some(DiagTimer::TimeWait),
                socket_id: SocketId {
                    source_port: 8000,
                    destination_port: 41186,
                    source_address: Ipv4Addr::new(127, 0, 0, 1).into(),
                    destination_address: Ipv4Addr::new(127, 0, 0, 2).into(),
                    interface_id: 0,
                    cookie: [0; 8],
                },
                recv_queue: 0,
                send_queue: 0,
                uid: 0,
                inode: 0,
            },
            nlas: Default::default(),
        }
    }

    fn expected_time_wait() -> KernelSocket {
        KernelSocket {
            local: "127.0.0.1:8000".parse().unwrap(),
            peer: "127.0.0.2:41186".parse().unwrap(),
            state: crate::kernel::KernelState::TimeWait,
            send_q: 0,
            recv_q: 0,
            timer: Some(Timer {
                kind: "timewait",
                remaining: Duration::from_millis(59_810),
            }),
            uid: 0,
            inode: 0,
            owner: None,
        }
    }

    /// A netlink message of `message_type` around `payload`, as the kernel frames it.
    fn message(message_type: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let length = 16 + payload.len();
        let mut bytes = vec![0; length.next_multiple_of(4)];
        let mut buffer = NetlinkBuffer::new(&mut bytes[..]);
        buffer.set_length(length as u32);
        buffer.set_message_type(message_type);
        buffer.set_sequence_number(seq);
        bytes[16..length].copy_from_slice(payload);
        bytes
    }

    /// The raw payload of the TIME_WAIT socket, with the 59810 ms the crate does not emit.
    fn time_wait_payload() -> Vec<u8> {
        let response = time_wait_response();
        let mut payload = vec![0; response.buffer_len()];
        response.emit(&mut payload);
        payload[EXPIRES_OFFSET..EXPIRES_OFFSET + 4].copy_from_slice(&59_810u32.to_ne_bytes());
        payload
    }

    #[test]
    fn time_wait_socket_converts() {
        let s = kernel_socket(&time_wait_response(), 59_810);
        assert_eq!(s.local, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(s.peer, "127.0.0.2:41186".parse().unwrap());
        assert_eq!(s.state, crate::kernel::KernelState::TimeWait);
        assert_eq!((s.send_q, s.recv_q), (0, 0));
        let timer = s.timer.as_ref().unwrap();
        assert_eq!(timer.kind, "timewait");
        assert_eq!(timer.remaining, Duration::from_millis(59_810));
        assert_eq!(timer.remaining.as_secs_f64(), 59.81);
        assert_eq!(s.uid, 0);
        assert_eq!(s.inode, 0);
        assert_eq!(s.owner, None);
        assert_eq!(s, expected_time_wait());
    }

    #[test]
    fn no_timer_is_none_and_queues_keep_their_sides() {
        let mut response = time_wait_response();
        response.header.state = 8;
        response.header.timer = None;
        response.header.recv_queue = 11;
        response.header.send_queue = 3;
        response.header.inode = 41523;
        let s = kernel_socket(&response, 0);
        assert_eq!(s.state, crate::kernel::KernelState::CloseWait);
        assert_eq!((s.recv_q, s.send_q), (11, 3));
        assert_eq!(s.timer, None);
        assert_eq!(s.inode, 41523);
    }

    #[test]
    fn expires_is_read_from_the_raw_payload() {
        assert_eq!(
            from_payload(&time_wait_payload()),
            Some(expected_time_wait())
        );
    }

    #[test]
    fn datagram_yields_sockets_until_done() {
        let mut datagram = message(SOCK_DIAG_BY_FAMILY, 7, &time_wait_payload());
        // Not a socket: skipped, not an error.
        datagram.extend(message(SOCK_DIAG_BY_FAMILY, 7, &[AF_INET, 6, 3]));
        // Another request's reply: ignored.
        datagram.extend(message(NLMSG_DONE, 6, &0i32.to_ne_bytes()));
        let mut out = Vec::new();
        assert!(!read_datagram(&datagram, 7, &mut out).unwrap());
        assert_eq!(out, [expected_time_wait()]);
        let done = message(NLMSG_DONE, 7, &0i32.to_ne_bytes());
        assert!(read_datagram(&done, 7, &mut out).unwrap());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn netlink_errors_become_io_errors() {
        let mut out = Vec::new();
        let mut nack = (-libc::EPERM).to_ne_bytes().to_vec();
        nack.extend([0; 16]);
        let e = read_datagram(&message(NLMSG_ERROR, 1, &nack), 1, &mut out).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let failed = message(NLMSG_DONE, 1, &(-libc::EINTR).to_ne_bytes());
        let e = read_datagram(&failed, 1, &mut out).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINTR));
        // A length field beyond the datagram.
        let mut truncated = message(NLMSG_DONE, 1, &0i32.to_ne_bytes());
        truncated[0] = 200;
        let e = read_datagram(&truncated, 1, &mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(read_datagram(&[1, 2, 3], 1, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn dump_lists_a_listener_and_both_ends_of_a_connection() {
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("TEARDOWN_REQUIRE_ROOT").as_deref() != Ok("1"),
                "dump_lists_a_listener_and_both_ends_of_a_connection needs root and \
                 TEARDOWN_REQUIRE_ROOT=1 is set"
            );
            eprintln!("skipped: needs root");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = TcpStream::connect(server).unwrap();
        let (_accepted, client_addr) = listener.accept().unwrap();
        assert_eq!(client_addr, client.local_addr().unwrap());

        let sockets = dump().unwrap();
        let find = |local: SocketAddr, peer: SocketAddr, state: &str| {
            sockets
                .iter()
                .find(|s| s.local == local && s.peer == peer && s.state.name() == state)
                .unwrap_or_else(|| panic!("no {state} {local} -> {peer} in {sockets:#?}"))
        };
        let unspecified = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
        for s in [
            find(server, unspecified, "LISTEN"),
            find(client_addr, server, "ESTABLISHED"),
            find(server, client_addr, "ESTABLISHED"),
        ] {
            assert_eq!(s.uid, 0, "{s:?}");
            assert_ne!(s.inode, 0, "{s:?}");
            assert_eq!(s.owner, None);
        }
    }
}
