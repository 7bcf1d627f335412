//! Mail addresses as they appear on the SMTP wire: the RFC 5321 Path of
//! `MAIL FROM:` / `RCPT TO:` (sections 4.1.2, 4.1.3), with RFC 6531 UTF-8,
//! and the domain argument of HELO/EHLO.
//!
//! Client input is checked here once, against the grammar and the size limits
//! of RFC 5321 4.5.3.1, so the rest of the server only ever handles typed,
//! valid addresses. The few tolerances real MTAs have (spaces after the colon,
//! missing angle brackets, source routes) are accepted on purpose, since
//! rejecting them only breaks old clients without protecting anything.

use core::fmt::{self, Write as _};
use core::net::{Ipv4Addr, Ipv6Addr};

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_PATH: usize = 256;
const MAX_LABEL: usize = 63;

/// The domain of a mailbox or the argument of HELO/EHLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// A domain name as the client wrote it (validated). Compare with `eq_ignore_ascii_case` / `matches_name`.
    Name(String),
    /// `[192.0.2.1]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]` (the "IPv6:" tag is case-insensitive)
    Ipv6(Ipv6Addr),
    /// `[tag:content]` General-address-literal (RFC 5321 4.1.3), kept as text, tag without the colon.
    General { tag: String, content: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part with quoting removed: `"john doe"@x` gives `john doe`, `"a\"b"@x` gives `a"b`.
    /// Case is kept exactly (local parts are case-sensitive).
    pub local: String,
    pub domain: Domain,
}

/// The argument of `MAIL FROM:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    /// `<>`: bounces and other mail that must not itself bounce.
    Null,
    Mailbox(Mailbox),
}

/// The argument of `RCPT TO:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    /// `<Postmaster>` in any case and without a domain (RFC 5321 4.1.1.3).
    Postmaster,
    Mailbox(Mailbox),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not a path at all, bad characters, unbalanced `< >`, missing `@`, bad quoting.
    Syntax,
    /// Local part over 64 octets (RFC 5321 4.5.3.1.1), counted as written.
    LocalTooLong,
    /// Domain over 255 octets (RFC 5321 4.5.3.1.2).
    DomainTooLong,
    /// Whole path, angle brackets included, over 256 octets (RFC 5321 4.5.3.1.3).
    PathTooLong,
    /// The domain part is not a valid domain name or address literal.
    BadDomain,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::Syntax => "bad address syntax",
            AddressError::LocalTooLong => "local part too long",
            AddressError::DomainTooLong => "domain too long",
            AddressError::PathTooLong => "path too long",
            AddressError::BadDomain => "bad domain or address literal",
        })
    }
}

impl std::error::Error for AddressError {}

impl Domain {
    /// Parse a domain or address literal. Domain names: dot-separated labels, each 1..=63 octets,
    /// letters/digits/hyphen, not starting or ending with a hyphen; UTF-8 (non-ASCII) characters
    /// allowed in labels (U-labels, RFC 6531); underscores are accepted anywhere in a label
    /// (`_dmarc`, `host_1`: real hosts use them and Postfix accepts them). A trailing dot is not
    /// accepted. A bare IPv4 address without brackets is a syntactically valid Name.
    pub fn parse(s: &str) -> Result<Domain, AddressError> {
        parse_domain(s, false)
    }

    /// Strict RFC 5321 form, for the optional strict HELO check: like [`Domain::parse`] but
    /// rejects underscores and names whose labels are all digits (an unbracketed IP address).
    pub fn parse_strict(s: &str) -> Result<Domain, AddressError> {
        parse_domain(s, true)
    }

    /// True if this is a Name equal to `name` ignoring ASCII case.
    pub fn matches_name(&self, name: &str) -> bool {
        matches!(self, Domain::Name(n) if n.eq_ignore_ascii_case(name))
    }

