//! The bytes `cosign verify` and `cosign verify-attestation` read, for an image signed
//! with a key (`--key`, no transparency log): a signature manifest under the tag
//! `sha256-<hex>.sig` and an attestation manifest under `sha256-<hex>.att`, each an OCI
//! image manifest whose layers are the signed payloads.
//!
//! Every format here is fixed by cosign's (and sigstore's) Go source; the file that fixed
//! it is named beside each constant and function. Both manifests are also OCI 1.1
//! referrers of the signed image (`artifactType` and `subject`): cosign reads them as
//! go-containerregistry's `v1.Manifest`, whose JSON decoding ignores fields it does not
//! know (pkg/oci/remote/signatures.go `Get` reads only `Layers`), so the extra fields
//! cost nothing there and let a registry list them under the image's referrers.
//!
//! A tag that holds signatures already (another signer, an earlier run for the same
//! digest) keeps them: the new layer is appended, as `cosign sign` appends
//! (pkg/oci/mutate/signatures.go `AppendSignatures`).

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sigstore_types::{
    DsseEnvelope, DsseSignature, KeyId, PayloadBytes, Sha256Hash, SignatureBytes, Statement,
};

use super::Signer;
use crate::publish::export::sha256_digest;
use crate::publish::manifest::PushedManifest;
use crate::registry::{rules, OCI_MANIFEST};

/// A signature layer's media type (pkg/types/media.go `SimpleSigningMediaType`).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// An attestation layer's media type (pkg/types/payload.go `DssePayloadType`).
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The DSSE payload type of an in-toto statement (pkg/types/payload.go
/// `IntotoPayloadType`); `verifyOCIAttestation` (pkg/cosign/verify.go) refuses any other.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The layer annotation holding the base64 signature (pkg/oci/static/signature.go
/// `SignatureAnnotationKey`). An attestation layer carries it too, empty: cosign copies
/// every attestation through `Base64Signature` (pkg/cosign/verify.go
/// `VerifyImageAttestation` calls `static.Copy`), which fails when the key is missing
/// (pkg/oci/internal/signature/layer.go).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The attestation layer's annotation naming the statement's predicate type
/// (cmd/cosign/cli/attest/attest.go).
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// `critical.type` of a simple-signing payload (sigstore pkg/signature/payload/payload.go
/// `CosignSignatureType`).
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";
/// The signature manifest's `artifactType`: the one cosign gives its own OCI 1.1
/// signature referrers (internal/pkg/oci/remote/remote.go `ArtifactType("sig")`), which
/// `cosign verify --experimental-oci11` looks for.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The attestation manifest's `artifactType`: the one cosign gives attestations it
/// writes as referrers (pkg/oci/remote/write.go `WriteAttestationsReferrer`).
pub const ATTESTATION_ARTIFACT_TYPE: &str = IN_TOTO_PAYLOAD_TYPE;
/// The config blob's media type (pkg/oci/empty/empty.go: `types.OCIConfigJSON`).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

pub use super::{Artifact, Blob, Subject};

/// The simple-signing payload `cosign sign` signs for an image: the repository as
/// `host/repo` and the manifest digest (sigstore pkg/signature/payload/payload.go
/// `SimpleContainerImage`; `optional` is `null` when no annotations are given, as Go
/// writes a nil map). `cosign verify` checks `docker-manifest-digest` against the image
/// (pkg/cosign/verifiers.go `SimpleClaimVerifier`) and the signature over these bytes.
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> anyhow::Result<Vec<u8>> {
    check_docker_reference(docker_reference)?;
    digest_hex(digest)?;
    let payload = SimpleSigning {
        critical: Critical {
            identity: Identity { docker_reference },
            image: Image {
                docker_manifest_digest: digest,
            },
            kind: COSIGN_SIGNATURE_TYPE,
        },
        optional: None,
    };
    Ok(serde_json::to_vec(&payload)?)
}

/// The tag cosign reads an image's signatures from (pkg/oci/remote/remote.go
/// `normalize`: `sha256:<hex>` becomes `sha256-<hex>.sig`).
pub fn signature_tag(digest: &str) -> anyhow::Result<String> {
    Ok(format!("sha256-{}.sig", digest_hex(digest)?))
}

/// The tag cosign reads an image's attestations from: `sha256-<hex>.att`.
pub fn attestation_tag(digest: &str) -> anyhow::Result<String> {
    Ok(format!("sha256-{}.att", digest_hex(digest)?))
}

/// The signature manifest for `subject` with one more layer: `payload` (the
/// simple-signing payload) signed as `signature`. `existing` is the manifest under the
/// signature tag now, if any: its layers are kept.
pub fn signature_artifact(
    subject: &Subject,
    existing: Option<&[u8]>,
    payload: &[u8],
    signature: &[u8],
) -> anyhow::Result<Artifact> {
    let layer = Descriptor {
        media_type: SIMPLE_SIGNING_MEDIA_TYPE.into(),
        size: payload.len() as u64,
        digest: sha256_digest(payload),
        annotations: BTreeMap::from([(
            SIGNATURE_ANNOTATION.to_string(),
            base64::engine::general_purpose::STANDARD.encode(signature),
        )]),
    };
    build(
        signature_tag(&subject.digest)?,
        SIGNATURE_ARTIFACT_TYPE,
        subject,
        existing,
        layer,
        Bytes::copy_from_slice(payload),
    )
}

/// The statement as the DSSE payload: its JSON, the bytes the envelope carries.
pub fn statement_payload(statement: &Statement) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(statement)?)
}

