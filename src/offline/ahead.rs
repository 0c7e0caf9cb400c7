//! The offline readers' helpers on the second core: one thread reads and decodes the input,
//! the next tracks its segments, a third holds their events back in the annotator's
//! look-ahead until no later segment can revise them, all ahead of the annotating thread,
//! which then only writes; another writes the annotated file behind it. On a busy server's
//! capture, reading, tracking, settling, annotating and the kernel's copy of the output each
//! took a fair share of one core. In order through channels of a few hundred packets at a
//! time, the packets, their events and the errors come out exactly as one thread would give
//! them.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::annotate::Annotator;
use crate::decode::{DecodeError, Segment, decode, link};
use crate::error::Error;
use crate::input::{InPacket, InputError, Kind, Next, PacketView, Source};
use crate::tracker::{Event, Tracker};

/// Events done with, handed back to the tracking thread that made them: their lists are
/// filled again there, and their words freed by the thread that allocated them (a free on
/// another thread's memory took glibc's slow path).
type Done = VecDeque<Event>;

/// Items in order, and their packets' bytes in one buffer: a packet crosses to the next core
/// as a few cache lines in a row, not as a buffer of its own (on a busy server's capture the
/// annotator stalled on the first touch of each packet's buffer). Emptied
/// batches go back to the reader, so that a batch's memory is allocated once and freed by the
/// thread that allocated it.
///
/// A packet's place and its event lie beside the items, not in them: an item is less than
/// half the bytes to move, and each thread writes only what it makes.
#[derive(Default)]
pub struct Batch {
    items: VecDeque<Crossing>,
    /// The packets' places, in order, where the reading keeps their bytes.
    placed: VecDeque<Placed>,
    /// The events of the packets that decoded, in order, where the reading tracks: the
    /// tracking thread's memory, handed back to it with the events done with (`Done`).
    events: VecDeque<Event>,
    /// The packets' bytes, where `placed` says. A pcap's are the reading's own buffer,
    /// handed over (`Source::hand_over`): each record header before its packet, and at the
    /// end what was read past the batch's last record; a pcapng's are copied in one after
    /// the other.
    bytes: Vec<u8>,
}

/// A batch tracked, with how many of its items are packets (counted as it was tracked): what
/// the settling thread waits for before it hands the batch on.
type TrackedBatch = (Batch, usize);

impl Batch {
    /// `in_place`: its bytes are a reading's buffer (`Source::hand_over`), read into as they
    /// are (zeroes the kernel gives, not written here); or else a packet's bytes are put at
    /// their end.
    fn with_capacity(in_place: bool) -> Batch {
        let room = BATCH_BYTES + (BATCH_BYTES >> 2);
        Batch {
            items: VecDeque::with_capacity(BATCH),
            placed: VecDeque::with_capacity(BATCH),
            // The tracking thread's own, used again there (`Done`).
            events: VecDeque::new(),
            bytes: if in_place {
                vec![0; room]
            } else {
                Vec::with_capacity(room)
            },
        }
    }
}

impl From<VecDeque<Crossing>> for Batch {
    fn from(items: VecDeque<Crossing>) -> Batch {
        Batch {
            items,
            ..Batch::default()
        }
    }
}

/// An item as a batch carries it: `Ahead` without a packet's place and event.
enum Crossing {
    Packet(Stamp, Result<Segment, DecodeError>),
    Block(Vec<u8>),
    Cut(InputError),
    Failed(Error),
    End,
}

impl Crossing {
    /// The item, with its packet's place and event.
    #[inline(always)]
    fn ahead(self, packet: Option<Placed>, event: Option<Event>) -> Ahead {
        match self {
            Crossing::Packet(stamp, decoded) => Ahead::Packet(Readout {
                stamp,
                packet,
                decoded,
                event,
            }),
            Crossing::Block(b) => Ahead::Block(b),
            Crossing::Cut(e) => Ahead::Cut(e),
            Crossing::Failed(e) => Ahead::Failed(e),
            Crossing::End => Ahead::End,
        }
    }
}

/// Where a packet's bytes are in its batch (or in an in-line reading's buffer), and what its
/// block keeps beside them.
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    pub raw_ts: u64,
    pub interface: u32,
    pub orig_len: u32,
    pub big_endian: bool,
    data: (u32, u32),
    /// Its options as stored, teardown's own comments left out (annotating again replaces
    /// them).
    options: (u32, u32),
}

/// What a packet's block is written from.
#[derive(Clone, Copy, Debug)]
pub struct Stored<'a> {
    pub raw_ts: u64,
    pub interface: u32,
    pub orig_len: u32,
    pub big_endian: bool,
    pub data: &'a [u8],
    pub options: &'a [u8],
}

impl Placed {
    /// Its bytes out of `bytes`, the buffer it was placed in.
    fn stored<'a>(&self, bytes: &'a [u8]) -> Stored<'a> {
        let range = |(a, b): (u32, u32)| &bytes[a as usize..b as usize];
        Stored {
            raw_ts: self.raw_ts,
            interface: self.interface,
            orig_len: self.orig_len,
            big_endian: self.big_endian,
            data: range(self.data),
            options: range(self.options),
        }
    }
}

impl<'a> From<&'a InPacket> for Stored<'a> {
    fn from(p: &'a InPacket) -> Stored<'a> {
        Stored {
            raw_ts: p.raw_ts,
            interface: p.interface,
            orig_len: p.orig_len,
            big_endian: p.big_endian,
            data: &p.data,
            options: &p.options,
        }
    }
}

/// `p` onto the end of `bytes`; or, read where it is kept (`PacketView::at`), where it lies.
#[inline(always)]
fn place(bytes: &mut Vec<u8>, p: &PacketView<'_>) -> Placed {
    if let Some(at) = p.at {
        // A pcap record: no options.
        let end = (at + p.data.len()) as u32;
        return Placed {
            raw_ts: p.raw_ts,
            interface: p.interface,
            orig_len: p.orig_len,
            big_endian: p.big_endian,
            data: (at as u32, end),
            options: (end, end),
        };
    }
    copy_placed(bytes, p)
}

/// `p` onto the end of `bytes`.
fn copy_placed(bytes: &mut Vec<u8>, p: &PacketView<'_>) -> Placed {
    let start = bytes.len() as u32;
    bytes.extend_from_slice(p.data);
    let data_end = bytes.len() as u32;
    if p.comments
        .iter()
        .any(|c| crate::annotate::is_teardown_comment(c))
    {
        crate::input::push_options_without(
            p.options,
            p.big_endian,
            crate::annotate::is_teardown_comment,
            bytes,
        );
    } else {
        bytes.extend_from_slice(p.options);
    }
    Placed {
        raw_ts: p.raw_ts,
        interface: p.interface,
        orig_len: p.orig_len,
        big_endian: p.big_endian,
        data: (start, data_end),
        options: (data_end, bytes.len() as u32),
    }
}

/// Packets a batch carries: the channel's cost spread over many, the wait for the first
/// short (a batch is read in well under a millisecond).
const BATCH: usize = 1024;

/// A batch is cut short once its packets' bytes reach this: memory in flight stays a few
/// MiB, whatever the packets' size (64 KiB segments where the NIC offloads).
const BATCH_BYTES: usize = 1 << 20;

