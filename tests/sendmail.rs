//! The sendmail command and the queue against the real server: messages
//! handed in by local programs (`sendmail -t`, cron, mail(1)), recipients
//! checked before anything is stored, a message waiting in the maildrop
//! while the daemon is down, the queue listed, held, retried and deleted
//! with `mailq` and `mailroom queue`, a failure after acceptance bounced
//! to the sender, and an unprivileged user whose uid the daemon takes from
//! the kernel, never from the file. Scripts act on the exit codes
//! (sysexits(3)), so every refusal is checked for its code as well as for
//! what it leaves behind: nothing.

mod support;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::delivery::*;
use support::*;

/// The real uid the tests run as, and the login name sendmail gives it.
fn me() -> (u32, String) {
    let uid = nix::unistd::getuid();
    let login = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid{uid}"), |u| u.name);
    (uid.as_raw(), login)
}

/// The names of the files waiting in a queue's maildrop (read as root or
/// as the queue's owner, which the tests are).
fn drops(queue: &Path) -> Vec<String> {
    match std::fs::read_dir(queue.join("maildrop")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}/maildrop: {e}", queue.display()),
    }
}

/// Waits until `user` has at least `n` messages; returns them all.
fn wait_messages(srv: &Server, user: &str, n: usize) -> Vec<Vec<u8>> {
    wait_for(&format!("{n} messages for {user}"), || {
        let m = srv.messages(user);
        (m.len() >= n).then_some(m)
    })
}

/// Waits until the runner has finished with `n` messages (and is about
/// to look for more).
fn wait_done(srv: &Server, n: usize) {
    wait_for(&format!("{n} messages done"), || {
        (srv.log().matches(": done, removed from the queue").count() >= n).then_some(())
    });
}

/// The first `Received:` field: the one the daemon stamped the message
/// with when it took it from the maildrop.
fn stamp(p: &Parsed) -> String {
    p.header("Received").expect("a Received: field")
}

/// One message of a `mailq` listing.
#[derive(Debug)]
struct Listed {
    id: String,
    held: bool,
    size: u64,
    sender: String,
    recipients: Vec<String>,
    /// The last failure of each recipient that has one, as `status reason`.
    reasons: Vec<String>,
}

/// Reads `mailq`'s output: a header line, then per message a line with its
/// id (`!` after it when held), size, arrival and sender, then indented
/// lines of recipients, each after its last failure in parentheses.
fn listing(out: &str) -> Vec<Listed> {
    let mut found: Vec<Listed> = Vec::new();
    for line in out.lines() {
        if line.is_empty() || line.starts_with("-Queue ID-") || line.starts_with("-- ") {
            continue;
        }
        if line == "Mail queue is empty" {
            assert!(found.is_empty(), "{out}");
            continue;
        }
        if let Some(indented) = line.strip_prefix(' ') {
            let item = indented.trim();
            let entry = found.last_mut().unwrap_or_else(|| panic!("{out}"));
            match item.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
                Some(reason) => entry.reasons.push(reason.to_string()),
                None => entry.recipients.push(item.to_string()),
            }
            continue;
        }
        let t: Vec<&str> = line.split_whitespace().collect();
        assert!(t.len() >= 7, "not a message line: {line:?} in\n{out}");
        let (id, held) = match t[0].strip_suffix('!') {
            Some(id) => (id, true),
            None => (t[0], false),
        };
        found.push(Listed {
            id: id.to_string(),
            held,
            size: t[1].parse().unwrap_or_else(|_| panic!("a size: {line:?}")),
            sender: t[t.len() - 1].to_string(),
            recipients: Vec::new(),
            reasons: Vec::new(),
        });
    }
    found
}

/// `mailq`, which must succeed; its listing.
fn listed(config: &Path) -> (String, Vec<Listed>) {
    let r = mailq(config);
    assert_eq!(r.code, Some(0), "mailq: {}", r.stderr);
    let entries = listing(&r.stdout);
    (r.stdout, entries)
}

