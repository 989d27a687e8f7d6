//! The classic image store's image: its export (`docker save`) holds the config and the
//! uncompressed layers, and no manifest. Each layer is compressed while it streams
//! ([`Compression`]: gzip in parallel across cores, or zstd) and uploaded part by part as
//! it is compressed ([`super::stream`]); the manifest is built here from the config and
//! the compressed layers ([`manifest::build`]). Layers known from images in the registry ([`reuse`]) are only
//! hashed on their way past; when the repository has every layer and the config (a
//! rerun), nothing is exported at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::compression::{Compression, ManifestFormat};
use super::export::{self, sha256_digest, CompressedLayer, Content, ExportEvent, Feeder};
use super::manifest::{self, LayerBlob, PushedManifest};
use super::targets::Fanout;
use super::upload::{Blob, Uploads};
use super::{gzip, mb, short, DirectOptions, DirectPushError, UploadedImage};

/// Uploads the config and the layers of `image_id` (a config digest) and builds its
/// manifest.
pub(super) async fn upload(
    docker: &bollard::Docker,
    image_id: &str,
    fanout: &Fanout,
    options: &DirectOptions,
    on_line: &mut dyn FnMut(&str),
) -> Result<UploadedImage, DirectPushError> {
    let started = Instant::now();
    let reg = fanout.lead();
    let image_error = |message: String| DirectPushError::image(image_id, reg, message);
    let export_error = |message: String| DirectPushError::export(image_id, reg, message);
    let mut uploads = Uploads::new(fanout);

    // Known layers first: when the repository has every layer and the config (a rerun),
    // nothing needs exporting at all.
    let (diff_ids, platform) = if options.reuse_from.is_empty() {
        (Vec::new(), None)
    } else {
        super::local_image(docker, image_id)
            .await
            .unwrap_or_default()
    };
    // Its layers are uncompressed here: a known blob is read to prove it is one of them.
    let proof = super::reuse::Proof::Read(&options.proofs);
    let reused = super::reusable_layers(
        fanout,
        &mut uploads,
        &diff_ids,
        platform.as_ref(),
        options,
        proof,
    )
    .await;
    uploads.record_reused(&diff_ids, &reused, on_line);
    let compression = options.compression;
    if let Some(image) = rerun(
        fanout,
        compression,
        image_id,
        &diff_ids,
        &reused,
        &mut uploads,
        on_line,
    )
    .await
    {
        return Ok(image);
    }
    let pass: std::collections::HashSet<String> = reused.keys().cloned().collect();

    let (feeder, bytes) = Feeder::start(
        docker,
        image_id,
        started,
        options.network.stall_timeout,
        export::ExportStart::AfterSilence,
    );
    let pool = Arc::new(gzip::Pool::new(options.threads));
    let (event_tx, events) = tokio::sync::mpsc::channel::<ExportEvent>(4);
    let reader = {
        let pool = Arc::clone(&pool);
        let dir = options.spool_dir.clone();
        tokio::task::spawn_blocking(move || {
            export::read_export(bytes, &pool, compression, &dir, &pass, &event_tx)
        })
    };

    // Each layer streams to the registry as it is compressed; the next one is read
    // meanwhile.
    let mut compressed: HashMap<String, CompressedLayer> = HashMap::new();
    let rest = uploads
        .drive(
            events,
            reader,
            &feeder,
            export_error,
            on_line,
            |uploads, event, on_line| match event {
                ExportEvent::Layer { path, parts } => uploads.stream(&path, parts),
                ExportEvent::Compressed(layer) => {
                    on_line(&format!(
                        "{}: Compressed {} to {} in {:.1} s ({compression})",
                        short(&layer.diff_id),
                        mb(layer.uncompressed),
                        mb(layer.size),
                        layer.seconds
                    ));
                    compressed.insert(layer.path.clone(), layer);
                }
            },
        )
        .await?;
    drop(feeder);

    let saved = Saved::read(&rest, image_id).map_err(image_error)?;

    // Every layer's compressed blob; layers kept in memory are compressed now.
    let mut layers: Vec<LayerBlob> = Vec::with_capacity(saved.layers.len());
    let mut in_memory = Vec::new();
    for (path, diff_id) in saved.layers.iter().zip(&saved.diff_ids) {
        let content_error = |found: &str| {
            image_error(format!(
                "layer {path} has content {found} but the config says {diff_id}"
            ))
        };
        if let Some(layer) = compressed.get(path) {
            if &layer.diff_id != diff_id {
                return Err(content_error(&layer.diff_id));
            }
            layers.push(LayerBlob {
                digest: layer.digest.clone(),
                size: layer.size,
                codec: compression.codec(),
            });
        } else if let Some(passed) = rest.passed.get(path) {
            if passed != diff_id {
                return Err(content_error(passed));
            }
            let (blob, _) = reused
                .get(diff_id)
                .ok_or_else(|| image_error(format!("layer {path} was skipped but not reused")))?;
            layers.push(blob.layer());
        } else if let Some(raw) = rest.files.get(path) {
            let found = sha256_digest(raw);
            if &found != diff_id {
                return Err(content_error(&found));
            }
            let raw = raw.clone();
            let pool = Arc::clone(&pool);
            let packed =
                tokio::task::spawn_blocking(move || compression.compress_bytes(&pool, &raw))
                    .await
                    .map_err(|e| image_error(e.to_string()))?
                    .map_err(|e| image_error(format!("{} failed: {e}", compression.name())))?;
            let blob = Blob {
                digest: sha256_digest(&packed),
                size: packed.len() as u64,
                content: Content::Memory(Bytes::from(packed)),
            };
            layers.push(LayerBlob {
                digest: blob.digest.clone(),
                size: blob.size,
                codec: compression.codec(),
            });
            in_memory.push(blob);
        } else {
            return Err(image_error(format!("the export lacks layer {path}")));
        }
    }
    let config = (saved.config_digest.clone(), saved.config.len() as u64);
    in_memory.push(Blob {
        digest: config.0.clone(),
        size: config.1,
        content: Content::Memory(Bytes::from(saved.config)),
    });
    for blob in &in_memory {
        uploads.start(blob);
    }
    uploads.finish(on_line).await?;

    let format = ManifestFormat::for_layers(compression, layers.iter().map(|l| l.codec));
    let manifest = manifest::build(format, (&config.0, config.1), &layers);
    Ok(uploaded(
        manifest,
        &layers,
        config,
        &uploads,
        rest.passed.len(),
    ))
}

