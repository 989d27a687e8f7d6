//! ECR Public against the stand-in (`tests/standin/front_public.py`): its API at
//! `api.ecr-public.us-east-1.amazonaws.com` (the SDK's default endpoint, reached through
//! `/etc/hosts`) and the registry `public.ecr.aws` with the alias `standin`. What is
//! checked: the token is sent as `Bearer` and the registry takes it, a refused token is
//! renewed once, the repository's catalog data is created and kept in step, an image
//! pushed there is confirmed by digest, and refusals say which IAM actions are missing.
//!
//! The stand-in's ECR Public switches (token lifetime, `deny_bearer`) are global, so the
//! tests that get tokens run one at a time ([`SWITCHES`]).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ecr_build_push::ecr::{CatalogChange, Ecr, EcrPublic};
use ecr_build_push::env::Environment;
use ecr_build_push::inputs::{Catalog, Platform};
use ecr_build_push::network::Network;
use ecr_build_push::registry::{Registry, RetryPolicy, Scheme, OCI_MANIFEST};
use sha2::Digest as _;
use support::{standin, unique, REGION};

/// The stand-in's switches for ECR Public are shared by every test of this file.
static SWITCHES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The environment the SDK reads, set once before any client is made.
static ENV: std::sync::Once = std::sync::Once::new();

const ALIAS: &str = "standin";

/// The ECR client as the action makes it, its ECR Public client, and the network.
async fn connect() -> (Ecr, EcrPublic, Network) {
    let standin = standin();
    ENV.call_once(|| {
        for (name, value) in &standin.env {
            if name.starts_with("AWS_") {
                std::env::set_var(name, value);
            }
        }
    });
    let env = Environment::capture(std::env::vars());
    let network = Network::from_env(&env.network, None).unwrap();
    let ecr = Ecr::connect(Some(REGION), env.ecr_endpoint.as_deref(), &network)
        .await
        .unwrap();
    let public = ecr.public(env.ecr_public_endpoint.as_deref());
    (ecr, public, network)
}

/// Sets the stand-in's ECR Public switches (`POST /public`), put back when dropped.
struct Switched;

impl Switched {
    fn set(body: &serde_json::Value) -> Self {
        standin().control("/public", Some(body));
        Self
    }
}

impl Drop for Switched {
    fn drop(&mut self) {
        standin().control(
            "/public",
            Some(&serde_json::json!({"deny_bearer": false, "token_lifetime": 43_200})),
        );
    }
}

fn catalog(description: &str) -> Catalog {
    let platforms: Vec<Platform> = ["linux/amd64", "linux/arm64"]
        .iter()
        .map(|p| Platform::parse(p).unwrap())
        .collect();
    Catalog {
        description: Some(description.to_string()),
        about: Some("# About\n\nIt runs.".to_string()),
        ..Catalog::default()
    }
    .for_platforms(&platforms)
}

/// The repository's catalog data as ECR Public returns it, read with the SDK directly.
async fn catalog_of(ecr: &Ecr, name: &str) -> aws_sdk_ecrpublic::types::RepositoryCatalogData {
    let config = aws_sdk_ecrpublic::config::Builder::from(ecr.sdk())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    aws_sdk_ecrpublic::Client::from_conf(config)
        .get_repository_catalog_data()
        .repository_name(name)
        .send()
        .await
        .unwrap()
        .catalog_data()
        .cloned()
        .unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    hash.iter().fold(String::from("sha256:"), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Pushes a one-config image manifest (no layers) under `tag`; its digest.
async fn push_image(registry: &Registry, tag: &str) -> String {
    let config = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"t":"{tag}"}}}}}}"#
    ));
    let config_digest = sha256(&config);
    registry
        .upload_small_blob(&config_digest, &config)
        .await
        .unwrap();
    let manifest = Bytes::from(
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [],
        })
        .to_string(),
    );
    let digest = sha256(&manifest);
    registry
        .put_manifest(tag, OCI_MANIFEST, manifest)
        .await
        .unwrap();
    digest
}

/// The primary alias comes from `DescribeRegistries`.
#[tokio::test]
async fn the_alias_is_the_registry_s_primary_one() {
    let (_, public, _) = connect().await;
    assert_eq!(public.aliases().await.unwrap()[0], ALIAS);
    assert!(
        public.endpoint.contains("api.ecr-public.us-east-1"),
        "{}",
        public.endpoint
    );
}

