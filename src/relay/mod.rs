//! Mail for other hosts leaves through the smarthost of `[relay]`: a
//! blocking SMTP client over the pure client core (`smtp::client`), with
//! the client timeouts of RFC 5321 4.5.3.2 on every wait, so that a relay
//! that hangs never stalls the queue for good.
//!
//! Every address of the relay host is tried in turn, IPv6 and IPv4. TLS
//! is what the configuration says and nothing less: with STARTTLS required
//! a relay that does not offer it is a temporary failure, never a reason
//! to send in the clear, and the certificate is verified against the
//! system's roots or `ca_file`. A password is sent only over TLS, only
//! with a mechanism the relay offers. Anything wrong with the connection
//! (DNS, connect, greeting, TLS, AUTH) is temporary: mail waits, it never
//! bounces for it. What the relay says of each recipient is kept: 4xx
//! for one recipient defers that one only, 5xx fails it at once.
//!
//! One connection carries several messages (RSET between them), so a
//! provider that limits logins is not hit once per message.

use crate::config::{Config, RelayTls};
use crate::delivery::Body;
use crate::net::tls::{self, TlsStream};
use crate::net::{Socket, Transport};
use crate::smtp::client::{self, DataWriter, Dsn, Extensions, Reply, ReplyReader};
use crate::smtp::line::{Frame, LineFramer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A message up to this size is read into memory once, for its scan and
/// its sending; a larger one is read twice, in pieces.
const WHOLE: u64 = 256 * 1024;
/// The pieces a large message is read and sent in.
const CHUNK: usize = 64 * 1024;

/// The relay of a configuration, ready to connect.
pub struct Relay {
    settings: crate::config::Relay,
    helo: String,
    tls: Arc<ClientConfig>,
    password: Option<String>,
}

/// Why a connection or a whole message failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub permanent: bool,
    /// RFC 3463.
    pub status: String,
    pub reason: String,
    /// The connection cannot carry another message (it broke, timed out
    /// or never got going); otherwise only this message failed.
    pub broken: bool,
}

impl Failed {
    /// The connection's failure: temporary, and the end of it.
    fn temporary(status: &str, reason: String) -> Failed {
        Failed {
            permanent: false,
            status: status.into(),
            reason,
            broken: true,
        }
    }

    /// This message cannot go to the relay, ever.
    fn permanent(status: &str, reason: String) -> Failed {
        Failed {
            permanent: true,
            status: status.into(),
            reason,
            broken: false,
        }
    }

    /// The relay's own reply about this message, by its class. A demand
    /// to log in (530, 535) is about the configuration, not the message:
    /// it defers, never bounces.
    fn of(reply: &Reply, during: &str) -> Failed {
        let login = matches!(reply.code, 530 | 535)
            || reply.status().is_some_and(|s| s == "5.7.0" || s == "5.7.8");
        Failed {
            permanent: reply.is_permanent() && !login,
            status: if login {
                "4.7.0".into()
            } else {
                reply.status_or_class()
            },
            reason: format!("the relay said, after {during}: {reply}"),
            broken: false,
        }
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The relay took it: its reply, and whether it took the DSN request
    /// with it (then reporting is its job).
    Sent {
        reply: String,
        dsn: bool,
    },
    Failed(Failed),
}

/// One recipient of a message to relay.
pub struct Recipient<'a> {
    pub address: &'a str,
    /// DSN NOTIFY, lower case (`success,failure`), if given.
    pub notify: Option<String>,
    pub orcpt: Option<&'a str>,
}

/// A message to relay.
pub struct Outgoing<'a> {
    pub id: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [Recipient<'a>],
    pub dsn: Dsn<'a>,
    /// Sent first: a header section rewritten here, or nothing.
    pub head: &'a [u8],
    /// The stored message (LF line ends), or what follows `head` of it.
    pub body: Body<'a>,
}

/// The message's header section with a `From:` that names a local
/// address alone rewritten to `to` (a display name is kept), for relays
/// that take only their account's own address; `None` when there is
/// nothing to rewrite.
pub fn rewrite_from(header: &[u8], to: &str, local: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    let field = crate::smtp::header::fields(header).find(|f| f.is("From"))?;
    let list = crate::smtp::header::address_list(field.value).ok()?;
    let [address] = list.as_slice() else {
        return None;
    };
    if !local(address) {
        return None;
    }
    let value = String::from_utf8_lossy(&crate::smtp::header::unfold(field.value)).into_owned();
    let new_value = match (value.rfind('<'), value.ends_with('>')) {
        (Some(open), true) => format!("{}<{to}>", &value[..open]),
        _ => to.to_string(),
    };
    let name = String::from_utf8_lossy(field.name);
    let mut out = Vec::with_capacity(header.len() + to.len());
    out.extend_from_slice(&header[..field.range.start]);
    out.extend_from_slice(format!("{name}: {new_value}\n").as_bytes());
    out.extend_from_slice(&header[field.range.end..]);
    Some(out)
}

