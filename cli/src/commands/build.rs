//! `lade build`: Dockerfile to image.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lade_cache::archive::{self, SaveImage};
use lade_cache::extract::{extract, ExtractOptions, WhiteoutMode};
use lade_cache::{Reference, Store, TarOptions};
use lade_solver::context::{read_dockerignore, Context};
use lade_solver::dockerfile::{
    lower, BuildOptions, ImageResolver, LowerError, RunNetwork, StoreCache,
};
use lade_solver::{Error as SolveError, Solver};

use super::Global;
use crate::diagnostics::{render, Severity};
use crate::progress::{Mode, Progress};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name (and optionally tag) for the image; repeatable
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from standard input
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Set a build argument (`K=V`, or `K` to take the value from the environment)
    #[arg(long = "build-arg", value_name = "K[=V]")]
    build_args: Vec<String>,
    /// Build this stage (and what it needs) instead of the last one
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Do not use the build cache (every step runs; results are still recorded)
    #[arg(long)]
    no_cache: bool,
    /// Always look for a newer version of base images (needs registry support)
    #[arg(long)]
    pull: bool,
    /// Add a label to the image; repeatable
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// Network of RUN steps without --network: host (default, like docker build) or none
    #[arg(long, value_name = "MODE", default_value = "default")]
    network: String,
    /// Write the image ID to this file
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    /// Progress output: auto, tty, plain or json (JSON lines on stderr)
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Target platform (os/arch[/variant]); default the host's
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Output: type=image (default), docker|oci,dest=FILE, tar,dest=FILE|-, local,dest=DIR
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    output: Option<String>,
    /// Steps run at once (default: CPU count)
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// The build context directory, or - for a Dockerfile on standard input and no context
    context: String,
}

enum Output {
    Image,
    Archive(PathBuf),
    Tar(PathBuf),
    Local(PathBuf),
}

fn parse_output(s: Option<&str>) -> Result<Output> {
    let Some(s) = s else {
        return Ok(Output::Image);
    };
    let mut kind = None;
    let mut dest = None;
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            Some((k, _)) => bail!("unknown --output option {k:?}: use type= and dest="),
            None if kind.is_none() => kind = Some(part.to_string()),
            None => bail!("invalid --output {s:?}: expected type=TYPE[,dest=PATH]"),
        }
    }
    let need = |d: Option<PathBuf>, t: &str| {
        d.ok_or_else(|| anyhow::anyhow!("--output type={t} needs dest=PATH"))
    };
    match kind.as_deref() {
        None | Some("image") => Ok(Output::Image),
        Some("docker") | Some("oci") => Ok(Output::Archive(need(dest, "docker")?)),
        Some("tar") => Ok(Output::Tar(need(dest, "tar")?)),
        Some("local") => Ok(Output::Local(need(dest, "local")?)),
        Some(t) => bail!("unknown output type {t:?}: use image, docker, oci, tar or local"),
    }
}

/// Base images from the store.
struct LocalImages {
    store: Arc<Store>,
}

impl ImageResolver for LocalImages {
    fn resolve(&self, reference: &str) -> Result<lade_cache::Image, String> {
        self.store.image(reference).map_err(|e| match e {
            lade_cache::Error::NotFound(_) => format!(
                "base image {reference:?} is not in the store: make it available with \
                 `lade pull {reference}` or `lade load -i IMAGE.tar`"
            ),
            other => format!("cannot use base image {reference:?}: {other}"),
        })
    }
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read the Dockerfile from standard input")?;
    Ok(s)
}

