//! End-to-end: the repository side of ECR's newer settings, against the stand-in: tag
//! mutability with exclusion filters (July 2025), decided per tag, and repositories
//! that ECR creates on push from a `CREATE_ON_PUSH` repository creation template
//! (December 2025) when the role may not call `CreateRepository`. What is checked is
//! what a user sees: ECR's description of the repository, the registry's digests, the
//! log, the error line and the job summary.

mod support;

use std::sync::Mutex;

use support::{standin, unique, Standin, Workspace, BUILD_STARTED};

/// Tests that inject `CreateRepository` refusals and read templates run one at a time:
/// a refusal of `DescribeRepositoryCreationTemplates` cannot be pinned to a repository.
static TEMPLATES: Mutex<()> = Mutex::new(());

fn workspace(content: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write("Dockerfile", "FROM local/busybox:latest\nCOPY app.txt /\n")
        .write("app.txt", content);
    ws
}

/// Calls the ECR API through the stand-in's front (`AWS_ENDPOINT_URL_ECR`), which
/// answers the repository creation template operations itself (moto lacks them).
fn api(standin: &Standin, operation: &str, body: &serde_json::Value) -> serde_json::Value {
    standin.api("AKIAIOSFODNN7EXAMPLE", operation, body)
}

/// A `CREATE_ON_PUSH` template for `prefix`, removed again when dropped.
struct Template<'a> {
    standin: &'a Standin,
    prefix: String,
}

impl<'a> Template<'a> {
    fn create(standin: &'a Standin, prefix: &str, settings: &serde_json::Value) -> Self {
        let mut body = serde_json::json!({"prefix": prefix, "appliedFor": ["CREATE_ON_PUSH"]});
        body.as_object_mut()
            .unwrap()
            .extend(settings.as_object().unwrap().clone());
        let answer = api(standin, "CreateRepositoryCreationTemplate", &body);
        assert_eq!(
            answer["repositoryCreationTemplate"]["prefix"], prefix,
            "{answer}"
        );
        Self {
            standin,
            prefix: prefix.to_string(),
        }
    }
}

impl Drop for Template<'_> {
    fn drop(&mut self) {
        api(
            self.standin,
            "DeleteRepositoryCreationTemplate",
            &serde_json::json!({"prefix": self.prefix}),
        );
    }
}

/// The refusal a role without `ecr:CreateRepository` gets, for `repository` only.
fn refuse_create_repository(standin: &Standin, repository: &str) {
    standin.inject_fault(&serde_json::json!({
        "route": "api",
        "mode": "status",
        "status": 400,
        "error": "AccessDeniedException",
        "message": "User is not authorized to perform: ecr:CreateRepository",
        "action": "CreateRepository",
        "repository": repository,
    }));
}

