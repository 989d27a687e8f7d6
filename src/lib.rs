//! ecr-build-push: build a Docker image and push it to Amazon ECR in one step.
//!
//! # Layout
//!
//! Data flows one way: the environment is captured once, inputs are parsed once into
//! types, and each module takes what it needs as arguments.
//!
//! ```text
//! main.rs      logging, inputs, run, a failure turned into one ::error:: line
//! lib.rs       run(): plan -> build -> publish -> confirm -> gate -> report
//! plan.rs      phase 1: context, engines, AWS, builder, token, repository, tags, skip
//! targets.rs   `also-push-to`: each other registry planned (region, role, token,
//!              repository, tags), confirmed, gated; `replicated` ones waited for;
//!              a skipped run's image copied to the registries that lack it
//! builds.rs    phase 2: 1..N platform builds, each on its engine, side by side
//! publish/     phase 3: image sources -> compressed blobs -> 1..M registries ->
//!              manifests -> index
//!   targets.rs     the registries of one push (Fanout): blobs to all at once, the same
//!                  manifest bytes put in each, a failed one dropped from the rest
//!   copy.rs        an image copied as it is from one registry to another
//!   pipeline.rs    one image along its route, or N by digest and an index
//!   legs.rs        a build shared by matrix legs (`build-platforms`): records, index
//!   route.rs       which pusher sends one image (daemon, direct, containerd's both)
//!   classic.rs, containerd.rs, export.rs   the image sources, per image store
//!   compression.rs, gzip.rs, deflate.rs, stream.rs, upload.rs   blobs, as they stream
//!   reuse.rs       layers the registry has already, from images that share them
//!   verify.rs      a reused blob proven to be the layer (read, decompressed, hashed)
//!   attach.rs      provenance and signatures pushed as referrers, confirmed
//!   manifest.rs, index.rs, descriptor.rs   what is put under the tags
//! registry/    an OCI distribution client with ECR's rules in one place (rules.rs):
//!              auth and token renewal, blobs, manifests, retries; connections a
//!              stalled request ends (connector.rs), bodies sent in pieces (body.rs)
//! ecr/         the AWS APIs: token, repositories, templates, policies, images, scans,
//!              referrers, KMS signing (kms.rs), ECR managed signing (signing.rs),
//!              ECR Public (public.rs: Bearer token, alias, catalog data, images),
//!              other regions and assumed roles (elsewhere.rs), replication
//!              (replication.rs: rules, the wait for COMPLETE)
//! supply/      what travels with an image: SLSA provenance (in-toto Statement v1,
//!              provenance.rs), cosign's signature and attestation formats
//!              (cosign.rs), and the Signer trait they are signed through
//! engine/      Docker only: connect, context, build (classic, BuildKit session), the
//!              daemon's pusher
//! repository.rs   policies, settings an existing repository keeps, tags that exist
//! gate.rs      phase 5: the scan gate on ECR's findings
//! report.rs    phase 6: the outputs and job summary of a finished run
//! progress.rs  the sink the engine and the publish phase report through
//! network/     proxy and trust for both HTTP clients; stall.rs: the no-progress
//!              watchdog (ECR_BUILD_PUSH_STALL_TIMEOUT) and capped body reads
//! env.rs, inputs/, metadata/, runner.rs, secrets.rs, credentials.rs,
//! platform.rs, random.rs
//!              environment, inputs, tag templates, the runner
//!              protocol, build secrets, the shared Secret type, os/arch/variant,
//!              random tokens
//! ```
//!
//! # Order of work
//!
//! Everything that can fail cheaply fails before the build ([`plan`]). The repository's
//! policies are applied while the images build, and confirmed before the first tag
//! moves. The push starts only after every build has succeeded, and outputs are written
//! only after ECR has confirmed the digest under every tag; a tag ECR shows at another
//! image by then is left out of them. A one-platform run is the N = 1 case of the same
//! phases: where it differs (the classic builder, the daemon's pusher, the containerd
//! route) the difference is a type ([`publish::route::Route`]) or one `match`.

