//! The commands local programs and people use: `sendmail` (also the same
//! binary called by that name), `mailq`, and `mailroom queue`. They run
//! as whoever calls them, with no privileges: a message is dropped into
//! the queue's maildrop (see `queue::maildrop` for why that is safe) and
//! the daemon, if it runs, is told to look; everything else is asked of
//! the daemon over its socket, or read directly by those allowed to.
//!
//! Recipients are checked before anything is stored, with the daemon's
//! own lookup: an unknown local user or a remote address that cannot be
//! relayed fails the command (exit 67) and nothing is sent to anyone, so
//! that a caller who fixes the address and tries again sends one copy.
//! Exit codes are sysexits(3); 0 only once the message is durably stored.

pub mod args;
pub mod bs;
pub mod control;
pub mod message;
pub mod passwd;

use crate::clock::{random, SYSTEM};
use crate::config::Config;
use crate::delivery::{Local, Lookup};
use crate::queue::envelope::{Envelope, Notify, Rcpt, Ret};
use crate::queue::{maildrop, Queue};
use crate::smtp::address::{ForwardPath, Mailbox};
use crate::smtp::header;
use crate::smtp::trace::Clock;
use args::{Mode, Options};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOINPUT: u8 = 66;
pub const EX_NOUSER: u8 = 67;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_SOFTWARE: u8 = 70;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_NOPERM: u8 = 77;
pub const EX_CONFIG: u8 = 78;

/// Where the configuration is when neither `-C` nor `MAILROOM_CONFIG`
/// says.
pub const SYSTEM_CONFIG: &str = "/etc/mailroom/mailroom.toml";

const USAGE: &str = "usage: sendmail [-t] [-i] [-v] [-f|-r sender] [-F name] [-C config] [-N dsn] [-R ret] [-V envid] [-bm] [recipient ...]
       sendmail -bs | -bp | -bv recipient ... | -q | -bi
       mailq [-C config]
       newaliases [-C config]";

/// A failure: its exit code and the one line said about it.
pub struct Fail(pub u8, pub String);

/// Runs an SMTP session on standard input and output with a delivery,
/// as the given user (uid and login): the server's, handed in by `main`,
/// since nothing here may use the server.
pub type StdioSession = fn(Arc<Config>, Arc<dyn crate::delivery::Delivery>, u32, String);

/// `sendmail ARGS` (or `mailq` when called so).
pub fn main(name: &str, args: &[String], stdio: StdioSession) -> ExitCode {
    let opts = match args::parse(args::mode_of_name(name), args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{name}: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let done = load_config(opts.config.as_deref()).and_then(|config| match opts.mode {
        Mode::Deliver => deliver(&config, &opts),
        Mode::Verify => verify(&config, &opts),
        Mode::List => control::list(&config),
        Mode::RunQueue => control::flush(&config),
        Mode::Aliases => newaliases(name, &config),
        Mode::Smtp => {
            ensure_queue(&config)?;
            let me = caller();
            // Bodies past the in-memory size go to a file where the caller
            // may write, not to the daemon's spool.
            let mut own = config.clone();
            own.spool_dir = std::env::temp_dir();
            let delivery = Arc::new(bs::Dropper::new(config));
            stdio(Arc::new(own), delivery, me.uid, me.login);
            Ok(())
        }
    });
    finish(name, done)
}

/// `newaliases`, `sendmail -bi`: there is no database to build; the
/// aliases are checked as the daemon would read them (what would fail at
/// RCPT time is printed), then the daemon, if it runs, reloads them.
fn newaliases(name: &str, config: &Config) -> Result<(), Fail> {
    let local = crate::delivery::local::Local::new(Arc::new(config.clone()))
        .map_err(|e| Fail(EX_CONFIG, e))?;
    for f in local.findings() {
        println!("{name}: warning: {f}");
    }
    let Err(e) = control::ask(&config.queue.dir, "reload") else {
        return Ok(());
    };
    // Not running: it reads them when it starts.
    let Some(code) = control::reload_refused(&e) else {
        return Ok(());
    };
    Err(Fail(
        code,
        format!("the aliases are good, but the daemon did not reload them: {e}"),
    ))
}

/// The exit code, after saying what failed.
pub fn finish(name: &str, done: Result<(), Fail>) -> ExitCode {
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, why)) => {
            eprintln!("{name}: {why}");
            ExitCode::from(code)
        }
    }
}

