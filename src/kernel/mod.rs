//! The kernel's word: its own table of TCP sockets, to explain a failed `bind()` and to
//! check what teardown inferred from packets.

pub mod agree;
mod proc_net;
pub mod sock_diag;
pub mod table;
pub mod tracefs;

pub(crate) use proc_net::processes;
pub use proc_net::{
    KernelSocket, KernelState, Owner, Timer, all_sockets, fill_owners, parse_proc_net_tcp,
    render_table, sockets_on_port, sockets_on_port_in, tcp_ext_counter, user_name,
};
