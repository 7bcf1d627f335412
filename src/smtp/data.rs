//! The message body decoder: turns the bytes of a DATA body or of BDAT
//! chunks into the stored form, incrementally, with no line buffer.
//!
//! For DATA it removes dot-stuffing, converts CRLF to LF and finds the end
//! of the body. The only end is `<CRLF>.<CRLF>`: `<LF>.<LF>` and the like
//! never end the message early (the SMTP smuggling class, CVE-2023-51764).
//! A bare LF or CR is content, never a line end of the SMTP stream; the
//! [`BareNewline`] policy says whether such a message is stored as it came
//! or refused.
//! Lines have no length limit: only the message size bounds a body.
//!
//! For BDAT (RFC 3030) the chunk sizes frame the message, so nothing is
//! unstuffed and no sequence is special; CRLF still becomes LF.
//!
//! While the header section passes by, `Received:` fields are counted (mail
//! loop detection) and `Delivered-To:` values kept, with bounded memory.

/// Longest header line kept for inspection (RFC 5322's 998 plus slack).
const MAX_HEADER_LINE: usize = 1000;
/// How many `Delivered-To:` values are kept.
const MAX_DELIVERED_TO: usize = 100;

/// What a bare LF (or CR) inside a DATA body means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// Both are content, stored as they came (a bare LF is then a line end
    /// of the stored message). Neither can end the body, and a dot after
    /// one is not stuffing.
    #[default]
    Normalize,
    /// Either one marks the message for refusal (550 5.5.2).
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (DATA only: a dot here is special).
    LineStart,
    /// A dot at the start of a line.
    Dot,
    /// `.` CR at the start of a line: LF next ends the body.
    DotCr,
    /// Inside a line.
    Mid,
    /// A CR inside a line.
    Cr,
    /// The end of a DATA body was seen.
    Done,
}

/// What one [`BodyDecoder::feed`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// Input bytes used; after the end of a DATA body the rest is not touched.
    pub consumed: usize,
    /// The end of a DATA body was reached.
    pub done: bool,
}

#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    dotted: bool,
    /// CRLF becomes LF (all but BINARYMIME bodies).
    text: bool,
    bare: BareNewline,
    max_size: u64,
    size: u64,
    too_big: bool,
    bare_newline: bool,
    headers: HeaderScan,
}

impl BodyDecoder {
    /// A decoder for a dot-terminated DATA body.
    pub fn data(max_size: u64, bare: BareNewline) -> BodyDecoder {
        BodyDecoder::new(true, true, bare, max_size)
    }

    /// A decoder for the chunks of one BDAT transaction. A `binary`
    /// (BODY=BINARYMIME) body is stored exactly as sent, CRLF included.
    pub fn chunked(max_size: u64, binary: bool) -> BodyDecoder {
        BodyDecoder::new(false, !binary, BareNewline::Normalize, max_size)
    }

    fn new(dotted: bool, text: bool, bare: BareNewline, max_size: u64) -> BodyDecoder {
        BodyDecoder {
            state: if dotted { State::LineStart } else { State::Mid },
            dotted,
            text,
            bare,
            max_size,
            size: 0,
            too_big: false,
            bare_newline: false,
            headers: HeaderScan::default(),
        }
    }

