//! Byte streams with timeouts, for both directions of SMTP: the server's
//! sessions (`server`) and the relay client (`relay`). [`Transport`] is
//! what both drive: TCP ([`Socket`]), or TLS over it ([`tls`]).

pub mod tls;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A read may wait up to this much past its deadline, so that the socket's
/// timeout need not be set again before every read.
const TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// A byte stream with settable timeouts: TCP, or TLS over it.
pub trait Transport: Read + Write {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()>;
    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()>;
}

/// A TCP connection. Its read timeout is set in whole seconds and
/// kept while the one asked for is at most [`TIMEOUT_SLACK`] shorter, and
/// its write timeout is set only when it changes, so that the reads and
/// writes of a session (and of a TLS session over it) do not each cost a
/// system call to set them.
pub struct Socket {
    tcp: TcpStream,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Socket {
    pub fn new(tcp: TcpStream) -> Socket {
        Socket {
            tcp,
            read_timeout: None,
            write_timeout: None,
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
        if self.write_timeout != Some(t) {
            self.tcp.set_write_timeout(Some(t))?;
            self.write_timeout = Some(t);
        }
        Ok(())
    }
}
