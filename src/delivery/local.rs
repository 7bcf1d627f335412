//! Local delivery: recipients resolved from the configuration, the aliases
//! and the passwd database; copies written to Maildirs, mboxes and pipes
//! with the right privileges; and one decision per message.
//!
//! Every copy but a pipe's is two-phase: written and fsynced, then
//! committed or taken back. Pipes run first (they cannot be taken back,
//! and no mailbox is held locked while they run); then the other copies
//! are prepared. If all succeeded, all are committed. If none did, the
//! message fails with one reply. If some did, the others are reported in a
//! delivery status notification to the sender (the list owner, for list
//! members) and the message is accepted: but only when every such sender
//! can be reached here. A null sender must never get one, and a remote one
//! cannot until mail can be relayed, so then everything is taken back and
//! the reply tells the client, whose own server reports it. A copy is
//! never dropped without someone being told.

use super::aliases::Aliases;
use super::journal::{self, Journal, Record, Slot};
use super::resolve::{Directory, Passwd, Resolver};
use super::{
    dsn, helper, maildir, mbox, pipe, spool, Account, Delivery, DeliveryError, Dest, Failure,
    Lookup, Message, Recipient, RunAs, Target,
};
use crate::config::{Config, Store};
use crate::smtp::address::{ForwardPath, Mailbox};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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

impl Local {
    /// Loads the aliases file and works out whose privileges its files and
    /// pipes get: as root, the owner of the aliases file if that is not
    /// root, else `pipe_user`; otherwise the server's own. (As root
    /// without aliases, the server's own privileges are never used for a
    /// pipe: [`pipe::run`] refuses to run one as root.)
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
        let alias_privileges = if nix::unistd::geteuid().is_root() && !aliases.is_empty() {
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
                self.clean_once(dir);
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

    /// Cleans a Maildir's `tmp/` the first time this process sees it.
    fn clean_once(&self, dir: &std::path::Path) -> bool {
        let first = self
            .cleaned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_path_buf());
        if first {
            let n = maildir::clean_tmp(dir, maildir::STALE_TMP);
            if n > 0 {
                log::info!("{}: removed {n} stale files from tmp/", dir.display());
            }
        }
        first
    }

