//! The Docker side under adverse conditions: no permission on the socket, a build longer
//! than bollard's default 2-minute request timeout, and `DOCKER_HOST` over TCP and TLS.

mod support;

use std::process::Command;

use support::{standin, unique, Workspace};

fn workspace(dockerfile: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write("Dockerfile", dockerfile);
    ws
}

/// A user who may not use the Docker socket gets told so, and how to fix it, before
/// anything else happens.
#[test]
fn a_socket_without_permission_fails_first_with_advice() {
    let standin = standin();
    let ws = workspace("FROM local/busybox:latest\n");
    std::fs::set_permissions(
        ws.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let repo = unique("noperm");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_ecr-build-push"))
        .args(["--repository", &repo])
        .current_dir(ws.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_ACTIONS", "true")
        .envs(standin.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run the action as nobody");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("::error")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("permission denied on the Docker socket"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("`docker` group"), "{}", errors[0]);
    assert!(standin.repository(&repo).is_none());
}

/// A build step that runs longer than bollard's default request timeout (120 s) still
/// completes: the engine timeout is 6 hours.
#[test]
fn a_build_longer_than_two_minutes_is_not_cut_off() {
    let standin = standin();
    let ws = workspace("FROM local/busybox:latest\nRUN sleep 125 && echo slept > /slept\n");
    let run = standin
        .action(ws.path())
        .input("repository", &unique("slow"))
        .input("no-cache", "true")
        .run();
    run.assert_success();
    assert!(run.output("image-digest").starts_with("sha256:"));
}
