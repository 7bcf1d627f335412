//! The header section of a message (RFC 5322 2.2, 3.6): where it ends, its
//! fields, and the addresses of To/Cc/Bcc. `sendmail -t` takes its
//! recipients from these fields and cuts Bcc out before the message goes
//! on, and delivery reports read the header of the message they return, so
//! both read a header section the same way here. A message is bytes, not
//! text: line ends may be LF or CRLF, mixed, and values may hold 8-bit
//! bytes, so everything but an address is handled as it was written.

use core::fmt;
use core::ops::Range;

/// Comments nest (RFC 5322 3.2.2); nobody writes this many, so more is an
/// attack or garbage, not mail.
const MAX_NESTING: usize = 32;

/// The most of the offending text an error quotes: a value may be any length.
const SNIPPET_CHARS: usize = 64;

/// Where the header section of a message ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// The length of the header section, up to but excluding the empty line.
    pub header: usize,
    /// Where the body starts: after the empty line that separates it, or
    /// `header` when there is none and the caller must write one.
    pub body: usize,
}

/// Where the header section of `msg` ends. It is the run of fields from the
/// start (a field continues on lines that start with a space or tab), and
/// it ends at an empty line, which is skipped, or at the first line that is
/// no field, which starts the body, or at the end of the input. A leading
/// mbox `From ` line is thus body, with no header before it, as Postfix
/// reads it too.
pub fn split(msg: &[u8]) -> Split {
    let header = fields(msg).last().map_or(0, |f| f.range.end);
    let rest = msg.get(header..).unwrap_or_default();
    let separator = if rest.starts_with(b"\n") {
        1
    } else if rest.starts_with(b"\r\n") {
        2
    } else {
        0
    };
    Split {
        header,
        body: header + separator,
    }
}

/// A header field as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// Without the colon, and without the blanks RFC 5322's obsolete syntax
    /// allows before it (`Subject : x`).
    pub name: &'a [u8],
    /// Everything after the colon, folding line breaks included, the line
    /// end of the last line not.
    pub value: &'a [u8],
    /// The whole field, the line end of its last line included, so that it
    /// can be cut out.
    pub range: Range<usize>,
}

impl Field<'_> {
    /// Whether this is the field `name`: field names are case-insensitive.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// The fields of a header section, in order. They stop at the first line
/// that neither is a field nor continues one (the empty line before the
/// body, say), so a whole message may be handed in as well.
pub fn fields(header: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let mut at = 0;
    core::iter::from_fn(move || {
        let field = field_at(header, at)?;
        at = field.range.end;
        Some(field)
    })
}

/// The field starting at `start`, if a field starts there.
fn field_at(buf: &[u8], start: usize) -> Option<Field<'_>> {
    let line = buf.get(start..)?;
    let name_len = line.iter().take_while(|&&b| is_ftext(b)).count();
    let blanks = line
        .iter()
        .skip(name_len)
        .take_while(|&&b| is_wsp(b))
        .count();
    if name_len == 0 || line.get(name_len + blanks) != Some(&b':') {
        return None;
    }
    let value_start = start + name_len + blanks + 1;
    let (mut value_end, mut end) = line_end(buf, value_start);
    while matches!(buf.get(end), Some(b' ' | b'\t')) {
        (value_end, end) = line_end(buf, end);
    }
    Some(Field {
        name: line.get(..name_len)?,
        value: buf.get(value_start..value_end)?,
        range: start..end,
    })
}

/// For the line that `from` is in: where its text ends (before CRLF or LF)
/// and where the next line starts.
fn line_end(buf: &[u8], from: usize) -> (usize, usize) {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let lf = from + i;
            let text_end = if i > 0 && rest[i - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            (text_end, lf + 1)
        }
        None => (buf.len(), buf.len()),
    }
}

/// ftext (RFC 5322 3.6.8): printable ASCII but the colon.
fn is_ftext(b: u8) -> bool {
    matches!(b, 33..=57 | 59..=126)
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `value` unfolded (RFC 5322 2.2.3) and without blanks around it. Every
/// line end goes, not only those that folding leaves (followed by a blank),
/// so that the result is always one line; a lone CR is no line end and stays.
pub fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for (i, &b) in value.iter().enumerate() {
        let line_end = b == b'\n' || (b == b'\r' && value.get(i + 1) == Some(&b'\n'));
        if !line_end {
            out.push(b);
        }
    }
    let end = out.iter().rposition(|&b| !is_wsp(b)).map_or(0, |i| i + 1);
    out.truncate(end);
    let start = out.iter().take_while(|&&b| is_wsp(b)).count();
    out.drain(..start);
    out
}

/// `header` without the fields named (case-insensitively), their
/// continuation lines included; every other byte is kept as it was.
pub fn remove(header: &[u8], names: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len());
    let mut kept = 0;
    for field in fields(header) {
        if names.iter().any(|name| field.is(name)) {
            out.extend_from_slice(header.get(kept..field.range.start).unwrap_or_default());
            kept = field.range.end;
        }
    }
    out.extend_from_slice(header.get(kept..).unwrap_or_default());
    out
}

