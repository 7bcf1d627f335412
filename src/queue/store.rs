//! The queue on disk. Each queued message is one file: its envelope, the
//! message, then the records of what happened to its recipients, appended
//! as it happens. A file is written in `tmp/`, fsynced, and made visible by
//! a rename into `active/` and an fsync of that directory, as a Maildir
//! copy is; from then on it is only ever appended to (one write and one
//! fsync per attempt) and moved between `active/` and `hold/` by rename.
//! Nothing is rewritten in place, so a crash at any instant leaves either
//! the old state or the new one; a record torn by a crash is cut off when
//! the file is next opened.
//!
//! Only the daemon writes here: `tmp/`, `active/` and `hold/` are its
//! own (0700). Local users hand mail in through `maildrop/` (see
//! [`super::maildrop`]).

use super::envelope::{decode_records, BadFile, Envelope, Record, State, MAX_HEADER};
use crate::delivery::maildir::{create_dirs, sync_dir};
use crate::delivery::Body;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// The most of the records read back: far more than a message retried
/// every minute for a year writes.
const MAX_RECORDS: u64 = 16 << 20;

/// Where a queued message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Waiting for its next attempt.
    Active,
    /// Put aside by `mailroom queue hold`: never tried until released.
    Hold,
}

impl Place {
    fn dir(self) -> &'static str {
        match self {
            Place::Active => "active",
            Place::Hold => "hold",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
    /// Shared by every clone: the fsyncs of `active/` that sessions and
    /// the runner ask for at once are made as one.
    active: Arc<GroupSync>,
}

/// Group commit for one directory's fsync: whoever asks while one is
/// running waits for the next, which one of the waiters makes for all.
/// Each caller returns once an fsync that started after its own request
/// has succeeded, so its entries are durable; but concurrent callers pay
/// for one fsync, not one each.
#[derive(Debug, Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    done: Condvar,
    /// The directory, opened once.
    dir: std::sync::OnceLock<File>,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Requests so far, and the last one an fsync covered.
    asked: u64,
    covered: u64,
    running: bool,
}

