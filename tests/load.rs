//! Concurrent runs against one repository, on the stand-in: creation races, and several
//! runs moving the same tag.

mod support;

use std::collections::BTreeSet;
use std::thread;

use support::{standin, unique, RunResult, Workspace};

const RUNS: usize = 8;

/// `RUNS` runs at once, run `i` building an image that differs by a build arg.
fn concurrent_runs(repo: &str, tag_for: impl Fn(usize) -> String + Sync) -> Vec<RunResult> {
    let standin = standin();
    thread::scope(|scope| {
        let handles: Vec<_> = (0..RUNS)
            .map(|i| {
                let tag = tag_for(i);
                scope.spawn(move || {
                    let ws = Workspace::new();
                    ws.write(
                        "Dockerfile",
                        "FROM local/busybox:latest\nARG RUN_INDEX\nRUN echo \"$RUN_INDEX\" > /run-index\n",
                    );
                    standin
                        .action(ws.path())
                        .input("repository", repo)
                        .input("tags", &tag)
                        .input("build-args", &format!("RUN_INDEX={i}"))
                        .run()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Eight runs push different tags to a repository that does not exist yet: all succeed,
/// exactly one of them creates it (the others find it, or lose the creation race and use
/// it), and every tag points at the digest its own run reported.
#[test]
fn eight_runs_create_one_repository_and_push_their_own_tags() {
    let standin = standin();
    let repo = unique("load/new");
    let runs = concurrent_runs(&repo, |i| format!("run-{i}"));
    for run in &runs {
        run.assert_success();
    }
    let creators = runs
        .iter()
        .filter(|r| r.stderr.contains(&format!("created repository {repo}\n")))
        .count();
    assert_eq!(creators, 1, "exactly one run creates the repository");
    assert!(standin.repository(&repo).is_some());
    let digests: BTreeSet<&str> = runs.iter().map(|r| r.output("image-digest")).collect();
    assert_eq!(digests.len(), RUNS, "eight different images");
    for (i, run) in runs.iter().enumerate() {
        let tag = format!("run-{i}");
        assert_eq!(
            standin.registry_digest(&repo, &tag).as_deref(),
            Some(run.output("image-digest")),
            "{tag}"
        );
        assert_eq!(
            standin.moto_digest(&repo, &tag).as_deref(),
            Some(run.output("image-digest")),
            "{tag}"
        );
    }
}

/// Eight runs push different images under the same tag at once: every run succeeds and
/// reports the digest it pushed (which stays in ECR by digest), and the tag ends at one
/// of the eight.
#[test]
fn eight_runs_racing_for_one_tag_each_report_their_own_digest() {
    let standin = standin();
    let repo = unique("load/race");
    let runs = concurrent_runs(&repo, |_| "shared".to_string());
    for run in &runs {
        run.assert_success();
    }
    let digests: BTreeSet<&str> = runs.iter().map(|r| r.output("image-digest")).collect();
    assert_eq!(digests.len(), RUNS, "each run reports its own image");
    for digest in &digests {
        assert_eq!(
            standin.registry_digest(&repo, digest).as_deref(),
            Some(*digest)
        );
    }
    let winner = standin
        .registry_digest(&repo, "shared")
        .expect("the tag exists");
    assert!(
        digests.contains(winner.as_str()),
        "{winner} is none of the runs' digests"
    );
    assert_eq!(standin.moto_digest(&repo, "shared"), Some(winner));
}