/// `-C FILE`, else `MAILROOM_CONFIG`, else the system's file if there is
/// one, else the built-in default.
pub fn load_config(given: Option<&Path>) -> Result<Config, Fail> {
    let from_env = std::env::var_os("MAILROOM_CONFIG").map(PathBuf::from);
    let path = given
        .map(Path::to_path_buf)
        .or(from_env)
        .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()));
    match path {
        Some(p) => Config::load(&p).map_err(|e| Fail(EX_CONFIG, e.to_string())),
        None => Ok(Config::embedded()),
    }
}

/// The calling user: login name and full name, from the passwd entry of
/// the real uid.
struct Caller {
    uid: u32,
    login: String,
    full_name: String,
}

fn caller() -> Caller {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => Caller {
            uid: uid.as_raw(),
            full_name: u
                .gecos
                .to_string_lossy()
                .split(',')
                .next()
                .unwrap_or("")
                .to_string(),
            login: u.name,
        },
        _ => Caller {
            uid: uid.as_raw(),
            login: format!("uid{}", uid.as_raw()),
            full_name: String::new(),
        },
    }
}

/// The domain bare names are completed with: the first local domain, as
/// in SMTP sessions.
pub(crate) fn default_domain(config: &Config) -> &str {
    config.local_domains.first().unwrap_or(&config.hostname)
}

/// An address as given (`bob`, `<bob@x>`, `Bob <bob@x>`) as a mailbox,
/// bare names completed with the default domain.
fn qualify(config: &Config, address: &str) -> Result<Mailbox, Fail> {
    let bad = |why: String| Fail(EX_DATAERR, format!("bad address {address:?}: {why}"));
    let a = address.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a);
    let full = if a.contains('@') {
        a.to_string()
    } else {
        format!("{a}@{}", default_domain(config))
    };
    Mailbox::parse(&full).map_err(|e| bad(e.to_string()))
}

/// The recipients of the command line (each argument may be a list) and,
/// with `-t`, of the header; each once.
fn recipients(
    config: &Config,
    opts: &Options,
    from_header: &[String],
) -> Result<Vec<Mailbox>, Fail> {
    let mut out: Vec<Mailbox> = Vec::new();
    let mut add = |a: &str| -> Result<(), Fail> {
        let m = qualify(config, a)?;
        if !out.contains(&m) {
            out.push(m);
        }
        Ok(())
    };
    for arg in &opts.recipients {
        let list = header::address_list(arg.as_bytes())
            .map_err(|e| Fail(EX_DATAERR, format!("bad recipient {arg:?}: {e}")))?;
        for a in list {
            add(&a)?;
        }
    }
    for a in from_header {
        add(a)?;
    }
    if out.is_empty() {
        return Err(Fail(
            EX_DATAERR,
            "no recipients: give them as arguments, or use -t to take them from To:, Cc: and Bcc:"
                .into(),
        ));
    }
    Ok(out)
}

