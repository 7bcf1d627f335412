//! The command line framer: finds the lines of the SMTP stream in whatever
//! the driver has read so far, without reading anything itself and without
//! copying (Stalwart's `smtp-proto` receives requests the same way).
//!
//! The driver keeps the bytes it has read in its own buffer and hands the
//! unused part to [`LineFramer::ingest`], which says what is there: a line
//! (as a range of what it was handed, without its line end), a line that
//! was too long, or nothing yet. A line ends at LF; a CR before the LF is
//! not part of it. A line longer than the limit (line end included) is
//! never held whole: once the limit is passed, what has come is given up
//! and the rest is skipped up to its LF, so memory stays bounded by the
//! limit however long the client's line is.

use core::ops::Range;

/// What [`LineFramer::ingest`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A line: `line` is its text, without the line end, within the input;
    /// `used` octets of the input (the line end included) are done with.
    Line { line: Range<usize>, used: usize },
    /// A line longer than the limit ended; `used` octets are done with.
    TooLong { used: usize },
    /// No line end yet. `used` octets may be dropped already (the start
    /// of a line that is too long); the rest must be handed in again with
    /// more after it.
    NeedMore { used: usize },
}

#[derive(Debug, Clone)]
pub struct LineFramer {
    /// The longest line, line end included.
    max: usize,
    /// Octets of the input already searched for a line end.
    scanned: usize,
    /// The current line is too long: skipping to its end.
    skipping: bool,
}

impl LineFramer {
    pub fn new(max: usize) -> LineFramer {
        LineFramer {
            max,
            scanned: 0,
            skipping: false,
        }
    }

    /// Looks at `input`, the unused bytes: the start of the current line,
    /// then whatever has come after it. Bytes already searched are not
    /// searched again.
    pub fn ingest(&mut self, input: &[u8]) -> Frame {
        let from = self.scanned.min(input.len());
        match input[from..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let used = from + i + 1;
                let too_long = self.skipping || used > self.max;
                self.scanned = 0;
                self.skipping = false;
                if too_long {
                    return Frame::TooLong { used };
                }
                let mut end = used - 1;
                if end > 0 && input[end - 1] == b'\r' {
                    end -= 1;
                }
                Frame::Line { line: 0..end, used }
            }
            None if input.len() >= self.max => {
                // Over the limit with no end yet: give up what has come
                // and skip the rest of the line.
                self.skipping = true;
                self.scanned = 0;
                Frame::NeedMore { used: input.len() }
            }
            None => {
                self.scanned = input.len();
                Frame::NeedMore { used: 0 }
            }
        }
    }

    /// Forgets what it has seen of the current line: its bytes were
    /// dropped (the clear text after STARTTLS).
    /// The longest line, line end included.
    pub fn limit(&self) -> usize {
        self.max
    }

    pub fn reset(&mut self) {
        self.scanned = 0;
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a driver sees: the lines (`Ok`) and the lines too long
    /// (`Err(())`), feeding `input` in the pieces `cuts` makes, and how
    /// many octets it had to keep at most.
    fn frames(max: usize, input: &[u8], cuts: &[usize]) -> (Vec<Result<Vec<u8>, ()>>, usize) {
        let mut framer = LineFramer::new(max);
        let mut held: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut most = 0;
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            held.extend_from_slice(&input[start..end]);
            start = end;
            most = most.max(held.len());
            loop {
                match framer.ingest(&held) {
                    Frame::Line { line, used } => {
                        out.push(Ok(held[line].to_vec()));
                        held.drain(..used);
                    }
                    Frame::TooLong { used } => {
                        out.push(Err(()));
                        held.drain(..used);
                    }
                    Frame::NeedMore { used } => {
                        held.drain(..used);
                        break;
                    }
                }
            }
        }
        (out, most)
    }

    fn lines(list: &[&str]) -> Vec<Result<Vec<u8>, ()>> {
        list.iter()
            .map(|l| match *l {
                "<too long>" => Err(()),
                l => Ok(l.as_bytes().to_vec()),
            })
            .collect()
    }

    /// Each case is fed whole, in single octets, and split at every place
    /// into two pieces and into three: the lines found must be the same,
    /// and no more than the limit (plus the piece being added) is held.
    #[test]
    fn every_split_finds_the_same_lines() {
        let cases: &[(usize, &str, &[&str])] = &[
            (16, "HELO a\r\n", &["HELO a"]),
            (16, "HELO a\n", &["HELO a"]),
            (16, "NOOP\r\nRSET\nQUIT\r\n", &["NOOP", "RSET", "QUIT"]),
            (16, "\r\n\n", &["", ""]),
            (16, "a\rb\r\n", &["a\rb"]),
            (16, "no end yet", &[]),
            (16, "\r\r\n", &["\r"]),
            // 16 octets with the CRLF: the longest line there may be.
            (16, "NOOP 7890123456\r\n", &["<too long>"]),
            (16, "NOOP 789012345\r\n", &["NOOP 789012345"]),
            (16, "NOOP 7890123456\n", &["NOOP 7890123456"]),
            (
                16,
                "NOOP 78901234567890123456789\r\nNOOP\r\n",
                &["<too long>", "NOOP"],
            ),
            (8, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", &[]),
            (
                8,
                "0123456789abcdef\nok\n0123456789\r\nok2\r\n",
                &["<too long>", "ok", "<too long>", "ok2"],
            ),
        ];
        for &(max, input, want) in cases {
            let input = input.as_bytes();
            let want = lines(want);
            let mut splits: Vec<Vec<usize>> = vec![vec![], (1..input.len()).collect()];
            for i in 1..input.len() {
                splits.push(vec![i]);
                for j in i + 1..input.len() {
                    splits.push(vec![i, j]);
                }
            }
            for cuts in splits {
                let (got, most) = frames(max, input, &cuts);
                assert_eq!(
                    got,
                    want,
                    "{:?} cut at {cuts:?}",
                    String::from_utf8_lossy(input)
                );
                let biggest_piece = cuts
                    .iter()
                    .chain(std::iter::once(&input.len()))
                    .scan(0, |prev, &c| {
                        let piece = c - *prev;
                        *prev = c;
                        Some(piece)
                    })
                    .max()
                    .unwrap_or(0);
                assert!(
                    most <= max + biggest_piece,
                    "{most} octets held for a limit of {max}"
                );
            }
        }
    }

    #[test]
    fn a_line_is_searched_once() {
        let mut f = LineFramer::new(64);
        assert_eq!(f.ingest(b"MAIL FROM"), Frame::NeedMore { used: 0 });
        assert_eq!(f.scanned, 9);
        assert_eq!(
            f.ingest(b"MAIL FROM:<a@b>\r\n"),
            Frame::Line {
                line: 0..15,
                used: 17
            }
        );
        assert_eq!(f.scanned, 0);
    }
}
