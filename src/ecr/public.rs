//! ECR Public (`public.ecr.aws`): its own API (aws-sdk-ecrpublic), always in us-east-1,
//! the only region that serves it (`GetAuthorizationToken` exists nowhere else). Made
//! from an already loaded SDK configuration ([`Ecr::public`], or
//! [`EcrPublic::from_sdk`] for another target's, e.g. assumed-role, credentials), so
//! credentials, proxy and trust are the same as the private ECR client's.
//!
//! What differs from private ECR, each with its source in `/work/shared/ecr-reference.md`:
//! the registry takes the token as `Bearer` (a 400 `DENIED` when it is invalid or
//! expired: [`crate::registry::rules::public_token_refused`]); images are at
//! `public.ecr.aws/<alias>/<repository>`, the alias from `DescribeRegistries`; a
//! repository carries catalog data for the ECR Public Gallery, kept in step on every run
//! as policies are; there is no cross-repository mount.

use std::fmt;
use std::sync::Arc;

use anyhow::Context as _;
use aws_config::Region;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecrpublic::types::{ImageIdentifier, RepositoryCatalogDataInput};
use aws_sdk_ecrpublic::Client;

use super::token::decode_token;
use super::{describe, images, Ecr, ExistingTag, ImageDetail, RegistryAuth};
use crate::credentials::Secret;
use crate::inputs::Catalog;
use crate::registry;
pub use crate::registry::rules::PUBLIC_REGISTRY;

/// The only region ECR Public's API is in.
pub const REGION: &str = "us-east-1";

/// ECR Public's API endpoint in [`REGION`], for messages when no override is set.
const DEFAULT_ENDPOINT: &str = "https://api.ecr-public.us-east-1.amazonaws.com";

/// ECR Public's longest repository name (the API model's `RepositoryName`: 2 to 205),
/// shorter than private ECR's 256.
pub const MAX_REPOSITORY_NAME: usize = 205;

/// What [`EcrPublic::ensure_repository`] did, for the log and the job summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogChange {
    /// The repository was created, with the catalog data.
    Created,
    /// It existed, and these catalog fields (API names) were put.
    Updated(Vec<&'static str>),
    /// It existed with the catalog data asked for.
    Unchanged,
}

impl fmt::Display for CatalogChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created => f.write_str("created with its catalog data"),
            Self::Updated(fields) => write!(f, "catalog data updated: {}", fields.join(", ")),
            Self::Unchanged => f.write_str("catalog data unchanged"),
        }
    }
}

/// A connected ECR Public client.
#[derive(Debug, Clone)]
pub struct EcrPublic {
    client: Client,
    /// The API endpoint, for messages.
    pub endpoint: String,
}

impl Ecr {
    /// The ECR Public client on this client's configuration (credentials, proxy, trust),
    /// in us-east-1 whatever this one's region. `endpoint`: an override
    /// ([`crate::env::AWS_ENDPOINT_URL_ECR_PUBLIC`]); `None`, the SDK's own.
    pub fn public(&self, endpoint: Option<&str>) -> EcrPublic {
        EcrPublic::from_sdk(&self.sdk, endpoint)
    }

    /// The loaded AWS configuration, for other clients made the same way.
    pub fn sdk(&self) -> &aws_config::SdkConfig {
        &self.sdk
    }
}

impl EcrPublic {
    /// The client on `sdk`'s credentials and HTTP client, in [`REGION`].
    pub fn from_sdk(sdk: &aws_config::SdkConfig, endpoint: Option<&str>) -> Self {
        let mut config = aws_sdk_ecrpublic::config::Builder::from(sdk).region(Region::new(REGION));
        if let Some(url) = endpoint {
            config = config.endpoint_url(url);
        }
        let shown = endpoint
            .or(sdk.endpoint_url())
            .unwrap_or(DEFAULT_ENDPOINT)
            .to_string();
        Self {
            client: Client::from_conf(config.build()),
            endpoint: shown,
        }
    }

