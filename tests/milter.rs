//! Milters, against a milter written on the raw protocol
//! (`tests/support/milter.py`): every stage with its macros, a refusal
//! at each stage, tempfail, discard, header and recipient and body
//! changes, quarantine, a chain of two, a milter that hangs, one that is
//! down, one that talks nonsense, and each `default_action`. Mail goes
//! in through swaks and smtplib, or line by line where the reply to one
//! command is the point; what was delivered is read with mail-parser.
//! The real milters from Debian (OpenDKIM, spamass-milter) have their own
//! file, `milter_packages.rs`.

mod support;

use std::process::Command;
use support::milter::TestMilter;
use support::*;

macro_rules! needs_python {
    () => {
        if !tool("python3") {
            return;
        }
    };
}

/// A server whose top-level `milters` is `list` (TOML values), with
/// `top` added to the top-level keys.
fn server(list: &str, top: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), &format!("milters = [{list}]\n{top}"), "", "");
    Server::start_config(dir, &text)
}

fn quoted(m: &TestMilter) -> String {
    format!("\"{}\"", m.address)
}

/// A milter table with short timeouts and `extra` keys.
fn table(m: &TestMilter, extra: &str) -> String {
    format!(
        "{{ address = \"{}\", command_timeout = 2, message_timeout = 2{extra} }}",
        m.address
    )
}

const MESSAGE: &str =
    "From: Carol <carol@remote.example>\r\nSubject: milter test\r\nX-Keep: yes\r\n\r\nline one\r\nline two\r\n";

/// Sends MESSAGE from carol to `to`; the final reply.
fn send(srv: &Server, to: &[&str]) -> Reply {
    let mut c = srv.connect().hello();
    let r = c.send_mail("carol@remote.example", to, MESSAGE);
    c.cmd("QUIT");
    r
}

