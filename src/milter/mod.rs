//! The MTA's side of the milter protocol over its sockets: one
//! connection to each configured milter for each SMTP session (as
//! Postfix opens them), blocking, with a timeout on every wait (connect,
//! each command, the message), and the replies turned into what the
//! session does: go on, refuse with a reply, or accept and discard. The
//! packets themselves are `smtp::milter`'s, and the header edits
//! `smtp::edit`'s; this file only moves them.
//!
//! Milters form a chain, asked in order at each stage; the first that
//! refuses decides. At the end of a message each milter sees the message
//! as the ones before it left it. A milter that cannot be asked (down,
//! timed out, talking nonsense) meets its `default_action`: tempfail
//! (`451 4.7.1`, so nothing unfiltered gets in) or accept (as if it were
//! not configured). That is logged once per failure spell, and once more
//! when it answers again.

mod message;

pub use message::Eom;

use crate::config::{DefaultAction, Milter, MilterAddress};
use crate::smtp::milter::{actions, steps, Command, Decoder, Family, Options, Reply as Said};
use crate::smtp::reply::{self, Reply};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What we let a milter do to a message.
const ACTIONS: u32 = actions::ADD_HEADERS
    | actions::CHANGE_BODY
    | actions::ADD_RCPT
    | actions::ADD_RCPT_PAR
    | actions::DELETE_RCPT
    | actions::CHANGE_HEADERS
    | actions::QUARANTINE
    | actions::CHANGE_FROM;

/// The steps a milter may ask us to leave out, or not to wait for its
/// reply to.
const STEPS: u32 = steps::NO_CONNECT
    | steps::NO_HELO
    | steps::NO_MAIL
    | steps::NO_RCPT
    | steps::NO_BODY
    | steps::NO_HEADERS
    | steps::NO_EOH
    | steps::NO_UNKNOWN
    | steps::NO_DATA
    | steps::SKIP
    | steps::NO_REPLY_HEADER
    | steps::NO_REPLY_CONNECT
    | steps::NO_REPLY_HELO
    | steps::NO_REPLY_MAIL
    | steps::NO_REPLY_RCPT
    | steps::NO_REPLY_DATA
    | steps::NO_REPLY_UNKNOWN
    | steps::NO_REPLY_EOH
    | steps::NO_REPLY_BODY;

/// What the chain says of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Go,
    Refuse(Reply),
    /// Accept the message, and drop it.
    Discard,
}

impl Verdict {
    /// The reply of a refusal; `None` when the command goes on.
    pub fn refusal(self) -> Option<Reply> {
        match self {
            Verdict::Refuse(r) => Some(r),
            Verdict::Go | Verdict::Discard => None,
        }
    }
}

/// An address as a milter gave it (`<a@b>`, or bare), without its
/// brackets.
pub fn bare_address(text: &str) -> &str {
    text.trim().trim_start_matches('<').trim_end_matches('>')
}

/// Who the SMTP client is, for the connect event and its macros.
#[derive(Debug, Clone)]
pub struct Client {
    /// Our name: `j`, and `{if_name}`.
    pub hostname: String,
    pub addr: Option<SocketAddr>,
    /// Its confirmed reverse DNS name.
    pub name: Option<String>,
    /// The local user of a `sendmail` submission.
    pub user: Option<String>,
    /// Our address the client reached: `{if_addr}`.
    pub local: Option<SocketAddr>,
}

impl Client {
    /// `{client_name}`: the confirmed name, or the address in brackets
    /// (as Postfix gives "unknown" clients).
    fn name(&self) -> String {
        match (&self.name, &self.addr) {
            (Some(n), _) => n.clone(),
            (None, Some(a)) => format!("[{}]", a.ip().to_canonical()),
            (None, None) => "localhost".into(),
        }
    }
}

/// Where one milter stands in this session.
#[derive(Debug)]
enum State {
    /// Asked at each stage.
    Open,
    /// Accepted the whole connection: asked nothing more.
    AcceptedConnection,
    /// Accepted the message: asked nothing more until the next one.
    AcceptedMessage,
    /// Refused the connection: every MAIL gets this.
    Refused(Reply),
    /// Cannot be asked; its default action stands in for it.
    Broken,
}

