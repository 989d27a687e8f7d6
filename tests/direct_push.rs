//! The direct push (`engine::direct`) against the stand-in registry and the real Docker
//! daemon: what it pushes pulls and runs as the same image, a repeat push uploads
//! nothing, the gzip it writes is the original layer, layers of an image already in the
//! registry are reused (found or mounted) without compressing, retried parts give the same
//! image, refusals are final. Its speed against `docker push` is measured by `scripts/bench`.

mod support;

use std::io::Read as _;
use std::process::Command;

use ecr_build_push::ecr::{RegistryAuth, Secret};
use ecr_build_push::engine::{Engine, ImageStore};
use ecr_build_push::env::DockerEnv;
use ecr_build_push::publish::{
    self, manifest, DirectOptions, DirectPushError, DirectPushed, PushedManifest,
};
use ecr_build_push::registry::RetryPolicy;
use ecr_build_push::registry::{BlobBody, Registry, OCI_INDEX, OCI_MANIFEST};
use sha2::Digest as _;
use support::{docker, standin, unique};

/// The stand-in registry's login, as `GetAuthorizationToken` hands it out.
fn auth() -> RegistryAuth {
    auth_with(standin().password.clone())
}

/// The login of `password` (one the front issued to some access key).
fn auth_with(password: String) -> RegistryAuth {
    use base64::Engine as _;
    let standin = standin();
    RegistryAuth {
        registry: standin.registry.clone(),
        username: "AWS".to_string(),
        token: Secret::new(
            base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}")),
        ),
        password: Secret::new(password),
        expires_at: None,
        renew: None,
        scheme: ecr_build_push::registry::Scheme::Basic,
    }
}

/// The engine the tests run on: `DOCKER_HOST`'s (default: the stand-in's main engine),
/// reached as the action reaches it, so its image store is known.
async fn engine() -> Engine {
    let host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
    Engine::connect(&DockerEnv {
        host,
        ..DockerEnv::default()
    })
    .await
    .expect("the Docker engine")
}

/// Builds `dockerfile` as `tag` and returns the image ID.
fn build(tag: &str, dockerfile: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    docker(&["build", "-q", "-t", tag, &dir.path().to_string_lossy()]);
    docker(&["image", "inspect", "-f", "{{.Id}}", tag])
}

async fn push(
    image_id: &str,
    repository: &str,
    tags: &[&str],
    retry: RetryPolicy,
) -> Result<DirectPushed, DirectPushError> {
    push_reusing(image_id, repository, tags, retry, &[]).await.0
}

/// [`push`] with `reuse_from` images; also returns the progress lines.
async fn push_reusing(
    image_id: &str,
    repository: &str,
    tags: &[&str],
    retry: RetryPolicy,
    reuse_from: &[String],
) -> (Result<DirectPushed, DirectPushError>, Vec<String>) {
    push_reusing_as(auth(), image_id, repository, tags, retry, reuse_from).await
}

/// [`push_reusing`] logged in as `auth`.
async fn push_reusing_as(
    auth: RegistryAuth,
    image_id: &str,
    repository: &str,
    tags: &[&str],
    retry: RetryPolicy,
    reuse_from: &[String],
) -> (Result<DirectPushed, DirectPushError>, Vec<String>) {
    let tags: Vec<String> = tags.iter().map(ToString::to_string).collect();
    let options = DirectOptions {
        reuse_from: reuse_from.to_vec(),
        ..DirectOptions::default()
    };
    let mut lines = Vec::new();
    let result = publish::push(
        &engine().await,
        image_id,
        repository,
        &tags,
        &auth.login(),
        retry,
        &options,
        |line| {
            eprintln!("{line}");
            lines.push(line.to_string());
        },
    )
    .await;
    (result, lines)
}

