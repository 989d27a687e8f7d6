//! Attachments ([`crate::supply`]) pushed as referrers of the image manifests this run
//! pushed: each subject's descriptor read back from the registry (its media type and
//! size, whichever pusher sent it), each attachment's blobs uploaded unless present,
//! then its manifest put by digest (and under its tag, for cosign).
//!
//! A registry that refuses a referrer (ECR has answered 405 to some:
//! aws/containers-roadmap#2783) fails the step only for an attachment that was asked
//! for by name (a signature); a provenance alone is left out with a warning, and the
//! image stays pushed.

use std::time::{Duration, Instant};

use crate::inputs::Platform;
use crate::registry::{Failure, Registry};
use crate::supply::{Attachment, AttachmentKind, Subject};

/// A pushed image manifest that gets attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its platform, when the run built several (or knows the one).
    pub platform: Option<Platform>,
    pub digest: String,
}

/// One attachment in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub platform: Option<Platform>,
    /// The image manifest it refers to.
    pub subject: String,
    pub kind: AttachmentKind,
    pub artifact_type: String,
    /// Its manifest's digest.
    pub digest: String,
    /// The tag it is also under (cosign's), if any.
    pub tag: Option<String>,
    /// It was there already (a re-run that built the same image): not put again.
    pub existing: bool,
}

/// One attachment the registry refused, which the run goes on without.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub kind: AttachmentKind,
    pub subject: String,
    pub reason: String,
}

/// What became of the attachments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachments {
    pub attached: Vec<Attached>,
    pub refused: Vec<Refused>,
}

/// Pushes each target's attachments, target after target (they are a few small
/// manifests each).
pub async fn push(
    reg: &Registry,
    planned: Vec<(Target, Vec<Attachment>)>,
) -> anyhow::Result<Attachments> {
    let mut out = Attachments::default();
    for (target, attachments) in planned {
        if attachments.is_empty() {
            continue;
        }
        let subject = read_subject(reg, &target.digest).await?;
        for attachment in attachments {
            match put(reg, &subject, &attachment).await {
                Ok(attached) => out.attached.push(Attached {
                    platform: target.platform.clone(),
                    subject: target.digest.clone(),
                    kind: attachment.kind,
                    artifact_type: attachment.artifact_type.clone(),
                    digest: attached,
                    tag: attachment.tag.clone(),
                    existing: false,
                }),
                Err(failure) if !attachment.kind.required() && !failure.transient => {
                    out.refused.push(Refused {
                        kind: attachment.kind,
                        subject: target.digest.clone(),
                        reason: failure.describe(),
                    });
                }
                Err(failure) => anyhow::bail!(
                    "attaching the {} of {} in {}/{} failed: {}",
                    attachment.kind.label(),
                    target.digest,
                    reg.host,
                    reg.repository,
                    failure.describe()
                ),
            }
        }
    }
    Ok(out)
}

/// The descriptor of the manifest `digest`, read back (the registry may not show it
/// at once: [`Registry::get_pushed_manifest`]).
async fn read_subject(reg: &Registry, digest: &str) -> anyhow::Result<Subject> {
    let (media_type, bytes) = reg
        .get_pushed_manifest(digest)
        .await
        .map_err(|(failure, _)| {
            anyhow::anyhow!(
                "the pushed manifest {digest} cannot be read back from {}/{} to attach to \
                 it: {}",
                reg.host,
                reg.repository,
                failure.describe()
            )
        })?;
    Ok(Subject {
        media_type,
        digest: digest.to_string(),
        size: bytes.len() as u64,
    })
}

/// Uploads the attachment's blobs and puts its manifest by digest, then under its tag;
/// returns the manifest's digest.
async fn put(
    reg: &Registry,
    subject: &Subject,
    attachment: &Attachment,
) -> Result<String, Failure> {
    for blob in attachment.blobs() {
        let digest = blob.digest();
        reg.with_retry(&format!("uploading blob {digest}"), || {
            reg.ensure_blob(&digest, &blob.bytes)
        })
        .await
        .map_err(|(failure, _)| failure)?;
    }
    let manifest = attachment.manifest(subject);
    let references = std::iter::once(&manifest.digest).chain(attachment.tag.as_ref());
    for reference in references {
        reg.with_retry(&format!("putting the referrer {reference}"), || {
            reg.put_manifest(reference, &manifest.media_type, manifest.bytes.clone())
        })
        .await
        .map_err(|(failure, _)| failure)?;
    }
    Ok(manifest.digest)
}

/// What the attachments of a run are made from.
#[derive(Debug)]
pub struct AttachRun<'a> {
    pub reg: &'a Registry,
    pub ecr: &'a crate::ecr::Ecr,
    pub inputs: &'a crate::inputs::Inputs,
    pub facts: crate::supply::provenance::BuildFacts<'a>,
    /// `host/repository`, the provenance's subject name.
    pub repository_ref: String,
}

