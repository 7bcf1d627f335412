//! How a local user's message gets into the queue without privileges and
//! without the daemon: the sendmail command drops one file into
//! `maildrop/`, and the daemon picks it up, now or when it next starts.
//!
//! The privilege boundary is the directory, not a program. `maildrop/` is
//! mode 3733 and belongs to the daemon's user: anyone may create a file in
//! it, nobody else may list it, read what others left there (files are
//! 0640 and take the directory's group, the daemon's, from its set-group-id
//! bit) or remove it (sticky bit). No set-uid or set-gid program is needed,
//! so nothing a user controls (environment, config file, arguments) ever
//! runs with rights the user lacks. Who sent a drop is the file's owner, as
//! the kernel records it: the daemon writes that uid into `Received:` and
//! ignores any claim the file makes. A drop is complete once its owner
//! execute bit is set (Postfix marks its queue files so), after which it is
//! fsynced; an incomplete one older than a day is an abandoned one.
//!
//! A drop is written as a queue file without records ([`Envelope`]), so
//! one reader checks both.

use super::envelope::{BadFile, Envelope, MAX_HEADER};
use super::filter::{self, Filters};
use super::store::{read_envelope, OpenError, Queue};
use crate::clock::{random, SYSTEM};
use crate::delivery::maildir::sync_dir;
use crate::delivery::Body;
use crate::smtp::address::Mailbox;
use crate::smtp::trace::{received_from_user, Clock};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The directory under the queue's.
pub const DIR: &str = "maildrop";
/// rwx-ws-wt: write and pass for all, list for the owner, the group
/// inherited, and each file removable only by its owner (and the daemon).
pub const MODE: u32 = 0o3733;
/// A file's mode while it is written, and once it is complete.
const WRITING: u32 = 0o640;
const COMPLETE: u32 = 0o740;
/// An incomplete drop this old was abandoned by its writer.
const ABANDONED: Duration = Duration::from_secs(86400);

/// Drops a message for the daemon: `env` (its id and arrival are the
/// daemon's to set) and the message. Durable when this returns; the
/// daemon may not be running.
pub fn drop_message(queue_dir: &Path, env: &Envelope, message: &[u8]) -> io::Result<String> {
    let name = format!("{:016x}{:016x}", random(), random());
    let path = queue_dir.join(DIR).join(&name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(WRITING)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)?;
        // The umask must not take the daemon's group read away.
        f.set_permissions(std::fs::Permissions::from_mode(WRITING))?;
        let mut out = io::BufWriter::with_capacity(64 * 1024, &mut f);
        out.write_all(env.encode().as_bytes())?;
        out.write_all(message)?;
        out.flush()?;
        drop(out);
        f.set_permissions(std::fs::Permissions::from_mode(COMPLETE))?;
        // The directory cannot be opened to fsync it (it cannot be read),
        // as with Postfix's maildrop; a new file's fsync also commits its
        // name on the journalling file systems in use.
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok(name),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// The names of the complete drops waiting, oldest first; abandoned ones,
/// and anything that is not a plain file, are removed.
pub fn waiting(queue: &Queue) -> io::Result<Vec<String>> {
    let dir = queue.dir().join(DIR);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            // A link, a FIFO or a directory is never a message, and only
            // its maker could ever have used it.
            log::warn!(
                "maildrop: removing {name} of uid {}: not a plain file",
                meta.uid()
            );
            let _ =
                std::fs::remove_file(entry.path()).or_else(|_| std::fs::remove_dir(entry.path()));
        } else if meta.mode() & 0o100 != 0 {
            found.push((meta.mtime(), name));
        } else if meta
            .modified()
            .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > ABANDONED)
        {
            log::info!("maildrop: removing {name}, abandoned by uid {}", meta.uid());
            let _ = std::fs::remove_file(entry.path());
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, n)| n).collect())
}

/// A complete drop, as `mailq` shows one while the daemon does not run.
pub struct Waiting {
    pub name: String,
    pub env: Envelope,
    /// When it was dropped (seconds since the epoch).
    pub dropped: i64,
}

/// The complete drops that can be read, oldest first, without taking or
/// removing anything.
pub fn peek(queue: &Queue) -> Vec<Waiting> {
    let Ok(entries) = std::fs::read_dir(queue.dir().join(DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<Waiting> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let meta = entry.metadata().ok().filter(|m| m.is_file())?;
            if meta.mode() & 0o100 == 0 {
                return None;
            }
            let file = File::open(entry.path()).ok()?;
            let (env, _) = read_envelope(&file, meta.len()).ok()?;
            Some(Waiting {
                name: entry.file_name().into_string().ok()?,
                env,
                dropped: meta.mtime(),
            })
        })
        .collect();
    found.sort_by_key(|w| w.dropped);
    found
}

