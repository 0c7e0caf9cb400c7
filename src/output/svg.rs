//! The ladder diagram as an SVG picture: the figure a TCP textbook draws for connection
//! termination. Two timelines (client left, server right), time running down, one slanted
//! arrow per segment labelled as in the terminal ladder, and a box with the new state where
//! an endpoint's state changes. A standalone document: no fonts, scripts or styles from outside.

use std::fmt::Write as _;

use crate::annotate::Packet;
use crate::evidence::{Note, Verdict};
use crate::tcp::State;
use crate::tracker::{Connection, Role};

const WIDTH: i64 = 900;
/// Vertical distance between the starts of two consecutive segments.
const ROW: i64 = 44;
/// How far an arrow falls while it crosses: the segment takes time to arrive.
const DROP: i64 = 20;
/// The right edge of the time column: room for "3600000.000" (an hour) at 11 px.
const TIME_X: i64 = 78;
const CLIENT_X: i64 = 230;
const SERVER_X: i64 = 690;
const BOX_W: i64 = 124;
/// The closest two boxes on one side come is a received change at the end of one arrow and a
/// sent change at the start of the next: ROW - DROP = 24 apart, more than BOX_H, so they never
/// overlap.
const BOX_H: i64 = 18;
/// Space between a timeline and its boxes, so a box never touches an arrow.
const BOX_GAP: i64 = 8;
const HEAD_Y: i64 = 24;
const TIMELINE_TOP: i64 = 34;
const INITIAL_Y: i64 = 58;
const FIRST_Y: i64 = 100;
/// The advance of a monospace glyph, in em: what the widths of texts are estimated from.
const ADVANCE: f64 = 0.6;
/// Font sizes: labels, headings and state names; times, notes and the legend.
const FONT: f64 = 12.0;
const SMALL_FONT: f64 = 11.0;
/// The widest a label may be between the timelines, clear of both arrow ends.
const LABEL_MAX: f64 = (SERVER_X - CLIENT_X - 40) as f64;
const RED: &str = "#c62828";
const GREEN: &str = "#2e7d32";
const GREY: &str = "#666666";

/// One segment of the connection, as drawn.
struct Row<'a> {
    ms: f64,
    from: Role,
    label: String,
    /// The state changes at this segment: who, the new state, the kernel's verdict.
    changes: Vec<(Role, State, Option<Verdict>)>,
    /// Unexpected segments and the kernel's mismatches, in red beside the arrow.
    notes: Vec<String>,
    comment: &'a str,
}

