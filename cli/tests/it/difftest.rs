//! Differential tests: every case in `testdata/difftest/<case>/` is built by BuildKit
//! (`DOCKER_BUILDKIT=1 /usr/bin/docker build`) and by `lade build`, from one identical base
//! image, and the two results must agree on the final filesystem and the image config.
//!
//! A case folder is a build context: `Dockerfile`, context files, optional `.dockerignore`, plus
//! harness files that are not part of the context:
//! - `case.toml` (optional): `about`, `build_args = ["K=V", "K"]`, `target = "stage"`,
//!   `parent = "dir"` (a sub-folder context built first by the same builder; its image is
//!   `@PARENT@` in the case's Dockerfile), `reference = "Dockerfile.buildkit"` +
//!   `reference_reason` (see [`Case::reference`]).
//! - `setup.sh` (optional): run by `sh -eu` inside the temp copy of the context, to make what git
//!   cannot store (modes, owners, hardlinks, empty dirs, archives).
//!
//! `@BASE@` in a Dockerfile is the base image: the busybox rootfs of `testdata/mkrootfs.sh`,
//! `docker import`ed once per test process and `docker save`d; that same archive is
//! `lade load`ed into each case's private store, so both builders start from the same image ID.
//!
//! Both results are exported as archives (`docker save`, `lade save`), their layers are applied
//! in order with the store's own extractor ([`lade_cache::extract`] in `Apply` mode: whiteouts
//! and opaque dirs delete), and the trees are compared path by path ([`Entry`]). The configs are
//! compared field by field after dropping [`IGNORED`]. A mismatch panics with a readable diff:
//! the first [`MAX_SHOWN`] differing paths with both sides.
//!
//! `LADE_DIFFTEST_SELF=1` replaces lade by a second BuildKit build (`--no-cache`): BuildKit
//! against itself, which proves the harness and the ignore list (it must pass).
//! `LADE_DIFFTEST_KEEP=1` keeps the flattened trees of failing cases and prints where;
//! `LADE_DIFFTEST_DUMP=1` (with `--nocapture`) prints BuildKit's result of each case (its
//! changes to the base image and its config).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{Cursor, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};

use lade_cache::digest::Digest;
use lade_cache::extract::{extract, ExtractOptions, WhiteoutMode};
use serde_json::{json, Map, Value};

use crate::common::*;

/// What the comparison deliberately ignores, by name, with the reason. Everything else in the
/// filesystem and in the image config JSON is compared.
pub const IGNORED: &[(&str, &str)] = &[
    (
        "mtime, atime, ctime of every path",
        "build-time clocks: two BuildKit builds of the same Dockerfile differ here",
    ),
    ("created", "image creation time"),
    ("history[].created", "step time"),
    (
        "history[].comment when it is `buildkit.dockerfile.v0`",
        "BuildKit's frontend name, not a Dockerfile semantic (other comments, e.g. a base \
         image's `Imported from -`, are compared)",
    ),
    (
        "rootfs.diff_ids (values)",
        "digests of the layer tars, which embed mtimes; the layer count is compared, and the \
         layer contents through the flattened filesystem",
    ),
    (
        "docker_version, container, container_config",
        "set by the classic builder / daemon, not by BuildKit's image exporter",
    ),
    (
        "moby.buildkit.buildinfo.v1",
        "BuildKit's build provenance (frontend and source pins), BuildKit-specific metadata",
    ),
    (
        "config keys with an empty value (null, \"\", [], {}, false)",
        "`\"OnBuild\": null` and an absent `OnBuild` mean the same to every runtime",
    ),
    (
        "symlink permission bits",
        "always 0777 on Linux (there is no lchmod); the link target is compared",
    ),
    (
        "history[].created_by, only in cases with `reference = ...`",
        "the reference Dockerfile spells the same steps differently (see `reference_reason`)",
    ),
];

/// The history comment BuildKit's Dockerfile frontend writes on every entry it adds.
const BUILDKIT_COMMENT: &str = "buildkit.dockerfile.v0";

