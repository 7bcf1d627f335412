//! The SMTP session state machine (RFC 5321 with its extensions), without
//! any IO: the connection driver hands it one command line at a time and
//! gets back a reply and an [`Action`] to carry out (read a body, read a
//! chunk, close). Bodies are read by the driver; the session then judges
//! them ([`Session::body_received`]) and turns delivery results into the
//! final reply ([`Session::delivered`]).
//!
//! The whole state is who the client said it was and the open transaction;
//! each verb checks its preconditions and then proceeds, and anything out
//! of order gets 503.

use super::address::{Domain, ForwardPath, Mailbox, ReversePath};
use super::command::{self, BodyType, Command, MailParams, ParseError};
use super::reply::{self, Enhanced, Reply};
use super::trace::{self, Received, TlsInfo};
use crate::config::Config;
use crate::delivery::{Delivery, DeliveryError, Failure, Lookup, Recipient};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// Received headers above this mean a mail loop (RFC 5321 6.3).
pub const MAX_HOPS: usize = 100;

/// What the driver must do after sending the reply (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the next command.
    Continue,
    /// Close the connection.
    Close,
    /// Receive a dot-terminated body into a new spool that starts with
    /// [`Session::trace_field`], then call [`Session::body_received`].
    ReceiveData,
    /// Start TLS (RFC 3207) once the reply is out: drop whatever the client
    /// sent after the command, handshake, then call
    /// [`Session::tls_started`].
    StartTls,
    /// Receive exactly `size` octets of a BDAT chunk. `start`: this chunk
    /// begins a new body (new spool, trace field first). `discard`: read and
    /// drop the octets. Then call [`Session::chunk_received`].
    ReceiveChunk {
        size: u64,
        last: bool,
        start: bool,
        discard: bool,
    },
}

#[derive(Debug)]
pub struct Response {
    pub reply: Option<Reply>,
    pub action: Action,
}

impl Response {
    fn reply(reply: Reply) -> Response {
        Response {
            reply: Some(reply),
            action: Action::Continue,
        }
    }
}

/// What the driver observed while reading a body.
#[derive(Debug, Clone, Default)]
pub struct BodyReport {
    pub size: u64,
    pub too_big: bool,
    pub bare_newline: bool,
    pub received_count: usize,
    /// The values of the message's `Delivered-To:` fields.
    pub delivered_to: Vec<String>,
    /// Writing the spool failed.
    pub spool_error: Option<DeliveryError>,
}

/// What the session decided about a complete body.
#[derive(Debug)]
pub enum Verdict {
    /// Refused, or a chunk acknowledged: send this reply.
    Reply(Reply),
    /// Accepted: deliver it, then call [`Session::delivered`].
    Deliver(Envelope),
}

/// A message ready for delivery.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    /// Reverse path without angle brackets; empty for `<>`.
    pub reverse_path: String,
    pub recipients: Vec<Recipient>,
    pub size: u64,
}

/// The connection facts a session needs.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Forward-confirmed reverse DNS name, when looked up.
    pub name: Option<String>,
}

/// What the listener asks of TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// STARTTLS can be offered: TLS is configured and this connection is
    /// not encrypted yet.
    pub offer: bool,
    /// Mail needs TLS first (`530 5.7.0` until then).
    pub require: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    None,
    Data,
    Chunks,
}

#[derive(Debug)]
struct Transaction {
    id: String,
    from: ReversePath,
    params: MailParams,
    rcpts: Vec<Recipient>,
    rcpt_attempts: usize,
    /// The single recipient's address as given, for `Received: ... for`.
    first_rcpt: Option<String>,
    body: BodyMode,
    chunk_octets: u64,
}

#[derive(Debug)]
struct Hello {
    name: String,
    esmtp: bool,
}

pub struct Session {
    config: Arc<Config>,
    delivery: Arc<dyn Delivery>,
    peer: Peer,
    policy: TlsPolicy,
    /// The TLS session in force, once there is one.
    tls: Option<TlsInfo>,
    hello: Option<Hello>,
    tx: Option<Transaction>,
    /// The reply owed after a BDAT chunk that is being discarded.
    pending: Option<Reply>,
}

