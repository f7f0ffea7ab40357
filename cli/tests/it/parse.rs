//! `lade debug parse` end to end, against the golden files in `testdata/parser/`:
//!
//! - `valid/<case>/Dockerfile` must exit 0, print `dump` on stdout and `stderr` (warnings,
//!   possibly empty) on stderr;
//! - `invalid/<case>/Dockerfile` must exit 1, print nothing on stdout and exactly `stderr`.
//!
//! `LADE_BLESS=1 cargo test -p lade-cli --test it parse` rewrites the golden files (refused
//! under CI, where a stale golden file must fail).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{lade, workspace_root};

fn bless() -> bool {
    let on = std::env::var_os("LADE_BLESS").is_some_and(|v| v == "1");
    assert!(
        !(on && std::env::var_os("CI").is_some()),
        "LADE_BLESS must not be used in CI: golden files are checked, not rewritten"
    );
    on
}

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = workspace_root().join("testdata/parser").join(kind);
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    v.sort();
    v
}

fn run_parse(dir: &Path, extra: &[&str]) -> Output {
    lade()
        .current_dir(dir)
        .args(["debug", "parse", "-f", "Dockerfile"])
        .args(extra)
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

/// Compares `got` with the golden file `path` (or writes it when blessing); returns a failure
/// description.
fn check_golden(path: &Path, got: &str) -> Option<String> {
    if bless() {
        fs::write(path, got).unwrap();
        return None;
    }
    let want = match fs::read_to_string(path) {
        Ok(w) => w,
        Err(_) => {
            return Some(format!(
                "{} is missing (LADE_BLESS=1 creates it); output was:\n{got}",
                path.display()
            ))
        }
    };
    (want != got).then(|| {
        format!(
            "{} differs:\n--- expected\n{want}\n--- got\n{got}",
            path.display()
        )
    })
}

#[test]
fn valid_fixtures_dump_and_exit_zero() {
    let all = cases("valid");
    assert!(all.len() >= 8, "valid fixtures missing");
    let mut failures = Vec::new();
    for dir in &all {
        let out = run_parse(dir, &[]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        if out.status.code() != Some(0) {
            failures.push(format!(
                "{}: exit {:?}\n{stderr}",
                dir.display(),
                out.status
            ));
            continue;
        }
        failures.extend(check_golden(&dir.join("dump"), &stdout));
        failures.extend(check_golden(&dir.join("stderr"), &stderr));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_fixtures_render_exact_errors_and_exit_one() {
    let all = cases("invalid");
    assert!(all.len() >= 15, "at least 15 invalid fixtures are required");
    let mut failures = Vec::new();
    for dir in &all {
        let out = run_parse(dir, &[]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{}: expected exit 1, got {:?}\n{stdout}{stderr}",
                dir.display(),
                out.status
            ));
            continue;
        }
        if !stdout.is_empty() {
            failures.push(format!("{}: printed on stdout:\n{stdout}", dir.display()));
        }
        failures.extend(check_golden(&dir.join("stderr"), &stderr));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reads_dockerfile_in_current_directory_by_default() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), "FROM alpine\nRUN true\n").unwrap();
    let out = lade()
        .current_dir(dir.path())
        .args(["debug", "parse"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"(from \"alpine\")\n(run \"true\")\n");
}

#[test]
fn reads_standard_input() {
    let mut child = lade()
        .args(["debug", "parse", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM alpine\nENV X\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(" --> <stdin>:2:5\n"), "{stderr}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = lade()
        .current_dir(dir.path())
        .args(["debug", "parse", "-f", "nope/Dockerfile"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .starts_with("error: cannot read nope/Dockerfile: give the Dockerfile's path with -f"),
        "{stderr}"
    );
}

#[test]
fn invalid_utf8_names_the_position() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("Dockerfile"),
        b"FROM alpine\nRUN echo \xff\n",
    )
    .unwrap();
    let out = lade()
        .current_dir(dir.path())
        .args(["debug", "parse"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: Dockerfile:2:10: the file is not valid UTF-8"),
        "{stderr}"
    );
}

#[test]
fn syntax_only_matches_buildkits_parser() {
    // unknown instructions and flags are BuildKit parser-level fine; only --syntax-only accepts
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("Dockerfile"),
        "FROM alpine\nFROBNICATE x\nCOPY --bogus a b\n",
    )
    .unwrap();
    let full = run_parse(dir.path(), &[]);
    assert_eq!(full.status.code(), Some(1));
    let syntax = run_parse(dir.path(), &["--syntax-only"]);
    assert!(syntax.status.success(), "{syntax:?}");
    assert_eq!(
        String::from_utf8(syntax.stdout).unwrap(),
        "(from \"alpine\")\n(frobnicate \"\")\n(copy [\"--bogus\"] \"a\" \"b\")\n"
    );
}

#[test]
fn buildkit_conformance_cases_through_the_binary() {
    // the same data as the parser's conformance test, through the real binary
    let root = std::env::var_os("LADE_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            workspace_root()
                .ancestors()
                .map(|a| a.join("shared/conformance"))
                .find(|p| p.is_dir())
        })
        .expect("BuildKit conformance data not found: set LADE_CONFORMANCE_DIR");
    let testfiles = [
        root.join("buildkit/parser/testfiles"),
        root.join("parser/testfiles"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .unwrap_or_else(|| panic!("no parser/testfiles under {}", root.display()));
    let mut n = 0;
    for entry in fs::read_dir(&testfiles).unwrap() {
        let dir = entry.unwrap().path();
        let out = Command::new(crate::common::lade_bin())
            .args(["debug", "parse", "--syntax-only", "-f"])
            .arg(dir.join("Dockerfile"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", dir.display());
        let want = fs::read(dir.join("result")).unwrap();
        assert!(out.stdout == want, "{} dump differs", dir.display());
        n += 1;
    }
    assert!(n > 0);
}
