//! Local delivery: recipients resolved from the configuration, the aliases
//! and the passwd database; copies written to Maildirs, mboxes and pipes
//! with the right privileges; and one decision per message.
//!
//! Every copy but a pipe's is two-phase: written and fsynced, then
//! committed or taken back. Pipes run first (they cannot be taken back,
//! and no mailbox is held locked while they run); then Maildir copies, then
//! mbox copies in the order of their paths (so that two deliveries never
//! wait for each other's locks). A mailbox gets one copy however many
//! recipients and paths lead to it. If all succeeded, all are committed. If
//! none did, the message fails with one reply. If some did, the others are
//! reported in a delivery status notification to the sender (the list
//! owner, for list members), itself prepared before anything is committed,
//! and the message is accepted. A null sender must never get one, and a
//! remote one cannot until mail can be relayed: then everything is taken
//! back and the reply tells the client, whose own server reports it. A copy
//! is never dropped without someone being told, and the whole delivery is
//! bounded by `timeouts.delivery`.

use super::aliases::Aliases;
use super::mbox::journal::{self, Journal, Record, Slot};
use super::resolve::{Directory, Passwd, Resolver};
use super::{
    dsn, helper, maildir, mbox, pipe, spool, Account, Delivery, DeliveryError, Dest, Failure,
    Lookup, Message, Recipient, RunAs, Target,
};
use crate::clock::SYSTEM;
use crate::config::{Config, Store};
use crate::smtp::address::{ForwardPath, Mailbox};
use crate::smtp::trace::Clock;
use std::cell::RefCell;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Local {
    config: Arc<Config>,
    aliases: Aliases,
    directory: Box<dyn Directory>,
    alias_privileges: RunAs,
    journal: Journal,
    /// Maildirs whose `tmp/` has been cleaned since the start.
    cleaned: Mutex<HashSet<PathBuf>>,
    /// Interrupted mbox appends not undone yet (journal file, record);
    /// shared with the configurations that replace this one.
    unfinished: Arc<Mutex<Vec<(PathBuf, Record)>>>,
}

/// A copy written and held, waiting for the decision.
enum Staged {
    Maildir(maildir::Prepared),
    Mbox(mbox::Prepared, Slot),
    Helper(helper::Staged, Option<Slot>),
}

/// A copy that failed, for the reply or a notification.
struct Failed {
    recipient: String,
    original: String,
    /// Who is told: the list owner or the message's sender.
    notify: String,
    status: &'static str,
    error: DeliveryError,
}

/// The notifications for a message's failed copies.
enum Notices {
    /// Written and held, to be committed with the message.
    Staged(Vec<Attempt>),
    /// To be written once the message's own copies are committed.
    Afterwards,
}

/// What trying every copy of one message gave.
#[derive(Default)]
struct Attempt {
    /// Copies written and held: (the recipient given, the copy, its state).
    staged: Vec<(String, Dest, Staged)>,
    failed: Vec<Failed>,
    /// Pipe deliveries that ran (and cannot be taken back).
    pipes: usize,
    /// The mailboxes of the first `.0` staged copies, by device and
    /// inode: the same ones however their paths are spelled. Worked out
    /// only when another copy is tried, so that a message with one copy
    /// costs no stat.
    held: RefCell<(usize, HashSet<FileId>)>,
}

impl Attempt {
    /// Whether one of the staged copies is in the mailbox `t`.
    fn holds(&self, t: &Target) -> bool {
        if self.staged.is_empty() {
            return false;
        }
        if self.staged.iter().any(|(_, d, _)| d.target == *t) {
            return true;
        }
        let mut held = self.held.borrow_mut();
        let (counted, ids) = &mut *held;
        for (_, d, _) in self.staged.get(*counted..).unwrap_or_default() {
            ids.extend(file_id(&d.target));
        }
        *counted = self.staged.len();
        file_id(t).is_some_and(|id| ids.contains(&id))
    }
}

/// A Maildir's or mbox's device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId(u64, u64);