/// What becomes of a recipient: `Ok` with a description, or why not.
fn check(config: &Config, local: Option<&Local>, m: &Mailbox) -> Result<String, String> {
    if !crate::delivery::is_local(config, &m.domain) {
        if let Some(relay) = &config.relay {
            return Ok(format!("<{m}>: through the relay {}", relay.host));
        }
        return Err(format!(
            "<{m}>: mail for other hosts is not relayed from here (no [relay] is configured)"
        ));
    }
    let Some(local) = local else {
        return Ok(format!("<{m}>: local; checked when it is delivered"));
    };
    match local.lookup(&ForwardPath::Mailbox(m.clone())) {
        Lookup::Local(r) => Ok(format!(
            "<{m}>: deliverable to {}",
            r.dests
                .iter()
                .map(|d| d.describe())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Lookup::UnknownUser => Err(format!("<{m}>: no such user here")),
        Lookup::NotLocal => Err(format!("<{m}>: not a local address")),
        Lookup::Loop(chain) => Err(format!("<{m}>: alias loop ({chain})")),
        Lookup::Remote(to) => Err(format!(
            "<{m}>: an alias leads to <{to}>, and mail for other hosts is not relayed from here"
        )),
        Lookup::Refused(why) => Err(format!("<{m}>: {why}")),
        // It may resolve by the time it is delivered.
        Lookup::TempFail(why) => Ok(format!("<{m}>: cannot be checked now ({why})")),
    }
}

/// The delivery to check recipients with; without it (an aliases file
/// the caller may not read, say) the daemon checks them later.
pub(crate) fn local_for_checks(config: &Config) -> Option<Local> {
    Local::new(Arc::new(config.clone())).ok()
}

/// `-bv`: what would become of each recipient.
fn verify(config: &Config, opts: &Options) -> Result<(), Fail> {
    let rcpts = recipients(config, opts, &[])?;
    let local = local_for_checks(config);
    let mut all = true;
    for m in &rcpts {
        match check(config, local.as_ref(), m) {
            Ok(what) => println!("{what}"),
            Err(why) => {
                println!("{why}");
                all = false;
            }
        }
    }
    if all {
        Ok(())
    } else {
        Err(Fail(
            EX_NOUSER,
            "some recipients are not deliverable".into(),
        ))
    }
}

/// The daemon has never run here: whoever may create its queue (its own
/// user) creates it now.
fn ensure_queue(config: &Config) -> Result<(), Fail> {
    let dir = &config.queue.dir;
    if dir.join(maildrop::DIR).exists() {
        return Ok(());
    }
    Queue::create(dir).map(drop).map_err(|e| {
        Fail(
            EX_TEMPFAIL,
            format!("cannot create the queue {}: {e}", dir.display()),
        )
    })
}

/// Reads, checks and drops a message.
fn deliver(config: &Config, opts: &Options) -> Result<(), Fail> {
    let max = config.server.max_message_size;
    let too_big = || {
        Fail(
            EX_DATAERR,
            format!("the message is larger than max_message_size ({max} octets)"),
        )
    };
    let input = message::read_message(std::io::stdin().lock(), opts.ignore_dots, max).map_err(
        |e| match e {
            message::InputError::TooBig(_) => too_big(),
            message::InputError::Io(e) => Fail(EX_TEMPFAIL, format!("reading the message: {e}")),
        },
    )?;
    let me = caller();
    let own = format!("{}@{}", me.login, default_domain(config));
    let sender = match opts.sender.as_deref().map(str::trim) {
        Some("" | "<>") => String::new(),
        Some(s) => qualify(config, s)?.to_string(),
        None => qualify(config, &own)
            .map(|m| m.to_string())
            .unwrap_or_default(),
    };
    let now = SYSTEM.now();
    let origin = message::Origin {
        address: if sender.is_empty() { &own } else { &sender },
        full_name: opts.full_name.as_deref().unwrap_or(&me.full_name),
        hostname: &config.hostname,
        date: now,
        unique: random(),
    };
    let prepared =
        message::prepare(&input, opts.extract, &origin).map_err(|e| Fail(EX_DATAERR, e))?;
    // With the fields added: the daemon sets a larger drop aside unread.
    if prepared.message.len() as u64 > max {
        return Err(too_big());
    }
    let rcpts = recipients(config, opts, &prepared.header_recipients)?;
    let local = local_for_checks(config);
    let refused: Vec<String> = rcpts
        .iter()
        .filter_map(|m| check(config, local.as_ref(), m).err())
        .collect();
    if !refused.is_empty() {
        return Err(Fail(
            EX_NOUSER,
            format!("{}; nothing was sent", refused.join("; ")),
        ));
    }
    let notify = opts.notify.as_deref().and_then(Notify::parse);
    let env = Envelope {
        id: "drop".into(),
        arrived: now.secs,
        sender,
        uid: Some(me.uid),
        drop: None,
        ret: opts
            .ret
            .as_deref()
            .map(|r| if r == "full" { Ret::Full } else { Ret::Hdrs }),
        envid: opts.envid.clone(),
        recipients: rcpts
            .iter()
            .map(|m| Rcpt {
                notify,
                ..Rcpt::new(m.to_string())
            })
            .collect(),
        size: prepared.message.len() as u64,
    };
    let dir = &config.queue.dir;
    if !dir.join(maildrop::DIR).exists() {
        // The daemon has never run here; whoever may create its queue
        // (its own user) creates it now.
        Queue::create(dir).map_err(|e| {
            Fail(
                EX_TEMPFAIL,
                format!("cannot create the queue {}: {e}", dir.display()),
            )
        })?;
    }
    let name = maildrop::drop_message(dir, &env, &prepared.message).map_err(|e| {
        Fail(
            EX_TEMPFAIL,
            format!("cannot write to {}: {e}", dir.join(maildrop::DIR).display()),
        )
    })?;
    let told = control::ask(dir, "pickup");
    if opts.verbose {
        match told {
            Ok(_) => eprintln!("sendmail: dropped as {name}; the daemon is picking it up"),
            Err(e) => eprintln!(
                "sendmail: dropped as {name}; the daemon ({e}) picks it up when it starts"
            ),
        }
    }
    Ok(())
}