/// GETs `/v2/<repository>/<rest>` from the registry with the ECR login, following a
/// blob's redirect to S3 (where curl, as ECR requires, sends no credentials).
fn registry_get(repository: &str, rest: &str, accept: &str) -> Vec<u8> {
    let s = standin();
    let out = Command::new("curl")
        .args(["-sSfL", "--cacert"])
        .arg(&s.ca_cert)
        .args(["-u", &format!("AWS:{}", s.password)])
        .args(["-H", &format!("Accept: {accept}")])
        .arg(format!("https://{}/v2/{repository}/{rest}", s.registry))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "GET {rest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const ALL_MANIFESTS: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.index.v1+json";

/// The image manifest of `repository:reference` for `linux/amd64`-style `platform`
/// (`os/architecture`): the manifest itself, or its entry in an index.
fn platform_manifest(repository: &str, reference: &str, platform: &str) -> serde_json::Value {
    let manifest: serde_json::Value = serde_json::from_slice(&registry_get(
        repository,
        &format!("manifests/{reference}"),
        ALL_MANIFESTS,
    ))
    .unwrap();
    let Some(entries) = manifest["manifests"].as_array() else {
        return manifest;
    };
    let entry = entries
        .iter()
        .find(|e| {
            format!(
                "{}/{}",
                e["platform"]["os"].as_str().unwrap_or_default(),
                e["platform"]["architecture"].as_str().unwrap_or_default()
            ) == platform
        })
        .unwrap_or_else(|| panic!("no {platform} in {manifest}"));
    let digest = entry["digest"].as_str().unwrap();
    serde_json::from_slice(&registry_get(
        repository,
        &format!("manifests/{digest}"),
        ALL_MANIFESTS,
    ))
    .unwrap()
}

/// The engine's own image manifest of `image_id` on the containerd store, read from
/// `docker save` (an OCI layout): its digest and bytes. An image stored as an index
/// (a build with attestations) gives the entry that is not an attestation.
fn stored_manifest(image_id: &str) -> (String, Vec<u8>) {
    let out = support::docker_output(&["save", image_id]);
    assert!(out.status.success(), "docker save {image_id}");
    let mut files = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(&out.stdout[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if entry.size() < 1 << 20 {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
    }
    let blob = |digest: &str| files[&format!("blobs/{}", digest.replace(':', "/"))].clone();
    let mut digest = image_id.to_string();
    loop {
        let bytes = blob(&digest);
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let Some(entries) = parsed["manifests"].as_array() else {
            return (digest, bytes);
        };
        digest = entries
            .iter()
            .find(|e| e["annotations"]["vnd.docker.reference.type"].is_null())
            .and_then(|e| e["digest"].as_str())
            .expect("an image manifest in the index")
            .to_string();
    }
}

fn sha256(data: &[u8]) -> String {
    let hash = sha2::Sha256::digest(data);
    hash.iter().fold(String::from("sha256:"), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Pushes `image_id`, removes the local tags, pulls by digest, and checks that the pulled
/// image is the same image (same ID) and runs.
async fn push_pull_run(local_tag: &str, image_id: &str, expect_output: &str) {
    let s = standin();
    let repository = unique("direct-pull");
    s.create_repository(&repository, "MUTABLE");
    let pushed = push(
        image_id,
        &repository,
        &["v1", "latest"],
        RetryPolicy::DEFAULT,
    )
    .await
    .expect("direct push");
    for tag in ["v1", "latest"] {
        assert_eq!(
            s.registry_digest(&repository, tag).as_deref(),
            Some(pushed.digest.as_str()),
            "registry digest of {tag}"
        );
        assert_eq!(
            s.moto_digest(&repository, tag).as_deref(),
            Some(pushed.digest.as_str()),
            "moto's digest of {tag}"
        );
    }
    assert_eq!(sha256(pushed.manifest.as_bytes()), pushed.digest);
    assert_eq!(pushed.skipped_blobs, 0);
    s.assert_single_image_manifest(&repository, "v1");
    // The ID the pulled image must have: the config on the classic store; on the
    // containerd store the engine's image manifest (the built image's ID is its index
    // when the build added an attestation, as `docker build` does there).
    let pulled_id = match engine().await.store {
        ImageStore::Classic => image_id.to_string(),
        ImageStore::Containerd => {
            let (digest, bytes) = stored_manifest(image_id);
            assert_eq!(
                pushed.digest, digest,
                "on the containerd store the pushed digest is the engine's manifest digest"
            );
            assert_eq!(pushed.manifest.as_bytes(), bytes, "byte for byte");
            digest
        }
    };
    docker(&["rmi", local_tag]);
    let reference = format!("{}/{repository}@{}", s.registry, pushed.digest);
    s.docker_pull(&reference);
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Id}}", &reference]),
        pulled_id,
        "the pulled image is the built image"
    );
    let output = docker(&["run", "--rm", &reference]);
    assert!(output.contains(expect_output), "{output}");
    docker(&["rmi", &reference]);
}

/// A one-layer-on-busybox image pushed directly pulls by digest, has the built image's
/// ID, and runs; both tags and moto carry the returned digest.
#[tokio::test(flavor = "multi_thread")]
async fn small_image_pulls_and_runs() {
    let tag = format!("{}:1", unique("local/direct-small"));
    let id = build(
        &tag,
        "FROM local/busybox:latest\nRUN echo hello-direct > /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n",
    );
    push_pull_run(&tag, &id, "hello-direct").await;
}

/// A multi-layer image (text, an incompressible 3 MB layer, a tiny layer) pushed directly
/// pulls by digest as the same image and runs.
#[tokio::test(flavor = "multi_thread")]
async fn multi_layer_image_pulls_and_runs() {
    let tag = format!("{}:1", unique("local/direct-multi"));
    let marker = unique("m");
    let id = build(
        &tag,
        &format!(
            "FROM local/busybox:latest\nRUN echo {marker} > /one.txt\nRUN seq 1 300000 > /seq.txt\n\
             RUN head -c 3000000 /dev/urandom > /rand.bin\nRUN echo three > /three.txt\n\
             CMD [\"sh\", \"-c\", \"cat /one.txt /three.txt; wc -l < /seq.txt\"]\n"
        ),
    );
    push_pull_run(&tag, &id, &format!("{marker}\nthree\n300000")).await;
}

/// A new one-layer image on busybox, pushed as `v1` to a new repository named after
/// `name`: its local tag, ID, repository, and the push.
async fn one_layer_image_pushed(name: &str) -> (String, String, String, DirectPushed) {
    let tag = format!("{}:1", unique(&format!("local/direct-{name}")));
    let id = build(
        &tag,
        &format!(
            "FROM local/busybox:latest\nRUN echo {} > /x\n",
            unique(name)
        ),
    );
    let repository = unique(&format!("direct-{name}"));
    standin().create_repository(&repository, "MUTABLE");
    let first = push(&id, &repository, &["v1"], RetryPolicy::DEFAULT)
        .await
        .unwrap();
    (tag, id, repository, first)
}

/// A second push of the same image finds every blob in the repository (HEAD hits) and
/// uploads nothing, with the same digest.
#[tokio::test(flavor = "multi_thread")]
async fn second_push_skips_every_blob() {
    let (tag, id, repository, first) = one_layer_image_pushed("again").await;
    assert!(first.uploaded_bytes > 0);
    let second = push(&id, &repository, &["v2"], RetryPolicy::DEFAULT)
        .await
        .unwrap();
    assert_eq!(second.digest, first.digest);
    assert_eq!(second.uploaded_bytes, 0);
    assert_eq!(second.skipped_blobs, 3, "two layers and the config");
    docker(&["rmi", &tag]);
}

/// A second push of an image whose layers and config the repository has (a rerun) reads
/// nothing from the daemon: no export, no compression, no upload, the same digest.
#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_with_everything_in_the_repository_exports_nothing() {
    let s = standin();
    let (tag, id, repository, first) = one_layer_image_pushed("rerun").await;
    let previous = format!("{}/{repository}:v1", s.registry);
    let (second, lines) =
        push_reusing(&id, &repository, &["v2"], RetryPolicy::DEFAULT, &[previous]).await;
    let second = second.expect("direct push");
    assert_eq!(second.digest, first.digest);
    assert_eq!(second.uploaded_bytes, 0);
    assert_eq!(second.reused_layers, 2, "{lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("Compressed") || l.contains("export")),
        "{lines:#?}"
    );
    assert_eq!(
        s.registry_digest(&repository, "v2").as_deref(),
        Some(first.digest.as_str())
    );
    docker(&["rmi", &tag]);
}

/// Every uploaded layer is one valid gzip stream that decompresses to the original layer:
/// its sha256 is the config's `diff_id`; the config blob is the image config (ID).
#[tokio::test(flavor = "multi_thread")]
async fn uploaded_layers_decompress_to_their_diff_ids() {
    let s = standin();
    let tag = format!("{}:1", unique("local/direct-gzip"));
    // More than one compression chunk and more than one upload part.
    let id = build(
        &tag,
        "FROM local/busybox:latest\nRUN seq 1 3000000 > /seq.txt && head -c 8000000 /dev/urandom > /r\n",
    );
    let repository = unique("direct-gzip");
    s.create_repository(&repository, "MUTABLE");
    let pushed = push(&id, &repository, &["v1"], RetryPolicy::DEFAULT)
        .await
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&pushed.manifest).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    match engine().await.store {
        ImageStore::Classic => assert_eq!(config_digest, id, "the image ID is the config"),
        ImageStore::Containerd => assert_eq!(
            pushed.digest,
            stored_manifest(&id).0,
            "the engine's manifest"
        ),
    }
    let config: serde_json::Value = serde_json::from_slice(&registry_get(
        &repository,
        &format!("blobs/{config_digest}"),
        "*/*",
    ))
    .unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let digest = layer["digest"].as_str().unwrap();
        let blob = registry_get(&repository, &format!("blobs/{digest}"), "*/*");
        assert_eq!(sha256(&blob), digest);
        assert_eq!(blob.len() as u64, layer["size"].as_u64().unwrap());
        // A single-member decoder must read the whole layer: one gzip member.
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut raw)
            .expect("valid gzip");
        assert_eq!(&sha256(&raw), diff_id.as_str().unwrap());
    }
    assert!(layers.len() >= 2);
    docker(&["rmi", &tag]);
}