/// A packet read and decoded.
pub struct Readout {
    pub stamp: Stamp,
    /// Where the packet's bytes are, where the reading keeps them (`annotate`); none for
    /// `summary` and `diagram`, which decode them where they were read and copy nothing.
    pub packet: Option<Placed>,
    pub decoded: Result<Segment, DecodeError>,
    /// The tracker's event for the segment, settled by the look-ahead, where the reading
    /// tracks too.
    pub event: Option<Event>,
}

/// One item of the input.
// A packet is what nearly every item is: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Ahead {
    Packet(Readout),
    /// A pcapng block that is no packet, as its bytes.
    Block(Vec<u8>),
    /// The input ended inside a block: what came before is whole.
    Cut(InputError),
    /// The input cannot be read on (a block that does not parse, a link type teardown does
    /// not decode): the error for the whole command.
    Failed(Error),
    /// The input's end, as the reading thread met it: without it, a channel that closes is
    /// a thread that stopped, not the end of the file.
    End,
}

/// An item of a batch as `Packets::each_settled` hands it on.
pub enum Settled<'a, 'r> {
    /// The packets that follow, one after the other where they lie in their batch: `next`
    /// gives each, up to the next item that is no packet. A call for each run of them, not
    /// for each packet: the call and the item made and matched twice showed in the profile.
    Packets(&'r mut Run<'a>),
    Block(&'a [u8]),
    Cut(InputError),
    Failed(Error),
}

/// Packets in a row of a batch (`Settled::Packets`).
#[derive(Clone)]
pub struct Run<'a> {
    /// From the next packet on, to the batch's end.
    items: &'a [Crossing],
    placed: std::slice::Iter<'a, Placed>,
    events: std::slice::Iter<'a, Event>,
    bytes: &'a [u8],
}

/// A packet of a `Run`.
pub struct SettledPacket<'a> {
    /// Its bytes, where the reading keeps them (`annotate`).
    pub stored: Option<Stored<'a>>,
    pub decoded: &'a Result<Segment, DecodeError>,
    /// The tracker's event, settled by the look-ahead.
    pub event: Option<&'a Event>,
}

impl<'a> Run<'a> {
    /// Each packet of the run given to `f` in turn, up to `f`'s error; where the run is, kept
    /// in registers meanwhile (a walk through `&mut Run` stores it back at every packet).
    #[inline(always)]
    pub fn try_each<E>(
        &mut self,
        f: impl FnMut(SettledPacket<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut run = self.clone();
        let done = run.try_for_each(f);
        *self = run;
        done
    }
}

impl<'a> Iterator for Run<'a> {
    type Item = SettledPacket<'a>;

    #[inline]
    fn next(&mut self) -> Option<SettledPacket<'a>> {
        let [Crossing::Packet(_, decoded), rest @ ..] = self.items else {
            return None;
        };
        self.items = rest;
        Some(SettledPacket {
            stored: self.placed.next().map(|p| p.stored(self.bytes)),
            decoded,
            event: decoded.is_ok().then(|| self.events.next()).flatten(),
        })
    }
}

/// A reading thread that went away without the input's end: nothing is lost without a word.
fn stopped() -> Error {
    Error::Usage(
        "a thread reading or tracking the input stopped before its end (a bug of teardown)".into(),
    )
}

/// Reads `src` into `Ahead`s, on a thread of its own where one can be had (`threaded`), or
/// as asked (a live input: a packet goes on as soon as it came).
// One of them per command: the sizes of its two ways do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Packets<R: Read> {
    Inline {
        src: Source<R>,
        name: String,
        spare: InPacket,
        /// The last packet's bytes (`keep`).
        bytes: Vec<u8>,
        done: bool,
        keep: bool,
    },
    Threaded {
        batches: Receiver<Batch>,
        batch: Batch,
        /// Batches emptied, for the reader to fill again.
        empties: Sender<Batch>,
        /// The end, a cut or an error came: nothing follows.
        ended: bool,
        /// The tracking thread, its tracker coming back at the end, and the events done with
        /// that go back to it.
        tracking: Option<JoinHandle<Tracker>>,
        done_back: Option<Sender<Done>>,
        done: Done,
    },
}

/// A packet's time and length, all that `summary` and `diagram` keep of it.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub ts: std::time::Duration,
    pub orig_len: u32,
}

/// One item read and decoded (what both ways share), given to `put` with its place: where
/// its bytes lie in the buffer handed over (a pcap record read in place), or copied onto
/// `bytes` (pcapng); none without `bytes`. None at the input's end, true after
/// the last item (a cut or an error). An item is put where it goes, not returned: moving it
/// up through each caller's result cost more than the decoding.
#[inline(always)]
fn read_into<R: Read>(
    src: &mut Source<R>,
    name: &str,
    spare: &mut InPacket,
    bytes: Option<&mut Vec<u8>>,
    mut put: impl FnMut(Crossing, Option<Placed>),
) -> Option<bool> {
    // The usual case on its own way: the general one's result, moved through its layers of
    // enums, cost more than the packet's decoding.
    if let Some(p) = src.next_usual() {
        return Some(packet(&p, name, bytes, &mut put));
    }
    Some(match src.next_view(spare)? {
        Ok(Next::Packet(p)) => packet(&p, name, bytes, &mut put),
        Ok(Next::Block(block)) => {
            put(Crossing::Block(block), None);
            false
        }
        Err(e) if e.cut_at.is_some() => {
            put(Crossing::Cut(e), None);
            true
        }
        Err(e) => {
            put(Crossing::Failed(super::usage(e)), None);
            true
        }
    })
}

/// A packet read, decoded and placed, to `put`; true if its link type ends the reading.
#[inline(always)]
fn packet(
    p: &PacketView<'_>,
    name: &str,
    bytes: Option<&mut Vec<u8>>,
    put: &mut impl FnMut(Crossing, Option<Placed>),
) -> bool {
    if !link::supported(p.linktype) {
        let e = super::unsupported_link(p.linktype, p.offset, name);
        put(Crossing::Failed(e), None);
        return true;
    }
    let stamp = Stamp {
        ts: p.ts,
        orig_len: p.orig_len,
    };
    let placed = bytes.map(|b| place(b, p));
    put(Crossing::Packet(stamp, decode(p.linktype, p.data)), placed);
    false
}

impl<R: Read> Packets<R> {
    /// `bytes`: each packet's bytes are kept (`Readout::packet`), or only its stamp.
    pub fn inline(src: Source<R>, name: &str, bytes: bool) -> Packets<R> {
        Packets::Inline {
            src,
            name: name.to_string(),
            spare: InPacket::default(),
            bytes: Vec::new(),
            done: false,
            keep: bytes,
        }
    }

