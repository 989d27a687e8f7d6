//! Layer reuse names a blob of another image in our manifest only once it is proven to be
//! our layer (issue 22, item 4): a `cache-from` image whose config pairs our layers'
//! `diff_ids` with other blobs (a lie no registry checks) is read, found out and not
//! used; an honest one, pushed by another pusher, is reused; `no-cache` reuses nothing.
//!
//! The action runs as a job would (BuildKit, the direct push) on the engine under test
//! (`DOCKER_HOST`); each test has repositories of its own.

mod support;

use std::io::Read as _;

use ecr_build_push::ecr::Secret;
use ecr_build_push::publish::export::sha256_digest as sha256;
use ecr_build_push::registry::{BlobBody, Credentials, Login, Registry, RetryPolicy};
use support::{engine_is_containerd_store, standin, unique, RunResult, Workspace};

/// The layer media type of a gzip layer in both manifest formats' names.
const GZIP_LAYERS: [&str; 2] = [
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip",
];

/// A workspace whose image is the stand-in's busybox plus one layer of its own.
fn app_workspace(name: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM local/busybox:latest\nRUN echo {} > /app.txt\nCMD [\"cat\", \"/app.txt\"]\n",
            unique(name)
        ),
    );
    ws
}

/// Builds the workspace's image with BuildKit and pushes it to `repository:tag` with
/// `push-engine` (and any `more` inputs); the run must succeed.
fn run(
    ws: &Workspace,
    repository: &str,
    tag: &str,
    engine: &str,
    more: &[(&str, &str)],
) -> RunResult {
    let mut action = standin()
        .action(ws.path())
        .input("repository", repository)
        .input("tags", tag)
        .input("builder", "buildkit")
        .input("push-engine", engine);
    for (name, value) in more {
        action = action.input(name, value);
    }
    let result = action.run();
    result.assert_success();
    result
}

/// A new repository named after `name`, holding the image of a new [`app_workspace`]
/// as `tag`, pushed by `engine`; the repository, the workspace, and the image's
/// reference.
fn pushed(name: &str, tag: &str, engine: &str) -> (String, Workspace, String) {
    let repository = unique(&format!("reuse/{name}"));
    let ws = app_workspace(name);
    run(&ws, &repository, tag, engine, &[]);
    let reference = format!("{}/{repository}:{tag}", standin().registry);
    (repository, ws, reference)
}

