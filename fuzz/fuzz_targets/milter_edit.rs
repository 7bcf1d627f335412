#![no_main]
//! A header section as milters edit it, from any bytes: the first octets
//! are edits (add, insert, change, with indexes and names from the
//! input), the rest the header. Never a panic; untouched, it renders
//! byte for byte as it came; our own `Received:` is never shown, moved
//! off the top by a change, or lost; every field rendered parses back as
//! a field.
use libfuzzer_sys::fuzz_target;
use mailroom::smtp::edit::Header;
use mailroom::smtp::header;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (ops, text) = rest.split_at(n);
    let split = header::split(text);
    let fields = &text[..split.header];
    let crlf = fields.windows(2).any(|w| w == b"\r\n");
    let trace = fields.starts_with(b"Received:");
    let mut h = Header::parse(fields, trace, crlf);
    assert_eq!(h.render(), fields, "untouched");
    let count = header::fields(fields).count();
    let shown = h.shown().count();
    assert_eq!(shown, count - usize::from(trace && count > 0));
    for &op in ops {
        let names = ["Subject", "X-Spam-Status", "Received", "DKIM-Signature"];
        let name = names[usize::from(op >> 6)];
        let value = if op & 1 == 0 { "" } else { "v\n\tw" };
        match (op >> 1) % 3 {
            0 => h.add(name, value),
            1 => h.insert(u32::from(op >> 3), name, value),
            _ => h.change(u32::from(op >> 3), name, value),
        }
    }
    let out = h.render();
    if trace && count > 0 {
        let first = header::fields(fields).next().unwrap();
        let ours = &fields[first.range];
        assert!(
            out.windows(ours.len()).any(|w| w == ours),
            "our Received: field is kept"
        );
    }
    // Every field rendered is a field of its own: an edit never breaks
    // the section or glues two fields together.
    let reparsed: usize = header::fields(&out).map(|f| f.range.len()).sum();
    assert_eq!(reparsed, out.len(), "{:?}", String::from_utf8_lossy(&out));
    let ours = usize::from(trace && count > 0);
    assert_eq!(header::fields(&out).count(), h.shown().count() + ours);
});
