//! The milter protocol (Sendmail's mail filter protocol, version 6, as
//! libmilter and Postfix speak it), the MTA's side, pure: the packets
//! the MTA sends, encoded, and the filter's replies, decoded from bytes
//! as they arrive. A packet is a 4-octet big-endian length (the command
//! octet included), the command octet, and its data; strings are
//! NUL-terminated. Nothing here reads or writes a socket.

use std::fmt;

/// The protocol version spoken.
pub const VERSION: u32 = 6;

/// The largest packet accepted from a filter: a body chunk (64 KiB) or a
/// reply, with room to spare. Past it the filter is broken.
pub const MAX_PACKET: usize = 1 << 20;

/// Body chunks sent to a filter are at most this long (libmilter's
/// MILTER_CHUNK_SIZE).
pub const CHUNK: usize = 65535;

/// What a filter may do to a message (SMFIF_*), offered in negotiation.
pub mod actions {
    pub const ADD_HEADERS: u32 = 0x01;
    pub const CHANGE_BODY: u32 = 0x02;
    pub const ADD_RCPT: u32 = 0x04;
    pub const DELETE_RCPT: u32 = 0x08;
    pub const CHANGE_HEADERS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHANGE_FROM: u32 = 0x40;
    pub const ADD_RCPT_PAR: u32 = 0x80;
    pub const SET_SYMLIST: u32 = 0x100;
}

/// Which steps the filter wants and which it answers (SMFIP_*).
pub mod steps {
    pub const NO_CONNECT: u32 = 0x1;
    pub const NO_HELO: u32 = 0x2;
    pub const NO_MAIL: u32 = 0x4;
    pub const NO_RCPT: u32 = 0x8;
    pub const NO_BODY: u32 = 0x10;
    pub const NO_HEADERS: u32 = 0x20;
    pub const NO_EOH: u32 = 0x40;
    pub const NO_REPLY_HEADER: u32 = 0x80;
    pub const NO_UNKNOWN: u32 = 0x100;
    pub const NO_DATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJECTED: u32 = 0x800;
    pub const NO_REPLY_CONNECT: u32 = 0x1000;
    pub const NO_REPLY_HELO: u32 = 0x2000;
    pub const NO_REPLY_MAIL: u32 = 0x4000;
    pub const NO_REPLY_RCPT: u32 = 0x8000;
    pub const NO_REPLY_DATA: u32 = 0x10000;
    pub const NO_REPLY_UNKNOWN: u32 = 0x20000;
    pub const NO_REPLY_EOH: u32 = 0x40000;
    pub const NO_REPLY_BODY: u32 = 0x80000;
    pub const HEADER_LEADING_SPACE: u32 = 0x100000;
}

/// Version, actions and steps: what each side offers in SMFIC_OPTNEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub version: u32,
    pub actions: u32,
    pub steps: u32,
}

