//! The direct push: the built image goes to the registry without the daemon's pusher.
//!
//! 1. Layers the registry already holds in gzip form are looked up first, from images
//!    already there (the previous image, `cache-from`, a base image: [`reuse`]): found by
//!    `HEAD` or mounted from their repository, they are neither compressed nor uploaded.
//!    When every layer and the config are there (a rerun), nothing is exported at all.
//! 2. The image is read from the daemon with the export API (`docker save` as a tar
//!    stream) on a blocking thread ([`export`]).
//! 3. Each other layer is gzipped while it streams, in parallel across cores, as one
//!    standard gzip member ([`gzip`], [`deflate`]), into an unlinked spool file: memory
//!    stays bounded whatever the layer size.
//! 4. Each compressed layer is uploaded as soon as it is ready, while the next one is
//!    compressed: `HEAD` first (skip it if the repository has it), else a chunked upload
//!    in parts ECR accepts ([`upload`], [`registry`]). Uploads run concurrently, bounded.
//! 5. The schema 2 manifest is built from the config and the layers' digests and sizes,
//!    put for every tag, and its digest (the sha256 of the bytes put) is checked against
//!    the registry's `Docker-Content-Digest` ([`manifest`]).
//!
//! Transient failures (connection errors, 408, 429, 5xx) are retried per request with
//! the project's [`RetryPolicy`] (an upload whose session the registry lost is restarted);
//! refusals (`NAME_UNKNOWN`, `TAG_INVALID`, `DENIED`, 401/403) are final. The registry
//! password is only ever in a sensitive header value: never logged, never in an error.

// The error carries its context (registry, repository, blob or tag, status) by value;
// it is built once per failed push, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod deflate;
pub mod export;
pub mod gzip;
pub mod index;
pub mod manifest;
pub mod registry;
pub mod reuse;
mod upload;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use futures_util::{future::BoxFuture, FutureExt as _};
use tokio::sync::Semaphore;

use self::export::{sha256_digest, Content, Spooled};
use self::registry::{Failure, Registry};
use crate::ecr::RegistryAuth;
use crate::engine::push::RetryPolicy;

/// Upload part size: ECR needs at least 5 MiB for every part but the last.
pub const PART_SIZE: usize = 10 << 20;
/// Blobs uploaded at once.
pub const UPLOAD_CONCURRENCY: usize = 4;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How to push, beyond what and where.
#[derive(Debug, Clone)]
pub struct DirectOptions {
    /// libdeflate level, 1-12 ([`gzip::DEFAULT_LEVEL`]).
    pub level: u32,
    /// Deflate workers (default: the available cores).
    pub threads: usize,
    /// Images in the registry (`host/repo:tag` or `@digest`) whose layers ours may share,
    /// most likely first; others are ignored ([`reuse`]).
    pub reuse_from: Vec<String>,
    /// Where compressed layers are spooled (unlinked at once).
    pub spool_dir: PathBuf,
    /// Proxy, trust roots and registry endpoint for the registry client.
    pub network: crate::network::Network,
}

impl Default for DirectOptions {
    fn default() -> Self {
        Self {
            level: gzip::DEFAULT_LEVEL,
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            reuse_from: Vec::new(),
            spool_dir: std::env::temp_dir(),
            network: crate::network::Network::default(),
        }
    }
}

/// A finished direct push.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectPushed {
    /// The manifest digest, equal to the registry's `Docker-Content-Digest`.
    pub digest: String,
    /// The manifest as put (its sha256 is `digest`).
    pub manifest: String,
    /// Compressed size of every layer plus the config.
    pub compressed_bytes: u64,
    /// Bytes actually sent in blob uploads.
    pub uploaded_bytes: u64,
    /// Blobs the repository already had.
    pub skipped_blobs: usize,
    /// Blobs mounted from another repository.
    pub mounted_blobs: usize,
    /// Distinct layers known from `reuse_from`: neither compressed nor uploaded.
    pub reused_layers: usize,
    pub seconds: f64,
}

