//! Aliases against the real server: the aliases file (its format, one
//! written for another MTA, the shipped one, a broken one), how a name
//! resolves (loops, remote targets, include files and how deep they nest,
//! file targets, `/dev/null`, a `Delivered-To:` loop), local parts that
//! never name paths, `postmaster` that must resolve, and VRFY/EXPN answered
//! from the same resolver. Who a recipient is gets decided at RCPT time, so
//! most of what is refused here is refused there, with the details in the
//! log and not in the reply. Lists are in `lists.rs`, pipe targets in
//! `pipes.rs`.

mod support;
use std::path::Path;
use support::delivery::*;
use support::*;

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
    let out = check_config(dir.path(), &config);
    assert_eq!(out.code, Some(78));
    let err = out.stderr;
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
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
            .all(|n| ["mail", "spool", "queue", "mailroom.toml"].contains(&n.to_str().unwrap())),
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
    let out = check_config(dir.path(), &config);
    assert!(out.code == Some(0), "{}", out.stderr);
    // And postmaster resolves through it.
    let srv = with_aliases(&std::fs::read_to_string(&aliases).unwrap(), "", "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.expect("RCPT TO:<postmaster@test.example>", 250);
    c.expect("RCPT TO:<MAILER-DAEMON@test.example>", 250);
}

#[test]
fn postmaster_must_reach_a_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailroom.toml");
    let base = base_config(dir.path(), "", "", "");
    let without = base.replace("[mailbox.postmaster]\n", "[mailbox.other]\n");
    for (text, code) in [(without.clone(), 78), (base.clone(), 0)] {
        std::fs::write(&config, &text).unwrap();
        let out = check_config(dir.path(), &config);
        assert_eq!(out.code, Some(code), "{}", out.stderr);
        if code == 78 {
            assert!(out.stderr.contains("postmaster must reach a mailbox"));
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
    let out = check_config(dir.path(), &config);
    assert!(out.code == Some(0), "{}", out.stderr);
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
    let out = check_config(dir.path(), &config);
    assert!(out.code == Some(0), "{}", out.stderr);
    // The findings, one a line on stdout.
    let found = out.stdout;
    let p = path.display();
    for warning in [
        format!("{p}:3: not UTF-8 text"),
        format!("{p}:5: not UTF-8 text: the entry at line 4 is skipped"),
        format!("{p}:7: Twice: defined again (names are case-insensitive); line 6 is used"),
    ] {
        assert!(found.contains(&warning), "{warning}:\n{found}");
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
