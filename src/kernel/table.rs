//! `teardown sockets`: the kernel's TCP socket table, filtered, as text (like `ss -tan -o`)
//! or JSON. The same table explains a failed `bind()` in `run`.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use serde::Serialize;

use super::{KernelSocket, render_table};
use crate::tcp::State;

/// Which sockets to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub port: Option<u16>,
    pub state: Option<State>,
}

impl Filter {
    pub fn keeps(&self, s: &KernelSocket) -> bool {
        let port_ok = self
            .port
            .is_none_or(|p| s.local.port() == p || s.peer.port() == p);
        let state_ok = self.state.is_none_or(|st| s.rfc_state() == Some(st));
        port_ok && state_ok
    }
}

/// A socket's row of the table as JSON, the fields every JSON view of a socket shares
/// (`sockets`, `why`'s holders; flattened into those): addresses as `127.0.0.1:8000` or
/// `[::1]:8000`, times in milliseconds, `null` for no timer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SocketRow<'a> {
    pub state: &'a str,
    pub recv_q: u32,
    pub send_q: u32,
    /// serde writes a `SocketAddr` as its Display (a string) in JSON.
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub timer: Option<&'a str>,
    pub timer_remaining_ms: Option<u64>,
    pub uid: u32,
}

impl<'a> From<&'a KernelSocket> for SocketRow<'a> {
    fn from(s: &'a KernelSocket) -> Self {
        SocketRow {
            state: s.state.name(),
            recv_q: s.recv_q,
            send_q: s.send_q,
            local: s.local,
            peer: s.peer,
            timer: s.timer.as_ref().map(|t| t.kind),
            timer_remaining_ms: s.timer.as_ref().map(|t| t.remaining.as_millis() as u64),
            uid: s.uid,
        }
    }
}

/// One socket of `teardown sockets --json`: the row, its inode and the owner's short name.
#[derive(Serialize)]
struct JsonSocket<'a> {
    #[serde(flatten)]
    row: SocketRow<'a>,
    inode: u64,
    pid: Option<u32>,
    /// The short name (`comm`), where `why` gives the whole command line.
    command: Option<&'a str>,
}

