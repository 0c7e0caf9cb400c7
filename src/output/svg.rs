//! The ladder diagram as an SVG picture: the figure a TCP textbook draws for connection
//! termination. Two timelines (client left, server right), time running down, one slanted
//! arrow per segment labelled as in the terminal ladder, and a box with the new state where
//! an endpoint's state changes. A standalone document: no fonts, scripts or styles from outside.

use std::fmt::Write as _;

use super::figure::{self, Heading, Key, Line, Panel};
use crate::annotate::Packet;
use crate::evidence::{Note, Verdict};
use crate::kernel::tracefs::KernelEvent;
use crate::tcp::State;
use crate::tracker::{Connection, Role};

const WIDTH: i64 = 920;
/// Vertical distance between two consecutive moments (a send, an arrival, a change).
const STEP: i64 = 22;
/// The right edge of the time column: room for "3600000.000" (an hour) at 11 px.
const TIME_X: i64 = 78;
const CLIENT_X: i64 = 260;
const SERVER_X: i64 = 740;
const BOX_W: i64 = 124;
/// Two moments of one side are STEP = 22 apart, more than BOX_H: boxes never overlap.
const BOX_H: i64 = 18;
/// Space between a timeline and its boxes, so a box never touches an arrow.
const BOX_GAP: i64 = 8;
/// TIME_WAIT's bracket: outside the boxes.
const BRACKET_GAP: i64 = 12;
/// The advance of a monospace glyph, in em: what the widths of texts are estimated from.
const ADVANCE: f64 = 0.6;
/// Font sizes: labels, headings and state names; times, notes and the legend.
const FONT: f64 = 12.0;
const SMALL_FONT: f64 = 11.0;
const TITLE_FONT: f64 = 16.0;
/// The widest a label may be between the timelines, clear of both arrow ends.
const LABEL_MAX: f64 = (SERVER_X - CLIENT_X - 40) as f64;
const RED: &str = "#c62828";
const GREEN: &str = "#2e7d32";
const GREY: &str = "#666666";
const AMBER: &str = "#a15c00";
const BLUE: &str = "#1f4e9c";

/// The ladder of connection `conn` among `packets` as a standalone SVG document.
/// `kernel`: optional per-packet notes (indexed like `packets`) from the kernel check; when given,
/// each state box gets a small mark: ✓ (Verdict::Agrees), ○ (Explained), ✗ in red (Mismatch).
pub fn render(packets: &[Packet], conn: &Connection, kernel: Option<&[Vec<Note>]>) -> String {
    let heading = Heading {
        title: format!("teardown: client {}, server {}", conn.client, conn.server),
        ..Heading::default()
    };
    render_page(packets, &[conn], kernel, &[], &[], &heading)
}

