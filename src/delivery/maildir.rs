//! Maildir delivery, the qmail way: the file created in `tmp/`, written
//! and fsynced, linked into `new/` under a unique name, and `new/` fsynced,
//! all before the caller may say 250. A reader never sees a partial message
//! in `new/`.
//!
//! The file in `tmp/` has no name where the file system allows it
//! (O_TMPFILE, linked into `new/` through `/proc/self/fd`): a crash then
//! leaves nothing behind at all, and on ext4 the copy costs about a quarter
//! less, with no `tmp/` entry to make, sync and remove. Elsewhere it is
//! created with O_EXCL under its unique name, and a crash leaves at most a
//! stray file in `tmp/`.
//!
//! The two halves are separate ([`prepare`], then [`Prepared::commit`]) so
//! that a message for several mailboxes is written everywhere before it is
//! made visible anywhere: if one copy cannot be written, none is delivered.

use super::{io_error, Body, DeliveryError};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A copy written and fsynced in `tmp/`, not yet visible. Dropping it
/// without committing removes the file.
#[derive(Debug)]
pub struct Prepared {
    dir: PathBuf,
    staged: Staged,
    new: PathBuf,
    done: bool,
}

/// Where the written copy waits for its commit.
#[derive(Debug)]
enum Staged {
    /// An O_TMPFILE: only this handle leads to it.
    Anonymous(File, Slot),
    /// A file of that name in `tmp/`.
    Named(PathBuf),
}

