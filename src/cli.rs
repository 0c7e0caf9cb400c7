//! The command line: clap's parsed flags, then a validated configuration built once.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};

use crate::error::Error;
use crate::output::style::ColorChoice;
use crate::scenario::{self, Scenario};
use crate::tcp::State;

const EXIT_CODES: &str = "\
Exit codes (each command's --help has its own):
  0    the kernel did what the scenario expects (reproduced)
  1    the kernel did something else (the difference is printed)
  2    usage or environment error (no privileges, port in use, ...)
  130  interrupted by Ctrl-C (143 SIGTERM, 129 SIGHUP); the capture so far is still written.
       `capture` exits 0 when Ctrl-C ends it, as tcpdump does: stopping is how it ends

Shell completions: teardown completions bash|zsh|fish; the manual: teardown man | man -l -";

#[derive(Debug, Parser)]
#[command(
    name = "teardown",
    version,
    about = "Reproduce TCP connection termination on a real kernel and show it packet by packet",
    long_about = "Reproduce TCP connection termination on a real kernel and show it packet by \
packet.\n\nteardown runs a client and a server over loopback, captures every segment, tracks \
each endpoint's TCP state (RFC 9293) and shows why restarting a server fails with \
`bind: Address already in use`.",
    after_help = EXIT_CODES,
)]
pub struct Cli {
    /// When to colour verdicts and the ✓ ○ ✗ marks (NO_COLOR is honoured by auto)
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario for real: capture it, annotate it, explain the restart
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// List the scenarios, each with its one-line lesson
    List,
    /// The kernel's TCP socket table, like `ss -tan -o`: state, queues, addresses, timer
    #[command(after_help = SOCKETS_HELP)]
    Sockets(SocketsArgs),
    /// Why a bind() to this port fails here now: who holds it, trial binds, what to do
    #[command(after_help = WHY_HELP)]
    Why(WhyArgs),
    /// The article's server: bind, listen, accept one client, read, reply, exit
    #[command(after_help = SERVER_HELP)]
    Server(ServerArgs),
    /// The article's client: connect, write, read until EOF, close
    #[command(after_help = CLIENT_HELP)]
    Client(ClientArgs),
    /// A live capture, each TCP segment commented with its state transitions, as pcapng
    #[command(after_help = CAPTURE_HELP)]
    Capture(CaptureArgs),
    /// Comment every TCP segment of a capture file (pcap or pcapng) with its state transitions
    #[command(after_help = ANNOTATE_HELP)]
    Annotate(AnnotateArgs),
    /// Draw the ladder of a capture's connections, in the terminal and as SVG
    #[command(after_help = DIAGRAM_HELP)]
    Diagram(DiagramArgs),
    /// One line per connection of a capture: who closed first, how, final states
    #[command(after_help = SUMMARY_HELP)]
    Summary(SummaryArgs),
    /// Run your own server and clients through the lab: capture, explain their teardown
    #[command(after_help = EXEC_HELP)]
    Exec(ExecArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or PowerShell
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), made from these same definitions
    #[command(after_help = MAN_HELP)]
    Man(ManArgs),
}

const COMPLETIONS_HELP: &str = "\
Examples:
  source <(teardown completions bash)                          this shell only
  teardown completions bash > /etc/bash_completion.d/teardown   every bash, for good
  teardown completions zsh > \"${fpath[1]}/_teardown\"
  teardown completions fish > ~/.config/fish/completions/teardown.fish";

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

const MAN_HELP: &str = "\
Examples:
  teardown man | man -l -                                  read it now
  teardown man > /usr/local/share/man/man1/teardown.1      install it: then `man teardown`
  teardown man run > /usr/local/share/man/man1/teardown-run.1";

