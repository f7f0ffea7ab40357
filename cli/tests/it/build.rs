//! `lade build` end to end: instructions, flags, multi-stage, ONBUILD, heredocs, ARG scoping,
//! `.dockerignore`, failures, outputs and the build cache, on the real binary, the real sandbox
//! and a busybox base image made by `testdata/mkrootfs.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::{base_rootfs_tar, run_fail, run_ok, unique, TestStore};

/// The base rootfs tarball, made once per test process.
fn base_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = std::env::temp_dir().join(unique("lade-build-base"));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("base.tar");
        base_rootfs_tar(&p);
        p
    })
}

/// A store with the busybox base imported as `base:1`, and an empty context directory.
struct Fixture {
    ts: TestStore,
    ctx: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let ts = TestStore::new();
        run_ok(
            ts.lade()
                .args(["import", "--change", "CMD [\"/bin/sh\"]"])
                .arg(base_tar())
                .arg("base:1"),
        );
        let ctx = ts.path("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        Fixture { ts, ctx }
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.ctx.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn dockerfile(&self, text: &str) {
        self.write("Dockerfile", text);
    }

    fn build_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.ts.lade();
        c.arg("build").args(args).arg(&self.ctx);
        c
    }

    /// Builds with `--progress json`, returns the steps reported (name, cached).
    fn build(&self, args: &[&str]) -> Vec<(String, bool)> {
        let mut c = self.build_cmd(args);
        c.args(["--progress", "json"]);
        let out = output(&mut c);
        assert!(out.status.success(), "build failed:\n{}", show(&out));
        steps(&out)
    }

    fn build_fail(&self, args: &[&str]) -> String {
        run_fail(&mut self.build_cmd(args))
    }

    fn inspect(&self, image: &str) -> Value {
        let out = run_ok(self.ts.lade().args(["inspect", image]));
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    fn history(&self, image: &str) -> Vec<Value> {
        let out = run_ok(self.ts.lade().args(["save", image]).stdout(Stdio::piped()));
        let _ = out;
        let id = self.inspect(image)["Id"].as_str().unwrap().to_string();
        let blob = self
            .ts
            .root
            .join("blobs/sha256")
            .join(id.trim_start_matches("sha256:"));
        let cfg: Value = serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
        cfg["history"].as_array().unwrap().clone()
    }

    /// Builds with `--output type=local` and returns the directory.
    fn export(&self, args: &[&str]) -> PathBuf {
        let dest = self.ts.path(&unique("out"));
        let spec = format!("type=local,dest={}", dest.display());
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["-o", &spec, "-q"]);
        run_ok(&mut self.build_cmd(&a));
        dest
    }

    fn check_store(&self) {
        let out = run_ok(self.ts.lade().args(["system", "check"]));
        assert!(out.contains("store is consistent"), "{out}");
        assert_eq!(self.ts.temp_entries(), 0, "temp entries left in the store");
    }
}

