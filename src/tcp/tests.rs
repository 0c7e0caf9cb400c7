use super::*;

const A_ISS: u32 = 1000; // the client's (active opener's) initial sequence number
const B_ISS: u32 = 5000; // the server's

const TEMPLATE: Seg = Seg {
    flags: Flags(0),
    seq: SeqNum(0),
    ack: SeqNum(0),
    len: 0,
};

const ACK: Flags = Flags::ACK;
const FIN_ACK: Flags = Flags(Flags::FIN.0 | Flags::ACK.0);

fn seg(flags: Flags, seq: u32, ack: u32) -> Seg {
    Seg {
        flags,
        seq: SeqNum(seq),
        ack: SeqNum(ack),
        ..TEMPLATE
    }
}

fn moved(step: Step, from: State, to: State) {
    let t = step
        .transition
        .unwrap_or_else(|| panic!("expected {from} -> {to}, got no transition: {step:?}"));
    assert_eq!((t.from, t.to), (from, to), "{t:?}");
    assert!(t.rfc.starts_with("RFC 9293 §3."), "{t:?}");
    assert!(step.unexpected.is_none());
}

fn stayed(step: Step) {
    assert_eq!(step, Step::default());
}

// ----- CLOSED / LISTEN / SYN_SENT / SYN_RECEIVED -----

fn client_syn_sent() -> Endpoint {
    let mut e = Endpoint::new(State::Closed);
    moved(
        e.on_segment(&seg(Flags::SYN, A_ISS, 0), Dir::Sent),
        State::Closed,
        State::SynSent,
    );
    e
}

fn server_syn_received() -> Endpoint {
    let mut e = Endpoint::new(State::Listen);
    moved(
        e.on_segment(&seg(Flags::SYN, A_ISS, 0), Dir::Received),
        State::Listen,
        State::SynReceived,
    );
    stayed(e.on_segment(&seg(Flags::SYN | ACK, B_ISS, A_ISS + 1), Dir::Sent));
    e
}

fn client_established() -> Endpoint {
    let mut e = client_syn_sent();
    moved(
        e.on_segment(&seg(Flags::SYN | ACK, B_ISS, A_ISS + 1), Dir::Received),
        State::SynSent,
        State::Established,
    );
    stayed(e.on_segment(&seg(ACK, A_ISS + 1, B_ISS + 1), Dir::Sent));
    e
}

fn server_established() -> Endpoint {
    let mut e = server_syn_received();
    moved(
        e.on_segment(&seg(ACK, A_ISS + 1, B_ISS + 1), Dir::Received),
        State::SynReceived,
        State::Established,
    );
    e
}

#[test]
fn test_closed_send_syn() {
    assert_eq!(client_syn_sent().state(), State::SynSent);
}

#[test]
fn test_listen_recv_syn() {
    assert_eq!(server_syn_received().state(), State::SynReceived);
}

#[test]
fn test_syn_sent_recv_syn_ack() {
    assert_eq!(client_established().state(), State::Established);
}

#[test]
fn test_syn_sent_recv_syn_ack_for_another_syn_is_unexpected() {
    let mut e = client_syn_sent();
    let step = e.on_segment(&seg(Flags::SYN | ACK, B_ISS, A_ISS + 77), Dir::Received);
    assert!(step.transition.is_none());
    assert_eq!(step.unexpected.unwrap().state, State::SynSent);
}

#[test]
fn test_syn_received_recv_ack() {
    assert_eq!(server_established().state(), State::Established);
}

#[test]
fn test_syn_received_recv_rst() {
    let mut e = server_syn_received();
    moved(
        e.on_segment(&seg(Flags::RST, A_ISS + 1, 0), Dir::Received),
        State::SynReceived,
        State::Closed,
    );
}

// ----- ESTABLISHED -----

/// Data both ways: "I am client" (11 bytes), then "I am server" (11 bytes).
fn server_established_after_data() -> Endpoint {
    let mut e = server_established();
    let mut data = seg(Flags::PSH | ACK, A_ISS + 1, B_ISS + 1);
    data.len = 11;
    stayed(e.on_segment(&data, Dir::Received));
    stayed(e.on_segment(&seg(ACK, B_ISS + 1, A_ISS + 12), Dir::Sent));
    let mut reply = seg(Flags::PSH | ACK, B_ISS + 1, A_ISS + 12);
    reply.len = 11;
    stayed(e.on_segment(&reply, Dir::Sent));
    e
}

#[test]
fn test_established_data_changes_nothing() {
    assert_eq!(server_established_after_data().state(), State::Established);
}

#[test]
fn test_established_send_fin() {
    let mut e = server_established_after_data();
    moved(
        e.on_segment(&seg(FIN_ACK, B_ISS + 12, A_ISS + 12), Dir::Sent),
        State::Established,
        State::FinWait1,
    );
}