#[derive(Debug, Args)]
pub struct ManArgs {
    /// A command's own page (teardown-run(1), ...) instead of teardown(1)
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// The manual page of teardown, or of one of its commands, in roff.
pub fn man_page(command: Option<&str>) -> Result<Vec<u8>, Error> {
    use clap::CommandFactory;
    let top = Cli::command();
    let cmd = match command {
        None => top,
        Some(name) => {
            let names: Vec<String> = top
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            let sub = top.find_subcommand(name).cloned().ok_or_else(|| {
                Error::Usage(format!(
                    "no command {name:?}; commands: {}",
                    names.join(", ")
                ))
            })?;
            sub.name(format!("teardown-{name}"))
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(Error::io("rendering the manual page"))?;
    Ok(out)
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "teardown", &mut out);
    out
}

const ANNOTATE_HELP: &str = "\
Examples:
  teardown annotate server.pcap -o server.pcapng      a tcpdump capture, commented
  tcpdump -i eth0 -w - port 8000 | teardown annotate - -o live.pcapng
  tcpdump -i eth0 -U -w - port 8000 | teardown annotate - -o - | wireshark -k -i -
  wireshark server.pcapng                            the comments are frame.comment

Reads pcap (micro- or nanoseconds) and pcapng (any resolution, several interfaces and
sections); link types Ethernet (VLAN too), Linux cooked SLL and SLL2, raw IPv4/IPv6, BSD
loopback. Every packet is written back byte for byte with its timestamp, comments it already
had are kept; each TCP segment gets one more naming the transitions it caused, and what it is
(a retransmission, a duplicate, out of order, cut by the snaplen, a connection joined
mid-way). Annotating again replaces teardown's earlier comment; other comments stay. No
privileges needed.

OUT is checked before IN is read; it may be IN (written through a temporary file, renamed at
the end). From a pipe or a terminal each packet goes out as it comes (`-o -`: live).

Exit codes: 0 written (also when the reader of `-o -` went away), 1 IN was cut short (a crash,
a full disk): its complete packets are written and a warning names the byte where it ends,
2 bad input (the message names the file and the byte offset) or an OUT that cannot be written.";

const DIAGRAM_HELP: &str = "\
Examples:
  teardown diagram captures/active-close.pcapng
  teardown diagram server.pcap --port 8000 --svg close.svg
  teardown diagram server.pcap --conn 3          (numbers from `teardown summary`)
  teardown diagram server.pcap --conn 3 --svg - | rsvg-convert -o close.png

--svg - writes the SVG to standard output and the ladder to standard error; standard output
takes one picture, so a capture of several connections needs --conn or --port.

Exit codes: 0 drawn, 1 the capture was cut short (the complete part is drawn, a warning names
the byte where it ends), 2 bad input, no such connection or an --svg that cannot be written.";

const SUMMARY_HELP: &str = "\
Examples:
  teardown summary server.pcap
  teardown summary server.pcap --json | jq '.[] | select(.server_state == \"TIME_WAIT\")'

Exit codes: 0 summarised, 1 the capture was cut short (the complete part is summarised, a
warning names the byte where it ends), 2 bad input.";

#[derive(Debug, Args)]
pub struct AnnotateArgs {
    /// The capture to read (pcap or pcapng); `-` reads standard input
    pub input: String,
    /// The pcapng to write; `-` writes standard output
    #[arg(
        short = 'o',
        visible_short_alias = 'w',
        long = "output",
        value_name = "OUT"
    )]
    pub output: std::path::PathBuf,
    /// Which segments get a packet comment: `changes` (a state changed, or a note such as a
    /// retransmission), or `all` (also "no state change: ..." on every other one)
    #[arg(long, value_enum, default_value_t, value_name = "WHICH")]
    pub comments: crate::annotate::Comments,
}

#[derive(Debug, Args)]
pub struct DiagramArgs {
    /// The capture to read; `-` reads standard input
    pub input: String,
    /// Only connection N (as `teardown summary` numbers them)
    #[arg(long, value_name = "N", conflicts_with = "port")]
    pub conn: Option<usize>,
    /// Only connections with this port at either end
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
    /// Also draw it as an SVG picture into this file (one file per connection: -N.svg; those
    /// on one 4-tuple share the first's); `-` writes it to standard output, and the ladder to
    /// standard error
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// The capture to read; `-` reads standard input
    pub input: String,
    /// Print JSON for scripts
    #[arg(long)]
    pub json: bool,
}

const CAPTURE_HELP: &str = "\
Examples (as root; as a user, put sudo in front):
  teardown capture -o live.pcapng                           lo, every TCP segment, until Ctrl-C
  teardown capture port 8000 -c 20 -w x.pcapng              20 packets of port 8000
  teardown capture 'tcp[tcpflags] & (tcp-fin|tcp-rst) != 0' -o ends.pcapng
  teardown capture -i any port 8000 -o x.pcapng             every interface (Linux cooked v2)
  teardown capture -o - | wireshark -k -i -                 live into Wireshark, with comments
  teardown capture -i veth0 --netns blue -o x.pcapng        inside an `ip netns` namespace
  teardown capture -D                                       the interfaces -i takes
  wireshark -X lua_script:scripts/teardown.lua x.pcapng     the states in the Info column

