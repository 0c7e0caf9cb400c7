//! `scripts/netns-lab.sh`, run for real: two namespaces joined by a veth pair, the article's
//! experiment across them, and nothing left behind afterwards, Ctrl-C included. Root only.
//!
//! Each run's namespaces and veths carry the script's PID, so runs in parallel never meet,
//! and port 8000 is private to each run's namespaces.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::helper::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-lab.sh");

fn ip() -> Command {
    let path = Path::new("/usr/sbin/ip");
    Command::new(if path.exists() { path } else { Path::new("ip") })
}

/// A run of the script under way.
struct Lab {
    child: Child,
    cmd: String,
    dir: TempDir,
}

impl Lab {
    fn start(args: &[&str]) -> Lab {
        let dir = TempDir::new();
        let mut cmd = Command::new(SCRIPT);
        cmd.args(args)
            .env("TEARDOWN_BIN", BIN)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout")).unwrap())
            .stderr(File::create(dir.join("stderr")).unwrap());
        // bash cannot trap a signal that was ignored when it started (as in a test runner
        // started in the background by a shell): give the script the default dispositions.
        unsafe {
            cmd.pre_exec(|| {
                for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                    libc::signal(signal, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        let shown = format!("{cmd:?}");
        let child = cmd.spawn().expect("the script starts");
        Lab {
            child,
            cmd: shown,
            dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The script's namespaces, then its veths.
    fn names(&self) -> [String; 4] {
        let pid = self.pid();
        [
            format!("td-client-{pid}"),
            format!("td-server-{pid}"),
            format!("td-c-{pid}"),
            format!("td-s-{pid}"),
        ]
    }

    /// Waits (at most 10 s) until both namespaces exist. False when the script ended first.
    fn wait_for_namespaces(&mut self) -> bool {
        let [client, server, ..] = self.names();
        let files = [client, server].map(|n| Path::new("/run/netns").join(n));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            // `ip netns add` creates the file, then mounts the namespace on it: only then is
            // it on a device of its own (nsfs).
            let run_netns = std::fs::metadata("/run/netns").map(|m| m.dev()).ok();
            let mounted = files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .filter(|m| Some(m.dev()) != run_netns)
                .count();
            if mounted == 2 {
                return true;
            }
            sleep(Duration::from_millis(1));
        }
        false
    }

    /// Waits (at most 10 s) until the script has printed `text`. False when it ended first.
    fn wait_for_output(&mut self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if std::fs::read_to_string(self.dir.join("stdout")).is_ok_and(|s| s.contains(text)) {
                return true;
            }
            sleep(Duration::from_millis(1));
        }
        false
    }

    fn interrupt(&self) {
        let pid = self.pid() as libc::pid_t;
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGINT) },
            0,
            "kill -INT {pid}"
        );
    }

    /// Waits for the end (at most 60 s, then kills it and fails), and checks that nothing
    /// is left behind.
    fn finish(mut self) -> Run {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} still ran after 60 s{}", self.cmd, self.output(None));
            }
            sleep(Duration::from_millis(10));
        };
        let run = self.output(status.code());
        self.assert_nothing_left(&run);
        run
    }

    fn output(&self, code: Option<i32>) -> Run {
        let read = |name| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        Run {
            cmd: self.cmd.clone(),
            code,
            stdout: read("stdout"),
            stderr: read("stderr"),
        }
    }

    /// No namespace in `ip netns list`, no veth on the host, and no veth in any namespace a
    /// process is in: a process left inside would keep the namespace alive, unnamed.
    fn assert_nothing_left(&self, run: &Run) {
        let names = self.names();
        let listed = run_cmd({
            let mut c = ip();
            c.args(["netns", "list"]);
            c
        });
        for ns in &names[..2] {
            assert!(
                !listed
                    .stdout
                    .lines()
                    .any(|l| l.split(' ').next() == Some(ns)),
                "namespace {ns} left behind{listed}{run}"
            );
        }
        let links = run_cmd({
            let mut c = ip();
            c.args(["-o", "link", "show"]);
            c
        });
        for veth in &names[2..] {
            assert!(
                !links.stdout.contains(&format!(" {veth}@"))
                    && !links.stdout.contains(&format!(" {veth}:")),
                "veth {veth} left behind{links}{run}"
            );
        }
        // A process left inside a namespace keeps it, and its veth, alive after `ip netns
        // del`. Each network namespace that some process is in, looked at once.
        let mut seen = HashSet::new();
        for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
            if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
                continue;
            }
            let Ok(ns) = std::fs::read_link(entry.path().join("ns/net")) else {
                continue;
            };
            if !seen.insert(ns.clone()) {
                continue;
            }
            let dev = std::fs::read_to_string(entry.path().join("net/dev")).unwrap_or_default();
            let alive = |veth: &String| {
                dev.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{veth}:")))
            };
            if let Some(veth) = names[2..].iter().find(|v| alive(v)) {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                panic!(
                    "veth {veth} still alive in {ns:?}, which process {} ({}) is in{run}",
                    entry.file_name().to_string_lossy(),
                    String::from_utf8_lossy(&cmdline)
                        .replace('\0', " ")
                        .trim_end()
                );
            }
        }
    }
}

