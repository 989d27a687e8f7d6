//! `also-push-to`: the registries beyond the primary. Each is planned before the build as
//! the primary is (its region's ECR API, an assumed role when given, its own token, the
//! repository ensured with the same settings and policies, the tags it holds), and
//! confirmed after the push with its own ECR API. A target that cannot be planned, pushed
//! or confirmed is left out, not undone: the others go on, and the step fails at the end
//! naming each ([`Failed`]).

mod confirm;
mod replicas;

pub use confirm::{confirm, finish_skipped, gate};
use replicas::plan_replica;
pub use replicas::{wait_for_replicas, Replica};

use crate::ecr::{Ecr, EcrPublic};
use crate::engine::ImageStore;
use crate::env::{Environment, GitHubContext};
use crate::inputs::targets::{TargetRegistry, TargetSpec};
use crate::inputs::Inputs;
use crate::publish::targets::Destination;
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
                // Boxed: the AssumeRole provider's state makes the future large.
                Box::pin(plan_private(
                    spec, &label, inputs, github, primary, account, store, runner,
                ))
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

/// The ECR API of a private target's region (its host form's endpoint), with the
/// target's role when it names one.
async fn private_api(
    primary: &Ecr,
    spec: &TargetSpec,
    github: &GitHubContext,
) -> anyhow::Result<Ecr> {
    let Some((region, endpoint)) = spec.private() else {
        anyhow::bail!("ECR Public has no private ECR API")
    };
    primary
        .elsewhere(
            region,
            &endpoint.api_endpoint(region),
            spec.role.as_deref(),
            github,
        )
        .await
}

/// The run's inputs as they apply to a target: its repository and registry, and no
/// targets of its own.
fn inputs_there(inputs: &Inputs, repository: &str, registry_id: Option<&str>) -> Inputs {
    let mut there = inputs.clone();
    there.repository = repository.to_string();
    there.registry_id = registry_id.map(ToString::to_string);
    there.also_push_to.clear();
    there
}

/// Refuses, before anything changes in AWS, a target that is the primary registry (in
/// any host form) and repository (the step pushes there anyway), and two targets that
/// are one once the primary's account and the `repository` input fill in what they leave
/// out (`us-west-2` and `123456789012:us-west-2`): they would push to one repository
/// twice at once.
pub fn check_not_primary(
    inputs: &Inputs,
    primary_host: &str,
    primary_region: &str,
) -> Result<(), crate::inputs::InputError> {
    let account = primary_host.split('.').next().unwrap_or_default();
    match inputs
        .also_push_to
        .iter()
        .find(|spec| names_the_primary(spec, account, primary_region, inputs))
    {
        Some(spec) => Err(crate::inputs::InputError::invalid(
            "also-push-to",
            &spec.text,
            format!(
                "it names the primary registry and repository ({primary_host}/{}), which \
                 the step pushes to anyway",
                inputs.repository
            ),
        )),
        None => check_distinct(inputs, account),
    }
}

/// Refuses the second of two targets that name one registry and repository once filled
/// in.
fn check_distinct(inputs: &Inputs, account: &str) -> Result<(), crate::inputs::InputError> {
    let key = |spec: &TargetSpec| {
        let registry = match &spec.registry {
            TargetRegistry::Private { region, .. } => {
                format!("{}:{region}", spec.account_or(account).unwrap_or(account))
            }
            TargetRegistry::Public { alias } => format!("public.ecr.aws/{alias}"),
        };
        let repository = spec.repository.as_deref().unwrap_or(&inputs.repository);
        (registry, repository.to_string())
    };
    let mut seen: Vec<(String, String, &str)> = Vec::new();
    for spec in &inputs.also_push_to {
        let (registry, repository) = key(spec);
        if let Some((.., twin)) = seen
            .iter()
            .find(|(r, repo, _)| *r == registry && *repo == repository)
        {
            return Err(crate::inputs::InputError::invalid(
                "also-push-to",
                &spec.text,
                format!(
                    "it names the same registry and repository as `{twin}` \
                     ({registry}, repository {repository}): name it once"
                ),
            ));
        }
        seen.push((registry, repository, &spec.text));
    }
    Ok(())
}

