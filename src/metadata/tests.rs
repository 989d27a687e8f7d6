use super::template::{sanitise, Rendered, Template};
use super::*;
use crate::inputs::{ActionSpec, InputError, Inputs};

/// 2026-12-01T21:45:00Z
const NOW: i64 = 1_796_161_500;
const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";
const HEAD_SHA: &str = "1234567890abcdef1234567890abcdef12345678";

fn github(event: &str, git_ref: &str) -> GitHubContext {
    GitHubContext {
        git_ref: Some(git_ref.into()),
        sha: Some(SHA.into()),
        event_name: Some(event.into()),
        run_number: Some("42".into()),
        server_url: Some("https://github.com".into()),
        repository: Some("octo/shop".into()),
        ..GitHubContext::default()
    }
}

fn context(event: &str, git_ref: &str) -> Context {
    Context::from_parts(&github(event, git_ref), &serde_json::Value::Null, NOW).unwrap()
}

fn pull_request() -> Context {
    let payload = serde_json::json!({
        "number": 17,
        "pull_request": {"number": 17, "head": {"sha": HEAD_SHA, "ref": "feature/Login_fix"}}
    });
    let mut gh = github("pull_request", "refs/pull/17/merge");
    gh.head_ref = Some("feature/Login_fix".into());
    Context::from_parts(&gh, &payload, NOW).unwrap()
}

fn tags(template: &str, context: &Context) -> Result<Vec<String>, InputError> {
    let values = [
        ("repository".to_string(), "app".to_string()),
        ("tags".to_string(), template.to_string()),
    ]
    .into();
    Inputs::parse_in(
        &ActionSpec::embedded(),
        &values,
        std::path::Path::new("/ws"),
        context,
    )
    .map(|i| i.tags)
}

const ISSUE_EXAMPLE: &str = "{{version}}\n{{major}}.{{minor}}\n{{major}}\nsha-{{sha}}\n{{branch}}";

/// The issue's example on a tag push: semver tags and the short SHA, no branch.
#[test]
fn tag_push_gives_semver_tags() {
    let ctx = context("push", "refs/tags/v1.4.2");
    assert_eq!(
        tags(ISSUE_EXAMPLE, &ctx).unwrap(),
        ["1.4.2", "1.4", "1", "sha-89abcde"]
    );
    // A `v`-less tag is semver too; `{{tag}}` keeps the name as pushed.
    let ctx = context("push", "refs/tags/2.0.1");
    assert_eq!(tags("{{major}}\n{{tag}}", &ctx).unwrap(), ["2", "2.0.1"]);
}

/// The issue's example on a branch push: the sanitised branch and the short SHA.
#[test]
fn branch_push_gives_branch_and_sha() {
    let ctx = context("push", "refs/heads/feature/Login_fix");
    assert_eq!(
        tags(ISSUE_EXAMPLE, &ctx).unwrap(),
        ["sha-89abcde", "feature-Login_fix"]
    );
}

/// A pull request's `{{sha}}` and `{{branch}}` are its head's, from the payload, not the
/// merge commit; `{{pr}}` is its number.
#[test]
fn pull_request_uses_the_head_commit_and_branch() {
    for event in ["pull_request", "pull_request_target"] {
        let payload = serde_json::json!({
            "pull_request": {"number": 17, "head": {"sha": HEAD_SHA, "ref": "fix/x"}}
        });
        let ctx = Context::from_parts(&github(event, "refs/pull/17/merge"), &payload, NOW).unwrap();
        assert_eq!(
            tags("sha-{{sha}}\npr-{{pr}}\n{{branch}}\n{{sha_long}}", &ctx).unwrap(),
            ["sha-1234567", "pr-17", "fix-x", HEAD_SHA],
            "{event}"
        );
    }
    assert_eq!(pull_request().sha.as_deref(), Some(HEAD_SHA));
}

/// A prerelease moves only `{{version}}`; build metadata's `+` becomes `-`.
#[test]
fn prereleases_give_only_the_version() {
    let ctx = context("push", "refs/tags/v2.0.0-rc.1");
    assert_eq!(
        tags(ISSUE_EXAMPLE, &ctx).unwrap(),
        ["2.0.0-rc.1", "sha-89abcde"]
    );
    let ctx = context("push", "refs/tags/v1.2.3+build.5");
    assert_eq!(
        tags("{{version}}\n{{major}}", &ctx).unwrap(),
        ["1.2.3-build.5", "1"]
    );
}

/// A tag that is not semver has no `{{version}}`, but has `{{tag}}`.
#[test]
fn a_tag_that_is_not_semver_has_no_version() {
    let ctx = context("push", "refs/tags/nightly");
    assert_eq!(tags("{{version}}\n{{tag}}", &ctx).unwrap(), ["nightly"]);
    let ctx = context("push", "refs/tags/v1.2");
    assert_eq!(tags("{{major}}\nx-{{tag}}", &ctx).unwrap(), ["x-v1.2"]);
}

/// A release event's tag comes from its ref, or from the payload's `tag_name`.
#[test]
fn release_events_take_the_tag() {
    let ctx = context("release", "refs/tags/v3.1.0");
    assert_eq!(
        tags("{{version}}\n{{major}}", &ctx).unwrap(),
        ["3.1.0", "3"]
    );
    let mut gh = github("release", "");
    gh.git_ref = None;
    let payload = serde_json::json!({"release": {"tag_name": "v3.2.0"}});
    let ctx = Context::from_parts(&gh, &payload, NOW).unwrap();
    assert_eq!(tags("{{version}}", &ctx).unwrap(), ["3.2.0"]);
}

