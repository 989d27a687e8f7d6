//! ECR's own replication, for `also-push-to` targets marked `replicated`: instead of
//! pushing there, the run checks before the build that a replication rule of the primary
//! registry covers the target (`DescribeRegistry`), and after the push waits until
//! `DescribeImageReplicationStatus` says the image is `COMPLETE` there. ECR replicates
//! only images pushed after the rule exists, with no SLA (ECR User Guide, private image
//! replication; aws/containers-roadmap#1664), so the wait is bounded.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_ecr::types::{ImageIdentifier, ReplicationStatus, RepositoryFilterType};

use super::{api_error, Ecr};

/// Where an image goes by replication: a region of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub region: String,
    pub registry_id: String,
}

/// How the wait for a replication ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replicated {
    Complete { after: Duration },
    Failed { code: String },
}

impl Ecr {
    /// Whether a replication rule of registry `source` (the primary) sends `repository`
    /// to `to`, per `DescribeRegistry`: a rule with that destination and no filter, or a
    /// prefix filter the repository name starts with. `DescribeRegistry` knows only the
    /// caller's own registry, so a primary in another account (`registry-id`) is refused.
    pub async fn replicates_to(
        &self,
        repository: &str,
        source: &str,
        to: &Destination,
    ) -> anyhow::Result<bool> {
        let answer = self
            .client
            .describe_registry()
            .send()
            .await
            .map_err(api_error)
            .context("cannot read the registry's replication rules (`ecr:DescribeRegistry`)")?;
        if let Some(own) = answer.registry_id().filter(|own| *own != source) {
            anyhow::bail!(
                "the primary registry is account {source}'s, but ECR shows the replication \
                 rules of the run's own account ({own}) only: drop `replicated` to push \
                 there"
            );
        }
        let rules = answer
            .replication_configuration()
            .map(aws_sdk_ecr::types::ReplicationConfiguration::rules)
            .unwrap_or_default();
        Ok(rules.iter().any(|rule| {
            let goes_there = rule
                .destinations()
                .iter()
                .any(|d| d.region() == to.region && d.registry_id() == to.registry_id);
            let filters = rule.repository_filters();
            let matches = filters.is_empty()
                || filters.iter().any(|f| {
                    *f.filter_type() == RepositoryFilterType::PrefixMatch
                        && repository.starts_with(f.filter())
                });
            goes_there && matches
        }))
    }

    /// Waits until `DescribeImageReplicationStatus` says image `digest` of `repository` is
    /// `COMPLETE` at `to`, or `FAILED`, polling with backoff for at most `timeout`.
    pub async fn wait_for_replication(
        &self,
        repository: &str,
        registry_id: Option<&str>,
        digest: &str,
        to: &Destination,
        timeout: Duration,
    ) -> anyhow::Result<Replicated> {
        let started = Instant::now();
        let mut pause = Duration::from_secs(2);
        loop {
            let answer = self
                .client
                .describe_image_replication_status()
                .repository_name(repository)
                .set_registry_id(registry_id.map(ToString::to_string))
                .image_id(ImageIdentifier::builder().image_digest(digest).build())
                .send()
                .await
                .map_err(api_error)
                .context(
                    "cannot read the image's replication status \
                     (`ecr:DescribeImageReplicationStatus`)",
                )?;
            let status = answer
                .replication_statuses()
                .iter()
                .find(|s| {
                    s.region() == Some(to.region.as_str())
                        && s.registry_id() == Some(to.registry_id.as_str())
                })
                .and_then(|s| s.status().cloned().map(|st| (st, s.failure_code())));
            match status {
                Some((ReplicationStatus::Complete, _)) => {
                    return Ok(Replicated::Complete {
                        after: started.elapsed(),
                    })
                }
                Some((ReplicationStatus::Failed, code)) => {
                    return Ok(Replicated::Failed {
                        code: code.unwrap_or("no failure code").to_string(),
                    })
                }
                _ => {}
            }
            if started.elapsed() + pause > timeout {
                anyhow::bail!(
                    "ECR had not replicated {digest} to {} in account {} after {} (its last \
                     status: {}); raise `replication-timeout`, or push there instead of \
                     waiting (drop `replicated`)",
                    to.region,
                    to.registry_id,
                    crate::network::stall::human(timeout),
                    status.map_or_else(
                        || "not started".to_string(),
                        |(s, _)| s.as_str().to_string()
                    )
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause + pause / 2).min(Duration::from_secs(30));
        }
    }
}