#[test]
fn test_established_recv_fin() {
    let mut e = client_established();
    moved(
        e.on_segment(&seg(FIN_ACK, B_ISS + 12, A_ISS + 12), Dir::Received),
        State::Established,
        State::CloseWait,
    );
}

#[test]
fn test_established_recv_rst() {
    let mut e = client_established();
    moved(
        e.on_segment(&seg(Flags::RST | ACK, B_ISS + 1, A_ISS + 1), Dir::Received),
        State::Established,
        State::Closed,
    );
}

#[test]
fn test_established_send_rst() {
    let mut e = server_established();
    moved(
        e.on_segment(&seg(Flags::RST | ACK, B_ISS + 1, A_ISS + 1), Dir::Sent),
        State::Established,
        State::Closed,
    );
}

// ----- FIN_WAIT_1 / FIN_WAIT_2 (the side that closes first) -----

const A_FIN: u32 = B_ISS + 12; // the server's FIN, after its SYN and 11 bytes

fn server_fin_wait_1() -> Endpoint {
    let mut e = server_established_after_data();
    e.on_segment(&seg(FIN_ACK, A_FIN, A_ISS + 12), Dir::Sent);
    assert_eq!(e.state(), State::FinWait1);
    e
}

fn server_fin_wait_2() -> Endpoint {
    let mut e = server_fin_wait_1();
    moved(
        e.on_segment(&seg(ACK, A_ISS + 12, A_FIN + 1), Dir::Received),
        State::FinWait1,
        State::FinWait2,
    );
    e
}

#[test]
fn test_fin_wait_1_recv_ack_of_fin() {
    assert_eq!(server_fin_wait_2().state(), State::FinWait2);
}

#[test]
fn test_fin_wait_1_recv_ack_of_data_only_stays() {
    let mut e = server_fin_wait_1();
    stayed(e.on_segment(&seg(ACK, A_ISS + 12, A_FIN), Dir::Received));
    assert_eq!(e.state(), State::FinWait1);
}

#[test]
fn test_fin_wait_1_recv_fin_ack_merged() {
    // The three-segment close: the peer's ACK rides on its FIN.
    let mut e = server_fin_wait_1();
    moved(
        e.on_segment(&seg(FIN_ACK, A_ISS + 12, A_FIN + 1), Dir::Received),
        State::FinWait1,
        State::TimeWait,
    );
}

#[test]
fn test_fin_wait_1_recv_fin_without_ack_of_ours() {
    // Simultaneous close: the FINs cross.
    let mut e = server_fin_wait_1();
    moved(
        e.on_segment(&seg(FIN_ACK, A_ISS + 12, A_FIN), Dir::Received),
        State::FinWait1,
        State::Closing,
    );
}

#[test]
fn test_fin_wait_2_recv_data_stays() {
    let mut e = server_fin_wait_2();
    let mut data = seg(Flags::PSH | ACK, A_ISS + 12, A_FIN + 1);
    data.len = 100;
    stayed(e.on_segment(&data, Dir::Received));
    stayed(e.on_segment(&seg(ACK, A_FIN + 1, A_ISS + 112), Dir::Sent));
    assert_eq!(e.state(), State::FinWait2);
}

#[test]
fn test_fin_wait_2_recv_fin() {
    let mut e = server_fin_wait_2();
    moved(
        e.on_segment(&seg(FIN_ACK, A_ISS + 12, A_FIN + 1), Dir::Received),
        State::FinWait2,
        State::TimeWait,
    );
}

#[test]
fn test_fin_wait_2_send_data_is_unexpected() {
    let mut e = server_fin_wait_2();
    let mut data = seg(Flags::PSH | ACK, A_FIN + 1, A_ISS + 12);
    data.len = 5;
    let step = e.on_segment(&data, Dir::Sent);
    assert!(step.transition.is_none());
    assert_eq!(step.unexpected.unwrap().why, "data sent after its own FIN");
}

// ----- CLOSING / TIME_WAIT -----

fn server_closing() -> Endpoint {
    let mut e = server_fin_wait_1();
    e.on_segment(&seg(FIN_ACK, A_ISS + 12, A_FIN), Dir::Received);
    assert_eq!(e.state(), State::Closing);
    e
}

#[test]
fn test_closing_recv_ack_of_fin() {
    let mut e = server_closing();
    stayed(e.on_segment(&seg(ACK, A_FIN + 1, A_ISS + 13), Dir::Sent));
    moved(
        e.on_segment(&seg(ACK, A_ISS + 13, A_FIN + 1), Dir::Received),
        State::Closing,
        State::TimeWait,
    );
}

