//! The RFC 5321 receiving side over real sockets: reply codes for every
//! error path, pipelining, BDAT, SMTP smuggling, limits, address forms, and
//! the exact bytes that land in the Maildir.

mod support;
use support::*;

fn body_of(raw: &[u8]) -> Vec<u8> {
    Parsed::new(raw.to_vec()).body()
}

#[test]
fn reply_codes_for_each_error() {
    let srv = Server::start();
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    let steps: &[(&str, u16, &str)] = &[
        ("MAIL FROM:<a@remote.example>", 503, "5.5.1"),
        ("FOO", 500, "5.5.2"),
        ("HELO", 501, "5.5.4"),
        ("EHLO client.test.example", 250, ""),
        ("RCPT TO:<alice@test.example>", 503, "5.5.1"),
        ("DATA", 503, "5.5.1"),
        ("TURN", 502, "5.5.1"),
        ("STARTTLS", 502, "5.5.1"),
        ("MAIL FROM:<a@remote.example> XFOO=1", 555, "5.5.4"),
        ("MAIL FROM:<a@remote.example> BODY=12BIT", 501, "5.5.4"),
        ("MAIL FROM:<a@@remote.example>", 501, "5.1.7"),
        ("MAIL FROM:<a@remote.example> SIZE=26214401", 552, "5.3.4"),
        ("MAIL FROM:<a@remote.example> SIZE=1000", 250, "2.1.0"),
        ("MAIL FROM:<a@remote.example>", 503, "5.5.1"),
        ("RCPT TO:<alice@test.example> XFOO=1", 555, "5.5.4"),
        (
            "RCPT TO:<alice@test.example> NOTIFY=SOMETIMES",
            501,
            "5.5.4",
        ),
        ("RCPT TO:<a b@test.example>", 501, "5.1.3"),
        ("RCPT TO:<nobody@test.example>", 550, "5.1.1"),
        ("RCPT TO:<alice@elsewhere.example>", 550, "5.7.1"),
        ("DATA", 554, "5.5.1"),
        ("RSET", 250, "2.0.0"),
        ("NOOP", 250, "2.0.0"),
        ("VRFY alice", 252, "2.1.5"),
        ("EXPN staff", 502, "5.5.1"),
        ("HELP", 214, "2.0.0"),
        ("QUIT", 221, "2.0.0"),
    ];
    for (line, code, enhanced) in steps {
        let r = c.cmd(line);
        assert_eq!(r.code, *code, "{line} -> {r:?}");
        assert!(
            r.lines.last().unwrap().starts_with(enhanced),
            "{line} -> {r:?}"
        );
    }
    assert!(c.closed());
}

#[test]
fn ehlo_lists_the_extensions() {
    let srv = Server::start();
    let mut c = srv.connect();
    c.reply();
    let r = c.expect("EHLO client.test.example", 250);
    assert_eq!(
        r.lines[0],
        "mx.test.example Hello client.test.example [127.0.0.1]"
    );
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "BINARYMIME",
        "SMTPUTF8",
        "HELP",
    ] {
        assert!(r.lines.iter().any(|l| l == ext), "{ext} not in {r:?}");
    }
    assert!(!r
        .lines
        .iter()
        .any(|l| l == "STARTTLS" || l.starts_with("AUTH")));
}

#[test]
fn enhanced_codes_only_after_ehlo() {
    let srv = Server::start();
    let mut c = srv.connect();
    c.reply();
    c.expect("HELO client.test.example", 250);
    assert_eq!(c.cmd("NOOP").text(), "Ok");
    c.expect("EHLO client.test.example", 250);
    assert_eq!(c.cmd("NOOP").text(), "2.0.0 Ok");
}

