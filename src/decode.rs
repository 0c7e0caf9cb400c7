//! Frames → TCP segments (etherparse). A frame that is not TCP, or that does not parse,
//! is kept and described, never dropped.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
    match usual(linktype, frame) {
        // Built where it is returned: a copy of the segment showed in the profile.
        Some(at) if at.v6 => Ok(at.segment::<true>(frame)),
        Some(at) => Ok(at.segment::<false>(frame)),
        None => decode_lax(linktype, frame),
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

#[inline(always)]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Where the parts of a frame of the usual case lie (byte offsets into it).
#[derive(Clone, Copy)]
struct Usual {
    ip: usize,
    v6: bool,
    tcp: usize,
    /// The TCP header's length.
    header: usize,
    /// Where the captured TCP payload ends.
    end: usize,
    /// The IP payload's length as IP gives it.
    ip_payload: usize,
}

/// The usual case, IPv4 (not a fragment) or IPv6 (no extension header) carrying TCP with a
/// whole header, at the fixed offsets of its link header: read straight from the bytes, for
/// the general slicer cost more than the rest of a pass over a file. It gives what the
/// general way gives, or None (VLAN, extension headers, fragments, errors...) and the
/// general way decides. The tests pin the equivalence.
#[inline(always)]
fn usual(linktype: u32, frame: &[u8]) -> Option<Usual> {
    // The commonest frame of all, Ethernet and IPv4 without options, at constant offsets.
    if linktype == link::ETHERNET
        && let Some(head) = frame.first_chunk::<54>()
        && head[12..15] == [0x08, 0x00, 0x45]
    {
        let total = usize::from(u16::from_be_bytes([head[16], head[17]]));
        let end = (14 + total).min(frame.len());
        let header = usize::from(head[46] >> 4) * 4;
        if total >= 20
            && head[23] == 6
            && head[20] & 0x3f == 0
            && head[21] == 0
            && header >= 20
            && end >= 34 + header
        {
            return Some(Usual {
                ip: 14,
                v6: false,
                tcp: 34,
                header,
                end,
                ip_payload: total - 20,
            });
        }
    }
    // Where IP starts, and the EtherType the link header names (ANY: none, the IP version
    // says). Ethernet first: nearly every capture is.
    const ANY: u32 = u32::MAX;
    let (at, ether) = if linktype == link::ETHERNET {
        (14, u32::from(be16(frame, 12)?))
    } else {
        match linktype {
            link::LINUX_SLL => (16, u32::from(be16(frame, 14)?)),
            link::LINUX_SLL2 => (20, u32::from(be16(frame, 0)?)),
            link::RAW | link::IPV4 | link::IPV6 => (0, ANY),
            link::NULL | link::LOOP => (4, ANY),
            _ => return None,
        }
    };
    let ip = frame.get(at..)?;
    let (v6, start, ip_end, ip_payload) = match (*ip.first()? >> 4, ether) {
        // IPv4 (RFC 791 §3.1): the payload ends at the total length, or where the capture
        // does. Protocol 6, and neither more fragments nor a fragment offset.
        (4, ANY | 0x0800) => {
            let ip: &[u8; 20] = ip.get(..20)?.try_into().ok()?;
            let header = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if header < 20 || total < header || ip[9] != 6 || ip[6] & 0x3f != 0 || ip[7] != 0 {
                return None;
            }
            (false, header, total, total - header)
        }
        // IPv6 (RFC 8200 §3) with TCP as its next header; a zero payload length (a
        // jumbogram) goes the general way.
        (6, ANY | 0x86dd) => {
            let ip: &[u8; 40] = ip.get(..40)?.try_into().ok()?;
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if ip[6] != 6 || payload == 0 {
                return None;
            }
            (true, 40, 40 + payload, payload)
        }
        _ => return None,
    };
    // TCP (RFC 9293 §3.1): a whole header, up to where IP or the capture ends.
    let tcp = ip.get(start..ip_end.min(ip.len()))?;
    let h: &[u8; 20] = tcp.get(..20)?.try_into().ok()?;
    let header = usize::from(h[12] >> 4) * 4;
    if header < 20 || tcp.len() < header {
        return None;
    }
    Some(Usual {
        ip: at,
        v6,
        tcp: at + start,
        header,
        end: at + start + tcp.len(),
        ip_payload,
    })
}

impl Usual {
    #[inline(always)]
    /// The segment, for IPv6 (`V6`) or IPv4: one path each, no branch between them.
    fn segment<const V6: bool>(self, frame: &[u8]) -> Segment {
        let tcp = &frame[self.tcp..self.end];
        let h: &[u8; 20] = tcp[..20].try_into().expect("a whole header");
        let (src_ip, dst_ip) = if V6 {
            let ip: &[u8; 40] = frame[self.ip..self.ip + 40].try_into().expect("IPv6");
            let addr = |at: usize| {
                let b: [u8; 16] = ip[at..at + 16].try_into().expect("16 bytes");
                IpAddr::from(b)
            };
            (addr(8), addr(24))
        } else {
            let ip: &[u8; 20] = frame[self.ip..self.ip + 20].try_into().expect("IPv4");
            let addr = |at: usize| IpAddr::from(Ipv4Addr::from_bits(be32(ip, at)));
            (addr(12), addr(16))
        };
        // The eight flag bits are Flags' own.
        let flags = Flags(h[13]);
        // MSS, window scale and SACK-permitted only mean something on a SYN; the rest of a
        // long capture is not worth the walk (RFC 9293 §3.1, RFC 7323 §2.2).
        let options = if flags.syn() {
            syn_options(&tcp[20..self.header])
        } else {
            TcpOptions::default()
        };
        let captured = (tcp.len() - self.header) as u32;
        let len = match self.ip_payload.checked_sub(self.header) {
            Some(len) => captured.max(len as u32),
            None => captured,
        };
        Segment {
            src: SocketAddr::new(src_ip, u16::from_be_bytes([h[0], h[1]])),
            dst: SocketAddr::new(dst_ip, u16::from_be_bytes([h[2], h[3]])),
            flags,
            seq: SeqNum(be32(h, 4)),
            ack: SeqNum(be32(h, 8)),
            window: u16::from_be_bytes([h[14], h[15]]),
            len,
            captured,
            options,
        }
    }
}

/// The options of a SYN, as etherparse's iterator reads them: it stops at the end-of-options
/// or at the end, and at an unknown kind or a size that is not the kind's (`unparsed`).
#[inline(never)]
fn syn_options(opts: &[u8]) -> TcpOptions {
    // What Linux sends on nearly every SYN and SYN-ACK: MSS, SACK permitted, timestamps,
    // NOP, window scale, in that order.
    if let Ok(o) = <&[u8; 20]>::try_from(opts)
        && [o[0], o[1], o[4], o[5], o[6], o[7], o[16], o[17], o[18]] == [2, 4, 4, 2, 8, 10, 1, 3, 3]
    {
        return TcpOptions {
            mss: Some(u16::from_be_bytes([o[2], o[3]])),
            wscale: Some(o[19]),
            sack_permitted: true,
            timestamp: Some((be32(o, 8), be32(o, 12))),
            unparsed: false,
        };
    }
    let mut opts = opts;
    let mut out = TcpOptions::default();
    while let Some(&kind) = opts.first() {
        // The size a kind must have (SACK: one to four blocks, RFC 2018 §3).
        let size = match kind {
            0 => break,
            1 => 1,
            2 => 4,
            3 => 3,
            4 => 2,
            8 => 10,
            5 => match opts.get(1) {
                Some(&n @ (10 | 18 | 26 | 34)) => usize::from(n),
                _ => 0,
            },
            _ => 0,
        };
        if size == 0 || opts.len() < size || (size > 1 && usize::from(opts[1]) != size) {
            out.unparsed = true;
            break;
        }
        match kind {
            2 => out.mss = Some(u16::from_be_bytes([opts[2], opts[3]])),
            3 => out.wscale = Some(opts[2]),
            4 => out.sack_permitted = true,
            8 => out.timestamp = Some((be32(opts, 2), be32(opts, 6))),
            _ => {}
        }
        opts = &opts[size..];
    }
    out
}

// Out of line: its slicers' big state would weigh on every call of the usual case.
#[cold]
#[inline(never)]
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

/// The options a reader of a handshake cares about, as etherparse's iterator reads them (the
/// odd frames' way, and what the fast `syn_options` is held to).
fn etherparse_options(walk: etherparse::TcpOptionsIterator<'_>) -> TcpOptions {
    let mut options = TcpOptions::default();
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
    options
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
    // MSS, window scale and SACK-permitted only mean something on a SYN; the rest of a long
    // capture is not worth the walk (RFC 9293 §3.1, RFC 7323 §2.2).
    let options = if flags.syn() {
        etherparse_options(tcp.options_iterator())
    } else {
        TcpOptions::default()
    };
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
pub(crate) mod tests;
