//! `lade login` / `lade logout` against the real registry (htpasswd behind TLS, and token auth).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use lade_registry::testing::{TestRegistry, TokenServer};

use crate::common::lade;

/// `lade` with config dirs inside `home`, the registry's CA trusted, `stdin` fed.
fn run(home: &Path, reg: &TestRegistry, args: &[&str], stdin: &str) -> Output {
    let mut cmd: Command = lade();
    cmd.args(args)
        .env("HOME", home)
        .env("LADE_CONFIG", home.join("lade"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("LADE_INSECURE_REGISTRIES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match reg.certs_dir() {
        Some(d) => cmd.env("LADE_CERTS_DIR", d),
        None => cmd.env_remove("LADE_CERTS_DIR"),
    };
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn auth_file(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join("lade/auth.json")).unwrap()).unwrap()
}

#[test]
fn login_checks_then_saves_and_logout_removes() {
    let reg = TestRegistry::basic_tls("alice", "s3cret");
    let home = tempfile::tempdir().unwrap();
    let host = reg.host();
    let out = run(
        home.path(),
        &reg,
        &["login", "-u", "alice", "--password-stdin", &host],
        "s3cret\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Login Succeeded\n");
    let path = home.path().join("lade/auth.json");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        auth_file(home.path())["auths"][&host]["auth"],
        "YWxpY2U6czNjcmV0"
    );
    assert!(!text(&out.stderr).contains("s3cret"));
    // The verification really went through the registry's auth.
    assert!(reg
        .access_log()
        .iter()
        .any(|e| e.path == "/v2/" && e.status == 200));

    // What was saved authenticates the registry client.
    let saved = lade_registry::ClientConfig {
        credentials: lade_registry::CredentialStore::new(Some(path.clone()), None),
        certs_dirs: reg.certs_dir().into_iter().collect(),
        ..lade_registry::ClientConfig::default()
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(lade_registry::Client::new(saved).ping(&host))
        .unwrap();

    let out = run(
        home.path(),
        &reg,
        &["logout", &format!("https://{host}/")],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Removing login credentials for {host}\n")
    );
    assert!(auth_file(home.path())["auths"].get(&host).is_none());
    let out = run(home.path(), &reg, &["logout", &host], "");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), format!("Not logged in to {host}\n"));
}

#[test]
fn wrong_password_is_refused_and_nothing_is_saved() {
    let reg = TestRegistry::basic_tls("alice", "s3cret");
    let home = tempfile::tempdir().unwrap();
    let host = reg.host();
    let out = run(
        home.path(),
        &reg,
        &["login", "-u", "alice", "--password-stdin", &host],
        "guess-x7\n",
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("login to {host} failed"))
            && err.contains("wrong user name or password"),
        "{err}"
    );
    assert!(!err.contains("guess-x7"), "{err}");
    assert!(!home.path().join("lade/auth.json").exists());

    // No password at all, stdin not a terminal: a clear error, no prompt.
    let out = run(home.path(), &reg, &["login", "-u", "alice", &host], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--password-stdin"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn untrusted_tls_fails_with_a_hint() {
    let reg = TestRegistry::basic_tls("alice", "s3cret");
    let home = tempfile::tempdir().unwrap();
    let out = lade()
        .args(["login", "-u", "alice", "-p", "s3cret", &reg.host()])
        .env("HOME", home.path())
        .env("LADE_CONFIG", home.path().join("lade"))
        .env("DOCKER_CONFIG", home.path().join("docker"))
        .env_remove("LADE_CERTS_DIR")
        .env_remove("LADE_INSECURE_REGISTRIES")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("password on the command line"), "{err}");
    assert!(
        err.contains("certs.d") && err.contains("--insecure-registry"),
        "{err}"
    );
    assert!(!home.path().join("lade/auth.json").exists());

    // Opting out of verification for this registry works (docker's insecure-registries).
    let out = lade()
        .args([
            "login",
            "-u",
            "alice",
            "-p",
            "s3cret",
            "--insecure-registry",
            &reg.host(),
            &reg.host(),
        ])
        .env("HOME", home.path())
        .env("LADE_CONFIG", home.path().join("lade"))
        .env("DOCKER_CONFIG", home.path().join("docker"))
        .env_remove("LADE_CERTS_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn login_with_token_auth_keeps_other_entries() {
    let tokens = TokenServer::start("bob", "hunter2");
    let reg = TestRegistry::token(&tokens);
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("lade")).unwrap();
    std::fs::write(
        home.path().join("lade/auth.json"),
        r#"{"auths": {"other.example": {"auth": "eDp5"}}}"#,
    )
    .unwrap();
    let out = run(
        home.path(),
        &reg,
        &["login", "--username=bob", "--password-stdin", &reg.host()],
        "hunter2",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc = auth_file(home.path());
    assert_eq!(doc["auths"]["other.example"]["auth"], "eDp5");
    assert!(doc["auths"][reg.host().as_str()]["auth"].is_string());
    assert!(tokens
        .requests()
        .iter()
        .any(|t| t.user.as_deref() == Some("bob") && t.status == 200));

    let out = run(
        home.path(),
        &reg,
        &["login", "-u", "bob", "--password-stdin", &reg.host()],
        "nope",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("rejected user \"bob\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn logout_mentions_docker_credentials_lade_still_reads() {
    let reg = TestRegistry::plain();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("docker")).unwrap();
    std::fs::write(
        home.path().join("docker/config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "eDp5"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let out = run(home.path(), &reg, &["logout", &reg.host()], "");
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("docker logout"),
        "{}",
        text(&out.stderr)
    );
}
