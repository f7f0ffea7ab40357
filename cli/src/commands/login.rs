//! `lade login` and `lade logout`: credentials in Lade's own auth file (docker's `auths`
//! format, mode 0600), verified against the registry before they are saved.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use lade_registry::{normalize_registry, Client, Credential, CredentialStore, Error};

use super::registry_opts::{runtime, RegistryOpts};
use crate::output::outln;

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Registry HOST or HOST:PORT (docker.io is Docker Hub)
    #[arg(default_value = "docker.io")]
    registry: String,
    /// User name (asked for on a terminal when missing)
    #[arg(short, long)]
    username: Option<String>,
    /// Password; other users can see it in the process list: prefer --password-stdin
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    registry_opts: RegistryOpts,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// Registry HOST or HOST:PORT (docker.io is Docker Hub)
    #[arg(default_value = "docker.io")]
    registry: String,
}

pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let registry = normalize_registry(&args.registry)?;
    let username = match args.username {
        Some(u) => u,
        None if std::io::stdin().is_terminal() && !args.password_stdin => {
            prompt("Username: ", true)?
        }
        None => bail!("no user name: pass -u/--username"),
    };
    if username.is_empty() {
        bail!("empty user name");
    }
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from standard input")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = args.password {
        eprintln!("warning: a password on the command line is visible to other users; use --password-stdin");
        p
    } else if std::io::stdin().is_terminal() {
        prompt("Password: ", false)?
    } else {
        bail!("no password: use --password-stdin (or -p), or run on a terminal");
    };
    if password.is_empty() {
        bail!("empty password");
    }

    let mut config = args.registry_opts.client_config()?;
    config
        .credential_overrides
        .insert(registry.clone(), Credential::basic(&username, &password));
    let store = config.credentials.clone();
    let client = Client::new(config);
    let checked = runtime()?.block_on(client.ping(&registry));
    match checked {
        Ok(()) => {}
        Err(Error::AuthFailed { detail, .. }) => bail!("login to {registry} failed: {detail}"),
        Err(e) => bail!("login to {registry} failed: {e}"),
    }
    let path = store.save(&registry, &username, &password)?;
    eprintln!("credentials saved in {}", path.display());
    outln!("Login Succeeded")?;
    Ok(ExitCode::SUCCESS)
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let registry = normalize_registry(&args.registry)?;
    let store = CredentialStore::from_env();
    if store.remove(&registry)? {
        outln!("Removing login credentials for {registry}")?;
    } else {
        outln!("Not logged in to {registry}")?;
    }
    // Lade also reads docker's credentials; say so when they still authenticate us.
    if let Some(docker) = store.docker_config_file() {
        let docker_only = CredentialStore::new(None, Some(docker.to_path_buf()));
        if let Ok(Some(_)) = runtime()?.block_on(docker_only.lookup(&registry)) {
            eprintln!(
                "note: docker's config ({}) still has credentials for {registry}, which lade also uses; `docker logout {registry}` removes them",
                docker.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads one line from the terminal, without echo when `echo` is false.
fn prompt(label: &str, echo: bool) -> anyhow::Result<String> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    let _guard = if echo { None } else { Some(EchoOff::new()?) };
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if !echo {
        eprintln!();
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Turns terminal echo off until dropped.
struct EchoOff(nix::sys::termios::Termios);

impl EchoOff {
    fn new() -> anyhow::Result<EchoOff> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let stdin = std::io::stdin();
        let old = tcgetattr(&stdin).context("reading terminal settings")?;
        let mut quiet = old.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning terminal echo off")?;
        Ok(EchoOff(old))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}
