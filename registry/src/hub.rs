//! Docker Hub's special names: users write `docker.io`, the API lives at
//! `registry-1.docker.io`, and docker keys Hub credentials as `https://index.docker.io/v1/`.

/// The registry users write for Docker Hub (references normalise to it).
pub const DOCKER_HUB: &str = lade_cache::reference::DEFAULT_DOMAIN;
/// Where Docker Hub's registry API is served.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key docker writes Hub credentials under in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// The API host for a registry name: `docker.io` maps to `registry-1.docker.io`, every other
/// registry is served where it is named.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_api_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("localhost:5000"), "localhost:5000");
        let r = lade_cache::Reference::parse("busybox").unwrap();
        assert_eq!(api_host(r.registry()), "registry-1.docker.io");
    }
}
