//! Local delivery against the real server: mbox mailboxes, aliases (chains,
//! loops, includes, files, pipes, remote targets, lists), duplicates, and
//! VRFY/EXPN from the same resolver.

mod support;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

/// A server whose aliases file holds `aliases` ({d} stands for the
/// temporary directory) and whose mailbox tables include `tables`.
fn with_aliases(aliases: &str, top: &str, tables: &str) -> Server {
    with_aliases_and_file_limit(aliases, top, tables, None)
}

/// `files`: at most that many open file descriptors for the server.
fn with_aliases_and_file_limit(
    aliases: &str,
    top: &str,
    tables: &str,
    files: Option<u32>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let path = dir.path().join("aliases");
    std::fs::write(&path, aliases.replace("{d}", &d)).unwrap();
    let top = format!("aliases = \"{}\"\n{top}", path.display());
    let text = base_config(dir.path(), &top, "", &tables.replace("{d}", &d));
    match files {
        Some(n) => Server::start_config_with_file_limit(dir, &text, n),
        None => Server::start_config(dir, &text),
    }
}

/// A directory anyone can write to, for files written by pipes (which run
/// as `nobody` when the tests run as root).
fn open_dir(srv: &Server, name: &str) -> PathBuf {
    let p = srv.dir.path().join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut parent = p.parent();
    while let Some(dir) = parent {
        // Let nobody through the temporary directories on the way.
        if dir.starts_with(srv.dir.path()) {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
        }
        parent = dir.parent();
    }
    p
}

fn send(srv: &Server, to: &[&str], subject: &str) -> Reply {
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "sender@remote.example",
        to,
        &format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n"),
    );
    let _ = c.cmd("QUIT");
    r
}

fn mbox_text(path: &Path) -> Vec<String> {
    mbox_messages(path)
        .into_iter()
        .map(|m| String::from_utf8(m).unwrap())
        .collect()
}

