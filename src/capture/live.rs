//! The capture's errors, and the interfaces (pnet): the one `-i` names, and those
//! `capture -D` lists. The frames themselves come from the TPACKET_V3 ring (`ring.rs`).

use std::io;

use pnet_datalink::{self as datalink, NetworkInterface};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "capturing packets needs CAP_NET_RAW: run with sudo, or once \
         `sudo setcap cap_net_raw,cap_net_admin+ep {}`",
        exe()
    )]
    NoPermission,
    #[error("no interface named {name:?}; interfaces here: {available}")]
    NoSuchInterface { name: String, available: String },
    #[error("capture on {iface}: {op}: {source}")]
    Io {
        iface: String,
        op: &'static str,
        source: io::Error,
    },
}

fn exe() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "teardown".into())
}

/// The interface named `name`, or an error that lists the ones there are.
pub(crate) fn find_interface(name: &str) -> Result<NetworkInterface, CaptureError> {
    let all = datalink::interfaces();
    match all.iter().find(|i| i.name == name) {
        Some(i) => Ok(i.clone()),
        None => Err(CaptureError::NoSuchInterface {
            name: name.to_string(),
            available: all
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// One line of `capture -D`, as `tcpdump -D` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub description: Option<String>,
    pub up: bool,
    pub running: bool,
    pub loopback: bool,
    /// The carrier, where the interface has one and is up.
    pub connected: Option<bool>,
}

impl Listed {
    /// libpcap's order (pcap_findalldevs): running and up first, disconnected later,
    /// loopback after the others, `any` after every non-loopback interface, then the
    /// number at the end of the name.
    fn merit(&self) -> u32 {
        let digits = self.name.len()
            - self
                .name
                .bytes()
                .rev()
                .take_while(u8::is_ascii_digit)
                .count();
        let mut n = if self.name == super::ring::ANY {
            0x0FFF_FFFF
        } else {
            self.name[digits..]
                .parse::<u32>()
                .map_or(0, |i| i.saturating_add(1).min(0x0FFF_FFFE))
        };
        if !self.running {
            n |= 0x8000_0000;
        }
        if !self.up {
            n |= 0x4000_0000;
        }
        if self.connected == Some(false) {
            n |= 0x2000_0000;
        }
        if self.loopback {
            n |= 0x1000_0000;
        }
        n
    }

    fn flags(&self) -> String {
        let mut flags = Vec::new();
        for (on, name) in [
            (self.up, "Up"),
            (self.running, "Running"),
            (self.loopback, "Loopback"),
        ] {
            if on {
                flags.push(name);
            }
        }
        match self.connected {
            Some(true) => flags.push("Connected"),
            Some(false) => flags.push("Disconnected"),
            None => {}
        }
        if flags.is_empty() {
            "none".to_string()
        } else {
            flags.join(", ")
        }
    }
}

/// The interfaces `-i` takes here, in libpcap's order, `any` among them.
pub fn interfaces() -> Vec<Listed> {
    let mut all: Vec<Listed> = datalink::interfaces()
        .into_iter()
        .map(|i| {
            Listed {
                // IFF_LOWER_UP, the carrier (not /sys, which shows the namespace it was
                // mounted in); a loopback has none, one that is down says nothing.
                connected: (!i.is_loopback() && i.is_up()).then(|| i.is_lower_up()),
                up: i.is_up(),
                running: i.is_running(),
                loopback: i.is_loopback(),
                description: None,
                name: i.name,
            }
        })
        .collect();
    all.push(Listed {
        name: super::ring::ANY.to_string(),
        description: Some("Pseudo-device that captures on all interfaces".to_string()),
        up: true,
        running: true,
        loopback: false,
        connected: None,
    });
    // Stable: equal merits keep the kernel's order.
    all.sort_by_key(Listed::merit);
    all
}

/// `1.eth0 [Up, Running, Connected]`, one line each.
pub fn list_text(interfaces: &[Listed]) -> String {
    interfaces
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let description = i
                .description
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            format!("{}.{}{description} [{}]\n", n + 1, i.name, i.flags())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, up: bool, loopback: bool, connected: Option<bool>) -> Listed {
        Listed {
            name: name.to_string(),
            description: None,
            up,
            running: up,
            loopback,
            connected,
        }
    }

    #[test]
    fn the_list_reads_like_tcpdump_s() {
        let mut devs = vec![
            dev("lo", true, false, None),
            dev("ifb0", false, false, None),
            dev("veth1", true, false, Some(false)),
            dev("eth0", true, false, Some(true)),
        ];
        devs[0].loopback = true;
        devs.push(Listed {
            description: Some("Pseudo-device that captures on all interfaces".into()),
            ..dev("any", true, false, None)
        });
        devs.sort_by_key(Listed::merit);
        assert_eq!(
            list_text(&devs),
            "1.eth0 [Up, Running, Connected]\n\
             2.any (Pseudo-device that captures on all interfaces) [Up, Running]\n\
             3.lo [Up, Running, Loopback]\n\
             4.veth1 [Up, Running, Disconnected]\n\
             5.ifb0 [none]\n"
        );
    }

    #[test]
    fn this_machine_lists_lo_and_any() {
        let all = interfaces();
        assert!(all.iter().any(|i| i.name == "lo" && i.loopback), "{all:?}");
        assert!(all.iter().any(|i| i.name == "any"), "{all:?}");
    }
}
