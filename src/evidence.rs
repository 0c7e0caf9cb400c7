//! What a run knows beside the packets, as plain data the annotator and the outputs read:
//! the kernel's word on one endpoint at one packet. Made by `kernel::agree`.

use crate::tcp::State;
use crate::tracker::Role;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The kernel traced the same change on the same segment.
    Agrees,
    /// The kernel traced nothing here, for a reason Linux documents (named in the text).
    Explained,
    /// The kernel says something else.
    Mismatch,
    /// A kernel change with no segment behind it (a timer), placed by time.
    Info,
}

/// What the kernel said about one endpoint at one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub role: Role,
    /// The inferred transition this note speaks of.
    pub inferred: Option<(State, State)>,
    pub verdict: Verdict,
    pub text: String,
}
