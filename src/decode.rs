//! Frames → TCP segments (etherparse). A frame that is not TCP, or that does not parse,
//! is kept and described, never dropped.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use etherparse::{TcpOptionElement, TransportSlice};

use crate::tcp::{Flags, Seg, SeqNum};

/// One decoded TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub flags: Flags,
    pub seq: SeqNum,
    pub ack: SeqNum,
    pub window: u16,
    /// Payload bytes, from the IP length (not the captured length).
    pub len: u32,
    /// Payload bytes in the capture (less than `len` when a snaplen cut the packet).
    pub captured: u32,
    pub options: TcpOptions,
}

impl Segment {
    /// What the state machine needs of it.
    pub fn seg(&self) -> Seg {
        Seg {
            flags: self.flags,
            seq: self.seq,
            ack: self.ack,
            len: self.len,
        }
    }
}

/// The TCP options a reader of a handshake cares about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr), RFC 7323.
    pub timestamp: Option<(u32, u32)>,
    /// The options iterator stopped at an unknown or broken option.
    pub unparsed: bool,
}

impl fmt::Display for TcpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(mss) = self.mss {
            parts.push(format!("mss {mss}"));
        }
        if self.sack_permitted {
            parts.push("sackOK".to_string());
        }
        if let Some((val, ecr)) = self.timestamp {
            parts.push(format!("TS val {val} ecr {ecr}"));
        }
        if let Some(ws) = self.wscale {
            parts.push(format!("wscale {ws}"));
        }
        if self.unparsed {
            parts.push("(options not fully parsed)".to_string());
        }
        f.write_str(&parts.join(", "))
    }
}

/// Why a frame is not a TCP segment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not TCP: {0}")]
    NotTcp(String),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("link type {0} is not one teardown decodes")]
    UnsupportedLink(u32),
}

/// LINKTYPE_* values teardown decodes (tcpdump.org/linktypes.html).
pub mod link {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const RAW: u32 = 101;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;

    pub fn supported(linktype: u32) -> bool {
        matches!(
            linktype,
            NULL | ETHERNET | RAW | LOOP | LINUX_SLL | IPV4 | IPV6 | LINUX_SLL2
        )
    }
}

/// Decodes a frame of link type `linktype`: Ethernet (VLAN tags too), Linux cooked SLL and
/// SLL2, raw IPv4/IPv6, BSD loopback. A segment cut by a snaplen still decodes, with its
/// captured payload shorter than its length.
pub fn decode(linktype: u32, frame: &[u8]) -> Result<Segment, DecodeError> {
    if linktype == link::ETHERNET
        && let Some(seg) = ethernet_ipv4_tcp(frame)
    {
        return Ok(seg);
    }
    decode_lax(linktype, frame)
}

/// The usual case, Ethernet → IPv4 (not a fragment) → TCP with a whole header, read straight
/// from the bytes: the general slicer costs more than the rest of a pass over a file. Anything
/// else (VLAN, IPv6, fragments, errors) returns None and goes the general way.
fn ethernet_ipv4_tcp(frame: &[u8]) -> Option<Segment> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = etherparse::Ipv4HeaderSlice::from_slice(frame.get(14..)?).ok()?;
    if ip.protocol() != etherparse::IpNumber::TCP || ip.is_fragmenting_payload() {
        return None;
    }
    let start = 14 + ip.slice().len();
    let end = (14 + ip.total_len() as usize).min(frame.len());
    let tcp = etherparse::TcpSlice::from_slice(frame.get(start..end)?).ok()?;
    let mut seg = tcp_segment(&tcp, ip.source_addr().into(), ip.destination_addr().into());
    let ip_payload = (ip.total_len() as usize).checked_sub(ip.slice().len())?;
    if let Some(len) = ip_payload.checked_sub(tcp.header_slice().len()) {
        seg.len = seg.captured.max(len as u32);
    }
    Some(seg)
}