pub fn to_json(sockets: &[KernelSocket]) -> String {
    let rows: Vec<JsonSocket<'_>> = sockets
        .iter()
        .map(|s| JsonSocket {
            row: s.into(),
            inode: s.inode,
            pid: s.owner.as_ref().map(|o| o.pid),
            command: s.owner.as_ref().map(|o| o.command.as_str()),
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

/// Each key of a JSON object with its value's type (`string`, `integer`, `float`, `bool`,
/// `null`, `array`, `object`): what tests of a JSON interface pin, so a renamed, dropped or
/// retyped key fails one.
#[cfg(test)]
pub(crate) fn json_shape(v: &serde_json::Value) -> Vec<(String, &'static str)> {
    use serde_json::Value;
    let Value::Object(map) = v else {
        panic!("not a JSON object: {v}");
    };
    let mut shape: Vec<(String, &'static str)> = map
        .iter()
        .map(|(k, v)| {
            let kind = match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(n) if n.is_f64() => "float",
                Value::Number(_) => "integer",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            (k.clone(), kind)
        })
        .collect();
    shape.sort();
    shape
}

/// `[("a", "string"), ...]` from `&[("a", "string"), ...]`, to compare with `json_shape`.
#[cfg(test)]
pub(crate) fn shape_of(keys: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    let mut shape: Vec<(String, &'static str)> =
        keys.iter().map(|&(k, t)| (k.to_string(), t)).collect();
    shape.sort();
    shape
}

pub fn to_text(sockets: &[KernelSocket]) -> String {
    if sockets.is_empty() {
        "no TCP socket matches\n".to_string()
    } else {
        render_table(sockets)
    }
}

/// Enters the network namespace `ip netns add NAME` made (/run/netns/NAME).
pub fn enter_named_netns(name: &str) -> Result<(), String> {
    if name.contains('/') || name.is_empty() {
        return Err(format!("{name:?} is not a network namespace name"));
    }
    let path = std::path::Path::new("/run/netns").join(name);
    let file = File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!(
            "no network namespace named {name:?} (`ip netns list` shows the ones there are)"
        ),
        _ => format!("{}: {e}", path.display()),
    })?;
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => {
                format!("entering network namespace {name:?} needs root: run with sudo")
            }
            _ => format!("entering network namespace {name:?}: {e}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::parse_proc_net_tcp;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 0200007F:A0E2 06 00000000:00000000 03:0000175D 00000000     0        0 0 3 0000000000000000
   1: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000
   2: 0200007F:A0E4 0100007F:1F40 08 00000000:0000000B 00:00000000 00000000     0        0 41523 1 0000000000000000
";

    #[test]
    fn filters_by_port_at_either_end_and_by_state() {
        let all = parse_proc_net_tcp(TABLE);
        let on_8000: Vec<_> = all
            .iter()
            .filter(|s| {
                Filter {
                    port: Some(8000),
                    state: None,
                }
                .keeps(s)
            })
            .collect();
        assert_eq!(on_8000.len(), 2);
        let tw: Vec<_> = all
            .iter()
            .filter(|s| {
                Filter {
                    port: None,
                    state: Some(State::TimeWait),
                }
                .keeps(s)
            })
            .collect();
        assert_eq!(tw.len(), 1);
        assert_eq!(tw[0].local.port(), 8000);
    }

    #[test]
    fn json_has_states_queues_and_timer_in_ms() {
        let all = parse_proc_net_tcp(TABLE);
        let json: serde_json::Value = serde_json::from_str(&to_json(&all)).unwrap();
        assert_eq!(json[0]["state"], "TIME_WAIT");
        assert_eq!(json[0]["local"], "127.0.0.1:8000");
        assert_eq!(json[0]["timer"], "timewait");
        assert_eq!(json[0]["timer_remaining_ms"], 59810);
        assert_eq!(json[1]["state"], "LISTEN");
        assert_eq!(json[1]["uid"], 1000);
        assert_eq!(json[1]["timer"], serde_json::Value::Null);
        assert_eq!(json[2]["recv_q"], 11);
    }

    /// The keys and types scripts read; a renamed or retyped field fails here.
    #[test]
    fn json_rows_have_exactly_the_documented_keys_and_types() {
        let mut all = parse_proc_net_tcp(TABLE);
        all[1].owner = Some(crate::kernel::Owner {
            pid: 77,
            command: "nginx".into(),
            cmdline: "nginx: master process".into(),
            user: "www".into(),
        });
        all[2].local = "[::1]:41188".parse().unwrap();
        let json: serde_json::Value = serde_json::from_str(&to_json(&all)).unwrap();
        let row = |timer, owner| {
            shape_of(&[
                ("state", "string"),
                ("recv_q", "integer"),
                ("send_q", "integer"),
                ("local", "string"),
                ("peer", "string"),
                ("timer", timer),
                (
                    "timer_remaining_ms",
                    if timer == "null" { "null" } else { "integer" },
                ),
                ("uid", "integer"),
                ("inode", "integer"),
                ("pid", owner),
                ("command", if owner == "null" { "null" } else { "string" }),
            ])
        };
        assert_eq!(json_shape(&json[0]), row("string", "null"));
        assert_eq!(json_shape(&json[1]), row("null", "integer"));
        assert_eq!(json_shape(&json[2]), row("null", "null"));
        // The short name, not the command line; an IPv6 address in brackets, as ss writes it.
        assert_eq!(json[1]["command"], "nginx");
        assert_eq!(json[1]["pid"], 77);
        assert_eq!(json[1]["inode"], 4242);
        assert_eq!(json[2]["local"], "[::1]:41188");
        assert_eq!(json[0]["peer"], "127.0.0.2:41186");
    }

    #[test]
    fn bad_namespace_names_are_refused() {
        assert!(enter_named_netns("../etc").is_err());
        let err = enter_named_netns("teardown-no-such-ns").unwrap_err();
        assert!(err.contains("no network namespace named"), "{err}");
    }
}