/// Every connection of `conns` in one picture, with its title, lesson and verdict: one ladder
/// per 4-tuple, alike ones folded. `trace`: the kernel's events (each end's own times);
/// `extra`: the run's notes with no packet (the packet filter's drops nothing answered).
pub fn render_page(
    packets: &[Packet],
    conns: &[&Connection],
    kernel: Option<&[Vec<Note>]>,
    trace: &[KernelEvent],
    extra: &[String],
    heading: &Heading,
) -> String {
    let panels = figure::panels(packets, conns, kernel, trace, extra);
    let mut body = String::new();
    let mut y = 0;
    // The title, and the lesson wrapped under it.
    let title = shorten(&heading.title, (WIDTH - 40) as f64, TITLE_FONT);
    let _ = writeln!(
        body,
        r#"<text class="title" x="20" y="26" font-size="16" font-weight="bold">{}</text>"#,
        escape(&title)
    );
    y += 30;
    if let Some(lesson) = &heading.lesson {
        let room = ((WIDTH - 40) as f64 / (ADVANCE * FONT)) as usize;
        for line in crate::output::style::wrap_words(lesson, room, 0) {
            y += 16;
            let _ = writeln!(
                body,
                r#"<text class="lesson" x="20" y="{y}">{}</text>"#,
                escape(&line)
            );
        }
    }
    y += 12;
    let several = panels.len() > 1;
    for panel in &panels {
        y = draw_panel(&mut body, panel, y, several);
    }
    // The legend of the kernel's marks, as under the terminal ladder; one text per item, as
    // SVG collapses the spaces that would separate them.
    if kernel.is_some() {
        y += 20;
        let legend = [
            (GREEN, "✓", "the kernel traced the same change"),
            (GREY, "○", "Linux does not trace this one"),
            (RED, "✗", "the kernel says otherwise"),
        ];
        let mut x = CLIENT_X - BOX_GAP - BOX_W;
        for (color, mark, text) in legend {
            let _ = writeln!(
                body,
                r#"<text x="{x}" y="{y}" font-size="11" fill="{GREY}"><tspan fill="{color}">{mark}</tspan> {text}</text>"#,
            );
            x += (text.chars().count() as f64 * ADVANCE * SMALL_FONT) as i64 + 48;
        }
    }
    // Where the kernel's clock placed the changes, the rows are not the capture's times the
    // terminal ladder shows: say which clock the picture keeps.
    if !trace.is_empty() {
        y += 18;
        let _ = writeln!(
            body,
            r#"<text class="clock" x="{}" y="{y}" font-size="11" fill="{GREY}">times: each end's changes when the kernel traced them, not always the packets' own</text>"#,
            CLIENT_X - BOX_GAP - BOX_W
        );
    }
    if let Some(verdict) = &heading.verdict {
        y += 28;
        let text = shorten(&format!("verdict: {verdict}"), (WIDTH - 40) as f64, FONT);
        let color = if verdict == "reproduced" { GREEN } else { RED };
        let _ = writeln!(
            body,
            r#"<text class="verdict" x="20" y="{y}" font-weight="bold" fill="{color}">{}</text>"#,
            escape(&text)
        );
    }
    let height = y.saturating_add(24);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(&heading.title));
    // The arrowheads: their tips lie on the end of the line, the receiver's timeline.
    for (id, color) in [("head", "#000000"), ("rst", RED)] {
        let _ = writeln!(
            out,
            "<defs><marker id=\"{id}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
             markerWidth=\"10\" markerHeight=\"8\" markerUnits=\"userSpaceOnUse\" \
             orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{color}\"/></marker></defs>",
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

/// One ladder from `top`; returns where the next may start.
fn draw_panel(out: &mut String, panel: &Panel, top: i64, several: bool) -> i64 {
    let mut y = top;
    let caption = match (&panel.caption, several) {
        (Some(c), _) => Some(c.clone()),
        (None, _) if several || panel.conns.len() > 1 => Some(format!(
            "connection{} #{}",
            if panel.conns.len() > 1 { "s" } else { "" },
            panel
                .conns
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", #")
        )),
        (None, _) => None,
    };
    if let Some(c) = caption {
        y += 18;
        let text = shorten(&c, (WIDTH - 40) as f64, FONT);
        let _ = writeln!(
            out,
            r#"<text class="caption" x="20" y="{y}" font-weight="bold" fill="{BLUE}">{}</text>"#,
            escape(&text)
        );
    }
    let head_y = y + 24;
    let timeline_top = head_y + 10;
    let initial_y = head_y + 34;
    let first_y = initial_y + 40;
    let keys = panel.keys();
    let y_of = |k: &Key| -> i64 {
        let rank = keys.partition_point(|x| x.cmp(k).is_lt());
        first_y.saturating_add(i64::try_from(rank).unwrap_or(i64::MAX).saturating_mul(STEP))
    };
    let last_y = match keys.len() {
        0 => first_y - STEP,
        n => first_y.saturating_add(i64::try_from(n - 1).unwrap_or(0).saturating_mul(STEP)),
    };
    let final_y = last_y.saturating_add(40);

    // Headings: the time column and each side's role and address above its timeline.
    let _ = writeln!(
        out,
        r#"<text x="{TIME_X}" y="{head_y}" text-anchor="end" font-size="11" fill="{GREY}">time ms</text>"#
    );
    let half = (WIDTH / 2) as f64;
    for (role, center, lo, hi) in [
        (Role::Client, CLIENT_X, TIME_X as f64 + 8.0, half - 8.0),
        (Role::Server, SERVER_X, half + 8.0, WIDTH as f64 - 4.0),
    ] {
        let addr = match role {
            Role::Client => panel.client,
            Role::Server => panel.server,
        };
        let text = format!("{role} {addr}");
        let (x, size) = place(&text, center as f64, lo, hi, FONT);
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{head_y}" text-anchor="middle" font-weight="bold"{}>{}</text>"#,
            size_attr(size),
            escape(&text)
        );
    }
    for x in [CLIENT_X, SERVER_X] {
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{timeline_top}" x2="{x}" y2="{}" stroke="#000000" stroke-width="2"/>"##,
            final_y.saturating_add(BOX_H)
        );
    }
    for role in [Role::Client, Role::Server] {
        state_box(
            out,
            role,
            initial_y,
            panel.initial[role.index()],
            None,
            false,
        );
    }
    if panel.joined_mid {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="11" fill="{GREY}">joined mid-way: the states before the first segment are a guess</text>"#,
            (CLIENT_X + SERVER_X) / 2,
            initial_y + 4
        );
    }
    for s in &panel.starts {
        let sy = y_of(&s.key);
        let _ = writeln!(
            out,
            r##"<line class="start" x1="{}" y1="{sy}" x2="{}" y2="{sy}" stroke="{GREY}" stroke-dasharray="2 3"/>"##,
            TIME_X + 8,
            WIDTH - 8
        );
        let text = format!(
            "{} (client {}, server {})",
            s.text, s.initial[0], s.initial[1]
        );
        let size = font_size(&text, (WIDTH - CLIENT_X - 16) as f64, SMALL_FONT);
        let _ = writeln!(
            out,
            r#"<text class="start" x="{}" y="{}"{} fill="{BLUE}">{}</text>"#,
            CLIENT_X + 8,
            sy - 4,
            size_attr(size),
            escape(&text)
        );
    }
    for b in &panel.brackets {
        bracket(out, b, &y_of, final_y);
    }
    let ys: Vec<(Role, i64, i64)> = panel
        .arrows
        .iter()
        .map(|a| (a.from, y_of(&a.sent), y_of(&a.arrives)))
        .collect();
    for (n, a) in panel.arrows.iter().enumerate() {
        let (from, y1, y2) = ys[n];
        // Crossing arrows (the FINs of a simultaneous close) keep their labels apart.
        let crossing = ys
            .iter()
            .any(|&(f, b1, b2)| f != from && (y1 < b2) != (y2 < b1));
        // Several segments leaving one end at once (an ACK, data and a FIN within 0.1 ms)
        // run side by side, a row apart: their labels keep apart in the middle.
        let fan = ys
            .iter()
            .enumerate()
            .any(|(k, &(f, b1, _))| k != n && f == from && (b1 - y1).abs() <= STEP);
        arrow(out, a, y1, y2, crossing, fan);
    }
    for f in &panel.folds {
        let _ = writeln!(
            out,
            r#"<text class="fold" x="{}" y="{}" text-anchor="middle" font-style="italic" fill="{GREY}">{}</text>"#,
            (CLIENT_X + SERVER_X) / 2,
            y_of(&f.key) + 4,
            escape(&f.text)
        );
    }
    for m in &panel.marks {
        state_box(out, m.role, y_of(&m.key), m.state, m.verdict, false);
    }
    // The final states, as the terminal ladder's last line.
    let _ = writeln!(
        out,
        r#"<text x="{TIME_X}" y="{}" text-anchor="end" font-size="11" fill="{GREY}">final</text>"#,
        final_y + 4
    );
    for role in [Role::Client, Role::Server] {
        state_box(
            out,
            role,
            final_y,
            panel.final_states[role.index()],
            None,
            true,
        );
        let ending = &panel.finals[role.index()];
        if *ending != panel.final_states[role.index()].to_string() {
            let x = timeline_x(role);
            let _ = writeln!(
                out,
                r#"<text x="{x}" y="{}" text-anchor="middle" font-size="11" fill="{GREY}">{}</text>"#,
                final_y + BOX_H + 12,
                escape(&shorten(ending, (WIDTH / 2 - 20) as f64, SMALL_FONT))
            );
        }
    }
    final_y + BOX_H + 24
}

