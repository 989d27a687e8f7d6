//! One build, many registries (`also-push-to`), end to end on the stand-in's other
//! registries: the primary account's second region, a second account reached through an
//! assumed role, and ECR Public. The image is compressed once and every registry gets
//! the same digest; a registry that fails does not undo the others, and a re-run with
//! `on-tag-exists: skip` finishes only the one that failed.

mod support;

use std::collections::BTreeMap;

use support::registries::pull_and_run;
use support::{engine_is_containerd_store, standin, unique, Workspace};

const BASE: &str = "local/busybox:latest";

fn workspace(marker: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!("FROM {BASE}\nRUN echo '{marker}' > /marker\nCMD [\"cat\", \"/marker\"]\n"),
    );
    ws
}

/// `also-push-to` naming the second region, the second account with its role and ECR
/// Public, each under `repository`.
fn everywhere() -> String {
    let standin = standin();
    format!(
        "{}\n{}\npublic.ecr.aws/{}",
        standin.var("STANDIN_REGION2"),
        account2_with(&standin.var("STANDIN_ACCOUNT2_ROLE")),
        standin.var("STANDIN_PUBLIC_ALIAS"),
    )
}

/// The `also-push-to` line of the second account (`account:region`), reached through
/// `role`.
fn account2_with(role: &str) -> String {
    let standin = standin();
    format!(
        "{}:{} {role}",
        standin.var("STANDIN_ACCOUNT2"),
        standin.var("STANDIN_ACCOUNT2_REGION"),
    )
}

/// The `targets` output: each registry's label to its digest.
fn targets(run: &support::RunResult) -> BTreeMap<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(run.output("targets")).expect("`targets` is JSON");
    value
        .as_object()
        .expect("`targets` is an object")
        .iter()
        .map(|(label, entry)| (label.clone(), entry["digest"].as_str().unwrap().to_string()))
        .collect()
}

/// The short layer IDs the log says were compressed, in order.
fn compressed_layers(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains(": Compressed "))
        .filter_map(|line| line.split(": Compressed ").next())
        .map(|head| head.rsplit(' ').next().unwrap_or(head).to_string())
        .collect()
}

