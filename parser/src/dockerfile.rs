//! The whole front end: raw nodes, typed instructions and build stages.

use crate::ast::{parse_ast_inner, Ast, Directive};
use crate::diagnostic::Diagnostic;
use crate::gocompat::parse_bool;
use crate::instruction::{instruction_from_node, Arg, Command, From, Instruction};
use crate::span::{Span, Word};

/// A result with every problem found: the value is usable (possibly partial) even when
/// `errors` is not empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<T> {
    /// What could be parsed.
    pub value: T,
    /// Problems that make the Dockerfile unbuildable, in source order.
    pub errors: Vec<Diagnostic>,
    /// Problems that do not (deprecated forms, ignored flags).
    pub warnings: Vec<Diagnostic>,
}

impl<T> Parsed<T> {
    /// Whether no error was found.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The value when there is no error, else the errors.
    pub fn into_result(self) -> crate::Result<T> {
        if self.errors.is_empty() {
            Ok(self.value)
        } else {
            Err(crate::Error::Invalid(self.errors))
        }
    }
}

/// Options of the `# check=` directive (BuildKit's lint configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Rules to skip (`skip=A,B`).
    pub skip: Vec<String>,
    /// `skip=all`.
    pub skip_all: bool,
    /// Experimental rules to enable (`experimental=A,B`).
    pub experimental: Vec<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `error=true`: lint warnings fail the build.
    pub error: bool,
}