#[test]
fn sendmail_t_sends_each_header_recipient_one_copy_without_bcc() {
    let srv = with_aliases(
        "",
        "",
        "[mailbox.carol]\nmaildir = \"{d}/mail/carol/Maildir\"\n",
    );
    // alice is named twice; postmaster only in Bcc:.
    let input = b"To: alice@test.example, Bob <bob@test.example>\n\
                  Cc: Carol <carol@test.example>, \"Alice again\" <alice@test.example>\n\
                  Bcc: postmaster@test.example\n\
                  Subject: extracted\n\
                  \n\
                  body\n";
    let r = sendmail(&srv.config_path, &["-t", "-i"], input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stderr, "");
    assert!(
        srv.wait_log(": done, removed from the queue"),
        "{}",
        srv.log()
    );
    let (uid, login) = me();
    for who in ["alice", "bob", "carol", "postmaster"] {
        let copies = srv.messages(who);
        assert_eq!(copies.len(), 1, "{who} gets exactly one copy");
        let p = Parsed::new(copies[0].clone());
        assert!(
            !p.header_names()
                .iter()
                .any(|n| n.eq_ignore_ascii_case("Bcc")),
            "{who}'s copy has a Bcc: field"
        );
        if who != "postmaster" {
            let text = String::from_utf8_lossy(&p.raw);
            assert!(
                !text.contains("postmaster"),
                "the Bcc recipient shows:\n{text}"
            );
        }
        assert_eq!(
            p.header("To").as_deref(),
            Some("alice@test.example, Bob <bob@test.example>")
        );
        assert_eq!(p.subject().as_deref(), Some("extracted"));
        assert!(
            stamp(&p).starts_with(&format!("by mx.test.example (mailroom, from userid {uid})")),
            "{}",
            stamp(&p)
        );
        // The fields RFC 5322 requires, added, and readable.
        let m = mail_parser::MessageParser::default()
            .parse(&p.raw)
            .expect("a message");
        let from = m.from().and_then(|a| a.first()).expect("a From: field");
        assert_eq!(
            from.address(),
            Some(format!("{login}@test.example").as_str())
        );
        assert!(
            m.date().is_some_and(|d| d.is_valid()),
            "Date: {:?}",
            p.header("Date")
        );
        assert!(
            m.message_id()
                .is_some_and(|id| id.ends_with("@mx.test.example")),
            "Message-ID: {:?}",
            p.header("Message-ID")
        );
        assert_eq!(p.body(), b"body\n");
    }
    // The same, read by Python's mailbox and email modules.
    if !tool("python3") {
        return;
    }
    let script = r#"
import email.utils, mailbox, sys
base, address, uid = sys.argv[1:]
for who in ("alice", "bob", "carol", "postmaster"):
    copies = list(mailbox.Maildir(f"{base}/mail/{who}/Maildir", create=False))
    assert len(copies) == 1, (who, len(copies))
    m = copies[0]
    assert m["Bcc"] is None, (who, m["Bcc"])
    assert email.utils.parseaddr(m["From"])[1] == address, m["From"]
    assert email.utils.parsedate_to_datetime(m["Date"]).tzinfo is not None, m["Date"]
    assert m["Message-ID"].startswith("<") and m["Message-ID"].endswith("@mx.test.example>"), m["Message-ID"]
    assert f"from userid {uid})" in m.get_all("Received")[0], m["Received"]
    assert m.get_payload() == "body\n", repr(m.get_payload())
print("OK")
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .arg(srv.dir.path())
        .arg(format!("{login}@test.example"))
        .arg(uid.to_string());
    let r = run_command(&mut cmd, b"");
    assert_eq!(r.stdout.trim(), "OK", "{}", r.stderr);
}

#[test]
fn a_cron_message_waits_for_the_daemon_and_arrives_intact() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), "", "", "");
    let config = dir.path().join("mailroom.toml");
    std::fs::write(&config, &text).unwrap();
    // What cron writes: CRLF here, 8-bit UTF-8, a line of 100 000 octets,
    // and a lone dot that -i keeps.
    let long = "0123456789".repeat(10_000);
    let head = "Subject: Cron <root@box> run-parts /etc/cron.daily\r\n\
                Content-Type: text/plain; charset=UTF-8\r\n\
                Content-Transfer-Encoding: 8bit\r\n\r\n";
    let body = format!("Grüße vom Cron — ✓ 日本語\r\n{long}\r\n.\r\nthe end\r\n");
    let mut cmd = local_command(&["-C"]);
    cmd.arg0("sendmail")
        .arg(&config)
        .args(["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "alice"]);
    let r = run_command(&mut cmd, format!("{head}{body}").as_bytes());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let queue = dir.path().join("queue");
    assert_eq!(drops(&queue).len(), 1, "the message waits in the maildrop");
    assert!(
        !dir.path().join("mail").exists(),
        "nothing is delivered yet"
    );

    let srv = Server::start_config(dir, &text);
    let copies = wait_messages(&srv, "alice", 1);
    assert_eq!(copies.len(), 1);
    let p = Parsed::new(copies[0].clone());
    let want = body.replace("\r\n", "\n");
    let got = p.body();
    assert!(
        got == want.as_bytes(),
        "the body changed: {} octets, {} expected; starts {:?}",
        got.len(),
        want.len(),
        String::from_utf8_lossy(&got[..got.len().min(80)])
    );
    assert!(!p.raw.contains(&b'\r'), "line ends are LF in the Maildir");
    let (uid, login) = me();
    assert_eq!(
        p.header("From"),
        Some(format!("CronDaemon <{login}@test.example>"))
    );
    assert_eq!(
        p.header("Return-Path"),
        Some(format!("<{login}@test.example>"))
    );
    assert!(
        stamp(&p).contains(&format!("(mailroom, from userid {uid})")),
        "{}",
        stamp(&p)
    );
    wait_for("the maildrop to be empty", || {
        drops(&srv.queue_dir()).is_empty().then_some(())
    });
}

#[test]
fn the_mail_command_sends_through_our_sendmail() {
    if !tool("s-nail") {
        return;
    }
    let srv = with_aliases("", "", "");
    // Installed as sendmail is: a link by that name.
    let bin = srv.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("sendmail")).unwrap();
    let mut cmd = Command::new("s-nail");
    // No resource files; wait for sendmail's exit status.
    cmd.args(["-:/", "-Ssendwait"])
        .arg(format!("-Smta={}", bin.join("sendmail").display()))
        .args(["-s", "test", "alice@test.example"])
        .current_dir("/")
        .env("HOME", srv.dir.path())
        .env("MAILROOM_CONFIG", &srv.config_path);
    let r = run_command(&mut cmd, b"hi\n");
    assert_eq!(r.code, Some(0), "s-nail: {}{}", r.stdout, r.stderr);
    let copies = wait_messages(&srv, "alice", 1);
    assert_eq!(copies.len(), 1);
    let p = Parsed::new(copies[0].clone());
    assert_eq!(p.subject().as_deref(), Some("test"));
    assert_eq!(p.header("To").as_deref(), Some("alice@test.example"));
    assert!(
        p.header("User-Agent")
            .is_some_and(|ua| ua.starts_with("s-nail")),
        "{:?}",
        p.header("User-Agent")
    );
    assert_eq!(p.body(), b"hi\n");
    let (uid, _) = me();
    assert!(stamp(&p).contains(&format!("from userid {uid})")));
}