pub mod builds;
pub mod credentials;
pub mod ecr;
pub mod engine;
pub mod env;
pub mod gate;
pub mod inputs;
pub mod metadata;
pub mod network;
pub mod plan;
pub mod platform;
pub mod progress;
pub mod publish;
pub mod random;
pub mod registry;
pub mod report;
pub mod repository;
pub mod runner;
pub mod secrets;
pub mod supply;
pub mod targets;

use std::time::Instant;

use anyhow::Context as _;

use crate::builds::{BuildRun, PlatformImage};
use crate::ecr::Ecr;
use crate::env::Environment;
use crate::inputs::Inputs;
use crate::plan::Plan;
use crate::publish::route::PushRun;
use crate::report::{Outcome, PlatformRow, Report};
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
///
/// The phases, the same for one platform and for twenty: plan, build, publish, confirm,
/// gate, report.
pub async fn run(inputs: &Inputs, env: &Environment, runner: &Runner) -> anyhow::Result<Report> {
    let (plan, mut report) = Box::pin(plan::plan(inputs, env, runner)).await?;
    match &plan.tags {
        TagPlan::Skip { digest, image_id } => {
            tracing::info!("every tag already exists at {digest}: nothing to build or push");
            report.targets = targets::finish_skipped(&plan, inputs, digest).await;
            report.policies =
                repository::apply_policies(&plan.ecr, inputs, report.repository_state.as_ref())
                    .await?;
            report.outcome = Outcome::Skipped;
            report.digest = Some(digest.clone());
            report.image_id = image_id.clone().unwrap_or_default();
        }
        TagPlan::Build { present } => {
            let images = build(&plan, inputs, runner, &mut report).await?;
            if inputs.push {
                publish(
                    &plan,
                    present,
                    inputs,
                    &env.github,
                    &images,
                    runner,
                    &mut report,
                )
                .await?;
            }
        }
    }
    // The existing image of a skipped run passes the same gate as a new one: a re-run of
    // a job whose gate failed must not ship the image it rejected.
    if inputs.scan.wait {
        if inputs.push {
            // Each target's first: the primary's failure ends the run.
            targets::gate(&plan, &mut report, runner).await;
            Box::pin(gate::wait_and_apply(&plan.ecr, inputs, runner, &mut report)).await?;
        } else {
            runner.warning("`scan: wait` has nothing to wait for: `push` is false");
        }
    }
    Ok(report)
}

/// The build phase: every platform's build, with the repository's policies applied and
/// confirmed alongside, so that a policy ECR rejects fails the run before any tag moves.
async fn build(
    plan: &Plan,
    inputs: &Inputs,
    runner: &Runner,
    report: &mut Report,
) -> anyhow::Result<Vec<PlatformImage>> {
    let started = Instant::now();
    let run = BuildRun {
        inputs,
        builder: plan.builder,
        auth: &plan.auth,
        runner,
        dockerfile: plan.dockerfile.clone(),
        secrets: &plan.secrets.0,
        cache_from: &plan.cache_from,
        references: &report.references,
    };
    let (images, policies) = tokio::join!(
        plan.builds.build(&run),
        repository::apply_policies(&plan.ecr, inputs, report.repository_state.as_ref()),
    );
    let images = images?;
    report.policies = policies?;
    report.build_time = Some(started.elapsed());
    report.builder = Some(plan.builder);
    if let [one] = images.as_slice() {
        report.image_id.clone_from(&one.built.image_id);
        report.local_size_bytes = Some(one.built.size_bytes);
        report.cache = one.built.cache;
        report.platform.clone_from(&one.built.platform);
    }
    // A row per platform when they make an index, here or across the legs of a shared
    // build.
    if images.len() > 1 || plan.shared.is_some() {
        report.platforms = images
            .iter()
            .filter_map(|image| image.platform.clone().map(|platform| (platform, image)))
            .map(|(platform, image)| PlatformRow {
                platform,
                digest: None,
                compressed_bytes: None,
                build_time: Some(image.build_time),
                engine: image.engine_label.clone(),
                here: true,
            })
            .collect();
    }
    Ok(images)
}

