//! Faults in the mailboxes' file systems and locks: no inodes left, a
//! Maildir that cannot be written or is gone, an mbox locked for longer
//! than the wait; and real mail readers (Dovecot's doveadm, s-nail)
//! expunging from the mailboxes while mail arrives. Each fault gets a 4xx
//! and a clear log line, leaves nothing partial, and delivery resumes
//! without a restart once it is gone.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

const ALICE: &str = "alice@test.example";

/// A message whose body says what it should be, so that a copy read back
/// can be checked whole.
fn message(subject: &str) -> String {
    let mut m = format!("Subject: {subject}\r\nFrom: <x@remote.example>\r\n\r\n");
    for i in 0..40 {
        m.push_str(&format!("{subject}: line {i} of 40\r\n"));
    }
    m
}

/// True when a raw copy read back is `subject`'s message, whole.
fn intact(raw: &[u8], subject: &str) -> bool {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let Some(body) = text.split_once("\n\n").map(|(_, b)| b) else {
        return false;
    };
    let want: String = (0..40)
        .map(|i| format!("{subject}: line {i} of 40\n"))
        .collect();
    body.trim_end_matches('\n') == want.trim_end_matches('\n')
}

fn subject_of(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Copies in a Maildir's new/ and cur/, by subject.
fn maildir_copies(maildir: &Path) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for sub in ["new", "cur"] {
        for f in files(&maildir.join(sub)) {
            let raw = std::fs::read(&f).unwrap();
            out.entry(subject_of(&raw)).or_default().push(raw);
        }
    }
    out
}

fn send(c: &mut Client, subject: &str) -> Reply {
    c.send_mail("x@remote.example", &[ALICE], &message(subject))
}

