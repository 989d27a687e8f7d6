//! Tag templates and default OCI labels end to end: the GitHub context as the runner
//! passes it (variables and an event payload file), the tags as ECR and the registry hold
//! them, the labels as the pulled image shows them.

mod support;

use support::{docker, standin, unique, Workspace};

const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";
const HEAD_SHA: &str = "1234567890abcdef1234567890abcdef12345678";
const TEMPLATES: &str = "{{version}}\n{{major}}.{{minor}}\n{{major}}\nsha-{{sha}}\n{{branch}}";

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("Dockerfile", "FROM local/busybox:latest\nCMD [\"true\"]\n");
    ws
}

/// The runner's variables for an event.
fn github_run(
    ws: &Workspace,
    repo: &str,
    event: &str,
    git_ref: &str,
    payload: &serde_json::Value,
) -> support::ActionRun {
    let path = ws.path().join("event.json");
    std::fs::write(&path, payload.to_string()).unwrap();
    standin()
        .action(ws.path())
        .input("repository", repo)
        .input("tags", TEMPLATES)
        .env("GITHUB_EVENT_NAME", event)
        .env("GITHUB_REF", git_ref)
        .env("GITHUB_SHA", SHA)
        .env("GITHUB_EVENT_PATH", path.to_str().unwrap())
        .env("GITHUB_RUN_NUMBER", "7")
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_REPOSITORY", "octo/shop")
}

fn pushed_tags(run: &support::RunResult) -> Vec<String> {
    let uris: Vec<String> = serde_json::from_str(run.output("image-uris")).unwrap();
    uris.iter()
        .map(|u| u.rsplit(':').next().unwrap().to_string())
        .collect()
}

/// A release tag push gives the semver tags and the short SHA, all in ECR at the pushed
/// digest; the pulled image carries the default OCI labels, `created` from
/// `SOURCE_DATE_EPOCH`, and a `labels` input overriding one of them.
#[test]
fn tag_push_gives_semver_tags_and_labels_on_the_pulled_image() {
    let standin = standin();
    let repo = unique("meta/tag");
    let ws = workspace();
    let run = github_run(
        &ws,
        &repo,
        "push",
        "refs/tags/v1.4.2",
        &serde_json::json!({}),
    )
    .env("SOURCE_DATE_EPOCH", "1700000000")
    .input("labels", "org.opencontainers.image.title=Shop")
    .run();
    run.assert_success();
    assert_eq!(pushed_tags(&run), ["1.4.2", "1.4", "1", "sha-89abcde"]);
    let digest = run.output("image-digest");
    for tag in ["1.4.2", "1.4", "1", "sha-89abcde"] {
        assert_eq!(
            standin.moto_digest(&repo, tag).as_deref(),
            Some(digest),
            "{tag}"
        );
    }
    assert!(
        run.stderr.contains("tag `{{branch}}` left out"),
        "{}",
        run.stderr
    );

    let reference = run.output("image-uri").to_string();
    standin.docker_pull(&reference);
    let labels: serde_json::Value = serde_json::from_str(&docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &reference,
    ]))
    .unwrap();
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/octo/shop"
    );
    assert_eq!(labels["org.opencontainers.image.revision"], SHA);
    assert_eq!(labels["org.opencontainers.image.version"], "1.4.2");
    assert_eq!(
        labels["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(labels["org.opencontainers.image.title"], "Shop");
    let _ = docker(&["image", "rm", &reference]);
}

/// A branch push gives the short SHA and the sanitised branch; the semver entries are
/// left out with an info line.
#[test]
fn branch_push_gives_sha_and_sanitised_branch() {
    let repo = unique("meta/branch");
    let ws = workspace();
    let run = github_run(
        &ws,
        &repo,
        "push",
        "refs/heads/feature/Login_fix",
        &serde_json::json!({}),
    )
    .run();
    run.assert_success();
    assert_eq!(pushed_tags(&run), ["sha-89abcde", "feature-Login_fix"]);
    assert!(
        run.stderr.contains("tag `{{version}}` left out"),
        "{}",
        run.stderr
    );
}

/// A pull request's tags name its head commit and branch from the event payload, not
/// the merge commit in `GITHUB_SHA`.
#[test]
fn pull_request_tags_use_the_head_from_the_payload() {
    let repo = unique("meta/pr");
    let ws = workspace();
    let payload = serde_json::json!({
        "number": 12,
        "pull_request": {"number": 12, "head": {"sha": HEAD_SHA, "ref": "fix/typo"}}
    });
    let run = github_run(&ws, &repo, "pull_request", "refs/pull/12/merge", &payload)
        .env("GITHUB_HEAD_REF", "fix/typo")
        .input("tags", "pr-{{pr}}\nsha-{{sha}}\n{{branch}}\n{{version}}")
        .run();
    run.assert_success();
    assert_eq!(pushed_tags(&run), ["pr-12", "sha-1234567", "fix-typo"]);
}

/// No tag left for the event is one input error naming `tags` and the event, before
/// any build.
#[test]
fn nothing_left_fails_before_the_build() {
    let repo = unique("meta/none");
    let ws = workspace();
    let run = github_run(
        &ws,
        &repo,
        "push",
        "refs/heads/main",
        &serde_json::json!({}),
    )
    .input("tags", "{{version}}\n{{major}}")
    .run();
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("input `tags`"), "{}", errors[0]);
    assert!(
        errors[0].contains("`push` event on branch `main`"),
        "{}",
        errors[0]
    );
    assert!(!run.stderr.contains(support::BUILD_STARTED));
}
