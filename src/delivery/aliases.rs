//! The aliases file in the classic `/etc/aliases` format (aliases(5), as
//! sendmail, Postfix and OpenSMTPD read it), and the member lists of
//! `:include:` files and `~/.forward`.
//!
//! A logical line is `name: member, member, ...`; a line that starts with
//! white space continues the one before, and lines whose first visible
//! character is `#` are comments. Members are separated by commas; double
//! quotes protect commas and spaces (`"|cmd a, b"`) and quote names. A
//! member is a local name or address, `\user` (a user's own mailbox, not
//! expanded again), `/path` (appended to as an mbox), `|command` (a pipe)
//! or `:include:/path` (a file of more members).
//!
//! Files written for other MTAs load as they do there: a leading UTF-8
//! byte-order mark is ignored, comments may hold any bytes, and in the
//! aliases file an entry that is not UTF-8 text is skipped and a name
//! defined again keeps its first definition (as Postfix's postalias), both
//! with a warning, so that one such line does not stop the server. Other
//! mistakes are errors.
//!
//! This module only parses: what the members mean is the resolver's
//! business. Errors and warnings carry the file and line.

use crate::config::bad_local_part;
use crate::smtp::address::Mailbox;
use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest aliases file read.
const MAX_ALIASES: u64 = 16 << 20;
/// Largest `:include:` file read.
const MAX_INCLUDE: u64 = 1 << 20;

/// One member of an alias, include file or `.forward`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `name`, `name@domain`, or `\name` (backslash kept).
    Address(String),
    /// `/path`: append to this file as an mbox.
    File(PathBuf),
    /// `|command`: run it with the message on its standard input.
    Pipe(String),
    /// `:include:/path`: the members listed in that file.
    Include(PathBuf),
}

/// A parse error, with the file and line it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for AliasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for AliasError {}

/// The aliases table: names (lower case) to members.
#[derive(Debug, Default)]
pub struct Aliases {
    /// The members of each name, and the line that defined it.
    map: HashMap<String, (usize, Vec<Target>)>,
    warnings: Vec<AliasError>,
}

impl Aliases {
    /// Reads and parses an aliases file.
    pub fn load(path: &Path) -> Result<Aliases, AliasError> {
        let text = read_bounded(path, MAX_ALIASES)?;
        Aliases::parse(&text, &path.display().to_string())
    }

    /// Parses an aliases file's contents; `file` names it in errors and
    /// warnings.
    pub fn parse(text: &[u8], file: &str) -> Result<Aliases, AliasError> {
        let mut map: HashMap<String, (usize, Vec<Target>)> = HashMap::new();
        let mut warnings = Vec::new();
        for logical in logical_lines(text) {
            let line = logical.line;
            let err = |line, message: String| AliasError {
                file: file.to_string(),
                line,
                message,
            };
            let text = match logical.text {
                Ok(text) => text,
                Err(bad) => {
                    let entry = if bad == line {
                        "the entry".to_string()
                    } else {
                        format!("the entry at line {line}")
                    };
                    warnings.push(err(bad, format!("not UTF-8 text: {entry} is skipped")));
                    continue;
                }
            };
            let err = |message: String| err(line, message);
            let (name, rest) = split_name(&text).map_err(|m| err(m.to_string()))?;
            if let Some(why) = bad_local_part(&name) {
                return Err(err(format!("{name:?} cannot be an alias name: {why}")));
            }
            if name.contains('@') {
                return Err(err(format!(
                    "{name:?}: an alias name is a local part, without a domain"
                )));
            }
            let targets = parse_members(rest).map_err(err)?;
            if targets.is_empty() {
                return Err(err(format!("{name}: no members")));
            }
            match map.entry(name.to_lowercase()) {
                Entry::Occupied(first) => warnings.push(err(format!(
                    "{name}: defined again (names are case-insensitive); line {} is used",
                    first.get().0
                ))),
                Entry::Vacant(v) => {
                    v.insert((line, targets));
                }
            }
        }
        Ok(Aliases { map, warnings })
    }

