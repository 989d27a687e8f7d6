//! End-to-end: the action binary against the stand-in (Docker engine, moto's ECR API,
//! the TLS registry at the ECR host name). Every assertion looks at what a user would
//! see: the registry's own manifests, ECR's records, the pulled image, the outputs file
//! and the log.

mod support;

use support::{
    default_push_route, docker, docker_output, engine_is_containerd_store, standin, unique,
    Workspace, ACCOUNT, BUILD_STARTED, REGION,
};

const BASE: &str = "local/busybox:latest";

fn example_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM {BASE}\nARG GREETING=unset\nCOPY . /app/\n\
             RUN echo \"$GREETING\" > /greeting\nCMD [\"cat\", \"/greeting\"]\n"
        ),
    )
    .write("app.txt", "hello from the context\n")
    .write("secret.env", "TOKEN=do-not-ship\n")
    .write("logs/debug.log", "noise\n")
    .write("docs/README.md", "keep me\n")
    .write("docs/notes.md", "drop me\n")
    .write(
        ".dockerignore",
        "secret.env\nlogs\ndocs/*.md\n!docs/README.md\n",
    );
    ws
}

/// The main job: a build pushed under two tags. Every output is well formed; the registry's
/// own manifest digest for each tag, and ECR's record, equal `image-digest`; the pulled
/// image runs with the build arg baked in; `.dockerignore`d files are not in it; the
/// repository was created with the default settings; the summary names the digest.
#[test]
fn pushes_an_image_and_outputs_match_the_registry() {
    let standin = standin();
    let repo = unique("team/app");
    let ws = example_workspace();
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1\nlatest")
        .input("build-args", "GREETING=hi there")
        .input(
            "labels",
            "org.opencontainers.image.source=https://example.test/app",
        )
        .run();
    run.assert_success();

    let registry = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com");
    let digest = run.output("image-digest").to_string();
    assert_eq!(run.output("registry"), registry);
    assert_eq!(run.output("repository-uri"), format!("{registry}/{repo}"));
    assert_eq!(run.output("image-uri"), format!("{registry}/{repo}:v1"));
    assert_eq!(
        run.output("image-uri-by-digest"),
        format!("{registry}/{repo}@{digest}")
    );
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert!(run.output("image-id").starts_with("sha256:"));
    let uris: Vec<String> = serde_json::from_str(run.output("image-uris")).unwrap();
    assert_eq!(
        uris,
        [
            format!("{registry}/{repo}:v1"),
            format!("{registry}/{repo}:latest")
        ]
    );

    for tag in ["v1", "latest"] {
        assert_eq!(
            standin.registry_digest(&repo, tag).as_deref(),
            Some(digest.as_str()),
            "registry, tag {tag}"
        );
        assert_eq!(
            standin.moto_digest(&repo, tag).as_deref(),
            Some(digest.as_str()),
            "ECR, tag {tag}"
        );
    }

    // Pull it back by digest, from a clean slate, and run it.
    let by_digest = run.output("image-uri-by-digest");
    let _ = docker_output(&[
        "rmi",
        "-f",
        &format!("{registry}/{repo}:v1"),
        &format!("{registry}/{repo}:latest"),
    ]);
    standin.docker_pull(by_digest);
    assert_eq!(docker(&["run", "--rm", by_digest]), "hi there");
    let files = docker(&["run", "--rm", by_digest, "find", "/app", "-type", "f"]);
    let mut files: Vec<&str> = files.lines().collect();
    files.sort_unstable();
    // As with `docker build`, .dockerignore itself is part of the context.
    assert_eq!(
        files,
        [
            "/app/.dockerignore",
            "/app/Dockerfile",
            "/app/app.txt",
            "/app/docs/README.md"
        ]
    );
    let label = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"org.opencontainers.image.source\"}}",
        by_digest,
    ]);
    assert_eq!(label, "https://example.test/app");

    let repository = standin
        .repository(&repo)
        .expect("the repository was created");
    assert_eq!(repository["imageTagMutability"], "MUTABLE");
    assert_eq!(repository["imageScanningConfiguration"]["scanOnPush"], true);
    assert!(run.summary.contains(&digest), "summary: {}", run.summary);
    assert!(
        run.summary.contains("created by this run"),
        "summary: {}",
        run.summary
    );
    assert_eq!(run.error_lines(), Vec::<&str>::new());
    let _ = docker_output(&["rmi", "-f", by_digest]);
}

