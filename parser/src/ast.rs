//! The raw node layer: Dockerfile text to BuildKit-like nodes (keyword, flags, arguments,
//! heredocs, original text, span, start/end line), and BuildKit's AST dump.
//!
//! This layer reproduces BuildKit's `parser.Parse` line by line: parser directives, escape
//! tokens, line continuations (with comments and blank lines inside them), the per-instruction
//! argument rules (JSON form with its fallback, `k=v` lists, whitespace lists, ONBUILD) and
//! heredocs. Unlike BuildKit it does not stop at the first problem: a line that fails is
//! reported and skipped, and parsing goes on.
//!
//! Semantic checks (which flags an instruction accepts, argument counts, ...) belong to
//! [`crate::instruction`].

use nom::bytes::complete::{tag, take_while};
use nom::character::complete::{char as nom_char, satisfy};
use nom::combinator::{opt, recognize};
use nom::sequence::pair;
use nom::{IResult, Parser};

use crate::diagnostic::Diagnostic;
use crate::gocompat::{
    go_quote, go_quote_slice, is_space, is_space_byte, is_token_space, to_lower, trim_space,
};
use crate::json::{parse_string_array, JsonArray};
use crate::shell::{EmptyEnv, Lexer};
use crate::span::{Span, Spanned, Word};

/// How deeply ONBUILD may nest inside ONBUILD in the raw layer (the instruction layer then
/// rejects any nesting); keeps recursion bounded.
pub const MAX_ONBUILD_DEPTH: usize = 32;

/// The default escape token.
pub const DEFAULT_ESCAPE: char = '\\';

/// A parsed Dockerfile at the raw node level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ast {
    /// Instructions in file order.
    pub nodes: Vec<Node>,
    /// Parser directives found at the top of the file (`syntax`, `escape`, `check`).
    pub directives: Vec<Directive>,
    /// The escape token in force (`\` unless `# escape=`` ` ``).
    pub escape_token: char,
}

impl Ast {
    /// BuildKit's AST dump (`Node.Dump()` plus a final newline): one `(keyword ...)` line per
    /// instruction, byte-identical to BuildKit's `testfiles/*/result`.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push('(');
            out.push_str(&n.dump());
            out.push_str(")\n");
        }
        out
    }

    /// The directive called `name` (lower case), if present.
    pub fn directive(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }
}

/// A parser directive such as `# syntax=docker/dockerfile:1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// Lower-case name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// The whole directive line.
    pub span: Span,
    /// 1-based line number.
    pub line: usize,
}

/// A here-document attached to a RUN, COPY or ADD line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF` for `<<"EOF"`); for COPY/ADD also the file name.
    pub name: String,
    /// File descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u64,
    /// Whether `$VARS` in the content are expanded (false when the delimiter was quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from every content line.
    pub chomp: bool,
    /// The lines between the marker and the terminator, as written (line endings kept, tabs
    /// not stripped; see [`Heredoc::text`]).
    pub content: String,
    /// The content lines and the terminator line.
    pub span: Span,
    /// The `<<EOF` marker on the instruction line.
    pub marker_span: Span,
}

impl Heredoc {
    /// The content with leading tabs removed from each line when the heredoc is `<<-`.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        if !self.chomp {
            return std::borrow::Cow::Borrowed(&self.content);
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        std::borrow::Cow::Owned(out)
    }
}

