//! Repository creation templates for `CREATE_ON_PUSH` (ECR, December 2025): when the
//! caller may not call `CreateRepository`, ECR may still create the repository at the
//! first push, with a template's settings. A template's prefix `p` covers every name
//! that starts with `p/` (ECR always assumes the `/`: `prod` covers `prod/app`, not
//! `production` nor `prod` itself); `ROOT` covers every name no other template covers.
//! When several prefixes cover a name, the longest (the most specific) is taken.
//! (API reference, `CreateRepositoryCreationTemplate`'s `prefix`; ECR User Guide,
//! repository creation templates.)

use anyhow::Context as _;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::RctAppliedFor;

use super::{describe, Ecr, Repository};

/// The prefix of the template that covers every name no other template covers.
pub const ROOT: &str = "ROOT";

/// What the action needs of one repository creation template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreationTemplate {
    pub prefix: String,
    /// Whether `appliedFor` lists `CREATE_ON_PUSH`.
    pub create_on_push: bool,
    /// `MUTABLE` when the template leaves it out, as ECR does.
    pub tag_mutability: String,
    pub tag_mutability_exclusions: Vec<String>,
    /// `AES256` when the template leaves it out.
    pub encryption: String,
}

/// The template that creates `name` on push: the longest `CREATE_ON_PUSH` prefix `p`
/// with `name` starting with `p/`, else a `CREATE_ON_PUSH` `ROOT` template.
pub fn covering_template<'a>(
    name: &str,
    templates: &'a [CreationTemplate],
) -> Option<&'a CreationTemplate> {
    templates
        .iter()
        .filter(|t| t.create_on_push && t.prefix != ROOT && covers(&t.prefix, name))
        .max_by_key(|t| t.prefix.trim_end_matches('/').len())
        .or_else(|| {
            templates
                .iter()
                .find(|t| t.create_on_push && t.prefix == ROOT)
        })
}