/// The ladder of connection `conn` among `packets` as a standalone SVG document.
/// `kernel`: optional per-packet notes (indexed like `packets`) from the kernel check; when given,
/// each state box gets a small mark: ✓ (Verdict::Agrees), ○ (Explained), ✗ in red (Mismatch).
pub fn render(packets: &[Packet], conn: &Connection, kernel: Option<&[Vec<Note>]>) -> String {
    let rows = rows(packets, conn, kernel);
    let initial = [Role::Client, Role::Server].map(|role| initial_state(packets, conn, role));
    let last_end = match rows.len() {
        0 => FIRST_Y - 40,
        n => row_y(n - 1).saturating_add(DROP),
    };
    let final_y = last_end.saturating_add(40);
    let height = final_y.saturating_add(if kernel.is_some() { 64 } else { 36 });

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(
        out,
        "<title>{}</title>",
        escape(&format!(
            "teardown: client {}, server {}",
            conn.client, conn.server
        ))
    );
    // The arrowhead: its tip lies on the end of the line, the receiver's timeline.
    out.push_str(
        "<defs><marker id=\"head\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
         markerWidth=\"10\" markerHeight=\"8\" markerUnits=\"userSpaceOnUse\" \
         orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#000000\"/></marker></defs>\n",
    );
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );

    // Headings: the time column and each side's role and address above its timeline.
    let _ = writeln!(
        out,
        r#"<text x="{TIME_X}" y="{HEAD_Y}" text-anchor="end" font-size="11" fill="{GREY}">time ms</text>"#
    );
    let half = (WIDTH / 2) as f64;
    for (role, center, lo, hi) in [
        (Role::Client, CLIENT_X, TIME_X as f64 + 8.0, half - 8.0),
        (Role::Server, SERVER_X, half + 8.0, WIDTH as f64 - 4.0),
    ] {
        let text = format!("{role} {}", conn.addr(role));
        let (x, size) = place(&text, center as f64, lo, hi, FONT);
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{HEAD_Y}" text-anchor="middle" font-weight="bold"{}>{}</text>"#,
            size_attr(size),
            escape(&text)
        );
    }
    for x in [CLIENT_X, SERVER_X] {
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{TIMELINE_TOP}" x2="{x}" y2="{}" stroke="#000000" stroke-width="2"/>"##,
            final_y.saturating_add(BOX_H)
        );
    }

    // The states before the first segment.
    for role in [Role::Client, Role::Server] {
        state_box(
            &mut out,
            role,
            INITIAL_Y,
            initial[role_index(role)],
            None,
            false,
        );
    }
    if conn.joined_mid {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="11" fill="{GREY}">joined mid-way: the states before the first segment are a guess</text>"#,
            (CLIENT_X + SERVER_X) / 2,
            INITIAL_Y + 4
        );
    }

    for (i, row) in rows.iter().enumerate() {
        segment(&mut out, row, row_y(i));
    }

    // The final states, as the terminal ladder's last line.
    let _ = writeln!(
        out,
        r#"<text x="{TIME_X}" y="{}" text-anchor="end" font-size="11" fill="{GREY}">final</text>"#,
        final_y + 4
    );
    for role in [Role::Client, Role::Server] {
        state_box(&mut out, role, final_y, conn.state(role), None, true);
    }

    // The legend of the kernel's marks, as under the terminal ladder; one text per item, as
    // SVG collapses the spaces that would separate them.
    if kernel.is_some() {
        let legend = [
            (GREEN, "✓", "the kernel traced the same change"),
            (GREY, "○", "Linux does not trace this one"),
            (RED, "✗", "the kernel says otherwise"),
        ];
        let mut x = CLIENT_X - BOX_GAP - BOX_W;
        for (color, mark, text) in legend {
            let _ = writeln!(
                out,
                r#"<text x="{x}" y="{}" font-size="11" fill="{GREY}"><tspan fill="{color}">{mark}</tspan> {text}</text>"#,
                final_y + 44
            );
            x += (text.chars().count() as f64 * ADVANCE * SMALL_FONT) as i64 + 48;
        }
    }
    out.push_str("</svg>\n");
    out
}

/// The segments of `conn`, with what the picture needs of each.
fn rows<'a>(
    packets: &'a [Packet],
    conn: &Connection,
    kernel: Option<&[Vec<Note>]>,
) -> Vec<Row<'a>> {
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
        // The same words as the terminal ladder's arrow.
        let label = super::ladder::label(seg, event);
        let notes: &[Note] = kernel.and_then(|k| k.get(index)).map_or(&[], |n| n);
        let mut changes = Vec::new();
        // The sender's change first: its box sits at the arrow's start, above the receiver's.
        for role in [event.from, event.from.other()] {
            if let Some(t) = event.last_transition(role) {
                let verdict = notes
                    .iter()
                    .find(|n| n.role == role && n.inferred == Some((t.from, t.to)))
                    .map(|n| n.verdict);
                changes.push((role, t.to, verdict));
            }
        }
        let mut red_notes: Vec<String> = event
            .unexpected
            .iter()
            .map(|(role, u)| format!("! {role} in {}: {}", u.state, u.why))
            .collect();
        red_notes.extend(
            notes
                .iter()
                .filter(|n| n.verdict == Verdict::Mismatch)
                .map(|n| n.text.clone()),
        );
        rows.push(Row {
            ms,
            from: event.from,
            label,
            changes,
            notes: red_notes,
            comment: &packet.comment,
        });
    }
    rows
}

