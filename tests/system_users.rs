//! Delivery to the accounts of the passwd database, as root: Maildirs and
//! mboxes created by and owned by the user, a mail spool directory like
//! Debian's /var/mail (group-writable, setgid), `~/.forward` with its
//! safety checks, pipes and include files run as their owners, the
//! minimum uid and its allow list, the overflow uids, accounts named like
//! paths, VRFY with the GECOS name, and failed copies taken back or
//! reported.
//!
//! Each server runs in a mount namespace of its own in which a test passwd
//! file is bind-mounted over /etc/passwd, so the accounts exist for it
//! alone and nothing outside the test's directory changes. Without root (or
//! where mount namespaces are not allowed) these tests are skipped.

mod support;
use nix::unistd::{chown, Gid, Uid};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use support::*;

const CAROL: u32 = 2001;
const DAVE: u32 = 2002;
const MAIL_GID: u32 = 2500;

/// A server whose passwd knows carol and dave (homes under the test
/// directory, carol's writable by her, dave's not), sys1 and sys2 (below
/// the minimum uid; sys2 allowed), and the system's own accounts. `{d}` in
/// `top` and `tables` stands for the test directory; `setup` runs in it
/// before the server starts.
fn start(top: &str, tables: &str, setup: &dyn Fn(&Path)) -> (Server, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    // Let the users through the test directory, as /home would.
    set_mode(&d, 0o755);
    for (name, uid) in [
        ("carol", CAROL),
        ("dave", DAVE),
        ("sys1", 501),
        ("sys2", 502),
    ] {
        let home = d.join("home").join(name);
        std::fs::create_dir_all(&home).unwrap();
        set_mode(&home, 0o755);
        if name != "dave" {
            own(&home, uid, uid);
        }
    }
    set_mode(&d.join("home"), 0o755);
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    set_mode(&out, 0o777);
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for (name, uid, gecos) in [
        ("carol", CAROL, "Carol Example,Room 1,,"),
        ("dave", DAVE, "Dave"),
        ("sys1", 501, ""),
        ("sys2", 502, ""),
    ] {
        passwd.push_str(&format!(
            "{name}:x:{uid}:{uid}:{gecos}:{}/home/{name}:/bin/sh\n",
            d.display()
        ));
    }
    let passwd_path = d.join("passwd");
    std::fs::write(&passwd_path, passwd).unwrap();
    set_mode(&passwd_path, 0o644);
    setup(&d);
    let ds = d.display().to_string();
    let users = format!(
        "[users]\nmin_uid = 1000\nallow = [\"sys2\"]\n{}",
        tables.replace("{d}", &ds)
    );
    let top = format!(
        "system_users = true\nvrfy = true\n{}",
        top.replace("{d}", &ds)
    );
    let text = base_config(&d, &top, "", &users);
    let srv =
        Server::start_in_namespace(dir, &text, &[(&passwd_path, Path::new("/etc/passwd"))], &[]);
    (srv, d)
}

/// [`start`], with mboxes in `{d}/var-mail/USER` in a spool like Debian's
/// /var/mail: root:mail 2775.
fn start_with_mail_spool() -> (Server, PathBuf) {
    start("", "mbox = \"{d}/var-mail/{user}\"\n", &|d| {
        let spool = d.join("var-mail");
        std::fs::create_dir_all(&spool).unwrap();
        own(&spool, 0, MAIL_GID);
        set_mode(&spool, 0o2775);
    })
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn own(p: &Path, uid: u32, gid: u32) {
    chown(p, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).unwrap();
}

fn send(srv: &Server, from: &str, to: &[&str], subject: &str) -> Reply {
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        from,
        to,
        &format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n"),
    );
    let _ = c.cmd("QUIT");
    r
}

fn owner_and_mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn subjects(msgs: &[Vec<u8>]) -> Vec<String> {
    msgs.iter()
        .map(|m| Parsed::new(m.clone()).subject().unwrap_or_default())
        .collect()
}

