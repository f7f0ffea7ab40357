//! Dockerfile parser.
//!
//! Owns turning Dockerfile text into a spanned AST (instructions, flags, heredocs, parser
//! directives) and the shell-word module that expands `$VAR`-style words exactly as BuildKit
//! does. It does no IO and never panics: it returns the AST plus every error it found, each
//! with a byte span. It must not know about images, the store or execution.
//!
//! Two layers:
//!
//! - [`parse_ast`] gives BuildKit-like raw [`Node`]s (keyword, raw flags, arguments, heredocs,
//!   original text, span, lines); [`Ast::dump`] prints BuildKit's AST dump from them.
//! - [`parse`] adds the typed layer: each node becomes an [`Instruction`] that validated its
//!   flags and arguments, grouped into [`Stage`]s after the global (meta) ARGs.
//!
//! Nothing is expanded at parse time: the solver expands words per stage with
//! [`shell::Lexer`], as BuildKit does.
//!
//! ```
//! let parsed = lade_parser::parse("ARG TAG=1\nFROM alpine:$TAG AS base\nRUN echo hi\n");
//! assert!(parsed.errors.is_empty());
//! let df = parsed.value;
//! assert_eq!(df.stages[0].name(), Some("base"));
//! assert_eq!(df.ast.dump(), "(arg \"TAG=1\")\n(from \"alpine:$TAG\" \"AS\" \"base\")\n(run \"echo hi\")\n");
//! ```
//!
//! Known differences from BuildKit, all on inputs BuildKit mangles: lines are not limited to
//! 64 KiB; flags and HEALTHCHECK types are split on ASCII whitespace only (BuildKit's byte-wise
//! scan also splits inside some multi-byte characters); `${...}` nesting is limited to
//! [`shell::MAX_NESTING`] and results to [`shell::MAX_EXPANSION`] bytes; ONBUILD may nest
//! [`ast::MAX_ONBUILD_DEPTH`] deep in the raw layer.

pub mod ast;
mod diagnostic;
mod dockerfile;
mod flags;
mod gocompat;
pub mod instruction;
mod json;
pub mod mount;
pub mod shell;
pub mod span;
mod units;

pub use ast::{parse_ast, Ast, Directive, Heredoc, Node};
pub use diagnostic::Diagnostic;
pub use dockerfile::{parse, CheckOptions, Dockerfile, Parsed, Stage};
pub use gocompat::go_quote;
pub use instruction::{Command, CommandLine, Instruction};
pub use mount::{MountError, RunMount};
pub use span::{LineIndex, Span, Spanned, Word};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Dockerfile has problems; each diagnostic has its span and message.
    #[error("{} problem(s) in the Dockerfile, first: {}", .0.len(), .0.first().map(|d| d.message.as_str()).unwrap_or("none"))]
    Invalid(Vec<Diagnostic>),
    /// A word could not be expanded.
    #[error(transparent)]
    Expand(#[from] shell::ExpandError),
    /// A RUN mount is invalid.
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
