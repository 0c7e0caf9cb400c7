//! pcapng with teardown's comments: a section comment telling the story, one interface with
//! nanosecond timestamps, a comment and a direction flag on every packet, and the kernel's
//! capture counters in a closing statistics block.

use std::borrow::Cow;
use std::io::{self, Write};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::Endianness;
use pcap_file::pcapng::PcapNgWriter;
#[cfg(test)]
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::blocks::opt_common::CommonOption;
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};

use crate::annotate::Packet;
use crate::frame::Stats;

/// What the file says about itself.
pub struct FileInfo {
    pub section_comment: String,
    pub iface: String,
    pub linktype: DataLink,
}

/// EPB flags, bits 0-1: 01 inbound (`lo` shows only the host-side copy once the
/// outgoing one is ignored).
const INBOUND: u32 = 0b01;
const OUTBOUND: u32 = 0b10;

/// A pcapng file: its section and interface written by pcap-file, its packets put together
/// by `Blocks` (pcap-file's general path costs more per packet than the whole capture may).
pub struct Writer<W: Write> {
    inner: PcapNgWriter<Blocks<W>>,
}

/// Keeps an I/O error as it is (a closed pipe must stay BrokenPipe); the rest become "other".
fn to_io(e: pcap_file::pcapng::PcapNgWriteError) -> io::Error {
    match e {
        pcap_file::pcapng::PcapNgWriteError::Io(io) => io,
        other => io::Error::other(other.to_string()),
    }
}

impl<W: Write> Writer<W> {
    /// Writes the section header and the interface description into a buffer of `capacity`
    /// bytes in front of `out`.
    pub fn new(out: W, capacity: usize, info: &FileInfo) -> io::Result<Writer<W>> {
        let section = SectionHeaderBlock {
            endianness: Endianness::native(),
            major_version: 1,
            minor_version: 0,
            section_length: -1,
            options: vec![
                SectionHeaderOption::Common(CommonOption::Comment(Cow::Borrowed(
                    &info.section_comment,
                ))),
                SectionHeaderOption::UserApplication(Cow::Owned(format!(
                    "teardown {}",
                    env!("CARGO_PKG_VERSION")
                ))),
                SectionHeaderOption::OS(Cow::Owned(os_name())),
            ],
        };
        let out = Blocks::new(out, capacity);
        let mut inner = PcapNgWriter::with_section_header(out, section).map_err(to_io)?;
        let interface = InterfaceDescriptionBlock {
            linktype: info.linktype,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed(&info.iface)),
                InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO),
            ],
        };
        inner.write_pcapng_block(interface).map_err(to_io)?;
        Ok(Writer { inner })
    }

    pub fn write_packet(&mut self, packet: &Packet) -> io::Result<()> {
        let f = &packet.frame;
        self.inner
            .get_mut()
            .frame(f.ts, &f.data, f.orig_len, &packet.comment, false)
    }

    /// The output, for a caller that appends its packets itself (`Blocks::frame`).
    pub fn get_mut(&mut self) -> &mut Blocks<W> {
        self.inner.get_mut()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.get_mut().flush()
    }

    /// Writes the kernel's counters and flushes.
    pub fn finish(mut self, stats: Option<Stats>, at: Duration) -> io::Result<W> {
        if let Some(stats) = stats {
            let block = InterfaceStatisticsBlock {
                interface_id: 0,
                timestamp: at,
                options: vec![
                    InterfaceStatisticsOption::IsbIfRecv(stats.received),
                    InterfaceStatisticsOption::IsbIfDrop(stats.dropped),
                ],
            };
            self.inner.write_pcapng_block(block).map_err(to_io)?;
        }
        self.inner.into_inner().into_inner()
    }
}

/// epb_flags (code 2, 4 bytes), in native byte order: inbound or outbound.
fn direction(outbound: bool) -> [u8; 8] {
    let mut flags = [0u8; 8];
    flags[..2].copy_from_slice(&2u16.to_ne_bytes());
    flags[2..4].copy_from_slice(&4u16.to_ne_bytes());
    flags[4..].copy_from_slice(&(if outbound { OUTBOUND } else { INBOUND }).to_ne_bytes());
    flags
}

/// A packet's Enhanced Packet Block put together in a writer's own buffer (`epb`, one
/// reserve), the one way every front writes one: the annotated file, a live capture, a run.
/// A writer says only where the block goes and what follows it.
pub trait PutBlock: Write {
    /// The buffer to append a block of `room` bytes to (what it held written out first, where
    /// the block does not fit).
    fn room(&mut self, room: usize) -> io::Result<&mut Vec<u8>>;

