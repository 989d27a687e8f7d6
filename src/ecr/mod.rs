//! The AWS side: credentials through the default chain, the registry token
//! ([`token`]: and its renewal, the `BLOB_MOUNTING` setting), repositories and their
//! creation templates ([`repository`], [`templates`]), policies, images and digest
//! confirmation ([`images`]), scans ([`scan`]), signing: with a KMS key for cosign
//! ([`kms`]) or by ECR's managed signing ([`signing`]); ECR Public ([`public`]: its
//! token, alias, repositories with their catalog data, images).
//!
//! The HTTP client is built here rather than taken from aws-config's default: rustls with
//! ring (static, fast to build) and a pure-Rust resolver that reads `/etc/hosts` and
//! `/etc/resolv.conf` itself, because a static glibc binary in a `FROM scratch` image
//! cannot resolve names through NSS. Its proxy and trust roots come from
//! [`crate::network::Network`], as the registry client's do.

mod elsewhere;
mod http;
mod images;
pub mod kms;
pub mod public;
mod referrers;
pub mod replication;
pub mod repository;
pub mod scan;
pub mod signing;
pub mod templates;
mod token;

pub use images::ExistingTag;
pub use public::{CatalogChange, EcrPublic};
pub use repository::Repository;
use repository::{exclusion_filters, to_repository};
pub use token::{RegistryAuth, TokenRenewal};

use std::fmt;

use anyhow::{bail, Context as _};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{error::CredentialsError, ProvideCredentials};
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability, Tag,
};
use aws_sdk_ecr::Client;

pub use crate::credentials::Secret;
use crate::inputs::{Encryption, Policy, RepositorySettings};
use crate::network::proxy::explain_tunnel_failure;
use crate::network::{Network, ProxyUrl};

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// A connected ECR client, with the region it talks to.
#[derive(Debug, Clone)]
pub struct Ecr {
    client: Client,
    pub region: String,
    /// The ECR API endpoint, for messages.
    pub endpoint: String,
    /// The proxy its connections go through, for messages.
    pub proxy: Option<ProxyUrl>,
    /// What TLS trusts, for a verification failure's message.
    trust_hint: String,
    /// The loaded configuration (credentials, region, HTTP client, endpoint settings), so
    /// other AWS clients ([`kms`]) are made exactly as this one was. Shared, not copied:
    /// it is large, and every future holding an `Ecr` would carry it.
    sdk: std::sync::Arc<aws_config::SdkConfig>,
}

/// What ECR reports for the pushed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDetail {
    pub digest: String,
    pub size_bytes: Option<i64>,
    pub tags: Vec<String>,
}

/// Renders an SDK error for a CI log: AWS's code and message with what to do about the
/// common ones, or the transport failure's cause chain.
fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    if let Some(code) = err.code() {
        let hint = match code {
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch" => {
                " (the AWS credentials were rejected: check the key pair, or the role that \
                 configure-aws-credentials assumed)"
            }
            "ExpiredTokenException" | "ExpiredToken" | "RequestExpired" => {
                " (the AWS session has expired: assume the role again, or raise \
                 role-duration-seconds for long jobs)"
            }
            "AccessDeniedException" | "AccessDenied" => {
                " (the credentials lack a permission: see the minimal IAM policy in the README)"
            }
            "ThrottlingException" | "ServiceUnavailableException" => {
                " (still failing after the SDK's retries: raise AWS_MAX_ATTEMPTS or set \
                 AWS_RETRY_MODE=adaptive)"
            }
            _ => "",
        };
        return format!("{code}: {}{hint}", err.message().unwrap_or("no message"));
    }
    match err {
        SdkError::DispatchFailure(_) => {
            format!("cannot reach the ECR API: {}", crate::error_chain(err))
        }
        SdkError::TimeoutError(_) => "the ECR API did not answer in time".to_string(),
        _ => crate::error_chain(err),
    }
}

/// An SDK error as an `anyhow` error carrying [`describe`]'s text.
#[allow(clippy::needless_pass_by_value)] // by value, to serve as `.map_err(api_error)`
fn api_error<E, R>(err: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    anyhow::anyhow!("{}", describe(&err))
}

