//! BuildKit's own parser and shell-lexer cases, read as data from the shared conformance
//! directory (`$LADE_CONFORMANCE_DIR`, else the nearest `shared/conformance` above the
//! workspace). A missing directory fails the test loudly: it never passes silently.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use lade_parser::shell::Lexer;

/// The BuildKit conformance root (the folder holding `parser/` and `shell/`).
fn buildkit_dir() -> PathBuf {
    let base = match std::env::var_os("LADE_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("parser/ has a parent")
                .to_path_buf();
            workspace
                .ancestors()
                .map(|a| a.join("shared").join("conformance"))
                .find(|p| p.is_dir())
                .unwrap_or_else(|| workspace.join("../shared/conformance"))
        }
    };
    for candidate in [base.join("buildkit"), base.clone()] {
        if candidate.join("parser").join("testfiles").is_dir() {
            return candidate;
        }
    }
    panic!(
        "BuildKit conformance data not found under {}: set LADE_CONFORMANCE_DIR to the shared \
         conformance directory (the one holding buildkit/parser/testfiles); CI provides it \
         beside the checkout as ../shared/conformance",
        base.display()
    );
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no cases in {}", dir.display());
    v
}

#[test]
fn buildkit_testfiles_dump_identically() {
    let dir = buildkit_dir().join("parser").join("testfiles");
    let mut failures = Vec::new();
    let all = cases(&dir);
    for case in &all {
        let text = fs::read_to_string(case.join("Dockerfile")).unwrap();
        let expected = fs::read_to_string(case.join("result")).unwrap();
        let parsed = lade_parser::parse_ast(&text);
        if !parsed.errors.is_empty() {
            failures.push(format!(
                "{}: unexpected errors {:?}",
                case.display(),
                parsed.errors
            ));
            continue;
        }
        let got = parsed.value.dump();
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                case.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn buildkit_negative_testfiles_are_rejected() {
    let dir = buildkit_dir().join("parser").join("testfiles-negative");
    let mut accepted = Vec::new();
    for case in cases(&dir) {
        let text = fs::read_to_string(case.join("Dockerfile")).unwrap();
        let parsed = lade_parser::parse(&text);
        if parsed.errors.is_empty() {
            accepted.push(case.display().to_string());
        }
        // the raw layer alone (BuildKit's parser.Parse) must reject them too
        assert!(
            !lade_parser::parse_ast(&text).errors.is_empty(),
            "{} accepted by the raw layer",
            case.display()
        );
    }
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
}

/// `shell/envVarTest`: `PLATFORM|input|expected`, `A` and `U` rows, environment fixed by
/// BuildKit's test.
#[test]
fn buildkit_env_var_rows() {
    let path = buildkit_dir().join("shell").join("envVarTest");
    let text = fs::read_to_string(&path).unwrap();
    let env = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ];
    let lex = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 3, "line {} of {}", n + 1, path.display());
        let (platform, source, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        if platform == "W" {
            continue;
        }
        assert!(
            platform == "A" || platform == "U",
            "bad tag on line {}",
            n + 1
        );
        checked += 1;
        let got = lex.process_word(source, &env[..]);
        match (expected, got) {
            ("error", Ok(v)) => {
                failures.push(format!("line {}: {source:?} should fail, got {v:?}", n + 1))
            }
            ("error", Err(_)) => {}
            (exp, Ok(v)) if v == exp => {}
            (exp, got) => failures.push(format!(
                "line {}: {source:?} expected {exp:?}, got {got:?}",
                n + 1
            )),
        }
    }
    assert!(
        checked > 200,
        "only {checked} rows read from {}",
        path.display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `shell/wordsTest`: `input | word1,word2` rows; `ENV k=v` lines add to the environment.
#[test]
fn buildkit_words_rows() {
    let path = buildkit_dir().join("shell").join("wordsTest");
    let text = fs::read_to_string(&path).unwrap();
    let lex = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start_matches(' ');
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "line {} of {}", n + 1, path.display());
        let input = parts[0].trim();
        let expected: Vec<&str> = parts[1].trim_start_matches(' ').split(',').collect();
        checked += 1;
        let got = match lex.process_words(input, &env) {
            Ok(w) => w,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            failures.push(format!(
                "line {}: {input:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert!(
        checked > 20,
        "only {checked} rows read from {}",
        path.display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
