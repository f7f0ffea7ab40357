//! `.dockerignore` exactly as docker and BuildKit read and apply it: moby/patternmatcher's
//! `ignorefile.ReadAll` (parsing) and `PatternMatcher` (matching), re-implemented.
//!
//! Parsing, per line: a UTF-8 BOM is dropped from the first line; a line *starting* with `#`
//! is a comment; the rest is trimmed; empty lines are skipped; a leading `!` marks an exception
//! (trimmed again after it); the pattern is `filepath.Clean`ed and one leading `/` dropped (so
//! `/foo`, `./foo` and `foo/` all mean `foo`).
//!
//! Matching: patterns apply in order and the last one that matches a path decides (exception
//! or not). A pattern matches a path if it matches the path or one of its parent directories.
//! `*` and `?` never match `/`; `**` matches any number of directories (including none);
//! `[...]` classes and `\` escapes work as in Go's `filepath.Match`.

use regex::Regex;

use super::Error;
use lade_executor::glob;

/// Parses `.dockerignore` text into patterns (exceptions keep their leading `!`).
pub fn parse(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let mut line = line.strip_suffix('\r').unwrap_or(line);
        if n == 0 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        if invert {
            p.insert(0, '!');
        }
        out.push(p);
    }
    out
}

/// Go's `path.Clean`: lexical normalisation of a `/`-separated path.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[derive(Debug)]
enum Kind {
    Exact,
    /// `foo/**`: the path starts with the text before the trailing `**`.
    Prefix(String),
    /// `**/foo`: the path ends with the text after the leading `**`.
    Suffix(String),
    Regex(Regex),
}

/// One compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: Kind,
}

impl Pattern {
    /// The cleaned pattern without its `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// `true` for an exception (`!pattern`).
    pub fn is_exception(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..])
            }
            Kind::Regex(r) => r.is_match(path),
        }
    }

    /// The translation moby/patternmatcher performs, including its fast paths.
    fn compile(cleaned: &str) -> Result<Kind, regex::Error> {
        #[derive(PartialEq, Clone, Copy)]
        enum T {
            Exact,
            Prefix,
            Suffix,
            Regex,
        }
        let mut re = String::from("^");
        let mut t = T::Exact;
        let chars: Vec<char> = cleaned.chars().collect();
        let mut i = 0;
        let mut first = true;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            if ch == '*' {
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= chars.len() {
                        if t == T::Exact {
                            t = T::Prefix;
                        } else {
                            re.push_str(".*");
                            t = T::Regex;
                        }
                    } else {
                        re.push_str("(.*/)?");
                        t = T::Regex;
                    }
                    if first {
                        t = T::Suffix;
                    }
                } else {
                    re.push_str("[^/]*");
                    t = T::Regex;
                }
            } else if ch == '?' {
                re.push_str("[^/]");
                t = T::Regex;
            } else if ".+()|{}$".contains(ch) {
                re.push('\\');
                re.push(ch);
            } else if ch == '\\' {
                if let Some(&next) = chars.get(i) {
                    i += 1;
                    re.push('\\');
                    re.push(next);
                    t = T::Regex;
                } else {
                    re.push('\\');
                }
            } else if ch == '[' || ch == ']' {
                re.push(ch);
                t = T::Regex;
            } else {
                re.push(ch);
            }
            first = false;
        }
        Ok(match t {
            T::Exact => Kind::Exact,
            T::Prefix => Kind::Prefix(cleaned[..cleaned.len() - 2].to_string()),
            T::Suffix => Kind::Suffix(cleaned[2..].to_string()),
            T::Regex => {
                re.push('$');
                Kind::Regex(Regex::new(&re)?)
            }
        })
    }
}

