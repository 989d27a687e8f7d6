//! Which pusher `push-engine: auto` sends the image with on the engine under test
//! (`DOCKER_HOST`), as `src/route.rs` chooses: the direct push, or on the containerd
//! store of Docker 27 and later (API 1.46) the daemon's pusher for the stored blobs and
//! the direct push for the other tags; and what each route does when its first pusher
//! meets an answer it cannot get past.

mod support;

use serde_json::json;
use support::{
    auto_pushes_blobs_through_the_daemon, default_push_route, docker, docker_output, standin,
    unique, Workspace,
};

fn workspace(repo: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        "FROM local/busybox:latest\nCOPY hello.txt /\nCMD [\"cat\", \"/hello.txt\"]\n",
    )
    .write("hello.txt", &format!("routed {repo}\n"));
    ws
}

/// Default inputs and three tags: the summary names the route this engine allows, every
/// tag is the one image manifest at `image-digest`, in the registry and in ECR, the log
/// says who sent what (on the blobs' route: the daemon's push under the first tag, the
/// other two put directly), and the image pulled by digest runs.
#[test]
fn auto_takes_the_route_its_engine_allows_for_every_tag() {
    let s = standin();
    let repo = unique("route/auto");
    let ws = workspace(&repo);
    let run = s
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1\nv1.2\nlatest")
        .run();
    run.assert_success();
    assert!(
        run.summary
            .contains(&format!("| Push engine | {} |", default_push_route())),
        "{}",
        run.summary
    );
    assert!(!run.stderr.contains("::warning::"), "{}", run.stderr);
    let digest = run.output("image-digest");
    for tag in ["v1", "v1.2", "latest"] {
        s.assert_single_image_manifest(&repo, tag);
        assert_eq!(
            s.registry_digest(&repo, tag).as_deref(),
            Some(digest),
            "{tag}"
        );
        assert_eq!(s.moto_digest(&repo, tag).as_deref(), Some(digest), "{tag}");
    }
    if auto_pushes_blobs_through_the_daemon() {
        assert!(
            run.stderr.contains("v1: The push refers to repository"),
            "the daemon pushed the first tag: {}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains("under v1; 2 other tag(s) put by the direct push"),
            "{}",
            run.stderr
        );
        // The image ID on this store is its manifest's digest: the daemon pushed the
        // stored manifest itself.
        assert_eq!(run.output("image-id"), digest);
    }
    let by_digest = run.output("image-uri-by-digest");
    let _ = docker_output(&["rmi", "-f", by_digest]);
    s.docker_pull(by_digest);
    assert_eq!(
        docker(&["run", "--rm", by_digest]),
        format!("routed {repo}")
    );
    let _ = docker_output(&["rmi", "-f", by_digest]);
}

/// The registry answers the first blob upload with `400 BLOB_UPLOAD_INVALID`, an answer
/// that is neither a refusal of the push nor worth a retry. On the blobs' route the
/// daemon's pusher meets it and the direct push sends the image instead, with one
/// warning saying why, and the summary says `direct (fallback)`; on the direct route the
/// direct push meets it, and as a registry's answer it is final: one error naming it,
/// nothing pushed.
#[test]
fn an_upload_the_first_pusher_cannot_make_is_handed_on_or_named() {
    let s = standin();
    let repo = unique("route/fallback");
    let ws = workspace(&repo);
    s.inject_fault(
        &json!({"route": "registry", "mode": "status", "status": 400,
        "error": "BLOB_UPLOAD_INVALID", "message": "injected upload fault",
        "method": "POST", "repository": repo, "count": 1}),
    );
    let run = s.action(ws.path()).input("repository", &repo).run();
    assert_eq!(s.pending_faults(&repo), 0, "the fault was hit");
    if auto_pushes_blobs_through_the_daemon() {
        run.assert_success();
        let warnings: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("::warning::"))
            .collect();
        assert_eq!(warnings.len(), 1, "{}", run.stderr);
        assert!(
            warnings[0].contains("the Docker daemon's pusher cannot send this image")
                && warnings[0].contains("injected upload fault")
                && warnings[0].contains("pushing it directly instead"),
            "{}",
            warnings[0]
        );
        assert!(
            run.summary.contains("| Push engine | direct (fallback) |"),
            "{}",
            run.summary
        );
        assert_eq!(
            s.registry_digest(&repo, "latest").as_deref(),
            Some(run.output("image-digest"))
        );
    } else {
        assert!(!run.success, "{}", run.stderr);
        let errors = run.error_lines();
        assert_eq!(errors.len(), 1, "{}", run.stderr);
        assert!(
            errors[0].contains("BLOB_UPLOAD_INVALID") && errors[0].contains("HTTP 400"),
            "{}",
            errors[0]
        );
        assert!(
            !run.stderr.contains("Docker daemon instead"),
            "{}",
            run.stderr
        );
        assert_eq!(s.registry_digest(&repo, "latest"), None);
    }
}
