//! The SMTP session state machine (RFC 5321 with its extensions), without
//! any IO: the driver hands it one command line at a time and gets back a
//! reply and an [`Action`] to carry out. What the session cannot decide
//! alone it asks for as an action and waits for: who a recipient is
//! ([`Action::Lookup`], answered with [`Session::answer`]), a message body
//! ([`Action::ReceiveData`], [`Action::ReceiveChunk`], judged by
//! [`Session::body_received`]), its delivery ([`Verdict::Deliver`], whose
//! outcome [`Session::delivered`] turns into the final reply). The time
//! and queue ids come from a [`Clock`] handed in, so a test replays
//! exactly.
//!
//! The state is the phase ([`phase::Phase`], from who the client said it
//! was and the open transaction); each verb is checked against one table
//! of verb x phase, then proceeds. Anything out of order gets 503.

pub mod ehlo;
pub mod phase;

use super::address::{self, Domain, ForwardPath, Mailbox, ReversePath};
use super::command::{self, BodyType, Command, MailParams, ParseError, RcptParams, Ret};
use super::failure::DeliveryError;
use super::peer::Peer;
use super::reply::{self, Enhanced, Reply};
use super::sasl;
use super::trace::{Clock, Received, TlsInfo, UnixTime};
use phase::{Phase, Verb};
use std::sync::Arc;

/// Received headers above this mean a mail loop (RFC 5321 6.3).
pub const MAX_HOPS: usize = 100;

/// What the session needs of the configuration: plain values, so that the
/// core depends on nothing outside itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Our name in the greeting, replies and `Received:`.
    pub hostname: String,
    /// Where a bare VRFY or EXPN name is looked up: the first local domain.
    pub default_domain: String,
    /// Refuse HELO names that are not domains or address literals.
    pub strict_helo: bool,
    pub vrfy: bool,
    pub expn: bool,
    pub limits: Limits,
    pub errors: ErrorLimits,
    /// What an authenticated client may give as MAIL FROM.
    pub senders: Senders,
}

/// Which MAIL FROM addresses each login may use, as Postfix's
/// `reject_sender_login_mismatch` has it: a stolen printer password must
/// not let anyone send as someone else. Compared without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Senders {
    /// A login's addresses, and `@domain` for any address there.
    pub named: std::collections::BTreeMap<String, Vec<String>>,
    /// A login not named may use itself at any of these (or, when it is
    /// an address, that address).
    pub local_domains: Vec<String>,
}

impl Senders {
    pub fn allows(&self, login: &str, sender: &Mailbox) -> bool {
        let Domain::Name(domain) = &sender.domain else {
            return false;
        };
        match self.named.get(login) {
            Some(allowed) => allowed.iter().any(|a| match a.strip_prefix('@') {
                Some(d) => d.eq_ignore_ascii_case(domain),
                None => a.rsplit_once('@').is_some_and(|(local, d)| {
                    local.eq_ignore_ascii_case(&sender.local) && d.eq_ignore_ascii_case(domain)
                }),
            }),
            // A login that is an address may use that address; any other
            // login, itself at any local domain.
            None => match login.rsplit_once('@') {
                Some((local, d)) => {
                    sender.local.eq_ignore_ascii_case(local) && d.eq_ignore_ascii_case(domain)
                }
                None => {
                    sender.local.eq_ignore_ascii_case(login)
                        && self
                            .local_domains
                            .iter()
                            .any(|d| d.eq_ignore_ascii_case(domain))
                }
            },
        }
    }
}

/// How many errors (replies of 4xx or 5xx to its commands) a client may
/// make without delivering a message: past `soft` each further error
/// reply is delayed ([`Response::delay`]); at `hard` the session is
/// closed with `421 4.7.0`. As Postfix's `smtpd_soft_error_limit` and
/// `smtpd_hard_error_limit`; this is what makes guessing local users at
/// RCPT slow and short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorLimits {
    pub soft: u32,
    pub hard: u32,
}

/// The bounds of what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Octets, as RFC 1870 counts them; advertised as SIZE.
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Octets of a command line, its CRLF included.
    pub max_command_line: usize,
}

/// What the driver must do after sending the reply (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read the next command.
    Continue,
    /// Close the connection.
    Close,
    /// Find out who this recipient is, then hand the answer to
    /// [`Session::answer`], which gives the reply.
    Lookup(ForwardPath),
    /// The same for an authenticated client's recipient, which may be at
    /// another domain: that one goes through the relay.
    LookupRelayed(ForwardPath),
    /// Receive a dot-terminated body into a new spool that starts with
    /// [`Session::trace_field`], then call [`Session::body_received`].
    ReceiveData,
    /// Start TLS (RFC 3207) once the reply is out: drop whatever the client
    /// sent after the command, handshake, then call
    /// [`Session::tls_started`].
    StartTls,
    /// Check this login and password, then hand the outcome to
    /// [`Session::authenticated`], which gives the reply.
    Authenticate(sasl::Credentials),
    /// Ask the filters (milters) about this command, then hand what they
    /// said to [`Session::filtered`], which gives the reply.
    Filter(Check),
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

/// A command the filters are asked about, with what they are told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Helo(String),
    /// The transaction's queue id, and the reverse path in angle brackets
    /// followed by the ESMTP parameters as the client wrote them.
    Mail {
        id: String,
        args: Vec<String>,
    },
    /// The forward path in angle brackets, then the ESMTP parameters as
    /// the client wrote them.
    Rcpt(Vec<String>),
}

#[derive(Debug)]
pub struct Response {
    pub reply: Option<Reply>,
    pub action: Action,
    /// The client has made more errors than the soft limit allows: the
    /// reply waits a while before it goes, and so does the next command.
    pub delay: bool,
}

impl Response {
    fn reply(reply: Reply) -> Response {
        Response {
            reply: Some(reply),
            action: Action::Continue,
            delay: false,
        }
    }
}

/// Who a recipient is: the answer to [`Action::Lookup`]. `R` is what the
/// driver's resolver made of a local recipient; the session keeps it in
/// the transaction and hands it back in the [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<R> {
    Local(R),
    /// A local domain, but no such user: 550 5.1.1 at RCPT time.
    UnknownUser,
    /// Not one of our domains: we do not relay.
    NotLocal,
    /// Alias expansion loops; the text shows the chain (for the log).
    Loop(String),
    /// An alias leads to a remote address, which cannot be relayed yet.
    Remote(String),
    /// It cannot be resolved now (an unreadable include file, say); the
    /// client should try again later.
    TempFail(String),
    /// Its expansion names something it may not (a command in an include
    /// file, say): refused, with the reason logged.
    Refused(String),
}

/// What the session reads of a local recipient.
pub trait Resolved: std::fmt::Debug {
    /// The address as resolved, for logs, VRFY and loop detection.
    fn address(&self) -> &str;
    /// The owner's name, for VRFY.
    fn full_name(&self) -> Option<&str>;
    /// The addresses its copies are delivered under (members, for EXPN and
    /// loop detection).
    fn members(&self) -> impl Iterator<Item = &str>;
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
pub enum Verdict<R> {
    /// Refused, or a chunk acknowledged: send this reply.
    Reply(Reply),
    /// Accepted: deliver it, then call [`Session::delivered`].
    Deliver(Envelope<R>),
    /// Acceptable so far: the filters judge its content, then
    /// [`Session::message_filtered`] gives the verdict.
    Filter(Envelope<R>),
}

/// A message ready for delivery.
#[derive(Debug, Clone)]
pub struct Envelope<R> {
    pub id: String,
    /// Reverse path without angle brackets; empty for `<>`.
    pub reverse_path: String,
    pub recipients: Vec<R>,
    /// The DSN parameters (RFC 3461) of each of `recipients`.
    pub rcpt_params: Vec<RcptParams>,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    pub size: u64,
    /// When the body was complete.
    pub received: UnixTime,
}

/// What the listener asks of AUTH (RFC 4954).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthPolicy {
    /// AUTH is offered, once TLS runs.
    pub offer: bool,
    /// Mail needs AUTH first (`530 5.7.0` until then).
    pub require: bool,
}

