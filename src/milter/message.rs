//! The end of a message at the milters: each in turn is sent the header
//! fields, the body in chunks (CRLF line ends, as on the wire) and the
//! end of the message, and what it asks for there is gathered: header
//! edits (applied at once, so the next milter sees them), recipients
//! added or removed, a new sender, a new body, quarantine. A message a
//! milter changed is written again to a new spool; an unchanged one is
//! never copied.

use super::{Chain, Filter, Heard, Stage, Verdict};
use crate::delivery::spool::Spool;
use crate::delivery::Body;
use crate::smtp::edit::Header;
use crate::smtp::header;
use crate::smtp::milter::{actions, Command, Reply as Said, CHUNK};
use std::io::{self, Read};
use std::path::Path;

/// The header section is read this far; fields past it reach the
/// milters as body, as Postfix's `header_size_limit` would have it.
const HEADER_LIMIT: usize = 256 * 1024;

/// What the milters made of a message.
pub struct Eom {
    pub verdict: Verdict,
    /// Recipients to add (as milters write them: `<addr>` or `addr`).
    pub add_rcpts: Vec<String>,
    pub del_rcpts: Vec<String>,
    /// A new reverse path.
    pub from: Option<String>,
    /// Why a milter quarantined the message.
    pub quarantine: Option<String>,
    /// The message as the milters left it, when they changed it.
    pub rewritten: Option<Spool>,
}

/// The body the next milter is shown: the one received, or one a milter
/// gave.
enum Content<'a> {
    Original(Body<'a>),
    Replaced(Spool),
}

impl Content<'_> {
    fn body(&self) -> Body<'_> {
        match self {
            Content::Original(b) => *b,
            Content::Replaced(s) => s.body(),
        }
    }
}

/// What one milter's turn at the message works on: the message as the
/// milters before it left it, and what they asked for.
struct Turn<'a, 'b> {
    id: &'a str,
    fields: &'a mut Header,
    content: &'a mut Content<'b>,
    /// The message is stored with CRLF line ends.
    crlf: bool,
    spool_dir: &'a Path,
    max_size: u64,
    eom: &'a mut Eom,
}

impl Chain {
    /// Runs the message in `body` (our `Received:` first, when `trace`)
    /// past every milter that still wants it. A new body is bounded by
    /// `max_size`.
    pub fn message(&mut self, body: Body<'_>, trace: bool, spool_dir: &Path, max_size: u64) -> Eom {
        let mut eom = Eom {
            verdict: Verdict::Go,
            add_rcpts: Vec::new(),
            del_rcpts: Vec::new(),
            from: None,
            quarantine: None,
            rewritten: None,
        };
        if self.discard {
            eom.verdict = Verdict::Discard;
            self.end_message();
            return eom;
        }
        let head = match body.read_head(HEADER_LIMIT) {
            Ok(h) => h,
            Err(e) => {
                log::error!("{}: cannot read the spool for the milters: {e}", self.id);
                eom.verdict = Verdict::Refuse(crate::smtp::reply::local_error());
                return eom;
            }
        };
        let crlf = body.crlf();
        let split = header::split(&head);
        let mut fields = Header::parse(&head[..split.header], trace, crlf);
        let separator = head[split.header..split.body].to_vec();
        let mut content = Content::Original(body.after(split.body as u64));
        let id = self.id.clone();
        for f in &mut self.filters {
            let heard = match f.unasked() {
                None => f.message(Turn {
                    id: &id,
                    fields: &mut fields,
                    content: &mut content,
                    crlf,
                    spool_dir,
                    max_size,
                    eom: &mut eom,
                }),
                Some(heard) => heard,
            };
            match heard {
                Heard::Refuse(r) => {
                    eom.verdict = Verdict::Refuse(r);
                    break;
                }
                Heard::Discard => {
                    eom.verdict = Verdict::Discard;
                    break;
                }
                Heard::Go | Heard::Quiet | Heard::Skip => {}
            }
        }
        if let Verdict::Refuse(_) = eom.verdict {
            // The milters after the one that refused never saw its end.
            self.abort();
        } else {
            self.end_message();
        }
        let replaced = matches!(content, Content::Replaced(_));
        if eom.verdict == Verdict::Go && (fields.changed() || replaced) {
            match rewrite(spool_dir, &fields, &separator, content.body()) {
                Ok(s) => eom.rewritten = Some(s),
                Err(e) => {
                    log::error!("{id}: cannot write the message as the milters changed it: {e}");
                    eom.verdict = Verdict::Refuse(crate::smtp::reply::local_error());
                }
            }
        }
        eom
    }
}

