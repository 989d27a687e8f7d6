//! `sign: ecr`: ECR's managed signing. ECR signs an image itself on push (with an AWS
//! Signer profile) when a rule of the registry's signing configuration covers the
//! repository; the action checks before the build that one does
//! ([`Ecr::signing_rules_for`]), and after the push waits until ECR reports every pushed
//! manifest signed ([`Ecr::wait_signed`]).
//!
//! The waiting is a pure judgement ([`assess`]) of the statuses a [`StatusSource`]
//! reports, polled by [`wait_for`]: tests script the source, with no AWS.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context as _};
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{ImageIdentifier, SigningRepositoryFilterType, SigningStatus};

use super::{api_error, Ecr};

/// The only filter type ECR has (API reference, `SigningRepositoryFilter`).
const WILDCARD_MATCH: &str = "WILDCARD_MATCH";

/// A rule of the registry's signing configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningRule {
    /// The AWS Signer signing profile ECR signs with.
    pub profile_arn: String,
    /// Its repository filters; none means every repository ("If no filters are
    /// specified, all images pushed to the registry are signed", `SigningRule`).
    pub filters: Vec<RepositoryFilter>,
}

/// A repository filter of a signing rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryFilter {
    pub filter: String,
    /// `WILDCARD_MATCH`; a type ECR adds later matches nothing here.
    pub kind: String,
}

impl SigningRule {
    /// Whether ECR signs the images pushed to `repository` by this rule: it has no filter,
    /// or one of its filters matches.
    pub fn covers(&self, repository: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| f.matches(repository))
    }

    /// The rule for messages: its profile and filters.
    fn describe(&self) -> String {
        let filters = if self.filters.is_empty() {
            "every repository".to_string()
        } else {
            self.filters
                .iter()
                .map(|f| match f.kind.as_str() {
                    WILDCARD_MATCH => format!("`{}`", f.filter),
                    kind => format!("`{}` ({kind})", f.filter),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("{}: {filters}", self.profile_arn)
    }
}

impl RepositoryFilter {
    pub fn matches(&self, repository: &str) -> bool {
        // `*` matches any sequence, `/` included, and the whole name must match (API
        // reference, `SigningRepositoryFilter`): the same rule as tag-mutability filters.
        self.kind == WILDCARD_MATCH && super::repository::wildcard_matches(&self.filter, repository)
    }
}

/// The signing status of an image for one signing profile, as ECR reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileStatus {
    pub profile_arn: String,
    /// `IN_PROGRESS`, `COMPLETE` or `FAILED`.
    pub status: String,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
}

/// The signatures ECR made for one pushed manifest: one per signing profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSignatures {
    pub digest: String,
    pub profile_arns: Vec<String>,
}

/// Where an image's signing statuses come from: ECR, or a script in tests.
pub trait StatusSource {
    /// The statuses of `digest` now; none yet (ECR has not started, or does not show the
    /// image yet) is an empty list.
    fn statuses(
        &self,
        repository: &str,
        registry_id: Option<&str>,
        digest: &str,
    ) -> impl Future<Output = anyhow::Result<Vec<ProfileStatus>>> + Send;
}

/// How far an image's signing is, from its statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Signed by these profiles.
    Signed(Vec<String>),
    /// Not yet; what is awaited, for a timeout's message.
    Pending(String),
    /// A signing job failed: the message.
    Failed(String),
}

/// Judges one image's statuses. Any `FAILED` fails (no later status mends it); the image
/// is signed when it has statuses and every one is `COMPLETE`. The statuses are not
/// required to name every profile whose rule covers the repository: which rules ECR
/// applies when several match is ECR's to decide, and a rule it does not apply would
/// otherwise be waited for until the timeout.
pub fn assess(digest: &str, statuses: &[ProfileStatus]) -> Progress {
    if let Some(failed) = statuses.iter().find(|s| s.status == "FAILED") {
        return Progress::Failed(format!(
            "ECR managed signing of {digest} with the signing profile {} failed: {}: {}",
            failed.profile_arn,
            failed.failure_code.as_deref().unwrap_or("no failure code"),
            failed
                .failure_reason
                .as_deref()
                .unwrap_or("no reason given"),
        ));
    }
    if statuses.is_empty() {
        return Progress::Pending("no signing job yet".into());
    }
    let unfinished: Vec<String> = statuses
        .iter()
        .filter(|s| s.status != "COMPLETE")
        .map(|s| format!("{} {}", s.profile_arn, s.status))
        .collect();
    if unfinished.is_empty() {
        Progress::Signed(statuses.iter().map(|s| s.profile_arn.clone()).collect())
    } else {
        Progress::Pending(unfinished.join(", "))
    }
}

/// Polls `source` every `poll` until every digest is signed; fails on the first `FAILED`,
/// or when `timeout` has passed, naming what each unsigned digest still waits for and
/// the `profiles` expected to sign it.
pub async fn wait_for<S: StatusSource>(
    source: &S,
    repository: &str,
    registry_id: Option<&str>,
    digests: &[String],
    profiles: &[String],
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<Vec<ImageSignatures>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut signed: Vec<Option<Vec<String>>> = vec![None; digests.len()];
    let mut waiting: Vec<String> = vec![String::new(); digests.len()];
    loop {
        for (i, digest) in digests.iter().enumerate() {
            if signed[i].is_some() {
                continue;
            }
            let statuses = source.statuses(repository, registry_id, digest).await?;
            match assess(digest, &statuses) {
                Progress::Signed(profiles) => signed[i] = Some(profiles),
                Progress::Pending(what) => waiting[i] = what,
                Progress::Failed(message) => bail!(message),
            }
        }
        if signed.iter().all(Option::is_some) {
            return Ok(digests
                .iter()
                .zip(signed)
                .map(|(digest, profiles)| ImageSignatures {
                    digest: digest.clone(),
                    profile_arns: profiles.unwrap_or_default(),
                })
                .collect());
        }
        if tokio::time::Instant::now() + poll > deadline {
            let pending: Vec<String> = digests
                .iter()
                .zip(&signed)
                .zip(&waiting)
                .filter(|((_, done), _)| done.is_none())
                .map(|((digest, _), what)| format!("{digest} ({what})"))
                .collect();
            bail!(
                "ECR managed signing did not finish within {}s for {} in `{repository}`, to be \
                 signed with the signing profile {}: see the signing jobs of that profile in \
                 AWS Signer, or raise `signing-timeout`",
                timeout.as_secs(),
                pending.join(", "),
                profiles.join(", ")
            );
        }
        tokio::time::sleep(poll).await;
    }
}

