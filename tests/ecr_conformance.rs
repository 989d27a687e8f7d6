//! The push against ECR as it really behaves, not as the reference registry does: the
//! stand-in's front plays ECR's rules by default (`tests/standin/README.md`, conformance
//! table), and each test here pins one of them on the action. Every test uses its own
//! repository, and where the front keeps state per AWS access key (token lifetimes, the
//! `BLOB_MOUNTING` account setting), its own access key, so they run side by side.
//!
//! Each test failed on the action before the registry client learnt the rule it covers,
//! except where its doc comment says otherwise.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{standin, unique, RunResult, Workspace};

/// A workspace whose image has one layer of `megabytes` of random data (so it is larger
/// than the part the streamed upload holds back, and does not compress) and a marker.
fn workspace(marker: &str, megabytes: u32) -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM local/busybox:latest\n\
             RUN head -c {megabytes}000000 /dev/urandom > /blob && echo {marker} > /marker\n\
             CMD [\"cat\", \"/marker\"]\n"
        ),
    );
    ws
}

use support::own_access_key as access_key;

/// The action on `repo` with the direct push (the client these rules are about) and
/// `key` as its AWS access key.
fn direct_run(ws: &Workspace, repo: &str, key: &str) -> support::ActionRun {
    standin()
        .action(ws.path())
        .input("repository", repo)
        .input("push-engine", "direct")
        .env("AWS_ACCESS_KEY_ID", key)
}

fn counter(repo: &str, name: &str) -> u64 {
    let stats = standin().stats(repo);
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}: {stats}"))
}

fn assert_pulls(run: &RunResult, marker: &str) {
    run.assert_success();
    let reference = run.output("image-uri-by-digest");
    standin().docker_pull(reference);
    let out = support::docker(&["run", "--rm", reference]);
    assert_eq!(out.trim(), marker);
}

/// ECR answers a blob `PATCH` with 201, not the spec's 202, and keeps only the first
/// `PATCH` of a session: every blob (a 12 MB layer streamed while it is compressed, and
/// the config sent whole) goes in one `PATCH` per session, each accepted, none dropped.
/// Before: `uploading blob sha256:… failed (HTTP 201): Created`.
#[test]
fn every_blob_goes_in_one_patch_answered_201() {
    let repo = unique("ecr/one-patch");
    let marker = unique("one-patch");
    let ws = workspace(&marker, 12);
    let run = direct_run(&ws, &repo, &access_key()).run();
    assert_pulls(&run, &marker);
    assert!(counter(&repo, "patches") >= 2, "{}", standin().stats(&repo));
    assert_eq!(counter(&repo, "max_patches_per_session"), 1);
    assert_eq!(counter(&repo, "dropped_patches"), 0);
}

/// An upload that breaks off (a reset in the middle of the layer's `PATCH`) starts again
/// from the spool in a **new session, with its whole body in one `PATCH`**. Before, the
/// restart went in 8 MiB parts, ECR dropped every part after the first, and the push
/// failed with `DIGEST_INVALID`.
#[test]
fn a_lost_upload_starts_again_in_a_new_session_with_one_patch() {
    let s = standin();
    let repo = unique("ecr/restart");
    let marker = unique("restart");
    s.inject_fault(
        &json!({"route": "registry", "mode": "reset", "method": "PATCH",
        "repository": repo, "count": 1}),
    );
    let ws = workspace(&marker, 20);
    let run = direct_run(&ws, &repo, &access_key())
        .env("ECR_BUILD_PUSH_NO_RETRY_DELAY", "1")
        .run();
    assert_pulls(&run, &marker);
    assert_eq!(s.pending_faults(&repo), 0, "the reset was met");
    assert!(
        run.stderr.contains("starting it again"),
        "the restart is logged: {}",
        run.stderr
    );
    assert_eq!(counter(&repo, "max_patches_per_session"), 1);
    assert_eq!(counter(&repo, "dropped_patches"), 0);
}

/// Pushes `marker`'s image to `repo` as `v1` with `key`; returns its `FROM` line for an
/// image built on it.
fn push_base(repo: &str, key: &str, marker: &str) -> String {
    let ws = workspace(marker, 2);
    direct_run(&ws, repo, key)
        .input("tags", "v1")
        .run()
        .assert_success();
    format!("FROM {}/{repo}:v1\n", standin().registry)
}

/// A second repository's image built `FROM` the first's: its layers are known from the
/// base's manifest, so they are reused, not compressed again.
fn push_on_base(base_from: &str, repo: &str, key: &str, marker: &str) -> RunResult {
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!("{base_from}RUN echo {marker} > /marker\nCMD [\"cat\", \"/marker\"]\n"),
    );
    direct_run(&ws, repo, key).run()
}