/// The client's address, as SMFIC_CONNECT gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family<'a> {
    Unknown,
    Unix(&'a str),
    Inet { port: u16, address: &'a str },
    Inet6 { port: u16, address: &'a str },
}

/// What the MTA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Negotiate(Options),
    /// Macros for the command that follows (its code, as `b'C'`).
    Macros {
        stage: u8,
        pairs: &'a [(&'a str, &'a str)],
    },
    Connect {
        hostname: &'a str,
        family: Family<'a>,
    },
    Helo(&'a str),
    /// The reverse path in angle brackets, then the ESMTP parameters.
    Mail(&'a [&'a str]),
    /// The forward path in angle brackets, then the ESMTP parameters.
    Rcpt(&'a [&'a str]),
    Data,
    Header {
        name: &'a str,
        value: &'a str,
    },
    EndOfHeaders,
    /// At most [`CHUNK`] octets.
    Body(&'a [u8]),
    EndOfMessage,
    Abort,
    Quit,
}

impl Command<'_> {
    /// The command's octet, which also names its stage in the macros
    /// sent for it.
    pub fn code(&self) -> u8 {
        match self {
            Command::Negotiate(_) => b'O',
            Command::Macros { .. } => b'D',
            Command::Connect { .. } => b'C',
            Command::Helo(_) => b'H',
            Command::Mail(_) => b'M',
            Command::Rcpt(_) => b'R',
            Command::Data => b'T',
            Command::Header { .. } => b'L',
            Command::EndOfHeaders => b'N',
            Command::Body(_) => b'B',
            Command::EndOfMessage => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
        }
    }

    /// The packet, appended to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(self.code());
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Command::Negotiate(o) => {
                for n in [o.version, o.actions, o.steps] {
                    out.extend_from_slice(&n.to_be_bytes());
                }
            }
            Command::Macros { stage, pairs } => {
                out.push(*stage);
                for (name, value) in *pairs {
                    string(out, name);
                    string(out, value);
                }
            }
            Command::Connect { hostname, family } => {
                string(out, hostname);
                match family {
                    Family::Unknown => out.push(b'U'),
                    Family::Unix(path) => {
                        out.push(b'L');
                        out.extend_from_slice(&0u16.to_be_bytes());
                        string(out, path);
                    }
                    Family::Inet { port, address } | Family::Inet6 { port, address } => {
                        out.push(if matches!(family, Family::Inet { .. }) {
                            b'4'
                        } else {
                            b'6'
                        });
                        out.extend_from_slice(&port.to_be_bytes());
                        string(out, address);
                    }
                }
            }
            Command::Helo(name) => string(out, name),
            Command::Mail(args) | Command::Rcpt(args) => {
                for a in *args {
                    string(out, a);
                }
            }
            Command::Header { name, value } => {
                string(out, name);
                string(out, value);
            }
            Command::Body(chunk) => out.extend_from_slice(chunk),
            Command::Data
            | Command::EndOfHeaders
            | Command::EndOfMessage
            | Command::Abort
            | Command::Quit => {}
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// A filter's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Negotiate(Options),
    Continue,
    Accept,
    Reject,
    Tempfail,
    Discard,
    /// Skip the rest of the body (SMFIP_SKIP).
    Skip,
    /// Still working: wait on (and restart the timeout).
    Progress,
    /// A reply of the filter's own: 4xx or 5xx, one line or several.
    ReplyCode(FilterReply),
    /// `421` and close.
    Shutdown,
    ConnectionFailure,
    AddHeader {
        name: String,
        value: String,
    },
    /// At `index` among the header fields (0: first).
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// The `index`th field of this name (1: first); an empty value
    /// deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    AddRcpt(String),
    AddRcptWithArgs {
        rcpt: String,
        args: String,
    },
    DeleteRcpt(String),
    /// A piece of the new body; the pieces are appended in order.
    ReplaceBody(Vec<u8>),
    Quarantine(String),
    ChangeFrom {
        from: String,
        args: String,
    },
    /// The macros the filter wants at a stage.
    SymbolList {
        stage: u32,
        macros: String,
    },
}

/// A filter's own SMTP reply, checked: a 4xx or 5xx code, the same on
/// every line, and text with no control characters, so that it cannot
/// break our reply framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterReply {
    pub code: u16,
    /// Each line's text after its code and separator (an enhanced status
    /// code, if the filter gave one, included).
    pub lines: Vec<String>,
}

impl FilterReply {
    /// As our reply: an enhanced status code that starts the first line
    /// and fits the reply's class is taken as one (and taken off every
    /// line that repeats it); otherwise the text stands as written.
    pub fn to_reply(&self) -> super::reply::Reply {
        use super::reply::{Enhanced, Reply};
        let first = self.lines.first().map_or("", String::as_str);
        let enhanced = first.split_once(' ').and_then(|(code, _)| {
            let mut parts = code.split('.').map(|p| p.parse::<u16>().ok());
            match (parts.next()??, parts.next()??, parts.next()??, parts.next()) {
                (class, subject, detail, None)
                    if class == self.code / 100 && subject < 1000 && detail < 1000 =>
                {
                    Some((code.to_string(), Enhanced(class as u8, subject, detail)))
                }
                _ => None,
            }
        });
        let text = |line: &str| -> String {
            match &enhanced {
                Some((prefix, _)) => line
                    .strip_prefix(prefix.as_str())
                    .map_or(line, |l| l.trim_start())
                    .to_string(),
                None => line.to_string(),
            }
        };
        let mut lines = self.lines.iter();
        let mut r = Reply::new(
            self.code,
            enhanced.as_ref().map(|e| e.1),
            text(lines.next().map_or("", String::as_str)),
        );
        for l in lines {
            r = r.line(text(l));
        }
        r
    }
}

