//! What the sendmail command makes of its input: the message read up to
//! the end of input (or a lone dot, without `-i`), line ends made LF as the
//! queue stores them; recipients taken from its header with `-t`; `Bcc:`
//! removed; and the `From:`, `Date:` and `Message-ID:` fields RFC 5322
//! requires added when missing. Lines may be of any length and the body
//! 8-bit: only the message size bounds the input.

use crate::smtp::encoding::base64_encode;
use crate::smtp::header;
use crate::smtp::trace::{rfc5322_date, UnixTime};
use std::fmt::Write as _;
use std::io::{self, BufRead, Read};

#[derive(Debug)]
pub enum InputError {
    TooBig(u64),
    Io(io::Error),
}

/// Reads the message from `input`: up to its end, or without
/// `ignore_dots` up to a line holding a lone dot; CRLF becomes LF.
pub fn read_message(
    mut input: impl BufRead,
    ignore_dots: bool,
    max: u64,
) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        // One octet past the limit is enough to know it is past.
        let room = max.saturating_sub(out.len() as u64) + 3;
        let n = (&mut input)
            .take(room)
            .read_until(b'\n', &mut line)
            .map_err(InputError::Io)?;
        if n == 0 {
            break;
        }
        if line.ends_with(b"\r\n") {
            line.truncate(line.len() - 2);
            line.push(b'\n');
        }
        if !ignore_dots && (line == b".\n" || line == b".") {
            break;
        }
        out.extend_from_slice(&line);
        if out.len() as u64 > max {
            return Err(InputError::TooBig(max));
        }
    }
    Ok(out)
}

/// Who the message is from, and what to stamp it with.
pub struct Origin<'a> {
    /// `login@domain`.
    pub address: &'a str,
    /// From `-F`, else the account's GECOS name; may be empty.
    pub full_name: &'a str,
    pub hostname: &'a str,
    pub date: UnixTime,
    /// Makes the Message-ID unique.
    pub unique: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    pub message: Vec<u8>,
    /// With `-t`: the addresses of To:, Cc: and Bcc:, in order.
    pub header_recipients: Vec<String>,
}

/// The message as it is queued.
pub fn prepare(input: &[u8], extract: bool, origin: &Origin<'_>) -> Result<Prepared, String> {
    // An mbox "From " line first is not part of the message (Sendmail and
    // Postfix drop it too).
    let input = match input.strip_prefix(b"From ") {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&b""[..], |i| &rest[i + 1..]),
        None => input,
    };
    let split = header::split(input);
    let head = &input[..split.header];
    let body = &input[split.body..];
    let mut header_recipients = Vec::new();
    let (mut has_from, mut has_date, mut has_id, mut has_bcc) = (false, false, false, false);
    for f in header::fields(head) {
        has_from |= f.is("From");
        has_date |= f.is("Date");
        has_id |= f.is("Message-ID");
        has_bcc |= f.is("Bcc");
        if extract && (f.is("To") || f.is("Cc") || f.is("Bcc")) {
            let list = header::address_list(f.value)
                .map_err(|e| format!("the {} field: {e}", String::from_utf8_lossy(f.name)))?;
            header_recipients.extend(list);
        }
    }
    let mut message = if has_bcc {
        header::remove(head, &["Bcc"])
    } else {
        head.to_vec()
    };
    if !message.is_empty() && !message.ends_with(b"\n") {
        message.push(b'\n');
    }
    let mut added = String::new();
    if !has_from {
        let _ = writeln!(
            added,
            "From: {}",
            from_field(origin.full_name, origin.address)
        );
    }
    if !has_date {
        let _ = writeln!(added, "Date: {}", rfc5322_date(origin.date));
    }
    if !has_id {
        let _ = writeln!(
            added,
            "Message-ID: <{}.{:016x}@{}>",
            origin.date.secs, origin.unique, origin.hostname
        );
    }
    message.extend_from_slice(added.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body);
    Ok(Prepared {
        message,
        header_recipients,
    })
}

