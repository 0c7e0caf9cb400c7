//! Giving up root after the capture socket is open, before a single packet is parsed: to a
//! named user (`-Z USER`, as tcpdump does), or by dropping every capability.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("-Z {0}: no such user in /etc/passwd")]
    NoSuchUser(String),
    #[error("giving up privileges: {op}: {source}")]
    Io { op: &'static str, source: io::Error },
}

fn check(rc: libc::c_int, op: &'static str) -> Result<(), PrivError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(PrivError::Io {
            op,
            source: io::Error::last_os_error(),
        })
    }
}

/// (uid, gid) of `name` from /etc/passwd.
pub fn lookup_user(name: &str) -> Result<(u32, u32), PrivError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let cols: Vec<&str> = line.split(':').collect();
            (cols.len() > 3 && cols[0] == name)
                .then(|| Some((cols[2].parse().ok()?, cols[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| PrivError::NoSuchUser(name.to_string()))
}

/// Becomes `uid`/`gid` with no supplementary groups; a process that changes its uid away
/// from 0 loses every capability with it.
pub fn become_user(uid: u32, gid: u32) -> Result<(), PrivError> {
    unsafe {
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(libc::setresgid(gid, gid, gid), "setresgid")?;
        check(libc::setresuid(uid, uid, uid), "setresuid")?;
    }
    no_new_privileges()
}

/// Stays the same user but with no capability at all (effective, permitted, inheritable).
pub fn drop_all_capabilities() -> Result<(), PrivError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two 32-bit words of each set.
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(rc as libc::c_int, "capset")?;
    no_new_privileges()
}

/// Nothing this process executes can gain privileges back (setuid binaries, file caps).
fn no_new_privileges() -> Result<(), PrivError> {
    check(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "prctl(PR_SET_NO_NEW_PRIVS)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_users() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        assert!(matches!(
            lookup_user("no-such-user-here"),
            Err(PrivError::NoSuchUser(_))
        ));
    }
}