/// What is signed for a DSSE envelope of an in-toto statement: DSSE's pre-authentication
/// encoding of the payload (sigstore pkg/signature/dsse/dsse.go `SignMessage` signs
/// `dsse.PAE(payloadType, payload)`).
pub fn pae(payload: &[u8]) -> Vec<u8> {
    sigstore_types::pae(IN_TOTO_PAYLOAD_TYPE, payload)
}

/// The DSSE envelope of `payload` signed (over [`pae`]) as `signature`. The key ID is
/// left empty, as cosign leaves it (sigstore pkg/signature/dsse/dsse.go sets only `Sig`):
/// sigstore-types omits an empty `keyid`, which Go's decoder reads back as the same
/// empty string, and cosign's verifier matches no key ID then.
pub fn dsse_envelope(payload: &[u8], signature: &[u8]) -> anyhow::Result<Vec<u8>> {
    let envelope = DsseEnvelope::new(
        IN_TOTO_PAYLOAD_TYPE,
        PayloadBytes::from_bytes(payload),
        DsseSignature::new(SignatureBytes::from_bytes(signature), KeyId::default()),
    );
    Ok(serde_json::to_vec(&envelope)?)
}

/// The attestation manifest for `subject` with one more layer: `envelope` (a DSSE
/// envelope of a statement of `predicate_type`). `existing` is the manifest under the
/// attestation tag now, if any: its layers are kept.
pub fn attestation_artifact(
    subject: &Subject,
    existing: Option<&[u8]>,
    envelope: &[u8],
    predicate_type: &str,
) -> anyhow::Result<Artifact> {
    let layer = Descriptor {
        media_type: DSSE_MEDIA_TYPE.into(),
        size: envelope.len() as u64,
        digest: sha256_digest(envelope),
        annotations: BTreeMap::from([
            (SIGNATURE_ANNOTATION.to_string(), String::new()),
            (
                PREDICATE_TYPE_ANNOTATION.to_string(),
                predicate_type.to_string(),
            ),
        ]),
    };
    build(
        attestation_tag(&subject.digest)?,
        ATTESTATION_ARTIFACT_TYPE,
        subject,
        existing,
        layer,
        Bytes::copy_from_slice(envelope),
    )
}

/// Signs the image `subject` (in the repository `docker_reference`, `host/repo`) with
/// `signer`: the signature manifest to push, `existing` being the one there now.
pub async fn sign_image<S: Signer>(
    signer: &S,
    docker_reference: &str,
    subject: &Subject,
    existing: Option<&[u8]>,
) -> anyhow::Result<Artifact> {
    let payload = simple_signing_payload(docker_reference, &subject.digest)?;
    let signature = signer
        .sign(&payload)
        .await
        .with_context(|| format!("cannot sign {docker_reference}@{}", subject.digest))?;
    signature_artifact(subject, existing, &payload, &signature)
}

/// Attests `statement` about the image `subject` with `signer`: the attestation manifest
/// to push, `existing` being the one there now. The statement must name the image's
/// digest among its subjects: `cosign verify-attestation` accepts no other
/// (pkg/cosign/verifiers.go `IntotoSubjectClaimVerifier`).
pub async fn attest<S: Signer>(
    signer: &S,
    statement: &Statement,
    subject: &Subject,
    existing: Option<&[u8]>,
) -> anyhow::Result<Artifact> {
    let hash = Sha256Hash::from_hex(digest_hex(&subject.digest)?)
        .with_context(|| format!("`{}` is not a sha256 digest", subject.digest))?;
    if !statement.matches_sha256(&hash) {
        bail!(
            "the {} statement does not name the image {} among its subjects, so cosign \
             verify-attestation would reject it",
            statement.predicate_type,
            subject.digest
        );
    }
    let payload = statement_payload(statement)?;
    let signature = signer.sign(&pae(&payload)).await.with_context(|| {
        format!(
            "cannot sign the {} attestation of {}",
            statement.predicate_type, subject.digest
        )
    })?;
    let envelope = dsse_envelope(&payload, &signature)?;
    attestation_artifact(subject, existing, &envelope, &statement.predicate_type)
}

