//! Options shared by the commands that talk to registries (login; later pull and push).

use lade_registry::{normalize_registry, ClientConfig};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryOpts {
    /// Allow plain HTTP, and TLS without certificate checks, for this registry (HOST or
    /// HOST:PORT); repeatable, added to LADE_INSECURE_REGISTRIES. Loopback registries may use
    /// plain HTTP without it
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

impl RegistryOpts {
    /// Client settings from the environment ([`ClientConfig::from_env`]: Lade's and docker's
    /// credentials, `LADE_CERTS_DIR`, `LADE_INSECURE_REGISTRIES`, `LADE_PUSH_CHUNK_SIZE`) plus
    /// these options.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut cfg = ClientConfig::from_env()?;
        for r in &self.insecure_registries {
            cfg.add_insecure_registry(&normalize_registry(r)?);
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