    /// Decodes `input`, appending stored bytes to `out`. Once the message is
    /// over its size limit nothing more is appended, but the input is still
    /// read to its end so that the session stays in step.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Feed {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::LineStart => {
                    if b == b'.' {
                        i += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Mid;
                    }
                }
                State::Dot => {
                    // The leading dot is dropped whatever follows (RFC 5321 4.5.2).
                    if b == b'\r' {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        i += 1;
                        self.state = State::Done;
                        return Feed {
                            consumed: i,
                            done: true,
                        };
                    }
                    self.flag_bare();
                    self.emit(b"\r", out);
                    self.state = State::Mid;
                }
                State::Mid => {
                    let run = input[i..]
                        .iter()
                        .position(|&c| (c == b'\r' && self.text) || (c == b'\n' && self.dotted))
                        .unwrap_or(input.len() - i);
                    self.emit(&input[i..i + run], out);
                    i += run;
                    if i < input.len() {
                        if input[i] == b'\r' {
                            self.state = State::Cr;
                        } else {
                            // A bare LF in DATA is a line end of the stored
                            // message, but not of the SMTP stream: what
                            // follows is not dot-stuffed (senders of bare LFs
                            // stuff only after CRLF) and cannot end the body.
                            self.flag_bare();
                            self.emit(b"\n", out);
                        }
                        i += 1;
                    }
                }
                State::Cr => {
                    if b == b'\n' {
                        i += 1;
                        self.size += 1;
                        self.emit(b"\n", out);
                        self.state = if self.dotted {
                            State::LineStart
                        } else {
                            State::Mid
                        };
                    } else {
                        if self.dotted {
                            self.flag_bare();
                        }
                        self.emit(b"\r", out);
                        self.state = State::Mid;
                    }
                }
            }
        }
        Feed {
            consumed: i,
            done: self.state == State::Done,
        }
    }

    /// Ends a chunked body: a CR held back at the end of the last chunk is
    /// content after all.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.state == State::Cr {
            self.emit(b"\r", out);
            self.state = State::Mid;
        }
    }

    fn flag_bare(&mut self) {
        if self.bare == BareNewline::Reject {
            self.bare_newline = true;
        }
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.size += bytes.len() as u64;
        if self.size > self.max_size {
            self.too_big = true;
        }
        if !self.too_big {
            self.headers.feed(bytes);
            out.extend_from_slice(bytes);
        }
    }

    /// Message size in octets as sent with CRLF line ends, without
    /// dot-stuffing (the RFC 1870 measure).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// A bare CR or LF was seen in a DATA body under [`BareNewline::Reject`].
    pub fn bare_newline(&self) -> bool {
        self.bare_newline
    }

    pub fn received_count(&self) -> usize {
        self.headers.received
    }

    pub fn delivered_to(&self) -> &[String] {
        &self.headers.delivered_to
    }
}

/// Watches the header section of the stored (LF) form.
#[derive(Debug)]
struct HeaderScan {
    done: bool,
    line: Vec<u8>,
    received: usize,
    delivered_to: Vec<String>,
}

impl Default for HeaderScan {
    fn default() -> Self {
        HeaderScan {
            done: false,
            line: Vec::with_capacity(128),
            received: 0,
            delivered_to: Vec::new(),
        }
    }
}

impl HeaderScan {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !self.done && !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(n) => {
                    self.push(&bytes[..n]);
                    bytes = &bytes[n + 1..];
                    self.end_line();
                }
                None => {
                    self.push(bytes);
                    bytes = &[];
                }
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_HEADER_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        // Binary bodies keep their CRLF line ends.
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        match line.first() {
            None => self.done = true,
            Some(b' ' | b'\t') => {}
            Some(_) => match line.iter().position(|&b| b == b':') {
                None => self.done = true,
                Some(colon) => {
                    let name = line[..colon].trim_ascii();
                    if name.eq_ignore_ascii_case(b"received") {
                        self.received += 1;
                    } else if name.eq_ignore_ascii_case(b"delivered-to")
                        && self.delivered_to.len() < MAX_DELIVERED_TO
                    {
                        let value = String::from_utf8_lossy(line[colon + 1..].trim_ascii());
                        self.delivered_to.push(value.into_owned());
                    }
                }
            },
        }
        self.line = line;
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Just;