/// The state a side was in before the connection's first segment: the `from` of its first
/// change, or, if it never changed, the state it is in now.
fn initial_state(packets: &[Packet], conn: &Connection, role: Role) -> State {
    packets
        .iter()
        .filter_map(|p| p.event.as_ref())
        .filter(|e| e.conn == conn.id)
        .find_map(|e| e.transition(role).map(|t| t.from))
        .unwrap_or_else(|| conn.state(role))
}

/// Where row `i`'s arrow starts.
fn row_y(i: usize) -> i64 {
    let i = i64::try_from(i).unwrap_or(i64::MAX);
    FIRST_Y.saturating_add(i.saturating_mul(ROW))
}

fn role_index(role: Role) -> usize {
    match role {
        Role::Client => 0,
        Role::Server => 1,
    }
}

fn timeline_x(role: Role) -> i64 {
    match role {
        Role::Client => CLIENT_X,
        Role::Server => SERVER_X,
    }
}

/// One segment: time, arrow with its label, the state boxes, the red notes. Grouped with the
/// packet's comment as its tooltip, as Wireshark shows it.
fn segment(out: &mut String, row: &Row, y: i64) {
    let (x1, x2) = (timeline_x(row.from), timeline_x(row.from.other()));
    let (y1, y2) = (y, y.saturating_add(DROP));
    out.push_str("<g>");
    if !row.comment.is_empty() {
        let _ = write!(out, "<title>{}</title>", escape(row.comment));
    }
    out.push('\n');
    let time = format!("{:.3}", row.ms);
    let _ = writeln!(
        out,
        r#"<text x="{TIME_X}" y="{}" text-anchor="end"{}>{}</text>"#,
        y1 + 4,
        size_attr(font_size(&time, TIME_X as f64 - 4.0, SMALL_FONT)),
        escape(&time)
    );
    let _ = writeln!(
        out,
        r##"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#000000" stroke-width="1.5" marker-end="url(#head)"/>"##
    );
    // The label lies along the arrow, read left to right whichever way the segment goes.
    let run = (SERVER_X - CLIENT_X) as f64;
    let slope = (DROP as f64).atan2(run).to_degrees();
    let angle = if row.from == Role::Client {
        slope
    } else {
        -slope
    };
    let (mx, my) = ((CLIENT_X + SERVER_X) / 2, y1.saturating_add(DROP / 2));
    let _ = writeln!(
        out,
        r#"<text x="{mx}" y="{}" text-anchor="middle"{} transform="rotate({angle:.2} {mx} {my})">{}</text>"#,
        my - 6,
        size_attr(font_size(&row.label, LABEL_MAX, FONT)),
        escape(&row.label)
    );
    if !row.notes.is_empty() {
        let text = shorten(&row.notes.join("; "), LABEL_MAX, SMALL_FONT);
        let _ = writeln!(
            out,
            r#"<text x="{mx}" y="{}" text-anchor="middle" font-size="11" fill="{RED}" transform="rotate({angle:.2} {mx} {my})">{}</text>"#,
            my + 14,
            escape(&text)
        );
    }
    for &(role, state, verdict) in &row.changes {
        // The sender changes as the segment leaves, the receiver as it arrives.
        let at = if role == row.from { y1 } else { y2 };
        state_box(out, role, at, state, verdict, false);
    }
    out.push_str("</g>\n");
}

