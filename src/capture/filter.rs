//! Capture filters. `capture`'s is a pcap-filter(7) expression compiled by libpcap (the
//! reference compiler, as tcpdump uses it) into classic BPF and attached to the capture
//! socket, so the kernel drops what does not match before it reaches the ring. `run`'s is the
//! same, for the scenario's ports (`Bpf::ports`).

use pcap::{Capture, Linktype};

use crate::decode::link;

/// One classic BPF instruction, as `SO_ATTACH_FILTER` takes it (`struct sock_filter`).
pub type Insn = libc::sock_filter;

// linux/filter.h and linux/bpf_common.h.
const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
/// Loads at SKF_AD_OFF + n read the packet's metadata (skb fields), not its bytes.
const SKF_AD_OFF: i32 = -0x1000;
const SKF_AD_PROTOCOL: i32 = 0;
const SKF_AD_PKTTYPE: i32 = 4;
const SKF_AD_IFINDEX: i32 = 8;
/// The Linux cooked v2 header libpcap's programs for LINKTYPE_LINUX_SLL2 expect in front.
const SLL2_HDR_LEN: u32 = 20;
const PACKET_OUTGOING: u32 = 4;

/// A compiled pcap-filter(7) expression.
pub struct Bpf {
    /// The expression as given, for the capture's section comment.
    pub text: String,
    /// The program for the kernel.
    kernel: Vec<Insn>,
    /// libpcap's own program, run here on each frame the kernel passed, when the kernel
    /// cannot run it (a cooked-header field it has no metadata load for: libpcap does the same).
    userland: Option<pcap::BpfProgram>,
}

impl std::fmt::Debug for Bpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bpf")
            .field("text", &self.text)
            .field("kernel", &self.kernel.len())
            .field("userland", &self.userland.is_some())
            .finish()
    }
}

impl Bpf {
    /// Compiles `expr` for frames of `linktype` (decode::link); a cooked (SLL2) program is
    /// rewritten for a SOCK_DGRAM socket, where the kernel's frame starts at the IP header.
    pub fn compile(expr: &str, linktype: u32) -> Result<Bpf, String> {
        let refuse = |why: String| {
            format!(
                "cannot compile the filter {expr:?}: {why}; write it as for tcpdump (man 7 \
                 pcap-filter), e.g. 'tcp port 8000' or 'port 8000 and not host 10.0.0.1'"
            )
        };
        let libpcap = |e: pcap::Error| match e {
            pcap::Error::PcapError(text) => format!("libpcap says \"{text}\""),
            other => format!("libpcap says \"{other}\""),
        };
        let dead = Capture::dead(Linktype(linktype as i32)).map_err(|e| refuse(libpcap(e)))?;
        let program = dead.compile(expr, true).map_err(|e| refuse(libpcap(e)))?;
        let insns = instructions(&program);
        let (kernel, userland) = if linktype == link::LINUX_SLL2 {
            match cooked(&insns) {
                Some(fixed) => (fixed, None),
                None => (vec![accept()], Some(program)),
            }
        } else {
            (insns.iter().map(|&i| whole(i)).collect(), None)
        };
        Ok(Bpf {
            text: expr.to_string(),
            kernel,
            userland,
        })
    }

    /// The program for SO_ATTACH_FILTER.
    /// `run`'s filter: TCP segments of the scenario's ports, on an Ethernet link (loopback
    /// and veth frames carry an Ethernet header).
    pub fn ports(ports: std::ops::RangeInclusive<u16>) -> Result<Bpf, String> {
        Bpf::compile(
            &format!("tcp portrange {}-{}", ports.start(), ports.end()),
            link::ETHERNET,
        )
    }

    pub fn kernel_program(&self) -> &[Insn] {
        &self.kernel
    }

    /// Whether a frame the kernel passed is kept: true unless the program could only run
    /// here and says no.
    pub fn keeps(&self, frame: &[u8]) -> bool {
        self.userland.as_ref().is_none_or(|p| p.filter(frame))
    }

