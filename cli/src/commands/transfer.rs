//! `lade pull` and `lade push`: the registry crate's `pull_image`/`push_image` with per-layer
//! progress (indicatif bars on a terminal, one line per state change otherwise) and docker's
//! wording, so scripts that read `docker pull`/`docker push` output keep working. `lade run`
//! pulls a missing image through [`ensure_with_progress`], the same display on standard error
//! (as `docker run` shows its pull).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lade_cache::archive::host_arch;
use lade_cache::{Compression, Digest, Reference, Store};
use lade_registry::{
    ensure_image, pull_image, push_image, Client, EnsuredImage, Platform, Progress, ProgressFn,
    PullPolicy, PushOptions,
};

use super::registry_opts::{runtime, RegistryOpts};
use super::Global;
use crate::output::outln;

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image to pull: NAME, NAME:TAG or NAME@DIGEST (the tag defaults to latest)
    reference: String,
    /// Platform to pick from a multi-platform image, as os/arch or os/arch/variant (default:
    /// this machine's, e.g. linux/amd64)
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print only the image's full name
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry_opts: RegistryOpts,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Image to push: NAME or NAME:TAG as named in the store; the name says which registry
    /// and repository it goes to
    reference: String,
    /// Layer compression: gzip (a Docker v2 schema 2 manifest, what docker writes) or zstd (an
    /// OCI manifest; docker 20.10 cannot pull it). A layer is compressed once per compression:
    /// later pushes reuse the stored blob
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
    compression: String,
    /// Print only the digest
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry_opts: RegistryOpts,
}

fn open(g: &Global) -> Result<Store> {
    let root = g.root();
    Store::open(&root).with_context(|| format!("cannot open the store at {}", root.display()))
}

/// This machine's platform (what `--platform` defaults to).
pub fn host_platform() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: host_arch().into(),
        variant: None,
        os_version: None,
    }
}

pub fn pull(g: &Global, a: PullArgs) -> Result<ExitCode> {
    let reference = Reference::parse(&a.reference)?;
    let platform = match &a.platform {
        Some(p) => Platform::parse(p)?,
        None => host_platform(),
    };
    let store = open(g)?;
    let client = Client::new(a.registry_opts.client_config()?);
    let shown = if a.quiet {
        None
    } else {
        Some(Display::new(Verb::Pull, None, Stream::Stdout))
    };
    if shown.is_some() {
        let named = Reference::parse_named(&a.reference)?;
        if named.tag().is_none() && named.digest().is_none() {
            outln!("Using default tag: latest")?;
        }
        pulling_from(Stream::Stdout, &reference)?;
    }
    let progress = shown
        .as_ref()
        .map_or_else(ProgressFn::none, Display::callback);
    let result = runtime()?.block_on(pull_image(
        &client, &store, &reference, &platform, &progress,
    ));
    if let Some(d) = &shown {
        d.finish();
    }
    let pulled = result.with_context(|| format!("cannot pull {}", reference.familiar()))?;
    if a.quiet {
        outln!("{reference}")?;
        return Ok(ExitCode::SUCCESS);
    }
    pull_status(
        Stream::Stdout,
        &reference,
        Some(&pulled.repo_digest),
        pulled.up_to_date && pulled.layers_downloaded == 0,
    )?;
    outln!("{reference}")?;
    Ok(ExitCode::SUCCESS)
}

/// docker's first line of a pull: `TAG: Pulling from REPOSITORY`.
fn pulling_from(stream: Stream, reference: &Reference) -> Result<()> {
    stream.line(format_args!(
        "{}: Pulling from {}",
        reference.tag().map_or_else(
            || reference.manifest_reference().to_string(),
            str::to_string
        ),
        familiar_repository(reference)
    ))
}

/// docker's last lines of a pull: `Digest: ...` and `Status: ...`.
fn pull_status(
    stream: Stream,
    reference: &Reference,
    digest: Option<&Digest>,
    up_to_date: bool,
) -> Result<()> {
    if let Some(d) = digest {
        stream.line(format_args!("Digest: {d}"))?;
    }
    let familiar = reference.familiar();
    if up_to_date {
        stream.line(format_args!("Status: Image is up to date for {familiar}"))
    } else {
        stream.line(format_args!(
            "Status: Downloaded newer image for {familiar}"
        ))
    }
}

