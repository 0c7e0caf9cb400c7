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
