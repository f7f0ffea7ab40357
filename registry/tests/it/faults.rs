//! Failures between client and registry, injected by a proxy in front of the real registry:
//! connections cut or stalled mid-layer, 5xx and 429 answers, redirects to another host.

use std::time::{Duration, Instant};

use lade_registry::testing::{Fault, FaultAction, FaultProxy, TestRegistry, TokenServer};
use lade_registry::{Client, ClientConfig, Credential, Error, Platform, ProgressFn, RetryPolicy};

use crate::common::{blob, recorder, TestImage};

/// A registry with one 2 MiB-layer image, and a proxy in front of it.
async fn setup(repo: &str) -> (TestRegistry, FaultProxy, TestImage) {
    let reg = TestRegistry::plain();
    let image = TestImage::new(vec![blob(2 << 20, 7), blob(1000, 8)], "amd64");
    image
        .push(&Client::new(reg.client_config()), &reg.reference(repo), &[])
        .await;
    let proxy = FaultProxy::start(reg.addr());
    (reg, proxy, image)
}

fn via(proxy: &FaultProxy, repo: &str) -> lade_registry::Reference {
    lade_registry::Reference::parse(&format!("{}/{repo}", proxy.host())).unwrap()
}

#[tokio::test]
async fn connection_cut_mid_layer_is_resumed_with_range() {
    let (reg, proxy, image) = setup("cut/app:1").await;
    proxy.add(Fault::cut("GET", "/blobs/sha256:", 300_000, 1));
    let client = Client::new(reg.client_config());
    let r = via(&proxy, "cut/app:1");
    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    let (progress, events) = recorder();
    let mut sink = Vec::new();
    client
        .fetch_blob(&r, &got.image.layers[0], &mut sink, &progress)
        .await
        .unwrap();
    assert!(sink == image.layers[0], "byte-identical after the resume");
    let blob_gets: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|q| q.method == "GET" && q.path.contains("/blobs/"))
        .collect();
    assert_eq!(blob_gets.len(), 2, "{blob_gets:?}");
    assert!(matches!(blob_gets[0].fault, Some(FaultAction::Cut { .. })));
    let range = blob_gets[1]
        .header("range")
        .expect("the retry asks for the rest");
    let from: u64 = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 300_000, "{range}");
    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with(&format!("retrying {from}"))),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap(), &format!("finished {}", 2 << 20));
}

#[tokio::test]
async fn a_registry_that_keeps_cutting_gives_a_clear_error_not_a_hang() {
    let (reg, proxy, _image) = setup("cut/always:1").await;
    proxy.add(Fault::cut("GET", "/blobs/sha256:", 100_000, 1000));
    let client = Client::new(reg.client_config());
    let r = via(&proxy, "cut/always:1");
    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    let mut sink = Vec::new();
    let err = client
        .fetch_blob(&r, &got.image.layers[0], &mut sink, &ProgressFn::none())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 4, .. }),
        "{err}"
    );
    // Each attempt resumed where the last stopped, so progress was made before giving up.
    let ranges = proxy
        .requests()
        .iter()
        .filter(|q| q.header("range").is_some())
        .count();
    assert_eq!(ranges, 3);
}

