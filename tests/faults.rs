//! Faults injected by the stand-in's front (between the Docker daemon and the registry,
//! and in front of the ECR API): what a retry can cure is retried, with each attempt
//! logged; what it cannot ends in one clear error. Every rule is pinned to the test's own
//! repository (or operation), so tests can run side by side.

mod support;

use std::time::Instant;

use serde_json::json;
use support::{
    auto_pushes_blobs_through_the_daemon, standin, unique, RunResult, Workspace, BUILD_STARTED,
};

fn workspace(repo: &str) -> Workspace {
    let ws = Workspace::new();
    // Content of its own, so the push has a layer to upload.
    ws.write(
        "Dockerfile",
        "FROM local/busybox:latest\nCOPY payload.txt /\n",
    )
    .write("payload.txt", &format!("{repo}\n{}", "x".repeat(200_000)));
    ws
}

/// How many pushes of the repository the front saw answered with an injected fault.
/// How many requests one push attempt makes of a manifest or blob the registry keeps
/// answering 503: one, but two from containerd's pusher (the route of `auto` on the
/// containerd store), which retries a 503 once itself.
fn requests_per_attempt() -> usize {
    if auto_pushes_blobs_through_the_daemon() {
        2
    } else {
        1
    }
}

fn injected_for(repo: &str) -> usize {
    let log = std::fs::read_to_string("/var/lib/ecr-build-push-standin/front-requests.log")
        .unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(&format!("/v2/{repo}/")) && l.contains("injected:"))
        .count()
}

fn assert_pushed(run: &RunResult, repo: &str) {
    run.assert_success();
    let digest = run.output("image-digest");
    assert_eq!(
        standin().registry_digest(repo, "latest").as_deref(),
        Some(digest)
    );
    assert_eq!(
        standin().moto_digest(repo, "latest").as_deref(),
        Some(digest)
    );
}

/// Two 503 answers to the manifest upload: the push is retried, each attempt logged with
/// its cause, and the image lands with the digest the outputs report.
#[test]
fn registry_503s_are_retried_until_they_clear() {
    let standin = standin();
    let repo = unique("faults/503");
    standin.inject_fault(
        &json!({"route": "registry", "mode": "status", "status": 503, "count": 2,
                  "method": "PUT", "path": format!("/v2/{repo}/manifests/")}),
    );
    let run = standin
        .action(workspace(&repo).path())
        .input("repository", &repo)
        .env("ECR_BUILD_PUSH_NO_RETRY_DELAY", "1")
        .run();
    assert_pushed(&run, &repo);
    let attempts: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("failed (attempt"))
        .collect();
    assert_eq!(injected_for(&repo), 2);
    assert_eq!(attempts.len(), 2 / requests_per_attempt(), "{}", run.stderr);
    // containerd's pusher names the registry's error code, not the status.
    assert!(
        attempts[0].contains("attempt 1 of 4")
            && (attempts[0].contains("503") || attempts[0].contains("unavailable")),
        "{}",
        attempts[0]
    );
    if let Some(second) = attempts.get(1) {
        assert!(second.contains("attempt 2 of 4"), "{second}");
    }
}

