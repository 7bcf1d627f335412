//! One SMTP session over one connection: command lines go from the
//! connection to the session, and what the session asks for is carried out
//! here: a recipient looked up by delivery's resolver, a body received into
//! the spool, STARTTLS, and the delivery of an accepted message. This is
//! where the protocol core meets the sockets and the mailboxes; neither
//! side knows the other.

use super::body::{self, Body, Framing};
use super::conn::{self, Conn, Deadlines, Line, Stop, Transport};
use crate::config::{Config, Milter};
use crate::delivery::{Delivery, Lookup, Message, Recipient};
use crate::milter::{self, Chain};
use crate::smtp::address::{self, ForwardPath};
use crate::smtp::peer::Peer;
use crate::smtp::reply::{self, Reply};
use crate::smtp::session::{Action, BodyReport, Check, Envelope, Response, Session, Verdict};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What a session needs from the server around it.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub delivery: Arc<dyn Delivery>,
    /// Set when the server is shutting down.
    pub shutdown: Arc<AtomicBool>,
    /// Published by the driver: true while a transaction is open, so that
    /// a shutdown can let it finish.
    pub busy: Arc<AtomicBool>,
    /// The TLS configuration for STARTTLS or implicit TLS, if any.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS from the first byte: handshake before the greeting.
    pub implicit_tls: bool,
    /// Set while the server is under pressure: shorter timeouts.
    pub stressed: Arc<AtomicBool>,
    /// Whose passwords AUTH checks; none where AUTH is not offered.
    pub users: Option<Arc<crate::auth::Users>>,
    /// Where failed AUTH attempts are counted by client address.
    pub logins: Arc<super::logins::FailedLogins>,
    /// The milters this listener's mail passes (a client that logs in
    /// passes `[relay] milters` instead, if there are any).
    pub milters: Vec<Milter>,
    /// Our address the client reached, for the milters.
    pub local: Option<std::net::SocketAddr>,
}

/// A worker's buffers, kept from one session to the next. Allocated for
/// each connection and each message they cost a 64 KiB memset every time
/// and, with musl's allocator, an mmap and a munmap each (the munmap a
/// TLB shootdown on every core).
#[derive(Default)]
pub struct Buffers {
    read: Box<[u8]>,
    body: Vec<u8>,
}

/// One session over its connection, with a worker.
pub struct Driver<S> {
    conn: Conn<S>,
    session: Session<Recipient>,
    ctx: Context,
    /// The body being received, across the chunks of a BDAT transfer.
    body: Option<Body>,
    /// Decoded body bytes on their way to the spool: the worker's buffer.
    out: Vec<u8>,
    /// The greeting (and an implicit TLS handshake) is done.
    greeted: bool,
    /// The session's milters, when it has any.
    chain: Option<Chain>,
}

/// A session between commands, without a worker: its connection is
/// watched by the acceptor's poll until the client sends more.
pub struct Parked<S> {
    conn: conn::Parked<S>,
    session: Session<Recipient>,
    ctx: Context,
    body: Option<Body>,
    chain: Option<Chain>,
}

impl<S: std::os::fd::AsRawFd> Parked<S> {
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.conn.fd()
    }
}

impl<S> Parked<S> {
    /// By when the client must send its next command.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.conn.deadline()
    }

    /// When it goes on by itself (its replies are held back until then).
    pub fn wake_at(&self) -> Option<std::time::Instant> {
        self.conn.wake_at()
    }
}

/// How a stretch of a session on a worker ended.
pub enum Served<S> {
    Ended,
    /// The client has nothing more to say for now.
    Parked(Box<Parked<S>>),
}

/// How the command loop stopped, short of an error.
enum Flow {
    Quit,
    Idle,
}

/// Runs one SMTP session to its end, with the worker's `buffers`, on a
/// worker alone (`sendmail -bs`, tests).
pub fn run<S: Transport>(
    stream: S,
    session: Session<Recipient>,
    ctx: &Context,
    buffers: &mut Buffers,
) {
    let d = Driver::new(stream, session, ctx.clone(), buffers);
    if let Served::Parked(_) = d.serve(buffers, None) {
        unreachable!("a session without parking runs to its end");
    }
}