/// What a directory's match results tell its children (patternmatcher's `MatchInfo`).
#[derive(Clone, Debug, Default)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of `.dockerignore` patterns.
#[derive(Debug, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles patterns as returned by [`parse`]. Errors on `!` alone and on malformed
    /// patterns, naming the pattern.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, Error> {
        let mut pm = PatternMatcher::default();
        for raw in patterns {
            let p = raw.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(Error::BadIgnorePattern {
                        pattern: raw.as_ref().to_string(),
                        reason: "illegal exclusion pattern \"!\"".into(),
                    });
                }
                exclusion = true;
                pm.exclusions = true;
                p = rest.to_string();
            }
            let bad = |reason: String| Error::BadIgnorePattern {
                pattern: raw.as_ref().to_string(),
                reason,
            };
            glob::validate(&p).map_err(|_| bad("syntax error in pattern".into()))?;
            let kind = Pattern::compile(&p).map_err(|e| bad(e.to_string()))?;
            pm.patterns.push(Pattern {
                cleaned: p,
                exclusion,
                kind,
            });
        }
        Ok(pm)
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// `true` if any pattern is an exception.
    pub fn has_exceptions(&self) -> bool {
        self.exclusions
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `file` (a clean, `/`-separated relative path) is excluded, checking every parent
    /// directory as well (patternmatcher's `MatchesOrParentMatches`).
    pub fn matches_or_parent_matches(&self, file: &str) -> bool {
        self.matches_using_parent_results(file, &MatchInfo::default())
            .0
    }

    /// Whether `file` is excluded, given the [`MatchInfo`] of its parent directory (the default
    /// value means "unknown": parents are checked one by one). Returns the info for `file`'s
    /// own children. Same results as [`PatternMatcher::matches_or_parent_matches`] during a
    /// top-down walk.
    pub fn matches_using_parent_results(
        &self,
        file: &str,
        parent: &MatchInfo,
    ) -> (bool, MatchInfo) {
        let known = parent.parent_matched.len() == self.patterns.len() && !self.patterns.is_empty();
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = known && parent.parent_matched[i];
            if !m {
                if p.exclusion != matched {
                    continue;
                }
                m = p.matches(file);
                if !m && !known {
                    if let Some((dir, _)) = file.rsplit_once('/') {
                        let mut end = 0;
                        for part in dir.split('/') {
                            end += part.len();
                            if p.matches(&dir[..end]) {
                                m = true;
                                break;
                            }
                            end += 1;
                        }
                    }
                }
            }
            info.parent_matched[i] = m;
            if m {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }

    /// During a walk: may anything inside the excluded directory `dir` be re-included?
    /// BuildKit (fsutil) descends into an excluded directory only if some exception contains a
    /// wildcard (it cannot tell, so it looks), or an exception names a path inside `dir`.
    pub fn may_include_inside(&self, dir: &str) -> bool {
        if !self.exclusions {
            return false;
        }
        if !self.only_prefix_exceptions() {
            return true;
        }
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", without_trailing_glob(&p.cleaned)).starts_with(&dir_slash))
    }

    fn only_prefix_exceptions(&self) -> bool {
        !self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            without_trailing_glob(&p.cleaned)
                .chars()
                .any(|c| "*[]?^\\".contains(c))
        })
    }
}