    /// ECR Public's registry token for `public.ecr.aws`, sent as `Bearer` by the registry
    /// client (the Docker daemon logs in with the user and password it decodes to). The
    /// caller masks it, and sets `renew` from [`EcrPublic::token_renewal`] with its mask,
    /// as for private ECR.
    pub async fn authorization(&self) -> anyhow::Result<RegistryAuth> {
        let response = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|err| {
                refused(
                    err,
                    "`ecr-public:GetAuthorizationToken` and `sts:GetServiceBearerToken` (both: \
                     ECR Public's token is an STS bearer token)",
                )
            })
            .with_context(|| {
                format!(
                    "ECR Public's GetAuthorizationToken failed at {}",
                    self.endpoint
                )
            })?;
        let data = response
            .authorization_data()
            .context("ECR Public's GetAuthorizationToken returned no authorization data")?;
        let token = data
            .authorization_token()
            .filter(|t| !t.is_empty())
            .context("ECR Public's GetAuthorizationToken returned no token")?;
        // The daemon's login wants user and password; the registry client sends the
        // token itself, so a token that does not decode still serves it.
        let (username, password) =
            decode_token(token).unwrap_or_else(|| ("AWS".to_string(), token.to_string()));
        Ok(RegistryAuth {
            registry: PUBLIC_REGISTRY.to_string(),
            username,
            password: Secret::new(password),
            token: Secret::new(token.to_string()),
            expires_at: data.expires_at().and_then(system_time),
            renew: None,
            scheme: registry::Scheme::Bearer,
        })
    }

    /// How the registry client renews the token when `public.ecr.aws` refuses it:
    /// `GetAuthorizationToken` again, each new secret given to `mask` first.
    pub fn token_renewal(
        &self,
        mask: impl Fn(&str) + Send + Sync + 'static,
    ) -> Arc<dyn registry::Renew> {
        Arc::new(PublicTokenRenewal {
            public: self.clone(),
            mask: Box::new(mask),
        })
    }

    /// The registry's aliases (images are `public.ecr.aws/<alias>/<repository>`), from
    /// `DescribeRegistries`: the primary first, then the default, then the rest; a
    /// repository is reached under each.
    pub async fn aliases(&self) -> anyhow::Result<Vec<String>> {
        let response = self
            .client
            .describe_registries()
            .send()
            .await
            .map_err(|err| refused(err, "`ecr-public:DescribeRegistries`"))
            .with_context(|| {
                format!(
                    "cannot read the ECR Public registry's alias at {}",
                    self.endpoint
                )
            })?;
        let registry = response.registries().first().context(
            "the account has no ECR Public registry: create a repository in the ECR Public \
             console (us-east-1) once, which creates the registry and its alias",
        )?;
        let mut aliases = registry.aliases().to_vec();
        if aliases.is_empty() {
            anyhow::bail!(
                "the ECR Public registry {} has no alias: create one in the ECR Public \
                 console (us-east-1, Settings)",
                registry.registry_uri()
            );
        }
        // Stable: the primary, then the default, then the others as listed.
        aliases.sort_by_key(|a| (!a.primary_registry_alias(), !a.default_registry_alias()));
        Ok(aliases.into_iter().map(|a| a.name().to_string()).collect())
    }

    /// Finds the repository, creating it with `catalog`; an existing one gets the
    /// catalog fields that differ put (the texts given, the badges when known; what was
    /// not given is sent back as it was). Kept in step on every run, as policies are.
    pub async fn ensure_repository(
        &self,
        name: &str,
        catalog: &Catalog,
    ) -> anyhow::Result<CatalogChange> {
        self.ensure_repository_with(name, catalog, true).await
    }

    /// [`EcrPublic::ensure_repository`], creating a missing repository only when
    /// `create` (the `create-repository` input) allows it.
    pub async fn ensure_repository_with(
        &self,
        name: &str,
        catalog: &Catalog,
        create: bool,
    ) -> anyhow::Result<CatalogChange> {
        if name.len() > MAX_REPOSITORY_NAME {
            anyhow::bail!(
                "repository `{name}` has {} characters, and ECR Public's names have at most \
                 {MAX_REPOSITORY_NAME}: choose a shorter `repository`",
                name.len()
            );
        }
        if !self.repository_exists(name).await? {
            if !create {
                anyhow::bail!(
                    "ECR Public repository `{name}` does not exist and `create-repository` is \
                     false: create it first or set `create-repository: true`"
                );
            }
            let created = self
                .client
                .create_repository()
                .repository_name(name)
                .catalog_data(catalog_input(catalog))
                .send()
                .await;
            match created {
                Ok(_) => {
                    tracing::info!("created ECR Public repository {name}");
                    return Ok(CatalogChange::Created);
                }
                Err(err) if err.code() == Some("RepositoryAlreadyExistsException") => {
                    tracing::info!("ECR Public repository {name} was created by another run");
                }
                Err(err) => {
                    return Err(refused(err, "`ecr-public:CreateRepository`"))
                        .with_context(|| format!("cannot create ECR Public repository `{name}`"))
                }
            }
        }
        self.keep_catalog(name, catalog).await
    }

    /// Whether `name` exists (`DescribeRepositories`).
    async fn repository_exists(&self, name: &str) -> anyhow::Result<bool> {
        match self
            .client
            .describe_repositories()
            .repository_names(name)
            .send()
            .await
        {
            Ok(response) => Ok(!response.repositories().is_empty()),
            Err(err) if err.code() == Some("RepositoryNotFoundException") => Ok(false),
            Err(err) => Err(refused(err, "`ecr-public:DescribeRepositories`"))
                .with_context(|| format!("cannot look up ECR Public repository `{name}`")),
        }
    }

    /// Reads the repository's catalog data and puts `catalog` over it when they differ.
    async fn keep_catalog(&self, name: &str, catalog: &Catalog) -> anyhow::Result<CatalogChange> {
        let response = self
            .client
            .get_repository_catalog_data()
            .repository_name(name)
            .send()
            .await
            .map_err(|err| refused(err, "`ecr-public:GetRepositoryCatalogData`"))
            .with_context(|| format!("cannot read the catalog data of `{name}`"))?;
        let current = response
            .catalog_data()
            .map(|data| Catalog {
                description: data.description().map(ToString::to_string),
                about: data.about_text().map(ToString::to_string),
                usage: data.usage_text().map(ToString::to_string),
                architectures: data.architectures().to_vec(),
                operating_systems: data.operating_systems().to_vec(),
            })
            .unwrap_or_default();
        let fields = catalog.differences(&current);
        if fields.is_empty() {
            return Ok(CatalogChange::Unchanged);
        }
        self.client
            .put_repository_catalog_data()
            .repository_name(name)
            .catalog_data(catalog_input(&catalog.merged_over(&current)))
            .send()
            .await
            .map_err(|err| refused(err, "`ecr-public:PutRepositoryCatalogData`"))
            .with_context(|| {
                format!(
                    "cannot update the catalog data ({}) of `{name}`",
                    fields.join(", ")
                )
            })?;
        tracing::info!(
            "updated the catalog data of ECR Public repository {name}: {}",
            fields.join(", ")
        );
        Ok(CatalogChange::Updated(fields))
    }

    /// Which of `tags` exist in the repository, and where they point: as
    /// [`Ecr::existing_tags`], one `DescribeImages` per tag.
    pub async fn existing_tags(
        &self,
        name: &str,
        tags: &[String],
    ) -> anyhow::Result<Vec<ExistingTag>> {
        let lookups = tags.iter().map(|tag| async move {
            let result = self
                .client
                .describe_images()
                .repository_name(name)
                .image_ids(ImageIdentifier::builder().image_tag(tag).build())
                .send()
                .await;
            match result {
                Ok(response) => Ok(response
                    .image_details()
                    .first()
                    .and_then(|d| d.image_digest())
                    .map(|digest| ExistingTag {
                        tag: tag.clone(),
                        digest: digest.to_string(),
                    })),
                Err(err) if err.code() == Some("ImageNotFoundException") => Ok(None),
                Err(err) => Err(refused(err, "`ecr-public:DescribeImages`")).with_context(|| {
                    format!("cannot look up tag `{tag}` in ECR Public repository `{name}`")
                }),
            }
        });
        let found = futures_util::future::try_join_all(lookups).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Confirms that ECR Public holds `digest`, with the contract of
    /// [`Ecr::confirm_digest`]: the image and the tags it shows elsewhere (or, past the
    /// visibility wait, not at all), its eventual consistency waited for.
    pub async fn confirm_digest(
        &self,
        name: &str,
        tags: &[String],
        digest: &str,
    ) -> anyhow::Result<(ImageDetail, Vec<String>)> {
        images::confirm(
            name,
            tags,
            digest,
            || self.describe_digest(name, digest),
            |missing| async move { self.existing_tags(name, &missing).await },
        )
        .await
    }

    /// `DescribeImages` of one digest; `None` when ECR Public does not list it.
    async fn describe_digest(
        &self,
        name: &str,
        digest: &str,
    ) -> anyhow::Result<Option<ImageDetail>> {
        let result = self
            .client
            .describe_images()
            .repository_name(name)
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(err) if err.code() == Some("ImageNotFoundException") => return Ok(None),
            Err(err) => {
                return Err(refused(err, "`ecr-public:DescribeImages`")).with_context(|| {
                    format!("cannot look up {digest} in ECR Public repository `{name}`")
                })
            }
        };
        let Some(found) = response.image_details().first() else {
            return Ok(None);
        };
        let detail = ImageDetail {
            digest: found.image_digest().unwrap_or_default().to_string(),
            size_bytes: found.image_size_in_bytes(),
            tags: found.image_tags().to_vec(),
        };
        if detail.digest != digest {
            anyhow::bail!(
                "ECR Public answered {} when asked for {digest}",
                detail.digest
            );
        }
        Ok(Some(detail))
    }
}

