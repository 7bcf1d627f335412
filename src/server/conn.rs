//! The connection: the only code that reads and writes a client's socket.
//! It frames command lines (with the core's pure [`LineFramer`]), hands
//! out message bytes as they arrive, buffers replies, swaps the stream for
//! TLS, and bounds every wait for the client by a deadline from
//! [`Deadlines`], the one place a session's timeouts are read.
//!
//! Replies are buffered and written when the driver is about to block for
//! more input (or the buffer is full), so a pipelining client (RFC 2920)
//! that sends a whole batch of commands in one write gets all the replies,
//! in order, in one write.

use crate::config::Timeouts;
use crate::net::tls::{self, TlsStream};
pub use crate::net::{Socket, Transport};
use crate::smtp::line::{Frame, LineFramer};
use crate::smtp::reply::Reply;
use crate::smtp::trace::TlsInfo;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of the read buffer; command lines must fit, and a large buffer
/// means few system calls for message bodies.
pub const READ_BUFFER: usize = 64 * 1024;
/// Replies queued beyond this are written at once.
pub const WRITE_BUFFER: usize = 64 * 1024;

/// How long each wait of a session may last (RFC 5321 4.5.3.2), and how
/// long its client waits for a delivery: the one place a session's
/// timeouts are read, so that a policy that shortens them (under load,
/// say) has one place to go. (Delivery bounds its own steps, pipes and
/// mbox locks, within the deadline it is given.)
#[derive(Debug, Clone)]
pub struct Deadlines {
    command: Duration,
    data_block: Duration,
    data_total: Duration,
    delivery: Duration,
    /// While the server is under pressure (`stressed`), the waits for a
    /// command and for a data block are at most `stress`.
    stress: Duration,
    stressed: Arc<AtomicBool>,
}

impl Deadlines {
    pub fn new(t: &Timeouts, stressed: Arc<AtomicBool>) -> Deadlines {
        Deadlines {
            command: t.command,
            data_block: t.data_block,
            data_total: t.data_total,
            delivery: t.delivery,
            stress: t.stress_command,
            stressed,
        }
    }

    fn under_stress(&self, d: Duration) -> Duration {
        if self.stressed.load(Ordering::Relaxed) {
            d.min(self.stress)
        } else {
            d
        }
    }

    /// By when the next command line must have arrived.
    pub fn command(&self) -> Instant {
        Instant::now() + self.under_stress(self.command)
    }

    /// By when a TLS handshake must be done.
    pub fn handshake(&self) -> Instant {
        self.command()
    }

    /// How long one write of replies may wait for the client to read.
    pub fn write(&self) -> Duration {
        self.command
    }

    /// By when a whole DATA body, or all the chunks of one BDAT body, must
    /// have arrived.
    pub fn transfer(&self) -> Instant {
        Instant::now() + self.data_total
    }

    /// How long one read of message data may wait.
    pub fn data_block(&self) -> Duration {
        self.under_stress(self.data_block)
    }

    /// By when an accepted message must be delivered, while its client
    /// waits for the reply to its final dot.
    pub fn delivery(&self) -> Instant {
        Instant::now() + self.delivery
    }
}

/// Why a session ended early.
#[derive(Debug)]
pub enum Stop {
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

pub enum Line {
    /// The line without its line end, as a range of the read buffer.
    Complete(Range<usize>),
    TooLong,
    /// Nothing to read now, and the connection is better given back to
    /// the poll (see [`Conn::read_line`]).
    Idle,
}

/// A worker waiting on its own connection for the next command keeps
/// it at most this long before giving it back to the poll.
pub const IDLE_SPELL: Duration = Duration::from_millis(250);
/// While it waits, it looks this often whether another connection
/// needs a worker.
const SLICE: Duration = Duration::from_millis(20);
/// Even when another connection needs a worker, a client that answers
/// within this long keeps it: a busy client's next command is usually
/// on its way, and a hand-back costs two thread switches.
const QUICK: Duration = Duration::from_millis(2);
/// The most a farewell (`421`) may wait for the client to read.
const FAREWELL_WRITE: Duration = Duration::from_secs(5);

/// The client's byte stream: as accepted, or TLS over it.
enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Only while one is swapped for the other.
    Swapping,
}

impl<S: AsRawFd> Stream<S> {
    fn fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls(t) => t.as_raw_fd(),
            Stream::Swapping => unreachable!("a failed swap ends the session"),
        }
    }
}

impl<S: Transport> Stream<S> {
    fn transport(&mut self) -> &mut dyn Transport {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut **t,
            Stream::Swapping => unreachable!("a failed swap ends the session"),
        }
    }
}

