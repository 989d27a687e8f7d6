//! A multi-platform image built across matrix legs (`build-platforms`), on the real
//! stand-in in ECR mode: each leg is the action's binary with the runner's variables of
//! one matrix leg (`GITHUB_RUN_ID`, `GITHUB_JOB`, `GITHUB_RUN_ATTEMPT`, `RUNNER_*`), the
//! arm64 leg under QEMU standing in for a native arm64 runner. What a user sees is
//! asserted: the index under every tag and what each platform runs, each leg's outputs,
//! and that no record is left in the repository. `tests/act.rs` runs the same matrix as
//! a real workflow.

mod support;

use std::time::Duration;

use support::{run_platform, standin, unique, RunResult, Workspace};

const PLATFORMS: &str = "linux/amd64,linux/arm64";

/// A Dockerfile on the two-platform base that records what each build ran on; a build
/// argument delays (`DELAY_ARCH`) or fails (`FAIL_ARCH`) one architecture's build, so
/// the legs finish in a chosen order, or one fails.
fn workspace() -> Workspace {
    let registry = &standin().registry;
    let nonce = unique("leg");
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM {registry}/standin/busybox-multi:latest\n\
             ARG TARGETARCH\n\
             ARG DELAY_ARCH=none\n\
             ARG FAIL_ARCH=none\n\
             RUN echo {nonce} > /nonce && uname -m > /machine && echo \"$TARGETARCH\" > /targetarch\n\
             RUN if [ \"$TARGETARCH\" = \"$FAIL_ARCH\" ]; then echo failing on purpose; exit 1; fi\n\
             RUN if [ \"$TARGETARCH\" = \"$DELAY_ARCH\" ]; then sleep 25; fi\n\
             CMD [\"sh\", \"-c\", \"cat /machine /targetarch\"]\n"
        ),
    );
    ws
}

/// One matrix leg: the share `platform` of both platforms, as run `run_id` attempt
/// `attempt` of job `image` would run it on a runner of that architecture.
fn leg(
    ws: &Workspace,
    repo: &str,
    run_id: &str,
    attempt: u32,
    platform: &str,
    build_args: &str,
) -> RunResult {
    let arch = if platform.ends_with("arm64") {
        "ARM64"
    } else {
        "X64"
    };
    standin()
        .action(ws.path())
        .input("repository", repo)
        .input("tags", "v1\nlatest")
        .input("platforms", PLATFORMS)
        .input("build-platforms", platform)
        .input("build-args", build_args)
        .env("GITHUB_RUN_ID", run_id)
        .env("GITHUB_JOB", "image")
        .env("GITHUB_RUN_ATTEMPT", &attempt.to_string())
        .env("RUNNER_NAME", &format!("runner-{}", arch.to_lowercase()))
        .env("RUNNER_ARCH", arch)
        .run()
}

/// Both legs at once, as a matrix starts them.
fn both_legs(ws: &Workspace, repo: &str, run_id: &str, build_args: &str) -> (RunResult, RunResult) {
    std::thread::scope(|scope| {
        let amd = scope.spawn(|| leg(ws, repo, run_id, 1, "linux/amd64", build_args));
        let arm = scope.spawn(|| leg(ws, repo, run_id, 1, "linux/arm64", build_args));
        (amd.join().unwrap(), arm.join().unwrap())
    })
}

