//! The ladder diagram: the textbook termination figure drawn in the terminal, one line per
//! segment, client on the left, server on the right, each side's state where it changes.

use std::fmt::Write as _;

use super::style::{MIN_WIDTH, Style, columns, pad, wrap_words};
use crate::annotate::Packet;
use crate::evidence::{Note, Verdict};
use crate::tracker::{Connection, Role};

const TIME_W: usize = 9;
const SIDE_W: usize = 28;
const ARROW_W: usize = 40;

/// The diagram of connection `conn` among `packets`.
pub fn render(packets: &[Packet], conn: &Connection) -> String {
    render_checked(packets, conn, None, &Style::PLAIN)
}

/// What the marks mean, one line (three on a narrow terminal), the marks in colour.
pub fn legend(style: &Style) -> String {
    let items = [
        format!(
            "{} the kernel traced the same change",
            mark(Verdict::Agrees, style)
        ),
        format!(
            "{} Linux does not trace this one (the packet comment says why)",
            mark(Verdict::Explained, style)
        ),
        format!(
            "{} the kernel says otherwise",
            mark(Verdict::Mismatch, style)
        ),
    ];
    let one = items.join("   ");
    match style.width {
        Some(w) if columns(&one) > w => items.join("\n"),
        _ => one,
    }
}

/// ✓ agrees (green), ○ not traced for a documented reason (yellow), ✗ MISMATCH (red).
fn mark(verdict: Verdict, style: &Style) -> String {
    match verdict {
        Verdict::Agrees => style.green("✓"),
        Verdict::Explained => style.yellow("○"),
        Verdict::Mismatch => style.red("✗"),
        Verdict::Info => String::new(),
    }
}

/// One segment of the diagram, before layout.
struct Row {
    ms: f64,
    label: String,
    /// The label without seq/ack (and without len=0), for a narrow terminal.
    short: String,
    rightwards: bool,
    /// Each side's change, `A → B ✓`, styled; empty when its state stayed.
    sides: [String; 2],
    /// What goes after the line: unexpected segments and MISMATCH notes, styled.
    notes: Vec<String>,
    /// Bulk: data or a bare ACK that changes nothing and says nothing (it may fold).
    plain: bool,
    /// This row stands for a run of folded segments: "… 2,998 data segments …".
    fold: Option<String>,
    /// A segment that never arrived (teardown's packet filter dropped it): a half arrow, ✕.
    lost: bool,
}

/// The diagram with the kernel's verdict beside each change (✓ agrees, ○ not traced by
/// Linux for a documented reason, ✗ MISMATCH), in colour when the style says so. Within the
/// style's width: the ladder's columns when they fit, else each arrow on a line of its own
/// with the changes on the line below.
pub fn render_checked(
    packets: &[Packet],
    conn: &Connection,
    kernel: Option<&[Vec<Note>]>,
    style: &Style,
) -> String {
    let first = packets.iter().find_map(|p| match &p.event {
        Some(e) if e.conn == conn.id => Some(p.frame.ts),
        _ => None,
    });
    let mut rows = Vec::new();
    for (index, packet) in packets.iter().enumerate() {
        let (Some(event), Some(seg)) = (&packet.event, packet.segment()) else {
            continue;
        };
        if event.conn != conn.id {
            continue;
        }
        let ms = first
            .map(|t0| packet.frame.ts.saturating_sub(t0).as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        let notes: &[Note] = kernel.and_then(|k| k.get(index)).map_or(&[], |n| n);
        let change = |role: Role| {
            let Some(t) = event.last_transition(role) else {
                return String::new();
            };
            let verdict = notes
                .iter()
                .find(|n| n.role == role && n.inferred == Some((t.from, t.to)))
                .map(|n| n.verdict);
            // Every state it passed through on this segment: ESTABLISHED → FIN_WAIT_1 → CLOSING.
            let path = event
                .path(role)
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" → ");
            match verdict.map(|v| mark(v, style)).filter(|m| !m.is_empty()) {
                Some(m) => format!("{path} {m}"),
                None => path,
            }
        };
        let mut after: Vec<String> = event
            .unexpected()
            .iter()
            .map(|(role, u)| format!("! {role} in {}: {}", u.state, u.why))
            .collect();
        after.extend(
            notes
                .iter()
                .filter(|n| n.verdict == Verdict::Mismatch)
                .map(|n| style.red(&n.text)),
        );
        // The segment whose loss made this one go again, at the time it was sent.
        for note in event.notes() {
            let note = &*note.text();
            if let Some((role, flags, at)) = super::figure::parse_drop(note) {
                rows.push(Row {
                    ms: at,
                    label: format!("{flags} lost"),
                    short: format!("{flags} lost"),
                    rightwards: role == Role::Client,
                    sides: [String::new(), String::new()],
                    notes: vec!["dropped by teardown's packet filter".to_string()],
                    plain: false,
                    fold: None,
                    lost: true,
                });
            }
        }
        if event.resent {
            after.insert(0, super::figure::again(packets, index, seg, event.from));
        }
        let plain = event.transitions.is_empty()
            && after.is_empty()
            && !event.resent
            && !seg.flags.syn()
            && !seg.flags.fin()
            && !seg.flags.rst();
        rows.push(Row {
            ms,
            plain,
            fold: None,
            lost: false,
            label: label(seg, event),
            short: short_label(seg),
            rightwards: event.from == Role::Client,
            sides: [change(Role::Client), change(Role::Server)],
            notes: after,
        });
    }
    let rows = fold(rows);
    let ends = [conn.ending(Role::Client), conn.ending(Role::Server)];
    let wide = full(conn, &rows, &ends);
    match style.width {
        Some(w) if wide.lines().any(|l| columns(l) > w) => {
            stacked(conn, &rows, &ends, w.max(MIN_WIDTH))
        }
        _ => wide,
    }
}