fn decode_lax(linktype: u32, frame: &[u8]) -> Result<Segment, DecodeError> {
    use etherparse::{EtherType, LaxSlicedPacket};
    let short = || {
        DecodeError::Malformed(format!(
            "{} bytes: shorter than its link header",
            frame.len()
        ))
    };
    let packet = match linktype {
        link::ETHERNET => LaxSlicedPacket::from_ethernet(frame)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?,
        // SLL: the protocol is at bytes 14-15 (etherparse refuses loopback's ARPHRD).
        link::LINUX_SLL => {
            let proto = frame.get(14..16).ok_or_else(short)?;
            LaxSlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([proto[0], proto[1]])),
                &frame[16..],
            )
        }
        link::LINUX_SLL2 => {
            let proto = frame.get(0..2).ok_or_else(short)?;
            let rest = frame.get(20..).ok_or_else(short)?;
            LaxSlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([proto[0], proto[1]])),
                rest,
            )
        }
        link::RAW | link::IPV4 | link::IPV6 => {
            LaxSlicedPacket::from_ip(frame).map_err(|e| DecodeError::Malformed(e.to_string()))?
        }
        // The BSD loopback header: the address family, in the capturing host's byte order
        // (NULL) or in network order (LOOP).
        link::NULL | link::LOOP => {
            let rest = frame.get(4..).ok_or_else(short)?;
            LaxSlicedPacket::from_ip(rest).map_err(|e| DecodeError::Malformed(e.to_string()))?
        }
        other => return Err(DecodeError::UnsupportedLink(other)),
    };
    from_lax(&packet)
}

fn from_lax(packet: &etherparse::LaxSlicedPacket<'_>) -> Result<Segment, DecodeError> {
    use etherparse::LaxNetSlice;
    let (src_ip, dst_ip, ip_payload_len): (IpAddr, IpAddr, Option<usize>) = match &packet.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let total = h.total_len() as usize;
            let payload = total.checked_sub(h.ihl() as usize * 4);
            (h.source_addr().into(), h.destination_addr().into(), payload)
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            // The extension headers (if any) come out of the payload length.
            let exts = ip.extensions().slice().len();
            let payload = (h.payload_length() as usize).checked_sub(exts);
            (h.source_addr().into(), h.destination_addr().into(), payload)
        }
        Some(LaxNetSlice::Arp(_)) => return Err(DecodeError::NotTcp("ARP".into())),
        None => {
            return Err(match &packet.stop_err {
                Some((e, _)) => DecodeError::Malformed(e.to_string()),
                None => DecodeError::NotTcp("no IP header".into()),
            });
        }
    };
    let tcp = match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        Some(TransportSlice::Udp(_)) => return Err(DecodeError::NotTcp("UDP".into())),
        Some(TransportSlice::Icmpv4(_)) | Some(TransportSlice::Icmpv6(_)) => {
            return Err(DecodeError::NotTcp("ICMP".into()));
        }
        Some(_) => return Err(DecodeError::NotTcp("another transport protocol".into())),
        None => {
            return Err(match &packet.stop_err {
                Some((e, _)) => DecodeError::Malformed(e.to_string()),
                None => DecodeError::NotTcp("IP without a TCP header".into()),
            });
        }
    };
    let mut seg = tcp_segment(tcp, src_ip, dst_ip);
    let header = tcp.header_slice().len();
    if let Some(len) = ip_payload_len.and_then(|p| p.checked_sub(header)) {
        seg.len = seg.captured.max(len as u32);
    }
    Ok(seg)
}

/// Decodes an Ethernet frame (what `lo` and a veth deliver, zero MACs on `lo`).
pub fn decode_ethernet(frame: &[u8]) -> Result<Segment, DecodeError> {
    decode(link::ETHERNET, frame)
}

