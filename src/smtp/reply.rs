//! SMTP replies: one vocabulary of named replies, each with its RFC 3463
//! enhanced status code, and the wire rendering (`250-...`/`250 ...`).
//!
//! Reply text often carries client-supplied data (an address, a HELO name),
//! so the constructor replaces CR, LF and other control characters: no input
//! can ever break the reply framing or inject a second reply line.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<Enhanced>,
    lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A reply with one line of text. Panics on a code outside 200..=599 or
    /// an enhanced code whose class disagrees with it: both are programming
    /// errors, never client-driven.
    pub fn new(code: u16, enhanced: Option<Enhanced>, text: impl Into<Cow<'static, str>>) -> Reply {
        assert!(
            (200..=599).contains(&code),
            "reply code {code} out of range"
        );
        if let Some(e) = enhanced {
            assert_eq!(u16::from(e.0), code / 100, "enhanced code class mismatch");
        }
        Reply {
            code,
            enhanced,
            lines: vec![clean(text.into())],
        }
    }

    /// Adds a line; the reply becomes multi-line.
    pub fn line(mut self, text: impl Into<Cow<'static, str>>) -> Reply {
        self.lines.push(clean(text.into()));
        self
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced(&self) -> Option<Enhanced> {
        self.enhanced
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.as_ref())
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Appends the wire form. `enhanced` says whether the session shows
    /// enhanced status codes (RFC 2034: only once the client used EHLO).
    pub fn write_to(&self, out: &mut Vec<u8>, enhanced: bool) {
        let last = self.lines.len() - 1;
        let mut out = Bytes(out);
        for (i, text) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let code = self.code;
            // Straight into `out`: writing to a Vec cannot fail.
            let _ = match self.enhanced.filter(|_| enhanced) {
                Some(e) => write!(out, "{code}{sep}{e} {text}\r\n"),
                None => write!(out, "{code}{sep}{text}\r\n"),
            };
        }
    }

    /// The wire form as a string, for logs and tests.
    pub fn render(&self, enhanced: bool) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out, enhanced);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Formatted text appended to a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render(true).trim_end())
    }
}

/// Longest reply text: with `550-5.1.1 ` before it and CRLF after it, a
/// line stays within RFC 5321's 512 octets (4.5.3.1.5).
const MAX_TEXT: usize = 500;

fn clean(text: Cow<'static, str>) -> Cow<'static, str> {
    let text = if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )
    } else {
        text
    };
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", &text[..end]))
}

const fn e(class: u8, subject: u16, detail: u16) -> Option<Enhanced> {
    Some(Enhanced(class, subject, detail))
}

// The named replies. Each function is one line of the server's vocabulary;
// the session picks among them and never builds codes ad hoc.

