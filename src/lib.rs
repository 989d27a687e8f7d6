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
//! - [`ecr`]: the AWS side: credentials, registry token, repository settings and
//!   policies, digest confirmation.
//! - [`engine`]: the Docker side through the Engine API: the build context as a streamed
//!   tar honouring `.dockerignore`, the build, the push.
//! - [`runner`]: the GitHub runner protocol: outputs file, summary, masks, groups,
//!   annotations.
//! - [`repository`]: what a run does to the repository besides pushing: policies,
//!   warnings about settings an existing repository keeps, tags that already exist.
//! - [`report`]: the outputs and job summary of a finished run.
//! - [`metadata`]: tag templates and default OCI labels from the GitHub context (built
//!   once in `main`, with the event payload), applied while the inputs are parsed.
//! - [`gate`]: the scan gate on ECR's findings ([`ecr::scan`] waits for them).
//!
//! # Order of work
//!
//! Everything that can fail cheaply fails before the build: inputs, the build context and
//! `.dockerignore`, the Docker engine and AWS credentials (checked concurrently), the
//! registry token and the repository. Policies are applied while the image builds. The
//! push starts only after everything has succeeded, and outputs are written only after
//! ECR has confirmed the digest of every tag.

pub mod ecr;
pub mod engine;
pub mod env;
pub mod gate;
pub mod inputs;
pub mod metadata;
pub mod report;
pub mod repository;
pub mod runner;

use std::time::Instant;

use anyhow::Context as _;

use crate::ecr::{Ecr, RegistryAuth};
use crate::engine::build::{BuildRequest, BuilderKind};
use crate::engine::context::{self, ContextError};
use crate::engine::push::{PushTarget, RetryPolicy};
use crate::engine::Engine;
use crate::env::Environment;
use crate::inputs::{Builder, InputError, Inputs, PushEngine, SecretSource, SecretSpec};
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
    let secrets = read_secrets(&inputs.build.secrets, env, runner)?;

    let (engine, ecr) = tokio::try_join!(
        async {
            Engine::connect(&env.docker)
                .await
                .context("the Docker engine is not usable")
        },
        async {
            Ecr::connect(inputs.aws_region.as_deref(), env.ecr_endpoint.as_deref())
                .await
                .context("AWS is not usable")
        },
    )?;
    tracing::info!(
        "Docker Engine {} (API {}), AWS region {}",
        engine.version,
        engine.api_version,
        ecr.region
    );

    // Before any change in AWS: a builder that cannot do this build is an input error.
    let builder = choose_builder(&engine, inputs, prepared.dockerfile_is_generated()).await?;

    let registry_id = inputs.registry_id.as_deref();
    let auth = ecr.authorization(registry_id).await?;
    runner.add_mask(auth.password.expose());
    runner.add_mask(auth.token.expose());
    let mut report = Report::new(&auth.registry, inputs);

    // A build-only run leaves the repository alone.
    if inputs.push {
        let state = ecr
            .ensure_repository(&inputs.repository, registry_id, &inputs.repository_settings)
            .await?;
        repository::warn_about_settings_not_applied(&state, inputs, runner);
        let plan = repository::plan_tags(&ecr, inputs, &state).await?;
        report.repository_state = Some(state);
        if let TagPlan::Skip { digest, image_id } = plan {
            tracing::info!("every tag already exists at {digest}: nothing to build or push");
            report.policies = repository::apply_policies(&ecr, inputs).await?;
            report.outcome = Outcome::Skipped;
            report.digest = Some(digest);
            report.image_id = image_id.unwrap_or_default();
            return Ok(report);
        }
    }

    let cache_from = match builder {
        BuilderKind::Buildkit => cache_sources(&ecr, inputs, &report).await,
        BuilderKind::Classic => Vec::new(),
    };
    let build_started = Instant::now();
    let request = BuildRequest {
        settings: &inputs.build,
        dockerfile,
        references: &report.references,
        registry_auth: Some(&auth),
        builder,
        secrets: &secrets.0,
        cache_from: &cache_from,
    };
    let (built, policies) = tokio::join!(
        engine::build::build(&engine, prepared, &request, runner),
        repository::apply_policies(&ecr, inputs),
    );
    let built = built?;
    report.policies = policies?;
    report.build_time = Some(build_started.elapsed());
    report.image_id = built.image_id;
    report.local_size_bytes = Some(built.size_bytes);
    report.builder = Some(builder);
    report.cache = built.cache;
    tracing::info!(
        "built {} in {:.1}s",
        report.image_id,
        build_started.elapsed().as_secs_f64()
    );

    if inputs.push {
        // Images whose layers ours may share, most likely first: the repository's image
        // under the first tag (the previous push), the cache sources, the base images.
        let mut reuse_from = vec![report.references[0].clone()];
        reuse_from.extend(cache_from);
        reuse_from.extend(base_images);
        let push_run = PushRun {
            engine: &engine,
            ecr: &ecr,
            auth: &auth,
            reuse_from,
        };
        push_and_confirm(&push_run, inputs, env, runner, &mut report).await?;
        if inputs.scan.wait {
            scan_gate(&ecr, inputs, runner, &mut report).await?;
        }
    } else if inputs.scan.wait {
        runner.warning("`scan: wait` has nothing to wait for: `push` is false");
    }
    Ok(report)
}