impl<S: Transport> Driver<S> {
    pub fn new(
        stream: S,
        session: Session<Recipient>,
        ctx: Context,
        buffers: &mut Buffers,
    ) -> Driver<S> {
        let deadlines = Deadlines::new(&ctx.config.timeouts, ctx.stressed.clone());
        let conn = Conn::new(
            stream,
            session.limits().max_command_line,
            std::mem::take(&mut buffers.read),
            deadlines,
        );
        Driver {
            conn,
            session,
            ctx,
            body: None,
            out: std::mem::take(&mut buffers.body),
            greeted: false,
            chain: None,
        }
    }

    /// A parked session again, on the worker with `buffers`.
    pub fn resume(p: Parked<S>, buffers: &mut Buffers) -> Driver<S> {
        // The worker's buffer may hold what an aborted body of another
        // session left; a body in progress wrote all of its own before it
        // was parked.
        buffers.body.clear();
        Driver {
            conn: p.conn.resume(std::mem::take(&mut buffers.read)),
            session: p.session,
            ctx: p.ctx,
            body: p.body,
            out: std::mem::take(&mut buffers.body),
            greeted: true,
            chain: p.chain,
        }
    }

    /// Runs the session until it ends, or, with `park` (see
    /// [`Conn::read_line`]), until its client has nothing more to say for
    /// now: then it comes back parked, and the buffers are the worker's
    /// again.
    pub fn serve(mut self, buffers: &mut Buffers, park: Option<&dyn Fn() -> bool>) -> Served<S> {
        let mut ended = self.greet().and_then(|()| self.drive(park));
        if let Ok(Flow::Idle) = ended {
            if let Some(body) = &mut self.body {
                body.write_pending(&mut self.out);
            }
            match self.conn.flush_unless_held() {
                Ok(()) => {
                    let (conn, rbuf) = self.conn.park();
                    buffers.read = rbuf;
                    buffers.body = self.out;
                    return Served::Parked(Box::new(Parked {
                        conn,
                        session: self.session,
                        ctx: self.ctx,
                        body: self.body,
                        chain: self.chain,
                    }));
                }
                Err(stop) => ended = Err(stop),
            }
        }
        self.finish(ended.map(|_| ()), buffers);
        Served::Ended
    }

    /// Ends a session whose client did not send its next command in
    /// time.
    pub fn expire(self, buffers: &mut Buffers) {
        self.finish(Err(Stop::Timeout), buffers);
    }

    /// Says goodbye as the end calls for, closes, and gives the buffers
    /// back.
    fn finish(mut self, ended: Result<(), Stop>, buffers: &mut Buffers) {
        let host = &self.ctx.config.hostname;
        let farewell = match &ended {
            Ok(()) | Err(Stop::Handshake) => None,
            Err(Stop::Closed) if !self.ctx.shutdown.load(Ordering::SeqCst) => None,
            Err(Stop::Timeout) => Some(reply::timeout(host)),
            Err(Stop::Shutdown | Stop::Closed) => Some(reply::shutting_down(host)),
            Err(Stop::Io(e)) => {
                log::info!("session ended by IO error: {e}");
                None
            }
        };
        if let Some(r) = farewell {
            let _ = self.conn.queue(&r, self.session.enhanced_codes());
        }
        if let Some(chain) = self.chain.take() {
            chain.quit();
        }
        buffers.read = self.conn.close();
        self.out.clear();
        buffers.body = self.out;
    }

    /// The greeting, after the handshake of an implicit TLS listener;
    /// once.
    fn greet(&mut self) -> Result<(), Stop> {
        if self.greeted {
            return Ok(());
        }
        self.greeted = true;
        self.implicit_tls()?;
        if !self.ctx.milters.is_empty() {
            let list = std::mem::take(&mut self.ctx.milters);
            self.open_chain(&list);
        }
        self.conn.queue(&self.session.greeting(), false)
    }

