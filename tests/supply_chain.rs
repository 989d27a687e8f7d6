//! Supply chain, end to end on the stand-in: the SLSA provenance attached to every
//! pushed image manifest as an OCI 1.1 referrer (the tag stays one image manifest, or an
//! index of exactly the platforms), its content checked against the run's context, and
//! what happens when the registry refuses it.

mod support;

use support::{standin, unique, Workspace};

const BASE: &str = "local/busybox:latest";
const STATEMENT: &str = "application/vnd.in-toto+json";

/// A Dockerfile on the two-platform base in the stand-in's registry, for multi-platform
/// builds.
fn multi_platform_workspace() -> Workspace {
    let registry = &standin().registry;
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!("FROM {registry}/standin/busybox-multi:latest\nRUN uname -m > /machine\n"),
    );
    ws
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM {BASE}\nARG GREETING=unset\nRUN echo \"$GREETING\" > /greeting\n\
             CMD [\"cat\", \"/greeting\"]\n"
        ),
    );
    ws
}

/// The GitHub context a workflow run gives the step.
const GITHUB: [(&str, &str); 8] = [
    ("GITHUB_SERVER_URL", "https://github.com"),
    ("GITHUB_REPOSITORY", "octo/shop"),
    ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
    ("GITHUB_REF", "refs/heads/main"),
    ("GITHUB_RUN_ID", "987654321"),
    ("GITHUB_RUN_ATTEMPT", "2"),
    (
        "GITHUB_WORKFLOW_REF",
        "octo/shop/.github/workflows/deploy.yml@refs/heads/main",
    ),
    ("RUNNER_ENVIRONMENT", "github-hosted"),
];

/// The statement in the provenance referrer `digest` of `repository`, after checking
/// the referrer's manifest names `subject` and carries one statement layer.
fn statement(repository: &str, digest: &str, subject: &str) -> serde_json::Value {
    let standin = standin();
    let (manifest, blobs) = standin.attached(repository, digest);
    assert_eq!(manifest["artifactType"], STATEMENT, "{manifest}");
    assert_eq!(manifest["subject"]["digest"], subject, "{manifest}");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], STATEMENT);
    assert_eq!(
        manifest["layers"][0]["annotations"]["in-toto.io/predicate-type"],
        "https://slsa.dev/provenance/v1"
    );
    // The subject descriptor is the manifest as the registry serves it.
    let served = standin.registry_manifest(repository, subject);
    assert_eq!(manifest["subject"]["mediaType"], served["mediaType"]);
    serde_json::from_slice(&blobs[1]).expect("the statement is JSON")
}

/// A default push attaches a provenance to its image manifest: the tag is still one
/// image manifest; ECR lists the provenance among the image's referrers; the statement's
/// subject is the image digest, and its predicate names the workflow as builder, the
/// run's attempt, the commit, the build-arg's name (not its value), the Dockerfile and
/// the base image; the summary has a supply-chain section with the commands to check it.
#[test]
fn a_push_attaches_its_provenance_as_a_referrer() {
    let standin = standin();
    let repo = unique("supply/one");
    let ws = workspace();
    let mut action = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("build-args", "GREETING=not-in-the-provenance");
    for (name, value) in GITHUB {
        action = action.env(name, value);
    }
    let run = action.run();
    run.assert_success();
    let digest = run.output("image-digest").to_string();
    let provenance = run.output("provenance-digest").to_string();
    assert!(provenance.starts_with("sha256:"), "{provenance}");
    assert_eq!(run.output("signature-digest"), "");
    standin.assert_single_image_manifest(&repo, "latest");

    let referrers = standin.referrers(&repo, &digest);
    assert_eq!(referrers, [(provenance.clone(), STATEMENT.to_string())]);
    // The registry's referrers API, as the real oras reads it.
    let discovered: serde_json::Value = serde_json::from_str(&standin.oras(&[
        "discover",
        "--format",
        "json",
        &format!("{}/{repo}@{digest}", standin.registry),
    ]))
    .expect("oras prints JSON");
    let listed = discovered["manifests"].to_string();
    assert!(
        listed.contains(&provenance) && listed.contains(STATEMENT),
        "{discovered}"
    );

    let statement = statement(&repo, &provenance, &digest);
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let predicate = &statement["predicate"];
    assert_eq!(
        predicate["runDetails"]["builder"]["id"],
        "https://github.com/octo/shop/.github/workflows/deploy.yml@refs/heads/main"
    );
    assert_eq!(
        predicate["runDetails"]["metadata"]["invocationId"],
        "https://github.com/octo/shop/actions/runs/987654321/attempts/2"
    );
    let definition = &predicate["buildDefinition"];
    let build = &definition["externalParameters"]["build"];
    assert_eq!(build["dockerfile"], "Dockerfile");
    assert_eq!(build["buildArgNames"], serde_json::json!(["GREETING"]));
    let dependencies = definition["resolvedDependencies"].to_string();
    assert!(
        dependencies.contains("0123456789abcdef0123456789abcdef01234567")
            && dependencies.contains("local/busybox"),
        "{dependencies}"
    );
    let text = statement.to_string();
    assert!(!text.contains("not-in-the-provenance"), "{text}");
    assert!(
        run.summary.contains("#### Supply chain") && run.summary.contains("oras discover"),
        "{}",
        run.summary
    );
}

