//! What a run does to the repository besides pushing: warnings about creation settings
//! that an existing repository keeps, the policies applied while the image builds, and
//! the decision about tags that already exist (`on-tag-exists`).

use anyhow::bail;

use crate::ecr::{Ecr, Repository};
use crate::engine::ImageStore;
use crate::inputs::{Inputs, OnTagExists};
use crate::report::PolicyOutcome;
use crate::runner::Runner;

/// What to do about the requested tags, decided before the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagPlan {
    Build,
    /// Every tag exists at this one image: nothing to build or push.
    Skip {
        digest: String,
        image_id: Option<String>,
    },
}

/// Decides, before anything is built, what to do about tags that already exist. Only an
/// IMMUTABLE repository can refuse a tag, so only there (or for `skip`) is ECR asked. A
/// skipped image's ID is what the engine's `docker inspect` would say of it once pulled:
/// its config digest on the classic store, its manifest digest on the containerd store.
pub async fn plan_tags(
    ecr: &Ecr,
    inputs: &Inputs,
    repository: &Repository,
    store: ImageStore,
) -> anyhow::Result<TagPlan> {
    let immutable = repository.tag_mutability.starts_with("IMMUTABLE");
    if !immutable && inputs.on_tag_exists != OnTagExists::Skip {
        return Ok(TagPlan::Build);
    }
    let existing = ecr
        .existing_tags(
            &inputs.repository,
            inputs.registry_id.as_deref(),
            &inputs.tags,
        )
        .await?;
    let Some(first) = existing.first() else {
        return Ok(TagPlan::Build);
    };
    let every_tag_at_one_image =
        existing.len() == inputs.tags.len() && existing.iter().all(|e| e.digest == first.digest);
    if inputs.on_tag_exists == OnTagExists::Skip && every_tag_at_one_image {
        let image_id = match store {
            ImageStore::Classic => {
                ecr.image_config_digest(
                    &inputs.repository,
                    inputs.registry_id.as_deref(),
                    &first.digest,
                )
                .await?
            }
            ImageStore::Containerd => Some(first.digest.clone()),
        };
        return Ok(TagPlan::Skip {
            digest: first.digest.clone(),
            image_id,
        });
    }
    if !immutable {
        return Ok(TagPlan::Build);
    }
    let listed: Vec<String> = existing
        .iter()
        .map(|e| format!("`{}` (at {})", e.tag, e.digest))
        .collect();
    let advice = match inputs.on_tag_exists {
        OnTagExists::Skip => "`on-tag-exists: skip` reuses an image only when every tag already exists at that one image; push new tags",
        OnTagExists::Fail | OnTagExists::Overwrite => "push a new tag, or set `on-tag-exists: skip` to reuse the existing image",
    };
    bail!(
        "tag {} already exists in the IMMUTABLE repository `{}` and cannot be overwritten: {advice}",
        listed.join(", "),
        inputs.repository
    )
}

/// Creation settings do not change an existing repository; say so when they differ, so
/// nobody believes a repository is IMMUTABLE because the workflow says it.
pub fn warn_about_settings_not_applied(repository: &Repository, inputs: &Inputs, runner: &Runner) {
    if repository.created {
        return;
    }
    let wanted = &inputs.repository_settings;
    let mut differences = Vec::new();
    if repository.tag_mutability != wanted.tag_mutability.as_str() {
        differences.push(format!(
            "image-tag-mutability is {} (asked for {})",
            repository.tag_mutability,
            wanted.tag_mutability.as_str()
        ));
    }
    if repository.scan_on_push != wanted.scan_on_push {
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
    if !differences.is_empty() {
        runner.warning(&format!(
            "repository `{}` already exists and keeps its settings, which apply only on creation: {}",
            inputs.repository,
            differences.join("; ")
        ));
    }
}

/// Applies the policies that were asked for, on pushing runs only.
pub async fn apply_policies(
    ecr: &Ecr,
    inputs: &Inputs,
) -> anyhow::Result<Vec<(String, PolicyOutcome)>> {
    let mut outcomes = Vec::new();
    if !inputs.push {
        return Ok(outcomes);
    }
    let settings = &inputs.repository_settings;
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
