//! Runs the built `teardown`, gives each test its own directory, reads captures back with
//! tshark, and prints command, stdout and stderr when an assertion fails.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_teardown");

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// True when the test may go on as root. Without root it skips (false), unless
/// TEARDOWN_REQUIRE_ROOT=1, where it fails.
pub fn root(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        !required("TEARDOWN_REQUIRE_ROOT"),
        "{test} needs root and TEARDOWN_REQUIRE_ROOT=1 is set"
    );
    eprintln!("skipped {test}: needs root (run the tests with sudo)");
    false
}

/// True when tshark is installed; otherwise skips, or fails under TEARDOWN_REQUIRE_ROOT=1
/// (CI installs it).
pub fn tshark(test: &str) -> bool {
    if Command::new("tshark").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        !required("TEARDOWN_REQUIRE_ROOT"),
        "{test} needs tshark (apt-get install tshark)"
    );
    eprintln!("skipped {test}: tshark is not installed");
    false
}

/// A directory of the test's own, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "teardown-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A finished command, printable in assertion messages.
pub struct Run {
    pub cmd: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\n$ {}\nexit: {:?}\n--- stdout\n{}--- stderr\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    pub fn from_output(cmd: String, out: Output) -> Run {
        Run {
            cmd,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    /// stdout with runs of white space folded, for matching wrapped prose.
    pub fn flat(&self) -> String {
        self.stdout.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

pub fn run_cmd(mut cmd: Command) -> Run {
    // A developer's exported COLUMNS or NO_COLOR must not change what a test sees; a test
    // that sets one says so.
    for var in ["COLUMNS", "NO_COLOR"] {
        if !cmd.get_envs().any(|(k, _)| k == var) {
            cmd.env_remove(var);
        }
    }
    let shown = format!("{cmd:?}");
    let out = cmd.output().expect("the command runs");
    Run::from_output(shown, out)
}

pub fn teardown(args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("TEARDOWN_PAUSE_AFTER_STEP");
    run_cmd(cmd)
}

/// One captured segment as tshark decodes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub from_client: bool,
    /// The letters of tcp.flags.str that are set, in Wireshark's order: "S", "AS", "AF"...
    pub flags: String,
    pub len: u32,
    pub comment: String,
    /// Seconds since the first packet (frame.time_relative).
    pub time: f64,
}

/// Reads a capture with tshark; `server_port` tells the directions apart.
pub fn tshark_rows(file: &Path, server_port: u16) -> Vec<Row> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args([
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.flags.str",
        "-e",
        "tcp.len",
        "-e",
        "frame.comment",
        "-e",
        "frame.time_relative",
    ]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    run.stdout
        .lines()
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 5, "{line}");
            Row {
                from_client: cols[0] != server_port.to_string(),
                flags: cols[1]
                    .chars()
                    .filter(|c| c.is_ascii_alphabetic())
                    .collect(),
                len: cols[2].parse().unwrap_or(0),
                comment: cols[3].to_string(),
                time: cols[4].parse().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// `C:S S:AS C:A ...`: who sent each segment and its flags.
pub fn ladder(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|r| format!("{}:{}", if r.from_client { "C" } else { "S" }, r.flags))
        .collect()
}

/// The section header's comment, read with pcap-file.
pub fn section_comment(file: &Path) -> String {
    section_comments(file)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// Every comment of a pcapng's (first) section header.
pub fn section_comments(file: &Path) -> Vec<String> {
    use pcap_file::pcapng::PcapNgReader;
    use pcap_file::pcapng::blocks::opt_common::CommonOption;
    use pcap_file::pcapng::blocks::section_header::SectionHeaderOption;
    let bytes = std::fs::read(file).unwrap();
    let reader = PcapNgReader::new(&bytes[..]).unwrap();
    reader
        .section()
        .options
        .iter()
        .filter_map(|o| match o {
            SectionHeaderOption::Common(CommonOption::Comment(c)) => Some(c.to_string()),
            _ => None,
        })
        .collect()
}

/// A port nothing on the host uses at the moment.
pub fn free_port() -> u16 {
    // std's listener sets SO_REUSEADDR, so bind(0) may hand out a port a TIME_WAIT holds (an
    // earlier test's client end), which `run --host` rightly refuses: skip those.
    for _ in 0..100 {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // The listener is closed (a listener leaves no TIME_WAIT): what is left is others'.
        if !local_ports_in_use().contains(&port) {
            return port;
        }
    }
    panic!("no free port in 100 tries")
}

/// The local ports of every TCP socket of this namespace, from /proc/net/tcp and tcp6.
pub fn local_ports_in_use() -> Vec<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    u16::from_str_radix(l.split_whitespace().nth(1)?.rsplit(':').next()?, 16).ok()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Starts `teardown run SCENARIO` that stops after `step` (pause or panic, by `hook`), and
/// reads its narration up to that step.
pub fn held_run(scenario: &str, hook: &str, step: &str, file: &Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["run", scenario, "-w", file.to_str().unwrap()])
        .env(hook, step)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let marker = format!("{step:>3}. ");
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line.starts_with(&marker) {
            break;
        }
    }
    (child, seen)
}

/// (timestamp, frame, comments) of every packet of a pcapng.
pub fn packets_of(file: &Path) -> Vec<(Duration, Vec<u8>, Vec<String>)> {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::opt_common::CommonOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    let bytes = std::fs::read(file).unwrap();
    let mut reader = PcapNgReader::new(&bytes[..]).unwrap();
    let mut out = Vec::new();
    while let Some(block) = reader.next_block() {
        if let Block::EnhancedPacket(epb) = block.unwrap().0 {
            let comments = epb
                .options
                .iter()
                .filter_map(|o| match o {
                    EnhancedPacketOption::Common(CommonOption::Comment(c)) => Some(c.to_string()),
                    _ => None,
                })
                .collect();
            out.push((epb.timestamp, epb.data.to_vec(), comments));
        }
    }
    out
}

/// Every packet's comments of a pcapng, joined by " | " (one string per packet).
pub fn packet_comments(file: &Path) -> Vec<String> {
    packets_of(file)
        .into_iter()
        .map(|(_, _, comments)| comments.join(" | "))
        .collect()
}

/// The transitions a comment names, in order: `(role, from, to)`.
pub fn transitions_in(comment: &str) -> Vec<(String, String, String)> {
    let words: Vec<&str> = comment.split_whitespace().collect();
    words
        .windows(4)
        .filter(|w| (w[0] == "client" || w[0] == "server") && w[2] == "→")
        .map(|w| {
            let to = w[3].trim_end_matches([',', ';', ')']);
            (w[0].to_string(), w[1].to_string(), to.to_string())
        })
        .filter(|(_, from, to)| {
            [from, to].iter().all(|s| {
                s.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            })
        })
        .collect()
}

/// `setpriv` to the unprivileged user nobody (uid 65534), no capabilities, running teardown;
/// the caller adds teardown's arguments.
pub fn as_nobody_cmd() -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
    cmd
}

/// A directory of the test's own that nobody may write into too.
pub fn world_writable_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// The tracefs instances that exist now, seen from a private mount namespace so the host's
/// mounts are not touched (tracefs may not be mounted on the host).
pub fn tracefs_instances() -> Vec<String> {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount --make-rprivate / && (mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; \
         ls /sys/kernel/tracing/instances)",
    ]);
    let run = run_cmd(cmd);
    assert_eq!(run.code, Some(0), "{run}");
    run.stdout.lines().map(str::to_string).collect()
}
