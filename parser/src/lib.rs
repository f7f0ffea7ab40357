//! Dockerfile parser.
//!
//! Owns turning Dockerfile text into a spanned AST (instructions, flags, heredocs, parser
//! directives) and the shell-word module that expands `$VAR`-style words exactly as BuildKit
//! does. It does no IO and never panics: it returns the AST plus every error it found, each
//! with a byte span. It must not know about images, the store or execution.

pub mod ast;
mod diagnostic;
mod gocompat;
mod json;
pub mod shell;
pub mod span;

pub use ast::{parse_ast, Ast, Directive, Heredoc, Node};
pub use diagnostic::Diagnostic;
pub use gocompat::go_quote;
pub use span::{LineIndex, Span, Spanned, Word};