/// The changed message in a new spool: its header, the separator, the
/// body.
fn rewrite(dir: &Path, fields: &Header, separator: &[u8], body: Body<'_>) -> io::Result<Spool> {
    let mut spool = Spool::create(dir)?;
    spool.write(&fields.render())?;
    spool.write(separator)?;
    spool.append(body)?;
    Ok(spool)
}

impl Filter {
    /// One milter's turn at the message: DATA, the fields, the end of
    /// the header, the body, the end of the message and its edits.
    fn message(&mut self, t: Turn<'_, '_>) -> Heard {
        macro_rules! ask {
            ($stage:expr, $macros:expr, $cmd:expr) => {
                match self.event($stage, $macros, $cmd) {
                    Heard::Go | Heard::Quiet | Heard::Skip => {}
                    other => return other,
                }
                if !self.asked() {
                    // It accepted the message: nothing more for it.
                    return Heard::Go;
                }
            };
        }
        ask!(Stage::Data, &[], Command::Data);
        let shown: Vec<(String, String)> =
            t.fields.shown().map(|(n, v)| (n.to_string(), v)).collect();
        for (name, value) in &shown {
            ask!(Stage::Header, &[], Command::Header { name, value });
        }
        ask!(Stage::EndOfHeaders, &[], Command::EndOfHeaders);
        if self.steps & Stage::Body.skip().0 == 0 {
            match self.send_body(t.content.body(), t.crlf) {
                Ok(Heard::Go | Heard::Quiet | Heard::Skip) => {}
                Ok(other) => return other,
                Err(e) => return self.broken(&e),
            }
            if !self.asked() {
                return Heard::Go;
            }
        }
        self.end_of_message(t)
    }

