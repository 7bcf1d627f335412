//! `mailroom passwd LOGIN`: sets a login's password in the users file of
//! `[auth]`, hashed with argon2id. On a terminal the password is asked
//! twice without echo; otherwise one line is read from standard input
//! (for scripts). The file is replaced whole (a new file renamed over
//! it), keeping its mode and owner (0600 for a new one), and a running
//! daemon is asked to read it again.

use super::{control, load_config, Fail, EX_CONFIG, EX_DATAERR, EX_NOPERM, EX_TEMPFAIL, EX_USAGE};
use crate::delivery::maildir;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: mailroom passwd [-C config] LOGIN";

pub fn main(args: &[String]) -> ExitCode {
    super::finish("mailroom passwd", run(args))
}

fn run(args: &[String]) -> Result<(), Fail> {
    let usage = || Fail(EX_USAGE, USAGE.into());
    let (config_path, login) = match args {
        [login] => (None, login),
        [flag, path, login] if flag == "-C" || flag == "--config" => (Some(Path::new(path)), login),
        _ => return Err(usage()),
    };
    if login.is_empty()
        || login.starts_with('-')
        || login
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(Fail(
            EX_USAGE,
            format!("{login:?} cannot be a login: no spaces or colons, and not starting with -"),
        ));
    }
    let config = load_config(config_path)?;
    let Some(auth) = &config.auth else {
        return Err(Fail(
            EX_CONFIG,
            "the configuration has no [auth] section naming a users file".into(),
        ));
    };
    let password = read_password(login)?;
    let hash = crate::auth::hash(&password).map_err(|e| Fail(EX_TEMPFAIL, e))?;
    let added = write(&auth.users, login, &hash)?;
    println!(
        "mailroom passwd: {login} {} in {}",
        if added { "added" } else { "updated" },
        auth.users.display()
    );
    // A running daemon reads the file again; one that is not running
    // reads it when it starts.
    if let Err(e) = control::ask(&config.queue.dir, "reload") {
        if control::reload_refused(&e).is_some() {
            eprintln!("mailroom passwd: the daemon did not reload the users file: {e}");
        }
    }
    Ok(())
}

/// Twice, without echo, on a terminal; else one line of standard input.
fn read_password(login: &str) -> Result<String, Fail> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Fail(EX_DATAERR, format!("reading the password: {e}")))?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        return non_empty(password.to_string());
    }
    let first = ask(&format!("Password for {login}: "))?;
    let second = ask("Again: ")?;
    if first != second {
        return Err(Fail(
            EX_DATAERR,
            "the two passwords differ; nothing changed".into(),
        ));
    }
    non_empty(first)
}

fn non_empty(password: String) -> Result<String, Fail> {
    if password.is_empty() {
        return Err(Fail(
            EX_DATAERR,
            "an empty password; nothing changed".into(),
        ));
    }
    Ok(password)
}

/// One line from the terminal with its echo off, the prompt on stderr.
fn ask(prompt: &str) -> Result<String, Fail> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let fail = |e: &dyn std::fmt::Display| Fail(EX_DATAERR, format!("reading the password: {e}"));
    let saved = tcgetattr(&stdin).map_err(|e| fail(&e))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(|e| fail(&e))?;
    // The echo is off before the prompt asks: an answer typed at once
    // is not shown.
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    read.map_err(|e| fail(&e))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Sets the line and replaces the file; whether the login is new.
fn write(path: &Path, login: &str, hash: &str) -> Result<bool, Fail> {
    let io = |what: &str, e: std::io::Error| {
        let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
            EX_NOPERM
        } else {
            EX_TEMPFAIL
        };
        Fail(code, format!("{what} {}: {e}", path.display()))
    };
    let (text, meta) = match std::fs::read_to_string(path) {
        Ok(text) => (text, std::fs::metadata(path).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(io("reading", e)),
    };
    let users = crate::auth::Users::parse(&text).map_err(|e| {
        Fail(
            EX_CONFIG,
            format!("{}: {e}; nothing changed", path.display()),
        )
    })?;
    let added = !users.contains(login);
    let new = crate::auth::set(&text, login, hash);
    let mode = meta
        .as_ref()
        .map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let tmp = PathBuf::from(format!("{}.new", path.display()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("writing", e))?;
    let done = file
        .write_all(new.as_bytes())
        .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|()| match &meta {
            Some(m) => std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid())),
            None => Ok(()),
        })
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing", e));
    }
    // The rename itself made durable; the file is in place either way.
    let _ = maildir::sync_dir(maildir::parent_of(path));
    if mode & 0o007 != 0 {
        eprintln!(
            "mailroom passwd: warning: {} may be read by others, and the server refuses it so: chmod o-rwx it",
            path.display()
        );
    }
    Ok(added)
}
