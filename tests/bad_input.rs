//! Bad input, on the real stand-in: every bad value of every input (and a bad
//! Dockerfile, `.dockerignore`, region or missing credentials) fails with exactly one
//! `::error::` line that names the input or the Dockerfile line, a non-zero exit, no
//! outputs, no tag in the registry, and no repository when validation failed.

mod support;

use support::{standin, unique, RunResult, Workspace, BUILD_STARTED};

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("Dockerfile", "FROM local/busybox:latest\nCOPY app.txt /\n")
        .write("app.txt", "app\n")
        .write("docs/README.md", "docs\n");
    ws
}

/// The checks every failed run must pass. `validation` is true when the failure is an
/// input check, which must come before any change in AWS.
fn assert_failed_cleanly(case: &str, run: &RunResult, repo: &str, names: &str, validation: bool) {
    let standin = standin();
    assert!(!run.success, "{case}: should fail");
    let errors = run.error_lines();
    assert_eq!(
        errors.len(),
        1,
        "{case}: exactly one error line, got:\n{}",
        run.stderr
    );
    assert!(
        errors[0].contains(names),
        "{case}: the error should name {names}: {}",
        errors[0]
    );
    assert_eq!(run.output_file, "", "{case}: no outputs");
    assert_eq!(
        standin.registry_digest(repo, "latest"),
        None,
        "{case}: a tag was pushed"
    );
    if validation {
        assert!(
            standin.repository(repo).is_none(),
            "{case}: a repository was created"
        );
        assert!(
            !run.stderr.contains(BUILD_STARTED),
            "{case}: the build started"
        );
    }
}

