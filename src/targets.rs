//! `also-push-to`: the registries beyond the primary. Each is planned before the build as
//! the primary is (its region's ECR API, an assumed role when given, its own token, the
//! repository ensured with the same settings and policies, the tags it holds), and
//! confirmed after the push with its own ECR API. A target that cannot be planned, pushed
//! or confirmed is left out, not undone: the others go on, and the step fails at the end
//! naming each ([`Failed`]).

use anyhow::Context as _;

use crate::ecr::{Ecr, EcrPublic};
use crate::engine::ImageStore;
use crate::env::{Environment, GitHubContext};
use crate::inputs::targets::{TargetRegistry, TargetSpec};
use crate::inputs::Inputs;
use crate::publish::targets::{Destination, TargetPush};
use crate::registry::Registry;
use crate::report::targets::TargetRow;
use crate::report::Report;
use crate::repository::{self, TagPlan};
use crate::runner::Runner;

/// A target ready to push to.
#[derive(Debug)]
pub struct Target {
    /// The run's inputs with this target's repository and registry: every check and
    /// setting of the primary applies to it as written.
    pub inputs: Inputs,
    pub api: TargetApi,
    pub destination: Destination,
    /// The image every requested tag already names there (`on-tag-exists: skip`).
    pub holds: Option<String>,
    /// Whether the repository there scans on push (else `scan: wait` starts a scan).
    pub scans_on_push: bool,
}

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

/// A target left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub label: String,
    pub reason: String,
}

/// The AWS API of a target's registry.
#[derive(Debug)]
pub enum TargetApi {
    Private(Ecr),
    /// ECR Public: no tag immutability, scans or referrers API; catalog data instead.
    Public(EcrPublic),
}

impl Target {
    pub fn label(&self) -> &str {
        &self.destination.label
    }

    /// The private registry's ECR API; `None` for ECR Public.
    pub fn ecr(&self) -> Option<&Ecr> {
        match &self.api {
            TargetApi::Private(ecr) => Some(ecr),
            TargetApi::Public(_) => None,
        }
    }
}

/// Plans every target of `also-push-to`, side by side: those ready, and those that failed.
pub async fn plan(
    inputs: &Inputs,
    env: &Environment,
    primary: &Ecr,
    primary_host: &str,
    store: ImageStore,
    runner: &Runner,
) -> Planned {
    let account = primary_host.split('.').next().unwrap_or_default();
    let replicas = inputs
        .also_push_to
        .iter()
        .filter(|t| t.replicated)
        .map(|spec| async move {
            let label = label(spec, account, inputs);
            plan_replica(spec, &label, inputs, &env.github, primary, account)
                .await
                .map_err(|err| Failed {
                    label,
                    reason: format!("{err:#}"),
                })
        });
    let pushed = inputs.also_push_to.iter().filter(|t| !t.replicated);
    let plans = pushed.map(|spec| async move {
        let label = label(spec, account, inputs);
        let planned = match &spec.registry {
            TargetRegistry::Private { .. } => {
                let github = &env.github;
                plan_private(
                    spec, &label, inputs, github, primary, account, store, runner,
                )
                .await
            }
            TargetRegistry::Public { alias } => {
                plan_public(spec, alias, &label, inputs, env, primary, runner).await
            }
        };
        planned.map_err(|err| Failed {
            label,
            reason: format!("{err:#}"),
        })
    });
    let (plans, replicas) = tokio::join!(
        futures_util::future::join_all(plans),
        futures_util::future::join_all(replicas)
    );
    let mut planned = Planned::default();
    let mut left_out = |failure: Failed| {
        runner.warning(&format!(
            "{} is left out of this run: {}",
            failure.label, failure.reason
        ));
        planned.left_out.push(failure);
    };
    let mut ready = Vec::new();
    for plan in plans {
        match plan {
            Ok(target) => ready.push(target),
            Err(failure) => left_out(failure),
        }
    }
    let mut waited = Vec::new();
    for plan in replicas {
        match plan {
            Ok(replica) => waited.push(replica),
            Err(failure) => left_out(failure),
        }
    }
    planned.extra = ready;
    planned.replicas = waited;
    planned
}

