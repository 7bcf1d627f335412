//! The `[relay]` section: the smarthost mail for other hosts leaves
//! through. Without it, such mail is refused at once (local-only mode).

use super::raw::{RawRelay, RawRelayTls};
use super::{ConfigError, Errors};
use crate::smtp::address::{Domain, Mailbox};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTls {
    /// STARTTLS, required: a relay that does not offer it is a temporary
    /// failure, never a reason to send in the clear.
    StartTls,
    /// TLS from the first byte (RFC 8314).
    Implicit,
    /// In the clear (a relay on this box or a trusted network).
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relay {
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    /// Login and the file holding the password (its first line).
    pub auth: Option<(String, PathBuf)>,
    /// PEM certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// The envelope sender (and bare local `From:`) of local users' mail.
    pub rewrite_sender: Option<String>,
    pub connect_timeout: Duration,
    /// Greeting, EHLO, AUTH, MAIL, RCPT, RSET (RFC 5321 4.5.3.2: 5 min).
    pub command_timeout: Duration,
    /// Each block of the message (3 min).
    pub data_timeout: Duration,
    /// The reply to the final dot (10 min).
    pub dot_timeout: Duration,
    /// Connections to the relay at once, each carrying one message after
    /// another; fixed at start.
    pub connections: usize,
    /// The milters the mail of this box's own users passes (`sendmail`,
    /// and clients that logged in).
    pub milters: Vec<super::Milter>,
}

pub(super) fn validate(r: RawRelay, e: &Errors) -> Result<Relay, ConfigError> {
    if Domain::parse(&r.host).is_err() && r.host.parse::<std::net::IpAddr>().is_err() {
        return Err(e.at(
            "relay.host",
            format!("{:?} is not a host name or an IP address", r.host),
        ));
    }
    let tls = match r.tls {
        RawRelayTls::Starttls => RelayTls::StartTls,
        RawRelayTls::Tls => RelayTls::Implicit,
        RawRelayTls::None => RelayTls::None,
    };
    let port = r.port.unwrap_or(match tls {
        RelayTls::StartTls => 587,
        RelayTls::Implicit => 465,
        RelayTls::None => 25,
    });
    if port == 0 {
        return Err(e.at("relay.port", "0 is not a port"));
    }
    let auth = match (r.username, r.password_file) {
        (Some(u), Some(p)) if !u.is_empty() && !p.as_os_str().is_empty() => {
            if tls == RelayTls::None {
                return Err(e.at(
                    "relay.username",
                    "a password is only ever sent over TLS: set tls = \"starttls\" or \"tls\"",
                ));
            }
            Some((u, p))
        }
        (None, None) => None,
        _ => return Err(e.at("relay.username", "username and password_file go together")),
    };
    if let Some(s) = &r.rewrite_sender {
        Mailbox::parse(s).map_err(|err| e.at("relay.rewrite_sender", format!("{s:?}: {err}")))?;
    }
    e.range("relay.connect_timeout", r.connect_timeout, 1, 3600, "")?;
    e.range("relay.command_timeout", r.command_timeout, 1, 3600, "")?;
    e.range("relay.data_timeout", r.data_timeout, 1, 3600, "")?;
    e.range("relay.dot_timeout", r.dot_timeout, 1, 3600, "")?;
    e.range("relay.connections", r.connections as u64, 1, 32, "")?;
    Ok(Relay {
        host: r.host,
        port,
        tls,
        auth,
        ca_file: r.ca_file,
        rewrite_sender: r.rewrite_sender,
        connect_timeout: Duration::from_secs(r.connect_timeout),
        command_timeout: Duration::from_secs(r.command_timeout),
        data_timeout: Duration::from_secs(r.data_timeout),
        dot_timeout: Duration::from_secs(r.dot_timeout),
        connections: r.connections,
        milters: super::milter::list("relay.milters", r.milters, e)?,
    })
}
