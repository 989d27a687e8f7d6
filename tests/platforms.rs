//! Multi-platform builds (`platforms`, `platform-hosts`) on the real stand-in: one
//! BuildKit build per platform (arm64 under QEMU, or on a second engine), each image
//! pushed by digest, one index under every tag. Asserted as a user sees it: the index
//! the registry serves and the media type ECR reports, `platform-digests` and
//! `image-digest` against the registry, each platform pulled and run, the log and the
//! summary. Needs `scripts/setup` (qemu-user-static, binfmt) and `scripts/standin start`
//! (the `standin/busybox-multi` base index).

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use support::{docker_output, run_platform, standin, unique, RunResult, Workspace};

const MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The second engine of the matrix (Docker 28.5, classic store; `scripts/standin`).
const ENGINE_28_CLASSIC: &str = "unix:///run/ecr-build-push-standin/docker-28-classic.sock";

/// A Dockerfile on the two-platform base that records what each build ran on: the
/// kernel's machine name (`aarch64` under QEMU) and BuildKit's `TARGET*` arguments. The
/// `RUN` is new in every workspace, so it runs (and prints) rather than coming from cache.
fn workspace() -> Workspace {
    let registry = &standin().registry;
    let nonce = unique("run");
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM {registry}/standin/busybox-multi:latest\n\
             ARG TARGETARCH\n\
             ARG TARGETPLATFORM\n\
             ARG BUILDPLATFORM\n\
             RUN echo {nonce} > /nonce && uname -m > /machine && echo \"$TARGETARCH\" > /targetarch \\\n \
             && echo \"built for $TARGETPLATFORM on $BUILDPLATFORM: $(uname -m)\"\n\
             COPY app.txt /\n\
             CMD [\"sh\", \"-c\", \"cat /machine /targetarch; uname -m\"]\n"
        ),
    )
    .write("app.txt", "app\n");
    ws
}

/// The manifest (or index) the registry serves for `repository:reference`: (media type,
/// body).
fn registry_manifest(repository: &str, reference: &str) -> (String, serde_json::Value) {
    let standin = standin();
    let url = format!(
        "https://{}/v2/{repository}/manifests/{reference}",
        standin.registry
    );
    let out = Command::new("curl")
        .args(["-sS", "-D", "/dev/stderr", "--cacert"])
        .arg(&standin.ca_cert)
        .args(["-u", &format!("AWS:{}", standin.password)])
        .args(["-H", &format!("Accept: {MANIFEST_LIST}, {OCI_INDEX}, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")])
        .arg(&url)
        .output()
        .expect("run curl");
    let headers = String::from_utf8_lossy(&out.stderr);
    let media_type = headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    let body = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    (media_type, body)
}

/// The index's entries as platform → digest.
fn index_entries(index: &serde_json::Value) -> BTreeMap<String, String> {
    index["manifests"]
        .as_array()
        .expect("an index")
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut platform = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(variant) = p["variant"].as_str() {
                platform.push('/');
                platform.push_str(variant);
            }
            (platform, m["digest"].as_str().unwrap().to_string())
        })
        .collect()
}

fn platform_digests(run: &RunResult) -> BTreeMap<String, String> {
    serde_json::from_str(run.output("platform-digests")).expect("platform-digests is JSON")
}

