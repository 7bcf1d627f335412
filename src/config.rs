//! Configuration: the TOML file is read into a raw, serde-shaped struct and
//! then validated in one place into [`Config`], whose values are ready to
//! use (addresses parsed, durations typed, names normalised). Every error
//! names the file and the key.
//!
//! The defaults written here are the ones documented in the shipped
//! `etc/mailroom.toml`; a test keeps the two in step.

use crate::smtp::data::BareNewline;
use crate::smtp::session;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shipped configuration, used when no `--config` is given.
pub const EMBEDDED: &str = include_str!("../etc/mailroom.toml");
pub const EMBEDDED_NAME: &str = "<embedded etc/mailroom.toml>";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Our name in the greeting, in `Received:` and in replies.
    pub hostname: String,
    /// Domains we deliver for, lower case.
    pub local_domains: Vec<String>,
    pub reverse_dns: bool,
    pub strict_helo: bool,
    /// What a bare LF or CR inside DATA means.
    pub bare_newline: BareNewline,
    pub vrfy: bool,
    pub expn: bool,
    pub case_insensitive_users: bool,
    /// Where message bodies are spooled while they arrive.
    pub spool_dir: PathBuf,
    pub server: Server,
    pub timeouts: Timeouts,
    /// Virtual mailboxes by local part (lower case when
    /// `case_insensitive_users` is on).
    pub mailboxes: BTreeMap<String, VirtualMailbox>,
    /// The aliases file, if any.
    pub aliases: Option<PathBuf>,
    /// Deliver to the accounts of the passwd database.
    pub system_users: bool,
    pub users: Users,
    /// Whose privileges alias pipes and files run with when the server is
    /// root and nothing better is known (never root itself).
    pub pipe_user: String,
    /// The certificate and key for STARTTLS and implicit TLS; without
    /// them nothing TLS is offered.
    pub tls: Option<TlsFiles>,
}

/// PEM files: the full certificate chain, and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One listening address and what it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// TLS from the first byte (RFC 8314), not STARTTLS.
    pub implicit_tls: bool,
    /// No mail before STARTTLS (`530 5.7.0`).
    pub require_tls: bool,
}

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
        if crate::config::bad_local_part(user).is_some() {
            return None;
        }
        let home = home.to_str()?;
        let path = PathBuf::from(t.replace("{user}", user).replace("{home}", home));
        let clean = path.is_absolute()
            && path.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
        let store = if maildir {
            Store::Maildir(path)
        } else {
            Store::Mbox(path)
        };
        clean.then_some(store)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// The plain listeners (`listen`) and then the implicit TLS ones
    /// (`smtps`).
    pub listen: Vec<Listener>,
    pub workers: usize,
    pub handoff_queue: usize,
    pub max_connections_per_ip: usize,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_command_line: usize,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub command: Duration,
    pub data_block: Duration,
    pub data_total: Duration,
    /// How long a pipe delivery may run before it is killed.
    pub pipe: Duration,
    /// How long a delivery waits for an mbox's locks.
    pub mbox_lock: Duration,
    /// How long the delivery of one message may take in all, well within
    /// the 10 minutes a client waits for the reply to its final dot.
    pub delivery: Duration,
}

/// A configuration error: the file, the key when one is to blame, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {}: {}", self.file, key, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<String>,
    local_domains: Option<Vec<String>>,
    #[serde(default)]
    reverse_dns: bool,
    #[serde(default)]
    strict_helo: bool,
    #[serde(default)]
    bare_newline: RawBareNewline,
    #[serde(default)]
    vrfy: bool,
    #[serde(default)]
    expn: bool,
    #[serde(default = "yes")]
    case_insensitive_users: bool,
    #[serde(default = "default_spool_dir")]
    spool_dir: PathBuf,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    mailbox: BTreeMap<String, RawMailbox>,
    aliases: Option<PathBuf>,
    #[serde(default)]
    system_users: bool,
    #[serde(default)]
    users: RawUsers,
    #[serde(default = "default_pipe_user")]
    pipe_user: String,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