/// A base image pushed to `repository` by the daemon (its own gzip, so digests our
/// compressor would never produce), and an image built on it with one more layer.
/// Returns the base's reference, its manifest, and the app image's local tag and ID.
fn daemon_pushed_base_and_app(repository: &str) -> (String, serde_json::Value, String, String) {
    let s = standin();
    let marker = unique("base");
    let base = format!("{}/{repository}:base", s.registry);
    let base_id = build(
        &base,
        &format!(
            "FROM local/busybox:latest\nRUN echo {marker} > /base.txt && seq 1 400000 > /seq\n"
        ),
    );
    s.docker_push(&base);
    // On the containerd store the daemon pushes the build's index (with its attestation).
    let platform = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Os}}/{{.Architecture}}",
        &base_id,
    ]);
    let manifest = platform_manifest(repository, "base", &platform);
    let app = format!("{}:1", unique("local/direct-app"));
    let id = build(
        &app,
        &format!("FROM {base}\nRUN echo app-on-base > /app.txt\nCMD [\"cat\", \"/base.txt\", \"/app.txt\"]\n"),
    );
    (base, manifest, app, id)
}

/// Pulls `repository@digest` and checks the output of running it.
fn pull_and_run(repository: &str, digest: &str, expect: &str) {
    let s = standin();
    let reference = format!("{}/{repository}@{digest}", s.registry);
    s.docker_pull(&reference);
    let output = docker(&["run", "--rm", &reference]);
    assert!(output.contains(expect), "{output}");
    docker(&["rmi", &reference]);
}

