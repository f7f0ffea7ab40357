//! Container commands on the state `lade run` leaves: `ps`, `rm`, `commit`; the containers as
//! GC roots of `lade prune`; the check `lade rmi` makes before removing an image.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use lade_cache::{Digest, GcRoots, Marks, Reference, Store, TarOptions};
use lade_runtime::containers::{ContainerState, ContainerStore, Status};
use serde_json::{json, Map, Value};

use super::run::RunMeta;
use super::timefmt::{human_duration, now_rfc3339, rfc3339};
use super::Global;
use crate::output::outln;

/// The container store of a lade store root, not created when missing (only `lade run` makes
/// it): reading commands leave a store as they found it.
pub fn container_store(root: &Path) -> Result<ContainerStore> {
    Ok(ContainerStore::at(root.join("containers")))
}

fn meta_of(c: &ContainerState) -> Option<RunMeta> {
    serde_json::from_value(c.meta.clone()).ok()
}

/// Containers are GC roots: their image (config, layers, snapshots) and a committed upperdir
/// layer survive `lade prune` as long as the container exists.
pub struct ContainerRoots {
    pub containers: Vec<ContainerState>,
}

impl GcRoots for ContainerRoots {
    fn mark(&self, _store: &Store, marks: &mut Marks) -> lade_cache::Result<()> {
        for c in &self.containers {
            let Some(m) = meta_of(c) else { continue };
            if let Ok(d) = Digest::parse(&m.image_id) {
                marks.images.insert(d);
            }
            for l in m.layers.iter().chain(m.committed_layer.iter()) {
                if let Ok(d) = Digest::parse(l) {
                    marks.layers.insert(d);
                }
            }
        }
        Ok(())
    }
}

/// The containers using image `id`.
pub fn users_of_image(root: &Path, id: &Digest) -> Result<Vec<ContainerState>> {
    let containers = container_store(root)?;
    Ok(containers
        .list()?
        .into_iter()
        .filter(|c| meta_of(c).is_some_and(|m| m.image_id == id.as_str()))
        .collect())
}

/// docker's `CreatedAt` format: `2006-01-02 15:04:05 +0000 UTC`.
fn docker_time(secs: u64) -> String {
    rfc3339(secs as i64, 0)
        .replacen('T', " ", 1)
        .replace('Z', " +0000 UTC")
}

/// Removes `lade run --rm` containers whose lade process died before it could remove them,
/// and what earlier removals left in the trash (`lade prune` does this before marking).
/// With `dry_run` only measures. Returns the bytes on disk freed (or that would be).
pub fn remove_dead_auto_remove(containers: &ContainerStore, dry_run: bool) -> Result<u64> {
    let mut bytes = 0;
    for c in containers.list()? {
        let dead = matches!(c.status, Status::Exited { code: None, .. });
        if dead && meta_of(&c).is_some_and(|m| m.auto_remove) {
            bytes += lade_cache::disk_usage(containers.get(&c.id)?.dir());
            if !dry_run {
                containers.remove(&c.id)?;
            }
        }
    }
    // The entries of the trash, not the directory itself (it stays).
    if let Ok(rd) = std::fs::read_dir(containers.trash_dir()) {
        bytes += rd
            .flatten()
            .map(|e| lade_cache::disk_usage(&e.path()))
            .sum::<u64>();
    }
    if !dry_run {
        containers.purge_trash()?;
    }
    Ok(bytes)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// docker's `ps` COMMAND: path and args, args with a space in single quotes.
fn command_text(argv: &[String]) -> String {
    argv.iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// docker's `Ellipsis`: at most `n` characters, the last one `…` when cut.
fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n - 1).collect();
    out.push('…');
    out
}

/// Go's `strconv.Quote` for the characters a command line holds.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn status_text(st: &Status, created: u64, now: u64) -> (String, &'static str) {
    match st {
        Status::Created => ("Created".into(), "created"),
        Status::Running { .. } => (
            format!("Up {}", human_duration(now.saturating_sub(created))),
            "running",
        ),
        Status::Exited {
            code: Some(c),
            finished,
        } => (
            format!(
                "Exited ({c}) {} ago",
                human_duration(now.saturating_sub(*finished))
            ),
            "exited",
        ),
        // Its lade process died without recording the exit (the sandbox died with it).
        Status::Exited { code: None, .. } => ("Dead".into(), "dead"),
    }
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones)
    #[arg(short, long)]
    all: bool,
    /// Only print container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate IDs and commands
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table (default) or json (one JSON object per line, like docker)
    #[arg(long, default_value = "table")]
    format: String,
}