/// Why a drop was not taken.
#[derive(Debug)]
pub enum Refused {
    /// It could not be read now; it stays.
    Io(io::Error),
    /// It is not a message: set aside, never to be tried again.
    Bad(String),
    /// A milter said to try again later; it stays.
    Later(String),
}

/// Takes complete drops into the queue, each stamped with its owner's
/// uid; for each name, its queue id or why it was not taken. The queue
/// files are fsynced one by one and their directory once, and only then
/// are the drops removed (their directory fsynced once too): a crash
/// before that leaves the drops to be taken again (a queue file whose
/// name was not yet durable is gone with it), and one after, the queue
/// files naming their drops (see [`forget`]).
pub fn pick_up(
    queue: &Queue,
    names: &[String],
    hostname: &str,
    max_size: u64,
    filters: Option<&Filters>,
) -> Vec<(String, Result<String, Refused>)> {
    let dir = queue.dir().join(DIR);
    let mut out: Vec<(String, Result<String, Refused>)> = names
        .iter()
        .map(|name| {
            let taken = take(queue, &dir, name, hostname, max_size, filters);
            (name.clone(), taken)
        })
        .collect();
    let taken: Vec<&str> = out
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(String::as_str))
        .collect();
    if taken.is_empty() {
        return out;
    }
    if let Err(e) = queue.sync(super::store::Place::Active) {
        // Not durable: taken back, and the drops stay to be taken later.
        for id in taken {
            let _ = std::fs::remove_file(queue.dir().join("active").join(id));
        }
        for (_, r) in &mut out {
            if r.is_ok() {
                *r = Err(Refused::Io(std::io::Error::new(e.kind(), e.to_string())));
            }
        }
        return out;
    }
    let mut removed = false;
    for (name, r) in &out {
        if r.is_ok() {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => removed = true,
                Err(e) => log::error!("maildrop: removing {name}, which is queued: {e}"),
            }
        }
    }
    if removed {
        if let Err(e) = sync_dir(&dir) {
            log::error!("maildrop: fsync after removing what was taken: {e}");
        }
    }
    out
}

/// Writes one drop into the queue (its file fsynced, its name not yet
/// durable), past the milters if there are any; a bad one is set aside.
fn take(
    queue: &Queue,
    dir: &Path,
    name: &str,
    hostname: &str,
    max_size: u64,
    filters: Option<&Filters>,
) -> Result<String, Refused> {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&path)
        .map_err(Refused::Io)?;
    let taken = check(&file, max_size).and_then(|(mut env, start, uid)| {
        let now = SYSTEM.now();
        env.id = SYSTEM.queue_id();
        env.arrived = now.secs;
        env.uid = Some(uid);
        env.drop = Some(name.to_string());
        let received = received_from_user(hostname, uid, &env.id, now);
        let mut body = Body::new(&file, start, env.size);
        let (records, rewritten) = match filters {
            None => (Vec::new(), None),
            Some(f) => match filter::run(f, &mut env, uid, body, now.secs) {
                filter::Outcome::Queue { records, rewritten } => (records, rewritten),
                filter::Outcome::Later(why) => return Err(Refused::Later(why)),
            },
        };
        if let Some(spool) = &rewritten {
            body = spool.body();
        }
        env.size = received.len() as u64 + body.len();
        queue
            .put_unsynced(&env, received.as_bytes(), body, &records)
            .map_err(Refused::Io)?;
        log::info!(
            "{}: picked up from uid {uid}: from=<{}>, {} recipients, {} octets",
            env.id,
            env.sender,
            env.recipients.len(),
            env.size
        );
        Ok(env.id)
    });
    if let Err(Refused::Bad(why)) = &taken {
        let owner = file.metadata().map(|m| m.uid()).unwrap_or(u32::MAX);
        log::warn!("maildrop: {name} from uid {owner} set aside: {why}");
        let _ = std::fs::rename(&path, queue.dir().join("corrupt").join(name));
    }
    taken
}