    /// Connects to `list`, the milters from now on, and tells them who
    /// the client is (and what it greeted with, if it has).
    fn open_chain(&mut self, list: &[Milter]) {
        if let Some(old) = self.chain.take() {
            old.quit();
        }
        let (addr, name, user) = match self.session.peer() {
            Peer::Tcp { addr, name } => (Some(*addr), name.clone(), None),
            Peer::Local { user, .. } => (None, None, Some(user.clone())),
        };
        let client = milter::Client {
            hostname: self.ctx.config.hostname.clone(),
            addr,
            name,
            user,
            local: self.ctx.local,
        };
        let (mut chain, verdict) = Chain::open(list, client);
        // What the milters before these said of the connection is theirs:
        // a client that logged in is judged by `[relay] milters` alone.
        let refusal = verdict.refusal();
        if let Some(r) = &refusal {
            log::info!(
                "[{}]: connection refused by a milter: {}",
                self.session.peer(),
                r.render(true).trim_end()
            );
        }
        self.session.refuse_mail(refusal);
        if let Some(login) = self.session.login() {
            chain.logged_in(login);
        }
        if let Some(helo) = self.session.hello_name() {
            if let Some(r) = chain.helo(helo).refusal() {
                self.session.refuse_mail(Some(r));
            }
        }
        self.session.set_filtered(true);
        self.chain = Some(chain);
    }

    /// The handshake of an implicit TLS listener, before anything else.
    fn implicit_tls(&mut self) -> Result<(), Stop> {
        if !self.ctx.implicit_tls {
            return Ok(());
        }
        if self.ctx.tls.is_none() {
            // The listener outlived its configuration (a reload dropped
            // [tls]): never speak in the clear on a TLS port.
            log::warn!(
                "[{}]: no TLS configuration for this implicit TLS listener; closing",
                self.session.peer()
            );
            return Err(Stop::Handshake);
        }
        self.upgrade()
    }

    /// Starts TLS and tells the session.
    fn upgrade(&mut self) -> Result<(), Stop> {
        let config = self
            .ctx
            .tls
            .clone()
            .expect("TLS is started only where it is configured");
        let info = self.conn.start_tls(config, self.session.peer())?;
        self.session.tls_started(info);
        Ok(())
    }

    fn drive(&mut self, park: Option<&dyn Fn() -> bool>) -> Result<Flow, Stop> {
        loop {
            let open = self.session.in_transaction();
            if !open {
                // A BDAT body whose transaction ended (RSET, a new EHLO)
                // holds its spool no longer.
                self.body = None;
            }
            self.ctx.busy.store(open, Ordering::SeqCst);
            if self.ctx.shutdown.load(Ordering::SeqCst) && !open {
                return Err(Stop::Shutdown);
            }
            // A shutting-down server parks nothing: it waits for the
            // transaction to end.
            let park = park.filter(|_| !self.ctx.shutdown.load(Ordering::SeqCst));
            let response = match self.conn.read_line(park)? {
                Line::Idle => return Ok(Flow::Idle),
                Line::TooLong => {
                    let enhanced = self.session.enhanced_codes();
                    self.conn.queue(&reply::line_too_long(), enhanced)?;
                    continue;
                }
                Line::Complete(range) => self.session.command(self.conn.line(range)),
            };
            if !self.act(response)? {
                return Ok(Flow::Quit);
            }
            // A transaction that ended short of its end of message (RSET,
            // a refusal) is over at the milters too.
            if let Some(chain) = &mut self.chain {
                if chain.in_message() && !self.session.in_transaction() {
                    chain.abort();
                }
            }
        }
    }

