//! `teardown capture`: a live capture annotated as it goes. The ring (TPACKET_V3) → the
//! filter → the tracker → a pcapng packet with its comment, written at once (flushed per
//! packet on a pipe). Privileges are given up before the first packet is parsed.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pcap_file::DataLink;

use super::filter::Filter;
use super::ring::Ring;
use crate::annotate::CommentCache;
use crate::decode::decode_ethernet;
use crate::error::{Error, exit};
use crate::kernel::table;
use crate::output::pcapng::{FileInfo, Writer};
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
    pub iface: String,
    pub filter: Filter,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub output: Output,
    pub netns: Option<String>,
    /// `-Z USER`: become this user; without it, every capability is dropped.
    pub user: Option<String>,
}

const POLL: Duration = Duration::from_millis(50);
/// The longest the capture goes on reading what was already captured after a stop.
const DRAIN: Duration = Duration::from_millis(300);

/// ARPHRD_ETHER and ARPHRD_LOOPBACK (`lo` frames carry a 14-byte Ethernet header).
fn link_type(iface: &str) -> Result<DataLink, Error> {
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

pub fn capture(config: &CaptureConfig, log: &mut dyn Write) -> Result<i32, Error> {
    // Kernel stamps on before the first packet (the switch is system-wide: this namespace's
    // loopback will do, before moving to another one).
    let stamps = crate::capture::stamps::switch_on().ok();
    if let Some(name) = &config.netns {
        table::enter_named_netns(name).map_err(Error::Usage)?;
    }
    signals::install();
    let linktype = link_type(&config.iface)?;
    let mut ring = Ring::open(&config.iface, is_loopback(&config.iface), POLL)?;
    // Opened while still privileged (any directory); then handed to -Z USER.
    let out: Box<dyn Write> = match &config.output {
        // Buffered, and flushed after each packet: stdout's own line buffering would flush
        // in the middle of a block at every newline byte.
        Output::Stdout => Box::new(BufWriter::new(io::stdout().lock())),
        Output::File(path) => Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(path).map_err(Error::io(format!("creating {}", path.display())))?,
        )),
    };
    match &config.user {
        Some(user) => {
            let (uid, gid) = privs::lookup_user(user).map_err(|e| Error::Usage(e.to_string()))?;
            if let Output::File(path) = &config.output {
                let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
            }
            privs::become_user(uid, gid).map_err(|e| Error::Usage(e.to_string()))?;
        }
        None => privs::drop_all_capabilities().map_err(|e| Error::Usage(e.to_string()))?,
    }
    let filter_text = if config.filter.text.is_empty() {
        String::new()
    } else {
        format!(", filter {:?}", config.filter.text)
    };
    let info = FileInfo {
        section_comment: format!(
            "teardown capture on {}{filter_text}: every TCP segment commented with the state \
             transitions it caused, inferred from the packets as they came",
            config.iface
        ),
        iface: config.iface.clone(),
        linktype,
    };
    let mut writer = Writer::new(out, &info).map_err(Error::io("writing the capture"))?;
    let _ = writeln!(
        log,
        "teardown capture: listening on {}{filter_text}, privileges dropped (pid {})",
        config.iface,
        std::process::id()
    );
    let flush_each = config.output == Output::Stdout;
    let started = Instant::now();
    let mut tracker = Tracker::new();
    // Most segments change nothing: their few texts are made once.
    let mut comments = CommentCache::default();
    let mut written: u64 = 0;
    let mut failure: Option<io::Error> = None;
    let enough = |written: u64| config.count.is_some_and(|c| written >= c);
    let done = |written: u64| {
        signals::interrupted()
            || enough(written)
            || config.duration.is_some_and(|d| started.elapsed() >= d)
    };
    // After the stop, what the kernel already put in the ring is still written: a block is
    // handed over only when full or after its retire timeout.
    let mut drain_until: Option<Instant> = None;
    loop {
        if failure.is_some() || enough(written) {
            break;
        }
        match drain_until {
            None if done(written) => drain_until = Some(Instant::now() + DRAIN),
            Some(t) if Instant::now() >= t => break,
            _ => {}
        }
        let passed = ring.next_batch(&mut |frame| {
            if failure.is_some() || enough(written) {
                return;
            }
            let decoded = decode_ethernet(frame.data);
            if !config.filter.keeps(&decoded) {
                return;
            }
            let text = match &decoded {
                Ok(seg) => comments.comment(&tracker.on_segment_at(seg, Some(frame.ts))),
                Err(e) => std::borrow::Cow::Owned(e.to_string()),
            };
            // PACKET_OUTGOING is 4: a packet this host sent.
            let outbound = frame.pkttype == 4;
            let result = writer
                .write_frame(frame.ts, frame.data, frame.orig_len, &text, outbound)
                .and_then(|()| if flush_each { writer.flush() } else { Ok(()) });
            match result {
                Ok(()) => written += 1,
                Err(e) => failure = Some(e),
            }
        })?;
        if passed == 0 && drain_until.is_some() {
            break;
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
