//! A blocking TLS stream over any [`Transport`], for both sides: the
//! server's sessions ([`accept`]) and the relay client ([`connect`]).
//!
//! The stream does its own IO loop instead of `rustls::StreamOwned`, so
//! that each read and the handshake are bounded by one deadline however
//! slowly the peer sends its records: a timeout set for one read of
//! plaintext is the most that read may wait in all.

use super::Transport;
use crate::smtp::trace::TlsInfo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TLS session over a transport.
pub struct TlsStream<S> {
    conn: Connection,
    sock: S,
    /// How long one read of plaintext may take in all.
    read_timeout: Duration,
    /// By when what is being written must be sent, in all.
    write_by: Option<Instant>,
}

/// Runs the server side of a handshake over `sock`, by `deadline`. On
/// failure the client gets an alert where rustls has one to send.
pub fn accept<S: Transport>(
    sock: S,
    config: Arc<ServerConfig>,
    deadline: Instant,
) -> io::Result<TlsStream<S>> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    handshake(Connection::Server(conn), sock, deadline)
}

/// Runs the client side of a handshake with `name` over `sock`, by
/// `deadline`; the server's certificate is verified as `config` says.
pub fn connect<S: Transport>(
    sock: S,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    deadline: Instant,
) -> io::Result<TlsStream<S>> {
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    handshake(Connection::Client(conn), sock, deadline)
}

fn handshake<S: Transport>(
    conn: Connection,
    sock: S,
    deadline: Instant,
) -> io::Result<TlsStream<S>> {
    let mut s = TlsStream {
        conn,
        sock,
        read_timeout: Duration::MAX,
        write_by: None,
    };
    // Writes too are held to the deadline, however the peer paces its
    // reading.
    let send_by = |s: &mut TlsStream<S>| {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        s.sock.set_write_timeout(left)?;
        s.send()
    };
    while s.conn.is_handshaking() {
        send_by(&mut s)?;
        if !s.conn.is_handshaking() {
            break;
        }
        s.receive(deadline)?;
    }
    // TLS 1.3 session tickets, or the last flight of a TLS 1.2 handshake.
    send_by(&mut s)?;
    Ok(s)
}

impl<S: Transport> TlsStream<S> {
    /// What was negotiated.
    pub fn info(&self) -> TlsInfo {
        let version = self
            .conn
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS")
            .replace('_', ".");
        let cipher = self
            .conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .map_or_else(
                || "unknown".to_string(),
                // The IANA names: TLS13_AES_128_GCM_SHA256 is
                // TLS_AES_128_GCM_SHA256 there.
                |s| s.replacen("TLS13_", "TLS_", 1),
            );
        let key_exchange = self
            .conn
            .negotiated_key_exchange_group()
            .and_then(|g| g.name().as_str())
            .map(str::to_string);
        TlsInfo {
            version,
            cipher,
            key_exchange,
        }
    }

    /// Writes out every TLS record rustls has queued. A signal may cut a
    /// send short (sockets with a timeout are never restarted): go on.
    fn send(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if let Some(by) = self.write_by {
                let left = by.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.sock.set_write_timeout(left)?;
            }
            match self.conn.write_tls(&mut self.sock) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => {
                    other?;
                }
            }
        }
        self.sock.flush()
    }

    /// Tells the client the session ends (close_notify, RFC 8446 6.1),
    /// as far as it still reads.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.send();
    }

    /// Reads one batch of TLS records, waiting no later than `deadline`,
    /// and processes them. A protocol error sends the alert rustls owes.
    fn receive(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.sock.set_read_timeout(left)?;
        let n = loop {
            match self.conn.read_tls(&mut self.sock) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n == 0 && self.conn.is_handshaking() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.send();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(n)
    }
}

impl<S: Transport> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = Instant::now()
            .checked_add(self.read_timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365));
        loop {
            // Ok(0) after the client's close_notify; UnexpectedEof when the
            // connection ended without one.
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            self.send()?;
            self.receive(deadline)?;
        }
    }
}

impl<S: Transport> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // What earlier writes left queued goes first, so that rustls's
        // bounded buffer has room, and an error is reported before more
        // is taken.
        self.send()?;
        let n = self.conn.writer().write(buf)?;
        // These n octets are taken whatever happens now: a failure to send
        // them is reported by the next write or flush, never by retaking
        // them.
        let _ = self.send();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        let sent = self.send();
        // The deadline was for these writes; what rustls sends on its own
        // later (while reading) is not held to it.
        self.write_by = None;
        sent
    }
}

impl<S: std::os::fd::AsRawFd> std::os::fd::AsRawFd for TlsStream<S> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

impl<S: Transport> Transport for TlsStream<S> {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.read_timeout = t;
        Ok(())
    }

    fn has_buffered(&mut self) -> bool {
        // An error, or the peer's close_notify, is for a read to find and
        // report.
        self.conn.process_new_packets().map_or(true, |io| {
            io.plaintext_bytes_to_read() > 0 || io.peer_has_closed()
        })
    }

    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.write_by = Instant::now().checked_add(t);
        self.sock.set_write_timeout(t)
    }

    /// True only once a read has something to return: part of a record
    /// (or a record with no data, a KeyUpdate say) is taken in and waited
    /// on like silence, so that a client cannot hold a worker with it.
    fn wait_readable(&mut self, t: Duration) -> io::Result<bool> {
        if self.has_buffered() {
            return Ok(true);
        }
        if !self.sock.wait_readable(t)? {
            return Ok(false);
        }
        match self.conn.read_tls(&mut self.sock) {
            // The end of the stream, for a read to report.
            Ok(0) => Ok(true),
            Ok(_) => Ok(self.has_buffered()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(_) => Ok(true),
        }
    }
}
