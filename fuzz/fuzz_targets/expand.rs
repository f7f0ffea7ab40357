//! Word expansion on arbitrary input: must never panic and must finish quickly.
//! Input: first byte picks the escape token and lexer options, the first line of the rest is
//! the word, the following `k=v` lines are the environment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lade_parser::shell::Lexer;

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let word = lines.next().unwrap_or("");
    let env: Vec<(String, String)> = lines
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    let escape = if opts & 1 == 0 { '\\' } else { '`' };
    let lex = Lexer::new(escape)
        .raw_quotes(opts & 2 != 0)
        .raw_escapes(opts & 4 != 0)
        .skip_unset_env(opts & 8 != 0)
        .skip_process_quotes(opts & 16 != 0);
    if let Ok(e) = lex.expand(word, &env) {
        // the expansion limit bounds memory and time on any input
        assert!(e.value.len() <= lade_parser::shell::MAX_EXPANSION + word.len());
    }
});