/// With ECR's `BLOB_MOUNTING` off (the account default), no mount is tried at all: the
/// setting is read once (`GetAccountSetting`), and layers of a base in another
/// repository are uploaded. Before, every such layer cost a mount request that ECR
/// answered with a new session, which was then cancelled.
#[test]
fn no_mount_is_tried_while_blob_mounting_is_off() {
    let key = access_key();
    let base = unique("ecr/mount-off-base");
    let app = unique("ecr/mount-off-app");
    let marker = unique("mount-off");
    let from = push_base(&base, &key, &unique("base"));
    let run = push_on_base(&from, &app, &key, &marker);
    assert_pulls(&run, &marker);
    assert_eq!(counter(&app, "mount_attempts"), 0, "{}", run.stderr);
    assert!(run.summary.contains("0 mounted"), "{}", run.summary);
}

/// With `BLOB_MOUNTING` on, the base's layers are mounted from the repository whose
/// manifest lists them (ECR's condition), and the job summary counts the mounts.
#[test]
fn layers_are_mounted_when_blob_mounting_is_on() {
    let s = standin();
    let key = access_key();
    s.set_blob_mounting(&key, true);
    let base = unique("ecr/mount-on-base");
    let app = unique("ecr/mount-on-app");
    let marker = unique("mount-on");
    let from = push_base(&base, &key, &unique("base"));
    let run = push_on_base(&from, &app, &key, &marker);
    assert_pulls(&run, &marker);
    let mounts = counter(&app, "mounts");
    assert!(
        mounts >= 2,
        "busybox's layer and the base's: {}",
        s.stats(&app)
    );
    assert!(
        run.summary.contains(&format!("{mounts} mounted")),
        "{}",
        run.summary
    );
}

/// The registry token expires in the middle of the push (its lifetime cut to 3 s, and
/// the first blob check held up 4 s): ECR answers 403 `DENIED` "Your authorization token
/// has expired", the action gets a new token and the push goes on. Before, the 403 was
/// final.
#[test]
fn a_token_that_expires_mid_push_is_renewed() {
    let s = standin();
    let key = access_key();
    let repo = unique("ecr/token");
    let marker = unique("token");
    s.control("/tokens", Some(&json!({"access_key": key, "lifetime": 3})));
    s.inject_fault(&json!({"route": "registry", "mode": "delay", "seconds": 4,
        "method": "HEAD", "repository": repo, "count": 1}));
    let ws = workspace(&marker, 1);
    let run = direct_run(&ws, &repo, &key).run();
    assert_pulls(&run, &marker);
    assert!(counter(&repo, "expired_token_refusals") >= 1);
    assert!(run.stderr.contains("got a new one"), "{}", run.stderr);
    let issued = s.control(&format!("/tokens?access_key={key}"), None)["issued"]
        .as_u64()
        .unwrap();
    assert!(issued >= 2, "a second token was issued: {issued}");
}

/// A storm of 429 `TOOMANYREQUESTS` on the first uploads is ridden out: throttling gets
/// a larger retry budget than other failures, and the log says the request was
/// throttled. Before, 6 throttled session starts used up an upload's 4 attempts.
#[test]
fn a_storm_of_throttling_on_the_first_uploads_is_ridden_out() {
    let s = standin();
    let repo = unique("ecr/throttled");
    let marker = unique("throttled");
    s.inject_fault(
        &json!({"route": "registry", "mode": "status", "status": 429,
        "method": "POST", "repository": repo, "count": 6}),
    );
    let ws = workspace(&marker, 1);
    let run = direct_run(&ws, &repo, &access_key())
        .env("ECR_BUILD_PUSH_NO_RETRY_DELAY", "1")
        .run();
    assert_pulls(&run, &marker);
    assert_eq!(s.pending_faults(&repo), 0, "every 429 was met");
    assert!(run.stderr.contains("was throttled"), "{}", run.stderr);
    assert!(run.stderr.contains("TOOMANYREQUESTS"), "{}", run.stderr);
}

