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
use crate::output::outln;
use crate::progress::{Mode, Progress};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name (and optionally tag) for the image; repeatable
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from standard input. With a
    /// context archive on stdin, its path inside the archive
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
    /// Progress output: auto, tty (needs a terminal), plain, json (JSON lines on stderr) or
    /// quiet (as -q)
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Target platform (os/arch[/variant]); default the host's
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Output: type=image (default), type=docker|oci|tar,dest=FILE (- for stdout),
    /// type=local,dest=DIR; a bare DIR is type=local, a bare - is type=tar to stdout
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
    /// The build context directory, or -: standard input holds a Dockerfile (no context) or a
    /// tar archive of the context (plain, gzip, bzip2, xz or zstd)
    context: String,
}

/// Where a tarball output goes.
#[derive(Debug, Clone, PartialEq)]
enum Dest {
    /// `dest=-`: standard output, which then carries nothing else.
    Stdout,
    File(PathBuf),
}

impl Dest {
    fn new(p: PathBuf) -> Self {
        if p.as_os_str() == "-" {
            Dest::Stdout
        } else {
            Dest::File(p)
        }
    }
}

#[derive(Debug, PartialEq)]
enum Output {
    Image,
    /// `type=docker|oci`: one tarball that is both a `docker load` archive and an OCI layout.
    Archive(&'static str, Dest),
    /// `type=tar`: the final filesystem as a tarball.
    Tar(Dest),
    Local(PathBuf),
}

impl Output {
    /// The output type and whether it goes to standard output.
    fn stdout_kind(&self) -> Option<&'static str> {
        match self {
            Output::Archive(kind, Dest::Stdout) => Some(kind),
            Output::Tar(Dest::Stdout) => Some("tar"),
            _ => None,
        }
    }
}