impl Session {
    pub fn new(
        config: Arc<Config>,
        delivery: Arc<dyn Delivery>,
        peer: Peer,
        policy: TlsPolicy,
    ) -> Session {
        Session {
            config,
            delivery,
            peer,
            policy,
            tls: None,
            hello: None,
            tx: None,
            pending: None,
        }
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The connection is now encrypted. RFC 3207 4.2: the client must
    /// greet again, and nothing said before counts.
    pub fn tls_started(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.hello = None;
        self.tx = None;
        self.pending = None;
    }

    /// `530 5.7.0` for a command that needs TLS on a listener that
    /// requires it, before STARTTLS.
    fn tls_missing(&self) -> Option<Reply> {
        (self.policy.require && self.tls.is_none()).then(reply::tls_required)
    }

    pub fn greeting(&self) -> Reply {
        reply::greeting(&self.config.hostname)
    }

    /// Whether replies carry enhanced status codes: always, except to a
    /// client that greeted with plain HELO (RFC 2034 ties them to EHLO).
    pub fn enhanced_codes(&self) -> bool {
        self.hello.as_ref().is_none_or(|h| h.esmtp)
    }

    /// True while a transaction is open: a shutdown lets it finish.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// The open transaction declared BODY=BINARYMIME: store it unchanged.
    pub fn binary_body(&self) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.params.body == Some(BodyType::BinaryMime))
    }

    /// Handles one command line (without its line end).
    pub fn command(&mut self, line: &[u8]) -> Response {
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.parse_error(e),
        };
        if matches!(
            cmd,
            Command::Mail { .. } | Command::Rcpt { .. } | Command::Vrfy(_) | Command::Expn(_)
        ) {
            if let Some(r) = self.tls_missing() {
                return Response::reply(r);
            }
        }
        match cmd {
            Command::Helo(name) => self.hello(name, false),
            Command::Ehlo(name) => self.hello(name, true),
            Command::Mail { path, params } => Response::reply(self.mail(path, params)),
            Command::Rcpt { path } => Response::reply(self.rcpt(path)),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.tx = None;
                Response::reply(reply::reset_ok())
            }
            Command::Noop => Response::reply(reply::ok()),
            Command::Quit => Response {
                reply: Some(reply::closing(&self.config.hostname)),
                action: Action::Close,
            },
            Command::Help(_) => Response::reply(self.help()),
            Command::Vrfy(arg) => Response::reply(self.vrfy(&arg)),
            Command::Expn(arg) => Response::reply(self.expn(&arg)),
            Command::StartTls => self.starttls(),
            Command::NotImplemented => Response::reply(reply::not_implemented()),
        }
    }

    fn parse_error(&self, e: ParseError) -> Response {
        let r = match e {
            ParseError::Unrecognized => reply::unrecognized(),
            ParseError::BadCharacters => reply::bad_characters(),
            ParseError::Syntax(usage) => reply::syntax(usage),
            // Without a size the chunk cannot be skipped, and its octets
            // must never be read as commands: end the session.
            ParseError::BdatSyntax => {
                return Response {
                    reply: Some(reply::syntax(
                        "Syntax: BDAT chunk-size [LAST]; closing connection",
                    )),
                    action: Action::Close,
                }
            }
            ParseError::Sender(e) => reply::bad_sender_syntax(&e.to_string()),
            ParseError::Recipient(e) => reply::bad_recipient_syntax(&e.to_string()),
            ParseError::UnknownParameter(p) => reply::parameter_not_implemented(&p),
            ParseError::BadParameter(text) => reply::syntax(text),
        };
        Response::reply(r)
    }

    fn hello(&mut self, name: String, esmtp: bool) -> Response {
        // Lax: any domain (underscores and bare IPs included) or address
        // literal, and `[::1]`-style literals that some clients send.
        let valid = if self.config.strict_helo {
            Domain::parse_strict(&name).is_ok()
        } else {
            Domain::parse(&name).is_ok()
                || name
                    .strip_prefix('[')
                    .and_then(|n| n.strip_suffix(']'))
                    .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        };
        if !valid {
            return Response::reply(reply::bad_helo(&name));
        }
        // RFC 5321 4.1.4: a new greeting resets any transaction.
        self.tx = None;
        let client = format!("{name} {}", trace::address_literal(self.peer.addr.ip()));
        let mut r = reply::helo_ok(&self.config.hostname, &client);
        if esmtp {
            for ext in self.extensions() {
                r = r.line(ext);
            }
        }
        self.hello = Some(Hello { name, esmtp });
        Response::reply(r)
    }

    fn starttls(&mut self) -> Response {
        if self.tls.is_some() {
            return Response::reply(reply::bad_sequence("Error: TLS already active"));
        }
        if !self.policy.offer {
            return Response::reply(reply::not_implemented());
        }
        if self.tx.is_some() {
            return Response::reply(reply::bad_sequence(
                "Error: STARTTLS not allowed inside a mail transaction",
            ));
        }
        Response {
            reply: Some(reply::ready_for_tls()),
            action: Action::StartTls,
        }
    }

    fn help(&self) -> Reply {
        let starttls = if self.policy.offer && self.tls.is_none() {
            " STARTTLS"
        } else {
            ""
        };
        Reply::new(214, Some(Enhanced(2, 0, 0)), "mailroom commands:")
            .line(format!(
                "HELO EHLO{starttls} MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN"
            ))
            .line("See RFC 5321; mail for local users only")
    }

    fn extensions(&self) -> Vec<String> {
        let mut ext = vec![
            "PIPELINING".to_string(),
            format!("SIZE {}", self.config.server.max_message_size),
        ];
        if self.config.vrfy {
            ext.push("VRFY".into());
        }
        if self.config.expn {
            ext.push("EXPN".into());
        }
        if self.policy.offer && self.tls.is_none() {
            ext.push("STARTTLS".into());
        }
        for e in [
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "BINARYMIME",
            "SMTPUTF8",
            "HELP",
        ] {
            ext.push(e.into());
        }
        ext
    }

    fn mail(&mut self, path: ReversePath, params: MailParams) -> Reply {
        let Some(hello) = &self.hello else {
            return reply::bad_sequence("Error: send HELO/EHLO first");
        };
        if self.tx.is_some() {
            return reply::bad_sequence("Error: nested MAIL command");
        }
        if !hello.esmtp && !params.is_empty() {
            return reply::parameter_not_implemented("ESMTP parameters need EHLO");
        }
        if let ReversePath::Mailbox(m) = &path {
            if !m.is_ascii() && !params.smtputf8 {
                return reply::utf8_not_permitted();
            }
        }
        if params
            .size
            .is_some_and(|s| s > self.config.server.max_message_size)
        {
            return reply::message_too_big();
        }
        let id = trace::queue_id(SystemTime::now());
        log::info!(
            "{id}: from=<{}> size={} body={}",
            reverse_path_text(&path),
            params.size.map_or("-".into(), |s| s.to_string()),
            params.body.unwrap_or_default().keyword()
        );
        self.tx = Some(Transaction {
            id,
            from: path,
            params,
            rcpts: Vec::new(),
            rcpt_attempts: 0,
            first_rcpt: None,
            body: BodyMode::None,
            chunk_octets: 0,
        });
        reply::sender_ok()
    }

    fn rcpt(&mut self, path: ForwardPath) -> Reply {
        let Some(tx) = &mut self.tx else {
            return reply::bad_sequence("Error: need MAIL command");
        };
        if tx.body != BodyMode::None {
            return reply::bad_sequence("Error: RCPT after message data");
        }
        tx.rcpt_attempts += 1;
        let shown = forward_path_text(&path);
        if let ForwardPath::Mailbox(m) = &path {
            if !m.is_ascii() && !tx.params.smtputf8 {
                return reply::utf8_not_permitted();
            }
        }
        if tx.rcpts.len() >= self.config.server.max_recipients {
            return reply::too_many_recipients();
        }
        match self.delivery.lookup(&path) {
            Lookup::Local(r) => {
                log::debug!("{}: to=<{shown}> accepted", tx.id);
                if tx.first_rcpt.is_none() {
                    // `for` needs a Mailbox (RFC 5321 4.4): qualify postmaster.
                    tx.first_rcpt = Some(match path {
                        ForwardPath::Postmaster => format!("postmaster@{}", self.config.hostname),
                        ForwardPath::Mailbox(_) => shown,
                    });
                }
                tx.rcpts.push(r);
                reply::recipient_ok()
            }
            Lookup::UnknownUser => {
                log::info!("{}: to=<{shown}> rejected: user unknown", tx.id);
                reply::user_unknown(&shown)
            }
            Lookup::NotLocal => {
                log::info!("{}: to=<{shown}> rejected: relaying denied", tx.id);
                reply::relay_denied(&shown)
            }
            other => {
                let r = lookup_failure(&other, &shown);
                log::warn!("{}: to=<{shown}> rejected: {}", tx.id, r);
                r
            }
        }
    }

    /// Checks common to DATA and the first BDAT.
    fn ready_for_body(&self) -> Result<(), Reply> {
        if let Some(r) = self.tls_missing() {
            return Err(r);
        }
        if self.hello.is_none() {
            return Err(reply::bad_sequence("Error: send HELO/EHLO first"));
        }
        let Some(tx) = &self.tx else {
            return Err(reply::bad_sequence("Error: need MAIL command"));
        };
        if tx.rcpts.is_empty() {
            return Err(if tx.rcpt_attempts == 0 {
                reply::bad_sequence("Error: need RCPT command")
            } else {
                reply::no_valid_recipients()
            });
        }
        Ok(())
    }

    fn data(&mut self) -> Response {
        if let Err(r) = self.ready_for_body() {
            return Response::reply(r);
        }
        let tx = self.tx.as_mut().expect("checked by ready_for_body");
        if tx.params.body == Some(BodyType::BinaryMime) {
            return Response::reply(reply::bad_sequence(
                "Error: BODY=BINARYMIME needs BDAT, not DATA",
            ));
        }
        if tx.body == BodyMode::Chunks {
            return Response::reply(reply::bad_sequence("Error: DATA after BDAT"));
        }
        tx.body = BodyMode::Data;
        Response {
            reply: Some(reply::start_data()),
            action: Action::ReceiveData,
        }
    }

    fn bdat(&mut self, size: u64, last: bool) -> Response {
        let discard = |pending: &mut Option<Reply>, r: Reply| {
            *pending = Some(r);
            Response {
                reply: None,
                action: Action::ReceiveChunk {
                    size,
                    last,
                    start: false,
                    discard: true,
                },
            }
        };
        if let Err(r) = self.ready_for_body() {
            return discard(&mut self.pending, r);
        }
        let tx = self.tx.as_mut().expect("checked by ready_for_body");
        let start = match tx.body {
            BodyMode::None => true,
            BodyMode::Chunks => false,
            BodyMode::Data => {
                unreachable!("a DATA body is read to its end before the next command")
            }
        };
        tx.body = BodyMode::Chunks;
        tx.chunk_octets = tx.chunk_octets.saturating_add(size);
        Response {
            reply: None,
            action: Action::ReceiveChunk {
                size,
                last,
                start,
                discard: false,
            },
        }
    }

    /// The `Received:` field that starts the spooled body of the open
    /// transaction.
    pub fn trace_field(&self) -> String {
        let tx = self
            .tx
            .as_ref()
            .expect("a body is read only inside a transaction");
        let hello = self.hello.as_ref().expect("a transaction needs a greeting");
        let utf8 = tx.params.smtputf8;
        // RFC 3848 and RFC 6531; plain HELO has no registered TLS form.
        let protocol = match (hello.esmtp, utf8, self.tls.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, false, true) => "ESMTPS",
            (true, true, false) => "UTF8SMTP",
            (true, true, true) => "UTF8SMTPS",
        };
        Received {
            helo: &hello.name,
            peer_name: self.peer.name.as_deref(),
            peer_ip: self.peer.addr.ip(),
            hostname: &self.config.hostname,
            protocol,
            tls: self.tls.as_ref(),
            id: &tx.id,
            recipient: tx.first_rcpt.as_deref().filter(|_| tx.rcpts.len() == 1),
            date: SystemTime::now(),
        }
        .render()
    }

    /// Judges a complete DATA body, or the last BDAT chunk's body. The
    /// transaction ends here whatever the verdict.
    pub fn body_received(&mut self, report: &BodyReport) -> Verdict {
        let Some(tx) = self.tx.take() else {
            return Verdict::Reply(reply::bad_sequence("Error: no transaction"));
        };
        let refuse = |why: &str, r: Reply| {
            log::info!("{}: message refused: {why}", tx.id);
            Verdict::Reply(r)
        };
        if let Some(e) = &report.spool_error {
            log::error!("{}: spooling failed: {e}", tx.id);
            return Verdict::Reply(failure_reply(e.kind, &e.reason));
        }
        if report.too_big {
            return refuse("too big", reply::message_too_big());
        }
        if report.bare_newline {
            return refuse("bare CR or LF", reply::bare_newline());
        }
        if report.received_count > MAX_HOPS {
            return refuse("mail loop", reply::mail_loop());
        }
        // A copy that was already delivered to one of these recipients has
        // come back: deliver it again and it would go round for ever.
        let ours = tx
            .rcpts
            .iter()
            .flat_map(|r| std::iter::once(&r.address).chain(r.dests.iter().map(|d| &d.address)));
        let looped = ours.into_iter().find(|a| {
            report
                .delivered_to
                .iter()
                .any(|d| d.trim_matches(['<', '>']).eq_ignore_ascii_case(a))
        });
        if let Some(a) = looped {
            return refuse("mail loop", reply::delivered_to_loop(a));
        }
        let to: Vec<String> = tx
            .rcpts
            .iter()
            .map(|r| format!("<{}>", r.address))
            .collect();
        log::info!(
            "{}: accepted from=<{}> size={} nrcpt={} to={}",
            tx.id,
            reverse_path_text(&tx.from),
            report.size,
            tx.rcpts.len(),
            to.join(",")
        );
        Verdict::Deliver(Envelope {
            id: tx.id,
            reverse_path: reverse_path_text(&tx.from),
            recipients: tx.rcpts,
            size: report.size,
        })
    }

    /// Handles the end of a BDAT chunk. For the last chunk (or a failed
    /// one) this is the message's verdict.
    pub fn chunk_received(&mut self, last: bool, report: &BodyReport) -> Verdict {
        if let Some(r) = self.pending.take() {
            return Verdict::Reply(r);
        }
        if report.too_big || report.spool_error.is_some() || last {
            return self.body_received(report);
        }
        let octets = self.tx.as_ref().map_or(0, |tx| tx.chunk_octets);
        Verdict::Reply(reply::chunk_ok(octets))
    }

    /// The final reply for a delivered envelope: 250 when delivery took
    /// the message, otherwise the failure as one reply (451 or 452 so that
    /// the client retries, 554 when retrying cannot help).
    pub fn delivered(&self, env: &Envelope, result: &Result<(), DeliveryError>) -> Reply {
        match result {
            Ok(()) => reply::queued(&env.id),
            Err(e) => failure_reply(e.kind, &e.reason),
        }
    }

    fn vrfy(&self, arg: &str) -> Reply {
        if !self.config.vrfy {
            return reply::cannot_vrfy();
        }
        match self.lookup_arg(arg) {
            Ok(r) => {
                let text = match &r.full_name {
                    Some(name) => format!("{name} <{}>", r.address),
                    None => format!("<{}>", r.address),
                };
                Reply::new(250, Some(Enhanced(2, 1, 5)), text)
            }
            Err(r) => r,
        }
    }

    fn expn(&self, arg: &str) -> Reply {
        if !self.config.expn {
            return Reply::new(502, Some(Enhanced(5, 5, 1)), "Error: EXPN is disabled");
        }
        let r = match self.lookup_arg(arg) {
            Ok(r) => r,
            Err(r) => return r,
        };
        // One line per member mailbox, as RFC 5321 3.5.2 shows.
        let mut members: Vec<&str> = Vec::new();
        for d in &r.dests {
            if !members.contains(&d.address.as_str()) {
                members.push(&d.address);
            }
        }
        let mut lines = members.iter().map(|m| format!("<{m}>"));
        let first = lines.next().unwrap_or_else(|| format!("<{}>", r.address));
        lines.fold(
            Reply::new(250, Some(Enhanced(2, 1, 5)), first),
            |reply, l| reply.line(l),
        )
    }

    /// VRFY/EXPN argument: an address, with or without `<>`, or a bare
    /// local part meaning a user of our first local domain.
    fn lookup_arg(&self, arg: &str) -> Result<Recipient, Reply> {
        let arg = arg.trim();
        let qualified;
        let arg = if !arg.contains('@') && !arg.contains('<') {
            let domain = self
                .config
                .local_domains
                .first()
                .unwrap_or(&self.config.hostname);
            qualified = format!("<{arg}@{domain}>");
            &qualified
        } else {
            arg
        };
        let path = match super::address::parse_forward_path(arg) {
            Ok((p, "")) => p,
            _ => return Err(reply::syntax("Syntax: VRFY/EXPN address")),
        };
        let shown = forward_path_text(&path);
        match self.delivery.lookup(&path) {
            Lookup::Local(r) => Ok(r),
            Lookup::NotLocal => Err(Reply::new(
                551,
                Some(Enhanced(5, 1, 6)),
                format!("<{shown}>: not a local address"),
            )),
            other => Err(lookup_failure(&other, &shown)),
        }
    }
}