/// One instruction, as BuildKit's parser node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`, ...). [`Node::command`] gives it lower-cased.
    pub keyword: Word,
    /// Flags in BuildKit's raw form (`--from=build`, `--link`), in order, with spans.
    pub flags: Vec<Word>,
    /// Arguments after BuildKit's per-instruction rules (one shell-form string, JSON elements,
    /// whitespace-separated words, `k`,`v`,`sep` triples for ENV/LABEL, ...).
    pub args: Vec<Word>,
    /// The arguments were written in JSON (exec) form.
    pub json: bool,
    /// The instruction wrapped by ONBUILD.
    pub child: Option<Box<Node>>,
    /// Heredocs whose content follows this instruction.
    pub heredocs: Vec<Heredoc>,
    /// The logical line (continuations joined, comments inside removed), as BuildKit keeps it.
    pub original: String,
    /// The whole instruction in the source, heredoc bodies included.
    pub span: Span,
    /// 1-based line where the instruction starts.
    pub start_line: usize,
    /// 1-based line where it ends (after continuation lines and heredocs).
    pub end_line: usize,
    /// Comment lines directly above the instruction (without `#`).
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword in lower case (`run`, `copy`, ...).
    pub fn command(&self) -> String {
        to_lower(&self.keyword.value)
    }

    /// BuildKit's `Node.Dump()` for this instruction (without the surrounding parentheses).
    pub fn dump(&self) -> String {
        let mut s = to_lower(&self.keyword.value);
        if !self.flags.is_empty() {
            s.push(' ');
            s.push_str(&go_quote_slice(self.flags.iter().map(|f| f.value.as_str())));
        }
        if let Some(child) = &self.child {
            s.push_str(" (");
            s.push_str(&child.dump());
            s.push(')');
        } else {
            for a in &self.args {
                s.push(' ');
                s.push_str(&go_quote(&a.value));
            }
        }
        trim_space(&s).to_string()
    }
}

/// Parses Dockerfile text into raw nodes only (BuildKit's `parser.Parse`), with every problem
/// found: `errors` is empty exactly when BuildKit's parser accepts the text (see the crate
/// docs for the documented differences). Never panics, no IO.
pub fn parse_ast(text: &str) -> crate::Parsed<Ast> {
    let (value, errors, warnings) = parse_ast_inner(text);
    crate::Parsed {
        value,
        errors,
        warnings,
    }
}

pub(crate) fn parse_ast_inner(text: &str) -> (Ast, Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut p = RawParser {
        text,
        lines: Lines { text, pos: 0 },
        escape: DEFAULT_ESCAPE,
        dirs: DirectiveState::default(),
        ast: Ast {
            escape_token: DEFAULT_ESCAPE,
            ..Ast::default()
        },
        errors: Vec::new(),
        warnings: Vec::new(),
        line_no: 0,
    };
    p.run();
    p.ast.escape_token = p.escape;
    (p.ast, p.errors, p.warnings)
}

#[derive(Clone, Copy, Debug)]
struct PhysLine {
    /// First byte of the line (after the BOM on the first line).
    start: usize,
    /// End of the content: trailing `\r`/`\n` bytes excluded.
    content_end: usize,
    /// End including the line ending.
    end: usize,
}

struct Lines<'a> {
    text: &'a str,
    pos: usize,
}

impl Iterator for Lines<'_> {
    type Item = PhysLine;
    fn next(&mut self) -> Option<PhysLine> {
        let bytes = self.text.as_bytes();
        if self.pos >= bytes.len() {
            return None;
        }
        let mut start = self.pos;
        if start == 0 && self.text.starts_with('\u{feff}') {
            start = 3;
        }
        let end = match memchr_newline(&bytes[self.pos..]) {
            Some(i) => self.pos + i + 1,
            None => bytes.len(),
        };
        let mut content_end = end;
        while content_end > start && matches!(bytes[content_end - 1], b'\r' | b'\n') {
            content_end -= 1;
        }
        self.pos = end;
        Some(PhysLine {
            start,
            content_end,
            end,
        })
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// A logical line made of segments of physical lines, with a map back to source offsets.
#[derive(Default)]
struct Joined {
    text: String,
    /// (offset in `text`, offset in the source) for each segment start.
    segs: Vec<(usize, usize)>,
}

impl Joined {
    fn push(&mut self, s: &str, src_start: usize) {
        self.segs.push((self.text.len(), src_start));
        self.text.push_str(s);
    }

    fn src_start(&self, off: usize) -> usize {
        let i = self.segs.partition_point(|(j, _)| *j <= off);
        match i.checked_sub(1).and_then(|i| self.segs.get(i)) {
            Some((j, s)) => s + (off - j),
            None => 0,
        }
    }

    fn src_end(&self, off: usize) -> usize {
        let i = self.segs.partition_point(|(j, _)| *j < off);
        match i.checked_sub(1).and_then(|i| self.segs.get(i)) {
            Some((j, s)) => s + (off - j),
            None => self.src_start(off),
        }
    }

    fn span(&self, start: usize, end: usize) -> Span {
        if start >= end {
            let s = self.src_start(start);
            return Span::new(s, s);
        }
        Span::new(self.src_start(start), self.src_end(end))
    }
}

#[derive(Default)]
struct DirectiveState {
    done: bool,
    seen: Vec<String>,
}

/// `\s` of Go's RE2: `[\t\n\f\r ]`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

fn directive_key(i: &str) -> IResult<&str, &str> {
    let (i, key) = recognize(pair(
        satisfy(|c: char| c.is_ascii_alphabetic()),
        take_while(|c: char| c.is_ascii_alphanumeric()),
    ))
    .parse(i)?;
    let (i, _) = (take_while(is_re_space), nom_char('=')).parse(i)?;
    Ok((i, key))
}

/// Matches BuildKit's directive regex `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (after the
/// `#` and Unicode left trim): returns the key and value.
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches(is_space);
    let (after_eq, key) = directive_key(rest).ok()?;
    let value = after_eq.trim_matches(is_re_space);
    if !value.is_empty() {
        return Some((key, value));
    }
    // `(.+?)` must take one character: with only spaces after `=`, it takes the last one
    let last = after_eq.chars().last()?;
    Some((key, &after_eq[after_eq.len() - last.len_utf8()..]))
}

