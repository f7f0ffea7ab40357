//! The lowering pass (BuildKit's `dockerfile2llb.toDispatchState` + `dispatch`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use lade_cache::Store;
use lade_parser::instruction::{
    Add, Arg, Cmd, CommandLine, Copy, Entrypoint, Env, Expose, Label, NetworkMode, Run, Source,
    Volume,
};
use lade_parser::shell::Lexer;
use lade_parser::{Command, Dockerfile, Instruction, Span, Word};

use super::change::{
    check_signal, command_argv, expand_port, healthcheck, set_entrypoint, workdir,
};
use super::image::{
    fill_created, go_duration, go_list, go_quote_list, go_quote_rune, Config, History, HistoryItem,
    ImageFile, RootFs, HISTORY_COMMENT,
};
use super::ops::{CopyVertexOp, MergeOp, SourceOp, SourceSpec};
use super::run::{RunMountSpec, RunNetwork, RunVertexOp};
use super::{LowerError, StepValue};
use crate::context::Context;
use crate::digest::DigestBuilder;
use crate::graph::{Graph, Vertex, VertexId};
use crate::schedule::{Op, Solution};

/// The default `PATH` BuildKit puts in a Linux image that has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build arguments BuildKit predefines: proxies reach RUN without being declared, and enter
/// cache keys and history only when the Dockerfile declares them with ARG.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What `lade build` asks for beyond the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--build-arg K=V` (bare `K` already resolved from the environment by the caller).
    pub build_args: Vec<(String, String)>,
    /// `--target`: the stage to build (default: the last one).
    pub target: Option<String>,
    /// `--label K=V`, added to the final image.
    pub labels: Vec<(String, String)>,
    /// What `RUN --network=default` means (`lade build --network`): host unless told otherwise.
    pub network: RunNetwork,
    /// `--platform os/arch[/variant]`; default the host's.
    pub platform: Option<String>,
    /// `--secret id=ID,src=PATH|env=VAR`: secret id -> its content (never in keys or layers).
    pub secrets: Vec<(String, Arc<Vec<u8>>)>,
}

/// Finds base images (FROM, `COPY --from=<image>`).
pub trait ImageResolver: Send + Sync {
    /// The image named `reference` for `platform` (`os/arch[/variant]`), or a message saying
    /// why not and what to do.
    fn resolve(&self, reference: &str, platform: &str) -> Result<lade_cache::Image, String>;
}

/// What the CLI shows about a vertex.
#[derive(Debug, Clone)]
pub struct StepInfo {
    /// `[stage 2/5] RUN make`, as BuildKit names steps.
    pub name: String,
    /// The instruction as written (`RUN make`).
    pub instruction: String,
    /// 1-based Dockerfile line of the instruction.
    pub line: usize,
    /// Not shown in progress (`FROM scratch` is no real step).
    pub hidden: bool,
}

/// The lowered build.
pub struct Lowered {
    pub graph: Graph<StepValue>,
    /// The last vertex of the target stage.
    pub target: VertexId,
    /// The target stage's image config (history and rootfs are filled by [`Lowered::finish`]).
    pub image: ImageFile,
    pub history: Vec<HistoryItem>,
    pub steps: HashMap<VertexId, StepInfo>,
    /// Warnings for the user (unused build args, ...).
    pub warnings: Vec<String>,
}

impl Lowered {
    /// The final config JSON once `solution` (which includes [`Lowered::target`]) is known.
    pub fn finish(&self, solution: &Solution<StepValue>) -> Result<Vec<u8>, String> {
        let top = solution
            .get(self.target)
            .ok_or("the target stage was not built")?;
        let mut img = self.image.clone();
        img.rootfs = RootFs {
            kind: "layers".into(),
            diff_ids: top.value.layers.iter().map(|d| d.to_string()).collect(),
        };
        let mut history = Vec::new();
        for h in &self.history {
            let mut e = h.entry.clone();
            if let Some(step) = h.step {
                e.created = solution.get(step).and_then(|s| s.value.created.clone());
            }
            history.push(e);
        }
        fill_created(&mut history);
        img.created = history
            .iter()
            .rev()
            .find_map(|h| h.created.clone())
            .or_else(|| Some(super::image::now_rfc3339()));
        img.history = history;
        serde_json::to_vec(&img).map_err(|e| format!("cannot serialise the image config: {e}"))
    }
}

/// Host platform as BuildKit formats it.
fn host_platform() -> (String, String, String) {
    let arch = lade_cache::archive::host_arch().to_string();
    let variant = if arch == "arm64" { "v8" } else { "" };
    ("linux".into(), arch, variant.to_string())
}

fn parse_platform(p: &str) -> Result<(String, String, String), String> {
    let parts: Vec<&str> = p.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "invalid platform {p:?}: expected os/arch[/variant], e.g. linux/amd64"
        ));
    }
    match parts.as_slice() {
        [os, arch] => Ok((os.to_string(), norm_arch(arch), String::new())),
        [os, arch, v] => Ok((os.to_string(), norm_arch(arch), v.to_string())),
        [arch] if !arch.is_empty() => Ok(("linux".into(), norm_arch(arch), String::new())),
        _ if parts.iter().any(|p| p.is_empty()) => Err(format!(
            "invalid platform {p:?}: expected os/arch[/variant], e.g. linux/amd64"
        )),
        _ => Err(format!(
            "invalid platform {p:?}: expected os/arch[/variant], e.g. linux/amd64"
        )),
    }
}

fn norm_arch(a: &str) -> String {
    match a {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.to_string(),
    }
}

fn format_platform(p: &(String, String, String)) -> String {
    if p.2.is_empty() {
        format!("{}/{}", p.0, p.1)
    } else {
        format!("{}/{}/{}", p.0, p.1, p.2)
    }
}

/// Pass-1 facts about a stage.
struct StageMeta {
    name: Option<String>,
    /// The base name after expansion with the global args.
    base: String,
    /// FROM an earlier stage.
    base_stage: Option<usize>,
    /// Stages this one copies from.
    deps: Vec<usize>,
    platform: Option<String>,
    span: Span,
}

/// A stage being lowered (BuildKit's `dispatchState`).
#[derive(Clone)]
struct State {
    vertex: VertexId,
    config: Config,
    os: String,
    arch: String,
    variant: Option<String>,
    author: Option<String>,
    history: Vec<HistoryItem>,
    /// The state's env: image env plus ARG values, in order (BuildKit's `AddEnv`).
    env: Vec<(String, String)>,
    /// ARGs declared in this stage with their values.
    build_args: Vec<(String, Option<String>)>,
    cmd_set: bool,
    display: String,
    cmd_index: usize,
    cmd_total: usize,
    /// ONBUILD expressions of the base stage (run first in a stage built FROM this one).
    onbuild_exprs: Vec<String>,
    platform: String,
}

