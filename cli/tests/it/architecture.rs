//! Checks the crate dependency direction written in ARCHITECTURE.md:
//! `cli -> solver -> {parser, executor, registry, cache}`, `executor -> {runtime, cache}`,
//! `registry -> cache`; `parser`, `cache` and `runtime` depend on no other lade crate.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::workspace_root;

const ALLOWED: &[(&str, &[&str])] = &[
    ("parser", &[]),
    ("cache", &[]),
    ("runtime", &[]),
    ("registry", &["lade-cache"]),
    ("executor", &["lade-runtime", "lade-cache"]),
    (
        "solver",
        &[
            "lade-parser",
            "lade-executor",
            "lade-registry",
            "lade-cache",
        ],
    ),
    (
        "cli",
        &[
            "lade-solver",
            "lade-parser",
            "lade-executor",
            "lade-registry",
            "lade-cache",
            "lade-runtime",
        ],
    ),
];

fn lade_deps(krate: &str) -> BTreeSet<String> {
    let path = workspace_root().join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut out = BTreeSet::new();
    for section in ["dependencies", "build-dependencies"] {
        if let Some(deps) = doc.get(section).and_then(|d| d.as_table()) {
            out.extend(deps.keys().filter(|k| k.starts_with("lade-")).cloned());
        }
    }
    out
}

#[test]
fn crate_dependency_direction() {
    let mut violations = BTreeMap::new();
    for (krate, allowed) in ALLOWED {
        let allowed: BTreeSet<String> = allowed.iter().map(|s| s.to_string()).collect();
        let extra: Vec<String> = lade_deps(krate).difference(&allowed).cloned().collect();
        if !extra.is_empty() {
            violations.insert(*krate, extra);
        }
    }
    assert!(
        violations.is_empty(),
        "crates depend on lade crates the architecture forbids: {violations:?}"
    );
}

#[test]
fn every_workspace_member_is_checked() {
    let text = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let members = doc["workspace"]["members"].as_array().unwrap();
    for m in members {
        let m = m.as_str().unwrap();
        assert!(
            ALLOWED.iter().any(|(k, _)| *k == m),
            "workspace member {m} has no entry in the dependency-direction table"
        );
    }
}
