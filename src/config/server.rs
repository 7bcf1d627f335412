//! The `[server]` section: the listeners, each with its role and its TLS,
//! the worker pool, and the limits on what a client may send.

use super::raw::{RawListen, RawListenTable, RawRole, RawServer};
use super::{ConfigError, Errors};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// The listeners of `listen`, then those of `smtps`.
    pub listen: Vec<Listener>,
    /// The milter lists listeners have of their own.
    pub milter_lists: Vec<Vec<super::Milter>>,
    pub workers: usize,
    pub handoff_queue: usize,
    pub max_connections_per_ip: usize,
    /// Connections open at once; unset, as many as the descriptor limit
    /// leaves room for (the server works that out at start).
    pub max_connections: Option<usize>,
    /// Each worker thread's stack, in bytes.
    pub worker_stack: usize,
    /// Errors a client may make before its error replies are delayed by
    /// `error_delay` each, and before it is disconnected.
    pub soft_error_limit: u32,
    pub hard_error_limit: u32,
    pub error_delay: Duration,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_command_line: usize,
    pub shutdown_grace: Duration,
}

/// Connections one client address may have open unless configured: half
/// the workers, so that one address never holds them all.
fn default_per_ip(workers: usize) -> usize {
    (workers / 2).max(1)
}

impl Server {
    /// What in it is allowed but unwise, to be logged at start and on
    /// reload.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.max_connections_per_ip >= self.workers && self.workers > 1 {
            w.push(format!(
                "server.max_connections_per_ip = {} lets one client address hold all {} workers; \
                 at most half of them ({}, the default) leaves room for others",
                self.max_connections_per_ip,
                self.workers,
                default_per_ip(self.workers)
            ));
        }
        w
    }
}

/// One listening address: what it is for, and how it speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub role: Role,
    pub tls: ListenerTls,
    pub auth: ListenerAuth,
    /// Its own milter list (an index into [`Server::milter_lists`]), if
    /// it has one; otherwise the top-level `milters` apply.
    pub milters: Option<usize>,
}

/// What a listener asks of AUTH (RFC 4954).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerAuth {
    /// Not offered: `502`, as on port 25 by default.
    #[default]
    Off,
    /// Offered once TLS runs; mail without it is taken as before.
    Offer,
    /// Offered, and mail needs it first (`530 5.7.0`): submission.
    Require,
}

/// What a listener is for. Today both roles take mail for this box's
/// users alike; authenticated submission and socket activation (whose
/// sockets are named `smtp`, `submission` and `smtps`) tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Mail from other servers (port 25): the default for `listen`.
    Smtp,
    /// Mail from this box's own users and devices (587, or 465 with
    /// implicit TLS, RFC 8314): the default for `smtps`.
    Submission,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Smtp => "smtp",
            Role::Submission => "submission",
        })
    }
}

/// How a listener speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerTls {
    /// STARTTLS is offered when a certificate is configured.
    Starttls,
    /// STARTTLS must come before any mail (`530 5.7.0` until then).
    RequireStarttls,
    /// TLS from the first byte (RFC 8314).
    Implicit,
}

impl Listener {
    pub fn implicit_tls(&self) -> bool {
        self.tls == ListenerTls::Implicit
    }

    /// Mail needs STARTTLS first.
    pub fn require_tls(&self) -> bool {
        self.tls == ListenerTls::RequireStarttls
    }

    /// The listener cannot work without a certificate.
    pub fn needs_certificate(&self) -> bool {
        self.tls != ListenerTls::Starttls
    }

    /// For the log: `submission, TLS required, AUTH required`.
    pub fn describe(&self) -> String {
        let tls = match self.tls {
            ListenerTls::Starttls => "",
            ListenerTls::RequireStarttls => ", TLS required",
            ListenerTls::Implicit => ", implicit TLS",
        };
        let auth = match self.auth {
            ListenerAuth::Off => "",
            ListenerAuth::Offer => ", AUTH",
            ListenerAuth::Require => ", AUTH required",
        };
        format!("{}{tls}{auth}", self.role)
    }
}

