//! The typed layer: each raw [`Node`] becomes an [`Instruction`] that has validated its own
//! flags and arguments (BuildKit's `instructions.ParseInstruction`).
//!
//! Nothing is expanded here: values keep their quotes, escapes and `$VARS` exactly as written,
//! and the solver expands them per stage with [`crate::shell::Lexer`], as BuildKit does.

use std::time::Duration;

use crate::ast::{parse_heredoc_word, Heredoc, Node};
use crate::diagnostic::{suggest, Diagnostic};
use crate::flags::{parse_flags, Flags, Kind};
use crate::gocompat::{to_lower, trim_space};
use crate::mount::RunMount;
use crate::span::{Span, Spanned, Word};
use crate::units::parse_go_duration;

/// Every instruction keyword, upper case.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// One typed instruction with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// What the instruction says.
    pub instruction: Instruction,
    /// The keyword as written.
    pub keyword: Word,
    /// The whole instruction, heredoc bodies included.
    pub span: Span,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line.
    pub end_line: usize,
    /// The logical line as BuildKit keeps it (continuations joined).
    pub original: String,
    /// Comment lines directly above.
    pub comments: Vec<String>,
}

/// The command of RUN, CMD, ENTRYPOINT or HEALTHCHECK CMD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandLine {
    /// Shell form: run through the stage's SHELL. Empty when the instruction had no argument.
    Shell(Word),
    /// Exec (JSON) form: argv as written (`[]` gives an empty list).
    Exec(Vec<Word>),
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct From {
    /// The base image or stage reference, unexpanded (meta ARGs apply).
    pub image: Word,
    /// The stage name after `AS`, lower-cased and validated.
    pub stage_name: Option<Word>,
    /// `--platform`, unexpanded.
    pub platform: Option<Word>,
}

/// `RUN --network` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkMode {
    /// The builder's default (no network in Lade's sandbox).
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    /// The normal sandbox.
    Sandbox,
    /// Extra privileges (needs an entitlement).
    Insecure,
}

/// One `--mount` flag of RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountFlag {
    /// The raw value after `--mount=`, unexpanded (span of the whole flag).
    pub spec: Word,
    /// The mount, when the value is literal (no `$`, quote or backslash); otherwise the solver
    /// expands it and calls [`RunMount::parse`].
    pub mount: Option<RunMount>,
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The command (a heredoc marker such as `<<EOF` stays in the shell text).
    pub command: CommandLine,
    /// Heredocs whose content the command reads or runs.
    pub heredocs: Vec<Heredoc>,
    /// `--mount` flags in order.
    pub mounts: Vec<MountFlag>,
    /// `--network`.
    pub network: Option<Spanned<NetworkMode>>,
    /// `--security`.
    pub security: Option<Spanned<SecurityMode>>,
}

/// `CMD command`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    /// The command.
    pub command: CommandLine,
}

/// `ENTRYPOINT command`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entrypoint {
    /// The command (`Exec(vec![])` for `ENTRYPOINT []`, which clears it).
    pub command: CommandLine,
}

/// `SHELL ["executable", "param"...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shell {
    /// The shell argv (at least one element).
    pub shell: Vec<Word>,
}

/// One `key=value` (or legacy `key value`) of ENV or LABEL, unexpanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The name.
    pub key: Word,
    /// The value as written (quotes kept).
    pub value: Word,
    /// Written in the legacy `KEY name value` form (no `=`).
    pub legacy: bool,
}

/// `ENV k=v ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// The pairs in order.
    pub pairs: Vec<KeyValue>,
}

/// `LABEL k=v ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// The pairs in order.
    pub pairs: Vec<KeyValue>,
}

/// One name of an ARG instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub name: Word,
    /// The default after `=`, unexpanded (quotes kept); `None` without `=`.
    pub default: Option<Word>,
}

/// `ARG name[=default] ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    /// The declared names in order.
    pub args: Vec<ArgDecl>,
}

/// A COPY or ADD source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A path, URL or git reference as written (unexpanded).
    Path(Word),
    /// An inline file from a heredoc (`COPY <<EOF /dest`); its name is the file name.
    Heredoc(Heredoc),
}

