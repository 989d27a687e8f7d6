//! The plan phase: everything that can fail cheaply fails here, before anything is built
//! or changed in AWS: the inputs' build context and `.dockerfile`, the Docker engines and
//! AWS credentials (checked concurrently), the builder, the registry token, a `GET /v2/`
//! through the direct push's client (proxy, CA, endpoint), the repository, and what the
//! tags ask for ([`TagPlan`]: build, or skip because every tag holds the image already).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::builds::{self, PlatformBuilds};
use crate::ecr::kms::KmsSigner;
use crate::ecr::{Ecr, RegistryAuth};
use crate::engine::build::BuilderKind;
use crate::engine::context::{self, ContextError};
use crate::engine::{self, Engine};
use crate::env::Environment;
use crate::inputs::{Builder, InputError, Inputs, PushEngine, Signing};
use crate::network;
use crate::publish::legs::SharedBuild;
use crate::registry::{self, Mounting, RetryPolicy};
use crate::report::Report;
use crate::repository::{self, TagPlan};
use crate::runner::Runner;
use crate::secrets::{self, SecretValues};

/// What the run will do, decided and checked before anything is built.
#[derive(Debug)]
pub struct Plan {
    /// The engine at `DOCKER_HOST`.
    pub engine: Engine,
    pub ecr: Ecr,
    /// One build per platform, each on its engine.
    pub builds: PlatformBuilds,
    /// The builder at `DOCKER_HOST` (`builder: auto` decided).
    pub builder: BuilderKind,
    pub network: network::Network,
    /// The registry token, renewed when it expires.
    pub auth: RegistryAuth,
    pub secrets: SecretValues,
    pub dockerfile: PathBuf,
    /// Images BuildKit takes cache from.
    pub cache_from: Vec<String>,
    /// Images whose layers ours may share, most likely first: the repository's image
    /// under the first tag (the previous push), the cache sources, the base images; none
    /// with `no-cache` ([`crate::publish::reuse::sources`]).
    pub reuse_from: Vec<String>,
    pub retry: RetryPolicy,
    /// Where the direct push spools compressed layers (`TMPDIR`).
    pub spool_dir: PathBuf,
    /// ECR's `BLOB_MOUNTING` setting, read once per run.
    pub mounting: Mounting,
    /// Build (and, when pushing, the tags to leave alone), or skip.
    pub tags: TagPlan,
    /// `build-platforms`: this run is one leg of a build shared by matrix legs.
    pub shared: Option<SharedBuild>,
    /// Who signs the pushed manifests, checked before the build.
    pub signing: SigningPlan,
    /// `also-push-to`: the other registries, ready to push to.
    pub extra: Vec<crate::targets::Target>,
    /// `also-push-to`'s `replicated` targets: ECR's replication fills them.
    pub replicas: Vec<crate::targets::Replica>,
    /// `also-push-to` targets that could not be planned: left out, reported at the end.
    pub left_out: Vec<crate::targets::Failed>,
}

/// `sign:`, checked: the KMS key can sign (cosign's format), or a rule of the registry's
/// managed signing covers the repository.
#[derive(Debug)]
pub enum SigningPlan {
    None,
    /// Boxed: the signer holds a KMS client, far larger than the other variants.
    Kms(Box<KmsSigner>),
    Ecr(Vec<crate::ecr::signing::SigningRule>),
}

impl SigningPlan {
    /// Checks `sign:` with KMS or ECR, before anything is built: a key that is missing,
    /// of the wrong kind or denied, or a repository no signing rule covers, fails here.
    async fn check(inputs: &Inputs, env: &Environment, ecr: &Ecr) -> anyhow::Result<Self> {
        if !inputs.push {
            return Ok(Self::None);
        }
        match &inputs.supply.signing {
            Signing::None => Ok(Self::None),
            Signing::Kms { key } => {
                let signer = KmsSigner::new(ecr, key.clone(), env.kms_endpoint.as_deref()).await;
                let checked = signer.check().await?;
                tracing::info!(
                    "signing with the KMS key {} ({}, {:?})",
                    checked.arn,
                    checked.spec,
                    checked.algorithm
                );
                Ok(Self::Kms(Box::new(signer)))
            }
            Signing::Ecr => Ok(Self::Ecr(ecr.signing_rules_for(&inputs.repository).await?)),
        }
    }

    /// The KMS signer, with `sign: kms`.
    pub fn kms(&self) -> Option<&KmsSigner> {
        match self {
            Self::Kms(signer) => Some(signer),
            _ => None,
        }
    }
}

