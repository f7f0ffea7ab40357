//! Rendering parser diagnostics: `file:line:col`, the source line and a caret under the span.
//!
//! Uses annotate-snippets (rustc's renderer) instead of hand-written formatting: it handles
//! multi-line spans, tabs, wide characters and line-number gutters correctly.

use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};
use lade_parser::{Diagnostic, LineIndex, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// Renders one diagnostic about `text` (read from `path`).
pub fn render(path: &str, text: &str, d: &Diagnostic, severity: Severity, color: bool) -> String {
    let index = LineIndex::new(text);
    let mut span = Span::new(d.span.start.min(text.len()), d.span.end.min(text.len()));
    // an empty span at the very end, after the final newline, points at the end of the last
    // line instead (there is no line to show after it)
    if span.is_empty() && span.start == text.len() && text.ends_with('\n') {
        let back = text[..span.start].trim_end_matches(['\n', '\r']).len();
        span = Span::empty(back);
    }
    let first_line = index.line(span.start);
    let last_line = index.line(
        span.end
            .saturating_sub(usize::from(!span.is_empty()))
            .max(span.start),
    );
    let start = index.line_start(first_line).unwrap_or(0);
    let end = index
        .line_start(last_line + 1)
        .map(|e| e.saturating_sub(1))
        .unwrap_or(text.len())
        .max(span.end);
    let source = text[start..end].trim_end_matches(['\n', '\r']);
    let local = (span.start - start).min(source.len())..(span.end - start).min(source.len());
    let level = match severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let snippet = Snippet::source(source)
        .line_start(first_line)
        .path(path)
        .annotation(AnnotationKind::Primary.span(local));
    let mut report = vec![level.primary_title(d.message.as_str()).element(snippet)];
    if let Some(help) = &d.help {
        report.push(annotate_snippets::Group::with_title(
            Level::HELP.secondary_title(help.as_str()),
        ));
    }
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    renderer.render(&report)
}