/// Waits for ECR's findings on the pushed image and applies the gate. When the gate
/// fails, the summary (naming the image, which stays in ECR) is written here and the
/// error returned, so no outputs are written.
async fn scan_gate(
    ecr: &Ecr,
    inputs: &Inputs,
    runner: &Runner,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Some(digest) = report.digest.clone() else {
        return Ok(());
    };
    let started = Instant::now();
    let digests = [digest.clone()];
    let request = ecr::scan::ScanRequest {
        repository: &inputs.repository,
        registry_id: inputs.registry_id.as_deref(),
        digests: &digests,
        scans_on_push: report
            .repository_state
            .as_ref()
            .is_some_and(|r| r.scan_on_push),
        timeout: inputs.scan.timeout,
        poll: ecr::scan::Backoff::DEFAULT,
    };
    let scans = {
        let _group = runner.group(&format!("Scan of {digest}"));
        ecr.scan_findings(&request).await?
    };
    let gate = gate::Gate::evaluate(scans, &inputs.scan);
    tracing::info!(
        "scan findings after {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        gate.findings_json()
    );
    for name in &gate.stale_ignores {
        runner.warning(&format!(
            "`scan-ignore` lists `{name}`, which no finding of this image has: remove it if \
             it is fixed"
        ));
    }
    let image = format!("{}@{digest}", report.repository_uri());
    let failure = gate.failure(&image);
    if failure.is_none() {
        for (digest, reason) in gate.not_scanned() {
            runner.warning(&format!("{digest} was not scanned: {reason}"));
        }
    }
    report.scan = Some(gate);
    match failure {
        None => Ok(()),
        Some(line) => {
            report.outcome = Outcome::ScanFailed;
            runner.write_summary(&report.summary_markdown())?;
            Err(anyhow::anyhow!(line))
        }
    }
}

/// What the push needs beyond the inputs.
struct PushRun<'a> {
    engine: &'a Engine,
    ecr: &'a Ecr,
    auth: &'a RegistryAuth,
    /// Images in the registry whose layers ours may share (for the direct push).
    reuse_from: Vec<String>,
}

async fn push_and_confirm(
    run: &PushRun<'_>,
    inputs: &Inputs,
    env: &Environment,
    runner: &Runner,
    report: &mut Report,
) -> anyhow::Result<()> {
    let PushRun {
        engine, ecr, auth, ..
    } = *run;
    let retry = if env.no_retry_delay {
        RetryPolicy::DEFAULT.without_delays()
    } else {
        RetryPolicy::DEFAULT
    };
    let started = Instant::now();
    let repository_ref = report.repository_uri();
    let target = PushTarget {
        repository_ref: &repository_ref,
        image_id: &report.image_id,
        auth,
    };
    let (digest, engine_used) = match inputs.push_engine {
        PushEngine::Daemon => (
            engine::push::push(engine, target, &inputs.tags, retry, runner)
                .await?
                .digest,
            "daemon",
        ),
        PushEngine::Direct | PushEngine::Auto => {
            let direct = {
                let _group = runner.group(&format!("Push {repository_ref} (direct)"));
                let options = engine::direct::DirectOptions {
                    reuse_from: run.reuse_from.clone(),
                    ..engine::direct::DirectOptions::default()
                };
                engine::direct::push(
                    &engine.docker,
                    &report.image_id,
                    &inputs.repository,
                    &inputs.tags,
                    auth,
                    retry,
                    &options,
                    |line| eprintln!("{line}"),
                )
                .await
            };
            match direct {
                Ok(pushed) => {
                    tracing::info!(
                        "direct push: {} bytes compressed, {} uploaded, {} blob(s) already \
                         there, {} mounted, {} layer(s) reused without compressing",
                        pushed.compressed_bytes,
                        pushed.uploaded_bytes,
                        pushed.skipped_blobs,
                        pushed.mounted_blobs,
                        pushed.reused_layers
                    );
                    (pushed.digest, "direct")
                }
                Err(err) if inputs.push_engine == PushEngine::Auto && err.daemon_may_succeed() => {
                    runner.warning(&format!(
                        "the direct push cannot send this image ({err}); pushing through the \
                         Docker daemon instead"
                    ));
                    let pushed =
                        engine::push::push(engine, target, &inputs.tags, retry, runner).await?;
                    (pushed.digest, "daemon (fallback)")
                }
                Err(err) => return Err(err.into()),
            }
        }
    };
    let (detail, moved) = ecr
        .confirm_digest(
            &inputs.repository,
            inputs.registry_id.as_deref(),
            &inputs.tags,
            &digest,
        )
        .await
        .context("the pushed image could not be confirmed with ECR")?;
    if !moved.is_empty() {
        runner.warning(&format!(
            "tag(s) {} now point at another image: another run pushed them after this one; \
             this run's image is in ECR as {}",
            moved.join(", "),
            digest
        ));
    }
    let push_time = started.elapsed();
    tracing::info!(
        "pushed {} tag(s) at {digest} in {:.1}s ({engine_used})",
        inputs.tags.len(),
        push_time.as_secs_f64()
    );
    report.outcome = Outcome::Pushed;
    report.push_engine = Some(engine_used);
    report.digest = Some(digest);
    report.pushed_size_bytes = detail.size_bytes;
    report.push_time = Some(push_time);
    Ok(())
}

