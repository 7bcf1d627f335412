//! Parsing one SMTP command line into a typed [`Command`].
//!
//! Pure and stateless: the line (without its line end) goes in, a command or
//! a typed [`ParseError`] comes out, and the session maps errors to replies.
//! Verbs and parameter keywords are case-insensitive; addresses keep their
//! case. Whether a command is allowed *now* is the session's business.

use super::address::{self, AddressError, ForwardPath, ReversePath};
use super::encoding::xtext_decode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail {
        path: ReversePath,
        params: MailParams,
    },
    Rcpt {
        path: ForwardPath,
        params: RcptParams,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Help(Option<String>),
    Vrfy(String),
    Expn(String),
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// A verb this server knows but does not offer (ETRN, TURN, ...).
    NotImplemented,
}

/// The body type declared with `BODY=` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

impl BodyType {
    pub fn keyword(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            BodyType::BinaryMime => "BINARYMIME",
        }
    }
}

/// RFC 3461 RET: what a failure notice returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// RFC 3461 NOTIFY, as a set (all false: NEVER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub const NEVER: Notify = Notify {
        success: false,
        failure: false,
        delay: false,
    };

    /// `never`, or the words of the set joined by commas, lower case.
    pub fn words(self) -> String {
        if self == Notify::NEVER {
            return "never".into();
        }
        [
            (self.success, "success"),
            (self.failure, "failure"),
            (self.delay, "delay"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect::<Vec<_>>()
        .join(",")
    }

    /// The value of a NOTIFY parameter (or of sendmail's `-N`), in any
    /// case: `NEVER` alone, or each of the others at most once.
    pub fn parse(value: &str) -> Option<Notify> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Some(Notify::NEVER);
        }
        let mut n = Notify::NEVER;
        for word in value.split(',') {
            let slot = if word.eq_ignore_ascii_case("SUCCESS") {
                &mut n.success
            } else if word.eq_ignore_ascii_case("FAILURE") {
                &mut n.failure
            } else if word.eq_ignore_ascii_case("DELAY") {
                &mut n.delay
            } else {
                return None;
            };
            if *slot {
                return None;
            }
            *slot = true;
        }
        Some(n)
    }
}

/// ESMTP parameters of MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// RFC 1870 declared size; saturates, since any overflow is over the limit anyway.
    pub size: Option<u64>,
    pub body: Option<BodyType>,
    pub smtputf8: bool,
    /// RFC 3461.
    pub ret: Option<Ret>,
    /// RFC 3461 ENVID, xtext decoded.
    pub envid: Option<String>,
    /// RFC 4954 5: who submitted the message, as the client says
    /// (`<>` or `<mailbox>`), xtext decoded. Taken and not passed on: a
    /// client's word for it is not trusted, which RFC 4954 treats as
    /// `AUTH=<>`.
    pub auth: Option<String>,
}

/// ESMTP parameters of RCPT TO (RFC 3461).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// ORCPT as `type;address`, the address xtext decoded.
    pub orcpt: Option<String>,
}