/// A new repository gets the catalog data; the same catalog again is no write; a
/// changed description is put with the fields the run did not give kept as they were;
/// with `create-repository: false` a missing repository is an error that says so.
#[tokio::test]
async fn the_repository_is_created_with_its_catalog_and_kept_in_step() {
    let (ecr, public, _) = connect().await;
    let name = unique("public-catalog");
    let first = catalog("First");
    assert_eq!(
        public.ensure_repository(&name, &first).await.unwrap(),
        CatalogChange::Created
    );
    let stored = catalog_of(&ecr, &name).await;
    assert_eq!(stored.description(), Some("First"));
    assert_eq!(stored.architectures(), ["x86-64", "ARM 64"]);
    assert_eq!(stored.operating_systems(), ["Linux"]);

    assert_eq!(
        public.ensure_repository(&name, &first).await.unwrap(),
        CatalogChange::Unchanged
    );

    let second = Catalog {
        description: Some("Second".into()),
        ..Catalog::default()
    };
    assert_eq!(
        public.ensure_repository(&name, &second).await.unwrap(),
        CatalogChange::Updated(vec!["description"])
    );
    let stored = catalog_of(&ecr, &name).await;
    assert_eq!(stored.description(), Some("Second"));
    assert_eq!(stored.about_text(), Some("# About\n\nIt runs."));
    assert_eq!(stored.architectures(), ["x86-64", "ARM 64"]);

    let missing = unique("public-missing");
    let err = public
        .ensure_repository_with(&missing, &first, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&missing) && err.contains("`create-repository` is false"),
        "{err}"
    );
}

/// The token is sent as `Bearer` and `public.ecr.aws` takes it for a push; the pushed
/// image is confirmed by digest with its tag, and found by tag. The same token as Basic
/// is refused with ECR Public's 400 `DENIED`.
#[tokio::test]
async fn a_bearer_push_to_public_ecr_aws_is_confirmed_by_digest() {
    let _one = SWITCHES.lock().await;
    let (_, public, network) = connect().await;
    let name = unique("public-push");
    public
        .ensure_repository(&name, &catalog("push"))
        .await
        .unwrap();
    let auth = public.authorization().await.unwrap();
    assert_eq!(auth.registry, "public.ecr.aws");
    assert_eq!(auth.scheme, Scheme::Bearer);
    assert!(auth.expires_at.is_some());
    let path = ecr_build_push::ecr::public::repository_path(ALIAS, &name);
    let registry = Registry::connect(&auth.login(), &path, RetryPolicy::DEFAULT, &network).unwrap();
    let digest = push_image(&registry, "v1").await;

    let tags = vec!["v1".to_string()];
    let (detail, moved) = public.confirm_digest(&name, &tags, &digest).await.unwrap();
    assert_eq!(detail.digest, digest);
    assert!(detail.tags.contains(&"v1".to_string()), "{detail:?}");
    assert!(moved.is_empty(), "{moved:?}");
    let found = public
        .existing_tags(&name, &["v1".to_string(), "absent".to_string()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].tag.as_str(), found[0].digest.as_str()),
        ("v1", digest.as_str())
    );

    let mut basic = auth.login();
    basic.credentials.scheme = Scheme::Basic;
    let refused = Registry::connect(&basic, &path, RetryPolicy::DEFAULT, &network).unwrap();
    let manifest = refused.get_manifest(&path, "v1").await.unwrap_err();
    assert_eq!(manifest.status, Some(400), "{manifest:?}");
    assert_eq!(manifest.code.as_deref(), Some("DENIED"), "{manifest:?}");
}

/// A token `public.ecr.aws` refuses once it has expired (a 400 with no body, to a
/// `HEAD`) is renewed once through `GetAuthorizationToken`, the new one masked first,
/// and the request then goes through.
#[tokio::test]
async fn an_expired_bearer_token_is_renewed_once() {
    let _one = SWITCHES.lock().await;
    let (_, public, network) = connect().await;
    let name = unique("public-renew");
    public
        .ensure_repository(&name, &catalog("renew"))
        .await
        .unwrap();
    let _short = Switched::set(&serde_json::json!({"token_lifetime": 1}));
    let mut auth = public.authorization().await.unwrap();
    let masked = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = masked.clone();
    auth.renew = Some(public.token_renewal(move |secret| {
        seen.lock().unwrap().push(secret.to_string());
    }));
    let path = ecr_build_push::ecr::public::repository_path(ALIAS, &name);
    let registry = Registry::connect(&auth.login(), &path, RetryPolicy::DEFAULT, &network).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let absent = sha256(b"no such blob");
    let found = registry
        .with_retry("HEAD of a blob", || registry.has_blob(&absent))
        .await
        .map_err(|(failure, _)| failure.describe())
        .unwrap();
    assert!(!found);
    let masked = masked.lock().unwrap();
    assert_eq!(masked.len(), 2, "the new token and its password are masked");
    assert_ne!(masked[0], auth.token.expose());
}

/// Without `sts:GetServiceBearerToken`, the token request fails naming both IAM
/// actions ECR Public's token needs.
#[tokio::test]
async fn a_refused_token_request_names_both_iam_actions() {
    let _one = SWITCHES.lock().await;
    let (_, public, _) = connect().await;
    let _denied = Switched::set(&serde_json::json!({"deny_bearer": true}));
    let err = format!("{:#}", public.authorization().await.unwrap_err());
    assert!(err.contains("AccessDeniedException"), "{err}");
    assert!(
        err.contains("ecr-public:GetAuthorizationToken")
            && err.contains("sts:GetServiceBearerToken"),
        "{err}"
    );
}