/// The ladder's columns: time, the client's change, the arrow, the server's change.
fn full(conn: &Connection, rows: &[Row], ends: &[String; 2]) -> String {
    let mut out = String::new();
    // As wide as the widest change (crossing FINs name three states), SIDE_W at least.
    let side_w = rows
        .iter()
        .map(|r| columns(&r.sides[0]))
        .chain([SIDE_W, columns(&ends[0])])
        .max()
        .unwrap_or(SIDE_W);
    let client = format!("client {}", conn.client);
    let _ = writeln!(
        out,
        "{:>TIME_W$}  {client:<w$}server {}",
        "time ms",
        conn.server,
        w = side_w + ARROW_W + 2,
    );
    for row in rows {
        if let Some(text) = &row.fold {
            let _ = writeln!(out, "{:>TIME_W$}  {:side_w$}  {:^ARROW_W$}", "", "", text);
            continue;
        }
        let _ = write!(
            out,
            "{:>TIME_W$.3}  {}  {}  {}",
            row.ms,
            pad(&row.sides[0], side_w),
            arrow(&row.label, row.rightwards, row.lost, ARROW_W),
            row.sides[1],
        );
        for note in &row.notes {
            let _ = write!(out, "  {note}");
        }
        trim_end(&mut out);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{:>TIME_W$}  {:<side_w$}  {:ARROW_W$}  {}",
        "final", ends[0], "", ends[1]
    );
    trim_lines(out)
}

/// For a terminal `width` columns wide: each arrow across the width, the changes below it,
/// the client's on the left, the server's in a column on the right.
fn stacked(conn: &Connection, rows: &[Row], ends: &[String; 2], width: usize) -> String {
    let time_w = rows
        .iter()
        .map(|r| format!("{:.3}", r.ms).len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let left = time_w + 2;
    let client = format!("client {}", conn.client);
    let server = format!("server {}", conn.server);
    // The server's column: as wide as its widest change, flush with the right edge.
    let server_w = rows
        .iter()
        .map(|r| columns(&r.sides[1]))
        .chain([columns(&ends[1]), server.len()])
        .max()
        .unwrap_or(0);
    let server_at = width.saturating_sub(server_w).max(left);
    let line = |client: &str, server: &str| -> String {
        let mut l = " ".repeat(left);
        l.push_str(client);
        if !server.is_empty() {
            // Both changes on one line when they fit side by side, else the server's below.
            if left + columns(client) + 2 <= server_at {
                l = pad(&l, server_at);
            } else {
                l.push('\n');
                l.push_str(&" ".repeat(server_at));
            }
            l.push_str(server);
        }
        l
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>time_w$}{}",
        "time ms",
        &line(&client, &server)[time_w..]
    );
    let arrow_w = width - left;
    for row in rows {
        if let Some(text) = &row.fold {
            let _ = writeln!(out, "{}{text}", " ".repeat(left));
            continue;
        }
        let mut label = row.label.as_str();
        if columns(label) + 6 > arrow_w {
            label = &row.short;
        }
        let _ = writeln!(
            out,
            "{:>time_w$.3}  {}",
            row.ms,
            arrow(label, row.rightwards, row.lost, arrow_w)
        );
        if !(row.sides[0].is_empty() && row.sides[1].is_empty()) {
            let _ = writeln!(out, "{}", line(&row.sides[0], &row.sides[1]));
        }
        for note in &row.notes {
            for l in wrap_words(note, width - left - 2, 0) {
                let _ = writeln!(out, "{}{l}", " ".repeat(left + 2));
            }
        }
    }
    let _ = writeln!(
        out,
        "{:>time_w$}{}",
        "final",
        &line(&ends[0], &ends[1])[time_w..]
    );
    trim_lines(out)
}

