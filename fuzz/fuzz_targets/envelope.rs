#![no_main]
//! Queue files: the envelope and the records after it.
use libfuzzer_sys::fuzz_target;
use mailroom::queue::envelope::{decode_records, Envelope};

fuzz_target!(|data: &[u8]| {
    if let Ok((env, used)) = Envelope::decode(data) {
        assert!(used <= data.len());
        // What decodes encodes to something that decodes the same.
        let again = Envelope::decode(env.encode().as_bytes()).map(|(e, _)| e);
        assert_eq!(again.ok(), Some(env));
    }
    let (_, used) = decode_records(data);
    assert!(used <= data.len());
});