/// The identity of the mailbox a target names, if it exists: one reached
/// through a symbolic link (Debian's /var/spool/mail is /var/mail) is the
/// same mailbox. An mbox that is a symbolic link itself is not followed:
/// delivery refuses it.
fn file_id(t: &Target) -> Option<FileId> {
    let meta = match t {
        Target::Maildir(dir) => std::fs::metadata(dir),
        Target::Mbox(path) => std::fs::symlink_metadata(path),
        Target::Pipe(_) | Target::Discard => return None,
    };
    meta.ok().map(|m| FileId(m.dev(), m.ino()))
}

impl Local {
    /// Loads the aliases file and works out whose privileges its files and
    /// pipes get: as root, the owner of the aliases file if that is not
    /// root, else `pipe_user` (never root); otherwise the server's own.
    pub fn new(config: Arc<Config>) -> Result<Local, String> {
        Local::with_directory(config, Box::new(Passwd))
    }

    pub fn with_directory(
        config: Arc<Config>,
        directory: Box<dyn Directory>,
    ) -> Result<Local, String> {
        let aliases = match &config.aliases {
            Some(path) => Aliases::load(path).map_err(|e| e.to_string())?,
            None => Aliases::default(),
        };
        let alias_privileges = if nix::unistd::geteuid().is_root() {
            let owner = config
                .aliases
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| m.uid());
            let account = match owner {
                0 => directory.account(&config.pipe_user),
                uid => directory.account_by_uid(uid),
            };
            match account {
                Some(a) if a.uid != 0 => RunAs::Account(a),
                _ => {
                    return Err(format!(
                        "pipe_user {:?}: no such account (alias files and pipes never run as root)",
                        config.pipe_user
                    ))
                }
            }
        } else {
            RunAs::Server
        };
        for w in aliases.warnings() {
            log::warn!("{w}");
        }
        if !aliases.is_empty() {
            log::info!("{} aliases loaded", aliases.len());
        }
        Ok(Local {
            journal: Journal::new(journal::dir(&config.spool_dir)),
            config,
            aliases,
            directory,
            alias_privileges,
            cleaned: Mutex::new(HashSet::new()),
            unfinished: Arc::default(),
        })
    }

    /// Takes over the interrupted appends still to be undone from the
    /// delivery this one replaces (on reload).
    pub fn inherit(&mut self, old: &Local) {
        self.unfinished = old.unfinished.clone();
    }

    fn resolver(&self) -> Resolver<'_> {
        Resolver {
            config: &self.config,
            aliases: &self.aliases,
            directory: self.directory.as_ref(),
            alias_privileges: self.alias_privileges.clone(),
            euid: nix::unistd::geteuid().as_raw(),
        }
    }

    fn mbox_options(&self) -> mbox::Options {
        mbox::Options {
            lock_wait: self.config.timeouts.mbox_lock,
            ..mbox::Options::default()
        }
    }

    /// Removes stale leftovers from the `tmp/` of the configured Maildirs,
    /// and undoes mbox appends that a crash interrupted. Run at start-up,
    /// before any session.
    pub fn recover(&self) {
        for mb in self.config.mailboxes.values() {
            if let Store::Maildir(dir) = &mb.store {
                if self.first_sight(dir) {
                    clean(dir);
                }
            }
        }
        *self.unfinished.lock().unwrap_or_else(|e| e.into_inner()) =
            journal::pending(&journal::dir(&self.config.spool_dir));
        let _ = self.finish_interrupted(None);
    }

    /// Undoes the interrupted appends to `path` (all of them, for `None`).
    /// Until that has worked, nothing more may be appended there.
    fn finish_interrupted(&self, path: Option<&std::path::Path>) -> Result<(), DeliveryError> {
        let mut unfinished = self.unfinished.lock().unwrap_or_else(|e| e.into_inner());
        if unfinished.is_empty() {
            return Ok(());
        }
        let opts = self.mbox_options();
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
            let result = match as_user.map(|uid| (uid, self.directory.account_by_uid(uid))) {
                Some((_, Some(a))) => helper::recover(&a, record, &opts),
                Some((uid, None)) => Err(DeliveryError {
                    kind: Failure::Temporary,
                    reason: format!("uid {uid} has no account any more"),
                }),
                None => mbox::recover(&record.path, record.orig, &record.from_line, &opts)
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
                    failed.get_or_insert(DeliveryError {
                        kind: Failure::Temporary,
                        reason: format!(
                            "{}: an append interrupted by a crash is not undone yet: {}",
                            record.path.display(),
                            e.reason
                        ),
                    });
                    true
                }
            }
        });
        failed.map_or(Ok(()), Err)
    }

    /// Writes and holds one copy (not a pipe's), within `deadline`.
    fn stage(
        &self,
        d: &Dest,
        sender: &str,
        msg: &Message<'_>,
        deadline: Instant,
    ) -> Result<Staged, DeliveryError> {
        let prefix = prefix(sender, d);
        let from_line = match d.target {
            Target::Mbox(_) => mbox::from_line(sender, SYSTEM.now()),
            _ => String::new(),
        };
        let opts = mbox::Options {
            lock_wait: self.config.timeouts.mbox_lock.min(left(deadline)?),
            ..mbox::Options::default()
        };
        let host = &self.config.hostname;
        if let Target::Mbox(path) = &d.target {
            self.finish_interrupted(Some(path))?;
        }
        match (&d.run_as, &d.target) {
            (RunAs::Account(a), target) if helper::needed(a) => {
                let job = match target {
                    Target::Maildir(dir) => helper::Job::Maildir {
                        dir,
                        hostname: host,
                        clean: self.first_sight(dir),
                    },
                    Target::Mbox(path) => helper::Job::Mbox {
                        path,
                        from_line: &from_line,
                        opts,
                        group: self.spool_group(a, target),
                    },
                    Target::Pipe(_) | Target::Discard => unreachable!("not staged"),
                };
                let mut slot = None;
                let staged = helper::prepare(
                    a,
                    &job,
                    prefix.as_bytes(),
                    msg.body,
                    deadline,
                    &mut |orig| {
                        let Target::Mbox(path) = target else {
                            unreachable!("only mboxes journal")
                        };
                        let mut s = self.journal.take()?;
                        let written = s.write(&Record::new(path, orig, &from_line, Some(a)));
                        slot = Some(s);
                        written
                    },
                );
                match staged {
                    Ok(h) => Ok(Staged::Helper(h, slot)),
                    Err(e) => {
                        // Whether the helper took back what it wrote is
                        // not known: its journal record stays, to be
                        // checked before that mailbox is used again.
                        self.unfinish(slot);
                        Err(e)
                    }
                }
            }
            (_, Target::Maildir(dir)) => {
                if self.first_sight(dir) {
                    clean(dir);
                }
                maildir::prepare(dir, prefix.as_bytes(), msg.body, host).map(Staged::Maildir)
            }
            (_, Target::Mbox(path)) => {
                let mut slot = self.journal.take()?;
                let staged = mbox::prepare(
                    path,
                    &from_line,
                    prefix.as_bytes(),
                    msg.body,
                    &opts,
                    &mut |orig| slot.write(&Record::new(path, orig, &from_line, None)),
                );
                match staged {
                    Ok(p) => Ok(Staged::Mbox(p, slot)),
                    Err(e) => {
                        // The append was cut back before this returned,
                        // unless that failed too: the recovery checks.
                        self.unfinish(Some(slot));
                        Err(e)
                    }
                }
            }
            (_, Target::Pipe(_) | Target::Discard) => unreachable!("not staged"),
        }
    }

    /// The group a helper may keep for an mbox: only for a user's own
    /// mailbox, from the `[users]` template, in a group-writable directory
    /// (Debian's /var/mail, root:mail 2775) reached without a symbolic link.
    fn spool_group(&self, account: &Account, target: &Target) -> Option<u32> {
        let own = self
            .config
            .users
            .store
            .expand(&account.name, &account.home)
            .map(|s| store_target(&s).normalized());
        if own.as_ref() != Some(target) {
            return None;
        }
        let Target::Mbox(path) = target else {
            return None;
        };
        let meta = std::fs::symlink_metadata(maildir::parent_of(path)).ok()?;
        (meta.is_dir() && meta.mode() & 0o020 != 0).then_some(meta.gid())
    }

    /// True the first time this process delivers to a Maildir (whose
    /// `tmp/` is then cleaned).
    fn first_sight(&self, dir: &Path) -> bool {
        let mut cleaned = self.cleaned.lock().unwrap_or_else(|e| e.into_inner());
        !cleaned.contains(dir) && cleaned.insert(dir.to_path_buf())
    }

    /// Clears a journal slot whose append is settled and returns it.
    fn settle(&self, slot: Option<Slot>) {
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
    /// again, or at the next start.
    fn unfinish(&self, slot: Option<Slot>) {
        if let Some(entry) = slot.and_then(Slot::into_unfinished) {
            self.unfinished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(entry);
        }
    }

    fn commit(&self, staged: Staged, deadline: Instant) -> Result<Option<PathBuf>, DeliveryError> {
        match staged {
            Staged::Maildir(p) => p.commit().map(Some),
            Staged::Mbox(p, mut slot) => {
                // The journal record goes first: once it is gone a crash
                // keeps the message, so it must not go if the copy will not
                // be kept.
                if let Err(e) = slot.clear() {
                    let _ = p.abort();
                    self.unfinish(Some(slot));
                    return Err(e);
                }
                p.commit();
                self.journal.put(slot);
                Ok(None)
            }
            Staged::Helper(h, mut slot) => {
                let record = slot.as_mut().map(|s| (s.record(), s.clear()));
                if let Some((_, Err(e))) = record {
                    h.abort(deadline);
                    self.unfinish(slot);
                    return Err(e);
                }
                match h.commit(deadline) {
                    Ok(()) => {
                        self.settle(slot);
                        Ok(None)
                    }
                    Err(e) => {
                        // It may or may not have kept it: journal it again
                        // so that it is taken out, as the reply says.
                        if let (Some(mut s), Some((Some(r), _))) = (slot, record) {
                            let _ = s.write(&r);
                            self.unfinish(Some(s));
                        }
                        Err(e)
                    }
                }
            }
        }
    }

    fn abort(&self, staged: Staged, deadline: Instant) {
        match staged {
            Staged::Maildir(p) => drop(p),
            Staged::Mbox(p, slot) => match p.abort() {
                Ok(()) => self.settle(Some(slot)),
                Err(_) => self.unfinish(Some(slot)),
            },
            Staged::Helper(h, slot) => {
                if h.abort(deadline) {
                    self.settle(slot);
                } else {
                    self.unfinish(slot);
                }
            }
        }
    }

    /// Runs the pipes and stages the other copies of a message.
    fn attempt(&self, msg: &Message<'_>, deadline: Instant) -> Attempt {
        // One copy per mailbox, however many recipients lead there.
        let mut seen = HashSet::new();
        let mut copies: Vec<(&Recipient, &Dest)> = Vec::new();
        for r in msg.recipients {
            for d in &r.dests {
                if seen.insert(&d.target) {
                    copies.push((r, d));
                }
            }
        }
        // Pipes first, then Maildirs, then mboxes in path order: two
        // deliveries then take mbox locks in the same order.
        copies.sort_by(|(_, a), (_, b)| {
            let rank = |t: &Target| match t {
                Target::Pipe(_) | Target::Discard => (0, None),
                Target::Maildir(_) => (1, None),
                Target::Mbox(p) => (2, Some(p.clone())),
            };
            rank(&a.target).cmp(&rank(&b.target))
        });
        // A null sender stays null: a list owner is not told of a bounce.
        let sender_of = |d: &Dest| match (msg.reverse_path, &d.sender) {
            ("", _) | (_, None) => msg.reverse_path.to_string(),
            (_, Some(owner)) => owner.clone(),
        };
        let mut a = Attempt::default();
        for (r, d) in copies {
            let sender = sender_of(d);
            let result = match &d.target {
                Target::Pipe(command) => {
                    let account = match &d.run_as {
                        RunAs::Server => None,
                        RunAs::Account(a) => Some(a),
                    };
                    let env = pipe::PipeEnv {
                        sender: &sender,
                        recipient: &d.address,
                    };
                    let prefix = prefix(&sender, d);
                    left(deadline)
                        .and_then(|left| {
                            let limit = self.config.timeouts.pipe.min(left);
                            pipe::run(command, account, prefix.as_bytes(), msg.body, &env, limit)
                        })
                        .map(|()| {
                            a.pipes += 1;
                            log::info!(
                                "{}: delivered to <{}> ({})",
                                msg.id,
                                d.address,
                                describe(d)
                            );
                        })
                }
                Target::Discard => {
                    // Nothing to take back, nor to repeat if the message
                    // fails: not counted among the copies made.
                    log::info!("{}: <{}> discarded (/dev/null)", msg.id, d.address);
                    Ok(())
                }
                // A second copy in one mailbox would be a duplicate, and
                // in an mbox would wait for the lock the first one holds.
                _ if a.holds(&d.target) => {
                    log::info!(
                        "{}: <{}> ({}) is a mailbox this message is already in",
                        msg.id,
                        d.address,
                        describe(d)
                    );
                    Ok(())
                }
                _ => self.stage(d, &sender, msg, deadline).map(|s| {
                    a.staged.push((r.address.clone(), d.clone(), s));
                }),
            };
            if let Err(error) = result {
                log::warn!(
                    "{}: delivery to <{}> ({}) failed: {error}",
                    msg.id,
                    d.address,
                    describe(d)
                );
                a.failed.push(Failed {
                    recipient: d.address.clone(),
                    original: r.address.clone(),
                    notify: sender,
                    status: error.kind.status(),
                    error,
                });
            }
        }
        for r in msg.recipients {
            for m in &r.missing {
                let notify = match (msg.reverse_path, &m.sender) {
                    ("", _) | (_, None) => msg.reverse_path.to_string(),
                    (_, Some(owner)) => owner.clone(),
                };
                if self.reachable(&notify).is_none() {
                    // Refusing the whole message for a list's stale member
                    // would punish every other member; there is nobody to
                    // lose it for, and the log tells the postmaster.
                    log::warn!(
                        "{}: list member <{}> of <{}> does not exist, and <{notify}> cannot be told",
                        msg.id,
                        m.address,
                        r.address
                    );
                    continue;
                }
                a.failed.push(Failed {
                    recipient: m.address.clone(),
                    original: r.address.clone(),
                    notify,
                    status: "5.1.1",
                    error: DeliveryError {
                        kind: Failure::Permanent,
                        reason: "no such mailbox here".into(),
                    },
                });
            }
        }
        a
    }

    /// A recipient for a notification to `sender`, if one can be delivered
    /// here.
    fn reachable(&self, sender: &str) -> Option<Recipient> {
        if sender.is_empty() {
            return None;
        }
        let m = Mailbox::parse(sender).ok()?;
        match self.lookup(&ForwardPath::Mailbox(m)) {
            Lookup::Local(r) => Some(r),
            _ => None,
        }
    }

    /// Writes and stages one notification per sender for the failed
    /// copies; `Err` (with everything staged taken back) if any cannot be
    /// delivered in full.
    fn prepare_notices(
        &self,
        msg: &Message<'_>,
        failed: &[Failed],
        deadline: Instant,
        held: &Attempt,
    ) -> Result<Notices, String> {
        let header = dsn::read_header(msg.body).map_err(|e| format!("reading the spool: {e}"))?;
        let mut senders: Vec<&str> = failed.iter().map(|f| f.notify.as_str()).collect();
        senders.sort_unstable();
        senders.dedup();
        let mut plan = Vec::new();
        for sender in senders {
            match self.reachable(sender) {
                Some(to) => plan.push((sender, to)),
                None if sender.is_empty() => {
                    return Err("the null sender cannot be notified".into())
                }
                None => {
                    return Err(format!(
                        "<{sender}>, which is not local, cannot be notified"
                    ))
                }
            }
        }
        // A notification for a mailbox this message holds locked (the
        // sender wrote to itself) can only be written once that copy is
        // committed; the copy just worked, so it is very likely to.
        if plan
            .iter()
            .flat_map(|(_, to)| &to.dests)
            .any(|d| matches!(d.target, Target::Mbox(_)) && held.holds(&d.target))
        {
            return Ok(Notices::Afterwards);
        }
        let mut out: Vec<Attempt> = Vec::new();
        let give_up = |out: Vec<Attempt>, why: String| {
            for a in out {
                for (_, _, s) in a.staged {
                    self.abort(s, deadline);
                }
            }
            Err(why)
        };
        for (sender, to) in plan {
            let report: Vec<dsn::Failed> = failed
                .iter()
                .filter(|f| f.notify == sender)
                .map(|f| dsn::Failed {
                    recipient: f.recipient.clone(),
                    original: (f.original != f.recipient).then(|| f.original.clone()),
                    status: f.status.to_string(),
                    diagnostic: f.error.reason.clone(),
                })
                .collect();
            let now = SYSTEM.now();
            let id = SYSTEM.queue_id();
            let text = dsn::compose(&dsn::Report {
                hostname: &self.config.hostname,
                id: &id,
                original_id: msg.id,
                to: sender,
                arrival: msg.received,
                now,
                failed: &report,
                header: &header,
            });
            let written = spool::Spool::create(&self.config.spool_dir)
                .and_then(|mut body| body.write(&text).map(|()| body));
            let body = match written {
                Ok(b) => b,
                Err(e) => return give_up(out, format!("spooling the notification: {e}")),
            };
            // With a null sender: a notification is never reported on.
            let a = self.attempt(
                &Message {
                    id: &id,
                    reverse_path: "",
                    recipients: std::slice::from_ref(&to),
                    body: body.body(),
                    received: now,
                },
                deadline,
            );
            let failed_too = a.failed.first().map(|f| f.error.reason.clone());
            out.push(a);
            if let Some(why) = failed_too {
                return give_up(out, format!("the notification to <{sender}> failed: {why}"));
            }
            log::info!(
                "{}: notification {id} to <{sender}> for {} recipients",
                msg.id,
                report.len()
            );
        }
        Ok(Notices::Staged(out))
    }

    /// Commits staged copies; returns those that failed at the last step.
    fn commit_all(
        &self,
        id: &str,
        staged: Vec<(String, Dest, Staged)>,
        deadline: Instant,
    ) -> Vec<Failed> {
        let mut failed = Vec::new();
        for (original, d, s) in staged {
            match self.commit(s, deadline) {
                Ok(path) => {
                    let at = path.map_or_else(|| describe(&d), |p| p.display().to_string());
                    log::info!("{id}: delivered to <{}> at {at}", d.address);
                }
                Err(error) => {
                    log::error!(
                        "{id}: delivery to <{}> ({}) failed at the last step: {error}",
                        d.address,
                        describe(&d)
                    );
                    failed.push(Failed {
                        recipient: d.address.clone(),
                        original,
                        notify: d.sender.clone().unwrap_or_default(),
                        status: error.kind.status(),
                        error,
                    });
                }
            }
        }
        failed
    }
}

