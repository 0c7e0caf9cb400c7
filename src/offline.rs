//! Captures other tools made, read offline and without privileges, in one streaming pass:
//! `annotate` (every packet kept byte for byte, with a comment), `summary` (a line per
//! connection) and `diagram` (the ladder, in the terminal or as SVG).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
};
use pcap_file::pcapng::blocks::opt_common::CommonOption;
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use serde_json::json;

use crate::annotate::{CommentCache, Packet};
use crate::capture::Frame;
use crate::decode::{DecodeError, decode, link};
use crate::error::{Error, exit};
use crate::input::{InPacket, Kind, Source};
use crate::output::{ladder, pcapng::write_epb, svg};
use crate::tracker::{Role, Tracker};

/// Opens IN, `-` being standard input.
pub fn open(input: &str) -> Result<Source<Box<dyn Read>>, Error> {
    let reader: Box<dyn Read> = if input == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(input).map_err(Error::io(format!("{input}: cannot open")))?)
    };
    let name = if input == "-" {
        "standard input"
    } else {
        input
    };
    Source::open(reader, name).map_err(|e| Error::Usage(e.to_string()))
}

/// A packet decoded for its link type; an unknown link type is an error for the whole file.
fn decoded(p: &InPacket, name: &str) -> Result<Result<crate::decode::Segment, DecodeError>, Error> {
    if !link::supported(p.linktype) {
        return Err(Error::Usage(format!(
            "{name}: byte {}: link type {} ({:?}) is not one teardown decodes: Ethernet, Linux \
             cooked (SLL, SLL2), raw IPv4/IPv6 and BSD loopback are",
            p.offset,
            p.linktype,
            DataLink::from(p.linktype)
        )));
    }
    Ok(decode(p.linktype, &p.data))
}

fn no_tcp(name: &str, packets: u64) -> Error {
    Error::Usage(format!(
        "{name}: no TCP segment among its {packets} packets: nothing to annotate"
    ))
}

/// What `annotate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Annotated {
    pub packets: u64,
    pub tcp: u64,
    pub connections: usize,
}

/// Annotates a capture read from `input` (named `name` in errors) into `out`: one pass, no
/// file system, no privileges (the fuzz target's entry point).
pub fn annotate_stream<R: Read>(
    input: R,
    name: &str,
    out: &mut dyn Write,
) -> Result<Annotated, Error> {
    let mut src = Source::open(input, name).map_err(|e| Error::Usage(e.to_string()))?;
    let write_err = |e: io::Error| Error::io("writing the annotated capture")(e);
    if let Kind::Pcap {
        linktype,
        snaplen,
        nanos,
    } = src.kind
    {
        // The pcap header's link type (at byte 20) says how every packet is framed.
        if !link::supported(linktype) {
            return Err(Error::Usage(format!(
                "{name}: byte 20: link type {linktype} is not one teardown decodes: Ethernet, \
                 Linux cooked (SLL, SLL2), raw IPv4/IPv6 and BSD loopback are"
            )));
        }
        out.write_all(&pcapng_header(name, linktype, snaplen, nanos)?)
            .map_err(write_err)?;
    }
    // One pass, memory for the open connections only: a finished one is forgotten 2×MSL
    // (60 s of capture time) after its last segment.
    let mut tracker = Tracker::forgetful(Duration::from_secs(60));
    let mut opened = 0usize;
    // Most segments change nothing: their few texts are made once.
    let mut comments = CommentCache::default();
    let (mut packets, mut tcp) = (0u64, 0u64);
    let mut p = InPacket::default();
    while let Some(item) = src.next_into(&mut p) {
        match item.map_err(|e| Error::Usage(e.to_string()))? {
            Some(bytes) => out.write_all(&bytes).map_err(write_err)?,
            None => {
                packets += 1;
                let text: std::borrow::Cow<'_, str> = match decoded(&p, name)? {
                    Ok(seg) => {
                        tcp += 1;
                        let event = tracker.on_segment_at(&seg, Some(p.ts));
                        opened = opened.max(event.conn + 1);
                        let mut text = comments.comment(&event);
                        if seg.captured < seg.len {
                            text.to_mut().push_str(&format!(
                                "; cut by the capture's snaplen: {} of {} payload bytes captured",
                                seg.captured, seg.len
                            ));
                        }
                        text
                    }
                    Err(DecodeError::NotTcp(_)) => std::borrow::Cow::Borrowed(""),
                    Err(e) => std::borrow::Cow::Owned(e.to_string()),
                };
                write_epb(
                    out,
                    p.big_endian,
                    p.interface,
                    p.raw_ts,
                    &p.data,
                    p.orig_len,
                    &p.options,
                    &text,
                )
                .map_err(write_err)?;
            }
        }
    }
    if tcp == 0 {
        return Err(no_tcp(name, packets));
    }
    Ok(Annotated {
        packets,
        tcp,
        connections: opened,
    })
}

