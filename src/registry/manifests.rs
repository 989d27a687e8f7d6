//! Manifests: `GET` (by tag or digest) and `PUT`.
//!
//! ECR stores a manifest as sent; a `GET` by tag converts between Docker schema 2 and OCI
//! when `Accept` lacks the stored type (a different digest), a `GET` by digest never does
//! (ECR User Guide, image manifest formats), so every type is always accepted.

use bytes::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::Method;

use super::{rules, Failure, Registry};

pub const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MANIFEST_LIST_V2: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl Registry {
    /// A manifest (or index) of `repository` and its media type (without parameters).
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(String, Bytes), Failure> {
        let url = self.url_in(repository, &format!("manifests/{reference}"));
        let accept = [MANIFEST_V2, OCI_MANIFEST, MANIFEST_LIST_V2, OCI_INDEX].join(", ");
        let answer = self
            .send_limited(
                Method::GET,
                &url,
                &[("accept", accept)],
                Bytes::new(),
                rules::MAX_MANIFEST_BYTES,
            )
            .await?;
        if answer.status != hyper::StatusCode::OK {
            return Err(Failure::from_answer(&answer));
        }
        if answer.truncated {
            return Err(Failure::local(format!(
                "the manifest {reference} is larger than the {} bytes (4 MiB) a registry \
                 serves; it was not read past them",
                rules::MAX_MANIFEST_BYTES
            )));
        }
        let media_type = answer
            .header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok((media_type, answer.body))
    }

    /// A manifest this run (or the daemon) just pushed, by digest: ECR is eventually
    /// consistent (docker/github-builder#30), so a 404 is asked again, with backoff, for
    /// up to [`rules::VISIBILITY_WAIT`]; the log says how long it took when it took more
    /// than a second. Other failures are retried as [`Registry::with_retry`] does.
    pub async fn get_pushed_manifest(
        &self,
        digest: &str,
    ) -> Result<(String, Bytes), (Failure, u32)> {
        let started = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(500);
        let found = loop {
            match self
                .with_retry(&format!("reading the pushed manifest {digest}"), || {
                    self.get_manifest(&self.repository, digest)
                })
                .await
            {
                Ok(found) => break found,
                Err((failure, _))
                    if failure.status == Some(404)
                        && started.elapsed() < rules::VISIBILITY_WAIT =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
                Err(failure) => return Err(failure),
            }
        };
        if started.elapsed() > std::time::Duration::from_secs(1) {
            tracing::info!(
                "the registry served {digest} {:.1} s after its push (ECR is eventually \
                 consistent)",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(found)
    }

    /// Puts a manifest (or index) of `media_type` under `reference` (a tag or its
    /// digest). The digest is the caller's to know: ECR's answer may not carry one.
    /// Returns the registry's `Docker-Content-Digest` when it sent one.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        manifest: Bytes,
    ) -> Result<Option<String>, Failure> {
        if !rules::media_type_accepted(media_type) {
            return Err(Failure::local(format!(
                "media type `{media_type}` has parameters, which ECR refuses"
            )));
        }
        if manifest.len() > rules::MAX_MANIFEST_BYTES {
            return Err(Failure::local(format!(
                "the manifest is {} bytes; ECR takes at most {} (4 MiB)",
                manifest.len(),
                rules::MAX_MANIFEST_BYTES
            )));
        }
        let answer = self
            .send(
                Method::PUT,
                &self.url(&format!("manifests/{reference}")),
                &[(CONTENT_TYPE.as_str(), media_type.into())],
                manifest,
            )
            .await?;
        if answer.is(&rules::MANIFEST_STORED) {
            Ok(answer
                .header("docker-content-digest")
                .map(ToString::to_string))
        } else {
            Err(Failure::from_answer(&answer))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable_registry() -> Registry {
        let login = super::super::Login {
            host: "127.0.0.1:9".into(),
            credentials: super::super::Credentials {
                username: "AWS".into(),
                password: crate::credentials::Secret::new("p".into()),
                expires_at: None,
                scheme: super::super::Scheme::Basic,
            },
            renew: None,
        };
        Registry::connect(
            &login,
            "r",
            crate::registry::RetryPolicy::DEFAULT,
            &crate::network::Network::default(),
        )
        .unwrap()
    }

    /// What ECR refuses is refused before a request: nothing listens at the address, so
    /// any request would fail differently (and as transient).
    #[tokio::test]
    async fn what_ecr_refuses_is_never_sent() {
        let reg = unreachable_registry();
        let big = Bytes::from(vec![b' '; rules::MAX_MANIFEST_BYTES + 1]);
        let err = reg.put_manifest("v1", OCI_MANIFEST, big).await.unwrap_err();
        assert!(
            err.message.contains("4 MiB") && !err.transient,
            "{}",
            err.describe()
        );
        let err = reg
            .put_manifest(
                "v1",
                "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
                "{}".into(),
            )
            .await
            .unwrap_err();
        assert!(
            err.message.contains("parameters") && !err.transient,
            "{}",
            err.describe()
        );
    }
}