    /// True unless this is a name with U-labels (literals are ASCII by grammar).
    pub fn is_ascii(&self) -> bool {
        match self {
            Domain::Name(n) => n.is_ascii(),
            _ => true,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::Ipv4(ip) => write!(f, "[{ip}]"),
            Domain::Ipv6(ip) => write!(f, "[IPv6:{ip}]"),
            Domain::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

fn parse_domain(s: &str, strict: bool) -> Result<Domain, AddressError> {
    if s.chars().any(char::is_control) {
        return Err(AddressError::Syntax);
    }
    if s.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    if let Some(literal) = s.strip_prefix('[') {
        let inner = literal.strip_suffix(']').ok_or(AddressError::BadDomain)?;
        return parse_literal(inner);
    }
    check_name(s, strict)?;
    Ok(Domain::Name(s.to_owned()))
}

fn check_name(s: &str, strict: bool) -> Result<(), AddressError> {
    let mut all_digits = true;
    // `split` yields one empty label for "" and for a leading, trailing or doubled dot.
    for label in s.split('.') {
        if label.is_empty()
            || label.len() > MAX_LABEL
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(AddressError::BadDomain);
        }
        let valid_char = |c: char| {
            c.is_ascii_alphanumeric()
                || c == '-'
                || (c == '_' && !strict)
                || (!c.is_ascii() && !c.is_whitespace())
        };
        if !label.chars().all(valid_char) {
            return Err(AddressError::BadDomain);
        }
        all_digits &= label.bytes().all(|b| b.is_ascii_digit());
    }
    if strict && all_digits {
        return Err(AddressError::BadDomain);
    }
    Ok(())
}

/// `inner` is the text between `[` and `]`.
fn parse_literal(inner: &str) -> Result<Domain, AddressError> {
    if let Ok(ip) = inner.parse::<Ipv4Addr>() {
        return Ok(Domain::Ipv4(ip));
    }
    let (tag, content) = inner.split_once(':').ok_or(AddressError::BadDomain)?;
    if tag.eq_ignore_ascii_case("IPv6") {
        return content
            .parse()
            .map(Domain::Ipv6)
            .map_err(|_| AddressError::BadDomain);
    }
    // Standardized-tag = Ldh-str; dcontent = %d33-90 / %d94-126 (everything printable but `[\]`).
    let tag_ok = !tag.is_empty()
        && !tag.ends_with('-')
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let content_ok =
        !content.is_empty() && content.bytes().all(|b| matches!(b, 33..=90 | 94..=126));
    if tag_ok && content_ok {
        Ok(Domain::General {
            tag: tag.to_owned(),
            content: content.to_owned(),
        })
    } else {
        Err(AddressError::BadDomain)
    }
}

impl Mailbox {
    /// Parse a bare `local@domain` (no angle brackets, no source route, nothing after it),
    /// e.g. from configuration. The path limit applies as if it were written in brackets.
    pub fn parse(s: &str) -> Result<Mailbox, AddressError> {
        let mailbox = parse_mailbox(s)?;
        check_path_len(s.len() + 2)?;
        Ok(mailbox)
    }

    /// True when local part and domain are pure ASCII (used to decide whether SMTPUTF8 is needed).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
}

/// `local@domain`, quoting the local part when it is not a valid Dot-string, so that the
/// output always parses back to the same value.
impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(&self.local) {
            f.write_str(&self.local)?;
        } else {
            f.write_char('"')?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_char('\\')?;
                }
                f.write_char(c)?;
            }
            f.write_char('"')?;
        }
        write!(f, "@{}", self.domain)
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<Postmaster>"),
            ForwardPath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// Parse the argument of `MAIL FROM:` - everything after the colon. Returns the path and the rest of the
/// string after the path (the ESMTP parameters, leading spaces trimmed), e.g. `"<a@b> SIZE=10"` -> (Mailbox a@b, "SIZE=10").
pub fn parse_reverse_path(s: &str) -> Result<(ReversePath, &str), AddressError> {
    let path = split_path(s)?;
    if path.inner.is_empty() {
        return Ok((ReversePath::Null, path.rest));
    }
    Ok((ReversePath::Mailbox(path.mailbox()?), path.rest))
}

/// Same for `RCPT TO:`.
pub fn parse_forward_path(s: &str) -> Result<(ForwardPath, &str), AddressError> {
    let path = split_path(s)?;
    if path.inner.eq_ignore_ascii_case("postmaster") {
        return Ok((ForwardPath::Postmaster, path.rest));
    }
    // An empty `inner` (RCPT TO:<>) has no `@` and fails as Syntax.
    Ok((ForwardPath::Mailbox(path.mailbox()?), path.rest))
}

