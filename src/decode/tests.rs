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

/// What `decode` gave before the fast path: etherparse's strict IPv4 slicer for Ethernet,
/// then the lax one. The fast path must give the same for every frame.
fn reference(linktype: u32, frame: &[u8]) -> Result<Segment, DecodeError> {
    if linktype == link::ETHERNET
        && let Some(seg) = strict_ethernet_ipv4_tcp(frame)
    {
        return Ok(seg);
    }
    decode_lax(linktype, frame)
}

fn strict_ethernet_ipv4_tcp(frame: &[u8]) -> Option<Segment> {
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

/// Every Ethernet frame of the fixtures (tests/data, pcapng and pcap).
fn fixture_frames() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for dir in ["tests/data", "tests/data/real"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
            .collect();
        paths.sort();
        for path in paths {
            let file = std::fs::File::open(&path).unwrap();
            for item in crate::input::Source::open(file, "fixture").unwrap() {
                if let crate::input::Item::Packet(p) = item.unwrap() {
                    assert_eq!(p.linktype, link::ETHERNET, "{}", path.display());
                    frames.push(p.data);
                }
            }
        }
    }
    assert!(frames.len() > 300, "{} frames", frames.len());
    frames
}

/// The IPv4 packet of an Ethernet frame as IPv6 (same TCP bytes, addresses ::ffff:a.b.c.d).
fn as_ipv6(ip4: &[u8]) -> Option<Vec<u8>> {
    let header = usize::from(ip4.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip4.get(2)?, *ip4.get(3)?]));
    let tcp = ip4.get(header..)?;
    let payload = total.checked_sub(header)? as u16;
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend(payload.to_be_bytes());
    ip6.extend([*ip4.get(9)?, 64]);
    for addr in [ip4.get(12..16)?, ip4.get(16..20)?] {
        ip6.extend([0u8; 10]);
        ip6.extend([0xff, 0xff]);
        ip6.extend(addr);
    }
    ip6.extend(tcp);
    Some(ip6)
}

/// The IP packet `ip` under each link header teardown decodes.
fn framings(ip: &[u8], ether_type: u16) -> Vec<(u32, Vec<u8>)> {
    let et = ether_type.to_be_bytes();
    let with = |head: &[u8]| [head, ip].concat();
    let mut ethernet = vec![0u8; 12];
    ethernet.extend(et);
    let mut sll = vec![0, 0, 3, 4, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
    sll.extend(et);
    let mut sll2 = et.to_vec();
    sll2.extend([0, 0, 0, 0, 0, 1, 0, 1, 0, 4, 6, 1, 2, 3, 4, 5, 6, 0]);
    vec![
        (link::ETHERNET, with(&ethernet)),
        (link::LINUX_SLL, with(&sll)),
        (link::LINUX_SLL2, with(&sll2)),
        (link::RAW, ip.to_vec()),
        (link::IPV4, ip.to_vec()),
        (link::IPV6, ip.to_vec()),
        (link::NULL, with(&2u32.to_le_bytes())),
        (link::LOOP, with(&2u32.to_be_bytes())),
    ]
}

/// Every fixture frame, as IPv4 and as IPv6, under every link header.
fn all_framings() -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    for frame in fixture_frames() {
        let ip4 = &frame[14..];
        out.extend(framings(ip4, 0x0800));
        if let Some(ip6) = as_ipv6(ip4) {
            out.extend(framings(&ip6, 0x86dd));
        }
    }
    out
}

#[test]
fn the_fast_path_gives_what_the_general_one_gives_on_every_fixture_frame() {
    let (mut fast_ones, mut all) = (0, 0);
    for (linktype, frame) in all_framings() {
        let got = decode(linktype, &frame);
        assert_eq!(
            got,
            reference(linktype, &frame),
            "link {linktype}: {frame:02x?}"
        );
        assert!(got.is_ok(), "link {linktype}: {frame:02x?}");
        all += 1;
        if let Some(seg) = usual(linktype, &frame).map(|at| {
            if at.v6 {
                at.segment::<true>(&frame)
            } else {
                at.segment::<false>(&frame)
            }
        }) {
            fast_ones += 1;
            assert_eq!(Ok(seg), decode_lax(linktype, &frame), "link {linktype}");
        }
    }
    // Every fixture segment is the usual case, on every link and both IP versions.
    assert_eq!(fast_ones, all);
}