impl Relay {
    /// The relay of `config`, if it has one: its password read (from a
    /// file nobody else may read) and its certificate roots loaded.
    pub fn new(config: &Config) -> Result<Option<Relay>, String> {
        let Some(settings) = &config.relay else {
            return Ok(None);
        };
        let password = match &settings.auth {
            Some((_, file)) => Some(read_password(file)?),
            None => None,
        };
        let roots = roots(settings.ca_file.as_deref())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("relay: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Relay {
            settings: settings.clone(),
            helo: config.hostname.clone(),
            tls: Arc::new(tls),
            password,
        }))
    }

    /// The sender to give for `sender`: `rewrite_sender` for local users'
    /// mail, if set.
    pub fn sender_for<'a>(&'a self, sender: &'a str, local: impl Fn(&str) -> bool) -> &'a str {
        match &self.settings.rewrite_sender {
            Some(rewritten) if !sender.is_empty() && local(sender) => rewritten,
            _ => sender,
        }
    }

    /// Connects, greets, secures and logs in.
    pub fn open(self: &Arc<Relay>) -> Result<Session, Failed> {
        let s = &self.settings;
        let addrs: Vec<_> = (s.host.as_str(), s.port)
            .to_socket_addrs()
            .map_err(|e| {
                Failed::temporary("4.4.3", format!("looking up the relay {}: {e}", s.host))
            })?
            .collect();
        let mut errors = Vec::new();
        // The status of the last address's failure stands for all.
        let mut status = "4.4.1".to_string();
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, s.connect_timeout) {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    match Session::start(self.clone(), Socket::new(tcp)) {
                        Ok(session) => return Ok(session),
                        Err(f) => {
                            log::info!("relay: {addr}: {}; trying the next address", f.reason);
                            errors.push(format!("{addr}: {}", f.reason));
                            status = f.status;
                        }
                    }
                }
                Err(e) => {
                    log::info!("relay: connect to {addr}: {e}; trying the next address");
                    errors.push(format!("connect to {addr}: {e}"));
                    status = "4.4.1".into();
                }
            }
        }
        if errors.is_empty() {
            errors.push(format!("{} has no address", s.host));
        }
        let named = format!("{}:{}", s.host, s.port);
        let reason = if errors.len() == 1 && errors[0].contains(&named) {
            format!("relay {}", errors[0])
        } else {
            format!("relay {named}: {}", errors.join("; "))
        };
        Err(Failed::temporary(&status, reason))
    }
}

fn read_password(file: &std::path::Path) -> Result<String, String> {
    let meta = std::fs::metadata(file)
        .map_err(|e| format!("relay.password_file: {}: {e}", file.display()))?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(format!(
            "relay.password_file: {} may be read by others: chmod o-rwx it",
            file.display()
        ));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("relay.password_file: {}: {e}", file.display()))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(format!(
            "relay.password_file: {}: the first line is empty",
            file.display()
        ));
    }
    Ok(password)
}

fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("relay.ca_file: {}: {e}", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "relay.ca_file: {}: no usable certificate",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "relay: no certificate roots found on this system (install ca-certificates, or set relay.ca_file)"
                        .into(),
                );
            }
        }
    }
    Ok(store)
}

/// The relay's byte stream: as connected, or TLS over it.
enum Stream {
    Plain(Socket),
    Tls(Box<TlsStream<Socket>>),
    /// Only while one is swapped for the other.
    Swapping,
}

impl Stream {
    fn transport(&mut self) -> &mut dyn Transport {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut **t,
            Stream::Swapping => unreachable!("a failed swap ends the session"),
        }
    }
}

/// An open connection to the relay, ready for a message.
pub struct Session {
    relay: Arc<Relay>,
    stream: Stream,
    buf: Vec<u8>,
    framer: LineFramer,
    ext: Extensions,
    /// Messages sent on it so far.
    sent: usize,
}

