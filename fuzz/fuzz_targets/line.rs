#![no_main]
//! The line framer, fed the input in pieces: it never holds more than the
//! limit plus one read, and never panics.
use libfuzzer_sys::fuzz_target;
use mailroom::smtp::line::{Frame, LineFramer};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let max = 16 + usize::from(first);
    let step = 1 + usize::from(first % 7);
    let mut framer = LineFramer::new(max);
    let mut buf: Vec<u8> = Vec::new();
    for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match framer.ingest(&buf) {
                Frame::Line { line, used } => {
                    assert!(line.end <= used && used <= buf.len());
                    assert!(line.len() < max);
                    buf.drain(..used);
                }
                Frame::TooLong { used } | Frame::NeedMore { used } => {
                    assert!(used <= buf.len());
                    buf.drain(..used);
                    break;
                }
            }
        }
        assert!(buf.len() <= max + step, "{} held", buf.len());
    }
});
