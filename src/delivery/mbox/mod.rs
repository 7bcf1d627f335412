//! mbox delivery in the mboxrd format: a `From <sender> <asctime>` line,
//! the message with LF line ends and every `^>*From ` line quoted with one
//! more `>`, and a blank line after it.
//!
//! The mailbox is locked the way mutt, mailx, Dovecot and procmail expect
//! ([`lock`]: a dot-lock and an fcntl lock).
//!
//! An append is two-phase, like a Maildir copy: [`prepare`] appends and
//! fsyncs with the mailbox still locked; [`Prepared::commit`] unlocks, and
//! [`Prepared::abort`] (or dropping it) truncates the mailbox back to its
//! old length first. A failed write truncates too, so a mailbox never keeps
//! half a message. Before anything is written the caller is handed the old
//! length to journal, so that a crash in between can be undone at the next
//! start ([`recover`], with the records of [`journal`]).

pub mod journal;
mod lock;

use super::{io_error, Body, DeliveryError};
use crate::smtp::trace::UnixTime;
use lock::{lock, DotLock};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How locking waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How long to try for the locks before failing temporarily.
    pub lock_wait: Duration,
    /// A dot-lock older than this is left over from a crash.
    pub stale_lock: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            lock_wait: Duration::from_secs(60),
            stale_lock: Duration::from_secs(300),
        }
    }
}

/// The `From ` line that starts a message (with its LF).
pub fn from_line(sender: &str, date: UnixTime) -> String {
    let sender = if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    };
    // A space would end the address for readers that split the line.
    let sender: String = sender
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    format!("From {sender} {}\n", crate::smtp::trace::asctime(date))
}

/// A copy appended and fsynced, with the mailbox still locked.
#[derive(Debug)]
pub struct Prepared {
    file: File,
    path: PathBuf,
    orig: u64,
    _lock: Option<DotLock>,
    done: bool,
}

/// Appends `from_line`, `prefix` and the whole of `body` to the mbox at
/// `path` (created 0600 if missing), and fsyncs it. `journal` is called
/// with the mailbox's length once it is locked and before anything is
/// written; if it fails, nothing is.
pub fn prepare(
    path: &Path,
    from_line: &str,
    prefix: &[u8],
    body: Body<'_>,
    opts: &Options,
    journal: &mut dyn FnMut(u64) -> Result<(), DeliveryError>,
) -> Result<Prepared, DeliveryError> {
    let (file, lock) = open_locked(path, true, opts)?;
    let mut file = file.expect("created if missing");
    let orig = file
        .seek(SeekFrom::End(0))
        .map_err(|e| io_error(&format!("{}", path.display()), &e))?;
    journal(orig)?;
    let prepared = Prepared {
        file,
        path: path.to_path_buf(),
        orig,
        _lock: lock,
        done: false,
    };
    if let Err(e) = append(&prepared.file, orig, from_line, prefix, body) {
        // Dropping it truncates the mailbox back.
        return Err(io_error(&format!("appending to {}", path.display()), &e));
    }
    Ok(prepared)
}

impl Prepared {
    /// Keeps the message and unlocks the mailbox.
    pub fn commit(mut self) {
        self.done = true;
    }

    /// Takes the message back out (the mailbox is still locked) and
    /// unlocks.
    pub fn abort(mut self) -> Result<(), DeliveryError> {
        self.done = true;
        self.truncate()
    }

    fn truncate(&self) -> Result<(), DeliveryError> {
        self.file
            .set_len(self.orig)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| {
                log::error!(
                    "{}: cannot truncate back to {} bytes: {e}",
                    self.path.display(),
                    self.orig
                );
                io_error(&format!("truncating {}", self.path.display()), &e)
            })
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.truncate();
        }
    }
}

/// What [`recover`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The mailbox has nothing past the journaled length.
    Clean,
    /// An unfinished message was cut off; this many bytes went.
    Truncated(u64),
    /// Something other than our message is there; left alone.
    Foreign(&'static str),
}