/// ECR is eventually consistent: with the pushed image hidden from `DescribeImages` and
/// from manifest `GET`s for 5 s after its push, the confirmation waits it out and says
/// how long it waited, on whichever route the engine's default takes (two tags, so the
/// containerd store's route reads the manifest back too). Before, the confirmation
/// failed a push that had succeeded.
#[test]
fn the_confirmation_waits_out_eventual_consistency() {
    let s = standin();
    let repo = unique("ecr/visibility");
    let marker = unique("visibility");
    s.create_repository(&repo, "MUTABLE");
    s.control(
        "/visibility",
        Some(&json!({"repository": repo, "seconds": 5})),
    );
    let ws = workspace(&marker, 1);
    let started = Instant::now();
    let run = s
        .action(ws.path())
        .input("repository", &repo)
        .input("tags", "v1,v2")
        .run();
    assert_pulls(&run, &marker);
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(
        run.stderr.contains("eventually consistent"),
        "{}",
        run.stderr
    );
    let uris: Vec<String> = serde_json::from_str(run.output("image-uris")).unwrap();
    assert_eq!(uris.len(), 2, "{}", run.output_file);
}

/// A manifest with more layers than ECR takes (500) is refused by ECR with 405
/// `UNSUPPORTED`; the client reports it at once (not retried), naming the status, the
/// code and ECR's message. The action itself checks the layer count before it uploads
/// anything (`registry::rules::MAX_LAYERS`, unit-tested in `engine::direct`): no local
/// engine can hold such an image (overlay's depth limit is 128).
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_with_more_layers_than_ecr_takes_is_refused_at_once() {
    use ecr_build_push::registry::RetryPolicy;
    use ecr_build_push::registry::{BlobBody, Registry, OCI_MANIFEST};
    let s = standin();
    let repo = unique("ecr/layers");
    s.create_repository(&repo, "MUTABLE");
    let login = ecr_build_push::registry::Login {
        host: s.registry.clone(),
        credentials: ecr_build_push::registry::Credentials {
            username: "AWS".into(),
            password: ecr_build_push::credentials::Secret::new(s.password_for(&access_key())),
            expires_at: None,
            scheme: ecr_build_push::registry::Scheme::Basic,
        },
        renew: None,
    };
    let reg = Registry::connect(
        &login,
        &repo,
        RetryPolicy::DEFAULT,
        &ecr_build_push::network::Network::default(),
    )
    .unwrap();
    let mut digests = Vec::new();
    for content in [&b"{}"[..], b"layer"] {
        let digest = ecr_build_push::publish::export::sha256_digest(content);
        let location = reg.start_upload().await.unwrap();
        let body = BlobBody::Memory(bytes::Bytes::copy_from_slice(content));
        let location = reg
            .patch_whole(&location, &body, content.len() as u64)
            .await
            .unwrap();
        reg.complete(&location, &digest).await.unwrap();
        digests.push(digest);
    }
    let layer = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": digests[1], "size": 5});
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digests[0], "size": 2},
        "layers": vec![layer; 501]});
    let failure = reg
        .with_retry("putting", || {
            reg.put_manifest("v1", OCI_MANIFEST, manifest.to_string().into())
        })
        .await
        .expect_err("ECR refuses 501 layers");
    assert_eq!(failure.1, 1, "not retried");
    assert_eq!(failure.0.status, Some(405));
    assert_eq!(failure.0.code.as_deref(), Some("UNSUPPORTED"));
    assert!(
        failure
            .0
            .message
            .contains("Limit on number of layers per image exceeded"),
        "{}",
        failure.0.describe()
    );
}

/// ECR's scan statuses beyond the classic ones (`LIMIT_EXCEEDED`, `IMAGE_ARCHIVED`,
/// `SCAN_ELIGIBILITY_EXPIRED`, `FINDINGS_UNAVAILABLE`, from the API model) end the wait
/// with the manifest reported as not scanned, naming the status, and fail a gate that
/// asks for findings. (The gate already treated unknown statuses so; this pins it.)
#[test]
fn newer_scan_statuses_report_the_image_as_not_scanned() {
    let s = standin();
    for status in [
        "LIMIT_EXCEEDED",
        "IMAGE_ARCHIVED",
        "SCAN_ELIGIBILITY_EXPIRED",
        "FINDINGS_UNAVAILABLE",
    ] {
        let repo = unique("ecr/scan-status");
        s.control(
            "/scans",
            Some(&json!({"repository": repo,
                "describe": [{"status": status, "description": "as ECR says"}]})),
        );
        let ws = Workspace::new();
        ws.write("Dockerfile", "FROM local/busybox:latest\nCMD [\"true\"]\n");
        let run = s
            .action(ws.path())
            .input("repository", &repo)
            .input("scan", "wait")
            .input("scan-fail-on", "HIGH")
            .run();
        assert!(!run.success, "{status}: {}", run.stderr);
        let error = run.error_lines().join("\n");
        assert!(error.contains(status), "{status}: {error}");
        assert!(run.summary.contains(status), "{status}: {}", run.summary);
    }
}