#[test]
fn pipelining_everything_in_one_write() {
    let srv = Server::start();
    let mut c = srv.connect();
    c.send(
        "EHLO client.test.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@test.example>\r\n\
         RCPT TO:<nobody@test.example>\r\nRCPT TO:<bob@test.example>\r\nDATA\r\n",
    );
    let codes: Vec<u16> = (0..7).map(|_| c.reply().code).collect();
    assert_eq!(codes, [220, 250, 250, 250, 550, 250, 354]);
    c.send("Subject: piped\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@remote.example>\r\nRCPT TO:<alice@test.example>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..4).map(|_| c.reply().code).collect();
    assert_eq!(codes, [250, 250, 250, 354]);
    c.send("Subject: second\r\n\r\nx\r\n.\r\nQUIT\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 221);
    assert_eq!(srv.messages("alice").len(), 2);
    assert_eq!(srv.messages("bob").len(), 1);
}

/// The classic CVE-2023-51764 payload: <LF>.<LF> then a second
/// transaction that a lax receiver would execute.
const SMUGGLING: &str = "Subject: legit\r\n\r\nhello\n.\nMAIL FROM:<admin@test.example>\r\nRCPT TO:<bob@test.example>\r\n\
                         DATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\n";

fn open_data(c: &mut Client) {
    c.expect("MAIL FROM:<a@remote.example>", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("DATA", 354);
}

#[test]
fn smuggling_payload_is_refused_whole_under_reject() {
    let srv = Server::start_with("bare_newline = \"reject\"", "", "");
    let mut c = srv.connect().hello();
    open_data(&mut c);
    c.send(SMUGGLING);
    let r = c.reply();
    assert_eq!(r.code, 550, "{r:?}");
    assert!(r.text().starts_with("5.5.2"));
    c.expect("NOOP", 250);
    // Variants: <CR><LF>.<LF>, <LF>.<CR><LF>, <CR>.<CR><LF>.
    for payload in [
        "a\r\n.\nb\r\n.\r\n",
        "a\n.\r\nb\r\n.\r\n",
        "a\r.\r\nb\r\n.\r\n",
    ] {
        open_data(&mut c);
        c.send(payload);
        assert_eq!(c.reply().code, 550, "{payload:?}");
    }
    assert!(srv.messages("alice").is_empty());
    assert!(srv.messages("bob").is_empty());
}

#[test]
fn smuggling_payload_stays_text_of_one_message_under_normalize() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    open_data(&mut c);
    c.send(SMUGGLING);
    assert_eq!(c.reply().code, 250);
    // Exactly one reply came: the smuggled commands were not executed.
    c.expect("NOOP", 250);
    for payload in [
        "a\r\n.\nb\r\n.\r\n",
        "a\n.\r\nb\r\n.\r\n",
        "a\r.\r\nb\r\n.\r\n",
    ] {
        open_data(&mut c);
        c.send(payload);
        assert_eq!(c.reply().code, 250, "{payload:?}");
        c.expect("NOOP", 250);
    }
    assert!(srv.messages("bob").is_empty());
    let msgs = srv.messages("alice");
    assert_eq!(msgs.len(), 4);
    assert_eq!(
        body_of(&msgs[0]),
        b"hello\n.\nMAIL FROM:<admin@test.example>\nRCPT TO:<bob@test.example>\nDATA\nSubject: forged\n\nforged\n"
    );
    assert!(msgs[1].ends_with(b"\na\n\nb\n"));
    assert!(msgs[2].ends_with(b"\na\n.\nb\n"));
    assert!(msgs[3].ends_with(b"\na\r.\nb\n"));
}

#[test]
fn bdat_chunks_with_pipelining() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    let part1 = "Subject: chunked\r\n\r\nline one\r";
    let part2 = "\n.line two\r\n";
    c.send(format!(
        "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@test.example>\r\nBDAT {}\r\n{part1}BDAT {} LAST\r\n{part2}",
        part1.len(),
        part2.len()
    ));
    let codes: Vec<u16> = (0..4).map(|_| c.reply().code).collect();
    assert_eq!(codes, [250, 250, 250, 250]);
    let msgs = srv.messages("alice");
    assert_eq!(msgs.len(), 1);
    assert_eq!(body_of(&msgs[0]), b"line one\n.line two\n");
    // BDAT then DATA in the same transaction is out of sequence.
    c.expect("MAIL FROM:<a@remote.example>", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.send("BDAT 3\r\nabc");
    assert_eq!(c.reply().code, 250);
    c.expect("DATA", 503);
    c.expect("RSET", 250);
    // BINARYMIME must use BDAT.
    c.expect("MAIL FROM:<a@remote.example> BODY=BINARYMIME", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("DATA", 503);
    c.send("BDAT 8 LAST\r\n\0\x01\x02bin\r\n");
    assert_eq!(c.reply().code, 250);
    let msgs = srv.messages("alice");
    assert_eq!(msgs.len(), 2);
    // BINARYMIME is stored exactly as sent, CRLF included.
    assert!(msgs[1].ends_with(b"\n\0\x01\x02bin\r\n"));
}

#[test]
fn command_line_limits_and_bytes() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    c.expect(&format!("NOOP {}", "x".repeat(5000)), 500);
    c.expect("NOOP", 250);
    c.send(b"MAIL FROM:<a\0b@remote.example>\r\n");
    let r = c.reply();
    assert_eq!((r.code, r.text().starts_with("5.5.2")), (501, true));
    c.send(b"HELO \xff\xfe\r\n");
    assert_eq!(c.reply().code, 501);
    c.expect("NOOP", 250);
}

#[test]
fn data_bytes_are_stored_exactly() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<a@remote.example> BODY=8BITMIME", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("DATA", 354);
    let long = "y".repeat(100_000);
    let mut body = b"Subject: bytes\r\n\r\n".to_vec();
    body.extend_from_slice(b"caf\xc3\xa9 \xff\xfe nul:\0:end\r\n");
    body.extend_from_slice(b"..leading dot\r\n");
    body.extend_from_slice(long.as_bytes());
    body.extend_from_slice(b"\r\n.\r\n");
    c.send(&body);
    assert_eq!(c.reply().code, 250);
    let msgs = srv.messages("alice");
    let mut expected = b"caf\xc3\xa9 \xff\xfe nul:\0:end\n.leading dot\n".to_vec();
    expected.extend_from_slice(long.as_bytes());
    expected.push(b'\n');
    assert!(msgs[0].ends_with(&expected));
    assert!(!msgs[0].contains(&b'\r'));
}

#[test]
fn message_size_limit_while_streaming() {
    let srv = Server::start_with("", "max_message_size = 10000", "");
    let mut c = srv.connect().hello();
    let ehlo = c.cmd("EHLO client.test.example");
    assert!(ehlo.lines.contains(&"SIZE 10000".to_string()));
    c.expect("MAIL FROM:<a@remote.example>", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("DATA", 354);
    for _ in 0..200 {
        c.send("0123456789012345678901234567890123456789012345678901234567890123456789\r\n");
    }
    c.send(".\r\n");
    let r = c.reply();
    assert_eq!(
        (r.code, r.text().starts_with("5.3.4")),
        (552, true),
        "{r:?}"
    );
    // The session is still usable and a small message goes through.
    let r = c.send_mail(
        "a@remote.example",
        &["alice@test.example"],
        "Subject: small\r\n\r\nok\r\n",
    );
    assert_eq!(r.code, 250);
    assert_eq!(srv.messages("alice").len(), 1);
}

#[test]
fn recipient_limit_gives_452() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<a@remote.example>", 250);
    let mut batch = String::new();
    for _ in 0..101 {
        batch.push_str("RCPT TO:<alice@test.example>\r\n");
    }
    c.send(batch);
    for _ in 0..100 {
        assert_eq!(c.reply().code, 250);
    }
    let r = c.reply();
    assert_eq!((r.code, r.text().starts_with("4.5.3")), (452, true));
    c.expect("DATA", 354);
    c.send("Subject: many\r\n\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(srv.messages("alice").len(), 1, "one copy per mailbox");
}

#[test]
fn too_many_received_fields_is_a_loop() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    let hops = |n: usize| {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!("Received: from hop{i}.example by hop{}.example; Sun, 22 Nov 2026 10:00:00 +0000\r\n", i + 1));
        }
        s + "Subject: loop\r\n\r\nbody\r\n"
    };
    let r = c.send_mail("a@remote.example", &["alice@test.example"], &hops(101));
    assert_eq!(
        (r.code, r.text().starts_with("5.4.6")),
        (554, true),
        "{r:?}"
    );
    // 100 hops (ours makes 101) is still allowed.
    let r = c.send_mail("a@remote.example", &["alice@test.example"], &hops(100));
    assert_eq!(r.code, 250);
    let m = Parsed::new(srv.messages("alice").remove(0));
    assert_eq!(m.headers("Received").len(), 101);
}