/// [`ensure_image`] with `docker run`'s messages and pull progress on standard error: the
/// caller found no local image (`PullPolicy::Missing`: "Unable to find image ... locally"
/// first) or was asked to re-resolve the tag (`PullPolicy::Always`). The client and the tokio
/// runtime live only for this call: when it returns no thread of it is left (so a caller that
/// blocks signals in its one thread sees every signal).
pub fn ensure_with_progress(
    store: &Store,
    reference: &Reference,
    policy: PullPolicy,
    opts: &RegistryOpts,
) -> Result<EnsuredImage> {
    let stream = Stream::Stderr;
    if policy == PullPolicy::Missing {
        stream.line(format_args!(
            "Unable to find image '{}' locally",
            reference.familiar()
        ))?;
    }
    let client = Client::new(opts.client_config()?);
    let rt = runtime()?;
    pulling_from(stream, reference)?;
    let display = Display::new(Verb::Pull, None, stream);
    let result = rt.block_on(ensure_image(
        &client,
        store,
        reference,
        &host_platform(),
        policy,
        &display.callback(),
    ));
    display.finish();
    drop(client);
    drop(rt);
    let ensured = result.with_context(|| format!("cannot pull {}", reference.familiar()))?;
    let up_to_date = ensured
        .pulled
        .as_ref()
        .is_none_or(|p| p.up_to_date && p.layers_downloaded == 0);
    pull_status(stream, reference, ensured.repo_digest.as_ref(), up_to_date)?;
    Ok(ensured)
}

