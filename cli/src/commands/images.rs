//! Image commands: load, save, import, images, tag, rmi, inspect, history, prune, system check.

use std::fs::File;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lade_cache::archive::{self, SaveImage};
use lade_cache::{Digest, Image, Mtime, Reference, Store, TarOptions};
use lade_solver::dockerfile::image::Config as ChangeConfig;
use serde_json::{json, Map, Value};

use super::timefmt::{human_size, now_rfc3339, since};
use super::Global;
use crate::output::{self, outln};

fn open(g: &Global) -> Result<Store> {
    let root = g.root();
    Store::open(&root).with_context(|| format!("cannot open the store at {}", root.display()))
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this tar archive instead of standard input
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Print only the image IDs
    #[arg(short, long)]
    quiet: bool,
}

const ARCHIVE: &str = "an image archive (from `docker save`, `lade save` or skopeo's oci-archive:)";

pub fn load(g: &Global, a: LoadArgs) -> Result<ExitCode> {
    let store = open(g)?;
    let loaded = match &a.input {
        Some(p) => {
            let f = open_input(p, ARCHIVE)?;
            archive::load(&store, f).with_context(|| format!("cannot load {}", p.display()))?
        }
        None => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is a terminal; use -i FILE or pipe an archive");
            }
            archive::load(&store, stdin).context("cannot load the archive from stdin")?
        }
    };
    for img in loaded {
        if a.quiet {
            outln!("{}", img.id)?;
        } else if img.names.is_empty() {
            outln!("Loaded image ID: {}", img.id)?;
        } else {
            for n in &img.names {
                outln!("Loaded image: {}", n.familiar())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Images to save (names or IDs)
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// Resolves user arguments to images plus the names each was asked by.
fn selected(store: &Store, args: &[String]) -> Result<Vec<SaveImage>> {
    let mut out: Vec<SaveImage> = Vec::new();
    for a in args {
        let id = store.resolve(a)?;
        let by_name = Reference::parse(a).ok().filter(|r| {
            store
                .refs()
                .map(|i| i.refs.contains_key(&r.to_string()))
                .unwrap_or(false)
        });
        match out.iter_mut().find(|s| s.image.id == id) {
            Some(s) => s.names.extend(by_name),
            None => out.push(SaveImage {
                image: store.image_by_id(&id)?,
                names: by_name.into_iter().collect(),
            }),
        }
    }
    Ok(out)
}

pub fn save(g: &Global, a: SaveArgs) -> Result<ExitCode> {
    if let Some(p) = &a.output {
        check_output_path(p)?;
    }
    let store = open(g)?;
    let images = selected(&store, &a.images)?;
    match &a.output {
        Some(p) => {
            // Write next to the destination, then rename: no half-written archive is left behind.
            let dir = parent_dir(p);
            let mut tmp = tempfile::Builder::new()
                .prefix(".lade-save-")
                .tempfile_in(dir)
                .map_err(|e| {
                    // tempfile's message ends with its random file name: keep the OS error.
                    let text = e.to_string();
                    let why = text.split(" at path ").next().unwrap_or(&text).to_string();
                    anyhow::anyhow!(
                        "cannot write {}: cannot create a file in {}: {why}",
                        p.display(),
                        dir.display()
                    )
                })?;
            if let Err(e) = archive::save(&store, &images, tmp.as_file_mut()) {
                let e = anyhow::Error::new(e);
                // Reading the store never fills a disk: writing the archive did.
                if output::is_disk_full(&e) {
                    bail!(
                        "no space left on device: cannot write {}; free space on that filesystem \
                         or give -o a path on another one (nothing was written)",
                        p.display()
                    );
                }
                return Err(e.context(format!("cannot write {}", p.display())));
            }
            tmp.persist(p)
                .map_err(|e| anyhow::Error::new(e.error))
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to write an archive to a terminal; use -o FILE or a pipe");
            }
            let mut lock = stdout.lock();
            if let Err(e) = archive::save(&store, &images, &mut lock) {
                let e = anyhow::Error::new(e);
                // Only standard output is written here: EPIPE is its reader going away.
                if output::has_broken_pipe(&e) {
                    return Err(anyhow::Error::new(output::StdoutClosed));
                }
                return Err(e.context("cannot write the archive to standard output"));
            }
            lock.flush().map_err(output::stdout_error)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The directory a new file `p` goes to (`.` for a bare file name).
fn parent_dir(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Refuses an output path that cannot become a file, before any work is done.
fn check_output_path(p: &Path) -> Result<()> {
    if p.is_dir() {
        bail!(
            "{} is a directory: give -o the archive's file name, e.g. {}",
            p.display(),
            p.join("image.tar").display()
        );
    }
    let dir = parent_dir(p);
    if !dir.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist; create it first",
            p.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Opens a file the user named as input (`what`: "an image archive", ...), refusing a
/// directory or an empty file with a message that says what was expected.
fn open_input(p: &Path, what: &str) -> Result<File> {
    let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let m = f
        .metadata()
        .with_context(|| format!("cannot open {}", p.display()))?;
    if m.is_dir() {
        bail!(
            "{} is a directory, not a file: expected {what}",
            p.display()
        );
    }
    if m.is_file() && m.len() == 0 {
        bail!("{} is empty: expected {what}", p.display());
    }
    Ok(f)
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK,
    /// LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable
    #[arg(short, long, value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// Commit message stored in the history
    #[arg(short, long)]
    message: Option<String>,
    /// Rootfs tarball (any compression), directory, or - for standard input
    source: PathBuf,
    /// Name for the image
    name: Option<String>,
}

pub fn import(g: &Global, a: ImportArgs) -> Result<ExitCode> {
    let name = a.name.as_deref().map(Reference::parse).transpose()?;
    let mut config: Map<String, Value> = Map::new();
    apply_changes(&mut config, &a.change)?;
    let store = open(g)?;
    let src = &a.source;
    let rec = if src.as_os_str() == "-" {
        let mut input = io::BufReader::with_capacity(1 << 20, io::stdin().lock());
        let empty = input
            .fill_buf()
            .context("cannot read standard input")?
            .is_empty();
        if empty {
            bail!("standard input is empty: expected a rootfs tarball");
        }
        store
            .add_layer(input, None)
            .context("cannot import the rootfs from standard input")?
    } else if src.is_dir() {
        store
            .add_layer_from_dir(
                src,
                &TarOptions {
                    mtime: Mtime::Keep,
                    ..Default::default()
                },
            )
            .with_context(|| format!("cannot import {}", src.display()))?
    } else {
        let f = open_input(src, "a rootfs tarball or directory")?;
        store
            .add_layer(f, None)
            .with_context(|| format!("cannot import {}", src.display()))?
    };
    let created = now_rfc3339();
    let mut history = json!({"created": created, "created_by": "lade import"});
    history["comment"] = json!(a
        .message
        .clone()
        .unwrap_or_else(|| format!("Imported from {}", src.display())));
    let cfg = json!({
        "architecture": archive::host_arch(),
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [rec.diff_id]},
        "history": [history],
    });
    let bytes = serde_json::to_vec(&cfg)?;
    let img = store.put_config(&bytes)?;
    match &name {
        Some(n) => {
            store.tag_at(n, &img.id, &now_rfc3339())?;
        }
        None => store.keep_unnamed(&img.id)?,
    }
    outln!("{}", img.id)?;
    Ok(ExitCode::SUCCESS)
}

/// Applies `--change` instructions (see [`lade_solver::dockerfile::change`]) to the `config`
/// object of an image config. Fields the instructions do not touch, including ones Lade does
/// not model (docker's `Hostname`...), stay as they are.
pub(super) fn apply_changes(cfg: &mut Map<String, Value>, changes: &[String]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut c: ChangeConfig = serde_json::from_value(Value::Object(cfg.clone()))
        .context("the image's config object is not valid, so --change cannot apply to it")?;
    let before = serde_json::to_value(&c)?;
    lade_solver::dockerfile::change::apply_changes(&mut c, changes).map_err(anyhow::Error::msg)?;
    let after = serde_json::to_value(&c)?;
    let (Value::Object(before), Value::Object(after)) = (before, after) else {
        bail!("an image config did not serialise to an object");
    };
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for k in keys {
        if before.get(k) != after.get(k) {
            match after.get(k) {
                Some(v) => {
                    cfg.insert(k.clone(), v.clone());
                }
                None => {
                    cfg.remove(k);
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate IDs
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table (default) or json (one JSON object per line, like docker)
    #[arg(long, default_value = "table")]
    format: String,
    /// Only images of this repository (and tag)
    reference: Option<String>,
}

pub fn images(g: &Global, a: ImagesArgs) -> Result<ExitCode> {
    let store = open(g)?;
    let filter = a
        .reference
        .as_deref()
        .map(Reference::parse_named)
        .transpose()?;
    let mut rows = Vec::new();
    for s in store.images()? {
        let id = if a.no_trunc {
            s.id.to_string()
        } else {
            s.id.short().to_string()
        };
        let mut named: Vec<(String, String, String)> = s
            .tags
            .iter()
            .map(|t| {
                (
                    t.familiar_name(),
                    t.tag().unwrap_or("<none>").to_string(),
                    "<none>".to_string(),
                )
            })
            .collect();
        for d in &s.digests {
            if !named.iter().any(|n| n.0 == d.familiar_name()) {
                named.push((
                    d.familiar_name(),
                    "<none>".into(),
                    d.digest().map(|x| x.to_string()).unwrap_or_default(),
                ));
            }
        }
        if named.is_empty() {
            named.push(("<none>".into(), "<none>".into(), "<none>".into()));
        }
        for (repo, tag, digest) in named {
            if let Some(f) = &filter {
                if repo != f.familiar_name() || f.tag().is_some_and(|t| t != tag) {
                    continue;
                }
            }
            rows.push((repo, tag, digest, id.clone(), s.created.clone(), s.size));
        }
    }
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if seen.insert(r.3.clone()) {
                outln!("{}", r.3)?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match a.format.as_str() {
        "json" => {
            for (repo, tag, digest, id, created, size) in rows {
                let v = json!({
                    "Repository": repo, "Tag": tag, "Digest": digest, "ID": id,
                    "CreatedAt": created.clone().unwrap_or_default(),
                    "CreatedSince": since(created.as_deref()),
                    "Size": human_size(size), "SizeBytes": size,
                });
                outln!("{v}")?;
            }
        }
        "table" => {
            let mut table = vec![[
                "REPOSITORY".to_string(),
                "TAG".into(),
                "IMAGE ID".into(),
                "CREATED".into(),
                "SIZE".into(),
            ]];
            for (repo, tag, _digest, id, created, size) in rows {
                table.push([repo, tag, id, since(created.as_deref()), human_size(size)]);
            }
            print_table(&table)?;
        }
        other => bail!("unknown --format {other:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_table<const N: usize>(rows: &[[String; N]]) -> Result<()> {
    let mut w = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<width$}   ", width = w[i]));
            }
        }
        outln!("{}", line.trim_end())?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image (name or ID)
    source: String,
    /// New name
    target: String,
}

pub fn tag(g: &Global, a: TagArgs) -> Result<ExitCode> {
    let store = open(g)?;
    let id = store.resolve(&a.source)?;
    let target = Reference::parse(&a.target)?;
    if target.digest().is_some() {
        bail!(
            "cannot tag with a digest reference {:?}; use NAME[:TAG]",
            a.target
        );
    }
    store.tag_at(&target, &id, &now_rfc3339())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove names even when containers use the image (the image itself is kept for them)
    #[arg(short, long)]
    force: bool,
    /// Images (names or IDs); an ID removes every name of that image
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

pub fn rmi(g: &Global, a: RmiArgs) -> Result<ExitCode> {
    let store = open(g)?;
    let mut failed = false;
    for arg in &a.images {
        let result = (|| -> Result<()> {
            let id = store.resolve(arg)?;
            let as_ref = Reference::parse(arg).ok().filter(|r| {
                store
                    .refs()
                    .map(|i| i.refs.contains_key(&r.to_string()))
                    .unwrap_or(false)
            });
            let names = store.refs()?.refs.values().filter(|v| **v == id).count();
            // docker: an image containers use keeps its last name unless forced, and is
            // never deleted while they exist (forced, it stays as <none>).
            let users = if as_ref.is_none() || names == 1 {
                super::containers::users_of_image(&g.root(), &id)?
            } else {
                Vec::new()
            };
            if let Some(c) = users.first() {
                let running = users
                    .iter()
                    .find(|c| matches!(c.status, lade_runtime::containers::Status::Running { .. }));
                let cid = &c.id[..12];
                match (&as_ref, a.force, running) {
                    (None, _, Some(r)) => bail!(
                        "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
                        id.short(),
                        &r.id[..12]
                    ),
                    (None, false, None) => bail!(
                        "conflict: unable to delete {} (must be forced) - image is being used by stopped container {cid}",
                        id.short()
                    ),
                    (Some(r), false, _) => bail!(
                        "conflict: unable to remove repository reference \"{}\" (must force) - container {cid} is using its referenced image {}",
                        r.familiar(),
                        id.short()
                    ),
                    _ => {}
                }
            }
            let removed = match as_ref {
                Some(r) => {
                    store.untag(&r)?;
                    vec![r.to_string()]
                }
                None => store.remove_image(&id)?,
            };
            for n in removed {
                if n != id.as_str() {
                    let shown = Reference::parse(&n).map(|r| r.familiar()).unwrap_or(n);
                    outln!("Untagged: {shown}")?;
                }
            }
            if !users.is_empty() {
                store.keep_unnamed(&id)?;
                eprintln!(
                    "kept image {} as <none>: {} container(s) use it ({}); `lade rm` them first to delete it",
                    id.short(),
                    users.len(),
                    users.iter().map(|c| &c.id[..12]).collect::<Vec<_>>().join(", ")
                );
            } else if !store.refs()?.refs.values().any(|v| *v == id) {
                outln!("Deleted: {id}")?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            if output::is_stdout_closed(&e) {
                return Err(e);
            }
            eprintln!("error: {}", output::render_error(&e));
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

fn names_of(store: &Store, id: &Digest) -> Result<(Vec<String>, Vec<String>)> {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for (k, v) in store.refs()?.refs {
        if v != *id || k == id.as_str() {
            continue;
        }
        if let Ok(r) = Reference::parse(&k) {
            match r.digest() {
                Some(d) => digests.push(format!("{}@{d}", r.familiar_name())),
                None => tags.push(r.familiar()),
            }
        }
    }
    Ok((tags, digests))
}

/// The `docker inspect` shape of an image.
pub fn inspect_value(store: &Store, img: &Image) -> Result<Value> {
    let raw: Value = serde_json::from_slice(&img.config_bytes)?;
    let (tags, digests) = names_of(store, &img.id)?;
    let size = store.layers_size(&img.layers);
    let field = |k: &str| raw.get(k).cloned().unwrap_or(Value::Null);
    let str_field = |k: &str| {
        raw.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let comment = raw
        .get("history")
        .and_then(|h| h.as_array())
        .and_then(|h| h.last())
        .and_then(|h| h.get("comment"))
        .and_then(|c| c.as_str())
        .unwrap_or("")
        .to_string();
    let mut v = json!({
        "Id": img.id,
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": str_field("parent"),
        "Comment": comment,
        "Created": str_field("created"),
        "DockerVersion": str_field("docker_version"),
        "Author": str_field("author"),
        "Config": field("config"),
        "Architecture": str_field("architecture"),
        "Os": str_field("os"),
        "Size": size,
        "VirtualSize": size,
        "RootFS": {
            "Type": "layers",
            "Layers": img.layers,
        },
        // docker's zero time when no user ever tagged it (a loaded or pulled image)
        "Metadata": {"LastTagTime": store
            .last_tag_time(&img.id)?
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())},
    });
    if let Some(var) = raw.get("variant") {
        v["Variant"] = var.clone();
    }
    Ok(v)
}

/// `docker inspect`: the images found, as one JSON array on stdout, then one line on stderr
/// per argument that names no image (docker's own words; a malformed name or an ambiguous ID
/// prefix gets the reason instead) and exit status 1 if there was one.
pub fn inspect(g: &Global, a: InspectArgs) -> Result<ExitCode> {
    let store = open(g)?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for i in &a.images {
        match store.image(i) {
            Ok(img) => out.push(inspect_value(&store, &img)?),
            // An ambiguous ID prefix or a malformed name says what is wrong with it.
            Err(e @ lade_cache::Error::InvalidReference { .. }) => {
                missing.push(format!("error: {e}"))
            }
            Err(lade_cache::Error::NotFound(m)) if m.contains("ambiguous") => {
                missing.push(format!("error: {m}"));
            }
            Err(lade_cache::Error::NotFound(_)) => {
                missing.push(format!("Error: No such object: {i}"));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {i}")),
        }
    }
    outln!("{}", serde_json::to_string_pretty(&out)?)?;
    for m in &missing {
        eprintln!("{m}");
    }
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Do not truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table (default) or json (one object per line)
    #[arg(long, default_value = "table")]
    format: String,
    image: String,
}

pub fn history(g: &Global, a: HistoryArgs) -> Result<ExitCode> {
    let store = open(g)?;
    let img = store.image(&a.image)?;
    let raw: Value = serde_json::from_slice(&img.config_bytes)?;
    let hist = raw
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    let mut layers = img.layers.iter();
    let mut rows = Vec::new();
    for h in &hist {
        let empty = h
            .get("empty_layer")
            .and_then(|e| e.as_bool())
            .unwrap_or(false);
        let size = if empty {
            0
        } else {
            layers
                .next()
                .and_then(|d| store.layer(d).ok().flatten())
                .map_or(0, |r| r.size)
        };
        let s = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        rows.push((s("created"), s("created_by"), size, s("comment")));
    }
    rows.reverse();
    let top = if a.no_trunc {
        img.id.to_string()
    } else {
        img.id.short().to_string()
    };
    match a.format.as_str() {
        "json" => {
            for (i, (created, by, size, comment)) in rows.iter().enumerate() {
                let id = if i == 0 {
                    top.clone()
                } else {
                    "<missing>".into()
                };
                outln!(
                    "{}",
                    json!({"ID": id, "CreatedAt": created, "CreatedSince": since(Some(created)),
                           "CreatedBy": by, "Size": human_size(*size), "SizeBytes": size, "Comment": comment})
                )?;
            }
        }
        "table" => {
            let mut t = vec![[
                "IMAGE".to_string(),
                "CREATED".into(),
                "CREATED BY".into(),
                "SIZE".into(),
                "COMMENT".into(),
            ]];
            for (i, (created, by, size, comment)) in rows.into_iter().enumerate() {
                let id = if i == 0 {
                    top.clone()
                } else {
                    "<missing>".into()
                };
                let by = if !a.no_trunc && by.chars().count() > 45 {
                    format!("{}…", by.chars().take(44).collect::<String>())
                } else {
                    by
                };
                t.push([id, since(Some(&created)), by, human_size(size), comment]);
            }
            print_table(&t)?;
        }
        other => bail!("unknown --format {other:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only report what would be removed
    #[arg(long)]
    dry_run: bool,
    /// Also drop the build cache (every cached build step)
    #[arg(short, long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache, then what nothing references any more
    Prune {
        /// Only report what would be removed
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn builder(g: &Global, c: BuilderCommand) -> Result<ExitCode> {
    match c {
        BuilderCommand::Prune { dry_run } => prune(g, PruneArgs { dry_run, all: true }),
    }
}

pub fn prune(g: &Global, a: PruneArgs) -> Result<ExitCode> {
    let root = g.root();
    let store = Store::open_exclusive(&root)
        .with_context(|| format!("cannot lock the store at {} exclusively", root.display()))?;
    // Containers keep their image and committed layers; `run --rm` containers whose lade was
    // killed go first, with the container trash. Space outside blobs/layers/snapshots that
    // prune frees is counted in `extra`.
    let containers = super::containers::container_store(&root)?;
    let mut extra = super::containers::remove_dead_auto_remove(&containers, a.dry_run)?;
    let container_roots = super::containers::ContainerRoots {
        containers: containers.list()?,
    };
    if a.all {
        extra += store.cache_disk_usage();
        let n = if a.dry_run {
            store.cache_entries()?.len()
        } else {
            store.cache_clear()?
        };
        outln!(
            "{} {n} build-cache records",
            if a.dry_run { "Would remove" } else { "Removed" }
        )?;
        // RUN --mount=type=cache directories and context stat caches go with the build cache
        for dir in ["cachemounts", "statcache"] {
            let p = root.join(dir);
            extra += lade_cache::disk_usage(&p);
            if !a.dry_run && p.exists() {
                std::fs::remove_dir_all(&p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
    }
    let r = if a.all && a.dry_run {
        store.prune(&[&container_roots], true)?
    } else {
        store.prune(&[&lade_cache::BuildCacheRoots, &container_roots], a.dry_run)?
    };
    let verb = if a.dry_run { "Would remove" } else { "Removed" };
    outln!(
        "{verb} {} blobs, {} layer records, {} snapshots, {} temp entries",
        r.blobs,
        r.layers,
        r.snapshots,
        r.temp_entries
    )?;
    let what = if a.dry_run {
        "Reclaimable space"
    } else {
        "Total reclaimed space"
    };
    outln!("{what}: {}", human_size(r.bytes_freed + extra))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Check the store for consistency (exit 1 on problems)
    Check {
        /// Also re-hash every blob
        #[arg(long)]
        verify: bool,
    },
    /// Unpack an image's layer snapshots (if needed) and print its overlayfs lowerdir option
    Unpack {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
}

pub fn system(g: &Global, c: SystemCommand) -> Result<ExitCode> {
    match c {
        SystemCommand::Check { verify } => {
            let store = open(g)?;
            let r = store.check(verify)?;
            outln!(
                "images: {}, blobs: {}, layers: {}, snapshots: {}, unreferenced: {}, temp entries: {}",
                r.images, r.blobs, r.layers, r.snapshots, r.unreferenced, r.temp_entries
            )?;
            if r.problems.is_empty() {
                outln!("store is consistent")?;
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &r.problems {
                    outln!("problem: {p}")?;
                }
                Ok(ExitCode::FAILURE)
            }
        }
        SystemCommand::Unpack { images } => {
            let store = open(g)?;
            for i in &images {
                let img = store.image(i)?;
                let paths = store
                    .ensure_snapshots(&img.layers)
                    .with_context(|| format!("cannot unpack {i}"))?;
                outln!("lowerdir={}", lade_cache::lowerdir_option(&paths))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_keep_what_they_do_not_touch() {
        let mut c = json!({"Hostname": "", "Cmd": ["old"], "Env": null, "ArgsEscaped": true,
                           "Labels": {"a": "b"}})
        .as_object()
        .cloned()
        .unwrap();
        apply_changes(&mut c, &[]).unwrap();
        assert_eq!(c["Env"], Value::Null);
        apply_changes(
            &mut c,
            &["ENV A=1".into(), "EXPOSE 80".into(), "ONBUILD RUN x".into()],
        )
        .unwrap();
        let v = Value::Object(c.clone());
        assert_eq!(v["Hostname"], "");
        assert_eq!(v["Cmd"], json!(["old"]));
        assert_eq!(v["ArgsEscaped"], true);
        assert_eq!(v["Labels"], json!({"a": "b"}));
        assert_eq!(v["Env"], json!(["A=1"]));
        assert_eq!(v["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(v["OnBuild"], json!(["RUN x"]));
        // A CMD change is classic-builder style: no ArgsEscaped.
        apply_changes(&mut c, &["CMD echo hi".into()]).unwrap();
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert!(!c.contains_key("ArgsEscaped"));
        let e = apply_changes(&mut c, &["RUN x".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RUN cannot be used with --change"), "{e}");
    }
}