    /// Decodes `input` fed in pieces of `step` bytes; returns the stored
    /// bytes, the number of input bytes consumed and whether the end was seen.
    fn decode_in_steps(dec: &mut BodyDecoder, input: &[u8], step: usize) -> (Vec<u8>, usize, bool) {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let f = dec.feed(&input[pos..end], &mut out);
            if f.done {
                return (out, pos + f.consumed, true);
            }
            assert_eq!(
                f.consumed,
                end - pos,
                "a piece without the end is used whole"
            );
            pos = end;
        }
        (out, pos, false)
    }

    /// Decodes a DATA body under `policy` in pieces of several sizes, which
    /// must all agree; returns output, bytes consumed, end seen, flagged.
    fn data_with(input: &[u8], policy: BareNewline) -> (Vec<u8>, usize, bool, bool) {
        let mut reference = None;
        for step in [1, 2, 3, 7, 64, input.len().max(1)] {
            let mut dec = BodyDecoder::data(u64::MAX, policy);
            let (out, used, done) = decode_in_steps(&mut dec, input, step);
            let got = (out, used, done, dec.bare_newline());
            match &reference {
                None => reference = Some(got),
                Some(r) => assert_eq!(r, &got, "step {step} disagrees"),
            }
        }
        reference.unwrap()
    }

    fn data(input: &[u8]) -> (Vec<u8>, usize, bool, bool) {
        data_with(input, BareNewline::Reject)
    }

    #[test]
    fn data_table() {
        /// Wire input, stored output, bytes consumed, end seen, bare CR/LF seen.
        type Case = (&'static [u8], &'static [u8], usize, bool, bool);
        let cases: &[Case] = &[
            (b".\r\n", b"", 3, true, false),
            (b"a\r\n.\r\n", b"a\n", 6, true, false),
            (b"a\r\n.\r\nMAIL FROM:<x>\r\n", b"a\n", 6, true, false),
            (b"..x\r\n.\r\n", b".x\n", 8, true, false),
            (b"..\r\n.\r\n", b".\n", 7, true, false),
            (b"a\r\n...\r\n.\r\n", b"a\n..\n", 11, true, false),
            (b"a.\r\n.b\r\n.\r\n", b"a.\nb\n", 11, true, false),
            (b"\x00\xff\xfe\r\n.\r\n", b"\x00\xff\xfe\n", 8, true, false),
            (b"no end\r\n", b"no end\n", 8, false, false),
            // After a bare LF a dot is content: curl and scripts stuff only after CRLF.
            (b"a\nb\n..c\r\n.\r\n", b"a\nb\n..c\n", 12, true, true),
            (b"a\r\n.b\n.c\r\n.\r\n", b"a\nb\n.c\n", 13, true, true),
            // Smuggling forms: none of them ends the body.
            (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\n", 10, true, true),
            (b"a\r\n.\nb\r\n.\r\n", b"a\n\nb\n", 11, true, true),
            (b"a\n.\r\nb\r\n.\r\n", b"a\n.\nb\n", 11, true, true),
            (b"a\r.\r\nb\r\n.\r\n", b"a\r.\nb\n", 11, true, true),
            (b"a\r\n.\rb\r\n.\r\n", b"a\n\rb\n", 11, true, true),
            (b"a\r\r\n.\r\n", b"a\r\n", 7, true, true),
        ];
        for &(input, output, consumed, done, bare) in cases {
            let show = String::from_utf8_lossy(input);
            let rejected = data_with(input, BareNewline::Reject);
            assert_eq!(
                rejected,
                (output.to_vec(), consumed, done, bare),
                "reject {show:?}"
            );
            let normalized = data_with(input, BareNewline::Normalize);
            assert_eq!(
                normalized,
                (output.to_vec(), consumed, done, false),
                "normalize {show:?}"
            );
        }
    }

    #[test]
    fn classic_smuggling_payload_stays_one_message() {
        let payload = b"Subject: hi\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nforged\r\n.\r\n";
        for policy in [BareNewline::Reject, BareNewline::Normalize] {
            let (out, used, done, bare) = data_with(payload, policy);
            assert!(done);
            assert_eq!(bare, policy == BareNewline::Reject);
            assert_eq!(used, payload.len());
            assert!(out.windows(15).any(|w| w == b"MAIL FROM:<evil"));
        }
    }

    #[test]
    fn long_lines_are_kept_whole() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\r\n.\r\n");
        let (out, _, done, bare) = data(&input);
        assert!(done && !bare);
        assert_eq!(out.len(), 100_001);
    }

    #[test]
    fn size_counts_crlf_and_stops_storing_past_limit() {
        let mut dec = BodyDecoder::data(10, BareNewline::Reject);
        let mut out = Vec::new();
        dec.feed(b"12345\r\n", &mut out);
        assert_eq!(dec.size(), 7);
        assert!(!dec.too_big());
        let f = dec.feed(b"67890\r\n..\r\n.\r\n", &mut out);
        assert!(f.done && dec.too_big());
        assert_eq!(out, b"12345\n");
    }

    #[test]
    fn chunked_converts_crlf_across_chunk_boundaries() {
        let mut dec = BodyDecoder::chunked(u64::MAX, false);
        let mut out = Vec::new();
        for chunk in [&b"a\r"[..], b"\nb\n.\n\r", b"c\r"] {
            let f = dec.feed(chunk, &mut out);
            assert_eq!(f.consumed, chunk.len());
            assert!(!f.done);
        }
        dec.finish(&mut out);
        assert_eq!(out, b"a\nb\n.\n\rc\r");
        assert!(!dec.bare_newline());
        assert_eq!(dec.size(), 10, "the size is the octets sent");
    }

    #[test]
    fn binary_chunks_are_stored_exactly() {
        let mut dec = BodyDecoder::chunked(u64::MAX, true);
        let mut out = Vec::new();
        for chunk in [
            &b"Received: x\r\nDelivered-To: a@b\r"[..],
            b"\n\r\n\0\r\n\r",
        ] {
            dec.feed(chunk, &mut out);
        }
        dec.finish(&mut out);
        assert_eq!(out, b"Received: x\r\nDelivered-To: a@b\r\n\r\n\0\r\n\r");
        assert_eq!(dec.size(), 38);
        assert_eq!(dec.received_count(), 1);
        assert_eq!(dec.delivered_to(), ["a@b"]);
    }

    #[test]
    fn header_scan_counts_received_and_keeps_delivered_to() {
        let msg = b"Received: a\r\n\tcontinued\r\nRECEIVED : b\r\nDelivered-To: alice@example.org\r\nSubject: x\r\n\r\nReceived: not a header\r\n.\r\n";
        for step in [1, 5, msg.len()] {
            let mut dec = BodyDecoder::data(u64::MAX, BareNewline::Reject);
            decode_in_steps(&mut dec, msg, step);
            assert_eq!(dec.received_count(), 2);
            assert_eq!(dec.delivered_to(), ["alice@example.org"]);
        }
    }

    #[test]
    fn header_scan_stops_at_a_line_that_is_no_header() {
        let mut dec = BodyDecoder::data(u64::MAX, BareNewline::Reject);
        let mut out = Vec::new();
        dec.feed(b"hello world\r\nReceived: x\r\n.\r\n", &mut out);
        assert_eq!(dec.received_count(), 0);
    }

    proptest::proptest! {
        /// Any text, dot-stuffed and sent with CRLF line ends as a
        /// correct client does, comes back exactly, however the stream
        /// is cut into reads.
        #[test]
        fn the_decoder_inverts_dot_stuffing_for_every_split(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        Just(b'.'),
                        Just(b'x'),
                        Just(b' '),
                        Just(0u8),
                        Just(0xffu8),
                        (0x21u8..0x7f),
                    ],
                    0..40,
                ),
                0..30,
            ),
            cuts in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let mut text = Vec::new();
            let mut wire = Vec::new();
            for l in &lines {
                text.extend_from_slice(l);
                text.push(b'\n');
                if l.first() == Some(&b'.') {
                    wire.push(b'.');
                }
                wire.extend_from_slice(l);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b".\r\nNOOP\r\n");
            let mut dec = BodyDecoder::data(1 << 30, BareNewline::Normalize);
            let mut out = Vec::new();
            let (mut pos, mut cut) = (0, 0);
            let ended = loop {
                let end = (pos + cuts[cut % cuts.len()]).min(wire.len());
                cut += 1;
                let f = dec.feed(&wire[pos..end], &mut out);
                if f.done {
                    break pos + f.consumed;
                }
                proptest::prop_assert_eq!(f.consumed, end - pos);
                pos = end;
                proptest::prop_assert!(pos < wire.len(), "the end was not seen");
            };
            dec.finish(&mut out);
            // What follows the final dot is the next command, untouched.
            proptest::prop_assert_eq!(&wire[ended..], b"NOOP\r\n");
            proptest::prop_assert_eq!(out, text);
            proptest::prop_assert!(!dec.bare_newline());
        }
    }
}