/// `teardown annotate IN -o OUT`: through a temporary file, renamed only when all went well.
pub fn annotate(input: &str, output: &Path, log: &mut dyn Write) -> Result<i32, Error> {
    let name = display_name(input);
    let reader: Box<dyn Read> = if input == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(input).map_err(Error::io(format!("{input}: cannot open")))?)
    };
    let to_stdout = output.as_os_str() == "-";
    // A device or a pipe (/dev/null, a FIFO) is written as it is; a file through a temporary
    // one, renamed only when all went well.
    let direct = to_stdout || fs::metadata(output).is_ok_and(|m| !m.is_file());
    let tmp = if direct {
        output.to_path_buf()
    } else {
        output.with_extension(format!("pcapng.{}.part", std::process::id()))
    };
    let result = (|| -> Result<Annotated, Error> {
        let sink: Box<dyn Write> = if to_stdout {
            Box::new(io::stdout().lock())
        } else {
            let file = fs::OpenOptions::new()
                .write(true)
                .create(!direct)
                .truncate(!direct)
                .open(&tmp)
                .map_err(Error::io(format!("creating {}", tmp.display())))?;
            Box::new(file)
        };
        let mut out = BufWriter::with_capacity(1 << 20, sink);
        let done = annotate_stream(reader, &name, &mut out)?;
        out.flush()
            .map_err(Error::io("writing the annotated capture"))?;
        Ok(done)
    })();
    match result {
        Ok(done) => {
            if !direct {
                fs::rename(&tmp, output)
                    .map_err(Error::io(format!("writing {}", output.display())))?;
            }
            let _ = writeln!(
                log,
                "teardown annotate: {} TCP segments of {} packets, {} connection(s), commented into {}",
                done.tcp,
                done.packets,
                done.connections,
                if to_stdout {
                    "standard output".into()
                } else {
                    output.display().to_string()
                }
            );
            Ok(exit::REPRODUCED)
        }
        Err(e) => {
            if !direct {
                let _ = fs::remove_file(&tmp);
            }
            Err(e)
        }
    }
}

