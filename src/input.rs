//! Capture files in: pcap (micro- or nanosecond) and pcapng (any resolution, several
//! interfaces and sections), read as a stream. Packets come out with their timestamp and
//! link type; pcapng's other blocks come out as they are, to be copied. Every error names the
//! byte offset where it happened; a file that ends inside a block (cut short by a crash or a
//! full disk) says so, and where, after giving every complete packet before it.

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::rc::Rc;
use std::time::Duration;

use pcap_file::Endianness;
use pcap_file::pcap::{PcapHeader, PcapReadError, PcapTsResolution};
use pcap_file::pcapng::PcapNgReader;

/// What went wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    pub offset: u64,
    pub what: String,
    /// The input ended inside the block (or pcap packet record) that starts at `offset`,
    /// after this many bytes: a capture cut short, whose earlier packets are whole.
    pub cut_at: Option<u64>,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: byte {}: {}", self.file, self.offset, self.what)
    }
}

impl std::error::Error for InputError {}

/// One packet of the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InPacket {
    /// Since the Unix epoch.
    pub ts: Duration,
    /// The timestamp as the file stores it (pcapng: in its interface's units; pcap: in the
    /// file's µs or ns), so that it is written back unchanged.
    pub raw_ts: u64,
    pub interface: u32,
    /// LINKTYPE_* of its interface.
    pub linktype: u32,
    pub data: Vec<u8>,
    pub orig_len: u32,
    /// The packet block's options, as stored (without the end-of-options), to be kept.
    pub options: Vec<u8>,
    /// Comments already on the packet.
    pub comments: Vec<String>,
    /// The byte order of its section (pcapng).
    pub big_endian: bool,
    pub offset: u64,
}

impl InPacket {
    /// `v` copied in, its buffers reused: `view`'s inverse.
    #[inline(always)]
    fn assign(&mut self, v: PacketView<'_>) {
        self.ts = v.ts;
        self.raw_ts = v.raw_ts;
        self.interface = v.interface;
        self.linktype = v.linktype;
        self.data.clear();
        self.data.extend_from_slice(v.data);
        self.orig_len = v.orig_len;
        self.options.clear();
        self.options.extend_from_slice(v.options);
        if !(self.comments.is_empty() && v.comments.is_empty()) {
            self.comments = v.comments.to_vec();
        }
        self.big_endian = v.big_endian;
        self.offset = v.offset;
    }

    /// The packet where it lies, to read or copy from.
    pub fn view(&self) -> PacketView<'_> {
        PacketView {
            ts: self.ts,
            raw_ts: self.raw_ts,
            interface: self.interface,
            linktype: self.linktype,
            data: &self.data,
            orig_len: self.orig_len,
            options: &self.options,
            comments: &self.comments,
            big_endian: self.big_endian,
            offset: self.offset,
            at: None,
        }
    }
}

/// A packet as read, its bytes where they lie: the reader's buffer (a pcap record) or a
/// packet it was read into (pcapng).
#[derive(Clone, Copy, Debug)]
pub struct PacketView<'a> {
    pub ts: Duration,
    pub raw_ts: u64,
    pub interface: u32,
    pub linktype: u32,
    pub data: &'a [u8],
    pub orig_len: u32,
    pub options: &'a [u8],
    pub comments: &'a [String],
    pub big_endian: bool,
    pub offset: u64,
    /// Where `data` starts in the buffer the reading hands over (`Source::hand_over`); none
    /// where it lies elsewhere (pcapng, or no hand-over yet).
    pub at: Option<usize>,
}

/// What `Source::next_view` found: a packet or a block.
pub enum Next<T> {
    Packet(T),
    Block(Vec<u8>),
}

/// `options` without the comments `drop` picks, the others in their order, onto `out`.
pub fn push_options_without(
    options: &[u8],
    big: bool,
    drop: impl Fn(&str) -> bool,
    out: &mut Vec<u8>,
) {
    let mut start = 0;
    for (code, value, end) in walk(options, big) {
        if !(code == 1 && drop(&String::from_utf8_lossy(value))) {
            out.extend_from_slice(&options[start..end]);
        }
        start = end;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A pcapng block that is not a packet, as its bytes (section and interface
    /// descriptions, name resolution, statistics...).
    Block(Vec<u8>),
    Packet(InPacket),
}

/// The kind of file and what a pcapng writer needs to reproduce a pcap file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pcap {
        linktype: u32,
        snaplen: u32,
        nanos: bool,
    },
    PcapNg,
}

