//! The mailboxes of this box: who a recipient is ([`Local::lookup`]), and
//! the copies of a message made in two steps that whoever delivers can
//! drive: [`Local::attempt`] runs the pipes and writes and holds every
//! other copy, with an [`Outcome`] for each one that failed; then the held
//! copies are committed ([`Local::commit`], with an outcome for each) or
//! taken back ([`Local::abort`]). What to do with a message some of whose
//! copies failed is not decided here: the client's session decides it now
//! (`notices`), a queue will decide it later.
//!
//! The order and the envelope of the copies come from [`plan`], the two
//! phases of one copy from [`stage`], and the undoing of what a crash
//! left from [`recovery`]. A mailbox gets one copy however many recipients
//! and paths lead to it, and every copy is made by `deadline`.
//!
//! [`plan`]: super::plan
//! [`stage`]: super::stage
//! [`recovery`]: super::recovery

use super::aliases::Aliases;
use super::plan::{self, Copy, Outcome, Status};
use super::recovery::Recovery;
use super::resolve::{Directory, Passwd, Resolver};
use super::stage::{self, Staged, Stager};
use super::{pipe, DeliveryError, Dest, Failure, Lookup, Message, RunAs, Target};
use crate::config::{Config, Store};
use crate::smtp::address::{ForwardPath, Mailbox};
use std::cell::RefCell;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Instant;

pub struct Local {
    config: Arc<Config>,
    aliases: Aliases,
    directory: Box<dyn Directory>,
    alias_privileges: RunAs,
    recovery: Recovery,
}

/// What trying every copy of one message gave.
pub struct Attempt {
    /// Copies written and held, waiting to be committed or taken back.
    pub held: Held,
    /// Copies that failed, and list members that do not exist (who hear
    /// of it can be told).
    pub failed: Vec<Outcome>,
    /// Pipe deliveries that ran: they cannot be taken back.
    pub pipes: usize,
}

impl Attempt {
    /// How many copies were made: pipes that ran and copies held. A copy
    /// thrown away on purpose (/dev/null) is not one: there is nothing to
    /// take back or repeat.
    pub fn kept(&self) -> usize {
        self.pipes + self.held.copies.len()
    }
}

/// Copies written and held. They must be committed or taken back: a
/// held mbox copy keeps its mailbox locked.
#[derive(Default)]
#[must_use = "held copies are committed or taken back"]
pub struct Held {
    copies: Vec<(Outcome, Dest, Staged)>,
    /// The mailboxes of the first `.0` held copies, by device and inode:
    /// the same ones however their paths are spelled. Worked out only when
    /// another copy is tried, so that a message with one copy costs no
    /// stat.
    ids: RefCell<(usize, HashSet<FileId>)>,
}