    /// Sends the response's reply and carries out its action; false when
    /// the session is over.
    fn act(&mut self, mut response: Response) -> Result<bool, Stop> {
        loop {
            if response.delay {
                self.conn.hold_for(self.ctx.config.server.error_delay);
            }
            if let Some(r) = &response.reply {
                self.conn.queue(r, self.session.enhanced_codes())?;
            }
            let reply = match response.action {
                Action::Continue => return Ok(true),
                Action::Close => return Ok(false),
                Action::Lookup(path) => {
                    response = self.session.answer(self.ctx.delivery.lookup(&path));
                    continue;
                }
                Action::LookupRelayed(path) => {
                    response = self.session.answer(self.ctx.delivery.lookup_relayed(&path));
                    continue;
                }
                Action::StartTls => {
                    self.upgrade()?;
                    return Ok(true);
                }
                Action::Authenticate(c) => {
                    let ok = self
                        .ctx
                        .users
                        .as_ref()
                        .is_some_and(|u| u.check(&c.login, &c.password));
                    if let (false, Peer::Tcp { addr, .. }, Some(a)) =
                        (ok, self.session.peer(), &self.ctx.config.auth)
                    {
                        self.ctx.logins.record(
                            addr.ip().to_canonical(),
                            Instant::now(),
                            a.max_failures,
                            a.failure_window,
                        );
                    }
                    response = self.session.authenticated(ok);
                    if ok {
                        self.logged_in();
                    }
                    continue;
                }
                Action::Filter(check) => {
                    let verdict = match (&mut self.chain, check) {
                        (None, _) => milter::Verdict::Go,
                        (Some(c), Check::Helo(name)) => c.helo(&name),
                        (Some(c), Check::Mail { id, args }) => c.mail(&id, &args),
                        (Some(c), Check::Rcpt(args)) => c.rcpt(&args),
                    };
                    response = self.session.filtered(verdict.refusal());
                    continue;
                }
                Action::ReceiveData => self.receive_data()?,
                Action::ReceiveChunk {
                    size,
                    last,
                    start,
                    discard,
                } => self.receive_chunk(size, last, start, discard)?,
            };
            self.conn.queue(&reply, self.session.enhanced_codes())?;
            return Ok(true);
        }
    }

    fn new_body(&mut self, framing: Framing) -> Body {
        let config = &self.ctx.config;
        Body::new(
            &config.spool_dir,
            &self.session.trace_field(),
            framing,
            self.session.limits().max_message_size,
            self.conn.deadlines().transfer(),
            &mut self.out,
        )
    }

    fn receive_data(&mut self) -> Result<Reply, Stop> {
        self.ctx.busy.store(true, Ordering::SeqCst);
        let mut body = self.new_body(Framing::Dotted(self.ctx.config.bare_newline));
        body.receive_data(&mut self.conn, &mut self.out)?;
        let verdict = self
            .session
            .body_received(&body.report(true, &mut self.out));
        Ok(self.conclude(verdict, Some(&body)))
    }

    fn receive_chunk(
        &mut self,
        size: u64,
        last: bool,
        start: bool,
        discard: bool,
    ) -> Result<Reply, Stop> {
        if discard {
            body::discard_chunk(&mut self.conn, size)?;
            let verdict = self.session.chunk_received(last, &BodyReport::default());
            return Ok(self.conclude(verdict, None));
        }
        if start {
            let binary = self.session.binary_body();
            self.body = Some(self.new_body(Framing::Chunked { binary }));
        }
        let body = self
            .body
            .as_mut()
            .expect("a chunk without start has a body");
        body.receive_chunk(&mut self.conn, size, &mut self.out)?;
        let report = body.report(last, &mut self.out);
        let verdict = self.session.chunk_received(last, &report);
        let body = self.body.take();
        let r = self.conclude(verdict, body.as_ref());
        self.body = body;
        if last || !r.is_positive() {
            self.body = None;
        }
        Ok(r)
    }

    /// A client logged in: its mail passes `[relay] milters` from now
    /// on, if there are any, and the milters hear who it is.
    fn logged_in(&mut self) {
        let relay = self.ctx.config.relay_milters().to_vec();
        if !relay.is_empty() {
            self.open_chain(&relay);
        } else if let (Some(chain), Some(login)) = (&mut self.chain, self.session.login()) {
            chain.logged_in(login);
        }
    }

