//! The daemon's local socket (`mailroom.sock` in the queue directory),
//! where anyone on the box may ask it to look in the maildrop now
//! (sendmail does, after a drop), to retry the queue (`mailq -q`, `queue
//! flush`), to read the queue again (after `queue hold`) or to list it
//! (`mailq`: the queue files themselves are the daemon's alone). None of
//! these changes mail, so none needs to know who asks. A reload
//! (`newaliases`) is taken only from root or the daemon's own user, known
//! by the socket's peer credentials. One line in, one answer out, served
//! one client at a time with short timeouts.

use crate::queue::{list, Queue, Wake};
use crossbeam_channel::Sender;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a client has to ask, and to take the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket (replacing one a previous run left) for everyone.
pub fn bind(queue_dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    let path = queue_dir.join(crate::queue::SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok((listener, path))
}

/// Serves the socket until the process ends.
pub fn serve(listener: UnixListener, queue_dir: PathBuf, wake: Sender<Wake>) {
    let queue = Queue::at(&queue_dir);
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if let Err(e) = answer(s, &queue, &wake) {
                    log::debug!("control socket: {e}");
                }
            }
            Err(e) => {
                log::error!("control socket: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn answer(stream: UnixStream, queue: &Queue, wake: &Sender<Wake>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(64)).read_line(&mut line)?;
    let reply = match line.trim_end() {
        "pickup" => poke(wake, Wake::Pickup),
        "flush" => poke(wake, Wake::Flush),
        "rescan" => poke(wake, Wake::Rescan),
        "list" => list::render(queue).unwrap_or_else(|e| format!("error: {e}\n")),
        "reload" => reload(&stream),
        other => format!("error: unknown request {other:?}\n"),
    };
    (&stream).write_all(reply.as_bytes())
}

/// The same reload as SIGHUP, by raising it, for root and the daemon's
/// own user.
fn reload(stream: &UnixStream) -> String {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let Ok(peer) = getsockopt(stream, PeerCredentials) else {
        return "error: the caller cannot be known\n".into();
    };
    let me = nix::unistd::geteuid().as_raw();
    if peer.uid() != 0 && peer.uid() != me {
        return "error: only root or the daemon's own user may ask for a reload\n".into();
    }
    log::info!("reload asked by uid {} (pid {})", peer.uid(), peer.pid());
    match nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP) {
        Ok(()) => "ok\n".into(),
        Err(e) => format!("error: {e}\n"),
    }
}

/// A full wake-up channel already holds a wake-up: the runner will look.
fn poke(wake: &Sender<Wake>, what: Wake) -> String {
    let _ = wake.try_send(what);
    "ok\n".into()
}
