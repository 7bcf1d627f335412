//! Delivery status notifications end to end: what senders asked over SMTP
//! (RFC 3461 NOTIFY, RET, ENVID) and what they get, notices to remote
//! senders leaving through the relay, a notice that fails going to
//! postmaster once and no further, the delay warning and the end of a
//! message's lifetime, and alias members elsewhere. Notices are read with
//! mail-parser; the relay is the loopback sink of `support::smarthost`.

mod support;
use mail_parser::{MessageParser, MimeHeaders};
use std::time::Duration;
use support::smarthost::Smarthost;
use support::*;

/// The sink is Python: without python3 a test is skipped (and fails under
/// CI, which installs it).
macro_rules! needs_python {
    () => {
        if !tool("python3") {
            return;
        }
    };
}

const T: Duration = Duration::from_secs(15);

/// A `[relay]` table for the sink, in the clear, with short timeouts.
fn relay(sink: &Smarthost) -> String {
    format!(
        "[relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ncommand_timeout = 5\n",
        sink.port
    )
}

/// The aliases every test here uses.
const ALIASES: &str =
    "never: \"|echo no such list >&2; exit 1\"\nfar: someone@remote.example, alice\n";

/// A notice read back: its subject, and the text of its parts.
struct Notice {
    subject: String,
    content_type: String,
    /// The human-readable part, the report, and the returned message.
    parts: Vec<(String, String)>,
}

fn notice(raw: &[u8]) -> Notice {
    let m = MessageParser::default().parse(raw).expect("a message");
    let ct = m.content_type().expect("a Content-Type");
    let content_type = format!(
        "{}/{}; report-type={}",
        ct.ctype(),
        ct.subtype().unwrap_or(""),
        ct.attribute("report-type").unwrap_or("")
    );
    let parts = m
        .parts
        .iter()
        .skip(1)
        .map(|p| {
            let t = p
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
                .unwrap_or_default();
            let text = String::from_utf8_lossy(p.contents()).into_owned();
            (t, text)
        })
        .collect();
    Notice {
        subject: m.subject().unwrap_or("").to_string(),
        content_type,
        parts,
    }
}

impl Notice {
    fn part(&self, content_type: &str) -> &str {
        self.parts
            .iter()
            .find(|(t, _)| t == content_type)
            .map(|(_, text)| text.as_str())
            .unwrap_or_else(|| panic!("no {content_type} part in {:?}", self.parts))
    }
}

fn wait_messages(srv: &Server, user: &str, n: usize) -> Vec<Vec<u8>> {
    wait_for(&format!("{n} messages for {user}"), || {
        let m = srv.messages(user);
        (m.len() >= n).then_some(m)
    })
}

fn queue_empty(srv: &Server) {
    wait_for("an empty queue", || {
        mailq(&srv.config_path)
            .stdout
            .contains("Mail queue is empty")
            .then_some(())
    });
}