The filter is tcpdump's (pcap-filter(7)): libpcap compiles it and the kernel runs it on the
capture socket, so what it rejects never reaches teardown. Without one, every TCP segment is
written; with one, every packet it matches (TCP segments commented, the rest as they are).

The capture reads a TPACKET_V3 ring (no drops on a loopback flood), gives up its privileges
before it parses a single packet (to -Z USER, or by dropping every capability), stops cleanly
on Ctrl-C, -c or --duration, and ends the file with the kernel's received/dropped counts.

Exit codes: 0 captured, also when stopped by Ctrl-C (as tcpdump) or when the reader of -o -
went away; 2 usage or environment error (unknown interface, a filter libpcap cannot compile,
no CAP_NET_RAW).";

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// A filter expression as for tcpdump (pcap-filter(7)), e.g. `port 8000`; its words are
    /// joined by spaces. Without one: every TCP segment
    #[arg(value_name = "EXPRESSION", conflicts_with_all = ["filter", "port"])]
    pub expression: Vec<String>,
    /// The interface to capture on; `any` for all of them
    #[arg(
        short = 'i',
        long = "interface",
        default_value = "lo",
        value_name = "IFACE"
    )]
    pub iface: String,
    /// Only TCP segments with this port at either end (the expression `tcp port N`)
    #[arg(long, conflicts_with = "filter", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The filter expression as one argument (as EXPRESSION)
    #[arg(short = 'f', long = "filter", value_name = "EXPR")]
    pub filter: Option<String>,
    /// Stop after this many packets
    #[arg(short = 'c', long = "count", value_name = "COUNT")]
    pub count: Option<u64>,
    /// Stop after this many seconds
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// The pcapng file to write; `-` streams it to standard output, flushed per packet
    #[arg(
        short = 'o',
        visible_short_alias = 'w',
        long = "output",
        value_name = "FILE",
        required_unless_present = "list_interfaces"
    )]
    pub output: Option<std::path::PathBuf>,
    /// List the interfaces -i takes, as tcpdump -D does, and exit
    #[arg(short = 'D', long = "list-interfaces")]
    pub list_interfaces: bool,
    /// Capture inside this network namespace (a name `ip netns list` shows)
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// After opening the capture socket, become this user (as tcpdump -Z does); without it
    /// every capability is dropped instead
    #[arg(short = 'Z', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Which segments get a packet comment: `changes` (a state changed, or a note such as a
    /// retransmission), or `all` (also "no state change: ..." on every other one)
    #[arg(long, value_enum, default_value_t, value_name = "WHICH")]
    pub comments: crate::annotate::Comments,
}

const SERVER_HELP: &str = "\
Examples (two terminals, as in the article):
  teardown server                     terminal 1: listen on 0.0.0.0:8000
  teardown client                     terminal 2: connect, write, read until EOF, close
  teardown server                     terminal 1 again at once: bind fails, and why
  teardown server --reuseaddr         with SO_REUSEADDR (set it on both runs, on Linux)
  teardown server --reply-forever     the article's while(1) write(); Ctrl-C stops it

A failed bind prints the article's line with the errno name and number, then the same
explanation as `teardown why`: the socket that holds the port, its state, its timer, and the
option that would have let the bind succeed. Ctrl-C ends the server as a kill would.

A port below 1024 (net.ipv4.ip_unprivileged_port_start) needs root or CAP_NET_BIND_SERVICE.

Exit codes: 0 served a client, 1 the bind failed (explained), 2 usage or environment error.";

const CLIENT_HELP: &str = "\
Examples:
  teardown client                     connect to 127.0.0.1:8000, write, read until EOF, close
  teardown client --no-read           keep the socket open without reading: the server's end
                                      then waits in FIN_WAIT_2, this one in CLOSE_WAIT
  teardown client --no-close          read until EOF but never close (CLOSE_WAIT)

