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
//! This module only parses: what the members mean is the resolver's
//! business. Errors carry the file and line.

use crate::config::bad_local_part;
use crate::smtp::address::Mailbox;
use std::collections::HashMap;
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
    map: HashMap<String, Vec<Target>>,
}

impl Aliases {
    /// Reads and parses an aliases file.
    pub fn load(path: &Path) -> Result<Aliases, AliasError> {
        let text = read_bounded(path, MAX_ALIASES)?;
        Aliases::parse(&text, &path.display().to_string())
    }

    /// Parses aliases text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Aliases, AliasError> {
        let mut map = HashMap::new();
        for (line, logical) in logical_lines(text) {
            let err = |message: String| AliasError {
                file: file.to_string(),
                line,
                message,
            };
            let (name, rest) = split_name(&logical).map_err(|m| err(m.to_string()))?;
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
            if map.insert(name.to_lowercase(), targets).is_some() {
                return Err(err(format!(
                    "{name}: defined twice (names are case-insensitive)"
                )));
            }
        }
        Ok(Aliases { map })
    }

    /// The members of an alias; names are case-insensitive.
    pub fn get(&self, name: &str) -> Option<&[Target]> {
        self.map.get(&name.to_lowercase()).map(Vec::as_slice)
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
/// separated by commas or line ends; `#` starts a comment line.
pub fn parse_include(text: &str, file: &str) -> Result<Vec<Target>, AliasError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let members = parse_members(line).map_err(|message| AliasError {
            file: file.to_string(),
            line: i + 1,
            message,
        })?;
        out.extend(members);
    }
    Ok(out)
}

fn read_bounded(path: &Path, limit: u64) -> Result<String, AliasError> {
    Ok(read_checked(path, limit, &mut |_| true)?.expect("never refused"))
}

/// Reads a text file of at most `limit` bytes, if `check` accepts its
/// metadata (`None` if not). It is opened without blocking (a FIFO cannot
/// hang us) and must be a regular file.
fn read_checked(
    path: &Path,
    limit: u64,
    check: &mut dyn FnMut(&std::fs::Metadata) -> bool,
) -> Result<Option<String>, AliasError> {
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
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| err("not UTF-8 text".into()))
}

/// Joins continuation lines and drops comments and blank lines; each
/// logical line comes with the number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match out.last_mut() {
            Some((_, logical)) if line.starts_with([' ', '\t']) => {
                logical.push(' ');
                logical.push_str(trimmed);
            }
            _ => out.push((i + 1, line.trim_end().to_string())),
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
    if text.len() >= 9 && text[..9].eq_ignore_ascii_case(":include:") {
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
        let a = Aliases::parse(text, "aliases").unwrap();
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
            let a = Aliases::parse(&text, "f").unwrap();
            assert_eq!(a.get("a").unwrap(), [addr("b"), addr("c")]);
            assert_eq!(a.get("d").unwrap(), [addr("e")]);
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            ("ok: a\nno colon here\n", 2, "expected"),
            ("ok: a\nempty:\n", 2, "no members"),
            ("a: b\nA: c\n", 2, "defined twice"),
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
            let e = Aliases::parse(text, "/etc/aliases").unwrap_err();
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
            parse_include(text, "f").unwrap(),
            [
                addr("alice"),
                addr("bob"),
                addr("\\carol"),
                Target::Pipe("/usr/bin/vacation carol".into()),
                Target::File("/home/carol/mbox".into()),
            ]
        );
        let e = parse_include("ok\nnot valid\n", "f").unwrap_err();
        assert_eq!((e.line, e.file.as_str()), (2, "f"));
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