/// Runs the script to its end.
fn lab(args: &[&str]) -> Run {
    Lab::start(args).finish()
}

/// The lines a program printed, as the script labels them (`    NAME| ...`), unlabelled.
fn labelled(run: &Run, name: &str) -> Vec<String> {
    let prefix = format!("    {name}| ");
    run.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

fn verdict(run: &Run) -> &str {
    run.stdout
        .lines()
        .find(|l| l.starts_with("verdict: "))
        .unwrap_or_else(|| panic!("no verdict{run}"))
}

/// The echoed commands build the lab with plain iproute2, and the clean-up deletes it.
fn assert_built_and_removed(run: &Run, pid: u32) {
    for line in [
        format!("+ ip netns add td-client-{pid}"),
        format!("+ ip netns add td-server-{pid}"),
        format!(
            "+ ip link add td-c-{pid} netns td-client-{pid} type veth peer name td-s-{pid} netns td-server-{pid}"
        ),
        format!("+ ip -n td-server-{pid} addr add 10.77.0.2/24 dev td-s-{pid}"),
        format!("+ ip netns del td-client-{pid}"),
        format!("+ ip netns del td-server-{pid}"),
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "missing {line:?}{run}"
        );
    }
}

#[test]
fn netns_lab_the_restart_fails_with_eaddrinuse_in_time_wait() {
    if !root("netns_lab_plain") {
        return;
    }
    let lab = Lab::start(&[]);
    let pid = lab.pid();
    let run = lab.finish();
    assert_eq!(run.code, Some(0), "{run}");
    assert_built_and_removed(&run, pid);
    assert!(
        labelled(&run, "client").contains(&"client: closed".to_string()),
        "{run}"
    );
    let table = labelled(&run, "server ns");
    assert!(
        table.iter().any(|l| l.starts_with("TIME_WAIT ")
            && l.contains("10.77.0.2:8000")
            && l.contains("10.77.0.1:")),
        "no TIME_WAIT in the server's table{run}"
    );
    let restart = labelled(&run, "restart");
    assert!(
        restart.first().is_some_and(|l| l
            .starts_with("bind: Address already in use — EADDRINUSE (errno 98) on 10.77.0.2:8000")),
        "{run}"
    );
    assert!(
        restart
            .iter()
            .any(|l| l.trim_start().starts_with("TIME_WAIT ")),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("-- the restarted server's exit status: 1"),
        "{run}"
    );
    assert!(
        verdict(&run).starts_with("verdict: shown: the restart's bind() failed with EADDRINUSE"),
        "{run}"
    );
    assert!(verdict(&run).ends_with("in TIME_WAIT"), "{run}");
}