/// Why a direct push failed. Every variant names the registry; registry failures name the
/// repository, the blob or tag, and the HTTP status when there was one.
#[derive(Debug, thiserror::Error)]
pub enum DirectPushError {
    #[error("cannot set up the connection to {registry}: {message}")]
    Setup { registry: String, message: String },
    #[error("reading image {image} from the Docker daemon for {registry} failed: {message}")]
    Export {
        image: String,
        registry: String,
        message: String,
    },
    #[error("image {image} cannot be pushed to {registry}: {message}")]
    Image {
        image: String,
        registry: String,
        message: String,
    },
    #[error(
        "{operation} {subject} at {registry}/{repository} failed{}: {message}{}",
        status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
        if *attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() }
    )]
    Registry {
        registry: String,
        repository: String,
        /// e.g. `blob sha256:…`, `tag v1`
        subject: String,
        /// e.g. `uploading`, `putting the manifest of`
        operation: String,
        status: Option<u16>,
        /// The registry's error code (`NAME_UNKNOWN`, `TAG_INVALID`, `DENIED`, …).
        code: Option<String>,
        message: String,
        attempts: u32,
    },
}

impl DirectPushError {
    /// Whether the daemon's pusher could still succeed where this failed (for
    /// `push-engine: auto`): the image could not be read or handled, or the connection
    /// could not be set up. A registry refusal or an exhausted retry would fail there too.
    pub fn daemon_may_succeed(&self) -> bool {
        matches!(
            self,
            Self::Setup { .. } | Self::Export { .. } | Self::Image { .. }
        )
    }

    fn registry(
        reg: &Registry,
        operation: &str,
        subject: String,
        (failure, attempts): (Failure, u32),
    ) -> Self {
        Self::Registry {
            registry: reg.host.clone(),
            repository: reg.repository.clone(),
            subject,
            operation: operation.to_string(),
            status: failure.status,
            message: match &failure.code {
                Some(code) => format!("{code}: {}", failure.message),
                None => failure.message.clone(),
            },
            code: failure.code,
            attempts,
        }
    }
}

/// A blob's descriptor in the manifest.
#[derive(Debug, Clone)]
struct Blob {
    digest: String,
    size: u64,
    content: Content,
}

#[derive(Debug, Clone, Copy, Default)]
struct BlobOutcome {
    skipped: bool,
    mounted: bool,
    uploaded: u64,
    /// From the upload's start (after waiting for a slot) to its end.
    seconds: f64,
}

