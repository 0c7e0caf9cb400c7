//! Holding back and dropping chosen segments with the kernel's own packet filter: an
//! iptables NFQUEUE rule on each host's OUTPUT hands the connection's segments to teardown,
//! whose policy accepts, drops or holds each (this kernel has no netem qdisc, and the nft
//! `queue` statement is not built in). The rules live in the run's own namespaces, so they
//! go with them, whatever way the process ends.

pub mod policy;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::decode::{Segment, decode, link};
use crate::error::Error;
use crate::netns::Hosts;
use crate::netns::pair::Pair;
use crate::signals;
use crate::tracker::Role;
use policy::{Decision, Policy};

/// The queue number in each namespace (each has its own queues).
const QUEUE: u16 = 0;
/// A held segment goes on after this even if the policy never said so: nothing hangs.
const HOLD_LIMIT: Duration = Duration::from_secs(3);

/// What the gate did with one segment.
#[derive(Clone, Debug)]
pub struct Action {
    /// Wall-clock time, as the capture stamps packets.
    pub at: Duration,
    pub from: Role,
    pub decision: Decision,
    pub segment: Segment,
    /// For a held segment: how long it was held.
    pub held_for: Option<Duration>,
    /// Said on a captured packet already (see `GateEvidence`).
    pub told: bool,
}

struct Shared {
    policy: Box<dyn Policy>,
    /// Bumped at each release: each queue lets its held segments go when it changes.
    generation: u64,
    log: Vec<Action>,
}

/// The running gate: one queue reader per host.
pub struct Gate {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// `iptables ARGS` in the client's namespace (the process's own) or the server's.
fn iptables(server: Option<&Pair>, args: &[&str]) -> Result<(), Error> {
    // Root's PATH has /usr/sbin; a sudo or cron PATH may not.
    let program = ["/usr/sbin/iptables", "/sbin/iptables"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("iptables");
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(pair) = server {
        let fd = pair.server_fd();
        // The child runs in the server's namespace; the fd is inherited across fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Usage(
                "this scenario holds back segments with iptables (NFQUEUE), which is not \
                 installed: apt-get install iptables"
                    .into(),
            )
        } else {
            Error::io("running iptables")(e)
        }
    })?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Gate {
    /// Queues every segment of the connection to `port` on both hosts' OUTPUT and starts
    /// deciding with `policy`.
    pub fn start(hosts: &Hosts, port: u16, policy: Box<dyn Policy>) -> Result<Gate, Error> {
        let Hosts::Two(pair) = hosts.clone() else {
            return Err(Error::Usage(
                "the gate needs the two-namespace setup".into(),
            ));
        };
        let port = port.to_string();
        let queue = QUEUE.to_string();
        for (server, dir) in [(None, "--dport"), (Some(&*pair), "--sport")] {
            iptables(
                server,
                &[
                    "-w",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "tcp",
                    dir,
                    &port,
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &queue,
                    // Once teardown stops reading, segments pass instead of being dropped.
                    "--queue-bypass",
                ],
            )?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared {
            policy,
            generation: 0,
            log: Vec::new(),
        }));
        let mut threads = Vec::new();
        for role in [Role::Client, Role::Server] {
            let (stop_reader, shared, pair) = (stop.clone(), shared.clone(), pair.clone());
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            threads.push(std::thread::spawn(move || {
                signals::block_in_this_thread();
                let opened = if role == Role::Server {
                    pair.in_server(open_queue)
                } else {
                    open_queue()
                };
                let queue = match opened {
                    Ok(q) => {
                        let _ = ready_tx.send(Ok(()));
                        q
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                serve(queue, role, &stop_reader, &shared)
            }));
            let failed = match ready_rx.recv() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("NFQUEUE: {e}")),
                Err(_) => Some("NFQUEUE: the queue reader died".to_string()),
            };
            if let Some(why) = failed {
                // The reader already started lets its segments go and ends.
                stop.store(true, Ordering::SeqCst);
                for t in threads.drain(..) {
                    let _ = t.join();
                }
                return Err(Error::Usage(why));
            }
        }
        Ok(Gate {
            stop,
            shared,
            threads,
        })
    }

    /// What it did so far.
    pub fn log(&self) -> Vec<Action> {
        self.shared
            .lock()
            .map(|s| s.log.clone())
            .unwrap_or_default()
    }

    /// The gate's log as the annotator's evidence: a held segment says how long it was
    /// held, the retransmission a drop caused names the segment dropped (which the capture
    /// never saw). Asked as each segment is annotated, while the gate runs.
    pub fn evidence(&self) -> GateEvidence {
        GateEvidence {
            shared: self.shared.clone(),
            first: None,
        }
    }

    pub fn describe(&self) -> String {
        self.shared
            .lock()
            .map(|s| s.policy.describe())
            .unwrap_or_default()
    }
}