    /// Turns the session's verdict into the reply, delivering if accepted.
    fn conclude(&mut self, verdict: Verdict<Recipient>, body: Option<&Body>) -> Reply {
        // The session accepts only bodies whose spool was written.
        let spool = body.and_then(Body::spool);
        let (env, rewritten) = match verdict {
            Verdict::Reply(r) => return r,
            Verdict::Deliver(env) => (env, None),
            Verdict::Filter(env) => {
                let Some(spool) = spool else {
                    log::error!("{}: accepted without a spool", env.id);
                    return reply::local_error();
                };
                match self.filter_message(env, spool) {
                    Ok(filtered) => filtered,
                    Err(r) => return r,
                }
            }
        };
        let Some(spool) = rewritten.as_ref().or(spool) else {
            log::error!("{}: accepted without a spool", env.id);
            return reply::local_error();
        };
        let msg = Message {
            id: &env.id,
            reverse_path: &env.reverse_path,
            recipients: &env.recipients,
            body: spool.body(),
            received: env.received,
            dsn: crate::delivery::Dsn {
                ret: env.ret,
                envid: env.envid.as_deref(),
                rcpts: &env.rcpt_params,
            },
        };
        let result = self
            .ctx
            .delivery
            .deliver(&msg, self.conn.deadlines().delivery());
        let r = self.session.delivered(&env, result.as_ref().map(|_| ()));
        log::info!("{}: {}", env.id, r.render(true).trim_end());
        r
    }

    /// The milters' turn at a message: the envelope to deliver and the
    /// message as they left it (when they changed it), or the reply that
    /// ends it here.
    fn filter_message(
        &mut self,
        mut env: Envelope<Recipient>,
        spool: &crate::delivery::spool::Spool,
    ) -> Result<(Envelope<Recipient>, Option<crate::delivery::spool::Spool>), Reply> {
        let chain = self
            .chain
            .as_mut()
            .expect("a filtered session has its milters");
        let config = &self.ctx.config;
        let eom = chain.message(
            spool.body(),
            true,
            &config.spool_dir,
            self.session.limits().max_message_size,
        );
        match eom.verdict {
            milter::Verdict::Refuse(r) => {
                return match self.session.message_filtered(env, Some(r)) {
                    Verdict::Reply(r) => Err(r),
                    _ => unreachable!("a refused message is refused"),
                };
            }
            milter::Verdict::Discard => {
                log::info!("{}: discarded by a milter", env.id);
                return Err(reply::queued(&env.id));
            }
            milter::Verdict::Go => {}
        }
        if let Some(from) = &eom.from {
            let from = milter::bare_address(from);
            log::info!("{}: sender changed by a milter to <{from}>", env.id);
            env.reverse_path = from.to_string();
        }
        for gone in &eom.del_rcpts {
            let gone = milter::bare_address(gone);
            let before = env.recipients.len();
            let pairs = std::mem::take(&mut env.rcpt_params)
                .into_iter()
                .zip(std::mem::take(&mut env.recipients));
            (env.rcpt_params, env.recipients) = pairs
                .filter(|(_, r)| !r.address.eq_ignore_ascii_case(gone))
                .unzip();
            if env.recipients.len() < before {
                log::info!("{}: to=<{gone}> removed by a milter", env.id);
            }
        }
        for added in &eom.add_rcpts {
            match self.added_recipient(added) {
                Ok(r) => {
                    log::info!("{}: to=<{}> added by a milter", env.id, r.address);
                    env.recipients.push(r);
                    env.rcpt_params.push(Default::default());
                }
                Err(why) => log::warn!(
                    "{}: a milter added {added:?}, which cannot be delivered: {why}",
                    env.id
                ),
            }
        }
        if let Some(reason) = &eom.quarantine {
            env = self.quarantined(env, reason)?;
        }
        if env.recipients.is_empty() {
            log::info!(
                "{}: the milters left no recipient; nothing to deliver",
                env.id
            );
            return Err(reply::queued(&env.id));
        }
        match self.session.message_filtered(env, None) {
            Verdict::Deliver(env) => Ok((env, eom.rewritten)),
            _ => unreachable!("a message the milters passed is delivered"),
        }
    }

    /// A recipient a milter added, resolved as one the client gave.
    fn added_recipient(&self, text: &str) -> Result<Recipient, String> {
        let path = format!("<{}>", milter::bare_address(text));
        let path = match address::parse_forward_path(&path) {
            Ok((p, "")) => p,
            _ => return Err("not an address".into()),
        };
        match self.ctx.delivery.lookup_relayed(&path) {
            Lookup::Local(r) => Ok(r),
            other => Err(format!("{other:?}")),
        }
    }

