//! The supply-chain part of a report: the `provenance-digest` and `signature-digest`
//! outputs, and the summary's section with what was attached and how to verify it.

use std::fmt::Write as _;

use super::Report;
use crate::supply::AttachmentKind;

/// The kinds `provenance-digest` names: the provenance, signed or not.
pub(super) const PROVENANCE: [AttachmentKind; 2] =
    [AttachmentKind::Provenance, AttachmentKind::SignedProvenance];

impl Report {
    /// The digests of the attachments of `kinds`: the one digest when one image
    /// manifest got it, else a JSON object from platform to digest; empty when none.
    pub(super) fn attached_digests(&self, kinds: &[AttachmentKind]) -> String {
        let attached: Vec<_> = self
            .attachments
            .attached
            .iter()
            .filter(|a| kinds.contains(&a.kind))
            .collect();
        match attached.as_slice() {
            [] => String::new(),
            [one] if one.platform.is_none() || self.platforms.is_empty() => one.digest.clone(),
            many => {
                let map: serde_json::Map<String, serde_json::Value> = many
                    .iter()
                    .map(|a| {
                        let platform = a
                            .platform
                            .as_ref()
                            .map_or_else(|| a.subject.clone(), ToString::to_string);
                        (platform, a.digest.clone().into())
                    })
                    .collect();
                serde_json::Value::Object(map).to_string()
            }
        }
    }

    /// "Supply chain": each attachment with its subject, what the registry refused, and
    /// the commands that check them.
    pub(super) fn supply_markdown(&self) -> String {
        let attachments = &self.attachments;
        if attachments.attached.is_empty() && attachments.refused.is_empty() {
            return String::new();
        }
        let uri = self.repository_uri();
        let mut md = String::from(
            "#### Supply chain\n\n| Attached | Platform | To | Digest |\n|---|---|---|---|\n",
        );
        for a in &attachments.attached {
            let platform = a
                .platform
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let tag = a
                .tag
                .as_ref()
                .map(|t| format!(" (tag `{t}`)"))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {platform} | `{}` | `{}`{tag} |",
                a.kind.label(),
                a.subject,
                a.digest
            );
        }
        md.push('\n');
        for signed in &self.ecr_signatures {
            let _ = writeln!(
                md,
                "- ECR signed `{}` with the signing profile(s) {}\n",
                signed.digest,
                signed
                    .profile_arns
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for refused in &attachments.refused {
            let _ = writeln!(
                md,
                "- The registry refused the {} of `{}`: {}\n",
                refused.kind.label(),
                refused.subject,
                refused.reason
            );
        }
        if let Some(subject) = attachments.attached.first().map(|a| &a.subject) {
            md.push_str("Verify:\n\n```sh\n");
            let _ = writeln!(
                md,
                "aws ecr list-image-referrers --repository-name {} --subject-id imageDigest={subject}",
                self.repository
            );
            let _ = writeln!(md, "oras discover {uri}@{subject}");
            if let Some(key) = &self.signing_key {
                let _ = writeln!(
                    md,
                    "cosign verify --key {key} --insecure-ignore-tlog=true {uri}@{subject}"
                );
                let _ = writeln!(
                    md,
                    "cosign verify-attestation --key {key} --insecure-ignore-tlog=true \
                     --type slsaprovenance1 {uri}@{subject}"
                );
            }
            md.push_str("```\n\n");
        }
        md
    }
}