/// Parses `<digits><<[-]word` (BuildKit's `^(\d*)<<(-?)([^<]*)$`).
fn heredoc_marker(i: &str) -> IResult<&str, (&str, bool, &str)> {
    let (i, fd) = take_while(|c: char| c.is_ascii_digit()).parse(i)?;
    let (i, _) = tag("<<").parse(i)?;
    let (i, dash) = opt(nom_char('-')).parse(i)?;
    let (i, rest) = take_while(|c: char| c != '<').parse(i)?;
    Ok((i, (fd, dash.is_some(), rest)))
}

/// What BuildKit's `ParseHeredoc` makes of one word: `Ok(None)` when it is not a heredoc marker.
pub fn parse_heredoc_word(word: &str) -> Result<Option<(String, u64, bool, bool)>, String> {
    let Ok((remaining, (fd, chomp, rest))) = heredoc_marker(word) else {
        return Ok(None);
    };
    if !remaining.is_empty() || rest.is_empty() {
        return Ok(None);
    }
    // ParseUint errors are ignored by BuildKit: empty -> 0, overflow -> max
    let fd = if fd.is_empty() {
        0
    } else {
        fd.parse::<u64>().unwrap_or(u64::MAX)
    };
    let lex = Lexer::new('\\').skip_unset_env(true);
    let words = lex
        .process_words(rest, &EmptyEnv)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = lex
        .raw_quotes(true)
        .process_words(rest, &EmptyEnv)
        .map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = quotes(&words[0]) == quotes(&raw[0]);
    Ok(Some((words[0].clone(), fd, expand, chomp)))
}

/// Arguments produced by one of BuildKit's line parsers, offsets relative to the argument text.
#[derive(Default)]
struct Parsed {
    args: Vec<(String, usize, usize)>,
    json: bool,
    child: Option<Node>,
}

struct RawParser<'a> {
    text: &'a str,
    lines: Lines<'a>,
    escape: char,
    dirs: DirectiveState,
    ast: Ast,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    line_no: usize,
}

