//! Pipe delivery: `|command` targets of aliases and `.forward` files. The
//! command runs under `/bin/sh -c` with a clean environment, the message
//! (our header lines, then the spooled message) on its standard input, the
//! privileges of the account that named it (never root), and a time limit.
//! Exit status 0 is success, 75 (EX_TEMPFAIL) a temporary failure, anything
//! else a permanent one.

use super::{Account, DeliveryError, Failure};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the command is told about the delivery, as Postfix's pipe does.
pub struct PipeEnv<'a> {
    pub sender: &'a str,
    pub recipient: &'a str,
}

/// How long the command's leftovers (children still holding its standard
/// error or input open) are waited for once it has been dealt with.
const GRACE: Duration = Duration::from_secs(2);

/// Runs `command` as `account` (or as the server itself when `None`).
/// Whatever happens, everything in its process group is killed when it
/// ends, so nothing it started outlives the delivery.
pub fn run(
    command: &str,
    account: Option<&Account>,
    prefix: &[u8],
    body: &File,
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
        Err(e) => return Err(DeliveryError::io("starting the command", &e)),
    };
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    // Feed the message and collect standard error from other threads, so
    // that a command that does neither cannot block us past the limit.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut input = body
        .try_clone()
        .map_err(|e| DeliveryError::io("spool", &e))?;
    let prefix = prefix.to_vec();
    std::thread::spawn(move || -> io::Result<()> {
        stdin.write_all(&prefix)?;
        input.rewind()?;
        io::copy(&mut input, &mut stdin)?;
        Ok(())
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (said_tx, said_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut text);
        let _ = said_tx.send(String::from_utf8_lossy(&text).trim().to_string());
        let _ = io::copy(&mut stderr, &mut io::sink());
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(DeliveryError::io("waiting for the command", &e));
            }
        }
    };
    // Whatever it left running (a `sleep &`) goes with it.
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    if status.is_none() {
        let _ = child.wait();
    }
    // Once the group is gone its pipes close and the threads end; a
    // process that left the group could keep them open, and is not waited
    // for beyond a grace period (the threads end when it does).
    let said = said_rx.recv_timeout(GRACE).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::Spool;

    fn spool(text: &[u8]) -> Spool {
        let dir = std::env::temp_dir().join(format!("mailroom-pipe-test-{}", std::process::id()));
        let mut s = Spool::create(&dir).unwrap();
        s.write(text).unwrap();
        s
    }

    fn env() -> PipeEnv<'static> {
        PipeEnv {
            sender: "a@b.example",
            recipient: "list@example.org",
        }
    }

    fn run_as_self(command: &str, limit: Duration) -> Result<(), DeliveryError> {
        if nix::unistd::geteuid().is_root() {
            // As root a pipe needs an account; run it as nobody.
            let nobody = Account {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                home: "/nonexistent".into(),
                full_name: String::new(),
            };
            run(
                command,
                Some(&nobody),
                b"X-Prefix: 1\n",
                spool(b"body\n").file(),
                &env(),
                limit,
            )
        } else {
            run(
                command,
                None,
                b"X-Prefix: 1\n",
                spool(b"body\n").file(),
                &env(),
                limit,
            )
        }
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
        let s = spool(&big);
        let r = if nix::unistd::geteuid().is_root() {
            return; // covered by exit_codes_classify as nobody
        } else {
            run(
                "exit 0",
                None,
                b"",
                s.file(),
                &env(),
                Duration::from_secs(10),
            )
        };
        assert_eq!(r, Ok(()));
    }
}