/// How many differing paths a failure shows.
const MAX_SHOWN: usize = 40;

/// Files of a case folder that belong to the harness, not to the build context.
const HARNESS_FILES: &[&str] = &["case.toml", "setup.sh"];

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case folder, in the order the tests are declared.
        const CASES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )*
    };
}

cases!(
    multistage,
    stage_order,
    stage_by_index_and_image,
    scratch_stage,
    target_stage,
    copy_dir_rules,
    copy_globs,
    copy_into_existing,
    copy_symlinks,
    copy_hardlinks,
    copy_modes,
    copy_chown_chmod,
    copy_from_chown,
    special_names,
    add_archives,
    dockerignore,
    run_whiteouts,
    run_layers_replace,
    run_special_files,
    run_mount_file_targets,
    user_and_groups,
    workdir,
    env_arg_expansion,
    arg_scoping,
    expansion_patterns,
    build_args,
    shell_and_exec_forms,
    heredocs,
    onbuild,
    config_metadata,
    entrypoint_cmd_inherit,
    volume_then_run,
);

fn difftest_dir() -> PathBuf {
    workspace_root().join("testdata/difftest")
}

/// A case's `case.toml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What the case exercises (documentation only).
    #[allow(dead_code)]
    about: Option<String>,
    #[serde(default)]
    build_args: Vec<String>,
    target: Option<String>,
    /// Sub-folder built first by the same builder, referenced as `@PARENT@`.
    parent: Option<String>,
    /// BuildKit builds this file (in the case folder) instead of `Dockerfile`: an equivalent
    /// spelled with what the reference frontend (docker 20.10's built-in Dockerfile frontend,
    /// syntax 1.2) understands, for features it lacks (heredocs, `${x#pat}`). The comparison is
    /// the same except `history[].created_by`.
    reference: Option<String>,
    #[allow(dead_code)]
    reference_reason: Option<String>,
}

impl Case {
    fn load(dir: &Path) -> Case {
        let p = dir.join("case.toml");
        if !p.exists() {
            return Case::default();
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let case: Case = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if case.reference.is_some() {
            assert!(
                case.reference_reason.is_some(),
                "{}: `reference` needs a `reference_reason`",
                p.display()
            );
        }
        case
    }

    fn excluded(&self) -> Vec<String> {
        let mut v: Vec<String> = HARNESS_FILES.iter().map(|s| s.to_string()).collect();
        v.extend(self.parent.clone());
        v.extend(self.reference.clone());
        v
    }
}

// ---------------------------------------------------------------------------------------------
// The shared base image.

/// The base image, shared by the cases running at the same time in this process: imported once,
/// removed (`docker rmi`) when the last case using it finishes.
struct Base {
    name: String,
    /// `docker save` of the base, for `lade load`.
    archive: PathBuf,
    _image: DockerImage,
    _dir: tempfile::TempDir,
}

fn base() -> Arc<Base> {
    static SHARED: Mutex<Weak<Base>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = slot.upgrade() {
        return b;
    }
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("rootfs.tar");
    base_rootfs_tar(&tar);
    let name = format!("lade-difftest/{}:1", unique("base"));
    run_ok(docker().arg("import").arg(&tar).arg(&name));
    let image = DockerImage { name: name.clone() };
    let archive = dir.path().join("base.tar");
    run_ok(docker().args(["save", "-o"]).arg(&archive).arg(&name));
    let b = Arc::new(Base {
        name,
        archive,
        _image: image,
        _dir: dir,
    });
    *slot = Arc::downgrade(&b);
    b
}

// ---------------------------------------------------------------------------------------------
// Running a case.

/// Who builds the side compared against BuildKit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Builder {
    BuildKit { no_cache: bool },
    Lade,
}

impl Builder {
    fn label(self) -> &'static str {
        match self {
            Builder::BuildKit { no_cache: false } => "buildkit",
            Builder::BuildKit { no_cache: true } => "buildkit2",
            Builder::Lade => "lade",
        }
    }
}

