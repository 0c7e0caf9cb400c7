//! Parses the command line, calls the library, prints an error once, maps it to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use teardown::cli::{Cli, Command, RunConfig};
use teardown::error::{Error, exit};
use teardown::scenario;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List => list(),
        Command::Run(args) => RunConfig::try_from(args)
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
