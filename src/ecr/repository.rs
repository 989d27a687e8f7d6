//! A repository as ECR describes it (`DescribeRepositories`, `CreateRepository`), or as
//! it will be once ECR creates it on push, and its tag mutability per tag, as ECR decides
//! it: `IMMUTABLE` and `MUTABLE` for every tag; `IMMUTABLE_WITH_EXCLUSION` and
//! `MUTABLE_WITH_EXCLUSION` turn the setting around for a tag that one of the
//! repository's exclusion filters matches. A filter is ECR's `WILDCARD` type: `*` matches
//! any run of characters (none too), everything else itself, and the filter matches the
//! whole tag (`dev-*` matches `dev-1` and `dev-`, not `x-dev-1`; `latest` matches only
//! `latest`).

use aws_sdk_ecr::types::{
    ImageScanningConfiguration, ImageTagMutabilityExclusionFilter,
    ImageTagMutabilityExclusionFilterType,
};

/// The repository as it is after [`super::Ecr::ensure_repository`], or as ECR will create it on
/// the first push ([`Repository::created_on_push`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Empty for a repository ECR has yet to create on push.
    pub uri: String,
    pub registry_id: String,
    /// Created by this run (`CreateRepository`).
    pub created: bool,
    /// ECR's setting: `MUTABLE`, `IMMUTABLE`, `MUTABLE_WITH_EXCLUSION` or
    /// `IMMUTABLE_WITH_EXCLUSION`; per tag, see [`Repository::tag_is_immutable`].
    pub tag_mutability: String,
    /// The `WILDCARD` exclusion filters of a `*_WITH_EXCLUSION` setting.
    pub tag_mutability_exclusions: Vec<String>,
    pub scan_on_push: bool,
    pub encryption: String,
    /// The repository does not exist yet: ECR creates it at the first push from the
    /// repository creation template with this prefix (`CREATE_ON_PUSH`), whose settings
    /// the fields above are.
    pub created_on_push: Option<String>,
}

impl Repository {
    /// Whether the repository is yet to be created on push: nothing exists in it.
    pub fn is_created_on_push(&self) -> bool {
        self.created_on_push.is_some()
    }
}

/// `image-tag-mutability-exclusions` as `CreateRepository` takes them (`WILDCARD`);
/// `None` when there are none, so ECR sees no empty list.
pub(super) fn exclusion_filters(
    filters: &[String],
) -> anyhow::Result<Option<Vec<ImageTagMutabilityExclusionFilter>>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let built = filters
        .iter()
        .map(|filter| {
            ImageTagMutabilityExclusionFilter::builder()
                .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                .filter(filter)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(built))
}

/// The action's view of ECR's description of a repository.
pub(super) fn to_repository(repo: &aws_sdk_ecr::types::Repository, created: bool) -> Repository {
    Repository {
        uri: repo.repository_uri().unwrap_or_default().to_string(),
        registry_id: repo.registry_id().unwrap_or_default().to_string(),
        created,
        tag_mutability: repo
            .image_tag_mutability()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
        tag_mutability_exclusions: repo
            .image_tag_mutability_exclusion_filters()
            .iter()
            .map(|f| f.filter().to_string())
            .collect(),
        created_on_push: None,
        scan_on_push: repo
            .image_scanning_configuration()
            .is_some_and(ImageScanningConfiguration::scan_on_push),
        encryption: repo.encryption_configuration().map_or_else(
            || "AES256".to_string(),
            |e| e.encryption_type().as_str().to_string(),
        ),
    }
}

