use super::*;
use crate::decode::Segment;
use crate::tracker::tests::{CLIENT, SERVER, active_close};

const T0: u64 = 1_000_000_000; // µs

/// The four-segment close, one segment every 100 µs.
fn packets(merged: bool) -> (Vec<Packet>, Connection) {
    timed(active_close(merged), |i| {
        Duration::from_micros(T0 + 100 * i as u64)
    })
}

/// Packets of `segs` at the times `at(i)`, as a capture would give them, and their connection.
fn timed(segs: Vec<Segment>, at: impl Fn(usize) -> Duration) -> (Vec<Packet>, Connection) {
    let (packets, tracker) = crate::annotate::tests::captured(segs, at);
    (packets, tracker.connections()[0].clone())
}

fn ev(us: i64, local: &str, remote: &str, old: State, new: State) -> KernelEvent {
    KernelEvent {
        at: Duration::from_micros((T0 as i64 + us) as u64),
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        kind: EventKind::SetState { old, new },
    }
}

/// What this kernel traced for the four-segment close (the times shifted onto the fixture).
fn kernel_trace() -> Vec<KernelEvent> {
    use State::*;
    let (c, s) = (CLIENT, SERVER);
    vec![
        ev(-50, s, "0.0.0.0:0", Closed, Listen),
        ev(-10, c, s, Closed, SynSent),
        ev(105, c, s, SynSent, Established),
        ev(205, s, c, Listen, SynReceived),
        ev(206, s, c, SynReceived, Established),
        ev(690, s, c, Established, FinWait1),
        ev(705, c, s, Established, CloseWait),
        ev(695, s, "0.0.0.0:0", Listen, Closed),
        // Orphaned: at the ACK of its FIN the server's socket moves to the time-wait table.
        ev(805, s, c, FinWait1, FinWait2),
        ev(806, s, c, FinWait2, Closed),
        ev(890, c, s, CloseWait, LastAck),
        ev(1005, c, s, LastAck, Closed),
    ]
}

fn table(server_state: u8) -> Vec<KernelSocket> {
    let text = format!(
        "header\n   0: 0100007F:1F40 0200007F:9C40 {server_state:02X} 00000000:00000000 03:0000175D 00000000     0        0 0 3 0000000000000000"
    );
    super::super::parse_proc_net_tcp(&text)
}

fn verdicts(a: &Agreement, packet: usize) -> Vec<(Role, Verdict)> {
    a.per_packet[packet]
        .iter()
        .map(|n| (n.role, n.verdict))
        .collect()
}

#[test]
fn the_kernel_agrees_with_the_four_segment_close() {
    let (packets, conn) = packets(false);
    let a = agree(&packets, &conn, &kernel_trace(), Some(&table(6)));
    assert!(a.ok(), "{a:#?}");
    assert_eq!(
        (a.seen, a.matched, a.mismatched, a.explained, a.unplaced),
        (10, 10, 0, 2, 0)
    );
    use Role::*;
    use Verdict::*;
    assert_eq!(verdicts(&a, 0), [(Client, Agrees), (Server, Explained)]);
    assert_eq!(verdicts(&a, 7), [(Server, Agrees), (Client, Agrees)]);
    assert_eq!(a.per_packet[7][0].text, "kernel agrees");
    assert_eq!(
        a.per_packet[2][0].text,
        "kernel agrees: LISTEN → SYN_RECV → ESTABLISHED, the connection's socket is created \
         when the handshake's ACK arrives"
    );
    assert_eq!(
        a.per_packet[8][0].text,
        "kernel agrees: FIN_WAIT1 → FIN_WAIT2 → CLOSE, then it lives on in the kernel's \
         time-wait table as FIN_WAIT_2"
    );
    // The server's FIN_WAIT_2 → TIME_WAIT happens inside the time-wait table: untraced.
    assert_eq!(verdicts(&a, 9), [(Client, Agrees), (Server, Explained)]);
    // The table is read after the capture: its word is in the section, not on the packet.
    assert!(
        a.per_packet[9][1]
            .text
            .ends_with("moves to TIME_WAIT without a tracepoint"),
        "{a:#?}"
    );
    assert_eq!(
        a.section,
        [
            (
                Agrees,
                "socket table: client no socket (CLOSED): agrees".to_string()
            ),
            (
                Agrees,
                "socket table: server TIME_WAIT (timewait, 59.81 s left): agrees".to_string()
            )
        ]
    );
    assert_eq!(
        a.summary(),
        "kernel check: 10 state changes traced, 10 matched to their segment, 0 mismatched, 2 \
         inferred changes the kernel does not trace (explained)"
    );
}

