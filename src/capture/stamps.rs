//! Kernel receive timestamps are switched on for the whole system by a static key that flips
//! *later* (deferred work) when the first socket asks for them: packets that arrive before
//! carry none, and a capture then stamps them with the time it read them. This waits until
//! stamps are live, and keeps them on while the guard lives.

use std::io;
use std::mem;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Holds the timestamping switch on; drop it when the capture is over.
pub struct StampsOn {
    _socket: UdpSocket,
}

/// Asks for receive timestamps, then sends itself datagrams over loopback until one comes
/// back stamped at its arrival rather than when it was read (2 ms later). Needs `lo` up.
pub fn switch_on() -> io::Result<(StampsOn, bool)> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let on: libc::c_int = 1;
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let me = socket.local_addr()?;
    for _ in 0..200 {
        let sent = now();
        socket.send_to(b"t", me)?;
        std::thread::sleep(Duration::from_millis(2));
        match received_stamp(&socket)? {
            Some(stamp) if stamp < sent + Duration::from_millis(1) => {
                return Ok((StampsOn { _socket: socket }, true));
            }
            _ => {}
        }
    }
    Ok((StampsOn { _socket: socket }, false))
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The SCM_TIMESTAMPNS of the next datagram.
fn received_stamp(socket: &UdpSocket) -> io::Result<Option<Duration>> {
    let mut data = [0u8; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    if unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) } < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(None),
            _ => Err(e),
        };
    }
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_TIMESTAMPNS {
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            return Ok(Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)));
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_come_on_and_are_arrival_times() {
        // Needs only a loopback address, no privilege.
        let Ok((_on, live)) = switch_on() else {
            eprintln!("skipped: no loopback here");
            return;
        };
        assert!(live, "receive timestamps never became arrival times");
    }
}