/// One builder's workspace for a case: its store (lade), its images, its temp dir.
struct Side {
    builder: Builder,
    dir: tempfile::TempDir,
    store: Option<TestStore>,
    images: Vec<DockerImage>,
}

impl Side {
    fn new(builder: Builder, base: &Base) -> Side {
        let dir = tempfile::tempdir().unwrap();
        let store = (builder == Builder::Lade).then(|| {
            let ts = TestStore::new();
            run_ok(ts.lade().args(["load", "-q", "-i"]).arg(&base.archive));
            ts
        });
        Side {
            builder,
            dir,
            store,
            images: Vec::new(),
        }
    }

    /// Builds `ctx` (Dockerfile at `dockerfile`, or `ctx/Dockerfile`) as `name`.
    fn build(
        &mut self,
        case_name: &str,
        case: &Case,
        ctx: &Path,
        dockerfile: Option<&Path>,
        name: &str,
    ) {
        let mut flags: Vec<String> = Vec::new();
        for a in &case.build_args {
            flags.push("--build-arg".into());
            flags.push(a.clone());
        }
        if let Some(t) = &case.target {
            flags.push("--target".into());
            flags.push(t.clone());
        }
        if let Some(f) = dockerfile {
            flags.push("-f".into());
            flags.push(f.display().to_string());
        }
        let mut cmd = match self.builder {
            Builder::BuildKit { no_cache } => {
                // Guard first: a failed build may still leave the tag behind.
                self.images.push(DockerImage {
                    name: name.to_string(),
                });
                let mut cmd = docker();
                cmd.env("DOCKER_BUILDKIT", "1")
                    .args(["build", "-q", "--network=none", "-t", name]);
                if no_cache {
                    cmd.arg("--no-cache");
                }
                cmd
            }
            Builder::Lade => {
                let mut cmd = self.store.as_ref().expect("lade side has a store").lade();
                cmd.args(["build", "-q", "--network", "none", "-t", name]);
                cmd
            }
        };
        cmd.args(&flags).arg(ctx).stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "difftest `{case_name}`: {} failed to build {} ({})\n{cmd:?}\nstdout:\n{}\nstderr:\n{}",
            self.builder.label(),
            name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    /// The built image as an archive (`docker save` / `lade save`).
    fn save(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(format!("{}.tar", unique("saved")));
        match self.builder {
            Builder::BuildKit { .. } => run_ok(docker().args(["save", "-o"]).arg(&out).arg(name)),
            Builder::Lade => run_ok(
                self.store
                    .as_ref()
                    .expect("lade side has a store")
                    .lade()
                    .args(["save", "-o"])
                    .arg(&out)
                    .arg(name),
            ),
        };
        out
    }
}

/// Copies a case folder to `dst` (symlinks kept as symlinks), leaving out `exclude` (top level).
fn copy_tree(src: &Path, dst: &Path, exclude: &[String]) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if exclude.contains(&name) {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else if ft.is_dir() {
            copy_tree(&from, &to, &[]);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

/// Makes the build context of `src` at `dst`: copy, `@BASE@`/`@PARENT@` substituted in
/// `Dockerfile` (and in `reference`, written next to the context), `setup.sh` run inside.
/// Returns the reference Dockerfile's path when there is one.
fn make_context(src: &Path, dst: &Path, case: &Case, subst: &[(&str, &str)]) -> Option<PathBuf> {
    copy_tree(src, dst, &case.excluded());
    let fill = |text: String| subst.iter().fold(text, |t, (k, v)| t.replace(k, v));
    let df = dst.join("Dockerfile");
    let text = std::fs::read_to_string(&df)
        .unwrap_or_else(|e| panic!("{}: {e}", src.join("Dockerfile").display()));
    std::fs::write(&df, fill(text)).unwrap();
    let reference = case.reference.as_ref().map(|r| {
        let text = std::fs::read_to_string(src.join(r))
            .unwrap_or_else(|e| panic!("{}: {e}", src.join(r).display()));
        let p = dst.with_extension("reference.Dockerfile");
        std::fs::write(&p, fill(text)).unwrap();
        p
    });
    let script = src.join("setup.sh");
    if script.exists() {
        run_ok(Command::new("sh").arg("-eu").arg(&script).current_dir(dst));
    }
    reference
}

/// The build inputs of a case, made once and read by both builders (so both see the same
/// bytes, e.g. of archives that `setup.sh` made).
struct Inputs {
    _dir: tempfile::TempDir,
    ctx: PathBuf,
    /// The reference Dockerfile BuildKit builds instead of `ctx/Dockerfile`, if any.
    reference: Option<PathBuf>,
    /// The parent's context, case and image name (the same name in each builder's namespace).
    parent: Option<(PathBuf, Case, String)>,
}

impl Inputs {
    fn new(name: &str, case: &Case, dir: &Path, base: &Base) -> Inputs {
        let tmp = tempfile::tempdir().unwrap();
        let mut subst: Vec<(&str, &str)> = vec![("@BASE@", base.name.as_str())];
        let parent_name = format!("lade-difftest/{}:1", unique(&format!("{name}-parent")));
        let parent = case.parent.as_ref().map(|p| {
            let pdir = dir.join(p);
            let pcase = Case::load(&pdir);
            let pctx = tmp.path().join("parent-ctx");
            make_context(&pdir, &pctx, &pcase, &subst);
            (pctx, pcase, parent_name.clone())
        });
        if parent.is_some() {
            subst.push(("@PARENT@", parent_name.as_str()));
        }
        let ctx = tmp.path().join("ctx");
        let reference = make_context(dir, &ctx, case, &subst);
        Inputs {
            _dir: tmp,
            ctx,
            reference,
            parent,
        }
    }
}

/// Builds a case on one side; returns the saved archive.
fn build_side(side: &mut Side, case_name: &str, case: &Case, inputs: &Inputs) -> PathBuf {
    if let Some((pctx, pcase, pname)) = &inputs.parent {
        side.build(case_name, pcase, pctx, None, pname);
    }
    let dockerfile = match side.builder {
        Builder::BuildKit { .. } => inputs.reference.as_deref(),
        Builder::Lade => None,
    };
    let image = format!("lade-difftest/{}:1", unique(&case_name.replace('_', "-")));
    side.build(case_name, case, &inputs.ctx, dockerfile, &image);
    side.save(&image)
}

fn run_case(name: &str) {
    let dir = difftest_dir().join(name);
    assert!(dir.is_dir(), "no case folder {}", dir.display());
    let case = Case::load(&dir);
    let base = base();
    let other = if std::env::var_os("LADE_DIFFTEST_SELF").is_some() {
        Builder::BuildKit { no_cache: true }
    } else {
        Builder::Lade
    };
    let inputs = Inputs::new(name, &case, &dir, &base);
    let mut bk = Side::new(Builder::BuildKit { no_cache: false }, &base);
    let mut them = Side::new(other, &base);
    let bk_archive = build_side(&mut bk, name, &case, &inputs);
    let their_archive = build_side(&mut them, name, &case, &inputs);

    let bk_img = Flat::from_archive(&bk_archive, &bk.dir.path().join("flat"));
    let their_img = Flat::from_archive(&their_archive, &them.dir.path().join("flat"));

    if std::env::var_os("LADE_DIFFTEST_DUMP").is_some() {
        dump(name, &base, &bk_img, &bk.dir.path().join("base-flat"));
    }
    let mut report = String::new();
    diff_trees(&bk_img.tree, &their_img.tree, other.label(), &mut report);
    diff_configs(
        &bk_img.config,
        &their_img.config,
        case.reference.is_some(),
        other.label(),
        &mut report,
    );
    if !report.is_empty() {
        let ignored: Vec<&str> = IGNORED.iter().map(|(what, _)| *what).collect();
        let mut msg = format!(
            "difftest `{name}`: {} differs from BuildKit (case: {})\n{report}\
             (ignored by design: {})\n",
            other.label(),
            dir.display(),
            ignored.join("; ")
        );
        if std::env::var_os("LADE_DIFFTEST_KEEP").is_some() {
            let a = bk.dir.keep();
            let b = them.dir.keep();
            msg.push_str(&format!(
                "\nkept: {} and {}\n",
                a.join("flat").display(),
                b.join("flat").display()
            ));
        }
        panic!("{msg}");
    }
}

/// Prints what BuildKit made of a case: the paths that differ from the base image and the
/// comparable config (`LADE_DIFFTEST_DUMP=1`, with `--nocapture`).
fn dump(name: &str, base: &Base, img: &Flat, scratch: &Path) {
    let base_img = Flat::from_archive(&base.archive, scratch);
    let mut out = format!("=== {name}: BuildKit's result, against the base image\n");
    let paths: BTreeSet<&String> = base_img.tree.keys().chain(img.tree.keys()).collect();
    for p in paths {
        match (base_img.tree.get(p), img.tree.get(p)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => out.push_str(&format!("  ~ {p}: {a}  =>  {b}\n")),
            (Some(_), None) => out.push_str(&format!("  - {p}\n")),
            (None, Some(b)) => out.push_str(&format!("  + {p}: {b}\n")),
            (None, None) => unreachable!(),
        }
    }
    for (k, v) in comparable_config(&img.config, false) {
        out.push_str(&format!("  {k}: {v}\n"));
    }
    eprintln!("{out}");
}

// ---------------------------------------------------------------------------------------------
// Flattening an image archive.

/// An image with its layers applied onto one directory.
struct Flat {
    config: Value,
    tree: BTreeMap<String, Entry>,
}

impl Flat {
    /// Reads a `docker save`/`lade save` archive (its `manifest.json`) and applies its layers
    /// in order onto `dest` with the store's extractor.
    fn from_archive(archive: &Path, dest: &Path) -> Flat {
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let name = raw.strip_prefix("./").unwrap_or(&raw).to_string();
            if e.header().entry_type().is_file() {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                files.insert(name, data);
            }
        }
        let get = |n: &str| {
            files
                .get(n)
                .unwrap_or_else(|| panic!("{}: no {n} in the archive", archive.display()))
        };
        let manifest: Value = serde_json::from_slice(get("manifest.json")).unwrap();
        let m = &manifest[0];
        let config: Value = serde_json::from_slice(get(m["Config"].as_str().unwrap())).unwrap();
        std::fs::create_dir_all(dest).unwrap();
        for layer in m["Layers"].as_array().unwrap() {
            let layer = layer.as_str().unwrap();
            let (_, reader) =
                lade_cache::tarfmt::decompress(std::io::BufReader::new(Cursor::new(get(layer))))
                    .unwrap();
            let opts = ExtractOptions {
                whiteouts: WhiteoutMode::Apply,
                same_owner: true,
                xattrs: true,
                what: format!("layer {layer} of {}", archive.display()),
                ..ExtractOptions::default()
            };
            extract(reader, dest, &opts).unwrap_or_else(|e| panic!("{e}"));
        }
        Flat {
            config,
            tree: walk_tree(dest),
        }
    }
}

/// What is compared about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    /// Permission bits with setuid/setgid/sticky (`mode & 0o7777`); 0 for symlinks.
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: BTreeMap<String, String>,
    /// Other paths that are hardlinks of this one (same inode), sorted.
    links: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File {
        size: u64,
        sha256: String,
        preview: Option<String>,
    },
    Symlink(String),
    Char(u64),
    Block(u64),
    Fifo,
    Socket,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owner = format!("{}:{}", self.uid, self.gid);
        match &self.kind {
            Kind::Dir => write!(f, "dir {:04o} {owner}", self.mode)?,
            Kind::File {
                size,
                sha256,
                preview,
            } => {
                write!(f, "file {:04o} {owner} {size}B", self.mode)?;
                match preview {
                    Some(p) => write!(f, " {p:?}")?,
                    None => write!(f, " sha256:{}", &sha256[..16])?,
                }
            }
            Kind::Symlink(t) => write!(f, "symlink {owner} -> {t}")?,
            Kind::Char(d) => write!(f, "char {:04o} {owner} dev {d:#x}", self.mode)?,
            Kind::Block(d) => write!(f, "block {:04o} {owner} dev {d:#x}", self.mode)?,
            Kind::Fifo => write!(f, "fifo {:04o} {owner}", self.mode)?,
            Kind::Socket => write!(f, "socket {:04o} {owner}", self.mode)?,
        }
        if !self.xattrs.is_empty() {
            write!(f, " xattrs {:?}", self.xattrs)?;
        }
        if !self.links.is_empty() {
            write!(f, " hardlinked with {}", self.links.join(", "))?;
        }
        Ok(())
    }
}