enum Reader<R: Read> {
    Pcap(Records<R>),
    PcapNg(PcapNgReader<BufReader<Counted<R>>>),
}

/// pcap's packet records, read straight out of a large buffer: pcap-file's reader cost more
/// per packet than all the decoding. It behaves as pcap-file's does: a record may take at
/// most [`MAX_RECORD_BUFFER`] bytes, the input's end inside one is a cut.
struct Records<R> {
    input: Counted<R>,
    buf: Vec<u8>,
    /// The unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
    big: bool,
    nanos: bool,
    linktype: u32,
    /// The bytes read stay where they were read until the buffer is handed over (`hand_over`).
    keep: bool,
}

/// What a reading that keeps its bytes in place reads at a time: what is left unread at a
/// hand-over moves to the next buffer, so that it stays small beside a batch.
const KEPT_READ: usize = 16 << 10;

/// pcap-file's buffer: a record longer than this does not fit, and is an error (not a cut)
/// when the input goes on beyond it.
const MAX_RECORD_BUFFER: usize = 8_000_000;

/// Why a record could not be read whole.
enum Short {
    /// The input ended.
    End,
    /// The buffer is full and the record goes on.
    Full,
    Io(io::Error),
}

/// One record's header, and where its bytes start in the buffer.
struct Record {
    ts_sec: u32,
    ts_frac: u32,
    incl_len: u32,
    orig_len: u32,
    data: usize,
}

impl<R: Read> Records<R> {
    fn new(input: Counted<R>, read: &[u8]) -> Records<R> {
        let mut buf = vec![0; read.len().max(1 << 20)];
        buf[..read.len()].copy_from_slice(read);
        Records {
            input,
            buf,
            pos: 0,
            end: read.len(),
            big: false,
            nanos: false,
            linktype: 0,
            keep: false,
        }
    }

    /// The reading goes on in `into`'s memory, the bytes not yet read moved to its front, and
    /// `into` takes the buffer read so far; from then on, bytes read stay where they are.
    fn hand_over(&mut self, into: &mut Vec<u8>) {
        let unread = self.end - self.pos;
        if into.len() < unread {
            into.resize(unread, 0);
        }
        into[..unread].copy_from_slice(&self.buf[self.pos..self.end]);
        std::mem::swap(&mut self.buf, into);
        self.pos = 0;
        self.end = unread;
        self.keep = true;
    }

    /// At least `need` bytes at `pos`, reading more as needed.
    fn fill(&mut self, need: usize) -> Result<(), Short> {
        if self.end - self.pos < need {
            return self.read_more(need);
        }
        Ok(())
    }

    #[inline(never)]
    fn read_more(&mut self, need: usize) -> Result<(), Short> {
        while self.end - self.pos < need {
            if self.end - self.pos == MAX_RECORD_BUFFER {
                return Err(Short::Full);
            }
            let stop = if self.keep {
                // Nothing moves: the buffer grows where the record does not fit, by at most
                // what the record has so far (a length that lies costs no more memory than
                // the file has), and reads no further than the record and KEPT_READ beyond
                // it (what is read ahead moves at each hand-over: after a large record, a
                // read as large again moved megabytes at every batch).
                let more = KEPT_READ.max(self.end - self.pos);
                let stop = (self.end + more)
                    .min(self.pos + MAX_RECORD_BUFFER)
                    .min(self.pos + need + KEPT_READ);
                if stop > self.buf.len() {
                    self.buf.resize(stop, 0);
                }
                stop
            } else {
                let room = need.min(MAX_RECORD_BUFFER);
                if self.pos > 0 && self.pos + room > self.buf.len() {
                    // The record cannot end in the buffer: to its front.
                    self.buf.copy_within(self.pos..self.end, 0);
                    self.end -= self.pos;
                    self.pos = 0;
                }
                if self.end == self.buf.len() {
                    // A record larger than the buffer: twice the buffer, as the bytes come (a
                    // length that lies costs no more memory than the file has).
                    self.buf.resize((self.buf.len() * 2).min(room), 0);
                }
                self.buf.len()
            };
            match self.input.read(&mut self.buf[self.end..stop]) {
                Ok(0) => return Err(Short::End),
                Ok(n) => self.end += n,
                Err(e) => return Err(Short::Io(e)),
            }
        }
        Ok(())
    }