/// What must hold for a pushed two-platform run: the index under every tag holds
/// exactly the platforms asked, equals `platform-digests` and `image-digest`, ECR
/// reports the index media type, no image in the repository but the index and its
/// children, and each platform runs as itself.
fn assert_two_platform_index(run: &RunResult, repo: &str, tags: &[&str]) {
    let standin = standin();
    let digest = run.output("image-digest").to_string();
    for tag in tags {
        assert_eq!(
            standin.registry_digest(repo, tag).as_deref(),
            Some(digest.as_str()),
            "tag {tag}"
        );
    }
    let (media_type, index) = registry_manifest(repo, tags[0]);
    assert_eq!(media_type, MANIFEST_LIST, "{index}");
    let entries = index_entries(&index);
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"],
        "exactly the platforms asked, no attestation: {index}"
    );
    assert_eq!(platform_digests(run), entries);
    assert_eq!(
        run.output("image-uri-by-digest"),
        format!("{}/{repo}@{digest}", standin.registry)
    );

    let described = standin.moto(
        "DescribeImages",
        &serde_json::json!({"repositoryName": repo, "imageIds": [{"imageTag": tags[0]}]}),
    );
    let detail = &described["imageDetails"][0];
    assert_eq!(detail["imageDigest"], digest.as_str(), "{described}");
    assert_eq!(
        detail["imageManifestMediaType"], MANIFEST_LIST,
        "{described}"
    );

    // No untagged extras: the index, one manifest per platform and its provenance (a
    // referrer), nothing else.
    let listed = standin.moto("ListImages", &serde_json::json!({"repositoryName": repo}));
    let mut digests: Vec<String> = listed["imageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id["imageDigest"].as_str().unwrap().to_string())
        .collect();
    digests.sort();
    digests.dedup();
    let mut expected: Vec<String> = entries.values().cloned().collect();
    expected.push(digest.clone());
    let provenance: std::collections::BTreeMap<String, String> =
        serde_json::from_str(run.output("provenance-digest")).expect("one per platform");
    assert_eq!(provenance.len(), entries.len(), "{provenance:?}");
    expected.extend(provenance.into_values());
    expected.sort();
    assert_eq!(digests, expected, "{listed}");

    let by_digest = format!("{}/{repo}@{digest}", standin.registry);
    assert_eq!(
        run_platform(&by_digest, "linux/arm64"),
        "aarch64\narm64\naarch64\n"
    );
    assert_eq!(
        run_platform(&by_digest, "linux/amd64"),
        "x86_64\namd64\nx86_64\n"
    );
}

/// Two platforms on one engine, arm64 under QEMU: announced before the build, built
/// side by side with prefixed output (BuildKit's own `TARGETPLATFORM` and
/// `BUILDPLATFORM`), each base layer mounted from its platform's entry of the base
/// index, pushed as one Docker manifest list under both tags, a row per platform in the
/// summary. `linux/arm64/v8` is normalised to `linux/arm64`.
#[test]
fn two_platforms_under_qemu_make_one_index() {
    let standin = standin();
    let repo = unique("multi");
    // An account view of its own with ECR's BLOB_MOUNTING on, so the base's layers mount.
    let key = support::own_access_key();
    standin.set_blob_mounting(&key, true);
    let run = standin
        .action(workspace().path())
        .input("repository", &repo)
        .input("tags", "v1, latest")
        .input("platforms", "linux/amd64,\nlinux/arm64/v8")
        .env("AWS_ACCESS_KEY_ID", &key)
        .run();
    run.assert_success();
    let log = &run.stderr;
    let announced = log
        .find(&format!("linux/arm64: builds on {}", engine_host()))
        .unwrap_or_else(|| panic!("no announcement of the arm64 build:\n{log}"));
    assert!(
        log[announced..].contains("emulated by QEMU (qemu-aarch64)"),
        "{log}"
    );
    assert!(
        announced < log.find("::group::Build").unwrap(),
        "announced before building"
    );
    assert!(
        log.contains("built for linux/arm64 on linux/amd64: aarch64"),
        "BuildKit sets TARGETPLATFORM and BUILDPLATFORM:\n{log}"
    );
    assert!(
        log.contains("built for linux/amd64 on linux/amd64: x86_64"),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.starts_with("[linux/arm64] ")),
        "prefixed lines:\n{log}"
    );
    assert!(!log.contains("::warning::"), "{log}");
    // Layer reuse per platform: each base layer is mounted from its own entry of the base
    // index, not compressed and uploaded again.
    for platform in ["linux/amd64", "linux/arm64"] {
        assert!(
            log.lines().any(|l| l.starts_with(&format!("[{platform}] "))
                && l.ends_with("Mounted from standin/busybox-multi")),
            "{platform}: base layer mounted:\n{log}"
        );
    }
    assert_two_platform_index(&run, &repo, &["v1", "latest"]);

    let digests = platform_digests(&run);
    for platform in ["linux/amd64", "linux/arm64"] {
        let row = run
            .summary
            .lines()
            .find(|l| l.starts_with(&format!("| {platform} |")))
            .unwrap_or_else(|| panic!("no summary row for {platform}:\n{}", run.summary));
        assert!(row.contains(&digests[platform]), "{row}");
        assert!(row.contains(&engine_host()), "{row}");
        assert!(row.contains(" s |"), "build time: {row}");
    }
    assert_eq!(run.output("image-id"), "");
}