#[test]
fn refused_recipients_bad_input_and_bad_usage_store_nothing() {
    let srv = with_aliases("", "", "");
    let config = srv.config_path.as_path();
    let msg = b"Subject: refused\n\nnot to be sent\n";

    // One unknown recipient: nobody gets the message, not even alice.
    let r = sendmail(config, &["alice@test.example", "nobody@test.example"], msg);
    assert_eq!(r.code, Some(67), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("nobody@test.example"), "{}", r.stderr);
    assert!(!r.stderr.contains("alice"), "{}", r.stderr);
    // The same from the header.
    let r = sendmail(
        config,
        &["-t"],
        b"To: alice@test.example\nCc: ghost@test.example\n\nx\n",
    );
    assert_eq!(r.code, Some(67), "{}", r.stderr);
    assert!(r.stderr.contains("ghost@test.example"), "{}", r.stderr);
    // A remote recipient, with no relay configured.
    let r = sendmail(config, &["someone@elsewhere.example"], msg);
    assert_eq!(r.code, Some(67), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("someone@elsewhere.example"),
        "{}",
        r.stderr
    );

    // Input that is not a message to send.
    let r = sendmail(config, &["a@@b.example"], msg);
    assert_eq!(r.code, Some(65), "{}", r.stderr);
    let r = sendmail(config, &["-f", "two words@", "alice"], msg);
    assert_eq!(r.code, Some(65), "{}", r.stderr);
    let r = sendmail(config, &[], msg);
    assert_eq!(r.code, Some(65), "{}", r.stderr);
    assert!(r.stderr.contains("no recipients"), "{}", r.stderr);
    let r = sendmail(config, &["-t"], msg);
    assert_eq!(
        r.code,
        Some(65),
        "-t with no To:, Cc: or Bcc:: {}",
        r.stderr
    );

    // Usage: the unknown flag is named.
    let r = sendmail(config, &["-k", "alice"], msg);
    assert_eq!(r.code, Some(64), "{}", r.stderr);
    assert!(
        r.stderr.lines().next().unwrap_or_default().contains("-k"),
        "{}",
        r.stderr
    );
    // A configuration that does not parse, given by -C or MAILROOM_CONFIG.
    let bad = srv.dir.path().join("bad.toml");
    std::fs::write(&bad, "hostname = [\n").unwrap();
    let r = sendmail(&bad, &["alice"], msg);
    assert_eq!(r.code, Some(78), "{}", r.stderr);
    assert!(r.stderr.contains("bad.toml"), "{}", r.stderr);
    let mut cmd = local_command(&["sendmail", "alice"]);
    cmd.env("MAILROOM_CONFIG", &bad);
    let r = run_command(&mut cmd, msg);
    assert_eq!(r.code, Some(78), "{}", r.stderr);

    // None of it reached the queue: a message sent after all of them is
    // the first one the daemon picks up, and the only one delivered.
    let r = sendmail(config, &["bob"], b"Subject: accepted\n\nx\n");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let bob = wait_messages(&srv, "bob", 1);
    assert_eq!(
        Parsed::new(bob[0].clone()).subject().as_deref(),
        Some("accepted")
    );
    assert!(srv.wait_log(": done, removed from the queue"));
    assert_eq!(srv.log().matches(": picked up from uid").count(), 1);
    assert!(srv.messages("alice").is_empty());
    assert!(srv.messages("postmaster").is_empty());
    assert!(drops(&srv.queue_dir()).is_empty());
}