/// One milter's connection.
struct Filter {
    conf: Milter,
    name: String,
    conn: Option<Conn>,
    state: State,
    /// The steps the milter left out ([`STEPS`] it set).
    steps: u32,
    /// What it may do to a message ([`ACTIONS`] it asked for).
    actions: u32,
}

/// The socket, the reply decoder and the packet being written.
struct Conn {
    stream: Stream,
    decoder: Decoder,
    out: Vec<u8>,
    /// The socket's timeouts as last set: set again only when a wait
    /// needs one more than [`TIMEOUT_SLACK`] away, so that a round trip
    /// costs a write and a read, not four more system calls.
    timeout: Option<Duration>,
}

/// How far a socket timeout may be from the wait it serves.
const TIMEOUT_SLACK: Duration = Duration::from_secs(1);

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The milters failing now, by name: their failure is logged once.
static FAILING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Logs a failure, loudly at the start of a spell only.
fn log_failure(name: &str, why: &str, action: DefaultAction) {
    let mut failing = FAILING.lock().unwrap_or_else(|e| e.into_inner());
    let then = match action {
        DefaultAction::Tempfail => "mail is refused with 451 4.7.1 until it answers",
        DefaultAction::Accept => "mail goes on without it",
    };
    if failing.iter().any(|n| n == name) {
        log::debug!("milter {name}: {why}");
    } else {
        // Bounded by the milters configured: a name is dropped again
        // when its milter answers.
        failing.push(name.to_string());
        log::warn!("milter {name}: {why}; {then}");
    }
}

/// Logs that a milter answers again, if it had failed.
fn log_recovery(name: &str) {
    let mut failing = FAILING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = failing.iter().position(|n| n == name) {
        failing.swap_remove(i);
        log::info!("milter {name}: answers again");
    }
}

impl Conn {
    fn open(conf: &Milter) -> io::Result<Conn> {
        let stream = match &conf.address {
            MilterAddress::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            MilterAddress::Inet { host, port } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                let mut found = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, conf.connect_timeout) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                Stream::Tcp(found.ok_or(last)?)
            }
        };
        Ok(Conn {
            stream,
            decoder: Decoder::default(),
            out: Vec::with_capacity(1024),
            timeout: None,
        })
    }

    /// Makes each wait on the socket end within about `t`.
    fn wait_at_most(&mut self, t: Duration) -> io::Result<()> {
        if self.timeout.is_some_and(|c| c.abs_diff(t) <= TIMEOUT_SLACK) {
            return Ok(());
        }
        // A zero timeout means none at all to the socket.
        let t = t.max(Duration::from_millis(1));
        self.stream.set_timeout(t)?;
        self.timeout = Some(t);
        Ok(())
    }

    /// Sends the packets encoded in `out`.
    fn send(&mut self, timeout: Duration) -> io::Result<()> {
        self.wait_at_most(timeout)?;
        let r = self.stream.write_all(&self.out);
        self.out.clear();
        r
    }

    /// The next reply but progress reports, each of which restarts the
    /// wait.
    fn reply(&mut self, timeout: Duration) -> Result<Said, String> {
        let mut buf = [0u8; 8192];
        let mut deadline = Instant::now() + timeout;
        loop {
            match self.decoder.reply() {
                Some(Ok(Said::Progress)) => {
                    deadline = Instant::now() + timeout;
                    continue;
                }
                Some(Ok(r)) => return Ok(r),
                Some(Err(e)) => return Err(format!("sent {e}")),
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            self.wait_at_most(left)
                .map_err(|e| format!("cannot set a timeout: {e}"))?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("closed the connection".into()),
                Ok(n) => self.decoder.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("timed out".into())
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }
}

/// A stage of the envelope: its command code, the step bits that leave
/// it out or its reply, and whether a refusal there stands for the whole
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Header,
    EndOfHeaders,
    Body,
}