impl<'a> RawParser<'a> {
    fn content(&self, l: PhysLine) -> &'a str {
        let text: &'a str = self.text;
        text.get(l.start..l.content_end).unwrap_or("")
    }

    /// BuildKit's `possibleParserDirective` on one (trimmed) line.
    fn directive(&mut self, token: &str, token_start: usize, line: usize) {
        if self.dirs.done {
            return;
        }
        let Some((key, value)) = match_directive(token) else {
            self.dirs.done = true;
            return;
        };
        let name = key.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.dirs.done = true;
            return;
        }
        let span = Span::new(token_start, token_start + token.len());
        if self.dirs.seen.contains(&name) {
            self.errors.push(
                Diagnostic::new(
                    span,
                    format!("only one {name} parser directive can be used: expected each directive at most once"),
                ),
            );
            return;
        }
        self.dirs.seen.push(name.clone());
        if name == "escape" {
            match value {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                _ => {
                    let vstart = token_start + (value.as_ptr() as usize - token.as_ptr() as usize);
                    self.errors.push(Diagnostic::new(
                        Span::new(vstart, vstart + value.len()),
                        format!("invalid escape token '{value}' does not match ` or \\: expected a backslash or a backtick"),
                    ));
                }
            }
        }
        self.ast.directives.push(Directive {
            name,
            value: value.to_string(),
            span,
            line,
        });
    }

    fn run(&mut self) {
        let mut comments: Vec<String> = Vec::new();
        let mut saw_instruction = false;
        while let Some(pl) = self.lines.next() {
            let content = self.content(pl);
            let trimmed = content.trim_start_matches(is_space);
            let tstart = pl.start + (content.len() - trimmed.len());
            if let Some(c) = trimmed.strip_prefix('#') {
                let c = trim_space(c);
                if !c.is_empty() {
                    comments.push(c.to_string());
                }
            }
            self.line_no += 1;
            self.directive(trimmed, tstart, self.line_no);
            let token = if trimmed.starts_with('#') {
                ""
            } else {
                trimmed
            };
            let start_line = self.line_no;
            let (seg, mut is_end) = trim_continuation(token, self.escape);
            if is_end && seg.is_empty() {
                continue;
            }
            saw_instruction = true;
            let mut joined = Joined::default();
            joined.push(seg, tstart);
            let mut last_end = pl.content_end;
            let mut empty_line: Option<Span> = None;
            while !is_end {
                let Some(cl) = self.lines.next() else { break };
                let ccontent = self.content(cl);
                self.line_no += 1;
                self.directive(ccontent, cl.start, self.line_no);
                let ctrim = ccontent.trim_start_matches(is_space);
                if ctrim.starts_with('#') {
                    continue;
                }
                if ctrim.is_empty() {
                    empty_line.get_or_insert(Span::new(cl.start, cl.content_end));
                    continue;
                }
                let (seg, end) = trim_continuation(ccontent, self.escape);
                is_end = end;
                joined.push(seg, cl.start);
                last_end = cl.content_end;
            }
            if let Some(span) = empty_line {
                self.warnings.push(
                    Diagnostic::new(span, "empty continuation line: expected the instruction to continue here")
                        .with_help("remove the empty line or the escape character before it; empty continuation lines will become errors in a future release"),
                );
            }
            let first_line_span = Span::new(tstart, pl.content_end);
            let mut node = match node_from_line(&joined, 0, &joined.text, self.escape, 0) {
                Ok(n) => n,
                Err(e) => {
                    self.errors.push(e);
                    comments.clear();
                    continue;
                }
            };
            node.comments = std::mem::take(&mut comments);
            node.start_line = start_line;
            if can_contain_heredoc(&node) {
                last_end = self.read_heredocs(&mut node, &joined, last_end, first_line_span);
            }
            node.end_line = self.line_no;
            node.span = Span::new(tstart, last_end.max(tstart));
            self.ast.nodes.push(node);
        }
        if !saw_instruction {
            let end = self.text.len();
            self.errors.push(Diagnostic::new(
                Span::empty(end),
                "file with no instructions: expected at least one instruction such as FROM",
            ));
        }
    }

    /// Reads the bodies of the heredocs named on the instruction line; returns the new end of
    /// the instruction.
    fn read_heredocs(
        &mut self,
        node: &mut Node,
        joined: &Joined,
        mut last_end: usize,
        first_line: Span,
    ) -> usize {
        let line = &joined.text;
        if !line.contains("<<") {
            return last_end;
        }
        let lex = Lexer::new('\\')
            .raw_quotes(true)
            .raw_escapes(true)
            .skip_unset_env(true);
        let Ok(words) = lex.process_words(line, &EmptyEnv) else {
            return last_end;
        };
        let mut search_from = 0;
        for word in words {
            let marker = match parse_heredoc_word(&word) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(msg) => {
                    self.errors.push(Diagnostic::new(
                        first_line,
                        format!("invalid heredoc marker {word:?}: {msg}"),
                    ));
                    continue;
                }
            };
            let (name, fd, expand, chomp) = marker;
            let marker_span = match line[search_from.min(line.len())..].find("<<") {
                Some(i) => {
                    let s = search_from + i;
                    let e = line[s..]
                        .find(is_space)
                        .map(|j| s + j)
                        .unwrap_or(line.len());
                    search_from = s + 2;
                    joined.span(s, e)
                }
                None => first_line,
            };
            let body_start = self.lines.pos;
            let mut content = String::new();
            let mut terminated = false;
            while let Some(hl) = self.lines.next() {
                self.line_no += 1;
                let mut candidate = self.content(hl);
                if chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                last_end = hl.content_end;
                if candidate == name {
                    terminated = true;
                    break;
                }
                content.push_str(self.text.get(hl.start..hl.end).unwrap_or(""));
            }
            if !terminated {
                self.errors.push(
                    Diagnostic::new(
                        marker_span,
                        format!("unterminated heredoc: expected a line `{name}` to end the heredoc started here"),
                    ),
                );
            }
            node.heredocs.push(Heredoc {
                name,
                fd,
                expand,
                chomp,
                content,
                span: Span::new(body_start.min(last_end), last_end),
                marker_span,
            });
        }
        last_end
    }
}