Exit codes: 0 done, 1 the connection failed in a way the output names, 2 usage or
environment error (e.g. nothing listens on the port: start `teardown server` first).";

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The address to bind
    #[arg(long, default_value = "0.0.0.0")]
    pub addr: std::net::IpAddr,
    /// The port to bind (the article's is 8000)
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Set SO_REUSEADDR before bind()
    #[arg(long)]
    pub reuseaddr: bool,
    /// Set SO_REUSEPORT before bind()
    #[arg(long)]
    pub reuseport: bool,
    /// Reply in a loop, as the article's while(1) write()
    #[arg(long)]
    pub reply_forever: bool,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's address
    #[arg(long, default_value = "127.0.0.1")]
    pub addr: std::net::IpAddr,
    /// The server's port
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Keep the socket open after reading EOF, never close it
    #[arg(long)]
    pub no_close: bool,
    /// Keep the socket open without reading (and without closing)
    #[arg(long)]
    pub no_read: bool,
}

const WHY_HELP: &str = "\
Examples (as root; as a user, put sudo in front):
  teardown why 8000                   a server binding port 8000 on every address
  teardown why 127.0.0.1:8000         on one address ([::1]:8000 for IPv6)
  teardown why 8000 --json            for scripts
  teardown why 8000 --netns blue --netns green
  teardown why --connect 10.0.0.5:80  a client's connect() fails with EADDRNOTAVAIL
  teardown why --connect localhost:8000

It lists every socket that holds the port (from the kernel: state, addresses, queues,
timer, and the process behind it where there is one), tries the bind for real with a
throw-away socket (no option, SO_REUSEADDR, SO_REUSEPORT, both; never listening, closed at
once), and says which rule applies and what to do. Without root it shows what an ordinary
user may see and says what it could not.

With --connect it counts the local ports held by connections to that server (TIME_WAIT
above all: the client closed first) against net.ipv4.ip_local_port_range, and names the
fixes that work and the ones that harm.

Exit codes: 0 a plain bind() (a connect() with --connect) would succeed now, 1 it would not,
2 usage or permission error.";

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["target", "connect"])))]
pub struct WhyArgs {
    /// PORT (or :PORT), ADDRESS:PORT or [IPv6-ADDRESS]:PORT: why bind() fails
    pub target: Option<String>,

    /// HOST:PORT of a server (127.0.0.1:8000, [::1]:8000, localhost:8000): why connect() to it
    /// fails with EADDRNOTAVAIL (the local ports held by connections to it, mostly in
    /// TIME_WAIT, against the ephemeral port range)
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Option<String>,

    /// Look in this network namespace (a name `ip netns list` shows); repeat for several.
    /// Default: the current one
    #[arg(long, value_name = "NAME")]
    pub netns: Vec<String>,

    /// Print JSON for scripts
    #[arg(long)]
    pub json: bool,
}

const SOCKETS_HELP: &str = "\
Examples (as root; as a user, put sudo in front):
  teardown sockets --port 8000                  every socket with port 8000 at either end
  teardown sockets --state time-wait            the TIME_WAIT sockets and their time left
  teardown sockets --netns blue --json          inside `ip netns` namespace blue, as JSON

The table comes from sock_diag, the kernel interface ss uses; TIME_WAIT and orphaned
FIN_WAIT_2 sockets belong to no process (the kernel keeps them). Process names of other
users' sockets need root.

Exit codes: 0 shown (also when nothing matches), 2 usage or environment error.";

#[derive(Debug, Args)]
pub struct SocketsArgs {
    /// Only sockets with this port at either end
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Only sockets in this state: LISTEN, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT,
    /// CLOSING, LAST_ACK, TIME_WAIT, SYN_SENT, SYN_RECEIVED (`time-wait` works too)
    #[arg(long, value_parser = parse_state)]
    pub state: Option<State>,

    /// Look inside this network namespace (a name `ip netns list` shows)
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,

    /// Print JSON for scripts (times in milliseconds)
    #[arg(long)]
    pub json: bool,
}

fn parse_state(s: &str) -> Result<State, String> {
    State::parse(s).ok_or_else(|| {
        format!(
            "unknown state {s:?}; states: {}",
            State::ALL.map(|st| st.name()).join(", ")
        )
    })
}

const RUN_HELP: &str = "\
Examples (as root; as a user, put sudo in front):
  teardown run active-close                the article's first case: TIME_WAIT, EADDRINUSE
  teardown run client-never-closes         the second case: FIN_WAIT_2 and CLOSE_WAIT
  teardown run reuseaddr --port 9000       the fix, on another port
  wireshark captures/active-close.pcapng   the capture, a comment on every packet