/// Why a filter's bytes make no sense: the filter is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A length of zero or past [`MAX_PACKET`].
    Length(u32),
    UnknownReply(u8),
    /// The reply's data is not what its kind needs.
    Malformed(u8, &'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Length(n) => write!(f, "a packet of {n} octets"),
            DecodeError::UnknownReply(c) => write!(f, "an unknown reply {:?}", *c as char),
            DecodeError::Malformed(c, why) => {
                write!(f, "a malformed {:?} reply: {why}", *c as char)
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Replies from the bytes a filter sends, in any pieces.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole reply, if one is in; an error ends the filter.
    pub fn reply(&mut self) -> Option<Result<Reply, DecodeError>> {
        let len = be_u32(&self.buf, 0)?;
        if len == 0 || len as usize > MAX_PACKET {
            return Some(Err(DecodeError::Length(len)));
        }
        let end = 4 + len as usize;
        if self.buf.len() < end {
            return None;
        }
        let reply = decode(self.buf[4], &self.buf[5..end]);
        self.buf.drain(..end);
        Some(reply)
    }

    /// Octets received and not yet part of a whole reply.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// One reply from its code and data.
pub fn decode(code: u8, data: &[u8]) -> Result<Reply, DecodeError> {
    let bad = |why| DecodeError::Malformed(code, why);
    let empty = |reply: Reply| {
        if data.is_empty() {
            Ok(reply)
        } else {
            Err(bad("data where none belongs"))
        }
    };
    match code {
        b'c' => empty(Reply::Continue),
        b'a' => empty(Reply::Accept),
        b'r' => empty(Reply::Reject),
        b't' => empty(Reply::Tempfail),
        b'd' => empty(Reply::Discard),
        b's' => empty(Reply::Skip),
        b'p' => empty(Reply::Progress),
        b'4' => empty(Reply::Shutdown),
        b'f' => empty(Reply::ConnectionFailure),
        b'O' => match (be_u32(data, 0), be_u32(data, 4), be_u32(data, 8)) {
            (Some(version), Some(actions), Some(steps)) => Ok(Reply::Negotiate(Options {
                version,
                actions,
                steps,
            })),
            _ => Err(bad("shorter than three numbers")),
        },
        b'y' => {
            let [text] = strings::<1>(data).ok_or(bad("not one string"))?;
            filter_reply(&text)
                .map(Reply::ReplyCode)
                .ok_or(bad("not a 4xx or 5xx reply"))
        }
        b'h' => {
            let [name, value] = strings::<2>(data).ok_or(bad("not a name and a value"))?;
            header_name(&name).ok_or(bad("not a header field name"))?;
            Ok(Reply::AddHeader { name, value })
        }
        b'i' | b'm' => {
            let index = be_u32(data, 0).ok_or(bad("no index"))?;
            let [name, value] = strings::<2>(&data[4..]).ok_or(bad("not a name and a value"))?;
            header_name(&name).ok_or(bad("not a header field name"))?;
            Ok(if code == b'i' {
                Reply::InsertHeader { index, name, value }
            } else {
                Reply::ChangeHeader { index, name, value }
            })
        }
        b'+' => {
            let [rcpt] = strings::<1>(data).ok_or(bad("not one address"))?;
            Ok(Reply::AddRcpt(rcpt))
        }
        b'2' => {
            let (rcpt, args) = address_and_args(data).ok_or(bad("no address"))?;
            Ok(Reply::AddRcptWithArgs { rcpt, args })
        }
        b'-' => {
            let [rcpt] = strings::<1>(data).ok_or(bad("not one address"))?;
            Ok(Reply::DeleteRcpt(rcpt))
        }
        b'b' => Ok(Reply::ReplaceBody(data.to_vec())),
        b'q' => {
            let [reason] = strings::<1>(data).ok_or(bad("not one reason"))?;
            Ok(Reply::Quarantine(reason))
        }
        b'e' => {
            let (from, args) = address_and_args(data).ok_or(bad("no address"))?;
            Ok(Reply::ChangeFrom { from, args })
        }
        b'l' => {
            let stage = be_u32(data, 0).ok_or(bad("no stage"))?;
            let [macros] = strings::<1>(&data[4..]).ok_or(bad("not one list"))?;
            Ok(Reply::SymbolList { stage, macros })
        }
        other => Err(DecodeError::UnknownReply(other)),
    }
}

/// The big-endian number at `at`, if the data is that long.
fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// An address, and its ESMTP arguments when the filter sent them.
fn address_and_args(data: &[u8]) -> Option<(String, String)> {
    match strings::<2>(data) {
        Some([address, args]) => Some((address, args)),
        None => strings::<1>(data).map(|[address]| (address, String::new())),
    }
}

/// Exactly `N` NUL-terminated strings, UTF-8 (lossless) and free of
/// control characters but tab, filling `data` to its end.
fn strings<const N: usize>(data: &[u8]) -> Option<[String; N]> {
    let mut out = Vec::with_capacity(N);
    let mut rest = data;
    for _ in 0..N {
        let nul = rest.iter().position(|&b| b == 0)?;
        let s = std::str::from_utf8(&rest[..nul]).ok()?;
        if s.chars()
            .any(|c| c.is_control() && c != '\t' && c != '\r' && c != '\n')
        {
            return None;
        }
        out.push(s.to_string());
        rest = &rest[nul + 1..];
    }
    if !rest.is_empty() {
        return None;
    }
    out.try_into().ok()
}

/// RFC 5322 2.2: printable ASCII but the colon.
fn header_name(name: &str) -> Option<()> {
    (!name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')).then_some(())
}

/// `xyz text` or a multi-line `xyz-text\r\nxyz text`: every line with the
/// same 4xx or 5xx code, no CR or LF but the separators, nothing empty.
fn filter_reply(text: &str) -> Option<FilterReply> {
    let mut code = None;
    let mut lines = Vec::new();
    let all: Vec<&str> = text.split("\r\n").collect();
    for (i, line) in all.iter().enumerate() {
        let last = i == all.len() - 1;
        let digits = line.get(..3)?;
        let n: u16 = digits.parse().ok()?;
        if !(400..600).contains(&n) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if *code.get_or_insert(n) != n {
            return None;
        }
        let sep = line.as_bytes().get(3).copied();
        let body = match (sep, last) {
            (None, true) => "",
            (Some(b' '), true) | (Some(b'-'), false) => &line[4..],
            _ => return None,
        };
        if body.chars().any(|c| c.is_control()) {
            return None;
        }
        lines.push(body.to_string());
    }
    Some(FilterReply { code: code?, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filters_reply_becomes_ours_with_its_enhanced_code() {
        let render = |text: &str| filter_reply(text).unwrap().to_reply().render(true);
        assert_eq!(
            render("550 5.7.1 Blocked by SpamAssassin"),
            "550 5.7.1 Blocked by SpamAssassin\r\n"
        );
        assert_eq!(
            render("451-4.7.1 first\r\n451 4.7.1 second"),
            "451-4.7.1 first\r\n451 4.7.1 second\r\n"
        );
        // A code of the wrong class is text; without one, ours is added
        // by the reply's rendering only if it has one: none here.
        assert_eq!(render("550 4.7.1 odd"), "550 4.7.1 odd\r\n");
        assert_eq!(render("554 go away"), "554 go away\r\n");
    }

    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(code);
        p.extend_from_slice(data);
        p
    }

    fn encoded(c: Command<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        c.encode(&mut out);
        out
    }

    #[test]
    fn commands_as_libmilter_reads_them() {
        let negotiate = Command::Negotiate(Options {
            version: 6,
            actions: 0x1ff,
            steps: 0x1fffff,
        });
        let cases: Vec<(Command<'_>, Vec<u8>)> = vec![
            (
                negotiate,
                packet(b'O', &[0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff]),
            ),
            (
                Command::Macros {
                    stage: b'C',
                    pairs: &[("j", "mx.example.org"), ("{daemon_name}", "mailroom")],
                },
                packet(b'D', b"Cj\0mx.example.org\0{daemon_name}\0mailroom\0"),
            ),
            (
                Command::Connect {
                    hostname: "client.example",
                    family: Family::Inet {
                        port: 4321,
                        address: "192.0.2.9",
                    },
                },
                packet(b'C', b"client.example\0\x34\x10\xe1192.0.2.9\0"),
            ),
            (
                Command::Connect {
                    hostname: "[2001:db8::1]",
                    family: Family::Inet6 {
                        port: 25,
                        address: "2001:db8::1",
                    },
                },
                packet(b'C', b"[2001:db8::1]\x006\x00\x192001:db8::1\0"),
            ),
            (
                Command::Connect {
                    hostname: "localhost",
                    family: Family::Unknown,
                },
                packet(b'C', b"localhost\0U"),
            ),
            (Command::Helo("c.example"), packet(b'H', b"c.example\0")),
            (
                Command::Mail(&["<a@b.example>", "SIZE=10"]),
                packet(b'M', b"<a@b.example>\0SIZE=10\0"),
            ),
            (
                Command::Rcpt(&["<c@d.example>"]),
                packet(b'R', b"<c@d.example>\0"),
            ),
            (Command::Data, packet(b'T', b"")),
            (
                Command::Header {
                    name: "Subject",
                    value: " hi",
                },
                packet(b'L', b"Subject\0 hi\0"),
            ),
            (Command::EndOfHeaders, packet(b'N', b"")),
            (Command::Body(b"line\r\n"), packet(b'B', b"line\r\n")),
            (Command::EndOfMessage, packet(b'E', b"")),
            (Command::Abort, packet(b'A', b"")),
            (Command::Quit, packet(b'Q', b"")),
        ];
        for (c, want) in cases {
            assert_eq!(encoded(c.clone()), want, "{c:?}");
        }
    }

    #[test]
    fn replies_decoded_whatever_the_pieces() {
        let stream: Vec<u8> = [
            packet(b'O', &[0, 0, 0, 6, 0, 0, 0, 0x13, 0, 0, 0x10, 0]),
            packet(b'c', b""),
            packet(b'y', b"550 5.7.1 spam\0"),
            packet(b'h', b"X-Spam-Status\0Yes, score=9\0"),
            packet(b'i', b"\0\0\0\0DKIM-Signature\0v=1; a=rsa-sha256\0"),
            packet(b'm', b"\0\0\0\x01Subject\0\0"),
            packet(b'+', b"<archive@example.org>\0"),
            packet(b'-', b"<bob@example.org>\0"),
            packet(b'b', b"new body\r\n"),
            packet(b'q', b"looks odd\0"),
            packet(b'e', b"<bounce@example.org>\0"),
            packet(b'a', b""),
        ]
        .concat();
        let want = vec![
            Reply::Negotiate(Options {
                version: 6,
                actions: 0x13,
                steps: 0x1000,
            }),
            Reply::Continue,
            Reply::ReplyCode(FilterReply {
                code: 550,
                lines: vec!["5.7.1 spam".into()],
            }),
            Reply::AddHeader {
                name: "X-Spam-Status".into(),
                value: "Yes, score=9".into(),
            },
            Reply::InsertHeader {
                index: 0,
                name: "DKIM-Signature".into(),
                value: "v=1; a=rsa-sha256".into(),
            },
            Reply::ChangeHeader {
                index: 1,
                name: "Subject".into(),
                value: String::new(),
            },
            Reply::AddRcpt("<archive@example.org>".into()),
            Reply::DeleteRcpt("<bob@example.org>".into()),
            Reply::ReplaceBody(b"new body\r\n".to_vec()),
            Reply::Quarantine("looks odd".into()),
            Reply::ChangeFrom {
                from: "<bounce@example.org>".into(),
                args: String::new(),
            },
            Reply::Accept,
        ];
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                d.feed(chunk);
                while let Some(r) = d.reply() {
                    got.push(r.unwrap());
                }
            }
            assert_eq!(got, want, "in pieces of {piece}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn a_filter_cannot_break_our_replies() {
        let reply = |text: &[u8]| decode(b'y', text);
        assert_eq!(
            reply(b"451-4.7.1 greylisted\r\n451 4.7.1 come back later\0").unwrap(),
            Reply::ReplyCode(FilterReply {
                code: 451,
                lines: vec!["4.7.1 greylisted".into(), "4.7.1 come back later".into()],
            })
        );
        for bad in [
            &b"250 2.0.0 fine\0"[..],
            b"550 5.7.1 a\r\n250 ok\0",
            b"550 injected\r\nMAIL FROM:<x>\0",
            b"550 bare\nline\0",
            b"550-no last line\0",
            b"550 5.7.1 a\r\n551 5.7.1 b\0",
            b"55 short\0",
            b"5x0 letters\0",
            b"550 nul\0inside\0",
            b"550 bell \x07\0",
            b"550 no terminating nul",
            b"",
        ] {
            assert!(reply(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn what_a_broken_filter_sends_is_an_error() {
        let errors = [
            packet(b'x', b""),
            packet(b'c', b"junk"),
            packet(b'O', &[0, 0, 0, 6]),
            packet(b'h', b"Bad Name\0v\0"),
            packet(b'h', b"Name:\0v\0"),
            packet(b'h', b"Only-a-name\0"),
            packet(b'i', b"\0\0"),
            packet(b'+', b"<a@b>\0<c@d>\0"),
            packet(b'q', b"no nul"),
            vec![0, 0, 0, 0],
            ((MAX_PACKET + 1) as u32).to_be_bytes().to_vec(),
        ];
        for p in errors {
            let mut d = Decoder::default();
            d.feed(&p);
            assert!(matches!(d.reply(), Some(Err(_))), "{p:?}");
        }
        // Incomplete is not an error: more may come.
        let mut d = Decoder::default();
        d.feed(&[0, 0, 0, 5, b'y', b'4']);
        assert_eq!(d.reply(), None);
    }
}