/// A drop's envelope, where its message starts, and its owner; checked
/// as coming from someone untrusted.
fn check(file: &File, max_size: u64) -> Result<(Envelope, u64, u32), Refused> {
    let meta = file.metadata().map_err(Refused::Io)?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(Refused::Bad("not a plain file with one name".into()));
    }
    let len = meta.len();
    if len > max_size.saturating_add(MAX_HEADER as u64) {
        return Err(Refused::Bad(format!("{len} octets is too large")));
    }
    let (env, start) = read_envelope(file, len).map_err(|e| match e {
        OpenError::Io(e) => Refused::Io(e),
        OpenError::Bad(BadFile(why)) => Refused::Bad(why),
    })?;
    if start + env.size != len {
        return Err(Refused::Bad(format!(
            "{len} octets, not the {} its envelope says",
            start + env.size
        )));
    }
    if env.size > max_size {
        return Err(Refused::Bad(format!(
            "the message is {} octets, more than {max_size}",
            env.size
        )));
    }
    if !env.sender.is_empty() {
        Mailbox::parse(&env.sender)
            .map_err(|e| Refused::Bad(format!("bad sender <{}>: {e}", env.sender)))?;
    }
    for r in &env.recipients {
        Mailbox::parse(&r.address)
            .map_err(|e| Refused::Bad(format!("bad recipient <{}>: {e}", r.address)))?;
    }
    Ok((env, start, meta.uid()))
}

/// Removes a drop that is in the queue now, durably, so that it is never
/// taken twice.
pub fn forget(dir: &Path, name: &str) {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => {
            if let Err(e) = sync_dir(dir) {
                log::error!("maildrop: fsync after removing {name}: {e}");
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::error!("maildrop: removing {name}, which is queued: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::Rcpt;
    use crate::queue::store::Place;

    fn env(rcpts: &[&str], size: u64) -> Envelope {
        Envelope {
            id: "drop".into(),
            arrived: 0,
            sender: "alice@box.example".into(),
            uid: Some(0),
            drop: None,
            ret: None,
            envid: None,
            recipients: rcpts.iter().map(|r| Rcpt::new(*r)).collect(),
            size,
        }
    }

    #[test]
    fn a_drop_is_picked_up_with_its_owner_and_leaves_the_maildrop() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::create(&dir.path().join("q")).unwrap();
        let text = b"Subject: hi\n\nhello\n";
        let name =
            drop_message(q.dir(), &env(&["bob@box.example"], text.len() as u64), text).unwrap();
        assert_eq!(waiting(&q).unwrap(), std::slice::from_ref(&name));
        let mut taken = pick_up(&q, std::slice::from_ref(&name), "box.example", 1000, None);
        let id = taken.pop().unwrap().1.unwrap();
        assert!(waiting(&q).unwrap().is_empty());
        let e = q.open(Place::Active, &id).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        // The file's claim (uid 0) is not believed.
        assert_eq!(e.env.uid, Some(me));
        assert_eq!(e.env.drop.as_deref(), Some(name.as_str()));
        let mut all = String::new();
        std::io::Read::read_to_string(&mut e.body().reader(), &mut all).unwrap();
        assert!(all.starts_with(&format!(
            "Received: by box.example (mailroom, from userid {me})\n\tid {id};"
        )));
        assert!(all.ends_with("\nSubject: hi\n\nhello\n"), "{all}");
    }

    #[test]
    fn bad_drops_are_set_aside_and_incomplete_ones_wait() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::create(&dir.path().join("q")).unwrap();
        let drops = q.dir().join(DIR);
        let write = |name: &str, text: &[u8], mode: u32| {
            std::fs::write(drops.join(name), text).unwrap();
            std::fs::set_permissions(drops.join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        };
        write("incomplete", b"mailroom-queue 1\n", 0o640);
        write("junk", b"hello\n", 0o740);
        let mut short = env(&["bob@box.example"], 100).encode().into_bytes();
        short.extend_from_slice(b"only a little");
        write("short", &short, 0o740);
        let mut bad_rcpt = env(&["bob@@box"], 1).encode().into_bytes();
        bad_rcpt.push(b'x');
        write("badrcpt", &bad_rcpt, 0o740);
        let mut big = env(&["bob@box.example"], 2000).encode().into_bytes();
        big.extend_from_slice(&[b'x'; 2000]);
        write("big", &big, 0o740);
        std::os::unix::fs::symlink("/etc/passwd", drops.join("link")).unwrap();

        let mut names = waiting(&q).unwrap();
        names.sort();
        assert_eq!(names, ["badrcpt", "big", "junk", "short"]);
        for (name, r) in pick_up(&q, &names, "h", 1000, None) {
            assert!(matches!(r, Err(Refused::Bad(_))), "{name}");
            assert!(q.dir().join("corrupt").join(&name).exists());
        }
        assert!(std::fs::symlink_metadata(drops.join("link")).is_err());
        assert!(drops.join("incomplete").exists());
        assert!(q.ids(Place::Active).unwrap().is_empty());
    }
}