impl Session {
    fn start(relay: Arc<Relay>, sock: Socket) -> Result<Session, Failed> {
        let s = &relay.settings;
        let command = s.command_timeout;
        let stream = if s.tls == RelayTls::Implicit {
            Stream::Tls(Box::new(handshake(&relay, sock)?))
        } else {
            Stream::Plain(sock)
        };
        let mut session = Session {
            stream,
            buf: Vec::with_capacity(4096),
            framer: LineFramer::new(client::MAX_REPLY_LINE + 2),
            ext: Extensions::default(),
            sent: 0,
            relay: relay.clone(),
        };
        let greeting = session.reply(command, "connecting")?;
        if greeting.code != 220 {
            return Err(Failed::temporary("4.4.0", format!("greeting: {greeting}")));
        }
        session.hello()?;
        if s.tls == RelayTls::StartTls {
            if !session.ext.starttls {
                return Err(Failed::temporary(
                    "4.7.0",
                    "the relay does not offer STARTTLS, and mail is not sent to it in the clear"
                        .into(),
                ));
            }
            let r = session.command("STARTTLS\r\n", command, "STARTTLS")?;
            if r.code != 220 {
                return Err(Failed::temporary("4.7.0", format!("STARTTLS: {r}")));
            }
            let Stream::Plain(sock) = std::mem::replace(&mut session.stream, Stream::Swapping)
            else {
                unreachable!("STARTTLS is only sent in the clear")
            };
            // Anything the relay sent before the handshake is an attack on
            // it (RFC 3207 6; CVE-2011-0411): never read as a reply.
            session.buf.clear();
            session.stream = Stream::Tls(Box::new(handshake(&relay, sock)?));
            session.hello()?;
        }
        if let (Some((user, _)), Some(password)) = (&s.auth, &relay.password) {
            session.login(user, password)?;
        }
        Ok(session)
    }

    fn hello(&mut self) -> Result<(), Failed> {
        let t = self.relay.settings.command_timeout;
        let ehlo = format!("EHLO {}\r\n", self.relay.helo);
        let r = self.command(&ehlo, t, "EHLO")?;
        if r.code != 250 {
            return Err(Failed::temporary("4.4.0", format!("EHLO: {r}")));
        }
        self.ext = Extensions::of(&r);
        Ok(())
    }

    fn login(&mut self, user: &str, password: &str) -> Result<(), Failed> {
        let t = self.relay.settings.command_timeout;
        let has = |m: &str| self.ext.auth.iter().any(|a| a == m);
        let r = if has("PLAIN") {
            self.command(&client::auth_plain(user, password), t, "AUTH PLAIN")?
        } else if has("LOGIN") {
            let mut r = self.command("AUTH LOGIN\r\n", t, "AUTH LOGIN")?;
            for answer in [user, password] {
                if r.code != 334 {
                    break;
                }
                r = self.command(&client::auth_line(answer), t, "AUTH LOGIN")?;
            }
            r
        } else {
            return Err(Failed::temporary(
                "4.7.0",
                format!(
                    "the relay offers no AUTH mechanism spoken here (PLAIN, LOGIN): {:?}",
                    self.ext.auth
                ),
            ));
        };
        if r.code != 235 {
            log::error!("relay: login as {user} refused: {r}");
            return Err(Failed::temporary("4.7.0", format!("login as {user}: {r}")));
        }
        Ok(())
    }

