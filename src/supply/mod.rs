//! What travels with an image besides its layers: its SLSA provenance ([`provenance`])
//! and, with `sign: kms`, cosign's signature and signed attestation ([`cosign`]), each an
//! OCI 1.1 *referrer* of the image manifest (an artifact manifest whose `subject` names
//! it), so the tag stays one image manifest (or an index of exactly the platforms) and
//! ECR replicates the referrers and removes them with their subject.
//!
//! An [`Attachment`] is an artifact described by its parts (`artifactType`, blobs with
//! their annotations); given the [`Subject`] it refers to, it becomes an [`Artifact`]:
//! manifest bytes and blobs, ready to push. cosign's formats produce [`Artifact`]s
//! directly. A new kind of attachment (an SBOM) is a new predicate and artifact type,
//! not new plumbing: the publish phase pushes any artifact the same way
//! (`publish::attach`).
//!
//! Everything here is pure, bytes in and bytes out, but for the [`Signer`] it is handed
//! (AWS KMS in [`crate::ecr::kms`]; a local key in tests).

pub mod cosign;
pub mod provenance;

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;

use crate::publish::export::sha256_digest;
use crate::publish::manifest::PushedManifest;
use crate::registry::OCI_MANIFEST;

/// The media type of the empty JSON object `{}` (image-spec 1.1, "Guidance for an empty
/// descriptor"): the config of an artifact that has none.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty JSON object itself.
pub const EMPTY_JSON: &[u8] = b"{}";

/// Signs a message as a verifier reads the signature back: the signer hashes `message`
/// itself (with its algorithm's hash), and answers the signature's bytes (DER for
/// ECDSA, as cosign's verifiers read it).
///
/// The returned future is `Send`, so a signature can be made inside a spawned task.
pub trait Signer {
    fn sign(&self, message: &[u8]) -> impl Future<Output = anyhow::Result<Vec<u8>>> + Send;
}

/// The manifest an attachment refers to, as its `subject` descriptor names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl From<&PushedManifest> for Subject {
    fn from(manifest: &PushedManifest) -> Self {
        Self {
            media_type: manifest.media_type.clone(),
            digest: manifest.digest.clone(),
            size: manifest.size,
        }
    }
}

/// A blob a manifest names, to be uploaded before the manifest is put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub media_type: String,
    pub bytes: Bytes,
}

/// A manifest ready to push: upload `blobs` (those the registry lacks), then put
/// `manifest` by its digest, or under `tag` when it has one (cosign's `sha256-<hex>.sig`
/// and `.att`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub tag: Option<String>,
    pub manifest: PushedManifest,
    pub blobs: Vec<Blob>,
}

impl Artifact {
    /// The same artifact without its `subject`: for an image index, to which ECR has
    /// refused referrers (aws/containers-roadmap#2783); cosign finds it by its tag.
    pub fn without_subject(self) -> anyhow::Result<Self> {
        let mut doc: serde_json::Value = serde_json::from_slice(&self.manifest.bytes)?;
        if let Some(object) = doc.as_object_mut() {
            object.remove("subject");
        }
        let bytes = Bytes::from(serde_json::to_vec(&doc)?);
        Ok(Self {
            manifest: PushedManifest::new(self.manifest.media_type, bytes),
            ..self
        })
    }
}

/// A blob an attachment carries, with the annotations of its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedBlob {
    pub media_type: String,
    pub bytes: Bytes,
    pub annotations: BTreeMap<String, String>,
}

impl AttachedBlob {
    pub fn digest(&self) -> String {
        sha256_digest(&self.bytes)
    }

    fn descriptor(&self) -> serde_json::Value {
        let mut descriptor = serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest(),
            "size": self.bytes.len(),
        });
        if !self.annotations.is_empty() {
            descriptor["annotations"] = serde_json::json!(self.annotations);
        }
        descriptor
    }

    fn blob(&self) -> Blob {
        Blob {
            digest: self.digest(),
            media_type: self.media_type.clone(),
            bytes: self.bytes.clone(),
        }
    }
}

/// What an attachment is, for the summary, the outputs and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttachmentKind {
    /// The SLSA provenance, unsigned.
    Provenance,
    /// The SLSA provenance in a signed DSSE envelope (cosign's attestation).
    SignedProvenance,
    /// cosign's signature of the manifest.
    Signature,
    /// ECR's managed signature (a Notary Project signature ECR attached).
    EcrSignature,
}

impl AttachmentKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Provenance => "provenance",
            Self::SignedProvenance => "signed provenance",
            Self::Signature => "signature",
            Self::EcrSignature => "ECR managed signature",
        }
    }

    /// Whether a registry that refuses it fails the step: a signature was asked for;
    /// a provenance alone is worth a warning, and the image stays pushed.
    pub fn required(self) -> bool {
        !matches!(self, Self::Provenance)
    }
}

/// One artifact attached to an image manifest, described by its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The manifest's `artifactType`, which the referrers API filters on.
    pub artifact_type: String,
    pub layers: Vec<AttachedBlob>,
}

impl Attachment {
    /// The OCI image manifest that attaches it to `subject` (image-spec 1.1: an
    /// `artifactType`, the empty config, a `subject`), with its blobs. Deterministic:
    /// the same attachment and subject give the same digest.
    pub fn artifact(&self, subject: &Subject) -> Artifact {
        let config = AttachedBlob {
            media_type: EMPTY_MEDIA_TYPE.to_string(),
            bytes: Bytes::from_static(EMPTY_JSON),
            annotations: BTreeMap::new(),
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": self.artifact_type,
            "config": config.descriptor(),
            "layers": self.layers.iter().map(AttachedBlob::descriptor).collect::<Vec<_>>(),
            "subject": {
                "mediaType": subject.media_type,
                "digest": subject.digest,
                "size": subject.size,
            },
        });
        let text = serde_json::to_string(&manifest).unwrap_or_else(|_| manifest.to_string());
        Artifact {
            tag: None,
            manifest: PushedManifest::new(OCI_MANIFEST, Bytes::from(text)),
            blobs: std::iter::once(&config)
                .chain(&self.layers)
                .map(AttachedBlob::blob)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
