//! Authentication against the real registry: htpasswd behind TLS, and token auth with a real
//! token server.

use lade_registry::testing::{RegistryOptions, TestRegistry, TokenServer};
use lade_registry::{Client, ClientConfig, Credential, Error, Platform};

use crate::common::{blob, TestImage};

#[tokio::test]
async fn basic_auth_over_tls_round_trip() {
    let reg = TestRegistry::basic_tls("alice", "s3cret");
    let client = Client::new(reg.client_config());
    client.ping(&reg.host()).await.unwrap();
    let r = reg.reference("secure/app:1");
    let image = TestImage::new(vec![blob(200_000, 1)], "amd64");
    image.push(&client, &r, &[]).await;
    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    let layer = client
        .fetch_blob_bytes(&r, &got.image.layers[0], 1 << 20)
        .await
        .unwrap();
    assert_eq!(layer, image.layers[0]);
}

#[tokio::test]
async fn wrong_or_missing_password_is_a_clear_error() {
    let reg = TestRegistry::basic_tls("alice", "s3cret");
    let mut cfg = reg.client_config();
    cfg.credential_overrides
        .insert(reg.host(), Credential::basic("alice", "not-it-x9"));
    let err = Client::new(cfg).ping(&reg.host()).await.unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("authentication failed")
            && msg.contains(&format!("lade login {}", reg.host())),
        "{msg}"
    );
    assert!(
        !msg.contains("not-it-x9"),
        "the password never appears: {msg}"
    );

    let mut cfg = reg.client_config();
    cfg.credential_overrides.clear();
    let client = Client::new(cfg);
    let err = client
        .fetch_manifest(&reg.reference("secure/app:1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthRequired { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "authentication required for {0}: run `lade login {0}`",
            reg.host()
        )
    );
}

#[tokio::test]
async fn tls_needs_the_registry_ca_or_an_explicit_opt_out() {
    let reg = TestRegistry::basic_tls("alice", "s3cret");
    let mut cfg = reg.client_config();
    cfg.certs_dirs.clear();
    let err = Client::new(cfg.clone())
        .ping(&reg.host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("certs.d"), "{err}");

    // Explicitly insecure: the certificate is not verified (docker's insecure-registries).
    cfg.insecure_registries.push(reg.host());
    Client::new(cfg).ping(&reg.host()).await.unwrap();
}

#[tokio::test]
async fn token_auth_flow_with_cached_scoped_tokens() {
    let tokens = TokenServer::start("bob", "hunter2");
    let reg = TestRegistry::token(&tokens);
    let mut cfg = reg.client_config();
    cfg.credential_overrides
        .insert(reg.host(), Credential::basic("bob", "hunter2"));
    let client = Client::new(cfg);
    let r = reg.reference("tok/app:1");
    let image = TestImage::new(vec![blob(100_000, 2), blob(3000, 3)], "amd64");
    image.push(&client, &r, &[]).await;
    let pushes: Vec<_> = tokens
        .requests()
        .into_iter()
        .filter(|t| t.scopes == ["repository:tok/app:pull,push"])
        .collect();
    assert_eq!(
        pushes.len(),
        1,
        "one push token serves every blob and the manifest: {:?}",
        tokens.requests()
    );
    assert!(pushes
        .iter()
        .all(|t| t.user.as_deref() == Some("bob") && t.status == 200));

    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    let jobs = got
        .image
        .layers
        .iter()
        .map(|d| (d.clone(), Vec::new()))
        .collect();
    let layers = client
        .fetch_blobs(&r, jobs, &lade_registry::ProgressFn::none())
        .await
        .unwrap();
    assert_eq!(layers[0].1, image.layers[0]);
    let pulls = tokens
        .requests()
        .iter()
        .filter(|t| t.scopes == ["repository:tok/app:pull"])
        .count();
    assert_eq!(
        pulls, 1,
        "one pull token for manifests and concurrent layers"
    );

    // Cross-repository mount asks for both scopes in one token.
    let second = reg.reference("tok/other:1");
    let results = image.push(&client, &second, &["tok/app".to_string()]).await;
    assert!(
        results
            .iter()
            .all(|p| matches!(p, lade_registry::PushedBlob::Mounted { .. })),
        "{results:?}"
    );
    assert!(
        tokens.requests().iter().any(|t| {
            let mut s = t.scopes.clone();
            s.sort();
            s == ["repository:tok/app:pull", "repository:tok/other:pull,push"]
        }),
        "{:?}",
        tokens.requests()
    );
    assert!(reg
        .access_log()
        .iter()
        .any(|e| e.method == "POST" && e.path.contains("mount=") && e.status == 201));
}

