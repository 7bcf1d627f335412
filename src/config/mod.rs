//! Configuration: the TOML file is read into raw, serde-shaped structs
//! (`raw`) and then validated into [`Config`], whose values are ready to
//! use (addresses parsed, durations typed, names normalised), one section
//! at a time: the top-level keys and `[tls]` here, `[server]` in `server`,
//! `[timeouts]` in `timeouts`, `queue_dir` and `[queue]` in `queue`, `[relay]` in `relay`, `[mailbox.*]` and `[users]` in
//! `mailboxes`. Every error names the file and the key.
//!
//! The defaults written in `raw` are the ones documented in the shipped
//! `etc/mailroom.toml`; a test keeps the two in step.

mod auth;
mod mailboxes;
mod milter;
mod queue;
mod raw;
mod relay;
mod server;
mod timeouts;

pub use auth::Auth;
pub use mailboxes::{Store, StoreTemplate, Users, VirtualMailbox};
pub use milter::{DefaultAction, Milter, MilterAddress};
pub use queue::QueueSettings;
pub use relay::{Relay, RelayTls};
pub use server::{Listener, ListenerAuth, ListenerTls, Role, Server};
pub use timeouts::Timeouts;

use crate::smtp::data::BareNewline;
use crate::smtp::session;
use raw::{RawBareNewline, RawConfig, RawTls};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The shipped configuration, used when no `--config` is given.
pub const EMBEDDED: &str = include_str!("../../etc/mailroom.toml");
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
    /// `queue_dir` and `[queue]`.
    pub queue: QueueSettings,
    pub server: Server,
    pub timeouts: Timeouts,
    /// Virtual mailboxes by local part (lower case when
    /// `case_insensitive_users` is on).
    pub mailboxes: BTreeMap<String, VirtualMailbox>,
    /// The aliases file, if any.
    pub aliases: Option<PathBuf>,
    /// Deliver to the accounts of the passwd database.
    pub system_users: bool,
    /// Started as root: the account the server becomes once its listeners,
    /// queue and spool are set up.
    pub user: Option<String>,
    pub users: Users,
    /// Whose privileges alias pipes and files run with when the server is
    /// root and nothing better is known (never root itself).
    pub pipe_user: String,
    /// The certificate and key for STARTTLS and implicit TLS; without
    /// them nothing TLS is offered.
    pub tls: Option<TlsFiles>,
    /// The smarthost for mail to other hosts; without it such mail is
    /// refused.
    pub relay: Option<Relay>,
    /// Who may AUTH, on the listeners that offer it.
    pub auth: Option<Auth>,
    /// How log lines look; fixed at start.
    pub log_format: LogFormat,
    /// The milters of every listener without a list of its own.
    pub milters: Vec<Milter>,
    /// Where a message a milter quarantines is delivered; unset, such a
    /// message is refused.
    pub quarantine: Option<String>,
}

/// The server's log lines: env_logger's text, or logfmt (`key=value`
/// pairs) for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Logfmt,
}

/// PEM files: the full certificate chain, and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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

/// Makes the errors of one file.
struct Errors<'a> {
    file: &'a str,
}

impl Errors<'_> {
    fn at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// `v` must be within `lo..=hi`; `why` says why, if it needs saying.
    fn range(&self, key: &str, v: u64, lo: u64, hi: u64, why: &str) -> Result<(), ConfigError> {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(self.at(key, format!("{v} is out of range {lo}..={hi}{why}")))
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
        validate(raw, &Errors { file })
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
            errors: session::ErrorLimits {
                soft: self.server.soft_error_limit,
                hard: self.server.hard_error_limit,
            },
            senders: session::Senders {
                named: self
                    .auth
                    .as_ref()
                    .map(|a| a.senders.clone())
                    .unwrap_or_default(),
                local_domains: self.local_domains.clone(),
            },
        }
    }

    /// The milters a message on `listener` passes.
    pub fn milters_for(&self, listener: &Listener) -> &[Milter] {
        match listener.milters {
            Some(i) => &self.server.milter_lists[i],
            None => &self.milters,
        }
    }

    /// The milters the mail of this box's own users passes: `[relay]
    /// milters`.
    pub fn relay_milters(&self) -> &[Milter] {
        self.relay.as_ref().map_or(&[], |r| &r.milters)
    }

    /// True if `domain` is one of ours (ASCII case-insensitive).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// The top-level keys and `[tls]`; each other section in its module.