/// The filters of a repository as `DescribeRepositories` reports them, sorted.
fn described_filters(repository: &serde_json::Value) -> Vec<(String, String)> {
    let mut filters: Vec<(String, String)> = repository["imageTagMutabilityExclusionFilters"]
        .as_array()
        .map(|filters| {
            filters
                .iter()
                .map(|f| {
                    (
                        f["filterType"].as_str().unwrap_or_default().to_string(),
                        f["filter"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    filters.sort();
    filters
}

/// A repository the action creates with `IMMUTABLE_WITH_EXCLUSION` and the filters
/// `latest`, `dev-*` is described by ECR with exactly that setting and those two
/// `WILDCARD` filters, and the job summary shows them.
#[test]
fn a_repository_is_created_with_tag_mutability_exclusions() {
    let standin = standin();
    let repo = unique("excl");
    let ws = workspace("one\n");
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1")
        .input("image-tag-mutability", "IMMUTABLE_WITH_EXCLUSION")
        .input("image-tag-mutability-exclusions", "latest\ndev-*")
        .run();
    run.assert_success();
    let described = standin.repository(&repo).expect("the repository exists");
    assert_eq!(
        described["imageTagMutability"], "IMMUTABLE_WITH_EXCLUSION",
        "{described}"
    );
    assert_eq!(
        described_filters(&described),
        [
            ("WILDCARD".to_string(), "dev-*".to_string()),
            ("WILDCARD".to_string(), "latest".to_string())
        ],
        "{described}"
    );
    assert!(
        run.summary
            .contains("| Tag mutability | IMMUTABLE_WITH_EXCLUSION (exclusions: "),
        "{}",
        run.summary
    );
    assert!(
        run.summary.contains("(created by this run)"),
        "{}",
        run.summary
    );
}

/// In an `IMMUTABLE_WITH_EXCLUSION` repository (made by an administrator) with the
/// filters `latest` and `dev-*` (the step's inputs left at their defaults), a second run pushing another image to `latest` succeeds
/// (the filter makes it mutable) and moves it, while one pushing to `v1` (immutable: no
/// filter matches it) fails before building, with `on-tag-exists: fail`, naming the tag,
/// its digest and why; `v1` keeps its image.
#[test]
fn excluded_tags_move_and_the_others_stay() {
    let standin = standin();
    let repo = unique("excl-move");
    let created = standin.moto(
        "CreateRepository",
        &serde_json::json!({
            "repositoryName": repo,
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [
                {"filterType": "WILDCARD", "filter": "latest"},
                {"filterType": "WILDCARD", "filter": "dev-*"},
            ],
            "imageScanningConfiguration": {"scanOnPush": true},
        }),
    );
    assert!(created["repository"].is_object(), "{created}");
    let ws = workspace("first\n");
    let first = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1,latest")
        .run();
    first.assert_success();
    let v1 = first.output("image-digest").to_string();

    ws.write("app.txt", "second, another image\n");
    let latest = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "latest")
        .run();
    latest.assert_success();
    let moved = latest.output("image-digest").to_string();
    assert_ne!(moved, v1, "the second image differs");
    assert_eq!(
        standin.registry_digest(&repo, "latest").as_deref(),
        Some(moved.as_str())
    );
    // The repository keeps its settings; the step's defaults differ, and it says so.
    assert!(
        latest.stderr.contains(
            "image-tag-mutability is IMMUTABLE_WITH_EXCLUSION (asked for MUTABLE); \
             image-tag-mutability-exclusions are `latest`, `dev-*` (asked for none)"
        ),
        "{}",
        latest.stderr
    );

    let again = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1")
        .input("on-tag-exists", "fail")
        .run();
    assert!(!again.success, "{}", again.stderr);
    let errors = again.error_lines();
    assert_eq!(errors.len(), 1, "{}", again.stderr);
    assert!(
        errors[0].contains(&format!(
            "tag `v1` (at {v1}; IMMUTABLE_WITH_EXCLUSION, no exclusion filter matches it) \
             already exists in `{repo}`, where it is immutable"
        )),
        "{}",
        errors[0]
    );
    assert!(!again.stderr.contains(BUILD_STARTED), "the build started");
    assert_eq!(again.output_file, "");
    assert_eq!(standin.registry_digest(&repo, "v1"), Some(v1));
}

/// `CreateRepository` refused (`AccessDeniedException`), and a `CREATE_ON_PUSH`
/// template covers the name: the run goes on, ECR creates the repository at the push
/// with the template's settings, the image is there under its tag, the lifecycle policy
/// input is left to the template with a warning, and the summary names the template.
#[test]
fn a_create_on_push_template_creates_the_repository_when_create_repository_is_refused() {
    let _serial = TEMPLATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let standin = standin();
    let prefix = unique("onpush");
    let repo = format!("{prefix}/app");
    let _template = Template::create(
        standin,
        &prefix,
        &serde_json::json!({
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}],
        }),
    );
    refuse_create_repository(standin, &repo);
    let ws = workspace("created on push\n");
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1")
        .input("lifecycle-policy", r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}"#)
        .run();
    run.assert_success();
    assert_eq!(
        standin.pending_faults(&repo),
        0,
        "CreateRepository was called"
    );

    let described = standin
        .repository(&repo)
        .expect("ECR created the repository on push");
    assert_eq!(described["imageTagMutability"], "IMMUTABLE_WITH_EXCLUSION");
    let digest = run.output("image-digest");
    assert_eq!(
        standin.registry_digest(&repo, "v1").as_deref(),
        Some(digest)
    );
    assert!(
        run.summary.contains(&format!(
            "(created on push by ECR from the repository creation template `{prefix}`)"
        )),
        "{}",
        run.summary
    );
    assert!(
        run.summary.contains(&format!(
            "| Lifecycle policy | not applied: the repository creation template `{prefix}`'s applies |"
        )),
        "{}",
        run.summary
    );
    // Warned before the build: inside it, the log has workflow commands turned off.
    let lines: Vec<&str> = run.stderr.lines().collect();
    let warning = lines.iter().position(|l| {
        l.starts_with("::warning::")
            && l.contains("`lifecycle-policy` not applied")
            && l.contains(&format!("template `{prefix}`"))
    });
    let build = lines.iter().position(|l| l.starts_with(BUILD_STARTED));
    assert!(
        matches!((warning, build), (Some(w), Some(b)) if w < b),
        "{}",
        run.stderr
    );
}

/// `CreateRepository` refused and no template covers the name: the run fails before the
/// build with one error naming the repository, the IAM action `ecr:CreateRepository` and
/// a `CREATE_ON_PUSH` template as the two ways out. When the templates cannot be read
/// either, the error says so and names `ecr:DescribeRepositoryCreationTemplates`.
#[test]
fn a_refused_create_repository_without_a_template_names_both_ways_out() {
    let _serial = TEMPLATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let standin = standin();
    let namespace = unique("denied");
    let repo = format!("{namespace}/app");
    refuse_create_repository(standin, &repo);
    let run = standin
        .action(workspace("denied\n").path())
        .input("repository", &repo)
        .run();
    assert!(!run.success, "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    for part in [
        format!("cannot create repository `{repo}`: AccessDeniedException"),
        "`ecr:CreateRepository`".to_string(),
        "`CREATE_ON_PUSH`".to_string(),
        format!("`{namespace}`"),
    ] {
        assert!(errors[0].contains(&part), "{part}: {}", errors[0]);
    }
    assert!(!run.stderr.contains(BUILD_STARTED), "the build started");
    assert!(standin.repository(&repo).is_none());
    assert_eq!(run.output_file, "");

    refuse_create_repository(standin, &repo);
    standin.inject_fault(&serde_json::json!({
        "route": "api",
        "mode": "status",
        "status": 400,
        "error": "AccessDeniedException",
        "message": "User is not authorized to perform: ecr:DescribeRepositoryCreationTemplates",
        "action": "DescribeRepositoryCreationTemplates",
    }));
    let run = standin
        .action(workspace("denied\n").path())
        .input("repository", &repo)
        .run();
    assert!(!run.success, "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    for part in [
        "cannot be read either (DescribeRepositoryCreationTemplates: AccessDeniedException",
        "`ecr:CreateRepository`",
        "`ecr:DescribeRepositoryCreationTemplates`",
    ] {
        assert!(errors[0].contains(part), "{part}: {}", errors[0]);
    }
    assert!(standin.repository(&repo).is_none());
}