    /// The alias names, in the order of the file.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<(usize, &str)> = self
            .map
            .iter()
            .map(|(name, (line, _))| (*line, name.as_str()))
            .collect();
        names.sort_unstable();
        names.into_iter().map(|(_, name)| name).collect()
    }

    /// The members of an alias; names are case-insensitive.
    pub fn get(&self, name: &str) -> Option<&[Target]> {
        self.map
            .get(&name.to_lowercase())
            .map(|(_, targets)| targets.as_slice())
    }

    /// What was skipped or ignored, for the log.
    pub fn warnings(&self) -> &[AliasError] {
        &self.warnings
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What an `:include:` file gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Include {
    Members(Vec<Target>),
    /// Not owned by the uid it had to be; not read.
    Foreign {
        owner: u32,
    },
}

/// Reads an `:include:` file; with `owner`, only if that uid owns it (the
/// check comes before a byte is read).
pub fn load_include(path: &Path, owner: Option<u32>) -> Result<Include, AliasError> {
    let mut foreign = None;
    let text = read_checked(path, MAX_INCLUDE, &mut |meta| match owner {
        Some(uid) if meta.uid() != uid => {
            foreign = Some(meta.uid());
            false
        }
        _ => true,
    })?;
    match (foreign, text) {
        (Some(owner), _) => Ok(Include::Foreign { owner }),
        (None, Some(text)) => Ok(Include::Members(parse_include(
            &text,
            &path.display().to_string(),
        )?)),
        (None, None) => unreachable!("read unless refused"),
    }
}

/// Parses a member list: an `:include:` file or a `.forward`. Members are
/// separated by commas or line ends; `#` starts a comment line. A member
/// line that is not UTF-8 is an error: the list cannot be expanded whole.
pub fn parse_include(text: &[u8], file: &str) -> Result<Vec<Target>, AliasError> {
    let mut out = Vec::new();
    for (line, text) in lines(text) {
        let err = |message: String| AliasError {
            file: file.to_string(),
            line,
            message,
        };
        let text = match text {
            Ok(t) if t.trim_start().starts_with('#') => continue,
            Ok(t) => t,
            Err(bytes) if is_comment(bytes) => continue,
            Err(_) => return Err(err("not UTF-8 text".into())),
        };
        out.extend(parse_members(text).map_err(err)?);
    }
    Ok(out)
}

/// The lines of a file with their numbers (from 1), without their line
/// ends and without a leading UTF-8 byte-order mark (which some editors
/// write). A line that is not UTF-8 text comes as its bytes.
fn lines(text: &[u8]) -> impl Iterator<Item = (usize, Result<&str, &[u8]>)> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    text.split(|&b| b == b'\n').enumerate().map(|(i, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (i + 1, std::str::from_utf8(line).map_err(|_| line))
    })
}

/// Whether a line that is not UTF-8 text is a comment.
fn is_comment(line: &[u8]) -> bool {
    line.trim_ascii_start().starts_with(b"#")
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, AliasError> {
    Ok(read_checked(path, limit, &mut |_| true)?.expect("never refused"))
}

/// Reads a file of at most `limit` bytes, if `check` accepts its metadata
/// (`None` if not). It is opened without blocking (a FIFO cannot hang us)
/// and must be a regular file.
fn read_checked(
    path: &Path,
    limit: u64,
    check: &mut dyn FnMut(&std::fs::Metadata) -> bool,
) -> Result<Option<Vec<u8>>, AliasError> {
    let err = |message: String| AliasError {
        file: path.display().to_string(),
        line: 0,
        message,
    };
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if !check(&meta) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(err(format!("larger than {limit} bytes")));
    }
    Ok(Some(bytes))
}

/// One entry of the aliases file, joined from its lines.
struct Logical {
    /// The number of its first line.
    line: usize,
    /// Its text, or the number of a line of it that is not UTF-8.
    text: Result<String, usize>,
}

/// Joins continuation lines and drops comments and blank lines.
fn logical_lines(text: &[u8]) -> Vec<Logical> {
    let mut out: Vec<Logical> = Vec::new();
    for (n, line) in lines(text) {
        let bytes = line.map_or_else(|b| b, str::as_bytes);
        let continues = bytes.starts_with(b" ") || bytes.starts_with(b"\t");
        match line {
            Ok(l) if l.trim().is_empty() || l.trim().starts_with('#') => continue,
            Err(b) if is_comment(b) => continue,
            _ => {}
        }
        match (out.last_mut(), line) {
            (Some(last), Ok(l)) if continues => {
                if let Ok(text) = &mut last.text {
                    text.push(' ');
                    text.push_str(l.trim());
                }
            }
            (Some(last), Err(_)) if continues => {
                if last.text.is_ok() {
                    last.text = Err(n);
                }
            }
            (_, line) => out.push(Logical {
                line: n,
                text: line.map(|l| l.trim_end().to_string()).map_err(|_| n),
            }),
        }
    }
    out
}

