//! `annotate`, `summary` and `diagram` on files, without privileges: every input shape the
//! issue names carries the same conversation, and must come out with the same comments.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapTsResolution, PcapWriter};
use pcap_file::pcapng::blocks::opt_common::CommonOption;
use pcap_file::pcapng::{Block, PcapNgReader};

use crate::helper::*;

type Frames = Vec<(Duration, Vec<u8>)>;

/// A fixture of tests/data: real kernel runs copied from captures/, which `teardown run`
/// overwrites; the tests never read captures/.
fn capture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// (timestamp, Ethernet frame, comments) of every packet of a pcapng.
fn packets_of(file: &Path) -> Vec<(Duration, Vec<u8>, Vec<String>)> {
    let bytes = std::fs::read(file).unwrap();
    let mut reader = PcapNgReader::new(&bytes[..]).unwrap();
    let mut out = Vec::new();
    while let Some(block) = reader.next_block() {
        if let Block::EnhancedPacket(epb) = block.unwrap().0 {
            let comments = epb
                .options
                .iter()
                .filter_map(|o| match o {
                    pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption::Common(
                        CommonOption::Comment(c),
                    ) => Some(c.to_string()),
                    _ => None,
                })
                .collect();
            out.push((epb.timestamp, epb.data.to_vec(), comments));
        }
    }
    out
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
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stderr
            .contains("11 TCP segments of 11 packets, 1 connection(s)"),
        "{run}"
    );
    let before = packets_of(&input);
    let after = packets_of(&out);
    assert_eq!(before.len(), after.len());
    for ((t0, d0, c0), (t1, d1, c1)) in before.iter().zip(&after) {
        assert_eq!((t0, d0), (t1, d1), "packet changed");
        assert_eq!(&c1[..c0.len()], &c0[..], "existing comments kept, first");
        assert_eq!(c1.len(), c0.len() + 1, "one comment added");
    }
    assert!(
        after[7].2[1].starts_with("server ESTABLISHED → FIN_WAIT_1 (sent FIN"),
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
        (
            "truncated",
            good[..good.len() - 7].to_vec(),
            "the file ends in the middle of a block".into(),
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
        run.stderr.contains("no TCP segment among its 1 packets"),
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
