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
    let packet = Source::open(&ng[..], "f")
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
    let options = [&flags[..], &comment("old one"), &person].concat();
    let mut kept = Vec::new();
    push_options_without(&options, false, |c| c == "absent", &mut kept);
    assert_eq!(kept, options);
    kept.clear();
    push_options_without(&options, false, |c| c == "old one", &mut kept);
    assert_eq!(kept, [&flags[..], &person].concat());
}

/// A reader that hands out at most `chunk` bytes a call, as a pipe may.
struct Trickle<'a> {
    bytes: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// What pcap-file's reader made of a pcap file (the code `Source` had before it read the
/// records itself): every packet, then the error, as `Source` gives them.
fn pcap_file_reference(bytes: &[u8], chunk: usize) -> Vec<Result<Item, InputError>> {
    use pcap_file::pcap::{PcapReadError, PcapReader};
    let name = "f";
    let count = Rc::new(Count::default());
    let mut input = Counted::new(Trickle { bytes, chunk }, Rc::clone(&count));
    let error = |offset: u64, what: String, cut_at: Option<u64>| InputError {
        file: name.into(),
        offset,
        what,
        cut_at,
    };
    // What `Source::open` tells from the first bytes (these tests keep the magic number).
    if input.prime().unwrap().len() < 4 {
        let what = "empty, or shorter than a capture file's header";
        return vec![Err(error(0, what.into(), None))];
    }
    let mut r = match PcapReader::new(BufReader::with_capacity(1 << 16, input)) {
        Ok(r) => r,
        Err(e) => {
            return vec![Err(error(
                0,
                format!("not a valid pcap header ({e})"),
                None,
            ))];
        }
    };
    let h = r.header();
    let nanos = h.ts_resolution == PcapTsResolution::NanoSecond;
    let linktype = u32::from(h.datalink) & 0xffff;
    let mut offset = 24u64;
    let mut out = Vec::new();
    while let Some(p) = r.next_raw_packet() {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                let eof = matches!(&e, PcapReadError::Io(io)
                    if io.kind() == io::ErrorKind::UnexpectedEof);
                out.push(Err(if eof && count.eof.get() {
                    let at = count.bytes.get();
                    error(
                        offset,
                        format!(
                            "the file ends in the middle of this packet record, at byte {at} \
                             (cut short, or the packet record claims more bytes than the file \
                             holds)"
                        ),
                        Some(at),
                    )
                } else {
                    error(offset, describe(&format!("{e:?}")), None)
                }));
                break;
            }
        };
        if p.incl_len > p.orig_len {
            let what = format!(
                "a packet claims {} captured bytes of {} on the wire: captured cannot exceed \
                 original",
                p.incl_len, p.orig_len
            );
            out.push(Err(error(offset, what, None)));
            break;
        }
        let unit = if nanos { 1_000_000_000 } else { 1_000_000 };
        out.push(Ok(Item::Packet(InPacket {
            ts: Duration::new(
                u64::from(p.ts_sec),
                if nanos {
                    p.ts_frac
                } else {
                    p.ts_frac.saturating_mul(1000)
                },
            ),
            raw_ts: u64::from(p.ts_sec) * unit + u64::from(p.ts_frac),
            interface: 0,
            linktype,
            data: p.data.to_vec(),
            orig_len: p.orig_len,
            options: Vec::new(),
            comments: Vec::new(),
            big_endian: cfg!(target_endian = "big"),
            offset,
        })));
        offset += 16 + u64::from(p.incl_len);
    }
    out
}

/// What `Source` makes of `bytes` handed out `chunk` bytes at a time.
fn source_items(bytes: &[u8], chunk: usize) -> Vec<Result<Item, InputError>> {
    match Source::open(Trickle { bytes, chunk }, "f") {
        Ok(src) => src.collect(),
        Err(e) => vec![Err(e)],
    }
}