/// `name: rest` with the name unquoted.
fn split_name(line: &str) -> Result<(String, &str), &'static str> {
    if line.starts_with([' ', '\t']) {
        return Err("a continuation line with nothing to continue");
    }
    if let Some(quoted) = line.strip_prefix('"') {
        let (name, after) = unquote(quoted).ok_or("unbalanced quotes in the name")?;
        let rest = after
            .trim_start()
            .strip_prefix(':')
            .ok_or("expected ':' after the name")?;
        return Ok((name, rest));
    }
    let (name, rest) = line.split_once(':').ok_or("expected \"name: members\"")?;
    let name = name.trim();
    if name.is_empty() {
        return Err("empty alias name");
    }
    if name.contains([' ', '\t']) {
        return Err("white space in an alias name (quote it)");
    }
    Ok((name.to_string(), rest))
}

/// The text up to the closing quote with `\x` escapes resolved, and what
/// follows the quote.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

/// Splits on commas outside quotes and parses each member.
fn parse_members(text: &str) -> Result<Vec<Target>, String> {
    let mut members = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '\\' if quoted => {
                current.push(c);
                current.extend(chars.next());
            }
            ',' if !quoted => members.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if quoted {
        return Err("unbalanced quotes".into());
    }
    members.push(current);
    members
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .map(parse_member)
        .collect()
}