/// One run pushes to four registries: the same digest in each (by the `targets` output
/// and by each registry's own API), each pulls and runs, each new layer is compressed
/// once for all of them, the role was assumed with the run's session tags, and the
/// summary has one row per registry.
#[test]
fn one_build_reaches_every_registry_with_one_digest() {
    let standin = standin();
    let repository = unique("targets-all");
    let marker = unique("marker");
    let ws = workspace(&marker);
    // The run's own id, so that its AssumeRole calls can be told from other tests'.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
        .to_string();
    let run = standin
        .action(ws.path())
        .input("repository", &repository)
        .input("tags", "v1")
        .input("also-push-to", &everywhere())
        .input("public-description", "one build, many registries")
        .env("GITHUB_REPOSITORY", "octo/shop")
        .env("GITHUB_RUN_ID", &run_id)
        .run();
    run.assert_success();
    let digest = run.output("image-digest").to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");

    let alias = standin.var("STANDIN_PUBLIC_ALIAS");
    let labels = [
        format!("{}/{repository}", standin.registry),
        format!("{}/{repository}", standin.var("STANDIN_REGION2_HOST")),
        format!("{}/{repository}", standin.var("STANDIN_ACCOUNT2_HOST")),
        format!("public.ecr.aws/{alias}/{repository}"),
    ];
    let listed = targets(&run);
    assert_eq!(listed.len(), 4, "{listed:?}");
    for label in &labels {
        assert_eq!(listed.get(label), Some(&digest), "{label} in {listed:?}");
    }
    // The primary comes first.
    assert!(run
        .output("targets")
        .starts_with(&format!("{{\"{}", labels[0])));

    // Each registry's own API holds the digest under the tag, and each pulls and runs.
    let region2 = standin.region2();
    let account2 = standin.account2();
    for registry in [&region2, &account2] {
        assert_eq!(
            standin.digest_at(registry, &repository, "v1").as_ref(),
            Some(&digest),
            "{}",
            registry.host
        );
        let password = standin.password_at(registry);
        let reference = format!("{}/{repository}:v1", registry.host);
        let out = pull_and_run(&registry.host, Some(&password), &reference);
        assert_eq!(out.trim(), marker, "{reference}");
    }
    let public_ref = format!("public.ecr.aws/{alias}/{repository}:v1");
    assert_eq!(
        pull_and_run("public.ecr.aws", None, &public_ref).trim(),
        marker
    );
    let public = standin.control("/public", None);
    let images = public["images"][&repository].to_string();
    assert!(images.contains(&digest), "ECR Public's images: {public}");

    // Compressed once for all four registries; each got every blob (sent, or already
    // there).
    let compressed = compressed_layers(&run.stderr);
    let mut distinct = compressed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        compressed.len(),
        "a layer compressed twice: {compressed:?}"
    );
    if engine_is_containerd_store() {
        assert!(
            compressed.is_empty(),
            "BuildKit compressed the stored layers: {compressed:?}"
        );
    } else {
        assert!(!compressed.is_empty(), "{}", run.stderr);
    }
    for label in &labels[1..] {
        let sent = run
            .stderr
            .lines()
            .filter(|l| l.contains(&format!("[{label}] ")) && l.contains(": Pushed "))
            .count();
        assert!(sent >= 2, "{label} got {sent} blobs:\n{}", run.stderr);
    }

    // The role was assumed once, named and tagged after the run: the eager check's
    // credentials serve the run (regression: the SDK's cache assumed it a second time).
    let sts = standin.control("/sts", None);
    let session = format!("ecr-build-push-{run_id}");
    let calls: Vec<&serde_json::Value> = sts["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("{sts}"))
        .iter()
        .filter(|c| {
            c["RoleSessionName"]
                .as_str()
                .is_some_and(|n| n.starts_with(&session))
        })
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0]["RoleArn"],
        standin.var("STANDIN_ACCOUNT2_ROLE").as_str()
    );
    let tags = calls[0]["Tags"].to_string();
    assert!(
        tags.contains("GitHubRunId") && tags.contains(&run_id),
        "{tags}"
    );

    // One row per registry in the summary.
    for label in &labels {
        assert!(
            run.summary.contains(&format!("| `{label}` | `{digest}` |")),
            "{label} has no row:\n{}",
            run.summary
        );
    }
}

/// Regression of the partial failure: a repository denied in the second account
/// fails that registry alone (the others have the image, `targets` lists only them, and
/// the one error names the failed registry with ECR's reason); a re-run with
/// `on-tag-exists: skip` builds nothing and copies the image to that registry only, with
/// the same digest and the provenance the primary holds.
#[test]
fn a_denied_registry_fails_alone_and_a_rerun_with_skip_finishes_it() {
    let standin = standin();
    let repository = unique("targets-deny");
    let ws = workspace(&unique("marker"));
    let account2 = standin.var("STANDIN_ACCOUNT2");
    let also = format!(
        "{}\n{}",
        standin.var("STANDIN_REGION2"),
        account2_with(&standin.var("STANDIN_ACCOUNT2_ROLE")),
    );
    standin.control(
        "/deny",
        Some(&serde_json::json!({"account": account2, "repository": repository})),
    );
    let action = || {
        standin
            .action(ws.path())
            .input("repository", &repository)
            .input("tags", "v1")
            .input("on-tag-exists", "skip")
            .input("also-push-to", &also)
    };
    let first = action().run();
    let account2_label = format!("{}/{repository}", standin.var("STANDIN_ACCOUNT2_HOST"));
    let error = first.assert_one_error(&["1 of 3 registries failed", &account2_label]);
    assert!(error.contains("not authorized"), "{error}");
    let digest = first.output("image-digest").to_string();
    let listed = targets(&first);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(!listed.contains_key(&account2_label), "{listed:?}");
    assert!(
        first
            .summary
            .contains(&format!("| `{account2_label}` | failed: ")),
        "{}",
        first.summary
    );
    assert_eq!(
        standin.digest_at(&standin.region2(), &repository, "v1"),
        Some(digest.clone())
    );

    // Allowed again: the re-run finishes the second account only.
    standin.control(
        "/deny",
        Some(&serde_json::json!({"account": account2, "repository": repository, "allow": true})),
    );
    let second = action().run();
    second.assert_success();
    assert!(
        !second.stderr.contains(support::BUILD_STARTED),
        "the re-run built:\n{}",
        second.stderr
    );
    assert!(
        second
            .stderr
            .contains("copying it from the primary registry"),
        "{}",
        second.stderr
    );
    assert_eq!(second.output("image-digest"), digest);
    assert_eq!(targets(&second).len(), 3);
    let account2 = standin.account2();
    assert_eq!(
        standin.digest_at(&account2, &repository, "v1"),
        Some(digest.clone())
    );
    // The provenance the first run attached at the primary came along with the image.
    let mut at_primary: Vec<String> = standin
        .referrers(&repository, &digest)
        .into_iter()
        .map(|(referrer, _)| referrer)
        .collect();
    assert!(!at_primary.is_empty(), "no provenance at the primary");
    at_primary.sort();
    let there = standin.referrers_at(&account2, &repository, &digest);
    assert_eq!(there, at_primary, "{}", second.stderr);
    assert!(
        second.stderr.contains("attachment(s) of"),
        "{}",
        second.stderr
    );
}

