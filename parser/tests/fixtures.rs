//! The library on the fixtures of `testdata/parser/` (the CLI test checks the rendered output):
//! valid cases parse without error to their `dump`, invalid ones report at least one error,
//! and the heredoc and directive fixtures have the typed values they should.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use lade_parser::instruction::{CommandLine, Source};
use lade_parser::{parse, Instruction};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/parser")
        .join(kind);
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

fn read(case: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/parser")
            .join(case)
            .join("Dockerfile"),
    )
    .unwrap()
}

#[test]
fn valid_fixtures_parse_cleanly() {
    for dir in fixtures("valid") {
        let text = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let p = parse(&text);
        assert!(p.errors.is_empty(), "{}: {:?}", dir.display(), p.errors);
        let want = fs::read_to_string(dir.join("dump")).unwrap();
        assert_eq!(p.value.ast.dump(), want, "{}", dir.display());
    }
}

#[test]
fn invalid_fixtures_are_rejected() {
    let all = fixtures("invalid");
    assert!(all.len() >= 15);
    for dir in all {
        let text = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let p = parse(&text);
        assert!(!p.errors.is_empty(), "{} accepted", dir.display());
        for e in &p.errors {
            assert!(e.span.end <= text.len(), "{}: {e:?}", dir.display());
        }
    }
}

#[test]
fn heredoc_forms() {
    let df = parse(&read("valid/heredocs")).into_result().unwrap();
    let cmds = &df.stages[0].commands;
    let run = |i: usize| match &cmds[i].instruction {
        Instruction::Run(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    // <<EOF as the command, expanded
    let r = run(0);
    assert!(matches!(&r.command, CommandLine::Shell(w) if w.value == "<<EOF"));
    assert_eq!(r.heredocs[0].content, "echo \"hello from $HOME\"\n");
    assert!(r.heredocs[0].expand && !r.heredocs[0].chomp);
    // <<-EOT strips tabs
    let r = run(1);
    assert!(r.heredocs[0].chomp);
    assert_eq!(r.heredocs[0].content, "\techo tabs\n");
    assert_eq!(r.heredocs[0].text(), "echo tabs\n");
    // quoted delimiters are not expanded
    assert!(!run(2).heredocs[0].expand);
    assert_eq!(run(2).heredocs[0].name, "QUOTED");
    assert!(!run(3).heredocs[0].expand);
    // two heredocs on one line, the second with a file descriptor
    let r = run(4);
    assert_eq!(r.heredocs.len(), 2);
    assert_eq!(
        (r.heredocs[0].name.as_str(), r.heredocs[0].fd),
        ("FILE1", 0)
    );
    assert_eq!(
        (r.heredocs[1].name.as_str(), r.heredocs[1].fd),
        ("FILE2", 3)
    );
    assert_eq!(r.heredocs[1].content, "second\n");
    // COPY sources
    let Instruction::Copy(c) = &cmds[5].instruction else {
        panic!()
    };
    assert!(
        matches!(&c.sources[0], Source::Heredoc(h) if h.name == "conf.ini" && h.content == "[app]\ndebug = true\n")
    );
    assert_eq!(c.dest.value, "/etc/app/");
    let Instruction::Copy(c) = &cmds[6].instruction else {
        panic!()
    };
    assert_eq!(c.sources.len(), 2);
    let Source::Heredoc(h) = &c.sources[0] else {
        panic!()
    };
    assert!(h.chomp && !h.expand);
    assert_eq!(h.text(), "#!/bin/sh\nexec \"$@\"\n");
    assert!(matches!(&c.sources[1], Source::Heredoc(h) if h.content == "plain\n"));
    let Instruction::Add(a) = &cmds[7].instruction else {
        panic!()
    };
    assert!(matches!(&a.sources[0], Source::Heredoc(h) if h.name == "notes.txt"));
    assert!(run(8).heredocs[0].content.is_empty());
    // JSON form reads no heredoc
    assert!(run(9).heredocs.is_empty());
    let Instruction::Onbuild(o) = &cmds[10].instruction else {
        panic!()
    };
    assert_eq!(o.expression, "RUN <<EOF\necho onbuild heredoc\nEOF");
    let Instruction::Run(tr) = &o.trigger.instruction else {
        panic!()
    };
    assert_eq!(tr.heredocs[0].content, "echo onbuild heredoc\n");
}

#[test]
fn directives_and_backtick_escape() {
    let df = parse(&read("valid/directives-backtick"))
        .into_result()
        .unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.syntax.as_ref().unwrap().value, "docker/dockerfile:1.7");
    assert!(df.check.error);
    assert_eq!(df.check.skip, ["JSONArgsRecommended"]);
    let Instruction::Env(e) = &df.stages[0].commands[2].instruction else {
        panic!()
    };
    assert!(e.pairs[0].legacy);
    assert_eq!(e.pairs[0].value.value, "C:\\Program Files\\App");
}

#[test]
fn spans_and_lines_point_into_the_source() {
    let text = read("valid/all-instructions");
    let df = parse(&text).into_result().unwrap();
    let build = &df.stages[0];
    assert_eq!(build.name(), Some("build"));
    assert_eq!(build.from_command.start_line, 4);
    assert_eq!(
        &text[build.from.platform.as_ref().unwrap().span.range()],
        "--platform=$BUILDPLATFORM"
    );
    let Instruction::Copy(c) = &build.commands[9].instruction else {
        panic!()
    };
    assert_eq!(&text[c.dest.span.range()], "./");
    assert_eq!(c.from.as_ref().unwrap().value, "deps");
    assert!(c.link);
    let Instruction::Add(a) = &build.commands[12].instruction else {
        panic!()
    };
    assert!(a.keep_git_dir && a.link);
    assert_eq!(df.stages[1].commands.len(), 1);
}
