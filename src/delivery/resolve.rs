//! Recipient resolution: what one local address expands to, decided at
//! RCPT time so that a bad address is refused then and never bounced
//! later.
//!
//! A name is looked up first in the aliases (whose values may be other
//! aliases, users, remote addresses, `/files`, `|pipes` and `:include:`
//! lists), then among the virtual mailboxes, then among the system
//! accounts, whose `~/.forward` may redirect them. Expansion is bounded and
//! loops are reported with their chain. A list whose `owner-NAME` alias
//! exists gets that owner as envelope sender for its members.

use super::aliases::{self, Aliases, Include, Target as AliasTarget};
use super::{Account, Dest, Lookup, Missing, Recipient, RunAs, Target};
use crate::config::{self, Config};
use crate::smtp::address::Mailbox;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Copies one recipient may expand to.
const MAX_DESTS: usize = 1000;
/// Expansion steps one recipient may take: each member of an alias,
/// include file or `.forward` is one. A list of as many members as
/// it may have copies takes as many steps; the rest is room for the
/// aliases and includes on the way and for members that name nothing or
/// repeat, and still bounds the work of one lookup.
const MAX_STEPS: usize = 2 * MAX_DESTS;
/// Aliases, include files and `.forward`s one may lead through, each
/// naming the next. Lists rarely nest more than a few deep (sendmail
/// allows 10); the expansion recurses once per level, so this bound also
/// keeps it well within a worker's stack.
const MAX_DEPTH: usize = 20;
/// The overflow uids, which ids no one has map to (nobody's 65534, old
/// NFS's 4294967294), and (uid_t)-1, which is no uid at all: their
/// accounts pass any minimum uid, yet no one reads mail as them.
const OVERFLOW_UIDS: [u32; 3] = [65534, u32::MAX - 1, u32::MAX];
/// Largest `.forward` read.
const MAX_FORWARD: u64 = 64 * 1024;

/// The passwd database, behind a trait so that tests can supply accounts.
pub trait Directory: Send + Sync {
    fn account(&self, name: &str) -> Option<Account>;
    fn account_by_uid(&self, uid: u32) -> Option<Account>;
}

/// The system's passwd database (NSS, through getpwnam_r).
pub struct Passwd;

impl Directory for Passwd {
    fn account(&self, name: &str) -> Option<Account> {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(account)
    }

    fn account_by_uid(&self, uid: u32) -> Option<Account> {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(account)
    }
}

fn account(u: nix::unistd::User) -> Account {
    Account {
        full_name: gecos_name(&u.gecos.to_string_lossy()),
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    }
}

/// The full name in a GECOS field: its first comma-separated part.
fn gecos_name(gecos: &str) -> String {
    gecos.split(',').next().unwrap_or("").trim().to_string()
}

pub struct Resolver<'a> {
    pub config: &'a Config,
    pub aliases: &'a Aliases,
    pub directory: &'a dyn Directory,
    /// Privileges of `/file` and `|pipe` targets of the aliases file.
    pub alias_privileges: RunAs,
    /// The server's effective uid: only root can run a user's commands
    /// as that user.
    pub euid: u32,
}

/// The state of one expansion.
struct Walk {
    dests: Vec<Dest>,
    missing: Vec<Missing>,
    /// Alias names and include files on the current path, for loops.
    chain: Vec<String>,
    steps: usize,
    full_name: Option<String>,
}

/// Where a list of members comes from: that decides what they may name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The aliases file: the administrator's.
    Aliases,
    /// A user's `.forward`.
    Forward { uid: u32 },
    /// An `:include:` file; `forward` is the uid of the `.forward` it was
    /// named in, if it was.
    Include { forward: Option<u32> },
}

