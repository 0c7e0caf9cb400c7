//! How text goes to the terminal: colour or not (`--color`, NO_COLOR), how wide a line may
//! be (COLUMNS, the terminal's size), plurals, and tables whose columns fit their content.

use std::io::IsTerminal;

/// `--color WHEN`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set (no-color.org)
    #[default]
    Auto,
    /// Always, NO_COLOR or not
    Always,
    /// Never
    Never,
}

/// What the output may use: colour, and a line width (None: no limit, as when piped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
    pub width: Option<usize>,
}

/// The narrowest width the layouts try to honour; below it lines may be longer.
pub const MIN_WIDTH: usize = 40;

impl Style {
    /// Plain text, no width limit: for files and tests.
    pub const PLAIN: Style = Style {
        color: false,
        width: None,
    };

    /// The style for text written to standard output (or standard error with `stderr`).
    pub fn detect(choice: ColorChoice, stderr: bool) -> Style {
        let terminal = if stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        Style {
            color: color(choice, terminal, std::env::var_os("NO_COLOR").as_deref()),
            width: width(
                std::env::var("COLUMNS").ok().as_deref(),
                terminal.then(|| terminal_columns(stderr)).flatten(),
            ),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color && !s.is_empty() {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }

    /// `text` wrapped to the width (whole words), the first line after `first`, the others
    /// after `rest`; one line when there is no limit.
    pub fn wrap(&self, first: &str, rest: &str, text: &str) -> String {
        let Some(width) = self.width.filter(|&w| columns(first) + columns(text) > w) else {
            // No limit, or it fits: as it is, spaces and all.
            return format!("{first}{text}");
        };
        let room = width.saturating_sub(rest.chars().count()).max(20);
        let lead = first.chars().count().saturating_sub(rest.chars().count());
        // The first line has `lead` columns less room than the others.
        let mut lines = wrap_words(text, room, lead);
        if lines.is_empty() {
            lines.push(String::new());
        }
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(if i == 0 { first } else { rest });
            out.push_str(line);
        }
        out
    }
}

/// Colour or not: `always` wins, `never` loses, `auto` colours a terminal unless NO_COLOR is
/// set to something (an empty NO_COLOR counts as unset, as no-color.org says).
pub fn color(choice: ColorChoice, terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && no_color.is_none_or(|v| v.is_empty()),
    }
}

/// The line width: COLUMNS when it is a number (a user's explicit wish, piped or not), else
/// the terminal's; None (no limit) for a pipe or a file.
pub fn width(columns: Option<&str>, terminal: Option<usize>) -> Option<usize> {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or(terminal)
}

/// TIOCGWINSZ of standard output (or error).
fn terminal_columns(stderr: bool) -> Option<usize> {
    let fd = if stderr {
        libc::STDERR_FILENO
    } else {
        libc::STDOUT_FILENO
    };
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// `1 change`, `3 changes`, `0 changes`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The number of columns `s` takes: its characters, escape sequences not counted.
pub fn columns(s: &str) -> usize {
    let mut n = 0;
    let mut escape = false;
    for c in s.chars() {
        match (escape, c) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// `s` followed by spaces up to `width` columns (colour escapes take none).
pub fn pad(s: &str, width: usize) -> String {
    format!("{s}{}", " ".repeat(width.saturating_sub(columns(s))))
}

/// Rows as a table: each column as wide as its widest cell plus two spaces, every line after
/// `indent`; the last column is not padded.
pub fn table(indent: &str, rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| columns(c))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_string();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&pad(cell, widths[i] + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Whole words into lines of at most `width` columns, the first `lead` columns shorter.
/// A word longer than a line stays whole on a line of its own.
pub fn wrap_words(text: &str, width: usize, lead: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let room = if lines.is_empty() {
            width.saturating_sub(lead)
        } else {
            width
        };
        if !line.is_empty() && columns(&line) + 1 + columns(word) > room {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Word-wraps a paragraph at `width` columns.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    crate::output::style::wrap_words(text, width, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn plural_says_one_or_many() {
        assert_eq!(plural(1, "change", "changes"), "1 change");
        assert_eq!(plural(3, "time", "times"), "3 times");
        assert_eq!(plural(0, "connection", "connections"), "0 connections");
    }

    #[test]
    fn auto_colours_a_terminal_unless_no_color() {
        use ColorChoice::*;
        assert!(color(Auto, true, None));
        assert!(!color(Auto, false, None));
        assert!(!color(Auto, true, Some(OsStr::new("1"))));
        // An empty NO_COLOR is as good as none.
        assert!(color(Auto, true, Some(OsStr::new(""))));
        // --color=always beats NO_COLOR; never beats a terminal.
        assert!(color(Always, false, Some(OsStr::new("1"))));
        assert!(!color(Never, true, None));
    }

    #[test]
    fn columns_win_over_the_terminal_and_a_pipe_has_no_limit() {
        assert_eq!(width(Some("80"), Some(200)), Some(80));
        assert_eq!(width(None, Some(120)), Some(120));
        assert_eq!(width(None, None), None);
        assert_eq!(width(Some("wide"), None), None);
        assert_eq!(width(Some("0"), Some(90)), Some(90));
    }

    #[test]
    fn colour_is_an_escape_only_when_wanted() {
        let on = Style {
            color: true,
            width: None,
        };
        assert_eq!(on.green("✓"), "\x1b[32m✓\x1b[0m");
        assert_eq!(Style::PLAIN.red("✗"), "✗");
        assert_eq!(columns(&on.red("MISMATCH")), 8);
        assert_eq!(pad(&on.green("✓"), 3), "\x1b[32m✓\x1b[0m  ");
    }

    #[test]
    fn table_columns_fit_the_widest_cell() {
        let rows = vec![
            vec!["old".to_string(), "new".into(), "ok".into()],
            vec![
                "orphaned FIN_WAIT_2 on 127.0.0.1:8406, SO_REUSEADDR".to_string(),
                "x".into(),
                "✓".into(),
            ],
            vec!["TIME_WAIT".to_string(), "SO_REUSEADDR".into(), "✓".into()],
        ];
        let t = table("  ", &rows);
        assert_eq!(
            t,
            "  old                                                  new           ok\n\
             \x20 orphaned FIN_WAIT_2 on 127.0.0.1:8406, SO_REUSEADDR  x             ✓\n\
             \x20 TIME_WAIT                                            SO_REUSEADDR  ✓\n"
        );
    }

    #[test]
    fn wrap_keeps_within_the_width_with_a_hanging_indent() {
        let s = Style {
            color: false,
            width: Some(30),
        };
        let text = s.wrap(
            "  8. ",
            "     ",
            "client: waits until its kernel has sent the ACK of the FIN by itself",
        );
        assert!(text.lines().all(|l| l.chars().count() <= 30), "{text}");
        assert!(text.starts_with("  8. client: waits"), "{text}");
        assert!(
            text.lines().skip(1).all(|l| l.starts_with("     ")),
            "{text}"
        );
        assert_eq!(
            Style::PLAIN.wrap("  8. ", "     ", "one long line"),
            "  8. one long line"
        );
        // What fits stays as it is, its runs of spaces too.
        assert_eq!(
            s.wrap("  ", "    ", "this run:   6 ports"),
            "  this run:   6 ports"
        );
    }
}