/// Every path under `root` (as `/path`, `/` for the root itself).
fn walk_tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    walk_into(root, root, &mut out, &mut inodes);
    for group in inodes.values().filter(|g| g.len() > 1) {
        for p in group {
            let mut others: Vec<String> = group.iter().filter(|o| *o != p).cloned().collect();
            others.sort();
            out.get_mut(p).unwrap().links = others;
        }
    }
    out
}

fn walk_into(
    root: &Path,
    p: &Path,
    out: &mut BTreeMap<String, Entry>,
    inodes: &mut HashMap<(u64, u64), Vec<String>>,
) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let rel = format!("/{}", p.strip_prefix(root).unwrap().to_string_lossy());
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink(
            std::fs::read_link(p)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        )
    } else if ft.is_file() {
        let data = std::fs::read(p).unwrap();
        let preview = (data.len() <= 64)
            .then(|| String::from_utf8(data.clone()).ok())
            .flatten();
        Kind::File {
            size: data.len() as u64,
            sha256: Digest::of(&data).hex().to_string(),
            preview,
        }
    } else if ft.is_char_device() {
        Kind::Char(m.rdev())
    } else if ft.is_block_device() {
        Kind::Block(m.rdev())
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    if !ft.is_dir() && m.nlink() > 1 {
        inodes
            .entry((m.dev(), m.ino()))
            .or_default()
            .push(rel.clone());
    }
    let mut xattrs = BTreeMap::new();
    if let Ok(names) = xattr::list(p) {
        for n in names {
            let n = n.to_string_lossy().into_owned();
            let v = xattr::get(p, &n).ok().flatten().unwrap_or_default();
            xattrs.insert(n, format!("{:?}", String::from_utf8_lossy(&v)));
        }
    }
    out.insert(
        rel,
        Entry {
            mode: if ft.is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            },
            kind,
            uid: m.uid(),
            gid: m.gid(),
            xattrs,
            links: Vec::new(),
        },
    );
    if ft.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            walk_into(root, &n, out, inodes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing.

/// Appends to `report` every path that differs (first [`MAX_SHOWN`]).
fn diff_trees(
    bk: &BTreeMap<String, Entry>,
    them: &BTreeMap<String, Entry>,
    label: &str,
    report: &mut String,
) {
    let paths: BTreeSet<&String> = bk.keys().chain(them.keys()).collect();
    let mut lines = Vec::new();
    for p in paths {
        match (bk.get(p), them.get(p)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => lines.push(format!(
                "  ~ {p}\n      buildkit: {a}\n      {label:>8}: {b}"
            )),
            (Some(a), None) => lines.push(format!(
                "  - {p}\n      buildkit: {a}\n      {label:>8}: (missing)"
            )),
            (None, Some(b)) => lines.push(format!(
                "  + {p}\n      buildkit: (missing)\n      {label:>8}: {b}"
            )),
            (None, None) => unreachable!(),
        }
    }
    if lines.is_empty() {
        return;
    }
    report.push_str(&format!("filesystem: {} paths differ\n", lines.len()));
    for l in lines.iter().take(MAX_SHOWN) {
        report.push_str(l);
        report.push('\n');
    }
    if lines.len() > MAX_SHOWN {
        report.push_str(&format!("  ... and {} more\n", lines.len() - MAX_SHOWN));
    }
}

/// The comparable part of an image config, see [`IGNORED`].
fn comparable_config(c: &Value, skip_created_by: bool) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Value::Object(top) = c else {
        panic!("image config is not an object: {c}")
    };
    for (k, v) in top {
        match k.as_str() {
            "created"
            | "docker_version"
            | "container"
            | "container_config"
            | "moby.buildkit.buildinfo.v1" => {}
            "config" => {
                if let Value::Object(cfg) = v {
                    for (ck, cv) in cfg {
                        if !is_empty(cv) {
                            out.insert(format!("config.{ck}"), cv.clone());
                        }
                    }
                }
            }
            "history" => {
                let hist: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        let mut e = Map::new();
                        for (hk, hv) in h.as_object().into_iter().flatten() {
                            match hk.as_str() {
                                "created" => {}
                                "comment" if hv == &json!(BUILDKIT_COMMENT) => {}
                                "created_by" if skip_created_by => {}
                                "empty_layer" if hv == &json!(false) => {}
                                _ => {
                                    e.insert(hk.clone(), hv.clone());
                                }
                            }
                        }
                        Value::Object(e)
                    })
                    .collect();
                out.insert("history".into(), Value::Array(hist));
            }
            "rootfs" => {
                out.insert("rootfs.type".into(), v["type"].clone());
                let n = v["diff_ids"].as_array().map_or(0, |a| a.len());
                out.insert("rootfs.diff_ids (count)".into(), json!(n));
            }
            _ if is_empty(v) => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

fn diff_configs(bk: &Value, them: &Value, skip_created_by: bool, label: &str, report: &mut String) {
    let a = comparable_config(bk, skip_created_by);
    let b = comparable_config(them, skip_created_by);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut lines = Vec::new();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if k == "history" && x != y {
            let entries = |v: Option<&Value>| -> Vec<String> {
                v.and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(Value::to_string)
                    .collect()
            };
            lines.push(format!(
                "  history (- buildkit only, + {label} only)\n{}",
                line_diff(&entries(x), &entries(y))
            ));
        } else if x != y {
            let show = |v: Option<&Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
            lines.push(format!(
                "  {k}\n      buildkit: {}\n      {label:>8}: {}",
                show(x),
                show(y)
            ));
        }
    }
    if !lines.is_empty() {
        report.push_str(&format!("config: {} fields differ\n", lines.len()));
        for l in lines {
            report.push_str(&l);
            report.push('\n');
        }
    }
}