/// An image built on a base that the daemon pushed to the same repository: the base's
/// layers are found by their `diff_ids` in the base's manifest and config, confirmed by
/// `HEAD`, and neither compressed nor uploaded (only the new layer is), and the manifest
/// lists the daemon's blobs; the image pulls and runs. Pins the cost that made every
/// push recompress an unchanged base.
#[tokio::test(flavor = "multi_thread")]
async fn layers_of_an_image_in_the_repository_are_not_recompressed() {
    let s = standin();
    let repository = unique("direct-reuse");
    s.create_repository(&repository, "MUTABLE");
    let (base, base_manifest, app, id) = daemon_pushed_base_and_app(&repository);
    let (pushed, lines) = push_reusing(
        &id,
        &repository,
        &["v1"],
        RetryPolicy::DEFAULT,
        &[format!("{}/{repository}:missing", s.registry), base.clone()],
    )
    .await;
    let pushed = pushed.expect("direct push");
    assert_eq!(pushed.reused_layers, 2, "{lines:#?}");
    let compressed = lines.iter().filter(|l| l.contains(": Compressed ")).count();
    let expected = match engine().await.store {
        ImageStore::Classic => 1,
        // Stored compressed: nothing is compressed on the way.
        ImageStore::Containerd => 0,
    };
    assert_eq!(
        compressed, expected,
        "only the new layer is compressed: {lines:#?}"
    );
    let sent = lines.iter().filter(|l| l.contains(": Pushed ")).count();
    assert_eq!(
        sent, 2,
        "only the new layer and the config are sent: {lines:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("not compressed"))
            .count(),
        2,
        "{lines:#?}"
    );
    let manifest: serde_json::Value = serde_json::from_str(&pushed.manifest).unwrap();
    let digests = |m: &serde_json::Value| -> Vec<String> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(digests(&manifest)[..2], digests(&base_manifest)[..]);
    docker(&["rmi", &app, &base]);
    pull_and_run(&repository, &pushed.digest, "app-on-base");
}