fn timeline_x(role: Role) -> i64 {
    match role {
        Role::Client => CLIENT_X,
        Role::Server => SERVER_X,
    }
}

/// One segment: time, arrow with its label and tag, the red notes. Grouped with the packet's
/// comment as its tooltip, as Wireshark shows it. A lost one stops half-way with ✕.
fn arrow(out: &mut String, a: &figure::Arrow, y1: i64, y2: i64, crossing: bool, fan: bool) {
    let (x1, x2) = (timeline_x(a.from), timeline_x(a.from.other()));
    let class = match a.line {
        Line::Solid if a.rst => "rst",
        Line::Solid if a.resent => "again",
        Line::Solid => "segment",
        Line::Lost => "lost",
        Line::Inferred => "inferred",
    };
    let _ = write!(out, r#"<g class="{class}">"#);
    if !a.comment.is_empty() {
        let _ = write!(out, "<title>{}</title>", escape(&a.comment));
    }
    out.push('\n');
    let time = format!("{:.3}", a.sent.ms);
    let _ = writeln!(
        out,
        r#"<text x="{TIME_X}" y="{}" text-anchor="end"{}>{}</text>"#,
        y1 + 4,
        size_attr(font_size(&time, TIME_X as f64 - 4.0, SMALL_FONT)),
        escape(&time)
    );
    let (dx, dy) = ((x2 - x1) as f64, (y2 - y1) as f64);
    let halfway = a.line != Line::Solid;
    let (ex, ey) = if halfway {
        (x1 as f64 + dx / 2.0, y1 as f64 + dy / 2.0)
    } else {
        (x2 as f64, y2 as f64)
    };
    let (stroke, width, marker) = match (a.line, a.rst) {
        (Line::Solid, true) => (RED, "2.5", r#" marker-end="url(#rst)""#),
        (Line::Solid, false) => ("#000000", "1.5", r#" marker-end="url(#head)""#),
        (Line::Lost, _) => (RED, "1.5", ""),
        (Line::Inferred, _) => (GREY, "1.5", r#" stroke-dasharray="6 4""#),
    };
    let _ = writeln!(
        out,
        r#"<line x1="{x1}" y1="{y1}" x2="{ex:.1}" y2="{ey:.1}" stroke="{stroke}" stroke-width="{width}"{marker}/>"#
    );
    if halfway {
        let color = if a.line == Line::Lost { RED } else { GREY };
        let _ = writeln!(
            out,
            r#"<text class="cross" x="{ex:.1}" y="{:.1}" text-anchor="middle" font-size="16" fill="{color}">✕</text>"#,
            ey + 5.0
        );
    }
    // The label lies along the arrow, read left to right whichever way the segment goes; on a
    // steep arrow (crossing FINs) nearer its sender, so two crossing labels do not meet.
    let steep = crossing || dy > (2 * STEP) as f64;
    let at = if halfway {
        0.25
    } else if crossing || (steep && !fan) {
        0.18
    } else {
        0.5
    };
    let slope = dy.atan2(dx.abs()).to_degrees();
    let angle = if a.from == Role::Client {
        slope
    } else {
        -slope
    };
    let room = if halfway {
        LABEL_MAX * 0.5
    } else if steep {
        LABEL_MAX * 0.45
    } else {
        LABEL_MAX
    };
    let size = font_size(&a.label, room, FONT);
    // The label stays between the two time lines: near its sender it would run over the
    // sender's line and the state box beside it.
    let half = a.label.chars().count() as f64 * ADVANCE * size / 2.0;
    let (lo, hi) = (
        x1.min(x2) as f64 + half + 2.0,
        x1.max(x2) as f64 - half - 2.0,
    );
    let mx = (x1 as f64 + dx * at).clamp(lo, hi.max(lo));
    let my = y1 as f64 + dy * ((mx - x1 as f64) / dx);
    let _ = writeln!(
        out,
        r#"<text class="label" x="{mx:.1}" y="{:.1}" text-anchor="middle"{} transform="rotate({angle:.2} {mx:.1} {my:.1})">{}</text>"#,
        my - 6.0,
        size_attr(size),
        escape(&a.label)
    );
    let mut below = my + 14.0;
    if let Some(tag) = &a.tag {
        let color = match (a.line, a.rst) {
            (Line::Lost, _) | (_, true) => RED,
            (Line::Inferred, _) => GREY,
            _ => AMBER,
        };
        let text = shorten(tag, room, SMALL_FONT);
        let _ = writeln!(
            out,
            r#"<text class="tag" x="{mx:.1}" y="{below:.1}" text-anchor="middle" font-size="11" fill="{color}" transform="rotate({angle:.2} {mx:.1} {my:.1})">{}</text>"#,
            escape(&text)
        );
        below += 12.0;
    }
    if !a.notes.is_empty() {
        let text = shorten(&a.notes.join("; "), room, SMALL_FONT);
        let _ = writeln!(
            out,
            r#"<text x="{mx:.1}" y="{below:.1}" text-anchor="middle" font-size="11" fill="{RED}" transform="rotate({angle:.2} {mx:.1} {my:.1})">{}</text>"#,
            escape(&text)
        );
    }
    out.push_str("</g>\n");
}

/// TIME_WAIT's 2×MSL: a bracket outside `b.role`'s boxes, a tick where a FIN started it again.
fn bracket(out: &mut String, b: &figure::Bracket, y_of: &dyn Fn(&Key) -> i64, final_y: i64) {
    let (x, tick, text_x) = match b.role {
        Role::Client => {
            let x = CLIENT_X - BOX_GAP - BOX_W - BRACKET_GAP;
            (x, x + 6, x - 4)
        }
        Role::Server => {
            let x = SERVER_X + BOX_GAP + BOX_W + BRACKET_GAP;
            (x, x - 6, x + 4)
        }
    };
    let y1 = y_of(&b.start);
    let y2 = b.end.as_ref().map_or(final_y + BOX_H, y_of);
    let _ = writeln!(
        out,
        r#"<path class="timewait" d="M{tick},{y1} L{x},{y1} L{x},{y2} L{tick},{y2}" fill="none" stroke="{BLUE}" stroke-width="1.5"/>"#
    );
    // Vertical text along the bracket, in its longest stretch between restarts: 2×MSL,
    // Linux's TCP_TIMEWAIT_LEN.
    let mut cuts: Vec<i64> = std::iter::once(y1)
        .chain(b.restarts.iter().map(y_of))
        .chain([y2])
        .collect();
    cuts.sort_unstable();
    let (lo, hi) = cuts
        .windows(2)
        .map(|w| (w[0], w[1]))
        .max_by_key(|(a, b)| b - a)
        .unwrap_or((y1, y2));
    let mid = (lo + hi) / 2;
    let rot = if b.role == Role::Client { -90 } else { 90 };
    let label = match hi - lo {
        n if n > 170 => "TIME_WAIT 2×MSL = 60 s",
        n if n > 95 => "2×MSL = 60 s",
        _ => "2×MSL",
    };
    let _ = writeln!(
        out,
        r#"<text class="timewait" x="{text_x}" y="{mid}" text-anchor="middle" font-size="11" fill="{BLUE}" transform="rotate({rot} {text_x} {mid})">{label}</text>"#
    );
    // A FIN that reaches TIME_WAIT starts its timer again (RFC 9293 §3.10.7.4).
    for r in &b.restarts {
        let ry = y_of(r);
        let _ = writeln!(
            out,
            r#"<path class="restart" d="M{tick},{ry} L{},{ry}" stroke="{BLUE}" stroke-width="2"><title>a FIN reached TIME_WAIT: its 2×MSL starts again</title></path>"#,
            2 * x - tick
        );
    }
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
        r#"<text class="state" x="{}" y="{}" text-anchor="middle" data-role="{role}">{}{mark}</text>"#,
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
pub(crate) mod tests {
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
                    l[start..start + len].parse::<f64>().unwrap().round() as i64
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

    /// A transfer of 3,000 data segments, then the close.
    pub(crate) fn bulk() -> Vec<Segment> {
        use crate::tcp::Flags;
        let (a, pa, fa) = (
            Flags::ACK,
            Flags(Flags::PSH.0 | Flags::ACK.0),
            Flags(Flags::FIN.0 | Flags::ACK.0),
        );
        let mut segs = vec![
            seg(true, Flags::SYN, 100, 0, 0),
            seg(false, Flags::SYN | a, 900, 101, 0),
            seg(true, a, 101, 901, 0),
        ];
        for k in 0..3000 {
            segs.push(seg(true, pa, 101 + k, 901, 1));
        }
        segs.push(seg(false, a, 901, 3101, 0));
        segs.push(seg(false, fa, 901, 3101, 0));
        segs.push(seg(true, a, 3101, 902, 0));
        segs.push(seg(true, fa, 3101, 902, 0));
        segs.push(seg(false, a, 902, 3102, 0));
        segs
    }

    fn height(doc: &str) -> i64 {
        let start = doc.find(r#"height=""#).unwrap() + 8;
        let len = doc[start..].find('"').unwrap();
        doc[start..start + len].parse().unwrap()
    }

    #[test]
    fn bulk_data_folds_into_one_line() {
        let (packets, tracker) = packets_of(bulk());
        let d = render(&packets, &tracker.connections()[0], None);
        check_well_formed(&d).unwrap();
        // The first data segment and the server's ACK stay; the 2,999 between are one line.
        assert!(
            d.contains(r##"font-style="italic" fill="#666666">… 2,999 data segments …</text>"##),
            "{}",
            &d[..d.len().min(4000)]
        );
        assert_eq!(arrows(&d).len(), 3 + 2 + 4, "{}", &d[..d.len().min(4000)]);
        assert!(height(&d) < 1200, "{} px tall", height(&d));
        let b = boxes(&d);
        assert_eq!(&b[b.len() - 2..], ["CLOSED", "TIME_WAIT"], "{b:?}");
    }

    /// Where a text reaches, estimated as the drawing does: (left, right) in px.
    fn extents(doc: &str) -> Vec<(f64, f64, String)> {
        let attr = |l: &str, a: &str| -> Option<String> {
            let start = l.find(&format!(" {a}=\""))? + a.len() + 3;
            let len = l[start..].find('"')?;
            Some(l[start..start + len].to_string())
        };
        doc.lines()
            .filter(|l| l.starts_with("<text") && !l.contains("rotate("))
            .map(|l| {
                let x: f64 = attr(l, "x").unwrap().parse().unwrap();
                let size: f64 = attr(l, "font-size").map_or(FONT, |s| s.parse().unwrap());
                let text = strip_tags(l);
                let w = text.chars().count() as f64 * ADVANCE * size;
                let (lo, hi) = match attr(l, "text-anchor").as_deref() {
                    Some("middle") => (x - w / 2.0, x + w / 2.0),
                    Some("end") => (x - w, x),
                    _ => (x, x + w),
                };
                (lo, hi, text)
            })
            .collect()
    }

    #[test]
    fn long_ipv6_addresses_fit_in_the_picture() {
        let client: std::net::SocketAddr = "[2001:db8:1234:5678:9abc:def0:1234:5678]:40000"
            .parse()
            .unwrap();
        let server: std::net::SocketAddr = "[2001:db8:ffff:eeee:dddd:cccc:bbbb:aaaa]:8000"
            .parse()
            .unwrap();
        let segs = active_close(false)
            .into_iter()
            .map(|mut s| {
                let from_client = s.src.port() == 40000;
                (s.src, s.dst) = if from_client {
                    (client, server)
                } else {
                    (server, client)
                };
                s
            })
            .collect();
        let (packets, tracker) = packets_of(segs);
        let conn = &tracker.connections()[0];
        let heading = Heading {
            title: format!("teardown: client {}, server {}", conn.client, conn.server),
            lesson: Some("a lesson ".repeat(30)),
            verdict: Some("the kernel did something else: ".repeat(6)),
        };
        let d = render_page(&packets, &[conn], None, &[], &[], &heading);
        check_well_formed(&d).unwrap();
        let texts = extents(&d);
        assert!(
            texts.iter().any(|(_, _, t)| t.contains("2001:db8:1234")),
            "{d}"
        );
        for (lo, hi, text) in &texts {
            assert!(
                *lo >= 0.0 && *hi <= WIDTH as f64,
                "{text:?} reaches {lo:.0}..{hi:.0}, outside 0..{WIDTH}"
            );
        }
        // The two headings do not meet in the middle.
        let heads: Vec<_> = texts.iter().filter(|(_, _, t)| t.contains("]:")).collect();
        let client_head = heads
            .iter()
            .find(|(_, _, t)| t.starts_with("client"))
            .unwrap();
        let server_head = heads
            .iter()
            .find(|(_, _, t)| t.starts_with("server"))
            .unwrap();
        assert!(client_head.1 < server_head.0, "{heads:?}");
    }

    #[test]
    fn the_page_has_title_lesson_and_verdict() {
        let (packets, tracker) = packets_of(active_close(false));
        let conn = &tracker.connections()[0];
        let heading = Heading {
            title: "teardown run active-close".into(),
            lesson: Some("the side that closes first keeps TIME_WAIT".into()),
            verdict: Some("reproduced".into()),
        };
        let d = render_page(&packets, &[conn], None, &[], &[], &heading);
        check_well_formed(&d).unwrap();
        let title = d.find(">teardown run active-close</text>").unwrap();
        let lesson = d.find(r#"class="lesson""#).unwrap_or_else(|| panic!("{d}"));
        let first_arrow = d.find("marker-end=").unwrap();
        let verdict = d.find(">verdict: reproduced</text>").unwrap();
        assert!(title < lesson && lesson < first_arrow && first_arrow < verdict);
        assert!(
            d.contains("<title>teardown run active-close</title>"),
            "{d}"
        );
    }
}