#[test]
fn netns_lab_with_reuseaddr_the_restart_binds_and_serves() {
    if !root("netns_lab_reuseaddr") {
        return;
    }
    let run = lab(&["--reuseaddr"]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        labelled(&run, "server ns")
            .iter()
            .any(|l| l.starts_with("TIME_WAIT ")),
        "{run}"
    );
    let restart = labelled(&run, "restart");
    assert!(
        restart
            .first()
            .is_some_and(|l| l.contains("listening on 10.77.0.2:8000 with SO_REUSEADDR")),
        "{run}"
    );
    assert!(
        restart.contains(&"server: read \"I am client\"".to_string()),
        "{run}"
    );
    assert!(!run.stdout.contains("EADDRINUSE"), "{run}");
    assert!(
        run.stdout
            .contains("-- the restarted server's exit status: 0"),
        "{run}"
    );
    assert!(
        verdict(&run).starts_with("verdict: shown: with SO_REUSEADDR on both runs"),
        "{run}"
    );
}

#[test]
fn netns_lab_client_never_closes_leaves_fin_wait_2() {
    if !root("netns_lab_never_closes") {
        return;
    }
    let run = lab(&["--client-never-closes"]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout
            .contains(" client --addr 10.77.0.2 --port 8000 --no-read &"),
        "{run}"
    );
    let server: Vec<Vec<String>> = labelled(&run, "server ns")
        .iter()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert!(
        server.iter().any(|r| r[0] == "FIN_WAIT_2"),
        "no FIN_WAIT_2 in the server's table{run}"
    );
    // The client's end: CLOSE_WAIT, the unread reply queued: "I am server" (11 bytes) and
    // the FIN, which counts one.
    let client: Vec<Vec<String>> = labelled(&run, "client ns")
        .iter()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert!(
        client.iter().any(|r| r[0] == "CLOSE_WAIT" && r[1] == "12"),
        "{run}"
    );
    let restart = labelled(&run, "restart");
    assert!(
        restart
            .first()
            .is_some_and(|l| l.starts_with("bind: Address already in use — EADDRINUSE (errno 98)")),
        "{run}"
    );
    assert!(
        restart
            .iter()
            .any(|l| l.trim_start().starts_with("FIN_WAIT_2 ")),
        "{run}"
    );
    assert!(verdict(&run).ends_with("in FIN_WAIT_2"), "{run}");
}

#[test]
fn netns_lab_keeps_a_capture_of_the_veth() {
    if !root("netns_lab_capture") {
        return;
    }
    let dir = TempDir::new();
    let run = lab(&["--keep-captures", dir.0.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run}");
    let file = dir.join("netns-lab.pcapng");
    assert!(
        run.stdout
            .contains(&format!("capture: {} (open it", file.display())),
        "{run}"
    );
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}{run}", file.display()));
    assert_eq!(bytes[..4], [0x0a, 0x0d, 0x0d, 0x0a], "not pcapng{run}");
    let capture = labelled(&run, "capture");
    assert!(
        capture.last().is_some_and(|l| l.contains("dropped 0")),
        "{run}"
    );
    if tshark("netns_lab_capture") {
        let rows = tshark_rows(&file, 8000);
        // One connection (the restart fails at bind, so no second client comes), recorded
        // from its SYN on, FINs included.
        let first = rows.first().unwrap_or_else(|| panic!("no segments{run}"));
        assert!(first.flags == "S" && first.from_client, "{rows:?}");
        assert!(
            first.comment.starts_with("client CLOSED → SYN_SENT"),
            "{rows:?}"
        );
        assert!(rows.iter().any(|r| r.flags.contains('F')), "{rows:?}");
    }
}

