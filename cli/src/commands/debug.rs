//! `lade debug ...`: developer tools.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::diagnostics::{render, Severity};

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Parse a Dockerfile and print its AST in BuildKit's dump format, or its errors
    Parse(ParseArgs),
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The Dockerfile to read; `-` reads standard input
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    file: PathBuf,
    /// Only check the syntax (BuildKit's parser), not each instruction's flags and arguments
    #[arg(long)]
    syntax_only: bool,
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::Parse(args) => parse(args),
    }
}

fn read_input(file: &PathBuf) -> anyhow::Result<(String, Vec<u8>)> {
    if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read the Dockerfile from standard input")?;
        return Ok(("<stdin>".to_string(), buf));
    }
    let name = file.display().to_string();
    let buf = std::fs::read(file).with_context(|| {
        format!("cannot read {name}: give the Dockerfile's path with -f, or - for standard input")
    })?;
    Ok((name, buf))
}

fn parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let (name, bytes) = read_input(&args.file)?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
            let line = prefix.matches('\n').count() + 1;
            let col = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            anyhow::bail!(
                "{name}:{line}:{col}: the file is not valid UTF-8: expected UTF-8 text (convert it, e.g. with iconv)"
            );
        }
    };
    let (dump, errors, warnings) = if args.syntax_only {
        let p = lade_parser::parse_ast(&text);
        (p.value.dump(), p.errors, p.warnings)
    } else {
        let p = lade_parser::parse(&text);
        (p.value.ast.dump(), p.errors, p.warnings)
    };
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut stderr = std::io::stderr().lock();
    for w in &warnings {
        writeln!(
            stderr,
            "{}\n",
            render(&name, &text, w, Severity::Warning, color)
        )?;
    }
    if !errors.is_empty() {
        for e in &errors {
            writeln!(
                stderr,
                "{}\n",
                render(&name, &text, e, Severity::Error, color)
            )?;
        }
        let n = errors.len();
        writeln!(
            stderr,
            "error: {name}: {n} problem{} found",
            if n == 1 { "" } else { "s" }
        )?;
        return Ok(ExitCode::FAILURE);
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(dump.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(crate::output::stdout_error)?;
    Ok(ExitCode::SUCCESS)
}