    /// A block was appended (a full buffer goes on).
    fn put(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// An Enhanced Packet Block (pcapng §4.3) in the given byte order, appended to the
    /// buffer reserved once: the interface, the timestamp in the interface's units, the data
    /// (padded), `options` as they are (already in that byte order), then `comment` as one
    /// more opt_comment. The fixed-size pieces are stored in place, each with the padding (0
    /// to 3 zeros) in front of it (`after_zeros`); only the data, the options and the comment
    /// are copies of their own.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn epb(
        &mut self,
        big: bool,
        interface: u32,
        raw_ts: u64,
        data: &[u8],
        orig_len: u32,
        options: &[u8],
        comment: &str,
    ) -> io::Result<()> {
        let comment = epb_comment(comment);
        let mut options_len = options.len() + 4;
        if !comment.is_empty() {
            options_len += 4 + comment.len() + pad(comment.len());
        }
        let total = 28 + data.len() + pad(data.len()) + options_len + 4;
        let Ok(total32) = u32::try_from(total) else {
            return Err(io::Error::other("a packet too large for a pcapng block"));
        };
        let mut head = [0u8; 28];
        for (i, word) in [
            6u32,
            total32,
            interface,
            (raw_ts >> 32) as u32,
            raw_ts as u32,
            data.len() as u32,
            orig_len.max(data.len() as u32),
        ]
        .into_iter()
        .enumerate()
        {
            head[i * 4..i * 4 + 4].copy_from_slice(&u32_in(big, word));
        }
        // Room for the widest store of a piece past the block's end (`after_zeros`).
        let buf = self.room(total + 16)?;
        buf.reserve(total + 16);
        buf.extend_from_slice(&head);
        buf.extend_from_slice(data);
        // The zeros that pad what came last go in front of the next fixed piece.
        let mut zeros = pad(data.len());
        if !options.is_empty() {
            after_zeros(buf, zeros, []);
            buf.extend_from_slice(options);
            zeros = 0;
        }
        if !comment.is_empty() {
            let mut option = [0u8; 4];
            option[..2].copy_from_slice(&u16_in(big, 1));
            option[2..].copy_from_slice(&u16_in(big, comment.len() as u16));
            after_zeros(buf, zeros, option);
            buf.extend_from_slice(comment);
            zeros = pad(comment.len());
        }
        // opt_endofopt, then the block's length again.
        let mut end = [0u8; 8];
        end[4..].copy_from_slice(&u32_in(big, total32));
        after_zeros(buf, zeros, end);
        self.put()
    }
}

/// A buffer that only grows (the tests').
impl PutBlock for Vec<u8> {
    fn room(&mut self, _: usize) -> io::Result<&mut Vec<u8>> {
        Ok(self)
    }
}

/// A buffered writer whose packets' blocks are appended whole to its buffer (`PutBlock`), the
/// buffer written out when the next block might not fit; other blocks come through `Write`.
/// Five small writes into a `BufWriter` for each packet were a tenth of a busy server's
/// capture. What it holds is written when it is dropped, as a `BufWriter`'s is: a capture
/// that ends on an error keeps the packets it took.
pub struct Blocks<W: Write> {
    buf: Vec<u8>,
    /// None once `into_inner` took it.
    sink: Option<W>,
}

impl<W: Write> Blocks<W> {
    pub fn new(sink: W, capacity: usize) -> Blocks<W> {
        Blocks {
            buf: Vec::with_capacity(capacity),
            sink: Some(sink),
        }
    }

    /// One packet as a live capture has it (pcapng §4.3: native byte order, as the section
    /// header says; timestamps in the interface's nanoseconds; its direction in epb_flags).
    #[inline]
    pub fn frame(
        &mut self,
        ts: Duration,
        data: &[u8],
        orig_len: u32,
        comment: &str,
        outbound: bool,
    ) -> io::Result<()> {
        self.epb(
            cfg!(target_endian = "big"),
            0,
            ts.as_nanos() as u64,
            data,
            orig_len,
            &direction(outbound),
            comment,
        )
    }

    /// Writes out what the buffer holds.
    fn spill(&mut self) -> io::Result<()> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        let done = sink.write_all(&self.buf);
        self.buf.clear();
        done
    }

    /// Everything written and flushed: the sink.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.sink.take().expect("the sink, taken only here"))
    }
}

impl<W: Write> PutBlock for Blocks<W> {
    #[inline]
    fn room(&mut self, room: usize) -> io::Result<&mut Vec<u8>> {
        if self.buf.len() + room > self.buf.capacity() {
            self.spill()?;
        }
        Ok(&mut self.buf)
    }
}

