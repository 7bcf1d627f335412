//! The configuration file as TOML gives it: serde-shaped structs with the
//! defaults the shipped `etc/mailroom.toml` documents, unknown keys
//! refused. Nothing here is checked; each section's module validates its
//! part into the [`Config`](super::Config) the rest of the crate uses.
//!
//! Every form that loaded once keeps loading with the same meaning: new
//! forms are added beside the old ones (a `listen` entry may be an address
//! or a table; a table may name a `role`).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub hostname: Option<String>,
    pub local_domains: Option<Vec<String>>,
    #[serde(default)]
    pub reverse_dns: bool,
    #[serde(default)]
    pub strict_helo: bool,
    #[serde(default)]
    pub bare_newline: RawBareNewline,
    #[serde(default)]
    pub vrfy: bool,
    #[serde(default)]
    pub expn: bool,
    #[serde(default = "yes")]
    pub case_insensitive_users: bool,
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    #[serde(default = "default_queue_dir")]
    pub queue_dir: PathBuf,
    #[serde(default)]
    pub queue: RawQueue,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub stress: RawStress,
    #[serde(default)]
    pub mailbox: BTreeMap<String, RawMailbox>,
    pub aliases: Option<PathBuf>,
    #[serde(default)]
    pub system_users: bool,
    /// Started as root, the account to run as once the ports are bound.
    pub user: Option<String>,
    #[serde(default)]
    pub users: RawUsers,
    #[serde(default = "default_pipe_user")]
    pub pipe_user: String,
    pub tls: Option<RawTls>,
    pub relay: Option<RawRelay>,
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub log_format: super::LogFormat,
    #[serde(default)]
    pub milters: Vec<RawMilter>,
    /// The mailbox a message a milter quarantines goes to.
    pub quarantine: Option<String>,
}

/// A milter: its address, or a table with its settings too.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum RawMilter {
    Address(String),
    Table(RawMilterTable),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMilterTable {
    pub address: String,
    pub default_action: Option<String>,
    pub connect_timeout: Option<u64>,
    pub command_timeout: Option<u64>,
    pub message_timeout: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub users: PathBuf,
    #[serde(default)]
    pub senders: BTreeMap<String, Vec<String>>,
    #[serde(default = "five")]
    pub max_failures: u32,
    #[serde(default = "six_hundred")]
    pub failure_window: u64,
}

fn five() -> u32 {
    5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    pub host: String,
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: RawRelayTls,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub rewrite_sender: Option<String>,
    #[serde(default = "thirty")]
    pub connect_timeout: u64,
    #[serde(default = "three_hundred")]
    pub command_timeout: u64,
    #[serde(default = "one_eighty")]
    pub data_timeout: u64,
    #[serde(default = "six_hundred")]
    pub dot_timeout: u64,
    #[serde(default = "four")]
    pub connections: usize,
    /// The milters the mail of this box's own users passes.
    #[serde(default)]
    pub milters: Vec<RawMilter>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RawRelayTls {
    #[default]
    Starttls,
    Tls,
    None,
}

fn thirty() -> u64 {
    30
}
fn three_hundred() -> u64 {
    300
}
fn one_eighty() -> u64 {
    180
}
fn six_hundred() -> u64 {
    600
}
fn four() -> usize {
    4
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A `listen` or `smtps` entry: `"ADDR"`, or `{ address = "ADDR",
/// require_tls = true, role = "submission" }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum RawListen {
    Address(String),
    Table(RawListenTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTable {
    pub address: String,
    /// Only in `listen`: implicit TLS needs no STARTTLS.
    pub require_tls: Option<bool>,
    pub role: Option<RawRole>,
    /// Offer AUTH (once TLS runs).
    pub auth: Option<bool>,
    /// Mail needs AUTH first; implies `auth`.
    pub require_auth: Option<bool>,
    /// This listener's milters, instead of the top-level list.
    pub milters: Option<Vec<RawMilter>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RawRole {
    Smtp,
    Submission,
}

fn default_pipe_user() -> String {
    "nobody".into()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RawBareNewline {
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
pub struct RawServer {
    pub listen: Vec<RawListen>,
    pub smtps: Vec<RawListen>,
    pub workers: usize,
    pub handoff_queue: usize,
    /// Unset: half the workers.
    pub max_connections_per_ip: Option<usize>,
    /// Unset: as many as the descriptor limit leaves room for.
    pub max_connections: Option<usize>,
    /// KiB.
    pub worker_stack: u64,
    pub soft_error_limit: u32,
    pub hard_error_limit: u32,
    /// Seconds.
    pub error_delay: u64,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_command_line: usize,
    pub shutdown_grace: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec![RawListen::Address("127.0.0.1:2525".into())],
            smtps: Vec::new(),
            workers: 8,
            handoff_queue: 64,
            max_connections_per_ip: None,
            max_connections: None,
            worker_stack: 512,
            soft_error_limit: 10,
            hard_error_limit: 20,
            error_delay: 1,
            max_message_size: 26_214_400,
            max_recipients: 100,
            max_command_line: 4096,
            shutdown_grace: 30,
        }
    }
}

fn default_queue_dir() -> PathBuf {
    PathBuf::from("var/queue")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    pub retry_first: u64,
    pub retry_max: u64,
    pub max_queue_lifetime: u64,
    pub delay_warning: u64,
}

impl Default for RawQueue {
    fn default() -> Self {
        RawQueue {
            retry_first: 300,
            retry_max: 3600,
            max_queue_lifetime: 5 * 86400,
            delay_warning: 4 * 3600,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStress {
    pub command_timeout: u64,
}

impl Default for RawStress {
    fn default() -> Self {
        RawStress {
            command_timeout: 10,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    pub command: u64,
    pub data_block: u64,
    pub data_total: u64,
    pub pipe: u64,
    pub mbox_lock: u64,
    pub delivery: u64,
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
pub struct RawMailbox {
    pub maildir: Option<PathBuf>,
    pub mbox: Option<PathBuf>,
    pub name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUsers {
    pub min_uid: u32,
    pub allow: Vec<String>,
    pub maildir: Option<String>,
    pub mbox: Option<String>,
    pub forward: bool,
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