/// A reproducible re-run (`SOURCE_DATE_EPOCH`, the same build) on an `IMMUTABLE`
/// repository: ECR refuses to put an existing tag again even at the same digest
/// (400 `TAG_INVALID`), so with `on-tag-exists: overwrite` the push uploads nothing new,
/// finds the tags already at its digest and puts no manifest; with `skip` it builds and
/// pushes nothing. Both succeed with the first run's digest. Before, `overwrite` failed
/// before building, and a forced put failed with `TAG_INVALID`.
#[test]
fn a_rerun_on_an_immutable_repository_puts_no_tag_again() {
    let s = standin();
    let repo = unique("ecr/immutable-rerun");
    let ws = Workspace::new();
    // No layer of its own: the image is the base's layers and a config whose times
    // SOURCE_DATE_EPOCH fixes, so every run builds the same digest, cache or not.
    ws.write(
        "Dockerfile",
        &format!("FROM local/busybox:latest\nLABEL marker={repo}\nCMD [\"true\"]\n"),
    );
    let run = |on_tag_exists: &str| {
        s.action(ws.path())
            .input("repository", &repo)
            .input("tags", "v1,v1.0")
            .input("image-tag-mutability", "IMMUTABLE")
            .input("on-tag-exists", on_tag_exists)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .run()
    };
    let first = run("fail");
    first.assert_success();
    let digest = first.output("image-digest").to_string();
    let puts = counter(&repo, "manifest_puts");

    let overwrite = run("overwrite");
    overwrite.assert_success();
    assert_eq!(overwrite.output("image-digest"), digest);
    assert_eq!(counter(&repo, "manifest_puts"), puts, "no tag put again");
    assert!(
        overwrite.stderr.contains("not put again"),
        "{}",
        overwrite.stderr
    );

    let skip = run("skip");
    skip.assert_success();
    assert_eq!(skip.output("image-digest"), digest);
    assert!(
        !skip.stderr.contains(support::BUILD_STARTED),
        "{}",
        skip.stderr
    );
    assert_eq!(counter(&repo, "manifest_puts"), puts);
    assert_eq!(
        s.registry_digest(&repo, "v1").as_deref(),
        Some(digest.as_str())
    );
}

/// Regression: "outputs name tags that moved". Two runs push different images to one
/// tag, the second starting 3 s after the first (so the one daemon they share does not
/// name both builds at once); ECR keeps the tag at whichever put came last. With both
/// images hidden from ECR's API for 10 s after their push (eventual consistency), each
/// run's confirmation sees the final state: the run whose image lost the tag leaves it
/// out of `image-uris`, names its image by digest in `image-uri`, and warns; the other
/// outputs the tag. Both succeed: each image is in ECR by digest.
#[test]
fn a_tag_another_run_moved_is_left_out_of_the_outputs() {
    let s = standin();
    let repo = unique("ecr/moved");
    s.create_repository(&repo, "MUTABLE");
    s.control(
        "/visibility",
        Some(&json!({"repository": repo, "seconds": 10})),
    );
    let runs: Vec<RunResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["one", "two"]
            .into_iter()
            .enumerate()
            .map(|(n, name)| {
                let repo = repo.clone();
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_secs(3) * u32::try_from(n).unwrap());
                    let ws = Workspace::new();
                    ws.write(
                        "Dockerfile",
                        &format!("FROM local/busybox:latest\nRUN echo {name} > /marker\n"),
                    );
                    standin()
                        .action(ws.path())
                        .input("repository", &repo)
                        .input("tags", "shared")
                        .run()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        run.assert_success();
    }
    let holder = s.registry_digest(&repo, "shared").expect("the tag exists");
    let (winners, losers): (Vec<&RunResult>, Vec<&RunResult>) = runs
        .iter()
        .partition(|run| run.output("image-digest") == holder);
    assert_eq!(
        (winners.len(), losers.len()),
        (1, 1),
        "one image holds the tag"
    );
    let (winner, loser) = (winners[0], losers[0]);
    assert_eq!(
        winner.output("image-uri"),
        format!("{}/{repo}:shared", s.registry)
    );
    assert_eq!(
        loser.output("image-uri"),
        loser.output("image-uri-by-digest")
    );
    assert_eq!(loser.output("image-uris"), "[]");
    assert!(
        loser
            .stderr
            .contains("::warning::tag(s) shared now point at another image"),
        "{}",
        loser.stderr
    );
    assert!(!winner.stderr.contains("now point at another image"));
}
