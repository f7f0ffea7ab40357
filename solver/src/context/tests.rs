//! Tests of context walking, selection digests and the stat cache on real temp directories.

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use super::*;

/// Creates files (`name` → content), directories (trailing `/`) and symlinks (`-> target`).
fn tree(root: &Path, spec: &[(&str, &str)]) {
    for (name, content) in spec {
        let p = root.join(name.trim_end_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        if name.ends_with('/') {
            std::fs::create_dir_all(&p).unwrap();
        } else if let Some(target) = content.strip_prefix("-> ") {
            symlink(target, &p).unwrap();
        } else {
            std::fs::write(&p, content).unwrap();
        }
    }
}

fn paths(ctx: &Context) -> BTreeSet<String> {
    ctx.entries()
        .iter()
        .skip(1)
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn open(root: &Path, patterns: &[&str]) -> Context {
    Context::open(root, patterns, None).unwrap()
}

fn digest(root: &Path, sources: &[&str]) -> Digest {
    open(root, &[]).select(sources).unwrap().digest
}

/// Polls the filesystem clock until it has moved past every timestamp under `root`, so that
/// a stat cache written afterwards does not consider those files racy.
fn wait_until_files_are_old(root: &Path, statdir: &Path) {
    let newest = walk_newest(root);
    while statcache::fs_now(statdir).unwrap() <= newest {
        std::hint::spin_loop();
    }
}

fn walk_newest(p: &Path) -> i64 {
    let m = std::fs::symlink_metadata(p).unwrap();
    let mut newest = (m.mtime() * 1_000_000_000 + m.mtime_nsec())
        .max(m.ctime() * 1_000_000_000 + m.ctime_nsec());
    if m.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            newest = newest.max(walk_newest(&e.unwrap().path()));
        }
    }
    newest
}

#[test]
fn dockerignore_applied_during_walk() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[],
            &[
                "a.md",
                "README.md",
                "src",
                "src/main.go",
                "src/sub",
                "src/sub/x.go",
                "vendor",
                "vendor/keep.txt",
                "vendor/other.txt",
                "docs",
                "docs/guide",
                "docs/guide/intro.md",
                "docs/guide/intro.txt",
            ],
        ),
        (
            &["*.md", "!README.md"],
            &[
                "README.md",
                "src",
                "src/main.go",
                "src/sub",
                "src/sub/x.go",
                "vendor",
                "vendor/keep.txt",
                "vendor/other.txt",
                "docs",
                "docs/guide",
                "docs/guide/intro.md",
                "docs/guide/intro.txt",
            ],
        ),
        // an exception inside an excluded directory re-includes it (and its parent directory)
        (
            &["vendor", "docs", "!vendor/keep.txt"],
            &[
                "a.md",
                "README.md",
                "src",
                "src/main.go",
                "src/sub",
                "src/sub/x.go",
                "vendor",
                "vendor/keep.txt",
            ],
        ),
        // `**` at any depth; a wildcard exception looks inside every excluded directory
        (
            &["**/*.go", "docs", "!**/intro.md"],
            &[
                "a.md",
                "README.md",
                "src",
                "src/sub",
                "vendor",
                "vendor/keep.txt",
                "vendor/other.txt",
                "docs",
                "docs/guide",
                "docs/guide/intro.md",
            ],
        ),
        (&["*", "!src/sub"], &["src", "src/sub", "src/sub/x.go"]),
        (
            &["src/*/x.go", "src/main.go"],
            &[
                "a.md",
                "README.md",
                "src",
                "src/sub",
                "vendor",
                "vendor/keep.txt",
                "vendor/other.txt",
                "docs",
                "docs/guide",
                "docs/guide/intro.md",
                "docs/guide/intro.txt",
            ],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("a.md", "a"),
            ("README.md", "r"),
            ("src/main.go", "m"),
            ("src/sub/x.go", "x"),
            ("vendor/keep.txt", "k"),
            ("vendor/other.txt", "o"),
            ("docs/guide/intro.md", "i"),
            ("docs/guide/intro.txt", "t"),
        ],
    );
    for (patterns, want) in cases {
        assert_eq!(
            paths(&open(dir.path(), patterns)),
            set(want),
            "{patterns:?}"
        );
    }
    // through parse(): comments ignored; leading `/`, `./` and trailing `/` dropped
    let parsed = ignore::parse("# vendored\n/src/\n./vendor\ndocs/guide/\n");
    let ctx = Context::open(dir.path(), &parsed, None).unwrap();
    assert_eq!(paths(&ctx), set(&["a.md", "README.md", "docs"]));
}

