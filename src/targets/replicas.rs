//! `also-push-to`'s `replicated` targets: nothing is pushed there; a replication rule of
//! the primary registry must cover them (checked before the build), and after the push
//! the run waits for ECR's replication of the image, then confirms it with that
//! registry's own API.

use super::{inputs_there, private_api, TargetSpec};
use crate::ecr::Ecr;
use crate::env::GitHubContext;
use crate::inputs::Inputs;
use crate::report::targets::TargetRow;

/// A target ECR's replication fills: nothing is pushed there; the run waits for the
/// primary's image to arrive, and confirms it with that registry's API.
#[derive(Debug)]
pub struct Replica {
    pub label: String,
    pub to: crate::ecr::replication::Destination,
    /// The destination's ECR API.
    pub ecr: Ecr,
    /// The inputs as they apply there.
    pub inputs: Inputs,
    /// Its registry host.
    pub host: String,
}

/// A `replicated` target: a replication rule of the primary registry must send the
/// repository there (checked now, so a missing rule does not cost a timeout).
pub(super) async fn plan_replica(
    spec: &TargetSpec,
    label: &str,
    inputs: &Inputs,
    github: &GitHubContext,
    primary: &Ecr,
    primary_account: &str,
) -> anyhow::Result<Replica> {
    let Some((region, endpoint)) = spec.private() else {
        unreachable!("ECR Public is never `replicated` (the input refuses it)")
    };
    if spec
        .repository
        .as_ref()
        .is_some_and(|r| *r != inputs.repository)
    {
        anyhow::bail!(
            "ECR's replication keeps the repository's name: a `replicated` target is \
             `{}` there, not another repository",
            inputs.repository
        );
    }
    let account = spec.account_or(primary_account).unwrap_or_default();
    let to = crate::ecr::replication::Destination {
        region: region.to_string(),
        registry_id: account.to_string(),
    };
    if !primary
        .replicates_to(&inputs.repository, primary_account, &to)
        .await?
    {
        anyhow::bail!(
            "no replication rule of the primary registry sends `{}` to {region} in account \
             {account}: add one (ECR console, Private registry, Replication), or drop \
             `replicated` to push there",
            inputs.repository
        );
    }
    let ecr = private_api(primary, spec, github).await?;
    let target_inputs = inputs_there(inputs, &inputs.repository, Some(account));
    tracing::info!("{label} gets the image by ECR's replication");
    Ok(Replica {
        label: label.to_string(),
        to,
        ecr,
        inputs: target_inputs,
        host: endpoint.registry_host(account, region),
    })
}

/// Waits for ECR's replication of `digest` to each replica, side by side, and confirms
/// it there; a row for each.
pub async fn wait_for_replicas(
    plan: &crate::plan::Plan,
    inputs: &Inputs,
    digest: &str,
) -> Vec<TargetRow> {
    let waits = plan.replicas.iter().map(|replica| async move {
        let started = std::time::Instant::now();
        let mut row = TargetRow::new(&replica.label);
        let waited = async {
            // A re-run's image may be there already: asked once, as confirming would
            // wait for it to show.
            let there = &replica.inputs;
            let present = replica
                .ecr
                .has_image(&there.repository, there.registry_id.as_deref(), digest)
                .await;
            if matches!(present, Ok(true)) {
                return confirm_replica(replica, digest).await;
            }
            let outcome = plan
                .ecr
                .wait_for_replication(
                    &inputs.repository,
                    inputs.registry_id.as_deref(),
                    digest,
                    &replica.to,
                    inputs.replication_timeout,
                )
                .await?;
            match outcome {
                crate::ecr::replication::Replicated::Complete { after } => {
                    tracing::info!(
                        "ECR replicated {digest} to {} in {:.1}s",
                        replica.label,
                        after.as_secs_f64()
                    );
                    confirm_replica(replica, digest).await
                }
                crate::ecr::replication::Replicated::Failed { code } => anyhow::bail!(
                    "ECR's replication to {} failed ({code}); push there instead (drop \
                     `replicated`)",
                    replica.label
                ),
            }
        };
        match waited.await {
            Ok(uris) => {
                row.uris = uris;
                row.digest = Some(digest.to_string());
            }
            Err(err) => row.error = Some(format!("{err:#}")),
        }
        row.time = started.elapsed();
        row
    });
    futures_util::future::join_all(waits).await
}

/// The destination's ECR confirms `digest` under every tag: the references.
async fn confirm_replica(replica: &Replica, digest: &str) -> anyhow::Result<Vec<String>> {
    let inputs = &replica.inputs;
    let (_, moved) = replica
        .ecr
        .confirm_digest(
            &inputs.repository,
            inputs.registry_id.as_deref(),
            &inputs.tags,
            digest,
        )
        .await?;
    Ok(inputs
        .tags
        .iter()
        .filter(|tag| !moved.contains(tag))
        .map(|tag| format!("{}/{}:{tag}", replica.host, inputs.repository))
        .collect())
}
