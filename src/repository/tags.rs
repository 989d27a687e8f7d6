//! Tags that already exist (`on-tag-exists`), decided before the build, per tag: a tag is
//! immutable or not by the repository's setting and exclusion filters
//! ([`Repository::tag_is_immutable`]). Only an existing immutable tag can stop a run:
//! `fail` stops before the build; `overwrite` builds and hands the push the existing
//! immutable tags ([`TagPlan::Build`]'s `present`), which it leaves alone when they
//! already name the new image and refuses, before moving any tag, when they do not
//! ([`check_present`]).

use anyhow::bail;

use crate::ecr::{Ecr, ExistingTag, Repository};
use crate::engine::ImageStore;
use crate::inputs::{Inputs, OnTagExists};

/// What to do about the requested tags, decided before the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagPlan {
    /// Build and push. `present`: requested tags that already exist where they are
    /// immutable (`on-tag-exists: overwrite` only; empty otherwise), for
    /// [`check_present`] once the new image's digest is known.
    Build { present: Vec<PresentTag> },
    /// Every tag exists at this one image: nothing to build or push.
    Skip {
        digest: String,
        image_id: Option<String>,
    },
}

/// A requested tag that exists in ECR where it cannot move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentTag {
    pub tag: String,
    /// The image it names now.
    pub digest: String,
    /// The repository's name, for messages.
    pub repository: String,
    /// Why it is immutable: `IMMUTABLE`, or the setting and what its exclusion filters
    /// say of this tag ([`Repository::mutability_of`]).
    pub mutability: String,
}

/// The push's check of the present tags against the image it is about to tag (`digest`,
/// its manifest's): the tags already at `digest`, whose manifest `PUT` to skip (ECR
/// refuses it even for the same image); an error naming the first tag at another image,
/// to be raised before any tag moves.
pub fn check_present(present: &[PresentTag], digest: &str) -> anyhow::Result<Vec<String>> {
    if let Some(other) = present.iter().find(|p| p.digest != digest) {
        bail!(
            "tag `{}` already exists at {} in `{}`, where it is immutable ({}), and this build \
             is {digest}: push a new tag, or make the build reproducible (SOURCE_DATE_EPOCH) \
             so a re-run makes the same digest",
            other.tag,
            other.digest,
            other.repository,
            other.mutability
        );
    }
    Ok(present.iter().map(|p| p.tag.clone()).collect())
}

/// `tags` without those in `keep` (tags already at the image, which ECR would refuse to
/// put again where they are immutable).
pub fn without(tags: &[String], keep: &[String]) -> Vec<String> {
    tags.iter().filter(|t| !keep.contains(t)).cloned().collect()
}

/// Decides, before anything is built, what to do about tags that already exist. ECR is
/// asked only about the tags that matter: the immutable ones, or every tag for `skip`;
/// a repository that ECR will create on push holds none. A skipped image's ID is what
/// the engine's `docker inspect` would say of it once pulled: its config digest on the
/// classic store, its manifest digest on the containerd store.
pub async fn plan_tags(
    ecr: &Ecr,
    inputs: &Inputs,
    repository: &Repository,
    store: ImageStore,
) -> anyhow::Result<TagPlan> {
    let wanted = tags_to_look_up(&inputs.tags, inputs.on_tag_exists, repository);
    if wanted.is_empty() {
        return Ok(TagPlan::Build {
            present: Vec::new(),
        });
    }
    let existing = ecr
        .existing_tags(&inputs.repository, inputs.registry_id.as_deref(), &wanted)
        .await?;
    match decide(inputs, repository, &existing)? {
        Decision::Build(present) => Ok(TagPlan::Build { present }),
        Decision::Skip(digest) => {
            let image_id = match store {
                ImageStore::Classic => {
                    ecr.image_config_digest(
                        &inputs.repository,
                        inputs.registry_id.as_deref(),
                        &digest,
                    )
                    .await?
                }
                ImageStore::Containerd => Some(digest.clone()),
            };
            Ok(TagPlan::Skip { digest, image_id })
        }
    }
}