/// Several platforms and several registries: one index per registry, the same index
/// digest everywhere, each listing the same platform manifests.
#[test]
fn a_multi_platform_image_is_one_index_in_every_registry() {
    let standin = standin();
    let repository = unique("targets-multi");
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM {}/standin/busybox-multi:latest\nRUN uname -m > /machine\n",
            standin.registry
        ),
    );
    let run = standin
        .action(ws.path())
        .input("repository", &repository)
        .input("tags", "v1")
        .input("platforms", "linux/amd64,linux/arm64")
        .input("also-push-to", &standin.var("STANDIN_REGION2"))
        .run();
    run.assert_success();
    let digest = run.output("image-digest").to_string();
    let listed = targets(&run);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.values().all(|d| *d == digest), "{listed:?}");
    let region2 = standin.region2();
    assert_eq!(standin.digest_at(&region2, &repository, "v1"), Some(digest));
    let children: Vec<String> =
        serde_json::from_str::<serde_json::Value>(run.output("platform-digests"))
            .unwrap()
            .as_object()
            .unwrap()
            .values()
            .map(|d| d.as_str().unwrap().to_string())
            .collect();
    assert_eq!(children.len(), 2);
    for child in &children {
        let found = standin.api_at(
            &region2,
            "DescribeImages",
            &serde_json::json!({"repositoryName": repository, "imageIds": [{"imageDigest": child}]}),
        );
        assert_eq!(
            found["imageDetails"][0]["imageDigest"],
            child.as_str(),
            "{found}"
        );
    }
}

/// ECR Public as a target: the catalog data from the inputs is applied at creation and
/// kept in step on the next run (the expired token's renewal is
/// `tests/ecr_public.rs`'s).
#[test]
fn ecr_public_gets_the_image_with_its_catalog_data() {
    let standin = standin();
    let repository = unique("targets-public");
    let ws = workspace(&unique("marker"));
    let alias = standin.var("STANDIN_PUBLIC_ALIAS");
    let run = |description: &str, tag: &str| {
        standin
            .action(ws.path())
            .input("repository", &repository)
            .input("tags", tag)
            .input("also-push-to", &format!("public.ecr.aws/{alias}"))
            .input("public-description", description)
            .input("public-usage", "docker run it")
            .run()
    };
    let first = run("first description", "v1");
    first.assert_success();
    let catalog = standin.public_catalog(&repository);
    assert_eq!(catalog["description"], "first description", "{catalog}");
    assert_eq!(catalog["usageText"], "docker run it", "{catalog}");

    let second = run("second description", "v2");
    second.assert_success();
    let catalog = standin.public_catalog(&repository);
    assert_eq!(catalog["description"], "second description", "{catalog}");
    assert_eq!(catalog["usageText"], "docker run it", "{catalog}");
    let label = format!("public.ecr.aws/{alias}/{repository}");
    assert_eq!(
        targets(&second).get(&label),
        Some(&second.output("image-digest").to_string())
    );
}