impl CheckOptions {
    /// Parses `skip=...;error=...;experimental=...` as BuildKit's `ParseLintOptions`.
    pub fn parse(value: &str) -> Result<CheckOptions, String> {
        let mut out = CheckOptions::default();
        let value = value.trim();
        if value.is_empty() {
            return Ok(out);
        }
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!(
                    "invalid check option {part:?}: expected skip=<rules>, error=<bool> or experimental=<rules>"
                ));
            };
            let list =
                |v: &str| -> Vec<String> { v.split(',').map(|r| r.trim().to_string()).collect() };
            match k.trim() {
                "skip" => {
                    let v = v.trim();
                    if v == "all" {
                        out.skip_all = true;
                    } else {
                        out.skip = list(v);
                    }
                }
                "experimental" => {
                    let v = v.trim();
                    if v == "all" {
                        out.experimental_all = true;
                    } else {
                        out.experimental = list(v);
                    }
                }
                "error" => {
                    out.error = parse_bool(v.trim()).ok_or_else(|| {
                        format!("failed to parse check option {part:?}: expected error=true or error=false")
                    })?;
                }
                other => {
                    return Err(format!(
                        "invalid check option {other:?}: expected skip, error or experimental"
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// One build stage: a FROM and the instructions after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// 0-based position among the stages.
    pub index: usize,
    /// The FROM instruction's content.
    pub from: From,
    /// The FROM instruction itself (span, lines, comments).
    pub from_command: Command,
    /// The instructions of the stage, FROM excluded, in order.
    pub commands: Vec<Command>,
}

impl Stage {
    /// The stage name (`AS name`, lower case), if any.
    pub fn name(&self) -> Option<&str> {
        self.from.stage_name.as_ref().map(|w| w.value.as_str())
    }
}

/// A Dockerfile ready for the solver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dockerfile {
    /// The raw nodes (for the BuildKit dump and tooling).
    pub ast: Ast,
    /// The escape token in force.
    pub escape: char,
    /// `# syntax=` value, if any.
    pub syntax: Option<Word>,
    /// `# check=` options (defaults when absent).
    pub check: CheckOptions,
    /// ARG instructions before the first FROM (global build arguments).
    pub meta_args: Vec<Command>,
    /// The stages in order.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The stage named `name` (case-insensitive) or with index `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .find(|s| s.name() == Some(lower.as_str()))
            .or_else(|| name.parse::<usize>().ok().and_then(|i| self.stages.get(i)))
    }

    /// The global ARG declarations, flattened.
    pub fn meta_arg_decls(&self) -> impl Iterator<Item = &crate::instruction::ArgDecl> {
        self.meta_args.iter().flat_map(|c| match &c.instruction {
            Instruction::Arg(Arg { args }) => args.as_slice(),
            _ => &[],
        })
    }
}

fn directive_word(d: &Directive) -> Word {
    Word::new(d.value.clone(), d.span)
}

/// Parses Dockerfile text into raw nodes, typed instructions and stages, collecting every
/// error. Never panics, does no IO.
pub fn parse(text: &str) -> Parsed<Dockerfile> {
    let (ast, mut errors, mut warnings) = parse_ast_inner(text);
    let syntax = ast.directive("syntax").map(directive_word);
    let check = match ast.directive("check") {
        Some(d) => match CheckOptions::parse(&d.value) {
            Ok(c) => c,
            Err(e) => {
                errors.push(Diagnostic::new(d.span, e));
                CheckOptions::default()
            }
        },
        None => CheckOptions::default(),
    };
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut seen_from = false;
    for node in &ast.nodes {
        let cmd = instruction_from_node(node, &mut errors, &mut warnings);
        let is_from = node.command() == "from";
        if is_from {
            seen_from = true;
        }
        let Some(cmd) = cmd else { continue };
        match &cmd.instruction {
            Instruction::From(f) => {
                if let Some(name) = &f.stage_name {
                    if let Some(prev) = stages.iter().find(|s| s.name() == Some(&name.value)) {
                        errors.push(Diagnostic::new(
                            name.span,
                            format!(
                                "duplicate stage name {:?}: first defined on line {}; expected a unique name",
                                name.value, prev.from_command.start_line
                            ),
                        ));
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    from: f.clone(),
                    from_command: cmd.clone(),
                    commands: Vec::new(),
                });
            }
            Instruction::Arg(_) if !seen_from => meta_args.push(cmd),
            _ => match stages.last_mut() {
                Some(stage) => stage.commands.push(cmd),
                None if seen_from => {} // the FROM itself was invalid: already reported
                None => errors.push(Diagnostic::new(
                    cmd.keyword.span,
                    format!(
                        "{} before the first FROM: expected FROM first (only ARG may come before it)",
                        cmd.instruction.name()
                    ),
                )),
            },
        }
    }
    if !seen_from && !ast.nodes.is_empty() {
        errors.push(Diagnostic::new(
            Span::empty(text.len()),
            "no build stage: expected a FROM instruction",
        ));
    }
    errors.sort_by_key(|d| d.span.start);
    warnings.sort_by_key(|d| d.span.start);
    Parsed {
        value: Dockerfile {
            escape: ast.escape_token,
            ast,
            syntax,
            check,
            meta_args,
            stages,
        },
        errors,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instruction::{CommandLine, Healthcheck, Source};
    use std::time::Duration;

    fn ok(text: &str) -> Dockerfile {
        let p = parse(text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p.value
    }

    fn errs(text: &str) -> Vec<String> {
        parse(text).errors.into_iter().map(|d| d.message).collect()
    }

    #[test]
    fn stages_and_meta_args() {
        let df = ok("# syntax=docker/dockerfile:1\n# check=skip=StageNameCasing;error=true\nARG BASE=alpine\nARG V\nFROM $BASE AS Build\nRUN make\nFROM scratch\nCOPY --from=build /out /\n");
        assert_eq!(df.syntax.as_ref().unwrap().value, "docker/dockerfile:1");
        assert!(df.check.error);
        assert_eq!(df.check.skip, ["StageNameCasing"]);
        assert_eq!(df.meta_arg_decls().count(), 2);
        assert_eq!(df.stages.len(), 2);
        assert_eq!(df.stages[0].name(), Some("build"));
        assert_eq!(df.stages[0].from.image.value, "$BASE");
        assert_eq!(df.stages[1].commands.len(), 1);
        assert!(df.stage("BUILD").is_some() && df.stage("1").is_some());
    }

    #[test]
    fn typed_instructions() {
        let df = ok("FROM a\nRUN --mount=type=cache,target=/c --network=none echo hi\nCMD [\"a\", \"b\"]\nHEALTHCHECK --interval=30s --retries=3 CMD curl -f x\nCOPY --link --chown=1:1 <<EOF a /dst/\nhello\nEOF\nONBUILD RUN x\nENV A 1 B 2\n");
        let cmds = &df.stages[0].commands;
        let crate::Instruction::Run(run) = &cmds[0].instruction else {
            panic!()
        };
        assert_eq!(
            run.mounts[0].mount.as_ref().unwrap().target.as_deref(),
            Some("/c")
        );
        assert_eq!(
            run.network.as_ref().unwrap().value,
            crate::instruction::NetworkMode::None
        );
        assert!(matches!(&run.command, CommandLine::Shell(w) if w.value == "echo hi"));
        let crate::Instruction::Cmd(cmd) = &cmds[1].instruction else {
            panic!()
        };
        assert!(matches!(&cmd.command, CommandLine::Exec(v) if v.len() == 2));
        let crate::Instruction::Healthcheck(Healthcheck::Cmd(h)) = &cmds[2].instruction else {
            panic!()
        };
        assert_eq!(h.interval, Some(Duration::from_secs(30)));
        assert_eq!(h.retries, Some(3));
        let crate::Instruction::Copy(c) = &cmds[3].instruction else {
            panic!()
        };
        assert!(c.link);
        assert!(matches!(&c.sources[0], Source::Heredoc(h) if h.content == "hello\n"));
        assert!(matches!(&c.sources[1], Source::Path(p) if p.value == "a"));
        let crate::Instruction::Onbuild(o) = &cmds[4].instruction else {
            panic!()
        };
        assert_eq!(o.expression, "RUN x");
        let crate::Instruction::Env(e) = &cmds[5].instruction else {
            panic!()
        };
        assert_eq!(e.pairs.len(), 1);
        assert_eq!(e.pairs[0].value.value, "1 B 2");
    }

    #[test]
    fn every_error_is_reported() {
        let e = errs("RUN x\nFROM a AS 1x\nCOPY a\nHEALTHCHECK --interval=1ns CMD x\nONBUILD FROM b\nFROBNICATE\nSHELL sh -c\n");
        assert_eq!(e.len(), 7, "{e:#?}");
        assert!(e[0].starts_with("RUN before the first FROM"));
        assert!(e[1].starts_with("invalid name for build stage"));
    }

    #[test]
    fn duplicate_stage_names() {
        let e = errs("FROM a AS x\nFROM b AS X\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("duplicate stage name \"x\": first defined on line 1"));
    }
}