fn tcp_segment(tcp: &etherparse::TcpSlice<'_>, src_ip: IpAddr, dst_ip: IpAddr) -> Segment {
    let mut flags = Flags(0);
    for (set, flag) in [
        (tcp.fin(), Flags::FIN),
        (tcp.syn(), Flags::SYN),
        (tcp.rst(), Flags::RST),
        (tcp.psh(), Flags::PSH),
        (tcp.ack(), Flags::ACK),
        (tcp.urg(), Flags::URG),
        (tcp.ece(), Flags::ECE),
        (tcp.cwr(), Flags::CWR),
    ] {
        if set {
            flags = flags | flag;
        }
    }
    let mut options = TcpOptions::default();
    // MSS, window scale and SACK-permitted only mean something on a SYN; the rest of a long
    // capture is not worth the walk (RFC 9293 §3.1, RFC 7323 §2.2).
    let walk = if flags.syn() {
        tcp.options_iterator()
    } else {
        etherparse::TcpOptionsIterator::from_slice(&[])
    };
    for option in walk {
        match option {
            Ok(TcpOptionElement::MaximumSegmentSize(mss)) => options.mss = Some(mss),
            Ok(TcpOptionElement::WindowScale(ws)) => options.wscale = Some(ws),
            Ok(TcpOptionElement::SelectiveAcknowledgementPermitted) => {
                options.sack_permitted = true
            }
            Ok(TcpOptionElement::Timestamp(val, ecr)) => options.timestamp = Some((val, ecr)),
            Ok(_) => {}
            Err(_) => {
                options.unparsed = true;
                break;
            }
        }
    }
    Segment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        flags,
        seq: SeqNum(tcp.sequence_number()),
        ack: SeqNum(tcp.acknowledgment_number()),
        window: tcp.window_size(),
        len: tcp.payload().len() as u32,
        captured: tcp.payload().len() as u32,
        options,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A SYN from 127.0.0.2:40000 to 127.0.0.1:8000 as `lo` delivers it: zero MACs,
    /// IPv4, TCP with MSS 65495, SACK permitted, timestamps and window scale 7.
    pub(crate) const SYN_FRAME: [u8; 74] = [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00, // Ethernet
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, // IPv4
        127, 0, 0, 2, 127, 0, 0, 1, //
        0x9c, 0x40, 0x1f, 0x40, // ports 40000 → 8000
        0x00, 0x00, 0x03, 0xe8, // seq 1000
        0x00, 0x00, 0x00, 0x00, // ack 0
        0xa0, 0x02, 0xff, 0xd7, // data offset 10, SYN, window 65495
        0x00, 0x00, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0xff, 0xd7, // MSS 65495
        0x04, 0x02, // SACK permitted
        0x08, 0x0a, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, // TS val 100 ecr 0
        0x01, // NOP
        0x03, 0x03, 0x07, // wscale 7
    ];

    #[test]
    fn decodes_a_loopback_syn() {
        let seg = decode_ethernet(&SYN_FRAME).unwrap();
        assert_eq!(seg.src, "127.0.0.2:40000".parse().unwrap());
        assert_eq!(seg.dst, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(seg.flags, Flags::SYN);
        assert_eq!(seg.seq, SeqNum(1000));
        assert_eq!(seg.len, 0);
        assert_eq!(seg.window, 65495);
        assert_eq!(
            seg.options.to_string(),
            "mss 65495, sackOK, TS val 100 ecr 0, wscale 7"
        );
    }

    #[test]
    fn payload_length_and_flag_set() {
        let mut frame = SYN_FRAME[..54].to_vec();
        frame[14 + 2..14 + 4].copy_from_slice(&(40u16 + 11).to_be_bytes()); // IP total length
        frame[14 + 20 + 12] = 0x50; // data offset 5
        frame[14 + 20 + 13] = 0x19; // FIN, PSH, ACK
        frame.extend_from_slice(b"I am server");
        let seg = decode_ethernet(&frame).unwrap();
        assert_eq!(seg.flags, Flags::FIN | Flags::PSH | Flags::ACK);
        assert_eq!(seg.len, 11);
        assert_eq!(seg.seg().seq_space(), 12);
    }

    #[test]
    fn truncated_frame_is_malformed_not_a_panic() {
        let err = decode_ethernet(&SYN_FRAME[..40]).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
    }

    #[test]
    fn udp_is_not_tcp() {
        let mut frame = SYN_FRAME[..42].to_vec();
        frame[14 + 9] = 17; // UDP
        frame[14 + 2..14 + 4].copy_from_slice(&28u16.to_be_bytes());
        frame[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(
            decode_ethernet(&frame).unwrap_err(),
            DecodeError::NotTcp("UDP".into())
        );
    }
}
