//! The client side of SMTP without IO, for the relay: replies assembled
//! from the lines the driver reads (multi-line, bounded), what a server's
//! EHLO reply offers, commands written with their RFC 1870, 6152, 6531 and
//! 3461 parameters, and a message body made into DATA (LF to CRLF, dots
//! stuffed, RFC 5321 4.5.2). The driver in `relay` does the IO and the
//! timeouts.

use super::encoding::{base64_encode, xtext_encode};
use core::fmt;

/// The most lines one reply may have; a server that sends more is broken.
pub const MAX_REPLY_LINES: usize = 200;
/// The longest reply line kept (RFC 5321 4.5.3.1.5 says 512 octets).
pub const MAX_REPLY_LINE: usize = 2048;

/// A whole reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The RFC 3463 status of the first line, if it has one.
    pub fn status(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let word = first.split(' ').next()?;
        let parts: Vec<&str> = word.split('.').collect();
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
        };
        (parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && digits(parts[1], 3)
            && digits(parts[2], 3)
            && parts[0].as_bytes()[0] == b'0' + (self.code / 100) as u8)
            .then_some(word)
    }

    /// The status to report for this reply: its own, else one from its
    /// class.
    pub fn status_or_class(&self) -> String {
        self.status()
            .map_or_else(|| format!("{}.0.0", self.code / 100), str::to_string)
    }
}

/// On one line, for logs and reports: `550 5.1.1 no such user`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for (i, l) in self.lines.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { " / " })?;
            f.write_str(l)?;
        }
        Ok(())
    }
}

/// A reply that does not follow RFC 5321 4.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReply(pub String);

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a reply that is not SMTP: {}", self.0)
    }
}

/// Builds a reply from its lines.
#[derive(Debug, Default)]
pub struct ReplyReader {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyReader {
    /// Takes one line (without its line end); the reply once its last
    /// line has come.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, BadReply> {
        let shown = || String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(BadReply(shown()));
        }
        let code = u16::from(line[0] - b'0') * 100
            + u16::from(line[1] - b'0') * 10
            + u16::from(line[2] - b'0');
        if !(200..600).contains(&code) || self.code.is_some_and(|c| c != code) {
            return Err(BadReply(shown()));
        }
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(BadReply(shown())),
        };
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(BadReply("too many lines".into()));
        }
        let text = line.get(4..).unwrap_or_default();
        let text = &text[..text.len().min(MAX_REPLY_LINE)];
        self.lines.push(
            String::from_utf8_lossy(text)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        );
        self.code = Some(code);
        if !last {
            return Ok(None);
        }
        let reply = Reply {
            code,
            lines: core::mem::take(&mut self.lines),
        };
        self.code = None;
        Ok(Some(reply))
    }
}

/// What a server's EHLO reply offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub starttls: bool,
    pub pipelining: bool,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    /// SIZE with its limit (0: none given).
    pub size: Option<u64>,
    /// AUTH mechanisms, upper case.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Reads the lines after the first (the greeting line) of an EHLO
    /// reply.
    pub fn of(ehlo: &Reply) -> Extensions {
        let mut e = Extensions::default();
        for line in ehlo.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "STARTTLS" => e.starttls = true,
                "PIPELINING" => e.pipelining = true,
                "8BITMIME" => e.eight_bit = true,
                "SMTPUTF8" => e.smtputf8 = true,
                "DSN" => e.dsn = true,
                "SIZE" => e.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "AUTH" => e.auth.extend(words.map(str::to_ascii_uppercase)),
                _ => {}
            }
        }
        e
    }
}

/// The DSN parameters of one message (RFC 3461), as they are passed on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dsn<'a> {
    /// `FULL` or `HDRS`.
    pub ret: Option<&'a str>,
    pub envid: Option<&'a str>,
}

/// `MAIL FROM:<sender>` with the parameters the message needs and the
/// server offers.
pub fn mail_from(
    sender: &str,
    size: u64,
    ext: &Extensions,
    eight_bit: bool,
    smtputf8: bool,
    dsn: &Dsn<'_>,
) -> String {
    let mut c = format!("MAIL FROM:<{sender}>");
    if ext.size.is_some() {
        c.push_str(&format!(" SIZE={size}"));
    }
    if eight_bit && ext.eight_bit {
        c.push_str(" BODY=8BITMIME");
    }
    if smtputf8 && ext.smtputf8 {
        c.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        if let Some(ret) = dsn.ret {
            c.push_str(&format!(" RET={ret}"));
        }
        if let Some(envid) = dsn.envid {
            c.push_str(&format!(" ENVID={}", xtext_encode(envid)));
        }
    }
    c.push_str("\r\n");
    c
}

/// `RCPT TO:<address>`, with NOTIFY and ORCPT when the server takes DSN.
pub fn rcpt_to(
    address: &str,
    ext: &Extensions,
    notify: Option<&str>,
    orcpt: Option<&str>,
) -> String {
    let mut c = format!("RCPT TO:<{address}>");
    if ext.dsn {
        if let Some(n) = notify {
            c.push_str(&format!(" NOTIFY={}", n.to_ascii_uppercase()));
        }
        if let Some(o) = orcpt {
            // ORCPT is `type;address`, the address xtext-encoded.
            match o.split_once(';') {
                Some((kind, addr)) => c.push_str(&format!(" ORCPT={kind};{}", xtext_encode(addr))),
                None => c.push_str(&format!(" ORCPT=rfc822;{}", xtext_encode(o))),
            }
        }
    }
    c.push_str("\r\n");
    c
}

/// `AUTH PLAIN` with its initial response (RFC 4616).
pub fn auth_plain(user: &str, password: &str) -> String {
    let token = format!("\0{user}\0{password}");
    format!("AUTH PLAIN {}\r\n", base64_encode(token.as_bytes()))
}