    /// The file header (24 bytes).
    fn header(&mut self) -> Result<PcapHeader, Short> {
        self.fill(24)?;
        let (_, header) = PcapHeader::from_slice(&self.buf[self.pos..self.end])
            .map_err(|_| Short::Io(io::ErrorKind::InvalidData.into()))?;
        self.pos += 24;
        self.big = header.endianness == Endianness::Big;
        self.nanos = header.ts_resolution == PcapTsResolution::NanoSecond;
        // The link type is the low 16 bits; bits 26-31 may carry FCS information.
        self.linktype = u32::from(header.datalink) & 0xffff;
        Ok(header)
    }

    /// The record at `pos` when it is whole in the buffer, taken: the usual case, in a few
    /// instructions. `lying_too`: also one that claims more captured bytes than it had on the
    /// wire (or else that is left to the general way, which says why it is wrong).
    #[inline(always)]
    fn buffered(&mut self, lying_too: bool) -> Option<Record> {
        let rest = &self.buf[self.pos..self.end];
        let head: &[u8; 16] = rest.get(..16)?.try_into().ok()?;
        let word = |at: usize| {
            let b = [head[at], head[at + 1], head[at + 2], head[at + 3]];
            if self.big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (incl_len, orig_len) = (word(8), word(12));
        let whole = 16 + incl_len as usize;
        if rest.len() < whole || (incl_len > orig_len && !lying_too) {
            return None;
        }
        let record = Record {
            ts_sec: word(0),
            ts_frac: word(4),
            incl_len,
            orig_len,
            data: self.pos + 16,
        };
        self.pos += whole;
        Some(record)
    }

    /// A record's packet where it lies in the buffer.
    #[inline(always)]
    fn view(&self, p: &Record, offset: u64) -> PacketView<'_> {
        let unit = if self.nanos { 1_000_000_000 } else { 1_000_000 };
        PacketView {
            ts: Duration::new(
                u64::from(p.ts_sec),
                if self.nanos {
                    p.ts_frac
                } else {
                    p.ts_frac.saturating_mul(1000)
                },
            ),
            raw_ts: u64::from(p.ts_sec) * unit + u64::from(p.ts_frac),
            interface: 0,
            linktype: self.linktype,
            data: &self.buf[p.data..p.data + p.incl_len as usize],
            orig_len: p.orig_len,
            options: &[],
            comments: &[],
            // Written back in a section of this machine's byte order.
            big_endian: cfg!(target_endian = "big"),
            offset,
            at: self.keep.then_some(p.data),
        }
    }

    /// A record's packet, into `packet` (its buffers reused).
    #[inline(always)]
    fn packet(&self, p: &Record, packet: &mut InPacket, offset: u64) {
        packet.assign(self.view(p, offset));
    }

    /// The next record, whole in the buffer, reading as needed; None at the input's end
    /// between records.
    #[inline(never)]
    fn next(&mut self) -> Option<Result<Record, Short>> {
        if self.pos == self.end && self.keep {
            match self.read_more(1) {
                Ok(()) => {}
                Err(Short::End) => return None,
                Err(e) => return Some(Err(e)),
            }
        } else if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            match self.input.read(&mut self.buf) {
                Ok(0) => return None,
                Ok(n) => self.end = n,
                Err(e) => return Some(Err(Short::Io(e))),
            }
        }
        if let Err(e) = self.fill(16) {
            return Some(Err(e));
        }
        let head: [u8; 4] = self.buf[self.pos + 8..self.pos + 12]
            .try_into()
            .expect("4 bytes");
        let incl_len = if self.big {
            u32::from_be_bytes(head)
        } else {
            u32::from_le_bytes(head)
        };
        if let Err(e) = self.fill(16 + incl_len as usize) {
            return Some(Err(e));
        }
        Some(Ok(self.buffered(true).expect("a whole record")))
    }
}

