//! The direct push: the built image goes to the registry without the daemon's pusher.
//!
//! What the export API gives depends on the engine's image store ([`ImageStore`]), so
//! each store has its image source, chosen once in [`upload_image`]:
//! - [`classic`]: the export (`docker save`) holds uncompressed layers and no manifest.
//!   Each layer is compressed while it streams ([`compression`]: gzip in parallel across
//!   cores as one standard gzip member, [`gzip`], [`deflate`]; or zstd), memory bounded
//!   whatever the layer size; the manifest is built here (Docker schema 2 for gzip, OCI
//!   once a layer is zstd).
//! - [`containerd`]: the export is an OCI layout of the stored, compressed blobs and the
//!   stored manifest; the blobs are sent as they are and the platform's image manifest is
//!   put byte for byte, so the pushed digest is the engine's. Never an index, never an
//!   attestation manifest.
//!
//! Common to both:
//! 1. Layers of images already in the registry (the previous image, `cache-from`, a base
//!    image: [`reuse`]), found by `HEAD` or mounted from their repository, are neither
//!    compressed nor uploaded; a rerun whose image is all there exports nothing.
//! 2. The export is read on a blocking thread as it streams ([`export`]), and each blob
//!    streams to the registry as it is read and compressed, in one `PATCH` ([`stream`]);
//!    a blob smaller than a part is `HEAD`ed first, and a restart goes in parts from the
//!    spool. Uploads run concurrently, bounded, each blob once ([`upload`], [`registry`]).
//! 3. The manifest is put under every tag (or under its digest alone), its digest checked
//!    against the registry's `Docker-Content-Digest` ([`manifest`]).
//!
//! Transient failures (connection errors, 408, 429, 5xx) are retried per request with
//! the project's [`RetryPolicy`] (an upload whose session the registry lost is restarted);
//! refusals (`NAME_UNKNOWN`, `TAG_INVALID`, `DENIED`, 401/403) are final. The registry
//! password is only ever in a sensitive header value: never logged, never in an error.

// The error carries its context (registry, repository, blob or tag, status) by value;
// it is built once per failed push, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod attach;
mod classic;
pub mod compression;
mod containerd;
pub mod copy;
pub mod deflate;
mod descriptor;
pub mod export;
pub mod gzip;
pub mod index;
pub mod legs;
pub mod manifest;
pub mod pipeline;
pub mod reuse;
pub mod route;
mod stream;
pub mod targets;
mod upload;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use self::compression::Compression;
pub use self::manifest::PushedManifest;
pub use self::pipeline::{publish, Published, PublishedChild};
use crate::engine::{Engine, ImageStore};
use crate::registry::RetryPolicy;
use crate::registry::{rules, Failure, Login, Mounting, Registry, SetupError};

/// A streamed layer holds back this much before it is sent, so a smaller blob is known
/// whole and can be `HEAD`ed first ([`stream`]).
pub const PART_SIZE: usize = 8 << 20;
/// Blobs uploaded at once.
pub const UPLOAD_CONCURRENCY: usize = 4;

/// How to push, beyond what and where.
#[derive(Debug, Clone)]
pub struct DirectOptions {
    /// How new layers are compressed (the classic store; the containerd store's layers
    /// were compressed by BuildKit as it exported them).
    pub compression: Compression,
    /// Compression workers (default: the available cores).
    pub threads: usize,
    /// Images in the registry (`host/repo:tag` or `@digest`) whose layers ours may share,
    /// most likely first; others are ignored ([`reuse`]).
    pub reuse_from: Vec<String>,
    /// Where compressed layers are spooled (unlinked at once), so a lost upload session
    /// can start again (`TMPDIR`).
    pub spool_dir: PathBuf,
    /// Proxy, trust roots and registry endpoint for the registry client.
    pub network: crate::network::Network,
    /// ECR's `BLOB_MOUNTING` setting: no mount is tried when it is off.
    pub mounting: Mounting,
    /// The blobs read to prove them layers ([`verify`]), shared by the run's pushes so
    /// each is read once.
    pub proofs: verify::Proofs,
}