/// The time left before `deadline`, or a temporary failure if none is.
fn left(deadline: Instant) -> Result<Duration, DeliveryError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| DeliveryError {
            kind: Failure::Temporary,
            reason: "the delivery took longer than timeouts.delivery".into(),
        })
}

/// Removes stale leftovers from a Maildir's `tmp/`.
fn clean(dir: &Path) {
    let n = maildir::clean_tmp(dir, maildir::STALE_TMP);
    if n > 0 {
        log::info!("{}: removed {n} stale files from tmp/", dir.display());
    }
}

fn store_target(store: &Store) -> Target {
    match store {
        Store::Maildir(p) => Target::Maildir(p.clone()),
        Store::Mbox(p) => Target::Mbox(p.clone()),
    }
}

/// `Return-Path:` and `Delivered-To:` for one copy.
fn prefix(sender: &str, d: &Dest) -> String {
    format!("Return-Path: <{sender}>\nDelivered-To: {}\n", d.address)
}

/// The failure that answers for all of them: a full disk if any, else
/// temporary if any, else permanent.
fn summary(failed: &[Failed]) -> DeliveryError {
    let kind = if failed.iter().any(|f| f.error.kind == Failure::DiskFull) {
        Failure::DiskFull
    } else if failed.iter().any(|f| f.error.kind == Failure::Temporary) {
        Failure::Temporary
    } else {
        Failure::Permanent
    };
    let first = failed
        .iter()
        .find(|f| f.error.kind == kind)
        .unwrap_or(&failed[0]);
    DeliveryError {
        kind,
        reason: first.error.reason.clone(),
    }
}