/// `<alias>/<repository>`: the repository path on `public.ecr.aws`, as the
/// registry client and image references name it.
pub fn repository_path(alias: &str, name: &str) -> String {
    format!("{alias}/{name}")
}

/// The catalog data to send: only what is given (an empty list would clear the badges).
fn catalog_input(catalog: &Catalog) -> RepositoryCatalogDataInput {
    let list = |values: &Vec<String>| Some(values.clone()).filter(|v| !v.is_empty());
    RepositoryCatalogDataInput::builder()
        .set_description(catalog.description.clone())
        .set_about_text(catalog.about.clone())
        .set_usage_text(catalog.usage.clone())
        .set_architectures(list(&catalog.architectures))
        .set_operating_systems(list(&catalog.operating_systems))
        .build()
}

/// [`describe`]'s text, naming the IAM `actions` the call needs when AWS refused it.
#[allow(clippy::needless_pass_by_value)] // by value, to serve in `.map_err`
fn refused<E, R>(err: SdkError<E, R>, actions: &str) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    let text = describe(&err);
    if matches!(err.code(), Some("AccessDeniedException" | "AccessDenied")) {
        anyhow::anyhow!("{text}; this call needs {actions} in the role's policy")
    } else {
        anyhow::anyhow!("{text}")
    }
}

fn system_time(at: &aws_smithy_types::DateTime) -> Option<std::time::SystemTime> {
    std::time::SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(
        u64::try_from(at.secs()).ok()?,
    ))
}

/// Gets a new ECR Public token for the registry client, masking every new secret first.
struct PublicTokenRenewal {
    public: EcrPublic,
    mask: Box<dyn Fn(&str) + Send + Sync>,
}

impl fmt::Debug for PublicTokenRenewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicTokenRenewal")
            .field("endpoint", &self.public.endpoint)
            .finish_non_exhaustive()
    }
}

impl registry::Renew for PublicTokenRenewal {
    fn renew(&self) -> futures_util::future::BoxFuture<'_, Result<registry::Credentials, String>> {
        Box::pin(async move {
            let auth = self
                .public
                .authorization()
                .await
                .map_err(|e| format!("{e:#}"))?;
            (self.mask)(auth.token.expose());
            (self.mask)(auth.password.expose());
            Ok(auth.login().credentials)
        })
    }
}

#[cfg(test)]
mod tests;
