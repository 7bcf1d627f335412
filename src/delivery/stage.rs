//! One copy, two phases: written and fsynced, then made visible or taken
//! back. A Maildir copy waits in `tmp/`, an mbox append waits with the
//! mailbox locked and its old length journaled, and a copy for another
//! account waits in a helper process that writes it as that account
//! (`helper.rs`). Whatever happens between the phases, the journal and
//! [`Recovery`] make sure a copy nobody was told of does not stay.

use super::mbox::journal::{Record, Slot};
use super::plan::Copy;
use super::recovery::Recovery;
use super::resolve::Directory;
use super::{helper, maildir, mbox, Account, Body, DeliveryError, Failure, RunAs, Target};
use crate::clock::SYSTEM;
use crate::config::Config;
use crate::smtp::trace::Clock;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A copy written and held, waiting for the decision.
pub enum Staged {
    Maildir(maildir::Prepared),
    Mbox(mbox::Prepared, Slot),
    Helper(helper::Staged, Option<Slot>),
}

/// What staging needs of the delivery around it.
pub struct Stager<'a> {
    pub config: &'a Config,
    pub recovery: &'a Recovery,
    pub directory: &'a dyn Directory,
}

impl Stager<'_> {
    /// How long an mbox's locks are waited for, at most.
    pub fn mbox_options(&self) -> mbox::Options {
        mbox::Options {
            lock_wait: self.config.timeouts.mbox_lock,
            ..mbox::Options::default()
        }
    }

    /// Writes and holds one copy (not a pipe's), within `deadline`;
    /// `crlf` when the message's lines end so ([`Body::crlf`]).
    pub fn stage(
        &self,
        copy: &Copy<'_>,
        body: Body<'_>,
        crlf: bool,
        deadline: Instant,
    ) -> Result<Staged, DeliveryError> {
        let d = copy.dest;
        let prefix = copy.prefix(crlf);
        let from_line = match d.target {
            Target::Mbox(_) => mbox::from_line(&copy.sender, SYSTEM.now()),
            _ => String::new(),
        };
        let opts = mbox::Options {
            lock_wait: self.config.timeouts.mbox_lock.min(left(deadline)?),
            ..mbox::Options::default()
        };
        let host = &self.config.hostname;
        if let Target::Mbox(path) = &d.target {
            self.recovery
                .finish_interrupted(Some(path), self.directory, &self.mbox_options())?;
        }
        match (&d.run_as, &d.target) {
            (RunAs::Account(a), target) if helper::needed(a) => {
                let job = match target {
                    Target::Maildir(dir) => helper::Job::Maildir {
                        dir,
                        hostname: host,
                        clean: self.recovery.first_sight(dir),
                    },
                    Target::Mbox(path) => helper::Job::Mbox {
                        path,
                        from_line: &from_line,
                        opts,
                        group: self.spool_group(a, target),
                    },
                    Target::Pipe(_) | Target::Discard | Target::Forward(_) => {
                        unreachable!("not staged")
                    }
                };
                let mut slot = None;
                let staged =
                    helper::prepare(a, &job, prefix.as_bytes(), body, deadline, &mut |orig| {
                        let Target::Mbox(path) = target else {
                            unreachable!("only mboxes journal")
                        };
                        let mut s = self.recovery.slot()?;
                        let written = s.write(&Record::new(path, orig, &from_line, Some(a)));
                        slot = Some(s);
                        written
                    });
                match staged {
                    Ok(h) => Ok(Staged::Helper(h, slot)),
                    Err(e) => {
                        // Whether the helper took back what it wrote is
                        // not known: its journal record stays, to be
                        // checked before that mailbox is used again.
                        self.recovery.unfinish(slot);
                        Err(e)
                    }
                }
            }
            (_, Target::Maildir(dir)) => {
                self.recovery.clean_once(dir);
                maildir::prepare(dir, prefix.as_bytes(), body, host).map(Staged::Maildir)
            }
            (_, Target::Mbox(path)) => {
                let mut slot = self.recovery.slot()?;
                let staged = mbox::prepare(
                    path,
                    &from_line,
                    prefix.as_bytes(),
                    body,
                    &opts,
                    &mut |orig| slot.write(&Record::new(path, orig, &from_line, None)),
                );
                match staged {
                    Ok(p) => Ok(Staged::Mbox(p, slot)),
                    Err(e) => {
                        // The append was cut back before this returned,
                        // unless that failed too: the recovery checks.
                        self.recovery.unfinish(Some(slot));
                        Err(e)
                    }
                }
            }
            (_, Target::Pipe(_) | Target::Discard | Target::Forward(_)) => {
                unreachable!("not staged")
            }
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
            .map(|s| Target::from(&s).normalized());
        if own.as_ref() != Some(target) {
            return None;
        }
        let Target::Mbox(path) = target else {
            return None;
        };
        let meta = std::fs::symlink_metadata(maildir::parent_of(path)).ok()?;
        (meta.is_dir() && meta.mode() & 0o020 != 0).then_some(meta.gid())
    }

    /// Makes a held copy visible; where it went, when that is a file.
    pub fn commit(
        &self,
        staged: Staged,
        deadline: Instant,
    ) -> Result<Option<PathBuf>, DeliveryError> {
        match staged {
            Staged::Maildir(p) => p.commit().map(Some),
            Staged::Mbox(p, mut slot) => {
                // The journal record goes first: once it is gone a crash
                // keeps the message, so it must not go if the copy will not
                // be kept.
                if let Err(e) = slot.clear() {
                    let _ = p.abort();
                    self.recovery.unfinish(Some(slot));
                    return Err(e);
                }
                p.commit();
                self.recovery.put(slot);
                Ok(None)
            }
            Staged::Helper(h, mut slot) => {
                let record = slot.as_mut().map(|s| (s.record(), s.clear()));
                if let Some((_, Err(e))) = record {
                    h.abort(deadline);
                    self.recovery.unfinish(slot);
                    return Err(e);
                }
                match h.commit(deadline) {
                    Ok(()) => {
                        self.recovery.settle(slot);
                        Ok(None)
                    }
                    Err(e) => {
                        // It may or may not have kept it: journal it again
                        // so that it is taken out, as the reply says.
                        if let (Some(mut s), Some((Some(r), _))) = (slot, record) {
                            let _ = s.write(&r);
                            self.recovery.unfinish(Some(s));
                        }
                        Err(e)
                    }
                }
            }
        }
    }

    /// Takes a held copy back.
    pub fn abort(&self, staged: Staged, deadline: Instant) {
        match staged {
            Staged::Maildir(p) => drop(p),
            Staged::Mbox(p, slot) => match p.abort() {
                Ok(()) => self.recovery.settle(Some(slot)),
                Err(_) => self.recovery.unfinish(Some(slot)),
            },
            Staged::Helper(h, slot) => {
                if h.abort(deadline) {
                    self.recovery.settle(slot);
                } else {
                    self.recovery.unfinish(slot);
                }
            }
        }
    }
}

/// The time left before `deadline`, or a temporary failure if none is.
pub fn left(deadline: Instant) -> Result<Duration, DeliveryError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            DeliveryError::new(
                Failure::Temporary,
                "the delivery took longer than timeouts.delivery",
            )
        })
}
