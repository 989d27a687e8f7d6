//! The formats of [`super::cosign`], checked byte for byte where cosign's Go writes fixed
//! bytes, and signatures made through [`Signer`] by a local P-256 key verified over
//! exactly the bytes cosign verifies.

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sigstore_types::{Digest, Sha256Hash, Statement, Subject as StatementSubject};

use super::cosign::{self, Subject};
use super::Signer;
use crate::publish::export::sha256_digest;

const REPO: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app";
const HEX: &str = "0b8a7e2d1c0f4a3b5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7";

/// A P-256 key in memory: the key spec cosign creates in KMS by default.
struct TestSigner(SigningKey);

impl TestSigner {
    fn new() -> Self {
        Self(SigningKey::from_slice(&[7u8; 32]).unwrap())
    }

    fn public(&self) -> &VerifyingKey {
        self.0.verifying_key()
    }
}

impl Signer for TestSigner {
    /// ECDSA P-256 with SHA-256 over the message, DER, as KMS answers `ECDSA_SHA_256`.
    async fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let signature: Signature = self.0.sign(message);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

fn digest() -> String {
    format!("sha256:{HEX}")
}

fn subject() -> Subject {
    Subject {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: digest(),
        size: 1234,
    }
}

fn verify(public: &VerifyingKey, message: &[u8], der: &[u8]) {
    let signature = Signature::from_der(der).expect("a DER ECDSA signature");
    public
        .verify(message, &signature)
        .expect("the signature verifies over these bytes");
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The payload is the JSON sigstore's `payload.Cosign` marshals, field for field.
#[test]
fn the_simple_signing_payload_is_cosigns() {
    let payload = cosign::simple_signing_payload(REPO, &digest()).unwrap();
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        format!(
            "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{REPO}\"}},\
             \"image\":{{\"docker-manifest-digest\":\"sha256:{HEX}\"}},\
             \"type\":\"cosign container image signature\"}},\"optional\":null}}"
        )
    );
}

/// A reference with a tag, digest or scheme, or a digest that is not sha256, is refused
/// with the value in the message.
#[test]
fn bad_references_and_digests_are_refused() {
    for (reference, needle) in [
        ("app", "host/repository"),
        ("https://host/app", "host/repository"),
        ("host/app:latest", "tag or digest"),
        ("host/app@sha256:00", "tag or digest"),
    ] {
        let err = cosign::simple_signing_payload(reference, &digest())
            .unwrap_err()
            .to_string();
        assert!(err.contains(reference) && err.contains(needle), "{err}");
    }
    for digest in ["sha512:00", "sha256:ABC", &format!("sha256:{}", &HEX[1..])] {
        let err = cosign::simple_signing_payload(REPO, digest)
            .unwrap_err()
            .to_string();
        assert!(err.contains(digest), "{err}");
    }
}

#[test]
fn tags_are_cosigns() {
    assert_eq!(
        cosign::signature_tag(&digest()).unwrap(),
        format!("sha256-{HEX}.sig")
    );
    assert_eq!(
        cosign::attestation_tag(&digest()).unwrap(),
        format!("sha256-{HEX}.att")
    );
    assert!(cosign::signature_tag("latest").is_err());
}

/// The signature manifest: an OCI image manifest with go-containerregistry's empty-image
/// config, one simple-signing layer whose annotation is the signature, and the referrer
/// fields; its blobs are the config and the payload; the signature verifies over the
/// payload blob, the bytes `cosign verify` hashes.
#[tokio::test]
async fn the_signature_manifest_verifies_over_the_payload() {
    let signer = TestSigner::new();
    let artifact = cosign::sign_image(&signer, REPO, &subject(), None)
        .await
        .unwrap();
    assert_eq!(artifact.tag, Some(format!("sha256-{HEX}.sig")));
    assert_eq!(
        artifact.manifest.digest,
        sha256_digest(&artifact.manifest.bytes)
    );
    assert_eq!(
        artifact.manifest.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );

    let manifest = json(&artifact.manifest.bytes);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], artifact.manifest.media_type);
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.dev.cosign.artifact.sig.v1+json"
    );
    assert_eq!(
        manifest["subject"],
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 1234,
            "digest": digest(),
        })
    );

    let [config, payload] = &artifact.blobs[..] else {
        panic!("two blobs: {:?}", artifact.blobs);
    };
    assert_eq!(
        manifest["config"],
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config.bytes.len(),
            "digest": sha256_digest(&config.bytes),
        })
    );
    assert_eq!(config.digest, sha256_digest(&config.bytes));
    assert_eq!(
        String::from_utf8(config.bytes.to_vec()).unwrap(),
        format!(
            "{{\"architecture\":\"\",\"created\":\"0001-01-01T00:00:00Z\",\
             \"history\":[{{\"created\":\"0001-01-01T00:00:00Z\"}}],\"os\":\"\",\
             \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{}\"]}},\"config\":{{}}}}",
            payload.digest
        )
    );

    let layer = &manifest["layers"][0];
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert_eq!(payload.media_type, layer["mediaType"]);
    assert_eq!(layer["digest"], sha256_digest(&payload.bytes));
    assert_eq!(layer["size"], payload.bytes.len());
    assert_eq!(
        payload.bytes,
        cosign::simple_signing_payload(REPO, &digest()).unwrap()
    );
    let annotations = layer["annotations"].as_object().unwrap();
    assert_eq!(annotations.len(), 1);
    let signature = base64::engine::general_purpose::STANDARD
        .decode(
            annotations["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    verify(signer.public(), &payload.bytes, &signature);
}

/// Signatures already under the tag are kept and the new one appended, the config listing
/// both; only the new blobs are to upload. The same layer twice is one layer.
#[test]
fn existing_signatures_are_kept() {
    let payload = cosign::simple_signing_payload(REPO, &digest()).unwrap();
    let first = cosign::signature_artifact(&subject(), None, &payload, b"first").unwrap();
    let second =
        cosign::signature_artifact(&subject(), Some(&first.manifest.bytes), &payload, b"second")
            .unwrap();
    let manifest = json(&second.manifest.bytes);
    let layers = manifest["layers"].as_array().unwrap();
    let signatures: Vec<&str> = layers
        .iter()
        .map(|l| {
            l["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(signatures, ["Zmlyc3Q=", "c2Vjb25k"]);
    let config = json(&second.blobs[0].bytes);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(config["history"].as_array().unwrap().len(), 2);

    let again = cosign::signature_artifact(
        &subject(),
        Some(&second.manifest.bytes),
        &payload,
        b"second",
    )
    .unwrap();
    assert_eq!(again.manifest, second.manifest, "nothing added");
    assert_eq!(again.blobs.len(), 1, "the config only");
}

/// Something other than an image manifest under the tag cannot be appended to.
#[test]
fn an_index_under_the_tag_is_refused() {
    let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let payload = cosign::simple_signing_payload(REPO, &digest()).unwrap();
    let err = cosign::signature_artifact(&subject(), Some(index), &payload, b"s")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("sha256-{HEX}.sig"))
            && err.contains("application/vnd.oci.image.index.v1+json"),
        "{err}"
    );
    let err = cosign::signature_artifact(&subject(), Some(b"not json"), &payload, b"s")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a manifest"), "{err}");
}

fn provenance() -> Statement {
    Statement::new(
        vec![StatementSubject::new(
            REPO,
            Digest::sha256(Sha256Hash::from_hex(HEX).unwrap()),
        )],
        "https://slsa.dev/provenance/v1",
        serde_json::json!({"buildDefinition": {"buildType": "https://example.com/build"}}),
    )
}

/// DSSE's pre-authentication encoding, written out as the DSSE spec defines it, to check
/// the one the envelope is signed over.
fn pae_by_hand(payload: &[u8]) -> Vec<u8> {
    let kind = "application/vnd.in-toto+json";
    let mut pae = format!("DSSEv1 {} {kind} {} ", kind.len(), payload.len()).into_bytes();
    pae.extend_from_slice(payload);
    pae
}

/// The attestation: a DSSE envelope (in-toto payload type, the statement as payload, the
/// signature over the PAE, no key ID) as the one layer, annotated with the predicate type
/// and an empty signature; the referrer fields name the image.
#[tokio::test]
async fn the_attestation_verifies_over_the_pae() {
    let signer = TestSigner::new();
    let statement = provenance();
    let artifact = cosign::attest(&signer, &statement, &subject(), None)
        .await
        .unwrap();
    assert_eq!(artifact.tag, Some(format!("sha256-{HEX}.att")));
    let manifest = json(&artifact.manifest.bytes);
    assert_eq!(manifest["artifactType"], "application/vnd.in-toto+json");
    assert_eq!(manifest["subject"]["digest"], digest());
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
    assert_eq!(
        layer["annotations"],
        serde_json::json!({
            "dev.cosignproject.cosign/signature": "",
            "predicateType": "https://slsa.dev/provenance/v1",
        })
    );

    let envelope_blob = &artifact.blobs[1];
    assert_eq!(layer["digest"], envelope_blob.digest);
    let envelope = json(&envelope_blob.bytes);
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
    let [signature] = envelope["signatures"].as_array().unwrap().as_slice() else {
        panic!("one signature: {envelope}");
    };
    assert!(signature.get("keyid").is_none(), "{signature}");
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload, cosign::statement_payload(&statement).unwrap());
    let parsed: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(parsed["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(parsed["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(parsed["subject"][0]["digest"]["sha256"], HEX);

    assert_eq!(cosign::pae(&payload), pae_by_hand(&payload));
    let sig = b64.decode(signature["sig"].as_str().unwrap()).unwrap();
    verify(signer.public(), &pae_by_hand(&payload), &sig);
}

/// A statement that does not name the image is refused before anything is signed.
#[tokio::test]
async fn a_statement_about_another_image_is_refused() {
    let other = Subject {
        digest: format!("sha256:{}", "1".repeat(64)),
        ..subject()
    };
    let err = cosign::attest(&TestSigner::new(), &provenance(), &other, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&other.digest) && err.contains("https://slsa.dev/provenance/v1"),
        "{err}"
    );
}

/// A referrer names its subject and artifact type, its config is the empty
/// descriptor (digest of `{}`), and the same inputs give the same digest.
#[test]
fn an_attachment_is_a_deterministic_referrer_of_its_subject() {
    use super::{AttachedBlob, Attachment, EMPTY_MEDIA_TYPE};
    let subject = Subject {
        media_type: crate::registry::MANIFEST_V2.into(),
        digest: format!("sha256:{}", "a".repeat(64)),
        size: 527,
    };
    let layer = AttachedBlob {
        media_type: "application/vnd.in-toto+json".into(),
        bytes: bytes::Bytes::from_static(b"{\"_type\":\"x\"}"),
        annotations: std::collections::BTreeMap::from([(
            "in-toto.io/predicate-type".to_string(),
            "https://slsa.dev/provenance/v1".to_string(),
        )]),
    };
    let attachment = Attachment {
        artifact_type: "application/vnd.in-toto+json".into(),
        layers: vec![layer],
    };
    let artifact = attachment.artifact(&subject);
    let doc = json(&artifact.manifest.bytes);
    assert_eq!(doc["mediaType"], crate::registry::OCI_MANIFEST);
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
    assert_eq!(attachment.artifact(&subject), artifact);
    assert_eq!(artifact.blobs.len(), 2);
    assert_eq!(artifact.tag, None);

    // Without its subject (for an index), it is another manifest, with no `subject`.
    let bare = artifact.clone().without_subject().unwrap();
    assert!(json(&bare.manifest.bytes).get("subject").is_none());
    assert_ne!(bare.manifest.digest, artifact.manifest.digest);
}