pub fn ps(g: &Global, a: PsArgs) -> Result<ExitCode> {
    let containers = container_store(&g.root())?;
    let now = now_secs();
    let mut list = containers.list()?;
    list.reverse(); // newest first, as docker
    let list: Vec<ContainerState> = list
        .into_iter()
        .filter(|c| a.all || matches!(c.status, Status::Running { .. }))
        .collect();
    let id_of = |c: &ContainerState| {
        if a.no_trunc {
            c.id.clone()
        } else {
            c.id[..12].to_string()
        }
    };
    if a.quiet {
        for c in &list {
            outln!("{}", id_of(c))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cmd_of = |c: &ContainerState| {
        let t = command_text(&c.command);
        go_quote(&if a.no_trunc { t } else { ellipsis(&t, 20) })
    };
    match a.format.as_str() {
        "json" => {
            for c in &list {
                let (status, state) = status_text(&c.status, c.created, now);
                let v = json!({
                    "Command": cmd_of(c),
                    "CreatedAt": docker_time(c.created),
                    "ID": id_of(c),
                    "Image": c.image,
                    "Labels": "",
                    "LocalVolumes": "0",
                    "Mounts": "",
                    "Names": c.name.clone().unwrap_or_default(),
                    "Networks": "none",
                    "Ports": "",
                    "RunningFor": format!("{} ago", human_duration(now.saturating_sub(c.created))),
                    "State": state,
                    "Status": status,
                });
                outln!("{v}")?;
            }
        }
        "table" => {
            let mut t = vec![[
                "CONTAINER ID".to_string(),
                "IMAGE".into(),
                "COMMAND".into(),
                "CREATED".into(),
                "STATUS".into(),
                "NAMES".into(),
            ]];
            for c in &list {
                t.push([
                    id_of(c),
                    c.image.clone(),
                    cmd_of(c),
                    format!("{} ago", human_duration(now.saturating_sub(c.created))),
                    status_text(&c.status, c.created, now).0,
                    c.name.clone().unwrap_or_default(),
                ]);
            }
            super::images::print_table(&t)?;
        }
        other => bail!("unknown --format {other:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first
    #[arg(short, long)]
    force: bool,
    /// Containers (name, ID or unique ID prefix)
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub fn rm(g: &Global, a: RmArgs) -> Result<ExitCode> {
    let containers = container_store(&g.root())?;
    let mut failed = false;
    for key in &a.containers {
        let r = if a.force {
            containers.remove_force(key)
        } else {
            containers.remove(key)
        };
        match r {
            Ok(()) => outln!("{key}")?,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    // Also what earlier `run --rm`s left to delete.
    let _ = containers.purge_trash();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author of the new image
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK,
    /// LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable
    #[arg(short, long, value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    message: Option<String>,
    /// Container (name, ID or unique ID prefix)
    container: String,
    /// Name of the new image
    #[arg(value_name = "IMAGE[:TAG]")]
    image: Option<String>,
}

fn set_or_remove(cfg: &mut Map<String, Value>, key: &str, v: Value) {
    let empty = match &v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if empty {
        cfg.remove(key);
    } else {
        cfg.insert(key.into(), v);
    }
}

/// What `commit` adds to the container's image config.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    pub container_id: &'a str,
    pub layer: &'a Digest,
    pub changes: &'a [String],
    pub author: Option<&'a str>,
    pub message: Option<&'a str>,
    /// RFC 3339.
    pub created: &'a str,
}

/// The new image's config: the container's image config with the container's settings
/// (entrypoint, cmd, env, working dir, user, as docker's commit keeps them), the `--change`
/// instructions, the new layer and a history entry.
pub fn commit_config(base: &Value, meta: &RunMeta, commit: &Commit<'_>) -> Result<Value> {
    let Commit {
        container_id,
        layer: new_layer,
        changes,
        author,
        message,
        created,
    } = *commit;
    let mut out = base.clone();
    let obj = out
        .as_object_mut()
        .context("the container's image config is not a JSON object")?;
    let mut cfg = obj
        .get("config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let c = &meta.config;
    set_or_remove(&mut cfg, "Entrypoint", json!(c.entrypoint));
    set_or_remove(&mut cfg, "Cmd", json!(c.cmd));
    set_or_remove(&mut cfg, "Env", json!(c.env));
    set_or_remove(&mut cfg, "WorkingDir", json!(c.working_dir));
    set_or_remove(&mut cfg, "User", json!(c.user));
    super::images::apply_changes(&mut cfg, changes)?;
    obj.insert("config".into(), Value::Object(cfg));
    obj.insert("created".into(), json!(created));
    obj.insert("container".into(), json!(container_id));
    match author {
        Some(a) => {
            obj.insert("author".into(), json!(a));
        }
        None => {
            obj.remove("author");
        }
    }
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
        Some(ids) => ids.push(json!(new_layer)),
        None => rootfs["diff_ids"] = json!([new_layer]),
    }
    let mut h = Map::new();
    h.insert("created".into(), json!(created));
    h.insert(
        "created_by".into(),
        json!(c.cmd.clone().unwrap_or_default().join(" ")),
    );
    if let Some(a) = author {
        h.insert("author".into(), json!(a));
    }
    if let Some(m) = message {
        h.insert("comment".into(), json!(m));
    }
    let hist = obj.entry("history").or_insert_with(|| json!([]));
    match hist.as_array_mut() {
        Some(v) => v.push(Value::Object(h)),
        None => *hist = json!([h]),
    }
    Ok(out)
}

pub fn commit(g: &Global, a: CommitArgs) -> Result<ExitCode> {
    let name = a.image.as_deref().map(Reference::parse).transpose()?;
    if name.as_ref().is_some_and(|n| n.digest().is_some()) {
        bail!("cannot commit to a digest reference; use NAME[:TAG]");
    }
    let root = g.root();
    let containers = container_store(&root)?;
    let mut c = containers.get(&a.container)?;
    if matches!(c.state().status, Status::Running { .. }) {
        bail!(
            "container {} is running: lade commits stopped containers only (it cannot pause one); \
             wait for it to exit or `lade rm -f` it",
            &c.id()[..12]
        );
    }
    let mut meta: RunMeta = serde_json::from_value(c.state().meta.clone())
        .with_context(|| format!("container {} was not made by lade run", &c.id()[..12]))?;
    let store = Store::open(&root)
        .with_context(|| format!("cannot open the store at {}", root.display()))?;
    let image_id = Digest::parse(&meta.image_id)?;
    let base = store
        .image_by_id(&image_id)
        .with_context(|| format!("the image of container {}", &c.id()[..12]))?;
    let layer = match &meta.committed_layer {
        // Committed before: its upperdir is that layer's snapshot now.
        Some(d) => Digest::parse(d)?,
        None => {
            let upper = c.upperdir();
            if !upper.exists() {
                // Never started: no changes.
                std::fs::create_dir(&upper)
                    .with_context(|| format!("create {}", upper.display()))?;
            }
            let rec = store
                .commit_upperdir(&upper, &TarOptions::default())
                .with_context(|| format!("cannot turn {} into a layer", upper.display()))?;
            meta.committed_layer = Some(rec.diff_id.to_string());
            c.set_meta(serde_json::to_value(&meta)?)?;
            rec.diff_id
        }
    };
    let base_raw: Value = serde_json::from_slice(&base.config_bytes)?;
    let created = now_rfc3339();
    let config = commit_config(
        &base_raw,
        &meta,
        &Commit {
            container_id: c.id(),
            layer: &layer,
            changes: &a.change,
            author: a.author.as_deref(),
            message: a.message.as_deref(),
            created: &created,
        },
    )?;
    let img = store.put_config(&serde_json::to_vec(&config)?)?;
    match &name {
        Some(n) => {
            store.tag_at(n, &img.id, &now_rfc3339())?;
        }
        None => store.keep_unnamed(&img.id)?,
    }
    outln!("{}", img.id)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::run::ContainerConfig;

    #[test]
    fn ps_command_column_like_docker() {
        let argv: Vec<String> = ["sh", "-c", "echo hi > /x; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let t = command_text(&argv);
        assert_eq!(t, "sh -c 'echo hi > /x; exit 3'");
        assert_eq!(go_quote(&ellipsis(&t, 20)), "\"sh -c 'echo hi > /x…\"");
        assert_eq!(go_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(ellipsis("short", 20), "short");
    }

    #[test]
    fn statuses() {
        assert_eq!(status_text(&Status::Created, 0, 10).0, "Created");
        assert_eq!(
            status_text(
                &Status::Exited {
                    code: Some(3),
                    finished: 100
                },
                0,
                100
            )
            .0,
            "Exited (3) Less than a second ago"
        );
        assert_eq!(
            status_text(
                &Status::Running {
                    pid: 1,
                    monitor_pid: 1
                },
                0,
                120
            )
            .0,
            "Up 2 minutes"
        );
    }

    #[test]
    fn commit_keeps_the_containers_settings() {
        let base = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"], "Labels": {"a": "b"}, "WorkingDir": "/old"},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
            "history": [{"created_by": "import"}],
        });
        let meta = RunMeta {
            image_id: "sha256:x".into(),
            layers: vec![],
            config: ContainerConfig {
                cmd: Some(vec!["sh".into(), "-c".into(), "echo hi".into()]),
                env: vec!["A=1".into()],
                ..Default::default()
            },
            committed_layer: None,
            auto_remove: false,
        };
        let layer = Digest::of(b"layer");
        let v = commit_config(
            &base,
            &meta,
            &Commit {
                container_id: "cid",
                layer: &layer,
                changes: &["ENV B=2".into()],
                author: Some("me"),
                message: Some("msg"),
                created: "2026-01-01T00:00:00Z",
            },
        )
        .unwrap();
        assert_eq!(v["config"]["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(v["config"]["Env"], json!(["A=1", "B=2"]));
        assert_eq!(v["config"]["Labels"], json!({"a": "b"}));
        assert!(v["config"].get("WorkingDir").is_none());
        assert_eq!(v["rootfs"]["diff_ids"], json!(["sha256:aa", layer]));
        assert_eq!(v["history"][1]["created_by"], json!("sh -c echo hi"));
        assert_eq!(v["history"][1]["comment"], json!("msg"));
        assert_eq!(v["author"], json!("me"));
    }
}