#[test]
fn mbox_mailboxes_get_mboxrd() {
    let dir = tempfile::tempdir().unwrap();
    // In a directory that does not exist yet: made, like a Maildir's.
    let mbox = dir.path().join("mboxes/carol.mbox");
    let tables = format!("[mailbox.carol]\nmbox = \"{}\"", mbox.display());
    let text = base_config(dir.path(), "", "", &tables);
    let srv = Server::start_config(dir, &text);
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "a@remote.example",
        &["carol@test.example"],
        "Subject: one\r\n\r\nFrom here\r\n>From there\r\n",
    );
    assert_eq!(r.code, 250);
    let r = c.send_mail("", &["carol@test.example"], "Subject: two\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.starts_with("From a@remote.example "), "{text}");
    assert!(
        text.contains("\n>From here\n>>From there\n\nFrom MAILER-DAEMON "),
        "{text}"
    );
    assert!(text.ends_with("\nx\n\n"));
    let msgs = mbox_text(&mbox);
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].starts_with(
        "Return-Path: <a@remote.example>\nDelivered-To: carol@test.example\nReceived: "
    ));
    let mode = std::fs::metadata(&mbox).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mode = std::fs::metadata(mbox.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn alias_chains_lists_and_duplicates() {
    let srv = with_aliases(
        "# staff list\nstaff: alice, team\nteam: bob,\n  alice\nowner-staff: alice\nboss: \\alice\nwebmaster: staff\n",
        "",
        "",
    );
    // alice is reached twice (directly and through team): one copy.
    assert_eq!(
        send(
            &srv,
            &["staff@test.example", "alice@test.example"],
            "to staff"
        )
        .code,
        250
    );
    let alice = srv.messages("alice");
    let bob = srv.messages("bob");
    assert_eq!((alice.len(), bob.len()), (1, 1));
    // Members of a list with an owner get the owner as envelope sender.
    let m = Parsed::new(bob[0].clone());
    assert_eq!(
        m.header("Return-Path").as_deref(),
        Some("<owner-staff@test.example>")
    );
    assert_eq!(
        m.header("Delivered-To").as_deref(),
        Some("bob@test.example")
    );
    // Chains work and the header is left alone.
    assert_eq!(
        send(&srv, &["webmaster@test.example"], "via webmaster").code,
        250
    );
    assert_eq!(srv.messages("bob").len(), 2);
    assert_eq!(send(&srv, &["boss@test.example"], "boss").code, 250);
    assert_eq!(srv.messages("alice").len(), 3);
}

#[test]
fn alias_loops_and_remote_targets_are_refused_at_rcpt() {
    let srv = with_aliases(
        "a: b\nb: c\nc: a\nfar: someone@elsewhere.example\nmixed: alice, far\n",
        "",
        "",
    );
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    let r = c.expect("RCPT TO:<a@test.example>", 550);
    assert!(
        r.text().starts_with("5.4.6") && r.text().contains("loop"),
        "{r:?}"
    );
    // The chain goes to the log; the client learns no alias names.
    assert!(!r.text().contains("->"), "{r:?}");
    assert!(
        srv.wait_log("alias loop: a -> b -> c -> a"),
        "{}",
        srv.log()
    );
    let r = c.expect("RCPT TO:<far@test.example>", 550);
    assert!(
        r.text().starts_with("5.7.1") && r.text().contains("remote address"),
        "{r:?}"
    );
    assert!(!r.text().contains("someone@elsewhere.example"), "{r:?}");
    assert!(srv.wait_log("forwards to <someone@elsewhere.example>"));
    c.expect("RCPT TO:<mixed@test.example>", 550);
    c.expect("RCPT TO:<alice@test.example>", 250);
    // An alias naming itself, in full, means its own mailbox (aliases(5)).
    let srv = with_aliases("bob: bob@test.example, alice\n", "", "");
    assert_eq!(send(&srv, &["bob@test.example"], "self").code, 250);
    assert_eq!(
        (srv.messages("alice").len(), srv.messages("bob").len()),
        (1, 1)
    );
}

#[test]
fn include_lists_and_file_targets() {
    let srv = with_aliases(
        "members: :include:{d}/members.txt\narchive: {d}/archive.mbox\n",
        "",
        "",
    );
    std::fs::write(
        srv.dir.path().join("members.txt"),
        "# the members\nalice, bob\n",
    )
    .unwrap();
    assert_eq!(send(&srv, &["members@test.example"], "included").code, 250);
    assert_eq!(
        (srv.messages("alice").len(), srv.messages("bob").len()),
        (1, 1)
    );
    // A file target is written as an mbox (as `nobody` when we are root,
    // so the directory must let it in).
    open_dir(&srv, "");
    assert_eq!(send(&srv, &["archive@test.example"], "archived").code, 250);
    let archived = mbox_text(&srv.dir.path().join("archive.mbox"));
    assert_eq!(archived.len(), 1);
    assert!(
        archived[0].contains("Delivered-To: archive@test.example\n"),
        "{archived:?}"
    );
    // An include file that cannot be read is a temporary failure.
    std::fs::remove_file(srv.dir.path().join("members.txt")).unwrap();
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.expect("RCPT TO:<members@test.example>", 451);
}

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
        srv.log().contains("no such list"),
        "the command's complaint is logged"
    );
    // A temporary pipe failure fails the whole message: alice's copy is
    // not delivered alone, so the client's retry loses nothing.
    let r = send(
        &srv,
        &["alice@test.example", "later@test.example"],
        "together",
    );
    assert_eq!(r.code, 451);
    assert!(srv.messages("alice").is_empty());
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
fn vrfy_and_expn_answer_from_the_resolver() {
    let srv = with_aliases("staff: alice, bob\n", "vrfy = true\nexpn = true", "");
    let mut c = srv.connect().hello();
    let r = c.expect("EXPN staff", 250);
    assert_eq!(
        r.lines,
        ["2.1.5 <alice@test.example>", "2.1.5 <bob@test.example>"]
    );
    c.expect("VRFY alice", 250);
    c.expect("VRFY nobody-here", 550);
}

#[test]
fn a_bad_aliases_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliases");
    std::fs::write(&path, "ok: alice\nbroken line without colon\n").unwrap();
    let config = dir.path().join("mailroom.toml");
    let top = format!("aliases = \"{}\"", path.display());
    std::fs::write(&config, base_config(dir.path(), &top, "", "")).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
}

