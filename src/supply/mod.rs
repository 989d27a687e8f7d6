//! Supply-chain artifacts attached to a pushed image (issue 24): cosign's signature and
//! attestation manifests ([`cosign`]), and the [`Signer`] that signs them (AWS KMS in
//! [`crate::ecr::kms`]; a local key in tests).
//!
//! Everything here is pure: bytes in, bytes out. What it returns ([`cosign::Artifact`])
//! is pushed by the registry client like any other manifest and its blobs.

pub mod cosign;

use std::future::Future;

/// Signs a message as a verifier reads the signature back: the signer hashes `message`
/// itself (with its algorithm's hash), and answers the signature's bytes (DER for
/// ECDSA, as cosign's verifiers read it).
///
/// The returned future is `Send`, so a signature can be made inside a spawned task.
pub trait Signer {
    fn sign(&self, message: &[u8]) -> impl Future<Output = anyhow::Result<Vec<u8>>> + Send;
}

#[cfg(test)]
mod tests;