#[test]
fn the_merged_close_agrees_too() {
    use State::*;
    let (packets, conn) = packets(true);
    let (c, s) = (CLIENT, SERVER);
    // Segment 8 is the client's FIN,ACK: FIN_WAIT1 → FIN_WAIT2 → time-wait table at once.
    let trace = vec![
        ev(-10, c, s, Closed, SynSent),
        ev(105, c, s, SynSent, Established),
        ev(205, s, c, Listen, SynReceived),
        ev(206, s, c, SynReceived, Established),
        ev(690, s, c, Established, FinWait1),
        ev(705, c, s, Established, CloseWait),
        ev(790, c, s, CloseWait, LastAck),
        ev(805, s, c, FinWait1, FinWait2),
        ev(806, s, c, FinWait2, Closed),
        ev(905, c, s, LastAck, Closed),
    ];
    let a = agree(&packets, &conn, &trace, Some(&table(6)));
    assert!(a.ok(), "{a:#?}");
    assert_eq!(
        (a.seen, a.matched, a.mismatched, a.explained),
        (10, 10, 0, 1)
    );
    assert_eq!(
        a.per_packet[8][1].text,
        "kernel agrees: FIN_WAIT1 → FIN_WAIT2 → CLOSE, then it lives on in the kernel's \
         time-wait table as TIME_WAIT"
    );
}

#[test]
fn a_wrong_inference_is_flagged_as_a_mismatch() {
    let (mut packets, conn) = packets(false);
    // Pretend teardown had inferred that the server's FIN moved it to CLOSE_WAIT.
    let event = packets[7].event.as_mut().unwrap();
    event.transitions[0].1.to = State::CloseWait;
    let a = agree(&packets, &conn, &kernel_trace(), Some(&table(6)));
    assert!(!a.ok());
    assert_eq!(a.mismatched, 1);
    let note = &a.per_packet[7][0];
    assert_eq!((note.role, note.verdict), (Role::Server, Verdict::Mismatch));
    assert_eq!(
        note.text,
        "MISMATCH: the kernel traced server ESTABLISHED → FIN_WAIT1"
    );
}

#[test]
fn a_kernel_change_teardown_missed_is_a_mismatch() {
    let (packets, conn) = packets(false);
    // An extra change teardown never inferred, traced just after the client's FIN reached
    // the server: it lands on that FIN, and is flagged there. Traced 0.6 ms before the FIN
    // (the clocks disagree by that much at most), it waits for a segment to place it on, and
    // lands on that FIN as it leaves.
    for at in [901, 301] {
        let mut trace = kernel_trace();
        trace.push(ev(at, SERVER, CLIENT, State::Established, State::CloseWait));
        let a = agree(&packets, &conn, &trace, Some(&table(6)));
        assert_eq!(a.mismatched, 1, "{a:#?}");
        assert!(
            a.per_packet[9]
                .iter()
                .any(|n| n.text == "MISMATCH: the kernel traced server ESTABLISHED → CLOSE_WAIT"),
            "{a:#?}"
        );
    }
    // A change 60 s later (the time-wait timer) has no segment: it is told, not judged.
    let mut trace = kernel_trace();
    trace.push(ev(
        60_000_000,
        SERVER,
        CLIENT,
        State::FinWait2,
        State::Closed,
    ));
    let a = agree(&packets, &conn, &trace, Some(&table(6)));
    assert!(a.ok(), "{a:#?}");
    assert_eq!(a.unplaced, 1);
    // No segment came after it: it is said beside the capture.
    let (_, text) = a.section.iter().find(|(v, _)| *v == Verdict::Info).unwrap();
    assert_eq!(
        text,
        "kernel: server FIN_WAIT2 → CLOSE at +60000.000 ms after the first segment (no segment \
         caused it: a timer)"
    );
    // And an inferred change the kernel never traced.
    let mut trace = kernel_trace();
    trace.retain(|e| {
        !matches!(
            e.kind,
            EventKind::SetState {
                new: State::LastAck,
                ..
            }
        )
    });
    let a = agree(&packets, &conn, &trace, Some(&table(6)));
    assert_eq!(a.mismatched, 1);
    assert_eq!(
        a.per_packet[9][0].text,
        "MISMATCH: the kernel traced no change for the client here"
    );
}

