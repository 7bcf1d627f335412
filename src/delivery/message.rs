//! A message on its way to the mailboxes: its envelope, and its bytes as
//! a range of a file. The bytes are read only at offsets (pread, sendfile
//! with an offset), never through the file's own position, so that several
//! deliveries may read one file at once, and a durable file may keep other
//! things before the message (a queue file its envelope, say): the
//! session's spool is one such file, not the only one.

use super::Recipient;
use crate::smtp::command::{RcptParams, Ret};
use crate::smtp::trace::UnixTime;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// An accepted message on its way to the mailboxes.
pub struct Message<'a> {
    pub id: &'a str,
    /// The reverse path without angle brackets; empty for `<>`.
    pub reverse_path: &'a str,
    pub recipients: &'a [Recipient],
    /// The message, starting with our `Received:` field.
    pub body: Body<'a>,
    /// When it arrived.
    pub received: UnixTime,
    /// What its sender asked to hear of it (RFC 3461).
    pub dsn: Dsn<'a>,
}

/// The DSN parameters of a message: RET and ENVID, and each recipient's
/// NOTIFY and ORCPT (in the order of `recipients`; none given when empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dsn<'a> {
    pub ret: Option<Ret>,
    pub envid: Option<&'a str>,
    pub rcpts: &'a [RcptParams],
}

impl Dsn<'_> {
    /// The parameters of the `n`th recipient.
    pub fn of(&self, n: usize) -> RcptParams {
        self.rcpts.get(n).cloned().unwrap_or_default()
    }
}

/// `len` octets of a file from `start` on.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    file: &'a File,
    start: u64,
    len: u64,
}

impl<'a> Body<'a> {
    pub fn new(file: &'a File, start: u64, len: u64) -> Body<'a> {
        Body { file, start, len }
    }

    pub fn file(&self) -> &'a File {
        self.file
    }

    /// Where the message starts in its file.
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads from `offset` within the message (not the file), never past
    /// its end; 0 at the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let left = self.len.saturating_sub(offset);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.file.read_at(&mut buf[..n], self.start + offset)
    }

    /// Whether the message's lines end in CRLF: so is one stored exactly
    /// as sent (BODY=BINARYMIME), starting with our own `Received:`
    /// field; text is stored with LF. Told by its first line.
    pub fn crlf(&self) -> bool {
        let mut head = [0u8; 1024];
        let n = self.read_at(&mut head, 0).unwrap_or(0);
        head[..n]
            .iter()
            .position(|&b| b == b'\n')
            .is_some_and(|i| i > 0 && head[i - 1] == b'\r')
    }

    /// The whole message, read into memory (for small ones).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        self.read_head(self.len as usize)
    }

    /// The message's first `max` octets, or all of it if it is shorter.
    pub fn read_head(&self, max: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len.min(max as u64) as usize];
        self.file.read_exact_at(&mut buf, self.start)?;
        Ok(buf)
    }

    /// What follows the first `n` octets of the message.
    pub fn after(&self, n: u64) -> Body<'a> {
        let n = n.min(self.len);
        Body::new(self.file, self.start + n, self.len - n)
    }

    /// The message from its start, as a reader with a position of its own.
    pub fn reader(&self) -> Reader<'a> {
        Reader {
            body: *self,
            offset: 0,
        }
    }
}

/// Reads a [`Body`] front to back.
pub struct Reader<'a> {
    body: Body<'a>,
    offset: u64,
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn a_body_is_its_range_and_leaves_the_file_position_alone() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"ENVELOPE\nSubject: x\n\nhello\nTRAILER")
            .unwrap();
        f.seek(SeekFrom::Start(3)).unwrap();
        let body = Body::new(&f, 9, 18);
        let mut all = Vec::new();
        body.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all, b"Subject: x\n\nhello\n");
        let mut two = [0u8; 4];
        assert_eq!(body.read_at(&mut two, 16).unwrap(), 2);
        assert_eq!(&two[..2], b"o\n");
        assert_eq!(body.read_at(&mut two, 18).unwrap(), 0);
        assert_eq!(body.read_at(&mut two, 400).unwrap(), 0);
        assert_eq!((&f).stream_position().unwrap(), 3);
    }
}