fn validate(raw: RawConfig, e: &Errors) -> Result<Config, ConfigError> {
    let hostname = match raw.hostname {
        Some(h) => h,
        None => system_hostname(),
    };
    if !is_hostname(&hostname) {
        return Err(e.at("hostname", format!("{hostname:?} is not a valid host name")));
    }
    let local_domains = raw
        .local_domains
        .unwrap_or_else(|| vec![hostname.clone(), "localhost".into()]);
    if local_domains.is_empty() {
        return Err(e.at("local_domains", "at least one domain is needed"));
    }
    if let Some(d) = local_domains.iter().find(|d| !is_hostname(d)) {
        return Err(e.at("local_domains", format!("{d:?} is not a valid domain")));
    }
    let local_domains = local_domains
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    let has_tls = raw.tls.is_some();
    let tls = raw.tls.map(|t| tls_files(t, e)).transpose()?;
    let server = server::validate(raw.server, has_tls, e)?;
    let timeouts = timeouts::validate(raw.timeouts, raw.stress, e)?;
    let queue = queue::validate(raw.queue_dir, raw.queue, e)?;
    let relay = raw.relay.map(|r| relay::validate(r, e)).transpose()?;
    let milters = milter::list("milters", raw.milters, e)?;
    if let Some(q) = &raw.quarantine {
        let valid = q
            .rsplit_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && is_hostname(domain));
        if !valid {
            return Err(e.at("quarantine", format!("{q:?} is not an address")));
        }
    }
    let auth = raw.auth.map(|a| auth::validate(a, e)).transpose()?;
    if let Some(l) = server.listen.iter().find(|l| l.auth != ListenerAuth::Off) {
        if auth.is_none() {
            return Err(e.at(
                "server.listen",
                format!(
                    "{} offers AUTH: give an [auth] section with the users file",
                    l.addr
                ),
            ));
        }
        if !has_tls {
            return Err(e.at(
                "server.listen",
                format!(
                    "{} offers AUTH, which is only ever offered over TLS: give a [tls] section",
                    l.addr
                ),
            ));
        }
    }
    let mailboxes = mailboxes::validate_mailboxes(raw.mailbox, raw.case_insensitive_users, e)?;
    let users = mailboxes::validate_users(raw.users, e)?;
    if let Some(u) = &raw.user {
        if u.is_empty() || u == "root" {
            return Err(e.at("user", "must name an account other than root"));
        }
        if raw.system_users {
            return Err(e.at(
                "user",
                "cannot be combined with system_users, which needs root to deliver as each user (run it under systemd/mailroom-system.service instead)",
            ));
        }
    }
    if raw.pipe_user.is_empty() || raw.pipe_user == "root" {
        return Err(e.at("pipe_user", "must name an account other than root"));
    }
    if matches!(&raw.aliases, Some(p) if p.as_os_str().is_empty()) {
        return Err(e.at("aliases", "empty path"));
    }
    Ok(Config {
        hostname,
        local_domains,
        reverse_dns: raw.reverse_dns,
        strict_helo: raw.strict_helo,
        bare_newline: match raw.bare_newline {
            RawBareNewline::Normalize => BareNewline::Normalize,
            RawBareNewline::Reject => BareNewline::Reject,
        },
        vrfy: raw.vrfy,
        expn: raw.expn,
        case_insensitive_users: raw.case_insensitive_users,
        spool_dir: raw.spool_dir,
        queue,
        server,
        timeouts,
        mailboxes,
        aliases: raw.aliases,
        system_users: raw.system_users,
        user: raw.user,
        users,
        pipe_user: raw.pipe_user,
        log_format: raw.log_format,
        tls,
        relay,
        auth,
        milters,
        quarantine: raw.quarantine,
    })
}

