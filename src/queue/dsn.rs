//! Delivery status notifications (RFC 3464): the bounce sent to a
//! message's sender for the recipients that could not have it, the
//! warning that a message is delayed, and the report of a delivery the
//! sender asked to hear of (NOTIFY=SUCCESS, RFC 3461), each as a
//! `multipart/report; report-type=delivery-status` message from
//! MAILER-DAEMON with a human-readable part, the machine-readable report
//! and the original message's header, or all of it with RET=FULL (RFC
//! 6522). Headers or addresses
//! that are not ASCII use the RFC 6533 `global` types. Composing is pure;
//! [`read_header`] is the one read it needs.

use crate::delivery::Body;
use crate::smtp::trace::{rfc5322_date, UnixTime};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read};

/// The most of the original header returned.
pub const MAX_HEADER: usize = 64 * 1024;
/// The most of a diagnostic kept.
const MAX_DIAGNOSTIC: usize = 400;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Some recipients will never have the message.
    Failure,
    /// Some recipients do not have it yet; it is tried until `until`.
    Delay { until: UnixTime },
    /// Recipients have it (or a relay that cannot report took it).
    Success,
}

/// RFC 3464 2.3.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Passed to a relay that will not report on it.
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient reported on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub action: Action,
    /// Where delivery was attempted (after alias expansion).
    pub recipient: String,
    /// What the client gave in RCPT TO, when it differs.
    pub original: Option<String>,
    /// An RFC 3463 status, such as `5.1.1`.
    pub status: String,
    pub diagnostic: String,
}

/// Everything a notification says.
pub struct Report<'a> {
    /// Our host name: the reporting MTA.
    pub hostname: &'a str,
    /// The id of the notification itself.
    pub id: &'a str,
    /// The queue id of the message it reports on.
    pub original_id: &'a str,
    /// Who the notification goes to: the message's sender.
    pub to: &'a str,
    pub arrival: UnixTime,
    pub now: UnixTime,
    pub kind: Kind,
    pub entries: &'a [Entry],
    /// The original message's header (or all of it, with `full`), LF
    /// line ends.
    pub returned: &'a [u8],
    pub full: bool,
    /// The sender's ENVID (RFC 3461 4.4), xtext decoded.
    pub envid: Option<&'a str>,
}