impl Default for DirectOptions {
    fn default() -> Self {
        Self {
            compression: Compression::default(),
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            reuse_from: Vec::new(),
            spool_dir: PathBuf::from(crate::env::DEFAULT_SPOOL_DIR),
            network: crate::network::Network::default(),
            mounting: Mounting::default(),
            proofs: verify::Proofs::default(),
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
    /// Its media type: an image manifest's, Docker schema 2 or OCI.
    pub media_type: String,
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
    /// The push must not go on (a tag that cannot move names another image); no pusher
    /// would do better.
    #[error("{message}")]
    Refused { registry: String, message: String },
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

impl From<SetupError> for DirectPushError {
    fn from(err: SetupError) -> Self {
        Self::Setup {
            registry: err.registry,
            message: err.message,
        }
    }
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

    /// The image `image` cannot be sent to `reg`'s registry: `message` says why.
    fn image(image: &str, reg: &Registry, message: String) -> Self {
        Self::Image {
            image: image.to_string(),
            registry: reg.host.clone(),
            message,
        }
    }

    /// Reading `image` from the daemon, for `reg`'s registry, failed: `message` says how.
    fn export(image: &str, reg: &Registry, message: String) -> Self {
        Self::Export {
            image: image.to_string(),
            registry: reg.host.clone(),
            message,
        }
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
            message: {
                let mut message = match &failure.code {
                    Some(code) => format!("{code}: {}", failure.message),
                    None => failure.message.clone(),
                };
                if failure.status == Some(403) && !failure.token_expired() {
                    message = format!("{message} ({})", rules::FORBIDDEN_HINT);
                }
                message
            },
            code: failure.code,
            attempts,
        }
    }
}

/// An image whose blobs are all in the repository, and its manifest, not yet put: what a
/// push of several platforms puts by digest before the index that names them.
#[derive(Debug, Clone)]
pub struct UploadedImage {
    pub manifest: PushedManifest,
    /// What its blobs cost at the primary registry (the first of the fan-out).
    pub stats: BlobStats,
    /// What they cost at each registry of the fan-out, in its order.
    pub per_target: Vec<BlobStats>,
}

impl UploadedImage {
    /// The same image, found whole at each of `n` registries (a rerun).
    fn fanned_out(self, n: usize) -> Self {
        Self {
            per_target: vec![self.stats; n],
            ..self
        }
    }

    /// The image `manifest`, whose blobs are `blobs` (digest, size), given what became of
    /// each at each registry (`done`, in the fan-out's order).
    fn new(
        manifest: PushedManifest,
        blobs: &[(String, u64)],
        done: &[HashMap<String, upload::BlobOutcome>],
        reused_layers: usize,
    ) -> Self {
        let per_target: Vec<BlobStats> = done
            .iter()
            .map(|done| BlobStats::of(blobs, done, reused_layers))
            .collect();
        Self {
            manifest,
            stats: per_target.first().copied().unwrap_or_default(),
            per_target,
        }
    }
}

/// What the blobs of one image cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobStats {
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
}

impl std::ops::AddAssign for BlobStats {
    fn add_assign(&mut self, other: Self) {
        self.compressed_bytes += other.compressed_bytes;
        self.uploaded_bytes += other.uploaded_bytes;
        self.skipped_blobs += other.skipped_blobs;
        self.mounted_blobs += other.mounted_blobs;
        self.reused_layers += other.reused_layers;
    }
}

impl BlobStats {
    /// The stats of an image whose blobs are `blobs` (digest, size; a blob listed twice
    /// counts once), given what became of each.
    fn of(
        blobs: &[(String, u64)],
        done: &HashMap<String, upload::BlobOutcome>,
        reused_layers: usize,
    ) -> Self {
        let mut counted = HashSet::new();
        Self {
            compressed_bytes: blobs
                .iter()
                .filter(|(digest, _)| counted.insert(digest.as_str()))
                .map(|(_, size)| size)
                .sum(),
            uploaded_bytes: done.values().map(|o| o.uploaded).sum(),
            skipped_blobs: done.values().filter(|o| o.skipped).count(),
            mounted_blobs: done.values().filter(|o| o.mounted).count(),
            reused_layers,
        }
    }
}

/// Pushes `image_id` to `registry/repository` under every tag: its blobs
/// ([`upload_image`]), then its manifest ([`manifest::put`]). `on_line` gets one progress
/// line per milestone (layer compressed, skipped, mounted, pushed; tag pushed).
#[allow(clippy::too_many_arguments)]
pub async fn push(
    engine: &Engine,
    image_id: &str,
    repository: &str,
    tags: &[String],
    login: &Login,
    retry: RetryPolicy,
    options: &DirectOptions,
    on_line: impl FnMut(&str),
) -> Result<DirectPushed, DirectPushError> {
    let keep_none = |_: &str| Ok(Vec::new());
    push_keeping(
        engine, image_id, repository, tags, login, retry, options, keep_none, on_line,
    )
    .await
}

/// [`push`], asking `keep` (given the manifest's digest, once every blob is uploaded and
/// before any tag moves) which tags already hold the image and are left alone (ECR
/// refuses to put an immutable tag again, even at the same digest), or why the push must
/// stop: [`DirectPushError::Refused`].
#[allow(clippy::too_many_arguments)]
pub async fn push_keeping(
    engine: &Engine,
    image_id: &str,
    repository: &str,
    tags: &[String],
    login: &Login,
    retry: RetryPolicy,
    options: &DirectOptions,
    keep: impl FnOnce(&str) -> Result<Vec<String>, String>,
    mut on_line: impl FnMut(&str),
) -> Result<DirectPushed, DirectPushError> {
    let started = Instant::now();
    if tags.is_empty() {
        return Err(DirectPushError::Image {
            image: image_id.to_string(),
            registry: login.host.clone(),
            message: "no tags to push".into(),
        });
    }
    let reg = Arc::new(Registry::connect(
        login,
        repository,
        retry,
        &options.network,
    )?);
    let fanout = targets::Fanout::one(Arc::clone(&reg));
    let image = upload_image(engine, image_id, &fanout, options, &mut on_line).await?;
    let kept = keep(&image.manifest.digest).map_err(|message| DirectPushError::Refused {
        registry: reg.host.clone(),
        message,
    })?;
    for tag in &kept {
        on_line(&format!(
            "{tag}: already at {} (not put again)",
            image.manifest.digest
        ));
    }
    let tags: Vec<String> = tags.iter().filter(|t| !kept.contains(t)).cloned().collect();
    manifest::put(&reg, &tags, &image.manifest, &mut on_line).await?;
    Ok(DirectPushed::new(image, started))
}

/// Puts the image manifest `digest`, which the repository has already with every blob it
/// lists (another pusher sent them under another tag), under `tags`: nothing is exported
/// or uploaded. The manifest must be an image manifest, never an index.
pub async fn tag_pushed(
    digest: &str,
    repository: &str,
    tags: &[String],
    login: &Login,
    retry: RetryPolicy,
    network: &crate::network::Network,
    mut on_line: impl FnMut(&str),
) -> Result<DirectPushed, DirectPushError> {
    let started = Instant::now();
    let reg = Registry::connect(login, repository, retry, network)?;
    let image = containerd::pushed_by_the_daemon(&reg, digest, &mut on_line).await?;
    manifest::put(&reg, tags, &image.manifest, &mut on_line).await?;
    Ok(DirectPushed::new(image, started))
}

impl DirectPushed {
    /// What its blobs cost.
    pub fn stats(&self) -> BlobStats {
        BlobStats {
            compressed_bytes: self.compressed_bytes,
            uploaded_bytes: self.uploaded_bytes,
            skipped_blobs: self.skipped_blobs,
            mounted_blobs: self.mounted_blobs,
            reused_layers: self.reused_layers,
        }
    }

