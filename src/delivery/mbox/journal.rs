//! The mbox journal: before a message is appended to an mbox, where it
//! starts is written to a small file in the spool directory and fsynced;
//! once the append is committed (or taken back) the record is cleared. A
//! record still there at start-up belongs to a delivery that a crash cut
//! short and that no client was told 250 for, so the start-up cuts that
//! mailbox back ([`super::mbox::recover`]). A record whose mailbox cannot
//! be fixed at once (someone holds its lock) stays, and no message is
//! appended to that mailbox until it has been.
//!
//! Records live in a small pool of files, one per delivery in progress,
//! reused from one delivery to the next, so that a journaled append costs
//! two small fdatasyncs and no directory changes.

use super::super::{io_error, Account, DeliveryError};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static COUNTER: AtomicU64 = AtomicU64::new(0);
const MAGIC: &str = "mailroom-mbox-journal-1";
/// Largest record read back.
const MAX_RECORD: u64 = 64 * 1024;

/// One unfinished append: enough to find and undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub path: PathBuf,
    /// The mailbox's length before the append.
    pub orig: u64,
    /// The `From ` line the message starts with.
    pub from_line: String,
    /// The owner whose privileges the append ran with (`None`: the
    /// server's own).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Record {
    pub fn new(path: &Path, orig: u64, from_line: &str, account: Option<&Account>) -> Record {
        Record {
            path: path.to_path_buf(),
            orig,
            from_line: from_line.to_string(),
            uid: account.map(|a| a.uid),
            gid: account.map(|a| a.gid),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let id = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "{MAGIC} {} {} {} {} {}\n",
            id(self.uid),
            id(self.gid),
            self.orig,
            hex(self.path.as_os_str().as_bytes()),
            hex(self.from_line.as_bytes())
        )
        .into_bytes()
    }

    fn decode(text: &str) -> Option<Record> {
        let mut f = text.trim_end().split(' ');
        if f.next()? != MAGIC {
            return None;
        }
        let id = |s: &str| {
            if s == "-" {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        let uid = id(f.next()?)?;
        let gid = id(f.next()?)?;
        let orig = f.next()?.parse().ok()?;
        let path = PathBuf::from(std::ffi::OsString::from_vec(unhex(f.next()?)?));
        let from_line = String::from_utf8(unhex(f.next()?)?).ok()?;
        f.next().is_none().then_some(Record {
            path,
            orig,
            from_line,
            uid,
            gid,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The journal directory of a spool directory.
pub fn dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join("journal")
}

/// A pool of journal files in one directory.
pub struct Journal {
    dir: PathBuf,
    free: Mutex<Vec<Slot>>,
}

/// One journal file, holding at most one record.
#[derive(Debug)]
pub struct Slot {
    file: File,
    path: PathBuf,
    /// The record on disk, if any.
    record: Option<Record>,
}

impl Journal {
    pub fn new(dir: PathBuf) -> Journal {
        Journal {
            dir,
            free: Mutex::new(Vec::new()),
        }
    }

    /// A slot for one delivery; give it back with [`Journal::put`].
    pub fn take(&self) -> Result<Slot, DeliveryError> {
        if let Some(s) = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(s);
        }
        let fail = |e: io::Error| io_error(&format!("journal {}", self.dir.display()), &e);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(fail)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}.{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(fail)?;
        // The file's own directory entry must survive a crash before any
        // record in it matters.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
        Ok(Slot {
            file,
            path,
            record: None,
        })
    }

    /// Returns a cleared slot to the pool. A slot whose record could not
    /// be cleared is dropped with its file, for the next start to handle.
    pub fn put(&self, slot: Slot) {
        if slot.record.is_none() {
            self.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(slot);
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        for s in self
            .free
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = std::fs::remove_file(&s.path);
        }
    }
}

impl Slot {
    /// Writes the record and makes it durable.
    pub fn write(&mut self, record: &Record) -> Result<(), DeliveryError> {
        let bytes = record.encode();
        self.record = Some(record.clone());
        self.file
            .write_all_at(&bytes, 0)
            .and_then(|()| self.file.set_len(bytes.len() as u64))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error(&format!("journal {}", self.path.display()), &e))
    }

    /// Clears the record durably: the append it described is settled.
    pub fn clear(&mut self) -> Result<(), DeliveryError> {
        if self.record.is_none() {
            return Ok(());
        }
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error(&format!("journal {}", self.path.display()), &e))?;
        self.record = None;
        Ok(())
    }

    /// True when it holds no record.
    pub fn is_clear(&self) -> bool {
        self.record.is_none()
    }

    /// The record on disk, if any.
    pub fn record(&self) -> Option<Record> {
        self.record.clone()
    }

    /// The record it holds, with its file: for an append whose outcome is
    /// not known, to be undone before the mailbox is used again. The file
    /// stays for the next start if this process does not get to it.
    pub fn into_unfinished(self) -> Option<(PathBuf, Record)> {
        self.record.map(|r| (self.path, r))
    }
}

/// The records left in `dir` by an earlier process, with their files.
/// Empty and unreadable files are removed (nothing can be done with the
/// latter); the others stay until their appends are undone.
pub fn pending(dir: &Path) -> Vec<(PathBuf, Record)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let mut text = Vec::new();
        let read = File::open(&path)
            .and_then(|f| io::Read::read_to_end(&mut io::Read::take(f, MAX_RECORD), &mut text));
        match read {
            Ok(_) if text.is_empty() => {}
            Ok(_) => match std::str::from_utf8(&text).ok().and_then(Record::decode) {
                Some(r) => {
                    out.push((path, r));
                    continue;
                }
                None => log::error!("{}: not a journal record; removed", path.display()),
            },
            Err(e) => log::error!("{}: {e}; removed", path.display()),
        }
        let _ = std::fs::remove_file(&path);
    }
    out
}

/// Removes the file of a record whose append has been undone.
pub fn done(file: &Path) {
    let _ = std::fs::remove_file(file);
    if let Some(dir) = file.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_drain() {
        let dir = std::env::temp_dir().join(format!("mailroom-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let j = Journal::new(dir.clone());
        let r = Record {
            path: PathBuf::from("/var/mail/odd name\n"),
            orig: 1234,
            from_line: "From a@b Thu Jan  1 00:00:00 1970\n".into(),
            uid: Some(1000),
            gid: None,
        };
        let mut s = j.take().unwrap();
        s.write(&r).unwrap();
        let mut cleared = j.take().unwrap();
        cleared.write(&r).unwrap();
        cleared.clear().unwrap();
        j.put(cleared);
        // A slot with a record stays on disk even when its delivery gives up.
        drop(s);
        let left = pending(&dir);
        assert_eq!(left.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), [r]);
        // Empty files went; the record stays until it is done.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        done(&left[0].0);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(Record::decode("garbage"), None);
        drop(j);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