pub fn build(g: &Global, a: BuildArgs) -> Result<ExitCode> {
    let output = parse_output(a.output.as_deref())?;
    let tags = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("invalid tag {t:?}")))
        .collect::<Result<Vec<_>>>()?;
    let network = match a.network.as_str() {
        "default" | "host" => RunNetwork::Host,
        "none" => RunNetwork::None,
        other => bail!("unknown --network {other:?}: use host or none"),
    };
    let mut build_args = Vec::new();
    for b in &a.build_args {
        match b.split_once('=') {
            Some((k, v)) => build_args.push((k.to_string(), v.to_string())),
            // docker: a bare name takes the value from the environment, or is ignored
            None => {
                if let Ok(v) = std::env::var(b) {
                    build_args.push((b.clone(), v));
                }
            }
        }
    }
    let mut labels = Vec::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.push((k.to_string(), v.to_string()));
    }

    // the Dockerfile and the context
    let (context_dir, df_name, text) = if a.context == "-" {
        ("-".to_string(), "Dockerfile".to_string(), read_stdin()?)
    } else {
        let ctx = PathBuf::from(&a.context);
        if !ctx.is_dir() {
            bail!("build context {} is not a directory (give a directory, or - for a Dockerfile on stdin)", ctx.display());
        }
        let (name, text) = match &a.file {
            Some(f) if f.as_os_str() == "-" => ("Dockerfile".to_string(), read_stdin()?),
            Some(f) => (
                f.display().to_string(),
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the Dockerfile {}", f.display()))?,
            ),
            None => {
                let f = ctx.join("Dockerfile");
                (
                    "Dockerfile".to_string(),
                    std::fs::read_to_string(&f).with_context(|| {
                        format!("cannot read {} (give another with -f)", f.display())
                    })?,
                )
            }
        };
        (a.context.clone(), name, text)
    };
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let parsed = lade_parser::parse(&text);
    for w in &parsed.warnings {
        eprintln!("{}\n", render(&df_name, &text, w, Severity::Warning, color));
    }
    if !parsed.errors.is_empty() {
        for e in &parsed.errors {
            eprintln!("{}\n", render(&df_name, &text, e, Severity::Error, color));
        }
        bail!("{df_name}: {} problem(s) found", parsed.errors.len());
    }
    let df = parsed.value;

    let root = g.root();
    let store = Arc::new(
        Store::open(&root)
            .with_context(|| format!("cannot open the store at {}", root.display()))?,
    );
    let context = if context_dir == "-" {
        None
    } else {
        let dir = Path::new(&context_dir);
        let ignore = read_dockerignore(&dir.join(".dockerignore"))?;
        let canon = std::fs::canonicalize(dir)?;
        let key = blake3_hex(canon.as_os_str().as_encoded_bytes());
        let sc_dir = root.join("statcache");
        std::fs::create_dir_all(&sc_dir)?;
        let ctx = Context::open(dir, &ignore, Some(&sc_dir.join(key)))
            .with_context(|| format!("cannot read the build context {}", dir.display()))?;
        Some(Arc::new(ctx))
    };
    let opts = BuildOptions {
        build_args,
        target: a.target.clone(),
        labels,
        network,
        platform: a.platform.clone(),
    };
    if a.pull {
        eprintln!("warning: --pull needs registry support, which this lade build lacks; using local images");
    }
    let resolver = LocalImages {
        store: store.clone(),
    };
    let lowered = match lower(&df, &opts, store.clone(), context.clone(), &resolver) {
        Ok(l) => l,
        Err(e) => return Err(lower_error(&df_name, &text, &e, color)),
    };

    let mode = if a.quiet {
        Mode::Quiet
    } else {
        match a.progress.as_str() {
            "auto" if std::io::stderr().is_terminal() => Mode::Tty,
            "auto" | "plain" => Mode::Plain,
            "tty" => Mode::Tty,
            "json" => Mode::Json,
            other => bail!("unknown --progress {other:?}: use auto, tty, plain or json"),
        }
    };
    let steps = Arc::new(lowered.steps.clone());
    let info_steps = steps.clone();
    let progress = Progress::new(
        mode,
        Arc::new(move |v| {
            info_steps
                .get(&v)
                .map(|s| (s.instruction.clone(), s.line))
                .unwrap_or_default()
        }),
    );
    for w in &lowered.warnings {
        progress.message(&format!("WARNING: {w}"));
    }
    let p2 = progress.clone();
    let hidden: std::collections::HashSet<lade_solver::VertexId> = lowered
        .steps
        .iter()
        .filter(|(_, s)| s.hidden)
        .map(|(v, _)| *v)
        .collect();
    let mut solver = Solver::new(Arc::new(StoreCache {
        store: store.clone(),
    }))
    .no_cache(a.no_cache)
    .on_event(move |e| {
        if !hidden.contains(&e.vertex) {
            p2.event(e)
        }
    });
    if let Some(j) = a.jobs {
        solver = solver.parallelism(j);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cancel = lade_solver::CancellationToken::new();
    let solver = solver.cancellation(cancel.clone());
    let targets = [lowered.target];
    let result = rt.block_on(async {
        tokio::select! {
            r = solver.solve(&lowered.graph, &targets) => r,
            _ = tokio::signal::ctrl_c() => {
                cancel.cancel();
                Err(SolveError::Cancelled)
            }
        }
    });
    progress.finish();
    if let Some(ctx) = &context {
        // best effort: a stale stat cache only costs re-hashing
        let _ = ctx.save_stat_cache();
    }
    let solution = match result {
        Ok(s) => s,
        Err(e) => return Err(solve_error(&e, &steps, &progress, &df_name, &text, color)),
    };
    let config = lowered.finish(&solution).map_err(|e| anyhow::anyhow!(e))?;
    let img = store.put_config(&config)?;
    match &output {
        Output::Image => {
            if tags.is_empty() {
                store.keep_unnamed(&img.id)?;
            }
            for t in &tags {
                store.tag(t, &img.id)?;
            }
        }
        Output::Archive(dest) => {
            let f = std::fs::File::create(dest)
                .with_context(|| format!("cannot create {}", dest.display()))?;
            let mut w = std::io::BufWriter::new(f);
            archive::save(
                &store,
                &[SaveImage {
                    image: img.clone(),
                    names: tags.clone(),
                }],
                &mut w,
            )?;
            w.flush()?;
        }
        Output::Tar(dest) => export_fs(&store, &img.layers, ExportKind::Tar(dest.clone()))?,
        Output::Local(dest) => export_fs(&store, &img.layers, ExportKind::Local(dest.clone()))?,
    }
    if let Some(f) = &a.iidfile {
        std::fs::write(f, img.id.to_string())
            .with_context(|| format!("cannot write {}", f.display()))?;
    }
    match mode {
        Mode::Quiet => println!("{}", img.id),
        Mode::Json => {
            let v = serde_json::json!({"type": "result", "id": img.id.to_string(),
                "tags": tags.iter().map(|t| t.familiar()).collect::<Vec<_>>()});
            eprintln!("{v}");
            println!("{}", img.id);
        }
        _ => {
            eprintln!("writing image {} done", img.id);
            for t in &tags {
                eprintln!("naming to {} done", t);
            }
            println!("{}", img.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn blake3_hex(b: &[u8]) -> String {
    lade_solver::Digest::of(b).to_hex()
}

fn lower_error(name: &str, text: &str, e: &LowerError, color: bool) -> anyhow::Error {
    if let Some(span) = e.span {
        let d = lade_parser::Diagnostic::new(span, e.message.clone());
        eprintln!("{}\n", render(name, text, &d, Severity::Error, color));
    }
    anyhow::anyhow!("{}", e.message)
}

fn solve_error(
    e: &SolveError,
    steps: &std::collections::HashMap<lade_solver::VertexId, lade_solver::dockerfile::StepInfo>,
    progress: &Progress,
    name: &str,
    text: &str,
    _color: bool,
) -> anyhow::Error {
    let SolveError::VertexFailed {
        vertex,
        name: vname,
        source,
        ..
    } = e
    else {
        return anyhow::anyhow!("{e}");
    };
    let mut msg = String::new();
    let line = steps.get(vertex).map_or(0, |s| s.line);
    let tail = progress.tail(*vertex);
    if !tail.is_empty() {
        msg.push_str(&format!("------\n > {vname}:\n"));
        for l in &tail {
            msg.push_str(&format!("{l}\n"));
        }
        msg.push_str("------\n");
    }
    if line > 0 {
        if let Some(src) = text.lines().nth(line - 1) {
            msg.push_str(&format!(
                "{name}:{line}\n--------------------\n{line:>4} | {src}\n--------------------\n"
            ));
        }
    }
    eprint!("{msg}");
    anyhow::anyhow!("failed to solve: {vname}: {source}")
}

enum ExportKind {
    Tar(PathBuf),
    Local(PathBuf),
}

/// Writes the final filesystem (layers applied in order) as a directory or a tarball.
fn export_fs(store: &Store, layers: &[lade_cache::Digest], kind: ExportKind) -> Result<()> {
    let tmp;
    let dir = match &kind {
        ExportKind::Local(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        ExportKind::Tar(_) => {
            tmp = store.temp_dir("export-")?;
            tmp.path().to_path_buf()
        }
    };
    for l in layers {
        let r = store.open_layer(l)?;
        let opts = ExtractOptions {
            whiteouts: WhiteoutMode::Apply,
            what: format!("layer {l}"),
            ..Default::default()
        };
        extract(r, &dir, &opts)?;
    }
    if let ExportKind::Tar(dest) = kind {
        let topts = TarOptions::default();
        if dest.as_os_str() == "-" {
            let out = std::io::stdout();
            let mut lock = out.lock();
            lade_cache::tarfmt::write_tar(&dir, &topts, &mut lock)?;
            lock.flush()?;
        } else {
            let f = std::fs::File::create(&dest)
                .with_context(|| format!("cannot create {}", dest.display()))?;
            lade_cache::tarfmt::write_tar(&dir, &topts, std::io::BufWriter::new(f))?;
        }
    }
    Ok(())
}
