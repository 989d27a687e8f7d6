//! What a run does to the repository besides pushing: warnings about creation settings
//! that an existing repository keeps, the policies applied while the image builds, and
//! the decision about tags that already exist (`on-tag-exists`).

mod tags;

pub use tags::{check_present, plan_tags, plan_tags_to_build, without, PresentTag, TagPlan};

use crate::ecr::repository::filters_text;
use crate::ecr::{Ecr, Repository};
use crate::inputs::Inputs;
use crate::report::PolicyOutcome;
use crate::runner::Runner;

/// Creation settings do not change an existing repository; say so when they differ, so
/// nobody believes a repository is IMMUTABLE because the workflow says it. A repository
/// ECR creates on push gets its template's settings instead: say that too, and that the
/// policy inputs are left to the template (here, before the build, whose log turns
/// workflow commands off).
pub fn warn_about_settings_not_applied(repository: &Repository, inputs: &Inputs, runner: &Runner) {
    if let Some(prefix) = &repository.created_on_push {
        if let (_, Some(warning)) = policies_from_template(inputs, prefix) {
            runner.warning(&warning);
        }
    }
    let differences = settings_not_applied(repository, inputs);
    if differences.is_empty() {
        return;
    }
    let whose = match &repository.created_on_push {
        Some(prefix) => format!(
            "repository `{}` will be created on push by ECR from the repository creation \
             template `{prefix}`, whose settings apply instead of this step's",
            inputs.repository
        ),
        None => format!(
            "repository `{}` already exists and keeps its settings, which apply only on \
             creation",
            inputs.repository
        ),
    };
    runner.warning(&format!("{whose}: {}", differences.join("; ")));
}

/// The creation settings asked for that the repository does not have (none when this
/// run created it). Exclusion filters compare as sets: ECR keeps no order.
fn settings_not_applied(repository: &Repository, inputs: &Inputs) -> Vec<String> {
    let mut differences = Vec::new();
    if repository.created {
        return differences;
    }
    let wanted = &inputs.repository_settings;
    if repository.tag_mutability != wanted.tag_mutability.as_str() {
        differences.push(format!(
            "image-tag-mutability is {} (asked for {})",
            repository.tag_mutability,
            wanted.tag_mutability.as_str()
        ));
    }
    let sorted = |filters: &[String]| {
        let mut sorted = filters.to_vec();
        sorted.sort();
        sorted
    };
    if sorted(&repository.tag_mutability_exclusions) != sorted(&wanted.tag_mutability_exclusions) {
        differences.push(format!(
            "image-tag-mutability-exclusions are {} (asked for {})",
            repository.exclusions_text(),
            filters_text(&wanted.tag_mutability_exclusions)
        ));
    }
    // A repository created on push scans as the registry's scanning configuration says.
    if repository.scan_on_push != wanted.scan_on_push && !repository.is_created_on_push() {
        differences.push(format!(
            "scan-on-push is {} (asked for {})",
            repository.scan_on_push, wanted.scan_on_push
        ));
    }
    if repository.encryption != wanted.encryption.type_str() {
        differences.push(format!(
            "encryption-type is {} (asked for {})",
            repository.encryption,
            wanted.encryption.type_str()
        ));
    }
    if repository.is_created_on_push() && !wanted.tags.is_empty() {
        differences.push("repository-tags are the template's".to_string());
    }
    differences
}

/// Applies the policies that were asked for, on pushing runs only. `repository` is the
/// state [`Ecr::ensure_repository`] returned: a repository ECR is yet to create on push
/// gets its template's policies, so none is written; each asked-for policy is reported as
/// [`PolicyOutcome::FromTemplate`] ([`warn_about_settings_not_applied`] has warned).
pub async fn apply_policies(
    ecr: &Ecr,
    inputs: &Inputs,
    repository: Option<&Repository>,
) -> anyhow::Result<Vec<(String, PolicyOutcome)>> {
    let mut outcomes = Vec::new();
    if !inputs.push {
        return Ok(outcomes);
    }
    let settings = &inputs.repository_settings;
    if let Some(prefix) = repository.and_then(|r| r.created_on_push.as_ref()) {
        return Ok(policies_from_template(inputs, prefix).0);
    }
    let registry_id = inputs.registry_id.as_deref();
    let outcome = |written: bool| {
        if written {
            PolicyOutcome::Applied
        } else {
            PolicyOutcome::Unchanged
        }
    };
    if let Some(policy) = &settings.lifecycle_policy {
        let written = ecr
            .apply_lifecycle_policy(&inputs.repository, registry_id, policy)
            .await?;
        outcomes.push(("Lifecycle policy".to_string(), outcome(written)));
    }
    if let Some(policy) = &settings.repository_policy {
        let written = ecr
            .apply_repository_policy(&inputs.repository, registry_id, policy)
            .await?;
        outcomes.push(("Repository policy".to_string(), outcome(written)));
    }
    Ok(outcomes)
}

/// The policy inputs given, reported as left to the template `prefix`, and the warning
/// that says so (none when no policy input is given).
fn policies_from_template(
    inputs: &Inputs,
    prefix: &str,
) -> (Vec<(String, PolicyOutcome)>, Option<String>) {
    let settings = &inputs.repository_settings;
    let given: Vec<(&str, &str)> = [
        (
            settings.lifecycle_policy.is_some(),
            "lifecycle-policy",
            "Lifecycle policy",
        ),
        (
            settings.repository_policy.is_some(),
            "repository-policy",
            "Repository policy",
        ),
    ]
    .into_iter()
    .filter(|(given, _, _)| *given)
    .map(|(_, input, row)| (input, row))
    .collect();
    if given.is_empty() {
        return (Vec::new(), None);
    }
    let named: Vec<String> = given
        .iter()
        .map(|(input, _)| format!("`{input}`"))
        .collect();
    let warning = format!(
        "{} not applied: repository `{}` is created on push by ECR from the repository \
         creation template `{prefix}`, whose policies it gets; the next run, once the \
         repository exists, applies {}",
        named.join(" and "),
        inputs.repository,
        if given.len() == 1 { "it" } else { "them" }
    );
    let outcomes = given
        .into_iter()
        .map(|(_, row)| {
            (
                row.to_string(),
                PolicyOutcome::FromTemplate(prefix.to_string()),
            )
        })
        .collect();
    (outcomes, Some(warning))
}

#[cfg(test)]
mod tests;