/// A `listen` entry: `"ADDR"`, or `{ address = "ADDR", require_tls = true }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawListen {
    Address(String),
    Table(RawListenTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenTable {
    address: String,
    #[serde(default)]
    require_tls: bool,
}

fn default_pipe_user() -> String {
    "nobody".into()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum RawBareNewline {
    #[default]
    Normalize,
    Reject,
}

fn yes() -> bool {
    true
}

fn default_spool_dir() -> PathBuf {
    PathBuf::from("var/spool")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: Vec<RawListen>,
    smtps: Vec<String>,
    workers: usize,
    handoff_queue: usize,
    max_connections_per_ip: usize,
    max_message_size: u64,
    max_recipients: usize,
    max_command_line: usize,
    shutdown_grace: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec![RawListen::Address("127.0.0.1:2525".into())],
            smtps: Vec::new(),
            workers: 8,
            handoff_queue: 64,
            max_connections_per_ip: 20,
            max_message_size: 26_214_400,
            max_recipients: 100,
            max_command_line: 4096,
            shutdown_grace: 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    command: u64,
    data_block: u64,
    data_total: u64,
    pipe: u64,
    mbox_lock: u64,
    delivery: u64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            command: 300,
            data_block: 180,
            data_total: 600,
            pipe: 300,
            mbox_lock: 60,
            delivery: 300,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    maildir: Option<PathBuf>,
    mbox: Option<PathBuf>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUsers {
    min_uid: u32,
    allow: Vec<String>,
    maildir: Option<String>,
    mbox: Option<String>,
    forward: bool,
}

impl Default for RawUsers {
    fn default() -> Self {
        RawUsers {
            min_uid: 1000,
            allow: Vec::new(),
            maildir: None,
            mbox: None,
            forward: true,
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &name)
    }

    /// The shipped default configuration.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED, EMBEDDED_NAME).expect("the embedded configuration is valid")
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            key: None,
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        raw.validate(file)
    }

    /// What a session needs of this configuration.
    pub fn session_settings(&self) -> session::Settings {
        session::Settings {
            hostname: self.hostname.clone(),
            default_domain: self.local_domains.first().unwrap_or(&self.hostname).clone(),
            strict_helo: self.strict_helo,
            vrfy: self.vrfy,
            expn: self.expn,
            limits: session::Limits {
                max_message_size: self.server.max_message_size,
                max_recipients: self.server.max_recipients,
                max_command_line: self.server.max_command_line,
            },
        }
    }

    /// True if `domain` is one of ours (ASCII case-insensitive).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

impl RawConfig {
    fn validate(self, file: &str) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: file.to_string(),
            key: Some(key.to_string()),
            message,
        };
        let hostname = match self.hostname {
            Some(h) => h,
            None => system_hostname(),
        };
        if !is_hostname(&hostname) {
            return Err(err(
                "hostname",
                format!("{hostname:?} is not a valid host name"),
            ));
        }
        let local_domains = self
            .local_domains
            .unwrap_or_else(|| vec![hostname.clone(), "localhost".into()]);
        if local_domains.is_empty() {
            return Err(err("local_domains", "at least one domain is needed".into()));
        }
        for d in &local_domains {
            if !is_hostname(d) {
                return Err(err("local_domains", format!("{d:?} is not a valid domain")));
            }
        }
        let local_domains = local_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();

        let s = self.server;
        if s.listen.is_empty() {
            return Err(err(
                "server.listen",
                "at least one address is needed".into(),
            ));
        }
        let plain = s.listen.iter().map(|l| match l {
            RawListen::Address(a) => ("server.listen", a, false, false),
            RawListen::Table(t) => ("server.listen", &t.address, false, t.require_tls),
        });
        let smtps = s.smtps.iter().map(|a| ("server.smtps", a, true, false));
        let mut listen: Vec<Listener> = Vec::new();
        for (key, a, implicit_tls, require_tls) in plain.chain(smtps) {
            let addr = a.parse::<SocketAddr>().map_err(|_| {
                err(
                    key,
                    format!("{a:?} is not an IP address and port, like \"127.0.0.1:2525\" or \"[::1]:2525\""),
                )
            })?;
            // Port 0 (any free port) may be asked for more than once.
            if addr.port() != 0 && listen.iter().any(|l| l.addr == addr) {
                return Err(err(key, format!("{a} is listed twice")));
            }
            if (implicit_tls || require_tls) && self.tls.is_none() {
                return Err(err(
                    key,
                    format!("{a} needs TLS: give a [tls] section with cert and key"),
                ));
            }
            listen.push(Listener {
                addr,
                implicit_tls,
                require_tls,
            });
        }
        let tls = match self.tls {
            Some(t) if t.cert.as_os_str().is_empty() => {
                return Err(err("tls.cert", "empty path".into()))
            }
            Some(t) if t.key.as_os_str().is_empty() => {
                return Err(err("tls.key", "empty path".into()))
            }
            Some(t) => Some(TlsFiles {
                cert: t.cert,
                key: t.key,
            }),
            None => None,
        };
        let range = |key: &str, v: u64, lo: u64, hi: u64, why: &str| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(err(key, format!("{v} is out of range {lo}..={hi}{why}")))
            }
        };
        range("server.workers", s.workers as u64, 1, 1024, "")?;
        range("server.handoff_queue", s.handoff_queue as u64, 1, 65536, "")?;
        range(
            "server.max_connections_per_ip",
            s.max_connections_per_ip as u64,
            1,
            1_000_000,
            "",
        )?;
        range(
            "server.max_message_size",
            s.max_message_size,
            1024,
            1 << 40,
            "",
        )?;
        range(
            "server.max_recipients",
            s.max_recipients as u64,
            100,
            100_000,
            " (RFC 5321 4.5.3.1.8: at least 100)",
        )?;
        range(
            "server.max_command_line",
            s.max_command_line as u64,
            512,
            1 << 20,
            " (RFC 5321 4.5.3.1.4: at least 512)",
        )?;
        range("server.shutdown_grace", s.shutdown_grace, 0, 3600, "")?;
        let t = self.timeouts;
        range("timeouts.command", t.command, 1, 86400, "")?;
        range("timeouts.data_block", t.data_block, 1, 86400, "")?;
        range("timeouts.data_total", t.data_total, 1, 86400, "")?;
        range("timeouts.pipe", t.pipe, 1, 86400, "")?;
        range("timeouts.mbox_lock", t.mbox_lock, 1, 3600, "")?;
        range(
            "timeouts.delivery",
            t.delivery,
            1,
            540,
            " (a client waits 600 s for the reply to its final dot, RFC 5321 4.5.3.2.6)",
        )?;

        let mut mailboxes = BTreeMap::new();
        for (name, mb) in self.mailbox {
            let key = format!("mailbox.{name}");
            if let Some(why) = bad_local_part(&name) {
                return Err(err(
                    &key,
                    format!("{name:?} cannot be a mailbox name: {why}"),
                ));
            }
            let store = match (mb.maildir, mb.mbox) {
                (Some(p), None) if !p.as_os_str().is_empty() => Store::Maildir(p),
                (None, Some(p)) if !p.as_os_str().is_empty() => Store::Mbox(p),
                (Some(_), Some(_)) => {
                    return Err(err(&key, "give maildir or mbox, not both".into()))
                }
                _ => return Err(err(&key, "needs a maildir or mbox path".into())),
            };
            let name = if self.case_insensitive_users {
                name.to_lowercase()
            } else {
                name
            };
            if mb
                .name
                .as_deref()
                .is_some_and(|n| n.chars().any(char::is_control) || n.len() > 200)
            {
                return Err(err(
                    &key,
                    "name: at most 200 characters, no control characters".into(),
                ));
            }
            let mailbox = VirtualMailbox {
                store,
                full_name: mb.name.filter(|n| !n.trim().is_empty()),
            };
            if mailboxes.insert(name.clone(), mailbox).is_some() {
                return Err(err(
                    &key,
                    format!("{name:?} is declared twice (names are case-insensitive)"),
                ));
            }
        }

        let u = self.users;
        let store = match (u.maildir, u.mbox) {
            (Some(t), None) => StoreTemplate::Maildir(t),
            (None, Some(t)) => StoreTemplate::Mbox(t),
            (None, None) => StoreTemplate::Maildir("{home}/Maildir".into()),
            (Some(_), Some(_)) => {
                return Err(err("users", "give maildir or mbox, not both".into()))
            }
        };
        let (t_key, t_text) = match &store {
            StoreTemplate::Maildir(t) => ("users.maildir", t),
            StoreTemplate::Mbox(t) => ("users.mbox", t),
        };
        let unknown = t_text.replace("{user}", "").replace("{home}", "");
        if unknown.contains(['{', '}']) {
            return Err(err(t_key, "only {user} and {home} can be used".into()));
        }
        if store.expand("user", Path::new("/home/user")).is_none() {
            return Err(err(
                t_key,
                format!("{t_text:?} must give an absolute path without \"..\""),
            ));
        }
        if self.pipe_user.is_empty() || self.pipe_user == "root" {
            return Err(err(
                "pipe_user",
                "must name an account other than root".into(),
            ));
        }
        if matches!(&self.aliases, Some(p) if p.as_os_str().is_empty()) {
            return Err(err("aliases", "empty path".into()));
        }

        Ok(Config {
            hostname,
            local_domains,
            reverse_dns: self.reverse_dns,
            strict_helo: self.strict_helo,
            bare_newline: match self.bare_newline {
                RawBareNewline::Normalize => BareNewline::Normalize,
                RawBareNewline::Reject => BareNewline::Reject,
            },
            vrfy: self.vrfy,
            expn: self.expn,
            case_insensitive_users: self.case_insensitive_users,
            spool_dir: self.spool_dir,
            server: Server {
                listen,
                workers: s.workers,
                handoff_queue: s.handoff_queue,
                max_connections_per_ip: s.max_connections_per_ip,
                max_message_size: s.max_message_size,
                max_recipients: s.max_recipients,
                max_command_line: s.max_command_line,
                shutdown_grace: Duration::from_secs(s.shutdown_grace),
            },
            timeouts: Timeouts {
                command: Duration::from_secs(t.command),
                data_block: Duration::from_secs(t.data_block),
                data_total: Duration::from_secs(t.data_total),
                pipe: Duration::from_secs(t.pipe),
                mbox_lock: Duration::from_secs(t.mbox_lock),
                delivery: Duration::from_secs(t.delivery),
            },
            mailboxes,
            aliases: self.aliases,
            system_users: self.system_users,
            users: Users {
                min_uid: u.min_uid,
                allow: u.allow,
                store,
                forward: u.forward,
            },
            pipe_user: self.pipe_user,
            tls,
        })
    }
}