pub(super) fn validate(s: RawServer, has_tls: bool, e: &Errors) -> Result<Server, ConfigError> {
    if s.listen.is_empty() {
        return Err(e.at("server.listen", "at least one address is needed"));
    }
    let plain = s.listen.iter().map(|l| ("server.listen", l, false));
    let smtps = s.smtps.iter().map(|l| ("server.smtps", l, true));
    let mut listen: Vec<Listener> = Vec::new();
    let mut milter_lists = Vec::new();
    for (key, entry, implicit) in plain.chain(smtps) {
        let (mut l, written) = listener(key, entry, implicit, e)?;
        if let RawListen::Table(RawListenTable {
            milters: Some(m), ..
        }) = entry
        {
            let m = super::milter::list(&format!("{key}.milters"), m.clone(), e)?;
            l.milters = Some(milter_lists.len());
            milter_lists.push(m);
        }
        // Port 0 (any free port) may be asked for more than once.
        if l.addr.port() != 0 && listen.iter().any(|m| m.addr == l.addr) {
            return Err(e.at(key, format!("{written} is listed twice")));
        }
        if l.needs_certificate() && !has_tls {
            return Err(e.at(
                key,
                format!("{written} needs TLS: give a [tls] section with cert and key"),
            ));
        }
        listen.push(l);
    }
    e.range("server.workers", s.workers as u64, 1, 1024, "")?;
    e.range("server.handoff_queue", s.handoff_queue as u64, 1, 65536, "")?;
    // One address may hold at most half the workers, unless told
    // otherwise (as Postfix's smtpd_client_connection_count_limit is half
    // its process limit).
    let per_ip = s
        .max_connections_per_ip
        .unwrap_or(default_per_ip(s.workers));
    e.range(
        "server.max_connections_per_ip",
        per_ip as u64,
        1,
        1_000_000,
        "",
    )?;
    if let Some(n) = s.max_connections {
        e.range("server.max_connections", n as u64, 1, 1_000_000, "")?;
    }
    e.range(
        "server.hard_error_limit",
        u64::from(s.hard_error_limit),
        1,
        1_000_000,
        "",
    )?;
    e.range(
        "server.soft_error_limit",
        u64::from(s.soft_error_limit),
        0,
        u64::from(s.hard_error_limit),
        " (at most server.hard_error_limit)",
    )?;
    e.range("server.error_delay", s.error_delay, 0, 60, "")?;
    // Resolving an alias nested as deep as allowed (20) takes more
    // than 256 KiB of stack.
    e.range(
        "server.worker_stack",
        s.worker_stack,
        512,
        65536,
        " (KiB; the deepest alias nesting needs more than 256)",
    )?;
    e.range(
        "server.max_message_size",
        s.max_message_size,
        1024,
        1 << 40,
        "",
    )?;
    e.range(
        "server.max_recipients",
        s.max_recipients as u64,
        100,
        100_000,
        " (RFC 5321 4.5.3.1.8: at least 100)",
    )?;
    e.range(
        "server.max_command_line",
        s.max_command_line as u64,
        512,
        1 << 20,
        " (RFC 5321 4.5.3.1.4: at least 512)",
    )?;
    e.range("server.shutdown_grace", s.shutdown_grace, 0, 3600, "")?;
    Ok(Server {
        listen,
        milter_lists,
        workers: s.workers,
        handoff_queue: s.handoff_queue,
        max_connections_per_ip: per_ip,
        max_connections: s.max_connections,
        worker_stack: s.worker_stack as usize * 1024,
        soft_error_limit: s.soft_error_limit,
        hard_error_limit: s.hard_error_limit,
        error_delay: Duration::from_secs(s.error_delay),
        max_message_size: s.max_message_size,
        max_recipients: s.max_recipients,
        max_command_line: s.max_command_line,
        shutdown_grace: Duration::from_secs(s.shutdown_grace),
    })
}

/// One entry of `listen` (`implicit` false) or `smtps`, with its address
/// as written.
fn listener<'a>(
    key: &str,
    entry: &'a RawListen,
    implicit: bool,
    e: &Errors,
) -> Result<(Listener, &'a str), ConfigError> {
    let (address, require_tls, role, auth, require_auth) = match entry {
        RawListen::Address(a) => (a, None, None, None, None),
        RawListen::Table(t) => (&t.address, t.require_tls, t.role, t.auth, t.require_auth),
    };
    let addr = address.parse::<SocketAddr>().map_err(|_| {
        e.at(
            key,
            format!(
                "{address:?} is not an IP address and port, like \"127.0.0.1:2525\" or \"[::1]:2525\""
            ),
        )
    })?;
    let tls = match (implicit, require_tls) {
        (true, Some(_)) => {
            return Err(e.at(
                key,
                format!(
                "{address}: require_tls is for listen entries; smtps is TLS from the first byte"
            ),
            ))
        }
        (true, None) => ListenerTls::Implicit,
        (false, Some(true)) => ListenerTls::RequireStarttls,
        (false, Some(false) | None) => ListenerTls::Starttls,
    };
    let role = match role {
        Some(RawRole::Smtp) => Role::Smtp,
        Some(RawRole::Submission) => Role::Submission,
        None if implicit => Role::Submission,
        None => Role::Smtp,
    };
    let auth = match (auth, require_auth) {
        (Some(false), Some(true)) => {
            return Err(e.at(
                key,
                format!("{address}: require_auth = true needs auth, which is false"),
            ))
        }
        (_, Some(true)) => ListenerAuth::Require,
        (Some(true), _) => ListenerAuth::Offer,
        _ => ListenerAuth::Off,
    };
    Ok((
        Listener {
            addr,
            role,
            tls,
            auth,
            milters: None,
        },
        address,
    ))
}
