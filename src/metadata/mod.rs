//! What `docker/metadata-action` does, inside this action: tag templates filled from the
//! GitHub context ([`template`]) and default OCI labels ([`labels`]).
//!
//! [`Context`] is built once, in `main`, from the `GITHUB_*` variables ([`GitHubContext`])
//! and the event payload file, which is read there and nowhere else. Parsing the inputs
//! takes it as an argument.

pub mod labels;
pub mod template;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::env::GitHubContext;

/// What the run is about, as the templates see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// `push`, `pull_request`…; `None` outside a runner.
    pub event_name: Option<String>,
    /// The branch pushed, or a pull request's head branch, unsanitised.
    pub branch: Option<String>,
    /// The git tag pushed (or released).
    pub tag: Option<String>,
    /// The full commit SHA: a pull request's head commit, else `GITHUB_SHA`.
    pub sha: Option<String>,
    pub pr_number: Option<u64>,
    pub run_number: Option<String>,
    /// `GITHUB_SERVER_URL/GITHUB_REPOSITORY`.
    pub source_url: Option<String>,
    /// `owner/name`.
    pub repository: Option<String>,
    /// Seconds since the epoch now, for `{{date}}`.
    pub now: i64,
    /// `SOURCE_DATE_EPOCH` when set, for the `created` label.
    pub source_date_epoch: Option<i64>,
}

/// Events whose payload describes a pull request, with its head commit and branch.
const PULL_REQUEST_EVENTS: [&str; 3] =
    ["pull_request", "pull_request_target", "pull_request_review"];

impl Context {
    /// Builds the context from the runner's variables, reading the event payload file.
    /// A payload that cannot be read or parsed is an error: the templates would
    /// otherwise name the merge commit instead of the pull request's head.
    pub fn load(github: &GitHubContext) -> anyhow::Result<Self> {
        let payload = match &github.event_path {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read the event payload {}: {e}", path.display())
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("the event payload {} is not JSON: {e}", path.display())
                })?
            }
            _ => serde_json::Value::Null,
        };
        Self::from_parts(github, &payload, now())
    }

    /// No GitHub event, the clock read now: for the command line without a runner.
    pub fn outside_runner() -> Self {
        Self {
            now: now(),
            ..Self::default()
        }
    }

    /// [`Context::load`] with the payload already parsed and the clock given.
    pub fn from_parts(
        github: &GitHubContext,
        payload: &serde_json::Value,
        now: i64,
    ) -> anyhow::Result<Self> {
        let source_date_epoch = github
            .source_date_epoch
            .as_deref()
            .map(|value| {
                value.trim().parse::<i64>().map_err(|_| {
                    anyhow::anyhow!(
                        "SOURCE_DATE_EPOCH is `{value}`, not a number of seconds since 1970"
                    )
                })
            })
            .transpose()?;
        let mut context = Self {
            event_name: github.event_name.clone(),
            run_number: github.run_number.clone(),
            source_url: github
                .server_url
                .as_ref()
                .zip(github.repository.as_ref())
                .map(|(server, repo)| format!("{}/{repo}", server.trim_end_matches('/'))),
            repository: github.repository.clone(),
            sha: github.sha.clone(),
            now,
            source_date_epoch,
            ..Self::default()
        };
        match RefKind::of(github) {
            RefKind::Branch(name) => context.branch = Some(name),
            RefKind::Tag(name) => context.tag = Some(name),
            RefKind::PullRequest(number) => context.pr_number = Some(number),
            RefKind::Other => {}
        }
        let event = github.event_name.as_deref().unwrap_or_default();
        if PULL_REQUEST_EVENTS.contains(&event) {
            let pr = &payload["pull_request"];
            if let Some(sha) = pr["head"]["sha"].as_str() {
                context.sha = Some(sha.to_string());
            }
            context.branch = pr["head"]["ref"]
                .as_str()
                .map(ToString::to_string)
                .or_else(|| github.head_ref.clone());
            context.pr_number = pr["number"]
                .as_u64()
                .or_else(|| payload["number"].as_u64())
                .or(context.pr_number);
            context.tag = None;
        } else if event == "release" && context.tag.is_none() {
            context.tag = payload["release"]["tag_name"]
                .as_str()
                .map(ToString::to_string);
        }
        Ok(context)
    }

    /// The event, for messages.
    pub fn event_description(&self) -> String {
        match (&self.event_name, &self.tag, &self.branch, self.pr_number) {
            (None, ..) => "no GitHub event (not in a workflow run)".to_string(),
            (Some(event), Some(tag), ..) => format!("`{event}` event on tag `{tag}`"),
            (Some(event), None, _, Some(pr)) => format!("`{event}` event for pull request #{pr}"),
            (Some(event), None, Some(branch), None) => {
                format!("`{event}` event on branch `{branch}`")
            }
            (Some(event), None, None, None) => format!("`{event}` event"),
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What `GITHUB_REF` names.
enum RefKind {
    Branch(String),
    Tag(String),
    PullRequest(u64),
    Other,
}

impl RefKind {
    fn of(github: &GitHubContext) -> Self {
        if let Some(full) = &github.git_ref {
            if let Some(branch) = full.strip_prefix("refs/heads/") {
                return Self::Branch(branch.to_string());
            }
            if let Some(tag) = full.strip_prefix("refs/tags/") {
                return Self::Tag(tag.to_string());
            }
            if let Some(rest) = full.strip_prefix("refs/pull/") {
                return rest
                    .split('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .map_or(Self::Other, Self::PullRequest);
            }
            return Self::Other;
        }
        match (github.ref_type.as_deref(), &github.ref_name) {
            (Some("branch"), Some(name)) => Self::Branch(name.clone()),
            (Some("tag"), Some(name)) => Self::Tag(name.clone()),
            _ => Self::Other,
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYYMMDD` in UTC.
pub fn utc_date(epoch_seconds: i64) -> String {
    let (y, m, d) = civil_from_days(epoch_seconds.div_euclid(86_400));
    format!("{y:04}{m:02}{d:02}")
}

/// RFC 3339 in UTC, to the second: `2026-12-01T21:45:00Z`.
pub fn rfc3339(epoch_seconds: i64) -> String {
    let (y, m, d) = civil_from_days(epoch_seconds.div_euclid(86_400));
    let secs = epoch_seconds.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