/// Aborts the export feeder when the push ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pushes `image_id` to `registry/repository` under every tag; with no tags, by its
/// digest only (one platform of an index, see [`index`]). `on_line` gets one
/// progress line per milestone (layer compressed, skipped, mounted, pushed; tag pushed).
#[allow(clippy::too_many_arguments)]
pub async fn push(
    docker: &bollard::Docker,
    image_id: &str,
    repository: &str,
    tags: &[String],
    auth: &RegistryAuth,
    retry: RetryPolicy,
    options: &DirectOptions,
    mut on_line: impl FnMut(&str),
) -> Result<DirectPushed, DirectPushError> {
    let started = Instant::now();
    let image_error = |message: String| DirectPushError::Image {
        image: image_id.to_string(),
        registry: auth.registry.clone(),
        message,
    };
    let reg = Arc::new(Registry::connect(
        auth,
        repository,
        retry,
        &options.network,
    )?);
    let export_error = |message: String| DirectPushError::Export {
        image: image_id.to_string(),
        registry: auth.registry.clone(),
        message,
    };

    let on_outcome = |digest: &str, outcome: BlobOutcome, on_line: &mut dyn FnMut(&str)| {
        let short = short(digest);
        if outcome.skipped {
            on_line(&format!("{short}: Layer already exists"));
        } else {
            on_line(&format!(
                "{short}: Pushed {} in {:.1} s",
                mb(outcome.uploaded),
                outcome.seconds
            ));
        }
    };

    let mut started_digests = HashSet::new();
    let mut done: HashMap<String, BlobOutcome> = HashMap::new();

    // Known layers first: when the repository has every layer and the config (a rerun),
    // nothing needs exporting at all.
    let (diff_ids, reused) = if options.reuse_from.is_empty() {
        (Vec::new(), HashMap::new())
    } else {
        reusable_layers(docker, image_id, &reg, &options.reuse_from).await
    };
    for (blob, how) in diff_ids.iter().filter_map(|d| reused.get(d)) {
        if !started_digests.insert(blob.digest.clone()) {
            continue;
        }
        let short = short(&blob.digest);
        let from = &blob.repository;
        let outcome = match how {
            reuse::Reused::Present => {
                on_line(&format!(
                    "{short}: Layer already exists (known from {from}: not compressed)"
                ));
                BlobOutcome {
                    skipped: true,
                    ..BlobOutcome::default()
                }
            }
            reuse::Reused::Mounted => {
                on_line(&format!("{short}: Mounted from {from}"));
                BlobOutcome {
                    mounted: true,
                    ..BlobOutcome::default()
                }
            }
        };
        done.insert(blob.digest.clone(), outcome);
    }
    let pass: HashSet<String> = reused.keys().cloned().collect();
    if !diff_ids.is_empty() && diff_ids.iter().all(|d| pass.contains(d)) {
        if let Some(config_size) = present_config(&reg, image_id).await {
            on_line(&format!(
                "{}: Layer already exists (the image config)",
                short(image_id)
            ));
            let layers: Vec<(String, u64)> = diff_ids
                .iter()
                .filter_map(|d| reused.get(d).map(|(b, _)| (b.digest.clone(), b.size)))
                .collect();
            done.insert(
                image_id.to_string(),
                BlobOutcome {
                    skipped: true,
                    ..BlobOutcome::default()
                },
            );
            let config = (image_id, config_size);
            let put = manifest::put(&reg, tags, config, &layers, &mut on_line).await?;
            return Ok(finished(put, &layers, config, &done, pass.len(), started));
        }
    }

    // The export stream, fed to the blocking reader through a small channel. The daemon
    // writes its whole export to disk before the first byte: that wait is logged.
    let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(16);
    let first_byte = Arc::new(std::sync::OnceLock::<f64>::new());
    let feeder = {
        let docker = docker.clone();
        let image = image_id.to_string();
        let first_byte = Arc::clone(&first_byte);
        AbortOnDrop(tokio::spawn(async move {
            let mut stream = docker.export_image(&image);
            while let Some(item) = stream.next().await {
                first_byte.get_or_init(|| started.elapsed().as_secs_f64());
                let failed = item.is_err();
                let item = item.map_err(|e| io::Error::other(crate::error_chain(&e)));
                if bytes_tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        }))
    };

    let pool = Arc::new(gzip::Pool::new(options.threads));
    let (layer_tx, mut layer_rx) = tokio::sync::mpsc::channel::<Spooled>(4);
    let reader = {
        let pool = Arc::clone(&pool);
        let level = options.level;
        let dir = options.spool_dir.clone();
        tokio::task::spawn_blocking(move || {
            export::read_export(
                export::ChannelReader::new(bytes_rx),
                &pool,
                level,
                &dir,
                &pass,
                &layer_tx,
            )
        })
    };

    let limit = Arc::new(Semaphore::new(UPLOAD_CONCURRENCY));
    let start_upload =
        |blob: Blob| -> BoxFuture<'static, (String, Result<BlobOutcome, DirectPushError>)> {
            let reg = Arc::clone(&reg);
            let limit = Arc::clone(&limit);
            async move {
                let _permit = limit.acquire_owned().await;
                let upload_started = Instant::now();
                let result = upload::upload_blob(&reg, &blob)
                    .await
                    .map(|outcome| BlobOutcome {
                        seconds: upload_started.elapsed().as_secs_f64(),
                        ..outcome
                    });
                (blob.digest, result)
            }
            .boxed()
        };

    let mut uploads = FuturesUnordered::new();
    let mut spooled: HashMap<String, Spooled> = HashMap::new();

    // Upload layers as they come out of the compressor.
    let mut layers_open = true;
    let mut first_byte_logged = false;
    while layers_open || !uploads.is_empty() {
        tokio::select! {
            next = layer_rx.recv(), if layers_open => match next {
                Some(layer) => {
                    if !std::mem::replace(&mut first_byte_logged, true) {
                        if let Some(seconds) = first_byte.get() {
                            on_line(&format!(
                                "Image export from the daemon: first byte after {seconds:.1} s"
                            ));
                        }
                    }
                    on_line(&format!(
                        "{}: Compressed {} to {} in {:.1} s",
                        short(&layer.diff_id),
                        mb(layer.uncompressed),
                        mb(layer.size),
                        layer.seconds
                    ));
                    if started_digests.insert(layer.digest.clone()) {
                        uploads.push(start_upload(Blob {
                            digest: layer.digest.clone(),
                            size: layer.size,
                            content: Content::File(Arc::clone(&layer.file)),
                        }));
                    }
                    spooled.insert(layer.path.clone(), layer);
                }
                None => layers_open = false,
            },
            Some((digest, result)) = uploads.next(), if !uploads.is_empty() => {
                let outcome = result?;
                on_outcome(&digest, outcome, &mut on_line);
                done.insert(digest, outcome);
            }
        }
    }
    let rest = reader
        .await
        .map_err(|e| export_error(format!("the export reader stopped: {e}")))?
        .map_err(|e| export_error(crate::error_chain(&e)))?;
    drop(feeder);

    // What the image is: manifest.json, then the config.
    let manifest_json = rest
        .files
        .get("manifest.json")
        .ok_or_else(|| image_error("the export has no manifest.json".into()))?;
    let saved: Vec<SavedImage> = serde_json::from_slice(manifest_json)
        .map_err(|e| image_error(format!("the export's manifest.json is invalid: {e}")))?;
    let saved = saved
        .into_iter()
        .next()
        .ok_or_else(|| image_error("the export's manifest.json is empty".into()))?;
    let resolve = |path: &str| {
        let mut path = export::normalize(path);
        for _ in 0..8 {
            match rest.links.get(&path) {
                Some(target) => path.clone_from(target),
                None => break,
            }
        }
        path
    };
    let config_bytes = rest
        .files
        .get(&resolve(&saved.config))
        .ok_or_else(|| image_error(format!("the export lacks the config {}", saved.config)))?
        .clone();
    let config_digest = sha256_digest(&config_bytes);
    if image_id.starts_with("sha256:") && config_digest != image_id {
        return Err(image_error(format!(
            "the exported config is {config_digest}, not the image ID"
        )));
    }
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| image_error(format!("the image config is invalid: {e}")))?;
    if config.rootfs.diff_ids.len() != saved.layers.len() {
        return Err(image_error(format!(
            "the config lists {} layers and the export {}",
            config.rootfs.diff_ids.len(),
            saved.layers.len()
        )));
    }

    // Every layer's compressed descriptor (digest, size); layers kept in memory are
    // compressed now.
    let mut layers: Vec<(String, u64)> = Vec::with_capacity(saved.layers.len());
    let mut in_memory = Vec::new();
    for (path, diff_id) in saved.layers.iter().zip(&config.rootfs.diff_ids) {
        let path = resolve(path);
        let content_error = |found: &str| {
            image_error(format!(
                "layer {path} has content {found} but the config says {diff_id}"
            ))
        };
        if let Some(layer) = spooled.get(&path) {
            if &layer.diff_id != diff_id {
                return Err(content_error(&layer.diff_id));
            }
            layers.push((layer.digest.clone(), layer.size));
        } else if let Some(passed) = rest.passed.get(&path) {
            if passed != diff_id {
                return Err(content_error(passed));
            }
            let (blob, _) = reused
                .get(diff_id)
                .ok_or_else(|| image_error(format!("layer {path} was skipped but not reused")))?;
            layers.push((blob.digest.clone(), blob.size));
        } else if let Some(raw) = rest.files.get(&path) {
            let found = sha256_digest(raw);
            if &found != diff_id {
                return Err(content_error(&found));
            }
            let raw = raw.clone();
            let pool = Arc::clone(&pool);
            let level = options.level;
            let gz = tokio::task::spawn_blocking(move || gzip::gzip_bytes(&pool, &raw, level))
                .await
                .map_err(|e| image_error(e.to_string()))?
                .map_err(|e| image_error(format!("gzip failed: {e}")))?;
            let blob = Blob {
                digest: sha256_digest(&gz),
                size: gz.len() as u64,
                content: Content::Memory(Bytes::from(gz)),
            };
            layers.push((blob.digest.clone(), blob.size));
            in_memory.push(blob);
        } else {
            return Err(image_error(format!("the export lacks layer {path}")));
        }
    }
    let (config_digest, config_size) = (config_digest, config_bytes.len() as u64);
    in_memory.push(Blob {
        digest: config_digest.clone(),
        size: config_size,
        content: Content::Memory(Bytes::from(config_bytes)),
    });
    for blob in in_memory {
        if started_digests.insert(blob.digest.clone()) {
            uploads.push(start_upload(blob));
        }
    }
    while let Some((digest, result)) = uploads.next().await {
        let outcome = result?;
        on_outcome(&digest, outcome, &mut on_line);
        done.insert(digest, outcome);
    }

    let config = (config_digest.as_str(), config_size);
    let put = manifest::put(&reg, tags, config, &layers, &mut on_line).await?;
    Ok(finished(
        put,
        &layers,
        config,
        &done,
        rest.passed.len(),
        started,
    ))
}