/// Deterministic noise (xorshift), for the odd frames below.
fn noise(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn odd_frames_decode_or_fail_as_before() {
    // A SYN with options, a data segment, a FIN: each framed every way, as IPv4 and IPv6.
    let frames = fixture_frames();
    let mut bases: Vec<Vec<u8>> = vec![SYN_FRAME.to_vec()];
    bases.extend(frames.iter().filter(|f| f.len() > 80).take(2).cloned());
    bases.extend(
        frames
            .iter()
            .filter(|f| f[14 + 20 + 13] & 1 != 0)
            .take(1)
            .cloned(),
    );
    let mut cases = Vec::new();
    for base in &bases {
        cases.extend(framings(&base[14..], 0x0800));
        cases.extend(framings(&as_ipv6(&base[14..]).unwrap(), 0x86dd));
    }
    let mut rand = noise(0x7ea2d0);
    let mut checked = 0;
    let mut check = |linktype: u32, frame: &[u8]| {
        assert_eq!(
            decode(linktype, frame),
            reference(linktype, frame),
            "link {linktype}: {frame:02x?}"
        );
        checked += 1;
    };
    for (linktype, frame) in &cases {
        // Cut at every length: a snaplen, or a broken file.
        for cut in 0..=frame.len() {
            check(*linktype, &frame[..cut]);
        }
        // Every header byte (link, IP, TCP and its options) set to telling values.
        for at in 0..frame.len().min(120) {
            for value in [
                0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x0f, 0x10, 0x20, 0x3f,
            ]
            .into_iter()
            .chain([
                0x40, 0x45, 0x46, 0x4f, 0x50, 0x60, 0x80, 0x86, 0xdd, 0xf0, 0xff,
            ])
            .chain([frame[at] ^ 0x01, frame[at] ^ 0x80])
            {
                let mut odd = frame.clone();
                odd[at] = value;
                check(*linktype, &odd);
            }
        }
        // Random bytes over random places, a few at a time.
        for _ in 0..300 {
            let mut odd = frame.clone();
            for _ in 0..1 + rand() % 4 {
                let at = (rand() % odd.len() as u64) as usize;
                odd[at] = rand() as u8;
            }
            check(*linktype, &odd);
        }
    }
    // Link types that are not decoded at all.
    check(9999, &SYN_FRAME);
    assert!(checked > 100_000, "{checked}");
}

/// The SYN options as etherparse's iterator reads them (what `decode` did before, and does
/// for the odd frames).
fn reference_options(opts: &[u8]) -> TcpOptions {
    etherparse_options(etherparse::TcpOptionsIterator::from_slice(opts))
}

#[test]
fn syn_options_read_as_etherparse_reads_them() {
    let mut rand = noise(0x5eed);
    // Kinds and sizes near the valid ones, so that most strings get past their first option.
    let kinds = [0u8, 1, 1, 2, 3, 4, 5, 8, 8, 9, 30, 254];
    let sizes = [0u8, 1, 2, 3, 4, 9, 10, 11, 18, 26, 34, 40];
    let mut parsed = 0;
    for _ in 0..200_000 {
        let mut opts = Vec::new();
        for _ in 0..rand() % 8 {
            let kind = kinds[(rand() % kinds.len() as u64) as usize];
            opts.push(kind);
            if kind > 1 {
                let proper = match kind {
                    2 => 4,
                    3 => 3,
                    4 => 2,
                    5 => [10, 18, 26, 34][(rand() % 4) as usize],
                    8 => 10,
                    _ => sizes[(rand() % sizes.len() as u64) as usize],
                };
                let size = if rand().is_multiple_of(8) {
                    sizes[(rand() % sizes.len() as u64) as usize]
                } else {
                    proper
                };
                opts.push(size);
                opts.extend((2..size).map(|_| rand() as u8));
            }
        }
        opts.truncate((rand() % 48) as usize);
        let got = syn_options(&opts);
        assert_eq!(got, reference_options(&opts), "{opts:02x?}");
        parsed += usize::from(got.mss.is_some() && got.timestamp.is_some() && !got.unparsed);
    }
    assert!(parsed > 1000, "{parsed}");
    // Linux's own layout (MSS, SACK permitted, timestamps, NOP, wscale), whole and with a
    // byte changed or cut off.
    for _ in 0..20_000 {
        let mut opts = vec![2, 4, rand() as u8, rand() as u8, 4, 2, 8, 10];
        opts.extend((0..8).map(|_| rand() as u8));
        opts.extend([1, 3, 3, rand() as u8]);
        match rand() % 3 {
            0 => {}
            1 => {
                let at = (rand() % 20) as usize;
                opts[at] = [0, 1, 2, 3, 4, 5, 8, 10, rand() as u8][(rand() % 9) as usize];
            }
            _ => opts.truncate((rand() % 20) as usize),
        }
        assert_eq!(syn_options(&opts), reference_options(&opts), "{opts:02x?}");
    }
}