    /// Sends one message; what became of each recipient, or why the
    /// message as a whole did not go (then the session is not to be used
    /// again if the failure was the connection's).
    pub fn send(&mut self, msg: &Outgoing<'_>) -> Result<Vec<Outcome>, Failed> {
        let s = &self.relay.settings;
        let (command, data, dot) = (s.command_timeout, s.data_timeout, s.dot_timeout);
        // A message up to WHOLE is read once, for the scan and the
        // sending both.
        let whole = if msg.body.len() <= WHOLE {
            Some(msg.body.read_all().map_err(read_failed)?)
        } else {
            None
        };
        let Scan {
            eight_bit,
            utf8,
            wire,
        } = scan(msg, whole.as_deref())?;
        if let Some(max) = self.ext.size.filter(|&m| m > 0 && wire > m) {
            return Err(Failed::permanent(
                "5.3.4",
                format!("the message is {wire} octets, more than the relay takes ({max})"),
            ));
        }
        if utf8 && !self.ext.smtputf8 {
            return Err(Failed::permanent(
                "5.6.7",
                "the message needs SMTPUTF8 (non-ASCII addresses or header), which the relay does not offer".into(),
            ));
        }
        if eight_bit && !self.ext.eight_bit {
            return Err(Failed::permanent(
                "5.6.3",
                "the message has 8-bit content, and the relay does not offer 8BITMIME".into(),
            ));
        }
        let reset = self.sent > 0;
        self.sent += 1;
        let mail = client::mail_from(msg.sender, wire, &self.ext, eight_bit, utf8, &msg.dsn);
        let rcpts: Vec<String> = msg
            .recipients
            .iter()
            .map(|r| client::rcpt_to(r.address, &self.ext, r.notify.as_deref(), r.orcpt))
            .collect();
        let data_wait = command.min(Duration::from_secs(120));
        // With PIPELINING, RSET, MAIL, the RCPTs and DATA go in one write
        // (RFC 2920: DATA last), and their replies are read in order.
        let (replies, data_reply) = if self.ext.pipelining {
            let mut group = String::with_capacity(64 * (rcpts.len() + 3));
            if reset {
                group.push_str("RSET\r\n");
            }
            group.push_str(&mail);
            rcpts.iter().for_each(|r| group.push_str(r));
            group.push_str("DATA\r\n");
            self.write(&group, command)?;
            if reset {
                let r = self.reply(command, "RSET")?;
                if r.code != 250 {
                    return Err(Failed::temporary("4.4.0", format!("RSET: {r}")));
                }
            }
            let mut replies = Vec::with_capacity(rcpts.len() + 1);
            for _ in 0..=rcpts.len() {
                replies.push(self.reply(command, "MAIL/RCPT")?);
            }
            let data = self.reply(data_wait, "DATA")?;
            (replies, Some(data))
        } else {
            if reset {
                let r = self.command("RSET\r\n", command, "RSET")?;
                if r.code != 250 {
                    return Err(Failed::temporary("4.4.0", format!("RSET: {r}")));
                }
            }
            let mut replies = vec![self.command(&mail, command, "MAIL FROM")?];
            if replies[0].is_positive() {
                for r in &rcpts {
                    replies.push(self.command(r, command, "RCPT TO")?);
                }
            }
            (replies, None)
        };
        let mut outcomes: Vec<Outcome> = replies[1..]
            .iter()
            .map(|r| {
                if r.is_positive() {
                    Outcome::Sent {
                        reply: String::new(),
                        dsn: self.ext.dsn,
                    }
                } else {
                    Outcome::Failed(Failed::of(r, "RCPT TO"))
                }
            })
            .collect();
        let nobody = !replies[0].is_positive()
            || !outcomes.iter().any(|o| matches!(o, Outcome::Sent { .. }));
        if nobody {
            // A pipelined DATA a relay took anyway gets an empty message,
            // which it must refuse: then the connection is in step again.
            if data_reply.as_ref().is_some_and(|r| r.code == 354) {
                self.write(".\r\n", data)?;
                self.reply(dot, "an empty message")?;
            }
            if !replies[0].is_positive() {
                return Err(Failed::of(&replies[0], "MAIL FROM"));
            }
            return Ok(outcomes);
        }
        let r = match data_reply {
            Some(r) => r,
            None => self.command("DATA\r\n", data_wait, "DATA")?,
        };
        if r.code != 354 {
            return Err(Failed::of(&r, "DATA"));
        }
        self.body(msg.head, whole.as_deref(), msg.body, data)?;
        let r = self.reply(dot, "the message")?;
        if !r.is_positive() {
            return Err(Failed::of(&r, "the message"));
        }
        for o in &mut outcomes {
            if let Outcome::Sent { reply, .. } = o {
                *reply = r.to_string();
            }
        }
        log::info!("{}: relayed to {}: {r}", msg.id, self.relay.settings.host);
        Ok(outcomes)
    }

    /// Ends the session politely, as far as the relay still listens.
    pub fn close(mut self) {
        let t = Duration::from_secs(10).min(self.relay.settings.command_timeout);
        let _ = self.command("QUIT\r\n", t, "QUIT");
        if let Stream::Tls(t) = &mut self.stream {
            t.close();
        }
    }