    /// The bytes of `p`, a packet of the item `next` gave last.
    pub fn stored(&self, p: &Placed) -> Stored<'_> {
        match self {
            Packets::Inline { bytes, .. } => p.stored(bytes),
            Packets::Threaded { batch, .. } => p.stored(&batch.bytes),
        }
    }

    pub fn next(&mut self) -> Option<Ahead> {
        match self {
            Packets::Inline {
                src,
                name,
                spare,
                bytes,
                done,
                keep,
            } => {
                if *done {
                    return None;
                }
                bytes.clear();
                let mut item = None;
                read_into(src, name, spare, keep.then_some(bytes), |read, placed| {
                    item = Some(read.ahead(placed, None))
                });
                *done = matches!(item, None | Some(Ahead::Cut(_) | Ahead::Failed(_)));
                item
            }
            Packets::Threaded {
                batches,
                batch,
                empties,
                ended,
                ..
            } => loop {
                if *ended {
                    return None;
                }
                match batch.items.pop_front() {
                    Some(Crossing::End) => *ended = true,
                    Some(item) => {
                        *ended = matches!(item, Crossing::Cut(_) | Crossing::Failed(_));
                        let (packet, event) = match &item {
                            Crossing::Packet(_, decoded) => (
                                batch.placed.pop_front(),
                                decoded.as_ref().ok().and_then(|_| batch.events.pop_front()),
                            ),
                            _ => (None, None),
                        };
                        return Some(item.ahead(packet, event));
                    }
                    None => match batches.recv() {
                        // The last batch's packets are done with: its bytes go back.
                        Ok(next) => {
                            let empty = std::mem::replace(batch, next);
                            let _ = empties.send(empty);
                        }
                        // Nothing is lost without a word.
                        Err(_) => {
                            *ended = true;
                            return Some(Ahead::Failed(stopped()));
                        }
                    },
                }
            },
        }
    }

    /// Every item of a reading that tracks and settles (`tracked`) handed to `f` in order,
    /// by reference where it lies in its batch (packets a run at a time): nothing is moved out
    /// but a cut or an error. The packets of a run that `f` leaves are passed over. A batch
    /// done with goes back whole, its bytes to the reader and its events to the tracking
    /// thread. Stops at `f`'s error, or after the end, a cut or an error.
    pub fn each_settled<E>(
        &mut self,
        mut f: impl FnMut(Settled<'_, '_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let Packets::Threaded {
            batches,
            batch,
            empties,
            ended,
            done_back,
            ..
        } = self
        else {
            return Ok(());
        };
        while !*ended {
            let Batch {
                items,
                placed,
                events,
                bytes,
            } = batch;
            // As slices (a batch is one already, as the reader filled it): a deque's iterator
            // minds its two halves on every step.
            let (placed, events) = (&*placed.make_contiguous(), &*events.make_contiguous());
            let items = items.make_contiguous();
            // Where the next item, place and event are.
            let (mut at, mut place, mut event) = (0, 0, 0);
            while at < items.len() {
                match &mut items[at] {
                    Crossing::Packet(..) => {
                        let mut run = Run {
                            items: &items[at..],
                            placed: placed[place..].iter(),
                            events: events[event..].iter(),
                            bytes,
                        };
                        f(Settled::Packets(&mut run))?;
                        // What `f` left is passed over: its places and events with it.
                        for _ in run.by_ref() {}
                        at = items.len() - run.items.len();
                        place = placed.len() - run.placed.as_slice().len();
                        event = events.len() - run.events.as_slice().len();
                    }
                    Crossing::Block(block) => {
                        f(Settled::Block(block))?;
                        at += 1;
                    }
                    Crossing::End => {
                        *ended = true;
                        return Ok(());
                    }
                    item @ (Crossing::Cut(_) | Crossing::Failed(_)) => {
                        *ended = true;
                        return match std::mem::replace(item, Crossing::End) {
                            Crossing::Cut(e) => f(Settled::Cut(e)),
                            Crossing::Failed(e) => f(Settled::Failed(e)),
                            _ => Ok(()),
                        };
                    }
                }
            }
            // The next batch; this one back whole, its bytes to the reader and its events to
            // the tracking thread.
            let Ok(next) = batches.recv() else {
                *ended = true;
                return f(Settled::Failed(stopped()));
            };
            let mut empty = std::mem::replace(batch, next);
            let events = std::mem::take(&mut empty.events);
            if let Some(back) = done_back.as_ref()
                && events.capacity() > 0
            {
                let _ = back.send(events);
            }
            empty.items.clear();
            let _ = empties.send(empty);
        }
        Ok(())
    }

    /// Whether the segments come tracked, their events settled by the look-ahead and in the
    /// order of the capture (`Readout::event`): then the events taken from `next` go back
    /// through `recycle` (`each_settled` gives each batch's back whole), and `tracker` gives
    /// the tracker at the end.
    pub fn tracked(&self) -> bool {
        matches!(
            self,
            Packets::Threaded {
                tracking: Some(_),
                ..
            }
        )
    }

    /// An event done with, its list for the tracker that made it: `local` where this reading
    /// does not track.
    pub fn recycle(&mut self, event: Event, local: &mut Tracker) {
        match self {
            Packets::Threaded {
                done_back: Some(back),
                done,
                ..
            } => {
                // An event with nothing on the heap is dropped here: nothing to free.
                let owns = event.transitions.capacity() > 0 || event.rare_on_heap();
                if owns {
                    done.push_back(event);
                    if done.len() >= 256 {
                        let full = std::mem::replace(done, VecDeque::with_capacity(256));
                        let _ = back.send(full);
                    }
                }
            }
            _ => local.recycle(event),
        }
    }

    /// The tracker of a reading that tracks, once every item was taken.
    pub fn tracker(&mut self) -> Option<Tracker> {
        match self {
            Packets::Threaded {
                tracking, batches, ..
            } => {
                // Whatever the caller did not take is dropped: the threads end.
                *batches = sync_channel(0).1;
                tracking.take().and_then(|t| t.join().ok())
            }
            Packets::Inline { .. } => None,
        }
    }
}