#[test]
fn no_inodes_left_gives_452_and_delivery_resumes_when_some_come_back() {
    let name = "no_inodes_left_gives_452_and_delivery_resumes_when_some_come_back";
    if !namespaces_or_skip(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let text = base_config(dir.path(), "", "", "");
    // Room for bytes, not for files: the tmpfs's root, alice's directory,
    // her Maildir with tmp/, new/ and cur/, and six messages.
    let srv = Server::start_in_namespace(dir, &text, &[], &[(&mail, "8m,nr_inodes=12")]);
    let maildir = srv.seen(&srv.maildir("alice"));
    let mut c = srv.connect().hello();
    let mut sent = 0;
    let r = loop {
        let r = send(&mut c, &format!("fill {sent}"));
        if r.code != 250 {
            break r;
        }
        sent += 1;
        assert!(sent < 20, "the inodes never ran out");
    };
    assert_eq!(r.code, 452, "{r:?}\n{}", srv.log());
    assert!(r.text().starts_with("4.3.1"), "{r:?}");
    assert!(
        srv.wait_log("No space left on device"),
        "{r:?}\n{}",
        srv.log()
    );
    assert!(files(&maildir.join("tmp")).is_empty(), "left in tmp/");
    assert_eq!(files(&maildir.join("new")).len(), sent);
    // The reader takes a message away: the next one is delivered, by the
    // same server, in the same session.
    std::fs::remove_file(&files(&maildir.join("new"))[0]).unwrap();
    let r = send(&mut c, "after room came back");
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    let copies = maildir_copies(&maildir);
    assert!(intact(
        &copies["after room came back"][0],
        "after room came back"
    ));
}

#[test]
fn a_maildir_that_cannot_be_written_gives_451_until_it_can() {
    let name = "a_maildir_that_cannot_be_written_gives_451_until_it_can";
    if !namespaces_or_skip(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail/alice/Maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let text = base_config(dir.path(), "", "", "");
    // Read-only even for root: a read-only bind mount over the Maildir,
    // in the server's own mount namespace.
    let m = maildir.display();
    let srv = Server::start_in_namespace_after(
        dir,
        &text,
        &format!("mount --bind '{m}' '{m}'\nmount -o remount,bind,ro '{m}'\n"),
    );
    let seen = srv.seen(&maildir);
    let mut c = srv.connect().hello();
    let r = send(&mut c, "read-only");
    assert_eq!(r.code, 451, "{r:?}\n{}", srv.log());
    assert!(r.text().starts_with("4."), "{r:?}");
    assert!(
        srv.wait_log("Read-only file system"),
        "{r:?}\n{}",
        srv.log()
    );
    assert!(maildir_copies(&seen).is_empty());
    // The administrator fixes it; the client's retry is delivered.
    srv.in_namespace(&format!("umount '{m}'"));
    let r = send(&mut c, "read-only");
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    let copies = maildir_copies(&seen);
    assert_eq!(copies["read-only"].len(), 1);
    assert!(intact(&copies["read-only"][0], "read-only"));
    assert!(files(&seen.join("tmp")).is_empty(), "left in tmp/");
}

#[test]
fn a_maildir_that_vanished_is_made_again() {
    let srv = Server::start();
    let maildir = srv.maildir("alice");
    let mut c = srv.connect().hello();
    assert_eq!(send(&mut c, "before").code, 250);
    // Removed while the server runs, and the user's directory with it.
    std::fs::remove_dir_all(maildir.parent().unwrap()).unwrap();
    let r = send(&mut c, "after it vanished");
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    let copies = maildir_copies(&maildir);
    assert!(intact(&copies["after it vanished"][0], "after it vanished"));
    // A file where the Maildir should be: that cannot be fixed by
    // mailroom, so the client is told to try later, and is served once
    // the administrator has moved it away.
    std::fs::remove_dir_all(&maildir).unwrap();
    std::fs::write(&maildir, "not a directory").unwrap();
    let r = send(&mut c, "in the way");
    assert_eq!(r.code, 451, "{r:?}\n{}", srv.log());
    assert!(srv.wait_log("Not a directory"), "{}", srv.log());
    std::fs::remove_file(&maildir).unwrap();
    let r = send(&mut c, "in the way");
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    assert!(intact(
        &maildir_copies(&maildir)["in the way"][0],
        "in the way"
    ));
}

/// The messages of an mbox or a Maildir as Python's `mailbox` reads them:
/// (Subject, body) pairs, each of the two ended by a NUL on the way.
fn python_read(kind: &str, path: &Path) -> Vec<(String, String)> {
    let script = "import mailbox, sys\n\
                  box = mailbox.mbox(sys.argv[2], create=False) if sys.argv[1] == 'mbox' \
                  else mailbox.Maildir(sys.argv[2], create=False)\n\
                  for m in box:\n\
                  \x20   sys.stdout.write((m['Subject'] or '') + '\\0' + m.get_payload() + '\\0')\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(kind)
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = text.split_terminator('\0').collect();
    fields
        .chunks(2)
        .map(|p| (p[0].to_string(), p[1].to_string()))
        .collect()
}

/// Checks a mailbox read back after readers expunged every "drop"
/// message: exactly the `keep` ones are left, once each and whole.
fn only_kept_and_whole(read: &[(String, String)], keep: &[String], what: &str) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (subject, body) in read {
        if !subject.starts_with("keep") && !subject.starts_with("drop") {
            // A reader's own bookkeeping message, if any.
            continue;
        }
        let whole = format!("Subject: {subject}\n\n{body}");
        assert!(
            intact(whole.as_bytes(), subject),
            "{what}: {subject} is not whole:\n{body}"
        );
        *seen.entry(subject.clone()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = keep.iter().map(|s| (s.clone(), 1)).collect();
    assert_eq!(seen, want, "{what}");
}

/// Locks an mbox's dot-lock with liblockfile's `dotlockfile` (what Debian's
/// mail readers lock with), held by a shell that then sleeps; the lock
/// names that process, which stays alive until killed.
fn dotlock_held(mbox: &Path) -> std::process::Child {
    let lock = format!("{}.lock", mbox.display());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dotlockfile -p -l '{lock}' && echo locked && exec sleep 60"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "locked");
    child
}

/// Holds a classic POSIX write lock on the whole mbox, as Dovecot, mutt
/// and s-nail take it, from a Python process.
fn fcntl_held(mbox: &Path) -> std::process::Child {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(
            "import fcntl, sys, time\n\
             f = open(sys.argv[1], 'r+')\n\
             fcntl.lockf(f, fcntl.LOCK_EX)\n\
             print('locked', flush=True)\n\
             time.sleep(60)\n",
        )
        .arg(mbox)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "locked");
    child
}

fn wait_for_line(child: &mut std::process::Child, want: &str) {
    use std::io::BufRead;
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), want);
}

