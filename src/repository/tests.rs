use std::collections::BTreeMap;
use std::path::Path;

use super::tags::{decide, tags_to_look_up, Decision};
use super::*;
use crate::ecr::ExistingTag;
use crate::inputs::{ActionSpec, OnTagExists};

const OLD: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
const NEW: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000002";

fn inputs(pairs: &[(&str, &str)]) -> Inputs {
    let mut values: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    values
        .entry("repository".into())
        .or_insert_with(|| "team/app".into());
    Inputs::parse(&ActionSpec::embedded(), &values, Path::new("/ws")).unwrap()
}

fn repository(mutability: &str, filters: &[&str]) -> Repository {
    Repository {
        uri: "1.dkr.ecr.r.amazonaws.com/team/app".into(),
        registry_id: "1".into(),
        created: false,
        tag_mutability: mutability.into(),
        tag_mutability_exclusions: filters.iter().map(ToString::to_string).collect(),
        scan_on_push: true,
        encryption: "AES256".into(),
        created_on_push: None,
    }
}

fn existing(pairs: &[(&str, &str)]) -> Vec<ExistingTag> {
    pairs
        .iter()
        .map(|(tag, digest)| ExistingTag {
            tag: (*tag).into(),
            digest: (*digest).into(),
        })
        .collect()
}

fn present(tag: &str, digest: &str, mutability: &str) -> PresentTag {
    PresentTag {
        tag: tag.into(),
        digest: digest.into(),
        repository: "team/app".into(),
        mutability: mutability.into(),
    }
}

/// ECR is asked only about the tags that can stop the run: the immutable ones by the
/// repository's setting and filters, every tag for `skip`, none in a repository that
/// ECR is yet to create on push.
#[test]
fn only_tags_that_matter_are_looked_up() {
    let tags: Vec<String> = ["v1", "latest", "dev-3"].map(String::from).to_vec();
    let excluded = repository("IMMUTABLE_WITH_EXCLUSION", &["latest", "dev-*"]);
    assert_eq!(tags_to_look_up(&tags, OnTagExists::Fail, &excluded), ["v1"]);
    assert_eq!(tags_to_look_up(&tags, OnTagExists::Skip, &excluded), tags);
    let protected = repository("MUTABLE_WITH_EXCLUSION", &["v*"]);
    assert_eq!(
        tags_to_look_up(&tags, OnTagExists::Overwrite, &protected),
        ["v1"]
    );
    assert!(tags_to_look_up(&tags, OnTagExists::Fail, &repository("MUTABLE", &[])).is_empty());
    let mut on_push = repository("IMMUTABLE", &[]);
    on_push.created_on_push = Some("team".into());
    for rule in [OnTagExists::Fail, OnTagExists::Skip, OnTagExists::Overwrite] {
        assert!(tags_to_look_up(&tags, rule, &on_push).is_empty());
    }
}

/// `fail`: an existing tag that is immutable by the exclusion filters stops the run,
/// named with its digest and why it is immutable; one the filters exclude does not.
#[test]
fn fail_stops_on_an_existing_immutable_tag_only() {
    let repo = repository("IMMUTABLE_WITH_EXCLUSION", &["latest", "dev-*"]);
    let run = inputs(&[("tags", "v1,latest")]);
    let err = decide(&run, &repo, &existing(&[("v1", OLD), ("latest", OLD)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "tag `v1` (at {OLD}; IMMUTABLE_WITH_EXCLUSION, no exclusion filter matches it) \
             already exists in `team/app`, where it is immutable"
        )),
        "{err}"
    );
    assert!(!err.contains("`latest`"), "{err}");
    assert!(err.contains("push a new tag"), "{err}");
    // `latest` exists too, but is excluded: it simply moves.
    assert_eq!(
        decide(&run, &repo, &existing(&[("latest", OLD)])).unwrap(),
        Decision::Build(Vec::new())
    );
    assert_eq!(
        decide(&run, &repo, &[]).unwrap(),
        Decision::Build(Vec::new())
    );
}

/// An IMMUTABLE repository keeps the message it always had; several tags are listed.
#[test]
fn fail_in_an_immutable_repository_names_every_tag() {
    let repo = repository("IMMUTABLE", &[]);
    let run = inputs(&[("tags", "v1,v2,v3")]);
    let err = decide(&run, &repo, &existing(&[("v1", OLD), ("v3", NEW)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "tags `v1` (at {OLD}), `v3` (at {NEW}) already exist in the IMMUTABLE repository \
             `team/app` and cannot be overwritten"
        )),
        "{err}"
    );
    let err = decide(&run, &repo, &existing(&[("v2", OLD)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "tag `v2` (at {OLD}) already exists in the IMMUTABLE repository"
        )),
        "{err}"
    );
}