/// The notification as stored (LF line ends).
pub fn compose(r: &Report<'_>) -> Vec<u8> {
    // Unguessable, so that no header line sent to us can end a part.
    let boundary = format!("{}/{}/{:016x}", r.id, r.hostname, crate::clock::random());
    let global = !r.returned.is_ascii()
        || !r.to.is_ascii()
        || r.entries.iter().any(|f| {
            !f.recipient.is_ascii() || f.original.as_deref().is_some_and(|o| !o.is_ascii())
        });
    let addr_type = if global { "utf-8" } else { "rfc822" };
    let (subject, words) = match r.kind {
        Kind::Failure => (
            "Undelivered Mail Returned to Sender".to_string(),
            "Your message could not be delivered to the recipients below.\n\
             Any other recipients have it."
                .to_string(),
        ),
        Kind::Delay { until } => (
            "Delayed Mail (still being retried)".to_string(),
            format!(
                "Your message has not been delivered yet to the recipients below.\n\
                 It is still being tried, until {}. Nothing needs doing now.",
                rfc5322_date(until)
            ),
        ),
        Kind::Success => (
            "Successful Mail Delivery Report".to_string(),
            "Your message was delivered to the recipients below, as you asked\n\
             to be told (or passed to a mail system that does not report)."
                .to_string(),
        ),
    };
    let what = if r.full {
        "message"
    } else {
        "message's header"
    };
    let mut m = String::new();
    let _ = write!(
        m,
        "From: MAILER-DAEMON@{host} (Mail Delivery System)\n\
         To: <{to}>\n\
         Subject: {subject}\n\
         Date: {date}\n\
         Message-ID: <{id}@{host}>\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status;\n\
         \tboundary=\"{boundary}\"\n\
         \n\
         This is a MIME-encapsulated message.\n\
         \n\
         --{boundary}\n\
         Content-Description: Notification\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         This is the mail system at host {host}.\n\
         \n\
         {words} The {what} is attached.\n\
         \n",
        host = r.hostname,
        to = r.to,
        date = rfc5322_date(r.now),
        id = r.id,
    );
    for f in r.entries {
        let via = f
            .original
            .as_ref()
            .map_or(String::new(), |o| format!(" (expanded from <{o}>)"));
        let _ = writeln!(m, "<{}>{via}: {}", f.recipient, one_line(&f.diagnostic));
    }
    let _ = write!(
        m,
        "\n--{boundary}\n\
         Content-Description: Delivery report\n\
         Content-Type: message/{global}delivery-status\n\
         \n\
         Reporting-MTA: dns; {host}\n",
        global = if global { "global-" } else { "" },
        host = r.hostname,
    );
    if let Some(envid) = r.envid {
        let _ = writeln!(m, "Original-Envelope-Id: {}", one_line(envid));
    }
    let _ = write!(
        m,
        "X-Mailroom-Queue-ID: {}\nArrival-Date: {}\n",
        r.original_id,
        rfc5322_date(r.arrival)
    );
    // The report itself is ASCII unless it is a global one (RFC 6533).
    let field = |text: &str| {
        let line = one_line(text);
        if global {
            line
        } else {
            line.chars()
                .map(|c| if c.is_ascii() { c } else { '?' })
                .collect()
        }
    };
    for f in r.entries {
        let _ = write!(m, "\nFinal-Recipient: {addr_type}; {}\n", f.recipient);
        if let Some(o) = &f.original {
            let _ = writeln!(m, "Original-Recipient: {addr_type}; {o}");
        }
        let _ = write!(m, "Action: {}\nStatus: {}\n", f.action.as_str(), f.status);
        if !f.diagnostic.is_empty() {
            let _ = writeln!(m, "Diagnostic-Code: X-mailroom; {}", field(&f.diagnostic));
        }
        if let Kind::Delay { until } = r.kind {
            let _ = writeln!(m, "Will-Retry-Until: {}", rfc5322_date(until));
        }
    }
    let (description, content_type) = match (r.full, global) {
        (false, false) => ("Message Headers", "text/rfc822-headers"),
        (false, true) => ("Message Headers", "message/global-headers"),
        (true, false) => ("Message", "message/rfc822"),
        (true, true) => ("Message", "message/global"),
    };
    let _ = write!(
        m,
        "\n--{boundary}\n\
         Content-Description: {description}\n\
         Content-Type: {content_type}\n\
         \n",
    );
    let mut out = m.into_bytes();
    out.extend_from_slice(r.returned);
    if !r.returned.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    out
}

