//! Sequence numbers compared modulo 2^32 (RFC 9293 §3.4).

use std::fmt;
use std::ops::{Add, Sub};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// `self` comes after or equals `other` in sequence space (wrapping).
    pub fn after_or_eq(self, other: SeqNum) -> bool {
        (self.0.wrapping_sub(other.0) as i32) >= 0
    }
}

impl Add<u32> for SeqNum {
    type Output = SeqNum;
    fn add(self, rhs: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(rhs))
    }
}

impl Sub for SeqNum {
    type Output = u32;
    /// The distance from `rhs` to `self`: relative sequence numbers.
    fn sub(self, rhs: SeqNum) -> u32 {
        self.0.wrapping_sub(rhs.0)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_wraps_around() {
        assert!(SeqNum(5).after_or_eq(SeqNum(u32::MAX - 2)));
        assert!(!SeqNum(u32::MAX - 2).after_or_eq(SeqNum(5)));
        assert!(SeqNum(7).after_or_eq(SeqNum(7)));
        assert_eq!(SeqNum(u32::MAX) + 2, SeqNum(1));
        assert_eq!(SeqNum(1) - SeqNum(u32::MAX), 2);
    }
}