/// A path cut out of a command argument, not yet checked against the Mailbox grammar.
struct RawPath<'a> {
    /// Octets of the path as written; an unbracketed path counts as if it had its brackets,
    /// so that leaving them off cannot get a longer address through.
    written: usize,
    /// Between the angle brackets: `[A-d-l ":"] Mailbox`, or empty for `<>`.
    inner: &'a str,
    /// The ESMTP parameters, leading blanks removed.
    rest: &'a str,
}

impl RawPath<'_> {
    fn mailbox(&self) -> Result<Mailbox, AddressError> {
        let mailbox = match self.inner.strip_prefix('@') {
            // A local part cannot start with an unquoted `@`, so this is a source route; domain
            // names hold no `:`, so the first one ends it. RFC 5321 4.1.1.3 says to ignore the route.
            Some(_) => {
                let (route, mailbox) = self.inner.split_once(':').ok_or(AddressError::Syntax)?;
                check_route(route)?;
                parse_mailbox(mailbox)?
            }
            None => parse_mailbox(self.inner)?,
        };
        check_path_len(self.written)?;
        Ok(mailbox)
    }
}

fn check_path_len(written: usize) -> Result<(), AddressError> {
    (written <= MAX_PATH)
        .then_some(())
        .ok_or(AddressError::PathTooLong)
}

/// A-d-l = At-domain *( "," At-domain ); At-domain = "@" Domain (names only, no literals).
fn check_route(route: &str) -> Result<(), AddressError> {
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::Syntax)?;
        if !matches!(Domain::parse(domain)?, Domain::Name(_)) {
            return Err(AddressError::BadDomain);
        }
    }
    Ok(())
}

const BLANKS: [char; 2] = [' ', '\t'];

/// Finds where the path ends, honouring quoted local parts (which may hold `>`, `<` and
/// spaces), and rejects control characters and stray or unbalanced angle brackets.
fn split_path(s: &str) -> Result<RawPath<'_>, AddressError> {
    let s = s.trim_start_matches(BLANKS);
    let bracketed = s.starts_with('<');
    let mut in_quote = false;
    let mut escaped = false;
    let mut end = None;
    // Every delimiter is ASCII, so byte offsets where one is found are char boundaries.
    for (i, &b) in s.as_bytes().iter().enumerate().skip(usize::from(bracketed)) {
        if escaped {
            escaped = false;
        } else if in_quote {
            match b {
                b'\\' => escaped = true,
                b'"' => in_quote = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_quote = true,
                b'>' if bracketed => {
                    end = Some(i);
                    break;
                }
                b' ' | b'\t' if !bracketed => {
                    end = Some(i);
                    break;
                }
                b'<' | b'>' | b' ' => return Err(AddressError::Syntax),
                _ => {}
            }
        }
        if b < 0x20 || b == 0x7f {
            return Err(AddressError::Syntax);
        }
    }
    let (written, inner, rest) = match (bracketed, end) {
        (true, Some(end)) => {
            let rest = &s[end + 1..];
            // `<a@b>SIZE=1` glues a parameter to the path; no MTA writes that.
            if !rest.is_empty() && !rest.starts_with(BLANKS) {
                return Err(AddressError::Syntax);
            }
            (end + 1, &s[1..end], rest)
        }
        (true, None) => return Err(AddressError::Syntax),
        (false, end) => {
            if in_quote {
                return Err(AddressError::Syntax);
            }
            let end = end.unwrap_or(s.len());
            if end == 0 {
                return Err(AddressError::Syntax);
            }
            (end + 2, &s[..end], &s[end..])
        }
    };
    Ok(RawPath {
        written,
        inner,
        rest: rest.trim_start_matches(BLANKS),
    })
}

