//! Delivery status notifications (RFC 3464 bounces) against the real
//! server: failed copies reported to a local sender (and those that failed
//! temporarily queued for a retry instead), never to a null
//! sender, missing list members reported to the list owner, a notification
//! that cannot be delivered taking the whole message back, and a sender
//! notified in its own mbox after its own copy. When some copies of a
//! message fail, SMTP's single reply cannot say so, so these tests check
//! who is told, what the report holds, and that a message nobody here can
//! be told about is taken back whole.

mod support;
use support::delivery::*;
use support::*;

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
    // A copy that failed temporarily is not reported: it waits in the
    // queue for a retry, with what was made recorded.
    assert!(!status.contains("later@test.example"), "{status}");
    // Queued at once; its reason once the runner has tried it again.
    let listing = wait_for("later's retry in the queue", || {
        let l = mailq(&srv.config_path).stdout;
        (l.contains("later@test.example") && l.contains("(4.3.0")).then_some(l)
    });
    assert!(!listing.contains("bob@test.example"), "{listing}");
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
fn a_notification_that_cannot_be_delivered_takes_the_message_back() {
    // carol sends to herself and bob, and her own mail goes to a command
    // that refuses everything for good: her copy fails, and so would the
    // notification to her. Nothing is kept, however often the client
    // tries: bob must not get a copy per try.
    let srv = with_aliases("carol: \"|exit 67\"\n", "", "");
    for _ in 0..3 {
        let mut c = srv.connect().hello();
        let r = c.send_mail(
            "carol@test.example",
            &["carol@test.example", "bob@test.example"],
            "Subject: x\r\n\r\nx\r\n",
        );
        assert_eq!(r.code, 554, "{r:?}");
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
fn a_copy_that_failed_temporarily_is_retried_from_the_queue_and_made_once() {
    // carol's mailbox is broken for now (a file stands where its directory
    // should): the message is taken, bob has it, and carol's copy waits in
    // the queue. Once her mailbox is fixed, a retry makes hers, and only
    // hers.
    let srv = with_aliases("", "", "[mailbox.carol]\nmaildir = \"{d}/plain/Maildir\"");
    let plain = srv.dir.path().join("plain");
    std::fs::write(&plain, b"").unwrap();
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "alice@test.example",
        &["carol@test.example", "bob@test.example"],
        "Subject: later\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(srv.messages("bob").len(), 1);
    assert!(srv.messages("alice").is_empty(), "nothing to report yet");
    let listing = wait_for("carol's copy in the queue", || {
        let l = mailq(&srv.config_path).stdout;
        l.contains("carol@test.example").then_some(l)
    });
    assert!(!listing.contains("bob@test.example"), "{listing}");
    std::fs::remove_file(&plain).unwrap();
    let r = queue_command(&srv.config_path, &["flush"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let carol = srv.dir.path().join("plain/Maildir");
    let copies = wait_for("carol's copy", || {
        let m = read_maildir(&carol);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(copies.len(), 1);
    assert!(String::from_utf8_lossy(&copies[0]).contains("Subject: later"));
    wait_for("an empty queue", || {
        mailq(&srv.config_path)
            .stdout
            .contains("Mail queue is empty")
            .then_some(())
    });
    assert_eq!(srv.messages("bob").len(), 1, "bob's copy is not made again");
    assert!(srv.messages("alice").is_empty());
}
