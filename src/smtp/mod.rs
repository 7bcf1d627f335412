//! The SMTP protocol as pure code: command parsing, addresses, replies, the
//! session state machine and the body decoder. Nothing here touches a
//! socket or a file.

pub mod address;
pub mod command;
pub mod data;
pub mod reply;
pub mod session;
pub mod trace;