/// Mailbox = Local-part "@" ( Domain / address-literal ), the whole of `s`.
fn parse_mailbox(s: &str) -> Result<Mailbox, AddressError> {
    let (local, domain) = match s.strip_prefix('"') {
        Some(quoted) => {
            let (local, after) = parse_quoted(quoted)?;
            (local, after.strip_prefix('@').ok_or(AddressError::Syntax)?)
        }
        None => {
            let (local, domain) = s.split_once('@').ok_or(AddressError::Syntax)?;
            if !is_dot_string(local) {
                return Err(AddressError::Syntax);
            }
            (local.to_owned(), domain)
        }
    };
    if s.len() - domain.len() - 1 > MAX_LOCAL {
        return Err(AddressError::LocalTooLong);
    }
    // A second `@` is a malformed address rather than a bad domain name; only a
    // General-address-literal may contain one.
    if !domain.starts_with('[') && domain.contains('@') {
        return Err(AddressError::Syntax);
    }
    Ok(Mailbox {
        local,
        domain: Domain::parse(domain)?,
    })
}

/// Parses a Quoted-string whose opening quote is already consumed; returns the unquoted
/// content and what follows the closing quote.
fn parse_quoted(s: &str) -> Result<(String, &str), AddressError> {
    let mut out = String::with_capacity(s.len().min(MAX_LOCAL));
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            // quoted-pairSMTP is ASCII only; RFC 6531 extends qtextSMTP, not the pair.
            '\\' => match chars.next() {
                Some((_, e @ ' '..='~')) => out.push(e),
                _ => return Err(AddressError::Syntax),
            },
            c if is_qtext(c) => out.push(c),
            _ => return Err(AddressError::Syntax),
        }
    }
    Err(AddressError::Syntax)
}

/// RFC 5322 atext plus RFC 6531 UTF8-non-ascii; C1 controls stay out like C0 ones.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

/// qtextSMTP: printable ASCII but `"` and `\`, plus UTF8-non-ascii.
fn is_qtext(c: char) -> bool {
    matches!(c, ' '..='!' | '#'..='[' | ']'..='~') || (!c.is_ascii() && !c.is_control())
}