/// Sends SIGINT (as Ctrl-C does) once the script has printed `text`, and checks that it
/// ends as Ctrl-C ends it, with its clean-up run (`finish` checks that nothing is left).
fn interrupt_after(args: &[&str], text: &str) -> Run {
    let mut lab = Lab::start(args);
    let pid = lab.pid();
    assert!(
        lab.wait_for_namespaces() && lab.wait_for_output(text),
        "the script ended before {text:?}{}",
        lab.output(None)
    );
    lab.interrupt();
    let run = lab.finish();
    assert_eq!(
        run.code,
        Some(130),
        "the script should end as Ctrl-C ends it (or did it finish before the signal?){run}"
    );
    assert!(
        run.stdout.contains("== clean-up (exit status 130)"),
        "{run}"
    );
    for ns in [format!("td-client-{pid}"), format!("td-server-{pid}")] {
        assert!(
            run.stdout.contains(&format!("+ ip netns del {ns}\n")),
            "{run}"
        );
    }
    assert!(!run.stdout.contains("verdict:"), "{run}");
    run
}

#[test]
fn netns_lab_ctrl_c_while_it_builds_leaves_nothing_behind() {
    if !root("netns_lab_sigint_build") {
        return;
    }
    // Right after both namespaces exist: the veth pair may be half made.
    interrupt_after(&["--client-never-closes"], "+ ip netns add td-server-");
}

#[test]
fn netns_lab_ctrl_c_with_programs_running_leaves_nothing_behind() {
    if !root("netns_lab_sigint_programs") {
        return;
    }
    // The capture and the client that never closes run in the background, and the server
    // may still: the clean-up stops them before it deletes the namespaces they live in.
    let dir = TempDir::new();
    let run = interrupt_after(
        &[
            "--client-never-closes",
            "--keep-captures",
            dir.0.to_str().unwrap(),
        ],
        "--no-read &",
    );
    assert!(run.stdout.contains("capture -i td-c-"), "{run}");
}

#[test]
fn netns_lab_usage_and_environment_errors_exit_2() {
    let run = run_cmd({
        let mut c = Command::new(SCRIPT);
        c.arg("--bogus").env("TEARDOWN_BIN", BIN);
        c
    });
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr
            .contains("netns-lab.sh: unknown argument: --bogus"),
        "{run}"
    );
    // Not root: one line, before anything is made. As root, become nobody to see it (the
    // script comes on standard input, since nobody may not read the checkout).
    let mut c = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-s",
        ]);
        c
    } else {
        Command::new("bash")
    };
    c.stdin(File::open(SCRIPT).unwrap())
        .env("TEARDOWN_BIN", BIN);
    let run = run_cmd(c);
    assert_eq!(run.code, Some(2), "{run}");
    assert_eq!(
        run.stderr.trim(),
        "netns-lab.sh: needs root (ip netns add): run it with sudo",
        "{run}"
    );
    assert_eq!(run.stdout, "", "{run}");
}

#[test]
fn netns_lab_finds_the_release_build_the_readme_makes() {
    if !root("netns_lab_release") {
        return;
    }
    // A checkout of its own with only target/release/teardown, and no teardown on PATH.
    let repo = TempDir::new();
    std::fs::create_dir_all(repo.join("scripts")).unwrap();
    std::fs::copy(SCRIPT, repo.join("scripts/netns-lab.sh")).unwrap();
    let script = repo.join("scripts/netns-lab.sh");
    let path = "/usr/sbin:/usr/bin:/sbin:/bin";
    let missing = run_cmd({
        let mut c = Command::new(&script);
        c.env_remove("TEARDOWN_BIN").env("PATH", path);
        c
    });
    assert_eq!(missing.code, Some(2), "{missing}");
    assert!(
        missing.stderr.contains("run `cargo build --release` in"),
        "{missing}"
    );
    std::fs::create_dir_all(repo.join("target/release")).unwrap();
    let release = repo.join("target/release/teardown");
    std::fs::copy(BIN, &release).unwrap();
    let run = run_cmd({
        let mut c = Command::new(&script);
        c.env_remove("TEARDOWN_BIN").env("PATH", path);
        c
    });
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout
            .contains(&format!("netns-lab: teardown is {}", release.display())),
        "{run}"
    );
}
