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
use std::io::{self, Read, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Standard input and output as one stream. Their timeouts cannot be set:
/// the other end is a local program that started this one, and goes when
/// it closes its end.
struct Stdio {
    input: io::Stdin,
    output: io::Stdout,
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
    fn set_read_timeout(&mut self, _: Duration) -> io::Result<()> {
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
    };
    let stream = Stdio {
        input: io::stdin(),
        output: io::stdout(),
    };
    driver::run(stream, session, &ctx, &mut Buffers::default());
}