Each run happens in a fresh private network namespace (only loopback), so a TIME_WAIT left
by the previous run never spoils the next, and nothing on the host is touched. It needs
root (or CAP_SYS_ADMIN and CAP_NET_RAW); without root, unprivileged user namespaces are
used where the system allows them.

Every inferred state change is checked against the kernel's own trace (tracefs tracepoint
sock:inet_sock_set_state, in a private instance removed afterwards) and its socket table
(sock_diag, as ss reads it): \"kernel agrees\" in the packet comment, ✓ in the diagram, or
MISMATCH and exit 1. Without tracefs (no root) the run says so once and goes on.

Ports: a scenario uses --port and, for some, the ports just above it (bind-matrix 10,
tw-reuse 3, timewait-assassination 2). `run all` runs each in a namespace of its own on
--port; `run all --host` gives scenario i (its place in `teardown list`, from 0) the ports
from --port + 10×i, and checks every one of them is free before the first starts. Progress
goes to standard error, the table (or with --json one JSON array of the reports) to
standard output.

Exit codes:
  0    the kernel did what the scenario expects (reproduced)
  1    the kernel did something else, or disagreed with the inference (printed)
  2    usage or environment error (no privileges, port in use, ...)
  130  interrupted by Ctrl-C (143 SIGTERM, 129 SIGHUP); the capture so far is still written";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario to run (`teardown list` tells what each shows), or `all`: the whole
    /// catalogue, each in its own namespace, and one summary table
    #[arg(value_parser = PossibleValuesParser::new(scenario::names().into_iter().chain(["all"])))]
    pub scenario: String,

    /// The server's port (the article's is 8000)
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Run on the host's own loopback instead of a private network namespace
    #[arg(long, conflicts_with = "netns")]
    pub host: bool,

    /// Run across two private network namespaces joined by a veth pair, a client host
    /// (10.77.0.1) and a server host (10.77.0.2), as the textbook's two machines; the capture
    /// is taken on the client's end of the wire. The scenarios that hold back or drop a
    /// segment always run this way
    #[arg(long)]
    pub netns: bool,

    /// The client closes the moment read() returns 0, as most programs do. Linux then
    /// usually sends the ACK of the server's FIN on the client's own FIN, so the close
    /// takes three segments. Without this flag the client waits for that ACK first and you
    /// see the textbook's four
    #[arg(long)]
    pub quick_close: bool,

    /// Print the report as JSON on standard output (segments, transitions, bind results,
    /// verdict), for scripts; the narration goes to standard error
    #[arg(long)]
    pub json: bool,

    /// Fail (exit 2) when the kernel's own trace of state changes (tracefs) is not available,
    /// instead of going on with states inferred from packets only
    #[arg(long)]
    pub require_kernel: bool,

    /// Where to write the annotated capture, its SVG beside it [default:
    /// captures/SCENARIO.pcapng]; `-` writes the pcapng to standard output (the narration then
    /// goes to standard error). Checked before the run starts: the directory must exist
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Which segments get a packet comment: `changes` (a state changed, or a note such as a
    /// retransmission), or `all` (also "no state change: ..." on every other one)
    #[arg(long, value_enum, default_value_t, value_name = "WHICH")]
    pub comments: crate::annotate::Comments,
}

/// A run, validated.
#[derive(Debug)]
pub struct RunConfig {
    pub scenario: &'static Scenario,
    pub port: u16,
    pub host: bool,
    pub netns: bool,
    pub quick_close: bool,
    pub require_kernel: bool,
    pub json: bool,
    /// `-` is standard output.
    pub output: PathBuf,
    /// No -w: `captures/SCENARIO.pcapng`, whose directory the run makes when missing.
    pub default_output: bool,
    /// `--color` (global): main sets it from the top-level flag.
    pub color: ColorChoice,
    pub comments: crate::annotate::Comments,
}

impl TryFrom<RunArgs> for RunConfig {
    type Error = Error;

    fn try_from(args: RunArgs) -> Result<RunConfig, Error> {
        let scenario = scenario::find(&args.scenario).ok_or_else(|| {
            Error::Usage(format!(
                "unknown scenario {:?}; known: {}",
                args.scenario,
                scenario::names().join(", ")
            ))
        })?;
        scenario.port_range(args.port).map_err(Error::Usage)?;
        let default_output = args.write.is_none();
        let output = args
            .write
            .unwrap_or_else(|| PathBuf::from("captures").join(format!("{}.pcapng", scenario.name)));
        Ok(RunConfig {
            scenario,
            port: args.port,
            host: args.host,
            netns: args.netns,
            quick_close: args.quick_close,
            require_kernel: args.require_kernel,
            json: args.json,
            output,
            default_output,
            color: ColorChoice::Auto,
            comments: args.comments,
        })
    }
}