#[test]
fn a_message_the_added_fields_make_too_large_is_refused_not_lost() {
    let srv = Server::start_with("", "max_message_size = 2048", "");
    let config = srv.config_path.as_path();
    let queue = srv.queue_dir();
    // Within the limit as it is read, past it once From:, Date: and
    // Message-ID: are added: refused here, not set aside by the daemon
    // after a 0 that said it was stored.
    let head = "Subject: big\n\n";
    let input = format!("{head}{}\n", "x".repeat(2000 - head.len() - 1));
    assert_eq!(input.len(), 2000);
    let r = sendmail(config, &["alice"], input.as_bytes());
    assert_eq!(r.code, Some(65), "{}", r.stderr);
    assert!(r.stderr.contains("max_message_size"), "{}", r.stderr);
    assert!(drops(&queue).is_empty());
    // Exactly at the limit, with those fields given: stored and delivered.
    let head = "From: cron@test.example\nDate: Mon, 7 Dec 2026 09:00:00 +0000\n\
                Message-ID: <limit@test.example>\nSubject: at the limit\n\n";
    let body = format!("{}\n", "y".repeat(2048 - head.len() - 1));
    let r = sendmail(config, &["alice"], format!("{head}{body}").as_bytes());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let alice = wait_messages(&srv, "alice", 1);
    let p = Parsed::new(alice[0].clone());
    assert_eq!(p.subject().as_deref(), Some("at the limit"));
    assert_eq!(p.body(), body.as_bytes());
    wait_done(&srv, 1);
    assert_eq!(srv.log().matches(": picked up from uid").count(), 1);
    assert_eq!(std::fs::read_dir(queue.join("corrupt")).unwrap().count(), 0);
}

