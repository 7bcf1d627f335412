//! An SMTP session on standard input and output, for `sendmail -bs`
//! (mutt and some PHP setups speak SMTP to a sendmail child this way):
//! the same session and driver as a TCP client gets, with the local user
//! as the peer and whatever `delivery` the caller gives (the sendmail
//! front end gives one that drops into the maildrop).

use super::driver::{self, Buffers, Context};
use crate::config::Config;
use crate::delivery::Delivery;
use crate::net::Transport;
use crate::smtp::peer::Peer;
use crate::smtp::session::{Session, TlsPolicy};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Standard input and output as one stream. Reads wait at most the read
/// timeout the session sets, as on a socket (by poll: a pipe has no
/// timeout of its own); writes to the program that started this one are
/// not bounded.
struct Stdio {
    /// Standard input, unbuffered (the connection buffers).
    input: File,
    output: io::Stdout,
    read_timeout: Option<Duration>,
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(t) = self.read_timeout {
            let mut fds = [PollFd::new(self.input.as_fd(), PollFlags::POLLIN)];
            // Rounded up to whole milliseconds, so as not to wake early.
            let wait = PollTimeout::try_from(t + Duration::from_nanos(999_999))
                .unwrap_or(PollTimeout::MAX);
            match nix::poll::poll(&mut fds, wait) {
                Ok(0) => return Err(io::ErrorKind::TimedOut.into()),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Err(io::ErrorKind::Interrupted.into()),
                Err(e) => return Err(e.into()),
            }
        }
        self.input.read(buf)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

impl Transport for Stdio {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.read_timeout = Some(t);
        Ok(())
    }
    fn set_write_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// Runs one session on standard input and output, as user `uid`.
pub fn serve(config: Arc<Config>, delivery: Arc<dyn Delivery>, uid: u32, user: String) {
    let session = Session::new(
        Arc::new(config.session_settings()),
        &crate::clock::SYSTEM,
        Peer::Local { uid, user },
        TlsPolicy::default(),
    );
    let ctx = Context {
        config,
        delivery,
        shutdown: Arc::new(AtomicBool::new(false)),
        busy: Arc::new(AtomicBool::new(false)),
        tls: None,
        implicit_tls: false,
        stressed: Arc::default(),
        users: None,
        logins: Arc::default(),
        // Milters run in the daemon, not in a user's sendmail.
        milters: Vec::new(),
        local: None,
    };
    let input = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            log::error!("sendmail -bs: standard input: {e}");
            return;
        }
    };
    let stream = Stdio {
        input,
        output: io::stdout(),
        read_timeout: None,
    };
    driver::run(stream, session, &ctx, &mut Buffers::default());
}