/// The summary of a push whose manifest `put` returned: `layers` and `config` are the
/// manifest's (digest, size) descriptors, `done` the outcome of every blob.
fn finished(
    (manifest, digest): (String, String),
    layers: &[(String, u64)],
    config: (&str, u64),
    done: &HashMap<String, BlobOutcome>,
    reused_layers: usize,
    started: Instant,
) -> DirectPushed {
    let mut counted = HashSet::new();
    let compressed_bytes = layers
        .iter()
        .map(|(digest, size)| (digest.as_str(), *size))
        .chain(std::iter::once(config))
        .filter(|(digest, _)| counted.insert(*digest))
        .map(|(_, size)| size)
        .sum();
    DirectPushed {
        digest,
        manifest,
        compressed_bytes,
        uploaded_bytes: done.values().map(|o| o.uploaded).sum(),
        skipped_blobs: done.values().filter(|o| o.skipped).count(),
        mounted_blobs: done.values().filter(|o| o.mounted).count(),
        reused_layers,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The size of the image config in the repository, when it is there (its digest is the
/// image ID).
async fn present_config(reg: &Registry, image_id: &str) -> Option<u64> {
    if !image_id.starts_with("sha256:") {
        return None;
    }
    reg.with_retry("checking the image config", || reg.blob_size(image_id))
        .await
        .ok()
        .flatten()
}

/// The layers of `image_id` that the registry has, or could mount, from the `sources`
/// images. Nothing when the image cannot be inspected: reuse is only an optimisation.
async fn reusable_layers(
    docker: &bollard::Docker,
    image_id: &str,
    reg: &Registry,
    sources: &[String],
) -> (
    Vec<String>,
    HashMap<String, (reuse::KnownBlob, reuse::Reused)>,
) {
    let image = match docker.inspect_image(image_id).await {
        Ok(image) => image,
        Err(err) => {
            tracing::debug!("not reusing layers: cannot inspect {image_id}: {err}");
            return (Vec::new(), HashMap::new());
        }
    };
    let diff_ids = image.root_fs.and_then(|fs| fs.layers).unwrap_or_default();
    let platform = reuse::Platform {
        os: image.os.unwrap_or_default(),
        architecture: image.architecture.unwrap_or_default(),
        variant: image.variant.filter(|v| !v.is_empty()),
    };
    let known = reuse::known_layers(reg, sources, &platform).await;
    let resolved = reuse::resolve(reg, &diff_ids, &known).await;
    (diff_ids, resolved)
}

#[derive(Debug, serde::Deserialize)]
struct SavedImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Debug, serde::Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

#[allow(clippy::cast_precision_loss)]
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