/// How much of the input the readers took, and whether they met its end: what tells a file
/// cut short from a block too long for the reader's buffer.
#[derive(Debug, Default)]
struct Count {
    bytes: Cell<u64>,
    eof: Cell<bool>,
}

struct Counted<R> {
    inner: R,
    count: Rc<Count>,
    /// The first bytes, read (and counted) by `prime`, given again to the first reads.
    primed: [u8; 4],
    /// How many of `primed` are yet to be given.
    replay: std::ops::Range<usize>,
}

impl<R: Read> Counted<R> {
    fn new(inner: R, count: Rc<Count>) -> Counted<R> {
        Counted {
            inner,
            count,
            primed: [0; 4],
            replay: 0..0,
        }
    }

    /// Reads the first 4 bytes (fewer only at the end), however few each read gives: a
    /// pipe may give the magic number a byte at a time.
    fn prime(&mut self) -> io::Result<&[u8]> {
        let mut got = 0;
        while got < self.primed.len() {
            match self.inner.read(&mut self.primed[got..]) {
                Ok(0) => {
                    self.count.eof.set(true);
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.count.bytes.set(self.count.bytes.get() + got as u64);
        self.replay = 0..got;
        Ok(&self.primed[..got])
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut given = 0;
        if !self.replay.is_empty() {
            given = self.replay.len().min(buf.len());
            buf[..given].copy_from_slice(&self.primed[self.replay.start..][..given]);
            self.replay.start += given;
            if given == buf.len() || self.count.eof.get() {
                return Ok(given);
            }
        }
        // The first read goes on past the primed bytes, as it would without them.
        let n = match self.inner.read(&mut buf[given..]) {
            Ok(n) => n,
            // The error comes again on the next read, after the primed bytes were given.
            Err(_) if given > 0 => return Ok(given),
            Err(e) => return Err(e),
        };
        self.count.bytes.set(self.count.bytes.get() + n as u64);
        if n == 0 && buf.len() > given {
            self.count.eof.set(true);
        }
        Ok(given + n)
    }
}

pub struct Source<R: Read> {
    name: String,
    reader: Reader<R>,
    pub kind: Kind,
    /// Where the next block or packet starts.
    offset: u64,
    done: bool,
    first: Option<Vec<u8>>,
    count: Rc<Count>,
}

/// A packet or block may not claim more than this: nothing real comes near it.
const MAX_BLOCK: u32 = 8_000_000;

impl<R: Read> Source<R> {
    pub fn open(input: R, name: &str) -> Result<Source<R>, InputError> {
        let err = |offset: u64, what: String| InputError {
            file: name.to_string(),
            offset,
            what,
            cut_at: None,
        };
        let count = Rc::new(Count::default());
        let mut input = Counted::new(input, Rc::clone(&count));
        let head = input
            .prime()
            .map_err(|e| err(0, format!("cannot read: {e}")))?
            .get(..4)
            .map(|b| [b[0], b[1], b[2], b[3]]);
        let Some(magic) = head else {
            return Err(err(
                0,
                "empty, or shorter than a capture file's header".into(),
            ));
        };
        let (reader, kind, offset) = match magic {
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                let r = PcapNgReader::new(BufReader::with_capacity(1 << 16, input))
                    .map_err(|e| err(0, format!("not a valid pcapng section header ({e})")))?;
                (Reader::PcapNg(r), Kind::PcapNg, 0)
            }
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d] => {
                // A first read of 64 KiB, the magic number in it: a larger one would have the
                // first hand-over move up to a MiB not yet read (27 instructions a packet).
                let mut first = vec![0; 1 << 16];
                let n = input
                    .read(&mut first)
                    .map_err(|e| err(0, format!("cannot read: {e}")))?;
                let mut r = Records::new(input, &first[..n]);
                let h = r.header().map_err(|e| {
                    let e = match e {
                        Short::Io(e) => e,
                        Short::End | Short::Full => io::ErrorKind::UnexpectedEof.into(),
                    };
                    err(
                        0,
                        format!("not a valid pcap header ({})", PcapReadError::Io(e)),
                    )
                })?;
                let kind = Kind::Pcap {
                    linktype: r.linktype,
                    snaplen: h.snaplen,
                    nanos: r.nanos,
                };
                (Reader::Pcap(r), kind, 24)
            }
            other => {
                return Err(err(
                    0,
                    format!(
                        "not a pcap or pcapng file (it starts with {:02x} {:02x} {:02x} {:02x})",
                        other[0], other[1], other[2], other[3]
                    ),
                ));
            }
        };
        // The reader has taken the first section header: it comes out first, re-encoded
        // with its options and byte order.
        let first = match &reader {
            Reader::PcapNg(r) => Some(
                section_bytes(r.section())
                    .map_err(|e| err(0, format!("the section header does not re-encode ({e})")))?,
            ),
            Reader::Pcap(_) => None,
        };
        Ok(Source {
            name: name.to_string(),
            reader,
            kind,
            offset,
            done: false,
            first,
            count,
        })
    }

    fn error<T>(&mut self, what: String) -> Option<Result<T, InputError>> {
        self.done = true;
        Some(Err(InputError {
            file: self.name.clone(),
            offset: self.offset,
            what,
            cut_at: None,
        }))
    }

    /// A reader's error: the input's end inside a block is a cut (when the reader met the
    /// end, not its buffer's); anything else, a block that does not parse.
    fn failed<T>(&mut self, eof: bool, debug: String) -> Option<Result<T, InputError>> {
        if !(eof && self.count.eof.get()) {
            return self.error(describe(&debug));
        }
        let at = self.count.bytes.get();
        let unit = match self.kind {
            Kind::Pcap { .. } => "packet record",
            Kind::PcapNg => "block",
        };
        let what = format!(
            "the file ends in the middle of this {unit}, at byte {at} (cut short, or the {unit} \
             claims more bytes than the file holds)"
        );
        self.done = true;
        Some(Err(InputError {
            file: self.name.clone(),
            offset: self.offset,
            what,
            cut_at: Some(at),
        }))
    }

    pub fn next_item(&mut self) -> Option<Result<Item, InputError>> {
        let mut packet = InPacket::default();
        Some(match self.next_into(&mut packet)? {
            Ok(None) => Ok(Item::Packet(packet)),
            Ok(Some(block)) => Ok(Item::Block(block)),
            Err(e) => Err(e),
        })
    }

    /// The next packet written into `packet` (its buffers reused: no allocation per packet
    /// on a long file), `Ok(None)`; or a block to copy, `Ok(Some(bytes))`.
    pub fn next_into(
        &mut self,
        packet: &mut InPacket,
    ) -> Option<Result<Option<Vec<u8>>, InputError>> {
        self.next_read(packet)
    }

    /// The next packet when it is a pcap record whole in the buffer, and one that does not
    /// lie about its lengths: the usual case, in a few instructions. None: `next_view` says.
    #[inline(always)]
    pub fn next_usual(&mut self) -> Option<PacketView<'_>> {
        let Reader::Pcap(r) = &mut self.reader else {
            return None;
        };
        if self.done {
            return None;
        }
        let p = r.buffered(false)?;
        let offset = self.offset;
        self.offset += 16 + u64::from(p.incl_len);
        Some(r.view(&p, offset))
    }

