#![no_main]
//! Header scanning: the split, the fields, unfolding and address lists.
use libfuzzer_sys::fuzz_target;
use mailroom::smtp::header;

fuzz_target!(|data: &[u8]| {
    let split = header::split(data);
    assert!(split.header <= data.len());
    let fields = &data[..split.header];
    for f in header::fields(fields) {
        assert!(f.range.end <= fields.len());
        let _ = header::unfold(f.value);
        let _ = header::address_list(f.value);
    }
    let removed = header::remove(fields, &["Return-Path", "Bcc"]);
    assert!(removed.len() <= fields.len());
});
