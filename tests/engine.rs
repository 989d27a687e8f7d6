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
/// completes: a build is bounded by its progress (BuildKit: the session's health
/// checks), never by a request timeout.
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

/// A socket nobody listens on (a stopped daemon) fails first, saying the daemon is not
/// running.
#[test]
fn a_stopped_daemon_fails_first_with_advice() {
    let standin = standin();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let ws = workspace("FROM local/busybox:latest\n");
    let repo = unique("stopped");
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .env("DOCKER_HOST", &format!("unix://{}", socket.display()))
        .run();
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("is not running or not listening"),
        "{}",
        errors[0]
    );
    assert!(standin.repository(&repo).is_none());
}

/// A `.dockerignore`d file never reaches the daemon: here it is a 1 TiB sparse file,
/// which would take hours to send, so a build that finishes in seconds proves it was
/// left out (under either builder).
#[test]
fn an_ignored_file_never_reaches_the_daemon() {
    let standin = standin();
    let ws = workspace("FROM local/busybox:latest\nCOPY . /ctx/\n");
    ws.write(".dockerignore", "secrets/\n")
        .write("app.txt", "app\n");
    std::fs::create_dir(ws.path().join("secrets")).unwrap();
    let huge = std::fs::File::create(ws.path().join("secrets/huge.bin")).unwrap();
    huge.set_len(1 << 40).unwrap();
    let started = std::time::Instant::now();
    let run = standin
        .action(ws.path())
        .input("repository", &unique("ignored"))
        .input("push", "false")
        .run();
    run.assert_success();
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
    let image = run.output("image-uri");
    let listing = support::docker(&["run", "--rm", image, "ls", "-A", "/ctx"]);
    assert_eq!(listing, ".dockerignore\nDockerfile\napp.txt");
    let _ = support::docker_output(&["rmi", "-f", image]);
}
