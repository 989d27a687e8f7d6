//! The image index of a multi-platform push. Each platform's image is pushed first as a
//! manifest of its own, by digest and without a tag; then one index listing exactly those
//! manifests, with their platforms and nothing else (no attestation manifests), is put
//! under every tag. It is a Docker manifest list when every child is a Docker schema 2
//! manifest (what ECR's console and older clients know best), else an OCI image index.
//!
//! Merge note: the `containerd` branch splits the direct push into `upload_image` and
//! `manifest::put` by references with a `PushedManifest` (bytes, digest, media type).
//! Once both are in, a child is `upload_image` + `manifest::put(&[digest])`, and
//! [`put`] here becomes `manifest::put(tags, PushedManifest::new(kind.media_type(), …))`,
//! so `put_one` below goes away.

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, StatusCode};

use super::export::sha256_digest;
use super::registry::{self, Failure, Registry};
use super::DirectPushError;
use crate::ecr::RegistryAuth;
use crate::engine::push::RetryPolicy;
use crate::inputs::Platform;

/// Tags put at once after the first.
const TAG_CONCURRENCY: usize = 4;

/// One platform's image, pushed by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub platform: Platform,
    pub digest: String,
    /// The manifest's media type, as put.
    pub media_type: String,
    /// The manifest's size in bytes.
    pub size: u64,
}

impl Child {
    /// The descriptor of a manifest put as `manifest` (its `mediaType` field says which
    /// kind; schema 2 when it has none).
    pub fn of_manifest(platform: Platform, digest: String, manifest: &str) -> Self {
        let media_type = serde_json::from_str::<serde_json::Value>(manifest)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(ToString::to_string))
            .unwrap_or_else(|| registry::MANIFEST_V2.to_string());
        Self {
            platform,
            digest,
            media_type,
            size: manifest.len() as u64,
        }
    }
}

/// The kind of index, from its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// Every child is Docker schema 2.
    DockerManifestList,
    OciIndex,
}

impl IndexKind {
    pub fn for_children(children: &[Child]) -> Self {
        if children
            .iter()
            .all(|c| c.media_type == registry::MANIFEST_V2)
        {
            Self::DockerManifestList
        } else {
            Self::OciIndex
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::DockerManifestList => registry::MANIFEST_LIST_V2,
            Self::OciIndex => registry::OCI_INDEX,
        }
    }
}

/// The index's JSON, children in the order given.
pub fn build(children: &[Child]) -> (String, IndexKind) {
    let kind = IndexKind::for_children(children);
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|child| {
            let mut platform = serde_json::json!({
                "architecture": child.platform.architecture,
                "os": child.platform.os,
            });
            if !child.platform.variant.is_empty() {
                platform["variant"] = child.platform.variant.clone().into();
            }
            serde_json::json!({
                "mediaType": child.media_type,
                "size": child.size,
                "digest": child.digest,
                "platform": platform,
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": kind.media_type(),
        "manifests": manifests,
    });
    let text = serde_json::to_string_pretty(&index).unwrap_or_else(|_| index.to_string());
    (text, kind)
}

/// The platforms and digests an index lists, attestation manifests left out; `None` when
/// `manifest` is not an index.
pub fn entries(manifest: &str) -> Option<Vec<(Platform, String)>> {
    let value: serde_json::Value = serde_json::from_str(manifest).ok()?;
    let listed = value.get("manifests")?.as_array()?;
    Some(
        listed
            .iter()
            .filter(|m| {
                // BuildKit marks attestations with an unknown/unknown platform.
                m["annotations"]["vnd.docker.reference.type"].as_str()
                    != Some("attestation-manifest")
            })
            .filter_map(|m| {
                let p = &m["platform"];
                let text = format!(
                    "{}/{}{}",
                    p["os"].as_str()?,
                    p["architecture"].as_str()?,
                    p["variant"]
                        .as_str()
                        .filter(|v| !v.is_empty())
                        .map(|v| format!("/{v}"))
                        .unwrap_or_default()
                );
                Some((
                    Platform::parse(&text).ok()?,
                    m["digest"].as_str()?.to_string(),
                ))
            })
            .collect(),
    )
}

/// A put index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPushed {
    pub digest: String,
    pub kind: IndexKind,
    pub manifest: String,
}