/// What a branch of the expansion inherits.
#[derive(Clone)]
struct Context {
    domain: String,
    sender: Option<String>,
    /// Whose privileges files and commands named here run with.
    run_as: RunAs,
    /// The alias or user whose members these are: a member naming it
    /// again means its own mailbox (aliases(5)), not a loop.
    expanding: Option<String>,
    source: Source,
}

impl Resolver<'_> {
    /// Resolves a local part at one of our domains.
    pub fn resolve(&self, local: &str, domain: &str) -> Lookup {
        let Some(name) = self.fold(local) else {
            return Lookup::UnknownUser;
        };
        let mut walk = Walk {
            dests: Vec::new(),
            missing: Vec::new(),
            chain: Vec::new(),
            steps: 0,
            full_name: None,
        };
        let ctx = Context {
            domain: domain.to_ascii_lowercase(),
            sender: None,
            run_as: self.alias_privileges.clone(),
            expanding: None,
            source: Source::Aliases,
        };
        match self.name(&name, &ctx, &mut walk, false) {
            Ok(true) if walk.dests.is_empty() => {
                log::warn!("{name}@{domain}: expands to nothing deliverable");
                Lookup::UnknownUser
            }
            Ok(true) => Lookup::Local(Recipient {
                address: format!("{name}@{}", ctx.domain),
                full_name: walk.full_name,
                dests: walk.dests,
                missing: walk.missing,
            }),
            Ok(false) => Lookup::UnknownUser,
            Err(e) => e,
        }
    }

    /// The lookup key of a local part, or `None` if it can never name a
    /// mailbox. Postmaster is case-insensitive whatever the setting
    /// (RFC 5321 4.5.1).
    fn fold(&self, local: &str) -> Option<String> {
        if config::bad_local_part(local).is_some() {
            return None;
        }
        Some(
            if self.config.case_insensitive_users || local.eq_ignore_ascii_case("postmaster") {
                local.to_lowercase()
            } else {
                local.to_string()
            },
        )
    }

    /// Counts one member, so that no set of files can make a lookup run
    /// long.
    fn step(&self, w: &mut Walk) -> Result<(), Lookup> {
        w.steps += 1;
        if w.steps > MAX_STEPS {
            return Err(Lookup::Loop(format!(
                "more than {MAX_STEPS} expansion steps"
            )));
        }
        Ok(())
    }

    /// Expands a name; `Ok(false)` when nothing knows it. `terminal`: the
    /// name is a user's own mailbox (`\user`, or a name in its own alias
    /// or `.forward`), not to be expanded again.
    fn name(
        &self,
        name: &str,
        ctx: &Context,
        w: &mut Walk,
        terminal: bool,
    ) -> Result<bool, Lookup> {
        if !terminal {
            if let Some(targets) = self.aliases.get(name) {
                self.enter(name, w)?;
                let mut inner = Context {
                    expanding: Some(name.to_string()),
                    source: Source::Aliases,
                    run_as: self.alias_privileges.clone(),
                    ..ctx.clone()
                };
                if self.aliases.get(&format!("owner-{name}")).is_some() {
                    inner.sender = Some(format!("owner-{name}@{}", ctx.domain));
                }
                for t in targets {
                    self.target(t, &inner, w)?;
                }
                w.chain.pop();
                return Ok(true);
            }
        }
        if let Some(mb) = self.config.mailboxes.get(name) {
            if w.chain.is_empty() {
                w.full_name.clone_from(&mb.full_name);
            }
            self.push(w, Target::from(&mb.store), RunAs::Server, name, ctx)?;
            return Ok(true);
        }
        if !self.config.system_users {
            return Ok(false);
        }
        let Some(account) = self.directory.account(name) else {
            return Ok(false);
        };
        let users = &self.config.users;
        let system = account.uid < users.min_uid || OVERFLOW_UIDS.contains(&account.uid);
        if system && !users.allow.iter().any(|a| a == name) {
            return Ok(false);
        }
        if w.chain.is_empty() && !account.full_name.is_empty() {
            w.full_name = Some(account.full_name.clone());
        }
        if !terminal && users.forward {
            if let Some(targets) = self.forward(&account)? {
                self.enter(&format!("~{name}/.forward"), w)?;
                // Files and commands in a .forward run as its owner, and
                // never as root: root's get the aliases' privileges.
                let run_as = if account.uid == 0 {
                    self.alias_privileges.clone()
                } else {
                    RunAs::Account(account.clone())
                };
                let inner = Context {
                    run_as,
                    expanding: Some(name.to_string()),
                    source: Source::Forward { uid: account.uid },
                    ..ctx.clone()
                };
                for t in &targets {
                    self.target(t, &inner, w)?;
                }
                w.chain.pop();
                return Ok(true);
            }
        }
        let Some(store) = users.store.expand(name, &account.home) else {
            return Err(Lookup::TempFail(format!(
                "{name}: the mailbox template gives no safe path"
            )));
        };
        self.push(w, Target::from(&store), RunAs::Account(account), name, ctx)?;
        Ok(true)
    }

    fn target(&self, t: &AliasTarget, ctx: &Context, w: &mut Walk) -> Result<(), Lookup> {
        self.step(w)?;
        match t {
            AliasTarget::Address(a) => {
                let (escaped, a) = match a.strip_prefix('\\') {
                    Some(rest) => (true, rest),
                    None => (false, a.as_str()),
                };
                let (local, domain) = match a.rsplit_once('@') {
                    None => (a.to_string(), ctx.domain.clone()),
                    Some(_) => {
                        let m = Mailbox::parse(a)
                            .map_err(|e| Lookup::TempFail(format!("alias member {a}: {e}")))?;
                        if !super::is_local(self.config, &m.domain) {
                            if self.config.relay.is_none() {
                                return Err(Lookup::Remote(a.to_string()));
                            }
                            let to = m.to_string();
                            return self.push_dest(
                                w,
                                Target::Forward(to.clone()),
                                RunAs::Server,
                                to,
                                ctx,
                            );
                        }
                        (m.local, m.domain.to_string().to_ascii_lowercase())
                    }
                };
                let inner = Context {
                    domain,
                    ..ctx.clone()
                };
                let known = match self.fold(&local) {
                    Some(name) => {
                        // `\name`, or the alias or user being expanded
                        // naming itself: its own mailbox.
                        let own = escaped || ctx.expanding.as_deref() == Some(name.as_str());
                        self.name(&name, &inner, w, own)?
                    }
                    None => false,
                };
                if !known {
                    missing(w, format!("{local}@{}", inner.domain), ctx);
                }
                Ok(())
            }
            // It writes nothing, so it needs no privileges.
            AliasTarget::File(path)
                if path.components().eq(Path::new("/dev/null").components()) =>
            {
                let address = self.chain_address(w, ctx);
                self.push_dest(w, Target::Discard, ctx.run_as.clone(), address, ctx)
            }
            AliasTarget::File(path) => {
                self.may_write(ctx, &path.display().to_string())?;
                let address = self.chain_address(w, ctx);
                // A path ending in `/` is a Maildir, as in Postfix.
                let target = if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
                    Target::Maildir(path.clone())
                } else {
                    Target::Mbox(path.clone())
                };
                self.push_dest(w, target, ctx.run_as.clone(), address, ctx)
            }
            AliasTarget::Pipe(command) => {
                self.may_write(ctx, &format!("|{command}"))?;
                let address = self.chain_address(w, ctx);
                self.push_dest(
                    w,
                    Target::Pipe(command.clone()),
                    ctx.run_as.clone(),
                    address,
                    ctx,
                )
            }
            AliasTarget::Include(path) => {
                let key = format!(":include:{}", path.display());
                self.enter(&key, w)?;
                let forward = match ctx.source {
                    Source::Forward { uid } => Some(uid),
                    Source::Include { forward } => forward,
                    Source::Aliases => None,
                };
                // Named in a .forward, an include file must be its user's:
                // root reads it, and must not read others' files for them.
                let members = match aliases::load_include(path, forward) {
                    Ok(Include::Members(m)) => m,
                    Ok(Include::Foreign { owner }) => {
                        return Err(Lookup::Refused(format!(
                            "{}: included from a .forward of uid {}, but owned by uid {owner}",
                            path.display(),
                            forward.unwrap_or(0)
                        )))
                    }
                    Err(e) => return Err(Lookup::TempFail(e.to_string())),
                };
                let inner = Context {
                    source: Source::Include { forward },
                    ..ctx.clone()
                };
                for m in &members {
                    self.target(m, &inner, w)?;
                }
                w.chain.pop();
                Ok(())
            }
        }
    }

    /// Whether members from this source may name files and commands. As
    /// Postfix's defaults have it: the aliases file and a `.forward` may,
    /// an `:include:` file may not. A `.forward`'s run as its user, which
    /// only a server running as root can do.
    fn may_write(&self, ctx: &Context, what: &str) -> Result<(), Lookup> {
        match (ctx.source, &ctx.run_as) {
            (Source::Include { .. }, _) => Err(Lookup::Refused(format!(
                "{what}: an :include: file may not name files or commands"
            ))),
            (Source::Forward { uid }, _) if self.euid != 0 && self.euid != uid => {
                Err(Lookup::Refused(format!(
                    "{what}: files and commands in a .forward need the server to run as root"
                )))
            }
            _ => Ok(()),
        }
    }

    fn enter(&self, key: &str, w: &mut Walk) -> Result<(), Lookup> {
        let looped = w.chain.iter().any(|c| c == key);
        let deep = w.chain.len() >= MAX_DEPTH;
        w.chain.push(key.to_string());
        if looped || deep {
            let chain = w.chain.join(" -> ");
            return Err(Lookup::Loop(if looped {
                chain
            } else {
                format!("nested more than {MAX_DEPTH} deep: {chain}")
            }));
        }
        Ok(())
    }

    /// The address a file or pipe copy is delivered under: the nearest
    /// alias (or the user whose .forward) named it.
    fn chain_address(&self, w: &Walk, ctx: &Context) -> String {
        let name = w
            .chain
            .iter()
            .rev()
            .find(|c| !c.starts_with(":include:"))
            .map(|c| c.trim_start_matches('~').trim_end_matches("/.forward"))
            .unwrap_or("postmaster");
        format!("{name}@{}", ctx.domain)
    }

    fn push(
        &self,
        w: &mut Walk,
        target: Target,
        run_as: RunAs,
        name: &str,
        ctx: &Context,
    ) -> Result<(), Lookup> {
        let address = format!("{name}@{}", ctx.domain);
        self.push_dest(w, target, run_as, address, ctx)
    }

    fn push_dest(
        &self,
        w: &mut Walk,
        target: Target,
        run_as: RunAs,
        address: String,
        ctx: &Context,
    ) -> Result<(), Lookup> {
        // One copy per mailbox, however many ways (and accounts) lead there.
        let target = target.normalized();
        if w.dests.iter().any(|d| d.target == target) {
            return Ok(());
        }
        if w.dests.len() >= MAX_DESTS {
            return Err(Lookup::Loop(format!("more than {MAX_DESTS} copies")));
        }
        w.dests.push(Dest {
            target,
            run_as,
            address,
            sender: ctx.sender.clone(),
        });
        Ok(())
    }

    /// The targets of a user's `~/.forward`, if it exists and is safe: a
    /// regular file owned by the user and not writable by group or others,
    /// as OpenSMTPD requires. An unsafe one is ignored with a warning; one
    /// that cannot be read now is a temporary failure.
    fn forward(&self, account: &Account) -> Result<Option<Vec<AliasTarget>>, Lookup> {
        let path = account.home.join(".forward");
        let temp = |e: &dyn std::fmt::Display| Lookup::TempFail(format!("{}: {e}", path.display()));
        let file = match File::options()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                log::warn!("{}: a symbolic link; ignored", path.display());
                return Ok(None);
            }
            Err(e) => return Err(temp(&e)),
        };
        let meta = file.metadata().map_err(|e| temp(&e))?;
        if !meta.is_file() || meta.uid() != account.uid || meta.mode() & 0o022 != 0 {
            log::warn!(
                "{}: ignored: must be a regular file owned by {} and not group- or world-writable",
                path.display(),
                account.name
            );
            return Ok(None);
        }
        if meta.len() > MAX_FORWARD {
            log::warn!(
                "{}: larger than {MAX_FORWARD} bytes; ignored",
                path.display()
            );
            return Ok(None);
        }
        let mut text = Vec::new();
        file.take(MAX_FORWARD)
            .read_to_end(&mut text)
            .map_err(|e| temp(&e))?;
        let targets = aliases::parse_include(&text, &path.display().to_string())
            .map_err(|e| Lookup::TempFail(e.to_string()))?;
        Ok((!targets.is_empty()).then_some(targets))
    }
}

