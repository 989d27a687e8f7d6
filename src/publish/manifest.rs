//! Manifests: the image manifest the classic store's push builds ([`build`]: Docker schema
//! 2 for gzip layers, OCI once one is zstd), and the
//! put of any manifest or index under references (tags or its digest): the first alone,
//! then the others concurrently, its digest checked against the registry's
//! `Docker-Content-Digest` each time ([`put`]).

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};

use super::compression::{LayerCodec, ManifestFormat};
use super::export::sha256_digest;
use super::DirectPushError;
use crate::registry::{self, rules, Registry};

/// A manifest (or index) as it is put: its bytes, their digest, size and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    /// The sha256 of `bytes`: the image's digest in the registry.
    pub digest: String,
    /// The `Content-Type` it is put with (and the `mediaType` inside it).
    pub media_type: String,
    pub size: u64,
    pub bytes: Bytes,
}

impl PushedManifest {
    /// A manifest of `media_type` put exactly as `bytes`.
    pub fn new(media_type: impl Into<String>, bytes: Bytes) -> Self {
        Self {
            digest: sha256_digest(&bytes),
            media_type: media_type.into(),
            size: bytes.len() as u64,
            bytes,
        }
    }

    /// The manifest as text (manifests are JSON).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A layer blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub digest: String,
    pub size: u64,
    pub codec: LayerCodec,
}

/// The image manifest in `format` for a config and layers given as (digest, size), each
/// layer named with its codec's media type in that format.
pub fn build(format: ManifestFormat, config: (&str, u64), layers: &[LayerBlob]) -> PushedManifest {
    let media_type = match format {
        ManifestFormat::Docker => registry::MANIFEST_V2,
        ManifestFormat::Oci => registry::OCI_MANIFEST,
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": format.config_media_type(),
            "size": config.1,
            "digest": config.0,
        },
        "layers": layers.iter().map(|layer| serde_json::json!({
            "mediaType": format.layer_media_type(layer.codec),
            "size": layer.size,
            "digest": layer.digest,
        })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_else(|_| manifest.to_string());
    PushedManifest::new(media_type, Bytes::from(text))
}

/// Puts `manifest` under every reference (tags, or its own digest to push it untagged);
/// each answer must be its digest. Nothing is put when `references` is empty.
pub async fn put(
    reg: &Registry,
    references: &[String],
    manifest: &PushedManifest,
    on_line: &mut impl FnMut(&str),
) -> Result<(), DirectPushError> {
    let Some((first, others)) = references.split_first() else {
        return Ok(());
    };
    let line = |reference: &str| {
        format!(
            "{reference}: digest: {} size: {}",
            manifest.digest, manifest.size
        )
    };
    put_one(reg, first, manifest).await?;
    on_line(&line(first));
    let done: Vec<&String> = futures_util::stream::iter(others)
        .map(|reference| async move {
            put_one(reg, reference, manifest).await?;
            Ok::<_, DirectPushError>(reference)
        })
        .buffer_unordered(rules::TAG_CONCURRENCY)
        .try_collect()
        .await?;
    for reference in done {
        on_line(&line(reference));
    }
    Ok(())
}

fn subject(reference: &str) -> String {
    if reference.starts_with("sha256:") {
        format!("manifest {reference}")
    } else {
        format!("tag {reference}")
    }
}

async fn put_one(
    reg: &Registry,
    reference: &str,
    manifest: &PushedManifest,
) -> Result<(), DirectPushError> {
    let answered = reg
        .with_retry(&format!("putting the manifest for {reference}"), || {
            reg.put_manifest(reference, &manifest.media_type, manifest.bytes.clone())
        })
        .await
        .map_err(|f| {
            DirectPushError::registry(reg, "putting the manifest of", subject(reference), f)
        })?;
    match answered {
        Some(answered) if answered != manifest.digest => Err(DirectPushError::Registry {
            registry: reg.host.clone(),
            repository: reg.repository.clone(),
            subject: subject(reference),
            operation: "putting the manifest of".into(),
            status: None,
            code: None,
            message: format!(
                "the registry answered digest {answered}, but the manifest sent is {}",
                manifest.digest
            ),
            attempts: 1,
        }),
        _ => Ok(()),
    }
}
