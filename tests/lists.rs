//! Lists against the real server: an alias with an `owner-NAME` is a list,
//! whose members' copies carry the owner as envelope sender. Covered here:
//! chains of aliases through a list, a mailbox reached by several routes
//! getting one copy, a null sender kept through a list, a stale member not
//! blocking the rest, and lists as large as the copy limit or larger than
//! the server's file limit. A list is where one message becomes many
//! copies, so these are the tests of fan-out; what the owner is told about
//! missing members is in `notifications.rs`.

mod support;
use support::delivery::*;
use support::*;

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
