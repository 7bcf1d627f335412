//! Pipe targets (`"|command"` in the aliases file) against the real
//! server: exit codes (0 success, 75 temporary and retried from the queue
//! when other copies were made, anything else permanent),
//! never running as root, a leftover process outside the command's group
//! holding nothing of the server's, and the one deadline all the copies of
//! a message share. A pipe runs a command for whoever writes to its alias
//! and cannot be taken back once it has run, so these tests watch what it
//! runs as, what it leaves behind and how long it may take.

mod support;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::delivery::*;

#[test]
fn pipe_targets_and_their_exit_codes() {
    let srv = with_aliases(
        "ok: \"|cat > {d}/out/piped.txt\"\nlater: |exit 75\nnever: \"|echo no such list >&2; exit 1\"\n",
        "",
        "",
    );
    let out = open_dir(&srv, "out");
    assert_eq!(send(&srv, &["ok@test.example"], "piped").code, 250);
    let piped = std::fs::read_to_string(out.join("piped.txt")).unwrap();
    assert!(
        piped.starts_with(
            "Return-Path: <sender@remote.example>\nDelivered-To: ok@test.example\nReceived: "
        ),
        "{piped}"
    );
    assert!(piped.ends_with("\nbody of piped\n"), "{piped}");
    let r = send(&srv, &["later@test.example"], "later");
    assert_eq!(r.code, 451, "{r:?}");
    let r = send(&srv, &["never@test.example"], "never");
    assert_eq!(r.code, 554, "{r:?}");
    assert!(
        srv.wait_log("no such list"),
        "the command's complaint is logged"
    );
    // With another copy made, a temporary pipe failure does not fail the
    // message: alice has hers, and the pipe's waits in the queue to be
    // run again.
    let r = send(
        &srv,
        &["alice@test.example", "later@test.example"],
        "together",
    );
    assert_eq!(r.code, 250);
    assert_eq!(srv.messages("alice").len(), 1);
    let listing = support::mailq(&srv.config_path).stdout;
    assert!(listing.contains("later@test.example"), "{listing}");
    assert!(!listing.contains("alice@test.example"), "{listing}");
}

#[test]
fn pipes_never_run_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let srv = with_aliases("who: \"|id -u > {d}/out/uid.txt\"\n", "", "");
    let out = open_dir(&srv, "out");
    assert_eq!(send(&srv, &["who@test.example"], "who").code, 250);
    let uid = std::fs::read_to_string(out.join("uid.txt")).unwrap();
    assert_ne!(uid.trim(), "0");
    assert_eq!(
        uid.trim(),
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .unwrap()
            .uid
            .to_string()
    );
}

#[test]
fn a_pipe_leftover_outside_its_group_keeps_no_threads_or_pipes() {
    // The leftover leaves the command's process group (setsid), so the
    // group kill misses it, and it holds the command's standard input and
    // error open without reading either. The command itself succeeds at
    // once, when the leftover has left (written its pid); nothing of the
    // server's may wait for the leftover.
    let srv = with_aliases(
        "warm: \"|cat >/dev/null\"\nholder: \"|exec 3<&0; setsid sh -c 'echo $$ > {d}/out/holder.pid; exec sleep 30' <&3 & until [ -s {d}/out/holder.pid ]; do sleep 0.01; done; exit 0\"\n",
        "",
        "",
    );
    let out = open_dir(&srv, "out");
    struct Leftover(PathBuf);
    impl Drop for Leftover {
        fn drop(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let pid = std::fs::read_to_string(&self.0).unwrap_or_default();
                if let Ok(pid) = pid.trim().parse() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _leftover = Leftover(out.join("holder.pid"));
    let pid = srv.pid();
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .unwrap()
            .count()
    };
    // A first pipe delivery, so that all the server opens once is open.
    assert_eq!(send(&srv, &["warm@test.example"], "warm").code, 250);
    // Its session's socket closes a moment after QUIT.
    let (mut threads, mut fds) = (count("task"), count("fd"));
    let settled = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(20));
        (threads, fds) = (threads.min(count("task")), fds.min(count("fd")));
    }
    // More than a pipe holds, so that writing the rest would block.
    let body = format!(
        "Subject: held\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(78)).repeat(2000)
    );
    let start = Instant::now();
    let mut c = srv.connect().hello();
    let r = c.send_mail("sender@remote.example", &["holder@test.example"], &body);
    let took = start.elapsed();
    let _ = c.cmd("QUIT");
    drop(c);
    assert_eq!(r.code, 250, "{r:?}");
    let settled = Instant::now() + Duration::from_secs(1);
    let (mut now_threads, mut now_fds) = (count("task"), count("fd"));
    while (now_threads > threads || now_fds > fds) && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(20));
        (now_threads, now_fds) = (count("task"), count("fd"));
    }
    assert!(
        took < Duration::from_secs(1),
        "the delivery waited {took:?} for the leftover"
    );
    assert!(
        now_threads <= threads,
        "threads: {threads} -> {now_threads}"
    );
    assert!(now_fds <= fds, "open files: {fds} -> {now_fds}");
}

#[test]
fn one_deadline_bounds_all_the_copies_of_a_message() {
    let srv = with_aliases(
        "slow: \"|sleep 30\", \"|sleep 31\"\n",
        "",
        "[timeouts]\ndelivery = 2\npipe = 300",
    );
    let r = send(&srv, &["slow@test.example"], "slow");
    assert_eq!(r.code, 451, "{r:?}");
    let log = srv.log();
    assert!(
        log.contains("the command did not finish within 2 s"),
        "{log}"
    );
    assert!(
        log.contains("the delivery took longer than timeouts.delivery"),
        "{log}"
    );
}