pub fn greeting(host: &str) -> Reply {
    Reply::new(220, None, format!("{host} ESMTP mailroom"))
}
pub fn closing(host: &str) -> Reply {
    Reply::new(221, e(2, 0, 0), format!("{host} closing connection"))
}
pub fn ok() -> Reply {
    Reply::new(250, e(2, 0, 0), "Ok")
}
pub fn helo_ok(host: &str, client: &str) -> Reply {
    Reply::new(250, None, format!("{host} Hello {client}"))
}
pub fn sender_ok() -> Reply {
    Reply::new(250, e(2, 1, 0), "Sender ok")
}
pub fn recipient_ok() -> Reply {
    Reply::new(250, e(2, 1, 5), "Recipient ok")
}
pub fn reset_ok() -> Reply {
    Reply::new(250, e(2, 0, 0), "Reset state")
}
pub fn queued(id: &str) -> Reply {
    Reply::new(250, e(2, 0, 0), format!("Ok: queued as {id}"))
}
pub fn chunk_ok(octets: u64) -> Reply {
    Reply::new(250, e(2, 0, 0), format!("{octets} octets received"))
}
pub fn start_data() -> Reply {
    Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
}
pub fn ready_for_tls() -> Reply {
    Reply::new(220, e(2, 0, 0), "Ready to start TLS")
}
pub fn tls_required() -> Reply {
    Reply::new(530, e(5, 7, 0), "Must issue a STARTTLS command first")
}
pub fn cannot_vrfy() -> Reply {
    Reply::new(
        252,
        e(2, 1, 5),
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}
pub fn shutting_down(host: &str) -> Reply {
    Reply::new(
        421,
        e(4, 3, 0),
        format!("{host} Service shutting down, closing connection"),
    )
}
pub fn timeout(host: &str) -> Reply {
    Reply::new(421, e(4, 4, 2), format!("{host} Error: timeout exceeded"))
}
pub fn too_many_errors(host: &str) -> Reply {
    Reply::new(421, e(4, 7, 0), format!("{host} Error: too many errors"))
}
pub fn too_busy(host: &str) -> Reply {
    Reply::new(421, e(4, 7, 0), format!("{host} too busy, try again later"))
}
pub fn too_many_connections(host: &str) -> Reply {
    Reply::new(
        421,
        e(4, 7, 0),
        format!("{host} too many connections from your address, try again later"),
    )
}
pub fn local_error() -> Reply {
    Reply::new(
        451,
        e(4, 3, 0),
        "Error: local error in processing, try again later",
    )
}
/// A content filter (milter) refused: as Postfix words it.
pub fn filter_rejected() -> Reply {
    Reply::new(550, e(5, 7, 1), "Command rejected")
}
/// A content filter said to try later, or could not be asked.
pub fn filter_tempfailed() -> Reply {
    Reply::new(451, e(4, 7, 1), "Service unavailable - try again later")
}
/// A content filter quarantined the message, and there is no quarantine
/// mailbox to deliver it to.
pub fn quarantined() -> Reply {
    Reply::new(550, e(5, 7, 1), "Message quarantined by a content filter")
}
pub fn insufficient_storage() -> Reply {
    Reply::new(452, e(4, 3, 1), "Error: insufficient system storage")
}
pub fn too_many_recipients() -> Reply {
    Reply::new(452, e(4, 5, 3), "Error: too many recipients")
}
pub fn unrecognized() -> Reply {
    Reply::new(500, e(5, 5, 2), "Error: command not recognized")
}
pub fn line_too_long() -> Reply {
    Reply::new(500, e(5, 5, 6), "Error: line too long")
}
pub fn syntax(text: &'static str) -> Reply {
    Reply::new(501, e(5, 5, 4), text)
}
pub fn bad_characters() -> Reply {
    Reply::new(501, e(5, 5, 2), "Error: invalid characters in command")
}
pub fn bad_helo(arg: &str) -> Reply {
    Reply::new(
        501,
        e(5, 5, 2),
        format!("<{arg}>: Helo command rejected: invalid hostname"),
    )
}
pub fn bad_sender_syntax(why: &str) -> Reply {
    Reply::new(501, e(5, 1, 7), format!("Bad sender address syntax: {why}"))
}
pub fn bad_recipient_syntax(why: &str) -> Reply {
    Reply::new(
        501,
        e(5, 1, 3),
        format!("Bad recipient address syntax: {why}"),
    )
}
pub fn not_implemented() -> Reply {
    Reply::new(502, e(5, 5, 1), "Error: command not implemented")
}
pub fn bad_sequence(text: &'static str) -> Reply {
    Reply::new(503, e(5, 5, 1), text)
}
pub fn parameter_not_implemented(param: &str) -> Reply {
    Reply::new(555, e(5, 5, 4), format!("Unsupported parameter: {param}"))
}
pub fn user_unknown(rcpt: &str) -> Reply {
    Reply::new(
        550,
        e(5, 1, 1),
        format!("<{rcpt}>: Recipient address rejected: user unknown"),
    )
}
pub fn relay_denied(rcpt: &str) -> Reply {
    Reply::new(550, e(5, 7, 1), format!("<{rcpt}>: relaying denied"))
}
pub fn alias_loop(rcpt: &str) -> Reply {
    Reply::new(550, e(5, 4, 6), format!("<{rcpt}>: mail forwarding loop"))
}
pub fn remote_alias(rcpt: &str) -> Reply {
    Reply::new(
        550,
        e(5, 7, 1),
        format!("<{rcpt}>: forwards to a remote address, and relaying is not available"),
    )
}
pub fn not_permitted(rcpt: &str) -> Reply {
    Reply::new(
        550,
        e(5, 7, 1),
        format!("<{rcpt}>: delivery not permitted by the mailbox's configuration"),
    )
}
pub fn bare_newline() -> Reply {
    Reply::new(
        550,
        e(5, 5, 2),
        "Error: bare <CR> or <LF> in message; lines must end with <CR><LF>",
    )
}
pub fn utf8_not_permitted() -> Reply {
    Reply::new(
        553,
        e(5, 6, 7),
        "Non-ASCII address requires the SMTPUTF8 parameter",
    )
}
pub fn message_too_big() -> Reply {
    Reply::new(552, e(5, 3, 4), "Error: message size exceeds fixed limit")
}
pub fn mail_loop() -> Reply {
    Reply::new(554, e(5, 4, 6), "Error: too many hops (mail loop detected)")
}
pub fn delivered_to_loop(rcpt: &str) -> Reply {
    Reply::new(
        554,
        e(5, 4, 6),
        format!("Error: mail loop: already delivered to <{rcpt}>"),
    )
}
pub fn no_valid_recipients() -> Reply {
    Reply::new(554, e(5, 5, 1), "Error: no valid recipients")
}
pub fn delivery_failed(text: String) -> Reply {
    Reply::new(554, e(5, 3, 0), text)
}

// AUTH (RFC 4954).

/// A `334` challenge: base64 text, or nothing.
pub fn auth_challenge(base64: &'static str) -> Reply {
    Reply::new(334, None, base64)
}
pub fn auth_cancelled() -> Reply {
    Reply::new(501, e(5, 0, 0), "Authentication cancelled")
}
pub fn auth_undecodable(what: &'static str) -> Reply {
    Reply::new(501, e(5, 5, 2), what)
}
pub fn auth_mechanism_unknown() -> Reply {
    Reply::new(504, e(5, 5, 4), "Unrecognized authentication type")
}
pub fn auth_ok() -> Reply {
    Reply::new(235, e(2, 7, 0), "Authentication successful")
}
pub fn auth_failed() -> Reply {
    Reply::new(535, e(5, 7, 8), "Authentication credentials invalid")
}
pub fn auth_needs_tls() -> Reply {
    Reply::new(
        538,
        e(5, 7, 11),
        "Encryption required for requested authentication mechanism",
    )
}
pub fn auth_required() -> Reply {
    Reply::new(530, e(5, 7, 0), "Authentication required")
}
pub fn too_many_auth_failures(host: &str) -> Reply {
    Reply::new(
        421,
        e(4, 7, 0),
        format!("{host} Too many failed authentication attempts, closing connection"),
    )
}
pub fn too_many_auth_failures_from(host: &str) -> Reply {
    Reply::new(
        421,
        e(4, 7, 0),
        format!("{host} Too many failed logins from your address, try again later"),
    )
}
pub fn sender_not_owned(sender: &str, login: &str) -> Reply {
    Reply::new(
        553,
        e(5, 7, 1),
        format!("<{sender}>: Sender address rejected: not owned by user {login}"),
    )
}
pub fn auth_other_identity() -> Reply {
    Reply::new(
        535,
        e(5, 7, 8),
        "Authentication failed: you may not act as another user",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_and_without_enhanced() {
        let r = sender_ok();
        assert_eq!(r.render(true), "250 2.1.0 Sender ok\r\n");
        assert_eq!(r.render(false), "250 Sender ok\r\n");
    }

    #[test]
    fn multi_line_uses_dash_until_last() {
        let r = Reply::new(250, None, "a").line("b").line("c");
        assert_eq!(r.render(true), "250-a\r\n250-b\r\n250 c\r\n");
        let r = Reply::new(214, e(2, 0, 0), "x").line("y");
        assert_eq!(r.render(true), "214-2.0.0 x\r\n214 2.0.0 y\r\n");
    }

    #[test]
    fn text_cannot_break_framing() {
        let r = user_unknown("evil\r\n250 ok");
        let wire = r.render(true);
        assert_eq!(wire.matches("\r\n").count(), 1);
        assert!(wire.starts_with("550 5.1.1 <evil  250 ok>"));
    }

    #[test]
    fn lines_stay_within_512_octets() {
        for arg in ["x".repeat(5000), "ü".repeat(3000)] {
            let r = bad_helo(&arg).line(arg.clone());
            for line in r.render(true).split_inclusive("\r\n") {
                assert!(line.len() <= 512, "{} octets", line.len());
                assert!(line.ends_with("...\r\n"));
            }
        }
    }

    #[test]
    #[should_panic]
    fn code_out_of_range_is_refused() {
        Reply::new(199, None, "x");
    }

    #[test]
    #[should_panic]
    fn enhanced_class_must_match() {
        Reply::new(550, e(4, 0, 0), "x");
    }

    #[test]
    fn named_replies_are_consistent() {
        let all = [
            greeting("h"),
            closing("h"),
            ok(),
            helo_ok("h", "c"),
            sender_ok(),
            recipient_ok(),
            reset_ok(),
            queued("id"),
            chunk_ok(1),
            start_data(),
            cannot_vrfy(),
            shutting_down("h"),
            timeout("h"),
            too_busy("h"),
            too_many_connections("h"),
            local_error(),
            insufficient_storage(),
            too_many_recipients(),
            unrecognized(),
            line_too_long(),
            syntax("x"),
            bad_characters(),
            bad_helo("x"),
            bad_sender_syntax("x"),
            bad_recipient_syntax("x"),
            not_implemented(),
            bad_sequence("x"),
            parameter_not_implemented("X"),
            user_unknown("x"),
            relay_denied("x"),
            alias_loop("x"),
            remote_alias("x"),
            not_permitted("x"),
            bare_newline(),
            utf8_not_permitted(),
            message_too_big(),
            mail_loop(),
            delivered_to_loop("x"),
            no_valid_recipients(),
            delivery_failed("x".into()),
            auth_challenge("VXNlcm5hbWU6"),
            auth_cancelled(),
            auth_undecodable("x"),
            auth_mechanism_unknown(),
            auth_other_identity(),
            auth_ok(),
            auth_failed(),
            auth_needs_tls(),
            auth_required(),
            too_many_auth_failures("h"),
            too_many_auth_failures_from("h"),
            sender_not_owned("a@b", "c"),
        ];
        for r in all {
            let wire = r.render(true);
            assert!(wire.ends_with("\r\n"));
            assert_eq!(&wire[..3], r.code().to_string());
        }
    }
}