#[test]
fn maildirs_are_created_by_and_for_the_user() {
    if !namespaces_or_skip("maildirs_are_created_by_and_for_the_user") {
        return;
    }
    let (srv, d) = start("", "", &|_| {});
    assert_eq!(
        send(
            &srv,
            "x@remote.example",
            &["carol@test.example"],
            "hello carol"
        )
        .code,
        250
    );
    let md = d.join("home/carol/Maildir");
    for sub in ["", "cur", "new", "tmp"] {
        assert_eq!(
            owner_and_mode(&md.join(sub)),
            (CAROL, CAROL, 0o700),
            "{sub}"
        );
    }
    let msgs = read_maildir(&md);
    assert_eq!(subjects(&msgs), ["hello carol"]);
    let file = std::fs::read_dir(md.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(owner_and_mode(&file), (CAROL, CAROL, 0o600));
    let m = Parsed::new(msgs[0].clone());
    assert_eq!(
        m.header("Delivered-To").as_deref(),
        Some("carol@test.example")
    );
    assert!(
        srv.wait_log("as carol"),
        "the log says whose privileges were used"
    );

    // The minimum uid, and its allow list.
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.expect("RCPT TO:<sys1@test.example>", 550);
    c.expect("RCPT TO:<sys2@test.example>", 250);
    c.expect("RCPT TO:<nosuchuser@test.example>", 550);
    // VRFY gives the name from GECOS.
    let r = c.expect("VRFY carol", 250);
    assert_eq!(r.lines, ["2.1.5 Carol Example <carol@test.example>"]);
}

#[test]
fn the_overflow_uids_are_not_mail_users() {
    if !namespaces_or_skip("the_overflow_uids_are_not_mail_users") {
        return;
    }
    // nobody (65534) passed min_uid: 250 at RCPT, then 451 at DATA for
    // ever, its home being /nonexistent. NFS's old nobody is
    // 4294967294, and (uid_t)-1 is no uid at all.
    let (srv, _) = start("", "", &|d| {
        let mut passwd = std::fs::read_to_string(d.join("passwd")).unwrap();
        assert!(passwd.contains("\nnobody:x:65534:"), "{passwd}");
        for (name, uid) in [("nfsnobody", 4294967294u32), ("minus1", 4294967295)] {
            passwd.push_str(&format!(
                "{name}:x:{uid}:{uid}::{}/home/carol:/bin/sh\n",
                d.display()
            ));
        }
        std::fs::write(d.join("passwd"), passwd).unwrap();
    });
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    for name in ["nobody", "nfsnobody", "minus1"] {
        let r = c.expect(&format!("RCPT TO:<{name}@test.example>"), 550);
        assert!(r.text().starts_with("5.1.1"), "{name}: {r:?}");
    }
    c.expect("RCPT TO:<carol@test.example>", 250);
}

#[test]
fn local_parts_never_name_paths_even_for_accounts_named_so() {
    if !namespaces_or_skip("local_parts_never_name_paths_even_for_accounts_named_so") {
        return;
    }
    // Accounts named like paths, and a mailbox template under a directory
    // anyone may write to: only the path checks keep ".." from naming
    // {d}/out/inbox, outside {d}/out/mail.
    let names = ["..", ".x", "a/b"];
    let (srv, d) = start("", "mbox = \"{d}/out/mail/{user}/inbox\"\n", &|d| {
        let mut passwd = std::fs::read_to_string(d.join("passwd")).unwrap();
        for (i, name) in names.iter().enumerate() {
            let uid = 3001 + i;
            passwd.push_str(&format!("{name}:x:{uid}:{uid}::/:/bin/sh\n"));
        }
        std::fs::write(d.join("passwd"), passwd).unwrap();
    });
    let replies: Vec<Reply> = names
        .iter()
        .map(|name| {
            let mut c = srv.connect().hello();
            c.expect("MAIL FROM:<x@remote.example>", 250);
            let r = c.cmd(&format!("RCPT TO:<\"{name}\"@test.example>"));
            if r.code == 250 {
                // Let it try, so that a path it names is really written.
                c.expect("DATA", 354);
                c.send("Subject: escape\r\n\r\nx\r\n.\r\n");
                c.reply();
            }
            r
        })
        .collect();
    let made: Vec<_> = std::fs::read_dir(d.join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(made.is_empty(), "{made:?}");
    for (name, r) in names.iter().zip(&replies) {
        assert_eq!(r.code, 550, "{name}: {r:?}");
        assert!(r.text().starts_with("5.1.1"), "{name}: {r:?}");
    }
}

#[test]
fn a_failed_copy_waits_in_the_queue_or_fails_the_message() {
    if !namespaces_or_skip("a_failed_copy_waits_in_the_queue_or_fails_the_message") {
        return;
    }
    // dave cannot write his (root-owned) home, so his Maildir cannot be made.
    let (srv, d) = start("", "", &|_| {});
    let carol = d.join("home/carol/Maildir");
    assert_eq!(
        send(&srv, "x@remote.example", &["carol@test.example"], "first").code,
        250
    );
    // Alone, dave's copy fails the message: nothing is kept, and the
    // client's queue retries.
    let r = send(&srv, "x@remote.example", &["dave@test.example"], "alone");
    assert_eq!(r.code, 451, "{r:?}");
    // With carol's copy made (by her helper, as her), the message is
    // taken, and dave's copy waits in the queue.
    let r = send(
        &srv,
        "x@remote.example",
        &["carol@test.example", "dave@test.example"],
        "both",
    );
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(subjects(&read_maildir(&carol)), ["first", "both"]);
    assert_eq!(std::fs::read_dir(carol.join("tmp")).unwrap().count(), 0);
    let listing = mailq(&srv.config_path).stdout;
    assert!(listing.contains("dave@test.example"), "{listing}");
    assert!(!listing.contains("carol@test.example"), "{listing}");
}

#[test]
fn mboxes_in_a_mail_spool_belong_to_their_users() {
    if !namespaces_or_skip("mboxes_in_a_mail_spool_belong_to_their_users") {
        return;
    }
    let (srv, d) = start_with_mail_spool();
    let spool = d.join("var-mail");
    assert_eq!(
        send(&srv, "x@remote.example", &["carol@test.example"], "one").code,
        250
    );
    assert_eq!(send(&srv, "", &["carol@test.example"], "two").code, 250);
    let mbox = spool.join("carol");
    // Owned by carol, group from the setgid spool, private.
    assert_eq!(owner_and_mode(&mbox), (CAROL, MAIL_GID, 0o600));
    assert!(!spool.join("carol.lock").exists());
    let msgs = mbox_messages(&mbox);
    assert_eq!(subjects(&msgs), ["one", "two"]);
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.starts_with("From x@remote.example "), "{text}");
    assert!(text.contains("\n\nFrom MAILER-DAEMON "), "{text}");
}

#[test]
fn forward_files_are_honoured_only_when_safe() {
    if !namespaces_or_skip("forward_files_are_honoured_only_when_safe") {
        return;
    }
    let (srv, d) = start("", "", &|_| {});
    let forward = d.join("home/carol/.forward");
    let uid_file = d.join("out/carol-uid");
    std::fs::write(
        &forward,
        format!(
            "# keep a copy (her own full address is her mailbox), and tell a script\ncarol@test.example, \"|id -u > {}\"\n",
            uid_file.display()
        ),
    )
    .unwrap();
    own(&forward, CAROL, CAROL);
    set_mode(&forward, 0o644);
    assert_eq!(
        send(
            &srv,
            "x@remote.example",
            &["carol@test.example"],
            "forwarded"
        )
        .code,
        250
    );
    assert_eq!(
        subjects(&read_maildir(&d.join("home/carol/Maildir"))),
        ["forwarded"]
    );
    // The pipe ran as carol, never as root.
    assert_eq!(
        std::fs::read_to_string(&uid_file).unwrap().trim(),
        CAROL.to_string()
    );

    // Writable by the group: ignored, the mail goes to the mailbox.
    std::fs::remove_file(&uid_file).unwrap();
    set_mode(&forward, 0o664);
    assert_eq!(
        send(
            &srv,
            "x@remote.example",
            &["carol@test.example"],
            "unsafe forward"
        )
        .code,
        250
    );
    assert!(!uid_file.exists(), "the unsafe .forward ran");
    assert!(srv.wait_log(".forward: ignored"), "{}", srv.log());
    // Writable by others (not by the group): ignored too.
    set_mode(&forward, 0o646);
    assert_eq!(
        send(
            &srv,
            "x@remote.example",
            &["carol@test.example"],
            "world-writable forward"
        )
        .code,
        250
    );
    assert!(!uid_file.exists(), "the world-writable .forward ran");
    // Owned by someone else: ignored too.
    set_mode(&forward, 0o644);
    own(&forward, DAVE, DAVE);
    assert_eq!(
        send(
            &srv,
            "x@remote.example",
            &["carol@test.example"],
            "foreign forward"
        )
        .code,
        250
    );
    assert!(!uid_file.exists(), "a .forward owned by someone else ran");
    assert_eq!(
        subjects(&read_maildir(&d.join("home/carol/Maildir"))),
        [
            "forwarded",
            "unsafe forward",
            "world-writable forward",
            "foreign forward"
        ]
    );
}

#[test]
fn alias_commands_run_as_the_aliases_owner_and_includes_name_none() {
    if !namespaces_or_skip("alias_commands_run_as_the_aliases_owner_and_includes_name_none") {
        return;
    }
    let (srv, d) = start("aliases = \"{d}/aliases\"", "", &|d| {
        let aliases = d.join("aliases");
        std::fs::write(
            &aliases,
            format!(
                "who: \"|id -u > {d}/out/alias-uid\"\nlist: :include:{d}/list.txt\n",
                d = d.display()
            ),
        )
        .unwrap();
        // The aliases file belongs to dave: its commands run as dave.
        own(&aliases, DAVE, DAVE);
        std::fs::write(
            d.join("list.txt"),
            format!("\"|id -u > {}/out/include-uid\"\n", d.display()),
        )
        .unwrap();
    });
    assert_eq!(
        send(&srv, "x@remote.example", &["who@test.example"], "who").code,
        250
    );
    assert_eq!(
        std::fs::read_to_string(d.join("out/alias-uid"))
            .unwrap()
            .trim(),
        DAVE.to_string()
    );
    // An include file may not name commands (nor files) at all.
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.expect("RCPT TO:<list@test.example>", 550);
    assert!(!d.join("out/include-uid").exists());
}

#[test]
fn a_forward_cannot_borrow_other_peoples_files_or_groups() {
    if !namespaces_or_skip("a_forward_cannot_borrow_other_peoples_files_or_groups") {
        return;
    }
    let (srv, d) = start_with_mail_spool();
    let forward = d.join("home/carol/.forward");
    let write_forward = |text: String| {
        std::fs::write(&forward, text).unwrap();
        own(&forward, CAROL, CAROL);
        set_mode(&forward, 0o644);
    };
    // 1. An include file that is not carol's is not read for her (root
    // would read it, and tell her its lines).
    let secret = d.join("secret.txt");
    std::fs::write(&secret, "s3cr3t-token\n").unwrap();
    set_mode(&secret, 0o600);
    write_forward(format!("\\carol, :include:{}\n", secret.display()));
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<carol@test.example>", 250);
    let r = c.expect("RCPT TO:<carol@test.example>", 550);
    assert!(!r.text().contains("s3cr3t"), "{r:?}");
    assert!(!srv.log().contains("s3cr3t"), "{}", srv.log());
    // Her own include file is read, addresses only.
    let mine = d.join("home/carol/list");
    std::fs::write(&mine, "bob\n").unwrap();
    own(&mine, CAROL, CAROL);
    write_forward(format!("\\carol, :include:{}\n", mine.display()));
    c.expect("RCPT TO:<carol@test.example>", 250);
    c.expect("RSET", 250);
    drop(c);
    assert_eq!(
        send(
            &srv,
            "x@remote.example",
            &["carol@test.example"],
            "included"
        )
        .code,
        250
    );
    assert_eq!(srv.messages("bob").len(), 1);

    // 2. A file in the shared mail spool named in a .forward is written
    // with carol's own groups only: she cannot make dave's mailbox there.
    write_forward(format!("\\carol, {}/var-mail/dave\n", d.display()));
    let before = std::fs::read(d.join("var-mail/carol")).unwrap();
    let r = send(&srv, "x@remote.example", &["carol@test.example"], "spool");
    assert_eq!(r.code, 250, "carol's own copy is made: {r:?}");
    assert!(!d.join("var-mail/dave").exists());
    assert!(
        std::fs::read(d.join("var-mail/carol"))
            .unwrap()
            .starts_with(&before),
        "carol's mbox only grew"
    );
    // The copy for the spool file waits in the queue, and fails again.
    assert_eq!(queue_command(&srv.config_path, &["flush"]).code, Some(0));
    let listing = wait_for("the file copy retried", || {
        let l = mailq(&srv.config_path).stdout;
        l.contains("(4.").then_some(l)
    });
    assert!(listing.contains("carol@test.example"), "{listing}");
    assert!(!d.join("var-mail/dave").exists());

    // 3. A mailbox that belongs to someone else is not delivered to: dave's
    // mbox, made by carol and readable by her, gets none of his mail.
    std::fs::remove_file(&forward).unwrap();
    let planted = d.join("var-mail/dave");
    std::fs::write(&planted, "").unwrap();
    own(&planted, CAROL, MAIL_GID);
    set_mode(&planted, 0o666);
    let r = send(&srv, "x@remote.example", &["dave@test.example"], "private");
    assert_eq!(r.code, 451, "{r:?}");
    assert_eq!(std::fs::read(&planted).unwrap(), b"");
    assert!(
        srv.wait_log("belongs to uid 2001, not to uid 2002"),
        "{}",
        srv.log()
    );
}

#[test]
fn a_crash_during_an_append_as_a_user_is_undone() {
    if !namespaces_or_skip("a_crash_during_an_append_as_a_user_is_undone") {
        return;
    }
    let (srv, d) = start_with_mail_spool();
    let mbox = d.join("var-mail/carol");
    assert_eq!(
        send(&srv, "x@remote.example", &["carol@test.example"], "before").code,
        250
    );
    let before = std::fs::read(&mbox).unwrap();
    // A big message, so that the crash comes while the helper appends.
    let addr = srv.addr;
    let sender = std::thread::spawn(move || {
        let mut c = Client::connect(addr).hello();
        c.expect("MAIL FROM:<x@remote.example>", 250);
        c.expect("RCPT TO:<carol@test.example>", 250);
        c.expect("DATA", 354);
        let line = "x".repeat(998) + "\r\n";
        let mut body = String::from("Subject: big\r\n\r\n");
        while body.len() < 20 << 20 {
            body.push_str(&line);
        }
        c.send(body);
        c.send(".\r\n");
        c.try_reply().map(|r| r.code)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::metadata(&mbox).unwrap().len() == before.len() as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the append never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let config = std::fs::read_to_string(&srv.config_path).unwrap();
    let (dir, _) = srv.crash();
    assert_eq!(sender.join().unwrap(), None, "no reply after the crash");
    // The helper, left alone, takes its copy back; the next start undoes
    // whatever is left through the journal.
    let srv = Server::start_in_namespace(
        dir,
        &config,
        &[(&d.join("passwd"), Path::new("/etc/passwd"))],
        &[],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read(&mbox).unwrap() != before || d.join("var-mail/carol.lock").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the mbox was not restored:\n{}",
            srv.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(owner_and_mode(&mbox), (CAROL, MAIL_GID, 0o600));
    assert_eq!(
        std::fs::read_dir(d.join("spool/journal")).map_or(0, |e| e.count()),
        0
    );
    assert_eq!(
        send(&srv, "x@remote.example", &["carol@test.example"], "after").code,
        250
    );
    assert_eq!(subjects(&mbox_messages(&mbox)), ["before", "after"]);
}

#[test]
fn a_forward_to_an_address_elsewhere_goes_to_the_relay() {
    if !namespaces_or_skip("a_forward_to_an_address_elsewhere_goes_to_the_relay")
        || !tool("python3")
    {
        return;
    }
    let sink = support::smarthost::Smarthost::start(&[]);
    let relay = format!(
        "\n[relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        sink.port
    );
    let (srv, d) = start("", &relay, &|d| {
        let forward = d.join("home/carol/.forward");
        std::fs::write(&forward, "\\carol, carol@elsewhere.example\n").unwrap();
        own(&forward, CAROL, CAROL);
        set_mode(&forward, 0o644);
    });
    let r = send(&srv, "x@remote.example", &["carol@test.example"], "onward");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(
        subjects(&read_maildir(&d.join("home/carol/Maildir"))),
        ["onward"]
    );
    let got = sink.wait_for(1, std::time::Duration::from_secs(15));
    assert_eq!(got.len(), 1, "{}\n{}", sink.transcript(), srv.log());
    assert_eq!(got[0].mail_from(), "x@remote.example");
    assert_eq!(got[0].rcpt_addresses(), ["carol@elsewhere.example"]);
}

/// A capability set from /proc's status, as its hexadecimal mask.
fn cap_masks(status: &str) -> Vec<(String, String)> {
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

#[test]
fn as_root_it_keeps_only_the_capabilities_delivery_needs() {
    if !namespaces_or_skip("as_root_it_keeps_only_the_capabilities_delivery_needs") {
        return;
    }
    // carol's home is hers alone: her .forward is read through
    // CAP_DAC_READ_SEARCH, and its pipe runs as her (CAP_SETUID,
    // CAP_SETGID).
    let (srv, d) = start("", "", &|d| set_mode(&d.join("home/carol"), 0o700));
    assert!(srv.wait_log("running as root with only"), "{}", srv.log());
    // CAP_DAC_READ_SEARCH (2), CAP_KILL (5), CAP_SETGID (6), CAP_SETUID
    // (7), in every thread; nothing to pass on.
    let kept = "00000000000000e4";
    let tasks = std::fs::read_dir(format!("/proc/{}/task", srv.pid())).unwrap();
    let mut threads = 0;
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for (set, mask) in cap_masks(&status) {
            let want = match set.as_str() {
                "CapInh" | "CapAmb" => "0000000000000000",
                _ => kept,
            };
            assert_eq!(mask, want, "{set} of a thread:\n{status}");
        }
        threads += 1;
    }
    assert!(threads > 8, "{threads} threads");
    let forward = d.join("home/carol/.forward");
    let uid_file = d.join("out/carol-uid");
    std::fs::write(
        &forward,
        format!("carol@test.example, \"|id -u > {}\"\n", uid_file.display()),
    )
    .unwrap();
    own(&forward, CAROL, CAROL);
    set_mode(&forward, 0o644);
    let r = send(&srv, "x@remote.example", &["carol@test.example"], "capable");
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    let md = d.join("home/carol/Maildir");
    assert_eq!(subjects(&read_maildir(&md)), vec!["capable".to_string()]);
    assert_eq!(owner_and_mode(&md).0, CAROL);
    assert_eq!(
        std::fs::read_to_string(&uid_file).unwrap().trim(),
        CAROL.to_string()
    );
}
