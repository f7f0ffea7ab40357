//! Subcommands. One module per command; `run` dispatches.

mod login;
mod registry_opts;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information
    Version,
    /// Log in to a registry (credentials are checked, then saved in Lade's auth file)
    Login(login::LoginArgs),
    /// Remove a registry's credentials from Lade's auth file
    Logout(login::LogoutArgs),
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => {
            println!("lade {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Login(args) => login::login(args),
        Command::Logout(args) => login::logout(args),
    }
}
