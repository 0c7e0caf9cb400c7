//! `teardown capture`: a live capture annotated as it goes. The ring (TPACKET_V3, the
//! filter compiled by libpcap attached to its socket) → the tracker → a pcapng packet with its comment, written at once (flushed per
//! packet on a pipe). Privileges are given up before the first packet is parsed.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pcap_file::DataLink;

use super::filter::{self, Bpf};
use super::ring::{ANY, Ring, SLL2_LEN};
use crate::annotate::{Annotator, CommentCache, Comments};
use crate::decode::{DecodeError, decode};
use crate::error::{Error, exit};
use crate::kernel::table;
use crate::output::pcapng::{Blocks, FileInfo, Writer};
use crate::privs;
use crate::signals;
use crate::tracker::Tracker;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// An interface, or `any` for all of them.
    pub iface: String,
    /// A pcap-filter(7) expression; without one, every TCP segment and nothing else.
    pub filter: Option<String>,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub output: Output,
    pub netns: Option<String>,
    /// `-Z USER`: become this user; without it, every capability is dropped.
    pub user: Option<String>,
    /// Which segments get a comment.
    pub comments: Comments,
}

const POLL: Duration = Duration::from_millis(50);
/// The output file's buffer: each write to the file is about this long.
const FILE_BUFFER: usize = 1 << 18;
/// Stdout's, written after each packet: room for the largest loopback frame and its comment.
const PIPE_BUFFER: usize = 1 << 17;
/// The longest the capture goes on reading what was already captured after a stop.
const DRAIN: Duration = Duration::from_millis(300);

/// ARPHRD_ETHER and ARPHRD_LOOPBACK (`lo` frames carry a 14-byte Ethernet header); `any`
/// is Linux cooked v2, as in tcpdump.
fn link_type(iface: &str) -> Result<DataLink, Error> {
    if iface == ANY {
        return Ok(DataLink::LINUX_SLL2);
    }
    let path = format!("/sys/class/net/{iface}/type");
    match std::fs::read_to_string(&path).map(|t| t.trim().to_string()) {
        Ok(t) if t == "1" || t == "772" => Ok(DataLink::ETHERNET),
        Ok(t) => Err(Error::Usage(format!(
            "{iface} has link type {t} (see /sys/class/net/{iface}/type): teardown captures \
             Ethernet and loopback interfaces only"
        ))),
        // Unknown interfaces are named by the ring, with the list of interfaces.
        Err(_) => Ok(DataLink::ETHERNET),
    }
}

fn is_loopback(iface: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/type")).is_ok_and(|t| t.trim() == "772")
}

/// Where the capture goes.
enum Sink {
    Stdout(io::StdoutLock<'static>),
    File(File),
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(bytes),
            Sink::File(w) => w.write(bytes),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.write_all(bytes),
            Sink::File(w) => w.write_all(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(w) => w.flush(),
        }
    }
}

/// The capture's output: each packet's block appended whole to its buffer.
type Out = Blocks<Sink>;

/// A frame the annotator holds: owned, since the ring's block is handed back.
struct Held {
    ts: Duration,
    data: Vec<u8>,
    orig_len: u32,
    outbound: bool,
    error: Option<String>,
}

fn write_held(
    out: &mut Out,
    comments: &mut CommentCache,
    held: &Held,
    event: Option<&crate::tracker::Event>,
) -> io::Result<()> {
    let text = comments.frame(event, held.error.as_deref());
    out.frame(held.ts, &held.data, held.orig_len, &text, held.outbound)
}

