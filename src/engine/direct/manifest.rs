//! The schema 2 manifest: built from the config's and the layers' descriptors, put under
//! every tag (the first alone, then the others concurrently), and its digest checked
//! against the registry's `Docker-Content-Digest` each time.

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};

use super::export::sha256_digest;
use super::registry::{self, Registry};
use super::{DirectPushError, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE};

/// Tags put at once after the first.
const TAG_CONCURRENCY: usize = 4;

/// The manifest's JSON for a config and layers given as (digest, size).
pub fn build(config: (&str, u64), layers: &[(String, u64)]) -> String {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": registry::MANIFEST_V2,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "size": config.1,
            "digest": config.0,
        },
        "layers": layers.iter().map(|(digest, size)| serde_json::json!({
            "mediaType": LAYER_MEDIA_TYPE,
            "size": size,
            "digest": digest,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&manifest).unwrap_or_else(|_| manifest.to_string())
}

/// Puts the manifest under every tag, or by its digest when there are none (one
/// platform of an index); returns it and its digest.
pub async fn put(
    reg: &Registry,
    tags: &[String],
    config: (&str, u64),
    layers: &[(String, u64)],
    on_line: &mut impl FnMut(&str),
) -> Result<(String, String), DirectPushError> {
    let manifest = build(config, layers);
    let bytes = Bytes::from(manifest.clone());
    let digest = sha256_digest(&bytes);
    let Some((first, others)) = tags.split_first() else {
        put_one(reg, &digest, &bytes, &digest).await?;
        on_line(&format!("digest: {digest} size: {} (no tag)", bytes.len()));
        return Ok((manifest, digest));
    };
    put_one(reg, first, &bytes, &digest).await?;
    on_line(&format!("{first}: digest: {digest} size: {}", bytes.len()));
    let done: Vec<&String> = futures_util::stream::iter(others)
        .map(|tag| {
            let (bytes, digest) = (&bytes, &digest);
            async move {
                put_one(reg, tag, bytes, digest).await?;
                Ok::<_, DirectPushError>(tag)
            }
        })
        .buffer_unordered(TAG_CONCURRENCY)
        .try_collect()
        .await?;
    for tag in done {
        on_line(&format!("{tag}: digest: {digest} size: {}", bytes.len()));
    }
    Ok((manifest, digest))
}

async fn put_one(
    reg: &Registry,
    tag: &str,
    manifest: &Bytes,
    digest: &str,
) -> Result<(), DirectPushError> {
    let answered = reg
        .with_retry(&format!("putting the manifest for tag {tag}"), || {
            reg.put_manifest(tag, manifest.clone())
        })
        .await
        .map_err(|f| {
            DirectPushError::registry(reg, "putting the manifest of", format!("tag {tag}"), f)
        })?;
    match answered {
        Some(answered) if answered != digest => Err(DirectPushError::Registry {
            registry: reg.host.clone(),
            repository: reg.repository.clone(),
            subject: format!("tag {tag}"),
            operation: "putting the manifest of".into(),
            status: None,
            code: None,
            message: format!(
                "the registry answered digest {answered}, but the manifest sent is {digest}"
            ),
            attempts: 1,
        }),
        _ => Ok(()),
    }
}
