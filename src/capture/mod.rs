//! Frame sources: the live capture on an interface (the TPACKET_V3 ring, its filter compiled
//! by libpcap).

pub mod filter;
pub mod live;
pub mod ring;
pub mod session;
pub mod stamps;

pub use live::{LiveCapture, Stats};

use std::time::Duration;

/// One captured frame, link header included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Kernel receive time since the Unix epoch, nanosecond resolution.
    pub ts: Duration,
    pub data: Vec<u8>,
    /// The frame's length on the wire (≥ `data.len()` when cut by a snaplen).
    pub orig_len: u32,
}
