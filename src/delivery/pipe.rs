//! Pipe delivery: `|command` targets of aliases and `.forward` files. The
//! command runs under `/bin/sh -c` with a clean environment, the message
//! (our header lines, then the spooled message) on its standard input, the
//! privileges of the account that named it (never root), and a time limit.
//! Exit status 0 is success, 75 (EX_TEMPFAIL) a temporary failure, anything
//! else a permanent one.

use super::{io_error, Account, Body, DeliveryError, Failure};
use nix::fcntl::{FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What the command is told about the delivery, as Postfix's pipe does.
pub struct PipeEnv<'a> {
    pub sender: &'a str,
    pub recipient: &'a str,
}

/// The longest wait between looks at whether the command has ended: an
/// exit wakes nobody when something it started still holds its pipes.
const TICK: Duration = Duration::from_millis(5);
/// How much of the message is read from the spool for each write.
const CHUNK: usize = 64 * 1024;
/// How much of the command's standard error is kept for the reply.
const SAID: usize = 4096;

/// Runs `command` as `account` (or as the server itself when `None`).
/// Whatever happens, everything in its process group is killed when it
/// ends, so nothing it started outlives the delivery. Its standard input
/// and error are driven from this thread, and our ends of them are closed
/// when it ends: a process that left the group may hold the other ends
/// for as long as it likes without holding anything of ours.
pub fn run(
    command: &str,
    account: Option<&Account>,
    prefix: &[u8],
    body: Body<'_>,
    env: &PipeEnv<'_>,
    limit: Duration,
) -> Result<(), DeliveryError> {
    let fail = |kind, reason: String| Err(DeliveryError { kind, reason });
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("SHELL", "/bin/sh")
        .env("SENDER", env.sender)
        .env("RECIPIENT", env.recipient)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so that everything it started can be killed.
        .process_group(0);
    let root = nix::unistd::geteuid().is_root();
    match account {
        Some(a) if root && a.uid == 0 => {
            return fail(
                Failure::Permanent,
                "refusing to run a command as root".into(),
            );
        }
        Some(a) => {
            // Not root, the server cannot change its uid: the command runs
            // as the server (the resolver allows that only for the
            // server's own account), with the account's environment.
            if root {
                cmd.uid(a.uid).gid(a.gid);
            }
            cmd.env("HOME", &a.home)
                .env("USER", &a.name)
                .env("LOGNAME", &a.name)
                .current_dir(if a.home.is_dir() {
                    a.home.as_path()
                } else {
                    std::path::Path::new("/")
                });
        }
        None if root => {
            return fail(
                Failure::Permanent,
                "refusing to run a command as root".into(),
            );
        }
        None => {
            cmd.current_dir("/");
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Err(io_error("starting the command", &e)),
    };
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut feed = Feed {
        pipe: child.stdin.take(),
        buf: prefix.to_vec(),
        start: 0,
        body,
        offset: 0,
    };
    let mut said = Said {
        pipe: child.stderr.take(),
        text: Vec::new(),
    };
    let ended = drive(&mut child, &mut feed, &mut said, Instant::now() + limit);
    // Whatever it left running (a `sleep &`) goes with it.
    let _ = killpg(group, Signal::SIGKILL);
    let status = match ended {
        Ok(Some(status)) => Some(status),
        Ok(None) => {
            let _ = child.wait();
            None
        }
        Err((context, e)) => {
            let _ = child.wait();
            return Err(io_error(context, &e));
        }
    };
    drop(feed);
    let said = said.finish();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    match status {
        None => fail(
            Failure::Temporary,
            format!(
                "the command did not finish within {:.0} s; killed",
                limit.as_secs_f64()
            ),
        ),
        Some(s) if s.success() => Ok(()),
        Some(s) if s.code() == Some(75) => fail(
            Failure::Temporary,
            format!("the command exited 75 (temporary failure){said}"),
        ),
        Some(s) => match s.code() {
            Some(code) => fail(
                Failure::Permanent,
                format!("the command exited {code}{said}"),
            ),
            None => fail(
                Failure::Temporary,
                format!(
                    "the command was killed by signal {}{said}",
                    s.signal().unwrap_or(0)
                ),
            ),
        },
    }
}

/// Feeds the command and listens to it until it exits (`Some` of its
/// status) or the deadline passes (`None`), without ever blocking: what
/// the command does with its pipes cannot hold the delivery past the
/// deadline.
fn drive(
    child: &mut Child,
    feed: &mut Feed<'_>,
    said: &mut Said,
    deadline: Instant,
) -> Result<Option<ExitStatus>, (&'static str, io::Error)> {
    let setup = |e| ("setting up the command's pipes", e);
    if let Some(p) = &feed.pipe {
        nonblocking(p).map_err(setup)?;
    }
    if let Some(p) = &said.pipe {
        nonblocking(p).map_err(setup)?;
    }
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => return Ok(None),
            Ok(None) => {}
            Err(e) => return Err(("waiting for the command", e)),
        }
        let wait = deadline.saturating_duration_since(Instant::now()).min(TICK);
        let (writable, readable) =
            ready(&feed.pipe, &said.pipe, wait).map_err(|e| ("waiting for the command", e))?;
        if writable {
            feed.write().map_err(|e| ("reading the spool", e))?;
        }
        if readable {
            said.read();
        }
    }
}

