//! Who may submit mail: the users file named by `auth.users`, one
//! `login:hash` a line, and the check of a password against it.
//!
//! Hashes are crypt(3) strings, verified by RustCrypto's crates: argon2id
//! (what `mailroom passwd` writes; argon2i and argon2d too), and the forms
//! found in /etc/shadow, SHA-512-crypt and SHA-256-crypt (`$6$`, `$5$`) and
//! yescrypt (`$y$`), so that a line may be copied from there (fields after
//! the hash are ignored). Every check costs one hash computation, whether
//! the login exists or not: an unknown login is checked against another
//! entry's hash and then refused, so the time taken does not say which
//! logins exist. The comparison of hash outputs is the crates' own,
//! in constant time.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// An argon2id hash with the default parameters, of a password nobody
/// knows: what an unknown login is checked against when the file has no
/// entry to borrow.
const STAND_IN: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c3RhbmQtaW4tc2FsdA$WuhGfv5zlfgWv1R0vJuvkqUjeRdwCl6Dm4S7UE+XuFQ";

/// The users file, read.
#[derive(Clone, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// An entry's hash, for unknown logins.
    stand_in: Option<String>,
}

/// The logins, never the hashes.
impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut logins: Vec<&String> = self.hashes.keys().collect();
        logins.sort();
        f.debug_struct("Users").field("logins", &logins).finish()
    }
}

/// The schemes verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Argon2,
    ShaCrypt,
    Yescrypt,
}

fn scheme(hash: &str) -> Option<Scheme> {
    let id = hash.strip_prefix('$')?.split('$').next()?;
    match id {
        "argon2id" | "argon2i" | "argon2d" => Some(Scheme::Argon2),
        "6" | "5" => Some(Scheme::ShaCrypt),
        "y" => Some(Scheme::Yescrypt),
        _ => None,
    }
}

/// Whether `password` matches `hash`; false for a hash that cannot be
/// read.
fn matches(hash: &str, password: &str) -> bool {
    let password = password.as_bytes();
    match scheme(hash) {
        Some(Scheme::Argon2) => Argon2::default().verify_password(password, hash).is_ok(),
        Some(Scheme::ShaCrypt) => sha_crypt::ShaCrypt::default()
            .verify_password(password, hash)
            .is_ok(),
        Some(Scheme::Yescrypt) => yescrypt::Yescrypt::default()
            .verify_password(password, hash)
            .is_ok(),
        None => false,
    }
}

/// Whether `hash` is one this module can verify: its scheme is known and
/// its string well formed.
fn readable(hash: &str) -> bool {
    match scheme(hash) {
        Some(Scheme::Argon2) => argon2::PasswordHash::new(hash).is_ok(),
        Some(Scheme::ShaCrypt) => sha_crypt::PasswordHashRef::new(hash).is_ok(),
        Some(Scheme::Yescrypt) => yescrypt::PasswordHashRef::new(hash).is_ok(),
        None => false,
    }
}