/// A notification from `mailbox`'s Maildir: its parts as text.
fn dsn_parts(raw: &[u8]) -> (Parsed, String, String, String) {
    let parsed = Parsed::new(raw.to_vec());
    let m = mail_parser::MessageParser::default().parse(raw).unwrap();
    use mail_parser::MimeHeaders;
    let ct = m.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let part =
        |i: usize| String::from_utf8_lossy(m.part(i as u32).unwrap().contents()).into_owned();
    let text = part(1);
    let status = part(2);
    let headers = part(3);
    (parsed, text, status, headers)
}

#[test]
fn failed_copies_are_reported_to_a_local_sender() {
    let srv = with_aliases(
        "never: \"|echo no such list >&2; exit 1\"\nlater: |exit 75\n",
        "",
        "",
    );
    let r = send(
        &srv,
        &["bob@test.example", "never@test.example"],
        "permanent",
    );
    assert_eq!(
        r.code, 554,
        "a remote sender cannot be told: the message fails whole"
    );
    assert!(srv.messages("bob").is_empty());
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "alice@test.example",
        &[
            "bob@test.example",
            "never@test.example",
            "later@test.example",
        ],
        "Subject: partly\r\nMessage-ID: <partly@client.example>\r\n\r\nbody\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(srv.messages("bob").len(), 1);
    let alice = srv.messages("alice");
    assert_eq!(alice.len(), 1, "alice gets one notification");
    let (dsn, text, status, headers) = dsn_parts(&alice[0]);
    assert_eq!(dsn.header("Return-Path").as_deref(), Some("<>"));
    assert_eq!(dsn.header("To").as_deref(), Some("<alice@test.example>"));
    assert!(dsn
        .header("From")
        .unwrap()
        .starts_with("MAILER-DAEMON@mx.test.example"));
    assert_eq!(
        dsn.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert!(
        text.contains("<never@test.example>: the command exited 1: no such list"),
        "{text}"
    );
    assert!(
        status.contains("Reporting-MTA: dns; mx.test.example\n"),
        "{status}"
    );
    let fields: Vec<&str> = status.split("\n\n").collect();
    assert!(
        fields.iter().any(
            |f| f.contains("Final-Recipient: rfc822; never@test.example\n")
                && f.contains("Action: failed\n")
                && f.contains("Status: 5.3.0\n")
        ),
        "{status}"
    );
    assert!(
        fields.iter().any(
            |f| f.contains("Final-Recipient: rfc822; later@test.example\n")
                && f.contains("Status: 4.3.0\n")
        ),
        "{status}"
    );
    assert!(!status.contains("bob@test.example"));
    assert!(
        headers.contains("Message-ID: <partly@client.example>"),
        "{headers}"
    );
    assert!(headers.contains("Subject: partly"), "{headers}");
    assert!(!headers.contains("body"), "only the header comes back");
}

#[test]
fn a_null_sender_is_never_notified() {
    let srv = with_aliases("never: |exit 1\n", "", "");
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "",
        &["bob@test.example", "never@test.example"],
        "Subject: bounce\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 554, "{r:?}");
    for who in ["alice", "bob", "postmaster"] {
        assert!(srv.messages(who).is_empty(), "{who} got mail");
    }
}

#[test]
fn missing_list_members_are_reported_to_the_list_owner() {
    let srv = with_aliases("staff: bob, ghost, \\phantom\nowner-staff: alice\n", "", "");
    assert_eq!(send(&srv, &["staff@test.example"], "to the list").code, 250);
    let bob = srv.messages("bob");
    assert_eq!(bob.len(), 1);
    let m = Parsed::new(bob[0].clone());
    assert_eq!(
        m.header("Return-Path").as_deref(),
        Some("<owner-staff@test.example>")
    );
    assert_eq!(m.header("To"), None, "the header is left alone");
    let alice = srv.messages("alice");
    assert_eq!(alice.len(), 1);
    let (dsn, _, status, headers) = dsn_parts(&alice[0]);
    assert_eq!(
        dsn.header("To").as_deref(),
        Some("<owner-staff@test.example>")
    );
    for who in ["ghost", "phantom"] {
        assert!(status.contains(&format!(
            "Final-Recipient: rfc822; {who}@test.example\nOriginal-Recipient: rfc822; staff@test.example\nAction: failed\nStatus: 5.1.1\n"
        )), "{status}");
    }
    assert!(headers.contains("Subject: to the list"));
    // A list of nobody is an unknown user at RCPT time.
    let srv = with_aliases("empty: ghost\n", "", "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.expect("RCPT TO:<empty@test.example>", 550);
}

#[test]
fn local_parts_never_name_paths() {
    // No account has these names here; tests/system_users.rs gives some
    // accounts such names, where only the checks stop them.
    let dir = tempfile::tempdir().unwrap();
    let tables = "[users]\nmaildir = \"{home}/Maildir\"\n";
    let text = base_config(dir.path(), "system_users = true\nvrfy = true", "", tables);
    let srv = Server::start_config(dir, &text);
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    for rcpt in [
        "\"../../etc/passwd\"@test.example",
        "\"a/b\"@test.example",
        "\".hidden\"@test.example",
        "\"..\"@test.example",
        "\"root/..\"@test.example",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(r.code, 550, "{rcpt}: {r:?}");
    }
    // Control characters never get that far.
    let r = c.cmd("RCPT TO:<\"a\u{1}b\"@test.example>");
    assert_eq!(r.code, 501, "{r:?}");
    c.expect("RCPT TO:<alice@test.example>", 250);
    let entries: Vec<_> = std::fs::read_dir(srv.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries
            .iter()
            .all(|n| ["mail", "spool", "mailroom.toml"].contains(&n.to_str().unwrap())),
        "{entries:?}"
    );
}

#[test]
fn a_delivered_to_loop_through_an_alias_is_refused() {
    let srv = with_aliases("staff: bob\n", "", "");
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "x@remote.example",
        &["staff@test.example"],
        "Delivered-To: bob@test.example\r\nSubject: again\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 554, "{r:?}");
    assert!(r.text().starts_with("5.4.6"), "{r:?}");
    assert!(srv.messages("bob").is_empty());
}

#[test]
fn vrfy_names_come_from_the_configuration() {
    let srv = with_aliases(
        "",
        "vrfy = true",
        "[mailbox.carol]\nmaildir = \"{d}/mail/carol/Maildir\"\nname = \"Carol Example\"",
    );
    let mut c = srv.connect().hello();
    assert_eq!(
        c.expect("VRFY carol", 250).lines,
        ["2.1.5 Carol Example <carol@test.example>"]
    );
    assert_eq!(
        c.expect("VRFY <alice@test.example>", 250).lines,
        ["2.1.5 <alice@test.example>"]
    );
}

#[test]
fn nested_includes_and_shared_include_files() {
    let srv = with_aliases("outer: :include:{d}/outer.txt\n", "", "");
    let d = srv.dir.path();
    std::fs::write(
        d.join("outer.txt"),
        format!("alice\n:include:{}/inner.txt\n", d.display()),
    )
    .unwrap();
    std::fs::write(d.join("inner.txt"), "bob\n").unwrap();
    assert_eq!(send(&srv, &["outer@test.example"], "nested").code, 250);
    assert_eq!(
        (srv.messages("alice").len(), srv.messages("bob").len()),
        (1, 1)
    );
    // An include of itself is a loop.
    std::fs::write(
        d.join("inner.txt"),
        format!("bob, :include:{}/outer.txt\n", d.display()),
    )
    .unwrap();
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    let r = c.expect("RCPT TO:<outer@test.example>", 550);
    assert!(r.text().contains("loop"), "{r:?}");
    // Files and commands in include files are refused, as Postfix's
    // defaults have it; the reason goes to the log only.
    for member in ["\"|cat >/dev/null\"", "/tmp/mailroom-never-written.mbox"] {
        std::fs::write(d.join("inner.txt"), format!("{member}\n")).unwrap();
        let r = c.expect("RCPT TO:<outer@test.example>", 550);
        assert!(
            r.text().starts_with("5.7.1") && !r.text().contains("inner"),
            "{r:?}"
        );
    }
    assert!(srv.wait_log("an :include: file may not name files or commands"));
    // A FIFO cannot hang a lookup.
    std::fs::remove_file(d.join("inner.txt")).unwrap();
    nix::unistd::mkfifo(
        &d.join("inner.txt"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    c.expect("RCPT TO:<outer@test.example>", 451);
    assert!(srv.wait_log("not a regular file"));
}

#[test]
fn the_shipped_aliases_file_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let aliases = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/aliases");
    let top = format!("aliases = \"{}\"", aliases.display());
    let text = base_config(dir.path(), &top, "", "");
    let config = dir.path().join("mailroom.toml");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And postmaster resolves through it.
    let srv = with_aliases(&std::fs::read_to_string(&aliases).unwrap(), "", "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.expect("RCPT TO:<postmaster@test.example>", 250);
    c.expect("RCPT TO:<MAILER-DAEMON@test.example>", 250);
}

#[test]
fn maildir_files_follow_the_qmail_convention() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    assert_eq!(
        c.send_mail(
            "a@remote.example",
            &["alice@test.example"],
            "Subject: name\r\n\r\nx\r\n"
        )
        .code,
        250
    );
    let md = srv.maildir("alice");
    let entry = std::fs::read_dir(md.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let name = entry.file_name().into_string().unwrap();
    // <secs>.M<usecs>P<pid>Q<seq>.<host>,S=<size>
    let (unique, size) = name.rsplit_once(",S=").unwrap();
    assert_eq!(
        size.parse::<u64>().unwrap(),
        entry.metadata().unwrap().len(),
        "{name}"
    );
    let parts: Vec<&str> = unique.splitn(3, '.').collect();
    assert!(parts[0].parse::<u64>().is_ok(), "{name}");
    let (m, rest) = parts[1].strip_prefix('M').unwrap().split_once('P').unwrap();
    let (p, q) = rest.split_once('Q').unwrap();
    assert!(
        m.parse::<u32>().unwrap() < 1_000_000 && q.parse::<u64>().is_ok(),
        "{name}"
    );
    assert_eq!(p.parse::<u32>().unwrap(), srv.pid());
    assert_eq!(parts[2], "mx.test.example");
    assert_eq!(
        entry.metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        entry.metadata().unwrap().uid(),
        nix::unistd::geteuid().as_raw(),
        "the server's own"
    );
}

#[test]
fn python_reads_the_mbox_and_the_maildir() {
    if !tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("carol.mbox");
    let tables = format!("[mailbox.carol]\nmbox = \"{}\"", mbox.display());
    let text = base_config(dir.path(), "", "", &tables);
    let srv = Server::start_config(dir, &text);
    let mut c = srv.connect().hello();
    for i in 0..3 {
        let body =
            format!("Subject: number {i}\r\n\r\nFrom the start\r\n>From quoted\r\nline {i}\r\n");
        assert_eq!(
            c.send_mail(
                "a@remote.example",
                &["carol@test.example", "alice@test.example"],
                &body
            )
            .code,
            250
        );
    }
    let script = r#"
import mailbox, sys
mb = mailbox.mbox(sys.argv[1], create=False)
md = mailbox.Maildir(sys.argv[2], create=False)
for box in (mb, md):
    msgs = sorted(box, key=lambda m: m["Subject"])
    assert [m["Subject"] for m in msgs] == ["number 0", "number 1", "number 2"], [m["Subject"] for m in msgs]
    for i, m in enumerate(msgs):
        assert m["Delivered-To"] in ("carol@test.example", "alice@test.example"), m["Delivered-To"]
        assert m.get_payload().endswith("line %d\n" % i), repr(m.get_payload())
print("OK", len(mb), len(md))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&mbox)
        .arg(srv.maildir("alice"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK 3 3");
}

#[test]
fn postmaster_must_reach_a_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailroom.toml");
    let base = base_config(dir.path(), "", "", "");
    let without = base.replace("[mailbox.postmaster]\n", "[mailbox.other]\n");
    for (text, code) in [(without.clone(), 78), (base.clone(), 0)] {
        std::fs::write(&config, &text).unwrap();
        let out = std::process::Command::new(BIN)
            .arg("--check-config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if code == 78 {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("postmaster must reach a mailbox")
            );
        }
    }
    // An alias is enough.
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "postmaster: alice\n").unwrap();
    let with_alias = without.replacen(
        "spool_dir",
        &format!("aliases = \"{}\"\nspool_dir", aliases.display()),
        1,
    );
    std::fs::write(&config, &with_alias).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_stale_member_of_a_list_without_owner_does_not_block_the_list() {
    let srv = with_aliases("team: bob, ghost\n", "", "");
    // The remote sender cannot be told about ghost; bob still gets it.
    assert_eq!(send(&srv, &["team@test.example"], "to the team").code, 250);
    assert_eq!(srv.messages("bob").len(), 1);
    assert!(srv
        .log()
        .contains("list member <ghost@test.example> of <team@test.example> does not exist"));
    // A local sender is told.
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "alice@test.example",
        &["team@test.example"],
        "Subject: local\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250);
    let (_, _, status, _) = dsn_parts(&srv.messages("alice")[0]);
    assert!(
        status.contains("Final-Recipient: rfc822; ghost@test.example\n"),
        "{status}"
    );
}

#[test]
fn a_notification_that_cannot_be_delivered_takes_the_message_back() {
    // carol sends to herself and bob, and her own mailbox is broken (a
    // file stands where its directory should): her copy fails, and so
    // would the notification to her. Nothing is kept, however often the
    // client tries: bob must not get a copy per try.
    let srv = with_aliases("", "", "[mailbox.carol]\nmaildir = \"{d}/plain/Maildir\"");
    std::fs::write(srv.dir.path().join("plain"), b"").unwrap();
    for _ in 0..3 {
        let mut c = srv.connect().hello();
        let r = c.send_mail(
            "carol@test.example",
            &["carol@test.example", "bob@test.example"],
            "Subject: x\r\n\r\nx\r\n",
        );
        assert_eq!(r.code, 451, "{r:?}");
    }
    assert!(
        srv.messages("bob").is_empty(),
        "bob got {} copies",
        srv.messages("bob").len()
    );
    assert!(
        srv.log()
            .contains("the notification to <carol@test.example> failed"),
        "{}",
        srv.log()
    );
}

#[test]
fn deliveries_to_the_same_mboxes_in_opposite_orders_never_wait_for_each_other() {
    let srv = with_aliases(
        "",
        "",
        "[mailbox.ma]\nmbox = \"{d}/ma.mbox\"\n[mailbox.mb]\nmbox = \"{d}/mb.mbox\"\n[timeouts]\nmbox_lock = 5",
    );
    let body = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "y".repeat(998)).repeat(6000)
    );
    let threads: Vec<_> = [
        ["ma@test.example", "mb@test.example"],
        ["mb@test.example", "ma@test.example"],
    ]
    .into_iter()
    .map(|order| {
        let addr = srv.addr;
        let body = body.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(addr).hello();
            (0..3)
                .map(|_| c.send_mail("x@remote.example", &order, &body).code)
                .collect::<Vec<_>>()
        })
    })
    .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), [250, 250, 250]);
    }
    for m in ["ma", "mb"] {
        assert_eq!(
            mbox_messages(&srv.dir.path().join(format!("{m}.mbox"))).len(),
            6
        );
    }
}

