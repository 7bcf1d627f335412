#![no_main]
//! The aliases file and :include: file parsers.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mailroom::delivery::aliases::Aliases::parse(data, "fuzz");
    let _ = mailroom::delivery::aliases::parse_include(data, "fuzz");
});