/// Undoes an append that a crash interrupted: if the mbox at `path` holds
/// more than `orig` bytes, and what follows starts with our `From ` line
/// and is the last message, the mailbox is cut back to `orig`. Runs under
/// the same locks as a delivery.
pub fn recover(
    path: &Path,
    orig: u64,
    from_line: &str,
    opts: &Options,
) -> Result<Recovery, DeliveryError> {
    let (file, _lock) = open_locked(path, false, opts)?;
    let Some(file) = file else {
        return Ok(Recovery::Clean);
    };
    let ctx = |e: io::Error| io_error(&format!("recovering {}", path.display()), &e);
    let len = file.metadata().map_err(ctx)?.len();
    if len <= orig {
        return Ok(Recovery::Clean);
    }
    let mut head = vec![0u8; from_line.len() + 2];
    let n = read_at_most(&file, orig, &mut head).map_err(ctx)?;
    let head = &head[..n];
    let skip = head.iter().take(2).take_while(|&&b| b == b'\n').count();
    let ours = head[skip..].starts_with(from_line.as_bytes())
        || from_line.as_bytes().starts_with(&head[skip..]);
    if !ours {
        return Ok(Recovery::Foreign(
            "the bytes after the journaled length are not our message",
        ));
    }
    // Inside an mboxrd message every `From ` line is quoted, so an
    // unquoted one after ours is the start of someone else's message.
    let start = orig + (skip + from_line.len()).min(n) as u64 - 1;
    if contains_from_line(&file, start).map_err(ctx)? {
        return Ok(Recovery::Foreign("another message follows it"));
    }
    file.set_len(orig)
        .and_then(|()| file.sync_data())
        .map_err(ctx)?;
    Ok(Recovery::Truncated(len - orig))
}

/// Opens the mbox (creating it when `create`; `None` if it is missing and
/// not to be created) and takes both locks. The file must be a regular
/// file with one link, reached without a symbolic link as its last
/// component, and still be the file at `path` once locked.
fn open_locked(
    path: &Path,
    create: bool,
    opts: &Options,
) -> Result<(Option<File>, Option<DotLock>), DeliveryError> {
    let ctx = |what: &str, e: &io::Error| io_error(&format!("{what} {}", path.display()), e);
    let deadline = Instant::now() + opts.lock_wait;
    let open = |new: bool| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(new)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
    };
    loop {
        let file = match open(false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok((None, None)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A new mailbox (in a new directory, made as a Maildir's
                // is), its directory entry made durable before it is used.
                let parent = super::maildir::parent_of(path);
                super::maildir::create_dirs(parent)
                    .map_err(|e| ctx("creating the directory of", &e))?;
                match open(true) {
                    Ok(f) => {
                        super::maildir::sync_dir(parent).map_err(|e| ctx("creating", &e))?;
                        f
                    }
                    // Made by someone else meanwhile: open that.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(ctx("creating", &e)),
                }
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(io_error(
                    &format!(
                        "{} is a symbolic link; refusing to follow it",
                        path.display()
                    ),
                    &e,
                ))
            }
            Err(e) => return Err(ctx("opening", &e)),
        };
        let meta = file.metadata().map_err(|e| ctx("checking", &e))?;
        let fail = |reason: String| {
            Err(DeliveryError {
                kind: super::Failure::Temporary,
                reason,
            })
        };
        if !meta.is_file() || meta.nlink() != 1 {
            return fail(format!(
                "{} must be a regular file with one link (an mbox), and is not",
                path.display()
            ));
        }
        // A mailbox someone else owns could be read by them: as Postfix's
        // safe_open, refuse it.
        let us = nix::unistd::geteuid().as_raw();
        if meta.uid() != us {
            return fail(format!(
                "{} belongs to uid {}, not to uid {us} that delivers to it",
                path.display(),
                meta.uid()
            ));
        }
        let lock = lock(path, &file, deadline, opts.stale_lock)?;
        // A mail reader may have replaced the mailbox while we waited.
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {
                return Ok((Some(file), lock))
            }
            _ if Instant::now() >= deadline => {
                return fail(format!(
                    "{} keeps being replaced while it is locked",
                    path.display()
                ))
            }
            _ => continue,
        }
    }
}