/// The same image pushed to another repository: the base's layers are mounted from the
/// base's repository instead of uploaded, the base's config is read through a redirect
/// that must be followed without the registry's credentials (as ECR redirects blob GETs
/// to S3, which refuses a second credential), and the image pulls and runs from there.
#[tokio::test(flavor = "multi_thread")]
async fn layers_of_an_image_in_another_repository_are_mounted() {
    let s = standin();
    let source = unique("direct-mount-src");
    s.create_repository(&source, "MUTABLE");
    let (base, base_manifest, app, id) = daemon_pushed_base_and_app(&source);
    let config = base_manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v2/{source}/blobs/{config}");
    add_fault(
        &serde_json::json!({"route": "registry", "mode": "redirect", "method": "GET",
        "path": path}),
    );
    let target = unique("direct-mount-dst");
    s.create_repository(&target, "MUTABLE");
    // An account view of its own, with ECR's BLOB_MOUNTING on (off by default).
    let key = support::own_access_key();
    s.set_blob_mounting(&key, true);
    let (pushed, lines) = push_reusing_as(
        auth_with(s.password_for(&key)),
        &id,
        &target,
        &["v1"],
        RetryPolicy::DEFAULT,
        std::slice::from_ref(&base),
    )
    .await;
    let pushed = pushed.expect("direct push");
    assert_eq!(
        pending_for(&path),
        0,
        "the config was read through the redirect"
    );
    assert_eq!(pushed.reused_layers, 2, "{lines:#?}");
    assert_eq!(pushed.mounted_blobs, 2, "{lines:#?}");
    let mounted = format!("Mounted from {source}");
    assert_eq!(
        lines.iter().filter(|l| l.contains(&mounted)).count(),
        2,
        "{lines:#?}"
    );
    docker(&["rmi", &app, &base]);
    pull_and_run(&target, &pushed.digest, "app-on-base");
}

fn add_fault(rule: &serde_json::Value) {
    let out = Command::new("curl")
        .args(["-sSf", "-X", "POST", &format!("{}/faults", faults_url())])
        .args(["--data-binary", &rule.to_string()])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "add fault: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn faults_url() -> String {
    standin()
        .env
        .iter()
        .find(|(k, _)| k == "STANDIN_FAULTS_URL")
        .map(|(_, v)| v.clone())
        .expect("STANDIN_FAULTS_URL")
}

