//! `teardown run all`: every scenario, each in a process (and so a network namespace) of its
//! own, read through its `--json` report; progress on standard error, then one table on
//! standard output (or, with `--json`, one JSON array of the reports).

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;

use serde_json::{Value, to_value};

use crate::cli::RunArgs;
use crate::error::{Error, exit};
use crate::output::style::plural as count;
use crate::scenario::{self, HOST_STRIDE, Place, Scenario};

/// A scenario that did not run where asked, in `run all --json`.
#[derive(serde::Serialize)]
struct Skipped<'a> {
    scenario: &'a str,
    verdict: &'a str,
    reason: &'a str,
}

/// A scenario whose run gave no report of its own (it failed before one could be made).
#[derive(serde::Serialize)]
struct Failed<'a> {
    scenario: &'a str,
    verdict: &'a str,
    error: Option<&'a str>,
}

/// One scenario's place in the plan: its port, or why it does not run where asked.
#[derive(Debug)]
struct Planned {
    scenario: &'static Scenario,
    port: u16,
    skip: Option<&'static str>,
}

/// What one child said, from its JSON report (or its error line when it gave none).
#[derive(Debug, PartialEq)]
struct Outcome {
    /// reproduced, different, failed, interrupted, error.
    verdict: String,
    observed: Option<(String, String)>,
    differences: Vec<String>,
    capture: Option<String>,
    error: Option<String>,
    report: Value,
}

fn cannot(args: &RunArgs, s: &Scenario) -> Option<&'static str> {
    if args.host && s.place == Place::TwoHosts {
        Some("holds back segments between two namespaces: not with --host")
    } else if args.host && !s.sysctls.is_empty() {
        Some("changes a sysctl, only ever in its own namespace: not with --host")
    } else if args.netns && s.place == Place::OneHost {
        Some("binds several loopback addresses of one host: not with --netns")
    } else {
        None
    }
}

/// The ports of the catalogue: `--port` for each in its own namespace; on the host
/// `--port + 10 × i`, scenario `i` of `teardown list` from 0. Refused when any passes 65535.
fn plan(args: &RunArgs) -> Result<Vec<Planned>, String> {
    let place = |i: usize| u32::from(HOST_STRIDE) * i as u32;
    // The highest --port whose layout fits, for the message.
    let highest = scenario::ALL
        .iter()
        .enumerate()
        .filter(|(_, s)| cannot(args, s).is_none())
        .map(|(i, s)| 65536 - u32::from(s.ports) - if args.host { place(i) } else { 0 })
        .min()
        .unwrap_or(65535);
    let mut plan = Vec::new();
    for (i, s) in scenario::ALL.iter().enumerate() {
        let skip = cannot(args, s);
        let port = match (skip, args.host) {
            (None, true) => u16::try_from(u32::from(args.port) + place(i)).ok(),
            _ => Some(args.port),
        };
        if skip.is_none() && port.is_none_or(|p| s.port_range(p).is_err()) {
            return Err(if args.host {
                format!(
                    "--port {}: run all --host gives each scenario ports of its own, from \
                     --port + {HOST_STRIDE} × its place in `teardown list`; {} (place {i}) \
                     would need ports past 65535: give --port {highest} or lower",
                    args.port, s.name
                )
            } else {
                format!(
                    "--port {}: {} uses {} ports from --port up, past 65535: give --port \
                     {highest} or lower",
                    args.port, s.name, s.ports
                )
            });
        }
        plan.push(Planned {
            scenario: s,
            port: port.unwrap_or(args.port),
            skip,
        });
    }
    Ok(plan)
}