    /// Sends the message and the final dot: in one write when it was read
    /// whole (`whole`), else in writes of about [`CHUNK`] octets.
    fn body(
        &mut self,
        head: &[u8],
        whole: Option<&[u8]>,
        body: Body<'_>,
        timeout: Duration,
    ) -> Result<(), Failed> {
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
        let mut writer = DataWriter::default();
        writer.write(head, &mut out);
        if let Some(whole) = whole {
            writer.write(whole, &mut out);
        } else {
            let mut reader = body.reader();
            let mut chunk = vec![0u8; CHUNK];
            loop {
                let n = reader.read(&mut chunk).map_err(read_failed)?;
                if n == 0 {
                    break;
                }
                writer.write(&chunk[..n], &mut out);
                if out.len() >= CHUNK {
                    self.write_bytes(&out, timeout)?;
                    out.clear();
                }
            }
        }
        writer.finish(&mut out);
        self.write_bytes(&out, timeout)
    }

    fn command(&mut self, line: &str, timeout: Duration, what: &str) -> Result<Reply, Failed> {
        self.write(line, timeout)?;
        self.reply(timeout, what)
    }

    fn write(&mut self, text: &str, timeout: Duration) -> Result<(), Failed> {
        self.write_bytes(text.as_bytes(), timeout)
    }

    fn write_bytes(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), Failed> {
        let t = self.stream.transport();
        let sent = t
            .set_write_timeout(timeout)
            .and_then(|()| t.write_all(bytes))
            .and_then(|()| t.flush());
        sent.map_err(|e| io_failed("sending to the relay", &e))
    }

