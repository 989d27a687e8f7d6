//! What travels with an image besides its layers: its SLSA provenance ([`provenance`])
//! and, with `sign:`, its signatures, each an OCI 1.1 *referrer* of the image manifest
//! (an artifact manifest whose `subject` names it), so the tag stays one image manifest
//! (or an index of exactly the platforms) and ECR replicates and removes the referrers
//! with their subject.
//!
//! An [`Attachment`] is one such artifact: its `artifactType`, its blobs (one per
//! predicate or signature) and, for cosign, the tag it is also found under. A new kind
//! of attachment (an SBOM) is a new predicate and artifact type, not new plumbing: the
//! publish phase pushes any attachment the same way (`publish::attach`).

pub mod provenance;

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::publish::manifest::PushedManifest;
use crate::registry::OCI_MANIFEST;

/// The media type of the empty JSON object `{}` (image-spec 1.1, "Guidance for an empty
/// descriptor"): the config of an artifact that has none.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty JSON object itself.
pub const EMPTY_JSON: &[u8] = b"{}";

/// The manifest an attachment refers to: its descriptor's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Subject {
    fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
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
        crate::publish::export::sha256_digest(&self.bytes)
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
}

impl AttachmentKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Provenance => "provenance",
            Self::SignedProvenance => "signed provenance",
            Self::Signature => "signature",
        }
    }

    /// Whether a registry that refuses it fails the step: a signature was asked for;
    /// a provenance alone is worth a warning, and the image stays pushed.
    pub fn required(self) -> bool {
        !matches!(self, Self::Provenance)
    }
}

/// One artifact attached to an image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub kind: AttachmentKind,
    /// The manifest's `artifactType`, which the referrers API filters on.
    pub artifact_type: String,
    /// The config blob: the empty JSON object unless a format wants its own.
    pub config: AttachedBlob,
    pub layers: Vec<AttachedBlob>,
    /// A tag it is also put under (cosign's `sha256-<hex>.sig`, `.att`), besides being
    /// a referrer.
    pub tag: Option<String>,
}

impl Attachment {
    /// An attachment with the empty config.
    pub fn new(kind: AttachmentKind, artifact_type: &str, layers: Vec<AttachedBlob>) -> Self {
        Self {
            kind,
            artifact_type: artifact_type.to_string(),
            config: AttachedBlob {
                media_type: EMPTY_MEDIA_TYPE.to_string(),
                bytes: Bytes::from_static(EMPTY_JSON),
                annotations: BTreeMap::new(),
            },
            layers,
            tag: None,
        }
    }

    /// Every blob the manifest names, config first.
    pub fn blobs(&self) -> impl Iterator<Item = &AttachedBlob> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// The OCI image manifest that attaches it to `subject` (image-spec 1.1: an
    /// `artifactType` and a `subject`). Deterministic: the same attachment and subject
    /// give the same digest.
    pub fn manifest(&self, subject: &Subject) -> PushedManifest {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": self.artifact_type,
            "config": self.config.descriptor(),
            "layers": self.layers.iter().map(AttachedBlob::descriptor).collect::<Vec<_>>(),
            "subject": subject.descriptor(),
        });
        let text = serde_json::to_string(&manifest).unwrap_or_else(|_| manifest.to_string());
        PushedManifest::new(OCI_MANIFEST, Bytes::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A referrer names its subject and artifact type, its config is the empty
    /// descriptor (digest of `{}`), and the same inputs give the same digest.
    #[test]
    fn an_attachment_is_a_deterministic_referrer_of_its_subject() {
        let subject = Subject {
            media_type: crate::registry::MANIFEST_V2.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 527,
        };
        let layer = AttachedBlob {
            media_type: "application/vnd.in-toto+json".into(),
            bytes: Bytes::from_static(b"{\"_type\":\"x\"}"),
            annotations: BTreeMap::from([(
                "in-toto.io/predicate-type".to_string(),
                "https://slsa.dev/provenance/v1".to_string(),
            )]),
        };
        let attachment = Attachment::new(
            AttachmentKind::Provenance,
            "application/vnd.in-toto+json",
            vec![layer],
        );
        let manifest = attachment.manifest(&subject);
        let doc: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
        assert_eq!(doc["mediaType"], OCI_MANIFEST);
        assert_eq!(doc["artifactType"], "application/vnd.in-toto+json");
        assert_eq!(doc["subject"]["digest"], subject.digest);
        assert_eq!(doc["subject"]["size"], 527);
        assert_eq!(
            doc["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(doc["config"]["mediaType"], EMPTY_MEDIA_TYPE);
        assert_eq!(
            doc["layers"][0]["annotations"]["in-toto.io/predicate-type"],
            "https://slsa.dev/provenance/v1"
        );
        assert_eq!(attachment.manifest(&subject), manifest);
        assert_eq!(attachment.blobs().count(), 2);
    }
}
