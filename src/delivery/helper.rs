//! Delivery as another account. A server running as root does not write
//! into a user's Maildir or mbox itself: a user owns those directories and
//! could point them elsewhere. It runs a copy of its own binary
//! (`mailroom --deliver ...`), which gives up root for the user's uid and
//! gid (plus, for the user's own mailbox in a group-writable spool such as
//! /var/mail, that directory's group) before it opens anything. Everything
//! it creates belongs to the user, as Postfix's local(8) does it.
//!
//! The copy is two-phase like an in-process one. The message comes on
//! standard input; standard output is a socket to the server, over which
//! the helper reports the mbox length to journal (`journal N`, answered
//! `go`), then `prepared`, and waits for `commit` or `abort`, answering
//! `committed` or `aborted`. If the server goes away before deciding, the
//! helper takes its copy back: a crash of the server never leaves a copy it
//! did not confirm. The helper itself never gives up waiting (the end of
//! the socket is its signal); the server bounds each step. Failures come
//! back as the exit status (sysexits) with the reason on standard error.

use super::{io_error, maildir, mbox, Account, Body, DeliveryError, Failure};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const EX_OK: u8 = 0;
const EX_USAGE: u8 = 64;
const EX_IOERR: u8 = 74;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;
/// Longest protocol line.
const MAX_LINE: u64 = 256;
/// Our own binary, even after it has been replaced on disk by an upgrade.
const SELF: &str = "/proc/self/exe";

/// What the helper is asked to do.
pub enum Job<'a> {
    Maildir {
        dir: &'a Path,
        hostname: &'a str,
        /// Remove stale files from `tmp/` first.
        clean: bool,
    },
    Mbox {
        path: &'a Path,
        from_line: &'a str,
        opts: mbox::Options,
        /// A group to keep: that of the user's own mailbox's spool.
        group: Option<u32>,
    },
}

/// A copy the helper has written and holds, waiting for the decision.
pub struct Staged {
    child: Child,
    conn: BufReader<UnixStream>,
    name: String,
    settled: bool,
}

/// Starts a helper as `account` and has it prepare one copy, waiting for
/// each of its answers until `deadline`. `journal` is called with the
/// mbox's old length before it appends.
pub fn prepare(
    account: &Account,
    job: &Job<'_>,
    prefix: &[u8],
    body: Body<'_>,
    deadline: Instant,
    journal: &mut dyn FnMut(u64) -> Result<(), DeliveryError>,
) -> Result<Staged, DeliveryError> {
    // The helper reads its message at offsets of its standard input, never
    // through the position it shares with this handle.
    let input = body.file().try_clone().map_err(|e| io_error("spool", &e))?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| io_error("socketpair", &e))?;
    let mut cmd = Command::new(SELF);
    cmd.arg("--deliver")
        .arg(account.uid.to_string())
        .arg(account.gid.to_string())
        .arg(body.start().to_string())
        .arg(body.len().to_string());
    match job {
        Job::Maildir {
            dir,
            hostname,
            clean,
        } => {
            cmd.arg("-")
                .arg("maildir")
                .arg(dir)
                .arg(hostname)
                .arg(if *clean { "clean" } else { "-" });
        }
        Job::Mbox {
            path,
            from_line,
            opts,
            group,
        } => {
            cmd.arg(group.map_or_else(|| "-".to_string(), |g| g.to_string()))
                .arg("mbox")
                .arg(path)
                .arg(from_line)
                .arg(opts.lock_wait.as_millis().to_string())
                .arg(opts.stale_lock.as_millis().to_string());
        }
    }
    cmd.arg(String::from_utf8_lossy(prefix).as_ref())
        .env_clear()
        .stdin(Stdio::from(input))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(Stdio::piped());
    let child = cmd.spawn();
    // The command holds the helper's end of the socket: close it here, or
    // the helper's exit would never read as the end of the conversation.
    drop(cmd);
    let child = child.map_err(|e| io_error("starting the delivery helper", &e))?;
    let mut staged = Staged {
        child,
        conn: BufReader::new(ours),
        name: account.name.clone(),
        settled: false,
    };
    loop {
        match staged.read_line(deadline).as_deref() {
            Some("prepared") => return Ok(staged),
            Some(line) if line.starts_with("journal ") => {
                let answer = match line[8..].parse::<u64>() {
                    Ok(orig) => journal(orig),
                    Err(_) => Err(staged.protocol_error(line)),
                };
                let said = staged.say(if answer.is_ok() { "go" } else { "stop" });
                answer?;
                said?;
            }
            _ => return Err(staged.failure()),
        }
    }
}