/// The summary's count of layers reused without compressing.
fn reused_layers(run: &RunResult) -> usize {
    let row = run
        .summary
        .lines()
        .find(|l| l.starts_with("| Blobs |"))
        .unwrap_or_else(|| panic!("no Blobs row in the summary:\n{}", run.summary));
    let (before, _) = row
        .split_once(" layer(s) reused")
        .unwrap_or_else(|| panic!("no reuse count in `{row}`"));
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The registry client on `repository`, logged in as the stand-in hands logins out.
fn registry(repository: &str) -> Registry {
    let s = standin();
    let login = Login {
        host: s.registry.clone(),
        credentials: Credentials {
            username: "AWS".to_string(),
            password: Secret::new(s.password.clone()),
            expires_at: None,
            scheme: ecr_build_push::registry::Scheme::Basic,
        },
        renew: None,
    };
    let network = ecr_build_push::network::Network::default();
    Registry::connect(&login, repository, RetryPolicy::DEFAULT, &network).expect("connect")
}

/// The image manifest of `reference` and its config, as JSON.
async fn image(reg: &Registry, reference: &str) -> (serde_json::Value, serde_json::Value) {
    let (_, manifest) = reg
        .get_manifest(&reg.repository, reference)
        .await
        .expect("the manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    let config = reg
        .get_blob(&reg.repository, config, 1 << 20)
        .await
        .expect("the config");
    (manifest, serde_json::from_slice(&config).unwrap())
}

fn layer_digests(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn diff_ids(config: &serde_json::Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

/// Uploads `data` as a blob of `reg`'s repository; returns its digest.
async fn upload(reg: &Registry, data: Vec<u8>) -> String {
    let digest = sha256(&data);
    let size = data.len() as u64;
    let location = reg.start_upload().await.expect("start an upload");
    let body = BlobBody::Memory(bytes::Bytes::from(data));
    let location = reg
        .patch_whole(&location, &body, size)
        .await
        .expect("upload");
    reg.complete(&location, &digest).await.expect("complete");
    digest
}

/// A gzipped layer tar of one file, `/app.txt`, holding `text`: a layer, but not ours.
fn other_layer(text: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "app.txt", text.as_bytes())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

/// Puts under `reg`'s `tag` a lie about `honest` (an image manifest of the repository):
/// a config with the same `diff_ids`, whose manifest lists another gzip layer in place of
/// the last one (the BuildKit inline cache is left out, so the build cannot use the lie
/// itself). Returns the blob that lies.
async fn put_lying_image(reg: &Registry, honest: &str, tag: &str) -> String {
    let (mut manifest, mut config) = image(reg, honest).await;
    config
        .as_object_mut()
        .unwrap()
        .remove("moby.buildkit.cache.v0");
    let config = serde_json::to_vec(&config).unwrap();
    let config_size = config.len();
    let config_digest = upload(reg, config).await;
    let lie = other_layer("not the layer the config says\n");
    let lie_size = lie.len();
    let lie_digest = upload(reg, lie).await;
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_size.into();
    let last = manifest["layers"]
        .as_array_mut()
        .unwrap()
        .last_mut()
        .unwrap();
    assert!(
        GZIP_LAYERS.contains(&last["mediaType"].as_str().unwrap()),
        "a gzip layer: {last}"
    );
    last["digest"] = lie_digest.clone().into();
    last["size"] = lie_size.into();
    let media_type = manifest["mediaType"].as_str().unwrap().to_string();
    reg.put_manifest(
        tag,
        &media_type,
        serde_json::to_vec(&manifest).unwrap().into(),
    )
    .await
    .expect("put the lying manifest");
    lie_digest
}

/// Each layer blob of `manifest`, read from the registry, decompresses to the `diff_id`
/// the config gives it.
async fn assert_layers_are_the_config(
    reg: &Registry,
    manifest: &serde_json::Value,
    config: &serde_json::Value,
) {
    let layers = layer_digests(manifest);
    let diff_ids = diff_ids(config);
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let blob = reg
            .get_blob(&reg.repository, layer, 1 << 30)
            .await
            .expect("the layer");
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut raw)
            .expect("a gzip layer");
        assert_eq!(&sha256(&raw), diff_id, "layer {layer}");
    }
}

/// A `cache-from` image in ECR whose config has our layers' `diff_ids` but whose manifest
/// lists another blob for our last layer (as a buggy tool, or a layer from before a
/// security fix, would leave it): the push reads that blob, finds it decompresses to
/// something else, says so, and compresses and uploads our layer instead; the pushed
/// manifest lists blobs that are our layers. The honest blob (the base layer) is still
/// reused. Before the fix, the lying blob went out as our layer.
#[tokio::test(flavor = "multi_thread")]
async fn a_lying_cache_from_mapping_is_not_used() {
    let s = standin();
    let (repository, ws, _) = pushed("lie", "v1", "direct");
    let reg = registry(&repository);
    let lie = put_lying_image(&reg, "v1", "cache").await;
    let cache = format!("{}/{repository}:cache", s.registry);

    let second = run(&ws, &repository, "v2", "direct", &[("cache-from", &cache)]);
    let (manifest, config) = image(&reg, "v2").await;
    let (_, lying_config) = image(&reg, "cache").await;
    assert_eq!(
        diff_ids(&config),
        diff_ids(&lying_config),
        "the same layers again (BuildKit's cache), so the lie names them"
    );
    assert!(
        !layer_digests(&manifest).contains(&lie),
        "the lying blob went out as our layer: {manifest}\n{}",
        second.stderr
    );
    assert_layers_are_the_config(&reg, &manifest, &config).await;
    let last = diff_ids(&config).last().unwrap().clone();
    let refused = if engine_is_containerd_store() {
        // The engine's manifest names its own blob for the layer: the lie never applies.
        format!("listed by {cache} for layer {}", &last[7..19])
    } else {
        format!("not reusing blob {lie} of {cache} for layer {last}: its manifest pairs")
    };
    assert!(
        second.stderr.contains(&refused),
        "no `{refused}` in the log:\n{}",
        second.stderr
    );
    assert_eq!(
        reused_layers(&second),
        1,
        "the base layer:\n{}",
        second.summary
    );
}

/// A `cache-from` image that the daemon's pusher sent (its own gzip, so blobs our
/// compressor would not write) is honest: each of its layers is read once, found to be
/// ours, and reused, neither compressed nor uploaded; the pushed manifest lists the
/// daemon's blobs.
#[tokio::test(flavor = "multi_thread")]
async fn an_honest_cache_from_image_is_reused_once_proven() {
    let (repository, ws, cache) = pushed("honest", "cache", "daemon");

    let second = run(&ws, &repository, "v1", "direct", &[("cache-from", &cache)]);
    assert_eq!(
        reused_layers(&second),
        2,
        "{}\n{}",
        second.summary,
        second.stderr
    );
    let reg = registry(&repository);
    let (cached, _) = image(&reg, "cache").await;
    let (manifest, config) = image(&reg, "v1").await;
    assert_eq!(layer_digests(&manifest), layer_digests(&cached));
    assert_layers_are_the_config(&reg, &manifest, &config).await;
    if !engine_is_containerd_store() {
        let proven = second
            .stderr
            .lines()
            .filter(|l| l.contains(&format!("of {cache} decompresses to layer")))
            .count();
        assert_eq!(proven, 2, "each layer read once:\n{}", second.stderr);
    }
}

/// `no-cache: true` reuses nothing: not the `cache-from` image's layers (the base layer
/// is the same as ours, and would be reused otherwise), and no source image is read.
#[tokio::test(flavor = "multi_thread")]
async fn no_cache_reuses_no_layer() {
    let (repository, ws, cache) = pushed("nocache", "cache", "direct");

    let second = run(
        &ws,
        &repository,
        "v1",
        "direct",
        &[("cache-from", &cache), ("no-cache", "true")],
    );
    assert_eq!(
        reused_layers(&second),
        0,
        "{}\n{}",
        second.summary,
        second.stderr
    );
    for needle in [
        "reusable layer(s) in",
        "known from",
        "not reusing layers of",
    ] {
        assert!(
            !second.stderr.contains(needle),
            "`{needle}` in the log:\n{}",
            second.stderr
        );
    }
}

/// A read of a layer blob that fails (a 503, then a connection reset) is made again, as
/// any registry request is, and the layer is still proven and reused. (On the containerd
/// store nothing is read: the engine's own blobs are proven by their digests.)
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_read_that_fails_is_read_again() {
    let s = standin();
    let (repository, ws, cache) = pushed("retried", "cache", "daemon");
    let (cached, _) = image(&registry(&repository), "cache").await;
    let layer = layer_digests(&cached).last().unwrap().clone();
    let path = format!("/v2/{repository}/blobs/{layer}");
    for mode in ["status", "reset"] {
        s.inject_fault(
            &serde_json::json!({"route": "registry", "mode": mode, "method": "GET",
            "repository": repository, "path": path}),
        );
    }

    let second = run(&ws, &repository, "v1", "direct", &[("cache-from", &cache)]);
    if engine_is_containerd_store() {
        // The engine's blobs are proven by their digests: nothing is read.
        assert_eq!(s.pending_faults(&repository), 2, "{}", second.stderr);
    } else {
        assert_eq!(s.pending_faults(&repository), 0, "{}", second.stderr);
        let retried = format!("reading blob {layer} at {}/{repository} failed", s.registry);
        assert!(second.stderr.contains(&retried), "{}", second.stderr);
    }
    assert_eq!(
        reused_layers(&second),
        2,
        "{}\n{}",
        second.summary,
        second.stderr
    );
}