impl MailParams {
    pub fn is_empty(&self) -> bool {
        *self == MailParams::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown verb or empty line: 500.
    Unrecognized,
    /// NUL, other control characters or invalid UTF-8 in the line: 501.
    BadCharacters,
    /// Wrong arguments for a known verb; the text is the usage line.
    Syntax(&'static str),
    /// `BDAT` whose size cannot be read: the chunk cannot be skipped safely.
    BdatSyntax,
    Sender(AddressError),
    Recipient(AddressError),
    /// A parameter keyword we do not implement: 555.
    UnknownParameter(String),
    /// A known parameter with a bad or repeated value: 501.
    BadParameter(&'static str),
}

/// The verbs this server handles.
const VERBS: [&str; 14] = [
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "QUIT", "STARTTLS", "NOOP", "HELP",
    "VRFY", "EXPN", "AUTH",
];
/// Verbs it knows but does not offer: `502`.
const KNOWN_UNOFFERED: [&str; 8] = [
    "ETRN", "TURN", "ATRN", "SEND", "SOML", "SAML", "XCLIENT", "XFORWARD",
];

/// Parses one command line. The caller has stripped the line end; trailing
/// white space is tolerated. A line whose first word is no verb we know,
/// binary garbage included, is unrecognized (`500`, RFC 5321 4.2.4); bad
/// octets after a known verb are its arguments' fault (`501`).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let verb_end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let verb = &line[..verb_end];
    let known = |v: &&str| verb.eq_ignore_ascii_case(v.as_bytes());
    if !VERBS.iter().any(known) && !KNOWN_UNOFFERED.iter().any(known) {
        return Err(ParseError::Unrecognized);
    }
    if line
        .iter()
        .any(|&b| b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(ParseError::BadCharacters);
    }
    let line = std::str::from_utf8(line).map_err(|_| ParseError::BadCharacters)?;
    let (verb, rest) = verb_and_rest(line);
    let is = |name: &str| verb.eq_ignore_ascii_case(name);
    let no_args = |cmd: Command, usage: &'static str| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::Syntax(usage))
        }
    };
    if is("HELO") || is("EHLO") {
        if rest.is_empty() {
            return Err(ParseError::Syntax(if is("HELO") {
                "Syntax: HELO hostname"
            } else {
                "Syntax: EHLO hostname"
            }));
        }
        let name = rest.to_string();
        return Ok(if is("HELO") {
            Command::Helo(name)
        } else {
            Command::Ehlo(name)
        });
    }
    if is("MAIL") {
        let arg =
            keyword_arg(rest, "FROM:").ok_or(ParseError::Syntax("Syntax: MAIL FROM:<address>"))?;
        let (path, params) = address::parse_reverse_path(arg).map_err(ParseError::Sender)?;
        return Ok(Command::Mail {
            path,
            params: parse_mail_params(params)?,
        });
    }
    if is("RCPT") {
        let arg =
            keyword_arg(rest, "TO:").ok_or(ParseError::Syntax("Syntax: RCPT TO:<address>"))?;
        let (path, params) = address::parse_forward_path(arg).map_err(ParseError::Recipient)?;
        return Ok(Command::Rcpt {
            path,
            params: parse_rcpt_params(params)?,
        });
    }
    if is("DATA") {
        return no_args(Command::Data, "Syntax: DATA");
    }
    if is("BDAT") {
        return parse_bdat(rest);
    }
    if is("RSET") {
        return no_args(Command::Rset, "Syntax: RSET");
    }
    if is("QUIT") {
        return no_args(Command::Quit, "Syntax: QUIT");
    }
    if is("STARTTLS") {
        return no_args(Command::StartTls, "Syntax: STARTTLS");
    }
    if is("NOOP") {
        // RFC 5321 4.1.1.9: a parameter is allowed and ignored.
        return Ok(Command::Noop);
    }
    if is("HELP") {
        return Ok(Command::Help((!rest.is_empty()).then(|| rest.to_string())));
    }
    if is("VRFY") || is("EXPN") {
        if rest.is_empty() {
            return Err(ParseError::Syntax(if is("VRFY") {
                "Syntax: VRFY address"
            } else {
                "Syntax: EXPN mailing-list"
            }));
        }
        let arg = rest.to_string();
        return Ok(if is("VRFY") {
            Command::Vrfy(arg)
        } else {
            Command::Expn(arg)
        });
    }
    if is("AUTH") {
        let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
        let usage = "Syntax: AUTH mechanism [initial-response]";
        let mechanism = words.next().ok_or(ParseError::Syntax(usage))?;
        let initial = words.next().map(str::to_string);
        if words.next().is_some() {
            return Err(ParseError::Syntax(usage));
        }
        return Ok(Command::Auth {
            mechanism: mechanism.to_string(),
            initial,
        });
    }
    if KNOWN_UNOFFERED.iter().any(|v| is(v)) {
        return Ok(Command::NotImplemented);
    }
    Err(ParseError::Unrecognized)
}

/// A command line's verb and its arguments, without the blanks around
/// them.
fn verb_and_rest(line: &str) -> (&str, &str) {
    let line = line.trim_end_matches([' ', '\t']);
    match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i + 1..].trim_start_matches([' ', '\t'])),
        None => (line, ""),
    }
}

/// The ESMTP parameters of a MAIL or RCPT line as the client wrote them,
/// a word each (milters are told them so); none for any other line. The
/// path is found by the parser's own grammar, so the two agree on where
/// it ends (a quoted `>`, a path without its brackets).
pub fn written_params(line: &[u8]) -> Vec<&str> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Vec::new();
    };
    let (verb, rest) = verb_and_rest(line);
    let params = if verb.eq_ignore_ascii_case("MAIL") {
        keyword_arg(rest, "FROM:")
            .and_then(|a| address::parse_reverse_path(a).ok())
            .map(|(_, params)| params)
    } else if verb.eq_ignore_ascii_case("RCPT") {
        keyword_arg(rest, "TO:")
            .and_then(|a| address::parse_forward_path(a).ok())
            .map(|(_, params)| params)
    } else {
        None
    };
    params.map_or(Vec::new(), |p| param_words(p).collect())
}

