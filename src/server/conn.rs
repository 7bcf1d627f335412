//! The connection driver: the only code that reads and writes a client's
//! socket. It reads bounded command lines, feeds them to the session,
//! reads message bodies straight into the spool, calls delivery, and sends
//! the replies.
//!
//! Replies are buffered and written when the driver is about to block for
//! more input (or the buffer is full), so a pipelining client (RFC 2920)
//! that sends a whole batch of commands in one write gets all the replies,
//! in order, in one write. Timeouts are set per phase here (RFC 5321 4.5.3.2); on expiry the
//! client gets 421 and the connection is closed. The driver is generic over
//! its stream, and swaps it for a TLS stream over the same socket on
//! STARTTLS (or before the greeting, for implicit TLS).

use super::tls::{self, TlsStream};
use crate::config::Config;
use crate::delivery::spool::Spool;
use crate::delivery::{Delivery, DeliveryError, Message};
use crate::smtp::data::BodyDecoder;
use crate::smtp::reply::{self, Reply};
use crate::smtp::session::{Action, BodyReport, Session, Verdict};
use crate::smtp::trace::TlsInfo;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of the read buffer; command lines must fit, and a large buffer
/// means few system calls for message bodies.
const READ_BUFFER: usize = 64 * 1024;
/// Decoded body bytes are written to the spool in pieces of this size.
const SPOOL_WRITE: usize = 64 * 1024;
/// Replies queued beyond this are written at once.
const WRITE_BUFFER: usize = 64 * 1024;
/// A read may wait up to this much past its deadline, so that the socket's
/// timeout need not be set again before every read.
const TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// A byte stream with settable timeouts: TCP, or TLS over it.
pub trait Transport: Read + Write {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()>;
    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()>;
}

/// A client's TCP connection. Its read timeout is set in whole seconds and
/// kept while the one asked for is at most [`TIMEOUT_SLACK`] shorter, so
/// that the reads of a session (and of a TLS session over it) do not each
/// cost a system call to set it.
pub struct Socket {
    tcp: TcpStream,
    read_timeout: Option<Duration>,
}

impl Socket {
    pub fn new(tcp: TcpStream) -> Socket {
        Socket {
            tcp,
            read_timeout: None,
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Transport for Socket {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        let kept = self
            .read_timeout
            .is_some_and(|set| t <= set && set - t < TIMEOUT_SLACK);
        if !kept {
            let whole = Duration::from_secs(t.as_secs() + u64::from(t.subsec_nanos() > 0));
            self.tcp.set_read_timeout(Some(whole))?;
            self.read_timeout = Some(whole);
        }
        Ok(())
    }
    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.tcp.set_write_timeout(Some(t))
    }
}

/// Why a session ended early.
#[derive(Debug)]
enum Stop {
    /// The client went away.
    Closed,
    /// A read timed out; the client is told so.
    Timeout,
    /// The server is shutting down; the client is told so.
    Shutdown,
    /// The TLS handshake failed; there is no channel left to say so on.
    Handshake,
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Stop {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Stop::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Stop::Closed,
            _ => Stop::Io(e),
        }
    }
}

enum Line {
    /// The line without its line end, as a range of the read buffer.
    Complete(std::ops::Range<usize>),
    TooLong,
}

/// The client's byte stream: as accepted, or TLS over it.
enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Only while one is swapped for the other.
    Swapping,
}

impl<S: Transport> Stream<S> {
    /// Ends a TLS session properly; nothing to do for plain TCP.
    fn close(&mut self) {
        if let Stream::Tls(t) = self {
            t.close();
        }
    }

    fn transport(&mut self) -> &mut dyn Transport {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut **t,
            Stream::Swapping => unreachable!("a failed swap ends the session"),
        }
    }
}

impl<S: Transport> Read for Stream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.transport().read(buf)
    }
}

impl<S: Transport> Write for Stream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.transport().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.transport().flush()
    }
}