/// The store of the engine the tests run on (`DOCKER_HOST`'s), as `docker info` names it.
/// Regression for the containerd store's double push (every layer uploaded directly, the
/// image then rejected with "the exported config is sha256:…, not the image ID", a
/// `::warning::`, and everything pushed again through the daemon). With default inputs,
/// on every engine: the push takes the route `auto` names (direct, or on the containerd
/// store of Docker 27 and later the daemon's pusher for the blobs and the direct push for
/// the second tag), the summary says which, and no `::warning::`; each tag is one image
/// manifest (never an index) as the registry serves it and as `DescribeImages` reports
/// it; `image-digest` is the registry's digest; no blob is uploaded twice; `image-id` is
/// the config digest on the classic store and the manifest digest (= `image-digest`) on
/// the containerd store, and the pulled image has that ID and runs.
#[test]
fn the_default_push_is_one_image_manifest_sent_once_without_fallback() {
    let standin = standin();
    let repo = unique("team/single");
    let ws = example_workspace();
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1\nlatest")
        .input("build-args", "GREETING=single manifest")
        .run();
    run.assert_success();
    let log = &run.stderr;
    let warnings: Vec<&str> = log.lines().filter(|l| l.starts_with("::warning")).collect();
    assert_eq!(warnings, Vec::<&str>::new(), "{log}");
    assert!(!log.contains("(fallback)"), "{log}");
    assert!(
        run.summary
            .contains(&format!("| Push engine | {} |", default_push_route())),
        "{}",
        run.summary
    );

    let digest = run.output("image-digest");
    for tag in ["v1", "latest"] {
        standin.assert_single_image_manifest(&repo, tag);
        assert_eq!(
            standin.registry_digest(&repo, tag).as_deref(),
            Some(digest),
            "tag {tag}"
        );
    }
    // The direct push (the default) names each blob it sends.
    if log.contains("(direct)") {
        let mut sent: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(": Pushed "))
            .filter_map(|l| l.split(':').next())
            .collect();
        assert!(!sent.is_empty(), "{log}");
        let count = sent.len();
        sent.sort_unstable();
        sent.dedup();
        assert_eq!(sent.len(), count, "a blob was uploaded twice: {log}");
    }

    let image_id = run.output("image-id");
    if engine_is_containerd_store() {
        assert_eq!(
            image_id, digest,
            "containerd store: image-id is the manifest"
        );
    } else {
        // The pulled image's ID (below) is its config digest on this store.
        assert_ne!(image_id, digest, "classic store: image-id is the config");
    }
    let by_digest = run.output("image-uri-by-digest");
    let _ = docker_output(&[
        "rmi",
        "-f",
        &format!("{}/{repo}:v1", standin.registry),
        &format!("{}/{repo}:latest", standin.registry),
    ]);
    standin.docker_pull(by_digest);
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Id}}", by_digest]),
        image_id
    );
    assert_eq!(docker(&["run", "--rm", by_digest]), "single manifest");
    let _ = docker_output(&["rmi", "-f", by_digest]);
}