/// `Full Name <address>`, the name quoted or encoded (RFC 2047) as it
/// needs to be.
fn from_field(name: &str, address: &str) -> String {
    let name = name.trim();
    if name.is_empty() {
        return address.to_string();
    }
    let atoms = name.split(' ').all(|w| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
    });
    let shown = if atoms {
        name.to_string()
    } else if name.is_ascii() && !name.chars().any(|c| c.is_ascii_control()) {
        let mut q = String::from('"');
        for c in name.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    } else {
        let clean: String = name.chars().filter(|c| !c.is_control()).collect();
        format!("=?UTF-8?B?{}?=", base64_encode(clean.as_bytes()))
    };
    format!("{shown} <{address}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin<'static> {
        Origin {
            address: "alice@box.example",
            full_name: "Alice Liddell",
            hostname: "box.example",
            date: UnixTime::from_secs(1_795_358_400),
            unique: 0xabc,
        }
    }

    const ADDED: &str = "From: Alice Liddell <alice@box.example>\n\
                         Date: Sun, 22 Nov 2026 14:40:00 +0000\n\
                         Message-ID: <1795358400.0000000000000abc@box.example>\n";

    #[test]
    fn input_ends_at_a_lone_dot_unless_told_otherwise() {
        let input = b"Subject: x\r\n\r\nline\r\n.\r\nafter\n";
        assert_eq!(
            read_message(&input[..], false, 1000).unwrap(),
            b"Subject: x\n\nline\n"
        );
        assert_eq!(
            read_message(&input[..], true, 1000).unwrap(),
            b"Subject: x\n\nline\n.\nafter\n"
        );
        // A dot inside a line, or doubled, is text.
        assert_eq!(
            read_message(&b"a\n..\n.b\n"[..], false, 1000).unwrap(),
            b"a\n..\n.b\n"
        );
        // A long line, 8-bit, and no final line end.
        let mut long = vec![b'x'; 200_000];
        long.extend_from_slice("é\u{0}\rend".as_bytes());
        assert_eq!(read_message(&long[..], false, 300_000).unwrap(), long);
        assert!(matches!(
            read_message(&long[..], false, 100_000),
            Err(InputError::TooBig(100_000))
        ));
    }

    #[test]
    fn missing_fields_are_added_and_present_ones_kept() {
        let p = prepare(b"Subject: hi\n\nbody\n", false, &origin()).unwrap();
        assert_eq!(
            String::from_utf8(p.message).unwrap(),
            format!("Subject: hi\n{ADDED}\nbody\n")
        );
        let full = b"From: x@y.example\nDate: whenever\nMessage-ID: <1@y>\n\nbody\n";
        assert_eq!(prepare(full, false, &origin()).unwrap().message, full);
        // No header at all: the input is all body.
        let p = prepare(b"just text\n", false, &origin()).unwrap();
        assert_eq!(
            String::from_utf8(p.message).unwrap(),
            format!("{ADDED}\njust text\n")
        );
        let p = prepare(b"", false, &origin()).unwrap();
        assert_eq!(String::from_utf8(p.message).unwrap(), format!("{ADDED}\n"));
    }

    #[test]
    fn recipients_come_from_the_header_with_t_and_bcc_goes() {
        let input = b"To: Bob <bob@x.example>, carol\nCc: \"D, E\" <de@y.example>\nBcc: secret@z.example,\n hidden@z.example\nSubject: s\n\nTo: not@header.example\n";
        let p = prepare(input, true, &origin()).unwrap();
        assert_eq!(
            p.header_recipients,
            [
                "bob@x.example",
                "carol",
                "de@y.example",
                "secret@z.example",
                "hidden@z.example"
            ]
        );
        let text = String::from_utf8(p.message).unwrap();
        assert!(
            !text.contains("secret") && !text.contains("hidden"),
            "{text}"
        );
        assert!(text.starts_with(
            "To: Bob <bob@x.example>, carol\nCc: \"D, E\" <de@y.example>\nSubject: s\nFrom: "
        ));
        assert!(text.ends_with("\n\nTo: not@header.example\n"));
        // Without -t the header names no recipient, but Bcc still goes.
        let p = prepare(input, false, &origin()).unwrap();
        assert!(p.header_recipients.is_empty());
        assert!(!String::from_utf8(p.message).unwrap().contains("secret"));
        assert!(prepare(b"To: <unclosed\n\n", true, &origin())
            .unwrap_err()
            .contains("To"));
    }

    #[test]
    fn a_leading_mbox_from_line_is_dropped() {
        let p = prepare(
            b"From someone Mon Dec  7 09:00:00 2026\nSubject: x\nFrom: a@b.example\n\nbody\n",
            false,
            &origin(),
        )
        .unwrap();
        let text = String::from_utf8(p.message).unwrap();
        assert!(
            text.starts_with("Subject: x\nFrom: a@b.example\nDate: "),
            "{text}"
        );
        assert!(text.ends_with("\n\nbody\n"));
    }

    #[test]
    fn names_in_from_are_quoted_or_encoded() {
        assert_eq!(from_field("", "a@b"), "a@b");
        assert_eq!(from_field("Cron Daemon", "a@b"), "Cron Daemon <a@b>");
        assert_eq!(
            from_field("Liddell, Alice", "a@b"),
            "\"Liddell, Alice\" <a@b>"
        );
        assert_eq!(from_field("say \"hi\"", "a@b"), "\"say \\\"hi\\\"\" <a@b>");
        assert_eq!(
            from_field("Jürgen", "a@b"),
            "=?UTF-8?B?SsO8cmdlbg==?= <a@b>"
        );
    }
}