/// Failed AUTH attempts after which a session is closed.
const MAX_AUTH_FAILURES: u32 = 3;

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
struct Transaction<R> {
    id: String,
    from: ReversePath,
    params: MailParams,
    rcpts: Vec<R>,
    /// The DSN parameters of each recipient in `rcpts`.
    rcpt_params: Vec<RcptParams>,
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

/// What the session waits for between two commands.
#[derive(Debug)]
enum Pending<R> {
    /// The answer to a lookup, for the RCPT (with what the filters are
    /// told of it), VRFY or EXPN that asked.
    Rcpt(ForwardPath, RcptParams, Vec<String>),
    /// Whether this login's password was right.
    Auth(String),
    Vrfy(String),
    Expn(String),
    /// The end of a BDAT chunk that is read and dropped: then this reply.
    Discarded(Reply),
    /// What the filters say of a greeting, a sender, a recipient.
    FilterHelo {
        name: String,
        esmtp: bool,
    },
    FilterMail(Transaction<R>),
    FilterRcpt {
        path: ForwardPath,
        params: RcptParams,
        resolved: R,
    },
}

pub struct Session<R> {
    settings: Arc<Settings>,
    clock: &'static dyn Clock,
    peer: Peer,
    policy: TlsPolicy,
    /// The TLS session in force, once there is one.
    tls: Option<TlsInfo>,
    hello: Option<Hello>,
    tx: Option<Transaction<R>>,
    pending: Option<Pending<R>>,
    /// Errors since the session began or last delivered a message.
    errors: u32,
    auth: AuthPolicy,
    /// Who the client proved to be with AUTH.
    login: Option<String>,
    /// An AUTH exchange in progress: the client's next line is its
    /// response, not a command.
    sasl: Option<sasl::Awaiting>,
    auth_failures: u32,
    /// Milters see this session's commands.
    filters: bool,
    /// What every MAIL gets, since the filters refused the connection.
    refusal: Option<Reply>,
}

impl<R: Resolved> Session<R> {
    pub fn new(
        settings: Arc<Settings>,
        clock: &'static dyn Clock,
        peer: Peer,
        policy: TlsPolicy,
    ) -> Session<R> {
        Session {
            settings,
            clock,
            peer,
            policy,
            tls: None,
            hello: None,
            tx: None,
            pending: None,
            errors: 0,
            auth: AuthPolicy::default(),
            login: None,
            sasl: None,
            auth_failures: 0,
            filters: false,
            refusal: None,
        }
    }

    /// Milters judge this session's commands and messages from now on.
    pub fn set_filtered(&mut self, on: bool) {
        self.filters = on;
    }

    /// The filters refused the connection itself: every MAIL is refused
    /// with `reply` (as Postfix does, so that the client hears why);
    /// `None`, the filters now in force have not (or no longer) refused it.
    pub fn refuse_mail(&mut self, reply: Option<Reply>) {
        self.refusal = reply;
    }

    /// The name the client greeted with.
    pub fn hello_name(&self) -> Option<&str> {
        self.hello.as_ref().map(|h| h.name.as_str())
    }

    /// What this listener asks of AUTH; none unless told.
    pub fn with_auth(mut self, auth: AuthPolicy) -> Session<R> {
        self.auth = auth;
        self
    }

    /// The login the client authenticated as.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The bounds the driver holds the client to while it reads.
    pub fn limits(&self) -> Limits {
        self.settings.limits
    }

    fn phase(&self) -> Phase {
        match (&self.hello, &self.tx) {
            (None, _) => Phase::Fresh,
            (Some(_), None) => Phase::Greeted,
            (Some(_), Some(tx)) if tx.body == BodyMode::Chunks => Phase::Chunking,
            (Some(_), Some(_)) => Phase::Envelope,
        }
    }

    /// The connection is now encrypted. RFC 3207 4.2: the client must
    /// greet again, and nothing said before counts.
    pub fn tls_started(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.hello = None;
        self.tx = None;
        self.pending = None;
    }

    pub fn greeting(&self) -> Reply {
        reply::greeting(&self.settings.hostname)
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

    /// Handles one command line (without its line end). A client that
    /// has made too many errors is told so and the session ends.
    pub fn command(&mut self, line: &[u8]) -> Response {
        if self.errors >= self.settings.errors.hard {
            log::info!("[{}]: too many errors, disconnecting", self.peer);
            return Response {
                reply: Some(reply::too_many_errors(&self.settings.hostname)),
                action: Action::Close,
                delay: false,
            };
        }
        let r = match self.sasl.take() {
            Some(awaiting) => self.sasl_line(awaiting, line),
            None => self.handle(line),
        };
        self.counted(r)
    }

    /// Counts an error reply, and marks it for delay past the soft limit.
    fn counted(&mut self, mut r: Response) -> Response {
        if r.reply.as_ref().is_some_and(|r| r.code() >= 400) {
            self.errors += 1;
            r.delay = self.errors > self.settings.errors.soft;
        }
        r
    }

    fn handle(&mut self, line: &[u8]) -> Response {
        // The driver answers what is asked before it reads on: whatever
        // is still pending belongs to nothing now.
        debug_assert!(self.pending.is_none(), "a command while {:?}", self.pending);
        self.pending = None;
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.parse_error(e),
        };
        if let Err(r) = self.gate(&cmd) {
            // A refused chunk is read and dropped before it is answered:
            // its octets must never be taken for commands.
            if let Command::Bdat { size, last } = cmd {
                self.pending = Some(Pending::Discarded(r));
                return Response {
                    reply: None,
                    action: Action::ReceiveChunk {
                        size,
                        last,
                        start: false,
                        discard: true,
                    },
                    delay: false,
                };
            }
            return Response::reply(r);
        }
        match cmd {
            Command::Helo(name) => self.hello(name, false),
            Command::Ehlo(name) => self.hello(name, true),
            Command::Mail { path, params } => self.mail(path, params, line),
            Command::Rcpt { path, params } => self.rcpt(path, params, line),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.tx = None;
                Response::reply(reply::reset_ok())
            }
            Command::Noop => Response::reply(reply::ok()),
            Command::Quit => Response {
                reply: Some(reply::closing(&self.settings.hostname)),
                action: Action::Close,
                delay: false,
            },
            Command::Help(_) => Response::reply(self.offer().help()),
            Command::Vrfy(arg) => self.vrfy(&arg),
            Command::Expn(arg) => self.expn(&arg),
            Command::StartTls => Response {
                reply: Some(reply::ready_for_tls()),
                action: Action::StartTls,
                delay: false,
            },
            Command::Auth { mechanism, initial } => {
                self.sasl_step(sasl::start(&mechanism, initial.as_deref()))
            }
            Command::NotImplemented => Response::reply(reply::not_implemented()),
        }
    }