/// The registry password and the token it came in are masked before anything else is
/// printed and appear nowhere else, even with every log level on (`RUNNER_DEBUG=1`,
/// `ECR_BUILD_PUSH_LOG=trace`): not in the log, the outputs, the summary, or
/// `~/.docker/config.json`. The AWS secret key appears nowhere at all.
#[test]
fn the_registry_password_is_masked_and_never_written() {
    use base64::Engine as _;
    let standin = standin();
    let secret_key = &standin
        .env
        .iter()
        .find(|(k, _)| k == "AWS_SECRET_ACCESS_KEY")
        .unwrap()
        .1;
    for log_filter in ["", "trace"] {
        let home = tempfile::tempdir().unwrap();
        let ws = example_workspace();
        let run = standin
            .action(ws.path())
            .input("repository", &unique("secrets"))
            .env("HOME", home.path().to_str().unwrap())
            .env("RUNNER_DEBUG", "1")
            .env("ECR_BUILD_PUSH_LOG", log_filter)
            .run();
        run.assert_success();
        // The password the stand-in issued to this run (a new one per token, as ECR's),
        // and the token that carries it.
        let password = run
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("::add-mask::"))
            .filter(|v| v.starts_with(support::ISSUED_PASSWORD_PREFIX))
            .expect("the registry password is masked before anything else")
            .to_string();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
        for secret in [&password, &token] {
            let mask = format!("::add-mask::{secret}\n");
            let first_mention = run
                .stderr
                .find(secret.as_str())
                .expect("the secret is masked");
            assert_eq!(
                first_mention,
                run.stderr.find(&mask).unwrap() + "::add-mask::".len()
            );
            assert_eq!(
                run.stderr.matches(secret.as_str()).count(),
                1,
                "{log_filter}: only in the mask command"
            );
            assert!(!run.stdout.contains(secret.as_str()));
            assert!(!run.output_file.contains(secret.as_str()));
            assert!(!run.summary.contains(secret.as_str()));
        }
        assert!(
            !run.stderr.contains(secret_key.as_str()),
            "{log_filter}: the AWS secret key leaked"
        );
        assert!(
            !home.path().join(".docker").exists(),
            "nothing written under HOME"
        );
    }
}

/// ECR's `imageSizeInBytes` (what the summary shows as the size in ECR) is the sum of the
/// image's compressed layers, as ECR reports it, not the config's size (the stand-in's
/// moto reported the config's, so a 1 MB layer showed as 2.7 kB).
#[test]
fn the_size_in_ecr_is_the_sum_of_the_compressed_layers() {
    let standin = standin();
    let repo = unique("team/size");
    let ws = example_workspace();
    ws.write("big.bin", &"0123456789abcdef".repeat(1 << 16));
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1")
        .run();
    run.assert_success();
    let manifest = standin.registry_manifest(&repo, "v1");
    let layers: u64 = manifest["layers"]
        .as_array()
        .expect("an image manifest")
        .iter()
        .map(|layer| layer["size"].as_u64().unwrap())
        .sum();
    let config = manifest["config"]["size"].as_u64().unwrap();
    let answer = standin.moto(
        "DescribeImages",
        &serde_json::json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}]}),
    );
    let reported = answer["imageDetails"][0]["imageSizeInBytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(reported, layers, "config is {config} bytes");
    assert!(reported > config, "{reported} vs config {config}");
    assert!(
        run.summary.contains("Size in ECR (compressed)"),
        "{}",
        run.summary
    );
}

/// `push: false` builds and tags locally, creates no repository, and reports no digest.
#[test]
fn push_false_builds_only() {
    let standin = standin();
    let repo = unique("buildonly");
    let ws = example_workspace();
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("push", "false")
        .run();
    run.assert_success();
    assert_eq!(run.output("image-digest"), "");
    assert_eq!(run.output("image-uris"), "[]");
    assert!(
        standin.repository(&repo).is_none(),
        "no repository is created"
    );
    let image = run.output("image-uri");
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Id}}", image]),
        run.output("image-id")
    );
    let _ = docker_output(&["rmi", "-f", image]);
}

