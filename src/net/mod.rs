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
    /// Whether input is waiting inside the transport (TLS plaintext not
    /// read yet), so that a read would not need the socket.
    fn has_buffered(&mut self) -> bool {
        false
    }
    /// Waits up to `t` for input; true if there is some (or the peer
    /// closed), false if `t` passed. A transport that cannot tell says
    /// true, and its next read blocks as usual.
    fn wait_readable(&mut self, _t: Duration) -> io::Result<bool> {
        Ok(true)
    }
}

/// Waits up to `t` for `fd` to be readable (or closed).
pub fn readable(fd: std::os::fd::BorrowedFd<'_>, t: Duration) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // Rounded up: a wait of less than a millisecond is not a poll that
    // returns at once.
    let ms = u16::try_from(t.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
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

impl std::os::fd::AsRawFd for Socket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.tcp.as_raw_fd()
    }
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
        if let Some(whole) = whole_seconds(self.read_timeout, t) {
            self.tcp.set_read_timeout(Some(whole))?;
            self.read_timeout = Some(whole);
        }
        Ok(())
    }
    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()> {
        if let Some(whole) = whole_seconds(self.write_timeout, t) {
            self.tcp.set_write_timeout(Some(whole))?;
            self.write_timeout = Some(whole);
        }
        Ok(())
    }
    fn wait_readable(&mut self, t: Duration) -> io::Result<bool> {
        use std::os::fd::AsFd;
        readable(self.tcp.as_fd(), t)
    }
}

/// The timeout to set for `t` in whole seconds, rounded up, unless the
/// one `set` is at most [`TIMEOUT_SLACK`] longer and can stay.
fn whole_seconds(set: Option<Duration>, t: Duration) -> Option<Duration> {
    let kept = set.is_some_and(|set| t <= set && set - t < TIMEOUT_SLACK);
    (!kept).then(|| Duration::from_secs(t.as_secs() + u64::from(t.subsec_nanos() > 0)))
}
