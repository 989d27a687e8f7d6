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
//! The pairing of a `diff_id` with a blob is another image's say, which no registry
//! checks, so a blob stands in for a local layer only once it is proven to be it
//! ([`Proof`]): on the classic store, by reading it ([`super::verify`]); on the containerd
//! store, by its digest, as the engine's own manifest names its layers' blobs. `no-cache`
//! reuses nothing ([`sources`]).
//!
//! This is an optimisation: a source that cannot be read, a `HEAD`, a proof or a mount
//! that fails, only means the layer is compressed and uploaded as usual. gzip layers are
//! reused by every push, zstd layers by a zstd push (whose manifest is OCI anyway).

use std::collections::{HashMap, HashSet};

use futures_util::stream::{self, StreamExt as _};
use serde::Deserialize;

use super::compression::{Compression, LayerCodec};
use super::descriptor::{self, Descriptor};
use super::export::sha256_digest;
use super::manifest::LayerBlob;
use super::verify::Proofs;
use crate::platform::Platform;
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
    /// That image, `host/repository:tag` or `@digest` (for the log).
    pub image: String,
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

/// How a known blob is shown to be the local layer it would stand in for.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'p> {
    /// Read once and hashed ([`super::verify`]): the classic store's layers are
    /// uncompressed, so only the blob's decompressed bytes say which layer it holds.
    Read(&'p Proofs),
    /// By digest: the containerd store's manifest, pushed as it is, names each layer's
    /// compressed blob, and the export passes over a blob only when its bytes hash to a
    /// known digest. A known blob of another digest is never in our manifest.
    Digest,
}

impl Proof<'_> {
    /// Whether `blob`, read from `repository` if need be, is the layer `diff_id`.
    async fn holds(
        self,
        reg: &Registry,
        repository: &str,
        blob: &KnownBlob,
        diff_id: &str,
    ) -> bool {
        match self {
            Self::Digest => true,
            Self::Read(proofs) => proofs.proves(reg, repository, blob, diff_id).await,
        }
    }
}

/// The images whose layers a push may reuse, most likely first: the repository's image
/// under the first tag (the previous push), the cache sources, the base images. None with
/// `no-cache`, which asks for nothing from earlier builds.
pub fn sources(
    previous: &str,
    cache_from: &[String],
    base_images: &[String],
    no_cache: bool,
) -> Vec<String> {
    if no_cache {
        return Vec::new();
    }
    std::iter::once(previous)
        .chain(cache_from.iter().map(String::as_str))
        .chain(base_images.iter().map(String::as_str))
        .map(str::to_string)
        .collect()
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

/// Every layer of the `sources` images (in the registry `reg` serves) by `diff_id`; from
/// an index, its image for `platform` (the built image's). The first source that lists a
/// layer wins, so put the most likely one first.
pub async fn known_layers(
    reg: &Registry,
    sources: &[String],
    platform: Option<&Platform>,
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

/// Each of `diff_ids` that `known` lists, that our repository has or could mount, and
/// whose blob is shown to be that layer by `proof`, with its blob. Checks run
/// concurrently; a failed check leaves the layer out.
pub async fn resolve(
    reg: &Registry,
    diff_ids: &[String],
    known: &HashMap<String, KnownBlob, impl std::hash::BuildHasher>,
    mounting: Mounting,
    proof: Proof<'_>,
) -> HashMap<String, (KnownBlob, Reused)> {
    let unique: HashSet<&String> = diff_ids.iter().collect();
    stream::iter(unique.into_iter().filter_map(|d| Some((d, known.get(d)?))))
        .map(|(diff_id, blob)| async move {
            let how = place(reg, diff_id, blob, mounting, proof).await;
            how.map(|how| (diff_id.clone(), (blob.clone(), how)))
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|resolved| async move { resolved })
        .collect()
        .await
}

/// Where `blob`, once proven to be the layer `diff_id`, comes from: our repository, or a
/// mount from the repository whose manifest lists it (the condition ECR sets for a mount,
/// with `BLOB_MOUNTING` on: see [`Mounting`]). The proof reads the blob where it is, and
/// only when it could be used (nothing is read for a blob that could not be mounted
/// anyway, nothing is mounted that is not proven). A mount ECR declines opens an upload
/// session, which the registry client keeps for the next upload.
async fn place(
    reg: &Registry,
    diff_id: &str,
    blob: &KnownBlob,
    mounting: Mounting,
    proof: Proof<'_>,
) -> Option<Reused> {
    let digest = &blob.digest;
    let check = reg
        .with_retry(&format!("checking blob {digest}"), || reg.has_blob(digest))
        .await;
    match check {
        Ok(true) => {
            let ours = &reg.repository;
            return proof
                .holds(reg, ours, blob, diff_id)
                .await
                .then_some(Reused::Present);
        }
        Ok(false) => {}
        Err((failure, _)) => {
            tracing::debug!("checking {digest} failed: {}", failure.describe());
            return None;
        }
    }
    if blob.repository == reg.repository
        || !mounting.may_mount()
        || !proof.holds(reg, &blob.repository, blob, diff_id).await
    {
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
    platform: Option<&Platform>,
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
        let entry = descriptor::pick_image(&manifest.manifests, platform)
            .ok_or_else(|| format!("no manifest for {}", descriptor::describe(platform)))?;
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
                image: image_reference(&reg.host, repository, reference),
            };
            Some((diff_id, blob))
        })
        .collect())
}

/// `host/repository:tag`, or `host/repository@sha256:…`, as an image is named.
fn image_reference(host: &str, repository: &str, reference: &str) -> String {
    let separator = if reference.contains(':') { '@' } else { ':' };
    format!("{host}/{repository}{separator}{reference}")
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

    /// The previous image first, then the cache sources, then the base images; none at
    /// all with `no-cache`.
    #[test]
    fn no_cache_reuses_nothing() {
        let cache = vec!["r/c:1".to_string()];
        let bases = vec!["r/b:1".to_string()];
        assert_eq!(
            sources("r/app:v1", &cache, &bases, false),
            ["r/app:v1", "r/c:1", "r/b:1"]
        );
        assert!(sources("r/app:v1", &cache, &bases, true).is_empty());
    }
}
