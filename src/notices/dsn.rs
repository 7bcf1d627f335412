//! Delivery status notifications (RFC 3464): the bounce sent to a
//! message's sender for the recipients that could not have it, as a
//! `multipart/report; report-type=delivery-status` message from
//! MAILER-DAEMON with a human-readable part, the machine-readable report
//! and the original message's header (RFC 6522). Headers or addresses
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

/// One recipient the message could not be delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
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
    pub failed: &'a [Failed],
    /// The original message's header, LF line ends.
    pub header: &'a [u8],
}

/// The notification as stored (LF line ends).
pub fn compose(r: &Report<'_>) -> Vec<u8> {
    // Unguessable, so that no header line sent to us can end a part.
    let boundary = format!("{}/{}/{:016x}", r.id, r.hostname, crate::clock::random());
    let global = !r.header.is_ascii()
        || !r.to.is_ascii()
        || r.failed.iter().any(|f| {
            !f.recipient.is_ascii() || f.original.as_deref().is_some_and(|o| !o.is_ascii())
        });
    let addr_type = if global { "utf-8" } else { "rfc822" };
    let mut m = String::new();
    let _ = write!(
        m,
        "From: MAILER-DAEMON@{host} (Mail Delivery System)\n\
         To: <{to}>\n\
         Subject: Undelivered Mail Returned to Sender\n\
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
         Your message could not be delivered to the recipients below.\n\
         Any other recipients have it. The message's header is attached.\n\
         \n",
        host = r.hostname,
        to = r.to,
        date = rfc5322_date(r.now),
        id = r.id,
    );
    for f in r.failed {
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
         Reporting-MTA: dns; {host}\n\
         X-Mailroom-Queue-ID: {qid}\n\
         Arrival-Date: {arrival}\n",
        global = if global { "global-" } else { "" },
        host = r.hostname,
        qid = r.original_id,
        arrival = rfc5322_date(r.arrival),
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
    for f in r.failed {
        let _ = write!(m, "\nFinal-Recipient: {addr_type}; {}\n", f.recipient);
        if let Some(o) = &f.original {
            let _ = writeln!(m, "Original-Recipient: {addr_type}; {o}");
        }
        let _ = write!(
            m,
            "Action: failed\nStatus: {}\nDiagnostic-Code: X-mailroom; {}\n",
            f.status,
            field(&f.diagnostic)
        );
    }
    let _ = write!(
        m,
        "\n--{boundary}\n\
         Content-Description: Undelivered Message Headers\n\
         Content-Type: {}\n\
         \n",
        if global {
            "message/global-headers"
        } else {
            "text/rfc822-headers"
        }
    );
    let mut out = m.into_bytes();
    out.extend_from_slice(r.header);
    if !r.header.ends_with(b"\n") {
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

    fn report<'a>(failed: &'a [Failed], header: &'a [u8]) -> Report<'a> {
        Report {
            hostname: "mx.example.org",
            id: "BOUNCE1",
            original_id: "ORIG1",
            to: "sender@example.org",
            arrival: UnixTime::from_secs(1_795_358_400),
            now: UnixTime::from_secs(1_795_358_401),
            failed,
            header,
        }
    }

    #[test]
    fn a_report_has_the_three_parts() {
        let failed = [Failed {
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
        let failed = [Failed {
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
        let failed = [Failed {
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
    fn long_diagnostics_are_cut() {
        assert_eq!(one_line(&"é".repeat(300)).len(), 400 + 3);
    }
}
