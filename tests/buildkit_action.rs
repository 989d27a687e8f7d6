//! BuildKit through the action, on the stand-in: a modern Dockerfile is built (`builder:
//! auto` picks BuildKit on Engine 26.1), pushed and run; build secrets from a file and
//! from an environment variable reach `RUN` and nothing else: no layer, no config, no
//! history, no log line.

mod support;

use support::{docker, docker_output, standin, unique, Workspace};

const MODERN: &str = r#"FROM local/busybox:latest AS base
RUN --mount=type=cache,target=/cache \
    echo "run $(date +%s%N)" >> /cache/runs && wc -l < /cache/runs > /cache-runs
COPY <<EOF /greeting
hello from a heredoc
EOF
RUN <<EOT
set -e
echo "heredoc script ran" > /script-ran
EOT

FROM base AS final
COPY app.txt /app.txt
CMD ["cat", "/greeting", "/script-ran", "/app.txt"]

FROM base AS unused
RUN exit 7
"#;

/// Cache mounts, heredocs and a multi-stage build with `target` build under `auto`
/// (BuildKit), are pushed, and the pulled image runs; the log shows readable steps and
/// the summary counts cached steps.
#[test]
fn a_modern_dockerfile_builds_and_pushes_with_buildkit() {
    let standin = standin();
    let repo = unique("bk/modern");
    let ws = Workspace::new();
    ws.write("Dockerfile", MODERN)
        .write("app.txt", &format!("{repo}\n"));
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("target", "final")
        .input("builder", "auto")
        .run();
    run.assert_success();
    assert!(
        run.stderr
            .contains("building with BuildKit (auto: the daemon supports it)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("[base 3/4] COPY <<EOF /greeting"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(" DONE "), "{}", run.stderr);
    assert!(
        run.summary.contains("| Builder | BuildKit: "),
        "{}",
        run.summary
    );
    let by_digest = run.output("image-uri-by-digest");
    assert_eq!(
        pushed_image_output(&run, &repo),
        format!("hello from a heredoc\nheredoc script ran\n{repo}")
    );
    // Inline cache metadata travels in the image config, for the next run's cache-from.
    let saved = docker_output(&["save", by_digest]);
    assert!(String::from_utf8_lossy(&saved.stdout).contains("moby.buildkit.cache.v0"));
    let _ = docker_output(&["rmi", "-f", by_digest]);
}

/// A secret from a file (outside the context) and one from the step's environment reach
/// `RUN --mount=type=secret`; their values are in no layer (`docker save` of the pulled
/// image), not in the config or the history, and in no log line but their mask.
#[test]
fn build_secrets_reach_run_and_nothing_else() {
    let standin = standin();
    let repo = unique("bk/secrets");
    let file_secret = format!("file-secret-{repo}-{}", std::process::id());
    let env_secret = format!("env-secret-{repo}-{}", std::process::id());
    let ws = Workspace::new();
    ws.write("secret.txt", &file_secret).write(
        "app/Dockerfile",
        "FROM local/busybox:latest\n\
         RUN --mount=type=secret,id=token --mount=type=secret,id=api \
         test \"$(cat /run/secrets/token)\" != '' && test \"$(cat /run/secrets/api)\" != '' \
         && sha256sum /run/secrets/token /run/secrets/api | cut -d' ' -f1 > /hashes\n",
    );
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("context", "app")
        .input("builder", "buildkit")
        .input("no-cache", "true")
        .input("secrets", "id=token,src=secret.txt\nid=api,env=API_KEY")
        .env("API_KEY", &env_secret)
        .run();
    run.assert_success();

    // They reached the RUN: the hashes it wrote are theirs.
    let by_digest = run.output("image-uri-by-digest").to_string();
    let _ = docker_output(&["rmi", "-f", run.output("image-uri")]);
    standin.docker_pull(&by_digest);
    let hashes = docker(&["run", "--rm", &by_digest, "cat", "/hashes"]);
    let sha = |value: &str| {
        use sha2::Digest as _;
        use std::fmt::Write as _;
        sha2::Sha256::digest(value.as_bytes())
            .iter()
            .fold(String::new(), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            })
    };
    assert_eq!(
        hashes,
        format!("{}\n{}", sha(&file_secret), sha(&env_secret))
    );

    let saved = docker_output(&["save", &by_digest]);
    let layers = String::from_utf8_lossy(&saved.stdout);
    let inspect = docker(&["image", "inspect", &by_digest]);
    let history = docker(&["history", "--no-trunc", &by_digest]);
    for secret in [&file_secret, &env_secret] {
        assert!(!layers.contains(secret.as_str()), "a layer holds a secret");
        assert!(
            !inspect.contains(secret.as_str()),
            "the config holds a secret"
        );
        assert!(
            !history.contains(secret.as_str()),
            "the history holds a secret"
        );
        for line in run
            .stderr
            .lines()
            .chain(run.stdout.lines())
            .filter(|l| l.contains(secret.as_str()))
        {
            assert_eq!(line, format!("::add-mask::{secret}"), "a secret in the log");
        }
        assert!(
            run.stderr.contains(&format!("::add-mask::{secret}")),
            "each secret is masked"
        );
        assert!(
            !run.output_file.contains(secret.as_str()) && !run.summary.contains(secret.as_str())
        );
    }
    let _ = docker_output(&["rmi", "-f", &by_digest]);
}

/// A secret whose environment variable is not set fails before anything happens, naming
/// the input; a secret file that does not exist fails likewise.
#[test]
fn a_missing_secret_fails_first() {
    let standin = standin();
    let ws = Workspace::new();
    ws.write("Dockerfile", "FROM local/busybox:latest\n");
    for secrets in ["id=api,env=NOT_SET_ANYWHERE", "id=token,src=nope.txt"] {
        let repo = unique("bk/nosecret");
        let run = standin
            .action(ws.path())
            .input("repository", &repo)
            .input("secrets", secrets)
            .run();
        assert!(!run.success, "{secrets}");
        let errors = run.error_lines();
        assert_eq!(errors.len(), 1, "{}", run.stderr);
        assert!(errors[0].contains("`secrets`"), "{}", errors[0]);
        assert!(standin.repository(&repo).is_none());
    }
}

/// Over a TLS `DOCKER_HOST` (the stand-in's mutual-TLS forward, with the client
/// certificate of `DOCKER_CERT_PATH`), `auto` builds with BuildKit: the session (the
/// context over `FileSync`, a build secret) and the build go over TLS, and the image is
/// pushed and runs.
#[test]
fn a_tls_docker_host_builds_with_buildkit_and_pushes() {
    let standin = standin();
    let repo = unique("bk/tls");
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        "FROM local/busybox:latest\nCOPY app.txt /app.txt\n\
         RUN --mount=type=secret,id=token,required=true test -s /run/secrets/token\n\
         CMD [\"cat\", \"/app.txt\"]\n",
    )
    .write("app.txt", &format!("{repo}\n"));
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("secrets", "id=token,env=TLS_TEST_TOKEN")
        .env("TLS_TEST_TOKEN", "value-over-tls")
        .env("DOCKER_HOST", &standin.var("STANDIN_DOCKER_TLS"))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &standin.var("STANDIN_DOCKER_CERT_PATH"))
        .run();
    run.assert_success();
    for expected in [
        "building with BuildKit (auto: the daemon supports it)",
        "sent over the BuildKit session (FileSync)",
        "build context sent over the session: 1 file",
    ] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert_eq!(pushed_image_output(&run, &repo), repo);
    let _ = docker_output(&["rmi", "-f", run.output("image-uri-by-digest")]);
}