/// Whether `filter` (a `WILDCARD` exclusion filter) matches the whole of `tag`.
pub fn wildcard_matches(filter: &str, tag: &str) -> bool {
    let pattern = filter.as_bytes();
    let text = tag.as_bytes();
    // Greedy matching with backtracking to the last `*`: linear in practice, and at
    // worst quadratic for ECR's 128-character filters and 300-character tags.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let the last `*` take one more character, and try again after it.
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl Repository {
    /// The first of the repository's exclusion filters that matches `tag`, if any.
    pub fn matching_exclusion(&self, tag: &str) -> Option<&str> {
        self.tag_mutability_exclusions
            .iter()
            .map(String::as_str)
            .find(|filter| wildcard_matches(filter, tag))
    }

    /// Whether ECR refuses to move `tag` once it exists in this repository. An unknown
    /// setting (one newer than this action) counts as mutable: the registry then has the
    /// last word, and refuses the push with `TAG_INVALID`.
    pub fn tag_is_immutable(&self, tag: &str) -> bool {
        match self.tag_mutability.as_str() {
            "IMMUTABLE" => true,
            "IMMUTABLE_WITH_EXCLUSION" => self.matching_exclusion(tag).is_none(),
            "MUTABLE_WITH_EXCLUSION" => self.matching_exclusion(tag).is_some(),
            _ => false,
        }
    }

    /// Why `tag` is (or is not) immutable here, for messages: `IMMUTABLE`,
    /// `IMMUTABLE_WITH_EXCLUSION, no exclusion filter matches it`, `MUTABLE_WITH_EXCLUSION,
    /// the exclusion filter `release-*` matches it`.
    pub fn mutability_of(&self, tag: &str) -> String {
        let setting = &self.tag_mutability;
        if !setting.ends_with("_WITH_EXCLUSION") {
            return setting.clone();
        }
        match self.matching_exclusion(tag) {
            Some(filter) => format!("{setting}, the exclusion filter `{filter}` matches it"),
            None => format!("{setting}, no exclusion filter matches it"),
        }
    }

    /// The exclusion filters as a message shows them: `` `latest`, `dev-*` `` or `none`.
    pub fn exclusions_text(&self) -> String {
        filters_text(&self.tag_mutability_exclusions)
    }
}

/// Filters as a message shows them: `` `latest`, `dev-*` ``, or `none`.
pub fn filters_text(filters: &[String]) -> String {
    if filters.is_empty() {
        return "none".to_string();
    }
    filters
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository(mutability: &str, filters: &[&str]) -> Repository {
        Repository {
            uri: "1.dkr.ecr.r.amazonaws.com/app".into(),
            registry_id: "1".into(),
            created: false,
            tag_mutability: mutability.into(),
            tag_mutability_exclusions: filters.iter().map(ToString::to_string).collect(),
            scan_on_push: false,
            encryption: "AES256".into(),
            created_on_push: None,
        }
    }

    /// `*` matches any run of characters, none included, anywhere in the filter; the
    /// filter matches the whole tag; every other character matches only itself (`.` is
    /// no regular-expression dot, and case counts).
    #[test]
    fn wildcards_match_whole_tags() {
        let cases: &[(&str, &str, bool)] = &[
            ("latest", "latest", true),
            ("latest", "latest-1", false),
            ("latest", "old-latest", false),
            ("latest", "Latest", false),
            ("dev-*", "dev-", true),
            ("dev-*", "dev-feature.x", true),
            ("dev-*", "x-dev-1", false),
            ("dev-*", "dev", false),
            ("*-rc", "1.2.3-rc", true),
            ("*-rc", "1.2.3-rc.1", false),
            ("*", "", true),
            ("*", "anything_at-all.1", true),
            ("*prod*", "prod", true),
            ("*prod*", "repo-prod-repo", true),
            ("*prod*", "pro", false),
            ("prod*repo", "prodrepo", true),
            ("prod*repo", "prod-repo", true),
            ("prod*repo", "repo-prod-repo", false),
            ("v*.*.*", "v1.2.3", true),
            ("v*.*.*", "v1.2", false),
            ("v1.*", "v1x2", false),
            ("a**b", "ab", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaa", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (filter, tag, expected) in cases {
            assert_eq!(
                wildcard_matches(filter, tag),
                *expected,
                "`{filter}` against `{tag}`"
            );
        }
    }

    /// ECR's documented example (the CDK's): `IMMUTABLE_WITH_EXCLUSION` with `dev-*` and
    /// `test-*` keeps every tag immutable except those starting with `dev-` or `test-`.
    #[test]
    fn immutable_with_exclusion_frees_matching_tags() {
        let repo = repository("IMMUTABLE_WITH_EXCLUSION", &["dev-*", "test-*"]);
        for tag in ["v1", "latest", "prod-dev-1", "dev", "1.0.0"] {
            assert!(repo.tag_is_immutable(tag), "{tag}");
        }
        for tag in ["dev-1", "test-", "test-feature.x"] {
            assert!(!repo.tag_is_immutable(tag), "{tag}");
        }
        assert_eq!(
            repo.mutability_of("v1"),
            "IMMUTABLE_WITH_EXCLUSION, no exclusion filter matches it"
        );
        assert_eq!(
            repo.mutability_of("test-2"),
            "IMMUTABLE_WITH_EXCLUSION, the exclusion filter `test-*` matches it"
        );
    }

    /// `MUTABLE_WITH_EXCLUSION` is the other way round: only matching tags are immutable.
    #[test]
    fn mutable_with_exclusion_protects_matching_tags() {
        let repo = repository("MUTABLE_WITH_EXCLUSION", &["v*.*.*", "stable"]);
        for tag in ["v1.2.3", "stable"] {
            assert!(repo.tag_is_immutable(tag), "{tag}");
        }
        for tag in ["latest", "v1.2", "stable-1", "main"] {
            assert!(!repo.tag_is_immutable(tag), "{tag}");
        }
    }

    /// ECR's description arrives with its exclusion filters; the filters go to
    /// `CreateRepository` as `WILDCARD` ones, and none as no list at all.
    #[test]
    fn filters_are_read_from_and_sent_to_ecr() {
        let filter = |f: &str| {
            ImageTagMutabilityExclusionFilter::builder()
                .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                .filter(f)
                .build()
                .unwrap()
        };
        let described = aws_sdk_ecr::types::Repository::builder()
            .repository_uri("1.dkr.ecr.r.amazonaws.com/app")
            .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::from(
                "IMMUTABLE_WITH_EXCLUSION",
            ))
            .image_tag_mutability_exclusion_filters(filter("latest"))
            .image_tag_mutability_exclusion_filters(filter("dev-*"))
            .build();
        let repo = to_repository(&described, false);
        assert_eq!(repo.tag_mutability, "IMMUTABLE_WITH_EXCLUSION");
        assert_eq!(repo.tag_mutability_exclusions, ["latest", "dev-*"]);
        assert_eq!(repo.created_on_push, None);
        assert!(!repo.tag_is_immutable("dev-2") && repo.tag_is_immutable("v2"));
        let sent = exclusion_filters(&["latest".into(), "dev-*".into()])
            .unwrap()
            .unwrap();
        assert_eq!(sent, [filter("latest"), filter("dev-*")]);
        assert_eq!(exclusion_filters(&[]).unwrap(), None);
    }

    /// IMMUTABLE and MUTABLE say it for every tag, whatever filters are listed; a setting
    /// this action does not know counts as mutable (the registry decides at the push).
    #[test]
    fn plain_settings_apply_to_every_tag() {
        let immutable = repository("IMMUTABLE", &[]);
        let mutable = repository("MUTABLE", &["latest"]);
        let unknown = repository("SOMETIMES_MUTABLE", &[]);
        for tag in ["latest", "v1", "dev-1"] {
            assert!(immutable.tag_is_immutable(tag));
            assert!(!mutable.tag_is_immutable(tag));
            assert!(!unknown.tag_is_immutable(tag));
        }
        assert_eq!(immutable.mutability_of("v1"), "IMMUTABLE");
        assert_eq!(immutable.exclusions_text(), "none");
        assert_eq!(mutable.exclusions_text(), "`latest`");
    }
}