impl<S: Transport> Transport for Stream<S> {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.transport().set_read_timeout(t)
    }
    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.transport().set_write_timeout(t)
    }
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

/// Buffered, bounded IO over a transport.
struct Conn<S> {
    stream: Stream<S>,
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    /// For the next message's body.
    spare: Vec<u8>,
}

impl<S: Transport> Conn<S> {
    fn new(stream: S, max_line: usize, buffers: &mut Buffers) -> Conn<S> {
        let size = READ_BUFFER.max(max_line);
        let mut rbuf = std::mem::take(&mut buffers.read);
        if rbuf.len() != size {
            rbuf = vec![0; size].into_boxed_slice();
        }
        Conn {
            stream: Stream::Plain(stream),
            rbuf,
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(1024),
            spare: std::mem::take(&mut buffers.body),
        }
    }

    /// Gives the buffers back for the worker's next session.
    fn release(&mut self, buffers: &mut Buffers) {
        buffers.read = std::mem::take(&mut self.rbuf);
        buffers.body = std::mem::take(&mut self.spare);
    }

    fn buffered(&self) -> &[u8] {
        &self.rbuf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more input, first sending any replies owed: this is the one
    /// place where the driver may block, so it is where replies go out.
    fn fill(&mut self) -> Result<(), Stop> {
        self.flush()?;
        if self.end == self.rbuf.len() {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.stream.read(&mut self.rbuf[self.end..]) {
                Ok(0) => return Err(Stop::Closed),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads more input within `deadline`, waiting at most `block` for any
    /// one read.
    fn fill_by(&mut self, deadline: Instant, block: Duration) -> Result<(), Stop> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Stop::Timeout);
        }
        self.stream.set_read_timeout(left.min(block))?;
        self.fill()
    }

    /// Reads one line of at most `max` octets including its line end, by
    /// `deadline`. A longer line is read to its end and dropped. Lines end
    /// at LF; a CR before it is removed.
    fn read_line(&mut self, max: usize, deadline: Instant) -> Result<Line, Stop> {
        let mut scanned = 0;
        let mut too_long = false;
        loop {
            let data = &self.rbuf[self.start..self.end];
            if let Some(i) = data[scanned..].iter().position(|&b| b == b'\n') {
                let len = scanned + i + 1;
                let range = self.start..self.start + len;
                self.consume_keep(len);
                if too_long || len > max {
                    return Ok(Line::TooLong);
                }
                let mut end = range.end - 1;
                if end > range.start && self.rbuf[end - 1] == b'\r' {
                    end -= 1;
                }
                return Ok(Line::Complete(range.start..end));
            }
            scanned = data.len();
            if scanned >= max {
                // Over the limit with no line end yet: drop what we have
                // and keep reading until the line ends.
                too_long = true;
                self.consume(scanned);
                scanned = 0;
            }
            self.fill_by(deadline, Duration::MAX)?;
        }
    }

    /// Like `consume`, but keeps the consumed bytes in place so that a
    /// line range stays valid until the next read.
    fn consume_keep(&mut self, n: usize) {
        self.start += n;
    }

    fn line(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.rbuf[range]
    }

    /// Queues a reply; a client that pipelines more than a buffer's worth
    /// of commands without reading gets them written now.
    fn queue(&mut self, reply: &Reply, enhanced: bool) -> Result<(), Stop> {
        reply.write_to(&mut self.wbuf, enhanced);
        if self.wbuf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf)?;
            self.stream.flush()?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Replaces the plain stream with a TLS session over it, by
    /// `deadline`. Whatever the client sent after the command that asked
    /// for TLS is dropped unread: it came in the clear and must not be
    /// taken as said over TLS (the STARTTLS injection of CVE-2011-0411).
    fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        deadline: Instant,
        peer: &std::net::SocketAddr,
    ) -> Result<TlsInfo, Stop> {
        self.flush()?;
        let dropped = self.buffered().len();
        if dropped > 0 {
            log::info!("[{peer}]: {dropped} octets sent before the TLS handshake dropped");
        }
        self.start = 0;
        self.end = 0;
        let Stream::Plain(sock) = std::mem::replace(&mut self.stream, Stream::Swapping) else {
            unreachable!("the session starts TLS only once");
        };
        match tls::accept(sock, config, deadline) {
            Ok(t) => {
                let info = t.info();
                log::info!("[{peer}]: TLS established: {info}");
                self.stream = Stream::Tls(Box::new(t));
                Ok(info)
            }
            Err(e) => {
                let why = match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_string(),
                    io::ErrorKind::UnexpectedEof => "the client closed the connection".to_string(),
                    _ => e.to_string(),
                };
                log::info!("[{peer}]: TLS handshake failed: {why}");
                Err(Stop::Handshake)
            }
        }
    }
}