/// A private base image in ECR builds: the daemon pulls it with the registry token.
#[test]
fn a_private_base_image_in_ecr_builds() {
    let standin = standin();
    // An account view of its own, with ECR's BLOB_MOUNTING on (off by default).
    let key = support::own_access_key();
    standin.set_blob_mounting(&key, true);
    let base_repo = unique("base");
    let base_ws = Workspace::new();
    base_ws.write(
        "Dockerfile",
        &format!("FROM {BASE}\nRUN echo private-base > /base.txt\n"),
    );
    let base = standin
        .action(base_ws.path())
        .input("repository", &base_repo)
        .input("tags", "v1")
        .env("AWS_ACCESS_KEY_ID", &key)
        .run();
    base.assert_success();
    let base_ref = base.output("image-uri").to_string();
    // Remove it locally, so the build must pull it from the registry.
    docker(&["rmi", "-f", &base_ref]);

    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!("FROM {base_ref}\nCMD [\"cat\", \"/base.txt\"]\n"),
    );
    let run = standin
        .action(ws.path())
        .input("repository", &unique("app"))
        .input("pull", "true")
        .env("AWS_ACCESS_KEY_ID", &key)
        .run();
    run.assert_success();
    assert_eq!(
        docker(&["run", "--rm", run.output("image-uri")]),
        "private-base"
    );
    // The direct push mounts the base's layers from its repository instead of sending
    // them again (as ECR does with BLOB_MOUNTING on).
    if run.stderr.contains("(direct)") {
        let mounted = format!("Mounted from {base_repo}");
        assert_eq!(run.stderr.matches(&mounted).count(), 2, "{}", run.stderr);
    }
    let _ = docker_output(&["rmi", "-f", run.output("image-uri"), &base_ref]);
}

/// Repository settings apply on creation (IMMUTABLE, scan off, resource tags) and
/// policies are applied, then left alone when unchanged on the next run.
#[test]
fn repository_settings_and_policies_apply_idempotently() {
    let standin = standin();
    let repo = unique("settings");
    let ws = example_workspace();
    ws.write("policy.yml", "rules:\n  - rulePriority: 1\n    selection:\n      tagStatus: untagged\n      countType: sinceImagePushed\n      countUnit: days\n      countNumber: 14\n    action:\n      type: expire\n");
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::210987654321:root"},"Action":["ecr:BatchGetImage"]}]}"#;
    let first = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "one")
        .input("image-tag-mutability", "IMMUTABLE")
        .input("scan-on-push", "false")
        .input("repository-tags", "team=platform")
        .input("lifecycle-policy", "policy.yml")
        .input("repository-policy", policy)
        .run();
    first.assert_success();
    let repository = standin.repository(&repo).unwrap();
    assert_eq!(repository["imageTagMutability"], "IMMUTABLE");
    assert_eq!(
        repository["imageScanningConfiguration"]["scanOnPush"],
        false
    );
    let lifecycle = standin.moto(
        "GetLifecyclePolicy",
        &serde_json::json!({"repositoryName": repo}),
    );
    let text: serde_json::Value =
        serde_json::from_str(lifecycle["lifecyclePolicyText"].as_str().unwrap()).unwrap();
    assert_eq!(text["rules"][0]["selection"]["countNumber"], 14);
    let tags = standin.moto(
        "ListTagsForResource",
        &serde_json::json!({"resourceArn": repository["repositoryArn"]}),
    );
    assert_eq!(tags["tags"][0]["Key"], "team");
    assert!(
        first.summary.contains("| Lifecycle policy | applied |"),
        "{}",
        first.summary
    );

    let second = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "two")
        .input("lifecycle-policy", "policy.yml")
        .input("repository-policy", policy)
        .run();
    second.assert_success();
    // The defaults (MUTABLE, scan on) differ from the repository's settings, which stay.
    let warning = second
        .stderr
        .lines()
        .find(|l| l.starts_with("::warning::"))
        .expect("a warning");
    assert!(
        warning.contains("image-tag-mutability is IMMUTABLE (asked for MUTABLE)"),
        "{warning}"
    );
    assert_eq!(
        standin.repository(&repo).unwrap()["imageTagMutability"],
        "IMMUTABLE"
    );
    assert!(
        second.summary.contains("| Lifecycle policy | unchanged |"),
        "{}",
        second.summary
    );
    assert!(
        second.summary.contains("| Repository policy | unchanged |"),
        "{}",
        second.summary
    );
}