    fn new(image: UploadedImage, started: Instant) -> Self {
        let UploadedImage {
            manifest, stats, ..
        } = image;
        Self {
            manifest: manifest.text(),
            digest: manifest.digest,
            media_type: manifest.media_type,
            compressed_bytes: stats.compressed_bytes,
            uploaded_bytes: stats.uploaded_bytes,
            skipped_blobs: stats.skipped_blobs,
            mounted_blobs: stats.mounted_blobs,
            reused_layers: stats.reused_layers,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Uploads every blob of `image_id` to the repository of each registry of `fanout`, as
/// the engine's image store gives them ([`classic`]: layers compressed here, once for
/// every registry, the manifest built here; [`containerd`]: the stored blobs and manifest
/// as they are), and returns its image manifest, not yet put: [`manifest::put`] puts it
/// under tags, or under its digest. A registry that failed is marked so in `fanout`; the
/// push fails only when none is left.
pub async fn upload_image(
    engine: &Engine,
    image_id: &str,
    fanout: &targets::Fanout,
    options: &DirectOptions,
    on_line: &mut dyn FnMut(&str),
) -> Result<UploadedImage, DirectPushError> {
    // ECR refuses an image with more layers than this only once every blob is uploaded:
    // say so before anything is sent.
    if let Some((diff_ids, _)) = local_image(&engine.docker, image_id).await {
        rules::check_layer_count(diff_ids.len())
            .map_err(|why| DirectPushError::image(image_id, fanout.lead(), why))?;
    }
    ImageSource::of(engine)
        .upload(image_id, fanout, options, on_line)
        .await
}

/// Where a built image's blobs and manifest come from: the engine's image store decides
/// what its export holds, and so what the push does with it.
#[derive(Debug, Clone, Copy)]
pub enum ImageSource<'a> {
    /// [`classic`]: `docker save`, uncompressed layers and no manifest; the layers are
    /// compressed here and the manifest is built here.
    Classic(&'a bollard::Docker),
    /// [`containerd`]: an OCI layout of the stored, compressed blobs and the stored
    /// manifest, sent as they are.
    Containerd(&'a bollard::Docker),
}

impl<'a> ImageSource<'a> {
    pub fn of(engine: &'a Engine) -> Self {
        match engine.store {
            ImageStore::Classic => Self::Classic(&engine.docker),
            ImageStore::Containerd => Self::Containerd(&engine.docker),
        }
    }

    /// Uploads every blob of `image_id` to each registry of `fanout`; its manifest, not
    /// yet put.
    pub async fn upload(
        self,
        image_id: &str,
        fanout: &targets::Fanout,
        options: &DirectOptions,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<UploadedImage, DirectPushError> {
        // Boxed: each source's state machine is large, and the caller's future need not be.
        match self {
            Self::Classic(docker) => {
                Box::pin(classic::upload(docker, image_id, fanout, options, on_line)).await
            }
            Self::Containerd(docker) => {
                Box::pin(containerd::upload(
                    docker, image_id, fanout, options, on_line,
                ))
                .await
            }
        }
    }
}

/// The local image's layers (`diff_ids`) and platform; `None` when it cannot be
/// inspected (reuse then finds nothing).
async fn local_image(
    docker: &bollard::Docker,
    image_id: &str,
) -> Option<(Vec<String>, Option<crate::platform::Platform>)> {
    let image = match docker.inspect_image(image_id).await {
        Ok(image) => image,
        Err(err) => {
            tracing::debug!("not reusing layers: cannot inspect {image_id}: {err}");
            return None;
        }
    };
    let diff_ids = image.root_fs.and_then(|fs| fs.layers).unwrap_or_default();
    let platform = crate::platform::Platform::from_parts(
        image.os.as_deref().unwrap_or_default(),
        image.architecture.as_deref().unwrap_or_default(),
        image.variant.as_deref(),
    );
    Some((diff_ids, platform))
}

/// The layers among `diff_ids` that the primary registry has, or could mount, from the
/// `options.reuse_from` images, by `diff_id`, each shown to be its layer by `proof`; with
/// several registries, copied to those that lack them ([`copy::to_the_others`]). Reuse is
/// only an optimisation.
async fn reusable_layers(
    fanout: &targets::Fanout,
    uploads: &mut upload::Uploads,
    diff_ids: &[String],
    platform: Option<&crate::platform::Platform>,
    options: &DirectOptions,
    proof: reuse::Proof<'_>,
) -> HashMap<String, (reuse::KnownBlob, reuse::Reused)> {
    if options.reuse_from.is_empty() || diff_ids.is_empty() {
        return HashMap::new();
    }
    let reg = fanout.lead();
    let known = reuse::known_layers(reg, &options.reuse_from, platform, options.compression).await;
    let reused = reuse::resolve(reg, diff_ids, &known, options.mounting, proof).await;
    if fanout.len() > 1 {
        let blobs = reused
            .values()
            .map(|(blob, _)| (blob.digest.as_str(), blob.size));
        copy::to_the_others(fanout, uploads, blobs, &options.spool_dir, "known layer").await;
    }
    reused
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

#[allow(clippy::cast_precision_loss)]
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
