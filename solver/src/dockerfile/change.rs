//! Config-only Dockerfile instructions applied to an image [`Config`], shared by the lowering
//! pass and by `--change` (`lade import -c`, `lade commit -c`, docker's `BuildFromConfig`).
//!
//! The building blocks (port specs, signals, health checks, shell-form commands, WORKDIR
//! joining) are what the lowering uses for the same instructions, so a `--change` and a
//! Dockerfile line give the same config. [`apply_changes`] parses each change with the
//! Dockerfile parser, accepts the instructions docker accepts there, expands words with the
//! config's own `Env` (as docker's classic builder does; there are no build args) and applies
//! them in order.

use lade_parser::instruction::{CommandLine, Healthcheck as HealthcheckInstruction};
use lade_parser::shell::Lexer;
use lade_parser::{Command, Instruction};

use super::image::{Config, Healthcheck};

/// The instructions `--change` accepts: docker's `validCommitCommands`, plus STOPSIGNAL, which
/// newer docker releases accept too.
pub const CHANGE_INSTRUCTIONS: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// docker's `nat.ParsePortSpecs` for one word: `80`, `80/udp`, `8000-8002/tcp`, the container
/// side of `ip:host:container`; protocols tcp, udp and sctp.
pub fn expand_port(w: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match w.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    // ip:hostPort:containerPort forms keep only the container port
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let bad = || format!("invalid containerPort: {ports}");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u32>().map_err(|_| bad())?,
            b.parse::<u32>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u32>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo || hi > 65535 {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Checks a STOPSIGNAL value: a number 1-64 or a signal name (`SIG` optional).
pub fn check_signal(s: &str) -> Result<(), String> {
    if let Ok(n) = s.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(());
        }
    }
    let name = s.trim_start_matches("SIG");
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "RTMIN", "RTMAX",
    ];
    if NAMES.contains(&name)
        || name
            .strip_prefix("RTMIN+")
            .or_else(|| name.strip_prefix("RTMAX-"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some()
    {
        Ok(())
    } else {
        Err(format!("invalid signal: {s}"))
    }
}

/// The config's `Healthcheck` for a HEALTHCHECK instruction (`NONE`, or the test command with
/// its durations in nanoseconds).
pub fn healthcheck(h: &HealthcheckInstruction) -> Healthcheck {
    match h {
        HealthcheckInstruction::None => Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        HealthcheckInstruction::Cmd(c) => {
            let test = match &c.command {
                CommandLine::Shell(w) => vec!["CMD-SHELL".into(), w.value.clone()],
                CommandLine::Exec(ws) => std::iter::once("CMD".to_string())
                    .chain(ws.iter().map(|w| w.value.clone()))
                    .collect(),
            };
            let ns = |d: Option<std::time::Duration>| {
                d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            };
            Healthcheck {
                test,
                interval: ns(c.interval),
                timeout: ns(c.timeout),
                start_period: ns(c.start_period),
                start_interval: ns(c.start_interval),
                retries: i64::from(c.retries.unwrap_or(0)),
            }
        }
    }
}

/// The argv of CMD/ENTRYPOINT/RUN: the exec form as written, the shell form through the
/// config's SHELL (default `/bin/sh -c`).
pub fn command_argv(config: &Config, c: &CommandLine) -> Vec<String> {
    match c {
        CommandLine::Exec(ws) => ws.iter().map(|w| w.value.clone()).collect(),
        CommandLine::Shell(w) => {
            let mut v = config
                .shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            v.push(w.value.clone());
            v
        }
    }
}

/// The working directory after `WORKDIR path` (expanded, non-empty): an absolute path as
/// written, a relative one joined to the current directory and cleaned.
pub fn workdir(config: &Config, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    let current = if config.working_dir.is_empty() {
        "/"
    } else {
        config.working_dir.as_str()
    };
    lade_executor::rootfs::join(current, path)
}

/// Sets `Entrypoint` (`ENTRYPOINT []` clears it); a CMD not set since the base is dropped,
/// since it was meant for the old entrypoint.
pub fn set_entrypoint(config: &mut Config, argv: Vec<String>, cmd_set: bool) {
    config.entrypoint = Some(argv).filter(|a| !a.is_empty());
    if !cmd_set {
        config.cmd = None;
    }
}

/// Applies `--change` instructions to `config`, in order (see the module docs). The error
/// names the change at fault and why.
pub fn apply_changes<S: AsRef<str>>(config: &mut Config, changes: &[S]) -> Result<(), String> {
    let mut cmd_set = false;
    for change in changes {
        let change = change.as_ref();
        apply_one(config, change, &mut cmd_set)
            .map_err(|e| format!("invalid --change {change:?}: {e}"))?;
    }
    Ok(())
}

fn parse_change(change: &str) -> Result<Vec<Command>, String> {
    if change.trim().is_empty() {
        return Err(
            "empty --change: give a Dockerfile instruction, e.g. --change 'CMD [\"sh\"]'".into(),
        );
    }
    let parsed = lade_parser::parse_ast(change);
    if let Some(e) = parsed.errors.first() {
        return Err(e.message.clone());
    }
    let mut out = Vec::new();
    for node in &parsed.value.nodes {
        let name = node.keyword.value.to_ascii_uppercase();
        if !CHANGE_INSTRUCTIONS.contains(&name.as_str()) {
            return Err(format!(
                "{name} cannot be used with --change; use one of {}",
                CHANGE_INSTRUCTIONS.join(", ")
            ));
        }
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let cmd = lade_parser::instruction::instruction_from_node(node, &mut errors, &mut warnings);
        match (cmd, errors.first()) {
            (_, Some(e)) => return Err(e.message.clone()),
            (Some(c), None) => out.push(c),
            (None, None) => return Err(format!("{name} is not a valid instruction")),
        }
    }
    if out.is_empty() {
        return Err("no instruction in it (only a comment?)".into());
    }
    Ok(out)
}

/// A config's `Env` (`KEY=VALUE` strings; a bare `KEY` is an empty value) as the pairs word
/// expansion takes.
pub fn env_pairs(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

fn apply_one(config: &mut Config, change: &str, cmd_set: &mut bool) -> Result<(), String> {
    let lexer = Lexer::default();
    for cmd in parse_change(change)? {
        // Words expand with the env as it is before this instruction (docker's dispatch).
        let env = env_pairs(&config.env);
        let expand = |w: &str| lexer.process_word(w, &env).map_err(|e| e.to_string());
        match &cmd.instruction {
            Instruction::Cmd(c) => {
                config.cmd = Some(command_argv(config, &c.command));
                config.args_escaped = false;
                *cmd_set = true;
            }
            Instruction::Entrypoint(e) => {
                let argv = command_argv(config, &e.command);
                set_entrypoint(config, argv, *cmd_set);
                config.args_escaped = false;
            }
            Instruction::Env(e) => {
                let mut pairs = Vec::new();
                for p in &e.pairs {
                    pairs.push((expand(&p.key.value)?, expand(&p.value.value)?));
                }
                for (k, v) in pairs {
                    config.env_set(&k, &v);
                }
            }
            Instruction::Label(l) => {
                for p in &l.pairs {
                    let (k, v) = (expand(&p.key.value)?, expand(&p.value.value)?);
                    config.labels.insert(k, v);
                }
            }
            Instruction::Expose(x) => {
                for p in &x.ports {
                    let words = lexer
                        .process_words(&p.value, &env)
                        .map_err(|e| e.to_string())?;
                    for w in words {
                        for spec in expand_port(&w)? {
                            config.exposed_ports.insert(spec, serde_json::json!({}));
                        }
                    }
                }
            }
            Instruction::Volume(v) => {
                for p in &v.paths {
                    let path = expand(&p.value)?;
                    if path.is_empty() {
                        return Err("VOLUME specified can not be an empty string".into());
                    }
                    config.volumes.insert(path, serde_json::json!({}));
                }
            }
            Instruction::User(u) => config.user = expand(&u.user.value)?,
            Instruction::Workdir(w) => {
                let path = expand(&w.path.value)?;
                if path.is_empty() {
                    return Err("cannot normalize nothing: WORKDIR needs a path".into());
                }
                config.working_dir = workdir(config, &path);
            }
            Instruction::StopSignal(s) => {
                let sig = expand(&s.signal.value)?;
                check_signal(&sig)?;
                config.stop_signal = sig;
            }
            Instruction::Healthcheck(h) => config.healthcheck = Some(healthcheck(h)),
            Instruction::Onbuild(o) => config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(o.expression.clone()),
            other => {
                return Err(format!("{} cannot be used with --change", other.name()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn applied(changes: &[&str]) -> serde_json::Value {
        let mut c = Config::default();
        apply_changes(&mut c, changes).unwrap();
        serde_json::to_value(&c).unwrap()
    }

    fn refused(changes: &[&str]) -> String {
        let mut c = Config::default();
        apply_changes(&mut c, changes).unwrap_err()
    }

    #[test]
    fn changes_as_docker_applies_them() {
        let v = applied(&[
            r#"CMD ["/bin/sh","-c","echo hi"]"#,
            "ENTRYPOINT /bin/run",
            r#"ENV A=1 B="two words""#,
            "ENV C $A",
            "EXPOSE 8000-8002 53/UDP",
            "LABEL l=$A",
            "WORKDIR /$A/x",
            "WORKDIR rel/../y",
            "USER $A:2",
            r#"VOLUME ["/v1", "/v2"]"#,
            "STOPSIGNAL SIGINT",
            "HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost",
            "onbuild copy a b",
            "ONBUILD RUN echo hi",
        ]);
        assert_eq!(v["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(v["Entrypoint"], json!(["/bin/sh", "-c", "/bin/run"]));
        assert_eq!(v["Env"], json!(["A=1", "B=two words", "C=1"]));
        assert_eq!(
            v["ExposedPorts"],
            json!({"8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}, "53/udp": {}})
        );
        assert_eq!(v["Labels"], json!({"l": "1"}));
        assert_eq!(v["WorkingDir"], "/1/x/y");
        assert_eq!(v["User"], "1:2");
        assert_eq!(v["Volumes"], json!({"/v1": {}, "/v2": {}}));
        assert_eq!(v["StopSignal"], "SIGINT");
        assert_eq!(
            v["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 5_000_000_000u64, "Retries": 2})
        );
        assert_eq!(v["OnBuild"], json!(["copy a b", "RUN echo hi"]));
        assert!(v.get("ArgsEscaped").is_none());
    }

    #[test]
    fn entrypoint_drops_a_cmd_set_before_the_changes_only() {
        let mut c = Config {
            cmd: Some(vec!["old".into()]),
            ..Default::default()
        };
        apply_changes(&mut c, &[r#"ENTRYPOINT ["e"]"#]).unwrap();
        assert_eq!(
            (c.entrypoint.as_deref(), c.cmd.as_deref()),
            (Some(&["e".to_string()][..]), None)
        );
        let v = applied(&[r#"CMD ["a"]"#, r#"ENTRYPOINT ["e"]"#]);
        assert_eq!(
            (&v["Cmd"], &v["Entrypoint"]),
            (&json!(["a"]), &json!(["e"]))
        );
        let v = applied(&["ENTRYPOINT []"]);
        assert!(v.get("Entrypoint").is_none());
        // SHELL from the base image applies to shell forms.
        let mut c = Config {
            shell: Some(vec!["/bin/bash".into(), "-ec".into()]),
            ..Default::default()
        };
        apply_changes(&mut c, &["CMD make"]).unwrap();
        assert_eq!(c.cmd.unwrap(), ["/bin/bash", "-ec", "make"]);
    }

    #[test]
    fn bad_changes_say_why() {
        assert!(refused(&[""]).contains("empty --change"));
        let e = refused(&["RUN make"]);
        assert!(
            e.contains("RUN cannot be used with --change") && e.contains("HEALTHCHECK"),
            "{e}"
        );
        assert!(refused(&["FROM x"]).contains("FROM cannot be used"));
        assert!(refused(&["SHELL [\"sh\"]"]).contains("SHELL cannot be used"));
        assert!(refused(&["ENV =x"]).contains("invalid --change \"ENV =x\""));
        assert!(refused(&["EXPOSE 70000"]).contains("invalid containerPort: 70000"));
        assert!(refused(&["EXPOSE 80/xyz"]).contains("invalid proto: xyz"));
        assert!(refused(&["STOPSIGNAL SIGNOPE"]).contains("invalid signal"));
        assert!(refused(&["ONBUILD ONBUILD RUN x"]).contains("ONBUILD"));
        assert!(refused(&["WORKDIR"]).contains("WORKDIR"));
        // The first change applies, the second is refused and named.
        let e = refused(&["ENV A=1", "USER"]);
        assert!(e.starts_with("invalid --change \"USER\""), "{e}");
    }

    #[test]
    fn ports_and_signals() {
        assert_eq!(expand_port("80").unwrap(), ["80/tcp"]);
        assert_eq!(expand_port("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(expand_port("9/sctp").unwrap(), ["9/sctp"]);
        assert_eq!(expand_port("1-3").unwrap(), ["1/tcp", "2/tcp", "3/tcp"]);
        assert_eq!(expand_port("127.0.0.1:8080:80").unwrap(), ["80/tcp"]);
        assert!(expand_port("x").is_err());
        assert!(expand_port("80/xyz").is_err());
        assert!(expand_port("3-1").is_err());
        assert!(check_signal("SIGINT").is_ok());
        assert!(check_signal("9").is_ok());
        assert!(check_signal("RTMIN+3").is_ok());
        assert!(check_signal("SIGNOPE").is_err());
    }
}