/// One line of base64, for AUTH LOGIN's two answers.
pub fn auth_line(text: &str) -> String {
    format!("{}\r\n", base64_encode(text.as_bytes()))
}

/// Makes stored message bytes (LF line ends) into a DATA body: CRLF line
/// ends, a dot doubled at the start of a line; [`DataWriter::finish`]
/// ends it with `<CRLF>.<CRLF>`.
#[derive(Debug)]
pub struct DataWriter {
    at_line_start: bool,
}

impl Default for DataWriter {
    fn default() -> Self {
        DataWriter {
            at_line_start: true,
        }
    }
}

impl DataWriter {
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 32);
        for &b in input {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            if b == b'\n' {
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
            } else {
                out.push(b);
                self.at_line_start = false;
            }
        }
    }

    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[&str]) -> Result<Vec<Reply>, BadReply> {
        let mut r = ReplyReader::default();
        let mut out = Vec::new();
        for l in lines {
            if let Some(reply) = r.line(l.as_bytes())? {
                out.push(reply);
            }
        }
        Ok(out)
    }

    #[test]
    fn replies_are_read_whole() {
        let got = read(&[
            "250-relay.example hello",
            "250-SIZE 1000",
            "250 8BITMIME",
            "354 go on",
        ])
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].code, 250);
        assert_eq!(
            got[0].lines,
            ["relay.example hello", "SIZE 1000", "8BITMIME"]
        );
        assert_eq!(got[1].to_string(), "354 go on");
        assert_eq!(read(&["220"]).unwrap()[0].lines, [""]);
        for bad in [
            &["25"][..],
            &["2500 x"],
            &["abc x"],
            &["250-a", "251 b"],
            &["199 x"],
            &["250_x"],
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..MAX_REPLY_LINES + 1)
            .map(|_| "250-x".to_string())
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(read(&many).is_err());
        let ctl = read(&["550 5.1.1 bad\u{7}bell"]).unwrap();
        assert_eq!(ctl[0].lines[0], "5.1.1 bad bell");
    }

    #[test]
    fn status_codes_of_replies() {
        let r = |code, text: &str| Reply {
            code,
            lines: vec![text.into()],
        };
        assert_eq!(r(550, "5.1.1 no such user").status(), Some("5.1.1"));
        assert_eq!(r(451, "4.7.1 try later").status_or_class(), "4.7.1");
        assert_eq!(r(550, "4.1.1 mismatched").status(), None);
        assert_eq!(r(550, "no such user").status_or_class(), "5.0.0");
        assert_eq!(r(250, "2.0.0x ok").status(), None);
        assert!(r(550, "").is_permanent() && !r(451, "").is_permanent());
    }

    #[test]
    fn what_ehlo_offers() {
        let ehlo = Reply {
            code: 250,
            lines: vec![
                "relay.example greets you".into(),
                "PIPELINING".into(),
                "size 35882577".into(),
                "8BITMIME".into(),
                "STARTTLS".into(),
                "AUTH PLAIN login".into(),
                "DSN".into(),
                "SMTPUTF8".into(),
            ],
        };
        let e = Extensions::of(&ehlo);
        assert!(e.pipelining && e.eight_bit && e.starttls && e.dsn && e.smtputf8);
        assert_eq!(e.size, Some(35_882_577));
        assert_eq!(e.auth, ["PLAIN", "LOGIN"]);
        let bare = Extensions::of(&Reply {
            code: 250,
            lines: vec!["x".into(), "SIZE".into()],
        });
        assert_eq!(bare.size, Some(0));
        assert!(!bare.starttls);
    }

    #[test]
    fn commands_carry_only_what_is_offered() {
        let all = Extensions {
            eight_bit: true,
            smtputf8: true,
            dsn: true,
            size: Some(0),
            ..Extensions::default()
        };
        let dsn = Dsn {
            ret: Some("HDRS"),
            envid: Some("QQ+1=2"),
        };
        assert_eq!(
            mail_from("a@b.example", 123, &all, true, true, &dsn),
            "MAIL FROM:<a@b.example> SIZE=123 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1+3D2\r\n"
        );
        assert_eq!(
            mail_from("", 123, &Extensions::default(), true, false, &dsn),
            "MAIL FROM:<>\r\n"
        );
        assert_eq!(
            rcpt_to(
                "c@d.example",
                &all,
                Some("success,failure"),
                Some("rfc822;c+x@d.example")
            ),
            "RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+2Bx@d.example\r\n"
        );
        assert_eq!(
            rcpt_to("c@d.example", &Extensions::default(), Some("never"), None),
            "RCPT TO:<c@d.example>\r\n"
        );
        assert_eq!(
            auth_plain("user", "pass"),
            "AUTH PLAIN AHVzZXIAcGFzcw==\r\n"
        );
        assert_eq!(auth_line("user"), "dXNlcg==\r\n");
    }

    #[test]
    fn data_is_stuffed_and_ends_with_a_dot() {
        let mut out = Vec::new();
        let mut w = DataWriter::default();
        // Split anywhere, including between a line end and a dot.
        w.write(b"a\n.b\n", &mut out);
        w.write(b".", &mut out);
        w.write(b"\n..\nlast", &mut out);
        w.finish(&mut out);
        assert_eq!(out, b"a\r\n..b\r\n..\r\n...\r\nlast\r\n.\r\n");
        let mut out = Vec::new();
        let mut w = DataWriter::default();
        w.write(b".\n", &mut out);
        w.finish(&mut out);
        assert_eq!(out, b"..\r\n.\r\n");
        let mut out = Vec::new();
        DataWriter::default().finish(&mut out);
        assert_eq!(out, b".\r\n");
    }
}