#[test]
fn mailq_lists_a_deferred_message_which_can_be_retried_held_released_and_deleted() {
    // Each attempt fails temporarily and says which one it is.
    let mut srv = with_aliases(
        "later: \"|echo x >> {d}/out/tries; echo try $(grep -c x {d}/out/tries) >&2; exit 75\"\n",
        "",
        "",
    );
    open_dir(&srv, "out");
    let config = srv.config_path.clone();
    let (out, entries) = listed(&config);
    assert_eq!(out, "Mail queue is empty\n");
    assert!(entries.is_empty());

    let input = b"Subject: deferred\n\nwaits\n";
    let r = sendmail(&config, &["-f", "alice@test.example", "later"], input);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // mailq shows the last failure once it is recorded (and the runner is
    // done with the attempt).
    let reason = |n: usize| format!("4.3.0 the command exited 75 (temporary failure): try {n}");
    let after_try = |n: usize| {
        wait_for(&format!("mailq to show try {n}"), || {
            let (out, entries) = listed(&config);
            entries
                .first()
                .is_some_and(|e| e.reasons.contains(&reason(n)))
                .then_some((out, entries))
        })
    };
    let (out, entries) = after_try(1);
    assert_eq!(entries.len(), 1, "{out}");
    let e = &entries[0];
    assert!(
        !e.held && e.id.len() >= 8 && e.id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{out}"
    );
    // The message and the Received: field it was stamped with.
    assert!(
        e.size > input.len() as u64 && e.size < input.len() as u64 + 1000,
        "{out}"
    );
    assert_eq!(e.sender, "alice@test.example", "{out}");
    assert_eq!(e.recipients, ["later@test.example"], "{out}");
    assert_eq!(e.reasons, [reason(1)], "{out}");
    // In the header's columns: the size ends under `--Size--`, and the
    // sender, the reason and the recipient start under
    // `-Sender/Recipient-`.
    let lines: Vec<&str> = out.lines().collect();
    let size_end = lines[0].find("--Size--").unwrap() + "--Size--".len();
    let sender = lines[0].find("-Sender/Recipient-").unwrap();
    assert!(
        lines[1][..size_end].ends_with(&format!(" {}", e.size))
            && lines[1][sender..].starts_with("alice@test.example")
            && lines[1][..sender].ends_with(' '),
        "{out}"
    );
    for line in &lines[2..4] {
        assert_eq!(line.find(|c| c != ' '), Some(sender), "{out}");
    }
    let id = e.id.clone();
    let attempts = |srv: &Server| {
        srv.log()
            .matches(&format!("{id}: delivery to <later@test.example>"))
            .count()
    };
    wait_for("the attempt in the log", || {
        (attempts(&srv) == 1).then_some(())
    });

    // Retried at once, not in retry_first's five minutes; mailq shows
    // the last failure, not the first.
    let r = sendmail(&config, &["-q"], b"");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let (out, entries) = after_try(2);
    assert_eq!(entries[0].reasons, [reason(2)], "{out}");
    let r = queue_command(&config, &["flush"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    after_try(3);
    wait_for("3 attempts in the log", || {
        (attempts(&srv) == 3).then_some(())
    });

    // Held: marked, and not tried even by a flush.
    let r = queue_command(&config, &["hold", &id]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, format!("{id}: held\n"));
    let (out, entries) = listed(&config);
    assert!(entries.len() == 1 && entries[0].held, "{out}");
    assert!(out.contains(&format!("{id}! ")), "{out}");
    let r = queue_command(&config, &["flush"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // The runner takes its wake-ups in order: once this message has been
    // through, the flush before it is done.
    assert_eq!(sendmail(&config, &["bob"], b"x\n").code, Some(0));
    wait_messages(&srv, "bob", 1);
    assert!(srv.wait_log(": done, removed from the queue"));
    assert_eq!(attempts(&srv), 3, "a held message was tried");
    let r = queue_command(&config, &["release", &id]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, format!("{id}: released\n"));
    let (out, entries) = listed(&config);
    assert!(entries.len() == 1 && !entries[0].held, "{out}");
    assert!(!out.contains('!'), "{out}");
    let r = queue_command(&config, &["flush"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    after_try(4);

    // Ids that are not queued.
    for args in [["delete", "0123ABCD"], ["hold", "not-an-id"]] {
        let r = queue_command(&config, &args);
        assert_eq!(r.code, Some(66), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(args[1]), "{}", r.stderr);
    }

    // With the daemon stopped, root reads the queue itself.
    srv.signal("TERM");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
    let (out, entries) = listed(&config);
    assert_eq!(entries.len(), 1, "{out}");
    assert_eq!(entries[0].id, id);
    assert_eq!(entries[0].recipients, ["later@test.example"], "{out}");
    let r = sendmail(&config, &["-q"], b"");
    assert_eq!(r.code, Some(75), "-q with nobody to ask: {}", r.stderr);
    let r = queue_command(&config, &["delete", &id]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, format!("{id}: deleted\n"));
    assert_eq!(listed(&config).0, "Mail queue is empty\n");
    let r = queue_command(&config, &["delete", &id]);
    assert_eq!(r.code, Some(66), "{}", r.stderr);
}

#[test]
fn a_permanent_failure_after_acceptance_is_bounced_to_the_sender() {
    let srv = with_aliases("fails: \"|exit 67\"\n", "", "");
    let input = b"Subject: doomed\nMessage-ID: <doomed@box.test.example>\n\nbody\n";
    let r = sendmail(
        &srv.config_path,
        &["-f", "alice@test.example", "fails@test.example"],
        input,
    );
    assert_eq!(r.code, Some(0), "the recipient looks fine: {}", r.stderr);
    let alice = wait_messages(&srv, "alice", 1);
    assert_eq!(alice.len(), 1);
    let (dsn, text, status, headers) = dsn_parts(&alice[0]);
    assert_eq!(dsn.header("Return-Path").as_deref(), Some("<>"));
    assert!(
        dsn.header("From")
            .is_some_and(|f| f.starts_with("MAILER-DAEMON@mx.test.example")),
        "{:?}",
        dsn.header("From")
    );
    assert!(
        text.contains("<fails@test.example>: the command exited 67"),
        "{text}"
    );
    let per_rcpt = status.split("\n\n").nth(1).unwrap_or_default();
    assert!(
        per_rcpt.contains("Final-Recipient: rfc822; fails@test.example\n")
            && per_rcpt.contains("Action: failed\n")
            && per_rcpt.contains("Status: 5."),
        "{status}"
    );
    assert!(
        headers.contains("Message-ID: <doomed@box.test.example>"),
        "{headers}"
    );
    wait_for("an empty queue", || {
        let (out, entries) = listed(&srv.config_path);
        entries.is_empty().then_some(out)
    });
    // The same report, read by Python's email module.
    if !tool("python3") {
        return;
    }
    let script = r#"
import email, email.policy, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status", m.get_param("report-type")
assert m["From"].addresses[0].username == "MAILER-DAEMON", m["From"]
report = [p for p in m.iter_parts() if p.get_content_type() == "message/delivery-status"][0]
groups = report.get_payload()
assert groups[0]["Reporting-MTA"] == "dns; mx.test.example", groups[0]["Reporting-MTA"]
rcpt = groups[1]
assert rcpt["Final-Recipient"] == "rfc822; fails@test.example", rcpt["Final-Recipient"]
assert rcpt["Action"] == "failed", rcpt["Action"]
assert rcpt["Status"].startswith("5."), rcpt["Status"]
print("OK")
"#;
    let new = srv.maildir("alice").join("new");
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .expect("the report")
        .unwrap()
        .path();
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).arg(file);
    let r = run_command(&mut cmd, b"");
    assert_eq!(r.stdout.trim(), "OK", "{}", r.stderr);
}

#[test]
fn an_unprivileged_user_drops_mail_under_its_own_uid_and_reads_no_one_elses() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    let as_nobody = |cmd: &mut Command| {
        cmd.uid(NOBODY).gid(NOBODY);
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some(closed) = dir
        .path()
        .ancestors()
        .find(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
    {
        eprintln!(
            "skipped: nobody cannot pass through {}; set TMPDIR",
            closed.display()
        );
        return;
    }
    let text = base_config(dir.path(), "", "", "");
    let config = dir.path().join("mailroom.toml");
    std::fs::write(&config, &text).unwrap();
    let queue = dir.path().join("queue");
    let sh = |script: &str, args: &[&Path], input: &[u8]| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .args(args)
            .current_dir("/");
        as_nobody(&mut cmd);
        run_command(&mut cmd, input)
    };

    // Root's message, dropped while the daemon is down, is out of nobody's
    // reach: it cannot be listed, read or removed.
    let r = sendmail(&config, &["-v", "alice"], b"Subject: root's\n\nsecret\n");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let name = r
        .stderr
        .split_whitespace()
        .skip_while(|w| *w != "as")
        .nth(1)
        .unwrap_or_else(|| panic!("-v names the drop: {}", r.stderr))
        .trim_end_matches(';')
        .to_string();
    assert_eq!(drops(&queue), std::slice::from_ref(&name));
    let maildrop = queue.join("maildrop");
    let r = sh("ls \"$1\"", &[&maildrop], b"");
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    let r = sh("cat \"$1\"", &[&maildrop.join(&name)], b"");
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    assert!(!r.stdout.contains("secret"));
    let r = sh("rm -f \"$1\"", &[&maildrop.join(&name)], b"");
    assert_ne!(r.code, Some(0), "nobody removed root's drop");
    assert_eq!(drops(&queue), std::slice::from_ref(&name));

    let srv = Server::start_config(dir, &text);
    let alice = wait_messages(&srv, "alice", 1);
    assert!(stamp(&Parsed::new(alice[0].clone())).contains("(mailroom, from userid 0)"));
    wait_done(&srv, 1);

    // nobody's own message, through sendmail.
    let mut cmd = local_command(&["sendmail", "-C"]);
    cmd.arg(&config).arg("alice");
    as_nobody(&mut cmd);
    let r = run_command(&mut cmd, b"Subject: nobody's\n\nhello\n");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let alice = wait_messages(&srv, "alice", 2);
    let p = Parsed::new(alice[1].clone());
    assert_eq!(p.subject().as_deref(), Some("nobody's"));
    assert!(
        stamp(&p).contains(&format!("(mailroom, from userid {NOBODY})")),
        "{}",
        stamp(&p)
    );
    wait_done(&srv, 2);

    // A drop written by hand that claims to come from root.
    let message = b"Subject: forged\n\nI am root, honest\n";
    let mut forged = format!(
        "mailroom-queue 1\nid drop\narrived 0\nsender root@test.example\nuid 0\n\
         rcpt - - alice@test.example\ndata {}\n",
        message.len()
    )
    .into_bytes();
    forged.extend_from_slice(message);
    let path = srv.queue_dir().join("maildrop").join("forged");
    let r = sh(
        "umask 077 && cat > \"$1\" && chmod 0740 \"$1\"",
        &[&path],
        &forged,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let mut cmd = local_command(&["queue", "-C"]);
    cmd.arg(&config).arg("flush");
    as_nobody(&mut cmd);
    let r = run_command(&mut cmd, b"");
    assert_eq!(r.code, Some(0), "anyone may ask for a flush: {}", r.stderr);
    let alice = wait_messages(&srv, "alice", 3);
    let p = Parsed::new(alice[2].clone());
    assert_eq!(p.subject().as_deref(), Some("forged"));
    assert!(
        stamp(&p).contains(&format!("(mailroom, from userid {NOBODY})")),
        "the file's claim was believed: {}",
        stamp(&p)
    );
    assert_eq!(p.headers("Received").len(), 1);
    assert!(srv.wait_log(&format!(
        "picked up from uid {NOBODY}: from=<root@test.example>"
    )));

    // nobody may list the queue (the daemon does it) but not change it.
    wait_done(&srv, 3);
    let mut cmd = local_command(&["mailq", "-C"]);
    cmd.arg(&config);
    as_nobody(&mut cmd);
    let r = run_command(&mut cmd, b"");
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "Mail queue is empty\n"),
        "{}",
        r.stderr
    );
    let mut cmd = local_command(&["queue", "-C"]);
    cmd.arg(&config).args(["delete", "0123ABCD"]);
    as_nobody(&mut cmd);
    let r = run_command(&mut cmd, b"");
    assert_eq!(r.code, Some(77), "{}", r.stderr);
}

#[test]
fn sendmail_bv_says_what_becomes_of_each_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "staff: alice, bob\n").unwrap();
    let top = format!("aliases = \"{}\"", aliases.display());
    let config = dir.path().join("mailroom.toml");
    std::fs::write(&config, base_config(dir.path(), &top, "", "")).unwrap();
    let d = dir.path().display();

    let r = sendmail(
        &config,
        &["-bv", "alice@test.example", "nobody@test.example"],
        b"",
    );
    assert_eq!(r.code, Some(67), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("<alice@test.example>: deliverable to maildir {d}/mail/alice/Maildir"),
            "<nobody@test.example>: no such user here".to_string(),
        ],
        "{}",
        r.stdout
    );
    let r = sendmail(&config, &["-bv", "staff", "someone@elsewhere.example"], b"");
    assert_eq!(r.code, Some(67), "{}", r.stderr);
    assert!(
        r.stdout.starts_with(&format!(
            "<staff@test.example>: deliverable to maildir {d}/mail/alice/Maildir, maildir {d}/mail/bob/Maildir\n"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("<someone@elsewhere.example>: mail for other hosts is not relayed"),
        "{}",
        r.stdout
    );
    let r = sendmail(&config, &["-bv", "alice", "staff"], b"");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Verifying sends nothing, and needs no queue.
    assert!(!dir.path().join("queue").exists());
    assert!(!dir.path().join("mail").exists());
}

/// `sendmail -bs` speaks SMTP on its standard input and output, here to
/// swaks's `--pipe` (as mutt and some PHP setups use it): recipients are
/// checked as the plain command checks them, and an accepted message is
/// dropped and delivered, stamped with the caller's uid.
#[test]
fn sendmail_bs_speaks_smtp_on_its_standard_input_and_output() {
    if !tool("swaks") {
        return;
    }
    let srv = with_aliases("", "", "");
    let (uid, _) = me();
    let pipe = format!("{BIN} sendmail -C {} -bs", srv.config_path.display());
    let mut cmd = Command::new("swaks");
    cmd.args(["--pipe", &pipe])
        .args(["--from", "bob@test.example", "--to", "alice@test.example"])
        .args(["--header", "Subject: over -bs"])
        .current_dir("/");
    let r = run_command(&mut cmd, b"");
    assert_eq!(r.code, Some(0), "swaks: {}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("250-DSN"), "{}", r.stdout);
    let copies = wait_messages(&srv, "alice", 1);
    let text = String::from_utf8_lossy(&copies[0]).into_owned();
    assert!(text.contains("Subject: over -bs"), "{text}");
    assert!(
        text.contains(&format!("(mailroom, from userid {uid})\n\tid ")),
        "{text}"
    );

    let mut cmd = Command::new("swaks");
    cmd.args(["--pipe", &pipe])
        .args(["--from", "bob@test.example", "--to", "nobody@test.example"])
        .current_dir("/");
    let r = run_command(&mut cmd, b"");
    assert_ne!(r.code, Some(0), "{}", r.stdout);
    assert!(
        r.stdout.contains("550 5.1.1 <nobody@test.example>"),
        "{}",
        r.stdout
    );
    assert!(drops(&srv.queue_dir()).is_empty());
}

/// `sendmail -bs` waits for commands no longer than a listener's session
/// does: a caller that goes quiet gets `421 4.4.2` and the command ends.
#[test]
fn sendmail_bs_times_out_a_quiet_caller() {
    let srv = with_aliases("", "", "[timeouts]\ncommand = 1\n");
    let mut child = Command::new(BIN)
        .arg("sendmail")
        .arg("-C")
        .arg(&srv.config_path)
        .arg("-bs")
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Standard input stays open and says nothing.
    let _quiet = child.stdin.take();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("sendmail -bs did not time out");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.starts_with("220 "), "{out}");
    assert!(out.contains("421 4.4.2"), "{out}");
    assert!(status.success(), "{status:?}");
}

/// `newaliases` (the binary called so), as after editing /etc/aliases:
/// it checks the file as the daemon reads it, prints what would fail at
/// RCPT time, and makes the running daemon reload it. A broken file is
/// refused before the daemon is asked; only root or the daemon's own user
/// may ask.
#[test]
fn newaliases_checks_the_aliases_and_makes_the_daemon_reload_them() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "staff: alice\n").unwrap();
    let top = format!("aliases = \"{}\"", aliases.display());
    let text = base_config(dir.path(), &top, "", "");
    let srv = Server::start_config(dir, &text);
    let newaliases = |uid: Option<u32>| {
        let mut cmd = local_command(&["-C"]);
        cmd.arg0("newaliases").arg(&srv.config_path);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        run_command(&mut cmd, b"")
    };
    let rcpt = |to: &str| {
        let mut c = srv.connect().hello();
        c.expect("MAIL FROM:<a@elsewhere.example>", 250);
        c.cmd(&format!("RCPT TO:<{to}>")).code
    };
    assert_eq!(rcpt("team@test.example"), 550);

    std::fs::write(&aliases, "staff: alice\nteam: bob\nbroken: ghost\n").unwrap();
    let r = newaliases(None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            == "newaliases: warning: alias broken: no member names a mailbox, so RCPT TO:<broken@test.example> gets 550\n",
        "{}",
        r.stdout
    );
    assert!(srv.wait_log("reload asked by uid"), "{}", srv.log());
    assert!(within_10s(|| rcpt("team@test.example") == 250));

    // A file the daemon could not read is refused, and the daemon keeps
    // the aliases it has.
    std::fs::write(&aliases, "staff: alice\nno colon on this line\n").unwrap();
    let r = newaliases(None);
    assert_eq!(r.code, Some(78), "{}", r.stdout);
    assert!(r.stderr.contains("aliases"), "{}", r.stderr);
    assert_eq!(srv.log().matches("reload asked by uid").count(), 1);
    assert_eq!(rcpt("team@test.example"), 250);

    // Anyone else is refused by the daemon (the configuration and aliases
    // must be readable to get that far).
    std::fs::write(&aliases, "staff: alice\nteam: bob\n").unwrap();
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        for p in [srv.dir.path(), srv.config_path.as_path(), aliases.as_path()] {
            let mode = if p.is_dir() { 0o711 } else { 0o644 };
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        }
        let r = newaliases(Some(nobody.uid.as_raw()));
        assert_eq!(r.code, Some(77), "{} {}", r.stdout, r.stderr);
        assert!(r.stderr.contains("only root"), "{}", r.stderr);
        assert_eq!(srv.log().matches("reload asked by uid").count(), 1);
    }
}

