//! Ctrl-C, SIGTERM, SIGHUP and SIGQUIT: noted, not fatal, so a run can still write what it
//! captured and remove what it set up.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handler without SA_RESTART, so a blocking call returns EINTR at once.
pub fn install() {
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = 0;
        // A closed terminal (SIGHUP) and Ctrl-\ (SIGQUIT) must clean up as Ctrl-C does.
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Keeps SIGINT and SIGTERM away from the calling thread (a helper thread), so they reach
/// the main thread and interrupt its blocking calls.
pub fn block_in_this_thread() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