impl Stage {
    fn skip(self) -> (u32, u32) {
        match self {
            Stage::Connect => (steps::NO_CONNECT, steps::NO_REPLY_CONNECT),
            Stage::Helo => (steps::NO_HELO, steps::NO_REPLY_HELO),
            Stage::Mail => (steps::NO_MAIL, steps::NO_REPLY_MAIL),
            Stage::Rcpt => (steps::NO_RCPT, steps::NO_REPLY_RCPT),
            Stage::Data => (steps::NO_DATA, steps::NO_REPLY_DATA),
            Stage::Header => (steps::NO_HEADERS, steps::NO_REPLY_HEADER),
            Stage::EndOfHeaders => (steps::NO_EOH, steps::NO_REPLY_EOH),
            Stage::Body => (steps::NO_BODY, steps::NO_REPLY_BODY),
        }
    }

    /// Where a milter's accept lasts to: the connection, or the message.
    fn accepts_connection(self) -> bool {
        matches!(self, Stage::Connect | Stage::Helo)
    }
}

/// What one milter said of one event.
enum Heard {
    Go,
    /// Left out, or no reply waited for.
    Quiet,
    Refuse(Reply),
    Discard,
    /// Skip the rest of the body.
    Skip,
}

impl Filter {
    fn new(conf: &Milter) -> Filter {
        Filter {
            name: conf.name(),
            conf: conf.clone(),
            conn: None,
            state: State::Broken,
            steps: 0,
            actions: 0,
        }
    }

    /// Connects and negotiates.
    fn open(&mut self) {
        match self.negotiate() {
            Ok(()) => {
                log_recovery(&self.name);
                self.state = State::Open;
            }
            Err(why) => {
                self.broken(&why);
            }
        }
    }

    fn negotiate(&mut self) -> Result<(), String> {
        let mut conn = Conn::open(&self.conf).map_err(|e| format!("cannot connect: {e}"))?;
        Command::Negotiate(Options {
            version: crate::smtp::milter::VERSION,
            actions: ACTIONS,
            steps: STEPS,
        })
        .encode(&mut conn.out);
        conn.send(self.conf.command_timeout)
            .map_err(|e| format!("cannot send: {e}"))?;
        match conn.reply(self.conf.command_timeout)? {
            Said::Negotiate(o) => {
                if o.version < 2 {
                    return Err(format!("speaks protocol version {}", o.version));
                }
                let wanted = o.actions & !ACTIONS;
                if wanted != 0 {
                    log::debug!(
                        "milter {}: asks for actions {wanted:#x}, which are not offered",
                        self.name
                    );
                }
                if o.steps & !STEPS != 0 {
                    return Err(format!(
                        "asks for protocol steps {:#x}, which are not offered",
                        o.steps & !STEPS
                    ));
                }
                self.steps = o.steps;
                self.actions = o.actions & ACTIONS;
                self.conn = Some(conn);
                Ok(())
            }
            other => Err(format!("answered the negotiation with {other:?}")),
        }
    }

    /// The milter cannot be asked; what its default action makes of it.
    fn broken(&mut self, why: &str) -> Heard {
        log_failure(&self.name, why, self.conf.default_action);
        self.conn = None;
        self.state = State::Broken;
        self.stand_in()
    }

    /// What a broken milter's default action says.
    fn stand_in(&self) -> Heard {
        match self.conf.default_action {
            DefaultAction::Tempfail => Heard::Refuse(reply::filter_tempfailed()),
            DefaultAction::Accept => Heard::Go,
        }
    }