/// Decides `builder: auto`, and logs the choice and why.
///
/// A Dockerfile outside the context travels inside the context tar under a generated
/// name. The classic daemon removes it again through the tar's `.dockerignore`; BuildKit,
/// given a tar, applies no `.dockerignore`, so `COPY .` would copy that file into the
/// image. Such builds use the classic builder.
async fn choose_builder(
    engine: &Engine,
    inputs: &Inputs,
    outside_dockerfile: bool,
) -> anyhow::Result<BuilderKind> {
    let (kind, why) = match inputs.build.builder {
        Builder::Classic => (BuilderKind::Classic, "asked for".to_string()),
        Builder::Buildkit if outside_dockerfile => anyhow::bail!(InputError::invalid(
            "dockerfile",
            &inputs.build.dockerfile_path().display().to_string(),
            "with `builder: buildkit` the Dockerfile must be inside the context (BuildKit \
             would copy it into the image); move it, or use `builder: auto` or `classic`",
        )),
        Builder::Auto if outside_dockerfile => (
            BuilderKind::Classic,
            "auto: the Dockerfile is outside the context".to_string(),
        ),
        Builder::Buildkit if engine.tls => anyhow::bail!(InputError::invalid(
            "builder",
            "buildkit",
            format!(
                "BuildKit builds need a unix:// or plain tcp:// DOCKER_HOST, not TLS ({})",
                engine.host
            ),
        )),
        Builder::Buildkit => (BuilderKind::Buildkit, "asked for".to_string()),
        Builder::Auto if engine.tls => (
            BuilderKind::Classic,
            "auto: BuildKit builds do not run over a TLS DOCKER_HOST".to_string(),
        ),
        Builder::Auto if engine::buildkit::supports_buildkit(&engine.host).await => (
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

/// Build secrets by id. Their bytes are wiped when dropped; `Debug` shows ids only.
struct SecretValues(Vec<(String, Vec<u8>)>);

impl Drop for SecretValues {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for (_, value) in &mut self.0 {
            value.zeroize();
        }
    }
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(id, _)| id))
            .finish()
    }
}

/// Reads the build secrets' values (files, step environment variables) and masks them
/// before anything could print them.
fn read_secrets(
    specs: &[SecretSpec],
    env: &Environment,
    runner: &Runner,
) -> Result<SecretValues, InputError> {
    // Wrapped from the start, so values read before a failing one are wiped too.
    let mut values = SecretValues(Vec::with_capacity(specs.len()));
    for spec in specs {
        let value = match &spec.source {
            SecretSource::File(path) => std::fs::read(path).map_err(|e| {
                InputError::invalid(
                    "secrets",
                    &spec.id,
                    format!("cannot read the secret file {}: {e}", path.display()),
                )
            })?,
            SecretSource::Env(name) => env
                .secret_vars
                .get(name)
                .ok_or_else(|| {
                    InputError::invalid(
                        "secrets",
                        &spec.id,
                        format!("the environment variable `{name}` is not set for this step"),
                    )
                })?
                .as_bytes()
                .to_vec(),
        };
        // The runner masks line by line; a multi-line value gets a mask per line.
        for line in String::from_utf8_lossy(&value).lines() {
            if line.trim().len() >= 4 {
                runner.add_mask(line.trim());
            }
        }
        values.0.push((spec.id.clone(), value));
    }
    Ok(values)
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