/// Buffered, bounded IO over a transport.
pub struct Conn<S> {
    stream: Stream<S>,
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    framer: LineFramer,
    deadlines: Deadlines,
    /// By when the command being waited for must have arrived; kept
    /// while the connection is parked.
    command_by: Option<Instant>,
    /// A write timed out: nothing more is written, not even a farewell.
    write_failed: bool,
    /// No reply goes out and no command is read before then (a client
    /// past its error limit).
    hold: Option<Instant>,
}

/// A connection between commands, without a worker: what it had read of
/// the next command, and its stream, framer and deadlines.
pub struct Parked<S> {
    stream: Stream<S>,
    leftover: Vec<u8>,
    framer: LineFramer,
    deadlines: Deadlines,
    command_by: Option<Instant>,
    /// Replies held back until `hold`.
    wbuf: Vec<u8>,
    hold: Option<Instant>,
}

impl<S: std::os::fd::AsRawFd> Parked<S> {
    /// The socket to watch for input.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.stream.fd()
    }
}

impl<S> Parked<S> {
    /// By when its next command must arrive.
    pub fn deadline(&self) -> Option<Instant> {
        self.command_by
    }

    /// When it is to go on by itself, whatever its client does: its
    /// replies are held back until then.
    pub fn wake_at(&self) -> Option<Instant> {
        self.hold
    }

    /// The connection again, reading into `rbuf` (a worker's).
    pub fn resume(self, rbuf: Box<[u8]>) -> Conn<S> {
        let mut rbuf = rbuf;
        let size = READ_BUFFER.max(self.framer.limit());
        if rbuf.len() < size.max(self.leftover.len()) {
            rbuf = vec![0; size.max(self.leftover.len())].into_boxed_slice();
        }
        rbuf[..self.leftover.len()].copy_from_slice(&self.leftover);
        Conn {
            stream: self.stream,
            end: self.leftover.len(),
            rbuf,
            start: 0,
            wbuf: self.wbuf,
            framer: self.framer,
            deadlines: self.deadlines,
            command_by: self.command_by,
            write_failed: false,
            hold: self.hold,
        }
    }
}

impl<S: Transport> Conn<S> {
    /// A connection reading into `rbuf` (a worker's, kept from one session
    /// to the next; resized if it cannot hold the longest line).
    pub fn new(stream: S, max_line: usize, mut rbuf: Box<[u8]>, deadlines: Deadlines) -> Conn<S> {
        let size = READ_BUFFER.max(max_line);
        if rbuf.len() != size {
            rbuf = vec![0; size].into_boxed_slice();
        }
        Conn {
            stream: Stream::Plain(stream),
            rbuf,
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(1024),
            framer: LineFramer::new(max_line),
            deadlines,
            command_by: None,
            write_failed: false,
            hold: None,
        }
    }

    /// Holds back the replies from now on, and the reading of the next
    /// command, for `d`.
    pub fn hold_for(&mut self, d: Duration) {
        if !d.is_zero() {
            self.hold = Some(Instant::now() + d);
        }
    }

    /// Gives the connection up between commands: what was read of the
    /// next command is kept, and so are replies not sent yet (the caller
    /// sends them first, [`Conn::flush_unless_held`], unless they are held
    /// back). The read buffer goes back to the worker.
    pub fn park(mut self) -> (Parked<S>, Box<[u8]>) {
        if self.hold.is_some_and(|t| t <= Instant::now()) {
            self.hold = None;
        }
        if self.hold.is_none() {
            // Parked to wait for a command: by when it must come.
            let by = self.deadlines.command();
            self.command_by.get_or_insert(by);
        }
        let leftover = self.buffered().to_vec();
        let parked = Parked {
            stream: self.stream,
            leftover,
            framer: self.framer,
            deadlines: self.deadlines,
            command_by: self.command_by,
            wbuf: std::mem::take(&mut self.wbuf),
            hold: self.hold,
        };
        (parked, self.rbuf)
    }

    /// Sends the replies owed, unless they are held back.
    pub fn flush_unless_held(&mut self) -> Result<(), Stop> {
        if self.hold.is_some_and(|t| t > Instant::now()) {
            return Ok(());
        }
        self.flush()
    }

    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    /// Ends the connection (a TLS session with its close_notify, as far as
    /// the client still reads) and gives back the read buffer.
    pub fn close(mut self) -> Box<[u8]> {
        let _ = self.flush_within(FAREWELL_WRITE);
        if let (Stream::Tls(t), false) = (&mut self.stream, self.write_failed) {
            let _ = t.set_write_timeout(FAREWELL_WRITE);
            t.close();
        }
        self.rbuf
    }