/// A unified-style diff of two short lists (longest common subsequence): `    ` common,
/// `  - ` only in `a`, `  + ` only in `b`, one line each.
fn line_diff(a: &[String], b: &[String]) -> String {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push_str(&format!("        {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("      - {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("      + {}\n", b[j]));
            j += 1;
        }
    }
    out.trim_end().to_string()
}

// ---------------------------------------------------------------------------------------------
// Tests of the harness itself (no builder needed).

/// Every case folder has a test, and every test a folder.
#[test]
fn difftest_every_case_folder_is_registered() {
    let mut on_disk: Vec<String> = std::fs::read_dir(difftest_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut declared: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    declared.sort();
    assert_eq!(on_disk, declared, "testdata/difftest folders vs cases!()");
    assert!(
        CASES.len() >= 15,
        "the acceptance asks for at least 15 cases"
    );
    for c in CASES {
        let dir = difftest_dir().join(c);
        assert!(dir.join("Dockerfile").is_file(), "{c}: no Dockerfile");
        Case::load(&dir);
    }
}

/// A layer tar from `(name, type, mode, uid, data or link target)`.
fn layer(entries: &[(&str, u8, u32, u64, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, mode, uid, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*uid);
        h.set_mtime(0);
        match kind {
            b'1' | b'2' => {
                h.set_size(0);
                b.append_link(&mut h, name, data).unwrap();
            }
            _ => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A docker-archive with the given layers and config.
fn archive(layers: &[Vec<u8>], config: &Value) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    for (n, l) in names.iter().zip(layers) {
        add(n, l);
    }
    add("config.json", config.to_string().as_bytes());
    let manifest = json!([{"Config": "config.json", "Layers": names}]);
    add("manifest.json", manifest.to_string().as_bytes());
    b.into_inner().unwrap()
}

/// The comparison sees whiteouts, opaque dirs, modes, owners, contents, link targets and
/// hardlinks, and the config fields, and shows both sides.
#[test]
fn difftest_harness_reports_each_kind_of_difference() {
    let dir = tempfile::tempdir().unwrap();
    let base = layer(&[
        ("etc/", b'5', 0o755, 0, ""),
        ("etc/gone", b'0', 0o644, 0, "x"),
        ("opq/", b'5', 0o755, 0, ""),
        ("opq/old", b'0', 0o644, 0, "old"),
        ("f", b'0', 0o644, 0, "same"),
        ("h1", b'0', 0o644, 0, "h"),
    ]);
    let cfg = |env: &str, by: &str| {
        json!({"architecture": "amd64", "os": "linux", "created": by,
               "config": {"Env": [env], "OnBuild": null},
               "rootfs": {"type": "layers", "diff_ids": ["a", "b"]},
               "history": [{"created_by": by, "comment": BUILDKIT_COMMENT}]})
    };
    let a = archive(
        &[
            base.clone(),
            layer(&[
                ("etc/.wh.gone", b'0', 0o644, 0, ""),
                ("opq/.wh..wh..opq", b'0', 0o644, 0, ""),
                ("opq/new", b'0', 0o644, 0, "n"),
                ("s", b'2', 0o777, 0, "/a"),
                ("su", b'0', 0o4755, 0, ""),
                ("h2", b'1', 0o644, 0, "h1"),
            ]),
        ],
        &cfg("A=1", "RUN a"),
    );
    let b = archive(
        &[
            base,
            layer(&[
                ("opq/new", b'0', 0o644, 0, "n"),
                ("s", b'2', 0o777, 0, "/b"),
                ("su", b'0', 0o755, 1000, ""),
                ("h2", b'0', 0o644, 0, "h"),
            ]),
        ],
        &cfg("A=2", "RUN b"),
    );
    let (pa, pb) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let fa = Flat::from_archive(&pa, &dir.path().join("fa"));
    let fb = Flat::from_archive(&pb, &dir.path().join("fb"));
    let fa2 = Flat::from_archive(&pa, &dir.path().join("fa2"));

    let mut same = String::new();
    diff_trees(&fa.tree, &fa2.tree, "other", &mut same);
    diff_configs(&fa.config, &fa2.config, false, "other", &mut same);
    assert_eq!(same, "", "an archive must equal itself");

    let mut r = String::new();
    diff_trees(&fa.tree, &fb.tree, "lade", &mut r);
    diff_configs(&fa.config, &fb.config, false, "lade", &mut r);
    for want in [
        "+ /etc/gone", // whiteout applied on one side only
        "+ /opq/old",  // opaque dir applied on one side only
        "~ /s\n      buildkit: symlink 0:0 -> /a\n          lade: symlink 0:0 -> /b",
        "buildkit: file 4755 0:0 0B \"\"\n          lade: file 0755 1000:1000 0B \"\"",
        "buildkit: file 0644 0:0 1B \"h\" hardlinked with /h2",
        "config.Env\n      buildkit: [\"A=1\"]\n          lade: [\"A=2\"]",
        "history (- buildkit only, + lade only)\n      - {\"created_by\":\"RUN a\"}\n      + {\"created_by\":\"RUN b\"}",
    ] {
        assert!(r.contains(want), "missing {want:?} in report:\n{r}");
    }
    // `created`, `comment`, diff_id values and `OnBuild: null` are ignored.
    assert!(!r.contains("created\n") && !r.contains("comment") && !r.contains("OnBuild"));
    let mut r2 = String::new();
    diff_configs(&fa.config, &fb.config, true, "lade", &mut r2);
    assert!(
        !r2.contains("history"),
        "created_by skipped for reference cases:\n{r2}"
    );
}