#[test]
fn excluded_directories_are_not_listed_unless_an_exception_may_match_inside() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("node_modules/a/b/c.js", "x"),
            ("vendor/keep", "k"),
            ("src/x", "x"),
        ],
    );
    let all = open(dir.path(), &[]).stats().dirs_read;
    let skipped = open(dir.path(), &["node_modules", "vendor", "!vendor/keep"]);
    // root, src, vendor listed; node_modules and its 2 subdirectories never
    assert_eq!(all, 6);
    assert_eq!(skipped.stats().dirs_read, 3);
    assert!(paths(&skipped).contains("vendor/keep"));
    // a wildcard exception could match anywhere: every excluded directory is looked into
    let wild = open(dir.path(), &["node_modules", "!**/keep"]);
    assert_eq!(wild.stats().dirs_read, 6);
    assert!(!paths(&wild).iter().any(|p| p.starts_with("node_modules")));
}

#[test]
fn dockerfile_and_dockerignore_stay_readable_when_ignored() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "Dockerfile\n.dockerignore\n"),
            ("app", "a"),
        ],
    );
    let patterns = read_dockerignore(&dir.path().join(".dockerignore")).unwrap();
    assert_eq!(patterns, vec!["Dockerfile", ".dockerignore"]);
    let ctx = Context::open(dir.path(), &patterns, None).unwrap();
    assert_eq!(paths(&ctx), set(&["app"]));
    assert!(matches!(
        ctx.select(&["Dockerfile"]),
        Err(Error::NotFound { .. })
    ));
    assert!(read_dockerignore(&dir.path().join("missing"))
        .unwrap()
        .is_empty());
}

#[test]
fn invalid_dockerignore_is_an_error_naming_the_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let err = Context::open(dir.path(), &["ok", "[a-"], None)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        ".dockerignore pattern \"[a-\" is invalid: syntax error in pattern"
    );
}

#[test]
fn digest_is_stable_across_fresh_copies_and_ignores_timestamps() {
    let spec = [
        ("src/main.rs", "fn main() {}"),
        ("src/lib/mod.rs", "pub mod x;"),
        ("Cargo.toml", "[package]"),
        ("link", "-> src/main.rs"),
    ];
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    tree(a.path(), &spec);
    tree(b.path(), &spec);
    filetime::set_file_mtime(
        b.path().join("Cargo.toml"),
        FileTime::from_unix_time(1_000_000, 7),
    )
    .unwrap();
    filetime::set_file_mtime(b.path().join("src"), FileTime::from_unix_time(5, 0)).unwrap();
    for sources in [&["."][..], &["src", "Cargo.toml"], &["*.toml", "link"]] {
        assert_eq!(
            digest(a.path(), sources),
            digest(b.path(), sources),
            "{sources:?}"
        );
    }
}

#[test]
fn digest_changes_with_content_mode_links_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    tree(r, &[("f", "hello"), ("d/g", "x"), ("l", "-> f")]);
    let base = digest(r, &["."]);
    let mut seen = vec![base];
    let mut check = |what: &str| {
        let d = digest(r, &["."]);
        assert!(!seen.contains(&d), "{what} did not change the digest");
        seen.push(d);
    };
    std::fs::write(r.join("f"), "hellO").unwrap();
    check("content");
    std::fs::set_permissions(r.join("f"), std::fs::Permissions::from_mode(0o755)).unwrap();
    check("mode");
    std::fs::remove_file(r.join("l")).unwrap();
    symlink("d/g", r.join("l")).unwrap();
    check("link target");
    std::fs::rename(r.join("d/g"), r.join("d/h")).unwrap();
    check("rename");
    std::fs::write(r.join("new"), "").unwrap();
    check("new empty file");
    std::fs::create_dir(r.join("emptydir")).unwrap();
    check("new empty dir");
    std::os::unix::fs::chown(r.join("f"), Some(4242), None).unwrap();
    check("owner");
}