/// The plan of a run that builds although every tag exists (another registry of the
/// push lacks the image): the tags that exist where they are immutable stay if the build
/// makes the same image, and the push stops before any tag moves if it does not.
pub async fn plan_tags_to_build(
    ecr: &Ecr,
    inputs: &Inputs,
    repository: &Repository,
    store: ImageStore,
) -> anyhow::Result<Vec<PresentTag>> {
    let overwrite = Inputs {
        on_tag_exists: OnTagExists::Overwrite,
        ..inputs.clone()
    };
    match plan_tags(ecr, &overwrite, repository, store).await? {
        TagPlan::Build { present } => Ok(present),
        TagPlan::Skip { .. } => Ok(Vec::new()),
    }
}

/// The tags whose existence matters: every tag for `skip`, else the immutable ones; none
/// in a repository that is yet to be created.
pub(crate) fn tags_to_look_up(
    tags: &[String],
    on_tag_exists: OnTagExists,
    repository: &Repository,
) -> Vec<String> {
    if repository.is_created_on_push() {
        return Vec::new();
    }
    tags.iter()
        .filter(|tag| on_tag_exists == OnTagExists::Skip || repository.tag_is_immutable(tag))
        .cloned()
        .collect()
}

/// [`plan_tags`]'s decision, from what ECR said exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Build(Vec<PresentTag>),
    Skip(String),
}

/// The rules of `on-tag-exists`, given the requested tags that exist (`existing`).
pub(crate) fn decide(
    inputs: &Inputs,
    repository: &Repository,
    existing: &[ExistingTag],
) -> anyhow::Result<Decision> {
    if let (OnTagExists::Skip, Some(first)) = (inputs.on_tag_exists, existing.first()) {
        let every_tag_at_one_image = inputs.tags.iter().all(|tag| {
            existing
                .iter()
                .any(|e| &e.tag == tag && e.digest == first.digest)
        });
        if every_tag_at_one_image {
            return Ok(Decision::Skip(first.digest.clone()));
        }
    }
    let present: Vec<PresentTag> = existing
        .iter()
        .filter(|e| repository.tag_is_immutable(&e.tag))
        .map(|e| PresentTag {
            tag: e.tag.clone(),
            digest: e.digest.clone(),
            repository: inputs.repository.clone(),
            mutability: repository.mutability_of(&e.tag),
        })
        .collect();
    if present.is_empty() {
        return Ok(Decision::Build(Vec::new()));
    }
    if inputs.on_tag_exists == OnTagExists::Overwrite {
        let listed: Vec<String> = present
            .iter()
            .map(|p| format!("{} (at {})", p.tag, p.digest))
            .collect();
        tracing::info!(
            "immutable tag(s) {} already exist: building; they stay where they are if this \
             build makes the same image, else the push stops before any tag moves",
            listed.join(", ")
        );
        return Ok(Decision::Build(present));
    }
    let advice = match inputs.on_tag_exists {
        OnTagExists::Skip => {
            "`on-tag-exists: skip` reuses an image only when every tag already exists at \
             that one image; push new tags"
        }
        OnTagExists::Fail | OnTagExists::Overwrite => {
            "push a new tag, set `on-tag-exists: skip` to reuse the existing image, or \
             `overwrite` to build anyway and keep the tag if the build makes the same image"
        }
    };
    bail!(
        "{}: {advice}",
        refusal(&inputs.repository, repository, &present)
    )
}

/// "tag `v1` (at sha256:…) already exists in the IMMUTABLE repository `app` and cannot be
/// overwritten", or for a `*_WITH_EXCLUSION` repository each tag with its reason.
fn refusal(name: &str, repository: &Repository, present: &[PresentTag]) -> String {
    let (noun, verb) = if present.len() == 1 {
        ("tag", "exists")
    } else {
        ("tags", "exist")
    };
    if repository.tag_mutability == "IMMUTABLE" {
        let listed: Vec<String> = present
            .iter()
            .map(|p| format!("`{}` (at {})", p.tag, p.digest))
            .collect();
        return format!(
            "{noun} {} already {verb} in the IMMUTABLE repository `{name}` and cannot be \
             overwritten",
            listed.join(", ")
        );
    }
    let listed: Vec<String> = present
        .iter()
        .map(|p| format!("`{}` (at {}; {})", p.tag, p.digest, p.mutability))
        .collect();
    format!(
        "{noun} {} already {verb} in `{name}`, where {} immutable, and cannot be overwritten",
        listed.join(", "),
        if present.len() == 1 {
            "it is"
        } else {
            "they are"
        }
    )
}