/// The section and interface header of a pcapng that carries a pcap file's packets.
fn pcapng_header(name: &str, linktype: u32, snaplen: u32, nanos: bool) -> Result<Vec<u8>, Error> {
    let shb = SectionHeaderBlock {
        options: vec![
            SectionHeaderOption::Common(CommonOption::Comment(
                format!(
                    "{name}, annotated by teardown: every TCP segment commented with the state \
                     transitions it caused"
                )
                .into(),
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

fn display_name(input: &str) -> String {
    if input == "-" {
        "standard input".into()
    } else {
        input.into()
    }
}

/// Reads IN and feeds every TCP segment to a tracker, calling `f` with the packet, the
/// segment and what it did; the tracker at the end (an error if nothing was TCP).
fn each_segment(
    input: &str,
    mut f: impl FnMut(&InPacket, crate::decode::Segment, crate::tracker::Event),
) -> Result<Tracker, Error> {
    let mut src = open(input)?;
    let name = display_name(input);
    let mut tracker = Tracker::new();
    let mut packet = InPacket::default();
    let mut packets = 0u64;
    while let Some(item) = src.next_into(&mut packet) {
        if item.map_err(|e| Error::Usage(e.to_string()))?.is_some() {
            continue;
        }
        packets += 1;
        let Ok(seg) = decoded(&packet, &name)? else {
            continue;
        };
        let event = tracker.on_segment_at(&seg, Some(packet.ts));
        f(&packet, seg, event);
    }
    if tracker.connections().is_empty() {
        return Err(no_tcp(&name, packets));
    }
    Ok(tracker)
}

/// What `summary` keeps of a connection while it reads.
#[derive(Clone, Default)]
struct Seen {
    first: Duration,
    last: Duration,
    closed_first: Option<(Role, &'static str)>,
}

/// `teardown summary IN [--json]`.
pub fn summary(input: &str, json_out: bool, out: &mut dyn Write) -> Result<i32, Error> {
    let mut seen: Vec<Seen> = Vec::new();
    let tracker = each_segment(input, |p, seg, event| {
        if seen.len() <= event.conn {
            seen.resize(event.conn + 1, Seen::default());
            seen[event.conn].first = p.ts;
        }
        let s = &mut seen[event.conn];
        s.last = p.ts;
        if s.closed_first.is_none() {
            if seg.flags.rst() {
                s.closed_first = Some((event.from, "RST"));
            } else if seg.flags.fin() {
                s.closed_first = Some((event.from, "FIN"));
            }
        }
    })?;
    let rows: Vec<serde_json::Value> = tracker
        .connections()
        .iter()
        .zip(&seen)
        .map(|(c, s)| {
            json!({
                "conn": c.id,
                "client": c.client.to_string(),
                "server": c.server.to_string(),
                "joined_mid": c.joined_mid,
                "closed_first": s.closed_first.map(|(r, _)| r.to_string()),
                "how": s.closed_first.map(|(_, how)| how),
                "client_state": c.state(Role::Client).name(),
                "server_state": c.state(Role::Server).name(),
                "duration_s": s.last.saturating_sub(s.first).as_secs_f64(),
                "segments": c.segments,
            })
        })
        .collect();
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        for (c, s) in tracker.connections().iter().zip(&seen) {
            let closed = match s.closed_first {
                Some((role, how)) => format!("{role} closed first ({how})"),
                None => "not closed in the capture".to_string(),
            };
            let _ = writeln!(
                out,
                "#{:<3} client {} ↔ server {}{}  {closed}  final: client {}, server {}  {:.3} s  {} segments",
                c.id,
                c.client,
                c.server,
                if c.joined_mid {
                    " (joined mid-connection)"
                } else {
                    ""
                },
                c.state(Role::Client),
                c.state(Role::Server),
                s.last.saturating_sub(s.first).as_secs_f64(),
                c.segments
            );
        }
    }
    Ok(exit::REPRODUCED)
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

/// `teardown diagram IN [--conn N | --port P] [--svg OUT.svg]`.
pub fn diagram(
    input: &str,
    select: Select,
    svg_path: Option<&Path>,
    out: &mut dyn Write,
) -> Result<i32, Error> {
    let name = display_name(input);
    let mut kept: Vec<Packet> = Vec::new();
    let tracker = each_segment(input, |p, seg, event| {
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
            });
        }
    })?;
    let mut ids: Vec<usize> = kept
        .iter()
        .filter_map(|p| p.event.as_ref().map(|e| e.conn))
        .collect();
    ids.dedup();
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
    for (i, id) in ids.iter().enumerate() {
        let Some(conn) = tracker.connection(*id) else {
            continue;
        };
        if i > 0 {
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "connection #{id}");
        let _ = write!(out, "{}", ladder::render(&kept, conn));
        if let Some(path) = svg_path {
            let file = if ids.len() == 1 {
                path.to_path_buf()
            } else {
                numbered(path, *id)
            };
            fs::write(&file, svg::render(&kept, conn, None))
                .map_err(Error::io(format!("writing {}", file.display())))?;
            let _ = writeln!(out, "(drawn into {})", file.display());
        }
    }
    if select == Select::All && tracker.connections().len() > MAX_DIAGRAMS {
        let _ = writeln!(
            out,
            "\n({} connections; the first {MAX_DIAGRAMS} are drawn: choose one with --conn N or \
             --port P, `teardown summary {input}` lists them)",
            tracker.connections().len()
        );
    }
    Ok(exit::REPRODUCED)
}

/// `out.svg` → `out-3.svg` for connection 3.
fn numbered(path: &Path, id: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{id}.svg"))
}