/// Whether the (non-`ROOT`) prefix covers `name`: ECR appends the `/` itself.
fn covers(prefix: &str, name: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    !prefix.is_empty()
        && name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The prefixes a name could use, for advice: `team/app` → `team`, or `ROOT`.
pub fn suggested_prefix(name: &str) -> String {
    name.rsplit_once('/')
        .map_or_else(|| ROOT.to_string(), |(namespace, _)| namespace.to_string())
}

fn from_sdk(template: &aws_sdk_ecr::types::RepositoryCreationTemplate) -> CreationTemplate {
    CreationTemplate {
        prefix: template.prefix().unwrap_or_default().to_string(),
        create_on_push: template
            .applied_for()
            .contains(&RctAppliedFor::CreateOnPush),
        tag_mutability: template
            .image_tag_mutability()
            .map_or_else(|| "MUTABLE".to_string(), |m| m.as_str().to_string()),
        tag_mutability_exclusions: template
            .image_tag_mutability_exclusion_filters()
            .iter()
            .map(|f| f.filter().to_string())
            .collect(),
        encryption: template.encryption_configuration().map_or_else(
            || "AES256".to_string(),
            |e| e.encryption_type().as_str().to_string(),
        ),
    }
}

impl Ecr {
    /// Every repository creation template of the caller's registry (all pages), and that
    /// registry's account. `Err` carries ECR's refusal as [`describe`] renders it.
    async fn creation_templates(&self) -> Result<(Option<String>, Vec<CreationTemplate>), String> {
        let mut templates = Vec::new();
        let mut registry = None;
        let mut next_token: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_repository_creation_templates()
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| describe(&e))?;
            registry = registry.or_else(|| page.registry_id().map(ToString::to_string));
            templates.extend(page.repository_creation_templates().iter().map(from_sdk));
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                _ => break,
            }
        }
        Ok((registry, templates))
    }

    /// `CreateRepository` was refused with `denied` (`AccessDeniedException: …`): the run
    /// goes on when a `CREATE_ON_PUSH` template covers `name`, with a repository that
    /// says so (its tag mutability from the template); otherwise the error names both
    /// ways out.
    pub(super) async fn created_on_push(
        &self,
        name: &str,
        registry_id: Option<&str>,
        denied: &str,
    ) -> anyhow::Result<Repository> {
        let prefix = suggested_prefix(name);
        let ways_out = format!(
            "allow the IAM action `ecr:CreateRepository` on repository `{name}`, create the \
             repository beforehand, or create a repository creation template applied for \
             `CREATE_ON_PUSH` whose prefix covers it (`{prefix}`{root})",
            root = if prefix == ROOT { "" } else { " or `ROOT`" }
        );
        let (registry, templates) = match self.creation_templates().await {
            Ok(found) => found,
            Err(refused) => anyhow::bail!(
                "cannot create repository `{name}`: {denied}; and the repository creation \
                 templates that could create it on push cannot be read either \
                 (DescribeRepositoryCreationTemplates: {refused}): {ways_out}; with a \
                 template, also allow `ecr:DescribeRepositoryCreationTemplates` so this step \
                 can see it"
            ),
        };
        let other_registry = registry_id.filter(|id| registry.as_deref().is_some_and(|r| r != *id));
        let found = if other_registry.is_some() {
            None
        } else {
            covering_template(name, &templates)
        };
        let Some(template) = found else {
            let seen = if let Some(id) = other_registry {
                format!(
                    "the templates this step can read are those of account {}, not of \
                     registry {id}",
                    registry.as_deref().unwrap_or("?")
                )
            } else {
                let prefixes: Vec<String> = templates
                    .iter()
                    .filter(|t| t.create_on_push)
                    .map(|t| format!("`{}`", t.prefix))
                    .collect();
                if prefixes.is_empty() {
                    "no repository creation template is applied for `CREATE_ON_PUSH`".to_string()
                } else {
                    format!(
                        "no repository creation template applied for `CREATE_ON_PUSH` covers \
                         it (their prefixes: {})",
                        prefixes.join(", ")
                    )
                }
            };
            anyhow::bail!("cannot create repository `{name}`: {denied}; and {seen}: {ways_out}");
        };
        tracing::info!(
            "repository {name} does not exist and this role may not create it, but ECR will \
             create it on push from the repository creation template `{}` ({}{})",
            template.prefix,
            template.tag_mutability,
            if template.tag_mutability_exclusions.is_empty() {
                String::new()
            } else {
                format!(
                    ", exclusions {}",
                    super::repository::filters_text(&template.tag_mutability_exclusions)
                )
            }
        );
        let registry_id = registry_id
            .map(ToString::to_string)
            .or(registry)
            .context("DescribeRepositoryCreationTemplates named no registry")?;
        Ok(Repository {
            uri: String::new(),
            registry_id,
            created: false,
            tag_mutability: template.tag_mutability.clone(),
            tag_mutability_exclusions: template.tag_mutability_exclusions.clone(),
            // The registry's scanning configuration decides; the scan gate starts a scan
            // itself when none is running.
            scan_on_push: false,
            encryption: template.encryption.clone(),
            created_on_push: Some(template.prefix.clone()),
        })
    }
}