/// Writes one message at the end of `file` (whose length is `orig`), then
/// fsyncs. On error the file is cut back to `orig`.
fn append(
    file: &File,
    orig: u64,
    from_line: &str,
    prefix: &[u8],
    body: Body<'_>,
) -> io::Result<()> {
    let result = (|| {
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        // The message before must end with a blank line.
        let mut tail = [0u8; 2];
        let n = if orig >= 2 {
            read_at_most(file, orig - 2, &mut tail)?
        } else {
            0
        };
        let sep: &[u8] = match (orig, &tail[..n]) {
            (0, _) | (_, b"\n\n") => b"",
            (_, [_, b'\n']) => b"\n",
            _ => b"\n\n",
        };
        out.write_all(sep)?;
        out.write_all(from_line.as_bytes())?;
        let mut q = Quoter::default();
        q.feed(prefix, &mut out)?;
        let mut body = body.reader();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            q.feed(&buf[..n], &mut out)?;
        }
        q.finish(&mut out)?;
        out.flush()?;
        drop(out);
        file.sync_data()
    })();
    if result.is_err() {
        let _ = file.set_len(orig).and_then(|()| file.sync_data());
    }
    result
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many.
fn read_at_most(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// True if a line starting with `From ` begins after `offset`.
fn contains_from_line(file: &File, offset: u64) -> io::Result<bool> {
    const PATTERN: &[u8] = b"\nFrom ";
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = offset;
    // The bytes of PATTERN matched so far, carried across reads.
    let mut matched = 0;
    loop {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            return Ok(false);
        }
        for &b in &buf[..n] {
            matched = if b == PATTERN[matched] {
                matched + 1
            } else if b == b'\n' {
                1
            } else {
                0
            };
            if matched == PATTERN.len() {
                return Ok(true);
            }
        }
        pos += n as u64;
    }
}

/// The mboxrd quoting of a byte stream: one more `>` before every line
/// that matches `^>*From `, decided with bounded state however long the
/// run of `>` is. It also remembers whether the text ended with a line end.
#[derive(Debug)]
struct Quoter {
    /// At the start of a line, still deciding.
    deciding: bool,
    /// `>` seen at the start of this line.
    quotes: u64,
    /// Bytes of `From ` matched after them.
    matched: usize,
    last: u8,
}

impl Default for Quoter {
    fn default() -> Quoter {
        Quoter {
            deciding: true,
            quotes: 0,
            matched: 0,
            last: b'\n',
        }
    }
}

const FROM_: &[u8] = b"From ";