pub fn capture(config: &CaptureConfig, log: &mut dyn Write) -> Result<i32, Error> {
    // Kernel stamps on before the first packet (the switch is system-wide: this namespace's
    // loopback will do, before moving to another one).
    let stamps = crate::capture::stamps::switch_on().ok();
    if let Some(name) = &config.netns {
        table::enter_named_netns(name).map_err(Error::Usage)?;
    }
    signals::install();
    let linktype = link_type(&config.iface)?;
    let link = u32::from(linktype);
    let cooked = linktype == DataLink::LINUX_SLL2;
    let bpf = match config.filter.as_deref() {
        Some(expr) => Some(Bpf::compile(expr, link).map_err(Error::Usage)?),
        None => None,
    };
    let program = bpf.as_ref().map(Bpf::kernel_program);
    let program = match (cooked, crate::capture::live::find_interface("lo")) {
        (true, Ok(lo)) => Some(filter::skip_loopback_outgoing(lo.index, program)),
        _ => program.map(<[_]>::to_vec),
    };
    let mut ring = Ring::open_filtered(
        &config.iface,
        is_loopback(&config.iface),
        program.as_deref(),
        POLL,
    )?;
    // -Z USER must exist before the file is opened: a refusal leaves an old file as it was.
    let user = match &config.user {
        Some(name) => Some((
            name,
            privs::lookup_user(name).map_err(|e| Error::Usage(e.to_string()))?,
        )),
        None => None,
    };
    // Opened while still privileged (any directory); then handed to -Z USER.
    let (out, buffer) = match &config.output {
        // Buffered, and flushed after each packet: stdout's own line buffering would flush
        // in the middle of a block at every newline byte.
        Output::Stdout => (Sink::Stdout(io::stdout().lock()), PIPE_BUFFER),
        // 256 KiB writes: the page cache takes them in larger folios than 64 KiB ones (the
        // write was a fifth of the busy server's capture), and the buffer still stays in the
        // cache beside nginx and ab; 1 MiB ones cost 20% more CPU a packet under that load.
        Output::File(path) => (
            Sink::File(
                File::create(path).map_err(Error::io(format!("creating {}", path.display())))?,
            ),
            FILE_BUFFER,
        ),
    };
    let became = match user {
        Some((user, (uid, gid))) => {
            if let Output::File(path) = &config.output {
                let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
            }
            privs::become_user(uid, gid).map_err(|e| Error::Usage(e.to_string()))?;
            format!("running as user {user} (uid {uid}, gid {gid})")
        }
        None => {
            privs::drop_all_capabilities().map_err(|e| Error::Usage(e.to_string()))?;
            "every capability given up".to_string()
        }
    };
    let filter_text = match &bpf {
        Some(b) => format!(", filter {:?}", b.text),
        None => String::new(),
    };
    let info = FileInfo {
        section_comment: format!(
            "teardown capture on {}{filter_text}, inferred from the packets as they came: {}",
            config.iface,
            config.comments.described()
        ),
        iface: config.iface.clone(),
        linktype,
    };
    let mut writer = Writer::new(out, buffer, &info).map_err(Error::io("writing the capture"))?;
    let place = config
        .netns
        .as_ref()
        .map(|n| format!(" in network namespace {n}"))
        .unwrap_or_default();
    let (dlt, what) = match linktype {
        DataLink::LINUX_SLL2 => ("LINUX_SLL2", "Linux cooked v2"),
        _ => ("EN10MB", "Ethernet"),
    };
    let _ = writeln!(
        log,
        "teardown capture (pid {}): listening on {}{place}, link-type {dlt} ({what}){filter_text}; \
         privileges dropped: {became}",
        std::process::id(),
        config.iface,
    );
    let flush_each = config.output == Output::Stdout;
    let started = Instant::now();
    // The one annotator every front uses: a FIN waits for its answer (a round trip, at most
    // LOOKAHEAD_TIME), the rest goes out as it comes.
    // A finished connection is forgotten 2×MSL after its last segment: memory follows the
    // open connections on a busy server, however long the capture runs.
    let mut annotator: Annotator<Held> =
        Annotator::new(Tracker::forgetful(Duration::from_secs(60)));
    annotator.comments = config.comments;
    // Most segments change nothing: no comment, or (--comments all) their few texts made once.
    let mut comments = CommentCache::new(annotator.comments);
    let mut written: u64 = 0;
    // The buffers of written held frames, for the next one to hold: on a busy server most
    // frames wait behind a FIN, and a fresh buffer for each showed in the profile.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    // Taken in: written or held (what -c counts).
    let mut taken: u64 = 0;
    let mut failure: Option<io::Error> = None;
    // Why the ring stopped giving frames, where it failed.
    let mut stopped: Option<Error> = None;
    // A cooked frame is its SLL2 header, made here, then the packet.
    let mut cooked_frame: Vec<u8> = Vec::new();
    let enough = |taken: u64| config.count.is_some_and(|c| taken >= c);
    let done = |written: u64| {
        signals::interrupted()
            || enough(written)
            || config.duration.is_some_and(|d| started.elapsed() >= d)
    };
    // After the stop, what the kernel already put in the ring is still written: a block is
    // handed over only when full or after its retire timeout.
    let mut drain_until: Option<Instant> = None;
    loop {
        if failure.is_some() || enough(taken) {
            break;
        }
        match drain_until {
            None if done(taken) => drain_until = Some(Instant::now() + DRAIN),
            Some(t) if Instant::now() >= t => break,
            _ => {}
        }
        let taking = ring.next_batch(&mut |frame| {
            if failure.is_some() || enough(taken) {
                return;
            }
            let (data, orig_len) = if cooked {
                cooked_frame.clear();
                cooked_frame.extend_from_slice(&frame.sll2_header());
                cooked_frame.extend_from_slice(frame.data);
                (
                    &cooked_frame[..],
                    frame.orig_len.saturating_add(SLL2_LEN as u32),
                )
            } else {
                (frame.data, frame.orig_len)
            };
            if bpf.as_ref().is_some_and(|b| !b.keeps(data)) {
                return;
            }
            let decoded = decode(link, data);
            let error = match (&decoded, &bpf) {
                (Ok(_), _) => None,
                // Without an expression: TCP segments only.
                (Err(_), None) => return,
                // What the expression asked for besides TCP is written uncommented.
                (Err(DecodeError::NotTcp(_)), Some(_)) => None,
                (Err(e), Some(_)) => Some(e.to_string()),
            };
            taken += 1;
            let at = Some(frame.ts);
            // PACKET_OUTGOING is 4: a packet this host sent.
            let outbound = frame.pkttype == 4;
            // Answered held frames first: the order of the capture.
            let result = annotator
                .step(decoded.as_ref().ok(), at, |a, held, event| {
                    written += 1;
                    write_held(writer.get_mut(), &mut comments, &held, event.as_ref())?;
                    spare.push(held.data);
                    if let Some(event) = event {
                        a.tracker.recycle(event);
                    }
                    Ok(())
                })
                .and_then(|tracked| {
                    if tracked.hold {
                        let mut buffer = spare.pop().unwrap_or_default();
                        buffer.clear();
                        buffer.extend_from_slice(data);
                        let held = Held {
                            ts: frame.ts,
                            data: buffer,
                            orig_len,
                            outbound,
                            error,
                        };
                        annotator.hold(held, tracked, at);
                        return Ok(());
                    }
                    written += 1;
                    let text = comments.frame(tracked.event.as_ref(), error.as_deref());
                    let done = writer
                        .get_mut()
                        .frame(frame.ts, data, orig_len, &text, outbound);
                    if let Some(event) = tracked.event {
                        annotator.tracker.recycle(event);
                    }
                    done
                });
            if let Err(e) = result.and_then(|()| if flush_each { writer.flush() } else { Ok(()) }) {
                failure = Some(e);
            }
        });
        // The ring failed (the interface went away): what was taken, the frames still held
        // for their answer too, is written before the error.
        let passed = match taking {
            Ok(passed) => passed,
            Err(e) => {
                stopped = Some(e.into());
                break;
            }
        };
        // A FIN whose answer never came goes out once its look-ahead is over.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok();
        while let (None, Some((held, event))) = (&failure, annotator.ready(now)) {
            let result = write_held(writer.get_mut(), &mut comments, &held, event.as_ref())
                .and_then(|()| if flush_each { writer.flush() } else { Ok(()) });
            spare.push(held.data);
            written += 1;
            if let Err(e) = result {
                failure = Some(e);
            }
        }
        if passed == 0 && drain_until.is_some() {
            break;
        }
    }
    // Stopped: what the annotator still holds is written too.
    for (held, event) in annotator.finish() {
        if failure.is_some() {
            break;
        }
        match write_held(writer.get_mut(), &mut comments, &held, event.as_ref()) {
            Ok(()) => written += 1,
            Err(e) => failure = Some(e),
        }
    }
    let stats = ring.stats();
    drop(stamps);
    if let Some(e) = failure {
        // A reader that went away (`| head`, a closed Wireshark) ends the capture quietly.
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Ok(exit::REPRODUCED);
        }
        return Err(Error::io("writing the capture")(e));
    }
    if let Some(e) = stopped {
        // The file ends where the packets end: the buffer goes out as the writer is dropped.
        return Err(e);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    match writer.finish(Some(stats), now) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(exit::REPRODUCED),
        Err(e) => return Err(Error::io("writing the capture")(e)),
    }
    let _ = writeln!(
        log,
        "teardown capture: {written} packets written; the kernel received {} and dropped {} \
         (PACKET_STATISTICS)",
        stats.received, stats.dropped
    );
    Ok(exit::REPRODUCED)
}