/// The reply for a recipient that did not resolve to local copies. The
/// details (alias chains, file names) go to the log, not to the client.
fn lookup_failure(lookup: &Lookup, shown: &str) -> Reply {
    match lookup {
        Lookup::Loop(chain) => {
            log::warn!("<{shown}>: alias loop: {chain}");
            reply::alias_loop(shown)
        }
        Lookup::Remote(target) => {
            log::info!("<{shown}>: forwards to <{target}>, which cannot be relayed");
            reply::remote_alias(shown)
        }
        Lookup::Refused(why) => {
            log::warn!("<{shown}>: refused: {why}");
            reply::not_permitted(shown)
        }
        Lookup::TempFail(why) => {
            log::warn!("<{shown}>: cannot resolve now: {why}");
            reply::local_error()
        }
        Lookup::NotLocal => reply::relay_denied(shown),
        Lookup::UnknownUser | Lookup::Local(_) => reply::user_unknown(shown),
    }
}

fn failure_reply(kind: Failure, reason: &str) -> Reply {
    match kind {
        Failure::DiskFull => reply::insufficient_storage(),
        Failure::Temporary => reply::local_error(),
        Failure::Permanent => reply::delivery_failed(format!("Error: delivery failed: {reason}")),
    }
}

fn mailbox_text(m: &Mailbox) -> String {
    m.to_string()
}