#[test]
fn a_null_sender_stays_null_through_a_list() {
    let srv = with_aliases("staff: bob, ghost\nowner-staff: alice\n", "", "");
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "",
        &["staff@test.example"],
        "Subject: a bounce\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    let bob = srv.messages("bob");
    assert_eq!(
        Parsed::new(bob[0].clone()).header("Return-Path").as_deref(),
        Some("<>")
    );
    assert!(
        srv.messages("alice").is_empty(),
        "the owner is not told about a bounce"
    );
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

#[test]
fn a_sender_with_an_mbox_is_notified_in_it_after_its_own_copy() {
    // carol writes to herself and to a failing pipe: her mbox is held for
    // her own copy when the notification for the pipe needs it too.
    let srv = with_aliases(
        "never: |exit 1\n",
        "",
        "[mailbox.carol]\nmbox = \"{d}/carol.mbox\"\n[timeouts]\nmbox_lock = 3",
    );
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "carol@test.example",
        &["carol@test.example", "never@test.example"],
        "Subject: both\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    let msgs = mbox_text(&srv.dir.path().join("carol.mbox"));
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].contains("Subject: both\n"));
    assert!(
        msgs[1].contains("Final-Recipient: rfc822; never@test.example\n"),
        "{}",
        msgs[1]
    );
}