#[test]
fn an_mbox_locked_longer_than_the_wait_gives_451_until_it_is_released() {
    if !tool("dotlockfile") || !tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mail")).unwrap();
    let mbox = dir.path().join("mail/carol.mbox");
    let text = base_config(
        dir.path(),
        "",
        "",
        &format!(
            "[timeouts]\nmbox_lock = 1\n[mailbox.carol]\nmbox = \"{}\"\n",
            mbox.display()
        ),
    );
    let srv = Server::start_config(dir, &text);
    let mut c = srv.connect().hello();
    let to = |c: &mut Client, s: &str| {
        c.send_mail("x@remote.example", &["carol@test.example"], &message(s))
    };
    assert_eq!(to(&mut c, "first").code, 250);
    let mut before = std::fs::read(&mbox).unwrap();
    type Hold = fn(&Path) -> std::process::Child;
    let holders: [(&str, Hold); 2] = [("dot-lock", dotlock_held), ("fcntl lock", fcntl_held)];
    for (how, hold) in holders {
        let mut holder = hold(&mbox);
        let r = to(&mut c, how);
        assert_eq!(r.code, 451, "{how}: {r:?}\n{}", srv.log());
        assert!(
            srv.wait_log("is locked by another program"),
            "{}",
            srv.log()
        );
        assert_eq!(
            std::fs::read(&mbox).unwrap(),
            before,
            "{how}: the mbox changed"
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        if how == "dot-lock" {
            let lock = format!("{}.lock", mbox.display());
            assert!(Command::new("dotlockfile")
                .args(["-u", &lock])
                .status()
                .unwrap()
                .success());
        }
        let r = to(&mut c, how);
        assert_eq!(r.code, 250, "{how}, released: {r:?}\n{}", srv.log());
        let now = std::fs::read(&mbox).unwrap();
        assert!(now.starts_with(&before));
        let read = python_read("mbox", &mbox);
        let last = read.last().unwrap();
        assert_eq!(last.0, how);
        assert!(intact(
            format!("Subject: {how}\n\n{}", last.1).as_bytes(),
            how
        ));
        assert_eq!(read.len(), if how == "dot-lock" { 2 } else { 3 });
        before = now;
    }
}

/// The ids a mail reader runs as: nobody's when the tests run as root
/// (Dovecot refuses to touch mail as root; the server then runs as
/// nobody too), else our own.
fn reader_ids() -> (u32, u32) {
    if nix::unistd::geteuid().is_root() {
        let id = |flag: &str| {
            let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        (id("-u"), id("-g"))
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

/// A server delivering to alice's Maildir and carol's mbox, both the
/// reader's to read and write.
fn server_for_readers() -> (Server, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (uid, gid) = reader_ids();
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::chown(&mail, Some(uid), Some(gid)).unwrap();
    let mbox = mail.join("carol.mbox");
    let top = if nix::unistd::geteuid().is_root() {
        "user = \"nobody\""
    } else {
        ""
    };
    let text = base_config(
        dir.path(),
        top,
        "",
        &format!("[mailbox.carol]\nmbox = \"{}\"\n", mbox.display()),
    );
    let srv = Server::start_config(dir, &text);
    let maildir = srv.maildir("alice");
    (srv, maildir, mbox)
}

/// Sends messages to alice and carol from a thread, "keep i" and
/// "drop i" in turn, a little apart, while `reader` runs over and over:
/// at least `n`, and on until the reader has run three times (at most
/// ten times `n`). The reader says whether it finished its work; it must
/// have the last time, once no more mail comes. Gives back the subjects
/// to keep.
fn send_while(srv: &Server, n: usize, mut reader: impl FnMut() -> bool) -> Vec<String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let addr = srv.addr;
    let rounds = Arc::new(AtomicUsize::new(0));
    let seen = rounds.clone();
    let sender = std::thread::spawn(move || {
        let mut c = Client::connect(addr).hello();
        let mut keep = Vec::new();
        for i in 0..10 * n {
            if i >= n && seen.load(Ordering::SeqCst) >= 3 {
                break;
            }
            let subject = format!("{} {i}", if i % 2 == 0 { "keep" } else { "drop" });
            let r = c.send_mail(
                "x@remote.example",
                &[ALICE, "carol@test.example"],
                &message(&subject),
            );
            assert_eq!(r.code, 250, "{subject}: {r:?}");
            if i % 2 == 0 {
                keep.push(subject);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        keep
    });
    while !sender.is_finished() {
        reader();
        rounds.fetch_add(1, Ordering::SeqCst);
    }
    // Once more, for what came after the last round.
    assert!(reader(), "the reader's last round did not finish");
    let keep = sender.join().unwrap_or_else(|_| panic!("{}", srv.log()));
    let rounds = rounds.load(Ordering::SeqCst);
    assert!(rounds >= 3, "the reader ran only {rounds} times meanwhile");
    eprintln!(
        "figure: the reader ran {rounds} times while {} messages arrived",
        keep.len() * 2
    );
    keep
}

#[test]
fn dovecot_expunging_while_mail_arrives_loses_nothing() {
    if !tool("doveadm") || !tool("python3") {
        return;
    }
    let (srv, maildir, mbox) = server_for_readers();
    let (uid, gid) = reader_ids();
    let home = srv.dir.path().join("dovecot");
    std::fs::create_dir_all(home.join("mbox-root")).unwrap();
    let conf = home.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "ssl = no\nbase_dir = {h}/run\nstate_dir = {h}/state\nlog_path = {h}/log\n\
             mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n\
             mbox_write_locks = dotlock fcntl\nmbox_read_locks = fcntl\n",
            h = home.display()
        ),
    )
    .unwrap();
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(&home)
        .status()
        .unwrap();
    assert!(chown.success());
    let doveadm = |location: &str, args: &[&str]| {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(&conf)
            .arg("-o")
            .arg(format!("mail_location={location}"))
            .args(args)
            .env("USER", "nobody")
            .env("HOME", &home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let in_mbox = format!(
        "mbox:{}:INBOX={}:INDEX=MEMORY",
        home.join("mbox-root").display(),
        mbox.display()
    );
    let in_maildir = format!("maildir:{}:INDEX=MEMORY", maildir.display());
    // Both mailboxes exist before Dovecot looks.
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "x@remote.example",
        &[ALICE, "carol@test.example"],
        &message("keep first"),
    );
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    let mut keep = vec!["keep first".to_string()];
    keep.extend(send_while(&srv, 60, || {
        for location in [&in_mbox, &in_maildir] {
            doveadm(
                location,
                &["expunge", "mailbox", "INBOX", "header", "Subject", "drop"],
            );
            doveadm(
                location,
                &["fetch", "hdr.subject body", "mailbox", "INBOX", "all"],
            );
        }
        true
    }));
    keep.sort();
    only_kept_and_whole(
        &python_read("mbox", &mbox),
        &keep,
        "the mbox, read by Python",
    );
    only_kept_and_whole(
        &python_read("maildir", &maildir),
        &keep,
        "the Maildir, read by Python",
    );
    // Dovecot sees the same.
    for location in [&in_mbox, &in_maildir] {
        let subjects = doveadm(
            location,
            &["fetch", "hdr.subject", "mailbox", "INBOX", "all"],
        );
        let n = subjects
            .lines()
            .filter(|l| l.starts_with("hdr.subject: keep"))
            .count();
        assert_eq!(n, keep.len(), "{location}:\n{subjects}");
    }
}

#[test]
fn mutt_deleting_from_an_mbox_while_mail_arrives_loses_nothing() {
    if !tool("mutt") || !tool("script") || !tool("python3") {
        return;
    }
    let (srv, _, mbox) = server_for_readers();
    let home = srv.dir.path().join("mutt");
    std::fs::create_dir_all(&home).unwrap();
    let muttrc = home.join("muttrc");
    // D: delete the "drop" messages, write the mbox back, quit.
    std::fs::write(
        &muttrc,
        format!(
            "set folder={h}\nset delete=yes\nset quit=yes\nset move=no\nset sleep_time=0\n\
             set wait_key=no\nset mbox_type=mbox\n\
             macro index D \"<delete-pattern>~s drop<enter><sync-mailbox><quit>\"\n",
            h = home.display()
        ),
    )
    .unwrap();
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "x@remote.example",
        &["carol@test.example"],
        &message("keep first"),
    );
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    let mut keep = vec!["keep first".to_string()];
    keep.extend(send_while(&srv, 60, || {
        // mutt wants a terminal: script(1) gives it one. While mail keeps
        // coming, mutt may find the mbox grown each time it goes to write
        // it, read it again and stay open without writing: nothing is
        // lost, and the round ends there.
        let mutt = format!(
            "mutt -n -F '{}' -f '{}' -e 'push D'",
            muttrc.display(),
            mbox.display()
        );
        let status = Command::new("timeout")
            .args(["-s", "KILL", "10", "script", "-qec", &mutt, "/dev/null"])
            .env("TERM", "xterm")
            .env("HOME", &home)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        status.success()
    }));
    keep.sort();
    only_kept_and_whole(
        &python_read("mbox", &mbox),
        &keep,
        "the mbox, read by Python",
    );
}
