//! Layers that need neither compressing nor uploading.
//!
//! An image already in the registry (the repository's previous image, a `cache-from`
//! image, a base image from the same registry) maps each of its uncompressed layers (its
//! config's `diff_ids`) to the compressed blob its manifest lists. A layer of ours with one
//! of those `diff_ids` is looked for in our repository by `HEAD`, else mounted from the
//! source repository; either way the export only streams past it (hashed, to prove it is
//! that layer). The daemon's pusher does the same with the digests it remembers from
//! earlier pulls and pushes, which a fresh CI runner does not have.
//!
//! This is an optimisation: a source that cannot be read, a `HEAD` or a mount that fails,
//! only means the layer is compressed and uploaded as usual. gzip layers are reused by
//! every push, zstd layers by a zstd push (whose manifest is OCI anyway).

use std::collections::{HashMap, HashSet};

use futures_util::stream::{self, StreamExt as _};
use serde::Deserialize;

use super::compression::{Compression, LayerCodec};
use super::descriptor::Descriptor;
use super::export::sha256_digest;
use super::manifest::LayerBlob;
use crate::registry::{Mount, Mounting, Registry, MANIFEST_LIST_V2, OCI_INDEX};

/// Source images read at most (each costs two or three requests).
pub const MAX_SOURCES: usize = 8;
/// A config larger than this is not read (an image config is a few KiB).
const CONFIG_LIMIT: u64 = 4 << 20;
/// Layers checked or mounted at once.
const CONCURRENCY: usize = 4;

/// A compressed blob in the registry that holds a given uncompressed layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBlob {
    pub digest: String,
    pub size: u64,
    /// How the blob is compressed (its manifest's layer media type).
    pub codec: LayerCodec,
    /// The repository whose image lists it.
    pub repository: String,
}

impl KnownBlob {
    /// The blob as a manifest of ours names it.
    pub fn layer(&self) -> LayerBlob {
        LayerBlob {
            digest: self.digest.clone(),
            size: self.size,
            codec: self.codec,
        }
    }
}

/// How a known layer ended up in our repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reused {
    /// Our repository has it already.
    Present,
    /// Mounted from the source repository.
    Mounted,
}

/// The platform an index entry must match: the built image's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// `host/repo:tag` or `host/repo@sha256:…` as (repository, reference), if `image` is in
/// the registry at `host`; a missing tag means `latest`.
pub fn split_reference(host: &str, image: &str) -> Option<(String, String)> {
    let rest = image.strip_prefix(host)?.strip_prefix('/')?;
    let (repository, reference) = match rest.split_once('@') {
        Some((repository, digest)) => (repository, digest),
        None => match rest.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, tag),
            _ => (rest, "latest"),
        },
    };
    (!repository.is_empty() && !reference.is_empty())
        .then(|| (repository.to_string(), reference.to_string()))
}