/// The words of a parameter list.
fn param_words(s: &str) -> impl Iterator<Item = &str> {
    s.split([' ', '\t']).filter(|p| !p.is_empty())
}

/// `FROM:<a>` / `from: <a>` -> `<a>`; `None` when the keyword is missing.
fn keyword_arg<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &rest[keyword.len()..])
}

fn keyword_of(param: &str) -> String {
    param
        .split('=')
        .next()
        .unwrap_or(param)
        .to_ascii_uppercase()
}

fn parse_mail_params(s: &str) -> Result<MailParams, ParseError> {
    let mut params = MailParams::default();
    for param in param_words(s) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        if key.eq_ignore_ascii_case("SIZE") {
            let v = value.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            let v = v.ok_or(ParseError::BadParameter("Bad SIZE parameter"))?;
            if params.size.is_some() {
                return Err(ParseError::BadParameter("Duplicate SIZE parameter"));
            }
            params.size = Some(v.parse().unwrap_or(u64::MAX));
        } else if key.eq_ignore_ascii_case("BODY") {
            let body = match value {
                Some(v) if v.eq_ignore_ascii_case("7BIT") => BodyType::SevenBit,
                Some(v) if v.eq_ignore_ascii_case("8BITMIME") => BodyType::EightBitMime,
                Some(v) if v.eq_ignore_ascii_case("BINARYMIME") => BodyType::BinaryMime,
                _ => return Err(ParseError::BadParameter("Bad BODY parameter")),
            };
            if params.body.is_some() {
                return Err(ParseError::BadParameter("Duplicate BODY parameter"));
            }
            params.body = Some(body);
        } else if key.eq_ignore_ascii_case("SMTPUTF8") {
            if value.is_some() {
                return Err(ParseError::BadParameter("SMTPUTF8 takes no value"));
            }
            if params.smtputf8 {
                return Err(ParseError::BadParameter("Duplicate SMTPUTF8 parameter"));
            }
            params.smtputf8 = true;
        } else if key.eq_ignore_ascii_case("RET") {
            let ret = match value {
                Some(v) if v.eq_ignore_ascii_case("FULL") => Ret::Full,
                Some(v) if v.eq_ignore_ascii_case("HDRS") => Ret::Hdrs,
                _ => return Err(ParseError::BadParameter("Bad RET parameter")),
            };
            if params.ret.replace(ret).is_some() {
                return Err(ParseError::BadParameter("Duplicate RET parameter"));
            }
        } else if key.eq_ignore_ascii_case("AUTH") {
            let auth = value
                .and_then(xtext_decode)
                .filter(|v| v.starts_with('<') && v.ends_with('>'))
                .ok_or(ParseError::BadParameter("Bad AUTH parameter"))?;
            if params.auth.replace(auth).is_some() {
                return Err(ParseError::BadParameter("Duplicate AUTH parameter"));
            }
        } else if key.eq_ignore_ascii_case("ENVID") {
            // RFC 3461 4.4: at most 100 characters, printable ASCII.
            let envid = value
                .filter(|v| v.len() <= 100)
                .and_then(xtext_decode)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| (0x20..0x7f).contains(&b)))
                .ok_or(ParseError::BadParameter("Bad ENVID parameter"))?;
            if params.envid.replace(envid).is_some() {
                return Err(ParseError::BadParameter("Duplicate ENVID parameter"));
            }
        } else {
            return Err(ParseError::UnknownParameter(keyword_of(param)));
        }
    }
    Ok(params)
}