/// `workflow_dispatch` and `schedule` run on a branch ref; `{{run}}` and `{{date}}`
/// (UTC) always have a value.
#[test]
fn dispatch_and_schedule_events_use_their_branch_run_and_date() {
    for event in ["workflow_dispatch", "schedule"] {
        let ctx = context(event, "refs/heads/main");
        assert_eq!(
            tags("{{branch}}-{{run}}\nnightly-{{date}}\n{{tag}}", &ctx).unwrap(),
            ["main-42", "nightly-20261201"]
        );
    }
}

/// Branches become valid Docker tags: bad characters to `-`, no leading `.`/`-`, 128 max.
#[test]
fn branches_are_sanitised_to_docker_tags() {
    assert_eq!(sanitise("feature/Login_fix"), "feature-Login_fix");
    assert_eq!(sanitise("dependabot/npm@1.2"), "dependabot-npm-1.2");
    assert_eq!(sanitise("-x"), "x");
    assert_eq!(sanitise("é"), "");
    assert_eq!(sanitise(&"a".repeat(300)).len(), 128);
    let long = context("push", &format!("refs/heads/{}", "b/".repeat(100)));
    let got = tags("prefix-{{branch}}", &long).unwrap();
    assert_eq!(got[0].len(), 128);
    assert!(got[0].starts_with("prefix-b-b-"));
}

/// An unknown placeholder is an input error naming it, in any event; so is a `{{`
/// without `}}`.
#[test]
fn unknown_placeholders_are_input_errors() {
    let ctx = context("push", "refs/heads/main");
    let err = tags("v-{{commit}}", &ctx).unwrap_err().to_string();
    assert!(
        err.contains("invalid value `v-{{commit}}` for input `tags`"),
        "{err}"
    );
    assert!(err.contains("unknown placeholder `{{commit}}`"), "{err}");
    assert!(err.contains("`{{sha}}`"), "{err}");
    assert!(Template::parse("{{sha").is_err());
    assert!(Template::parse("sha}}").is_err());
    assert_eq!(
        Template::parse("{{ sha }}").unwrap().render(&ctx),
        Rendered::Tag("89abcde".into())
    );
}

/// Nothing left is an error naming the input and the event; duplicates are dropped.
#[test]
fn nothing_left_is_an_error_naming_the_event() {
    let ctx = context("push", "refs/heads/main");
    let err = tags("{{version}}\n{{tag}}", &ctx).unwrap_err().to_string();
    assert!(err.contains("input `tags`"), "{err}");
    assert!(err.contains("`push` event on branch `main`"), "{err}");
    assert_eq!(
        tags("{{branch}}\nmain\n{{branch}}", &ctx).unwrap(),
        ["main"]
    );
    let outside = tags("{{sha}}", &Context::default())
        .unwrap_err()
        .to_string();
    assert!(outside.contains("not in a workflow run"), "{outside}");
}

/// Default labels follow the table; `SOURCE_DATE_EPOCH` sets `created`; the `labels`
/// input overrides; `default-labels: false` leaves only the input's.
#[test]
fn default_labels_and_overrides() {
    let mut gh = github("push", "refs/tags/v1.4.2");
    gh.source_date_epoch = Some("0".into());
    let ctx = Context::from_parts(&gh, &serde_json::Value::Null, NOW).unwrap();
    let parse = |extra: &[(&str, &str)]| {
        let mut values: std::collections::BTreeMap<String, String> = [
            ("repository".to_string(), "app".to_string()),
            ("tags".to_string(), "{{version}},latest".to_string()),
        ]
        .into();
        values.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
        );
        Inputs::parse_in(
            &ActionSpec::embedded(),
            &values,
            std::path::Path::new("/ws"),
            &ctx,
        )
        .unwrap()
        .build
        .labels
    };
    let labels = parse(&[]);
    assert_eq!(labels[labels::SOURCE], "https://github.com/octo/shop");
    assert_eq!(labels[labels::REVISION], SHA);
    assert_eq!(labels[labels::VERSION], "1.4.2");
    assert_eq!(labels[labels::CREATED], "1970-01-01T00:00:00Z");
    assert_eq!(labels[labels::TITLE], "shop");
    let labels = parse(&[("labels", "org.opencontainers.image.title=Shop\nteam=web")]);
    assert_eq!(labels[labels::TITLE], "Shop");
    assert_eq!(labels["team"], "web");
    let labels = parse(&[("default-labels", "false"), ("labels", "team=web")]);
    assert_eq!(labels.len(), 1);
    let mut bad = github("push", "refs/heads/main");
    bad.source_date_epoch = Some("yesterday".into());
    assert!(Context::from_parts(&bad, &serde_json::Value::Null, NOW).is_err());
}

/// Dates are UTC calendar dates, leap years included.
#[test]
fn dates_are_utc() {
    assert_eq!(utc_date(NOW), "20261201");
    assert_eq!(rfc3339(NOW), "2026-12-01T21:45:00Z");
    assert_eq!(utc_date(951_782_400), "20000229");
    assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
}