/// Bad values for every input: 40 and more, each failing before anything happens.
#[test]
fn bad_values_for_every_input_fail_before_anything_happens() {
    let standin = standin();
    let long_tag = "x".repeat(129);
    let long_repo = "a".repeat(300);
    let cases: &[(&str, &str)] = &[
        ("repository", "MyApp"),
        ("repository", "team/../app"),
        ("repository", "/app"),
        ("repository", &long_repo),
        ("repository", "a"),
        ("repository", "app-"),
        ("repository", "te am"),
        ("repository", "team//app"),
        ("tags", "bad:tag"),
        ("tags", &long_tag),
        ("tags", ".hidden"),
        ("tags", "-dash"),
        ("tags", " , \n"),
        ("tags", "a b"),
        ("tags", "v1,feature/x"),
        ("tags", "v-{{commit}}"),
        ("tags", "{{sha"),
        ("tags", "{{version}}"),
        ("default-labels", "yes"),
        ("scan", "on"),
        ("scan-fail-on", "SEVERE"),
        ("scan-ignore", "CVE-1 and more"),
        ("scan-timeout", "10"),
        ("scan-timeout", "0s"),
        ("scan-timeout", "2d"),
        ("context", "does-not-exist"),
        ("context", "app.txt"),
        ("dockerfile", "nope/Dockerfile"),
        ("dockerfile", "docs"),
        ("context", "https://github.com/octo/app.git#main"),
        ("build-args", "NOEQUALS"),
        ("build-args", "=value"),
        ("labels", "nolabel"),
        ("labels", "a=b\nbad"),
        ("target", "two words"),
        ("platform", "linux/amd64,linux/x86_64"),
        ("platform", "linux"),
        ("platform", "linux/amd64/v2/x"),
        ("platforms", "linux/arm64,linux/arm64/v8"),
        ("platforms", "linux/amd64,linux/sparc99"),
        ("platforms", "beos/amd64"),
        ("platform-hosts", "linux/arm64=unix:///var/run/docker.sock"),
        ("pull", "yes"),
        ("no-cache", "1"),
        ("push", "maybe"),
        ("create-repository", "nope"),
        ("image-tag-mutability", "maybe"),
        ("image-tag-mutability", "IMMUTABLE_WITH_EXCLUSION"),
        ("image-tag-mutability-exclusions", "latest"),
        ("scan-on-push", "on"),
        ("encryption-type", "DES"),
        ("kms-key", "alias/key"),
        ("repository-tags", "team"),
        ("lifecycle-policy", "{not json"),
        ("lifecycle-policy", "missing.json"),
        ("lifecycle-policy", r#"{"rules": []}"#),
        ("lifecycle-policy", "[1, 2]"),
        ("repository-policy", r#"{"Version": "2012-10-17"}"#),
        ("repository-policy", "nofile.json"),
        ("on-tag-exists", "replace"),
        ("registry-id", "12345"),
        ("registry-id", "abcdefghijkl"),
        ("aws-region", "moon-base"),
        ("aws-region", "US-EAST-1"),
    ];
    assert!(cases.len() >= 40);
    for (input, value) in cases {
        let repo = if *input == "repository" {
            (*value).to_string()
        } else {
            unique("bad")
        };
        let run = standin
            .action(workspace().path())
            .input("repository", &repo)
            .input(input, value)
            .run();
        let case = format!("{input}={value:?}");
        assert_failed_cleanly(&case, &run, &repo, &format!("`{input}`"), true);
    }
    let run = standin.action(workspace().path()).run();
    assert_failed_cleanly(
        "no repository",
        &run,
        &unique("never"),
        "`repository`",
        true,
    );
    println!("bad input values tried: {}", cases.len() + 1);
}

/// Bad multi-platform input, given with the inputs it goes with: a platform named twice
/// (in two spellings), an unknown one, a `platform-hosts` line for a platform not in
/// `platforms`, an unreachable platform host (TCP and socket), both names of the
/// platform input, and the daemon's pusher for an index. Each fails before anything is
/// built or created, naming the input.
#[test]
fn bad_platform_input_fails_before_anything_happens() {
    let standin = standin();
    let two = ("platforms", "linux/amd64,linux/arm64");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("platforms", "linux/amd64, linux/x86_64")], "`platforms`"),
        (&[("platforms", "linux/amd64\nlinux/armv99")], "`platforms`"),
        (
            &[
                two,
                ("platform-hosts", "linux/s390x=unix:///var/run/docker.sock"),
            ],
            "`platform-hosts`",
        ),
        (
            &[two, ("platform-hosts", "linux/arm64=tcp://127.0.0.1:1")],
            "`platform-hosts`",
        ),
        (
            &[
                two,
                (
                    "platform-hosts",
                    "linux/arm64=unix:///run/no-such-engine.sock",
                ),
            ],
            "`platform-hosts`",
        ),
        (&[two, ("platform", "linux/amd64")], "`platform`"),
        (&[two, ("push-engine", "daemon")], "`push-engine`"),
    ];
    for (inputs, names) in cases {
        let repo = unique("badplat");
        let ws = workspace();
        // Several platforms need BuildKit and the direct push: the defaults, pinned so
        // the suite's classic/daemon run (scripts/test) still reaches each case's error.
        let mut action = standin
            .action(ws.path())
            .input("repository", &repo)
            .input("builder", "auto")
            .input("push-engine", "auto");
        for (name, value) in *inputs {
            action = action.input(name, value);
        }
        let run = action.run();
        assert_failed_cleanly(&format!("{inputs:?}"), &run, &repo, names, true);
    }
    // The unreachable host is named with the platform, and the reason is given.
    let repo = unique("badplat");
    let run = standin
        .action(workspace().path())
        .input("repository", &repo)
        .input("builder", "auto")
        .input("push-engine", "auto")
        .input("platforms", two.1)
        .input("platform-hosts", "linux/arm64=tcp://127.0.0.1:1")
        .run();
    let error = run.error_lines()[0];
    assert!(
        error.contains("linux/arm64") && error.contains("cannot be reached"),
        "{error}"
    );
}

/// A case: inputs given, the input the error names, and the reason it gives.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