fn output(c: &mut Command) -> Output {
    c.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn steps(o: &Output) -> Vec<(String, bool)> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "step")
        .map(|v| {
            assert!(v["duration_ms"].is_u64(), "{v}");
            (
                v["name"].as_str().unwrap().to_string(),
                v["cached"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Steps that ran (base-image sources excluded: they cost nothing).
fn executed(s: &[(String, bool)]) -> Vec<String> {
    s.iter()
        .filter(|x| !x.1 && !x.0.starts_with("FROM "))
        .map(|x| x.0.clone())
        .collect()
}

fn meta(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn config_instructions_and_history() {
    let f = Fixture::new();
    f.dockerfile(
        r#"FROM base:1
ARG A=1
ENV E=e1 F="two words" G=$A
LABEL l1=v1 "l 2"=$E
EXPOSE 80 53/udp
VOLUME /data
STOPSIGNAL SIGINT
SHELL ["/bin/sh", "-ec"]
HEALTHCHECK --interval=30s --retries=3 CMD wget -q x
MAINTAINER me
ONBUILD RUN echo trig
USER 1000:1000
WORKDIR rel
ENTRYPOINT echo a
CMD ["x", "y z"]
"#,
    );
    f.build(&["-t", "cfg:1", "--label", "extra=yes"]);
    let c = &f.inspect("cfg:1")["Config"];
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/rel");
    assert_eq!(c["Env"][1], "E=e1");
    assert_eq!(c["Env"][2], "F=two words");
    assert_eq!(c["Env"][3], "G=1");
    assert_eq!(c["Labels"]["l 2"], "e1");
    assert_eq!(c["Labels"]["extra"], "yes");
    assert!(c["ExposedPorts"]["80/tcp"].is_object());
    assert!(c["ExposedPorts"]["53/udp"].is_object());
    assert!(c["Volumes"]["/data"].is_object());
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/bin/sh", "-ec", "echo a"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["x", "y z"]));
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q x"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000i64);
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo trig"]));
    assert_eq!(f.inspect("cfg:1")["Author"], "me");
    // ARG values are no part of the image env
    assert!(!c["Env"].to_string().contains("A=1\""));
    let hist = f.history("cfg:1");
    let by: Vec<(String, bool)> = hist
        .iter()
        .skip(1)
        .map(|h| {
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let want = [
        ("ARG A=1", true),
        ("ENV E=e1 F=two words G=1", true),
        ("LABEL l1=v1 l 2=e1", true),
        ("EXPOSE map[53/udp:{} 80/tcp:{}]", true),
        ("VOLUME [/data]", true),
        ("STOPSIGNAL SIGINT", true),
        ("SHELL [/bin/sh -ec]", true),
        (
            "HEALTHCHECK &{[\"CMD-SHELL\" \"wget -q x\"] \"30s\" \"0s\" \"0s\" '\\x03'}",
            true,
        ),
        ("MAINTAINER me", true),
        ("USER 1000:1000", true),
        ("WORKDIR /rel", false),
        ("ENTRYPOINT [\"/bin/sh\" \"-ec\" \"echo a\"]", true),
        ("CMD [\"x\" \"y z\"]", true),
    ];
    let want: Vec<(String, bool)> = want.iter().map(|(a, b)| (a.to_string(), *b)).collect();
    assert_eq!(by, want);
    for h in &hist[1..] {
        assert_eq!(h["comment"], "buildkit.dockerfile.v0");
        assert!(h["created"].is_string());
    }
    // WORKDIR made the directory, owned by the USER in effect
    let out = f.export(&[]);
    assert_eq!(meta(&out.join("rel")), (0o755, 1000, 1000));
}

#[test]
fn copy_destination_rules() {
    let f = Fixture::new();
    f.write("a.txt", "a\n");
    f.write("b.txt", "b\n");
    f.write("dir/sub/c.txt", "c\n");
    f.write("dir/top.txt", "top\n");
    std::os::unix::fs::symlink("a.txt", f.ctx.join("link")).unwrap();
    std::fs::set_permissions(
        f.ctx.join("b.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o751),
    )
    .unwrap();
    f.dockerfile(
        r#"FROM base:1
RUN mkdir -p /real && ln -s /real /linkdir
COPY a.txt /file-dest
COPY a.txt /newdir/
COPY dir /dircontent
COPY dir/ /trailing/
COPY a.txt b.txt /multi/
COPY *.txt /glob/
COPY link /followed
COPY a.txt /linkdir/
WORKDIR /work
COPY a.txt rel/
COPY a.txt .
COPY --chown=lade:wheel a.txt /owned/
COPY --chown=7 --chmod=600 dir /chmodded
COPY b.txt /keepmode
"#,
    );
    let out = f.export(&[]);
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("file-dest"), "a\n");
    assert_eq!(read("newdir/a.txt"), "a\n");
    assert_eq!(read("dircontent/sub/c.txt"), "c\n");
    assert_eq!(read("dircontent/top.txt"), "top\n");
    assert!(!out.join("dircontent/dir").exists());
    assert_eq!(read("trailing/top.txt"), "top\n");
    assert_eq!(read("multi/a.txt"), "a\n");
    assert_eq!(read("multi/b.txt"), "b\n");
    assert_eq!(read("glob/a.txt"), "a\n");
    assert_eq!(read("glob/b.txt"), "b\n");
    // a symlink given as a source is followed
    assert!(std::fs::symlink_metadata(out.join("followed"))
        .unwrap()
        .is_file());
    assert_eq!(read("followed"), "a\n");
    // an existing symlinked directory in the image is resolved inside the rootfs
    assert_eq!(read("real/a.txt"), "a\n");
    assert_eq!(read("work/rel/a.txt"), "a\n");
    assert_eq!(read("work/a.txt"), "a\n");
    // parents made 0755 root, files 0:0 from the context
    assert_eq!(meta(&out.join("newdir")), (0o755, 0, 0));
    assert_eq!(meta(&out.join("newdir/a.txt")), (0o644, 0, 0));
    assert_eq!(meta(&out.join("owned/a.txt")), (0o644, 1000, 10));
    assert_eq!(meta(&out.join("owned")), (0o755, 1000, 10));
    assert_eq!(meta(&out.join("chmodded/sub/c.txt")), (0o600, 7, 7));
    assert_eq!(meta(&out.join("chmodded/sub")), (0o600, 7, 7));
    assert_eq!(meta(&out.join("keepmode")), (0o751, 0, 0));
    // nothing went to the host through the image's absolute symlink
    assert!(!Path::new("/real/a.txt").exists());
    f.check_store();
}

#[test]
fn copy_errors_name_the_problem() {
    let f = Fixture::new();
    f.dockerfile("FROM base:1\nCOPY missing.txt /x\n");
    let err = f.build_fail(&[]);
    assert!(err.contains("missing.txt"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    f.dockerfile("FROM base:1\nCOPY --chown=nosuchuser Dockerfile /x\n");
    let err = f.build_fail(&[]);
    assert!(err.contains("unable to find user nosuchuser"), "{err}");
    f.check_store();
}

#[test]
fn run_forms_env_user_workdir_and_args() {
    let f = Fixture::new();
    f.dockerfile(
        r#"FROM base:1
ARG STAGEARG=sa
ENV E=env
WORKDIR /w
RUN echo "$E $STAGEARG $(pwd) $(id -u)" > shell.txt
RUN ["/bin/sh", "-c", "echo exec-form > exec.txt"]
USER lade
RUN id -un > /tmp/user.txt
USER root
SHELL ["/bin/sh", "-xc"]
RUN echo shelled > shell2.txt
"#,
    );
    let out = f.export(&["-t", "run:1"]);
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("w/shell.txt"), "env sa /w 0\n");
    assert_eq!(read("w/exec.txt"), "exec-form\n");
    assert_eq!(read("tmp/user.txt"), "lade\n");
    assert_eq!(read("w/shell2.txt"), "shelled\n");
    f.build(&["-t", "run:1"]);
    let hist = f.history("run:1");
    let runs: Vec<&str> = hist
        .iter()
        .filter_map(|h| h["created_by"].as_str())
        .filter(|s| s.starts_with("RUN"))
        .collect();
    assert_eq!(
        runs[0],
        "RUN |1 STAGEARG=sa /bin/sh -c echo \"$E $STAGEARG $(pwd) $(id -u)\" > shell.txt # buildkit"
    );
    assert_eq!(
        runs[1],
        "RUN |1 STAGEARG=sa /bin/sh -c echo exec-form > exec.txt # buildkit"
    );
    // the ARG is in the RUN environment only, not in the image
    let env = f.inspect("run:1")["Config"]["Env"].to_string();
    assert!(!env.contains("STAGEARG"), "{env}");
}

#[test]
fn run_network_modes() {
    let f = Fixture::new();
    f.dockerfile(
        "FROM base:1\nRUN --network=none ls /sys/class/net > /none.txt\nRUN ls /sys/class/net > /default.txt\n",
    );
    let out = f.export(&[]);
    assert_eq!(
        std::fs::read_to_string(out.join("none.txt")).unwrap(),
        "lo\n"
    );
    let host = std::fs::read_to_string(out.join("default.txt")).unwrap();
    assert!(
        host.lines().count() > 1,
        "default RUN uses the host network: {host}"
    );
    // lade build --network none changes the default
    let out = f.export(&["--network", "none"]);
    assert_eq!(
        std::fs::read_to_string(out.join("default.txt")).unwrap(),
        "lo\n"
    );
}

#[test]
fn failing_run_reports_step_line_exit_code_and_output() {
    let f = Fixture::new();
    f.dockerfile(
        "FROM base:1\nRUN echo fine\nRUN echo 'about to fail' && echo oops >&2 && exit 3\nRUN echo never\n",
    );
    let out = output(f.build_cmd(&["--progress", "plain"]).stdin(Stdio::null()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[3/4] RUN echo 'about to fail'"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("oops"), "{err}");
    assert!(!err.contains("#4 [4/4] RUN echo never"), "{err}");
    f.check_store();
    // the steps before the failure were cached
    f.dockerfile("FROM base:1\nRUN echo fine\n");
    let s = f.build(&[]);
    assert!(executed(&s).is_empty(), "{s:?}");
}

#[test]
fn multi_stage_target_and_unneeded_stages() {
    let f = Fixture::new();
    f.write("src.txt", "source\n");
    f.dockerfile(
        r#"FROM base:1 AS build
COPY src.txt /src.txt
RUN cp /src.txt /built.txt && echo more >> /built.txt

FROM no-such-image:never AS unused
RUN exit 1

FROM base:1 AS broken
RUN exit 7

FROM base:1
COPY --from=build /built.txt /app/
COPY --from=0 /src.txt /app/by-index.txt
COPY --from=base:1 /etc/passwd /app/passwd
"#,
    );
    let out = f.export(&[]);
    assert_eq!(
        std::fs::read_to_string(out.join("app/built.txt")).unwrap(),
        "source\nmore\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("app/by-index.txt")).unwrap(),
        "source\n"
    );
    assert!(out.join("app/passwd").is_file());
    // --target builds that stage and what it needs only
    let s = f.build(&["--target", "build", "-t", "t:1"]);
    assert!(s.iter().all(|(n, _)| !n.contains("exit")), "{s:?}");
    let err = f.build_fail(&["--target", "broken"]);
    assert!(err.contains("exit code 7"), "{err}");
    let err = f.build_fail(&["--target", "nope"]);
    assert!(
        err.contains("target stage \"nope\" could not be found"),
        "{err}"
    );
    let err = f.build_fail(&["--target", "unused"]);
    assert!(err.contains("no-such-image:never"), "{err}");
    assert!(err.contains("lade pull"), "{err}");
}

#[test]
fn from_cycles_are_named() {
    let f = Fixture::new();
    f.dockerfile("FROM base:1 AS a\nCOPY --from=b /x /x\nFROM base:1 AS b\nCOPY --from=a /y /y\n");
    let err = f.build_fail(&[]);
    assert!(
        err.contains("circular dependency detected on stage: a"),
        "{err}"
    );
    assert!(err.contains("a -> b -> a"), "{err}");
}

#[test]
fn onbuild_triggers_run_after_from() {
    let f = Fixture::new();
    f.write("trig.txt", "from the trigger\n");
    f.dockerfile("FROM base:1\nONBUILD COPY trig.txt /trig.txt\nONBUILD RUN echo ran > /ran.txt\n");
    f.build(&["-t", "parent:1"]);
    f.dockerfile("FROM parent:1\nRUN cat /trig.txt /ran.txt > /both.txt\n");
    let out = f.export(&["-t", "child:1"]);
    assert_eq!(
        std::fs::read_to_string(out.join("both.txt")).unwrap(),
        "from the trigger\nran\n"
    );
    // triggers do not carry over to the child image
    f.build(&["-t", "child:1"]);
    assert!(f.inspect("child:1")["Config"]["OnBuild"].is_null());
    // a stage built FROM a stage runs that stage's triggers too
    f.dockerfile(
        "FROM base:1 AS p\nONBUILD RUN echo stage-trigger > /st.txt\nFROM p\nRUN cat /st.txt\n",
    );
    let out = f.export(&[]);
    assert!(out.join("st.txt").is_file());
}

#[test]
fn heredocs() {
    let f = Fixture::new();
    f.dockerfile(
        "FROM base:1\nENV WHO=world\nRUN <<EOF\necho \"hello $WHO\" > /h1.txt\necho second >> /h1.txt\nEOF\nRUN <<EOF\n#!/bin/sh\necho from-shebang > /h2.txt\nEOF\nCOPY <<EOF /etc/greeting\nhi $WHO\nEOF\nCOPY <<'EOF' /etc/raw\nhi $WHO\nEOF\nRUN cat <<A > /h3.txt\nfirst\nA\n",
    );
    let out = f.export(&[]);
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("h1.txt"), "hello world\nsecond\n");
    assert_eq!(read("h2.txt"), "from-shebang\n");
    assert_eq!(read("etc/greeting"), "hi world\n");
    assert_eq!(read("etc/raw"), "hi $WHO\n");
    assert_eq!(read("h3.txt"), "first\n");
}

#[test]
fn arg_scoping_and_build_args() {
    let f = Fixture::new();
    f.dockerfile(
        r#"ARG TAG=1
ARG GLOBAL=g
FROM base:${TAG} AS first
ARG GLOBAL
ARG LOCAL=l
ARG OVER=default
RUN echo "$GLOBAL $LOCAL $OVER $TARGETARCH" > /args.txt
ARG TARGETARCH
RUN echo "$TARGETARCH" > /arch.txt
FROM base:1
RUN echo "[$LOCAL][$GLOBAL][$TARGETARCH]" > /second.txt
"#,
    );
    let out = f.export(&["--build-arg", "OVER=given", "--target", "first"]);
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("args.txt"), "g l given \n");
    assert!(!read("arch.txt").trim().is_empty());
    // a stage sees no ARG it did not declare
    let out = f.export(&[]);
    assert_eq!(
        std::fs::read_to_string(out.join("second.txt")).unwrap(),
        "[][][]\n"
    );
    // bare --build-arg K takes the environment's value; unused args get a warning
    let o = output(
        f.build_cmd(&[
            "--build-arg",
            "OVER",
            "--build-arg",
            "NOBODY=1",
            "--target",
            "first",
        ])
        .env("OVER", "from-env"),
    );
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("were not consumed: [NOBODY]"), "{err}");
    // proxies reach RUN without entering the cache key
    f.dockerfile("FROM base:1\nRUN echo \"$HTTP_PROXY\" > /proxy.txt\n");
    let out = f.export(&["--build-arg", "HTTP_PROXY=http://proxy:3128"]);
    assert_eq!(
        std::fs::read_to_string(out.join("proxy.txt")).unwrap(),
        "http://proxy:3128\n"
    );
    let s = f.build(&["--build-arg", "HTTP_PROXY=http://other:1"]);
    assert!(
        executed(&s).is_empty(),
        "proxy args are not in the key: {s:?}"
    );
}

#[test]
fn dockerignore_with_exceptions_and_double_star() {
    let f = Fixture::new();
    f.write("keep.txt", "k");
    f.write("secret.key", "s");
    f.write("logs/a.log", "a");
    f.write("logs/important.log", "i");
    f.write("deep/x/y/z.tmp", "t");
    f.write("deep/x/y/z.txt", "t");
    f.write(
        ".dockerignore",
        "*.key\nlogs\n!logs/important.log\n**/*.tmp\n",
    );
    f.dockerfile("FROM base:1\nCOPY . /ctx/\n");
    let out = f.export(&[]);
    assert!(out.join("ctx/keep.txt").exists());
    assert!(!out.join("ctx/secret.key").exists());
    assert!(!out.join("ctx/logs/a.log").exists());
    assert!(out.join("ctx/logs/important.log").exists());
    assert!(!out.join("ctx/deep/x/y/z.tmp").exists());
    assert!(out.join("ctx/deep/x/y/z.txt").exists());
    // changing an ignored file does not invalidate the cache
    let s1 = f.build(&[]);
    let _ = s1;
    f.write("secret.key", "changed");
    let s = f.build(&[]);
    assert!(executed(&s).is_empty(), "{s:?}");
}

#[test]
fn add_extracts_local_archives() {
    let f = Fixture::new();
    let src = f.ts.path("arc");
    std::fs::create_dir_all(src.join("inner")).unwrap();
    std::fs::write(src.join("inner/file.txt"), "packed\n").unwrap();
    for (name, flag) in [
        ("plain.tar", ""),
        ("g.tar.gz", "-z"),
        ("b.tar.bz2", "-j"),
        ("x.tar.xz", "-J"),
        ("z.tar.zst", "--zstd"),
    ] {
        let mut c = Command::new("tar");
        c.arg("-c");
        if !flag.is_empty() {
            c.arg(flag);
        }
        c.arg("-f")
            .arg(f.ctx.join(name))
            .arg("-C")
            .arg(&src)
            .arg("inner");
        run_ok(&mut c);
    }
    f.write("not-an-archive.gz", "just text");
    f.dockerfile(
        "FROM base:1\nADD plain.tar /p/\nADD g.tar.gz /g\nADD b.tar.bz2 /b\nADD x.tar.xz /x\nADD z.tar.zst /z\nADD not-an-archive.gz /n/\nCOPY g.tar.gz /copied/\n",
    );
    let out = f.export(&[]);
    for d in ["p", "g", "b", "x", "z"] {
        assert_eq!(
            std::fs::read_to_string(out.join(d).join("inner/file.txt")).unwrap(),
            "packed\n",
            "{d}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(out.join("n/not-an-archive.gz")).unwrap(),
        "just text"
    );
    assert!(out.join("copied/g.tar.gz").is_file(), "COPY never extracts");
}

#[test]
fn add_archives_stay_inside_the_destination() {
    let f = Fixture::new();
    // `..` climbing out, and an absolute symlink written through: both stay in the destination
    let mut v = Vec::new();
    {
        let mut b = tar::Builder::new(&mut v);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, "inner", &[][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "lnk", "/inner").unwrap();
        let data = b"through the link";
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "lnk/f", &data[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..15].copy_from_slice(b"../../../up.txt");
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
        b.finish().unwrap();
    }
    std::fs::write(f.ctx.join("evil.tar"), &v).unwrap();
    f.dockerfile("FROM base:1\nADD evil.tar /dest/\n");
    let out = f.export(&[]);
    assert_eq!(
        std::fs::read_to_string(out.join("dest/inner/f")).unwrap(),
        "through the link"
    );
    assert!(!out.join("up.txt").exists());
    assert!(!Path::new("/inner/f").exists());
    f.check_store();
}

#[test]
fn outputs_and_flags() {
    let f = Fixture::new();
    f.write("hello.txt", "hi\n");
    f.dockerfile("FROM base:1\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n");
    // -q prints the ID only; --iidfile writes it
    let iid = f.ts.path("iid");
    let id = run_ok(&mut f.build_cmd(&[
        "-q",
        "-t",
        "out:1",
        "-t",
        "out:2",
        "--iidfile",
        iid.to_str().unwrap(),
    ]));
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    assert_eq!(f.inspect("out:2")["Id"], id);
    // tar of the final filesystem
    let t = f.ts.path("fs.tar");
    run_ok(&mut f.build_cmd(&["-q", "-o", &format!("type=tar,dest={}", t.display())]));
    let names = run_ok(Command::new("tar").arg("-tf").arg(&t));
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "hello.txt"),
        "{names}"
    );
    assert!(names
        .lines()
        .any(|l| l.trim_start_matches("./") == "bin/busybox"));
    // docker archive accepted by docker load
    let a = f.ts.path("img.tar");
    let name = format!("lade-build-test/{}:1", unique("out"));
    run_ok(&mut f.build_cmd(&[
        "-q",
        "-t",
        &name,
        "-o",
        &format!("type=docker,dest={}", a.display()),
    ]));
    let loaded = run_ok(crate::common::docker().arg("load").arg("-i").arg(&a));
    let _guard = crate::common::DockerImage { name: name.clone() };
    assert!(
        loaded.contains(&name.replace(":1", "")) || loaded.contains("Loaded image"),
        "{loaded}"
    );
    let ran = run_ok(crate::common::docker().args(["run", "--rm", "--network=none", &name]));
    assert_eq!(ran, "hi\n");
}

#[test]
fn dockerfile_from_stdin_without_context() {
    let f = Fixture::new();
    let mut c = f.ts.lade();
    c.args(["build", "-q", "-t", "stdin:1", "-"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM base:1\nRUN echo from-stdin > /x\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    // -f - with a context
    let mut c = f.ts.lade();
    c.args(["build", "-q", "-f", "-"]).arg(&f.ctx);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM base:1\nCOPY --from=base:1 /etc/passwd /p\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn parse_and_lowering_errors_point_at_the_line() {
    let f = Fixture::new();
    f.dockerfile("FROM base:1\nFROBNICATE x\n");
    let err = f.build_fail(&[]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    f.dockerfile("FROM base:1\nCOPY --chmod=9z9 Dockerfile /x\n");
    let err = f.build_fail(&[]);
    assert!(err.contains("invalid chmod"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
}

// ---- the build cache ----

#[test]
fn cache_noop_touch_change_nocache_and_fresh_copy() {
    let f = Fixture::new();
    f.write("one.txt", "1\n");
    f.write("two.txt", "2\n");
    f.dockerfile(
        "FROM base:1\nRUN echo before > /before\nCOPY one.txt /one\nRUN cat /one > /after-one\nCOPY two.txt /two\nRUN cat /two > /after-two\n",
    );
    let first = f.build(&["-t", "c:1"]);
    assert_eq!(executed(&first).len(), 5, "{first:?}");
    // no-op rebuild executes nothing
    let s = f.build(&["-t", "c:1"]);
    assert!(executed(&s).is_empty(), "{s:?}");
    let id1 = f.inspect("c:1")["Id"].clone();
    // same image ID on a fully cached rebuild
    f.build(&["-t", "c:1"]);
    assert_eq!(f.inspect("c:1")["Id"], id1);
    // touching files (mtime only) executes nothing
    let later = filetime_now_plus(5);
    for n in ["one.txt", "two.txt"] {
        filetime::set_file_mtime(f.ctx.join(n), later).unwrap();
    }
    let s = f.build(&[]);
    assert!(executed(&s).is_empty(), "{s:?}");
    // a changed file re-executes its COPY and what follows, nothing before
    f.write("two.txt", "2 changed\n");
    let s = f.build(&[]);
    assert_eq!(
        executed(&s),
        ["COPY two.txt /two", "RUN cat /two > /after-two"],
        "{s:?}"
    );
    // same size, same mtime, other content: still a miss
    let m = std::fs::metadata(f.ctx.join("one.txt")).unwrap();
    let mt = filetime::FileTime::from_last_modification_time(&m);
    f.write("one.txt", "9\n");
    filetime::set_file_mtime(f.ctx.join("one.txt"), mt).unwrap();
    let s = f.build(&[]);
    assert!(
        executed(&s).contains(&"COPY one.txt /one".to_string()),
        "{s:?}"
    );
    // --no-cache executes everything
    let s = f.build(&["--no-cache"]);
    assert_eq!(executed(&s).len(), 5, "{s:?}");
    // a fresh copy of the context (new inodes, new mtimes) hits
    let copy = f.ts.path("ctx-copy");
    run_ok(Command::new("cp").arg("-r").arg(&f.ctx).arg(&copy));
    let mut c = f.ts.lade();
    c.args(["build", "--progress", "json"]).arg(&copy);
    let out = output(&mut c);
    assert!(out.status.success(), "{}", show(&out));
    assert!(executed(&steps(&out)).is_empty(), "{:?}", steps(&out));
    f.check_store();
}

fn filetime_now_plus(secs: i64) -> filetime::FileTime {
    let now = filetime::FileTime::now();
    filetime::FileTime::from_unix_time(now.unix_seconds() + secs, 0)
}

#[test]
fn two_builds_at_once_share_the_store() {
    let f = Fixture::new();
    f.write("f.txt", "x\n");
    f.dockerfile(
        "FROM base:1\nCOPY f.txt /f\nRUN sleep 1 && echo slow > /slow\nRUN echo done > /done\n",
    );
    let spawn = |tag: &str| {
        let mut c = f.build_cmd(&["-t", tag, "--progress", "json"]);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("par:a");
    let b = spawn("par:b");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", show(&a));
    assert!(b.status.success(), "{}", show(&b));
    // each key executed once: what one build ran, the other found cached
    let (sa, sb) = (steps(&a), steps(&b));
    let runs = |s: &[(String, bool)]| {
        s.iter()
            .filter(|(n, c)| n.starts_with("RUN sleep") && !c)
            .count()
    };
    assert_eq!(runs(&sa) + runs(&sb), 1, "{sa:?} {sb:?}");
    assert_eq!(f.inspect("par:a")["RootFS"], f.inspect("par:b")["RootFS"]);
    f.check_store();
}

#[test]
fn prune_keeps_build_cache_until_builder_prune() {
    let f = Fixture::new();
    f.dockerfile("FROM base:1\nRUN echo cached > /c\n");
    f.build(&["-t", "p:1"]);
    run_ok(f.ts.lade().args(["rmi", "p:1"]));
    run_ok(f.ts.lade().arg("prune"));
    let s = f.build(&[]);
    assert!(
        executed(&s).is_empty(),
        "prune keeps what the build cache needs: {s:?}"
    );
    let out = run_ok(f.ts.lade().args(["builder", "prune"]));
    assert!(out.contains("build-cache records"), "{out}");
    let s = f.build(&[]);
    assert_eq!(executed(&s), ["RUN echo cached > /c"], "{s:?}");
    run_ok(f.ts.lade().args(["prune", "--all"]));
    f.check_store();
}

#[test]
fn a_loaded_image_never_satisfies_a_build_step() {
    // an image docker built from the same base and instruction, loaded into the store,
    // must not be taken for the result of that RUN: only a full cache-key match counts
    let f = Fixture::new();
    std::fs::create_dir_all(f.ts.path("d")).unwrap();
    let docker_base = crate::common::docker_base_image(&f.ts.path("d"));
    let name = format!("lade-build-test/{}:1", unique("same"));
    let _img = crate::common::docker_build(
        &f.ts.path("d"),
        &name,
        &format!("FROM {}\nRUN echo same > /same\n", docker_base.name),
    );
    let tar = f.ts.path("same.tar");
    run_ok(
        crate::common::docker()
            .args(["save", "-o"])
            .arg(&tar)
            .arg(&name),
    );
    run_ok(f.ts.lade().args(["load", "-i"]).arg(&tar));
    let save = f.ts.path("base.tar");
    run_ok(
        crate::common::docker()
            .args(["save", "-o"])
            .arg(&save)
            .arg(&docker_base.name),
    );
    run_ok(f.ts.lade().args(["load", "-i"]).arg(&save));
    f.dockerfile(&format!(
        "FROM {}\nRUN echo same > /same\n",
        docker_base.name
    ));
    let s = f.build(&[]);
    assert_eq!(executed(&s), ["RUN echo same > /same"], "{s:?}");
    let _ = BTreeMap::<u8, u8>::new();
}

/// A one-file HTTP server on a free loopback port; returns its base URL.
fn serve(body: &'static [u8]) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Thu, 01 Jan 1970 00:00:10 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_downloads_urls_with_checksum() {
    let f = Fixture::new();
    let base = serve(b"downloaded content\n");
    let sum = lade_cache_sha256(b"downloaded content\n");
    f.dockerfile(&format!(
        "FROM base:1\nADD {base}/files/data.txt /dl/\nADD --checksum={sum} {base}/files/data.txt /named\n"
    ));
    let out = f.export(&[]);
    assert_eq!(
        std::fs::read_to_string(out.join("dl/data.txt")).unwrap(),
        "downloaded content\n"
    );
    assert_eq!(meta(&out.join("dl/data.txt")).0, 0o600);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(out.join("named")).unwrap().mtime(), 10);
    let s = f.build(&[]);
    assert!(executed(&s).is_empty(), "same content, cache hit: {s:?}");
    let wrong = format!("sha256:{}", "0".repeat(64));
    f.dockerfile(&format!(
        "FROM base:1\nADD --checksum={wrong} {base}/x /x\n"
    ));
    let err = f.build_fail(&[]);
    assert!(err.contains("digest mismatch"), "{err}");
    f.check_store();
}

fn lade_cache_sha256(b: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("body");
    std::fs::write(&p, b).unwrap();
    let out = run_ok(Command::new("sha256sum").arg(&p));
    format!("sha256:{}", out.split_whitespace().next().unwrap())
}

#[test]
fn run_mounts_cache_tmpfs_and_context_bind() {
    let f = Fixture::new();
    f.write("data/input.txt", "from the context\n");
    f.dockerfile(
        "FROM base:1\nRUN --mount=type=cache,target=/cache echo run >> /cache/log && cat /cache/log > /seen.txt\nRUN --mount=type=tmpfs,target=/scratch echo x > /scratch/tmp && ls /scratch > /tmpfs.txt\nRUN --mount=type=bind,source=data,target=/src cat /src/input.txt > /bound.txt\n",
    );
    let out = f.export(&[]);
    let read = |o: &Path, p: &str| std::fs::read_to_string(o.join(p)).unwrap();
    assert_eq!(read(&out, "seen.txt"), "run\n");
    assert_eq!(read(&out, "tmpfs.txt"), "tmp\n");
    assert_eq!(read(&out, "bound.txt"), "from the context\n");
    assert!(
        !out.join("cache/log").exists(),
        "cache content stays out of the image"
    );
    assert!(!out.join("scratch/tmp").exists());
    // the cache mount persists across builds
    let out = f.export(&["--no-cache"]);
    assert_eq!(read(&out, "seen.txt"), "run\nrun\n");
    // the bound context content is part of the key
    let s = f.build(&[]);
    assert!(executed(&s).is_empty(), "{s:?}");
    f.write("data/input.txt", "changed\n");
    let s = f.build(&[]);
    assert_eq!(executed(&s).len(), 1, "{s:?}");
    let err = {
        f.dockerfile("FROM base:1\nRUN --mount=type=ssh true\n");
        f.build_fail(&[])
    };
    assert!(err.contains("type=ssh is not supported"), "{err}");
    f.check_store();
}

#[test]
fn ctrl_c_kills_the_running_step_and_leaves_the_store_clean() {
    use std::io::BufRead;
    let f = Fixture::new();
    f.dockerfile("FROM base:1\nRUN echo started && sleep 60 && echo never\n");
    let mut child = f
        .build_cmd(&["--progress", "plain"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(err).lines();
    // wait until the command runs (its output arrives), then interrupt lade
    for l in lines.by_ref() {
        if l.unwrap().ends_with("started") {
            break;
        }
    }
    let start = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "cancellation took {:?}",
        start.elapsed()
    );
    let rest = rest.join("\n");
    assert!(rest.contains("cancelled"), "{rest}");
    assert!(!rest.contains("never"), "{rest}");
    f.check_store();
}

#[test]
fn independent_stages_run_at_the_same_time() {
    // two stages that can only finish if they run concurrently: each waits (bounded) for the
    // other's marker in a shared cache mount
    let f = Fixture::new();
    f.dockerfile(
        r#"FROM base:1 AS a
RUN --mount=type=cache,target=/sync,id=sync touch /sync/a && timeout 20 sh -c 'until [ -f /sync/b ]; do sleep 0.05; done' && echo a > /a
FROM base:1 AS b
RUN --mount=type=cache,target=/sync,id=sync touch /sync/b && timeout 20 sh -c 'until [ -f /sync/a ]; do sleep 0.05; done' && echo b > /b
FROM base:1
COPY --from=a /a /a
COPY --from=b /b /b
"#,
    );
    let out = f.export(&["--jobs", "2"]);
    assert!(out.join("a").is_file() && out.join("b").is_file());
}

#[test]
fn copy_exclude() {
    let f = Fixture::new();
    f.write("app/main.txt", "m");
    f.write("app/notes.md", "n");
    f.write("app/docs/guide.md", "g");
    f.write("app/keep/x.txt", "x");
    f.write("top.md", "t");
    f.write("top.txt", "t");
    f.dockerfile(
        "FROM base:1 AS src\nCOPY app /app\nFROM base:1\nCOPY --exclude=*.md --exclude=docs app /a/\nCOPY --exclude=**/*.md --from=src /app /b/\nCOPY --exclude=*.md top.* /c/\n",
    );
    let out = f.export(&[]);
    assert!(out.join("a/main.txt").exists());
    assert!(!out.join("a/notes.md").exists());
    assert!(!out.join("a/docs").exists());
    assert!(out.join("a/keep/x.txt").exists());
    assert!(out.join("b/main.txt").exists());
    assert!(!out.join("b/notes.md").exists());
    assert!(!out.join("b/docs/guide.md").exists());
    assert!(out.join("c/top.txt").exists());
    assert!(!out.join("c/top.md").exists());
}

#[test]
fn platform_flag_sets_the_image_platform_and_target_args() {
    let f = Fixture::new();
    f.write("x", "x");
    f.dockerfile("FROM scratch\nARG TARGETARCH\nARG TARGETPLATFORM\nCOPY x /x-$TARGETARCH\nLABEL p=$TARGETPLATFORM\n");
    f.build(&["--platform", "linux/arm64/v8", "-t", "arm:1"]);
    let out = f.export(&["--platform", "linux/arm64/v8"]);
    assert!(out.join("x-arm64").exists());
    assert_eq!(
        f.inspect("arm:1")["Config"]["Labels"]["p"],
        "linux/arm64/v8"
    );
    let i = f.inspect("arm:1");
    assert_eq!(i["Architecture"], "arm64");
    assert_eq!(i["Variant"], "v8");
    assert_eq!(i["Os"], "linux");
    let err = f.build_fail(&["--platform", "nonsense/"]);
    assert!(err.contains("invalid platform"), "{err}");
}

#[test]
fn from_pulls_a_missing_base_image_from_its_registry() {
    use lade_registry::testing::TestRegistry;
    let reg = TestRegistry::plain();
    let f = Fixture::new();
    let home = f.ts.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let remote = format!("{}/lade-build/base:1", reg.host());
    run_ok(f.ts.lade().args(["tag", "base:1", &remote]));
    run_ok(
        f.ts.lade()
            .env("HOME", &home)
            .env("DOCKER_CONFIG", home.join("docker"))
            .env("LADE_CONFIG", home.join("lade"))
            .args(["push", "-q", &remote]),
    );
    // a second store that has never seen the image
    let other = Fixture {
        ts: TestStore::new(),
        ctx: f.ctx.clone(),
    };
    f.dockerfile(&format!("FROM {remote}\nRUN echo pulled > /p\n"));
    let out = other.export(&[]);
    assert_eq!(std::fs::read_to_string(out.join("p")).unwrap(), "pulled\n");
    // now local: no registry needed; --pull re-resolves the tag (one HEAD) and hits the cache
    let s = other.build(&["--pull"]);
    assert!(executed(&s).is_empty(), "{s:?}");
    drop(reg);
    let s = other.build(&[]);
    assert!(
        executed(&s).is_empty(),
        "a fully cached rebuild needs no registry: {s:?}"
    );
}

#[test]
fn tty_progress_is_a_live_view() {
    crate::common::require_tool("script", "bsdutils");
    let f = Fixture::new();
    f.dockerfile("FROM base:1\nRUN echo tty-line-one && echo tty-line-two\n");
    // `script` gives lade a terminal; --progress auto then picks the live view
    let cmd = format!(
        "{} --root {} build --no-cache {}",
        crate::common::lade_bin().display(),
        f.ts.root.display(),
        f.ctx.display()
    );
    let out = run_ok(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    assert!(out.contains("[+] Building"), "{out}");
    assert!(out.contains("FINISHED"), "{out}");
    assert!(out.contains("=> [2/2] RUN echo tty-line-one"), "{out}");
    // the view redraws in place (cursor up + erase)
    assert!(out.contains("\u{1b}["), "{out}");
}

#[test]
fn dockerfile_specific_dockerignore_wins() {
    let f = Fixture::new();
    f.write("a.txt", "a");
    f.write("b.txt", "b");
    f.write(".dockerignore", "a.txt\n");
    f.write("build/app.Dockerfile", "FROM base:1\nCOPY . /ctx/\n");
    f.write("build/app.Dockerfile.dockerignore", "b.txt\n");
    let df = f.ctx.join("build/app.Dockerfile");
    let out = f.export(&["-f", df.to_str().unwrap()]);
    assert!(out.join("ctx/a.txt").exists());
    assert!(!out.join("ctx/b.txt").exists());
    f.dockerfile("FROM base:1\nCOPY . /ctx/\n");
    let out = f.export(&[]);
    assert!(!out.join("ctx/a.txt").exists());
    assert!(out.join("ctx/b.txt").exists());
}

#[test]
fn copy_link_is_independent_of_the_parent() {
    let f = Fixture::new();
    f.write("a.txt", "a\n");
    f.dockerfile("FROM base:1\nRUN echo one > /one\nCOPY --link a.txt /app/\nRUN cat /app/a.txt /one > /both\n");
    let out = f.export(&[]);
    assert_eq!(
        std::fs::read_to_string(out.join("both")).unwrap(),
        "a\none\n"
    );
    assert_eq!(meta(&out.join("app")), (0o755, 0, 0));
    // a change before it re-runs that step and what follows the merge, not the linked copy
    f.dockerfile("FROM base:1\nRUN echo two > /one\nCOPY --link a.txt /app/\nRUN cat /app/a.txt /one > /both\n");
    let s = f.build(&[]);
    assert_eq!(
        executed(&s),
        ["RUN echo two > /one", "RUN cat /app/a.txt /one > /both"],
        "{s:?}"
    );
    let out = f.export(&[]);
    assert_eq!(
        std::fs::read_to_string(out.join("both")).unwrap(),
        "a\ntwo\n"
    );
}

#[test]
fn copy_parents_keeps_source_paths() {
    let f = Fixture::new();
    f.write("x/a.txt", "a");
    f.write("y/b.txt", "b");
    f.write("src/pkg/mod/c.txt", "c");
    f.dockerfile(
        "FROM base:1 AS s\nCOPY . /tree/\nFROM base:1\nCOPY --parents x/a.txt y/b.txt /p/\nCOPY --parents */*.txt /g/\nCOPY --parents ./src/./pkg/mod /pivot/\nCOPY --parents --from=s /tree/x/a.txt /tree/./y/b.txt /fs/\n",
    );
    let out = f.export(&[]);
    for p in [
        "p/x/a.txt",
        "p/y/b.txt",
        "g/x/a.txt",
        "g/y/b.txt",
        "pivot/pkg/mod/c.txt",
        "fs/tree/x/a.txt",
        "fs/y/b.txt",
    ] {
        assert!(out.join(p).is_file(), "{p}");
    }
    assert!(!out.join("pivot/src").exists());
}

#[test]
fn secrets_reach_run_but_no_layer_and_no_key() {
    let f = Fixture::new();
    let secret = f.ts.path("token");
    std::fs::write(&secret, "s3cr3t").unwrap();
    f.dockerfile(
        "FROM base:1\nRUN --mount=type=secret,id=token cat /run/secrets/token > /copied && ls -l /run/secrets/token > /perm\nRUN --mount=type=secret,id=opt,target=/opt/x test ! -e /opt/x\n",
    );
    let spec = format!("id=token,src={}", secret.display());
    let out = f.export(&["--secret", &spec]);
    assert_eq!(
        std::fs::read_to_string(out.join("copied")).unwrap(),
        "s3cr3t"
    );
    assert!(std::fs::read_to_string(out.join("perm"))
        .unwrap()
        .starts_with("-r--------"));
    assert!(
        !out.join("run/secrets/token").exists(),
        "no secret in the image"
    );
    // BuildKit removes the secret's empty file stub but keeps the parents runc made for it
    assert!(out.join("run/secrets").is_dir(), "/run/secrets stays");
    // the secret's content is not part of the key (as BuildKit)
    std::fs::write(&secret, "changed").unwrap();
    let s = f.build(&["--secret", &spec]);
    assert!(executed(&s).is_empty(), "{s:?}");
    // a required secret that is missing is an error naming it
    f.dockerfile("FROM base:1\nRUN --mount=type=secret,id=need,required=true true\n");
    let err = f.build_fail(&[]);
    assert!(err.contains("secret need not found"), "{err}");
    f.check_store();
}

#[test]
fn run_bind_mounts_from_stages_images_and_writable_context() {
    let f = Fixture::new();
    f.write("data/in.txt", "ctx\n");
    f.dockerfile(
        r#"FROM base:1 AS tools
RUN mkdir -p /out && echo from-stage > /out/tool.txt
FROM base:1
RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools cat /mnt/tools/tool.txt > /a.txt
RUN --mount=type=bind,from=base:1,source=/etc,target=/mnt/etc test -f /mnt/etc/passwd && echo img > /b.txt
RUN --mount=type=bind,source=data,target=/src,rw echo scribble > /src/in.txt && cat /src/in.txt > /c.txt
RUN --mount=type=bind,from=tools,target=/t touch /t/ro 2>/dev/null && echo writable > /d.txt || echo read-only > /d.txt
"#,
    );
    let out = f.export(&[]);
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("a.txt"), "from-stage\n");
    assert_eq!(read("b.txt"), "img\n");
    assert_eq!(read("c.txt"), "scribble\n");
    assert_eq!(read("d.txt"), "read-only\n");
    // the writable bind did not write into the build context, nor into the image
    assert_eq!(
        std::fs::read_to_string(f.ctx.join("data/in.txt")).unwrap(),
        "ctx\n"
    );
    assert!(!out.join("src/in.txt").exists());
    // the stage bound in is part of the key: changing it re-runs the step
    let s = f.build(&[]);
    assert!(executed(&s).is_empty(), "{s:?}");
    f.check_store();
}

/// Runs `c` with `input` on its standard input (written from a thread, so a child that fills
/// its stdout pipe first cannot deadlock the test); stdout and stderr captured.
fn with_stdin(c: &mut Command, input: Vec<u8>) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        // a child that refuses its input early closes the pipe: not the test's failure
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Every path under `dir`, relative, sorted (directories too).
fn tree_names(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(p).unwrap() {
            let path = e.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `tar -t` names normalised as [`tree_names`] gives them.
fn tar_names(listing: &str) -> Vec<String> {
    let mut v: Vec<String> = listing
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect();
    v.sort();
    v
}

/// A tarball whose reader saw all of it: whole 512-byte blocks ending in the two zero blocks
/// of the end-of-archive marker, with nothing (an image ID...) after them.
fn assert_only_a_tarball(bytes: &[u8]) {
    assert!(bytes.len() >= 1024, "{} bytes", bytes.len());
    assert_eq!(bytes.len() % 512, 0, "stdout is not only a tarball");
    assert!(
        bytes[bytes.len() - 1024..].iter().all(|b| *b == 0),
        "stdout ends with something after the tarball: {:?}",
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(100)..])
    );
}

#[test]
fn tar_output_on_stdout_is_the_tarball_alone() {
    let f = Fixture::new();
    f.write("hello.txt", "hi\n");
    f.dockerfile("FROM base:1\nCOPY hello.txt /hello.txt\nRUN echo built > /built.txt\n");
    let local = tree_names(&f.export(&[]));
    // lade | tar -t: a real pipe into the reader
    let mut lade = f
        .build_cmd(&["--progress", "plain", "-o", "type=tar,dest=-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tar = Command::new("tar")
        .args(["-tf", "-"])
        .stdin(lade.stdout.take().unwrap())
        .output()
        .unwrap();
    let lade = lade.wait_with_output().unwrap();
    assert!(lade.status.success(), "{}", show(&lade));
    assert!(tar.status.success(), "tar -t: {}", show(&tar));
    assert_eq!(
        tar_names(&String::from_utf8_lossy(&tar.stdout)),
        local,
        "type=tar holds what type=local writes"
    );
    // the image ID is reported on stderr only
    let err = String::from_utf8_lossy(&lade.stderr);
    assert!(err.contains("writing image sha256:"), "{err}");
    // captured whole: nothing but the tarball, whatever the progress mode; `-o -` is the same
    for args in [
        &["-o", "type=tar,dest=-"][..],
        &["-q", "-o", "type=tar,dest=-"],
        &["--progress", "json", "-o", "type=tar,dest=-"],
        &["-q", "-o", "-"],
    ] {
        let out = output(&mut f.build_cmd(args));
        assert!(out.status.success(), "{args:?}: {}", show(&out));
        assert_only_a_tarball(&out.stdout);
        let listed = with_stdin(Command::new("tar").args(["-tf", "-"]), out.stdout);
        assert!(listed.status.success(), "{}", show(&listed));
        assert_eq!(tar_names(&String::from_utf8_lossy(&listed.stdout)), local);
    }
    f.check_store();
}

#[test]
fn docker_and_oci_outputs_stream_to_stdout() {
    let f = Fixture::new();
    f.write("hello.txt", "hi\n");
    f.dockerfile("FROM base:1\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n");
    let cwd = f.ts.path("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    // type=docker,dest=- | docker load, then run it
    let name = format!("lade-build-test/{}:1", unique("stdout"));
    let _guard = crate::common::DockerImage { name: name.clone() };
    let mut lade = f
        .build_cmd(&["-q", "-t", &name, "-o", "type=docker,dest=-"])
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let load = crate::common::docker()
        .arg("load")
        .stdin(lade.stdout.take().unwrap())
        .output()
        .unwrap();
    let lade = lade.wait_with_output().unwrap();
    assert!(lade.status.success(), "{}", show(&lade));
    assert!(load.status.success(), "docker load: {}", show(&load));
    assert!(
        String::from_utf8_lossy(&load.stdout).contains(&name),
        "{}",
        show(&load)
    );
    let ran = run_ok(crate::common::docker().args(["run", "--rm", "--network=none", &name]));
    assert_eq!(ran, "hi\n");
    // type=oci,dest=- streams too (nothing else on stdout), and no file named `-` appears
    let out = output(f.build_cmd(&["-o", "type=oci,dest=-"]).current_dir(&cwd));
    assert!(out.status.success(), "{}", show(&out));
    assert_only_a_tarball(&out.stdout);
    let streamed = f.ts.path("streamed-oci.tar");
    std::fs::write(&streamed, &out.stdout).unwrap();
    assert!(
        std::fs::read_dir(&cwd).unwrap().next().is_none(),
        "dest=- must not create a file in the working directory"
    );
    // type=oci,dest=FILE: an OCI archive skopeo reads, with the image's config and layers
    f.build(&["-t", "oci:1"]);
    let want_layers = f.inspect("oci:1")["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len();
    let file = f.ts.path("img-oci.tar");
    run_ok(&mut f.build_cmd(&["-q", "-o", &format!("type=oci,dest={}", file.display())]));
    crate::common::require_tool("skopeo", "skopeo");
    for archive in [&file, &streamed] {
        let spec = format!("oci-archive:{}", archive.display());
        let info: Value =
            serde_json::from_str(&run_ok(Command::new("skopeo").args(["inspect", &spec]))).unwrap();
        assert_eq!(
            info["Layers"].as_array().unwrap().len(),
            want_layers,
            "{info}"
        );
        let cfg: Value = serde_json::from_str(&run_ok(
            Command::new("skopeo").args(["inspect", "--config", &spec]),
        ))
        .unwrap();
        assert_eq!(
            cfg["config"]["Cmd"],
            serde_json::json!(["cat", "/hello.txt"])
        );
        assert_eq!(
            cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
            want_layers
        );
    }
    f.check_store();
}

#[test]
fn tarball_outputs_refuse_a_terminal() {
    crate::common::require_tool("script", "bsdutils");
    let f = Fixture::new();
    f.dockerfile("FROM base:1\nRUN echo never > /x\n");
    for spec in [
        "type=tar,dest=-",
        "type=docker,dest=-",
        "type=oci,dest=-",
        "-",
    ] {
        // `script` gives lade a terminal on stdout (and stderr)
        let cmd = format!(
            "{} --root {} build -o {spec} {}",
            crate::common::lade_bin().display(),
            f.ts.root.display(),
            f.ctx.display()
        );
        let out = output(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{spec}: {text}");
        assert!(text.contains("refusing to write"), "{spec}: {text}");
        assert!(text.contains("to a terminal"), "{spec}: {text}");
        assert!(
            !text.contains("RUN echo never"),
            "refused before building: {text}"
        );
    }
}

/// `tar -c [flag] -C dir .` as bytes.
fn tar_of(dir: &Path, flag: &str) -> Vec<u8> {
    let mut c = Command::new("tar");
    c.arg("-c");
    if !flag.is_empty() {
        c.arg(flag);
    }
    c.arg("-f").arg("-").arg("-C").arg(dir).arg(".");
    let out = output(&mut c);
    assert!(out.status.success(), "{}", show(&out));
    out.stdout
}

#[test]
fn context_archive_on_stdin_in_every_compression() {
    let f = Fixture::new();
    f.write("data.txt", "from the archive\n");
    f.write("skip.log", "ignored\n");
    f.write(".dockerignore", "*.log\n");
    f.dockerfile("FROM base:1\nCOPY . /ctx/\nRUN cat /ctx/data.txt > /seen.txt\n");
    for (flag, what) in [
        ("", "plain"),
        ("-z", "gzip"),
        ("-j", "bzip2"),
        ("-J", "xz"),
        ("--zstd", "zstd"),
    ] {
        let dest = f.ts.path(&unique("out"));
        let mut c = f.ts.lade();
        c.args(["build", "--progress", "json", "-o"])
            .arg(format!("type=local,dest={}", dest.display()))
            .arg("-");
        let out = with_stdin(&mut c, tar_of(&f.ctx, flag));
        assert!(out.status.success(), "{what}: {}", show(&out));
        assert_eq!(
            std::fs::read_to_string(dest.join("seen.txt")).unwrap(),
            "from the archive\n",
            "{what}"
        );
        // .dockerignore of the archive applies
        assert!(!dest.join("ctx/skip.log").exists(), "{what}");
        assert!(dest.join("ctx/Dockerfile").is_file(), "{what}");
        // the same files are the same cache keys, whatever the compression
        if what != "plain" {
            assert!(
                executed(&steps(&out)).is_empty(),
                "{what}: {:?}",
                steps(&out)
            );
        }
    }
    // the extracted context is gone, the store is consistent
    f.check_store();
}

#[test]
fn context_archive_dockerfile_is_named_inside_it() {
    let f = Fixture::new();
    f.write("data.txt", "d\n");
    f.write("skip.txt", "s\n");
    f.write("build/app.Dockerfile", "FROM base:1\nCOPY . /ctx/\n");
    f.write("build/app.Dockerfile.dockerignore", "skip.txt\n");
    f.write(".dockerignore", "data.txt\n");
    let dest = f.ts.path("out");
    let mut c = f.ts.lade();
    c.args(["build", "-q", "-f", "build/app.Dockerfile", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg("-");
    let out = with_stdin(&mut c, tar_of(&f.ctx, "-z"));
    assert!(out.status.success(), "{}", show(&out));
    // the Dockerfile-specific ignore file wins over the context's
    assert!(dest.join("ctx/data.txt").is_file());
    assert!(!dest.join("ctx/skip.txt").exists());
    // a missing Dockerfile is named, with what to do
    let mut c = f.ts.lade();
    c.args(["build", "-f", "nope/Dockerfile", "-"]);
    let out = with_stdin(&mut c, tar_of(&f.ctx, ""));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no nope/Dockerfile"), "{err}");
    assert!(err.contains("-f"), "{err}");
    f.check_store();
}

#[test]
fn context_archive_is_extracted_safely() {
    let f = Fixture::new();
    // a host file that would build if lade followed the archive's symlink on the host
    let host = f.ts.path("host");
    std::fs::create_dir_all(&host).unwrap();
    let secret = host.join("secret.Dockerfile");
    std::fs::write(&secret, "FROM base:1\nLABEL leaked=yes\n").unwrap();
    let arc = f.ts.path("arc");
    std::fs::create_dir_all(&arc).unwrap();
    std::os::unix::fs::symlink(&secret, arc.join("Dockerfile")).unwrap();
    let mut c = f.ts.lade();
    c.args(["build", "-t", "leak:1", "-"]);
    let out = with_stdin(&mut c, tar_of(&arc, ""));
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no Dockerfile"),
        "{}",
        show(&out)
    );
    run_fail(f.ts.lade().args(["inspect", "leak:1"]));
    // `../` names land inside the extraction root, never next to it
    let mut b = tar::Builder::new(Vec::new());
    let df = b"FROM base:1\nCOPY . /ctx/\n";
    let mut h = tar::Header::new_ustar();
    h.set_size(df.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "Dockerfile", &df[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    // the tar crate refuses `..` in set_path: write the name field directly
    h.as_old_mut().name[..17].copy_from_slice(b"../../escaped.txt");
    h.set_cksum();
    b.append(&h, &b"bad"[..]).unwrap();
    // a context is no layer: `.wh.kept.txt` is a file, it does not delete kept.txt
    for name in ["kept.txt", ".wh.kept.txt"] {
        let mut h = tar::Header::new_ustar();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &b"kept"[..]).unwrap();
    }
    let data = b.into_inner().unwrap();
    let dest = f.ts.path("out");
    let mut c = f.ts.lade();
    c.args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg("-");
    let out = with_stdin(&mut c, data);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        std::fs::read_to_string(dest.join("ctx/escaped.txt")).unwrap(),
        "bad"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("ctx/kept.txt")).unwrap(),
        "kept"
    );
    assert!(!f.ts.root.join("escaped.txt").exists());
    assert!(!f.ts.root.join("tmp/escaped.txt").exists());
    // a corrupt archive is an error that names stdin, and leaves the store clean
    let mut c = f.ts.lade();
    c.args(["build", "-"]);
    let mut junk = vec![0x1f, 0x8b, 8, 0];
    junk.extend_from_slice(b"not really gzip");
    let out = with_stdin(&mut c, junk);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("build context archive on standard input"),
        "{err}"
    );
    f.check_store();
}

#[test]
fn stdin_dockerfile_and_file_flag_conflicts() {
    let f = Fixture::new();
    // a Dockerfile on stdin and -f: ambiguous, as docker says
    let mut c = f.ts.lade();
    c.args(["build", "-f", "Other.Dockerfile", "-"]);
    let out = with_stdin(&mut c, b"FROM base:1\n".to_vec());
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ambiguous Dockerfile source"), "{err}");
    assert!(err.contains("Other.Dockerfile"), "{err}");
    // -f - with context -: both cannot come from stdin
    let mut c = f.ts.lade();
    c.args(["build", "-f", "-", "-"]);
    let out = with_stdin(&mut c, tar_of(&f.ctx, ""));
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read both the build context and the Dockerfile"),
        "{err}"
    );
    // a Dockerfile on stdin and no -f still builds, with no context
    let mut c = f.ts.lade();
    c.args(["build", "-q", "-t", "plain-stdin:1", "-"]);
    let out = with_stdin(&mut c, b"FROM base:1\nRUN echo ok > /ok\n".to_vec());
    assert!(out.status.success(), "{}", show(&out));
    let mut c = f.ts.lade();
    c.args(["build", "-"]);
    let out = with_stdin(&mut c, b"FROM base:1\nCOPY x /x\n".to_vec());
    assert!(
        !out.status.success(),
        "COPY needs a context: {}",
        show(&out)
    );
}

#[test]
fn json_progress_names_each_step_as_written() {
    let f = Fixture::new();
    let text = "ARG BASE=base:1\nFROM ${BASE} AS build\nRUN echo a \\\n && echo b > /a\n\nFROM ${BASE}\nCOPY --from=build /a /a\nLABEL x=y\n";
    f.dockerfile(text);
    let s = f.build(&["--no-cache"]);
    let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
    // one base image is one step, named by the FROM that asked for it first, as written
    assert_eq!(
        names,
        [
            "FROM ${BASE} AS build",
            "RUN echo a  && echo b > /a",
            "COPY --from=build /a /a"
        ],
        "{s:?}"
    );
    assert!(!names.iter().any(|n| n.contains("base:1")), "{names:?}");
}

/// Interface names in a `/proc/net/dev` listing.
fn net_dev_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim().to_string())
        .collect()
}

#[test]
fn network_host_and_none_for_the_build_and_per_run() {
    let host_before = net_dev_names(&std::fs::read_to_string("/proc/net/dev").unwrap());
    assert!(
        host_before.len() > 1,
        "this test needs a host with an interface besides lo: {host_before:?}"
    );
    let f = Fixture::new();
    f.dockerfile(
        "FROM base:1\nRUN cat /proc/net/dev > /default.txt && ls /sys/class/net > /default-sys.txt\nRUN --network=host cat /proc/net/dev > /host.txt\nRUN --network=none cat /proc/net/dev > /none.txt && ls /sys/class/net > /none-sys.txt\n",
    );
    let with_none = f.export(&["--network", "none"]);
    let with_host = f.export(&["--network", "host"]);
    let host_after = net_dev_names(&std::fs::read_to_string("/proc/net/dev").unwrap());
    let read = |d: &Path, n: &str| std::fs::read_to_string(d.join(n)).unwrap();
    let lo: std::collections::BTreeSet<String> = ["lo".to_string()].into();
    // the host's interfaces, tolerating one appearing or going away during the build
    let is_host = |seen: &std::collections::BTreeSet<String>| {
        host_before
            .intersection(&host_after)
            .all(|i| seen.contains(i))
            && seen
                .iter()
                .all(|i| host_before.contains(i) || host_after.contains(i))
    };
    for (dir, default_is_host) in [(&with_none, false), (&with_host, true)] {
        let default = net_dev_names(&read(dir, "default.txt"));
        if default_is_host {
            assert!(
                is_host(&default),
                "--network host: {default:?} vs {host_before:?}"
            );
        } else {
            assert_eq!(default, lo, "--network none");
            assert_eq!(read(dir, "default-sys.txt"), "lo\n");
        }
        // RUN --network wins over the build's default either way
        let host = net_dev_names(&read(dir, "host.txt"));
        assert!(
            is_host(&host),
            "RUN --network=host: {host:?} vs {host_before:?}"
        );
        assert_eq!(net_dev_names(&read(dir, "none.txt")), lo);
        assert_eq!(read(dir, "none-sys.txt"), "lo\n");
    }
}

#[test]
fn progress_tty_needs_a_terminal_and_draws_the_live_view() {
    crate::common::require_tool("script", "bsdutils");
    let f = Fixture::new();
    f.dockerfile("FROM base:1\nRUN echo tty-explicit\n");
    // not a terminal: refused before anything runs, as BuildKit's progressui refuses it
    let before = f.ts.fingerprint();
    let err = f.build_fail(&["--progress", "tty"]);
    assert!(err.contains("--progress tty needs a terminal"), "{err}");
    assert!(!err.contains("tty-explicit"), "{err}");
    assert_eq!(
        f.ts.fingerprint(),
        before,
        "a refused build changes nothing"
    );
    // -q is progress=quiet: another explicit mode contradicts it, as buildx says
    let err = f.build_fail(&["-q", "--progress", "tty"]);
    assert!(err.contains("cannot be used together"), "{err}");
    assert_eq!(f.ts.fingerprint(), before);
    // a terminal: the live view, even with stdout redirected to a file
    let id_file = f.ts.path("stdout.txt");
    let cmd = format!(
        "{} --root {} build --no-cache --progress tty {} > {}",
        crate::common::lade_bin().display(),
        f.ts.root.display(),
        f.ctx.display(),
        id_file.display()
    );
    let out = run_ok(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    assert!(out.contains("[+] Building"), "{out}");
    assert!(out.contains("FINISHED"), "{out}");
    assert!(out.contains("=> [2/2] RUN echo tty-explicit"), "{out}");
    assert!(out.contains("\u{1b}["), "{out}");
    let id = std::fs::read_to_string(&id_file).unwrap();
    assert!(id.trim().starts_with("sha256:"), "{id}");
}

#[test]
fn predefined_platform_args_match_buildkit() {
    let f = Fixture::new();
    let scratch = f.ts.path("docker");
    std::fs::create_dir_all(&scratch).unwrap();
    let base = crate::common::DockerImage {
        name: format!("lade-build-test/{}:1", unique("args-base")),
    };
    run_ok(
        crate::common::docker()
            .arg("import")
            .arg(base_tar())
            .arg(&base.name),
    );
    let body = r#"RUN echo "before: TP=${TARGETPLATFORM-unset} BP=${BUILDPLATFORM-unset}" > /before.txt
ARG BUILDPLATFORM
ARG BUILDOS
ARG BUILDARCH
ARG BUILDVARIANT
ARG TARGETPLATFORM
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT
ARG NOTHING
RUN echo "BP=$BUILDPLATFORM BO=$BUILDOS BA=$BUILDARCH BV=${BUILDVARIANT-unset} TP=$TARGETPLATFORM TO=$TARGETOS TA=$TARGETARCH TV=${TARGETVARIANT-unset} N=${NOTHING-unset}" > /args.txt
"#;
    // BuildKit's values
    let ctx = scratch.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\n{body}", base.name),
    )
    .unwrap();
    let theirs = scratch.join("out");
    run_ok(
        crate::common::docker()
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "-q", "--network=none", "-o"])
            .arg(format!("type=local,dest={}", theirs.display()))
            .arg(&ctx),
    );
    // lade's
    f.dockerfile(&format!("FROM base:1\n{body}"));
    let ours = f.export(&[]);
    for file in ["before.txt", "args.txt"] {
        let want = std::fs::read_to_string(theirs.join(file)).unwrap();
        assert_eq!(
            std::fs::read_to_string(ours.join(file)).unwrap(),
            want,
            "{file}"
        );
    }
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            std::fs::read_to_string(ours.join("args.txt")).unwrap(),
            "BP=linux/amd64 BO=linux BA=amd64 BV= TP=linux/amd64 TO=linux TA=amd64 TV= N=unset\n"
        );
    }
}

#[test]
fn stages_are_used_in_file_order() {
    let f = Fixture::new();
    // `FROM later` names a stage defined after it: BuildKit reads it as an image reference
    run_ok(f.ts.lade().args(["tag", "base:1", "later"]));
    f.dockerfile(
        r#"FROM base:1 AS first
RUN echo first > /first

FROM base:1 AS skipped
COPY --from=last /nothing /nothing
RUN --mount=type=bind,from=last,target=/m true

FROM later AS from-image
RUN test ! -e /later && test ! -e /first && echo image > /from-image

FROM first AS later
RUN echo later > /later

FROM base:1 AS last
COPY --from=first /first /out/
COPY --from=from-image /from-image /out/
COPY --from=later /later /out/
"#,
    );
    // a stage nobody needs may name later stages: it is never lowered
    let out = f.export(&[]);
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("out/first"), "first\n");
    assert_eq!(read("out/from-image"), "image\n");
    assert_eq!(read("out/later"), "later\n");
    assert!(!out.join("nothing").exists());

    // a needed stage naming a later one fails, naming both and the line (BuildKit's words)
    f.dockerfile("FROM base:1 AS a\nCOPY --from=b /x /x\nFROM base:1 AS b\nRUN true\n");
    let err = f.build_fail(&["--target", "a"]);
    assert!(
        err.contains(
            r#"cannot copy from stage "b", it needs to be defined before current stage "a""#
        ),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    f.dockerfile("FROM base:1 AS a\nCOPY --from=1 /x /x\nFROM base:1\nRUN true\n");
    let err = f.build_fail(&["--target", "a"]);
    assert!(
        err.contains(r#"cannot copy from stage "1", it needs to be defined before"#),
        "{err}"
    );
    f.dockerfile(
        "FROM base:1 AS a\nRUN --mount=type=bind,from=b,target=m true\nFROM base:1 AS b\nRUN true\n",
    );
    let err = f.build_fail(&["--target", "a"]);
    assert!(
        err.contains(
            r#"cannot mount from stage "b" to "m", stage needs to be defined before current command"#
        ),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    // the needed later stage itself is fine once the order is right
    f.dockerfile("FROM base:1 AS b\nRUN echo b > /b\nFROM base:1 AS a\nCOPY --from=b /b /b\n");
    let out = f.export(&["--target", "a"]);
    assert_eq!(std::fs::read_to_string(out.join("b")).unwrap(), "b\n");
    f.check_store();
}

#[test]
fn add_checksum_needs_one_http_source() {
    let f = Fixture::new();
    f.write("local.txt", "local\n");
    let sum = format!("sha256:{}", "0".repeat(64));
    for (df, want) in [
        (
            format!("FROM base:1\nADD --checksum={sum} local.txt /x\n"),
            "checksum requires HTTP(S) or Git sources",
        ),
        (
            format!(
                "FROM base:1\nADD --checksum={sum} http://127.0.0.1:9/a http://127.0.0.1:9/b /d/\n"
            ),
            "checksum can't be specified for multiple sources",
        ),
        (
            format!("FROM base:1\nADD --checksum={sum} local.txt http://127.0.0.1:9/a /d/\n"),
            "checksum can't be specified for multiple sources",
        ),
        (
            format!("FROM base:1\nADD --checksum={sum} <<EOF /d/x\nhi\nEOF\n"),
            "checksum can't be specified for multiple sources",
        ),
        (
            "FROM base:1\nADD --checksum=md5:abc http://127.0.0.1:9/a /x\n".to_string(),
            "invalid --checksum \"md5:abc\"",
        ),
    ] {
        f.dockerfile(&df);
        let err = f.build_fail(&[]);
        assert!(err.contains(want), "{df}\n{err}");
        assert!(err.contains("Dockerfile:2"), "{err}");
    }
    // a checksum on one URL among several ADDs applies to that ADD only (covered with a
    // server in add_downloads_urls_with_checksum); nothing was left behind by the refusals
    f.check_store();
}

/// A tar archive whose entries are owned by 1234:5678: `d/`, `d/f` (0640), `d/l -> f`, and
/// `implied/sub/g` without entries for its directories.
fn owned_archive() -> Vec<u8> {
    let mut v = Vec::new();
    let mut b = tar::Builder::new(&mut v);
    let head = |kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_size(0);
        h
    };
    b.append_data(&mut head(tar::EntryType::Directory, 0o750), "d", &[][..])
        .unwrap();
    let mut h = head(tar::EntryType::Regular, 0o640);
    h.set_size(5);
    b.append_data(&mut h, "d/f", &b"file\n"[..]).unwrap();
    b.append_link(&mut head(tar::EntryType::Symlink, 0o777), "d/l", "f")
        .unwrap();
    let mut h = head(tar::EntryType::Regular, 0o600);
    h.set_size(2);
    b.append_data(&mut h, "implied/sub/g", &b"g\n"[..]).unwrap();
    b.finish().unwrap();
    drop(b);
    v
}

#[test]
fn add_chown_owns_the_extracted_entries() {
    let f = Fixture::new();
    std::fs::write(f.ctx.join("a.tar"), owned_archive()).unwrap();
    f.dockerfile(
        "FROM base:1\nADD --chown=lade:wheel a.tar /owned/\nADD a.tar /kept/\nADD --chown=7:8 --chmod=600 a.tar /mode/\n",
    );
    let out = f.export(&[]);
    // BuildKit v0.23+ (moby/buildkit#5987): every entry gets the --chown owner...
    assert_eq!(meta(&out.join("owned")), (0o755, 1000, 10));
    assert_eq!(meta(&out.join("owned/d")), (0o750, 1000, 10));
    assert_eq!(meta(&out.join("owned/d/f")), (0o640, 1000, 10));
    assert_eq!(meta(&out.join("owned/d/l")).1, 1000);
    assert_eq!(meta(&out.join("owned/implied/sub/g")), (0o600, 1000, 10));
    // ...but directories no entry names are made as root, 0755
    assert_eq!(meta(&out.join("owned/implied")), (0o755, 0, 0));
    assert_eq!(meta(&out.join("owned/implied/sub")), (0o755, 0, 0));
    // without --chown the archive's owners stay
    assert_eq!(meta(&out.join("kept/d/f")), (0o640, 1234, 5678));
    assert_eq!(meta(&out.join("kept/d/l")).1, 1234);
    assert_eq!(meta(&out.join("kept")), (0o755, 0, 0));
    // --chmod does not touch extracted entries (nor the destination it creates)
    assert_eq!(meta(&out.join("mode/d/f")), (0o640, 7, 8));
    assert_eq!(meta(&out.join("mode/d")), (0o750, 7, 8));
    assert_eq!(meta(&out.join("mode")), (0o755, 7, 8));
    f.check_store();
}

#[test]
fn copy_chmod_symbolic_modes() {
    let f = Fixture::new();
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(
            f.ctx.join(p),
            std::os::unix::fs::PermissionsExt::from_mode(m),
        )
        .unwrap()
    };
    f.write("f", "f\n");
    f.write("x", "x\n");
    f.write("tree/a", "a\n");
    f.write("tree/run", "run\n");
    f.write("tree/sub/b", "b\n");
    mode("f", 0o640);
    mode("x", 0o750);
    mode("tree/a", 0o600);
    mode("tree/run", 0o700);
    mode("tree/sub/b", 0o600);
    mode("tree/sub", 0o700);
    f.dockerfile(
        r#"FROM base:1
COPY --chmod=u=rwX,go=rX tree /t/
COPY --chmod=go-w,+x f /f
COPY --chmod=g=u x /x
COPY --chmod=a+X f x /both/
COPY --chmod=+x <<EOF /script
echo hi
EOF
COPY --link --chmod=u+s,o= x /linked
COPY --chmod= f /unchanged
COPY --chmod=0604 f /octal
"#,
    );
    let out = f.export(&[]);
    // relative to each entry's own mode; X only for directories and executables
    assert_eq!(meta(&out.join("t/sub")).0, 0o755);
    assert_eq!(meta(&out.join("t/sub/b")).0, 0o644);
    assert_eq!(meta(&out.join("t/a")).0, 0o644);
    assert_eq!(meta(&out.join("t/run")).0, 0o755);
    assert_eq!(meta(&out.join("f")).0, 0o751);
    assert_eq!(meta(&out.join("x")).0, 0o770);
    assert_eq!(meta(&out.join("both/f")).0, 0o640);
    assert_eq!(meta(&out.join("both/x")).0, 0o751);
    assert_eq!(meta(&out.join("script")).0, 0o755);
    assert_eq!(meta(&out.join("linked")).0, 0o4750);
    assert_eq!(meta(&out.join("unchanged")).0, 0o640);
    assert_eq!(meta(&out.join("octal")).0, 0o604);
    // the same symbolic mode is a cache hit
    let s = f.build(&[]);
    assert!(executed(&s).is_empty(), "{s:?}");
    // a value that is neither octal nor symbolic names itself and the line
    f.dockerfile("FROM base:1\nRUN true\nCOPY --chmod=u+q f /bad\n");
    let err = f.build_fail(&[]);
    assert!(err.contains("invalid chmod parameter 'u+q'"), "{err}");
    assert!(err.contains("Dockerfile:3"), "{err}");
    f.dockerfile("FROM base:1\nCOPY --chmod=17777 f /bad\n");
    let err = f.build_fail(&[]);
    assert!(err.contains("between 0 and 07777"), "{err}");
    f.check_store();
}

#[test]
fn tarball_outputs_write_into_devices_and_through_symlinks() {
    let f = Fixture::new();
    f.write("hello.txt", "hi\n");
    f.dockerfile("FROM base:1\nCOPY hello.txt /hello.txt\n");
    let local = tree_names(&f.export(&[]));
    // /dev/null stays the device (a temp file renamed over it would replace it)
    run_ok(&mut f.build_cmd(&["-q", "-o", "type=tar,dest=/dev/null"]));
    let null = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&null.file_type()),
        "/dev/null was replaced"
    );
    // a symlink to a file: the file gets the tarball, the link stays a link
    let target = f.ts.path("real.tar");
    std::fs::write(&target, "old").unwrap();
    let link = f.ts.path("link.tar");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    run_ok(&mut f.build_cmd(&["-q", "-o", &format!("type=tar,dest={}", link.display())]));
    assert!(link.is_symlink());
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&target));
    assert_eq!(tar_names(&listing), local);
    // a FIFO is written into as it is: a reader on the other end gets the whole tarball
    let fifo = f.ts.path("out.fifo");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let reader = Command::new("tar")
        .arg("-tf")
        .arg(&fifo)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    run_ok(&mut f.build_cmd(&["-q", "-o", &format!("type=tar,dest={}", fifo.display())]));
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(tar_names(&String::from_utf8_lossy(&out.stdout)), local);
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::symlink_metadata(&fifo).unwrap().file_type()
    ));
    f.check_store();
}