#[test]
fn mailroom_reload_checks_the_file_then_makes_the_daemon_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), "", "", "");
    let srv = Server::start_config(dir, &text);
    let reload = |config: &std::path::Path| {
        let mut cmd = local_command(&["reload", "--config"]);
        cmd.arg(config);
        run_command(&mut cmd, b"")
    };
    let rcpt = |to: &str| {
        let mut c = srv.connect().hello();
        c.expect("MAIL FROM:<a@elsewhere.example>", 250);
        c.cmd(&format!("RCPT TO:<{to}>")).code
    };
    assert_eq!(rcpt("carol@test.example"), 550);

    let carol = format!(
        "{text}\n[mailbox.carol]\nmaildir = \"{}/mail/carol/Maildir\"\n",
        srv.dir.path().display()
    );
    std::fs::write(&srv.config_path, &carol).unwrap();
    let r = reload(&srv.config_path);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.is_empty() && r.stderr.is_empty(),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert!(srv.wait_log("configuration reloaded"), "{}", srv.log());
    assert!(within_10s(|| rcpt("carol@test.example") == 250));

    // A broken file is reported and the daemon is not asked: it keeps
    // what it has.
    std::fs::write(&srv.config_path, format!("{carol}\n[server\n")).unwrap();
    let r = reload(&srv.config_path);
    assert_eq!(r.code, Some(78), "{}", r.stderr);
    assert!(r.stderr.starts_with("mailroom reload: "), "{}", r.stderr);
    assert_eq!(srv.log().matches("reload asked by uid").count(), 1);
    assert_eq!(rcpt("carol@test.example"), 250);

    // No daemon on that queue: said so, exit 69 (EX_UNAVAILABLE).
    let idle = tempfile::tempdir().unwrap();
    let path = idle.path().join("mailroom.toml");
    std::fs::write(&path, base_config(idle.path(), "", "", "")).unwrap();
    let r = reload(&path);
    assert_eq!(r.code, Some(69), "{}", r.stderr);
    assert!(r.stderr.contains("mailroom is not running"), "{}", r.stderr);
}

#[test]
fn sendmail_passwd_is_mail_for_a_user_named_passwd() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), "", "", "");
    let srv = Server::start_config(dir, &text);
    // Called as sendmail, "passwd" is a recipient (unknown here: 67), not
    // `mailroom passwd`.
    let mut cmd = local_command(&["passwd"]);
    cmd.arg0("sendmail")
        .env("MAILROOM_CONFIG", &srv.config_path);
    let r = run_command(&mut cmd, b"Subject: hi\n\nhello\n");
    assert_eq!(r.code, Some(67), "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.starts_with("sendmail: "), "{}", r.stderr);
}