/// See `Gate::evidence`.
pub struct GateEvidence {
    shared: Arc<Mutex<Shared>>,
    /// The first segment's time: the notes count milliseconds from it, as the ladder does.
    first: Option<Duration>,
}

impl crate::annotate::Evidence for GateEvidence {
    fn annotate(&mut self, seg: &Segment, event: &mut crate::tracker::Event, at: Duration) {
        let first = *self.first.get_or_insert(at);
        let ms = |t: Duration| t.saturating_sub(first).as_secs_f64() * 1000.0;
        let Ok(mut shared) = self.shared.lock() else {
            return;
        };
        let same = |a: &Action| {
            let s = &a.segment;
            seg.src == s.src && seg.dst == s.dst && seg.seq == s.seq && seg.flags == s.flags
        };
        let held = shared.log.iter_mut().find(|a| {
            !a.told
                && a.decision == Decision::Hold
                && a.held_for.is_some()
                && same(a)
                && at + Duration::from_millis(1) >= a.at
        });
        if let Some(a) = held {
            a.told = true;
            event.push_note(format!(
                "held back by teardown's packet filter for {:.1} ms (NFQUEUE), then released",
                a.held_for.unwrap_or_default().as_secs_f64() * 1000.0
            ));
            return;
        }
        // The peer's next retransmission is what the loss caused.
        if event.resent
            && let Some(a) = shared.log.iter_mut().find(|a| {
                !a.told && a.decision == Decision::Drop && at >= a.at && seg.src == a.segment.dst
            })
        {
            a.told = true;
            // The filter's log settles what the packets alone could only guess.
            let guess = crate::tracker::unanswered(seg, event.from.other());
            event.notes_mut().retain(|n| *n != guess);
            event.push_note(format!(
                "sent again because the {}'s {} segment sent at {:.1} ms never arrived: \
                 teardown's packet filter dropped it (so the capture never saw it either)",
                a.from,
                a.segment.flags,
                ms(a.at)
            ));
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // Held segments are let go. The rules stay until the namespaces go; with nobody
        // reading the queue, --queue-bypass lets their segments pass.
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn open_queue() -> std::io::Result<nfq::Queue> {
    let mut q = nfq::Queue::open()?;
    q.bind(QUEUE)?;
    q.set_nonblocking(true);
    Ok(q)
}

/// Reads one host's queue until told to stop, deciding each segment.
fn serve(
    mut queue: nfq::Queue,
    role: Role,
    stop: &AtomicBool,
    shared: &Mutex<Shared>,
) -> std::io::Result<()> {
    let mut held: Vec<(nfq::Message, Instant, usize)> = Vec::new();
    let mut generation = 0u64;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        match queue.recv() {
            Ok(mut msg) => {
                let seg = decode(link::RAW, msg.get_payload());
                let Ok(seg) = seg else {
                    msg.set_verdict(nfq::Verdict::Accept);
                    queue.verdict(msg)?;
                    continue;
                };
                let mut s = shared
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?;
                let decision = s.policy.decide(role, &seg);
                if s.policy.release() {
                    s.generation += 1;
                }
                s.log.push(Action {
                    at: now(),
                    from: role,
                    decision,
                    segment: seg,
                    held_for: None,
                    told: false,
                });
                let index = s.log.len() - 1;
                drop(s);
                if decision == Decision::Hold {
                    held.push((msg, Instant::now(), index));
                } else {
                    msg.set_verdict(if decision == Decision::Drop {
                        nfq::Verdict::Drop
                    } else {
                        nfq::Verdict::Accept
                    });
                    queue.verdict(msg)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e),
        }
        let current = shared.lock().map(|s| s.generation).unwrap_or(u64::MAX);
        let overdue = held
            .first()
            .is_some_and(|(_, t, _)| t.elapsed() > HOLD_LIMIT);
        if current != generation || overdue || stopping {
            generation = current;
            for (mut msg, since, index) in held.drain(..) {
                if let Ok(mut s) = shared.lock()
                    && let Some(a) = s.log.get_mut(index)
                {
                    a.held_for = Some(since.elapsed());
                }
                msg.set_verdict(nfq::Verdict::Accept);
                queue.verdict(msg)?;
            }
        }
        if stopping {
            return Ok(());
        }
    }
}
