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
    /// Delivers to the recipients; one result per recipient, in order.
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
        // RFC 5321 4.5.1: postmaster is case-insensitive whatever the setting.
        let key = if self.config.case_insensitive_users || local.eq_ignore_ascii_case("postmaster")
        {
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

    /// All or nothing: every copy is written and fsynced in `tmp/` first,
    /// and linked into `new/` only when all of them were. If any fails, the
    /// others are taken back and every recipient gets the failure, so the
    /// client retries the whole message: without a queue, a 250 for some
    /// recipients would lose the copies of the others.
    fn deliver(&self, msg: &Message<'_>) -> Vec<Result<(), DeliveryError>> {
        // One copy per mailbox, however many addresses lead there.
        let mut targets: Vec<(&Recipient, maildir::Prepared)> = Vec::new();
        let mut failure = None;
        for rcpt in msg.recipients {
            if targets.iter().any(|(r, _)| r.target == rcpt.target) {
                continue;
            }
            let prefix = format!(
                "Return-Path: <{}>\nDelivered-To: {}\n",
                msg.reverse_path, rcpt.address
            );
            let Target::Maildir(dir) = &rcpt.target;
            match maildir::prepare(dir, prefix.as_bytes(), msg.body, &self.config.hostname) {
                Ok(p) => targets.push((rcpt, p)),
                Err(e) => {
                    log::warn!("{}: delivery to <{}> failed: {e}", msg.id, rcpt.address);
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut committed = Vec::new();
        if failure.is_none() {
            for (rcpt, p) in targets {
                match p.commit() {
                    Ok(path) => committed.push((rcpt, path)),
                    Err(e) => {
                        log::warn!("{}: delivery to <{}> failed: {e}", msg.id, rcpt.address);
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        // Prepared copies not committed are removed as they drop.
        match failure {
            None => {
                for (rcpt, path) in &committed {
                    log::info!(
                        "{}: delivered to <{}> at {}",
                        msg.id,
                        rcpt.address,
                        path.display()
                    );
                }
                msg.recipients.iter().map(|_| Ok(())).collect()
            }
            Some(e) => {
                for (_, path) in &committed {
                    maildir::revoke(path);
                }
                log::warn!(
                    "{}: not delivered to any recipient; the client will retry",
                    msg.id
                );
                msg.recipients.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }
}