/// Pending fault rules that name `path`.
fn pending_for(path: &str) -> usize {
    let out = Command::new("curl")
        .args(["-sSf", &format!("{}/faults", faults_url())])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    state["pending"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(path)))
        .count()
}

/// Part uploads that fail (two 503s, then a connection reset) are retried, and the image
/// pushed is the same, digest for digest, as a push without faults.
#[tokio::test(flavor = "multi_thread")]
async fn retried_part_uploads_give_the_same_digest() {
    let s = standin();
    let tag = format!("{}:1", unique("local/direct-retry"));
    let id = build(
        &tag,
        &format!(
            "FROM local/busybox:latest\nRUN echo {} > /m && seq 1 2500000 > /seq.txt\n",
            unique("retry")
        ),
    );
    let clean = unique("direct-clean");
    s.create_repository(&clean, "MUTABLE");
    let reference = push(&id, &clean, &["v1"], RetryPolicy::DEFAULT)
        .await
        .unwrap();

    let faulty = unique("direct-faulty");
    s.create_repository(&faulty, "MUTABLE");
    let path = format!("/v2/{faulty}/");
    add_fault(
        &serde_json::json!({"route": "registry", "mode": "status", "status": 503,
        "count": 2, "method": "PATCH", "path": path}),
    );
    add_fault(&serde_json::json!({"route": "registry", "mode": "reset",
        "count": 1, "method": "PATCH", "path": path}));
    let pushed = push(&id, &faulty, &["v1"], RetryPolicy::DEFAULT.without_delays())
        .await
        .expect("the push succeeds after retries");
    assert_eq!(pending_for(&faulty), 0, "every fault was hit");
    assert_eq!(pushed.digest, reference.digest);
    assert_eq!(
        s.registry_digest(&faulty, "v1").as_deref(),
        Some(pushed.digest.as_str())
    );
    docker(&["rmi", &tag]);
}

/// A manifest PUT answered 503 is retried; a repository that does not exist is a final
/// refusal (one attempt) whose error names the registry, the repository, the blob and the
/// status, and never the password.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_final_and_errors_are_clean() {
    let s = standin();
    let tag = format!("{}:1", unique("local/direct-refuse"));
    let id = build(
        &tag,
        &format!(
            "FROM local/busybox:latest\nRUN echo {} > /x\n",
            unique("refuse")
        ),
    );
    let missing = unique("direct-missing");
    let err = push(&id, &missing, &["v1"], RetryPolicy::DEFAULT)
        .await
        .expect_err("no such repository");
    let text = format!("{err} {err:?}");
    assert!(text.contains(&missing), "{text}");
    assert!(text.contains(&s.registry), "{text}");
    assert!(text.contains("NAME_UNKNOWN"), "{text}");
    assert!(text.contains("HTTP 404"), "{text}");
    assert!(!text.contains("after"), "not retried: {text}");
    assert!(!text.contains(&s.password), "{text}");
    let auth = auth();
    assert!(!format!("{auth:?}").contains(&s.password));

    let repository = unique("direct-manifest");
    s.create_repository(&repository, "MUTABLE");
    add_fault(
        &serde_json::json!({"route": "registry", "mode": "status", "status": 503,
        "count": 1, "method": "PUT", "path": format!("/v2/{repository}/manifests/")}),
    );
    let pushed = push(
        &id,
        &repository,
        &["v1"],
        RetryPolicy::DEFAULT.without_delays(),
    )
    .await
    .expect("manifest retried");
    assert_eq!(
        s.registry_digest(&repository, "v1").as_deref(),
        Some(pushed.digest.as_str())
    );
    docker(&["rmi", &tag]);
}

/// Uploads `data` as a blob of `reg`'s repository; returns its digest.
async fn put_blob(reg: &Registry, data: &[u8]) -> String {
    let digest = sha256(data);
    let location = reg.start_upload().await.expect("start an upload");
    let body = BlobBody::Memory(bytes::Bytes::copy_from_slice(data));
    let location = reg
        .patch_whole(&location, &body, data.len() as u64)
        .await
        .expect("upload a blob");
    reg.complete(&location, &digest).await.expect("complete");
    digest
}