/// An existing tag in an IMMUTABLE repository fails before anything is built, naming the
/// tag and its digest (`on-tag-exists: fail`, the default); with `overwrite` the run
/// builds, and still fails (the new image is another one) with the tag where it was and
/// no outputs.
#[test]
fn an_immutable_tag_cannot_be_overwritten() {
    let standin = standin();
    let repo = unique("immutable");
    let ws = example_workspace();
    let first = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1")
        .input("image-tag-mutability", "IMMUTABLE")
        .run();
    first.assert_success();
    let digest = first.output("image-digest").to_string();

    ws.write("app.txt", "a different image\n");
    let second = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v2,v1")
        .run();
    assert!(!second.success);
    let errors = second.error_lines();
    assert_eq!(errors.len(), 1, "{}", second.stderr);
    assert!(
        errors[0].contains(&format!(
            "tag `v1` (at {digest}) already exists in the IMMUTABLE repository"
        )),
        "{}",
        errors[0]
    );
    assert!(
        !second.stderr.contains(BUILD_STARTED),
        "fail: the build started"
    );
    assert_eq!(second.output_file, "");
    assert_eq!(standin.registry_digest(&repo, "v2"), None);

    let overwrite = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1")
        .input("on-tag-exists", "overwrite")
        .run();
    assert!(!overwrite.success, "{}", overwrite.stderr);
    assert_eq!(overwrite.error_lines().len(), 1, "{}", overwrite.stderr);
    assert!(
        overwrite.error_lines()[0].contains("immutable"),
        "{}",
        overwrite.stderr
    );
    assert!(overwrite.stderr.contains(BUILD_STARTED), "overwrite builds");
    assert_eq!(overwrite.output_file, "");
    assert_eq!(standin.registry_digest(&repo, "v1"), Some(digest));
}

/// `on-tag-exists: skip` builds nothing when every tag exists at one image, and outputs
/// that image; when only some exist in an IMMUTABLE repository it fails, naming them.
#[test]
fn on_tag_exists_skip_reuses_the_existing_image() {
    let standin = standin();
    let repo = unique("skip");
    let ws = example_workspace();
    let first = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1,stable")
        .input("image-tag-mutability", "IMMUTABLE")
        .run();
    first.assert_success();

    ws.write("app.txt", "changed, but not rebuilt\n");
    let again = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1,stable")
        .input("on-tag-exists", "skip")
        .run();
    again.assert_success();
    assert!(!again.stderr.contains(BUILD_STARTED), "nothing is built");
    for output in [
        "image-digest",
        "image-uri-by-digest",
        "image-uri",
        "image-uris",
        "image-id",
    ] {
        assert_eq!(again.output(output), first.output(output), "{output}");
    }
    assert!(again.summary.contains("not rebuilt"), "{}", again.summary);

    let partly = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1,v2")
        .input("on-tag-exists", "skip")
        .run();
    assert!(!partly.success);
    assert!(
        partly.error_lines()[0].contains("tag `v1`"),
        "{}",
        partly.stderr
    );
    assert!(!partly.stderr.contains(BUILD_STARTED));
}

