//! `teardown exec`: your own server and clients run through the lab `run` uses — a private
//! network namespace, the capture, the kernel's trace and table, the one annotator, the
//! ladder, SVG and pcapng — and their teardown explained: who closed first, each end's path
//! and owner, the restart, and what they left behind.

mod owners;
mod procs;
pub mod report;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pcap_file::DataLink;

pub use procs::CommandLine;

use crate::cli::{ExecConfig, StopServer};
use crate::error::{Error, exit};
use crate::kernel::{self, KernelSocket, KernelState, tracefs::Tracefs, tracefs::Tracer};
use crate::netns::{self, pair};
use crate::output::dest::Dest;
use crate::output::pcapng::FileInfo;
use crate::output::style::plural;
use crate::record::Restart;
use crate::scenario::bench::Lab;
use crate::signals;
use crate::sockets::SockOpts;
use owners::Owners;
use procs::{Place, Spawned, status_text};

/// How often the programs and the kernel's table are looked at while they run.
const TICK: Duration = Duration::from_millis(5);
/// After the last program's last step, how long the last segments get to arrive.
const SETTLE: Duration = Duration::from_millis(300);

/// What the run did with the server, for the report.
#[derive(Default)]
struct ServerLife {
    /// The address its listener was bound to, and with which options (none where they could
    /// not be read).
    listener: Option<(SocketAddr, SockOpts)>,
    /// The listener's process, when it is not the one teardown started (a daemon).
    daemon: Option<u32>,
    /// The listener's process, whichever it is.
    listener_pid: Option<u32>,
    stopped: Option<String>,
    exited_by_itself: Option<String>,
}

/// The lab's programs and everything that must die with the run.
struct Programs {
    server: Option<Spawned>,
    restarted: Option<Spawned>,
    clients: Vec<Spawned>,
    pidns: procs::PidNamespace,
    /// The lab's network namespaces (`net:[N]`): a process in one of them is the run's.
    netns: Vec<String>,
}

impl Programs {
    fn all(&mut self) -> impl Iterator<Item = &mut Spawned> {
        self.server
            .iter_mut()
            .chain(self.restarted.iter_mut())
            .chain(self.clients.iter_mut())
    }

    /// Every process teardown started, and what they started, killed and reaped.
    fn kill_all(&mut self) {
        for p in self.all() {
            p.signal(libc::SIGKILL);
        }
        self.pidns.kill_all();
        // Without a PID namespace, what went into the background (a new session, out of
        // reach of the group) is found by the network namespace it lives in.
        kill_namespace_members(&self.netns);
        for p in self.all() {
            p.kill();
        }
        self.pidns.reap();
        for p in self.all() {
            p.join_output();
        }
    }
}