impl State {
    fn env_set(&mut self, k: &str, v: &str) {
        match self.env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.to_string(),
            None => self.env.push((k.to_string(), v.to_string())),
        }
    }

    fn prefix(&mut self) -> String {
        if self.cmd_total == 0 {
            return String::new();
        }
        self.cmd_index += 1;
        let width = self.cmd_total.to_string().len();
        let mut out = String::from("[");
        if !self.display.is_empty() {
            out.push_str(&self.display);
            out.push(' ');
        }
        out.push_str(&format!("{:>width$}/{}] ", self.cmd_index, self.cmd_total));
        out
    }

    fn commit(&mut self, created_by: String, step: Option<VertexId>) {
        self.history.push(HistoryItem {
            entry: History {
                created: None,
                created_by: Some(created_by),
                author: None,
                comment: Some(HISTORY_COMMENT.into()),
                empty_layer: step.is_none(),
            },
            step,
        });
    }
}

struct Lowerer<'a> {
    df: &'a Dockerfile,
    opts: &'a BuildOptions,
    store: Arc<Store>,
    context: Option<Arc<Context>>,
    images: &'a dyn ImageResolver,
    lexer: Lexer,
    graph: Graph<StepValue>,
    global: Vec<(String, String)>,
    metas: Vec<StageMeta>,
    states: Vec<Option<State>>,
    steps: HashMap<VertexId, StepInfo>,
    consumed: HashSet<String>,
    proxy_env: Vec<(String, String)>,
    target_platform: (String, String, String),
    explicit_platform: bool,
    /// FROM sources already made (image ID -> vertex).
    sources: HashMap<String, VertexId>,
    /// A suffix for the next RUN's display name (BuildKit's heredoc summary).
    pending_suffix: Option<String>,
    /// The stage being lowered.
    current_stage: usize,
}

/// Lowers `df` for `opts`. `context` is the build context (None for a Dockerfile from stdin);
/// base images come from `images`. Errors carry the span of the instruction concerned.
pub fn lower(
    df: &Dockerfile,
    opts: &BuildOptions,
    store: Arc<Store>,
    context: Option<Arc<Context>>,
    images: &dyn ImageResolver,
) -> Result<Lowered, LowerError> {
    if df.stages.is_empty() {
        return Err(LowerError::new(
            "dockerfile contains no stages to build",
            None,
        ));
    }
    let (target_platform, explicit_platform) = match &opts.platform {
        Some(p) => (
            parse_platform(p).map_err(|e| LowerError::new(e, None))?,
            true,
        ),
        None => (host_platform(), false),
    };
    let mut l = Lowerer {
        df,
        opts,
        store,
        context,
        images,
        lexer: Lexer::new(df.escape),
        graph: Graph::new(),
        global: Vec::new(),
        metas: Vec::new(),
        states: Vec::new(),
        steps: HashMap::new(),
        consumed: HashSet::new(),
        proxy_env: Vec::new(),
        target_platform,
        explicit_platform,
        sources: HashMap::new(),
        pending_suffix: None,
        current_stage: 0,
    };
    l.global_args()?;
    l.pass1()?;
    let target = l.target_index()?;
    l.check_cycles()?;
    let needed = l.reachable(target);
    l.states = (0..df.stages.len()).map(|_| None).collect();
    // File order, as BuildKit dispatches: a stage can use only stages defined before it (a
    // later one is an error naming both, moby/buildkit#4568); `FROM <name>` only sees earlier
    // names (a later stage's name is an image reference). Unneeded stages are skipped, so a
    // forward reference in one of them is no error, as in BuildKit.
    for i in 0..df.stages.len() {
        if needed.contains(&i) {
            l.lower_stage(i)?;
        }
    }
    let mut warnings = Vec::new();
    let unused: Vec<String> = l
        .opts
        .build_args
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !l.consumed.contains(k) && !PROXY_ARGS.contains(&k.as_str()))
        .filter(|k| !is_platform_arg(k))
        .collect();
    if !unused.is_empty() {
        warnings.push(format!(
            "one or more build args were not consumed: [{}]",
            unused.join(" ")
        ));
    }
    let st = l.states[target]
        .take()
        .ok_or_else(|| LowerError::new("target stage was not lowered", None))?;
    let mut config = st.config.clone();
    for (k, v) in &l.opts.labels {
        config.labels.insert(k.clone(), v.clone());
    }
    let (os, arch, variant) = if l.explicit_platform {
        let p = &l.target_platform;
        (
            p.0.clone(),
            p.1.clone(),
            Some(p.2.clone()).filter(|v| !v.is_empty()),
        )
    } else {
        (st.os.clone(), st.arch.clone(), st.variant.clone())
    };
    let image = ImageFile {
        architecture: arch,
        variant,
        config,
        created: None,
        author: st.author.clone(),
        history: Vec::new(),
        os,
        rootfs: RootFs::default(),
    };
    Ok(Lowered {
        graph: l.graph,
        target: st.vertex,
        image,
        history: st.history,
        steps: l.steps,
        warnings,
    })
}

/// The proxy environment of RUN from the build args (BuildKit's `proxyEnvFromBuildArgs` and
/// the executor's `proxyEnvList`): a build arg named like a proxy variable in either case sets
/// that proxy, which RUN then sees in both spellings (`HTTP_PROXY` and `http_proxy`); empty
/// values set nothing.
fn proxy_env(build_args: &[(String, String)]) -> Vec<(String, String)> {
    const KINDS: [&str; 5] = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    ];
    let mut values: [Option<&str>; 5] = [None; 5];
    for (k, v) in build_args {
        if let Some(i) = KINDS.iter().position(|p| p.eq_ignore_ascii_case(k)) {
            values[i] = Some(v.as_str());
        }
    }
    let mut out = Vec::new();
    for (kind, v) in KINDS.iter().zip(values) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push((kind.to_string(), v.to_string()));
            out.push((kind.to_lowercase(), v.to_string()));
        }
    }
    out
}

fn is_platform_arg(k: &str) -> bool {
    matches!(
        k,
        "BUILDPLATFORM"
            | "BUILDOS"
            | "BUILDARCH"
            | "BUILDVARIANT"
            | "TARGETPLATFORM"
            | "TARGETOS"
            | "TARGETARCH"
            | "TARGETVARIANT"
    )
}

fn env_set(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    }
}

fn err_at(cmd: &Command, msg: impl Into<String>) -> LowerError {
    LowerError::new(msg, Some(cmd.span))
}

