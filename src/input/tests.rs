use std::borrow::Cow;

use super::*;
use crate::decode::tests::SYN_FRAME;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapTsResolution, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
};
use pcap_file::pcapng::blocks::opt_common::CommonOption;
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;

pub(crate) fn pcap_bytes(nanos: bool, linktype: DataLink, frames: &[(Duration, &[u8])]) -> Vec<u8> {
    let header = PcapHeader {
        datalink: linktype,
        ts_resolution: if nanos {
            PcapTsResolution::NanoSecond
        } else {
            PcapTsResolution::MicroSecond
        },
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (ts, data) in frames {
        let packet = PcapPacket::new(*ts, data.len() as u32, *data).unwrap();
        w.write_packet(&packet).unwrap();
    }
    w.into_inner()
}

/// Two sections; the second big-endian with two interfaces, the second in microseconds,
/// and a packet that already has a comment.
pub(crate) fn pcapng_bytes() -> Vec<u8> {
    let ts = Duration::new(1_700_000_000, 123_456_000);
    let mut out = Vec::new();
    for (endianness, second) in [(Endianness::Little, false), (Endianness::Big, true)] {
        let shb = SectionHeaderBlock {
            endianness,
            ..SectionHeaderBlock::default()
        };
        let mut w = PcapNgWriter::with_section_header(Vec::new(), shb).unwrap();
        let idb = |resol| InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfTsResol(resol)],
        };
        w.write_pcapng_block(idb(InterfaceTsResolution::NANO))
            .unwrap();
        if second {
            w.write_pcapng_block(idb(InterfaceTsResolution::MICRO))
                .unwrap();
        }
        let epb = EnhancedPacketBlock {
            interface_id: u32::from(second),
            timestamp: ts,
            original_len: SYN_FRAME.len() as u32,
            data: Cow::Borrowed(&SYN_FRAME[..]),
            options: vec![EnhancedPacketOption::Common(CommonOption::Comment(
                "seen by a person".into(),
            ))],
        };
        w.write_pcapng_block(epb).unwrap();
        out.extend(w.into_inner());
    }
    out
}

fn items(bytes: &[u8]) -> Vec<Result<Item, InputError>> {
    Source::open(bytes, "f").unwrap().collect()
}

#[test]
fn pcap_in_microseconds_and_nanoseconds() {
    for nanos in [false, true] {
        let ts = Duration::new(1_700_000_000, 123_456_000);
        let bytes = pcap_bytes(nanos, DataLink::ETHERNET, &[(ts, &SYN_FRAME)]);
        let src = Source::open(&bytes[..], "f").unwrap();
        assert_eq!(
            src.kind,
            Kind::Pcap {
                linktype: 1,
                snaplen: 65535,
                nanos
            }
        );
        let all: Vec<Item> = src.map(Result::unwrap).collect();
        let Item::Packet(p) = &all[0] else { panic!() };
        assert_eq!(p.ts, ts);
        assert_eq!(
            p.raw_ts,
            if nanos {
                1_700_000_000_123_456_000
            } else {
                1_700_000_000_123_456
            }
        );
        assert_eq!(&p.data[..], &SYN_FRAME[..]);
        assert_eq!(p.offset, 24);
    }
}

#[test]
fn pcapng_sections_interfaces_resolutions_and_comments() {
    let all: Vec<Item> = items(&pcapng_bytes())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let packets: Vec<&InPacket> = all
        .iter()
        .filter_map(|i| match i {
            Item::Packet(p) => Some(p),
            Item::Block(_) => None,
        })
        .collect();
    let blocks = all.iter().filter(|i| matches!(i, Item::Block(_))).count();
    assert_eq!((packets.len(), blocks), (2, 5), "2 SHB + 3 IDB");
    let ts = Duration::new(1_700_000_000, 123_456_000);
    assert_eq!(
        (packets[0].ts, packets[0].big_endian, packets[0].interface),
        (ts, false, 0)
    );
    assert_eq!(
        (packets[1].ts, packets[1].big_endian, packets[1].interface),
        (ts, true, 1)
    );
    assert_eq!(
        packets[1].raw_ts, 1_700_000_000_123_456,
        "microsecond units kept"
    );
    assert_eq!(packets[0].comments, ["seen by a person"]);
    assert_eq!(packets[1].comments, ["seen by a person"]);
    assert_eq!(&packets[1].data[..], &SYN_FRAME[..]);
}

