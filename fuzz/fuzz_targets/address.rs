#![no_main]
//! Paths: whatever parses prints as something that parses to the same.
use libfuzzer_sys::fuzz_target;
use mailroom::smtp::address::{parse_forward_path, parse_reverse_path};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_reverse_path(s);
    if let Ok((p, "")) = parse_forward_path(s) {
        let printed = p.to_string();
        match parse_forward_path(&printed) {
            Ok((again, "")) => assert_eq!(again, p, "{s:?} printed as {printed:?}"),
            other => panic!("{s:?} printed as {printed:?}, which parses as {other:?}"),
        }
    }
});