    /// Whether it is asked about this message.
    fn asked(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// What it says of an event without being asked: as it said before,
    /// or as its default action says; `None` when it is to be asked.
    fn unasked(&self) -> Option<Heard> {
        match &self.state {
            State::Open => None,
            State::Refused(r) => Some(Heard::Refuse(r.clone())),
            State::Broken => Some(self.stand_in()),
            State::AcceptedConnection | State::AcceptedMessage => Some(Heard::Go),
        }
    }

    /// Sends an event (with its macros) and, unless the milter said not
    /// to wait, reads what it says.
    fn event(&mut self, stage: Stage, macros: &[(&str, &str)], cmd: Command<'_>) -> Heard {
        let (left_out, no_reply) = stage.skip();
        let timeout = match stage {
            Stage::Body => self.conf.message_timeout,
            _ => self.conf.command_timeout,
        };
        let conn = self
            .conn
            .as_mut()
            .expect("an open milter has its connection");
        // The macros go even for a stage left out (libmilter keeps them
        // for the rest of the session: `j` is asked for at the end of the
        // message); they wait to go with the next packet sent, which
        // costs no write of their own.
        if !macros.is_empty() {
            Command::Macros {
                stage: cmd.code(),
                pairs: macros,
            }
            .encode(&mut conn.out);
        }
        if self.steps & left_out != 0 {
            return Heard::Quiet;
        }
        cmd.encode(&mut conn.out);
        if let Err(e) = conn.send(timeout) {
            return self.broken(&format!("cannot send: {e}"));
        }
        if self.steps & no_reply != 0 {
            return Heard::Quiet;
        }
        match conn.reply(timeout) {
            Ok(said) => self.heard(stage, said),
            Err(why) => self.broken(&why),
        }
    }

    /// What a reply to an event of `stage` means, and what it does to
    /// the milter's state.
    fn heard(&mut self, stage: Stage, said: Said) -> Heard {
        match said {
            Said::Continue => Heard::Go,
            Said::Accept => {
                self.state = if stage.accepts_connection() {
                    State::AcceptedConnection
                } else {
                    State::AcceptedMessage
                };
                Heard::Go
            }
            Said::Reject => self.refused(stage, reply::filter_rejected()),
            Said::Tempfail => self.refused(stage, reply::filter_tempfailed()),
            Said::ReplyCode(r) => self.refused(stage, r.to_reply()),
            Said::Discard => Heard::Discard,
            Said::Skip if stage == Stage::Body => Heard::Skip,
            Said::Skip => Heard::Go,
            Said::Shutdown | Said::ConnectionFailure => {
                self.broken("closed the session");
                Heard::Refuse(reply::filter_tempfailed())
            }
            other => self.broken(&format!("answered with {other:?} out of place")),
        }
    }

    fn refused(&mut self, stage: Stage, r: Reply) -> Heard {
        if stage == Stage::Connect {
            self.state = State::Refused(r.clone());
        }
        Heard::Refuse(r)
    }

    /// Tells the milter the message is over (no reply is sent).
    fn abort(&mut self) {
        if matches!(self.state, State::AcceptedMessage) {
            self.state = State::Open;
        }
        if let (State::Open, Some(conn)) = (&self.state, self.conn.as_mut()) {
            Command::Abort.encode(&mut conn.out);
            if let Err(e) = conn.send(self.conf.command_timeout) {
                self.broken(&format!("cannot send: {e}"));
            }
        }
    }

    fn quit(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            Command::Quit.encode(&mut conn.out);
            let _ = conn.send(self.conf.command_timeout);
        }
    }
}

/// The milters of one SMTP session.
pub struct Chain {
    filters: Vec<Filter>,
    client: Client,
    /// A message is under way: MAIL went to the milters.
    in_message: bool,
    /// A milter said to discard the message under way.
    discard: bool,
    /// The queue id of the message under way.
    id: String,
    /// The login the client authenticated as.
    login: Option<String>,
}

impl Chain {
    /// Connects to each milter and tells it who the client is.
    pub fn open(list: &[Milter], client: Client) -> (Chain, Verdict) {
        let mut chain = Chain {
            filters: list.iter().map(Filter::new).collect(),
            client,
            in_message: false,
            discard: false,
            id: String::new(),
            login: None,
        };
        for f in &mut chain.filters {
            f.open();
        }
        let verdict = chain.connect();
        (chain, verdict)
    }