#[test]
fn the_final_socket_table_must_agree() {
    let (packets, conn) = packets(false);
    let a = agree(&packets, &conn, &kernel_trace(), Some(&table(5)));
    assert_eq!(a.mismatched, 1);
    assert_eq!(
        a.section[1].1,
        "MISMATCH: socket table: server FIN_WAIT_2 (timewait, 59.81 s left); teardown inferred \
         TIME_WAIT"
    );
}

#[test]
fn other_connections_and_listeners_are_not_counted() {
    let (packets, conn) = packets(false);
    let mut trace = kernel_trace();
    trace.push(ev(
        500,
        "127.0.0.3:8000",
        CLIENT,
        State::Established,
        State::FinWait1,
    ));
    let a = agree(&packets, &conn, &trace, None);
    assert_eq!(a.seen, 10);
    assert!(a.section.is_empty());
}

/// Recorded in `teardown run client-never-closes` (the client never closes).
#[test]
fn client_never_closes_as_recorded() {
    use State::*;
    let ns = |n: u64| Duration::from_nanos(1_795_505_276_000_000_000 + n);
    let segs = active_close(false);
    let times = [
        348_420_038u64,
        348_429_712,
        348_440_708,
        348_466_587,
        348_470_873,
        348_481_358,
        348_483_972,
        348_491_453,
        391_061_599,
    ];
    let (packets, conn) = timed(segs[..9].to_vec(), |i| ns(times[i]));
    let (c, s) = (CLIENT, SERVER);
    let at = |n: u64, local: &str, remote: &str, old, new| KernelEvent {
        at: ns(n),
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        kind: EventKind::SetState { old, new },
    };
    let trace = vec![
        at(348_383_026, s, "0.0.0.0:0", Closed, Listen),
        at(348_400_026, c, s, Closed, SynSent),
        at(348_437_026, c, s, SynSent, Established),
        at(348_443_026, s, c, Listen, SynReceived),
        at(348_447_026, s, c, SynReceived, Established),
        at(348_489_026, s, c, Established, FinWait1),
        at(348_493_026, c, s, Established, CloseWait),
        at(348_498_026, s, "0.0.0.0:0", Listen, Closed),
        at(391_080_026, s, c, FinWait1, FinWait2),
        at(391_087_026, s, c, FinWait2, Closed),
    ];
    let a = agree(&packets, &conn, &trace, None);
    assert!(a.ok(), "{a:#?}");
    assert_eq!((a.seen, a.matched, a.unplaced), (8, 8, 0));
}

#[test]
fn a_reset_sent_by_the_endpoint_itself_is_placed_on_its_rst() {
    use State::*;
    // SO_LINGER {on, 0}: the client goes ESTABLISHED → CLOSE before its RST leaves.
    let mut segs = active_close(false)[..7].to_vec();
    segs.push(crate::tracker::tests::segment(
        true,
        crate::tcp::Flags::RST | crate::tcp::Flags::ACK,
        112,
        912,
        0,
    ));
    let (packets, conn) = timed(segs, |i| Duration::from_micros(T0 + 100 * i as u64));
    let mut trace: Vec<KernelEvent> = kernel_trace()
        .into_iter()
        .filter(|e| e.at < Duration::from_micros(T0 + 650))
        .collect();
    trace.push(ev(690, CLIENT, SERVER, Established, Closed));
    trace.push(ev(705, SERVER, CLIENT, Established, Closed));
    let a = agree(&packets, &conn, &trace, None);
    assert!(a.ok(), "{a:#?}");
    assert_eq!(a.unplaced, 0);
    assert_eq!(
        a.per_packet[7]
            .iter()
            .map(|n| (n.role, n.verdict))
            .collect::<Vec<_>>(),
        [
            (Role::Client, Verdict::Agrees),
            (Role::Server, Verdict::Agrees)
        ]
    );
}

