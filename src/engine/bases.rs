//! The base images a build used, by digest, for its provenance: what BuildKit's `FROM`
//! steps name (`FROM docker.io/library/alpine:3.20@sha256:…` when it pulled), else what
//! the daemon's image store says of the image (`RepoDigests`), for the classic builder
//! and for an image BuildKit took from the store.

use super::Engine;

/// A base image (`FROM`) as the build resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBase {
    /// As the build named it, e.g. `docker.io/library/alpine:3.20`.
    pub reference: String,
    /// The manifest digest it resolved to, when known.
    pub digest: Option<String>,
    /// The local image ID (config digest), for an image only the daemon's store has.
    pub image_id: Option<String>,
}

/// Completes `named` (reference, digest if known): a reference without a digest is
/// looked up in the daemon's store. A failed lookup leaves it without one: the
/// provenance then names the image without a digest, which is the truth.
pub async fn resolve(engine: &Engine, named: Vec<(String, Option<String>)>) -> Vec<ResolvedBase> {
    let mut resolved = Vec::with_capacity(named.len());
    for (reference, digest) in named {
        if digest.is_some() || reference == "scratch" {
            resolved.push(ResolvedBase {
                reference,
                digest,
                image_id: None,
            });
            continue;
        }
        let inspect = engine.docker.inspect_image(&reference).await.ok();
        let repository = repository_of(&reference);
        let digest = inspect.as_ref().and_then(|image| {
            image.repo_digests.iter().flatten().find_map(|entry| {
                let (repo, digest) = entry.split_once('@')?;
                (repository_of(repo) == repository).then(|| digest.to_string())
            })
        });
        resolved.push(ResolvedBase {
            reference,
            digest,
            image_id: inspect.and_then(|image| image.id),
        });
    }
    resolved
}

/// The repository of a reference without its tag or digest, with Docker Hub's implied
/// parts made explicit, so `alpine`, `library/alpine` and `docker.io/library/alpine`
/// compare equal.
fn repository_of(reference: &str) -> String {
    let name = reference.split('@').next().unwrap_or(reference);
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let first = name.split('/').next().unwrap_or(name);
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::repository_of;

    #[test]
    fn docker_hubs_implied_parts_are_made_explicit() {
        for name in [
            "alpine",
            "alpine:3.20",
            "library/alpine@sha256:ab",
            "docker.io/library/alpine:3",
        ] {
            assert_eq!(repository_of(name), "docker.io/library/alpine", "{name}");
        }
        assert_eq!(
            repository_of("local/busybox:latest"),
            "docker.io/local/busybox"
        );
        assert_eq!(
            repository_of("1.dkr.ecr.us-east-1.amazonaws.com/team/base:1"),
            "1.dkr.ecr.us-east-1.amazonaws.com/team/base"
        );
        assert_eq!(repository_of("localhost:5000/base"), "localhost:5000/base");
    }
}