    fn connect(&mut self) -> Verdict {
        let mut c = self.client.clone();
        // Mail from a local user comes from this box: the milters hear
        // localhost at 127.0.0.1, as Postfix tells its non_smtpd_milters,
        // so that OpenDKIM (whose InternalHosts is 127.0.0.1 by default)
        // signs it.
        if c.user.is_some() && c.addr.is_none() {
            c.addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            c.name = Some("localhost".into());
        }
        let name = c.name();
        let addr = c.addr.map(|a| a.ip().to_canonical().to_string());
        let port = c.addr.map_or(0, |a| a.port());
        let family = match (&c.addr, &addr) {
            (Some(a), Some(text)) if a.ip().to_canonical().is_ipv4() => Family::Inet {
                port,
                address: text,
            },
            (Some(_), Some(text)) => Family::Inet6 {
                port,
                address: text,
            },
            _ => Family::Unknown,
        };
        let local = c.local.map(|l| l.ip().to_canonical().to_string());
        let client_port = port.to_string();
        let underscore = match (&c.user, &addr) {
            (Some(u), _) => format!("{u}@localhost"),
            (None, Some(a)) => format!("{name} [{a}]"),
            (None, None) => name.clone(),
        };
        let mut macros = vec![
            ("j", c.hostname.as_str()),
            ("{daemon_name}", "mailroom"),
            ("{if_name}", c.hostname.as_str()),
            ("{client_name}", name.as_str()),
            ("_", underscore.as_str()),
        ];
        if let Some(a) = &addr {
            macros.push(("{client_addr}", a));
            macros.push(("{client_port}", &client_port));
        }
        if let Some(l) = &local {
            macros.push(("{if_addr}", l));
        }
        self.each(
            Stage::Connect,
            &macros,
            &Command::Connect {
                hostname: &name,
                family,
            },
        )
    }

    /// Asks each open milter in turn; the first that refuses decides.
    fn each(&mut self, stage: Stage, macros: &[(&str, &str)], cmd: &Command<'_>) -> Verdict {
        for f in &mut self.filters {
            let heard = match f.unasked() {
                None => f.event(stage, macros, cmd.clone()),
                // A refused connection, or a milter that could not be
                // asked, is heard at MAIL: a greeting always stands.
                Some(Heard::Refuse(_)) if stage == Stage::Helo => Heard::Go,
                Some(heard) => heard,
            };
            match heard {
                Heard::Go | Heard::Quiet | Heard::Skip => {}
                Heard::Refuse(r) => return Verdict::Refuse(r),
                Heard::Discard => {
                    self.discard = true;
                    return Verdict::Discard;
                }
            }
        }
        Verdict::Go
    }

    /// The client authenticated (`{auth_authen}` from now on).
    pub fn logged_in(&mut self, login: &str) {
        self.login = Some(login.to_string());
    }

    /// A greeting; a new one (RFC 5321 4.1.4) ends the message under
    /// way.
    pub fn helo(&mut self, name: &str) -> Verdict {
        self.abort();
        self.each(Stage::Helo, &[], &Command::Helo(name))
    }

    /// A MAIL: the start of a message. `args`: the reverse path in angle
    /// brackets, then the ESMTP parameters.
    pub fn mail(&mut self, id: &str, args: &[String]) -> Verdict {
        self.end_message();
        self.id = id.to_string();
        self.in_message = true;
        let sender = args.first().map_or("", |a| bare_address(a));
        let mut macros = vec![("i", id), ("{mail_addr}", sender)];
        let login = self.login.clone();
        if let Some(login) = &login {
            macros.push(("{auth_authen}", login));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = self.each(Stage::Mail, &macros, &Command::Mail(&args));
        if matches!(v, Verdict::Refuse(_)) {
            self.abort();
        }
        v
    }

    /// A RCPT; `args` as for MAIL.
    pub fn rcpt(&mut self, args: &[String]) -> Verdict {
        if self.discard {
            return Verdict::Go;
        }
        let address = args.first().map_or("", |a| bare_address(a));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match self.each(
            Stage::Rcpt,
            &[("{rcpt_addr}", address)],
            &Command::Rcpt(&args),
        ) {
            // A discard is for the whole message: this recipient stands.
            Verdict::Discard => Verdict::Go,
            v => v,
        }
    }

    /// Whether a message is under way at the milters.
    pub fn in_message(&self) -> bool {
        self.in_message
    }

    /// The message under way ended without its end (RSET, a refusal,
    /// the client gone): the milters are told.
    pub fn abort(&mut self) {
        if self.in_message {
            for f in &mut self.filters {
                f.abort();
            }
        }
        self.end_message();
    }

    /// Forgets the message under way.
    fn end_message(&mut self) {
        self.in_message = false;
        self.discard = false;
        for f in &mut self.filters {
            if matches!(f.state, State::AcceptedMessage) {
                f.state = State::Open;
            }
        }
    }

    /// Says goodbye to every milter.
    pub fn quit(mut self) {
        self.abort();
        for f in &mut self.filters {
            f.quit();
        }
    }
}
