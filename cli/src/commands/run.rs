//! `lade run`: an image's config merged with the flags exactly as docker does, a container
//! state dir (`lade_runtime::containers`), one sandbox, stdio/tty relayed, signals forwarded,
//! the exit code returned.
//!
//! Fast path (`lade run --rm IMAGE true`): one shared flock on the store, one read of
//! `refs.json` and of the config, a `stat` per layer snapshot, one `state.json` write, the
//! sandbox, then one rename of the container dir into `.trash/` and its deletion. No fsync, no
//! scan, no store lock held while the container runs, no registry client: an image missing
//! from the store is pulled first (`--pull missing`, docker's default; `always` re-resolves the
//! tag, `never` refuses), with docker's messages on standard error.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use lade_cache::{Image, Reference, Store};
use lade_registry::PullPolicy;
use lade_runtime::containers::{Container, ContainerStore, NewContainer};
use lade_runtime::{
    BindMount, EtcFiles, NetworkMode, Rootfs, Runtime, SandboxSpec, Signaller, Stdio, StdioSet,
};
use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::registry_opts::RegistryOpts;
use super::Global;

/// docker's exit code for errors of the runner itself (bad flags, missing image, setup).
pub const EXIT_LADE_ERROR: u8 = 125;

#[derive(Debug, Args)]
#[command(
    disable_help_flag = true,
    override_usage = "lade run [OPTIONS] IMAGE [COMMAND] [ARG...]"
)]
pub struct RunArgs {
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Remove the container and its changes when it exits
    #[arg(long)]
    rm: bool,
    /// Pass standard input to the container
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    tty: bool,
    /// Name the container (default: a generated adjective_name)
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable; a bare KEY copies KEY from lade's environment
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments, bare KEY copied)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container (created when missing)
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// USER[:GROUP] (names or numbers from the image's /etc/passwd and /etc/group)
    #[arg(short, long)]
    user: Option<String>,
    /// Add a supplementary group
    #[arg(long = "group-add", value_name = "GROUP")]
    group_add: Vec<String>,
    /// Bind mount a host path: SRC:DST[:ro|rw] (SRC absolute; created when missing, like docker)
    #[arg(short, long = "volume", value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// Replace the image's ENTRYPOINT (one word; '' clears it and the image's CMD)
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Network: none (only lo, the default) or host
    #[arg(long, alias = "net", default_value = "none", value_name = "MODE")]
    network: String,
    /// Container hostname (default: the first 12 digits of the container ID)
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Run a minimal init as pid 1 that reaps zombies and forwards signals
    #[arg(long)]
    init: bool,
    /// Pull the image before running: missing (only when not in the store), always
    /// (re-resolve the tag, download what changed) or never
    #[arg(long, default_value = "missing", value_name = "POLICY", value_parser = ["missing", "always", "never"])]
    pull: String,
    #[command(flatten)]
    registry_opts: RegistryOpts,
    /// IMAGE [COMMAND [ARG...]]
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    args: Vec<String>,
}

/// What a container was configured with: docker's container `Config` after merging the
/// image's config with the flags. Kept in the container's state (for `commit` and `ps`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    pub hostname: String,
    pub user: String,
    pub tty: bool,
    pub open_stdin: bool,
    /// Configured environment (flags first, then the image's entries they do not override).
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    /// The image as the user named it.
    pub image: String,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
}

impl ContainerConfig {
    /// The process argv: entrypoint followed by cmd.
    pub fn argv(&self) -> Vec<String> {
        let mut v = self.entrypoint.clone().unwrap_or_default();
        v.extend(self.cmd.clone().unwrap_or_default());
        v
    }
}

/// What `lade run` keeps in `ContainerState::meta`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMeta {
    /// The image's ID (config digest): a GC root while the container exists.
    pub image_id: String,
    /// Its layers (diffIDs, bottom first).
    pub layers: Vec<String>,
    pub config: ContainerConfig,
    /// Set by `commit`: the container's upperdir became this layer's snapshot.
    #[serde(default)]
    pub committed_layer: Option<String>,
    #[serde(default)]
    pub auto_remove: bool,
}

/// The flags that change the container config.
#[derive(Debug, Default)]
pub struct ConfigFlags<'a> {
    pub image: &'a str,
    pub cmd: &'a [String],
    pub entrypoint: Option<&'a str>,
    /// Already resolved (`--env-file` entries first, then `-e`, bare keys looked up).
    pub env: Vec<String>,
    pub workdir: Option<&'a str>,
    pub user: Option<&'a str>,
    pub hostname: &'a str,
    pub tty: bool,
    pub open_stdin: bool,
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array().map(|a| {
        a.iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect()
    })
}

