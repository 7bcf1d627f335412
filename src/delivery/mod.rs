//! Who a recipient is and the files written for it: the resolver
//! (`resolve`, `aliases`), the copies of a message and their order
//! (`plan`), the mailbox formats (`maildir`, `mbox`), pipes (`pipe`),
//! copies written as another account (`helper`), and [`Local`], which
//! ties them together into steps that a session or a queue can drive,
//! with an outcome for every copy. Every failure is classified once, where
//! it happens, as temporary or permanent.

pub mod aliases;
pub mod helper;
pub mod local;
pub mod maildir;
pub mod mbox;
pub mod message;
pub mod pipe;
pub mod plan;
mod recovery;
pub mod resolve;
pub mod spool;
mod stage;

pub use local::Local;
pub use message::{Body, Dsn, Message};

pub use crate::smtp::failure::{DeliveryError, Failure};

use crate::config::{Config, Store};
use crate::smtp::address::{Domain, ForwardPath};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

/// Where one copy of a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Maildir(PathBuf),
    Mbox(PathBuf),
    /// A shell command that reads the message on its standard input.
    Pipe(String),
    /// `/dev/null` as a file: the copy is taken and kept nowhere, as
    /// sendmail and Postfix do.
    Discard,
    /// An address elsewhere (an alias or `.forward` member on another
    /// host): no copy is made here; the message is queued for the relay.
    Forward(String),
}

impl Target {
    /// The same target with its path written one way (no `//`, no `.`),
    /// so that one mailbox is recognised however it was named.
    pub fn normalized(self) -> Target {
        let clean = |p: PathBuf| p.components().collect::<PathBuf>();
        match self {
            Target::Maildir(p) => Target::Maildir(clean(p)),
            Target::Mbox(p) => Target::Mbox(clean(p)),
            other => other,
        }
    }
}

impl From<&Store> for Target {
    fn from(store: &Store) -> Target {
        match store {
            Store::Maildir(p) => Target::Maildir(p.clone()),
            Store::Mbox(p) => Target::Mbox(p.clone()),
        }
    }
}

/// A passwd account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// The full name, from the GECOS field.
    pub full_name: String,
}

/// Whose privileges a delivery runs with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunAs {
    /// The server's own (virtual mailboxes; everything when not root).
    Server,
    Account(Account),
}

/// One copy of a message: where, as whom, and under which addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub target: Target,
    pub run_as: RunAs,
    /// The address written to `Delivered-To:` and the logs.
    pub address: String,
    /// The envelope sender for this copy when a list's owner replaces the
    /// original one.
    pub sender: Option<String>,
}

impl Recipient {
    /// The addresses elsewhere its copies go to (through the queue).
    pub fn forwards(&self) -> impl Iterator<Item = &str> {
        self.dests.iter().filter_map(|d| match &d.target {
            Target::Forward(to) => Some(to.as_str()),
            _ => None,
        })
    }
}

impl Dest {
    /// For logs: the mailbox or command, and whose privileges it has.
    pub fn describe(&self) -> String {
        let who = match &self.run_as {
            RunAs::Server => String::new(),
            RunAs::Account(Account { name, .. }) => format!(" as {name}"),
        };
        match &self.target {
            Target::Maildir(p) => format!("maildir {}{who}", p.display()),
            Target::Mbox(p) => format!("mbox {}{who}", p.display()),
            Target::Pipe(c) => format!("pipe {c:?}{who}"),
            Target::Discard => "/dev/null".into(),
            Target::Forward(to) => format!("the relay, for <{to}>"),
        }
    }
}

/// A recipient accepted at RCPT time, with what it expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as resolved (`alice@example.org`), for logs and VRFY.
    pub address: String,
    /// The full name, when known, for VRFY.
    pub full_name: Option<String>,
    pub dests: Vec<Dest>,
    /// Members of its lists that name no mailbox: they fail, and their
    /// list's owner (or the sender) is told.
    pub missing: Vec<Missing>,
}

/// A list member that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub address: String,
    /// Who is told: the list's owner, when it has one.
    pub sender: Option<String>,
}

/// Who a recipient is, as the session asks it.
pub type Lookup = crate::smtp::session::Lookup<Recipient>;

impl crate::smtp::session::Resolved for Recipient {
    fn address(&self) -> &str {
        &self.address
    }
    fn full_name(&self) -> Option<&str> {
        self.full_name.as_deref()
    }
    fn members(&self) -> impl Iterator<Item = &str> {
        self.dests.iter().map(|d| d.address.as_str())
    }
}

/// Classifies an IO error. A full disk or quota is temporary and said so;
/// any other local error is temporary too, because an administrator can
/// fix it and the client will retry.
pub fn io_error(context: &str, err: &io::Error) -> DeliveryError {
    let kind = match err.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Failure::DiskFull,
        _ => Failure::Temporary,
    };
    DeliveryError::new(kind, format!("{context}: {err}"))
}

/// Where the session driver takes the session's questions and its
/// messages: who a recipient is, and an accepted message while its client
/// waits for the reply. `notices::Immediate` answers them with [`Local`];
/// the driver's tests with a fake that keeps the bodies.
pub trait Delivery: Send + Sync {
    fn lookup(&self, rcpt: &ForwardPath) -> Lookup;
    /// The same for an authenticated client, whose recipients at other
    /// domains go through the relay (when there is one).
    fn lookup_relayed(&self, rcpt: &ForwardPath) -> Lookup {
        self.lookup(rcpt)
    }
    /// Takes responsibility for a message by `deadline`: `Ok` when every
    /// recipient has it or whoever should hear of those that do not has
    /// been sent a notification; `Err` when the client must be told the
    /// message failed (then nothing that can be taken back was kept).
    fn deliver(&self, msg: &Message<'_>, deadline: Instant) -> Result<(), DeliveryError>;
}

/// A recipient at another domain: one copy, the message queued for the
/// relay, or refused (`NotLocal`) without a relay. `None` for a
/// recipient of ours, which is the local delivery's to look up.
pub fn through_relay(config: &Config, rcpt: &ForwardPath) -> Option<Lookup> {
    let ForwardPath::Mailbox(m) = rcpt else {
        return None;
    };
    if is_local(config, &m.domain) {
        return None;
    }
    if config.relay.is_none() {
        return Some(Lookup::NotLocal);
    }
    let to = m.to_string();
    Some(Lookup::Local(Recipient {
        address: to.clone(),
        full_name: None,
        dests: vec![Dest {
            target: Target::Forward(to.clone()),
            run_as: RunAs::Server,
            address: to,
            sender: None,
        }],
        missing: Vec::new(),
    }))
}

/// True if `domain` is one of ours: a local domain, or a literal of one
/// of our addresses.
pub fn is_local(config: &Config, domain: &Domain) -> bool {
    match domain {
        Domain::Name(name) => config.is_local_domain(name),
        Domain::Ipv4(ip) => is_our_ip(config, IpAddr::V4(*ip)),
        Domain::Ipv6(ip) => is_our_ip(config, IpAddr::V6(*ip)),
        Domain::General { .. } => false,
    }
}

/// Loopback, a listening address, or an address of one of our interfaces.
pub fn is_our_ip(config: &Config, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    if ip.is_loopback()
        || config
            .server
            .listen
            .iter()
            .any(|l| l.addr.ip().to_canonical() == ip)
    {
        return true;
    }
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    interfaces.filter_map(|i| i.address).any(|a| {
        a.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())) == Some(ip)
            || a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())) == Some(ip)
    })
}
