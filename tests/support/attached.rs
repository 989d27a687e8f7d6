//! What a run attached to its images (provenance, signatures), as a user's tools see
//! it: blobs read through the front, ECR's referrers listing, the real `oras`; and the
//! secret scan of every attached blob.

use std::collections::BTreeMap;
use std::process::Command;

use super::{proxy_secrets, standin, RunResult, Standin};

impl Standin {
    /// A blob of `repository`, read through the front (its redirect to the S3 stand-in
    /// followed without the registry's credentials, as ECR's presigned URLs want).
    pub fn registry_blob(&self, repository: &str, digest: &str) -> Vec<u8> {
        let url = format!("https://{}/v2/{repository}/blobs/{digest}", self.registry);
        let out = Command::new("curl")
            .args(["-fsSL", "--cacert"])
            .arg(&self.ca_cert)
            .args(["-u", &format!("AWS:{}", self.password)])
            .arg(&url)
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "GET blob {repository}@{digest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The referrers of `repository@subject` as ECR's API lists them (through the
    /// front, which answers `ListImageReferrers`): (digest, artifact type).
    pub fn referrers(&self, repository: &str, subject: &str) -> Vec<(String, String)> {
        let answer = self.api(
            "AKIASTANDINREFERRERS",
            "ListImageReferrers",
            &serde_json::json!({"repositoryName": repository, "subjectId": {"imageDigest": subject}}),
        );
        answer["referrers"]
            .as_array()
            .unwrap_or_else(|| panic!("ListImageReferrers {repository}@{subject}: {answer}"))
            .iter()
            .map(|r| {
                (
                    r["digest"].as_str().unwrap_or_default().to_string(),
                    r["artifactType"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Every blob (config and layers) of the referrer manifest `repository@digest`,
    /// with the manifest.
    pub fn attached(&self, repository: &str, digest: &str) -> (serde_json::Value, Vec<Vec<u8>>) {
        let manifest = self.registry_manifest(repository, digest);
        let mut blobs = Vec::new();
        for descriptor in std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().into_iter().flatten())
        {
            if let Some(blob) = descriptor["digest"].as_str() {
                blobs.push(self.registry_blob(repository, blob));
            }
        }
        (manifest, blobs)
    }

    /// The real `oras` (Debian's, installed by scripts/setup) with the registry's login
    /// and the stand-in's CA: its stdout, after checking it succeeded.
    pub fn oras(&self, args: &[&str]) -> String {
        let out = Command::new("oras")
            .args(args)
            .args(["-u", "AWS", "-p", &self.password, "--ca-file"])
            .arg(&self.ca_cert)
            .output()
            .expect("run oras (scripts/setup installs it)");
        assert!(
            out.status.success(),
            "oras {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// What a run attached to its images (provenance, signatures) carries none of the
/// secrets either: the registry password, the AWS secret key and session token, proxy
/// passwords, and the values of the build secrets the run was given (`secrets:
/// id=…,env=VAR`).
pub(super) fn scan_attachments_for_secrets(
    run: &RunResult,
    env: &[(String, String)],
    inputs: &BTreeMap<String, String>,
) {
    let Some(repository) = run
        .outputs
        .get("repository-uri")
        .and_then(|uri| uri.split_once('/'))
        .map(|(_, repository)| repository.to_string())
    else {
        return;
    };
    let mut digests = Vec::new();
    for output in ["provenance-digest", "signature-digest"] {
        let value = run
            .outputs
            .get(output)
            .map(String::as_str)
            .unwrap_or_default();
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(value) {
            Ok(map) => digests.extend(map.values().filter_map(|v| v.as_str().map(String::from))),
            Err(_) if value.starts_with("sha256:") => digests.push(value.to_string()),
            Err(_) => {}
        }
    }
    if digests.is_empty() {
        return;
    }
    let standin = standin();
    let mut secrets = vec![standin.password.clone()];
    for name in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        secrets.extend(
            env.iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone()),
        );
    }
    secrets.extend(proxy_secrets(env));
    for spec in inputs
        .get("secrets")
        .map(String::as_str)
        .unwrap_or_default()
        .lines()
    {
        if let Some(var) = spec
            .split(',')
            .find_map(|part| part.trim().strip_prefix("env="))
        {
            secrets.extend(env.iter().filter(|(k, _)| k == var).map(|(_, v)| v.clone()));
        }
    }
    secrets.retain(|s| s.len() >= 4);
    for digest in digests {
        let (manifest, blobs) = standin.attached(&repository, &digest);
        let mut texts = vec![manifest.to_string()];
        for blob in &blobs {
            texts.push(String::from_utf8_lossy(blob).into_owned());
            // A DSSE envelope carries its statement in base64.
            let payload = serde_json::from_slice::<serde_json::Value>(blob)
                .ok()
                .and_then(|v| v["payload"].as_str().map(String::from));
            if let Some(payload) = payload {
                use base64::Engine as _;
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(payload) {
                    texts.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        for text in texts {
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret is in the attachment {digest} of {repository}"
                );
            }
        }
    }
}
