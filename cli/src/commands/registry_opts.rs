//! Options shared by the commands that talk to registries (login; later pull and push).

use std::path::PathBuf;

use lade_registry::{normalize_registry, ClientConfig};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryOpts {
    /// Allow plain HTTP, and TLS without certificate checks, for this registry (HOST or HOST:PORT);
    /// repeatable. Loopback registries may use plain HTTP without it
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "LADE_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
}

impl RegistryOpts {
    /// Client settings: credentials from Lade's and docker's config files, extra CA
    /// directories from `LADE_CERTS_DIR` (colon-separated, laid out like
    /// `/etc/docker/certs.d`) searched before docker's and containers' own.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut cfg = ClientConfig::from_env();
        for r in &self.insecure_registries {
            cfg.insecure_registries.push(normalize_registry(r)?);
        }
        if let Some(dirs) = std::env::var_os("LADE_CERTS_DIR").filter(|d| !d.is_empty()) {
            let mut extra: Vec<PathBuf> = std::env::split_paths(&dirs).collect();
            extra.append(&mut cfg.certs_dirs);
            cfg.certs_dirs = extra;
        }
        Ok(cfg)
    }
}

/// A runtime for one command's network work.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