const EXEC_HELP: &str = "\
Examples (as root; as a user, put sudo in front):
  teardown exec --server 'python3 -m http.server 8000 --bind 127.0.0.1' \\
                --client 'curl -s --ignore-content-length -o /dev/null http://127.0.0.1:8000/' \\
                --port 8000 --restart
  teardown exec --server 'nginx -c /tmp/nginx.conf' --port 8080 --repeat 3 --stop-server \\
                --client 'curl -s --ignore-content-length http://127.0.0.1:8080/'
                (nginx.conf: daemon off; a server listening on 127.0.0.1:8080; see the README)
  teardown exec --server './server' --client './client' --port 8000 \\
                --stop-server-after 0.3 --restart      the article's experiment

The server starts in a private network namespace (as the sudo user under sudo, or -Z USER);
teardown waits until something listens on --port (sock_diag), runs each --client in turn,
shows their output as `server│ ...` and `client│ ...`, and at the end says per connection
who closed first, each end's path and owner (pid, command line), the kernel's check, and
what the programs left behind (TIME_WAIT, CLOSE_WAIT a program never closed, orphaned
FIN_WAIT_2). --restart (which stops the server after the clients unless told when) starts
the server again at once and explains why its bind() failed, as `run` does. With --netns the
server has a host of its own at 10.77.0.2 (clients connect there); the clients run at
10.77.0.1. Every program teardown starts dies with the run, also when teardown is killed.

Exit codes: 0 run and explained, 1 the kernel disagreed with the inference, 2 a command that
cannot start, a server that never listens (its last lines and what listens are printed),
usage or environment error; 130 interrupted (the capture so far is written).";

/// When `exec` stops the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopServer {
    /// It runs until the end of the run (then it is killed).
    Never,
    /// After the last client.
    AfterClients,
    /// This long after the first client started, whether a client still runs or not.
    After(std::time::Duration),
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The server's command line (quoted: one argument); shell syntax runs it through sh -c
    #[arg(long, value_name = "CMD")]
    pub server: String,
    /// A client's command line, run once the server listens; repeat for several, run in turn
    #[arg(long = "client", value_name = "CMD")]
    pub clients: Vec<String>,
    /// The port the server listens on (teardown waits for it, captures it, explains it)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Run each client this many times
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Run this many copies of each client at once (load)
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    /// Stop the server (--signal) after the clients
    #[arg(long, conflicts_with = "stop_server_after")]
    pub stop_server: bool,
    /// Stop the server this many seconds after the first client started, while a client
    /// may still run (the article's "shut the server down")
    #[arg(long, value_name = "SECS")]
    pub stop_server_after: Option<f64>,
    /// The signal that stops the server
    #[arg(long, value_name = "SIG", default_value = "TERM", value_parser = PossibleValuesParser::new(["INT", "TERM", "KILL"]))]
    pub signal: String,
    /// Start the server again at once after it stopped, and explain what its bind() did
    #[arg(long)]
    pub restart: bool,
    /// How long the server may take to listen, and a client to finish (then it is killed)
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Run the programs as this user (default: the sudo user under sudo, else as is)
    #[arg(short = 'Z', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Give the server a host of its own (10.77.0.2), joined to the clients' (10.77.0.1)
    /// by a veth pair
    #[arg(long)]
    pub netns: bool,
    /// Print the report as JSON on standard output; the narration goes to standard error
    #[arg(long)]
    pub json: bool,
    /// Fail (exit 2) when the kernel's trace (tracefs) is not available
    #[arg(long)]
    pub require_kernel: bool,
    /// Where to write the annotated capture, its SVG beside it [default:
    /// captures/exec-SERVER.pcapng]; `-` writes the pcapng to standard output
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,
}

/// An `exec`, validated.
#[derive(Debug)]
pub struct ExecConfig {
    pub server: crate::exec::CommandLine,
    pub clients: Vec<crate::exec::CommandLine>,
    pub port: u16,
    pub repeat: u32,
    pub parallel: u32,
    pub stop: StopServer,
    pub signal: i32,
    pub restart: bool,
    pub timeout: std::time::Duration,
    /// (uid, gid) the programs run as, and the name to say.
    pub user: Option<(u32, u32, String)>,
    pub netns: bool,
    pub json: bool,
    pub require_kernel: bool,
    pub output: PathBuf,
    pub default_output: bool,
    pub color: ColorChoice,
}

