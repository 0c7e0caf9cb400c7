//! `annotate`, `summary` and `diagram` on files, without privileges: every input shape the
//! issue names carries the same conversation, and must come out with the same comments.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapTsResolution, PcapWriter};

use crate::helper::*;

type Frames = Vec<(Duration, Vec<u8>)>;

/// A fixture of tests/data: real kernel runs copied from captures/, which `teardown run`
/// overwrites; the tests never read captures/.
fn capture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn write_pcap(
    path: &Path,
    linktype: DataLink,
    nanos: bool,
    frames: &[(Duration, Vec<u8>)],
    snaplen: u32,
) {
    let header = PcapHeader {
        datalink: linktype,
        snaplen,
        ts_resolution: if nanos {
            PcapTsResolution::NanoSecond
        } else {
            PcapTsResolution::MicroSecond
        },
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (ts, data) in frames {
        let cut = &data[..data.len().min(snaplen as usize)];
        let p = PcapPacket::new(*ts, data.len() as u32, Cow::Borrowed(cut)).unwrap();
        w.write_packet(&p).unwrap();
    }
    std::fs::write(path, w.into_inner()).unwrap();
}

/// The new comment teardown added to each packet (the last one).
fn annotate_comments(dir: &TempDir, input: &Path) -> Vec<String> {
    let out = dir.join(&format!(
        "{}.out.pcapng",
        input.file_name().unwrap().to_string_lossy()
    ));
    let run = teardown(&[
        "annotate",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    packets_of(&out)
        .into_iter()
        .map(|(_, _, c)| c.last().cloned().unwrap_or_default())
        .collect()
}

fn ethernet_frames() -> Vec<(Duration, Vec<u8>)> {
    packets_of(&capture("active-close.pcapng"))
        .into_iter()
        .map(|(t, d, _)| (t, d))
        .collect()
}

/// Wireshark-independent: the comments teardown made for the committed capture's packets.
fn reference(dir: &TempDir) -> Vec<String> {
    let eth = dir.join("eth.pcap");
    write_pcap(&eth, DataLink::ETHERNET, false, &ethernet_frames(), 65535);
    annotate_comments(dir, &eth)
}

#[test]
fn annotate_keeps_every_packet_byte_for_byte_with_its_time_and_comments() {
    let dir = TempDir::new();
    let out = dir.join("re.pcapng");
    let input = capture("active-close.pcapng");
    let run = teardown(&[
        "annotate",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--comments",
        "all",
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stderr
            .contains("11 TCP segments of 11 packets, 1 connection, commented into"),
        "{run}"
    );
    let before = packets_of(&input);
    let after = packets_of(&out);
    assert_eq!(before.len(), after.len());
    for ((t0, d0, c0), (t1, d1, c1)) in before.iter().zip(&after) {
        assert_eq!((t0, d0), (t1, d1), "packet changed");
        // The run's comment (with the kernel's word) is teardown's: replaced, not doubled.
        assert_eq!((c0.len(), c1.len()), (1, 1), "{c0:?} {c1:?}");
    }
    assert!(
        after[7].2[0].starts_with("server ESTABLISHED → FIN_WAIT_1 (sent FIN"),
        "{:?}",
        after[7].2
    );
}

#[test]
fn every_input_shape_gets_the_same_comments() {
    let dir = TempDir::new();
    let expected = reference(&dir);
    assert!(
        expected[0].starts_with("client CLOSED → SYN_SENT"),
        "{expected:?}"
    );
    let frames = ethernet_frames();
    let strip = |f: &[u8]| f[14..].to_vec();
    let shapes: Vec<(&str, DataLink, Frames)> = vec![
        ("ns", DataLink::ETHERNET, frames.clone()),
        (
            "sll",
            DataLink::LINUX_SLL,
            frames
                .iter()
                .map(|(t, f)| {
                    let mut h = vec![0, 0, 3, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0];
                    h.extend(strip(f));
                    (*t, h)
                })
                .collect(),
        ),
        (
            "sll2",
            DataLink::LINUX_SLL2,
            frames
                .iter()
                .map(|(t, f)| {
                    let mut h = vec![8, 0, 0, 0, 0, 0, 0, 1, 3, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
                    h.extend(strip(f));
                    (*t, h)
                })
                .collect(),
        ),
        (
            "raw",
            DataLink::RAW,
            frames.iter().map(|(t, f)| (*t, strip(f))).collect(),
        ),
        (
            "null",
            DataLink::NULL,
            frames
                .iter()
                .map(|(t, f)| {
                    let mut h = 2u32.to_le_bytes().to_vec();
                    h.extend(strip(f));
                    (*t, h)
                })
                .collect(),
        ),
        (
            "vlan",
            DataLink::ETHERNET,
            frames
                .iter()
                .map(|(t, f)| {
                    let mut v = f[..12].to_vec();
                    v.extend([0x81, 0x00, 0x00, 0x64]);
                    v.extend(&f[12..]);
                    (*t, v)
                })
                .collect(),
        ),
        (
            "ipv6",
            DataLink::ETHERNET,
            frames.iter().map(|(t, f)| (*t, to_ipv6(f))).collect(),
        ),
    ];
    for (name, link, shaped) in shapes {
        let path = dir.join(&format!("{name}.pcap"));
        write_pcap(&path, link, name == "ns", &shaped, 65535);
        // Comments name states and numbers, never addresses: IPv6 reads the same.
        assert_eq!(annotate_comments(&dir, &path), expected, "{name}");
    }
}

/// The same TCP segment over IPv6 (::2 → ::1 for 127.0.0.2 → 127.0.0.1).
fn to_ipv6(frame: &[u8]) -> Vec<u8> {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    let tcp = &frame[14 + ihl..14 + total];
    let v6 = |last: u8| {
        let mut a = [0u8; 16];
        a[15] = last;
        a
    };
    let (src, dst) = (v6(frame[14 + 15]), v6(frame[14 + 19]));
    let mut out = frame[..12].to_vec();
    out.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    out.extend((tcp.len() as u16).to_be_bytes());
    out.extend([6, 64]);
    out.extend(src);
    out.extend(dst);
    out.extend(tcp);
    out
}

#[test]
fn a_snaplen_cut_is_named_and_stdin_works() {
    let dir = TempDir::new();
    let path = dir.join("cut.pcap");
    // 66 bytes of headers (Ethernet, IPv4, TCP with timestamps): 4 payload bytes kept.
    write_pcap(&path, DataLink::ETHERNET, false, &ethernet_frames(), 70);
    let out = dir.join("cut.out.pcapng");
    let mut child = Command::new(BIN)
        .args(["annotate", "-", "-o", out.to_str().unwrap()])
        .stdin(std::fs::File::open(&path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let comments: Vec<String> = packets_of(&out)
        .into_iter()
        .map(|p| p.2.join(" | "))
        .collect();
    assert!(
        comments[3].ends_with("cut by the capture's snaplen: 4 of 11 payload bytes captured"),
        "{comments:?}"
    );
}

#[test]
fn summary_names_who_closed_first_and_how() {
    let run = teardown(&[
        "summary",
        capture("active-close.pcapng").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let r = &rows[0];
    assert_eq!(
        (r["closed_first"].as_str(), r["how"].as_str()),
        (Some("server"), Some("FIN")),
        "{run}"
    );
    assert_eq!(
        (r["client_state"].as_str(), r["server_state"].as_str()),
        (Some("CLOSED"), Some("TIME_WAIT"))
    );
    assert_eq!(r["segments"], 11);
    let run = teardown(&[
        "summary",
        capture("client-never-closes.pcapng").to_str().unwrap(),
    ]);
    assert!(run.stdout.starts_with("#0   client 127.0.0.2:"), "{run}");
    assert!(
        run.stdout
            .contains("server closed first (FIN)  final: client CLOSE_WAIT, server FIN_WAIT_2"),
        "{run}"
    );
}

#[test]
fn diagram_draws_the_ladder_and_the_svg() {
    let dir = TempDir::new();
    let svg = dir.join("d.svg");
    let input = capture("active-close.pcapng");
    let run = teardown(&[
        "diagram",
        input.to_str().unwrap(),
        "--port",
        "8000",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("ESTABLISHED → FIN_WAIT_1"), "{run}");
    assert!(run.stdout.contains("FIN_WAIT_2 → TIME_WAIT"), "{run}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.starts_with("<svg") && picture.contains("FIN_WAIT_2"),
        "{picture}"
    );
    let run = teardown(&["diagram", input.to_str().unwrap(), "--conn", "7"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("no connection #7: it has 1"), "{run}");
}

#[test]
fn diagram_fits_the_terminal_width_and_colours_only_when_asked() {
    let input = capture("active-close.pcapng");
    let with = |columns: &str, color: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--color", color, "diagram", input.to_str().unwrap()])
            .env("COLUMNS", columns);
        run_cmd(cmd)
    };
    let run = with("80", "auto");
    assert_eq!(run.code, Some(0), "{run}");
    let widest = run.stdout.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(widest <= 80, "{widest} columns{run}");
    for t in [
        "ESTABLISHED → FIN_WAIT_1",
        "FIN_WAIT_2 → TIME_WAIT",
        "LAST_ACK → CLOSED",
    ] {
        assert!(run.stdout.contains(t), "{t}{run}");
    }
    assert!(!run.stdout.contains('\x1b'), "colour in a pipe{run}");
    let wide = with("200", "always");
    assert!(
        wide.stdout.lines().any(|l| l.chars().count() > 100),
        "{wide}"
    );
}

#[test]
fn bad_input_gets_one_line_with_the_offset_and_exit_2() {
    let dir = TempDir::new();
    let good = std::fs::read(capture("active-close.pcapng")).unwrap();
    let mut four_gib = good.clone();
    let first = u32::from_le_bytes(good[4..8].try_into().unwrap()) as usize;
    four_gib[first + 4..first + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let udp_only = {
        let mut f = ethernet_frames()[0].1.clone();
        f[14 + 9] = 17;
        vec![(Duration::from_secs(1), f)]
    };
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("empty", vec![], "byte 0: empty".into()),
        (
            "random",
            (0..4000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            "byte 0: not a pcap or pcapng file".into(),
        ),
        // A cut before any packet: nothing to annotate (a cut later keeps what came before).
        (
            "cut-in-the-first-block",
            good[..first + 9].to_vec(),
            format!(
                "byte {first}: the file ends in the middle of this block, at byte {}",
                first + 9
            ),
        ),
        ("four-gib", four_gib, format!("byte {first}: ")),
    ];
    for (name, bytes, says) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = dir.join("never.pcapng");
        let run = teardown(&[
            "annotate",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(2), "{name}{run}");
        assert_eq!(run.stderr.lines().count(), 1, "{name}{run}");
        assert!(
            run.stderr.contains(&format!("{}: ", path.display())),
            "{name}{run}"
        );
        assert!(run.stderr.contains(&says), "{name}: {says}{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
        assert!(!out.exists(), "no half-written output");
    }
    let udp = dir.join("udp.pcap");
    write_pcap(&udp, DataLink::ETHERNET, false, &udp_only, 65535);
    let run = teardown(&[
        "annotate",
        udp.to_str().unwrap(),
        "-o",
        dir.join("x").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr
            .contains("no TCP segment among its 1 packet: nothing to annotate"),
        "{run}"
    );
    let odd = dir.join("usb.pcap");
    write_pcap(&odd, DataLink::from(189u32), false, &udp_only, 65535);
    let run = teardown(&[
        "annotate",
        odd.to_str().unwrap(),
        "-o",
        dir.join("y").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr
            .contains("byte 20: link type 189 is not one teardown decodes"),
        "{run}"
    );
}

#[test]
fn interleaved_connections_are_told_apart() {
    let dir = TempDir::new();
    let frames = ethernet_frames();
    // A second copy of the conversation from another client port, alternating with the first.
    let client_port = u16::from_be_bytes([frames[0].1[34], frames[0].1[35]]);
    let other = |f: &[u8]| {
        let mut g = f.to_vec();
        for at in [34, 36] {
            if u16::from_be_bytes([g[at], g[at + 1]]) == client_port {
                g[at..at + 2].copy_from_slice(&(client_port ^ 0x0101).to_be_bytes());
            }
        }
        g
    };
    let mut mixed = Vec::new();
    for (t, f) in &frames {
        mixed.push((*t, f.clone()));
        mixed.push((*t + Duration::from_micros(1), other(f)));
    }
    let path = dir.join("two.pcap");
    write_pcap(&path, DataLink::ETHERNET, false, &mixed, 65535);
    let run = teardown(&["summary", path.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, Some(0), "{run}");
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{run}");
    for r in rows.as_array().unwrap() {
        assert_eq!(r["segments"], 11, "{run}");
        assert_eq!(
            (r["client_state"].as_str(), r["server_state"].as_str()),
            (Some("CLOSED"), Some("TIME_WAIT")),
            "{run}"
        );
    }
    // And the comments of each are those of the conversation alone.
    let expected = reference(&dir);
    let got = annotate_comments(&dir, &path);
    let first: Vec<String> = got.iter().step_by(2).cloned().collect();
    let second: Vec<String> = got.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(first, expected);
    assert_eq!(second, expected);
}

/// `teardown ARGS` run in `dir`, where a file named `-` would appear.
fn teardown_in(dir: &TempDir, args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(&dir.0);
    run_cmd(cmd)
}

/// The files of `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// (offset, length, type) of each block of a little-endian pcapng, as far as they are whole.
fn pcapng_blocks(bytes: &[u8]) -> Vec<(usize, usize, u32)> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 8) {
        let type_ = u32::from_le_bytes(head[..4].try_into().unwrap());
        let len = u32::from_le_bytes(head[4..].try_into().unwrap()) as usize;
        if len < 12 || at + len > bytes.len() {
            break;
        }
        found.push((at, len, type_));
        at += len;
    }
    found
}

/// Two copies of the conversation, from two client ports, interleaved.
fn two_connections(dir: &TempDir) -> PathBuf {
    let frames = ethernet_frames();
    let client_port = u16::from_be_bytes([frames[0].1[34], frames[0].1[35]]);
    let mut mixed = Vec::new();
    for (t, f) in &frames {
        mixed.push((*t, f.clone()));
        let mut g = f.clone();
        for at in [34, 36] {
            if u16::from_be_bytes([g[at], g[at + 1]]) == client_port {
                g[at..at + 2].copy_from_slice(&(client_port ^ 0x0101).to_be_bytes());
            }
        }
        mixed.push((*t + Duration::from_micros(1), g));
    }
    let path = dir.join("two.pcap");
    write_pcap(&path, DataLink::ETHERNET, false, &mixed, 65535);
    path
}

#[test]
fn svg_dash_is_standard_output_and_a_stream_takes_one_picture() {
    let dir = TempDir::new();
    let input = capture("active-close.pcapng");
    let run = teardown_in(&dir, &["diagram", input.to_str().unwrap(), "--svg", "-"]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("<svg"), "{run}");
    assert!(run.stdout.trim_end().ends_with("</svg>"), "{run}");
    assert!(run.stdout.contains("FIN_WAIT_2"), "{run}");
    // The ladder moved to standard error; no file named `-`.
    assert!(run.stderr.contains("FIN_WAIT_2 → TIME_WAIT"), "{run}");
    assert!(listing(&dir.0).is_empty(), "{:?}", listing(&dir.0));

    // Two connections: standard output takes one SVG document; files take one each.
    let two = two_connections(&dir);
    let run = teardown_in(&dir, &["diagram", two.to_str().unwrap(), "--svg", "-"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(run.stdout, "", "{run}");
    assert!(
        run.stderr.contains(
            "--svg -: 2 connections to draw, and standard output takes one picture: choose one \
             with --conn N or --port P"
        ),
        "{run}"
    );
    let run = teardown_in(
        &dir,
        &[
            "diagram",
            two.to_str().unwrap(),
            "--conn",
            "1",
            "--svg",
            "-",
        ],
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("<svg"), "{run}");
    let run = teardown_in(&dir, &["diagram", two.to_str().unwrap(), "--svg", "d.svg"]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("(drawn into d-1.svg)"), "{run}");
    assert_eq!(listing(&dir.0), ["d-0.svg", "d-1.svg", "two.pcap"]);
}

#[test]
fn output_paths_are_refused_before_the_input_is_read() {
    let dir = TempDir::new();
    let input = capture("active-close.pcapng");
    let input = input.to_str().unwrap();
    let missing = dir.join("no/such");
    let (pcapng, svg) = (
        missing.join("x.pcapng").display().to_string(),
        missing.join("x.svg").display().to_string(),
    );
    let absent = format!(
        "the directory {} does not exist; create it first (mkdir -p {})",
        missing.display(),
        missing.display()
    );
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["annotate", input, "-o", "/proc/x.pcapng"],
            "teardown: -o /proc/x.pcapng: cannot write there (".into(),
        ),
        (
            vec!["annotate", input, "-o", &pcapng],
            format!("teardown: -o {pcapng}: {absent}"),
        ),
        // The output is checked first: a missing input is not even opened.
        (
            vec!["annotate", "/nonexistent/in.pcap", "-o", "/proc/x.pcapng"],
            "teardown: -o /proc/x.pcapng: cannot write there (".into(),
        ),
        (
            vec!["diagram", input, "--svg", "/proc/x.svg"],
            "teardown: --svg /proc/x.svg: cannot write there (".into(),
        ),
        (
            vec!["diagram", input, "--svg", &svg],
            format!("teardown: --svg {svg}: {absent}"),
        ),
    ];
    for (args, says) in cases {
        let run = teardown(&args);
        assert_eq!(run.code, Some(2), "{run}");
        assert!(run.stderr.starts_with(&says), "{says}{run}");
        assert_eq!(run.stderr.lines().count(), 1, "{run}");
        assert!(!run.stderr.contains(".part"), "{run}");
        // Nothing read, nothing drawn.
        assert_eq!(run.stdout, "", "{run}");
    }
    assert!(!Path::new("/proc/x.pcapng").exists() && !Path::new("/proc/x.svg").exists());
    assert!(!dir.join("no").exists(), "a directory was created");
}

/// The number of packets tshark reads in `file`, and how many carry a comment.
fn tshark_count(file: &Path) -> (usize, usize) {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-e", "frame.number", "-e", "frame.comment"]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let commented = lines
        .iter()
        .filter(|l| l.split_once('\t').is_some_and(|(_, c)| !c.is_empty()))
        .count();
    (lines.len(), commented)
}

#[test]
fn a_capture_cut_short_gives_its_complete_packets_a_warning_and_exit_1() {
    if !tshark("cut_short") {
        return;
    }
    let dir = TempDir::new();
    let good = std::fs::read(capture("tw-reuse.pcapng")).unwrap();
    let epbs: Vec<(usize, usize)> = pcapng_blocks(&good)
        .into_iter()
        .filter(|b| b.2 == 6)
        .map(|(at, len, _)| (at, len))
        .collect();
    assert!(epbs.len() > 20, "{}", epbs.len());
    let mut cuts = Vec::new();
    for n in [0, 1, 7, epbs.len() / 2, epbs.len() - 1] {
        let (at, len) = epbs[n];
        for cut in [at + 1, at + 8, at + 27, at + len / 2, at + len - 1] {
            cuts.push((n, at, cut));
        }
    }
    for (n, at, cut) in cuts {
        let path = dir.join("cut.pcapng");
        std::fs::write(&path, &good[..cut]).unwrap();
        let out = dir.join("cut.out.pcapng");
        let run = teardown(&[
            "annotate",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        if n == 0 {
            // Nothing complete before the cut: nothing to annotate, as for garbage.
            assert_eq!(run.code, Some(2), "{run}");
            assert!(
                run.stderr.contains(&format!(
                    "byte {at}: the file ends in the middle of this block, at byte {cut}"
                )),
                "{run}"
            );
            assert!(!out.exists());
            continue;
        }
        assert_eq!(run.code, Some(1), "cut at {cut}{run}");
        let packets = if n == 1 { "packet" } else { "packets" };
        assert!(
            run.stderr.contains(&format!(
                "teardown: {}: cut short at byte {cut} (in the middle of the block at byte \
                 {at}): annotated the {n} complete {packets} before it",
                path.display()
            )),
            "cut at {cut}{run}"
        );
        assert_eq!(tshark_count(&out), (n, n), "cut at {cut}{run}");
    }

    // pcap: cut in a record's header and in its data.
    let frames = ethernet_frames();
    let pcap = dir.join("whole.pcap");
    write_pcap(&pcap, DataLink::ETHERNET, false, &frames, 65535);
    let whole = std::fs::read(&pcap).unwrap();
    let record = |n: usize| 24 + frames[..n].iter().map(|f| 16 + f.1.len()).sum::<usize>();
    for cut in [record(5) + 3, record(5) + 16 + 20] {
        let path = dir.join("cut.pcap");
        std::fs::write(&path, &whole[..cut]).unwrap();
        let out = dir.join("cut.pcap.out.pcapng");
        let run = teardown(&[
            "annotate",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--comments",
            "all",
        ]);
        assert_eq!(run.code, Some(1), "{run}");
        assert!(
            run.stderr.contains(&format!(
                "cut short at byte {cut} (in the middle of the packet record at byte {}): \
                 annotated the 5 complete packets before it",
                record(5)
            )),
            "{run}"
        );
        assert_eq!(tshark_count(&out), (5, 5), "{run}");
        // summary and diagram: the complete part, the same warning, exit 1.
        let run = teardown(&["summary", path.to_str().unwrap()]);
        assert_eq!(run.code, Some(1), "{run}");
        assert!(run.stdout.starts_with("#0   client"), "{run}");
        assert!(run.stdout.contains("  5 segments"), "{run}");
        assert!(
            run.stderr
                .contains("summarised the 5 complete packets before it"),
            "{run}"
        );
        let run = teardown(&["diagram", path.to_str().unwrap()]);
        assert_eq!(run.code, Some(1), "{run}");
        assert!(run.stdout.contains("connection #0"), "{run}");
        assert!(
            run.stderr.contains("drew the 5 complete packets before it"),
            "{run}"
        );
    }
}

#[test]
fn a_pipe_gets_each_packet_as_it_comes() {
    use std::io::{Read, Write};
    let frames = ethernet_frames();
    let pcap_path = TempDir::new();
    let file = pcap_path.join("p.pcap");
    write_pcap(&file, DataLink::ETHERNET, false, &frames, 65535);
    let bytes = std::fs::read(&file).unwrap();
    // The SYN and its SYN,ACK: the annotator holds a SYN until its answer says whether
    // anything listened, then both go at once.
    let first = 24 + 16 + frames[0].1.len() + 16 + frames[1].1.len();
    let mut child = Command::new(BIN)
        .args(["annotate", "-", "-o", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes[..first]).unwrap();
    stdin.flush().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // The pipe stays open: the first packet must come out before the input ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let types = loop {
        let types: Vec<u32> = pcapng_blocks(&got).iter().map(|b| b.2).collect();
        if types.iter().filter(|&&t| t == 6).count() == 2 {
            break types;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => got.extend(chunk),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no packet out after 10 s with the pipe open ({} bytes: {types:?})",
                    got.len()
                );
            }
        }
    };
    assert_eq!(types, [0x0a0d_0d0a, 1, 6, 6], "SHB, IDB, EPB, EPB");
    stdin.write_all(&bytes[first..]).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(10)) {
        got.extend(chunk);
    }
    let epbs = pcapng_blocks(&got).iter().filter(|b| b.2 == 6).count();
    assert_eq!(epbs, frames.len());
}

/// Each packet's comments as tshark shows them (`|` between two).
fn tshark_comments(file: &Path) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "aggregator=|", "-e", "frame.comment"]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    run.stdout
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

#[test]
fn annotating_again_replaces_teardowns_comment_and_keeps_the_others() {
    if !tshark("annotate_again") {
        return;
    }
    let dir = TempDir::new();
    let expected = reference(&dir);
    // A capture of `teardown run`, with a person's comment on packet 3 (editcap, of
    // Wireshark, adds it after teardown's).
    let foreign = dir.join("foreign.pcapng");
    let mut cmd = Command::new("editcap");
    cmd.args(["-a", "3:a note of mine"])
        .arg(capture("active-close.pcapng"))
        .arg(&foreign);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let before = tshark_comments(&foreign);
    assert_eq!(before[2].len(), 2, "{before:?}");
    let once = dir.join("once.pcapng");
    let twice = dir.join("twice.pcapng");
    for (from, to) in [(&foreign, &once), (&once, &twice)] {
        let run = teardown(&[
            "annotate",
            from.to_str().unwrap(),
            "-o",
            to.to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(0), "{run}");
        let comments = tshark_comments(to);
        assert_eq!(comments.len(), expected.len());
        for (i, (got, new)) in comments.iter().zip(&expected).enumerate() {
            // A segment that changes nothing loses the run's comment and gets none (tshark
            // shows an empty field).
            let want: Vec<&str> = if i == 2 {
                vec!["a note of mine", new]
            } else {
                vec![new]
            };
            assert_eq!(got, &want, "packet {}", i + 1);
        }
    }

    // Every committed kind of comment (kernel notes, notes, retransmissions, RSTs) is
    // recognised: each fixture's packets keep one comment, the new one.
    let mut files: Vec<PathBuf> = std::fs::read_dir(capture(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcapng"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 16);
    for file in files {
        let out = dir.join("again.pcapng");
        let run = teardown(&[
            "annotate",
            file.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--comments",
            "all",
        ]);
        assert_eq!(run.code, Some(0), "{run}");
        for (i, (_, _, c)) in packets_of(&out).iter().enumerate() {
            assert_eq!(c.len(), 1, "{} packet {}: {c:?}", file.display(), i + 1);
        }
    }

    // The section comment: a pcap gets one, and annotating again does not add another.
    let pcap = dir.join("eth.pcap");
    let (a, b) = (dir.join("a.pcapng"), dir.join("b.pcapng"));
    for (from, to) in [(&pcap, &a), (&a, &b)] {
        let run = teardown(&[
            "annotate",
            from.to_str().unwrap(),
            "-o",
            to.to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(0), "{run}");
    }
    let section_comments = section_comments(&b);
    assert_eq!(section_comments.len(), 1, "{section_comments:?}");
    assert!(
        section_comments[0].contains("annotated by teardown"),
        "{section_comments:?}"
    );
}

#[test]
fn annotating_a_pcap_in_place_makes_it_pcapng_and_says_so() {
    let dir = TempDir::new();
    let expected = reference(&dir);
    let path = dir.join("x.pcap");
    write_pcap(&path, DataLink::ETHERNET, false, &ethernet_frames(), 65535);
    let shown = path.to_str().unwrap();
    let run = teardown(&["annotate", shown, "-o", shown]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "note: {shown} is now pcapng (it was pcap); rename it {}",
            dir.join("x.pcapng").display()
        )),
        "{run}"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "pcapng now");
    let comments: Vec<String> = packets_of(&path)
        .into_iter()
        .map(|(_, _, c)| c.join(" | "))
        .collect();
    assert_eq!(comments, expected);
    // In place again: already pcapng (the name still says otherwise), the same comments; no
    // temporary file left.
    let run = teardown(&["annotate", shown, "-o", shown]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(!run.stderr.contains("is now pcapng"), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "note: {shown} holds pcapng (annotate writes pcapng)"
        )),
        "{run}"
    );
    let again: Vec<String> = packets_of(&path)
        .into_iter()
        .map(|(_, _, c)| c.join(" | "))
        .collect();
    assert_eq!(again, expected);
    assert_eq!(
        listing(&dir.0),
        ["eth.pcap", "eth.pcap.out.pcapng", "x.pcap"]
    );
}

/// Runs teardown with `args`, its standard output closed before a byte is read, as `| head
/// -c 0` would.
fn with_stdout_closed(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// Runs teardown with `args`, its standard output a full disk.
fn with_stdout_full(args: &[&str]) -> std::process::Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    Command::new(BIN).args(args).stdout(full).output().unwrap()
}

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    let input = capture("tw-reuse.pcapng");
    let out = with_stdout_closed(&["annotate", input.to_str().unwrap(), "-o", "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
}

/// A summary or a diagram that cannot be written (a full disk) says so and fails; one whose
/// reader went away (`| head`) does not.
#[test]
fn an_output_that_cannot_be_written_is_an_error() {
    let input = capture("tw-reuse.pcapng");
    let input = input.to_str().unwrap();
    for (args, what) in [
        (vec!["summary", input], "summary"),
        (vec!["summary", "--json", input], "summary"),
        (vec!["diagram", input], "diagram"),
    ] {
        let out = with_stdout_full(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim(),
            format!("teardown: writing the {what}: No space left on device (os error 28)"),
            "{args:?}"
        );
        let out = with_stdout_closed(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// The default on a real capture (a SYN sent again, then a request, a reply and the close),
/// read back by tshark: no comment on the data segments and their ACKs, which change nothing;
/// one on every transition and on the retransmitted SYN; the section comment names the flag.
/// `--comments all` gives today's text on every one.
#[test]
fn by_default_segments_that_change_nothing_carry_no_comment() {
    if !tshark("comments_default") {
        return;
    }
    let dir = TempDir::new();
    let input = capture("real/syn-retransmit.pcap");
    let (changes, all) = (dir.join("changes.pcapng"), dir.join("all.pcapng"));
    for (out, extra) in [(&changes, None), (&all, Some("all"))] {
        let mut args = vec![
            "annotate",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        if let Some(which) = extra {
            args.extend(["--comments", which]);
        }
        let run = teardown(&args);
        assert_eq!(run.code, Some(0), "{run}");
    }
    let by_default = tshark_comments(&changes);
    let every = tshark_comments(&all);
    assert_eq!((by_default.len(), every.len()), (11, 11));
    // Packets 5 to 8: the request, its ACK, the reply, its ACK.
    for i in 4..8 {
        assert_eq!(by_default[i], [""], "packet {}: {by_default:?}", i + 1);
        assert_eq!(
            every[i],
            ["no state change: client ESTABLISHED, server ESTABLISHED"],
            "packet {}",
            i + 1
        );
    }
    assert!(
        by_default[1][0].contains("retransmission of the previous segment after 1033 ms"),
        "{by_default:?}"
    );
    for i in (0..4).chain(8..11) {
        assert!(
            by_default[i][0].contains(" → "),
            "packet {}: {by_default:?}",
            i + 1
        );
        assert_eq!(by_default[i], every[i], "packet {}", i + 1);
    }
    let section = section_comments(&changes);
    assert!(
        section[0].contains("segments that change nothing carry no comment (--comments all"),
        "{section:?}"
    );
    assert!(
        section_comments(&all)[0].contains("every TCP segment is commented"),
        "{:?}",
        section_comments(&all)
    );
}

/// `annotate -o FILE` killed with SIGKILL half-way leaves nothing in FILE's directory: no
/// FILE, no temporary file (it has no name until the end). The input is a FIFO fed half a
/// capture and held open, so the kill lands while the output is being written.
#[test]
fn annotate_killed_by_sigkill_leaves_nothing_behind() {
    use std::io::Write as _;
    let dir = TempDir::new();
    let fifo = dir.join("in.pcap");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("x.pcapng");
    let mut child = Command::new(BIN)
        .args([
            "annotate",
            fifo.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(capture("real/normal-nginx.pcap")).unwrap();
    let mut feed = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    feed.write_all(&bytes[..bytes.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "annotate ended early");
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    drop(feed);
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The file's way (read, tracked and settled on threads of their own) and the pipe's (each
/// packet read, tracked and held in line, as it comes) write the same bytes for every
/// fixture and real capture, whole, cut short, and ending in a record that does not parse:
/// one annotator's story, whichever thread held it back.
#[test]
fn a_file_and_a_pipe_get_the_same_annotated_bytes() {
    use std::io::Write;
    let mut inputs: Vec<PathBuf> = Vec::new();
    for dir in ["tests/data", "tests/data/real"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext == "pcap" || ext == "pcapng" {
                inputs.push(path);
            }
        }
    }
    inputs.sort();
    assert!(inputs.len() >= 20, "{}", inputs.len());
    let dir = TempDir::new();
    // (input, whether it is whole)
    let mut cases: Vec<(PathBuf, bool)> = inputs.iter().map(|p| (p.clone(), true)).collect();
    for (i, input) in inputs.iter().enumerate() {
        let bytes = std::fs::read(input).unwrap();
        let cut = dir.join(&format!("cut{i}.pcap"));
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        cases.push((cut, false));
    }
    // A pcap whose second record says it captured more than was on the wire: an error for
    // the whole command, after the packet before it is written, a SYN held for its answer.
    let nginx = std::fs::read(capture("real/normal-nginx.pcap")).unwrap();
    let first = 24 + 16 + u32::from_le_bytes(nginx[32..36].try_into().unwrap()) as usize;
    let mut failed = nginx[..first].to_vec();
    failed.extend_from_slice(&[0; 8]);
    failed.extend_from_slice(&60u32.to_le_bytes());
    failed.extend_from_slice(&10u32.to_le_bytes());
    failed.extend_from_slice(&[0; 60]);
    let failed_path = dir.join("failed.pcap");
    std::fs::write(&failed_path, &failed).unwrap();
    cases.push((failed_path, false));
    for (input, whole) in &cases {
        for mode in ["changes", "all"] {
            let file = Command::new(BIN)
                .args([
                    "annotate",
                    input.to_str().unwrap(),
                    "--comments",
                    mode,
                    "-o",
                    "-",
                ])
                .output()
                .unwrap();
            if *whole {
                assert!(file.status.success(), "{}", input.display());
            }
            let mut child = Command::new(BIN)
                .args(["annotate", "-", "--comments", mode, "-o", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let bytes = std::fs::read(input).unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let feed = std::thread::spawn(move || stdin.write_all(&bytes));
            let pipe = child.wait_with_output().unwrap();
            let _ = feed.join().unwrap();
            assert_eq!(
                file.status.code(),
                pipe.status.code(),
                "{}",
                input.display()
            );
            // Every block but the section header, which names the input ("-" for the pipe).
            let blocks = |bytes: &[u8]| -> Vec<Vec<u8>> {
                pcapng_blocks(bytes)
                    .into_iter()
                    .filter(|&(_, _, type_)| type_ != 0x0A0D_0D0A)
                    .map(|(at, len, _)| bytes[at..at + len].to_vec())
                    .collect()
            };
            let (from_file, from_pipe) = (blocks(&file.stdout), blocks(&pipe.stdout));
            if *whole {
                assert!(from_file.len() > 2, "{}", input.display());
            }
            assert!(
                from_file == from_pipe,
                "{} --comments {mode}: the file's and the pipe's annotations differ ({} and {} \
                 blocks)",
                input.display(),
                from_file.len(),
                from_pipe.len()
            );
        }
    }
    // The failed one wrote its SYN before its error.
    let out = Command::new(BIN)
        .args([
            "annotate",
            dir.join("failed.pcap").to_str().unwrap(),
            "-o",
            "-",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let epbs = pcapng_blocks(&out.stdout)
        .iter()
        .filter(|b| b.2 == 6)
        .count();
    assert_eq!(epbs, 1, "the SYN before the record that does not parse");
}