    /// The next packet where it lies, copied nowhere when it is a pcap record (read into the
    /// buffer when not whole in it), or else read into `spare` (pcapng); or a block to copy.
    #[inline(always)]
    pub fn next_view<'a>(
        &'a mut self,
        spare: &'a mut InPacket,
    ) -> Option<Result<Next<PacketView<'a>>, InputError>> {
        if matches!(self.reader, Reader::Pcap(_)) && !self.done {
            let (p, offset) = match self.pcap_record()? {
                Ok(record) => record,
                Err(e) => return Some(Err(e)),
            };
            let Reader::Pcap(r) = &self.reader else {
                unreachable!("a pcap reading")
            };
            return Some(Ok(Next::Packet(r.view(&p, offset))));
        }
        Some(match self.next_read(spare)? {
            Ok(None) => Ok(Next::Packet(spare.view())),
            Ok(Some(block)) => Ok(Next::Block(block)),
            Err(e) => Err(e),
        })
    }

    /// pcap: the reading goes on in `into`'s memory, and `into` takes the buffer read so far:
    /// from then on, each packet's bytes stay where they were read, its view says where
    /// (`PacketView::at`), until the next hand-over gives them away with the buffer. False,
    /// and nothing done, for pcapng.
    pub fn hand_over(&mut self, into: &mut Vec<u8>) -> bool {
        match &mut self.reader {
            Reader::Pcap(r) => {
                r.hand_over(into);
                true
            }
            Reader::PcapNg(_) => false,
        }
    }

    /// The next pcap record, whole in the buffer (read as needed), and its offset; or why
    /// not: one cut short, or one that claims more captured bytes than it had on the wire.
    /// What both the in-place and the copying way read a record that is not the usual case
    /// with.
    fn pcap_record(&mut self) -> Option<Result<(Record, u64), InputError>> {
        let Reader::Pcap(r) = &mut self.reader else {
            return None;
        };
        let p = match r.buffered(true) {
            Some(p) => p,
            None => match r.next()? {
                Ok(p) => p,
                Err(e) => return self.short(e),
            },
        };
        if p.incl_len > p.orig_len {
            return self.lying(&p);
        }
        let offset = self.offset;
        self.offset += 16 + u64::from(p.incl_len);
        Some(Ok((p, offset)))
    }

    /// A pcap record that could not be read whole, in pcap-file's words, for the same
    /// messages as before.
    fn short<T>(&mut self, e: Short) -> Option<Result<T, InputError>> {
        match e {
            Short::Io(e) => {
                let eof = e.kind() == io::ErrorKind::UnexpectedEof;
                self.failed(eof, format!("{:?}", PcapReadError::Io(e)))
            }
            Short::End | Short::Full => {
                let e = PcapReadError::Io(io::ErrorKind::UnexpectedEof.into());
                self.failed(true, format!("{e:?}"))
            }
        }
    }

    fn lying<T>(&mut self, p: &Record) -> Option<Result<T, InputError>> {
        let what = format!(
            "a packet claims {} captured bytes of {} on the wire: captured cannot exceed \
             original",
            p.incl_len, p.orig_len
        );
        self.error(what)
    }

    /// What `next_view` does not read itself, and `next_into`: pcapng, errors.
    #[inline(never)]
    fn next_read(&mut self, packet: &mut InPacket) -> Option<Result<Option<Vec<u8>>, InputError>> {
        if self.done {
            return None;
        }
        if let Some(shb) = self.first.take() {
            self.offset += shb.len() as u64;
            return Some(Ok(Some(shb)));
        }
        match &mut self.reader {
            Reader::Pcap(_) => {
                let (p, offset) = match self.pcap_record()? {
                    Ok(record) => record,
                    Err(e) => return Some(Err(e)),
                };
                if let Reader::Pcap(r) = &mut self.reader {
                    r.packet(&p, packet, offset);
                }
                Some(Ok(None))
            }
            Reader::PcapNg(r) => {
                let (raw, state) = match r.next_raw_block()? {
                    Ok(x) => x,
                    Err(e) => {
                        let eof = matches!(&e, pcap_file::pcapng::PcapNgReadError::Io(io)
                            if io.kind() == io::ErrorKind::UnexpectedEof);
                        return self.failed(eof, format!("{e:?}"));
                    }
                };
                if raw.initial_len > MAX_BLOCK {
                    let what = format!(
                        "a block claims {} bytes, more than any real packet block",
                        raw.initial_len
                    );
                    return self.error(what);
                }
                let big = state.endianness() == Endianness::Big;
                let at = self.offset;
                self.offset += u64::from(raw.initial_len);
                let item = match raw.type_ {
                    // Enhanced Packet Block.
                    6 => match enhanced_packet(&raw.body, big) {
                        Some(epb) => {
                            if epb.caplen > epb.orig_len {
                                self.offset = at;
                                let what = format!(
                                    "a packet claims {} captured bytes of {} on the wire: \
                                     captured cannot exceed original",
                                    epb.caplen, epb.orig_len
                                );
                                return self.error(what);
                            }
                            let Some(iface) = state.interfaces().get(epb.interface as usize) else {
                                self.offset = at;
                                let what = format!(
                                    "a packet of interface {} before any description of it",
                                    epb.interface
                                );
                                return self.error(what);
                            };
                            let ts = state
                                .decode_timestamp(epb.interface, epb.ts_high, epb.ts_low)
                                .unwrap_or_default();
                            packet.assign(PacketView {
                                ts,
                                raw_ts: (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low),
                                interface: epb.interface,
                                linktype: u32::from(iface.linktype),
                                data: epb.data,
                                orig_len: epb.orig_len,
                                options: epb.options,
                                comments: &comments(epb.options, big),
                                big_endian: big,
                                offset: at,
                                at: None,
                            });
                            None
                        }
                        None => {
                            self.offset = at;
                            return self
                                .error("an enhanced packet block that does not parse".into());
                        }
                    },
                    _ => Some(block_bytes(raw.type_, &raw.body, big)),
                };
                Some(Ok(item))
            }
        }
    }
}