/// BuildKit's `trimContinuationCharacter`: strips a trailing escape token (plus spaces/tabs)
/// unless it is itself escaped; returns the text and whether the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    let Some(before) = trimmed.strip_suffix(escape) else {
        return (line, true);
    };
    match before.chars().last() {
        None => ("", false),
        Some(c) if c == escape => (line, true),
        Some(_) => (before, false),
    }
}

fn can_contain_heredoc(node: &Node) -> bool {
    let n = match (&node.child, node.command().as_str()) {
        (Some(child), "onbuild") => child,
        _ => node,
    };
    matches!(n.command().as_str(), "run" | "copy" | "add") && !n.json
}

/// Splits BuildKit-style on `[\t\v\f\r ]+`; offsets relative to `s`.
fn split_token_space(s: &str) -> Vec<(String, usize, usize)> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut piece_start = 0;
    let mut in_sep = false;
    let mut sep_start = 0;
    for (i, c) in s.char_indices() {
        if is_token_space(c) {
            if !in_sep {
                in_sep = true;
                sep_start = i;
            }
        } else if in_sep {
            out.push((
                s[piece_start..sep_start].to_string(),
                piece_start,
                sep_start,
            ));
            piece_start = i;
            in_sep = false;
        }
    }
    let end = if in_sep { sep_start } else { s.len() };
    out.push((s[piece_start..end].to_string(), piece_start, end));
    if in_sep {
        out.push((String::new(), s.len(), s.len()));
    }
    out
}