/// Decides and checks what the run will do, and starts its report.
pub async fn plan(
    inputs: &Inputs,
    env: &Environment,
    runner: &Runner,
) -> anyhow::Result<(Plan, Report)> {
    let shared = SharedBuild::of(inputs, &env.github)?;
    let dockerfile = inputs.build.dockerfile_path();
    context::prepare(&inputs.build.context, &dockerfile).map_err(|e| context_input_error(&e))?;
    // Read already by `prepare`, which would have said why it cannot be.
    let base_images = std::fs::read_to_string(&dockerfile)
        .map(|text| engine::buildkit::base_images(&text))
        .unwrap_or_default();
    let secrets = secrets::read(&inputs.build.secrets, env, runner)?;
    let network = connect_settings(inputs, env, runner)?;
    for warning in &inputs.warnings {
        runner.warning(warning);
    }

    let (engine, ecr) = tokio::try_join!(
        async {
            Engine::connect(&env.docker)
                .await
                .context("the Docker engine is not usable")
        },
        async {
            Ecr::connect(
                inputs.aws_region.as_deref(),
                env.ecr_endpoint.as_deref(),
                &network,
            )
            .await
            .context("AWS is not usable")
        },
    )?;
    tracing::info!(
        "Docker Engine {} (API {}, {}), AWS region {}",
        engine.version,
        engine.api_version,
        engine.store,
        ecr.region
    );

    // Every platform host is reached before anything is built or changed in AWS.
    let builds = PlatformBuilds::connect(inputs, &env.docker, &engine).await?;
    // Before any change in AWS: a builder that cannot do this build is an input error.
    let builder = choose_builder(&engine, inputs).await?;
    builds.check_engines(builder, runner).await?;

    let registry_id = inputs.registry_id.as_deref();
    let mut auth = ecr.authorization(registry_id).await?;
    runner.add_mask(auth.password.expose());
    runner.add_mask(auth.token.expose());
    let masks = runner.clone();
    auth.renew = Some(ecr.token_renewal(registry_id, move |secret| masks.add_mask(secret)));
    crate::targets::check_not_primary(inputs, &auth.registry, &ecr.region)?;
    let mut report = Report::new(&auth.registry, inputs);
    if inputs.push && inputs.push_engine != PushEngine::Daemon {
        probe_registry(&auth, inputs, env, &network).await?;
    }

    // Before the repository is touched: a key that cannot sign, or a repository no
    // managed-signing rule covers, is the user's to fix first.
    let signing = Box::pin(SigningPlan::check(inputs, env, &ecr)).await?;
    if let SigningPlan::Kms(signer) = &signing {
        report.signing_key = Some(signer.key.cosign_ref());
    }

    // A build-only run leaves the repository alone.
    let tags = if inputs.push {
        plan_tags(&ecr, inputs, engine.store, runner, &mut report).await?
    } else {
        TagPlan::Build {
            present: Vec::new(),
        }
    };
    let targets =
        crate::targets::plan(inputs, env, &ecr, &auth.registry, engine.store, runner).await;
    let cache_from = match builder {
        BuilderKind::Buildkit => cache_sources(&ecr, inputs, &report).await,
        BuilderKind::Classic => Vec::new(),
    };
    let reuse_from = crate::publish::reuse::sources(
        &report.references[0],
        &cache_from,
        &base_images,
        inputs.build.no_cache,
    );
    let mounting = if inputs.push {
        ecr.blob_mounting(registry_id).await
    } else {
        Mounting::default()
    };

    let plan = Plan {
        engine,
        ecr,
        builds,
        builder,
        network,
        auth,
        secrets,
        dockerfile,
        cache_from,
        reuse_from,
        retry: retry_policy(env),
        spool_dir: env.spool_dir.clone(),
        mounting,
        tags,
        shared,
        signing,
        extra: targets.extra,
        replicas: targets.replicas,
        left_out: targets.left_out,
    };
    Ok((plan, report))
}

/// Ensures the repository, and decides from the tags it has whether to build. With
/// several platforms, `skip` applies only where the existing image is an index of
/// exactly these platforms: otherwise the run builds (and fails early when a tag it
/// would have to move cannot move).
async fn plan_tags(
    ecr: &Ecr,
    inputs: &Inputs,
    store: engine::ImageStore,
    runner: &Runner,
    report: &mut Report,
) -> anyhow::Result<TagPlan> {
    let state = ecr
        .ensure_repository(
            &inputs.repository,
            inputs.registry_id.as_deref(),
            &inputs.repository_settings,
        )
        .await?;
    repository::warn_about_settings_not_applied(&state, inputs, runner);
    let mut tags = repository::plan_tags(ecr, inputs, &state, store).await?;
    if let (true, TagPlan::Skip { digest, .. }) = (inputs.platforms.len() > 1, &tags) {
        if let Some(entries) = builds::existing_index(ecr, inputs, digest).await? {
            report.platforms = builds::skipped_rows(&inputs.platforms, &entries);
        } else {
            if let Some(tag) = inputs.tags.iter().find(|t| state.tag_is_immutable(t)) {
                anyhow::bail!(
                    "every tag already exists at {digest} in `{}`, which is not an index \
                     of exactly {}, and tag `{tag}` cannot move there ({}): push new tags",
                    inputs.repository,
                    inputs.build_platforms_text(),
                    state.mutability_of(tag)
                );
            }
            tracing::info!(
                "every tag exists at {digest}, which is not an index of exactly these \
                 platforms: building"
            );
            tags = TagPlan::Build {
                present: Vec::new(),
            };
        }
    }
    report.repository_state = Some(state);
    Ok(tags)
}