#[test]
fn same_size_same_mtime_content_change_is_detected_with_a_warm_stat_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let sc = store.path().join("statcache");
    let f = dir.path().join("config.json");
    std::fs::write(&f, "{\"debug\": false}").unwrap();
    wait_until_files_are_old(dir.path(), store.path());
    let ctx = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    let before = ctx.select(&["config.json"]).unwrap().digest;
    ctx.save_stat_cache().unwrap();

    // same size, then the old mtime put back: only ctime (and content) tell
    let old = std::fs::metadata(&f).unwrap();
    std::fs::write(&f, "{\"debug\": true }").unwrap();
    filetime::set_file_mtime(&f, FileTime::from_last_modification_time(&old)).unwrap();
    let now = std::fs::metadata(&f).unwrap();
    assert_eq!(
        (now.len(), now.mtime(), now.mtime_nsec()),
        (old.len(), old.mtime(), old.mtime_nsec())
    );

    let ctx = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    let after = ctx.select(&["config.json"]).unwrap().digest;
    assert_ne!(before, after);
    assert_eq!(ctx.stats().files_read, 1);
    assert_eq!(
        after,
        digest(dir.path(), &["config.json"]),
        "cached and uncached digests agree"
    );
}

#[test]
fn stat_cache_skips_unchanged_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let sc = store.path().join("cache/statcache");
    let files: Vec<(String, String)> = (0..50)
        .map(|i| (format!("d{}/f{i}", i % 5), format!("content {i}")))
        .collect();
    let spec: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    tree(dir.path(), &spec);
    wait_until_files_are_old(dir.path(), store.path());

    let first = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    assert_eq!(first.stat_cache_status(), &LoadStatus::Missing);
    let d1 = first.select(&["."]).unwrap().digest;
    assert_eq!(
        (first.stats().files_read, first.stats().files_reused),
        (50, 0)
    );
    first.save_stat_cache().unwrap();

    let second = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    assert_eq!(
        second.stat_cache_status(),
        &LoadStatus::Loaded { records: 50 }
    );
    assert_eq!(second.select(&["."]).unwrap().digest, d1);
    assert_eq!(
        (second.stats().files_read, second.stats().files_reused),
        (0, 50)
    );
    // a build that selects only part of the context keeps the other records
    let partial = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    partial.select(&["d1"]).unwrap();
    partial.save_stat_cache().unwrap();
    assert_eq!(partial.stats().files_reused, 10);

    std::fs::write(dir.path().join("d3/f3"), "changed, longer").unwrap();
    let third = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    assert_ne!(third.select(&["."]).unwrap().digest, d1);
    assert_eq!(
        (third.stats().files_read, third.stats().files_reused),
        (1, 49)
    );
}

#[test]
fn racy_ctime_forces_a_rehash() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let sc = store.path().join("statcache");
    let f = dir.path().join("f");
    std::fs::write(&f, "x").unwrap();
    let ctime = {
        let m = std::fs::metadata(&f).unwrap();
        m.ctime() * 1_000_000_000 + m.ctime_nsec()
    };
    let ctx = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    ctx.select(&["f"]).unwrap();
    ctx.save_stat_cache().unwrap();
    // pin the cache's reference moment relative to the file's ctime (its mtime is older)
    let reuse_with_reference = |reference: i64| {
        let (mut c, _) = StatCache::load(&sc);
        c.reference_ns = reference;
        c.save(&sc).unwrap();
        let ctx = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
        ctx.select(&["f"]).unwrap();
        ctx.stats().files_read
    };
    assert_eq!(
        reuse_with_reference(ctime),
        1,
        "ctime equal to the reference is racy"
    );
    assert_eq!(
        reuse_with_reference(ctime - 1),
        1,
        "ctime after the reference is racy"
    );
    let mtime = {
        let m = std::fs::metadata(&f).unwrap();
        m.mtime() * 1_000_000_000 + m.mtime_nsec()
    };
    assert!(mtime <= ctime);
    assert_eq!(
        reuse_with_reference(ctime + 1),
        0,
        "older than the reference: trusted"
    );
}