fn without_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_follows_ignorefile_read_all() {
        let text = "\u{feff}test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! \n  # indented hash is a pattern\n./dot/slash\ntrailing/\r\nspaces  \n/\n../up\nx/../y\n\\#literal";
        assert_eq!(
            parse(text),
            vec![
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!",
                "# indented hash is a pattern",
                "dot/slash",
                "trailing",
                "spaces",
                "/",
                "../up",
                "y",
                "\\#literal",
            ]
        );
    }

    #[test]
    fn clean_matches_go() {
        for (i, o) in [
            ("", "."),
            ("a//b", "a/b"),
            ("a/./b/", "a/b"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("./", "."),
            ("/", "/"),
        ] {
            assert_eq!(clean(i), o, "clean({i:?})");
        }
    }

    fn excluded(patterns: &[&str], path: &str) -> bool {
        PatternMatcher::new(patterns)
            .unwrap()
            .matches_or_parent_matches(path)
    }

    /// Derived from docker's documented `.dockerignore` behaviour and patternmatcher's tests.
    #[test]
    fn matching_table() {
        let cases: &[(&[&str], &str, bool)] = &[
            // docs: `*/temp*` excludes names starting with temp in any immediate subdirectory
            (&["*/temp*"], "somedir/temporary.txt", true),
            (&["*/temp*"], "somedir/temp", true),
            (&["*/temp*"], "temporary.txt", false),
            (&["*/temp*"], "a/b/temp", false),
            // docs: `*/*/temp*` two levels below the root
            (&["*/*/temp*"], "somedir/subdir/temporary.txt", true),
            (&["*/*/temp*"], "somedir/temporary.txt", false),
            // docs: `temp?` one character
            (&["temp?"], "tempa", true),
            (&["temp?"], "tempab", false),
            (&["temp?"], "temp", false),
            // `**` any number of directories, including none
            (&["**/*.go"], "main.go", true),
            (&["**/*.go"], "a/b/c/main.go", true),
            (&["**/*.go"], "a/b/c/main.rs", false),
            (&["**/foo"], "foo", true),
            (&["**/foo"], "x/y/foo", true),
            (&["**/foo"], "xfoo", false),
            (&["a/**/b"], "a/b", true),
            (&["a/**/b"], "a/x/y/b", true),
            (&["a/**/b"], "a/x/y/bc", false),
            (&["**"], "anything/at/all", true),
            (&["foo/**"], "foo/x", true),
            (&["foo/**"], "foo/x/y", true),
            (&["foo/**"], "foo", false),
            (&["foo/**/*.txt"], "foo/a.txt", true),
            (&["foo/**/*.txt"], "foo/b/c/a.txt", true),
            // a pattern matching a directory excludes what is inside
            (&["dir"], "dir/file", true),
            (&["dir"], "dir/sub/file", true),
            (&["dir"], "dirx/file", false),
            (&["*/sub"], "a/sub/deep/file", true),
            // trailing `/`, leading `/` and `./` are cleaned away by parse()
            (&["build"], "build", true),
            // exceptions: the last matching pattern wins
            (&["*.md", "!README.md"], "README.md", false),
            (&["*.md", "!README.md"], "CHANGES.md", true),
            (
                &["*.md", "!README*.md", "README-secret.md"],
                "README-secret.md",
                true,
            ),
            (
                &["*.md", "!README*.md", "README-secret.md"],
                "README-foo.md",
                false,
            ),
            (
                &["*.md", "README-secret.md", "!README*.md"],
                "README-secret.md",
                false,
            ),
            (&["vendor", "!vendor/keep.txt"], "vendor/keep.txt", false),
            (&["vendor", "!vendor/keep.txt"], "vendor/other.txt", true),
            (&["docs", "!docs/**/*.md"], "docs/a/b.md", false),
            (&["docs", "!docs/**/*.md"], "docs/a/b.txt", true),
            (&["!keep", "keep"], "keep", true),
            // escaped and special characters
            (&["\\*.txt"], "*.txt", true),
            (&["\\*.txt"], "a.txt", false),
            (&["foo\\[1\\]"], "foo[1]", true),
            (&["foo\\[1\\]"], "foo1", false),
            (&["[ab].txt"], "a.txt", true),
            (&["[ab].txt"], "c.txt", false),
            (&["[^ab].txt"], "c.txt", true),
            (&["a.b"], "axb", false),
            (&["a+b(c)"], "a+b(c)", true),
            (&["a{1}$"], "a{1}$", true),
            (&["\\#literal"], "#literal", true),
            (
                &["# indented hash is a pattern"],
                "# indented hash is a pattern",
                true,
            ),
            // `?` and `*` never cross `/`
            (&["a?b"], "a/b", false),
            (&["a*"], "ab/c", true), // parent `ab` matches
            (&["*"], "x/y", true),
        ];
        for (patterns, path, want) in cases {
            assert_eq!(excluded(patterns, path), *want, "{patterns:?} on {path:?}");
        }
    }

    #[test]
    fn parse_then_match_end_to_end() {
        let pm = PatternMatcher::new(&parse("# comment\n/build/\n./tmp\n!build/keep\n")).unwrap();
        assert!(pm.matches_or_parent_matches("build/x"));
        assert!(!pm.matches_or_parent_matches("build/keep"));
        assert!(pm.matches_or_parent_matches("tmp"));
        assert!(!pm.matches_or_parent_matches("# comment"));
    }

    #[test]
    fn parent_results_agree_with_full_check() {
        let pm = PatternMatcher::new(&["a", "!a/b", "a/b/c", "**/x", "!**/x/keep"]).unwrap();
        let paths = [
            "a", "a/b", "a/b/c", "a/b/c/d", "a/b/d", "q", "q/x", "q/x/keep", "q/x/y",
        ];
        for p in paths {
            // walk top-down carrying the parent's info
            let mut info = MatchInfo::default();
            let mut acc = String::new();
            let mut last = false;
            for part in p.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(part);
                let (m, i) = pm.matches_using_parent_results(&acc, &info);
                last = m;
                info = i;
            }
            assert_eq!(last, pm.matches_or_parent_matches(p), "{p}");
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(PatternMatcher::new(&["!"]).is_err());
        let err = PatternMatcher::new(&["ok", "[z-"]).unwrap_err();
        assert!(err.to_string().contains("[z-"), "{err}");
    }

    #[test]
    fn descending_into_excluded_dirs() {
        let pm = PatternMatcher::new(&["vendor", "node_modules", "!vendor/keep.txt"]).unwrap();
        assert!(pm.may_include_inside("vendor"));
        assert!(!pm.may_include_inside("node_modules"));
        let pm = PatternMatcher::new(&["vendor"]).unwrap();
        assert!(!pm.may_include_inside("vendor"));
        let pm = PatternMatcher::new(&["vendor", "!vendor/sub/*"]).unwrap();
        assert!(pm.may_include_inside("vendor"));
        assert!(pm.may_include_inside("vendor/sub"));
        assert!(!pm.may_include_inside("vendor/other"));
        // a wildcard exception could match anywhere: fsutil walks every excluded directory
        let pm = PatternMatcher::new(&["vendor", "node_modules", "!**/*.keep"]).unwrap();
        assert!(pm.may_include_inside("node_modules"));
    }
}