/// `on-tag-exists: skip` recognises the index of the same platforms (listed in another
/// order) and builds nothing; its outputs name the same index and children.
#[test]
fn skip_recognises_an_index_of_the_same_platforms() {
    let standin = standin();
    let repo = unique("multiskip");
    let first = standin
        .action(workspace().path())
        .input("repository", &repo)
        .input("platforms", "linux/amd64,linux/arm64")
        .run();
    first.assert_success();
    let again = standin
        .action(workspace().path())
        .input("repository", &repo)
        .input("platforms", "linux/arm64,linux/amd64")
        .input("on-tag-exists", "skip")
        .run();
    again.assert_success();
    assert!(
        again.stderr.contains("nothing to build or push"),
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains("::group::Build"), "{}", again.stderr);
    assert_eq!(again.output("image-digest"), first.output("image-digest"));
    assert_eq!(platform_digests(&again), platform_digests(&first));
}

/// One platform is today's single image: one image manifest, never an index, and
/// `platform-digests` names its platform.
#[test]
fn one_platform_pushes_one_image_manifest() {
    let standin = standin();
    let repo = unique("oneplat");
    let run = standin
        .action(workspace().path())
        .input("repository", &repo)
        .input("platforms", "linux/arm64")
        .run();
    run.assert_success();
    let digest = run.output("image-digest");
    let (media_type, manifest) = registry_manifest(&repo, "latest");
    assert_eq!(
        media_type, "application/vnd.docker.distribution.manifest.v2+json",
        "{manifest}"
    );
    assert_eq!(
        platform_digests(&run),
        BTreeMap::from([("linux/arm64".to_string(), digest.to_string())])
    );
}

/// Regression: "policies run at different times". With several platforms the policies
/// were joined with the whole build-push-index, so a lifecycle policy ECR rejected
/// failed the run only after every tag had moved to the new index. Now, for one platform
/// as for two, a rejected policy fails the run before the first tag moves: nothing is
/// under the tag, and there are no outputs.
#[test]
fn a_rejected_policy_fails_a_multi_platform_run_before_any_tag_moves() {
    let standin = standin();
    let policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}"#;
    for platforms in ["linux/amd64", "linux/amd64,linux/arm64"] {
        let repo = unique("policyfirst");
        standin.inject_fault(&serde_json::json!({
            "route": "api",
            "mode": "status",
            "status": 400,
            "error": "InvalidParameterException",
            "message": "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint",
            "action": "PutLifecyclePolicy",
            "repository": repo,
        }));
        let run = standin
            .action(workspace().path())
            .input("repository", &repo)
            .input("platforms", platforms)
            .input("lifecycle-policy", policy)
            .run();
        assert!(
            !run.success,
            "{platforms}: the run succeeded:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("LifecyclePolicyText"),
            "{platforms}: the error names ECR's refusal:\n{}",
            run.stderr
        );
        assert_eq!(
            standin.moto_digest(&repo, "latest"),
            None,
            "{platforms}: the tag moved before the policy was confirmed:\n{}",
            run.stderr
        );
        assert!(run.outputs.is_empty(), "{platforms}: {:?}", run.outputs);
    }
}

/// The deprecated `platform` still builds, with a warning.
#[test]
fn deprecated_platform_input_warns() {
    let standin = standin();
    let repo = unique("oldplat");
    let run = standin
        .action(workspace().path())
        .input("repository", &repo)
        .input("platform", "linux/amd64")
        .run();
    run.assert_success();
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("::warning::") && l.contains("`platform` is deprecated")),
        "{}",
        run.stderr
    );
}

