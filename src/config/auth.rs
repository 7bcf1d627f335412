//! The `[auth]` section: who may submit mail with AUTH (RFC 4954) on the
//! listeners that offer it (`auth = true`, `require_auth = true`).

use super::raw::RawAuth;
use super::{ConfigError, Errors};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The users file: `login:hash` a line (see `crate::auth`).
    pub users: PathBuf,
    /// What each login may give as MAIL FROM: addresses, and `@domain`
    /// for any address there. A login not named may use itself at any
    /// local domain, or itself when it is an address.
    pub senders: BTreeMap<String, Vec<String>>,
    /// Failed AUTH attempts from one address within `failure_window`
    /// after which it is refused at connect until they age out.
    pub max_failures: u32,
    pub failure_window: Duration,
}

pub(super) fn validate(a: RawAuth, e: &Errors) -> Result<Auth, ConfigError> {
    if a.users.as_os_str().is_empty() {
        return Err(e.at("auth.users", "empty path"));
    }
    e.range("auth.max_failures", u64::from(a.max_failures), 1, 1000, "")?;
    e.range(
        "auth.failure_window",
        a.failure_window,
        1,
        86400,
        " (seconds)",
    )?;
    for (login, allowed) in &a.senders {
        for s in allowed {
            let valid = match s.strip_prefix('@') {
                Some(domain) => super::is_hostname(domain),
                None => s
                    .split_once('@')
                    .is_some_and(|(local, domain)| !local.is_empty() && super::is_hostname(domain)),
            };
            if !valid {
                return Err(e.at(
                    &format!("auth.senders.{login}"),
                    format!("{s:?} is neither an address nor @domain"),
                ));
            }
        }
    }
    Ok(Auth {
        users: a.users,
        senders: a.senders,
        max_failures: a.max_failures,
        failure_window: Duration::from_secs(a.failure_window),
    })
}