/// Puts the primary registry's replication rules (registry-wide: one test of this file
/// uses them), and the stand-in's replication switches; both put back when dropped.
struct Replication;

impl Replication {
    fn to_region2(prefix: &str, switches: &serde_json::Value) -> Self {
        let standin = standin();
        let rules = serde_json::json!({"replicationConfiguration": {"rules": [{
            "destinations": [{"region": standin.var("STANDIN_REGION2"),
                              "registryId": support::ACCOUNT}],
            "repositoryFilters": [{"filter": prefix, "filterType": "PREFIX_MATCH"}]}]}});
        let answer = standin.api(
            &support::own_access_key(),
            "PutReplicationConfiguration",
            &rules,
        );
        assert!(answer["replicationConfiguration"].is_object(), "{answer}");
        standin.control("/replication", Some(switches));
        Self
    }
}

impl Drop for Replication {
    fn drop(&mut self) {
        let standin = standin();
        standin.api(
            &support::own_access_key(),
            "PutReplicationConfiguration",
            &serde_json::json!({"replicationConfiguration": {"rules": []}}),
        );
        standin.control(
            "/replication",
            Some(&serde_json::json!({"delay": 2, "fail": []})),
        );
    }
}

/// A role whose trust policy does not trust the run leaves that target out before the
/// build, with STS's own reason and what to fix; the other target gets the image.
#[test]
fn a_role_the_run_cannot_assume_leaves_its_target_out_with_sts_s_reason() {
    let standin = standin();
    let repository = unique("targets-untrusted");
    let role = format!(
        "arn:aws:iam::{}:role/untrusted",
        standin.var("STANDIN_ACCOUNT2")
    );
    standin.control("/sts", Some(&serde_json::json!({"deny": [role]})));
    let run = standin
        .action(workspace(&unique("marker")).path())
        .input("repository", &repository)
        .input("tags", "v1")
        .input(
            "also-push-to",
            &format!(
                "{}\n{}",
                account2_with(&role),
                standin.var("STANDIN_REGION2")
            ),
        )
        .run();
    let error = run.assert_one_error(&[
        "1 of 3 registries failed",
        &format!("cannot assume the role {role}"),
    ]);
    assert!(
        error.contains("STS answered AccessDenied: User: ")
            && error.contains("not authorized to perform: sts:AssumeRole")
            && error.contains("sts:TagSession"),
        "{error}"
    );
    assert!(
        run.stderr.contains("is left out of this run"),
        "{}",
        run.stderr
    );
    let digest = run.output("image-digest").to_string();
    assert_eq!(
        standin.digest_at(&standin.region2(), &repository, "v1"),
        Some(digest)
    );
}