/// An image pulled as an OCI index (its platform's manifest and a BuildKit-style
/// attestation manifest, `unknown/unknown` with a reference type) is pushed as that
/// platform's image manifest alone: the tag is one image manifest, never the index,
/// never the attestation; on the containerd store (whose image ID is then the index
/// digest) it is the platform's stored manifest byte for byte. The image pulls and runs.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_stored_as_an_index_pushes_its_platform_manifest_alone() {
    let s = standin();
    let source = unique("direct-index-src");
    s.create_repository(&source, "MUTABLE");
    let (tag, id) = {
        let tag = format!("{}:1", unique("local/direct-index"));
        let marker = unique("index");
        let dockerfile =
            format!("FROM local/busybox:latest\nRUN echo {marker} > /m\nCMD [\"cat\", \"/m\"]\n");
        (tag.clone(), build(&tag, &dockerfile))
    };
    let platform = docker(&["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", &id]);
    let (os, architecture) = platform.split_once('/').unwrap();
    let image = push(&id, &source, &["image"], RetryPolicy::DEFAULT)
        .await
        .expect("push the platform image");
    docker(&["rmi", &tag]);

    // The attestation: an in-toto layer on an empty config, as BuildKit writes it.
    let reg = Registry::connect(
        &auth().login(),
        &source,
        RetryPolicy::DEFAULT,
        &ecr_build_push::network::Network::default(),
    )
    .unwrap();
    let config = put_blob(&reg, b"{}").await;
    let statement = br#"{"_type": "https://in-toto.io/Statement/v0.1"}"#;
    let layer = put_blob(&reg, statement).await;
    let attestation = PushedManifest::new(
        OCI_MANIFEST,
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": layer,
                        "size": statement.len()}],
        }))
        .unwrap()
        .into(),
    );
    let index = PushedManifest::new(
        OCI_INDEX,
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": image.media_type, "digest": image.digest,
                 "size": image.manifest.len(),
                 "platform": {"os": os, "architecture": architecture}},
                {"mediaType": OCI_MANIFEST, "digest": attestation.digest,
                 "size": attestation.size,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                 "vnd.docker.reference.digest": image.digest}},
            ],
        }))
        .unwrap()
        .into(),
    );
    let mut quiet = |_: &str| {};
    manifest::put(
        &reg,
        std::slice::from_ref(&attestation.digest),
        &attestation,
        &mut quiet,
    )
    .await
    .unwrap();
    manifest::put(&reg, &["multi".into()], &index, &mut quiet)
        .await
        .unwrap();

    let pulled = format!("{}/{source}:multi", s.registry);
    s.docker_pull(&pulled);
    let pulled_id = docker(&["image", "inspect", "-f", "{{.Id}}", &pulled]);
    let target = unique("direct-index-dst");
    s.create_repository(&target, "MUTABLE");
    let (pushed, lines) =
        push_reusing(&pulled_id, &target, &["v1"], RetryPolicy::DEFAULT, &[]).await;
    let pushed = pushed.expect("direct push");
    s.assert_single_image_manifest(&target, "v1");
    assert_eq!(
        s.registry_digest(&target, "v1").as_deref(),
        Some(pushed.digest.as_str())
    );
    if engine().await.store == ImageStore::Containerd {
        assert_eq!(
            pulled_id, index.digest,
            "the containerd store keeps the index"
        );
        assert_eq!(pushed.digest, image.digest, "{lines:#?}");
        assert_eq!(
            pushed.manifest, image.manifest,
            "the stored manifest, byte for byte"
        );
    }
    assert!(
        !pushed.manifest.contains("in-toto"),
        "never the attestation: {}",
        pushed.manifest
    );
    docker(&["rmi", &pulled]);
    pull_and_run(&target, &pushed.digest, "index-");
}

