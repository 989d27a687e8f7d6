//! After the push: each target's ECR confirms the digest (or, for a run that skipped
//! the build, the image is copied from the primary to the targets that lack it), the
//! scan gate runs in each, and the summary gets a row per registry.

use std::collections::HashSet;

use anyhow::Context as _;

use super::{wait_for_replicas, Failed, Target, TargetApi};
use crate::inputs::Inputs;
use crate::publish::copy::{self, Copied};
use crate::publish::targets::TargetPush;
use crate::registry::Registry;
use crate::report::targets::TargetRow;
use crate::report::Report;
use crate::repository;
use crate::runner::Runner;
use crate::supply::cosign;

/// Has each target's ECR confirm what the push put there, and makes the summary's rows:
/// the primary's (confirmed already: `report`), then each target's in `also-push-to`
/// order, those left out before the build included.
pub async fn confirm(
    plan: &crate::plan::Plan,
    inputs: &Inputs,
    pushes: &[TargetPush],
    report: &Report,
    runner: &Runner,
) -> Vec<TargetRow> {
    let row = |push: &TargetPush| TargetRow {
        label: push.label.clone(),
        uris: Vec::new(),
        digest: push.digest.clone(),
        bytes_sent: push.blobs.uploaded_bytes,
        blobs_skipped: push.blobs.skipped_blobs,
        time: std::time::Duration::from_secs_f64(push.seconds),
        error: push.error.clone(),
    };
    let mut rows = Vec::with_capacity(pushes.len() + plan.left_out.len());
    let uris = report.confirmed_references().into_iter().cloned().collect();
    match pushes.first() {
        Some(primary) => rows.push(TargetRow {
            uris,
            ..row(primary)
        }),
        // The daemon's pusher (only `replicated` targets besides the primary).
        None => rows.push(TargetRow {
            label: format!("{}/{}", report.registry, report.repository),
            uris,
            digest: report.digest.clone(),
            bytes_sent: report.blobs.map_or(0, |b| b.uploaded_bytes),
            blobs_skipped: report.blobs.map_or(0, |b| b.skipped_blobs),
            time: report.push_time.unwrap_or_default(),
            error: None,
        }),
    }
    let checks = plan
        .extra
        .iter()
        .zip(pushes.iter().skip(1))
        .map(|(target, push)| async move {
            let mut row = row(push);
            if let Some(digest) = &push.digest {
                match confirm_one(target, digest).await {
                    Ok((uris, moved)) => {
                        row.uris = uris;
                        for tag in moved {
                            runner.warning(&format!(
                                "tag `{tag}` in {} names another image by now (another run \
                             pushed it after this one): left out of the `targets` output",
                                target.label()
                            ));
                        }
                    }
                    Err(err) => {
                        row.digest = None;
                        row.error = Some(format!("{err:#}"));
                    }
                }
            }
            row
        });
    rows.extend(futures_util::future::join_all(checks).await);
    if let Some(digest) = report.digest.as_deref() {
        rows.extend(wait_for_replicas(plan, inputs, digest).await);
    }
    rows.extend(plan.left_out.iter().map(left_out_row));
    in_input_order(&mut rows, inputs, &report.registry);
    rows
}

/// ECR's confirmation of `digest` under every tag in `target`: the references it
/// confirmed, and the tags it shows at another image.
async fn confirm_one(target: &Target, digest: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let inputs = &target.inputs;
    let confirmed = match &target.api {
        TargetApi::Private(ecr) => {
            ecr.confirm_digest(
                &inputs.repository,
                inputs.registry_id.as_deref(),
                &inputs.tags,
                digest,
            )
            .await
        }
        TargetApi::Public(public) => {
            public
                .confirm_digest(&inputs.repository, &inputs.tags, digest)
                .await
        }
    };
    let (_, moved) = confirmed
        .with_context(|| format!("ECR could not confirm the image in {}", target.label()))?;
    let host = &target.destination.login.host;
    let uris = inputs
        .tags
        .iter()
        .filter(|tag| !moved.contains(tag))
        .map(|tag| format!("{host}/{}:{tag}", target.destination.repository))
        .collect();
    Ok((uris, moved))
}