    /// Writes and holds one copy (not a pipe's).
    fn stage(&self, d: &Dest, sender: &str, msg: &Message<'_>) -> Result<Staged, DeliveryError> {
        let prefix = prefix(sender, d);
        let from_line = mbox::from_line(sender, SystemTime::now());
        let opts = self.mbox_options();
        let host = &self.config.hostname;
        if let Target::Mbox(path) = &d.target {
            self.finish_interrupted(Some(path))?;
        }
        match (&d.run_as, &d.target) {
            (RunAs::Account(a), target) if helper::needed(a) => {
                let clean = matches!(target, Target::Maildir(dir) if self.cleaned.lock().unwrap_or_else(|e| e.into_inner()).insert(dir.clone()));
                let job = helper::Job::for_target(target, host, &from_line, opts, clean)
                    .expect("pipes are not staged");
                let mut slot = None;
                let staged = helper::prepare(a, &job, prefix.as_bytes(), msg.body, &mut |orig| {
                    let Target::Mbox(path) = target else {
                        unreachable!("only mboxes journal")
                    };
                    let mut s = self.journal.take()?;
                    let written = s.write(&Record::new(path, orig, &from_line, Some(a)));
                    slot = Some(s);
                    written
                });
                match staged {
                    Ok(h) => Ok(Staged::Helper(h, slot)),
                    Err(e) => {
                        self.settle(slot);
                        Err(e)
                    }
                }
            }
            (_, Target::Maildir(dir)) => {
                self.clean_once(dir);
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
                        // The append was cut back before this returned.
                        self.settle(Some(slot));
                        Err(e)
                    }
                }
            }
            (_, Target::Pipe(_)) => unreachable!("pipes are not staged"),
        }
    }

    /// Clears a journal slot whose append is settled and returns it.
    fn settle(&self, slot: Option<Slot>) {
        if let Some(mut s) = slot {
            match s.clear() {
                Ok(()) => self.journal.put(s),
                Err(e) => log::error!("{e}"),
            }
        }
    }

    fn commit(&self, staged: Staged) -> Result<Option<PathBuf>, DeliveryError> {
        match staged {
            Staged::Maildir(p) => p.commit().map(Some),
            Staged::Mbox(p, mut slot) => {
                // The journal record goes first: once it is gone a crash
                // keeps the message, so it must not go if the copy will not
                // be kept.
                if let Err(e) = slot.clear() {
                    let _ = p.abort();
                    self.settle(Some(slot));
                    return Err(e);
                }
                p.commit();
                self.journal.put(slot);
                Ok(None)
            }
            Staged::Helper(h, mut slot) => {
                if let Some(s) = slot.as_mut() {
                    if let Err(e) = s.clear() {
                        h.abort();
                        self.settle(slot);
                        return Err(e);
                    }
                }
                let r = h.commit();
                self.settle(slot);
                r.map(|()| None)
            }
        }
    }

    fn abort(&self, staged: Staged) {
        match staged {
            Staged::Maildir(p) => drop(p),
            Staged::Mbox(p, slot) => {
                if p.abort().is_ok() {
                    self.settle(Some(slot));
                }
            }
            Staged::Helper(h, slot) => {
                h.abort();
                self.settle(slot);
            }
        }
    }

    /// True if a notification to `sender` can be delivered here.
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

    /// Sends one notification per sender for the failed copies.
    fn notify(&self, msg: &Message<'_>, failed: &[Failed]) -> Result<(), DeliveryError> {
        let header =
            dsn::read_header(msg.body).map_err(|e| DeliveryError::io("reading the spool", &e))?;
        let mut senders: Vec<&str> = failed.iter().map(|f| f.notify.as_str()).collect();
        senders.sort_unstable();
        senders.dedup();
        for sender in senders {
            let Some(to) = self.reachable(sender) else {
                return Err(DeliveryError {
                    kind: Failure::Temporary,
                    reason: format!("cannot notify <{sender}>"),
                });
            };
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
            let now = SystemTime::now();
            let id = crate::smtp::trace::queue_id(now);
            let text = dsn::compose(&dsn::Report {
                hostname: &self.config.hostname,
                id: &id,
                original_id: msg.id,
                to: sender,
                arrival: now,
                now,
                failed: &report,
                header: &header,
            });
            let mut body = spool::Spool::create(&self.config.spool_dir)
                .map_err(|e| DeliveryError::io("creating spool file", &e))?;
            body.write(&text)
                .map_err(|e| DeliveryError::io("writing spool file", &e))?;
            log::info!(
                "{}: notification {id} to <{sender}> for {} recipients",
                msg.id,
                report.len()
            );
            // A null sender: a failure here is never reported again.
            self.deliver(&Message {
                id: &id,
                reverse_path: "",
                recipients: std::slice::from_ref(&to),
                body: body.file(),
            })?;
        }
        Ok(())
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
        // One copy per target, however many recipients lead there.
        let mut copies: Vec<(&Recipient, &Dest)> = Vec::new();
        for r in msg.recipients {
            for d in &r.dests {
                if !copies
                    .iter()
                    .any(|(_, c)| c.target == d.target && c.run_as == d.run_as)
                {
                    copies.push((r, d));
                }
            }
        }
        let sender_of = |d: &Dest| {
            d.sender
                .clone()
                .unwrap_or_else(|| msg.reverse_path.to_string())
        };
        // A copy that failed: logged, and kept for the reply or a report.
        let failure = |r: &Recipient, d: &Dest, error: DeliveryError| {
            log::warn!(
                "{}: delivery to <{}> ({}) failed: {error}",
                msg.id,
                d.address,
                describe(d)
            );
            Failed {
                recipient: d.address.clone(),
                original: r.address.clone(),
                notify: sender_of(d),
                status: dsn::status(error.kind),
                error,
            }
        };
        let mut failed: Vec<Failed> = Vec::new();
        let mut succeeded = 0;
        let (pipes, others): (Vec<_>, Vec<_>) = copies
            .into_iter()
            .partition(|(_, d)| matches!(d.target, Target::Pipe(_)));
        for (r, d) in pipes {
            let Target::Pipe(command) = &d.target else {
                unreachable!()
            };
            let account = match &d.run_as {
                RunAs::Server => None,
                RunAs::Account(a) => Some(a),
            };
            let sender = sender_of(d);
            let env = pipe::PipeEnv {
                sender: &sender,
                recipient: &d.address,
            };
            let prefix = prefix(&sender, d);
            match pipe::run(
                command,
                account,
                prefix.as_bytes(),
                msg.body,
                &env,
                self.config.timeouts.pipe,
            ) {
                Ok(()) => {
                    succeeded += 1;
                    log::info!("{}: delivered to <{}> ({})", msg.id, d.address, describe(d));
                }
                Err(e) => failed.push(failure(r, d, e)),
            }
        }
        let mut staged = Vec::new();
        for (r, d) in others {
            match self.stage(d, &sender_of(d), msg) {
                Ok(s) => staged.push((r, d, s)),
                Err(e) => failed.push(failure(r, d, e)),
            }
        }
        for r in msg.recipients {
            for m in &r.missing {
                let notify = m
                    .sender
                    .clone()
                    .unwrap_or_else(|| msg.reverse_path.to_string());
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
                failed.push(Failed {
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
        let unreported = failed.iter().find(|f| self.reachable(&f.notify).is_none());
        if !failed.is_empty() && (succeeded + staged.len() == 0 || unreported.is_some()) {
            if let Some(f) = unreported.filter(|_| succeeded + staged.len() > 0) {
                let who = if f.notify.is_empty() {
                    "a null sender"
                } else {
                    "a sender that is not local"
                };
                log::info!(
                    "{}: some copies failed and {who} cannot be notified; refusing the message whole",
                    msg.id
                );
            }
            for (_, _, s) in staged {
                self.abort(s);
            }
            if succeeded > 0 {
                log::warn!(
                    "{}: {succeeded} pipe deliveries already ran and will run again if the client retries",
                    msg.id
                );
            }
            return Err(summary(&failed));
        }
        for (r, d, s) in staged {
            match self.commit(s) {
                Ok(path) => {
                    let at = path.map_or_else(|| describe(d), |p| p.display().to_string());
                    log::info!("{}: delivered to <{}> at {at}", msg.id, d.address);
                    succeeded += 1;
                }
                Err(e) => failed.push(failure(r, d, e)),
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        if succeeded == 0 {
            return Err(summary(&failed));
        }
        self.notify(msg, &failed).map_err(|e| {
            log::error!(
                "{}: some copies were delivered, but the notification for the others failed: {e}",
                msg.id
            );
            summary(&failed)
        })
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
    }
}