/// The proxy, trust roots and registry endpoint, validated, with the proxy passwords
/// masked before anything can log them.
fn connect_settings(
    inputs: &Inputs,
    env: &Environment,
    runner: &Runner,
) -> anyhow::Result<network::Network> {
    let network = network::Network::from_env(&env.network, inputs.registry_endpoint.clone())?;
    for secret in network.secrets() {
        runner.add_mask(&secret);
    }
    if let Some(proxies) = network.proxies.describe() {
        tracing::info!("proxy: {proxies}");
    }
    if network.registry_endpoint.is_some() && inputs.push_engine == PushEngine::Daemon {
        runner.warning(
            "`registry-endpoint` applies to the direct push only: the Docker daemon's pusher \
             connects to the registry host through the daemon's own network settings",
        );
    }
    Ok(network)
}

/// The retry policy: the default, without delays in tests of the retry paths.
fn retry_policy(env: &Environment) -> RetryPolicy {
    if env.no_retry_delay {
        RetryPolicy::DEFAULT.without_delays()
    } else {
        RetryPolicy::DEFAULT
    }
}

/// `GET /v2/` through the direct push's client before anything is built, so a proxy
/// that refuses, asks for credentials or cannot be found, a CA that is not trusted or an
/// unusable `registry-endpoint` fail now, in one sentence.
async fn probe_registry(
    auth: &RegistryAuth,
    inputs: &Inputs,
    env: &Environment,
    network: &network::Network,
) -> anyhow::Result<()> {
    let registry = registry::Registry::connect(
        &auth.login(),
        &inputs.repository,
        retry_policy(env),
        network,
    )?;
    registry
        .with_retry("reaching the registry", || registry.probe())
        .await
        .map_err(|(failure, attempts)| {
            let tries = if attempts > 1 {
                format!(" (after {attempts} attempts)")
            } else {
                String::new()
            };
            anyhow::anyhow!(
                "cannot reach the registry {}{tries}: {}",
                registry.host,
                failure.describe()
            )
        })
}

/// Decides `builder: auto`, and logs the choice and why.
///
/// BuildKit fetches the context and the Dockerfile over its session, from wherever they
/// are (the Dockerfile outside the context too), on any `DOCKER_HOST` (TLS too): `auto`
/// needs only a daemon that builds with BuildKit.
async fn choose_builder(engine: &Engine, inputs: &Inputs) -> anyhow::Result<BuilderKind> {
    let (kind, why) = match inputs.build.builder {
        Builder::Classic => (BuilderKind::Classic, "asked for".to_string()),
        Builder::Buildkit => (BuilderKind::Buildkit, "asked for".to_string()),
        Builder::Auto if engine::buildkit::supports_buildkit(&engine.daemon).await => (
            BuilderKind::Buildkit,
            "auto: the daemon supports it".to_string(),
        ),
        Builder::Auto => (
            BuilderKind::Classic,
            "auto: the daemon does not support BuildKit".to_string(),
        ),
    };
    if kind == BuilderKind::Classic && !inputs.build.secrets.is_empty() {
        anyhow::bail!(InputError::invalid(
            "secrets",
            &inputs
                .build
                .secrets
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(","),
            format!("build secrets need BuildKit, and this run uses the classic builder ({why})"),
        ));
    }
    let name = match kind {
        BuilderKind::Buildkit => "BuildKit",
        BuilderKind::Classic => "the classic builder",
    };
    tracing::info!("building with {name} ({why})");
    Ok(kind)
}

/// `cache-from` as given, else the repository's first tag when ECR has it: the image
/// the previous run pushed, with inline cache metadata.
async fn cache_sources(ecr: &Ecr, inputs: &Inputs, report: &Report) -> Vec<String> {
    if !inputs.build.cache_from.is_empty() {
        return inputs.build.cache_from.clone();
    }
    let first = inputs.tags[..1].to_vec();
    match ecr
        .existing_tags(&inputs.repository, inputs.registry_id.as_deref(), &first)
        .await
    {
        Ok(found) if !found.is_empty() => {
            let reference = report.references[0].clone();
            tracing::info!("reusing build cache from {reference}");
            vec![reference]
        }
        Ok(_) => Vec::new(),
        Err(err) => {
            tracing::debug!("no cache source: {err:#}");
            Vec::new()
        }
    }
}

/// A context problem is a bad `context` or `dockerfile` input; say which.
fn context_input_error(err: &ContextError) -> anyhow::Error {
    let input = err.input_name();
    let value = err
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    anyhow::Error::new(InputError::invalid(input, &value, err.to_string()))
}
