//! Registry client.
//!
//! Will own the OCI distribution / Docker registry v2 protocol: authentication, pulling and
//! pushing manifests and blobs with digest verification, cross-repository mounts and retries.
//! It must not print; progress is reported through callbacks the CLI renders.