#[test]
fn closing_ends_in_time_wait_at_the_ack_of_its_fin() {
    use crate::tcp::Flags;
    use crate::tracker::tests::segment;
    use State::*;
    // Both FINs cross (held back), then both ACKs.
    let mut segs = active_close(false)[..7].to_vec();
    let fa = Flags::FIN | Flags::ACK;
    segs.push(segment(false, fa, 912, 112, 0)); // server FIN
    segs.push(segment(true, fa, 112, 912, 0)); // client FIN, not acking the server's
    segs.push(segment(false, Flags::ACK, 913, 113, 0));
    segs.push(segment(true, Flags::ACK, 113, 913, 0));
    let (packets, conn) = timed(segs, |i| Duration::from_micros(T0 + 100 * i as u64));
    let (c, s) = (CLIENT, SERVER);
    let mut trace: Vec<KernelEvent> = kernel_trace()
        .into_iter()
        .filter(|e| e.at < Duration::from_micros(T0 + 650))
        .collect();
    // The server: FIN (packet 7), the client's FIN arrives (8), the ACK of its FIN (10).
    trace.extend([
        ev(690, s, c, Established, FinWait1),
        ev(805, s, c, FinWait1, Closing),
        ev(1005, s, c, Closing, Closed),
    ]);
    trace.sort_by_key(|e| e.at);
    let a = agree(&packets, &conn, &trace, None);
    let server_at = |i: usize| {
        a.per_packet[i]
            .iter()
            .find(|n| n.role == Role::Server)
            .cloned()
    };
    assert_eq!(
        server_at(8).map(|n| n.verdict),
        Some(Verdict::Agrees),
        "{a:#?}"
    );
    // The server's CLOSING → CLOSE at the ACK of its FIN is its move to TIME_WAIT.
    let server_end = a.per_packet[10]
        .iter()
        .find(|n| n.role == Role::Server)
        .unwrap_or_else(|| panic!("{a:#?}"));
    assert_eq!(server_end.inferred, Some((Closing, TimeWait)), "{a:#?}");
    assert_eq!(server_end.verdict, Verdict::Agrees, "{a:#?}");
}

/// Seen under load: the server's socket was created 60 µs after the handshake's ACK, 10 µs
/// before the client's data, which acks the SYN again. The handshake's ACK is the cause.
#[test]
fn the_handshake_ack_not_the_data_after_it_completes_the_connection() {
    use State::*;
    let (packets, conn) = packets(false);
    let mut trace = kernel_trace();
    for e in &mut trace {
        let handshake = matches!(
            e.kind,
            EventKind::SetState {
                old: Listen | SynReceived,
                ..
            }
        );
        if handshake && e.local == SERVER.parse().unwrap() && e.remote.port() != 0 {
            e.at = Duration::from_micros(T0 + 290); // data arrives at 300
        }
    }
    let a = agree(&packets, &conn, &trace, Some(&table(6)));
    assert!(a.ok(), "{a:#?}");
    assert_eq!(a.per_packet[2][0].verdict, Verdict::Agrees);
    assert!(a.per_packet[3].is_empty(), "{a:#?}");
}

