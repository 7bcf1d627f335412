//! The relay against a real loopback peer: mail handed in with the
//! sendmail command leaves through the `[relay]` smarthost, here the test
//! sink `tests/support/smarthost.py`, which records what it was sent.
//! Deferrals and retries (4xx, timeouts, a hung peer), bounces (5xx,
//! 8BITMIME, SIZE), STARTTLS, implicit TLS and AUTH with a test CA, no
//! downgrade, the password file's mode, connection reuse, and DSN
//! parameters passed on.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::pki::{make_pki_for, Pki};
use support::smarthost::{Relayed, Smarthost};
use support::*;

/// The sink and the DSN reader are Python: without python3 a test is
/// skipped (and fails under CI, which installs it).
macro_rules! needs_python {
    () => {
        if !tool("python3") {
            return;
        }
    };
}

/// The bound on every wait for something that should happen.
const T: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------
// Configuration and commands
// ---------------------------------------------------------------------

/// A `[relay]` table for the sink on `port`: in the clear, with short
/// timeouts; `keys` (raw TOML values) replace or add keys.
fn relay_table(port: u16, keys: &[(&str, &str)]) -> String {
    let port = port.to_string();
    let mut all: Vec<(&str, &str)> = vec![
        ("host", "\"127.0.0.1\""),
        ("port", &port),
        ("tls", "\"none\""),
        ("connect_timeout", "5"),
        ("command_timeout", "5"),
        ("data_timeout", "5"),
        ("dot_timeout", "5"),
    ];
    for &(k, v) in keys {
        match all.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => all.push((k, v)),
        }
    }
    let mut out = String::from("[relay]\n");
    for (k, v) in all {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

/// Retries an hour apart unless a test says otherwise: retries come from
/// `queue flush`, never from a timer racing the test.
const SLOW_RETRIES: &str = "retry_first = 3600\nretry_max = 3600\n";

/// The test configuration: the base one with a queue of its own, the
/// `[queue]` keys given and `relay` (a whole table) if any.
fn config_text(dir: &Path, relay: Option<&str>, queue: &str) -> String {
    // The base configuration may come to name a queue itself; a key
    // given twice would make the file invalid.
    let top = if base_config(dir, "", "", "").contains("queue_dir") {
        String::new()
    } else {
        format!("queue_dir = \"{}/queue\"", dir.display())
    };
    let tables = format!("[queue]\n{queue}\n{}", relay.unwrap_or(""));
    base_config(dir, &top, "", &tables)
}

fn start(relay: Option<&str>, queue: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), relay, queue);
    Server::start_config(dir, &text)
}

/// A server relaying to `sink` with these `[relay]` keys.
fn start_relaying(sink: &Smarthost, keys: &[(&str, &str)]) -> Server {
    start(Some(&relay_table(sink.port, keys)), SLOW_RETRIES)
}

/// Runs `program args` in `dir` with `input` on its standard input, to
/// its end (bounded: killed and failed past 20 s).
fn run_with_input(program: &str, args: &[&str], dir: &Path, input: &[u8]) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    run_command(&mut cmd, input)
}

/// `mailroom sendmail -C CONFIG args < input`.
fn sendmail(server: &Server, args: &[&str], input: &str) -> Run {
    let config = server.config_path.to_str().unwrap();
    let mut all = vec!["sendmail", "-C", config];
    all.extend_from_slice(args);
    run_with_input(BIN, &all, server.dir.path(), input.as_bytes())
}

/// `sendmail` that must succeed.
fn send(server: &Server, args: &[&str], input: &str) {
    let r = sendmail(server, args, input);
    assert_eq!(
        r.code,
        Some(0),
        "sendmail {args:?} failed: {}{}",
        r.stdout,
        r.stderr
    );
}

/// `mailroom mailq -C CONFIG`.
fn mailq(server: &Server) -> String {
    let config = server.config_path.to_str().unwrap();
    let r = run_with_input(BIN, &["mailq", "-C", config], server.dir.path(), b"");
    assert_eq!(r.code, Some(0), "mailq failed: {}", r.stderr);
    r.stdout
}

