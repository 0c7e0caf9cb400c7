//! The bench a scenario's script works at: the addresses, the running capture, the tracker
//! fed from it, and the record of what happened (narration, waits, restarts, tables).

use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::annotate::{Annotator, Evidence, Unfinished};
use crate::capture::live::CaptureError;
use crate::capture::{Frame, FrameSource, Stats};
use crate::decode::Segment;
use crate::decode::decode_ethernet;
use crate::error::Error;
use crate::kernel::agree::{Checker, Note, Verdict};
use crate::kernel::tracefs::Tracer;
use crate::kernel::{self, KernelSocket};
use crate::output::ladder;
use crate::output::style::{Style, plural};
use crate::record::{Missed, Record, Restart};
use crate::signals;
use crate::sockets::{self, SockOpts};
use crate::tcp::State;
use crate::tracker::Event;
use crate::tracker::{Connection, Role, Tracker};

/// How long a wait for a state may take before the run says the kernel did something else.
/// Over loopback every expected segment arrives within milliseconds.
const WAIT_LIMIT: Duration = Duration::from_secs(3);
/// How often the capture thread looks at its stop flag.
pub const POLL: Duration = Duration::from_millis(20);
/// The longest the capture goes on reading after it was told to stop.
const DRAIN_LIMIT: Duration = Duration::from_millis(200);

struct Running {
    stop: Arc<AtomicBool>,
    frames: Receiver<Frame>,
    thread: JoinHandle<Result<Stats, CaptureError>>,
}

pub struct Lab {
    pub server: SocketAddr,
    pub client_ip: IpAddr,
    /// The options the scenario's first server socket was made with.
    pub server_opts: SockOpts,
    /// What the report, the ladder, the JSON and the verdict read.
    pub record: Record,
    /// On the host's own loopback (`--host`).
    host: bool,
    /// One host, or two joined by a veth: where server sockets, tables and sysctls are.
    pub hosts: crate::netns::Hosts,
    /// The packet filter holding back or dropping segments, for the scenarios that need it.
    pub gate: Option<crate::gate::Gate>,
    /// The client closes the moment it reads EOF (`--quick-close`).
    pub quick_close: bool,
    running: Option<Running>,
    /// The one annotator every front uses; its tracker is the run's inference.
    pub annotator: Annotator<Unfinished>,
    /// The kernel's trace of state changes (`use_tracer`), shared with the annotator, which
    /// reads it as evidence.
    kernel: Option<Arc<Mutex<KernelWord>>>,
    /// Colour and width of what the run prints.
    pub style: Style,
    /// `--require-kernel`: a kernel check that cannot be made is an error, not a note.
    pub require_kernel: bool,
    out: Box<dyn Write>,
    step: usize,
    /// `TEARDOWN_PAUSE_AFTER_STEP=N` (tests only): wait for a signal after step N.
    pause_at: Option<usize>,
    /// `TEARDOWN_PANIC_AFTER_STEP=N` (tests only): panic after step N.
    panic_at: Option<usize>,
}