    /// True when the kernel runs the whole expression.
    pub fn in_kernel(&self) -> bool {
        self.userland.is_none()
    }
}

/// libpcap's instructions as the kernel's `struct sock_filter`s.
fn instructions(program: &pcap::BpfProgram) -> Vec<Insn> {
    // pcap::BpfInstruction is #[repr(transparent)] over libpcap's struct bpf_insn { u_short
    // code; u_char jt; u_char jf; bpf_u_int32 k; }, the layout of struct sock_filter.
    const _: () = assert!(
        std::mem::size_of::<pcap::BpfInstruction>() == std::mem::size_of::<Insn>()
            && std::mem::align_of::<pcap::BpfInstruction>() == std::mem::align_of::<Insn>()
    );
    let raw = program.get_instructions();
    let insns: &[Insn] = unsafe { std::slice::from_raw_parts(raw.as_ptr().cast(), raw.len()) };
    insns.to_vec()
}

/// `ret #k` with k ≠ 0 keeps k bytes: the dead handle's 65,535 would cut loopback's 64 KiB
/// GSO frames, so a match keeps the whole frame.
fn whole(mut i: Insn) -> Insn {
    if i.code == BPF_RET | BPF_K && i.k != 0 {
        i.k = u32::MAX;
    }
    i
}

