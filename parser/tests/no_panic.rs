//! Property tests: the parser and word expansion never panic, on random bytes and on
//! generated Dockerfile-like text, and every span they report lies inside the input.
//! (The fuzz targets in `fuzz/` explore the same properties for much longer.)
#![allow(clippy::unwrap_used)]

use lade_parser::shell::{Lexer, MAX_EXPANSION};
use proptest::prelude::*;

fn check_parse(text: &str) {
    let p = lade_parser::parse(text);
    for d in p.errors.iter().chain(&p.warnings) {
        assert!(
            d.span.start <= d.span.end && d.span.end <= text.len(),
            "{d:?}"
        );
        assert!(text.is_char_boundary(d.span.start) && text.is_char_boundary(d.span.end));
    }
    for n in &p.value.ast.nodes {
        assert!(n.span.end <= text.len());
        for a in n.args.iter().chain(&n.flags) {
            assert!(a.span.end <= text.len() && text.is_char_boundary(a.span.start));
        }
    }
    let _ = p.value.ast.dump();
}

const DOCKERFILE_TOKENS: &[&str] = &[
    "FROM",
    "from",
    "RUN",
    "CMD",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "LABEL",
    "ONBUILD",
    "HEALTHCHECK",
    "SHELL",
    "VOLUME",
    "EXPOSE",
    "USER",
    "WORKDIR",
    "STOPSIGNAL",
    "MAINTAINER",
    "ENTRYPOINT",
    "NONE",
    "AS",
    "alpine",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\\",
    "\\\n",
    "`",
    "`\n",
    "#",
    "# escape=`\n",
    "# syntax=x\n",
    "# check=skip=all\n",
    "--",
    "--from=a",
    "--link",
    "--mount=type=cache,target=/c",
    "--interval=5s",
    "--retries=3",
    "--network=none",
    "=",
    "a=b",
    "\"",
    "'",
    "[",
    "]",
    ",",
    "\"x\"",
    "[\"a\", \"b\"]",
    "$",
    "${",
    "}",
    "$x",
    "${x:-y}",
    "<<EOF",
    "<<-EOF",
    "<<\"EOF\"",
    "EOF",
    "\tEOF",
    "3<<X",
    "X",
    "é",
    "\u{feff}",
    "\u{a0}",
    "\0",
    "1",
    "-",
];

fn dockerfile_like() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(DOCKERFILE_TOKENS), 0..80).prop_map(|t| t.concat())
}

const WORD_TOKENS: &[&str] = &[
    "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "//", "*", "\\", "'", "\"", "a", "b", "x",
    " ", "\t", "PWD", "EMPTY", "1", "@", "é", "\u{feff}", "`", "${x", "${x:-", "${x//", "${x#",
    "${x%%",
];

fn word_like() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORD_TOKENS), 0..40).prop_map(|t| t.concat())
}

fn check_expand(word: &str) {
    let env = [("x", "abcabc a"), ("PWD", "/home"), ("EMPTY", "")];
    for escape in ['\\', '`'] {
        let lex = Lexer::new(escape);
        for l in [
            lex,
            lex.raw_quotes(true).raw_escapes(true).skip_unset_env(true),
        ] {
            if let Ok(e) = l.expand(word, &env[..]) {
                assert!(e.value.len() <= MAX_EXPANSION + word.len());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn parse_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parse_dockerfile_like_text(text in dockerfile_like()) {
        check_parse(&text);
    }

    #[test]
    fn expand_random_strings(word in any::<String>()) {
        check_expand(&word);
    }

    #[test]
    fn expand_shell_like_words(word in word_like()) {
        check_expand(&word);
    }
}