impl<R: Read + Send + 'static> Packets<R> {
    /// `input` opened as a capture and read on a thread of its own, and its segments tracked
    /// and their events settled on another, as `settle` says (in line where no thread can
    /// be had: then the caller tracks and settles); its kind, or why it is no capture.
    pub fn threaded(
        input: R,
        name: &str,
        bytes: bool,
        settle: Option<Tracker>,
    ) -> Result<(Packets<R>, Kind), InputError> {
        let (tx, read) = sync_channel::<Batch>(2);
        let (empties, emptied) = channel::<Batch>();
        let (opened_tx, opened) = channel::<Result<Kind, InputError>>();
        // The input comes back from a thread that could not be started.
        let slot = Arc::new(Mutex::new(Some(input)));
        let theirs = Arc::clone(&slot);
        let thread_name = name.to_string();
        let started = std::thread::Builder::new()
            .name("teardown-read".into())
            .spawn(move || {
                let Some(input) = theirs.lock().ok().and_then(|mut s| s.take()) else {
                    return;
                };
                match Source::open(input, &thread_name) {
                    Ok(src) => {
                        let _ = opened_tx.send(Ok(src.kind));
                        read_ahead(src, &thread_name, bytes, tx, emptied);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                }
            });
        if started.is_err() {
            let input = slot.lock().ok().and_then(|mut s| s.take());
            if let Some(input) = input {
                let src = Source::open(input, name)?;
                let kind = src.kind;
                return Ok((Packets::inline(src, name, bytes), kind));
            }
        }
        let kind = opened.recv().unwrap_or_else(|_| {
            Err(InputError {
                file: name.to_string(),
                offset: 0,
                what: "the reading thread ended before it opened the input".into(),
                cut_at: None,
            })
        })?;
        // The tracker on a thread of its own, between the reader and the caller, and the
        // look-ahead that settles its events on another: tracking alone took as long as
        // reading and writing together on a busy server's capture.
        let (mut batches, mut tracking, mut done_back) = (read, None, None);
        if let Some(tracker) = settle {
            let (tx, raw) = sync_channel::<TrackedBatch>(2);
            let (to_caller, settled) = sync_channel::<Batch>(2);
            let (give, done) = channel::<Done>();
            // The reader's batches come back from a thread that could not be started.
            let slot = Arc::new(Mutex::new(Some(batches)));
            let theirs = Arc::clone(&slot);
            // Without the settling thread, nothing is tracked ahead: the caller does both.
            let started = std::thread::Builder::new()
                .name("teardown-settle".into())
                .spawn(move || settle_ahead(raw, to_caller))
                .and_then(|_| {
                    std::thread::Builder::new()
                        .name("teardown-track".into())
                        .spawn(move || {
                            let mine = theirs.lock().ok().and_then(|mut s| s.take());
                            track_ahead(tracker, mine, tx, done)
                        })
                });
            match started {
                Ok(thread) => {
                    batches = settled;
                    tracking = Some(thread);
                    done_back = Some(give);
                }
                // No thread to track: the caller's annotator tracks, as in line.
                Err(_) => match slot.lock().ok().and_then(|mut s| s.take()) {
                    Some(untracked) => batches = untracked,
                    None => {
                        return Ok((
                            Packets::Threaded {
                                batches: sync_channel(0).1,
                                batch: VecDeque::from([Crossing::Failed(Error::Usage(
                                    "cannot start a thread to track the input's segments: out \
                                     of threads or memory"
                                        .into(),
                                ))])
                                .into(),
                                empties,
                                ended: false,
                                tracking: None,
                                done_back: None,
                                done: VecDeque::new(),
                            },
                            kind,
                        ));
                    }
                },
            }
        }
        Ok((
            Packets::Threaded {
                batches,
                batch: Batch::default(),
                empties,
                ended: false,
                tracking,
                done_back,
                done: VecDeque::new(),
            },
            kind,
        ))
    }
}

/// Tracks each batch's segments in order, then hands the batch on; the tracker at the end.
fn track_ahead(
    mut tracker: Tracker,
    batches: Option<Receiver<Batch>>,
    tx: SyncSender<TrackedBatch>,
    done: Receiver<Done>,
) -> Tracker {
    let Some(batches) = batches else {
        return tracker;
    };
    // Emptied lists of events, for the next batches' events.
    let mut spares: Vec<Done> = Vec::new();
    for mut batch in batches {
        while let Ok(mut events) = done.try_recv() {
            // One pass: each event's list taken back, then the event dropped (a second pass
            // to drop them showed in the profile).
            for mut event in events.drain(..) {
                tracker.recycle_list(&mut event);
            }
            if spares.len() < 8 {
                spares.push(events);
            }
        }
        if batch.events.capacity() == 0
            && let Some(events) = spares.pop()
        {
            batch.events = events;
        }
        let Batch { items, events, .. } = &mut batch;
        let mut packets = 0;
        for item in items.iter() {
            match item {
                Crossing::Packet(stamp, Ok(seg)) => {
                    packets += 1;
                    events.push_back(tracker.on_segment_at(seg, Some(stamp.ts)));
                }
                Crossing::Packet(_, Err(_)) => packets += 1,
                _ => {}
            }
        }
        if tx.send((batch, packets)).is_err() {
            break;
        }
    }
    tracker
}

/// Batches whose packets have not all left the look-ahead, oldest first, with how many of
/// each still wait. A batch's own events are taken from its front as its packets go in, and
/// put back at its end as they leave.
#[derive(Default)]
struct Owed {
    batches: VecDeque<(Batch, usize)>,
    /// The oldest batch that still waits: those before it only wait to be sent.
    first: usize,
}

impl Owed {
    /// An event that left the look-ahead, to the oldest batch still waiting for one: they
    /// leave in the order of the capture.
    #[inline]
    fn give(&mut self, event: Option<Event>) {
        // A batch without packets (blocks only) never waited.
        while self
            .batches
            .get(self.first)
            .is_some_and(|(_, waits)| *waits == 0)
        {
            self.first += 1;
        }
        let Some((batch, waits)) = self.batches.get_mut(self.first) else {
            debug_assert!(false, "an event that no batch waits for");
            return;
        };
        *waits -= 1;
        if let Some(event) = event {
            batch.events.push_back(event);
        }
    }

    /// Batches whose packets all left, sent on; false once the annotating thread is gone.
    fn send(&mut self, tx: &SyncSender<Batch>) -> bool {
        while self.batches.front().is_some_and(|(_, waits)| *waits == 0) {
            let (batch, _) = self.batches.pop_front().expect("a batch");
            self.first = self.first.saturating_sub(1);
            if tx.send(batch).is_err() {
                return false;
            }
        }
        true
    }
}

/// Settles each batch's events in the one annotator's look-ahead, then hands the batch on
/// once every one of its packets went through it. Its annotator only holds and revises: the
/// events come made.
fn settle_ahead(batches: Receiver<TrackedBatch>, tx: SyncSender<Batch>) {
    let mut annotator: Annotator<()> = Annotator::new(Tracker::new());
    let mut owed = Owed::default();
    for (mut batch, waits) in batches {
        // The batch's events not yet taken into the look-ahead, and its items, read here
        // while the batches take the events that leave.
        let mut untaken = batch.events.len();
        let items = std::mem::take(&mut batch.items);
        owed.batches.push_back((batch, waits));
        let newest = owed.batches.len() - 1;
        for item in &items {
            let (stamp, seg) = match item {
                Crossing::Packet(stamp, Ok(seg)) => (stamp, Some(seg)),
                // Every packet keeps its place: what is held waits at most so many packets,
                // TCP or not, and a capture's other packets do not keep batches back.
                Crossing::Packet(stamp, Err(_)) => (stamp, None),
                // A block that is no packet ends the look-ahead: the packets before it
                // belong before it.
                Crossing::Block(_) | Crossing::Cut(_) | Crossing::Failed(_) | Crossing::End => {
                    for ((), event) in annotator.finish() {
                        owed.give(event);
                    }
                    continue;
                }
            };
            let at = Some(stamp.ts);
            let event = if seg.is_some() && untaken > 0 {
                untaken -= 1;
                owed.batches[newest].0.events.pop_front()
            } else {
                None
            };
            let step = annotator.step_placed(seg, event, at, |_, (), event| {
                owed.give(event);
                Ok::<(), std::convert::Infallible>(())
            });
            let Ok(tracked) = step;
            if tracked.hold {
                annotator.hold((), tracked, at);
            } else {
                owed.give(tracked.event);
            }
        }
        owed.batches[newest].0.items = items;
        if !owed.send(&tx) {
            return;
        }
    }
    // The reading ended (or stopped): whatever is still held goes.
    for ((), event) in annotator.finish() {
        owed.give(event);
    }
    owed.send(&tx);
}

