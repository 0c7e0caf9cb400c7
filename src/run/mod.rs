//! `teardown run`: a private network stack, the capture, the scenario's script, the verdict
//! and the annotated pcapng.

pub mod all;
pub mod report;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use pcap_file::DataLink;

use crate::cli::RunConfig;
use crate::error::{Error, exit};
use crate::kernel::{self, tracefs::Tracefs, tracefs::Tracer};
use crate::netns::{self, pair};
use crate::output::dest::Dest;
use crate::output::pcapng::{FileInfo, Writer};
use crate::scenario::Place;
use crate::scenario::bench::{Lab, POLL};
use crate::signals;

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// A second loopback address, so that Wireshark's flow graph draws two columns.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Runs one scenario; returns the exit code (0 reproduced, 1 something else).
pub fn run(config: &RunConfig, stdout: &mut dyn Write) -> Result<i32, Error> {
    let scenario = config.scenario;
    if config.json && config.output.as_os_str() == "-" {
        return Err(Error::Usage(
            "-w - and --json both want standard output: give -w a file name, or drop --json".into(),
        ));
    }
    // Where the capture and its picture go, checked before any socket is opened: a run that
    // cannot write its file must not run first and fail at the end.
    let (mut dest, mut picture, created_dir) = outputs(config)?;
    // With --json or -w -, standard output carries the report or the capture alone; the
    // narration goes to stderr.
    let mut stderr = std::io::stderr();
    let narration_to_stderr = config.json || dest.is_stdout();
    let (out, mut json_out): (&mut dyn Write, Option<&mut dyn Write>) = if config.json {
        (&mut stderr, Some(stdout))
    } else if narration_to_stderr {
        (&mut stderr, None)
    } else {
        (stdout, None)
    };
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
    let mut hosts = netns::Hosts::One;
    if !config.host {
        netns::enter_private()?;
        if two_hosts {
            hosts = netns::Hosts::Two(std::sync::Arc::new(netns::pair::create()?));
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
        for port in scenario.port_range(config.port).map_err(Error::Usage)? {
            refuse_busy_port(SocketAddr::new(server.ip(), port))?;
        }
    }
    let tracer = match &tracefs {
        Tracefs::Available(root) => scenario.port_range(config.port).and_then(|ports| {
            Tracer::start(root, ports)
                .map_err(|e| format!("cannot use tracefs at {}: {e}", root.display()))
        }),
        Tracefs::Unavailable(why) => Err(why.clone()),
    };
    let tracer = match tracer {
        Ok(tracer) => {
            if !tracer.removed.is_empty() {
                let _ = writeln!(
                    out,
                    "note: removed {} left by a teardown that was killed: {}",
                    crate::output::style::plural(
                        tracer.removed.len(),
                        "tracefs instance",
                        "tracefs instances"
                    ),
                    tracer.removed.join(", ")
                );
            }
            Some(tracer)
        }
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
    let ports = scenario.port_range(config.port).map_err(Error::Usage)?;
    let capture = open_ring(iface, ports)?;
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
    let style = style_wanted(config);
    let header = format!("teardown run {}: ", scenario.name);
    let _ = writeln!(out, "{}", style.wrap(&header, "  ", scenario.lesson));
    let _ = writeln!(
        out,
        "{}\n",
        style.wrap(
            "",
            "  ",
            &format!("server {server}, client {client_ip}, {place}")
        )
    );
    let mut lab = Lab::new(
        server,
        IpAddr::V4(client_ip),
        config.host,
        hosts,
        Box::new(capture),
        if narration_to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        },
    );
    lab.quick_close = config.quick_close;
    lab.annotator.comments = config.comments;
    if let Some(tracer) = tracer {
        lab.use_tracer(tracer);
    }
    lab.require_kernel = config.require_kernel;
    lab.style = style;
    let outcome = (scenario.script)(&mut lab).and_then(|()| lab.finish_capture());
    // Whatever happened, what was captured is written.
    let _ = lab.finish_capture();
    // What the report reads: the run's record, with the connection as the run left it.
    lab.record.connection = lab.connection().cloned();
    let mut differences = report::differences(
        scenario.expect,
        lab.states(),
        &lab.record.missed,
        &lab.record.restarts,
    );
    differences.extend(lab.record.differences.iter().cloned());
    if let Some(a) = lab.record.agreement.as_ref().filter(|a| !a.ok()) {
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
        section_comment: report::section_comment(scenario, &lab.record, &place, &verdict),
        iface: iface.into(),
        linktype: DataLink::ETHERNET,
    };
    write_capture(&mut dest, &info, &lab.record.packets, lab.record.stats)
        .map_err(Error::io(format!("writing {}", dest.name())))?;
    if let Some(path) = dest.path() {
        give_to_sudo_user(path, created_dir.as_deref());
    }
    // The same ladder as a picture, beside the capture.
    let mut drawn = None;
    if let (Some(svg), Some(_)) = (picture.take(), lab.connection()) {
        let heading = crate::output::figure::Heading {
            title: format!("teardown run {}", scenario.name),
            lesson: Some(scenario.lesson.to_string()),
            verdict: Some(verdict.clone()),
        };
        drawn = Some(draw(svg, &lab, &heading)?);
    }
    let text = format!("{})", commented(&lab.record.packets));
    let _ = writeln!(
        out,
        "\n{}",
        lab.style
            .wrap("capture: ", "  ", &format!("{} ({text}", dest.name()))
    );
    if let Some(name) = &drawn {
        let _ = writeln!(out, "diagram: {name}");
    }
    say_notes(out, &mut lab, stamps, live);
    if let Some(a) = &lab.record.agreement {
        let _ = writeln!(out, "{}", lab.style.wrap("", "  ", &a.summary()));
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
            &lab.record,
            &place,
            verdict,
            &differences,
            Path::new(&dest.name()),
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

/// The capture's destination and its picture's (an SVG beside a file; none for standard
/// output or a device), both checked; and the directory made for the default `captures/`.
fn outputs(config: &RunConfig) -> Result<(Dest, Option<Dest>, Option<PathBuf>), Error> {
    capture_outputs(&config.output, config.default_output)
}

/// `outputs` for any front that writes a capture and its picture (`run`, `exec`): `output`
/// is `-w`'s path, or the default in `captures/` when `default_output`.
pub(crate) fn capture_outputs(
    output: &Path,
    default_output: bool,
) -> Result<(Dest, Option<Dest>, Option<PathBuf>), Error> {
    let mut created = None;
    let flag = if default_output {
        // The design's own folder: the one directory a command makes by itself.
        if let Some(dir) = output.parent().filter(|d| !d.exists()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Usage(format!(
                    "cannot create {} for the capture ({e}); give -w FILE to write elsewhere",
                    dir.display()
                ))
            })?;
            created = Some(dir.to_path_buf());
        }
        "the capture"
    } else {
        "-w"
    };
    let check = |path: &Path| {
        Dest::check(flag, path).map_err(|e| {
            Error::Usage(if default_output {
                format!("{e}, with -w FILE")
            } else {
                e
            })
        })
    };
    let dest = check(output)?;
    let picture = match &dest {
        Dest::File { path, .. } => Some(check(&path.with_extension("svg"))?),
        _ => None,
    };
    Ok((dest, picture, created))
}

/// Writes the capture into `dest` and puts it in place.
pub(crate) fn write_capture(
    dest: &mut Dest,
    info: &FileInfo,
    packets: &[crate::annotate::Packet],
    stats: Option<crate::capture::Stats>,
) -> std::io::Result<()> {
    let mut writer = Writer::new(dest.open()?, 1 << 16, info)?;
    for packet in packets {
        writer.write_packet(packet)?;
    }
    let end = packets.last().map(|p| p.frame.ts).unwrap_or_default();
    let mut sink = writer.finish(stats, end)?;
    sink.flush()?;
    drop(sink);
    dest.commit()
}

/// Colour and width for the narration's stream (standard error with --json): `--color`,
/// NO_COLOR, COLUMNS and the terminal's size.
fn style_wanted(config: &RunConfig) -> crate::output::style::Style {
    crate::output::style::Style::detect(
        config.color,
        config.json || config.output.as_os_str() == "-",
    )
}

/// On the host's loopback the port may already be taken: say by what, before starting.
pub(crate) fn refuse_busy_port(server: SocketAddr) -> Result<(), Error> {
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
pub(crate) fn give_to_sudo_user(path: &Path, created_dir: Option<&Path>) {
    let id = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) else {
        return;
    };
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    if let Some(dir) = created_dir {
        let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
    }
}

/// The same ring `capture` reads, the kernel filtering to the run's `ports`: on the host's
/// loopback other programs' traffic never reaches teardown.
pub(crate) fn open_ring(
    iface: &str,
    ports: std::ops::RangeInclusive<u16>,
) -> Result<crate::capture::ring::Ring, Error> {
    let program = crate::capture::filter::Bpf::ports(ports).map_err(Error::Usage)?;
    let ring = crate::capture::ring::Ring::open_filtered(
        iface,
        iface == "lo",
        Some(program.kernel_program()),
        POLL,
    )?;
    Ok(ring)
}

/// Draws every connection of the run (each end on its own clock from the kernel's trace)
/// into `svg`, given to the sudo user as the capture is; the picture's name.
pub(crate) fn draw(
    svg: Dest,
    lab: &Lab,
    heading: &crate::output::figure::Heading,
) -> Result<String, Error> {
    let notes = lab.record.agreement.as_ref().map(|a| &a.per_packet[..]);
    let name = svg.name();
    let conns: Vec<_> = lab.annotator.tracker.connections().iter().collect();
    let page = crate::output::svg::render_page(
        &lab.record.packets,
        &conns,
        notes,
        &lab.record.trace,
        &lab.record.notes,
        heading,
    );
    svg.write_all(page.as_bytes())
        .map_err(Error::io(format!("writing {name}")))?;
    give_to_sudo_user(Path::new(&name), None);
    Ok(name)
}

/// Switches the kernel's packet timestamps off again (`stamps`), then says the run's notes,
/// with one more if the timestamps came on late (`live` false).
pub(crate) fn say_notes(
    out: &mut dyn Write,
    lab: &mut Lab,
    stamps: crate::capture::stamps::StampsOn,
    live: bool,
) {
    if !live {
        lab.record.notes.push(
            "the kernel's packet timestamps did not come on in time: the first packets may carry \
             the time they were read"
                .into(),
        );
    }
    drop(stamps);
    for note in &lab.record.notes {
        let _ = writeln!(out, "{}", lab.style.wrap("note: ", "      ", note));
    }
}

/// "30 packets, 12 commented where a state changed or a note is: open it in Wireshark": what
/// the written capture holds, for `run` and `exec` alike.
pub(crate) fn commented(packets: &[crate::annotate::Packet]) -> String {
    let n = packets.iter().filter(|p| !p.comment.is_empty()).count();
    format!(
        "{}, {}: open it in Wireshark",
        crate::output::style::plural(packets.len(), "packet", "packets"),
        if n == packets.len() {
            "each with a comment".to_string()
        } else {
            format!("{n} commented where a state changed or a note is")
        }
    )
}
