//! The OCI labels every image gets unless `default-labels: false`
//! (<https://github.com/opencontainers/image-spec/blob/main/annotations.md>). Labels that
//! need the GitHub API (description, licenses) are left out: the action takes no token.

use std::collections::BTreeMap;

use super::Context;

pub const SOURCE: &str = "org.opencontainers.image.source";
pub const REVISION: &str = "org.opencontainers.image.revision";
pub const VERSION: &str = "org.opencontainers.image.version";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const TITLE: &str = "org.opencontainers.image.title";

/// The default labels for an image tagged `first_tag`; a label without a value in this
/// context (no `GITHUB_REPOSITORY` outside a runner) is left out.
pub fn defaults(context: &Context, first_tag: &str) -> BTreeMap<String, String> {
    let created = context.source_date_epoch.unwrap_or(context.now);
    let title = context
        .repository
        .as_deref()
        .map(|repo| repo.rsplit('/').next().unwrap_or(repo).to_string());
    [
        (SOURCE, context.source_url.clone()),
        (REVISION, context.sha.clone()),
        (VERSION, Some(first_tag.to_string())),
        (CREATED, Some(super::rfc3339(created))),
        (TITLE, title),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name.to_string(), v)))
    .collect()
}
