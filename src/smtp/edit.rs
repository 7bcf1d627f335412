//! A message's header section as milters see and edit it: the fields
//! without our own `Received:` (which, as Postfix and Sendmail do, no
//! milter is shown), each value with one leading space taken off and its
//! folded lines joined by LF, as Sendmail sends them; and the edits
//! milters ask for at the end of a message, applied in order. Fields no
//! milter touches keep their bytes exactly.

/// One field: its bytes as they will be written, line end included.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    raw: Vec<u8>,
    /// Our own `Received:`: kept, never shown, never changed.
    trace: bool,
}

/// The fields of a header section, and the edits made to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    entries: Vec<Entry>,
    /// Line ends are CRLF (a message stored as sent), not LF.
    crlf: bool,
    changed: bool,
}

impl Header {
    /// The header section `fields` (as [`super::header::split`] finds it),
    /// whose first field is our own `Received:` when `trace` is set.
    pub fn parse(fields: &[u8], trace: bool, crlf: bool) -> Header {
        let entries = super::header::fields(fields)
            .enumerate()
            .map(|(i, f)| Entry {
                name: String::from_utf8_lossy(f.name).into_owned(),
                raw: fields[f.range].to_vec(),
                trace: trace && i == 0,
            })
            .collect();
        Header {
            entries,
            crlf,
            changed: false,
        }
    }

    /// Whether any edit was made.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The fields a milter is shown, in order: name and value.
    pub fn shown(&self) -> impl Iterator<Item = (&str, String)> {
        self.entries.iter().filter(|e| !e.trace).map(|e| {
            let value = &e.raw[e.name.len()..];
            // Blanks before the colon (obsolete syntax), then the colon.
            let colon = value.iter().position(|&b| b == b':').map_or(0, |i| i + 1);
            let mut v = &value[colon..];
            v = v.strip_suffix(b"\n").unwrap_or(v);
            v = v.strip_suffix(b"\r").unwrap_or(v);
            v = v.strip_prefix(b" ").unwrap_or(v);
            let text = String::from_utf8_lossy(v).replace("\r\n", "\n");
            (e.name.as_str(), text)
        })
    }

    /// A field as a milter gave it, in this message's line ends.
    fn entry(&self, name: &str, value: &str) -> Entry {
        let eol = if self.crlf { "\r\n" } else { "\n" };
        let value = value.replace("\r\n", "\n").replace('\n', eol);
        Entry {
            name: name.to_string(),
            raw: format!("{name}: {value}{eol}").into_bytes(),
            trace: false,
        }
    }

    /// SMFIR_ADDHEADER: at the end.
    pub fn add(&mut self, name: &str, value: &str) {
        let e = self.entry(name, value);
        self.entries.push(e);
        self.changed = true;
    }

    /// SMFIR_INSHEADER: at `index` among all the fields, our own
    /// `Received:` counted (as Postfix counts), past the end at the end.
    pub fn insert(&mut self, index: u32, name: &str, value: &str) {
        let e = self.entry(name, value);
        let at = (index as usize).min(self.entries.len());
        self.entries.insert(at, e);
        self.changed = true;
    }

    /// SMFIR_CHGHEADER: the `index`th field called `name` (from 1, among
    /// those shown) gets `value`, or goes when `value` is empty. A field
    /// that is not there is added, unless the change would delete it.
    pub fn change(&mut self, index: u32, name: &str, value: &str) {
        let found = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.trace && e.name.eq_ignore_ascii_case(name))
            .nth((index.max(1) - 1) as usize)
            .map(|(i, _)| i);
        match (found, value.is_empty()) {
            (Some(i), true) => {
                self.entries.remove(i);
            }
            (Some(i), false) => self.entries[i] = self.entry(name, value),
            (None, true) => return,
            (None, false) => self.add(name, value),
        }
        self.changed = true;
    }

    /// The header section as it now stands. A field that ended the
    /// message without a line end (a BDAT body can) gets one when another
    /// now follows it.
    pub fn render(&self) -> Vec<u8> {
        let eol: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            out.extend_from_slice(&e.raw);
            if i + 1 < self.entries.len() && !e.raw.ends_with(b"\n") {
                out.extend_from_slice(eol);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"Received: from a by b;\n\tMon, 7 Dec 2026 10:00:00 +0000\nSubject:  two spaces\nX-Tag: one\nX-Folded: first\n second\nx-tag: two\n";

    fn shown(h: &Header) -> Vec<(String, String)> {
        h.shown().map(|(n, v)| (n.to_string(), v)).collect()
    }

    #[test]
    fn milters_are_shown_every_field_but_ours_as_sendmail_sends_them() {
        let h = Header::parse(HEAD, true, false);
        assert_eq!(
            shown(&h),
            [
                ("Subject".into(), " two spaces".into()),
                ("X-Tag".into(), "one".into()),
                ("X-Folded".into(), "first\n second".into()),
                ("x-tag".into(), "two".into()),
            ]
        );
        let crlf = String::from_utf8(HEAD.to_vec())
            .unwrap()
            .replace('\n', "\r\n");
        let h = Header::parse(crlf.as_bytes(), true, true);
        assert_eq!(shown(&h)[2].1, "first\n second");
        assert_eq!(h.render(), crlf.as_bytes(), "untouched, byte for byte");
        assert!(!h.changed());
    }

    #[test]
    fn edits_land_where_postfix_puts_them() {
        let mut h = Header::parse(HEAD, true, false);
        h.add("X-Spam-Status", "No, score=0.1\n\ttests=NONE");
        h.insert(0, "DKIM-Signature", "v=1; a=rsa-sha256");
        h.change(2, "X-TAG", "changed");
        h.change(1, "Subject", "");
        h.change(1, "X-Missing", "");
        h.change(1, "X-New", "added");
        assert!(h.changed());
        assert_eq!(
            String::from_utf8(h.render()).unwrap(),
            "DKIM-Signature: v=1; a=rsa-sha256\n\
             Received: from a by b;\n\tMon, 7 Dec 2026 10:00:00 +0000\n\
             X-Tag: one\n\
             X-Folded: first\n second\n\
             X-TAG: changed\n\
             X-Spam-Status: No, score=0.1\n\ttests=NONE\n\
             X-New: added\n"
        );
    }

    #[test]
    fn our_received_field_is_never_changed_and_indexes_past_the_end_append() {
        let mut h = Header::parse(HEAD, true, true);
        h.change(1, "Received", "forged");
        h.insert(99, "X-Last", "v\r\n w");
        let text = String::from_utf8(h.render()).unwrap();
        assert!(text.starts_with("Received: from a by b;"));
        assert!(text.ends_with("X-Last: v\r\n w\r\n"), "{text:?}");
        // No trace field: the first field is the client's and may change.
        let mut h = Header::parse(b"Received: x\n", false, false);
        h.change(1, "Received", "");
        assert_eq!(h.render(), b"");
    }

    #[test]
    fn a_last_field_without_a_line_end_gets_one_when_another_follows() {
        let mut h = Header::parse(b"Subject: no line end", false, true);
        assert_eq!(h.render(), b"Subject: no line end");
        h.add("X-Added", "yes");
        assert_eq!(h.render(), b"Subject: no line end\r\nX-Added: yes\r\n");
    }
}