#[test]
fn address_forms() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    let ok: &[&str] = &[
        "RCPT TO:<alice@test.example>",
        "RCPT TO:<Alice@TEST.EXAMPLE>",
        "RCPT TO:<\"alice\"@test.example>",
        "RCPT TO:<@relay1.example,@relay2.example:bob@test.example>",
        "RCPT TO:<alice@[127.0.0.1]>",
        "RCPT TO:<alice@[IPv6:::1]>",
        "RCPT TO: <alice@localhost>",
        "RCPT TO:alice@test.example",
        "RCPT TO:<postmaster>",
        "RCPT TO:<POSTMASTER>",
        "rcpt to:<postmaster@test.example>",
    ];
    c.expect("MAIL FROM:<\"john q\"@remote.example>", 250);
    for line in ok {
        c.expect(line, 250);
    }
    for (line, code) in [
        ("RCPT TO:<alice@[192.0.2.1]>", 550),
        ("RCPT TO:<alice@[IPv6:2001:db8::1]>", 550),
        ("RCPT TO:<alice@[x-tag:whatever]>", 550),
        ("RCPT TO:<../etc@test.example>", 501),
        ("RCPT TO:<\"../etc\"@test.example>", 550),
        ("RCPT TO:<\"a/b\"@test.example>", 550),
        ("RCPT TO:<\"al\\\\ice\"@test.example>", 550),
        ("RCPT TO:<alice@test.example", 501),
        ("RCPT TO:<>", 501),
        ("RCPT TO:<ünïcode@test.example>", 553),
    ] {
        c.expect(line, code);
    }
    c.expect("DATA", 354);
    c.send("Subject: forms\r\n\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(srv.messages("alice").len(), 1);
    assert_eq!(srv.messages("bob").len(), 1);
    let m = Parsed::new(srv.messages("postmaster").remove(0));
    assert_eq!(
        m.header("Return-Path").as_deref(),
        Some("<\"john q\"@remote.example>")
    );
}