impl Staged {
    /// Has the helper make the copy visible; waits for it until `deadline`.
    pub fn commit(mut self, deadline: Instant) -> Result<(), DeliveryError> {
        self.settled = true;
        self.say("commit")?;
        match self.read_line(deadline).as_deref() {
            Some("committed") => {
                let _ = reap(&mut self.child, Instant::now() + Duration::from_secs(10));
                Ok(())
            }
            _ => Err(self.failure()),
        }
    }

    /// Has the helper take its copy back; true if it says it did.
    pub fn abort(mut self, deadline: Instant) -> bool {
        self.settled = true;
        let _ = self.say("abort");
        let done = self.read_line(deadline).as_deref() == Some("aborted");
        let _ = reap(&mut self.child, Instant::now() + Duration::from_secs(10));
        done
    }

    fn say(&mut self, word: &str) -> Result<(), DeliveryError> {
        self.conn
            .get_mut()
            .write_all(format!("{word}\n").as_bytes())
            .map_err(|e| io_error("talking to the delivery helper", &e))
    }

    /// The helper's next line, or `None` at its end or at the deadline.
    fn read_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.conn
            .get_ref()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        read_line(&mut self.conn)
    }

    fn protocol_error(&self, line: &str) -> DeliveryError {
        DeliveryError {
            kind: Failure::Temporary,
            reason: format!("delivery helper for {}: unexpected {line:?}", self.name),
        }
    }

    /// The helper stopped short, or took too long: its exit status and
    /// what it said.
    fn failure(&mut self) -> DeliveryError {
        let status = reap(&mut self.child, Instant::now() + Duration::from_secs(10));
        let mut said = String::new();
        if let Some(err) = self.child.stderr.as_mut() {
            let _ = err.take(4096).read_to_string(&mut said);
        }
        let said = said.trim();
        let kind = match status.and_then(|s| s.code()) {
            Some(c) if c == i32::from(EX_IOERR) => Failure::DiskFull,
            Some(c) if c == i32::from(EX_NOPERM) => Failure::Permanent,
            _ => Failure::Temporary,
        };
        let reason = if said.is_empty() {
            format!("delivery helper for {} failed ({status:?})", self.name)
        } else {
            said.to_string()
        };
        DeliveryError { kind, reason }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.settled {
            // Closing our end tells the helper to take its copy back.
            let _ = self.conn.get_ref().shutdown(std::net::Shutdown::Both);
            let _ = reap(&mut self.child, Instant::now() + Duration::from_secs(10));
        }
    }
}

/// Waits for the child until `deadline`, then kills it.
fn reap(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                return child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => return None,
        }
    }
}

fn read_line(conn: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match conn.take(MAX_LINE).read_line(&mut line) {
        Ok(n) if n > 0 && line.ends_with('\n') => Some(line.trim_end().to_string()),
        _ => None,
    }
}