/// The targets of `also-push-to`, planned.
#[derive(Debug, Default)]
pub struct Planned {
    /// Pushed to.
    pub extra: Vec<Target>,
    /// Filled by ECR's replication.
    pub replicas: Vec<Replica>,
    /// Left out before the build.
    pub left_out: Vec<Failed>,
}

/// A `replicated` target: a replication rule of the primary registry must send the
/// repository there (checked now, so a missing rule does not cost a timeout).
async fn plan_replica(
    spec: &TargetSpec,
    label: &str,
    inputs: &Inputs,
    github: &GitHubContext,
    primary: &Ecr,
    primary_account: &str,
) -> anyhow::Result<Replica> {
    let TargetRegistry::Private {
        region, endpoint, ..
    } = &spec.registry
    else {
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
        region: region.clone(),
        registry_id: account.to_string(),
    };
    if !primary.replicates_to(&inputs.repository, &to).await? {
        anyhow::bail!(
            "no replication rule of the primary registry sends `{}` to {region} in account \
             {account}: add one (ECR console, Private registry, Replication), or drop \
             `replicated` to push there",
            inputs.repository
        );
    }
    let ecr = primary
        .elsewhere(
            region,
            &endpoint.api_endpoint(region),
            spec.role.as_deref(),
            github,
        )
        .await?;
    let mut target_inputs = inputs.clone();
    target_inputs.registry_id = Some(account.to_string());
    target_inputs.also_push_to.clear();
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
        let mut row = TargetRow {
            label: replica.label.clone(),
            uris: Vec::new(),
            digest: None,
            bytes_sent: 0,
            blobs_skipped: 0,
            time: std::time::Duration::ZERO,
            error: None,
        };
        let waited = async {
            // A re-run's image may be there already.
            if let Ok(found) = confirm_replica(replica, digest).await {
                return Ok(found);
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

/// `<host>/<repository>`.
fn label(spec: &TargetSpec, primary_account: &str, inputs: &Inputs) -> String {
    let repository = spec.repository.as_deref().unwrap_or(&inputs.repository);
    match &spec.registry {
        TargetRegistry::Private {
            region, endpoint, ..
        } => {
            let account = spec.account_or(primary_account).unwrap_or_default();
            format!("{}/{repository}", endpoint.registry_host(account, region))
        }
        TargetRegistry::Public { alias } => format!("public.ecr.aws/{alias}/{repository}"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn plan_private(
    spec: &TargetSpec,
    label: &str,
    inputs: &Inputs,
    github: &GitHubContext,
    primary: &Ecr,
    primary_account: &str,
    store: ImageStore,
    runner: &Runner,
) -> anyhow::Result<Target> {
    let TargetRegistry::Private {
        region, endpoint, ..
    } = &spec.registry
    else {
        unreachable!("plan_private is given private targets")
    };
    let account = spec.account_or(primary_account).unwrap_or_default();
    let host = endpoint.registry_host(account, region);
    let ecr = primary
        .elsewhere(
            region,
            &endpoint.api_endpoint(region),
            spec.role.as_deref(),
            github,
        )
        .await?;
    let mut target_inputs = inputs.clone();
    target_inputs.repository = spec
        .repository
        .clone()
        .unwrap_or_else(|| inputs.repository.clone());
    target_inputs.registry_id = Some(account.to_string());
    target_inputs.also_push_to.clear();
    let registry_id = Some(account);

    let mut auth = ecr.authorization(registry_id).await?;
    runner.add_mask(auth.password.expose());
    runner.add_mask(auth.token.expose());
    let masks = runner.clone();
    auth.renew = Some(ecr.token_renewal(registry_id, move |secret| masks.add_mask(secret)));
    // The token is the region's; the host is the one the target names (its FIPS or
    // dual-stack form too).
    auth.registry = host;

    let state = ecr
        .ensure_repository(
            &target_inputs.repository,
            registry_id,
            &target_inputs.repository_settings,
        )
        .await?;
    repository::warn_about_settings_not_applied(&state, &target_inputs, runner);
    repository::apply_policies(&ecr, &target_inputs, Some(&state)).await?;
    let (present, holds) = match repository::plan_tags(&ecr, &target_inputs, &state, store).await? {
        TagPlan::Build { present } => (present, None),
        // Every tag is there already: the immutable ones stay if the primary's image is
        // this one, and the push to this target fails alone if it is not.
        TagPlan::Skip { digest, .. } => (
            repository::plan_tags_to_build(&ecr, &target_inputs, &state, store).await?,
            Some(digest),
        ),
    };
    tracing::info!(
        "also pushing to {label} ({}{})",
        ecr.region,
        spec.role
            .as_deref()
            .map(|role| format!(", as {role}"))
            .unwrap_or_default()
    );
    Ok(Target {
        destination: Destination {
            label: label.to_string(),
            login: auth.login(),
            repository: target_inputs.repository.clone(),
            present,
            primary: false,
        },
        inputs: target_inputs,
        api: TargetApi::Private(ecr),
        holds,
        scans_on_push: state.scan_on_push,
    })
}

/// An ECR Public target: its token (us-east-1, `Bearer`), the alias checked against the
/// registry's, the repository ensured with its catalog data, the tags it holds.
async fn plan_public(
    spec: &TargetSpec,
    alias: &str,
    label: &str,
    inputs: &Inputs,
    env: &Environment,
    primary: &Ecr,
    runner: &Runner,
) -> anyhow::Result<Target> {
    let endpoint = env.ecr_public_endpoint.as_deref();
    let public = match &spec.role {
        Some(role) => {
            let region = crate::ecr::public::REGION;
            let sdk = primary.config_in(region, Some(role), &env.github).await?;
            EcrPublic::from_sdk(&sdk, endpoint)
        }
        None => primary.public(endpoint),
    };
    let mut auth = public.authorization().await?;
    runner.add_mask(auth.password.expose());
    runner.add_mask(auth.token.expose());
    let masks = runner.clone();
    auth.renew = Some(public.token_renewal(move |secret| masks.add_mask(secret)));
    let registry_alias = public.alias().await?;
    if registry_alias != alias {
        anyhow::bail!(
            "the ECR Public registry of these credentials has the alias `{registry_alias}`, \
             not `{alias}`: name `public.ecr.aws/{registry_alias}/…`, or use the account that \
             owns `{alias}`"
        );
    }
    let name = spec
        .repository
        .clone()
        .unwrap_or_else(|| inputs.repository.clone());
    let catalog = &inputs.public_catalog;
    let change = public
        .ensure_repository_with(&name, catalog, inputs.repository_settings.create)
        .await?;
    tracing::info!("also pushing to {label} (ECR Public: {change})");
    // Every requested tag at one image already: `on-tag-exists: skip` leaves it there.
    let holds = if inputs.on_tag_exists == crate::inputs::OnTagExists::Skip {
        let existing = public.existing_tags(&name, &inputs.tags).await?;
        existing
            .first()
            .map(|first| first.digest.clone())
            .filter(|digest| {
                inputs.tags.iter().all(|tag| {
                    existing
                        .iter()
                        .any(|e| &e.tag == tag && &e.digest == digest)
                })
            })
    } else {
        None
    };
    let mut target_inputs = inputs.clone();
    target_inputs.repository.clone_from(&name);
    target_inputs.registry_id = None;
    target_inputs.also_push_to.clear();
    Ok(Target {
        destination: Destination {
            label: label.to_string(),
            login: auth.login(),
            repository: crate::ecr::public::repository_path(alias, &name),
            // ECR Public has no immutable tags.
            present: Vec::new(),
            primary: false,
        },
        inputs: target_inputs,
        api: TargetApi::Public(public),
        holds,
        scans_on_push: false,
    })
}

/// Has each target's ECR confirm what the push put there, and makes the summary's rows:
/// the primary's (confirmed already: `report`), then each target's in `also-push-to`
/// order, those left out before the build included.
pub async fn confirm(
    plan: &crate::plan::Plan,
    inputs: &Inputs,
    pushes: &[TargetPush],
    report: &Report,
    runner: &Runner,
) -> Vec<TargetRow> {
    let row = |push: &TargetPush| TargetRow {
        label: push.label.clone(),
        uris: Vec::new(),
        digest: push.digest.clone(),
        bytes_sent: push.blobs.uploaded_bytes,
        blobs_skipped: push.blobs.skipped_blobs,
        time: std::time::Duration::from_secs_f64(push.seconds),
        error: push.error.clone(),
    };
    let mut rows = Vec::with_capacity(pushes.len() + plan.left_out.len());
    let uris = report.confirmed_references().into_iter().cloned().collect();
    match pushes.first() {
        Some(primary) => rows.push(TargetRow {
            uris,
            ..row(primary)
        }),
        // The daemon's pusher (only `replicated` targets besides the primary).
        None => rows.push(TargetRow {
            label: format!("{}/{}", report.registry, report.repository),
            uris,
            digest: report.digest.clone(),
            bytes_sent: report.blobs.map_or(0, |b| b.uploaded_bytes),
            blobs_skipped: report.blobs.map_or(0, |b| b.skipped_blobs),
            time: report.push_time.unwrap_or_default(),
            error: None,
        }),
    }
    let checks = plan
        .extra
        .iter()
        .zip(pushes.iter().skip(1))
        .map(|(target, push)| async move {
            let mut row = row(push);
            if let Some(digest) = &push.digest {
                match confirm_one(target, digest).await {
                    Ok((uris, moved)) => {
                        row.uris = uris;
                        for tag in moved {
                            runner.warning(&format!(
                                "tag `{tag}` in {} names another image by now (another run \
                             pushed it after this one): left out of the `targets` output",
                                target.label()
                            ));
                        }
                    }
                    Err(err) => {
                        row.digest = None;
                        row.error = Some(format!("{err:#}"));
                    }
                }
            }
            row
        });
    rows.extend(futures_util::future::join_all(checks).await);
    if let Some(digest) = report.digest.as_deref() {
        rows.extend(wait_for_replicas(plan, inputs, digest).await);
    }
    rows.extend(plan.left_out.iter().map(left_out_row));
    rows
}

/// ECR's confirmation of `digest` under every tag in `target`: the references it
/// confirmed, and the tags it shows at another image.
async fn confirm_one(target: &Target, digest: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let inputs = &target.inputs;
    let confirmed = match &target.api {
        TargetApi::Private(ecr) => {
            ecr.confirm_digest(
                &inputs.repository,
                inputs.registry_id.as_deref(),
                &inputs.tags,
                digest,
            )
            .await
        }
        TargetApi::Public(public) => {
            public
                .confirm_digest(&inputs.repository, &inputs.tags, digest)
                .await
        }
    };
    let (_, moved) = confirmed
        .with_context(|| format!("ECR could not confirm the image in {}", target.label()))?;
    let host = &target.destination.login.host;
    let uris = inputs
        .tags
        .iter()
        .filter(|tag| !moved.contains(tag))
        .map(|tag| format!("{host}/{}:{tag}", target.destination.repository))
        .collect();
    Ok((uris, moved))
}

/// A run that skipped the build (every tag holds the image in the primary registry):
/// each target that lacks it gets it copied from the primary, as it is, so a re-run
/// finishes only the registries a failed run missed. The rows, the primary's first.
pub async fn finish_skipped(
    plan: &crate::plan::Plan,
    inputs: &Inputs,
    digest: &str,
) -> Vec<TargetRow> {
    if inputs.also_push_to.is_empty() {
        return Vec::new();
    }
    let primary = &plan.auth.registry;
    let mut rows = vec![TargetRow {
        label: format!("{primary}/{}", inputs.repository),
        uris: inputs
            .tags
            .iter()
            .map(|tag| format!("{primary}/{}:{tag}", inputs.repository))
            .collect(),
        digest: Some(digest.to_string()),
        bytes_sent: 0,
        blobs_skipped: 0,
        time: std::time::Duration::ZERO,
        error: None,
    }];
    let copies = plan.extra.iter().map(|target| async move {
        let started = std::time::Instant::now();
        let mut row = TargetRow {
            label: target.label().to_string(),
            uris: Vec::new(),
            digest: None,
            bytes_sent: 0,
            blobs_skipped: 0,
            time: std::time::Duration::ZERO,
            error: None,
        };
        let done = async {
            if target.holds.as_deref() != Some(digest) {
                let copied = copy_to(plan, inputs, target, digest).await?;
                row.bytes_sent = copied.bytes_sent;
                row.blobs_skipped = copied.blobs_skipped;
            }
            confirm_one(target, digest).await
        };
        match done.await {
            Ok((uris, _)) => {
                row.uris = uris;
                row.digest = Some(digest.to_string());
            }
            Err(err) => row.error = Some(format!("{err:#}")),
        }
        row.time = started.elapsed();
        row
    });
    rows.extend(futures_util::future::join_all(copies).await);
    rows.extend(wait_for_replicas(plan, inputs, digest).await);
    rows.extend(plan.left_out.iter().map(left_out_row));
    for row in rows.iter().filter(|r| r.bytes_sent > 0) {
        tracing::info!(
            "copied the image {digest} from the primary registry to {}: it was missing there",
            row.label
        );
    }
    rows
}

/// Copies the primary's image `digest` to `target`, under the tags it does not hold yet.
async fn copy_to(
    plan: &crate::plan::Plan,
    inputs: &Inputs,
    target: &Target,
    digest: &str,
) -> anyhow::Result<crate::publish::copy::Copied> {
    let kept = repository::check_present(&target.destination.present, digest)?;
    let tags = repository::without(&inputs.tags, &kept);
    let from = Registry::connect(
        &plan.auth.login(),
        &inputs.repository,
        plan.retry,
        &plan.network,
    )?;
    let elsewhere = crate::network::Network {
        registry_endpoint: None,
        ..plan.network.clone()
    };
    let to = Registry::connect(
        &target.destination.login,
        &target.destination.repository,
        plan.retry,
        &elsewhere,
    )?;
    tracing::info!(
        "{} lacks {digest}: copying it from the primary registry",
        target.label()
    );
    Ok(crate::publish::copy::copy(&from, &to, digest, &tags, &plan.spool_dir).await?)
}

fn left_out_row(failed: &Failed) -> TargetRow {
    TargetRow {
        label: failed.label.clone(),
        uris: Vec::new(),
        digest: None,
        bytes_sent: 0,
        blobs_skipped: 0,
        time: std::time::Duration::ZERO,
        error: Some(failed.reason.clone()),
    }
}

/// `scan: wait` in each target that has the image: ECR's findings there (each registry
/// scans its own copy, by its own settings), through the same gate as the primary's. A
/// target whose gate fails is marked so in its row, and so fails the step.
pub async fn gate(plan: &crate::plan::Plan, report: &mut Report, runner: &Runner) {
    let digests: Vec<String> = if report.platforms.is_empty() {
        report.digest.iter().cloned().collect()
    } else {
        report
            .platforms
            .iter()
            .filter(|row| row.here)
            .filter_map(|row| row.digest.clone())
            .collect()
    };
    for (target, row) in plan.extra.iter().zip(report.targets.iter_mut().skip(1)) {
        let Some(digest) = row.digest.clone().filter(|_| row.error.is_none()) else {
            continue;
        };
        // ECR Public does not scan.
        let Some(ecr) = target.ecr() else {
            continue;
        };
        let inputs = &target.inputs;
        let request = crate::ecr::scan::ScanRequest {
            repository: &inputs.repository,
            registry_id: inputs.registry_id.as_deref(),
            digests: &digests,
            scans_on_push: target.scans_on_push,
            timeout: inputs.scan.timeout,
            poll: crate::ecr::scan::Backoff::DEFAULT,
        };
        let scans = {
            let _group = runner.group(&format!("Scan of {digest} in {}", target.label()));
            ecr.scan_findings(&request).await
        };
        match scans {
            Ok(scans) => {
                let gate = crate::gate::Gate::evaluate(scans, &inputs.scan);
                let image = format!("{}@{digest}", target.label());
                if let Some(line) = gate.failure(&image) {
                    row.error = Some(line);
                } else {
                    tracing::info!("scan gate passed in {}", target.label());
                }
            }
            Err(err) => row.error = Some(format!("the scan gate could not run: {err:#}")),
        }
    }
}