/// The tags of `repo` that ECR's API lists.
fn listed_tags(repo: &str) -> Vec<String> {
    let listed = standin().moto("ListImages", &serde_json::json!({"repositoryName": repo}));
    listed["imageIds"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(|id| id["imageTag"].as_str().map(String::from))
        .collect()
}

/// What must hold once the set is complete: the index under both tags lists exactly
/// the legs' platform manifests, in `platforms` order; the assembling leg's outputs name
/// it; a leg that did not assemble names no image; each platform pulls and runs as its
/// architecture; no record is left.
fn assert_assembled(repo: &str, legs: &[&RunResult]) -> String {
    let s = standin();
    let assembled: Vec<&&RunResult> = legs
        .iter()
        .filter(|run| run.output("index-assembled") == "true")
        .collect();
    assert!(!assembled.is_empty(), "no leg assembled the index");
    let digest = assembled[0].output("image-digest").to_string();
    for run in &assembled {
        assert_eq!(
            run.output("image-digest"),
            digest,
            "two legs put different indexes"
        );
        assert!(
            run.summary.contains("put the index under every tag"),
            "{}",
            run.summary
        );
    }
    for run in legs
        .iter()
        .filter(|run| run.output("index-assembled") == "false")
    {
        assert!(
            !run.outputs.contains_key("image-digest") && !run.outputs.contains_key("image-uris"),
            "a leg that left the index to others names an image: {:?}",
            run.outputs
        );
    }
    for tag in ["v1", "latest"] {
        assert_eq!(
            s.registry_digest(repo, tag).as_deref(),
            Some(digest.as_str())
        );
    }
    let index = s.registry_manifest(repo, "v1");
    let entries: Vec<(String, String)> = index["manifests"]
        .as_array()
        .expect("an index")
        .iter()
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let platforms: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    // Each leg's `platform-digests` is its share, and it is what the index lists.
    for run in legs {
        let share: std::collections::BTreeMap<String, String> =
            serde_json::from_str(run.output("platform-digests")).unwrap();
        assert_eq!(share.len(), 1, "{share:?}");
        for (platform, child) in &share {
            assert!(
                entries.contains(&(platform.clone(), child.clone())),
                "{platform} {child} is not in the index {entries:?}"
            );
        }
    }
    let leftovers: Vec<String> = listed_tags(repo)
        .into_iter()
        .filter(|t| t.starts_with("ebp-leg-"))
        .collect();
    assert!(leftovers.is_empty(), "records left behind: {leftovers:?}");
    let reference = format!("{}/{repo}@{digest}", s.registry);
    assert_eq!(
        run_platform(&reference, "linux/amd64")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["x86_64", "amd64"]
    );
    assert_eq!(
        run_platform(&reference, "linux/arm64")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["aarch64", "arm64"]
    );
    digest
}

/// Two legs running at once make one index under every tag, with one digest whichever
/// legs assembled it, and leave no record or extra tag behind.
#[test]
fn two_legs_at_once_make_one_index_and_leave_nothing_behind() {
    let repo = unique("legs/atonce");
    let ws = workspace();
    let (amd, arm) = both_legs(&ws, &repo, &unique("run"), "");
    amd.assert_success();
    arm.assert_success();
    assert_assembled(&repo, &[&amd, &arm]);
    let mut tags = listed_tags(&repo);
    tags.sort();
    assert_eq!(tags, ["latest", "v1"]);
}

/// Regression for the order the legs finish in: whichever platform builds last, the leg
/// that finishes last assembles, and the one that finished first says which platforms
/// it left to the others, with `index-assembled` false and no image outputs.
#[test]
fn the_leg_that_finishes_last_assembles_in_either_order() {
    for (slow, fast_platform) in [("arm64", "linux/amd64"), ("amd64", "linux/arm64")] {
        let repo = unique("legs/order");
        let ws = workspace();
        let (amd, arm) = both_legs(&ws, &repo, &unique("run"), &format!("DELAY_ARCH={slow}"));
        amd.assert_success();
        arm.assert_success();
        let (fast, late) = if slow == "arm64" {
            (&amd, &arm)
        } else {
            (&arm, &amd)
        };
        assert_eq!(fast.output("index-assembled"), "false", "{}", fast.stderr);
        assert_eq!(late.output("index-assembled"), "true", "{}", late.stderr);
        let slow_platform = format!("linux/{slow}");
        assert!(
            fast.stderr
                .contains(&format!("{slow_platform} not recorded yet")),
            "{fast_platform} leg: {}",
            fast.stderr
        );
        assert!(
            fast.summary
                .contains(&format!("Not recorded yet: {slow_platform}")),
            "{}",
            fast.summary
        );
        assert!(
            late.summary.contains("another leg: runner-"),
            "{}",
            late.summary
        );
        assert_assembled(&repo, &[&amd, &arm]);
    }
}

/// "Re-run failed jobs": the arm64 leg fails, the amd64 leg records its platform and
/// leaves the index; the re-run of the failed leg (same run, attempt 2) completes the
/// index with the record of the leg that passed.
#[test]
fn a_rerun_of_a_failed_leg_completes_the_index() {
    let repo = unique("legs/rerun");
    let run_id = unique("run");
    let ws = workspace();
    let (amd, arm) = both_legs(&ws, &repo, &run_id, "FAIL_ARCH=arm64");
    amd.assert_success();
    assert!(!arm.success, "the arm64 leg was meant to fail");
    assert_eq!(amd.output("index-assembled"), "false");
    assert_eq!(
        standin().registry_digest(&repo, "v1"),
        None,
        "no index without arm64"
    );
    let rerun = leg(&ws, &repo, &run_id, 2, "linux/arm64", "");
    rerun.assert_success();
    assert_eq!(rerun.output("index-assembled"), "true", "{}", rerun.stderr);
    assert_assembled(&repo, &[&amd, &rerun]);
}

/// An `IMMUTABLE` repository: the records' tags are new in every build, and when both
/// legs see the set complete, the second put of the same index under an immutable tag
/// (`TAG_INVALID`) counts as success.
#[test]
fn legs_meet_in_an_immutable_repository() {
    let repo = unique("legs/immutable");
    standin().create_repository(&repo, "IMMUTABLE");
    let ws = workspace();
    let (amd, arm) = both_legs(&ws, &repo, &unique("run"), "");
    amd.assert_success();
    arm.assert_success();
    assert_assembled(&repo, &[&amd, &arm]);
}

/// ECR's eventual consistency on the record listing: with every new image hidden from
/// the API for 6 s after its push, a leg does not see the other's record at once; it
/// reads again within its window, so the set still completes.
#[test]
fn records_hidden_for_a_while_are_still_found() {
    let repo = unique("legs/visibility");
    let s = standin();
    s.create_repository(&repo, "MUTABLE");
    s.control(
        "/visibility",
        Some(&serde_json::json!({"repository": repo, "seconds": 6})),
    );
    let ws = workspace();
    let (amd, arm) = both_legs(&ws, &repo, &unique("run"), "");
    amd.assert_success();
    arm.assert_success();
    // The API hides the index too for a while: wait before reading the tags there.
    std::thread::sleep(Duration::from_secs(7));
    assert_assembled(&repo, &[&amd, &arm]);
}

/// A duplicated matrix entry (two legs of one attempt building one platform into two
/// different images) fails, naming both images and both runners.
#[test]
fn a_platform_built_twice_in_one_attempt_fails_naming_both() {
    let repo = unique("legs/twice");
    let run_id = unique("run");
    let first = leg(&workspace(), &repo, &run_id, 1, "linux/amd64", "");
    first.assert_success();
    let second = leg(&workspace(), &repo, &run_id, 1, "linux/amd64", "");
    assert!(
        !second.success,
        "the second leg succeeded:\n{}",
        second.stderr
    );
    let theirs = first.output("platform-digests");
    let theirs: std::collections::BTreeMap<String, String> = serde_json::from_str(theirs).unwrap();
    let error = second
        .stderr
        .lines()
        .find(|l| l.starts_with("::error"))
        .unwrap_or_else(|| panic!("{}", second.stderr));
    assert!(
        error.contains("linux/amd64 is built twice in this run"),
        "{error}"
    );
    assert!(error.contains(&theirs["linux/amd64"]), "{error}");
    assert!(error.contains("runner-x64 (X64)"), "{error}");
}

/// Each leg's scan gate covers its own share: the leg that assembles the index gates
/// its own platform manifest, not the other leg's (ECR cannot scan an index), so its
/// findings are one image's (the stand-in's scan reports one HIGH finding per image).
#[test]
fn each_leg_gates_its_own_platform() {
    let repo = unique("legs/scan");
    let run_id = unique("run");
    let ws = workspace();
    let first = leg(&ws, &repo, &run_id, 1, "linux/amd64", "");
    first.assert_success();
    let second = standin()
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1\nlatest")
        .input("platforms", PLATFORMS)
        .input("build-platforms", "linux/arm64")
        .input("scan", "wait")
        .input("scan-fail-on", "CRITICAL")
        .env("GITHUB_RUN_ID", &run_id)
        .env("GITHUB_JOB", "image")
        .env("GITHUB_RUN_ATTEMPT", "1")
        .run();
    second.assert_success();
    assert_eq!(
        second.output("index-assembled"),
        "true",
        "{}",
        second.stderr
    );
    let findings: serde_json::Value = serde_json::from_str(second.output("scan-findings")).unwrap();
    assert_eq!(findings["HIGH"], 1, "{findings}");
    let share: std::collections::BTreeMap<String, String> =
        serde_json::from_str(second.output("platform-digests")).unwrap();
    assert!(
        second.summary.contains(&share["linux/arm64"]),
        "{}",
        second.summary
    );
}