impl<W: Write> Write for Blocks<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > self.buf.capacity() {
            self.spill()?;
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.spill()?;
        match self.sink.as_mut() {
            Some(sink) => sink.flush(),
            None => Ok(()),
        }
    }
}

impl<W: Write> Drop for Blocks<W> {
    fn drop(&mut self) {
        let _ = self.spill();
    }
}

/// `v` in a section's byte order (big-endian where `big`).
pub fn u32_in(big: bool, v: u32) -> [u8; 4] {
    if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    }
}

/// `v` in a section's byte order (big-endian where `big`).
pub fn u16_in(big: bool, v: u16) -> [u8; 2] {
    if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    }
}

/// Appends `zeros` zero bytes (a padding: 0 to 3) and then `piece`, as one store of 16 bytes
/// cut back: a copy of a varying size is a call, and each copy checks the buffer's room.
#[inline(always)]
fn after_zeros<const N: usize>(buf: &mut Vec<u8>, zeros: usize, piece: [u8; N]) {
    const { assert!(N <= 12) };
    let mut word = [0u8; 16];
    word[..N].copy_from_slice(&piece);
    let end = buf.len() + zeros + N;
    buf.extend_from_slice(&(u128::from_le_bytes(word) << (8 * zeros)).to_le_bytes());
    buf.truncate(end);
}

/// Padding to the next 32-bit boundary (pcapng §3).
fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// The comment's bytes as an option holds them: at most 65,532, so its padded length fits.
fn epb_comment(comment: &str) -> &[u8] {
    &comment.as_bytes()[..comment.len().min(u16::MAX as usize - 3)]
}