impl Held {
    /// Whether one of the held copies is in the mailbox `t`.
    pub fn holds(&self, t: &Target) -> bool {
        if self.copies.is_empty() {
            return false;
        }
        if self.copies.iter().any(|(_, d, _)| d.target == *t) {
            return true;
        }
        let mut ids = self.ids.borrow_mut();
        let (counted, ids) = &mut *ids;
        for (_, d, _) in self.copies.get(*counted..).unwrap_or_default() {
            ids.extend(file_id(&d.target));
        }
        *counted = self.copies.len();
        file_id(t).is_some_and(|id| ids.contains(&id))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Dropped copies are taken back by their own drops, but a journal
        // record would stay for the next start: never meant to happen.
        debug_assert!(self.copies.is_empty(), "held copies dropped");
        if !self.copies.is_empty() {
            log::error!("{} held copies dropped undecided", self.copies.len());
        }
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
        Target::Pipe(_) | Target::Discard | Target::Forward(_) => return None,
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
            recovery: Recovery::new(&config.spool_dir),
            config,
            aliases,
            directory,
            alias_privileges,
        })
    }

    /// Takes over the interrupted appends still to be undone from the
    /// delivery this one replaces (on reload).
    pub fn inherit(&mut self, old: &Local) {
        self.recovery.inherit(&old.recovery);
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn stager(&self) -> Stager<'_> {
        Stager {
            config: &self.config,
            recovery: &self.recovery,
            directory: self.directory.as_ref(),
        }
    }

    /// Removes stale leftovers from the `tmp/` of the configured Maildirs,
    /// and undoes mbox appends that a crash interrupted. Run at start-up,
    /// before any session.
    pub fn recover(&self) {
        let maildirs = self
            .config
            .mailboxes
            .values()
            .filter_map(|mb| match &mb.store {
                Store::Maildir(dir) => Some(dir.as_path()),
                Store::Mbox(_) => None,
            });
        self.recovery.at_start(
            maildirs,
            &self.config.spool_dir,
            self.directory.as_ref(),
            &self.stager().mbox_options(),
        );
    }

    /// What will fail at RCPT time, found by resolving every alias as a
    /// client's RCPT would: members that name no mailbox, addresses
    /// elsewhere with no relay to take them, loops; and the aliases
    /// file's own warnings. For `--check-config`.
    pub fn findings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .aliases
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect();
        let domain = self
            .config
            .local_domains
            .first()
            .cloned()
            .unwrap_or_else(|| self.config.hostname.clone());
        let resolver = self.resolver();
        for name in self.aliases.names() {
            let rcpt = format!("RCPT TO:<{name}@{domain}>");
            match resolver.resolve(name, &domain) {
                Lookup::Local(r) => {
                    for m in r.missing {
                        out.push(format!(
                            "alias {name}: {} names no mailbox (its copy fails, and the sender is told)",
                            m.address
                        ));
                    }
                }
                Lookup::Remote(a) => out.push(format!(
                    "alias {name}: {a} is elsewhere and there is no [relay], so {rcpt} gets 550"
                )),
                Lookup::Loop(chain) => {
                    out.push(format!("alias {name}: loops ({chain}), so {rcpt} gets 550"))
                }
                Lookup::TempFail(why) => {
                    out.push(format!("alias {name}: {why}, so {rcpt} gets 451"))
                }
                Lookup::Refused(why) => {
                    out.push(format!("alias {name}: {why}, so {rcpt} gets 550"))
                }
                Lookup::UnknownUser => out.push(format!(
                    "alias {name}: no member names a mailbox, so {rcpt} gets 550"
                )),
                Lookup::NotLocal => {}
            }
        }
        out
    }

    /// The resolver over this configuration's aliases and accounts.
    fn resolver(&self) -> Resolver<'_> {
        Resolver {
            config: &self.config,
            aliases: &self.aliases,
            directory: self.directory.as_ref(),
            alias_privileges: self.alias_privileges.clone(),
            euid: nix::unistd::geteuid().as_raw(),
        }
    }

    /// Who a recipient is, decided when it is given (RCPT time).
    pub fn lookup(&self, rcpt: &ForwardPath) -> Lookup {
        let resolver = self.resolver();
        match rcpt {
            ForwardPath::Postmaster => resolver.resolve("postmaster", &self.config.hostname),
            ForwardPath::Mailbox(m) if super::is_local(&self.config, &m.domain) => {
                resolver.resolve(&m.local, &m.domain.to_string())
            }
            ForwardPath::Mailbox(_) => Lookup::NotLocal,
        }
    }

    /// The local recipient an address names, if it names one; how a
    /// notification's recipient is found.
    pub fn reachable(&self, address: &str) -> Option<super::Recipient> {
        if address.is_empty() {
            return None;
        }
        let m = Mailbox::parse(address).ok()?;
        match self.lookup(&ForwardPath::Mailbox(m)) {
            Lookup::Local(r) => Some(r),
            _ => None,
        }
    }

    /// Runs the pipes and writes and holds every other copy of a message,
    /// by `deadline`. Nothing held is visible until it is committed.
    pub fn attempt(&self, msg: &Message<'_>, deadline: Instant) -> Attempt {
        let stager = self.stager();
        let mut a = Attempt {
            held: Held::default(),
            failed: Vec::new(),
            pipes: 0,
        };
        // A Return-Path: the sender wrote misleads every reader that
        // trusts it: final delivery leaves only ours, on top (as Exim's
        // return_path_remove). Without a copy of its own the message goes
        // as it is.
        let stripped = super::spool::without_return_path(&self.config.spool_dir, msg.body)
            .unwrap_or_else(|e| {
                log::warn!("{}: cannot remove a Return-Path: field: {e}", msg.id);
                None
            });
        let own;
        let msg = match &stripped {
            Some(spool) => {
                own = Message {
                    body: spool.body(),
                    ..*msg
                };
                &own
            }
            None => msg,
        };
        // The line ends of the fields each copy gets, read once.
        let crlf = msg.body.crlf();
        for copy in plan::copies(msg.reverse_path, msg.recipients) {
            let d = copy.dest;
            let result = match &d.target {
                Target::Pipe(command) => self.pipe(&copy, command, msg, crlf, deadline).map(|()| {
                    a.pipes += 1;
                    log::info!(
                        "{}: delivered to <{}> ({})",
                        msg.id,
                        d.address,
                        d.describe()
                    );
                }),
                Target::Discard => {
                    log::info!("{}: <{}> discarded (/dev/null)", msg.id, d.address);
                    Ok(())
                }
                // A second copy in one mailbox would be a duplicate, and
                // in an mbox would wait for the lock the first one holds.
                _ if a.held.holds(&d.target) => {
                    log::info!(
                        "{}: <{}> ({}) is a mailbox this message is already in",
                        msg.id,
                        d.address,
                        d.describe()
                    );
                    Ok(())
                }
                _ => stager.stage(&copy, msg.body, crlf, deadline).map(|s| {
                    let o = outcome(&copy, Status::Delivered);
                    a.held.copies.push((o, d.clone(), s));
                }),
            };
            if let Err(error) = result {
                log::warn!(
                    "{}: delivery to <{}> ({}) failed: {error}",
                    msg.id,
                    d.address,
                    d.describe()
                );
                a.failed.push(outcome(&copy, Status::of(error)));
            }
        }
        for r in msg.recipients {
            for m in &r.missing {
                let notify = plan::sender_of(msg.reverse_path, m.sender.as_deref());
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
                a.failed.push(Outcome {
                    original: r.address.clone(),
                    recipient: m.address.clone(),
                    notify,
                    status: Status::Failed(DeliveryError::new(
                        Failure::Permanent,
                        "no such mailbox here",
                    )),
                    code: "5.1.1",
                });
            }
        }
        a
    }

    fn pipe(
        &self,
        copy: &Copy<'_>,
        command: &str,
        msg: &Message<'_>,
        crlf: bool,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        let d = copy.dest;
        let account = match &d.run_as {
            RunAs::Server => None,
            RunAs::Account(a) => Some(a),
        };
        let env = pipe::PipeEnv {
            sender: &copy.sender,
            recipient: &d.address,
        };
        let limit = self.config.timeouts.pipe.min(stage::left(deadline)?);
        let prefix = copy.prefix(crlf);
        pipe::run(command, account, prefix.as_bytes(), msg.body, &env, limit)
    }

    /// Makes the held copies of message `id` visible; the outcome of each:
    /// delivered, or failed at this last step.
    pub fn commit(&self, mut held: Held, id: &str, deadline: Instant) -> Vec<Outcome> {
        let stager = self.stager();
        let mut outcomes = Vec::with_capacity(held.copies.len());
        for (mut o, d, s) in std::mem::take(&mut held.copies) {
            match stager.commit(s, deadline) {
                Ok(path) => {
                    let at = path.map_or_else(|| d.describe(), |p| p.display().to_string());
                    log::info!("{id}: delivered to <{}> at {at}", d.address);
                }
                Err(error) => {
                    log::error!(
                        "{id}: delivery to <{}> ({}) failed at the last step: {error}",
                        d.address,
                        d.describe()
                    );
                    o.status = Status::of(error);
                    o.code = o.status.code();
                }
            }
            outcomes.push(o);
        }
        outcomes
    }

    /// Takes the held copies back.
    pub fn abort(&self, mut held: Held, deadline: Instant) {
        let stager = self.stager();
        for (_, _, s) in std::mem::take(&mut held.copies) {
            stager.abort(s, deadline);
        }
    }
}

