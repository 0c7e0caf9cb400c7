//! teardown reproduces TCP connection termination on a real kernel and shows it packet by
//! packet. The pipeline, one module each:
//!
//! scenario (a socket script) → sockets → capture (AF_PACKET) → decode (etherparse) →
//! tcp/tracker (RFC 9293 state per endpoint) → annotate (comment text) → output (pcapng,
//! ladder), with the kernel's own socket table (kernel) to explain a failed `bind()`.
//! `run` ties them together; netns gives each run a private TCP stack.
//!
//! The core (decode, tcp, tracker, annotate, output, the kernel table parser) is pure and
//! unit-tested without privileges; capture, netns and sockets are the thin edges.

pub mod annotate;
pub mod capture;
pub mod cli;
pub mod decode;
pub mod error;
pub mod evidence;
pub mod exec;
pub mod frame;
pub mod gate;
pub mod input;
pub mod kernel;
pub mod netns;
pub mod offline;
pub mod output;
pub mod privs;
pub mod programs;
pub mod record;
pub mod run;
pub mod scenario;
pub mod signals;
pub mod sockets;
pub mod tcp;
pub mod tracker;
pub mod why;