#[tokio::test]
async fn a_stalled_transfer_times_out_and_resumes() {
    let (reg, proxy, image) = setup("stall/app:1").await;
    proxy.add(Fault::stall("GET", "/blobs/sha256:", 200_000, 1));
    let client = Client::new(ClientConfig {
        read_timeout: Duration::from_secs(1),
        ..reg.client_config()
    });
    let r = via(&proxy, "stall/app:1");
    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    let mut sink = Vec::new();
    client
        .fetch_blob(&r, &got.image.layers[0], &mut sink, &ProgressFn::none())
        .await
        .unwrap();
    assert!(sink == image.layers[0]);
    assert_eq!(proxy.faults_applied(), 1);
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried() {
    let (reg, proxy, image) = setup("flaky/app:1").await;
    proxy.add(Fault::status("GET", "/manifests/", 503, 2));
    proxy.add(Fault::status("GET", "/blobs/sha256:", 429, 1).retry_after(1));
    proxy.add(Fault::status("GET", "/blobs/sha256:", 502, 1));
    let client = Client::new(reg.client_config());
    let r = via(&proxy, "flaky/app:1");
    let started = Instant::now();
    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    let bytes = client
        .fetch_blob_bytes(&r, &got.image.layers[1], 1 << 20)
        .await
        .unwrap();
    assert_eq!(bytes, image.layers[1]);
    assert_eq!(proxy.faults_applied(), 4);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was respected"
    );
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_bounded_attempts() {
    let (reg, proxy, _image) = setup("down/app:1").await;
    proxy.add(Fault::status("GET", "/manifests/", 500, 1000));
    let client = Client::new(ClientConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        },
        ..reg.client_config()
    });
    let err = client
        .fetch_manifest(&via(&proxy, "down/app:1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("500"), "{err}");
    assert_eq!(proxy.faults_applied(), 3);
}

#[tokio::test]
async fn interrupted_uploads_start_again_cleanly() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(reg.addr());
    // The first PUT of the blob is refused with 503: the whole upload restarts.
    proxy.add(Fault::status("PUT", "/blobs/uploads/", 503, 1));
    let client = Client::new(reg.client_config());
    let r = via(&proxy, "up/app:1");
    let image = TestImage::new(vec![blob(400_000, 9)], "amd64");
    image.push(&client, &r, &[]).await;
    assert_eq!(proxy.faults_applied(), 1);
    let direct = Client::new(reg.client_config());
    let got = direct
        .resolve_image(&reg.reference("up/app:1"), &Platform::default())
        .await
        .unwrap();
    let layer = direct
        .fetch_blob_bytes(&reg.reference("up/app:1"), &got.image.layers[0], 1 << 20)
        .await
        .unwrap();
    assert_eq!(layer, image.layers[0]);
}

#[tokio::test]
async fn redirects_to_storage_do_not_carry_credentials() {
    // An authenticated registry whose blob GETs redirect to "storage": another origin (a
    // second, anonymous registry holding the same blob, behind its own proxy).
    let tokens = TokenServer::start("bob", "hunter2");
    let reg = TestRegistry::token(&tokens);
    let mut cfg = reg.client_config();
    cfg.credential_overrides
        .insert(reg.host(), Credential::basic("bob", "hunter2"));
    let image = TestImage::new(vec![blob(500_000, 12)], "amd64");
    let client = Client::new(cfg.clone());
    image
        .push(&client, &reg.reference("redir/app:1"), &[])
        .await;
    let storage_reg = TestRegistry::plain();
    image
        .push(
            &Client::new(storage_reg.client_config()),
            &storage_reg.reference("redir/app:1"),
            &[],
        )
        .await;
    let storage = FaultProxy::start(storage_reg.addr());
    let front = FaultProxy::start(reg.addr());
    front.add(Fault::redirect(
        "GET",
        "/blobs/sha256:",
        &format!("http://{}{{path}}", storage.host()),
        1,
    ));
    cfg.credential_overrides
        .insert(front.host(), Credential::basic("bob", "hunter2"));
    let client = Client::new(cfg);
    let r = via(&front, "redir/app:1");
    let got = client
        .resolve_image(&r, &Platform::default())
        .await
        .unwrap();
    let layer = client
        .fetch_blob_bytes(&r, &got.image.layers[0], 1 << 20)
        .await
        .unwrap();
    assert_eq!(layer, image.layers[0]);
    let redirected = front
        .requests()
        .into_iter()
        .find(|q| q.fault.is_some())
        .unwrap();
    assert!(redirected
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));
    let at_storage: Vec<_> = storage.requests();
    assert_eq!(at_storage.len(), 1, "{at_storage:?}");
    assert!(
        at_storage[0].header("authorization").is_none(),
        "credentials leaked to {}",
        storage.host()
    );
}