pub fn push(g: &Global, a: PushArgs) -> Result<ExitCode> {
    let target = Reference::parse(&a.reference)?;
    if target.digest().is_some() {
        bail!(
            "cannot push a digest reference {:?}: push NAME[:TAG]",
            a.reference
        );
    }
    let compression = match a.compression.as_str() {
        "zstd" => Compression::Zstd,
        _ => Compression::Gzip,
    };
    let store = open(g)?;
    let image = store
        .image(&target.to_string())
        .with_context(|| format!("cannot push {}", target.familiar()))?;
    let client = Client::new(a.registry_opts.client_config()?);
    let shown = if a.quiet {
        None
    } else {
        Some(Display::new(
            Verb::Push,
            Some(image.id.clone()),
            Stream::Stdout,
        ))
    };
    if shown.is_some() {
        outln!("The push refers to repository [{}]", target.name())?;
    }
    let progress = shown
        .as_ref()
        .map_or_else(ProgressFn::none, Display::callback);
    let result = runtime()?.block_on(push_image(
        &client,
        &store,
        &image,
        &target,
        &PushOptions { compression },
        &progress,
    ));
    if let Some(d) = &shown {
        d.finish();
    }
    let pushed = result.with_context(|| format!("cannot push {}", target.familiar()))?;
    if a.quiet {
        outln!("{}", pushed.digest)?;
    } else {
        outln!(
            "{}: digest: {} size: {}",
            target.tag().unwrap_or("latest"),
            pushed.digest,
            pushed.size
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// docker prints the repository path without the registry: `library/busybox`, `pp/base`.
fn familiar_repository(r: &Reference) -> String {
    r.repository().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Pull,
    Push,
}

/// Where the lines of a transfer go: standard output (`lade pull`, `lade push`, as docker's)
/// or standard error (the pull of `lade run`, which keeps stdout for the container's output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// One line; a closed standard output is a [`crate::output::StdoutClosed`] error, a failed
    /// write to standard error is ignored (nowhere left to report it).
    fn line(self, args: std::fmt::Arguments<'_>) -> Result<()> {
        match self {
            Stream::Stdout => crate::output::write_line(args),
            Stream::Stderr => {
                use std::io::Write;
                let mut err = std::io::stderr().lock();
                let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
                Ok(())
            }
        }
    }
}

/// Renders [`Progress`] events: one bar per blob on a terminal (stderr), else one line per
/// state change on its [`Stream`] (docker's non-terminal output).
struct Display {
    inner: Arc<Mutex<DisplayState>>,
}

struct DisplayState {
    verb: Verb,
    stream: Stream,
    /// Not shown (the config: docker lists layers only).
    hidden: Option<Digest>,
    multi: Option<MultiProgress>,
    /// Blob digest or layer diffID -> row.
    rows: HashMap<Digest, Row>,
}

#[derive(Clone)]
struct Row {
    id: String,
    bar: Option<ProgressBar>,
}

fn short(d: &Digest) -> String {
    d.hex()[..12].to_string()
}

impl Display {
    fn new(verb: Verb, hidden: Option<Digest>, stream: Stream) -> Display {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Display {
            inner: Arc::new(Mutex::new(DisplayState {
                verb,
                stream,
                hidden,
                multi,
                rows: HashMap::new(),
            })),
        }
    }

    fn callback(&self) -> ProgressFn {
        let inner = self.inner.clone();
        ProgressFn::new(move |p| {
            if let Ok(mut st) = inner.lock() {
                st.event(p);
            }
        })
    }

    /// Leaves the bars as they are (finished ones show their final state) and stops drawing.
    fn finish(&self) {
        if let Ok(st) = self.inner.lock() {
            for r in st.rows.values() {
                if let Some(b) = &r.bar {
                    if !b.is_finished() {
                        b.abandon();
                    }
                }
            }
        }
    }
}

impl DisplayState {
    fn row(&mut self, key: &Digest, total: u64) -> Row {
        if let Some(r) = self.rows.get(key) {
            return r.clone();
        }
        let id = short(key);
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(total));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix}: {msg:<18} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(id.clone());
            b
        });
        let r = Row { id, bar };
        self.rows.insert(key.clone(), r.clone());
        r
    }

    fn say(&mut self, key: &Digest, total: u64, msg: &str, done: bool) {
        let r = self.row(key, total);
        match &r.bar {
            Some(b) if done => b.finish_with_message(msg.to_string()),
            Some(b) => b.set_message(msg.to_string()),
            // A closed stdout is reported by the next line `pull`/`push` print themselves.
            None => {
                let _ = self.stream.line(format_args!("{}: {msg}", r.id));
            }
        }
    }

    fn event(&mut self, p: Progress<'_>) {
        let digest = match p {
            Progress::Started { digest, .. }
            | Progress::Advanced { digest, .. }
            | Progress::Retrying { digest, .. }
            | Progress::Exists { digest }
            | Progress::Mounted { digest, .. }
            | Progress::Finished { digest, .. } => digest,
            Progress::Compressing { layer, .. } | Progress::Compressed { layer, .. } => layer,
        };
        if self.hidden.as_ref() == Some(digest) {
            return;
        }
        let (starting, finished) = match self.verb {
            Verb::Pull => ("Downloading", "Download complete"),
            Verb::Push => ("Pushing", "Pushed"),
        };
        match p {
            Progress::Started {
                digest,
                done,
                total,
            } => {
                let r = self.row(digest, total);
                if let Some(b) = &r.bar {
                    b.set_length(total);
                    b.set_position(done);
                }
                self.say(digest, total, starting, false);
            }
            Progress::Advanced { digest, done, .. } => {
                if let Some(Some(b)) = self.rows.get(digest).map(|r| r.bar.clone()) {
                    b.set_position(done);
                }
            }
            Progress::Retrying {
                digest,
                attempt,
                error,
                ..
            } => {
                let msg = format!("Retrying (attempt {attempt}): {error}");
                match self.rows.get(digest).and_then(|r| r.bar.clone()) {
                    Some(b) => b.set_message(format!("Retrying ({attempt})")),
                    None => {
                        let _ = self.stream.line(format_args!("{}: {msg}", short(digest)));
                    }
                }
            }
            Progress::Exists { digest } => {
                let msg = match self.verb {
                    Verb::Pull => "Already exists",
                    Verb::Push => "Layer already exists",
                };
                self.say(digest, 0, msg, true);
            }
            Progress::Mounted { digest, from } => {
                self.say(digest, 0, &format!("Mounted from {from}"), true);
            }
            Progress::Finished { digest, total } => {
                if let Some(Some(b)) = self.rows.get(digest).map(|r| r.bar.clone()) {
                    b.set_position(total);
                }
                self.say(digest, total, finished, true);
            }
            Progress::Compressing { layer, total } => {
                self.say(layer, total, "Compressing", false);
                if let Some(Some(b)) = self.rows.get(layer).map(|r| r.bar.clone()) {
                    b.enable_steady_tick(std::time::Duration::from_millis(200));
                }
            }
            Progress::Compressed {
                layer,
                digest,
                size,
            } => {
                let row = self.row(layer, size);
                if let Some(b) = &row.bar {
                    b.disable_steady_tick();
                    b.set_length(size);
                    b.set_position(0);
                    b.set_message("Compressed");
                } else {
                    let _ = self.stream.line(format_args!(
                        "{}: Compressed to {}",
                        row.id,
                        short(digest)
                    ));
                }
                self.rows.insert(digest.clone(), row);
            }
        }
    }
}
