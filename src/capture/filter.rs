//! The capture filter teardown honours: `tcp`, `port N`, `host ADDR`, joined by `and` (a
//! subset of tcpdump's syntax). Anything else is refused with what to do instead, never
//! silently ignored.

use std::net::IpAddr;

use crate::decode::{DecodeError, Segment};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub ports: Vec<u16>,
    pub hosts: Vec<IpAddr>,
    /// The expression as given, for the capture's section comment.
    pub text: String,
}

impl Filter {
    pub fn port(port: u16) -> Filter {
        Filter {
            ports: vec![port],
            hosts: Vec::new(),
            text: format!("tcp port {port}"),
        }
    }

    /// Parses `tcp port 8000`, `port 8000 and host 127.0.0.1`, `tcp`.
    pub fn parse(expr: &str) -> Result<Filter, String> {
        let refuse = |what: &str| {
            format!(
                "cannot honour the filter {expr:?} ({what}): teardown understands `tcp`, \
                 `port N` and `host ADDR` joined by `and`; capture without it and filter in \
                 Wireshark"
            )
        };
        let mut filter = Filter {
            text: expr.trim().to_string(),
            ..Filter::default()
        };
        let words: Vec<&str> = expr.split_whitespace().collect();
        let mut i = 0;
        let mut expect_term = true;
        while i < words.len() {
            let w = words[i];
            match (expect_term, w) {
                (true, "tcp") if words.get(i + 1) == Some(&"port") => i += 1,
                (true, "tcp") => {
                    expect_term = false;
                    i += 1;
                }
                (true, "port") => {
                    let n = words
                        .get(i + 1)
                        .ok_or_else(|| refuse("port without a number"))?;
                    let port = n
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| refuse(&format!("{n:?} is not a port")))?;
                    filter.ports.push(port);
                    expect_term = false;
                    i += 2;
                }
                (true, "host") => {
                    let a = words
                        .get(i + 1)
                        .ok_or_else(|| refuse("host without an address"))?;
                    let ip = a
                        .parse::<IpAddr>()
                        .map_err(|_| refuse(&format!("{a:?} is not an IP address")))?;
                    filter.hosts.push(ip);
                    expect_term = false;
                    i += 2;
                }
                (false, "and" | "&&") => {
                    expect_term = true;
                    i += 1;
                }
                (_, other) => return Err(refuse(&format!("`{other}`"))),
            }
        }
        if expect_term && !words.is_empty() {
            return Err(refuse("it ends with `and`"));
        }
        Ok(filter)
    }

    /// Whether a decoded frame passes: TCP only, every port and host term matching.
    pub fn keeps(&self, decoded: &Result<Segment, DecodeError>) -> bool {
        let Ok(seg) = decoded else {
            return false;
        };
        let port_ok = self
            .ports
            .iter()
            .all(|p| seg.src.port() == *p || seg.dst.port() == *p);
        let host_ok = self
            .hosts
            .iter()
            .all(|h| seg.src.ip() == *h || seg.dst.ip() == *h);
        port_ok && host_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::segment;

    #[test]
    fn parses_the_tcpdump_subset() {
        assert_eq!(Filter::parse("tcp port 8000").unwrap().ports, [8000]);
        assert_eq!(Filter::parse("port 8000").unwrap().ports, [8000]);
        let f = Filter::parse("tcp and port 8000 and host 127.0.0.1").unwrap();
        assert_eq!((f.ports.len(), f.hosts.len()), (1, 1));
        assert_eq!(
            Filter::parse("tcp").unwrap(),
            Filter {
                text: "tcp".into(),
                ..Filter::default()
            }
        );
        assert_eq!(Filter::parse("").unwrap().ports, Vec::<u16>::new());
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for expr in [
            "udp",
            "port 8000 or port 9000",
            "not port 22",
            "port",
            "port 0",
            "host localhost",
            "tcp and",
            "src port 80",
        ] {
            let e = Filter::parse(expr).unwrap_err();
            assert!(
                e.starts_with(&format!("cannot honour the filter {expr:?}")),
                "{e}"
            );
            assert!(e.contains("filter in Wireshark"), "{e}");
        }
    }

    #[test]
    fn keeps_matching_tcp_only() {
        let f = Filter::parse("tcp port 8000 and host 127.0.0.2").unwrap();
        assert!(f.keeps(&Ok(segment(true, crate::tcp::Flags::SYN, 1, 0, 0))));
        let other = Filter::parse("port 9000").unwrap();
        assert!(!other.keeps(&Ok(segment(true, crate::tcp::Flags::SYN, 1, 0, 0))));
        assert!(!f.keeps(&Err(DecodeError::NotTcp("UDP".into()))));
        assert!(Filter::default().keeps(&Ok(segment(false, crate::tcp::Flags::ACK, 1, 1, 0))));
    }
}