/// Every layer of the `sources` images (in the registry `reg` serves) by `diff_id`. The
/// first source that lists a layer wins, so put the most likely one first.
pub async fn known_layers(
    reg: &Registry,
    sources: &[String],
    platform: &Platform,
    compression: Compression,
) -> HashMap<String, KnownBlob> {
    let mut seen = HashSet::new();
    let wanted: Vec<(String, String)> = sources
        .iter()
        .filter_map(|image| split_reference(&reg.host, image))
        .filter(|source| seen.insert(source.clone()))
        .take(MAX_SOURCES)
        .collect();
    let read = stream::iter(wanted)
        .map(|(repository, reference)| async move {
            let layers = read_source(reg, &repository, &reference, platform, compression).await;
            (repository, reference, layers)
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut known = HashMap::new();
    for (repository, reference, layers) in read {
        match layers {
            Ok(layers) => {
                tracing::debug!(
                    "{} reusable layer(s) in {repository}:{reference}",
                    layers.len()
                );
                for (diff_id, blob) in layers {
                    known.entry(diff_id).or_insert(blob);
                }
            }
            Err(why) => tracing::debug!("not reusing layers of {repository}:{reference}: {why}"),
        }
    }
    known
}

/// Each of `diff_ids` that `known` lists and that our repository has or could mount,
/// with its blob. Checks run concurrently; a failed check leaves the layer out.
pub async fn resolve(
    reg: &Registry,
    diff_ids: &[String],
    known: &HashMap<String, KnownBlob, impl std::hash::BuildHasher>,
    mounting: Mounting,
) -> HashMap<String, (KnownBlob, Reused)> {
    let unique: HashSet<&String> = diff_ids.iter().collect();
    stream::iter(unique.into_iter().filter_map(|d| Some((d, known.get(d)?))))
        .map(|(diff_id, blob)| async move {
            let how = place(reg, blob, mounting).await;
            how.map(|how| (diff_id.clone(), (blob.clone(), how)))
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|resolved| async move { resolved })
        .collect()
        .await
}

/// Where `blob` comes from: our repository, or a mount from the repository whose
/// manifest lists it (the condition ECR sets for a mount, with `BLOB_MOUNTING` on: see
/// [`Mounting`]). A mount ECR declines opens an upload session, which the registry client
/// keeps for the next upload.
async fn place(reg: &Registry, blob: &KnownBlob, mounting: Mounting) -> Option<Reused> {
    let digest = &blob.digest;
    let check = reg
        .with_retry(&format!("checking blob {digest}"), || reg.has_blob(digest))
        .await;
    match check {
        Ok(true) => return Some(Reused::Present),
        Ok(false) => {}
        Err((failure, _)) => {
            tracing::debug!("checking {digest} failed: {}", failure.describe());
            return None;
        }
    }
    if blob.repository == reg.repository || !mounting.may_mount() {
        return None;
    }
    let mounted = reg
        .with_retry(&format!("mounting blob {digest}"), || {
            reg.mount(digest, &blob.repository)
        })
        .await;
    match mounted {
        Ok(Mount::Mounted) => Some(Reused::Mounted),
        Ok(Mount::NotMounted) => None,
        Err((failure, _)) => {
            tracing::debug!(
                "mounting {digest} from {} failed: {}",
                blob.repository,
                failure.describe()
            );
            None
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    /// An index's (or manifest list's) entries.
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One source image's layers by `diff_id`, those a push of `compression` may name.
async fn read_source(
    reg: &Registry,
    repository: &str,
    reference: &str,
    platform: &Platform,
    compression: Compression,
) -> Result<Vec<(String, KnownBlob)>, String> {
    let fetch = |reference: String| async move {
        let (content_type, body) = reg
            .with_retry(&format!("reading {repository}:{reference}"), || {
                reg.get_manifest(repository, &reference)
            })
            .await
            .map_err(|(failure, _)| failure.describe())?;
        let manifest: Manifest = serde_json::from_slice(&body)
            .map_err(|e| format!("the manifest is not valid JSON: {e}"))?;
        let media_type = manifest.media_type.clone().unwrap_or(content_type);
        Ok::<_, String>((media_type, manifest))
    };
    let (mut media_type, mut manifest) = fetch(reference.to_string()).await?;
    if media_type == MANIFEST_LIST_V2 || media_type == OCI_INDEX {
        let entry = pick_platform(&manifest.manifests, platform)
            .ok_or_else(|| format!("no manifest for {}", platform.describe()))?;
        (media_type, manifest) = fetch(entry.digest.clone()).await?;
        if media_type == MANIFEST_LIST_V2 || media_type == OCI_INDEX {
            return Err("an index inside an index".into());
        }
    }
    let config = manifest.config.ok_or("the manifest has no config")?;
    if config.size > CONFIG_LIMIT {
        return Err(format!("the config is {} bytes", config.size));
    }
    let bytes = reg
        .with_retry(&format!("reading config {}", config.digest), || {
            reg.get_blob(repository, &config.digest, config.size)
        })
        .await
        .map_err(|(failure, _)| failure.describe())?;
    if sha256_digest(&bytes) != config.digest {
        return Err(format!("the config blob is not {}", config.digest));
    }
    let config: Config =
        serde_json::from_slice(&bytes).map_err(|e| format!("the config is not valid JSON: {e}"))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err("the config and the manifest list different layer counts".into());
    }
    Ok(config
        .rootfs
        .diff_ids
        .into_iter()
        .zip(manifest.layers)
        .filter(|(_, layer)| compression.takes_layer(&layer.media_type))
        .filter_map(|(diff_id, layer)| {
            let blob = KnownBlob {
                codec: LayerCodec::of(&layer.media_type)?,
                digest: layer.digest,
                size: layer.size,
                repository: repository.to_string(),
            };
            Some((diff_id, blob))
        })
        .collect())
}

/// The index entry for `platform`.
fn pick_platform<'m>(entries: &'m [Descriptor], platform: &Platform) -> Option<&'m Descriptor> {
    entries.iter().find(|entry| platform.matches(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags, digests, a registry port-less host, a missing tag, and images elsewhere.
    #[test]
    fn references_split_into_repository_and_reference() {
        let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        let split = |image: &str| split_reference(host, image);
        assert_eq!(
            split(&format!("{host}/team/base:1.2")),
            Some(("team/base".into(), "1.2".into()))
        );
        assert_eq!(
            split(&format!("{host}/base@sha256:abc")),
            Some(("base".into(), "sha256:abc".into()))
        );
        assert_eq!(
            split(&format!("{host}/base")),
            Some(("base".into(), "latest".into()))
        );
        assert_eq!(split("docker.io/library/alpine:3"), None);
        assert_eq!(split(&format!("{host}x/base:1")), None);
        assert_eq!(split(&format!("{host}/")), None);
    }

    /// An index entry is chosen by os and architecture, and by variant when both have one.
    #[test]
    fn index_entries_match_the_platform() {
        let entries: Vec<Descriptor> = serde_json::from_str(
            r#"[
              {"digest": "a", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
              {"digest": "b", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
              {"digest": "c", "platform": {"os": "linux", "architecture": "amd64"}},
              {"digest": "d"}
            ]"#,
        )
        .unwrap();
        let platform = |architecture: &str, variant: Option<&str>| Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        };
        let pick = |p: Platform| pick_platform(&entries, &p).map(|d| d.digest.clone());
        assert_eq!(pick(platform("arm", Some("v7"))), Some("b".into()));
        assert_eq!(pick(platform("amd64", Some("v3"))), Some("c".into()));
        assert_eq!(pick(platform("arm64", None)), None);
    }
}
