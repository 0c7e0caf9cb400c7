//! The README's promises that can drift: the `teardown list` table and the commands shown as
//! a root shell types them.

use crate::helper::*;

const README: &str = include_str!("../README.md");

/// The rows of the table under `## Scenarios`: (name, text), backticks removed.
fn scenario_table() -> Vec<(String, String)> {
    README
        .split("\n## Scenarios\n")
        .nth(1)
        .expect("a ## Scenarios section")
        .lines()
        .skip_while(|l| !l.starts_with("| scenario"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].replace('`', ""), cells[1].replace('`', ""))
        })
        .collect()
}

#[test]
fn the_readme_scenario_table_is_what_teardown_list_prints() {
    let run = teardown(&["list"]);
    assert_eq!(run.code, Some(0), "{run}");
    let listed: Vec<(String, String)> = run
        .stdout
        .lines()
        .map(|l| {
            let (name, lesson) = l.split_once(' ').unwrap();
            (name.to_string(), lesson.trim().to_string())
        })
        .collect();
    assert_eq!(scenario_table(), listed);
}

#[test]
fn the_readme_shows_commands_as_a_root_shell_types_them() {
    // Inside code blocks, no command begins with sudo: a root machine may have none. The
    // text says once that a user puts sudo in front.
    let mut in_code = false;
    for line in README.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            let command = line
                .trim_start()
                .trim_start_matches(['$', '#'])
                .trim_start();
            assert!(
                !command.starts_with("sudo "),
                "a command that needs sudo to exist: {line}"
            );
        }
    }
    let prose = README.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        prose.contains("put `sudo` in front"),
        "the sudo alternative is not said"
    );
}