/// The engine the suite runs on (`DOCKER_HOST`, as for the action), the main one unset.
fn engine_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// The engine that plays the native builder: Docker 28.5 (classic store), or the main
/// engine when the suite itself runs on that one.
fn second_engine() -> &'static str {
    if engine_host() == ENGINE_28_CLASSIC {
        "unix:///var/run/docker.sock"
    } else {
        ENGINE_28_CLASSIC
    }
}

/// Waits (up to 5 minutes) for the second engine (started by `scripts/standin start`
/// with the other extra engines) to answer.
fn wait_for_engine(host: &str) {
    for _ in 0..300 {
        let info = Command::new("docker")
            .args(["-H", host, "info", "--format", "{{.ServerVersion}}"])
            .output();
        if info.is_ok_and(|out| out.status.success()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("the engine at {host} does not answer: run scripts/standin start");
}

/// `platform-hosts`: linux/arm64 builds on a second engine (Docker 28.5, or 26.1 when the
/// suite runs on 28.5), linux/amd64 on
/// `DOCKER_HOST`, in parallel; the log and the summary say which engine built which, the
/// arm64 image is in the second engine's store only, and the push is one index.
#[test]
fn platform_hosts_build_a_platform_on_its_own_engine() {
    let second = second_engine();
    wait_for_engine(second);
    let standin = standin();
    let repo = unique("multihost");
    let run = standin
        .action(workspace().path())
        .input("repository", &repo)
        .input("platforms", "linux/amd64,linux/arm64")
        .input("platform-hosts", &format!("linux/arm64={second}"))
        .run();
    run.assert_success();
    let log = &run.stderr;
    assert!(
        log.contains(&format!("linux/arm64: builds on {second} (Docker ")),
        "{log}"
    );
    assert!(
        log.contains(&format!("linux/amd64: builds on {}", engine_host())),
        "{log}"
    );
    let arm_row = run
        .summary
        .lines()
        .find(|l| l.starts_with("| linux/arm64 |"))
        .unwrap_or_else(|| panic!("{}", run.summary));
    assert!(arm_row.contains(second), "{arm_row}");
    assert_two_platform_index(&run, &repo, &["latest"]);

    // The arm64 image was built (and tagged) on the second engine, not on the main one.
    let local_tag = format!("{}/{repo}:latest-linux-arm64", standin.registry);
    let on_second = Command::new("docker")
        .args(["-H", second, "image", "inspect", "-f", "{{.Architecture}}"])
        .arg(&local_tag)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&on_second.stdout).trim(), "arm64");
    let on_main = docker_output(&["image", "inspect", &local_tag]);
    assert!(
        !on_main.status.success(),
        "{local_tag} is on the main engine"
    );
}

/// Regression: the one-platform flow ignored `platform-hosts` (the single-platform path
/// built on `DOCKER_HOST` whatever the input said). One platform is the one-member case
/// of the same builds now: it builds on its own host, is tagged there under the plain
/// tags, and is pushed from there as one image manifest.
#[test]
fn one_platform_builds_on_its_own_host() {
    let second = second_engine();
    wait_for_engine(second);
    let standin = standin();
    let repo = unique("onehost");
    let run = standin
        .action(workspace().path())
        .input("repository", &repo)
        .input("platforms", "linux/arm64")
        .input("platform-hosts", &format!("linux/arm64={second}"))
        .run();
    run.assert_success();
    assert!(
        run.stderr
            .contains(&format!("linux/arm64: builds on {second} (Docker ")),
        "{}",
        run.stderr
    );
    let (media_type, manifest) = registry_manifest(&repo, "latest");
    assert_eq!(
        media_type, "application/vnd.docker.distribution.manifest.v2+json",
        "{manifest}"
    );
    let local_tag = format!("{}/{repo}:latest", standin.registry);
    let on_second = Command::new("docker")
        .args(["-H", second, "image", "inspect", "-f", "{{.Architecture}}"])
        .arg(&local_tag)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&on_second.stdout).trim(), "arm64");
    assert!(
        !docker_output(&["image", "inspect", &local_tag])
            .status
            .success(),
        "{local_tag} is on the main engine"
    );
}