impl GroupSync {
    fn sync(&self, dir: &Path) -> io::Result<()> {
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = lock();
        st.asked += 1;
        let mine = st.asked;
        loop {
            if st.covered >= mine {
                return Ok(());
            }
            if !st.running {
                st.running = true;
                let upto = st.asked;
                drop(st);
                let result = match self.dir.get() {
                    Some(d) => d.sync_all(),
                    None => File::open(dir).and_then(|d| {
                        d.sync_all()?;
                        let _ = self.dir.set(d);
                        Ok(())
                    }),
                };
                st = lock();
                st.running = false;
                if result.is_ok() {
                    st.covered = st.covered.max(upto);
                }
                self.done.notify_all();
                // A failure is this caller's; the others try for
                // themselves.
                result?;
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A queued message, open.
pub struct Entry {
    file: File,
    pub env: Envelope,
    /// Where the message starts in the file.
    start: u64,
    pub records: Vec<Record>,
    /// Where the next record goes.
    end: u64,
}

impl Queue {
    /// The queue in `dir`, without touching it (how `mailq` reads it).
    pub fn at(dir: &Path) -> Queue {
        Queue {
            dir: dir.to_path_buf(),
            active: Arc::default(),
        }
    }

    /// Creates the queue's directories if they are missing: the daemon's
    /// own 0700, and `maildrop/` where anyone may drop a file but nobody
    /// may list (see [`super::maildrop`]).
    pub fn create(dir: &Path) -> io::Result<Queue> {
        create_dirs(dir)?;
        let q = Queue::at(dir);
        // Others may pass through to the maildrop and the socket, and no
        // more.
        if owned_by_us(dir) {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
        }
        for sub in ["tmp", "active", "hold", "corrupt"] {
            make_dir(&dir.join(sub), 0o700)?;
        }
        let drop = dir.join(super::maildrop::DIR);
        make_dir(&drop, super::maildrop::MODE)?;
        if owned_by_us(&drop) {
            std::fs::set_permissions(
                &drop,
                std::fs::Permissions::from_mode(super::maildrop::MODE),
            )?;
        }
        sync_dir(dir)?;
        Ok(q)
    }

    /// Removes what a crash left in `tmp/`: it was never acknowledged.
    /// Only for the daemon, with the queue's lock held (another's files
    /// in `tmp/` are being written).
    pub fn clean(&self, _lock: &Lock) -> io::Result<()> {
        for entry in std::fs::read_dir(self.dir.join("tmp"))? {
            let path = entry?.path();
            log::info!("queue: removing {}, left by a crash", path.display());
            std::fs::remove_file(&path)?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, place: Place, id: &str) -> PathBuf {
        self.dir.join(place.dir()).join(id)
    }

    /// Queues a message: `env`, then `prefix` and `body` as its octets
    /// (`env.size` must be their length). Durable when this returns.
    pub fn put(&self, env: &Envelope, prefix: &[u8], body: Body<'_>) -> io::Result<()> {
        self.put_with(env, prefix, body, &[])
    }

    /// Queues a message with what is already known of its recipients.
    pub fn put_with(
        &self,
        env: &Envelope,
        prefix: &[u8],
        body: Body<'_>,
        records: &[Record],
    ) -> io::Result<()> {
        self.put_unsynced(env, prefix, body, records)?;
        self.sync(Place::Active)
    }

    /// Writes a message's file, fsynced, into `active/`, without making
    /// its name durable: [`Queue::sync`] does that, once for many.
    pub fn put_unsynced(
        &self,
        env: &Envelope,
        prefix: &[u8],
        body: Body<'_>,
        records: &[Record],
    ) -> io::Result<()> {
        debug_assert_eq!(env.size, prefix.len() as u64 + body.len());
        let tmp = self.dir.join("tmp").join(&env.id);
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut out = io::BufWriter::with_capacity(64 * 1024, &mut f);
            out.write_all(env.encode().as_bytes())?;
            out.write_all(prefix)?;
            io::copy(&mut body.reader(), &mut out)?;
            for r in records {
                out.write_all(r.encode().as_bytes())?;
            }
            out.flush()?;
            drop(out);
            f.sync_all()?;
            std::fs::rename(&tmp, self.path(Place::Active, &env.id))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Makes the names of the files put in `place` durable.
    pub fn sync(&self, place: Place) -> io::Result<()> {
        let dir = self.dir.join(place.dir());
        match place {
            Place::Active => self.active.sync(&dir),
            Place::Hold => sync_dir(&dir),
        }
    }

    /// Whether `place` has a message named `id`.
    pub fn holds(&self, place: Place, id: &str) -> bool {
        std::fs::symlink_metadata(self.path(place, id)).is_ok()
    }

    /// Opens a queued message; a record torn by a crash is cut off.
    pub fn open(&self, place: Place, id: &str) -> Result<Entry, OpenError> {
        let path = self.path(place, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(OpenError::Io)?;
        let len = file.metadata().map_err(OpenError::Io)?.len();
        let (env, start) = read_envelope(&file, len)?;
        let data_end = start + env.size;
        if data_end > len || len - data_end > MAX_RECORDS {
            return Err(OpenError::Bad(BadFile(format!(
                "{} octets, not the {data_end} its envelope says, and records",
                len
            ))));
        }
        let mut tail = vec![0u8; (len - data_end) as usize];
        file.read_exact_at(&mut tail, data_end)
            .map_err(OpenError::Io)?;
        let (records, good) = decode_records(&tail);
        let end = data_end + good as u64;
        if end < len {
            log::warn!(
                "{id}: cutting {} octets of a torn record off {}",
                len - end,
                path.display()
            );
            file.set_len(end).map_err(OpenError::Io)?;
            file.sync_all().map_err(OpenError::Io)?;
        }
        Ok(Entry {
            file,
            env,
            start,
            records,
            end,
        })
    }

    /// The ids of the messages in `place`, oldest first (ids sort by
    /// arrival).
    pub fn ids(&self, place: Place) -> io::Result<Vec<String>> {
        let mut ids: Vec<String> = std::fs::read_dir(self.dir.join(place.dir()))?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| valid_id(name))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Removes a message, durably (`queue delete`: a message deleted must
    /// not come back after a crash).
    pub fn remove(&self, place: Place, id: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(place, id))?;
        sync_dir(&self.dir.join(place.dir()))
    }

    /// Removes a message whose work is done. Not made durable: if a crash
    /// brings the file back, its records say everything is done, and it
    /// is removed again without anything being sent.
    pub fn remove_done(&self, id: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(Place::Active, id))
    }

    /// Moves a message between `active/` and `hold/`.
    pub fn moveto(&self, id: &str, from: Place, to: Place) -> io::Result<()> {
        std::fs::rename(self.path(from, id), self.path(to, id))?;
        sync_dir(&self.dir.join(to.dir()))
    }

    /// Puts a file that cannot be read as a queue file aside, where it
    /// stops the queue no more and an administrator can look at it.
    pub fn set_aside(&self, place: Place, id: &str) -> io::Result<()> {
        std::fs::rename(self.path(place, id), self.dir.join("corrupt").join(id))
    }

    /// Where a message is, if it is queued.
    pub fn find(&self, id: &str) -> Option<Place> {
        [Place::Active, Place::Hold]
            .into_iter()
            .find(|p| valid_id(id) && self.path(*p, id).exists())
    }
}

/// The queue's lock, held by the daemon while it runs: two runners on one
/// queue would each deliver what they find. Released when dropped (or
/// when the process ends, however it ends).
pub struct Lock {
    _held: nix::fcntl::Flock<File>,
}

impl Queue {
    /// Takes the queue's lock (`lock` in its directory), or says who may
    /// hold it.
    pub fn lock(&self) -> io::Result<Lock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join("lock"))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map(|held| Lock { _held: held })
            .map_err(|(_, e)| {
                if e == nix::errno::Errno::EWOULDBLOCK {
                    io::Error::other("another mailroom runs on this queue")
                } else {
                    io::Error::from(e)
                }
            })
    }
}

/// Envelopes are short: this much of a file is read first, and more (up
/// to [`MAX_HEADER`]) only for one that does not end in it, so that
/// opening a queue file does not read its message.
const ENVELOPE_READ: u64 = 8 * 1024;

/// The envelope at the top of a queue file (or a drop) `len` octets long,
/// and where the message after it starts.
pub fn read_envelope(file: &File, len: u64) -> Result<(Envelope, u64), OpenError> {
    let read = |n: u64| {
        let mut head = vec![0u8; n as usize];
        file.read_exact_at(&mut head, 0).map(|()| head)
    };
    let all = len.min(MAX_HEADER as u64);
    let head = read(all.min(ENVELOPE_READ)).map_err(OpenError::Io)?;
    let decoded = match Envelope::decode(&head) {
        Err(_) if all > head.len() as u64 => Envelope::decode(&read(all).map_err(OpenError::Io)?),
        other => other,
    };
    decoded
        .map(|(env, start)| (env, start as u64))
        .map_err(OpenError::Bad)
}

/// Queue ids are what [`crate::smtp::trace::queue_id`] makes: hex digits.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    match DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn owned_by_us(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw())
}

#[derive(Debug)]
pub enum OpenError {
    Io(io::Error),
    Bad(BadFile),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Io(e) => e.fmt(f),
            OpenError::Bad(b) => b.fmt(f),
        }
    }
}

impl Entry {
    /// The message, from its first octet (our `Received:` field).
    pub fn body(&self) -> Body<'_> {
        Body::new(&self.file, self.start, self.env.size)
    }