#[test]
fn corrupt_stat_cache_is_ignored_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let sc = store.path().join("statcache");
    tree(dir.path(), &[("a", "1"), ("b", "2")]);
    std::fs::write(&sc, b"LADESTC\0 not really").unwrap();
    let ctx = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    assert!(matches!(
        ctx.stat_cache_status(),
        LoadStatus::Ignored { .. }
    ));
    ctx.select(&["."]).unwrap();
    assert_eq!(ctx.stats().files_read, 2);
    ctx.save_stat_cache().unwrap();
    assert!(matches!(
        StatCache::load(&sc).1,
        LoadStatus::Loaded { records: 2 }
    ));
}

#[test]
fn symlinks_are_followed_as_sources_and_kept_inside_directories() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    tree(
        r,
        &[
            ("real/file", "content"),
            ("real/inner", "-> file"),
            ("to_file", "-> real/file"),
            ("to_dir", "-> real"),
            ("abs", "-> /real/file"),
            ("escape", "-> ../../../real/file"),
            ("dangling", "-> nowhere"),
            ("loop1", "-> loop2"),
            ("loop2", "-> loop1"),
        ],
    );
    let ctx = open(r, &[]);
    // a symlink given as a source is followed; its name is kept for the destination
    let s = ctx.select(&["to_file"]).unwrap();
    assert_eq!(s.sources[0].path, PathBuf::from("to_file"));
    assert_eq!(s.sources[0].resolved, PathBuf::from("real/file"));
    assert_eq!(s.sources[0].entries[0].entry.kind, EntryKind::File);
    // absolute targets and `..` resolve inside the context
    for src in ["abs", "escape", "to_dir/file"] {
        let s = ctx.select(&[src]).unwrap();
        assert_eq!(s.sources[0].resolved, PathBuf::from("real/file"), "{src}");
    }
    // a directory source: its content, with inner symlinks as themselves
    let s = ctx.select(&["to_dir"]).unwrap();
    let rels: Vec<_> = s.sources[0]
        .entries
        .iter()
        .map(|e| (e.rel.clone(), e.entry.kind))
        .collect();
    assert_eq!(
        rels,
        vec![
            (PathBuf::new(), EntryKind::Dir),
            (PathBuf::from("file"), EntryKind::File),
            (PathBuf::from("inner"), EntryKind::Symlink),
        ]
    );
    assert_eq!(
        s.sources[0].entries[2].entry.link_target,
        Some(PathBuf::from("file"))
    );
    // `.` keeps every symlink as itself
    let all = ctx.select(&["."]).unwrap();
    assert!(all.sources[0]
        .entries
        .iter()
        .any(|e| e.rel == Path::new("dangling") && e.entry.kind == EntryKind::Symlink));
    assert!(matches!(
        ctx.select(&["dangling"]),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        ctx.select(&["loop1"]),
        Err(Error::TooManyLinks { .. })
    ));
}

