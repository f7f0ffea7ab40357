//! RUN: one command in the `runtime` sandbox on an overlay of the parent's snapshots (read-only
//! lowerdirs) and a fresh upperdir in the store's temp space. On success the upperdir (exactly
//! the change, overlay whiteouts included) becomes the layer and its snapshot by rename
//! (`Store::commit_upperdir`): no file data is copied. A command that changes nothing still
//! gives a layer, the empty tar BuildKit also records. On failure or cancellation the sandbox is
//! killed and every temp dir removed: nothing half-made reaches the store.

use std::collections::HashSet;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use lade_cache::{Digest, LayerRecord, Store, TarOptions};
use lade_runtime::spec::ProcessRules;
use lade_runtime::{
    BindMount, EtcFiles, ExitStatus, NetworkMode, Rootfs, Runtime, SandboxSpec, Stdio, StdioSet,
    UserNamespace,
};
use nix::fcntl::OFlag;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Hostname of RUN steps (BuildKit's).
pub const HOSTNAME: &str = "buildkitsandbox";

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// argv (shell form already wrapped in the stage's SHELL).
    pub args: Vec<String>,
    /// `KEY=VALUE`, exactly the step's environment.
    pub env: Vec<String>,
    /// Absolute working directory (created when missing).
    pub cwd: String,
    /// `USER[:GROUP]` (names resolved from the image's own files); empty for root.
    pub user: String,
    /// Host network (`true`) or only `lo`.
    pub host_network: bool,
    /// Files mounted read-only at `/dev/pipes/NAME` (heredoc scripts with a shebang).
    pub files: Vec<(String, Vec<u8>)>,
    /// Host directories bind-mounted into the sandbox (`RUN --mount`).
    pub mounts: Vec<HostMount>,
}

/// A host directory bound into a RUN sandbox.
#[derive(Debug, Clone)]
pub struct HostMount {
    pub source: PathBuf,
    /// Absolute path in the image.
    pub destination: String,
    pub readonly: bool,
    /// Scratch space of this step only (the caller removes it).
    pub temp: bool,
    /// Mount a view instead of `source` as is: an overlay of these snapshot dirs (bottom
    /// first; `source` is then unused), or of `source` itself when empty, read-only or with
    /// a throwaway upperdir when writable; `subpath` (in-root) of it is what is bound.
    pub view: Option<(Vec<PathBuf>, String)>,
}

/// Receives the command's output as it comes (`true` for stderr).
pub type LogFn = Arc<dyn Fn(bool, &[u8]) + Send + Sync>;

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::Mount {
        what: "create an output pipe".into(),
        source: e,
    })
}

fn reader(fd: OwnedFd, stderr: bool, log: LogFn) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(fd);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => log(stderr, &buf[..n]),
            }
        }
    })
}