impl Delivery for Local {
    fn lookup(&self, rcpt: &ForwardPath) -> Lookup {
        let resolver = self.resolver();
        match rcpt {
            ForwardPath::Postmaster => resolver.resolve("postmaster", &self.config.hostname),
            ForwardPath::Mailbox(m) if super::is_local(&self.config, &m.domain) => {
                resolver.resolve(&m.local, &m.domain.to_string())
            }
            ForwardPath::Mailbox(_) => Lookup::NotLocal,
        }
    }

    fn deliver(&self, msg: &Message<'_>) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + self.config.timeouts.delivery;
        let a = self.attempt(msg, deadline);
        if a.failed.is_empty() {
            let late = self.commit_all(msg.id, a.staged, deadline);
            return self.after_commit(msg, late, deadline);
        }
        if a.pipes + a.staged.len() == 0 {
            return Err(summary(&a.failed));
        }
        match self.prepare_notices(msg, &a.failed, deadline, &a) {
            Ok(Notices::Staged(notices)) => {
                let late = self.commit_all(msg.id, a.staged, deadline);
                for n in notices {
                    // A notification that fails now is logged: it never
                    // gets one of its own.
                    self.commit_all(msg.id, n.staged, deadline);
                }
                self.after_commit(msg, late, deadline)
            }
            Ok(Notices::Afterwards) => {
                let mut failed = a.failed;
                failed.extend(self.commit_all(msg.id, a.staged, deadline));
                self.after_commit(msg, failed, deadline)
            }
            Err(why) => {
                log::info!(
                    "{}: some copies failed and {why}; taking the message back whole",
                    msg.id
                );
                for (_, _, s) in a.staged {
                    self.abort(s, deadline);
                }
                if a.pipes > 0 {
                    log::warn!(
                        "{}: {} pipe deliveries already ran, and run again if the client retries",
                        msg.id,
                        a.pipes
                    );
                }
                Err(summary(&a.failed))
            }
        }
    }
}