/// Re-running the same inputs on a MUTABLE repository succeeds again: both tags move to
/// the second run's image, whose content is the first's, and nothing fails or is left
/// half-done. (The classic builder even reuses the same image; BuildKit stamps each
/// build's config with its time, so its digest differs.)
#[test]
fn rerunning_on_a_mutable_repository_is_idempotent() {
    let standin = standin();
    let repo = unique("rerun");
    let ws = example_workspace();
    // A build chain of its own: the classic builder's cache is keyed by parent image, and
    // other tests remove images built from the shared example (with untagged parents).
    ws.write(
        "Dockerfile",
        &format!("FROM {BASE}\nLABEL test.id={repo}\nCOPY . /app/\nRUN echo built > /built\n"),
    );
    // Each run's layers are read at once: on the containerd store the first run's image
    // is gone once the second build takes its tag.
    let (runs, layers): (Vec<_>, Vec<_>) = (0..2)
        .map(|_| {
            // The default `org.opencontainers.image.created` label is the build's time
            // unless SOURCE_DATE_EPOCH fixes it, as a reproducible rerun does.
            let run = standin
                .action(ws.path())
                .input("repository", &repo)
                .input("tags", "v1,latest")
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .run();
            run.assert_success();
            let layers = docker(&[
                "image",
                "inspect",
                "-f",
                "{{json .RootFS.Layers}}",
                run.output("image-id"),
            ]);
            (run, layers)
        })
        .unzip();
    let second = runs[1].output("image-digest");
    for tag in ["v1", "latest"] {
        assert_eq!(
            standin.registry_digest(&repo, tag).as_deref(),
            Some(second),
            "{tag}"
        );
    }
    if runs[1].stderr.contains("building with the classic builder") {
        assert_eq!(runs[0].output("image-digest"), second, "{}", runs[1].stderr);
    }
    assert_eq!(layers[0], layers[1], "the same content");
    // The second direct push knows every layer from the first run's image: none is
    // compressed again.
    if runs[1].stderr.contains("(direct)") {
        assert!(
            !runs[1].stderr.contains(": Compressed "),
            "{}",
            runs[1].stderr
        );
        // The same image again on the containerd store (the classic builder reuses it):
        // its manifest is in the repository, so nothing is even read from the engine.
        let expected = if engine_is_containerd_store() && runs[0].output("image-digest") == second {
            "Manifest already exists".to_string()
        } else {
            format!("(known from {repo}: not compressed)")
        };
        assert!(runs[1].stderr.contains(&expected), "{}", runs[1].stderr);
    }
}

/// With `create-repository: false` a missing repository fails before the build, naming it.
#[test]
fn a_missing_repository_fails_when_creation_is_off() {
    let standin = standin();
    let repo = unique("missing");
    let run = standin
        .action(example_workspace().path())
        .input("repository", &repo)
        .input("create-repository", "false")
        .run();
    assert!(!run.success);
    assert_eq!(run.error_lines().len(), 1, "{}", run.stderr);
    assert!(run.error_lines()[0].contains(&repo), "{}", run.stderr);
    assert!(
        !run.stderr.contains(BUILD_STARTED),
        "the build must not start"
    );
    assert!(standin.repository(&repo).is_none());
}

/// A failing `RUN` fails the run with one error annotation pointing at its Dockerfile
/// line, and nothing is pushed.
#[test]
fn a_failing_run_step_points_at_its_dockerfile_line() {
    let standin = standin();
    let repo = unique("runfails");
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!("FROM {BASE}\n\n# fails\nRUN echo about to fail && \\\n    false\n"),
    );
    let run = standin.action(ws.path()).input("repository", &repo).run();
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("file=Dockerfile,"), "{}", errors[0]);
    assert!(errors[0].contains("line=4"), "{}", errors[0]);
    // The classic builder says "returned a non-zero code: 1", BuildKit "exit code: 1".
    assert!(
        errors[0].contains("non-zero code: 1") || errors[0].contains("exit code: 1"),
        "{}",
        errors[0]
    );
    assert_eq!(standin.registry_digest(&repo, "latest"), None);
    assert_eq!(run.output_file, "");
}

