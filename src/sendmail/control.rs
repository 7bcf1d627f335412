//! `mailq`, `sendmail -q` and `mailroom queue`: the queue seen and
//! steered from the command line. Listing and retrying are asked of the
//! daemon over its socket, so that anyone may; when it does not run, the
//! queue is read directly by those who may read it (root, the daemon's
//! own user). Holding, releasing and deleting change queue files, which
//! only those may: they are done here, by rename or unlink (safe while
//! the daemon runs: it reads a file again before each attempt), and the
//! daemon is then told to read the queue again.

use super::{load_config, Fail, EX_NOINPUT, EX_NOPERM, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE};
use crate::config::Config;
use crate::queue::store::valid_id;
use crate::queue::{list as listing, Place, Queue, SOCKET};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Sends one request to the daemon and returns its answer.
pub fn ask(queue_dir: &Path, request: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(queue_dir.join(SOCKET))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut answer = String::new();
    s.take(64 << 20).read_to_string(&mut answer)?;
    if let Some(why) = answer.strip_prefix("error: ") {
        return Err(std::io::Error::other(why.trim_end().to_string()));
    }
    Ok(answer)
}

/// Why the daemon did not take a reload, as an exit code: `None` when it
/// does not run (nobody listens on its socket).
pub fn reload_refused(e: &std::io::Error) -> Option<u8> {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => None,
        // The socket's mode, or the daemon's own refusal: a reload is for
        // root and the daemon's user.
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::Other => Some(EX_NOPERM),
        _ => Some(EX_TEMPFAIL),
    }
}

/// `mailroom reload`: the running daemon reads its configuration again,
/// as on SIGHUP (a unit's `ExecReload=`, with no `kill` needed). The file
/// is checked first: a broken one is reported here and the daemon is
/// not asked, so that `systemctl reload` fails instead of the daemon
/// logging it and keeping the old one.
pub fn reload(config: &Config) -> Result<(), Fail> {
    let Err(e) = ask(&config.queue.dir, "reload") else {
        return Ok(());
    };
    let socket = config.queue.dir.join(SOCKET);
    Err(match reload_refused(&e) {
        None => Fail(
            EX_UNAVAILABLE,
            format!(
                "mailroom is not running (nobody answers on {})",
                socket.display()
            ),
        ),
        Some(code) => Fail(code, format!("the daemon did not reload: {e}")),
    })
}

/// `mailq`: the daemon's listing, or the queue read here.
pub fn list(config: &Config) -> Result<(), Fail> {
    let dir = &config.queue.dir;
    let text = match ask(dir, "list") {
        Ok(text) => text,
        Err(asked) => listing::render(&Queue::at(dir)).map_err(|e| {
            Fail(
                EX_TEMPFAIL,
                format!(
                    "the daemon cannot be asked ({asked}) and {} cannot be read: {e}",
                    dir.display()
                ),
            )
        })?,
    };
    print!("{text}");
    Ok(())
}

/// `sendmail -q`, `queue flush`: every message is tried now.
pub fn flush(config: &Config) -> Result<(), Fail> {
    ask(&config.queue.dir, "flush").map(drop).map_err(|e| {
        Fail(
            EX_TEMPFAIL,
            format!("the daemon cannot be asked to retry the queue ({e}): is mailroom running?"),
        )
    })
}

const QUEUE_USAGE: &str =
    "usage: mailroom queue [-C config] list | flush | delete ID... | hold ID... | release ID...";
const RELOAD_USAGE: &str = "usage: mailroom reload [-C config]";

/// `mailroom queue ...` and `mailroom reload`: the subcommand, then its
/// arguments.
pub fn main(command: &str, args: &[String]) -> ExitCode {
    let (name, usage) = match command {
        "reload" => ("mailroom reload", RELOAD_USAGE),
        _ => ("mailroom queue", QUEUE_USAGE),
    };
    // `-C FILE` may come anywhere.
    let mut config_path = None;
    let mut rest: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-C" || a == "--config" {
            match it.next() {
                Some(p) => config_path = Some(Path::new(p)),
                None => return super::finish(name, Err(Fail(EX_USAGE, usage.into()))),
            }
        } else {
            rest.push(a.clone());
        }
    }
    let done = load_config(config_path).and_then(|config| match (command, rest.as_slice()) {
        ("reload", []) => reload(&config),
        ("queue", [cmd]) if cmd == "list" => list(&config),
        ("queue", [cmd]) if cmd == "flush" => flush(&config),
        ("queue", [cmd, ids @ ..])
            if !ids.is_empty() && ["delete", "hold", "release"].contains(&cmd.as_str()) =>
        {
            change(&config, cmd, ids)
        }
        _ => Err(Fail(EX_USAGE, usage.into())),
    });
    super::finish(name, done)
}

/// Deletes, holds or releases messages by id.
fn change(config: &Config, cmd: &str, ids: &[String]) -> Result<(), Fail> {
    let queue = Queue::at(&config.queue.dir);
    if let Err(e) = queue.ids(Place::Active) {
        let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
            EX_NOPERM
        } else {
            EX_TEMPFAIL
        };
        return Err(Fail(
            code,
            format!(
                "cannot read the queue {} ({e}): only root and the daemon's own user may change it",
                config.queue.dir.display()
            ),
        ));
    }
    let mut missing = Vec::new();
    for id in ids {
        let place = match queue.find(id) {
            Some(p) if valid_id(id) => p,
            _ => {
                missing.push(id.as_str());
                continue;
            }
        };
        let result = match (cmd, place) {
            ("delete", p) => queue.remove(p, id),
            ("hold", Place::Active) => queue.moveto(id, Place::Active, Place::Hold),
            ("release", Place::Hold) => queue.moveto(id, Place::Hold, Place::Active),
            // Already where it is asked to be.
            _ => Ok(()),
        };
        if let Err(e) = result {
            let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
                EX_NOPERM
            } else {
                EX_TEMPFAIL
            };
            return Err(Fail(code, format!("{cmd} {id}: {e}")));
        }
        println!(
            "{id}: {}",
            match cmd {
                "delete" => "deleted",
                "hold" => "held",
                _ => "released",
            }
        );
    }
    // The daemon may not run; then it reads the queue when it starts.
    let _ = ask(&config.queue.dir, "rescan");
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Fail(
            EX_NOINPUT,
            format!("not in the queue: {}", missing.join(", ")),
        ))
    }
}
