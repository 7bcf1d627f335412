//! Where mail is kept: the `[mailbox.NAME]` tables (virtual mailboxes)
//! and the `[users]` section (the mailboxes of system accounts, from a
//! path template).

use super::raw::{RawMailbox, RawUsers};
use super::{bad_local_part, ConfigError, Errors};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// A mailbox declared in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualMailbox {
    pub store: Store,
    /// The owner's name, for VRFY.
    pub full_name: Option<String>,
}

/// Where a mailbox's mail is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Store {
    Maildir(PathBuf),
    Mbox(PathBuf),
}

/// How system users are delivered to.
#[derive(Debug, Clone, PartialEq)]
pub struct Users {
    /// Accounts below this uid, or with an overflow uid (nobody's), are
    /// not mail users...
    pub min_uid: u32,
    /// ...unless named here.
    pub allow: Vec<String>,
    /// Path template with `{user}` and `{home}`: a Maildir or an mbox.
    pub store: StoreTemplate,
    /// Honour `~/.forward`.
    pub forward: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreTemplate {
    Maildir(String),
    Mbox(String),
}

impl StoreTemplate {
    /// The store of one user: placeholders replaced. `None` if the result
    /// would not be a clean absolute path (a `..` or an empty component):
    /// no template can lead outside what it names.
    pub fn expand(&self, user: &str, home: &Path) -> Option<Store> {
        let (t, maildir) = match self {
            StoreTemplate::Maildir(t) => (t, true),
            StoreTemplate::Mbox(t) => (t, false),
        };
        if bad_local_part(user).is_some() {
            return None;
        }
        let home = home.to_str()?;
        let path = PathBuf::from(t.replace("{user}", user).replace("{home}", home));
        let clean = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let store = if maildir {
            Store::Maildir(path)
        } else {
            Store::Mbox(path)
        };
        clean.then_some(store)
    }
}

/// The `[mailbox.NAME]` tables, by local part (lower case when
/// `fold_case`).
pub(super) fn validate_mailboxes(
    raw: BTreeMap<String, RawMailbox>,
    fold_case: bool,
    e: &Errors,
) -> Result<BTreeMap<String, VirtualMailbox>, ConfigError> {
    let mut mailboxes = BTreeMap::new();
    for (name, mb) in raw {
        let key = format!("mailbox.{name}");
        if let Some(why) = bad_local_part(&name) {
            return Err(e.at(&key, format!("{name:?} cannot be a mailbox name: {why}")));
        }
        let store = match (mb.maildir, mb.mbox) {
            (Some(p), None) if !p.as_os_str().is_empty() => Store::Maildir(p),
            (None, Some(p)) if !p.as_os_str().is_empty() => Store::Mbox(p),
            (Some(_), Some(_)) => return Err(e.at(&key, "give maildir or mbox, not both")),
            _ => return Err(e.at(&key, "needs a maildir or mbox path")),
        };
        let name = if fold_case { name.to_lowercase() } else { name };
        if mb
            .name
            .as_deref()
            .is_some_and(|n| n.chars().any(char::is_control) || n.len() > 200)
        {
            return Err(e.at(&key, "name: at most 200 characters, no control characters"));
        }
        let mailbox = VirtualMailbox {
            store,
            full_name: mb.name.filter(|n| !n.trim().is_empty()),
        };
        if mailboxes.insert(name.clone(), mailbox).is_some() {
            return Err(e.at(
                &key,
                format!("{name:?} is declared twice (names are case-insensitive)"),
            ));
        }
    }
    Ok(mailboxes)
}

/// The `[users]` section.
pub(super) fn validate_users(u: RawUsers, e: &Errors) -> Result<Users, ConfigError> {
    let store = match (u.maildir, u.mbox) {
        (Some(t), None) => StoreTemplate::Maildir(t),
        (None, Some(t)) => StoreTemplate::Mbox(t),
        (None, None) => StoreTemplate::Maildir("{home}/Maildir".into()),
        (Some(_), Some(_)) => return Err(e.at("users", "give maildir or mbox, not both")),
    };
    let (key, text) = match &store {
        StoreTemplate::Maildir(t) => ("users.maildir", t),
        StoreTemplate::Mbox(t) => ("users.mbox", t),
    };
    let unknown = text.replace("{user}", "").replace("{home}", "");
    if unknown.contains(['{', '}']) {
        return Err(e.at(key, "only {user} and {home} can be used"));
    }
    if store.expand("user", Path::new("/home/user")).is_none() {
        return Err(e.at(
            key,
            format!("{text:?} must give an absolute path without \"..\""),
        ));
    }
    Ok(Users {
        min_uid: u.min_uid,
        allow: u.allow,
        store,
        forward: u.forward,
    })
}