    /// The body in chunks of at most [`CHUNK`] octets, LF made CRLF
    /// unless it is stored so; a milter may say to skip the rest.
    fn send_body(&mut self, body: Body<'_>, crlf: bool) -> Result<Heard, String> {
        let mut reader = body.reader();
        let mut raw = vec![0u8; CHUNK / 2];
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            let n = reader
                .read(&mut raw)
                .map_err(|e| format!("cannot read the spool: {e}"))?;
            if n == 0 {
                return Ok(Heard::Go);
            }
            chunk.clear();
            if crlf {
                chunk.extend_from_slice(&raw[..n]);
            } else {
                for &b in &raw[..n] {
                    if b == b'\n' {
                        chunk.push(b'\r');
                    }
                    chunk.push(b);
                }
            }
            for piece in chunk.chunks(CHUNK) {
                match self.event(Stage::Body, &[], Command::Body(piece)) {
                    Heard::Go | Heard::Quiet => {}
                    other => return Ok(other),
                }
                if !self.asked() {
                    return Ok(Heard::Go);
                }
            }
        }
    }

    /// Sends the end of the message and takes the edits that come back
    /// before the milter's last word.
    fn end_of_message(&mut self, t: Turn<'_, '_>) -> Heard {
        let Turn {
            id,
            fields,
            content,
            crlf,
            spool_dir,
            max_size,
            eom,
        } = t;
        let timeout = self.conf.message_timeout;
        let conn = self
            .conn
            .as_mut()
            .expect("an open milter has its connection");
        Command::Macros {
            stage: Command::EndOfMessage.code(),
            pairs: &[("i", id)],
        }
        .encode(&mut conn.out);
        Command::EndOfMessage.encode(&mut conn.out);
        if let Err(e) = conn.send(timeout) {
            return self.broken(&format!("cannot send: {e}"));
        }
        let mut new_body: Option<(Spool, u64, bool)> = None;
        loop {
            let conn = self
                .conn
                .as_mut()
                .expect("an open milter has its connection");
            let said = match conn.reply(timeout) {
                Ok(s) => s,
                Err(why) => return self.broken(&why),
            };
            let allowed = |bit: u32| self.actions & bit != 0;
            let refused_edit = |what: &str| {
                log::warn!(
                    "milter {}: asks to {what}, which it did not negotiate; ignored",
                    self.name
                );
            };
            match said {
                Said::AddHeader { name, value } if allowed(actions::ADD_HEADERS) => {
                    fields.add(&name, &value)
                }
                Said::InsertHeader { index, name, value } if allowed(actions::ADD_HEADERS) => {
                    fields.insert(index, &name, &value)
                }
                Said::ChangeHeader { index, name, value } if allowed(actions::CHANGE_HEADERS) => {
                    fields.change(index, &name, &value)
                }
                Said::AddRcpt(r) | Said::AddRcptWithArgs { rcpt: r, .. }
                    if allowed(actions::ADD_RCPT | actions::ADD_RCPT_PAR) =>
                {
                    eom.add_rcpts.push(r)
                }
                Said::DeleteRcpt(r) if allowed(actions::DELETE_RCPT) => eom.del_rcpts.push(r),
                Said::ChangeFrom { from, .. } if allowed(actions::CHANGE_FROM) => {
                    eom.from = Some(from)
                }
                Said::Quarantine(reason) if allowed(actions::QUARANTINE) => {
                    eom.quarantine = Some(reason)
                }
                Said::ReplaceBody(piece) if allowed(actions::CHANGE_BODY) => {
                    if new_body.is_none() {
                        match Spool::create(spool_dir) {
                            Ok(s) => new_body = Some((s, 0, false)),
                            Err(e) => {
                                log::error!("{id}: cannot spool a milter's new body: {e}");
                                return Heard::Refuse(crate::smtp::reply::local_error());
                            }
                        }
                    }
                    let (spool, size, cr) = new_body.as_mut().expect("made above");
                    *size += piece.len() as u64;
                    if *size > max_size {
                        return self.broken("sent a new body larger than the message size limit");
                    }
                    if let Err(e) = spool.write(&stored_form(&piece, crlf, cr)) {
                        log::error!("{id}: cannot spool a milter's new body: {e}");
                        return Heard::Refuse(crate::smtp::reply::local_error());
                    }
                }
                Said::AddHeader { .. } | Said::InsertHeader { .. } => {
                    refused_edit("add a header field")
                }
                Said::ChangeHeader { .. } => refused_edit("change a header field"),
                Said::AddRcpt(_) | Said::AddRcptWithArgs { .. } => refused_edit("add a recipient"),
                Said::DeleteRcpt(_) => refused_edit("remove a recipient"),
                Said::ChangeFrom { .. } => refused_edit("change the sender"),
                Said::Quarantine(_) => refused_edit("quarantine"),
                Said::ReplaceBody(_) => refused_edit("replace the body"),
                last => {
                    let heard = match last {
                        Said::Continue | Said::Accept | Said::Skip => Heard::Go,
                        other => self.heard(Stage::Body, other),
                    };
                    if let (Heard::Go, Some((mut spool, _, cr))) = (&heard, new_body) {
                        // A CR held back at the end of the last piece.
                        if cr {
                            if let Err(e) = spool.write(b"\r") {
                                log::error!("{id}: cannot spool a milter's new body: {e}");
                                return Heard::Refuse(crate::smtp::reply::local_error());
                            }
                        }
                        *content = Content::Replaced(spool);
                    }
                    return heard;
                }
            }
        }
    }
}

/// A piece of a milter's new body (CRLF line ends) in the form the
/// message is stored in: as is when stored with CRLF, else with LF. `cr`
/// carries a CR that ended the last piece, whose LF may start this one.
fn stored_form(piece: &[u8], crlf: bool, cr: &mut bool) -> Vec<u8> {
    if crlf {
        return piece.to_vec();
    }
    let mut out = Vec::with_capacity(piece.len() + 1);
    for &b in piece {
        if std::mem::take(cr) && b != b'\n' {
            out.push(b'\r');
        }
        if b == b'\r' {
            *cr = true;
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::stored_form;

    #[test]
    fn a_new_body_is_stored_with_lf_across_piece_boundaries() {
        let mut cr = false;
        let mut out = stored_form(b"one\r\ntwo\r", false, &mut cr);
        assert!(cr);
        out.extend(stored_form(b"\nlone\rcr\r\n", false, &mut cr));
        assert_eq!(out, b"one\ntwo\nlone\rcr\n");
        assert!(!cr);
        assert_eq!(stored_form(b"a\r\n", true, &mut cr), b"a\r\n");
    }
}