#[tokio::test]
async fn token_auth_errors_and_access_token_spelling() {
    let tokens = TokenServer::start_with("bob", "hunter2", true);
    let reg = TestRegistry::token(&tokens);
    let mut cfg = reg.client_config();
    cfg.credential_overrides
        .insert(reg.host(), Credential::basic("bob", "hunter2"));
    let client = Client::new(cfg.clone());
    client.ping(&reg.host()).await.unwrap();
    let r = reg.reference("tok/b:1");
    TestImage::new(vec![blob(10, 4)], "amd64")
        .push(&client, &r, &[])
        .await;

    cfg.credential_overrides
        .insert(reg.host(), Credential::basic("bob", "nope"));
    let err = Client::new(cfg.clone())
        .fetch_manifest(&r)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
    assert!(
        err.to_string().contains("bob") && !err.to_string().contains("nope"),
        "{err}"
    );

    // Anonymous: the token server grants nothing, the registry refuses.
    let anonymous = Client::new(ClientConfig {
        credential_overrides: Default::default(),
        ..cfg
    });
    let err = anonymous.fetch_manifest(&r).await.unwrap_err();
    assert!(
        matches!(err, Error::AuthRequired { .. } | Error::Denied { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("lade login"), "{err}");
}

#[tokio::test]
async fn client_certificate_from_certs_d() {
    let reg = TestRegistry::start(RegistryOptions {
        tls: true,
        client_cert: true,
        client_cert_outside_certs_d: true,
        ..RegistryOptions::default()
    });
    let err = Client::new(reg.client_config())
        .ping(&reg.host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("client.cert"), "{err}");

    let (cert, key) = reg.client_cert_files().unwrap();
    let dir = reg.certs_dir().unwrap().join(reg.host());
    std::fs::copy(cert, dir.join("client.cert")).unwrap();
    std::fs::copy(key, dir.join("client.key")).unwrap();
    let client = Client::new(reg.client_config());
    client.ping(&reg.host()).await.unwrap();
    let r = reg.reference("mtls/app:1");
    let image = TestImage::new(vec![blob(50_000, 5)], "amd64");
    image.push(&client, &r, &[]).await;
    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    assert_eq!(got.manifest.bytes, image.manifest);
}

#[tokio::test]
async fn credentials_from_docker_config_and_helpers() {
    use std::os::unix::fs::PermissionsExt;
    let reg = TestRegistry::basic_tls("alice", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = reg.client_config();
    cfg.credential_overrides.clear();

    // docker's `auths` with base64 user:password
    let docker = dir.path().join("docker/config.json");
    std::fs::create_dir_all(docker.parent().unwrap()).unwrap();
    std::fs::write(
        &docker,
        format!(
            r#"{{"auths": {{"https://{}/v2/": {{"auth": "YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    cfg.credentials = lade_registry::CredentialStore::new(None, Some(docker.clone()));
    Client::new(cfg.clone()).ping(&reg.host()).await.unwrap();

    // a credential helper named by credHelpers
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-lade-test");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread url\necho \"{\\\"ServerURL\\\":\\\"$url\\\",\\\"Username\\\":\\\"alice\\\",\\\"Secret\\\":\\\"s3cret\\\"}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &docker,
        format!(r#"{{"credHelpers": {{"{}": "lade-test"}}}}"#, reg.host()),
    )
    .unwrap();
    cfg.credentials = lade_registry::CredentialStore::new(None, Some(docker.clone()))
        .with_helper_dir(bin.clone());
    Client::new(cfg.clone()).ping(&reg.host()).await.unwrap();

    // the same helper as docker's default store (credsStore)
    std::fs::write(&docker, r#"{"credsStore": "lade-test"}"#).unwrap();
    cfg.credentials = lade_registry::CredentialStore::new(None, Some(docker.clone()))
        .with_helper_dir(bin.clone());
    Client::new(cfg.clone()).ping(&reg.host()).await.unwrap();

    // a credsStore that is not installed: a clear error for the registry it serves (docker's
    // "error getting credentials"), not an anonymous attempt ending in a 401...
    std::fs::write(&docker, r#"{"credsStore": "lade-test-absent"}"#).unwrap();
    cfg.credentials = lade_registry::CredentialStore::new(None, Some(docker.clone()))
        .with_helper_dir(bin.clone());
    let err = Client::new(cfg.clone())
        .ping(&reg.host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CredentialHelper { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("docker-credential-lade-test-absent")
            && msg.contains("not installed")
            && msg.contains(&reg.host())
            && msg.contains("credsStore"),
        "{msg}"
    );
    // ...while a registry with its own (installed) helper is not affected.
    std::fs::write(
        &docker,
        format!(
            r#"{{"credsStore": "lade-test-absent", "credHelpers": {{"{}": "lade-test"}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    cfg.credentials = lade_registry::CredentialStore::new(None, Some(docker)).with_helper_dir(bin);
    Client::new(cfg.clone()).ping(&reg.host()).await.unwrap();

    // Lade's own file wins over docker's.
    let lade = dir.path().join("lade/auth.json");
    let store = lade_registry::CredentialStore::new(Some(lade.clone()), None);
    store.save(&reg.host(), "alice", "stale").unwrap();
    cfg.credentials = store;
    let err = Client::new(cfg).ping(&reg.host()).await.unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
}
