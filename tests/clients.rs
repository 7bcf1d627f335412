mod support;
use support::*;

// Standard SMTP clients against the real server: lettre, Python's smtplib,
// swaks, curl and the harness's raw client. Every delivered message is read
// back from the Maildir with parsers that are not mailroom's (mail-parser,
// and Python's `email`/`mailbox` where Python runs) and compared with what
// was sent.
//
// swaks and curl come from `tests/install-test-tools.sh`; when one is
// missing its test is skipped with a note on stderr, except under `CI`,
// where a missing tool fails the test.

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::Body;
use lettre::transport::smtp::client::SmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};
use mail_parser::{Host, MessageParser, Protocol};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Helpers

/// Runs an external client; fails the test with its output unless it
/// exited with status 0.
fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    MessageParser::default()
        .parse(raw)
        .expect("mail-parser can read the stored message")
}

/// Compares two byte strings; on a difference reports where, with a little
/// context, instead of printing megabytes.
fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |b: &[u8]| {
        let start = at.saturating_sub(40);
        String::from_utf8_lossy(&b[start..(at + 40).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: differs at byte {at} (got {} bytes, want {})\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    );
}

fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// What lettre puts on the wire for a message: `formatted()`, then
/// `CRLF . CRLF`. The first CRLF ends the last line of the data (RFC 5321
/// 4.1.1.4), so a message that ends in CRLF gets an empty last line, and
/// the stored form of that is LF line ends.
fn lettre_stored_form(email: &Message) -> Vec<u8> {
    let mut wire = email.formatted();
    wire.extend_from_slice(b"\r\n");
    crlf_to_lf(&wire)
}

/// The stored body: everything after the first empty line.
fn stored_body(raw: &[u8]) -> &[u8] {
    let at = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("a header/body separator");
    &raw[at + 2..]
}

/// The stored messages of a user, by Subject (decoded by mail-parser);
/// every subject must be unique.
fn by_subject(srv: &Server, user: &str) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    for raw in srv.messages(user) {
        let subject = parse(&raw).subject().unwrap_or_default().to_string();
        assert!(
            map.insert(subject.clone(), raw).is_none(),
            "two messages with subject {subject:?}"
        );
    }
    map
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Checks that `date` is an RFC 5322 date-time of the form mailroom writes
/// (`Sun, 22 Nov 2026 14:40:00 +0000`), that mail-parser reads the same
/// fields, that the day name fits the date, and that it is about now.
fn check_date(date: &str) {
    let parts: Vec<&str> = date.split(' ').collect();
    assert_eq!(parts.len(), 6, "date {date:?}");
    let dow = parts[0].strip_suffix(',').expect("day name and comma");
    assert!(DAYS.contains(&dow), "day name in {date:?}");
    let day: u8 = parts[1].parse().expect("day");
    assert!((1..=31).contains(&day) && parts[1].len() <= 2, "{date:?}");
    let month = MONTHS.iter().position(|m| *m == parts[2]).expect("month") as u8 + 1;
    assert_eq!(parts[3].len(), 4, "year in {date:?}");
    let year: u16 = parts[3].parse().expect("year");
    let hms: Vec<u8> = parts[4]
        .split(':')
        .map(|x| {
            assert_eq!(x.len(), 2, "time in {date:?}");
            x.parse().expect("time")
        })
        .collect();
    assert_eq!(hms.len(), 3, "time in {date:?}");
    assert!(hms[0] < 24 && hms[1] < 60 && hms[2] < 61, "{date:?}");
    let zone = parts[5];
    assert!(
        zone.len() == 5
            && (zone.starts_with('+') || zone.starts_with('-'))
            && zone[1..].bytes().all(|b| b.is_ascii_digit()),
        "zone in {date:?}"
    );

    let dt = mail_parser::DateTime::parse_rfc822(date)
        .unwrap_or_else(|| panic!("mail-parser cannot parse {date:?}"));
    assert!(dt.is_valid(), "{date:?} -> {dt:?}");
    assert_eq!(
        (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second),
        (year, month, day, hms[0], hms[1], hms[2]),
        "mail-parser reads {date:?} as {dt:?}"
    );
    let ts = dt.to_timestamp();
    let weekday = (ts.div_euclid(86400) + 4).rem_euclid(7) as usize;
    assert_eq!(DAYS[weekday], dow, "the day name of {date:?}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((ts - now).abs() < 300, "{date:?} is not now ({now})");
}

/// What the trace fields of a stored copy must say.
struct Trace<'a> {
    /// The reverse path without brackets; empty for `<>`.
    reverse: &'a str,
    /// The `Delivered-To:` address.
    rcpt: &'a str,
    helo: &'a str,
    protocol: &'a str,
    /// The `for` clause: only when the message had one recipient.
    for_rcpt: Option<&'a str>,
}

/// Checks the fields mailroom prepends, both as text (the exact form) and
/// through mail-parser; returns the queue id of the `Received:` field.
fn check_trace(raw: &[u8], t: &Trace) -> String {
    let text = std::str::from_utf8(raw).expect("stored header is UTF-8");
    let head = format!(
        "Return-Path: <{}>\nDelivered-To: {}\nReceived: from {} (unknown [127.0.0.1])\n\tby mx.test.example (mailroom) with {} id ",
        t.reverse, t.rcpt, t.helo, t.protocol
    );
    let preview = &text[..text.len().min(400)];
    assert!(text.starts_with(&head), "want {head:?}\ngot {preview:?}");
    let rest = &text[head.len()..];
    let id_len = rest
        .find(|c: char| !c.is_ascii_hexdigit() || c.is_ascii_lowercase())
        .unwrap_or(0);
    assert_eq!(id_len, 18, "queue id in {preview:?}");
    let id = rest[..id_len].to_string();
    let rest = &rest[id_len..];
    let clause = match t.for_rcpt {
        Some(r) => format!("\n\tfor <{r}>;\n\t"),
        None => ";\n\t".to_string(),
    };
    assert!(rest.starts_with(&clause), "want {clause:?} in {preview:?}");
    let rest = &rest[clause.len()..];
    let end = rest.find('\n').expect("end of the Received field");
    check_date(&rest[..end]);
    let next = rest.as_bytes().get(end + 1).copied();
    assert!(
        next.is_some_and(|b| b != b' ' && b != b'\t'),
        "Received ends after the date: {preview:?}"
    );

    // The same, read by mail-parser.
    let p = Parsed::new(raw.to_vec());
    let names = p.header_names();
    assert_eq!(
        names[..3],
        ["Return-Path", "Delivered-To", "Received"],
        "{names:?}"
    );
    assert_eq!(
        p.header("Return-Path").as_deref(),
        Some(format!("<{}>", t.reverse).as_str())
    );
    assert_eq!(p.headers("Delivered-To"), [t.rcpt]);
    let m = parse(raw);
    let all: Vec<_> = m.received_all().collect();
    assert_eq!(all.len(), 1, "exactly one Received: {all:?}");
    let r = all[0];
    assert_eq!(r.by(), Some(&Host::Name("mx.test.example".into())), "{r:?}");
    assert_eq!(r.from(), Some(&Host::Name(t.helo.into())), "{r:?}");
    let protocol = match t.protocol {
        "SMTP" => Protocol::SMTP,
        "ESMTP" => Protocol::ESMTP,
        "UTF8SMTP" => Protocol::UTF8SMTP,
        other => panic!("unexpected protocol {other}"),
    };
    assert_eq!(r.with(), Some(protocol), "{r:?}");
    assert_eq!(r.id(), Some(id.as_str()), "{r:?}");
    assert_eq!(r.for_(), t.for_rcpt, "{r:?}");
    assert!(r.date().is_some_and(|d| d.is_valid()), "{r:?}");
    id
}

/// The stored message after the trace fields (which `check_trace` checks
/// are the first three): the end of the `Received:` field.
fn after_trace(raw: &[u8]) -> &[u8] {
    let mut i = raw
        .windows(11)
        .position(|w| w == b"\nReceived: ")
        .expect("a Received field")
        + 1;
    loop {
        i += raw[i..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("end of line")
            + 1;
        if !matches!(raw.get(i), Some(b'\t' | b' ')) {
            return &raw[i..];
        }
    }
}

/// The queue id at the end of a "250 ... queued as ID" reply.
fn queued_id(text: &str) -> String {
    let i = text.find("queued as ").expect("queued as");
    text[i + 10..].trim().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Maildir and its subdirectories 0700, messages in new/ 0600, tmp/ empty.
fn check_modes(maildir: &Path) {
    for dir in ["", "cur", "new", "tmp"] {
        let d = maildir.join(dir);
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let files: Vec<_> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    assert_eq!(std::fs::read_dir(maildir.join("tmp")).unwrap().count(), 0);
}

fn transport(srv: &Server, helo: &str) -> SmtpTransport {
    SmtpTransport::builder_dangerous("127.0.0.1")
        .port(srv.addr.port())
        .hello_name(ClientId::Domain(helo.into()))
        .timeout(Some(Duration::from_secs(20)))
        .build()
}

// ---------------------------------------------------------------------------
// lettre

#[test]
fn lettre_delivers_one_copy_to_each_of_two_recipients() {
    let srv = Server::start();
    let text =
        "Hello Alice and Bob,\n\nzweite Zeile: Grüße, ½ € — ok.\n.a line with a leading dot\n";
    let email = Message::builder()
        .from("Sender Name <sender@remote.example>".parse().unwrap())
        .to("Alice <alice@test.example>".parse().unwrap())
        .to("bob@test.example".parse().unwrap())
        .subject("Grüße from lettre")
        .header(ContentType::TEXT_PLAIN)
        .body(text.to_string())
        .unwrap();
    transport(&srv, "lettre.client.example")
        .send(&email)
        .expect("lettre sends the message");
    let sent = lettre_stored_form(&email);

    for user in ["alice", "bob"] {
        let msgs = srv.messages(user);
        assert_eq!(msgs.len(), 1, "{user} has exactly one copy");
        let raw = &msgs[0];
        let rcpt = format!("{user}@test.example");
        check_trace(
            raw,
            &Trace {
                reverse: "sender@remote.example",
                rcpt: &rcpt,
                helo: "lettre.client.example",
                protocol: "ESMTP",
                for_rcpt: None,
            },
        );
        assert!(!String::from_utf8_lossy(raw).contains("for <"));

        // After the three trace fields: the message exactly as lettre sent it.
        assert_bytes_eq(after_trace(raw), &sent, "the message after the trace");

        let p = Parsed::new(raw.clone());
        assert_eq!(p.subject().as_deref(), Some("Grüße from lettre"));
        let m = parse(raw);
        let from = m.from().and_then(|a| a.first()).expect("From");
        assert_eq!(from.name(), Some("Sender Name"));
        assert_eq!(from.address(), Some("sender@remote.example"));
        let to: Vec<_> = m
            .to()
            .expect("To")
            .iter()
            .map(|a| a.address().unwrap().to_string())
            .collect();
        assert_eq!(to, ["alice@test.example", "bob@test.example"]);
        let body = m.body_text(0).expect("a text body").replace("\r\n", "\n");
        assert_eq!(body, format!("{text}\n"));
        check_modes(&srv.maildir(user));
    }
    assert!(srv.messages("postmaster").is_empty());
}

/// A body of at least 5 MiB with dot lines, 20,000-character lines (ASCII
/// and UTF-8) and 8-bit text, LF line ends, ending in a lone dot line.
fn big_body() -> String {
    let long_ascii = "0123456789abcdefghij".repeat(1000);
    let mut long_utf8 = String::new();
    while long_utf8.chars().count() < 20_000 {
        long_utf8.push_str("Grüße € 𝄞 日本語 ");
    }
    let block = format!(
        ".leading dot\n..two dots\n.\n...\n. dot space\n{long_ascii}\nÄrger über Öl und ß\n\n.{long_utf8}\n{long_utf8}\nend of block\n"
    );
    let mut body = String::with_capacity(5 * 1024 * 1024 + block.len());
    while body.len() < 5 * 1024 * 1024 {
        body.push_str(&block);
    }
    body.push_str(".\n");
    body
}

#[test]
fn lettre_five_mib_body_with_dots_long_lines_and_utf8_arrives_byte_identical() {
    let srv = Server::start();
    let text = big_body();
    assert!(text.len() >= 5 * 1024 * 1024);
    let body = Body::new_with_encoding(text.clone(), ContentTransferEncoding::Binary)
        .unwrap_or_else(|_| panic!("lettre refuses the body"));
    let email = Message::builder()
        .from("big@remote.example".parse().unwrap())
        .to("alice@test.example".parse().unwrap())
        .subject("five mebibytes")
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .unwrap();
    transport(&srv, "lettre.client.example")
        .send(&email)
        .expect("lettre sends 5 MiB");

    let msgs = srv.messages("alice");
    assert_eq!(msgs.len(), 1);
    let raw = &msgs[0];
    check_trace(
        raw,
        &Trace {
            reverse: "big@remote.example",
            rcpt: "alice@test.example",
            helo: "lettre.client.example",
            protocol: "ESMTP",
            for_rcpt: Some("alice@test.example"),
        },
    );
    // The raw stored body is the text as given (it had LF line ends), plus
    // the empty line that lettre's framing adds after a final line end.
    let want = format!("{text}\n");
    assert_bytes_eq(stored_body(raw), want.as_bytes(), "raw stored body");
    // And the whole message is what lettre sent, with LF line ends.
    assert_bytes_eq(
        after_trace(raw),
        &lettre_stored_form(&email),
        "stored message",
    );
    // mail-parser finds the same body.
    let p = Parsed::new(raw.clone());
    assert_eq!(p.subject().as_deref(), Some("five mebibytes"));
    assert_bytes_eq(&p.body(), want.as_bytes(), "body by mail-parser");
}

#[test]
fn lettre_sends_several_messages_over_one_connection() {
    // The `pool` feature of lettre is not enabled in Cargo.toml, so
    // `SmtpTransport` would open a connection per message; lettre's own
    // connection type, which the pool is built on, keeps one open.
    let srv = Server::start();
    let mut conn = SmtpConnection::connect(
        srv.addr,
        Some(Duration::from_secs(20)),
        &ClientId::Domain("pool.client.example".into()),
        None,
        None,
    )
    .expect("lettre connects");
    let mut ids = BTreeMap::new();
    for i in 0..5 {
        let email = Message::builder()
            .from("batch@remote.example".parse().unwrap())
            .to("alice@test.example".parse().unwrap())
            .subject(format!("batch {i}"))
            .body(format!("message number {i}\n"))
            .unwrap();
        let resp = conn
            .send(email.envelope(), &email.formatted())
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert!(resp.is_positive(), "{resp:?}");
        let text: Vec<&str> = resp.message().collect();
        ids.insert(format!("batch {i}"), queued_id(&text.join(" ")));
    }
    conn.quit().expect("QUIT");

    let msgs = by_subject(&srv, "alice");
    assert_eq!(
        msgs.keys().collect::<Vec<_>>(),
        ids.keys().collect::<Vec<_>>()
    );
    for (subject, raw) in &msgs {
        let id = check_trace(
            raw,
            &Trace {
                reverse: "batch@remote.example",
                rcpt: "alice@test.example",
                helo: "pool.client.example",
                protocol: "ESMTP",
                for_rcpt: Some("alice@test.example"),
            },
        );
        assert_eq!(id, ids[subject], "{subject}");
        let n = subject.strip_prefix("batch ").unwrap();
        assert_eq!(
            parse(raw).body_text(0).unwrap().replace("\r\n", "\n"),
            format!("message number {n}\n\n")
        );
    }
    // One connection carried all five.
    assert!(srv.wait_log("disconnect from"), "{}", srv.log());
    let log = srv.log();
    assert_eq!(log.matches(" connect from ").count(), 1, "{log}");
}

// ---------------------------------------------------------------------------
// Python smtplib, read back with Python's mailbox and email modules

const PYTHON_SCRIPT: &str = r#"
import sys, smtplib, mailbox, email, email.policy, email.utils, datetime, re
from email.message import EmailMessage

port = int(sys.argv[1])
alice = sys.argv[2]

def check(cond, what, detail=""):
    if not cond:
        print("FAILED:", what, detail)
        sys.exit(1)
    print("ok:", what)

with smtplib.SMTP("127.0.0.1", port, local_hostname="py.client.example", timeout=20) as s:
    code, _ = s.ehlo()
    check(code == 250, "EHLO 250", code)
    check(not s.has_extn("starttls"), "STARTTLS is not offered")
    for ext in ("pipelining", "8bitmime", "smtputf8", "size"):
        check(s.has_extn(ext), "EHLO offers " + ext)

    # sendmail() with a str: smtplib makes the LFs CRLF and doubles leading dots.
    text = ("From: Py <py@remote.example>\nTo: alice@test.example\n"
            "Subject: smtplib sendmail\n\nline one\n.dot line\n.\nlast\n")
    check(s.sendmail("py@remote.example", ["alice@test.example"], text) == {},
          "sendmail to alice accepted")

    # SMTPUTF8 and a UTF-8 local part that has no mailbox: 550.
    try:
        s.sendmail("py@remote.example", ["jörg@test.example"],
                   b"Subject: x\r\n\r\nx\r\n", mail_options=["SMTPUTF8"])
        check(False, "UTF-8 recipient refused")
    except smtplib.SMTPRecipientsRefused as e:
        code, msg = e.recipients["jörg@test.example"]
        check(code == 550, "SMTPUTF8 + unknown UTF-8 local part: 550", (code, msg))

    # Without SMTPUTF8 the UTF-8 address itself is refused: 553 5.6.7.
    s.command_encoding = "utf-8"
    code, msg = s.mail("py@remote.example")
    check(code == 250, "MAIL without SMTPUTF8", (code, msg))
    code, msg = s.rcpt("jörg@test.example")
    check(code == 553 and msg.startswith(b"5.6.7"),
          "UTF-8 RCPT without SMTPUTF8: 553 5.6.7", (code, msg))
    s.rset()
    # And an unknown ASCII user, no SMTPUTF8: 550.
    try:
        s.sendmail("py@remote.example", ["nobody@test.example"], b"Subject: x\r\n\r\nx\r\n")
        check(False, "unknown recipient refused")
    except smtplib.SMTPRecipientsRefused as e:
        check(e.recipients["nobody@test.example"][0] == 550, "ASCII unknown user: 550",
              e.recipients)

    m = EmailMessage()
    m["From"] = "Py <py@remote.example>"
    m["To"] = "alice@test.example"
    m["Subject"] = "smtplib send_message Grüße"
    m.set_content("Grüße aus Python\n.a dot line\n")
    check(s.send_message(m) == {}, "send_message accepted")

    # An UTF-8 sender address: send_message() adds SMTPUTF8 by itself.
    m = EmailMessage()
    m["From"] = "Jörg <jörg@remote.example>"
    m["To"] = "alice@test.example"
    m["Subject"] = "smtplib international"
    m.set_content("from an UTF-8 address\n")
    check(s.send_message(m) == {}, "send_message from an UTF-8 address accepted")

md = mailbox.Maildir(alice, factory=None, create=False)
keys = list(md.keys())
check(len(keys) == 3, "three messages in alice's Maildir", len(keys))
now = datetime.datetime.now(datetime.timezone.utc)
seen = {}
for key in keys:
    mm = md[key]
    check(isinstance(mm, mailbox.MaildirMessage) and mm.get_subdir() == "new",
          "a MaildirMessage in new/")
    check(mm["Return-Path"] is not None and len(mm.get_all("Received")) == 1,
          "the mailbox parser sees Return-Path and one Received")
    p = email.message_from_bytes(md.get_bytes(key), policy=email.policy.default)
    check(not p.defects, "no parser defects", p.defects)
    subject = str(p["Subject"])
    seen[subject] = p
    rcv = p.get_all("Received")
    check(len(rcv) == 1, "one Received in " + subject, rcv)
    r = str(rcv[0])
    check(re.fullmatch(r"from py\.client\.example \(unknown \[127\.0\.0\.1\]\)\s+"
                       r"by mx\.test\.example \(mailroom\) with (ESMTP|UTF8SMTP) "
                       r"id [0-9A-F]{18}\s+for <alice@test\.example>;\s+\S.*", r, re.S),
          "Received of " + subject, repr(r))
    when = email.utils.parsedate_to_datetime(r.rsplit(";", 1)[1].strip())
    check(when.tzinfo is not None and abs((now - when).total_seconds()) < 300,
          "the Received date parses and is now", when)
    check(p["Delivered-To"] == "alice@test.example", "Delivered-To", p["Delivered-To"])
    check(list(p.keys())[:3] == ["Return-Path", "Delivered-To", "Received"],
          "trace fields first", p.keys())

check(sorted(seen) == sorted(["smtplib sendmail", "smtplib send_message Grüße",
                              "smtplib international"]), "subjects", sorted(seen))
a = seen["smtplib sendmail"]
check(a["Return-Path"] == "<py@remote.example>", "Return-Path", a["Return-Path"])
check(" with ESMTP id " in str(a["Received"]), "with ESMTP", str(a["Received"]))
check(a.get_content() == "line one\n.dot line\n.\nlast\n", "dots unstuffed",
      repr(a.get_content()))
b = seen["smtplib send_message Grüße"]
check(b.get_content() == "Grüße aus Python\n.a dot line\n", "send_message body",
      repr(b.get_content()))
c = seen["smtplib international"]
check(c["Return-Path"] == "<jörg@remote.example>", "UTF-8 Return-Path", c["Return-Path"])
check(" with UTF8SMTP id " in str(c["Received"]), "with UTF8SMTP", str(c["Received"]))
print("ALL OK")
"#;

#[test]
fn python_smtplib_sendmail_send_message_and_mailbox_reader() {
    if !tool("python3") {
        return;
    }
    let srv = Server::start();
    let out = run_ok(
        "python3 smtplib script",
        Command::new("python3")
            .arg("-c")
            .arg(PYTHON_SCRIPT)
            .arg(srv.addr.port().to_string())
            .arg(srv.maildir("alice"))
            .env("PYTHONIOENCODING", "utf-8"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.trim_end().ends_with("ALL OK"),
        "the script did not finish:\n{stdout}"
    );

    // The same three messages through mail-parser.
    let msgs = by_subject(&srv, "alice");
    assert_eq!(
        msgs.keys().collect::<Vec<_>>(),
        [
            "smtplib international",
            "smtplib send_message Grüße",
            "smtplib sendmail"
        ]
    );
    let plain = &msgs["smtplib sendmail"];
    check_trace(
        plain,
        &Trace {
            reverse: "py@remote.example",
            rcpt: "alice@test.example",
            helo: "py.client.example",
            protocol: "ESMTP",
            for_rcpt: Some("alice@test.example"),
        },
    );
    assert_eq!(stored_body(plain), b"line one\n.dot line\n.\nlast\n");
    check_trace(
        &msgs["smtplib international"],
        &Trace {
            reverse: "jörg@remote.example",
            rcpt: "alice@test.example",
            helo: "py.client.example",
            protocol: "UTF8SMTP",
            for_rcpt: Some("alice@test.example"),
        },
    );
    assert_eq!(
        parse(&msgs["smtplib send_message Grüße"])
            .body_text(0)
            .unwrap()
            .replace("\r\n", "\n"),
        "Grüße aus Python\n.a dot line\n"
    );
    assert!(srv.messages("bob").is_empty());
}

// ---------------------------------------------------------------------------
// swaks

fn swaks(srv: &Server, args: &[&str]) -> String {
    let server = srv.addr.to_string();
    let mut cmd = Command::new("swaks");
    cmd.args(["--server", &server])
        .args(["--to", "alice@test.example", "--from", "x@remote.example"])
        .args(["--helo", "swaks.client.example", "--timeout", "20"])
        .args(args);
    let out = run_ok(&format!("swaks {args:?}"), &mut cmd);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn swaks_plain_pipelined_dot_stuffed_and_helo() {
    if !tool("swaks") {
        return;
    }
    let srv = Server::start();
    swaks(
        &srv,
        &[
            "--header",
            "Subject: swaks plain",
            "--body",
            "swaks body one",
        ],
    );
    let piped = swaks(
        &srv,
        &[
            "--pipeline",
            "--header",
            "Subject: swaks pipelined",
            "--body",
            "swaks body two",
        ],
    );
    // The transcript shows MAIL, RCPT and DATA sent in one go.
    assert!(
        piped.contains(
            " -> MAIL FROM:<x@remote.example>\n -> RCPT TO:<alice@test.example>\n -> DATA\n"
        ),
        "swaks did not pipeline:\n{piped}"
    );
    let data = "Subject: swaks data\n\nbefore\n.\n..two\n.lead\nafter\n";
    let dotted = swaks(&srv, &["--protocol", "ESMTP", "--data", data]);
    // swaks doubled the leading dots on the wire.
    // (its transcript shows the data lines with their CRLF).
    for line in ["\n -> ..\r\n", "\n -> ...two\r\n", "\n -> ..lead\r\n"] {
        assert!(dotted.contains(line), "{line:?} not sent:\n{dotted}");
    }
    swaks(
        &srv,
        &[
            "--protocol",
            "SMTP",
            "--header",
            "Subject: swaks helo",
            "--body",
            "swaks body three",
        ],
    );

    let msgs = by_subject(&srv, "alice");
    assert_eq!(
        msgs.keys().collect::<Vec<_>>(),
        ["swaks data", "swaks helo", "swaks pipelined", "swaks plain"]
    );
    for (subject, raw) in &msgs {
        check_trace(
            raw,
            &Trace {
                reverse: "x@remote.example",
                rcpt: "alice@test.example",
                helo: "swaks.client.example",
                protocol: if subject == "swaks helo" {
                    "SMTP"
                } else {
                    "ESMTP"
                },
                for_rcpt: Some("alice@test.example"),
            },
        );
    }
    let body = |s: &str| {
        String::from_utf8(stored_body(&msgs[s]).to_vec())
            .unwrap()
            .trim_end_matches('\n')
            .to_string()
    };
    assert_eq!(body("swaks plain"), "swaks body one");
    assert_eq!(body("swaks pipelined"), "swaks body two");
    assert_eq!(body("swaks helo"), "swaks body three");
    // The dots are back as they were; swaks adds an empty last line.
    assert_eq!(body("swaks data"), "before\n.\n..two\n.lead\nafter");
    assert!(stored_body(&msgs["swaks data"]).starts_with(b"before\n.\n..two\n.lead\nafter\n"));
}

// ---------------------------------------------------------------------------
// curl

fn curl(srv: &Server, file: &Path, extra: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg("--url")
        // The path is the EHLO name.
        .arg(format!("smtp://{}/curl.client.example", srv.addr))
        .args(["--mail-from", "c@remote.example"])
        .args(["--mail-rcpt", "alice@test.example"])
        .arg("--upload-file")
        .arg(file)
        .args(extra)
        .output()
        .expect("run curl")
}

#[test]
fn curl_uploads_crlf_files_and_lf_files_with_crlf_option() {
    if !tool("curl") {
        return;
    }
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let body = "line\n.dot\n.\n..two\nGrüße\nend\n";
    let message = |subject: &str| {
        format!("From: c@remote.example\nTo: alice@test.example\nSubject: {subject}\n\n{body}")
    };
    let crlf = dir.path().join("crlf.eml");
    std::fs::write(&crlf, message("curl crlf").replace('\n', "\r\n")).unwrap();
    let lf = dir.path().join("lf.eml");
    std::fs::write(&lf, message("curl lf")).unwrap();

    for (file, extra) in [(&crlf, &[][..]), (&lf, &["--crlf"][..])] {
        let out = curl(&srv, file, extra);
        assert!(
            out.status.success(),
            "curl {} {extra:?}: {}\n{}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let msgs = by_subject(&srv, "alice");
    assert_eq!(msgs.keys().collect::<Vec<_>>(), ["curl crlf", "curl lf"]);
    for raw in msgs.values() {
        check_trace(
            raw,
            &Trace {
                reverse: "c@remote.example",
                rcpt: "alice@test.example",
                helo: "curl.client.example",
                protocol: "ESMTP",
                for_rcpt: Some("alice@test.example"),
            },
        );
        assert_bytes_eq(stored_body(raw), body.as_bytes(), "curl body");
    }

    // Without --crlf, curl sends the file's bare LFs as they are and
    // dot-stuffs only after CRLF. Under the default bare_newline =
    // "normalize" the body is stored as sent: dots untouched, plus the
    // empty line that curl's closing CRLF.CRLF makes after the final LF.
    let bare = dir.path().join("bare.eml");
    std::fs::write(&bare, message("curl bare lf")).unwrap();
    let out = curl(&srv, &bare, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = by_subject(&srv, "alice");
    assert_bytes_eq(
        stored_body(&msgs["curl bare lf"]),
        format!("{body}\n").as_bytes(),
        "curl bare-LF body",
    );

    // Under bare_newline = "reject" the same upload is refused (550 5.5.2,
    // curl exits non-zero) and nothing is stored.
    let strict = Server::start_with("bare_newline = \"reject\"", "", "");
    let out = curl(&strict, &bare, &[]);
    assert!(
        !out.status.success(),
        "a bare-LF upload was accepted under reject"
    );
    assert!(
        by_subject(&strict, "alice").is_empty(),
        "a refused message was stored"
    );
    assert!(
        strict.wait_log("message refused: bare CR or LF"),
        "curl failed for another reason: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        strict.log()
    );
}

// ---------------------------------------------------------------------------
// The raw client: the Received protocol keyword, null path, dates

#[test]
fn raw_client_received_protocols_null_path_and_date() {
    let srv = Server::start();

    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    c.expect("HELO old.client.example", 250);
    let r = c.send_mail(
        "sender@remote.example",
        &["alice@test.example"],
        "Subject: after helo\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    let helo_id = queued_id(&r.text());
    c.expect("QUIT", 221);

    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "sender@remote.example",
        &["alice@test.example"],
        "Subject: after ehlo\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    let ehlo_id = queued_id(&r.text());
    c.expect("MAIL FROM:<x@remote.example> SMTPUTF8", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("DATA", 354);
    c.send("Subject: smtputf8\r\n\r\nÜber\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    let utf8_id = queued_id(&r.text());
    let r = c.send_mail("", &["alice@test.example"], "Subject: bounce\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    let null_id = queued_id(&r.text());
    c.expect("QUIT", 221);

    let msgs = by_subject(&srv, "alice");
    assert_eq!(msgs.len(), 4);
    let cases = [
        (
            "after helo",
            "old.client.example",
            "SMTP",
            "sender@remote.example",
            &helo_id,
        ),
        (
            "after ehlo",
            "client.test.example",
            "ESMTP",
            "sender@remote.example",
            &ehlo_id,
        ),
        (
            "smtputf8",
            "client.test.example",
            "UTF8SMTP",
            "x@remote.example",
            &utf8_id,
        ),
        ("bounce", "client.test.example", "ESMTP", "", &null_id),
    ];
    for (subject, helo, protocol, reverse, id) in cases {
        let raw = &msgs[subject];
        let got = check_trace(
            raw,
            &Trace {
                reverse,
                rcpt: "alice@test.example",
                helo,
                protocol,
                for_rcpt: Some("alice@test.example"),
            },
        );
        assert_eq!(&got, id, "{subject}");
    }
    let bounce = Parsed::new(msgs["bounce"].clone());
    assert_eq!(bounce.header("Return-Path").as_deref(), Some("<>"));
    assert!(msgs["bounce"].starts_with(b"Return-Path: <>\n"));
    assert_eq!(stored_body(&msgs["smtputf8"]), "Über\n".as_bytes());
}