/// `COPY [flags] src... dest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// Sources in order.
    pub sources: Vec<Source>,
    /// The destination.
    pub dest: Word,
    /// `--from=stage|image`.
    pub from: Option<Word>,
    /// `--chown=user[:group]`.
    pub chown: Option<Word>,
    /// `--chmod=mode`.
    pub chmod: Option<Word>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude=pattern`, any number.
    pub exclude: Vec<Word>,
}

/// `ADD [flags] src... dest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Add {
    /// Sources in order.
    pub sources: Vec<Source>,
    /// The destination.
    pub dest: Word,
    /// `--chown=user[:group]`.
    pub chown: Option<Word>,
    /// `--chmod=mode`.
    pub chmod: Option<Word>,
    /// `--link`.
    pub link: bool,
    /// `--checksum=sha256:...` for remote sources.
    pub checksum: Option<Word>,
    /// `--keep-git-dir` for git sources.
    pub keep_git_dir: bool,
    /// `--exclude=pattern`, any number.
    pub exclude: Vec<Word>,
    /// `--unpack=true|false`: whether local archives are extracted (default: yes).
    pub unpack: Option<bool>,
}

/// `WORKDIR path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workdir {
    /// The path, unexpanded.
    pub path: Word,
}

/// `USER user[:group]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user, unexpanded.
    pub user: Word,
}

/// `EXPOSE port[/proto] ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expose {
    /// Ports as written (the solver expands and splits them into words).
    pub ports: Vec<Word>,
}

/// `VOLUME path ...` or `VOLUME ["path", ...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Paths, trimmed, non-empty.
    pub paths: Vec<Word>,
}

/// `STOPSIGNAL signal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopSignal {
    /// The signal as written.
    pub signal: Word,
}

/// `MAINTAINER name` (deprecated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maintainer {
    /// The text.
    pub name: Word,
}