/// The publish and confirm phases: the images to the registry under every tag, then
/// ECR's confirmation of the digest.
async fn publish(
    plan: &Plan,
    present: &[repository::PresentTag],
    inputs: &Inputs,
    github: &env::GitHubContext,
    images: &[PlatformImage],
    runner: &Runner,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let extra: Vec<_> = plan.extra.iter().map(|t| t.destination.clone()).collect();
    let run = PushRun {
        extra: &extra,
        ecr: &plan.ecr,
        shared: plan.shared.as_ref(),
        auth: &plan.auth,
        reuse_from: plan.reuse_from.clone(),
        network: &plan.network,
        retry: plan.retry,
        spool_dir: plan.spool_dir.clone(),
        mounting: plan.mounting,
        present,
    };
    let published =
        publish::publish(&run, inputs, images, &report.repository_uri(), runner).await?;
    let facts = build_facts(plan, inputs, github, images, runner, report);
    if inputs.supply.attaches() {
        let at = AttachAt {
            login: plan.auth.login(),
            repository: &inputs.repository,
            ecr: &plan.ecr,
            inputs,
            repository_ref: report.repository_uri(),
            primary: true,
        };
        report.attachments = attach(plan, &at, facts.clone(), images, &published, runner).await?;
    }
    if let Some(digest) = &published.digest {
        confirm(&plan.ecr, inputs, runner, report, digest).await?;
    }
    if !inputs.also_push_to.is_empty() {
        report.targets = targets::confirm(plan, inputs, &published.targets, report, runner).await;
        if inputs.supply.attaches() {
            attach_to_targets(plan, &facts, images, &published, runner, report).await;
        }
    }
    let unlisted = publish::attach::confirm(
        &plan.ecr,
        &inputs.repository,
        inputs.registry_id.as_deref(),
        &report.attachments,
    )
    .await?;
    for warning in unlisted {
        runner.warning(&warning);
    }
    if let plan::SigningPlan::Ecr(rules) = &plan.signing {
        let targets = publish::attach::targets(&published, images, false);
        let (signed, found) =
            publish::attach::ecr_signatures(&plan.ecr, inputs, &targets, rules).await?;
        report.attachments.attached.extend(found);
        report.ecr_signatures = signed;
    }
    let push_time = started.elapsed();
    tracing::info!(
        "pushed in {:.1}s ({})",
        push_time.as_secs_f64(),
        published.engine_used
    );
    record_children(report, &published.children);
    report.outcome = if published.digest.is_some() {
        Outcome::Pushed
    } else {
        Outcome::SharePushed
    };
    report.leg = published.leg;
    report.push_engine = Some(published.engine_used);
    report.blobs = published.blobs;
    report.push_time = Some(push_time);
    Ok(())
}

/// Where attachments go: the primary registry, or a target of `also-push-to`.
struct AttachAt<'a> {
    login: registry::Login,
    /// The repository's path in the registry.
    repository: &'a str,
    ecr: &'a Ecr,
    /// The inputs as they apply there (its repository and registry).
    inputs: &'a Inputs,
    /// `host/repository`.
    repository_ref: String,
    /// The registry-endpoint of the network applies (the primary only).
    primary: bool,
}

/// Provenance (and signatures) attached to each image manifest this run pushed, as
/// referrers; a provenance the registry refused is a warning.
async fn attach(
    plan: &Plan,
    at: &AttachAt<'_>,
    facts: supply::provenance::BuildFacts<'_>,
    images: &[PlatformImage],
    published: &publish::pipeline::Published,
    runner: &Runner,
) -> anyhow::Result<publish::attach::Attachments> {
    let network = if at.primary {
        plan.network.clone()
    } else {
        network::Network {
            registry_endpoint: None,
            ..plan.network.clone()
        }
    };
    let reg = registry::Registry::connect(&at.login, at.repository, plan.retry, &network)?;
    let run = publish::attach::AttachRun {
        reg: &reg,
        ecr: at.ecr,
        signer: plan.signing.kms(),
        inputs: at.inputs,
        facts,
        repository_ref: at.repository_ref.clone(),
    };
    let targets = publish::attach::targets(published, images, run.signer.is_some());
    let attachments = publish::attach::attach_all(&run, targets, images).await?;
    for refused in &attachments.refused {
        runner.warning(&format!(
            "the registry refused the {} of {} in {}; the image stays pushed without it: {}",
            refused.kind.label(),
            refused.subject,
            at.repository_ref,
            refused.reason
        ));
    }
    Ok(attachments)
}