impl Drop for Programs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// SIGKILL to every other process whose network namespace is one of `netns`.
fn kill_namespace_members(netns: &[String]) {
    if netns.is_empty() {
        return;
    }
    let me = std::process::id();
    for (pid, dir) in kernel::processes() {
        if pid == me {
            continue;
        }
        if let Ok(link) = std::fs::read_link(dir.join("ns/net"))
            && netns.iter().any(|n| link.as_os_str() == n.as_str())
        {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Runs `config`; returns the exit code.
pub fn exec(config: &ExecConfig, stdout: &mut dyn Write) -> Result<i32, Error> {
    if config.json && config.output.as_os_str() == "-" {
        return Err(Error::Usage(
            "-w - and --json both want standard output: give -w a file name, or drop --json".into(),
        ));
    }
    // Every program found before any starts: a client that cannot start fails the run
    // before the server is up.
    procs::check_found("--server", &config.server)?;
    for line in &config.clients {
        procs::check_found("--client", line)?;
    }
    let (mut dest, mut picture, created_dir) = outputs(config)?;
    let mut stderr = std::io::stderr();
    let to_stderr = config.json || dest.is_stdout();
    let (out, json_out): (&mut dyn Write, Option<&mut dyn Write>) = if config.json {
        (&mut stderr, Some(stdout))
    } else if to_stderr {
        (&mut stderr, None)
    } else {
        (stdout, None)
    };
    // One thread only until here: a user namespace and fork() both want it.
    netns::enter_private()?;
    let hosts = if config.netns {
        netns::Hosts::Two(std::sync::Arc::new(pair::create()?))
    } else {
        netns::Hosts::One
    };
    let pidns = procs::PidNamespace::create();
    let tracefs = kernel::tracefs::locate();
    signals::install();
    let mut lab_netns: Vec<String> = std::fs::read_link("/proc/self/ns/net")
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
        .into_iter()
        .collect();
    if let netns::Hosts::Two(pair) = &hosts
        && let Ok(l) = std::fs::read_link(format!("/proc/self/fd/{}", pair.server_fd()))
    {
        lab_netns.push(l.to_string_lossy().into_owned());
    }
    let mut programs = Programs {
        server: None,
        restarted: None,
        clients: Vec::new(),
        pidns,
        netns: lab_netns,
    };
    let (server_ip, client_ip, iface) = match &hosts {
        netns::Hosts::Two(_) => (pair::SERVER_IP, pair::CLIENT_IP, pair::CLIENT_IF),
        netns::Hosts::One => (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, "lo"),
    };
    let server = SocketAddr::new(IpAddr::V4(server_ip), config.port);
    let style = crate::output::style::Style::detect(config.color, to_stderr);
    let tracer = match &tracefs {
        Tracefs::Available(root) => Tracer::start(root, config.port..=config.port)
            .map_err(|e| format!("cannot use tracefs at {}: {e}", root.display())),
        Tracefs::Unavailable(why) => Err(why.clone()),
    };
    let mut notes = Vec::new();
    let tracer = match tracer {
        Ok(t) => {
            if !t.removed.is_empty() {
                notes.push(format!(
                    "removed {} left by a teardown that was killed: {}",
                    plural(t.removed.len(), "tracefs instance", "tracefs instances"),
                    t.removed.join(", ")
                ));
            }
            Some(t)
        }
        Err(why) if config.require_kernel => return Err(Error::KernelUnavailable(why)),
        Err(why) => {
            notes.push(format!(
                "kernel confirmation is off ({why}): the states come from the packets only; \
                 --require-kernel makes this an error"
            ));
            None
        }
    };
    let (stamps, live) =
        crate::capture::stamps::switch_on().map_err(Error::io("switching on packet timestamps"))?;
    let capture = crate::run::open_ring(iface, config.port..=config.port)?;
    let place = if config.netns {
        format!(
            "across two private network namespaces joined by a veth pair (clients at {client_ip}, \
             the server's host at {server_ip}), captured on the clients' end of the wire"
        )
    } else {
        "in a private network namespace (its own TCP stack, loopback only)".to_string()
    };
    let user = config
        .user
        .as_ref()
        .map(|(_, _, name)| format!(", as {name}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{}",
        style.wrap(
            "teardown exec: ",
            "  ",
            &format!(
                "server `{}` on port {}, {}{user}, {place}",
                config.server.text,
                config.port,
                clients_text(config),
            )
        )
    );
    for note in &notes {
        let _ = writeln!(out, "{}", style.wrap("note: ", "      ", note));
    }
    if !programs.pidns.active() {
        let _ = writeln!(
            out,
            "note: no PID namespace could be made: programs a server starts itself may outlive \
             a teardown killed with SIGKILL"
        );
    }
    let _ = writeln!(out);
    let mut lab = Lab::new(
        server,
        IpAddr::V4(client_ip),
        false,
        hosts.clone(),
        Box::new(capture),
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        },
    );
    // The trace names a thread's id; with record-tgid also its process's, which is what
    // the report names (a threaded server closes in a worker thread).
    if let Some(t) = &tracer {
        let _ = std::fs::write(t.dir().join("options/record-tgid"), "1");
    }
    if let Some(tracer) = tracer {
        lab.use_tracer(tracer);
    }
    lab.require_kernel = config.require_kernel;
    lab.style = style;
    let place_of = |server_side: bool| Place {
        netns_fd: match (&hosts, server_side) {
            (netns::Hosts::Two(p), true) => Some(p.server_fd()),
            _ => None,
        },
        user: config.user.as_ref().map(|(u, g, _)| (*u, *g)),
    };
    let mut owners = Owners::default();
    owners.pidns = programs.pidns.link();
    let mut life = ServerLife::default();

    let outcome = drive(
        config,
        &mut lab,
        &mut programs,
        &mut owners,
        &mut life,
        &place_of,
        to_stderr,
    );
    // A fault before the clients ran (not found, never listened) is the answer: exit 2.
    if let Err(e @ Error::Usage(_)) = outcome {
        // No ladder, no file: the capture and the trace end with the lab.
        drop(lab);
        programs.kill_all();
        return Err(e);
    }
    // What the programs left behind, read before the capture ends and the programs die.
    let left = owners.watch(&hosts, config.port).unwrap_or_default();
    let would = would_restart_fail(&lab, &life, &left);
    let calls = lab
        .tracer_dir()
        .and_then(|dir| std::fs::read_to_string(dir.join("trace")).ok())
        .map(|text| owners::traced_calls(&text))
        .unwrap_or_default();
    let finished = lab.finish_capture();
    programs.kill_all();
    let outcome = outcome.and(finished);
    lab.record.connection = lab.connection().cloned();
    // The table as the programs left it (read before they were killed), as the lab's own
    // check read it for the newest connection.
    let conns = report::connections(&mut lab, &owners, &calls);
    let leftovers = report::left_behind(&left, server, life.listener.map(|l| l.0), &would);
    let text = report::text(&conns, &leftovers, &lab.style);
    let _ = write!(out, "{text}");

    let mismatched = conns.iter().any(|c| c.mismatched > 0);
    let verdict = match &outcome {
        Err(Error::Interrupted) => "interrupted; the capture holds what was seen until then".into(),
        Err(e) => format!("the run failed: {e}"),
        Ok(()) if mismatched => "the kernel disagreed with the inference (MISMATCH above)".into(),
        Ok(()) => "run and explained".to_string(),
    };
    let found = report::Findings {
        config,
        place: &place,
        conns: &conns,
        left: &leftovers,
        verdict: &verdict,
    };
    let section = report::section_comment(&found, &lab);
    let info = FileInfo {
        section_comment: section,
        iface: iface.into(),
        linktype: DataLink::ETHERNET,
    };
    crate::run::write_capture(&mut dest, &info, &lab.record.packets, lab.record.stats)
        .map_err(Error::io(format!("writing {}", dest.name())))?;
    if let Some(path) = dest.path() {
        crate::run::give_to_sudo_user(path, created_dir.as_deref());
    }
    let mut drawn = None;
    if let (Some(svg), Some(_)) = (picture.take(), lab.connection()) {
        // Every connection, as `run` draws its own.
        let heading = crate::output::figure::Heading {
            title: format!("teardown exec: server `{}`", config.server.text),
            lesson: Some(format!("on port {}, {}", config.port, clients_text(config))),
            verdict: None,
        };
        drawn = Some(crate::run::draw(svg, &lab, &heading)?);
    }
    let _ = writeln!(
        out,
        "\n{}",
        lab.style.wrap(
            "capture: ",
            "  ",
            &format!(
                "{} ({})",
                dest.name(),
                crate::run::commented(&lab.record.packets)
            )
        )
    );
    if let Some(name) = &drawn {
        let _ = writeln!(out, "diagram: {name}");
    }
    crate::run::say_notes(out, &mut lab, stamps, live);
    if let Some(j) = json_out {
        let value = report::json(&found, &lab, &dest.name());
        let _ = writeln!(
            j,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    }
    outcome?;
    Ok(if mismatched {
        exit::DIFFERENT
    } else {
        exit::REPRODUCED
    })
}

/// Starts `--server` (the first time or again), its pid named as its owner from now on.
fn start_server(
    config: &ExecConfig,
    programs: &Programs,
    owners: &mut Owners,
    place_of: &dyn Fn(bool) -> Place,
    to_stderr: bool,
) -> Result<Spawned, Error> {
    let server = Spawned::start(
        "server",
        &config.server,
        place_of(true),
        &programs.pidns,
        to_stderr,
    )
    .map_err(|e| Error::Usage(procs::spawn_error("--server", &config.server, &e)))?;
    owners
        .started
        .insert(server.pid, config.server.text.clone());
    Ok(server)
}

/// The run itself: the server up, the clients in turn, the stop and the restart.
fn drive(
    config: &ExecConfig,
    lab: &mut Lab,
    programs: &mut Programs,
    owners: &mut Owners,
    life: &mut ServerLife,
    place_of: &dyn Fn(bool) -> Place,
    to_stderr: bool,
) -> Result<(), Error> {
    let hosts = lab.hosts.clone();
    let port = config.port;
    let server = start_server(config, programs, owners, place_of, to_stderr)?;
    lab.say(
        "server",
        format!("started `{}` (pid {})", config.server.text, server.pid),
    )?;
    programs.server = Some(server);
    let started = Instant::now();
    let listener = wait_listening(config, programs.server.as_mut(), owners, &hosts)?;
    let Some(listener) = listener else {
        return Err(never_listened(
            config,
            programs.server.as_mut(),
            owners,
            &hosts,
        ));
    };
    // Its workers, if it starts any, are named from now on.
    owners.scan_members();
    let opts = listener_opts(&listener);
    let owner = listener
        .owner
        .as_ref()
        .map(|o| format!(" by pid {} ({})", o.pid, o.command))
        .unwrap_or_default();
    lab.say(
        "server",
        format!(
            "listens on {} after {:.0} ms{owner}, bound with {}",
            listener.local,
            started.elapsed().as_secs_f64() * 1000.0,
            opts.map_or("options unknown".to_string(), |o| o.to_string())
        ),
    )?;
    life.listener = Some((listener.local, opts.unwrap_or_default()));
    life.listener_pid = listener.owner.as_ref().map(|o| o.pid);
    // A server that went into the background: its listener's process is the one to stop.
    if let (Some(o), Some(s)) = (&listener.owner, programs.server.as_mut())
        && s.poll().is_some()
    {
        life.daemon = Some(o.pid);
        let (status, pid) = (s.status.map(status_text).unwrap_or_default(), o.pid);
        lab.say(
            "server",
            format!(
                "went into the background: `{}` exited ({status}), pid {pid} ({}) listens",
                config.server.text, o.command
            ),
        )?;
        life.exited_by_itself = Some(status);
    }

    // The clients, each --repeat times, --parallel at once.
    let mut first_client: Option<Instant> = None;
    let mut stopped = false;
    let total = config.clients.len() * config.repeat as usize;
    let mut n = 0;
    for line in &config.clients {
        for _ in 0..config.repeat {
            let mut batch = Vec::new();
            for _ in 0..config.parallel {
                n += 1;
                let label = if total > 1 || config.parallel > 1 {
                    format!("client {n}")
                } else {
                    "client".to_string()
                };
                let c = Spawned::start(&label, line, place_of(false), &programs.pidns, to_stderr)
                    .map_err(|e| Error::Usage(procs::spawn_error("--client", line, &e)))?;
                owners.started.insert(c.pid, line.text.clone());
                if config.parallel == 1 {
                    lab.say(&label, format!("started `{}` (pid {})", line.text, c.pid))?;
                }
                first_client.get_or_insert_with(Instant::now);
                batch.push(programs.clients.len());
                programs.clients.push(c);
            }
            if config.parallel > 1 {
                lab.say(
                    "clients",
                    format!(
                        "started {} copies of `{}` at once",
                        config.parallel, line.text
                    ),
                )?;
            }
            let begun = Instant::now();
            loop {
                if signals::interrupted() {
                    return Err(Error::Interrupted);
                }
                let _ = owners.watch(&hosts, port);
                if !stopped
                    && let StopServer::After(after) = config.stop
                    && first_client.is_some_and(|t| t.elapsed() >= after)
                {
                    stopped = true;
                    stop_server(config, lab, programs, owners, life, after)?;
                    if config.restart {
                        restart(config, lab, programs, owners, life, place_of, to_stderr)?;
                    }
                }
                server_exit(lab, programs, life, stopped)?;
                let mut running = 0;
                for &i in &batch {
                    let c = &mut programs.clients[i];
                    if c.status.is_some() {
                        continue;
                    }
                    match c.poll() {
                        Some(status) => {
                            let (label, pid) = (c.label.clone(), c.pid);
                            lab.say(
                                &label,
                                format!("exited, {} (pid {pid})", status_text(status)),
                            )?;
                        }
                        None if begun.elapsed() >= config.timeout => {
                            c.kill();
                            let (label, pid) = (c.label.clone(), c.pid);
                            let secs = config.timeout.as_secs_f64();
                            lab.say(
                                &label,
                                format!(
                                    "still running after --timeout {secs} s: killed (SIGKILL, pid \
                                     {pid})"
                                ),
                            )?;
                        }
                        None => running += 1,
                    }
                }
                if running == 0 {
                    break;
                }
                std::thread::sleep(TICK);
            }
        }
    }
    // The stop, when it was not one while a client ran.
    match config.stop {
        StopServer::After(after) if !stopped => {
            while first_client.is_some_and(|t| t.elapsed() < after)
                || (first_client.is_none() && started.elapsed() < after)
            {
                if signals::interrupted() {
                    return Err(Error::Interrupted);
                }
                let _ = owners.watch(&hosts, port);
                server_exit(lab, programs, life, false)?;
                std::thread::sleep(TICK);
            }
            stop_server(config, lab, programs, owners, life, after)?;
            if config.restart {
                restart(config, lab, programs, owners, life, place_of, to_stderr)?;
            }
        }
        StopServer::AfterClients => {
            stop_server(config, lab, programs, owners, life, Duration::ZERO)?;
            if config.restart {
                restart(config, lab, programs, owners, life, place_of, to_stderr)?;
            }
        }
        _ => {}
    }
    // The last segments on their way.
    let until = Instant::now() + SETTLE;
    while Instant::now() < until {
        if signals::interrupted() {
            return Err(Error::Interrupted);
        }
        let _ = owners.watch(&hosts, port);
        server_exit(lab, programs, life, false)?;
        std::thread::sleep(TICK);
    }
    Ok(())
}

/// Polls the kernel's table until a socket listens on the port; None when the server
/// exited first or --timeout passed.
fn wait_listening(
    config: &ExecConfig,
    mut server: Option<&mut Spawned>,
    owners: &mut Owners,
    hosts: &netns::Hosts,
) -> Result<Option<KernelSocket>, Error> {
    let start = Instant::now();
    while start.elapsed() < config.timeout {
        if signals::interrupted() {
            return Err(Error::Interrupted);
        }
        let sockets = owners
            .watch(hosts, config.port)
            .map_err(Error::io("reading the kernel's socket table"))?;
        if let Some(l) = sockets
            .iter()
            .find(|s| s.state == KernelState::Listen && s.local.port() == config.port)
        {
            return Ok(Some(l.clone()));
        }
        if let Some(s) = server.as_deref_mut()
            && s.poll().is_some()
        {
            // A daemon's parent exits once its child listens: one more look.
            let sockets = owners
                .watch(hosts, config.port)
                .map_err(Error::io("reading the kernel's socket table"))?;
            return Ok(sockets
                .into_iter()
                .find(|s| s.state == KernelState::Listen && s.local.port() == config.port));
        }
        std::thread::sleep(TICK);
    }
    Ok(None)
}

/// The error of a server that never listened: its exit or the timeout, its last lines, and
/// what does listen in the lab.
fn never_listened(
    config: &ExecConfig,
    server: Option<&mut Spawned>,
    owners: &mut Owners,
    hosts: &netns::Hosts,
) -> Error {
    let Some(server) = server else {
        return Error::Usage("the server did not start".into());
    };
    // Its last words are in its pipes: a moment for them to arrive.
    std::thread::sleep(Duration::from_millis(50));
    let how = match server.poll() {
        Some(status) => format!("exited ({}) before it listened", status_text(status)),
        None => format!(
            "did not listen within --timeout {} s",
            config.timeout.as_secs_f64()
        ),
    };
    let mut text = format!(
        "the server `{}` {how} on port {}",
        config.server.text, config.port
    );
    let lines = server.last_lines(5);
    if lines.is_empty() {
        text.push_str("; it printed nothing");
    } else {
        text.push_str("; its last lines:");
        for l in &lines {
            text.push_str(&format!("\n  server│ {l}"));
        }
    }
    let _ = owners.watch(hosts, config.port);
    let listening: Vec<KernelSocket> = kernel::sock_diag::dump_in(hosts)
        .map(|all| {
            let mut l: Vec<KernelSocket> = all
                .into_iter()
                .filter(|s| s.state == KernelState::Listen)
                .collect();
            kernel::fill_owners(&mut l);
            l
        })
        .unwrap_or_default();
    if listening.is_empty() {
        text.push_str("\nnothing listens in the lab");
    } else {
        text.push_str("\nwhat listens in the lab:");
        for s in &listening {
            let who = s
                .owner
                .as_ref()
                .map(|o| format!(" (pid {}, {})", o.pid, o.cmdline))
                .unwrap_or_default();
            text.push_str(&format!("\n  {}{who}", s.local));
        }
    }
    text.push_str(&format!(
        "\ncheck that the server listens on --port {} (its own port option or config), or \
         give a longer --timeout",
        config.port
    ));
    Error::Usage(text)
}

/// Reports a server that exited by itself (once).
fn server_exit(
    lab: &mut Lab,
    programs: &mut Programs,
    life: &mut ServerLife,
    stopped: bool,
) -> Result<(), Error> {
    if life.exited_by_itself.is_some() || stopped || life.stopped.is_some() {
        return Ok(());
    }
    let Some(s) = programs.server.as_mut() else {
        return Ok(());
    };
    if let Some(status) = s.poll() {
        let text = status_text(status);
        let pid = s.pid;
        life.exited_by_itself = Some(text.clone());
        lab.say("server", format!("exited by itself, {text} (pid {pid})"))?;
    }
    Ok(())
}

/// Stops the server with --signal and waits for it to exit (SIGKILL after --timeout).
fn stop_server(
    config: &ExecConfig,
    lab: &mut Lab,
    programs: &mut Programs,
    owners: &mut Owners,
    life: &mut ServerLife,
    after: Duration,
) -> Result<(), Error> {
    if let Some(pid) = life.daemon.take() {
        return stop_daemon(config, lab, life, pid);
    }
    let Some(s) = programs.server.as_mut() else {
        return Ok(());
    };
    if s.poll().is_some() {
        return Ok(());
    }
    owners.scan_members();
    let name = procs::signal_name(config.signal);
    let pid = s.pid;
    s.signal(config.signal);
    let start = Instant::now();
    while s.poll().is_none() && start.elapsed() < config.timeout {
        std::thread::sleep(Duration::from_millis(2));
    }
    let when = if after.is_zero() {
        "after the clients".to_string()
    } else {
        format!(
            "{:.1} s after the first client started",
            after.as_secs_f64()
        )
    };
    let text = match s.status {
        Some(status) => format!(
            "stopped with {name} {when} (pid {pid}): {} {:.0} ms later",
            status_text(status),
            start.elapsed().as_secs_f64() * 1000.0
        ),
        None => {
            s.kill();
            format!(
                "stopped with {name} {when} (pid {pid}): still running after --timeout, killed \
                 (SIGKILL)"
            )
        }
    };
    life.stopped = Some(text.clone());
    lab.say("server", text)?;
    // Its listener in a process of its own that outlived it (a shell's child, a daemon in a
    // session of its own): that one is the server too.
    if let Some(other) = life.listener_pid.filter(|&p| p != pid && process_alive(p)) {
        return stop_daemon(config, lab, life, other);
    }
    Ok(())
}

/// A process that exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
}

/// Stops a server that went into the background (not teardown's child): --signal to its
/// listener's process, then a wait until it is gone.
fn stop_daemon(
    config: &ExecConfig,
    lab: &mut Lab,
    life: &mut ServerLife,
    pid: u32,
) -> Result<(), Error> {
    let name = procs::signal_name(config.signal);
    let alive = || process_alive(pid);
    unsafe { libc::kill(pid as i32, config.signal) };
    let start = Instant::now();
    while alive() && start.elapsed() < config.timeout {
        std::thread::sleep(Duration::from_millis(2));
    }
    let text = if alive() {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        format!("stopped with {name} (pid {pid}): still running after --timeout, killed (SIGKILL)")
    } else {
        format!(
            "stopped with {name} (pid {pid}): gone {:.0} ms later",
            start.elapsed().as_secs_f64() * 1000.0
        )
    };
    life.stopped = Some(text.clone());
    lab.say("server", text)
}

/// Starts the server again at once and says what its bind() did, explained as `run` does.
fn restart(
    config: &ExecConfig,
    lab: &mut Lab,
    programs: &mut Programs,
    owners: &mut Owners,
    life: &mut ServerLife,
    place_of: &dyn Fn(bool) -> Place,
    to_stderr: bool,
) -> Result<(), Error> {
    let hosts = lab.hosts.clone();
    let again = start_server(config, programs, owners, place_of, to_stderr)?;
    let pid = again.pid;
    programs.restarted = Some(again);
    let listening = wait_listening(config, programs.restarted.as_mut(), owners, &hosts)?;
    let (addr, old_opts) = life.listener.unwrap_or((lab.server, SockOpts::NONE));
    let label = format!(
        "restart: `{}` again at once (pid {pid})",
        config.server.text
    );
    if let Some(l) = listening {
        let owner = l
            .owner
            .as_ref()
            .map(|o| format!(", pid {}", o.pid))
            .unwrap_or_default();
        lab.say(
            "server",
            format!("{label} → bound: it listens on {}{owner}", l.local),
        )?;
        let new_opts = listener_opts(&l).unwrap_or(old_opts);
        // What it bound beside: the old connections' sockets still on the port.
        let table = owners.watch(&hosts, config.port).unwrap_or_default();
        let holders: Vec<KernelSocket> = table
            .iter()
            .filter(|s| s.state != KernelState::Listen && s.local.port() == config.port)
            .cloned()
            .collect();
        let far_ends = crate::record::far_ends(&holders, &table);
        let restart = Restart {
            label: "its bind()".into(),
            addr: l.local,
            old_opts,
            new_opts,
            errno: None,
            expected: None,
            holders,
            far_ends,
        };
        let width = lab
            .style
            .width
            .map_or(88, |w| w.saturating_sub(5).clamp(30, 88));
        let mut why = crate::scenario::words::explain(&restart, width);
        if why.is_empty() && !restart.holders.is_empty() {
            why.push("The old connections' sockets on the port did not stop it.".into());
        }
        lab.print(if restart.holders.is_empty() {
            format!(
                "     its bind() of {} with {new_opts} worked: no socket of the old run was left on \
                 the port",
                l.local
            )
        } else {
            format!(
                "     its bind() of {} with {new_opts} worked beside {} of the old run",
                l.local,
                plural(restart.holders.len(), "socket", "sockets")
            )
        });
        for line in why {
            lab.print(format!("     {line}"));
        }
        lab.record.restarts.push(restart);
        return Ok(());
    }
    // Its last words are in its pipes.
    std::thread::sleep(Duration::from_millis(50));
    let s = programs
        .restarted
        .as_mut()
        .ok_or_else(|| Error::Usage("the restarted server is gone".into()))?;
    let how = match s.poll() {
        Some(status) => format!("exited ({}) without listening", status_text(status)),
        None => format!(
            "did not listen within --timeout {} s",
            config.timeout.as_secs_f64()
        ),
    };
    let said = s.last_lines(1);
    lab.say("server", format!("{label} → failed: {how}"))?;
    match said.first() {
        Some(line) => lab.print(format!("     its own words: {line}")),
        None => lab.print("     it printed nothing"),
    }
    // The kernel's answer to the same bind, with the same options, and the holders.
    let socket = lab.try_restart(
        "teardown's bind() of the same address",
        addr,
        old_opts,
        old_opts,
        None,
    )?;
    drop(socket);
    let told = lab.record.restarts.last_mut().map(|r| {
        r.expected = r.errno;
        (r.errno, crate::scenario::words::restart_text(r, &lab.style))
    });
    if let Some((errno, text)) = told {
        let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
        let first = lab.style.wrap("     ", "       ", first);
        lab.print(format!("{first}\n{}", rest.trim_end_matches('\n')));
        if errno.is_none() {
            lab.print(
                "     the same bind() works now: the port was not what stopped it; see its \
                 own words above",
            );
        }
    }
    Ok(())
}

/// The listener's SO_REUSEADDR and SO_REUSEPORT, read from the server's own socket
/// (pidfd_getfd(2) copies its descriptor): what the restart explanation weighs.
fn listener_opts(listener: &KernelSocket) -> Option<SockOpts> {
    let pid = listener.owner.as_ref()?.pid;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let want = format!("socket:[{}]", listener.inode);
    let fd: i32 = fds.flatten().find_map(|e| {
        let target = std::fs::read_link(e.path()).ok()?;
        (target.to_string_lossy() == want)
            .then(|| e.file_name().to_str()?.parse().ok())
            .flatten()
    })?;
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        if pidfd < 0 {
            return None;
        }
        let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
        libc::close(pidfd);
        if copy < 0 {
            return None;
        }
        let get = |opt: i32| {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let rc = libc::getsockopt(
                copy,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            );
            (rc == 0).then_some(v != 0)
        };
        let opts =
            get(libc::SO_REUSEADDR)
                .zip(get(libc::SO_REUSEPORT))
                .map(|(reuseaddr, reuseport)| SockOpts {
                    reuseaddr,
                    reuseport,
                });
        libc::close(copy);
        opts
    }
}

/// Whether a server started now with the old listener's options would bind: a trial bind
/// (closed at once), when no listener holds the port any more.
fn would_restart_fail(
    lab: &Lab,
    life: &ServerLife,
    left: &[KernelSocket],
) -> Option<(SockOpts, Option<i32>)> {
    let (addr, opts) = life.listener?;
    if left.iter().any(|s| s.state == KernelState::Listen) {
        return None;
    }
    let errno = match crate::sockets::listen_in(&lab.hosts, addr, opts) {
        Ok(_) => None,
        Err(e) => e.errno().or(Some(0)),
    };
    Some((opts, errno))
}

/// The capture's destination and its picture's, checked before anything starts; the
/// directory made for the default `captures/`.
fn outputs(config: &ExecConfig) -> Result<(Dest, Option<Dest>, Option<PathBuf>), Error> {
    crate::run::capture_outputs(&config.output, config.default_output)
}

/// "1 client, 3 times, 2 at a time": what the run's clients are.
fn clients_text(config: &ExecConfig) -> String {
    let mut s = plural(config.clients.len(), "client", "clients");
    if config.repeat > 1 {
        s.push_str(&format!(", {} times", config.repeat));
    }
    if config.parallel > 1 {
        s.push_str(&format!(", {} at a time", config.parallel));
    }
    s
}