impl Local {
    /// Copies that failed after others were committed (or whose
    /// notification had to wait for that): the rest cannot be taken back
    /// any more, so these are reported if that can be done, else the
    /// client is told (and a retry duplicates).
    fn after_commit(
        &self,
        msg: &Message<'_>,
        late: Vec<Failed>,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        if late.is_empty() {
            return Ok(());
        }
        let late: Vec<Failed> = late
            .into_iter()
            .map(|f| Failed {
                notify: if msg.reverse_path.is_empty() || f.notify.is_empty() {
                    msg.reverse_path.to_string()
                } else {
                    f.notify
                },
                ..f
            })
            .collect();
        match self.prepare_notices(msg, &late, deadline, &Attempt::default()) {
            Ok(Notices::Staged(notices)) => {
                for n in notices {
                    self.commit_all(msg.id, n.staged, deadline);
                }
                Ok(())
            }
            Ok(Notices::Afterwards) => unreachable!("nothing is held"),
            Err(why) => {
                log::error!(
                    "{}: copies failed after others were kept, and {why}",
                    msg.id
                );
                Err(summary(&late))
            }
        }
    }
}

fn describe(d: &Dest) -> String {
    let who = match &d.run_as {
        RunAs::Server => String::new(),
        RunAs::Account(Account { name, .. }) => format!(" as {name}"),
    };
    match &d.target {
        Target::Maildir(p) => format!("maildir {}{who}", p.display()),
        Target::Mbox(p) => format!("mbox {}{who}", p.display()),
        Target::Pipe(c) => format!("pipe {c:?}{who}"),
        Target::Discard => "/dev/null".into(),
    }
}