/// Why a local part cannot name a mailbox, if it cannot: it must never be
/// able to name a path or carry control characters.
pub fn bad_local_part(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name == "." || name == ".." || name.starts_with('.') {
        Some("starts with '.'")
    } else if name.chars().any(char::is_control) {
        Some("contains control characters")
    } else if name.len() > 64 {
        Some("longer than 64 octets")
    } else {
        None
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The kernel's host name, or `localhost` when it cannot be read.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| is_hostname(h))
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_SHAPE: &str = r#"
hostname = "mx.example.org"
local_domains = ["example.org", "localhost"]
[server]
listen = ["127.0.0.1:2525"]
workers = 8
max_connections_per_ip = 20
max_message_size = 26214400
max_recipients = 100
[timeouts]          # seconds
command = 300
data_block = 180
data_total = 600
[mailbox.alice]     # a virtual mailbox: local part -> Maildir path
maildir = "var/mail/alice/Maildir"
"#;

    #[test]
    fn documented_shape_parses() {
        let c = Config::parse(ISSUE_SHAPE, "t.toml").unwrap();
        assert_eq!(c.hostname, "mx.example.org");
        assert_eq!(c.local_domains, ["example.org", "localhost"]);
        assert_eq!(
            c.server.listen,
            [Listener {
                addr: "127.0.0.1:2525".parse().unwrap(),
                implicit_tls: false,
                require_tls: false
            }]
        );
        assert_eq!(c.timeouts.data_total, Duration::from_secs(600));
        assert_eq!(
            c.mailboxes["alice"].store,
            Store::Maildir(PathBuf::from("var/mail/alice/Maildir"))
        );
    }

    /// The shipped file documents the defaults: parsing it must give the
    /// same settings as an empty file, apart from its sample mailboxes and
    /// its host name.
    #[test]
    fn shipped_file_matches_builtin_defaults() {
        let shipped = Config::embedded();
        let mut empty = Config::parse("", "empty").unwrap();
        empty.hostname = shipped.hostname.clone();
        empty.local_domains = shipped.local_domains.clone();
        empty.mailboxes = shipped.mailboxes.clone();
        assert_eq!(shipped, empty);
        assert!(shipped.mailboxes.contains_key("postmaster"));
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases = [
            ("[server]\nworkers = 0", "server.workers"),
            ("[server]\nlisten = []", "server.listen"),
            ("[server]\nlisten = [\"localhost:25\"]", "server.listen"),
            ("[server]\nmax_recipients = 10", "server.max_recipients"),
            (
                "[server]\nmax_command_line = 100",
                "server.max_command_line",
            ),
            ("[timeouts]\ncommand = 0", "timeouts.command"),
            ("hostname = \"bad host\"", "hostname"),
            ("local_domains = [\"\"]", "local_domains"),
            ("local_domains = []", "local_domains"),
            ("[mailbox.\"../etc\"]\nmaildir = \"x\"", "mailbox.../etc"),
            ("[mailbox.\"a/b\"]\nmaildir = \"x\"", "mailbox.a/b"),
            (
                "[mailbox.Bob]\nmaildir = \"x\"\n[mailbox.bob]\nmaildir = \"y\"",
                "mailbox.bob",
            ),
        ];
        for (text, key) in cases {
            let e = Config::parse(text, "f.toml").unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}");
            assert!(
                e.to_string().starts_with(&format!("f.toml: {key}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused_with_position() {
        for text in [
            "bogus = 1",
            "[server]\nworkerz = 2",
            "[server]\nworkers = \"eight\"",
            "bare_newline = \"accept\"",
        ] {
            let e = Config::parse(text, "f.toml").unwrap_err();
            assert!(e.to_string().starts_with("f.toml: "), "{e}");
            assert!(e.to_string().contains("line"), "{e}");
        }
    }

    #[test]
    fn mailbox_names_fold_case_by_default() {
        let c = Config::parse("[mailbox.Alice]\nmaildir = \"x\"", "f").unwrap();
        assert!(c.mailboxes.contains_key("alice"));
        let c = Config::parse(
            "case_insensitive_users = false\n[mailbox.Alice]\nmaildir = \"x\"",
            "f",
        )
        .unwrap();
        assert!(c.mailboxes.contains_key("Alice"));
    }

    #[test]
    fn ipv6_listeners_parse() {
        let c = Config::parse(
            "[server]\nlisten = [\"[::1]:2525\", \"127.0.0.1:2526\"]",
            "f",
        )
        .unwrap();
        assert!(c.server.listen[0].addr.is_ipv6());
    }

    #[test]
    fn tls_listeners() {
        let c = Config::parse(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[server]\nlisten = [\"127.0.0.1:25\", { address = \"127.0.0.1:587\", require_tls = true }]\nsmtps = [\"127.0.0.1:465\"]",
            "f",
        )
        .unwrap();
        let kinds: Vec<(u16, bool, bool)> = c
            .server
            .listen
            .iter()
            .map(|l| (l.addr.port(), l.implicit_tls, l.require_tls))
            .collect();
        assert_eq!(
            kinds,
            [(25, false, false), (587, false, true), (465, true, false)]
        );
        assert_eq!(c.tls.unwrap().key, PathBuf::from("k.pem"));
        for (text, key) in [
            ("[server]\nsmtps = [\"127.0.0.1:465\"]", "server.smtps"),
            (
                "[server]\nlisten = [{ address = \"127.0.0.1:587\", require_tls = true }]",
                "server.listen",
            ),
            (
                "[tls]\ncert = \"c\"\nkey = \"k\"\n[server]\nlisten = [\"127.0.0.1:25\"]\nsmtps = [\"127.0.0.1:25\"]",
                "server.smtps",
            ),
            ("[tls]\ncert = \"\"\nkey = \"k\"", "tls.cert"),
        ] {
            let e = Config::parse(text, "f").unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        assert!(Config::parse("[tls]\ncert = \"c\"", "f").is_err());
    }
}
