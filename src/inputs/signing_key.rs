//! The `signing-key` input: an AWS KMS key as cosign names it (sigstore
//! pkg/signature/kms/aws/client.go `ParseReference`), `awskms://[HOST:PORT]/ID`, ID being
//! a key ID, key ARN, `alias/NAME` or alias ARN; a bare ID is taken too. Checked as an
//! input, before anything else; the key itself is checked with KMS before the build
//! (`ecr::kms`).

use std::fmt;

use super::InputError;

/// The input a [`KeyRef`] is parsed from.
const INPUT: &str = "signing-key";
const SCHEME: &str = "awskms://";
/// The partitions cosign accepts in an ARN (client.go `arnRE`).
const PARTITIONS: [&str; 3] = ["aws", "aws-us-gov", "aws-cn"];
/// A KMS key as the `signing-key` input names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// What KMS is asked for: a key ID, a key ARN, `alias/NAME` or an alias ARN.
    pub key_id: String,
    /// `HOST[:PORT]` of `awskms://HOST:PORT/…`: KMS is called at `https://HOST:PORT`, as
    /// cosign calls it.
    pub endpoint: Option<String>,
}

impl KeyRef {
    /// Parses `awskms://[HOST:PORT]/ID` as cosign does, or a bare ID (`alias/NAME`, a key
    /// ID or an ARN) for convenience.
    pub fn parse(value: &str) -> Result<Self, InputError> {
        let invalid = |reason: String| InputError::invalid(INPUT, value, reason);
        let text = value.trim();
        let (endpoint, key_id) = if let Some(rest) = text.strip_prefix(SCHEME) {
            let Some((host, id)) = rest.split_once('/') else {
                return Err(invalid(
                    "awskms:// is followed by [HOST:PORT]/ and the key, as in \
                     awskms:///alias/NAME"
                        .into(),
                ));
            };
            check_host(host, id).map_err(invalid)?;
            ((!host.is_empty()).then(|| host.to_string()), id)
        } else if let Some((scheme, _)) = text.split_once("://") {
            return Err(invalid(format!(
                "a `{scheme}://` key cannot sign here: give an AWS KMS key, as \
                 awskms:///alias/NAME"
            )));
        } else {
            (None, text)
        };
        check_key_id(key_id).map_err(invalid)?;
        Ok(Self {
            key_id: key_id.to_string(),
            endpoint,
        })
    }

    /// The key as cosign takes it: `cosign verify --key <this>`.
    pub fn cosign_ref(&self) -> String {
        format!(
            "{SCHEME}{}/{}",
            self.endpoint.as_deref().unwrap_or(""),
            self.key_id
        )
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cosign_ref())
    }
}

/// The endpoint part of `awskms://HOST:PORT/`, which a forgotten third slash turns the
/// key's first part into (`awskms://alias/NAME`).
fn check_host(host: &str, id: &str) -> Result<(), String> {
    if host.is_empty() {
        return Ok(());
    }
    if host == "alias" || host.starts_with("arn:") {
        return Err(format!(
            "`{host}` stands where an endpoint goes (awskms://HOST:PORT/…): write three \
             slashes, awskms:///{host}/{id}"
        ));
    }
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid {
        return Err(format!(
            "`{host}` is not an endpoint (HOST or HOST:PORT, reached over https)"
        ));
    }
    Ok(())
}

/// A key ID, key ARN, alias name or alias ARN, as cosign's patterns accept them
/// (client.go `keyIDRE`, `keyARNRE`, `aliasNameRE`, `aliasARNRE`), with KMS's own rules
/// for alias names.
fn check_key_id(id: &str) -> Result<(), String> {
    const FORMS: &str = "give alias/NAME, a key ID, or a key or alias ARN";
    if id.is_empty() {
        return Err(format!("no key is named: {FORMS}"));
    }
    if let Some(alias) = id.strip_prefix("alias/") {
        return check_alias(alias);
    }
    if id.starts_with("arn:") {
        return check_arn(id);
    }
    if is_key_uuid(id) {
        return Ok(());
    }
    Err(format!(
        "`{id}` is not a KMS key ID (a UUID such as 1234abcd-12ab-34cd-56ef-1234567890ab): \
         {FORMS}"
    ))
}

/// An alias name after `alias/`: letters, digits, `/`, `_` and `-`, at most 250 characters
/// (KMS's `AliasName`: 256 with the prefix). `alias/aws/` names AWS managed keys, which
/// are symmetric and cannot sign.
fn check_alias(alias: &str) -> Result<(), String> {
    if alias.is_empty() {
        return Err("`alias/` names no alias: write alias/NAME".into());
    }
    if alias.starts_with("aws/") {
        return Err(format!(
            "alias/{alias} is an AWS managed key, which cannot sign: create an asymmetric \
             SIGN_VERIFY key and give its alias"
        ));
    }
    if alias.len() > 250 {
        return Err("an alias name has at most 256 characters, alias/ included".into());
    }
    if let Some(c) = alias
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-')))
    {
        return Err(format!(
            "an alias name holds letters, digits, `/`, `_` and `-` only, not `{c}`"
        ));
    }
    Ok(())
}

/// `arn:PARTITION:kms:REGION:ACCOUNT:key/UUID` or `…:alias/NAME`.
fn check_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, partition, service, region, account, resource] = parts[..] else {
        return Err(format!(
            "`{arn}` is not a KMS ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID)"
        ));
    };
    if !PARTITIONS.contains(&partition) {
        return Err(format!(
            "cosign takes KMS ARNs in the partitions {} only, not `{partition}`",
            PARTITIONS.join(", ")
        ));
    }
    if service != "kms" {
        return Err(format!("`{arn}` is an ARN of {service}, not of kms"));
    }
    let region_ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !region_ok {
        return Err(format!("`{region}` in the ARN is not a region"));
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{account}` in the ARN is not an account ID (12 digits)"
        ));
    }
    match resource.split_once('/') {
        Some(("key", id)) if is_key_uuid(id) => Ok(()),
        Some(("key", id)) => Err(format!("`{id}` in the ARN is not a KMS key ID")),
        Some(("alias", alias)) => check_alias(alias),
        _ => Err(format!(
            "`{resource}` in the ARN is neither key/KEY-ID nor alias/NAME"
        )),
    }
}

/// A key ID: 32 hex digits in groups of 8-4-4-4-12, dashes optional, `mrk-` first for a
/// multi-Region key (client.go `uuidRE`).
pub(crate) fn is_key_uuid(id: &str) -> bool {
    let mut rest = id.strip_prefix("mrk-").unwrap_or(id).as_bytes();
    for (i, len) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        if i > 0 {
            if let Some(tail) = rest.strip_prefix(b"-") {
                rest = tail;
            }
        }
        if rest.len() < len || !rest[..len].iter().all(u8::is_ascii_hexdigit) {
            return false;
        }
        rest = &rest[len..];
    }
    rest.is_empty()
}
