//! The SLSA provenance of one pushed image manifest: an in-toto Statement v1
//! (<https://in-toto.io/Statement/v1>) whose subject is the manifest's digest, with a
//! SLSA Provenance v1 predicate (<https://slsa.dev/spec/v1.0/provenance>) describing the
//! run: the builder (the workflow, at its ref), the invocation (the run's URL and
//! attempt), the source (repository and commit), the build (Dockerfile, target,
//! platforms, build-arg names, and their values only with `provenance: max`), the base
//! images as they were resolved, and when it started and finished.
//!
//! Build secrets never appear, not even their ids: only what `inputs.build` holds in the
//! open, and build-arg values on request.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use sigstore_types::{Sha256Hash, Statement};

use super::{AttachedBlob, Attachment};
use crate::engine::bases::ResolvedBase;
use crate::env::GitHubContext;
use crate::inputs::ProvenanceMode;

/// The predicate type of SLSA Provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The media type of an in-toto statement, as a blob and as an `artifactType`.
pub const STATEMENT_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The annotation naming a statement blob's predicate type, as BuildKit's attestations
/// carry it, so a reader can pick a predicate without fetching the blob.
pub const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// What this provenance's `buildDefinition` means: a Docker build by this action, with
/// the external parameters below.
pub const BUILD_TYPE: &str =
    "https://github.com/ecr-build-push/ecr-build-push/blob/main/docs/buildtype-v1.md";

/// What the provenance says about the run, the same for every platform but `platform`
/// and `bases`.
#[derive(Debug, Clone)]
pub struct BuildFacts<'a> {
    pub github: &'a GitHubContext,
    pub mode: ProvenanceMode,
    /// The Dockerfile and the context, relative to the workspace where they are in it.
    pub dockerfile: String,
    pub context: String,
    pub target: Option<&'a str>,
    pub platforms: Vec<String>,
    pub build_args: &'a BTreeMap<String, String>,
    pub tags: &'a [String],
    /// `buildkit` or `classic`, and the engine's version.
    pub builder: &'static str,
    pub engine_version: String,
    /// Seconds since the epoch.
    pub started: i64,
    pub finished: i64,
}

/// The provenance of the image manifest `digest` of `repository_ref` (`host/repo`), built
/// for `platform` from `bases`.
pub fn statement(
    facts: &BuildFacts<'_>,
    repository_ref: &str,
    digest: &str,
    platform: Option<&str>,
    bases: &[ResolvedBase],
) -> Result<Statement, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("`{digest}` is not a sha256 digest"))?;
    let hash = Sha256Hash::from_hex(hex).map_err(|e| format!("`{digest}`: {e}"))?;
    let subject = sigstore_types::intoto::Subject::new(
        repository_ref,
        sigstore_types::intoto::Digest::sha256(hash),
    );
    let predicate = predicate(facts, platform, bases);
    let predicate = serde_json::to_value(predicate).map_err(|e| e.to_string())?;
    Ok(Statement::new(vec![subject], PREDICATE_TYPE, predicate))
}

