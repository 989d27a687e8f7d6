//! ecr-build-push: build a Docker image and push it to Amazon ECR in one step.
//!
//! # Layout
//!
//! Data flows one way: the environment is captured once, inputs are parsed once into
//! types, and each module takes what it needs as arguments.
//!
//! - `main.rs`: logging, inputs, [`run`], and a failure turned into one `::error::` line.
//! - [`env`]: every environment variable the action reads, captured in one place.
//! - [`inputs`]: `INPUT_*` variables or `--flags` to typed, validated [`inputs::Inputs`];
//!   `action.yml` (embedded) is the source of names and defaults.
//! - [`network`]: how the action's own connections go out: proxy (`HTTPS_PROXY`,
//!   `NO_PROXY`), trust roots (`SSL_CERT_FILE`, `AWS_CA_BUNDLE`), `registry-endpoint`;
//!   one [`network::Network`] for both HTTP clients.
//! - [`ecr`]: the AWS side: credentials, registry token (and its renewal), the
//!   `BLOB_MOUNTING` setting, repository settings and policies, digest confirmation.
//! - [`registry`]: an OCI distribution client for one repository, with ECR's rules in one
//!   place ([`registry::rules`]): auth and token renewal, blobs, manifests.
//! - [`credentials`]: the `Secret` type that `network`, `ecr` and `registry` share.
//! - [`engine`]: the Docker side through the Engine API: the build context honouring
//!   `.dockerignore` (lent to BuildKit over its session's `FileSync`, or a streamed tar for
//!   the classic builder), the build, the push.
//! - [`runner`]: the GitHub runner protocol: outputs file, summary, masks, groups,
//!   annotations.
//! - [`repository`]: what a run does to the repository besides pushing: policies,
//!   warnings about settings an existing repository keeps, tags that already exist.
//! - [`route`]: which pusher sends the image (the daemon's, the direct push, or on the
//!   containerd store the daemon's for the blobs and the direct push for the tags).
//! - [`report`]: the outputs and job summary of a finished run.
//! - [`build_set`]: two or more `platforms`: one BuildKit build per platform, on its
//!   engine, side by side, pushed as one image index.
//! - [`metadata`]: tag templates and default OCI labels from the GitHub context (built
//!   once in `main`, with the event payload), applied while the inputs are parsed.
//! - [`gate`]: the scan gate on ECR's findings ([`ecr::scan`] waits for them).
//! - [`secrets`]: build secrets read just before the build, masked, wiped when dropped.
//!
//! # Order of work
//!
//! Everything that can fail cheaply fails before the build: inputs, the build context and
//! `.dockerignore`, the Docker engine and AWS credentials (checked concurrently), the
//! registry token, a `GET /v2/` through the direct push's client (proxy, CA, endpoint),
//! and the repository. Policies are applied while the image builds. The
//! push starts only after everything has succeeded, and outputs are written only after
//! ECR has confirmed the digest of every tag.

pub mod build_set;
pub mod credentials;
pub mod ecr;
pub mod engine;
pub mod env;
pub mod gate;
pub mod inputs;
pub mod metadata;
pub mod network;
pub mod publish;
pub mod registry;
pub mod report;
pub mod repository;
pub mod runner;
pub mod secrets;

use std::time::Instant;

use anyhow::Context as _;

use crate::ecr::{Ecr, RegistryAuth};
use crate::engine::build::{BuildRequest, BuilderKind};
use crate::engine::context::{self, ContextError};
use crate::engine::Engine;
use crate::env::Environment;
use crate::inputs::{Builder, InputError, Inputs, PushEngine};
use crate::publish::reuse;
use crate::publish::route::{PushRun, Route};
use crate::registry::RetryPolicy;
use crate::report::{Outcome, Report};
use crate::repository::TagPlan;
use crate::runner::Runner;