/// Nothing is waiting in the spool directory: a refused message leaves
/// no trace.
fn spool_is_empty(srv: &Server) -> bool {
    std::fs::read_dir(srv.dir.path().join("spool"))
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

#[test]
fn a_milter_hears_every_stage_with_the_macros_milters_need() {
    needs_python!();
    if !tool("swaks") {
        return;
    }
    let m = TestMilter::start("[]", &[]);
    let srv = server(&quoted(&m), "");
    let out = Command::new("swaks")
        .args(["--server", &srv.addr.to_string()])
        .args([
            "--from",
            "carol@remote.example",
            "--to",
            "alice@test.example",
        ])
        .args(["--helo", "client.remote.example"])
        .args(["--header", "Subject: stages"])
        .args(["--body", "first line\nsecond line"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(within_10s(|| m.codes().ends_with('Q')), "{}", m.codes());
    let n = header_count(&m);
    assert!(n >= 3, "{}", m.codes());
    assert_eq!(m.codes(), format!("OCHMRT{}NBEQ", "L".repeat(n)));
    let events = m.events();
    let find = |code: &str| events.iter().find(|e| e.cmd == code).unwrap().clone();
    let negotiate = find("O");
    assert_eq!(negotiate.args[0], "6", "protocol version 6");
    let connect = find("C");
    assert_eq!(connect.args[1], "4");
    assert_eq!(connect.args[2], "127.0.0.1");
    assert_eq!(connect.macro_value("j"), Some("mx.test.example"));
    assert_eq!(connect.macro_value("{daemon_name}"), Some("mailroom"));
    assert_eq!(connect.macro_value("{client_addr}"), Some("127.0.0.1"));
    assert_eq!(connect.macro_value("{if_addr}"), Some("127.0.0.1"));
    assert_eq!(find("H").args, ["client.remote.example"]);
    let mail = find("M");
    assert_eq!(mail.args[0], "<carol@remote.example>");
    assert_eq!(
        mail.macro_value("{mail_addr}"),
        Some("carol@remote.example")
    );
    let id = mail.macro_value("i").unwrap().to_string();
    assert!(!id.is_empty());
    let rcpt = find("R");
    assert_eq!(rcpt.args, ["<alice@test.example>"]);
    assert_eq!(rcpt.macro_value("{rcpt_addr}"), Some("alice@test.example"));
    // The header fields as sent, without our own Received: field, one
    // leading space taken off each value.
    let headers: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.cmd == "L")
        .map(|e| (e.args[0].clone(), e.args[1].clone()))
        .collect();
    assert!(headers.iter().all(|(n, _)| n != "Received"), "{headers:?}");
    assert!(
        headers.contains(&("Subject".into(), "stages".into())),
        "{headers:?}"
    );
    // The body with CRLF line ends, as on the wire.
    let body: String = events
        .iter()
        .filter(|e| e.cmd == "B")
        .map(|e| e.args.concat())
        .collect();
    assert!(
        body.starts_with("first line\r\nsecond line\r\n"),
        "{body:?}"
    );
    assert_eq!(
        body.matches('\n').count(),
        body.matches("\r\n").count(),
        "{body:?}"
    );
    assert_eq!(find("E").macro_value("i"), Some(id.as_str()));
    // And the message is delivered, unchanged.
    let got = srv.messages("alice");
    assert_eq!(got.len(), 1);
    let p = Parsed::new(got[0].clone());
    assert_eq!(p.subject().as_deref(), Some("stages"));
}

/// How many header fields the milter was shown.
fn header_count(m: &TestMilter) -> usize {
    m.events().iter().filter(|e| e.cmd == "L").count()
}

#[test]
fn a_refusal_at_each_envelope_stage_is_the_reply_to_that_command() {
    needs_python!();
    // Connect: every MAIL hears it.
    let m = TestMilter::start(r#"[{"at": "connect", "do": "reject"}]"#, &[]);
    let srv = server(&quoted(&m), "");
    let mut c = srv.connect().hello();
    let r = c.cmd("MAIL FROM:<carol@remote.example>");
    assert_eq!((r.code, r.text().contains("5.7.1")), (550, true), "{r:?}");
    c.expect("QUIT", 221);
    drop((srv, m));

    // HELO: that greeting is refused, and the milter is asked again.
    let m = TestMilter::start(
        r#"[{"at": "helo", "do": "reject", "match": "bad.example"}]"#,
        &[],
    );
    let srv = server(&quoted(&m), "");
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    c.expect("EHLO bad.example", 550);
    c.expect("EHLO good.example", 250);
    c.expect("MAIL FROM:<carol@remote.example>", 250);
    drop((c, srv, m));

    // MAIL: no transaction; RCPT is out of sequence.
    let m = TestMilter::start(r#"[{"at": "mail", "do": "reject"}]"#, &[]);
    let srv = server(&quoted(&m), "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<carol@remote.example>", 550);
    c.expect("RCPT TO:<alice@test.example>", 503);
    drop((c, srv));
    assert!(
        within_10s(|| m.codes().contains('A')),
        "the milter hears the abort: {}",
        m.codes()
    );
    drop(m);

    // RCPT: that recipient alone; the message goes to the others.
    let m = TestMilter::start(
        r#"[{"at": "rcpt", "do": "tempfail", "match": "bob@"}]"#,
        &[],
    );
    let srv = server(&quoted(&m), "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<carol@remote.example>", 250);
    let r = c.cmd("RCPT TO:<bob@test.example>");
    assert_eq!(r.code, 451);
    assert!(r.text().contains("4.7.1"), "{r:?}");
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("DATA", 354);
    c.send(MESSAGE);
    c.send(".\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(srv.messages("alice").len(), 1);
    assert_eq!(srv.messages("bob").len(), 0);
}

#[test]
fn a_refusal_at_the_content_stages_comes_after_the_dot_and_nothing_is_kept() {
    needs_python!();
    for (stage, rule, code, text) in [
        ("data", r#"{"at": "data", "do": "reject"}"#, 550, "5.7.1"),
        (
            "header",
            r#"{"at": "header", "do": "tempfail", "match": "X-Keep"}"#,
            451,
            "4.7.1",
        ),
        ("eoh", r#"{"at": "eoh", "do": "reject"}"#, 550, "5.7.1"),
        (
            "body",
            r#"{"at": "body", "do": "reject", "match": "line two"}"#,
            550,
            "5.7.1",
        ),
        (
            "eom",
            r#"{"at": "eom", "do": "reply", "text": "554 5.7.1 Spam detected: GTUBE"}"#,
            554,
            "5.7.1 Spam detected: GTUBE",
        ),
    ] {
        let m = TestMilter::start(&format!("[{rule}]"), &[]);
        let srv = server(&quoted(&m), "");
        let r = send(&srv, &["alice@test.example"]);
        assert_eq!(r.code, code, "{stage}: {r:?}");
        assert!(r.text().contains(text), "{stage}: {r:?}");
        assert!(srv.messages("alice").is_empty(), "{stage}: delivered");
        assert!(spool_is_empty(&srv), "{stage}: spool left");
        assert!(srv.wait_log("message refused by a milter"), "{stage}");
    }
}

#[test]
fn discard_accepts_the_message_and_delivers_nothing() {
    needs_python!();
    for stage in ["mail", "rcpt", "eom"] {
        let m = TestMilter::start(&format!(r#"[{{"at": "{stage}", "do": "discard"}}]"#), &[]);
        let srv = server(&quoted(&m), "");
        let r = send(&srv, &["alice@test.example"]);
        assert_eq!(r.code, 250, "{stage}: {r:?}");
        assert!(srv.wait_log("discarded by a milter"), "{stage}");
        assert!(srv.messages("alice").is_empty(), "{stage}");
        // The next message on a new connection is delivered as usual
        // when the milter does not discard it.
        drop(srv);
    }
}

#[test]
fn header_edits_land_in_the_stored_message() {
    needs_python!();
    let rules = r#"[{"at": "eom", "do": "continue", "edits": [
        ["addheader", "X-Spam-Status", "No, score=-0.1 required=5.0\n\ttests=NONE"],
        ["insheader", 0, "DKIM-Signature", "v=1; a=rsa-sha256; d=test.example"],
        ["chgheader", 1, "Subject", "[filtered] milter test"],
        ["chgheader", 1, "X-Keep", ""]
    ]}]"#;
    let m = TestMilter::start(rules, &[]);
    let srv = server(&quoted(&m), "");
    assert_eq!(send(&srv, &["alice@test.example"]).code, 250);
    let got = srv.messages("alice");
    assert_eq!(got.len(), 1);
    let p = Parsed::new(got[0].clone());
    assert_eq!(p.subject().as_deref(), Some("[filtered] milter test"));
    let status = p.header("X-Spam-Status").unwrap_or_default();
    assert_eq!(
        status.split_whitespace().collect::<Vec<_>>(),
        ["No,", "score=-0.1", "required=5.0", "tests=NONE"]
    );
    assert!(
        got[0].windows(8).any(|w| w
            == b"5.0
	tes"),
        "folded as given"
    );
    assert!(p.header("X-Keep").is_none(), "deleted");
    let names = p.header_names();
    // Inserted at the top of the message as received; delivery puts its
    // Return-Path: and Delivered-To: above that.
    let dkim = names.iter().position(|n| n == "DKIM-Signature").unwrap();
    assert_eq!(names[dkim + 1], "Received", "{names:?}");
    assert_eq!(
        String::from_utf8_lossy(&p.body()).trim_end(),
        "line one\nline two"
    );
}

#[test]
fn recipients_and_the_sender_changed_at_the_end_of_the_message() {
    needs_python!();
    let rules = r#"[{"at": "eom", "do": "continue", "edits": [
        ["addrcpt", "<bob@test.example>"],
        ["delrcpt", "<alice@test.example>"],
        ["chgfrom", "<bounces@test.example>"]
    ]}]"#;
    let m = TestMilter::start(rules, &[]);
    let srv = server(&quoted(&m), "");
    assert_eq!(send(&srv, &["alice@test.example"]).code, 250);
    assert!(srv.messages("alice").is_empty());
    let got = srv.messages("bob");
    assert_eq!(got.len(), 1);
    let p = Parsed::new(got[0].clone());
    assert_eq!(
        p.header("Return-Path").as_deref(),
        Some("<bounces@test.example>")
    );
    assert!(srv.wait_log("added by a milter") && srv.wait_log("removed by a milter"));
}

#[test]
fn a_replaced_body_is_stored_with_the_header_kept() {
    needs_python!();
    let rules = r#"[{"at": "eom", "do": "continue", "edits": [
        ["replbody", "The attachment was removed.\r\nBy the filter.\r\n"]
    ]}]"#;
    let m = TestMilter::start(rules, &[]);
    let srv = server(&quoted(&m), "");
    assert_eq!(send(&srv, &["alice@test.example"]).code, 250);
    let got = srv.messages("alice");
    let p = Parsed::new(got[0].clone());
    assert_eq!(p.subject().as_deref(), Some("milter test"));
    assert_eq!(
        String::from_utf8_lossy(&p.body()),
        "The attachment was removed.\nBy the filter.\n"
    );
    // Stored as mailroom stores text: LF line ends.
    assert!(!got[0].windows(2).any(|w| w == b"\r\n"));
}

#[test]
fn quarantine_goes_to_the_quarantine_mailbox_or_is_refused() {
    needs_python!();
    let rules =
        r#"[{"at": "eom", "do": "continue", "edits": [["quarantine", "suspicious attachment"]]}]"#;
    let m = TestMilter::start(rules, &[]);
    let srv = server(&quoted(&m), "quarantine = \"postmaster@test.example\"");
    assert_eq!(
        send(&srv, &["alice@test.example", "bob@test.example"]).code,
        250
    );
    assert!(srv.messages("alice").is_empty() && srv.messages("bob").is_empty());
    assert_eq!(srv.messages("postmaster").len(), 1);
    assert!(srv.wait_log("quarantined by a milter (suspicious attachment)"));
    drop(srv);

    let srv = server(&quoted(&m), "");
    let r = send(&srv, &["alice@test.example"]);
    assert_eq!(r.code, 550, "{r:?}");
    assert!(r.text().contains("quarantined"), "{r:?}");
    assert!(srv.messages("alice").is_empty());
}

#[test]
fn two_milters_in_order_each_sees_what_the_one_before_did() {
    needs_python!();
    let first = TestMilter::start(
        r#"[{"at": "eom", "do": "continue", "edits": [["addheader", "X-First", "was here"]]}]"#,
        &[],
    );
    let second = TestMilter::start(
        r#"[{"at": "header", "do": "reject", "match": "was here"}]"#,
        &[],
    );
    let srv = server(&format!("{}, {}", quoted(&first), quoted(&second)), "");
    let r = send(&srv, &["alice@test.example"]);
    assert_eq!(r.code, 550, "the second saw the first's field: {r:?}");
    assert!(srv.messages("alice").is_empty());
    drop(srv);

    // A refusal by the first: the second never hears the message's end.
    let first = TestMilter::start(r#"[{"at": "eom", "do": "reject"}]"#, &[]);
    let second = TestMilter::start("[]", &[]);
    let srv = server(&format!("{}, {}", quoted(&first), quoted(&second)), "");
    assert_eq!(send(&srv, &["alice@test.example"]).code, 550);
    assert!(within_10s(|| second.codes().ends_with('Q')));
    assert!(!second.codes().contains('E'), "{}", second.codes());
}

#[test]
fn a_listener_with_its_own_milters_uses_them_instead() {
    needs_python!();
    let top = TestMilter::start(r#"[{"at": "mail", "do": "reject"}]"#, &[]);
    let own = TestMilter::start("[]", &[]);
    let dir = tempfile::tempdir().unwrap();
    let server = format!(
        "listen = [\"127.0.0.1:0\", {{ address = \"127.0.0.1:0\", milters = [{}] }}]",
        quoted(&own)
    );
    let text = base_config(dir.path(), &format!("milters = [{}]", quoted(&top)), "", "")
        .replace("listen = [\"127.0.0.1:0\"]", &server);
    let srv = Server::start_config(dir, &text);
    let mut c = Client::connect(srv.addrs[0]).hello();
    c.expect("MAIL FROM:<carol@remote.example>", 550);
    let mut c = Client::connect(srv.addrs[1]).hello();
    let r = c.send_mail("carol@remote.example", &["alice@test.example"], MESSAGE);
    assert_eq!(r.code, 250);
    assert!(own.codes().contains('M'));
}

#[test]
fn a_milter_on_a_unix_socket() {
    needs_python!();
    let m = TestMilter::start_unix(
        r#"[{"at": "eom", "do": "continue", "edits": [["addheader", "X-Unix", "yes"]]}]"#,
    );
    let srv = server(&quoted(&m), "");
    assert_eq!(send(&srv, &["alice@test.example"]).code, 250);
    let p = Parsed::new(srv.messages("alice")[0].clone());
    assert_eq!(p.header("X-Unix").as_deref(), Some("yes"));
}

#[test]
fn a_milter_that_hangs_meets_its_timeout_and_default_action() {
    needs_python!();
    // Tempfail (the default): 451 after the message, never 250.
    let m = TestMilter::start(r#"[{"at": "eom", "do": "hang"}]"#, &[]);
    let srv = server(&table(&m, ""), "");
    let r = send(&srv, &["alice@test.example"]);
    assert_eq!(r.code, 451, "{r:?}");
    assert!(srv.messages("alice").is_empty());
    assert!(spool_is_empty(&srv));
    assert!(srv.wait_log("timed out; mail is refused with 451 4.7.1"));
    drop(srv);

    // Accept: delivered unfiltered.
    let srv = server(&table(&m, ", default_action = \"accept\""), "");
    assert_eq!(send(&srv, &["alice@test.example"]).code, 250);
    assert_eq!(srv.messages("alice").len(), 1);
}

#[test]
fn a_slow_milter_that_reports_progress_is_waited_for() {
    needs_python!();
    let m = TestMilter::start(
        r#"[{"at": "eom", "do": "progress", "n": 3, "gap": 1}]"#,
        &[],
    );
    let srv = server(&table(&m, ""), "");
    assert_eq!(send(&srv, &["alice@test.example"]).code, 250);
    assert_eq!(srv.messages("alice").len(), 1);
}

#[test]
fn a_milter_that_is_down_is_logged_once_per_spell_and_its_default_action_stands() {
    needs_python!();
    let mut m = TestMilter::start("[]", &[]);
    let address = m.address.clone();
    m.stop();
    let list = format!("{{ address = \"{address}\", connect_timeout = 2 }}");
    let srv = server(&list, "");
    for _ in 0..3 {
        let mut c = srv.connect().hello();
        let r = c.cmd("MAIL FROM:<carol@remote.example>");
        assert_eq!(r.code, 451, "{r:?}");
        assert!(r.text().contains("4.7.1"), "{r:?}");
    }
    assert!(srv.wait_log("cannot connect"));
    let warned = srv.log().matches("cannot connect").count();
    assert_eq!(warned, 1, "one warning per spell:\n{}", srv.log());
    drop(srv);

    let srv = server(
        &format!("{{ address = \"{address}\", default_action = \"accept\" }}"),
        "",
    );
    assert_eq!(send(&srv, &["alice@test.example"]).code, 250);
    assert_eq!(srv.messages("alice").len(), 1);
}

#[test]
fn a_milter_cannot_break_our_reply_framing() {
    needs_python!();
    // A reply code whose text hides a second reply, and a packet no
    // milter sends: both make the milter broken, so its default action
    // (tempfail) stands; nothing of its text reaches the client.
    for rule in [
        r#"{"at": "rcpt", "do": "reply", "text": "550 5.7.1 no\r\n250 2.0.0 yes"}"#,
        r#"{"at": "rcpt", "do": "garbage"}"#,
    ] {
        let m = TestMilter::start(&format!("[{rule}]"), &[]);
        let srv = server(&table(&m, ""), "");
        let mut c = srv.connect().hello();
        c.expect("MAIL FROM:<carol@remote.example>", 250);
        let r = c.cmd("RCPT TO:<alice@test.example>");
        assert_eq!(r.code, 451, "{rule}: {r:?}");
        assert!(!r.text().contains("yes"), "{r:?}");
        c.expect("NOOP", 250);
    }
}

#[test]
fn smtplib_sees_the_milters_reply_as_the_data_reply() {
    needs_python!();
    let m = TestMilter::start(
        r#"[{"at": "body", "do": "reply", "match": "XJS*C4JDBQADN1", "text": "550 5.7.1 Blocked by SpamAssassin"}]"#,
        &[],
    );
    let srv = server(&quoted(&m), "");
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
msg = "Subject: gtube\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
try:
    s.sendmail("carol@remote.example", ["alice@test.example"], msg)
    print("accepted")
except smtplib.SMTPDataError as e:
    print(e.smtp_code, e.smtp_error.decode())
clean = "Subject: clean\r\n\r\nhello\r\n"
s.sendmail("carol@remote.example", ["alice@test.example"], clean)
s.quit()
"#;
    let out = python_ok(script, &[srv.addr.port().to_string()], "smtplib");
    assert_eq!(out.trim(), "550 5.7.1 Blocked by SpamAssassin");
    let got = srv.messages("alice");
    assert_eq!(got.len(), 1);
    assert_eq!(
        Parsed::new(got[0].clone()).subject().as_deref(),
        Some("clean")
    );
}

/// A server with `[relay] milters = [list]` and a relay to `sink`.
fn relay_server(list: &str, sink: &support::smarthost::Smarthost) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let tables = format!(
        "[relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nmilters = [{list}]\n",
        sink.port
    );
    let text = base_config(dir.path(), "", "", &tables);
    Server::start_config(dir, &text)
}

#[test]
fn sendmail_mail_passes_the_relay_milters_at_pickup() {
    needs_python!();
    let sink = support::smarthost::Smarthost::start(&[]);
    let m = TestMilter::start(
        r#"[{"at": "eom", "do": "continue", "edits": [["addheader", "X-Signed", "by the relay milter"], ["chgheader", 1, "Subject", "[out] report"]]}]"#,
        &[],
    );
    let srv = relay_server(&quoted(&m), &sink);
    let msg = b"From: alice@test.example\nSubject: report\n\nnightly report\n";
    let r = sendmail(
        &srv.config_path,
        &[
            "-f",
            "alice@test.example",
            "bob@test.example",
            "someone@elsewhere.example",
        ],
        msg,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let relayed = sink.wait_for(1, std::time::Duration::from_secs(20));
    assert_eq!(relayed.len(), 1, "{}", srv.log());
    let out = String::from_utf8_lossy(&relayed[0].data_lf()).into_owned();
    assert!(out.contains("X-Signed: by the relay milter\n"), "{out}");
    assert!(out.contains("Subject: [out] report\n"), "{out}");
    assert!(wait_within(|| !srv.messages("bob").is_empty()));
    let p = Parsed::new(srv.messages("bob")[0].clone());
    assert_eq!(p.header("X-Signed").as_deref(), Some("by the relay milter"));
    // What the milter saw: the message without our Received: field, and
    // the local user who sent it.
    let events = m.events();
    let connect = events.iter().find(|e| e.cmd == "C").unwrap();
    assert!(connect
        .macro_value("_")
        .is_some_and(|u| u.ends_with("@localhost")));
    // As Postfix tells its non_smtpd_milters: localhost at 127.0.0.1.
    assert_eq!(connect.args, ["localhost", "4", "127.0.0.1"]);
    assert_eq!(connect.macro_value("{client_addr}"), Some("127.0.0.1"));
    assert!(events
        .iter()
        .filter(|e| e.cmd == "L")
        .all(|e| e.args[0] != "Received"));
    // Mail from outside over SMTP passes no relay milter.
    let mut c = srv.connect().hello();
    let r = c.send_mail("carol@remote.example", &["alice@test.example"], MESSAGE);
    assert_eq!(r.code, 250);
    let p = Parsed::new(srv.messages("alice")[0].clone());
    assert!(p.header("X-Signed").is_none());
}

fn wait_within(done: impl FnMut() -> bool) -> bool {
    within_10s(done)
}

#[test]
fn a_relay_milter_that_refuses_sendmail_mail_bounces_it_and_one_that_tempfails_holds_it() {
    needs_python!();
    let sink = support::smarthost::Smarthost::start(&[]);
    let m = TestMilter::start(
        r#"[{"at": "eom", "do": "reply", "match": "", "text": "550 5.7.1 Signing refused: no key for this domain"}]"#,
        &[],
    );
    let srv = relay_server(&quoted(&m), &sink);
    let r = sendmail(
        &srv.config_path,
        &["-f", "alice@test.example", "someone@elsewhere.example"],
        b"Subject: out\n\nx\n",
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // The bounce reaches the sender, with the milter's reason.
    assert!(
        wait_within(|| !srv.messages("alice").is_empty()),
        "{}",
        srv.log()
    );
    let bounce = String::from_utf8_lossy(&srv.messages("alice")[0]).into_owned();
    assert!(
        bounce.contains("Signing refused: no key for this domain"),
        "{bounce}"
    );
    assert!(bounce.contains("5.7.1"), "{bounce}");
    assert!(sink.messages().is_empty());
    drop(srv);

    // Tempfail: the drop waits in the maildrop, nothing is lost.
    let m = TestMilter::start(r#"[{"at": "mail", "do": "tempfail"}]"#, &[]);
    let srv = relay_server(&quoted(&m), &sink);
    let r = sendmail(
        &srv.config_path,
        &["bob@test.example"],
        b"Subject: later\n\nx\n",
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(srv.wait_log("waits for a later pickup"), "{}", srv.log());
    let waiting = std::fs::read_dir(srv.queue_dir().join("maildrop"))
        .unwrap()
        .count();
    assert_eq!(waiting, 1);
    assert!(srv.messages("bob").is_empty());
}

/// `body` sent to alice in one BDAT LAST chunk (MAIL with `params`) past
/// a milter that adds `X-Checked: yes`; the milter and the server.
fn bdat_past_a_field_adder(params: &str, body: &str) -> (TestMilter, Server) {
    let m = TestMilter::start(
        r#"[{"at": "eom", "do": "continue", "edits": [["addheader", "X-Checked", "yes"]]}]"#,
        &[],
    );
    let srv = server(&quoted(&m), "");
    let mut c = srv.connect().hello();
    c.expect(&format!("MAIL FROM:<carol@remote.example>{params}"), 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.send(format!("BDAT {} LAST\r\n{body}", body.len()));
    assert_eq!(c.reply().code, 250);
    (m, srv)
}

#[test]
fn a_bdat_message_stored_as_sent_passes_the_milters_with_its_crlf_kept() {
    needs_python!();
    let body = "Subject: binary\r\n\r\nline\r\nbare\rcr and \x01 kept\r\n";
    let (m, srv) = bdat_past_a_field_adder(" BODY=BINARYMIME", body);
    let chunks: String = m
        .events()
        .iter()
        .filter(|e| e.cmd == "B")
        .map(|e| e.args.concat())
        .collect();
    assert!(chunks.starts_with("line\r\n"), "{chunks:?}");
    assert!(!chunks.contains("\r\r"), "CRLF not doubled: {chunks:?}");
    let stored = &srv.messages("alice")[0];
    let text = String::from_utf8_lossy(stored);
    assert!(
        text.contains("X-Checked: yes\r\n"),
        "in the message's own line ends: {text:?}"
    );
    assert!(text.contains("\r\n\r\nline\r\n"), "{text:?}");
}

#[test]
fn a_milter_that_skips_connect_still_gets_its_macros_and_a_new_greeting_aborts_the_message() {
    needs_python!();
    // Steps: no connect event (SMFIP_NOCONNECT).
    let m = TestMilter::start("[]", &["--steps", "1"]);
    let srv = server(&quoted(&m), "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<carol@remote.example>", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    // RFC 5321 4.1.4: a new greeting ends the transaction; the milter
    // hears the abort before the HELO.
    c.expect("EHLO again.example", 250);
    c.expect("QUIT", 221);
    assert!(within_10s(|| m.codes().ends_with('Q')), "{}", m.codes());
    assert_eq!(m.codes(), "OHMRAHQ");
    let helo = m.events().into_iter().find(|e| e.cmd == "H").unwrap();
    assert_eq!(helo.macro_value("j"), Some("mx.test.example"), "{helo:?}");
}

#[test]
fn accept_lets_the_message_through_unasked_and_the_next_one_is_asked_again() {
    needs_python!();
    let m = TestMilter::start(
        r#"[{"at": "mail", "do": "accept", "match": "first@"}]"#,
        &[],
    );
    let srv = server(&quoted(&m), "");
    let mut c = srv.connect().hello();
    for from in ["first@remote.example", "second@remote.example"] {
        let r = c.send_mail(from, &["alice@test.example"], MESSAGE);
        assert_eq!(r.code, 250, "{from}: {r:?}");
    }
    c.expect("QUIT", 221);
    assert!(within_10s(|| m.codes().ends_with('Q')), "{}", m.codes());
    let codes = m.codes();
    let second = codes.rfind('M').unwrap();
    assert_eq!(
        &codes[..second],
        "OCHM",
        "nothing more of the first: {codes}"
    );
    assert!(codes[second..].starts_with("MRTL"), "{codes}");
    assert!(codes.ends_with("NBEQ"), "{codes}");
    assert_eq!(srv.messages("alice").len(), 2);
}

#[test]
fn a_logged_in_clients_mail_reaches_the_relay_milters_with_its_login() {
    needs_python!();
    let m = TestMilter::start("[]", &[]);
    // The listener's milter refuses the connection (a client on a
    // blocklist, say): a client that logs in is judged by the relay
    // milters alone.
    let listener = TestMilter::start(r#"[{"at": "connect", "do": "reject"}]"#, &[]);
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::make_pki(dir.path(), "milter-auth");
    let users = dir.path().join("users");
    let hash = Command::new("openssl")
        .args(["passwd", "-6", "secret-printer"])
        .output()
        .expect("openssl passwd");
    std::fs::write(&users, [b"printer:", &hash.stdout[..]].concat()).unwrap();
    std::fs::set_permissions(&users, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let tables = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[auth]\nusers = \"{}\"\n\
         [relay]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nmilters = [{}]\n",
        pki.cert.display(),
        pki.key.display(),
        users.display(),
        quoted(&m)
    );
    let top = format!("milters = [{}]", quoted(&listener));
    let text = base_config(dir.path(), &top, "", &tables).replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [{ address = \"127.0.0.1:0\", require_tls = true, require_auth = true }]",
    );
    let srv = Server::start_config(dir, &text);
    let script = r#"
import smtplib, ssl, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.starttls(context=ssl.create_default_context(cafile=sys.argv[2]))
s.login("printer", "secret-printer")
s.sendmail("printer@test.example", ["alice@test.example"], "Subject: scan\r\n\r\nready\r\n")
s.quit()
"#;
    python_ok(
        script,
        &[srv.addr.port().to_string(), pki.ca.display().to_string()],
        "smtplib",
    );
    assert_eq!(srv.messages("alice").len(), 1);
    let mail = m.events().into_iter().find(|e| e.cmd == "M").unwrap();
    assert_eq!(
        mail.macro_value("{auth_authen}"),
        Some("printer"),
        "{mail:?}"
    );
    // The relay milters heard the session from its start: connect, then
    // the greeting after STARTTLS.
    assert!(m.codes().starts_with("OCHM"), "{}", m.codes());
}

#[test]
fn a_field_ending_a_bdat_message_without_a_line_end_is_not_glued_to_an_added_one() {
    needs_python!();
    let (_m, srv) = bdat_past_a_field_adder("", "Subject: all header, no line end");
    let p = Parsed::new(srv.messages("alice")[0].clone());
    assert_eq!(p.subject().as_deref(), Some("all header, no line end"));
    assert_eq!(p.header("X-Checked").as_deref(), Some("yes"));
}

#[test]
fn a_relay_milter_that_hangs_holds_up_the_pickup_but_no_delivery() {
    needs_python!();
    let sink = support::smarthost::Smarthost::start(&[]);
    let m = TestMilter::start(r#"[{"at": "eom", "do": "hang"}]"#, &[]);
    let dir = tempfile::tempdir().unwrap();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "far: someone@elsewhere.example\n").unwrap();
    let tables = format!(
        "[relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         milters = [{{ address = \"{}\", message_timeout = 60 }}]\n",
        sink.port, m.address
    );
    let top = format!("aliases = \"{}\"", aliases.display());
    let text = base_config(dir.path(), &top, "", &tables);
    let srv = Server::start_config(dir, &text);
    // sendmail's message waits for the milter, a minute at most.
    let r = sendmail(
        &srv.config_path,
        &["bob@test.example"],
        b"Subject: held\n\nx\n",
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(within_10s(|| m.codes().contains('E')), "{}", m.codes());
    // Meanwhile the queue goes on: mail from outside for an alias
    // elsewhere is relayed at once.
    let mut c = srv.connect().hello();
    let r = c.send_mail("carol@remote.example", &["far@test.example"], MESSAGE);
    assert_eq!(r.code, 250);
    let relayed = sink.wait_for(1, std::time::Duration::from_secs(10));
    assert_eq!(
        relayed.len(),
        1,
        "relayed while the milter hangs:\n{}",
        srv.log()
    );
    assert!(srv.messages("bob").is_empty(), "still held by the milter");
}
