//! ECR in another region or account, for `also-push-to`: the same loaded SDK
//! configuration (HTTP client, proxy, trust, credentials chain) pointed at the target's
//! region and API endpoint, with the credentials of an assumed role when the target names
//! one (`sts:AssumeRole`, tagged with the run's GitHub context so the target account's
//! `CloudTrail` and policies can tell which workflow run pushed).

use std::sync::Arc;

use anyhow::Context as _;
use aws_config::sts::AssumeRoleProvider;
use aws_config::Region;
use aws_credential_types::provider::{ProvideCredentials as _, SharedCredentialsProvider};
use aws_sdk_ecr::Client;

use super::Ecr;
use crate::env::GitHubContext;

/// How long an assumed role's credentials last before the SDK assumes it again.
const ROLE_SESSION: std::time::Duration = std::time::Duration::from_secs(3600);

impl Ecr {
    /// ECR in `region` at `endpoint`, with the credentials of `role` when given (assumed
    /// with this client's own credentials and the run's session tags).
    pub async fn elsewhere(
        &self,
        region: &str,
        endpoint: &str,
        role: Option<&str>,
        github: &GitHubContext,
    ) -> anyhow::Result<Self> {
        let config = self.config_in(region, role, github).await?;
        // The endpoint on the client's own configuration: it wins over
        // `AWS_ENDPOINT_URL_ECR`, which names the primary's API.
        let client = Client::from_conf(
            aws_sdk_ecr::config::Builder::from(&config)
                .endpoint_url(endpoint)
                .build(),
        );
        Ok(Self {
            client,
            region: region.to_string(),
            endpoint: endpoint.to_string(),
            proxy: self.proxy.clone(),
            trust_hint: self.trust_hint.clone(),
            sdk: Arc::new(config),
        })
    }

    /// This client's SDK configuration in `region`, with the credentials of `role` when
    /// given: for another region's ECR, or ECR Public.
    pub async fn config_in(
        &self,
        region: &str,
        role: Option<&str>,
        github: &GitHubContext,
    ) -> anyhow::Result<aws_config::SdkConfig> {
        let mut builder = self
            .sdk
            .to_builder()
            .region(Region::new(region.to_string()));
        if let Some(role) = role {
            let provider = self.assume(role, region, github).await?;
            builder = builder.credentials_provider(SharedCredentialsProvider::new(provider));
        }
        Ok(builder.build())
    }

    /// A provider of `role`'s credentials, assumed through STS in `region` and tagged with
    /// the run: assumed once here, so that a role the run cannot assume fails the target
    /// before anything is pushed, and again by the SDK's identity cache before they
    /// expire, so that a target's confirmation and scan gate after a long build still
    /// hold valid credentials.
    async fn assume(
        &self,
        role: &str,
        region: &str,
        github: &GitHubContext,
    ) -> anyhow::Result<AssumedRole> {
        let config = self
            .sdk
            .to_builder()
            .region(Region::new(region.to_string()))
            .build();
        let provider = AssumeRoleProvider::builder(role)
            .configure(&config)
            .session_name(session_name(github))
            .session_length(ROLE_SESSION)
            .tags(session_tags(github))
            .build()
            .await;
        let first = provider
            .provide_credentials()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}; the run's credentials need `sts:AssumeRole` and `sts:TagSession` on \
                     it, and its trust policy must allow them",
                    sts_reason(&e)
                )
            })
            .with_context(|| format!("cannot assume the role {role}"))?;
        tracing::info!("assumed the role {role} for the registry in {region}");
        Ok(AssumedRole {
            first: std::sync::Mutex::new(Some(first)),
            then: provider,
        })
    }
}

/// An assumed role's credentials: the ones the eager check got, handed to the SDK's
/// identity cache once while they have 5 minutes left (so the check costs no second
/// `AssumeRole`), then the SDK's provider, which assumes the role again whenever the
/// cache finds them near expiry.
#[derive(Debug)]
struct AssumedRole {
    first: std::sync::Mutex<Option<aws_credential_types::Credentials>>,
    then: AssumeRoleProvider,
}

impl aws_credential_types::provider::ProvideCredentials for AssumedRole {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let first = self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            // Only while fresh: a cache first asked after a long build assumes again.
            .filter(|c| {
                c.expiry().is_some_and(|at| {
                    at > std::time::SystemTime::now() + std::time::Duration::from_secs(300)
                })
            });
        match first {
            Some(credentials) => {
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(credentials))
            }
            None => self.then.provide_credentials(),
        }
    }
}

/// STS's own code and message when it answered (`AccessDenied: User: … is not authorized
/// to perform: sts:AssumeRole on resource: …`), else the error's whole chain.
fn sts_reason(err: &(dyn std::error::Error + 'static)) -> String {
    use aws_sdk_sts::error::ProvideErrorMetadata as _;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(sts) = e.downcast_ref::<AssumeRoleError>() {
            if let Some(code) = sts.code() {
                return format!("STS answered {code}: {}", sts.message().unwrap_or_default());
            }
        }
        source = e.source();
    }
    crate::error_chain(err)
}

/// `ecr-build-push-<run id>-<attempt>`, or `ecr-build-push` outside a workflow: at most 64
/// characters of `[\w+=,.@-]` (the STS API reference, `RoleSessionName`).
fn session_name(github: &GitHubContext) -> String {
    let mut name = String::from("ecr-build-push");
    for part in [&github.run_id, &github.run_attempt].into_iter().flatten() {
        name.push('-');
        name.push_str(part);
    }
    name.retain(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    name.truncate(64);
    name
}

/// The run's GitHub context as session tags (values at most 256 characters of the
/// characters STS allows).
fn session_tags(github: &GitHubContext) -> Vec<(&'static str, String)> {
    [
        ("GitHubRepository", &github.repository),
        ("GitHubRunId", &github.run_id),
        ("GitHubRef", &github.git_ref),
        ("GitHubSha", &github.sha),
    ]
    .into_iter()
    .filter_map(|(key, value)| {
        let mut value: String = value
            .as_deref()?
            .chars()
            .filter(|c| c.is_alphanumeric() || " _.:/=+-@".contains(*c))
            .collect();
        value.truncate(256);
        Some((key, value))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_named_and_tagged_after_the_run() {
        let github = GitHubContext {
            run_id: Some("42".into()),
            run_attempt: Some("2".into()),
            repository: Some("octo/app".into()),
            git_ref: Some("refs/heads/main".into()),
            ..GitHubContext::default()
        };
        assert_eq!(session_name(&github), "ecr-build-push-42-2");
        assert_eq!(session_name(&GitHubContext::default()), "ecr-build-push");
        assert_eq!(
            session_tags(&github),
            [
                ("GitHubRepository", "octo/app".to_string()),
                ("GitHubRunId", "42".into()),
                ("GitHubRef", "refs/heads/main".into()),
            ]
        );
    }
}
