//! The image index of a multi-platform push. Each platform's image is pushed first as a
//! manifest of its own, by digest and without a tag; then one index listing exactly those
//! manifests, with their platforms and nothing else (no attestation manifests), is put
//! under every tag. It is a Docker manifest list when every child is a Docker schema 2
//! manifest (what ECR's console and older clients know best), else an OCI image index.

use bytes::Bytes;

use super::descriptor::Descriptor;
use super::manifest::{self, PushedManifest};
use super::DirectPushError;
use crate::platform::Platform;
use crate::registry::{self, Registry};

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
    /// The descriptor of `manifest`, pushed as `platform`'s image.
    pub fn of(platform: Platform, manifest: &PushedManifest) -> Self {
        Self {
            platform,
            digest: manifest.digest.clone(),
            media_type: manifest.media_type.clone(),
            size: manifest.size,
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

/// The platforms and digests an index lists, attestation manifests (and entries of no
/// known platform) left out; `None` when `manifest` is not an index.
pub fn entries(manifest: &str) -> Option<Vec<(Platform, String)>> {
    #[derive(serde::Deserialize)]
    struct Listed {
        manifests: Vec<Descriptor>,
    }
    let listed: Listed = serde_json::from_str(manifest).ok()?;
    Some(
        listed
            .manifests
            .into_iter()
            .filter(|d| !d.is_attestation())
            .filter_map(|d| Some((d.platform()?, d.digest)))
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

/// The index of some children, built (so its digest is known) and not yet put.
#[derive(Debug, Clone)]
pub struct Index {
    pub manifest: PushedManifest,
    pub kind: IndexKind,
}

impl Index {
    pub fn of(children: &[Child]) -> Self {
        let (manifest, kind) = build(children);
        Self {
            manifest: PushedManifest::new(kind.media_type(), Bytes::from(manifest)),
            kind,
        }
    }

    /// Puts the index under every tag (the first alone, then the others concurrently;
    /// none when every tag holds it already), checking the registry's digest each time
    /// ([`manifest::put`]).
    pub async fn put(
        self,
        reg: &Registry,
        tags: &[String],
        mut on_line: impl FnMut(&str),
    ) -> Result<IndexPushed, DirectPushError> {
        manifest::put(reg, tags, &self.manifest, &mut on_line).await?;
        Ok(IndexPushed {
            manifest: self.manifest.text(),
            digest: self.manifest.digest,
            kind: self.kind,
        })
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

    /// Attestation manifests are not platforms, whichever mark they carry (BuildKit's
    /// `unknown/unknown` platform, its reference-type annotation, or both); a spelled-out
    /// default variant reads back normalised.
    #[test]
    fn attestations_are_not_entries() {
        let index = r#"{"manifests":[
          {"digest":"sha256:1","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
          {"digest":"sha256:2","platform":{"os":"unknown","architecture":"unknown"},
           "annotations":{"vnd.docker.reference.type":"attestation-manifest"}},
          {"digest":"sha256:3","platform":{"os":"linux","architecture":"amd64"},
           "annotations":{"vnd.docker.reference.type":"attestation-manifest"}},
          {"digest":"sha256:4","platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        let read = entries(index).unwrap();
        assert_eq!(read.len(), 1, "{read:?}");
        assert_eq!(read[0].0.to_string(), "linux/arm64");
        assert_eq!(read[0].1, "sha256:1");
    }
}
