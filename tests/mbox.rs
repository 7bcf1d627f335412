//! mbox mailboxes against the real server: the mboxrd format, its file
//! modes, the order in which several mboxes are locked, and one mbox named
//! by two paths. An mbox is one file shared with mail readers and with
//! other deliveries, so these tests check the format others read and that
//! its locks never make deliveries wait on each other.

mod support;
use std::os::unix::fs::PermissionsExt;
use support::delivery::*;
use support::*;

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