    /// What has been read and not used yet.
    pub fn buffered(&self) -> &[u8] {
        &self.rbuf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more input, first sending any replies owed: this is the one
    /// place where the driver may block for its client, so it is where
    /// replies go out.
    fn fill(&mut self) -> Result<(), Stop> {
        self.flush()?;
        if self.end == self.rbuf.len() {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.stream.transport().read(&mut self.rbuf[self.end..]) {
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

    /// Reads more input by `deadline`, waiting at most `block` for any
    /// one read.
    pub fn fill_by(&mut self, deadline: Instant, block: Duration) -> Result<(), Stop> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Stop::Timeout);
        }
        self.stream.transport().set_read_timeout(left.min(block))?;
        self.fill()
    }

    /// The next command line, by the command deadline. A line over the
    /// limit is read to its end and dropped.
    ///
    /// With `park` (the server's connections; not `-bs`), a connection
    /// with nothing to read is not waited on for long: [`Line::Idle`] as
    /// soon as `park()` says another connection waits for a worker, or
    /// after [`IDLE_SPELL`], so that the caller can give it back to the
    /// poll. The replies owed are sent first.
    pub fn read_line(&mut self, park: Option<&dyn Fn() -> bool>) -> Result<Line, Stop> {
        if let Some(until) = self.hold {
            let now = Instant::now();
            if until > now {
                if park.is_some() {
                    return Ok(Line::Idle);
                }
                std::thread::sleep(until - now);
            }
            self.hold = None;
        }
        let deadline = *self
            .command_by
            .get_or_insert_with(|| self.deadlines.command());
        loop {
            match self.framer.ingest(&self.rbuf[self.start..self.end]) {
                Frame::Line { line, used } => {
                    let at = self.start;
                    self.consume(used);
                    self.command_by = None;
                    // Consumed, but in place until the next read.
                    return Ok(Line::Complete(at + line.start..at + line.end));
                }
                Frame::TooLong { used } => {
                    self.consume(used);
                    self.command_by = None;
                    return Ok(Line::TooLong);
                }
                Frame::NeedMore { used } => {
                    self.consume(used);
                    if let Some(park) = park {
                        if self.idle(park, deadline)? {
                            return Ok(Line::Idle);
                        }
                    }
                    self.fill_by(deadline, Duration::MAX)?;
                }
            }
        }
    }

    /// Waits a little for input; true if the connection is to be parked.
    fn idle(&mut self, park: &dyn Fn() -> bool, deadline: Instant) -> Result<bool, Stop> {
        self.flush()?;
        let since = Instant::now();
        loop {
            let stream = self.stream.transport();
            if stream.has_buffered() {
                return Ok(false);
            }
            let waited = since.elapsed();
            let wanted = park();
            if waited >= IDLE_SPELL || (wanted && waited >= QUICK) {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stop::Timeout);
            }
            let slice = if wanted { QUICK - waited } else { SLICE };
            if stream.wait_readable(slice.min(left))? {
                return Ok(false);
            }
        }
    }

    pub fn line(&self, range: Range<usize>) -> &[u8] {
        &self.rbuf[range]
    }

    /// Queues a reply; a client that pipelines more than a buffer's worth
    /// of commands without reading gets them written now.
    pub fn queue(&mut self, reply: &Reply, enhanced: bool) -> Result<(), Stop> {
        reply.write_to(&mut self.wbuf, enhanced);
        if self.wbuf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the replies owed, all of them within the write timeout
    /// however slowly the client reads.
    pub fn flush(&mut self) -> Result<(), Stop> {
        self.flush_within(self.deadlines.write())
    }

    /// Sends the replies owed within `limit` in all. After a write that
    /// timed out nothing more is written.
    fn flush_within(&mut self, limit: Duration) -> Result<(), Stop> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if self.write_failed {
            return Err(Stop::Timeout);
        }
        let deadline = Instant::now() + limit;
        let stream = self.stream.transport();
        let mut sent = 0;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(Stop::Timeout);
            }
            if let Err(e) = stream.set_write_timeout(left) {
                break Err(e.into());
            }
            if sent == self.wbuf.len() {
                break stream.flush().map_err(Stop::from);
            }
            match stream.write(&self.wbuf[sent..]) {
                Ok(0) => break Err(Stop::Closed),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e.into()),
            }
        };
        self.wbuf.clear();
        if matches!(result, Err(Stop::Timeout)) {
            self.write_failed = true;
        }
        result
    }

    /// Replaces the plain stream with a TLS session over it, by the
    /// handshake deadline. Whatever the client sent after the command that
    /// asked for TLS is dropped unread: it came in the clear and must not
    /// be taken as said over TLS (the STARTTLS injection of CVE-2011-0411).
    pub fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        peer: &dyn std::fmt::Display,
    ) -> Result<TlsInfo, Stop> {
        self.flush()?;
        let dropped = self.buffered().len();
        if dropped > 0 {
            log::info!("[{peer}]: {dropped} octets sent before the TLS handshake dropped");
        }
        self.start = 0;
        self.end = 0;
        self.framer.reset();
        let Stream::Plain(sock) = std::mem::replace(&mut self.stream, Stream::Swapping) else {
            unreachable!("the session starts TLS only once");
        };
        match tls::accept(sock, config, self.deadlines.handshake()) {
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