/// What a session needs from the server around it.
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
}

/// A body being received: its spool (or why there is none), its decoder,
/// and the deadline for the whole transfer.
struct Body {
    spool: Result<Spool, DeliveryError>,
    decoder: BodyDecoder,
    out: Vec<u8>,
    deadline: Instant,
}

impl Body {
    /// A body for the next message, decoded into `out` (emptied first).
    fn new(ctx: &Context, session: &Session, dotted: bool, mut out: Vec<u8>) -> Body {
        let max = ctx.config.server.max_message_size;
        let mut spool = Spool::create(&ctx.config.spool_dir)
            .map_err(|e| DeliveryError::io("creating spool file", &e));
        if let Ok(s) = &mut spool {
            if let Err(e) = s.write(session.trace_field().as_bytes()) {
                spool = Err(DeliveryError::io("writing spool file", &e));
            }
        }
        Body {
            spool,
            decoder: if dotted {
                BodyDecoder::data(max, ctx.config.bare_newline)
            } else {
                BodyDecoder::chunked(max, session.binary_body())
            },
            out: {
                out.clear();
                out.reserve(SPOOL_WRITE + READ_BUFFER);
                out
            },
            deadline: Instant::now() + ctx.config.timeouts.data_total,
        }
    }

    fn feed(&mut self, input: &[u8]) -> crate::smtp::data::Feed {
        let f = self.decoder.feed(input, &mut self.out);
        if self.out.len() >= SPOOL_WRITE {
            self.write_out();
        }
        f
    }

    fn write_out(&mut self) {
        if let Ok(s) = &mut self.spool {
            if let Err(e) = s.write(&self.out) {
                self.spool = Err(DeliveryError::io("writing spool file", &e));
            }
        }
        self.out.clear();
    }

    /// The state so far; `last` ends the body.
    fn report(&mut self, last: bool) -> BodyReport {
        if last {
            self.decoder.finish(&mut self.out);
            self.write_out();
        }
        BodyReport {
            size: self.decoder.size(),
            too_big: self.decoder.too_big(),
            bare_newline: self.decoder.bare_newline(),
            received_count: self.decoder.received_count(),
            delivered_to: self.decoder.delivered_to().to_vec(),
            spool_error: self.spool.as_ref().err().cloned(),
        }
    }
}

/// Runs one SMTP session to its end, with the worker's `buffers`.
pub fn run<S: Transport>(stream: S, mut session: Session, ctx: &Context, buffers: &mut Buffers) {
    let mut conn = Conn::new(stream, ctx.config.server.max_command_line, buffers);
    let host = &ctx.config.hostname;
    let ended = implicit_tls(&mut conn, &mut session, ctx)
        .and_then(|()| drive(&mut conn, &mut session, ctx));
    let farewell = match &ended {
        Ok(()) | Err(Stop::Handshake) => None,
        Err(Stop::Closed) if !ctx.shutdown.load(Ordering::SeqCst) => None,
        Err(Stop::Timeout) => Some(reply::timeout(host)),
        Err(Stop::Shutdown | Stop::Closed) => Some(reply::shutting_down(host)),
        Err(Stop::Io(e)) => {
            log::info!("session ended by IO error: {e}");
            None
        }
    };
    if let Some(r) = farewell {
        let _ = conn.queue(&r, session.enhanced_codes());
    }
    let _ = conn.flush();
    conn.stream.close();
    conn.release(buffers);
}

