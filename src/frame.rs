//! Plain data of the core: a captured frame and the capture's counters. Every front makes
//! them (the ring, the file reader, a test), the core reads them; none of it needs a socket.

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

/// Kernel counters of the capture socket (`PACKET_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets the socket received (including the dropped ones).
    pub received: u64,
    /// Packets dropped because the socket buffer was full.
    pub dropped: u64,
}