impl Users {
    /// Parses the file's text: `login:hash`, blank lines and `#` comments
    /// skipped. Errors name the line.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut users = Users::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |what: String| format!("line {}: {what}", i + 1);
            let (login, rest) = line.split_once(':').unwrap_or(("", ""));
            let hash = rest.split(':').next().unwrap_or("");
            if login.is_empty() || login.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(at("expected login:hash, the login without spaces".into()));
            }
            if scheme(hash).is_none() {
                return Err(at(format!(
                    "{login}: not a hash this server verifies (argon2id, $6$, $5$ or $y$; \
                     mailroom passwd {login} writes one)"
                )));
            }
            if !readable(hash) {
                return Err(at(format!("{login}: the hash is malformed")));
            }
            if users.hashes.contains_key(login) {
                return Err(at(format!("{login} appears twice")));
            }
            users.stand_in.get_or_insert_with(|| hash.to_string());
            users.hashes.insert(login.to_string(), hash.to_string());
        }
        Ok(users)
    }

    /// Reads the file, which others may not read.
    pub fn load(path: &Path) -> Result<Users, String> {
        let fail = |e: String| format!("auth.users: {}: {e}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if meta.permissions().mode() & 0o007 != 0 {
            return Err(fail("may be read by others: chmod o-rwx it".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Users::parse(&text).map_err(fail)
    }

    /// Whether `login` exists and `password` is its password. Costs one
    /// hash computation either way.
    pub fn check(&self, login: &str, password: &str) -> bool {
        match self.hashes.get(login) {
            Some(hash) => matches(hash, password),
            None => {
                let _ = matches(self.stand_in.as_deref().unwrap_or(STAND_IN), password);
                false
            }
        }
    }

    pub fn contains(&self, login: &str) -> bool {
        self.hashes.contains_key(login)
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// A new argon2id hash of `password`, with a random salt and the default
/// parameters (19 MiB, 2 passes).
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// The file's text with `login`'s line set to `hash`: replaced where it
/// is, else added at the end. Every other line stays as it was.
pub fn set(text: &str, login: &str, hash: &str) -> String {
    let entry = format!("{login}:{hash}");
    let mut out = String::with_capacity(text.len() + entry.len() + 1);
    let mut found = false;
    for line in text.lines() {
        let is_login = line.trim_start().split(':').next() == Some(login) && line.contains(':');
        if is_login && !found {
            out.push_str(&entry);
            found = true;
        } else if !is_login {
            out.push_str(line);
        } else {
            continue;
        }
        out.push('\n');
    }
    if !found {
        out.push_str(&entry);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `mkpasswd -m yescrypt` and `openssl passwd -6` (Debian 12),
    // all of "pass word".
    const YESCRYPT: &str =
        "$y$j9T$N3zLYwC5IjWA2Adtow/890$CcntUnA19Qa/q8d47c.kb4BHGS7PuUVdjxnMe2dtmTB";
    const SHA512: &str = "$6$abcdefgh$YN8B0zmx4g7gHNsAPRHBHL7/9D2xv7Ojh6WbPzJjQGPPjUs3FiTtHkWxn/GwRo78ZpAtbvjbXJsaUxh7djdaf0";

    #[test]
    fn each_scheme_verifies_its_own_password_only() {
        let argon = hash("pass word").unwrap();
        assert!(
            argon.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{argon}"
        );
        let text = format!(
            "# printers\nprinter:{argon}\n\nnas:{SHA512}\ncam:{YESCRYPT}:19000:0:99999:7:::\n"
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 3);
        for login in ["printer", "nas", "cam"] {
            assert!(users.check(login, "pass word"), "{login}");
            assert!(!users.check(login, "pass words"), "{login}");
            assert!(!users.check(login, ""), "{login}");
        }
        // Another entry's password is no key to an unknown login, nor to
        // one that is not its own.
        assert!(!users.check("ghost", "pass word"));
        assert!(!users.check("Printer", "pass word"));
    }

    #[test]
    fn the_stand_in_hash_is_argon2id_with_the_default_parameters() {
        assert!(readable(STAND_IN));
        let made = hash("x").unwrap();
        let params = |h: &str| h.split('$').nth(3).map(str::to_string);
        assert_eq!(params(STAND_IN), params(&made));
        assert!(!Users::default().check("anyone", ""));
    }

    #[test]
    fn bad_lines_are_named() {
        let cases = [
            ("alice\n", "line 1: expected login:hash"),
            (":$6$x$y\n", "line 1: expected login:hash"),
            ("al ice:$6$x$y\n", "line 1: expected login:hash"),
            ("\n#\nbob:secret\n", "line 3: bob: not a hash"),
            ("bob:$1$abc$def\n", "line 1: bob: not a hash"),
            (
                "bob:$argon2id$nonsense\n",
                "line 1: bob: the hash is malformed",
            ),
            (
                &format!("bob:{SHA512}\nbob:{SHA512}\n"),
                "line 2: bob appears twice",
            ),
        ];
        for (text, want) in cases {
            let e = Users::parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn set_replaces_or_appends_and_keeps_the_rest() {
        let text = "# users\nalice:$6$a$b\nbob:$6$c$d\n";
        assert_eq!(
            set(text, "alice", "$y$new"),
            "# users\nalice:$y$new\nbob:$6$c$d\n"
        );
        assert_eq!(
            set(text, "carol", "$y$new"),
            "# users\nalice:$6$a$b\nbob:$6$c$d\ncarol:$y$new\n"
        );
        assert_eq!(set("", "carol", "$y$new"), "carol:$y$new\n");
        // A prefix of another login is not that login.
        assert_eq!(set("alicia:x\n", "alice", "h"), "alicia:x\nalice:h\n");
    }

    #[test]
    fn the_file_may_not_be_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, format!("nas:{SHA512}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Users::load(&path).unwrap_err();
        assert!(e.contains("may be read by others"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Users::load(&path).unwrap().check("nas", "pass word"));
    }

    #[test]
    fn debug_shows_logins_not_hashes() {
        let users = Users::parse(&format!("nas:{SHA512}\n")).unwrap();
        let shown = format!("{users:?}");
        assert!(
            shown.contains("nas") && !shown.contains("abcdefgh"),
            "{shown}"
        );
    }
}