impl TryFrom<ExecArgs> for ExecConfig {
    type Error = Error;

    fn try_from(args: ExecArgs) -> Result<ExecConfig, Error> {
        use crate::exec::CommandLine;
        let seconds = |flag: &str, v: f64, zero_ok: bool| {
            if v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)) && v < 1e6 {
                Ok(std::time::Duration::from_secs_f64(v))
            } else {
                Err(Error::Usage(format!(
                    "{flag} {v}: give a number of seconds{}",
                    if zero_ok { ", 0 or more" } else { " above 0" }
                )))
            }
        };
        let timeout = seconds("--timeout", args.timeout, false)?;
        let mut stop = match args.stop_server_after {
            Some(v) => StopServer::After(seconds("--stop-server-after", v, true)?),
            None if args.stop_server => StopServer::AfterClients,
            None => StopServer::Never,
        };
        // A restart needs the old server gone: without a time, after the clients.
        if args.restart && stop == StopServer::Never {
            stop = StopServer::AfterClients;
        }
        let server = CommandLine::parse("--server", &args.server).map_err(Error::Usage)?;
        let clients = args
            .clients
            .iter()
            .map(|c| CommandLine::parse("--client", c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Usage)?;
        let signal = match args.signal.as_str() {
            "INT" => libc::SIGINT,
            "KILL" => libc::SIGKILL,
            _ => libc::SIGTERM,
        };
        let user = match &args.user {
            Some(name) => {
                let (uid, gid) = crate::privs::lookup_user(name)
                    .map_err(|e| Error::Usage(format!("{e}: give a user that exists")))?;
                Some((uid, gid, name.clone()))
            }
            None => sudo_user(),
        };
        let default_output = args.write.is_none();
        let output = args.write.unwrap_or_else(|| {
            PathBuf::from("captures").join(format!("exec-{}.pcapng", server.name()))
        });
        Ok(ExecConfig {
            server,
            clients,
            port: args.port,
            repeat: args.repeat,
            parallel: args.parallel,
            stop,
            signal,
            restart: args.restart,
            timeout,
            user,
            netns: args.netns,
            json: args.json,
            require_kernel: args.require_kernel,
            output,
            default_output,
            color: ColorChoice::Auto,
        })
    }
}