/// A run that skipped the build (every tag holds the image in the primary registry):
/// each target that lacks it gets it copied from the primary, as it is, so a re-run
/// finishes only the registries a failed run missed. The rows, the primary's first.
pub async fn finish_skipped(
    plan: &crate::plan::Plan,
    inputs: &Inputs,
    digest: &str,
) -> Vec<TargetRow> {
    if inputs.also_push_to.is_empty() {
        return Vec::new();
    }
    let primary = &plan.auth.registry;
    let mut rows = vec![TargetRow {
        label: format!("{primary}/{}", inputs.repository),
        uris: inputs
            .tags
            .iter()
            .map(|tag| format!("{primary}/{}:{tag}", inputs.repository))
            .collect(),
        digest: Some(digest.to_string()),
        bytes_sent: 0,
        blobs_skipped: 0,
        time: std::time::Duration::ZERO,
        error: None,
    }];
    let copies = plan.extra.iter().map(|target| async move {
        let started = std::time::Instant::now();
        let mut row = TargetRow::new(target.label());
        let done = async {
            let copied = copy_to(plan, inputs, target, digest).await?;
            row.bytes_sent = copied.bytes_sent;
            row.blobs_skipped = copied.blobs_skipped;
            confirm_one(target, digest).await
        };
        match done.await {
            Ok((uris, _)) => {
                row.uris = uris;
                row.digest = Some(digest.to_string());
            }
            Err(err) => row.error = Some(format!("{err:#}")),
        }
        row.time = started.elapsed();
        row
    });
    rows.extend(futures_util::future::join_all(copies).await);
    rows.extend(wait_for_replicas(plan, inputs, digest).await);
    rows.extend(plan.left_out.iter().map(left_out_row));
    in_input_order(&mut rows, inputs, primary);
    rows
}

/// The rows after the primary's in `also-push-to` order: pushed, replicated and left-out
/// targets are found apart.
fn in_input_order(rows: &mut [TargetRow], inputs: &Inputs, primary_host: &str) {
    let account = primary_host.split('.').next().unwrap_or_default();
    let order: Vec<String> = inputs
        .also_push_to
        .iter()
        .map(|spec| super::label(spec, account, inputs))
        .collect();
    if let Some((_, rest)) = rows.split_first_mut() {
        rest.sort_by_key(|row| order.iter().position(|label| *label == row.label));
    }
}

/// The primary registry and `target`'s, for a copy between them.
fn connect_both(
    plan: &crate::plan::Plan,
    inputs: &Inputs,
    target: &Target,
) -> anyhow::Result<(Registry, Registry)> {
    let from = Registry::connect(
        &plan.auth.login(),
        &inputs.repository,
        plan.retry,
        &plan.network,
    )?;
    let elsewhere = crate::network::Network {
        registry_endpoint: None,
        ..plan.network.clone()
    };
    let to = Registry::connect(
        &target.destination.login,
        &target.destination.repository,
        plan.retry,
        &elsewhere,
    )?;
    Ok((from, to))
}

/// Copies the primary's image `digest` to `target`, under the tags it does not hold yet,
/// unless it holds it already; then the attachments it lacks ([`copy_attachments`]).
async fn copy_to(
    plan: &crate::plan::Plan,
    inputs: &Inputs,
    target: &Target,
    digest: &str,
) -> anyhow::Result<Copied> {
    let (from, to) = connect_both(plan, inputs, target)?;
    let mut copied = Copied::default();
    if target.holds.as_deref() != Some(digest) {
        let kept = repository::check_present(&target.destination.present, digest)?;
        let tags = repository::without(&inputs.tags, &kept);
        tracing::info!(
            "{} lacks {digest}: copying it from the primary registry",
            target.label()
        );
        copied += copy::copy(&from, &to, digest, &tags, &plan.spool_dir).await?;
    }
    copied += copy_attachments(plan, inputs, target, (&from, &to), digest)
        .await
        .with_context(|| format!("copying the attachments of {digest} to {}", target.label()))?;
    Ok(copied)
}