/// A box with a state's name beside `role`'s timeline, centred on `y`, on the outer side so it
/// never covers an arrow.
fn state_box(
    out: &mut String,
    role: Role,
    y: i64,
    state: State,
    verdict: Option<Verdict>,
    last: bool,
) {
    let x = match role {
        Role::Client => CLIENT_X - BOX_GAP - BOX_W,
        Role::Server => SERVER_X + BOX_GAP,
    };
    let mismatch = verdict == Some(Verdict::Mismatch);
    let stroke = if mismatch { RED } else { "#000000" };
    // The final states are shaded: where each side is left when the capture ends.
    let fill = if last { "#e8e8e8" } else { "#ffffff" };
    let _ = writeln!(
        out,
        r#"<rect x="{x}" y="{}" width="{BOX_W}" height="{BOX_H}" rx="3" fill="{fill}" stroke="{stroke}"/>"#,
        y.saturating_sub(BOX_H / 2)
    );
    // The space stays outside the tspan: librsvg drops a tspan's leading space.
    let mark = match verdict {
        Some(Verdict::Agrees) => format!(r#" <tspan fill="{GREEN}">✓</tspan>"#),
        Some(Verdict::Explained) => format!(r#" <tspan fill="{GREY}">○</tspan>"#),
        Some(Verdict::Mismatch) => format!(r#" <tspan fill="{RED}">✗</tspan>"#),
        Some(Verdict::Info) | None => String::new(),
    };
    let _ = writeln!(
        out,
        r#"<text class="state" x="{}" y="{}" text-anchor="middle">{}{mark}</text>"#,
        x + BOX_W / 2,
        y.saturating_add(4),
        escape(state.name())
    );
}

/// The font size, at most `base`, at which `text` fits in `max` pixels. Smaller type rather
/// than `textLength`, which librsvg ignores.
fn font_size(text: &str, max: f64, base: f64) -> f64 {
    let width = text.chars().count() as f64 * ADVANCE * base;
    if width > max {
        base * max / width
    } else {
        base
    }
}

/// ` font-size="..."`, one decimal at most, the same bytes for the same size.
fn size_attr(size: f64) -> String {
    let text = format!("{size:.1}");
    format!(
        r#" font-size="{}""#,
        text.strip_suffix(".0").unwrap_or(&text)
    )
}

/// Where to centre a heading near `center` so it stays within `lo..hi`, and its font size,
/// smaller when it is wider than that.
fn place(text: &str, center: f64, lo: f64, hi: f64, base: f64) -> (f64, f64) {
    let size = font_size(text, hi - lo, base);
    let width = text.chars().count() as f64 * ADVANCE * size;
    let x = if width >= hi - lo {
        (lo + hi) / 2.0
    } else {
        center.clamp(lo + width / 2.0, hi - width / 2.0)
    };
    (x, size)
}

/// `text` cut to fit `max` pixels at `size`, with "…" where it was cut (the tooltip has it all).
fn shorten(text: &str, max: f64, size: f64) -> String {
    let room = (max / (ADVANCE * size)) as usize;
    if text.chars().count() <= room {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(room.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Text for XML content and attribute values: the five special characters as entities, and the
/// control characters XML 1.0 forbids replaced, so any comment yields a well-formed document.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::tests::{captured, every_50us};
    use crate::decode::{DecodeError, Segment};
    use crate::frame::Frame;
    use crate::tracker::Tracker;
    use crate::tracker::tests::{active_close, segment as seg};
    use std::time::Duration;

    fn packets_of(segs: Vec<Segment>) -> (Vec<Packet>, Tracker) {
        captured(segs, every_50us)
    }

    fn picture(merged: bool, kernel: Option<&[Vec<Note>]>) -> String {
        let (packets, tracker) = packets_of(active_close(merged));
        render(&packets, &tracker.connections()[0], kernel)
    }

    /// Balanced tags, and no raw `<` or `&` outside markup and entities: enough of XML's
    /// well-formedness to catch a missed escape or a tag left open.
    fn check_well_formed(doc: &str) -> Result<(), String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = doc;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let close = rest[open..]
                .find('>')
                .ok_or_else(|| format!("unclosed tag at {:?}", &rest[open..]))?;
            let tag = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(top) if top == name => {}
                    top => return Err(format!("</{name}> closes {top:?}")),
                }
                continue;
            }
            let name = tag
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("");
            if name.is_empty() || tag.contains('<') {
                return Err(format!("bad tag <{tag}>"));
            }
            // Attribute values are quoted with `"` and may hold no raw `<`, `"` or lone `&`.
            let attrs = &tag[name.len()..];
            if !attrs.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            check_text(attrs)?;
            if !tag.ends_with('/') {
                stack.push(name);
            }
            if stack.is_empty() {
                return Err(format!("<{tag}> outside the root"));
            }
        }
        check_text(rest)?;
        match stack.is_empty() {
            true => Ok(()),
            false => Err(format!("left open: {stack:?}")),
        }
    }

    /// Every `&` starts one of the five entities XML predefines (a raw `<` already fails as a tag).
    fn check_text(text: &str) -> Result<(), String> {
        for (i, _) in text.match_indices('&') {
            let entity = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"];
            if !entity.iter().any(|e| text[i..].starts_with(e)) {
                return Err(format!("raw & in {text:?}"));
            }
        }
        Ok(())
    }

    /// The text of every `<text class="state">`, marks included.
    fn boxes(doc: &str) -> Vec<String> {
        doc.lines()
            .filter(|l| l.starts_with(r#"<text class="state""#))
            .map(strip_tags)
            .collect()
    }

    fn strip_tags(s: &str) -> String {
        let mut out = String::new();
        let mut inside = false;
        for c in s.chars() {
            match c {
                '<' => inside = true,
                '>' => inside = false,
                c if !inside => out.push(c),
                _ => {}
            }
        }
        out
    }

    /// The arrows: (x1, y1, x2, y2) of each line with an arrowhead.
    fn arrows(doc: &str) -> Vec<[i64; 4]> {
        doc.lines()
            .filter(|l| l.contains("marker-end="))
            .map(|l| {
                ["x1", "y1", "x2", "y2"].map(|a| {
                    let start = l.find(&format!(" {a}=\"")).unwrap() + a.len() + 3;
                    let len = l[start..].find('"').unwrap();
                    l[start..start + len].parse().unwrap()
                })
            })
            .collect()
    }

    #[test]
    fn four_segment_termination_figure() {
        let d = picture(false, None);
        assert!(d.starts_with("<svg"), "{d}");
        assert!(d.ends_with("</svg>\n"), "{d}");
        check_well_formed(&d).unwrap();
        assert!(d.contains(">client 127.0.0.2:40000</text>"), "{d}");
        assert!(d.contains(">server 127.0.0.1:8000</text>"), "{d}");
        let a = arrows(&d);
        assert_eq!(a.len(), 11, "{d}");
        // Each arrow falls as it crosses, from the sender's timeline to the receiver's: the
        // first (SYN) and the server's FIN (the eighth segment) go opposite ways.
        assert!(a.iter().all(|[_, y1, _, y2]| y2 > y1), "{a:?}");
        assert!(a.windows(2).all(|w| w[1][1] > w[0][3]), "{a:?}");
        assert_eq!((a[0][0], a[0][2]), (CLIENT_X, SERVER_X));
        assert_eq!((a[7][0], a[7][2]), (SERVER_X, CLIENT_X));
        for label in [
            "SYN seq=0 len=0",
            "SYN,ACK seq=0 ack=1 len=0",
            "FIN,ACK seq=12 ack=12 len=0",
            "ACK seq=12 ack=13 len=0",
            "FIN,ACK seq=12 ack=13 len=0",
            "ACK seq=13 ack=13 len=0",
        ] {
            assert!(d.contains(&format!(">{label}</text>")), "{label}\n{d}");
        }
        let b = boxes(&d);
        for state in [
            "CLOSED",
            "LISTEN",
            "SYN_SENT",
            "SYN_RECEIVED",
            "ESTABLISHED",
            "FIN_WAIT_1",
            "FIN_WAIT_2",
            "TIME_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
        ] {
            assert!(b.iter().any(|s| s == state), "{state}: {b:?}");
        }
        // Initial CLOSED and LISTEN, ten changes, final CLOSED and TIME_WAIT.
        assert_eq!(b.len(), 2 + 10 + 2, "{b:?}");
        assert_eq!(&b[..2], ["CLOSED", "LISTEN"]);
        assert_eq!(&b[b.len() - 2..], ["CLOSED", "TIME_WAIT"]);
        assert!(
            d.contains(">0.000</text>") && d.contains(">0.500</text>"),
            "{d}"
        );
        assert!(!d.contains('✓') && !d.contains('✗'), "no kernel, no marks");
        // The packet comment is the arrow's tooltip.
        assert!(
            d.contains("<title>server ESTABLISHED → FIN_WAIT_1 (sent FIN"),
            "{d}"
        );
    }

    #[test]
    fn a_textbook_picture_to_look_at() {
        let d = picture(false, None);
        std::fs::write("/tmp/teardown-ladder.svg", &d).unwrap();
    }

    #[test]
    fn three_segment_form_goes_straight_to_time_wait() {
        let d = picture(true, None);
        check_well_formed(&d).unwrap();
        assert_eq!(arrows(&d).len(), 10, "{d}");
        assert!(!d.contains("FIN_WAIT_2"), "{d}");
        let b = boxes(&d);
        assert!(b.iter().any(|s| s == "TIME_WAIT"), "{b:?}");
        assert!(b.iter().any(|s| s == "FIN_WAIT_1"), "{b:?}");
    }

    #[test]
    fn kernel_marks_and_the_red_mismatch() {
        let (packets, tracker) = packets_of(active_close(false));
        let mut notes: Vec<Vec<Note>> = vec![Vec::new(); packets.len()];
        let note = |role, from, to, verdict, text: &str| Note {
            role,
            inferred: Some((from, to)),
            verdict,
            text: text.to_string(),
        };
        notes[0].push(note(
            Role::Client,
            State::Closed,
            State::SynSent,
            Verdict::Agrees,
            "kernel agrees",
        ));
        notes[0].push(note(
            Role::Server,
            State::Listen,
            State::SynReceived,
            Verdict::Explained,
            "kernel: not traced",
        ));
        notes[7].push(note(
            Role::Server,
            State::Established,
            State::FinWait1,
            Verdict::Mismatch,
            "MISMATCH: the kernel traced server ESTABLISHED → CLOSE <&>",
        ));
        let d = render(&packets, &tracker.connections()[0], Some(&notes));
        check_well_formed(&d).unwrap();
        let b = boxes(&d);
        assert!(b.contains(&"SYN_SENT ✓".to_string()), "{b:?}");
        assert!(b.contains(&"SYN_RECEIVED ○".to_string()), "{b:?}");
        assert!(b.contains(&"FIN_WAIT_1 ✗".to_string()), "{b:?}");
        assert!(
            d.contains(&format!(r#" <tspan fill="{RED}">✗</tspan>"#)),
            "{d}"
        );
        // The box itself is outlined in red, and the kernel's words are beside the arrow.
        assert!(d.contains(&format!(r#"stroke="{RED}"/>"#)), "{d}");
        assert!(
            d.contains("MISMATCH: the kernel traced server ESTABLISHED → CLOSE &lt;&amp;&gt;"),
            "{d}"
        );
        assert!(d.contains("the kernel says otherwise"), "the legend: {d}");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"a<b & "c" 'd' > e→"#),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos; &gt; e→"
        );
        assert_eq!(escape("bell\u{7}"), "bell\u{FFFD}");
        let (mut packets, tracker) = packets_of(active_close(false));
        packets[3].comment = "data <b>&nbsp;</b> \"x\" 'y'".to_string();
        let d = render(&packets, &tracker.connections()[0], None);
        check_well_formed(&d).unwrap();
        assert!(
            d.contains(
                "<title>data &lt;b&gt;&amp;nbsp;&lt;/b&gt; &quot;x&quot; &apos;y&apos;</title>"
            ),
            "{d}"
        );
        assert!(check_well_formed("<svg><text>a < b</text></svg>").is_err());
        assert!(check_well_formed("<svg><text>a & b</text></svg>").is_err());
        assert!(check_well_formed("<svg><g></svg>").is_err());
    }

    #[test]
    fn unexpected_segments_get_a_red_note() {
        let mut segs = active_close(false);
        // A data segment from the server after its FIN, as in annotate's test.
        let mut late = segs[5].clone();
        late.seq = late.seq + 12;
        segs.insert(9, late);
        let (packets, tracker) = packets_of(segs);
        let d = render(&packets, &tracker.connections()[0], None);
        check_well_formed(&d).unwrap();
        assert_eq!(arrows(&d).len(), 12);
        let note = d
            .lines()
            .find(|l| l.contains("! server in FIN_WAIT_2"))
            .unwrap_or_else(|| panic!("{d}"));
        assert!(note.contains(&format!(r#"fill="{RED}""#)), "{note}");
    }

    #[test]
    fn joined_mid_way_starts_from_the_guessed_states() {
        let (packets, tracker) = packets_of(active_close(false)[5..].to_vec());
        let d = render(&packets, &tracker.connections()[0], None);
        check_well_formed(&d).unwrap();
        let b = boxes(&d);
        assert_eq!(&b[..2], ["ESTABLISHED", "ESTABLISHED"], "{b:?}");
        assert!(d.contains("joined mid-way"), "{d}");
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let (packets, tracker) = packets_of(active_close(false));
        let conn = &tracker.connections()[0];
        // No packets at all, and only another connection's.
        for d in [render(&[], conn, None), render(&[], conn, Some(&[]))] {
            check_well_formed(&d).unwrap();
            assert!(arrows(&d).is_empty());
            assert_eq!(boxes(&d), ["CLOSED", "TIME_WAIT", "CLOSED", "TIME_WAIT"]);
        }
        let mut other = packets.clone();
        for p in &mut other {
            if let Some(e) = &mut p.event {
                e.conn = 7;
            }
        }
        assert!(arrows(&render(&other, conn, None)).is_empty());
        // Non-TCP packets among the segments, kernel notes shorter than the packets.
        let mut mixed = packets.clone();
        mixed.insert(
            2,
            Packet {
                frame: Frame {
                    ts: Duration::ZERO,
                    data: vec![1, 2, 3],
                    orig_len: 3,
                },
                decoded: Err(DecodeError::NotTcp("UDP <&>".to_string())),
                event: None,
                comment: "not TCP: UDP <&>".to_string(),
                kernel: Vec::new(),
            },
        );
        let d = render(&mixed, conn, Some(&[Vec::new()]));
        check_well_formed(&d).unwrap();
        assert_eq!(arrows(&d).len(), 11);
        // Huge numbers: every flag, the largest relative seq and ack, a far-off time.
        // (len stops 2 short of u32::MAX: the state machine adds SYN and FIN to it.)
        let all = crate::tcp::Flags(0xff);
        let huge = vec![
            seg(true, all, 0, 0, 0),
            seg(false, all, 1, 0, 0),
            seg(true, all, u32::MAX, 0, u32::MAX - 2),
        ];
        let (mut packets, tracker) = packets_of(huge);
        packets[2].frame.ts = Duration::MAX;
        let d = render(&packets, &tracker.connections()[0], None);
        check_well_formed(&d).unwrap();
        assert_eq!(arrows(&d).len(), 3);
        let size_of = |needle: &str| -> f64 {
            let line = d.lines().find(|l| l.contains(needle)).unwrap();
            let start = line.find(r#"font-size=""#).unwrap() + 11;
            let len = line[start..].find('"').unwrap();
            line[start..start + len].parse().unwrap()
        };
        let label = "seq=4294967295 ack=4294967295 len=4294967293";
        assert!(size_of(label) < FONT, "a long label in smaller type: {d}");
        assert!(size_of(">18446744073709551616000.000<") < SMALL_FONT, "{d}");
        // Deterministic: the same input, the same bytes.
        assert_eq!(d, render(&packets, &tracker.connections()[0], None));
    }
}
