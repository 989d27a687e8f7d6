//! Cache from ECR on a fresh daemon: build and push, remove every local image and the
//! builder cache (as a new GitHub runner starts), build again with the same inputs. The
//! unchanged steps come from the inline cache of the image in ECR, and the run is faster.
//!
//! This test empties the shared Docker daemon, so it lives in a test binary of its own
//! (cargo runs test binaries one after another) and puts back what other tests need.

mod support;

use std::time::{Duration, Instant};

use support::{docker, docker_output, repo_root, standin, unique, RunResult, Workspace};

/// Restores the stand-in's local base image (and anything else `scripts/standin start`
/// makes) when dropped, even if the test fails half-way.
struct RestoreDaemon;

impl Drop for RestoreDaemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo_root().join("scripts/standin"))
            .arg("start")
            .output();
    }
}

fn cached_steps(run: &RunResult) -> (usize, usize) {
    let line = run
        .summary
        .lines()
        .find_map(|l| l.strip_prefix("| Builder | BuildKit: "))
        .unwrap_or_else(|| panic!("no BuildKit line in the summary:\n{}", run.summary));
    let (cached, rest) = line.split_once(" of ").unwrap();
    let total = rest.split_whitespace().next().unwrap();
    (cached.parse().unwrap(), total.parse().unwrap())
}

/// A cold build, then the same build after the daemon lost every image and its build
/// cache: every step after `FROM` is cached from ECR, and the second run is faster.
#[test]
fn a_fresh_daemon_reuses_layers_cached_in_ecr() {
    let standin = standin();
    let _restore = RestoreDaemon;

    // The base image lives in ECR too, so a wiped daemon can pull it like a runner would.
    let base_repo = unique("cache/base");
    let base_ws = Workspace::new();
    base_ws.write(
        "Dockerfile",
        "FROM local/busybox:latest\nRUN echo base > /base\n",
    );
    let base = standin
        .action(base_ws.path())
        .input("repository", &base_repo)
        .input("tags", "v1")
        .run();
    base.assert_success();

    let repo = unique("cache/app");
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN sleep 4 && echo slow step > /slow\nCOPY app.txt /\nRUN sleep 2 && cat /app.txt > /copied\n",
            base.output("image-uri")
        ),
    )
    .write("app.txt", &format!("{repo}\n"));
    let build = || {
        let started = Instant::now();
        let run = standin
            .action(ws.path())
            .input("repository", &repo)
            .input("tags", "main")
            .input("builder", "buildkit")
            .run();
        (run, started.elapsed())
    };

    let (cold, cold_time) = build();
    cold.assert_success();

    // A fresh runner: no images, no build cache.
    docker(&["builder", "prune", "-af"]);
    docker(&["image", "prune", "-af"]);
    let left = docker(&["images", "-q"]);
    assert_eq!(left, "", "images left after pruning");

    let (warm, warm_time) = build();
    warm.assert_success();
    assert!(
        warm.stderr.contains(&format!(
            "reusing build cache from {}",
            cold.output("image-uri")
        )),
        "{}",
        warm.stderr
    );
    let (cached, steps) = cached_steps(&warm);
    println!(
        "cache from ECR: cold build+push {:.2}s, fresh-daemon rebuild {:.2}s; {cached} of {steps} steps cached",
        cold_time.as_secs_f64(),
        warm_time.as_secs_f64()
    );
    assert!(
        cached >= 3,
        "the RUN, COPY and RUN steps are cached: {cached} of {steps}\n{}",
        warm.stderr
    );
    assert!(
        warm_time + Duration::from_secs(4) < cold_time,
        "cold {cold_time:?}, warm {warm_time:?}"
    );
    assert_eq!(
        standin.registry_digest(&repo, "main").as_deref(),
        Some(warm.output("image-digest"))
    );
    let _ = docker_output(&["rmi", "-f", warm.output("image-uri")]);
}