/// An ADD source BuildKit downloads (`isHTTPSource`, git URLs aside).
fn is_url(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

/// An ADD source naming a git repository (BuildKit clones those; lade refuses them).
fn is_git(src: &str) -> bool {
    src.starts_with("git@") || src.ends_with(".git")
}

fn instruction_text(cmd: &Command) -> String {
    let t = cmd.original.trim();
    // heredoc bodies are not part of the name
    t.lines().next().unwrap_or(t).trim().to_string()
}

impl<'a> Lowerer<'a> {
    fn build_arg(&self, k: &str) -> Option<&str> {
        self.opts
            .build_args
            .iter()
            .rev()
            .find(|(bk, _)| bk == k)
            .map(|(_, v)| v.as_str())
    }

    /// Platform args, then the meta ARGs in order (BuildKit's `buildMetaArgs`).
    fn global_args(&mut self) -> Result<(), LowerError> {
        let (os, arch, variant) = self.target_platform.clone();
        let (bos, barch, bvariant) = host_platform();
        let platform_args = [
            (
                "BUILDPLATFORM",
                format_platform(&(bos.clone(), barch.clone(), bvariant.clone())),
            ),
            ("BUILDOS", bos),
            ("BUILDARCH", barch),
            ("BUILDVARIANT", bvariant),
            ("TARGETPLATFORM", format_platform(&self.target_platform)),
            ("TARGETOS", os),
            ("TARGETARCH", arch),
            ("TARGETVARIANT", variant),
        ];
        for (k, v) in platform_args {
            let v = self.build_arg(k).map(String::from).unwrap_or(v);
            self.global.push((k.to_string(), v));
        }
        self.proxy_env = proxy_env(&self.opts.build_args);
        for cmd in &self.df.meta_args {
            let Instruction::Arg(Arg { args }) = &cmd.instruction else {
                continue;
            };
            for a in args {
                let name = a.name.value.clone();
                self.consumed.insert(name.clone());
                let value = match self.build_arg(&name) {
                    Some(v) => Some(v.to_string()),
                    None => match &a.default {
                        Some(d) => Some(
                            self.lexer
                                .process_word(&d.value, &self.global)
                                .map_err(|e| err_at(cmd, e.to_string()))?,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    env_set(&mut self.global, &name, &v);
                }
            }
        }
        Ok(())
    }

    fn stage_by_name(&self, name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        self.df
            .stages
            .iter()
            .position(|s| s.name() == Some(lower.as_str()))
    }

    fn pass1(&mut self) -> Result<(), LowerError> {
        let total = self.df.stages.len();
        for (i, st) in self.df.stages.iter().enumerate() {
            let cmd = &st.from_command;
            let base = self
                .lexer
                .process_word(&st.from.image.value, &self.global)
                .map_err(|e| err_at(cmd, e.to_string()))?;
            if base.is_empty() {
                return Err(err_at(
                    cmd,
                    format!("base name ({}) should not be blank", st.from.image.value),
                ));
            }
            let platform = match &st.from.platform {
                Some(p) => {
                    let v = self
                        .lexer
                        .process_word(&p.value, &self.global)
                        .map_err(|e| err_at(cmd, e.to_string()))?;
                    if v.is_empty() {
                        return Err(err_at(
                            cmd,
                            format!("empty platform value from expression {}", p.value),
                        ));
                    }
                    parse_platform(&v).map_err(|e| err_at(cmd, e))?;
                    Some(v)
                }
                None => None,
            };
            // FROM names only stages defined before (BuildKit registers names in order)
            let base_stage = self.stage_by_name(&base).filter(|&b| b < i);
            let mut deps = Vec::new();
            for c in &st.commands {
                if let Instruction::Run(r) = &c.instruction {
                    for m in &r.mounts {
                        if let Some(from) = m.mount.as_ref().and_then(|m| m.from.as_ref()) {
                            if let Ok(idx) = from.parse::<usize>() {
                                if idx < total {
                                    deps.push(idx);
                                }
                            } else if let Some(s) = self.stage_by_name(from) {
                                deps.push(s);
                            }
                        }
                    }
                }
                let from = match &c.instruction {
                    Instruction::Copy(Copy { from: Some(f), .. }) => f,
                    _ => continue,
                };
                let v = &from.value;
                if v.contains('$') {
                    let expanded = self
                        .lexer
                        .process_word(v, &lade_parser::shell::EmptyEnv)
                        .unwrap_or_default();
                    if &expanded != v {
                        return Err(err_at(c, "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"));
                    }
                }
                if let Ok(idx) = v.parse::<i64>() {
                    if idx < 0 || idx as usize >= total {
                        return Err(err_at(c, format!("invalid stage index {idx}")));
                    }
                    deps.push(idx as usize);
                } else if let Some(s) = self.stage_by_name(v) {
                    deps.push(s);
                }
            }
            self.metas.push(StageMeta {
                name: st.name().map(String::from),
                base,
                base_stage,
                deps,
                platform,
                span: cmd.span,
            });
        }
        Ok(())
    }

    fn stage_label(&self, i: usize) -> String {
        self.metas[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{i}"))
    }

    fn target_index(&self) -> Result<usize, LowerError> {
        match &self.opts.target {
            None => Ok(self.df.stages.len() - 1),
            Some(t) => self.stage_by_name(t).ok_or_else(|| {
                let names: Vec<String> = self.metas.iter().filter_map(|m| m.name.clone()).collect();
                LowerError::new(
                    format!(
                        "target stage {t:?} could not be found (stages: {})",
                        if names.is_empty() {
                            "none named".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                    None,
                )
            }),
        }
    }

    fn edges(&self, i: usize) -> Vec<usize> {
        let m = &self.metas[i];
        let mut v: Vec<usize> = m.base_stage.into_iter().collect();
        v.extend(m.deps.iter().copied());
        v
    }

    /// BuildKit's `validateCircularDependency`, over every stage.
    fn check_cycles(&self) -> Result<(), LowerError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut marks = vec![Mark::New; self.metas.len()];
        fn visit(
            l: &Lowerer<'_>,
            i: usize,
            marks: &mut Vec<Mark>,
            path: &mut Vec<usize>,
        ) -> Result<(), LowerError> {
            match marks[i] {
                Mark::Done => return Ok(()),
                Mark::Active => {
                    let start = path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut names: Vec<String> =
                        path[start..].iter().map(|&p| l.stage_label(p)).collect();
                    names.push(l.stage_label(i));
                    return Err(LowerError::new(
                        format!(
                            "circular dependency detected on stage: {} ({})",
                            l.stage_label(i),
                            names.join(" -> ")
                        ),
                        Some(l.metas[i].span),
                    ));
                }
                Mark::New => {}
            }
            marks[i] = Mark::Active;
            path.push(i);
            for d in l.edges(i) {
                visit(l, d, marks, path)?;
            }
            path.pop();
            marks[i] = Mark::Done;
            Ok(())
        }
        for i in 0..self.metas.len() {
            visit(self, i, &mut marks, &mut Vec::new())?;
        }
        Ok(())
    }

    fn reachable(&self, target: usize) -> HashSet<usize> {
        let mut seen = HashSet::new();
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(self.edges(i));
            }
        }
        seen
    }

    fn add_vertex(
        &mut self,
        info: StepInfo,
        definition: crate::Digest,
        op: Arc<dyn Op<StepValue>>,
        inputs: &[VertexId],
        never_cache: bool,
    ) -> Result<VertexId, LowerError> {
        let v = Vertex::new(info.name.clone(), definition, op).never_cache(never_cache);
        let id = self
            .graph
            .add(v, inputs)
            .map_err(|e| LowerError::new(e.to_string(), None))?;
        self.steps.insert(id, info);
        Ok(id)
    }

    /// A vertex producing an image's (or scratch's) layers. `name` is what the build log shows
    /// (`FROM <expanded base>`, as BuildKit); `instruction` the Dockerfile text that asked for
    /// it (`FROM ${BASE} AS build`), or the same synthetic `FROM <image>` for the image of a
    /// `COPY --from`/`--mount from=`. One image is one vertex: the first instruction names it.
    fn source_vertex(
        &mut self,
        id: Option<&lade_cache::Image>,
        name: String,
        instruction: Option<String>,
        line: usize,
    ) -> Result<VertexId, LowerError> {
        let key = id.map_or_else(|| "scratch".to_string(), |i| i.id.to_string());
        if let Some(v) = self.sources.get(&key) {
            return Ok(*v);
        }
        let mut b = DigestBuilder::new("lade dockerfile source v1");
        b.str(&key);
        let layers = id.map(|i| i.layers.clone()).unwrap_or_default();
        let instruction = instruction.unwrap_or_else(|| name.clone());
        let v = self.add_vertex(
            StepInfo {
                name,
                instruction,
                line,
                hidden: id.is_none(),
            },
            b.finish(),
            Arc::new(SourceOp { layers }),
            &[],
            false,
        )?;
        self.sources.insert(key, v);
        Ok(v)
    }

    fn resolve_image(
        &self,
        name: &str,
        platform: &str,
        cmd: &Command,
    ) -> Result<lade_cache::Image, LowerError> {
        self.images
            .resolve(name, platform)
            .map_err(|e| err_at(cmd, e))
    }

    /// The base image's config as the build reads it; a config lade cannot read fails the
    /// build (a silent default would drop the base's env, user, history...).
    fn image_file(
        img: &lade_cache::Image,
        name: &str,
        cmd: &Command,
    ) -> Result<ImageFile, LowerError> {
        serde_json::from_slice(&img.config_bytes).map_err(|e| {
            err_at(
                cmd,
                format!("cannot read the image config of {name} ({}): {e}", img.id),
            )
        })
    }

    fn lower_stage(&mut self, i: usize) -> Result<(), LowerError> {
        self.current_stage = i;
        let df = self.df;
        let stage = &df.stages[i];
        let from_cmd = &stage.from_command;
        let base = self.metas[i].base.clone();
        let display = if df.stages.len() == 1 {
            String::new()
        } else {
            self.stage_label(i)
        };
        let mut triggers: Vec<String> = Vec::new();
        let mut counts_from = false;
        let mut st = if let Some(b) = self.metas[i].base_stage {
            let Some(parent) = self.states[b].clone() else {
                return Err(err_at(from_cmd, format!("stage {base:?} was not built")));
            };
            let mut st = parent;
            triggers = std::mem::take(&mut st.onbuild_exprs);
            st.config.on_build = None;
            st.build_args.clear();
            st.cmd_set = false;
            st
        } else {
            let platform = self.metas[i]
                .platform
                .clone()
                .unwrap_or_else(|| format_platform(&self.target_platform));
            let (img, file) = if base.eq_ignore_ascii_case("scratch") {
                (None, None)
            } else {
                let img = self.resolve_image(&base, &platform, from_cmd)?;
                let file = Self::image_file(&img, &base, from_cmd)?;
                (Some(img), Some(file))
            };
            counts_from = img.is_some();
            let name = format!("FROM {base}");
            let vertex = self.source_vertex(
                img.as_ref(),
                name,
                Some(instruction_text(from_cmd)),
                from_cmd.start_line,
            )?;
            let (hos, harch, hvar) = self.target_platform.clone();
            let mut st = State {
                vertex,
                config: Config::default(),
                os: hos,
                arch: harch,
                variant: Some(hvar).filter(|v| !v.is_empty()),
                author: None,
                history: Vec::new(),
                env: Vec::new(),
                build_args: Vec::new(),
                cmd_set: false,
                display: String::new(),
                cmd_index: 0,
                cmd_total: 0,
                onbuild_exprs: Vec::new(),
                platform,
            };
            if let Some(f) = file {
                triggers = f.config.on_build.clone().unwrap_or_default();
                st.config = f.config;
                st.config.on_build = None;
                if !f.os.is_empty() {
                    st.os = f.os;
                }
                if !f.architecture.is_empty() {
                    st.arch = f.architecture;
                }
                st.variant = f.variant;
                st.author = f.author;
                st.history = f
                    .history
                    .into_iter()
                    .map(|entry| HistoryItem { entry, step: None })
                    .collect();
            }
            if st.config.env_get("PATH").is_none() {
                st.config.env.push(format!("PATH={DEFAULT_PATH}"));
            }
            if img.is_none() {
                // BuildKit's emptyImage(): `FROM scratch` works in `/`
                st.config.working_dir = "/".into();
            }
            st.env = super::change::env_pairs(&st.config.env);
            st
        };
        // ONBUILD triggers run first, as if written right after FROM
        let mut commands: Vec<(Command, bool)> = Vec::new();
        for t in &triggers {
            let p = lade_parser::parse(&format!("FROM scratch\n{t}\n"));
            if let Some(e) = p.errors.first() {
                return Err(err_at(
                    from_cmd,
                    format!(
                        "invalid ONBUILD trigger {t:?} of the base image: {}",
                        e.message
                    ),
                ));
            }
            let Some(c) = p
                .value
                .stages
                .first()
                .and_then(|s| s.commands.first())
                .cloned()
            else {
                return Err(err_at(
                    from_cmd,
                    format!("onbuild trigger should be a single expression: {t:?}"),
                ));
            };
            let mut c = c;
            c.span = from_cmd.span;
            c.start_line = from_cmd.start_line;
            c.end_line = from_cmd.end_line;
            commands.push((c, true));
        }
        commands.extend(stage.commands.iter().cloned().map(|c| (c, false)));
        st.display = display;
        st.cmd_index = 0;
        st.cmd_total = usize::from(counts_from)
            + commands
                .iter()
                .filter(|(c, _)| {
                    matches!(
                        c.instruction,
                        Instruction::Copy(_)
                            | Instruction::Add(_)
                            | Instruction::Run(_)
                            | Instruction::Workdir(_)
                    )
                })
                .count();
        if counts_from {
            // the FROM vertex takes the first number: rename it now that the total is known
            let prefix = st.prefix();
            if let Some(info) = self.steps.get_mut(&st.vertex) {
                if !info.name.starts_with('[') {
                    info.name = format!("{prefix}{}", info.name);
                    if let Some(v) = self.graph.g.node_weight_mut(st.vertex.0) {
                        v.vertex.name = info.name.clone().into();
                    }
                }
            }
        }
        for (cmd, onbuild) in &commands {
            self.dispatch(i, &mut st, cmd, *onbuild)?;
        }
        self.states[i] = Some(st);
        Ok(())
    }

    fn expand(&self, st: &State, cmd: &Command, word: &str) -> Result<String, LowerError> {
        self.lexer
            .process_word(word, &st.env)
            .map_err(|e| err_at(cmd, e.to_string()))
    }

    fn step_info(&self, st: &mut State, cmd: &Command, onbuild: bool) -> StepInfo {
        let prefix = st.prefix();
        let text = instruction_text(cmd);
        StepInfo {
            name: format!("{prefix}{}{text}", if onbuild { "ONBUILD " } else { "" }),
            instruction: text,
            line: cmd.start_line,
            hidden: false,
        }
    }

    fn dispatch(
        &mut self,
        stage: usize,
        st: &mut State,
        cmd: &Command,
        onbuild: bool,
    ) -> Result<(), LowerError> {
        match &cmd.instruction {
            Instruction::From(_) => Ok(()),
            Instruction::Env(Env { pairs }) => {
                let mut expanded = Vec::new();
                for p in pairs {
                    let k = self.expand(st, cmd, &p.key.value)?;
                    let v = self.expand(st, cmd, &p.value.value)?;
                    expanded.push((k, v));
                }
                let mut msg = String::from("ENV");
                for (k, v) in &expanded {
                    msg.push_str(&format!(" {k}={v}"));
                    st.env_set(k, v);
                    st.config.env_set(k, v);
                }
                st.commit(msg, None);
                Ok(())
            }
            Instruction::Label(Label { pairs }) => {
                let mut msg = String::from("LABEL");
                for p in pairs {
                    let k = self.expand(st, cmd, &p.key.value)?;
                    let v = self.expand(st, cmd, &p.value.value)?;
                    msg.push_str(&format!(" {k}={v}"));
                    st.config.labels.insert(k, v);
                }
                st.commit(msg, None);
                Ok(())
            }
            Instruction::Arg(Arg { args }) => {
                // every default is expanded before any is applied (BuildKit expands the whole
                // instruction with the env before it): `ARG A=1 B=$A` does not see this A
                let mut defaults = Vec::new();
                for a in args {
                    defaults.push(match &a.default {
                        Some(d) => Some(self.expand(st, cmd, &d.value)?),
                        None => None,
                    });
                }
                let mut parts = Vec::new();
                for (a, default) in args.iter().zip(defaults) {
                    let name = a.name.value.clone();
                    self.consumed.insert(name.clone());
                    // history shows the instruction (default expanded), not the value in
                    // effect (BuildKit's dispatchArg); values show in later RUN entries
                    parts.push(match &default {
                        Some(d) => format!("{name}={d}"),
                        None => name.clone(),
                    });
                    // a given build arg, else the default, else the global (meta) ARG
                    let value = self
                        .build_arg(&name)
                        .map(String::from)
                        .or(default)
                        .or_else(|| {
                            self.global
                                .iter()
                                .find(|(k, _)| *k == name)
                                .map(|(_, v)| v.clone())
                        });
                    if let Some(v) = &value {
                        st.env_set(&name, v);
                    }
                    st.build_args.push((name, value));
                }
                st.commit(format!("ARG {}", parts.join(" ")), None);
                Ok(())
            }
            Instruction::User(u) => {
                let user = self.expand(st, cmd, &u.user.value)?;
                st.config.user = user.clone();
                st.commit(format!("USER {user}"), None);
                Ok(())
            }
            Instruction::Workdir(w) => {
                let path = self.expand(st, cmd, &w.path.value)?;
                if path.is_empty() {
                    return Err(err_at(
                        cmd,
                        "cannot normalize nothing: WORKDIR needs a path",
                    ));
                }
                // BuildKit's dispatchWorkdir: an absolute path is kept as written (config,
                // history and RUN's cwd: `/a/b/../c` makes the RUN sandbox create `/a/b`, as
                // runc does), a relative one is joined to the current dir (cleaned); the
                // mkdir is of the cleaned path
                let wd = workdir(&st.config, &path);
                st.config.working_dir = wd.clone();
                if wd == "/" {
                    st.commit(format!("WORKDIR {wd}"), None);
                    return Ok(());
                }
                let dir = lade_executor::rootfs::clean(&wd);
                let info = self.step_info(st, cmd, onbuild);
                let chown = Some(st.config.user.clone()).filter(|u| !u.is_empty());
                let mut b = DigestBuilder::new("lade dockerfile mkdir v1");
                b.str(&dir)
                    .str(chown.as_deref().unwrap_or(""))
                    .str(&st.platform);
                let op = CopyVertexOp {
                    store: self.store.clone(),
                    context: None,
                    sources: Vec::new(),
                    dest: dir,
                    chown,
                    chmod: None,
                    unpack: false,
                    mkdir_only: true,
                    exclude: Vec::new(),
                    parents: false,
                    downloads: Default::default(),
                };
                let v = self.add_vertex(info, b.finish(), Arc::new(op), &[st.vertex], false)?;
                st.vertex = v;
                st.commit(format!("WORKDIR {wd}"), Some(v));
                Ok(())
            }
            Instruction::Expose(Expose { ports }) => {
                let mut list = Vec::new();
                for p in ports {
                    let words = self
                        .lexer
                        .process_words(&p.value, &st.env)
                        .map_err(|e| err_at(cmd, e.to_string()))?;
                    for w in words {
                        for spec in expand_port(&w).map_err(|e| err_at(cmd, e))? {
                            st.config
                                .exposed_ports
                                .insert(spec.clone(), serde_json::json!({}));
                            list.push(spec);
                        }
                    }
                }
                let mut sorted: Vec<String> = list.clone();
                sorted.sort();
                sorted.dedup();
                let map: Vec<String> = sorted.iter().map(|p| format!("{p}:{{}}")).collect();
                st.commit(format!("EXPOSE map[{}]", map.join(" ")), None);
                Ok(())
            }
            Instruction::Volume(Volume { paths }) => {
                let mut vols = Vec::new();
                for p in paths {
                    let v = self.expand(st, cmd, &p.value)?;
                    if v.is_empty() {
                        return Err(err_at(cmd, "VOLUME specified can not be an empty string"));
                    }
                    st.config.volumes.insert(v.clone(), serde_json::json!({}));
                    vols.push(v);
                }
                st.commit(format!("VOLUME {}", go_list(&vols)), None);
                Ok(())
            }
            Instruction::StopSignal(s) => {
                let sig = self.expand(st, cmd, &s.signal.value)?;
                check_signal(&sig).map_err(|e| err_at(cmd, e))?;
                st.config.stop_signal = sig.clone();
                st.commit(format!("STOPSIGNAL {sig}"), None);
                Ok(())
            }
            Instruction::Shell(s) => {
                let shell: Vec<String> = s.shell.iter().map(|w| w.value.clone()).collect();
                st.commit(format!("SHELL {}", go_list(&shell)), None);
                st.config.shell = Some(shell);
                Ok(())
            }
            Instruction::Cmd(Cmd { command }) => {
                let args = self.with_shell(st, command);
                st.commit(format!("CMD {}", go_quote_list(&args)), None);
                st.config.cmd = Some(args);
                st.config.args_escaped = true;
                st.cmd_set = true;
                Ok(())
            }
            Instruction::Entrypoint(Entrypoint { command }) => {
                let args = self.with_shell(st, command);
                st.commit(format!("ENTRYPOINT {}", go_quote_list(&args)), None);
                set_entrypoint(&mut st.config, args, st.cmd_set);
                Ok(())
            }
            Instruction::Healthcheck(h) => {
                let hc = healthcheck(h);
                st.commit(
                    format!(
                        "HEALTHCHECK &{{{} {:?} {:?} {:?} {}}}",
                        go_quote_list(&hc.test),
                        go_duration(hc.interval),
                        go_duration(hc.timeout),
                        go_duration(hc.start_period),
                        go_quote_rune(hc.retries)
                    ),
                    None,
                );
                st.config.healthcheck = Some(hc);
                Ok(())
            }
            Instruction::Maintainer(m) => {
                st.author = Some(m.name.value.clone());
                st.commit(format!("MAINTAINER {}", m.name.value), None);
                Ok(())
            }
            Instruction::Onbuild(o) => {
                st.config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(o.expression.clone());
                st.onbuild_exprs.push(o.expression.clone());
                Ok(())
            }
            Instruction::Run(r) => self.dispatch_run(st, cmd, r, onbuild),
            Instruction::Copy(c) => self.dispatch_copy(stage, st, cmd, CopyLike::Copy(c), onbuild),
            Instruction::Add(a) => self.dispatch_copy(stage, st, cmd, CopyLike::Add(a), onbuild),
        }
    }

    /// The argv of CMD/ENTRYPOINT/RUN: exec form as is, shell form through SHELL.
    fn with_shell(&self, st: &State, c: &CommandLine) -> Vec<String> {
        command_argv(&st.config, c)
    }

    fn dispatch_run(
        &mut self,
        st: &mut State,
        cmd: &Command,
        r: &Run,
        onbuild: bool,
    ) -> Result<(), LowerError> {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let args: Vec<String> = match &r.command {
            CommandLine::Exec(ws) => ws.iter().map(|w| w.value.clone()).collect(),
            CommandLine::Shell(w) => {
                let mut text = w.value.clone();
                if !r.heredocs.is_empty() {
                    let single = r.heredocs.len() == 1
                        && lade_parser::ast::parse_heredoc_word(text.trim())
                            .ok()
                            .flatten()
                            .is_some();
                    if single {
                        let h = &r.heredocs[0];
                        let doc = h.content.trim();
                        let mut lines = doc.lines();
                        let mut sum = lines.next().unwrap_or("").to_string();
                        if lines.next().is_some() {
                            sum.push_str("...");
                        }
                        self.pending_suffix = Some(format!(" ({sum})"));
                        let data = h.text().into_owned();
                        if data.starts_with("#!") {
                            files.push((h.name.clone(), data.into_bytes()));
                            text = format!("/dev/pipes/{}", h.name);
                            return self.finish_run(st, cmd, r, onbuild, vec![text], files);
                        }
                        text = data;
                    } else {
                        for h in &r.heredocs {
                            text.push('\n');
                            text.push_str(&h.content);
                            text.push_str(&h.name);
                        }
                    }
                }
                self.with_shell(
                    st,
                    &CommandLine::Shell(lade_parser::Spanned::new(text, w.span)),
                )
            }
        };
        self.finish_run(st, cmd, r, onbuild, args, files)
    }

    fn finish_run(
        &mut self,
        st: &mut State,
        cmd: &Command,
        r: &Run,
        onbuild: bool,
        args: Vec<String>,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), LowerError> {
        if args.is_empty() {
            return Err(err_at(cmd, "RUN needs a command"));
        }
        let network = match r.network.as_ref().map(|n| n.value) {
            None | Some(NetworkMode::Default) => self.opts.network,
            Some(NetworkMode::None) => RunNetwork::None,
            Some(NetworkMode::Host) => RunNetwork::Host,
        };
        let mut mounts = Vec::new();
        let mut extra: Vec<VertexId> = Vec::new();
        for m in &r.mounts {
            let rm = match &m.mount {
                Some(rm) => rm.clone(),
                None => {
                    let env = st.env.clone();
                    let lexer = self.lexer;
                    lade_parser::RunMount::parse(&m.spec.value, &mut |v| {
                        lexer
                            .process_word(v, &env)
                            .map_err(|e| lade_parser::MountError(e.to_string()))
                    })
                    .map_err(|e| err_at(cmd, format!("invalid --mount: {e}")))?
                }
            };
            mounts.push(self.run_mount(st, cmd, &rm, &mut extra)?);
        }
        let env: Vec<String> = st.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let cwd = if st.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            st.config.working_dir.clone()
        };
        let user = st.config.user.clone();
        let mut b = DigestBuilder::new("lade dockerfile run v1");
        b.u64(args.len() as u64);
        for a in &args {
            b.str(a);
        }
        b.u64(env.len() as u64);
        for e in &env {
            b.str(e);
        }
        b.str(&cwd)
            .str(&user)
            .str(network.as_str())
            .str(&st.platform);
        b.u64(files.len() as u64);
        for (n, d) in &files {
            b.str(n).bytes(d);
        }
        b.u64(mounts.len() as u64);
        for m in &mounts {
            m.digest_into(&mut b);
        }
        // proxies reach the process but not the key (BuildKit's ProxyEnv, appended to the
        // env and merged as containerd's WithEnv does: a later value replaces an earlier one
        // of the same name in place)
        let mut run_env = env.clone();
        for (k, v) in &self.proxy_env {
            let entry = format!("{k}={v}");
            match run_env
                .iter_mut()
                .find(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k.as_str()))
            {
                Some(e) => *e = entry,
                None => run_env.push(entry),
            }
        }
        let mut info = self.step_info(st, cmd, onbuild);
        if let Some(sfx) = self.pending_suffix.take() {
            info.name.push_str(&sfx);
        }
        let op = RunVertexOp {
            store: self.store.clone(),
            args: args.clone(),
            env: run_env,
            cwd,
            user,
            network,
            files,
            mounts,
            context: self.context.clone(),
        };
        let mut inputs = vec![st.vertex];
        inputs.extend(extra);
        let v = self.add_vertex(info, b.finish(), Arc::new(op), &inputs, false)?;
        st.vertex = v;
        // history: `RUN |N K=V ... argv # buildkit`
        let mut parts = Vec::new();
        if !st.build_args.is_empty() {
            parts.push(format!("|{}", st.build_args.len()));
            for (k, val) in &st.build_args {
                let v = st
                    .env
                    .iter()
                    .find(|(ek, _)| ek == k)
                    .map(|(_, v)| v.clone())
                    .or_else(|| val.clone())
                    .unwrap_or_default();
                parts.push(format!("{k}={v}"));
            }
        }
        parts.extend(args);
        st.commit(format!("RUN {} # buildkit", parts.join(" ")), Some(v));
        Ok(())
    }

    /// A `RUN --mount`: cache and tmpfs mounts, and read-only binds of the build context.
    /// The vertex of a `--mount ...,from=`: an earlier stage (name or index) or an image.
    /// A stage defined later in the file is refused as BuildKit does (its dispatch is in file
    /// order): `target` is the mount target as written, which the message names.
    fn mount_source_vertex(
        &mut self,
        from: &str,
        target: &str,
        st: &State,
        cmd: &Command,
    ) -> Result<VertexId, LowerError> {
        let current = self.current_stage;
        let stage = from
            .parse::<usize>()
            .ok()
            .or_else(|| self.stage_by_name(from));
        if let Some(idx) = stage {
            return match self.states.get(idx).and_then(|s| s.as_ref()) {
                Some(s) if idx < current => Ok(s.vertex),
                _ => Err(err_at(
                    cmd,
                    format!(
                        "cannot mount from stage {from:?} to {target:?}, stage needs to be defined before current command"
                    ),
                )),
            };
        }
        let img = self.resolve_image(from, &st.platform, cmd)?;
        self.source_vertex(Some(&img), format!("FROM {from}"), None, cmd.start_line)
    }

    fn run_mount(
        &mut self,
        st: &State,
        cmd: &Command,
        m: &lade_parser::RunMount,
        extra: &mut Vec<VertexId>,
    ) -> Result<RunMountSpec, LowerError> {
        use lade_parser::mount::MountType;
        let wd = if st.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            st.config.working_dir.clone()
        };
        if m.kind == MountType::Secret {
            let id = m
                .id
                .clone()
                .or_else(|| {
                    m.target
                        .as_deref()
                        .and_then(|t| t.rsplit('/').next())
                        .map(String::from)
                })
                .filter(|i| !i.is_empty())
                .ok_or_else(|| err_at(cmd, "invalid --mount: a secret needs an id or a target"))?;
            if m.env.is_some() {
                return Err(err_at(
                    cmd,
                    "RUN --mount=type=secret,env=... is not supported yet by lade: mount it as a file",
                ));
            }
            let target = m
                .target
                .clone()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| format!("/run/secrets/{id}"));
            let target = if target.starts_with('/') {
                lade_executor::rootfs::clean(&target)
            } else {
                lade_executor::rootfs::join(&wd, &target)
            };
            let content = self
                .opts
                .secrets
                .iter()
                .find(|(k, _)| *k == id)
                .map(|(_, v)| v.clone());
            if content.is_none() && m.required {
                return Err(err_at(
                    cmd,
                    format!("secret {id} not found: give it with `lade build --secret id={id},src=FILE`"),
                ));
            }
            return Ok(RunMountSpec::Secret {
                id,
                target,
                mode: m.mode.unwrap_or(0o400),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                content,
            });
        }
        if m.kind == MountType::Ssh {
            return Err(err_at(
                cmd,
                "RUN --mount=type=ssh is not supported yet by lade",
            ));
        }
        let written = m
            .target
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err_at(cmd, "invalid --mount: target is required"))?;
        let target = if written.starts_with('/') {
            lade_executor::rootfs::clean(written)
        } else {
            lade_executor::rootfs::join(&wd, written)
        };
        match m.kind {
            MountType::Cache => {
                if m.from.is_some() {
                    return Err(err_at(
                        cmd,
                        "RUN --mount=type=cache,from=... is not supported yet by lade",
                    ));
                }
                Ok(RunMountSpec::Cache {
                    id: m.id.clone().unwrap_or_else(|| target.clone()),
                    target,
                    mode: m.mode.unwrap_or(0o755),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                    locked: matches!(m.sharing, Some(lade_parser::mount::CacheSharing::Locked)),
                })
            }
            MountType::Tmpfs => Ok(RunMountSpec::Tmpfs { target }),
            MountType::Bind => {
                let source = m.source.clone().unwrap_or_else(|| ".".into());
                match &m.from {
                    Some(from) => {
                        let v = self.mount_source_vertex(from, written, st, cmd)?;
                        let view = extra.len();
                        extra.push(v);
                        Ok(RunMountSpec::Layers {
                            view,
                            source: lade_executor::rootfs::clean(&source),
                            target,
                            readonly: m.readonly,
                        })
                    }
                    None => {
                        if self.context.is_none() {
                            return Err(err_at(cmd, "RUN --mount=type=bind needs a build context"));
                        }
                        Ok(RunMountSpec::Context {
                            source,
                            target,
                            readonly: m.readonly,
                        })
                    }
                }
            }
            other => Err(err_at(
                cmd,
                format!("RUN --mount=type={other} is not supported yet by lade"),
            )),
        }
    }

    fn dispatch_copy(
        &mut self,
        stage: usize,
        st: &mut State,
        cmd: &Command,
        c: CopyLike<'_>,
        onbuild: bool,
    ) -> Result<(), LowerError> {
        let (exclude_words, parents, link) = match c {
            CopyLike::Copy(c) => (c.exclude.clone(), c.parents, c.link),
            CopyLike::Add(a) => (a.exclude.clone(), false, a.link),
        };
        let mut exclude = Vec::new();
        for w in &exclude_words {
            exclude.push(self.expand(st, cmd, &w.value)?);
        }
        let (sources, dest, chown, chmod, from, is_add, unpack, checksum) = match c {
            CopyLike::Copy(c) => (
                &c.sources,
                &c.dest,
                &c.chown,
                &c.chmod,
                c.from.as_ref(),
                false,
                false,
                None,
            ),
            CopyLike::Add(a) => (
                &a.sources,
                &a.dest,
                &a.chown,
                &a.chmod,
                None,
                true,
                a.unpack.unwrap_or(true),
                a.checksum.as_ref(),
            ),
        };
        // BuildKit's dispatchCopy checks --chmod, then --checksum, before any source
        let chmod = match chmod {
            Some(w) => {
                let s = self.expand(st, cmd, &w.value)?;
                if s.is_empty() {
                    // `--chmod=` sets nothing (BuildKit tests `cfg.chmod != ""`)
                    None
                } else {
                    Some(
                        lade_executor::chmod::Chmod::parse(&s)
                            .map_err(|e| err_at(cmd, e.to_string()))?,
                    )
                }
            }
            None => None,
        };
        let checksum = match checksum {
            Some(w) => {
                let c = self.expand(st, cmd, &w.value)?;
                let paths: Vec<&Word> = sources
                    .iter()
                    .filter_map(|s| match s {
                        Source::Path(w) => Some(w),
                        Source::Heredoc(_) => None,
                    })
                    .collect();
                let [only] = paths.as_slice() else {
                    return Err(err_at(
                        cmd,
                        "checksum can't be specified for multiple sources",
                    ));
                };
                let src = self.expand(st, cmd, &only.value)?;
                if !is_url(&src) && !is_git(&src) {
                    return Err(err_at(cmd, "checksum requires HTTP(S) or Git sources"));
                }
                if lade_cache::Digest::parse(&c).is_err() {
                    return Err(err_at(
                        cmd,
                        format!("invalid --checksum {c:?}: expected sha256:<64 hex digits>"),
                    ));
                }
                Some(c)
            }
            None => None,
        };
        let dest_raw = self.expand(st, cmd, &dest.value)?;
        let chown = match chown {
            Some(w) => Some(self.expand(st, cmd, &w.value)?).filter(|s| !s.is_empty()),
            None => None,
        };
        // destination relative to WORKDIR, trailing slash kept (BuildKit)
        let wd = if st.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            st.config.working_dir.clone()
        };
        let mut dest_path = if dest_raw.starts_with('/') {
            lade_executor::rootfs::clean(&dest_raw)
        } else {
            lade_executor::rootfs::join(&wd, &dest_raw)
        };
        if (dest_raw.is_empty() || dest_raw == "." || dest_raw.ends_with('/'))
            && !dest_path.ends_with('/')
        {
            dest_path.push('/');
        }
        // sources
        let mut specs = Vec::new();
        let mut inputs = vec![st.vertex];
        let mut msg_sources = Vec::new();
        let mut from_desc = String::new();
        if let Some(f) = from {
            let v = f.value.clone();
            let src_vertex = if let Ok(idx) = v.parse::<usize>() {
                self.stage_vertex(idx, stage, cmd, &v)?
            } else if let Some(idx) = self.stage_by_name(&v) {
                self.stage_vertex(idx, stage, cmd, &v)?
            } else {
                let img = self.resolve_image(&v, &st.platform, cmd)?;
                self.source_vertex(Some(&img), format!("FROM {v}"), None, cmd.start_line)?
            };
            inputs.push(src_vertex);
            from_desc = v;
        }
        for s in sources {
            match s {
                Source::Path(w) => {
                    let p = self.expand(st, cmd, &w.value)?;
                    msg_sources.push(p.clone());
                    if is_add && is_url(&p) {
                        specs.push(SourceSpec::Url {
                            url: p,
                            checksum: checksum.clone(),
                        });
                        continue;
                    }
                    if is_add && is_git(&p) {
                        return Err(err_at(
                            cmd,
                            "ADD of a git repository is not supported by lade",
                        ));
                    }
                    if from.is_some() {
                        specs.push(SourceSpec::Layers {
                            view: 0,
                            pattern: p,
                        });
                    } else {
                        specs.push(SourceSpec::Context(p));
                    }
                }
                Source::Heredoc(h) => {
                    msg_sources.push(format!("<<{}", h.name));
                    let text = h.text().into_owned();
                    let data = if h.expand {
                        Lexer::new('\\')
                            .skip_process_quotes(true)
                            .process_word(&text, &st.env)
                            .map_err(|e| err_at(cmd, e.to_string()))?
                    } else {
                        text
                    };
                    specs.push(SourceSpec::Inline {
                        name: h.name.clone(),
                        data: data.into_bytes(),
                        mode: 0o644,
                    });
                }
            }
        }
        let mut b = DigestBuilder::new("lade dockerfile copy v1");
        b.u8(u8::from(is_add))
            .str(&dest_path)
            .str(chown.as_deref().unwrap_or(""))
            .u64(match &chmod {
                None => u64::from(u32::MAX),
                Some(c) => c.octal().map_or(u64::from(u32::MAX) + 1, u64::from),
            });
        if let Some(c) = chmod.as_ref().filter(|c| c.octal().is_none()) {
            // a symbolic mode (the tag above tells it from an octal one)
            b.str(c.as_str());
        }
        b.u8(u8::from(unpack)).str(&from_desc).str(&st.platform);
        b.u8(u8::from(parents));
        b.u64(exclude.len() as u64);
        for x in &exclude {
            b.str(x);
        }
        b.u64(specs.len() as u64);
        for s in &specs {
            match s {
                SourceSpec::Context(p) => {
                    b.u8(1).str(p);
                }
                SourceSpec::Layers { view, pattern } => {
                    b.u8(2).u64(*view as u64).str(pattern);
                }
                SourceSpec::Inline { name, data, mode } => {
                    b.u8(3).str(name).bytes(data).u64(u64::from(*mode));
                }
                SourceSpec::Url { url, checksum } => {
                    b.u8(4).str(url).str(checksum.as_deref().unwrap_or(""));
                }
            }
        }
        let info = self.step_info(st, cmd, onbuild);
        let op = CopyVertexOp {
            store: self.store.clone(),
            context: self.context.clone(),
            sources: specs,
            dest: dest_path,
            chown,
            chmod,
            unpack,
            mkdir_only: false,
            exclude,
            parents,
            downloads: Default::default(),
        };
        // --link (BuildKit's MergeOp): the files are copied onto an empty filesystem, so the
        // expensive step's key does not depend on the parent, then the layer is stacked on the
        // parent by a trivial merge. A --chown by name needs the parent's /etc/passwd: then the
        // copy is done on the parent as without --link (same files). BuildKit ignores --link
        // when --chmod is given (`cfg.link && cfg.chmod == ""` in dispatchCopy).
        let by_name = op
            .chown
            .as_deref()
            .is_some_and(|c| c.split(':').any(|p| p.parse::<u32>().is_err()));
        let (v, merged) = if link && !by_name && op.chmod.is_none() {
            b.u8(1);
            let empty = self.source_vertex(None, "FROM scratch".into(), None, cmd.start_line)?;
            inputs[0] = empty;
            let copied = self.add_vertex(info, b.finish(), Arc::new(op), &inputs, false)?;
            let mut mb = DigestBuilder::new("lade dockerfile merge v1");
            mb.u64(2);
            let merged = self.add_vertex(
                StepInfo {
                    name: "merge".into(),
                    instruction: "merge".into(),
                    line: cmd.start_line,
                    hidden: true,
                },
                mb.finish(),
                Arc::new(MergeOp),
                &[st.vertex, copied],
                true,
            )?;
            (copied, merged)
        } else {
            let v = self.add_vertex(info, b.finish(), Arc::new(op), &inputs, false)?;
            (v, v)
        };
        st.vertex = merged;
        let kw = if is_add { "ADD" } else { "COPY" };
        st.commit(
            format!("{kw} {} {dest_raw} # buildkit", msg_sources.join(" ")),
            Some(v),
        );
        Ok(())
    }

    /// The vertex of stage `idx` for `COPY --from` in stage `current`: BuildKit's
    /// `cannot copy from stage` error for a stage not dispatched yet (defined later).
    fn stage_vertex(
        &self,
        idx: usize,
        current: usize,
        cmd: &Command,
        name: &str,
    ) -> Result<VertexId, LowerError> {
        match self.states.get(idx).and_then(|s| s.as_ref()) {
            Some(s) if idx < current => Ok(s.vertex),
            _ => Err(err_at(
                cmd,
                format!(
                    "cannot copy from stage {name:?}, it needs to be defined before current stage {:?}",
                    self.stage_label(current)
                ),
            )),
        }
    }
}

enum CopyLike<'a> {
    Copy(&'a Copy),
    Add(&'a Add),
}

#[allow(dead_code)]
fn sorted_labels(m: &BTreeMap<String, String>) -> Vec<String> {
    m.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_args_reach_run_in_both_spellings() {
        let args = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            proxy_env(&args(&[
                ("HTTP_PROXY", "http://p:3128"),
                ("no_proxy", "localhost"),
                ("FTP_PROXY", ""),
                ("OTHER", "x"),
            ])),
            args(&[
                ("HTTP_PROXY", "http://p:3128"),
                ("http_proxy", "http://p:3128"),
                ("NO_PROXY", "localhost"),
                ("no_proxy", "localhost"),
            ])
        );
        assert!(proxy_env(&[]).is_empty());
    }
}