/// BuildKit's `parseWords`: words split on Unicode whitespace, quotes and escapes kept.
fn parse_words(rest: &str, escape: char) -> Vec<(String, usize, usize)> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let cs: Vec<(usize, char)> = rest.char_indices().collect();
    let n = cs.len();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut start = 0;
    let mut i = 0;
    while i <= n {
        let at_end = i == n;
        let (pos, mut ch) = if at_end { (rest.len(), '\0') } else { cs[i] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                i += 1;
                continue;
            }
            phase = Phase::Word;
            start = pos;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push((std::mem::take(&mut word), start, rest.len()));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push((std::mem::take(&mut word), start, pos));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == n {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = cs[i].1;
            }
            word.push(ch);
            i += 1;
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == n {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            word.push(ch);
            ch = cs[i].1;
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// BuildKit's `extractBuilderFlags` (byte-wise, `\` escapes, quotes): returns the offset where
/// the arguments start and the flags with their offsets.
fn extract_flags(line: &str) -> (usize, Vec<(String, usize, usize)>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let mut words: Vec<(String, usize, usize)> = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut start = 0;
    let finish = |w: &mut Vec<u8>| -> String {
        let w = std::mem::take(w);
        String::from_utf8(w).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    };
    let mut pos = 0;
    while pos <= b.len() {
        let at_end = pos == b.len();
        let ch = if at_end { 0 } else { b[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space_byte(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (pos, words);
            }
            phase = Phase::Word;
            start = pos;
        }
        if at_end {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                let w = finish(&mut word);
                words.push((w, start, b.len()));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space_byte(ch) {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (pos, words);
                }
                if blank_ok || !word.is_empty() {
                    let w = finish(&mut word);
                    words.push((w, start, pos));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if c == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if c == b'\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = b[pos];
        }
        word.push(c);
        pos += 1;
    }
    (b.len(), words)
}

fn trim_space_offset(s: &str) -> (usize, &str) {
    let left = s.trim_start_matches(is_space);
    let off = s.len() - left.len();
    (off, left.trim_end_matches(is_space))
}

fn parse_json(rest: &str) -> Result<Option<Parsed>, (usize, usize)> {
    let (off, _) = trim_space_offset(rest);
    let t = &rest[off..];
    if !t.starts_with('[') {
        return Ok(None);
    }
    match parse_string_array(t) {
        JsonArray::NotJson => Ok(None),
        JsonArray::NotStringArray { start, end } => Err((off + start, off + end)),
        JsonArray::Strings(v) => Ok(Some(Parsed {
            args: v
                .into_iter()
                .map(|(s, a, b)| (s, off + a, off + b))
                .collect(),
            json: true,
            child: None,
        })),
    }
}

/// Builds a node from a logical line (`line` starts at `base` in `joined.text`).
fn node_from_line(
    joined: &Joined,
    base: usize,
    line: &str,
    escape: char,
    depth: usize,
) -> Result<Node, Diagnostic> {
    let span = |s: usize, e: usize| joined.span(base + s, base + e);
    let (toff, t) = trim_space_offset(line);
    let cmd_end = t.find(is_token_space).unwrap_or(t.len());
    let cmd = &t[..cmd_end];
    let keyword = Spanned::new(cmd.to_string(), span(toff, toff + cmd_end));
    let mut flags = Vec::new();
    let mut args_off = toff + t.len();
    let mut args_text = "";
    if cmd_end < t.len() {
        let rest_rel = t[cmd_end..]
            .find(|c: char| !is_token_space(c))
            .map(|i| cmd_end + i)
            .unwrap_or(t.len());
        let rest = &t[rest_rel..];
        let rest_off = toff + rest_rel;
        let (astart, fl) = extract_flags(rest);
        flags = fl
            .into_iter()
            .map(|(f, s, e)| Spanned::new(f, span(rest_off + s, rest_off + e)))
            .collect();
        let (o, a) = trim_space_offset(&rest[astart..]);
        args_off = rest_off + astart + o;
        args_text = a;
    }
    let lower = to_lower(cmd);
    let not_string_array = |(s, e): (usize, usize)| {
        Diagnostic::new(
            span(args_off + s, args_off + e),
            format!(
                "{}: when using JSON array syntax, arrays must be comprised of strings only: expected [\"executable\", \"arg\", ...]",
                cmd.to_uppercase()
            ),
        )
    };
    let parsed: Parsed = match lower.as_str() {
        "add" | "copy" | "volume" => match parse_json(args_text).map_err(not_string_array)? {
            Some(p) => p,
            None => Parsed {
                args: split_token_space(args_text),
                ..Parsed::default()
            },
        },
        "cmd" | "entrypoint" | "run" | "shell" => {
            if args_text.is_empty() {
                Parsed::default()
            } else {
                match parse_json(args_text).map_err(not_string_array)? {
                    Some(p) => p,
                    None => Parsed {
                        args: vec![(args_text.to_string(), 0, args_text.len())],
                        ..Parsed::default()
                    },
                }
            }
        }
        "arg" => Parsed {
            args: parse_words(args_text, escape),
            ..Parsed::default()
        },
        "env" | "label" => parse_name_val(args_text, &cmd.to_uppercase(), escape)
            .map_err(|(m, s, e)| Diagnostic::new(span(args_off + s, args_off + e), m))?,
        "expose" | "from" => Parsed {
            args: split_token_space(args_text),
            ..Parsed::default()
        },
        "healthcheck" => parse_health(args_text).map_err(not_string_array)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if args_text.is_empty() {
                Parsed::default()
            } else {
                Parsed {
                    args: vec![(args_text.to_string(), 0, args_text.len())],
                    ..Parsed::default()
                }
            }
        }
        "onbuild" => {
            if args_text.is_empty() {
                Parsed::default()
            } else if depth + 1 >= MAX_ONBUILD_DEPTH {
                return Err(Diagnostic::new(
                    span(args_off, args_off + args_text.len()),
                    format!("ONBUILD nested more than {MAX_ONBUILD_DEPTH} levels deep: expected a single instruction after ONBUILD"),
                ));
            } else {
                let child = node_from_line(joined, base + args_off, args_text, escape, depth + 1)?;
                Parsed {
                    child: Some(child),
                    ..Parsed::default()
                }
            }
        }
        // unknown instructions keep one empty argument, as BuildKit's parseIgnore does
        _ => Parsed {
            args: vec![(String::new(), 0, 0)],
            ..Parsed::default()
        },
    };
    let args_abs = |s: usize, e: usize| span(args_off + s, args_off + e);
    let args = parsed
        .args
        .into_iter()
        .map(|(v, s, e)| Spanned::new(v, args_abs(s, e)))
        .collect();
    let whole = span(toff, toff + t.len());
    Ok(Node {
        keyword,
        flags,
        args,
        json: parsed.json,
        child: parsed.child.map(Box::new),
        heredocs: Vec::new(),
        original: line.to_string(),
        span: whole,
        start_line: 0,
        end_line: 0,
        comments: Vec::new(),
    })
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `k=v k2=v2` or the legacy `k v`; produces
/// `key`, `value`, `sep` triples (`sep` is `=` or empty for the legacy form).
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Parsed, (String, usize, usize)> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Parsed::default());
    };
    if !first.0.contains('=') {
        let parts = split_token_space_n2(rest);
        let Some((k, v)) = parts else {
            return Err((
                format!("{key} must have two arguments: expected `{key} name=value` (or the legacy `{key} name value`)"),
                0,
                rest.len(),
            ));
        };
        return Ok(Parsed {
            args: vec![k, v, (String::new(), rest.len(), rest.len())],
            ..Parsed::default()
        });
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for (w, s, e) in words {
        let Some(eq) = w.find('=') else {
            return Err((
                format!("syntax error - can't find = in {w:?}: expected {key} arguments of the form name=value"),
                s,
                e,
            ));
        };
        let value = w[eq + 1..].to_string();
        args.push((w[..eq].to_string(), s, s + eq));
        args.push((value, (s + eq + 1).min(e), e));
        args.push(("=".to_string(), s + eq, s + eq + 1));
    }
    Ok(Parsed {
        args,
        ..Parsed::default()
    })
}

/// `reWhitespace.Split(rest, 2)`: the text before the first `[\t\v\f\r ]+` run and after it.
#[allow(clippy::type_complexity)]
fn split_token_space_n2(rest: &str) -> Option<((String, usize, usize), (String, usize, usize))> {
    let i = rest.find(is_token_space)?;
    let j = rest[i..]
        .find(|c: char| !is_token_space(c))
        .map(|j| i + j)
        .unwrap_or(rest.len());
    Some((
        (rest[..i].to_string(), 0, i),
        (rest[j..].to_string(), j, rest.len()),
    ))
}

/// BuildKit's `parseHealthConfig`: the type word, then the rest as for CMD.
fn parse_health(rest: &str) -> Result<Parsed, (usize, usize)> {
    let b = rest.as_bytes();
    let sep = b.iter().position(|c| is_space_byte(*c)).unwrap_or(b.len());
    if sep == 0 {
        return Ok(Parsed::default());
    }
    let next = b[sep..]
        .iter()
        .position(|c| !is_space_byte(*c))
        .map(|i| sep + i)
        .unwrap_or(b.len());
    let typ = (rest[..sep].to_string(), 0, sep);
    let cmd = &rest[next..];
    let mut out = Parsed {
        args: vec![typ],
        ..Parsed::default()
    };
    if cmd.is_empty() {
        return Ok(out);
    }
    match parse_json(cmd).map_err(|(s, e)| (next + s, next + e))? {
        Some(p) => {
            out.json = true;
            out.args
                .extend(p.args.into_iter().map(|(v, s, e)| (v, next + s, next + e)));
        }
        None => out.args.push((cmd.to_string(), next, rest.len())),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(text: &str) -> String {
        let p = parse_ast(text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p.value.dump()
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\ \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("a`", '`'), ("a", false));
        assert_eq!(trim_continuation("a\\", '`'), ("a\\", true));
    }

    #[test]
    fn directives_regex() {
        assert_eq!(match_directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(match_directive("#escape = ` "), Some(("escape", "`")));
        assert_eq!(match_directive("# syntax=  "), Some(("syntax", " ")));
        assert_eq!(match_directive("# syntax="), None);
        assert_eq!(match_directive("# 1x=y"), None);
        assert_eq!(match_directive("# Comment here"), None);
    }

    #[test]
    fn flags_extraction() {
        let (a, f) = extract_flags("--from=x --link foo bar");
        assert_eq!(a, 16);
        assert_eq!(
            f.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["--from=x", "--link"]
        );
        let (a, f) = extract_flags("--a=\"b c\" -- --not-a-flag");
        assert_eq!(f[0].0, "--a=b c");
        assert_eq!(&"--a=\"b c\" -- --not-a-flag"[a..].trim(), &"--not-a-flag");
        let (a, f) = extract_flags("--x --");
        assert_eq!((a, f.len()), (6, 1));
    }

    #[test]
    fn spans_map_through_continuations() {
        let text = "FROM a\nRUN --mount=type=cache \\\n  echo hi\n";
        let p = parse_ast(text);
        assert!(p.errors.is_empty());
        let run = &p.value.nodes[1];
        assert_eq!(&text[run.flags[0].span.range()], "--mount=type=cache");
        assert_eq!(&text[run.args[0].span.range()], "echo hi");
        assert_eq!((run.start_line, run.end_line), (2, 3));
        assert_eq!(
            &text[run.span.range()],
            "RUN --mount=type=cache \\\n  echo hi"
        );
    }

    #[test]
    fn heredocs() {
        let text = "FROM a\nRUN <<EOF cat - <<-'END'\necho $x\nEOF\n\tline\n\tEND\nCOPY <<A <<B /dst/\na\nA\nb\nB\n";
        let p = parse_ast(text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let (ast, run) = (&p.value, &p.value.nodes[1]);
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].name, "EOF");
        assert!(run.heredocs[0].expand && !run.heredocs[0].chomp);
        assert_eq!(run.heredocs[0].content, "echo $x\n");
        assert_eq!(run.heredocs[1].name, "END");
        assert!(!run.heredocs[1].expand && run.heredocs[1].chomp);
        assert_eq!(run.heredocs[1].text(), "line\n");
        assert_eq!(&text[run.heredocs[0].marker_span.range()], "<<EOF");
        assert_eq!((run.start_line, run.end_line), (2, 6));
        let copy = &ast.nodes[2];
        assert_eq!(copy.heredocs.len(), 2);
        assert_eq!(copy.args.len(), 3);
        assert_eq!(
            ast.dump().lines().nth(2),
            Some("(copy \"<<A\" \"<<B\" \"/dst/\")")
        );
    }

    #[test]
    fn unterminated_heredoc_is_reported() {
        let errs = parse_ast("FROM a\nRUN <<EOF\necho\n").errors;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.starts_with("unterminated heredoc"));
    }

    #[test]
    fn onbuild_and_unknown() {
        assert_eq!(
            dump("ONBUILD --x RUN [\"a\"]\nFOO bar\nonbuild\n"),
            "(onbuild [\"--x\"] (run \"a\"))\n(foo \"\")\n(onbuild)\n"
        );
    }

    #[test]
    fn errors_do_not_stop_parsing() {
        let p = parse_ast("FROM a\nENV X\nCMD [1]\nLABEL a b=c\nRUN ok\n");
        assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
        assert_eq!(p.value.nodes.len(), 3);
    }

    #[test]
    fn crlf_and_bom() {
        assert_eq!(
            dump("\u{feff}FROM a\r\nRUN x \\\r\n  y\r\n"),
            "(from \"a\")\n(run \"x   y\")\n"
        );
    }

    #[test]
    fn deep_onbuild_is_bounded() {
        let text = "ONBUILD ".repeat(10_000) + "RUN x";
        assert_eq!(parse_ast(&text).errors.len(), 1);
    }
}
