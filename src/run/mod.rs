//! `teardown run`: a private network stack, the capture, the scenario's script, the verdict
//! and the annotated pcapng.

pub mod all;
pub mod lab;
pub mod report;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use pcap_file::DataLink;

use crate::capture::LiveCapture;
use crate::cli::RunConfig;
use crate::error::{Error, exit};
use crate::kernel::{self, tracefs::Tracefs, tracefs::Tracer};
use crate::netns::{self, pair};
use crate::output::pcapng::{FileInfo, write_file};
use crate::scenario::Place;
use crate::signals;
use lab::{Lab, POLL};

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// A second loopback address, so that Wireshark's flow graph draws two columns.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Runs one scenario; returns the exit code (0 reproduced, 1 something else).
pub fn run(config: &RunConfig, stdout: &mut dyn Write) -> Result<i32, Error> {
    // With --json, standard output carries the report alone; the narration goes to stderr.
    let mut stderr = std::io::stderr();
    let (out, mut json_out): (&mut dyn Write, Option<&mut dyn Write>) = if config.json {
        (&mut stderr, Some(stdout))
    } else {
        (stdout, None)
    };
    let scenario = config.scenario;
    let two_hosts = config.netns || scenario.place == Place::TwoHosts;
    if config.host && two_hosts {
        return Err(Error::Usage(format!(
            "{} holds back or drops segments between two hosts, which it builds as two network \
             namespaces of its own: run it without --host",
            scenario.name
        )));
    }
    if config.netns && scenario.place == Place::OneHost {
        return Err(Error::Usage(format!(
            "{} tries one host's bind() rules on several loopback addresses: run it without \
             --netns",
            scenario.name
        )));
    }
    // Before any thread exists: unshare() of a user namespace needs a single thread.
    if !config.host {
        netns::enter_private()?;
        if two_hosts {
            netns::pair::create()?;
        }
    }
    // Also single-threaded: tracefs may have to be mounted in a mount namespace of our own.
    let tracefs = kernel::tracefs::locate();
    signals::install();
    let (server_ip, client_ip, iface) = if two_hosts {
        (pair::SERVER_IP, pair::CLIENT_IP, pair::CLIENT_IF)
    } else {
        (SERVER_IP, CLIENT_IP, "lo")
    };
    let server = SocketAddr::new(IpAddr::V4(server_ip), config.port);
    if config.host {
        if let Some(name) = config.scenario.sysctls.first() {
            return Err(Error::Usage(format!(
                "{} changes {name}, which teardown does only inside a run's own network \
                 namespace: run it without --host",
                config.scenario.name
            )));
        }
        refuse_busy_port(server)?;
    }
    let tracer = match &tracefs {
        Tracefs::Available(root) => Tracer::start(root, config.port)
            .map_err(|e| format!("cannot use tracefs at {}: {e}", root.display())),
        Tracefs::Unavailable(why) => Err(why.clone()),
    };
    let tracer = match tracer {
        Ok(tracer) => Some(tracer),
        Err(why) if config.require_kernel => return Err(Error::KernelUnavailable(why)),
        Err(why) => {
            let _ = writeln!(
                out,
                "note: kernel confirmation is off ({why}): the states come from the packets \
                 only; --require-kernel makes this an error\n"
            );
            None
        }
    };
    // Kernel stamps on before the first packet, or the first ones carry the time of reading.
    let (stamps, live) =
        crate::capture::stamps::switch_on().map_err(Error::io("switching on packet timestamps"))?;
    let capture = LiveCapture::open(iface, POLL)?;
    let place = if config.host {
        "on the host's loopback".to_string()
    } else if two_hosts {
        format!(
            "across two private network namespaces joined by a veth pair (client host \
             {}, server host {}), captured on the client's end of the wire",
            pair::CLIENT_IF,
            pair::SERVER_IF
        )
    } else {
        "in a private network namespace (its own TCP stack, loopback only)".to_string()
    };
    let _ = writeln!(out, "teardown run {}: {}", scenario.name, scenario.lesson);
    let _ = writeln!(out, "server {server}, client {client_ip}, {place}\n");
    let mut lab = Lab::new(
        server,
        IpAddr::V4(client_ip),
        config.host,
        capture,
        if config.json {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        },
    );
    lab.quick_close = config.quick_close;
    lab.tracer = tracer;
    lab.require_kernel = config.require_kernel;
    lab.style = style_wanted(config);
    let outcome = (scenario.script)(&mut lab).and_then(|()| lab.finish_capture());
    // Whatever happened, what was captured is written.
    let _ = lab.finish_capture();
    let mut differences =
        report::differences(scenario.expect, lab.states(), &lab.missed, &lab.restarts);
    differences.extend(lab.differences.iter().cloned());
    if let Some(a) = lab.agreement.as_ref().filter(|a| !a.ok()) {
        differences.push(format!(
            "the kernel disagreed with the inference {}: see MISMATCH above and in the packet \
             comments",
            crate::output::style::plural(a.mismatched, "time", "times")
        ));
    }
    let verdict = match &outcome {
        Err(Error::Interrupted) => {
            "interrupted; the capture holds what was seen until then".to_string()
        }
        Err(e) => format!("the run failed: {e}"),
        Ok(()) if differences.is_empty() => "reproduced".to_string(),
        Ok(()) => format!("the kernel did something else: {}", differences.join("; ")),
    };
    let info = FileInfo {
        section_comment: report::section_comment(scenario, &lab, &place, &verdict),
        iface: iface.into(),
        linktype: DataLink::ETHERNET,
    };
    let dir = config
        .output
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf);
    write_file(&config.output, &info, &lab.packets, lab.stats)
        .map_err(Error::io(format!("writing {}", config.output.display())))?;
    give_to_sudo_user(&config.output, dir.as_deref());
    // The same ladder as a picture, beside the capture.
    let picture = config.output.with_extension("svg");
    if let Some(conn) = lab.connection() {
        let notes = lab.agreement.as_ref().map(|a| &a.per_packet[..]);
        std::fs::write(
            &picture,
            crate::output::svg::render(&lab.packets, conn, notes),
        )
        .map_err(Error::io(format!("writing {}", picture.display())))?;
        give_to_sudo_user(&picture, None);
    }
    let _ = writeln!(
        out,
        "\ncapture: {} ({} packets, each with a comment: open it in Wireshark)",
        config.output.display(),
        lab.packets.len()
    );
    if lab.connection().is_some() {
        let _ = writeln!(out, "diagram: {}", picture.display());
    }
    if !live {
        lab.notes.push(
            "the kernel's packet timestamps did not come on in time: the first packets may carry \
             the time they were read"
                .into(),
        );
    }
    drop(stamps);
    for note in &lab.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if let Some(a) = &lab.agreement {
        let _ = writeln!(out, "{}", a.summary());
    }
    if let Some(j) = json_out.as_mut() {
        let verdict = match &outcome {
            Err(Error::Interrupted) => "interrupted",
            Err(_) => "failed",
            Ok(()) if differences.is_empty() => "reproduced",
            Ok(()) => "different",
        };
        let value = report::json(
            scenario,
            &lab,
            &place,
            verdict,
            &differences,
            &config.output,
        );
        let _ = writeln!(
            j,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    }
    outcome?;
    let _ = write!(out, "{}", report::verdict_text(&differences, &lab.style));
    Ok(if differences.is_empty() {
        exit::REPRODUCED
    } else {
        exit::DIFFERENT
    })
}

/// Colour and width for the narration's stream (standard error with --json): `--color`,
/// NO_COLOR, COLUMNS and the terminal's size.
fn style_wanted(config: &RunConfig) -> crate::output::style::Style {
    crate::output::style::Style::detect(config.color, config.json)
}

/// On the host's loopback the port may already be taken: say by what, before starting.
fn refuse_busy_port(server: SocketAddr) -> Result<(), Error> {
    let holders: Vec<_> = kernel::sockets_on_port(server.port())
        .map_err(Error::io("reading the kernel's socket table"))?
        .into_iter()
        .filter(|s| s.local.port() == server.port())
        .filter(|s| s.local.ip() == server.ip() || s.local.ip().is_unspecified())
        .collect();
    if holders.is_empty() {
        Ok(())
    } else {
        Err(Error::PortBusy {
            addr: server,
            holders,
        })
    }
}

/// Under sudo, the capture belongs to the user who asked for it, not to root: the file, and
/// the directory only when this run created it (never an existing one such as /tmp).
fn give_to_sudo_user(path: &Path, created_dir: Option<&Path>) {
    let id = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) else {
        return;
    };
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    if let Some(dir) = created_dir {
        let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
    }
}