/// Reads a child's output: its JSON report, or the error line it printed instead.
fn outcome(code: i32, stdout: &str, stderr: &str) -> Outcome {
    let error_line = || {
        stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("teardown: "))
            .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("no message")
            .to_string()
    };
    match serde_json::from_str::<Value>(stdout) {
        Ok(report) => {
            let text = |v: &Value| v.as_str().map(str::to_string);
            let observed = report["observed"]
                .as_object()
                .and_then(|o| Some((text(&o["client"])?, text(&o["server"])?)));
            let differences = report["differences"]
                .as_array()
                .map(|a| a.iter().filter_map(text).collect())
                .unwrap_or_default();
            let verdict = text(&report["verdict"]).unwrap_or_else(|| "error".into());
            Outcome {
                error: (code == exit::ERROR || verdict == "failed").then(error_line),
                verdict,
                observed,
                differences,
                capture: text(&report["capture"]),
                report,
            }
        }
        Err(_) => Outcome {
            verdict: if code > 128 {
                "interrupted".into()
            } else {
                "error".into()
            },
            observed: None,
            differences: Vec::new(),
            capture: None,
            error: Some(error_line()),
            report: Value::Null,
        },
    }
}

pub fn run_all(
    args: &RunArgs,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<i32, Error> {
    if args.write.is_some() {
        return Err(Error::Usage(
            "with `run all` each capture goes to captures/SCENARIO.pcapng: -w names one file; \
             run all from the directory that should hold captures/, or run one scenario with -w"
                .into(),
        ));
    }
    let plan = plan(args).map_err(Error::Usage)?;
    // Every child writes into captures/: whether it can is checked once, here.
    let dir = std::path::Path::new("captures");
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Usage(format!(
                "cannot create captures/ for the captures ({e}); run all from a directory you \
                 can write to"
            ))
        })?;
    }
    crate::output::dest::Dest::check("the captures", &dir.join("active-close.pcapng"))
        .map_err(|e| Error::Usage(format!("{e}; run all from a directory you can write to")))?;
    if args.host {
        // Every port of the layout, before the first scenario starts.
        for p in plan.iter().filter(|p| p.skip.is_none()) {
            for port in p.scenario.port_range(p.port).map_err(Error::Usage)? {
                super::refuse_busy_port(SocketAddr::new(super::SERVER_IP.into(), port))?;
            }
        }
    }
    let exe = std::env::current_exe().map_err(Error::io("finding teardown's own binary"))?;
    let total = plan.iter().filter(|p| p.skip.is_none()).count();
    let mut worst = exit::REPRODUCED;
    let mut results: Vec<(&Planned, Outcome)> = Vec::new();
    let mut reports = Vec::new();
    for p in &plan {
        let s = p.scenario;
        if let Some(why) = p.skip {
            reports.push(
                to_value(Skipped {
                    scenario: s.name,
                    verdict: "skipped",
                    reason: why,
                })
                .unwrap_or_default(),
            );
            continue;
        }
        let mut cmd = Command::new(&exe);
        cmd.args(["run", s.name, "--port", &p.port.to_string(), "--json"]);
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
        if args.comments != crate::annotate::Comments::default() {
            cmd.args(["--comments", "all"]);
        }
        let _ = write!(
            progress,
            "[{}/{total}] {} (port {}) … ",
            results.len() + 1,
            s.name,
            p.port
        );
        let _ = progress.flush();
        let started = std::time::Instant::now();
        let result = cmd
            .output()
            .map_err(Error::io(format!("running {}", exe.display())))?;
        let code = result.status.code().unwrap_or(exit::ERROR);
        let o = outcome(
            code,
            &String::from_utf8_lossy(&result.stdout),
            &String::from_utf8_lossy(&result.stderr),
        );
        let _ = writeln!(
            progress,
            "{} ({:.1} s)",
            o.verdict,
            started.elapsed().as_secs_f64()
        );
        reports.push(if o.report.is_null() {
            to_value(Failed {
                scenario: s.name,
                verdict: &o.verdict,
                error: o.error.as_deref(),
            })
            .unwrap_or_default()
        } else {
            o.report.clone()
        });
        results.push((p, o));
        if code > 128 {
            // Ctrl-C (or a kill) reached the child and us alike: stop here, as it did.
            worst = code;
            break;
        }
        worst = worst.max(code.min(exit::ERROR));
    }
    if args.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&Value::Array(reports)).unwrap_or_default()
        );
        return Ok(worst);
    }
    let _ = write!(out, "{}", table(&results));
    for p in plan.iter().filter(|p| p.skip.is_some()) {
        let _ = writeln!(
            out,
            "skipped {}: {}",
            p.scenario.name,
            p.skip.unwrap_or_default()
        );
    }
    Ok(worst)
}

