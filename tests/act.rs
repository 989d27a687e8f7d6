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

/// A repository with the action (its action.yml pointing at the locally built image),
/// the workflows, and the apps they build, committed so act knows the sha.
fn action_repository(dir: &Path) {
    let action = std::fs::read_to_string(repo_root().join("action.yml")).unwrap();
    let image_line = action
        .lines()
        .find(|l| l.trim_start().starts_with("image: docker://"))
        .expect("action.yml runs a prebuilt image");
    let local = action.replace(image_line, &format!("  image: docker://{}", action_image()));
    write(&dir.join("action.yml"), &local);
    for workflow in ["push.yml", "legs.yml"] {
        let text = std::fs::read_to_string(repo_root().join("tests/act").join(workflow)).unwrap();
        write(&dir.join(".github/workflows").join(workflow), &text);
    }
    let registry = &standin().registry;
    write(
        &dir.join("legs/Dockerfile"),
        &format!(
            "FROM {registry}/standin/busybox-multi:latest\nARG TARGETARCH\nARG DELAY_ARCH=none\n\
             RUN uname -m > /machine && echo \"$TARGETARCH\" > /targetarch\n\
             RUN if [ \"$TARGETARCH\" = \"$DELAY_ARCH\" ]; then sleep 20; fi\n\
             CMD [\"sh\", \"-c\", \"cat /machine /targetarch\"]\n"
        ),
    );
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
    let log = act(dir.path(), "push.yml", &[("REPOSITORY", &repo)]);

    let output = |name: &str| act_output(&log, name);
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

/// Runs `workflow` of the repository at `dir` with act, the stand-in's credentials as
/// secrets and `env` as variables, and returns its log; fails unless every job succeeded.
fn act(dir: &Path, workflow: &str, env: &[(&str, &str)]) -> String {
    let standin = standin();
    let secret = |name: &str| {
        standin
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let mut command = Command::new("act");
    command
        .current_dir(dir)
        .args([
            "push",
            "--pull=false",
            "-W",
            &format!(".github/workflows/{workflow}"),
            "-P",
            &format!("ubuntu-latest={}", job_image()),
        ])
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
        ]);
    for (name, value) in env {
        command.args(["--env", &format!("{name}={value}")]);
    }
    let out = command.output().expect("run act");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{log}");
    assert!(out.status.success(), "act failed:\n{log}");
    assert!(log.contains("Job succeeded"), "{log}");
    log
}

/// The value a check step printed as `ACT_OUTPUT name=value`.
fn act_output(log: &str, name: &str) -> String {
    log.lines()
        .find_map(|l| {
            l.split_once(&format!("ACT_OUTPUT {name}="))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("the check step printed no {name}:\n{log}"))
}

/// A matrix of two legs, one per platform, each the same single step with
/// `build-platforms: ${{ matrix.platform }}`, run concurrently by act: one index under
/// every tag, whichever leg finishes last (the arm64 one, then the amd64 one, is made
/// the slower). The deploy job reads the index's digest from `needs.image.outputs`, and
/// each platform of it pulls and runs as its architecture; no record is left.
#[test]
fn act_runs_a_matrix_of_legs_into_one_index() {
    let standin = standin();
    let dir = tempfile::tempdir().unwrap();
    action_repository(dir.path());
    for slow in ["arm64", "amd64"] {
        let repo = unique("act/legs");
        let log = act(
            dir.path(),
            "legs.yml",
            &[("REPOSITORY", &repo), ("DELAY_ARCH", slow)],
        );
        let digest = act_output(&log, "image-digest");
        assert_eq!(
            standin.registry_digest(&repo, "v1"),
            Some(digest.clone()),
            "{log}"
        );
        let assembled: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("ACT_LEG") && l.contains("assembled=true"))
            .collect();
        assert!(
            assembled
                .iter()
                .any(|l| l.contains(&format!("linux/{slow} assembled=true"))),
            "the slower leg (linux/{slow}) did not assemble:\n{log}"
        );
        let listed = standin.moto("ListImages", &serde_json::json!({"repositoryName": repo}));
        let tags: Vec<&str> = listed["imageIds"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|id| id["imageTag"].as_str())
            .collect();
        assert!(!tags.iter().any(|t| t.starts_with("ebp-leg-")), "{tags:?}");
        let reference = format!("{}/{repo}@{digest}", standin.registry);
        for (platform, expected) in [
            ("linux/amd64", "x86_64 amd64"),
            ("linux/arm64", "aarch64 arm64"),
        ] {
            let ran = support::run_platform(&reference, platform);
            assert_eq!(
                ran.split_whitespace().collect::<Vec<_>>().join(" "),
                expected
            );
        }
    }
}