fn tls_files(t: RawTls, e: &Errors) -> Result<TlsFiles, ConfigError> {
    if t.cert.as_os_str().is_empty() {
        return Err(e.at("tls.cert", "empty path"));
    }
    if t.key.as_os_str().is_empty() {
        return Err(e.at("tls.key", "empty path"));
    }
    Ok(TlsFiles {
        cert: t.cert,
        key: t.key,
    })
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

/// The kernel's host name, by uname(2) (/proc/sys is hidden in a
/// sandbox: systemd's `ProcSubset=pid`), or `localhost` when it cannot be
/// had.
fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_string())
        .filter(|h| is_hostname(h))
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
                role: Role::Smtp,
                tls: ListenerTls::Starttls,
                auth: ListenerAuth::Off,
                milters: None,
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
    fn milters_apply_per_listener_and_to_the_relay() {
        let c = Config::parse(
            r#"milters = ["inet:127.0.0.1:11332"]
[server]
listen = ["127.0.0.1:25",
          { address = "127.0.0.1:26", milters = [] },
          { address = "127.0.0.1:27", milters = [{ address = "unix:/run/x.sock", default_action = "accept", message_timeout = 60 }] }]
[relay]
host = "r.example"
milters = ["unix:/run/opendkim/opendkim.sock"]
"#,
            "t.toml",
        )
        .unwrap();
        let names = |l: &[Milter]| l.iter().map(Milter::name).collect::<Vec<_>>();
        let listen = &c.server.listen;
        assert_eq!(names(c.milters_for(&listen[0])), ["inet:127.0.0.1:11332"]);
        assert!(c.milters_for(&listen[1]).is_empty(), "its own, empty list");
        let own = &c.milters_for(&listen[2])[0];
        assert_eq!(own.name(), "unix:/run/x.sock");
        assert_eq!(own.default_action, DefaultAction::Accept);
        assert_eq!(own.message_timeout, Duration::from_secs(60));
        assert_eq!(own.command_timeout, Duration::from_secs(10));
        assert_eq!(own.connect_timeout, Duration::from_secs(30));
        assert_eq!(
            names(c.relay_milters()),
            ["unix:/run/opendkim/opendkim.sock"]
        );
        let top = &c.milters[0];
        assert_eq!(top.default_action, DefaultAction::Tempfail);
        assert_eq!(top.message_timeout, Duration::from_secs(300));
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases = [
            ("[server]\nworkers = 0", "server.workers"),
            ("[server]\nworker_stack = 256", "server.worker_stack"),
            ("user = \"root\"", "user"),
            ("system_users = true\nuser = \"mailroom\"", "user"),
            ("[server]\nmax_connections_per_ip = 0", "server.max_connections_per_ip"),
            ("[server]\nhard_error_limit = 0", "server.hard_error_limit"),
            (
                "[server]\nsoft_error_limit = 30\nhard_error_limit = 20",
                "server.soft_error_limit",
            ),
            ("[server]\nerror_delay = 61", "server.error_delay"),
            ("milters = [\"127.0.0.1:8891\"]", "milters[0]"),
            (
                "milters = [{ address = \"inet:127.0.0.1:8891\", default_action = \"drop\" }]",
                "milters[0].default_action",
            ),
            (
                "milters = [\"unix:/a\", { address = \"unix:/b\", command_timeout = 0 }]",
                "milters[1].command_timeout",
            ),
            ("quarantine = \"nobody\"", "quarantine"),
            (
                "[server]\nlisten = [{ address = \"127.0.0.1:1\", milters = [\"x\"] }]",
                "server.listen.milters[0]",
            ),
            (
                "[relay]\nhost = \"r.example\"\nmilters = [\"inet:h:0\"]",
                "relay.milters[0]",
            ),
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
            ("queue_dir = \"\"", "queue_dir"),
            ("[queue]\nretry_first = 0", "queue.retry_first"),
            (
                "[queue]\nretry_first = 600\nretry_max = 300",
                "queue.retry_max",
            ),
            (
                "[queue]\nmax_queue_lifetime = 3600\ndelay_warning = 3600",
                "queue.delay_warning",
            ),
            ("[relay]\nhost = \"bad host\"", "relay.host"),
            ("[relay]\nhost = \"r.example\"\nport = 0", "relay.port"),
            (
                "[relay]\nhost = \"r.example\"\nusername = \"u\"",
                "relay.username",
            ),
            (
                "[relay]\nhost = \"r.example\"\ntls = \"none\"\nusername = \"u\"\npassword_file = \"p\"",
                "relay.username",
            ),
            (
                "[relay]\nhost = \"r.example\"\nrewrite_sender = \"not an address\"",
                "relay.rewrite_sender",
            ),
            (
                "[relay]\nhost = \"r.example\"\ncommand_timeout = 0",
                "relay.command_timeout",
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
    fn relay_ports_follow_tls_and_the_queue_has_its_defaults() {
        let port = |tls: &str| {
            let text = format!("[relay]\nhost = \"192.0.2.1\"\ntls = \"{tls}\"");
            Config::parse(&text, "f").unwrap().relay.unwrap().port
        };
        assert_eq!(
            (port("starttls"), port("tls"), port("none")),
            (587, 465, 25)
        );
        let c = Config::parse("", "f").unwrap();
        assert!(c.relay.is_none());
        assert_eq!(c.queue.dir, std::path::PathBuf::from("var/queue"));
        assert_eq!(c.queue.retry_first.as_secs(), 300);
        assert_eq!(c.queue.max_lifetime.as_secs(), 5 * 86400);
        let c = Config::parse(
            "[relay]\nhost = \"smtp.example.net\"\nusername = \"box\"\npassword_file = \"/etc/p\"",
            "f",
        )
        .unwrap();
        let r = c.relay.unwrap();
        assert_eq!(r.tls, RelayTls::StartTls);
        assert_eq!(r.auth, Some(("box".into(), "/etc/p".into())));
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
    fn the_per_address_limit_follows_the_workers_unless_set() {
        let per_ip = |text: &str| {
            Config::parse(text, "t")
                .unwrap()
                .server
                .max_connections_per_ip
        };
        assert_eq!(per_ip(""), 4);
        assert_eq!(per_ip("[server]\nworkers = 64"), 32);
        assert_eq!(per_ip("[server]\nworkers = 1"), 1);
        // A value set is kept, even one that lets an address take every
        // worker (warned about, never refused: old files keep loading).
        let c = Config::parse("[server]\nworkers = 8\nmax_connections_per_ip = 20", "t").unwrap();
        assert_eq!(c.server.max_connections_per_ip, 20);
        assert_eq!(c.server.warnings().len(), 1);
        assert!(Config::parse("", "t").unwrap().server.warnings().is_empty());
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
            .map(|l| (l.addr.port(), l.implicit_tls(), l.require_tls()))
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

    /// Every listener form that loaded before roles existed loads with the
    /// same meaning; a role may be given beside it.
    #[test]
    fn listener_roles() {
        let tls = "[tls]\ncert = \"c\"\nkey = \"k\"\n";
        let listeners = |server: &str| {
            Config::parse(&format!("{tls}[server]\n{server}"), "f")
                .map(|c| {
                    c.server
                        .listen
                        .iter()
                        .map(|l| (l.addr.port(), l.role, l.tls))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string())
        };
        use ListenerTls::*;
        use Role::*;
        assert_eq!(
            listeners(
                "listen = [\"127.0.0.1:25\", { address = \"127.0.0.1:26\" }, { address = \"127.0.0.1:587\", require_tls = true }, { address = \"127.0.0.1:588\", require_tls = false }]\nsmtps = [\"127.0.0.1:465\"]"
            ),
            Ok(vec![
                (25, Smtp, Starttls),
                (26, Smtp, Starttls),
                (587, Smtp, RequireStarttls),
                (588, Smtp, Starttls),
                (465, Submission, Implicit),
            ])
        );
        assert_eq!(
            listeners(
                "listen = [{ address = \"127.0.0.1:587\", require_tls = true, role = \"submission\" }]\nsmtps = [{ address = \"127.0.0.1:465\", role = \"smtp\" }]"
            ),
            Ok(vec![(587, Submission, RequireStarttls), (465, Smtp, Implicit)])
        );
        for (bad, key) in [
            (
                "smtps = [{ address = \"127.0.0.1:465\", require_tls = true }]",
                "server.smtps",
            ),
            (
                "listen = [{ address = \"127.0.0.1:25\", role = \"relay\" }]",
                "",
            ),
        ] {
            let e = listeners(bad).unwrap_err();
            assert!(e.starts_with(&format!("f: {key}")), "{bad}: {e}");
        }
        let l = &Config::parse(&format!("{tls}[server]\nsmtps = [\"127.0.0.1:465\"]"), "f")
            .unwrap()
            .server
            .listen[1];
        assert_eq!(l.describe(), "submission, implicit TLS");
    }
}