/// The primary's attachments of `digest` that `target` lacks, copied as they are: the
/// referrers ECR lists for the image (and, for an index, for each of its platforms), and
/// cosign's `sha256-<hex>.sig` and `.att` tags. A re-run that finishes a target leaves
/// it with what the full run attached elsewhere. ECR Public gets none, as in a full run,
/// and a run that attaches nothing (`provenance: false`, no `sign`) copies none (nor needs
/// `ecr:ListImageReferrers`).
async fn copy_attachments(
    plan: &crate::plan::Plan,
    inputs: &Inputs,
    target: &Target,
    (from, to): (&Registry, &Registry),
    digest: &str,
) -> anyhow::Result<Copied> {
    let Some(ecr) = target.ecr().filter(|_| inputs.supply.attaches()) else {
        return Ok(Copied::default());
    };
    let there = &target.inputs;
    let mut subjects = vec![digest.to_string()];
    subjects.extend(copy::children(from, digest).await?);
    let mut copied = Copied::default();
    let mut count = 0;
    for subject in &subjects {
        let held: HashSet<String> = ecr
            .referrers(&there.repository, there.registry_id.as_deref(), subject)
            .await?
            .into_iter()
            .map(|r| r.digest)
            .collect();
        let referrers = plan
            .ecr
            .referrers(&inputs.repository, inputs.registry_id.as_deref(), subject)
            .await?;
        for referrer in referrers.iter().filter(|r| !held.contains(&r.digest)) {
            copied += copy::copy(from, to, &referrer.digest, &[], &plan.spool_dir).await?;
            count += 1;
        }
        for tag in [
            cosign::signature_tag(subject)?,
            cosign::attestation_tag(subject)?,
        ] {
            let Some(tagged) = copy::tagged(from, &tag).await? else {
                continue;
            };
            if copy::tagged(to, &tag).await?.as_deref() != Some(tagged.as_str()) {
                copied += copy::copy(from, to, &tagged, &[tag], &plan.spool_dir).await?;
                count += 1;
            }
        }
    }
    if count > 0 {
        tracing::info!(
            "copied {count} attachment(s) of {digest} (provenance, signatures) from the \
             primary registry to {}",
            target.label()
        );
    }
    Ok(copied)
}

fn left_out_row(failed: &Failed) -> TargetRow {
    TargetRow {
        error: Some(failed.reason.clone()),
        ..TargetRow::new(&failed.label)
    }
}

/// `scan: wait` in each target that has the image: ECR's findings there (each registry
/// scans its own copy, by its own settings), through the same gate as the primary's. A
/// target whose gate fails is marked so in its row, and so fails the step.
pub async fn gate(plan: &crate::plan::Plan, report: &mut Report, runner: &Runner) {
    let digests = report.gated_digests();
    for target in &plan.extra {
        let Some(row) = report.target_row(target.label()) else {
            continue;
        };
        let Some(digest) = row.digest.clone().filter(|_| row.error.is_none()) else {
            continue;
        };
        // ECR Public does not scan.
        let Some(ecr) = target.ecr() else {
            continue;
        };
        let inputs = &target.inputs;
        let request = crate::ecr::scan::ScanRequest {
            repository: &inputs.repository,
            registry_id: inputs.registry_id.as_deref(),
            digests: &digests,
            scans_on_push: target.scans_on_push,
            timeout: inputs.scan.timeout,
            poll: crate::ecr::scan::Backoff::DEFAULT,
        };
        let scans = {
            let _group = runner.group(&format!("Scan of {digest} in {}", target.label()));
            ecr.scan_findings(&request).await
        };
        match scans {
            Ok(scans) => {
                let gate = crate::gate::Gate::evaluate(scans, &inputs.scan);
                let image = format!("{}@{digest}", target.label());
                if let Some(line) = gate.failure(&image) {
                    row.error = Some(line);
                } else {
                    tracing::info!("scan gate passed in {}", target.label());
                }
            }
            Err(err) => row.error = Some(format!("the scan gate could not run: {err:#}")),
        }
    }
}
