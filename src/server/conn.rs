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
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    command: Duration,
    data_block: Duration,
    data_total: Duration,
    delivery: Duration,
}

impl Deadlines {
    pub fn new(t: &Timeouts) -> Deadlines {
        Deadlines {
            command: t.command,
            data_block: t.data_block,
            data_total: t.data_total,
            delivery: t.delivery,
        }
    }

    /// By when the next command line must have arrived.
    pub fn command(&self) -> Instant {
        Instant::now() + self.command
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
        self.data_block
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
}

/// The client's byte stream: as accepted, or TLS over it.
enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Only while one is swapped for the other.
    Swapping,
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
        }
    }

    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    /// Ends the connection (a TLS session with its close_notify, as far as
    /// the client still reads) and gives back the read buffer.
    pub fn close(mut self) -> Box<[u8]> {
        let _ = self.flush();
        if let Stream::Tls(t) = &mut self.stream {
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
    pub fn read_line(&mut self) -> Result<Line, Stop> {
        let deadline = self.deadlines.command();
        loop {
            match self.framer.ingest(&self.rbuf[self.start..self.end]) {
                Frame::Line { line, used } => {
                    let at = self.start;
                    self.consume(used);
                    // Consumed, but in place until the next read.
                    return Ok(Line::Complete(at + line.start..at + line.end));
                }
                Frame::TooLong { used } => {
                    self.consume(used);
                    return Ok(Line::TooLong);
                }
                Frame::NeedMore { used } => {
                    self.consume(used);
                    self.fill_by(deadline, Duration::MAX)?;
                }
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

    pub fn flush(&mut self) -> Result<(), Stop> {
        if !self.wbuf.is_empty() {
            let write = self.deadlines.write();
            let stream = self.stream.transport();
            stream.set_write_timeout(write)?;
            stream.write_all(&self.wbuf)?;
            stream.flush()?;
            self.wbuf.clear();
        }
        Ok(())
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