    /// Reads one reply, all of it within `timeout`.
    fn reply(&mut self, timeout: Duration, what: &str) -> Result<Reply, Failed> {
        let deadline = Instant::now() + timeout;
        let mut reader = ReplyReader::default();
        loop {
            match self.framer.ingest(&self.buf) {
                Frame::Line { line, used } => {
                    let got = reader.line(&self.buf[line]);
                    self.buf.drain(..used);
                    match got {
                        Ok(Some(reply)) => return Ok(reply),
                        Ok(None) => continue,
                        Err(bad) => {
                            return Err(Failed::temporary("4.5.0", format!("{what}: {bad}")))
                        }
                    }
                }
                Frame::TooLong { .. } => {
                    return Err(Failed::temporary(
                        "4.5.0",
                        format!("{what}: a reply line too long"),
                    ))
                }
                Frame::NeedMore { used } => {
                    self.buf.drain(..used);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failed::temporary(
                    "4.4.2",
                    format!(
                        "no reply from the relay after {what} within {} s",
                        timeout.as_secs()
                    ),
                ));
            }
            let t = self.stream.transport();
            let mut chunk = [0u8; 4096];
            let n = t
                .set_read_timeout(left)
                .and_then(|()| t.read(&mut chunk))
                .map_err(|e| {
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        Failed::temporary(
                            "4.4.2",
                            format!(
                                "no reply from the relay after {what} within {} s",
                                timeout.as_secs()
                            ),
                        )
                    } else {
                        io_failed(&format!("reading the reply after {what}"), &e)
                    }
                })?;
            if n == 0 {
                return Err(Failed::temporary(
                    "4.4.2",
                    format!("the relay closed the connection after {what}"),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn io_failed(during: &str, e: &io::Error) -> Failed {
    let status = if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        "4.4.2"
    } else {
        "4.4.0"
    };
    Failed::temporary(status, format!("{during}: {e}"))
}

fn handshake(relay: &Relay, sock: Socket) -> Result<TlsStream<Socket>, Failed> {
    let host = &relay.settings.host;
    let name = ServerName::try_from(host.clone())
        .map_err(|e| Failed::temporary("4.7.0", format!("TLS name {host}: {e}")))?;
    let deadline = Instant::now() + relay.settings.command_timeout;
    tls::connect(sock, relay.tls.clone(), name, deadline)
        .map_err(|e| Failed::temporary("4.7.0", format!("TLS with {host}: {e}")))
}

/// What a message needs of the relay.
struct Scan {
    /// It has 8-bit octets (8BITMIME).
    eight_bit: bool,
    /// It needs SMTPUTF8: non-ASCII addresses, or UTF-8 in its header
    /// (RFC 6532).
    utf8: bool,
    /// Its size as sent (RFC 1870): CRLF line ends and stuffed dots.
    wire: u64,
}

/// Reads the message as it will be sent (`head`, then `body`) and tells
/// what the relay must offer to take it.
#[derive(Debug)]
struct Scanner {
    eight_bit: bool,
    in_header: bool,
    header_utf8: bool,
    last: u8,
    wire: u64,
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            eight_bit: false,
            in_header: true,
            header_utf8: false,
            last: b'\n',
            wire: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_header && self.last == b'\n' && b == b'\n' {
                self.in_header = false;
            }
            if b >= 0x80 {
                self.eight_bit = true;
                self.header_utf8 |= self.in_header;
            }
            // LF goes as CRLF, and a dot starting a line is doubled.
            self.wire += 1 + u64::from(b == b'\n') + u64::from(b == b'.' && self.last == b'\n');
            self.last = b;
        }
    }

    fn finish(mut self, msg: &Outgoing<'_>) -> Scan {
        if self.last != b'\n' && self.wire > 0 {
            self.wire += 2;
        }
        let addresses =
            !msg.sender.is_ascii() || msg.recipients.iter().any(|r| !r.address.is_ascii());
        Scan {
            eight_bit: self.eight_bit,
            utf8: addresses || self.header_utf8,
            wire: self.wire,
        }
    }
}

/// Scans the message; `whole` is its body already read, if it was.
fn scan(msg: &Outgoing<'_>, whole: Option<&[u8]>) -> Result<Scan, Failed> {
    let mut s = Scanner::new();
    s.feed(msg.head);
    match whole {
        Some(body) => s.feed(body),
        None => {
            let mut reader = msg.body.reader();
            let mut chunk = vec![0u8; CHUNK];
            loop {
                let n = reader.read(&mut chunk).map_err(read_failed)?;
                if n == 0 {
                    break;
                }
                s.feed(&chunk[..n]);
            }
        }
    }
    Ok(s.finish(msg))
}

fn read_failed(e: io::Error) -> Failed {
    Failed::temporary("4.3.0", format!("reading the queued message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(a: &str) -> bool {
        a.ends_with("@box.lan") || !a.contains('@')
    }

    /// Scans `head` then `body`, read whole and in pieces.
    fn scans(head: &[u8], body: &[u8], sender: &str) -> [Scan; 2] {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"junk").unwrap();
        f.write_all(body).unwrap();
        let rcpt = [Recipient {
            address: "someone@remote.example",
            notify: None,
            orcpt: None,
        }];
        let msg = Outgoing {
            id: "X",
            sender,
            recipients: &rcpt,
            dsn: Dsn::default(),
            head,
            body: Body::new(&f, 4, body.len() as u64),
        };
        let whole = msg.body.read_all().unwrap();
        assert_eq!(whole, body);
        [scan(&msg, Some(&whole)).unwrap(), scan(&msg, None).unwrap()]
    }

    #[test]
    fn the_scan_reads_a_rewritten_head_and_the_body_after_it() {
        let head = "From: J\u{f6}rg <box@example.org>\nSubject: hi".as_bytes();
        let body = b"\n.dot\nplain";
        for s in scans(head, body, "box@example.org") {
            // UTF-8 in the header needs SMTPUTF8; CRLFs, a doubled dot and
            // the CRLF added at the end count.
            assert!(s.utf8 && s.eight_bit);
            assert_eq!(s.wire, head.len() as u64 + 1 + body.len() as u64 + 3 + 2);
        }
        for s in scans(b"", b"Subject: x\n\n\xe9t\xe9\n", "a@b") {
            assert!(s.eight_bit && !s.utf8);
        }
        for s in scans(b"", b"Subject: x\n\nplain\n", "\u{e9}@b") {
            assert!(!s.eight_bit && s.utf8);
        }
    }

    #[test]
    fn a_local_from_is_rewritten_and_others_are_not() {
        let to = "box@provider.example";
        let cases: [(&[u8], Option<&[u8]>); 6] = [
            (
                b"Subject: x\nFrom: root@box.lan\nTo: a@b\n",
                Some(b"Subject: x\nFrom: box@provider.example\nTo: a@b\n"),
            ),
            (
                b"From: Cron Daemon <root@box.lan>\n",
                Some(b"From: Cron Daemon <box@provider.example>\n"),
            ),
            (
                b"From: \"Root, the\"\n <root>\nX: y\n",
                Some(b"From: \"Root, the\" <box@provider.example>\nX: y\n"),
            ),
            (b"From: someone@elsewhere.example\n", None),
            (b"From: a@box.lan, b@box.lan\n", None),
            (b"Subject: no from\n", None),
        ];
        for (header, want) in cases {
            assert_eq!(
                rewrite_from(header, to, local).as_deref(),
                want,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }
}
