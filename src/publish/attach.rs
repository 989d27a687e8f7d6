//! Attachments ([`crate::supply`]) pushed with the image manifests this run pushed:
//! each one's provenance as an OCI 1.1 referrer and, with `sign: kms`, cosign's
//! signature (`sha256-<hex>.sig`) and signed provenance (`sha256-<hex>.att`, which then
//! stands for the provenance), both referrers too. Each subject's descriptor is read back
//! from the registry (its media type and size, whichever pusher sent it); each
//! artifact's blobs are uploaded unless present, then its manifest is put by digest, or
//! under cosign's tag.
//!
//! A registry that refuses a referrer (ECR has answered 405 to some:
//! aws/containers-roadmap#2783) fails the step only for a signature, which was asked for
//! by name; a provenance alone is left out with a warning, and the image stays pushed.
//! An image index gets a signature only (cosign's tag, no `subject`: ECR refuses
//! referrers of an index), and its platforms each get their own provenance.

use std::time::{Duration, Instant};

use crate::ecr::kms::KmsSigner;
use crate::inputs::{Platform, ProvenanceMode};
use crate::registry::{Failure, Registry};
use crate::supply::provenance::{self, BuildFacts, STATEMENT_MEDIA_TYPE};
use crate::supply::{cosign, Artifact, AttachmentKind, Subject};

/// A pushed manifest that gets attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its platform, when known.
    pub platform: Option<Platform>,
    pub digest: String,
    /// The image index of several platforms: signed, with no provenance of its own.
    pub index: bool,
}

/// One attachment in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub platform: Option<Platform>,
    /// The manifest it refers to.
    pub subject: String,
    pub kind: AttachmentKind,
    /// Its manifest's digest.
    pub digest: String,
    /// The tag it is also under (cosign's), if any.
    pub tag: Option<String>,
    /// It names its subject (`subject`), so ECR lists it among the subject's referrers.
    pub referrer: bool,
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

/// What the attachments of a run are made from.
#[derive(Debug)]
pub struct AttachRun<'a> {
    pub reg: &'a Registry,
    pub ecr: &'a crate::ecr::Ecr,
    pub inputs: &'a crate::inputs::Inputs,
    pub facts: BuildFacts<'a>,
    /// `host/repository`: the provenance's subject name, cosign's docker-reference.
    pub repository_ref: String,
    /// `sign: kms`: the key, checked before the build.
    pub signer: Option<&'a KmsSigner>,
}

/// The manifests this run pushed: each platform built here (or the one image) and, with
/// a signer, the index it put.
pub fn targets(
    published: &super::pipeline::Published,
    images: &[crate::builds::PlatformImage],
    signed: bool,
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
                index: false,
            })
            .collect();
    }
    let mut targets: Vec<Target> = published
        .children
        .iter()
        .filter(|child| child.built_by.is_none())
        .map(|child| Target {
            platform: Some(child.platform.clone()),
            digest: child.digest.clone(),
            index: false,
        })
        .collect();
    if signed {
        targets.extend(published.digest.iter().map(|digest| Target {
            platform: None,
            digest: digest.clone(),
            index: true,
        }));
    }
    targets
}

/// Makes and pushes every target's attachments, target after target (a few small
/// manifests each).
pub async fn attach_all(
    run: &AttachRun<'_>,
    targets: Vec<Target>,
    images: &[crate::builds::PlatformImage],
) -> anyhow::Result<Attachments> {
    let mut out = Attachments::default();
    for target in targets {
        let bases = images
            .iter()
            .find(|image| {
                image.platform == target.platform || image.built.platform == target.platform
            })
            .or_else(|| images.first())
            .map_or(&[][..], |image| image.built.bases.as_slice());
        let subject = read_subject(run.reg, &target.digest).await?;
        let before = existing_provenance(run, &target).await?;
        let made = artifacts(run, &target, &subject, bases, before.is_some()).await?;
        out.attached.extend(before);
        for (kind, artifact) in made {
            let referrer = !target.index;
            match put(run.reg, &artifact).await {
                Ok(()) => out
                    .attached
                    .push(attached(&target, kind, &artifact, referrer, false)),
                Err(failure)
                    if failure.code.as_deref() == Some("TAG_INVALID") && artifact.tag.is_some() =>
                {
                    // cosign's tag in an IMMUTABLE repository, from an earlier run of
                    // this image: what it holds stays.
                    let tag = artifact.tag.clone().unwrap_or_default();
                    tracing::warn!(
                        "`{tag}` exists already and is immutable here: the {} there is kept",
                        kind.label()
                    );
                    let (_, bytes) = run
                        .reg
                        .get_manifest(&run.reg.repository, &tag)
                        .await
                        .map_err(|f| anyhow::anyhow!("reading `{tag}`: {}", f.describe()))?;
                    let mut kept = attached(&target, kind, &artifact, referrer, true);
                    kept.digest = crate::publish::export::sha256_digest(&bytes);
                    out.attached.push(kept);
                }
                Err(failure) if !kind.required() && !failure.transient => {
                    out.refused.push(Refused {
                        kind,
                        subject: target.digest.clone(),
                        reason: failure.describe(),
                    });
                }
                Err(failure) => anyhow::bail!(
                    "attaching the {} of {} in {}/{} failed: {}",
                    kind.label(),
                    target.digest,
                    run.reg.host,
                    run.reg.repository,
                    failure.describe()
                ),
            }
        }
    }
    Ok(out)
}