/// The handshake of an implicit TLS listener, before anything else.
fn implicit_tls<S: Transport>(
    conn: &mut Conn<S>,
    session: &mut Session,
    ctx: &Context,
) -> Result<(), Stop> {
    if !ctx.implicit_tls {
        return Ok(());
    }
    let Some(config) = &ctx.tls else {
        // The listener outlived its configuration (a reload dropped
        // [tls]): never speak in the clear on a TLS port.
        log::warn!(
            "[{}]: no TLS configuration for this implicit TLS listener; closing",
            session.peer().addr
        );
        return Err(Stop::Handshake);
    };
    upgrade(conn, session, ctx, config.clone())
}

/// Starts TLS, within the command timeout, and tells the session.
fn upgrade<S: Transport>(
    conn: &mut Conn<S>,
    session: &mut Session,
    ctx: &Context,
    config: Arc<rustls::ServerConfig>,
) -> Result<(), Stop> {
    let timeout = ctx.config.timeouts.command;
    let info = conn.start_tls(config, Instant::now() + timeout, &session.peer().addr)?;
    session.tls_started(info);
    conn.stream.set_write_timeout(timeout)?;
    Ok(())
}

fn drive<S: Transport>(
    conn: &mut Conn<S>,
    session: &mut Session,
    ctx: &Context,
) -> Result<(), Stop> {
    let t = &ctx.config.timeouts;
    conn.stream.set_write_timeout(t.command)?;
    conn.queue(&session.greeting(), false)?;
    let mut body: Option<Body> = None;
    loop {
        ctx.busy.store(session.in_transaction(), Ordering::SeqCst);
        if ctx.shutdown.load(Ordering::SeqCst) && !session.in_transaction() {
            return Err(Stop::Shutdown);
        }
        let deadline = Instant::now() + t.command;
        let response = match conn.read_line(ctx.config.server.max_command_line, deadline)? {
            Line::TooLong => {
                conn.queue(&reply::line_too_long(), session.enhanced_codes())?;
                continue;
            }
            Line::Complete(range) => session.command(conn.line(range)),
        };
        if let Some(r) = &response.reply {
            conn.queue(r, session.enhanced_codes())?;
        }
        let r = match response.action {
            Action::Continue => continue,
            Action::Close => return Ok(()),
            Action::StartTls => {
                let config = ctx.tls.clone().expect("STARTTLS is offered only with TLS");
                upgrade(conn, session, ctx, config)?;
                continue;
            }
            Action::ReceiveData => {
                ctx.busy.store(true, Ordering::SeqCst);
                let mut b = Body::new(ctx, session, true, std::mem::take(&mut conn.spare));
                receive_data(conn, &mut b, ctx)?;
                let verdict = session.body_received(&b.report(true));
                let r = conclude(verdict, Some(&b), session, ctx);
                conn.spare = b.out;
                r
            }
            Action::ReceiveChunk {
                size,
                last,
                start,
                discard,
            } => {
                if start {
                    let out = std::mem::take(&mut conn.spare);
                    body = Some(Body::new(ctx, session, false, out));
                }
                if discard {
                    receive_chunk(conn, None, size, ctx)?;
                    let verdict = session.chunk_received(last, &BodyReport::default());
                    conclude(verdict, None, session, ctx)
                } else {
                    let b = body.as_mut().expect("a chunk without start has a body");
                    receive_chunk(conn, Some(&mut *b), size, ctx)?;
                    let verdict = session.chunk_received(last, &b.report(last));
                    let r = conclude(verdict, Some(b), session, ctx);
                    if last || !r.is_positive() {
                        if let Some(b) = body.take() {
                            conn.spare = b.out;
                        }
                    }
                    r
                }
            }
        };
        conn.queue(&r, session.enhanced_codes())?;
    }
}