#[test]
fn a_list_of_hundreds_of_members_is_not_a_forwarding_loop() {
    // Every member used to cost two of the 1000 expansion steps, so a list
    // of 500 was refused as a loop. A list of as many members as there may
    // be copies (1000) is fine. The members are distinct mailboxes that
    // share ten Maildirs, to keep the test quick.
    const MEMBERS: usize = 1000;
    let tables: String = (0..MEMBERS)
        .map(|i| {
            format!(
                "[mailbox.m{i}]\nmaildir = \"{{d}}/lists/{}/Maildir\"\n",
                i % 10
            )
        })
        .collect();
    let srv = with_aliases_and_file_limit("big: :include:{d}/big.txt\n", "", &tables, Some(256));
    let members: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}")).collect();
    std::fs::write(srv.dir.path().join("big.txt"), members.join("\n")).unwrap();
    assert_eq!(send(&srv, &["big@test.example"], "to many").code, 250);
    for i in 0..10 {
        let md = srv.dir.path().join(format!("lists/{i}/Maildir"));
        assert_eq!(read_maildir(&md).len(), 1, "{}", md.display());
    }
}

#[test]
fn a_list_larger_than_the_file_limit_is_delivered() {
    // Every copy of a message is written before any is made visible; a
    // copy waiting so must not keep a file open, or a list larger than
    // the descriptor limit could never be delivered.
    const MEMBERS: usize = 300;
    let tables: String = (0..MEMBERS)
        .map(|i| format!("[mailbox.m{i}]\nmaildir = \"{{d}}/lists/{i}/Maildir\"\n"))
        .collect();
    let srv = with_aliases_and_file_limit("big: :include:{d}/big.txt\n", "", &tables, Some(200));
    let members: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}")).collect();
    std::fs::write(srv.dir.path().join("big.txt"), members.join("\n")).unwrap();
    assert_eq!(send(&srv, &["big@test.example"], "to many").code, 250);
    for i in [0, MEMBERS / 2, MEMBERS - 1] {
        let md = srv.dir.path().join(format!("lists/{i}/Maildir"));
        assert_eq!(read_maildir(&md).len(), 1, "{}", md.display());
    }
}