fn server_time_wait() -> Endpoint {
    let mut e = server_fin_wait_2();
    e.on_segment(&seg(FIN_ACK, A_ISS + 12, A_FIN + 1), Dir::Received);
    stayed(e.on_segment(&seg(ACK, A_FIN + 1, A_ISS + 13), Dir::Sent));
    assert_eq!(e.state(), State::TimeWait);
    e
}

#[test]
fn test_time_wait_recv_retransmitted_fin_stays() {
    let mut e = server_time_wait();
    stayed(e.on_segment(&seg(FIN_ACK, A_ISS + 12, A_FIN + 1), Dir::Received));
    stayed(e.on_segment(&seg(ACK, A_FIN + 1, A_ISS + 13), Dir::Sent));
    assert_eq!(e.state(), State::TimeWait);
}

#[test]
fn test_time_wait_recv_rst() {
    // RFC 1337's "TIME-WAIT assassination": Linux honours the RST unless tcp_rfc1337=1.
    let mut e = server_time_wait();
    moved(
        e.on_segment(&seg(Flags::RST, A_ISS + 13, 0), Dir::Received),
        State::TimeWait,
        State::Closed,
    );
}

// ----- CLOSE_WAIT / LAST_ACK (the side that closes second) -----

fn client_close_wait() -> Endpoint {
    let mut e = client_established();
    e.on_segment(&seg(FIN_ACK, A_FIN, A_ISS + 12), Dir::Received);
    stayed(e.on_segment(&seg(ACK, A_ISS + 12, A_FIN + 1), Dir::Sent));
    assert_eq!(e.state(), State::CloseWait);
    e
}

fn client_last_ack() -> Endpoint {
    let mut e = client_close_wait();
    moved(
        e.on_segment(&seg(FIN_ACK, A_ISS + 12, A_FIN + 1), Dir::Sent),
        State::CloseWait,
        State::LastAck,
    );
    e
}

#[test]
fn test_close_wait_send_data_stays() {
    // Half close: the side that received the FIN may still send.
    let mut e = client_close_wait();
    let mut data = seg(Flags::PSH | ACK, A_ISS + 12, A_FIN + 1);
    data.len = 100;
    stayed(e.on_segment(&data, Dir::Sent));
    assert_eq!(e.state(), State::CloseWait);
}

#[test]
fn test_close_wait_send_fin() {
    assert_eq!(client_last_ack().state(), State::LastAck);
}

#[test]
fn test_last_ack_recv_ack() {
    let mut e = client_last_ack();
    moved(
        e.on_segment(&seg(ACK, A_FIN + 1, A_ISS + 13), Dir::Received),
        State::LastAck,
        State::Closed,
    );
}

#[test]
fn test_last_ack_retransmits_fin_stays() {
    let mut e = client_last_ack();
    stayed(e.on_segment(&seg(FIN_ACK | Flags::PSH, A_ISS + 12, A_FIN + 1), Dir::Sent));
    assert_eq!(e.state(), State::LastAck);
}

#[test]
fn test_last_ack_recv_ack_not_covering_fin_stays() {
    let mut e = client_last_ack();
    stayed(e.on_segment(&seg(ACK, A_FIN + 1, A_ISS + 12), Dir::Received));
    assert_eq!(e.state(), State::LastAck);
}

// ----- names and flags -----

#[test]
fn state_names_round_trip() {
    for state in State::ALL {
        assert_eq!(State::parse(state.name()), Some(state));
    }
    assert_eq!(State::parse("fin-wait-1"), Some(State::FinWait1));
    assert_eq!(State::parse("FIN_WAIT2"), Some(State::FinWait2));
    assert_eq!(State::parse("nope"), None);
}

#[test]
fn flags_print_control_bits_before_ack() {
    assert_eq!(FIN_ACK.to_string(), "FIN,ACK");
    assert_eq!((Flags::SYN | ACK).to_string(), "SYN,ACK");
    assert_eq!((Flags::FIN | Flags::PSH | ACK).to_string(), "FIN,PSH,ACK");
    assert_eq!(Flags(0).to_string(), "none");
}

// ----- retransmissions -----

#[test]
fn test_retransmitted_fin_changes_nothing() {
    let mut e = client_close_wait();
    stayed(e.on_segment(&seg(FIN_ACK | Flags::PSH, A_FIN, A_ISS + 12), Dir::Received));
    assert_eq!(e.state(), State::CloseWait);
    let mut e = server_closing();
    stayed(e.on_segment(&seg(FIN_ACK, A_ISS + 12, A_FIN), Dir::Received));
    assert_eq!(e.state(), State::Closing);
}

#[test]
fn test_retransmitted_syn_ack_changes_nothing() {
    let mut e = client_established();
    stayed(e.on_segment(&seg(Flags::SYN | ACK, B_ISS, A_ISS + 1), Dir::Received));
    assert_eq!(e.state(), State::Established);
}