    /// A quarantined message goes to the `quarantine` mailbox alone, or,
    /// without one, is refused.
    fn quarantined(
        &self,
        mut env: Envelope<Recipient>,
        reason: &str,
    ) -> Result<Envelope<Recipient>, Reply> {
        let Some(mailbox) = &self.ctx.config.quarantine else {
            log::info!("{}: quarantined by a milter ({reason}); refused", env.id);
            return Err(reply::quarantined());
        };
        let path = match address::parse_forward_path(&format!("<{mailbox}>")) {
            Ok((path @ ForwardPath::Mailbox(_), "")) => path,
            _ => return Err(reply::quarantined()),
        };
        match self.ctx.delivery.lookup(&path) {
            Lookup::Local(r) => {
                log::info!(
                    "{}: quarantined by a milter ({reason}); delivered to <{mailbox}> only",
                    env.id
                );
                env.recipients = vec![r];
                env.rcpt_params = vec![Default::default()];
                Ok(env)
            }
            other => {
                log::error!(
                    "{}: quarantined by a milter ({reason}), but quarantine = {mailbox:?} is no local mailbox ({other:?}); refused",
                    env.id
                );
                Err(reply::quarantined())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SYSTEM;
    use crate::delivery::{DeliveryError, Dest, Lookup, RunAs, Target};
    use crate::server::conn::{READ_BUFFER, WRITE_BUFFER};
    use crate::smtp::address::ForwardPath;
    use crate::smtp::peer::Peer;
    use crate::smtp::session::TlsPolicy;
    use std::io::{self, Cursor, Read, Write};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// A stream that yields the client's bytes and records each write.
    struct Mem {
        input: Cursor<Vec<u8>>,
        writes: Vec<Vec<u8>>,
    }

    impl Read for Mem {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for &mut Mem {
        fn set_read_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
        fn set_write_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    /// Accepts anyone at example.org and keeps delivered bodies in memory.
    #[derive(Default)]
    struct Keep(Mutex<Vec<Vec<u8>>>);

    impl Delivery for Keep {
        fn lookup(&self, rcpt: &ForwardPath) -> Lookup {
            match rcpt {
                ForwardPath::Mailbox(m) if m.domain.matches_name("example.org") => {
                    Lookup::Local(Recipient {
                        address: m.to_string(),
                        full_name: None,
                        dests: vec![Dest {
                            target: Target::Maildir(m.local.clone().into()),
                            run_as: RunAs::Server,
                            address: m.to_string(),
                            sender: None,
                        }],
                        missing: Vec::new(),
                    })
                }
                _ => Lookup::NotLocal,
            }
        }
        fn deliver(&self, msg: &Message<'_>, _: Instant) -> Result<(), DeliveryError> {
            let mut body = Vec::new();
            msg.body.reader().read_to_end(&mut body).unwrap();
            self.0.lock().unwrap().push(body);
            Ok(())
        }
    }

    struct Outcome {
        replies: Vec<String>,
        writes: usize,
        largest_write: usize,
        bodies: Vec<Vec<u8>>,
    }

    fn converse(input: &[u8]) -> Outcome {
        converse_with("", input)
    }

    /// Runs a whole session over `input`; `extra` adds top-level settings.
    fn converse_with(extra: &str, input: &[u8]) -> Outcome {
        converse_reusing(&mut Buffers::default(), extra, input)
    }

    /// The same, with a worker's buffers from earlier sessions.
    fn converse_reusing(buffers: &mut Buffers, extra: &str, input: &[u8]) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\nspool_dir = \"{}\"\n{extra}\n[server]\nmax_command_line = 512\nmax_message_size = 2048",
            dir.path().display()
        );
        let config = Arc::new(Config::parse(&text, "test").unwrap());
        let keep = Arc::new(Keep::default());
        let ctx = Context {
            config: config.clone(),
            delivery: keep.clone(),
            shutdown: Arc::new(AtomicBool::new(false)),
            busy: Arc::new(AtomicBool::new(false)),
            tls: None,
            implicit_tls: false,
            stressed: Arc::default(),
            users: None,
            logins: Arc::default(),
            milters: Vec::new(),
            local: None,
        };
        let peer = Peer::Tcp {
            addr: "192.0.2.9:4321".parse().unwrap(),
            name: None,
        };
        let settings = Arc::new(config.session_settings());
        let session = Session::new(settings, &SYSTEM, peer, TlsPolicy::default());
        let mut mem = Mem {
            input: Cursor::new(input.to_vec()),
            writes: Vec::new(),
        };
        run(&mut mem, session, &ctx, buffers);
        let all = String::from_utf8(mem.writes.concat()).unwrap();
        let replies = all
            .split_inclusive("\r\n")
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .map(|l| l.trim_end().to_string())
            .collect();
        let bodies = keep.0.lock().unwrap().clone();
        Outcome {
            replies,
            writes: mem.writes.len(),
            largest_write: mem.writes.iter().map(Vec::len).max().unwrap_or(0),
            bodies,
        }
    }

    #[test]
    fn a_session_on_reused_buffers_sees_nothing_of_the_one_before() {
        let mut buffers = Buffers::default();
        // A long message, then a command cut off by the end of input.
        let mut first =
            b"EHLO a\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<postmaster@example.org>\r\nDATA\r\n"
                .to_vec();
        for i in 0..40 {
            first.extend_from_slice(format!("Subject-{i}: first session\r\n").as_bytes());
        }
        first.extend_from_slice(b"\r\nold\r\n.\r\nMAIL FROM:<leftover@exa");
        let o = converse_reusing(&mut buffers, "", &first);
        assert_eq!(codes(&o), [220, 250, 250, 250, 354, 250]);
        assert!(buffers.read.len() >= READ_BUFFER && buffers.body.capacity() > 0);
        let second = b"EHLO b\r\nMAIL FROM:<t@example.org>\r\nRCPT TO:<postmaster@example.org>\r\nDATA\r\nSubject: second\r\n\r\nnew\r\n.\r\nQUIT\r\n";
        let reused = converse_reusing(&mut buffers, "", second);
        let fresh = converse(second);
        assert_eq!(reused.replies.len(), fresh.replies.len());
        assert_eq!(codes(&reused), codes(&fresh));
        assert_eq!(stored(&reused.bodies[0]), b"Subject: second\n\nnew\n");
        assert_eq!(stored(&reused.bodies[0]), stored(&fresh.bodies[0]));
    }

    fn codes(o: &Outcome) -> Vec<u16> {
        o.replies.iter().map(|r| r[..3].parse().unwrap()).collect()
    }

    /// The body as stored, without our Received field (whose line ends
    /// are LF, or CRLF in a message stored as sent).
    fn stored(body: &[u8]) -> &[u8] {
        let text = body;
        let end = match text.windows(3).position(|w| w == b";\r\n") {
            Some(i) => i + 3,
            None => text.windows(2).position(|w| w == b";\n").unwrap() + 2,
        };
        let date_end = end + text[end..].iter().position(|&b| b == b'\n').unwrap() + 1;
        &text[date_end..]
    }

    #[test]
    fn pipelined_batch_gets_every_reply_in_order_in_one_write() {
        let o = converse(
            b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\nRCPT TO:<y@nowhere.example>\r\nRCPT TO:<z@example.org>\r\nDATA\r\nSubject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(codes(&o), [220, 250, 250, 250, 550, 250, 354, 250, 221]);
        // The greeting goes out before the first read; then one write for
        // the whole batch.
        assert_eq!(o.writes, 2, "replies to a pipelined batch go out together");
        assert_eq!(stored(&o.bodies[0]), b"Subject: s\n\nhi\n");
    }

    #[test]
    fn replies_to_a_huge_pipelined_batch_are_written_in_bounded_pieces() {
        let mut input = b"EHLO c.example\r\n".repeat(2000);
        input.extend_from_slice(b"QUIT\r\n");
        let o = converse(&input);
        assert_eq!(o.replies.len(), 2002);
        assert!(o.writes > 3, "{} writes", o.writes);
        assert!(
            o.largest_write < WRITE_BUFFER + 1024,
            "{} octets in one write",
            o.largest_write
        );
    }

    #[test]
    fn long_command_line_is_refused_and_the_session_goes_on() {
        let mut input = b"EHLO c.example\r\nNOOP ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 600));
        input.extend_from_slice(b"\r\nNOOP\r\nQUIT\r\n");
        let o = converse(&input);
        assert_eq!(codes(&o), [220, 250, 500, 250, 221]);
        assert!(o.replies[2].starts_with("500 5.5.6"));
        // Exactly at the limit (512 with CRLF) is fine.
        let mut input = b"NOOP ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 505));
        input.extend_from_slice(b"\r\nQUIT\r\n");
        assert_eq!(codes(&converse(&input)), [220, 250, 221]);
    }

    #[test]
    fn bare_lf_commands_are_accepted() {
        assert_eq!(
            codes(&converse(b"EHLO c.example\nNOOP\nQUIT\n")),
            [220, 250, 250, 221]
        );
    }

    const SMUGGLING: &[u8] = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nhi\n.\nMAIL FROM:<evil@b.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n";

    #[test]
    fn smuggled_commands_are_refused_under_reject() {
        let o = converse_with("bare_newline = \"reject\"", SMUGGLING);
        assert_eq!(codes(&o), [220, 250, 250, 250, 354, 550, 221]);
        assert!(o.replies[5].starts_with("550 5.5.2"));
        assert!(o.bodies.is_empty());
    }

    #[test]
    fn smuggled_commands_stay_message_text_under_normalize() {
        let o = converse(SMUGGLING);
        assert_eq!(codes(&o), [220, 250, 250, 250, 354, 250, 221]);
        assert_eq!(o.bodies.len(), 1, "one message, no second transaction");
        assert_eq!(
            stored(&o.bodies[0]),
            b"hi\n.\nMAIL FROM:<evil@b.example>\nRCPT TO:<victim@example.org>\nDATA\nforged\n"
        );
    }

    #[test]
    fn bdat_chunks_make_one_message() {
        let o = converse(
            b"EHLO c.example\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<x@example.org>\r\nBDAT 10\r\nSubject: \rBDAT 11\r\n\n\r\nbody\0\xff\r\nBDAT 0 LAST\r\nQUIT\r\n",
        );
        assert_eq!(codes(&o), [220, 250, 250, 250, 250, 250, 250, 221]);
        assert_eq!(o.replies[4], "250 2.0.0 10 octets received");
        assert_eq!(o.replies[5], "250 2.0.0 21 octets received");
        // BINARYMIME: stored exactly, CRLF and all.
        assert_eq!(stored(&o.bodies[0]), b"Subject: \r\n\r\nbody\0\xff\r\n");
    }

    #[test]
    fn bdat_without_transaction_is_read_and_dropped() {
        // The chunk holds command text: it must not be executed.
        let o = converse(
            b"EHLO c.example\r\nBDAT 28 LAST\r\nMAIL FROM:<evil@b.example>\r\nNOOP\r\nQUIT\r\n",
        );
        assert_eq!(codes(&o), [220, 250, 503, 250, 221]);
    }

    #[test]
    fn bdat_with_bad_size_closes_the_connection() {
        let o = converse(b"EHLO c.example\r\nBDAT 12x\r\nNOOP\r\n");
        assert_eq!(codes(&o), [220, 250, 501]);
    }

    #[test]
    fn oversized_messages_get_552_and_the_session_goes_on() {
        let mut input =
            b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n"
                .to_vec();
        for _ in 0..100 {
            input.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
        }
        input.extend_from_slice(
            b".\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\nBDAT 3000 LAST\r\n",
        );
        input.extend(std::iter::repeat_n(b'x', 3000));
        input.extend_from_slice(b"RSET\r\nQUIT\r\n");
        let o = converse(&input);
        assert_eq!(
            codes(&o),
            [220, 250, 250, 250, 354, 552, 250, 250, 552, 250, 221]
        );
        assert!(o.bodies.is_empty());
    }

    #[test]
    fn eof_in_data_delivers_nothing() {
        let o = converse(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\nDATA\r\npartial\r\n");
        assert_eq!(codes(&o), [220, 250, 250, 250, 354]);
        assert!(o.bodies.is_empty());
    }
}
