//! A message body on its way in: the bytes of a DATA body or of BDAT
//! chunks, as the connection hands them out, decoded by the core's
//! [`BodyDecoder`] and written to a [`Spool`]. The spool starts with the
//! session's `Received:` field; its failure is remembered and reported,
//! never lost. Decoded bytes gather in the worker's buffer, which never
//! changes hands, and go to the spool in pieces of [`SPOOL_WRITE`].

use super::conn::{Conn, Stop, Transport, READ_BUFFER};
use crate::delivery::spool::Spool;
use crate::delivery::{io_error, DeliveryError};
use crate::smtp::data::{BareNewline, BodyDecoder};
use crate::smtp::session::BodyReport;
use std::path::Path;
use std::time::Instant;

/// Decoded body bytes are written to the spool in pieces of this size.
const SPOOL_WRITE: usize = 64 * 1024;

/// How a body is framed and decoded.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// Dot-terminated (DATA), under the bare-newline policy.
    Dotted(BareNewline),
    /// Sized chunks (BDAT); `binary` for BODY=BINARYMIME, stored as sent.
    Chunked { binary: bool },
}

pub struct Body {
    spool: Result<Spool, DeliveryError>,
    decoder: BodyDecoder,
    /// When the whole transfer must be done.
    deadline: Instant,
}

impl Body {
    /// A new body in `spool_dir`, starting with `trace`; `out` (the
    /// worker's buffer) is emptied for it.
    pub fn new(
        spool_dir: &Path,
        trace: &str,
        framing: Framing,
        max_size: u64,
        deadline: Instant,
        out: &mut Vec<u8>,
    ) -> Body {
        // A message stored as sent (BINARYMIME) keeps its CRLF line ends,
        // and the fields we add take them too.
        let trace = match framing {
            Framing::Chunked { binary: true } => trace.replace('\n', "\r\n"),
            _ => trace.to_string(),
        };
        let spool = Spool::create(spool_dir)
            .map_err(|e| io_error("creating spool file", &e))
            .and_then(|mut s| {
                s.write(trace.as_bytes())
                    .map(|()| s)
                    .map_err(|e| io_error("writing spool file", &e))
            });
        out.clear();
        out.reserve(SPOOL_WRITE + READ_BUFFER);
        Body {
            spool,
            decoder: match framing {
                Framing::Dotted(bare) => BodyDecoder::data(max_size, bare),
                Framing::Chunked { binary } => BodyDecoder::chunked(max_size, binary),
            },
            deadline,
        }
    }

    /// The spool, if writing it has not failed.
    pub fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref().ok()
    }

    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> crate::smtp::data::Feed {
        let f = self.decoder.feed(input, out);
        if out.len() >= SPOOL_WRITE {
            self.write_out(out);
        }
        f
    }

    fn write_out(&mut self, out: &mut Vec<u8>) {
        if let Ok(s) = &mut self.spool {
            if let Err(e) = s.write(out) {
                self.spool = Err(io_error("writing spool file", &e));
            }
        }
        out.clear();
    }

    /// Writes what is decoded so far to the spool, so that `out` can go
    /// back to its worker between chunks.
    pub fn write_pending(&mut self, out: &mut Vec<u8>) {
        if !out.is_empty() {
            self.write_out(out);
        }
    }

    /// The state so far; `last` ends the body.
    pub fn report(&mut self, last: bool, out: &mut Vec<u8>) -> BodyReport {
        if last {
            self.decoder.finish(out);
            self.write_out(out);
        }
        BodyReport {
            size: self.decoder.size(),
            too_big: self.decoder.too_big(),
            bare_newline: self.decoder.bare_newline(),
            received_count: self.decoder.received_count(),
            delivered_to: self.decoder.delivered_to().to_vec(),
            spool_error: self.spool.as_ref().err().cloned(),
        }
    }

    /// Reads a dot-terminated body to its end, bounded by the per-block
    /// and total deadlines.
    pub fn receive_data<S: Transport>(
        &mut self,
        conn: &mut Conn<S>,
        out: &mut Vec<u8>,
    ) -> Result<(), Stop> {
        loop {
            if !conn.buffered().is_empty() {
                let f = self.feed(conn.buffered(), out);
                conn.consume(f.consumed);
                if f.done {
                    return Ok(());
                }
            }
            let block = conn.deadlines().data_block();
            conn.fill_by(self.deadline, block)?;
        }
    }

    /// Reads exactly `size` octets of a chunk into this body.
    pub fn receive_chunk<S: Transport>(
        &mut self,
        conn: &mut Conn<S>,
        size: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), Stop> {
        let deadline = self.deadline;
        take(conn, size, deadline, &mut |bytes| {
            self.feed(bytes, out);
        })
    }
}

/// Reads and drops a chunk that is refused, within a deadline of its own.
pub fn discard_chunk<S: Transport>(conn: &mut Conn<S>, size: u64) -> Result<(), Stop> {
    let deadline = conn.deadlines().transfer();
    take(conn, size, deadline, &mut |_| {})
}

/// Hands exactly `size` octets to `sink` as they arrive, by `deadline`.
fn take<S: Transport>(
    conn: &mut Conn<S>,
    size: u64,
    deadline: Instant,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), Stop> {
    // Chunks that arrive whole with their command never wait for a read,
    // so the transfer's deadline is checked here too.
    if Instant::now() >= deadline {
        return Err(Stop::Timeout);
    }
    let mut left = size;
    loop {
        let n = (conn.buffered().len() as u64).min(left) as usize;
        if n > 0 {
            sink(&conn.buffered()[..n]);
            conn.consume(n);
            left -= n as u64;
        }
        if left == 0 {
            return Ok(());
        }
        let block = conn.deadlines().data_block();
        conn.fill_by(deadline, block)?;
    }
}