/// The table, then what differed and the errors, each under it on lines of their own so a
/// long message does not widen every row.
fn table(results: &[(&Planned, Outcome)]) -> String {
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|(p, o)| {
            let [client, server] = p.scenario.expect;
            let verdict = match o.verdict.as_str() {
                "different" => "the kernel did something else (below)".to_string(),
                "failed" | "error" => format!("{} (below)", o.verdict),
                v => v.to_string(),
            };
            [
                p.scenario.name.to_string(),
                format!("client {client}, server {server}"),
                o.observed
                    .as_ref()
                    .map(|(c, s)| format!("client {c}, server {s}"))
                    .unwrap_or_else(|| "-".into()),
                verdict,
                o.capture.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["scenario", "expected", "observed", "verdict", "capture"].map(String::from);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 5]| {
        let mut l = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l + "\n"
    };
    let mut text = format!("\n{}", line(&header));
    for row in &rows {
        text += &line(row);
    }
    let notes: Vec<String> = results
        .iter()
        .flat_map(|(p, o)| {
            o.differences
                .iter()
                .chain(o.error.as_ref())
                .map(move |d| format!("  {}: {d}\n", p.scenario.name))
        })
        .collect();
    if !notes.is_empty() {
        text += "\n";
        text += &notes.concat();
    }
    let reproduced = results
        .iter()
        .filter(|(_, o)| o.verdict == "reproduced")
        .count();
    text += &format!(
        "\n{reproduced} of {} reproduced\n",
        count(results.len(), "scenario", "scenarios")
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command as Cmd};
    use clap::Parser;

    fn args(words: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["teardown", "run", "all"].iter().chain(words)).unwrap();
        let Cmd::Run(args) = cli.command else {
            panic!("not run")
        };
        args
    }

    #[test]
    fn on_the_host_each_scenario_gets_ports_ten_apart_in_list_order() {
        let host = plan(&args(&["--host", "--port", "20000"])).unwrap();
        assert_eq!(host[0].scenario.name, "active-close");
        assert_eq!(host[0].port, 20000);
        assert_eq!(host[8].scenario.name, "bind-matrix");
        assert_eq!(host[8].port, 20080);
        assert_eq!(host[15].port, 20150);
        let plain = plan(&args(&["--port", "9000"])).unwrap();
        assert!(plain.iter().all(|p| p.port == 9000));
    }

    #[test]
    fn a_layout_past_65535_is_refused_with_the_highest_port_that_fits() {
        let err = plan(&args(&["--host", "--port", "65400"])).unwrap_err();
        assert!(err.contains("timewait-new-syn (place 15)"), "{err}");
        assert!(err.contains("give --port 65385 or lower"), "{err}");
        assert!(plan(&args(&["--host", "--port", "65385"])).is_ok());
        let err = plan(&args(&["--port", "65530"])).unwrap_err();
        assert!(err.contains("bind-matrix uses 10 ports"), "{err}");
        assert!(err.contains("give --port 65526 or lower"), "{err}");
    }

    #[test]
    fn a_childs_report_gives_verdict_states_and_differences() {
        let report = r#"{"scenario":"x","verdict":"different","observed":{"client":"CLOSED",
            "server":"FIN_WAIT_2"},"differences":["server: expected TIME_WAIT, observed FIN_WAIT_2"],
            "capture":"captures/x.pcapng"}"#;
        let o = outcome(1, report, "narration\n");
        assert_eq!(o.verdict, "different");
        assert_eq!(o.observed, Some(("CLOSED".into(), "FIN_WAIT_2".into())));
        assert_eq!(o.differences.len(), 1);
        assert_eq!(o.error, None);
        let o = outcome(2, "", "teardown: 127.0.0.1:8000 is already in use\n");
        assert_eq!(o.verdict, "error");
        assert_eq!(o.error.as_deref(), Some("127.0.0.1:8000 is already in use"));
    }
}