/// Runs of more than FOLD_MIN plain segments keep their first and last; between them one line
/// says how many (a 3,000-segment transfer is not 3,000 lines).
fn fold(rows: Vec<Row>) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    let mut run: Vec<Row> = Vec::new();
    let flush = |run: &mut Vec<Row>, out: &mut Vec<Row>| {
        if run.len() > super::figure::FOLD_MIN {
            let last = run.pop();
            let inner = run.split_off(1);
            let text = super::figure::fold_text(inner.iter().map(|r| r.label.as_str()));
            out.append(run);
            out.push(Row {
                ms: 0.0,
                label: String::new(),
                short: String::new(),
                rightwards: true,
                sides: [String::new(), String::new()],
                notes: Vec::new(),
                plain: false,
                fold: Some(text),
                lost: false,
            });
            out.extend(last);
        } else {
            out.append(run);
        }
    };
    for row in rows {
        if row.plain {
            run.push(row);
        } else {
            flush(&mut run, &mut out);
            out.push(row);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// An arrow's words: `FIN,ACK seq=12 ack=12 len=0`, relative numbers (the SVG uses them too).
pub(crate) fn label(seg: &crate::decode::Segment, event: &crate::tracker::Event) -> String {
    let mut label = format!("{} seq={}", seg.flags, event.rel_seq);
    if let Some(ack) = event.rel_ack {
        let _ = write!(label, " ack={ack}");
    }
    let _ = write!(label, " len={}", seg.len);
    label
}

/// The flags, and the length when there is data: `FIN,ACK`, `PSH,ACK len=11`.
fn short_label(seg: &crate::decode::Segment) -> String {
    if seg.len > 0 {
        format!("{} len={}", seg.flags, seg.len)
    } else {
        seg.flags.to_string()
    }
}

/// `── SYN seq=0 len=0 ─────▶` or `◀── FIN,ACK ... ────`, `width` characters wide; a lost
/// segment stops half-way: `── ACK lost ──✕` from the left, `✕── ACK lost ──` from the right.
fn arrow(label: &str, rightwards: bool, lost: bool, width: usize) -> String {
    let body = format!("── {label} ");
    if lost {
        let fill = (width / 2).saturating_sub(body.chars().count() + 1);
        let half = format!("{body}{}", "─".repeat(fill));
        return if rightwards {
            format!("{half}✕")
        } else {
            let text = format!("✕{half}");
            format!(
                "{}{text}",
                " ".repeat(width.saturating_sub(text.chars().count()))
            )
        };
    }
    let fill = width.saturating_sub(body.chars().count() + 1);
    if rightwards {
        format!("{body}{}▶", "─".repeat(fill))
    } else {
        format!("◀{body}{}", "─".repeat(fill))
    }
}

fn trim_end(s: &mut String) {
    let len = s.trim_end_matches(' ').len();
    s.truncate(len);
}

fn trim_lines(s: String) -> String {
    s.lines().map(|l| l.trim_end().to_string() + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::tests::{captured, every_50us};
    use crate::tracker::tests::active_close;

    fn diagram(merged: bool) -> String {
        let (packets, tracker) = captured(active_close(merged), every_50us);
        render(&packets, &tracker.connections()[0])
    }

    #[test]
    fn four_segment_termination_figure() {
        let d = diagram(false);
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 1 + 11 + 1, "{d}");
        assert!(lines[0].contains("client 127.0.0.2:40000"), "{d}");
        assert!(
            lines[0].trim_end().ends_with("server 127.0.0.1:8000"),
            "{d}"
        );
        assert_eq!(
            lines[1],
            "    0.000  CLOSED → SYN_SENT             ── SYN seq=0 len=0 ────────────────────▶  LISTEN → SYN_RECEIVED"
        );
        assert_eq!(
            lines[8],
            "    0.350  ESTABLISHED → CLOSE_WAIT      ◀── FIN,ACK seq=12 ack=12 len=0 ────────  ESTABLISHED → FIN_WAIT_1"
        );
        assert_eq!(
            lines[9],
            "    0.400                                ── ACK seq=12 ack=13 len=0 ────────────▶  FIN_WAIT_1 → FIN_WAIT_2"
        );
        assert_eq!(
            lines[10],
            "    0.450  CLOSE_WAIT → LAST_ACK         ── FIN,ACK seq=12 ack=13 len=0 ────────▶  FIN_WAIT_2 → TIME_WAIT"
        );
        assert_eq!(
            lines[11],
            "    0.500  LAST_ACK → CLOSED             ◀── ACK seq=13 ack=13 len=0 ────────────"
        );
        assert!(lines[12].starts_with("    final  CLOSED"));
        assert!(lines[12].ends_with("TIME_WAIT"));
    }

    /// Every packet's notes: each transition agreed with, the last one a MISMATCH.
    fn notes(packets: &[Packet]) -> Vec<Vec<Note>> {
        let mut notes: Vec<Vec<Note>> = packets
            .iter()
            .map(|p| {
                let Some(e) = &p.event else { return Vec::new() };
                e.transitions
                    .iter()
                    .map(|(role, t)| Note {
                        role: *role,
                        inferred: Some((t.from, t.to)),
                        verdict: Verdict::Agrees,
                        text: "kernel agrees".into(),
                    })
                    .collect()
            })
            .collect();
        let last = notes.iter_mut().rev().find(|n| !n.is_empty()).unwrap();
        last[0].verdict = Verdict::Mismatch;
        last[0].text = "MISMATCH: the kernel traced no change for the client here".into();
        notes
    }

    fn transitions(packets: &[Packet]) -> Vec<String> {
        packets
            .iter()
            .filter_map(|p| p.event.as_ref())
            .flat_map(|e| {
                e.transitions
                    .iter()
                    .map(|(_, t)| format!("{} → {}", t.from, t.to))
            })
            .collect()
    }

    #[test]
    fn eighty_columns_keep_every_line_within_and_every_transition() {
        let (packets, tracker) = captured(active_close(false), every_50us);
        let conn = &tracker.connections()[0];
        let notes = notes(&packets);
        let style = Style {
            color: false,
            width: Some(80),
        };
        let d = render_checked(&packets, conn, Some(&notes), &style);
        for line in d.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}\n{d}",
                line.chars().count()
            );
        }
        for t in transitions(&packets) {
            assert!(d.contains(&t), "{t} is missing\n{d}");
        }
        assert!(d.contains("── SYN seq=0 len=0 ─"), "{d}");
        assert!(d.contains("MISMATCH: the kernel traced no change"), "{d}");
        assert!(d.contains("CLOSED → SYN_SENT ✓"), "{d}");
        // run all reads the final states from this line: both on it.
        let last = d.lines().last().unwrap();
        assert_eq!(
            last.split_whitespace().collect::<Vec<_>>(),
            ["final", "CLOSED", "TIME_WAIT"]
        );
        // Wide enough, the ladder keeps its columns.
        let wide = Style {
            color: false,
            width: Some(200),
        };
        assert_eq!(
            render_checked(&packets, conn, Some(&notes), &wide),
            render_checked(&packets, conn, Some(&notes), &Style::PLAIN)
        );
    }

    #[test]
    fn narrower_still_the_server_goes_below_and_nothing_breaks() {
        let (packets, tracker) = captured(active_close(false), every_50us);
        let conn = &tracker.connections()[0];
        let narrow = |w| Style {
            color: false,
            width: Some(w),
        };
        let d = render_checked(&packets, conn, None, &narrow(50));
        assert!(d.lines().all(|l| l.chars().count() <= 50), "{d}");
        for t in transitions(&packets) {
            assert!(d.contains(&t), "{t} is missing\n{d}");
        }
        // At 40 the labels lose seq and ack.
        let d = render_checked(&packets, conn, None, &narrow(40));
        assert!(d.lines().all(|l| l.chars().count() <= 40), "{d}");
        assert!(d.contains("◀── FIN,ACK ─"), "{d}");
        assert!(d.contains("── PSH,ACK len=11 ─"), "{d}");
        // Below the narrowest layout lines may be long, but all is there and nothing panics.
        let tiny = render_checked(&packets, conn, None, &narrow(5));
        assert!(tiny.contains("LAST_ACK → CLOSED"), "{tiny}");
    }

    #[test]
    fn marks_and_mismatch_in_colour_without_moving_the_columns() {
        let (packets, tracker) = captured(active_close(false), every_50us);
        let conn = &tracker.connections()[0];
        let notes = notes(&packets);
        let plain = render_checked(&packets, conn, Some(&notes), &Style::PLAIN);
        let color = Style {
            color: true,
            width: None,
        };
        let painted = render_checked(&packets, conn, Some(&notes), &color);
        assert!(painted.contains("\x1b[32m✓\x1b[0m"), "{painted}");
        assert!(painted.contains("\x1b[31m✗\x1b[0m"), "{painted}");
        assert!(painted.contains("\x1b[31mMISMATCH"), "{painted}");
        assert!(!plain.contains('\x1b'), "{plain}");
        let strip = |s: &str| {
            s.split('\x1b')
                .enumerate()
                .map(|(i, part)| {
                    if i == 0 {
                        part
                    } else {
                        part.split_once('m').map_or("", |(_, r)| r)
                    }
                })
                .collect::<String>()
        };
        assert_eq!(strip(&painted), plain);
        assert!(legend(&color).starts_with("\x1b[32m✓\x1b[0m the kernel traced"));
        assert_eq!(
            legend(&Style {
                color: false,
                width: Some(80)
            })
            .lines()
            .count(),
            3
        );
    }

    #[test]
    fn three_segment_form_goes_straight_to_time_wait() {
        let d = diagram(true);
        assert!(d.contains("FIN_WAIT_1 → TIME_WAIT"), "{d}");
        assert!(!d.contains("FIN_WAIT_2"), "{d}");
    }

    #[test]
    fn bulk_data_folds_into_one_line_and_fits_80_columns() {
        let segs = crate::output::svg::tests::bulk();
        let (packets, tracker) = captured(segs, every_50us);
        let conn = &tracker.connections()[0];
        let d = render(&packets, conn);
        assert!(d.contains("… 2,999 data segments …"), "{d}");
        assert_eq!(d.lines().count(), 1 + 3 + 3 + 4 + 1, "{d}");
        let narrow = Style {
            color: false,
            width: Some(80),
        };
        let d = render_checked(&packets, conn, None, &narrow);
        assert!(d.contains("… 2,999 data segments …"), "{d}");
        assert!(d.lines().all(|l| l.chars().count() <= 80), "{d}");
    }

    #[test]
    fn a_dropped_segment_stops_half_way_with_a_cross() {
        let (mut packets, tracker) = captured(active_close(false), every_50us);
        let conn = &tracker.connections()[0];
        // The client's last FIN tells of the server's ACK the packet filter dropped.
        let fin = packets.len() - 2;
        packets[fin].event.as_mut().unwrap().push_note(
            "sent again because the server's ACK segment sent at 0.420 ms never arrived: \
             teardown's packet filter dropped it (so the capture never saw it either)"
                .to_string(),
        );
        let d = render(&packets, conn);
        let lines: Vec<&str> = d.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("✕── ACK lost ─"))
            .unwrap_or_else(|| panic!("{d}"));
        assert!(lines[at].trim_start().starts_with("0.420"), "{d}");
        assert!(
            lines[at].ends_with("dropped by teardown's packet filter"),
            "{d}"
        );
        // From the server: it stops half-way, nothing reaches the client's side.
        let cross = lines[at].find('✕').unwrap();
        assert_eq!(lines[at][..cross].trim(), "0.420", "{d}");
        // ✕ in the arrow column's right half (in characters).
        let col = |l: &str, c: char| l.chars().position(|x| x == c).unwrap();
        let arrow_at = col(lines[at + 1], '─');
        assert!(col(lines[at], '✕') >= arrow_at + ARROW_W / 2, "{d}");
        assert!(!lines[at].contains('◀'), "{d}");
        assert!(lines[at + 1].contains("FIN,ACK seq=12 ack=13"), "{d}");
    }
}