/// Undoes an interrupted mbox append as the account that made it.
pub fn recover(
    account: &Account,
    record: &mbox::journal::Record,
    opts: &mbox::Options,
) -> Result<String, DeliveryError> {
    let out = Command::new(SELF)
        .arg("--deliver")
        .arg(account.uid.to_string())
        .arg(account.gid.to_string())
        // No message: nothing on standard input to read.
        .args(["0", "0", "-"])
        .arg("recover")
        .arg(&record.path)
        .arg(&record.from_line)
        .arg(opts.lock_wait.as_millis().to_string())
        .arg(opts.stale_lock.as_millis().to_string())
        .arg(record.orig.to_string())
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io_error("starting the delivery helper", &e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(DeliveryError {
            kind: Failure::Temporary,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// True when a copy for `account` must go through the helper.
pub fn needed(account: &Account) -> bool {
    nix::unistd::geteuid().is_root() && account.uid != 0
}

/// The helper's side: `mailroom --deliver UID GID START LEN GROUP|- KIND
/// ARGS...` with the message at START..START+LEN of standard input (a
/// file, read at offsets) and the server on standard output.
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::from(EX_OK),
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

type Exit = (u8, String);

fn classify(e: DeliveryError) -> Exit {
    let code = match e.kind {
        Failure::DiskFull => EX_IOERR,
        Failure::Temporary => EX_TEMPFAIL,
        Failure::Permanent => EX_NOPERM,
    };
    (code, e.reason)
}

fn run(args: &[String]) -> Result<(), Exit> {
    let usage = || (EX_USAGE, "mailroom --deliver: bad arguments".to_string());
    let [uid, gid, start, len, group, kind, rest @ ..] = args else {
        return Err(usage());
    };
    let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
        return Err(usage());
    };
    let (Ok(start), Ok(len)) = (start.parse::<u64>(), len.parse::<u64>()) else {
        return Err(usage());
    };
    become_user(uid, gid, group.parse::<u32>().ok())
        .map_err(|e| (EX_TEMPFAIL, format!("cannot switch to uid {uid}: {e}")))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let ms = |s: &String| {
        s.parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| usage())
    };
    if kind == "recover" {
        let [path, from_line, wait, stale, orig] = rest else {
            return Err(usage());
        };
        let opts = mbox::Options {
            lock_wait: ms(wait)?,
            stale_lock: ms(stale)?,
        };
        let orig = orig.parse::<u64>().map_err(|_| usage())?;
        let r = mbox::recover(Path::new(path), orig, from_line, &opts).map_err(classify)?;
        println!("{r:?}");
        return Ok(());
    }
    let input = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| (EX_TEMPFAIL, format!("reading the message: {e}")))?;
    let body = Body::new(&input, start, len);
    let server = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(UnixStream::from)
        .map_err(|e| (EX_TEMPFAIL, format!("talking to the server: {e}")))?;
    let mut conn = BufReader::new(server);
    let say = |conn: &mut BufReader<UnixStream>, word: &str| {
        conn.get_mut()
            .write_all(format!("{word}\n").as_bytes())
            .map_err(|e| (EX_TEMPFAIL, format!("talking to the server: {e}")))
    };
    match (kind.as_str(), rest) {
        ("maildir", [dir, hostname, clean, prefix]) => {
            let dir = PathBuf::from(dir);
            if clean == "clean" {
                maildir::clean_tmp(&dir, maildir::STALE_TMP);
            }
            let p = maildir::prepare(&dir, prefix.as_bytes(), body, hostname).map_err(classify)?;
            say(&mut conn, "prepared")?;
            // Anything but a commit, the end of the socket included, takes
            // the copy back (it is removed as it drops).
            if read_line(&mut conn).as_deref() == Some("commit") {
                p.commit().map_err(classify)?;
                say(&mut conn, "committed")
            } else {
                drop(p);
                say(&mut conn, "aborted")
            }
        }
        ("mbox", [path, from_line, wait, stale, prefix]) => {
            let opts = mbox::Options {
                lock_wait: ms(wait)?,
                stale_lock: ms(stale)?,
            };
            let mut journal = |orig: u64| {
                let fail = |why: &str| DeliveryError {
                    kind: Failure::Temporary,
                    reason: format!("the server did not journal the append: {why}"),
                };
                conn.get_mut()
                    .write_all(format!("journal {orig}\n").as_bytes())
                    .map_err(|e| fail(&e.to_string()))?;
                match read_line(&mut conn).as_deref() {
                    Some("go") => Ok(()),
                    other => Err(fail(&format!("{other:?}"))),
                }
            };
            let p = mbox::prepare(
                Path::new(path),
                from_line,
                prefix.as_bytes(),
                body,
                &opts,
                &mut journal,
            )
            .map_err(classify)?;
            say(&mut conn, "prepared")?;
            if read_line(&mut conn).as_deref() == Some("commit") {
                p.commit();
                say(&mut conn, "committed")
            } else {
                p.abort().map_err(classify)?;
                say(&mut conn, "aborted")
            }
        }
        _ => Err(usage()),
    }
}

/// Gives up root for good: supplementary groups first, then gid, then uid
/// (after setuid the others could no longer be changed), and checks it.
pub(crate) fn become_user(uid: u32, gid: u32, extra: Option<u32>) -> nix::Result<()> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    if nix::unistd::geteuid().as_raw() == uid {
        return Ok(());
    }
    let mut groups = vec![Gid::from_raw(gid)];
    groups.extend(extra.map(Gid::from_raw));
    setgroups(&groups)?;
    setgid(Gid::from_raw(gid))?;
    setuid(Uid::from_raw(uid))?;
    if nix::unistd::geteuid().as_raw() != uid || setuid(Uid::from_raw(0)).is_ok() {
        return Err(nix::errno::Errno::EPERM);
    }
    Ok(())
}
