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
use lade_registry::{ensure_image, Client, Platform, ProgressFn, PullPolicy};
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
    /// Always look for a newer version of base images in their registry
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
    /// A secret for `RUN --mount=type=secret`: id=ID,src=FILE or id=ID,env=VAR; repeatable
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    secrets: Vec<String>,
    /// Steps run at once (default: CPU count)
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    #[command(flatten)]
    registry_opts: super::registry_opts::RegistryOpts,
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

/// Base images: the store's, else pulled from their registry (`ensure_image`), as BuildKit
/// resolves FROM; `--pull` re-resolves tags.
struct Images {
    store: Arc<Store>,
    client: Option<Client>,
    policy: PullPolicy,
    rt: tokio::runtime::Handle,
    quiet: bool,
}

impl ImageResolver for Images {
    fn resolve(&self, reference: &str, platform: &str) -> Result<lade_cache::Image, String> {
        let Some(client) = &self.client else {
            return self.store.image(reference).map_err(|e| match e {
                lade_cache::Error::NotFound(_) => format!(
                    "base image {reference:?} is not in the store: make it available with \
                     `lade pull {reference}` or `lade load -i IMAGE.tar`"
                ),
                other => format!("cannot use base image {reference:?}: {other}"),
            });
        };
        let r = Reference::parse(reference)
            .map_err(|e| format!("invalid base image name {reference:?}: {e}"))?;
        let p = Platform::parse(platform).map_err(|e| format!("{e}"))?;
        let quiet = self.quiet;
        let shown = r.familiar();
        let progress = ProgressFn::new(move |ev| {
            if !quiet {
                if let lade_registry::Progress::Started { digest, .. } = ev {
                    eprintln!("pulling {shown}: {}", digest.short());
                }
            }
        });
        let got = self.rt.block_on(ensure_image(
            client,
            &self.store,
            &r,
            &p,
            self.policy,
            &progress,
        ));
        got.map(|e| e.image).map_err(|e| {
            format!(
                "base image {reference:?} is not in the store and could not be pulled: {e}; \
                 make it available with `lade pull {reference}` or `lade load -i IMAGE.tar`"
            )
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
        // BuildKit: `<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's
        let specific = a
            .file
            .as_ref()
            .filter(|f| f.as_os_str() != "-")
            .map(|f| PathBuf::from(format!("{}.dockerignore", f.display())))
            .filter(|p| p.is_file());
        let ignore = read_dockerignore(&specific.unwrap_or_else(|| dir.join(".dockerignore")))?;
        let canon = std::fs::canonicalize(dir)?;
        let key = blake3_hex(canon.as_os_str().as_encoded_bytes());
        let sc_dir = root.join("statcache");
        std::fs::create_dir_all(&sc_dir)?;
        let ctx = Context::open(dir, &ignore, Some(&sc_dir.join(key)))
            .with_context(|| format!("cannot read the build context {}", dir.display()))?;
        Some(Arc::new(ctx))
    };
    let mut secrets = Vec::new();
    for spec in &a.secrets {
        let mut id = None;
        let mut content = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => {
                    content = Some(
                        std::fs::read(v)
                            .with_context(|| format!("cannot read the secret file {v}"))?,
                    )
                }
                Some(("env", v)) => {
                    content = Some(
                        std::env::var(v)
                            .with_context(|| format!("secret env {v} is not set"))?
                            .into_bytes(),
                    )
                }
                Some(("type", _)) => {}
                _ => bail!("invalid --secret {spec:?}: expected id=ID,src=PATH or id=ID,env=VAR"),
            }
        }
        let id = id.ok_or_else(|| anyhow::anyhow!("--secret {spec:?} needs id=ID"))?;
        let content = match content {
            Some(c) => c,
            None => std::env::var(&id)
                .map(String::into_bytes)
                .with_context(|| format!("--secret {spec:?} needs src=PATH or env=VAR"))?,
        };
        secrets.push((id, Arc::new(content)));
    }
    let opts = BuildOptions {
        secrets,
        build_args,
        target: a.target.clone(),
        labels,
        network,
        platform: a.platform.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let resolver = Images {
        store: store.clone(),
        client: Some(Client::new(a.registry_opts.client_config()?)),
        policy: if a.pull {
            PullPolicy::Always
        } else {
            PullPolicy::Missing
        },
        rt: rt.handle().clone(),
        quiet: a.quiet,
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
    let cancel = lade_solver::CancellationToken::new();
    let solver = solver.cancellation(cancel.clone());
    let targets = [lowered.target];
    let result = rt.block_on(async {
        // Ctrl-C or SIGTERM cancels the build: running steps are killed and cleaned up, then
        // the solve returns
        let c = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
            c.cancel();
        });
        solver.solve(&lowered.graph, &targets).await
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
            let now = super::timefmt::now_rfc3339();
            for t in &tags {
                store.tag_at(t, &img.id, &now)?;
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