/// Checks that the registry holds the run's digest under `latest`, then pulls the image
/// by digest (the local tag removed first) and returns what it prints when run.
fn pushed_image_output(run: &support::RunResult, repo: &str) -> String {
    let standin = standin();
    let digest = run.output("image-digest");
    assert_eq!(
        standin.registry_digest(repo, "latest").as_deref(),
        Some(digest)
    );
    let by_digest = run.output("image-uri-by-digest");
    let _ = docker_output(&["rmi", "-f", run.output("image-uri")]);
    standin.docker_pull(by_digest);
    docker(&["run", "--rm", by_digest])
}

/// Regression: "warnings vanish". BuildKit's own warnings about the Dockerfile (its lint
/// checks, BuildKit 0.14 and later: Docker 27+) were collected, then dropped, and a
/// warning given while the build's output ran (workflow commands stopped) never became
/// an annotation. Now each BuildKit warning is a `::warning file=…,line=…::` annotation,
/// given after the build's output has ended. (Docker 26's BuildKit has no lint checks:
/// there the step has none.)
#[test]
fn buildkit_warnings_become_annotations_after_the_build() {
    let standin = standin();
    let repo = unique("bk-warnings");
    let ws = Workspace::new();
    // `as` in lower case after an upper-case `FROM`: BuildKit's FromAsCasing check.
    ws.write(
        "Dockerfile",
        "FROM local/busybox:latest as base\nCMD [\"true\"]\n",
    );
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("builder", "buildkit")
        .run();
    run.assert_success();
    let major: u32 = support::docker(&["info", "--format", "{{.ServerVersion}}"])
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("a version");
    let annotations: Vec<usize> = run
        .stderr
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("::warning file=Dockerfile,line=1::"))
        .map(|(i, _)| i)
        .collect();
    if major < 27 {
        assert!(annotations.is_empty(), "{}", run.stderr);
        return;
    }
    assert_eq!(annotations.len(), 1, "{}", run.stderr);
    // After the line that resumes workflow commands (`::<token>::`).
    let resumed = run
        .stderr
        .lines()
        .position(|l| l.len() == 36 && l.starts_with("::") && l.ends_with("::") && !l.contains(' '))
        .expect("workflow commands resume");
    assert!(annotations[0] > resumed, "{}", run.stderr);
    assert!(
        run.stderr
            .lines()
            .nth(annotations[0])
            .unwrap()
            .contains("as"),
        "{}",
        run.stderr
    );
}