/// The statement as an attachment: one blob, its predicate type annotated.
pub fn attachment(statement: &Statement) -> Result<Attachment, String> {
    let bytes = serde_json::to_vec(statement).map_err(|e| e.to_string())?;
    let blob = AttachedBlob {
        media_type: STATEMENT_MEDIA_TYPE.to_string(),
        bytes: Bytes::from(bytes),
        annotations: BTreeMap::from([(
            PREDICATE_ANNOTATION.to_string(),
            statement.predicate_type.clone(),
        )]),
    };
    Ok(Attachment {
        artifact_type: STATEMENT_MEDIA_TYPE.to_string(),
        layers: vec![blob],
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Predicate {
    build_definition: BuildDefinition,
    run_details: RunDetails,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildDefinition {
    build_type: &'static str,
    external_parameters: serde_json::Value,
    internal_parameters: serde_json::Value,
    resolved_dependencies: Vec<ResourceDescriptor>,
}

/// SLSA's `ResourceDescriptor` (in-toto's), with the fields used here.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceDescriptor {
    uri: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    digest: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunDetails {
    builder: Builder,
    metadata: Metadata,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Builder {
    id: String,
    version: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    invocation_id: Option<String>,
    started_on: String,
    finished_on: String,
}

fn predicate(facts: &BuildFacts<'_>, platform: Option<&str>, bases: &[ResolvedBase]) -> Predicate {
    let github = facts.github;
    let server = github
        .server_url
        .as_deref()
        .unwrap_or("https://github.com")
        .trim_end_matches('/');
    let repository_url = github
        .repository
        .as_ref()
        .map(|repository| format!("{server}/{repository}"));

    // Names always; values only on request (`provenance: max`): a build-arg may carry
    // something its author did not mean to publish.
    let build_args: serde_json::Value = match facts.mode {
        ProvenanceMode::Max => serde_json::json!(facts.build_args),
        _ => serde_json::json!(facts.build_args.keys().collect::<Vec<_>>()),
    };
    let args_key = match facts.mode {
        ProvenanceMode::Max => "buildArgs",
        _ => "buildArgNames",
    };
    let mut build = serde_json::json!({
        "dockerfile": facts.dockerfile,
        "context": facts.context,
        "platforms": facts.platforms,
        "tags": facts.tags,
    });
    build[args_key] = build_args;
    if let Some(platform) = platform {
        build["platform"] = serde_json::json!(platform);
    }
    if let Some(target) = facts.target {
        build["target"] = serde_json::json!(target);
    }
    let mut external = serde_json::json!({ "build": build });
    if let (Some(url), Some(workflow)) = (&repository_url, github.workflow_ref.as_deref()) {
        // `owner/name/.github/workflows/x.yml@refs/heads/main`
        let (path, git_ref) = workflow.split_once('@').unwrap_or((workflow, ""));
        let path = github
            .repository
            .as_deref()
            .and_then(|repository| path.strip_prefix(repository))
            .unwrap_or(path)
            .trim_start_matches('/');
        external["workflow"] = serde_json::json!({
            "repository": url,
            "path": path,
            "ref": git_ref,
        });
    }

    let mut internal = serde_json::Map::new();
    for (name, value) in [
        ("event_name", &github.event_name),
        ("runner_environment", &github.runner_environment),
        ("workflow_sha", &github.workflow_sha),
    ] {
        if let Some(value) = value {
            internal.insert(name.to_string(), serde_json::json!(value));
        }
    }
    internal.insert("builder".into(), serde_json::json!(facts.builder));
    internal.insert(
        "engine_version".into(),
        serde_json::json!(facts.engine_version),
    );

    let mut dependencies = Vec::new();
    if let (Some(url), Some(sha)) = (&repository_url, &github.sha) {
        let uri = match &github.git_ref {
            Some(git_ref) => format!("git+{url}@{git_ref}"),
            None => format!("git+{url}"),
        };
        dependencies.push(ResourceDescriptor {
            uri,
            digest: BTreeMap::from([("gitCommit".to_string(), sha.clone())]),
            name: None,
            annotations: BTreeMap::new(),
        });
    }
    for base in bases {
        let digest = base
            .digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
            .map(|hex| BTreeMap::from([("sha256".to_string(), hex.to_string())]))
            .unwrap_or_default();
        dependencies.push(ResourceDescriptor {
            uri: package_url(&base.reference, platform),
            digest,
            name: Some(base.reference.clone()),
            // An image only the daemon's store has (no registry digest): its ID.
            annotations: base
                .image_id
                .iter()
                .filter(|_| base.digest.is_none())
                .map(|id| ("imageId".to_string(), id.clone()))
                .collect(),
        });
    }

    let builder_id = match (&repository_url, github.workflow_ref.as_deref()) {
        (Some(_), Some(workflow)) => format!("{server}/{workflow}"),
        _ => "https://github.com/ecr-build-push/ecr-build-push".to_string(),
    };
    let invocation_id = match (&repository_url, &github.run_id) {
        (Some(url), Some(run)) => Some(format!(
            "{url}/actions/runs/{run}/attempts/{}",
            github.run_attempt.as_deref().unwrap_or("1")
        )),
        _ => None,
    };
    Predicate {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE,
            external_parameters: external,
            internal_parameters: serde_json::Value::Object(internal),
            resolved_dependencies: dependencies,
        },
        run_details: RunDetails {
            builder: Builder {
                id: builder_id,
                version: BTreeMap::from([(
                    "ecr-build-push".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                )]),
            },
            metadata: Metadata {
                invocation_id,
                started_on: crate::metadata::rfc3339(facts.started),
                finished_on: crate::metadata::rfc3339(facts.finished),
            },
        },
    }
}

/// A base image as a package URL (<https://github.com/package-url/purl-spec>, type
/// `docker`), as BuildKit's provenance names them:
/// `pkg:docker/library/alpine@3.20?platform=linux%2Famd64`.
fn package_url(reference: &str, platform: Option<&str>) -> String {
    let reference = reference.split('@').next().unwrap_or(reference);
    // The tag is the last `:` after the last `/` (a registry host may have a port).
    let (name, tag) = match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => (&reference[..i], &reference[i + 1..]),
        _ => (reference, "latest"),
    };
    let mut purl = format!("pkg:docker/{name}@{tag}");
    if let Some(platform) = platform {
        purl.push_str("?platform=");
        purl.push_str(&platform.replace('/', "%2F"));
    }
    purl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github() -> GitHubContext {
        GitHubContext {
            git_ref: Some("refs/heads/main".into()),
            sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
            event_name: Some("push".into()),
            run_id: Some("4242".into()),
            run_attempt: Some("2".into()),
            server_url: Some("https://github.com".into()),
            repository: Some("octo/app".into()),
            workflow_ref: Some("octo/app/.github/workflows/deploy.yml@refs/heads/main".into()),
            runner_environment: Some("github-hosted".into()),
            ..GitHubContext::default()
        }
    }

    fn facts<'a>(
        github: &'a GitHubContext,
        args: &'a BTreeMap<String, String>,
        mode: ProvenanceMode,
    ) -> BuildFacts<'a> {
        BuildFacts {
            github,
            mode,
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
            target: Some("runtime"),
            platforms: vec!["linux/amd64".into()],
            build_args: args,
            tags: &[],
            builder: "buildkit",
            engine_version: "28.5.2".into(),
            started: 1_796_000_000,
            finished: 1_796_000_090,
        }
    }

    /// The statement names the manifest as its subject, and the predicate carries the
    /// workflow as builder, the run's attempt as invocation, the commit as a resolved
    /// dependency with each base image by digest, and the times.
    #[test]
    fn the_provenance_describes_the_run() {
        let github = github();
        let args = BTreeMap::from([("VERSION".to_string(), "1.2.3".to_string())]);
        let digest = format!("sha256:{}", "ab".repeat(32));
        let bases = [ResolvedBase {
            reference: "docker.io/library/alpine:3.20".into(),
            digest: Some(format!("sha256:{}", "cd".repeat(32))),
            image_id: None,
        }];
        let statement = statement(
            &facts(&github, &args, ProvenanceMode::Min),
            "1.dkr.ecr.us-east-1.amazonaws.com/app",
            &digest,
            Some("linux/amd64"),
            &bases,
        )
        .unwrap();
        let doc = serde_json::to_value(&statement).unwrap();
        assert_eq!(doc["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(doc["predicateType"], PREDICATE_TYPE);
        assert_eq!(doc["subject"][0]["digest"]["sha256"], "ab".repeat(32));
        let predicate = &doc["predicate"];
        assert_eq!(
            predicate["runDetails"]["builder"]["id"],
            "https://github.com/octo/app/.github/workflows/deploy.yml@refs/heads/main"
        );
        assert_eq!(
            predicate["runDetails"]["metadata"]["invocationId"],
            "https://github.com/octo/app/actions/runs/4242/attempts/2"
        );
        assert_eq!(
            predicate["runDetails"]["metadata"]["finishedOn"],
            crate::metadata::rfc3339(1_796_000_090)
        );
        let external = &predicate["buildDefinition"]["externalParameters"];
        assert_eq!(external["workflow"]["path"], ".github/workflows/deploy.yml");
        assert_eq!(external["build"]["target"], "runtime");
        assert_eq!(
            external["build"]["buildArgNames"],
            serde_json::json!(["VERSION"])
        );
        let dependencies = &predicate["buildDefinition"]["resolvedDependencies"];
        assert_eq!(
            dependencies[0]["uri"],
            "git+https://github.com/octo/app@refs/heads/main"
        );
        assert_eq!(
            dependencies[0]["digest"]["gitCommit"],
            github.sha.clone().unwrap()
        );
        assert_eq!(
            dependencies[1]["uri"],
            "pkg:docker/docker.io/library/alpine@3.20?platform=linux%2Famd64"
        );
        assert_eq!(dependencies[1]["digest"]["sha256"], "cd".repeat(32));
    }

    /// Build-arg values appear only with `provenance: max`.
    #[test]
    fn build_arg_values_appear_only_with_max() {
        let github = github();
        let args = BTreeMap::from([("TOKEN_HINT".to_string(), "s3cr3t-value".to_string())]);
        let digest = format!("sha256:{}", "ab".repeat(32));
        for (mode, shows) in [(ProvenanceMode::Min, false), (ProvenanceMode::Max, true)] {
            let statement =
                statement(&facts(&github, &args, mode), "r/app", &digest, None, &[]).unwrap();
            let text = serde_json::to_string(&statement).unwrap();
            assert!(text.contains("TOKEN_HINT"), "{text}");
            assert_eq!(text.contains("s3cr3t-value"), shows, "{mode:?}: {text}");
        }
    }

    #[test]
    fn base_images_become_package_urls() {
        assert_eq!(
            package_url("registry:5000/team/base:1.2@sha256:ab", None),
            "pkg:docker/registry:5000/team/base@1.2"
        );
        assert_eq!(package_url("alpine", None), "pkg:docker/alpine@latest");
        assert_eq!(
            package_url("registry:5000/team/base", Some("linux/arm64/v8")),
            "pkg:docker/registry:5000/team/base@latest?platform=linux%2Farm64%2Fv8"
        );
    }
}
