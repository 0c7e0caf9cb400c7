//! Captures other tools made, read offline and without privileges, in one streaming pass:
//! `annotate` (every packet kept byte for byte, with a comment), `summary` (a line per
//! connection) and `diagram` (the ladder, in the terminal or as SVG).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
};
use pcap_file::pcapng::blocks::opt_common::CommonOption;
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};

use crate::annotate::{Annotator, CommentCache, Comments, Packet};
use crate::capture::Frame;
use crate::decode::{DecodeError, Segment, link};
use crate::error::{Error, exit};
use crate::input::{InPacket, InputError, Kind, Source};

mod ahead;
use crate::output::dest::Dest;
use crate::output::pcapng::{Blocks, PutBlock};
use crate::output::{ladder, svg};
use crate::tracker::{Role, Tracker};
use ahead::{Ahead, Behind, Packets, Readout, Settled, Stamp, Stored};

/// A finished connection is forgotten this long (2×MSL of capture time) after its last
/// segment, by `annotate`'s tracker wherever it runs.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// IN opened: `-` is standard input.
struct Input {
    reader: Box<dyn Read + Send>,
    name: String,
    /// A pipe, a terminal or a socket: packets come as they happen, and go out as they come.
    live: bool,
    /// (device, inode) of a file, to know when OUT is IN.
    id: Option<(u64, u64)>,
}

fn open_input(input: &str) -> Result<Input, Error> {
    let (reader, meta, name): (Box<dyn Read + Send>, _, _) = if input == "-" {
        let meta = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| File::from(fd).metadata());
        // Not locked: it may be read on the reading thread (`ahead`), in 64 KiB reads.
        (Box::new(io::stdin()), meta, "standard input".into())
    } else {
        let file = File::open(input).map_err(Error::io(format!("{input}: cannot open")))?;
        let meta = file.metadata();
        (Box::new(file), meta, input.to_string())
    };
    let meta = meta.ok();
    Ok(Input {
        reader,
        name,
        live: meta.as_ref().is_some_and(|m| {
            let t = m.file_type();
            t.is_fifo() || t.is_char_device() || t.is_socket()
        }),
        id: meta.filter(|m| m.is_file()).map(|m| (m.dev(), m.ino())),
    })
}

fn usage(e: InputError) -> Error {
    Error::Usage(e.to_string())
}

/// `1 packet`, `2 packets`.
/// `1 packet`, `2 packets`: the plural of a word that takes an s.
fn count(n: impl TryInto<usize>, word: &str) -> String {
    let n = n.try_into().unwrap_or(usize::MAX);
    crate::output::style::plural(n, word, &format!("{word}s"))
}

/// A packet of a link type teardown does not decode: an error for the whole file.
fn unsupported_link(linktype: u32, offset: u64, name: &str) -> Error {
    Error::Usage(format!(
        "{name}: byte {offset}: link type {linktype} ({:?}) is not one teardown decodes: \
         Ethernet, Linux cooked (SLL, SLL2), raw IPv4/IPv6 and BSD loopback are",
        DataLink::from(linktype)
    ))
}

/// Nothing to work on: no TCP segment, or none before the input was cut short.
fn no_tcp(name: &str, packets: u64, cut: Option<&InputError>, nothing: &str) -> Error {
    Error::Usage(match cut {
        Some(e) => format!("{e}: no TCP segment before it: nothing to {nothing}"),
        None => format!(
            "{name}: no TCP segment among its {}: nothing to {nothing}",
            count(packets, "packet")
        ),
    })
}

/// The warning for a capture cut short: where it ends, and what was made of the rest.
fn cut_warning(e: &InputError, kind: Kind, did: &str, packets: u64) -> String {
    let unit = match kind {
        Kind::Pcap { .. } => "packet record",
        Kind::PcapNg => "block",
    };
    format!(
        "teardown: {}: cut short at byte {} (in the middle of the {unit} at byte {}): {did} the \
         {} before it",
        e.file,
        e.cut_at.unwrap_or(e.offset),
        e.offset,
        count(packets, "complete packet")
    )
}

/// What `annotate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotated {
    pub packets: u64,
    pub tcp: u64,
    pub connections: usize,
    pub kind: Kind,
    /// Where the input ended inside a block: the packets before it are written.
    pub cut: Option<InputError>,
}

/// Annotates a capture read from `input` (named `name` in errors) into `out`: one pass, no
/// file system, no privileges (the fuzz target's entry point).
pub fn annotate_stream<R: Read>(
    input: R,
    name: &str,
    out: &mut dyn Write,
) -> Result<Annotated, Error> {
    let src = Source::open(input, name).map_err(usage)?;
    let kind = src.kind;
    let mut out = Blocks::new(out, 1 << 16);
    let done = annotate_into(
        Packets::inline(src, name, true),
        kind,
        name,
        &mut out,
        false,
        Comments::default(),
    )?;
    out.flush()
        .map_err(Error::io("writing the annotated capture"))?;
    Ok(done)
}