fn assert_as_pcap_file(bytes: &[u8], chunks: &[usize], what: &str) {
    for &chunk in chunks {
        let (got, want) = (
            source_items(bytes, chunk),
            pcap_file_reference(bytes, chunk),
        );
        assert!(
            got == want,
            "{what}, {chunk}-byte reads: {} items, want {}; last {:?}, want {:?}",
            got.len(),
            want.len(),
            got.last().map(|i| i.as_ref().err()),
            want.last().map(|i| i.as_ref().err()),
        );
    }
}

/// A pcap file in either byte order and resolution, of frames of many sizes.
fn varied_pcap(big: bool, nanos: bool) -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::LINUX_SLL2,
        ts_resolution: if nanos {
            PcapTsResolution::NanoSecond
        } else {
            PcapTsResolution::MicroSecond
        },
        endianness: if big {
            Endianness::Big
        } else {
            Endianness::Little
        },
        snaplen: 262_144,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for i in 0..40u32 {
        let data: Vec<u8> = (0..(i * 37) % 1500).map(|b| (b * 7 + i) as u8).collect();
        let ts = Duration::new(1_700_000_000 + u64::from(i), i * 999_999);
        let packet = PcapPacket::new(ts, data.len() as u32 + i % 3, &data[..]).unwrap();
        w.write_packet(&packet).unwrap();
    }
    w.into_inner()
}

#[test]
fn a_pipe_that_gives_a_byte_at_a_time_reads_as_a_file() {
    let frames: [(Duration, &[u8]); 2] = [
        (Duration::new(1_700_000_000, 5), &SYN_FRAME),
        (Duration::new(1_700_000_001, 7), &SYN_FRAME),
    ];
    let pcap = pcap_bytes(false, DataLink::ETHERNET, &frames);
    for (what, file) in [("pcap", pcap), ("pcapng", pcapng_bytes())] {
        let whole = source_items(&file, usize::MAX);
        assert!(
            whole.len() >= 2 && whole.iter().all(Result::is_ok),
            "{what}: {whole:?}"
        );
        for chunk in [1, 2, 3] {
            assert_eq!(
                source_items(&file, chunk),
                whole,
                "{what}, {chunk}-byte reads"
            );
        }
    }
    // Shorter than a magic number: still the one error, whatever the reads.
    for chunk in [1, 2, usize::MAX] {
        let items = source_items(&[0xd4, 0xc3, 0xb2], chunk);
        let [Err(e)] = &items[..] else {
            panic!("{items:?}")
        };
        assert!(
            e.to_string()
                .contains("shorter than a capture file's header"),
            "{e}"
        );
    }
}

#[test]
fn pcap_records_read_as_pcap_file_read_them_whole_cut_or_garbled() {
    // From a byte a read: a pipe may give the magic number in pieces.
    let chunks = [1, 2, 4, 7, 4096, usize::MAX];
    // Whole: the real captures and files of both byte orders and resolutions.
    let real = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/real");
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(real)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(files.len() >= 5);
    for (big, nanos) in [(false, false), (false, true), (true, false), (true, true)] {
        files.push(varied_pcap(big, nanos));
    }
    for (i, file) in files.iter().enumerate() {
        assert_as_pcap_file(file, &chunks, &format!("file {i}"));
        assert!(source_items(file, 4).iter().all(Result::is_ok), "file {i}");
    }
    let file = varied_pcap(true, false);
    // Cut at every byte: in the file header, a record header, a record's data.
    for cut in 0..file.len().min(3000) {
        assert_as_pcap_file(&file[..cut], &[4, usize::MAX], &format!("cut at {cut}"));
    }
    // Every byte of the header and the first records changed: lengths that lie, timestamps
    // out of range, the byte order's magic.
    for at in 4..400 {
        for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut odd = file.clone();
            odd[at] = value;
            assert_as_pcap_file(&odd, &[3, usize::MAX], &format!("byte {at} = {value}"));
        }
    }
    // Garbage after a good header.
    let mut rand = 0x2545_f491_4f6c_dd1du64;
    for n in 0..200 {
        let mut odd = file[..24].to_vec();
        odd.extend((0..n * 13).map(|_| {
            rand ^= rand << 13;
            rand ^= rand >> 7;
            rand ^= rand << 17;
            rand as u8
        }));
        assert_as_pcap_file(&odd, &[5, usize::MAX], &format!("garbage {n}"));
    }
}