#[test]
fn an_alias_to_dev_null_discards_the_copy() {
    // It used to be refused as "not a regular file", and deferred forever.
    let srv = with_aliases(
        "devnull: /dev/null\nhalf: /dev//null, alice\nzero: /dev/zero\nlink: {d}/null\n",
        "",
        "",
    );
    std::os::unix::fs::symlink("/dev/null", srv.dir.path().join("null")).unwrap();
    assert_eq!(send(&srv, &["devnull@test.example"], "gone").code, 250);
    assert!(srv.wait_log("<devnull@test.example> discarded (/dev/null)"));
    assert_eq!(send(&srv, &["half@test.example"], "half").code, 250);
    assert_eq!(srv.messages("alice").len(), 1);
    // Nothing else that is not a regular file is taken for a mailbox:
    // not another device, nor a link to /dev/null.
    for rcpt in ["zero@test.example", "link@test.example"] {
        let r = send(&srv, &[rcpt], "refused");
        assert_eq!(r.code, 451, "{rcpt}: {r:?}");
    }
}

#[test]
fn one_mbox_named_by_two_paths_gets_one_copy_and_never_waits_for_itself() {
    // {d}/b is {d}/a, as Debian's /var/spool/mail is /var/mail: the second
    // copy used to wait for the lock the first one held, and the message
    // was deferred on every try.
    let srv = with_aliases(
        "x: {d}/a/box, {d}/b/box\nnever: |exit 1\n",
        "",
        "[mailbox.carol]\nmbox = \"{d}/a/carol\"\n[mailbox.carol2]\nmbox = \"{d}/b/carol\"\n[timeouts]\nmbox_lock = 2",
    );
    let a = open_dir(&srv, "a");
    std::os::unix::fs::symlink(&a, srv.dir.path().join("b")).unwrap();
    // Through an alias (written as the aliases' owner), and as two
    // recipients of one message (written by the server itself).
    assert_eq!(send(&srv, &["x@test.example"], "twice").code, 250);
    assert_eq!(
        send(&srv, &["carol@test.example", "carol2@test.example"], "both").code,
        250
    );
    assert_eq!(mbox_text(&a.join("box")).len(), 1);
    assert_eq!(mbox_text(&a.join("carol")).len(), 1);
    // A notification for carol waits until her copy, by the other name,
    // is committed.
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "carol@test.example",
        &["carol2@test.example", "never@test.example"],
        "Subject: notified\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    let msgs = mbox_text(&a.join("carol"));
    assert_eq!(msgs.len(), 3);
    assert!(msgs[2].contains("Final-Recipient: rfc822; never@test.example\n"));
}

