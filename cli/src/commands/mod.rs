//! Subcommands. One module per command group; `run` dispatches.

mod login;
mod registry_opts;

mod build;
mod containers;
mod images;
mod run;
mod timefmt;
mod transfer;

use std::path::PathBuf;
mod debug;

use std::process::ExitCode;

pub use run::maybe_purge_trash;

use clap::{Args, Subcommand};

/// Flags every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Store directory [default: $LADE_ROOT, else /var/lib/lade for root, else
    /// $XDG_DATA_HOME/lade, else ~/.local/share/lade]
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl Global {
    /// The store root chosen by `--root` or the defaults, made absolute (a relative one is
    /// taken from the current directory: the sandbox needs absolute overlay and scratch paths).
    pub fn root(&self) -> PathBuf {
        let root = self.root.clone().unwrap_or_else(lade_cache::default_root);
        std::path::absolute(&root).unwrap_or(root)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information
    Version,
    /// Log in to a registry (credentials are checked, then saved in Lade's auth file)
    Login(login::LoginArgs),
    /// Remove a registry's credentials from Lade's auth file
    Logout(login::LogoutArgs),
    /// Build an image from a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Build-cache maintenance
    #[command(subcommand)]
    Builder(images::BuilderCommand),
    /// Pull an image from a registry into the store
    Pull(transfer::PullArgs),
    /// Push an image from the store to a registry
    Push(transfer::PushArgs),
    /// Load images from a docker-archive or OCI-archive tarball (gzip/zstd or not)
    Load(images::LoadArgs),
    /// Save images to one tarball that `docker load` accepts and that is an OCI image layout
    Save(images::SaveArgs),
    /// Create a one-layer image from a rootfs tarball or directory
    Import(images::ImportArgs),
    /// List images
    Images(images::ImagesArgs),
    /// Give an image another name
    Tag(images::TagArgs),
    /// Remove image names (space is reclaimed by `lade prune`)
    Rmi(images::RmiArgs),
    /// Show image details as a JSON array, like `docker inspect`
    Inspect(images::InspectArgs),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Run a command in a new container
    Run(run::RunArgs),
    /// List containers
    Ps(containers::PsArgs),
    /// Remove containers and their changes
    Rm(containers::RmArgs),
    /// Create an image from a container's changes
    Commit(containers::CommitArgs),
    /// Remove blobs, layers and snapshots no image references; report the space freed
    Prune(images::PruneArgs),
    /// Store maintenance
    #[command(subcommand)]
    System(images::SystemCommand),
    /// Developer tools: inspect what lade makes of its inputs
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

pub fn run(command: Command, global: &Global) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => {
            crate::output::outln!("lade {}", env!("CARGO_PKG_VERSION"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login(args) => login::login(args),
        Command::Logout(args) => login::logout(args),
        Command::Build(a) => build::build(global, *a),
        Command::Builder(c) => images::builder(global, c),
        Command::Pull(a) => transfer::pull(global, a),
        Command::Push(a) => transfer::push(global, a),
        Command::Load(a) => images::load(global, a),
        Command::Save(a) => images::save(global, a),
        Command::Import(a) => images::import(global, a),
        Command::Images(a) => images::images(global, a),
        Command::Tag(a) => images::tag(global, a),
        Command::Rmi(a) => images::rmi(global, a),
        Command::Inspect(a) => images::inspect(global, a),
        Command::History(a) => images::history(global, a),
        Command::Prune(a) => images::prune(global, a),
        Command::Run(a) => run::run(global, a),
        Command::Ps(a) => containers::ps(global, a),
        Command::Rm(a) => containers::rm(global, a),
        Command::Commit(a) => containers::commit(global, a),
        Command::System(c) => images::system(global, c),
        Command::Debug(cmd) => debug::run(cmd),
    }
}