fn parse_rcpt_params(s: &str) -> Result<RcptParams, ParseError> {
    let mut params = RcptParams::default();
    for param in param_words(s) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        if key.eq_ignore_ascii_case("NOTIFY") {
            let n = value
                .and_then(Notify::parse)
                .ok_or(ParseError::BadParameter("Bad NOTIFY parameter"))?;
            if params.notify.replace(n).is_some() {
                return Err(ParseError::BadParameter("Duplicate NOTIFY parameter"));
            }
        } else if key.eq_ignore_ascii_case("ORCPT") {
            // RFC 3461 4.2: addr-type ";" xtext, at most 500 characters.
            let orcpt = value
                .filter(|v| v.len() <= 500)
                .and_then(|v| v.split_once(';'))
                .filter(|(kind, _)| {
                    !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .and_then(|(kind, addr)| {
                    let addr = xtext_decode(addr).filter(|a| !a.is_empty())?;
                    Some(format!("{};{addr}", kind.to_ascii_lowercase()))
                })
                .ok_or(ParseError::BadParameter("Bad ORCPT parameter"))?;
            if params.orcpt.replace(orcpt).is_some() {
                return Err(ParseError::BadParameter("Duplicate ORCPT parameter"));
            }
        } else {
            return Err(ParseError::UnknownParameter(keyword_of(param)));
        }
    }
    Ok(params)
}

fn parse_bdat(rest: &str) -> Result<Command, ParseError> {
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.len() <= 19 && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or(ParseError::BdatSyntax)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::BdatSyntax),
    };
    if words.next().is_some() {
        return Err(ParseError::BdatSyntax);
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::{Domain, Mailbox};

    fn mbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: Domain::Name(domain.into()),
        }
    }

    /// Every case is replayed with the line as given, with trailing white
    /// space, and in lower case where the case of the verb is all that changes.
    fn check(line: &str, expected: &Result<Command, ParseError>) {
        for variant in [line.to_string(), format!("{line} "), format!("{line}\t ")] {
            assert_eq!(&parse(variant.as_bytes()), expected, "line {variant:?}");
        }
    }

    #[test]
    fn valid_commands() {
        let cases: Vec<(&str, Command)> = vec![
            (
                "HELO client.example",
                Command::Helo("client.example".into()),
            ),
            (
                "helo client.example",
                Command::Helo("client.example".into()),
            ),
            ("EHLO [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
            ("eHlO client_x", Command::Ehlo("client_x".into())),
            (
                "MAIL FROM:<a@b.example>",
                Command::Mail {
                    path: ReversePath::Mailbox(mbox("a", "b.example")),
                    params: MailParams::default(),
                },
            ),
            (
                "mail from: <A@b.example> SIZE=1000 BODY=8bitmime smtputf8",
                Command::Mail {
                    path: ReversePath::Mailbox(mbox("A", "b.example")),
                    params: MailParams {
                        size: Some(1000),
                        body: Some(BodyType::EightBitMime),
                        smtputf8: true,
                        ..MailParams::default()
                    },
                },
            ),
            (
                "MAIL FROM:<> BODY=BINARYMIME",
                Command::Mail {
                    path: ReversePath::Null,
                    params: MailParams {
                        body: Some(BodyType::BinaryMime),
                        ..MailParams::default()
                    },
                },
            ),
            (
                "MAIL FROM:<x@y.example> SIZE=99999999999999999999999",
                Command::Mail {
                    path: ReversePath::Mailbox(mbox("x", "y.example")),
                    params: MailParams {
                        size: Some(u64::MAX),
                        ..MailParams::default()
                    },
                },
            ),
            (
                "RCPT TO:<postmaster>",
                Command::Rcpt {
                    path: ForwardPath::Postmaster,
                    params: RcptParams::default(),
                },
            ),
            (
                "rcpt to:<@relay.example:user@c.example>",
                Command::Rcpt {
                    path: ForwardPath::Mailbox(mbox("user", "c.example")),
                    params: RcptParams::default(),
                },
            ),
            ("DATA", Command::Data),
            ("data", Command::Data),
            (
                "BDAT 0 LAST",
                Command::Bdat {
                    size: 0,
                    last: true,
                },
            ),
            (
                "bdat 1024",
                Command::Bdat {
                    size: 1024,
                    last: false,
                },
            ),
            (
                "BDAT 5 last",
                Command::Bdat {
                    size: 5,
                    last: true,
                },
            ),
            ("RSET", Command::Rset),
            ("NOOP", Command::Noop),
            ("NOOP anything at all", Command::Noop),
            ("QUIT", Command::Quit),
            ("HELP", Command::Help(None)),
            ("HELP mail", Command::Help(Some("mail".into()))),
            ("VRFY alice", Command::Vrfy("alice".into())),
            ("EXPN staff", Command::Expn("staff".into())),
            ("STARTTLS", Command::StartTls),
            (
                "AUTH PLAIN AGFhAGI=",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some("AGFhAGI=".into()),
                },
            ),
            (
                "auth login",
                Command::Auth {
                    mechanism: "login".into(),
                    initial: None,
                },
            ),
            ("ETRN example.org", Command::NotImplemented),
            ("TURN", Command::NotImplemented),
        ];
        for (line, cmd) in cases {
            check(line, &Ok(cmd));
        }
    }

    #[test]
    fn invalid_commands() {
        use ParseError::*;
        let cases: Vec<(&str, ParseError)> = vec![
            ("", Unrecognized),
            ("FOO bar", Unrecognized),
            ("MAILFROM:<a@b>", Unrecognized),
            ("HELO", Syntax("Syntax: HELO hostname")),
            ("EHLO", Syntax("Syntax: EHLO hostname")),
            ("MAIL", Syntax("Syntax: MAIL FROM:<address>")),
            ("MAIL TO:<a@b>", Syntax("Syntax: MAIL FROM:<address>")),
            ("RCPT FROM:<a@b>", Syntax("Syntax: RCPT TO:<address>")),
            ("DATA now", Syntax("Syntax: DATA")),
            ("RSET x", Syntax("Syntax: RSET")),
            ("QUIT x", Syntax("Syntax: QUIT")),
            ("STARTTLS x", Syntax("Syntax: STARTTLS")),
            ("VRFY", Syntax("Syntax: VRFY address")),
            ("EXPN", Syntax("Syntax: EXPN mailing-list")),
            ("AUTH", Syntax("Syntax: AUTH mechanism [initial-response]")),
            (
                "AUTH PLAIN abc= more",
                Syntax("Syntax: AUTH mechanism [initial-response]"),
            ),
            ("BDAT", BdatSyntax),
            ("BDAT x", BdatSyntax),
            ("BDAT -1", BdatSyntax),
            ("BDAT 10 FIRST", BdatSyntax),
            ("BDAT 10 LAST more", BdatSyntax),
            ("BDAT 99999999999999999999", BdatSyntax),
            (
                "MAIL FROM:<a@b.example> FOO=1",
                UnknownParameter("FOO".into()),
            ),
            (
                "RCPT TO:<a@b.example> FOO=1",
                UnknownParameter("FOO".into()),
            ),
            (
                "MAIL FROM:<a@b.example> RET=MOST",
                BadParameter("Bad RET parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> RET=FULL RET=HDRS",
                BadParameter("Duplicate RET parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> ENVID=",
                BadParameter("Bad ENVID parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> AUTH=",
                BadParameter("Bad AUTH parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> AUTH=a@b.example",
                BadParameter("Bad AUTH parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> AUTH=<> AUTH=<>",
                BadParameter("Duplicate AUTH parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> ENVID=a+2",
                BadParameter("Bad ENVID parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> ENVID=a+0A",
                BadParameter("Bad ENVID parameter"),
            ),
            (
                "RCPT TO:<a@b.example> NOTIFY=NEVER,SUCCESS",
                BadParameter("Bad NOTIFY parameter"),
            ),
            (
                "RCPT TO:<a@b.example> NOTIFY=DELAY,DELAY",
                BadParameter("Bad NOTIFY parameter"),
            ),
            (
                "RCPT TO:<a@b.example> NOTIFY",
                BadParameter("Bad NOTIFY parameter"),
            ),
            (
                "RCPT TO:<a@b.example> NOTIFY=NEVER NOTIFY=NEVER",
                BadParameter("Duplicate NOTIFY parameter"),
            ),
            (
                "RCPT TO:<a@b.example> ORCPT=a@b",
                BadParameter("Bad ORCPT parameter"),
            ),
            (
                "RCPT TO:<a@b.example> ORCPT=;a@b",
                BadParameter("Bad ORCPT parameter"),
            ),
            (
                "RCPT TO:<a@b.example> ORCPT=rfc822;",
                BadParameter("Bad ORCPT parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=",
                BadParameter("Bad SIZE parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=12k",
                BadParameter("Bad SIZE parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=1 SIZE=2",
                BadParameter("Duplicate SIZE parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> BODY=9BIT",
                BadParameter("Bad BODY parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> BODY",
                BadParameter("Bad BODY parameter"),
            ),
            (
                "MAIL FROM:<a@b.example> SMTPUTF8=yes",
                BadParameter("SMTPUTF8 takes no value"),
            ),
        ];
        for (line, err) in cases {
            check(line, &Err(err));
        }
    }

    #[test]
    fn the_auth_parameter_is_taken() {
        let auth = |line: &[u8]| match parse(line).unwrap() {
            Command::Mail { params, .. } => params.auth,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            auth(b"MAIL FROM:<a@b.example> AUTH=<>").as_deref(),
            Some("<>")
        );
        assert_eq!(
            auth(b"MAIL FROM:<a@b.example> SIZE=10 auth=<e+2Bx@b.example>").as_deref(),
            Some("<e+x@b.example>")
        );
    }

    #[test]
    fn dsn_parameters() {
        assert_eq!(
            parse(b"MAIL FROM:<a@b.example> ret=hdrs ENVID=QQ+2B314").unwrap(),
            Command::Mail {
                path: ReversePath::Mailbox(mbox("a", "b.example")),
                params: MailParams {
                    ret: Some(Ret::Hdrs),
                    envid: Some("QQ+314".into()),
                    ..MailParams::default()
                },
            }
        );
        assert_eq!(
            parse(b"RCPT TO:<c@d.example> NOTIFY=success,Delay ORCPT=RFC822;c+2Bx@d.example")
                .unwrap(),
            Command::Rcpt {
                path: ForwardPath::Mailbox(mbox("c", "d.example")),
                params: RcptParams {
                    notify: Some(Notify {
                        success: true,
                        failure: false,
                        delay: true
                    }),
                    orcpt: Some("rfc822;c+x@d.example".into()),
                },
            }
        );
        assert_eq!(Notify::parse("never"), Some(Notify::NEVER));
        assert_eq!(Notify::NEVER.words(), "never");
        assert_eq!(
            Notify::parse("FAILURE,SUCCESS").unwrap().words(),
            "success,failure"
        );
    }

    #[test]
    fn address_errors_are_typed_by_side() {
        assert!(matches!(
            parse(b"MAIL FROM:<a b@c>"),
            Err(ParseError::Sender(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<>"),
            Err(ParseError::Recipient(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<a@@b>"),
            Err(ParseError::Recipient(_))
        ));
    }

    #[test]
    fn the_written_params_follow_the_path_as_the_parser_finds_it() {
        for (line, want) in [
            (
                &b"MAIL FROM:<a@b.example> SIZE=10  BODY=8BITMIME"[..],
                &["SIZE=10", "BODY=8BITMIME"][..],
            ),
            // No brackets, as tolerated: the parameters are still found.
            (b"mail from:a@b.example SIZE=10", &["SIZE=10"]),
            // A quoted `>` does not end the path.
            (b"MAIL FROM:<\"x>y\"@b.example> SMTPUTF8", &["SMTPUTF8"]),
            (
                b"RCPT TO:<c@d.example>\tNOTIFY=NEVER ORCPT=rfc822;c@d.example",
                &["NOTIFY=NEVER", "ORCPT=rfc822;c@d.example"],
            ),
            (b"RCPT TO:<postmaster>", &[]),
            (b"MAIL FROM:<bad", &[]),
            (b"NOOP SIZE=10", &[]),
            (b"MAIL FROM:<a@b.example> \xff", &[]),
        ] {
            assert_eq!(written_params(line), want, "{line:?}");
        }
    }

    #[test]
    fn control_bytes_and_bad_utf8_are_refused() {
        // After a known verb: its arguments are bad (501).
        for line in [
            &b"NOOP \0"[..],
            b"MAIL FROM:<a\0@b>",
            b"HELO \xff\xfe",
            b"HELO a\rb",
            b"AUTH \x01",
        ] {
            assert_eq!(parse(line), Err(ParseError::BadCharacters), "{line:?}");
        }
        // No verb we know, binary garbage included: unrecognized (500).
        for line in [
            &b"RSET\x01"[..],
            b"\0\x01\x02",
            b"\xff\xfe QUIT",
            b"\x16\x03\x01\x02\x00\x01",
            b"GET / HTTP/1.1",
            b"",
        ] {
            assert_eq!(parse(line), Err(ParseError::Unrecognized), "{line:?}");
        }
    }

    #[test]
    fn utf8_addresses_parse() {
        let cmd = parse("RCPT TO:<用户@例子.example>".as_bytes()).unwrap();
        assert_eq!(
            cmd,
            Command::Rcpt {
                path: ForwardPath::Mailbox(mbox("用户", "例子.example")),
                params: RcptParams::default(),
            }
        );
    }
}