impl<R: Read> Iterator for Source<R> {
    type Item = Result<Item, InputError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item()
    }
}

/// pcap-file's words for a cut-off file, in ours.
fn describe(e: &str) -> String {
    if e.contains("UnexpectedEof") || e.contains("Incomplete") {
        "the file ends in the middle of a block, or a block claims more bytes than the file \
         holds (truncated?)"
            .to_string()
    } else {
        format!("not a valid block: {e}")
    }
}

fn section_bytes(
    shb: &pcap_file::pcapng::blocks::section_header::SectionHeaderBlock<'_>,
) -> Result<Vec<u8>, String> {
    let writer = pcap_file::pcapng::PcapNgWriter::with_section_header(Vec::new(), shb.clone())
        .map_err(|e| e.to_string())?;
    Ok(writer.into_inner())
}

struct Epb<'a> {
    interface: u32,
    ts_high: u32,
    ts_low: u32,
    caplen: u32,
    orig_len: u32,
    data: &'a [u8],
    options: &'a [u8],
}

fn word(b: &[u8], at: usize, big: bool) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

fn enhanced_packet(body: &[u8], big: bool) -> Option<Epb<'_>> {
    let caplen = word(body, 12, big)?;
    let data_end = 20usize.checked_add(caplen as usize)?;
    let padded = data_end.checked_add((4 - caplen as usize % 4) % 4)?;
    Some(Epb {
        interface: word(body, 0, big)?,
        ts_high: word(body, 4, big)?,
        ts_low: word(body, 8, big)?,
        caplen,
        orig_len: word(body, 16, big)?,
        data: body.get(20..data_end)?,
        options: options_without_end(body.get(padded.min(body.len())..)?, big),
    })
}