// ----- the opening that fails, and the SYN sent again -----

#[test]
fn test_syn_sent_sends_the_same_syn_again_stays() {
    // RFC 9293 §3.8.1: the retransmission timer sends the SYN again; nothing unexpected.
    let mut e = client_syn_sent();
    stayed(e.on_segment(&seg(Flags::SYN, A_ISS, 0), Dir::Sent));
    assert_eq!(e.state(), State::SynSent);
}

#[test]
fn test_syn_sent_recv_rst_ack_of_its_syn_is_refused() {
    let mut e = client_syn_sent();
    let step = e.on_segment(&seg(Flags::RST | ACK, 0, A_ISS + 1), Dir::Received);
    let t = step.transition.unwrap();
    assert_eq!((t.from, t.to), (State::SynSent, State::Closed));
    assert_eq!(t.cause, Cause::Refused);
    assert_eq!(t.rfc, "RFC 9293 §3.10.7.1, §3.10.7.3");
}

#[test]
fn test_syn_answered_by_rst_ack_at_once_was_no_syn_received() {
    // The closed port's reply: no socket sent anything before the RST, so none existed.
    let mut e = Endpoint::new(State::Listen);
    e.on_segment(&seg(Flags::SYN, A_ISS, 0), Dir::Received);
    stayed(e.on_segment(&seg(Flags::RST | ACK, 0, A_ISS + 1), Dir::Sent));
    assert_eq!(e.state(), State::Closed);
}

#[test]
fn test_syn_received_sends_rst_after_its_syn_ack_is_an_abort() {
    let mut e = server_syn_received();
    moved(
        e.on_segment(&seg(Flags::RST | ACK, B_ISS + 1, A_ISS + 1), Dir::Sent),
        State::SynReceived,
        State::Closed,
    );
}

#[test]
fn the_open_shortcut_answers_as_the_whole_diagram_does() {
    // Every state, flag set and direction, against endpoints that did and did not send a
    // SYN or FIN and saw the peer's: `on_segment` (its shortcut first) and the whole match.
    let some = |n: u32| Some(SeqNum(n));
    let mut shortcut = 0;
    for state in State::ALL {
        for (iss, fin_seq, snd_nxt, irs, peer_fin) in [
            (None, None, None, None, None),
            (some(A_ISS), None, some(A_ISS + 1), some(B_ISS), None),
            (
                some(A_ISS),
                some(A_ISS + 11),
                some(A_ISS + 12),
                some(B_ISS),
                None,
            ),
            (
                some(A_ISS),
                None,
                some(A_ISS + 1),
                some(B_ISS),
                some(B_ISS + 1),
            ),
            (
                some(A_ISS),
                some(A_ISS + 1),
                some(A_ISS + 2),
                some(B_ISS),
                some(B_ISS + 1),
            ),
        ] {
            let mut start = Endpoint::new(state);
            let bits = [ISS, FIN_SEQ, SND_NXT, IRS, PEER_FIN];
            for (bit, n) in bits.into_iter().zip([iss, fin_seq, snd_nxt, irs, peer_fin]) {
                if let Some(n) = n {
                    start.known |= bit;
                    match bit {
                        ISS => start.iss = n,
                        FIN_SEQ => start.fin_seq = n,
                        SND_NXT => start.snd_nxt = n,
                        IRS => start.irs = n,
                        _ => start.peer_fin = n,
                    }
                }
            }
            for flags in 0..=u8::MAX {
                for (seq, ack, len) in [
                    (A_ISS + 1, B_ISS + 1, 0),
                    (A_ISS + 1, B_ISS + 1, 10),
                    (A_ISS + 12, B_ISS + 2, 0),
                    (B_ISS + 1, A_ISS + 12, 5),
                    (B_ISS, A_ISS + 2, 0),
                ] {
                    let s = Seg {
                        flags: Flags(flags),
                        seq: SeqNum(seq),
                        ack: SeqNum(ack),
                        len,
                    };
                    for dir in [Dir::Sent, Dir::Received] {
                        let (mut a, mut b, mut c) = (start.clone(), start.clone(), start.clone());
                        let (x, y) = (a.on_segment(&s, dir), b.on_segment_general(&s, dir));
                        assert_eq!(x, y, "{start:?} {s:?} {dir:?}");
                        assert_eq!(a, b, "{start:?} {s:?} {dir:?}");
                        // The tracker's copy written into its caller.
                        assert_eq!(c.on_segment_here(&s, dir), y, "{start:?} {s:?} {dir:?}");
                        assert_eq!(c, b, "{start:?} {s:?} {dir:?}");
                        shortcut += usize::from(flags & CONTROL == 0 && start.stays_open());
                    }
                }
            }
        }
    }
    assert!(shortcut > 1000, "{shortcut}");
}