/// Waits up to `wait` for room in the command's input or something on its
/// standard error (an end or an error counts: the next write or read
/// finds out which).
fn ready(
    input: &Option<ChildStdin>,
    output: &Option<ChildStderr>,
    wait: Duration,
) -> io::Result<(bool, bool)> {
    let mut fds = Vec::with_capacity(2);
    if let Some(p) = input {
        fds.push(PollFd::new(p.as_fd(), PollFlags::POLLOUT));
    }
    if let Some(p) = output {
        fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
    }
    // Rounded up to whole milliseconds, so as not to spin before the
    // deadline.
    let timeout = PollTimeout::try_from(wait + Duration::from_nanos(999_999))
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
    match nix::poll::poll(&mut fds, timeout) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok((false, false)),
        Err(e) => return Err(e.into()),
    }
    let mut seen = fds.iter().map(|f| f.any().unwrap_or(true));
    let writable = input.is_some() && seen.next() == Some(true);
    let readable = output.is_some() && seen.next() == Some(true);
    Ok((writable, readable))
}

fn nonblocking(fd: impl AsFd) -> io::Result<()> {
    nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The command's standard input: our header lines, then the message, read
/// from the spool as the pipe takes it (at our own offset, since the spool
/// file is shared).
struct Feed<'a> {
    pipe: Option<ChildStdin>,
    buf: Vec<u8>,
    start: usize,
    body: Body<'a>,
    offset: u64,
}

impl Feed<'_> {
    /// One write of as much as the pipe takes. The end of the message
    /// closes the pipe, so that the command sees the end of its input; so
    /// does a command that stops reading (EPIPE), which is its business:
    /// its exit status decides. Only reading the spool can fail.
    fn write(&mut self) -> io::Result<()> {
        let Some(pipe) = &mut self.pipe else {
            return Ok(());
        };
        if self.start == self.buf.len() {
            self.buf.resize(CHUNK, 0);
            let n = self.body.read_at(&mut self.buf, self.offset)?;
            self.buf.truncate(n);
            self.start = 0;
            self.offset += n as u64;
            if n == 0 {
                self.pipe = None;
                return Ok(());
            }
        }
        match pipe.write(&self.buf[self.start..]) {
            Ok(n) => self.start += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.pipe = None,
        }
        Ok(())
    }
}

/// The command's standard error: the first `SAID` bytes are kept for the
/// reply, the rest read and dropped, so that a chatty command does not
/// stall on a full pipe.
struct Said {
    pipe: Option<ChildStderr>,
    text: Vec<u8>,
}