/// `MUTABLE_WITH_EXCLUSION` protects the tags its filters match, and says which filter.
#[test]
fn mutable_with_exclusion_protects_matching_tags() {
    let repo = repository("MUTABLE_WITH_EXCLUSION", &["release-*"]);
    let run = inputs(&[("tags", "release-1,latest")]);
    let err = decide(
        &run,
        &repo,
        &existing(&[("release-1", OLD), ("latest", OLD)]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("MUTABLE_WITH_EXCLUSION, the exclusion filter `release-*` matches it"),
        "{err}"
    );
    assert!(!err.contains("`latest`"), "{err}");
}

/// `overwrite` builds, carrying the existing immutable tags with their digests (and not
/// the mutable ones) for the push to check.
#[test]
fn overwrite_builds_and_carries_the_present_immutable_tags() {
    let repo = repository("IMMUTABLE_WITH_EXCLUSION", &["latest"]);
    let run = inputs(&[("tags", "v1,v2,latest"), ("on-tag-exists", "overwrite")]);
    let decision = decide(
        &run,
        &repo,
        &existing(&[("v1", OLD), ("v2", NEW), ("latest", OLD)]),
    )
    .unwrap();
    let why = "IMMUTABLE_WITH_EXCLUSION, no exclusion filter matches it";
    assert_eq!(
        decision,
        Decision::Build(vec![present("v1", OLD, why), present("v2", NEW, why)])
    );
}

/// `skip` is unchanged: every tag at one digest skips, in any repository; otherwise an
/// existing immutable tag fails with skip's own advice, and mutable ones build.
#[test]
fn skip_reuses_only_when_every_tag_is_at_one_image() {
    let run = inputs(&[("tags", "v1,latest"), ("on-tag-exists", "skip")]);
    let all = existing(&[("v1", OLD), ("latest", OLD)]);
    for setting in ["MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION"] {
        assert_eq!(
            decide(&run, &repository(setting, &["latest"]), &all).unwrap(),
            Decision::Skip(OLD.into()),
            "{setting}"
        );
    }
    let split = existing(&[("v1", OLD), ("latest", NEW)]);
    let err = decide(&run, &repository("IMMUTABLE", &[]), &split)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("every tag already exists at that one image"),
        "{err}"
    );
    assert_eq!(
        decide(&run, &repository("MUTABLE", &[]), &split).unwrap(),
        Decision::Build(Vec::new())
    );
    let partly = existing(&[("latest", OLD)]);
    assert_eq!(
        decide(
            &run,
            &repository("IMMUTABLE_WITH_EXCLUSION", &["latest"]),
            &partly
        )
        .unwrap(),
        Decision::Build(Vec::new())
    );
}

/// The push's check: present tags already at the new digest are left alone; one at
/// another image is an error naming the tag, both digests, the repository, why the tag
/// is immutable and what to do, whatever its place in the list.
#[test]
fn check_present_keeps_same_digest_tags_and_refuses_others() {
    let why = "IMMUTABLE_WITH_EXCLUSION, no exclusion filter matches it";
    assert_eq!(check_present(&[], NEW).unwrap(), Vec::<String>::new());
    assert_eq!(
        check_present(
            &[present("v1", NEW, why), present("v2", NEW, "IMMUTABLE")],
            NEW
        )
        .unwrap(),
        ["v1", "v2"]
    );
    let err = check_present(&[present("v1", NEW, why), present("v2", OLD, why)], NEW)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "tag `v2` already exists at {OLD} in `team/app`, where it is immutable ({why}), \
             and this build is {NEW}: push a new tag, or make the build reproducible \
             (SOURCE_DATE_EPOCH) so a re-run makes the same digest"
        )
    );
}

/// The creation settings an existing repository does not have are listed, exclusion
/// filters compared as sets; none for a repository this run created.
#[test]
fn settings_not_applied_compare_filters_as_sets() {
    let run = inputs(&[
        ("image-tag-mutability", "IMMUTABLE_WITH_EXCLUSION"),
        ("image-tag-mutability-exclusions", "latest, dev-*"),
    ]);
    let same = repository("IMMUTABLE_WITH_EXCLUSION", &["dev-*", "latest"]);
    assert!(settings_not_applied(&same, &run).is_empty());
    let other = repository("IMMUTABLE_WITH_EXCLUSION", &["latest"]);
    assert_eq!(
        settings_not_applied(&other, &run),
        ["image-tag-mutability-exclusions are `latest` (asked for `latest`, `dev-*`)"]
    );
    let plain = repository("IMMUTABLE", &[]);
    assert_eq!(
        settings_not_applied(&plain, &run),
        [
            "image-tag-mutability is IMMUTABLE (asked for IMMUTABLE_WITH_EXCLUSION)",
            "image-tag-mutability-exclusions are none (asked for `latest`, `dev-*`)"
        ]
    );
    let mut created = plain;
    created.created = true;
    assert!(settings_not_applied(&created, &run).is_empty());
}

/// A repository created on push has the template's settings: they are compared (scan on
/// push aside, which the registry's scanning configuration decides), and resource tags
/// asked for are the template's.
#[test]
fn settings_not_applied_on_push_name_the_template_settings() {
    let run = inputs(&[("repository-tags", "team=platform")]);
    let mut on_push = repository("IMMUTABLE", &[]);
    on_push.scan_on_push = false;
    on_push.created_on_push = Some("team".into());
    assert_eq!(
        settings_not_applied(&on_push, &run),
        [
            "image-tag-mutability is IMMUTABLE (asked for MUTABLE)",
            "repository-tags are the template's"
        ]
    );
}

/// Policies on a repository created on push are the template's: each policy input given
/// is reported so, with one warning naming the inputs and the template.
#[test]
fn policies_on_a_repository_created_on_push_are_the_templates() {
    let none = inputs(&[]);
    assert_eq!(policies_from_template(&none, "team"), (Vec::new(), None));
    let both = inputs(&[
        ("lifecycle-policy", r#"{"rules":[{"rulePriority":1}]}"#),
        ("repository-policy", r#"{"Statement":[]}"#),
    ]);
    let (outcomes, warning) = policies_from_template(&both, "team");
    assert_eq!(
        outcomes,
        [
            (
                "Lifecycle policy".to_string(),
                PolicyOutcome::FromTemplate("team".into())
            ),
            (
                "Repository policy".to_string(),
                PolicyOutcome::FromTemplate("team".into())
            ),
        ]
    );
    let warning = warning.unwrap();
    assert!(
        warning.starts_with(
            "`lifecycle-policy` and `repository-policy` not applied: repository `team/app` is \
             created on push by ECR from the repository creation template `team`"
        ),
        "{warning}"
    );
}