/// The annotation loop; `flush_each` sends every packet on at once (a live input).
fn annotate_into<R: Read, W: PutBlock + ?Sized>(
    mut packets: Packets<R>,
    kind: Kind,
    name: &str,
    out: &mut W,
    flush_each: bool,
    mode: Comments,
) -> Result<Annotated, Error> {
    let write_err = |e: io::Error| Error::io("writing the annotated capture")(e);
    if let Kind::Pcap {
        linktype,
        snaplen,
        nanos,
    } = kind
    {
        // The pcap header's link type (at byte 20) says how every packet is framed.
        if !link::supported(linktype) {
            return Err(Error::Usage(format!(
                "{name}: byte 20: link type {linktype} is not one teardown decodes: Ethernet, \
                 Linux cooked (SLL, SLL2), raw IPv4/IPv6 and BSD loopback are"
            )));
        }
        out.write_all(&pcapng_header(name, linktype, snaplen, nanos, mode)?)
            .map_err(write_err)?;
    }
    // One pass, memory for the open connections only: a finished one is forgotten 2×MSL
    // (60 s of capture time) after its last segment. The one annotator holds a FIN back
    // until its answer settles its story; all else goes straight through.
    let mut annotator: Annotator<Held> = Annotator::new(Tracker::forgetful(FORGET_AFTER));
    annotator.comments = mode;
    let mut opened = 0usize;
    // Most segments change nothing: no comment, or (--comments all) their few texts made once.
    let mut comments = CommentCache::new(annotator.comments);
    let (mut packets_seen, mut tcp) = (0u64, 0u64);
    let mut cut = None;
    // Tracked and settled on threads of their own, ahead: each packet goes out as it comes,
    // written from where it lies in its batch.
    if packets.tracked() {
        packets.each_settled(|item| {
            let run = match item {
                Settled::Packets(run) => run,
                Settled::Block(bytes) => return out.write_all(bytes).map_err(write_err),
                Settled::Cut(e) => {
                    cut = Some(e);
                    return Ok(());
                }
                Settled::Failed(e) => return Err(e),
            };
            // Counted here, added once: what the closure holds by reference is a store each.
            let (mut seen, mut segments, mut conns) = (0u64, 0u64, opened);
            run.try_each(|p| {
                let Some(stored) = p.stored else {
                    return Err(without_bytes(name));
                };
                seen += 1;
                let (seg, extra) = framed(p.decoded);
                segments += u64::from(seg.is_some());
                if let Some(e) = p.event {
                    conns = conns.max(e.conn + 1);
                }
                write_annotated(out, &mut comments, stored, extra.as_deref(), p.event)
                    .map_err(write_err)
            })?;
            packets_seen += seen;
            tcp += segments;
            opened = conns;
            Ok(())
        })?;
    }
    // Else read in line (a live input), or without the threads: tracked and held here.
    // Held packets' own buffers, used again: the reading's are gone with the next item.
    let mut spare: Vec<Box<InPacket>> = Vec::new();
    while let Some(item) = packets.next() {
        let (stamp, p, decoded, event) = match item {
            Ahead::Packet(Readout {
                stamp,
                packet: Some(p),
                decoded,
                event,
            }) => (stamp, p, decoded, event),
            Ahead::Packet(_) => return Err(without_bytes(name)),
            Ahead::Block(bytes) => {
                // A block that is no packet (a section, an interface) ends the look-ahead:
                // the packets before it belong before it.
                for (held, event) in annotator.finish() {
                    write_held(out, &mut comments, &held, event.as_ref()).map_err(write_err)?;
                    spare.push(held.packet);
                }
                out.write_all(&bytes).map_err(write_err)?;
                continue;
            }
            // The end of a capture cut short: what came before is whole, and written.
            Ahead::Cut(e) => {
                cut = Some(e);
                break;
            }
            // What came before is whole, and written, held packets too (as the settling
            // thread lets them go): then the error.
            Ahead::Failed(e) => {
                for (held, event) in annotator.finish() {
                    write_held(out, &mut comments, &held, event.as_ref()).map_err(write_err)?;
                }
                return Err(e);
            }
            // `next` gives none: its end is `None`.
            Ahead::End => break,
        };
        packets_seen += 1;
        let (seg, extra) = framed(&decoded);
        tcp += u64::from(seg.is_some());
        let at = Some(stamp.ts);
        // Answered held packets first: the order of the capture.
        let emit = |a: &mut Annotator<Held>, held: Held, event: Option<crate::tracker::Event>| {
            write_held(out, &mut comments, &held, event.as_ref())?;
            spare.push(held.packet);
            if let Some(event) = event {
                packets.recycle(event, &mut a.tracker);
            }
            Ok(())
        };
        debug_assert!(
            event.is_none(),
            "an event from a reading that does not track"
        );
        let tracked = annotator.step(seg, at, emit).map_err(write_err)?;
        if let Some(e) = &tracked.event {
            opened = opened.max(e.conn + 1);
        }
        if tracked.hold {
            // Its bytes copied out of the reading's buffer, which the next item fills again
            // before the answer comes; boxed, it moves through the look-ahead as a pointer.
            let mut packet = spare.pop().unwrap_or_default();
            own(&mut packet, packets.stored(&p));
            annotator.hold(Held { packet, extra }, tracked, at);
        } else {
            write_annotated(
                out,
                &mut comments,
                packets.stored(&p),
                extra.as_deref(),
                tracked.event.as_ref(),
            )
            .map_err(write_err)?;
            if let Some(event) = tracked.event {
                packets.recycle(event, &mut annotator.tracker);
            }
        }
        if flush_each && !annotator.holding() {
            out.flush().map_err(write_err)?;
        }
    }
    for (held, event) in annotator.finish() {
        write_held(out, &mut comments, &held, event.as_ref()).map_err(write_err)?;
    }
    if tcp == 0 {
        return Err(no_tcp(name, packets_seen, cut.as_ref(), "annotate"));
    }
    Ok(Annotated {
        packets: packets_seen,
        tcp,
        connections: opened,
        kind,
        cut,
    })
}

