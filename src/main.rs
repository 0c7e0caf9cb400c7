//! Parses the command line, calls the library, prints an error once, maps it to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use teardown::cli::{Cli, Command, ExecConfig, RunConfig, SocketsArgs, WhyArgs};
use teardown::error::{Error, exit};
use teardown::kernel::{self, table};
use teardown::scenario;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List => list(),
        Command::Completions(args) => print(&teardown::cli::completions(args.shell)),
        Command::Man(args) => {
            teardown::cli::man_page(args.command.as_deref()).and_then(|p| print(&p))
        }
        Command::Sockets(args) => sockets(args),
        Command::Why(args) => why(args),
        Command::Server(args) => teardown::programs::server(
            &teardown::programs::ServerConfig {
                addr: std::net::SocketAddr::new(args.addr, args.port),
                opts: teardown::sockets::SockOpts {
                    reuseaddr: args.reuseaddr,
                    reuseport: args.reuseport,
                },
                reply_forever: args.reply_forever,
            },
            &mut std::io::stdout(),
        ),
        Command::Capture(args) => capture(args),
        Command::Annotate(args) => teardown::offline::annotate(
            &args.input,
            &args.output,
            args.comments,
            &mut std::io::stderr(),
        ),
        Command::Diagram(args) => {
            use teardown::offline::Select;
            let select = match (args.conn, args.port) {
                (Some(n), _) => Select::Conn(n),
                (None, Some(p)) => Select::Port(p),
                (None, None) => Select::All,
            };
            teardown::offline::diagram(
                &args.input,
                select,
                args.svg.as_deref(),
                cli.color,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr(),
            )
        }
        Command::Summary(args) => teardown::offline::summary(
            &args.input,
            args.json,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        ),
        Command::Client(args) => teardown::programs::client(
            &teardown::programs::ClientConfig {
                server: std::net::SocketAddr::new(args.addr, args.port),
                read: !args.no_read,
                close: !args.no_close,
            },
            &mut std::io::stdout(),
        ),
        Command::Exec(args) => ExecConfig::try_from(args)
            .map(|config| ExecConfig {
                color: cli.color,
                ..config
            })
            .and_then(|config| teardown::exec::exec(&config, &mut std::io::stdout())),
        Command::Run(args) if args.scenario == "all" => {
            teardown::run::all::run_all(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Run(args) => RunConfig::try_from(args)
            .map(|config| RunConfig {
                color: cli.color,
                ..config
            })
            .and_then(|config| teardown::run::run(&config, &mut std::io::stdout())),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("teardown: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Writes `bytes` to standard output; a reader that went away (`| head`) is no error.
fn print(bytes: &[u8]) -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("writing to standard output")(e))
        }
        _ => Ok(exit::REPRODUCED),
    }
}

fn list() -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    let width = scenario::ALL
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for s in scenario::ALL {
        let _ = writeln!(out, "{:<width$}  {}", s.name, s.lesson);
    }
    Ok(exit::REPRODUCED)
}

fn sockets(args: SocketsArgs) -> Result<i32, Error> {
    if let Some(name) = &args.netns {
        table::enter_named_netns(name).map_err(Error::Usage)?;
    }
    let filter = table::Filter {
        port: args.port,
        state: args.state,
    };
    let mut sockets: Vec<_> = kernel::all_sockets()
        .map_err(Error::io("reading the kernel's socket table"))?
        .into_iter()
        .filter(|s| filter.keeps(s))
        .collect();
    kernel::fill_owners(&mut sockets);
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(out, "{}", table::to_json(&sockets));
    } else {
        let _ = write!(out, "{}", table::to_text(&sockets));
        let hidden = sockets.iter().any(|s| s.inode != 0 && s.owner.is_none());
        if hidden && unsafe { libc::geteuid() } != 0 {
            let _ = writeln!(
                out,
                "note: processes of other users' sockets are shown to root only"
            );
        }
    }
    Ok(exit::REPRODUCED)
}