/// Dot-string = Atom *("." Atom)
fn is_dot_string(s: &str) -> bool {
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressError::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Cmd {
        Mail,
        Rcpt,
        Both,
    }

    fn name(s: &str) -> Domain {
        Domain::Name(s.into())
    }

    fn mb(local: &str, domain: Domain) -> Option<Mailbox> {
        let local = local.into();
        Some(Mailbox { local, domain })
    }

    fn parse(cmd: Cmd, s: &str) -> Result<(Option<Mailbox>, &str), AddressError> {
        match cmd {
            Cmd::Mail | Cmd::Both => parse_reverse_path(s).map(|(p, rest)| match p {
                ReversePath::Null => (None, rest),
                ReversePath::Mailbox(m) => (Some(m), rest),
            }),
            Cmd::Rcpt => parse_forward_path(s).map(|(p, rest)| match p {
                ForwardPath::Postmaster => (None, rest),
                ForwardPath::Mailbox(m) => (Some(m), rest),
            }),
        }
    }

    fn commands(cmd: Cmd) -> &'static [Cmd] {
        match cmd {
            Cmd::Both => &[Cmd::Mail, Cmd::Rcpt],
            Cmd::Mail => &[Cmd::Mail],
            Cmd::Rcpt => &[Cmd::Rcpt],
        }
    }

    /// (input, command, expected mailbox or None for `<>` / Postmaster, expected rest)
    #[rustfmt::skip]
    fn valid() -> Vec<(&'static str, Cmd, Option<Mailbox>, &'static str)> {
        use Cmd::*;
        let v4 = |a, b, c, d| Domain::Ipv4(Ipv4Addr::new(a, b, c, d));
        let v6 = |s: &str| Domain::Ipv6(s.parse().unwrap());
        let general = |tag: &str, content: &str| Domain::General { tag: tag.into(), content: content.into() };
        vec![
            ("<a@example.org>", Both, mb("a", name("example.org")), ""),
            ("<John.Doe@Example.ORG>", Both, mb("John.Doe", name("Example.ORG")), ""),
            ("<\"john doe\"@example.org>", Both, mb("john doe", name("example.org")), ""),
            (r#"<"a\"b\\c"@x.example>"#, Both, mb(r#"a"b\c"#, name("x.example")), ""),
            (r#"<"a\x"@x.example>"#, Both, mb("ax", name("x.example")), ""),
            ("<\"a b>\"@c.example>", Both, mb("a b>", name("c.example")), ""),
            ("<\"<a@b>\"@c.example>", Both, mb("<a@b>", name("c.example")), ""),
            ("<\"\"@x.example>", Both, mb("", name("x.example")), ""),
            ("<\"a..b\"@x.example>", Both, mb("a..b", name("x.example")), ""),
            ("<\"é ü\"@x.example>", Both, mb("é ü", name("x.example")), ""),
            ("<!#$%&'*+-/=?^_`{|}~@x.example>", Both, mb("!#$%&'*+-/=?^_`{|}~", name("x.example")), ""),
            ("<jösé@bücher.example>", Both, mb("jösé", name("bücher.example")), ""),
            ("<用户@例子.广告>", Both, mb("用户", name("例子.广告")), ""),
            ("<a@[192.0.2.1]>", Both, mb("a", v4(192, 0, 2, 1)), ""),
            ("<a@[IPv6:2001:db8::1]>", Both, mb("a", v6("2001:db8::1")), ""),
            ("<a@[ipv6:::ffff:192.0.2.1]>", Both, mb("a", v6("::ffff:192.0.2.1")), ""),
            ("<a@[x-tag:some@content:1]>", Both, mb("a", general("x-tag", "some@content:1")), ""),
            ("<@a.example,@b.example:user@c.example>", Both, mb("user", name("c.example")), ""),
            ("<@a.example:\"x:y\"@c.example>", Both, mb("x:y", name("c.example")), ""),
            ("<>", Mail, None, ""),
            ("<> SIZE=100", Mail, None, "SIZE=100"),
            ("<postmaster>", Rcpt, None, ""),
            ("<POSTMASTER>", Rcpt, None, ""),
            ("postmaster", Rcpt, None, ""),
            ("  PostMaster NOTIFY=NEVER", Rcpt, None, "NOTIFY=NEVER"),
            ("<postmaster@example.org>", Both, mb("postmaster", name("example.org")), ""),
            ("a@b.example", Both, mb("a", name("b.example")), ""),
            ("a@b.example SIZE=10", Both, mb("a", name("b.example")), "SIZE=10"),
            ("\"a b\"@c.example\tX=1", Both, mb("a b", name("c.example")), "X=1"),
            ("  <a@b.example>", Both, mb("a", name("b.example")), ""),
            ("\t <a@b.example>  SIZE=10 BODY=8BITMIME", Both, mb("a", name("b.example")), "SIZE=10 BODY=8BITMIME"),
            ("<a@b.example>\t ", Both, mb("a", name("b.example")), ""),
            ("<a@b.example> <c@d.example>", Both, mb("a", name("b.example")), "<c@d.example>"),
            ("<a@_dmarc.example>", Both, mb("a", name("_dmarc.example")), ""),
            ("<a@192.0.2.1>", Both, mb("a", name("192.0.2.1")), ""),
            ("<a@xn--bcher-kva.b-1.example>", Both, mb("a", name("xn--bcher-kva.b-1.example")), ""),
            ("<a@localhost>", Both, mb("a", name("localhost")), ""),
        ]
    }

    #[rustfmt::skip]
    const INVALID: &[(&str, Cmd, AddressError)] = &[
        ("", Cmd::Both, Syntax),
        ("   ", Cmd::Both, Syntax),
        ("<a@b.example", Cmd::Both, Syntax),
        ("a@b.example>", Cmd::Both, Syntax),
        ("<<a@b.example>>", Cmd::Both, Syntax),
        ("<a@b.example>x", Cmd::Both, Syntax),
        ("<a@b@c.example>", Cmd::Both, Syntax),
        ("a@b@c.example", Cmd::Both, Syntax),
        ("<@b.example>", Cmd::Both, Syntax),
        ("<.a@b.example>", Cmd::Both, Syntax),
        ("<a.@b.example>", Cmd::Both, Syntax),
        ("<a..b@b.example>", Cmd::Both, Syntax),
        ("<a b@c.example>", Cmd::Both, Syntax),
        ("<a@b.example >", Cmd::Both, Syntax),
        ("<ab.example>", Cmd::Both, Syntax),
        ("SIZE=10", Cmd::Both, Syntax),
        ("<a(b)@c.example>", Cmd::Both, Syntax),
        ("<\"ab@c.example>", Cmd::Both, Syntax),
        ("\"a b@c.example", Cmd::Both, Syntax),
        ("<\"a\"b@c.example>", Cmd::Both, Syntax),
        ("<\"a\\é\"@c.example>", Cmd::Both, Syntax),
        ("<a@[1.2.3]>", Cmd::Both, BadDomain),
        ("<a@[300.1.1.1]>", Cmd::Both, BadDomain),
        ("<a@[01.1.1.1]>", Cmd::Both, BadDomain),
        ("<a@[IPv6:zz]>", Cmd::Both, BadDomain),
        ("<a@[IPv6:1.2.3.4]>", Cmd::Both, BadDomain),
        ("<a@[IPv6:2001:db8::1>", Cmd::Both, BadDomain),
        ("<a@[tag:]>", Cmd::Both, BadDomain),
        ("<a@[tag-:x]>", Cmd::Both, BadDomain),
        ("<a@[:x]>", Cmd::Both, BadDomain),
        ("<a@[t:a[b]>", Cmd::Both, BadDomain),
        ("<a@[]>", Cmd::Both, BadDomain),
        ("<a@-b.example>", Cmd::Both, BadDomain),
        ("<a@b-.example>", Cmd::Both, BadDomain),
        ("<a@b..example>", Cmd::Both, BadDomain),
        ("<a@.example>", Cmd::Both, BadDomain),
        ("<a@b.example.>", Cmd::Both, BadDomain),
        ("<a@>", Cmd::Both, BadDomain),
        ("<a@b!.example>", Cmd::Both, BadDomain),
        ("<a@\"b\".example>", Cmd::Both, BadDomain),
        ("<@a..example:u@c.example>", Cmd::Both, BadDomain),
        ("<@[192.0.2.1]:u@c.example>", Cmd::Both, BadDomain),
        ("<@a.example,b.example:u@c.example>", Cmd::Both, Syntax),
        ("<@a.example,:u@c.example>", Cmd::Both, Syntax),
        ("<@a.example>", Cmd::Both, Syntax),
        ("<@a.example:>", Cmd::Both, Syntax),
        ("<a\0@b.example>", Cmd::Both, Syntax),
        ("<a@b\x01.example>", Cmd::Both, Syntax),
        ("<a\x7f@b.example>", Cmd::Both, Syntax),
        ("<\"a\tb\"@c.example>", Cmd::Both, Syntax),
        ("<a\u{85}@b.example>", Cmd::Both, Syntax),
        ("<a@b\u{9f}.example>", Cmd::Both, Syntax),
        ("<a@b\u{a0}.example>", Cmd::Both, BadDomain),
        ("<a@b.example\r\n>", Cmd::Both, Syntax),
        ("<>", Cmd::Rcpt, Syntax),
        ("<> NOTIFY=NEVER", Cmd::Rcpt, Syntax),
        ("<postmaster>", Cmd::Mail, Syntax),
        ("postmaster", Cmd::Mail, Syntax),
        ("<@a.example:postmaster>", Cmd::Rcpt, Syntax),
    ];

    #[test]
    fn valid_paths() {
        for (input, cmd, expected, rest) in valid() {
            for &c in commands(cmd) {
                assert_eq!(
                    parse(c, input),
                    Ok((expected.clone(), rest)),
                    "{c:?} {input:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_paths() {
        for &(input, cmd, err) in INVALID {
            for &c in commands(cmd) {
                assert_eq!(parse(c, input), Err(err), "{c:?} {input:?}");
            }
        }
    }

    #[test]
    #[rustfmt::skip]
    fn length_limits() {
        let rev = |local: &str, domain: &str| parse_reverse_path(&format!("<{local}@{domain}>")).map(|p| p.1.len());
        let label63 = "d".repeat(63);
        let domain255 = [label63.as_str(); 4].join(".");
        let domain251 = format!("{label63}.{label63}.{label63}.{}", "d".repeat(59));
        assert_eq!(rev(&"l".repeat(64), "x.example"), Ok(0));
        assert_eq!(rev(&"l".repeat(65), "x.example"), Err(LocalTooLong));
        // The limit is on the wire form, so the quotes count; and it is octets, not characters.
        assert_eq!(rev(&format!("\"{}\"", "q".repeat(62)), "x.example"), Ok(0));
        assert_eq!(rev(&format!("\"{}\"", "q".repeat(63)), "x.example"), Err(LocalTooLong));
        assert_eq!(rev(&"é".repeat(32), "x.example"), Ok(0));
        assert_eq!(rev(&"é".repeat(33), "x.example"), Err(LocalTooLong));
        assert_eq!(rev("a", &format!("{label63}x.example")), Err(BadDomain));
        assert_eq!(rev("a", &format!("{domain255}x")), Err(DomainTooLong));
        assert_eq!(Domain::parse(&domain255).map(|d| d.to_string().len()), Ok(255));
        // 1 + 1 + 1 + 255 + 1 = 259 octets: every part fits, the whole does not.
        assert_eq!(rev("a", &domain255), Err(PathTooLong));
        assert_eq!(rev("ab", &domain251), Ok(0)); // exactly 256
        assert_eq!(rev("abc", &domain251), Err(PathTooLong));
        // Without brackets the path counts as if it had them.
        assert!(parse_reverse_path(&format!("ab@{domain251} SIZE=1")).is_ok());
        assert_eq!(parse_reverse_path(&format!("abc@{domain251}")), Err(PathTooLong));
        assert_eq!(Mailbox::parse(&format!("ab@{domain251}")).map(|m| m.local), Ok("ab".into()));
        assert_eq!(Mailbox::parse(&format!("abc@{domain251}")), Err(PathTooLong));
        // The source route counts towards the path, and its domains have the same limits.
        assert_eq!(parse_forward_path(&format!("<@{label63}:ab@{domain251}>")), Err(PathTooLong));
        assert_eq!(parse_forward_path(&format!("<@{domain255}x:a@b>")), Err(DomainTooLong));
    }

    /// Display output parses back to the same value, as a mailbox and as a path.
    fn assert_round_trip(m: &Mailbox) {
        let text = m.to_string();
        assert_eq!(Mailbox::parse(&text).as_ref(), Ok(m), "{text:?}");
        let path = ForwardPath::Mailbox(m.clone());
        assert_eq!(
            parse_forward_path(&path.to_string()),
            Ok((path, "")),
            "{text:?}"
        );
        assert_eq!(Domain::parse(&m.domain.to_string()).as_ref(), Ok(&m.domain));
    }

    #[test]
    fn display_round_trips() {
        for (input, _, expected, _) in valid() {
            if let Some(m) = expected {
                assert_round_trip(&m);
                assert_eq!(m.is_ascii(), input.is_ascii(), "{input:?}");
            }
        }
        let show = |s: &str| Mailbox::parse(s).unwrap().to_string();
        assert_eq!(show("\"john doe\"@example.org"), "\"john doe\"@example.org");
        assert_eq!(show(r#""a\"b\\c"@x"#), r#""a\"b\\c"@x"#);
        assert_eq!(show("\"plain\"@x"), "plain@x");
        assert_eq!(show("\"\"@x"), "\"\"@x");
        assert_eq!(show("a@[IPv6:2001:DB8:0::1]"), "a@[IPv6:2001:db8::1]");
        assert_eq!(ReversePath::Null.to_string(), "<>");
        assert_eq!(ForwardPath::Postmaster.to_string(), "<Postmaster>");
        assert_eq!(
            parse_forward_path("<Postmaster>"),
            Ok((ForwardPath::Postmaster, ""))
        );
        assert_eq!(Syntax.to_string(), "bad address syntax");
    }

    #[test]
    #[rustfmt::skip]
    fn domain_parse_and_strict() {
        // (input, accepted by parse, accepted by parse_strict)
        for (input, lenient, strict) in [
            ("mail.example.org", true, true), ("123.example", true, true), ("1example.com", true, true),
            ("bücher.example", true, true), ("[192.0.2.1]", true, true), ("[IPv6:::1]", true, true),
            ("_dmarc.example", true, false), ("host_1.example", true, false),
            ("192.0.2.1", true, false), ("12345", true, false),
            ("example.org.", false, false), ("-x.example", false, false), ("a b", false, false),
            ("", false, false), ("[192.0.2.1", false, false),
        ] {
            assert_eq!(Domain::parse(input).is_ok(), lenient, "{input:?}");
            assert_eq!(Domain::parse_strict(input).is_ok(), strict, "strict {input:?}");
        }
        assert_eq!(Domain::parse("192.0.2.1"), Ok(name("192.0.2.1")));
        assert_eq!(Domain::parse_strict("192.0.2.1"), Err(BadDomain));
        assert_eq!(Domain::parse("a\0b"), Err(Syntax));
        assert_eq!(Domain::parse("[ipv6:::1]").map(|d| d.to_string()), Ok("[IPv6:::1]".into()));
        assert!(name("Mail.Example").matches_name("mail.EXAMPLE"));
        assert!(!name("mail.example").matches_name("mail.example.org"));
        assert!(!Domain::Ipv4(Ipv4Addr::LOCALHOST).matches_name("127.0.0.1"));
    }

    /// Runs every entry point; anything accepted must also round-trip through Display.
    fn exercise(s: &str) {
        let _ = (Domain::parse(s), Domain::parse_strict(s));
        let reverse = match parse_reverse_path(s) {
            Ok((ReversePath::Mailbox(m), _)) => Some(m),
            _ => None,
        };
        let forward = match parse_forward_path(s) {
            Ok((ForwardPath::Mailbox(m), _)) => Some(m),
            _ => None,
        };
        for m in [Mailbox::parse(s).ok(), reverse, forward].iter().flatten() {
            assert_round_trip(m);
        }
    }

    #[test]
    fn never_panics() {
        let tricky = [
            "<@a.example,@b.example:\"é\\\"x >\"@[IPv6:2001:db8::1]> SIZE=1",
            "  \"用户 \\\\ü\"@例子.广告\tX",
            "<a@[tag:x@y]>é<",
            "\"\\é\"@[1.2.3.4]",
            "<\"\\",
        ];
        for s in tricky {
            for (i, _) in s.char_indices().chain([(s.len(), ' ')]) {
                exercise(&s[..i]);
                exercise(&s[i..]);
            }
        }
        let alphabet = [
            "<", ">", "@", "\"", "\\", " ", ".", ":", ",", "[", "]", "a", "-", "é", "\0",
        ];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    exercise(&format!("{a}{b}{c}"));
                    exercise(&format!("<{a}{b}@{c}>"));
                }
            }
        }
        // xorshift64: arbitrary byte soup, including broken UTF-8 repaired by from_utf8_lossy.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let soup = b"<>@\"\\ .:a[]\xc3\xa9\xe4";
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..24)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    soup[(seed % soup.len() as u64) as usize]
                })
                .collect();
            exercise(&String::from_utf8_lossy(&bytes));
        }
    }

    proptest::proptest! {
        /// A mailbox printed parses back to itself, and whatever a path
        /// parses to prints as something that parses to the same.
        #[test]
        fn mailboxes_print_and_parse_back(
            local in "[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~\" \\-]{1,30}",
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..4),
        ) {
            let m = Mailbox {
                local: local.clone(),
                domain: Domain::Name(labels.join(".")),
            };
            let printed = format!("<{m}>");
            match parse_forward_path(&printed) {
                Ok((ForwardPath::Mailbox(back), "")) => proptest::prop_assert_eq!(back, m),
                Ok((ForwardPath::Postmaster, "")) => {
                    proptest::prop_assert!(local.eq_ignore_ascii_case("postmaster"))
                }
                other => proptest::prop_assert!(false, "{printed:?} parsed as {other:?}"),
            }
        }

        #[test]
        fn any_path_that_parses_prints_as_itself(s in "<[ -~]{0,60}>") {
            if let Ok((p, "")) = parse_forward_path(&s) {
                let printed = p.to_string();
                let again = parse_forward_path(&printed).map(|(p, rest)| (p, rest.to_string()));
                proptest::prop_assert_eq!(again, Ok((p, String::new())), "{:?} printed as {:?}", s, printed);
            }
        }
    }
}
