//! What a crash can leave behind, and undoing it. An mbox append cut short
//! between its journal record and its commit was never confirmed to
//! anyone: it is cut back at the next start, or, if its mailbox is locked
//! then, before that mailbox is used again (until then nothing more is
//! appended there). A Maildir's `tmp/` may hold stale files: they are
//! removed at start for the Maildirs the configuration names, and at the
//! first delivery after it for the others (a system user's, say).
//!
//! It also keeps the journal's slots, so that a delivery's records and
//! their undoing are looked after in one place.

use super::mbox::journal::{self, Journal, Record, Slot};
use super::resolve::Directory;
use super::{helper, maildir, mbox, DeliveryError, Failure};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct Recovery {
    journal: Journal,
    /// Maildirs whose `tmp/` has been cleaned since the start.
    cleaned: Mutex<HashSet<PathBuf>>,
    /// Interrupted mbox appends not undone yet (journal file, record);
    /// shared with the configurations that replace this one.
    unfinished: Arc<Mutex<Vec<(PathBuf, Record)>>>,
}

impl Recovery {
    pub fn new(spool_dir: &Path) -> Recovery {
        Recovery {
            journal: Journal::new(journal::dir(spool_dir)),
            cleaned: Mutex::new(HashSet::new()),
            unfinished: Arc::default(),
        }
    }

    /// Takes over the interrupted appends still to be undone from the
    /// recovery this one replaces (on reload).
    pub fn inherit(&mut self, old: &Recovery) {
        self.unfinished = old.unfinished.clone();
    }

    /// At start-up, before any session: cleans the `tmp/` of `maildirs`
    /// and undoes every append a crash interrupted that can be undone now.
    pub fn at_start<'a>(
        &self,
        maildirs: impl Iterator<Item = &'a Path>,
        spool_dir: &Path,
        directory: &dyn Directory,
        opts: &mbox::Options,
    ) {
        for dir in maildirs {
            self.clean_once(dir);
        }
        *self.unfinished.lock().unwrap_or_else(|e| e.into_inner()) =
            journal::pending(&journal::dir(spool_dir));
        let _ = self.finish_interrupted(None, directory, opts);
    }

    /// True the first time this process sees a Maildir: its `tmp/` is
    /// to be cleaned.
    pub fn first_sight(&self, dir: &Path) -> bool {
        let mut cleaned = self.cleaned.lock().unwrap_or_else(|e| e.into_inner());
        !cleaned.contains(dir) && cleaned.insert(dir.to_path_buf())
    }

    /// Removes stale leftovers from a Maildir's `tmp/`, the first time.
    pub fn clean_once(&self, dir: &Path) {
        if !self.first_sight(dir) {
            return;
        }
        let n = maildir::clean_tmp(dir, maildir::STALE_TMP);
        if n > 0 {
            log::info!("{}: removed {n} stale files from tmp/", dir.display());
        }
    }

    /// Undoes the interrupted appends to `path` (all of them, for `None`).
    /// Until that has worked, nothing more may be appended there.
    pub fn finish_interrupted(
        &self,
        path: Option<&Path>,
        directory: &dyn Directory,
        opts: &mbox::Options,
    ) -> Result<(), DeliveryError> {
        let mut unfinished = self.unfinished.lock().unwrap_or_else(|e| e.into_inner());
        if unfinished.is_empty() {
            return Ok(());
        }
        let mut failed = None;
        unfinished.retain(|(file, record)| {
            if path.is_some_and(|p| p != record.path) {
                return true;
            }
            // An append made as a user is undone as that user, never by
            // root in a directory the user controls.
            let as_user = record
                .uid
                .filter(|&uid| uid != 0 && nix::unistd::geteuid().is_root());
            let result = match as_user.map(|uid| (uid, directory.account_by_uid(uid))) {
                Some((_, Some(a))) => helper::recover(&a, record, opts),
                Some((uid, None)) => Err(DeliveryError::new(
                    Failure::Temporary,
                    format!("uid {uid} has no account any more"),
                )),
                None => mbox::recover(&record.path, record.orig, &record.from_line, opts)
                    .map(|r| format!("{r:?}")),
            };
            match result {
                Ok(what) => {
                    log::warn!(
                        "{}: recovered an append interrupted at {} bytes: {what}",
                        record.path.display(),
                        record.orig
                    );
                    journal::done(file);
                    false
                }
                Err(e) => {
                    log::error!(
                        "{}: cannot recover an interrupted append yet: {e}",
                        record.path.display()
                    );
                    failed.get_or_insert(DeliveryError::new(
                        Failure::Temporary,
                        format!(
                            "{}: an append interrupted by a crash is not undone yet: {}",
                            record.path.display(),
                            e.reason
                        ),
                    ));
                    true
                }
            }
        });
        failed.map_or(Ok(()), Err)
    }

    /// A journal slot for one append.
    pub fn slot(&self) -> Result<Slot, DeliveryError> {
        self.journal.take()
    }

    /// Gives back a slot whose record is cleared.
    pub fn put(&self, slot: Slot) {
        self.journal.put(slot);
    }

    /// Clears a journal slot whose append is settled and gives it back.
    pub fn settle(&self, slot: Option<Slot>) {
        if let Some(mut s) = slot {
            match s.clear() {
                Ok(()) => self.journal.put(s),
                Err(e) => {
                    log::error!("{e}");
                    self.unfinish(Some(s));
                }
            }
        }
    }

    /// Keeps the record of an append whose outcome is not known, so that
    /// it is checked (and undone if it is there) before its mailbox is used
    /// again, or at the next start. A slot with no record (the append
    /// failed before it was journaled) goes back to the pool.
    pub fn unfinish(&self, slot: Option<Slot>) {
        let Some(slot) = slot else {
            return;
        };
        if slot.is_clear() {
            self.journal.put(slot);
        } else if let Some(entry) = slot.into_unfinished() {
            self.unfinished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(entry);
        }
    }
}
