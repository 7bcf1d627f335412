//! One test per fixed bug, named after what broke.

mod support;
use std::time::{Duration, Instant};
use support::*;

/// A message for two mailboxes, one of them unwritable, was answered 250
/// and the unwritable mailbox's copy was lost. The copy that fails now
/// waits in the queue, and arrives once the mailbox is fixed.
#[test]
fn one_failed_mailbox_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let plain = dir.path().join("plain-file");
    std::fs::write(&plain, b"").unwrap();
    let tables = format!("[mailbox.broken]\nmaildir = \"{d}/plain-file/Maildir\"");
    let text = base_config(dir.path(), "", "", &tables);
    let srv = Server::start_config(dir, &text);
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<a@remote.example>", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("RCPT TO:<broken@test.example>", 250);
    c.expect("DATA", 354);
    c.send("Subject: both\r\n\r\nx\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(srv.messages("alice").len(), 1);
    let listing = mailq(&srv.config_path).stdout;
    assert!(listing.contains("broken@test.example"), "{listing}");
    std::fs::remove_file(&plain).unwrap();
    assert_eq!(queue_command(&srv.config_path, &["flush"]).code, Some(0));
    let broken = srv.dir.path().join("plain-file/Maildir");
    let copies = wait_for("the broken mailbox's copy", || {
        let m = read_maildir(&broken);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(copies.len(), 1);
    assert!(String::from_utf8_lossy(&copies[0]).contains("Subject: both"));
    assert_eq!(srv.messages("alice").len(), 1, "alice's copy is made once");
}

/// Replies echoed client input without limit, over RFC 5321's 512 octets.
#[test]
fn reply_lines_stay_within_512_octets() {
    let srv = Server::start();
    let mut c = srv.connect();
    c.reply();
    for line in [
        format!("EHLO {}", "a_!".repeat(1000)),
        format!("MAIL FROM:<a@remote.example> {}=1", "X".repeat(3000)),
    ] {
        c.send(format!("{line}\r\n"));
        let r = c.reply();
        assert!(r.code >= 500, "{line:.20}: {r:?}");
        for l in &r.lines {
            assert!(l.len() + 6 <= 512, "{} octets", l.len() + 6);
        }
    }
}

/// data_total was measured per chunk, so a BDAT transfer could go on for ever.
#[test]
fn bdat_transfer_is_bounded_by_data_total() {
    let srv = Server::start_with("", "", "[timeouts]\ndata_total = 2\ndata_block = 1");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<a@remote.example>", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(10) {
        c.send("BDAT 3\r\nabc");
        let r = c.reply();
        if r.code != 250 {
            last = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    let r = last.expect("the transfer was never cut off");
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text().starts_with("4.4.2"));
    assert!(c.closed());
    assert!(srv.messages("alice").is_empty());
}

/// A command line dripped a byte at a time never hit the command timeout.
#[test]
fn a_command_line_must_arrive_within_the_command_timeout() {
    let srv = Server::start_with("", "", "[timeouts]\ncommand = 2");
    let mut c = srv.connect().hello();
    let start = Instant::now();
    let mut cut = false;
    for b in "NOOP and some more text that takes a while".bytes() {
        if std::io::Write::write_all(&mut c.stream, &[b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        if start.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let r = c.reply();
    assert_eq!(r.code, 421, "{r:?} (cut while writing: {cut})");
    assert!(r.text().starts_with("4.4.2"));
}

/// `Postmaster@domain` was refused when local parts were case-sensitive.
#[test]
fn postmaster_is_case_insensitive_with_case_sensitive_users() {
    let srv = Server::start_with("case_insensitive_users = false", "", "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<a@remote.example>", 250);
    c.expect("RCPT TO:<Postmaster@test.example>", 250);
    c.expect("RCPT TO:<POSTMASTER@TEST.EXAMPLE>", 250);
    c.expect("RCPT TO:<Alice@test.example>", 550);
}

/// The timeout 421 carried an enhanced code after plain HELO.
#[test]
fn timeout_after_helo_has_no_enhanced_code() {
    let srv = Server::start_with("", "", "[timeouts]\ncommand = 1");
    let mut c = srv.connect();
    c.reply();
    c.expect("HELO old.example", 250);
    let r = c.reply();
    assert_eq!(r.code, 421);
    assert!(r.text().starts_with("mx.test.example "), "{r:?}");
}

/// `for <postmaster>` in Received: is not a valid RFC 5321 Mailbox.
#[test]
fn received_for_postmaster_names_a_full_mailbox() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "a@remote.example",
        &["postmaster"],
        "Subject: pm\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250);
    let m = Parsed::new(srv.messages("postmaster").remove(0));
    assert!(m
        .header("Received")
        .unwrap()
        .contains("for <postmaster@mx.test.example>;"));
}

/// A message that already carries `Delivered-To:` for its recipient is a
/// loop (issue 3's rule, checked since the header scan collects it).
#[test]
fn delivered_to_for_the_same_recipient_is_a_loop() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    let body = "Delivered-To: alice@test.example\r\nSubject: again\r\n\r\nx\r\n";
    c.expect("MAIL FROM:<a@remote.example>", 250);
    c.expect("RCPT TO:<Alice@test.example>", 250);
    c.expect("DATA", 354);
    c.send(format!("{body}.\r\n"));
    let r = c.reply();
    assert_eq!(r.code, 554, "{r:?}");
    assert!(r.text().starts_with("5.4.6"));
    // For another recipient it is an ordinary message.
    let r = c.send_mail("a@remote.example", &["bob@test.example"], body);
    assert_eq!(r.code, 250);
    assert!(srv.messages("alice").is_empty());
}

/// Each delivery to an mbox refused before its append was journaled (a
/// symbolic link, a lock held too long, a foreign owner) left one more
/// empty journal file in the spool directory.
#[test]
fn refused_mbox_appends_leave_no_journal_files_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::os::unix::fs::symlink("/dev/null", dir.path().join("carol.mbox")).unwrap();
    let tables = format!("[mailbox.carol]\nmbox = \"{d}/carol.mbox\"");
    let text = base_config(dir.path(), "", "", &tables);
    let srv = Server::start_config(dir, &text);
    let mut c = srv.connect().hello();
    for i in 0..5 {
        let r = c.send_mail(
            "a@remote.example",
            &["carol@test.example"],
            &format!("Subject: {i}\r\n\r\nx\r\n"),
        );
        assert_eq!(r.code, 451, "{r:?}");
    }
    let journal = std::fs::read_dir(srv.dir.path().join("spool/journal")).unwrap();
    assert_eq!(journal.count(), 1, "one journal file, used again each time");
}