fn read_ahead<R: Read>(
    mut src: Source<R>,
    name: &str,
    keep: bool,
    tx: SyncSender<Batch>,
    empties: Receiver<Batch>,
) {
    let mut spare = InPacket::default();
    // A pcap's records are read into the batches' own memory and kept where they lie, not
    // copied from the reading's buffer: each batch's bytes are the buffer its packets were
    // read into, handed over as the batch goes.
    let in_place = keep && matches!(src.kind, Kind::Pcap { .. });
    let fresh = |empties: &Receiver<Batch>| {
        let mut batch = empties
            .try_recv()
            .unwrap_or_else(|_| Batch::with_capacity(in_place));
        if !in_place {
            batch.bytes.clear();
        }
        batch.placed.clear();
        batch.events.clear();
        batch
    };
    let mut batch = fresh(&empties);
    // The reading's first buffer comes out with nothing kept in it, for the next batch.
    if in_place {
        src.hand_over(&mut batch.bytes);
    }
    // Where the batch's packets' bytes end, in its bytes or in the buffer read into.
    let mut held = 0;
    loop {
        let Batch {
            items,
            placed,
            bytes,
            ..
        } = &mut batch;
        let put = |item, place: Option<Placed>| {
            items.push_back(item);
            if let Some(place) = place {
                held = place.options.1 as usize;
                placed.push_back(place);
            }
        };
        match read_into(&mut src, name, &mut spare, keep.then_some(bytes), put) {
            None => {
                batch.items.push_back(Crossing::End);
                break;
            }
            Some(true) => break,
            Some(false) => {}
        }
        if batch.items.len() == BATCH || held >= BATCH_BYTES {
            held = 0;
            let mut next = fresh(&empties);
            if in_place {
                // The reading goes on in the next batch's memory; this one takes its own.
                src.hand_over(&mut next.bytes);
                std::mem::swap(&mut batch.bytes, &mut next.bytes);
            }
            let full = std::mem::replace(&mut batch, next);
            // The reader went away (an error, a closed pipe): nothing more to read for.
            if tx.send(full).is_err() {
                return;
            }
        }
    }
    if in_place {
        let mut last = std::mem::take(&mut batch.bytes);
        src.hand_over(&mut last);
        batch.bytes = last;
    }
    let _ = tx.send(batch);
}

/// A writer whose bytes go out on a thread of its own, in buffers of a megabyte: the
/// kernel's copy of a large output overlaps the work that makes the next one. An error of
/// the destination comes back on the next write, or at `finish`.
pub struct Behind {
    tx: Option<SyncSender<Vec<u8>>>,
    back: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// How the thread ended, once it did: its error is said again on every later call, so
    /// that the destination's own error (a full disk) is the one the user sees.
    ended: Option<(io::ErrorKind, String)>,
}

const OUT_BUFFER: usize = 1 << 20;

impl Behind {
    /// `sink` written on a new thread; `Err(sink)` where no thread can be had.
    pub fn new<W: Write + Send + 'static>(sink: W) -> Result<Behind, io::Error> {
        let (tx, rx) = sync_channel::<Vec<u8>>(2);
        let (give, back) = channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("teardown-write".into())
            .spawn(move || {
                let mut sink = sink;
                for mut buf in rx {
                    sink.write_all(&buf)?;
                    buf.clear();
                    let _ = give.send(buf);
                }
                sink.flush()
            })?;
        Ok(Behind {
            tx: Some(tx),
            back,
            buf: Vec::with_capacity(OUT_BUFFER),
            thread: Some(thread),
            ended: None,
        })
    }

    /// The buffer so far handed to the thread.
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(OUT_BUFFER));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(full).is_ok());
        if sent { Ok(()) } else { self.finish() }
    }

    /// Everything written and flushed, or the destination's error (the same on every call).
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.buf.is_empty()
            && let Some(tx) = &self.tx
        {
            let _ = tx.send(std::mem::take(&mut self.buf));
        }
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            self.ended = Some(match thread.join() {
                Ok(Ok(())) => (io::ErrorKind::Other, String::new()),
                Ok(Err(e)) => (e.kind(), e.to_string()),
                Err(_) => (io::ErrorKind::Other, "the writing thread failed".into()),
            });
        }
        match &self.ended {
            Some((_, text)) if text.is_empty() => Ok(()),
            Some((kind, text)) => Err(io::Error::new(*kind, text.clone())),
            None => Ok(()),
        }
    }
}