/// Under sudo, the user who asked: the programs run as them, not as root.
fn sudo_user() -> Option<(u32, u32, String)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |var: &str| std::env::var(var).ok()?.parse::<u32>().ok();
    let (uid, gid) = (id("SUDO_UID")?, id("SUDO_GID")?);
    if uid == 0 {
        return None;
    }
    Some((uid, gid, crate::kernel::user_name(uid)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_to_the_article_port_and_captures_dir() {
        let cli = Cli::try_parse_from(["teardown", "run", "active-close"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let config = RunConfig::try_from(args).unwrap();
        assert_eq!(config.port, 8000);
        assert!(!config.host);
        assert_eq!(config.output, PathBuf::from("captures/active-close.pcapng"));
    }

    #[test]
    fn unknown_scenario_lists_the_known_ones() {
        let err = Cli::try_parse_from(["teardown", "run", "nope"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("active-close"), "{text}");
        assert!(text.contains("client-never-closes"), "{text}");
    }

    #[test]
    fn sockets_states_parse_both_spellings() {
        let cli = Cli::try_parse_from(["teardown", "sockets", "--state", "time-wait"]).unwrap();
        let Command::Sockets(args) = cli.command else {
            panic!("not sockets")
        };
        assert_eq!(args.state, Some(State::TimeWait));
        let err = Cli::try_parse_from(["teardown", "sockets", "--state", "bogus"]).unwrap_err();
        assert!(err.to_string().contains("states: CLOSED, LISTEN"), "{err}");
    }

    #[test]
    fn a_scenario_whose_ports_pass_65535_is_refused_before_it_starts() {
        let parse = |port: &str| {
            let cli =
                Cli::try_parse_from(["teardown", "run", "bind-matrix", "--port", port]).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("not run")
            };
            RunConfig::try_from(args)
        };
        let err = parse("65527").unwrap_err().to_string();
        assert!(
            err.contains("bind-matrix uses 10 ports, 65527 to 65536"),
            "{err}"
        );
        assert!(err.contains("give --port 65526 or lower"), "{err}");
        assert_eq!(parse("65526").unwrap().port, 65526);
    }

    #[test]
    fn the_manual_has_every_command_and_a_page_of_its_own_for_each() {
        let page = String::from_utf8(man_page(None).unwrap()).unwrap();
        assert!(page.contains(".TH teardown 1"), "{page}");
        for cmd in ["run", "annotate", "capture", "why", "completions"] {
            assert!(
                page.contains(&format!("teardown\\-{cmd}(1)")),
                "{cmd}: {page}"
            );
        }
        let run = String::from_utf8(man_page(Some("run")).unwrap()).unwrap();
        assert!(run.contains(".TH teardown-run 1"), "{run}");
        assert!(run.contains("quick\\-close"), "{run}");
        let err = man_page(Some("nope")).unwrap_err().to_string();
        assert!(err.contains("commands: run, list"), "{err}");
    }

    #[test]
    fn completions_know_the_commands_and_the_scenarios() {
        let bash = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        assert!(bash.contains("complete -F _teardown"), "{bash}");
        assert!(bash.contains("active-close"), "scenario names complete");
        let fish = String::from_utf8(completions(clap_complete::Shell::Fish)).unwrap();
        assert!(fish.contains("complete -c teardown"), "{fish}");
        let zsh = String::from_utf8(completions(clap_complete::Shell::Zsh)).unwrap();
        assert!(zsh.starts_with("#compdef teardown"), "{zsh}");
    }

    fn exec_config(args: &[&str]) -> Result<ExecConfig, Error> {
        let mut all = vec!["teardown", "exec"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| Error::Usage(e.to_string()))?;
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        ExecConfig::try_from(args)
    }

    #[test]
    fn exec_restart_stops_the_server_after_the_clients_and_names_the_capture_after_it() {
        let c = exec_config(&["--server", "./server 8000", "--port", "8000", "--restart"]).unwrap();
        assert_eq!(c.stop, StopServer::AfterClients);
        assert_eq!(c.output, PathBuf::from("captures/exec-server.pcapng"));
        assert_eq!(c.timeout, std::time::Duration::from_secs(10));
        assert_eq!(c.signal, libc::SIGTERM);
        let c = exec_config(&[
            "--server",
            "python3 -m http.server",
            "--port",
            "8000",
            "--stop-server-after",
            "0.3",
            "--signal",
            "KILL",
            "--client",
            "curl -s http://127.0.0.1:8000/",
            "--client",
            "curl -I http://127.0.0.1:8000/",
        ])
        .unwrap();
        assert_eq!(
            c.stop,
            StopServer::After(std::time::Duration::from_millis(300))
        );
        assert_eq!(c.signal, libc::SIGKILL);
        assert_eq!(c.clients.len(), 2);
        assert_eq!(c.output, PathBuf::from("captures/exec-python3.pcapng"));
        let c = exec_config(&["--server", "x", "--port", "1"]).unwrap();
        assert_eq!(c.stop, StopServer::Never);
    }

    #[test]
    fn exec_refuses_bad_seconds_an_empty_command_and_both_stops() {
        let err = |args: &[&str]| exec_config(args).unwrap_err().to_string();
        let e = err(&["--server", "x", "--port", "1", "--timeout", "0"]);
        assert!(
            e.contains("--timeout 0: give a number of seconds above 0"),
            "{e}"
        );
        let e = err(&["--server", "x", "--port", "1", "--stop-server-after=-1"]);
        assert!(e.contains("give a number of seconds, 0 or more"), "{e}");
        let e = err(&["--server", " ", "--port", "1"]);
        assert!(e.contains("--server: the command is empty"), "{e}");
        let e = err(&[
            "--server",
            "x",
            "--port",
            "1",
            "--stop-server",
            "--stop-server-after",
            "1",
        ]);
        assert!(e.contains("cannot be used with"), "{e}");
        let e = err(&["--server", "x", "--port", "1", "--signal", "HUP"]);
        assert!(e.contains("invalid value 'HUP'"), "{e}");
    }

    #[test]
    fn port_zero_is_refused() {
        assert!(Cli::try_parse_from(["teardown", "run", "active-close", "--port", "0"]).is_err());
    }
}