impl Lab {
    /// Starts reading `capture` in a thread of its own.
    pub fn new(
        server: SocketAddr,
        client_ip: IpAddr,
        host: bool,
        hosts: crate::netns::Hosts,
        mut capture: Box<dyn FrameSource>,
        out: Box<dyn Write>,
    ) -> Lab {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, frames) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                signals::block_in_this_thread();
                let mut batch = Vec::new();
                'reading: while !stop.load(Ordering::SeqCst) {
                    capture.next_frames(&mut batch)?;
                    for frame in batch.drain(..) {
                        if tx.send(frame).is_err() {
                            break 'reading;
                        }
                    }
                }
                // Drain what is already queued, for a bounded time: on the host's loopback
                // other programs' traffic may never let the socket fall quiet. After Ctrl-C
                // too: what the kernel captured before it belongs in the file. A ring hands
                // a partial block over after its retire timeout: two quiet polls end it.
                let until = Instant::now() + DRAIN_LIMIT;
                let mut quiet = 0;
                while Instant::now() < until && quiet < 2 {
                    capture.next_frames(&mut batch)?;
                    quiet = if batch.is_empty() { quiet + 1 } else { 0 };
                    for frame in batch.drain(..) {
                        if tx.send(frame).is_err() {
                            return Ok(capture.stats());
                        }
                    }
                }
                Ok(capture.stats())
            })
        };
        Lab {
            server,
            client_ip,
            server_opts: SockOpts::NONE,
            record: Record::new(server, client_ip),
            host,
            hosts,
            gate: None,
            quick_close: false,
            running: Some(Running {
                stop,
                frames,
                thread,
            }),
            annotator: Annotator::new(Tracker::new()),
            kernel: None,
            style: Style::PLAIN,
            require_kernel: false,
            out,
            step: 0,
            pause_at: std::env::var("TEARDOWN_PAUSE_AFTER_STEP")
                .ok()
                .and_then(|v| v.parse().ok()),
            panic_at: std::env::var("TEARDOWN_PANIC_AFTER_STEP")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    /// Prints a numbered step of the experiment (`3. server: accept() → ...`); a Ctrl-C
    /// stops the script here.
    pub fn say(&mut self, who: &str, what: impl AsRef<str>) -> Result<(), Error> {
        self.step += 1;
        let first = format!("{:>3}. ", self.step);
        let text = self
            .style
            .wrap(&first, "     ", &format!("{who}: {}", what.as_ref()));
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
        if self.pause_at == Some(self.step) {
            // Test hook: hold here until a signal arrives, so a test can interrupt a run at a
            // known point.
            let until = Instant::now() + Duration::from_secs(10);
            while !signals::interrupted() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Test hook: a panic at a known point, to show that cleanup survives it.
        if self.panic_at == Some(self.step) {
            panic!(
                "TEARDOWN_PANIC_AFTER_STEP={}: panicking on purpose",
                self.step
            );
        }
        if signals::interrupted() {
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    /// Sets a sysctl of the run's own network namespace, and says so: the host's stays as it
    /// is (`run` refuses --host for a scenario that does this). Returns the old value.
    pub fn sysctl(&mut self, name: &str, value: &str, why: &str) -> Result<String, Error> {
        if self.host {
            return Err(Error::Usage(format!(
                "{name} would change on the host: run this scenario without --host"
            )));
        }
        let set = || crate::netns::set_sysctl(name, value);
        let old = set().map_err(Error::io(format!("setting {name} in the run's namespace")))?;
        // Across a veth, on both hosts.
        if self.hosts.two() {
            self.hosts
                .in_server(set)
                .map_err(Error::io(format!("setting {name} on the server's host")))?;
        }
        // ip_local_port_range reads back as "32768\t60999": one space, as it was written.
        let (was, now) = (super::words::one_line(&old), super::words::one_line(value));
        let line = self.style.wrap(
            "     ",
            "       ",
            &format!("sysctl {name} = {now} (was {was}), in this run's namespace only: {why}"),
        );
        let _ = writeln!(self.out, "{line}");
        self.record.sysctls.push((name.to_string(), was, now));
        Ok(old)
    }

    /// A scenario's own check: when `observed` is not `expected`, the run says so and the
    /// verdict counts it. Returns whether they agree.
    pub fn expect(&mut self, label: &str, expected: &str, observed: &str) -> bool {
        if expected == observed {
            return true;
        }
        let line = format!("{label}: expected {expected}, observed {observed}");
        let mark = self.style.red("✗");
        let _ = writeln!(
            self.out,
            "{}",
            self.style.wrap(&format!("     {mark} "), "       ", &line)
        );
        self.record.differences.push(line);
        false
    }

    /// Prints a line, wrapped to the terminal's width under its own indent; text of several
    /// lines (a table) as it is.
    pub fn print(&mut self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if text.contains('\n') {
            let _ = writeln!(self.out, "{text}");
            return;
        }
        let prose = text.trim_start();
        let indent = &text[..text.len() - prose.len()];
        let line = self.style.wrap(indent, &format!("{indent}  "), prose);
        let _ = writeln!(self.out, "{line}");
    }

    /// The connection to the scenario's server, the newest if there were several.
    pub fn connection(&self) -> Option<&Connection> {
        self.annotator
            .tracker
            .connections()
            .iter()
            .rev()
            .find(|c| c.server == self.server)
    }

    pub fn states(&self) -> Option<[State; 2]> {
        self.connection()
            .map(|c| [c.state(Role::Client), c.state(Role::Server)])
    }

    /// Feeds captured segments to the tracker until the client and the server are in these
    /// states. Returns false, and records the miss, when they are not within the limit.
    pub fn wait_for(&mut self, client: State, server: State) -> Result<bool, Error> {
        let reached = self.wait_until(WAIT_LIMIT, |lab| lab.states() == Some([client, server]))?;
        if !reached {
            self.record.missed.push(Missed {
                expected: [client, server],
                observed: self.states(),
            });
        }
        Ok(reached)
    }

    /// Feeds captured segments to the tracker until `done` holds, for up to `limit`.
    pub fn wait_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&Lab) -> bool,
    ) -> Result<bool, Error> {
        let deadline = Instant::now() + limit;
        loop {
            if done(self) {
                return Ok(true);
            }
            if signals::interrupted() {
                return Err(Error::Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.running.is_none() {
                return Ok(false);
            }
            let Some(running) = &self.running else {
                continue;
            };
            match running.frames.recv_timeout(left.min(POLL)) {
                Ok(frame) => self.take(frame),
                Err(RecvTimeoutError::Timeout) => {
                    // Quiet: what waited for the kernel's trace goes once it is read.
                    self.annotator
                        .release_into(Some(realtime_now()), &mut self.record.packets);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // The capture thread ended early: say why.
                    self.finish_capture()?;
                }
            }
        }
    }

    /// Waits (a little) until the annotator has let go of what it holds, so that
    /// `record.packets` has every segment tracked so far: a segment waits for the kernel's
    /// trace to be read past its time, a few milliseconds after the states it changed.
    pub fn wait_released(&mut self) -> Result<(), Error> {
        self.wait_until(Duration::from_millis(300), |lab| !lab.annotator.holding())?;
        Ok(())
    }

    /// Tracks and keeps one frame (the ring's kernel filter let only the scenario's ports in).
    fn take(&mut self, frame: Frame) {
        let decoded = decode_ethernet(&frame.data);
        self.annotator
            .push_frame(frame, decoded, &mut self.record.packets);
    }

    /// Stops the capture once the last expected segment is in, and prints the ladder.
    pub fn finish_capture(&mut self) -> Result<(), Error> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        running.stop.store(true, Ordering::SeqCst);
        let result = running.thread.join();
        while let Ok(frame) = running.frames.try_recv() {
            self.take(frame);
        }
        // The capture is over: the trace read now holds every change its segments caused,
        // and nothing is left to revise what the annotator still holds.
        if let Some(kernel) = &self.kernel
            && let Ok(mut k) = kernel.lock()
        {
            k.read(Duration::MAX);
        }
        self.annotator.finish_into(&mut self.record.packets);
        let stats = match result {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => return Err(Error::CaptureLost(e.to_string())),
            Err(_) => return Err(Error::CaptureLost("the capture thread panicked".into())),
        };
        self.record.stats = Some(stats);
        self.tell_gate();
        self.check_with_kernel()?;
        let notes = self.record.agreement.as_ref().map(|a| &a.per_packet[..]);
        let conns: Vec<&Connection> = self.annotator.tracker.connections().iter().collect();
        let diagram = match (self.connection(), conns.len()) {
            (None, _) => "(no segment of the experiment was captured)\n".to_string(),
            (Some(conn), 1) => {
                ladder::render_checked(&self.record.packets, conn, notes, &self.style)
            }
            // Every connection, as the SVG draws them: one ladder per 4-tuple (its
            // incarnations one after the other), alike ones folded into one.
            _ => {
                let panels = crate::output::figure::panels(
                    &self.record.packets,
                    &conns,
                    notes,
                    &self.record.trace,
                    &[],
                );
                let mut text = String::new();
                for panel in &panels {
                    // A folded panel lists every connection it stands for: the drawn one
                    // is on its 4-tuple.
                    let drawn = conns.iter().filter(|c| {
                        panel.conns.contains(&c.id)
                            && c.client == panel.client
                            && c.server == panel.server
                    });
                    for conn in drawn {
                        let id = conn.id;
                        let _ = writeln!(
                            text,
                            "connection #{id}: client {} → server {}{}",
                            conn.client,
                            conn.server,
                            panel
                                .caption
                                .as_ref()
                                .map(|c| format!(" ({c})"))
                                .unwrap_or_default()
                        );
                        text.push_str(&ladder::render_checked(
                            &self.record.packets,
                            conn,
                            notes,
                            &self.style,
                        ));
                        text.push('\n');
                    }
                }
                text
            }
        };
        let _ = writeln!(self.out);
        let _ = write!(self.out, "{diagram}");
        if let Some(a) = &self.record.agreement {
            let _ = writeln!(self.out, "\n{}", ladder::legend(&self.style));
            for (verdict, text) in &a.section {
                let line = self.style.wrap("  ", "    ", text);
                if *verdict == Verdict::Mismatch {
                    let _ = writeln!(self.out, "{}", self.style.red(&line));
                } else {
                    let _ = writeln!(self.out, "{line}");
                }
            }
        }
        let _ = writeln!(
            self.out,
            "\ncaptured {}; the kernel dropped {} (PACKET_STATISTICS)\n",
            plural(self.record.packets.len(), "segment", "segments"),
            stats.dropped
        );
        if stats.dropped > 0 {
            self.record.notes.push(format!(
                "the kernel dropped {} of the capture: the diagram may miss segments",
                plural(stats.dropped as usize, "packet", "packets")
            ));
        }
        Ok(())
    }

    /// What the gate was, for the section comment, and the drops no packet could tell.
    fn tell_gate(&mut self) {
        use crate::gate::policy::Decision;
        let Some(gate) = self.gate.take() else {
            return;
        };
        let actions = gate.log();
        self.record.filter_rule = Some(gate.describe());
        drop(gate);
        let first = self
            .record
            .packets
            .first()
            .map(|p| p.frame.ts)
            .unwrap_or_default();
        let ms = |t: Duration| t.saturating_sub(first).as_secs_f64() * 1000.0;
        // Each packet's share was said as it was annotated; a drop nothing answered is said
        // here, having no packet of its own.
        for a in actions
            .iter()
            .filter(|a| a.decision == Decision::Drop && !a.told)
        {
            self.record.notes.push(format!(
                "teardown dropped the {}'s {} (ack {}) at {:.1} ms; nothing was sent again after it",
                a.from,
                a.segment.flags,
                a.segment.ack.0,
                ms(a.at)
            ));
        }
    }

    /// The packet filter that holds back or drops this run's segments; its log is the
    /// annotator's evidence from now on.
    pub fn use_gate(&mut self, gate: crate::gate::Gate) {
        self.annotator.evidence.push(Box::new(gate.evidence()));
        self.gate = Some(gate);
    }

    /// The run's tracefs instance, while it lives, for a front that reads more of the raw
    /// trace (`exec`: which process made each call).
    pub fn tracer_dir(&self) -> Option<std::path::PathBuf> {
        let word = self.kernel.as_ref()?.lock().ok()?;
        word.tracer.as_ref().map(|t| t.dir().to_path_buf())
    }

    /// The kernel's trace, when tracefs could be had: the annotator's evidence from now on,
    /// read as the capture goes. Given before the first frame is taken.
    pub fn use_tracer(&mut self, tracer: Tracer) {
        let word = Arc::new(Mutex::new(KernelWord {
            tracer: Some(tracer),
            checker: Checker::new(),
            failed: None,
            read_at: None,
        }));
        self.annotator
            .evidence
            .push(Box::new(KernelEvidence { word: word.clone() }));
        self.kernel = Some(word);
    }

    /// The kernel's word beside the capture, once it is over: the changes no segment came
    /// for, and every connection's final states against the socket table. Each packet got
    /// its own share as it left the annotator.
    fn check_with_kernel(&mut self) -> Result<(), Error> {
        let Some(word) = self.kernel.take() else {
            return Ok(());
        };
        let Ok(mut word) = word.lock() else {
            return Ok(());
        };
        // The instance goes now: nothing is left to trace.
        word.tracer = None;
        if let Some(e) = word.failed.take() {
            self.kernel_word(
                Err::<(), _>(std::io::Error::other(e)),
                "the kernel's trace",
                "nothing checked",
            )?;
            return Ok(());
        }
        // Interrupted, the sockets never reached the states the run was going for: the table
        // would only contradict a close that did not happen.
        let table = if signals::interrupted() {
            None
        } else {
            self.kernel_word(
                kernel::sock_diag::dump_in(&self.hosts),
                "the socket table (sock_diag)",
                "final states not checked",
            )?
        };
        let conns = self.annotator.tracker.connections().to_vec();
        let mut agreement = word.checker.finish(table.as_deref(), &conns);
        agreement.per_packet = self
            .record
            .packets
            .iter()
            .map(|p| p.kernel.clone())
            .collect();
        self.record.agreement = Some(agreement);
        self.record.trace = word.checker.events().to_vec();
        Ok(())
    }

    /// What the kernel said, or, where it could not be read, an error under
    /// `--require-kernel` and a note (saying what goes unchecked) without it.
    fn kernel_word<T>(
        &mut self,
        read: std::io::Result<T>,
        what: &str,
        unchecked: &str,
    ) -> Result<Option<T>, Error> {
        match read {
            Ok(value) => Ok(Some(value)),
            Err(e) if self.require_kernel => Err(Error::KernelUnavailable(format!(
                "{what} could not be read: {e}"
            ))),
            Err(e) => {
                self.record
                    .notes
                    .push(format!("{what} could not be read ({e}): {unchecked}"));
                Ok(None)
            }
        }
    }

    /// The kernel's word on the port right now, one line: what `ss` would show after a
    /// close(). Kept for the capture's section comment.
    pub fn snapshot(&mut self, label: &str) -> Result<(), Error> {
        let sockets = kernel::sockets_on_port_in(&self.hosts, self.server.port())
            .map_err(Error::io("reading the kernel's socket table"))?;
        let server = self.server;
        let ends: Vec<String> = sockets
            .iter()
            .filter(|s| s.local.ip() == server.ip() || s.peer == server)
            .map(|s| {
                let who = if s.local == server && s.peer.port() == 0 {
                    "listener"
                } else if s.local == server {
                    "server end"
                } else {
                    "client end"
                };
                let mut t = format!("{who} {}", super::words::state_name(s));
                let mut queues = Vec::new();
                if s.recv_q > 0 {
                    queues.push(format!("Recv-Q {}", s.recv_q));
                }
                // A listener's Send-Q is its backlog, not bytes waiting.
                if s.send_q > 0 && s.state != crate::kernel::KernelState::Listen {
                    queues.push(format!("Send-Q {}", s.send_q));
                }
                if !queues.is_empty() {
                    let _ = write!(t, " ({})", queues.join(", "));
                }
                t
            })
            .collect();
        let line = if ends.is_empty() {
            "no socket on the port".to_string()
        } else {
            ends.join(", ")
        };
        let text = self
            .style
            .wrap("     ", "       ", &format!("kernel, {label}: {line}"));
        let _ = writeln!(self.out, "{text}");
        self.record.snapshots.push((label.to_string(), sockets));
        Ok(())
    }

    /// Restarts the server: a new socket with `opts` binds the server's address again (and
    /// listens, when the bind works). A failed bind is explained from the kernel's table.
    pub fn restart(
        &mut self,
        label: &str,
        opts: SockOpts,
        expected: Option<i32>,
    ) -> Result<Option<sockets::Socket>, Error> {
        self.restart_at(label, self.server, self.server_opts, opts, expected)
    }

    /// As `restart`, for a server at another address whose old socket had `old_opts`.
    pub fn restart_at(
        &mut self,
        label: &str,
        addr: SocketAddr,
        old_opts: SockOpts,
        opts: SockOpts,
        expected: Option<i32>,
    ) -> Result<Option<sockets::Socket>, Error> {
        let socket = self.try_restart(label, addr, old_opts, opts, expected)?;
        if let Some(restart) = self.record.restarts.last() {
            let text = super::words::restart_text(restart, &self.style);
            self.step += 1;
            let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
            let first = self
                .style
                .wrap(&format!("{:>3}. ", self.step), "     ", first);
            let _ = write!(self.out, "{first}\n{rest}");
        }
        Ok(socket)
    }

    /// As `restart_at`, recorded (and judged in the verdict) but not printed: for tables.
    pub fn try_restart(
        &mut self,
        label: &str,
        addr: SocketAddr,
        old_opts: SockOpts,
        opts: SockOpts,
        expected: Option<i32>,
    ) -> Result<Option<sockets::Socket>, Error> {
        if signals::interrupted() {
            return Err(Error::Interrupted);
        }
        let (socket, errno) = match sockets::listen_in(&self.hosts, addr, opts) {
            Ok(socket) => (Some(socket), None),
            Err(e) if e.errno() == Some(libc::EINTR) => return Err(Error::Interrupted),
            Err(e) => (None, e.errno().or(Some(0))),
        };
        // What stood in the way, where something did.
        let table = if errno.is_some() {
            kernel::sockets_on_port_in(&self.hosts, addr.port())
                .map_err(Error::io("reading the kernel's socket table"))?
        } else {
            Vec::new()
        };
        let holders: Vec<KernelSocket> = table
            .iter()
            .filter(|s| s.local.port() == addr.port())
            // A wildcard bind collides with every socket on the port, whatever its address.
            .filter(|s| {
                addr.ip().is_unspecified()
                    || s.local.ip() == addr.ip()
                    || s.local.ip().is_unspecified()
            })
            .cloned()
            .collect();
        let far_ends = crate::record::far_ends(&holders, &table);
        let restart = Restart {
            label: label.to_string(),
            addr,
            old_opts,
            new_opts: opts,
            errno,
            expected,
            holders,
            far_ends,
        };
        self.record.restarts.push(restart);
        Ok(socket)
    }

    /// Prints the kernel's table of sockets on the server's port, like `netstat -an`.
    pub fn print_table(&mut self, title: &str) -> Result<Vec<KernelSocket>, Error> {
        let sockets = kernel::sockets_on_port_in(&self.hosts, self.server.port())
            .map_err(Error::io("reading the kernel's socket table"))?;
        let table = kernel::render_table(&sockets);
        let line = self.style.wrap(
            "     ",
            "       ",
            &format!("{title} (the kernel's table, as ss reads it):"),
        );
        let _ = writeln!(self.out, "{line}");
        for line in table.lines() {
            let _ = writeln!(self.out, "       {line}");
        }
        Ok(sockets)
    }

    /// Polls the kernel's table until a socket at `local` (to `peer`) is in `state`: for the
    /// steps that are not captured.
    pub fn wait_kernel_state(
        &mut self,
        local: SocketAddr,
        peer: SocketAddr,
        state: State,
    ) -> Result<bool, Error> {
        let found = self.poll_kernel(local, peer, WAIT_LIMIT, |s| {
            s.is_some_and(|s| s.rfc_state() == Some(state))
        })?;
        Ok(found.is_some())
    }

    /// Polls the kernel's table until no socket at `local` (to `peer`) is left, for up to
    /// `limit`: for a timer's work. How long it took, or None if the socket stayed.
    pub fn wait_kernel_gone(
        &mut self,
        local: SocketAddr,
        peer: SocketAddr,
        limit: Duration,
    ) -> Result<Option<Duration>, Error> {
        self.poll_kernel(local, peer, limit, |s| s.is_none())
    }

    /// Reads the kernel's table every 2 ms until `done` holds for the socket at `local` (to
    /// `peer`, None when there is none), for up to `limit`; how long it took.
    fn poll_kernel(
        &mut self,
        local: SocketAddr,
        peer: SocketAddr,
        limit: Duration,
        done: impl Fn(Option<&KernelSocket>) -> bool,
    ) -> Result<Option<Duration>, Error> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if signals::interrupted() {
                return Err(Error::Interrupted);
            }
            let sockets = kernel::sockets_on_port_in(&self.hosts, local.port())
                .map_err(Error::io("reading the kernel's socket table"))?;
            if done(sockets.iter().find(|s| s.local == local && s.peer == peer)) {
                return Ok(Some(start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(None)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            let _ = running.thread.join();
        }
    }
}

/// The kernel's trace as the run reads it, shared by the bench and its annotator.
struct KernelWord {
    tracer: Option<Tracer>,
    checker: Checker,
    /// Why the trace could not be read: no more of it is asked for.
    failed: Option<String>,
    /// When it was last read while the capture went: a busy capture asks at every segment,
    /// and the whole trace is read each time.
    read_at: Option<Instant>,
}

/// The least time between two readings of the trace while the capture goes.
const TRACE_EVERY: Duration = Duration::from_millis(10);

impl KernelWord {
    /// Reads the whole trace; it holds every change up to `through` (capped at the time of
    /// reading: a change traced later is not in it).
    fn read(&mut self, through: Duration) {
        let Some(tracer) = &self.tracer else {
            return;
        };
        // A tracepoint on the other core may still be writing its record.
        let now = realtime_now().saturating_sub(Duration::from_millis(1));
        match tracer.read() {
            Ok(events) => self.checker.set_trace(events, through.min(now)),
            Err(e) => self.failed = Some(e.to_string()),
        }
    }
}

/// The annotator's view of the kernel's trace: a packet waits until the trace has been read
/// past its time, then leaves with the kernel's notes in its comment.
struct KernelEvidence {
    word: Arc<Mutex<KernelWord>>,
}

impl Evidence for KernelEvidence {
    fn settled(&mut self, at: Duration) -> bool {
        let Ok(mut word) = self.word.lock() else {
            return true;
        };
        if word.checker.settled(at) || word.failed.is_some() || word.tracer.is_none() {
            return true;
        }
        if realtime_now() < Checker::needs(at) + Duration::from_millis(1)
            || word.read_at.is_some_and(|t| t.elapsed() < TRACE_EVERY)
        {
            return false;
        }
        word.read_at = Some(Instant::now());
        word.read(Duration::MAX);
        word.checker.settled(at) || word.failed.is_some()
    }

    fn kernel(&mut self, seg: &Segment, event: &Event, at: Duration) -> Vec<Note> {
        match self.word.lock() {
            Ok(mut word) if word.failed.is_none() => word.checker.release_segment(seg, event, at),
            _ => Vec::new(),
        }
    }
}

/// The packets' clock (realtime since the epoch).
fn realtime_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Given;
    use crate::tracker::tests::{CLIENT, SERVER, active_close};

    /// A segment as an Ethernet frame, the way the ring hands it over.
    fn frame_of(seg: &crate::decode::Segment, ts: Duration) -> Frame {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (seg.src.ip(), seg.dst.ip()) else {
            unreachable!("IPv4 fixtures")
        };
        let mut b = etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4(src.octets(), dst.octets(), 64)
            .tcp(seg.src.port(), seg.dst.port(), seg.seq.0, seg.window);
        let f = seg.flags;
        if f.syn() {
            b = b.syn();
        }
        if f.fin() {
            b = b.fin();
        }
        if f.rst() {
            b = b.rst();
        }
        if f.ack() {
            b = b.ack(seg.ack.0);
        }
        let mut data = Vec::new();
        b.write(&mut data, &vec![b'x'; seg.len as usize]).unwrap();
        Frame {
            ts,
            orig_len: data.len() as u32,
            data,
        }
    }

    #[test]
    fn the_bench_runs_on_given_frames_without_a_socket() {
        let frames = active_close(false)
            .iter()
            .enumerate()
            .map(|(i, s)| frame_of(s, Duration::from_millis(1000 + i as u64)))
            .collect();
        let source = Given {
            frames,
            per_call: 3,
        };
        let server: SocketAddr = SERVER.parse().unwrap();
        let client: SocketAddr = CLIENT.parse().unwrap();
        let mut lab = Lab::new(
            server,
            client.ip(),
            false,
            crate::netns::Hosts::One,
            Box::new(source),
            Box::new(std::io::sink()),
        );
        assert!(lab.wait_for(State::Closed, State::TimeWait).unwrap());
        lab.finish_capture().unwrap();
        assert_eq!(lab.record.packets.len(), 11);
        assert!(
            lab.record.packets[7]
                .comment
                .starts_with("server ESTABLISHED → FIN_WAIT_1"),
            "{}",
            lab.record.packets[7].comment
        );
        assert_eq!(lab.states(), Some([State::Closed, State::TimeWait]));
    }
}
