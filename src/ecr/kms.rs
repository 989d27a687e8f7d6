//! `sign: kms`: signatures made by an AWS KMS asymmetric key, in the form cosign's AWS KMS
//! signer makes them, so `cosign verify --key awskms:///…` accepts them.
//!
//! What cosign does, and so what is done here (sigstore pkg/signature/kms/aws/client.go,
//! signer.go):
//! - the key is named `awskms://[HOST:PORT]/ID`, ID being a key ID, key ARN, `alias/NAME`
//!   or alias ARN (`ParseReference`), and a HOST:PORT is reached at `https://HOST:PORT`;
//! - the signing algorithm is the first the key lists (`cmk.HashFunc`, `cmk.Verifier`:
//!   `SigningAlgorithms[0]`), and the verifier is chosen by that algorithm;
//! - the message is hashed locally with that algorithm's hash and KMS signs the digest
//!   (`MessageType: DIGEST`), so a payload of any size is one small request;
//! - the signature is KMS's answer as it is: DER for ECDSA, which is what cosign's ECDSA
//!   verifier reads (`ecdsa.VerifyASN1`).
//!
//! The key specs are the ones cosign's signer supports (`awsSupportedAlgorithms`): the NIST
//! curves and RSA. Others (secp256k1, Ed25519, ML-DSA, SM2) cannot be read by Go's x509
//! or have no cosign verifier, so they fail before the build.
//!
//! Verifying: `--key awskms:///…` reads the algorithm from KMS, so every spec here
//! verifies that way, signatures and attestations. A PEM of the public key
//! ([`CheckedKey::public_key_pem`]) is read by cosign with SHA-256 and, for RSA, PKCS#1
//! v1.5 (`LoadVerifier(pub, crypto.SHA256)`): P-256 and RSA keys whose first algorithm
//! is `RSASSA_PKCS1_V1_5_SHA_256` (as KMS lists them) verify from a PEM; P-384 and P-521
//! signatures need `--signature-digest-algorithm sha384`/`sha512`, which
//! `verify-attestation` does not have.

use std::fmt;

use anyhow::Context as _;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use tokio::sync::OnceCell;

use super::{describe, Ecr};
pub use crate::inputs::signing_key::KeyRef;
use crate::supply::Signer;

/// Signed with `DryRun` before the build: proves `kms:Sign` without making a signature.
const PROBE: &[u8] = b"ecr-build-push: may this key sign?";

/// A signing algorithm cosign verifies, with its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    RsaPssSha256,
    RsaPssSha384,
    RsaPssSha512,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
}

impl Algorithm {
    /// The algorithm KMS names `spec`, if cosign has a verifier for it (client.go
    /// `cmk.Verifier`).
    fn from_kms(spec: &SigningAlgorithmSpec) -> Option<Self> {
        Some(match spec {
            SigningAlgorithmSpec::EcdsaSha256 => Self::EcdsaSha256,
            SigningAlgorithmSpec::EcdsaSha384 => Self::EcdsaSha384,
            SigningAlgorithmSpec::EcdsaSha512 => Self::EcdsaSha512,
            SigningAlgorithmSpec::RsassaPssSha256 => Self::RsaPssSha256,
            SigningAlgorithmSpec::RsassaPssSha384 => Self::RsaPssSha384,
            SigningAlgorithmSpec::RsassaPssSha512 => Self::RsaPssSha512,
            SigningAlgorithmSpec::RsassaPkcs1V15Sha256 => Self::RsaPkcs1Sha256,
            SigningAlgorithmSpec::RsassaPkcs1V15Sha384 => Self::RsaPkcs1Sha384,
            SigningAlgorithmSpec::RsassaPkcs1V15Sha512 => Self::RsaPkcs1Sha512,
            _ => return None,
        })
    }

    pub fn kms(self) -> SigningAlgorithmSpec {
        match self {
            Self::EcdsaSha256 => SigningAlgorithmSpec::EcdsaSha256,
            Self::EcdsaSha384 => SigningAlgorithmSpec::EcdsaSha384,
            Self::EcdsaSha512 => SigningAlgorithmSpec::EcdsaSha512,
            Self::RsaPssSha256 => SigningAlgorithmSpec::RsassaPssSha256,
            Self::RsaPssSha384 => SigningAlgorithmSpec::RsassaPssSha384,
            Self::RsaPssSha512 => SigningAlgorithmSpec::RsassaPssSha512,
            Self::RsaPkcs1Sha256 => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
            Self::RsaPkcs1Sha384 => SigningAlgorithmSpec::RsassaPkcs1V15Sha384,
            Self::RsaPkcs1Sha512 => SigningAlgorithmSpec::RsassaPkcs1V15Sha512,
        }
    }

    /// The digest KMS signs for `message` (client.go `cmk.HashFunc`).
    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::EcdsaSha256 | Self::RsaPssSha256 | Self::RsaPkcs1Sha256 => {
                Sha256::digest(message).to_vec()
            }
            Self::EcdsaSha384 | Self::RsaPssSha384 | Self::RsaPkcs1Sha384 => {
                Sha384::digest(message).to_vec()
            }
            Self::EcdsaSha512 | Self::RsaPssSha512 | Self::RsaPkcs1Sha512 => {
                Sha512::digest(message).to_vec()
            }
        }
    }
}