/// Why an address list could not be read. Each names the offending text
/// (the start of it, for a long one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// A `"`, `(`, `<` or `[` that is not closed, or a `)`, `>` or `]` that
    /// was not opened.
    Unbalanced { delimiter: char, text: String },
    /// Comments nested more than 32 deep.
    TooDeep(String),
    /// `<>`, which names nobody.
    EmptyAddress(String),
    /// An element of the list that is no address: a name without one,
    /// a local part with blanks, a missing or malformed domain, a control
    /// character.
    NotAddress(String),
    /// Something after a complete address other than a comment before the
    /// next comma.
    Junk(String),
    /// A local part or domain that is not UTF-8, the only 8-bit form
    /// RFC 6532 allows.
    NotUtf8(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:?}` quotes the text and escapes control characters, so that a
        // message never carries a line break of the input.
        match self {
            HeaderError::Unbalanced { delimiter, text } => {
                write!(f, "unbalanced '{delimiter}' in {text:?}")
            }
            HeaderError::TooDeep(text) => write!(f, "comments nested too deeply in {text:?}"),
            HeaderError::EmptyAddress(text) => write!(f, "empty address in {text:?}"),
            HeaderError::NotAddress(text) => write!(f, "not an address: {text:?}"),
            HeaderError::Junk(text) => write!(f, "junk after an address in {text:?}"),
            HeaderError::NotUtf8(text) => write!(f, "address not in UTF-8: {text:?}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// The addr-specs of an RFC 5322 address-list (the value of To, Cc, Bcc
/// and their Resent- forms), in order, as `local@domain` with the local
/// part quoted where it must be, so that `Mailbox::parse` reads it.
/// Display names, comments, group names and obsolete routes are dropped;
/// empty elements (`a@b,,c@d`) and an unclosed group at the end
/// (`undisclosed-recipients:`) are tolerated, as real mail has them. An
/// address without a domain (`root`, `Root <root>`) comes back as its local
/// part alone: `sendmail -t` has always allowed it, and the caller
/// qualifies it.
pub fn address_list(value: &[u8]) -> Result<Vec<String>, HeaderError> {
    let text = unfold(value);
    let tokens = tokenize(&text)?;
    Parser {
        text: &text,
        tokens,
        at: 0,
        prev_end: 0,
    }
    .list()
}

/// At most [`SNIPPET_CHARS`] of `text`, for an error.
fn snippet(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let mut chars = text.trim_matches([' ', '\t']).chars();
    let mut out: String = chars.by_ref().take(SNIPPET_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

enum Kind<'a> {
    /// A run of anything but blanks and specials: atext, 8-bit bytes and
    /// control characters, which are refused only inside an address, so
    /// that a display name in a legacy charset does not spoil a list.
    Atom(&'a [u8]),
    /// The content of a quoted string, quoted-pairs resolved.
    Quoted(Vec<u8>),
    /// The content of a domain literal, blanks dropped, quoted-pairs resolved.
    Literal(Vec<u8>),
    /// One of `< > @ , ; : . \ ]`.
    Special(u8),
    End,
}

struct Token<'a> {
    kind: Kind<'a>,
    start: usize,
    end: usize,
}

/// The tokens of an unfolded value, comments and blanks dropped (CFWS may
/// stand between any two tokens), always ending with [`Kind::End`].
fn tokenize(text: &[u8]) -> Result<Vec<Token<'_>>, HeaderError> {
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&b) = text.get(at) {
        let start = at;
        let kind = match b {
            b' ' | b'\t' => {
                at += 1;
                continue;
            }
            b'(' => {
                at = skip_comment(text, at)?;
                continue;
            }
            b')' => {
                return Err(HeaderError::Unbalanced {
                    delimiter: ')',
                    text: snippet(&text[at..]),
                })
            }
            b'"' => {
                let (content, end) = enclosed(text, at, b'"')?;
                at = end;
                Kind::Quoted(content)
            }
            b'[' => {
                let (content, end) = enclosed(text, at, b']')?;
                at = end;
                Kind::Literal(content.into_iter().filter(|&b| !is_wsp(b)).collect())
            }
            b'<' | b'>' | b'@' | b',' | b';' | b':' | b'.' | b'\\' | b']' => {
                at += 1;
                Kind::Special(b)
            }
            _ => {
                at += text[at..].iter().take_while(|&&b| is_atom(b)).count();
                Kind::Atom(&text[start..at])
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: at,
        });
    }
    tokens.push(Token {
        kind: Kind::End,
        start: text.len(),
        end: text.len(),
    });
    Ok(tokens)
}

fn is_atom(b: u8) -> bool {
    !is_wsp(b) && !b"()<>[]:;@\\,.\"".contains(&b)
}

/// Skips the comment opening at `open`; returns where it ends. Counting
/// the depth rather than recursing keeps the stack flat whatever comes.
fn skip_comment(text: &[u8], open: usize) -> Result<usize, HeaderError> {
    let mut depth = 0;
    let mut at = open;
    while let Some(&b) = text.get(at) {
        match b {
            b'\\' => at += 1,
            b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(HeaderError::TooDeep(snippet(&text[open..])));
                }
            }
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(at + 1);
                }
            }
            _ => {}
        }
        at += 1;
    }
    Err(HeaderError::Unbalanced {
        delimiter: '(',
        text: snippet(&text[open..]),
    })
}

/// The content of the quoted string or domain literal opening at `open`,
/// up to `close`, and where it ends.
fn enclosed(text: &[u8], open: usize, close: u8) -> Result<(Vec<u8>, usize), HeaderError> {
    let mut content = Vec::new();
    let mut at = open + 1;
    while let Some(&b) = text.get(at) {
        if b == close {
            return Ok((content, at + 1));
        }
        if b == b'\\' {
            at += 1;
            match text.get(at) {
                Some(&escaped) => content.push(escaped),
                None => break,
            }
        } else {
            content.push(b);
        }
        at += 1;
    }
    Err(HeaderError::Unbalanced {
        delimiter: char::from(text[open]),
        text: snippet(&text[open..]),
    })
}

/// RFC 5322 3.4 over the tokens, without recursion: a group cannot nest.
struct Parser<'a> {
    text: &'a [u8],
    tokens: Vec<Token<'a>>,
    /// The next token; never past the last, [`Kind::End`].
    at: usize,
    /// Where the last token taken ended.
    prev_end: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token<'a> {
        &self.tokens[self.at]
    }

    fn is(&self, special: u8) -> bool {
        matches!(self.peek().kind, Kind::Special(s) if s == special)
    }

    fn bump(&mut self) {
        self.prev_end = self.peek().end;
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
    }

    /// The error for the next token, which is out of place in the element
    /// starting at `start`: a stray closing bracket, or what `make` says.
    fn error_at(&self, start: usize, make: fn(String) -> HeaderError) -> HeaderError {
        let token = self.peek();
        let text = snippet(self.text.get(start..token.end).unwrap_or_default());
        match token.kind {
            Kind::Special(c @ (b'>' | b']')) => HeaderError::Unbalanced {
                delimiter: char::from(c),
                text,
            },
            _ => make(text),
        }
    }

    /// address-list, with obs-addr-list's empty elements.
    fn list(mut self) -> Result<Vec<String>, HeaderError> {
        let mut out = Vec::new();
        // Where the group we are in started, if we are in one.
        let mut group = None;
        loop {
            let mut start = self.peek().start;
            match self.peek().kind {
                Kind::End => return Ok(out),
                Kind::Special(b',') => {
                    self.bump();
                    continue;
                }
                Kind::Special(b';') if group.is_some() => {
                    self.bump();
                    start = group.take().unwrap_or(start);
                }
                _ => {
                    let words = self.phrase();
                    if self.is(b':') && group.is_none() && !words.is_empty() {
                        self.bump();
                        group = Some(start);
                        continue;
                    }
                    out.push(self.mailbox(start, words)?);
                }
            }
            match self.peek().kind {
                Kind::End | Kind::Special(b',') => {}
                Kind::Special(b';') if group.is_some() => {}
                _ => return Err(self.error_at(start, HeaderError::Junk)),
            }
        }
    }

    /// The words (and dots, which obs-phrase and obs-local-part allow)
    /// before whatever says what they are: a display name before `<` or
    /// `:`, a local part before `@` or alone. Display names may hold domain
    /// literals too (`[bot] <a@b>`), which are refused only as local parts.
    fn phrase(&mut self) -> Range<usize> {
        let first = self.at;
        while matches!(
            self.peek().kind,
            Kind::Atom(_) | Kind::Quoted(_) | Kind::Literal(_) | Kind::Special(b'.')
        ) {
            self.bump();
        }
        first..self.at
    }

    /// A mailbox whose element starts at `start`, after the tokens `words`.
    fn mailbox(&mut self, start: usize, words: Range<usize>) -> Result<String, HeaderError> {
        match self.peek().kind {
            Kind::Special(b'<') => {
                self.bump();
                self.angle(start)
            }
            Kind::Special(b'@') => {
                self.bump();
                let local = self.local(start, words)?;
                let domain = self.domain(start)?;
                // `a@b <a@b>`: scripts write the address as its own display
                // name without quoting it; the bracketed one is meant.
                if self.is(b'<') {
                    self.bump();
                    return self.angle(start);
                }
                self.finish(start, &local, Some(&domain))
            }
            Kind::End | Kind::Special(b',' | b';') => {
                let local = self.local(start, words)?;
                self.finish(start, &local, None)
            }
            _ => Err(self.error_at(start, HeaderError::NotAddress)),
        }
    }

    /// angle-addr after its `<`, with obs-route and a bare local part.
    fn angle(&mut self, start: usize) -> Result<String, HeaderError> {
        if self.is(b'@') {
            // RFC 5322 4.4, like RFC 5321 4.1.1.3, says to ignore the route.
            loop {
                if self.is(b'@') {
                    self.bump();
                    self.domain(start)?;
                } else if self.is(b',') {
                    self.bump();
                } else if self.is(b':') {
                    self.bump();
                    break;
                } else {
                    return Err(self.error_at(start, HeaderError::NotAddress));
                }
            }
        }
        if self.is(b'>') {
            self.bump();
            let text = self.text.get(start..self.prev_end).unwrap_or_default();
            return Err(HeaderError::EmptyAddress(snippet(text)));
        }
        let words = self.phrase();
        let local = self.local(start, words)?;
        let domain = if self.is(b'@') {
            self.bump();
            Some(self.domain(start)?)
        } else {
            None
        };
        match self.peek().kind {
            Kind::Special(b'>') => {
                self.bump();
                self.finish(start, &local, domain.as_deref())
            }
            // A comma cannot be part of an address: the `>` was forgotten.
            Kind::End | Kind::Special(b',') => Err(HeaderError::Unbalanced {
                delimiter: '<',
                text: snippet(self.text.get(start..).unwrap_or_default()),
            }),
            _ => Err(self.error_at(start, HeaderError::NotAddress)),
        }
    }

    /// The local part the tokens `words` spell: words joined by dots. More
    /// dots than dot-atom allows (`a..b`, `a.`) are taken, as MTAs take them
    /// from real mail, and quoted on the way out.
    fn local(&self, start: usize, words: Range<usize>) -> Result<Vec<u8>, HeaderError> {
        let mut local = Vec::new();
        let mut after_word = false;
        let mut any_word = false;
        for token in self.tokens.get(words).unwrap_or_default() {
            let word: &[u8] = match &token.kind {
                Kind::Special(b'.') => {
                    local.push(b'.');
                    after_word = false;
                    continue;
                }
                Kind::Atom(atom) if !after_word => atom,
                Kind::Quoted(content) if !after_word => content,
                _ => {
                    let text = self.text.get(start..token.end).unwrap_or_default();
                    return Err(HeaderError::NotAddress(snippet(text)));
                }
            };
            local.extend_from_slice(word);
            after_word = true;
            any_word = true;
        }
        if any_word {
            Ok(local)
        } else {
            Err(self.error_at(start, HeaderError::NotAddress))
        }
    }

    /// The domain after an `@`: dot-atom or domain literal, brackets kept.
    fn domain(&mut self, start: usize) -> Result<Vec<u8>, HeaderError> {
        let mut domain = match &self.peek().kind {
            Kind::Atom(atom) => atom.to_vec(),
            Kind::Literal(content)
                if !content.is_empty() && content.iter().all(|&b| is_dtext(b)) =>
            {
                let mut literal = Vec::with_capacity(content.len() + 2);
                literal.push(b'[');
                literal.extend_from_slice(content);
                literal.push(b']');
                self.bump();
                return Ok(literal);
            }
            _ => return Err(self.error_at(start, HeaderError::NotAddress)),
        };
        self.bump();
        while self.is(b'.') {
            self.bump();
            match self.peek().kind {
                Kind::Atom(atom) => {
                    domain.push(b'.');
                    domain.extend_from_slice(atom);
                }
                _ => return Err(self.error_at(start, HeaderError::NotAddress)),
            }
            self.bump();
        }
        Ok(domain)
    }

    /// `local@domain` as text, the local part quoted unless it is a
    /// dot-atom, after checking that neither holds what no address can.
    fn finish(
        &self,
        start: usize,
        local: &[u8],
        domain: Option<&[u8]>,
    ) -> Result<String, HeaderError> {
        let written = || snippet(self.text.get(start..self.prev_end).unwrap_or_default());
        let (Ok(local), Ok(domain)) = (
            core::str::from_utf8(local),
            core::str::from_utf8(domain.unwrap_or_default()),
        ) else {
            return Err(HeaderError::NotUtf8(written()));
        };
        if local.chars().chain(domain.chars()).any(char::is_control) {
            return Err(HeaderError::NotAddress(written()));
        }
        let mut out = String::with_capacity(local.len() + domain.len() + 3);
        if is_dot_atom(local) {
            out.push_str(local);
        } else {
            out.push('"');
            for c in local.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        if !domain.is_empty() {
            out.push('@');
            out.push_str(domain);
        }
        Ok(out)
    }
}

/// dtext (RFC 5322 3.4.1): printable ASCII but `[`, `]` and `\`, and
/// RFC 6532's UTF-8.
fn is_dtext(b: u8) -> bool {
    matches!(b, 33..=90 | 94..=126 | 0x80..)
}

/// dot-atom-text (RFC 5322 3.2.3) with RFC 6532's UTF-8: what a local part
/// may be without quotes.
fn is_dot_atom(s: &str) -> bool {
    s.split('.').all(|atom| {
        !atom.is_empty()
            && atom.bytes().all(|b| {
                b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
            })
    })
}

#[cfg(test)]
mod tests {
    use super::super::address::Mailbox;
    use super::*;
    use HeaderError::*;

    /// `s` with LF line ends and with CRLF ones: every case is replayed with both.
    fn both(s: &[u8]) -> [Vec<u8>; 2] {
        let mut crlf = Vec::with_capacity(s.len() * 2);
        for &b in s {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        [s.to_vec(), crlf]
    }

    fn show(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// (message, header section, body, whether an empty line separates them)
    type SplitCase = (&'static [u8], &'static [u8], &'static [u8], bool);
    /// (name, value, whole field)
    type FieldCase = (&'static [u8], &'static [u8], &'static [u8]);

    #[rustfmt::skip]
    const SPLITS: &[SplitCase] = &[
        (b"", b"", b"", false),
        (b"\n", b"", b"", true),
        (b"\nbody\n", b"", b"body\n", true),
        (b"Subject: x\n", b"Subject: x\n", b"", false),
        (b"Subject: x", b"Subject: x", b"", false),
        (b"Subject: x\n\nbody\n", b"Subject: x\n", b"body\n", true),
        (b"Subject: x\n\n\nbody", b"Subject: x\n", b"\nbody", true),
        (b"Subject: x\n\n", b"Subject: x\n", b"", true),
        (b"Subject: x\nno field here\n", b"Subject: x\n", b"no field here\n", false),
        (b"Subject: x\n folded\n\tagain\nTo: a\n\nb", b"Subject: x\n folded\n\tagain\nTo: a\n", b"b", true),
        (b"A: 1\n \nB: 2\n\nb", b"A: 1\n \nB: 2\n", b"b", true),
        (b" first line folded\nSubject: x\n\n", b"", b" first line folded\nSubject: x\n\n", false),
        (b"From a@b.example Mon Jan  1 00:00:00 2026\nSubject: x\n\n", b"",
            b"From a@b.example Mon Jan  1 00:00:00 2026\nSubject: x\n\n", false),
        (b"Subject : x\nSubject:x\nX-Empty:\n\nb", b"Subject : x\nSubject:x\nX-Empty:\n", b"b", true),
        (b": no name\n\n", b"", b": no name\n\n", false),
        (b"Subject\n\n", b"", b"Subject\n\n", false),
        (b"Sub ject: x\n\n", b"", b"Sub ject: x\n\n", false),
        (b"A: 1\nN\xc3\xa4me: 2\n\n", b"A: 1\n", b"N\xc3\xa4me: 2\n\n", false),
        (b"X-8bit: caf\xc3\xa9 \xff\xfe\x00\n\n\xff", b"X-8bit: caf\xc3\xa9 \xff\xfe\x00\n", b"\xff", true),
        (b"A: 1\n\tB: not a field\n\nb", b"A: 1\n\tB: not a field\n", b"b", true),
    ];

    #[test]
    fn split_cases() {
        for &(msg, header, body, separated) in SPLITS {
            for ((msg, header), body) in both(msg).iter().zip(both(header)).zip(both(body)) {
                let s = split(msg);
                assert!(s.header <= s.body && s.body <= msg.len(), "{:?}", show(msg));
                assert_eq!(show(&msg[..s.header]), show(&header), "{:?}", show(msg));
                assert_eq!(show(&msg[s.body..]), show(&body), "{:?}", show(msg));
                assert_eq!(s.body > s.header, separated, "{:?}", show(msg));
            }
        }
    }

    #[test]
    fn split_mixed_line_ends() {
        #[rustfmt::skip]
        let cases: &[(&[u8], usize, usize)] = &[
            (b"A: 1\r\nB: 2\n\r\nbody", 11, 13),
            (b"A: 1\nB: 2\r\n\nbody", 11, 12),
            (b"A: 1\r\n folded\n\r\n", 14, 16),
            // A lone CR is no line end: the line is neither empty nor a field.
            (b"A: 1\n\r\r\nbody", 5, 5),
            (b"A: 1\n\r", 5, 5),
            (b"\r\n", 0, 2),
        ];
        for &(msg, header, body) in cases {
            assert_eq!(split(msg), Split { header, body }, "{:?}", show(msg));
        }
    }

    #[test]
    fn split_long_lines() {
        let long = vec![b'x'; 100_000];
        for eol in [&b"\n"[..], b"\r\n"] {
            let msg = [
                b"Subject: ",
                &long[..],
                eol,
                b" ",
                &long[..],
                eol,
                eol,
                &long[..],
                eol,
            ]
            .concat();
            let s = split(&msg);
            assert_eq!(s.header, 9 + 100_000 + 1 + 100_000 + 2 * eol.len());
            assert_eq!(s.body, s.header + eol.len());
            let field = fields(&msg).next().unwrap();
            assert_eq!(field.range, 0..s.header);
            assert_eq!(unfold(field.value).len(), 200_001);
            let name = [&long[..], b": x", eol, eol].concat();
            assert_eq!(split(&name).header, name.len() - eol.len());
            let body = [&long[..], b" no field", eol].concat();
            assert_eq!(split(&body), Split { header: 0, body: 0 });
        }
    }

    /// (header, fields as (name, value, whole field))
    #[rustfmt::skip]
    fn field_cases() -> Vec<(&'static [u8], Vec<FieldCase>)> {
        vec![
            (b"", vec![]),
            (b"Subject: hello\nTo: a@b,\n c@d\nX-Empty:\nX-Sp \t: v \n",
             vec![(b"Subject", b" hello", b"Subject: hello\n"),
                  (b"To", b" a@b,\n c@d", b"To: a@b,\n c@d\n"),
                  (b"X-Empty", b"", b"X-Empty:\n"),
                  (b"X-Sp", b" v ", b"X-Sp \t: v \n")]),
            (b"A:1\n\n\nB: 2\n", vec![(b"A", b"1", b"A:1\n")]),
            (b"A: 1\nnot a field\nB: 2\n", vec![(b"A", b" 1", b"A: 1\n")]),
            (b"A: \xc3\xa9\xff\n \n\tz", vec![(b"A", b" \xc3\xa9\xff\n \n\tz", b"A: \xc3\xa9\xff\n \n\tz")]),
            (b"A: x: y\nB:\n", vec![(b"A", b" x: y", b"A: x: y\n"), (b"B", b"", b"B:\n")]),
        ]
    }

    #[test]
    fn fields_cases() {
        for (header, expected) in field_cases() {
            let all = both(header);
            for (eol, header) in all.iter().enumerate() {
                let found: Vec<_> = fields(header)
                    .map(|f| (show(f.name), show(f.value), show(&header[f.range])))
                    .collect();
                let expected: Vec<_> = expected
                    .iter()
                    .map(|(n, v, w)| (show(n), show(&both(v)[eol]), show(&both(w)[eol])))
                    .collect();
                assert_eq!(found, expected, "{:?}", show(header));
            }
        }
        let field = fields(b"content-TYPE : text/plain").next().unwrap();
        assert!(field.is("Content-Type") && field.is("content-type"));
        assert!(!field.is("Content") && !field.is("Content-Type "));
    }

    #[test]
    fn unfold_cases() {
        #[rustfmt::skip]
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b" \t ", b""),
            (b" hello ", b"hello"),
            (b" a,\n b", b"a, b"),
            (b"a\n\tb\n  c", b"a\tb  c"),
            (b" \n x \n ", b"x"),
            (b"\xc3\xa9\n \xff", b"\xc3\xa9 \xff"),
            (b"a\nb", b"ab"),
        ];
        for &(value, expected) in cases {
            for value in both(value) {
                assert_eq!(show(&unfold(&value)), show(expected), "{:?}", show(&value));
            }
        }
        assert_eq!(unfold(b"a\rb\r"), b"a\rb\r");
        assert_eq!(unfold(b"a\r\r\n b"), b"a\r b");
    }

    /// (header, names, what is left)
    #[rustfmt::skip]
    const REMOVALS: &[(&[u8], &[&str], &[u8])] = &[
        (b"To: a@b\nBcc: secret@x,\n  more@y\nSubject: s\nbcc : again\nResent-Bcc: r\n\tr2\nX: 1\n",
         &["Bcc", "Resent-Bcc"], b"To: a@b\nSubject: s\nX: 1\n"),
        (b"Bcc: x\n\nBcc: not a field\n", &["Bcc"], b"\nBcc: not a field\n"),
        (b"To: a\nBcc: b", &["bcc"], b"To: a\n"),
        (b"To: a\nBcc: b\n", &[], b"To: a\nBcc: b\n"),
        (b"To: a\nBcc-Copy: b\nX-Bcc: c\n", &["Bcc"], b"To: a\nBcc-Copy: b\nX-Bcc: c\n"),
        (b"Bcc: a\nBcc: b\n folded\n", &["Bcc"], b""),
        (b"A: \xff\nBcc: \xfe\nno field\nBcc: body\n", &["Bcc"], b"A: \xff\nno field\nBcc: body\n"),
    ];

    #[test]
    fn remove_cases() {
        for &(header, names, expected) in REMOVALS {
            for (header, expected) in both(header).iter().zip(both(expected)) {
                assert_eq!(
                    show(&remove(header, names)),
                    show(&expected),
                    "{:?}",
                    show(header)
                );
            }
        }
        let mixed = b"To: a\r\nBcc: b\n c\r\nSubject: s\n\r\nbody\r\n";
        assert_eq!(
            remove(mixed, &["Bcc"]),
            b"To: a\r\nSubject: s\n\r\nbody\r\n"
        );
    }

    /// (address-list, addresses)
    #[rustfmt::skip]
    const ADDRESSES: &[(&str, &[&str])] = &[
        ("", &[]),
        ("  ", &[]),
        ("(nobody)", &[]),
        ("a@b", &["a@b"]),
        ("John.Doe@Example.ORG", &["John.Doe@Example.ORG"]),
        ("John Doe <john@example.org>", &["john@example.org"]),
        ("\"Doe, John\" <john@example.org>", &["john@example.org"]),
        ("a@b.example, \"Quoted, Name\" <c@d.example>, e@f.example",
            &["a@b.example", "c@d.example", "e@f.example"]),
        ("(comment) a@b.example (another (nested) one)", &["a@b.example"]),
        ("John (the (real \\) one)) <a@b.example>", &["a@b.example"]),
        ("a(x)@(y)b(z).(w)example", &["a@b.example"]),
        ("John Q. Public <jqp@x.example>", &["jqp@x.example"]),
        ("=?utf-8?q?J=C3=B6ns?= <j@x.example>", &["j@x.example"]),
        ("[bot] <bot@x.example>", &["bot@x.example"]),
        ("Friends: a@b.example, Joe <c@d.example>;", &["a@b.example", "c@d.example"]),
        ("Friends: a@b.example, Joe <c@d.example>; , e@f.example (x)",
            &["a@b.example", "c@d.example", "e@f.example"]),
        ("undisclosed-recipients:;", &[]),
        ("undisclosed-recipients: ;", &[]),
        ("undisclosed-recipients:", &[]),
        ("Team: a@b.example", &["a@b.example"]),
        ("\"Team, all\": (none) ;, a@b.example", &["a@b.example"]),
        ("G: a@b.example,, ;", &["a@b.example"]),
        ("a@b.example,,c@d.example,", &["a@b.example", "c@d.example"]),
        (", ,a@b.example", &["a@b.example"]),
        ("John\n <a@b.example>,\n\tc@d.example\n (comment\n continued)", &["a@b.example", "c@d.example"]),
        ("\"John\n Doe\" <a@b.example>", &["a@b.example"]),
        ("\"john doe\"@example.org", &["\"john doe\"@example.org"]),
        ("\"john\n doe\"@example.org", &["\"john doe\"@example.org"]),
        ("\"john\"@example.org", &["john@example.org"]),
        ("\"a\\\"b\\\\c\"@x.example", &["\"a\\\"b\\\\c\"@x.example"]),
        ("\"\"@x.example", &["\"\"@x.example"]),
        ("\"a@b\"@x.example", &["\"a@b\"@x.example"]),
        ("john.\"doe\"@x.example", &["john.doe@x.example"]),
        ("\"john doe\".x@x.example", &["\"john doe.x\"@x.example"]),
        ("john . doe @ example . org", &["john.doe@example.org"]),
        ("a..b@x.example", &["\"a..b\"@x.example"]),
        ("a.@x.example", &["\"a.\"@x.example"]),
        ("<@route.example,@other.example:a@b.example>", &["a@b.example"]),
        ("Joe <@route.example:\"x y\"@b.example>", &["\"x y\"@b.example"]),
        ("a@[192.0.2.1]", &["a@[192.0.2.1]"]),
        ("Lit <a@[ 192.0.2.1 ]>", &["a@[192.0.2.1]"]),
        ("a@[IPv6:2001:db8::1]", &["a@[IPv6:2001:db8::1]"]),
        ("jösé@bücher.example", &["jösé@bücher.example"]),
        ("\"Jöns\" <用户@例子.广告>, Jöns <\"jöns j\"@x.example>", &["用户@例子.广告", "\"jöns j\"@x.example"]),
        ("root", &["root"]),
        ("Root <root>", &["root"]),
        ("<root>, a@b.example, root (Root)", &["root", "a@b.example", "root"]),
        ("\"john doe\"", &["\"john doe\""]),
        ("a@b.example <c@d.example>", &["c@d.example"]),
    ];

    #[test]
    fn address_lists() {
        for &(value, expected) in ADDRESSES {
            for value in both(value.as_bytes()) {
                let expected: Vec<String> = expected.iter().map(|a| a.to_string()).collect();
                assert_eq!(
                    address_list(&value),
                    Ok(expected.clone()),
                    "{:?}",
                    show(&value)
                );
                for address in &expected {
                    let qualified = if address.contains('@') {
                        address.to_string()
                    } else {
                        format!("{address}@localhost")
                    };
                    assert!(Mailbox::parse(&qualified).is_ok(), "{qualified:?}");
                }
            }
        }
        // A display name in a legacy charset is no reason to refuse the list.
        assert_eq!(
            address_list(b"Jos\xe9 <jose@x.example>"),
            Ok(vec!["jose@x.example".into()])
        );
        assert_eq!(
            address_list(b"\"Jos\xe9\x01\" <a@b>"),
            Ok(vec!["a@b".into()])
        );
        assert_eq!(address_list(b"Bell\x07 <a@b>"), Ok(vec!["a@b".into()]));
        let deep = format!("{}{}a@b", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert_eq!(address_list(deep.as_bytes()), Ok(vec!["a@b".into()]));
    }

    fn unbalanced(delimiter: char, text: &str) -> HeaderError {
        Unbalanced {
            delimiter,
            text: text.into(),
        }
    }

    fn err(make: fn(String) -> HeaderError, text: &str) -> HeaderError {
        make(text.into())
    }

    #[test]
    #[rustfmt::skip]
    fn malformed_address_lists() {
        let cases: Vec<(&[u8], HeaderError)> = vec![
            (b"\"John <a@b>", unbalanced('"', "\"John <a@b>")),
            (b"\"a\\", unbalanced('"', "\"a\\")),
            (b"John <a@b", unbalanced('<', "John <a@b")),
            (b"John <a@b,\n c@d", unbalanced('<', "John <a@b, c@d")),
            (b"a@b>", unbalanced('>', "a@b>")),
            (b"> a@b", unbalanced('>', ">")),
            (b"(a@b", unbalanced('(', "(a@b")),
            (b"a@b (x (y)", unbalanced('(', "(x (y)")),
            (b"a@b)", unbalanced(')', ")")),
            (b"a@[192.0.2.1", unbalanced('[', "[192.0.2.1")),
            (b"a]@b", unbalanced(']', "a]")),
            (b"<>", err(EmptyAddress, "<>")),
            (b"a@b, Nobody <>", err(EmptyAddress, "Nobody <>")),
            (b"<@route.example:>", err(EmptyAddress, "<@route.example:>")),
            (b"a@b c@d", err(Junk, "a@b c")),
            (b"<a@b> c", err(Junk, "<a@b> c")),
            (b"a@b; c@d", err(Junk, "a@b;")),
            (b"G: a@b; c", err(Junk, "G: a@b; c")),
            (b"G: ;x", err(Junk, "G: ;x")),
            (b"a@[192.0.2.1]x", err(Junk, "a@[192.0.2.1]x")),
            (b"a@b\\c", err(Junk, "a@b\\")),
            (b"John Smith", err(NotAddress, "John Smith")),
            (b"a@b, john doe@x", err(NotAddress, "john doe")),
            (b"a@", err(NotAddress, "a@")),
            (b"@b", err(NotAddress, "@b")),
            (b"a@b..c", err(NotAddress, "a@b..")),
            (b"a@b.", err(NotAddress, "a@b.")),
            (b"a@.b", err(NotAddress, "a@.")),
            (b"a@\"b\"", err(NotAddress, "a@\"b\"")),
            (b"a@[]", err(NotAddress, "a@[]")),
            (b"a@[a\\]b]", err(NotAddress, "a@[a\\]b]")),
            (b"[192.0.2.1]", err(NotAddress, "[192.0.2.1]")),
            (b"[x]@b", err(NotAddress, "[x]")),
            (b"a\\b@c", err(NotAddress, "a\\")),
            (b";", err(NotAddress, ";")),
            (b".", err(NotAddress, ".")),
            (b"A: B: c@d;;", err(NotAddress, "B:")),
            (b": a@b;", err(NotAddress, ":")),
            (b"<a@b c>", err(NotAddress, "<a@b c")),
            (b"<,a@b>", err(NotAddress, "<,")),
            (b"<@r a@b>", err(NotAddress, "<@r a")),
            (b"a\x01b@c", err(NotAddress, "a\u{1}b@c")),
            (b"a\rb@c", err(NotAddress, "a\rb@c")),
            (b"\"a\\\rb\"@c", err(NotAddress, "\"a\\\rb\"@c")),
            (b"\"a\x7f\"@c", err(NotAddress, "\"a\x7f\"@c")),
            (b"a@b\x00c", err(NotAddress, "a@b\0c")),
            (b"a@\xc2\x80.example", err(NotAddress, "a@\u{80}.example")),
            (b"a\xff@c", err(NotUtf8, "a\u{fffd}@c")),
            (b"Jos\xe9 <jos\xe9@x>", err(NotUtf8, "Jos\u{fffd} <jos\u{fffd}@x>")),
            (b"a@x\xe9", err(NotUtf8, "a@x\u{fffd}")),
        ];
        for (value, expected) in cases {
            for value in both(value) {
                assert_eq!(address_list(&value), Err(expected.clone()), "{:?}", show(&value));
            }
        }
        let deep = format!("a@b ({}{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING + 1));
        let deep_text = snippet(&deep.as_bytes()[4..]);
        assert_eq!(address_list(deep.as_bytes()), Err(TooDeep(deep_text)));
        let hostile = "(".repeat(1_000_000);
        assert!(matches!(address_list(hostile.as_bytes()), Err(TooDeep(_))));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            unbalanced('<', "John <a@b").to_string(),
            "unbalanced '<' in \"John <a@b\""
        );
        assert_eq!(
            err(EmptyAddress, "<>").to_string(),
            "empty address in \"<>\""
        );
        assert_eq!(
            err(Junk, "a@b c").to_string(),
            "junk after an address in \"a@b c\""
        );
        assert_eq!(
            err(NotAddress, "John").to_string(),
            "not an address: \"John\""
        );
        assert_eq!(
            err(NotUtf8, "a\u{fffd}").to_string(),
            "address not in UTF-8: \"a\u{fffd}\""
        );
        assert_eq!(
            err(TooDeep, "((").to_string(),
            "comments nested too deeply in \"((\""
        );
        // Control characters are shown escaped, so a message is one line.
        let e = address_list(b"a\r\rb@c").unwrap_err().to_string();
        assert_eq!(e, "not an address: \"a\\r\\rb@c\"");
        // A long value is quoted only in part.
        let long = format!("{}, John Smith", "a@b, ".repeat(100));
        let Err(NotAddress(text)) = address_list(long.as_bytes()) else {
            panic!("{long}");
        };
        assert_eq!(text, "John Smith");
        let long = format!("\"{}", "x".repeat(1000));
        let Err(Unbalanced { text, .. }) = address_list(long.as_bytes()) else {
            panic!("{long}");
        };
        assert_eq!(text, format!("\"{}…", "x".repeat(SNIPPET_CHARS - 1)));
    }

    /// What `sendmail -t` does with these functions.
    #[test]
    fn recipients_of_a_message() {
        let msg: &[u8] = b"From: me\nTo: a@b.example,\n  \"C, D\" <c@d.example>\n\
            cc: (none) e@f.example\nSubject: Hi\nBCC: Secret: g@h.example,\n\troot;\n\
            X-To: z@z.example\n\nTo: body@x\n";
        let without_bcc: &[u8] = b"From: me\nTo: a@b.example,\n  \"C, D\" <c@d.example>\n\
            cc: (none) e@f.example\nSubject: Hi\nX-To: z@z.example\n";
        let rcpts = [
            "a@b.example",
            "c@d.example",
            "e@f.example",
            "g@h.example",
            "root",
        ];
        let cases = both(msg)
            .into_iter()
            .zip(both(without_bcc))
            .zip(both(b"To: body@x\n"));
        for ((msg, without_bcc), body) in cases {
            let s = split(&msg);
            let header = &msg[..s.header];
            let mut found = Vec::new();
            for field in fields(header).filter(|f| ["To", "Cc", "Bcc"].iter().any(|n| f.is(n))) {
                found.extend(address_list(field.value).unwrap());
            }
            assert_eq!(found, rcpts);
            assert_eq!(show(&remove(header, &["Bcc"])), show(&without_bcc));
            assert_eq!(show(&msg[s.body..]), show(&body));
        }
    }

    /// Runs every function on `input` and checks what must hold for any input.
    fn exercise(input: &[u8]) {
        let s = split(input);
        assert!(s.header <= s.body && s.body <= input.len());
        assert!(matches!(&input[s.header..s.body], b"" | b"\n" | b"\r\n"));
        let mut at = 0;
        for field in fields(input) {
            assert_eq!(field.range.start, at);
            assert!(!field.name.is_empty() && !field.value.ends_with(b"\n"));
            at = field.range.end;
            assert!(!unfold(field.value).contains(&b'\n'));
            if let Ok(addresses) = address_list(field.value) {
                assert!(
                    addresses.iter().all(|a| !a.contains(['\r', '\n'])),
                    "{addresses:?}"
                );
            }
        }
        assert_eq!(at, s.header);
        let removed = remove(input, &["a", "Bcc"]);
        let expected: Vec<u8> = fields(input)
            .filter(|f| !f.is("a") && !f.is("bcc"))
            .flat_map(|f| input[f.range].iter().copied())
            .chain(input[s.header..].iter().copied())
            .collect();
        assert_eq!(removed, expected);
        let unfolded = unfold(input);
        assert!(!unfolded.contains(&b'\n'));
        match address_list(input) {
            Ok(addresses) => assert!(addresses.iter().all(|a| !a.contains(['\r', '\n']))),
            Err(e) => assert!(!e.to_string().contains(['\r', '\n']), "{e}"),
        }
    }

    #[test]
    fn never_panics() {
        let soup: &[u8] = b"aZ@.,;:<>()[]\"\\ \t\r\n\n:\xc3\xa9\xff\x00-";
        // Knuth's MMIX LCG.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for round in 0..20_000 {
            let len = next() % 48;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match round % 4 {
                    0 => next() as u8,
                    _ => soup[next() % soup.len()],
                })
                .collect();
            exercise(&bytes);
            exercise(&[b"To: ", &bytes[..]].concat());
        }
        for (value, _) in ADDRESSES {
            let bytes = value.as_bytes();
            for i in 0..=bytes.len() {
                exercise(&bytes[..i]);
                exercise(&bytes[i..]);
            }
        }
    }
}