/// A `replicated` target is not pushed to: the step waits for ECR's replication to report
/// `COMPLETE` there and confirms the image with that region's API (the same digest in
/// `targets`). Replication that fails fails that target alone, with ECR's code; a
/// repository no rule covers is left out before the build.
#[test]
fn a_replicated_region_is_waited_for_not_pushed_to() {
    let standin = standin();
    let prefix = unique("targets-repl");
    let _rules = Replication::to_region2(&prefix, &serde_json::json!({"delay": 2}));
    let also = format!("{} replicated", standin.var("STANDIN_REGION2"));
    let run = |repository: &str, also_push_to: &str| {
        standin
            .action(workspace(&unique("marker")).path())
            .input("repository", repository)
            .input("tags", "v1")
            .input("also-push-to", also_push_to)
            .run()
    };

    // With a pushed target after the replicated one. Regression: the rows follow the
    // input, and the pushed target's row was matched with the replicated one's, so it
    // got no provenance.
    let repository = format!("{prefix}/app");
    let account2_label = format!("{}/{repository}", standin.var("STANDIN_ACCOUNT2_HOST"));
    let replicated = run(
        &repository,
        &format!(
            "{also}\n{}",
            account2_with(&standin.var("STANDIN_ACCOUNT2_ROLE"))
        ),
    );
    replicated.assert_success();
    let digest = replicated.output("image-digest").to_string();
    let at_primary = standin.referrers(&repository, &digest);
    assert!(!at_primary.is_empty(), "no provenance at the primary");
    // As many as the primary's; not the same digests, as each registry's provenance
    // names the image there.
    assert_eq!(
        standin
            .referrers_at(&standin.account2(), &repository, &digest)
            .len(),
        at_primary.len(),
        "{}",
        replicated.stderr
    );
    assert!(
        replicated.stderr.contains("ECR replicated"),
        "{}",
        replicated.stderr
    );
    let region2_label = format!("{}/{repository}", standin.var("STANDIN_REGION2_HOST"));
    assert!(
        !replicated.stderr.contains(&format!("[{region2_label}]")),
        "the replicated region was pushed to:\n{}",
        replicated.stderr
    );
    assert_eq!(targets(&replicated).get(&region2_label), Some(&digest));
    assert_eq!(targets(&replicated).get(&account2_label), Some(&digest));
    let row = |label: &str| {
        replicated
            .summary
            .find(&format!("| `{label}` |"))
            .unwrap_or_else(|| panic!("no row for {label}:\n{}", replicated.summary))
    };
    assert!(
        row(&region2_label) < row(&account2_label),
        "{}",
        replicated.summary
    );
    assert_eq!(
        standin.digest_at(&standin.region2(), &repository, "v1"),
        Some(digest)
    );

    standin.control(
        "/replication",
        Some(&serde_json::json!({"fail": [standin.var("STANDIN_REGION2")]})),
    );
    let failed = run(&format!("{prefix}/failing"), &also);
    failed.assert_one_error(&[
        "1 of 2 registries failed",
        "replication",
        "REPLICATION_FAILED",
    ]);

    let uncovered = run(&unique("targets-norule"), &also);
    uncovered.assert_one_error(&["no replication rule"]);
    assert!(
        uncovered.stderr.contains("is left out of this run"),
        "{}",
        uncovered.stderr
    );
}

/// A layer the primary registry has already (the previous image's base) is not
/// compressed again for a registry that lacks it: it is copied there from the primary,
/// as it is, and only the new layer is compressed, once.
#[test]
fn a_layer_the_primary_has_is_copied_to_the_others_not_compressed_again() {
    let standin = standin();
    let repository = unique("targets-known");
    let first = standin
        .action(workspace(&unique("first")).path())
        .input("repository", &repository)
        .input("tags", "v1")
        .run();
    first.assert_success();
    let second = standin
        .action(workspace(&unique("second")).path())
        .input("repository", &repository)
        .input("tags", "v1")
        .input("also-push-to", &standin.var("STANDIN_REGION2"))
        .run();
    second.assert_success();
    let region2 = format!("{}/{repository}", standin.var("STANDIN_REGION2_HOST"));
    assert!(
        second.stderr.contains(&format!(
            "{region2}: 1 known layer(s) copied from the primary registry"
        )),
        "{}",
        second.stderr
    );
    if !engine_is_containerd_store() {
        // The base was compressed by the first run; the second compresses its own layer.
        assert_eq!(
            compressed_layers(&second.stderr).len(),
            1,
            "{}",
            second.stderr
        );
    }
    let digest = second.output("image-digest").to_string();
    assert_eq!(targets(&second).get(&region2), Some(&digest));
    let password = standin.password_at(&standin.region2());
    let reference = format!("{region2}:v1");
    let out = pull_and_run(
        &standin.var("STANDIN_REGION2_HOST"),
        Some(&password),
        &reference,
    );
    assert!(out.trim().starts_with("second-"), "{out}");
}