/// `target` stops at a stage and `platform` builds for another architecture (no RUN, so
/// no emulation is needed).
#[test]
fn target_and_platform_are_honoured() {
    let standin = standin();
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        "FROM scratch AS first\nCOPY a.txt /\n\nFROM scratch AS second\nCOPY b.txt /\n",
    )
    .write("a.txt", "a\n")
    .write("b.txt", "b\n");
    let run = standin
        .action(ws.path())
        .input("repository", &unique("stages"))
        .input("target", "first")
        .input("platform", "linux/arm64")
        .run();
    run.assert_success();
    let image = run.output("image-uri-by-digest");
    let layers = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Architecture}} {{len .RootFS.Layers}}",
        run.output("image-uri"),
    ]);
    assert_eq!(layers, "arm64 1");
    let _ = image;
    let _ = docker_output(&["rmi", "-f", run.output("image-uri")]);
}

/// Run by hand with `--flags`: outputs go to stdout as name=value lines.
#[test]
fn runs_by_hand_with_flags_and_prints_outputs() {
    let standin = standin();
    let repo = unique("byhand");
    let ws = example_workspace();
    let run = standin
        .action(ws.path())
        .by_hand(&["--repository", &repo, "--tags", "cli", "--no-cache"])
        .run();
    run.assert_success();
    let outputs: std::collections::BTreeMap<&str, &str> = run
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let digest = outputs["image-digest"];
    assert_eq!(
        standin.registry_digest(&repo, "cli").as_deref(),
        Some(digest)
    );
    assert!(
        !run.stderr.contains("::"),
        "no workflow commands outside a runner"
    );
}

/// A Docker daemon that is not there fails first, with advice.
#[test]
fn a_missing_docker_daemon_fails_first_with_advice() {
    let standin = standin();
    let run = standin
        .action(example_workspace().path())
        .input("repository", &unique("nodocker"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .run();
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("/nonexistent/docker.sock does not exist"),
        "{}",
        errors[0]
    );
}

/// Credentials from a shared profile (with a session token, as role assumption gives),
/// the region from the `aws-region` input, and an explicit `registry-id`: the default AWS
/// chain is honoured, not just environment keys.
#[test]
fn credentials_from_a_profile_and_region_from_the_input() {
    let standin = standin();
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[deploy]\naws_access_key_id = AKIAPROFILEEXAMPLE\n\
         aws_secret_access_key = profile/secret/EXAMPLEKEY\naws_session_token = FwoGZXIvYXdzEXAMPLE\n",
    )
    .unwrap();
    let repo = unique("profile");
    let run = standin
        .action(example_workspace().path())
        .input("repository", &repo)
        .input("aws-region", REGION)
        .input("registry-id", ACCOUNT)
        .remove_env("AWS_ACCESS_KEY_ID")
        .remove_env("AWS_SECRET_ACCESS_KEY")
        .remove_env("AWS_REGION")
        .remove_env("AWS_DEFAULT_REGION")
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap())
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_PROFILE", "deploy")
        .run();
    run.assert_success();
    assert_eq!(
        standin.registry_digest(&repo, "latest").as_deref(),
        Some(run.output("image-digest"))
    );
    assert!(!run.stderr.contains("profile/secret/EXAMPLEKEY"));
    assert!(!run.stderr.contains("FwoGZXIvYXdzEXAMPLE"));
}

/// `encryption-type: KMS` with a key creates the repository with that encryption.
#[test]
fn kms_encryption_applies_on_creation() {
    let standin = standin();
    let repo = unique("kms");
    let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let run = standin
        .action(example_workspace().path())
        .input("repository", &repo)
        .input("encryption-type", "KMS")
        .input("kms-key", key)
        .run();
    run.assert_success();
    let repository = standin.repository(&repo).unwrap();
    assert_eq!(
        repository["encryptionConfiguration"]["encryptionType"],
        "KMS"
    );
    assert_eq!(repository["encryptionConfiguration"]["kmsKey"], key);
    assert!(
        run.summary.contains("| Encryption | KMS |"),
        "{}",
        run.summary
    );
}