/// Not asked for (`bytes` is true): a packet without its bytes cannot be written.
fn without_bytes(name: &str) -> Error {
    Error::Usage(format!(
        "{name}: a packet came without its bytes (a bug of teardown's reader)"
    ))
}

/// A packet's segment, if it is TCP, and what its comment adds beyond the event: a snaplen
/// cut, or for a segment that did not decode, the whole comment.
#[inline(always)]
fn framed(decoded: &Result<Segment, DecodeError>) -> (Option<&Segment>, Option<String>) {
    // Nearly every packet: a whole segment, nothing to add (in line: a call showed).
    match decoded {
        Ok(seg) if seg.captured >= seg.len => (Some(seg), None),
        _ => framed_rarely(decoded),
    }
}

/// `framed` where the packet has words of its own (or is no TCP).
fn framed_rarely(decoded: &Result<Segment, DecodeError>) -> (Option<&Segment>, Option<String>) {
    match decoded {
        Ok(seg) if seg.captured < seg.len => (
            Some(seg),
            Some(format!(
                "cut by the capture's snaplen: {} of {} payload bytes captured",
                seg.captured, seg.len
            )),
        ),
        Ok(seg) => (Some(seg), None),
        Err(DecodeError::NotTcp(_)) => (None, None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// `p`'s block, copied into `packet`'s buffers.
fn own(packet: &mut InPacket, p: Stored<'_>) {
    packet.raw_ts = p.raw_ts;
    packet.interface = p.interface;
    packet.orig_len = p.orig_len;
    packet.big_endian = p.big_endian;
    packet.data.clear();
    packet.data.extend_from_slice(p.data);
    packet.options.clear();
    packet.options.extend_from_slice(p.options);
}

/// A packet the annotator holds, with what its comment adds beyond the event (a snaplen cut),
/// or, for a segment that did not decode, the whole comment.
struct Held {
    packet: Box<InPacket>,
    extra: Option<String>,
}

/// Writes one packet with teardown's comment in place of an earlier one of teardown's. By
/// reference: the packet and its buffers stay where they are (a move per packet showed in
/// the profile).
#[inline(always)]
fn write_annotated<W: PutBlock + ?Sized>(
    out: &mut W,
    comments: &mut CommentCache,
    packet: Stored<'_>,
    extra: Option<&str>,
    event: Option<&crate::tracker::Event>,
) -> io::Result<()> {
    let text = comments.frame(event, extra);
    // Annotating again replaces teardown's earlier comment (or drops it, where the segment
    // now gets none): the reading left it out of the options; others' stay.
    out.epb(
        packet.big_endian,
        packet.interface,
        packet.raw_ts,
        packet.data,
        packet.orig_len,
        packet.options,
        &text,
    )
}

fn write_held<W: PutBlock + ?Sized>(
    out: &mut W,
    comments: &mut CommentCache,
    held: &Held,
    event: Option<&crate::tracker::Event>,
) -> io::Result<()> {
    write_annotated(
        out,
        comments,
        Stored::from(&*held.packet),
        held.extra.as_deref(),
        event,
    )
}

/// `teardown annotate IN -o OUT`: OUT checked before IN is read, written through a temporary
/// file renamed at the end (so OUT may be IN: the input is read whole from its own inode).
pub fn annotate(
    input: &str,
    output: &Path,
    mode: Comments,
    log: &mut dyn Write,
) -> Result<i32, Error> {
    let mut dest = Dest::check("-o", output).map_err(Error::Usage)?;
    let inp = open_input(input)?;
    let in_place =
        inp.id.is_some() && fs::metadata(output).ok().map(|m| (m.dev(), m.ino())) == inp.id;
    // Live in, live out: a reader of standard output or a pipe sees each packet at once. A
    // file appears only at the end anyway.
    let flush_each = inp.live && !matches!(dest, Dest::File { .. });
    let done = (|| {
        let opened = || Error::io(format!("writing {}", dest.name()));
        let written = Error::io("writing the annotated capture");
        let (packets, kind) = if flush_each {
            // Live in, live out: each packet read, tracked and written in line, as it comes.
            let src = Source::open(inp.reader, &inp.name).map_err(usage)?;
            let kind = src.kind;
            (Packets::inline(src, &inp.name, true), kind)
        } else {
            // Read, tracked and settled ahead, on threads of their own.
            let tracker = Tracker::forgetful(FORGET_AFTER);
            Packets::threaded(inp.reader, &inp.name, true, Some(tracker)).map_err(usage)?
        };
        // The kernel's copy into a file's pages is worth a thread of its own; a device's
        // (`/dev/null`) or a pipe's is not.
        if matches!(dest, Dest::File { .. })
            && let Ok(mut out) = Behind::new(dest.open_sendable().map_err(opened())?)
        {
            let done = annotate_into(packets, kind, &inp.name, &mut out, false, mode);
            // The destination's own error comes first: it may be why the loop stopped.
            out.finish().map_err(written)?;
            return done;
        }
        let mut out = Blocks::new(dest.open().map_err(opened())?, 1 << 20);
        let done = annotate_into(packets, kind, &inp.name, &mut out, flush_each, mode)?;
        out.flush().map_err(written)?;
        Ok(done)
    })();
    let done = match done {
        // The reader of standard output went away (`| head`, Wireshark closed): not an
        // error, as for `capture -o -`.
        Err(Error::Io { source, .. })
            if source.kind() == io::ErrorKind::BrokenPipe && !matches!(dest, Dest::File { .. }) =>
        {
            return Ok(exit::REPRODUCED);
        }
        other => other?,
    };
    dest.commit()
        .map_err(Error::io(format!("writing {}", dest.name())))?;
    let _ = writeln!(
        log,
        "teardown annotate: {} of {}, {}, commented into {}",
        count(done.tcp, "TCP segment"),
        count(done.packets, "packet"),
        count(done.connections, "connection"),
        dest.name()
    );
    if let Some(path) = dest.path() {
        let renamed = path.with_extension("pcapng");
        let hint = if renamed == path {
            String::new()
        } else {
            format!("; rename it {}", renamed.display())
        };
        let shown = path.display();
        if in_place && matches!(done.kind, Kind::Pcap { .. }) {
            let _ = writeln!(log, "note: {shown} is now pcapng (it was pcap){hint}");
        } else if path.extension().is_some_and(|e| e == "pcap") {
            let _ = writeln!(
                log,
                "note: {shown} holds pcapng (annotate writes pcapng){hint}"
            );
        }
    }
    match &done.cut {
        Some(e) => {
            let _ = writeln!(
                log,
                "{}",
                cut_warning(e, done.kind, "annotated", done.packets)
            );
            Ok(exit::DIFFERENT)
        }
        None => Ok(exit::REPRODUCED),
    }
}

/// The section and interface header of a pcapng that carries a pcap file's packets.
fn pcapng_header(
    name: &str,
    linktype: u32,
    snaplen: u32,
    nanos: bool,
    mode: Comments,
) -> Result<Vec<u8>, Error> {
    let shb = SectionHeaderBlock {
        options: vec![
            SectionHeaderOption::Common(CommonOption::Comment(
                format!("{name}, annotated by teardown: {}", mode.described()).into(),
            )),
            SectionHeaderOption::UserApplication(
                format!("teardown {}", env!("CARGO_PKG_VERSION")).into(),
            ),
        ],
        // The packets of a pcap input are written in native order: the section must say so.
        endianness: pcap_file::Endianness::native(),
        ..SectionHeaderBlock::default()
    };
    let err = |e: pcap_file::pcapng::PcapNgWriteError| Error::Usage(format!("{name}: {e}"));
    let mut w = PcapNgWriter::with_section_header(Vec::new(), shb).map_err(err)?;
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::from(linktype),
        snaplen,
        options: vec![InterfaceDescriptionOption::IfTsResol(if nanos {
            InterfaceTsResolution::NANO
        } else {
            InterfaceTsResolution::MICRO
        })],
    };
    w.write_pcapng_block(idb).map_err(err)?;
    Ok(w.into_inner())
}

/// What a pass over IN leaves: the tracker, the packets read, and where a cut input ended.
struct Scan {
    tracker: Tracker,
    packets: u64,
    kind: Kind,
    cut: Option<InputError>,
}

impl Scan {
    /// The exit code, after the warning for an input cut short.
    fn finish(&self, did: &str, log: &mut dyn Write) -> i32 {
        match &self.cut {
            Some(e) => {
                let _ = writeln!(log, "{}", cut_warning(e, self.kind, did, self.packets));
                exit::DIFFERENT
            }
            None => exit::REPRODUCED,
        }
    }
}

/// Every item of `src` read: each packet's readout given to `f` (with `src`, for the events
/// it hands back), and `None` for a block that is no packet (it ends a look-ahead); how many
/// packets there were, and where the input was cut short.
fn each_packet<R: Read>(
    src: &mut Packets<R>,
    mut f: impl FnMut(&mut Packets<R>, Option<Readout>),
) -> Result<(u64, Option<InputError>), Error> {
    let mut packets = 0u64;
    while let Some(item) = src.next() {
        match item {
            Ahead::Packet(read) => {
                packets += 1;
                f(src, Some(read));
            }
            Ahead::Block(_) => f(src, None),
            Ahead::Cut(e) => return Ok((packets, Some(e))),
            Ahead::Failed(e) => return Err(e),
            Ahead::End => break,
        }
    }
    Ok((packets, None))
}

impl Scan {
    /// What a reading found, or why there is nothing to work on (`nothing` says what it was
    /// for).
    fn of(
        tracker: Tracker,
        (packets, cut): (u64, Option<InputError>),
        kind: Kind,
        name: &str,
        nothing: &str,
    ) -> Result<Scan, Error> {
        if tracker.connections().is_empty() {
            return Err(no_tcp(name, packets, cut.as_ref(), nothing));
        }
        Ok(Scan {
            tracker,
            packets,
            kind,
            cut,
        })
    }
}

/// Reads IN and feeds every TCP segment to a tracker, calling `f` with the packet's stamp,
/// the segment and what it did (an error if nothing was TCP; `nothing` says what it was for).
/// `f` hands back the events it does not keep, for the tracker to reuse their lists.
fn each_segment(
    input: &str,
    nothing: &str,
    tracker: Tracker,
    mut f: impl FnMut(
        &Stamp,
        crate::decode::Segment,
        crate::tracker::Event,
    ) -> Option<crate::tracker::Event>,
) -> Result<Scan, Error> {
    let inp = open_input(input)?;
    let name = inp.name;
    // Read, decoded, tracked and settled ahead, on threads of their own.
    let (mut src, kind) =
        Packets::threaded(inp.reader, &name, false, Some(tracker)).map_err(usage)?;
    let tracking = src.tracked();
    // Else the same annotator as `annotate`'s, here: every packet keeps its place in the
    // look-ahead and a block that is no packet ends it, so that the same packets tell the
    // same story. Its own tracker tracks.
    type Item = Option<(Stamp, crate::decode::Segment)>;
    let mut annotator: Annotator<Item> = Annotator::new(Tracker::new());
    // A segment and its event told to `f`; the event back for its lists.
    let mut tell = |src: &mut Packets<_>,
                    local: &mut Tracker,
                    item: Item,
                    event: Option<crate::tracker::Event>| {
        if let (Some((p, seg)), Some(event)) = (item, event)
            && let Some(done) = f(&p, seg, event)
        {
            src.recycle(done, local);
        }
    };
    let read = each_packet(&mut src, |src, read| {
        let Some(read) = read else {
            let held: Vec<_> = annotator.finish().collect();
            for (item, event) in held {
                tell(src, &mut annotator.tracker, item, event);
            }
            return;
        };
        let Readout {
            stamp,
            decoded,
            event,
            ..
        } = read;
        let item = decoded.ok().map(|seg| (stamp, seg));
        if tracking {
            tell(src, &mut annotator.tracker, item, event);
            return;
        }
        let at = Some(stamp.ts);
        let Ok(tracked) =
            annotator.step(item.as_ref().map(|(_, seg)| seg), at, |a, item, event| {
                tell(src, &mut a.tracker, item, event);
                Ok::<(), std::convert::Infallible>(())
            });
        if tracked.hold {
            annotator.hold(item, tracked, at);
        } else {
            tell(src, &mut annotator.tracker, item, tracked.event);
        }
    })?;
    let held: Vec<_> = annotator.finish().collect();
    for (item, event) in held {
        tell(&mut src, &mut annotator.tracker, item, event);
    }
    let tracker = match src.tracker() {
        Some(tracker) => tracker,
        None if tracking => {
            return Err(Error::Usage(format!(
                "{name}: the thread that tracked the segments failed (a bug of teardown)"
            )));
        }
        None => annotator.tracker,
    };
    Scan::of(tracker, read, kind, &name, nothing)
}

/// Reads IN for `summary`: each segment tracked and told to `Seen::add`, in line with the
/// reading's thread. No look-ahead: what summary tells of a connection (who closed first, how,
/// FINs that crossed, a refused SYN) is the same before and after a later segment revises an
/// earlier one's story (a revision moves a change between events of one connection, or drops
/// one into CLOSE_WAIT, SYN_RECEIVED or TIME_WAIT: never one into CLOSING nor a refusal), so
/// the annotator's holding back costs it time and tells it nothing. A test holds the two ways
/// to the same connections over every fixture.
fn tally(input: &str) -> Result<(Scan, Vec<Seen>), Error> {
    let inp = open_input(input)?;
    let name = inp.name;
    let (mut src, kind) = Packets::threaded(inp.reader, &name, false, None).map_err(usage)?;
    // Nor the words a segment's comment would carry.
    let mut tracker = Tracker::new();
    tracker.quiet = true;
    let mut seen = Vec::new();
    let read = each_packet(&mut src, |_, read| {
        if let Some(Readout {
            stamp,
            decoded: Ok(seg),
            ..
        }) = read
        {
            let event = tracker.on_segment_at(&seg, Some(stamp.ts));
            Seen::add(&mut seen, &stamp, seg.flags, &event);
            tracker.recycle(event);
        }
    })?;
    Ok((Scan::of(tracker, read, kind, &name, "summarise")?, seen))
}

impl Seen {
    /// What `event`, a segment with `flags` at `stamp`, tells of its connection.
    fn add(
        seen: &mut Vec<Seen>,
        p: &Stamp,
        flags: crate::tcp::Flags,
        event: &crate::tracker::Event,
    ) {
        if seen.len() <= event.conn {
            seen.resize(event.conn + 1, Seen::default());
            seen[event.conn].first = p.ts;
        }
        let s = &mut seen[event.conn];
        s.last = p.ts;
        s.simultaneous |= event
            .transitions
            .iter()
            .any(|(_, t)| t.to == crate::tcp::State::Closing);
        s.refused |= event
            .transitions
            .iter()
            .any(|(_, t)| t.cause == crate::tcp::Cause::Refused);
        if s.closed_first.is_none() {
            if flags.rst() {
                s.closed_first = Some((event.from, "RST"));
            } else if flags.fin() {
                s.closed_first = Some((event.from, "FIN"));
            }
        }
    }
}

/// What `summary` keeps of a connection while it reads.
#[derive(Clone, Debug, Default, PartialEq)]
struct Seen {
    first: Duration,
    last: Duration,
    closed_first: Option<(Role, &'static str)>,
    /// An end went to CLOSING: the FINs crossed (RFC 9293 §3.6).
    simultaneous: bool,
    /// The SYN was answered by RST,ACK: nothing listened (RFC 9293 §3.10.7.1).
    refused: bool,
}

/// One connection of `summary --json`: a script's interface, keep its keys and their types.
#[derive(serde::Serialize)]
struct SummaryRow {
    conn: usize,
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
    joined_mid: bool,
    /// `client` or `server`; `null` (and `how` too) when neither sent a FIN or RST.
    closed_first: Option<String>,
    /// `FIN` or `RST`.
    how: Option<&'static str>,
    simultaneous_close: bool,
    refused: bool,
    client_state: &'static str,
    server_state: &'static str,
    duration_s: f64,
    segments: u64,
}

/// `teardown summary IN [--json]`: the table on `out`, a warning on `log`.
pub fn summary(
    input: &str,
    json_out: bool,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<i32, Error> {
    let (scan, seen) = tally(input)?;
    let tracker = &scan.tracker;
    // A line per connection: buffered, not a write per line to a line-buffered stdout.
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let rows = tracker.connections().iter().zip(&seen);
    let written: io::Result<()> = if json_out {
        // Row by row into the output: the whole document as one string was as large as the
        // tracker's memory on 100k connections.
        let rows = rows.map(|(c, s)| SummaryRow {
            conn: c.id,
            client: c.client,
            server: c.server,
            joined_mid: c.joined_mid,
            closed_first: s.closed_first.map(|(r, _)| r.to_string()),
            how: s.closed_first.map(|(_, how)| how),
            simultaneous_close: s.simultaneous,
            refused: s.refused,
            client_state: c.state(Role::Client).name(),
            server_state: c.state(Role::Server).name(),
            duration_s: s.last.saturating_sub(s.first).as_secs_f64(),
            segments: c.segments,
        });
        use serde::Serializer as _;
        let pretty = serde_json::ser::PrettyFormatter::new();
        let mut json = serde_json::Serializer::with_formatter(&mut out, pretty);
        json.collect_seq(rows)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        // Each line written into one reused buffer: 100k lines through `format!` were a
        // fifth of the time on a busy server's capture.
        let mut line = String::with_capacity(256);
        rows.into_iter().try_for_each(|(c, s)| {
            summary_line(&mut line, c, s);
            out.write_all(line.as_bytes())
        })
    };
    match written.and_then(|()| out.flush()) {
        // The reader went away (`| head`): what it wanted, it had.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing the summary")(e)),
        _ => Ok(scan.finish("summarised", log)),
    }
}

/// One connection's line of `summary`, in place of what `line` held.
fn summary_line(line: &mut String, c: &crate::tracker::Connection, s: &Seen) {
    use crate::output::text::{push_addr, push_secs3, push_u64, push_u64_left};
    line.clear();
    line.push('#');
    push_u64_left(line, c.id as u64, 3);
    line.push_str(" client ");
    push_addr(line, c.client);
    line.push_str(" ↔ server ");
    push_addr(line, c.server);
    if c.joined_mid {
        line.push_str(" (joined mid-connection)");
    }
    line.push_str("  ");
    match s.closed_first {
        Some(_) if s.refused => {
            line.push_str("refused (RST,ACK answered the SYN: nothing listened)");
        }
        // Crossing FINs: each left before the other arrived, so neither end was first but on
        // the wire.
        Some((role, _)) if s.simultaneous => {
            line.push_str("simultaneous close (the FINs crossed; the ");
            line.push_str(role.name());
            line.push_str("'s was seen first)");
        }
        Some((role, how)) => {
            line.push_str(role.name());
            line.push_str(" closed first (");
            line.push_str(how);
            line.push(')');
        }
        None => line.push_str("not closed in the capture"),
    }
    line.push_str("  final: client ");
    c.push_ending(Role::Client, line);
    line.push_str(", server ");
    c.push_ending(Role::Server, line);
    line.push_str("  ");
    push_secs3(line, s.last.saturating_sub(s.first));
    line.push_str(" s  ");
    push_u64(line, c.segments);
    line.push_str(if c.segments == 1 {
        " segment\n"
    } else {
        " segments\n"
    });
}

/// Which connections `diagram` draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    All,
    Conn(usize),
    Port(u16),
}

/// At most this many diagrams when no connection was chosen.
const MAX_DIAGRAMS: usize = 20;

/// `teardown diagram IN [--conn N | --port P] [--svg OUT.svg]`: the ladder on `out`, or on
/// `log` when the SVG goes to standard output (`--svg -`, one connection only).
pub fn diagram(
    input: &str,
    select: Select,
    svg_path: Option<&Path>,
    color: crate::output::style::ColorChoice,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<i32, Error> {
    // Where the pictures go is checked before a byte of IN is read.
    let mut picture = svg_path
        .map(|p| Dest::check("--svg", p))
        .transpose()
        .map_err(Error::Usage)?;
    let mut kept: Vec<Packet> = Vec::new();
    let scan = each_segment(input, "draw", Tracker::new(), |p, seg, event| {
        let wanted = match select {
            Select::All => event.conn < MAX_DIAGRAMS,
            Select::Conn(n) => event.conn == n,
            Select::Port(port) => seg.src.port() == port || seg.dst.port() == port,
        };
        if wanted {
            // The diagram needs the segment and its event, not the bytes.
            kept.push(Packet {
                frame: Frame {
                    ts: p.ts,
                    data: Vec::new(),
                    orig_len: p.orig_len,
                },
                decoded: Ok(seg),
                event: Some(event),
                comment: String::new(),
                kernel: Vec::new(),
            });
            return None;
        }
        Some(event)
    })?;
    let tracker = &scan.tracker;
    let name = if input == "-" {
        "standard input"
    } else {
        input
    };
    let mut ids: Vec<usize> = kept
        .iter()
        .filter_map(|p| p.event.as_ref().map(|e| e.conn))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(Error::Usage(match select {
            Select::Conn(n) => format!(
                "{name}: no connection #{n}: it has {} (see `teardown summary {input}`)",
                tracker.connections().len()
            ),
            Select::Port(p) => format!("{name}: no connection on port {p}"),
            Select::All => format!("{name}: no TCP connection"),
        }));
    }
    // A stream (standard output, a device, a pipe) takes one picture: SVG documents one
    // after the other are not one SVG.
    if let Some(d) = picture.as_ref().filter(|d| !matches!(d, Dest::File { .. }))
        && ids.len() > 1
    {
        return Err(Error::Usage(format!(
            "--svg {}: {} to draw, and {} takes one picture: choose one with --conn N or \
                 --port P (`teardown summary {input}` numbers them), or give a file name (one \
                 file per connection: NAME-N.svg)",
            svg_path.unwrap_or(Path::new("-")).display(),
            count(ids.len(), "connection"),
            d.name()
        )));
    }
    // The ladder's stream sets its colour and width: standard error when the SVG takes stdout.
    let svg_to_stdout = picture.as_ref().is_some_and(Dest::is_stdout);
    let style = crate::output::style::Style::detect(color, svg_to_stdout);
    let ladder_out: &mut dyn Write = if svg_to_stdout { log } else { out };
    // The first error writing the ladder: said at the end (a full disk), but for a reader
    // that went away (`| head`).
    let mut failed: Option<io::Error> = None;
    let mut keep = |r: io::Result<()>| {
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    };
    for (i, id) in ids.iter().enumerate() {
        let Some(conn) = tracker.connection(*id) else {
            continue;
        };
        if i > 0 {
            keep(writeln!(ladder_out));
        }
        keep(writeln!(ladder_out, "connection #{id}"));
        keep(write!(
            ladder_out,
            "{}",
            ladder::render_checked(&kept, conn, None, &style)
        ));
        // Connections on one 4-tuple (a new SYN meeting the old one's TIME_WAIT) share one
        // picture, as `run` draws them: the first of them draws it.
        let same_tuple: Vec<&crate::tracker::Connection> = ids
            .iter()
            .filter_map(|k| tracker.connection(*k))
            .filter(|c| c.client == conn.client && c.server == conn.server)
            .collect();
        if let Some(first) = same_tuple.first().filter(|f| f.id != *id)
            && let Some(path) = svg_path
            && ids.len() > 1
        {
            keep(writeln!(
                ladder_out,
                "(drawn with connection #{} into {})",
                first.id,
                numbered(path, first.id).display()
            ));
            continue;
        }
        if let Some(path) = svg_path {
            let dest = if ids.len() == 1 {
                picture.take()
            } else {
                // The directory was proven writable at the start.
                Some(Dest::check("--svg", &numbered(path, *id)).map_err(Error::Usage)?)
            };
            let Some(dest) = dest else { continue };
            let shown = dest.name();
            let to_stdout = dest.is_stdout();
            let drawn = if ids.len() == 1 {
                vec![conn]
            } else {
                same_tuple
            };
            let which = drawn
                .iter()
                .map(|c| format!("#{}", c.id))
                .collect::<Vec<_>>()
                .join(", ");
            let heading = crate::output::figure::Heading {
                title: if drawn.len() > 1 {
                    format!("teardown diagram {name}: connections {which} (one 4-tuple)")
                } else {
                    format!("teardown diagram {name}: connection #{id}")
                },
                ..Default::default()
            };
            dest.write_all(svg::render_page(&kept, &drawn, None, &[], &[], &heading).as_bytes())
                .map_err(Error::io(format!("writing {shown}")))?;
            if !to_stdout {
                keep(writeln!(ladder_out, "(drawn into {shown})"));
            }
        }
    }
    if select == Select::All && tracker.connections().len() > MAX_DIAGRAMS {
        keep(writeln!(
            ladder_out,
            "\n({} connections; the first {MAX_DIAGRAMS} are drawn: choose one with --conn N or \
             --port P, `teardown summary {input}` lists them)",
            tracker.connections().len()
        ));
    }
    keep(ladder_out.flush());
    match failed {
        Some(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Error::io("writing the diagram")(e))
        }
        _ => Ok(scan.finish("drew", log)),
    }
}

/// `out.svg` → `out-3.svg` for connection 3.
fn numbered(path: &Path, id: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{id}.svg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_of(file: &str, json: bool) -> String {
        let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
        let (mut out, mut log) = (Vec::new(), Vec::new());
        assert_eq!(summary(&path, json, &mut out, &mut log).unwrap(), 0);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn summary_says_simultaneous_close_when_the_fins_crossed() {
        let text = summary_of("simultaneous-close.pcapng", false);
        assert!(
            text.contains(
                "simultaneous close (the FINs crossed; the server's was seen first)  final: \
                 client TIME_WAIT, server TIME_WAIT"
            ),
            "{text}"
        );
        let rows: serde_json::Value =
            serde_json::from_str(&summary_of("simultaneous-close.pcapng", true)).unwrap();
        assert_eq!(rows[0]["simultaneous_close"], true);
        assert_eq!(rows[0]["how"], "FIN");
        let text = summary_of("active-close.pcapng", false);
        assert!(text.contains("server closed first (FIN)"), "{text}");
    }

    /// summary tallies the tracker's events as they come; the annotator's, held back and
    /// revised, tell the same of every connection of every fixture (and of the real captures,
    /// crossing FINs, refusals, retransmitted SYNs and orphans among them).
    #[test]
    fn summary_without_the_look_ahead_tells_what_the_annotators_events_tell() {
        let dir = format!("{}/tests/data", env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for sub in ["", "/real"] {
            for entry in fs::read_dir(format!("{dir}{sub}")).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .extension()
                    .is_some_and(|e| e == "pcap" || e == "pcapng")
                {
                    files.push(path.display().to_string());
                }
            }
        }
        assert!(files.len() >= 20, "{files:?}");
        let mut revised = 0;
        for file in &files {
            let (_, direct) = tally(file).unwrap();
            let mut held = Vec::new();
            let mut tracker = Tracker::new();
            tracker.quiet = true;
            each_segment(file, "summarise", tracker, |p, seg, event| {
                revised += usize::from(!event.revise().is_empty());
                Seen::add(&mut held, p, seg.flags, &event);
                Some(event)
            })
            .unwrap();
            assert_eq!(direct, held, "{file}");
        }
        // The fixtures hold revised stories: the comparison is not of two unrevised ways.
        assert!(revised >= 3, "{revised}");
    }

    /// `summary --json` is a script's interface: exact keys, and each value's type, both where
    /// a connection closed and where the capture holds neither its start nor its end.
    #[test]
    fn summary_json_rows_have_exactly_the_documented_keys_and_types() {
        use crate::kernel::table::{json_shape, shape_of};
        let row = |first: &'static str, float: &'static str| {
            shape_of(&[
                ("conn", "integer"),
                ("client", "string"),
                ("server", "string"),
                ("joined_mid", "bool"),
                ("closed_first", first),
                ("how", first),
                ("simultaneous_close", "bool"),
                ("refused", "bool"),
                ("client_state", "string"),
                ("server_state", "string"),
                ("duration_s", float),
                ("segments", "integer"),
            ])
        };
        let rows: serde_json::Value =
            serde_json::from_str(&summary_of("active-close.pcapng", true)).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
        assert_eq!(json_shape(&rows[0]), row("string", "float"));
        assert_eq!(rows[0]["client"], "127.0.0.2:38174", "{rows}");
        assert_eq!(rows[0]["server"], "127.0.0.1:8000");
        assert_eq!(rows[0]["closed_first"], "server");
        assert_eq!(rows[0]["how"], "FIN");
        assert_eq!(rows[0]["server_state"], "TIME_WAIT");

        // Segments 4 to 7 of crossing-fins.pcap (pcap: a 24-byte header, then records of a
        // 16-byte header and the bytes it counts): data and ACKs, no SYN, no FIN.
        let real = std::fs::read(format!(
            "{}/tests/data/real/crossing-fins.pcap",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let (mut file, mut at) = (real[..24].to_vec(), 24);
        for n in 1..=7 {
            let len = u32::from_le_bytes(real[at + 8..at + 12].try_into().unwrap()) as usize;
            if n >= 4 {
                file.extend(&real[at..at + 16 + len]);
            }
            at += 16 + len;
        }
        let dir = std::env::temp_dir().join(format!("teardown-mid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mid.pcap");
        std::fs::write(&path, file).unwrap();
        let (mut out, mut log) = (Vec::new(), Vec::new());
        let code = summary(path.to_str().unwrap(), true, &mut out, &mut log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(code, 0);
        let rows: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json_shape(&rows[0]), row("null", "float"), "{rows}");
        assert_eq!(rows[0]["joined_mid"], true, "{rows}");
        assert_eq!(rows[0]["segments"], 4, "{rows}");
    }

    #[test]
    fn summary_says_refused_for_a_syn_answered_by_rst_ack() {
        // A SYN to a closed port and its RST,ACK, as raw IPv4 (link type 228) in a pcap.
        fn ip(
            src: [u8; 4],
            dst: [u8; 4],
            sp: u16,
            dp: u16,
            seq: u32,
            ack: u32,
            flags: u8,
        ) -> Vec<u8> {
            let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
            p.extend(src);
            p.extend(dst);
            p.extend(sp.to_be_bytes());
            p.extend(dp.to_be_bytes());
            p.extend(seq.to_be_bytes());
            p.extend(ack.to_be_bytes());
            p.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
            p
        }
        let (c, s) = ([127, 0, 0, 2], [127, 0, 0, 1]);
        let mut file = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 228] {
            file.extend(if v == 0x0004_0002 {
                [2u8, 0, 4, 0].to_vec()
            } else {
                v.to_le_bytes().to_vec()
            });
        }
        for (i, p) in [
            ip(c, s, 40000, 9, 100, 0, 0x02),
            ip(s, c, 9, 40000, 0, 101, 0x14),
        ]
        .iter()
        .enumerate()
        {
            for v in [1u32, i as u32, p.len() as u32, p.len() as u32] {
                file.extend(v.to_le_bytes());
            }
            file.extend(p);
        }
        let dir = std::env::temp_dir().join(format!("teardown-refused-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("refused.pcap");
        std::fs::write(&path, file).unwrap();
        let (mut out, mut log) = (Vec::new(), Vec::new());
        let code = summary(path.to_str().unwrap(), false, &mut out, &mut log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains(
                "refused (RST,ACK answered the SYN: nothing listened)  final: client \
                 CLOSED, server CLOSED"
            ),
            "{text}"
        );
    }

    #[test]
    fn summary_ends_a_time_wait_a_new_syn_took_over() {
        // The second connection's SYN on the same 4-tuple destroyed the first's TIME_WAIT.
        let text = summary_of("timewait-new-syn.pcapng", false);
        let first = text.lines().next().unwrap();
        assert!(
            first.contains("final: client CLOSED, server CLOSED"),
            "{text}"
        );
    }
}