/// Whether `CreateRepository`'s refusal is one a template can get around.
pub(super) fn is_access_denied<E: ProvideErrorMetadata>(err: &E) -> bool {
    matches!(err.code(), Some("AccessDeniedException" | "AccessDenied"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(prefix: &str, create_on_push: bool) -> CreationTemplate {
        CreationTemplate {
            prefix: prefix.into(),
            create_on_push,
            tag_mutability: "IMMUTABLE".into(),
            tag_mutability_exclusions: Vec::new(),
            encryption: "AES256".into(),
        }
    }

    fn prefix_for(name: &str, templates: &[CreationTemplate]) -> Option<String> {
        covering_template(name, templates).map(|t| t.prefix.clone())
    }

    /// A prefix covers the names under it and ECR adds the `/`: `prod` covers
    /// `prod/app` and `prod/team/app`, not `prod`, `production/app` or `x/prod/app`.
    #[test]
    fn a_prefix_covers_the_names_under_it() {
        let templates = [template("prod", true)];
        for name in ["prod/app", "prod/team/app"] {
            assert_eq!(
                prefix_for(name, &templates).as_deref(),
                Some("prod"),
                "{name}"
            );
        }
        for name in ["prod", "production/app", "x/prod/app", "app"] {
            assert_eq!(prefix_for(name, &templates), None, "{name}");
        }
        // A prefix written with the `/` ECR assumes works the same.
        assert_eq!(
            prefix_for("prod/app", &[template("prod/", true)]).as_deref(),
            Some("prod/")
        );
    }

    /// The longest covering prefix wins, in any order; `ROOT` covers what no other
    /// template covers, including names without a namespace.
    #[test]
    fn the_longest_prefix_wins_and_root_catches_the_rest() {
        let templates = [
            template("ROOT", true),
            template("prod/team", true),
            template("prod", true),
            template("dev", true),
        ];
        for (name, prefix) in [
            ("prod/team/app", "prod/team"),
            ("prod/team2/app", "prod"),
            ("prod/app", "prod"),
            ("dev/x/y", "dev"),
            ("app", "ROOT"),
            ("other/app", "ROOT"),
            ("prod", "ROOT"),
        ] {
            assert_eq!(
                prefix_for(name, &templates).as_deref(),
                Some(prefix),
                "{name}"
            );
        }
        let mut reversed = templates.to_vec();
        reversed.reverse();
        assert_eq!(
            prefix_for("prod/team/app", &reversed).as_deref(),
            Some("prod/team")
        );
    }

    /// Only templates applied for `CREATE_ON_PUSH` count: a pull-through-cache or
    /// replication template creates nothing on push, even when it is more specific.
    #[test]
    fn only_create_on_push_templates_count() {
        let templates = [template("team", false), template("ROOT", false)];
        assert_eq!(prefix_for("team/app", &templates), None);
        let templates = [template("team/app", false), template("team", true)];
        assert_eq!(
            prefix_for("team/app/x", &templates).as_deref(),
            Some("team")
        );
        let templates = [template("team", false), template("ROOT", true)];
        assert_eq!(prefix_for("team/app", &templates).as_deref(), Some("ROOT"));
        assert_eq!(prefix_for("team/app", &[]), None);
    }

    /// The advice names the namespace a template would need, or `ROOT`.
    #[test]
    fn the_suggested_prefix_is_the_namespace() {
        assert_eq!(suggested_prefix("team/app"), "team");
        assert_eq!(suggested_prefix("org/team/app"), "org/team");
        assert_eq!(suggested_prefix("app"), "ROOT");
    }

    /// A template's settings arrive from the SDK, with ECR's defaults for the ones it
    /// leaves out.
    #[test]
    fn templates_are_read_from_the_sdk_with_ecrs_defaults() {
        use aws_sdk_ecr::types::{
            ImageTagMutability, ImageTagMutabilityExclusionFilter,
            ImageTagMutabilityExclusionFilterType, RepositoryCreationTemplate,
        };
        let full = RepositoryCreationTemplate::builder()
            .prefix("team")
            .applied_for(RctAppliedFor::Replication)
            .applied_for(RctAppliedFor::CreateOnPush)
            .image_tag_mutability(ImageTagMutability::from("IMMUTABLE_WITH_EXCLUSION"))
            .image_tag_mutability_exclusion_filters(
                ImageTagMutabilityExclusionFilter::builder()
                    .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                    .filter("latest")
                    .build()
                    .unwrap(),
            )
            .build();
        let read = from_sdk(&full);
        assert!(read.create_on_push);
        assert_eq!(read.tag_mutability, "IMMUTABLE_WITH_EXCLUSION");
        assert_eq!(read.tag_mutability_exclusions, ["latest"]);
        let bare = from_sdk(
            &RepositoryCreationTemplate::builder()
                .prefix("ROOT")
                .applied_for(RctAppliedFor::PullThroughCache)
                .build(),
        );
        assert!(!bare.create_on_push);
        assert_eq!(bare.tag_mutability, "MUTABLE");
        assert_eq!(bare.encryption, "AES256");
    }
}
