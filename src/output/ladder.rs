//! The ladder diagram: the textbook termination figure drawn in the terminal, one line per
//! segment, client on the left, server on the right, each side's state where it changes.

use std::fmt::Write as _;

use crate::annotate::Packet;
use crate::kernel::agree::{Note, Verdict};
use crate::tracker::{Connection, Role};

const TIME_W: usize = 9;
const SIDE_W: usize = 28;
const ARROW_W: usize = 40;

/// The diagram of connection `conn` among `packets`.
pub fn render(packets: &[Packet], conn: &Connection) -> String {
    render_checked(packets, conn, None, false)
}

/// The diagram with the kernel's verdict beside each change (✓ agrees, ○ not traced by
/// Linux for a documented reason, ✗ MISMATCH), MISMATCH in red when `color`.
pub fn render_checked(
    packets: &[Packet],
    conn: &Connection,
    kernel: Option<&[Vec<Note>]>,
    color: bool,
) -> String {
    let mut out = String::new();
    let client = format!("client {}", conn.client);
    let _ = writeln!(
        out,
        "{:>TIME_W$}  {client:<w$}server {}",
        "time ms",
        conn.server,
        w = SIDE_W + ARROW_W + 2,
    );
    let first = packets.iter().find_map(|p| match &p.event {
        Some(e) if e.conn == conn.id => Some(p.frame.ts),
        _ => None,
    });
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
        let label = label(seg, event);
        let notes: &[Note] = kernel.and_then(|k| k.get(index)).map_or(&[], |n| n);
        let change = |role: Role| {
            let Some(t) = event.transition(role) else {
                return String::new();
            };
            let mark = notes
                .iter()
                .find(|n| n.role == role && n.inferred == Some((t.from, t.to)))
                .map(|n| match n.verdict {
                    Verdict::Agrees => " ✓",
                    Verdict::Explained => " ○",
                    Verdict::Mismatch => " ✗",
                    Verdict::Info => "",
                })
                .unwrap_or("");
            format!("{} → {}{mark}", t.from, t.to)
        };
        let _ = write!(
            out,
            "{ms:>TIME_W$.3}  {:<SIDE_W$}  {}  {}",
            change(Role::Client),
            arrow(&label, event.from == Role::Client),
            change(Role::Server),
        );
        for (role, u) in &event.unexpected {
            let _ = write!(out, "  ! {role} in {}: {}", u.state, u.why);
        }
        for note in notes.iter().filter(|n| n.verdict == Verdict::Mismatch) {
            let text = format!("  {}", note.text);
            let _ = write!(out, "{}", if color { red(&text) } else { text });
        }
        trim_end(&mut out);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{:>TIME_W$}  {:<SIDE_W$}  {:ARROW_W$}  {}",
        "final",
        conn.state(Role::Client).to_string(),
        "",
        conn.state(Role::Server)
    );
    trim_lines(out)
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

fn red(s: &str) -> String {
    format!("\x1b[31m{s}\x1b[0m")
}

/// `── SYN seq=0 len=0 ─────▶` or `◀── FIN,ACK ... ────`, ARROW_W characters wide.
fn arrow(label: &str, rightwards: bool) -> String {
    let body = format!("── {label} ");
    let fill = ARROW_W.saturating_sub(body.chars().count() + 1);
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

    #[test]
    fn three_segment_form_goes_straight_to_time_wait() {
        let d = diagram(true);
        assert!(d.contains("FIN_WAIT_1 → TIME_WAIT"), "{d}");
        assert!(!d.contains("FIN_WAIT_2"), "{d}");
    }
}