/// The manifest under `tag`: the existing layers, then `layer` unless it is one of them
/// already; a fresh config blob for that list; `artifact_type` and `subject`.
fn build(
    tag: String,
    artifact_type: &str,
    subject: &Subject,
    existing: Option<&[u8]>,
    layer: Descriptor,
    layer_bytes: Bytes,
) -> anyhow::Result<Artifact> {
    let mut layers = match existing {
        Some(bytes) => existing_layers(bytes, &tag)?,
        None => Vec::new(),
    };
    let mut blobs = Vec::with_capacity(2);
    if !layers.contains(&layer) {
        blobs.push(Blob {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            bytes: layer_bytes,
        });
        layers.push(layer);
    }
    rules::check_layer_count(layers.len())
        .map_err(|reason| anyhow::anyhow!("cannot add to the manifest under `{tag}`: {reason}"))?;
    let config_bytes = Bytes::from(config_blob(&layers)?);
    let config = Descriptor {
        media_type: CONFIG_MEDIA_TYPE.into(),
        size: config_bytes.len() as u64,
        digest: sha256_digest(&config_bytes),
        annotations: BTreeMap::new(),
    };
    blobs.insert(
        0,
        Blob {
            digest: config.digest.clone(),
            media_type: config.media_type.clone(),
            bytes: config_bytes,
        },
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        artifact_type: Some(artifact_type.into()),
        config,
        layers,
        subject: Some(Descriptor {
            media_type: subject.media_type.clone(),
            size: subject.size,
            digest: subject.digest.clone(),
            annotations: BTreeMap::new(),
        }),
    };
    let bytes = Bytes::from(serde_json::to_vec(&manifest)?);
    Ok(Artifact {
        tag: Some(tag),
        manifest: PushedManifest::new(OCI_MANIFEST, bytes),
        blobs,
    })
}

/// The layers of the manifest under `tag` now. Anything but an image manifest there
/// cannot be appended to, and cosign could not read it either.
fn existing_layers(bytes: &[u8], tag: &str) -> anyhow::Result<Vec<Descriptor>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Existing {
        #[serde(default)]
        media_type: Option<String>,
        layers: Option<Vec<Descriptor>>,
    }
    let existing: Existing = serde_json::from_slice(bytes)
        .with_context(|| format!("the manifest under `{tag}` is not a manifest cosign reads"))?;
    match (existing.media_type.as_deref(), existing.layers) {
        (None | Some(OCI_MANIFEST | crate::registry::MANIFEST_V2), Some(layers)) => Ok(layers),
        (media_type, _) => bail!(
            "the tag `{tag}` holds {}, not the image manifest cosign keeps signatures in: \
             delete the tag, or push to another repository",
            media_type.unwrap_or("a manifest without layers")
        ),
    }
}

/// The config blob cosign writes for a signature image: go-containerregistry's empty image
/// with `layers` appended (pkg/oci/empty/empty.go, pkg/oci/mutate/signatures.go
/// `mutate.Append`): zero times, empty platform, one history entry and one diff ID per
/// layer (the layers are stored uncompressed, so the diff ID is the digest).
fn config_blob(layers: &[Descriptor]) -> anyhow::Result<Vec<u8>> {
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let config = ConfigFile {
        architecture: "",
        created: ZERO_TIME,
        history: layers
            .iter()
            .map(|_| History { created: ZERO_TIME })
            .collect(),
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.digest.as_str()).collect(),
        },
        config: Empty {},
    };
    Ok(serde_json::to_vec(&config)?)
}

/// The hex of a `sha256:<64 hex>` digest.
fn digest_hex(digest: &str) -> anyhow::Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => bail!("`{digest}` is not a manifest digest (sha256: and 64 lower-case hex digits)"),
    }
}

/// A repository as cosign names it in a payload: `host/repo`, no tag, digest or scheme
/// (go-containerregistry's `Repository.Name()`).
fn check_docker_reference(reference: &str) -> anyhow::Result<()> {
    let Some((host, repository)) = reference.split_once('/') else {
        bail!("`{reference}` is not a repository as cosign names it (host/repository)");
    };
    if host.is_empty() || repository.is_empty() || reference.contains("://") {
        bail!("`{reference}` is not a repository as cosign names it (host/repository)");
    }
    if repository.contains(['@', ':']) {
        bail!("`{reference}` names a tag or digest: give the repository alone (host/repository)");
    }
    Ok(())
}

#[derive(Serialize)]
struct SimpleSigning<'a> {
    critical: Critical<'a>,
    optional: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct Critical<'a> {
    identity: Identity<'a>,
    image: Image<'a>,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Identity<'a> {
    #[serde(rename = "docker-reference")]
    docker_reference: &'a str,
}

#[derive(Serialize)]
struct Image<'a> {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: &'a str,
}

/// An OCI descriptor (config, layer or subject).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    size: u64,
    digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// An OCI image manifest with the OCI 1.1 referrer fields, in go-containerregistry's
/// field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<Descriptor>,
}

/// go-containerregistry's `v1.ConfigFile` as it marshals an empty image's (fields in its
/// order; the empty ones it omits are left out).
#[derive(Serialize)]
struct ConfigFile<'a> {
    architecture: &'a str,
    created: &'a str,
    history: Vec<History<'a>>,
    os: &'a str,
    rootfs: RootFs<'a>,
    config: Empty,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct Empty {}