/// The options of a block, each as (code, value, where it ends), up to the end-of-options
/// marker or the first option that does not fit.
fn walk(opts: &[u8], big: bool) -> impl Iterator<Item = (u16, &[u8], usize)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let head = opts.get(at..at + 4)?;
        let half = |b: [u8; 2]| {
            if big {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let (code, len) = (half([head[0], head[1]]), half([head[2], head[3]]) as usize);
        let end = at + 4 + len + (4 - len % 4) % 4;
        if code == 0 || end > opts.len() {
            return None;
        }
        let value = &opts[at + 4..at + 4 + len];
        at = end;
        Some((code, value, end))
    })
}

/// The options up to (not including) the end-of-options marker.
fn options_without_end(opts: &[u8], big: bool) -> &[u8] {
    let used = walk(opts, big).last().map_or(0, |(_, _, end)| end);
    &opts[..used]
}

/// The opt_comment values among `opts`.
fn comments(opts: &[u8], big: bool) -> Vec<String> {
    walk(opts, big)
        .filter(|(code, _, _)| *code == 1)
        .map(|(_, value, _)| String::from_utf8_lossy(value).into_owned())
        .collect()
}

/// A block's bytes as they were: type, length, body, length, in its section's byte order.
fn block_bytes(type_: u32, body: &[u8], big: bool) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let w = |v: u32| crate::output::pcapng::u32_in(big, v);
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&w(type_));
    out.extend_from_slice(&w(total));
    out.extend_from_slice(body);
    out.extend_from_slice(&w(total));
    out
}

#[cfg(test)]
mod tests;