/// Whether `spec` is the primary registry (in any host form) and repository.
fn names_the_primary(spec: &TargetSpec, account: &str, region: &str, inputs: &Inputs) -> bool {
    match &spec.registry {
        TargetRegistry::Private {
            region: target_region,
            ..
        } => {
            spec.account_or(account) == Some(account)
                && target_region == region
                && spec
                    .repository
                    .as_ref()
                    .is_none_or(|r| *r == inputs.repository)
        }
        TargetRegistry::Public { .. } => false,
    }
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

/// `<host>/<repository>`.
pub(super) fn label(spec: &TargetSpec, primary_account: &str, inputs: &Inputs) -> String {
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
    let Some((region, endpoint)) = spec.private() else {
        unreachable!("plan_private is given private targets")
    };
    let account = spec.account_or(primary_account).unwrap_or_default();
    let host = endpoint.registry_host(account, region);
    let ecr = private_api(primary, spec, github).await?;
    let repository = spec.repository.as_deref().unwrap_or(&inputs.repository);
    let target_inputs = inputs_there(inputs, repository, Some(account));
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
    let aliases = public.aliases().await?;
    if !aliases.iter().any(|a| a == alias) {
        anyhow::bail!(
            "the ECR Public registry of these credentials has the alias(es) `{}`, not \
             `{alias}`: name `public.ecr.aws/{}/…`, or use the account that owns `{alias}`",
            aliases.join("`, `"),
            aliases[0]
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
    let target_inputs = inputs_there(inputs, &name, None);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(also: &str) -> Inputs {
        let values = [("repository", "app"), ("also-push-to", also)]
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let spec = crate::inputs::ActionSpec::embedded();
        Inputs::parse(&spec, &values, std::path::Path::new("/ws")).unwrap()
    }

    /// A target that is the primary registry and repository, in any spelling, is an
    /// input error; another region, repository or ECR Public is not.
    #[test]
    fn a_target_that_is_the_primary_is_refused_in_any_spelling() {
        let primary = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        for also in [
            "us-east-1",
            "123456789012:us-east-1",
            "123456789012.dkr-ecr.us-east-1.on.aws/app",
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
        ] {
            let err = check_not_primary(&inputs(also), primary, "us-east-1").unwrap_err();
            assert_eq!(err.input(), "also-push-to", "{also}");
            assert!(err.to_string().contains("names the primary"), "{err}");
        }
        for also in [
            "us-west-2",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/other",
            "210987654321:us-east-1",
            "public.ecr.aws/alias/app",
        ] {
            assert!(
                check_not_primary(&inputs(also), primary, "us-east-1").is_ok(),
                "{also}"
            );
        }
    }

    /// Regression: two spellings of one target, equal only once the primary's account
    /// and the `repository` input fill them in, passed the parser's duplicate check and
    /// were pushed to twice at once.
    #[test]
    fn two_targets_that_are_one_once_filled_in_are_refused() {
        let primary = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        for (first, second) in [
            ("us-west-2", "123456789012:us-west-2"),
            (
                "us-west-2",
                "123456789012.dkr.ecr.us-west-2.amazonaws.com/app",
            ),
            ("public.ecr.aws/al", "public.ecr.aws/al/app"),
            (
                "210987654321:eu-west-1",
                "210987654321.dkr.ecr.eu-west-1.amazonaws.com/app",
            ),
        ] {
            let also = format!("{first}\n{second}");
            let err = check_not_primary(&inputs(&also), primary, "us-east-1").unwrap_err();
            assert_eq!(err.input(), "also-push-to", "{also}");
            assert!(err.to_string().contains(&format!("as `{first}`")), "{err}");
        }
        let distinct =
            "us-west-2\n123456789012.dkr.ecr.us-west-2.amazonaws.com/other\npublic.ecr.aws/al";
        assert!(check_not_primary(&inputs(distinct), primary, "us-east-1").is_ok());
    }
}
