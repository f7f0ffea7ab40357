//! Shell-word expansion and word splitting, as BuildKit's shell lexer does it.
//!
//! The solver expands instruction arguments per stage with the environment it has built
//! (ARG and ENV values); the parser itself never expands. Supported forms: `$x`, `${x}`,
//! `${x:-w}`, `${x-w}`, `${x:+w}`, `${x+w}`, `${x:?msg}`, `${x?msg}`, `${x#p}`, `${x##p}`,
//! `${x%p}`, `${x%%p}`, `${x/p/r}`, `${x//p/r}` (glob patterns with `*` and `?`), single and
//! double quotes, and the escape token (`\` or `` ` ``, from the `# escape=` directive).
//!
//! ```
//! use lade_parser::shell::Lexer;
//! let env = [("NAME", "world"), ("EMPTY", "")];
//! let lexer = Lexer::new('\\');
//! assert_eq!(lexer.process_word("hello ${NAME:-x}", &env[..]).unwrap(), "hello world");
//! assert_eq!(lexer.process_words("a \"b c\" $NAME", &env[..]).unwrap(), ["a", "b c", "world"]);
//! let e = lexer.expand("${EMPTY:-$UNSET}", &env[..]).unwrap();
//! assert!(e.matched.contains("EMPTY") && e.unmatched.contains("UNSET"));
//! ```
//!
//! Nesting of `${...}` is limited to [`MAX_NESTING`] levels so that time and stack stay
//! bounded on any input.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::gocompat::{is_digit, is_letter, is_space};

/// Deepest `${...}` nesting accepted before expansion fails.
pub const MAX_NESTING: usize = 128;

/// Largest expansion result, in bytes, beyond the input's own length: nested `${x//p/r}` can
/// otherwise grow polynomially with the nesting depth.
pub const MAX_EXPANSION: usize = 1 << 20;

/// Variables visible to an expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is not set (set-but-empty is `Some("")`).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> Env for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// A list of pairs; a later pair wins over an earlier one with the same name.
impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<T: Env + ?Sized> Env for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// An environment with no variables.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn lookup(&self, _: &str) -> Option<&str> {
        None
    }
}

/// Why an expansion failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ExpandError {
    /// The word being expanded.
    pub word: String,
    /// What went wrong and what was expected (BuildKit's wording where it has one).
    pub message: String,
    /// Byte offset in `word` where the problem was detected.
    pub offset: usize,
}

/// The result of expanding one word.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded text with quotes and escapes removed (BuildKit's `ProcessWord`).
    pub value: String,
    /// The expanded text split into words (BuildKit's `ProcessWords`): unquoted whitespace
    /// separates words, including whitespace that came from a variable's value.
    pub words: Vec<String>,
    /// Names looked up that were set.
    pub matched: BTreeSet<String>,
    /// Names looked up that were not set.
    pub unmatched: BTreeSet<String>,
}

/// The shell-word lexer. Cheap to build; options mirror BuildKit's `shell.Lex` fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer using `escape` (`\` or `` ` ``) as the escape token.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Keep quote characters in the output (BuildKit `RawQuotes`).
    pub fn raw_quotes(mut self, yes: bool) -> Self {
        self.raw_quotes = yes;
        self
    }

    /// Keep escape tokens in the output (BuildKit `RawEscapes`).
    pub fn raw_escapes(mut self, yes: bool) -> Self {
        self.raw_escapes = yes;
        self
    }

    /// Treat quotes as ordinary characters (BuildKit `SkipProcessQuotes`).
    pub fn skip_process_quotes(mut self, yes: bool) -> Self {
        self.skip_process_quotes = yes;
        self
    }

    /// Leave references to unset variables as written (BuildKit `SkipUnsetEnv`).
    pub fn skip_unset_env(mut self, yes: bool) -> Self {
        self.skip_unset_env = yes;
        self
    }

    /// The escape token.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word`, returning the value, the split words and the variables referenced.
    pub fn expand<E: Env + ?Sized>(&self, word: &str, env: &E) -> Result<Expansion, ExpandError> {
        let mut w = ShellWord::new(*self, word, env);
        match w.process_stop_on(None, self.raw_escapes, 0) {
            Ok((value, words)) => Ok(Expansion {
                value,
                words,
                matched: w.matched,
                unmatched: w.unmatched,
            }),
            Err(e) => Err(ExpandError {
                word: word.to_string(),
                message: e.message,
                offset: w.byte_offset(e.at),
            }),
        }
    }

    /// BuildKit's `ProcessWord`: `word` expanded as one string.
    pub fn process_word<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<String, ExpandError> {
        self.expand(word, env).map(|e| e.value)
    }

    /// BuildKit's `ProcessWords`: `word` expanded and split into words.
    pub fn process_words<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Vec<String>, ExpandError> {
        self.expand(word, env).map(|e| e.words)
    }
}

