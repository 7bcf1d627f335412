//! Local delivery behind one interface: [`Delivery::lookup`] decides at
//! RCPT time who a recipient is, [`Delivery::deliver`] writes an accepted
//! message to every recipient and reports one result each. Every failure is
//! classified once, where it happens, as temporary or permanent.

pub mod maildir;
pub mod spool;

use crate::config::{self, Config};
use crate::smtp::address::{Domain, ForwardPath};
use std::fmt;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Maildir(PathBuf),
}

/// A resolved local recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address written to `Delivered-To:` and the logs.
    pub address: String,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Local(Recipient),
    /// A local domain, but no such user: 550 5.1.1 at RCPT time.
    UnknownUser,
    /// Not one of our domains: we do not relay.
    NotLocal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Temporary,
    /// Temporary, because the disk or a quota is full (452 4.3.1).
    DiskFull,
    Permanent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    pub kind: Failure,
    pub reason: String,
}

impl DeliveryError {
    /// Classifies an IO error. A full disk or quota is temporary and said
    /// so; any other local error is temporary too, because an administrator
    /// can fix it and the client will retry.
    pub fn io(context: &str, err: &io::Error) -> DeliveryError {
        let kind = match err.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Failure::DiskFull,
            _ => Failure::Temporary,
        };
        DeliveryError {
            kind,
            reason: format!("{context}: {err}"),
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// An accepted message on its way to the mailboxes.
pub struct Message<'a> {
    pub id: &'a str,
    /// The reverse path without angle brackets; empty for `<>`.
    pub reverse_path: &'a str,
    pub recipients: &'a [Recipient],
    /// The spooled message, starting with our `Received:` field.
    pub body: &'a File,
}

pub trait Delivery: Send + Sync {
    fn lookup(&self, rcpt: &ForwardPath) -> Lookup;
    /// Delivers to every recipient; one result per recipient, in order.
    fn deliver(&self, msg: &Message<'_>) -> Vec<Result<(), DeliveryError>>;
}

/// Delivery to the virtual mailboxes of the configuration.
pub struct Local {
    config: Arc<Config>,
}

impl Local {
    pub fn new(config: Arc<Config>) -> Local {
        Local { config }
    }

    fn is_local(&self, domain: &Domain) -> bool {
        match domain {
            Domain::Name(name) => self.config.is_local_domain(name),
            Domain::Ipv4(ip) => self.is_our_ip(IpAddr::V4(*ip)),
            Domain::Ipv6(ip) => self.is_our_ip(IpAddr::V6(*ip)),
            Domain::General { .. } => false,
        }
    }

    fn is_our_ip(&self, ip: IpAddr) -> bool {
        ip.to_canonical().is_loopback() || self.config.server.listen.iter().any(|a| a.ip() == ip)
    }

    fn mailbox(&self, local: &str, domain: &str) -> Lookup {
        if config::bad_local_part(local).is_some() {
            return Lookup::UnknownUser;
        }
        let key = if self.config.case_insensitive_users {
            local.to_lowercase()
        } else {
            local.to_string()
        };
        match self.config.mailboxes.get(&key) {
            Some(mb) => Lookup::Local(Recipient {
                address: format!("{key}@{}", domain.to_lowercase()),
                target: Target::Maildir(mb.maildir.clone()),
            }),
            None => Lookup::UnknownUser,
        }
    }
}

impl Delivery for Local {
    fn lookup(&self, rcpt: &ForwardPath) -> Lookup {
        match rcpt {
            ForwardPath::Postmaster => self.mailbox("postmaster", &self.config.hostname),
            ForwardPath::Mailbox(m) if self.is_local(&m.domain) => {
                self.mailbox(&m.local, &m.domain.to_string())
            }
            ForwardPath::Mailbox(_) => Lookup::NotLocal,
        }
    }

    fn deliver(&self, msg: &Message<'_>) -> Vec<Result<(), DeliveryError>> {
        let mut results: Vec<Result<(), DeliveryError>> = Vec::with_capacity(msg.recipients.len());
        for (i, rcpt) in msg.recipients.iter().enumerate() {
            // One copy per mailbox, however many addresses lead there.
            if let Some(j) = msg.recipients[..i]
                .iter()
                .position(|r| r.target == rcpt.target)
            {
                results.push(results[j].clone());
                continue;
            }
            let prefix = format!(
                "Return-Path: <{}>\nDelivered-To: {}\n",
                msg.reverse_path, rcpt.address
            );
            let result = match &rcpt.target {
                Target::Maildir(dir) => {
                    maildir::deliver(dir, prefix.as_bytes(), msg.body, &self.config.hostname)
                }
            };
            match &result {
                Ok(path) => log::info!(
                    "{}: delivered to <{}> at {}",
                    msg.id,
                    rcpt.address,
                    path.display()
                ),
                Err(e) => log::warn!("{}: delivery to <{}> failed: {}", msg.id, rcpt.address, e),
            }
            results.push(result.map(|_| ()));
        }
        results
    }
}