/// Renders an error with its whole cause chain on one line: `a: b: c`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Builds and pushes as `inputs` say, and returns what happened. Writes nothing to the
/// outputs file: the caller does, after success.
pub async fn run(inputs: &Inputs, env: &Environment, runner: &Runner) -> anyhow::Result<Report> {
    let dockerfile = inputs.build.dockerfile_path();
    let prepared = context::prepare(&inputs.build.context, &dockerfile)
        .map_err(|e| context_input_error(&e))?;
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
    let set = build_set::BuildSet::connect(inputs, &env.docker, &engine).await?;

    // Before any change in AWS: a builder that cannot do this build is an input error.
    let builder = choose_builder(&engine, inputs).await?;
    if let Some(set) = &set {
        set.check_engines(builder, runner).await?;
    }

    let registry_id = inputs.registry_id.as_deref();
    let mut auth = ecr.authorization(registry_id).await?;
    runner.add_mask(auth.password.expose());
    runner.add_mask(auth.token.expose());
    let masks = runner.clone();
    auth.renew = Some(ecr.token_renewal(registry_id, move |secret| masks.add_mask(secret)));
    let mut report = Report::new(&auth.registry, inputs);
    if inputs.push && inputs.push_engine != PushEngine::Daemon {
        probe_registry(&auth, inputs, env, &network).await?;
    }

    // Requested tags that exist where they are immutable (`on-tag-exists: overwrite`):
    // the push leaves those at this build's digest alone and refuses the others.
    let mut present = Vec::new();
    // A build-only run leaves the repository alone.
    if inputs.push {
        let state = ecr
            .ensure_repository(&inputs.repository, registry_id, &inputs.repository_settings)
            .await?;
        repository::warn_about_settings_not_applied(&state, inputs, runner);
        let mut plan = repository::plan_tags(&ecr, inputs, &state, engine.store).await?;
        if let (Some(set), TagPlan::Skip { digest, .. }) = (&set, &plan) {
            if let Some(entries) = set.existing_index(&ecr, inputs, digest).await? {
                report.platforms = build_set::skipped_rows(&inputs.platforms, &entries);
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
                plan = TagPlan::Build {
                    present: Vec::new(),
                };
            }
        }
        report.repository_state = Some(state);
        match plan {
            TagPlan::Skip { digest, image_id } => {
                tracing::info!("every tag already exists at {digest}: nothing to build or push");
                report.policies =
                    repository::apply_policies(&ecr, inputs, report.repository_state.as_ref())
                        .await?;
                report.outcome = Outcome::Skipped;
                report.digest = Some(digest);
                report.image_id = image_id.unwrap_or_default();
                // The existing image passes the same gate as a new one: a re-run of a job
                // whose gate failed must not ship the image it rejected.
                if inputs.scan.wait {
                    Box::pin(gate::wait_and_apply(&ecr, inputs, runner, &mut report)).await?;
                }
                return Ok(report);
            }
            TagPlan::Build { present: found } => present = found,
        }
    }

    let state = report.repository_state.clone();
    let cache_from = match builder {
        BuilderKind::Buildkit => cache_sources(&ecr, inputs, &report).await,
        BuilderKind::Classic => Vec::new(),
    };
    if let Some(set) = &set {
        let no_cache = inputs.build.no_cache;
        let reuse_from = reuse::sources(&report.references[0], &cache_from, &base_images, no_cache);
        let set_run = build_set::SetRun {
            inputs,
            ecr: &ecr,
            auth: &auth,
            runner,
            retry: retry_policy(env),
            dockerfile,
            secrets: &secrets.0,
            cache_from: &cache_from,
            reuse_from,
            network: &network,
            spool_dir: env.spool_dir.clone(),
            mounting: ecr.blob_mounting(registry_id).await,
            present: &present,
        };
        let (done, policies) = tokio::join!(
            set.run(&set_run, &mut report),
            repository::apply_policies(&ecr, inputs, state.as_ref()),
        );
        done?;
        report.policies = policies?;
        if inputs.scan.wait {
            Box::pin(gate::wait_and_apply(&ecr, inputs, runner, &mut report)).await?;
        }
        return Ok(report);
    }

    let build_started = Instant::now();
    let request = BuildRequest {
        settings: &inputs.build,
        dockerfile,
        references: &report.references,
        registry_auth: Some(&auth),
        builder,
        secrets: &secrets.0,
        cache_from: &cache_from,
        compression: inputs.compression,
        output: engine::build::BuildOutput::Group,
    };
    let (built, policies) = tokio::join!(
        engine::build::build(&engine, prepared, &request, runner),
        repository::apply_policies(&ecr, inputs, state.as_ref()),
    );
    let built = built?;
    report.policies = policies?;
    report.build_time = Some(build_started.elapsed());
    report.image_id = built.image_id;
    report.local_size_bytes = Some(built.size_bytes);
    report.builder = Some(builder);
    report.cache = built.cache;
    report.platform = built.platform;
    annotate_build_warnings(runner, &request.dockerfile, &built.warnings);
    tracing::info!(
        "built {} in {:.1}s",
        report.image_id,
        build_started.elapsed().as_secs_f64()
    );

    if inputs.push {
        let no_cache = inputs.build.no_cache;
        let reuse_from = reuse::sources(&report.references[0], &cache_from, &base_images, no_cache);
        let push_run = PushRun {
            engine: &engine,
            auth: &auth,
            reuse_from,
            network: &network,
            retry: retry_policy(env),
            spool_dir: env.spool_dir.clone(),
            mounting: ecr.blob_mounting(registry_id).await,
            present: &present,
        };
        Box::pin(push_and_confirm(
            &ecr,
            &push_run,
            inputs,
            runner,
            &mut report,
        ))
        .await?;
        if inputs.scan.wait {
            Box::pin(gate::wait_and_apply(&ecr, inputs, runner, &mut report)).await?;
        }
    } else if inputs.scan.wait {
        runner.warning("`scan: wait` has nothing to wait for: `push` is false");
    }
    Ok(report)
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

/// Pushes along the route [`Route::choose`] picks, then has ECR confirm the digest.
async fn push_and_confirm(
    ecr: &Ecr,
    run: &PushRun<'_>,
    inputs: &Inputs,
    runner: &Runner,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let repository_ref = report.repository_uri();
    let route = Route::choose(inputs, run.engine, run.network);
    let publish::route::Pushed {
        digest,
        engine_used,
        blobs,
    } = publish::route::push(
        route,
        run,
        inputs,
        &report.image_id,
        &repository_ref,
        runner,
    )
    .await?;
    confirm(ecr, inputs, runner, report, &digest).await?;
    let push_time = started.elapsed();
    tracing::info!(
        "pushed {} tag(s) at {digest} in {:.1}s ({engine_used})",
        inputs.tags.len(),
        push_time.as_secs_f64()
    );
    report.outcome = Outcome::Pushed;
    report.push_engine = Some(engine_used);
    report.blobs = blobs;
    report.push_time = Some(push_time);
    Ok(())
}

/// Has ECR confirm the pushed image (or index) `digest` under every tag, and records it
/// in `report`. A tag ECR shows at another image by now (another run pushed it after
/// this one) is left out of the outputs, with a warning: the outputs name only what ECR
/// confirmed.
pub(crate) async fn confirm(
    ecr: &Ecr,
    inputs: &Inputs,
    runner: &Runner,
    report: &mut Report,
    digest: &str,
) -> anyhow::Result<()> {
    let (detail, moved) = ecr
        .confirm_digest(
            &inputs.repository,
            inputs.registry_id.as_deref(),
            &inputs.tags,
            digest,
        )
        .await
        .context("the pushed image could not be confirmed with ECR")?;
    report.digest = Some(digest.to_string());
    report.pushed_size_bytes = detail.size_bytes;
    if let Some(warning) = report.leave_out_moved_tags(&moved) {
        runner.warning(&warning);
    }
    Ok(())
}

/// BuildKit's warnings about the Dockerfile, as warning annotations on its lines, given
/// once the build's output (where workflow commands are stopped) has ended.
pub(crate) fn annotate_build_warnings(
    runner: &Runner,
    dockerfile: &std::path::Path,
    warnings: &[engine::buildkit::BuildWarning],
) {
    for warning in warnings {
        runner.warning_at(dockerfile, warning.line, &warning.message);
    }
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