fn accept() -> Insn {
    insn(BPF_RET | BPF_K, 0, 0, u32::MAX)
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// An SLL2 program made to run on a SOCK_DGRAM socket (what libpcap's fix_program does for
/// `any`): loads past the 20-byte header move back by 20, the protocol, interface index and
/// packet type fields become the kernel's metadata loads; None when it reads another header
/// field (the address, the ARPHRD type), which only user space can check.
fn cooked(insns: &[Insn]) -> Option<Vec<Insn>> {
    let ad = |n: i32| (SKF_AD_OFF + n) as u32;
    insns
        .iter()
        .map(|&i| {
            let class = i.code & 0x07;
            let mode = i.code & 0xe0;
            let loads = (class == BPF_LD || class == BPF_LDX)
                && matches!(mode, BPF_ABS | BPF_IND | BPF_MSH);
            // Metadata loads already (k is a negative offset) stay as they are.
            if !loads || i.k >= SKF_AD_OFF as u32 {
                return Some(whole(i));
            }
            let k = match i.k {
                k if k >= SLL2_HDR_LEN => k - SLL2_HDR_LEN,
                0 => ad(SKF_AD_PROTOCOL),
                4 => ad(SKF_AD_IFINDEX),
                10 => ad(SKF_AD_PKTTYPE),
                _ => return None,
            };
            Some(Insn { k, ..i })
        })
        .collect()
}

/// For `-i any`: `lo`'s outgoing copy of each packet is dropped (the host copy follows it),
/// as PACKET_IGNORE_OUTGOING does on `lo` alone, and other interfaces keep both directions.
/// Then `program`, or every frame.
pub fn skip_loopback_outgoing(lo_index: u32, program: Option<&[Insn]>) -> Vec<Insn> {
    let ad = |n: i32| (SKF_AD_OFF + n) as u32;
    let mut out = vec![
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, ad(SKF_AD_PKTTYPE)),
        // Outgoing: look at the interface (next); otherwise to the program (3 on).
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, PACKET_OUTGOING),
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, ad(SKF_AD_IFINDEX)),
        // On lo: drop (next); otherwise to the program.
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, lo_index),
        insn(BPF_RET | BPF_K, 0, 0, 0),
    ];
    match program {
        Some(p) => out.extend_from_slice(p),
        None => out.push(accept()),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_keeps_its_port_and_tcp_only() {
        let kernel = Bpf::ports(8000..=8000).unwrap();
        let kernel = kernel.kernel_program();
        assert_eq!(run(kernel, &ethernet_tcp(40000, 8000, false)), u32::MAX);
        assert_eq!(run(kernel, &ethernet_tcp(40000, 9000, false)), 0);
        assert_eq!(run(kernel, &ethernet_udp(40000, 8000)), 0);
        // A scenario's ports from --port up (tw-reuse: three).
        let three = Bpf::ports(8000..=8002).unwrap();
        assert_eq!(
            run(three.kernel_program(), &ethernet_tcp(8002, 1, false)),
            u32::MAX
        );
        assert_eq!(
            run(three.kernel_program(), &ethernet_tcp(8003, 1, false)),
            0
        );
    }

    /// An Ethernet + IPv4 + UDP frame, for what `run` must not keep.
    fn ethernet_udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .udp(sport, dport)
            .write(&mut frame, b"hi")
            .unwrap();
        frame
    }

    /// An Ethernet + IPv4 + TCP frame from 127.0.0.1:`sport` to 127.0.0.1:`dport`.
    fn ethernet_tcp(sport: u16, dport: u16, fin: bool) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .tcp(sport, dport, 1, 1024);
        let builder = if fin { builder.fin() } else { builder };
        let mut frame = Vec::new();
        builder.write(&mut frame, b"hi").unwrap();
        frame
    }

    /// Runs a kernel program on a frame the way the kernel's classic BPF does, for the
    /// instructions libpcap emits for these expressions (no metadata loads).
    fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
        run_with(prog, pkt, &|n| panic!("metadata {n}"))
    }

    /// As `run`, with `meta(n)` the value of metadata load SKF_AD_OFF + n.
    fn run_with(prog: &[Insn], pkt: &[u8], meta: &dyn Fn(i32) -> u32) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |at: u32, size: usize| -> Option<u32> {
            if at >= SKF_AD_OFF as u32 {
                return Some(meta(at as i32 - SKF_AD_OFF));
            }
            let at = at as usize;
            let b = pkt.get(at..at + size)?;
            Some(b.iter().fold(0u32, |v, &b| v << 8 | u32::from(b)))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            let size = match i.code & 0x18 {
                0x00 => 4,
                0x08 => 2,
                _ => 1,
            };
            match (i.code & 0x07, i.code & 0xe0) {
                (0x00, 0x20) => match load(i.k, size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                (0x00, 0x40) => match load(x.wrapping_add(i.k), size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                (0x01, 0xa0) => match load(i.k, 1) {
                    Some(v) => x = (v & 0xf) * 4,
                    None => return 0,
                },
                (0x05, _) => {
                    let v = if i.code & 0x08 != 0 { x } else { i.k };
                    let taken = match i.code & 0xf0 {
                        0x00 => {
                            pc += i.k as usize;
                            continue;
                        }
                        0x10 => a == v,
                        0x20 => a > v,
                        0x30 => a >= v,
                        0x40 => a & v != 0,
                        op => panic!("jump op {op:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                (0x04, 0x50) => a &= i.k,
                (0x06, _) => return i.k,
                (0x07, _) => x = a,
                (class, mode) => panic!("instruction {:#x} ({class}, {mode:#x})", i.code),
            }
        }
    }

    #[test]
    fn a_compiled_expression_keeps_what_tcpdump_would() {
        let f = Bpf::compile("tcp port 8000 or tcp port 8001", link::ETHERNET).unwrap();
        assert!(f.in_kernel());
        let kernel = f.kernel_program();
        assert_eq!(run(kernel, &ethernet_tcp(40000, 8000, false)), u32::MAX);
        assert_eq!(run(kernel, &ethernet_tcp(8001, 40000, false)), u32::MAX);
        assert_eq!(run(kernel, &ethernet_tcp(40000, 9000, false)), 0);
        let fin = Bpf::compile("tcp[tcpflags] & tcp-fin != 0", link::ETHERNET).unwrap();
        assert_eq!(
            run(fin.kernel_program(), &ethernet_tcp(1, 2, true)),
            u32::MAX
        );
        assert_eq!(run(fin.kernel_program(), &ethernet_tcp(1, 2, false)), 0);
    }

    #[test]
    fn a_match_keeps_the_whole_frame() {
        // libpcap's dead handle returns 65,535 on a match: loopback frames are longer.
        let f = Bpf::compile("tcp", link::ETHERNET).unwrap();
        let rets: Vec<u32> = f
            .kernel_program()
            .iter()
            .filter(|i| i.code == BPF_RET | BPF_K)
            .map(|i| i.k)
            .collect();
        assert!(
            rets.contains(&u32::MAX) && !rets.contains(&65535),
            "{rets:?}"
        );
    }

    /// The frame as an SLL2 capture holds it: the cooked header, then the IP packet.
    fn sll2(ip: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6];
        frame.extend([0; 8]);
        frame.extend_from_slice(ip);
        frame
    }

    #[test]
    fn a_cooked_program_reads_from_the_ip_header() {
        let f = Bpf::compile("tcp port 8000 and inbound", link::LINUX_SLL2).unwrap();
        assert!(f.in_kernel());
        // What a SOCK_DGRAM socket's filter sees: the IP header first, the rest as metadata.
        let meta = |n: i32| match n {
            SKF_AD_PROTOCOL => 0x0800,
            SKF_AD_PKTTYPE => 0,
            SKF_AD_IFINDEX => 1,
            _ => panic!("metadata {n}"),
        };
        let to_8000 = ethernet_tcp(40000, 8000, false);
        let to_9000 = ethernet_tcp(40000, 9000, false);
        assert_eq!(
            run_with(f.kernel_program(), &to_8000[14..], &meta),
            u32::MAX
        );
        assert_eq!(run_with(f.kernel_program(), &to_9000[14..], &meta), 0);
        let outgoing = |n: i32| if n == SKF_AD_PKTTYPE { 4 } else { meta(n) };
        assert_eq!(run_with(f.kernel_program(), &to_8000[14..], &outgoing), 0);
        // libpcap's own program on the SLL2 frame agrees.
        let dead = Capture::dead(Linktype(link::LINUX_SLL2 as i32)).unwrap();
        let own = dead.compile("tcp port 8000 and inbound", true).unwrap();
        assert!(own.filter(&sll2(&to_8000[14..])));
        assert!(!own.filter(&sll2(&to_9000[14..])));
        // The ARPHRD type is no metadata libpcap maps: user space checks it.
        let ethernet = Bpf::compile("link[8:2] == 1", link::LINUX_SLL2).unwrap();
        assert!(!ethernet.in_kernel());
        assert!(!ethernet.keeps(&sll2(&to_8000[14..])));
        let loopback = Bpf::compile("link[8:2] == 772", link::LINUX_SLL2).unwrap();
        assert!(loopback.keeps(&sll2(&to_8000[14..])));
    }

    #[test]
    fn a_bad_expression_names_libpcap_s_reason_and_what_to_do() {
        for expr in ["port", "tcp port 99999", "tcp and", "frob 1"] {
            let e = Bpf::compile(expr, link::ETHERNET).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "cannot compile the filter {expr:?}: libpcap says \""
                )),
                "{e}"
            );
            assert!(e.contains("man 7 pcap-filter"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn any_drops_loopback_s_outgoing_copy_then_runs_the_program() {
        let f = Bpf::compile("tcp", link::LINUX_SLL2).unwrap();
        let prog = skip_loopback_outgoing(1, Some(f.kernel_program()));
        assert_eq!(prog.len(), 5 + f.kernel_program().len());
        assert_eq!(prog[4].code, BPF_RET | BPF_K);
        assert_eq!(prog[4].k, 0);
        assert_eq!(
            skip_loopback_outgoing(1, None).last().map(|i| i.k),
            Some(u32::MAX)
        );
    }
}