#[test]
fn deep_alias_chains_and_include_nesting_are_refused_not_a_stack_overflow() {
    // A chain of 200 aliases, or 600 nested include files, overflowed the
    // worker's stack and took the whole server down.
    let chain: String = (0..200).map(|i| format!("a{i}: a{}\n", i + 1)).collect();
    let srv = with_aliases(
        &format!("{chain}a200: alice\nnested: :include:{{d}}/inc0\n"),
        "",
        "",
    );
    let d = srv.dir.path();
    for i in 0..600 {
        let next = format!(":include:{}/inc{}\n", d.display(), i + 1);
        std::fs::write(d.join(format!("inc{i}")), next).unwrap();
    }
    std::fs::write(d.join("inc600"), "bob\n").unwrap();
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    for rcpt in ["a0@test.example", "nested@test.example"] {
        let r = c.expect(&format!("RCPT TO:<{rcpt}>"), 550);
        assert!(r.text().starts_with("5.4.6"), "{rcpt}: {r:?}");
    }
    assert!(srv.wait_log("nested more than"), "{}", srv.log());
    // The server is still there, and a chain at the limit (20) works.
    c.expect("RCPT TO:<a181@test.example>", 250);
}

#[test]
fn an_aliases_file_from_another_mta_loads_with_warnings() {
    // One Latin-1 byte, even in a comment, or a name defined twice stopped
    // the server from starting, and a byte-order mark hid the first alias.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliases");
    let mut text = b"\xEF\xBB\xBFfirst: alice\n# Fran\xE7ois's list\n".to_vec();
    text.extend_from_slice(
        b"fran\xE7ois: bob\nlist: bob,\n  h\xE9l\xE8ne\ntwice: alice\nTwice: bob\n",
    );
    std::fs::write(&path, text).unwrap();
    let top = format!("aliases = \"{}\"", path.display());
    let config = dir.path().join("mailroom.toml");
    std::fs::write(&config, base_config(dir.path(), &top, "", "")).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let p = path.display();
    for warning in [
        format!("{p}:3: not UTF-8 text"),
        format!("{p}:5: not UTF-8 text: the entry at line 4 is skipped"),
        format!("{p}:7: Twice: defined again (names are case-insensitive); line 6 is used"),
    ] {
        assert!(err.contains(&warning), "{warning}:\n{err}");
    }
    let srv = Server::start_config(dir, &std::fs::read_to_string(&config).unwrap());
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.expect("RCPT TO:<first@test.example>", 250);
    c.expect("RCPT TO:<list@test.example>", 550);
    c.expect("RCPT TO:<twice@test.example>", 250);
    c.expect("DATA", 354);
    c.send("Subject: twice\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(
        srv.messages("alice").len(),
        1,
        "the first definition is kept"
    );
    assert!(srv.messages("bob").is_empty());
}