/// Bad tag mutability input, each with the inputs it goes with: six exclusion filters, a
/// filter with a character ECR refuses, filters without a `*_WITH_EXCLUSION` setting, and
/// a `*_WITH_EXCLUSION` setting without filters. Each fails before anything is built or
/// created, naming the input and what is wrong.
#[test]
fn bad_tag_mutability_input_fails_before_anything_happens() {
    let standin = standin();
    let with = ("image-tag-mutability", "IMMUTABLE_WITH_EXCLUSION");
    let filters = "image-tag-mutability-exclusions";
    let cases: &[Case] = &[
        (
            &[with, (filters, "a,b,c,d,e,f")],
            "`image-tag-mutability-exclusions`",
            "6 filters given; ECR allows 1 to 5",
        ),
        (
            &[with, (filters, "latest\nfeature/*")],
            "`image-tag-mutability-exclusions`",
            "filter `feature/*` has `/`",
        ),
        (
            &[(filters, "latest")],
            "`image-tag-mutability-exclusions`",
            "(it is `MUTABLE`)",
        ),
        (
            &[("image-tag-mutability", "IMMUTABLE"), (filters, "latest")],
            "`image-tag-mutability-exclusions`",
            "(it is `IMMUTABLE`)",
        ),
        (
            &[with],
            "`image-tag-mutability`",
            "needs the tags it excludes",
        ),
        (
            &[("image-tag-mutability", "MUTABLE_WITH_EXCLUSION")],
            "`image-tag-mutability`",
            "`image-tag-mutability-exclusions`",
        ),
    ];
    for (inputs, names, reason) in cases {
        let repo = unique("badmut");
        let ws = workspace();
        let mut action = standin.action(ws.path()).input("repository", &repo);
        for (name, value) in *inputs {
            action = action.input(name, value);
        }
        let run = action.run();
        let case = format!("{inputs:?}");
        assert_failed_cleanly(&case, &run, &repo, names, true);
        assert!(
            run.error_lines()[0].contains(reason),
            "{case}: {}",
            run.error_lines()[0]
        );
    }
}

/// A Dockerfile syntax error and a failing `RUN` point at their Dockerfile line; nothing
/// is pushed.
#[test]
fn dockerfile_errors_point_at_the_line() {
    let standin = standin();
    let cases = [
        (
            "FROM local/busybox:latest\n\nFROBNICATE now\n",
            "line=3",
            "unknown instruction",
        ),
        (
            "FROM local/busybox:latest\nRUN true\nRUN exit 3\n",
            "line=3",
            "code: 3",
        ),
        (
            "FROM local/busybox:latest\nCOPY missing.txt /\n",
            "line=2",
            "missing.txt",
        ),
    ];
    for (dockerfile, line, message) in cases {
        let ws = workspace();
        ws.write("Dockerfile", dockerfile);
        let repo = unique("dockerfile");
        let run = standin.action(ws.path()).input("repository", &repo).run();
        // "returned a non-zero code: 3" (classic) or "exit code: 3" (BuildKit)
        assert_failed_cleanly(message, &run, &repo, line, false);
        let error = run.error_lines()[0];
        assert!(error.contains("file=Dockerfile,"), "{error}");
        assert!(error.contains(message), "{error}");
    }
}

/// An illegal `.dockerignore` pattern fails before any AWS work, naming the line.
#[test]
fn an_illegal_dockerignore_pattern_fails_first() {
    let standin = standin();
    let ws = workspace();
    ws.write(".dockerignore", "# fine\n*.log\nsrc/[abc\n");
    let repo = unique("ignore");
    let run = standin.action(ws.path()).input("repository", &repo).run();
    assert_failed_cleanly(".dockerignore", &run, &repo, "line 3", true);
    assert!(
        run.error_lines()[0].contains("src/[abc"),
        "{}",
        run.error_lines()[0]
    );
}

/// No credentials at all (no keys, no profile, no web identity, metadata off) fails
/// before the build and says what to do.
#[test]
fn no_credentials_at_all_fails_first() {
    let standin = standin();
    let repo = unique("nocreds");
    let run = standin
        .action(workspace().path())
        .input("repository", &repo)
        .remove_env("AWS_ACCESS_KEY_ID")
        .remove_env("AWS_SECRET_ACCESS_KEY")
        .remove_env("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .run();
    assert_failed_cleanly("no credentials", &run, &repo, "no AWS credentials", true);
    assert!(run.error_lines()[0].contains("configure-aws-credentials"));
}