/// A half close: the server (still holding its socket) moves to the time-wait table at the
/// client's FIN, 10 µs after the client's data that acked the server's FIN; an orphan would
/// have moved at that data. The kernel's order of events (the client sent its FIN first) tells.
#[test]
fn a_held_socket_moves_to_time_wait_at_the_peers_fin_not_at_the_ack_before_it() {
    use crate::tcp::Flags;
    use crate::tracker::tests::segment;
    use State::*;
    let fa = Flags::FIN | Flags::ACK;
    let (c, s) = (CLIENT, SERVER);
    let (packets, conn, trace) = after_the_opening(
        [
            segment(false, fa, 912, 112, 0), // 7: the server's FIN (shutdown)
            segment(true, Flags::PSH | Flags::ACK, 112, 913, 13), // 8: data, acks it
            segment(true, fa, 125, 913, 0),  // 9: the client's FIN, 10 µs later
            segment(false, Flags::ACK, 913, 126, 0), // 10
        ],
        [700, 800, 810, 900],
        [
            ev(690, s, c, Established, FinWait1),
            ev(705, c, s, Established, CloseWait),
            ev(805, s, c, FinWait1, FinWait2),
            ev(808, c, s, CloseWait, LastAck),
            ev(814, s, c, FinWait2, Closed),
            ev(905, c, s, LastAck, Closed),
        ],
    );
    let a = agree(&packets, &conn, &trace, None);
    assert!(a.ok(), "{a:#?}");
    let server_at = |i: usize| {
        a.per_packet[i]
            .iter()
            .find(|n| n.role == Role::Server)
            .cloned()
    };
    assert_eq!(server_at(8).unwrap().inferred, Some((FinWait1, FinWait2)));
    assert_eq!(server_at(8).unwrap().text, "kernel agrees");
    assert_eq!(server_at(9).unwrap().inferred, Some((FinWait2, TimeWait)));
    assert_eq!(server_at(9).unwrap().verdict, Verdict::Agrees, "{a:#?}");
}

#[test]
fn an_earlier_incarnation_of_the_4_tuple_is_left_out() {
    use State::*;
    let (c, s) = (CLIENT, SERVER);
    let (packets, conn) = packets(false);
    // The same 4-tuple's previous connection, a second earlier (its port taken over from
    // TIME_WAIT), then this one's connect() 1.5 ms before its SYN, as under load.
    let mut events = vec![
        ev(-1_000_000, c, s, Closed, SynSent),
        ev(-999_900, c, s, SynSent, Established),
        ev(-999_000, c, s, Established, FinWait1),
        ev(-998_000, c, s, FinWait1, FinWait2),
        ev(-997_000, c, s, FinWait2, Closed),
    ];
    events.extend(kernel_trace().into_iter().map(|mut e| {
        if matches!(
            e.kind,
            EventKind::SetState {
                old: Closed,
                new: SynSent
            }
        ) {
            e.at -= Duration::from_micros(1_500);
        }
        e
    }));
    let a = agree(&packets, &conn, &events, None);
    assert_eq!(
        (a.matched, a.mismatched, a.unplaced),
        (a.seen, 0, 0),
        "{a:?}"
    );
    assert_eq!(
        verdicts(&a, 0),
        [
            (Role::Client, Verdict::Agrees),
            (Role::Server, Verdict::Explained)
        ]
    );
}

#[test]
fn a_retransmission_is_set_beside_the_kernels_tcp_retransmit_skb() {
    let (c, s) = (CLIENT, SERVER);
    // The four-segment close, then the client's FIN once more, 200 ms later.
    let mut segs = active_close(false);
    let fin = segs[9].clone();
    segs.insert(10, fin);
    let n = segs.len();
    let (packets, conn) = timed(segs, |i| {
        let extra = if i >= 10 { 200_000 } else { 0 };
        Duration::from_micros(T0 + 100 * i as u64 + extra)
    });
    assert!(
        packets[10]
            .comment
            .contains("retransmission of the previous segment after 200 ms"),
        "{}",
        packets[10].comment
    );
    let retransmit = |us: i64| KernelEvent {
        at: Duration::from_micros((T0 as i64 + us) as u64),
        local: c.parse().unwrap(),
        remote: s.parse().unwrap(),
        kind: EventKind::Retransmit,
    };
    let mut events = kernel_trace();
    events.push(retransmit(201_000 - 5));
    // One with no repeated segment behind it confirms nothing.
    events.push(retransmit(900_000));
    let a = agree(&packets, &conn, &events, None);
    assert_eq!(a.retransmissions, 1);
    assert!(
        a.per_packet[10]
            .iter()
            .any(|n| n.text == "kernel: a retransmission (tcp:tcp_retransmit_skb)")
    );
    assert!(
        a.per_packet[..10]
            .iter()
            .flatten()
            .all(|n| !n.text.contains("tcp_retransmit_skb"))
    );
    assert_eq!(n, 12);
}