/// Copies staged without a name hold a file handle each until they are
/// committed; past this many at once, new ones are staged by name (which
/// holds none), so that a large list cannot run the server out of file
/// descriptors.
const MAX_ANONYMOUS: usize = 128;
static ANONYMOUS: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_ANONYMOUS`] places, given back when dropped.
#[derive(Debug)]
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        let taken = ANONYMOUS.fetch_add(1, Ordering::SeqCst);
        if taken < MAX_ANONYMOUS {
            Some(Slot)
        } else {
            ANONYMOUS.fetch_sub(1, Ordering::SeqCst);
            None
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        ANONYMOUS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Copies can be made without a name: `/proc` is there to link them by.
fn anonymous_possible() -> bool {
    static PROC: OnceLock<bool> = OnceLock::new();
    *PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Writes `prefix` followed by the whole of `body` as a new file in the
/// Maildir's `tmp/`, creating the Maildir if needed, and fsyncs it.
pub fn prepare(
    dir: &Path,
    prefix: &[u8],
    body: Body<'_>,
    hostname: &str,
) -> Result<Prepared, DeliveryError> {
    prepare_as(dir, prefix, body, hostname, anonymous_possible())
}

fn prepare_as(
    dir: &Path,
    prefix: &[u8],
    body: Body<'_>,
    hostname: &str,
    anonymous: bool,
) -> Result<Prepared, DeliveryError> {
    let size = prefix.len() as u64 + body.len();
    let tmp_dir = dir.join("tmp");
    let mut slot = if anonymous { Slot::take() } else { None };
    let mut attempts = 0;
    let (name, file) = loop {
        let name = unique_name(hostname, size);
        let opened = match &slot {
            Some(_) => match super::spool::nameless_file(&tmp_dir, false) {
                Ok(Some(f)) => Ok(f),
                // No O_TMPFILE here: the named way.
                Ok(None) => {
                    slot = None;
                    continue;
                }
                Err(e) => Err(e),
            },
            None => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp_dir.join(&name)),
        };
        match opened {
            Ok(f) => break (name, f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts == 0 => {
                create(dir)
                    .map_err(|e| io_error(&format!("creating Maildir {}", dir.display()), &e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 5 => {}
            Err(e) => {
                return Err(io_error(
                    &format!("creating a copy in {}", tmp_dir.display()),
                    &e,
                ))
            }
        }
        attempts += 1;
    };
    let written = owned_by_us(dir).and_then(|()| {
        write_and_sync(&file, prefix, body)
            .map_err(|e| io_error(&format!("writing a copy in {}", tmp_dir.display()), &e))
    });
    let staged = match slot {
        Some(slot) => Staged::Anonymous(file, slot),
        None => Staged::Named(tmp_dir.join(&name)),
    };
    let prepared = Prepared {
        dir: dir.to_path_buf(),
        staged,
        new: dir.join("new").join(&name),
        done: false,
    };
    // Dropped on failure, which removes a named copy.
    written.map(|()| prepared)
}

/// A Maildir that someone else owns could be read by them: as Postfix's
/// safe_open, refuse it.
fn owned_by_us(dir: &Path) -> Result<(), DeliveryError> {
    let owner = std::fs::metadata(dir)
        .map_err(|e| io_error(&format!("checking {}", dir.display()), &e))?
        .uid();
    let us = nix::unistd::geteuid().as_raw();
    if owner != us {
        return Err(DeliveryError {
            kind: super::Failure::Temporary,
            reason: format!(
                "{} belongs to uid {owner}, not to uid {us} that delivers to it",
                dir.display()
            ),
        });
    }
    Ok(())
}
impl Prepared {
    /// Links the copy into `new/` and fsyncs `new/`. On error nothing is
    /// left in `new/`.
    pub fn commit(mut self) -> Result<PathBuf, DeliveryError> {
        let linked = match &self.staged {
            Staged::Anonymous(file, _) => {
                use std::os::fd::AsRawFd;
                let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
                nix::unistd::linkat(
                    nix::fcntl::AT_FDCWD,
                    fd.as_str(),
                    nix::fcntl::AT_FDCWD,
                    &self.new,
                    nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                )
                .map_err(io::Error::from)
            }
            Staged::Named(tmp) => {
                let linked = std::fs::hard_link(tmp, &self.new);
                let _ = std::fs::remove_file(tmp);
                linked
            }
        };
        self.done = true;
        linked.map_err(|e| io_error(&format!("linking {}", self.new.display()), &e))?;
        let synced = File::open(self.dir.join("new")).and_then(|d| d.sync_all());
        if let Err(e) = synced {
            let _ = std::fs::remove_file(&self.new);
            return Err(io_error(&format!("syncing {}/new", self.dir.display()), &e));
        }
        Ok(self.new.clone())
    }

    /// Where the copy will be once committed.
    pub fn path(&self) -> &Path {
        &self.new
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // An anonymous copy goes with its handle.
        if let (false, Staged::Named(tmp)) = (self.done, &self.staged) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Takes back a committed copy (used when another copy of the same message
/// failed before the client was told 250). A copy a reader has already
/// moved on is left where it is.
pub fn revoke(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fn write_and_sync(mut file: &File, prefix: &[u8], body: Body<'_>) -> io::Result<()> {
    file.write_all(prefix)?;
    copy_body(body, file)?;
    file.sync_all()
}

/// Appends the message to `to` inside the kernel (sendfile with its own
/// offset: the file's position is left alone, and nothing is probed
/// first, as `io::copy` would).
fn copy_body(body: Body<'_>, mut to: &File) -> io::Result<()> {
    use nix::errno::Errno;
    let short = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the spooled message is shorter than it was",
        )
    };
    // off_t: 32 bits on 32-bit targets without large-file support, where a
    // body past 2 GiB fails here (EOVERFLOW) rather than being cut short.
    let start = body.start();
    let end = start + body.len();
    let mut offset = nix::libc::off_t::try_from(start)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    while (offset as u64) < end {
        let want = (end - offset as u64).min(1 << 30) as usize;
        match nix::sys::sendfile::sendfile(to, body.file(), Some(&mut offset), want) {
            Ok(0) => return Err(short()),
            Ok(_) | Err(Errno::EINTR) => {}
            // A kernel or file without sendfile between files (EINVAL for
            // one opened O_APPEND, say).
            Err(Errno::EINVAL | Errno::ENOSYS) if offset as u64 == start => {
                let copied = io::copy(&mut body.reader(), &mut to)?;
                return if copied == body.len() {
                    Ok(())
                } else {
                    Err(short())
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Files in `tmp/` older than this are leftovers of a crash (the Maildir
/// convention, qmail's maildir(5)).
pub const STALE_TMP: Duration = Duration::from_secs(36 * 3600);

/// Removes leftovers older than `age` from the Maildir's `tmp/`; returns
/// how many went. A missing Maildir has none.
pub fn clean_tmp(dir: &Path, age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("tmp")) else {
        return 0;
    };
    let now = SystemTime::now();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.metadata()
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() > age)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Creates `dir` with `cur`, `new` and `tmp`, mode 0700, durably.
pub fn create(dir: &Path) -> io::Result<()> {
    create_dirs(dir)?;
    for sub in ["cur", "new", "tmp"] {
        match DirBuilder::new().mode(0o700).create(dir.join(sub)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    sync_dir(dir)
}

/// Creates the missing directories of `path`, mode 0700, and fsyncs the
/// parent of each, so that what is delivered into them survives a crash.
pub fn create_dirs(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = path;
    loop {
        match std::fs::symlink_metadata(p) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p);
                match p.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for dir in missing.iter().rev() {
        match DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        sync_dir(parent_of(dir))?;
    }
    Ok(())
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, making the entries made in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `<secs>.M<usecs>P<pid>Q<seq>.<host>,S=<size>` (the Maildir naming of
/// qmail and Dovecot), with `/` and `:` in the host name escaped.
fn unique_name(hostname: &str, size: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{},S={}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        seq,
        host,
        size
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::Spool;

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn prepare_then_commit_delivers_into_new() {
        // Both ways: without a name in tmp/ (the usual), and named.
        for anonymous in [true, false] {
            prepare_then_commit(anonymous);
        }
    }

    fn prepare_then_commit(anonymous: bool) {
        let root = tempdir(if anonymous { "commit-anon" } else { "commit" });
        let mut spool = Spool::create(&root.join("spool")).unwrap();
        spool.write(b"Subject: x\n\nbody\n").unwrap();
        let md = root.join("a/Maildir");
        let prep = || {
            prepare_as(
                &md,
                b"Return-Path: <>\n",
                spool.body(),
                "host/x:y",
                anonymous,
            )
        };
        let (p1, p2) = (prep().unwrap(), prep().unwrap());
        assert_eq!(matches!(p1.staged, Staged::Anonymous(..)), anonymous);
        assert_eq!(
            (count(&md.join("tmp")), count(&md.join("new"))),
            (if anonymous { 0 } else { 2 }, 0),
            "nothing visible before commit"
        );
        let (n1, n2) = (p1.commit().unwrap(), p2.commit().unwrap());
        assert_ne!(n1, n2);
        assert_eq!(
            std::fs::read_to_string(&n1).unwrap(),
            "Return-Path: <>\nSubject: x\n\nbody\n"
        );
        let name = n1.file_name().unwrap().to_str().unwrap();
        assert!(name.contains(".host\\057x\\072y,S=33"), "{name}");
        assert_eq!((count(&md.join("tmp")), count(&md.join("new"))), (0, 2));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(md.join("new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_body_spooled_on_disk_is_copied_whole_for_each_copy() {
        let root = tempdir("on-disk");
        let mut spool = Spool::create(&root.join("spool")).unwrap();
        let line: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut body = Vec::new();
        while (body.len() as u64) <= crate::delivery::spool::IN_MEMORY * 2 {
            spool.write(&line).unwrap();
            spool.write(b"\n").unwrap();
            body.extend_from_slice(&line);
            body.push(b'\n');
        }
        let md = root.join("a/Maildir");
        for _ in 0..2 {
            let p = prepare_as(&md, b"X: y\n", spool.body(), "h", true).unwrap();
            let got = std::fs::read(p.commit().unwrap()).unwrap();
            assert_eq!(got.len(), body.len() + 5);
            assert!(got.starts_with(b"X: y\n") && got[5..] == body[..]);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_file_sendfile_cannot_write_to_gets_the_body_by_reading() {
        // sendfile refuses an O_APPEND output (EINVAL): the fallback.
        let root = tempdir("fallback");
        let mut spool = Spool::create(&root.join("spool")).unwrap();
        spool.write(b"Subject: x\n\nbody\n").unwrap();
        let path = root.join("out");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        copy_body(Body::new(spool.body().file(), 0, 17), &out).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"Subject: x\n\nbody\n");
        // A spool shorter than its length is an error either way.
        let err = copy_body(Body::new(spool.body().file(), 0, 18), &out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let plain = File::create(root.join("plain")).unwrap();
        let err = copy_body(Body::new(spool.body().file(), 0, 18), &plain).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_so_many_copies_hold_a_handle_at_once() {
        let root = tempdir("many");
        let spool = Spool::create(&root.join("spool")).unwrap();
        let md = root.join("a/Maildir");
        let held: Vec<Prepared> = (0..MAX_ANONYMOUS + 10)
            .map(|_| prepare_as(&md, b"x\n", spool.body(), "h", true).unwrap())
            .collect();
        let anonymous = held
            .iter()
            .filter(|p| matches!(p.staged, Staged::Anonymous(..)))
            .count();
        assert!(anonymous <= MAX_ANONYMOUS, "{anonymous}");
        assert!(count(&md.join("tmp")) >= 10, "the rest are named");
        for p in held {
            p.commit().unwrap();
        }
        assert_eq!(count(&md.join("new")), MAX_ANONYMOUS + 10);
        assert_eq!(count(&md.join("tmp")), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn dropping_a_prepared_copy_leaves_nothing() {
        for anonymous in [true, false] {
            let root = tempdir(if anonymous { "drop-anon" } else { "drop" });
            let spool = Spool::create(&root.join("spool")).unwrap();
            let md = root.join("a/Maildir");
            let p = prepare_as(&md, b"x\n", spool.body(), "h", anonymous).unwrap();
            let path = p.path().to_path_buf();
            drop(p);
            assert_eq!((count(&md.join("tmp")), count(&md.join("new"))), (0, 0));
            assert!(!path.exists());
            std::fs::remove_dir_all(&root).unwrap();
        }
    }

    #[test]
    fn a_maildir_under_a_file_fails_temporarily() {
        let root = tempdir("file");
        let spool = Spool::create(&root.join("spool")).unwrap();
        std::fs::write(root.join("plain"), b"").unwrap();
        let e = prepare(&root.join("plain/Maildir"), b"x\n", spool.body(), "h").unwrap_err();
        assert_eq!(e.kind, crate::delivery::Failure::Temporary);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn old_tmp_leftovers_are_cleaned_and_fresh_ones_kept() {
        let root = tempdir("clean");
        let md = root.join("Maildir");
        create(&md).unwrap();
        let old = md.join("tmp/old");
        std::fs::write(&old, b"x").unwrap();
        let f = File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(37 * 3600))
            .unwrap();
        std::fs::write(md.join("tmp/fresh"), b"y").unwrap();
        assert_eq!(clean_tmp(&md, STALE_TMP), 1);
        assert!(!old.exists() && md.join("tmp/fresh").exists());
        assert_eq!(clean_tmp(&root.join("missing"), STALE_TMP), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mailroom-maildir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
