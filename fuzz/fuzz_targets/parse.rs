//! The whole front end (raw nodes, instructions, stages, dump) on arbitrary text: must never
//! panic, and every reported span must lie on character boundaries inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = lade_parser::parse(&text);
    for d in parsed.errors.iter().chain(parsed.warnings.iter()) {
        assert!(d.span.start <= d.span.end && d.span.end <= text.len());
        assert!(text.is_char_boundary(d.span.start) && text.is_char_boundary(d.span.end));
    }
    let _ = parsed.value.ast.dump();
});