#[test]
fn a_pcap_record_larger_than_the_buffer_is_read_or_refused_as_before() {
    let header = pcap_bytes(false, DataLink::ETHERNET, &[]);
    let record = |claimed: u32, data: usize| {
        let mut r = [1u32, 2, claimed, claimed].map(u32::to_le_bytes).concat();
        r.resize(16 + data, 0xab);
        r
    };
    // Larger than the first buffer, smaller than pcap-file's: a packet.
    let two_mib = [&header[..], &record(2 << 20, 2 << 20), &record(3, 3)].concat();
    // Larger than pcap-file's buffer, and the file goes on past it: a block too long...
    let too_long = [&header[..], &record(9_000_000, 8_100_000)].concat();
    // ...or it ends before: a cut.
    let cut = [&header[..], &record(9_000_000, 7_000_000)].concat();
    for (bytes, what) in [(two_mib, "2 MiB"), (too_long, "too long"), (cut, "cut")] {
        assert_as_pcap_file(&bytes, &[65_536, usize::MAX], what);
    }
    let too_long = [&header[..], &record(9_000_000, 8_100_000)].concat();
    let e = source_items(&too_long, usize::MAX)
        .pop()
        .unwrap()
        .unwrap_err();
    assert_eq!((e.offset, e.cut_at), (24, None));
    assert!(e.what.ends_with("(truncated?)"), "{e}");
}

/// A reader that notes where each read starts and how many bytes it asks for.
struct Logged {
    bytes: Vec<u8>,
    at: usize,
    asked: std::sync::Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
}

impl io::Read for Logged {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.asked.lock().unwrap().push((self.at, buf.len()));
        let n = buf.len().min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reading in place, a large record is read to its end and KEPT_READ beyond at most: what
/// is read ahead moves to the next buffer at each hand-over, and a read as large as the
/// record had moved megabytes at every batch after it.
#[test]
fn a_reading_in_place_reads_little_beyond_a_large_record() {
    let big = vec![7u8; 4_000_000];
    // By hand: pcap-file's writer refuses a record beyond 65535 bytes.
    let mut file = pcap_bytes(false, DataLink::ETHERNET, &[]);
    for frame in std::iter::once(&big[..]).chain((0..2000).map(|_| &SYN_FRAME[..])) {
        for word in [1, 0, frame.len() as u32, frame.len() as u32] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        file.extend_from_slice(frame);
    }
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = Logged {
        bytes: file,
        at: 0,
        asked: asked.clone(),
    };
    let mut src = Source::open(reader, "f").unwrap();
    assert!(src.hand_over(&mut Vec::new()));
    let (mut spare, mut packets) = (InPacket::default(), 0);
    loop {
        if src.next_usual().is_some() {
            packets += 1;
            continue;
        }
        match src.next_view(&mut spare) {
            None => break,
            Some(Ok(Next::Packet(_))) => packets += 1,
            Some(Ok(Next::Block(_))) => {}
            Some(Err(e)) => panic!("{e}"),
        }
    }
    assert_eq!(packets, 2001);
    let big_end = 24 + 16 + big.len();
    for &(at, n) in asked.lock().unwrap().iter().filter(|(at, _)| *at < big_end) {
        assert!(
            at + n <= big_end + KEPT_READ,
            "a read at {at} asked for {n} bytes, past the record's end at {big_end}"
        );
    }
}