#[test]
fn wildcard_sources_follow_go_filepath_match() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("c.md", "c"),
            ("sub/d.txt", "d"),
            ("sub/deep/e.txt", "e"),
            ("other/d.txt", "d2"),
            ("[x].txt", "x"),
        ],
    );
    let ctx = open(dir.path(), &[]);
    let matched = |p: &str| -> Vec<String> {
        ctx.select(&[p])
            .unwrap()
            .sources
            .iter()
            .map(|s| s.path.to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(matched("*.txt"), vec!["[x].txt", "a.txt", "b.txt"]);
    assert_eq!(matched("/?.txt"), vec!["a.txt", "b.txt"]);
    assert_eq!(matched("*/d.txt"), vec!["other/d.txt", "sub/d.txt"]);
    // `**` is not special for COPY sources: it is `*`
    assert_eq!(matched("**/*.txt"), vec!["other/d.txt", "sub/d.txt"]);
    assert_eq!(matched("[ab].txt"), vec!["a.txt", "b.txt"]);
    assert_eq!(matched("[[]x].txt"), vec!["[x].txt"]);
    // like BuildKit, a pattern without unescaped wildcards is a literal path
    assert!(matches!(
        ctx.select(&["\\[x\\].txt"]),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(matched("s*"), vec!["sub"]);
    assert_eq!(ctx.select(&["s*"]).unwrap().entry_count(), 4);
    // a wildcard that matches nothing selects nothing (BuildKit's AllowEmptyWildcard), next
    // to a match or alone; a missing literal path is an error
    assert_eq!(matched("*.go"), Vec::<String>::new());
    assert_eq!(matched("nodir/*.txt"), Vec::<String>::new());
    let both = ctx.select(&["*.go", "a.txt"]).unwrap();
    assert_eq!(both.sources.len(), 1);
    assert_eq!(both.digest, ctx.select(&["a.txt"]).unwrap().digest);
    let err = ctx.select(&["a.go"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"a.go\": not found in the build context (check the path and .dockerignore)"
    );
    assert!(
        matches!(ctx.select(&["a.txt", "nope"]), Err(Error::NotFound { pattern }) if pattern == "nope")
    );
    assert!(matches!(
        ctx.select(&["[a-"]),
        Err(Error::BadSourcePattern { .. })
    ));
    // `..` cannot climb out of the context
    assert_eq!(matched("../../a.txt"), vec!["a.txt"]);
}

#[test]
fn selection_digest_covers_only_selected_entries() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), &[("app/main.rs", "m"), ("docs/readme", "r")]);
    let before = digest(dir.path(), &["app"]);
    std::fs::write(dir.path().join("docs/readme"), "changed").unwrap();
    assert_eq!(digest(dir.path(), &["app"]), before);
    std::fs::write(dir.path().join("app/main.rs"), "M").unwrap();
    assert_ne!(digest(dir.path(), &["app"]), before);
}

#[test]
fn large_tree_with_a_big_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let sc = store.path().join("statcache");
    for d in 0..40 {
        let p = dir.path().join(format!("dir{d}/nested"));
        std::fs::create_dir_all(&p).unwrap();
        for f in 0..50 {
            std::fs::write(p.join(format!("file{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    // bigger than PARALLEL_HASH_MIN and not a multiple of the read buffer
    let big: Vec<u8> = (0..(9u32 << 20) + 7).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    wait_until_files_are_old(dir.path(), store.path());
    let ctx = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    let sel = ctx.select(&["."]).unwrap();
    assert_eq!(ctx.stats().files_read, 2001);
    assert_eq!(ctx.stats().entries, 1 + 40 * 2 + 2000 + 1);
    let big_entry = sel.sources[0]
        .entries
        .iter()
        .find(|e| e.rel == Path::new("big.bin"))
        .unwrap();
    assert_eq!(big_entry.content, Some(Digest::of(&big)));
    ctx.save_stat_cache().unwrap();
    let again = Context::open(dir.path(), &[] as &[&str], Some(&sc)).unwrap();
    assert_eq!(again.select(&["."]).unwrap().digest, sel.digest);
    assert_eq!(again.stats().files_read, 0);
}

#[test]
fn context_root_must_be_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "").unwrap();
    assert!(matches!(
        Context::open(&dir.path().join("f"), &[] as &[&str], None),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        Context::open(&dir.path().join("missing"), &[] as &[&str], None),
        Err(Error::Io { .. })
    ));
}