fn parse_member(member: &str) -> Result<Target, String> {
    // A member quoted whole ("|cmd, args" or "/path with space").
    let text = match member.strip_prefix('"') {
        Some(q) => match unquote(q) {
            Some((inner, "")) => inner,
            // A quoted local part with a domain after it: an address.
            _ => member.to_string(),
        },
        None => member.to_string(),
    };
    if let Some(command) = text.strip_prefix('|') {
        let command = command.trim();
        if command.is_empty() {
            return Err("an empty |command".into());
        }
        return Ok(Target::Pipe(command.to_string()));
    }
    let include = text
        .get(..9)
        .filter(|head| head.eq_ignore_ascii_case(":include:"));
    if include.is_some() {
        let path = PathBuf::from(text[9..].trim());
        if !path.is_absolute() {
            return Err(format!("{text}: an :include: file needs an absolute path"));
        }
        return Ok(Target::Include(path));
    }
    if text.starts_with('/') {
        return Ok(Target::File(PathBuf::from(text)));
    }
    let address = text.trim_start_matches('<').trim_end_matches('>');
    let local = address.strip_prefix('\\').unwrap_or(address);
    let valid = if local.contains('@') {
        Mailbox::parse(local).is_ok()
    } else {
        bad_local_part(local).is_none() && !local.contains([' ', '\t', '"', '<', '>', ',', ':'])
    };
    if !valid {
        return Err(format!(
            "{member:?} is not an address, /file, |command or :include:/file"
        ));
    }
    Ok(Target::Address(address.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_with_a_multibyte_character_near_its_start_parses() {
        // Found by the fuzzer: the :include: check cut a character in two.
        let text = "root: e, \u{6}bobpop\u{feff}ostmas\nab\u{e9}\u{e9}\u{e9}\u{e9}x: cd\u{e9}\u{e9}\u{e9}\u{e9}\n";
        let _ = Aliases::parse(text.as_bytes(), "t");
        assert!(parse_include("bobpop\u{feff}ostmas\n".as_bytes(), "t").is_ok());
    }

    fn addr(s: &str) -> Target {
        Target::Address(s.into())
    }

    #[test]
    fn the_classic_format() {
        let text = "# comment\n\
                    postmaster: root\n\
                    \n\
                    root:\talice, bob@example.org,\n\
                    \t  \\carol\n\
                    # a comment between continuation lines\n  , dave\n\
                    Staff: \"|/usr/bin/list post, now\", /var/spool/archive, :include:/etc/mail/staff\n\
                    \"odd name\": <eve@example.org>\n\
                    quoted: \"|exit 75\"\n\
                    bare: |exit 75\n";
        let a = Aliases::parse(text.as_bytes(), "aliases").unwrap();
        assert_eq!(a.len(), 6);
        assert_eq!(a.get("POSTMASTER").unwrap(), [addr("root")]);
        assert_eq!(
            a.get("root").unwrap(),
            [
                addr("alice"),
                addr("bob@example.org"),
                addr("\\carol"),
                addr("dave")
            ]
        );
        assert_eq!(
            a.get("staff").unwrap(),
            [
                Target::Pipe("/usr/bin/list post, now".into()),
                Target::File("/var/spool/archive".into()),
                Target::Include("/etc/mail/staff".into()),
            ]
        );
        assert_eq!(a.get("odd name").unwrap(), [addr("eve@example.org")]);
        assert_eq!(a.get("quoted").unwrap(), [Target::Pipe("exit 75".into())]);
        assert_eq!(a.get("bare").unwrap(), [Target::Pipe("exit 75".into())]);
    }

    #[test]
    fn every_line_ending_reads_the_same() {
        for end in ["\n", "\r\n"] {
            let text = format!("a: b,{end}  c{end}d: e{end}");
            let a = Aliases::parse(text.as_bytes(), "f").unwrap();
            assert_eq!(a.get("a").unwrap(), [addr("b"), addr("c")]);
            assert_eq!(a.get("d").unwrap(), [addr("e")]);
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            ("ok: a\nno colon here\n", 2, "expected"),
            ("ok: a\nempty:\n", 2, "no members"),
            ("../x: b\n", 1, "cannot be an alias name"),
            ("a/b: c\n", 1, "cannot be an alias name"),
            ("x@y: c\n", 1, "local part"),
            ("a: \"|unbalanced\n", 1, "unbalanced"),
            ("a: |\n", 1, "empty |command"),
            ("a: :include:relative\n", 1, "absolute"),
            ("a: two words\n", 1, "is not an address"),
            ("a: x@\n", 1, "is not an address"),
            ("a: ../../etc\n", 1, "is not an address"),
        ];
        for (text, line, what) in cases {
            let e = Aliases::parse(text.as_bytes(), "/etc/aliases").unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(
                e.to_string().starts_with(&format!("/etc/aliases:{line}: ")),
                "{e}"
            );
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn include_and_forward_lists() {
        let text =
            "# members\nalice, bob\n\n\\carol\n\"|/usr/bin/vacation carol\"\n/home/carol/mbox\n";
        assert_eq!(
            parse_include(text.as_bytes(), "f").unwrap(),
            [
                addr("alice"),
                addr("bob"),
                addr("\\carol"),
                Target::Pipe("/usr/bin/vacation carol".into()),
                Target::File("/home/carol/mbox".into()),
            ]
        );
        let e = parse_include(b"ok\nnot valid\n", "f").unwrap_err();
        assert_eq!((e.line, e.file.as_str()), (2, "f"));
        // A byte-order mark and comments in Latin-1 are fine; a member in
        // Latin-1 is not.
        assert_eq!(
            parse_include(b"\xEF\xBB\xBFalice\n# Fran\xE7ois\n  # caf\xE9\nbob\n", "f").unwrap(),
            [addr("alice"), addr("bob")]
        );
        let e = parse_include(b"alice\nfran\xE7ois\n", "f").unwrap_err();
        assert_eq!(e.to_string(), "f:2: not UTF-8 text");
    }

    #[test]
    fn what_other_mtas_accept_is_a_warning_at_most() {
        let text = b"\xEF\xBB\xBFfirst: a\n\
                     # Fran\xE7ois\n\
                     \t# indented caf\xE9\n\
                     fran\xE7ois: b\n\
                     list: c,\n  h\xE9l\xE8ne,\n  d\n\
                     bad: x\xFF\n\
                     after: e\n\
                     twice: f\n\
                     Twice: g\n";
        let a = Aliases::parse(text, "/etc/aliases").unwrap();
        assert_eq!(a.get("first").unwrap(), [addr("a")]);
        assert_eq!(a.get("after").unwrap(), [addr("e")]);
        assert_eq!(a.get("twice").unwrap(), [addr("f")]);
        assert_eq!(a.len(), 3);
        let warnings: Vec<String> = a.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "/etc/aliases:4: not UTF-8 text: the entry is skipped",
                "/etc/aliases:6: not UTF-8 text: the entry at line 5 is skipped",
                "/etc/aliases:8: not UTF-8 text: the entry is skipped",
                "/etc/aliases:11: Twice: defined again (names are case-insensitive); line 10 is used",
            ]
        );
        // Syntax errors stay errors, after a skipped entry too.
        let e = Aliases::parse(b"x\xE9: a\nno colon\n", "f").unwrap_err();
        assert_eq!(e.to_string(), "f:2: expected \"name: members\"");
    }

    #[test]
    fn missing_and_oversized_files_are_errors() {
        let e = load_include(Path::new("/nonexistent/mailroom/include"), None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/mailroom/include: cannot read"),
            "{e}"
        );
    }
}
