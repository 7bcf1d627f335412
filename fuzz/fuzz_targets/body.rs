#![no_main]
//! The DATA and BDAT body decoders, fed the input in pieces.
use libfuzzer_sys::fuzz_target;
use mailroom::smtp::data::{BareNewline, BodyDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let step = 1 + usize::from(first % 13);
    let bare = if first & 0x80 == 0 {
        BareNewline::Normalize
    } else {
        BareNewline::Reject
    };
    for mut dec in [
        BodyDecoder::data(4096, bare),
        BodyDecoder::chunked(4096, first & 0x40 != 0),
    ] {
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            let f = dec.feed(piece, &mut out);
            assert!(f.consumed <= piece.len());
            if f.done {
                break;
            }
        }
        dec.finish(&mut out);
        let _ = (dec.size(), dec.received_count(), dec.delivered_to().len());
    }
});
