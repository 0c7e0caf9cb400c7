//! Ctrl-C, SIGTERM, SIGHUP and SIGQUIT: noted, not fatal, so a run can still write what it
//! captured and remove what it set up.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that interrupted the run, 0 while none has.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // The first one is the one reported.
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
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
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The exit code a shell reports for a process ended by the signal that interrupted this
/// one: 128 + its number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, 131 SIGQUIT).
pub fn exit_code() -> i32 {
    128 + match SIGNAL.load(Ordering::SeqCst) {
        0 => libc::SIGINT,
        s => s,
    }
}
