//! The action under a real GitHub runner emulator, nektos/act: `uses: ./` in a workflow,
//! with the action's image built from `Dockerfile`, against the stand-in. A later step
//! checks the outputs; this test then checks them against the registry.

mod support;

use std::path::Path;
use std::process::Command;

use support::{action_image, docker, docker_output, repo_root, standin, unique};

const JOB_IMAGE: &str = "local/act-runner:latest";

/// A job image for act with `sh`, `bash` and `tail`: busybox plus Debian's static bash.
fn job_image() -> &'static str {
    if docker_output(&["image", "inspect", JOB_IMAGE])
        .status
        .success()
    {
        return JOB_IMAGE;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::copy("/bin/bash-static", root.join("bin/bash")).unwrap();
    let applets = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "bash" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    let tar = dir.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    docker(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        tar.to_str().unwrap(),
        JOB_IMAGE,
    ]);
    JOB_IMAGE
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A repository with the action (its action.yml pointing at the locally built image), the
/// workflow, and an app to build, committed so act knows the sha.
fn action_repository(dir: &Path) {
    let action = std::fs::read_to_string(repo_root().join("action.yml")).unwrap();
    let image_line = action
        .lines()
        .find(|l| l.trim_start().starts_with("image: docker://"))
        .expect("action.yml runs a prebuilt image");
    let local = action.replace(image_line, &format!("  image: docker://{}", action_image()));
    write(&dir.join("action.yml"), &local);
    let workflow = std::fs::read_to_string(repo_root().join("tests/act/push.yml")).unwrap();
    write(&dir.join(".github/workflows/push.yml"), &workflow);
    write(
        &dir.join("app/Dockerfile"),
        "FROM local/busybox:latest\nARG GREETING\n\
         RUN echo '::set-output name=injected::yes' && echo '::add-mask::sha256'\n\
         RUN echo \"$GREETING\" > /greeting\nCMD [\"cat\", \"/greeting\"]\n",
    );
    std::fs::copy(&standin().ca_cert, dir.join("test-ca.crt")).unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "app",
        ],
    ] {
        let status = Command::new("git")
            .current_dir(dir)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
}

/// act runs the workflow: the action pushes, the next step sees well-formed outputs, and
/// the digest it saw is the one the registry serves for both tags. A `RUN` that prints
/// `::set-output` and `::add-mask::` cannot set an output or hide text in the log.
#[test]
fn act_runs_the_workflow_and_the_outputs_reach_the_next_step() {
    let standin = standin();
    let dir = tempfile::tempdir().unwrap();
    action_repository(dir.path());
    let repo = unique("act/app");
    let secret = |name: &str| {
        standin
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let out = Command::new("act")
        .current_dir(dir.path())
        .args([
            "push",
            "--pull=false",
            "-P",
            &format!("ubuntu-latest={}", job_image()),
        ])
        .args(["--env", &format!("REPOSITORY={repo}")])
        .args([
            "--env",
            &format!("ECR_ENDPOINT={}", secret("AWS_ENDPOINT_URL_ECR")),
        ])
        .args([
            "--secret",
            &format!("AWS_ACCESS_KEY_ID={}", secret("AWS_ACCESS_KEY_ID")),
        ])
        .args([
            "--secret",
            &format!("AWS_SECRET_ACCESS_KEY={}", secret("AWS_SECRET_ACCESS_KEY")),
        ])
        .output()
        .expect("run act");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{log}");
    assert!(out.status.success(), "act failed:\n{log}");
    assert!(log.contains("Job succeeded"), "{log}");

    let output = |name: &str| {
        log.lines()
            .find_map(|l| {
                l.split_once(&format!("ACT_OUTPUT {name}="))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("the check step printed no {name}:\n{log}"))
    };
    let digest = output("image-digest");
    assert_eq!(standin.registry_digest(&repo, "v1"), Some(digest.clone()));
    let uris: Vec<String> = serde_json::from_str(&output("image-uris")).unwrap();
    assert_eq!(uris.len(), 2, "{uris:?}");
    let sha_tag = uris[1].rsplit_once(':').unwrap().1;
    assert_eq!(
        standin.registry_digest(&repo, sha_tag),
        Some(digest.clone())
    );
    // The build's `::add-mask::sha256` was not obeyed: digests are still readable.
    assert!(
        log.contains(&format!("ACT_OUTPUT image-digest={digest}")),
        "{log}"
    );
    assert!(
        !log.contains(&standin.password),
        "the registry password leaked into the log"
    );
    let _ = docker_output(&["rmi", "-f", &uris[0], &uris[1]]);
}