/// A member that names no mailbox: logged, and reported after delivery.
fn missing(w: &mut Walk, address: String, ctx: &Context) {
    log::info!("list member <{address}>: no such mailbox");
    if w.missing.len() < MAX_DESTS && !w.missing.iter().any(|m| m.address == address) {
        w.missing.push(Missing {
            address,
            sender: ctx.sender.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Accounts by name; with `any`, every name has one (so that only the
    /// resolver's own checks can refuse a name).
    struct Fake {
        accounts: HashMap<String, Account>,
        any: bool,
    }

    fn account(name: &str, uid: u32, home: &str, gecos: &str) -> Account {
        Account {
            name: name.into(),
            uid,
            gid: uid,
            home: home.into(),
            full_name: gecos.into(),
        }
    }

    impl Directory for Fake {
        fn account(&self, name: &str) -> Option<Account> {
            match self.accounts.get(name) {
                Some(a) => Some(a.clone()),
                None if self.any => Some(account(name, 5000, &format!("/home/{name}"), "")),
                None => None,
            }
        }
        fn account_by_uid(&self, uid: u32) -> Option<Account> {
            self.accounts.values().find(|a| a.uid == uid).cloned()
        }
    }

    fn resolve(config: &str, aliases: &str, dir: &Fake, local: &str) -> Lookup {
        let config = Config::parse(
            &format!("hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n{config}"),
            "t",
        )
        .unwrap();
        let aliases = Aliases::parse(aliases.as_bytes(), "aliases").unwrap();
        resolve_as(&config, &aliases, dir, 0, local)
    }

    fn resolve_as(
        config: &Config,
        aliases: &Aliases,
        dir: &Fake,
        euid: u32,
        local: &str,
    ) -> Lookup {
        Resolver {
            config,
            aliases,
            directory: dir,
            alias_privileges: RunAs::Server,
            euid,
        }
        .resolve(local, "example.org")
    }

    fn targets(l: &Lookup) -> Vec<Target> {
        match l {
            Lookup::Local(r) => r.dests.iter().map(|d| d.target.clone()).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn users() -> Fake {
        let accounts = [
            account("alice", 1000, "/home/alice", "Alice Liddell"),
            account("daemon", 1, "/usr/sbin", ""),
            account("backup", 34, "/var/backups", ""),
            account("sly", 1001, "/home/../etc", ""),
            account("nobody", 65534, "/nonexistent", ""),
        ];
        Fake {
            accounts: accounts.into_iter().map(|a| (a.name.clone(), a)).collect(),
            any: false,
        }
    }

    #[test]
    fn no_local_part_or_home_can_escape_the_template() {
        let any = Fake {
            accounts: HashMap::new(),
            any: true,
        };
        let config = "system_users = true\n[users]\nmbox = \"/var/mail/{user}\"";
        assert_eq!(
            targets(&resolve(config, "", &any, "ok")),
            [Target::Mbox("/var/mail/ok".into())]
        );
        for bad in [
            "../etc/passwd",
            "a/b",
            ".hidden",
            "..",
            "x\u{0}y",
            "x\ny",
            "",
        ] {
            assert_eq!(
                resolve(config, "", &any, bad),
                Lookup::UnknownUser,
                "{bad:?}"
            );
        }
        // A home with `..` in it gives no path at all.
        let config = "system_users = true\n[users]\nmaildir = \"{home}/Maildir\"";
        assert!(matches!(
            resolve(config, "", &users(), "sly"),
            Lookup::TempFail(_)
        ));
        assert_eq!(
            targets(&resolve(config, "", &users(), "alice")),
            [Target::Maildir("/home/alice/Maildir".into())]
        );
    }

    #[test]
    fn system_accounts_need_the_minimum_uid_or_the_allow_list() {
        let config = "system_users = true\n[users]\nallow = [\"backup\"]";
        assert_eq!(resolve(config, "", &users(), "daemon"), Lookup::UnknownUser);
        // nobody is above any minimum, but no mail user either, unless
        // allowed.
        assert_eq!(resolve(config, "", &users(), "nobody"), Lookup::UnknownUser);
        let allowed = "system_users = true\n[users]\nallow = [\"nobody\"]";
        assert!(matches!(
            resolve(allowed, "", &users(), "nobody"),
            Lookup::Local(_)
        ));
        assert!(matches!(
            resolve(config, "", &users(), "backup"),
            Lookup::Local(_)
        ));
        assert!(matches!(
            resolve(config, "", &users(), "alice"),
            Lookup::Local(_)
        ));
        // Without system_users no account is a recipient.
        assert_eq!(resolve("", "", &users(), "alice"), Lookup::UnknownUser);
    }

    #[test]
    fn case_folding_and_full_names() {
        let config = "system_users = true";
        let Lookup::Local(r) = resolve(config, "", &users(), "Alice") else {
            panic!()
        };
        assert_eq!(
            (r.address.as_str(), r.full_name.as_deref()),
            ("alice@example.org", Some("Alice Liddell"))
        );
        let strict = "system_users = true\ncase_insensitive_users = false";
        assert_eq!(resolve(strict, "", &users(), "Alice"), Lookup::UnknownUser);
        assert!(matches!(
            resolve(strict, "postmaster: alice\n", &users(), "PostMaster"),
            Lookup::Local(_)
        ));
        // Through an alias the name is not the alias's.
        let Lookup::Local(r) = resolve(config, "boss: alice\n", &users(), "boss") else {
            panic!()
        };
        assert_eq!(r.full_name, None);
        assert_eq!(r.dests[0].address, "alice@example.org");
    }

    #[test]
    fn a_forward_names_files_and_commands_only_where_they_can_run_as_its_user() {
        let home = std::env::temp_dir().join(format!("mailroom-forward-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        let forward = home.join(".forward");
        std::fs::write(&forward, "\\me, \"|cat >/dev/null\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&forward, std::fs::Permissions::from_mode(0o644)).unwrap();
        let owner = std::fs::metadata(&forward).unwrap().uid();
        let me = account("me", owner, home.to_str().unwrap(), "");
        let dir = Fake {
            accounts: [("me".to_string(), me)].into(),
            any: false,
        };
        let config = Config::parse(
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\nsystem_users = true\n[users]\nmin_uid = 0",
            "t",
        )
        .unwrap();
        let aliases = Aliases::default();
        // As root, or as the .forward's own user: it runs as that user.
        for euid in [0, owner] {
            let l = resolve_as(&config, &aliases, &dir, euid, "me");
            assert!(
                matches!(&l, Lookup::Local(r) if r.dests.len() == 2),
                "{euid}: {l:?}"
            );
        }
        // As anyone else, it would run as the server: refused.
        let l = resolve_as(&config, &aliases, &dir, owner + 1, "me");
        assert!(
            matches!(&l, Lookup::Refused(why) if why.contains("need the server to run as root")),
            "{l:?}"
        );
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn a_list_may_have_as_many_members_as_copies_and_no_more() {
        let any = Fake {
            accounts: HashMap::new(),
            any: true,
        };
        let config = "system_users = true\n[users]\nmbox = \"/var/mail/{user}\"";
        let list = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
            format!("big: {}\n", members.join(", "))
        };
        assert_eq!(
            targets(&resolve(config, &list(MAX_DESTS), &any, "big")).len(),
            MAX_DESTS
        );
        assert_eq!(
            resolve(config, &list(MAX_DESTS + 1), &any, "big"),
            Lookup::Loop(format!("more than {MAX_DESTS} copies"))
        );
        // Members that name nothing still count: the work stays bounded.
        let ghosts: Vec<String> = (0..=MAX_STEPS).map(|i| format!("g{i}")).collect();
        let aliases = format!("ghosts: u0, {}\n", ghosts.join(", "));
        assert_eq!(
            resolve("", &aliases, &users(), "ghosts"),
            Lookup::Loop(format!("more than {MAX_STEPS} expansion steps"))
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let chain = |n: usize| -> String {
            (1..n)
                .map(|i| format!("a{i}: a{}\n", i + 1))
                .collect::<String>()
                + &format!("a{n}: alice\n")
        };
        let config = "system_users = true";
        assert!(matches!(
            resolve(config, &chain(MAX_DEPTH), &users(), "a1"),
            Lookup::Local(_)
        ));
        let Lookup::Loop(why) = resolve(config, &chain(MAX_DEPTH + 1), &users(), "a1") else {
            panic!()
        };
        assert!(
            why.starts_with(&format!("nested more than {MAX_DEPTH} deep: a1 -> a2 -> ")),
            "{why}"
        );
    }

    #[test]
    fn lists_owners_duplicates_and_missing_members() {
        let config = "[mailbox.bob]\nmaildir = \"/m/bob\"\n[mailbox.carol]\nmaildir = \"/m/carol\"";
        let aliases =
            "team: bob, carol, bob@example.org, ghost\nowner-team: carol\nall: team, carol\n";
        let Lookup::Local(r) = resolve(config, aliases, &users(), "all") else {
            panic!()
        };
        assert_eq!(
            targets(&Lookup::Local(r.clone())),
            [
                Target::Maildir("/m/bob".into()),
                Target::Maildir("/m/carol".into())
            ]
        );
        assert_eq!(r.dests[0].sender.as_deref(), Some("owner-team@example.org"));
        assert_eq!(
            r.missing,
            [Missing {
                address: "ghost@example.org".into(),
                sender: Some("owner-team@example.org".into())
            }]
        );
        assert!(
            matches!(resolve(config, "a: b\nb: a\n", &users(), "a"), Lookup::Loop(c) if c == "a -> b -> a")
        );
        // One mailbox, however its path is written.
        let Lookup::Local(r) = resolve("", "x: /m//box, /m/./box, /m/box\n", &users(), "x") else {
            panic!()
        };
        assert_eq!(targets(&Lookup::Local(r)), [Target::Mbox("/m/box".into())]);
        // /dev/null, however written, keeps nothing.
        assert_eq!(
            targets(&resolve("", "z: /dev/./null, /dev//null\n", &users(), "z")),
            [Target::Discard]
        );
        // A path ending in / is a Maildir.
        assert_eq!(
            targets(&resolve("", "y: /m/dir/\n", &users(), "y")),
            [Target::Maildir("/m/dir".into())]
        );
    }
}
