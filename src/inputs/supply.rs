//! The supply chain's inputs: `provenance`, `sign`, `signing-key`, `signing-timeout`.

use std::time::Duration;

use super::signing_key::KeyRef;
use super::{validate, InputError, Raw};

/// What the provenance attached to each image manifest says about the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenanceMode {
    /// None attached (`provenance: false`).
    Off,
    /// The build's parameters with build-arg *names* only (`true`, `min`: the default).
    Min,
    /// Build-arg values too (`max`): a value may be sensitive, so only on request.
    Max,
}

/// Who signs the pushed manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// Nothing signed (the default).
    None,
    /// An AWS KMS asymmetric key, in cosign's format (`signing-key`).
    Kms { key: KeyRef },
    /// ECR's managed signing (AWS Signer), which a signing rule of the registry applies.
    Ecr,
}

/// `provenance`, `sign`, `signing-key` and `signing-timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupplySettings {
    pub provenance: ProvenanceMode,
    pub signing: Signing,
    /// How long `sign: ecr` waits for ECR to sign every pushed manifest.
    pub signing_timeout: Duration,
}

impl SupplySettings {
    /// Whether anything is attached to the pushed manifests.
    pub fn attaches(&self) -> bool {
        self.provenance != ProvenanceMode::Off || self.signing != Signing::None
    }
}

pub(super) fn parse(raw: &Raw<'_>) -> Result<SupplySettings, InputError> {
    let text = raw.get("provenance");
    let provenance = match text.to_ascii_lowercase().as_str() {
        "true" | "min" => ProvenanceMode::Min,
        "max" => ProvenanceMode::Max,
        "false" => ProvenanceMode::Off,
        _ => {
            return Err(InputError::invalid(
                "provenance",
                &text,
                "expected `true` (or `min`), `max` (build-arg values too) or `false`",
            ))
        }
    };
    let sign = raw.get("sign");
    let key = raw.optional("signing-key");
    let signing = match (sign.to_ascii_lowercase().as_str(), key) {
        ("" | "none" | "false", None) => Signing::None,
        ("" | "none" | "false", Some(key)) => {
            return Err(InputError::invalid(
                "signing-key",
                &key,
                "it is used only with `sign: kms`; set `sign: kms` or remove it",
            ))
        }
        ("kms", Some(key)) => Signing::Kms {
            key: KeyRef::parse(&key)?,
        },
        ("kms", None) => {
            return Err(InputError::invalid(
                "sign",
                &sign,
                "`sign: kms` needs `signing-key`, e.g. `awskms:///alias/release-signing`",
            ))
        }
        ("ecr", None) => Signing::Ecr,
        ("ecr", Some(key)) => {
            return Err(InputError::invalid(
                "signing-key",
                &key,
                "ECR's managed signing uses the signing profile of the registry's signing \
                 rule, not a key: remove `signing-key`, or use `sign: kms`",
            ))
        }
        _ => {
            return Err(InputError::invalid(
                "sign",
                &sign,
                "expected `kms` (an AWS KMS key, `signing-key`), `ecr` (ECR's managed \
                 signing) or nothing",
            ))
        }
    };
    let timeout_text = raw.get("signing-timeout");
    let signing_timeout = validate::duration(&timeout_text)
        .map_err(|reason| InputError::invalid("signing-timeout", &timeout_text, reason))?;
    Ok(SupplySettings {
        provenance,
        signing,
        signing_timeout,
    })
}
