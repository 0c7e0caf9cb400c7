//! The errors of the edges, and their exit codes. `main` prints them once.

use std::io;

use crate::capture::live::CaptureError;
use crate::netns::NetnsError;
use crate::sockets::SockError;

/// Exit codes, as `--help` documents them.
pub mod exit {
    /// The kernel did what the scenario expects.
    pub const REPRODUCED: i32 = 0;
    /// The kernel did something else.
    pub const DIFFERENT: i32 = 1;
    /// Usage or environment error.
    pub const ERROR: i32 = 2;
    /// Interrupted by Ctrl-C (128 + SIGINT), as shells report it; SIGTERM gives 143 and
    /// SIGHUP 129 (`signals::exit_code`).
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{0}")]
    Usage(String),
    #[error(
        "{addr} is already in use on this host by {holders}; stop that program, pick another \
         --port, or drop --host to run in a private network namespace"
    )]
    PortBusy { addr: String, holders: String },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("the experiment failed: {0}")]
    Socket(#[from] SockError),
    #[error("the capture stopped: {0}")]
    CaptureLost(String),
    #[error("kernel confirmation is not available ({0}); run as root, or drop --require-kernel")]
    KernelUnavailable(String),
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Interrupted => crate::signals::exit_code(),
            _ => exit::ERROR,
        }
    }
}
