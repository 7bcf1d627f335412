#![no_main]
//! The configuration loader: any text is a configuration or an error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mailroom::config::Config::parse(text, "fuzz");
    }
});