impl Write for Behind {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes).map(|()| bytes.len())
    }
    /// A copy into the buffer (a block that is no packet; packets come through `epb`); a full
    /// one goes to the thread.
    #[inline]
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= OUT_BUFFER {
            self.send()?;
        }
        Ok(())
    }
    /// Hands the bytes so far to the thread (it does not wait for them to be written).
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl crate::output::pcapng::PutBlock for Behind {
    #[inline]
    fn room(&mut self, _: usize) -> io::Result<&mut Vec<u8>> {
        Ok(&mut self.buf)
    }

    #[inline]
    fn put(&mut self) -> io::Result<()> {
        if self.buf.len() >= OUT_BUFFER {
            self.send()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reading gives, item by item, in words; `settle` fills in the events of a
    /// reading that does not track, as the tracking and settling threads would: tracked by
    /// the tracker, held and revised by an annotator of its own, in line.
    fn items<R: Read>(mut packets: Packets<R>, settle: Option<Tracker>) -> Vec<String> {
        let mut annotator = settle
            .as_ref()
            .map(|_| Annotator::<usize>::new(Tracker::new()));
        if let (Some(a), Some(tracker)) = (annotator.as_mut(), settle) {
            a.tracker = tracker;
        }
        // Each item's words but its event, and each packet's event once it left.
        let mut out: Vec<(String, Option<Option<Event>>)> = Vec::new();
        let finish = |a: &mut Annotator<usize>, out: &mut Vec<(String, Option<Option<Event>>)>| {
            for (i, event) in a.finish() {
                out[i].1 = Some(event);
            }
        };
        while let Some(item) = packets.next() {
            let words = match &item {
                Ahead::Packet(read) => format!(
                    "{:?} {:?} {:?}",
                    read.stamp,
                    read.packet.as_ref().map(|p| packets.stored(p)),
                    read.decoded,
                ),
                Ahead::Block(bytes) => format!("block {}", bytes.len()),
                Ahead::Cut(e) => format!("cut {e} {:?}", e.cut_at),
                Ahead::Failed(e) => format!("failed {e}"),
                Ahead::End => "end".into(),
            };
            let i = out.len();
            out.push((words, None));
            let Some(a) = annotator.as_mut() else {
                if let Ahead::Packet(read) = item {
                    out[i].1 = Some(read.event);
                }
                continue;
            };
            match item {
                Ahead::Packet(read) => {
                    let at = Some(read.stamp.ts);
                    let Ok(tracked) = a.step(read.decoded.as_ref().ok(), at, |_, j, event| {
                        out[j].1 = Some(event);
                        Ok::<(), std::convert::Infallible>(())
                    });
                    if tracked.hold {
                        a.hold(i, tracked, at);
                    } else {
                        out[i].1 = Some(tracked.event);
                    }
                }
                _ => finish(a, &mut out),
            }
        }
        if let Some(a) = annotator.as_mut() {
            finish(a, &mut out);
        }
        out.into_iter()
            .map(|(words, event)| match event {
                Some(event) => format!("{words} {event:?}"),
                None => words,
            })
            .collect()
    }

    /// What `each_settled` gives, in the words of `items` but the stamps.
    fn settled<R: Read>(mut packets: Packets<R>) -> Vec<String> {
        let mut out = Vec::new();
        let _ = packets.each_settled(|item| {
            match item {
                Settled::Packets(run) => {
                    for p in run {
                        let (stored, decoded, event) = (p.stored, p.decoded, p.event);
                        out.push(format!("{stored:?} {decoded:?} {:?}", event.cloned()));
                    }
                }
                Settled::Block(bytes) => out.push(format!("block {}", bytes.len())),
                Settled::Cut(e) => out.push(format!("cut {e} {:?}", e.cut_at)),
                Settled::Failed(e) => out.push(format!("failed {e}")),
            }
            Ok::<(), ()>(())
        });
        out
    }

    /// In line and threaded, whole packets and stamps: the threaded ones must match. And
    /// tracked and settled on their threads, as packets (annotate) and as segments (diagram):
    /// the same events as a tracker and an annotator fed in line.
    fn both(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        let open = || Source::open(io::Cursor::new(bytes.to_vec()), "f");
        let read =
            |whole, settle| Packets::threaded(io::Cursor::new(bytes.to_vec()), "f", whole, settle);
        let tracking = || Tracker::forgetful(MSL2);
        let mut got = Vec::new();
        for whole in [true, false] {
            let inline = match open() {
                Ok(src) => items(Packets::inline(src, "f", whole), None),
                Err(e) => vec![format!("open {e}")],
            };
            let threaded = match read(whole, None) {
                Ok((packets, _)) => items(packets, None),
                Err(e) => vec![format!("open {e}")],
            };
            got.push((inline, threaded));
        }
        let stamps = got.pop().unwrap();
        assert_eq!(stamps.0, stamps.1, "stamps, {} bytes", bytes.len());
        {
            let inline = match open() {
                Ok(src) => items(Packets::inline(src, "f", true), Some(tracking())),
                Err(e) => vec![format!("open {e}")],
            };
            let threaded = match read(true, Some(tracking())) {
                Ok((packets, _)) => {
                    assert!(packets.tracked());
                    items(packets, None)
                }
                Err(e) => vec![format!("open {e}")],
            };
            assert_eq!(inline, threaded, "settled, {} bytes", bytes.len());
            // And a batch at a time, where each item lies.
            if let Ok((packets, _)) = read(true, Some(tracking())) {
                let unstamped: Vec<String> = inline
                    .iter()
                    .map(|s| match s.split_once("} ") {
                        Some((stamp, rest)) if stamp.starts_with("Stamp") => rest.to_string(),
                        _ => s.clone(),
                    })
                    .filter(|s| s != "end")
                    .collect();
                assert_eq!(unstamped, settled(packets), "each settled");
            }
        }
        got.pop().unwrap()
    }

    const MSL2: std::time::Duration = std::time::Duration::from_secs(60);

    #[test]
    fn read_ahead_gives_what_reading_in_line_gives_cut_or_whole() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        let mut files = 0;
        for name in [
            "port-exhaustion.pcapng",
            "real/normal-nginx.pcap",
            "real/crossing-fins.pcap",
            "real/refused.pcap",
            "simultaneous-close.pcapng",
        ] {
            let whole = std::fs::read(format!("{dir}/{name}")).unwrap();
            // Whole; cut in a block; cut inside the file header; garbage after the header.
            let mut garbage = whole[..40.min(whole.len())].to_vec();
            garbage.extend_from_slice(&[0xff; 64]);
            for bytes in [
                &whole[..],
                &whole[..whole.len() * 2 / 3],
                &whole[..10],
                &garbage[..],
            ] {
                let (inline, threaded) = both(bytes);
                assert_eq!(inline, threaded, "{name}, {} bytes", bytes.len());
                files += 1;
            }
        }
        assert_eq!(files, 20);
        // More packets than a batch holds: a pcap's records 250 times over, cut at the end.
        let pcap = std::fs::read(format!("{dir}/real/normal-nginx.pcap")).unwrap();
        let mut long = pcap.clone();
        for _ in 0..250 {
            long.extend_from_slice(&pcap[24..]);
        }
        long.truncate(long.len() - 7);
        let (inline, threaded) = both(&long);
        assert!(inline.len() > 2 * BATCH, "{}", inline.len());
        assert!(
            inline.last().unwrap().starts_with("cut"),
            "{:?}",
            inline.last()
        );
        assert_eq!(inline, threaded);
        let (inline, _) = both(&std::fs::read(format!("{dir}/port-exhaustion.pcapng")).unwrap());
        assert!(inline.iter().any(|s| s.starts_with("block")));
    }

    /// A run's packets that `f` leaves are passed over, their places and events with them:
    /// after a block, the next run's packets come with their own bytes and events.
    #[test]
    fn the_packets_a_run_leaves_are_passed_over() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        // Three sections in a row: blocks between the packets, all in one batch.
        let mut bytes = Vec::new();
        for name in ["active-close", "port-exhaustion", "simultaneous-close"] {
            bytes.extend(std::fs::read(format!("{dir}/{name}.pcapng")).unwrap());
        }
        let read = || {
            let tracking = Tracker::forgetful(MSL2);
            Packets::threaded(io::Cursor::new(bytes.clone()), "f", true, Some(tracking))
                .unwrap()
                .0
        };
        let all = settled(read());
        assert!(all.len() < BATCH, "{}", all.len());
        // Each run's first packet, and every other item.
        let mut expected = Vec::new();
        let mut in_run = false;
        for words in &all {
            let packet = !(words.starts_with("block") || words.starts_with("cut"));
            if !packet || !in_run {
                expected.push(words.clone());
            }
            in_run = packet;
        }
        let runs = expected.len() - all.iter().filter(|w| w.starts_with("block")).count();
        assert!(runs >= 3, "{expected:?}");
        let mut firsts = Vec::new();
        let _ = read().each_settled(|item| {
            firsts.push(match item {
                Settled::Packets(run) => {
                    let p = run.next().expect("a run of at least one packet");
                    format!("{:?} {:?} {:?}", p.stored, p.decoded, p.event.cloned())
                }
                Settled::Block(bytes) => format!("block {}", bytes.len()),
                Settled::Cut(e) => format!("cut {e} {:?}", e.cut_at),
                Settled::Failed(e) => format!("failed {e}"),
            });
            Ok::<(), ()>(())
        });
        assert_eq!(firsts, expected);
    }

    /// The settled events are not the tracker's own: on captures whose later segments revise
    /// earlier ones (FINs that crossed, a refused SYN), some differ, as the annotator has them.
    #[test]
    fn settled_events_carry_the_revisions_the_tracker_alone_does_not() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        for name in ["real/crossing-fins.pcap", "real/refused.pcap"] {
            let bytes = std::fs::read(format!("{dir}/{name}")).unwrap();
            let mut tracker = Tracker::forgetful(MSL2);
            let mut raw = Vec::new();
            let src = Source::open(io::Cursor::new(bytes.clone()), "f").unwrap();
            let mut inline = Packets::inline(src, "f", false);
            while let Some(Ahead::Packet(read)) = inline.next() {
                if let Ok(seg) = &read.decoded {
                    raw.push(tracker.on_segment_at(seg, Some(read.stamp.ts)));
                }
            }
            let tracking = Tracker::forgetful(MSL2);
            let (packets, _) =
                Packets::threaded(io::Cursor::new(bytes), "f", true, Some(tracking)).unwrap();
            let mut settled = Vec::new();
            let mut packets = packets;
            let _ = packets.each_settled(|item| {
                if let Settled::Packets(run) = item {
                    settled.extend(run.filter_map(|p| p.event.cloned()));
                }
                Ok::<(), ()>(())
            });
            assert_eq!(raw.len(), settled.len(), "{name}");
            let revised = raw
                .iter()
                .zip(&settled)
                .filter(|(r, s)| r.transitions != s.transitions || r.states != s.states)
                .count();
            assert!(revised > 0, "{name}: no event revised");
        }
    }

    /// Events leave the look-ahead in the capture's order: each goes to the oldest batch
    /// still short of its packets' events, past a batch with none (blocks only), and a batch
    /// goes on once all its packets left, in order.
    #[test]
    fn settled_events_go_back_to_their_own_batches_in_order() {
        use crate::tracker::tests::segment;
        let mut tracker = Tracker::new();
        let event = |tracker: &mut Tracker, seq| {
            tracker.on_segment(&segment(true, crate::tcp::Flags::ACK, seq, 1, 1))
        };
        let mut owed = Owed::default();
        for waits in [2, 0, 2] {
            owed.batches.push_back((Batch::default(), waits));
        }
        let (tx, sent) = sync_channel::<Batch>(8);
        let got = |sent: &Receiver<Batch>| -> Vec<Vec<u32>> {
            sent.try_iter()
                .map(|b| b.events.iter().map(|e| e.rel_seq).collect())
                .collect()
        };
        owed.give(Some(event(&mut tracker, 10)));
        assert!(owed.send(&tx));
        assert!(got(&sent).is_empty(), "the first batch still waits for one");
        // A packet that did not decode has no event, and still counts.
        owed.give(None);
        owed.give(Some(event(&mut tracker, 30)));
        assert!(owed.send(&tx));
        // Relative to the first segment's sequence number, 10.
        assert_eq!(got(&sent), [vec![0], vec![]]);
        // The batches sent are gone from the front: the next event is the last batch's.
        owed.give(Some(event(&mut tracker, 40)));
        assert!(owed.send(&tx));
        assert_eq!(got(&sent), [vec![20, 30]]);
        assert!(owed.batches.is_empty());
    }

    /// A FIN waiting for its answer through a flood of packets that are no TCP does not keep
    /// every batch behind it: they count in the look-ahead, which lets the FIN go unanswered
    /// after `LOOKAHEAD_PACKETS`, and the settling thread hands batches on before the end.
    #[test]
    fn a_segment_held_through_a_flood_of_other_packets_keeps_a_few_batches_back() {
        use crate::tcp::Flags;
        use crate::tracker::tests::segment;
        // Room for every batch both ways: the test feeds and drains on one thread.
        let (feed, batches) = sync_channel::<TrackedBatch>(1024);
        let (tx, settled) = sync_channel::<Batch>(1024);
        let settling = std::thread::spawn(move || settle_ahead(batches, tx));
        let mut tracker = Tracker::new();
        let stamp = |us: u64| Stamp {
            ts: std::time::Duration::from_micros(us),
            orig_len: 60,
        };
        // The handshake, then the client's FIN: held until the server answers.
        let fin = Flags(Flags::FIN.0 | Flags::ACK.0);
        let mut first = Batch::default();
        for (i, seg) in [
            segment(true, Flags::SYN, 100, 0, 0),
            segment(false, Flags(Flags::SYN.0 | Flags::ACK.0), 300, 101, 0),
            segment(true, Flags::ACK, 101, 301, 0),
            segment(true, fin, 101, 301, 0),
        ]
        .into_iter()
        .enumerate()
        {
            first
                .events
                .push_back(tracker.on_segment_at(&seg, Some(stamp(i as u64).ts)));
            first
                .items
                .push_back(Crossing::Packet(stamp(i as u64), Ok(seg)));
        }
        feed.send((first, 4)).unwrap();
        // Then batches of packets that are no TCP, twice the look-ahead's worth.
        let floods = 2 * crate::annotate::LOOKAHEAD_PACKETS / 16 + 8;
        for b in 0..floods {
            let mut batch = Batch::default();
            for i in 0..16 {
                let at = stamp(1000 + (b * 16 + i) as u64);
                batch
                    .items
                    .push_back(Crossing::Packet(at, Err(DecodeError::NotTcp("UDP".into()))));
            }
            feed.send((batch, 16)).unwrap();
        }
        // Handed on while the input is still open: the FIN went out unanswered, with its event.
        let first = settled
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("every batch kept back until the input's end");
        assert_eq!(first.events.len(), 4);
        let mut handed_on = 1;
        drop(feed);
        while settled.recv().is_ok() {
            handed_on += 1;
        }
        settling.join().unwrap();
        assert_eq!(handed_on, floods + 1);
    }

    /// A threaded reading whose batches come from `batches`, and nothing else.
    fn fed_by(batches: Receiver<Batch>) -> Packets<io::Empty> {
        Packets::Threaded {
            batches,
            batch: Batch::default(),
            empties: channel().0,
            ended: false,
            tracking: None,
            done_back: None,
            done: VecDeque::new(),
        }
    }

    /// A reading thread that stops before the input's end (it cannot, but were it to) is
    /// said, not taken for the end of the file.
    #[test]
    fn a_reading_that_stops_before_its_end_is_an_error_not_an_end() {
        let (tx, batches) = sync_channel::<Batch>(2);
        let mut packets = fed_by(batches);
        tx.send(VecDeque::from([Crossing::Block(vec![1, 2, 3, 4])]).into())
            .unwrap();
        drop(tx);
        assert!(matches!(packets.next(), Some(Ahead::Block(b)) if b.len() == 4));
        match packets.next() {
            Some(Ahead::Failed(e)) => assert!(e.to_string().contains("stopped before its end")),
            _ => panic!("the closed channel was taken for the end"),
        }
        assert!(packets.next().is_none());
        // With the end said, the same closed channel is the end.
        let (tx, batches) = sync_channel::<Batch>(2);
        let mut packets = fed_by(batches);
        tx.send(VecDeque::from([Crossing::Block(vec![1]), Crossing::End]).into())
            .unwrap();
        drop(tx);
        assert!(matches!(packets.next(), Some(Ahead::Block(_))));
        assert!(packets.next().is_none());
    }

    /// Large packets cut a batch short: what is in flight is bounded in bytes, not only in
    /// packets (64 KiB segments where the NIC offloads filled hundreds of MiB).
    #[test]
    fn a_batch_of_large_packets_is_cut_at_a_mebibyte() {
        let mut file = Vec::new();
        for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        let frame = vec![0u8; 60_000];
        for i in 0..100u32 {
            for word in [1, i, frame.len() as u32, frame.len() as u32] {
                file.extend_from_slice(&word.to_le_bytes());
            }
            file.extend_from_slice(&frame);
        }
        let src = Source::open(io::Cursor::new(file), "big").unwrap();
        let (tx, batches) = sync_channel::<Batch>(64);
        let (_empties, emptied) = channel();
        read_ahead(src, "big", true, tx, emptied);
        let sizes: Vec<usize> = batches.iter().map(|b| b.items.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 101, "{sizes:?}"); // and the end
        assert!(sizes.len() >= 5, "{sizes:?}");
        assert!(
            sizes.iter().all(|&n| n <= BATCH_BYTES / 60_000 + 1),
            "{sizes:?}"
        );
    }

    /// A reader that gives a few bytes at a time, as a pipe may: records cut across reads.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            // Another length each time, from a byte to a few reads of a batch's.
            self.step = (self.step * 7 + 13) % 40_000 + 1;
            Ok(n)
        }
    }

    /// A pcap's packets read in place, into the batches' own memory, are the packets read
    /// in line, bytes and all: records cut across reads, records larger than a read, batches
    /// handed over with part of a record unread, a file cut short, a record too large to read.
    #[test]
    fn packets_read_in_place_are_the_packets_read_in_line() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        let pcap = std::fs::read(format!("{dir}/real/normal-nginx.pcap")).unwrap();
        let record = |file: &mut Vec<u8>, i: u32, frame: &[u8]| {
            for word in [1, i, frame.len() as u32, frame.len() as u32] {
                file.extend_from_slice(&word.to_le_bytes());
            }
            file.extend_from_slice(frame);
        };
        // Real segments between frames of every size up to several reads' worth.
        let mut long = pcap.clone();
        for i in 0..400u32 {
            long.extend_from_slice(&pcap[24..]);
            let size = [1, 60, 1500, 17_000, 70_000][i as usize % 5];
            record(&mut long, i, &vec![i as u8; size]);
        }
        let cut = long[..long.len() - 5000].to_vec();
        // A record that claims more than any buffer holds, and a file that goes on.
        let mut huge = pcap.clone();
        record(&mut huge, 0, &vec![0; 8_100_000]);
        // A record that claims more captured bytes than it had on the wire, well on.
        let mut lying = pcap.clone();
        for _ in 0..400 {
            lying.extend_from_slice(&pcap[24..]);
        }
        let at = 24 + 300 * (pcap.len() - 24);
        lying[at + 12..at + 16].copy_from_slice(&1u32.to_le_bytes());
        // The same records big-endian, in nanoseconds: the other byte order and resolution.
        let big_nanos = big_endian_nanos(&long);
        let files = [
            ("long", &long),
            ("cut", &cut),
            ("huge", &huge),
            ("lying", &lying),
            ("big-endian nanoseconds", &big_nanos),
        ];
        for ((name, bytes), whole) in files.into_iter().flat_map(|f| [(f, true), (f, false)]) {
            let src = Source::open(io::Cursor::new(bytes.clone()), "f").unwrap();
            let inline = items(Packets::inline(src, "f", whole), None);
            if name != "huge" {
                assert!(inline.len() > 2 * BATCH, "{name}: {}", inline.len());
            }
            // The first read holds the magic number.
            for step in [100, 4096, 1 << 20] {
                let trickle = Trickle {
                    bytes: bytes.clone(),
                    at: 0,
                    step,
                };
                let (threaded, _) = Packets::threaded(trickle, "f", whole, None).unwrap();
                let threaded = items(threaded, None);
                assert!(inline == threaded, "{name}, from {step} bytes a read");
            }
            let last = inline.last().unwrap();
            let said = match name {
                "cut" => "the file ends in the middle of this packet record",
                "huge" => "the file ends in the middle of a block",
                "lying" => "captured cannot exceed original",
                _ => "Stamp",
            };
            assert!(
                last.contains(said),
                "{name}: {}",
                &last[..last.len().min(200)]
            );
        }
    }

    /// The same file cut at every byte around the start of the record that opens the second
    /// batch: each cut is the one the in-line reading makes, however the bytes come.
    #[test]
    fn a_pcap_cut_near_a_batch_boundary_reads_in_place_as_in_line() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        let pcap = std::fs::read(format!("{dir}/real/normal-nginx.pcap")).unwrap();
        let mut file = pcap.clone();
        while file.len() < 4 * (pcap.len() - 24) + 24 || records(&file).len() <= BATCH + 2 {
            file.extend_from_slice(&pcap[24..]);
        }
        let boundary = records(&file)[BATCH];
        for end in boundary - 20..boundary + 40 {
            let bytes = file[..end].to_vec();
            for whole in [true, false] {
                let src = Source::open(io::Cursor::new(bytes.clone()), "f").unwrap();
                let inline = items(Packets::inline(src, "f", whole), None);
                for step in [7, 1 << 20] {
                    let trickle = Trickle {
                        bytes: bytes.clone(),
                        at: 0,
                        step,
                    };
                    let (threaded, _) = Packets::threaded(trickle, "f", whole, None).unwrap();
                    assert!(
                        inline == items(threaded, None),
                        "cut at {end}, {step} bytes a read"
                    );
                }
            }
        }
    }

    /// Where each record of a little-endian pcap starts.
    fn records(pcap: &[u8]) -> Vec<usize> {
        let mut at = 24;
        let mut starts = Vec::new();
        while at + 16 <= pcap.len() {
            starts.push(at);
            let incl = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap());
            at += 16 + incl as usize;
        }
        starts
    }

    /// A little-endian microsecond pcap written big-endian in nanoseconds.
    fn big_endian_nanos(le: &[u8]) -> Vec<u8> {
        let word = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
        let mut out = 0xa1b2_3c4du32.to_be_bytes().to_vec();
        out.extend_from_slice(&u16::from_le_bytes([le[4], le[5]]).to_be_bytes());
        out.extend_from_slice(&u16::from_le_bytes([le[6], le[7]]).to_be_bytes());
        for at in [8, 12, 16, 20] {
            out.extend_from_slice(&word(&le[at..at + 4]).to_be_bytes());
        }
        for at in records(le) {
            let incl = word(&le[at + 8..at + 12]);
            for w in [
                word(&le[at..at + 4]),
                word(&le[at + 4..at + 8]) * 1000,
                incl,
                word(&le[at + 12..at + 16]),
            ] {
                out.extend_from_slice(&w.to_be_bytes());
            }
            out.extend_from_slice(&le[at + 16..at + 16 + incl as usize]);
        }
        out
    }

    /// A sink that keeps what it is given, or fails after `fail_after` bytes.
    #[derive(Clone)]
    struct Sink {
        got: Arc<Mutex<Vec<u8>>>,
        fail_after: usize,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut got = self.got.lock().unwrap();
            if got.len() + bytes.len() > self.fail_after {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            got.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writing_behind_keeps_every_byte_in_order_and_says_the_sinks_error() {
        let bytes: Vec<u8> = (0..3 * OUT_BUFFER + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let sink = Sink {
            got: Arc::default(),
            fail_after: usize::MAX,
        };
        let mut w = Behind::new(sink.clone()).unwrap();
        for chunk in bytes.chunks(1000) {
            w.write_all(chunk).unwrap();
        }
        w.flush().unwrap();
        w.finish().unwrap();
        assert!(*sink.got.lock().unwrap() == bytes);

        let full = Sink {
            got: Arc::default(),
            fail_after: OUT_BUFFER + 10,
        };
        let mut w = Behind::new(full).unwrap();
        let mut first = None;
        for chunk in bytes.chunks(1000) {
            if let Err(e) = w.write_all(chunk) {
                first = Some(e);
                break;
            }
        }
        let err = first.unwrap_or_else(|| w.finish().unwrap_err());
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        // Asked again at the end (as `annotate` does), the same error, not another.
        let again = w.finish().unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::StorageFull, "{again}");
        assert_eq!(again.to_string(), err.to_string());
    }
}
