//! Who is at the other end of a session: a client on a TCP connection, or
//! a local program that speaks SMTP on its standard input and output
//! (`sendmail -bs`), which has no address, only a user. The greeting reply
//! and the `Received:` field say which.

use super::trace::address_literal;
use core::fmt;
use core::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Tcp {
        addr: SocketAddr,
        /// Forward-confirmed reverse DNS name, when looked up.
        name: Option<String>,
    },
    Local {
        uid: u32,
        user: String,
    },
}

impl Peer {
    /// What the reply to HELO/EHLO says after the client's own name.
    pub fn hello_text(&self) -> String {
        match self {
            Peer::Tcp { addr, .. } => address_literal(addr.ip()),
            Peer::Local { uid, .. } => format!("(uid {uid})"),
        }
    }
}

/// For logs: the address and port, or the user.
impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp { addr, .. } => write!(f, "{addr}"),
            Peer::Local { uid, user } => write!(f, "{user} (uid {uid})"),
        }
    }
}
