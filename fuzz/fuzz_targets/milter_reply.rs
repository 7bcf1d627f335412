#![no_main]
//! A milter's replies, from any bytes cut at any point: never a panic,
//! never more than one packet's worth held, and a filter's own SMTP reply
//! never carries a CR or LF into ours.
use libfuzzer_sys::fuzz_target;
use mailroom::smtp::milter::{Decoder, Reply, MAX_PACKET};

fuzz_target!(|data: &[u8]| {
    // The first octet says where to cut the rest.
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let mut d = Decoder::default();
    for chunk in rest.chunks(usize::from(cut).max(1)) {
        d.feed(chunk);
        while let Some(r) = d.reply() {
            match r {
                Ok(Reply::ReplyCode(r)) => {
                    assert!((400..600).contains(&r.code));
                    for line in &r.lines {
                        assert!(!line.contains(['\r', '\n']), "{line:?}");
                    }
                }
                Ok(_) => {}
                // A broken filter: the connection would end here.
                Err(_) => return,
            }
        }
        assert!(d.pending() < MAX_PACKET + 4 + chunk.len());
    }
});