/// The reverse path as written in logs and `Return-Path:` (no brackets).
fn reverse_path_text(p: &ReversePath) -> String {
    match p {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => mailbox_text(m),
    }
}

fn forward_path_text(p: &ForwardPath) -> String {
    match p {
        ForwardPath::Postmaster => "postmaster".into(),
        ForwardPath::Mailbox(m) => mailbox_text(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Dest, Message, RunAs, Target};
    use std::path::PathBuf;

    /// Knows alice and postmaster at example.org; delivers nowhere.
    struct Fake;

    impl Delivery for Fake {
        fn lookup(&self, rcpt: &ForwardPath) -> Lookup {
            let user = match rcpt {
                ForwardPath::Postmaster => "postmaster".to_string(),
                ForwardPath::Mailbox(m) if m.domain.matches_name("example.org") => {
                    m.local.to_lowercase()
                }
                ForwardPath::Mailbox(_) => return Lookup::NotLocal,
            };
            if user == "alice" || user == "postmaster" {
                let address = format!("{user}@example.org");
                Lookup::Local(Recipient {
                    address: address.clone(),
                    full_name: (user == "alice").then(|| "Alice Liddell".to_string()),
                    dests: vec![Dest {
                        target: Target::Maildir(PathBuf::from(&user)),
                        run_as: RunAs::Server,
                        address,
                        sender: None,
                    }],
                    missing: Vec::new(),
                })
            } else {
                Lookup::UnknownUser
            }
        }
        fn deliver(&self, _: &Message<'_>) -> Result<(), DeliveryError> {
            Ok(())
        }
    }

    fn session(extra: &str) -> Session {
        session_with(extra, TlsPolicy::default())
    }

    fn session_with(extra: &str, policy: TlsPolicy) -> Session {
        let text =
            format!("hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n{extra}");
        let config = Arc::new(Config::parse(&text, "test").unwrap());
        let peer = Peer {
            addr: "192.0.2.9:4321".parse().unwrap(),
            name: None,
        };
        Session::new(config, Arc::new(Fake), peer, policy)
    }

    fn tls13() -> TlsInfo {
        TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            key_exchange: Some("X25519".into()),
        }
    }

    fn ehlo_lines(s: &mut Session) -> Vec<String> {
        let r = s.command(b"EHLO c.example").reply.unwrap();
        r.lines().map(str::to_string).collect()
    }

    #[test]
    fn starttls_is_offered_once_and_resets_the_session() {
        let offer = TlsPolicy {
            offer: true,
            require: false,
        };
        let mut s = session_with("", offer);
        assert!(ehlo_lines(&mut s).contains(&"STARTTLS".to_string()));
        dialogue(
            &mut s,
            &[("STARTTLS now", 501), ("MAIL FROM:<a@b.example>", 250)],
        );
        // Inside a transaction: 503, and the transaction goes on.
        dialogue(
            &mut s,
            &[("STARTTLS", 503), ("RCPT TO:<alice@example.org>", 250)],
        );
        dialogue(&mut s, &[("RSET", 250)]);
        let r = s.command(b"STARTTLS");
        assert_eq!(r.action, Action::StartTls);
        assert_eq!(r.reply.unwrap().to_string(), "220 2.0.0 Ready to start TLS");
        s.tls_started(tls13());
        // Nothing said before TLS counts: a new EHLO is needed.
        dialogue(&mut s, &[("MAIL FROM:<a@b.example>", 503)]);
        assert!(!ehlo_lines(&mut s).contains(&"STARTTLS".to_string()));
        dialogue(
            &mut s,
            &[("STARTTLS", 503), ("MAIL FROM:<a@b.example>", 250)],
        );
        dialogue(&mut s, &[("RCPT TO:<alice@example.org>", 250)]);
        let t = s.trace_field();
        assert!(
            t.contains("[192.0.2.9])\n\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 key-exchange X25519)\n\tby mx.example.org (mailroom) with ESMTPS id "),
            "{t}"
        );
    }

    #[test]
    fn starttls_is_refused_where_it_is_not_offered() {
        let mut s = session("");
        assert!(!ehlo_lines(&mut s).contains(&"STARTTLS".to_string()));
        let r = s.command(b"STARTTLS");
        assert_eq!(r.reply.unwrap().code(), 502);
        assert_eq!(r.action, Action::Continue);
        // An implicit TLS connection: already encrypted.
        let mut s = session("");
        s.tls_started(tls13());
        assert!(!ehlo_lines(&mut s).contains(&"STARTTLS".to_string()));
        dialogue(&mut s, &[("STARTTLS", 503)]);
    }

    #[test]
    fn require_tls_refuses_mail_before_starttls() {
        let policy = TlsPolicy {
            offer: true,
            require: true,
        };
        let mut s = session_with("vrfy = true\nexpn = true", policy);
        dialogue(
            &mut s,
            &[
                ("EHLO c.example", 250),
                ("MAIL FROM:<a@b.example>", 530),
                ("RCPT TO:<alice@example.org>", 530),
                ("DATA", 530),
                ("VRFY alice", 530),
                ("EXPN alice", 530),
                ("NOOP", 250),
                ("RSET", 250),
            ],
        );
        let r = s.command(b"MAIL FROM:<a@b.example>").reply.unwrap();
        assert_eq!(
            r.to_string(),
            "530 5.7.0 Must issue a STARTTLS command first"
        );
        // BDAT's chunk is read and dropped, then refused.
        let r = s.command(b"BDAT 4 LAST");
        assert!(r.reply.is_none());
        assert!(matches!(
            r.action,
            Action::ReceiveChunk { discard: true, .. }
        ));
        match s.chunk_received(true, &BodyReport::default()) {
            Verdict::Reply(r) => assert_eq!(r.code(), 530),
            v => panic!("{v:?}"),
        }
        assert_eq!(s.command(b"STARTTLS").action, Action::StartTls);
        s.tls_started(tls13());
        dialogue(
            &mut s,
            &[
                ("EHLO c.example", 250),
                ("MAIL FROM:<a@b.example>", 250),
                ("RCPT TO:<alice@example.org>", 250),
                ("VRFY alice", 250),
            ],
        );
    }

    /// Replays a dialogue: each line with the reply code it must get.
    fn dialogue(s: &mut Session, steps: &[(&str, u16)]) {
        for (line, code) in steps {
            let r = s.command(line.as_bytes());
            let got = r.reply.as_ref().map(|r| r.code());
            assert_eq!(
                got,
                Some(*code),
                "{line:?} -> {:?}",
                r.reply.map(|r| r.to_string())
            );
        }
    }

    #[test]
    fn sequence_errors() {
        let cases: &[&[(&str, u16)]] = &[
            &[("MAIL FROM:<a@b.example>", 503)],
            &[
                ("EHLO c.example", 250),
                ("RCPT TO:<alice@example.org>", 503),
            ],
            &[("EHLO c.example", 250), ("DATA", 503)],
            &[
                ("EHLO c.example", 250),
                ("MAIL FROM:<a@b.example>", 250),
                ("DATA", 503),
            ],
            &[
                ("EHLO c.example", 250),
                ("MAIL FROM:<a@b.example>", 250),
                ("RCPT TO:<nobody@example.org>", 550),
                ("DATA", 554),
            ],
            &[
                ("EHLO c.example", 250),
                ("MAIL FROM:<a@b.example>", 250),
                ("MAIL FROM:<a@b.example>", 503),
            ],
            &[
                ("EHLO c.example", 250),
                ("MAIL FROM:<a@b.example>", 250),
                ("EHLO c.example", 250),
                ("RCPT TO:<alice@example.org>", 503),
            ],
            &[
                ("HELO c.example", 250),
                ("MAIL FROM:<a@b.example>", 250),
                ("RSET", 250),
                ("RCPT TO:<alice@example.org>", 503),
                ("MAIL FROM:<a@b.example>", 250),
            ],
            &[
                ("EHLO c.example", 250),
                ("MAIL FROM:<a@b.example> BODY=BINARYMIME", 250),
                ("RCPT TO:<alice@example.org>", 250),
                ("DATA", 503),
            ],
        ];
        for steps in cases {
            dialogue(&mut session(""), steps);
        }
    }

    #[test]
    fn command_replies() {
        dialogue(
            &mut session(""),
            &[
                ("FOO", 500),
                ("HELO", 501),
                ("NOOP", 250),
                ("HELP", 214),
                ("VRFY alice", 252),
                ("EXPN staff", 502),
                ("STARTTLS", 502),
                ("AUTH PLAIN AAAA", 502),
                ("EHLO c.example", 250),
                ("MAIL FROM:<a@b.example> FOO=BAR", 555),
                ("MAIL FROM:<a@b.example> SIZE=x", 501),
                ("MAIL FROM:<a@b.example> SIZE=26214401", 552),
                ("MAIL FROM:<a b@c>", 501),
                ("MAIL FROM:<ü@b.example>", 553),
                ("MAIL FROM:<ü@b.example> SMTPUTF8", 250),
                ("RCPT TO:<alice@example.org> NOTIFY=NEVER", 555),
                ("RCPT TO:<bob@example.org>", 550),
                ("RCPT TO:<x@elsewhere.example>", 550),
                ("RCPT TO:<Alice@EXAMPLE.ORG>", 250),
                ("RCPT TO:<postmaster>", 250),
                ("RCPT TO:<@r1.example,@r2.example:alice@example.org>", 250),
                ("RCPT TO:alice@example.org", 250),
                ("QUIT", 221),
            ],
        );
    }

    #[test]
    fn helo_params_need_ehlo() {
        dialogue(
            &mut session(""),
            &[
                ("HELO c.example", 250),
                ("MAIL FROM:<a@b.example> SIZE=10", 555),
            ],
        );
    }

    #[test]
    fn strict_helo() {
        for (arg, lax, strict) in [
            ("c.example", 250, 250),
            ("[192.0.2.1]", 250, 250),
            ("[IPv6:2001:db8::1]", 250, 250),
            ("192.0.2.1", 250, 501),
            ("bad_name.example", 250, 501),
            ("two words", 501, 501),
            ("!!!", 501, 501),
            ("user@host.example", 501, 501),
            ("[::1]", 250, 501),
            ("localhost", 250, 250),
        ] {
            dialogue(&mut session(""), &[(&format!("EHLO {arg}"), lax)]);
            dialogue(
                &mut session("strict_helo = true"),
                &[(&format!("EHLO {arg}"), strict)],
            );
        }
    }

    #[test]
    fn recipient_limit() {
        let mut s = session("");
        dialogue(
            &mut s,
            &[("EHLO c.example", 250), ("MAIL FROM:<a@b.example>", 250)],
        );
        for _ in 0..100 {
            dialogue(&mut s, &[("RCPT TO:<alice@example.org>", 250)]);
        }
        dialogue(
            &mut s,
            &[("RCPT TO:<alice@example.org>", 452), ("DATA", 354)],
        );
    }

    #[test]
    fn vrfy_and_expn_when_enabled() {
        let mut s = session("vrfy = true\nexpn = true");
        dialogue(
            &mut s,
            &[
                ("VRFY alice", 250),
                ("VRFY <alice@example.org>", 250),
                ("VRFY nobody", 550),
                ("VRFY x@elsewhere.example", 551),
                ("EXPN postmaster", 250),
            ],
        );
        let r = s.command(b"EHLO c.example").reply.unwrap();
        assert!(r.lines().any(|l| l == "VRFY"));
    }

    #[test]
    fn ehlo_advertises_extensions_and_enhanced_codes_follow_ehlo() {
        let mut s = session("");
        let r = s.command(b"EHLO c.example").reply.unwrap();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "mx.example.org Hello c.example [192.0.2.9]");
        for ext in [
            "PIPELINING",
            "SIZE 26214400",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "BINARYMIME",
            "SMTPUTF8",
            "HELP",
        ] {
            assert!(lines.contains(&ext), "{ext} missing from {lines:?}");
        }
        assert!(s.enhanced_codes());
        s.command(b"HELO c.example");
        assert!(!s.enhanced_codes());
    }

    fn open(s: &mut Session, rcpts: usize) {
        dialogue(
            s,
            &[("EHLO c.example", 250), ("MAIL FROM:<a@b.example>", 250)],
        );
        for _ in 0..rcpts {
            dialogue(s, &[("RCPT TO:<alice@example.org>", 250)]);
        }
    }

    #[test]
    fn body_verdicts() {
        let cases = [
            (BodyReport::default(), None),
            (
                BodyReport {
                    too_big: true,
                    ..BodyReport::default()
                },
                Some(552),
            ),
            (
                BodyReport {
                    bare_newline: true,
                    ..BodyReport::default()
                },
                Some(550),
            ),
            (
                BodyReport {
                    received_count: 101,
                    ..BodyReport::default()
                },
                Some(554),
            ),
            (
                BodyReport {
                    received_count: 100,
                    ..BodyReport::default()
                },
                None,
            ),
            (
                BodyReport {
                    spool_error: Some(DeliveryError {
                        kind: Failure::DiskFull,
                        reason: "full".into(),
                    }),
                    ..BodyReport::default()
                },
                Some(452),
            ),
        ];
        for (report, code) in cases {
            let mut s = session("");
            open(&mut s, 1);
            assert_eq!(s.command(b"DATA").action, Action::ReceiveData);
            match (s.body_received(&report), code) {
                (Verdict::Deliver(env), None) => assert_eq!(env.recipients.len(), 1),
                (Verdict::Reply(r), Some(c)) => assert_eq!(r.code(), c),
                (v, c) => panic!("{report:?}: got {v:?}, wanted {c:?}"),
            }
            assert!(!s.in_transaction(), "the transaction ends with the body");
        }
    }

    #[test]
    fn delivery_results_make_one_reply() {
        let fail = |kind| {
            Err(DeliveryError {
                kind,
                reason: "why".into(),
            })
        };
        let cases = [
            (Ok(()), 250),
            (fail(Failure::Temporary), 451),
            (fail(Failure::DiskFull), 452),
            (fail(Failure::Permanent), 554),
        ];
        let s = session("");
        let env = Envelope {
            id: "ID".into(),
            reverse_path: String::new(),
            recipients: Vec::new(),
            size: 0,
        };
        for (result, code) in cases {
            assert_eq!(s.delivered(&env, &result).code(), code, "{result:?}");
        }
    }

    #[test]
    fn bdat_flow() {
        let mut s = session("");
        // Without a transaction the chunk is read and dropped, then 503.
        dialogue(&mut s, &[("EHLO c.example", 250)]);
        let r = s.command(b"BDAT 10");
        assert!(r.reply.is_none());
        assert!(matches!(
            r.action,
            Action::ReceiveChunk { discard: true, .. }
        ));
        match s.chunk_received(false, &BodyReport::default()) {
            Verdict::Reply(r) => assert_eq!(r.code(), 503),
            v => panic!("{v:?}"),
        }
        open(&mut s, 1);
        let r = s.command(b"BDAT 5");
        assert_eq!(
            r.action,
            Action::ReceiveChunk {
                size: 5,
                last: false,
                start: true,
                discard: false
            }
        );
        match s.chunk_received(false, &BodyReport::default()) {
            Verdict::Reply(r) => assert_eq!(r.to_string(), "250 2.0.0 5 octets received"),
            v => panic!("{v:?}"),
        }
        assert_eq!(s.command(b"DATA").reply.unwrap().code(), 503);
        let r = s.command(b"BDAT 0 LAST");
        assert!(matches!(
            r.action,
            Action::ReceiveChunk {
                start: false,
                last: true,
                ..
            }
        ));
        assert!(matches!(
            s.chunk_received(true, &BodyReport::default()),
            Verdict::Deliver(_)
        ));
        // An unreadable chunk size ends the session.
        assert_eq!(s.command(b"BDAT lots").action, Action::Close);
    }

    #[test]
    fn trace_field_names_protocol_and_single_recipient() {
        let mut s = session("");
        open(&mut s, 1);
        let t = s.trace_field();
        assert!(t.starts_with("Received: from c.example (unknown [192.0.2.9])\n\tby mx.example.org (mailroom) with ESMTP id "));
        assert!(t.contains("\n\tfor <alice@example.org>;\n\t"));
        let mut s = session("");
        open(&mut s, 2);
        assert!(!s.trace_field().contains("for <"));
        let mut s = session("");
        dialogue(
            &mut s,
            &[
                ("HELO c.example", 250),
                ("MAIL FROM:<a@b.example>", 250),
                ("RCPT TO:<alice@example.org>", 250),
            ],
        );
        assert!(s.trace_field().contains(" with SMTP id "));
    }
}