fn attached(
    target: &Target,
    kind: AttachmentKind,
    artifact: &Artifact,
    referrer: bool,
    existing: bool,
) -> Attached {
    Attached {
        platform: target.platform.clone(),
        subject: target.digest.clone(),
        kind,
        digest: artifact.manifest.digest.clone(),
        tag: artifact.tag.clone(),
        referrer,
        existing,
    }
}

/// The artifacts of one target: its provenance (signed with a signer) unless it is an
/// index or provenance is off, and its signature with a signer.
async fn artifacts(
    run: &AttachRun<'_>,
    target: &Target,
    subject: &Subject,
    bases: &[crate::engine::bases::ResolvedBase],
    has_provenance: bool,
) -> anyhow::Result<Vec<(AttachmentKind, Artifact)>> {
    let mut out = Vec::new();
    let wants_provenance = run.inputs.supply.provenance != ProvenanceMode::Off && !target.index;
    if wants_provenance && !has_provenance {
        let platform = target.platform.as_ref().map(ToString::to_string);
        let statement = provenance::statement(
            &run.facts,
            &run.repository_ref,
            &target.digest,
            platform.as_deref(),
            bases,
        )
        .map_err(|e| anyhow::anyhow!("cannot make the provenance of {}: {e}", target.digest))?;
        let made = if let Some(signer) = run.signer {
            let existing = tagged(run.reg, &cosign::attestation_tag(&target.digest)?).await?;
            let artifact = cosign::attest(signer, &statement, subject, existing.as_deref()).await?;
            (AttachmentKind::SignedProvenance, artifact)
        } else {
            let attachment = provenance::attachment(&statement)
                .map_err(|e| anyhow::anyhow!("cannot encode the provenance: {e}"))?;
            (AttachmentKind::Provenance, attachment.artifact(subject))
        };
        out.push(made);
    }
    if let Some(signer) = run.signer {
        let existing = tagged(run.reg, &cosign::signature_tag(&target.digest)?).await?;
        let mut artifact =
            cosign::sign_image(signer, &run.repository_ref, subject, existing.as_deref()).await?;
        if target.index {
            artifact = artifact.without_subject()?;
        }
        out.push((AttachmentKind::Signature, artifact));
    }
    Ok(out)
}

/// The (unsigned) provenance the target has already: a re-run that built the same image
/// (a reproducible build, `on-tag-exists: overwrite`) keeps the one there, one per
/// image rather than one per run. A signed one is appended to cosign's tag instead.
async fn existing_provenance(
    run: &AttachRun<'_>,
    target: &Target,
) -> anyhow::Result<Option<Attached>> {
    if run.signer.is_some() || target.index || run.inputs.supply.provenance == ProvenanceMode::Off {
        return Ok(None);
    }
    // Where the API cannot list referrers (an endpoint without `ListImageReferrers`),
    // nothing is known to be there: the provenance is attached.
    let listed = match run
        .ecr
        .referrers(
            &run.inputs.repository,
            run.inputs.registry_id.as_deref(),
            &target.digest,
        )
        .await
    {
        Ok(listed) => listed,
        Err(err) => {
            tracing::debug!("{}", crate::error_chain(err.as_ref()));
            return Ok(None);
        }
    };
    Ok(listed
        .into_iter()
        .find(|r| r.artifact_type.as_deref() == Some(STATEMENT_MEDIA_TYPE))
        .map(|found| Attached {
            platform: target.platform.clone(),
            subject: target.digest.clone(),
            kind: AttachmentKind::Provenance,
            digest: found.digest,
            tag: None,
            referrer: true,
            existing: true,
        }))
}