/// `HEALTHCHECK CMD ...` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthcheckCmd {
    /// The check command (shell form is `CMD-SHELL` in the image config).
    pub command: CommandLine,
    /// `--interval` (None when absent or 0: inherit).
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries` (None when absent or 0: inherit).
    pub retries: Option<u32>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Healthcheck {
    /// Disable any inherited check.
    None,
    /// Run a check command.
    Cmd(HealthcheckCmd),
}

/// `ONBUILD instruction`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Onbuild {
    /// The trigger as it is stored in the image config (text after `ONBUILD`, heredocs
    /// appended as BuildKit does).
    pub expression: String,
    /// The trigger, parsed and validated.
    pub trigger: Box<Command>,
}

/// A validated Dockerfile instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// FROM.
    From(From),
    /// RUN.
    Run(Run),
    /// CMD.
    Cmd(Cmd),
    /// ENTRYPOINT.
    Entrypoint(Entrypoint),
    /// SHELL.
    Shell(Shell),
    /// ENV.
    Env(Env),
    /// LABEL.
    Label(Label),
    /// ARG.
    Arg(Arg),
    /// COPY.
    Copy(Copy),
    /// ADD.
    Add(Add),
    /// WORKDIR.
    Workdir(Workdir),
    /// USER.
    User(User),
    /// EXPOSE.
    Expose(Expose),
    /// VOLUME.
    Volume(Volume),
    /// STOPSIGNAL.
    StopSignal(StopSignal),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
    /// ONBUILD.
    Onbuild(Onbuild),
    /// MAINTAINER.
    Maintainer(Maintainer),
}

impl Instruction {
    /// The keyword in upper case.
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Arg(_) => "ARG",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

const NO_FLAGS: &[(&str, Kind)] = &[];

struct Ctx<'a> {
    node: &'a Node,
    name: String,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Span, msg: impl Into<String>) {
        self.errors.push(Diagnostic::new(span, msg));
    }

    /// An error about the arguments as a whole (at [`Ctx::args_span`]).
    fn err_args(&mut self, msg: impl Into<String>) {
        let span = self.args_span();
        self.err(span, msg);
    }

    /// Span of all arguments, or the keyword when there are none.
    fn args_span(&self) -> Span {
        let a = &self.node.args;
        match (a.first(), a.last()) {
            (Some(f), Some(l)) => f.span.cover(l.span),
            _ => self.node.keyword.span,
        }
    }

    fn flags(&mut self, specs: &[(&'static str, Kind)]) -> Flags {
        let name = self.name.clone();
        parse_flags(&name, &self.node.flags, specs, &mut self.errors)
    }

    fn exactly_one(&mut self, what: &str) -> Option<Word> {
        self.flags(NO_FLAGS);
        match self.node.args.as_slice() {
            [one] => Some(one.clone()),
            _ => {
                let name = self.name.clone();
                self.err_args(format!(
                    "{name} requires exactly one argument: expected {name} <{what}>"
                ));
                None
            }
        }
    }

    fn command_line(&self) -> CommandLine {
        let node = self.node;
        command_of(node.json, &node.args, node.keyword.span.end)
    }
}

/// The command written as `args`: the exec form when they are JSON, else one shell string (the
/// words joined by spaces, spanning them all; empty at `empty_at` when there are none).
fn command_of(json: bool, args: &[Word], empty_at: usize) -> CommandLine {
    if json {
        return CommandLine::Exec(args.to_vec());
    }
    match args {
        [] => CommandLine::Shell(Spanned::new(String::new(), Span::empty(empty_at))),
        [one] => CommandLine::Shell(one.clone()),
        [first, .., last] => {
            let text: Vec<&str> = args.iter().map(|a| a.value.as_str()).collect();
            CommandLine::Shell(Spanned::new(text.join(" "), first.span.cover(last.span)))
        }
    }
}

/// Converts one raw node; returns the instruction (when valid enough to use) and pushes
/// problems to `errors` and `warnings`.
pub fn instruction_from_node(
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Command> {
    let mut cx = Ctx {
        node,
        name: node.keyword.value.to_uppercase(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let instruction = convert(&mut cx);
    let ok = cx.errors.is_empty();
    errors.append(&mut cx.errors);
    warnings.append(&mut cx.warnings);
    let instruction = instruction.filter(|_| ok)?;
    Some(Command {
        instruction,
        keyword: node.keyword.clone(),
        span: node.span,
        start_line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
        comments: node.comments.clone(),
    })
}

fn convert(cx: &mut Ctx<'_>) -> Option<Instruction> {
    let node = cx.node;
    match node.command().as_str() {
        "from" => from(cx).map(Instruction::From),
        "run" => Some(Instruction::Run(run(cx))),
        "cmd" => {
            cx.flags(NO_FLAGS);
            Some(Instruction::Cmd(Cmd {
                command: cx.command_line(),
            }))
        }
        "entrypoint" => {
            cx.flags(NO_FLAGS);
            Some(Instruction::Entrypoint(Entrypoint {
                command: cx.command_line(),
            }))
        }
        "shell" => {
            cx.flags(NO_FLAGS);
            if !node.json {
                cx.err_args("SHELL requires the arguments to be in JSON form: expected SHELL [\"executable\", \"parameters\"]");
                return None;
            }
            if node.args.is_empty() {
                cx.err_args("SHELL requires at least one argument: expected SHELL [\"executable\", \"parameters\"]");
                return None;
            }
            Some(Instruction::Shell(Shell {
                shell: node.args.clone(),
            }))
        }
        "env" => key_values(cx).map(|pairs| Instruction::Env(Env { pairs })),
        "label" => key_values(cx).map(|pairs| Instruction::Label(Label { pairs })),
        "arg" => arg(cx).map(Instruction::Arg),
        "copy" => copy(cx).map(Instruction::Copy),
        "add" => add(cx).map(Instruction::Add),
        "workdir" => cx
            .exactly_one("path")
            .map(|path| Instruction::Workdir(Workdir { path })),
        "user" => cx
            .exactly_one("user[:group]")
            .map(|user| Instruction::User(User { user })),
        "stopsignal" => cx
            .exactly_one("signal")
            .map(|signal| Instruction::StopSignal(StopSignal { signal })),
        "maintainer" => cx
            .exactly_one("name")
            .map(|name| Instruction::Maintainer(Maintainer { name })),
        "expose" => {
            cx.flags(NO_FLAGS);
            if node.args.is_empty() {
                cx.err_args(
                    "EXPOSE requires at least one argument: expected EXPOSE <port>[/<protocol>]...",
                );
                return None;
            }
            Some(Instruction::Expose(Expose {
                ports: node.args.clone(),
            }))
        }
        "volume" => volume(cx).map(Instruction::Volume),
        "healthcheck" => healthcheck(cx).map(Instruction::Healthcheck),
        "onbuild" => onbuild(cx).map(Instruction::Onbuild),
        _ => {
            let word = node.keyword.value.clone();
            let mut d =
                Diagnostic::new(
                    node.keyword.span,
                    format!(
                    "unknown instruction: {}: expected one of FROM, RUN, COPY, ADD, ENV, ARG, ...",
                    if word.is_empty() { "(empty)".to_string() } else { word.clone() }
                ),
                );
            if let Some(s) = suggest(&word, INSTRUCTIONS) {
                d = d.with_help(format!("did you mean {s}?"));
            }
            cx.errors.push(d);
            None
        }
    }
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

fn from(cx: &mut Ctx<'_>) -> Option<From> {
    let node = cx.node;
    let flags = cx.flags(&[("platform", Kind::Str)]);
    let args = &node.args;
    let stage_name = match args.as_slice() {
        [_] => None,
        [_, as_kw, name] if as_kw.value.eq_ignore_ascii_case("as") => {
            let lower = to_lower(&name.value);
            if !is_valid_stage_name(&lower) {
                cx.err(
                    name.span,
                    format!(
                        "invalid name for build stage: {:?}, name can't start with a number or contain symbols: expected letters, digits, '-', '_' or '.', starting with a letter",
                        name.value
                    ),
                );
                return None;
            }
            Some(Spanned::new(lower, name.span))
        }
        _ => {
            cx.err_args("FROM requires either one or three arguments: expected FROM [--platform=<platform>] <image> [AS <name>]",
            );
            return None;
        }
    };
    Some(From {
        image: args[0].clone(),
        stage_name,
        platform: flags.string("platform"),
    })
}

fn run(cx: &mut Ctx<'_>) -> Run {
    let flags = cx.flags(&[
        ("mount", Kind::Strings),
        ("network", Kind::Str),
        ("security", Kind::Str),
    ]);
    let mut mounts = Vec::new();
    for spec in flags.strings("mount") {
        if let Err(e) = RunMount::check_syntax(&spec.value) {
            cx.err(spec.span, format!("invalid --mount: {e}"));
            continue;
        }
        let literal = !spec.value.contains(['$', '\'', '"', '\\']);
        let mount = if literal {
            match RunMount::parse(&spec.value, &mut |v| Ok(v.to_string())) {
                Ok(m) => Some(m),
                Err(e) => {
                    cx.err(spec.span, format!("invalid --mount: {e}"));
                    continue;
                }
            }
        } else {
            None
        };
        mounts.push(MountFlag { spec, mount });
    }
    let network = flags.string("network").and_then(|w| {
        let mode = match w.value.as_str() {
            "default" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => {
                cx.err(
                    w.span,
                    format!(
                        "unsupported network mode {other:?}: expected one of default, none, host"
                    ),
                );
                return None;
            }
        };
        Some(Spanned::new(mode, w.span))
    });
    let security = flags.string("security").and_then(|w| {
        let mode = match w.value.as_str() {
            "sandbox" => SecurityMode::Sandbox,
            "insecure" => SecurityMode::Insecure,
            other => {
                cx.err(
                    w.span,
                    format!("unsupported security mode {other:?}: expected sandbox or insecure"),
                );
                return None;
            }
        };
        Some(Spanned::new(mode, w.span))
    });
    Run {
        command: cx.command_line(),
        heredocs: cx.node.heredocs.clone(),
        mounts,
        network,
        security,
    }
}

fn key_values(cx: &mut Ctx<'_>) -> Option<Vec<KeyValue>> {
    cx.flags(NO_FLAGS);
    let node = cx.node;
    let name = cx.name.clone();
    if node.args.is_empty() {
        cx.err_args(format!(
            "{name} requires at least one argument: expected {name} <name>=<value> ..."
        ));
        return None;
    }
    let mut out = Vec::new();
    for t in node.args.chunks(3) {
        let [k, v, sep] = t else {
            cx.err_args(format!("bad input to {name}, too many arguments"));
            return None;
        };
        if k.value.is_empty() {
            cx.err(
                k.span.cover(v.span),
                format!("{name} names can not be blank: expected <name>=<value>"),
            );
            continue;
        }
        out.push(KeyValue {
            key: k.clone(),
            value: v.clone(),
            legacy: sep.value.is_empty(),
        });
    }
    Some(out)
}

fn arg(cx: &mut Ctx<'_>) -> Option<Arg> {
    cx.flags(NO_FLAGS);
    let node = cx.node;
    if node.args.is_empty() {
        cx.err_args("ARG requires at least one argument: expected ARG <name>[=<default value>]");
        return None;
    }
    let mut args = Vec::new();
    for a in &node.args {
        match a.value.split_once('=') {
            Some((k, v)) => {
                let eq = a.span.start + k.len();
                if k.is_empty() {
                    cx.err(
                        a.span,
                        "ARG names can not be blank: expected ARG <name>[=<default value>]",
                    );
                    continue;
                }
                args.push(ArgDecl {
                    name: Spanned::new(k.to_string(), Span::new(a.span.start, eq.min(a.span.end))),
                    default: Some(Spanned::new(
                        v.to_string(),
                        Span::new((eq + 1).min(a.span.end), a.span.end),
                    )),
                });
            }
            None => args.push(ArgDecl {
                name: a.clone(),
                default: None,
            }),
        }
    }
    Some(Arg { args })
}

fn sources_and_dest(cx: &mut Ctx<'_>) -> Option<(Vec<Source>, Word)> {
    let node = cx.node;
    let name = cx.name.clone();
    if node.args.len() < 2 {
        cx.err_args(format!("{name} requires at least two arguments, but only {} provided: expected {name} <src>... <dest>",
                if node.args.is_empty() { "none was".to_string() } else { "one was".to_string() }),
        );
        return None;
    }
    let (dest, srcs) = node.args.split_last()?;
    if let Ok(Some(_)) = parse_heredoc_word(&dest.value) {
        cx.err(
            dest.span,
            format!("{name} cannot accept a heredoc as a destination: expected a path"),
        );
        return None;
    }
    let mut sources = Vec::new();
    for src in srcs {
        match parse_heredoc_word(&src.value) {
            Ok(Some((hname, fd, expand, chomp))) => {
                let doc = node
                    .heredocs
                    .iter()
                    .rev()
                    .find(|h| h.name == hname)
                    .cloned()
                    .unwrap_or(Heredoc {
                        name: hname,
                        fd,
                        expand,
                        chomp,
                        content: String::new(),
                        span: src.span,
                        marker_span: src.span,
                    });
                // BuildKit takes the chomp and expand settings from the source word
                sources.push(Source::Heredoc(Heredoc {
                    expand,
                    chomp,
                    ..doc
                }));
            }
            _ => sources.push(Source::Path(src.clone())),
        }
    }
    Some((sources, dest.clone()))
}

fn copy(cx: &mut Ctx<'_>) -> Option<Copy> {
    let flags = cx.flags(&[
        ("from", Kind::Str),
        ("chown", Kind::Str),
        ("chmod", Kind::Str),
        ("link", Kind::Bool),
        ("parents", Kind::Bool),
        ("exclude", Kind::Strings),
    ]);
    let (sources, dest) = sources_and_dest(cx)?;
    Some(Copy {
        sources,
        dest,
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").is_some_and(|b| b.value),
        parents: flags.bool("parents").is_some_and(|b| b.value),
        exclude: flags.strings("exclude"),
    })
}

fn add(cx: &mut Ctx<'_>) -> Option<Add> {
    let flags = cx.flags(&[
        ("chown", Kind::Str),
        ("chmod", Kind::Str),
        ("link", Kind::Bool),
        ("checksum", Kind::Str),
        ("keep-git-dir", Kind::Bool),
        ("exclude", Kind::Strings),
        ("unpack", Kind::Bool),
    ]);
    let (sources, dest) = sources_and_dest(cx)?;
    Some(Add {
        sources,
        dest,
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").is_some_and(|b| b.value),
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir").is_some_and(|b| b.value),
        exclude: flags.strings("exclude"),
        unpack: flags.bool("unpack").map(|b| b.value),
    })
}

fn volume(cx: &mut Ctx<'_>) -> Option<Volume> {
    cx.flags(NO_FLAGS);
    let node = cx.node;
    if node.args.is_empty() {
        cx.err_args("VOLUME requires at least one argument: expected VOLUME <path>... or VOLUME [\"<path>\", ...]",
        );
        return None;
    }
    let mut paths = Vec::new();
    for a in &node.args {
        let v = trim_space(&a.value);
        if v.is_empty() {
            cx.err(
                a.span,
                "VOLUME specified can not be an empty string: expected a path",
            );
            continue;
        }
        paths.push(Spanned::new(v.to_string(), a.span));
    }
    Some(Volume { paths })
}

fn duration_flag(cx: &mut Ctx<'_>, flags: &Flags, name: &str) -> Option<Duration> {
    let w = flags.string(name)?;
    if w.value.is_empty() {
        return None;
    }
    match parse_go_duration(&w.value) {
        Ok(0) => None,
        Ok(ns) if ns < 1_000_000 => {
            cx.err(
                w.span,
                format!(
                    "Interval {name:?} cannot be less than 1ms: expected a duration such as 30s"
                ),
            );
            None
        }
        Ok(ns) => Some(Duration::from_nanos(ns.unsigned_abs())),
        Err(e) => {
            cx.err(
                w.span,
                format!(
                    "invalid --{name} value {:?}: {e}: expected a duration such as 30s, 1m30s",
                    w.value
                ),
            );
            None
        }
    }
}

fn healthcheck(cx: &mut Ctx<'_>) -> Option<Healthcheck> {
    let node = cx.node;
    let Some(typ) = node.args.first() else {
        cx.err_args("HEALTHCHECK requires at least one argument: expected HEALTHCHECK NONE or HEALTHCHECK [options] CMD <command>",
        );
        return None;
    };
    let kind = typ.value.to_uppercase();
    if kind == "NONE" {
        if node.args.len() > 1 {
            let span = node.args[1].span.cover(node.args[node.args.len() - 1].span);
            cx.err(
                span,
                "HEALTHCHECK NONE takes no arguments: expected HEALTHCHECK NONE alone",
            );
            return None;
        }
        if let Some(f) = node.flags.first() {
            // BuildKit ignores them; say so rather than silently dropping them
            cx.warnings.push(Diagnostic::new(
                f.span,
                "flags of HEALTHCHECK NONE are ignored: expected HEALTHCHECK NONE alone",
            ));
        }
        return Some(Healthcheck::None);
    }
    let flags = cx.flags(&[
        ("interval", Kind::Str),
        ("timeout", Kind::Str),
        ("start-period", Kind::Str),
        ("start-interval", Kind::Str),
        ("retries", Kind::Str),
    ]);
    if kind != "CMD" {
        cx.err(
            typ.span,
            format!(
                "Unknown type {:?} in HEALTHCHECK (try CMD): expected NONE or CMD",
                typ.value
            ),
        );
        return None;
    }
    let rest = &node.args[1..];
    if rest.is_empty() {
        cx.err(
            typ.span,
            "missing command after HEALTHCHECK CMD: expected HEALTHCHECK CMD <command>",
        );
        return None;
    }
    let command = command_of(node.json, rest, typ.span.end);
    let interval = duration_flag(cx, &flags, "interval");
    let timeout = duration_flag(cx, &flags, "timeout");
    let start_period = duration_flag(cx, &flags, "start-period");
    let start_interval = duration_flag(cx, &flags, "start-interval");
    let retries = match flags.string("retries") {
        Some(w) if !w.value.is_empty() => match w.value.parse::<i32>() {
            Ok(n) if n < 0 => {
                cx.err(
                    w.span,
                    format!("--retries cannot be negative ({n}): expected 0 or more"),
                );
                None
            }
            Ok(0) => None,
            Ok(n) => Some(n.unsigned_abs()),
            Err(_) => {
                cx.err(
                    w.span,
                    format!(
                        "invalid --retries value {:?}: expected a whole number",
                        w.value
                    ),
                );
                None
            }
        },
        _ => None,
    };
    Some(Healthcheck::Cmd(HealthcheckCmd {
        command,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}

fn onbuild(cx: &mut Ctx<'_>) -> Option<Onbuild> {
    cx.flags(NO_FLAGS);
    let node = cx.node;
    let Some(child) = node.child.as_deref() else {
        cx.err_args("ONBUILD requires at least one argument: expected ONBUILD <instruction>");
        return None;
    };
    let trigger = child.keyword.value.to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            cx.err(
                child.keyword.span,
                "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed: expected another instruction",
            );
            return None;
        }
        "MAINTAINER" | "FROM" => {
            cx.err(
                child.keyword.span,
                format!(
                    "{trigger} isn't allowed as an ONBUILD trigger: expected another instruction"
                ),
            );
            return None;
        }
        _ => {}
    }
    // the trigger is validated like any instruction, with the parent's heredocs
    let mut with_docs = child.clone();
    with_docs.heredocs = node.heredocs.clone();
    with_docs.start_line = node.start_line;
    with_docs.end_line = node.end_line;
    let mut errors = Vec::new();
    let trigger_cmd = instruction_from_node(&with_docs, &mut errors, &mut cx.warnings);
    cx.errors.append(&mut errors);
    let mut expression = strip_onbuild_prefix(&node.original).to_string();
    for h in &node.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Some(Onbuild {
        expression,
        trigger: Box::new(trigger_cmd?),
    })
}

/// `(?i)^\s*ONBUILD\s*` removed, as BuildKit stores the trigger.
fn strip_onbuild_prefix(original: &str) -> &str {
    let is_s = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
    let t = original.trim_start_matches(is_s);
    match t.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => t[7..].trim_start_matches(is_s),
        _ => original,
    }
}