#[test]
fn garbage_gets_an_error_with_its_offset_never_a_panic() {
    let err = |bytes: &[u8]| -> String {
        match Source::open(bytes, "in.pcap") {
            Err(e) => e.to_string(),
            Ok(src) => src
                .filter_map(Result::err)
                .next()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no error".into()),
        }
    };
    assert_eq!(
        err(b""),
        "in.pcap: byte 0: empty, or shorter than a capture file's header"
    );
    assert!(
        err(b"hello world, not a capture")
            .starts_with("in.pcap: byte 0: not a pcap or pcapng file (it starts with 68 65 6c 6c)")
    );
    let good = pcap_bytes(
        false,
        DataLink::ETHERNET,
        &[(Duration::from_secs(1), &SYN_FRAME)],
    );
    let cut = &good[..good.len() - 10];
    assert!(
        err(cut).starts_with(&format!(
            "in.pcap: byte 24: the file ends in the middle of this packet record, at byte {}",
            good.len() - 10
        )),
        "{}",
        err(cut)
    );
    // A packet that claims more captured than original bytes.
    let mut lying = good.clone();
    lying[24 + 12..24 + 16].copy_from_slice(&10u32.to_le_bytes());
    assert!(
        err(&lying).contains("captured cannot exceed original"),
        "{}",
        err(&lying)
    );
    // pcapng: a block length of 4 GiB.
    let mut ng = pcapng_bytes();
    let second_block = u32::from_le_bytes(ng[4..8].try_into().unwrap()) as usize;
    ng[second_block + 4..second_block + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = err(&ng);
    assert!(
        e.starts_with(&format!("in.pcap: byte {second_block}: ")),
        "{e}"
    );
    // Every prefix and many bit flips: errors, never panics.
    let ng = pcapng_bytes();
    for cut in 0..ng.len() {
        let _ = err(&ng[..cut]);
    }
    for i in 0..ng.len() {
        let mut flipped = ng.clone();
        flipped[i] ^= 0x5a;
        let _ = err(&flipped);
    }
}

/// The errors of `bytes` (after its complete packets).
fn first_error(bytes: &[u8]) -> (usize, InputError) {
    let mut packets = 0;
    for item in Source::open(bytes, "f").unwrap() {
        match item {
            Ok(Item::Packet(_)) => packets += 1,
            Ok(Item::Block(_)) => {}
            Err(e) => return (packets, e),
        }
    }
    panic!("no error after {packets} packets");
}

#[test]
fn a_file_cut_short_gives_its_complete_packets_then_says_where_it_ends() {
    let ts = Duration::from_secs(1);
    let three = pcap_bytes(false, DataLink::ETHERNET, &[(ts, &SYN_FRAME[..]); 3]);
    let record = 16 + SYN_FRAME.len();
    // In the third record's header, then in its data.
    for cut in [24 + 2 * record + 5, three.len() - 1] {
        let (packets, e) = first_error(&three[..cut]);
        assert_eq!(packets, 2);
        assert_eq!(
            (e.offset, e.cut_at),
            ((24 + 2 * record) as u64, Some(cut as u64))
        );
    }
    // pcapng: the second section's packet block cut.
    let ng = pcapng_bytes();
    let (packets, e) = first_error(&ng[..ng.len() - 3]);
    assert_eq!((packets, e.cut_at), (1, Some(ng.len() as u64 - 3)));
    assert!(
        e.what
            .starts_with("the file ends in the middle of this block"),
        "{e}"
    );
    // A packet that claims more captured bytes than it had is not a cut.
    let mut lying = three.clone();
    lying[24 + 8..24 + 12].copy_from_slice(&100u32.to_le_bytes());
    let (packets, e) = first_error(&lying);
    assert_eq!((packets, e.cut_at), (0, None), "{e}");
}

#[test]
fn dropping_a_comment_keeps_the_other_options_in_their_order() {
    let ng = pcapng_bytes();
    let mut packet = Source::open(&ng[..], "f")
        .unwrap()
        .find_map(|i| match i.unwrap() {
            Item::Packet(p) => Some(p),
            Item::Block(_) => None,
        })
        .unwrap();
    assert_eq!(packet.comments, ["seen by a person"]);
    let flags = [2u8, 0, 4, 0, 1, 0, 0, 0];
    let comment = |text: &str| {
        let mut o = vec![1u8, 0, text.len() as u8, 0];
        o.extend(text.as_bytes());
        o.resize(o.len() + (4 - text.len() % 4) % 4, 0);
        o
    };
    let person = packet.options.clone();
    packet.options = [&flags[..], &comment("old one"), &person].concat();
    packet.comments = vec!["old one".into(), "seen by a person".into()];
    assert!(!packet.drop_comments(|c| c == "absent"));
    assert!(packet.drop_comments(|c| c == "old one"));
    assert_eq!(packet.options, [&flags[..], &person].concat());
    assert_eq!(packet.comments, ["seen by a person"]);
}