#[test]
fn the_summary_says_one_change_and_one_retransmission_in_the_singular() {
    let a = Agreement {
        per_packet: Vec::new(),
        section: Vec::new(),
        seen: 1,
        matched: 1,
        mismatched: 0,
        explained: 1,
        unplaced: 0,
        retransmissions: 1,
        by_conn: Vec::new(),
    };
    assert_eq!(
        a.summary(),
        "kernel check: 1 state change traced, 1 matched to their segment, 0 mismatched, 1 \
         inferred change the kernel does not trace (explained); 1 retransmission traced by \
         tcp_retransmit_skb"
    );
}

/// The article's opening (7 segments, 100 µs apart) and its kernel trace, then `tail` at
/// `times` with `events`.
fn after_the_opening(
    tail: [Segment; 4],
    times: [u64; 4],
    events: [KernelEvent; 6],
) -> (Vec<Packet>, Connection, Vec<KernelEvent>) {
    let mut segs = active_close(false)[..7].to_vec();
    segs.extend(tail);
    let at: Vec<u64> = (0..7).map(|i| 100 * i).chain(times).collect();
    let (packets, conn) = timed(segs, |i| Duration::from_micros(T0 + at[i]));
    let mut trace: Vec<KernelEvent> = kernel_trace()
        .into_iter()
        .filter(|e| e.at < Duration::from_micros(T0 + 650))
        .collect();
    trace.extend(events);
    (packets, conn, trace)
}

/// The simultaneous close as `run` makes it: the client's close() is traced 280 µs before
/// its FIN is captured (the packet filter held it), after the server's FIN crossed it.
fn crossing_with_a_held_fin() -> (Vec<Packet>, Connection, Vec<KernelEvent>) {
    use crate::tcp::Flags;
    use crate::tracker::tests::segment;
    use State::*;
    let fa = Flags::FIN | Flags::ACK;
    let (c, s) = (CLIENT, SERVER);
    let (packets, conn, trace) = after_the_opening(
        [
            segment(false, fa, 912, 112, 0),         // 7: the server's FIN
            segment(true, fa, 112, 912, 0),          // 8: the client's FIN, held: no ack of 7
            segment(false, Flags::ACK, 913, 113, 0), // 9
            segment(true, Flags::ACK, 113, 913, 0),  // 10
        ],
        [700, 900, 1000, 1100],
        [
            ev(620, c, s, Established, FinWait1),
            ev(690, s, c, Established, FinWait1),
            ev(705, c, s, FinWait1, Closing),
            ev(905, s, c, FinWait1, Closing),
            ev(1005, c, s, Closing, Closed),
            ev(1105, s, c, Closing, Closed),
        ],
    );
    (packets, conn, trace)
}

