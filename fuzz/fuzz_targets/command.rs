#![no_main]
//! The SMTP command parser: any line gets a command or an error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mailroom::smtp::command::parse(data);
});
