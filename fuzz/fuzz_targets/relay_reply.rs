#![no_main]
//! Replies from a relay, line by line.
use libfuzzer_sys::fuzz_target;
use mailroom::smtp::client::ReplyReader;

fuzz_target!(|data: &[u8]| {
    let mut reader = ReplyReader::default();
    for line in data.split(|&b| b == b'\n') {
        match reader.line(line) {
            Ok(Some(_)) | Err(_) => reader = ReplyReader::default(),
            Ok(None) => {}
        }
    }
});