/// `mailroom queue -C CONFIG flush`.
fn flush(server: &Server) {
    let config = server.config_path.to_str().unwrap();
    let r = run_with_input(
        BIN,
        &["queue", "-C", config, "flush"],
        server.dir.path(),
        b"",
    );
    assert_eq!(r.code, Some(0), "queue flush failed: {}", r.stderr);
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `mailq` shows `needle`; the listing.
fn wait_mailq(server: &Server, needle: &str) -> String {
    let mut last = String::new();
    let ok = wait_until(T, || {
        last = mailq(server);
        last.contains(needle)
    });
    assert!(
        ok,
        "mailq never showed {needle:?}; it shows:\n{last}\nserver log:\n{}",
        server.log()
    );
    last
}

fn wait_queue_empty(server: &Server) {
    wait_mailq(server, "Mail queue is empty");
}

/// Waits until `user`'s Maildir has `n` messages; what it has.
fn wait_maildir(server: &Server, user: &str, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    wait_until(T, || {
        got = server.messages(user);
        got.len() >= n
    });
    assert_eq!(
        got.len(),
        n,
        "{user} should have {n} messages; server log:\n{}",
        server.log()
    );
    got
}

/// Waits for `n` relayed messages, and checks that no more come.
fn relayed(sink: &Smarthost, server: &Server, n: usize) -> Vec<Relayed> {
    let got = sink.wait_for(n, T);
    assert!(
        got.len() >= n,
        "the sink has {} messages, not {n}; transcript:\n{}\nserver log:\n{}",
        got.len(),
        sink.transcript(),
        server.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let got = sink.messages();
    assert_eq!(
        got.len(),
        n,
        "more messages than expected; transcript:\n{}",
        sink.transcript()
    );
    got
}

/// What every test ends with: the sink saw no protocol violation and
/// did not fail itself.
fn sink_clean(sink: &Smarthost) {
    let t = sink.transcript();
    assert!(!t.contains("VIOLATION"), "the client broke a rule:\n{t}");
    assert!(
        sink.stderr().is_empty(),
        "smarthost.py failed:\n{}",
        sink.stderr()
    );
}

/// The login name of whoever runs the tests: the sender of their mail.
fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid{}", nix::unistd::getuid()))
}

/// The commands of the transcript, upper-cased verbs first word only.
fn verbs(sink: &Smarthost) -> Vec<(u32, String)> {
    sink.commands()
        .into_iter()
        .map(|(n, c)| (n, c.split(' ').next().unwrap_or("").to_ascii_uppercase()))
        .collect()
}

// ---------------------------------------------------------------------
// Delivery status notifications, read with Python's email package
// ---------------------------------------------------------------------

const DSN_READER: &str = r#"
import sys, email, email.parser
m = email.message_from_bytes(sys.stdin.buffer.read())
print("content-type\t" + m.get_content_type())
print("report-type\t" + str(m.get_param("report-type")))
print("to\t" + str(m["To"]))
print("from\t" + str(m["From"]))
print("parts\t" + " ".join(p.get_content_type() for p in m.walk()))
for part in m.walk():
    if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
        blocks = part.get_payload()
        if part.get_content_type() == "message/global-delivery-status":
            # Read as one message (RFC 6533 is not known to the email
            # package): its text holds the blocks.
            text = blocks[0].as_string() if isinstance(blocks, list) else blocks
            parser = email.parser.HeaderParser()
            blocks = [parser.parsestr(b.strip() + "\n")
                      for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
        for b in blocks[1:]:
            print("rcpt\t" + "\t".join(
                str(b.get(k, "")).strip()
                for k in ("Final-Recipient", "Action", "Status", "Diagnostic-Code")))
"#;

struct Report {
    content_type: String,
    report_type: String,
    to: String,
    parts: String,
    /// Final-Recipient, Action, Status, Diagnostic-Code.
    rcpts: Vec<[String; 4]>,
}

fn read_report(raw: &[u8]) -> Report {
    let r = run_with_input("python3", &["-c", DSN_READER], Path::new("/"), raw);
    assert_eq!(r.code, Some(0), "the DSN reader failed: {}", r.stderr);
    let mut rep = Report {
        content_type: String::new(),
        report_type: String::new(),
        to: String::new(),
        parts: String::new(),
        rcpts: Vec::new(),
    };
    for line in r.stdout.lines() {
        let (k, v) = line.split_once('\t').unwrap();
        match k {
            "content-type" => rep.content_type = v.into(),
            "report-type" => rep.report_type = v.into(),
            "to" => rep.to = v.into(),
            "parts" => rep.parts = v.into(),
            "rcpt" => {
                let f: Vec<String> = v.split('\t').map(str::to_string).collect();
                rep.rcpts
                    .push([f[0].clone(), f[1].clone(), f[2].clone(), f[3].clone()]);
            }
            _ => {}
        }
    }
    rep
}

/// Checks that `raw` is a failure report on exactly `rcpt`, with a
/// status of `status` (a prefix such as "5." or a whole "5.6.3").
fn assert_bounce(raw: &[u8], to: &str, rcpt: &str, status: &str) -> Report {
    let rep = read_report(raw);
    let text = String::from_utf8_lossy(raw);
    assert_eq!(rep.content_type, "multipart/report", "{text}");
    assert_eq!(rep.report_type, "delivery-status", "{text}");
    assert!(rep.to.contains(to), "To: {} in\n{text}", rep.to);
    assert!(rep.parts.contains("delivery-status"), "{text}");
    assert_eq!(rep.rcpts.len(), 1, "one failed recipient in\n{text}");
    let [final_rcpt, action, got, _] = &rep.rcpts[0];
    // `rfc822; address`, or `utf-8; address` in a global report.
    let (kind, address) = final_rcpt.split_once(';').unwrap_or_default();
    assert!(kind == "rfc822" || kind == "utf-8", "{text}");
    assert_eq!(address.trim(), rcpt, "{text}");
    assert_eq!(action, "failed", "{text}");
    assert!(
        got.starts_with(status),
        "Status {got}, not {status}: {text}"
    );
    rep
}

// ---------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------

/// A test CA and a leaf it signed for `names`; PEM files in `dir`.
fn make_pki(dir: &Path, tag: &str, names: &[&str]) -> Pki {
    make_pki_for(dir, tag, names, &format!("smarthost {tag}"))
}

/// A self-signed certificate for `names` (no CA anyone trusts).
fn self_signed(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.join("self-cert.pem"), dir.join("self-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn password_file(dir: &Path, password: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("relay-password");
    std::fs::write(&p, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn toml_path(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

// ---------------------------------------------------------------------
// 1, 2: mail leaves through the smarthost
// ---------------------------------------------------------------------

#[test]
fn remote_mail_leaves_through_the_smarthost_once() {
    needs_python!();
    let sink = Smarthost::start(&["--size", "10000000"]);
    let server = start_relaying(&sink, &[]);
    let body = "hi there\n.leading dot\n..two dots\n.\nlast line\n";
    send(
        &server,
        &["-t", "-i"],
        &format!("To: someone@remote.example\nSubject: relay test\n\n{body}"),
    );
    let got = relayed(&sink, &server, 1);
    let m = &got[0];
    assert_eq!(m.mail_from(), format!("{}@test.example", me()));
    assert_eq!(m.rcpt_addresses(), ["someone@remote.example"]);
    assert!(!m.tls() && m.auth().is_none(), "{}", m.envelope);
    assert_eq!(m.value("data-bare-lf"), "no", "DATA is sent with CRLF only");
    assert_eq!(m.value("helo"), "mx.test.example");
    assert!(
        m.mail_params().iter().any(|p| p
            .strip_prefix("SIZE=")
            .is_some_and(|n| n.parse::<u64>().is_ok())),
        "SIZE is declared when offered: {:?}",
        m.mail_params()
    );
    let parsed = Parsed::new(m.data_lf());
    assert_eq!(parsed.subject().as_deref(), Some("relay test"));
    for h in ["From", "Date", "Message-ID", "To"] {
        assert!(parsed.header(h).is_some(), "no {h}: in {:?}", m.data);
    }
    assert!(parsed.header("From").unwrap().contains(&me()));
    assert_eq!(String::from_utf8(parsed.body()).unwrap(), body);
    wait_queue_empty(&server);
    assert!(
        server.wait_log("done, removed from the queue"),
        "{}",
        server.log()
    );
    // The connection was ended politely once nothing else was due.
    assert!(sink.wait_transcript("C: QUIT", T), "{}", sink.transcript());
    assert_eq!(sink.messages().len(), 1);
    sink_clean(&sink);
}

#[test]
fn local_and_remote_recipients_of_one_message() {
    needs_python!();
    let sink = Smarthost::start(&[]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &[
            "-i",
            "alice",
            "someone@remote.example",
            "other@remote.example",
        ],
        "Subject: both ways\n\nto alice and to remote.example\n",
    );
    let got = relayed(&sink, &server, 1);
    let mut rcpts = got[0].rcpt_addresses();
    rcpts.sort();
    assert_eq!(rcpts, ["other@remote.example", "someone@remote.example"]);
    let local = wait_maildir(&server, "alice", 1);
    let p = Parsed::new(local[0].clone());
    assert_eq!(p.subject().as_deref(), Some("both ways"));
    assert_eq!(
        Parsed::new(got[0].data_lf()).body(),
        b"to alice and to remote.example\n"
    );
    wait_queue_empty(&server);
    assert_eq!(server.messages("alice").len(), 1);
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// 3: 4xx defers, and the retry relays it once
// ---------------------------------------------------------------------

#[test]
fn a_451_defers_the_recipient_and_a_flush_relays_it_once() {
    needs_python!();
    let sink = Smarthost::start(&[
        "--rcpt-reply",
        "later@remote.example=451",
        "--rcpt-temp-times",
        "1",
    ]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &["-i", "ok@remote.example", "later@remote.example"],
        "Subject: deferred in part\n\nbody\n",
    );
    let first = relayed(&sink, &server, 1);
    assert_eq!(first[0].rcpt_addresses(), ["ok@remote.example"]);
    // mailq names the waiting recipient with the relay's answer, and
    // not the one that has it.
    let q = wait_mailq(&server, "later@remote.example");
    assert!(q.contains("451"), "{q}");
    assert!(q.contains("4.3.0"), "{q}");
    assert!(!q.contains("ok@remote.example"), "{q}");
    assert!(q.contains("1 Request."), "{q}");
    flush(&server);
    let got = relayed(&sink, &server, 2);
    assert_eq!(got[1].rcpt_addresses(), ["later@remote.example"]);
    assert_eq!(got[0].data, got[1].data, "the same message both times");
    wait_queue_empty(&server);
    assert_eq!(sink.messages().len(), 2);
    sink_clean(&sink);
}

#[test]
fn the_retry_timer_relays_a_deferred_recipient_without_a_flush() {
    needs_python!();
    let sink = Smarthost::start(&[
        "--rcpt-reply",
        "later@remote.example=451",
        "--rcpt-temp-times",
        "1",
    ]);
    let server = start(
        Some(&relay_table(sink.port, &[])),
        "retry_first = 1\nretry_max = 2\n",
    );
    send(
        &server,
        &["-i", "later@remote.example"],
        "Subject: t\n\nx\n",
    );
    // The first attempt ends at RCPT (no recipient taken: no DATA); the
    // retry one second later has it.
    let got = relayed(&sink, &server, 1);
    assert_eq!(got[0].rcpt_addresses(), ["later@remote.example"]);
    let rcpts = sink
        .commands()
        .iter()
        .filter(|(_, c)| c.starts_with("RCPT TO:<later@"))
        .count();
    assert_eq!(rcpts, 2, "{}", sink.transcript());
    wait_queue_empty(&server);
    sink_clean(&sink);
}

#[test]
fn the_final_dot_answered_451_defers_and_the_retry_sends_it_once() {
    needs_python!();
    let sink = Smarthost::start(&["--dot-reply", "451", "--dot-reply-times", "1"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: t\n\nx\n",
    );
    let q = wait_mailq(&server, "451");
    assert!(q.contains("someone@remote.example"), "{q}");
    assert!(sink.messages().is_empty());
    flush(&server);
    relayed(&sink, &server, 1);
    wait_queue_empty(&server);
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// 4: 5xx bounces that recipient alone
// ---------------------------------------------------------------------

#[test]
fn a_550_for_one_recipient_of_two_bounces_it_alone() {
    needs_python!();
    let sink = Smarthost::start(&["--rcpt-reply", "bad@remote.example=550"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &[
            "-i",
            "-f",
            "alice@test.example",
            "good@remote.example",
            "bad@remote.example",
        ],
        "Subject: one of two\n\nbody\n",
    );
    let got = relayed(&sink, &server, 1);
    assert_eq!(got[0].rcpt_addresses(), ["good@remote.example"]);
    assert_eq!(got[0].mail_from(), "alice@test.example");
    let bounce = wait_maildir(&server, "alice", 1);
    let rep = assert_bounce(
        &bounce[0],
        "alice@test.example",
        "bad@remote.example",
        "5.1.1",
    );
    assert!(rep.rcpts[0][3].contains("550"), "{:?}", rep.rcpts[0]);
    let text = String::from_utf8_lossy(&bounce[0]);
    assert!(!text.contains("good@remote.example"), "{text}");
    assert!(
        text.contains("Subject: one of two"),
        "the header is returned"
    );
    wait_queue_empty(&server);
    sink_clean(&sink);
}

#[test]
fn the_final_dot_answered_554_bounces_every_recipient() {
    needs_python!();
    let sink = Smarthost::start(&["--dot-reply", "554"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        "Subject: refused\n\nbody\n",
    );
    let bounce = wait_maildir(&server, "alice", 1);
    assert_bounce(
        &bounce[0],
        "alice@test.example",
        "someone@remote.example",
        "5.7.1",
    );
    assert!(sink.messages().is_empty());
    wait_queue_empty(&server);
    sink_clean(&sink);
}

#[test]
fn rewrite_sender_is_for_local_mail_and_bounces_leave_with_the_null_sender() {
    needs_python!();
    let sink = Smarthost::start(&["--rcpt-reply", "bad@remote.example=550"]);
    let server = start_relaying(&sink, &[("rewrite_sender", "\"box@provider.example\"")]);
    // A local user's mail: the envelope sender is rewritten.
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: mine\n\nx\n",
    );
    let got = relayed(&sink, &server, 1);
    assert_eq!(got[0].mail_from(), "box@provider.example");
    // So is its From:, which named the local user; the rest is as it was.
    let text = String::from_utf8(got[0].data_lf()).unwrap();
    let header = text.split("\n\n").next().unwrap();
    let from: Vec<&str> = header.lines().filter(|l| l.starts_with("From:")).collect();
    assert_eq!(from.len(), 1, "{header}");
    assert!(from[0].ends_with("<box@provider.example>"), "{header}");
    assert!(header.contains("Subject: mine"), "{header}");
    assert!(text.ends_with("\n\nx\n"), "{text}");
    // A remote sender's is not; its bounce goes out with <>.
    send(
        &server,
        &["-i", "-f", "sender@elsewhere.example", "bad@remote.example"],
        "Subject: from afar\n\nx\n",
    );
    let got = relayed(&sink, &server, 2);
    assert_eq!(got[1].mail_from(), "", "a bounce has the null sender");
    assert_eq!(got[1].rcpt_addresses(), ["sender@elsewhere.example"]);
    assert_bounce(
        &got[1].data_lf(),
        "sender@elsewhere.example",
        "bad@remote.example",
        "5.1.1",
    );
    let mails: Vec<String> = sink
        .commands()
        .into_iter()
        .filter(|(_, c)| c.starts_with("MAIL FROM:"))
        .map(|(_, c)| c)
        .collect();
    assert!(
        mails
            .iter()
            .any(|c| c.starts_with("MAIL FROM:<sender@elsewhere.example>")),
        "{mails:?}"
    );
    wait_queue_empty(&server);
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// 5: a relay that hangs
// ---------------------------------------------------------------------

/// The sink hangs on its first connection at `point`; the relay's
/// timeouts are 2 s. The message is deferred with a timeout, local mail
/// still arrives meanwhile, and a flush sends it (the second connection
/// is served normally).
fn hung_relay_defers(point: &str, reason: &str) {
    let sink = Smarthost::start(&["--hang-after", point, "--hang-connections", "1"]);
    let two = [
        ("connect_timeout", "2"),
        ("command_timeout", "2"),
        ("data_timeout", "2"),
        ("dot_timeout", "2"),
    ];
    let server = start_relaying(&sink, &two);
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: far\n\nx\n",
    );
    assert!(
        sink.wait_transcript(&format!("hanging after {point}"), T),
        "{}",
        sink.transcript()
    );
    // While the relay hangs, SMTP sessions deliver at once. (Mail handed
    // to sendmail meanwhile: see the ignored tests below.)
    let mut c = server.connect().hello();
    let r = c.send_mail(
        "x@client.example",
        &["bob@test.example"],
        "Subject: meanwhile\r\n\r\nover SMTP\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(server.messages("bob").len(), 1);
    let q = wait_mailq(&server, "within 2 s");
    assert!(q.contains(reason), "{q}");
    // 4.4.2 (timeout), or 4.4.1 for any failure while connecting.
    assert!(q.contains("(4.4."), "{q}");
    assert!(q.contains("someone@remote.example"), "{q}");
    assert!(sink.messages().is_empty(), "nothing relayed while hung");
    flush(&server);
    let got = relayed(&sink, &server, 1);
    assert_eq!(got[0].connection(), 2);
    wait_queue_empty(&server);
    assert_eq!(sink.messages().len(), 1);
    sink_clean(&sink);
}

#[test]
fn a_relay_that_never_greets_defers_and_a_flush_delivers() {
    needs_python!();
    hung_relay_defers("CONNECT", "no reply from the relay after connecting");
}

#[test]
fn a_relay_that_hangs_after_data_defers_and_a_flush_delivers() {
    needs_python!();
    hung_relay_defers("DATA", "no reply from the relay after DATA");
}

#[test]
fn a_relay_that_never_answers_the_final_dot_defers_and_a_flush_delivers() {
    needs_python!();
    hung_relay_defers("DOT", "no reply from the relay after the message");
}

/// Mail handed to sendmail while the queue runner is busy with the relay
/// (here: a relay that hangs after DATA, 2 s timeouts) is delivered once
/// the runner is free again, not a minute later.
#[test]
fn mail_handed_in_while_the_runner_is_busy_is_picked_up_after_it() {
    needs_python!();
    let sink = Smarthost::start(&["--hang-after", "DATA", "--hang-connections", "1"]);
    let server = start_relaying(&sink, &[("command_timeout", "2"), ("data_timeout", "2")]);
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: far\n\nx\n",
    );
    assert!(
        sink.wait_transcript("hanging after DATA", T),
        "{}",
        sink.transcript()
    );
    send(&server, &["-i", "alice"], "Subject: meanwhile\n\nlocal\n");
    // The relay gives up after 2 s; alice's message is due right then.
    wait_maildir(&server, "alice", 1);
    sink_clean(&sink);
}

/// Queued local mail should not wait for the relay's timeouts: the hung
/// relay's command_timeout is 8 s here, and alice's message, handed in
/// while the relay hangs, should arrive well before that.
#[test]
fn queued_local_mail_is_not_held_up_by_a_hung_relay() {
    needs_python!();
    let sink = Smarthost::start(&["--hang-after", "EHLO", "--hang-seconds", "20"]);
    let server = start_relaying(&sink, &[("command_timeout", "8")]);
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: far\n\nx\n",
    );
    assert!(
        sink.wait_transcript("hanging after EHLO", T),
        "{}",
        sink.transcript()
    );
    let handed = Instant::now();
    send(&server, &["-i", "alice"], "Subject: near\n\nlocal\n");
    let arrived = wait_until(Duration::from_secs(4), || {
        !server.messages("alice").is_empty()
    });
    assert!(
        arrived,
        "alice's message was not delivered within 4 s while the relay hung ({:?} after it was handed in it is {}delivered); log:\n{}",
        handed.elapsed(),
        if server.messages("alice").is_empty() { "still not " } else { "" },
        server.log()
    );
}

#[test]
fn a_refused_connection_or_a_421_greeting_defers() {
    needs_python!();
    // A port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let server = start(Some(&relay_table(port, &[])), SLOW_RETRIES);
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: t\n\nx\n",
    );
    let q = wait_mailq(&server, "4.4.1");
    assert!(q.contains(&format!("connect to 127.0.0.1:{port}")), "{q}");
    assert!(server.messages("alice").is_empty());
    drop(server);

    let sink = Smarthost::start(&["--greeting", "421"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        "Subject: t\n\nx\n",
    );
    let q = wait_mailq(&server, "greeting: 421");
    assert!(q.contains("someone@remote.example"), "{q}");
    // A connection trouble defers; it never bounces.
    assert!(server.messages("alice").is_empty());
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// 6: STARTTLS, implicit TLS and AUTH with a test CA
// ---------------------------------------------------------------------

#[test]
fn starttls_and_auth_plain_with_a_test_ca() {
    needs_python!();
    let keys = tempfile::tempdir().unwrap();
    let pki = make_pki(keys.path(), "a", &["127.0.0.1"]);
    let password = "s3cret-Pw!";
    let pw = password_file(keys.path(), password, 0o600);
    let sink = Smarthost::start(&[
        "--cert",
        pki.cert.to_str().unwrap(),
        "--key",
        pki.key.to_str().unwrap(),
        "--auth",
        &format!("relayuser:{password}"),
        // AUTH offered in the clear too: the client must still wait.
        "--auth-in-clear",
        "--require-auth",
    ]);
    let server = start_relaying(
        &sink,
        &[
            ("tls", "\"starttls\""),
            ("ca_file", &toml_path(&pki.ca)),
            ("username", "\"relayuser\""),
            ("password_file", &toml_path(&pw)),
        ],
    );
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: secure\n\nx\n",
    );
    let got = relayed(&sink, &server, 1);
    assert!(got[0].tls(), "{}", got[0].envelope);
    assert_eq!(got[0].auth().as_deref(), Some("relayuser"));
    let t = sink.transcript();
    let at = |needle: &str| {
        t.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in\n{t}"))
    };
    assert!(at("C: STARTTLS") < at("* TLS established"));
    assert!(at("* TLS established") < at("C: AUTH "), "{t}");
    assert!(!t.contains("AUTH in the clear"), "{t}");
    assert!(t.contains("AUTH PLAIN succeeded for relayuser"), "{t}");
    // Two EHLOs: before and after the handshake.
    let ehlos = verbs(&sink).iter().filter(|(_, v)| v == "EHLO").count();
    assert_eq!(ehlos, 2, "{t}");
    assert!(!t.contains(password), "the password is never written");
    assert!(!server.log().contains(password), "nor logged");
    wait_queue_empty(&server);
    sink_clean(&sink);
}

#[test]
fn implicit_tls_and_auth_login_to_localhost() {
    needs_python!();
    if !localhost_is_loopback_v4() {
        eprintln!("skipped: localhost does not resolve to 127.0.0.1 here");
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let pki = make_pki(keys.path(), "b", &["localhost"]);
    let pw = password_file(keys.path(), "another secret", 0o600);
    let sink = Smarthost::start(&[
        "--implicit-tls",
        "--cert",
        pki.cert.to_str().unwrap(),
        "--key",
        pki.key.to_str().unwrap(),
        "--auth",
        "box@provider.example:another secret",
        "--auth-mechs",
        "LOGIN",
        "--require-auth",
    ]);
    let server = start_relaying(
        &sink,
        &[
            ("host", "\"localhost\""),
            ("tls", "\"tls\""),
            ("ca_file", &toml_path(&pki.ca)),
            ("username", "\"box@provider.example\""),
            ("password_file", &toml_path(&pw)),
        ],
    );
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: tls\n\nx\n",
    );
    let got = relayed(&sink, &server, 1);
    assert!(got[0].tls());
    assert_eq!(got[0].auth().as_deref(), Some("box@provider.example"));
    let t = sink.transcript();
    assert!(t.contains("AUTH LOGIN succeeded"), "{t}");
    assert!(!t.contains("another secret"), "{t}");
    wait_queue_empty(&server);
    sink_clean(&sink);
}

/// Whether `localhost` names 127.0.0.1 here (the sink listens there).
fn localhost_is_loopback_v4() -> bool {
    use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
    ("localhost", 25)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.any(|a| a.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST)))
}

#[test]
fn a_refused_login_defers_and_never_bounces() {
    needs_python!();
    let keys = tempfile::tempdir().unwrap();
    let pki = make_pki(keys.path(), "c", &["127.0.0.1"]);
    let pw = password_file(keys.path(), "wrong", 0o600);
    let sink = Smarthost::start(&[
        "--cert",
        pki.cert.to_str().unwrap(),
        "--key",
        pki.key.to_str().unwrap(),
        "--auth",
        "relayuser:right",
        "--require-auth",
    ]);
    let server = start_relaying(
        &sink,
        &[
            ("tls", "\"starttls\""),
            ("ca_file", &toml_path(&pki.ca)),
            ("username", "\"relayuser\""),
            ("password_file", &toml_path(&pw)),
        ],
    );
    send(
        &server,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        "Subject: t\n\nx\n",
    );
    let q = wait_mailq(&server, "login as relayuser");
    assert!(q.contains("535"), "{q}");
    assert!(sink.messages().is_empty());
    assert!(server.messages("alice").is_empty(), "no bounce for a login");
    assert!(
        !verbs(&sink).iter().any(|(_, v)| v == "MAIL"),
        "{}",
        sink.transcript()
    );
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// 7: no downgrade
// ---------------------------------------------------------------------

#[test]
fn starttls_required_and_not_offered_sends_nothing() {
    needs_python!();
    let keys = tempfile::tempdir().unwrap();
    let pki = make_pki(keys.path(), "d", &["127.0.0.1"]);
    let sink = Smarthost::start(&[
        "--cert",
        pki.cert.to_str().unwrap(),
        "--key",
        pki.key.to_str().unwrap(),
        "--no-starttls",
    ]);
    let server = start_relaying(
        &sink,
        &[("tls", "\"starttls\""), ("ca_file", &toml_path(&pki.ca))],
    );
    send(
        &server,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        "Subject: t\n\nx\n",
    );
    let q = wait_mailq(&server, "STARTTLS");
    assert!(q.contains("does not offer STARTTLS"), "{q}");
    assert!(q.contains("someone@remote.example"), "{q}");
    assert!(sink.messages().is_empty());
    let v = verbs(&sink);
    assert!(
        !v.iter()
            .any(|(_, c)| c == "MAIL" || c == "STARTTLS" || c == "AUTH"),
        "{}",
        sink.transcript()
    );
    assert!(server.messages("alice").is_empty(), "deferred, not bounced");
    sink_clean(&sink);
}

/// A sink with `cert`/`key` offering STARTTLS; the relay requires it
/// with `ca` (or the system's roots); nothing must be sent, and the
/// reason must be TLS.
fn unverified_certificate_sends_nothing(cert: &Path, key: &Path, host: &str, ca: Option<&Path>) {
    let sink = Smarthost::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let host = format!("\"{host}\"");
    let ca_value = ca.map(toml_path);
    let mut keys = vec![("tls", "\"starttls\""), ("host", host.as_str())];
    if let Some(ca) = &ca_value {
        keys.push(("ca_file", ca));
    }
    let server = start_relaying(&sink, &keys);
    send(
        &server,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        "Subject: t\n\nx\n",
    );
    let q = wait_mailq(&server, "TLS with");
    assert!(q.contains("invalid peer certificate"), "{q}");
    assert!(q.contains("someone@remote.example"), "{q}");
    assert!(sink.messages().is_empty());
    let v = verbs(&sink);
    assert!(!v.iter().any(|(_, c)| c == "MAIL"), "{}", sink.transcript());
    // The client gave up in the handshake.
    assert!(
        sink.wait_transcript("TLS handshake failed", T),
        "{}",
        sink.transcript()
    );
    assert!(server.messages("alice").is_empty(), "deferred, not bounced");
    sink_clean(&sink);
}

#[test]
fn a_self_signed_certificate_is_not_trusted_by_the_systems_roots() {
    needs_python!();
    if !Path::new("/etc/ssl/certs").is_dir() {
        // Without system roots the server refuses to start (no ca_file):
        // the other certificate tests cover verification.
        eprintln!("skipped: no system certificate roots in /etc/ssl/certs");
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(keys.path(), &["127.0.0.1"]);
    unverified_certificate_sends_nothing(&cert, &key, "127.0.0.1", None);
}

#[test]
fn a_certificate_from_another_ca_is_not_trusted() {
    needs_python!();
    let keys = tempfile::tempdir().unwrap();
    let theirs = make_pki(keys.path(), "e", &["127.0.0.1"]);
    let ours = make_pki(keys.path(), "f", &["127.0.0.1"]);
    unverified_certificate_sends_nothing(&theirs.cert, &theirs.key, "127.0.0.1", Some(&ours.ca));
}

#[test]
fn a_certificate_for_another_name_is_not_trusted() {
    needs_python!();
    let keys = tempfile::tempdir().unwrap();
    let pki = make_pki(keys.path(), "g", &["smtp.other.example"]);
    unverified_certificate_sends_nothing(&pki.cert, &pki.key, "127.0.0.1", Some(&pki.ca));
}

// ---------------------------------------------------------------------
// 8: the password file
// ---------------------------------------------------------------------

#[test]
fn a_password_file_others_may_read_is_refused() {
    needs_python!();
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().unwrap();
    let pki = make_pki(keys.path(), "h", &["127.0.0.1"]);
    let pw = password_file(keys.path(), "pw", 0o644);
    let sink = Smarthost::start(&[]);
    let relay = relay_table(
        sink.port,
        &[
            ("tls", "\"starttls\""),
            ("ca_file", &toml_path(&pki.ca)),
            ("username", "\"relayuser\""),
            ("password_file", &toml_path(&pw)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailroom.toml");
    std::fs::write(&config, config_text(dir.path(), Some(&relay), SLOW_RETRIES)).unwrap();

    let r = run_bin(
        &["--config".as_ref(), config.as_os_str()],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_eq!(r.code, Some(78), "{}", r.stderr);
    assert!(r.stderr.contains("password_file"), "{}", r.stderr);
    assert!(r.stderr.contains("read by others"), "{}", r.stderr);
    let c = check_config(dir.path(), &config);
    assert_eq!(c.code, Some(78), "{}{}", c.stdout, c.stderr);
    assert!(c.stderr.contains("password_file"), "{}", c.stderr);

    // Closed to others, it is taken; opened again, a reload refuses it
    // and the server keeps the configuration it has.
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = check_config(dir.path(), &config);
    assert_eq!(c.code, Some(0), "{}{}", c.stdout, c.stderr);
    let text = std::fs::read_to_string(&config).unwrap();
    let mut server = Server::start_config(dir, &text);
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o604)).unwrap();
    server.signal("HUP");
    assert!(server.wait_log("reload failed"), "{}", server.log());
    assert!(server.log().contains("password_file"), "{}", server.log());
    assert_eq!(
        server.wait_exit(Duration::from_millis(500)),
        None,
        "the server runs on"
    );
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// 9: local-only mode
// ---------------------------------------------------------------------

#[test]
fn without_a_relay_remote_recipients_are_refused_at_once() {
    let server = start(None, SLOW_RETRIES);
    let r = sendmail(
        &server,
        &["-i", "alice", "someone@remote.example"],
        "Subject: t\n\nx\n",
    );
    assert_eq!(r.code, Some(67), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("someone@remote.example"), "{}", r.stderr);
    assert!(
        r.stderr.contains("no [relay] is configured"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was sent"), "{}", r.stderr);
    // Nothing was queued, for anyone.
    assert!(mailq(&server).contains("Mail queue is empty"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.messages("alice").is_empty());
}

// ---------------------------------------------------------------------
// 10: what the relay cannot take bounces
// ---------------------------------------------------------------------

#[test]
fn eight_bit_mail_to_a_relay_without_8bitmime_bounces_with_5_6_3() {
    needs_python!();
    let sink = Smarthost::start(&["--no-8bitmime"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        "Subject: greetings\n\nGr\u{fc}\u{df}e aus K\u{f6}ln\n",
    );
    let bounce = wait_maildir(&server, "alice", 1);
    assert_bounce(
        &bounce[0],
        "alice@test.example",
        "someone@remote.example",
        "5.6.3",
    );
    assert!(sink.messages().is_empty());
    assert!(
        !verbs(&sink).iter().any(|(_, v)| v == "DATA"),
        "{}",
        sink.transcript()
    );
    wait_queue_empty(&server);
    // A 7-bit message still goes.
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: plain\n\nascii\n",
    );
    let got = relayed(&sink, &server, 1);
    assert!(!got[0].mail_params().iter().any(|p| p.contains("8BIT")));
    sink_clean(&sink);
}

#[test]
fn eight_bit_mail_is_declared_to_a_relay_with_8bitmime() {
    needs_python!();
    let sink = Smarthost::start(&[]);
    let server = start_relaying(&sink, &[]);
    let body = "Gr\u{fc}\u{df}e aus K\u{f6}ln\n";
    send(
        &server,
        &["-i", "someone@remote.example"],
        &format!("Subject: greetings\n\n{body}"),
    );
    let got = relayed(&sink, &server, 1);
    assert!(
        got[0].mail_params().iter().any(|p| p == "BODY=8BITMIME"),
        "{:?}",
        got[0].mail_params()
    );
    assert_eq!(Parsed::new(got[0].data_lf()).body(), body.as_bytes());
    wait_queue_empty(&server);
    sink_clean(&sink);
}

#[test]
fn a_message_larger_than_the_relays_size_bounces_with_5_3_4() {
    needs_python!();
    let sink = Smarthost::start(&["--size", "2000"]);
    let server = start_relaying(&sink, &[]);
    let big = "x".repeat(70) + "\n";
    send(
        &server,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        &format!("Subject: big\n\n{}", big.repeat(80)),
    );
    let bounce = wait_maildir(&server, "alice", 1);
    assert_bounce(
        &bounce[0],
        "alice@test.example",
        "someone@remote.example",
        "5.3.4",
    );
    assert!(sink.messages().is_empty());
    wait_queue_empty(&server);
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// 11: one connection for what is queued
// ---------------------------------------------------------------------

#[test]
fn messages_queued_while_the_daemon_was_down_share_one_connection() {
    needs_python!();
    let sink = Smarthost::start(&[]);
    let mut server = start_relaying(&sink, &[]);
    let text = std::fs::read_to_string(&server.config_path).unwrap();
    server.signal("TERM");
    assert!(
        server.wait_exit(Duration::from_secs(20)).is_some(),
        "{}",
        server.log()
    );
    // The daemon is down: sendmail drops the messages all the same.
    for n in 1..=3 {
        send(
            &server,
            &["-i", &format!("r{n}@remote.example")],
            &format!("Subject: queued {n}\n\nmessage {n}\n"),
        );
    }
    assert!(sink.messages().is_empty());
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let server = Server::start_config(dir, &text);
    let got = relayed(&sink, &server, 3);
    let mut subjects: Vec<String> = got
        .iter()
        .map(|m| Parsed::new(m.data_lf()).subject().unwrap())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["queued 1", "queued 2", "queued 3"]);
    assert!(got.iter().all(|m| m.connection() == 1), "one connection");
    wait_queue_empty(&server);
    assert!(sink.wait_transcript("C: QUIT", T));
    assert_eq!(sink.connections(), 1, "{}", sink.transcript());
    let v: Vec<String> = verbs(&sink).into_iter().map(|(_, v)| v).collect();
    assert_eq!(v.iter().filter(|c| *c == "EHLO").count(), 1, "{v:?}");
    assert_eq!(v.iter().filter(|c| *c == "RSET").count(), 2, "{v:?}");
    assert_eq!(v.iter().filter(|c| *c == "MAIL").count(), 3, "{v:?}");
    sink_clean(&sink);
}

#[test]
fn without_pipelining_each_command_waits_for_its_reply() {
    needs_python!();
    let sink = Smarthost::start(&["--no-pipelining"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &[
            "-i",
            "a@remote.example",
            "b@remote.example",
            "c@remote.example",
        ],
        "Subject: t\n\nx\n",
    );
    let got = relayed(&sink, &server, 1);
    assert_eq!(got[0].rcpts().len(), 3);
    wait_queue_empty(&server);
    // sink_clean fails on any command sent ahead of its reply.
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// 12: DSN passes on
// ---------------------------------------------------------------------

#[test]
fn dsn_parameters_pass_on_to_a_relay_that_offers_dsn() {
    needs_python!();
    let sink = Smarthost::start(&[]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &[
            "-i",
            "-N",
            "success,failure",
            "-R",
            "hdrs",
            "-V",
            "ENV123",
            "-f",
            "alice@test.example",
            "someone@remote.example",
        ],
        "Subject: dsn\n\nx\n",
    );
    let got = relayed(&sink, &server, 1);
    let params = got[0].mail_params();
    assert!(params.iter().any(|p| p == "RET=HDRS"), "{params:?}");
    assert!(params.iter().any(|p| p == "ENVID=ENV123"), "{params:?}");
    let rcpts = got[0].rcpts();
    assert_eq!(rcpts[0].0, "someone@remote.example");
    assert!(
        rcpts[0].1.iter().any(|p| p == "NOTIFY=SUCCESS,FAILURE"),
        "{rcpts:?}"
    );
    wait_queue_empty(&server);
    sink_clean(&sink);
}

#[test]
fn dsn_parameters_are_not_sent_to_a_relay_without_dsn() {
    needs_python!();
    let sink = Smarthost::start(&["--no-dsn"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &[
            "-i",
            "-N",
            "never",
            "-R",
            "full",
            "-V",
            "ENV9",
            "someone@remote.example",
        ],
        "Subject: dsn\n\nx\n",
    );
    let got = relayed(&sink, &server, 1);
    assert!(
        got[0].mail_params().is_empty(),
        "{:?}",
        got[0].mail_params()
    );
    assert!(got[0].rcpts()[0].1.is_empty(), "{:?}", got[0].rcpts());
    wait_queue_empty(&server);
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// SIZE as declared
// ---------------------------------------------------------------------

/// RFC 1870 3: the SIZE value is the message's size in octets including
/// its CR LF pairs (not counting the final dot or doubled dots). The
/// message is stored with LF line ends, so every line adds one octet on
/// the wire.
#[test]
fn the_declared_size_counts_the_message_as_sent() {
    needs_python!();
    let sink = Smarthost::start(&["--size", "0"]);
    let server = start_relaying(&sink, &[]);
    let body = "a line of text\n".repeat(200);
    send(
        &server,
        &["-i", "someone@remote.example"],
        &format!("Subject: size\n\n{body}"),
    );
    let got = relayed(&sink, &server, 1);
    let declared: usize = got[0]
        .mail_params()
        .iter()
        .find_map(|p| p.strip_prefix("SIZE=").map(|n| n.parse().unwrap()))
        .expect("SIZE= declared");
    assert!(
        declared >= got[0].data.len(),
        "SIZE={declared}, but the message took {} octets on the wire",
        got[0].data.len()
    );
    sink_clean(&sink);
}

/// What follows from it: a relay limit between the stored size and the
/// size on the wire is only found out after the whole message was sent.
#[test]
fn a_message_over_the_limit_only_on_the_wire_is_not_sent() {
    needs_python!();
    let body = "a line of text\n".repeat(200);
    let sink = Smarthost::start(&["--size", "3350"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        &format!("Subject: size\n\n{body}"),
    );
    let bounce = wait_maildir(&server, "alice", 1);
    assert_bounce(
        &bounce[0],
        "alice@test.example",
        "someone@remote.example",
        "5.3.4",
    );
    assert!(
        !verbs(&sink).iter().any(|(_, v)| v == "DATA"),
        "the message was sent although it is over the relay's SIZE:\n{}",
        sink.transcript()
    );
    sink_clean(&sink);
}

// ---------------------------------------------------------------------
// SMTPUTF8, and ending a connection
// ---------------------------------------------------------------------

#[test]
fn a_utf8_header_needs_smtputf8_from_the_relay() {
    needs_python!();
    let input = "Subject: Gr\u{fc}\u{df}e\n\nbody\n";
    // Offered: the message goes, declared as SMTPUTF8.
    let sink = Smarthost::start(&[]);
    let server = start_relaying(&sink, &[]);
    send(&server, &["-i", "someone@remote.example"], input);
    let got = relayed(&sink, &server, 1);
    let params = got[0].mail_params();
    assert!(params.iter().any(|p| p == "SMTPUTF8"), "{params:?}");
    assert!(params.iter().any(|p| p == "BODY=8BITMIME"), "{params:?}");
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: Gr\u{fc}\u{df}e"));
    wait_queue_empty(&server);
    sink_clean(&sink);
    drop(server);

    // Withheld: nothing is sent, and the sender hears of it (RFC 6531:
    // 5.6.7).
    let sink = Smarthost::start(&["--no-smtputf8"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        input,
    );
    let bounce = wait_maildir(&server, "alice", 1);
    assert_bounce(
        &bounce[0],
        "alice@test.example",
        "someone@remote.example",
        "5.6.7",
    );
    assert!(sink.messages().is_empty());
    wait_queue_empty(&server);
    sink_clean(&sink);
}

/// RFC 5321 4.1.1.10: the client MUST NOT close the connection before it
/// has sent QUIT. A 451 to one message says nothing against the
/// connection.
#[test]
fn a_temporary_refusal_of_a_message_still_ends_the_connection_with_quit() {
    needs_python!();
    let sink = Smarthost::start(&["--dot-reply", "451", "--dot-reply-times", "1"]);
    let server = start_relaying(&sink, &[]);
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: t\n\nx\n",
    );
    wait_mailq(&server, "451");
    assert!(
        sink.wait_transcript("1 * closed", T),
        "{}",
        sink.transcript()
    );
    assert!(
        sink.commands().contains(&(1, "QUIT".to_string())),
        "the connection was closed without QUIT:\n{}",
        sink.transcript()
    );
    sink_clean(&sink);
}

/// The subjects of the crash test's messages, as they appear in the
/// bytes of a file (a queue file, a drop, a relayed message).
fn crash_subjects(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter_map(|l| l.strip_prefix("Subject: crash-"))
        .map(|s| format!("crash-{}", s.trim()))
        .collect()
}

/// The subjects still to be sent at this moment (the server is dead): in
/// the maildrop, or in a queue file whose recipient is not recorded done.
fn crash_pending(queue: &Path) -> std::collections::HashSet<String> {
    let mut pending = std::collections::HashSet::new();
    for sub in ["maildrop", "active", "hold", "tmp"] {
        let Ok(entries) = std::fs::read_dir(queue.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            // One recipient each: "done 0 ..." once it is sent.
            let done = String::from_utf8_lossy(&bytes)
                .lines()
                .any(|l| l.starts_with("done 0 "));
            if sub == "maildrop" || !done {
                pending.extend(crash_subjects(&bytes));
            }
        }
    }
    pending
}

/// SIGKILL the daemon at random moments while it relays, then start it
/// again on the same directories: every message sendmail acknowledged
/// reaches the relay at least once, and one recorded as sent at the
/// moment of a kill is never sent again. (A message the relay took in
/// the instant before its acceptance was recorded may come twice: RFC
/// 5321 6.1's window, one fsync wide.) `MAILROOM_CRASH_ITERATIONS` sets
/// the number of kills (default 6; `scripts`-style long runs use 100).
#[test]
fn killed_while_relaying_it_loses_nothing_and_repeats_nothing_recorded_as_sent() {
    needs_python!();
    let iterations: usize = std::env::var("MAILROOM_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test: {iterations} kills, seed {seed}");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let sink = Smarthost::start(&[]);
    let mut server = start_relaying(&sink, &[]);
    let text = std::fs::read_to_string(&server.config_path).unwrap();
    let mut sent_at_kill: std::collections::HashMap<String, usize> = Default::default();
    let mut acknowledged = Vec::new();
    for i in 0..iterations {
        for j in 0..4 {
            let subject = format!("crash-{i}-{j}");
            send(
                &server,
                &["-i", "someone@remote.example"],
                &format!("Subject: {subject}\n\n{}\n", "x".repeat(1000 * j)),
            );
            acknowledged.push(subject);
        }
        std::thread::sleep(Duration::from_millis(next() % 80));
        let queue = server.queue_dir();
        let (dir, _log) = server.crash();
        // What the relay has by now, and what is recorded as sent.
        std::thread::sleep(Duration::from_millis(100));
        let pending = crash_pending(&queue);
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        for m in sink.messages() {
            for s in crash_subjects(&m.data_lf()) {
                *counts.entry(s).or_default() += 1;
            }
        }
        for s in &acknowledged {
            if !pending.contains(s) {
                sent_at_kill.insert(s.clone(), counts.get(s).copied().unwrap_or(0));
            }
        }
        server = Server::start_config(dir, &text);
    }
    wait_queue_empty(&server);
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    for m in sink.messages() {
        for s in crash_subjects(&m.data_lf()) {
            *counts.entry(s).or_default() += 1;
        }
    }
    for s in &acknowledged {
        let n = counts.get(s).copied().unwrap_or(0);
        assert!(
            n >= 1,
            "{s} was acknowledged and never relayed (seed {seed})"
        );
        if let Some(&then) = sent_at_kill.get(s) {
            assert!(
                then >= 1,
                "{s} was recorded as sent but the relay never had it (seed {seed})"
            );
            assert_eq!(
                n, then,
                "{s} was recorded as sent, then sent again (seed {seed})"
            );
        }
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    eprintln!(
        "crash test: {} acknowledged, all relayed; {} recorded as sent at a kill; duplicates (the 6.1 window): {dupes:?}",
        acknowledged.len(),
        sent_at_kill.len()
    );
}

/// Every address of the relay's name is tried in turn: a name whose IPv6
/// address refuses (nothing listens on ::1 here) and whose IPv4 one is
/// the sink still works. The name is given in an /etc/hosts of the
/// server's own (a mount namespace; root only).
#[test]
fn every_address_of_the_relay_is_tried_in_turn() {
    needs_python!();
    if !namespaces_or_skip("every_address_of_the_relay_is_tried_in_turn") {
        return;
    }
    let sink = Smarthost::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "::1 relay.test\n127.0.0.1 relay.test\n").unwrap();
    let table = relay_table(sink.port, &[("host", "\"relay.test\"")]);
    let text = config_text(dir.path(), Some(&table), SLOW_RETRIES);
    let server = Server::start_in_namespace(
        dir,
        &text,
        &[(hosts.as_path(), Path::new("/etc/hosts"))],
        &[],
    );
    send(
        &server,
        &["-i", "someone@remote.example"],
        "Subject: any address\n\nx\n",
    );
    relayed(&sink, &server, 1);
    assert!(
        server.log().contains("[::1]:") && server.log().contains("trying the next address"),
        "the IPv6 address was tried first:\n{}",
        server.log()
    );
    wait_queue_empty(&server);
}
