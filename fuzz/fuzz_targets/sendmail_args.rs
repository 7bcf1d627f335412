#![no_main]
//! sendmail's arguments (NUL-separated in the input).
use libfuzzer_sys::fuzz_target;
use mailroom::sendmail::args::{parse, Mode};

fuzz_target!(|data: &[u8]| {
    let args: Vec<String> = data
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    for mode in [Mode::Deliver, Mode::Smtp, Mode::List] {
        let _ = parse(mode, &args);
    }
});