/// `provenance: false` attaches nothing: no referrer, no output.
#[test]
fn provenance_false_attaches_nothing() {
    let standin = standin();
    let repo = unique("supply/off");
    let run = standin
        .action(workspace().path())
        .input("repository", &repo)
        .input("provenance", "false")
        .run();
    run.assert_success();
    assert_eq!(run.output("provenance-digest"), "");
    assert!(standin
        .referrers(&repo, run.output("image-digest"))
        .is_empty());
}

/// With several platforms, each platform's image manifest gets its own provenance
/// (naming its platform), and the tag is an index of exactly the platforms asked: no
/// `unknown/unknown` entry.
#[test]
fn each_platform_of_an_index_gets_its_own_provenance() {
    let standin = standin();
    let repo = unique("supply/multi");
    let run = standin
        .action(multi_platform_workspace().path())
        .input("repository", &repo)
        .input("platforms", "linux/amd64,linux/arm64")
        .run();
    run.assert_success();
    let index = standin.registry_manifest(&repo, "latest");
    let children = index["manifests"].as_array().expect("an index");
    let platforms: Vec<String> = children
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c["platform"]["os"].as_str().unwrap_or_default(),
                c["platform"]["architecture"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);

    let provenance: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(run.output("provenance-digest")).expect("a JSON object");
    assert_eq!(provenance.len(), 2, "{provenance:?}");
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let platform = format!(
            "linux/{}",
            child["platform"]["architecture"].as_str().unwrap()
        );
        let attached = provenance[&platform].as_str().unwrap();
        assert_eq!(
            standin.referrers(&repo, digest),
            [(attached.to_string(), STATEMENT.to_string())]
        );
        let statement = statement(&repo, attached, digest);
        let definition = &statement["predicate"]["buildDefinition"];
        assert_eq!(
            definition["externalParameters"]["build"]["platform"],
            platform
        );
        // The base image by the digest BuildKit resolved it to: the base index's.
        let base = standin
            .registry_digest("standin/busybox-multi", "latest")
            .expect("the base index");
        let dependencies = definition["resolvedDependencies"].to_string();
        assert!(
            dependencies.contains(base.trim_start_matches("sha256:")),
            "{base} not in {dependencies}"
        );
    }
}

/// A registry that refuses the provenance (ECR answered 405 to some referrers:
/// aws/containers-roadmap#2783) leaves the image pushed and the step green, with a
/// warning naming what was refused; `provenance-digest` is empty.
#[test]
fn a_refused_provenance_is_a_warning_and_the_image_stays() {
    let standin = standin();
    let repo = unique("supply/refused");
    // Every manifest carrying a `subject` gets ECR's 405 in this repository.
    standin.control(
        "/referrers",
        Some(&serde_json::json!({"repository": repo, "refuse": true})),
    );
    let run = standin
        .action(workspace().path())
        .input("repository", &repo)
        .run();
    run.assert_success();
    assert_eq!(run.output("provenance-digest"), "");
    assert!(
        run.stderr
            .contains("::warning::the registry refused the provenance of sha256:"),
        "{}",
        run.stderr
    );
    standin.assert_single_image_manifest(&repo, "latest");
    assert_eq!(
        standin.stats(&repo)["referrer_refusals"],
        1,
        "the provenance was offered once and refused"
    );
}

/// A zstd push (an OCI image manifest with zstd layers) gets its provenance too, whose
/// subject descriptor is that OCI manifest as the registry serves it.
#[test]
fn a_zstd_image_gets_its_provenance() {
    let standin = standin();
    let repo = unique("supply/zstd");
    // A layer of its own (no cached gzip layer): the one layer zstd compresses.
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!("FROM {BASE}\nRUN echo {repo} > /marker\n"),
    );
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("compression", "zstd")
        .run();
    run.assert_success();
    let digest = run.output("image-digest");
    let served = standin.registry_manifest(&repo, digest);
    assert_eq!(
        served["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(
        served["layers"].to_string().contains("tar+zstd"),
        "{served}"
    );
    let provenance = run.output("provenance-digest");
    let statement = statement(&repo, provenance, digest);
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
}

/// The classic builder and the daemon's pusher (the route where the daemon, not the
/// action, puts the manifest): the provenance is attached to the digest the daemon
/// pushed, with the base image as the daemon's store resolved it.
#[test]
fn a_daemon_push_of_a_classic_build_gets_its_provenance() {
    let standin = standin();
    let repo = unique("supply/daemon");
    let ws = workspace();
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("builder", "classic")
        .input("push-engine", "daemon")
        .run();
    run.assert_success();
    let digest = run.output("image-digest");
    let provenance = run.output("provenance-digest");
    let statement = statement(&repo, provenance, digest);
    let predicate = &statement["predicate"];
    assert_eq!(
        predicate["buildDefinition"]["internalParameters"]["builder"],
        "classic"
    );
    assert!(
        predicate["buildDefinition"]["resolvedDependencies"]
            .to_string()
            .contains("local/busybox"),
        "{predicate}"
    );
}