/// A document that may not exist (a policy): `not_found` is the code ECR answers then.
fn optional<E, R>(
    result: Result<Option<String>, SdkError<E, R>>,
    not_found: &str,
) -> anyhow::Result<Option<String>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    match result {
        Ok(text) => Ok(text),
        Err(err) if err.code() == Some(not_found) => Ok(None),
        Err(err) => Err(api_error(err)).context("cannot read the current policy"),
    }
}

impl Ecr {
    /// Loads the default AWS configuration (environment, web identity, profile, ECS,
    /// instance metadata) and resolves credentials now, so missing credentials fail before
    /// the build rather than at the first API call.
    /// `endpoint_override` is only for messages: aws-config reads the endpoint settings
    /// itself.
    pub async fn connect(
        region: Option<&str>,
        endpoint_override: Option<&str>,
        network: &Network,
    ) -> anyhow::Result<Self> {
        if !std::path::Path::new(RESOLV_CONF).exists() {
            bail!("{RESOLV_CONF} is missing, so AWS endpoints cannot be resolved");
        }
        let endpoint = endpoint_override.map(ToString::to_string);
        let plain_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let (http_client, proxy) = http::client(network, plain_http)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client);
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_string()));
        }
        let config = loader.load().await;
        let Some(region) = config.region().map(ToString::to_string) else {
            bail!(
                "no AWS region is set: give the `aws-region` input, or set AWS_REGION \
                 (aws-actions/configure-aws-credentials does)"
            );
        };
        let provider = config
            .credentials_provider()
            .context("no AWS credentials provider is configured")?;
        match provider.provide_credentials().await {
            Ok(_) => {}
            Err(CredentialsError::CredentialsNotLoaded(_)) => bail!(
                "no AWS credentials found (looked in the environment, web identity token, \
                 profile, ECS and instance metadata): in a workflow, run \
                 aws-actions/configure-aws-credentials before this step"
            ),
            Err(err) => {
                return Err(anyhow::Error::new(err).context("cannot load AWS credentials"));
            }
        }
        let client = Client::new(&config);
        let endpoint = match endpoint {
            Some(endpoint) => endpoint,
            None => default_endpoint(&config, &region).await,
        };
        let proxy = endpoint
            .parse()
            .ok()
            .and_then(|uri| network.proxies.route(&uri))
            .and(proxy);
        if let Some(proxy) = &proxy {
            tracing::info!("the ECR API ({endpoint}) is reached through the proxy {proxy}");
        }
        Ok(Self {
            client,
            region,
            endpoint,
            proxy,
            trust_hint: network.trust.hint(),
            sdk: std::sync::Arc::new(config),
        })
    }

    /// [`api_error`], with the proxy and the TLS roots named when the request got no
    /// answer: the first call is where a wrong proxy or an untrusted CA shows.
    fn reach_error<E, R>(&self, err: SdkError<E, R>) -> anyhow::Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + 'static,
    {
        if !matches!(err, SdkError::DispatchFailure(_)) {
            return api_error(err);
        }
        let chain = crate::error_chain(&err);
        let host = self
            .endpoint
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| {
                u.host()
                    .map(|h| format!("{h}:{}", u.port_u16().unwrap_or(443)))
            })
            .unwrap_or_else(|| self.endpoint.clone());
        if crate::network::trust::tls_failure(&err).is_some()
            || chain.contains("invalid peer certificate")
        {
            let tls = chain
                .rsplit_once("TLS handshake failed: ")
                .map_or(chain.as_str(), |(_, tail)| tail);
            return anyhow::anyhow!(
                "TLS verification of {host} failed: {tls}; {}",
                self.trust_hint
            );
        }
        if let Some(proxy) = &self.proxy {
            let (reason, _) = explain_tunnel_failure(&chain, proxy)
                .unwrap_or_else(|| (format!("cannot reach the ECR API: {chain}"), true));
            return anyhow::anyhow!(
                "cannot reach {host} through the proxy {proxy} (from {}): {reason}",
                proxy.variable
            );
        }
        api_error(err)
    }

    /// Finds the repository, creating it with the requested settings when allowed.
    /// Creation races (another run creating it first) end in the existing repository.
    pub async fn ensure_repository(
        &self,
        name: &str,
        registry_id: Option<&str>,
        settings: &RepositorySettings,
    ) -> anyhow::Result<Repository> {
        if let Some(found) = self.describe_repository(name, registry_id).await? {
            return Ok(found);
        }
        if !settings.create {
            bail!(
                "repository `{name}` does not exist and `create-repository` is false: \
                 create it first or set `create-repository: true`"
            );
        }
        let mut request = self
            .client
            .create_repository()
            .repository_name(name)
            .set_registry_id(registry_id.map(ToString::to_string))
            .image_tag_mutability(ImageTagMutability::from(settings.tag_mutability.as_str()))
            .set_image_tag_mutability_exclusion_filters(exclusion_filters(
                &settings.tag_mutability_exclusions,
            )?)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(settings.scan_on_push)
                    .build(),
            )
            .encryption_configuration(encryption_configuration(&settings.encryption)?);
        for (key, value) in &settings.tags {
            request = request.tags(Tag::builder().key(key).value(value).build()?);
        }
        match request.send().await {
            Ok(response) => {
                let repo = response
                    .repository()
                    .context("CreateRepository returned no repository")?;
                tracing::info!("created repository {name}");
                Ok(to_repository(repo, true))
            }
            Err(err) if err.code() == Some("RepositoryAlreadyExistsException") => {
                tracing::info!("repository {name} was created by another run meanwhile");
                self.describe_repository(name, registry_id)
                    .await?
                    .with_context(|| format!("repository `{name}` exists but cannot be described"))
            }
            // ECR may still create it on the first push, from a repository creation
            // template.
            Err(err) if templates::is_access_denied(&err) => {
                self.created_on_push(name, registry_id, &describe(&err))
                    .await
            }
            Err(err) => {
                Err(api_error(err)).with_context(|| format!("cannot create repository `{name}`"))
            }
        }
    }

    async fn describe_repository(
        &self,
        name: &str,
        registry_id: Option<&str>,
    ) -> anyhow::Result<Option<Repository>> {
        let result = self
            .client
            .describe_repositories()
            .repository_names(name)
            .set_registry_id(registry_id.map(ToString::to_string))
            .send()
            .await;
        match result {
            Ok(response) => Ok(response
                .repositories()
                .first()
                .map(|repo| to_repository(repo, false))),
            Err(err) if err.code() == Some("RepositoryNotFoundException") => Ok(None),
            Err(err) => {
                Err(api_error(err)).with_context(|| format!("cannot look up repository `{name}`"))
            }
        }
    }

    /// Applies the lifecycle policy, writing it only when it differs from ECR's copy.
    /// Returns whether it was written.
    pub async fn apply_lifecycle_policy(
        &self,
        name: &str,
        registry_id: Option<&str>,
        policy: &Policy,
    ) -> anyhow::Result<bool> {
        let registry_id = registry_id.map(ToString::to_string);
        let current = self
            .client
            .get_lifecycle_policy()
            .repository_name(name)
            .set_registry_id(registry_id.clone())
            .send()
            .await
            .map(|r| r.lifecycle_policy_text().map(ToString::to_string));
        if same_json(
            optional(current, "LifecyclePolicyNotFoundException")?.as_deref(),
            policy,
        ) {
            return Ok(false);
        }
        self.client
            .put_lifecycle_policy()
            .repository_name(name)
            .set_registry_id(registry_id)
            .lifecycle_policy_text(policy.to_json_string())
            .send()
            .await
            .map_err(api_error)
            .with_context(|| format!("cannot apply the lifecycle policy from {}", policy.source))?;
        Ok(true)
    }

    /// Applies the repository policy, writing it only when it differs from ECR's copy.
    pub async fn apply_repository_policy(
        &self,
        name: &str,
        registry_id: Option<&str>,
        policy: &Policy,
    ) -> anyhow::Result<bool> {
        let registry_id = registry_id.map(ToString::to_string);
        let current = self
            .client
            .get_repository_policy()
            .repository_name(name)
            .set_registry_id(registry_id.clone())
            .send()
            .await
            .map(|r| r.policy_text().map(ToString::to_string));
        if same_json(
            optional(current, "RepositoryPolicyNotFoundException")?.as_deref(),
            policy,
        ) {
            return Ok(false);
        }
        self.client
            .set_repository_policy()
            .repository_name(name)
            .set_registry_id(registry_id)
            .policy_text(policy.to_json_string())
            .send()
            .await
            .map_err(api_error)
            .with_context(|| {
                format!("cannot apply the repository policy from {}", policy.source)
            })?;
        Ok(true)
    }
}