/// Asks `ask` in each namespace `--netns` names (or the current one), then prints the
/// answers as text or JSON.
fn in_each_place<A>(
    args: &WhyArgs,
    mut ask: impl FnMut(Option<String>) -> Result<A, Error>,
    text: impl Fn(&A) -> String,
    json: impl Fn(&A) -> serde_json::Value,
) -> Result<Vec<A>, Error> {
    let places: Vec<Option<String>> = if args.netns.is_empty() {
        vec![None]
    } else {
        args.netns.iter().cloned().map(Some).collect()
    };
    let mut answers = Vec::new();
    for place in places {
        if let Some(name) = &place {
            table::enter_named_netns(name).map_err(Error::Usage)?;
        }
        answers.push(ask(place)?);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = match answers.as_slice() {
            [one] => json(one),
            many => serde_json::Value::Array(many.iter().map(&json).collect()),
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        for (i, a) in answers.iter().enumerate() {
            if i > 0 {
                let _ = writeln!(out);
            }
            let _ = write!(out, "{}", text(a));
        }
    }
    Ok(answers)
}

fn why(args: WhyArgs) -> Result<i32, Error> {
    use teardown::why::{Answer, Target, connect};
    let read = || Error::io("reading the kernel's socket table");
    if let Some(dest) = &args.connect {
        let dest = connect::Dest::parse(dest).map_err(Error::Usage)?;
        let answers = in_each_place(
            &args,
            |place| connect::ask(&dest, place).map_err(read()),
            connect::ConnectAnswer::to_text,
            connect::ConnectAnswer::to_json,
        )?;
        return Ok(if answers.iter().any(|a| a.exhausted()) {
            exit::DIFFERENT
        } else {
            exit::REPRODUCED
        });
    }
    let target = Target::parse(args.target.as_deref().unwrap_or_default()).map_err(Error::Usage)?;
    let root = unsafe { libc::geteuid() } == 0;
    let ask = |place: Option<String>| {
        let mut answer = teardown::why::ask(target, place.clone()).map_err(read())?;
        if answer.trials[0].errno == Some(libc::EADDRNOTAVAIL) {
            return Err(Error::Usage(format!(
                "{} is not an address of this machine{} (bind: EADDRNOTAVAIL)",
                target.addr().ip(),
                place
                    .as_ref()
                    .map(|n| format!(" in network namespace {n}"))
                    .unwrap_or_default()
            )));
        }
        let hidden = answer
            .holders
            .iter()
            .filter(|s| s.inode != 0 && s.owner.is_none())
            .count();
        if hidden > 0 && !root {
            answer.unseen.push(if hidden == 1 {
                "1 socket belongs to a process this user may not look into: run with sudo (or \
                 as root) to name it"
                    .to_string()
            } else {
                format!(
                    "{hidden} sockets belong to processes this user may not look into: run with \
                     sudo (or as root) to name them"
                )
            });
        }
        Ok(answer)
    };
    let answers = in_each_place(&args, ask, Answer::to_text, Answer::to_json)?;
    Ok(if answers.iter().all(Answer::plain_bind_ok) {
        exit::REPRODUCED
    } else {
        exit::DIFFERENT
    })
}

fn capture(args: teardown::cli::CaptureArgs) -> Result<i32, Error> {
    use teardown::capture::session::{CaptureConfig, Output};
    if let Some(name) = &args.netns
        && args.list_interfaces
    {
        table::enter_named_netns(name).map_err(Error::Usage)?;
    }
    if args.list_interfaces {
        let list = teardown::capture::live::list_text(&teardown::capture::live::interfaces());
        let _ = write!(std::io::stdout().lock(), "{list}");
        return Ok(exit::REPRODUCED);
    }
    let filter = match (args.port, args.filter) {
        (Some(port), _) => Some(format!("tcp port {port}")),
        (None, Some(expr)) => Some(expr),
        // Like tcpdump: the trailing words are one expression.
        (None, None) => Some(args.expression.join(" ")),
    }
    .filter(|e| !e.trim().is_empty());
    let duration = match args.duration {
        Some(d) if d.is_finite() && d > 0.0 => Some(std::time::Duration::from_secs_f64(d)),
        Some(d) => {
            return Err(Error::Usage(format!(
                "--duration {d}: give a number of seconds above 0"
            )));
        }
        None => None,
    };
    let Some(output) = args.output else {
        return Err(Error::Usage(
            "capture: give the file to write with -o FILE (or -o - for standard output)".into(),
        ));
    };
    // The same check as every output's, before the socket is opened. The file itself is then
    // written in place as it grows, as tcpdump -w does: a capture killed even by SIGKILL
    // leaves what it had written.
    teardown::output::dest::Dest::check("-o", &output).map_err(Error::Usage)?;
    let output = if output.as_os_str() == "-" {
        Output::Stdout
    } else {
        Output::File(output)
    };
    let config = CaptureConfig {
        iface: args.iface,
        filter,
        count: args.count,
        duration,
        output,
        netns: args.netns,
        user: args.user,
        comments: args.comments,
    };
    teardown::capture::session::capture(&config, &mut std::io::stderr())
}
