//! The queue: mail that is not delivered while its sender waits. Local
//! programs drop messages into it through the sendmail command
//! ([`maildrop`]); the daemon keeps each one durably ([`store`], in the
//! format of [`envelope`]) and a runner thread delivers it, retries it and
//! reports on it ([`runner`]). [`list`] is what `mailq` shows.

pub mod envelope;
pub mod list;
pub mod maildrop;
pub mod runner;
pub mod store;

pub use runner::{Runner, Wake};
pub use store::{Place, Queue};

/// The daemon's socket in the queue directory: anyone may ask it to look
/// in the maildrop, retry the queue, or list it.
pub const SOCKET: &str = "mailroom.sock";
