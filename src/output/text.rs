//! Numbers and addresses written straight into a line: a busy server's summary is 100k
//! lines, and `format!` with its formatter machinery was a fifth of `summary`'s time.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// `n` in decimal, as `{n}` writes it.
pub fn push_u64(s: &mut String, n: u64) {
    s.push_str(itoa::Buffer::new().format(n));
}

/// `n` left-aligned in `width` columns, as `{n:<width}` writes it.
pub fn push_u64_left(s: &mut String, n: u64, width: usize) {
    let start = s.len();
    push_u64(s, n);
    for _ in s.len() - start..width {
        s.push(' ');
    }
}

/// An address as `{addr}` writes it: `10.0.0.1:80`, `[::1]:80`.
pub fn push_addr(s: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(itoa::Buffer::new().format(octet));
            }
            s.push(':');
            push_u64(s, a.port().into());
        }
        // Rare enough for the formatter (and its compressed zeros and scope ids).
        SocketAddr::V6(_) => {
            let _ = write!(s, "{addr}");
        }
    }
}

/// Seconds with three decimals, rounded to the nearest millisecond (half up), as
/// `{:.3}` writes `d.as_secs_f64()` but for a duration of exactly half a millisecond more,
/// where the float's own error decides that one.
pub fn push_secs3(s: &mut String, d: Duration) {
    let ms = (d.as_nanos() + 500_000) / 1_000_000;
    push_u64(s, (ms / 1000) as u64);
    s.push('.');
    let frac = (ms % 1000) as u64;
    if frac < 100 {
        s.push('0');
    }
    if frac < 10 {
        s.push('0');
    }
    push_u64(s, frac);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_read_as_the_formatter_writes_them() {
        for n in [0u64, 7, 10, 99, 100, 65535, 1_000_000, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
            for width in [0, 3, 6] {
                let mut s = String::new();
                push_u64_left(&mut s, n, width);
                assert_eq!(s, format!("{n:<width$}"));
            }
        }
        for addr in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.2.0.31:443",
            "[::1]:8080",
            "[fe80::1%2]:22",
            "[2001:db8::ff00:42:8329]:80",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut s = String::new();
            push_addr(&mut s, addr);
            assert_eq!(s, addr.to_string());
        }
    }

    #[test]
    fn seconds_read_as_the_formatter_writes_them() {
        for ns in [
            0u64,
            1,
            499_999,
            500_001,
            999_999,
            1_000_000,
            1_234_567,
            59_999_999_999,
            3_600_000_400_000,
            12_345_678_901_234,
        ] {
            let d = Duration::from_nanos(ns);
            let mut s = String::new();
            push_secs3(&mut s, d);
            assert_eq!(s, format!("{:.3}", d.as_secs_f64()), "{ns} ns");
        }
    }
}
