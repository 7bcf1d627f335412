//! The SMTP protocol as pure code: command parsing, addresses, replies, the
//! line framer, the body decoder, header sections, trace fields, the
//! session state machine, and the client side the relay speaks. Nothing here touches a socket, a file, a process
//! or the clock, and nothing here imports the rest of the crate: the driver
//! in `server` does the IO and hands the results in (`tests/layering.rs`
//! holds this).

pub mod address;
pub mod client;
pub mod command;
pub mod data;
pub mod edit;
pub mod encoding;
pub mod failure;
pub mod header;
pub mod line;
pub mod milter;
pub mod peer;
pub mod reply;
pub mod sasl;
pub mod session;
pub mod trace;