/// Turns the session's verdict into the reply, delivering if accepted.
fn conclude(verdict: Verdict, body: Option<&Body>, session: &Session, ctx: &Context) -> Reply {
    match verdict {
        Verdict::Reply(r) => r,
        Verdict::Deliver(env) => {
            // The session accepts only bodies whose spool was written.
            let Some(Ok(spool)) = body.map(|b| &b.spool) else {
                log::error!("{}: accepted without a spool", env.id);
                return reply::local_error();
            };
            let result = ctx.delivery.deliver(&Message {
                id: &env.id,
                reverse_path: &env.reverse_path,
                recipients: &env.recipients,
                body: spool.file(),
                received: std::time::SystemTime::now(),
            });
            let r = session.delivered(&env, &result);
            log::info!("{}: {}", env.id, r.render(true).trim_end());
            r
        }
    }
}

/// Reads a dot-terminated body, bounded by the per-block and total timeouts.
fn receive_data<S: Transport>(
    conn: &mut Conn<S>,
    body: &mut Body,
    ctx: &Context,
) -> Result<(), Stop> {
    loop {
        if !conn.buffered().is_empty() {
            let f = body.feed(conn.buffered());
            conn.consume(f.consumed);
            if f.done {
                return Ok(());
            }
        }
        conn.fill_by(body.deadline, ctx.config.timeouts.data_block)?;
    }
}

/// Reads exactly `size` octets of a chunk into `body`, or drops them. The
/// body's deadline covers all its chunks; a dropped chunk gets its own.
fn receive_chunk<S: Transport>(
    conn: &mut Conn<S>,
    mut body: Option<&mut Body>,
    size: u64,
    ctx: &Context,
) -> Result<(), Stop> {
    let t = &ctx.config.timeouts;
    let deadline = body
        .as_ref()
        .map_or_else(|| Instant::now() + t.data_total, |b| b.deadline);
    // Chunks that arrive whole with their command never wait for a read,
    // so the transfer's deadline is checked here too.
    if Instant::now() >= deadline {
        return Err(Stop::Timeout);
    }
    let mut left = size;
    loop {
        let n = (conn.buffered().len() as u64).min(left) as usize;
        if n > 0 {
            if let Some(b) = body.as_deref_mut() {
                b.feed(&conn.buffered()[..n]);
            }
            conn.consume(n);
            left -= n as u64;
        }
        if left == 0 {
            return Ok(());
        }
        conn.fill_by(deadline, t.data_block)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Dest, Lookup, Recipient, RunAs, Target};
    use crate::smtp::address::ForwardPath;
    use crate::smtp::session::{Peer, TlsPolicy};
    use std::io::{Cursor, Seek};
    use std::sync::Mutex;

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
        fn deliver(&self, msg: &Message<'_>) -> Result<(), DeliveryError> {
            let mut body = Vec::new();
            let mut f = msg.body;
            f.rewind().unwrap();
            f.read_to_end(&mut body).unwrap();
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
        let dir = std::env::temp_dir().join(format!("mailroom-conn-test-{}", std::process::id()));
        let text = format!(
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\nspool_dir = \"{}\"\n{extra}\n[server]\nmax_command_line = 512\nmax_message_size = 2048",
            dir.display()
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
        };
        let peer = Peer {
            addr: "192.0.2.9:4321".parse().unwrap(),
            name: None,
        };
        let session = Session::new(config, keep.clone(), peer, TlsPolicy::default());
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

    /// The body as stored, without our Received field.
    fn stored(body: &[u8]) -> &[u8] {
        let text = body;
        let end = text.windows(2).position(|w| w == b";\n").unwrap() + 2;
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