    /// A line of an AUTH exchange. Only base64 and `*` belong here, so a
    /// line that is not text cannot be one.
    fn sasl_line(&mut self, awaiting: sasl::Awaiting, line: &[u8]) -> Response {
        let Ok(text) = std::str::from_utf8(line) else {
            return Response::reply(reply::auth_undecodable(
                "Cannot decode the response: not base64",
            ));
        };
        self.sasl_step(sasl::respond(awaiting, text.trim_end_matches([' ', '\t'])))
    }

    fn sasl_step(&mut self, step: sasl::Step) -> Response {
        match step {
            sasl::Step::Challenge(r, awaiting) => {
                self.sasl = Some(awaiting);
                Response::reply(r)
            }
            sasl::Step::Refuse(r) => Response::reply(r),
            sasl::Step::Check(credentials) => self.ask(
                Pending::Auth(credentials.login.clone()),
                Action::Authenticate(credentials),
            ),
        }
    }

    /// Whether the password of [`Action::Authenticate`] was right. The
    /// third failure ends the session.
    pub fn authenticated(&mut self, ok: bool) -> Response {
        let Some(Pending::Auth(login)) = self.pending.take() else {
            unreachable!("an AUTH outcome with no AUTH asked");
        };
        if ok {
            log::info!("[{}]: authenticated as {login}", self.peer);
            self.login = Some(login);
            return Response::reply(reply::auth_ok());
        }
        self.auth_failures += 1;
        log::warn!(
            "[{}]: AUTH failed for login {login:?} ({} in this session)",
            self.peer,
            self.auth_failures
        );
        if self.auth_failures >= MAX_AUTH_FAILURES {
            return self.counted(Response {
                reply: Some(reply::too_many_auth_failures(&self.settings.hostname)),
                action: Action::Close,
                delay: false,
            });
        }
        self.counted(Response::reply(reply::auth_failed()))
    }