#[test]
fn read_as_the_capture_goes_the_trace_gives_each_packet_its_notes_as_it_leaves() {
    let (packets, conn, trace) = crossing_with_a_held_fin();
    // Live: when each packet leaves, the trace has been read just past its time, no further.
    let mut live = Checker::new();
    let mut notes = Vec::new();
    for p in &packets {
        assert!(
            !live.settled(p.frame.ts),
            "the trace is not read that far yet"
        );
        let through = Checker::needs(p.frame.ts);
        let read: Vec<KernelEvent> = trace.iter().filter(|e| e.at <= through).cloned().collect();
        live.set_trace(read, through);
        assert!(live.settled(p.frame.ts));
        notes.push(live.release(p));
    }
    let a = live.finish(None, std::slice::from_ref(&conn));
    assert!(a.ok(), "{notes:#?}\n{a:#?}");
    assert_eq!((a.seen, a.matched, a.unplaced), (10, 10, 0), "{a:#?}");
    // The same counts for the one connection, by its id.
    let (id, mine) = &a.by_conn[0];
    assert_eq!(
        (*id, mine.seen, mine.matched, mine.mismatched),
        (conn.id, 10, 10, 0)
    );
    // The client's close() came first, but its FIN_WAIT1 and CLOSING wait for its own FIN,
    // captured after the server's: nothing of the client's is said on the server's FIN.
    assert!(
        notes[7].iter().all(|n| n.role == Role::Server),
        "{:#?}",
        notes[7]
    );
    let client = notes[8].iter().find(|n| n.role == Role::Client).unwrap();
    assert_eq!(
        client.text,
        "kernel agrees: ESTABLISHED → FIN_WAIT1 → CLOSING"
    );
    assert_eq!(client.verdict, Verdict::Agrees);
    // Nothing was left to say after the capture: every note went out on its packet.
    assert!(a.section.is_empty(), "{a:#?}");
    // The same notes as with the whole trace read before the first packet.
    let whole = agree(&packets, &conn, &trace, None);
    assert_eq!(whole.per_packet, notes);
}

#[test]
fn a_change_traced_after_its_packet_was_written_is_said_beside_the_capture() {
    let (packets, conn) = packets(false);
    let late = |e: &KernelEvent| {
        e.kind
            == EventKind::SetState {
                old: State::Established,
                new: State::CloseWait,
            }
    };
    let mut live = Checker::new();
    let mut given = Vec::new();
    for p in &packets {
        // The client's CLOSE_WAIT reaches the trace only after everything else.
        let read: Vec<KernelEvent> = kernel_trace().into_iter().filter(|e| !late(e)).collect();
        live.set_trace(read, Checker::needs(p.frame.ts));
        given.push(live.release(p));
    }
    let fin = 7;
    assert!(
        given[fin]
            .iter()
            .any(|n| n.role == Role::Client && n.verdict == Verdict::Mismatch),
        "{:#?}",
        given[fin]
    );
    live.set_trace(kernel_trace(), Duration::MAX);
    let a = live.finish(None, std::slice::from_ref(&conn));
    // Counted from the whole trace: it agrees.
    assert!(a.ok(), "{a:#?}");
    let said: Vec<&str> = a.section.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        said.iter().any(|t| t.starts_with(
            "kernel agrees (on the server's segment at +0.700 ms, traced after it was written)"
        )),
        "{said:#?}"
    );
    assert!(
        said.iter().any(|t| t.starts_with(
            "the server's segment at +0.700 ms says \"MISMATCH: the kernel traced no change for the client here\""
        ) && t.ends_with("does not bear it out")),
        "{said:#?}"
    );
}

#[test]
fn a_state_set_again_is_no_change() {
    // python's http.server: shutdown(SHUT_WR), then close(): FIN_WAIT1 → FIN_WAIT1 traced.
    let (packets, conn) = packets(false);
    let mut trace = kernel_trace();
    trace.push(ev(750, SERVER, CLIENT, State::FinWait1, State::FinWait1));
    let a = agree(&packets, &conn, &trace, Some(&table(6)));
    assert!(a.ok(), "{a:#?}");
    assert_eq!((a.seen, a.unplaced), (10, 0), "{a:#?}");
}

#[test]
fn a_long_transfer_keeps_only_the_segments_a_change_can_be_placed_on() {
    // 3,000 data segments between the handshake and the close: the checker keeps the SYNs,
    // the handshake's ACK, the FINs and their ACKs, so no placement grows with the data.
    let (packets, tracker) = crate::annotate::tests::captured(
        crate::output::svg::tests::bulk(),
        crate::annotate::tests::every_50us,
    );
    let conn = tracker.connections()[0].clone();
    let mut live = Checker::new();
    live.set_trace(Vec::new(), Duration::MAX);
    for p in &packets {
        live.release(p);
    }
    let kept = live.conns[&conn.id].packets.len();
    assert!(kept <= 10, "{kept} of {} segments kept", packets.len());
    assert!(packets.len() > 3000);
}
