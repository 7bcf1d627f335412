//! mailroom: a lightweight local mail transfer agent. It receives mail over
//! SMTP and writes it straight into local Maildirs.
//!
//! `smtp` is the protocol without IO, `server` owns every socket, `delivery`
//! owns every mailbox file, and `config` is the one place settings are
//! validated.

#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod milter;
pub mod net;
pub mod notices;
pub mod queue;
pub mod relay;
pub mod sendmail;
pub mod server;
pub mod smtp;