/// Merges an image's `config` object with the flags the way docker does (moby's `merge` and
/// the CLI's entrypoint rules):
/// - `--entrypoint X` replaces the image's entrypoint with the single word `X` and drops the
///   image's CMD; `--entrypoint ''` clears both;
/// - without `--entrypoint`, a command replaces the image's CMD; none keeps it;
/// - env: the flags' entries in order, then the image's entries whose key they do not set;
/// - working dir and user: the flag, else the image's.
pub fn merge_config(image_config: Option<&Value>, f: &ConfigFlags<'_>) -> Result<ContainerConfig> {
    let img = image_config.cloned().unwrap_or(Value::Null);
    let (entrypoint, cmd) = match f.entrypoint {
        Some("") => (None, Some(f.cmd.to_vec()).filter(|c| !c.is_empty())),
        Some(ep) => (
            Some(vec![ep.to_string()]),
            Some(f.cmd.to_vec()).filter(|c| !c.is_empty()),
        ),
        None => {
            let cmd = if f.cmd.is_empty() {
                string_list(img.get("Cmd"))
            } else {
                Some(f.cmd.to_vec())
            };
            (string_list(img.get("Entrypoint")), cmd)
        }
    };
    let entrypoint = entrypoint.filter(|e| !e.is_empty());
    if entrypoint.is_none() && cmd.as_ref().is_none_or(|c| c.is_empty()) {
        bail!("no command specified: give one after the image, or use an image with CMD or ENTRYPOINT");
    }
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut env = f.env.clone();
    for e in string_list(img.get("Env")).unwrap_or_default() {
        let k = key(&e);
        if !f.env.iter().any(|u| key(u) == k) {
            env.push(e);
        }
    }
    let working_dir = match f.workdir {
        Some(w) => {
            if !w.starts_with('/') {
                bail!("the working directory '{w}' is invalid, it needs to be an absolute path");
            }
            w.to_string()
        }
        None => img
            .get("WorkingDir")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    let user = match f.user {
        Some(u) => u.to_string(),
        None => img
            .get("User")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    Ok(ContainerConfig {
        hostname: f.hostname.to_string(),
        user,
        tty: f.tty,
        open_stdin: f.open_stdin,
        env,
        cmd,
        image: f.image.to_string(),
        working_dir,
        entrypoint,
    })
}

/// `-e` as docker's CLI takes it: `KEY=VALUE` as is, a bare `KEY` copied from `lookup` when set
/// there, else passed bare (which unsets `KEY` in the container).
pub fn env_flag(e: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let (k, has_value) = match e.split_once('=') {
        Some((k, _)) => (k, true),
        None => (e, false),
    };
    if k.is_empty() {
        bail!("invalid environment variable: {e}");
    }
    if has_value {
        return Ok(e.to_string());
    }
    Ok(match lookup(k) {
        Some(v) => format!("{k}={v}"),
        None => e.to_string(),
    })
}

/// docker's `--env-file` format: one `KEY=VALUE` per line, taken literally (no quotes, no
/// trimming of the value); leading whitespace and a UTF-8 BOM dropped; blank lines and lines
/// starting with `#` skipped; a bare `KEY` copied from `lookup` when set there, else skipped;
/// a key with whitespace is an error.
pub fn parse_env_file(
    text: &[u8],
    what: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>> {
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let mut out = Vec::new();
    for (n, raw) in text.split(|b| *b == b'\n').enumerate() {
        let line = std::str::from_utf8(raw).with_context(|| {
            format!(
                "env file {what} contains invalid utf8 bytes at line {}",
                n + 1
            )
        })?;
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (var, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if var.contains(char::is_whitespace) {
            bail!(
                "poorly formatted environment: variable '{var}' contains whitespaces ({what}:{})",
                n + 1
            );
        }
        if var.is_empty() {
            bail!(
                "poorly formatted environment: no variable name on line '{line}' ({what}:{})",
                n + 1
            );
        }
        match value {
            Some(v) => out.push(format!("{var}={v}")),
            None => {
                if let Some(v) = lookup(var) {
                    out.push(format!("{var}={v}"));
                }
            }
        }
    }
    Ok(out)
}

fn host_env(k: &str) -> Option<String> {
    std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
}

/// A docker-like generated name (`adjective_name`).
fn generated_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ADJ: &[&str] = &[
        "brave", "calm", "clever", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid",
        "merry", "nimble", "quiet", "quirky", "serene", "sharp", "steady", "sunny", "swift",
        "tender", "upbeat", "vivid", "wise", "witty", "zealous", "bold", "cosmic", "dreamy",
        "frosty", "hungry",
    ];
    const NAME: &[&str] = &[
        "babbage",
        "bohr",
        "curie",
        "darwin",
        "dirac",
        "euler",
        "faraday",
        "fermi",
        "galois",
        "gauss",
        "hopper",
        "hypatia",
        "kepler",
        "lamarr",
        "lovelace",
        "maxwell",
        "meitner",
        "noether",
        "pascal",
        "planck",
        "ritchie",
        "shannon",
        "tesla",
        "thompson",
        "turing",
        "volta",
        "wozniak",
        "yalow",
        "zuse",
        "ramanujan",
    ];
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let r = h.finish();
    format!(
        "{}_{}",
        ADJ[(r % ADJ.len() as u64) as usize],
        NAME[((r >> 32) % NAME.len() as u64) as usize]
    )
}

/// Signals `lade run` forwards to the container: every catchable one except those about lade
/// itself (faults, SIGCHLD, SIGPIPE, SIGURG); SIGWINCH resizes the pty instead with `-t`.
fn forwarded_signals() -> SigSet {
    let mut set = SigSet::all();
    for s in [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGCHLD,
        Signal::SIGPIPE,
        Signal::SIGURG,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGTRAP,
        Signal::SIGSYS,
    ] {
        set.remove(s);
    }
    set
}

/// Puts the host terminal in raw mode; restores it when dropped.
struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    fn enter() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return Self { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return Self { saved: None };
        }
        Self { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn forward_signals(set: SigSet, signaller: Signaller, pty: Option<Arc<OwnedFd>>) {
    std::thread::spawn(move || loop {
        match set.wait() {
            Ok(Signal::SIGWINCH) if pty.is_some() => {
                if let (Some(m), Some(size)) =
                    (&pty, lade_runtime::pty::get_size(&std::io::stdout()))
                {
                    let _ = lade_runtime::pty::set_size(m.as_ref(), size);
                }
            }
            Ok(sig) => {
                let _ = signaller.signal(sig as i32);
            }
            Err(_) => {}
        }
    });
}

/// Forwards `signals` to the sandbox until it has exited (its fd turns readable).
fn wait_forwarding(sandbox: &lade_runtime::Sandbox, signals: &SigSet) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("create a signalfd")?;
    let signaller = sandbox.signaller();
    loop {
        let mut fds = [
            PollFd::new(sandbox.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        while let Ok(Some(info)) = sfd.read_signal() {
            let _ = signaller.signal(info.ssi_signo as i32);
        }
        if exited {
            return Ok(());
        }
    }
}

fn err_code(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", crate::output::render_error(e));
    ExitCode::from(EXIT_LADE_ERROR)
}

pub fn run(g: &Global, a: RunArgs) -> Result<ExitCode> {
    match run_inner(g, a) {
        Ok(code) => Ok(code),
        Err(e) => Ok(err_code(&e)),
    }
}

fn run_inner(g: &Global, a: RunArgs) -> Result<ExitCode> {
    let (image_name, cmd) = a
        .args
        .split_first()
        .ok_or_else(|| anyhow!("give an image to run"))?;
    if image_name.starts_with('-') {
        // Everything from the image on belongs to the container, so an unknown flag before
        // the image lands here.
        bail!("unknown flag {image_name:?} (see `lade run --help`)");
    }
    let network = match a.network.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => bail!("unsupported --network {other:?}: use none or host"),
    };
    let mut env = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read(f).with_context(|| format!("open env file {}", f.display()))?;
        env.extend(parse_env_file(&text, &f.display().to_string(), &host_env)?);
    }
    for e in &a.env {
        env.push(env_flag(e, &host_env)?);
    }
    let mut mounts = Vec::new();
    for v in &a.volume {
        if !v.contains(':') {
            bail!("volume {v:?}: anonymous and named volumes are not supported; use SRC:DST with an absolute host path");
        }
        let m = BindMount::parse(v)?;
        if std::fs::symlink_metadata(&m.source).is_err() {
            // docker's -v creates a missing host directory.
            std::fs::create_dir_all(&m.source)
                .with_context(|| format!("create the volume source {}", m.source.display()))?;
        }
        mounts.push(m);
    }

    let root = g.root();
    let store = Store::open(&root)
        .with_context(|| format!("cannot open the store at {}", root.display()))?;
    let image = find_image(&store, image_name, &a.pull, &a.registry_opts)?;
    let raw: Value = serde_json::from_slice(&image.config_bytes)
        .with_context(|| format!("image config {}", image.id))?;
    let snapshots = store
        .ensure_snapshots(&image.layers)
        .with_context(|| format!("cannot unpack the layers of {image_name}"))?;

    let containers = ContainerStore::open(root.join("containers"))?;
    let mut flags = ConfigFlags {
        image: image_name,
        cmd,
        entrypoint: a.entrypoint.as_deref(),
        env,
        workdir: a.workdir.as_deref(),
        user: a.user.as_deref(),
        hostname: "",
        tty: a.tty,
        open_stdin: a.interactive,
    };
    let id = ContainerStore::new_id()?;
    let hostname = a.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    flags.hostname = &hostname;
    let config = merge_config(raw.get("config"), &flags)?;
    let mut lowerdirs: Vec<PathBuf> = snapshots.into_iter().rev().collect();
    // An image without layers gets an empty lower layer.
    let empty_lower = lowerdirs
        .is_empty()
        .then(|| containers.root().join(&id).join("empty"));
    lowerdirs.extend(empty_lower.clone());
    let meta = RunMeta {
        image_id: image.id.to_string(),
        layers: image.layers.iter().map(|d| d.to_string()).collect(),
        config: config.clone(),
        committed_layer: None,
        auto_remove: a.rm,
    };
    let meta = serde_json::to_value(&meta)?;
    let mut container = None;
    for attempt in 0..8 {
        let (name, generated) = match &a.name {
            Some(n) => (n.clone(), false),
            None if attempt < 7 => (generated_name(), true),
            None => (format!("{}_{attempt}", generated_name()), true),
        };
        match containers.prepare(NewContainer {
            id: Some(id.clone()),
            name: Some(name),
            image: image_name.clone(),
            command: config.argv(),
            lowerdirs: lowerdirs.clone(),
            meta: meta.clone(),
        }) {
            Ok(c) => {
                container = Some(c);
                break;
            }
            Err(lade_runtime::Error::Container(m)) if generated && m.contains("already in use") => {
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut c = container.ok_or_else(|| anyhow!("cannot find a free container name"))?;
    if let Some(empty) = &empty_lower {
        std::fs::create_dir(empty).with_context(|| format!("create {}", empty.display()))?;
    }
    // The one write of the container's state, before its command can run: from here on it is
    // listed and a GC root, so the store lock (held until now so that no prune could take the
    // image meanwhile) goes.
    c.set_starting()?;
    drop(store);

    let mut spec = SandboxSpec::new(
        Rootfs::Overlay {
            lowerdirs,
            upperdir: c.upperdir(),
        },
        c.scratch(),
        config.argv(),
    );
    spec.process.env = lade_runtime::docker_env(&config.env, &hostname, a.tty);
    spec.process.cwd = if config.working_dir.is_empty() {
        "/".into()
    } else {
        config.working_dir.clone()
    };
    spec.process.user = config.user.clone();
    spec.process.additional_groups = a.group_add.clone();
    spec.process.tty = a.tty;
    spec.process.init = a.init;
    if a.tty {
        spec.process.console_size = lade_runtime::pty::get_size(&std::io::stdout())
            .or_else(|| lade_runtime::pty::get_size(&std::io::stdin()));
    }
    spec.hostname = hostname.clone();
    spec.network = network;
    if network != NetworkMode::None {
        // (SandboxSpec::new filled in the defaults for --network none.)
        spec.etc = EtcFiles::docker_defaults(network);
    }
    spec.mounts = mounts;
    if let Err(e) = spec.validate() {
        discard(&containers, c);
        return Err(e.into());
    }
    let stdio = StdioSet {
        stdin: if a.interactive {
            Stdio::Inherit
        } else {
            Stdio::Null
        },
        stdout: Stdio::Inherit,
        stderr: Stdio::Inherit,
    };

    let signals = forwarded_signals();
    let _ = signals.thread_block();
    let mut sandbox = match Runtime::new().spawn(&spec, stdio) {
        Ok(s) => s,
        Err(e) => {
            let code = match &e {
                lade_runtime::Error::Start { kind, .. } => kind.exit_code() as u8,
                _ => EXIT_LADE_ERROR,
            };
            eprintln!("error: {e}");
            if a.rm {
                discard(&containers, c);
            } else if let Err(e) = c.save_created() {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::from(code));
        }
    };
    if let Err(e) = c.record_pids(&sandbox) {
        eprintln!("error: {e}");
    }
    let pty = sandbox.take_pty().map(Arc::new);
    if pty.is_none() {
        // No thread: wait for the exit and the signals to forward in one poll.
        wait_forwarding(&sandbox, &signals)?;
    } else {
        forward_signals(signals, sandbox.signaller(), pty.clone());
    }
    if let Some(master) = &pty {
        let _raw = (a.interactive && std::io::stdin().is_terminal()).then(RawMode::enter);
        let stdin = std::io::stdin();
        let null;
        let input = if a.interactive {
            stdin.as_fd()
        } else {
            null = std::fs::File::open("/dev/null").context("open /dev/null")?;
            null.as_fd()
        };
        lade_runtime::pty::relay(master.as_fd(), input, std::io::stdout().as_fd());
        let _ = std::io::stdout().flush();
    }
    let finished = sandbox.wait();
    drop(pty);
    let status = match finished {
        Ok(f) => f.status,
        Err(e) => {
            eprintln!("error: {e}");
            if a.rm {
                discard(&containers, c);
            }
            return Ok(ExitCode::from(EXIT_LADE_ERROR));
        }
    };
    if a.rm {
        discard(&containers, c);
    } else if let Err(e) = c.set_exited(status) {
        // `lade rm -f` may have removed it meanwhile.
        if c.dir().exists() {
            eprintln!("error: {e}");
        }
    }
    Ok(ExitCode::from(status.code() as u8))
}

/// The image to run, as `docker run --pull POLICY` finds it: the store's (`missing`, `never`;
/// no network, no registry client built), else pulled through `lade_registry::ensure_image`
/// (`missing` when the store lacks it, `always` every time: one `HEAD` when nothing changed).
fn find_image(store: &Store, name: &str, pull: &str, opts: &RegistryOpts) -> Result<Image> {
    let always = pull == "always";
    let missing = if always {
        None
    } else {
        match store.image(name) {
            Ok(i) => return Ok(i),
            Err(lade_cache::Error::NotFound(m)) => Some(m),
            Err(e) => return Err(e).context(format!("cannot read image {name}")),
        }
    };
    if let Some(m) = &missing {
        if pull == "never" {
            bail!(
                "unable to find image '{name}' locally ({m}); `lade pull` it or `lade load` an \
                 archive first (--pull never does not pull)"
            );
        }
        // An image ID (or an ambiguous prefix of one) names nothing a registry could serve.
        if name.starts_with("sha256:") || m.contains("ambiguous") {
            bail!("unable to find image '{name}' locally ({m})");
        }
    }
    let reference = Reference::parse(name)?;
    let policy = if always {
        PullPolicy::Always
    } else {
        PullPolicy::Missing
    };
    Ok(super::transfer::ensure_with_progress(store, &reference, policy, opts)?.image)
}

/// Removes a `--rm` container: out of the listing with one rename into the trash, then
/// deleted at once when its upperdir is empty (a handful of `rmdir`s), else by a detached
/// `lade __purge-trash` so that the exit code is not held up by deleting what it wrote.
fn discard(containers: &ContainerStore, c: Container) {
    match containers.discard(c) {
        Ok(trash) => {
            let changed =
                std::fs::read_dir(trash.join("upper")).is_ok_and(|mut rd| rd.next().is_some());
            if !changed || purge_in_background(containers.root()).is_err() {
                let _ = lade_runtime::remove_tree(&trash);
            }
        }
        Err(e) => eprintln!("error: {e}"),
    }
}

/// Starts `lade __purge-trash` in its own session, not waited for.
fn purge_in_background(containers_root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(std::env::current_exe()?)
        .arg(PURGE_TRASH)
        .arg(containers_root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}

/// Hidden entry point: `lade __purge-trash CONTAINERS_DIR` deletes removed containers.
pub const PURGE_TRASH: &str = "__purge-trash";

/// Runs the hidden trash purge and exits when this process was started as one.
pub fn maybe_purge_trash() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(PURGE_TRASH)) {
        return;
    }
    let code = match args.next() {
        Some(dir) => i32::from(ContainerStore::at(dir).purge_trash().is_err()),
        None => 2,
    };
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flags<'a>(cmd: &'a [String], ep: Option<&'a str>) -> ConfigFlags<'a> {
        ConfigFlags {
            image: "img",
            cmd,
            entrypoint: ep,
            hostname: "h",
            ..Default::default()
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_like_docker() {
        let img = json!({"Entrypoint": ["echo", "ep"], "Cmd": ["c1", "c2"]});
        let argv = |cmd: &[&str], ep: Option<&str>| {
            let cmd = s(cmd);
            merge_config(Some(&img), &flags(&cmd, ep)).map(|c| c.argv())
        };
        assert_eq!(argv(&[], None).unwrap(), s(&["echo", "ep", "c1", "c2"]));
        assert_eq!(
            argv(&["x", "y"], None).unwrap(),
            s(&["echo", "ep", "x", "y"])
        );
        // --entrypoint drops the image's CMD; '' clears the entrypoint too.
        assert_eq!(argv(&[], Some("echo")).unwrap(), s(&["echo"]));
        assert_eq!(argv(&[], Some("echo a b")).unwrap(), s(&["echo a b"]));
        assert_eq!(argv(&["hi"], Some("")).unwrap(), s(&["hi"]));
        assert!(argv(&[], Some(""))
            .unwrap_err()
            .to_string()
            .contains("no command specified"));
        let none = json!({});
        assert!(merge_config(Some(&none), &flags(&[], None)).is_err());
        assert!(merge_config(None, &flags(&[], None)).is_err());
        let cfg = merge_config(Some(&img), &flags(&[], Some(""))).err();
        assert!(cfg.is_some());
        let c = merge_config(Some(&img), &flags(&s(&["a"]), Some(""))).unwrap();
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.cmd, Some(s(&["a"])));
    }

    #[test]
    fn env_workdir_user_merge() {
        let img = json!({"Env": ["A=img", "B=img", "PATH=/bin"], "WorkingDir": "/w", "User": "lade", "Cmd": ["sh"]});
        let mut f = flags(&[], None);
        f.env = s(&["HOSTV=x", "B=user", "A"]);
        let c = merge_config(Some(&img), &f).unwrap();
        assert_eq!(c.env, s(&["HOSTV=x", "B=user", "A", "PATH=/bin"]));
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.user, "lade");
        // What the process gets (docker's CreateDaemonEnvironment).
        assert_eq!(
            lade_runtime::docker_env(&c.env, "h", false),
            s(&["PATH=/bin", "HOSTNAME=h", "HOSTV=x", "B=user"])
        );
        f.workdir = Some("/x");
        f.user = Some("0:0");
        let c = merge_config(Some(&img), &f).unwrap();
        assert_eq!((c.working_dir.as_str(), c.user.as_str()), ("/x", "0:0"));
        f.workdir = Some("rel");
        assert!(merge_config(Some(&img), &f)
            .unwrap_err()
            .to_string()
            .contains("absolute"));
    }

    #[test]
    fn env_flags_and_files() {
        let lookup = |k: &str| (k == "HOSTV").then(|| "fromhost".to_string());
        assert_eq!(env_flag("A=1", &lookup).unwrap(), "A=1");
        assert_eq!(env_flag("HOSTV", &lookup).unwrap(), "HOSTV=fromhost");
        assert_eq!(env_flag("NOPE", &lookup).unwrap(), "NOPE");
        assert!(env_flag("=x", &lookup).is_err());
        let text = b"\xef\xbb\xbfX=1\n  # c\n\n  Y= 2 \nHOSTV\nNOPE\nQ=\"q\"\n\tT=tab\n";
        assert_eq!(
            parse_env_file(text, "f", &lookup).unwrap(),
            s(&["X=1", "Y= 2 ", "HOSTV=fromhost", "Q=\"q\"", "T=tab"])
        );
        assert!(parse_env_file(b"A B=1\n", "f", &lookup)
            .unwrap_err()
            .to_string()
            .contains("whitespaces"));
        assert!(parse_env_file(b"Y =1\n", "f", &lookup).is_err());
        assert!(parse_env_file(b"=1\n", "f", &lookup).is_err());
        assert!(parse_env_file(b"A=\xff\n", "f", &lookup).is_err());
    }

    #[test]
    fn generated_names_look_like_dockers() {
        let n = generated_name();
        let (a, b) = n.split_once('_').unwrap();
        assert!(!a.is_empty() && !b.is_empty());
    }
}
