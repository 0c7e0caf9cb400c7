//! The article's two programs, for two terminals: `teardown server` and `teardown client`.
//! Ctrl-C ends them as a kill would: the kernel closes their sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{Error, exit};
use crate::sockets::{self, SockOpts, errno_name};
use crate::why::{Answer, Target};

pub struct ServerConfig {
    pub addr: SocketAddr,
    pub opts: SockOpts,
    pub reply_forever: bool,
}

pub struct ClientConfig {
    pub server: SocketAddr,
    pub read: bool,
    pub close: bool,
}

fn say(out: &mut dyn Write, line: impl AsRef<str>) {
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// bind, listen, accept one client, read its message, reply, exit. On a failed bind: the
/// article's line, and why (exit 1).
pub fn server(config: &ServerConfig, out: &mut dyn Write) -> Result<i32, Error> {
    let pid = std::process::id();
    let listener = match sockets::listen(config.addr, config.opts) {
        Ok(l) => l,
        Err(e) if e.errno().is_some_and(|n| n != libc::EACCES) => {
            let n = e.errno().unwrap_or(0);
            say(
                out,
                format!(
                    "bind: {} — {} (errno {n}) on {} with {}",
                    std::io::Error::from_raw_os_error(n)
                        .to_string()
                        .split(" (os error")
                        .next()
                        .unwrap_or_default(),
                    errno_name(n),
                    config.addr,
                    config.opts
                ),
            );
            let _ = write!(out, "\n{}", explain_bind(config.addr)?.to_text());
            return Ok(exit::DIFFERENT);
        }
        Err(e) => {
            let hint = privileged_port_hint(config.addr.port());
            return Err(match (e.errno(), hint) {
                (Some(libc::EACCES), Some(hint)) => {
                    Error::Usage(format!("bind {}: EACCES (errno 13): {hint}", config.addr))
                }
                _ => e.into(),
            });
        }
    };
    say(
        out,
        format!(
            "server (pid {pid}): listening on {} with {}",
            config.addr, config.opts
        ),
    );
    let (mut conn, peer) = sockets::accept(&listener)?;
    // Wait for the client as long as it takes (the default timeout is for experiments).
    let _ = conn.set_read_timeout(None);
    let _ = conn.set_write_timeout(None);
    say(out, format!("server: accepted a connection from {peer}"));
    let got = sockets::read(&mut conn, "server")?;
    say(
        out,
        format!("server: read {:?}", String::from_utf8_lossy(&got)),
    );
    if config.reply_forever {
        say(
            out,
            "server: writing \"I am server\" forever (Ctrl-C stops it)",
        );
        let mut sent: u64 = 0;
        loop {
            match conn.write(b"I am server\n") {
                Ok(n) => sent += n as u64,
                Err(e) => {
                    say(
                        out,
                        format!(
                            "server: write failed after {sent} bytes: {}",
                            sockets::describe(&e)
                        ),
                    );
                    return Ok(exit::REPRODUCED);
                }
            }
        }
    }
    sockets::write(&mut conn, "server", b"I am server")?;
    say(
        out,
        "server: wrote \"I am server\"; exits now, closing first (its end will wait in TIME_WAIT)",
    );
    Ok(exit::REPRODUCED)
}

/// Why a bind to `port` got EACCES, when the reason is that it is a privileged port.
fn privileged_port_hint(port: u16) -> Option<String> {
    let start: u16 = crate::netns::sysctl("net.ipv4.ip_unprivileged_port_start")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    (port < start).then(|| {
        format!(
            "ports below {start} need privileges: run as root, give the binary \
             CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=ep), lower \
             net.ipv4.ip_unprivileged_port_start, or choose --port {start} or above"
        )
    })
}

/// What holds `addr`, and the trial binds: the same explanation as `teardown why`.
pub fn explain_bind(addr: SocketAddr) -> Result<Answer, Error> {
    let target = Target {
        ip: (!addr.ip().is_unspecified()).then_some(addr.ip()),
        port: addr.port(),
    };
    crate::why::ask(target, None).map_err(Error::io("reading the kernel's socket table"))
}

/// connect, write, read until EOF and close — or hold the socket as the article's second
/// case does.
pub fn client(config: &ClientConfig, out: &mut dyn Write) -> Result<i32, Error> {
    // As the article's client: no bind(), the kernel picks the source address and port.
    let mut conn = match TcpStream::connect(config.server) {
        Ok(conn) => conn,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            let server = if config.server.ip().is_loopback() {
                format!("`teardown server --port {}`", config.server.port())
            } else {
                format!(
                    "`teardown server --port {}` on {}",
                    config.server.port(),
                    config.server.ip()
                )
            };
            return Err(Error::Usage(format!(
                "nothing listens on {}: start {server} first",
                config.server
            )));
        }
        Err(e) => return Err(sockets::call(format!("connect {}", config.server))(e).into()),
    };
    let _ = conn.set_read_timeout(None);
    let local = conn.local_addr().map(|a| a.to_string()).unwrap_or_default();
    say(
        out,
        format!("client: connected to {} from {local}", config.server),
    );
    sockets::write(&mut conn, "client", b"I am client")?;
    say(out, "client: wrote \"I am client\"");
    if !config.read {
        say(
            out,
            "client: holding the socket open without reading (the article's second case); \
             Ctrl-C ends it",
        );
        hold();
    }
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if total < 64 {
                    say(
                        out,
                        format!(
                            "client: read {:?}",
                            String::from_utf8_lossy(&buf[..n.min(64)])
                        ),
                    );
                }
                total += n as u64;
            }
            Err(e) => {
                say(
                    out,
                    format!("client: read failed: {}", sockets::describe(&e)),
                );
                return Ok(exit::DIFFERENT);
            }
        }
    }
    say(
        out,
        format!("client: read() returned 0 after {total} bytes: EOF, the server closed"),
    );
    if !config.close {
        say(
            out,
            "client: not closing: the socket stays in CLOSE_WAIT; Ctrl-C ends it",
        );
        hold();
    }
    drop(conn);
    say(out, "client: closed");
    Ok(exit::REPRODUCED)
}

/// Sleeps until a signal ends the process.
fn hold() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