/// The key specs cosign's AWS KMS signer supports (signer.go `awsSupportedAlgorithms`).
const SUPPORTED_SPECS: [KeySpec; 6] = [
    KeySpec::EccNistP256,
    KeySpec::EccNistP384,
    KeySpec::EccNistP521,
    KeySpec::Rsa2048,
    KeySpec::Rsa3072,
    KeySpec::Rsa4096,
];

/// The algorithm to sign with, from what `GetPublicKey` tells of the key; or why the key
/// cannot sign for cosign, and what to do.
pub fn choose_algorithm(
    usage: Option<&KeyUsageType>,
    spec: Option<&KeySpec>,
    algorithms: &[SigningAlgorithmSpec],
) -> Result<Algorithm, String> {
    const CREATE: &str = "create one with `aws kms create-key --key-usage SIGN_VERIFY \
                          --key-spec ECC_NIST_P256`";
    match usage {
        Some(KeyUsageType::SignVerify) => {}
        Some(other) => {
            return Err(format!(
                "its key usage is {other}, and signing needs a SIGN_VERIFY key: {CREATE}"
            ))
        }
        None => return Err(format!("KMS tells no key usage for it: {CREATE}")),
    }
    let spec_name = spec.map_or("unknown", KeySpec::as_str);
    if !spec.is_some_and(|s| SUPPORTED_SPECS.contains(s)) {
        return Err(format!(
            "its key spec {spec_name} is not one cosign verifies ({}): {CREATE}",
            SUPPORTED_SPECS.map(|s| s.as_str().to_string()).join(", ")
        ));
    }
    // cosign signs and verifies with the first algorithm the key lists, whatever others
    // it has (client.go `SigningAlgorithms[0]`).
    let Some(first) = algorithms.first() else {
        return Err(format!(
            "KMS lists no signing algorithm for this {spec_name} key"
        ));
    };
    Algorithm::from_kms(first)
        .ok_or_else(|| format!("its first signing algorithm, {first}, is not one cosign verifies"))
}

/// What `GetPublicKey` told of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKey {
    /// The key's ARN, as KMS answered it.
    pub arn: String,
    /// The key spec, e.g. `ECC_NIST_P256`.
    pub spec: String,
    pub algorithm: Algorithm,
    /// The public key, DER (`SubjectPublicKeyInfo`).
    pub public_key_der: Vec<u8>,
}

impl CheckedKey {
    /// The public key as PEM, the form `cosign verify --key FILE` reads.
    pub fn public_key_pem(&self) -> String {
        let text = base64::engine::general_purpose::STANDARD.encode(&self.public_key_der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in text.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }
}

/// Signs with a KMS key, on the SDK configuration the ECR client was made from.
#[derive(Debug)]
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    pub key: KeyRef,
    pub region: String,
    /// Where KMS is called, for messages.
    pub endpoint: String,
    trust_hint: String,
    checked: OnceCell<CheckedKey>,
}

impl KmsSigner {
    /// A signer for `key`, with `ecr`'s credentials, region, HTTP client (proxy, trust)
    /// and endpoint settings (`AWS_ENDPOINT_URL_KMS` is read by the SDK itself;
    /// `endpoint_override`, that variable's value, only names it in messages). An
    /// endpoint in the key (`awskms://HOST:PORT/`) wins, as in cosign.
    pub async fn new(ecr: &Ecr, key: KeyRef, endpoint_override: Option<&str>) -> Self {
        let mut config = aws_sdk_kms::config::Builder::from(ecr.sdk.as_ref());
        let endpoint = match (&key.endpoint, endpoint_override) {
            (Some(host), _) => {
                let url = format!("https://{host}");
                config = config.endpoint_url(&url);
                url
            }
            (None, Some(url)) => url.to_string(),
            (None, None) => default_endpoint(&ecr.sdk, &ecr.region).await,
        };
        Self {
            client: aws_sdk_kms::Client::from_conf(config.build()),
            key,
            region: ecr.region.clone(),
            endpoint,
            trust_hint: ecr.trust_hint.clone(),
            checked: OnceCell::new(),
        }
    }

    /// Reads the key's public key and proves it can sign for cosign: a `SIGN_VERIFY` key of
    /// a spec cosign verifies, the credentials allowed `kms:GetPublicKey` and `kms:Sign`
    /// (a dry run). Run before the build; later calls answer from memory.
    pub async fn check(&self) -> anyhow::Result<&CheckedKey> {
        self.checked.get_or_try_init(|| self.fetch()).await
    }