    pub fn state(&self) -> State {
        State::of(&self.env, &self.records)
    }

    /// Appends records and makes them durable: one write, one fsync.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let text: String = records.iter().map(Record::encode).collect();
        self.file.write_all_at(text.as_bytes(), self.end)?;
        self.file.sync_data()?;
        self.end += text.len() as u64;
        self.records.extend_from_slice(records);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::Rcpt;

    fn put(q: &Queue, id: &str, text: &[u8]) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(text).unwrap();
        let env = Envelope {
            id: id.into(),
            arrived: 1,
            sender: "a@b.example".into(),
            uid: None,
            drop: None,
            ret: None,
            envid: None,
            recipients: vec![Rcpt::new("c@d.example"), Rcpt::new("e@f.example")],
            size: 10 + text.len() as u64,
        };
        q.put(&env, b"Received: ", Body::new(&f, 0, text.len() as u64))
            .unwrap();
    }

    #[test]
    fn one_lock_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::create(&dir.path().join("q")).unwrap();
        let held = q.lock().unwrap();
        let again = q.lock().err().unwrap();
        assert!(again.to_string().contains("another mailroom"), "{again}");
        drop(held);
        q.lock().unwrap();
    }

    #[test]
    fn concurrent_syncs_of_active_all_return_once_covered() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::create(&dir.path().join("q")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        q.sync(Place::Active).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let st = q.active.state.lock().unwrap();
        assert_eq!(st.asked, 400);
        assert_eq!(st.covered, 400);
        assert!(!st.running);
    }

    #[test]
    fn a_message_is_queued_appended_to_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::create(&dir.path().join("q")).unwrap();
        put(&q, "0A", b"x\n\nbody\n");
        assert_eq!(q.ids(Place::Active).unwrap(), ["0A"]);
        let mut e = q.open(Place::Active, "0A").unwrap();
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut e.body().reader(), &mut all).unwrap();
        assert_eq!(all, b"Received: x\n\nbody\n");
        e.append(&[Record::Done { rcpt: 0, at: 5 }]).unwrap();
        e.append(&[Record::Done { rcpt: 1, at: 6 }]).unwrap();
        let again = q.open(Place::Active, "0A").unwrap();
        assert_eq!(again.records.len(), 2);
        assert!(again.state().finished());
        q.moveto("0A", Place::Active, Place::Hold).unwrap();
        assert_eq!(q.find("0A"), Some(Place::Hold));
        q.remove(Place::Hold, "0A").unwrap();
        assert_eq!(q.find("0A"), None);
    }

    #[test]
    fn an_envelope_longer_than_the_first_read_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::create(&dir.path().join("q")).unwrap();
        let text = b"Subject: many\n\nx\n";
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(text).unwrap();
        let env = Envelope {
            id: "0E".into(),
            arrived: 1,
            sender: "a@b.example".into(),
            uid: None,
            drop: None,
            ret: None,
            envid: None,
            recipients: (0..500)
                .map(|n| Rcpt::new(format!("recipient-{n}@d.example")))
                .collect(),
            size: text.len() as u64,
        };
        assert!(env.encode().len() as u64 > ENVELOPE_READ);
        q.put(&env, b"", Body::new(&f, 0, text.len() as u64))
            .unwrap();
        let e = q.open(Place::Active, "0E").unwrap();
        assert_eq!(e.env, env);
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut e.body().reader(), &mut all).unwrap();
        assert_eq!(all, text);
    }

    #[test]
    fn a_torn_record_is_cut_off_and_the_next_one_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::create(&dir.path().join("q")).unwrap();
        put(&q, "0B", b"body\n");
        let mut e = q.open(Place::Active, "0B").unwrap();
        e.append(&[Record::Done { rcpt: 0, at: 5 }]).unwrap();
        let path = q.path(Place::Active, "0B");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"done 1 7 #1234").unwrap();
        let mut e = q.open(Place::Active, "0B").unwrap();
        assert_eq!(e.records.len(), 1);
        e.append(&[Record::Done { rcpt: 1, at: 8 }]).unwrap();
        let e = q.open(Place::Active, "0B").unwrap();
        assert_eq!(e.records.len(), 2);
        assert!(e.state().finished());
    }

    #[test]
    fn leftovers_in_tmp_are_removed_and_junk_is_not_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("q");
        let q = Queue::create(&root).unwrap();
        std::fs::write(root.join("tmp/0C"), "half").unwrap();
        std::fs::write(root.join("active/.hidden"), "x").unwrap();
        std::fs::write(root.join("active/0D"), "not a queue file").unwrap();
        let q2 = Queue::create(&root).unwrap();
        let lock = q2.lock().unwrap();
        q2.clean(&lock).unwrap();
        assert!(!root.join("tmp/0C").exists());
        assert_eq!(q2.ids(Place::Active).unwrap(), ["0D"]);
        assert!(matches!(
            q.open(Place::Active, "0D"),
            Err(OpenError::Bad(_))
        ));
        q.set_aside(Place::Active, "0D").unwrap();
        assert!(q.ids(Place::Active).unwrap().is_empty());
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("active"), 0o700);
        assert_eq!(mode(""), 0o711);
        assert_eq!(mode("maildrop"), super::super::maildrop::MODE);
    }
}