fn os_name() -> String {
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "Linux".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {}", field(&uts.sysname), field(&uts.release))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::annotate_all;
    use crate::decode::decode_ethernet;
    use crate::frame::Frame;
    use crate::tracker::Tracker;
    use pcap_file::pcapng::{Block, PcapNgReader};

    const SYN: [u8; 74] = crate::decode::tests::SYN_FRAME;

    #[test]
    fn written_file_reads_back_with_comments_times_and_counters() {
        let tracker = Tracker::new();
        let ts = Duration::new(1_764_000_000, 123_456_789);
        let frame = Frame {
            ts,
            data: SYN.to_vec(),
            orig_len: SYN.len() as u32,
        };
        let (packets, _) = annotate_all(tracker, [frame], decode_ethernet);
        let packet = packets.into_iter().next().unwrap();
        let info = FileInfo {
            section_comment: "teardown run active-close: the story".into(),
            iface: "lo".into(),
            linktype: DataLink::ETHERNET,
        };
        let stats = Stats {
            received: 1,
            dropped: 0,
        };
        let mut writer = Writer::new(Vec::new(), 1 << 16, &info).unwrap();
        writer.write_packet(&packet).unwrap();
        let bytes = writer.finish(Some(stats), ts).unwrap();

        let mut reader = PcapNgReader::new(&bytes[..]).unwrap();
        assert!(
            reader
                .section()
                .options
                .contains(&SectionHeaderOption::Common(CommonOption::Comment(
                    "teardown run active-close: the story".into()
                )))
        );
        let mut seen = Vec::new();
        while let Some(block) = reader.next_block() {
            let (block, _) = block.unwrap();
            match block {
                Block::InterfaceDescription(idb) => {
                    assert_eq!(idb.linktype, DataLink::ETHERNET);
                    assert!(
                        idb.options
                            .contains(&InterfaceDescriptionOption::IfName("lo".into()))
                    );
                    seen.push("idb");
                }
                Block::EnhancedPacket(epb) => {
                    assert_eq!(epb.timestamp, ts, "nanoseconds survive the round trip");
                    assert_eq!(&epb.data[..], &SYN[..]);
                    assert!(
                        epb.options
                            .contains(&EnhancedPacketOption::Common(CommonOption::Comment(
                                "client CLOSED → SYN_SENT (sent SYN, RFC 9293 §3.10.1); \
                             server LISTEN → SYN_RECEIVED (received SYN, RFC 9293 §3.10.7.2)"
                                    .into()
                            )))
                    );
                    assert!(epb.options.contains(&EnhancedPacketOption::Flags(INBOUND)));
                    seen.push("epb");
                }
                Block::InterfaceStatistics(isb) => {
                    assert!(
                        isb.options
                            .contains(&InterfaceStatisticsOption::IsbIfDrop(0))
                    );
                    assert!(
                        isb.options
                            .contains(&InterfaceStatisticsOption::IsbIfRecv(1))
                    );
                    seen.push("isb");
                }
                other => panic!("unexpected block {other:?}"),
            }
        }
        assert_eq!(seen, ["idb", "epb", "isb"]);
    }

    /// An EPB spelled out field by field (pcapng §4.3), to hold `PutBlock::epb`'s pieces to.
    fn epb_by_the_book(big: bool, ts: u64, data: &[u8], options: &[u8], comment: &str) -> Vec<u8> {
        let w32 = |v: u32| u32_in(big, v);
        let w16 = |v: u16| u16_in(big, v);
        let padded = |b: &mut Vec<u8>| b.resize(b.len().next_multiple_of(4), 0);
        let mut body = Vec::new();
        for word in [0, (ts >> 32) as u32, ts as u32, data.len() as u32, 1500] {
            body.extend(w32(word));
        }
        body.extend(data);
        padded(&mut body);
        body.extend(options);
        if !comment.is_empty() {
            body.extend(w16(1));
            body.extend(w16(comment.len() as u16));
            body.extend(comment.as_bytes());
            padded(&mut body);
        }
        body.extend([0; 4]);
        let total = (body.len() + 12) as u32;
        let mut block = w32(6).to_vec();
        block.extend(w32(total));
        block.extend(body);
        block.extend(w32(total));
        block
    }

    #[test]
    fn an_epb_is_the_same_bytes_whatever_its_options_and_comment() {
        // Options that fit beside the padding and the comment's header, and some that do not.
        let short: Vec<u8> = [2u16.to_le_bytes(), 4u16.to_le_bytes()].concat();
        let short = [short, vec![1, 0, 0, 0]].concat();
        let long: Vec<u8> = (0..56).map(|i| i as u8).collect();
        for big in [false, true] {
            for data_len in [0, 1, 3, 4, 61] {
                let data: Vec<u8> = (0..data_len).map(|i| 0xa0 ^ i as u8).collect();
                for options in [&[][..], &short[..], &long[..]] {
                    for comment in ["", "a", "odd é", "four", &"x".repeat(70)] {
                        let book =
                            epb_by_the_book(big, 0x0102_0304_0506_0708, &data, options, comment);
                        // Appended after what a buffer holds already, as every writer does,
                        // and through a writer's buffer too small to hold the block.
                        let mut appended = vec![0xee; 5];
                        let mut small = Blocks::new(Vec::new(), 8);
                        small.write_all(&[0xee; 5]).unwrap();
                        appended
                            .epb(big, 0, 0x0102_0304_0506_0708, &data, 1500, options, comment)
                            .unwrap();
                        small
                            .epb(big, 0, 0x0102_0304_0506_0708, &data, 1500, options, comment)
                            .unwrap();
                        let small = small.into_inner().unwrap();
                        for (way, got) in [("a Vec", &appended), ("Blocks", &small)] {
                            assert_eq!(got[..5], [0xee; 5], "{way}");
                            assert_eq!(
                                got[5..],
                                book,
                                "{way}: big {big}, {data_len} bytes, {} of options, comment \
                                 {comment:?}",
                                options.len()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn hand_encoded_blocks_read_back_with_padding_flags_and_comments() {
        let info = FileInfo {
            section_comment: "s".into(),
            iface: "veth0".into(),
            linktype: DataLink::ETHERNET,
        };
        let mut w = Writer::new(Vec::new(), 1 << 16, &info).unwrap();
        let ts = Duration::new(1_800_000_000, 999_999_999);
        w.get_mut().frame(ts, &[1, 2, 3], 3, "odd é", true).unwrap();
        w.get_mut().frame(ts, &[9; 8], 60, "", false).unwrap();
        let bytes = w.finish(None, ts).unwrap();
        let mut reader = PcapNgReader::new(&bytes[..]).unwrap();
        let mut epbs = Vec::new();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap().0 {
                epbs.push(epb.into_owned());
            }
        }
        assert_eq!(epbs.len(), 2);
        assert_eq!(
            (epbs[0].timestamp, &epbs[0].data[..]),
            (ts, &[1u8, 2, 3][..])
        );
        assert!(
            epbs[0]
                .options
                .contains(&EnhancedPacketOption::Flags(OUTBOUND))
        );
        assert!(
            epbs[0]
                .options
                .contains(&EnhancedPacketOption::Common(CommonOption::Comment(
                    "odd é".into()
                )))
        );
        assert_eq!((epbs[1].original_len, epbs[1].data.len()), (60, 8));
        assert_eq!(epbs[1].options, [EnhancedPacketOption::Flags(INBOUND)]);
    }
}