    async fn fetch(&self) -> anyhow::Result<CheckedKey> {
        let answer = self
            .client
            .get_public_key()
            .key_id(&self.key.key_id)
            .send()
            .await
            .map_err(|err| self.error(&err, "kms:GetPublicKey"))?;
        // `KeySpec`, else the deprecated `CustomerMasterKeySpec` it replaced (same values),
        // which older KMS-compatible servers answer alone.
        #[allow(deprecated)] // read only where `KeySpec` is missing
        let spec = answer.key_spec().cloned().or_else(|| {
            answer
                .customer_master_key_spec()
                .map(|spec| KeySpec::from(spec.as_str()))
        });
        let algorithm = choose_algorithm(
            answer.key_usage(),
            spec.as_ref(),
            answer.signing_algorithms(),
        )
        .map_err(|reason| {
            anyhow::anyhow!(
                "KMS key `{}` in {} cannot sign for cosign: {reason}",
                self.key.key_id,
                self.region
            )
        })?;
        let public_key_der = answer
            .public_key()
            .map(|key| key.as_ref().to_vec())
            .with_context(|| format!("KMS answered no public key for `{}`", self.key.key_id))?;
        self.probe(algorithm).await?;
        Ok(CheckedKey {
            arn: answer.key_id().unwrap_or(&self.key.key_id).to_string(),
            spec: spec.as_ref().map_or("", KeySpec::as_str).to_string(),
            algorithm,
            public_key_der,
        })
    }

    /// `kms:Sign` with `DryRun`: KMS answers `DryRunOperationException` when the call would
    /// have succeeded (a KMS that ignores the flag signs, which proves as much).
    async fn probe(&self, algorithm: Algorithm) -> anyhow::Result<()> {
        let result = self
            .client
            .sign()
            .key_id(&self.key.key_id)
            .message(Blob::new(algorithm.digest(PROBE)))
            .message_type(MessageType::Digest)
            .signing_algorithm(algorithm.kms())
            .dry_run(true)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("DryRunOperationException") => Ok(()),
            Err(err) => Err(self.error(&err, "kms:Sign")),
        }
    }

    /// An SDK error as a message naming the key, the region and the IAM action, with what
    /// to do about the common ones.
    fn error<E, R>(&self, err: &SdkError<E, R>, action: &str) -> anyhow::Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + 'static,
    {
        let (key, region) = (&self.key.key_id, &self.region);
        let detail = err.message().unwrap_or("no message").to_string();
        let text = match err.code() {
            Some("NotFoundException") => format!(
                "KMS key `{key}` does not exist in {region} ({action}: {detail}): check the \
                 key ID, alias or ARN, and the region (an alias or key ID is looked up in \
                 {region})"
            ),
            Some("AccessDeniedException") => format!(
                "the AWS credentials may not call {action} on KMS key `{key}` in {region} \
                 ({detail}): allow kms:GetPublicKey and kms:Sign on the key, in the role's \
                 IAM policy and in the key policy"
            ),
            Some("DisabledException") => format!(
                "KMS key `{key}` in {region} is disabled ({action}): enable it, or give \
                 another key"
            ),
            Some("KMSInvalidStateException") => format!(
                "KMS key `{key}` in {region} cannot be used in its state ({action}: \
                 {detail}); a key pending deletion must be restored first"
            ),
            Some("InvalidKeyUsageException") => format!(
                "KMS key `{key}` in {region} cannot sign ({action}: {detail}): cosign needs an \
                 asymmetric SIGN_VERIFY key"
            ),
            Some(_) => format!(
                "{action} on KMS key `{key}` in {region} failed: {}",
                describe(err)
            ),
            None if matches!(err, SdkError::DispatchFailure(_)) => {
                let tls = crate::network::trust::tls_failure(err)
                    .map(|_| format!("; {}", self.trust_hint))
                    .unwrap_or_default();
                format!(
                    "cannot reach AWS KMS at {} ({action} on `{key}`): {}{tls}",
                    self.endpoint,
                    crate::error_chain(err)
                )
            }
            None => format!(
                "{action} on KMS key `{key}` at {} failed: {}",
                self.endpoint,
                describe(err)
            ),
        };
        anyhow::anyhow!(text)
    }
}

/// The KMS endpoint the SDK calls in `region` when none is configured, by the SDK's own
/// rules (the partition's DNS suffix, FIPS, dual-stack), as [`super::default_endpoint`]
/// finds ECR's.
async fn default_endpoint(config: &aws_config::SdkConfig, region: &str) -> String {
    super::resolved_endpoint!(aws_sdk_kms, config, region)
        .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"))
}

impl Signer for KmsSigner {
    /// The message hashed here and its digest signed by KMS with the algorithm
    /// [`KmsSigner::check`] chose; KMS's answer as it is (DER for ECDSA).
    async fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let algorithm = self.check().await?.algorithm;
        let answer = self
            .client
            .sign()
            .key_id(&self.key.key_id)
            .message(Blob::new(algorithm.digest(message)))
            .message_type(MessageType::Digest)
            .signing_algorithm(algorithm.kms())
            .send()
            .await
            .map_err(|err| self.error(&err, "kms:Sign"))?;
        answer
            .signature()
            .map(|signature| signature.as_ref().to_vec())
            .with_context(|| format!("KMS answered no signature from `{}`", self.key.key_id))
    }
}

#[cfg(test)]
mod tests;