fn outcome(copy: &Copy<'_>, status: Status) -> Outcome {
    Outcome {
        original: copy.recipient.address.clone(),
        recipient: copy.dest.address.clone(),
        notify: copy.sender.clone(),
        code: status.code(),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Account, Body, Recipient};
    use std::io::{Seek, SeekFrom, Write};
    use std::time::Duration;

    /// Only `nobody`, whose privileges alias pipes get when the tests run
    /// as root: virtual mailboxes and aliases are all there is.
    struct Nobody;

    impl Directory for Nobody {
        fn account(&self, name: &str) -> Option<Account> {
            (name == "nobody").then(|| Account {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                home: "/nonexistent".into(),
                full_name: String::new(),
            })
        }
        fn account_by_uid(&self, uid: u32) -> Option<Account> {
            self.account("nobody").filter(|a| a.uid == uid)
        }
    }

    fn local(dir: &std::path::Path, aliases: &str) -> Local {
        // A pipe may run as nobody, and writes here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let d = dir.display();
        std::fs::write(dir.join("aliases"), aliases.replace("{d}", &d.to_string())).unwrap();
        let text = format!(
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n\
             spool_dir = \"{d}/spool\"\naliases = \"{d}/aliases\"\n\
             [mailbox.amy]\nmaildir = \"{d}/amy\"\n[mailbox.bob]\nmbox = \"{d}/bob\"\n\
             [mailbox.postmaster]\nmaildir = \"{d}/pm\"\n"
        );
        let config = Arc::new(Config::parse(&text, "t").unwrap());
        Local::with_directory(config, Box::new(Nobody)).unwrap()
    }

    fn recipient(l: &Local, name: &str) -> Recipient {
        match l.reachable(&format!("{name}@example.org")) {
            Some(r) => r,
            None => panic!("{name} does not resolve"),
        }
    }

    /// A message kept in a file after a record of something else, as a
    /// queue would keep it: delivered from its range alone, to a Maildir,
    /// an mbox and a pipe, with the file's position left where it was.
    #[test]
    fn a_message_is_delivered_from_its_range_of_a_durable_file() {
        let dir = tempfile::tempdir().unwrap();
        let l = local(dir.path(), "all: amy, bob, \"|cat > {d}/piped\"\n");
        let mut file = tempfile::tempfile_in(dir.path()).unwrap();
        let envelope = b"envelope: not part of the message\n";
        let message = b"Received: from x\nSubject: range\n\nFrom the start\n";
        file.write_all(envelope).unwrap();
        file.write_all(message).unwrap();
        file.write_all(b"trailer: not either\n").unwrap();
        file.seek(SeekFrom::Start(5)).unwrap();
        let all = [recipient(&l, "all")];
        let msg = Message {
            id: "ID1",
            reverse_path: "s@example.org",
            recipients: &all,
            body: Body::new(&file, envelope.len() as u64, message.len() as u64),
            received: crate::smtp::trace::UnixTime::from_secs(0),
            dsn: crate::delivery::Dsn::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let a = l.attempt(&msg, deadline);
        assert!(a.failed.is_empty(), "{:?}", a.failed);
        assert_eq!((a.pipes, a.kept()), (1, 3));
        let outcomes = l.commit(a.held, msg.id, deadline);
        assert!(outcomes.iter().all(|o| o.status == Status::Delivered));
        let prefix = |to: &str| format!("Return-Path: <s@example.org>\nDelivered-To: {to}\n");
        let want = |to: &str| [prefix(to).as_bytes(), &message[..]].concat();
        let piped = std::fs::read(dir.path().join("piped")).unwrap();
        assert_eq!(piped, want("all@example.org"));
        let new = std::fs::read_dir(dir.path().join("amy/new")).unwrap();
        let files: Vec<_> = new.map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::read(&files[0]).unwrap(), want("amy@example.org"));
        let mbox = std::fs::read(dir.path().join("bob")).unwrap();
        let mbox = String::from_utf8(mbox).unwrap();
        assert!(mbox.starts_with("From s@example.org "), "{mbox}");
        assert!(mbox.ends_with(
            "\nReturn-Path: <s@example.org>\nDelivered-To: bob@example.org\nReceived: from x\nSubject: range\n\n>From the start\n\n"
        ));
        assert_eq!(file.stream_position().unwrap(), 5);
    }

    #[test]
    fn failed_copies_have_outcomes_and_held_ones_can_be_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        // A Maildir where a file stands: that copy fails.
        std::fs::write(dir.path().join("amy"), "not a directory").unwrap();
        let l = local(dir.path(), "two: amy, bob\n");
        let spool = {
            let mut s = crate::delivery::spool::Spool::create(&dir.path().join("spool")).unwrap();
            s.write(b"Subject: x\n\nbody\n").unwrap();
            s
        };
        let two = [recipient(&l, "two")];
        let msg = Message {
            id: "ID2",
            reverse_path: "",
            recipients: &two,
            body: spool.body(),
            received: crate::smtp::trace::UnixTime::from_secs(0),
            dsn: crate::delivery::Dsn::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let a = l.attempt(&msg, deadline);
        assert_eq!(a.failed.len(), 1);
        let f = &a.failed[0];
        assert_eq!(
            (
                f.original.as_str(),
                f.recipient.as_str(),
                f.notify.as_str(),
                f.code
            ),
            ("two@example.org", "amy@example.org", "", "4.3.0")
        );
        assert!(matches!(&f.status, Status::Deferred(e) if e.kind == Failure::Temporary));
        assert_eq!(a.kept(), 1);
        assert!(a.held.holds(&Target::Mbox(dir.path().join("bob"))));
        assert_eq!(
            plan::decide(&a.failed, a.kept()),
            plan::Decision::Report {
                failure: f.status.error().unwrap().clone()
            }
        );
        l.abort(a.held, deadline);
        assert_eq!(std::fs::read(dir.path().join("bob")).unwrap(), b"");
    }

    #[test]
    fn a_failed_append_gives_its_journal_slot_back() {
        let dir = tempfile::tempdir().unwrap();
        // An mbox that is a symbolic link is refused before anything is
        // journaled.
        std::os::unix::fs::symlink("/dev/null", dir.path().join("bob")).unwrap();
        let l = local(dir.path(), "");
        let spool = {
            let mut s = crate::delivery::spool::Spool::create(&dir.path().join("spool")).unwrap();
            s.write(b"Subject: x\n\nbody\n").unwrap();
            s
        };
        let bob = [recipient(&l, "bob")];
        for _ in 0..5 {
            let msg = Message {
                id: "ID3",
                reverse_path: "",
                recipients: &bob,
                body: spool.body(),
                received: crate::smtp::trace::UnixTime::from_secs(0),
                dsn: crate::delivery::Dsn::default(),
            };
            let a = l.attempt(&msg, Instant::now() + Duration::from_secs(30));
            assert_eq!(a.failed.len(), 1, "the symbolic link is refused");
            l.abort(a.held, Instant::now() + Duration::from_secs(30));
        }
        let journal = std::fs::read_dir(dir.path().join("spool/journal")).unwrap();
        assert_eq!(journal.count(), 1, "one slot, used again each time");
    }
}