struct Fail {
    message: String,
    at: usize,
}

type R<T> = Result<T, Fail>;

#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if is_space(c) {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct ShellWord<'a, E: Env + ?Sized> {
    lex: Lexer,
    chars: Vec<char>,
    offsets: Vec<usize>,
    pos: usize,
    env: &'a E,
    raw_escapes: bool,
    limit: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a, E: Env + ?Sized> ShellWord<'a, E> {
    fn new(lex: Lexer, word: &str, env: &'a E) -> Self {
        let mut chars = Vec::with_capacity(word.len());
        let mut offsets = Vec::with_capacity(word.len() + 1);
        for (i, c) in word.char_indices() {
            chars.push(c);
            offsets.push(i);
        }
        offsets.push(word.len());
        // Go's text/scanner skips a byte-order mark at the very start.
        let pos = usize::from(chars.first() == Some(&'\u{feff}'));
        ShellWord {
            lex,
            chars,
            offsets,
            pos,
            env,
            raw_escapes: lex.raw_escapes,
            limit: MAX_EXPANSION.saturating_add(word.len()),
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn byte_offset(&self, at: usize) -> usize {
        self.offsets[at.min(self.offsets.len() - 1)]
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Fails once a partial result grows past the expansion limit.
    fn check_len(&self, len: usize) -> R<()> {
        if len > self.limit {
            return self.fail(format!(
                "expansion longer than {} bytes: expected a smaller result",
                self.limit
            ));
        }
        Ok(())
    }

    fn fail<T>(&self, message: impl Into<String>) -> R<T> {
        Err(Fail {
            message: message.into(),
            at: self.pos,
        })
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        depth: usize,
    ) -> R<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let out = self.stop_on_inner(stop, depth);
        self.raw_escapes = saved;
        out
    }

    fn stop_on_inner(&mut self, stop: Option<char>, depth: usize) -> R<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let tmp = self.process_dollar(depth)?;
                    self.check_len(result.len() + tmp.len())?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '\'' if !self.lex.skip_process_quotes => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' if !self.lex.skip_process_quotes => {
                    let tmp = self.process_double_quote(depth)?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.next();
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        // an escape token at the very end is dropped
                        let Some(e) = self.next() else { break };
                        words.add_raw_char(e);
                        result.push(e);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if let Some(s) = stop {
            return self.fail(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> R<String> {
        let mut result = String::new();
        let q = self.next();
        if self.lex.raw_quotes {
            result.extend(q);
        }
        loop {
            match self.next() {
                None => {
                    return self.fail(
                        "unexpected end of statement while looking for matching single-quote",
                    )
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self, depth: usize) -> R<String> {
        let mut result = String::new();
        let q = self.next();
        if self.lex.raw_quotes {
            result.extend(q);
        }
        loop {
            match self.peek() {
                None => {
                    return self.fail(
                        "unexpected end of statement while looking for matching double-quote",
                    )
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar(depth)?;
                    self.check_len(result.len() + v.len())?;
                    result.push_str(&v);
                }
                Some(mut c) => {
                    self.next();
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            result.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.next();
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(c);
                }
            }
        }
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                if !self.matched.contains(name) {
                    self.matched.insert(name.to_string());
                }
                Some(v.to_string())
            }
            None => {
                if !self.unmatched.contains(name) {
                    self.unmatched.insert(name.to_string());
                }
                None
            }
        }
    }

    fn process_dollar(&mut self, depth: usize) -> R<String> {
        let dollar_at = self.pos;
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        if depth >= MAX_NESTING {
            return Err(Fail {
                message: format!(
                    "${{...}} nested more than {MAX_NESTING} levels deep: expected a simpler expression"
                ),
                at: dollar_at,
            });
        }
        self.next(); // '{'
        match self.peek() {
            None => return self.fail("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return self.fail("syntax error: bad substitution"),
            _ => {}
        }
        let name = self.process_name();
        let ch = self.next();
        // Go prints a missing rune (EOF) as U+FFFD
        let mut chs: String = ch.unwrap_or('\u{fffd}').to_string();
        match ch {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let null_is_unset = ch == Some(':');
                let modifier = if null_is_unset {
                    let m = self.next();
                    chs.push(m.unwrap_or('\u{fffd}'));
                    m
                } else {
                    ch
                };
                let raw = matches!(modifier, Some('#' | '%'));
                if null_is_unset && raw {
                    return self.fail(format!("unsupported modifier ({chs}) in substitution"));
                }
                let word = match self.process_stop_on(Some('}'), raw, depth + 1) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return self.fail("syntax error: missing '}'");
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                match modifier {
                    Some('-') => Ok(match value {
                        Some(v) if !(null_is_unset && v.is_empty()) => v,
                        _ => word,
                    }),
                    Some('+') => Ok(match value {
                        Some(v) if !(null_is_unset && v.is_empty()) => word,
                        _ => String::new(),
                    }),
                    Some('?') => match value {
                        None => {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            };
                            self.fail(format!("{name}: {msg}"))
                        }
                        Some(v) if null_is_unset && v.is_empty() => {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            };
                            self.fail(format!("{name}: {msg}"))
                        }
                        Some(v) => Ok(v),
                    },
                    Some(m @ ('%' | '#')) => {
                        let value = value.unwrap_or_default();
                        let (greedy, pattern) = match word.strip_prefix(m) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let out = if m == '%' {
                            trim_suffix(pattern, &value, greedy)
                        } else {
                            trim_prefix(pattern, &value, greedy)
                        };
                        out.map_err(|message| Fail {
                            message,
                            at: self.pos,
                        })
                    }
                    _ => self.fail(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true, depth + 1) {
                    Ok((p, _)) => p,
                    Err(e) => {
                        if self.peek().is_none() {
                            return self.fail("syntax error: missing '/' in ${}");
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true, depth + 1) {
                    Ok((r, _)) => r,
                    Err(e) => {
                        if self.peek().is_none() {
                            return self.fail("syntax error: missing '}'");
                        }
                        return Err(e);
                    }
                };
                let Some(value) = self.get_env(&name) else {
                    if self.lex.skip_unset_env {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return replace(&pattern, "", &replacement, replace_all, self.limit).map_err(
                        |message| Fail {
                            message,
                            at: self.pos,
                        },
                    );
                };
                replace(&pattern, &value, &replacement, replace_all, self.limit).map_err(
                    |message| Fail {
                        message,
                        at: self.pos,
                    },
                )
            }
            _ => self.fail(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_digit(c) {
                while let Some(d) = self.peek().filter(|d| is_digit(*d)) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(c) {
                self.next();
                return c.to_string();
            }
            if !is_letter(c) && !is_digit(c) && c != '_' {
                break;
            }
            self.next();
            name.push(c);
        }
        name
    }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Converts a shell glob (`*`, `?`, `\` escapes; no bracket expressions) to a regex, as BuildKit's
/// `convertShellPatternToRegex` does.
fn pattern_to_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<regex::Regex, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut it = pattern.chars().peekable();
    if it.peek() == Some(&'\u{feff}') {
        it.next();
    }
    while let Some(tok) = it.next() {
        match tok {
            '*' => {
                out.push_str(star);
                continue;
            }
            '?' => {
                out.push('.');
                continue;
            }
            '\\' => {
                // `}` and `/` are escaped only for the ${} syntax
                if matches!(it.peek(), Some('}' | '/')) {
                    continue;
                }
                out.push('\\');
                match it.next() {
                    Some(t @ ('*' | '?' | '\\')) => out.push(t),
                    t => {
                        return Err(format!(
                            "invalid pattern ({pattern}) in substitution: invalid escape '\\{}'",
                            t.unwrap_or('\u{fffd}')
                        ))
                    }
                }
                continue;
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => out.push('\\'),
            _ => {}
        }
        out.push(tok);
    }
    regex::Regex::new(&out).map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re = pattern_to_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern while keeping each `\x` escape pair in order.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            tokens.push(&chars[i..i + 2]);
            i += 2;
        } else {
            tokens.push(&chars[i..i + 1]);
            i += 1;
        }
    }
    tokens.iter().rev().flat_map(|t| t.iter()).collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let rp = reverse_pattern(pattern);
    let rv: String = value.chars().rev().collect();
    let out = trim_prefix(&rp, &rv, greedy)?;
    Ok(out.chars().rev().collect())
}

/// `${x/p/r}` and `${x//p/r}`. Replace-all follows Go's `Regexp.ReplaceAllString`, whose
/// template expands `$0`/`${0}` to the match, other `$name`s to nothing and `$$` to `$`.
fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
    limit: usize,
) -> Result<String, String> {
    let re = pattern_to_regex(pattern, true, false)?;
    if !all {
        return Ok(match re.find(value) {
            Some(m) => format!(
                "{}{}{}",
                &value[..m.start()],
                replacement,
                &value[m.end()..]
            ),
            None => value.to_string(),
        });
    }
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    for m in re.find_iter(value) {
        out.push_str(&value[last..m.start()]);
        go_expand(&mut out, replacement, m.as_str());
        last = m.end();
        if out.len() > limit {
            return Err(format!(
                "expansion longer than {limit} bytes: expected a smaller result"
            ));
        }
    }
    out.push_str(&value[last..]);
    Ok(out)
}

/// Go's `regexp.Expand` for a regex whose only group is the whole match.
fn go_expand(out: &mut String, template: &str, whole: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (name, after) = if let Some(r) = rest.strip_prefix('{') {
            match r.find('}') {
                Some(end)
                    if end > 0
                        && r[..end]
                            .chars()
                            .all(|c| c == '_' || is_letter(c) || is_digit(c)) =>
                {
                    (&r[..end], &r[end + 1..])
                }
                _ => {
                    out.push('$');
                    continue;
                }
            }
        } else {
            let end = rest
                .char_indices()
                .find(|(_, c)| !(*c == '_' || is_letter(*c) || is_digit(*c)))
                .map(|(i, _)| i)
                .unwrap_or(rest.len());
            if end == 0 {
                out.push('$');
                continue;
            }
            (&rest[..end], &rest[end..])
        };
        rest = after;
        // Go: a number is a group index (no leading zeros, < 1e8); only group 0 exists here.
        if name == "0" {
            out.push_str(whole);
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ]
    }

    fn w(s: &str) -> Result<String, ExpandError> {
        Lexer::new('\\').process_word(s, &env()[..])
    }

    #[test]
    fn basics() {
        assert_eq!(w("he${PWD:-000}xx").unwrap(), "he/homexx");
        assert_eq!(w("he${XXX:-\\${PWD}z}xx").unwrap(), "he${PWDz}xx");
        assert!(w("he${XXX:?}").is_err());
        assert_eq!(w("he${NULL?}").unwrap(), "he");
        assert_eq!(w("${NULL-x}${NULL:-y}").unwrap(), "y");
        assert_eq!(w("${NULL+x}${NULL:+y}${PWD+z}").unwrap(), "xz");
        let e = w("${XXX?custom message}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to process \"${XXX?custom message}\": XXX: custom message"
        );
    }

    #[test]
    fn patterns() {
        let env = [("x", "abcabc"), ("p", "/usr/local/bin"), ("n", "a\nb")];
        let l = Lexer::new('\\');
        let e = |s: &str| l.process_word(s, &env[..]).unwrap();
        assert_eq!(e("${x#a*}"), "bcabc");
        assert_eq!(e("${x##a*}"), "");
        assert_eq!(e("${x%b*}"), "abca");
        assert_eq!(e("${x%%b*}"), "a");
        assert_eq!(e("${x#?b}"), "cabc");
        assert_eq!(e("${p##*/}"), "bin");
        assert_eq!(e("${p%/*}"), "/usr/local");
        assert_eq!(e("${x/b/X}"), "aXcabc");
        assert_eq!(e("${x//b/X}"), "aXcaXc");
        assert_eq!(e("${x//b*/X}"), "aX");
        assert_eq!(e("${x/b\\/x/X}"), "abcabc");
        assert_eq!(e("${x//[.]/X}"), "abcabc");
        assert_eq!(e("${x#\\*}"), "abcabc");
        // `*` does not cross a newline, as in Go's regexp
        assert_eq!(e("${n#*}"), "a\nb");
        assert_eq!(e("${n##a*}"), "\nb");
        assert!(l.process_word("${x:#a}", &env[..]).is_err());
        assert!(l.process_word("${x#\\a}", &env[..]).is_err());
        assert!(l.process_word("${x/a}", &env[..]).is_err());
    }

    #[test]
    fn skip_unset_keeps_text() {
        let l = Lexer::new('\\').skip_unset_env(true);
        assert_eq!(
            l.process_word("$A ${B} ${C:-x}", &EmptyEnv).unwrap(),
            "$A ${B} ${C:-x}"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "${a:-".repeat(MAX_NESTING + 5) + &"}".repeat(MAX_NESTING + 5);
        let err = Lexer::new('\\').process_word(&deep, &EmptyEnv).unwrap_err();
        assert!(err.message.contains("nested"), "{err}");
        let ok = "${a:-".repeat(20) + "x" + &"}".repeat(20);
        assert_eq!(Lexer::new('\\').process_word(&ok, &EmptyEnv).unwrap(), "x");
    }

    #[test]
    fn output_is_bounded() {
        let x = "a".repeat(100);
        let env = [("x", x.as_str())];
        let bomb = "${x//a/".repeat(5) + "zz" + &"}".repeat(5);
        let err = Lexer::new('\\').process_word(&bomb, &env[..]).unwrap_err();
        assert!(err.message.contains("expansion longer"), "{err}");
    }

    #[test]
    fn words_and_references() {
        let env = [("space", "abc  def"), ("set", "1")];
        let e = Lexer::new('\\')
            .expand("x${space}y \"$set\" $unset", &env[..])
            .unwrap();
        assert_eq!(e.words, ["xabc", "defy", "1"]);
        assert_eq!(e.matched.iter().collect::<Vec<_>>(), ["set", "space"]);
        assert_eq!(e.unmatched.iter().collect::<Vec<_>>(), ["unset"]);
        // a default that is itself split keeps the text before it in the same word
        let e = Lexer::new('\\')
            .expand("pre${no:-a b}post", &EmptyEnv)
            .unwrap();
        assert_eq!(e.words, ["prea", "bpost"]);
    }

    #[test]
    fn backtick_escape() {
        let l = Lexer::new('`');
        assert_eq!(l.process_word("a`$b\\c", &EmptyEnv).unwrap(), "a$b\\c");
    }

    #[test]
    fn go_expand_template() {
        let mut s = String::new();
        go_expand(&mut s, "[$0|${0}|$1|$$|$|${x|$a-b]", "M");
        assert_eq!(s, "[M|M||$|$|${x|-b]");
    }
}