/// The manifest under `tag`, if there is one.
async fn tagged(reg: &Registry, tag: &str) -> anyhow::Result<Option<Vec<u8>>> {
    match reg
        .with_retry(&format!("reading `{tag}`"), || {
            reg.get_manifest(&reg.repository, tag)
        })
        .await
    {
        Ok((_, bytes)) => Ok(Some(bytes.to_vec())),
        Err((failure, _)) if failure.status == Some(404) => Ok(None),
        Err((failure, _)) => anyhow::bail!(
            "cannot read `{tag}` in {}/{}: {}",
            reg.host,
            reg.repository,
            failure.describe()
        ),
    }
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

/// Uploads the artifact's blobs and puts its manifest under its tag, or by digest.
async fn put(reg: &Registry, artifact: &Artifact) -> Result<(), Failure> {
    for blob in &artifact.blobs {
        reg.upload_small_blob(&blob.digest, &blob.bytes).await?;
    }
    let manifest = &artifact.manifest;
    let reference = artifact.tag.as_ref().unwrap_or(&manifest.digest);
    reg.with_retry(&format!("putting {reference}"), || {
        reg.put_manifest(reference, &manifest.media_type, manifest.bytes.clone())
    })
    .await
    .map_err(|(failure, _)| failure)?;
    Ok(())
}

/// How long ECR's API may take to list a referrer just pushed (eventual consistency).
const LISTING_WAIT: Duration = Duration::from_secs(10);

/// Has ECR list every referrer among its subject's (`ListImageReferrers`), re-reading
/// for a while. A signature ECR does not list fails the step; a provenance gets a
/// warning, returned for the log.
pub async fn confirm(
    ecr: &crate::ecr::Ecr,
    repository: &str,
    registry_id: Option<&str>,
    attachments: &Attachments,
) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let referrers: Vec<&Attached> = attachments
        .attached
        .iter()
        .filter(|a| a.referrer && a.kind != AttachmentKind::EcrSignature)
        .collect();
    let mut subjects: Vec<&String> = referrers.iter().map(|a| &a.subject).collect();
    subjects.sort();
    subjects.dedup();
    for subject in subjects {
        let started = Instant::now();
        let required = referrers
            .iter()
            .any(|a| &a.subject == subject && a.kind.required());
        let missing = loop {
            let listed = match ecr.referrers(repository, registry_id, subject).await {
                Ok(listed) => listed,
                // A provenance alone is not worth failing a pushed image over an API
                // that cannot list referrers; a signature that cannot be confirmed is.
                Err(err) if !required => {
                    warnings.push(format!(
                        "the provenance of {subject} was pushed but cannot be confirmed: {}",
                        crate::error_chain(err.as_ref())
                    ));
                    break Vec::new();
                }
                Err(err) => return Err(err),
            };
            let missing: Vec<&&Attached> = referrers
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

/// The artifact type of a Notary Project signature: how ECR's managed signing stores a
/// signature, as a referrer of the image (ECR User Guide, managed signing).
const NOTARY_SIGNATURE: &str = "application/vnd.cncf.notary.signature";
/// How often ECR's signing status is asked for.
const SIGNING_POLL: Duration = Duration::from_secs(2);

/// `sign: ecr`: waits until ECR's managed signing says every target is signed (or
/// fails naming the profile), then finds each signature among the target's referrers.
pub async fn ecr_signatures(
    ecr: &crate::ecr::Ecr,
    inputs: &crate::inputs::Inputs,
    targets: &[Target],
    rules: &[crate::ecr::signing::SigningRule],
) -> anyhow::Result<(Vec<crate::ecr::signing::ImageSignatures>, Vec<Attached>)> {
    let registry_id = inputs.registry_id.as_deref();
    let digests: Vec<String> = targets.iter().map(|t| t.digest.clone()).collect();
    let signed = ecr
        .wait_signed(
            &inputs.repository,
            registry_id,
            &digests,
            rules,
            inputs.supply.signing_timeout,
            SIGNING_POLL,
        )
        .await?;
    // ECR said COMPLETE; its referrers listing may lag behind (eventual consistency).
    let mut attached = Vec::new();
    for target in targets {
        let started = Instant::now();
        let found = loop {
            let listed = ecr
                .referrers(&inputs.repository, registry_id, &target.digest)
                .await?;
            let found: Vec<String> = listed
                .into_iter()
                .filter(|r| r.artifact_type.as_deref() == Some(NOTARY_SIGNATURE))
                .map(|r| r.digest)
                .collect();
            if !found.is_empty() || started.elapsed() >= LISTING_WAIT {
                break found;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        if found.is_empty() {
            tracing::warn!(
                "ECR reports {} signed, but lists no signature among its referrers yet",
                target.digest
            );
        }
        attached.extend(found.into_iter().map(|digest| Attached {
            platform: target.platform.clone(),
            subject: target.digest.clone(),
            kind: AttachmentKind::EcrSignature,
            digest,
            tag: None,
            referrer: true,
            existing: false,
        }));
    }
    Ok((signed, attached))
}