/// A diagnostic on one printable line of bounded length.
fn one_line(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_DIAGNOSTIC {
        let mut cut = MAX_DIAGNOSTIC;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// The header of a spooled message (everything before the first empty
/// line), with LF line ends, cut at a line end after [`MAX_HEADER`].
pub fn read_header(body: Body<'_>) -> io::Result<Vec<u8>> {
    let mut reader = BufReader::new(body.reader().take(MAX_HEADER as u64));
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 || !line.ends_with(b"\n") {
            break;
        }
        if line.ends_with(b"\r\n") {
            line.truncate(line.len() - 2);
            line.push(b'\n');
        }
        if line == b"\n" {
            break;
        }
        out.extend_from_slice(&line);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report<'a>(entries: &'a [Entry], header: &'a [u8]) -> Report<'a> {
        Report {
            hostname: "mx.example.org",
            id: "BOUNCE1",
            original_id: "ORIG1",
            to: "sender@example.org",
            arrival: UnixTime::from_secs(1_795_358_400),
            now: UnixTime::from_secs(1_795_358_401),
            kind: Kind::Failure,
            entries,
            returned: header,
            full: false,
            envid: None,
        }
    }

    #[test]
    fn a_report_has_the_three_parts() {
        let failed = [Entry {
            action: Action::Failed,
            recipient: "bob@example.org".into(),
            original: Some("staff@example.org".into()),
            status: "5.3.0".into(),
            diagnostic: "\"exit 1\" exited 1: no\nsuch list".into(),
        }];
        let text =
            String::from_utf8(compose(&report(&failed, b"Subject: hi\nFrom: a@b\n"))).unwrap();
        assert!(text.starts_with(
            "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\nTo: <sender@example.org>\n"
        ));
        let boundary = text
            .split("boundary=\"")
            .nth(1)
            .and_then(|b| b.split('"').next())
            .unwrap();
        assert!(
            boundary.starts_with("BOUNCE1/mx.example.org/") && boundary.len() == 39,
            "{boundary}"
        );
        assert!(text.contains(&format!("\n--{boundary}--\n")));
        assert!(text.contains("<bob@example.org> (expanded from <staff@example.org>): \"exit 1\" exited 1: no such list\n"));
        assert!(text.contains(
            "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\nX-Mailroom-Queue-ID: ORIG1\nArrival-Date: Sun, 22 Nov 2026 14:40:00 +0000\n\n\
             Final-Recipient: rfc822; bob@example.org\nOriginal-Recipient: rfc822; staff@example.org\nAction: failed\nStatus: 5.3.0\n"
        ));
        assert!(text.contains(&format!(
            "Content-Type: text/rfc822-headers\n\nSubject: hi\nFrom: a@b\n\n--{boundary}--\n"
        )));
        assert!(text.is_ascii());
    }

    #[test]
    fn utf8_uses_the_global_types() {
        let failed = [Entry {
            action: Action::Failed,
            recipient: "jöran@example.org".into(),
            original: None,
            status: "4.3.1".into(),
            diagnostic: "full".into(),
        }];
        let text =
            String::from_utf8(compose(&report(&failed, "Subject: grüße\n".as_bytes()))).unwrap();
        assert!(text.contains("Content-Type: message/global-delivery-status\n"));
        assert!(text.contains("Final-Recipient: utf-8; jöran@example.org\n"));
        assert!(text.contains("Content-Type: message/global-headers\n"));
        assert!(!text.contains("Original-Recipient"));
    }

    #[test]
    fn an_ascii_report_stays_ascii() {
        let failed = [Entry {
            action: Action::Failed,
            recipient: "bob@example.org".into(),
            original: None,
            status: "5.3.0".into(),
            diagnostic: "the command exited 1: Empfänger unbekannt".into(),
        }];
        let text = String::from_utf8(compose(&report(&failed, b"Subject: hi\n"))).unwrap();
        assert!(
            text.contains(
                "Diagnostic-Code: X-mailroom; the command exited 1: Empf?nger unbekannt\n"
            ),
            "{text}"
        );
        // The human-readable part may say it as it is.
        assert!(text.contains("<bob@example.org>: the command exited 1: Empfänger unbekannt\n"));
        assert_ne!(
            compose(&report(&failed, b"")),
            compose(&report(&failed, b"")),
            "boundaries differ"
        );
    }

    #[test]
    fn delays_and_successes_say_so_and_full_returns_the_message() {
        let entries = [
            Entry {
                action: Action::Delivered,
                recipient: "bob@example.org".into(),
                original: None,
                status: "2.0.0".into(),
                diagnostic: String::new(),
            },
            Entry {
                action: Action::Relayed,
                recipient: "carol@remote.example".into(),
                original: None,
                status: "2.0.0".into(),
                diagnostic: "250 2.0.0 queued as 42".into(),
            },
        ];
        let message = b"Subject: hi\n\nthe body\n";
        let r = Report {
            kind: Kind::Success,
            full: true,
            envid: Some("QQ314159"),
            ..report(&entries, message)
        };
        let text = String::from_utf8(compose(&r)).unwrap();
        assert!(text.contains("Subject: Successful Mail Delivery Report\n"));
        assert!(text.contains("Original-Envelope-Id: QQ314159\n"));
        assert!(text.contains(
            "Final-Recipient: rfc822; bob@example.org\nAction: delivered\nStatus: 2.0.0\n\n"
        ));
        assert!(text.contains(
            "Action: relayed\nStatus: 2.0.0\nDiagnostic-Code: X-mailroom; 250 2.0.0 queued as 42\n"
        ));
        assert!(text.contains("Content-Type: message/rfc822\n\nSubject: hi\n\nthe body\n\n--"));

        let late = [Entry {
            action: Action::Delayed,
            status: "4.4.1".into(),
            ..entries[1].clone()
        }];
        let r = Report {
            kind: Kind::Delay {
                until: UnixTime::from_secs(1_795_790_400),
            },
            ..report(&late, b"Subject: hi\n")
        };
        let text = String::from_utf8(compose(&r)).unwrap();
        assert!(text.contains("Subject: Delayed Mail (still being retried)\n"));
        assert!(text.contains("until Fri, 27 Nov 2026 14:40:00 +0000."));
        assert!(text.contains("Action: delayed\nStatus: 4.4.1\n"));
        assert!(text.contains("Will-Retry-Until: Fri, 27 Nov 2026 14:40:00 +0000\n"));
        assert!(text.contains("Content-Type: text/rfc822-headers\n"));
    }

    #[test]
    fn long_diagnostics_are_cut() {
        assert_eq!(one_line(&"é".repeat(300)).len(), 400 + 3);
    }
}