impl Quoter {
    fn feed(&mut self, mut input: &[u8], out: &mut impl Write) -> io::Result<()> {
        while !input.is_empty() {
            if !self.deciding {
                // Copy through to the end of the line.
                match input.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        out.write_all(&input[..=i])?;
                        input = &input[i + 1..];
                        self.deciding = true;
                        self.last = b'\n';
                    }
                    None => {
                        out.write_all(input)?;
                        self.last = input[input.len() - 1];
                        input = &[];
                    }
                }
                continue;
            }
            let b = input[0];
            if b == b'>' && self.matched == 0 {
                self.quotes += 1;
            } else if b == FROM_[self.matched] {
                self.matched += 1;
                if self.matched == FROM_.len() {
                    out.write_all(b">")?;
                    self.flush_pending(out)?;
                }
            } else {
                self.flush_pending(out)?;
                // Not consumed: it is the first byte of the rest of the line.
                continue;
            }
            input = &input[1..];
        }
        Ok(())
    }

    /// Writes what was held back while deciding and stops deciding.
    fn flush_pending(&mut self, out: &mut impl Write) -> io::Result<()> {
        const RUN: [u8; 64] = [b'>'; 64];
        let mut left = self.quotes;
        while left > 0 {
            let n = left.min(RUN.len() as u64) as usize;
            out.write_all(&RUN[..n])?;
            left -= n as u64;
        }
        out.write_all(&FROM_[..self.matched])?;
        if self.quotes > 0 || self.matched > 0 {
            self.last = if self.matched > 0 {
                FROM_[self.matched - 1]
            } else {
                b'>'
            };
        }
        self.quotes = 0;
        self.matched = 0;
        self.deciding = false;
        Ok(())
    }

    /// Ends the message: held-back bytes, a line end if it lacked one, and
    /// the blank line that separates messages.
    fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if self.deciding && (self.quotes > 0 || self.matched > 0) {
            self.flush_pending(out)?;
        }
        if self.last != b'\n' {
            out.write_all(b"\n")?;
        }
        out.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::Spool;
    use lock::fcntl_lock;
    use std::time::SystemTime;

    fn quote(chunks: &[&[u8]]) -> Vec<u8> {
        let mut q = Quoter::default();
        let mut out = Vec::new();
        for c in chunks {
            q.feed(c, &mut out).unwrap();
        }
        q.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn mboxrd_quoting_whatever_the_chunking() {
        let input: &[u8] =
            b"From me\n>From you\nFrom\nFro\n>>>From x\n >From y\nxFrom z\n>\n>>\nFrom ";
        let want: &[u8] =
            b">From me\n>>From you\nFrom\nFro\n>>>>From x\n >From y\nxFrom z\n>\n>>\n>From \n\n";
        assert_eq!(quote(&[input]), want);
        for split in 0..input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(quote(&[a, b]), want, "split at {split}");
        }
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(quote(&bytewise), want);
        assert_eq!(quote(&[b"no newline"]), b"no newline\n\n");
        assert_eq!(quote(&[b"ends\n"]), b"ends\n\n");
        assert_eq!(quote(&[b">"]), b">\n\n");
        assert_eq!(quote(&[b""]), b"\n");
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mailroom-mbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn body(dir: &Path, text: &[u8]) -> Spool {
        crate::delivery::spool::prepare(&dir.join("spool")).unwrap();
        let mut s = Spool::create(&dir.join("spool")).unwrap();
        s.write(text).unwrap();
        s
    }

    fn opts() -> Options {
        Options {
            lock_wait: Duration::from_millis(300),
            stale_lock: Duration::from_secs(300),
        }
    }

    fn no_journal(_: u64) -> Result<(), DeliveryError> {
        Ok(())
    }

    /// Appends a short message to `path` without journaling it.
    fn append_to(path: &Path, b: &Spool) -> Result<Prepared, DeliveryError> {
        prepare(path, "From b\n", b"", b.body(), &opts(), &mut no_journal)
    }

    #[test]
    fn append_commit_and_abort() {
        let dir = tempdir("append");
        let mbox = dir.join("box");
        let b = body(&dir, b"Subject: x\n\nFrom here\n");
        let p = prepare(
            &mbox,
            "From a@b Thu Jan  1 00:00:00 1970\n",
            b"Return-Path: <a@b>\n",
            b.body(),
            &opts(),
            &mut no_journal,
        )
        .unwrap();
        assert!(dir.join("box.lock").exists(), "dot-locked while prepared");
        p.commit();
        assert!(!dir.join("box.lock").exists());
        let one =
            "From a@b Thu Jan  1 00:00:00 1970\nReturn-Path: <a@b>\nSubject: x\n\n>From here\n\n";
        assert_eq!(std::fs::read_to_string(&mbox).unwrap(), one);
        let mut seen = None;
        let p = prepare(&mbox, "From c@d x\n", b"", b.body(), &opts(), &mut |len| {
            seen = Some(len);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, Some(one.len() as u64));
        assert!(std::fs::read_to_string(&mbox).unwrap().len() > one.len());
        p.abort().unwrap();
        assert_eq!(std::fs::read_to_string(&mbox).unwrap(), one);
        // Dropping a prepared copy takes it back too.
        drop(
            prepare(
                &mbox,
                "From c@d x\n",
                b"",
                b.body(),
                &opts(),
                &mut no_journal,
            )
            .unwrap(),
        );
        assert_eq!(std::fs::read_to_string(&mbox).unwrap(), one);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&mbox).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_mailbox_without_a_final_blank_line_gets_one_first() {
        let dir = tempdir("sep");
        let mbox = dir.join("box");
        let b = body(&dir, b"x\n");
        for (before, after) in [
            ("From a\ny", "From a\ny\n\n"),
            ("From a\ny\n", "From a\ny\n\n"),
            ("From a\ny\n\n", "From a\ny\n\n"),
        ] {
            std::fs::write(&mbox, before).unwrap();
            append_to(&mbox, &b).unwrap().commit();
            assert_eq!(
                std::fs::read_to_string(&mbox).unwrap(),
                format!("{after}From b\nx\n\n")
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_failure_writes_nothing() {
        let dir = tempdir("journal");
        let mbox = dir.join("box");
        let b = body(&dir, b"x\n");
        let e = prepare(&mbox, "From b\n", b"", b.body(), &opts(), &mut |_| {
            Err(DeliveryError {
                kind: crate::delivery::Failure::Temporary,
                reason: "no journal".into(),
            })
        })
        .unwrap_err();
        assert_eq!(e.reason, "no journal");
        assert_eq!(std::fs::read(&mbox).unwrap(), b"");
        assert!(!dir.join("box.lock").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn locks_are_waited_for_and_stale_ones_broken() {
        let dir = tempdir("locks");
        let mbox = dir.join("box");
        let b = body(&dir, b"x\n");
        // A live holder (init) keeps it: a bounded wait, then a temporary
        // failure.
        std::fs::write(dir.join("box.lock"), "1\n").unwrap();
        let start = Instant::now();
        let e = append_to(&mbox, &b).unwrap_err();
        assert_eq!(e.kind, crate::delivery::Failure::Temporary);
        assert!(e.reason.contains("locked"), "{e}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        // A holder that is gone does not.
        let gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        let mut gone = gone;
        gone.wait().unwrap();
        std::fs::write(dir.join("box.lock"), format!("{pid}\n")).unwrap();
        append_to(&mbox, &b).unwrap().commit();
        // Nor does an old lock without a pid.
        std::fs::write(dir.join("box.lock"), "").unwrap();
        let f = File::options()
            .write(true)
            .open(dir.join("box.lock"))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(301))
            .unwrap();
        append_to(&mbox, &b).unwrap().commit();
        // Our own pid, in a lock we do not hold: left by an earlier process
        // that had our pid, so stale.
        std::fs::write(dir.join("box.lock"), format!("{}\n", std::process::id())).unwrap();
        append_to(&mbox, &b).unwrap().commit();
        // Held by another delivery of ours: waited for. The lock file holds
        // our pid and is never empty.
        let held = append_to(&mbox, &b).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("box.lock")).unwrap(),
            format!("{}\n", std::process::id())
        );
        let e = append_to(&mbox, &b).unwrap_err();
        assert!(e.reason.contains("locked"), "{e}");
        held.commit();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            2,
            "only the mbox and the spool directory are left"
        );
        // An fcntl lock held on another open file description is waited for.
        // (A test running beside this one that forks a child copies the
        // descriptors of the appends above until its exec, and with them
        // their locks: those moments are waited out.)
        let holder = File::options().read(true).write(true).open(&mbox).unwrap();
        let since = std::time::Instant::now();
        while !fcntl_lock(&holder).unwrap() {
            assert!(since.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let e = append_to(&mbox, &b).unwrap_err();
        assert!(e.reason.contains("locked"), "{e}");
        drop(holder);
        append_to(&mbox, &b).unwrap().commit();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlinks_and_hard_links_are_refused() {
        let dir = tempdir("links");
        let b = body(&dir, b"x\n");
        std::fs::write(dir.join("target"), "").unwrap();
        std::os::unix::fs::symlink(dir.join("target"), dir.join("sym")).unwrap();
        let e = append_to(&dir.join("sym"), &b).unwrap_err();
        assert!(e.reason.contains("symbolic link"), "{e}");
        std::fs::hard_link(dir.join("target"), dir.join("hard")).unwrap();
        let e = append_to(&dir.join("hard"), &b).unwrap_err();
        assert!(e.reason.contains("one link"), "{e}");
        assert_eq!(std::fs::read(dir.join("target")).unwrap(), b"");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recovery_cuts_off_an_unfinished_message_only() {
        let dir = tempdir("recover");
        let mbox = dir.join("box");
        let first = "From a x\nmessage one\n\n";
        let from = "From b y\n";
        std::fs::write(&mbox, format!("{first}{from}Subject: half")).unwrap();
        assert_eq!(
            recover(&mbox, first.len() as u64, from, &opts()).unwrap(),
            Recovery::Truncated(22)
        );
        assert_eq!(std::fs::read_to_string(&mbox).unwrap(), first);
        assert_eq!(
            recover(&mbox, first.len() as u64, from, &opts()).unwrap(),
            Recovery::Clean
        );
        // Not our From line: left alone.
        std::fs::write(&mbox, format!("{first}From c z\nother\n\n")).unwrap();
        assert!(matches!(
            recover(&mbox, first.len() as u64, from, &opts()).unwrap(),
            Recovery::Foreign(_)
        ));
        // Another message after ours: left alone.
        std::fs::write(&mbox, format!("{first}{from}half\n\nFrom c z\nother\n\n")).unwrap();
        assert!(matches!(
            recover(&mbox, first.len() as u64, from, &opts()).unwrap(),
            Recovery::Foreign(_)
        ));
        // A quoted From line inside ours is not another message.
        std::fs::write(&mbox, format!("{first}{from}>From inside\nhalf")).unwrap();
        assert!(matches!(
            recover(&mbox, first.len() as u64, from, &opts()).unwrap(),
            Recovery::Truncated(_)
        ));
        assert_eq!(
            recover(&dir.join("missing"), 0, from, &opts()).unwrap(),
            Recovery::Clean
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