/// A rerun: the repository has every layer (known from `reused`) and the config, so the
/// manifest is built without exporting anything.
async fn rerun(
    fanout: &Fanout,
    compression: Compression,
    image_id: &str,
    diff_ids: &[String],
    reused: &HashMap<String, (super::reuse::KnownBlob, super::reuse::Reused)>,
    uploads: &mut Uploads,
    on_line: &mut dyn FnMut(&str),
) -> Option<UploadedImage> {
    if diff_ids.is_empty() || !diff_ids.iter().all(|d| reused.contains_key(d)) {
        return None;
    }
    let config_size = present_config(fanout.lead(), image_id).await?;
    if fanout.len() > 1 && !fanout.all_have_blob(image_id).await {
        return None;
    }
    on_line(&format!(
        "{}: Layer already exists (the image config)",
        short(image_id)
    ));
    let layers: Vec<LayerBlob> = diff_ids
        .iter()
        .filter_map(|d| reused.get(d).map(|(b, _)| b.layer()))
        .collect();
    uploads.record_present(image_id);
    let config = (image_id.to_string(), config_size);
    let format = ManifestFormat::for_layers(compression, layers.iter().map(|l| l.codec));
    let manifest = manifest::build(format, (image_id, config_size), &layers);
    Some(uploaded(manifest, &layers, config, uploads, reused.len()))
}

fn uploaded(
    manifest: PushedManifest,
    layers: &[LayerBlob],
    config: (String, u64),
    uploads: &Uploads,
    reused_layers: usize,
) -> UploadedImage {
    let blobs: Vec<(String, u64)> = layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .chain([config])
        .collect();
    UploadedImage::new(manifest, &blobs, &uploads.done, reused_layers)
}

/// The size of the image config in the repository, when it is there (its digest is the
/// image ID).
async fn present_config(reg: &crate::registry::Registry, image_id: &str) -> Option<u64> {
    if !image_id.starts_with("sha256:") {
        return None;
    }
    reg.with_retry("checking the image config", || reg.blob_size(image_id))
        .await
        .ok()
        .flatten()
}

/// What the export says the image is: `manifest.json`'s layer paths (links resolved), the
/// config, checked to be the image ID, and its `diff_ids`, as many as the layers.
struct Saved {
    layers: Vec<String>,
    config: Vec<u8>,
    config_digest: String,
    diff_ids: Vec<String>,
}

impl Saved {
    fn read(rest: &export::ExportRest, image_id: &str) -> Result<Self, String> {
        let manifest_json = rest
            .files
            .get("manifest.json")
            .ok_or("the export has no manifest.json")?;
        let saved: Vec<SavedImage> = serde_json::from_slice(manifest_json)
            .map_err(|e| format!("the export's manifest.json is invalid: {e}"))?;
        let saved = saved
            .into_iter()
            .next()
            .ok_or("the export's manifest.json is empty")?;
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
        let config = rest
            .files
            .get(&resolve(&saved.config))
            .ok_or_else(|| format!("the export lacks the config {}", saved.config))?
            .clone();
        let config_digest = sha256_digest(&config);
        if image_id.starts_with("sha256:") && config_digest != image_id {
            return Err(format!(
                "the exported config is {config_digest}, not the image ID"
            ));
        }
        let parsed: ImageConfig = serde_json::from_slice(&config)
            .map_err(|e| format!("the image config is invalid: {e}"))?;
        if parsed.rootfs.diff_ids.len() != saved.layers.len() {
            return Err(format!(
                "the config lists {} layers and the export {}",
                parsed.rootfs.diff_ids.len(),
                saved.layers.len()
            ));
        }
        Ok(Self {
            layers: saved.layers.iter().map(|p| resolve(p)).collect(),
            config,
            config_digest,
            diff_ids: parsed.rootfs.diff_ids,
        })
    }
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