#[test]
fn null_sender_and_smtputf8() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    let r = c.send_mail("", &["alice@test.example"], "Subject: bounce\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    c.expect("MAIL FROM:<dörte@bücher.example> SMTPUTF8", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("DATA", 354);
    c.send("Subject: utf8\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let msgs = srv.messages("alice");
    let bounce = Parsed::new(msgs[0].clone());
    assert_eq!(bounce.header("Return-Path").as_deref(), Some("<>"));
    let utf8 = Parsed::new(msgs[1].clone());
    assert_eq!(
        utf8.header("Return-Path").as_deref(),
        Some("<dörte@bücher.example>")
    );
    assert!(utf8
        .header("Received")
        .unwrap()
        .contains(" with UTF8SMTP id "));
}

#[test]
fn received_and_return_path_are_first() {
    let srv = Server::start();
    let mut c = srv.connect();
    c.reply();
    c.expect("HELO old.client.example", 250);
    let r = c.send_mail(
        "sender@remote.example",
        &["alice@test.example"],
        "Subject: trace\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250);
    let id = r.text().rsplit(' ').next().unwrap().to_string();
    let m = Parsed::new(srv.messages("alice").remove(0));
    assert_eq!(
        m.header_names()[..4],
        ["Return-Path", "Delivered-To", "Received", "Subject"]
    );
    assert_eq!(
        m.header("Delivered-To").as_deref(),
        Some("alice@test.example")
    );
    let received = m.header("Received").unwrap();
    let expected = format!(
        "from old.client.example (unknown [127.0.0.1])\n\tby mx.test.example (mailroom) with SMTP id {id}\n\tfor <alice@test.example>;"
    );
    assert!(received.starts_with(&expected), "{received:?}");
    assert!(received.ends_with(" +0000"), "{received:?}");
}

#[test]
fn vrfy_expn_and_strict_helo_when_enabled() {
    let srv = Server::start_with("vrfy = true\nexpn = true\nstrict_helo = true", "", "");
    let mut c = srv.connect();
    c.reply();
    c.expect("EHLO 127.0.0.1", 501);
    c.expect("EHLO under_score.example", 501);
    c.expect("EHLO [127.0.0.1]", 250);
    let r = c.expect("VRFY alice", 250);
    assert_eq!(r.text(), "2.1.5 <alice@test.example>");
    c.expect("VRFY <bob@test.example>", 250);
    c.expect("VRFY nobody", 550);
    c.expect("EXPN postmaster", 250);
}

#[test]
fn case_sensitive_users_when_configured() {
    let srv = Server::start_with("case_insensitive_users = false", "", "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<a@remote.example>", 250);
    c.expect("RCPT TO:<alice@TEST.example>", 250);
    c.expect("RCPT TO:<Alice@test.example>", 550);
}

/// Memory per session is bounded by the line buffer, never by the message:
/// the server's peak resident size grows by far less than one 24 MB
/// message, for Maildir copies (copied from the spool) and mbox copies
/// (quoted as they stream) alike. Growth, not size: under qemu-user (the
/// ARM runs of .ci/small-boxes) the process is the emulator, which alone
/// is 17 MiB.
#[test]
fn a_large_message_is_streamed_not_buffered() {
    let srv = Server::start_with("", "", "[mailbox.carol]\nmbox = \"carol.mbox\"");
    let kb = |field: &str| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    };
    let mut c = srv.connect().hello();
    let before_kb = kb("VmRSS:");
    c.expect("MAIL FROM:<a@remote.example> SIZE=24600000", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("RCPT TO:<bob@test.example>", 250);
    c.expect("RCPT TO:<carol@test.example>", 250);
    c.expect("DATA", 354);
    c.send("Subject: big\r\n\r\n");
    let line = format!("{}\r\n", "x".repeat(998));
    let block = line.repeat(1000);
    for _ in 0..24 {
        c.send(&block);
    }
    c.send(".\r\n");
    assert_eq!(c.reply().code, 250);
    let peak_kb = kb("VmHWM:");
    assert!(
        peak_kb - before_kb < 12 * 1024,
        "peak RSS {peak_kb} kB, {before_kb} kB before a 24 MB message"
    );
    for user in ["alice", "bob"] {
        let msgs = srv.messages(user);
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].len() > 23_976_000, "{} octets", msgs[0].len());
    }
    let mbox = mbox_messages(&srv.dir.path().join("carol.mbox"));
    assert_eq!(mbox.len(), 1);
    assert!(mbox[0].len() > 23_976_000, "{} octets", mbox[0].len());
}

#[test]
fn bodies_never_reach_the_log() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "a@remote.example",
        &["alice@test.example"],
        "Subject: secret-subject-7f3a\r\n\r\nsecret-body-91c2\r\n",
    );
    assert_eq!(r.code, 250);
    assert!(srv.wait_log("delivered to"));
    let log = srv.log();
    assert!(
        !log.contains("secret-body-91c2") && !log.contains("secret-subject-7f3a"),
        "{log}"
    );
    assert!(log.contains("accepted from=<a@remote.example>"), "{log}");
}