impl Said {
    /// One read; false when there is nothing (more) to read for now.
    fn read(&mut self) -> bool {
        let Some(pipe) = &mut self.pipe else {
            return false;
        };
        let mut chunk = [0; SAID];
        match pipe.read(&mut chunk) {
            Ok(n) if n > 0 => {
                let room = SAID - self.text.len();
                self.text.extend_from_slice(&chunk[..n.min(room)]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
            // The end, or an error: either way nothing more comes.
            _ => {
                self.pipe = None;
                false
            }
        }
    }

    /// What the command said, once it has ended and its group is gone:
    /// what they wrote is in the pipe already. A process that left the
    /// group is not waited for, and our end closes here.
    fn finish(mut self) -> String {
        while self.text.len() < SAID && self.read() {}
        String::from_utf8_lossy(&self.text).trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::Spool;

    fn env() -> PipeEnv<'static> {
        PipeEnv {
            sender: "a@b.example",
            recipient: "list@example.org",
        }
    }

    fn run_as_self(command: &str, limit: Duration) -> Result<(), DeliveryError> {
        run_as_self_with(command, b"body\n", limit)
    }

    fn run_as_self_with(command: &str, body: &[u8], limit: Duration) -> Result<(), DeliveryError> {
        // As root a pipe needs an account; run it as nobody.
        let nobody = Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: "/nonexistent".into(),
            full_name: String::new(),
        };
        let account = nix::unistd::geteuid().is_root().then_some(&nobody);
        // A large body moves to a file in the spool's directory: one that
        // goes with the test.
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        spool.write(body).unwrap();
        run(
            command,
            account,
            b"X-Prefix: 1\n",
            spool.body(),
            &env(),
            limit,
        )
    }

    #[test]
    fn exit_codes_classify() {
        let t = Duration::from_secs(10);
        assert_eq!(run_as_self("cat >/dev/null", t), Ok(()));
        assert_eq!(
            run_as_self("exit 75", t).unwrap_err().kind,
            Failure::Temporary
        );
        let e = run_as_self("echo no such list >&2; exit 1", t).unwrap_err();
        assert_eq!(e.kind, Failure::Permanent);
        assert!(e.reason.contains("exited 1: no such list"), "{}", e.reason);
    }

    #[test]
    fn the_command_sees_prefix_body_and_environment() {
        let check = r#"input=$(cat); [ "$input" = "$(printf 'X-Prefix: 1\nbody')" ] && [ "$SENDER" = a@b.example ] && [ "$RECIPIENT" = list@example.org ] && [ -z "$MAILROOM_SECRET" ]"#;
        std::env::set_var("MAILROOM_SECRET", "leak");
        assert_eq!(run_as_self(check, Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn a_command_that_hangs_is_killed_and_fails_temporarily() {
        let start = Instant::now();
        let e = run_as_self("sleep 30 & sleep 30", Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind, Failure::Temporary);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn what_a_command_leaves_running_is_killed_with_it() {
        let start = Instant::now();
        // A background child holding standard error open would otherwise
        // keep the delivery waiting for its end.
        assert_eq!(
            run_as_self("sleep 30 & exit 0", Duration::from_secs(20)),
            Ok(())
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_command_that_ignores_its_input_is_fine() {
        let big = vec![b'x'; 4 << 20];
        assert_eq!(
            run_as_self_with("exit 0", &big, Duration::from_secs(10)),
            Ok(())
        );
    }

    #[test]
    fn a_message_larger_than_a_pipe_arrives_whole_and_in_order() {
        let body: String = (0..30_000).map(|i| format!("{i:09}\n")).collect();
        let check = "read -r first && [ \"$first\" = 'X-Prefix: 1' ] && awk 'NR != $1 + 1 { exit 1 } END { exit NR != 30000 }'";
        assert_eq!(
            run_as_self_with(check, body.as_bytes(), Duration::from_secs(20)),
            Ok(())
        );
    }

    #[test]
    fn a_command_that_says_a_lot_is_not_stalled_and_quoted_in_part() {
        let e = run_as_self(
            "head -c 1000000 /dev/zero | tr '\\0' e >&2; exit 1",
            Duration::from_secs(20),
        )
        .unwrap_err();
        assert_eq!(e.kind, Failure::Permanent);
        assert!(e.reason.contains("exited 1: eeee"), "{}", e.reason);
        assert!(e.reason.len() < 2 * SAID, "{}", e.reason.len());
    }
}
