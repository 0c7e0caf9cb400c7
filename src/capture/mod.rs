//! Frame sources: the live capture on an interface (the TPACKET_V3 ring, its filter compiled
//! by libpcap).

pub mod filter;
pub mod live;
pub mod ring;
pub mod session;
pub mod stamps;

pub use crate::frame::{Frame, Stats};
pub use live::CaptureError;

/// Where a front's frames come from: the live ring, or a list of frames in a test (the
/// file reader is `input`'s). The seam that lets `run`'s bench be driven without a socket.
pub trait FrameSource: Send {
    /// Appends the frames that came within the source's poll time (none, when nothing came).
    fn next_frames(&mut self, out: &mut Vec<Frame>) -> Result<(), CaptureError>;
    /// The kernel's received and dropped counts (a fake's are its own).
    fn stats(&mut self) -> Stats;
}

impl FrameSource for ring::Ring {
    fn next_frames(&mut self, out: &mut Vec<Frame>) -> Result<(), CaptureError> {
        self.next_batch(&mut |f| {
            out.push(Frame {
                ts: f.ts,
                data: f.data.to_vec(),
                orig_len: f.orig_len,
            })
        })
        .map(drop)
    }

    fn stats(&mut self) -> Stats {
        ring::Ring::stats(self)
    }
}

/// Frames given in advance, handed out a few at a time: a source for tests.
pub struct Given {
    pub frames: std::collections::VecDeque<Frame>,
    pub per_call: usize,
}

impl FrameSource for Given {
    fn next_frames(&mut self, out: &mut Vec<Frame>) -> Result<(), CaptureError> {
        let n = self.per_call.max(1).min(self.frames.len());
        out.extend(self.frames.drain(..n));
        if n == 0 {
            // Nothing left: as a ring whose poll passed.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    fn stats(&mut self) -> Stats {
        Stats::default()
    }
}