/// Puts the index of `children` under every tag (the first alone, then the others
/// concurrently), checking the registry's digest each time.
pub async fn put(
    auth: &RegistryAuth,
    repository: &str,
    tags: &[String],
    retry: RetryPolicy,
    network: &crate::network::Network,
    children: &[Child],
    mut on_line: impl FnMut(&str),
) -> Result<IndexPushed, DirectPushError> {
    let reg = Registry::connect(auth, repository, retry, network)?;
    let (manifest, kind) = build(children);
    let bytes = Bytes::from(manifest.clone());
    let digest = sha256_digest(&bytes);
    let Some((first, others)) = tags.split_first() else {
        return Err(DirectPushError::Image {
            image: digest,
            registry: auth.registry.clone(),
            message: "no tags to put the index under".into(),
        });
    };
    let media_type = kind.media_type();
    put_one(&reg, first, &bytes, &digest, media_type).await?;
    on_line(&format!(
        "{first}: index digest: {digest} size: {}",
        bytes.len()
    ));
    let done: Vec<&String> = futures_util::stream::iter(others)
        .map(|tag| {
            let (reg, bytes, digest) = (&reg, &bytes, &digest);
            async move {
                put_one(reg, tag, bytes, digest, media_type).await?;
                Ok::<_, DirectPushError>(tag)
            }
        })
        .buffer_unordered(TAG_CONCURRENCY)
        .try_collect()
        .await?;
    for tag in done {
        on_line(&format!(
            "{tag}: index digest: {digest} size: {}",
            bytes.len()
        ));
    }
    Ok(IndexPushed {
        digest,
        kind,
        manifest,
    })
}

async fn put_one(
    reg: &Registry,
    tag: &str,
    manifest: &Bytes,
    digest: &str,
    media_type: &str,
) -> Result<(), DirectPushError> {
    let url = reg.url(&format!("manifests/{tag}"));
    let answered = reg
        .with_retry(&format!("putting the index for tag {tag}"), || async {
            let answer = reg
                .send(
                    Method::PUT,
                    &url,
                    &[(CONTENT_TYPE.as_str(), media_type.to_string())],
                    manifest.clone(),
                )
                .await?;
            if answer.status == StatusCode::CREATED || answer.status == StatusCode::OK {
                Ok(answer
                    .header("docker-content-digest")
                    .map(ToString::to_string))
            } else {
                Err(Failure::from_answer(&answer))
            }
        })
        .await
        .map_err(|f| {
            DirectPushError::registry(reg, "putting the index of", format!("tag {tag}"), f)
        })?;
    match answered {
        Some(answered) if answered != digest => Err(DirectPushError::Registry {
            registry: reg.host.clone(),
            repository: reg.repository.clone(),
            subject: format!("tag {tag}"),
            operation: "putting the index of".into(),
            status: None,
            code: None,
            message: format!(
                "the registry answered digest {answered}, but the index sent is {digest}"
            ),
            attempts: 1,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(platform: &str, media_type: &str) -> Child {
        Child {
            platform: Platform::parse(platform).unwrap(),
            digest: format!("sha256:{}", "a".repeat(64)),
            media_type: media_type.into(),
            size: 400,
        }
    }

    /// Schema 2 children make a Docker manifest list; one OCI child makes an OCI index.
    /// Entries carry the platform (with its variant) and read back the same.
    #[test]
    fn the_index_kind_follows_the_children() {
        let docker = [
            child("linux/amd64", registry::MANIFEST_V2),
            child("linux/arm/v7", registry::MANIFEST_V2),
        ];
        let (text, kind) = build(&docker);
        assert_eq!(kind, IndexKind::DockerManifestList);
        assert!(text.contains(registry::MANIFEST_LIST_V2));
        let read = entries(&text).unwrap();
        assert_eq!(read[1].0.to_string(), "linux/arm/v7");
        let mixed = [
            child("linux/amd64", registry::MANIFEST_V2),
            child("linux/arm64", registry::OCI_MANIFEST),
        ];
        assert_eq!(build(&mixed).1, IndexKind::OciIndex);
        assert!(entries(r#"{"schemaVersion":2,"config":{}}"#).is_none());
    }

    /// Attestation manifests (BuildKit's `unknown/unknown` entries) are not platforms.
    #[test]
    fn attestations_are_not_entries() {
        let index = r#"{"manifests":[
          {"digest":"sha256:1","platform":{"os":"linux","architecture":"amd64"}},
          {"digest":"sha256:2","platform":{"os":"unknown","architecture":"unknown"},
           "annotations":{"vnd.docker.reference.type":"attestation-manifest"}}]}"#;
        let read = entries(index).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].1, "sha256:1");
    }
}