/// Runs `spec` on top of `parent` (diffIDs, bottom first) and returns the new layer. Kills the
/// sandbox and cleans up when `cancel` fires.
pub async fn run(
    store: Arc<Store>,
    parent: Vec<Digest>,
    spec: RunSpec,
    log: LogFn,
    cancel: CancellationToken,
) -> Result<LayerRecord> {
    let st = store.clone();
    let prepared = tokio::task::spawn_blocking(move || -> Result<_> {
        let lowers = st.ensure_snapshots(&parent)?;
        let tmp = st.temp_dir("run-")?;
        Ok((lowers, tmp))
    })
    .await
    .map_err(|e| Error::Invalid(format!("worker task failed: {e}")))??;
    let (lowers, tmp) = prepared;
    let upper = tmp.path().join("upper");
    let scratch = tmp.path().join("scratch");
    let mut lowerdirs: Vec<PathBuf> = crate::mountns::dedup_lowers(&lowers)
        .into_iter()
        .rev()
        .collect();
    if lowerdirs.is_empty() {
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).map_err(crate::io_err("create", &empty))?;
        lowerdirs.push(empty);
    }
    let mut mounts = Vec::new();
    if !spec.files.is_empty() {
        let dir = tmp.path().join("pipes");
        std::fs::create_dir(&dir).map_err(crate::io_err("create", &dir))?;
        for (name, data) in &spec.files {
            let p = dir.join(name);
            std::fs::write(&p, data).map_err(crate::io_err("write", &p))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .map_err(crate::io_err("chmod", &p))?;
            mounts.push(BindMount {
                source: p,
                destination: format!("/dev/pipes/{name}"),
                readonly: true,
            });
        }
    }
    let mut views = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        match &m.view {
            None => mounts.push(BindMount {
                source: m.source.clone(),
                destination: m.destination.clone(),
                readonly: m.readonly,
            }),
            Some((layers, subpath)) => {
                let dir = tmp.path().join(format!("view{i}"));
                let lowers = if layers.is_empty() {
                    vec![m.source.clone()]
                } else {
                    layers.clone()
                };
                views.push((
                    i,
                    dir,
                    lowers,
                    subpath.clone(),
                    m.readonly,
                    m.destination.clone(),
                ));
            }
        }
    }
    let empty_view = tmp.path().join("view-empty");
    let network = if spec.host_network {
        NetworkMode::Host
    } else {
        NetworkMode::None
    };
    let mut sspec = SandboxSpec::new(
        Rootfs::Overlay {
            lowerdirs,
            upperdir: upper.clone(),
        },
        scratch,
        spec.args.clone(),
    );
    sspec.hostname = HOSTNAME.into();
    sspec.network = network;
    // BuildKit's runc executor: generated /etc/hosts and /etc/resolv.conf only (the image's
    // /etc/hostname stays, and a RUN may delete it), and BuildKit's supplementary groups
    sspec.etc = EtcFiles::docker_defaults(network)
        .with_hostname_entry(HOSTNAME)
        .without_hostname_file();
    sspec.mounts = mounts;
    sspec.user_namespace = UserNamespace::Auto;
    sspec.process.env = spec.env.clone();
    sspec.process.cwd = spec.cwd.clone();
    sspec.process.user = spec.user.clone();
    sspec.process.rules = ProcessRules::BuildKitRun;

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stdio = StdioSet {
        stdin: Stdio::Null,
        stdout: Stdio::Fd(out_w),
        stderr: Stdio::Fd(err_w),
    };
    let t_out = reader(out_r, false, log.clone());
    let t_err = reader(err_r, true, log.clone());
    let command = spec.args.join(" ");
    let spawned = tokio::task::spawn_blocking(move || -> Result<_> {
        if views.is_empty() {
            return Ok((Runtime::new().spawn(&sspec, stdio), HashSet::new()));
        }
        // Views of other stages (or writable views of the context) are overlays mounted in a
        // private mount namespace; the sandbox, spawned from the same thread, starts with a
        // copy of that namespace and binds them. The host never sees these mounts.
        std::fs::create_dir_all(&empty_view).map_err(crate::io_err("create", &empty_view))?;
        crate::mountns::in_private_mount_ns(move || {
            let mut sspec = sspec;
            // the views whose bound path is a directory: only known once the view is mounted
            let mut dir_views = HashSet::new();
            for (i, dir, lowers, subpath, readonly, dest) in &views {
                let root = dir.join("root");
                std::fs::create_dir_all(&root).map_err(crate::io_err("create", &root))?;
                if *readonly {
                    crate::mountns::mount_overlay(&root, lowers, None, &empty_view)?;
                } else {
                    let (up, wk) = (dir.join("upper"), dir.join("work"));
                    for d in [&up, &wk] {
                        std::fs::create_dir_all(d).map_err(crate::io_err("create", d))?;
                    }
                    crate::mountns::mount_overlay(&root, lowers, Some((&up, &wk)), &empty_view)?;
                }
                let r = crate::rootfs::Root::open(&root)?;
                let resolved = r.resolve(subpath)?;
                match r.lstat(&resolved)? {
                    None => return Err(Error::NotFound(format!("bind source {subpath}"))),
                    Some(meta) if meta.kind == crate::rootfs::Kind::Dir => {
                        dir_views.insert(*i);
                    }
                    Some(_) => {}
                }
                sspec.mounts.push(BindMount {
                    source: root.join(resolved.trim_start_matches('/')),
                    destination: dest.clone(),
                    readonly: *readonly,
                });
            }
            Ok((Runtime::new().spawn(&sspec, stdio), dir_views))
        })
    })
    .await
    .map_err(|e| Error::Invalid(format!("worker task failed: {e}")))??;
    let (spawned, dir_views) = spawned;
    let sandbox = match spawned {
        Ok(s) => s,
        Err(e) => {
            let _ = t_out.join();
            let _ = t_err.join();
            return Err(match e {
                lade_runtime::Error::Start { kind, message } => Error::Failed {
                    command,
                    status: ExitStatus::Exited(kind.exit_code()),
                    detail: Some(message),
                },
                other => other.into(),
            });
        }
    };
    let signaller = sandbox.signaller();
    let mut wait = tokio::task::spawn_blocking(move || sandbox.wait());
    let mut cancelled = false;
    let finished = tokio::select! {
        r = &mut wait => r,
        _ = cancel.cancelled() => {
            cancelled = true;
            let _ = signaller.signal(nix::libc::SIGKILL);
            (&mut wait).await
        }
    }
    .map_err(|e| Error::Invalid(format!("worker task failed: {e}")))??;
    let _ = t_out.join();
    let _ = t_err.join();
    if cancelled {
        return Err(Error::Cancelled);
    }
    if !finished.status.success() {
        return Err(Error::Failed {
            command,
            status: finished.status,
            detail: None,
        });
    }
    let upperdir = finished.upperdir.unwrap_or(upper);
    // BuildKit keeps the mount point of a directory mount (an empty directory) but removes the
    // empty stub of a file mount (a bind of a file, a secret) whose target did not exist; the
    // parents runc made for either stay. A target that existed is left as it was.
    let targets: Vec<String> = spec
        .mounts
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let is_dir = match m.view {
                Some(_) => dir_views.contains(&i),
                None => m.source.is_dir(),
            };
            if is_dir {
                Some(m.destination.clone())
            } else {
                let parent = m.destination.trim_end_matches('/').rsplit_once('/')?.0;
                (!parent.is_empty()).then(|| parent.to_string())
            }
        })
        .collect();
    let rec = tokio::task::spawn_blocking(move || {
        if !targets.is_empty() {
            keep_mountpoints(&lowers, &upperdir, tmp.path(), &targets)?;
        }
        let r = store.commit_upperdir(&upperdir, &TarOptions::default());
        drop(tmp);
        Ok::<_, Error>(r?)
    })
    .await
    .map_err(|e| Error::Invalid(format!("worker task failed: {e}")))??;
    Ok(rec)
}

/// BuildKit leaves the directory mount points of `RUN --mount` (empty directories) and the
/// parents of every mount point in the image, while the sandbox removes the stubs it made:
/// recreate `targets` in the upperdir through an overlay of the lower layers, so missing parents
/// are copied up with their own metadata.
fn keep_mountpoints(
    lowers: &[PathBuf],
    upper: &std::path::Path,
    tmp: &std::path::Path,
    targets: &[String],
) -> Result<()> {
    let work = tmp.join("mp-work");
    let mnt = tmp.join("mp-root");
    let empty = tmp.join("mp-empty");
    for d in [&work, &mnt, &empty] {
        std::fs::create_dir_all(d).map_err(crate::io_err("create", d))?;
    }
    crate::mountns::in_private_mount_ns(|| {
        crate::mountns::mount_overlay(&mnt, lowers, Some((upper, &work)), &empty)?;
        let root = crate::rootfs::Root::open(&mnt)?;
        for t in targets {
            root.mkdir_all(t, 0o755, None, None)?;
        }
        Ok(())
    })?;
    crate::sandbox_remove(&work);
    Ok(())
}