/// What the provenance says of this run.
fn build_facts<'a>(
    plan: &Plan,
    inputs: &'a Inputs,
    github: &'a env::GitHubContext,
    images: &[PlatformImage],
    runner: &Runner,
    report: &Report,
) -> supply::provenance::BuildFacts<'a> {
    let engine_version = images
        .first()
        .map(|image| image.engine.version.clone())
        .unwrap_or_default();
    supply::provenance::BuildFacts {
        github,
        mode: inputs.supply.provenance,
        dockerfile: runner.annotated(&plan.dockerfile),
        context: runner.annotated(&inputs.build.context),
        target: inputs.build.target.as_deref(),
        platforms: inputs.platforms.iter().map(ToString::to_string).collect(),
        build_args: &inputs.build.build_args,
        tags: &inputs.tags,
        builder: match plan.builder {
            engine::build::BuilderKind::Buildkit => "buildkit",
            engine::build::BuilderKind::Classic => "classic",
        },
        engine_version,
        started: report.started_at,
        finished: metadata::now(),
    }
}

/// The attachments of each target of `also-push-to` the image reached, confirmed there;
/// a target whose attachments fail is marked failed in its row.
async fn attach_to_targets(
    plan: &Plan,
    facts: &supply::provenance::BuildFacts<'_>,
    images: &[PlatformImage],
    published: &publish::pipeline::Published,
    runner: &Runner,
    report: &mut Report,
) {
    for target in &plan.extra {
        // ECR Public has no `ListImageReferrers` to confirm them with.
        let Some(ecr) = target.ecr() else {
            continue;
        };
        let Some(row) = report.target_row(target.label()) else {
            continue;
        };
        if row.error.is_some() {
            continue;
        }
        let at = AttachAt {
            login: target.destination.login.clone(),
            repository: &target.destination.repository,
            ecr,
            inputs: &target.inputs,
            repository_ref: format!(
                "{}/{}",
                target.destination.login.host, target.destination.repository
            ),
            primary: false,
        };
        let attached = async {
            let attachments = attach(plan, &at, facts.clone(), images, published, runner).await?;
            let unlisted = publish::attach::confirm(
                ecr,
                &target.inputs.repository,
                target.inputs.registry_id.as_deref(),
                &attachments,
            )
            .await?;
            for warning in unlisted {
                runner.warning(&warning);
            }
            anyhow::Ok(())
        };
        if let Err(err) = attached.await {
            row.error = Some(format!("attaching the provenance failed: {err:#}"));
        }
    }
}

/// Each platform's digest and size in its row; another leg's platform (a shared build's
/// index) gets a row of its own, named by the runner that built it.
fn record_children(report: &mut Report, children: &[publish::PublishedChild]) {
    for child in children {
        if let Some(row) = report
            .platforms
            .iter_mut()
            .find(|row| row.platform == child.platform)
        {
            row.digest = Some(child.digest.clone());
            row.compressed_bytes = child.compressed_bytes;
        } else {
            report.platforms.push(PlatformRow {
                platform: child.platform.clone(),
                digest: Some(child.digest.clone()),
                compressed_bytes: child.compressed_bytes,
                build_time: None,
                engine: child
                    .built_by
                    .as_ref()
                    .map_or_else(String::new, |runner| format!("another leg: {runner}")),
                here: false,
            });
        }
    }
    // Index order, which is `platforms` order.
    let order: Vec<_> = children.iter().map(|c| c.platform.clone()).collect();
    report
        .platforms
        .sort_by_key(|row| order.iter().position(|p| *p == row.platform));
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
