//! `teardown run all`: every scenario, each in a process (and so a network namespace) of its
//! own, then one table: scenario, expected, observed, verdict, capture.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use crate::cli::RunArgs;
use crate::error::{Error, exit};
use crate::scenario::{self, Place};

/// The "final" line of a run's ladder: `final  CLOSED  ...  TIME_WAIT`.
fn observed(stdout: &str) -> Option<(String, String)> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("final "))?;
    let mut words = line.split_whitespace().skip(1);
    Some((words.next()?.to_string(), words.next()?.to_string()))
}

pub fn run_all(args: &RunArgs, out: &mut dyn Write) -> Result<i32, Error> {
    if args.write.is_some() {
        return Err(Error::Usage(
            "with `run all` each capture goes to captures/SCENARIO.pcapng: -w names one file"
                .into(),
        ));
    }
    let exe = std::env::current_exe().map_err(Error::io("finding teardown's own binary"))?;
    let mut rows = Vec::new();
    let mut worst = exit::REPRODUCED;
    let mut skipped = Vec::new();
    for (i, s) in scenario::ALL.iter().enumerate() {
        // What cannot run where it was asked to is said, not counted as a failure.
        let cannot = if args.host && s.place == Place::TwoHosts {
            Some("holds back segments between two namespaces: not with --host")
        } else if args.host && !s.sysctls.is_empty() {
            Some("changes a sysctl, only ever in its own namespace: not with --host")
        } else if args.netns && s.place == Place::OneHost {
            Some("binds several loopback addresses of one host: not with --netns")
        } else {
            None
        };
        if let Some(why) = cannot {
            skipped.push(format!("{}: {why}", s.name));
            continue;
        }
        let mut cmd = Command::new(&exe);
        // On the host's loopback one scenario's TIME_WAIT would block the next one's port:
        // each gets ports of its own there (bind-matrix uses ten).
        let port = if args.host {
            args.port.saturating_add(10 * i as u16)
        } else {
            args.port
        };
        cmd.args(["run", s.name, "--port", &port.to_string()]);
        for (set, flag) in [
            (args.host, "--host"),
            (args.netns, "--netns"),
            (args.quick_close, "--quick-close"),
            (args.require_kernel, "--require-kernel"),
        ] {
            if set {
                cmd.arg(flag);
            }
        }
        let _ = write!(out, "{:<24}", s.name);
        let _ = out.flush();
        let result = cmd
            .output()
            .map_err(Error::io(format!("running {}", exe.display())))?;
        let stdout = String::from_utf8_lossy(&result.stdout);
        let stderr = String::from_utf8_lossy(&result.stderr);
        let code = result.status.code().unwrap_or(exit::ERROR);
        let verdict = match code {
            0 => "reproduced".to_string(),
            1 => "the kernel did something else".to_string(),
            _ => format!("error: {}", stderr.lines().next().unwrap_or("no message")),
        };
        let _ = writeln!(out, "{verdict}");
        if code != 0 {
            // What differed, as the run said it.
            for line in stdout.lines().filter(|l| l.starts_with("  - ")) {
                let _ = writeln!(out, "{:24}{}", "", line.trim());
            }
        }
        worst = worst.max(code.min(exit::ERROR));
        let [client, server] = s.expect;
        let expected = format!("client {client}, server {server}");
        let observed = observed(&stdout)
            .map(|(c, s)| format!("client {c}, server {s}"))
            .unwrap_or_else(|| "-".into());
        let capture = PathBuf::from("captures").join(format!("{}.pcapng", s.name));
        rows.push([
            s.name.to_string(),
            expected,
            observed,
            verdict,
            capture.display().to_string(),
        ]);
    }
    let header = ["scenario", "expected", "observed", "verdict", "capture"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(out, "\n{}", line(header));
    for row in &rows {
        let _ = writeln!(
            out,
            "{}",
            line([&row[0], &row[1], &row[2], &row[3], &row[4]])
        );
    }
    let reproduced = rows.iter().filter(|r| r[3] == "reproduced").count();
    let _ = writeln!(out, "\n{reproduced} of {} scenarios reproduced", rows.len());
    for s in &skipped {
        let _ = writeln!(out, "skipped {s}");
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_line_of_a_ladder_gives_both_states() {
        let out = "  time ms  client\n    final  CLOSED                          TIME_WAIT\n";
        assert_eq!(observed(out), Some(("CLOSED".into(), "TIME_WAIT".into())));
        assert_eq!(observed("nothing"), None);
    }
}