/// The ECR API endpoint the SDK calls in `region` when none is configured, by the SDK's
/// own rules: the partition's DNS suffix (`amazonaws.com.cn` in China, for one), FIPS
/// and dual-stack as configured. Messages name it, and say from it whether the proxy
/// carries the API: a guess of `amazonaws.com` would name a host China does not have, and
/// claim the proxy where a `NO_PROXY` of `.amazonaws.com.cn` exempts the real one.
async fn default_endpoint(config: &aws_config::SdkConfig, region: &str) -> String {
    resolved_endpoint!(aws_sdk_ecr, config, region)
        .unwrap_or_else(|| format!("https://api.ecr.{region}.amazonaws.com"))
}

/// The endpoint the SDK crate `$sdk` calls in `$region` for `$config`, by its own
/// resolver (the partition's DNS suffix, FIPS, dual-stack), or `None`. A macro: each
/// service's SDK has its own `Params` and resolver types, with the same API.
macro_rules! resolved_endpoint {
    ($sdk:ident, $config:expr, $region:expr) => {{
        use $sdk::config::endpoint::{DefaultResolver, Params, ResolveEndpoint as _};
        let params = Params::builder()
            .region($region)
            .set_use_fips($config.use_fips())
            .set_use_dual_stack($config.use_dual_stack())
            .build();
        match params {
            Ok(params) => DefaultResolver::new()
                .resolve_endpoint(&params)
                .await
                .ok()
                .map(|endpoint| endpoint.url().to_owned()),
            Err(_) => None,
        }
    }};
}
pub(crate) use resolved_endpoint;