/// 429 (throttling) is retried, with ECR throttling's larger budget (8 attempts), and
/// logged as throttled: by the action (each attempt logged), or where containerd's pusher
/// carries the image, by that pusher itself.
#[test]
fn registry_throttling_is_retried() {
    let standin = standin();
    let repo = unique("faults/429");
    standin.inject_fault(
        &json!({"route": "registry", "mode": "status", "status": 429, "count": 1,
                  "method": "PUT", "path": format!("/v2/{repo}/manifests/")}),
    );
    let run = standin
        .action(workspace(&repo).path())
        .input("repository", &repo)
        .env("ECR_BUILD_PUSH_NO_RETRY_DELAY", "1")
        .run();
    assert_pushed(&run, &repo);
    assert_eq!(injected_for(&repo), 1);
    if auto_pushes_blobs_through_the_daemon() {
        return;
    }
    assert!(
        run.stderr.contains(" was throttled (attempt 1 of 8)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.to_lowercase().contains("toomanyrequests"),
        "{}",
        run.stderr
    );
}

/// A fault that outlasts the retry budget fails with one error that names the registry
/// and the attempts; nothing is output.
#[test]
fn a_registry_that_keeps_failing_ends_in_one_clear_error() {
    let standin = standin();
    let repo = unique("faults/down");
    standin.inject_fault(
        &json!({"route": "registry", "mode": "status", "status": 503, "count": 10,
                  "method": "PUT", "path": format!("/v2/{repo}/manifests/")}),
    );
    let run = standin
        .action(workspace(&repo).path())
        .input("repository", &repo)
        .env("ECR_BUILD_PUSH_NO_RETRY_DELAY", "1")
        .run();
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains(&standin.registry) && errors[0].contains("failed"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("(after 4 attempts)"), "{}", errors[0]);
    assert_eq!(run.output_file, "");
    assert_eq!(injected_for(&repo), 4 * requests_per_attempt());
}

/// A connection reset in the middle of a layer upload, and a slow answer: the pusher's
/// own upload retry and the action's patience get the image through.
#[test]
fn a_reset_upload_and_a_slow_registry_still_push() {
    let standin = standin();
    let repo = unique("faults/reset");
    // The layer's bytes travel in a PATCH, except from containerd's pusher (the blobs'
    // route under `auto` on the containerd store), which sends them in the closing PUT.
    let upload = if auto_pushes_blobs_through_the_daemon() {
        "PUT"
    } else {
        "PATCH"
    };
    standin.inject_fault(
        &json!({"route": "registry", "mode": "reset", "count": 1, "method": upload,
                  "path": format!("/v2/{repo}/blobs/uploads/")}),
    );
    standin.inject_fault(
        &json!({"route": "registry", "mode": "delay", "seconds": 2.5, "count": 1,
                  "method": "PUT", "path": format!("/v2/{repo}/manifests/")}),
    );
    let run = standin
        .action(workspace(&repo).path())
        .input("repository", &repo)
        .run();
    assert_pushed(&run, &repo);
    assert_eq!(injected_for(&repo), 2);
}

/// ECR API throttling and 5xx answers are retried by the SDK; with retries turned off
/// (`AWS_MAX_ATTEMPTS=1`) the same fault fails with AWS's code and advice.
#[test]
fn ecr_api_throttling_and_5xx_are_retried_by_the_sdk() {
    let standin = standin();
    let repo = unique("faults/api");
    standin.inject_fault(
        &json!({"route": "api", "mode": "status", "error": "ThrottlingException", "count": 1,
                  "action": "DescribeRepositories", "repository": repo}),
    );
    standin.inject_fault(
        &json!({"route": "api", "mode": "status", "status": 503, "count": 1,
                  "action": "DescribeRepositories", "repository": repo}),
    );
    let run = standin
        .action(workspace(&repo).path())
        .input("repository", &repo)
        .run();
    assert_pushed(&run, &repo);
    assert_eq!(
        standin.pending_faults(&repo),
        0,
        "both faults were answered"
    );

    let repo = unique("faults/api-once");
    standin.inject_fault(
        &json!({"route": "api", "mode": "status", "error": "ThrottlingException", "count": 1,
                  "action": "DescribeRepositories", "repository": repo}),
    );
    let run = standin
        .action(workspace(&repo).path())
        .input("repository", &repo)
        .env("AWS_MAX_ATTEMPTS", "1")
        .run();
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("ThrottlingException"), "{}", errors[0]);
    assert!(errors[0].contains("AWS_MAX_ATTEMPTS"), "{}", errors[0]);
}

/// Denied and expired credentials, and an unreachable endpoint, fail before the build,
/// quickly, saying which.
#[test]
fn bad_credentials_and_an_unreachable_endpoint_fail_fast() {
    let standin = standin();
    let cases = [
        (
            "AKIADENIEDEXAMPLE",
            None,
            "UnrecognizedClientException",
            "credentials were rejected",
        ),
        (
            "AKIAEXPIREDEXAMPLE",
            None,
            "ExpiredTokenException",
            "session has expired",
        ),
        (
            "AKIAIOSFODNN7EXAMPLE",
            Some("https://127.0.0.1:9"),
            "cannot reach the ECR API",
            "https://127.0.0.1:9",
        ),
    ];
    for (key, endpoint, code, advice) in cases {
        let repo = unique("faults/creds");
        let ws = workspace(&repo);
        let mut action = standin
            .action(ws.path())
            .input("repository", &repo)
            .env("AWS_ACCESS_KEY_ID", key);
        if let Some(endpoint) = endpoint {
            action = action.env("AWS_ENDPOINT_URL_ECR", endpoint);
        }
        let started = Instant::now();
        let run = action.run();
        assert!(!run.success, "{key}");
        let errors = run.error_lines();
        assert_eq!(errors.len(), 1, "{key}: {}", run.stderr);
        assert!(errors[0].contains(code), "{key}: {}", errors[0]);
        assert!(errors[0].contains(advice), "{key}: {}", errors[0]);
        assert!(
            !run.stderr.contains(BUILD_STARTED),
            "{key}: the build started"
        );
        assert!(
            started.elapsed().as_secs() < 15,
            "{key}: took {:?}",
            started.elapsed()
        );
        assert!(standin.repository(&repo).is_none());
    }
}

/// `DOCKER_HOST` over TCP, and over TCP with TLS and a client certificate, works end to
/// end; TLS without the certificates fails first with a message naming them.
#[test]
fn docker_host_over_tcp_and_tls() {
    let standin = standin();
    let tcp = standin.var("STANDIN_DOCKER_TCP");
    let tls = standin.var("STANDIN_DOCKER_TLS");
    let certs = standin.var("STANDIN_DOCKER_CERT_PATH");

    let repo = unique("faults/tcp");
    let run = standin
        .action(workspace(&repo).path())
        .input("repository", &repo)
        .env("DOCKER_HOST", &tcp)
        .run();
    assert_pushed(&run, &repo);

    let repo = unique("faults/tls");
    let run = standin
        .action(workspace(&repo).path())
        .input("repository", &repo)
        .env("DOCKER_HOST", &tls)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &certs)
        .run();
    assert_pushed(&run, &repo);

    let empty = tempfile::tempdir().unwrap();
    let run = standin
        .action(workspace(&repo).path())
        .input("repository", &unique("faults/nocert"))
        .env("DOCKER_HOST", &tls)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", empty.path().to_str().unwrap())
        .run();
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("Docker"), "{}", errors[0]);
    assert!(
        errors[0].contains(empty.path().to_str().unwrap()),
        "{}",
        errors[0]
    );
}