/// The image manifests this run pushed: each platform built here, or the one image.
pub fn targets(
    published: &super::pipeline::Published,
    images: &[crate::builds::PlatformImage],
) -> Vec<Target> {
    if published.children.is_empty() {
        let platform = images
            .first()
            .and_then(|image| image.built.platform.clone());
        return published
            .digest
            .iter()
            .map(|digest| Target {
                platform: platform.clone(),
                digest: digest.clone(),
            })
            .collect();
    }
    published
        .children
        .iter()
        .filter(|child| child.built_by.is_none())
        .map(|child| Target {
            platform: Some(child.platform.clone()),
            digest: child.digest.clone(),
        })
        .collect()
}

/// Makes and pushes every target's attachments: its provenance (unless
/// `provenance: false`).
pub async fn attach_all(
    run: &AttachRun<'_>,
    targets: Vec<Target>,
    images: &[crate::builds::PlatformImage],
) -> anyhow::Result<Attachments> {
    let mut planned = Vec::with_capacity(targets.len());
    let mut existing = Vec::new();
    for target in targets {
        // A re-run that built the same image (a reproducible build, `on-tag-exists:
        // overwrite`) finds its provenance there: one per image, not one per run.
        let listed = run
            .ecr
            .referrers(
                &run.inputs.repository,
                run.inputs.registry_id.as_deref(),
                &target.digest,
            )
            .await?;
        let provenance = listed.iter().find(|r| {
            r.artifact_type.as_deref() == Some(crate::supply::provenance::STATEMENT_MEDIA_TYPE)
        });
        if let Some(found) = provenance {
            tracing::info!(
                "{} has a provenance already ({}): not attached again",
                target.digest,
                found.digest
            );
            existing.push(Attached {
                platform: target.platform.clone(),
                subject: target.digest.clone(),
                kind: AttachmentKind::Provenance,
                artifact_type: crate::supply::provenance::STATEMENT_MEDIA_TYPE.to_string(),
                digest: found.digest.clone(),
                tag: None,
                existing: true,
            });
            continue;
        }
        let image = images
            .iter()
            .find(|image| {
                image.platform == target.platform || image.built.platform == target.platform
            })
            .or_else(|| images.first());
        let bases = image.map_or(&[][..], |image| image.built.bases.as_slice());
        let mut attachments = Vec::new();
        if run.inputs.supply.provenance != crate::inputs::ProvenanceMode::Off {
            let platform = target.platform.as_ref().map(ToString::to_string);
            let statement = crate::supply::provenance::statement(
                &run.facts,
                &run.repository_ref,
                &target.digest,
                platform.as_deref(),
                bases,
            )
            .map_err(|e| anyhow::anyhow!("cannot make the provenance of {}: {e}", target.digest))?;
            attachments.push(
                crate::supply::provenance::attachment(&statement)
                    .map_err(|e| anyhow::anyhow!("cannot encode the provenance: {e}"))?,
            );
        }
        planned.push((target, attachments));
    }
    let mut pushed = push(run.reg, planned).await?;
    pushed.attached.extend(existing);
    Ok(pushed)
}

/// How long ECR's API may take to list a referrer just pushed (eventual consistency).
const LISTING_WAIT: Duration = Duration::from_secs(10);

/// Has ECR list every attachment among its subject's referrers (`ListImageReferrers`),
/// re-reading for a while. A required attachment (a signature) ECR does not list fails
/// the step; a provenance gets a warning, returned for the log.
pub async fn confirm(
    ecr: &crate::ecr::Ecr,
    repository: &str,
    registry_id: Option<&str>,
    attachments: &Attachments,
) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let mut subjects: Vec<&String> = attachments.attached.iter().map(|a| &a.subject).collect();
    subjects.sort();
    subjects.dedup();
    for subject in subjects {
        let started = Instant::now();
        let missing = loop {
            let listed = ecr.referrers(repository, registry_id, subject).await?;
            let missing: Vec<&Attached> = attachments
                .attached
                .iter()
                .filter(|a| &a.subject == subject)
                .filter(|a| !listed.iter().any(|r| r.digest == a.digest))
                .collect();
            if missing.is_empty() || started.elapsed() >= LISTING_WAIT {
                break missing;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        for attached in missing {
            let message = format!(
                "ECR does not list the {} {} among the referrers of {subject} \
                 (ListImageReferrers) {} s after it was pushed",
                attached.kind.label(),
                attached.digest,
                LISTING_WAIT.as_secs()
            );
            if attached.kind.required() {
                anyhow::bail!("{message}");
            }
            warnings.push(message);
        }
    }
    Ok(warnings)
}