impl Ecr {
    /// The rules of the registry's signing configuration that cover `repository`: at
    /// least one, or an error saying how to configure managed signing. The configuration
    /// read is the one of the credentials' own registry in this region: the API takes no
    /// registry ID.
    pub async fn signing_rules_for(&self, repository: &str) -> anyhow::Result<Vec<SigningRule>> {
        let answer = self.client.get_signing_configuration().send().await;
        let (registry, configuration) = match answer {
            Ok(answer) => (
                answer
                    .registry_id
                    .map_or_else(|| "the registry".to_string(), |id| format!("registry {id}")),
                answer.signing_configuration,
            ),
            Err(err) if err.code() == Some("SigningConfigurationNotFoundException") => {
                ("the account's registry".to_string(), None)
            }
            Err(err) if err.code() == Some("AccessDeniedException") => bail!(
                "the AWS credentials may not call ecr:GetSigningConfiguration in {} ({}): \
                 allow it, and ecr:DescribeImageSigningStatus, for `sign: ecr`",
                self.region,
                err.message().unwrap_or("no message")
            ),
            Err(err) => {
                return Err(self.reach_error(err))
                    .context("cannot read the registry's signing configuration")
            }
        };
        let rules: Vec<SigningRule> = configuration
            .map(|c| c.rules.iter().map(to_rule).collect())
            .unwrap_or_default();
        if rules.is_empty() {
            bail!(
                "{registry} in {} has no managed signing rule, so ECR signs nothing on push: \
                 add one with an AWS Signer signing profile (`aws ecr \
                 put-signing-configuration`), or sign with a KMS key (`sign: kms`)",
                self.region
            );
        }
        let covering: Vec<SigningRule> = rules
            .iter()
            .filter(|rule| rule.covers(repository))
            .cloned()
            .collect();
        if covering.is_empty() {
            let listed: Vec<String> = rules.iter().map(SigningRule::describe).collect();
            bail!(
                "no managed signing rule of {registry} in {} covers the repository \
                 `{repository}`; the rules' repository filters are: {}; add a filter that \
                 matches it (`*` matches any characters)",
                self.region,
                listed.join("; ")
            );
        }
        Ok(covering)
    }

    /// Waits until ECR reports each of `digests` signed (see [`wait_for`]); `rules` are
    /// those [`Self::signing_rules_for`] found, named in messages.
    pub async fn wait_signed(
        &self,
        repository: &str,
        registry_id: Option<&str>,
        digests: &[String],
        rules: &[SigningRule],
        timeout: Duration,
        poll: Duration,
    ) -> anyhow::Result<Vec<ImageSignatures>> {
        let profiles: Vec<String> = rules.iter().map(|r| r.profile_arn.clone()).collect();
        wait_for(
            self,
            repository,
            registry_id,
            digests,
            &profiles,
            timeout,
            poll,
        )
        .await
    }
}

impl StatusSource for Ecr {
    async fn statuses(
        &self,
        repository: &str,
        registry_id: Option<&str>,
        digest: &str,
    ) -> anyhow::Result<Vec<ProfileStatus>> {
        let answer = self
            .client
            .describe_image_signing_status()
            .repository_name(repository)
            .set_registry_id(registry_id.map(ToString::to_string))
            .image_id(ImageIdentifier::builder().image_digest(digest).build())
            .send()
            .await;
        match answer {
            Ok(answer) => Ok(answer
                .signing_statuses()
                .iter()
                .map(|s| ProfileStatus {
                    profile_arn: s.signing_profile_arn().unwrap_or("unknown").to_string(),
                    status: s
                        .status()
                        .map_or("unknown", SigningStatus::as_str)
                        .to_string(),
                    failure_code: s.failure_code().map(ToString::to_string),
                    failure_reason: s.failure_reason().map(ToString::to_string),
                })
                .collect()),
            // A manifest just pushed may not be visible to the API yet.
            Err(err) if err.code() == Some("ImageNotFoundException") => Ok(Vec::new()),
            Err(err) if err.code() == Some("AccessDeniedException") => bail!(
                "the AWS credentials may not call ecr:DescribeImageSigningStatus on \
                 `{repository}` ({}): allow it for `sign: ecr`",
                err.message().unwrap_or("no message")
            ),
            Err(err) => Err(api_error(err)).with_context(|| {
                format!("cannot read the signing status of {digest} in `{repository}`")
            }),
        }
    }
}

fn to_rule(rule: &aws_sdk_ecr::types::SigningRule) -> SigningRule {
    SigningRule {
        profile_arn: rule.signing_profile_arn.clone(),
        filters: rule
            .repository_filters()
            .iter()
            .map(|f| RepositoryFilter {
                filter: f.filter.clone(),
                kind: match &f.filter_type {
                    SigningRepositoryFilterType::WildcardMatch => WILDCARD_MATCH.to_string(),
                    other => other.as_str().to_string(),
                },
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