fn encryption_configuration(encryption: &Encryption) -> anyhow::Result<EncryptionConfiguration> {
    let builder = match encryption {
        Encryption::Aes256 => {
            EncryptionConfiguration::builder().encryption_type(EncryptionType::Aes256)
        }
        Encryption::Kms { key } => EncryptionConfiguration::builder()
            .encryption_type(EncryptionType::Kms)
            .set_kms_key(key.clone()),
    };
    Ok(builder.build()?)
}

/// Policies are compared as JSON values, so formatting and key order never cause a
/// needless write.
fn same_json(current: Option<&str>, wanted: &Policy) -> bool {
    current
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .is_some_and(|value| value == wanted.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API endpoint is the SDK's for the region's partition, FIPS included.
    #[tokio::test]
    async fn the_default_endpoint_follows_the_partition() {
        let config = aws_config::SdkConfig::builder().build();
        for (region, endpoint) in [
            ("eu-west-1", "https://api.ecr.eu-west-1.amazonaws.com"),
            ("cn-north-1", "https://api.ecr.cn-north-1.amazonaws.com.cn"),
            (
                "us-gov-west-1",
                "https://api.ecr.us-gov-west-1.amazonaws.com",
            ),
        ] {
            assert_eq!(default_endpoint(&config, region).await, endpoint);
        }
        let fips = aws_config::SdkConfig::builder().use_fips(true).build();
        assert_eq!(
            default_endpoint(&fips, "us-east-1").await,
            "https://api.ecr-fips.us-east-1.amazonaws.com"
        );
    }

    /// Policies that differ only in formatting or key order count as the same.
    #[test]
    fn policies_compare_as_json() {
        let policy = Policy {
            json: serde_json::json!({"rules": [{"a": 1, "b": 2}]}),
            source: "inline".into(),
        };
        assert!(same_json(
            Some(r#"{ "rules": [ {"b":2, "a":1} ] }"#),
            &policy
        ));
        assert!(!same_json(Some(r#"{"rules": []}"#), &policy));
        assert!(!same_json(None, &policy));
    }
}