fn parse_output(s: Option<&str>) -> Result<Output> {
    let Some(s) = s else {
        return Ok(Output::Image);
    };
    // buildx: a bare value is a local directory, `-` the filesystem tarball on stdout
    if !s.contains(['=', ',']) {
        return Ok(match s {
            "-" => Output::Tar(Dest::Stdout),
            "" => bail!("empty --output: use type=TYPE[,dest=PATH], a directory or -"),
            dir => Output::Local(PathBuf::from(dir)),
        });
    }
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
        d.ok_or_else(|| {
            anyhow::anyhow!("--output type={t} needs dest=PATH (or dest=- for standard output)")
        })
    };
    match kind.as_deref() {
        None | Some("image") => Ok(Output::Image),
        Some("docker") => Ok(Output::Archive("docker", Dest::new(need(dest, "docker")?))),
        Some("oci") => Ok(Output::Archive("oci", Dest::new(need(dest, "oci")?))),
        Some("tar") => Ok(Output::Tar(Dest::new(need(dest, "tar")?))),
        Some("local") => {
            let d = dest.ok_or_else(|| anyhow::anyhow!("--output type=local needs dest=DIR"))?;
            if d.as_os_str() == "-" {
                bail!("--output type=local writes a directory, not standard output: use type=tar,dest=- for a tarball");
            }
            Ok(Output::Local(d))
        }
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

/// Largest Dockerfile read from a context archive.
const MAX_DOCKERFILE_BYTES: u64 = 64 << 20;

/// The Dockerfile and the build context, wherever they came from.
struct Sources {
    /// How diagnostics name the Dockerfile.
    df_name: String,
    text: String,
    context: Option<ContextDir>,
}

/// A context directory to walk.
struct ContextDir {
    dir: PathBuf,
    ignore: Vec<String>,
    /// A directory given by the user: its stat cache is kept between builds. A context
    /// extracted from stdin is new each time, so it gets none.
    keep_stat_cache: bool,
    /// Holds the extracted context of `-` until the build is over.
    _extracted: Option<tempfile::TempDir>,
}

/// `lade build ... -`: standard input holds a Dockerfile (no context) or a tar archive of the
/// context (plain, gzip, bzip2, xz or zstd), told apart by their first bytes as the docker CLI
/// does. `-f` then names the Dockerfile inside the archive; with a Dockerfile on stdin it is
/// ambiguous and refused, as docker refuses it.
fn stdin_sources(
    file: Option<&Path>,
    open_store: &dyn Fn() -> Result<Arc<Store>>,
) -> Result<(Sources, Option<Arc<Store>>)> {
    if file.is_some_and(|f| f.as_os_str() == "-") {
        bail!(
            "cannot read both the build context and the Dockerfile (-f -) from standard input: \
             give the Dockerfile as a file, or pipe a tar archive of the context that holds it"
        );
    }
    // not locked: the extraction reader takes `Stdin` itself (whose buffer still holds what
    // the peek below read ahead)
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!(
            "the build context is - but standard input is a terminal: pipe a Dockerfile, or a \
             tar archive of the context (plain, gzip, bzip2, xz or zstd)"
        );
    }
    let mut head = Vec::with_capacity(512);
    (&mut stdin)
        .take(512)
        .read_to_end(&mut head)
        .context("cannot read standard input")?;
    if !lade_executor::copy::looks_like_archive(&head) {
        if let Some(f) = file {
            bail!(
                "ambiguous Dockerfile source: standard input holds a Dockerfile and -f names {}: \
                 drop -f, or pipe a tar archive of the context with the Dockerfile inside",
                f.display()
            );
        }
        let mut rest = Vec::new();
        stdin
            .read_to_end(&mut rest)
            .context("cannot read the Dockerfile from standard input")?;
        head.extend_from_slice(&rest);
        let text = String::from_utf8(head)
            .map_err(|_| anyhow::anyhow!("the Dockerfile on standard input is not UTF-8 text"))?;
        let sources = Sources {
            df_name: "Dockerfile".to_string(),
            text,
            context: None,
        };
        return Ok((sources, None));
    }
    let store = open_store()?;
    let tmp = store.temp_dir("context-")?;
    let what = "the build context archive on standard input";
    let input = std::io::Cursor::new(head).chain(stdin);
    let reader =
        lade_executor::copy::decompress(input).with_context(|| format!("cannot read {what}"))?;
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Keep,
        what: what.to_string(),
        ..Default::default()
    };
    extract(reader, tmp.path(), &opts).with_context(|| format!("cannot extract {what}"))?;
    // Everything below is read inside the extracted tree as if it were `/` (openat2
    // RESOLVE_IN_ROOT): a symlink in the archive cannot make lade read a host file.
    let root = lade_executor::rootfs::Root::open(tmp.path())?;
    let read = |rel: &str| -> Result<Option<Vec<u8>>> {
        match root.stat(rel)? {
            None => Ok(None),
            Some(m) if m.kind != lade_executor::rootfs::Kind::File => {
                bail!("{rel} in {what} is not a regular file")
            }
            Some(_) => {
                let data = root.read_small(rel, MAX_DOCKERFILE_BYTES + 1)?;
                if data
                    .as_ref()
                    .is_some_and(|d| d.len() as u64 > MAX_DOCKERFILE_BYTES)
                {
                    bail!("{rel} in {what} is larger than {MAX_DOCKERFILE_BYTES} bytes");
                }
                Ok(data)
            }
        }
    };
    let df_name = match file {
        Some(f) => f
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("-f {} is not UTF-8", f.display()))?
            .to_string(),
        None => "Dockerfile".to_string(),
    };
    let text = read(&df_name)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{what} has no {df_name}: put the Dockerfile at the top of the archive, or name its \
             path inside the archive with -f"
        )
    })?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("{df_name} in {what} is not UTF-8 text"))?;
    // BuildKit: `<Dockerfile>.dockerignore` wins over the context's `.dockerignore`
    let ignore = match read(&format!("{df_name}.dockerignore"))? {
        Some(b) => Some(b),
        None => read(".dockerignore")?,
    };
    let ignore = ignore
        .map(|b| lade_solver::context::ignore::parse(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    let sources = Sources {
        df_name,
        text,
        context: Some(ContextDir {
            dir: tmp.path().to_path_buf(),
            ignore,
            keep_stat_cache: false,
            _extracted: Some(tmp),
        }),
    };
    Ok((sources, Some(store)))
}

/// A context directory, and the Dockerfile from `-f FILE`, `-f -` or `CONTEXT/Dockerfile`.
fn dir_sources(context: &str, file: Option<&Path>) -> Result<Sources> {
    let ctx = PathBuf::from(context);
    if !ctx.is_dir() {
        bail!(
            "build context {} is not a directory (give a directory, or - for a Dockerfile or a \
             context tar archive on stdin)",
            ctx.display()
        );
    }
    let (df_name, text) = match file {
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
    // BuildKit: `<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's
    let specific = file
        .filter(|f| f.as_os_str() != "-")
        .map(|f| PathBuf::from(format!("{}.dockerignore", f.display())))
        .filter(|p| p.is_file());
    let ignore = read_dockerignore(&specific.unwrap_or_else(|| ctx.join(".dockerignore")))?;
    Ok(Sources {
        df_name,
        text,
        context: Some(ContextDir {
            dir: ctx,
            ignore,
            keep_stat_cache: true,
            _extracted: None,
        }),
    })
}

/// Writes a tarball output to its file (whole or not at all: a temp file renamed into place)
/// or to standard output (`EPIPE` there ends lade as SIGPIPE would).
fn write_dest(
    dest: &Dest,
    what: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    match dest {
        Dest::Stdout => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = write(&mut out).and_then(|()| out.flush().map_err(Into::into)) {
                if crate::output::has_broken_pipe(&e) {
                    return Err(anyhow::Error::new(crate::output::StdoutClosed));
                }
                return Err(e.context(format!("cannot write the {what} to standard output")));
            }
            Ok(())
        }
        Dest::File(p) => {
            // A device, FIFO or socket (`dest=/dev/null`, a named pipe): written into as it is,
            // never replaced by a renamed regular file.
            if std::fs::metadata(p).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(p)
                    .with_context(|| format!("cannot open {}", p.display()))?;
                let mut w = std::io::BufWriter::new(f);
                return write(&mut w)
                    .and_then(|()| w.flush().map_err(Into::into))
                    .with_context(|| format!("cannot write {}", p.display()));
            }
            // A symlink to a file: the file it names is replaced, the link stays.
            let resolved;
            let p = if p.is_symlink() && p.exists() {
                resolved = std::fs::canonicalize(p)
                    .with_context(|| format!("cannot resolve {}", p.display()))?;
                &resolved
            } else {
                p
            };
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            // 0666 less the umask, as File::create: the output is the user's file
            let mut tmp = tempfile::Builder::new()
                .prefix(".lade-output-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .tempfile_in(dir)
                .with_context(|| format!("cannot create {}", p.display()))?;
            {
                let mut w = std::io::BufWriter::new(tmp.as_file_mut());
                write(&mut w)
                    .and_then(|()| w.flush().map_err(Into::into))
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            tmp.persist(p)
                .map_err(|e| anyhow::Error::new(e.error))
                .with_context(|| format!("cannot write {}", p.display()))?;
            Ok(())
        }
    }
}

pub fn build(g: &Global, a: BuildArgs) -> Result<ExitCode> {
    let output = parse_output(a.output.as_deref())?;
    if let Some(kind) = output.stdout_kind() {
        // buildx refuses too: a tarball on a terminal is garbage and may upset it
        if std::io::stdout().is_terminal() {
            bail!(
                "refusing to write the {kind} output (dest=-) to a terminal: redirect standard \
                 output to a file or a pipe, or give dest=FILE"
            );
        }
    }
    let mode = if a.quiet || a.progress == "quiet" {
        // buildx: -q is progress=quiet, and another explicit mode contradicts it
        if !matches!(a.progress.as_str(), "auto" | "quiet") {
            bail!(
                "--progress {} and -q cannot be used together: -q shows no progress",
                a.progress
            );
        }
        Mode::Quiet
    } else {
        match a.progress.as_str() {
            "auto" if std::io::stderr().is_terminal() => Mode::Tty,
            "auto" | "plain" => Mode::Plain,
            // as BuildKit's progressui: tty is insisted on, not guessed
            "tty" if std::io::stderr().is_terminal() => Mode::Tty,
            "tty" => bail!(
                "--progress tty needs a terminal on standard error: use --progress plain (or \
                 auto, which picks plain when standard error is not a terminal)"
            ),
            "json" => Mode::Json,
            other => bail!("unknown --progress {other:?}: use auto, tty, plain, json or quiet"),
        }
    };
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
    let root = g.root();
    let open_store = || -> Result<Arc<Store>> {
        Ok(Arc::new(Store::open(&root).with_context(|| {
            format!("cannot open the store at {}", root.display())
        })?))
    };
    let (sources, store) = if a.context == "-" {
        stdin_sources(a.file.as_deref(), &open_store)?
    } else {
        (dir_sources(&a.context, a.file.as_deref())?, None)
    };
    let Sources {
        df_name,
        text,
        context: context_dir,
    } = sources;
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

    let store = match store {
        Some(s) => s,
        None => open_store()?,
    };
    let context = match &context_dir {
        None => None,
        Some(cd) => {
            let dir = &cd.dir;
            let stat_cache = if cd.keep_stat_cache {
                let canon = std::fs::canonicalize(dir)?;
                let key = blake3_hex(canon.as_os_str().as_encoded_bytes());
                let sc_dir = root.join("statcache");
                std::fs::create_dir_all(&sc_dir)?;
                Some(sc_dir.join(key))
            } else {
                None
            };
            let ctx = Context::open(dir, &cd.ignore, stat_cache.as_deref())
                .with_context(|| format!("cannot read the build context {}", dir.display()))?;
            Some(Arc::new(ctx))
        }
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
        Output::Archive(kind, dest) => {
            let images = [SaveImage {
                image: img.clone(),
                names: tags.clone(),
            }];
            write_dest(dest, &format!("{kind} archive"), |mut w| {
                archive::save(&store, &images, &mut w).map_err(Into::into)
            })?
        }
        Output::Tar(dest) => {
            let tree = store.temp_dir("export-")?;
            export_tree(&store, &img.layers, tree.path())?;
            write_dest(dest, "filesystem tarball", |w| {
                lade_cache::tarfmt::write_tar(tree.path(), &TarOptions::default(), w)
                    .map(|_| ())
                    .map_err(Into::into)
            })?
        }
        Output::Local(dest) => {
            export_tree(&store, &img.layers, dest)?;
        }
    }
    if let Some(f) = &a.iidfile {
        std::fs::write(f, img.id.to_string())
            .with_context(|| format!("cannot write {}", f.display()))?;
    }
    // With an output on standard output, the image ID goes nowhere near it (buildx prints
    // nothing else there either): --iidfile, or the json/plain lines on stderr, carry it.
    let id_on_stdout = output.stdout_kind().is_none();
    match mode {
        Mode::Quiet => {}
        Mode::Json => {
            let v = serde_json::json!({"type": "result", "id": img.id.to_string(),
                "tags": tags.iter().map(|t| t.familiar()).collect::<Vec<_>>()});
            eprintln!("{v}");
        }
        _ => {
            eprintln!("writing image {} done", img.id);
            for t in &tags {
                eprintln!("naming to {} done", t);
            }
        }
    }
    if id_on_stdout {
        outln!("{}", img.id)?;
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

/// Writes the final filesystem (layers applied in order) into the directory `dir`.
fn export_tree(store: &Store, layers: &[lade_cache::Digest], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for l in layers {
        let r = store.open_layer(l)?;
        let opts = ExtractOptions {
            whiteouts: WhiteoutMode::Apply,
            what: format!("layer {l}"),
            ..Default::default()
        };
        extract(r, dir, &opts)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs_as_buildx_reads_them() {
        let p = |s: &str| parse_output(Some(s)).unwrap();
        assert_eq!(parse_output(None).unwrap(), Output::Image);
        assert_eq!(p("type=image"), Output::Image);
        assert_eq!(p("-"), Output::Tar(Dest::Stdout));
        assert_eq!(p("out/dir"), Output::Local("out/dir".into()));
        assert_eq!(p("type=tar,dest=-"), Output::Tar(Dest::Stdout));
        assert_eq!(
            p("type=tar,dest=fs.tar"),
            Output::Tar(Dest::File("fs.tar".into()))
        );
        assert_eq!(
            p("type=docker,dest=-"),
            Output::Archive("docker", Dest::Stdout)
        );
        assert_eq!(
            p("type=oci,dest=i.tar"),
            Output::Archive("oci", Dest::File("i.tar".into()))
        );
        assert_eq!(p("type=local,dest=d"), Output::Local("d".into()));
        assert_eq!(p("type=tar,dest=-").stdout_kind(), Some("tar"));
        assert_eq!(p("type=oci,dest=-").stdout_kind(), Some("oci"));
        assert_eq!(p("type=oci,dest=x").stdout_kind(), None);
        for bad in [
            "type=tar",
            "type=local,dest=-",
            "type=nope,dest=x",
            "",
            "x=1",
        ] {
            assert!(parse_output(Some(bad)).is_err(), "{bad}");
        }
    }
}