    /// Whether the command may run now, in this order: is it offered here,
    /// does the listener want TLS first, does the phase allow it, and
    /// what else its verb needs before it proceeds.
    fn gate(&self, cmd: &Command) -> Result<(), Reply> {
        let verb = Verb::of(cmd);
        if verb == Verb::StartTls {
            if self.tls.is_some() {
                return Err(reply::bad_sequence("Error: TLS already active"));
            }
            if !self.policy.offer {
                return Err(reply::not_implemented());
            }
        }
        if verb == Verb::Auth {
            if !self.auth.offer {
                return Err(reply::not_implemented());
            }
            if self.tls.is_none() {
                return Err(reply::auth_needs_tls());
            }
        }
        if verb.needs_tls_first() && self.policy.require && self.tls.is_none() {
            return Err(reply::tls_required());
        }
        if verb == Verb::Mail && self.auth.require && self.login.is_none() {
            return Err(reply::auth_required());
        }
        if let (Verb::Mail, Some(r)) = (verb, &self.refusal) {
            return Err(r.clone());
        }
        // DATA for a binary body is told to use BDAT instead, amid its
        // chunks too, where the table would only say it comes too late.
        let binary_data = verb == Verb::Data && self.binary_body();
        let phase = self.phase();
        if !(binary_data && phase == Phase::Chunking) {
            phase::check(verb, phase)?;
        }
        if let (Verb::Data | Verb::Bdat, Some(tx)) = (verb, &self.tx) {
            if tx.rcpts.is_empty() {
                return Err(if tx.rcpt_attempts == 0 {
                    reply::bad_sequence("Error: need RCPT command")
                } else {
                    reply::no_valid_recipients()
                });
            }
        }
        if binary_data {
            return Err(reply::bad_sequence(
                "Error: BODY=BINARYMIME needs BDAT, not DATA",
            ));
        }
        if verb == Verb::Auth && self.login.is_some() {
            return Err(reply::bad_sequence("Error: already authenticated"));
        }
        Ok(())
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
                    delay: false,
                }
            }
            ParseError::Sender(e) => reply::bad_sender_syntax(&e.to_string()),
            ParseError::Recipient(e) => reply::bad_recipient_syntax(&e.to_string()),
            ParseError::UnknownParameter(p) => reply::parameter_not_implemented(&p),
            ParseError::BadParameter(text) => reply::syntax(text),
        };
        Response::reply(r)
    }

    fn offer(&self) -> ehlo::Offer {
        ehlo::Offer {
            max_message_size: self.settings.limits.max_message_size,
            vrfy: self.settings.vrfy,
            expn: self.settings.expn,
            starttls: self.policy.offer && self.tls.is_none(),
            auth: self.auth.offer && self.tls.is_some() && self.login.is_none(),
        }
    }

    fn hello(&mut self, name: String, esmtp: bool) -> Response {
        // Lax: any domain (underscores and bare IPs included) or address
        // literal, and `[::1]`-style literals that some clients send.
        let valid = if self.settings.strict_helo {
            Domain::parse_strict(&name).is_ok()
        } else {
            Domain::parse(&name).is_ok()
                || name
                    .strip_prefix('[')
                    .and_then(|n| n.strip_suffix(']'))
                    .is_some_and(|ip| ip.parse::<core::net::IpAddr>().is_ok())
        };
        if !valid {
            return Response::reply(reply::bad_helo(&name));
        }
        // RFC 5321 4.1.4: a new greeting resets any transaction.
        self.tx = None;
        if self.filters {
            return self.ask(
                Pending::FilterHelo {
                    name: name.clone(),
                    esmtp,
                },
                Action::Filter(Check::Helo(name)),
            );
        }
        self.greeted(name, esmtp)
    }

    /// The reply to a greeting that stands.
    fn greeted(&mut self, name: String, esmtp: bool) -> Response {
        let client = format!("{name} {}", self.peer.hello_text());
        let mut r = reply::helo_ok(&self.settings.hostname, &client);
        if esmtp {
            for keyword in self.offer().keywords() {
                r = r.line(keyword);
            }
        }
        self.hello = Some(Hello { name, esmtp });
        Response::reply(r)
    }

    fn mail(&mut self, path: ReversePath, params: MailParams, line: &[u8]) -> Response {
        let esmtp = self.hello.as_ref().is_some_and(|h| h.esmtp);
        if !esmtp && !params.is_empty() {
            return Response::reply(reply::parameter_not_implemented(
                "ESMTP parameters need EHLO",
            ));
        }
        if let ReversePath::Mailbox(m) = &path {
            if !m.is_ascii() && !params.smtputf8 {
                return Response::reply(reply::utf8_not_permitted());
            }
        }
        if params
            .size
            .is_some_and(|s| s > self.settings.limits.max_message_size)
        {
            return Response::reply(reply::message_too_big());
        }
        // An authenticated client sends as itself; `<>` names nobody.
        if let (Some(login), ReversePath::Mailbox(m)) = (&self.login, &path) {
            if !self.settings.senders.allows(login, m) {
                log::warn!("[{}]: login {login} may not send as <{m}>", self.peer);
                return Response::reply(reply::sender_not_owned(&m.to_string(), login));
            }
        }
        let id = self.clock.queue_id();
        let args = filter_args(&reverse_path_text(&path), line);
        let tx = Transaction {
            id,
            from: path,
            params,
            rcpts: Vec::new(),
            rcpt_params: Vec::new(),
            rcpt_attempts: 0,
            first_rcpt: None,
            body: BodyMode::None,
            chunk_octets: 0,
        };
        if self.filters {
            let check = Check::Mail {
                id: tx.id.clone(),
                args,
            };
            return self.ask(Pending::FilterMail(tx), Action::Filter(check));
        }
        Response::reply(self.sender_taken(tx))
    }

    /// The reply to a MAIL that stands: its transaction is open.
    fn sender_taken(&mut self, tx: Transaction<R>) -> Reply {
        log::info!(
            "{}: from=<{}> size={} body={}",
            tx.id,
            reverse_path_text(&tx.from),
            tx.params.size.map_or("-".into(), |s| s.to_string()),
            tx.params.body.unwrap_or_default().keyword()
        );
        self.tx = Some(tx);
        reply::sender_ok()
    }

    fn rcpt(&mut self, path: ForwardPath, params: RcptParams, line: &[u8]) -> Response {
        let esmtp = self.hello.as_ref().is_some_and(|h| h.esmtp);
        if !esmtp && params != RcptParams::default() {
            return Response::reply(reply::parameter_not_implemented(
                "ESMTP parameters need EHLO",
            ));
        }
        let tx = self.tx.as_mut().expect("the phase has a transaction");
        tx.rcpt_attempts += 1;
        if let ForwardPath::Mailbox(m) = &path {
            if !m.is_ascii() && !tx.params.smtputf8 {
                return Response::reply(reply::utf8_not_permitted());
            }
        }
        if tx.rcpts.len() >= self.settings.limits.max_recipients {
            return Response::reply(reply::too_many_recipients());
        }
        let action = if self.login.is_some() {
            Action::LookupRelayed(path.clone())
        } else {
            Action::Lookup(path.clone())
        };
        let args = filter_args(&forward_path_text(&path), line);
        self.ask(Pending::Rcpt(path, params, args), action)
    }

    /// Asks the driver something; its answer comes back for `asked`.
    fn ask(&mut self, asked: Pending<R>, action: Action) -> Response {
        self.pending = Some(asked);
        Response {
            reply: None,
            action,
            delay: false,
        }
    }

    /// The answer to the lookup asked for: the reply to the RCPT, VRFY or
    /// EXPN that asked.
    pub fn answer(&mut self, lookup: Lookup<R>) -> Response {
        let reply = match self.pending.take() {
            Some(Pending::Rcpt(path, params, args)) => match lookup {
                Lookup::Local(resolved) if self.filters => {
                    return self.ask(
                        Pending::FilterRcpt {
                            path,
                            params,
                            resolved,
                        },
                        Action::Filter(Check::Rcpt(args)),
                    );
                }
                lookup => self.rcpt_answered(path, params, lookup),
            },
            Some(Pending::Vrfy(shown)) => vrfy_reply(&shown, lookup),
            Some(Pending::Expn(shown)) => expn_reply(&shown, lookup),
            other => unreachable!("an answer to nothing asked, while {other:?}"),
        };
        self.counted(Response::reply(reply))
    }

    fn rcpt_answered(&mut self, path: ForwardPath, params: RcptParams, lookup: Lookup<R>) -> Reply {
        let tx = self
            .tx
            .as_mut()
            .expect("a RCPT's transaction lasts until its answer");
        let shown = forward_path_text(&path);
        match lookup {
            Lookup::Local(r) => {
                log::debug!("{}: to=<{shown}> accepted", tx.id);
                if tx.first_rcpt.is_none() {
                    // `for` needs a Mailbox (RFC 5321 4.4): qualify postmaster.
                    tx.first_rcpt = Some(match path {
                        ForwardPath::Postmaster => {
                            format!("postmaster@{}", self.settings.hostname)
                        }
                        ForwardPath::Mailbox(_) => shown,
                    });
                }
                tx.rcpts.push(r);
                tx.rcpt_params.push(params);
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

    /// What the filters said of the command asked about: `None`, go on;
    /// otherwise the command is refused with this reply.
    pub fn filtered(&mut self, refused: Option<Reply>) -> Response {
        let pending = self.pending.take();
        if let Some(r) = refused {
            let shown = r.render(true);
            let shown = shown.trim_end();
            match &pending {
                Some(Pending::FilterMail(tx)) => {
                    log::info!("{}: sender refused by a milter: {shown}", tx.id)
                }
                Some(Pending::FilterRcpt { path, .. }) => log::info!(
                    "{}: to=<{}> refused by a milter: {shown}",
                    self.tx.as_ref().map_or("-", |tx| tx.id.as_str()),
                    forward_path_text(path)
                ),
                _ => log::info!("[{}]: greeting refused by a milter: {shown}", self.peer),
            }
            return self.counted(Response::reply(r));
        }
        let r = match pending {
            Some(Pending::FilterHelo { name, esmtp }) => return self.greeted(name, esmtp),
            Some(Pending::FilterMail(tx)) => self.sender_taken(tx),
            Some(Pending::FilterRcpt {
                path,
                params,
                resolved,
            }) => self.rcpt_answered(path, params, Lookup::Local(resolved)),
            other => unreachable!("a filter's word on nothing asked, while {other:?}"),
        };
        Response::reply(r)
    }

    fn data(&mut self) -> Response {
        let tx = self.tx.as_mut().expect("the phase has a transaction");
        tx.body = BodyMode::Data;
        Response {
            reply: Some(reply::start_data()),
            action: Action::ReceiveData,
            delay: false,
        }
    }

    fn bdat(&mut self, size: u64, last: bool) -> Response {
        let tx = self.tx.as_mut().expect("the phase has a transaction");
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
            delay: false,
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
        // RFC 3848 and RFC 6531: S for TLS, A for AUTH.
        let protocol = match (hello.esmtp, utf8, self.tls.is_some(), self.login.is_some()) {
            (false, ..) => "SMTP",
            (true, false, false, false) => "ESMTP",
            (true, false, true, false) => "ESMTPS",
            (true, false, false, true) => "ESMTPA",
            (true, false, true, true) => "ESMTPSA",
            (true, true, false, false) => "UTF8SMTP",
            (true, true, true, false) => "UTF8SMTPS",
            (true, true, false, true) => "UTF8SMTPA",
            (true, true, true, true) => "UTF8SMTPSA",
        };
        Received {
            helo: &hello.name,
            peer: &self.peer,
            hostname: &self.settings.hostname,
            protocol,
            tls: self.tls.as_ref(),
            id: &tx.id,
            recipient: tx.first_rcpt.as_deref().filter(|_| tx.rcpts.len() == 1),
            date: self.clock.now(),
        }
        .render()
    }

    /// Judges a complete DATA body, or the last BDAT chunk's body. The
    /// transaction ends here whatever the verdict.
    pub fn body_received(&mut self, report: &BodyReport) -> Verdict<R> {
        let Some(tx) = self.tx.take() else {
            return Verdict::Reply(reply::bad_sequence("Error: no transaction"));
        };
        let refuse = |why: &str, r: Reply| {
            log::info!("{}: message refused: {why}", tx.id);
            Verdict::Reply(r)
        };
        if let Some(e) = &report.spool_error {
            log::error!("{}: spooling failed: {e}", tx.id);
            return Verdict::Reply(e.kind.reply(&e.reason));
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
            .flat_map(|r| std::iter::once(r.address()).chain(r.members()));
        let looped = ours.into_iter().find(|a| {
            report
                .delivered_to
                .iter()
                .any(|d| d.trim_matches(['<', '>']).eq_ignore_ascii_case(a))
        });
        if let Some(a) = looped {
            return refuse("mail loop", reply::delivered_to_loop(a));
        }
        let env = Envelope {
            id: tx.id,
            reverse_path: reverse_path_text(&tx.from),
            recipients: tx.rcpts,
            rcpt_params: tx.rcpt_params,
            ret: tx.params.ret,
            envid: tx.params.envid,
            size: report.size,
            received: self.clock.now(),
        };
        if self.filters {
            return Verdict::Filter(env);
        }
        self.message_filtered(env, None)
    }

    /// What the filters said of a message's content ([`Verdict::Filter`]),
    /// its envelope as they left it: `None`, deliver it; otherwise it is
    /// refused with this reply.
    pub fn message_filtered(&mut self, env: Envelope<R>, refused: Option<Reply>) -> Verdict<R> {
        if let Some(r) = refused {
            log::info!(
                "{}: message refused by a milter: {}",
                env.id,
                r.render(true).trim_end()
            );
            return Verdict::Reply(r);
        }
        let to: Vec<String> = env
            .recipients
            .iter()
            .map(|r| format!("<{}>", r.address()))
            .collect();
        log::info!(
            "{}: accepted from=<{}> size={} nrcpt={} to={}",
            env.id,
            env.reverse_path,
            env.size,
            env.recipients.len(),
            to.join(",")
        );
        // A client that delivers is no prober: its errors are forgiven.
        self.errors = 0;
        Verdict::Deliver(env)
    }

    /// Handles the end of a BDAT chunk. For the last chunk (or a failed
    /// one) this is the message's verdict.
    pub fn chunk_received(&mut self, last: bool, report: &BodyReport) -> Verdict<R> {
        if let Some(Pending::Discarded(r)) = self.pending.take() {
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
    pub fn delivered(&self, env: &Envelope<R>, result: Result<(), &DeliveryError>) -> Reply {
        match result {
            Ok(()) => reply::queued(&env.id),
            Err(e) => e.kind.reply(&e.reason),
        }
    }

    fn vrfy(&mut self, arg: &str) -> Response {
        if !self.settings.vrfy {
            return Response::reply(reply::cannot_vrfy());
        }
        match self.lookup_arg(arg) {
            Ok(path) => self.ask(
                Pending::Vrfy(forward_path_text(&path)),
                Action::Lookup(path),
            ),
            Err(r) => Response::reply(r),
        }
    }

    fn expn(&mut self, arg: &str) -> Response {
        if !self.settings.expn {
            return Response::reply(Reply::new(
                502,
                Some(Enhanced(5, 5, 1)),
                "Error: EXPN is disabled",
            ));
        }
        match self.lookup_arg(arg) {
            Ok(path) => self.ask(
                Pending::Expn(forward_path_text(&path)),
                Action::Lookup(path),
            ),
            Err(r) => Response::reply(r),
        }
    }

    /// VRFY/EXPN argument: an address, with or without `<>`, or a bare
    /// local part meaning a user of our first local domain.
    fn lookup_arg(&self, arg: &str) -> Result<ForwardPath, Reply> {
        let arg = arg.trim();
        let qualified;
        let arg = if !arg.contains('@') && !arg.contains('<') {
            qualified = format!("<{arg}@{}>", self.settings.default_domain);
            &qualified
        } else {
            arg
        };
        match address::parse_forward_path(arg) {
            Ok((p, "")) => Ok(p),
            _ => Err(reply::syntax("Syntax: VRFY/EXPN address")),
        }
    }
}

fn vrfy_reply<R: Resolved>(shown: &str, lookup: Lookup<R>) -> Reply {
    match lookup {
        Lookup::Local(r) => {
            let text = match r.full_name() {
                Some(name) => format!("{name} <{}>", r.address()),
                None => format!("<{}>", r.address()),
            };
            Reply::new(250, Some(Enhanced(2, 1, 5)), text)
        }
        other => not_verified(shown, &other),
    }
}

fn expn_reply<R: Resolved>(shown: &str, lookup: Lookup<R>) -> Reply {
    let r = match lookup {
        Lookup::Local(r) => r,
        other => return not_verified(shown, &other),
    };
    // One line per member mailbox, as RFC 5321 3.5.2 shows.
    let mut members: Vec<&str> = Vec::new();
    for m in r.members() {
        if !members.contains(&m) {
            members.push(m);
        }
    }
    let mut lines = members.iter().map(|m| format!("<{m}>"));
    let first = lines.next().unwrap_or_else(|| format!("<{}>", r.address()));
    lines.fold(
        Reply::new(250, Some(Enhanced(2, 1, 5)), first),
        |reply, l| reply.line(l),
    )
}

/// The reply to VRFY or EXPN for an address that is not a local one.
fn not_verified<R>(shown: &str, lookup: &Lookup<R>) -> Reply {
    match lookup {
        Lookup::NotLocal => Reply::new(
            551,
            Some(Enhanced(5, 1, 6)),
            format!("<{shown}>: not a local address"),
        ),
        other => lookup_failure(other, shown),
    }
}

/// The reply for a recipient that did not resolve to local copies. The
/// details (alias chains, file names) go to the log, not to the client.
fn lookup_failure<R>(lookup: &Lookup<R>, shown: &str) -> Reply {
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

fn mailbox_text(m: &Mailbox) -> String {
    m.to_string()
}

/// What a milter is told of MAIL or RCPT: the path in angle brackets,
/// then each ESMTP parameter as the client wrote it.
fn filter_args(path: &str, line: &[u8]) -> Vec<String> {
    let mut args = vec![format!("<{path}>")];
    args.extend(
        command::written_params(line)
            .into_iter()
            .map(str::to_string),
    );
    args
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
    use crate::smtp::failure::Failure;
    use crate::smtp::trace::{queue_id, UnixTime};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// What the test's lookups resolve a recipient to.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Rcpt {
        address: String,
        full_name: Option<String>,
    }

    impl Resolved for Rcpt {
        fn address(&self) -> &str {
            &self.address
        }
        fn full_name(&self) -> Option<&str> {
            self.full_name.as_deref()
        }
        fn members(&self) -> impl Iterator<Item = &str> {
            std::iter::once(self.address.as_str())
        }
    }

    /// Knows alice and postmaster at example.org.
    fn lookup(rcpt: &ForwardPath) -> Lookup<Rcpt> {
        let user = match rcpt {
            ForwardPath::Postmaster => "postmaster".to_string(),
            ForwardPath::Mailbox(m) if m.domain.matches_name("example.org") => {
                m.local.to_lowercase()
            }
            ForwardPath::Mailbox(_) => return Lookup::NotLocal,
        };
        if user == "alice" || user == "postmaster" {
            Lookup::Local(Rcpt {
                address: format!("{user}@example.org"),
                full_name: (user == "alice").then(|| "Alice Liddell".to_string()),
            })
        } else {
            Lookup::UnknownUser
        }
    }

    /// Always 22 Nov 2026 14:40:00 UTC; ids count up from 0.
    struct Fixed(AtomicU32);

    impl Clock for Fixed {
        fn now(&self) -> UnixTime {
            UnixTime::from_secs(1_795_358_400)
        }
        fn queue_id(&self) -> String {
            queue_id(self.now(), self.0.fetch_add(1, Ordering::Relaxed))
        }
    }

    fn settings() -> Settings {
        Settings {
            errors: ErrorLimits { soft: 10, hard: 20 },
            hostname: "mx.example.org".into(),
            default_domain: "example.org".into(),
            strict_helo: false,
            vrfy: false,
            expn: false,
            limits: Limits {
                max_message_size: 26_214_400,
                max_recipients: 100,
                max_command_line: 4096,
            },
            senders: Senders {
                named: [(
                    "printer".to_string(),
                    vec![
                        "scans@example.org".to_string(),
                        "@office.example".to_string(),
                    ],
                )]
                .into(),
                local_domains: vec!["example.org".into()],
            },
        }
    }

    fn session(edit: impl FnOnce(&mut Settings)) -> Session<Rcpt> {
        session_with(edit, TlsPolicy::default())
    }

    fn session_with(edit: impl FnOnce(&mut Settings), policy: TlsPolicy) -> Session<Rcpt> {
        let mut s = settings();
        edit(&mut s);
        // Each session its own clock, so that its ids start at 0.
        let clock: &'static Fixed = Box::leak(Box::new(Fixed(AtomicU32::new(0))));
        let peer = Peer::Tcp {
            addr: "192.0.2.9:4321".parse().unwrap(),
            name: None,
        };
        Session::new(Arc::new(s), clock, peer, policy)
    }

    /// One command, its lookup answered if it asks for one.
    fn run(s: &mut Session<Rcpt>, line: &str) -> Response {
        let r = s.command(line.as_bytes());
        match &r.action {
            Action::Lookup(path) => {
                assert!(r.reply.is_none(), "a lookup comes before the reply");
                s.answer(lookup(path))
            }
            // Other domains are relayed: a recipient of their own.
            Action::LookupRelayed(path) => match lookup(path) {
                Lookup::NotLocal => s.answer(Lookup::Local(Rcpt {
                    address: "relayed".into(),
                    full_name: None,
                })),
                other => s.answer(other),
            },
            // Every login's password is "right".
            Action::Authenticate(c) => {
                assert!(r.reply.is_none(), "a check comes before the reply");
                s.authenticated(c.password == "right")
            }
            _ => r,
        }
    }

    fn tls13() -> TlsInfo {
        TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            key_exchange: Some("X25519".into()),
        }
    }

    fn ehlo_lines(s: &mut Session<Rcpt>) -> Vec<String> {
        let r = s.command(b"EHLO c.example").reply.unwrap();
        r.lines().map(str::to_string).collect()
    }

    #[test]
    fn starttls_is_offered_once_and_resets_the_session() {
        let offer = TlsPolicy {
            offer: true,
            require: false,
        };
        let mut s = session_with(|_| (), offer);
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

    fn b64(text: &str) -> String {
        crate::smtp::encoding::base64_encode(text.as_bytes())
    }

    fn submission() -> Session<Rcpt> {
        session(|_| ()).with_auth(AuthPolicy {
            offer: true,
            require: true,
        })
    }

    #[test]
    fn auth_is_offered_over_tls_only_and_submission_needs_it() {
        let mut s = submission();
        assert!(!ehlo_lines(&mut s).iter().any(|l| l.starts_with("AUTH")));
        let plain = format!("AUTH PLAIN {}", b64("\0alice\0right"));
        dialogue(&mut s, &[(&plain, 538), ("MAIL FROM:<a@b.example>", 530)]);
        s.tls_started(tls13());
        dialogue(&mut s, &[(&plain, 503)]);
        assert!(ehlo_lines(&mut s).contains(&"AUTH PLAIN LOGIN".to_string()));
        dialogue(
            &mut s,
            &[
                ("MAIL FROM:<alice@example.org>", 530),
                (&plain, 235),
                (&plain, 503),
                ("MAIL FROM:<alice@example.org>", 250),
                ("RCPT TO:<alice@example.org>", 250),
                (&plain, 503),
            ],
        );
        assert_eq!(s.login(), Some("alice"));
        // Once authenticated, EHLO offers it no more.
        assert!(!ehlo_lines(&mut s).iter().any(|l| l.starts_with("AUTH")));
        dialogue(&mut s, &[("MAIL FROM:<Alice@EXAMPLE.org>", 250)]);
        dialogue(&mut s, &[("RCPT TO:<alice@example.org>", 250)]);
        let t = s.trace_field();
        assert!(t.contains(" with ESMTPSA id "), "{t}");
        assert!(!t.contains("right"), "{t}");
    }

    #[test]
    fn an_authenticated_client_may_send_to_other_domains() {
        let mut s = submission();
        s.tls_started(tls13());
        ehlo_lines(&mut s);
        let r = s.command(format!("AUTH PLAIN {}", b64("\0alice\0right")).as_bytes());
        assert!(matches!(r.action, Action::Authenticate(_)));
        s.authenticated(true);
        dialogue(&mut s, &[("MAIL FROM:<alice@example.org>", 250)]);
        let r = s.command(b"RCPT TO:<friend@elsewhere.example>");
        assert!(matches!(r.action, Action::LookupRelayed(_)), "{r:?}");
        // Unauthenticated, the same recipient is looked up as ever.
        let mut s = session(|_| ());
        dialogue(
            &mut s,
            &[("EHLO c.example", 250), ("MAIL FROM:<a@b.example>", 250)],
        );
        let r = s.command(b"RCPT TO:<friend@elsewhere.example>");
        assert!(matches!(r.action, Action::Lookup(_)), "{r:?}");
    }

    #[test]
    fn an_authenticated_client_sends_as_itself_only() {
        let login = |user: &str| {
            let mut s = submission();
            s.tls_started(tls13());
            ehlo_lines(&mut s);
            let plain = format!("AUTH PLAIN {}", b64(&format!("\0{user}\0right")));
            dialogue(&mut s, &[(&plain, 235)]);
            s
        };
        let mail = |s: &mut Session<Rcpt>, from: &str| {
            let r = run(s, &format!("MAIL FROM:<{from}>")).reply.unwrap();
            if r.code() == 250 {
                run(s, "RSET");
            }
            r.to_string()
        };
        let mut s = login("alice");
        for ok in ["alice@example.org", "ALICE@example.ORG", ""] {
            assert!(mail(&mut s, ok).starts_with("250"), "{ok}");
        }
        for refused in [
            "bob@example.org",
            "alice@elsewhere.example",
            "alice@[192.0.2.1]",
        ] {
            assert_eq!(
                mail(&mut s, refused),
                format!("553 5.7.1 <{refused}>: Sender address rejected: not owned by user alice"),
            );
        }
        // A login with its addresses named: those, and only those.
        let mut s = login("printer");
        for ok in [
            "scans@example.org",
            "anyone@office.example",
            "x@OFFICE.example",
        ] {
            assert!(mail(&mut s, ok).starts_with("250"), "{ok}");
        }
        for refused in [
            "printer@example.org",
            "ceo@example.org",
            "a@sub.office.example",
        ] {
            assert!(mail(&mut s, refused).starts_with("553 5.7.1"), "{refused}");
        }
        // A login that is an address sends as that address.
        let mut s = login("bob@example.org");
        assert!(mail(&mut s, "Bob@Example.org").starts_with("250"));
        assert!(mail(&mut s, "bob@other.example").starts_with("553 5.7.1"));
        assert!(mail(&mut s, "bob@example.org.other").starts_with("553 5.7.1"));
        // Unauthenticated, on a listener that offers AUTH: as ever.
        let mut s = session(|_| ()).with_auth(AuthPolicy {
            offer: true,
            require: false,
        });
        ehlo_lines(&mut s);
        assert!(mail(&mut s, "ceo@example.org").starts_with("250"));
    }

    #[test]
    fn where_auth_is_not_offered_it_is_not_implemented() {
        let mut s = session(|_| ());
        s.tls_started(tls13());
        assert!(!ehlo_lines(&mut s).iter().any(|l| l.starts_with("AUTH")));
        dialogue(
            &mut s,
            &[("AUTH PLAIN", 502), ("MAIL FROM:<a@b.example>", 250)],
        );
    }

    #[test]
    fn login_exchange_cancel_and_malformed_answers() {
        let mut s = submission();
        s.tls_started(tls13());
        ehlo_lines(&mut s);
        let user = b64("alice");
        dialogue(
            &mut s,
            &[
                ("AUTH LOGIN", 334),
                (&user, 334),
                ("*", 501),
                ("AUTH LOGIN", 334),
                ("not base64!", 501),
                // The exchange is over: commands are commands again.
                ("NOOP", 250),
                ("AUTH PLAIN", 334),
                ("\u{1}\u{2}", 501),
                ("AUTH CRAM-MD5", 504),
                ("AUTH LOGIN", 334),
                (&user, 334),
                (&b64("right"), 235),
            ],
        );
        assert_eq!(s.login(), Some("alice"));
        // A line that is not text is no answer either.
        let mut s = submission();
        s.tls_started(tls13());
        ehlo_lines(&mut s);
        dialogue(&mut s, &[("AUTH PLAIN", 334)]);
        let r = s.command(b"\xff\xfe");
        assert_eq!(r.reply.unwrap().code(), 501);
    }

    #[test]
    fn the_third_failed_auth_ends_the_session() {
        let mut s = submission();
        s.tls_started(tls13());
        ehlo_lines(&mut s);
        let wrong = format!("AUTH PLAIN {}", b64("\0alice\0wrong"));
        dialogue(&mut s, &[(&wrong, 535), (&wrong, 535)]);
        let r = run(&mut s, &wrong);
        assert_eq!(r.reply.unwrap().code(), 421);
        assert_eq!(r.action, Action::Close);
        assert_eq!(s.login(), None);
    }

    #[test]
    fn starttls_is_refused_where_it_is_not_offered() {
        let mut s = session(|_| ());
        assert!(!ehlo_lines(&mut s).contains(&"STARTTLS".to_string()));
        let r = s.command(b"STARTTLS");
        assert_eq!(r.reply.unwrap().code(), 502);
        assert_eq!(r.action, Action::Continue);
        // An implicit TLS connection: already encrypted.
        let mut s = session(|_| ());
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
        let mut s = session_with(
            |s| {
                s.vrfy = true;
                s.expn = true;
            },
            policy,
        );
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
        refused_chunk(&mut s, "BDAT 4 LAST", 530);
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

    /// A BDAT command whose chunk is read and dropped, then refused with
    /// `code`.
    fn refused_chunk(s: &mut Session<Rcpt>, line: &str, code: u16) {
        let r = s.command(line.as_bytes());
        assert!(r.reply.is_none());
        let Action::ReceiveChunk {
            discard: true,
            last,
            ..
        } = r.action
        else {
            panic!("{line}: {:?}", r.action)
        };
        match s.chunk_received(last, &BodyReport::default()) {
            Verdict::Reply(r) => assert_eq!(r.code(), code),
            v => panic!("{v:?}"),
        }
    }

    /// Replays a dialogue: each line with the reply code it must get.
    fn dialogue(s: &mut Session<Rcpt>, steps: &[(&str, u16)]) {
        for (line, code) in steps {
            let r = run(s, line);
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
    fn data_for_a_binary_body_is_told_to_use_bdat() {
        let mut s = session(|_| ());
        dialogue(
            &mut s,
            &[
                ("EHLO c.example", 250),
                ("MAIL FROM:<a@b.example> BODY=BINARYMIME", 250),
            ],
        );
        let text = |s: &mut Session<Rcpt>| run(s, "DATA").reply.unwrap().to_string();
        // Without a recipient, that is said first.
        assert_eq!(text(&mut s), "503 5.5.1 Error: need RCPT command");
        dialogue(&mut s, &[("RCPT TO:<alice@example.org>", 250)]);
        let binary = "503 5.5.1 Error: BODY=BINARYMIME needs BDAT, not DATA";
        assert_eq!(text(&mut s), binary);
        // Amid its chunks too.
        assert!(matches!(
            s.command(b"BDAT 3").action,
            Action::ReceiveChunk { discard: false, .. }
        ));
        assert!(matches!(
            s.chunk_received(false, &BodyReport::default()),
            Verdict::Reply(_)
        ));
        assert_eq!(text(&mut s), binary);
        // A text body amid chunks: too late for DATA.
        let mut s = session(|_| ());
        open(&mut s, 1);
        s.command(b"BDAT 3");
        s.chunk_received(false, &BodyReport::default());
        assert_eq!(text(&mut s), "503 5.5.1 Error: DATA after BDAT");
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
            dialogue(&mut session(|_| ()), steps);
        }
    }

    #[test]
    fn command_replies() {
        dialogue(
            &mut session(|_| ()),
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
                ("RCPT TO:<alice@example.org> FOO=BAR", 555),
                ("RCPT TO:<alice@example.org> NOTIFY=NEVERMORE", 501),
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
            &mut session(|_| ()),
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
            dialogue(&mut session(|_| ()), &[(&format!("EHLO {arg}"), lax)]);
            dialogue(
                &mut session(|s| s.strict_helo = true),
                &[(&format!("EHLO {arg}"), strict)],
            );
        }
    }

    #[test]
    fn recipient_limit() {
        let mut s = session(|_| ());
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
        let mut s = session(|s| {
            s.vrfy = true;
            s.expn = true;
        });
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
        let mut s = session(|_| ());
        let r = s.command(b"EHLO c.example").reply.unwrap();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "mx.example.org Hello c.example [192.0.2.9]");
        // What is offered is ehlo.rs's to say (and its tests'): here, that
        // the session offers it, with its limit, and nothing else.
        let offer = ehlo::Offer {
            max_message_size: 26_214_400,
            vrfy: false,
            expn: false,
            starttls: false,
            auth: false,
        };
        assert_eq!(lines[1..], offer.keywords());
        assert!(lines.contains(&"SIZE 26214400"));
        assert!(s.enhanced_codes());
        s.command(b"HELO c.example");
        assert!(!s.enhanced_codes());
    }

    fn open(s: &mut Session<Rcpt>, rcpts: usize) {
        dialogue(
            s,
            &[("EHLO c.example", 250), ("MAIL FROM:<a@b.example>", 250)],
        );
        for _ in 0..rcpts {
            dialogue(s, &[("RCPT TO:<alice@example.org>", 250)]);
        }
    }

    proptest::proptest! {
        /// Any bytes at all as a command line, in any state a few
        /// commands lead to, get a reply or an action, never a panic.
        #[test]
        fn any_command_line_gets_an_answer(
            before in proptest::collection::vec(
                proptest::sample::select(vec![
                    "EHLO c.example", "MAIL FROM:<a@b.example>", "RCPT TO:<alice@example.org>",
                    "RSET", "HELO x", "BDAT 0",
                ]),
                0..4,
            ),
            line in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let mut s = session(|_| ());
            for b in before {
                let r = run(&mut s, b);
                if let Action::ReceiveChunk { last, .. } = r.action {
                    let _ = s.chunk_received(last, &BodyReport::default());
                }
            }
            let r = s.command(&line);
            let r = match &r.action {
                Action::Lookup(path) => s.answer(lookup(path)),
                _ => r,
            };
            if matches!(r.action, Action::Continue | Action::Close) {
                proptest::prop_assert!(r.reply.is_some());
            }
        }
    }

    #[test]
    fn errors_are_counted_delayed_past_the_soft_limit_and_end_the_session_at_the_hard_one() {
        let mut s = session(|s| s.errors = ErrorLimits { soft: 2, hard: 4 });
        let step = |s: &mut Session<Rcpt>, line: &str| {
            let r = run(s, line);
            (r.reply.map(|r| r.code()), r.action, r.delay)
        };
        use Action::{Close, Continue};
        assert_eq!(step(&mut s, "EHLO c.example"), (Some(250), Continue, false));
        assert_eq!(step(&mut s, "BOGUS"), (Some(500), Continue, false));
        assert_eq!(
            step(&mut s, "MAIL FROM:<a@b.example>"),
            (Some(250), Continue, false)
        );
        assert_eq!(
            step(&mut s, "RCPT TO:<x@example.org>"),
            (Some(550), Continue, false)
        );
        // Past the soft limit each error reply is delayed; good replies
        // are not.
        assert_eq!(
            step(&mut s, "RCPT TO:<y@example.org>"),
            (Some(550), Continue, true)
        );
        assert_eq!(
            step(&mut s, "RCPT TO:<alice@example.org>"),
            (Some(250), Continue, false)
        );
        // A delivered message forgives what came before.
        assert_eq!(s.command(b"DATA").action, Action::ReceiveData);
        assert!(matches!(
            s.body_received(&BodyReport::default()),
            Verdict::Deliver(_)
        ));
        for _ in 0..2 {
            assert_eq!(step(&mut s, "NOPE"), (Some(500), Continue, false));
        }
        assert_eq!(step(&mut s, "NOPE"), (Some(500), Continue, true));
        assert_eq!(step(&mut s, "NOPE"), (Some(500), Continue, true));
        // At the hard limit: 421 and the end, whatever comes next.
        let r = s.command(b"NOOP");
        assert_eq!(r.action, Close);
        assert_eq!(
            r.reply.unwrap().to_string(),
            "421 4.7.0 mx.example.org Error: too many errors"
        );
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
                    spool_error: Some(DeliveryError::new(Failure::DiskFull, "full")),
                    ..BodyReport::default()
                },
                Some(452),
            ),
        ];
        for (report, code) in cases {
            let mut s = session(|_| ());
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
        let fail = |kind| Err(DeliveryError::new(kind, "why"));
        let cases = [
            (Ok(()), 250),
            (fail(Failure::Temporary), 451),
            (fail(Failure::DiskFull), 452),
            (fail(Failure::Permanent), 554),
        ];
        let s = session(|_| ());
        let env = Envelope {
            id: "ID".into(),
            reverse_path: String::new(),
            recipients: Vec::new(),
            rcpt_params: Vec::new(),
            ret: None,
            envid: None,
            size: 0,
            received: UnixTime::from_secs(0),
        };
        for (result, code) in cases {
            let result = result.as_ref().map(|_| ());
            assert_eq!(s.delivered(&env, result).code(), code, "{result:?}");
        }
    }

    #[test]
    fn bdat_flow() {
        let mut s = session(|_| ());
        // Without a transaction the chunk is read and dropped, then 503.
        dialogue(&mut s, &[("EHLO c.example", 250)]);
        refused_chunk(&mut s, "BDAT 10", 503);
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
        let mut s = session(|_| ());
        open(&mut s, 1);
        let t = s.trace_field();
        assert!(t.starts_with("Received: from c.example (unknown [192.0.2.9])\n\tby mx.example.org (mailroom) with ESMTP id "));
        assert!(t.contains("\n\tfor <alice@example.org>;\n\t"));
        let mut s = session(|_| ());
        open(&mut s, 2);
        assert!(!s.trace_field().contains("for <"));
        let mut s = session(|_| ());
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

    #[test]
    fn a_session_replays_exactly() {
        let mut s = session(|_| ());
        open(&mut s, 1);
        assert_eq!(
            s.trace_field(),
            "Received: from c.example (unknown [192.0.2.9])\n\tby mx.example.org (mailroom) with ESMTP id 06B02FEC0000000000\n\tfor <alice@example.org>;\n\tSun, 22 Nov 2026 14:40:00 +0000\n"
        );
        dialogue(&mut s, &[("RSET", 250), ("MAIL FROM:<a@b.example>", 250)]);
        dialogue(&mut s, &[("RCPT TO:<postmaster>", 250)]);
        assert!(s
            .trace_field()
            .contains(" id 06B02FEC0000000001\n\tfor <postmaster@mx.example.org>;"));
    }

    #[test]
    fn rcpt_waits_for_its_lookup_and_each_answer_has_its_reply() {
        let mut s = session(|_| ());
        dialogue(
            &mut s,
            &[("EHLO c.example", 250), ("MAIL FROM:<a@b.example>", 250)],
        );
        let answers = [
            (Lookup::UnknownUser, "550 5.1.1"),
            (Lookup::NotLocal, "550 5.7.1"),
            (Lookup::Loop("x -> x".into()), "550 5.4.6"),
            (Lookup::Remote("x@elsewhere.example".into()), "550 5.7.1"),
            (Lookup::Refused("why".into()), "550 5.7.1"),
            (Lookup::TempFail("why".into()), "451 4.3.0"),
        ];
        for (answer, code) in answers {
            let r = s.command(b"RCPT TO:<Who@example.org>");
            assert!(r.reply.is_none());
            assert_eq!(
                r.action,
                Action::Lookup(address::parse_forward_path("<Who@example.org>").unwrap().0)
            );
            let r = s.answer(answer).reply.unwrap();
            assert!(r.to_string().starts_with(code), "{r}");
            assert!(!r.to_string().contains("x -> x") && !r.to_string().contains("why"));
        }
        dialogue(&mut s, &[("DATA", 554)]);
        let r = s.command(b"RCPT TO:<Who@example.org>");
        assert!(matches!(r.action, Action::Lookup(_)));
        let who = Rcpt {
            address: "who@example.org".into(),
            full_name: None,
        };
        assert_eq!(
            s.answer(Lookup::Local(who.clone())).reply.unwrap().code(),
            250
        );
        dialogue(&mut s, &[("DATA", 354)]);
        match s.body_received(&BodyReport::default()) {
            Verdict::Deliver(env) => {
                assert_eq!(env.recipients, [who]);
                assert_eq!(env.reverse_path, "a@b.example");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_local_program_is_named_by_its_uid() {
        let mut s: Session<Rcpt> = Session::new(
            Arc::new(settings()),
            Box::leak(Box::new(Fixed(AtomicU32::new(0)))),
            Peer::Local {
                uid: 1000,
                user: "alice".into(),
            },
            TlsPolicy::default(),
        );
        assert_eq!(
            ehlo_lines(&mut s)[0],
            "mx.example.org Hello c.example (uid 1000)"
        );
        dialogue(
            &mut s,
            &[
                ("MAIL FROM:<alice@example.org>", 250),
                ("RCPT TO:<postmaster>", 250),
            ],
        );
        assert!(s.trace_field().starts_with(
            "Received: from c.example\n\tby mx.example.org (mailroom, from userid 1000) with ESMTP id "
        ));
    }
}