/// Loads a copy of `local/busybox` whose layers are uncompressed (a `docker save` tar of
/// the classic format, as another engine writes it) under `tag`; returns its image ID.
fn load_uncompressed_busybox(tag: &str) -> String {
    let out = support::docker_output(&["save", "local/busybox:latest"]);
    assert!(out.status.success(), "docker save local/busybox");
    let mut files = std::collections::HashMap::new();
    for entry in tar::Archive::new(&out.stdout[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let saved: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, data).unwrap();
    };
    // The layers uncompressed, in the classic format (`manifest.json`) and as an OCI
    // layout of uncompressed layer blobs, which the containerd store keeps as they are
    // (from the classic format alone it would compress them).
    let config = files[saved[0]["Config"].as_str().unwrap()].clone();
    let blob = |data: &[u8]| format!("blobs/{}", sha256(data).replace(':', "/"));
    let (mut paths, mut descriptors) = (Vec::new(), Vec::new());
    for layer in saved[0]["Layers"].as_array().unwrap() {
        let data = &files[layer.as_str().unwrap()];
        let mut raw = Vec::new();
        if data.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(&data[..])
                .read_to_end(&mut raw)
                .unwrap();
        } else {
            raw.clone_from(data);
        }
        add(&blob(&raw), &raw);
        paths.push(blob(&raw));
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": sha256(&raw), "size": raw.len()}));
    }
    add(&blob(&config), &config);
    let image = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": descriptors}))
    .unwrap();
    add(&blob(&image), &image);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(&image), "size": image.len(),
        "annotations": {"io.containerd.image.name": format!("docker.io/{tag}"),
                        "org.opencontainers.image.ref.name": tag.rsplit(':').next()}}]});
    add("index.json", index.to_string().as_bytes());
    add("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#);
    let manifest =
        serde_json::json!([{"Config": blob(&config), "RepoTags": [tag], "Layers": paths}]);
    add("manifest.json", manifest.to_string().as_bytes());
    let archive = tar.into_inner().unwrap();
    let mut load = Command::new("docker")
        .args(["load", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker load");
    {
        use std::io::Write as _;
        load.stdin.take().unwrap().write_all(&archive).unwrap();
    }
    assert!(load.wait().unwrap().success(), "docker load");
    docker(&["image", "inspect", "-f", "{{.Id}}", tag])
}

/// A base that the engine stores uncompressed (`docker load`ed from a classic-format tar)
/// pushes and pulls as an image that runs. On the containerd store its layer is sent as
/// stored, the manifest is the engine's byte for byte, and the log names the
/// uncompressed layer; on the classic store it is gzipped as every layer is.
#[tokio::test(flavor = "multi_thread")]
async fn a_base_stored_uncompressed_is_pushed_as_stored() {
    let s = standin();
    let tag = format!("{}:1", unique("local/direct-loaded"));
    let id = load_uncompressed_busybox(&tag);
    let repository = unique("direct-loaded");
    s.create_repository(&repository, "MUTABLE");
    let (pushed, lines) = push_reusing(&id, &repository, &["v1"], RetryPolicy::DEFAULT, &[]).await;
    let pushed = pushed.expect("direct push");
    s.assert_single_image_manifest(&repository, "v1");
    let manifest: serde_json::Value = serde_json::from_str(&pushed.manifest).unwrap();
    let layer_type = manifest["layers"][0]["mediaType"]
        .as_str()
        .unwrap()
        .to_string();
    match engine().await.store {
        ImageStore::Classic => {
            assert_eq!(
                layer_type,
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            );
        }
        ImageStore::Containerd => {
            assert!(!layer_type.contains("gzip"), "{layer_type}");
            assert_eq!(pushed.digest, stored_manifest(&id).0);
            assert!(
                lines.iter().any(|l| l.contains("stored uncompressed")),
                "{lines:#?}"
            );
        }
    }
    docker(&["rmi", &tag]);
    let reference = format!("{}/{repository}@{}", s.registry, pushed.digest);
    s.docker_pull(&reference);
    let output = docker(&["run", "--rm", &reference, "echo", "loaded-ok"]);
    assert_eq!(output, "loaded-ok");
    docker(&["rmi", &reference]);
}