#[test]
fn notify_success_gets_a_delivered_notice() {
    let srv = support::delivery::with_aliases(ALIASES, "", "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<alice@test.example>", 250);
    c.expect("RCPT TO:<bob@test.example> NOTIFY=SUCCESS,FAILURE", 250);
    c.expect("DATA", 354);
    c.send("Subject: tell me\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(srv.messages("bob").len(), 1);
    let alice = srv.messages("alice");
    assert_eq!(alice.len(), 1, "one notice");
    let n = notice(&alice[0]);
    assert_eq!(n.subject, "Successful Mail Delivery Report");
    assert_eq!(
        n.content_type,
        "multipart/report; report-type=delivery-status"
    );
    let report = n.part("message/delivery-status");
    assert!(
        report.contains("Final-Recipient: rfc822; bob@test.example")
            && report.contains("Action: delivered")
            && report.contains("Status: 2.0.0"),
        "{report}"
    );
}

#[test]
fn notify_never_means_nobody_hears_of_a_failure() {
    let srv = support::delivery::with_aliases(ALIASES, "", "");
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<alice@test.example>", 250);
    c.expect("RCPT TO:<bob@test.example>", 250);
    c.expect("RCPT TO:<never@test.example> NOTIFY=NEVER", 250);
    c.expect("DATA", 354);
    c.send("Subject: quiet\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(srv.messages("bob").len(), 1);
    assert!(srv.messages("alice").is_empty(), "no bounce for NEVER");
    assert!(srv.wait_log("NOTIFY says nobody is told"), "{}", srv.log());
}

#[test]
fn ret_full_returns_the_message_and_envid_comes_back() {
    let srv = support::delivery::with_aliases(ALIASES, "", "");
    let mut c = srv.connect().hello();
    c.expect(
        "MAIL FROM:<alice@test.example> RET=FULL ENVID=QQ+2B314",
        250,
    );
    c.expect("RCPT TO:<bob@test.example>", 250);
    c.expect(
        "RCPT TO:<never@test.example> ORCPT=rfc822;Never+2Bx@test.example",
        250,
    );
    c.expect("DATA", 354);
    c.send("Subject: all of it\r\n\r\nthe body comes back\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let alice = srv.messages("alice");
    assert_eq!(alice.len(), 1);
    let n = notice(&alice[0]);
    assert_eq!(n.subject, "Undelivered Mail Returned to Sender");
    let report = n.part("message/delivery-status");
    assert!(report.contains("Original-Envelope-Id: QQ+314"), "{report}");
    assert!(
        report.contains("Final-Recipient: rfc822; never@test.example")
            && report.contains("Action: failed"),
        "{report}"
    );
    let returned = String::from_utf8_lossy(&alice[0]);
    assert!(
        returned.contains("Content-Type: message/rfc822"),
        "{returned}"
    );
    assert!(returned.contains("the body comes back"), "{returned}");
}

#[test]
fn a_remote_senders_failure_is_reported_through_the_relay() {
    needs_python!();
    let sink = Smarthost::start(&[]);
    let srv = support::delivery::with_aliases(ALIASES, "", &relay(&sink));
    let r = srv.connect().hello().send_mail(
        "x@remote.example",
        &["bob@test.example", "never@test.example"],
        "Subject: partly\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "with a relay the sender can be told: {r:?}");
    assert_eq!(srv.messages("bob").len(), 1);
    let got = sink.wait_for(1, T);
    assert_eq!(got.len(), 1, "{}", sink.transcript());
    assert_eq!(got[0].mail_from(), "");
    assert_eq!(got[0].rcpt_addresses(), ["x@remote.example"]);
    let n = notice(&got[0].data_lf());
    let report = n.part("message/delivery-status");
    assert!(
        report.contains("Final-Recipient: rfc822; never@test.example")
            && report.contains("Action: failed")
            && !report.contains("bob@"),
        "{report}"
    );
    queue_empty(&srv);
}

#[test]
fn a_notice_that_fails_goes_to_postmaster_once_and_no_further() {
    needs_python!();
    let sink = Smarthost::start(&["--rcpt-reply", "x@remote.example=550"]);
    let srv = support::delivery::with_aliases(ALIASES, "", &relay(&sink));
    let r = srv.connect().hello().send_mail(
        "x@remote.example",
        &["bob@test.example", "never@test.example"],
        "Subject: nobody to tell\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    // The bounce to x is refused by the relay: postmaster hears of it.
    let pm = wait_messages(&srv, "postmaster", 1);
    let n = notice(&pm[0]);
    assert_eq!(n.subject, "Undelivered Mail Returned to Sender");
    let report = n.part("message/delivery-status");
    assert!(
        report.contains("Final-Recipient: rfc822; x@remote.example")
            && report.contains("Status: 5."),
        "{report}"
    );
    queue_empty(&srv);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(srv.messages("postmaster").len(), 1, "and nothing more");
    assert!(sink.messages().is_empty(), "{}", sink.transcript());
}

#[test]
fn a_delay_is_told_once_and_the_end_of_the_lifetime_bounces() {
    needs_python!();
    let sink = Smarthost::start(&["--rcpt-reply", "later@remote.example=451"]);
    let queue =
        "[queue]\nretry_first = 1\nretry_max = 1\ndelay_warning = 2\nmax_queue_lifetime = 5\n";
    let srv = support::delivery::with_aliases(ALIASES, "", &format!("{queue}{}", relay(&sink)));
    let r = sendmail(
        &srv.config_path,
        &["-i", "-f", "alice@test.example", "later@remote.example"],
        b"Subject: slow\n\nx\n",
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let alice = wait_for("a delay notice and a bounce", || {
        let m = srv.messages("alice");
        (m.len() >= 2).then_some(m)
    });
    queue_empty(&srv);
    let alice = if alice.len() == 2 {
        alice
    } else {
        srv.messages("alice")
    };
    assert_eq!(alice.len(), 2, "one warning, one bounce");
    let warned = notice(&alice[0]);
    assert_eq!(warned.subject, "Delayed Mail (still being retried)");
    let report = warned.part("message/delivery-status");
    assert!(
        report.contains("Action: delayed")
            && report.contains("Status: 4.")
            && report.contains("Will-Retry-Until:"),
        "{report}"
    );
    let bounced = notice(&alice[1]);
    assert_eq!(bounced.subject, "Undelivered Mail Returned to Sender");
    let report = bounced.part("message/delivery-status");
    assert!(
        report.contains("Final-Recipient: rfc822; later@remote.example")
            && report.contains("Action: failed")
            && report.contains("Status: 4.4.7"),
        "{report}"
    );
    assert!(sink.messages().is_empty());
}

#[test]
fn alias_members_elsewhere_are_relayed_and_local_ones_delivered() {
    needs_python!();
    let sink = Smarthost::start(&[]);
    let srv = support::delivery::with_aliases(ALIASES, "", &relay(&sink));
    let r = srv.connect().hello().send_mail(
        "x@remote.example",
        &["far@test.example"],
        "Subject: near and far\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(srv.messages("alice").len(), 1);
    let got = sink.wait_for(1, T);
    assert_eq!(got.len(), 1, "{}", sink.transcript());
    assert_eq!(got[0].mail_from(), "x@remote.example");
    assert_eq!(got[0].rcpt_addresses(), ["someone@remote.example"]);
    assert!(String::from_utf8_lossy(&got[0].data_lf()).contains("Subject: near and far"));
    queue_empty(&srv);
    // Without a relay the alias is refused at RCPT, as before.
    let local_only = support::delivery::with_aliases(ALIASES, "", "");
    let mut c = local_only.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    let r = c.cmd("RCPT TO:<far@test.example>");
    assert!(r.code >= 500, "{r:?}");
}

#[test]
fn a_relay_without_dsn_gets_a_relayed_notice_for_notify_success() {
    needs_python!();
    let sink = Smarthost::start(&["--no-dsn"]);
    let srv = support::delivery::with_aliases(ALIASES, "", &relay(&sink));
    let r = sendmail(
        &srv.config_path,
        &[
            "-i",
            "-N",
            "success",
            "-f",
            "alice@test.example",
            "someone@remote.example",
        ],
        b"Subject: did it go\n\nx\n",
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(sink.wait_for(1, T).len(), 1);
    let alice = wait_messages(&srv, "alice", 1);
    let n = notice(&alice[0]);
    assert_eq!(n.subject, "Successful Mail Delivery Report");
    let report = n.part("message/delivery-status");
    assert!(
        report.contains("Final-Recipient: rfc822; someone@remote.example")
            && report.contains("Action: relayed"),
        "{report}"
    );
}

#[test]
fn a_relay_that_cannot_be_looked_up_defers_and_never_bounces() {
    let srv = support::delivery::with_aliases(
        ALIASES,
        "",
        "[relay]\nhost = \"relay.invalid\"\nport = 2525\ntls = \"none\"\n",
    );
    let r = sendmail(
        &srv.config_path,
        &["-i", "-f", "alice@test.example", "someone@remote.example"],
        b"Subject: nowhere\n\nx\n",
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let listing = wait_for("the deferral", || {
        let l = mailq(&srv.config_path).stdout;
        l.contains("(4.4.3").then_some(l)
    });
    assert!(
        listing.contains("looking up the relay relay.invalid"),
        "{listing}"
    );
    assert!(srv.messages("alice").is_empty(), "no bounce");
}
